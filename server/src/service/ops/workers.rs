//! Worker administration: list, settings, drain, delete. (An agent's session is
//! `service::session`'s.)

use super::{Ops, OpsError};
use crate::core::agent::HostStats;
use crate::core::ids::WorkerId;
use crate::core::model::Worker;
use crate::core::task::validate_batch_name;
use crate::core::worker::{SettingsError, WorkerSettings, check_settings};
use crate::persistence::workers;
use crate::service::scheduler::Command;

/// A worker with what it runs now (0 when its agent is not connected).
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub worker: Worker,
    pub active: u32,
    /// Its host's figures from its agent's last heartbeat, and when they came (connected
    /// workers only).
    pub stats: Option<(HostStats, std::time::SystemTime)>,
    /// The machine scitqd recruited it on, if it did.
    pub machine: Option<crate::core::recruit::MachineRecord>,
}

/// What deleting a worker did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerDeleted {
    /// Forgotten, with its credential.
    Forgotten,
    /// A recruited machine: it is being drained and destroyed (then forgotten).
    Destroying { machine: String },
}

/// Settings to change; `None` leaves one as it is.
#[derive(Clone, Debug, Default)]
pub struct WorkerChange {
    pub concurrency: Option<u32>,
    /// Fixes the prefetch (the agent stops adapting it).
    pub prefetch: Option<u32>,
    /// True: the agent adapts its prefetch again. Not with `prefetch`.
    pub prefetch_auto: Option<bool>,
    /// Resuming (false) also undoes a drain.
    pub paused: Option<bool>,
    /// `Some("")` removes the filter.
    pub batch: Option<String>,
}

impl Ops {
    pub async fn workers(&self) -> Result<Vec<WorkerView>, OpsError> {
        let workers = workers::list(&self.store).await?;
        let active = self.scheduler.active().await;
        let live = self.scheduler.prefetch().await;
        let mut stats = self.scheduler.stats().await;
        let mut machines = self.live_machines().await?;
        Ok(workers
            .into_iter()
            .map(|mut worker| {
                live_prefetch(&mut worker.settings, live.get(&worker.id));
                WorkerView {
                    active: active.get(&worker.id).copied().unwrap_or(0),
                    stats: stats.remove(&worker.id),
                    machine: machines.remove(&worker.name),
                    worker,
                }
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
        if let (Some(p), Some(true)) = (change.prefetch, change.prefetch_auto) {
            return Err(SettingsError::PrefetchAndAuto(p).into());
        }
        let batch = match change.batch {
            None => None,
            Some(b) if b.trim().is_empty() => Some(None),
            Some(b) => Some(Some(validate_batch_name(0, &b)?)),
        };
        let mut settings = self.live_settings(id).await?;
        if let Some(c) = change.concurrency {
            settings.concurrency = c;
        }
        if let Some(p) = change.prefetch {
            settings.prefetch = p;
            settings.prefetch_auto = false;
        }
        if let Some(auto) = change.prefetch_auto {
            settings.prefetch_auto = auto;
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
        let mut settings = self.live_settings(id).await?;
        settings.draining = true;
        self.apply_settings(id, settings).await
    }

    /// Forgets a worker that is not connected and holds nothing, its credential with it:
    /// the next agent under its name gets a new credential (how an operator resets one).
    /// A recruited worker's machine is destroyed instead (the worker is forgotten once its
    /// agent is gone).
    pub async fn delete_worker(&self, id: WorkerId) -> Result<WorkerDeleted, OpsError> {
        let worker = workers::get(&self.store.db, id).await?;
        if let Some(machine) =
            crate::persistence::recruit::machine_named(&self.store.db, &worker.name).await?
            && machine.state.is_live()
        {
            self.destroy_machine(machine.id, "deleted by an operator".to_owned())
                .await?;
            return Ok(WorkerDeleted::Destroying {
                machine: machine.name,
            });
        }
        if self.scheduler.active().await.contains_key(&id) {
            return Err(OpsError::WorkerConnected { id });
        }
        workers::delete(&self.store, id).await?;
        Ok(WorkerDeleted::Forgotten)
    }

    /// Stores a worker's new settings, then pushes them to its agent.
    async fn apply_settings(
        &self,
        id: WorkerId,
        settings: WorkerSettings,
    ) -> Result<WorkerView, OpsError> {
        let live = (settings.prefetch, settings.prefetch_auto);
        let mut worker = workers::update_settings(&self.store, id, settings.clone()).await?;
        self.scheduler.send(Command::Settings {
            worker: id,
            settings,
        });
        let active = self.scheduler.active().await;
        if active.contains_key(&id) {
            live_prefetch(&mut worker.settings, Some(&live));
        }
        let machine = self.live_machines().await?.remove(&worker.name);
        Ok(WorkerView {
            active: active.get(&id).copied().unwrap_or(0),
            stats: self.scheduler.stats().await.remove(&id),
            machine,
            worker,
        })
    }

    /// The stored settings with the prefetch the worker runs with now, when connected (an
    /// automatic one changes without being stored).
    async fn live_settings(&self, id: WorkerId) -> Result<WorkerSettings, OpsError> {
        let mut settings = workers::get(&self.store.db, id).await?.settings;
        live_prefetch(&mut settings, self.scheduler.prefetch().await.get(&id));
        Ok(settings)
    }
}

fn live_prefetch(settings: &mut WorkerSettings, live: Option<&(u32, bool)>) {
    if let Some(&(prefetch, auto)) = live {
        settings.prefetch = prefetch;
        settings.prefetch_auto = auto;
    }
}
