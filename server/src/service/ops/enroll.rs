//! Enrollment tokens for the machines scitqd recruits (`core::enroll`): the recruiter asks
//! for one per instance it creates and puts it in the instance's user data.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Ops, OpsError};
use crate::core::enroll::check_issue;
use crate::core::enroll_user_data::{UserData, agent_env, render};
use crate::persistence::{enroll, now_ms};

/// A token as issued: the clear value exists only here and in the instance's user data
/// (scitqd keeps its SHA-256).
#[derive(Clone)]
pub struct EnrollmentToken {
    pub token: String,
    /// The instance name it is bound to: the agent's `--name`.
    pub instance: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("token", &"<hidden>")
            .field("instance", &self.instance)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The enrollment operations (see [`Ops::enrollment`]).
pub struct Enrollments<'a>(&'a Ops);

impl Ops {
    /// Enrollment tokens: issue one for an instance, revoke an instance's unused ones.
    pub fn enrollment(&self) -> Enrollments<'_> {
        Enrollments(self)
    }
}

impl Enrollments<'_> {
    /// A new single-use token for `instance`, valid for `ttl` (at most 7 days).
    pub async fn issue(&self, instance: &str, ttl: Duration) -> Result<EnrollmentToken, OpsError> {
        check_issue(instance, ttl)?;
        let token = crate::auth::generate();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = now_ms().saturating_add(ttl_ms);
        enroll::insert(
            &self.0.store,
            crate::auth::hash(&token),
            instance.to_owned(),
            expires_at,
        )
        .await?;
        Ok(EnrollmentToken {
            token,
            instance: instance.to_owned(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_millis(expires_at as u64),
        })
    }

    /// Drops the unused tokens of `instance` (destroyed before it enrolled): returns how
    /// many. A used one stays, so a replay is refused naming when it was used.
    pub async fn revoke(&self, instance: &str) -> Result<u64, OpsError> {
        Ok(enroll::revoke(&self.0.store, instance.to_owned()).await?)
    }
}

/// What user data needs from scitqd's config, resolved at start (`[deploy]`).
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    /// scitqd's address as machines reach it, with its scheme.
    pub server: String,
    pub agent_url: String,
    /// `[deploy] agent_sha256`, when configured: the binary is elsewhere.
    pub agent_sha256: Option<String>,
    /// The agent binary scitqd serves; hashed at its first use (hashing a debug build
    /// takes seconds, which scitqd's start must not wait for).
    pub agent_binary: std::path::PathBuf,
    /// The binary's hash once computed (None inside: there is no binary).
    agent_binary_sha256: Arc<tokio::sync::OnceCell<Option<String>>>,
    pub server_ca_pem: Option<String>,
    pub enroll_ttl: Duration,
}

impl Deployment {
    /// Resolves `[deploy]` against the address scitqd listens on. Reads the CA file
    /// (blocking: call it off the runtime's threads).
    pub fn resolve(
        deploy: &crate::enroll_config::Deploy,
        listen: std::net::SocketAddr,
        tls: bool,
    ) -> std::io::Result<Deployment> {
        let scheme = if tls { "https" } else { "http" };
        let server = match &deploy.server {
            Some(s) if s.contains("://") => s.trim_end_matches('/').to_owned(),
            Some(s) => format!("{scheme}://{s}"),
            None => format!("{scheme}://{listen}"),
        };
        let agent_url = deploy
            .agent_url
            .clone()
            .unwrap_or_else(|| format!("{server}/agent/scitq-agent"));
        let agent_sha256 = deploy.agent_sha256.clone();
        let server_ca_pem = match &deploy.server_ca {
            Some(path) => Some(std::fs::read_to_string(path)?),
            None => None,
        };
        Ok(Deployment {
            server,
            agent_url,
            agent_sha256,
            agent_binary: deploy.agent_binary.clone(),
            agent_binary_sha256: Arc::default(),
            server_ca_pem,
            enroll_ttl: deploy.enroll_ttl,
        })
    }
}

/// Hex SHA-256 of a file, read in blocks. Blocking.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl Deployment {
    /// The sha256 machines check the agent they download against: the configured one, or
    /// the served binary's (hashed once). None: neither exists.
    pub async fn agent_sha256(&self) -> Result<Option<String>, OpsError> {
        if let Some(sha) = &self.agent_sha256 {
            return Ok(Some(sha.clone()));
        }
        self.served_sha256().await
    }

    /// The sha256 of the binary scitqd serves at `/agent/scitq-agent` (hashed once); None
    /// when there is no such file.
    pub async fn served_sha256(&self) -> Result<Option<String>, OpsError> {
        let path = self.agent_binary.clone();
        let sha = self
            .agent_binary_sha256
            .get_or_try_init(|| async move {
                let hashed = tokio::task::spawn_blocking(move || match sha256_file(&path) {
                    Ok(sha) => Ok(Some(sha)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
                hashed.map_err(|source| OpsError::AgentBinary {
                    path: self.agent_binary.clone(),
                    source,
                })
            })
            .await?;
        Ok(sha.clone())
    }
}

/// The form of a machine's user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataFormat {
    /// Cloud-init that downloads, checks and starts the agent (`deploy/cloud-init.yaml`).
    CloudInit,
    /// The agent's environment only (`KEY=value` lines): a local instance, whose agent is
    /// already on this machine.
    AgentEnv,
}

impl Enrollments<'_> {
    /// Issues a token for `instance` (valid for `[deploy] enroll_ttl`) and renders the
    /// user data that starts its agent with it.
    pub async fn user_data(
        &self,
        instance: &str,
        concurrency: u32,
        prefetch: Option<u32>,
        batch: Option<&str>,
        format: UserDataFormat,
    ) -> Result<(EnrollmentToken, String), OpsError> {
        let deployment = &self.0.deployment;
        let sha = match format {
            UserDataFormat::CloudInit => {
                deployment
                    .agent_sha256()
                    .await?
                    .ok_or_else(|| OpsError::NoAgentBinary {
                        path: deployment.agent_binary.clone(),
                    })?
            }
            UserDataFormat::AgentEnv => String::new(),
        };
        let token = self.issue(instance, deployment.enroll_ttl).await?;
        let data = UserData {
            server: &deployment.server,
            name: instance,
            enroll_token: &token.token,
            concurrency,
            prefetch,
            agent_url: &deployment.agent_url,
            agent_sha256: &sha,
            // A local machine's agent is given scitqd's CA file by path (`--server-ca`).
            server_ca_pem: match format {
                UserDataFormat::CloudInit => deployment.server_ca_pem.as_deref(),
                UserDataFormat::AgentEnv => None,
            },
            batch,
        };
        let rendered = match format {
            UserDataFormat::CloudInit => render(&data),
            UserDataFormat::AgentEnv => agent_env(&data),
        };
        match rendered {
            Ok(text) => Ok((token, text)),
            Err(err) => {
                // Nobody will use it.
                self.revoke(instance).await?;
                Err(err.into())
            }
        }
    }
}

impl Ops {
    /// The agent binary scitqd serves to recruited machines and its sha256; None when
    /// scitqd has no copy (`[deploy] agent_binary` missing).
    pub async fn served_agent(&self) -> Result<Option<(std::path::PathBuf, String)>, OpsError> {
        let sha = self.deployment.served_sha256().await?;
        Ok(sha.map(|sha| (self.deployment.agent_binary.clone(), sha)))
    }
}
