//! Recruitment for real, with the local provider: scitqd recruits agents (processes on this
//! machine) for a batch while its tasks wait; they enroll with their single-use tokens, run
//! the batch and are destroyed once idle. The provider's own listing is checked against the
//! quota at every step. The agents reach scitqd through a proxy the test can cut, to play
//! machines that never connect.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use scitq_provisioner::{Instance, InstanceSpec, InstanceState, Provider};
use scitq_tests::recruiting::{LocalProviderOpts, LocalRecruiting, block_on};
use scitq_tests::{Agent, Server, ServerOpts, poll};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(180);
const QUOTA: usize = 3;

/// scitqd with one local provider (at most [`QUOTA`] instances), its agents behind a proxy.
fn start() -> LocalRecruiting {
    LocalRecruiting::start(LocalProviderOpts {
        max_instances: QUOTA,
        deploy_timeout: Duration::from_secs(8),
        interval: Duration::from_millis(300),
    })
}

/// The quota holds, by the provider's own count of the instances scitqd created (not one a
/// test made behind its back).
fn check_quota(setup: &LocalRecruiting) -> usize {
    let instances: Vec<Instance> = setup
        .instances()
        .into_iter()
        .filter(|i| i.tags.contains_key("scitq-machine"))
        .collect();
    assert!(
        instances.len() <= QUOTA,
        "{} instances exist, the quota is {QUOTA}: {instances:?}",
        instances.len()
    );
    instances.len()
}

/// Succeeded tasks of a batch, in one call.
fn succeeded(c: &scitq_tests::Client, batch: &str) -> u64 {
    c.batches()
        .iter()
        .find(|b| b["name"] == batch)
        .and_then(|b| b["counts"]["succeeded"].as_u64())
        .unwrap_or(0)
}

fn recruited_workers(server: &Server) -> Vec<Value> {
    server
        .client()
        .workers()
        .into_iter()
        .filter(|w| w["provider"] == "local")
        .collect()
}

