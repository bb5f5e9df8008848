//! `scitqctl task pause|resume|kill|edit|executions`: steering tasks while a batch runs.

use anyhow::Context as _;
use clap::Args;
use scitq_proto::v1::{
    EditTasksRequest, ExecutionState, ListExecutionsRequest, Shell, StringList, Task, TaskChanges,
    TaskRef, TaskSelector, TaskStatus,
};

use super::super::{Context, Exit};
use crate::output::views::parse_task_status;
use crate::output::{self, Format, Listing};

/// What `pause`, `resume` and `kill` do.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Pause,
    Resume,
    Kill,
}

pub async fn act(action: Action, id: i64, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let mut service = client.tasks();
    let request = TaskRef { id };
    let (verb, reply) = match action {
        Action::Pause => ("pause", service.pause_task(request).await),
        Action::Resume => ("resume", service.resume_task(request).await),
        Action::Kill => ("kill", service.kill_task(request).await),
    };
    let task = reply
        .with_context(|| format!("cannot {verb} task {id}"))?
        .into_inner();
    print_status(&task, ctx)?;
    Ok(0)
}

fn print_status(task: &Task, ctx: &Context) -> anyhow::Result<()> {
    match ctx.format {
        Format::Json => output::print_json(&task.view()),
        Format::Table => {
            let status = output::views::task_status_name(task.status);
            let line = if task.status_reason.is_empty() {
                format!("{status}\n")
            } else {
                format!("{status} ({})\n", task.status_reason)
            };
            output::print_text(&line)
        }
    }
}

pub async fn explain(id: i64, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let reply = client
        .tasks()
        .explain_task(TaskRef { id })
        .await
        .with_context(|| format!("cannot explain task {id}"))?
        .into_inner();
    let status = output::views::task_status_name(reply.status);
    match ctx.format {
        Format::Json => output::print_json(&serde_json::json!({
            "id": id,
            "status": status,
            "reasons": reply.reasons,
        }))?,
        Format::Table => {
            let mut text = format!("task {id} is {status}\n");
            for reason in &reply.reasons {
                text.push_str(&format!("- {reason}\n"));
            }
            output::print_text(&text)?;
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ExecutionsArgs {
    /// Task id (none: the executions of every task matching the filters)
    id: Option<i64>,
    /// Only executions of tasks of this batch
    #[arg(long)]
    batch: Option<String>,
    /// Only executions in these states (assigned, accepted, running, uploading, succeeded,
    /// failed, canceled; repeatable or comma-separated)
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_execution_state)]
    state: Vec<ExecutionState>,
    /// Only executions run by this worker (id)
    #[arg(long, value_name = "ID")]
    worker: Option<i64>,
    /// At most this many executions [default: all]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
}

fn parse_execution_state(text: &str) -> Result<ExecutionState, String> {
    let name = format!("EXECUTION_STATE_{}", text.trim().to_ascii_uppercase());
    ExecutionState::from_str_name(&name)
        .filter(|s| *s != ExecutionState::Unspecified)
        .ok_or_else(|| {
            format!(
                "invalid state {text:?}: expected assigned, accepted, running, uploading, \
                 succeeded, failed or canceled"
            )
        })
}

/// Executions per call when listing across tasks.
const EXECUTION_PAGE: u32 = 1000;

pub async fn executions(args: ExecutionsArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let mut request = ListExecutionsRequest {
        task_id: args.id.unwrap_or(0),
        batch: args.batch,
        state: args.state.iter().map(|s| *s as i32).collect(),
        worker_id: args.worker,
        after_id: 0,
        limit: 0,
    };
    let wanted = args.limit.map(|n| n as usize);
    let mut executions = Vec::new();
    loop {
        let left = wanted.map_or(EXECUTION_PAGE as usize, |w| w - executions.len());
        request.limit = left.min(EXECUTION_PAGE as usize) as u32;
        let reply = client
            .executions()
            .list_executions(request.clone())
            .await
            .context("cannot list executions")?
            .into_inner();
        let done = reply.next_after_id == 0;
        executions.extend(reply.executions);
        if done || wanted.is_some_and(|w| executions.len() >= w) {
            break;
        }
        request.after_id = reply.next_after_id;
    }
    if executions.is_empty() && ctx.format == Format::Table {
        match args.id {
            Some(id) => eprintln!("task {id} has not run yet"),
            None => eprintln!("no execution matches"),
        }
    }
    output::print_list(&executions, ctx.format)?;
    Ok(0)
}

pub async fn delete(id: i64, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    client
        .tasks()
        .delete_task(TaskRef { id })
        .await
        .with_context(|| format!("cannot delete task {id}"))?;
    eprintln!("task {id} deleted");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// Tasks to edit, by id
    #[arg(value_name = "ID", conflicts_with_all = ["batch", "status", "name_glob", "all"])]
    ids: Vec<i64>,
    /// Edit the tasks of this batch that have not started
    #[arg(long)]
    batch: Option<String>,
    /// Only tasks in these statuses (waiting, pending, paused; assigned and accepted ones,
    /// prefetched by an agent but not started, are recalled from it)
    #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = parse_task_status)]
    status: Vec<TaskStatus>,
    /// Only tasks whose name matches this glob (`*`, `?`)
    #[arg(long = "name", value_name = "GLOB")]
    name_glob: Option<String>,
    /// Edit every task that has not started (an empty filter is refused without it)
    #[arg(long)]
    all: bool,
    /// Print what would change, change nothing
    #[arg(long)]
    dry_run: bool,

    /// New command
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
    /// Run the command through a shell (sh or bash), or `none`
    #[arg(long, value_name = "SHELL", value_parser = ["none", "sh", "bash"])]
    shell: Option<String>,
    /// New docker image (empty: run natively)
    #[arg(long, value_name = "IMAGE")]
    container: Option<String>,
    /// New container options (replace the old ones; repeatable)
    #[arg(
        long = "container-option",
        value_name = "OPT",
        allow_hyphen_values = true
    )]
    container_options: Vec<String>,
    /// New input URIs (replace the old ones; repeatable)
    #[arg(long = "input", value_name = "URI")]
    inputs: Vec<String>,
    /// New output URI
    #[arg(long, value_name = "URI")]
    output: Option<String>,
    /// New resource URIs (replace the old ones; repeatable)
    #[arg(long = "resource", value_name = "URI")]
    resources: Vec<String>,
    /// New retry budget (resets the retries left)
    #[arg(long, value_name = "N")]
    retry: Option<u32>,
    /// New priority (higher runs first)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// New task name
    #[arg(long = "new-name", value_name = "NAME")]
    new_name: Option<String>,
    /// Move the tasks to this batch (created if new)
    #[arg(long = "new-batch", value_name = "BATCH")]
    new_batch: Option<String>,
    /// New run time limit (e.g. 2h); `0s` removes it
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout_or_zero)]
    timeout: Option<u32>,
}

