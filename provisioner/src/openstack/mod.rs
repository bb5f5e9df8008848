//! OpenStack (OVH is the reference cloud): Keystone v3 (password or application credential),
//! Nova servers.
//!
//! The `openstack` crate (over `osauth`) authenticates, reads the catalog, lists flavors and
//! resolves the flavor, image, network and key pair of a new server (so an unknown one is
//! reported by class before anything is created). The server calls themselves (create, show,
//! delete, list) go through the same authenticated session but are read here, because the
//! crate's errors drop the HTTP status and the `Retry-After` header that throttling and quota
//! classification need.

mod nova;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use futures::TryStreamExt as _;
use openstack::Cloud;
use osauth::common::IdOrName;
use osauth::{ErrorKind, Session};

use crate::retry::{self, Idempotency, RetryPolicy};
use crate::{Flavor, Instance, InstanceId, InstanceSpec, OwnerId, Provider, ProviderError};

/// Keystone v3 credentials.
#[derive(Clone)]
pub enum Credentials {
    Password {
        user: String,
        password: String,
        user_domain: String,
        project: String,
        project_domain: String,
    },
    ApplicationCredential {
        id: String,
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { user, project, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("project", project)
                .finish_non_exhaustive(),
            Credentials::ApplicationCredential { id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .finish_non_exhaustive(),
        }
    }
}

/// How to reach an OpenStack cloud.
#[derive(Debug, Clone)]
pub struct OpenStackConfig {
    /// The provider's configured name.
    pub name: String,
    /// Keystone URL, e.g. `https://auth.cloud.ovh.net/v3`.
    pub auth_url: String,
    pub credentials: Credentials,
    /// Regions used (the first is the default); at least one.
    pub regions: Vec<String>,
    pub retry: RetryPolicy,
}

/// Servers on an OpenStack cloud, one authenticated session per region.
pub struct OpenStackProvider {
    config: OpenStackConfig,
    owner: OwnerId,
    /// (region, session), in the configured order.
    sessions: Vec<(String, Session)>,
    /// Resolved references by (region, flavor, image, network, key), so creating many
    /// instances alike costs one lookup round; dropped when a create using them fails.
    resolved: Mutex<HashMap<ReferenceKey, nova::References>>,
}

type ReferenceKey = (String, String, String, Option<String>, Option<String>);

impl OpenStackProvider {
    /// Authenticates (which checks the credentials) and prepares a session per region.
    pub async fn connect(
        config: OpenStackConfig,
        owner: OwnerId,
    ) -> Result<OpenStackProvider, ProviderError> {
        if config.regions.is_empty() {
            return Err(ProviderError::Config {
                provider: config.name.clone(),
                key: "regions",
                detail: "at least one region is needed".to_owned(),
            });
        }
        let session = retry::call(
            &config.retry,
            &config.name,
            "authenticate",
            Idempotency::Idempotent,
            || async { authenticate(&config).await },
        )
        .await?;
        let sessions = config
            .regions
            .iter()
            .map(|region| (region.clone(), session.clone().with_region(region.clone())))
            .collect();
        Ok(OpenStackProvider {
            config,
            owner,
            sessions,
            resolved: Mutex::new(HashMap::new()),
        })
    }

    fn session(&self, region: Option<&str>) -> Result<(&str, &Session), ProviderError> {
        let found = match region {
            None => self.sessions.first(),
            Some(r) => self.sessions.iter().find(|(name, _)| name == r),
        };
        found
            .map(|(name, session)| (name.as_str(), session))
            .ok_or_else(|| ProviderError::Config {
                provider: self.config.name.clone(),
                key: "region",
                detail: format!(
                    "{:?} is not one of the configured regions {:?}",
                    region.unwrap_or_default(),
                    self.config.regions
                ),
            })
    }

    /// Runs an idempotent call of the `openstack` crate with retries.
    async fn typed<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, osauth::Error>>,
    {
        let name = &self.config.name;
        retry::call(
            &self.config.retry,
            name,
            operation,
            Idempotency::Idempotent,
            || {
                // The crate's futures are large (16+ KiB): keep them off our stack.
                let fut = Box::pin(f());
                async move { fut.await.map_err(|e| classify(name, operation, e)) }
            },
        )
        .await
    }

