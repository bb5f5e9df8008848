//! The recruiter: a loop that, every `[recruit] interval` (and when nudged), compares the
//! work waiting with the machines serving it, lets `core::recruit::plan` decide, and carries
//! the actions out: machines created (with a single-use enrollment token in their user
//! data), re-used, drained and destroyed.
//!
//! Every cloud call is preceded by a job written in the store (`persistence::recruit`), so a
//! scitqd stopped in the middle (even by SIGKILL) settles it at its next start: a create
//! that reached the cloud is found in the provider's listing (by the owner tag and the
//! machine's name) and goes on deploying; one that did not is marked failed. Instances the
//! listing shows that scitqd has no live record of are destroyed: no orphan keeps billing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scitq_provisioner::{
    InstanceId, InstanceSpec, OwnerId, Provider, ProviderError,
    azure::{AzureConfig, AzureProvider},
    local::{LocalConfig, LocalProvider},
    openstack::{OpenStackConfig, OpenStackProvider},
    retry::RetryPolicy,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ops::{Ops, OpsError, UserDataFormat, WorkerChange};
use super::recruit_metrics::{Counted, Machines, recruit_metrics};
use crate::core::ids::{MachineId, RecruiterId};
use crate::core::recruit::{
    self, Action, DestroyReason, Flavor, JobStatus, Machine, MachineRecord, MachineState,
    ProviderInfo, Quota, RecordState, Usage,
};
use crate::persistence::now_ms;
use crate::persistence::recruit::{self as store, MachineChange, NewMachine};
use crate::provider_config::{ProviderConfig, ProviderKind};

/// Flavor lists are read again after this long.
const FLAVORS_TTL: Duration = Duration::from_secs(600);
/// A provider that could not be reached is tried again after this long.
const RECONNECT: Duration = Duration::from_secs(30);
/// Nudged passes (work submitted, a rule changed) run at most this often.
const MIN_GAP: Duration = Duration::from_millis(500);
/// Instances the providers list are compared with the records this often.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// What local instances need from scitqd's config.
#[derive(Clone, Debug)]
pub struct LocalContext {
    /// Where local instances keep their records, logs and work dirs.
    pub data_dir: PathBuf,
    /// The agent binary local instances run.
    pub agent_binary: PathBuf,
    /// scitqd's CA (`[deploy] server_ca`), for agents that must trust it.
    pub server_ca: Option<PathBuf>,
}

/// A configured provider and its connection, made when first needed.
struct Slot {
    config: ProviderConfig,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    provider: Option<Arc<dyn Provider>>,
    error: Option<String>,
    retry_at: Option<Instant>,
    flavors: Option<(Vec<Flavor>, Instant)>,
}

/// The recruiter's state shared with the operations (`Ops::recruiting`).
pub struct Recruiter {
    owner: OwnerId,
    slots: BTreeMap<String, Slot>,
    local: LocalContext,
    /// Machines with a job being carried out.
    in_flight: Mutex<HashSet<MachineId>>,
    /// Quotas learned from quota errors, by (provider, region).
    learned: Mutex<BTreeMap<(String, String), Quota>>,
    nudge: Notify,
}

/// Local instances read their agent's settings from their user data (`KEY=value` lines,
/// `SCITQ_*` keys only, never evaluated), then become the agent. A container has no path
/// to scitqd's CA file: it gets the CA itself in [`ENV_SERVER_CA_PEM`], written to a file
/// the agent is pointed at (as cloud-init does on a VM).
const LOCAL_WRAPPER: &str = r#"while IFS='=' read -r key value; do
  case "$key" in SCITQ_[A-Z_]*) export "$key=$value" ;; esac
done <<EOF
$SCITQ_USER_DATA
EOF
unset SCITQ_USER_DATA
if [ -n "$SCITQ_SERVER_CA_PEM" ]; then
  printf '%s\n' "$SCITQ_SERVER_CA_PEM" > /tmp/scitq-server-ca.pem
  export SCITQ_SERVER_CA=/tmp/scitq-server-ca.pem
fi
unset SCITQ_SERVER_CA_PEM
exec "$0" "$@""#;

