//! The OpenStack provider against a fake cloud on 127.0.0.1 that answers as the real APIs do.
//!
//! Each fake response follows the OpenStack API reference (https://docs.openstack.org/api-ref/):
//! - Keystone, Identity API v3, "Password authentication with scoped authorization" and
//!   "Authenticating with an Application Credential" (`POST /v3/auth/tokens`: 201, the token in
//!   `X-Subject-Token`, the service catalog in the body; 401 with an `error` body on bad
//!   credentials).
//! - Nova, Compute API v2.1: "Show Details of Specific API Version" (`GET /v2.1`), "List Flavors
//!   With Details" / "Show Flavor Details" (`extra_specs` from microversion 2.61), "Show Keypair
//!   Details", "Create Server" (202 with `id`, `links`, `adminPass`), "Show Server Details",
//!   "List Servers Detailed" (`limit`, `marker`), "Delete Server" (204), and the fault bodies of
//!   "Compute API Errors": `{"itemNotFound": {...}}`, `{"forbidden": {"code": 403, "message":
//!   "Quota exceeded for ..."}}`, `{"overLimit": {...}}` (413 quota, 429 rate limit with
//!   `Retry-After`).
//! - Glance, Image API v2: version list (`GET /image/`), "Show image", "List images" (`name`).
//! - Neutron, Networking API v2.0: version list (`GET /network/`), "Show network details",
//!   "List networks" (`name`).

mod common;

use std::collections::{BTreeMap, VecDeque};
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

use scitq_provisioner::openstack::{Credentials, OpenStackConfig, OpenStackProvider};
use scitq_provisioner::retry::RetryPolicy;
use scitq_provisioner::{
    ErrorClass, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, Provider,
};

const FLAVOR_ID: &str = "5c1c3e54-7e8b-4d2a-9a33-0f1b2b4a9c01";
const GPU_FLAVOR_ID: &str = "9d0e4f1a-2b3c-4d5e-8f90-a1b2c3d4e5f6";
const IMAGE_ID: &str = "70a599e0-31e7-49b7-b260-868f441e862b";
const NETWORK_ID: &str = "3cb9bc59-5699-4588-a4b1-b87f96708bc6";
const REGION: &str = "GRA11";

/// A canned answer the fake gives to the next matching request.
struct Canned {
    method: Method,
    path: &'static str,
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

#[derive(Default)]
struct Cloud {
    base: String,
    /// Method and path (with query) of every request, in order.
    log: Vec<String>,
    /// Bodies of `POST /servers`.
    creates: Vec<Value>,
    servers: BTreeMap<String, Value>,
    canned: VecDeque<Canned>,
    next_id: u32,
}

type Shared = Arc<Mutex<Cloud>>;

struct Fake {
    addr: SocketAddr,
    cloud: Shared,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cloud = Arc::new(Mutex::new(Cloud {
            base: format!("http://{addr}"),
            ..Cloud::default()
        }));
        let app = Router::new().fallback(handle).with_state(cloud.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, cloud }
    }

    fn config(&self, credentials: Credentials) -> OpenStackConfig {
        OpenStackConfig {
            name: "ovh".to_owned(),
            auth_url: format!("http://{}/identity/v3", self.addr),
            credentials,
            regions: vec![REGION.to_owned()],
            retry: RetryPolicy {
                timeout: Duration::from_secs(20),
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                max_retry_after: Duration::from_secs(2),
                max_retries: 3,
            },
        }
    }

    fn can(&self, canned: Canned) {
        self.cloud.lock().unwrap().canned.push_back(canned);
    }

    fn count(&self, request: &str) -> usize {
        self.cloud
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.as_str() == request)
            .count()
    }

    /// A server someone else (or another scitq) created in the same project.
    fn add_foreign(&self, id: &str, metadata: Value) {
        let mut cloud = self.cloud.lock().unwrap();
        let server = server_json(id, "not-ours", "ACTIVE", metadata, &cloud.base);
        cloud.servers.insert(id.to_owned(), server);
    }
}

fn password() -> Credentials {
    Credentials::Password {
        user: "user-abc".to_owned(),
        password: "s3cret".to_owned(),
        user_domain: "Default".to_owned(),
        project: "proj".to_owned(),
        project_domain: "Default".to_owned(),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"itemNotFound": {"code": 404, "message": format!("{what} could not be found.")}}),
    )
}

