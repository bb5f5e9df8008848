//! Cloud providers scitq recruits workers from.
//!
//! A [`Provider`] lists flavors and regions, creates instances, reads their state and address,
//! deletes them and lists the ones it owns. Every instance a provider creates carries the
//! owning server's id ([`OWNER_TAG`]); listing returns only those, `get` answers `NotFound` and
//! `delete` leaves alone an instance without it, so scitq never lists, reuses or deletes a
//! machine it did not create.
//!
//! Providers: [`local`] (processes, or docker containers on a private network),
//! [`openstack`] (Keystone v3 + Nova) and [`azure`] (ARM: VM, NIC and public IP).
//! Every cloud call goes through [`retry::call`]: a timeout per attempt, throttling (429,
//! honouring `Retry-After`) and transient 5xx retried with backoff, errors classified
//! ([`ErrorClass`]).
#![forbid(unsafe_code)]

pub mod azure;
mod error;
pub mod local;
pub mod openstack;
pub mod retry;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use error::{ErrorClass, ProviderError};

/// Tag (label, metadata key) naming the scitq server that created an instance.
pub const OWNER_TAG: &str = "scitq-owner";

/// The id of the scitq server that owns instances: only instances tagged with it are listed,
/// read or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerId(String);

impl OwnerId {
    /// An owner id: letters, digits, `-` and `_` only, so it fits every cloud's tag syntax.
    pub fn new(id: impl Into<String>) -> Result<OwnerId, ProviderError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 63
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ProviderError::Config {
                provider: "provisioner".to_owned(),
                key: "owner id",
                detail: format!("{id:?}: use 1 to 63 letters, digits, - or _"),
            });
        }
        Ok(OwnerId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A provider's own id for an instance (Nova server uuid, ARM VM name, local instance name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub String);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine size offered by a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Flavor {
    pub name: String,
    pub cpu: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub gpu: u32,
    /// Price per hour in the provider's currency, when the provider says.
    pub price_per_hour: Option<f64>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct InstanceSpec {
    /// Instance name (the provider may refuse names it cannot hold).
    pub name: String,
    pub flavor: String,
    pub image: String,
    /// Region; `None` for the provider's default.
    pub region: Option<String>,
    /// Network (name or id); `None` for the provider's default.
    pub network: Option<String>,
    /// SSH key (a key pair name on OpenStack, a public key on Azure).
    pub ssh_key: Option<String>,
    /// Cloud-init user data (plain text: providers encode it as their API needs).
    pub user_data: Option<String>,
    /// Extra tags; the provider adds [`OWNER_TAG`] itself.
    pub tags: BTreeMap<String, String>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Requested, not running yet (building, provisioning, container created).
    Creating,
    /// Running: the machine is up (the agent on it may not have connected yet).
    Running,
    /// Stopped or exited; it still exists (and may still bill).
    Stopped,
    /// The provider reports a failure.
    Failed(String),
    /// Being deleted.
    Deleting,
    /// A state this crate does not map, as the provider names it.
    Other(String),
}

/// An instance as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    pub flavor: Option<String>,
    pub region: Option<String>,
    pub state: InstanceState,
    pub address: Option<IpAddr>,
    pub tags: BTreeMap<String, String>,
}

/// A cloud (or the local machine) that scitq creates worker instances on.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's configured name, used in errors and logs.
    fn name(&self) -> &str;

    /// The machine sizes offered (in the given region, or the default one).
    async fn flavors(&self, region: Option<&str>) -> Result<Vec<Flavor>, ProviderError>;

    /// The regions instances can be created in.
    async fn regions(&self) -> Result<Vec<String>, ProviderError>;

    /// Creates an instance tagged with the owner; returns as soon as the provider accepted it
    /// (poll [`Provider::get`] for it to run).
    async fn create(&self, spec: &InstanceSpec) -> Result<Instance, ProviderError>;

    /// An owned instance's state and address; [`ProviderError::NotFound`] if it is gone or
    /// not ours.
    async fn get(&self, id: &InstanceId) -> Result<Instance, ProviderError>;

    /// Deletes an owned instance and what was created with it; an instance already gone is
    /// not an error, and one that is not ours is left alone (also without error: to this
    /// owner it does not exist).
    async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError>;

    /// The instances this owner created that still exist.
    async fn list(&self) -> Result<Vec<Instance>, ProviderError>;
}

/// Tags an instance gets: the spec's plus the owner's.
fn owned_tags(spec: &InstanceSpec, owner: &OwnerId) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(OWNER_TAG.to_owned(), owner.as_str().to_owned());
    tags
}

/// Whether tags mark an instance as this owner's.
fn is_owned(tags: &BTreeMap<String, String>, owner: &OwnerId) -> bool {
    tags.get(OWNER_TAG).map(String::as_str) == Some(owner.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_fit_every_cloud_tag_syntax() {
        assert!(OwnerId::new("scitq-prod_1").is_ok());
        for bad in ["", "a b", "x/y", "é", &"a".repeat(64)] {
            let err = OwnerId::new(bad).unwrap_err();
            assert!(err.to_string().contains("invalid owner id"), "{err}");
        }
    }

    #[test]
    fn only_the_owner_tag_makes_an_instance_ours() {
        let owner = OwnerId::new("me").unwrap();
        let spec = InstanceSpec {
            tags: [(OWNER_TAG.to_owned(), "someone-else".to_owned())].into(),
            ..InstanceSpec::default()
        };
        // A spec cannot smuggle in another owner: the provider's own id wins.
        let tags = owned_tags(&spec, &owner);
        assert!(is_owned(&tags, &owner));
        assert!(!is_owned(&spec.tags, &owner));
        assert!(!is_owned(&BTreeMap::new(), &owner));
    }
}
