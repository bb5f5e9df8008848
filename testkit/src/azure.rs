//! A fake Azure: the Microsoft identity platform's token endpoint and Azure Resource Manager
//! under one address, for the calls `azure_identity`, `azure_mgmt_compute` and scitq's ARM
//! client make.
//!
//! Each fake response follows Microsoft's documentation (https://learn.microsoft.com/):
//! - Microsoft identity platform, "OAuth 2.0 client credentials flow" (`POST
//!   /{tenant}/oauth2/v2.0/token`: `access_token`, `expires_in`; 401 `invalid_client` with an
//!   `AADSTS7000215` description on a bad secret).
//! - Azure REST API, "Track asynchronous Azure operations": a PUT or DELETE answered 201/202
//!   with `Azure-AsyncOperation` (and `Retry-After`), whose status resource reads
//!   `{"status": "InProgress"}` then `Succeeded` or `Failed` with an `error` object.
//! - Compute REST API 2024-07-01: "Virtual Machines - Create Or Update / Get / List / Delete",
//!   "Virtual Machine Sizes - List".
//! - Network REST API 2024-05-01: "Public IP Addresses - Create Or Update / Get / Delete",
//!   "Network Interfaces - Create Or Update / Delete".
//! - "Azure Resource Manager error codes" / "Request limits and throttling": error bodies
//!   `{"error": {"code", "message"}}` (401 `InvalidAuthenticationToken`, 404
//!   `ResourceNotFound`; the tests can 409 `OperationNotAllowed` for a cores quota,
//!   `AllocationFailed` ([`Arm::vm_outcome`]), 429 `TooManyRequests` with `Retry-After`).
//!
//! The subscription: tenant [`TENANT`], subscription [`SUB`], resource group [`RG`] in
//! [`LOCATION`], subnet [`SUBNET`]; the client secret [`CLIENT_SECRET`] is the right one.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake::{FakeServer, FakeState, Request, with_header};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SUB: &str = "00000000-1111-2222-3333-444444444444";
pub const RG: &str = "scitq-rg";
pub const LOCATION: &str = "westeurope";
pub const SUBNET: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/scitq-rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default";
pub const CLIENT_SECRET: &str = "right-secret";
pub const VM: &str = "Microsoft.Compute/virtualMachines";
pub const NIC: &str = "Microsoft.Network/networkInterfaces";
pub const IP: &str = "Microsoft.Network/publicIPAddresses";

/// What Resource Manager holds.
#[derive(Default)]
pub struct Arm {
    /// Resources by ARM id (lowercase path).
    pub resources: BTreeMap<String, Value>,
    /// Operation id → (polls left before the end, final status body, what to do then).
    operations: HashMap<String, (u32, Value, Finish)>,
    next_op: u32,
    /// How the next VM creation's operation ends (success when `None`).
    pub vm_outcome: Option<Value>,
}

#[derive(Clone)]
enum Finish {
    /// Set the resource's provisioningState to Succeeded (or Failed).
    Provisioned(String),
    Deleted(String),
}

pub type FakeAzure = FakeServer<Arm>;

/// Starts the fake on the current runtime.
pub async fn start() -> FakeAzure {
    FakeServer::start(Arm::default(), route).await
}

impl FakeServer<Arm> {
    pub fn exists(&self, kind: &str, name: &str) -> bool {
        self.lock()
            .cloud
            .resources
            .contains_key(&resource_path(kind, name))
    }

    pub fn resource(&self, kind: &str, name: &str) -> Value {
        self.lock().cloud.resources[&resource_path(kind, name)].clone()
    }

    /// A VM someone else created in the same resource group.
    pub fn add_foreign_vm(&self, name: &str, tags: Value) {
        let vm = json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{VM}/{name}"),
            "name": name, "type": VM, "location": LOCATION,
            "tags": tags,
            "properties": {"provisioningState": "Succeeded", "hardwareProfile": {"vmSize": "Standard_D2s_v3"}}
        });
        self.lock()
            .cloud
            .resources
            .insert(resource_path(VM, name), vm);
    }
}

/// The key of a resource of `kind` (`Namespace/type`) named `name` in the resource group.
pub fn resource_path(kind: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourcegroups/{RG}/providers/{kind}/{name}").to_lowercase()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

/// Starts an operation that reads `InProgress` once, then `end` (and applies `finish`).
fn operation(state: &mut FakeState<Arm>, provider: &str, end: Value, finish: Finish) -> String {
    let arm = &mut state.cloud;
    arm.next_op += 1;
    let id = format!("op-{}", arm.next_op);
    arm.operations.insert(id.clone(), (1, end, finish));
    let api = if provider == "Microsoft.Compute" {
        "2024-07-01"
    } else {
        "2024-05-01"
    };
    format!(
        "{}/subscriptions/{SUB}/providers/{provider}/locations/{LOCATION}/operations/{id}?api-version={api}",
        state.base
    )
}

fn token(request: &Request) -> Response {
    let form = String::from_utf8_lossy(&request.body).into_owned();
    if !form.contains(&format!("client_secret={CLIENT_SECRET}"))
        || !form.contains("grant_type=client_credentials")
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                "error_codes": [7000215], "timestamp": "2026-12-06 22:00:00Z",
                "trace_id": "0000", "correlation_id": "0000"}),
        );
    }
    json_response(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "fake-arm-token"}),
    )
}

