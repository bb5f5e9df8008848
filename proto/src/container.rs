//! Container options: the documented subset of `docker run` flags a task may ask for, parsed
//! into [`ContainerOptions`]. `scitqd` validates them when a task is created or edited (so a
//! bad option creates nothing) and the agent parses them again before it runs the container.
//!
//! Each entry of `TaskSpec.container_options` is split with shell quoting rules, and all the
//! words are read as one `docker run` argument list, so `"--gpus all"`, `"--gpus=all"` and
//! `["--gpus", "all"]` mean the same. Accepted:
//!
//! | option | meaning |
//! |---|---|
//! | `--gpus all\|N\|device=ID[,ID]` | GPUs handed to the container |
//! | `-e`, `--env K=V` | an environment variable (repeatable) |
//! | `-v`, `--volume SRC:DST[:ro\|rw]` | bind-mount an absolute host path (repeatable) |
//! | `--shm-size SIZE` | size of `/dev/shm` (`64m`, `2g`, bytes without a unit) |
//! | `-u`, `--user USER[:GROUP]` | user (name or id) the command runs as |
//! | `-m`, `--memory SIZE` | memory limit |
//! | `--cpus N` | CPU limit (may be fractional) |
//! | `-w`, `--workdir PATH` | working directory inside the container (absolute) |
//! | `--network none\|host\|bridge` | network mode (default: the agent's `--docker-network`) |
//!
//! Anything else (`--privileged`, `--pid`, `--cap-add`, `--rm`, ...) is refused with an error
//! naming it: those options either break the agent's control of the container or widen what
//! a task can do to its host.

use std::fmt;

/// The paths the agent mounts in every container; a volume must not hide them.
pub const RESERVED_MOUNTS: [&str; 4] = ["/input", "/output", "/tmp", "/resource"];

/// Why container options are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error(
        "container option {0:?} is not allowed (allowed: --gpus, -e/--env, -v/--volume, --shm-size, -u/--user, -m/--memory, --cpus, -w/--workdir, --network)"
    )]
    Forbidden(String),
    #[error("container option {option} needs a value")]
    MissingValue { option: String },
    #[error("invalid container option {option} {value:?}: {reason}")]
    Invalid {
        option: String,
        value: String,
        reason: &'static str,
    },
    #[error("cannot split container option {0:?}: unbalanced quotes or trailing backslash")]
    Unparsable(String),
}

/// The GPUs a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gpus {
    All,
    Count(u32),
    Devices(Vec<String>),
}

/// A bind mount asked for with `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.read_only { "ro" } else { "rw" };
        write!(f, "{}:{}:{mode}", self.source, self.target)
    }
}

/// Network mode of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    None,
    Host,
    Bridge,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Host => "host",
            Network::Bridge => "bridge",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Network::None),
            "host" => Ok(Network::Host),
            "bridge" => Ok(Network::Bridge),
            _ => Err("expected none, host or bridge"),
        }
    }
}

/// Container options, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerOptions {
    pub gpus: Option<Gpus>,
    /// `K=V` pairs, in the order given.
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub shm_size: Option<i64>,
    pub user: Option<String>,
    pub memory: Option<i64>,
    /// In billionths of a CPU, as Docker takes it.
    pub nano_cpus: Option<i64>,
    pub workdir: Option<String>,
    pub network: Option<Network>,
}

/// The options that take a value, by every name they are known under.
const WITH_VALUE: [(&str, &str); 14] = [
    ("--gpus", "--gpus"),
    ("-e", "--env"),
    ("--env", "--env"),
    ("-v", "--volume"),
    ("--volume", "--volume"),
    ("--shm-size", "--shm-size"),
    ("-u", "--user"),
    ("--user", "--user"),
    ("-m", "--memory"),
    ("--memory", "--memory"),
    ("--cpus", "--cpus"),
    ("-w", "--workdir"),
    ("--workdir", "--workdir"),
    ("--network", "--network"),
];