    /// Resolves the spec's references with the crate, mapping "not found" to its class.
    async fn resolve(
        &self,
        cloud: &Cloud,
        spec: &InstanceSpec,
    ) -> Result<nova::References, ProviderError> {
        let provider = &self.config.name;
        let flavor = self
            .typed("find flavor", || cloud.get_flavor(&spec.flavor))
            .await
            .map_err(|e| match e {
                ProviderError::NotFound { .. } => ProviderError::UnknownFlavor {
                    provider: provider.clone(),
                    flavor: spec.flavor.clone(),
                },
                e => e,
            })?;
        let image = self
            .typed("find image", || cloud.get_image(&spec.image))
            .await
            .map_err(|e| match e {
                ProviderError::NotFound { .. } => ProviderError::UnknownImage {
                    provider: provider.clone(),
                    image: spec.image.clone(),
                },
                e => e,
            })?;
        let not_found = |key: &'static str, value: &str| {
            let value = value.to_owned();
            move |e| match e {
                ProviderError::NotFound { .. } => ProviderError::Config {
                    provider: provider.clone(),
                    key,
                    detail: format!("{value:?} not found"),
                },
                e => e,
            }
        };
        let network = match &spec.network {
            Some(n) => Some(
                self.typed("find network", || cloud.get_network(n))
                    .await
                    .map_err(not_found("network", n))?
                    .id()
                    .clone(),
            ),
            None => None,
        };
        let key_name = match &spec.ssh_key {
            Some(k) => Some(
                self.typed("find key pair", || cloud.get_keypair(k))
                    .await
                    .map_err(not_found("ssh key", k))?
                    .name()
                    .clone(),
            ),
            None => None,
        };
        Ok(nova::References {
            flavor_id: flavor.id().clone(),
            image_id: image.id().clone(),
            network_id: network,
            key_name,
        })
    }
}

async fn authenticate(config: &OpenStackConfig) -> Result<Session, ProviderError> {
    let bad_url = |e: osauth::Error| ProviderError::Config {
        provider: config.name.clone(),
        key: "auth_url",
        detail: format!("{:?}: {e}", config.auth_url),
    };
    let session = match &config.credentials {
        Credentials::Password {
            user,
            password,
            user_domain,
            project,
            project_domain,
        } => {
            let auth = osauth::identity::Password::new(
                &config.auth_url,
                user.clone(),
                password.clone(),
                user_domain.clone(),
            )
            .map_err(bad_url)?
            .with_project_scope(
                IdOrName::Name(project.clone()),
                IdOrName::Name(project_domain.clone()),
            );
            Session::new(auth).await
        }
        Credentials::ApplicationCredential { id, secret } => {
            let auth = osauth::identity::ApplicationCredential::new(
                &config.auth_url,
                id.clone(),
                secret.clone(),
            )
            .map_err(bad_url)?;
            Session::new(auth).await
        }
    };
    session.map_err(|e| classify(&config.name, "authenticate", e))
}

/// Classifies an error of the `openstack` crate (kind and message only: it keeps no status).
fn classify(provider: &str, operation: &'static str, e: osauth::Error) -> ProviderError {
    let provider = provider.to_owned();
    let detail = e.to_string();
    let lower = detail.to_lowercase();
    match e.kind() {
        ErrorKind::AuthenticationFailed => ProviderError::Auth { provider, detail },
        _ if lower.contains("quota exceeded") => ProviderError::Quota { provider, detail },
        _ if lower.contains("rate limit") || lower.contains("rate-limit") => {
            ProviderError::Throttled {
                provider,
                operation,
                retry_after: None,
                detail,
            }
        }
        ErrorKind::ResourceNotFound | ErrorKind::EndpointNotFound => ProviderError::NotFound {
            provider,
            instance: detail,
        },
        ErrorKind::InternalServerError => ProviderError::ServerError {
            provider,
            operation,
            detail,
        },
        ErrorKind::ProtocolError => ProviderError::Connection {
            provider,
            operation,
            detail,
        },
        ErrorKind::InvalidResponse => ProviderError::BadResponse {
            provider,
            operation,
            detail,
        },
        _ => ProviderError::Refused {
            provider,
            operation,
            detail,
        },
    }
}