fn server_json(id: &str, name: &str, status: &str, metadata: Value, base: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "status": status,
        "tenant_id": "6f70656e737461636b20342065766572",
        "user_id": "fake",
        "metadata": metadata,
        "hostId": "",
        "image": {"id": IMAGE_ID, "links": []},
        "flavor": {"id": FLAVOR_ID, "links": []},
        "created": "2026-12-06T22:00:00Z",
        "updated": "2026-12-06T22:00:00Z",
        "addresses": {},
        "accessIPv4": "",
        "accessIPv6": "",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/servers/{id}")}],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-STS:power_state": 0,
        "OS-EXT-STS:task_state": null,
        "OS-EXT-STS:vm_state": "building",
        "config_drive": "",
        "key_name": null,
        "progress": 0,
        "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": []
    })
}

fn flavors(base: &str) -> Value {
    let flavor = |id: &str, name: &str, vcpus: u32, ram: u64, disk: u64, extra: Value| {
        json!({
            "id": id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
            "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false, "swap": 0,
            "rxtx_factor": 1.0, "os-flavor-access:is_public": true, "description": null,
            "extra_specs": extra,
            "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/flavors/{id}")}]
        })
    };
    json!([
        flavor(FLAVOR_ID, "b3-8", 2, 8192, 50, json!({})),
        flavor(
            GPU_FLAVOR_ID,
            "t2-45",
            15,
            46080,
            400,
            json!({"pci_passthrough:alias": "v100:1"})
        ),
    ])
}

fn image_json() -> Value {
    json!({
        "id": IMAGE_ID, "name": "Debian 12", "status": "active", "visibility": "public",
        "container_format": "bare", "disk_format": "qcow2", "size": 2147483648u64,
        "min_disk": 0, "min_ram": 0, "protected": false, "tags": [],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "checksum": "ffffffffffffffffffffffffffffffff", "owner": "admin",
        "file": format!("/v2/images/{IMAGE_ID}/file"), "self": format!("/v2/images/{IMAGE_ID}"),
        "schema": "/v2/schemas/image", "os_hidden": false
    })
}

fn network_json() -> Value {
    json!({
        "id": NETWORK_ID, "name": "Ext-Net", "admin_state_up": true, "status": "ACTIVE",
        "subnets": [], "shared": true, "project_id": "admin", "tenant_id": "admin",
        "mtu": 1500, "port_security_enabled": true, "router:external": false,
        "availability_zones": ["nova"], "availability_zone_hints": [], "tags": [],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "revision_number": 1, "ipv4_address_scope": null, "ipv6_address_scope": null,
        "description": "", "is_default": false, "qos_policy_id": null, "l2_adjacency": true,
        "dns_domain": ""
    })
}

fn catalog(base: &str) -> Value {
    let service = |kind: &str, name: &str, url: String| {
        json!({
            "type": kind, "name": name, "id": format!("{kind}-id"),
            "endpoints": [{"id": format!("{kind}-public"), "interface": "public",
                "region": REGION, "region_id": REGION, "url": url}]
        })
    };
    json!([
        service("identity", "keystone", format!("{base}/identity/v3")),
        service("compute", "nova", format!("{base}/compute/v2.1")),
        service("image", "glance", format!("{base}/image")),
        service("network", "neutron", format!("{base}/network")),
    ])
}

