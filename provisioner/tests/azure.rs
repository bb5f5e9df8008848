//! The Azure provider against a fake Azure Resource Manager on 127.0.0.1.
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
//!   `ResourceNotFound`, 409 `OperationNotAllowed` for a cores quota, `AllocationFailed`,
//!   429 `TooManyRequests` with `Retry-After`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use scitq_provisioner::azure::{AzureConfig, AzureProvider};
use scitq_provisioner::retry::RetryPolicy;
use scitq_provisioner::{
    ErrorClass, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, Provider,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SUB: &str = "00000000-1111-2222-3333-444444444444";
const RG: &str = "scitq-rg";
const LOCATION: &str = "westeurope";
const SUBNET: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/scitq-rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default";

struct Canned {
    method: Method,
    /// The path ends with this.
    suffix: String,
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

#[derive(Default)]
struct Arm {
    base: String,
    log: Vec<String>,
    /// Resources by ARM id (lowercase path).
    resources: BTreeMap<String, Value>,
    /// Operation id → (polls left before the end, final status body, what to do then).
    operations: HashMap<String, (u32, Value, Finish)>,
    canned: Vec<Canned>,
    next_op: u32,
    /// How the next VM creation ends (success when `None`).
    vm_outcome: Option<Value>,
}

#[derive(Clone)]
enum Finish {
    /// Set the resource's provisioningState to Succeeded.
    Provisioned(String),
    Deleted(String),
}

type Shared = Arc<Mutex<Arm>>;

struct Fake {
    addr: SocketAddr,
    arm: Shared,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arm = Arc::new(Mutex::new(Arm {
            base: format!("http://{addr}"),
            ..Arm::default()
        }));
        let app = Router::new().fallback(handle).with_state(arm.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, arm }
    }

    fn config(&self, secret: &str) -> AzureConfig {
        AzureConfig {
            name: "azure".to_owned(),
            tenant_id: TENANT.to_owned(),
            client_id: "app-id".to_owned(),
            client_secret: secret.to_owned(),
            subscription_id: SUB.to_owned(),
            resource_group: RG.to_owned(),
            regions: vec![LOCATION.to_owned()],
            subnet_id: SUBNET.to_owned(),
            admin_username: "scitq".to_owned(),
            spot: true,
            authority_host: format!("http://{}", self.addr),
            endpoint: format!("http://{}", self.addr),
            retry: RetryPolicy {
                timeout: Duration::from_secs(20),
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                max_retry_after: Duration::from_secs(2),
                max_retries: 3,
            },
            poll_interval: Duration::from_millis(10),
            operation_timeout: Duration::from_secs(30),
        }
    }

    fn can(
        &self,
        method: Method,
        suffix: &str,
        status: StatusCode,
        headers: Vec<(&'static str, String)>,
        body: Value,
    ) {
        self.arm.lock().unwrap().canned.push(Canned {
            method,
            suffix: suffix.to_owned(),
            status,
            headers,
            body,
        });
    }

    fn count(&self, prefix: &str) -> usize {
        self.arm
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    fn exists(&self, kind: &str, name: &str) -> bool {
        self.arm
            .lock()
            .unwrap()
            .resources
            .contains_key(&resource_path(kind, name))
    }

    fn resource(&self, kind: &str, name: &str) -> Value {
        self.arm.lock().unwrap().resources[&resource_path(kind, name)].clone()
    }

    /// A VM someone else created in the same resource group.
    fn add_foreign_vm(&self, name: &str, tags: Value) {
        let vm = json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"),
            "name": name, "type": "Microsoft.Compute/virtualMachines", "location": LOCATION,
            "tags": tags,
            "properties": {"provisioningState": "Succeeded", "hardwareProfile": {"vmSize": "Standard_D2s_v3"}}
        });
        self.arm
            .lock()
            .unwrap()
            .resources
            .insert(resource_path("Microsoft.Compute/virtualMachines", name), vm);
    }
}

fn resource_path(kind: &str, name: &str) -> String {
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
fn operation(arm: &mut Arm, provider: &str, end: Value, finish: Finish) -> String {
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
        arm.base
    )
}

async fn handle(
    State(arm): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut arm = arm.lock().unwrap();
    let path = uri.path().to_owned();
    arm.log.push(format!("{method} {path}"));
    if let Some(i) = arm
        .canned
        .iter()
        .position(|c| c.method == method && path.ends_with(&c.suffix))
    {
        let canned = arm.canned.remove(i);
        let mut response = json_response(canned.status, canned.body);
        for (k, v) in canned.headers {
            response.headers_mut().insert(k, v.parse().unwrap());
        }
        return response;
    }
    if path == format!("/{TENANT}/oauth2/v2.0/token") {
        let form = String::from_utf8_lossy(&body).into_owned();
        if !form.contains("client_secret=right-secret")
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
        return json_response(
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                "access_token": "fake-arm-token"}),
        );
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer fake-arm-token") {
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    let base = arm.base.clone();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segments.as_slice()) {
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
        ) => {
            let Some((left, end, finish)) = arm.operations.get(*id).cloned() else {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "no such operation",
                );
            };
            if left > 0 {
                arm.operations.get_mut(*id).unwrap().0 = left - 1;
                let mut response = json_response(StatusCode::OK, json!({"status": "InProgress"}));
                response
                    .headers_mut()
                    .insert("retry-after", "0".parse().unwrap());
                return response;
            }
            match finish {
                Finish::Provisioned(key) => {
                    if let Some(r) = arm.resources.get_mut(&key) {
                        r["properties"]["provisioningState"] =
                            json!(if end["status"] == "Succeeded" {
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
            let vms: Vec<Value> = arm
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
        ) => {
            let key = path.to_lowercase();
            let provider = namespace.to_string();
            match method.as_str() {
                "GET" => match arm.resources.get(&key) {
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
                    let mut resource = body.clone();
                    resource["id"] = json!(path.clone());
                    resource["name"] = json!(name);
                    resource["type"] = json!(format!("{namespace}/{kind}"));
                    resource["properties"]["provisioningState"] =
                        json!(if *namespace == "Microsoft.Compute" {
                            "Creating"
                        } else {
                            "Updating"
                        });
                    if *kind == "publicIPAddresses" {
                        resource["properties"]["ipAddress"] = json!("20.50.1.2");
                    }
                    arm.resources.insert(key.clone(), resource.clone());
                    let end = match *namespace {
                        "Microsoft.Compute" => arm.vm_outcome.take(),
                        _ => None,
                    }
                    .unwrap_or_else(|| json!({"status": "Succeeded"}));
                    let op = operation(&mut arm, &provider, end, Finish::Provisioned(key));
                    let mut response = json_response(StatusCode::CREATED, resource);
                    response
                        .headers_mut()
                        .insert("azure-asyncoperation", op.parse().unwrap());
                    response
                        .headers_mut()
                        .insert("retry-after", "0".parse().unwrap());
                    response
                }
                "DELETE" => {
                    if !arm.resources.contains_key(&key) {
                        return StatusCode::NO_CONTENT.into_response();
                    }
                    let op = operation(
                        &mut arm,
                        &provider,
                        json!({"status": "Succeeded"}),
                        Finish::Deleted(key),
                    );
                    let mut response = StatusCode::ACCEPTED.into_response();
                    response
                        .headers_mut()
                        .insert("azure-asyncoperation", op.parse().unwrap());
                    response
                        .headers_mut()
                        .insert("location", format!("{base}/unused").parse().unwrap());
                    response
                }
                _ => arm_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "no"),
            }
        }
        _ => {
            eprintln!("[fake arm] unhandled {method} {uri}");
            arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "unknown path")
        }
    }
}

