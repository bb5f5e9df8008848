//! The `local` provider: instances on this machine, as docker containers on a private docker
//! network made for the owner, or (without docker) as processes. It is what tests use and what
//! a user tries recruitment with on one machine.
//!
//! Both modes start the configured command (e.g. `scitq-agent` with its arguments) with the
//! configured environment plus:
//! - `SCITQ_INSTANCE_NAME`: the instance name;
//! - `SCITQ_USER_DATA`: the spec's user data (what cloud-init would get on a VM).
//!
//! `{name}` and `{flavor}` in the command's arguments are replaced by the instance's.

mod docker;
mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{Flavor, Instance, InstanceId, InstanceSpec, OwnerId, Provider, ProviderError};

/// The single region local instances live in.
pub const REGION: &str = "local";

/// Environment variable carrying the instance name.
pub const ENV_INSTANCE_NAME: &str = "SCITQ_INSTANCE_NAME";
/// Environment variable carrying the user data.
pub const ENV_USER_DATA: &str = "SCITQ_USER_DATA";

/// How the local provider starts instances.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The provider's configured name.
    pub name: String,
    /// Program and arguments (`{name}`, `{flavor}` replaced). For docker, the container's
    /// command; empty keeps the image's own.
    pub command: Vec<String>,
    /// Environment given to every instance.
    pub env: BTreeMap<String, String>,
    /// Flavors offered; empty offers one flavor, `local`, the size of this machine.
    pub flavors: Vec<Flavor>,
    /// Process mode: where instance records (tags, pid) and logs are kept, so listing
    /// survives a restart of the owning process.
    pub state_dir: PathBuf,
    /// Docker mode: the image instances run.
    pub image: Option<String>,
    /// Docker mode: the network instances are attached to (created if missing); none is a
    /// bridge network `scitq-<owner>` of their own. A scitqd that runs in a container names
    /// the network it is on, so its agents reach it by its container name.
    pub network: Option<String>,
}

/// Local instances, as processes or containers.
pub struct LocalProvider {
    config: LocalConfig,
    owner: OwnerId,
    backend: Backend,
}

enum Backend {
    Process(process::Processes),
    Docker(docker::Containers),
}

impl LocalProvider {
    /// Instances as processes.
    pub fn processes(config: LocalConfig, owner: OwnerId) -> Result<LocalProvider, ProviderError> {
        validate_command(&config)?;
        let backend = Backend::Process(process::Processes::new(&config)?);
        Ok(LocalProvider {
            config,
            owner,
            backend,
        })
    }

    /// Instances as containers of `config.image` on `config.network` or the owner's
    /// private network (created if missing). Fails when the docker daemon cannot be reached.
    pub async fn docker(
        config: LocalConfig,
        owner: OwnerId,
    ) -> Result<LocalProvider, ProviderError> {
        let image = config.image.clone().ok_or_else(|| ProviderError::Config {
            provider: config.name.clone(),
            key: "image",
            detail: "the docker mode needs an image".to_owned(),
        })?;
        let network = config
            .network
            .clone()
            .unwrap_or_else(|| format!("scitq-{owner}"));
        let backend = Backend::Docker(
            docker::Containers::connect(&config.name, &owner, image, network).await?,
        );
        Ok(LocalProvider {
            config,
            owner,
            backend,
        })
    }

    /// Docker when an image is configured and the daemon answers, processes otherwise.
    pub async fn detect(
        config: LocalConfig,
        owner: OwnerId,
    ) -> Result<LocalProvider, ProviderError> {
        if config.image.is_some() {
            match LocalProvider::docker(config.clone(), owner.clone()).await {
                Ok(provider) => return Ok(provider),
                Err(e) => {
                    tracing::warn!(error = %e, "docker unavailable: local instances will be processes")
                }
            }
        }
        LocalProvider::processes(config, owner)
    }

    /// Whether instances are docker containers.
    pub fn uses_docker(&self) -> bool {
        matches!(self.backend, Backend::Docker(_))
    }

