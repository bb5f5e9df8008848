//! The local provider, for real: processes started on this machine, and docker containers on
//! a private network (from a busybox image built locally).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scitq_provisioner::local::{LocalConfig, LocalProvider};
use scitq_provisioner::{
    ErrorClass, InstanceId, InstanceSpec, InstanceState, OWNER_TAG, OwnerId, Provider,
};
use scitq_testkit::images::{Image, docker, try_docker};
use scitq_testkit::wait_for;

/// A process instance that writes its pid and user data to `out`, then sleeps.
fn process_config(state_dir: &Path, out: &Path) -> LocalConfig {
    LocalConfig {
        name: "local".to_owned(),
        command: vec![
            "sh".to_owned(),
            "-c".to_owned(),
            r#"echo $$ > "$OUT/{name}.pid"; echo "$SCITQ_USER_DATA" > "$OUT/{name}.data"; exec sleep 300"#
                .to_owned(),
        ],
        env: BTreeMap::from([("OUT".to_owned(), out.display().to_string())]),
        flavors: Vec::new(),
        state_dir: state_dir.to_owned(),
        image: None,
        network: None,
    }
}

fn spec(name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        flavor: "local".to_owned(),
        user_data: Some(format!("#cloud-config for {name}")),
        tags: BTreeMap::from([("batch".to_owned(), "b1".to_owned())]),
        ..InstanceSpec::default()
    }
}

fn owner(id: &str) -> OwnerId {
    OwnerId::new(id).unwrap()
}

async fn pid_of(out: &Path, name: &str) -> i32 {
    let file: PathBuf = out.join(format!("{name}.pid"));
    wait_for(&format!("{name} to write its pid"), || {
        let file = file.clone();
        async move { std::fs::read_to_string(&file).ok()?.trim().parse().ok() }
    })
    .await
}

