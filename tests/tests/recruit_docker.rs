//! Recruitment with containerised agents: scitqd, itself in a container, recruits agent
//! containers through the local provider's docker mode, on a private docker network the test
//! creates (see `scitq_tests::recruiting_docker`). They enroll with their single-use tokens
//! over TLS, run the batch and are destroyed once idle. The quota is checked at every poll
//! against the provider's own listing and against `docker ps` by the owner label. scitqd is
//! taken off its agents' network at first, so its first machines never connect.

use std::collections::BTreeSet;
use std::time::Duration;

use scitq_provisioner::{InstanceSpec, Provider};
use scitq_tests::recruiting::{LocalProviderOpts, block_on};
use scitq_tests::recruiting_docker::DockerRecruiting;
use scitq_tests::{Client, bin, describe, images, output_within};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(240);
const QUOTA: usize = 3;
const TASKS: usize = 40;

fn start() -> DockerRecruiting {
    DockerRecruiting::start(LocalProviderOpts {
        max_instances: QUOTA,
        deploy_timeout: Duration::from_secs(10),
        interval: Duration::from_millis(300),
    })
}

/// Tag of the instances scitqd creates (naming their machine record).
const MACHINE_TAG: &str = "scitq-machine";

/// The machines scitqd created (not one a test made behind its back) by the provider's own
/// listing and by `docker ps`: never more than the quota. Returns the provider's count.
fn check_quota(setup: &DockerRecruiting, owner: &str) -> usize {
    let provider = setup.provider(owner);
    let listed: Vec<_> = block_on(provider.list())
        .expect("the provider's listing")
        .into_iter()
        .filter(|i| i.tags.contains_key(MACHINE_TAG))
        .collect();
    let owner_label = format!("label={}={owner}", scitq_provisioner::OWNER_TAG);
    let machine_label = format!("label={MACHINE_TAG}");
    let containers = images::docker(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &owner_label,
        "--filter",
        &machine_label,
    ]);
    let containers: Vec<&str> = containers.lines().collect();
    assert!(
        listed.len() <= QUOTA && containers.len() <= QUOTA,
        "the quota is {QUOTA}: the provider lists {listed:?}, docker has {containers:?}"
    );
    listed.len()
}

fn succeeded(c: &Client, batch: &str) -> u64 {
    c.batches()
        .iter()
        .find(|b| b["name"] == batch)
        .and_then(|b| b["counts"]["succeeded"].as_u64())
        .unwrap_or(0)
}

fn recruited_workers(c: &Client) -> Vec<Value> {
    c.workers()
        .into_iter()
        .filter(|w| w["provider"] == "local")
        .collect()
}

