//! Nova server calls read here (status, `Retry-After` and the fault body kept), through the
//! crate's authenticated session. Wire format: Compute API v2.1
//! (<https://docs.openstack.org/api-ref/compute/>): `POST /servers`, `GET /servers/{id}`,
//! `DELETE /servers/{id}`, `GET /servers/detail`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use osauth::Session;
use osauth::services::COMPUTE;
use serde::Deserialize;
use serde_json::json;

use super::{OpenStackConfig, classify};
use crate::error::parse_retry_after;
use crate::retry::{self, Idempotency};
use crate::{Instance, InstanceId, InstanceSpec, InstanceState, ProviderError};

/// Page size of server listings.
const PAGE: usize = 200;

/// Ids the crate resolved for a new server.
#[derive(Clone)]
pub(super) struct References {
    pub flavor_id: String,
    pub image_id: String,
    pub network_id: Option<String>,
    pub key_name: Option<String>,
}

pub(super) struct CreateRequest {
    pub name: String,
    pub references: References,
    pub metadata: BTreeMap<String, String>,
    /// Base64, as Nova wants it.
    pub user_data: Option<String>,
}

pub(super) struct Nova<'a> {
    config: &'a OpenStackConfig,
    session: &'a Session,
    region: &'a str,
}

/// A response read whole: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

#[derive(Deserialize)]
struct ServerRoot {
    server: Server,
}