    /// The docker network instances are attached to (docker mode).
    pub fn network(&self) -> Option<&str> {
        match &self.backend {
            Backend::Docker(d) => Some(d.network()),
            Backend::Process(_) => None,
        }
    }

    fn command_for(&self, spec: &InstanceSpec) -> Vec<String> {
        self.config
            .command
            .iter()
            .map(|arg| {
                arg.replace("{name}", &spec.name)
                    .replace("{flavor}", &spec.flavor)
            })
            .collect()
    }

    fn env_for(&self, spec: &InstanceSpec) -> BTreeMap<String, String> {
        let mut env = self.config.env.clone();
        env.insert(ENV_INSTANCE_NAME.to_owned(), spec.name.clone());
        if let Some(user_data) = &spec.user_data {
            env.insert(ENV_USER_DATA.to_owned(), user_data.clone());
        }
        env
    }

    fn check_spec(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let valid_name = !spec.name.is_empty()
            && spec.name.len() <= 63
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(ProviderError::Config {
                provider: self.config.name.clone(),
                key: "instance name",
                detail: format!("{:?}: use 1 to 63 letters, digits, - or _", spec.name),
            });
        }
        if let Some(region) = &spec.region
            && region != REGION
        {
            return Err(ProviderError::Config {
                provider: self.config.name.clone(),
                key: "region",
                detail: format!("{region:?}: the local provider has one region, {REGION:?}"),
            });
        }
        if !self.offered_flavors().iter().any(|f| f.name == spec.flavor) {
            return Err(ProviderError::UnknownFlavor {
                provider: self.config.name.clone(),
                flavor: spec.flavor.clone(),
            });
        }
        Ok(())
    }

    fn offered_flavors(&self) -> Vec<Flavor> {
        if self.config.flavors.is_empty() {
            vec![this_machine()]
        } else {
            self.config.flavors.clone()
        }
    }
}

fn validate_command(config: &LocalConfig) -> Result<(), ProviderError> {
    if config.command.is_empty() {
        return Err(ProviderError::Config {
            provider: config.name.clone(),
            key: "command",
            detail: "the process mode needs a command to start".to_owned(),
        });
    }
    Ok(())
}

/// One flavor the size of this machine.
fn this_machine() -> Flavor {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    Flavor {
        name: "local".to_owned(),
        cpu,
        memory_mib,
        disk_gib: 0,
        gpu: 0,
        price_per_hour: Some(0.0),
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn flavors(&self, _region: Option<&str>) -> Result<Vec<Flavor>, ProviderError> {
        Ok(self.offered_flavors())
    }

    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![REGION.to_owned()])
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Instance, ProviderError> {
        self.check_spec(spec)?;
        let tags = crate::owned_tags(spec, &self.owner);
        let command = self.command_for(spec);
        let env = self.env_for(spec);
        match &self.backend {
            Backend::Process(p) => p.create(spec, tags, command, env).await,
            Backend::Docker(d) => d.create(spec, tags, command, env).await,
        }
    }

    async fn get(&self, id: &InstanceId) -> Result<Instance, ProviderError> {
        let found = match &self.backend {
            Backend::Process(p) => p.get(id).await?,
            Backend::Docker(d) => d.get(id).await?,
        };
        found
            .filter(|i| crate::is_owned(&i.tags, &self.owner))
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.config.name.clone(),
                instance: id.0.clone(),
            })
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self.get(id).await {
            Ok(_) => {}
            Err(ProviderError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        match &self.backend {
            Backend::Process(p) => p.delete(id).await,
            Backend::Docker(d) => d.delete(id).await,
        }
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let all = match &self.backend {
            Backend::Process(p) => p.list().await?,
            Backend::Docker(d) => d.list().await?,
        };
        Ok(all
            .into_iter()
            .filter(|i| crate::is_owned(&i.tags, &self.owner))
            .collect())
    }
}