#[test]
fn containerised_agents_are_recruited_run_a_batch_and_are_destroyed() {
    let setup = start();
    let c = setup.client();
    // No agent reaches scitqd at first: the first machines never connect.
    setup.cut();
    let tasks: Vec<i64> = (0..TASKS)
        .map(|i| c.create_sh("rec", &format!("sleep 1; echo task-{i}"), &[]))
        .collect();
    let rule = setup.ctl_json([
        "recruiter",
        "add",
        "--batch",
        "rec",
        "--provider",
        "local",
        "--max-workers",
        "3",
        "--concurrency",
        "2",
        "--idle-timeout",
        "5s",
    ]);
    assert_eq!(rule["max_workers"], 3, "{rule}");
    let owner = scitq_tests::poll(LONG, "a first create job", || {
        setup.owner().ok_or_else(|| "no job yet".to_owned())
    });

    // Machines that never connect are destroyed after the deploy timeout and replaced.
    scitq_tests::poll(LONG, "a machine destroyed for never connecting", || {
        check_quota(&setup, &owner);
        let jobs = setup.jobs();
        let destroyed = jobs.iter().any(|j| {
            j["kind"] == "destroy"
                && j["status"] == "succeeded"
                && j["log"]
                    .as_str()
                    .is_some_and(|l| l.contains("did not connect within the deploy timeout"))
        });
        if destroyed {
            Ok(())
        } else {
            Err(format!("{jobs:?}"))
        }
    });
    let rules = setup.ctl_json(["recruiter", "list"]);
    assert_eq!(rules[0]["failures"], 1, "{rules}");
    setup.restore();

    // The replacements enroll and run the batch; the quota holds all along.
    let mut most = 0;
    // An enrolled machine's token, read while it runs, for the replay below (a worker is
    // listed from its provisioning job on, before its container exists).
    let mut token = None;
    scitq_tests::poll(LONG, "the batch to succeed on recruited agents", || {
        most = most.max(check_quota(&setup, &owner));
        if token.is_none()
            && let Some(name) = recruited_workers(&c)
                .iter()
                .find(|w| w["status"] == "online")
                .and_then(|w| w["name"].as_str().map(str::to_owned))
        {
            token = setup.token_of(&name).map(|t| (name, t));
        }
        let done = succeeded(&c, "rec");
        if done == TASKS as u64 {
            Ok(())
        } else {
            Err(format!("{done} of {TASKS} succeeded"))
        }
    });
    assert_eq!(most, QUOTA, "the rule wanted 3 machines");
    for (i, id) in tasks.iter().enumerate().step_by(13) {
        assert_eq!(c.output(*id), format!("task-{i}\n"));
    }

    // The workers are the provider's containers: the agent image, on the test's network.
    let instances = setup.instances();
    let names: BTreeSet<String> = instances.iter().map(|i| i.name.clone()).collect();
    assert_eq!(names.len(), QUOTA, "{instances:?}");
    for name in &names {
        let seen = images::docker(&[
            "inspect",
            "-f",
            "{{.Config.Image}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            name,
        ]);
        assert_eq!(
            seen.trim(),
            format!("{} {}", setup.agent_image(), setup.network_name()),
            "{name}"
        );
    }
    let workers = recruited_workers(&c);
    assert_eq!(workers.len(), QUOTA, "{workers:?}");
    for w in &workers {
        assert!(
            w["name"].as_str().is_some_and(|n| names.contains(n)),
            "{w} is not one of the containers {names:?}"
        );
        assert_eq!(w["batch"], "rec", "{w}");
        assert_eq!(w["concurrency"], 2, "{w}");
    }
    let ran_on: BTreeSet<i64> = tasks
        .iter()
        .filter_map(|id| c.task(*id)["worker_id"].as_i64())
        .collect();
    let recruited: BTreeSet<i64> = workers.iter().filter_map(|w| w["id"].as_i64()).collect();
    assert!(
        !ran_on.is_empty() && ran_on.is_subset(&recruited),
        "tasks ran on {ran_on:?}, recruited workers are {recruited:?}"
    );

    // A used enrollment token is refused, naming why (replayed from this host, through the
    // published port).
    let (name, token) = token.expect("a running machine's token");
    let home = tempfile::tempdir().expect("a temp dir");
    let mut replay = std::process::Command::new(bin("scitq-agent"));
    replay
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--server", &format!("https://{}", setup.addr())])
        .args(["--name", &name, "--enroll-token", &token])
        .arg("--server-ca")
        .arg(setup.ca())
        .arg("--work-dir")
        .arg(home.path().join("work"));
    let out = output_within(&mut replay, LONG);
    assert!(!out.status.success(), "{}", describe(&out));
    let said = describe(&out);
    assert!(said.contains("used"), "{said}");

    // Idle with nothing waiting: every machine is drained, destroyed and forgotten.
    scitq_tests::poll(LONG, "every recruited machine destroyed", || {
        let left = check_quota(&setup, &owner);
        let containers = images::containers_labelled(scitq_provisioner::OWNER_TAG, &owner);
        let workers = recruited_workers(&c);
        if left == 0 && containers.is_empty() && workers.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{left} instances, containers {containers:?}, workers {workers:?}"
            ))
        }
    });
    let jobs = setup.jobs();
    let count = |kind: &str| {
        jobs.iter()
            .filter(|j| j["kind"] == kind && j["status"] == "succeeded")
            .count()
    };
    assert!(
        count("create") > QUOTA,
        "the never-connected ones and 3 more: {jobs:?}"
    );
    assert_eq!(
        count("create"),
        count("destroy"),
        "every created machine destroyed: {jobs:?}"
    );
    assert!(jobs.iter().all(|j| j["status"] != "running"), "{jobs:?}");
}

#[test]
fn containerised_scitqd_killed_while_recruiting_leaves_no_orphan() {
    let mut setup = start();
    let c = setup.client();
    let tasks: Vec<i64> = (0..12)
        .map(|i| c.create_sh("kill", &format!("sleep 1; echo task-{i}"), &[]))
        .collect();
    setup.ctl_json([
        "recruiter",
        "add",
        "--batch",
        "kill",
        "--provider",
        "local",
        "--max-workers",
        "3",
        "--idle-timeout",
        "3s",
    ]);
    // Killed as soon as the first create is written down.
    let owner = scitq_tests::poll(LONG, "a first create job", || {
        setup.owner().ok_or_else(|| "no job yet".to_owned())
    });
    setup.kill9();

    // While it is down, a container under its owner id appears that it has no record of
    // (a create that reached docker when the record of it did not survive).
    let orphan = block_on(setup.provider(&owner).create(&InstanceSpec {
        name: format!("{owner}-orphan"),
        flavor: "local".to_owned(),
        ..InstanceSpec::default()
    }))
    .expect("an orphan instance");
    check_quota(&setup, &owner);
    setup.start_again();
    // scitqd listens on another published port now.
    let c = setup.client();

    scitq_tests::poll(LONG, "the batch to succeed after the restart", || {
        check_quota(&setup, &owner);
        let done = succeeded(&c, "kill") as usize;
        if done == tasks.len() {
            Ok(())
        } else {
            Err(format!("{done} of {} succeeded", tasks.len()))
        }
    });
    scitq_tests::poll(LONG, "no instance left, orphan included", || {
        let left = check_quota(&setup, &owner);
        let containers = images::containers_labelled(scitq_provisioner::OWNER_TAG, &owner);
        let running = setup
            .jobs()
            .into_iter()
            .filter(|j| j["status"] == "running")
            .count();
        if left == 0 && containers.is_empty() && running == 0 {
            Ok(())
        } else {
            Err(format!(
                "{left} instances, containers {containers:?}, {running} jobs running"
            ))
        }
    });
    assert!(
        setup.log_tail(400).contains(&orphan.name),
        "scitqd says it destroyed the orphan"
    );
    scitq_tests::recruiting::assert_jobs_settled(&setup.jobs());
}
