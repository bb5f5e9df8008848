//! Command line, environment and the local client config, validated once into [`Config`].
//!
//! Precedence: defaults < client config file < environment < flags (clap gives env < flags).
//! How the agent reaches scitqd and what it presents there (server address, token,
//! enrollment, credential, CA) is resolved in `access.rs`.

mod access;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use access::Access;
pub use access::{Bearer, Environment, ServerAddr};

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
        "no worker token: pass --token, set SCITQ_WORKER_TOKEN or worker_token in {}, or \
         enroll with --enroll-token (then WORK_DIR/credential is enough)",
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
        let work_dir = match &args.work_dir {
            Some(dir) => dir.clone(),
            None => env.default_work_dir().ok_or(ConfigError::NoWorkDir)?,
        };
        let work_dir = std::path::absolute(&work_dir).unwrap_or(work_dir);
        let Access {
            server,
            bearer,
            server_ca,
        } = access::resolve(&args, &work_dir, env)?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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

    pub(super) fn env_with_config(dir: &Path, text: &str) -> Environment {
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
}
