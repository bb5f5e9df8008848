//! The everyday flow: many tasks on several agents, live output, `launch`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use scitq_tests::{
    Agent, Backend, ChildGuard, Server, ServerOpts, as_id, describe, str_field, touch,
    wait_for_file_sh,
};

const CONNECT: Duration = Duration::from_secs(60);

fn five_hundred_tasks_on_two_agents_all_succeed_each_with_its_own_output(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _a = Agent::start(&server, "agent-a", 4, &[]);
    let _b = Agent::start(&server, "agent-b", 4, &[]);
    let id_a = c.wait_worker_online("agent-a", CONNECT);
    let id_b = c.wait_worker_online("agent-b", CONNECT);

    let commands: Vec<String> = (0..500).map(|i| format!("echo task-{i}")).collect();
    let ids = c.create_from_file(&commands, &["--batch", "many"]);
    c.wait_batch_succeeded("many", 500, Duration::from_secs(600));

    let tasks = c.tasks(&["--batch", "many"]);
    assert_eq!(tasks.len(), 500, "task list --batch many");
    let mut per_worker: BTreeMap<i64, usize> = BTreeMap::new();
    for task in &tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["exit_code"], 0, "{task}");
        *per_worker.entry(as_id(&task["worker_id"])).or_default() += 1;
    }
    assert!(
        per_worker.get(&id_a).is_some_and(|&n| n > 0)
            && per_worker.get(&id_b).is_some_and(|&n| n > 0),
        "both agents should have run tasks; tasks per worker id: {per_worker:?} (agent-a is {id_a}, agent-b is {id_b})"
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(c.output(*id), format!("task-{i}\n"), "output of task {id}");
    }
}

fn output_follow_shows_the_lines_of_a_running_task_before_it_ends(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "follower", 1, &[]);
    c.wait_worker_online("follower", CONNECT);

    let flag = c.scratch_path("follow-flag");
    let script = format!("echo first; {}; echo second", wait_for_file_sh(&flag));
    let id = c.create_sh("follow", &script, &[]);

    let mut cmd = c.command();
    cmd.args(["task", "output", &id.to_string(), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut follow = ChildGuard(cmd.spawn().expect("start scitqctl task output --follow"));
    let stdout = follow.0.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("--follow printed nothing within 60s")
        .expect("read --follow output");
    assert_eq!(first, "first");
    // The task cannot end before the flag exists: the line came through while it ran.
    assert_eq!(
        c.status(id),
        "running",
        "task {id} while its flag is missing"
    );

    touch(&flag);
    let second = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("--follow printed no second line within 60s")
        .expect("read --follow output");
    assert_eq!(second, "second");
    let status = follow
        .wait_exit(Duration::from_secs(60))
        .expect("task output --follow did not exit after the task ended");
    assert!(
        status.success(),
        "task output --follow exited with {status}"
    );
    assert!(
        lines.recv_timeout(Duration::from_secs(5)).is_err(),
        "--follow printed more than the task's two lines"
    );
    c.wait_task(id, "succeeded", Duration::from_secs(30));
}

fn launch_prints_the_output_and_exits_with_the_task_exit_code(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "launcher", 2, &[]);
    c.wait_worker_online("launcher", CONNECT);

    let out = c.ctl(["launch", "echo", "Hello world!"]);
    assert!(out.status.success(), "launch echo: {}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello world!\n");

    let out = c.ctl(["launch", "sh", "-c", "echo about to fail; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "launch sh -c 'exit 3': {}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "about to fail\n");
}

fn task_list_filters_by_batch_status_and_name(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "filter", 2, &[]);
    c.wait_worker_online("filter", CONNECT);

    let ok = c.create(&["--batch", "filters", "--name", "align-1", "--", "true"]);
    let bad = c.create(&["--batch", "filters", "--name", "align-2", "--", "false"]);
    let other = c.create(&["--batch", "filters", "--name", "count-1", "--", "true"]);
    c.wait_task(ok, "succeeded", CONNECT);
    c.wait_task(bad, "failed", CONNECT);
    c.wait_task(other, "succeeded", CONNECT);

    let ids = |args: &[&str]| -> Vec<i64> {
        let mut all = vec!["--batch", "filters"];
        all.extend_from_slice(args);
        c.tasks(&all).iter().map(|t| as_id(&t["id"])).collect()
    };
    assert_eq!(ids(&[]), vec![ok, bad, other]);
    assert_eq!(ids(&["--status", "failed"]), vec![bad]);
    assert_eq!(ids(&["--name", "align-*"]), vec![ok, bad]);
    let failed = c.task(bad);
    assert_eq!(failed["exit_code"], 1, "{failed}");
    let out = c.ctl(["task", "wait", &ok.to_string(), &bad.to_string()]);
    assert!(
        !out.status.success(),
        "task wait exited 0 although task {bad} failed: {}",
        describe(&out)
    );
    let out = c.ctl(["task", "wait", &ok.to_string(), &other.to_string()]);
    assert!(
        out.status.success(),
        "task wait on succeeded tasks: {}",
        describe(&out)
    );
    assert_eq!(str_field(&c.task(other), "status"), "succeeded");
}

