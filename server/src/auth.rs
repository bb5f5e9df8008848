//! Tokens: creation on first start, hashing, and the interceptor every RPC goes through.
//! Only SHA-256 hashes are stored; clear values are written once to owner-only files.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::persistence::Store;
use crate::persistence::tokens::{self, StoredToken};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// People and scripts: every RPC.
    Admin,
    /// Agents: the session stream only.
    Worker,
}

/// In a worker-service request's extensions instead of a [`Role`]: the SHA-256 of a bearer
/// that is no API token, let through to the agent session alone, which checks it as the
/// named worker's own credential or as an enrollment token. With no `Role`, every other
/// call refuses it. Recruited agents never hold the worker token.
#[derive(Clone, Debug)]
pub struct AgentBearer(pub String);

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random secret: 32 bytes, hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The known token hashes.
#[derive(Clone, Default)]
pub struct Tokens(Arc<HashMap<String, Role>>);

impl Tokens {
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.0.get(&hash(token)).copied()
    }
}

/// Clear tokens created on this start, to be written to the client config.
pub struct Fresh {
    pub admin: String,
    pub worker: String,
}

/// Loads the tokens; on first start creates one admin and one worker token and writes
/// them to `DATA_DIR/admin.token` and `DATA_DIR/worker.token` (mode 0600).
pub async fn bootstrap(store: &Store, data_dir: &Path) -> anyhow::Result<(Tokens, Option<Fresh>)> {
    let mut rows = tokens::all(store).await?;
    let mut fresh = None;
    if rows.is_empty() {
        let admin = generate();
        let worker = generate();
        let new_rows = [(Role::Admin, &admin), (Role::Worker, &worker)]
            .into_iter()
            .map(|(role, token)| StoredToken {
                role: role.as_str().to_owned(),
                hash: hash(token),
            })
            .collect();
        tokens::insert(store, new_rows).await?;
        write_secret(&data_dir.join("admin.token"), &format!("{admin}\n"))?;
        write_secret(&data_dir.join("worker.token"), &format!("{worker}\n"))?;
        tracing::info!(dir = %data_dir.display(), "created admin.token and worker.token");
        rows = tokens::all(store).await?;
        fresh = Some(Fresh { admin, worker });
    }
    let map = rows
        .into_iter()
        .map(|row| {
            let role = if row.role == "admin" {
                Role::Admin
            } else {
                Role::Worker
            };
            (row.hash, role)
        })
        .collect();
    Ok((Tokens(Arc::new(map)), fresh))
}

/// Writes a file readable only by its owner.
pub fn write_secret(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `$XDG_CONFIG_HOME/scitq/config.toml`, or `$HOME/.config/scitq/config.toml`.
pub fn client_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("scitq").join("config.toml"))
}

/// What became of the local client config at a first start.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientConfig {
    /// No HOME or XDG_CONFIG_HOME: nowhere to write it.
    Nowhere,
    /// Written (it was absent, or it pointed at this server's address).
    Written(PathBuf),
    /// Left alone: it belongs to another scitqd (its `server`, or unreadable as a config).
    Kept { path: PathBuf, server: String },
}

/// Writes the local client config so scitqctl and a local agent need no flags, unless one is
/// there for another server: a second scitqd started with a fresh data dir must not take the
/// first one's clients (they would get tokens the first server refuses).
pub fn write_client_config(server: &str, fresh: &Fresh) -> anyhow::Result<ClientConfig> {
    let Some(path) = client_config_path() else {
        return Ok(ClientConfig::Nowhere);
    };
    match std::fs::read_to_string(&path) {
        Ok(existing) => {
            let theirs = server_of(&existing);
            if theirs.as_deref() != Some(server) {
                let server = theirs.unwrap_or_else(|| "no server key".to_owned());
                return Ok(ClientConfig::Kept { path, server });
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let content = format!(
        "# written by scitqd on first start\nserver = \"{server}\"\ntoken = \"{}\"\nworker_token = \"{}\"\n",
        fresh.admin, fresh.worker
    );
    write_secret(&path, &content)?;
    Ok(ClientConfig::Written(path))
}

/// The `server` of a client config, if it parses.
fn server_of(config: &str) -> Option<String> {
    let table: toml::Table = config.parse().ok()?;
    table.get("server")?.as_str().map(str::to_owned)
}

/// Checks the bearer token and records its role in the request.
pub fn interceptor(tokens: Tokens) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let token = bearer(&request)?;
        let role = tokens
            .role_of(token)
            .ok_or_else(|| Status::unauthenticated("bad token: rejected by this server"))?;
        request.extensions_mut().insert(role);
        Ok(request)
    }
}

/// [`interceptor`], for the worker service: a token that is no API token but has the shape
/// of an agent's secret passes as an [`AgentBearer`], which only the session accepts (it
/// checks the token against the store: enrollment tokens and worker credentials change at
/// run time).
pub fn agent_interceptor(
    tokens: Tokens,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let token = bearer(&request)?;
        match tokens.role_of(token) {
            Some(role) => {
                request.extensions_mut().insert(role);
            }
            None if token.len() >= crate::core::credential::MIN_LEN
                && token.len() <= crate::core::credential::MAX_LEN =>
            {
                let hashed = hash(token);
                request.extensions_mut().insert(AgentBearer(hashed));
            }
            None => {
                return Err(Status::unauthenticated(
                    "bad token: rejected by this server",
                ));
            }
        }
        Ok(request)
    }
}

