//! Worker administration: list, settings, drain, delete. (An agent's session is
//! `service::session`'s.)

use super::{Ops, OpsError};
use crate::core::ids::WorkerId;
use crate::core::model::Worker;
use crate::core::task::validate_batch_name;
use crate::core::worker::{WorkerSettings, check_settings};
use crate::persistence::workers;
use crate::service::scheduler::Command;

/// A worker with what it runs now (0 when its agent is not connected).
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub worker: Worker,
    pub active: u32,
}

/// Settings to change; `None` leaves one as it is.
#[derive(Clone, Debug, Default)]
pub struct WorkerChange {
    pub concurrency: Option<u32>,
    pub prefetch: Option<u32>,
    /// Resuming (false) also undoes a drain.
    pub paused: Option<bool>,
    /// `Some("")` removes the filter.
    pub batch: Option<String>,
}

impl Ops {
    pub async fn workers(&self) -> Result<Vec<WorkerView>, OpsError> {
        let workers = workers::list(&self.store).await?;
        let active = self.scheduler.active().await;
        Ok(workers
            .into_iter()
            .map(|worker| WorkerView {
                active: active.get(&worker.id).copied().unwrap_or(0),
                worker,
            })
            .collect())
    }

    /// Changes a worker's settings; its agent gets them at once if connected.
    pub async fn update_worker(
        &self,
        id: WorkerId,
        change: WorkerChange,
    ) -> Result<WorkerView, OpsError> {
        check_settings(change.concurrency, change.prefetch)?;
        let batch = match change.batch {
            None => None,
            Some(b) if b.trim().is_empty() => Some(None),
            Some(b) => Some(Some(validate_batch_name(0, &b)?)),
        };
        let mut settings = workers::get(&self.store.db, id).await?.settings;
        if let Some(c) = change.concurrency {
            settings.concurrency = c;
        }
        if let Some(p) = change.prefetch {
            settings.prefetch = p;
        }
        if let Some(paused) = change.paused {
            settings.paused = paused;
            if !paused {
                settings.draining = false;
            }
        }
        if let Some(batch) = batch {
            settings.batch = batch;
        }
        self.apply_settings(id, settings).await
    }

    /// The worker takes no new task; its agent exits once it holds nothing.
    pub async fn drain_worker(&self, id: WorkerId) -> Result<WorkerView, OpsError> {
        let mut settings = workers::get(&self.store.db, id).await?.settings;
        settings.draining = true;
        self.apply_settings(id, settings).await
    }

    /// Forgets a worker that is not connected and holds nothing, its credential with it:
    /// the next agent under its name gets a new credential (how an operator resets one).
    pub async fn delete_worker(&self, id: WorkerId) -> Result<(), OpsError> {
        workers::get(&self.store.db, id).await?;
        if self.scheduler.active().await.contains_key(&id) {
            return Err(OpsError::WorkerConnected { id });
        }
        workers::delete(&self.store, id).await?;
        Ok(())
    }

    /// Stores a worker's new settings, then pushes them to its agent.
    async fn apply_settings(
        &self,
        id: WorkerId,
        settings: WorkerSettings,
    ) -> Result<WorkerView, OpsError> {
        let worker = workers::update_settings(&self.store, id, settings.clone()).await?;
        self.scheduler.send(Command::Settings {
            worker: id,
            settings,
        });
        let active = self.scheduler.active().await;
        Ok(WorkerView {
            active: active.get(&id).copied().unwrap_or(0),
            worker,
        })
    }
}