fn spec(name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        flavor: "Standard_D2s_v3".to_owned(),
        image: "Debian:debian-12:12-gen2:latest".to_owned(),
        region: None,
        network: None,
        ssh_key: Some("ssh-ed25519 AAAAC3Nza test".to_owned()),
        user_data: Some("#cloud-config\nruncmd: [echo hi]\n".to_owned()),
        tags: BTreeMap::from([("batch".to_owned(), "b1".to_owned())]),
    }
}

fn owner() -> OwnerId {
    OwnerId::new("scitqd-1").unwrap()
}

const VM: &str = "Microsoft.Compute/virtualMachines";
const NIC: &str = "Microsoft.Network/networkInterfaces";
const IP: &str = "Microsoft.Network/publicIPAddresses";

#[tokio::test]
async fn a_vm_is_created_by_following_its_operations_and_deleted_with_all_it_owns() {
    let fake = Fake::start().await;
    fake.add_foreign_vm("not-ours", json!({}));
    fake.add_foreign_vm("other-scitq", json!({OWNER_TAG: "scitqd-2"}));
    let provider = AzureProvider::connect(fake.config("right-secret"), owner())
        .await
        .unwrap();

    let flavors = provider.flavors(None).await.unwrap();
    let d2 = flavors
        .iter()
        .find(|f| f.name == "Standard_D2s_v3")
        .unwrap();
    assert_eq!((d2.cpu, d2.memory_mib, d2.disk_gib), (2, 8192, 16));

    let created = provider.create(&spec("w1")).await.unwrap();
    assert_eq!(created.state, InstanceState::Running);
    assert_eq!(created.address, Some("20.50.1.2".parse().unwrap()));
    assert_eq!(created.flavor.as_deref(), Some("Standard_D2s_v3"));
    assert_eq!(
        created.tags.get(OWNER_TAG).map(String::as_str),
        Some("scitqd-1")
    );

    // The PUT was sent once; its operation was polled until it ended.
    let vm_path = format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{VM}/w1");
    assert_eq!(fake.count(&format!("PUT {vm_path}")), 1);
    assert!(fake.count("GET /subscriptions/00000000-1111-2222-3333-444444444444/providers/Microsoft.Compute/locations/westeurope/operations/") >= 2);

    // What ARM received.
    let vm = fake.resource(VM, "w1");
    let properties = &vm["properties"];
    assert_eq!(vm["tags"], json!({OWNER_TAG: "scitqd-1", "batch": "b1"}));
    assert_eq!(properties["priority"], "Spot");
    assert_eq!(properties["evictionPolicy"], "Delete");
    assert_eq!(
        properties["storageProfile"]["imageReference"]["sku"],
        "12-gen2"
    );
    assert_eq!(
        properties["storageProfile"]["osDisk"]["deleteOption"],
        "Delete"
    );
    let custom = properties["osProfile"]["customData"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(custom)
            .unwrap(),
        b"#cloud-config\nruncmd: [echo hi]\n"
    );
    assert_eq!(
        properties["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["path"],
        "/home/scitq/.ssh/authorized_keys"
    );
    let nic = fake.resource(NIC, "w1-nic");
    assert_eq!(
        properties["networkProfile"]["networkInterfaces"][0]["id"],
        nic["id"]
    );
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"],
        SUBNET
    );

    // Another VM of a size already seen: no size lookup.
    let sizes = "GET /subscriptions/00000000-1111-2222-3333-444444444444/providers/Microsoft.Compute/locations/westeurope/vmSizes";
    assert_eq!(
        fake.count(sizes),
        1,
        "flavors() read them, create used them"
    );
    let second = provider.create(&spec("w2")).await.unwrap();
    assert_eq!(fake.count(sizes), 1);
    provider.delete(&second.id).await.unwrap();

    // Only ours is listed; the others are neither read nor deleted.
    let listed = provider.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["w1"]
    );
    for foreign in ["not-ours", "other-scitq"] {
        let id = InstanceId(foreign.to_owned());
        assert_eq!(
            provider.get(&id).await.unwrap_err().class(),
            ErrorClass::NotFound
        );
        provider.delete(&id).await.unwrap();
        assert!(fake.exists(VM, foreign));
    }
    assert_eq!(
        fake.count("DELETE"),
        3,
        "only w2's VM, NIC and IP were deleted"
    );

    provider.delete(&created.id).await.unwrap();
    for (kind, name) in [(VM, "w1"), (NIC, "w1-nic"), (IP, "w1-ip")] {
        assert!(!fake.exists(kind, name), "{kind}/{name} is left");
    }
    assert_eq!(
        provider.get(&created.id).await.unwrap_err().class(),
        ErrorClass::NotFound
    );
    provider.delete(&created.id).await.unwrap();
    assert_eq!(fake.count("DELETE"), 6);
}