impl ContainerOptions {
    /// Parses a task's container options.
    pub fn parse<S: AsRef<str>>(options: &[S]) -> Result<Self, OptionError> {
        let mut words = Vec::new();
        for option in options {
            let option = option.as_ref();
            let split =
                shlex::split(option).ok_or_else(|| OptionError::Unparsable(option.to_owned()))?;
            words.extend(split);
        }
        let mut parsed = ContainerOptions::default();
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            let (name, inline) = split_word(&word)?;
            let value = match inline {
                Some(value) => value,
                None => words.next().ok_or_else(|| OptionError::MissingValue {
                    option: name.to_owned(),
                })?,
            };
            parsed.set(name, value)?;
        }
        Ok(parsed)
    }

    fn set(&mut self, name: &'static str, value: String) -> Result<(), OptionError> {
        let invalid = |reason| OptionError::Invalid {
            option: name.to_owned(),
            value: value.clone(),
            reason,
        };
        match name {
            "--gpus" => self.gpus = Some(parse_gpus(&value).map_err(invalid)?),
            "--env" => {
                let (key, val) = value
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty() && !k.contains(char::is_whitespace))
                    .ok_or_else(|| invalid("expected KEY=VALUE"))?;
                self.env.push((key.to_owned(), val.to_owned()));
            }
            "--volume" => self.volumes.push(parse_volume(&value).map_err(invalid)?),
            "--shm-size" => self.shm_size = Some(parse_size(&value).map_err(invalid)?),
            "--memory" => self.memory = Some(parse_size(&value).map_err(invalid)?),
            "--user" => {
                let valid = !value.is_empty()
                    && value.split(':').count() <= 2
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
                if !valid {
                    return Err(invalid("expected USER or USER:GROUP (names or ids)"));
                }
                self.user = Some(value);
            }
            "--cpus" => {
                let cpus: f64 = value.parse().map_err(|_| invalid("expected a number"))?;
                if !(cpus > 0.0 && cpus <= 100_000.0) {
                    return Err(invalid("must be above 0"));
                }
                self.nano_cpus = Some((cpus * 1e9).round() as i64);
            }
            "--workdir" => {
                if !value.starts_with('/') {
                    return Err(invalid("must be an absolute path"));
                }
                self.workdir = Some(value);
            }
            "--network" => self.network = Some(value.parse().map_err(invalid)?),
            _ => unreachable!("split_word returns known names only"),
        }
        Ok(())
    }
}

/// Splits `--name=value`, `-xVALUE` or `--name` into the option's canonical name and its
/// inline value; unknown options are refused here.
fn split_word(word: &str) -> Result<(&'static str, Option<String>), OptionError> {
    let forbidden = || OptionError::Forbidden(word.to_owned());
    let canonical = |name: &str| {
        WITH_VALUE
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, canonical)| *canonical)
    };
    if let Some(long) = word.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (long, None),
        };
        let canonical = canonical(&format!("--{name}"))
            .ok_or_else(|| OptionError::Forbidden(format!("--{name}")))?;
        return Ok((canonical, value));
    }
    if let Some(short) = word.strip_prefix('-')
        && let Some(first) = short.chars().next()
    {
        let name = format!("-{first}");
        let canonical = canonical(&name).ok_or_else(|| OptionError::Forbidden(name.clone()))?;
        let rest = &short[first.len_utf8()..];
        let rest = rest.strip_prefix('=').unwrap_or(rest);
        let value = (!rest.is_empty()).then(|| rest.to_owned());
        return Ok((canonical, value));
    }
    Err(forbidden())
}

fn parse_gpus(value: &str) -> Result<Gpus, &'static str> {
    if value == "all" {
        return Ok(Gpus::All);
    }
    if let Ok(count) = value.parse::<u32>() {
        if count == 0 {
            return Err("a count must be at least 1");
        }
        return Ok(Gpus::Count(count));
    }
    let devices = value
        .trim_matches('"')
        .strip_prefix("device=")
        .ok_or("expected all, a count, or device=ID[,ID...]")?;
    let ids: Vec<String> = devices.split(',').map(str::to_owned).collect();
    if ids.iter().any(|id| {
        id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    }) {
        return Err("device ids are numbers or GPU UUIDs");
    }
    Ok(Gpus::Devices(ids))
}

fn parse_volume(value: &str) -> Result<Volume, &'static str> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        [_, _, _] => return Err("the mode must be ro or rw"),
        _ => return Err("expected SOURCE:TARGET[:ro|rw]"),
    };
    if !source.starts_with('/') {
        return Err("the source must be an absolute host path");
    }
    if !target.starts_with('/') {
        return Err("the target must be an absolute path");
    }
    let target = target.trim_end_matches('/');
    if target.is_empty() {
        return Err("the target cannot be /");
    }
    if RESERVED_MOUNTS.contains(&target) {
        return Err("the target is one of the task's own folders (/input /output /tmp /resource)");
    }
    Ok(Volume {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
    })
}