fn process_runs(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) does not run.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn processes_are_listed_by_owner_across_restarts_and_deleted_for_real() {
    let state = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mine =
        LocalProvider::processes(process_config(state.path(), out.path()), owner("a")).unwrap();
    let theirs =
        LocalProvider::processes(process_config(state.path(), out.path()), owner("b")).unwrap();

    let created = mine.create(&spec("w1")).await.unwrap();
    assert_eq!(created.state, InstanceState::Running);
    assert_eq!(created.tags.get(OWNER_TAG).map(String::as_str), Some("a"));
    assert_eq!(created.tags.get("batch").map(String::as_str), Some("b1"));
    mine.create(&spec("w2")).await.unwrap();
    theirs.create(&spec("x1")).await.unwrap();

    // The user data and the instance name reached the process.
    let w1 = pid_of(out.path(), "w1").await;
    let data = std::fs::read_to_string(out.path().join("w1.data")).unwrap();
    assert_eq!(data.trim(), "#cloud-config for w1");

    let names = |list: Vec<scitq_provisioner::Instance>| {
        list.into_iter().map(|i| i.name).collect::<Vec<_>>()
    };
    assert_eq!(names(mine.list().await.unwrap()), ["w1", "w2"]);
    assert_eq!(names(theirs.list().await.unwrap()), ["x1"]);

    // A name is not reused while its instance exists.
    let err = mine.create(&spec("w1")).await.unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    // The owning process restarts: the new provider sees the same running instances.
    drop(mine);
    let mine =
        LocalProvider::processes(process_config(state.path(), out.path()), owner("a")).unwrap();
    let listed = mine.list().await.unwrap();
    assert_eq!(names(listed.clone()), ["w1", "w2"]);
    assert!(
        listed.iter().all(|i| i.state == InstanceState::Running),
        "{listed:?}"
    );

    // Another owner's instance is invisible and untouchable.
    let x1 = InstanceId("x1".to_owned());
    let x1_pid = pid_of(out.path(), "x1").await;
    assert_eq!(
        mine.get(&x1).await.unwrap_err().class(),
        ErrorClass::NotFound
    );
    mine.delete(&x1).await.unwrap();
    assert!(
        process_runs(x1_pid),
        "deleting another owner's instance killed it"
    );
    assert_eq!(theirs.get(&x1).await.unwrap().state, InstanceState::Running);

    // Deleting stops the process (started by the previous provider) and forgets it.
    mine.delete(&InstanceId("w1".to_owned())).await.unwrap();
    wait_for("w1's process to end", || async {
        (!process_runs(w1)).then_some(())
    })
    .await;
    assert_eq!(names(mine.list().await.unwrap()), ["w2"]);
    assert_eq!(
        mine.get(&InstanceId("w1".to_owned()))
            .await
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
    // Deleting again is not an error.
    mine.delete(&InstanceId("w1".to_owned())).await.unwrap();

    for (provider, name) in [(&mine, "w2"), (&theirs, "x1")] {
        let pid = pid_of(out.path(), name).await;
        provider.delete(&InstanceId(name.to_owned())).await.unwrap();
        wait_for("the process to end", || async {
            (!process_runs(pid)).then_some(())
        })
        .await;
    }
    assert!(mine.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_exited_process_is_a_stopped_instance() {
    let state = tempfile::tempdir().unwrap();
    let config = LocalConfig {
        command: vec!["true".to_owned()],
        ..process_config(state.path(), state.path())
    };
    let provider = LocalProvider::processes(config, owner("a")).unwrap();
    provider.create(&spec("quick")).await.unwrap();
    let id = InstanceId("quick".to_owned());
    wait_for("the instance to stop", || async {
        (provider.get(&id).await.unwrap().state == InstanceState::Stopped).then_some(())
    })
    .await;
    // Still listed (it may still matter to whoever created it) until deleted.
    assert_eq!(provider.list().await.unwrap().len(), 1);
    provider.delete(&id).await.unwrap();
    assert!(provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_specs_are_refused_with_their_class() {
    let state = tempfile::tempdir().unwrap();
    let provider =
        LocalProvider::processes(process_config(state.path(), state.path()), owner("a")).unwrap();
    let flavors = provider.flavors(None).await.unwrap();
    assert_eq!(flavors.len(), 1);
    assert!(
        flavors[0].cpu >= 1 && flavors[0].memory_mib > 0,
        "{flavors:?}"
    );
    assert_eq!(provider.regions().await.unwrap(), ["local"]);

    let err = provider
        .create(&InstanceSpec {
            flavor: "huge".to_owned(),
            ..spec("w1")
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownFlavor);
    assert_eq!(err.to_string(), r#"local: unknown flavor "huge""#);
    let err = provider.create(&spec("../escape")).await.unwrap_err();
    assert!(err.to_string().contains("invalid instance name"), "{err}");
    assert!(provider.list().await.unwrap().is_empty());
}

/// Removes the test's containers and network whatever happens.
struct DockerCleanup {
    owner: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let ids = try_docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={OWNER_TAG}={}", self.owner),
        ])
        .unwrap_or_default();
        for id in ids.split_whitespace() {
            try_docker(&["rm", "-f", id]);
        }
        try_docker(&["network", "rm", &format!("scitq-{}", self.owner)]);
    }
}

#[tokio::test]
async fn docker_instances_run_on_a_private_network_and_are_listed_by_label() {
    // The command replaces the image's entrypoint (the agent image's is `scitq-agent`).
    let image = Image::tiny_with_changes(&[r#"ENTRYPOINT ["/bin/false"]"#]);
    let owner_id = format!("provtest-{}", std::process::id());
    let _cleanup = DockerCleanup {
        owner: owner_id.clone(),
    };
    let state = tempfile::tempdir().unwrap();
    let config = LocalConfig {
        name: "local".to_owned(),
        command: vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo {name} up; exec sleep 300".to_owned(),
        ],
        env: BTreeMap::new(),
        flavors: Vec::new(),
        state_dir: state.path().to_owned(),
        image: Some(image.tag().to_owned()),
        network: None,
    };
    let provider = LocalProvider::detect(config.clone(), owner(&owner_id))
        .await
        .unwrap();
    assert!(provider.uses_docker());
    let network = format!("scitq-{owner_id}");
    assert_eq!(provider.network(), Some(network.as_str()));

    let name = format!("{owner_id}-w1");
    let created = provider.create(&spec(&name)).await.unwrap();
    assert_eq!(created.flavor.as_deref(), Some("local"));
    let running = wait_for("the container to run with an address", || async {
        let i = provider.get(&created.id).await.unwrap();
        (i.state == InstanceState::Running && i.address.is_some()).then_some(i)
    })
    .await;
    assert_eq!(running.tags.get(OWNER_TAG), Some(&owner_id));

    // The container is on the private network, with the env the provider sets.
    let networks = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &name,
    ]);
    assert_eq!(
        networks.split_whitespace().collect::<Vec<_>>(),
        [network.as_str()]
    );
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &name,
    ]);
    assert!(
        env.lines()
            .any(|l| l == format!("SCITQ_INSTANCE_NAME={name}")),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l == format!("SCITQ_USER_DATA=#cloud-config for {name}")),
        "{env}"
    );
    let logs = wait_for("the container's output", || async {
        let logs = docker(&["logs", &name]);
        (!logs.is_empty()).then_some(logs)
    })
    .await;
    assert_eq!(logs.trim(), format!("{name} up"));

    // Another owner sees nothing; a restarted owner sees it (labels are the state).
    let other = LocalProvider::docker(config.clone(), owner(&format!("{owner_id}-other")))
        .await
        .unwrap();
    let _other_cleanup = DockerCleanup {
        owner: format!("{owner_id}-other"),
    };
    assert!(other.list().await.unwrap().is_empty());
    assert_eq!(
        other.get(&created.id).await.unwrap_err().class(),
        ErrorClass::NotFound
    );
    other.delete(&created.id).await.unwrap();
    let again = LocalProvider::docker(config, owner(&owner_id))
        .await
        .unwrap();
    let listed = again.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].state,
        InstanceState::Running,
        "another owner's delete touched it"
    );

    again.delete(&created.id).await.unwrap();
    assert!(again.list().await.unwrap().is_empty());
    assert!(
        docker(&["ps", "-aq", "--filter", &format!("name=^{name}$")])
            .trim()
            .is_empty()
    );
    again.delete(&created.id).await.unwrap();

    let err = again
        .create(&InstanceSpec {
            flavor: "nope".to_owned(),
            ..spec(&name)
        })
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownFlavor);
}