#[derive(Deserialize)]
struct ServersRoot {
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct CreatedRoot {
    server: Created,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct Server {
    id: String,
    name: String,
    status: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<Address>>,
    #[serde(default, rename = "accessIPv4")]
    access_ipv4: String,
    #[serde(default)]
    flavor: Option<FlavorField>,
    #[serde(default)]
    fault: Option<Fault>,
}

#[derive(Deserialize)]
struct Address {
    addr: String,
    #[serde(default)]
    version: u8,
}

/// `{"id": ...}` before microversion 2.47, `{"original_name": ...}` after.
#[derive(Deserialize)]
struct FlavorField {
    id: Option<String>,
    original_name: Option<String>,
}

#[derive(Deserialize)]
struct Fault {
    message: String,
}

impl<'a> Nova<'a> {
    pub(super) fn new(
        config: &'a OpenStackConfig,
        session: &'a Session,
        region: &'a str,
    ) -> Nova<'a> {
        Nova {
            config,
            session,
            region,
        }
    }

    fn provider(&self) -> String {
        self.config.name.clone()
    }

    /// `POST /servers`; returns the new server's id. Re-sent only when throttled.
    pub(super) async fn create(
        &self,
        request: &CreateRequest,
    ) -> Result<InstanceId, ProviderError> {
        super::check_metadata(&self.config.name, &request.metadata)?;
        let refs = &request.references;
        let mut server = json!({
            "name": request.name,
            "flavorRef": refs.flavor_id,
            "imageRef": refs.image_id,
            "metadata": request.metadata,
        });
        // Without a network Nova picks the project's only one (or refuses if several).
        server["networks"] = match &refs.network_id {
            Some(id) => json!([{ "uuid": id }]),
            None => json!("auto"),
        };
        if let Some(key) = &refs.key_name {
            server["key_name"] = json!(key);
        }
        if let Some(user_data) = &request.user_data {
            server["user_data"] = json!(user_data);
        }
        let body = json!({ "server": server });
        let operation = "create server";
        let answer = self
            .call(operation, Idempotency::NotIdempotent, || {
                self.session.post(COMPUTE, ["servers"]).json(&body)
            })
            .await?;
        if answer.status != 202 && answer.status != 200 {
            return Err(self.error(operation, &answer));
        }
        let created: CreatedRoot = self.parse(operation, &answer.body)?;
        Ok(InstanceId(created.server.id))
    }

    /// `GET /servers/{id}`; `None` when Nova does not know it (or it is deleted).
    pub(super) async fn show(&self, id: &InstanceId) -> Result<Option<Instance>, ProviderError> {
        let operation = "show server";
        let answer = self
            .call(operation, Idempotency::Idempotent, || {
                self.session.get(COMPUTE, ["servers", id.0.as_str()])
            })
            .await?;
        match answer.status {
            200 => {
                let root: ServerRoot = self.parse(operation, &answer.body)?;
                Ok(self.instance(root.server))
            }
            404 => Ok(None),
            _ => Err(self.error(operation, &answer)),
        }
    }

    /// `DELETE /servers/{id}`; a server already gone is not an error.
    pub(super) async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let operation = "delete server";
        let answer = self
            .call(operation, Idempotency::Idempotent, || {
                self.session.delete(COMPUTE, ["servers", id.0.as_str()])
            })
            .await?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.error(operation, &answer)),
        }
    }

    /// `GET /servers/detail`, every page (`limit` and `marker`).
    pub(super) async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let operation = "list servers";
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let answer = self
                .call(operation, Idempotency::Idempotent, || {
                    let mut query = vec![("limit", PAGE.to_string())];
                    if let Some(m) = &marker {
                        query.push(("marker", m.clone()));
                    }
                    self.session
                        .get(COMPUTE, ["servers", "detail"])
                        .query(&query)
                })
                .await?;
            if answer.status != 200 {
                return Err(self.error(operation, &answer));
            }
            let root: ServersRoot = self.parse(operation, &answer.body)?;
            let full_page = root.servers.len() >= PAGE;
            marker = root.servers.last().map(|s| s.id.clone());
            found.extend(root.servers.into_iter().filter_map(|s| self.instance(s)));
            if !full_page || marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Sends a request (rebuilt for each attempt) with the provider's timeout and retries;
    /// throttling and 5xx answers become retryable errors, other answers are returned.
    async fn call<B>(
        &self,
        operation: &'static str,
        idempotency: Idempotency,
        build: B,
    ) -> Result<Answer, ProviderError>
    where
        B: Fn() -> osauth::ServiceRequestBuilder<osauth::services::ComputeService>,
    {
        let provider = &self.config.name;
        retry::call(&self.config.retry, provider, operation, idempotency, || {
            let request = build();
            async move {
                let response = request
                    .send_unchecked()
                    .await
                    .map_err(|e| classify(provider, operation, e))?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .text()
                    .await
                    .map_err(|e| ProviderError::Connection {
                        provider: provider.clone(),
                        operation,
                        detail: e.to_string(),
                    })?;
                let answer = Answer {
                    status,
                    retry_after,
                    body,
                };
                if status == 429 || status >= 500 || is_rate_limit(&answer) {
                    return Err(self.error(operation, &answer));
                }
                Ok(answer)
            }
        })
        .await
    }

    /// Classifies an error answer from its status and Nova's fault body
    /// (`{"forbidden": {"code": 403, "message": "Quota exceeded for ..."}}`).
    fn error(&self, operation: &'static str, answer: &Answer) -> ProviderError {
        let provider = self.provider();
        let message = fault_message(&answer.body);
        let detail = format!("http {}: {message}", answer.status);
        let quota = message.to_lowercase().contains("quota");
        match answer.status {
            401 => ProviderError::Auth { provider, detail },
            403 | 413 if quota => ProviderError::Quota { provider, detail },
            413 | 429 => ProviderError::Throttled {
                provider,
                operation,
                retry_after: answer.retry_after.as_deref().and_then(parse_retry_after),
                detail,
            },
            404 => ProviderError::NotFound {
                provider,
                instance: detail,
            },
            500..=599 => ProviderError::ServerError {
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

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        body: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_str(body).map_err(|e| ProviderError::BadResponse {
            provider: self.provider(),
            operation,
            detail: e.to_string(),
        })
    }

    fn instance(&self, server: Server) -> Option<Instance> {
        let state = match server.status.as_str() {
            "BUILD" | "REBUILD" => InstanceState::Creating,
            "ACTIVE" => InstanceState::Running,
            "SHUTOFF" | "STOPPED" | "SUSPENDED" | "PAUSED" | "SHELVED" | "SHELVED_OFFLOADED" => {
                InstanceState::Stopped
            }
            "ERROR" => InstanceState::Failed(
                server
                    .fault
                    .map_or_else(|| "no fault given".to_owned(), |f| f.message),
            ),
            // Gone as far as scitq is concerned.
            "DELETED" | "SOFT_DELETED" => return None,
            other => InstanceState::Other(other.to_owned()),
        };
        Some(Instance {
            id: InstanceId(server.id),
            name: server.name,
            flavor: server.flavor.and_then(|f| f.original_name.or(f.id)),
            region: Some(self.region.to_owned()),
            state,
            address: address(&server.access_ipv4, &server.addresses),
            tags: server.metadata,
        })
    }
}

/// A 413 that is a rate limit (older Nova), not a quota.
fn is_rate_limit(answer: &Answer) -> bool {
    answer.status == 413 && !fault_message(&answer.body).to_lowercase().contains("quota")
}

/// `accessIPv4`, else the first IPv4 address, else the first address.
fn address(access_ipv4: &str, addresses: &BTreeMap<String, Vec<Address>>) -> Option<IpAddr> {
    if let Ok(ip) = access_ipv4.parse() {
        return Some(ip);
    }
    let all: Vec<&Address> = addresses.values().flatten().collect();
    all.iter()
        .find(|a| a.version == 4)
        .or(all.first())
        .and_then(|a| a.addr.parse().ok())
}

/// Nova's fault message: `{"<kind>": {"code": N, "message": "..."}}`; the body otherwise.
fn fault_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    serde_json::from_str::<BTreeMap<String, Inner>>(body)
        .ok()
        .and_then(|m| m.into_values().next())
        .map_or_else(|| body.trim().to_owned(), |i| i.message)
}

/// What is known of a server Nova accepted but that could not be shown right after.
pub(super) fn just_created(
    id: InstanceId,
    spec: &InstanceSpec,
    region: &str,
    tags: BTreeMap<String, String>,
) -> Instance {
    Instance {
        name: spec.name.clone(),
        id,
        flavor: Some(spec.flavor.clone()),
        region: Some(region.to_owned()),
        state: InstanceState::Creating,
        address: None,
        tags,
    }
}
