//! Azure: a VM with its own NIC and public IP in one resource group.
//!
//! The VM itself goes through `azure_mgmt_compute` (frozen upstream, kept behind the
//! [`Provider`] trait so it can be replaced): sizes, PUT with `.send()` (its `.await` would
//! re-send the PUT to poll), GET, list. Its pipeline retries are off: every call goes through
//! [`crate::retry::call`] like the other providers'. The network resources (public IP, NIC) and
//! every long-running operation (the VM PUT, each DELETE) go through the ARM REST API in
//! `arm.rs`, following `Azure-AsyncOperation`. A create that fails after the network resources
//! exist deletes them; `delete` removes the VM (its OS disk goes with it: `deleteOption`),
//! then the NIC, then the IP.

mod arm;
mod classify;

use classify::classify_core;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::auth::TokenCredential;
use azure_mgmt_compute::package_2024_07_01 as compute;
use base64::Engine as _;
use compute::models;
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::retry::{self, Idempotency, RetryPolicy};
use crate::{
    Flavor, Instance, InstanceId, InstanceSpec, InstanceState, OwnerId, Provider, ProviderError,
};

const NETWORK_API: &str = "2024-05-01";

/// How to reach an Azure subscription (a service principal with a client secret).
#[derive(Clone)]
pub struct AzureConfig {
    /// The provider's configured name.
    pub name: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscription_id: String,
    /// The resource group every resource is created in.
    pub resource_group: String,
    /// Locations used (the first is the default); at least one.
    pub regions: Vec<String>,
    /// Subnet (ARM id) NICs are attached to when a spec names no network.
    pub subnet_id: String,
    /// Login user on the VM (its SSH key is the spec's).
    pub admin_username: String,
    /// Spot priority (evicted VMs are deleted; no price cap).
    pub spot: bool,
    /// `https://login.microsoftonline.com` in Azure's public cloud.
    pub authority_host: String,
    /// `https://management.azure.com` in Azure's public cloud (scheme, host and port only).
    pub endpoint: String,
    pub retry: RetryPolicy,
    /// Wait between two polls of an operation that gave no `Retry-After`.
    pub poll_interval: Duration,
    /// Longest wait for a long-running operation.
    pub operation_timeout: Duration,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("name", &self.name)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl AzureConfig {
    /// Defaults for Azure's public cloud.
    pub const AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
    pub const ENDPOINT: &str = "https://management.azure.com";
}

/// VMs in one resource group of an Azure subscription.
pub struct AzureProvider {
    config: AzureConfig,
    owner: OwnerId,
    compute: compute::Client,
    arm: arm::Arm,
    /// Size names by location, read once: a create checks its size without a call.
    sizes: Mutex<HashMap<String, Vec<String>>>,
}

impl AzureProvider {
    /// Prepares the clients and gets a first token (which checks the credentials).
    pub async fn connect(
        config: AzureConfig,
        owner: OwnerId,
    ) -> Result<AzureProvider, ProviderError> {
        let bad = |key: &'static str, detail: String| ProviderError::Config {
            provider: config.name.clone(),
            key,
            detail,
        };
        if config.regions.is_empty() {
            return Err(bad("regions", "at least one region is needed".to_owned()));
        }
        let authority = azure_core::Url::parse(&config.authority_host).map_err(|e| {
            bad(
                "authority_host",
                format!("{:?}: {e}", config.authority_host),
            )
        })?;
        let endpoint = azure_core::Url::parse(&config.endpoint)
            .map_err(|e| bad("endpoint", format!("{:?}: {e}", config.endpoint)))?;
        let credential: Arc<dyn TokenCredential> =
            Arc::new(azure_identity::ClientSecretCredential::new(
                azure_core::new_http_client(),
                authority,
                config.tenant_id.clone(),
                config.client_id.clone(),
                config.client_secret.clone(),
            ));
        let compute = compute::Client::builder(credential.clone())
            .endpoint(endpoint)
            .retry(azure_core::RetryOptions::none())
            .build()
            .map_err(|e| bad("endpoint", e.to_string()))?;
        retry::call(
            &config.retry,
            &config.name,
            "authenticate",
            Idempotency::Idempotent,
            || async {
                credential
                    .get_token(&[arm::SCOPE])
                    .await
                    .map_err(|e| classify_core(&config.name, "authenticate", &e))
            },
        )
        .await?;
        let arm = arm::Arm::new(&config, credential);
        Ok(AzureProvider {
            config,
            owner,
            compute,
            arm,
            sizes: Mutex::new(HashMap::new()),
        })
    }

