//! What scitqd acknowledged survives it: SIGKILL at any moment, or a clean restart. Every
//! test here runs on SQLite and on PostgreSQL.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use scitq_tests::{
    Agent, Backend, Client, Server, ServerOpts, as_id, poll, touch, wait_for_file_sh, wait_until,
};

const CONNECT: Duration = Duration::from_secs(60);
const RUN: Duration = Duration::from_secs(180);

#[test]
fn sqlite_scitqd_killed_with_sigkill_loses_nothing_and_running_tasks_go_on() {
    survives_sigkill(Backend::Sqlite);
}

#[test]
fn postgres_scitqd_killed_with_sigkill_loses_nothing_and_running_tasks_go_on() {
    survives_sigkill(Backend::Postgres);
}

#[test]
fn sqlite_keeps_tasks_executions_workers_batches_and_output_across_a_restart() {
    keeps_everything_across_a_restart(Backend::Sqlite);
}

#[test]
fn postgres_keeps_tasks_executions_workers_batches_and_output_across_a_restart() {
    keeps_everything_across_a_restart(Backend::Postgres);
}

fn survives_sigkill(backend: Backend) {
    let mut server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    // The server comes back on a new port: the agent follows it through a stable address.
    let front = server.stable_addr();
    let _agent = Agent::start_via(&server, &front, "survivor", 4, &[]);
    let worker_id = c.wait_worker_online("survivor", CONNECT);

    // A task that prints before, during and after the outage.
    let during = c.scratch_path("during-outage");
    let after = c.scratch_path("after-restart");
    let script = format!(
        "echo line-1; echo line-2; {}; echo line-3; {}; echo line-4; echo line-5",
        wait_for_file_sh(&during),
        wait_for_file_sh(&after)
    );
    let long = c.create_sh("outage", &script, &[]);
    poll(
        CONNECT,
        format!("task {long} to print its first lines"),
        || {
            let output = c.output(long);
            if output == "line-1\nline-2\n" {
                Ok(())
            } else {
                Err(format!("{output:?}"))
            }
        },
    );

    let early: Vec<String> = (0..100).map(|i| format!("echo early-{i}")).collect();
    let early_ids = c.create_from_file(&early, &["--batch", "short"]);
    let late = create_until_killed(&mut server, &c);

    touch(&during);
    server.start_again();
    assert_eq!(
        c.wait_worker_online("survivor", CONNECT),
        worker_id,
        "the agent should come back as the same worker"
    );
    touch(&after);

    let task = c.wait_task(long, "succeeded", RUN);
    assert_eq!(
        c.output(long),
        "line-1\nline-2\nline-3\nline-4\nline-5\n",
        "output of the task that ran through the outage"
    );
    let execs = task["executions"].as_array().expect("executions array");
    assert_eq!(execs.len(), 1, "the task should have run once: {task:#}");

    let acknowledged = early_ids.len() + late.len();
    let listed: BTreeSet<i64> = c
        .tasks(&["--batch", "short"])
        .iter()
        .map(|t| as_id(&t["id"]))
        .collect();
    let lost: Vec<i64> = early_ids
        .iter()
        .chain(late.iter().map(|(_, id)| id))
        .filter(|id| !listed.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged tasks missing after the SIGKILL: {lost:?}"
    );
    wait_batch_settled(&c, "short", acknowledged);
    for (i, id) in early_ids.iter().enumerate() {
        assert_eq!(c.output(*id), format!("early-{i}\n"), "output of task {id}");
    }
    for (n, id) in &late {
        assert_eq!(c.output(*id), format!("late-{n}\n"), "output of task {id}");
    }
}

/// Creates tasks one by one from another thread and SIGKILLs scitqd once 20 were
/// acknowledged; returns (n, id) of every acknowledged one (task n prints `late-n`).
fn create_until_killed(server: &mut Server, c: &Client) -> Vec<(u64, i64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let creator = {
        let (stop, acked, c) = (stop.clone(), acked.clone(), c.clone());
        std::thread::spawn(move || {
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text = format!("late-{n}");
                let out = c.ctl(["task", "create", "--batch", "short", "--", "echo", &text]);
                if out.status.success() {
                    let id = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>();
                    acked
                        .lock()
                        .unwrap()
                        .push((n, id.expect("task create printed an id")));
                }
            }
        })
    };
    wait_until(CONNECT, "20 tasks created one by one", || {
        acked.lock().unwrap().len() >= 20
    });
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    creator.join().expect("task creator thread");
    acked.lock().unwrap().clone()
}

/// Waits until batch `name` holds at least `n` tasks, all succeeded.
fn wait_batch_settled(c: &Client, name: &str, n: usize) {
    poll(
        RUN,
        format!("the {n} tasks of batch {name} to succeed"),
        || {
            let batches = c.batches();
            let batch = batches
                .iter()
                .find(|b| b["name"] == name)
                .ok_or_else(|| Value::Array(batches.clone()).to_string())?;
            let counts = batch["counts"].as_object().cloned().unwrap_or_default();
            let total: u64 = counts.values().filter_map(Value::as_u64).sum();
            let succeeded = counts.get("succeeded").and_then(Value::as_u64).unwrap_or(0);
            assert_eq!(
                counts.get("failed").and_then(Value::as_u64).unwrap_or(0),
                0,
                "{batch}"
            );
            if succeeded == total && total >= n as u64 {
                Ok(())
            } else {
                Err(batch.to_string())
            }
        },
    );
}

