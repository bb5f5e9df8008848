//! `scitqctl worker ...`.

use anyhow::Context as _;
use clap::{ArgGroup, Subcommand};
use scitq_proto::v1::{
    IssueEnrollmentTokenRequest, ListWorkersRequest, UpdateWorkerRequest, WorkerRef,
};

use super::{Context, Exit};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List known workers
    List,
    /// Change a worker's settings; its agent gets them at once
    #[command(group(ArgGroup::new("settings").required(true).multiple(true)))]
    Set {
        /// Worker id
        id: i64,
        /// Tasks run at once (at least 1, at most 100000)
        #[arg(long, group = "settings", value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=scitq_proto::MAX_CONCURRENCY as i64))]
        concurrency: Option<u32>,
        /// Tasks prepared in advance beyond the running ones (at most 1000000), or "auto":
        /// the agent adapts it to how fast its tasks end (its default)
        #[arg(long, group = "settings", value_name = "N|auto")]
        prefetch: Option<scitq_proto::PrefetchSetting>,
        /// Only run tasks of this batch; "" for any batch
        #[arg(long, group = "settings", value_name = "B")]
        batch: Option<String>,
    },
    /// Give a worker no new task; what it holds runs on
    Pause {
        /// Worker id
        id: i64,
    },
    /// Undo `pause` or `drain`
    Resume {
        /// Worker id
        id: i64,
    },
    /// Give a worker no new task; its agent finishes what it holds (prefetched tasks
    /// included), delivers every result, then exits
    Drain {
        /// Worker id
        id: i64,
    },
    /// Forget a worker that is not connected and holds nothing; a recruited one's machine is
    /// drained and destroyed
    Delete {
        /// Worker id
        id: i64,
    },
    /// Print a single-use enrollment token for a machine whose agent will run as NAME
    /// (`scitq-agent --name NAME --enroll-token TOKEN`); the agent then needs no worker token
    Enroll {
        /// The worker name the token is bound to
        name: String,
        /// How long the token may wait for its agent (at most 7d)
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Recruit machines by hand on a provider configured in scitqd (never destroyed for
    /// idling: `worker delete` destroys one)
    Deploy(super::recruit::DeployArgs),
}

pub async fn run(command: WorkerCommand, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    match command {
        WorkerCommand::Pause { id } | WorkerCommand::Resume { id } => {
            let paused = matches!(command, WorkerCommand::Pause { .. });
            let worker = client
                .workers()
                .update_worker(UpdateWorkerRequest {
                    id,
                    paused: Some(paused),
                    ..Default::default()
                })
                .await
                .with_context(|| {
                    let verb = if paused { "pause" } else { "resume" };
                    format!("cannot {verb} worker {id}")
                })?
                .into_inner();
            output::print_one(&worker, ctx.format)?;
        }
        WorkerCommand::Drain { id } => {
            let worker = client
                .workers()
                .drain_worker(WorkerRef { id })
                .await
                .with_context(|| format!("cannot drain worker {id}"))?
                .into_inner();
            output::print_one(&worker, ctx.format)?;
        }
        WorkerCommand::Delete { id } => {
            let deleted = client
                .workers()
                .delete_worker(WorkerRef { id })
                .await
                .with_context(|| format!("cannot delete worker {id}"))?
                .into_inner();
            if deleted.destroying.is_empty() {
                eprintln!("worker {id} deleted");
            } else {
                eprintln!(
                    "worker {id}: its machine {} is being drained and destroyed",
                    deleted.destroying
                );
            }
        }
        WorkerCommand::Enroll { name, ttl } => {
            let issued = client
                .workers()
                .issue_enrollment_token(IssueEnrollmentTokenRequest {
                    name: name.clone(),
                    ttl_seconds: ttl.as_secs().max(1),
                })
                .await
                .with_context(|| format!("cannot issue an enrollment token for {name:?}"))?
                .into_inner();
            println!("{}", issued.token);
        }
        WorkerCommand::List => {
            let listed = client
                .workers()
                .list_workers(ListWorkersRequest {})
                .await?
                .into_inner();
            let rows: Vec<output::views::WorkerView> = listed
                .workers
                .iter()
                .map(output::views::WorkerView::from)
                .chain(listed.deploying.iter().map(output::views::WorkerView::from))
                .collect();
            output::print_list(&rows, ctx.format)?;
        }
        WorkerCommand::Deploy(args) => super::recruit::deploy(args, &client, ctx).await?,
        WorkerCommand::Set {
            id,
            concurrency,
            prefetch,
            batch,
        } => {
            let worker = client
                .workers()
                .update_worker(UpdateWorkerRequest {
                    id,
                    concurrency,
                    prefetch: match prefetch {
                        Some(scitq_proto::PrefetchSetting::Fixed(n)) => Some(n),
                        _ => None,
                    },
                    prefetch_auto: (prefetch == Some(scitq_proto::PrefetchSetting::Auto))
                        .then_some(true),
                    batch,
                    paused: None,
                })
                .await
                .with_context(|| format!("cannot update worker {id}"))?
                .into_inner();
            output::print_one(&worker, ctx.format)?;
        }
    }
    Ok(0)
}