async fn handle(
    State(cloud): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cloud = cloud.lock().unwrap();
    let path = uri.path().trim_end_matches('/').to_owned();
    let line = match uri.query() {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    };
    cloud.log.push(line);
    if let Some(i) = cloud
        .canned
        .iter()
        .position(|c| c.method == method && c.path == path)
    {
        let canned = cloud.canned.remove(i).unwrap();
        let mut response = json_response(canned.status, canned.body);
        for (k, v) in canned.headers {
            response.headers_mut().insert(k, v.parse().unwrap());
        }
        return response;
    }
    let base = cloud.base.clone();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path != "/identity/v3/auth/tokens" && !headers.contains_key("x-auth-token") {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}),
        );
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["identity", "v3", "auth", "tokens"]) => token(&body, &base),
        ("GET", ["compute", "v2.1"]) => json_response(
            StatusCode::OK,
            json!({"version": {"id": "v2.1", "status": "CURRENT", "version": "2.79",
                "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
                "media-types": [{"base": "application/json",
                    "type": "application/vnd.openstack.compute+json;version=2.1"}]}}),
        ),
        ("GET", ["compute", "v2.1", "flavors", "detail"]) => {
            // Paged by `limit` and `marker` (the id of the last flavor seen).
            let query = query_of(&uri);
            let all = flavors(&base);
            let all = all.as_array().unwrap();
            let start = query
                .get("marker")
                .and_then(|m| all.iter().position(|f| f["id"] == m.as_str()))
                .map_or(0, |i| i + 1);
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1000);
            let page: Vec<&Value> = all.iter().skip(start).take(limit).collect();
            json_response(StatusCode::OK, json!({"flavors": page}))
        }
        ("GET", ["compute", "v2.1", "flavors"]) => {
            let list: Vec<Value> = flavors(&base)
                .as_array()
                .unwrap()
                .iter()
                .map(|f| json!({"id": f["id"], "name": f["name"], "links": f["links"]}))
                .collect();
            json_response(StatusCode::OK, json!({"flavors": list}))
        }
        ("GET", ["compute", "v2.1", "flavors", id]) => {
            match flavors(&base)
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["id"] == *id)
            {
                Some(f) => json_response(StatusCode::OK, json!({"flavor": f})),
                None => not_found(&format!("Flavor {id}")),
            }
        }
        ("GET", ["compute", "v2.1", "os-keypairs", name]) if *name == "scitq-key" => json_response(
            StatusCode::OK,
            json!({"keypair": {"name": "scitq-key", "public_key": "ssh-ed25519 AAAA test",
                "fingerprint": "aa:bb", "user_id": "fake", "type": "ssh", "id": 1,
                "deleted": false, "created_at": "2026-01-01T00:00:00.000000",
                "updated_at": null, "deleted_at": null}}),
        ),
        ("GET", ["compute", "v2.1", "os-keypairs", name]) => not_found(&format!("Keypair {name}")),
        ("POST", ["compute", "v2.1", "servers"]) => {
            cloud.next_id += 1;
            let id = format!("00000000-0000-4000-8000-{:012}", cloud.next_id);
            let server = &body["server"];
            let mut stored = server_json(
                &id,
                server["name"].as_str().unwrap_or_default(),
                "BUILD",
                server["metadata"].clone(),
                &base,
            );
            stored["key_name"] = server["key_name"].clone();
            cloud.creates.push(body.clone());
            cloud.servers.insert(id.clone(), stored);
            json_response(
                StatusCode::ACCEPTED,
                json!({"server": {"id": id, "links": [{"rel": "self",
                    "href": format!("{base}/compute/v2.1/servers/{id}")}],
                    "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
                    "adminPass": "wfksH3GTTseP"}}),
            )
        }
        ("GET", ["compute", "v2.1", "servers", "detail"]) => {
            let query = query_of(&uri);
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1000);
            let page: Vec<Value> = cloud
                .servers
                .iter()
                .filter(|(id, _)| query.get("marker").is_none_or(|m| id.as_str() > m.as_str()))
                .take(limit)
                .map(|(_, s)| s.clone())
                .collect();
            json_response(StatusCode::OK, json!({"servers": page}))
        }
        ("GET", ["compute", "v2.1", "servers", id]) => match cloud.servers.get(*id) {
            Some(s) => json_response(StatusCode::OK, json!({"server": s})),
            None => not_found(&format!("Instance {id}")),
        },
        ("DELETE", ["compute", "v2.1", "servers", id]) => match cloud.servers.remove(*id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => not_found(&format!("Instance {id}")),
        },
        ("GET", ["image"]) => json_response(
            StatusCode::MULTIPLE_CHOICES,
            json!({"versions": [{"id": "v2.9", "status": "CURRENT",
                "links": [{"rel": "self", "href": format!("{base}/image/v2/")}]}]}),
        ),
        ("GET", ["image", "v2", "images", id]) if *id == IMAGE_ID => {
            json_response(StatusCode::OK, image_json())
        }
        ("GET", ["image", "v2", "images", _]) => json_response(
            StatusCode::NOT_FOUND,
            json!({"code": 404, "title": "Not Found", "message": "No image found"}),
        ),
        ("GET", ["image", "v2", "images"]) => {
            let wanted = uri.query().unwrap_or_default().contains("name=Debian%2012")
                || uri.query().unwrap_or_default().contains("name=Debian+12");
            let images = if wanted { vec![image_json()] } else { vec![] };
            json_response(
                StatusCode::OK,
                json!({"images": images, "schema": "/v2/schemas/images", "first": "/v2/images"}),
            )
        }
        ("GET", ["network"]) => json_response(
            StatusCode::OK,
            json!({"versions": [{"id": "v2.0", "status": "CURRENT",
                "links": [{"rel": "self", "href": format!("{base}/network/v2.0/")}]}]}),
        ),
        ("GET", ["network", "v2.0", "networks", id]) if *id == NETWORK_ID => {
            json_response(StatusCode::OK, json!({"network": network_json()}))
        }
        ("GET", ["network", "v2.0", "networks", id]) => json_response(
            StatusCode::NOT_FOUND,
            json!({"NeutronError": {"type": "NetworkNotFound",
                "message": format!("Network {id} could not be found."), "detail": ""}}),
        ),
        ("GET", ["network", "v2.0", "networks"]) => {
            let wanted = uri.query().unwrap_or_default().contains("name=Ext-Net");
            let networks = if wanted { vec![network_json()] } else { vec![] };
            json_response(StatusCode::OK, json!({"networks": networks}))
        }
        _ => {
            eprintln!("[fake openstack] unhandled {method} {uri}");
            not_found("Resource")
        }
    }
}