    fn region<'a>(&'a self, region: Option<&'a str>) -> Result<&'a str, ProviderError> {
        match region {
            None => Ok(&self.config.regions[0]),
            Some(r) if self.config.regions.iter().any(|c| c == r) => Ok(r),
            Some(r) => Err(ProviderError::Config {
                provider: self.config.name.clone(),
                key: "region",
                detail: format!(
                    "{r:?} is not one of the configured regions {:?}",
                    self.config.regions
                ),
            }),
        }
    }

    fn vms(&self) -> compute::virtual_machines::Client {
        self.compute.virtual_machines_client()
    }

    fn ip_url(&self, name: &str) -> String {
        self.arm.url(
            &format!("Microsoft.Network/publicIPAddresses/{name}-ip"),
            NETWORK_API,
        )
    }

    fn nic_url(&self, name: &str) -> String {
        self.arm.url(
            &format!("Microsoft.Network/networkInterfaces/{name}-nic"),
            NETWORK_API,
        )
    }

    fn vm_url(&self, name: &str) -> String {
        self.arm.url(
            &format!("Microsoft.Compute/virtualMachines/{name}"),
            "2024-07-01",
        )
    }

    /// Runs an idempotent call of the compute crate with retries.
    async fn typed<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let name = &self.config.name;
        retry::call(
            &self.config.retry,
            name,
            operation,
            Idempotency::Idempotent,
            || {
                let fut = Box::pin(f());
                async move { fut.await.map_err(|e| classify_core(name, operation, &e)) }
            },
        )
        .await
    }

    /// The VM as ARM reports it, or `None`.
    async fn read_vm(&self, name: &str) -> Result<Option<models::VirtualMachine>, ProviderError> {
        let found = self
            .typed("get virtual machine", || async {
                self.vms()
                    .get(
                        &self.config.resource_group,
                        name,
                        &self.config.subscription_id,
                    )
                    .send()
                    .await?
                    .into_body()
                    .await
            })
            .await;
        match found {
            Ok(vm) => Ok(Some(vm)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn address(&self, name: &str) -> Result<Option<std::net::IpAddr>, ProviderError> {
        let answer = self
            .arm
            .call("get public ip", Method::GET, &self.ip_url(name), None)
            .await?;
        Ok(answer.body["properties"]["ipAddress"]
            .as_str()
            .and_then(|ip| ip.parse().ok()))
    }

    fn vm_body(&self, spec: &InstanceSpec, location: &str, nic_id: &str) -> Value {
        let tags = crate::owned_tags(spec, &self.owner);
        let admin = &self.config.admin_username;
        let mut os_profile = json!({
            "computerName": spec.name,
            "adminUsername": admin,
            "linuxConfiguration": { "disablePasswordAuthentication": true },
        });
        if let Some(key) = &spec.ssh_key {
            os_profile["linuxConfiguration"]["ssh"] = json!({ "publicKeys": [{
                "path": format!("/home/{admin}/.ssh/authorized_keys"),
                "keyData": key,
            }]});
        }
        if let Some(user_data) = &spec.user_data {
            os_profile["customData"] =
                json!(base64::engine::general_purpose::STANDARD.encode(user_data));
        }
        let mut properties = json!({
            "hardwareProfile": { "vmSize": spec.flavor },
            "storageProfile": {
                "imageReference": image_reference(&spec.image),
                "osDisk": { "createOption": "FromImage", "deleteOption": "Delete" },
            },
            "osProfile": os_profile,
            "networkProfile": { "networkInterfaces": [{
                "id": nic_id,
                "properties": { "primary": true, "deleteOption": "Delete" },
            }]},
        });
        if self.config.spot {
            properties["priority"] = json!("Spot");
            properties["evictionPolicy"] = json!("Delete");
            properties["billingProfile"] = json!({ "maxPrice": -1 });
        }
        json!({ "location": location, "tags": tags, "properties": properties })
    }

    /// Creates the IP, the NIC and the VM, following each operation to its end.
    async fn create_all(&self, spec: &InstanceSpec, location: &str) -> Result<(), ProviderError> {
        let tags = crate::owned_tags(spec, &self.owner);
        let ip = json!({
            "location": location,
            "tags": tags,
            "sku": { "name": "Standard" },
            "properties": { "publicIPAllocationMethod": "Static" },
        });
        self.arm
            .put_and_wait("create public ip", &self.ip_url(&spec.name), &ip)
            .await?;
        let subnet = spec.network.as_deref().unwrap_or(&self.config.subnet_id);
        let ip_id = self.arm.resource_id(&format!(
            "Microsoft.Network/publicIPAddresses/{}-ip",
            spec.name
        ));
        let nic = json!({
            "location": location,
            "tags": tags,
            "properties": { "ipConfigurations": [{
                "name": "ipconfig1",
                "properties": {
                    "subnet": { "id": subnet },
                    "privateIPAllocationMethod": "Dynamic",
                    "publicIPAddress": { "id": ip_id, "properties": { "deleteOption": "Delete" } },
                },
            }]},
        });
        self.arm
            .put_and_wait("create network interface", &self.nic_url(&spec.name), &nic)
            .await?;
        let nic_id = self.arm.resource_id(&format!(
            "Microsoft.Network/networkInterfaces/{}-nic",
            spec.name
        ));
        let body: models::VirtualMachine =
            serde_json::from_value(self.vm_body(spec, location, &nic_id)).map_err(|e| {
                ProviderError::Config {
                    provider: self.config.name.clone(),
                    key: "instance spec",
                    detail: e.to_string(),
                }
            })?;
        let accepted = self
            .typed("create virtual machine", || {
                self.vms()
                    .create_or_update(
                        &self.config.resource_group,
                        &spec.name,
                        body.clone(),
                        &self.config.subscription_id,
                    )
                    .send()
            })
            .await
            .map_err(|e| match e {
                ProviderError::NotFound { .. } => ProviderError::UnknownImage {
                    provider: self.config.name.clone(),
                    image: spec.image.clone(),
                },
                e => e,
            })?;
        let headers = accepted.as_raw_response().headers();
        let status_url = headers
            .get_optional_str(&azure_core::headers::HeaderName::from_static(
                "azure-asyncoperation",
            ))
            .map(str::to_owned);
        let retry_after = headers
            .get_optional_str(&azure_core::headers::RETRY_AFTER)
            .and_then(crate::error::parse_retry_after);
        if let Some(status_url) = status_url {
            self.arm
                .wait("create virtual machine", &status_url, retry_after)
                .await
                .map_err(|e| self.image_error(e, spec))?;
        }
        Ok(())
    }

    fn image_error(&self, e: ProviderError, spec: &InstanceSpec) -> ProviderError {
        match e {
            ProviderError::Refused { ref detail, .. }
                if detail.contains("ImageNotFound") || detail.contains("PlatformImageNotFound") =>
            {
                ProviderError::UnknownImage {
                    provider: self.config.name.clone(),
                    image: spec.image.clone(),
                }
            }
            e => e,
        }
    }

    /// Deletes the VM, then the NIC, then the IP (a NIC cannot go while its VM exists).
    async fn delete_all(&self, name: &str) -> Result<(), ProviderError> {
        self.arm
            .delete_and_wait("delete virtual machine", &self.vm_url(name))
            .await?;
        self.arm
            .delete_and_wait("delete network interface", &self.nic_url(name))
            .await?;
        self.arm
            .delete_and_wait("delete public ip", &self.ip_url(name))
            .await
    }

    fn instance(&self, vm: models::VirtualMachine, address: Option<std::net::IpAddr>) -> Instance {
        let name = vm.resource.name.clone().unwrap_or_default();
        let tags = tags_of(&vm);
        let properties = vm.properties.as_ref();
        let flavor = properties
            .and_then(|p| p.hardware_profile.as_ref())
            .and_then(|h| serde_json::to_value(h.vm_size.as_ref()?).ok())
            .and_then(|v| v.as_str().map(str::to_owned));
        let state = match properties.and_then(|p| p.provisioning_state.as_deref()) {
            Some("Creating" | "Updating") | None => InstanceState::Creating,
            Some("Succeeded") => InstanceState::Running,
            Some("Failed") => InstanceState::Failed("provisioning failed".to_owned()),
            Some("Deleting") => InstanceState::Deleting,
            Some(other) => InstanceState::Other(other.to_owned()),
        };
        Instance {
            id: InstanceId(name.clone()),
            name,
            flavor,
            region: Some(vm.resource.location.clone()),
            state,
            address,
            tags,
        }
    }
}

/// A VM's tags (ARM keeps them as a JSON object of strings).
fn tags_of(vm: &models::VirtualMachine) -> BTreeMap<String, String> {
    vm.resource
        .tags
        .as_ref()
        .and_then(Value::as_object)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `publisher:offer:sku:version` (an image URN), or the ARM id of an image.
fn image_reference(image: &str) -> Value {
    match image.split(':').collect::<Vec<_>>().as_slice() {
        [publisher, offer, sku, version] => json!({
            "publisher": publisher, "offer": offer, "sku": sku, "version": version,
        }),
        _ => json!({ "id": image }),
    }
}

#[async_trait::async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn flavors(&self, region: Option<&str>) -> Result<Vec<Flavor>, ProviderError> {
        let location = self.region(region)?;
        let sizes = self
            .typed("list sizes", || async {
                self.compute
                    .virtual_machine_sizes_client()
                    .list(location, &self.config.subscription_id)
                    .send()
                    .await?
                    .into_body()
                    .await
            })
            .await?;
        let names = sizes.value.iter().filter_map(|s| s.name.clone()).collect();
        self.sizes
            .lock()
            .expect("sizes lock")
            .insert(location.to_owned(), names);
        Ok(sizes
            .value
            .into_iter()
            .filter_map(|s| {
                Some(Flavor {
                    name: s.name?,
                    cpu: s.number_of_cores.unwrap_or(0).max(0) as u32,
                    memory_mib: s.memory_in_mb.unwrap_or(0).max(0) as u64,
                    disk_gib: s.resource_disk_size_in_mb.unwrap_or(0).max(0) as u64 / 1024,
                    // This API tells neither GPUs nor prices.
                    gpu: 0,
                    price_per_hour: None,
                })
            })
            .collect())
    }

    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        Ok(self.config.regions.clone())
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Instance, ProviderError> {
        let location = self.region(spec.region.as_deref())?;
        let known = |sizes: &HashMap<String, Vec<String>>| {
            sizes
                .get(location)
                .is_some_and(|names| names.contains(&spec.flavor))
        };
        // A size not seen yet may be new: read the list again before refusing it.
        if !known(&self.sizes.lock().expect("sizes lock")) {
            self.flavors(Some(location)).await?;
        }
        if !known(&self.sizes.lock().expect("sizes lock")) {
            return Err(ProviderError::UnknownFlavor {
                provider: self.config.name.clone(),
                flavor: spec.flavor.clone(),
            });
        }
        if let Err(e) = self.create_all(spec, location).await {
            // Nothing created for this instance may stay behind (and bill).
            if let Err(cleanup) = self.delete_all(&spec.name).await {
                tracing::warn!(instance = spec.name, error = %cleanup, "cannot clean up a failed create");
            }
            return Err(e);
        }
        self.get(&InstanceId(spec.name.clone())).await
    }

    async fn get(&self, id: &InstanceId) -> Result<Instance, ProviderError> {
        let vm = self
            .read_vm(&id.0)
            .await?
            .filter(|vm| crate::is_owned(&tags_of(vm), &self.owner));
        let Some(vm) = vm else {
            return Err(ProviderError::NotFound {
                provider: self.config.name.clone(),
                instance: id.0.clone(),
            });
        };
        let address = self.address(&id.0).await?;
        Ok(self.instance(vm, address))
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self.get(id).await {
            Ok(_) => self.delete_all(&id.0).await,
            Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let vms = self
            .typed("list virtual machines", || async {
                let mut pages = self
                    .vms()
                    .list(&self.config.resource_group, &self.config.subscription_id)
                    .into_stream();
                let mut vms = Vec::new();
                while let Some(page) = pages.next().await {
                    vms.extend(page?.value);
                }
                Ok(vms)
            })
            .await?;
        Ok(vms
            .into_iter()
            .map(|vm| self.instance(vm, None))
            .filter(|i| crate::is_owned(&i.tags, &self.owner))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_urns_or_ids() {
        assert_eq!(
            image_reference("Debian:debian-12:12-gen2:latest")["offer"],
            "debian-12"
        );
        assert_eq!(
            image_reference("/subscriptions/s/images/i")["id"],
            "/subscriptions/s/images/i"
        );
    }
}
