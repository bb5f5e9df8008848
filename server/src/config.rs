//! Configuration: defaults < TOML file < `SCITQ_*` env < flags, validated once at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// scitqd: the scitq server (gRPC API, scheduler, persistence).
#[derive(Parser, Debug, Default)]
#[command(name = "scitqd", version, about)]
pub struct Cli {
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:5000]. A non-loopback address
    /// needs TLS.
    #[arg(long, env = "SCITQ_LISTEN")]
    pub listen: Option<String>,
    /// Where the SQLite database, tokens and state live [default: /var/lib/scitq as root,
    /// else ~/.local/share/scitq/server].
    #[arg(long, env = "SCITQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, e.g. postgres://user:pass@host/db [default: SQLite in the data dir].
    #[arg(long, env = "SCITQ_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML config file with the same keys as the flags (listen, data_dir, database_url,
    /// lease, max_output_mib, tls_cert, tls_key, rclone_config).
    #[arg(long, env = "SCITQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long a silent worker keeps its tasks before they are re-queued [default: 6h].
    #[arg(long, env = "SCITQ_LEASE")]
    pub lease: Option<String>,
    /// Output kept per execution and stream, in MiB: past it the first and last halves
    /// are kept and a marker says how much was dropped [default: 64].
    #[arg(long, env = "SCITQ_MAX_OUTPUT_MIB", value_name = "MIB")]
    pub max_output_mib: Option<u64>,
    /// TLS certificate (PEM) for the gRPC port.
    #[arg(long, env = "SCITQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the gRPC port.
    #[arg(long, env = "SCITQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// rclone.conf naming the storage remotes (`myremote://path`) tasks may use; agents get
    /// it from scitqd, so they need no copy of their own.
    #[arg(long, env = "SCITQ_RCLONE_CONFIG", value_name = "FILE")]
    pub rclone_config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Try to authenticate with every configured `[[provider]]` and list its flavors, report,
    /// and exit (non-zero if one failed).
    #[arg(long)]
    pub check_providers: bool,
}

/// The config file: the same keys as the flags.
#[derive(Deserialize, Serialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub lease: Option<String>,
    pub max_output_mib: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub rclone_config: Option<PathBuf>,
    /// Credentials for private container registries (`[[registry]]` tables); file only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<crate::core::registry::Registry>,
    /// `[metrics]`: who may scrape `/metrics` without a token; file only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<FileMetrics>,
    /// How recruited machines get the agent and reach scitqd; file only.
    pub deploy: Option<crate::enroll_config::DeployFile>,
    /// The clouds workers are recruited on (`[[provider]]` tables); file only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider: Vec<crate::provider_config::ProviderFile>,
    /// `[recruit]`: the recruiter loop; file only.
    pub recruit: Option<crate::provider_config::RecruitFile>,
}

/// The `[metrics]` section.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    /// Source addresses (`10.0.0.5`) or networks (`10.0.0.0/24`) that may GET /metrics
    /// without a token. Anyone else needs an admin token (Bearer).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// An address or a network, `ADDR` or `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    bits: u8,
}

