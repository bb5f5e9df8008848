//! `task create`: one task from the command line, or many from a file.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use scitq_proto::v1::{CreateTasksRequest, TaskSpec};
use tokio::io::AsyncReadExt;

use super::from_file::{self, FileFormat};
use crate::client::Client;
use crate::commands::{Context, Exit};
use crate::error::usage;
use crate::output::{self, Format};
use crate::spec::SpecArgs;

/// Tasks per `CreateTasks` call.
const CHUNK_TASKS: usize = 5000;
/// Encoded bytes per `CreateTasks` call, under gRPC's usual 4 MiB message limit.
const CHUNK_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Create one task per line of FILE (`-`: standard input). In FILE.json/FILE.jsonl each
    /// line is a JSON object (keys: name, batch, command, shell, container,
    /// container_options, inputs, output, resources, retry, priority) whose missing keys take
    /// the flags' values; otherwise each line is a command, `#` lines are comments
    #[arg(long, value_name = "FILE", conflicts_with = "command")]
    from_file: Option<PathBuf>,
    /// The command and its arguments, best after `--`
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn run(args: CreateArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let specs = match &args.from_file {
        Some(path) => read_specs(path, &args.spec).await?,
        None => vec![args.spec.with_argv(&args.command)?],
    };
    let client = ctx.connect().await?;
    create(&client, specs, Some(ctx.format)).await?;
    Ok(0)
}

async fn read_specs(path: &PathBuf, defaults: &SpecArgs) -> anyhow::Result<Vec<TaskSpec>> {
    let (text, source) = if path.as_os_str() == "-" {
        let mut text = String::new();
        tokio::io::stdin()
            .read_to_string(&mut text)
            .await
            .context("cannot read tasks from standard input")?;
        (text, "standard input".to_owned())
    } else {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (line, column, offset) = crate::error::utf8_error_position(e.as_bytes())
                .expect("from_utf8 failed, so there is an error");
            usage(format!(
                "cannot read {}: invalid UTF-8 at line {line}, byte {column} of the line \
                 (byte {offset} of the file)",
                path.display()
            ))
        })?;
        (text, path.display().to_string())
    };
    Ok(from_file::parse(
        &text,
        FileFormat::of(path),
        defaults,
        &source,
    )?)
}

/// Splits `specs` into consecutive ranges of at most [`CHUNK_TASKS`] tasks and about
/// `max_bytes` encoded bytes (a lone bigger task gets a chunk of its own).
fn chunks(specs: &[TaskSpec], max_tasks: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, spec) in specs.iter().enumerate() {
        // Field tag and length prefix of a repeated message: a few bytes more.
        let size = spec.encoded_len() + 8;
        let full = index - start == max_tasks || (index > start && bytes + size > max_bytes);
        if full {
            ranges.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < specs.len() {
        ranges.push(start..specs.len());
    }
    ranges
}

/// Sends the tasks chunk by chunk and, with a format, prints their ids. A failure stops at
/// the chunk that failed; the ids of the chunks created before it have been printed (table
/// form).
pub async fn create(
    client: &Client,
    specs: Vec<TaskSpec>,
    print: Option<Format>,
) -> anyhow::Result<Vec<i64>> {
    let ranges = chunks(&specs, CHUNK_TASKS, CHUNK_BYTES);
    let several = ranges.len() > 1;
    let bar = progress_bar(ranges.len(), specs.len());
    let mut service = client.tasks();
    let mut ids = Vec::with_capacity(specs.len());
    for range in ranges {
        let expected = range.len();
        // The server numbers tasks within one request; say which ones that request held.
        let held = match several {
            true => format!(
                " (tasks {} to {} of {})",
                range.start + 1,
                range.end,
                specs.len()
            ),
            false => String::new(),
        };
        let request = CreateTasksRequest {
            tasks: specs[range].to_vec(),
            resume: false,
        };
        let reply = service.create_tasks(request).await.map_err(|status| {
            bar.abandon();
            anyhow::Error::from(status).context(match ids.len() {
                0 => format!("cannot create tasks{held}"),
                n => format!("cannot create tasks{held}, {n} were created before"),
            })
        })?;
        let created = reply.into_inner().ids;
        anyhow::ensure!(
            created.len() == expected,
            "the server created {} tasks for {expected} sent",
            created.len()
        );
        if print == Some(Format::Table) {
            let text: String = created.iter().map(|id| format!("{id}\n")).collect();
            bar.suspend(|| output::print_text(&text))?;
        }
        bar.inc(expected as u64);
        ids.extend(created);
    }
    bar.finish_and_clear();
    if print == Some(Format::Json) {
        output::print_json(&ids)?;
    }
    Ok(ids)
}

/// A bar on stderr when there is more than one chunk to send; hidden otherwise.
fn progress_bar(chunks: usize, tasks: usize) -> ProgressBar {
    if chunks <= 1 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(tasks as u64);
    let style = ProgressStyle::with_template("creating tasks {bar:40} {pos}/{len} ({eta})")
        .expect("the template is valid");
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> TaskSpec {
        TaskSpec {
            command: command.to_owned(),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn chunks_cap_the_task_count() {
        let specs: Vec<_> = (0..12001).map(|i| spec(&format!("echo {i}"))).collect();
        assert_eq!(
            chunks(&specs, 5000, usize::MAX),
            [0..5000, 5000..10000, 10000..12001]
        );
        let single = chunks(&specs[..1], 5000, usize::MAX);
        assert_eq!((single.len(), single[0].clone()), (1, 0..1));
        assert!(chunks(&[], 5000, usize::MAX).is_empty());
    }

    #[test]
    fn chunks_cap_the_bytes() {
        let big = "x".repeat(1000);
        let specs: Vec<_> = (0..10).map(|_| spec(&big)).collect();
        let ranges = chunks(&specs, 5000, 3000);
        assert_eq!(ranges, [0..2, 2..4, 4..6, 6..8, 8..10]);
        let huge = vec![spec(&"y".repeat(5000)), spec("z")];
        assert_eq!(chunks(&huge, 5000, 3000), [0..1, 1..2]);
    }
}