fn parse_timeout_or_zero(text: &str) -> Result<u32, String> {
    if matches!(text, "0" | "0s" | "none") {
        return Ok(0);
    }
    crate::spec::parse_timeout(text)
}

fn list(values: Vec<String>) -> Option<StringList> {
    (!values.is_empty()).then_some(StringList { values })
}

impl EditArgs {
    fn request(self) -> anyhow::Result<EditTasksRequest> {
        if self.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(crate::error::usage("empty command given to --command"));
        }
        let filtered = self.batch.is_some() || !self.status.is_empty() || self.name_glob.is_some();
        if self.ids.is_empty() && !filtered && !self.all {
            return Err(crate::error::usage(
                "no task selected: give task ids, a filter (--batch, --status, --name), or --all",
            ));
        }
        let shell = self.shell.as_deref().map(|s| match s {
            "sh" => Shell::Sh as i32,
            "bash" => Shell::Bash as i32,
            _ => Shell::None as i32,
        });
        let changes = TaskChanges {
            command: self.command,
            shell,
            container: self.container,
            container_options: list(self.container_options),
            inputs: list(self.inputs),
            output: self.output,
            resources: list(self.resources),
            retry: self.retry,
            priority: self.priority,
            name: self.new_name,
            run_timeout_s: self.timeout,
            batch: self.new_batch,
        };
        if changes == TaskChanges::default() {
            return Err(crate::error::usage(
                "no change given: use --command, --container, --retry, --priority, ...",
            ));
        }
        Ok(EditTasksRequest {
            selector: Some(TaskSelector {
                ids: self.ids,
                batch: self.batch,
                status: self.status.iter().map(|s| *s as i32).collect(),
                name: self.name_glob,
                all: self.all,
            }),
            changes: Some(changes),
            dry_run: self.dry_run,
        })
    }
}

pub async fn edit(args: EditArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let request = args.request()?;
    let dry_run = request.dry_run;
    let client = ctx.connect().await?;
    let reply = client
        .tasks()
        .edit_tasks(request)
        .await
        .context("cannot edit tasks")?
        .into_inner();
    output::print_list(&reply.tasks, ctx.format)?;
    let n = reply.tasks.len();
    if dry_run {
        eprintln!("dry run: {n} task(s) would be changed; nothing was changed");
    } else {
        eprintln!("{n} task(s) changed");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        edit: EditArgs,
    }

    fn request(args: &[&str]) -> anyhow::Result<EditTasksRequest> {
        let mut argv = vec!["edit"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.edit.request()
    }

    #[test]
    fn an_edit_needs_a_selection_and_a_change() {
        assert!(request(&["--command", "true"]).is_err());
        assert!(request(&["--batch", "b"]).is_err());
        assert!(request(&["--batch", "b", "--command", " "]).is_err());
        let ok = request(&[
            "--batch",
            "b",
            "--status",
            "pending",
            "--priority",
            "-2",
            "--dry-run",
        ])
        .unwrap();
        assert!(ok.dry_run);
        assert_eq!(ok.changes.unwrap().priority, Some(-2));
        assert!(request(&["3", "--batch", "b", "--retry", "1"]).is_err());
        let by_id = request(&["3", "4", "--shell", "bash", "--command", "echo $X"]).unwrap();
        assert_eq!(by_id.selector.unwrap().ids, vec![3, 4]);
    }
}
