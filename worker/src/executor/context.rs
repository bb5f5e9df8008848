//! What both runners share, below them: what an executor is given ([`ExecContext`]) and tells
//! the agent loop ([`ExecEvent`]), how the loop signals it ([`Handle`]), the runner interface
//! ([`TaskRunner`]), the work dir's preparation, `state.json` writes and the time limit.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::docker::Engine;
use crate::launch::Launch;
use crate::process_group::signal_group;
use crate::scan::Adopt;
use crate::spares::Spares;
use crate::staging::{StageIn, Stager, StagingError};
use crate::state::{ExecDir, ExecutionId, Failure, FinalReport, StateFile, StateWriter, Stream};
use crate::supervisor::Supervisor;

/// What runs an execution once it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// A native process; its pid is also its process group id.
    Group(u32),
    /// A container, by id.
    Container(String),
}

/// How the agent loop signals a started execution.
#[derive(Debug, Clone)]
pub enum Handle {
    Group(u32),
    /// The container's executor applies the signals it receives, in order: SIGSTOP pauses,
    /// SIGCONT unpauses, others are sent with `docker kill`.
    Container {
        signals: mpsc::UnboundedSender<Signal>,
    },
}

impl Handle {
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        match self {
            Handle::Group(pgid) => signal_group(*pgid, signal),
            // A closed channel means the executor is done: nothing left to signal.
            Handle::Container { signals, .. } => {
                let _ = signals.send(signal);
                Ok(())
            }
        }
    }
}

/// What an executor tells the agent loop.
#[derive(Debug)]
pub enum ExecEvent {
    /// The process or container runs.
    Started { id: ExecutionId, runner: Runner },
    /// `data` was appended to the stream's spool file at `offset`.
    Output {
        id: ExecutionId,
        stream: Stream,
        offset: u64,
        data: Bytes,
    },
    /// The command ended; its output folder is being uploaded.
    Uploading { id: ExecutionId },
    /// The execution ended and `state.json` holds the report.
    Finished {
        id: ExecutionId,
        report: FinalReport,
    },
}

/// What one executor needs besides its launch.
#[derive(Debug)]
pub struct ExecContext {
    pub dir: ExecDir,
    /// Cores the task may use (the `CPU` variable).
    pub cpu: u32,
    /// Set by the agent when the server asked for a kill, so the failure is `KILLED`.
    pub killed: Arc<AtomicBool>,
    /// Clean work dirs to reuse.
    pub spares: Arc<Spares>,
    pub events: mpsc::Sender<ExecEvent>,
    /// The Docker daemon, for container tasks.
    pub engine: Arc<Engine>,
    /// Signals for a container task (see [`Handle::Container`]).
    pub signals: Option<mpsc::UnboundedReceiver<Signal>>,
    /// Re-attach to this container instead of starting the task.
    pub reattach: Option<String>,
    /// Storage for inputs, resources and output, or why there is none.
    pub stager: Result<Arc<Stager>, Arc<StagingError>>,
    /// Inputs and resources being staged since the task was accepted.
    pub staged: Option<StageIn>,
    /// Spawns native tasks and tells how they end.
    pub supervisor: Arc<Supervisor>,
    /// Follow this native task a previous agent started instead of starting the task.
    pub adopt: Option<Adopt>,
}

/// How a task's command runs: natively (`native.rs`) or in a container (`container.rs`). The
/// executor (`executor/mod.rs`) drives either the same way: stage the inputs unless the run
/// [`resumes`](TaskRunner::resumes) one a previous agent started, [`run`](TaskRunner::run),
/// upload the output, write the final report to `state.json`, then tell the runner it is
/// [`recorded`](TaskRunner::recorded) and, once the agent loop has it,
/// [`reported`](TaskRunner::reported).
pub(crate) trait TaskRunner {
    /// Whether this run continues one a previous agent process started (its inputs are in
    /// place, its preamble written and announced).
    fn resumes(&self) -> bool;

    /// Runs the command to its end, `preamble` at the head of its stderr, sending `Started`,
    /// then the preamble and the output as `Output` events. Never fails: every problem is
    /// in the report.
    async fn run(&mut self, launch: &Launch, ctx: &ExecContext, preamble: Bytes) -> FinalReport;

    /// `state.json`, when the runner holds it open for the final report.
    fn state_file(&mut self) -> Option<StateWriter>;

    /// The final report is in `state.json`; the agent loop has not heard of it yet.
    async fn recorded(&mut self, id: ExecutionId, ctx: &ExecContext);

    /// The agent loop has the report (its slot is free); `success`: the run succeeded.
    async fn reported(self, ctx: &ExecContext, success: bool);
}

/// Why a work dir could not be made ready for a run.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    #[error("cannot prepare {}: {source}", dir.display())]
    Prepare { dir: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// How long a command past its time limit has between SIGTERM and SIGKILL.
pub(crate) const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// The report of a command stopped at its time limit (`exit_code`: how it ended then).
pub(crate) fn timed_out(limit: Duration, exit_code: Option<i32>) -> FinalReport {
    FinalReport {
        exit_code,
        ..FinalReport::failed(
            Failure::Timeout,
            format!(
                "ran past its time limit of {}",
                humantime::format_duration(limit)
            ),
        )
    }
}

/// Creates the work dir (or moves a spare in place) and its spool files (emptied).
pub(crate) async fn prepare(
    dir: &ExecDir,
    spares: Arc<Spares>,
) -> Result<(tokio::fs::File, tokio::fs::File), WorkDirError> {
    let at = dir.clone();
    let ready = tokio::task::spawn_blocking(move || spares.prepare(&at))
        .await
        .map_err(io::Error::other)
        .and_then(|ready| ready)
        .map_err(|source| WorkDirError::Prepare {
            dir: dir.root().to_owned(),
            source,
        })?;
    Ok((
        tokio::fs::File::from_std(ready.stdout),
        tokio::fs::File::from_std(ready.stderr),
    ))
}

/// Writes `state.json`: in place through `open` when the execution holds it (one small
/// write to an open file, done here like the rest of a native start), else from a blocking
/// thread.
pub(crate) async fn write_state(
    dir: &ExecDir,
    state: StateFile,
    open: Option<StateWriter>,
) -> io::Result<()> {
    if let Some(mut file) = open {
        return file.write(&state);
    }
    let dir = dir.clone();
    tokio::task::spawn_blocking(move || state.write(&dir))
        .await
        .map_err(io::Error::other)?
}