impl Net {
    pub fn parse(value: &str) -> Option<Net> {
        let (addr, bits) = match value.trim().split_once('/') {
            Some((addr, bits)) => (addr.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
            None => (value.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Net { addr, bits })
    }

    /// Whether `ip` is in this network (an IPv4 address seen as IPv6-mapped counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, ip, len) = match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u32::from(net) as u128, u32::from(ip) as u128, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(net), u128::from(ip), 128),
            _ => return false,
        };
        let shift = len - u32::from(self.bits);
        shift >= len || (net >> shift) == (ip >> shift)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// None: SQLite in the data dir.
    pub database_url: Option<String>,
    pub lease: Duration,
    pub max_output_mib: u64,
    pub tls: Option<Tls>,
    /// rclone.conf handed to agents for storage remotes.
    pub rclone_config: Option<PathBuf>,
    /// Credentials handed to agents for their tasks' images.
    pub registries: Vec<crate::core::registry::Registry>,
    /// Source networks that may scrape `/metrics` without a token.
    pub metrics_allow: Vec<Net>,
    /// `[deploy]`: recruited machines' agent and the address they reach scitqd at.
    pub deploy: crate::enroll_config::Deploy,
    /// `[[provider]]`s by name.
    pub providers: std::collections::BTreeMap<String, crate::provider_config::ProviderConfig>,
    pub recruit: crate::provider_config::Recruit,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid listen address {0:?}: expected HOST:PORT, e.g. 127.0.0.1:5000")]
    Listen(String),
    #[error("invalid lease {value:?}: {reason} (examples: 90s, 30m, 6h)")]
    Lease { value: String, reason: String },
    #[error("invalid database_url {0:?}: expected sqlite://PATH or postgres://USER@HOST/DB")]
    DatabaseUrl(String),
    #[error("invalid max_output_mib {0}: between 1 and 1048576")]
    MaxOutput(u64),
    #[error("tls_cert and tls_key go together: {0} is missing")]
    TlsPair(&'static str),
    #[error(
        "refusing to listen on {0} without TLS: tokens would cross the network in clear. \
         Set --tls-cert FILE and --tls-key FILE (or tls_cert / tls_key in the config file), \
         or listen on 127.0.0.1"
    )]
    InsecureListen(SocketAddr),
    #[error("invalid [[registry]]: {0}")]
    Registry(String),
    #[error(
        "invalid [metrics] allow entry {0:?}: expected an address or ADDR/BITS, e.g. 10.0.0.0/24"
    )]
    MetricsAllow(String),
    #[error(transparent)]
    Deploy(#[from] crate::enroll_config::DeployError),
    #[error(transparent)]
    Provider(#[from] crate::provider_config::ProviderConfigError),
}

fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/scitq");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("scitq").join("server")
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    let err = || ConfigError::Listen(value.to_owned());
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => host.parse().map_err(|_| err())?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_lease(value: &str) -> Result<Duration, ConfigError> {
    let lease = humantime::parse_duration(value).map_err(|e| ConfigError::Lease {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if lease.is_zero() {
        return Err(ConfigError::Lease {
            value: value.to_owned(),
            reason: "must be more than zero".into(),
        });
    }
    Ok(lease)
}

impl Config {
    /// Merges flags (already merged with env by clap) over the file over defaults.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = cli
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| format!("127.0.0.1:{}", scitq_proto::DEFAULT_PORT));
        let listen = parse_listen(&listen)?;
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let database_url = cli.database_url.clone().or(file.database_url);
        if let Some(url) = &database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::DatabaseUrl(url.clone()));
        }
        let lease = match cli.lease.clone().or(file.lease) {
            Some(value) => parse_lease(&value)?,
            None => Duration::from_secs(6 * 3600),
        };
        let max_output_mib = cli.max_output_mib.or(file.max_output_mib).unwrap_or(64);
        if !(1..=1 << 20).contains(&max_output_mib) {
            return Err(ConfigError::MaxOutput(max_output_mib));
        }
        let tls = match (
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::TlsPair("tls_key")),
            (None, Some(_)) => return Err(ConfigError::TlsPair("tls_cert")),
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::InsecureListen(listen));
        }
        crate::core::registry::Registries::validate(&file.registry)
            .map_err(ConfigError::Registry)?;
        let metrics_allow = file
            .metrics
            .map(|m| m.allow)
            .unwrap_or_default()
            .iter()
            .map(|entry| Net::parse(entry).ok_or_else(|| ConfigError::MetricsAllow(entry.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let deploy = crate::enroll_config::Deploy::from_file(file.deploy.unwrap_or_default())?;
        let providers = crate::provider_config::providers(file.provider)?;
        let recruit = crate::provider_config::Recruit::from_file(file.recruit.unwrap_or_default())?;
        Ok(Config {
            providers,
            recruit,
            metrics_allow,
            deploy,
            registries: file.registry,
            listen,
            data_dir,
            database_url,
            lease,
            max_output_mib,
            tls,
            rclone_config: cli.rclone_config.clone().or(file.rclone_config),
        })
    }

    /// The effective configuration as a config file.
    pub fn to_toml(&self) -> String {
        let file = FileConfig {
            listen: Some(self.listen.to_string()),
            data_dir: Some(self.data_dir.clone()),
            database_url: self.database_url.clone(),
            lease: Some(humantime::format_duration(self.lease).to_string()),
            max_output_mib: Some(self.max_output_mib),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            rclone_config: self.rclone_config.clone(),
            // Passwords are not printed.
            registry: self
                .registries
                .iter()
                .map(|r| crate::core::registry::Registry {
                    password: "<hidden>".into(),
                    ..r.clone()
                })
                .collect(),
            metrics: (!self.metrics_allow.is_empty()).then(|| FileMetrics {
                allow: self.metrics_allow.iter().map(Net::to_string).collect(),
            }),
            deploy: Some(self.deploy.to_file()),
            provider: self.providers.values().map(|p| p.to_file()).collect(),
            recruit: Some(self.recruit.to_file()),
        };
        toml::to_string(&file).unwrap_or_default()
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen("localhost:5000").unwrap().ip().is_loopback());
        assert!(parse_listen("foo:bar:baz").is_err());
        assert!(parse_listen("127.0.0.1:99999").is_err());
    }

    #[test]
    fn flags_beat_file_and_insecure_listen_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scitqd.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\nlease = \"10m\"\n").unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            lease: Some("3s".into()),
            ..Default::default()
        };
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.lease, Duration::from_secs(3));

        let cli = Cli {
            listen: Some("0.0.0.0:5000".into()),
            ..Default::default()
        };
        let err = Config::load(&cli).unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");

        std::fs::write(
            &path,
            "[[registry]]\nhost = \"127.0.0.1:5001\"\nusername = \"u\"\npassword = \"secret\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            ..Default::default()
        };
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.registries[0].host, "127.0.0.1:5001");
        let printed = config.to_toml();
        assert!(
            printed.contains("127.0.0.1:5001") && !printed.contains("secret"),
            "{printed}"
        );

        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Default::default()
        };
        assert!(
            Config::load(&cli)
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
    }

    #[test]
    fn metrics_allow_list_matches_addresses_and_networks() {
        let net = |s: &str| Net::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/24").contains(ip("10.0.0.77")));
        assert!(!net("10.0.0.0/24").contains(ip("10.0.1.1")));
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(net("0.0.0.0/0").contains(ip("192.168.1.1")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("10.0.0.1")));
        assert!(Net::parse("10.0.0.0/33").is_none());
        assert!(Net::parse("localhost").is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scitqd.toml");
        std::fs::write(&path, "[metrics]\nallow = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            ..Default::default()
        };
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.metrics_allow, vec![net("10.0.0.0/8"), net("::1")]);
        assert!(config.to_toml().contains("10.0.0.0/8"));
        std::fs::write(&path, "[metrics]\nallow = [\"10.0.0.0/40\"]\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&cli).unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/40"), "{err}");
    }
}
