//! Where scitqctl finds the server and its token: flags, then `SCITQ_SERVER` / `SCITQ_TOKEN`
//! (both handled by clap), then the local client config that scitqd writes on its first start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::address::ServerAddress;
use crate::error::UsageError;

/// Server used when neither a flag, the environment nor the config file names one.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5000";

/// The part of `config.toml` scitqctl reads; other keys (`worker_token`, ...) are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ClientConfig {
    pub server: Option<String>,
    pub token: Option<String>,
}

/// Where to connect and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: ServerAddress,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/scitq/config.toml`, else `$HOME/.config/scitq/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME")?).join(".config"),
    };
    Some(base.join("scitq").join("config.toml"))
}

/// Reads the client config; a missing file is an empty config.
pub fn load(path: &Path) -> Result<ClientConfig, UsageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            UsageError(format!(
                "invalid client config {}: {}",
                path.display(),
                e.message()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(UsageError(format!(
            "cannot read client config {}: {e}",
            path.display()
        ))),
    }
}

/// Combines flags (or env) with the config file at `path`. The file is only read when a
/// flag is missing, and the address is checked before anything connects.
pub fn resolve(
    server: Option<&str>,
    token: Option<&str>,
    path: Option<&Path>,
) -> Result<Target, UsageError> {
    let file = match (server, token, path) {
        (Some(_), Some(_), _) | (_, _, None) => ClientConfig::default(),
        (_, _, Some(path)) => load(path)?,
    };
    let server = server.or(file.server.as_deref()).unwrap_or(DEFAULT_SERVER);
    let address = server
        .parse::<ServerAddress>()
        .map_err(|e| UsageError(e.to_string()))?;
    let token = token
        .or(file.token.as_deref())
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| missing_token(path))?;
    Ok(Target {
        address,
        token: token.to_owned(),
    })
}

impl Target {
    /// Refuses to send the token in clear (plain http:// to a host other than this machine)
    /// unless `insecure`: anyone on the way could read it and act as an admin.
    pub fn refuse_clear_text(self, insecure: bool) -> Result<Target, UsageError> {
        let address = &self.address;
        if address.tls() || address.is_loopback() || insecure {
            return Ok(self);
        }
        Err(UsageError(format!(
            "refusing to send the token in clear to http://{address}: use https://{address} \
             (scitqd with TLS), or pass --insecure (or set SCITQ_INSECURE=1) to send it anyway"
        )))
    }
}

fn missing_token(path: Option<&Path>) -> UsageError {
    let file = path.map_or_else(
        || "$HOME/.config/scitq/config.toml".to_owned(),
        |p| p.display().to_string(),
    );
    UsageError(format!(
        "no token: pass --token, set SCITQ_TOKEN, or put `token = \"...\"` in {file}; \
         scitqd writes its admin token to DATA_DIR/admin.token and that file on its first start"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_in_clear_only_to_this_machine_or_when_insecure() {
        let target = |server: &str| resolve(Some(server), Some("t"), None).unwrap();
        for local in ["127.0.0.1", "localhost:7000", "[::1]:5000", "127.1.2.3"] {
            assert!(target(local).refuse_clear_text(false).is_ok(), "{local}");
        }
        assert!(target("https://10.1.2.3").refuse_clear_text(false).is_ok());
        let err = target("10.1.2.3:7000")
            .refuse_clear_text(false)
            .unwrap_err();
        assert!(err.0.contains("https://10.1.2.3:7000"), "{err}");
        assert!(err.0.contains("--insecure"), "{err}");
        assert!(target("10.1.2.3").refuse_clear_text(true).is_ok());
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn file_fills_what_flags_leave_out() {
        let (_dir, path) =
            write_config("server = \"10.1.2.3\"\ntoken = \"from-file\"\nworker_token = \"w\"\n");
        let target = resolve(None, None, Some(&path)).unwrap();
        assert_eq!(target.address.uri(), "http://10.1.2.3:5000");
        assert_eq!(target.token, "from-file");

        let target = resolve(Some("h:6000"), None, Some(&path)).unwrap();
        assert_eq!(target.address.uri(), "http://h:6000");
        assert_eq!(target.token, "from-file");

        let target = resolve(None, Some("flag"), Some(&path)).unwrap();
        assert_eq!(target.address.uri(), "http://10.1.2.3:5000");
        assert_eq!(target.token, "flag");
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let target = resolve(None, Some("t"), Some(&path)).unwrap();
        assert_eq!(target.address.to_string(), DEFAULT_SERVER);
        let err = resolve(None, None, Some(&path)).unwrap_err().to_string();
        assert!(err.starts_with("no token"), "{err}");
        assert!(err.contains("admin.token"), "{err}");
        assert!(err.contains("absent.toml"), "{err}");
    }

    #[test]
    fn bad_address_is_reported_before_the_token() {
        let err = resolve(Some("foo:bar:baz"), None, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid server address \"foo:bar:baz\"")
        );
    }

    #[test]
    fn broken_file_names_its_path() {
        let (_dir, path) = write_config("server = [\n");
        let err = resolve(None, None, Some(&path)).unwrap_err().to_string();
        assert!(err.starts_with("invalid client config"), "{err}");
        assert!(err.contains("config.toml"), "{err}");
    }
}
