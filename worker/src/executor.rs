//! Runs one execution: natively here (its work dir prepared, the command spawned in its own
//! process group), or in a container (`container.rs`) when its task names an image. Either
//! way stdout and stderr are appended to the spool files and every read is reported at once
//! as an [`ExecEvent::Output`], then the final report is written to `state.json`.
//!
//! The contract with the agent loop, the same for both kinds: events of one execution arrive
//! in order: `Started`, the `Output`s of each stream in stream order, then `Finished` after all
//! output. The agent loop never waits on an executor; it signals through a [`Handle`]: a
//! native process group directly ([`signal_group`]), a container through a channel its
//! executor reads (pause, unpause, kill), and it reads the spool files for replays.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::launch::Launch;
use crate::spares::{Ready, Spares};
use crate::state::{
    ExecDir, ExecutionId, Failure, FinalReport, Phase, StateFile, StateWriter, Stream,
};
use crate::supervisor::{Exit, ExitWaiter, Supervisor};

/// Largest piece of output read (and sent) at once.
pub const CHUNK: usize = 64 * 1024;

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
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        match self {
            Handle::Group(pgid) => signal_group(*pgid, signal).map_err(|e| e.to_string()),
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
    pub engine: Arc<crate::container::Engine>,
    /// Signals for a container task (see [`Handle::Container`]).
    pub signals: Option<mpsc::UnboundedReceiver<Signal>>,
    /// Re-attach to this container instead of starting the task.
    pub reattach: Option<String>,
    /// Storage for inputs, resources and output, or why there is none.
    pub stager: Result<Arc<crate::staging::Stager>, String>,
    /// Inputs and resources being staged since the task was accepted.
    pub staged: Option<crate::staging::StageIn>,
    /// Spawns native tasks and tells how they end.
    pub supervisor: Arc<Supervisor>,
    /// Follow this native task a previous agent started instead of starting the task.
    pub adopt: Option<crate::state::Adopt>,
}

/// Runs the execution to its end. Never fails: every problem becomes the final report.
pub async fn run(launch: Launch, mut ctx: ExecContext) {
    use crate::container::{self, Start};
    let id = launch.id;
    let mut state_file = None;
    let native = launch.container.is_none();
    let staged = match ctx.adopt.take() {
        Some(adopt) => Err(adopted(id, adopt, &ctx).await),
        None => Ok(Box::pin(stage_in(&launch, &mut ctx)).await),
    };
    let (mut report, container) = match staged {
        Err(report) => (report, None),
        Ok(staged) => match staged {
            Err(message) => (FinalReport::failed(Failure::Download, message), None),
            Ok(notes) => match &launch.container {
                None => {
                    let (report, state) = execute(&launch, &ctx, Bytes::from(notes.concat())).await;
                    state_file = state;
                    (report, None)
                }
                Some(spec) => {
                    let start = match ctx.reattach.take() {
                        Some(container) => Start::Reattach(container),
                        None => Start::Fresh {
                            preamble: Bytes::from(notes.concat()),
                        },
                    };
                    // Boxed, as are the staging steps: a native task's future stays small, and
                    // the runtime copies it whole when it spawns and finishes it.
                    Box::pin(container::execute(&launch, spec, &mut ctx, start)).await
                }
            },
        },
    };
    if !launch.data.output.is_empty() && report.failure != Some(Failure::Download) {
        let _ = ctx.events.send(ExecEvent::Uploading { id }).await;
        Box::pin(stage_out(&launch, &ctx, &mut report)).await;
    }
    let state = StateFile {
        execution_id: id,
        task_id: launch.task_id,
        phase: Phase::Finished {
            report: report.clone(),
            acknowledged: false,
        },
    };
    if let Err(e) = write_state(&ctx.dir, state, state_file).await {
        tracing::warn!(execution_id = %id, "cannot write state.json: {e}");
    }
    if native {
        ctx.supervisor.done(id).await;
    }
    let success = report.failure.is_none();
    // The loop is gone only when the agent is shutting down; nothing to do then.
    let _ = ctx.events.send(ExecEvent::Finished { id, report }).await;
    // A failed container is kept for inspection (the janitor removes it later); a succeeded
    // one goes now that its report is on disk. After the report, so the slot is free at once.
    if let (Some(container), true) = (container, success)
        && let Ok(docker) = ctx.engine.docker().await
    {
        container::remove(docker, &container).await;
    }
}

