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
//!
//! Here: the providers, connected on first use. `pass`: the loop and its passes. `jobs`: the
//! create and destroy jobs `Ops` runs in the background.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scitq_provisioner::{
    OwnerId, Provider, ProviderError,
    azure::{AzureConfig, AzureProvider},
    local::{LocalConfig, LocalProvider},
    openstack::{OpenStackConfig, OpenStackProvider},
    retry::RetryPolicy,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ops::OpsError;
use super::recruit_metrics::Counted;
use crate::core::ids::MachineId;
use crate::core::recruit::{Flavor, Quota};
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

mod jobs;
mod pass;

pub use jobs::Request;
pub use pass::spawn;