/// The bearer token of a request.
fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated(
                "missing token: send the header `authorization: Bearer TOKEN` (scitqctl: \
                     --token or SCITQ_TOKEN); scitqd wrote admin.token in its data dir",
            )
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("bad token: not printable text"))?;
    Ok(header.strip_prefix("Bearer ").unwrap_or(header).trim())
}

/// [`interceptor`], for services that only people may call (reflection): a worker token,
/// which every agent machine holds, is refused at once.
pub fn admin_interceptor(
    tokens: Tokens,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    let check = interceptor(tokens);
    move |request: Request<()>| {
        let request = check(request)?;
        require_admin(&request)?;
        Ok(request)
    }
}

/// Refuses a request not made with an admin token.
pub fn require_admin<T>(request: &Request<T>) -> Result<(), Status> {
    match request.extensions().get::<Role>() {
        Some(Role::Admin) => Ok(()),
        _ => Err(Status::permission_denied(
            "this call needs an admin token; worker tokens only open agent sessions",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_of_a_client_config() {
        assert_eq!(
            server_of("token = \"t\"\nserver = \"127.0.0.1:5000\"\n").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(server_of("token = \"t\"\n"), None);
        assert_eq!(server_of("not toml ["), None);
    }

    #[test]
    fn interceptor_checks_tokens_and_roles() {
        let tokens = Tokens(Arc::new(HashMap::from([
            (hash("a"), Role::Admin),
            (hash("w"), Role::Worker),
        ])));
        let check = interceptor(tokens);
        let request = |token: Option<&str>| {
            let mut r = Request::new(());
            if let Some(t) = token {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            r
        };
        assert_eq!(
            check(request(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let bad = check(request(Some("nope"))).unwrap_err();
        assert!(bad.message().contains("bad token"));
        let admin = check(request(Some("a"))).unwrap();
        assert!(require_admin(&admin).is_ok());
        let worker = check(request(Some("w"))).unwrap();
        assert!(require_admin(&worker).is_err());
    }

    #[test]
    fn the_worker_service_lets_other_agent_tokens_through_to_the_session_alone() {
        let tokens = Tokens(Arc::new(HashMap::from([(hash("w"), Role::Worker)])));
        let check = agent_interceptor(tokens);
        let request = |token: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            r
        };
        let worker = check(request("w")).unwrap();
        assert_eq!(worker.extensions().get::<Role>(), Some(&Role::Worker));
        assert!(worker.extensions().get::<AgentBearer>().is_none());
        let secret = "e".repeat(64);
        let agent = check(request(&secret)).unwrap();
        assert_eq!(agent.extensions().get::<Role>(), None);
        assert_eq!(
            agent.extensions().get::<AgentBearer>().unwrap().0,
            hash(&secret)
        );
        assert_eq!(
            require_admin(&agent).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let short = check(request("nope")).unwrap_err();
        assert_eq!(short.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn reflection_is_for_admin_tokens_only() {
        let tokens = Tokens(Arc::new(HashMap::from([
            (hash("a"), Role::Admin),
            (hash("w"), Role::Worker),
        ])));
        let check = admin_interceptor(tokens);
        let request = |token: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            r
        };
        assert!(check(request("a")).is_ok());
        let refused = check(request("w")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            check(request("x")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
