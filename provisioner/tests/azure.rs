//! The Azure provider against the fake Azure of `scitq_testkit::azure` (127.0.0.1), whose
//! module documentation names the Microsoft documentation each fake response follows.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use scitq_provisioner::azure::{AzureConfig, AzureProvider};
use scitq_provisioner::retry::RetryPolicy;
use scitq_provisioner::{
    ErrorClass, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, Provider,
};
use scitq_testkit::azure::{
    self as fake_arm, CLIENT_SECRET, FakeAzure, IP, LOCATION, NIC, RG, SUB, SUBNET, TENANT, VM,
};
use scitq_testkit::fake::{Canned, Method, StatusCode};

fn config(fake: &FakeAzure, secret: &str) -> AzureConfig {
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
        authority_host: fake.base(),
        endpoint: fake.base(),
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

/// Answers the next `method` request whose path ends with `suffix` with this.
fn can(
    fake: &FakeAzure,
    method: Method,
    suffix: &str,
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
) {
    fake.can(Canned {
        method,
        path: suffix.to_owned(),
        status,
        headers,
        body,
    });
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

#[tokio::test]
async fn a_vm_is_created_by_following_its_operations_and_deleted_with_all_it_owns() {
    let fake = fake_arm::start().await;
    fake.add_foreign_vm("not-ours", json!({}));
    fake.add_foreign_vm("other-scitq", json!({OWNER_TAG: "scitqd-2"}));
    let provider = AzureProvider::connect(config(&fake, CLIENT_SECRET), owner())
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
    assert_eq!(fake.count_prefix(&format!("PUT {vm_path}")), 1);
    assert!(fake.count_prefix("GET /subscriptions/00000000-1111-2222-3333-444444444444/providers/Microsoft.Compute/locations/westeurope/operations/") >= 2);

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
        fake.count_prefix(sizes),
        1,
        "flavors() read them, create used them"
    );
    let second = provider.create(&spec("w2")).await.unwrap();
    assert_eq!(fake.count_prefix(sizes), 1);
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
        fake.count_prefix("DELETE"),
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
    assert_eq!(fake.count_prefix("DELETE"), 6);
}

#[tokio::test]
async fn a_quota_refusal_or_an_allocation_failure_leaves_nothing_behind() {
    let fake = fake_arm::start().await;
    let provider = AzureProvider::connect(config(&fake, CLIENT_SECRET), owner())
        .await
        .unwrap();
    can(
        &fake,
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
    fake.lock().cloud.vm_outcome = Some(json!({"status": "Failed", "error": {
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
    let fake = fake_arm::start().await;
    let provider = AzureProvider::connect(config(&fake, CLIENT_SECRET), owner())
        .await
        .unwrap();
    can(
        &fake,
        Method::PUT,
        "/publicIPAddresses/w1-ip",
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "1".to_owned())],
        json!({"error": {"code": "TooManyRequests",
            "message": "The request is being throttled as the limit has been reached for operation type - Write_ObservationWindow_00:05:00."}}),
    );
    provider.create(&spec("w1")).await.unwrap();
    assert_eq!(
        fake.count_prefix(&format!(
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
    assert_eq!(fake.count_prefix("PUT /subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/scitq-rg/providers/Microsoft.Network/publicIPAddresses/w2-ip"), 0);

    let err = AzureProvider::connect(config(&fake, "wrong-secret"), owner())
        .await
        .err()
        .expect("a wrong secret is refused");
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
}
