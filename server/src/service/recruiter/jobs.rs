//! The jobs that create and destroy machines, run in the background by `Ops`: each written
//! in the store before its cloud call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scitq_provisioner::{InstanceId, InstanceSpec};

use crate::core::ids::{MachineId, RecruiterId};
use crate::core::recruit::{self, Flavor, JobStatus, MachineRecord, RecordState, Usage};
use crate::persistence::now_ms;
use crate::persistence::recruit::{self as store, MachineChange, NewMachine};
use crate::provider_config::ProviderKind;
use crate::service::ops::{Ops, OpsError, UserDataFormat};
use crate::service::recruit_metrics::{Machines, recruit_metrics};

use super::Recruiter;

/// What a machine to create is for.
pub struct Request {
    pub provider: String,
    pub region: String,
    pub flavor: Flavor,
    pub rule: Option<RecruiterId>,
    pub batch: Option<String>,
    pub concurrency: u32,
    pub prefetch: Option<u32>,
    pub idle_timeout: Option<Duration>,
}

impl Ops {
    pub(in crate::service) fn recruiter(&self) -> Result<&Arc<Recruiter>, OpsError> {
        self.recruiter.as_ref().ok_or(OpsError::NoRecruiter)
    }

    /// Writes the machine and its create job down, then creates it in the background.
    pub(in crate::service) async fn create_machine(
        &self,
        request: Request,
    ) -> Result<MachineRecord, OpsError> {
        let recruiter = self.recruiter()?.clone();
        let new = NewMachine {
            provider: request.provider.clone(),
            region: request.region.clone(),
            flavor: request.flavor.name.clone(),
            cpu: request.flavor.cpu,
            memory_mib: request.flavor.memory_mib,
            rule: request.rule,
            batch: request.batch.clone(),
            concurrency: request.concurrency,
            prefetch: request.prefetch,
            idle_timeout: request.idle_timeout,
        };
        let why = match request.rule {
            Some(rule) => format!("recruiter {rule}"),
            None => "worker deploy".to_owned(),
        };
        let (record, job) = store::begin_create(
            &self.store,
            recruiter.owner.to_string(),
            new,
            format!(
                "create {} {} in {} for {why}\n",
                request.provider, request.flavor.name, request.region
            ),
        )
        .await?;
        recruiter.claim(record.id);
        let ops = self.clone();
        let machine = record.clone();
        tokio::spawn(async move {
            ops.run_create(&recruiter, machine, job).await;
            recruiter.release(record.id);
        });
        Ok(record)
    }

    async fn run_create(&self, recruiter: &Recruiter, machine: MachineRecord, job: i64) {
        let outcome = self.try_create(recruiter, &machine).await;
        let result = match outcome {
            Ok(instance) => {
                tracing::info!(machine = %machine.name, provider = %machine.provider, id = %instance, "created; waiting for its agent");
                recruit_metrics()
                    .machines
                    .get_or_create(&Machines {
                        provider: machine.provider.clone(),
                        event: "created",
                    })
                    .inc();
                store::finish_job(
                    &self.store,
                    Some(job),
                    JobStatus::Succeeded,
                    None,
                    format!("created as {instance}; waiting for its agent to connect"),
                    machine.id,
                    MachineChange {
                        state: Some(RecordState::Deploying),
                        provider_id: Some(instance.0),
                        ..MachineChange::default()
                    },
                )
                .await
            }
            Err((class, error)) => {
                tracing::warn!(machine = %machine.name, error = %error, class, "create failed");
                if class == "quota" {
                    self.learn_quota(recruiter, &machine).await;
                }
                let _ = self.enrollment().revoke(&machine.name).await;
                if let Some(rule) = machine.rule {
                    self.rule_failed(rule, &format!("create of {} failed: {error}", machine.name))
                        .await;
                }
                store::finish_job(
                    &self.store,
                    Some(job),
                    JobStatus::Failed,
                    Some(class.to_owned()),
                    error.clone(),
                    machine.id,
                    MachineChange {
                        state: Some(RecordState::Failed),
                        ended: true,
                        reason: Some(error),
                        ..MachineChange::default()
                    },
                )
                .await
            }
        };
        if let Err(e) = result {
            tracing::error!(machine = %machine.name, error = %e, "cannot record the create job's end");
        }
    }

    async fn try_create(
        &self,
        recruiter: &Recruiter,
        machine: &MachineRecord,
    ) -> Result<InstanceId, (&'static str, String)> {
        let other = |e: OpsError| ("other", e.to_string());
        let provider = recruiter
            .provider(&machine.provider)
            .await
            .map_err(|e| ("transient", e.to_string()))?;
        let config = recruiter.config(&machine.provider).ok_or_else(|| {
            (
                "other",
                format!("provider {:?} is no longer configured", machine.provider),
            )
        })?;
        let format = match config.kind {
            ProviderKind::Local { .. } => UserDataFormat::AgentEnv,
            _ => UserDataFormat::CloudInit,
        };
        let (_token, user_data) = self
            .enrollment()
            .user_data(
                &machine.name,
                machine.concurrency,
                machine.prefetch,
                machine.batch.as_deref(),
                format,
            )
            .await
            .map_err(other)?;
        let spec = InstanceSpec {
            name: machine.name.clone(),
            flavor: machine.flavor.clone(),
            image: config.image.clone().unwrap_or_default(),
            region: Some(machine.region.clone()),
            network: config.network.clone(),
            ssh_key: config.ssh_key.clone(),
            user_data: Some(user_data),
            tags: BTreeMap::from([("scitq-machine".to_owned(), machine.id.to_string())]),
        };
        match provider.create(&spec).await {
            Ok(instance) => Ok(instance.id),
            Err(e) => Err((e.class().as_str(), e.to_string())),
        }
    }