fn query_of(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Keystone `POST /v3/auth/tokens`: password (user `user-abc`, `s3cret`) or application
/// credential (`app-1`, `app-secret`).
fn token(body: &Value, base: &str) -> Response {
    let identity = &body["auth"]["identity"];
    let method = identity["methods"][0].as_str().unwrap_or_default();
    let valid = match method {
        "password" => {
            identity["password"]["user"]["name"] == "user-abc"
                && identity["password"]["user"]["password"] == "s3cret"
        }
        "application_credential" => {
            identity["application_credential"]["id"] == "app-1"
                && identity["application_credential"]["secret"] == "app-secret"
        }
        _ => false,
    };
    if !valid {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}}),
        );
    }
    let body = json!({"token": {
        "methods": [method],
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "issued_at": "2026-12-06T22:00:00.000000Z",
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
        "user": {"id": "u1", "name": "user-abc", "password_expires_at": null,
            "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p1", "name": "proj", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "member"}],
        "is_domain": false,
        "catalog": catalog(base)
    }});
    let mut response = json_response(StatusCode::CREATED, body);
    response
        .headers_mut()
        .insert("x-subject-token", "gAAAAABfake-token".parse().unwrap());
    response
}

fn spec(name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        flavor: "b3-8".to_owned(),
        image: "Debian 12".to_owned(),
        region: None,
        network: Some("Ext-Net".to_owned()),
        ssh_key: Some("scitq-key".to_owned()),
        user_data: Some("#cloud-config\nruncmd: [echo hi]\n".to_owned()),
        tags: BTreeMap::from([("batch".to_owned(), "b1".to_owned())]),
    }
}

fn owner() -> OwnerId {
    OwnerId::new("scitqd-1").unwrap()
}