fn keeps_everything_across_a_restart(backend: Backend) {
    let mut server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let mut agent = Agent::start(&server, "keeper", 2, &[]);
    let worker_id = c.wait_worker_online("keeper", CONNECT);
    c.ctl_ok([
        "worker",
        "set",
        &worker_id.to_string(),
        "--concurrency",
        "3",
        "--prefetch",
        "1",
    ]);

    let mut ids: Vec<i64> = (0..5)
        .map(|i| {
            let name = format!("ok-{i}");
            let script = format!("echo out-{i}; echo err-{i} >&2");
            c.create_sh("kept", &script, &["--name", &name])
        })
        .collect();
    let failing = c.create_sh("kept", "echo partial; exit 3", &["--name", "bad"]);
    for id in &ids {
        c.wait_task(*id, "succeeded", RUN);
    }
    c.wait_task(failing, "failed", RUN);
    ids.push(failing);

    // A stopped batch with a task that never ran: no agent may take it meanwhile.
    agent.kill9();
    wait_until(CONNECT, "the killed worker to be offline", || {
        c.workers()
            .iter()
            .any(|w| w["name"] == "keeper" && w["status"] != "online")
    });
    let held = c.create(&["--batch", "held", "--name", "later", "--", "echo", "held"]);
    c.ctl_ok(["batch", "stop", "held"]);

    let before = snapshot(&c, &ids, held);
    assert_eq!(
        before["tasks"].as_array().map(Vec::len),
        Some(7),
        "{before:#}"
    );
    server.restart();
    let after = snapshot(&c, &ids, held);
    for (part, value) in before.as_object().expect("snapshot object") {
        assert_eq!(&after[part], value, "{part} changed across the restart");
    }
    assert_eq!(worker(&c, "keeper")["concurrency"], 3);

    // What was pending still runs after the restart.
    let _agent = Agent::start_as(&server, &agent, 2, &[]);
    assert_eq!(c.wait_worker_online("keeper", CONNECT), worker_id);
    c.ctl_ok(["batch", "go", "held"]);
    c.wait_task(held, "succeeded", RUN);
    assert_eq!(c.output(held), "held\n");
    counts_match_tasks(&c);

    // The counts follow a relaunch and a batch deletion.
    c.ctl_ok([
        "task",
        "relaunch",
        &failing.to_string(),
        "--command",
        "true",
    ]);
    c.wait_task(failing, "succeeded", RUN);
    c.ctl_ok(["batch", "delete", "held", "--yes"]);
    counts_match_tasks(&c);
    // A new batch of the same name starts from zero.
    let again = c.create(&["--batch", "held", "--", "true"]);
    c.wait_task(again, "succeeded", RUN);
    counts_match_tasks(&c);
}

/// `batch list`'s counts are those of the tasks listed.
fn counts_match_tasks(c: &Client) {
    let mut expected: std::collections::BTreeMap<String, serde_json::Map<String, Value>> =
        Default::default();
    for task in c.tasks(&[]) {
        let batch = task["batch"].as_str().expect("batch").to_owned();
        let status = task["status"].as_str().expect("status").to_owned();
        let count = expected
            .entry(batch)
            .or_default()
            .entry(status)
            .or_insert(json!(0));
        *count = json!(count.as_u64().unwrap() + 1);
    }
    let listed: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = c
        .batches()
        .into_iter()
        .filter_map(|b| {
            let counts = b["counts"].as_object()?.clone();
            let counts: serde_json::Map<String, Value> =
                counts.into_iter().filter(|(_, n)| n != &json!(0)).collect();
            (!counts.is_empty()).then(|| (b["name"].as_str().unwrap().to_owned(), counts))
        })
        .collect();
    assert_eq!(listed, expected, "batch counts against the task list");
}

/// Everything a user can see of the test's tasks, batches and workers.
fn snapshot(c: &Client, ids: &[i64], held: i64) -> Value {
    let shows: Vec<Value> = ids.iter().chain([&held]).map(|id| c.task(*id)).collect();
    let outputs: Vec<Value> = ids
        .iter()
        .map(|id| {
            let out = c.ctl(["task", "output", &id.to_string()]);
            json!({
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
            })
        })
        .collect();
    let workers: Vec<Value> = c
        .workers()
        .into_iter()
        .map(|w| {
            json!({
                "id": w["id"], "name": w["name"], "host": w["host"],
                "concurrency": w["concurrency"], "prefetch": w["prefetch"], "batch": w["batch"],
            })
        })
        .collect();
    json!({
        "tasks": c.tasks(&[]),
        "shows": shows,
        "outputs": outputs,
        "batches": c.batches(),
        "workers": workers,
    })
}

fn worker(c: &Client, name: &str) -> Value {
    c.workers()
        .into_iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("worker {name} not listed"))
}

#[test]
fn ids_stay_unique_after_a_sigkill() {
    let mut server = Server::start(ServerOpts::default());
    let c = server.client();
    let first = c.create(&["--", "true"]);
    server.kill9();
    server.start_again();
    let second = c.create(&["--", "true"]);
    assert!(
        second > first,
        "id {second} created after the restart is not above {first}"
    );
    let ids: Vec<i64> = c.tasks(&[]).iter().map(|t| as_id(&t["id"])).collect();
    assert_eq!(ids, vec![first, second]);
}
