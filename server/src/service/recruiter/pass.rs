//! The recruiter's loop: a pass settles what a stopped scitqd left, sweeps orphans, lets
//! `core::recruit::plan` decide and carries its actions out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::ids::{MachineId, RecruiterId};
use crate::core::recruit::{
    self, Action, DestroyReason, JobStatus, Machine, MachineRecord, MachineState, ProviderInfo,
    RecordState,
};
use crate::persistence::now_ms;
use crate::persistence::recruit::{self as store, MachineChange};
use crate::service::ops::{Ops, OpsError, WorkerChange};
use crate::service::recruit_metrics::recruit_metrics;

use super::{MIN_GAP, Recruiter, Request, SWEEP_EVERY};

/// The loop's own state across passes.
struct Pass {
    ops: Ops,
    recruiter: Arc<Recruiter>,
    /// Since when each running machine holds nothing, and since when its agent is gone.
    idle_since: HashMap<MachineId, i64>,
    offline_since: HashMap<MachineId, i64>,
    swept: Option<Instant>,
}

/// Starts the loop; it stops with `stop`.
pub fn spawn(
    ops: Ops,
    recruiter: Arc<Recruiter>,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    recruit_metrics();
    tokio::spawn(async move {
        let mut pass = Pass {
            ops,
            recruiter: recruiter.clone(),
            idle_since: HashMap::new(),
            offline_since: HashMap::new(),
            swept: None,
        };
        if let Err(e) = pass.recover().await {
            tracing::error!(error = %e, "recruiter: cannot settle the jobs of the last run");
        }
        loop {
            let started = Instant::now();
            if let Err(e) = pass.once().await {
                tracing::warn!(error = %e, "recruiter pass failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = recruiter.nudge.notified() => {
                    // Nudges (every task submission) start a pass at most this often.
                    tokio::time::sleep_until(started + MIN_GAP.min(interval)).await;
                }
            }
        }
    })
}

