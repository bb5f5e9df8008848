//! Batch operations: list with counts, stop, suspend, go, delete.

use std::collections::BTreeMap;

use super::{Ops, OpsError};
use crate::core::model::Batch;
use crate::core::steering::Signal;
use crate::core::task::validate_batch_name;
use crate::persistence::tasks;
use crate::service::scheduler::Command;

/// A batch and how many of its tasks are in each status (by status name).
#[derive(Clone, Debug)]
pub struct BatchCounts {
    pub batch: Batch,
    pub counts: BTreeMap<String, u64>,
}

/// What a stopped batch's running tasks get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

fn batch_name(name: &str) -> Result<String, OpsError> {
    if name.trim().is_empty() {
        return Err(OpsError::EmptyBatchName);
    }
    Ok(validate_batch_name(0, name)?)
}

impl Ops {
    pub async fn batches(&self) -> Result<Vec<BatchCounts>, OpsError> {
        Ok(tasks::batches(&self.store)
            .await?
            .into_iter()
            .map(|(batch, counts)| BatchCounts { batch, counts })
            .collect())
    }

    /// Stops a batch: none of its tasks starts any more; with a signal, its running tasks
    /// get it too.
    pub async fn stop_batch(
        &self,
        name: &str,
        signal: Option<StopSignal>,
    ) -> Result<Batch, OpsError> {
        let name = batch_name(name)?;
        let suspended = match tasks::get_batch(&self.store.db, &name).await {
            Ok(current) => current.suspended,
            Err(crate::persistence::StoreError::NotFound { .. }) => false,
            Err(err) => return Err(err.into()),
        };
        let (_, batch) = tasks::set_batch_state(&self.store, name.clone(), true, suspended).await?;
        self.scheduler.send(Command::BatchStopped {
            batch: name.clone(),
            stopped: true,
        });
        self.recall_batch(&name).await?;
        if let Some(signal) = signal {
            let signal = match signal {
                StopSignal::Term => Signal::Term,
                StopSignal::Kill => Signal::Kill,
            };
            self.signal_batch(&name, signal).await?;
        }
        Ok(batch)
    }

    /// Stops a batch and freezes its running tasks.
    pub async fn suspend_batch(&self, name: &str) -> Result<Batch, OpsError> {
        let name = batch_name(name)?;
        let (_, batch) = tasks::set_batch_state(&self.store, name.clone(), true, true).await?;
        self.scheduler.send(Command::BatchStopped {
            batch: name.clone(),
            stopped: true,
        });
        self.recall_batch(&name).await?;
        self.signal_batch(&name, Signal::Pause).await?;
        Ok(batch)
    }

    /// Undoes a stop or a suspend.
    pub async fn go_batch(&self, name: &str) -> Result<Batch, OpsError> {
        let name = batch_name(name)?;
        let (before, batch) =
            tasks::set_batch_state(&self.store, name.clone(), false, false).await?;
        if before.suspended {
            self.signal_batch(&name, Signal::Resume).await?;
        }
        self.scheduler.send(Command::BatchStopped {
            batch: name,
            stopped: false,
        });
        Ok(batch)
    }

    /// Deletes a batch with its tasks, executions and output; its running tasks are
    /// canceled on their agents. Returns how many tasks were deleted.
    pub async fn delete_batch(&self, name: &str) -> Result<u64, OpsError> {
        let name = batch_name(name)?;
        let (deleted, active) = tasks::delete_batch(&self.store, name.clone()).await?;
        self.scheduler.send(Command::BatchDeleted { batch: name });
        self.scheduler.send(Command::Signal {
            targets: active,
            signal: Signal::Cancel,
        });
        Ok(deleted)
    }

    /// A stopped batch starts nothing: its prefetched tasks are recalled from their agents
    /// (queued again, they wait for `batch go`).
    async fn recall_batch(&self, name: &str) -> Result<(), OpsError> {
        let targets =
            crate::persistence::steering::recall_batch(&self.store, name.to_owned()).await?;
        if !targets.is_empty() {
            self.scheduler.send(Command::Signal {
                targets,
                signal: Signal::Recall,
            });
        }
        Ok(())
    }

    /// Sends a signal to every execution of the batch that a worker holds.
    async fn signal_batch(&self, name: &str, signal: Signal) -> Result<(), OpsError> {
        let targets = tasks::active_executions_of_batch(&self.store.db, name).await?;
        self.scheduler.send(Command::Signal { targets, signal });
        Ok(())
    }
}
