//! How the agent reaches scitqd and proves who it is: the server address, the token
//! (worker or enrollment) or the credential it presents, the CA it trusts besides the
//! system's, and the local client config that fills in what flags and env leave out.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};

use super::{Args, ConfigError};

/// A server address as clients accept it: `HOST`, `HOST:PORT`, `http(s)://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub tls: bool,
    /// Host name or IP; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    /// True when the host is this machine (`localhost`, 127.0.0.0/8, `::1`): a token sent
    /// there in clear never crosses a network.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The URI tonic connects to.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl FromStr for ServerAddr {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ConfigError::InvalidServer {
            value: value.to_owned(),
            reason,
        };
        let trimmed = value.trim();
        let (tls, rest) = if let Some(rest) = trimmed.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = trimmed.strip_prefix("https://") {
            (true, rest)
        } else if trimmed.contains("://") {
            return Err(invalid("unknown scheme, expected http or https"));
        } else {
            (false, trimmed)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(invalid("missing host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid("expected HOST or HOST:PORT, without path or user"));
        }
        let (host, port) = split_host_port(rest).map_err(invalid)?;
        let port = match port {
            None => scitq_proto::DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("port must be a number from 1 to 65535")),
                Ok(p) => p,
            },
        };
        let valid_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if host.is_empty() || !valid_host {
            return Err(invalid("invalid host"));
        }
        let addr = ServerAddr {
            tls,
            host: host.to_owned(),
            port,
        };
        tonic::transport::Uri::from_str(&addr.uri()).map_err(|_| invalid("invalid host"))?;
        Ok(addr)
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address.
fn split_host_port(value: &str) -> Result<(&str, Option<&str>), &'static str> {
    if value.starts_with('[') {
        let end = value.find(']').ok_or("unclosed [ in IPv6 address")?;
        let (host, after) = value.split_at(end + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("unexpected text after IPv6 address"),
            },
        };
    }
    match value.split_once(':') {
        None => Ok((value, None)),
        Some((_, port)) if port.contains(':') => Err("IPv6 addresses need brackets: [ADDR]:PORT"),
        Some((host, port)) => Ok((host, Some(port))),
    }
}

/// The local client config written by scitqd (`$XDG_CONFIG_HOME/scitq/config.toml`).
#[derive(Debug, Default, Deserialize)]
struct ClientConfig {
    server: Option<String>,
    /// The admin token, used when no worker token is configured (admin may open sessions too).
    token: Option<String>,
    worker_token: Option<String>,
}

/// The process environment the defaults depend on, explicit so tests need not touch it.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    pub home: Option<OsString>,
    pub xdg_config_home: Option<OsString>,
    pub xdg_data_home: Option<OsString>,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment {
            home: std::env::var_os("HOME"),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
        }
    }

    fn base(&self, xdg: &Option<OsString>, fallback: &str) -> Option<PathBuf> {
        match xdg {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => self
                .home
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(h).join(fallback)),
        }
    }

    /// `$XDG_CONFIG_HOME/scitq/config.toml`, default `$HOME/.config/scitq/config.toml`.
    pub fn client_config_path(&self) -> Option<PathBuf> {
        self.base(&self.xdg_config_home, ".config")
            .map(|d| d.join("scitq").join("config.toml"))
    }

    /// `$XDG_DATA_HOME/scitq/agent`, default `$HOME/.local/share/scitq/agent`.
    pub fn default_work_dir(&self) -> Option<PathBuf> {
        self.base(&self.xdg_data_home, ".local/share")
            .map(|d| d.join("scitq").join("agent"))
    }
}

/// What the agent presents as its bearer token.
#[derive(Clone, PartialEq, Eq)]
pub enum Bearer {
    /// The shared worker token (or an admin token): hand-started agents.
    Token(String),
    /// An enrollment token, until the server welcomes this agent; then its credential.
    Enroll(String),
    /// The agent's own credential (WORK_DIR/credential): an agent that enrolled before.
    Credential,
}

impl Bearer {
    fn token(&self) -> Option<&str> {
        match self {
            Bearer::Token(t) | Bearer::Enroll(t) => Some(t),
            Bearer::Credential => None,
        }
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bearer::Token(_) => "worker token",
            Bearer::Enroll(_) => "enrollment token",
            Bearer::Credential => "credential",
        })
    }
}

/// How this agent reaches scitqd and what it presents there.
pub(super) struct Access {
    pub server: ServerAddr,
    pub bearer: Bearer,
    /// PEM of an extra CA for scitqd's certificate.
    pub server_ca: Option<String>,
}