#[tokio::test]
async fn servers_are_created_shown_listed_and_deleted_only_when_ours() {
    let fake = Fake::start().await;
    fake.add_foreign("aaaaaaaa-0000-4000-8000-000000000001", json!({}));
    fake.add_foreign(
        "aaaaaaaa-0000-4000-8000-000000000002",
        json!({OWNER_TAG: "scitqd-2"}),
    );
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();

    let flavors = provider.flavors(None).await.unwrap();
    let gpu = flavors.iter().find(|f| f.name == "t2-45").unwrap();
    assert_eq!(
        (gpu.cpu, gpu.memory_mib, gpu.disk_gib, gpu.gpu),
        (15, 46080, 400, 1)
    );
    assert_eq!(gpu.price_per_hour, None);
    assert_eq!(provider.regions().await.unwrap(), [REGION]);

    let created = provider.create(&spec("w1")).await.unwrap();
    assert_eq!(created.state, InstanceState::Creating);
    assert_eq!(created.region.as_deref(), Some(REGION));

    // What Nova received: resolved ids, the owner's metadata, base64 user data.
    let request = fake.cloud.lock().unwrap().creates[0]["server"].clone();
    assert_eq!(request["flavorRef"], FLAVOR_ID);
    assert_eq!(request["imageRef"], IMAGE_ID);
    assert_eq!(request["networks"], json!([{"uuid": NETWORK_ID}]));
    assert_eq!(request["key_name"], "scitq-key");
    assert_eq!(
        request["metadata"],
        json!({OWNER_TAG: "scitqd-1", "batch": "b1"})
    );
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(request["user_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(user_data, b"#cloud-config\nruncmd: [echo hi]\n");

    // Another instance alike costs no lookups: the references are kept.
    let before = fake.cloud.lock().unwrap().log.len();
    let second = provider.create(&spec("w2")).await.unwrap();
    let calls = fake.cloud.lock().unwrap().log[before..].to_vec();
    assert_eq!(
        calls,
        [
            "POST /compute/v2.1/servers".to_owned(),
            format!("GET /compute/v2.1/servers/{}", second.id)
        ]
    );
    fake.cloud.lock().unwrap().servers.remove(&second.id.0);

    // Nova finishes building it.
    {
        let mut cloud = fake.cloud.lock().unwrap();
        let server = cloud.servers.get_mut(&created.id.0).unwrap();
        server["status"] = json!("ACTIVE");
        server["addresses"] = json!({"Ext-Net": [
            {"addr": "2001:db8::5", "version": 6, "OS-EXT-IPS:type": "fixed"},
            {"addr": "51.75.1.2", "version": 4, "OS-EXT-IPS:type": "fixed"}]});
    }
    let shown = provider.get(&created.id).await.unwrap();
    assert_eq!(shown.state, InstanceState::Running);
    assert_eq!(shown.address, Some("51.75.1.2".parse().unwrap()));

    // Only our server is listed; the others cannot be read or deleted.
    let listed = provider.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| &i.id).collect::<Vec<_>>(),
        [&created.id]
    );
    for foreign in [
        "aaaaaaaa-0000-4000-8000-000000000001",
        "aaaaaaaa-0000-4000-8000-000000000002",
    ] {
        let id = InstanceId(foreign.to_owned());
        assert_eq!(
            provider.get(&id).await.unwrap_err().class(),
            ErrorClass::NotFound
        );
        provider.delete(&id).await.unwrap();
        assert_eq!(
            fake.count(&format!("DELETE /compute/v2.1/servers/{foreign}")),
            0
        );
        assert!(fake.cloud.lock().unwrap().servers.contains_key(foreign));
    }

    provider.delete(&created.id).await.unwrap();
    assert_eq!(
        fake.count(&format!("DELETE /compute/v2.1/servers/{}", created.id)),
        1
    );
    assert_eq!(
        provider.get(&created.id).await.unwrap_err().class(),
        ErrorClass::NotFound
    );
    provider.delete(&created.id).await.unwrap();
    assert!(provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_error_state_reports_nova_s_fault() {
    let fake = Fake::start().await;
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();
    let created = provider.create(&spec("w1")).await.unwrap();
    {
        let mut cloud = fake.cloud.lock().unwrap();
        let server = cloud.servers.get_mut(&created.id.0).unwrap();
        server["status"] = json!("ERROR");
        server["fault"] = json!({"code": 500, "created": "2026-12-06T22:01:00Z",
            "message": "No valid host was found. There are not enough hosts available."});
    }
    assert_eq!(
        provider.get(&created.id).await.unwrap().state,
        InstanceState::Failed(
            "No valid host was found. There are not enough hosts available.".to_owned()
        )
    );
}

#[tokio::test]
async fn both_keystone_methods_authenticate_and_bad_credentials_are_auth_errors() {
    let fake = Fake::start().await;
    let app = Credentials::ApplicationCredential {
        id: "app-1".to_owned(),
        secret: "app-secret".to_owned(),
    };
    let provider = OpenStackProvider::connect(fake.config(app), owner())
        .await
        .unwrap();
    assert_eq!(provider.flavors(Some(REGION)).await.unwrap().len(), 2);

    let wrong = Credentials::Password {
        user: "user-abc".to_owned(),
        password: "wrong".to_owned(),
        user_domain: "Default".to_owned(),
        project: "proj".to_owned(),
        project_domain: "Default".to_owned(),
    };
    let err = OpenStackProvider::connect(fake.config(wrong), owner())
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    // Not retried: a refused password stays refused.
    assert_eq!(fake.count("POST /identity/v3/auth/tokens"), 2);

    let err = provider.flavors(Some("BHS5")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("\"BHS5\" is not one of the configured regions"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_flavor_image_or_network_creates_nothing() {
    let fake = Fake::start().await;
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();
    let err = provider
        .create(&InstanceSpec {
            flavor: "z9-999".to_owned(),
            ..spec("w1")
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownFlavor, "{err}");
    assert_eq!(err.to_string(), r#"ovh: unknown flavor "z9-999""#);
    let err = provider
        .create(&InstanceSpec {
            image: "Windows 95".to_owned(),
            ..spec("w1")
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownImage, "{err}");
    let err = provider
        .create(&InstanceSpec {
            network: Some("nowhere".to_owned()),
            ..spec("w1")
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"invalid network: "nowhere" not found"#),
        "{err}"
    );
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 0);
}

#[tokio::test]
async fn quota_errors_are_classified_and_not_resent() {
    let fake = Fake::start().await;
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers",
        status: StatusCode::FORBIDDEN,
        headers: vec![],
        body: json!({"forbidden": {"code": 403,
            "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}),
    });
    let err = provider.create(&spec("w1")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Quota, "{err}");
    assert!(
        err.to_string().contains("already used 10 of 10 instances"),
        "{err}"
    );
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers",
        status: StatusCode::PAYLOAD_TOO_LARGE,
        headers: vec![],
        body: json!({"overLimit": {"code": 413,
            "message": "Quota exceeded for cores: Requested 8, but already used 40 of 48 cores"}}),
    });
    let err = provider.create(&spec("w1")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Quota, "{err}");
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 2);
    assert!(fake.cloud.lock().unwrap().servers.is_empty());
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_but_a_create_is_never_doubled() {
    let fake = Fake::start().await;
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();

    // 429 on a create: refused untouched, so sent again after Retry-After.
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers",
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: vec![("retry-after", "1".to_owned())],
        body: json!({"overLimit": {"code": 429, "message": "This request was rate-limited.",
            "retryAfter": "1"}}),
    });
    let created = provider.create(&spec("w1")).await.unwrap();
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 2);
    assert_eq!(fake.cloud.lock().unwrap().servers.len(), 1);

    // A 503 on a read is retried.
    let show = format!("/compute/v2.1/servers/{}", created.id);
    let shown_before = fake.count(&format!("GET {show}"));
    let path: &'static str = Box::leak(show.clone().into_boxed_str());
    fake.can(Canned {
        method: Method::GET,
        path,
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![],
        body: json!({"computeFault": {"code": 503, "message": "Service Unavailable"}}),
    });
    provider.get(&created.id).await.unwrap();
    assert_eq!(fake.count(&format!("GET {show}")), shown_before + 2);

    // A 500 on a create is unclear (was it made?): not sent again, reported as transient.
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers: vec![],
        body: json!({"computeFault": {"code": 500, "message": "Unexpected API Error."}}),
    });
    let err = provider.create(&spec("w2")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 3);
}

#[tokio::test]
async fn listing_follows_pages() {
    let fake = Fake::start().await;
    for i in 0..450 {
        fake.add_foreign(
            &format!("bbbbbbbb-0000-4000-8000-{i:012}"),
            json!({OWNER_TAG: "scitqd-1"}),
        );
    }
    let provider = OpenStackProvider::connect(fake.config(password()), owner())
        .await
        .unwrap();
    assert_eq!(provider.list().await.unwrap().len(), 450);
    let pages = fake
        .cloud
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|l| l.starts_with("GET /compute/v2.1/servers/detail"))
        .count();
    assert_eq!(pages, 3);
}