fn route(state: &mut FakeState<Arm>, request: &Request) -> Response {
    if request.path == format!("/{TENANT}/oauth2/v2.0/token") {
        return token(request);
    }
    let bearer = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if bearer != Some("Bearer fake-arm-token") {
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    let segments = request.segments();
    match (request.method.as_str(), segments.as_slice()) {
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "Microsoft.Compute",
                "locations",
                _,
                "vmSizes",
            ],
        ) => json_response(
            StatusCode::OK,
            json!({"value": [
                {"name": "Standard_D2s_v3", "numberOfCores": 2, "osDiskSizeInMB": 1047552,
                    "resourceDiskSizeInMB": 16384, "memoryInMB": 8192, "maxDataDiskCount": 4},
                {"name": "Standard_E8s_v5", "numberOfCores": 8, "osDiskSizeInMB": 1047552,
                    "resourceDiskSizeInMB": 0, "memoryInMB": 65536, "maxDataDiskCount": 16}]}),
        ),
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                _,
                "locations",
                _,
                "operations",
                id,
            ],
        ) => poll_operation(&mut state.cloud, id),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourceGroups",
                _,
                "providers",
                "Microsoft.Compute",
                "virtualMachines",
            ],
        ) => {
            let vms: Vec<Value> = state
                .cloud
                .resources
                .iter()
                .filter(|(k, _)| k.contains("/microsoft.compute/virtualmachines/"))
                .map(|(_, v)| v.clone())
                .collect();
            json_response(StatusCode::OK, json!({"value": vms}))
        }
        (
            _,
            [
                "subscriptions",
                _,
                "resourceGroups",
                _,
                "providers",
                namespace,
                kind,
                name,
            ],
        ) => resource(state, request, namespace, kind, name),
        _ => {
            eprintln!("[fake arm] unhandled {} {}", request.method, request.uri);
            arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "unknown path")
        }
    }
}

fn poll_operation(arm: &mut Arm, id: &str) -> Response {
    let Some((left, end, finish)) = arm.operations.get(id).cloned() else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "no such operation",
        );
    };
    if left > 0 {
        if let Some(op) = arm.operations.get_mut(id) {
            op.0 = left - 1;
        }
        return with_header(
            json_response(StatusCode::OK, json!({"status": "InProgress"})),
            "retry-after",
            "0",
        );
    }
    match finish {
        Finish::Provisioned(key) => {
            if let Some(r) = arm.resources.get_mut(&key) {
                r["properties"]["provisioningState"] = json!(if end["status"] == "Succeeded" {
                    "Succeeded"
                } else {
                    "Failed"
                });
            }
        }
        Finish::Deleted(key) => {
            arm.resources.remove(&key);
        }
    }
    json_response(StatusCode::OK, end)
}

/// GET, PUT or DELETE of one resource in the resource group.
fn resource(
    state: &mut FakeState<Arm>,
    request: &Request,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Response {
    let key = request.path.to_lowercase();
    match request.method.as_str() {
        "GET" => match state.cloud.resources.get(&key) {
            Some(r) => json_response(StatusCode::OK, r.clone()),
            None => arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource '{namespace}/{kind}/{name}' under resource group '{RG}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            ),
        },
        "PUT" => {
            let mut resource = request.json();
            resource["id"] = json!(request.path.clone());
            resource["name"] = json!(name);
            resource["type"] = json!(format!("{namespace}/{kind}"));
            resource["properties"]["provisioningState"] =
                json!(if namespace == "Microsoft.Compute" {
                    "Creating"
                } else {
                    "Updating"
                });
            if kind == "publicIPAddresses" {
                resource["properties"]["ipAddress"] = json!("20.50.1.2");
            }
            state.cloud.resources.insert(key.clone(), resource.clone());
            let end = match namespace {
                "Microsoft.Compute" => state.cloud.vm_outcome.take(),
                _ => None,
            }
            .unwrap_or_else(|| json!({"status": "Succeeded"}));
            let op = operation(state, namespace, end, Finish::Provisioned(key));
            let response = with_header(
                json_response(StatusCode::CREATED, resource),
                "azure-asyncoperation",
                &op,
            );
            with_header(response, "retry-after", "0")
        }
        "DELETE" => {
            if !state.cloud.resources.contains_key(&key) {
                return StatusCode::NO_CONTENT.into_response();
            }
            let op = operation(
                state,
                namespace,
                json!({"status": "Succeeded"}),
                Finish::Deleted(key),
            );
            let base = state.base.clone();
            let response = with_header(
                StatusCode::ACCEPTED.into_response(),
                "azure-asyncoperation",
                &op,
            );
            with_header(response, "location", &format!("{base}/unused"))
        }
        _ => arm_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "no"),
    }
}