/// Removes a network (and the containers on it) by id whatever happens.
struct NetworkCleanup(String);

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let on_it = try_docker(&["ps", "-aq", "--filter", &format!("network={}", self.0)])
            .unwrap_or_default();
        for id in on_it.split_whitespace() {
            try_docker(&["rm", "-f", id]);
        }
        try_docker(&["network", "rm", &self.0]);
    }
}

/// A scitqd running in a container names the network it is on: instances join that one.
#[tokio::test]
async fn docker_instances_join_a_configured_network() {
    let image = Image::tiny();
    let owner_id = format!("provnet-{}", std::process::id());
    let network = format!("{owner_id}-given");
    let id = docker(&["network", "create", &network]).trim().to_owned();
    let _cleanup = NetworkCleanup(id);
    let state = tempfile::tempdir().unwrap();
    let provider = LocalProvider::docker(
        LocalConfig {
            name: "local".to_owned(),
            command: vec!["sleep".to_owned(), "300".to_owned()],
            env: BTreeMap::new(),
            flavors: Vec::new(),
            state_dir: state.path().to_owned(),
            image: Some(image.tag().to_owned()),
            network: Some(network.clone()),
        },
        owner(&owner_id),
    )
    .await
    .unwrap();
    assert_eq!(provider.network(), Some(network.as_str()));
    let name = format!("{owner_id}-w1");
    let created = provider.create(&spec(&name)).await.unwrap();
    let running = wait_for("the container to run with an address", || async {
        let i = provider.get(&created.id).await.unwrap();
        (i.state == InstanceState::Running && i.address.is_some()).then_some(i)
    })
    .await;
    assert_eq!(running.name, name);
    let networks = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &name,
    ]);
    assert_eq!(
        networks.split_whitespace().collect::<Vec<_>>(),
        [network.as_str()]
    );
    // No network of its own was made.
    assert!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^scitq-{owner_id}$")
        ])
        .trim()
        .is_empty()
    );
    provider.delete(&created.id).await.unwrap();
    assert!(provider.list().await.unwrap().is_empty());
}