impl Pass {
    /// Settles what a stopped scitqd left: creates in flight are looked for at their
    /// provider, destroys in flight are made again.
    async fn recover(&mut self) -> Result<(), OpsError> {
        let running = store::jobs(&self.ops.store.db, true, 10_000).await?;
        for job in running {
            let machine = store::machine(&self.ops.store.db, job.machine).await?;
            match job.kind {
                recruit::JobKind::Create => self.settle_create(&machine, job.id).await,
                recruit::JobKind::Destroy => {
                    if self.recruiter.claim(machine.id) {
                        self.ops
                            .run_destroy(&self.recruiter, machine.clone(), Some(job.id))
                            .await;
                        self.recruiter.release(machine.id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn settle_create(&self, machine: &MachineRecord, job: i64) {
        let found = match self.recruiter.provider(&machine.provider).await {
            Ok(p) => p
                .list()
                .await
                .map(|l| l.into_iter().find(|i| i.name == machine.name)),
            Err(e) => {
                tracing::warn!(machine = %machine.name, error = %e, "cannot settle an interrupted create yet");
                return;
            }
        };
        let (status, line, change) = match found {
            Ok(Some(instance)) => (
                JobStatus::Succeeded,
                format!(
                    "scitqd restarted during the create; found as {}",
                    instance.id
                ),
                MachineChange {
                    state: Some(RecordState::Deploying),
                    provider_id: Some(instance.id.0),
                    ..MachineChange::default()
                },
            ),
            Ok(None) => (
                JobStatus::Failed,
                "scitqd restarted during the create; the provider has no such instance".to_owned(),
                MachineChange {
                    state: Some(RecordState::Failed),
                    ended: true,
                    reason: Some("interrupted create".to_owned()),
                    ..MachineChange::default()
                },
            ),
            Err(e) => {
                tracing::warn!(machine = %machine.name, error = %e, "cannot settle an interrupted create yet");
                return;
            }
        };
        tracing::info!(machine = %machine.name, "{line}");
        let class = (status == JobStatus::Failed).then(|| "interrupted".to_owned());
        if let Err(e) = store::finish_job(
            &self.ops.store,
            Some(job),
            status,
            class,
            line,
            machine.id,
            change,
        )
        .await
        {
            tracing::error!(error = %e, "cannot settle an interrupted create");
        }
    }

    /// Destroys the instances a provider lists that scitqd has no live record of.
    async fn sweep(&mut self, live: &[MachineRecord]) {
        let now = Instant::now();
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.swept = Some(now);
        let known: HashSet<&str> = live.iter().map(|m| m.name.as_str()).collect();
        for name in self.recruiter.provider_names() {
            let Ok(provider) = self.recruiter.provider(&name).await else {
                continue;
            };
            let listed = match provider.list().await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "cannot list instances");
                    continue;
                }
            };
            for instance in listed
                .into_iter()
                .filter(|i| !known.contains(i.name.as_str()))
            {
                tracing::warn!(provider = %name, instance = %instance.name, id = %instance.id, "an instance of this server that it has no record of: destroying it");
                if let Err(e) = provider.delete(&instance.id).await {
                    tracing::warn!(provider = %name, instance = %instance.name, error = %e, "cannot destroy an orphan instance");
                }
            }
        }
    }

    async fn once(&mut self) -> Result<(), OpsError> {
        let started = Instant::now();
        let result = self.decide_and_act().await;
        recruit_metrics()
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn decide_and_act(&mut self) -> Result<(), OpsError> {
        let now = now_ms();
        let rules = store::rules(&self.ops.store.db).await?;
        let records = store::live_machines(&self.ops.store.db).await?;
        self.sweep(&records).await;
        let workers: HashMap<String, crate::service::ops::WorkerView> = self
            .ops
            .workers()
            .await?
            .into_iter()
            .map(|w| (w.worker.name.clone(), w))
            .collect();
        let connected = self.ops.scheduler.active().await;

        let mut machines = Vec::with_capacity(records.len());
        for record in &records {
            let worker = workers.get(&record.name);
            let online = worker.is_some_and(|w| connected.contains_key(&w.worker.id));
            let busy = self.recruiter.is_busy(record.id);
            let mut state = match record.state {
                RecordState::Creating => MachineState::Creating,
                RecordState::Deploying => MachineState::Deploying,
                RecordState::Destroying => MachineState::Destroying,
                _ => MachineState::Running {
                    active: 0,
                    idle_since: None,
                    offline_since: None,
                },
            };
            if record.state == RecordState::Deploying && online && !busy {
                tracing::info!(machine = %record.name, "its agent connected");
                store::update_machine(
                    &self.ops.store,
                    record.id,
                    MachineChange {
                        state: Some(RecordState::Running),
                        connected_at: Some(now),
                        ..MachineChange::default()
                    },
                )
                .await?;
                if let Some(rule) = record.rule {
                    store::set_failures(&self.ops.store, rule, 0, None).await?;
                }
                state = MachineState::Running {
                    active: 0,
                    idle_since: None,
                    offline_since: None,
                };
            }
            if let MachineState::Running { .. } = state {
                let active = worker.map_or(0, |w| w.active);
                let idle_since = if online && active == 0 {
                    Some(*self.idle_since.entry(record.id).or_insert(now))
                } else {
                    self.idle_since.remove(&record.id);
                    None
                };
                let offline_since = if online {
                    self.offline_since.remove(&record.id);
                    None
                } else {
                    Some(*self.offline_since.entry(record.id).or_insert(now))
                };
                state = MachineState::Running {
                    active,
                    idle_since,
                    offline_since,
                };
            }
            machines.push(Machine {
                id: record.id,
                provider: record.provider.clone(),
                region: record.region.clone(),
                flavor: record.flavor.clone(),
                cpu: record.cpu,
                memory_mib: record.memory_mib,
                rule: record.rule,
                batch: record.batch.clone(),
                idle_timeout: record.idle_timeout,
                state,
                created_at: record.created_at,
                busy,
            });
        }

        let waiting: BTreeMap<String, u64> = self
            .ops
            .batches()
            .await?
            .into_iter()
            .filter(|b| !b.batch.stopped)
            .map(|b| (b.batch.name, b.counts.get("pending").copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut providers = BTreeMap::new();
        for name in self.recruiter.provider_names() {
            let config = self.recruiter.config(&name).expect("a configured provider");
            let needed = rules
                .iter()
                .any(|r| r.provider == name && !r.paused && waiting.contains_key(&r.batch));
            let flavors = if needed {
                self.recruiter.flavors(&name).await.ok()
            } else {
                None
            };
            let learned = self
                .recruiter
                .learned
                .lock()
                .expect("learned lock")
                .iter()
                .filter(|((p, _), _)| *p == name)
                .map(|((_, r), q)| (r.clone(), *q))
                .collect();
            providers.insert(
                name.clone(),
                ProviderInfo {
                    regions: config.regions.clone(),
                    flavors,
                    quota: config.quota,
                    learned,
                    deploy_timeout: config.deploy_timeout,
                },
            );
        }
        let input = recruit::Input {
            now,
            rules: rules.clone(),
            machines,
            providers,
            waiting,
        };
        let actions = recruit::plan(&input);
        // Machines of one rule that never connected, however many, are one failed round.
        let never_connected: std::collections::BTreeSet<RecruiterId> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Destroy {
                    machine,
                    reason: DestroyReason::NeverConnected,
                } => input.machines.iter().find(|m| m.id == *machine)?.rule,
                _ => None,
            })
            .collect();
        for rule in never_connected {
            self.ops
                .rule_failed(rule, DestroyReason::NeverConnected.describe())
                .await;
        }
        for action in actions {
            if let Err(e) = self.carry_out(&input, action).await {
                tracing::warn!(error = %e, "recruiter action failed");
            }
        }
        self.forget_destroyed_workers(&workers, &connected).await;
        Ok(())
    }

    async fn carry_out(&self, input: &recruit::Input, action: Action) -> Result<(), OpsError> {
        match action {
            Action::Create {
                rule,
                provider,
                region,
                flavor,
            } => {
                let r = input
                    .rules
                    .iter()
                    .find(|r| r.id == rule)
                    .expect("the rule planned for");
                let record = self
                    .ops
                    .create_machine(Request {
                        provider,
                        region,
                        flavor,
                        rule: Some(rule),
                        batch: Some(r.batch.clone()),
                        concurrency: r.concurrency,
                        prefetch: r.prefetch,
                        idle_timeout: Some(r.idle_timeout),
                    })
                    .await?;
                tracing::info!(recruiter = %rule, machine = %record.name, batch = %r.batch, "recruiting");
            }
            Action::Reuse { machine, rule } => {
                let r = input
                    .rules
                    .iter()
                    .find(|r| r.id == rule)
                    .expect("the rule planned for");
                let record = store::machine(&self.ops.store.db, machine).await?;
                let worker = self
                    .ops
                    .workers()
                    .await?
                    .into_iter()
                    .find(|w| w.worker.name == record.name);
                if let Some(w) = worker {
                    self.ops
                        .update_worker(
                            w.worker.id,
                            WorkerChange {
                                concurrency: Some(r.concurrency),
                                prefetch: r.prefetch,
                                prefetch_auto: r.prefetch.is_none().then_some(true),
                                batch: Some(r.batch.clone()),
                                ..WorkerChange::default()
                            },
                        )
                        .await?;
                }
                store::update_machine(
                    &self.ops.store,
                    machine,
                    MachineChange {
                        rule: Some((
                            rule,
                            r.batch.clone(),
                            r.concurrency,
                            r.prefetch,
                            r.idle_timeout,
                        )),
                        ..MachineChange::default()
                    },
                )
                .await?;
                tracing::info!(recruiter = %rule, machine = %record.name, batch = %r.batch, "re-using an idle machine");
            }
            Action::Destroy { machine, reason } => {
                self.ops
                    .destroy_machine(machine, reason.describe().to_owned())
                    .await?;
            }
            Action::Pause { rule, reason } => {
                tracing::warn!(recruiter = %rule, "pausing: {reason}");
                store::set_paused(&self.ops.store, rule, true, Some(reason)).await?;
            }
        }
        Ok(())
    }

    /// Workers of destroyed machines are forgotten once their agent is gone.
    async fn forget_destroyed_workers(
        &self,
        workers: &HashMap<String, crate::service::ops::WorkerView>,
        connected: &HashMap<crate::core::ids::WorkerId, u32>,
    ) {
        for (name, view) in workers {
            if connected.contains_key(&view.worker.id) {
                continue;
            }
            let Ok(Some(machine)) = store::machine_named(&self.ops.store.db, name).await else {
                continue;
            };
            if !machine.state.is_live() {
                let _ = self.ops.delete_worker(view.worker.id).await;
            }
        }
    }
}
