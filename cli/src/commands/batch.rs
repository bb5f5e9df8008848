//! `scitqctl batch ...`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use scitq_proto::v1::{
    Batch, DeleteBatchRequest, GoBatchRequest, ListBatchesRequest, Signal, StopBatchRequest,
    SuspendBatchRequest,
};

use super::{Context, Exit};
use crate::client::Client;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// List batches with their task counts
    List(super::watch::WatchArgs),
    /// Stop a batch: none of its tasks starts any more
    Stop {
        /// Batch name
        name: String,
        #[command(flatten)]
        signal: StopSignal,
    },
    /// Suspend a batch: none of its tasks starts, running ones are frozen (SIGSTOP)
    Suspend {
        /// Batch name
        name: String,
    },
    /// Let a stopped or suspended batch run again (frozen tasks go on)
    Go {
        /// Batch name
        name: String,
    },
    /// Delete a batch and all its tasks, killing those running
    Delete {
        /// Batch name
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// What `stop` also does to the running tasks (of a batch, of a workflow's steps).
#[derive(Debug, Args)]
pub struct StopSignal {
    /// Also send SIGTERM to its running tasks
    #[arg(long, conflicts_with = "kill")]
    term: bool,
    /// Also send SIGKILL to its running tasks
    #[arg(long)]
    kill: bool,
}

impl StopSignal {
    pub fn signal(&self) -> Signal {
        match (self.term, self.kill) {
            (true, _) => Signal::Term,
            (_, true) => Signal::Kill,
            _ => Signal::Unspecified,
        }
    }
}

/// Every batch, with its task counts.
pub async fn list(client: &Client) -> anyhow::Result<Vec<Batch>> {
    Ok(client
        .tasks()
        .list_batches(ListBatchesRequest {})
        .await?
        .into_inner()
        .batches)
}

/// Stops batch `name`, sending `signal` to its running tasks unless unspecified.
pub async fn stop(client: &Client, name: &str, signal: Signal) -> anyhow::Result<()> {
    client
        .tasks()
        .stop_batch(StopBatchRequest {
            name: name.to_owned(),
            signal: signal as i32,
        })
        .await
        .with_context(|| format!("cannot stop batch {name:?}"))?;
    Ok(())
}

/// Lets a stopped or suspended batch run again.
pub async fn go(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .tasks()
        .go_batch(GoBatchRequest {
            name: name.to_owned(),
        })
        .await
        .with_context(|| format!("cannot restart batch {name:?}"))?;
    Ok(())
}

/// Deletes batch `name` with its tasks; how many tasks went.
pub async fn delete_now(client: &Client, name: &str) -> anyhow::Result<u64> {
    Ok(client
        .tasks()
        .delete_batch(DeleteBatchRequest {
            name: name.to_owned(),
        })
        .await
        .with_context(|| format!("cannot delete batch {name:?}"))?
        .into_inner()
        .deleted)
}

pub async fn run(command: BatchCommand, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    match command {
        BatchCommand::List(watch) => {
            return super::watch::run(watch, || async {
                output::print_list(&list(&client).await?, ctx.format)
            })
            .await;
        }
        BatchCommand::Stop { name, signal } => {
            let signal = signal.signal();
            stop(&client, &name, signal).await?;
            let told = match signal {
                Signal::Term => " (running tasks got SIGTERM)",
                Signal::Kill => " (running tasks got SIGKILL)",
                _ => "",
            };
            eprintln!("batch {name:?} stopped{told}");
        }
        BatchCommand::Suspend { name } => {
            client
                .tasks()
                .suspend_batch(SuspendBatchRequest { name: name.clone() })
                .await
                .with_context(|| format!("cannot suspend batch {name:?}"))?;
            eprintln!("batch {name:?} suspended (running tasks frozen)");
        }
        BatchCommand::Go { name } => {
            go(&client, &name).await?;
            eprintln!("batch {name:?} runs again");
        }
        BatchCommand::Delete { name, yes } => return delete(&client, &name, yes).await,
    }
    Ok(0)
}

async fn delete(client: &Client, name: &str, yes: bool) -> anyhow::Result<Exit> {
    if !yes && std::io::stdin().is_terminal() && !confirm(client, name).await? {
        eprintln!("nothing deleted");
        return Ok(1);
    }
    let deleted = delete_now(client, name).await?;
    eprintln!("batch {name:?} deleted ({deleted} tasks)");
    Ok(0)
}

/// Asks on the terminal; the task count helps see what is at stake.
async fn confirm(client: &Client, name: &str) -> anyhow::Result<bool> {
    let batches = list(client).await?;
    let what = match batches.iter().find(|b| b.name == name) {
        Some(batch) => format!("its {} tasks", batch.counts.values().sum::<u64>()),
        None => "its tasks".to_owned(),
    };
    eprint!("delete batch {name:?} and {what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