/// The environment variable a local container gets scitqd's CA (`[deploy] server_ca`) in.
const ENV_SERVER_CA_PEM: &str = "SCITQ_SERVER_CA_PEM";

impl Recruiter {
    pub fn new(
        owner: OwnerId,
        providers: BTreeMap<String, ProviderConfig>,
        local: LocalContext,
    ) -> Arc<Recruiter> {
        Arc::new(Recruiter {
            owner,
            slots: providers
                .into_iter()
                .map(|(name, config)| {
                    (
                        name,
                        Slot {
                            config,
                            state: Default::default(),
                        },
                    )
                })
                .collect(),
            local,
            in_flight: Mutex::default(),
            learned: Mutex::default(),
            nudge: Notify::new(),
        })
    }

    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// Makes the loop pass now (a rule changed, a machine was asked for).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    pub fn config(&self, provider: &str) -> Option<&ProviderConfig> {
        self.slots.get(provider).map(|s| &s.config)
    }

    /// The provider, connected (authenticated) on first use; an error names why it cannot
    /// be reached, and it is tried again [`RECONNECT`] later.
    pub async fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, OpsError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| OpsError::UnknownProvider {
                name: name.to_owned(),
                known: self.provider_names(),
            })?;
        let mut state = slot.state.lock().await;
        if let Some(p) = &state.provider {
            return Ok(p.clone());
        }
        if let (Some(at), Some(error)) = (state.retry_at, &state.error)
            && Instant::now() < at
        {
            return Err(OpsError::ProviderUnavailable(error.clone()));
        }
        match connect(
            &slot.config,
            &self.owner,
            &self.local,
            RetryPolicy::default(),
        )
        .await
        {
            Ok(p) => {
                let p: Arc<dyn Provider> = Arc::new(Counted(p));
                state.provider = Some(p.clone());
                state.error = None;
                Ok(p)
            }
            Err(e) => {
                tracing::warn!(provider = name, error = %e, "cannot reach the provider");
                state.error = Some(e.to_string());
                state.retry_at = Some(Instant::now() + RECONNECT);
                Err(OpsError::ProviderUnavailable(e.to_string()))
            }
        }
    }

    /// The provider's flavors (cached for [`FLAVORS_TTL`]).
    pub async fn flavors(&self, name: &str) -> Result<Vec<Flavor>, OpsError> {
        let provider = self.provider(name).await?;
        let slot = &self.slots[name];
        if let Some((flavors, at)) = &slot.state.lock().await.flavors
            && at.elapsed() < FLAVORS_TTL
        {
            return Ok(flavors.clone());
        }
        let listed = provider
            .flavors(None)
            .await
            .map_err(|e| OpsError::ProviderUnavailable(e.to_string()))?;
        slot.state.lock().await.flavors = Some((listed.clone(), Instant::now()));
        Ok(listed)
    }

    fn is_busy(&self, id: MachineId) -> bool {
        self.in_flight.lock().expect("in_flight lock").contains(&id)
    }

    /// Claims a machine for a job; false if another job holds it.
    fn claim(&self, id: MachineId) -> bool {
        self.in_flight.lock().expect("in_flight lock").insert(id)
    }

    fn release(&self, id: MachineId) {
        self.in_flight.lock().expect("in_flight lock").remove(&id);
    }
}

