//! Command line, environment and the local client config, validated once into [`Config`].
//!
//! Precedence: defaults < client config file < environment < flags (clap gives env < flags).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};

/// `scitq-agent`: runs scitq tasks on this machine for a scitqd server.
#[derive(Debug, Parser)]
#[command(name = "scitq-agent", version, about)]
pub struct Args {
    /// Server address: HOST, HOST:PORT or http(s)://HOST:PORT (port 5000 when missing).
    /// Default: `server` from the local client config, else 127.0.0.1:5000.
    #[arg(long, env = "SCITQ_SERVER", value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Worker token. Default: `worker_token` from the local client config.
    #[arg(
        long,
        env = "SCITQ_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Single-use enrollment token scitqd issued for this machine (a recruited instance):
    /// the first session presents it, under `--name` = the instance name; scitqd then binds
    /// the worker to this agent's own credential (WORK_DIR/credential), which the agent
    /// presents from then on (restarted without this token too). Wins over --token.
    #[arg(
        long,
        env = "SCITQ_ENROLL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub enroll_token: Option<String>,
    /// PEM file of the CA that signed scitqd's certificate, trusted for the connection to
    /// scitqd besides the system's roots (a recruited machine gets it in its user data).
    #[arg(long, env = "SCITQ_SERVER_CA", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// Send the worker token over plain http:// to a server that is not on this machine
    /// (anyone on the way can read it: use https:// instead).
    #[arg(long, env = "SCITQ_INSECURE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// How many tasks run at once (at least 1).
    #[arg(long, env = "SCITQ_CONCURRENCY", default_value = "1", value_name = "N",
          allow_negative_numbers = true, value_parser = parse_concurrency)]
    pub concurrency: u32,
    /// How many more tasks the server may assign ahead of free slots, or "auto": as many as
    /// keep the slots busy while the server refills them, none for tasks much longer than
    /// that (see `worker list` for the value in force).
    #[arg(
        long,
        env = "SCITQ_PREFETCH",
        default_value = "auto",
        value_name = "P|auto"
    )]
    pub prefetch: scitq_proto::PrefetchSetting,
    /// Worker name, unique per worker. Default: the hostname.
    #[arg(long, env = "SCITQ_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Only take tasks of this batch.
    #[arg(long, env = "SCITQ_BATCH", value_name = "BATCH")]
    pub batch: Option<String>,
    /// Where executions run and spool their output. Default: $XDG_DATA_HOME/scitq/agent.
    #[arg(long, env = "SCITQ_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Interval between heartbeats.
    #[arg(long, env = "SCITQ_HEARTBEAT", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// How often the agent pings scitqd on its session (HTTP/2 keepalive), and how long a
    /// ping may go unanswered before the session is dropped and opened again: a stalled
    /// network or a frozen scitqd is noticed within twice this.
    #[arg(long, env = "SCITQ_KEEPALIVE", default_value = "20s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// Longest wait between two reconnection attempts.
    #[arg(long, env = "SCITQ_RECONNECT_MAX", default_value = "30s", value_parser = parse_duration)]
    pub reconnect_max: Duration,
    /// Output the agent may hold on disk for the server (MiB): past it, no new task starts
    /// until the server has taken some, so a long server outage cannot fill the disk.
    #[arg(
        long,
        env = "SCITQ_SPOOL_LIMIT_MIB",
        default_value_t = 10240,
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub spool_limit_mib: u64,
    /// Network of containers whose task does not choose one: none, host or bridge.
    #[arg(
        long,
        env = "SCITQ_DOCKER_NETWORK",
        default_value = "bridge",
        value_name = "MODE"
    )]
    pub docker_network: scitq_proto::container::Network,
    /// Longest time an image pull may take before the execution fails.
    #[arg(long, env = "SCITQ_PULL_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub pull_timeout: Duration,
    /// Image with NCBI's `fasterq-dump`, run when ENA cannot deliver a `run+fastq://` input
    /// (pulled when missing, like a task's image; needs Docker).
    #[arg(
        long,
        env = "SCITQ_SRA_TOOLS_IMAGE",
        default_value = "ncbi/sra-tools",
        value_name = "IMAGE"
    )]
    pub sra_tools_image: String,
    /// How long the container and work dir of a failed execution are kept for inspection.
    #[arg(long, env = "SCITQ_KEEP_FAILED", default_value = "24h", value_parser = parse_duration)]
    pub keep_failed: Duration,
    /// A host folder that tasks' containers may bind-mount with `-v` (it or anything below
    /// it; repeatable, comma-separated in the env). None by default: a task reads nothing of
    /// the host but its own folders. An empty value (`SCITQ_ALLOW_MOUNTS=`) names none.
    #[arg(
        long = "allow-mount",
        env = "SCITQ_ALLOW_MOUNTS",
        value_name = "DIR",
        value_delimiter = ',',
        value_parser = parse_allow_mount
    )]
    pub allow_mounts: Vec<PathBuf>,
    /// Disk use (percent of the work dir's filesystem) past which failed executions'
    /// containers and work dirs are removed at once.
    #[arg(long, env = "SCITQ_DISK_THRESHOLD", default_value_t = 90, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub disk_threshold: u8,
    /// How long the result of a task that ended may wait, while queued (prefetched) tasks keep
    /// the slots busy, to reach scitqd together with the next ones: fewer, larger commits for
    /// many short tasks. 0s sends every result at once.
    #[arg(long, env = "SCITQ_RESULT_HOLD", default_value = "50ms", value_parser = parse_duration)]
    pub result_hold: Duration,
    /// Print the effective configuration (token hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Any path, the empty one included (it is dropped: an empty list allows nothing).