/// Waits for the inputs and resources staged since the task was accepted (or stages them now).
/// Returns the lines for the head of the task's stderr (see `staging`).
async fn stage_in(launch: &Launch, ctx: &mut ExecContext) -> Result<Vec<String>, String> {
    let handle = match ctx.staged.take() {
        Some(handle) => handle,
        None if launch.data.needs_staging_in() => {
            let stager = ctx.stager.clone()?;
            crate::staging::stage_in(stager, launch.id, ctx.dir.clone(), launch.data.clone())
        }
        None => return Ok(Vec::new()),
    };
    handle
        .await
        .map_err(|e| format!("staging the inputs stopped: {e}"))?
}

/// Uploads the output folder, also after a failed run; an upload failure fails a run that
/// succeeded and is added to the message of one that did not.
async fn stage_out(launch: &Launch, ctx: &ExecContext, report: &mut FinalReport) {
    let uploaded = match &ctx.stager {
        Ok(stager) => crate::staging::stage_out(stager, &ctx.dir, &launch.data.output).await,
        Err(e) => Err(e.clone()),
    };
    match uploaded {
        Ok(files) => report.uploaded = files.into_iter().map(|f| (f.uri, f.size)).collect(),
        Err(message) if report.failure.is_none() => {
            report.failure = Some(Failure::Upload);
            report.message = message;
        }
        Err(message) => report.message = format!("{}; {message}", report.message),
    }
}

/// Runs the command natively; `preamble` goes at the head of its stderr. Returns the report
/// and `state.json` still open, when it is.
async fn execute(
    launch: &Launch,
    ctx: &ExecContext,
    preamble: Bytes,
) -> (FinalReport, Option<StateWriter>) {
    let id = launch.id;
    let Started {
        pid,
        logs,
        state,
        exit,
    } = match start(launch, ctx, &preamble).await {
        Ok(started) => started,
        Err(report) => return (report, None),
    };
    let _ = ctx
        .events
        .send(ExecEvent::Started {
            id,
            runner: Runner::Group(pid),
        })
        .await;
    announce_preamble(id, preamble.clone(), &ctx.events).await;
    let mut tail = Tail {
        logs,
        totals: [0, preamble.len() as u64],
    };
    let report = follow(id, &mut tail, exit, pid, launch.run_timeout, ctx).await;
    (report, state)
}

/// Follows a native task a previous agent process started (see `state::Adopt`) to its end.
async fn adopted(id: ExecutionId, adopt: crate::state::Adopt, ctx: &ExecContext) -> FinalReport {
    let _ = ctx
        .events
        .send(ExecEvent::Started {
            id,
            runner: Runner::Group(adopt.pid),
        })
        .await;
    let exit = match adopt.exit {
        Some(exit) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(exit);
            rx
        }
        None => ctx.supervisor.watch(id),
    };
    let open = |stream| {
        std::fs::File::open(ctx.dir.log(stream)).or_else(|_| std::fs::File::open("/dev/null"))
    };
    let logs = match (open(Stream::Stdout), open(Stream::Stderr)) {
        (Ok(stdout), Ok(stderr)) => [stdout, stderr],
        (Err(e), _) | (_, Err(e)) => {
            return FinalReport::failed(Failure::Run, format!("cannot read the spool files: {e}"));
        }
    };
    let mut tail = Tail {
        logs,
        totals: adopt.spooled,
    };
    follow(id, &mut tail, exit, adopt.pid, adopt.run_timeout, ctx).await
}

/// Tails the task's spool files until it ends (or runs past `limit`), then reports.
async fn follow(
    id: ExecutionId,
    tail: &mut Tail,
    mut exit: ExitWaiter,
    pid: u32,
    limit: Option<Duration>,
    ctx: &ExecContext,
) -> FinalReport {
    let deadline = limit.map(|limit| tokio::time::Instant::now() + limit);
    let mut poll = POLL_FIRST;
    let (ended, timed_out) = loop {
        tokio::select! {
            ended = &mut exit => break (ended, None),
            _ = tokio::time::sleep(poll) => {
                poll = if tail.drain(id, &ctx.events).await { POLL_FIRST } else { (poll * 2).min(POLL_MAX) };
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                break (stop_after_timeout(pid, &mut exit).await, limit);
            }
        }
    };
    // What the task wrote last (a background process it left may write on: not waited for).
    tail.drain(id, &ctx.events).await;
    let killed = ctx.killed.load(Ordering::Acquire);
    let ended = ended.map_err(|_| crate::supervisor::SupervisorError::Lost.to_string());
    let mut report = match timed_out {
        Some(limit) => FinalReport {
            exit_code: ended.as_ref().ok().and_then(|e| e.code),
            ..FinalReport::failed(
                Failure::Timeout,
                format!(
                    "ran past its time limit of {}",
                    humantime::format_duration(limit)
                ),
            )
        },
        None => report_of(ended, killed),
    };
    report.stdout_bytes = tail.totals[0];
    report.stderr_bytes = tail.totals[1];
    report
}

