//! Container tasks end to end, on this machine's Docker daemon: a tiny busybox image built
//! locally, a private registry with htpasswd auth, the real scitqd and scitq-agent.
//! Without a reachable daemon these tests fail (building the image panics); they never skip.
//! Every container and image they make is removed by id or tag.

use std::time::Duration;

use scitq_tests::images::{containers_labelled, containers_with, docker, remove_containers};
use scitq_tests::{Agent, Image, Registry, S3Server, Server, ServerOpts, as_id, poll, str_field};

const CONNECT: Duration = Duration::from_secs(60);
const RUN: Duration = Duration::from_secs(90);

/// An agent whose containers get no network (tests create none).
fn agent(server: &Server, name: &str, concurrency: u32, extra: &[&str]) -> Agent {
    let mut args = vec!["--docker-network", "none"];
    args.extend_from_slice(extra);
    let agent = Agent::start(server, name, concurrency, &args);
    server.client().wait_worker_online(name, CONNECT);
    agent
}

/// Removes every container an agent made, whatever the test's outcome.
struct Containers(String);

impl Containers {
    fn of(agent: &Agent) -> Containers {
        Containers(agent.work_dir().to_string_lossy().into_owned())
    }

    fn all(&self) -> Vec<String> {
        containers_labelled("scitq.agent", &self.0)
    }

    fn of_execution(&self, execution: i64) -> Vec<String> {
        containers_with(&[
            ("scitq.agent", &self.0),
            ("scitq.execution", &execution.to_string()),
        ])
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        remove_containers(&self.all());
    }
}

fn last_execution(task: &serde_json::Value) -> serde_json::Value {
    task["executions"]
        .as_array()
        .and_then(|e| e.last().cloned())
        .unwrap_or_else(|| panic!("no execution: {task:#}"))
}

fn stderr_of(server: &Server, id: i64) -> String {
    let out = server.ctl(["task", "output", &id.to_string()]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_container_task_sees_its_folders_and_cpu_and_its_output_and_exit_code_come_back() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let a = agent(&server, "boxed", 1, &["--keep-failed", "1h"]);
    let containers = Containers::of(&a);

    let script = "echo INPUT=$INPUT OUTPUT=$OUTPUT TEMP=$TEMP RESOURCE=$RESOURCE CPU=$CPU GREETING=$GREETING; \
                  ls -d /input /output /tmp /resource; pwd; \
                  echo made > /output/result.txt; \
                  touch /resource/x 2>/dev/null || echo resource is read-only; \
                  echo to-stderr >&2; exit 3";
    let id = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        "-e GREETING=hi",
        "--container-option=--workdir=/tmp",
        "--shell",
        "--",
        script,
    ]);
    let task = c.wait_task(id, "failed", RUN);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        c.output(id),
        format!(
            "INPUT=/input OUTPUT=/output TEMP=/tmp RESOURCE=/resource CPU={cpus} GREETING=hi\n\
             /input\n/output\n/resource\n/tmp\n/tmp\nresource is read-only\n"
        )
    );
    assert_eq!(stderr_of(&server, id), "to-stderr\n");
    let execution = last_execution(&task);
    assert_eq!(execution["exit_code"], 3, "{execution:#}");
    assert_eq!(
        str_field(&execution, "failure").to_lowercase(),
        "run",
        "{execution:#}"
    );
    let exec_id = as_id(&execution["id"]);
    let result = a
        .work_dir()
        .join(format!("exec-{exec_id}/output/result.txt"));
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "made\n");
    // Kept for inspection after a failure.
    assert_eq!(containers.of_execution(exec_id).len(), 1);

    // A success: its container is removed at once.
    let ok = c.create(&["--container", image.tag(), "--", "echo", "fine"]);
    let task = c.wait_task(ok, "succeeded", RUN);
    assert_eq!(c.output(ok), "fine\n");
    let ok_exec = as_id(&last_execution(&task)["id"]);
    poll(
        RUN,
        "the succeeded task's container to be removed",
        || match containers.of_execution(ok_exec).as_slice() {
            [] => Ok(()),
            left => Err(format!("{left:?}")),
        },
    );
}