#[test]
fn a_batch_recruits_local_agents_that_enroll_run_it_and_go_when_idle() {
    let setup = start();
    let c = setup.server.client();
    // No agent reaches scitqd at first: the first machines never connect.
    setup.proxy.cut();
    let tasks: Vec<i64> = (0..40)
        .map(|i| c.create_sh("rec", &format!("sleep 0.3; echo task-{i}"), &[]))
        .collect();
    let rule = setup.server.ctl_json([
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
        "8s",
    ]);
    assert_eq!(rule["max_workers"], 3, "{rule}");

    // Machines that never connect are destroyed after the deploy timeout and replaced.
    poll(LONG, "a machine destroyed for never connecting", || {
        check_quota(&setup);
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
    let rules = setup.server.ctl_json(["recruiter", "list"]);
    assert_eq!(rules[0]["failures"], 1, "{rules}");
    setup.proxy.restore();

    // The replacements enroll and run the batch; the quota holds all along.
    let mut most = 0;
    // A running machine's enrollment token, read while it runs (for the replay below).
    let mut token = None;
    poll(LONG, "the batch to succeed on recruited agents", || {
        most = most.max(check_quota(&setup));
        if token.is_none()
            && let Some(running) = setup
                .instances()
                .into_iter()
                .find(|i| i.state == InstanceState::Running)
        {
            token = Some((running.name.clone(), setup.token_of(&running.name)));
        }
        let done = succeeded(&c, "rec");
        if done == tasks.len() as u64 {
            Ok(())
        } else {
            Err(format!("{done} of {} succeeded", tasks.len()))
        }
    });
    assert_eq!(most, QUOTA, "the rule wanted 3 machines");
    let instances = setup.instances();
    assert!(
        instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count()
            == QUOTA,
        "{instances:?}"
    );
    let workers = recruited_workers(&setup.server);
    assert_eq!(workers.len(), 3, "{workers:?}");
    for w in &workers {
        assert_eq!(
            (&w["flavor"], &w["region"]),
            (&"local".into(), &"local".into()),
            "{w}"
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
    let rules = setup.server.ctl_json(["recruiter", "list"]);
    assert_eq!(
        rules[0]["failures"], 0,
        "a connection clears the failures: {rules}"
    );

    // A used enrollment token is refused, naming why.
    let (name, token) = token.expect("a running machine's token");
    let no_config = setup.server.home().join("no-client-config");
    let mut replay = Agent::start_with_env(
        &setup.server,
        &name,
        1,
        &[],
        &[
            ("XDG_CONFIG_HOME", no_config.to_str().expect("utf-8 path")),
            ("SCITQ_ENROLL_TOKEN", &token),
        ],
    );
    let status = replay
        .wait_exit(LONG)
        .expect("an agent replaying a used token stops");
    assert!(!status.success(), "{status:?}");
    let log = replay.log_tail(30);
    assert!(log.contains("used"), "{log}");

    // Idle with nothing waiting: every machine is drained, destroyed and forgotten.
    poll(LONG, "every recruited machine destroyed", || {
        let left = check_quota(&setup);
        let workers = recruited_workers(&setup.server);
        if left == 0 && workers.is_empty() {
            Ok(())
        } else {
            Err(format!("{left} instances, workers {workers:?}"))
        }
    });
    let jobs = setup.jobs();
    let creates = jobs
        .iter()
        .filter(|j| j["kind"] == "create" && j["status"] == "succeeded")
        .count();
    let destroys = jobs
        .iter()
        .filter(|j| j["kind"] == "destroy" && j["status"] == "succeeded")
        .count();
    assert!(
        creates >= 4,
        "the never-connected ones and 3 more: {jobs:?}"
    );
    assert_eq!(
        creates, destroys,
        "every created machine destroyed: {jobs:?}"
    );
    assert!(jobs.iter().all(|j| j["status"] != "running"), "{jobs:?}");

    // /metrics counts the cloud calls and the machines.
    let metrics = std::process::Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "-H",
            &format!("Authorization: Bearer {}", setup.server.admin_token()),
            &format!("http://{}/metrics", setup.server.addr()),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&metrics.stdout);
    let sample = |name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sample(
            "scitq_provider_calls_total",
            &["operation=\"create\"", "outcome=\"ok\""]
        ),
        creates as f64,
        "{text}"
    );
    assert_eq!(
        sample("scitq_recruited_machines_total", &["event=\"destroyed\""]),
        destroys as f64,
        "{text}"
    );
    assert!(
        sample("scitq_recruiter_pass_seconds_count", &[]) > 10.0,
        "{text}"
    );
}

#[test]
fn scitqd_killed_while_recruiting_leaves_no_orphan() {
    let mut setup = start();
    let c = setup.server.client();
    let tasks: Vec<i64> = (0..12)
        .map(|i| c.create_sh("kill", &format!("sleep 1; echo task-{i}"), &[]))
        .collect();
    setup.server.ctl_json([
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
    let owner = poll(LONG, "a first create job", || {
        setup.owner().ok_or_else(|| "no job yet".to_owned())
    });
    setup.server.kill9();

    // While it is down, an instance under its owner id appears that it has no record of
    // (a create that reached the cloud when the record of it did not survive).
    let provider = setup.provider(&owner);
    let orphan = block_on(provider.create(&InstanceSpec {
        name: format!("{owner}-orphan"),
        flavor: "local".to_owned(),
        ..InstanceSpec::default()
    }))
    .expect("an orphan instance");
    setup.server.start_again();
    setup.proxy.retarget(&setup.server.addr());

    poll(LONG, "the batch to succeed after the restart", || {
        check_quota(&setup);
        let done = succeeded(&c, "kill") as usize;
        if done == tasks.len() {
            Ok(())
        } else {
            Err(format!("{done} of {} succeeded", tasks.len()))
        }
    });
    poll(LONG, "no instance left, orphan included", || {
        let left = setup.instances();
        let running = setup
            .jobs()
            .into_iter()
            .filter(|j| j["status"] == "running")
            .count();
        if left.is_empty() && running == 0 {
            Ok(())
        } else {
            Err(format!("{left:?}, {running} jobs running"))
        }
    });
    assert!(
        setup.server.log_tail(400).contains(&orphan.name),
        "scitqd says it destroyed the orphan"
    );
    scitq_tests::recruiting::assert_jobs_settled(&setup.jobs());
}

/// The install script of a recruited machine's cloud-init, as scitqd renders it, run for real
/// (under a scratch root) against the agent binary scitqd serves.
#[test]
fn a_machine_installs_the_agent_scitqd_serves_and_refuses_one_that_does_not_match() {
    let server = Server::start(ServerOpts::default());
    let base = format!("http://{}", server.addr());
    let agent = scitq_tests::bin("scitq-agent");
    let sha256 = |path: &Path| -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a digest")
            .to_owned()
    };
    let want = sha256(&agent);
    // scitqd publishes the digest of what it serves.
    let published = std::process::Command::new("curl")
        .args([
            "--fail",
            "--silent",
            &format!("{base}/agent/scitq-agent.sha256"),
        ])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&published.stdout),
        format!("{want}  scitq-agent\n")
    );

    let install = |digest: &str| {
        let text = scitq_server::core::enroll_user_data::render(
            &scitq_server::core::enroll_user_data::UserData {
                server: &base,
                name: "machine-1",
                enroll_token: "0123456789abcdef",
                concurrency: 2,
                prefetch: None,
                agent_url: &format!("{base}/agent/scitq-agent"),
                agent_sha256: digest,
                server_ca_pem: None,
                batch: Some("rec"),
            },
        )
        .expect("user data");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("cloud-config YAML");
        let script = doc["write_files"]
            .as_sequence()
            .expect("write_files")
            .iter()
            .find(|f| f["path"] == "/usr/local/lib/scitq/install-agent")
            .and_then(|f| f["content"].as_str())
            .expect("the install script")
            .to_owned();
        let root = tempfile::tempdir().expect("a scratch root");
        let path = root.path().join("install-agent");
        std::fs::write(&path, script).expect("write the script");
        let out = std::process::Command::new("sh")
            .arg(&path)
            .env("ROOT", root.path())
            .output()
            .expect("run the install script");
        (out, root)
    };

    let (out, root) = install(&want);
    assert!(out.status.success(), "{}", scitq_tests::describe(&out));
    let installed = root.path().join("usr/local/bin/scitq-agent");
    assert_eq!(sha256(&installed), want);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&installed)
        .expect("installed")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // A binary that is not the one the user data names is refused, and nothing is left.
    let (out, root) = install(&"0".repeat(64));
    assert!(!out.status.success(), "{}", scitq_tests::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not have sha256"), "{stderr}");
    let bin_dir = root.path().join("usr/local/bin");
    let left: Vec<_> = std::fs::read_dir(&bin_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?} left in {}", bin_dir.display());
}

/// `scitqd --check-providers`: providers that answer (the local one, an OpenStack one and an
/// Azure one on the fake clouds of scitq-testkit) are reported with their flavors, one that
/// cannot be reached fails the check, naming it and the error's class.
#[test]
fn check_providers_reports_each_provider() {
    use scitq_testkit::azure::{
        self as fake_arm, CLIENT_SECRET, LOCATION, RG, SUB, SUBNET, TENANT,
    };
    use scitq_testkit::openstack::{self as fake_cloud, PASSWORD, PROJECT, REGION, USER};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the fake clouds");
    let fake = runtime.block_on(fake_cloud::start());
    let arm = runtime.block_on(fake_arm::start());
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("scitqd.toml");
    // Nothing listens on port 1: the cloud cannot be reached.
    std::fs::write(
        &config,
        format!(
            "[[provider]]\nname = \"here\"\nkind = \"local\"\n\n\
             [[provider]]\nname = \"cloud\"\nkind = \"openstack\"\n\
             auth_url = \"http://127.0.0.1:1/v3\"\nusername = \"u\"\npassword = \"p\"\n\
             project = \"p\"\nregions = [\"R1\"]\nimage = \"Debian 12\"\n\n\
             [[provider]]\nname = \"ovh\"\nkind = \"openstack\"\nauth_url = \"{auth}\"\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\nproject = \"{PROJECT}\"\n\
             regions = [\"{REGION}\"]\nimage = \"Debian 12\"\n\n\
             [[provider]]\nname = \"az\"\nkind = \"azure\"\ntenant_id = \"{TENANT}\"\n\
             client_id = \"app-id\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             subscription_id = \"{SUB}\"\nresource_group = \"{RG}\"\nsubnet_id = \"{SUBNET}\"\n\
             regions = [\"{LOCATION}\"]\nimage = \"Debian:debian-12:12-gen2:latest\"\n\
             authority_host = \"{arm_base}\"\nendpoint = \"{arm_base}\"\n",
            auth = fake.auth_url(),
            arm_base = arm.base(),
        ),
    )
    .expect("write the config");
    let out = std::process::Command::new(scitq_tests::bin("scitqd"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--check-providers")
        .output()
        .expect("run scitqd --check-providers");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{}", scitq_tests::describe(&out));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("here: local ok: 1 flavor(s)")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cloud: FAILED:") && l.contains("(transient)")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("ovh: openstack ok: 2 flavor(s), regions {REGION}")),
        "{stdout}"
    );
    assert_eq!(fake.count("POST /identity/v3/auth/tokens"), 1);
    assert_eq!(fake.servers(), 0, "a check creates nothing");
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("az: azure ok: 2 flavor(s), regions {LOCATION}")),
        "{stdout}"
    );
    assert!(
        arm.count_prefix(&format!("POST /{TENANT}/oauth2/v2.0/token")) > 0,
        "the check authenticated"
    );
    assert!(
        arm.lock().cloud.resources.is_empty(),
        "a check creates nothing"
    );
    // A bad block is refused before anything is tried, naming the provider and the key.
    std::fs::write(
        &config,
        "[[provider]]\nname = \"x\"\nkind = \"local\"\nimage_typo = 1\n",
    )
    .expect("write the config");
    let out = std::process::Command::new(scitq_tests::bin("scitqd"))
        .arg("--config")
        .arg(&config)
        .arg("--check-providers")
        .output()
        .expect("run scitqd --check-providers");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        scitq_tests::describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image_typo"),
        "{}",
        scitq_tests::describe(&out)
    );
}