fn parse_allow_mount(value: &str) -> Result<PathBuf, ValueError> {
    Ok(PathBuf::from(value))
}

/// Why a flag's value is refused (clap names the flag and the value before it).
#[derive(Debug, PartialEq, thiserror::Error)]
enum ValueError {
    #[error("too large")]
    TooLarge,
    #[error("must be at least 1")]
    BelowOne,
    #[error("must be a whole number of at least 1")]
    NotWhole,
    #[error(transparent)]
    Duration(#[from] humantime::DurationError),
    #[error("must be longer than zero")]
    Zero,
}

fn parse_concurrency(value: &str) -> Result<u32, ValueError> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 1 => u32::try_from(n).map_err(|_| ValueError::TooLarge),
        Ok(_) => Err(ValueError::BelowOne),
        Err(_) => Err(ValueError::NotWhole),
    }
}

fn parse_duration(value: &str) -> Result<Duration, ValueError> {
    let duration = humantime::parse_duration(value)?;
    if duration.is_zero() {
        return Err(ValueError::Zero);
    }
    Ok(duration)
}

/// Why the configuration is unusable. All map to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --allow-mount {}: it must be an absolute path without '..'", .0.display())]
    InvalidAllowMount(PathBuf),
    #[error("invalid server address {value:?}: {reason}")]
    InvalidServer { value: String, reason: &'static str },
    #[error("cannot read client config {}: {source}", path.display())]
    ReadClientConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid client config {}: {source}", path.display())]
    ParseClientConfig {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "no worker token: pass --token, set SCITQ_WORKER_TOKEN or worker_token in {}, or          enroll with --enroll-token (then WORK_DIR/credential is enough)",
        path.display()
    )]
    NoToken { path: PathBuf },
    #[error(
        "refusing to send the worker token in clear to {0}: use https:// (scitqd with TLS), \
         or pass --insecure (or set SCITQ_INSECURE=1) to send it anyway"
    )]
    ClearTextToken(String),
    #[error("invalid worker token: it must be printable ASCII")]
    InvalidToken,
    #[error("invalid --name {0:?}: must not be empty")]
    EmptyName(String),
    #[error("invalid --sra-tools-image {0:?}: expected an image reference")]
    InvalidSraToolsImage(String),
    #[error("cannot read --server-ca {}: {source}", path.display())]
    ReadServerCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no work dir: pass --work-dir, or set HOME or XDG_DATA_HOME")]
    NoWorkDir,
}

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

