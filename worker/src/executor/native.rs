//! A task run natively: its work dir prepared, the command spawned by the supervisor in its
//! own process group with its stdout and stderr going straight to the spool files, which are
//! tailed here and streamed to the agent loop; or a task a previous agent started, adopted
//! and followed to its end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::context::{
    ExecContext, ExecEvent, Runner, TIMEOUT_GRACE, TaskRunner, WorkDirError, timed_out,
};
use super::spool::{CHUNK, announce_preamble};
use crate::launch::{CommandError, Launch};
use crate::process_group::signal_group;
use crate::scan::Adopt;
use crate::spares::Ready;
use crate::state::{
    ExecDir, ExecutionId, Failure, FinalReport, Phase, StateFile, StateWriter, Stream,
};
use crate::supervisor::{Exit, ExitWaiter, SupervisorError};

/// Why a native run failed before its command could end by itself (the message of its `run`
/// failure).
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Spawn(SupervisorError),
    #[error("cannot read the spool files: {0}")]
    Spool(#[source] std::io::Error),
    #[error("cannot wait for the command: {0}")]
    Wait(#[source] SupervisorError),
}

/// Runs a task natively, or follows one a previous agent left with the supervisor.
#[derive(Debug)]
pub(crate) struct Native {
    /// The task to follow instead of starting one.
    adopt: Option<Adopt>,
    /// `state.json`, open since the start, for the final report.
    state: Option<StateWriter>,
}

impl Native {
    pub(crate) fn new(adopt: Option<Adopt>) -> Native {
        Native { adopt, state: None }
    }
}

impl TaskRunner for Native {
    fn resumes(&self) -> bool {
        self.adopt.is_some()
    }

    async fn run(&mut self, launch: &Launch, ctx: &ExecContext, preamble: Bytes) -> FinalReport {
        match self.adopt.take() {
            Some(adopt) => adopted(launch.id, adopt, ctx).await,
            None => {
                let (report, state) = execute(launch, ctx, preamble).await;
                self.state = state;
                report
            }
        }
    }

    fn state_file(&mut self) -> Option<StateWriter> {
        self.state.take()
    }

    /// The supervisor may forget the task's end now that `state.json` holds it.
    async fn recorded(&mut self, id: ExecutionId, ctx: &ExecContext) {
        ctx.supervisor.done(id);
    }

    async fn reported(self, _ctx: &ExecContext, _success: bool) {}
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
        Err(e) => return (FinalReport::failed(Failure::Run, e.to_string()), None),
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

/// Follows a native task a previous agent process started (see `scan::Adopt`) to its end.
async fn adopted(id: ExecutionId, adopt: Adopt, ctx: &ExecContext) -> FinalReport {
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
            return FinalReport::failed(Failure::Run, NativeError::Spool(e).to_string());
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
    let (ended, stopped_at) = loop {
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
    let ended = ended.map_err(|_| NativeError::Wait(SupervisorError::Lost));
    let mut report = match stopped_at {
        Some(limit) => timed_out(limit, ended.as_ref().ok().and_then(|e| e.code)),
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
) -> Result<Started, NativeError> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let (id, task_id, dir) = (launch.id, launch.task_id, &ctx.dir);
    let Ready {
        root,
        stdout: stdout_log,
        stderr: mut stderr_log,
    } = ctx
        .spares
        .prepare(dir)
        .map_err(|source| WorkDirError::Prepare {
            dir: dir.root().to_owned(),
            source,
        })?;
    if !preamble.is_empty()
        && let Err(source) = stderr_log.write_all(preamble)
    {
        let path = dir.log(Stream::Stderr);
        return Err(WorkDirError::Write { path, source }.into());
    }
    let argv = launch.argv.as_ref().map_err(Clone::clone)?;
    // Recorded before the supervisor is asked (pid 0: not known yet), as a container is
    // before its start: the supervisor may start the task the moment it reads the request,
    // and an agent that dies then must find the execution here and adopt it from the
    // supervisor. Unrecorded, it would run on unknown to the next agent while the server,
    // not told of it in `Hello`, counted it lost and ran it again elsewhere.
    let mut running = StateFile {
        execution_id: id,
        task_id,
        phase: Phase::Running {
            pid: 0,
            container: None,
            run_timeout_s: launch.run_timeout.map(|t| t.as_secs().max(1)),
            output: launch.data.output.clone(),
            stderr_preamble: preamble.len() as u64,
        },
    };
    let mut state = StateWriter::open_in(&root)
        .and_then(|mut state| {
            state.write(&running)?;
            Ok(state)
        })
        .inspect_err(|e| tracing::warn!(execution_id = %id, "cannot write state.json: {e}"))
        .ok();
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
        .map_err(NativeError::Spawn)?;
    // With its pid, which a next agent needs should the supervisor be gone too.
    if let Phase::Running { pid: recorded, .. } = &mut running.phase {
        *recorded = pid;
    }
    if let Some(writer) = &mut state
        && let Err(e) = writer.write(&running)
    {
        tracing::warn!(execution_id = %id, "cannot write state.json: {e}");
        state = None;
    }
    Ok(Started {
        pid,
        logs: [stdout_log, stderr_log],
        state,
        exit,
    })
}

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

fn report_of(ended: Result<Exit, NativeError>, killed: bool) -> FinalReport {
    let failure = if killed {
        Failure::Killed
    } else {
        Failure::Run
    };
    let exit = match ended {
        Ok(exit) => exit,
        Err(e) => return FinalReport::failed(failure, e.to_string()),
    };
    match (exit.code, exit.signal) {
        (Some(0), _) => FinalReport {
            failure: None,
            exit_code: Some(0),
            message: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            uploaded: Vec::new(),
            inputs: Vec::new(),
        },
        (Some(code), _) => FinalReport {
            exit_code: Some(code),
            ..FinalReport::failed(failure, format!("exited with code {code}"))
        },
        (None, Some(signal)) => FinalReport::failed(failure, format!("killed by signal {signal}")),
        (None, None) => FinalReport::failed(failure, "ended without an exit status"),
    }
}