#[test]
fn a_forbidden_container_option_is_refused_at_create_and_creates_nothing() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    for option in ["--privileged", "--pid=host", "--cap-add=SYS_ADMIN"] {
        let out = server.ctl([
            "task",
            "create",
            "--container",
            "busybox",
            "--container-option",
            option,
            "--",
            "true",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{option} was accepted");
        let named = option.split('=').next().unwrap();
        assert!(
            stderr.contains(&format!("container option \"{named}\" is not allowed")),
            "{stderr}"
        );
    }
    let out = server.ctl([
        "task",
        "create",
        "--container",
        "busybox",
        "--container-option",
        "-v relative:/x",
        "--",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute host path"));
    assert_eq!(c.task_count(), 0);

    // Edits are checked the same way, and a refused edit changes nothing.
    let id = c.create(&[
        "--container",
        "busybox",
        "--container-option",
        "--shm-size=1g",
        "--",
        "true",
    ]);
    let out = server.ctl([
        "task",
        "edit",
        &id.to_string(),
        "--container-option",
        "--privileged",
    ]);
    assert!(!out.status.success(), "the edit was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("container option \"--privileged\" is not allowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.task(id)["container_options"],
        serde_json::json!(["--shm-size=1g"])
    );
}

/// A server whose config hands out `password` for the registry.
fn server_for(registry: &Registry, password: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scitqd.toml");
    std::fs::write(
        &config,
        format!(
            "[[registry]]\nhost = \"{}\"\nusername = \"{}\"\npassword = \"{password}\"\n",
            registry.host(),
            registry.user()
        ),
    )
    .unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--config")
            .arg(config.to_str().unwrap()),
    );
    drop(dir);
    server
}

#[test]
fn images_are_pulled_from_a_private_registry_with_the_servers_credentials() {
    let image = Image::tiny();
    let registry = Registry::start("scitq", "right-password");
    let reference = registry.push(&image, "tiny");
    let pulled = Image::named(&reference);

    // Wrong password: the task fails with the registry's refusal, quickly.
    {
        let server = server_for(&registry, "wrong-password");
        let c = server.client();
        let a = agent(&server, "denied", 1, &[]);
        let _containers = Containers::of(&a);
        let id = c.create(&["--container", &reference, "--", "echo", "never"]);
        let task = c.wait_task(id, "failed", RUN);
        let message = str_field(&last_execution(&task), "message");
        assert!(
            message.contains(&format!("cannot pull image {reference}"))
                && message.to_lowercase().contains("unauthorized"),
            "{message}"
        );
        assert_eq!(c.output(id), "");
    }

    // Right password: pulled, run, output back.
    let server = server_for(&registry, registry.password());
    let c = server.client();
    let a = agent(&server, "puller", 1, &[]);
    let _containers = Containers::of(&a);
    let id = c.create(&[
        "--container",
        &reference,
        "--shell",
        "--",
        "echo pulled; ls /bin/busybox",
    ]);
    c.wait_task(id, "succeeded", RUN);
    assert_eq!(c.output(id), "pulled\n/bin/busybox\n");

    // An image the registry does not have: failed with its message, nothing else affected.
    let missing = format!("{}/not-there:1", registry.host());
    let id = c.create(&["--container", &missing, "--", "true"]);
    let task = c.wait_task(id, "failed", RUN);
    let message = str_field(&last_execution(&task), "message");
    assert!(
        message.contains(&format!("cannot pull image {missing}")) && message.contains("not-there"),
        "{message}"
    );
    let again = c.create(&["--container", &reference, "--", "echo", "still fine"]);
    c.wait_task(again, "succeeded", RUN);
    drop(pulled);
}

/// Polls `docker inspect` of the task's container until `probe` accepts its state.
fn container_of(containers: &Containers, c: &scitq_tests::Client, id: i64) -> String {
    poll(RUN, format!("the container of task {id}"), || {
        let exec = c.task(id)["execution_id"]
            .as_i64()
            .ok_or("no execution yet")?;
        containers
            .of_execution(exec)
            .into_iter()
            .next()
            .ok_or_else(|| "no container yet".to_owned())
    })
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
        .trim()
        .to_owned()
}

#[test]
fn pause_resume_kill_and_timeout_map_to_the_container() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let a = agent(&server, "steered", 2, &[]);
    let containers = Containers::of(&a);

    let ticker = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let id = c.create(&["--container", image.tag(), "--shell", "--", ticker]);
    let container = container_of(&containers, &c, id);
    poll(RUN, "ticks", || {
        let out = c.output(id);
        if out.lines().count() >= 3 {
            Ok(())
        } else {
            Err(out)
        }
    });

    c.ctl_ok(["task", "pause", &id.to_string()]);
    poll(RUN, "the container to be paused", || {
        match inspect(&container, "{{.State.Paused}}").as_str() {
            "true" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    let frozen = c.output(id).len();
    c.ctl_ok(["task", "resume", &id.to_string()]);
    poll(RUN, "the container to run and print again", || {
        let paused = inspect(&container, "{{.State.Paused}}");
        let grown = c.output(id).len();
        if paused == "false" && grown > frozen {
            Ok(())
        } else {
            Err(format!("{paused} {grown}"))
        }
    });

    c.ctl_ok(["task", "kill", &id.to_string()]);
    let task = c.wait_task(id, "failed", RUN);
    let execution = last_execution(&task);
    assert_eq!(
        str_field(&execution, "failure").to_lowercase(),
        "killed",
        "{execution:#}"
    );
    assert_eq!(inspect(&container, "{{.State.Running}}"), "false");

    let slow = c.create(&[
        "--container",
        image.tag(),
        "--timeout",
        "1s",
        "--",
        "sleep",
        "60",
    ]);
    let task = c.wait_task(slow, "failed", Duration::from_secs(40));
    let execution = last_execution(&task);
    assert_eq!(
        str_field(&execution, "failure").to_lowercase(),
        "timeout",
        "{execution:#}"
    );
    assert!(
        str_field(&execution, "message").contains("time limit of 1s"),
        "{execution:#}"
    );
}

#[test]
fn a_restarted_agent_reattaches_to_running_and_exited_containers() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let flags = tempfile::tempdir().unwrap();
    let flags_dir = flags.path().display().to_string();
    let mut a = agent(&server, "phoenix", 3, &["--allow-mount", &flags_dir]);
    let containers = Containers::of(&a);
    let volume = format!("-v {flags_dir}:/flags");
    let waiter = |name: &str| {
        format!(
            "echo {name} one; while [ ! -e /flags/{name} ]; do sleep 0.05; done; echo {name} two"
        )
    };
    let running = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        &volume,
        "--shell",
        "--",
        &waiter("a"),
    ]);
    let exited = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        &volume,
        "--shell",
        "--",
        &waiter("b"),
    ]);
    // Its time limit must survive the restart too: long enough to outlast the kill below
    // on a loaded machine (checked there), short enough to end this test soon.
    let limit = Duration::from_secs(15);
    let timed = c.create(&[
        "--container",
        image.tag(),
        "--timeout",
        "15s",
        "--shell",
        "--",
        "echo slow; sleep 60",
    ]);
    for id in [running, exited, timed] {
        poll(RUN, format!("task {id} to print"), || {
            let out = c.output(id);
            if out.ends_with("one\n") || out == "slow\n" {
                Ok(())
            } else {
                Err(out)
            }
        });
    }
    let exited_container = container_of(&containers, &c, exited);
    let timed_container = container_of(&containers, &c, timed);

    a.kill9();
    // Only the restarted agent can end the timed task: it must still run now.
    assert_eq!(
        inspect(&timed_container, "{{.State.Running}}"),
        "true",
        "the timed task ended before the agent's kill: the restart path is not exercised"
    );
    // One container ends while no agent watches it.
    std::fs::write(flags.path().join("b"), "").unwrap();
    poll(RUN, "the container to exit", || {
        match inspect(&exited_container, "{{.State.Running}}").as_str() {
            "false" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    a.start_again();
    poll(RUN, "the restarted agent to connect", || {
        let log = a.log_tail(200);
        if log.contains("connected to") {
            Ok(())
        } else {
            Err(log)
        }
    });
    c.wait_task(exited, "succeeded", RUN);
    let task = c.wait_task(timed, "failed", RUN);
    let execution = last_execution(&task);
    assert_eq!(
        str_field(&execution, "failure").to_lowercase(),
        "timeout",
        "{execution:#}"
    );
    // Timed on the container itself: its limit counts from its start, which the execution's
    // started_at follows by however long the first agent took to report it (on a loaded
    // machine, longer than the restarted agent took to report the end: 14.968 s was seen).
    let at = |field: &str| {
        let text = inspect(&timed_container, &format!("{{{{.State.{field}}}}}"));
        humantime::parse_rfc3339_weak(&text)
            .unwrap_or_else(|e| panic!("{field} {text} of container {timed_container}: {e}"))
    };
    let ran = at("FinishedAt")
        .duration_since(at("StartedAt"))
        .unwrap_or_default();
    assert!(
        ran >= limit && ran < limit + Duration::from_secs(40),
        "the timed container ran {ran:?} for a {limit:?} limit: {execution:#}"
    );
    assert_eq!(c.output(timed), "slow\n");
    assert_eq!(c.output(exited), "b one\nb two\n");
    assert_eq!(c.status(running), "running");
    std::fs::write(flags.path().join("a"), "").unwrap();
    let task = c.wait_task(running, "succeeded", RUN);
    assert_eq!(c.output(running), "a one\na two\n");
    assert_eq!(task["executions"].as_array().unwrap().len(), 1, "{task:#}");
}

#[test]
fn failed_containers_are_kept_for_a_while_then_removed() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let keep = Duration::from_secs(5);
    let a = agent(&server, "janitor", 1, &["--keep-failed", "5s"]);
    let containers = Containers::of(&a);
    let id = c.create(&["--container", image.tag(), "--", "false"]);
    let task = c.wait_task(id, "failed", RUN);
    let execution = last_execution(&task);
    let exec = as_id(&execution["id"]);
    let failed_at = humantime::parse_rfc3339_weak(&str_field(&execution, "finished_at"))
        .unwrap_or_else(|e| panic!("finished_at of {execution:#}: {e}"));
    let dir = a.work_dir().join(format!("exec-{exec}"));
    // Kept after the failure: checked only while the keep lasts (a loaded machine may come
    // later than 5 s; the removal is then still checked below).
    let kept = (containers.of_execution(exec).len(), dir.exists());
    let age = failed_at.elapsed().unwrap_or_default();
    if age < keep {
        assert_eq!(
            kept,
            (1, true),
            "container and work dir kept after the failure"
        );
    } else {
        eprintln!("checked {age:?} after the failure, past the keep: not checking it was kept");
    }
    poll(
        keep + Duration::from_secs(60),
        "the failed container and work dir to go",
        || {
            let left = containers.of_execution(exec);
            if left.is_empty() && !dir.exists() {
                Ok(())
            } else {
                Err(format!("{left:?} {}", dir.exists()))
            }
        },
    );
}

#[test]
fn a_pull_longer_than_the_pull_timeout_fails_the_task() {
    // A registry that accepts connections and never answers: the pull hangs until the
    // agent's --pull-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reference = format!("{}/silent/image:1", silent.local_addr().unwrap());
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let a = agent(&server, "impatient", 1, &["--pull-timeout", "3s"]);
    let _containers = Containers::of(&a);
    let started = std::time::Instant::now();
    let id = c.create(&["--container", &reference, "--", "echo", "never"]);
    let task = c.wait_task(id, "failed", RUN);
    let execution = last_execution(&task);
    let message = str_field(&execution, "message");
    assert!(
        message.contains(&format!("cannot pull image {reference}")),
        "{execution:#}"
    );
    assert!(
        message.contains("3s") || message.to_lowercase().contains("timed out"),
        "the message says the pull took too long: {message}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "failed before the timeout: {message}"
    );
    assert_eq!(c.output(id), "");
    drop(silent);
}

#[test]
fn past_the_disk_threshold_a_failed_container_is_removed_at_once() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    // Kept 40 s, but any filesystem is fuller than 1 %: nothing is kept. The janitor looks
    // every 10 s (a quarter of the keep), so the removal comes well before the keep ends.
    let keep = Duration::from_secs(40);
    let a = agent(
        &server,
        "thrifty",
        1,
        &["--keep-failed", "40s", "--disk-threshold", "1"],
    );
    let containers = Containers::of(&a);
    let id = c.create(&["--container", image.tag(), "--", "false"]);
    let task = c.wait_task(id, "failed", RUN);
    let execution = last_execution(&task);
    let exec = as_id(&execution["id"]);
    let failed_at = humantime::parse_rfc3339_weak(&str_field(&execution, "finished_at"))
        .unwrap_or_else(|e| panic!("finished_at of {execution:#}: {e}"));
    let dir = a.work_dir().join(format!("exec-{exec}"));
    poll(RUN, "the failed container and work dir to go", || {
        let left = containers.of_execution(exec);
        if left.is_empty() && !dir.exists() {
            Ok(())
        } else {
            Err(format!("{left:?} {}", dir.exists()))
        }
    });
    let after = failed_at.elapsed().unwrap_or_default();
    assert!(
        after < keep,
        "removed {after:?} after the failure: the keep ({keep:?}), not the threshold, did it"
    );
}