/// First wait before looking at a running task's spool files again; it doubles while they
/// do not grow, up to [`POLL_MAX`]. A short task ends before the first look.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

/// The spool files of a native task (written by the task itself) and how much of each the
/// agent loop has heard of.
struct Tail {
    logs: [std::fs::File; 2],
    totals: [u64; 2],
}

impl Tail {
    /// Reports what the task appended since the last look; true when there was some.
    ///
    /// Read with `pread` on the runtime's thread: the files are local, each look is a
    /// `fstat` per stream when nothing changed, and the descriptor's offset (the task's
    /// write position, when the agent opened it) must not move.
    async fn drain(&mut self, id: ExecutionId, events: &mpsc::Sender<ExecEvent>) -> bool {
        use std::os::unix::fs::FileExt;
        let mut grew = false;
        for stream in Stream::BOTH {
            let i = stream.index();
            loop {
                let len = self.logs[i].metadata().map_or(0, |m| m.len());
                let offset = self.totals[i];
                if len <= offset {
                    break;
                }
                let mut buf = vec![0u8; (len - offset).min(CHUNK as u64) as usize];
                let n = match self.logs[i].read_at(&mut buf, offset) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(execution_id = %id, ?stream, "cannot read spool file: {e}");
                        break;
                    }
                };
                buf.truncate(n);
                self.totals[i] = offset + n as u64;
                grew = true;
                let _ = events
                    .send(ExecEvent::Output {
                        id,
                        stream,
                        offset,
                        data: Bytes::from(buf),
                    })
                    .await;
            }
        }
        grew
    }
}

/// A native command just spawned.
struct Started {
    pid: u32,
    /// Its spool files, stdout and stderr.
    logs: [std::fs::File; 2],
    /// `state.json`, open for the final report (none when it could not be written).
    state: Option<StateWriter>,
    exit: ExitWaiter,
}

/// Prepares the work dir, writes the preamble, has the supervisor spawn the command (its
/// output straight to the spool files) and records its pid in `state.json`, on the runtime's
/// thread.
///
/// Not in `spawn_blocking`: the dozen calls on local files around the spawn take less time
/// than a hop to a blocking thread and back, which cost a short task more than all of them
/// (measured, 13% more `true` tasks per second without it). The price: a work dir on a
/// filesystem that hangs stalls a runtime thread, not just this execution.
async fn start(
    launch: &Launch,
    ctx: &ExecContext,
    preamble: &Bytes,
) -> Result<Started, FinalReport> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let (id, task_id, dir) = (launch.id, launch.task_id, &ctx.dir);
    let Ready {
        root,
        stdout: stdout_log,
        stderr: mut stderr_log,
    } = ctx.spares.prepare(dir).map_err(|e| {
        let root = dir.root().display();
        FinalReport::failed(Failure::Run, format!("cannot prepare {root}: {e}"))
    })?;
    if !preamble.is_empty()
        && let Err(e) = stderr_log.write_all(preamble)
    {
        let path = dir.log(Stream::Stderr);
        return Err(FinalReport::failed(
            Failure::Run,
            format!("cannot write {}: {e}", path.display()),
        ));
    }
    let argv = launch
        .argv
        .as_ref()
        .map_err(|e| FinalReport::failed(Failure::Run, e.to_string()))?;
    let (pid, exit) = ctx
        .supervisor
        .spawn(
            id,
            argv.clone(),
            dir.root().to_owned(),
            environment(dir, ctx.cpu),
            [stdout_log.as_fd(), stderr_log.as_fd()],
        )
        .await
        .map_err(|e| FinalReport::failed(Failure::Run, e.to_string()))?;
    let running = StateFile {
        execution_id: id,
        task_id,
        phase: Phase::Running {
            pid,
            container: None,
            run_timeout_s: launch.run_timeout.map(|t| t.as_secs().max(1)),
            output: launch.data.output.clone(),
            stderr_preamble: preamble.len() as u64,
        },
    };
    let state = StateWriter::open_in(&root).and_then(|mut state| {
        state.write(&running)?;
        Ok(state)
    });
    let state = state
        .inspect_err(|e| tracing::warn!(execution_id = %id, "cannot write state.json: {e}"))
        .ok();
    Ok(Started {
        pid,
        logs: [stdout_log, stderr_log],
        state,
        exit,
    })
}