    /// After a quota error: the region holds no more than it does now.
    async fn learn_quota(&self, recruiter: &Recruiter, machine: &MachineRecord) {
        let Ok(live) = store::live_machines(&self.store.db).await else {
            return;
        };
        let held = live
            .iter()
            .filter(|m| m.provider == machine.provider && m.region == machine.region)
            .filter(|m| m.id != machine.id)
            .fold(Usage::default(), |mut u, m| {
                u.instances += 1;
                u.cores += m.cpu;
                u.memory_mib += m.memory_mib;
                u
            });
        tracing::warn!(provider = %machine.provider, region = %machine.region, instances = held.instances, "learned a quota: no more instances than now");
        recruiter.learned.lock().expect("learned lock").insert(
            (machine.provider.clone(), machine.region.clone()),
            recruit::learned_quota(held),
        );
    }

    /// A deployment of `rule` failed: back off, or pause the rule after too many.
    pub(super) async fn rule_failed(&self, rule: RecruiterId, why: &str) {
        let Ok(current) = store::rule(&self.store.db, rule).await else {
            return;
        };
        let failures = current.failures + 1;
        let result = match recruit::after_failure(now_ms(), failures) {
            Ok(retry_at) => store::set_failures(&self.store, rule, failures, Some(retry_at)).await,
            Err(pause) => {
                tracing::warn!(recruiter = %rule, "pausing: {pause}; last: {why}");
                let _ = store::set_failures(&self.store, rule, failures, None).await;
                store::set_paused(
                    &self.store,
                    rule,
                    true,
                    Some(format!("{pause}; last: {why}")),
                )
                .await
                .map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::error!(recruiter = %rule, error = %e, "cannot record a failed deployment");
        }
    }

    /// Drains the machine's worker and destroys the machine in the background.
    pub(in crate::service) async fn destroy_machine(
        &self,
        id: MachineId,
        reason: String,
    ) -> Result<(), OpsError> {
        let recruiter = self.recruiter()?.clone();
        if !recruiter.claim(id) {
            return Ok(()); // A job is at work on it; the next pass decides again.
        }
        let begun = match store::begin_destroy(&self.store, id, reason).await {
            Ok(Some(begun)) => begun,
            Ok(None) => {
                recruiter.release(id);
                return Ok(());
            }
            Err(e) => {
                recruiter.release(id);
                return Err(e.into());
            }
        };
        let ops = self.clone();
        tokio::spawn(async move {
            ops.run_destroy(&recruiter, begun.0, Some(begun.1)).await;
            recruiter.release(id);
        });
        Ok(())
    }

    pub(super) async fn run_destroy(
        &self,
        recruiter: &Recruiter,
        machine: MachineRecord,
        job: Option<i64>,
    ) {
        let worker = self
            .workers()
            .await
            .ok()
            .and_then(|ws| ws.into_iter().find(|w| w.worker.name == machine.name));
        if let Some(w) = &worker
            && !w.worker.settings.draining
        {
            let _ = self.drain_worker(w.worker.id).await;
        }
        let deleted = async {
            let provider = recruiter
                .provider(&machine.provider)
                .await
                .map_err(|e| ("transient", e.to_string()))?;
            let id = match &machine.provider_id {
                Some(id) => Some(InstanceId(id.clone())),
                // Its create was interrupted: find it by name, if it exists.
                None => provider
                    .list()
                    .await
                    .map_err(|e| (e.class().as_str(), e.to_string()))?
                    .into_iter()
                    .find(|i| i.name == machine.name)
                    .map(|i| i.id),
            };
            if let Some(id) = id {
                provider
                    .delete(&id)
                    .await
                    .map_err(|e| (e.class().as_str(), e.to_string()))?;
            }
            Ok::<(), (&'static str, String)>(())
        }
        .await;
        let _ = self.enrollment().revoke(&machine.name).await;
        let result = match deleted {
            Ok(()) => {
                tracing::info!(machine = %machine.name, reason = machine.reason.as_deref().unwrap_or(""), "destroyed");
                recruit_metrics()
                    .machines
                    .get_or_create(&Machines {
                        provider: machine.provider.clone(),
                        event: "destroyed",
                    })
                    .inc();
                store::finish_job(
                    &self.store,
                    job,
                    JobStatus::Succeeded,
                    None,
                    "destroyed".to_owned(),
                    machine.id,
                    MachineChange {
                        state: Some(RecordState::Destroyed),
                        ended: true,
                        ..MachineChange::default()
                    },
                )
                .await
            }
            Err((class, error)) => {
                tracing::warn!(machine = %machine.name, error = %error, "destroy failed; tried again at the next pass");
                // Back to where it was: the next pass decides again.
                let state = if machine.connected_at.is_some() {
                    RecordState::Running
                } else {
                    RecordState::Deploying
                };
                store::finish_job(
                    &self.store,
                    job,
                    JobStatus::Failed,
                    Some(class.to_owned()),
                    error,
                    machine.id,
                    MachineChange {
                        state: Some(state),
                        ..MachineChange::default()
                    },
                )
                .await
            }
        };
        if let Err(e) = result {
            tracing::error!(machine = %machine.name, error = %e, "cannot record the destroy job's end");
        }
    }
}
