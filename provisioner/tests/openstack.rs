//! The OpenStack provider against the fake cloud of `scitq_testkit::openstack` (127.0.0.1),
//! whose module documentation names the OpenStack API reference each fake response follows.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use scitq_provisioner::openstack::{Credentials, OpenStackConfig, OpenStackProvider};
use scitq_provisioner::retry::RetryPolicy;
use scitq_provisioner::{
    ErrorClass, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, Provider,
};
use scitq_testkit::fake::{Canned, Method, StatusCode};
use scitq_testkit::openstack::{
    self as fake_cloud, APP_CREDENTIAL_ID, APP_CREDENTIAL_SECRET, FLAVOR_ID, FakeOpenStack,
    IMAGE_ID, NETWORK_ID, PASSWORD, PROJECT, REGION, USER,
};

fn config(fake: &FakeOpenStack, credentials: Credentials) -> OpenStackConfig {
    OpenStackConfig {
        name: "ovh".to_owned(),
        auth_url: fake.auth_url(),
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

fn password() -> Credentials {
    Credentials::Password {
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
        user_domain: "Default".to_owned(),
        project: PROJECT.to_owned(),
        project_domain: "Default".to_owned(),
    }
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
    let fake = fake_cloud::start().await;
    fake.add_foreign("aaaaaaaa-0000-4000-8000-000000000001", json!({}));
    fake.add_foreign(
        "aaaaaaaa-0000-4000-8000-000000000002",
        json!({OWNER_TAG: "scitqd-2"}),
    );
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
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
    let request = fake.lock().cloud.creates[0]["server"].clone();
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
    let before = fake.requests();
    let second = provider.create(&spec("w2")).await.unwrap();
    let calls = fake.log_since(before);
    assert_eq!(
        calls,
        [
            "POST /compute/v2.1/servers".to_owned(),
            format!("GET /compute/v2.1/servers/{}", second.id)
        ]
    );
    fake.lock().cloud.servers.remove(&second.id.0);

    // Nova finishes building it.
    {
        let mut state = fake.lock();
        let server = state.cloud.servers.get_mut(&created.id.0).unwrap();
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
        assert!(fake.lock().cloud.servers.contains_key(foreign));
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
    let fake = fake_cloud::start().await;
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
        .await
        .unwrap();
    let created = provider.create(&spec("w1")).await.unwrap();
    {
        let mut state = fake.lock();
        let server = state.cloud.servers.get_mut(&created.id.0).unwrap();
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
    let fake = fake_cloud::start().await;
    let app = Credentials::ApplicationCredential {
        id: APP_CREDENTIAL_ID.to_owned(),
        secret: APP_CREDENTIAL_SECRET.to_owned(),
    };
    let provider = OpenStackProvider::connect(config(&fake, app), owner())
        .await
        .unwrap();
    assert_eq!(provider.flavors(Some(REGION)).await.unwrap().len(), 2);

    let wrong = Credentials::Password {
        user: USER.to_owned(),
        password: "wrong".to_owned(),
        user_domain: "Default".to_owned(),
        project: "proj".to_owned(),
        project_domain: "Default".to_owned(),
    };
    let err = OpenStackProvider::connect(config(&fake, wrong), owner())
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
    let fake = fake_cloud::start().await;
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
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
    let fake = fake_cloud::start().await;
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
        .await
        .unwrap();
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers".to_owned(),
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
        path: "/compute/v2.1/servers".to_owned(),
        status: StatusCode::PAYLOAD_TOO_LARGE,
        headers: vec![],
        body: json!({"overLimit": {"code": 413,
            "message": "Quota exceeded for cores: Requested 8, but already used 40 of 48 cores"}}),
    });
    let err = provider.create(&spec("w1")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Quota, "{err}");
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 2);
    assert!(fake.lock().cloud.servers.is_empty());
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_but_a_create_is_never_doubled() {
    let fake = fake_cloud::start().await;
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
        .await
        .unwrap();

    // 429 on a create: refused untouched, so sent again after Retry-After.
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers".to_owned(),
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: vec![("retry-after", "1".to_owned())],
        body: json!({"overLimit": {"code": 429, "message": "This request was rate-limited.",
            "retryAfter": "1"}}),
    });
    let created = provider.create(&spec("w1")).await.unwrap();
    assert_eq!(fake.count("POST /compute/v2.1/servers"), 2);
    assert_eq!(fake.lock().cloud.servers.len(), 1);

    // A 503 on a read is retried.
    let show = format!("/compute/v2.1/servers/{}", created.id);
    let shown_before = fake.count(&format!("GET {show}"));
    fake.can(Canned {
        method: Method::GET,
        path: show.clone(),
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![],
        body: json!({"computeFault": {"code": 503, "message": "Service Unavailable"}}),
    });
    provider.get(&created.id).await.unwrap();
    assert_eq!(fake.count(&format!("GET {show}")), shown_before + 2);

    // A 500 on a create is unclear (was it made?): not sent again, reported as transient.
    fake.can(Canned {
        method: Method::POST,
        path: "/compute/v2.1/servers".to_owned(),
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
    let fake = fake_cloud::start().await;
    for i in 0..450 {
        fake.add_foreign(
            &format!("bbbbbbbb-0000-4000-8000-{i:012}"),
            json!({OWNER_TAG: "scitqd-1"}),
        );
    }
    let provider = OpenStackProvider::connect(config(&fake, password()), owner())
        .await
        .unwrap();
    assert_eq!(provider.list().await.unwrap().len(), 450);
    let pages = fake.count_prefix("GET /compute/v2.1/servers/detail");
    assert_eq!(pages, 3);
}