/// The validated agent configuration.
#[derive(Clone)]
pub struct Config {
    pub server: ServerAddr,
    pub bearer: Bearer,
    /// PEM of an extra CA for scitqd's certificate (`--server-ca`).
    pub server_ca: Option<String>,
    pub concurrency: u32,
    pub prefetch: scitq_proto::PrefetchSetting,
    pub name: String,
    pub host: String,
    pub batch: String,
    pub work_dir: PathBuf,
    pub heartbeat: Duration,
    /// HTTP/2 ping interval, and how long a ping may go unanswered.
    pub keepalive: Duration,
    pub reconnect_max: Duration,
    /// Bytes of output held on disk past which no new task starts.
    pub spool_limit: u64,
    pub docker_network: scitq_proto::container::Network,
    pub pull_timeout: Duration,
    pub sra_tools_image: String,
    pub keep_failed: Duration,
    pub disk_threshold: u8,
    pub result_hold: Duration,
    /// Host folders containers may bind-mount (`-v`).
    pub allow_mounts: Vec<PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server.uri())
            .field("bearer", &self.bearer)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("batch", &self.batch)
            .field("work_dir", &self.work_dir)
            .field("heartbeat", &self.heartbeat)
            .field("keepalive", &self.keepalive)
            .field("reconnect_max", &self.reconnect_max)
            .field("spool_limit", &self.spool_limit)
            .field("docker_network", &self.docker_network)
            .field("pull_timeout", &self.pull_timeout)
            .field("sra_tools_image", &self.sra_tools_image)
            .field("keep_failed", &self.keep_failed)
            .field("disk_threshold", &self.disk_threshold)
            .field("result_hold", &self.result_hold)
            .finish()
    }
}

