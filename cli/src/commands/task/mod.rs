//! `scitqctl task ...`.

mod create;
mod from_file;
mod steer;
mod stream;
mod wait;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use scitq_proto::v1::{
    GetTaskRequest, ListExecutionsRequest, ListTasksRequest, RelaunchTaskRequest, Task, TaskStatus,
};

use super::{Context, Exit};
use crate::client::Client;
use crate::output::views::{ExecutionView, TaskDetailView, TaskView, parse_task_status};
use crate::output::{self, Format, Listing};

pub use create::{CreateArgs, create};
pub use stream::{OutputArgs, follow, is_final};
pub use wait::WaitArgs;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task (`task create -- CMD...`) or many (`task create --from-file FILE`);
    /// prints the new ids
    Create(CreateArgs),
    /// List tasks, oldest first
    List(ListArgs),
    /// Show a task and its executions
    Show {
        /// Task id
        id: i64,
    },
    /// Print a task's output: stdout on stdout, stderr on stderr
    Output(OutputArgs),
    /// Wait until tasks end (the old `join`); exit 0 when all succeeded
    Wait(WaitArgs),
    /// Hold a pending task back, or freeze a running one (SIGSTOP)
    Pause {
        /// Task id
        id: i64,
    },
    /// Undo `pause`: a paused task is queued again, a frozen one runs on
    Resume {
        /// Task id
        id: i64,
    },
    /// Kill a running task (no automatic retry) or cancel one not started
    Kill {
        /// Task id
        id: i64,
    },
    /// Edit tasks not started yet, by id or by filter (`--dry-run` shows what would change);
    /// one an agent holds unstarted (prefetched) is recalled from it and queued again
    Edit(steer::EditArgs),
    /// Say in plain words why a task is where it is (why a pending one does not run)
    Explain {
        /// Task id
        id: i64,
    },
    /// List the executions (attempts) of a task, or of every task matching filters
    Executions(steer::ExecutionsArgs),
    /// Delete a task with its executions and output (an active one is canceled first)
    Delete {
        /// Task id
        id: i64,
    },
    /// Run a finished task again, optionally with a new command; prints its new status
    Relaunch {
        /// Task id
        id: i64,
        /// New command for this and later executions
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks of this batch
    #[arg(long)]
    batch: Option<String>,
    /// Only tasks in these statuses (repeatable or comma-separated)
    #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = parse_task_status)]
    status: Vec<TaskStatus>,
    /// Only tasks whose name matches this glob (`*`, `?`)
    #[arg(long, value_name = "GLOB")]
    name: Option<String>,
    /// At most this many tasks [default: all]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Only tasks with an id greater than this
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// Print only the ids, one per line (for shell pipelines; `--json`: an array of ids)
    #[arg(
        long = "ids",
        short = 'q',
        visible_alias = "quiet",
        conflicts_with = "watch"
    )]
    pub(crate) ids: bool,
    #[command(flatten)]
    watch: super::watch::WatchArgs,
}

pub async fn run(command: TaskCommand, ctx: &Context) -> anyhow::Result<Exit> {
    match command {
        TaskCommand::Create(args) => create::run(args, ctx).await,
        TaskCommand::List(args) => list(args, ctx).await,
        TaskCommand::Show { id } => show(id, ctx).await,
        TaskCommand::Output(args) => stream::run(args, ctx).await,
        TaskCommand::Wait(args) => wait::run(args, ctx).await,
        TaskCommand::Relaunch { id, command } => relaunch(id, command, ctx).await,
        TaskCommand::Pause { id } => steer::act(steer::Action::Pause, id, ctx).await,
        TaskCommand::Resume { id } => steer::act(steer::Action::Resume, id, ctx).await,
        TaskCommand::Kill { id } => steer::act(steer::Action::Kill, id, ctx).await,
        TaskCommand::Edit(args) => steer::edit(args, ctx).await,
        TaskCommand::Executions(args) => steer::executions(args, ctx).await,
        TaskCommand::Delete { id } => steer::delete(id, ctx).await,
        TaskCommand::Explain { id } => steer::explain(id, ctx).await,
    }
}

/// Tasks per `ListTasks` call when listing everything.
const PAGE: u32 = 1000;

/// Lists tasks matching `request`, following pages until the server has no more or `limit`
/// tasks were collected.
pub async fn list_all(
    client: &Client,
    mut request: ListTasksRequest,
    limit: Option<usize>,
    page: u32,
) -> anyhow::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    let mut service = client.tasks();
    loop {
        let wanted = limit.map_or(page as usize, |limit| {
            (limit - tasks.len()).min(page as usize)
        });
        request.limit = u32::try_from(wanted).unwrap_or(page);
        let reply = service.list_tasks(request.clone()).await?.into_inner();
        let exhausted = reply.tasks.is_empty() || reply.next_after_id == 0;
        tasks.extend(reply.tasks);
        if exhausted || limit.is_some_and(|limit| tasks.len() >= limit) {
            return Ok(tasks);
        }
        request.after_id = reply.next_after_id;
    }
}

async fn list(args: ListArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let request = ListTasksRequest {
        batch: args.batch,
        status: args.status.iter().map(|s| *s as i32).collect(),
        name: args.name,
        ids: Vec::new(),
        after_id: args.after.unwrap_or(0),
        limit: 0,
    };
    let client = ctx.connect().await?;
    let limit = args.limit.map(|n| n as usize);
    super::watch::run(args.watch, || async {
        let tasks = list_all(&client, request.clone(), limit, PAGE).await?;
        if args.ids {
            return print_ids(&tasks, ctx.format);
        }
        output::print_list(&tasks, ctx.format)
    })
    .await
}

/// The ids of `tasks`, one per line, or a JSON array.
fn print_ids(tasks: &[Task], format: Format) -> anyhow::Result<()> {
    let ids: Vec<i64> = tasks.iter().map(|task| task.id).collect();
    match format {
        Format::Json => output::print_json(&ids),
        Format::Table => {
            output::print_text(&ids.iter().map(|id| format!("{id}\n")).collect::<String>())
        }
    }
}

async fn show(id: i64, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let task = client
        .tasks()
        .get_task(GetTaskRequest { id })
        .await?
        .into_inner();
    let executions = client
        .executions()
        .list_executions(ListExecutionsRequest {
            task_id: id,
            ..Default::default()
        })
        .await?
        .into_inner()
        .executions;
    match ctx.format {
        Format::Json => output::print_json(&TaskDetailView {
            task: TaskView::from(&task),
            executions: executions.iter().map(ExecutionView::from).collect(),
        })?,
        Format::Table => {
            output::print_table(&[], output::task_detail_lines(&task).into_iter())?;
            if executions.is_empty() {
                eprintln!("no execution yet");
            } else {
                output::print_text("\n")?;
                output::print_list(&executions, Format::Table)?;
            }
        }
    }
    Ok(0)
}

async fn relaunch(id: i64, command: Option<String>, ctx: &Context) -> anyhow::Result<Exit> {
    if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(crate::error::usage("empty command given to --command"));
    }
    let client = ctx.connect().await?;
    let task = client
        .tasks()
        .relaunch_task(RelaunchTaskRequest { id, command })
        .await
        .with_context(|| format!("cannot relaunch task {id}"))?
        .into_inner();
    match ctx.format {
        Format::Json => output::print_json(&task.view())?,
        Format::Table => output::print_text(&format!(
            "{}\n",
            output::views::task_status_name(task.status)
        ))?,
    }
    Ok(0)
}
