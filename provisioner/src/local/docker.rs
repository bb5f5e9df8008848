//! Local instances as docker containers, on a bridge network private to the owner
//! (`scitq-<owner>`, or the one configured), labelled with their tags so listing needs no
//! state of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig,
    NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::REGION;
use crate::{Instance, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, ProviderError};

/// Label holding the flavor an instance was created with.
const FLAVOR_LABEL: &str = "scitq-flavor";

pub(super) struct Containers {
    provider: String,
    docker: Docker,
    owner: OwnerId,
    image: String,
    network: String,
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Containers {
    pub(super) async fn connect(
        provider: &str,
        owner: &OwnerId,
        image: String,
        network: String,
    ) -> Result<Containers, ProviderError> {
        let docker_error = |operation| {
            move |source| ProviderError::Docker {
                provider: provider.to_owned(),
                operation,
                source,
            }
        };
        let docker = Docker::connect_with_local_defaults()
            .map_err(docker_error("connect"))?
            .negotiate_version()
            .await
            .map_err(docker_error("connect"))?;
        let containers = Containers {
            provider: provider.to_owned(),
            docker,
            owner: owner.clone(),
            image,
            network,
        };
        containers.ensure_network().await?;
        Ok(containers)
    }

    pub(super) fn network(&self) -> &str {
        &self.network
    }

    fn error(
        &self,
        operation: &'static str,
    ) -> impl FnOnce(bollard::errors::Error) -> ProviderError + '_ {
        move |source| ProviderError::Docker {
            provider: self.provider.clone(),
            operation,
            source,
        }
    }

    async fn ensure_network(&self) -> Result<(), ProviderError> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.error("inspect network")(e)),
        }
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([(
                OWNER_TAG.to_owned(),
                self.owner.as_str().to_owned(),
            )])),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created by a concurrent caller meanwhile.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.error("create network")(e)),
        }
    }

    pub(super) async fn create(
        &self,
        spec: &InstanceSpec,
        tags: BTreeMap<String, String>,
        command: Vec<String>,
        env: BTreeMap<String, String>,
    ) -> Result<Instance, ProviderError> {
        let mut labels: HashMap<String, String> = tags.into_iter().collect();
        labels.insert(FLAVOR_LABEL.to_owned(), spec.flavor.clone());
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            // The command replaces the image's entrypoint too (the agent image's is
            // `scitq-agent`, which would take the command for its arguments).
            entrypoint: (!command.is_empty()).then_some(command),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            hostname: Some(spec.name.clone()),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                // Lets an agent reach a scitqd listening on the host.
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_owned()]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match status_of(&e) {
                Some(404) => ProviderError::UnknownImage {
                    provider: self.provider.clone(),
                    image: self.image.clone(),
                },
                _ => self.error("create container")(e),
            })?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(self.error("start container")(e));
        }
        self.get(&InstanceId(spec.name.clone()))
            .await?
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.provider.clone(),
                instance: spec.name.clone(),
            })
    }

    pub(super) async fn get(&self, id: &InstanceId) -> Result<Option<Instance>, ProviderError> {
        // Exact name match: docker's name filter is a regex on "/name".
        let found = self.query(Some(&format!("^/{}$", id.0))).await?;
        Ok(found.into_iter().next())
    }

    pub(super) async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        self.query(None).await
    }

    pub(super) async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&id.0, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error("remove container")(e)),
        }
    }

    async fn remove(&self, container: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = self.docker.remove_container(container, Some(options)).await {
            tracing::warn!(container, error = %e, "cannot remove a container that failed to start");
        }
    }

    async fn query(&self, name: Option<&str>) -> Result<Vec<Instance>, ProviderError> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{OWNER_TAG}={}", self.owner)],
        )]);
        if let Some(name) = name {
            filters.insert("name".to_owned(), vec![name.to_owned()]);
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.error("list containers"))?;
        let mut found: Vec<Instance> = summaries
            .into_iter()
            .filter_map(|s| self.instance(s))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn instance(&self, summary: ContainerSummary) -> Option<Instance> {
        let name = summary.names?.first()?.trim_start_matches('/').to_owned();
        let mut tags: BTreeMap<String, String> = summary.labels?.into_iter().collect();
        let flavor = tags.remove(FLAVOR_LABEL);
        let address = summary
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|endpoint| endpoint.ip_address)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let state = match summary.state {
            Some(ContainerSummaryStateEnum::CREATED) => InstanceState::Creating,
            Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING) => {
                InstanceState::Running
            }
            Some(
                ContainerSummaryStateEnum::EXITED
                | ContainerSummaryStateEnum::PAUSED
                | ContainerSummaryStateEnum::STOPPING,
            ) => InstanceState::Stopped,
            Some(ContainerSummaryStateEnum::REMOVING) => InstanceState::Deleting,
            Some(ContainerSummaryStateEnum::DEAD) => {
                InstanceState::Failed("container is dead".to_owned())
            }
            Some(ContainerSummaryStateEnum::EMPTY) | None => InstanceState::Other(String::new()),
        };
        Some(Instance {
            id: InstanceId(name.clone()),
            name,
            flavor,
            region: Some(REGION.to_owned()),
            state,
            address,
            tags,
        })
    }
}
