//! `scitq-agent`: the worker side of scitq.
//!
//! The agent keeps one stream open to `scitqd` (`WorkerService.Session`), accepts assignments,
//! runs them natively in their own work dir and process group or in a Docker container,
//! spools their output to disk
//! while streaming it live, and reports state changes until the server has committed them.
//! It survives losing the server: tasks keep running, output keeps being spooled, and after a
//! reconnect only what the server lacks is sent again. See ARCHITECTURE.md, "The agent stream".
//!
//! Module map: [`config`] (flags, env, client config), [`agent`] (the service loop),
//! [`session`] (the gRPC stream and reconnection), [`outbox`] (sequence numbers and
//! unacknowledged updates), [`executor`] (running one task, natively or in a container),
//! [`docker`] (the Docker daemon: images, signals, removal), [`staging`] and [`sra`] (data
//! around a run), [`process_group`] (signals to native tasks), [`janitor`] (removing failed
//! containers and work dirs), [`spares`] (recycled work dirs), [`launch`] (assignments
//! validated into commands), [`state`] (work dir layout, `state.json`), [`scan`] (what a previous agent left),
//! [`stats`] (heartbeat figures), [`supervisor`] (the process that runs native tasks and
//! outlives the agent), [`lease`] (the lease file that fences tasks).
//!
//! On SIGINT/SIGTERM the agent stops taking tasks, sends SIGTERM to running ones (SIGKILL
//! after 10 s), marks them abandoned and closes the stream; the server fails them as lost
//! (and re-queues them within their retry budget) at the next `Hello` or when the lease ends.
//! Containers are left running instead: the next agent re-attaches to them.

pub mod agent;
pub mod config;
pub mod credential;
pub mod docker;
pub mod executor;
pub mod janitor;
pub mod launch;
pub mod lease;
pub mod outbox;
pub mod process_group;
pub mod scan;
pub mod session;
pub mod spares;
pub mod sra;
pub mod staging;
pub mod state;
pub mod stats;
pub mod supervisor;

use std::fs::TryLockError;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::session::{Connector, SessionError};
use crate::spares::Spares;

/// Why the agent stopped with an error (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use work dir {}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("work dir {} is in use by another scitq-agent", path.display())]
    WorkDirInUse { path: PathBuf },
    #[error("invalid server address {server}: {source}")]
    Endpoint {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("the server refused this agent: {0}")]
    Rejected(SessionError),
    #[error(transparent)]
    Supervisor(supervisor::SupervisorError),
}

/// Runs the agent until `shutdown` is cancelled or the server rejects it.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let work_dir = config.work_dir.clone();
    let work_dir_error = |source| AgentError::WorkDir {
        path: work_dir.clone(),
        source,
    };
    let locked = {
        let work_dir = work_dir.clone();
        tokio::task::spawn_blocking(move || lock_work_dir(&work_dir)).await
    };
    let lock = match locked.map_err(std::io::Error::other) {
        Ok(Ok(lock)) => lock,
        Ok(Err(PrepareError::InUse)) => return Err(AgentError::WorkDirInUse { path: work_dir }),
        Ok(Err(PrepareError::Io(source))) | Err(source) => return Err(work_dir_error(source)),
    };
    // Before the scan: the tasks the supervisor still holds are adopted, not killed.
    let supervisor = Arc::new(
        supervisor::Supervisor::connect_or_start(&work_dir)
            .await
            .map_err(AgentError::Supervisor)?,
    );
    let prepared = {
        let work_dir = work_dir.clone();
        let held = supervisor.held().clone();
        // As many work dirs ready as the agent may hold executions at its start.
        let prefetch = match config.prefetch {
            scitq_proto::PrefetchSetting::Fixed(n) => n,
            scitq_proto::PrefetchSetting::Auto => 0,
        };
        let ready = config.concurrency.saturating_add(prefetch) as usize;
        tokio::task::spawn_blocking(move || prepare_work_dir(&work_dir, ready, &held)).await
    };
    let (spares, found) = match prepared.map_err(std::io::Error::other) {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(source)) | Err(source) => return Err(work_dir_error(source)),
    };
    if !found.recovered.is_empty() {
        tracing::info!(
            count = found.recovered.len(),
            "found finished executions not yet reported"
        );
    }
    let credential = {
        let work_dir = work_dir.clone();
        tokio::task::spawn_blocking(move || credential::load_or_create(&work_dir)).await
    };
    let credential = match credential.map_err(std::io::Error::other) {
        Ok(Ok(credential)) => credential,
        Ok(Err(source)) | Err(source) => return Err(work_dir_error(source)),
    };
    let connector = Connector::new(&config, credential).map_err(|source| AgentError::Endpoint {
        server: config.server.uri(),
        source,
    })?;
    let (heartbeat_tx, heartbeat_rx) = tokio::sync::mpsc::channel(1);
    let (every_tx, every_rx) = tokio::sync::watch::channel(config.heartbeat);
    let stop_stats = CancellationToken::new();
    let stats = tokio::spawn(stats::run(
        every_rx,
        work_dir.clone(),
        heartbeat_tx,
        stop_stats.clone(),
    ));
    tracing::info!(
        name = config.name,
        concurrency = config.concurrency,
        work_dir = %work_dir.display(),
        "scitq-agent starting, server {}",
        config.server
    );
    let heartbeats = agent::Heartbeats {
        samples: heartbeat_rx,
        every: every_tx,
    };
    let result = agent::Agent::new(config, connector, spares, found, heartbeats, supervisor)
        .run(shutdown)
        .await;
    stop_stats.cancel();
    if let Err(e) = stats.await {
        tracing::error!("heartbeat task failed: {e}");
    }
    drop(lock);
    result.map_err(AgentError::Rejected)
}

enum PrepareError {
    InUse,
    Io(std::io::Error),
}

/// Spare work dirs kept for reuse.
const MAX_SPARES: usize = 64;

/// Creates and locks the work dir. Blocking.
fn lock_work_dir(work_dir: &std::path::Path) -> Result<std::fs::File, PrepareError> {
    std::fs::create_dir_all(work_dir).map_err(PrepareError::Io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(work_dir.join("agent.lock"))
        .map_err(PrepareError::Io)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(PrepareError::InUse),
        Err(TryLockError::Error(e)) => Err(PrepareError::Io(e)),
    }
}

/// Scans the locked work dir (see `scan::scan`; `held`: the supervisor's tasks), and makes
/// `ready` clean spare work dirs (counting those a previous agent left). Blocking.
fn prepare_work_dir(
    work_dir: &std::path::Path,
    ready: usize,
    held: &std::collections::HashMap<state::ExecutionId, u32>,
) -> std::io::Result<(Arc<Spares>, scan::Found)> {
    let found = scan::scan(work_dir, held)?;
    let spares = Spares::new(work_dir, MAX_SPARES);
    spares.adopt()?;
    if let Err(e) = spares.fill(ready) {
        // Only a head start: executions make their work dirs when there is no spare.
        tracing::warn!("cannot make spare work dirs in {}: {e}", work_dir.display());
    }
    Ok((Arc::new(spares), found))
}