/// How long a command past its time limit has between SIGTERM and SIGKILL.
pub(crate) const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// A command ran past its time limit: SIGTERM to its group, SIGKILL after a grace.
async fn stop_after_timeout(
    pid: u32,
    exit: &mut ExitWaiter,
) -> Result<Exit, tokio::sync::oneshot::error::RecvError> {
    let _ = signal_group(pid, Signal::SIGTERM);
    let _ = signal_group(pid, Signal::SIGCONT);
    match tokio::time::timeout(TIMEOUT_GRACE, &mut *exit).await {
        Ok(ended) => ended,
        Err(_) => {
            let _ = signal_group(pid, Signal::SIGKILL);
            exit.await
        }
    }
}

/// The variables a native task gets besides the agent's own.
fn environment(dir: &ExecDir, cpu: u32) -> Vec<(String, String)> {
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    vec![
        ("INPUT".to_owned(), path(dir.input())),
        ("OUTPUT".to_owned(), path(dir.output())),
        ("TEMP".to_owned(), path(dir.tmp())),
        ("RESOURCE".to_owned(), path(dir.resource())),
        ("CPU".to_owned(), cpu.to_string()),
    ]
}

/// Creates the work dir (or moves a spare in place) and its spool files (emptied).
pub(crate) async fn prepare(
    dir: ExecDir,
    spares: Arc<Spares>,
) -> io::Result<(tokio::fs::File, tokio::fs::File)> {
    tokio::task::spawn_blocking(move || {
        let ready = spares.prepare(&dir)?;
        Ok((
            tokio::fs::File::from_std(ready.stdout),
            tokio::fs::File::from_std(ready.stderr),
        ))
    })
    .await
    .map_err(io::Error::other)?
}

/// Writes `state.json`: in place through `open` when the execution holds it (one small
/// write to an open file, done here like the rest of [`start`]), else from a blocking thread.
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

/// A spool file being appended to, and how many bytes its stream has in all.
#[derive(Debug)]
pub(crate) struct Spool {
    file: tokio::fs::File,
    pub total: u64,
    ok: bool,
}

impl Spool {
    pub fn new(file: tokio::fs::File, total: u64) -> Spool {
        Spool {
            file,
            total,
            ok: true,
        }
    }

    /// Appends `data` to the file, then tells the agent loop.
    pub async fn write(
        &mut self,
        id: ExecutionId,
        stream: Stream,
        data: Bytes,
        events: &mpsc::Sender<ExecEvent>,
    ) {
        if data.is_empty() {
            return;
        }
        // The file must hold the bytes before the loop hears of them: replays read it.
        if self.ok
            && let Err(e) = append(&mut self.file, &data).await
        {
            tracing::warn!(execution_id = %id, ?stream, "cannot write spool file: {e}");
            self.ok = false;
        }
        let offset = self.total;
        self.total += data.len() as u64;
        let _ = events
            .send(ExecEvent::Output {
                id,
                stream,
                offset,
                data,
            })
            .await;
    }
}

/// Tells the agent loop about the lines the agent put at the head of stderr (already in the
/// spool file): after `Started`, as the contract wants, and before the command's output.
pub(crate) async fn announce_preamble(
    id: ExecutionId,
    preamble: Bytes,
    events: &mpsc::Sender<ExecEvent>,
) {
    if preamble.is_empty() {
        return;
    }
    let _ = events
        .send(ExecEvent::Output {
            id,
            stream: Stream::Stderr,
            offset: 0,
            data: preamble,
        })
        .await;
}

pub(crate) async fn append(log: &mut tokio::fs::File, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    log.write_all(data).await?;
    log.flush().await
}

fn report_of(ended: Result<Exit, String>, killed: bool) -> FinalReport {
    let failure = if killed {
        Failure::Killed
    } else {
        Failure::Run
    };
    let exit = match ended {
        Ok(exit) => exit,
        Err(e) => return FinalReport::failed(failure, format!("cannot wait for the command: {e}")),
    };
    match (exit.code, exit.signal) {
        (Some(0), _) => FinalReport {
            failure: None,
            exit_code: Some(0),
            message: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            uploaded: Vec::new(),
        },
        (Some(code), _) => FinalReport {
            exit_code: Some(code),
            ..FinalReport::failed(failure, format!("exited with code {code}"))
        },
        (None, Some(signal)) => FinalReport::failed(failure, format!("killed by signal {signal}")),
        (None, None) => FinalReport::failed(failure, "ended without an exit status"),
    }
}

/// Sends a signal to a process group; a group that no longer exists is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> nix::Result<()> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Ok(());
    };
    if raw <= 1 {
        // 0 would signal our own group, 1 init's; neither is a task.
        return Ok(());
    }
    match killpg(Pid::from_raw(raw), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