#[test]
fn a_registry_credential_goes_only_with_an_image_of_that_registry() {
    let image = Image::tiny();
    // Two registries that accept the same login; scitqd knows only the first. A task whose
    // image is on the second must get no credential: its pull is refused.
    let known = Registry::start("scitq", "shared-password");
    let other = Registry::start("scitq", "shared-password");
    let on_known = known.push(&image, "tiny");
    let on_other = other.push(&image, "tiny");
    let _pulled = (Image::named(&on_known), Image::named(&on_other));
    let server = server_for(&known, known.password());
    let c = server.client();
    let a = agent(&server, "scoped", 1, &[]);
    let _containers = Containers::of(&a);

    let id = c.create(&["--container", &on_other, "--", "echo", "never"]);
    let task = c.wait_task(id, "failed", RUN);
    let message = str_field(&last_execution(&task), "message");
    assert!(
        message.contains(&format!("cannot pull image {on_other}"))
            && message.contains("no basic auth credentials"),
        "{message}"
    );
    // The same login on the known registry works: the refusal above is the missing credential.
    let id = c.create(&["--container", &on_known, "--", "echo", "pulled"]);
    c.wait_task(id, "succeeded", RUN);
    assert_eq!(c.output(id), "pulled\n");
}

/// The original scitq's own setup: an rclone remote named `s3` (here moto) makes
/// `s3://bucket/key` that remote's, for a docker task's input and output and for
/// `scitqctl fetch`, rather than AWS's.
#[test]
fn s3_uris_go_to_the_rclone_remote_named_s3_when_there_is_one() {
    let image = Image::tiny();
    let s3 = S3Server::start(&["mybucket"]);
    s3.put_object("mybucket", "inputs/reads.txt", b"ACGT\n");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    std::fs::write(&conf, s3.rclone_section("s3")).unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    // The built-in s3:// would take this endpoint, where nothing listens.
    let a = Agent::start_with_env(
        &server,
        "s3user",
        1,
        &["--docker-network", "none"],
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
    );
    c.wait_worker_online("s3user", CONNECT);
    let _containers = Containers::of(&a);

    let id = c.create(&[
        "--container",
        image.tag(),
        "--input",
        "s3://mybucket/inputs/reads.txt",
        "--output",
        "s3://mybucket/results/",
        "--shell",
        "--",
        "cat /input/reads.txt /input/reads.txt > /output/twice.txt",
    ]);
    c.wait_task(id, "succeeded", RUN);
    assert_eq!(
        s3.get_object("mybucket", "results/twice.txt").unwrap(),
        b"ACGT\nACGT\n"
    );

    let back = c.scratch_path("results");
    c.ctl_ok([
        "fetch",
        "sync",
        "s3://mybucket/results",
        &back.display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(back.join("twice.txt")).unwrap(),
        "ACGT\nACGT\n"
    );
}