fn a_stopped_batch_starts_nothing_until_go_and_delete_removes_it(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let held: Vec<i64> = (0..3)
        .map(|i| c.create(&["--batch", "steer", "--", "echo", &format!("held-{i}")]))
        .collect();
    c.ctl_ok(["batch", "stop", "steer"]);
    let _agent = Agent::start(&server, "steerer", 2, &[]);
    c.wait_worker_online("steerer", CONNECT);

    // Created after the held tasks, so it could only run first if the stop holds them back.
    let control = c.create(&["--batch", "control", "--", "echo", "control"]);
    c.wait_task(control, "succeeded", CONNECT);
    for id in &held {
        assert_eq!(c.status(*id), "pending", "task {id} of the stopped batch");
    }
    let steer = c
        .batches()
        .into_iter()
        .find(|b| b["name"] == "steer")
        .expect("batch steer listed");
    assert_eq!(steer["stopped"], true, "{steer}");
    assert_eq!(steer["counts"]["pending"], 3, "{steer}");

    c.ctl_ok(["batch", "go", "steer"]);
    c.wait_batch_succeeded("steer", 3, CONNECT);
    let out = c.ctl(["task", "wait", "--batch", "steer"]);
    assert!(
        out.status.success(),
        "task wait --batch steer: {}",
        describe(&out)
    );

    c.ctl_ok(["batch", "delete", "steer", "--yes"]);
    assert!(c.batches().iter().all(|b| b["name"] != "steer"));
    assert!(c.tasks(&["--batch", "steer"]).is_empty());
    assert_eq!(c.task_count(), 1, "only the control task is left");
}

scitq_tests::on_both_backends!(
    five_hundred_tasks_on_two_agents_all_succeed_each_with_its_own_output,
    output_follow_shows_the_lines_of_a_running_task_before_it_ends,
    launch_prints_the_output_and_exits_with_the_task_exit_code,
    task_list_filters_by_batch_status_and_name,
    a_stopped_batch_starts_nothing_until_go_and_delete_removes_it,
);

/// Issue 14: the agent's default prefetch is automatic; it never hoards long tasks that an
/// idle agent could run, and an operator can still fix it (and give it back).
#[test]
fn long_tasks_are_shared_between_agents_at_the_default_prefetch() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _a = Agent::start(&server, "fair-a", 2, &[]);
    let _b = Agent::start(&server, "fair-b", 2, &[]);
    let id_a = c.wait_worker_online("fair-a", CONNECT);
    let id_b = c.wait_worker_online("fair-b", CONNECT);
    for worker in c.workers() {
        assert_eq!(worker["prefetch_auto"], true, "{worker}");
    }

    let ids: Vec<i64> = (0..4)
        .map(|_| c.create(&["--batch", "fair", "--", "sleep", "5"]))
        .collect();
    let mut per_worker: BTreeMap<i64, usize> = BTreeMap::new();
    for &id in &ids {
        let task = c.wait_task(id, "running", CONNECT);
        *per_worker.entry(as_id(&task["worker_id"])).or_default() += 1;
    }
    assert_eq!(
        per_worker,
        BTreeMap::from([(id_a, 2), (id_b, 2)]),
        "two tasks per agent (fair-a is {id_a}, fair-b is {id_b})"
    );
    c.wait_batch_succeeded("fair", 4, CONNECT);

    // Fixed by an operator, then automatic again; `worker list` shows which.
    let a = id_a.to_string();
    c.ctl_ok(["worker", "set", &a, "--prefetch", "3"]);
    let worker = |id: i64| {
        c.workers()
            .into_iter()
            .find(|w| as_id(&w["id"]) == id)
            .expect("listed")
    };
    let fixed = worker(id_a);
    assert_eq!(
        (&fixed["prefetch"], &fixed["prefetch_auto"]),
        (&3.into(), &false.into()),
        "{fixed}"
    );
    // fair-b's is still automatic: its value in force is shown beside the word.
    let table = c.ctl_ok(["worker", "list"]);
    assert!(table.contains("auto ("), "{table}");
    c.ctl_ok(["worker", "set", &a, "--prefetch", "auto"]);
    let auto = worker(id_a);
    assert_eq!(auto["prefetch_auto"], true, "{auto}");
    let refused = c.ctl(["worker", "set", &a, "--prefetch", "lots"]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("\"lots\""),
        "{}",
        describe(&refused)
    );
}
