//! A fake OpenStack cloud (Keystone, Nova, Glance, Neutron under one address) that answers
//! as the real APIs do, for the calls the `openstack` crate and scitq's provider make.
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
//!   `Retry-After`). Those error bodies are canned by the tests ([`FakeServer::can`]).
//! - Glance, Image API v2: version list (`GET /image/`), "Show image", "List images" (`name`).
//! - Neutron, Networking API v2.0: version list (`GET /network/`), "Show network details",
//!   "List networks" (`name`).
//!
//! The cloud: region [`REGION`], flavors [`FLAVOR`] and [`GPU_FLAVOR`], image [`IMAGE`],
//! network [`NETWORK`], key pair [`KEYPAIR`]; Keystone takes user [`USER`] / [`PASSWORD`]
//! (project [`PROJECT`]) or application credential [`APP_CREDENTIAL_ID`] /
//! [`APP_CREDENTIAL_SECRET`]. Servers it creates stay `BUILD` until a test changes them.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fake::{FakeServer, FakeState, Request, json_response, with_header};

pub const FLAVOR_ID: &str = "5c1c3e54-7e8b-4d2a-9a33-0f1b2b4a9c01";
pub const GPU_FLAVOR_ID: &str = "9d0e4f1a-2b3c-4d5e-8f90-a1b2c3d4e5f6";
pub const IMAGE_ID: &str = "70a599e0-31e7-49b7-b260-868f441e862b";
pub const NETWORK_ID: &str = "3cb9bc59-5699-4588-a4b1-b87f96708bc6";
pub const REGION: &str = "GRA11";
/// 2 vCPU, 8 GiB, 50 GB disk.
pub const FLAVOR: &str = "b3-8";
/// 15 vCPU, 45 GiB, 400 GB disk, one GPU.
pub const GPU_FLAVOR: &str = "t2-45";
pub const IMAGE: &str = "Debian 12";
pub const NETWORK: &str = "Ext-Net";
pub const KEYPAIR: &str = "scitq-key";
pub const USER: &str = "user-abc";
pub const PASSWORD: &str = "s3cret";
pub const PROJECT: &str = "proj";
pub const APP_CREDENTIAL_ID: &str = "app-1";
pub const APP_CREDENTIAL_SECRET: &str = "app-secret";

/// What Nova holds.
#[derive(Default)]
pub struct Nova {
    /// Bodies of `POST /servers`, in order.
    pub creates: Vec<Value>,
    /// Servers by id, as "Show Server Details" returns them.
    pub servers: BTreeMap<String, Value>,
    next_id: u32,
}

pub type FakeOpenStack = FakeServer<Nova>;

/// Starts the fake cloud on the current runtime.
pub async fn start() -> FakeOpenStack {
    FakeServer::start(Nova::default(), route).await
}

impl FakeServer<Nova> {
    /// Keystone's address, as a provider's `auth_url`.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.base())
    }

    /// A server someone else (or another scitq) created in the same project.
    pub fn add_foreign(&self, id: &str, metadata: Value) {
        let mut state = self.lock();
        let server = server_json(id, "not-ours", "ACTIVE", metadata, &state.base);
        state.cloud.servers.insert(id.to_owned(), server);
    }

    /// How many servers Nova holds.
    pub fn servers(&self) -> usize {
        self.lock().cloud.servers.len()
    }
}

fn not_found(what: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"itemNotFound": {"code": 404, "message": format!("{what} could not be found.")}}),
    )
}

/// A server as "Show Server Details" returns it.
pub fn server_json(id: &str, name: &str, status: &str, metadata: Value, base: &str) -> Value {
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
        flavor(FLAVOR_ID, FLAVOR, 2, 8192, 50, json!({})),
        flavor(
            GPU_FLAVOR_ID,
            GPU_FLAVOR,
            15,
            46080,
            400,
            json!({"pci_passthrough:alias": "v100:1"})
        ),
    ])
}