#[async_trait::async_trait]
impl Provider for OpenStackProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn flavors(&self, region: Option<&str>) -> Result<Vec<Flavor>, ProviderError> {
        let (_, session) = self.session(region)?;
        let cloud = Cloud::from(session.clone());
        let flavors = self
            .typed("list flavors", || {
                cloud
                    .find_flavors()
                    .detailed()
                    .into_stream()
                    .try_collect::<Vec<_>>()
            })
            .await?;
        Ok(flavors
            .iter()
            .map(|f| Flavor {
                name: f.name().clone(),
                cpu: f.vcpu_count(),
                memory_mib: f.ram_size(),
                disk_gib: f.root_size(),
                gpu: gpu_count(f.extra_specs()),
                price_per_hour: None,
            })
            .collect())
    }

    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        Ok(self.config.regions.clone())
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Instance, ProviderError> {
        let (region, session) = self.session(spec.region.as_deref())?;
        let key: ReferenceKey = (
            region.to_owned(),
            spec.flavor.clone(),
            spec.image.clone(),
            spec.network.clone(),
            spec.ssh_key.clone(),
        );
        let cached = self
            .resolved
            .lock()
            .expect("resolved lock")
            .get(&key)
            .cloned();
        let references = match cached {
            Some(references) => references,
            None => {
                let references = self.resolve(&Cloud::from(session.clone()), spec).await?;
                self.resolved
                    .lock()
                    .expect("resolved lock")
                    .insert(key.clone(), references.clone());
                references
            }
        };
        let request = nova::CreateRequest {
            name: spec.name.clone(),
            references,
            metadata: crate::owned_tags(spec, &self.owner),
            user_data: spec
                .user_data
                .as_ref()
                .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
        };
        let nova = nova::Nova::new(&self.config, session, region);
        let id = match nova.create(&request).await {
            Ok(id) => id,
            Err(e) => {
                // The references may be what is wrong now (an image deleted since); a quota,
                // an outage or throttling says nothing about them.
                use crate::ErrorClass::{Auth, Capacity, Quota, Transient};
                if !matches!(e.class(), Auth | Capacity | Quota | Transient) {
                    self.resolved.lock().expect("resolved lock").remove(&key);
                }
                return Err(e);
            }
        };
        // The server exists from here: show it (a failure now must not hide its id).
        match nova.show(&id).await {
            Ok(Some(instance)) => Ok(instance),
            _ => Ok(nova::just_created(id, spec, region, request.metadata)),
        }
    }

    async fn get(&self, id: &InstanceId) -> Result<Instance, ProviderError> {
        for (region, session) in &self.sessions {
            let nova = nova::Nova::new(&self.config, session, region);
            if let Some(instance) = nova.show(id).await?
                && crate::is_owned(&instance.tags, &self.owner)
            {
                return Ok(instance);
            }
        }
        Err(ProviderError::NotFound {
            provider: self.config.name.clone(),
            instance: id.0.clone(),
        })
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        for (region, session) in &self.sessions {
            let nova = nova::Nova::new(&self.config, session, region);
            if let Some(instance) = nova.show(id).await?
                && crate::is_owned(&instance.tags, &self.owner)
            {
                return nova.delete(id).await;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let mut owned = Vec::new();
        for (region, session) in &self.sessions {
            let nova = nova::Nova::new(&self.config, session, region);
            owned.extend(
                nova.list()
                    .await?
                    .into_iter()
                    .filter(|i| crate::is_owned(&i.tags, &self.owner)),
            );
        }
        Ok(owned)
    }
}

/// GPUs of a flavor: the count of a PCI passthrough alias (`"a100:2"`), or of vGPUs.
fn gpu_count(extra_specs: &std::collections::HashMap<String, String>) -> u32 {
    if let Some(alias) = extra_specs.get("pci_passthrough:alias") {
        return alias
            .split(',')
            .filter_map(|a| {
                a.rsplit_once(':')
                    .and_then(|(_, n)| n.trim().parse::<u32>().ok())
            })
            .sum();
    }
    extra_specs
        .get("resources:VGPU")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Metadata keys and values Nova accepts (255 characters each).
pub(crate) fn check_metadata(
    provider: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    for (k, v) in metadata {
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(ProviderError::Config {
                provider: provider.to_owned(),
                key: "tags",
                detail: format!("{k:?}={v:?}: keys and values are 1 to 255 characters"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_come_from_pci_aliases_or_vgpus() {
        let specs = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into();
        assert_eq!(gpu_count(&specs("pci_passthrough:alias", "a100:2")), 2);
        assert_eq!(gpu_count(&specs("pci_passthrough:alias", "t4:1,v100:2")), 3);
        assert_eq!(gpu_count(&specs("resources:VGPU", "1")), 1);
        assert_eq!(gpu_count(&specs("hw:cpu_policy", "dedicated")), 0);
    }

    #[test]
    fn crate_errors_keep_their_class() {
        let e = osauth::Error::new(ErrorKind::AccessDenied, "Quota exceeded for cores");
        assert_eq!(
            classify("os", "create", e).class(),
            crate::ErrorClass::Quota
        );
        let e = osauth::Error::new(ErrorKind::AuthenticationFailed, "bad password");
        assert_eq!(classify("os", "auth", e).class(), crate::ErrorClass::Auth);
        let e = osauth::Error::new(ErrorKind::InternalServerError, "503");
        assert!(classify("os", "list", e).is_transient());
    }
}
