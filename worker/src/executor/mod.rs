//! Runs one execution from start to end, natively (`native.rs`) or in a container
//! (`container.rs`) when its task names an image: both implement the one runner interface,
//! [`TaskRunner`](context::TaskRunner), and this file drives either the same way: inputs
//! staged, command run, output uploaded, the final report written to `state.json`, then sent.
//!
//! The contract with the agent loop, the same for both kinds: events of one execution arrive
//! in order: `Started`, the `Output`s of each stream in stream order, then `Finished` after all
//! output. The agent loop never waits on an executor; it signals through a [`Handle`]: a
//! native process group directly ([`signal_group`](crate::process_group::signal_group)), a
//! container through a channel its executor reads (pause, unpause, kill), and it reads the
//! spool files for replays.
//!
//! The modules form a tree: this file uses the runners, the runners use `context.rs` (the
//! shared types, work dir preparation, `state.json` writes, time limit) and `spool.rs` (output
//! on its way to the agent loop), which use neither.

mod container;
mod context;
mod native;
mod spool;

use bytes::Bytes;

pub use self::container::ContainerError;
use self::container::InContainer;
pub use self::context::{ExecContext, ExecEvent, Handle, Runner, WorkDirError};
use self::context::{TaskRunner, write_state};
use self::native::Native;
pub use self::native::NativeError;
pub use self::spool::CHUNK;
use crate::launch::Launch;
use crate::staging::{self, StagedIn, StagingError};
use crate::state::{Failure, FinalReport, Phase, StateFile};

/// Runs the execution to its end. Never fails: every problem becomes the final report.
pub async fn run(mut launch: Launch, mut ctx: ExecContext) {
    match launch.container.take() {
        None => {
            let native = Native::new(ctx.adopt.take());
            drive(native, launch, ctx).await;
        }
        Some(spec) => {
            let runner = InContainer::new(spec, ctx.reattach.take(), ctx.signals.take());
            // Boxed, as are the staging steps: a native task's future stays small, and the
            // runtime copies it whole when it spawns and finishes it.
            Box::pin(drive(runner, launch, ctx)).await;
        }
    }
}

/// Stages, runs, uploads, records and reports one execution with `runner`.
async fn drive(mut runner: impl TaskRunner, launch: Launch, mut ctx: ExecContext) {
    let id = launch.id;
    let staged = if runner.resumes() {
        Ok(StagedIn::default())
    } else {
        Box::pin(stage_in(&launch, &mut ctx)).await
    };
    let mut report = match staged {
        Err(e) => FinalReport::failed(Failure::Download, e.to_string()),
        Ok(staged) => {
            let notes = Bytes::from(staged.notes.concat());
            let mut report = runner.run(&launch, &ctx, notes).await;
            report.inputs = staged.inputs;
            report
        }
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
    if let Err(e) = write_state(&ctx.dir, state, runner.state_file()).await {
        tracing::warn!(execution_id = %id, "cannot write state.json: {e}");
    }
    runner.recorded(id, &ctx).await;
    let success = report.failure.is_none();
    // The loop is gone only when the agent is shutting down; nothing to do then.
    let _ = ctx.events.send(ExecEvent::Finished { id, report }).await;
    runner.reported(&ctx, success).await;
}

/// Waits for the inputs and resources staged since the task was accepted (or stages them now).
async fn stage_in(launch: &Launch, ctx: &mut ExecContext) -> Result<StagedIn, StagingError> {
    let handle = match ctx.staged.take() {
        Some(handle) => handle,
        None if launch.data.needs_staging_in() => {
            let stager = ctx.stager.clone().map_err(StagingError::NoStager)?;
            staging::stage_in(stager, launch.id, ctx.dir.clone(), launch.data.clone())
        }
        None => return Ok(StagedIn::default()),
    };
    handle.await.map_err(StagingError::Stopped)?
}

/// Uploads the output folder, also after a failed run; an upload failure fails a run that
/// succeeded and is added to the message of one that did not.
async fn stage_out(launch: &Launch, ctx: &ExecContext, report: &mut FinalReport) {
    let uploaded = match &ctx.stager {
        Ok(stager) => staging::stage_out(stager.clone(), &ctx.dir, &launch.data.output).await,
        Err(e) => Err(StagingError::NoStager(e.clone())),
    };
    match uploaded {
        Ok(staged) => {
            report.uploaded = staged.files.into_iter().map(|f| (f.uri, f.size)).collect();
            if let Some(note) = staging::links_note(&staged.links) {
                tell_user(launch.id, ctx, report, note).await;
            }
        }
        Err(e) if report.failure.is_none() => {
            report.failure = Some(Failure::Upload);
            report.message = e.to_string();
        }
        Err(e) => report.message = format!("{}; {e}", report.message),
    }
}

/// Adds a line of the agent's to the end of the task's stderr (after the command's output)
/// and to its report's message.
async fn tell_user(
    id: crate::state::ExecutionId,
    ctx: &ExecContext,
    report: &mut FinalReport,
    note: String,
) {
    use crate::state::Stream;
    tracing::warn!(execution_id = %id, "{note}");
    let line = Bytes::from(format!("{note}\n"));
    let path = ctx.dir.log(Stream::Stderr);
    let appended = tokio::fs::OpenOptions::new().append(true).open(&path).await;
    match appended {
        Ok(mut file) => match spool::append(&mut file, &line).await {
            Ok(()) => {
                let offset = report.stderr_bytes;
                report.stderr_bytes += line.len() as u64;
                let _ = ctx
                    .events
                    .send(ExecEvent::Output {
                        id,
                        stream: Stream::Stderr,
                        offset,
                        data: line,
                    })
                    .await;
            }
            Err(e) => tracing::warn!(execution_id = %id, "cannot write {}: {e}", path.display()),
        },
        Err(e) => tracing::warn!(execution_id = %id, "cannot open {}: {e}", path.display()),
    }
    report.message = if report.message.is_empty() {
        note
    } else {
        format!("{}; {note}", report.message)
    };
}

#[cfg(test)]
mod tests;