/// Parses `512`, `64k`, `64m`, `2g` (also with a `b` suffix: `2gb`) into bytes.
pub fn parse_size(value: &str) -> Result<i64, &'static str> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower, ""),
    };
    let number: i64 = digits
        .parse()
        .map_err(|_| "expected a size like 512m or 2g")?;
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err("unknown unit: use k, m, g or t"),
    };
    let bytes = number.checked_mul(1i64 << shift).ok_or("too large")?;
    if bytes <= 0 {
        return Err("must be above 0");
    }
    Ok(bytes)
}

/// The registry an image reference names: its first path component when that looks like a
/// host (has a `.` or a `:`, or is `localhost`), as Docker decides it. `None` for references
/// to the daemon's default registry (no host in the reference); scitq hands out no
/// credentials for those.
pub fn registry_of(image: &str) -> Option<&str> {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            Some(first)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(options: &[&str]) -> Result<ContainerOptions, OptionError> {
        ContainerOptions::parse(options)
    }

    #[test]
    fn every_allowed_option_in_its_forms() {
        let o = parse(&[
            "--gpus all",
            "-e",
            "A=1",
            "--env='B=x y'",
            "-eC=",
            "-v /data:/data:ro",
            "--volume=/scratch:/scratch",
            "--shm-size 2g",
            "--user 1000:1000",
            "-m512m",
            "--cpus=1.5",
            "-w /work",
            "--network none",
        ])
        .unwrap();
        assert_eq!(o.gpus, Some(Gpus::All));
        let env: Vec<(&str, &str)> = o
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "x y"), ("C", "")]);
        assert_eq!(o.volumes[0].to_string(), "/data:/data:ro");
        assert!(!o.volumes[1].read_only);
        assert_eq!(o.shm_size, Some(2 << 30));
        assert_eq!(o.user.as_deref(), Some("1000:1000"));
        assert_eq!(o.memory, Some(512 << 20));
        assert_eq!(o.nano_cpus, Some(1_500_000_000));
        assert_eq!(o.workdir.as_deref(), Some("/work"));
        assert_eq!(o.network, Some(Network::None));
    }

    #[test]
    fn quoting_keeps_spaces_in_a_value() {
        let o = parse(&["-e 'MSG=hello world'"]).unwrap();
        assert_eq!(o.env, vec![("MSG".into(), "hello world".into())]);
    }

    #[test]
    fn forbidden_options_are_named() {
        for (given, named) in [
            ("--privileged", "--privileged"),
            ("--pid=host", "--pid"),
            ("--cap-add SYS_ADMIN", "--cap-add"),
            ("--rm", "--rm"),
            ("-d", "-d"),
            ("-it", "-i"),
            ("alpine", "alpine"),
        ] {
            let err = parse(&[given]).unwrap_err();
            assert_eq!(err, OptionError::Forbidden(named.to_owned()), "{given}");
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    #[test]
    fn bad_values_say_why() {
        let err = parse(&["-e"]).unwrap_err();
        assert_eq!(err.to_string(), "container option --env needs a value");
        for bad in [
            "-e NOEQUALS",
            "-v relative:/x",
            "-v /a:relative",
            "-v /a:/input",
            "-v /a:/b:rx",
            "--shm-size lots",
            "--memory 0",
            "--cpus 0",
            "--cpus x",
            "-w rel",
            "--network overlay",
            "--gpus 0",
            "--gpus some",
            "--user a;b",
        ] {
            let err = parse(&[bad]).unwrap_err();
            assert!(matches!(err, OptionError::Invalid { .. }), "{bad}: {err}");
        }
        assert!(matches!(
            parse(&["-e 'oops"]),
            Err(OptionError::Unparsable(_))
        ));
    }

    #[test]
    fn gpu_forms() {
        assert_eq!(parse(&["--gpus 2"]).unwrap().gpus, Some(Gpus::Count(2)));
        assert_eq!(
            parse(&["--gpus device=0,1"]).unwrap().gpus,
            Some(Gpus::Devices(vec!["0".into(), "1".into()]))
        );
    }

    #[test]
    fn registries_of_image_references() {
        assert_eq!(registry_of("busybox"), None);
        assert_eq!(registry_of("library/busybox:1"), None);
        assert_eq!(
            registry_of("registry.example.org/tools/fastp:0.23"),
            Some("registry.example.org")
        );
        assert_eq!(registry_of("127.0.0.1:5000/tiny:1"), Some("127.0.0.1:5000"));
        assert_eq!(registry_of("localhost/x"), Some("localhost"));
    }
}