/// The server, bearer and CA from the flags (and env), then the client config file; the
/// agent's credential in `work_dir` stands for a token once it has enrolled.
pub(super) fn resolve(
    args: &Args,
    work_dir: &Path,
    env: &Environment,
) -> Result<Access, ConfigError> {
    let config_path = env
        .client_config_path()
        .unwrap_or_else(|| PathBuf::from("~/.config/scitq/config.toml"));
    let file = if args.server.is_none() || (args.token.is_none() && args.enroll_token.is_none()) {
        read_client_config(&config_path)?
    } else {
        ClientConfig::default()
    };
    let server: ServerAddr = match args.server.as_deref().or(file.server.as_deref()) {
        Some(value) => value.parse()?,
        None => format!("127.0.0.1:{}", scitq_proto::DEFAULT_PORT).parse()?,
    };
    let present = |t: Option<&String>| t.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let token = args
        .token
        .as_ref()
        .or(file.worker_token.as_ref())
        .or(file.token.as_ref());
    let bearer = match present(args.enroll_token.as_ref()) {
        Some(token) => Bearer::Enroll(token),
        None => match present(token) {
            Some(token) => Bearer::Token(token),
            None if work_dir.join(crate::credential::FILE).is_file() => Bearer::Credential,
            None => return Err(ConfigError::NoToken { path: config_path }),
        },
    };
    if let Some(token) = bearer.token()
        && MetadataValue::<Ascii>::try_from(format!("Bearer {token}")).is_err()
    {
        return Err(ConfigError::InvalidToken);
    }
    let server_ca = match &args.server_ca {
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| ConfigError::ReadServerCa {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    if !server.tls && !server.is_loopback() && !args.insecure {
        return Err(ConfigError::ClearTextToken(server.uri()));
    }
    Ok(Access {
        server,
        bearer,
        server_ca,
    })
}

fn read_client_config(path: &Path) -> Result<ClientConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClientConfig::default()),
        Err(source) => {
            return Err(ConfigError::ReadClientConfig {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text).map_err(|source| ConfigError::ParseClientConfig {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env_with_config;
    use crate::config::{Args, Config};
    use clap::Parser;
    use std::time::Duration;

    fn addr(s: &str) -> Result<ServerAddr, ConfigError> {
        s.parse()
    }

    #[test]
    fn server_address_forms() {
        let plain = addr("example.org").unwrap();
        assert_eq!(plain.uri(), "http://example.org:5000");
        assert_eq!(addr("10.0.0.1:7000").unwrap().uri(), "http://10.0.0.1:7000");
        assert_eq!(addr("http://h:80").unwrap().uri(), "http://h:80");
        assert_eq!(addr("https://h:443/").unwrap().uri(), "https://h:443");
        assert!(addr("https://h").unwrap().tls);
        assert_eq!(addr("[::1]:6000").unwrap().uri(), "http://[::1]:6000");
        assert_eq!(addr("[::1]").unwrap().uri(), "http://[::1]:5000");
    }

    #[test]
    fn bad_server_addresses_name_the_value() {
        for bad in [
            "", "s4://x", "h:99999", "h:0", "h:port", "::1", "h/path", "[::1", "a b", "http://",
        ] {
            let err = addr(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn client_config_fills_server_and_worker_token() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(
            dir.path(),
            "server = \"127.0.0.1:7001\"\ntoken = \"admin\"\nworker_token = \"wt\"\n",
        );
        let args = Args::try_parse_from(["scitq-agent", "--name", "w1"]).unwrap();
        let config = Config::from_args(args, &env).unwrap();
        assert_eq!(config.server.uri(), "http://127.0.0.1:7001");
        assert_eq!(config.bearer, Bearer::Token("wt".into()));
        assert_eq!(config.name, "w1");
        assert_eq!(config.concurrency, 1);
        assert_eq!(
            config.work_dir,
            dir.path().join("home/.local/share/scitq/agent")
        );
        assert_eq!(config.heartbeat, Duration::from_secs(10));
    }

    #[test]
    fn missing_token_names_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "server = \"h\"\n");
        let args = Args::try_parse_from(["scitq-agent"]).unwrap();
        let err = Config::from_args(args, &env).unwrap_err().to_string();
        assert!(
            err.contains("no worker token") && err.contains("config.toml"),
            "{err}"
        );
        assert!(!err.contains("  "), "{err}");
    }

    #[test]
    fn an_enrollment_token_wins_and_an_enrolled_agent_needs_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "worker_token = \"wt\"\n");
        let args =
            Args::try_parse_from(["scitq-agent", "--enroll-token", "e", "--token", "t"]).unwrap();
        let config = Config::from_args(args, &env).unwrap();
        assert_eq!(config.bearer, Bearer::Enroll("e".into()));

        let bare = env_with_config(dir.path(), "server = \"127.0.0.1:7001\"\n");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let with_dir =
            || Args::try_parse_from(["scitq-agent", "--work-dir", work.to_str().unwrap()]).unwrap();
        let none = Config::from_args(with_dir(), &bare)
            .unwrap_err()
            .to_string();
        assert!(none.contains("--enroll-token"), "{none}");
        std::fs::write(work.join(crate::credential::FILE), "secret\n").unwrap();
        let config = Config::from_args(with_dir(), &bare).unwrap();
        assert_eq!(config.bearer, Bearer::Credential);
    }

    #[test]
    fn bad_server_in_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "server = \"x:y\"\nworker_token = \"t\"\n");
        let args = Args::try_parse_from(["scitq-agent"]).unwrap();
        let err = Config::from_args(args, &env).unwrap_err().to_string();
        assert!(err.contains("\"x:y\""), "{err}");
    }

    #[test]
    fn the_token_goes_in_clear_only_to_this_machine_or_when_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "worker_token = \"t\"\n");
        let config = |extra: &[&str]| {
            let args = Args::try_parse_from(["scitq-agent"].iter().chain(extra)).unwrap();
            Config::from_args(args, &env)
        };
        for local in ["127.0.0.1:1", "localhost", "[::1]:7"] {
            assert!(config(&["--server", local]).is_ok(), "{local}");
        }
        assert!(config(&["--server", "https://10.1.2.3"]).is_ok());
        let err = config(&["--server", "10.1.2.3"]).unwrap_err().to_string();
        assert!(
            err.contains("http://10.1.2.3:5000")
                && err.contains("https://")
                && err.contains("--insecure"),
            "{err}"
        );
        assert!(config(&["--server", "10.1.2.3", "--insecure"]).is_ok());
    }
}