fn image_json() -> Value {
    json!({
        "id": IMAGE_ID, "name": IMAGE, "status": "active", "visibility": "public",
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
        "id": NETWORK_ID, "name": NETWORK, "admin_state_up": true, "status": "ACTIVE",
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

fn route(state: &mut FakeState<Nova>, request: &Request) -> Response {
    let base = state.base.clone();
    if request.path != "/identity/v3/auth/tokens" && !request.headers.contains_key("x-auth-token") {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}),
        );
    }
    let nova = &mut state.cloud;
    let segments = request.segments();
    let limit = |request: &Request| -> usize {
        request
            .query("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(1000)
    };
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["identity", "v3", "auth", "tokens"]) => token(&request.json(), &base),
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
            let all = flavors(&base);
            let all = all.as_array().expect("a flavor list");
            let start = request
                .query("marker")
                .and_then(|m| all.iter().position(|f| f["id"] == m))
                .map_or(0, |i| i + 1);
            let page: Vec<&Value> = all.iter().skip(start).take(limit(request)).collect();
            json_response(StatusCode::OK, json!({"flavors": page}))
        }
        ("GET", ["compute", "v2.1", "flavors"]) => {
            let list: Vec<Value> = flavors(&base)
                .as_array()
                .expect("a flavor list")
                .iter()
                .map(|f| json!({"id": f["id"], "name": f["name"], "links": f["links"]}))
                .collect();
            json_response(StatusCode::OK, json!({"flavors": list}))
        }
        ("GET", ["compute", "v2.1", "flavors", id]) => {
            match flavors(&base)
                .as_array()
                .expect("a flavor list")
                .iter()
                .find(|f| f["id"] == *id)
            {
                Some(f) => json_response(StatusCode::OK, json!({"flavor": f})),
                None => not_found(&format!("Flavor {id}")),
            }
        }
        ("GET", ["compute", "v2.1", "os-keypairs", name]) if *name == KEYPAIR => json_response(
            StatusCode::OK,
            json!({"keypair": {"name": KEYPAIR, "public_key": "ssh-ed25519 AAAA test",
                "fingerprint": "aa:bb", "user_id": "fake", "type": "ssh", "id": 1,
                "deleted": false, "created_at": "2026-01-01T00:00:00.000000",
                "updated_at": null, "deleted_at": null}}),
        ),
        ("GET", ["compute", "v2.1", "os-keypairs", name]) => not_found(&format!("Keypair {name}")),
        ("POST", ["compute", "v2.1", "servers"]) => {
            nova.next_id += 1;
            let id = format!("00000000-0000-4000-8000-{:012}", nova.next_id);
            let body = request.json();
            let server = &body["server"];
            let mut stored = server_json(
                &id,
                server["name"].as_str().unwrap_or_default(),
                "BUILD",
                server["metadata"].clone(),
                &base,
            );
            stored["key_name"] = server["key_name"].clone();
            nova.servers.insert(id.clone(), stored);
            nova.creates.push(body);
            json_response(
                StatusCode::ACCEPTED,
                json!({"server": {"id": id, "links": [{"rel": "self",
                    "href": format!("{base}/compute/v2.1/servers/{id}")}],
                    "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
                    "adminPass": "wfksH3GTTseP"}}),
            )
        }
        ("GET", ["compute", "v2.1", "servers", "detail"]) => {
            let marker = request.query("marker");
            let page: Vec<Value> = nova
                .servers
                .iter()
                .filter(|(id, _)| marker.is_none_or(|m| id.as_str() > m))
                .take(limit(request))
                .map(|(_, s)| s.clone())
                .collect();
            json_response(StatusCode::OK, json!({"servers": page}))
        }
        ("GET", ["compute", "v2.1", "servers", id]) => match nova.servers.get(*id) {
            Some(s) => json_response(StatusCode::OK, json!({"server": s})),
            None => not_found(&format!("Instance {id}")),
        },
        ("DELETE", ["compute", "v2.1", "servers", id]) => match nova.servers.remove(*id) {
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
            let wanted = matches!(request.query("name"), Some("Debian%2012" | "Debian+12"));
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
            let networks = if request.query("name") == Some(NETWORK) {
                vec![network_json()]
            } else {
                vec![]
            };
            json_response(StatusCode::OK, json!({"networks": networks}))
        }
        _ => {
            eprintln!(
                "[fake openstack] unhandled {} {}",
                request.method, request.uri
            );
            not_found("Resource")
        }
    }
}

/// Keystone `POST /v3/auth/tokens`: password ([`USER`], [`PASSWORD`]) or application
/// credential ([`APP_CREDENTIAL_ID`], [`APP_CREDENTIAL_SECRET`]).
fn token(body: &Value, base: &str) -> Response {
    let identity = &body["auth"]["identity"];
    let method = identity["methods"][0].as_str().unwrap_or_default();
    let valid = match method {
        "password" => {
            identity["password"]["user"]["name"] == USER
                && identity["password"]["user"]["password"] == PASSWORD
        }
        "application_credential" => {
            identity["application_credential"]["id"] == APP_CREDENTIAL_ID
                && identity["application_credential"]["secret"] == APP_CREDENTIAL_SECRET
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
        "user": {"id": "u1", "name": USER, "password_expires_at": null,
            "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p1", "name": PROJECT, "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "member"}],
        "is_domain": false,
        "catalog": catalog(base)
    }});
    with_header(
        json_response(StatusCode::CREATED, body),
        "x-subject-token",
        "gAAAAABfake-token",
    )
}