#[tokio::test]
async fn a_quota_refusal_or_an_allocation_failure_leaves_nothing_behind() {
    let fake = Fake::start().await;
    let provider = AzureProvider::connect(fake.config("right-secret"), owner())
        .await
        .unwrap();
    fake.can(
        Method::PUT,
        "/virtualMachines/w1",
        StatusCode::CONFLICT,
        vec![],
        json!({"error": {"code": "OperationNotAllowed",
            "message": "Operation could not be completed as it results in exceeding approved Total Regional Cores quota. Additional details - Deployment Model: Resource Manager, Location: westeurope, Current Limit: 10, Current Usage: 10, Additional Required: 2, (Minimum) New Limit Required: 12."}}),
    );
    let err = provider.create(&spec("w1")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Quota, "{err}");
    assert!(
        err.to_string().contains("Total Regional Cores quota"),
        "{err}"
    );
    assert!(!fake.exists(NIC, "w1-nic") && !fake.exists(IP, "w1-ip"));

    // Accepted, then the operation fails for lack of capacity.
    fake.arm.lock().unwrap().vm_outcome = Some(json!({"status": "Failed", "error": {
        "code": "AllocationFailed",
        "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region."}}));
    let err = provider.create(&spec("w2")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Capacity, "{err}");
    for (kind, name) in [(VM, "w2"), (NIC, "w2-nic"), (IP, "w2-ip")] {
        assert!(
            !fake.exists(kind, name),
            "{kind}/{name} is left after a failed create"
        );
    }
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_and_bad_input_is_classified() {
    let fake = Fake::start().await;
    let provider = AzureProvider::connect(fake.config("right-secret"), owner())
        .await
        .unwrap();
    fake.can(
        Method::PUT,
        "/publicIPAddresses/w1-ip",
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "1".to_owned())],
        json!({"error": {"code": "TooManyRequests",
            "message": "The request is being throttled as the limit has been reached for operation type - Write_ObservationWindow_00:05:00."}}),
    );
    provider.create(&spec("w1")).await.unwrap();
    assert_eq!(
        fake.count(&format!(
            "PUT /subscriptions/{SUB}/resourceGroups/{RG}/providers/{IP}/w1-ip"
        )),
        2
    );

    let err = provider
        .create(&InstanceSpec {
            flavor: "Standard_Z99".to_owned(),
            ..spec("w2")
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownFlavor);
    assert_eq!(fake.count("PUT /subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/scitq-rg/providers/Microsoft.Network/publicIPAddresses/w2-ip"), 0);

    let err = AzureProvider::connect(fake.config("wrong-secret"), owner())
        .await
        .err()
        .expect("a wrong secret is refused");
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
}
