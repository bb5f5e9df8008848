//! `task wait` (the old `join`): poll until every task is succeeded, failed or canceled,
//! relaunching failed ones when asked to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressStyle};
use scitq_proto::v1::{ListTasksRequest, RelaunchTaskRequest, TaskStatus};

use super::list_all;
use crate::client::Client;
use crate::commands::{Context, Exit};
use crate::output::views::task_status_name;
use crate::output::{self, Format};

const POLL: Duration = Duration::from_millis(500);
/// Tasks per `ListTasks` call while polling (the server's maximum).
const PAGE: u32 = 10_000;
const FINAL: [&str; 3] = ["succeeded", "failed", "canceled"];

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("tasks").required(true).args(["ids", "batch"])))]
pub struct WaitArgs {
    /// Ids of the tasks to wait for
    #[arg(value_name = "ID")]
    ids: Vec<i64>,
    /// Wait for every task of this batch instead
    #[arg(long, conflicts_with = "ids")]
    batch: Option<String>,
    /// Relaunch each failed task up to N times
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry: u32,
}

/// What the tasks waited for are doing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Snapshot {
    /// Tasks per status name.
    counts: BTreeMap<String, u64>,
    /// Failed tasks, listed only when they may be relaunched.
    failed: Vec<i64>,
}

impl Snapshot {
    fn count(&self, names: &[&str]) -> u64 {
        names.iter().filter_map(|n| self.counts.get(*n)).sum()
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn done(&self) -> u64 {
        self.count(&FINAL)
    }

    fn progress_message(&self) -> String {
        let running = self.count(&["running", "uploading"]);
        let failed = self.count(&["failed"]);
        let queued = self.total() - self.done() - running;
        format!("{queued} queued, {running} running, {failed} failed")
    }

    fn summary(&self, relaunches: u32) -> String {
        let mut text = format!(
            "{} tasks: {} succeeded, {} failed, {} canceled",
            self.total(),
            self.count(&["succeeded"]),
            self.count(&["failed"]),
            self.count(&["canceled"])
        );
        if relaunches > 0 {
            text.push_str(&format!(" ({relaunches} relaunches)"));
        }
        text
    }
}

/// What to wait for.
enum Scope {
    Ids(Vec<i64>),
    Batch(String),
}

pub async fn run(args: WaitArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let scope = match args.batch {
        Some(batch) => Scope::Batch(batch),
        None => Scope::Ids(
            args.ids
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
    };
    let client = ctx.connect().await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} done, {msg}")
            .expect("the template is valid"),
    );
    let mut relaunched: HashMap<i64, u32> = HashMap::new();
    let snapshot = loop {
        let snapshot = poll(&client, &scope, args.retry > 0).await?;
        bar.set_length(snapshot.total());
        bar.set_position(snapshot.done());
        bar.set_message(snapshot.progress_message());
        let mut relaunching = false;
        for &id in &snapshot.failed {
            let attempts = relaunched.entry(id).or_default();
            if *attempts >= args.retry {
                continue;
            }
            *attempts += 1;
            // suspend, not println: println says nothing when stderr is not a terminal.
            bar.suspend(|| eprintln!("relaunching task {id} ({attempts}/{})", args.retry));
            client
                .tasks()
                .relaunch_task(RelaunchTaskRequest { id, command: None })
                .await
                .with_context(|| format!("cannot relaunch task {id}"))?;
            relaunching = true;
        }
        if !relaunching && snapshot.done() == snapshot.total() {
            break snapshot;
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    eprintln!("{}", snapshot.summary(relaunched.values().sum()));
    if ctx.format == Format::Json {
        let tasks = list_all(&client, scope_request(&scope), None, PAGE).await?;
        output::print_list(&tasks, Format::Json)?;
    }
    let all_succeeded = snapshot.count(&["succeeded"]) == snapshot.total();
    Ok(if all_succeeded { 0 } else { 1 })
}

fn scope_request(scope: &Scope) -> ListTasksRequest {
    match scope {
        Scope::Ids(ids) => ListTasksRequest {
            ids: ids.clone(),
            ..ListTasksRequest::default()
        },
        Scope::Batch(batch) => ListTasksRequest {
            batch: Some(batch.clone()),
            ..ListTasksRequest::default()
        },
    }
}

async fn poll(client: &Client, scope: &Scope, want_failed: bool) -> anyhow::Result<Snapshot> {
    match scope {
        Scope::Ids(ids) => poll_ids(client, ids, want_failed).await,
        Scope::Batch(batch) => poll_batch(client, batch, want_failed).await,
    }
}

/// Lists the tasks themselves; ids the server does not return do not exist.
async fn poll_ids(client: &Client, ids: &[i64], want_failed: bool) -> anyhow::Result<Snapshot> {
    let request = ListTasksRequest {
        ids: ids.to_vec(),
        ..ListTasksRequest::default()
    };
    let tasks = list_all(client, request, None, PAGE).await?;
    let seen: BTreeSet<i64> = tasks.iter().map(|t| t.id).collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !seen.contains(id))
        .map(i64::to_string)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!("unknown task {}", missing.join(", "));
    }
    let mut snapshot = Snapshot::default();
    for task in &tasks {
        *snapshot
            .counts
            .entry(task_status_name(task.status))
            .or_default() += 1;
        if want_failed && task.status == TaskStatus::Failed as i32 {
            snapshot.failed.push(task.id);
        }
    }
    Ok(snapshot)
}

/// Reads the batch's counts (a pass over every task in scitqd's database: 0.75 s of its CPU
/// with a million tasks on a small machine); lists failed tasks only when they may be
/// relaunched.
async fn poll_batch(client: &Client, batch: &str, want_failed: bool) -> anyhow::Result<Snapshot> {
    let batches = crate::commands::batch::list(client).await?;
    let Some(found) = batches.into_iter().find(|b| b.name == batch) else {
        anyhow::bail!("unknown batch {batch:?}");
    };
    let mut snapshot = Snapshot {
        counts: found.counts.into_iter().collect(),
        failed: Vec::new(),
    };
    if want_failed && snapshot.count(&["failed"]) > 0 {
        let request = ListTasksRequest {
            batch: Some(batch.to_owned()),
            status: vec![TaskStatus::Failed as i32],
            ..ListTasksRequest::default()
        };
        let failed = list_all(client, request, None, PAGE).await?;
        snapshot.failed = failed.iter().map(|t| t.id).collect();
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(counts: &[(&str, u64)]) -> Snapshot {
        Snapshot {
            counts: counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            failed: Vec::new(),
        }
    }

    #[test]
    fn only_final_statuses_count_as_done() {
        let s = snapshot(&[
            ("pending", 2),
            ("running", 1),
            ("uploading", 1),
            ("succeeded", 3),
            ("failed", 1),
            ("canceled", 1),
        ]);
        assert_eq!((s.done(), s.total()), (5, 9));
        assert_eq!(s.progress_message(), "2 queued, 2 running, 1 failed");
        assert_eq!(
            s.summary(2),
            "9 tasks: 3 succeeded, 1 failed, 1 canceled (2 relaunches)"
        );
        assert_eq!(snapshot(&[]).done(), snapshot(&[]).total());
    }
}
