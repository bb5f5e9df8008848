//! `[deploy]` in scitqd's config file: how machines scitqd recruits get the agent and reach
//! scitqd (their cloud-init user data, `core::enroll_user_data`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[deploy]` table as written.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    /// scitqd's address as recruited machines reach it (`HOST:PORT`, `https://HOST:PORT`).
    pub server: Option<String>,
    /// Where machines download scitq-agent (default: scitqd's own `/agent/scitq-agent`).
    pub agent_url: Option<String>,
    /// The agent binary scitqd serves and whose sha256 machines check (default:
    /// `scitq-agent` next to `scitqd`).
    pub agent_binary: Option<PathBuf>,
    /// sha256 of the binary at `agent_url`, when scitqd has no copy of it.
    pub agent_sha256: Option<String>,
    /// PEM of the CA that signed scitqd's certificate, written on each machine (for a
    /// certificate machines would not trust otherwise).
    pub server_ca: Option<PathBuf>,
    /// How long an enrollment token waits for its machine's agent (default 30m).
    pub enroll_ttl: Option<String>,
}

/// The validated `[deploy]` table.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// None: scitqd's listen address (fine for machines on this host, e.g. the local provider).
    pub server: Option<String>,
    pub agent_url: Option<String>,
    pub agent_binary: PathBuf,
    pub agent_sha256: Option<String>,
    pub server_ca: Option<PathBuf>,
    pub enroll_ttl: Duration,
}

/// A `[deploy]` key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid [deploy] enroll_ttl {value:?}: {reason} (examples: 10m, 1h)")]
    Ttl { value: String, reason: String },
    #[error("invalid [deploy] agent_sha256 {0:?}: expected 64 hex digits")]
    Sha256(String),
}

impl Deploy {
    pub fn from_file(file: DeployFile) -> Result<Deploy, DeployError> {
        let enroll_ttl = match file.enroll_ttl {
            Some(value) => {
                let ttl = humantime::parse_duration(&value).map_err(|e| DeployError::Ttl {
                    value: value.clone(),
                    reason: e.to_string(),
                })?;
                crate::core::enroll::check_issue("x", ttl).map_err(|e| DeployError::Ttl {
                    value: value.clone(),
                    reason: e.to_string(),
                })?;
                ttl
            }
            None => Duration::from_secs(30 * 60),
        };
        if let Some(sha) = &file.agent_sha256
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(DeployError::Sha256(sha.clone()));
        }
        Ok(Deploy {
            server: file.server,
            agent_url: file.agent_url,
            agent_binary: file.agent_binary.unwrap_or_else(default_agent_binary),
            agent_sha256: file.agent_sha256.map(|s| s.to_ascii_lowercase()),
            server_ca: file.server_ca,
            enroll_ttl,
        })
    }

    pub fn to_file(&self) -> DeployFile {
        DeployFile {
            server: self.server.clone(),
            agent_url: self.agent_url.clone(),
            agent_binary: Some(self.agent_binary.clone()),
            agent_sha256: self.agent_sha256.clone(),
            server_ca: self.server_ca.clone(),
            enroll_ttl: Some(humantime::format_duration(self.enroll_ttl).to_string()),
        }
    }
}

impl Default for Deploy {
    fn default() -> Deploy {
        Deploy::from_file(DeployFile::default()).expect("the defaults are valid")
    }
}

/// `scitq-agent` in the folder of the running `scitqd`.
pub fn default_agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("scitq-agent")))
        .unwrap_or_else(|| Path::new("/usr/local/bin/scitq-agent").to_owned())
}