impl Config {
    /// Validates the arguments, filling gaps from the client config file.
    pub fn from_args(args: Args, env: &Environment) -> Result<Config, ConfigError> {
        let config_path = env
            .client_config_path()
            .unwrap_or_else(|| PathBuf::from("~/.config/scitq/config.toml"));
        let file = if args.server.is_none() || (args.token.is_none() && args.enroll_token.is_none())
        {
            read_client_config(&config_path)?
        } else {
            ClientConfig::default()
        };
        let server: ServerAddr = match args.server.as_deref().or(file.server.as_deref()) {
            Some(value) => value.parse()?,
            None => format!("127.0.0.1:{}", scitq_proto::DEFAULT_PORT).parse()?,
        };
        let work_dir = match args.work_dir {
            Some(dir) => dir,
            None => env.default_work_dir().ok_or(ConfigError::NoWorkDir)?,
        };
        let work_dir = std::path::absolute(&work_dir).unwrap_or(work_dir);
        let present = |t: Option<String>| t.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let bearer = match present(args.enroll_token) {
            Some(token) => Bearer::Enroll(token),
            None => match present(args.token.or(file.worker_token).or(file.token)) {
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
        let server_ca =
            match &args.server_ca {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ReadServerCa {
                        path: path.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        if !server.tls && !server.is_loopback() && !args.insecure {
            return Err(ConfigError::ClearTextToken(server.uri()));
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let name = args.name.unwrap_or_else(|| host.clone());
        if name.trim().is_empty() {
            return Err(ConfigError::EmptyName(name));
        }
        let sra_tools_image = args.sra_tools_image.trim().to_owned();
        if sra_tools_image.is_empty() || sra_tools_image.contains(char::is_whitespace) {
            return Err(ConfigError::InvalidSraToolsImage(args.sra_tools_image));
        }
        let allow_mounts: Vec<PathBuf> = args
            .allow_mounts
            .into_iter()
            .filter(|dir| !dir.as_os_str().is_empty())
            .collect();
        if let Some(bad) = allow_mounts.iter().find(|dir| {
            !dir.is_absolute()
                || dir
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
        }) {
            return Err(ConfigError::InvalidAllowMount(bad.clone()));
        }
        Ok(Config {
            server,
            bearer,
            server_ca,
            concurrency: args.concurrency,
            prefetch: args.prefetch,
            name,
            host,
            batch: args.batch.unwrap_or_default(),
            work_dir,
            heartbeat: args.heartbeat,
            keepalive: args.keepalive,
            reconnect_max: args.reconnect_max,
            spool_limit: args.spool_limit_mib.saturating_mul(1 << 20),
            docker_network: args.docker_network,
            pull_timeout: args.pull_timeout,
            sra_tools_image,
            keep_failed: args.keep_failed,
            disk_threshold: args.disk_threshold,
            result_hold: args.result_hold,
            allow_mounts,
        })
    }

    /// The effective configuration as TOML, token hidden, for `--print-config`.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        format!(
            "server = {}\nworker_token = \"<hidden>\"\nconcurrency = {}\nprefetch = {}\n\
             name = {}\nbatch = {}\nwork_dir = {}\nheartbeat = {}\nkeepalive = {}\nreconnect_max = {}\n\
             spool_limit_mib = {}\n\
             docker_network = {}\npull_timeout = {}\nsra_tools_image = {}\nkeep_failed = {}\n\
             disk_threshold = {}\nresult_hold = {}\nallow_mounts = [{}]\n",
            q(&self.server.uri()),
            self.concurrency,
            match self.prefetch {
                scitq_proto::PrefetchSetting::Auto => q("auto"),
                scitq_proto::PrefetchSetting::Fixed(n) => n.to_string(),
            },
            q(&self.name),
            q(&self.batch),
            q(&self.work_dir.to_string_lossy()),
            q(&humantime::format_duration(self.heartbeat).to_string()),
            q(&humantime::format_duration(self.keepalive).to_string()),
            q(&humantime::format_duration(self.reconnect_max).to_string()),
            self.spool_limit >> 20,
            q(self.docker_network.as_str()),
            q(&humantime::format_duration(self.pull_timeout).to_string()),
            q(&self.sra_tools_image),
            q(&humantime::format_duration(self.keep_failed).to_string()),
            self.disk_threshold,
            q(&humantime::format_duration(self.result_hold).to_string()),
            self.allow_mounts
                .iter()
                .map(|d| q(&d.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
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
    fn concurrency_must_be_positive() {
        assert_eq!(parse_concurrency("4"), Ok(4));
        assert_eq!(parse_concurrency("0"), Err(ValueError::BelowOne));
        assert_eq!(parse_concurrency("-3"), Err(ValueError::BelowOne));
        assert_eq!(parse_concurrency("x"), Err(ValueError::NotWhole));
        assert_eq!(parse_duration("0s"), Err(ValueError::Zero));
        let err = Args::try_parse_from(["scitq-agent", "--concurrency", "-1"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn a_zero_spool_limit_is_refused_naming_the_value() {
        let err = Args::try_parse_from(["scitq-agent", "--spool-limit-mib", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("'0'"), "{err}");
        let args = Args::try_parse_from(["scitq-agent", "--spool-limit-mib", "1"]).unwrap();
        assert_eq!(args.spool_limit_mib, 1);
    }

    fn env_with_config(dir: &Path, text: &str) -> Environment {
        let cfg = dir.join("cfg");
        std::fs::create_dir_all(cfg.join("scitq")).unwrap();
        std::fs::write(cfg.join("scitq/config.toml"), text).unwrap();
        Environment {
            home: Some(dir.join("home").into()),
            xdg_config_home: Some(cfg.into()),
            xdg_data_home: None,
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
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(
            dir.path(),
            "server = \"bad server\"\nworker_token = \"wt\"\n",
        );
        let args = Args::try_parse_from([
            "scitq-agent",
            "--server",
            "h:1",
            "--token",
            "t",
            "--concurrency",
            "3",
            "--insecure",
        ])
        .unwrap();
        let config = Config::from_args(args, &env).unwrap();
        assert_eq!(config.server.port, 1);
        assert_eq!(config.bearer, Bearer::Token("t".into()));
        assert_eq!(config.concurrency, 3);
    }

    #[test]
    fn the_sra_tools_image_has_a_default_and_a_blank_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "worker_token = \"wt\"\n");
        let args = Args::try_parse_from(["scitq-agent"]).unwrap();
        let config = Config::from_args(args, &env).unwrap();
        assert_eq!(config.sra_tools_image, "ncbi/sra-tools");
        assert!(
            config
                .to_toml()
                .contains("sra_tools_image = \"ncbi/sra-tools\"\n")
        );
        let args = Args::try_parse_from(["scitq-agent", "--sra-tools-image", " "]).unwrap();
        let err = Config::from_args(args, &env).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid --sra-tools-image \" \": expected an image reference"
        );
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
    fn an_empty_allow_mount_allows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "worker_token = \"t\"\n");
        let config = |extra: &[&str]| {
            let args = Args::try_parse_from(["scitq-agent"].iter().chain(extra)).unwrap();
            Config::from_args(args, &env).unwrap()
        };
        assert!(config(&["--allow-mount", ""]).allow_mounts.is_empty());
        assert_eq!(
            config(&["--allow-mount", "/data,"]).allow_mounts,
            [PathBuf::from("/data")]
        );
        let config = config(&[]);
        assert!(config.allow_mounts.is_empty());
        assert_eq!(config.prefetch, scitq_proto::PrefetchSetting::Auto);
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