/// Connects (authenticates with) a configured provider.
async fn connect(
    config: &ProviderConfig,
    owner: &OwnerId,
    local: &LocalContext,
    retry: RetryPolicy,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let name = config.name.clone();
    Ok(match &config.kind {
        ProviderKind::Local {
            flavors,
            agent_args,
        } => {
            let state_dir = local.data_dir.join("local-instances").join(&name);
            let agent = local.agent_binary.display().to_string();
            let mut command = vec!["sh".to_owned(), "-c".to_owned(), LOCAL_WRAPPER.to_owned()];
            let mut env = BTreeMap::new();
            if config.image.is_some() {
                // In the image: `sh` and `scitq-agent` on its PATH.
                command.extend([
                    "scitq-agent".to_owned(),
                    "--work-dir".to_owned(),
                    "/work".to_owned(),
                ]);
                if let Some(ca) = &local.server_ca {
                    let pem =
                        tokio::fs::read_to_string(ca)
                            .await
                            .map_err(|e| ProviderError::Config {
                                provider: name.clone(),
                                key: "[deploy] server_ca",
                                detail: format!("cannot read {}: {e}", ca.display()),
                            })?;
                    env.insert(ENV_SERVER_CA_PEM.to_owned(), pem);
                }
            } else {
                command.extend([
                    agent,
                    "--work-dir".to_owned(),
                    state_dir.join("{name}").display().to_string(),
                ]);
                if let Some(ca) = &local.server_ca {
                    command.extend(["--server-ca".to_owned(), ca.display().to_string()]);
                }
            }
            command.extend(agent_args.iter().cloned());
            let local_config = LocalConfig {
                name,
                command,
                env,
                flavors: flavors.clone(),
                state_dir,
                image: config.image.clone(),
                network: config.network.clone(),
            };
            if config.image.is_some() {
                Arc::new(LocalProvider::docker(local_config, owner.clone()).await?)
            } else {
                Arc::new(LocalProvider::processes(local_config, owner.clone())?)
            }
        }
        ProviderKind::OpenStack {
            auth_url,
            credentials,
        } => Arc::new(
            OpenStackProvider::connect(
                OpenStackConfig {
                    name,
                    auth_url: auth_url.clone(),
                    credentials: credentials.clone(),
                    regions: config.regions.clone(),
                    retry: retry.clone(),
                },
                owner.clone(),
            )
            .await?,
        ),
        ProviderKind::Azure {
            tenant_id,
            client_id,
            client_secret,
            subscription_id,
            resource_group,
            subnet_id,
            admin_username,
            spot,
            authority_host,
            endpoint,
        } => Arc::new(
            AzureProvider::connect(
                AzureConfig {
                    name,
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    subscription_id: subscription_id.clone(),
                    resource_group: resource_group.clone(),
                    regions: config.regions.clone(),
                    subnet_id: subnet_id.clone(),
                    admin_username: admin_username.clone(),
                    spot: *spot,
                    authority_host: authority_host.clone(),
                    endpoint: endpoint.clone(),
                    retry,
                    poll_interval: Duration::from_secs(5),
                    operation_timeout: Duration::from_secs(900),
                },
                owner.clone(),
            )
            .await?,
        ),
    })
}

/// `scitqd --check-providers`: connects to each provider and lists its flavors.
pub async fn check_providers(
    providers: &BTreeMap<String, ProviderConfig>,
    local: &LocalContext,
) -> Vec<(String, Result<String, String>)> {
    let owner = OwnerId::new("scitq-check").expect("a valid owner id");
    // A check answers in seconds: one retry, short timeouts.
    let retry = RetryPolicy {
        timeout: Duration::from_secs(20),
        max_retries: 1,
        ..RetryPolicy::default()
    };
    let mut out = Vec::new();
    for (name, config) in providers {
        let result = match connect(config, &owner, local, retry.clone()).await {
            Ok(p) => match p.flavors(None).await {
                Ok(flavors) => Ok(format!(
                    "{} ok: {} flavor(s), regions {}",
                    config.kind.as_str(),
                    flavors.len(),
                    config.regions.join(", ")
                )),
                Err(e) => Err(format!("authenticated, but listing flavors failed: {e}")),
            },
            Err(e) => Err(format!("{} ({})", e, e.class())),
        };
        out.push((name.clone(), result));
    }
    out
}

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
    pub(super) async fn create_machine(&self, request: Request) -> Result<MachineRecord, OpsError> {
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
    async fn rule_failed(&self, rule: RecruiterId, why: &str) {
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
    pub(super) async fn destroy_machine(
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

    async fn run_destroy(&self, recruiter: &Recruiter, machine: MachineRecord, job: Option<i64>) {
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
        let workers: HashMap<String, super::ops::WorkerView> = self
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
        workers: &HashMap<String, super::ops::WorkerView>,
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
