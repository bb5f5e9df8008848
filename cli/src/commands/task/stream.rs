//! `task output`: a task's stdout and stderr, as raw bytes on scitqctl's own, stored or
//! streamed as it runs.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use scitq_proto::v1::{
    FollowOutputRequest, GetOutputRequest, GetTaskRequest, OutputChunk, OutputStream, Task,
    TaskStatus,
};

use crate::client::Client;
use crate::commands::{Context, Exit};

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Task id
    id: i64,
    /// Keep printing as the task runs, until it ends (waits if it has not started)
    #[arg(long, short = 'f')]
    follow: bool,
    /// This execution of the task instead of its latest
    #[arg(long, value_name = "ID", conflicts_with = "follow")]
    execution: Option<i64>,
}

pub async fn run(args: OutputArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    if args.follow {
        follow(&client, args.id).await?;
        return Ok(0);
    }
    let reply = client
        .executions()
        .get_output(GetOutputRequest {
            task_id: args.id,
            execution_id: args.execution,
        })
        .await?
        .into_inner();
    if reply.execution_id == 0 {
        eprintln!("task {} has not run yet", args.id);
    }
    for chunk in &reply.chunks {
        write_chunk(chunk.stream, &chunk.data, false)?;
    }
    flush_both()?;
    Ok(0)
}

/// Prints a task's output as it comes, until the task ends; returns it as it ended.
///
/// The server ends the stream when the task ends, but also when it shuts down; a stream
/// that ends while the task has not is opened again, and what was already printed is
/// skipped by offset.
pub async fn follow(client: &Client, task_id: i64) -> anyhow::Result<Task> {
    let mut printed = Printed::default();
    loop {
        let mut stream = client
            .executions()
            .follow_output(FollowOutputRequest { task_id })
            .await?
            .into_inner();
        while let Some(chunk) = stream.message().await? {
            if let Some(data) = printed.unseen(&chunk) {
                write_chunk(chunk.stream, data, true)?;
            }
        }
        let task = client
            .tasks()
            .get_task(GetTaskRequest { id: task_id })
            .await?
            .into_inner();
        if is_final(&task) {
            return Ok(task);
        }
        tokio::time::sleep(REFOLLOW).await;
    }
}

/// Pause before following again a stream that ended early.
const REFOLLOW: Duration = Duration::from_millis(500);

/// True when the task will not run again by itself.
pub fn is_final(task: &Task) -> bool {
    matches!(
        TaskStatus::try_from(task.status),
        Ok(TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Canceled)
    )
}

/// How far each stream of each execution has been printed.
#[derive(Debug, Default)]
struct Printed {
    ends: HashMap<(i64, i32), u64>,
}

impl Printed {
    /// The part of `chunk` not printed yet, if any.
    fn unseen<'a>(&mut self, chunk: &'a OutputChunk) -> Option<&'a [u8]> {
        let end = self
            .ends
            .entry((chunk.execution_id, chunk.stream))
            .or_default();
        let chunk_end = chunk.offset + chunk.data.len() as u64;
        if chunk_end <= *end {
            return None;
        }
        let skip = end.saturating_sub(chunk.offset) as usize;
        *end = chunk_end;
        Some(&chunk.data[skip..])
    }
}

/// Writes output bytes to stdout or stderr, as their stream says.
fn write_chunk(stream: i32, data: &[u8], flush: bool) -> anyhow::Result<()> {
    let result = match OutputStream::try_from(stream) {
        Ok(OutputStream::Stdout) => write_to(&mut std::io::stdout().lock(), data, flush),
        _ => write_to(&mut std::io::stderr().lock(), data, flush),
    };
    result.context("cannot write the task's output")
}

fn write_to(out: &mut impl Write, data: &[u8], flush: bool) -> std::io::Result<()> {
    out.write_all(data)?;
    if flush {
        out.flush()?;
    }
    Ok(())
}

fn flush_both() -> anyhow::Result<()> {
    std::io::stdout()
        .flush()
        .and_then(|()| std::io::stderr().flush())
        .context("cannot write the task's output")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(execution_id: i64, stream: i32, offset: u64, data: &str) -> OutputChunk {
        OutputChunk {
            execution_id,
            stream,
            offset,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn output_seen_before_a_reconnection_is_skipped() {
        let mut printed = Printed::default();
        assert_eq!(
            printed.unseen(&chunk(1, 0, 0, "hello ")),
            Some(&b"hello "[..])
        );
        assert_eq!(printed.unseen(&chunk(1, 1, 0, "oops")), Some(&b"oops"[..]));
        // The stream is followed again: the server sends everything from the start.
        assert_eq!(printed.unseen(&chunk(1, 0, 0, "hello ")), None);
        assert_eq!(
            printed.unseen(&chunk(1, 0, 3, "lo world")),
            Some(&b"world"[..])
        );
        // A new execution has its own offsets.
        assert_eq!(
            printed.unseen(&chunk(2, 0, 0, "again")),
            Some(&b"again"[..])
        );
    }

    #[test]
    fn only_ended_tasks_are_final() {
        let task = |status: TaskStatus| Task {
            status: status as i32,
            ..Task::default()
        };
        assert!(is_final(&task(TaskStatus::Canceled)));
        assert!(is_final(&task(TaskStatus::Failed)));
        assert!(!is_final(&task(TaskStatus::Uploading)));
        assert!(!is_final(&task(TaskStatus::Pending)));
    }
}
