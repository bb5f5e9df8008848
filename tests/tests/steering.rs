//! Steering that belongs to the core: `task wait --retry`, settings pushed to a running
//! agent, and scitqd refusing to expose tokens on the network without TLS.

use std::process::Command;
use std::time::Duration;

use scitq_tests::{
    Agent, Backend, ChildGuard, Server, ServerOpts, bin, describe, group_stopped, poll, sh_quote,
    touch, wait_for_file_sh,
};

const CONNECT: Duration = Duration::from_secs(60);

fn task_wait_retry_relaunches_a_failed_task_until_it_succeeds(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "retrier", 2, &[]);
    c.wait_worker_online("retrier", CONNECT);

    // Fails the first time it runs, succeeds the second.
    let marker = c.scratch_path("ran-once");
    let flaky = format!(
        "if [ -f {m} ]; then echo second; else touch {m}; echo first; exit 3; fi",
        m = sh_quote(&marker.display().to_string())
    );
    let flaky_id = c.create_sh("retry", &flaky, &[]);
    let out = c.ctl(["task", "wait", &flaky_id.to_string(), "--retry", "2"]);
    assert!(out.status.success(), "{}", describe(&out));
    let shown = c.ctl_json(["task", "show", &flaky_id.to_string()]);
    let executions = shown["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 2, "{shown:#}");
    assert_eq!(executions[0]["exit_code"], 3, "{shown:#}");
    assert_eq!(c.output(flaky_id), "second\n");

    // Always fails: `task wait` gives up after the retries and says so with its exit code.
    let doomed = c.create_sh("retry", "exit 5", &[]);
    let out = c.ctl(["task", "wait", &doomed.to_string(), "--retry", "1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let shown = c.ctl_json(["task", "show", &doomed.to_string()]);
    assert_eq!(shown["status"], "failed", "{shown:#}");
    assert_eq!(shown["executions"].as_array().map(Vec::len), Some(2));
}

fn a_concurrency_change_reaches_the_running_agent(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "elastic", 1, &[]);
    let worker = c.wait_worker_online("elastic", CONNECT);

    let flag = c.scratch_path("release");
    let hold = wait_for_file_sh(&flag);
    let ids: Vec<i64> = (0..3).map(|_| c.create_sh("elastic", &hold, &[])).collect();
    let running =
        |c: &scitq_tests::Client| ids.iter().filter(|id| c.status(**id) == "running").count();
    poll(CONNECT, "one task running", || match running(&c) {
        1 => Ok(()),
        n => Err(format!("{n} running")),
    });

    c.ctl_ok(["worker", "set", &worker.to_string(), "--concurrency", "3"]);
    poll(
        CONNECT,
        "three tasks running after the change",
        || match running(&c) {
            3 => Ok(()),
            n => Err(format!("{n} running")),
        },
    );
    let workers = c.workers();
    let shown = workers.iter().find(|w| w["id"] == worker).expect("worker");
    assert_eq!(shown["concurrency"], 3, "{shown}");

    touch(&flag);
    for id in ids {
        c.wait_task(id, "succeeded", CONNECT);
    }
}

#[test]
fn scitqd_refuses_a_public_address_without_tls_and_says_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = Command::new(bin("scitqd"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .expect("run scitqd");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0:0")
            && stderr.contains("--tls-cert")
            && stderr.contains("--tls-key"),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "nothing is created when the configuration is refused"
    );

    let out = Command::new(bin("scitqd"))
        .args(["--listen", "127.0.0.1:0", "--lease", "soon", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run scitqd");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"soon\""));
}

fn an_agent_with_a_batch_filter_takes_only_that_batch_and_priority_goes_first(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "picky", 1, &["--batch", "mine"]);
    c.wait_worker_online("picky", CONNECT);

    // Hold the only slot while the queue fills, so the order is the scheduler's choice.
    let flag = c.scratch_path("unblock");
    let blocker = c.create_sh("mine", &wait_for_file_sh(&flag), &[]);
    c.wait_task(blocker, "running", CONNECT);
    let other = c.create_sh("theirs", "echo not mine", &[]);
    let low = c.create_sh("mine", "echo low", &["--priority", "0"]);
    let high = c.create_sh("mine", "echo high", &["--priority", "5"]);
    touch(&flag);
    c.wait_task(low, "succeeded", CONNECT);
    c.wait_task(high, "succeeded", CONNECT);

    let execution_of = |id: i64| {
        let shown = c.ctl_json(["task", "show", &id.to_string()]);
        shown["executions"][0]["id"]
            .as_i64()
            .expect("one execution")
    };
    assert!(
        execution_of(high) < execution_of(low),
        "the higher priority task was assigned first"
    );
    assert_eq!(
        c.status(other),
        "pending",
        "a task of another batch stays queued"
    );
}

fn a_paused_task_is_skipped_until_resumed_and_kill_stops_a_running_one_for_good(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "steered", 1, &[]);
    c.wait_worker_online("steered", CONNECT);

    let flag = c.scratch_path("hold");
    let blocker = c.create_sh("steer", &wait_for_file_sh(&flag), &["--retry", "2"]);
    c.wait_task(blocker, "running", CONNECT);
    let held = c.create_sh("steer", "echo held back", &[]);
    let next = c.create_sh("steer", "echo next", &[]);
    assert_eq!(
        c.ctl_ok(["task", "pause", &held.to_string()]).trim(),
        "paused (paused by an operator)"
    );
    let again = c.ctl(["task", "pause", &held.to_string()]);
    assert!(!again.status.success(), "{}", describe(&again));

    // Killing the running blocker frees the slot: `next` runs, the paused task does not.
    c.ctl_ok(["task", "kill", &blocker.to_string()]);
    let killed = c.wait_task(blocker, "failed", CONNECT);
    assert_eq!(killed["retry_left"], 2, "a kill spends no retry: {killed}");
    c.wait_task(next, "succeeded", CONNECT);
    assert_eq!(c.status(held), "paused");
    let executions = c.ctl_json(["task", "executions", &blocker.to_string()]);
    assert_eq!(executions[0]["failure"], "killed", "{executions}");

    c.ctl_ok(["task", "resume", &held.to_string()]);
    c.wait_task(held, "succeeded", CONNECT);
    assert_eq!(c.output(held), "held back\n");
}

fn tasks_not_started_are_edited_by_filter_with_a_dry_run_first(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let ids: Vec<i64> = (0..3)
        .map(|i| c.create_sh("edits", &format!("echo old-{i}"), &[]))
        .collect();
    c.ctl_ok(["batch", "stop", "edits"]);

    let preview = c.ctl_json([
        "task",
        "edit",
        "--batch",
        "edits",
        "--command",
        "echo new",
        "--dry-run",
    ]);
    assert_eq!(preview.as_array().map(Vec::len), Some(3), "{preview}");
    assert!(
        preview
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["command"] == "echo new")
    );
    assert_eq!(
        c.task(ids[0])["command"],
        "echo old-0",
        "a dry run changes nothing"
    );

    let refused = c.ctl(["task", "edit", "--command", "echo all"]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let refused = c.ctl([
        "task", "edit", "--batch", "edits", "--status", "running", "--retry", "1",
    ]);
    assert!(!refused.status.success(), "{}", describe(&refused));

    c.ctl_ok([
        "task",
        "edit",
        "--batch",
        "edits",
        "--command",
        "echo new",
        "--priority",
        "3",
    ]);
    let edited = c.task(ids[1]);
    assert_eq!(
        (&edited["command"], &edited["priority"]),
        (&"echo new".into(), &3.into())
    );
    let _agent = Agent::start(&server, "editor", 2, &[]);
    c.wait_worker_online("editor", CONNECT);
    c.ctl_ok(["batch", "go", "edits"]);
    for id in &ids {
        c.wait_task(*id, "succeeded", CONNECT);
        assert_eq!(c.output(*id), "new\n");
    }

    // A task that has run cannot be edited: relaunch it instead.
    let out = c.ctl([
        "task",
        "edit",
        &ids[0].to_string(),
        "--command",
        "echo late",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("succeeded"),
        "{}",
        describe(&out)
    );
    assert_eq!(c.task(ids[0])["command"], "echo new");
}

/// Size of a file that a task grows, 0 while it does not exist.
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `path` stops growing: the same size over `still` (ten times the period the
/// task appends at), polled with a generous bound. A task that is not frozen never passes.
fn a_suspended_batch_freezes_its_running_tasks_until_go(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    // Two slots: one stays free, so only the suspension can keep a new task from starting.
    let _agent = Agent::start(&server, "freezer", 2, &[]);
    c.wait_worker_online("freezer", CONNECT);

    // The task (its shell leads its process group) appends to a counter every 50 ms until
    // `finish` exists. Frozen means every process of its group is stopped: the shell may be
    // caught in vfork, in D with its stopped child, rather than in T itself.
    let counter = c.scratch_path("counter");
    let flag = c.scratch_path("finish");
    let pid_file = c.scratch_path("pid");
    let script = format!(
        "echo $$ > {p}; while [ ! -e {f} ]; do echo x >> {n}; sleep 0.05; done; echo thawed",
        p = sh_quote(&pid_file.display().to_string()),
        f = sh_quote(&flag.display().to_string()),
        n = sh_quote(&counter.display().to_string())
    );
    let id = c.create_sh("cold", &script, &[]);
    c.wait_task(id, "running", CONNECT);
    poll(CONNECT, "the task to count", || match file_len(&counter) {
        0 => Err("no count yet".to_owned()),
        n => Ok(n),
    });
    let group: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");

    c.ctl_ok(["batch", "suspend", "cold"]);
    poll(CONNECT, "every process of the task to stop", || {
        group_stopped(group)
    });
    // Stopped processes write nothing: from here on the counter cannot grow.
    let frozen_at = file_len(&counter);
    let listed = c.batches();
    let batch = listed.iter().find(|b| b["name"] == "cold").expect("batch");
    assert_eq!(batch["suspended"], true, "{batch}");
    assert_eq!(
        batch["stopped"], true,
        "a suspended batch is stopped: {batch}"
    );

    // A task created meanwhile stays pending though a slot is free: a task of another
    // batch, created after it, gets that slot and ends first.
    let later = c.create_sh("cold", "echo later", &[]);
    let warm = c.create_sh("warm", "echo warm", &[]);
    c.wait_task(warm, "succeeded", CONNECT);
    assert_eq!(
        c.status(later),
        "pending",
        "a suspended batch starts nothing"
    );
    assert_eq!(c.status(id), "running", "the frozen task is still running");
    assert_eq!(file_len(&counter), frozen_at, "the frozen task counted on");

    c.ctl_ok(["batch", "go", "cold"]);
    poll(CONNECT, "the task to count again", || {
        let len = file_len(&counter);
        if len > frozen_at {
            Ok(())
        } else {
            Err(format!("{len} bytes"))
        }
    });
    touch(&flag);
    c.wait_task(id, "succeeded", CONNECT);
    c.wait_task(later, "succeeded", CONNECT);
    assert_eq!(c.output(id), "thawed\n");
}

fn explain_says_why_a_pending_task_does_not_run(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let explain = |id: i64| {
        let reply = c.ctl_json(["task", "explain", &id.to_string()]);
        reply["reasons"].to_string()
    };
    let id = c.create_sh("why", "echo finally", &[]);
    assert!(
        explain(id).contains("no worker is connected"),
        "{}",
        explain(id)
    );

    let _other = Agent::start(&server, "elsewhere", 1, &["--batch", "other"]);
    c.wait_worker_online("elsewhere", CONNECT);
    assert!(
        explain(id).contains("no connected worker serves batch"),
        "{}",
        explain(id)
    );

    c.ctl_ok(["batch", "stop", "why"]);
    let _agent = Agent::start(&server, "why-agent", 1, &[]);
    c.wait_worker_online("why-agent", CONNECT);
    assert!(
        explain(id).contains("batch \\\"why\\\" is stopped"),
        "{}",
        explain(id)
    );

    c.ctl_ok(["batch", "go", "why"]);
    c.wait_task(id, "succeeded", CONNECT);
    assert!(explain(id).contains("succeeded"), "{}", explain(id));
    let unknown = c.ctl(["task", "explain", "999999"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));
}

#[test]
fn batch_list_watch_redraws_until_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let server = Server::start(ServerOpts::default());
    let c = server.client();
    c.create_sh("watched", "true", &[]);
    let mut cmd = c.command();
    cmd.args(["batch", "list", "--watch", "--interval", "0.2"])
        .stdout(Stdio::piped());
    let mut child = scitq_tests::ChildGuard(cmd.spawn().expect("spawn scitqctl"));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut draws = 0;
    for line in BufReader::new(stdout).lines() {
        if line.expect("read").contains("watched") {
            draws += 1;
            if draws == 3 {
                break;
            }
        }
    }
    assert_eq!(draws, 3, "three redraws of the listing");
    assert!(
        child.0.try_wait().expect("poll").is_none(),
        "still watching"
    );
    let bad = c.ctl(["task", "list", "--watch", "--interval", "0"]);
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
}

fn a_task_past_its_run_timeout_is_stopped_and_fails_as_timeout(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "timer", 1, &[]);
    c.wait_worker_online("timer", CONNECT);

    let id = c.create_sh(
        "slow",
        "echo started; sleep 60",
        &["--timeout", "1s", "--retry", "1"],
    );
    let task = c.wait_task(id, "failed", CONNECT);
    assert_eq!(
        task["retry_left"], 0,
        "a timeout is retried like any failure: {task}"
    );
    let executions = c.ctl_json(["task", "executions", &id.to_string()]);
    let executions = executions.as_array().expect("executions");
    assert_eq!(executions.len(), 2, "{executions:?}");
    for execution in executions {
        assert_eq!(execution["failure"], "timeout", "{execution}");
        assert!(
            execution["message"]
                .as_str()
                .unwrap_or("")
                .contains("time limit of 1s"),
            "{execution}"
        );
    }
    assert_eq!(c.output(id), "started\n");
    let bad = c.ctl(["task", "create", "--timeout", "soon", "--", "true"]);
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
}

fn a_paused_worker_takes_nothing_new_and_only_an_idle_offline_worker_can_be_deleted(
    backend: Backend,
) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let mut agent = Agent::start(&server, "napper", 1, &[]);
    let worker = c.wait_worker_online("napper", CONNECT);

    c.ctl_ok(["worker", "pause", &worker.to_string()]);
    let id = c.create_sh("nap", "echo awake", &[]);
    let reasons = c.ctl_json(["task", "explain", &id.to_string()])["reasons"].to_string();
    assert!(reasons.contains("paused"), "{reasons}");
    assert_eq!(c.status(id), "pending");
    let listed = c.workers();
    assert_eq!(listed[0]["paused"], true, "{listed:?}");

    c.ctl_ok(["worker", "resume", &worker.to_string()]);
    c.wait_task(id, "succeeded", CONNECT);

    let refused = c.ctl(["worker", "delete", &worker.to_string()]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("connected"));
    agent.stop(Duration::from_secs(10));
    poll(CONNECT, "the worker to go offline", || {
        let out = c.ctl(["worker", "delete", &worker.to_string()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&out))
        }
    });
    assert!(c.workers().is_empty(), "the worker is forgotten");
    let unknown = c.ctl(["worker", "pause", "999"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));
}

fn output_past_the_cap_keeps_its_head_and_tail_with_a_marker(backend: Backend) {
    let server = Server::start_on(
        backend,
        ServerOpts::default().arg("--max-output-mib").arg("1"),
    );
    let c = server.client();
    let _agent = Agent::start(&server, "chatty", 1, &[]);
    c.wait_worker_online("chatty", CONNECT);

    // 20 MB of 'x', then a last line.
    let id = c.create_sh(
        "loud",
        "echo BEGIN; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo END",
        &[],
    );
    c.wait_task(id, "succeeded", Duration::from_secs(120));
    let output = c.output(id);
    assert!(output.starts_with("BEGIN\nxxx"), "{}", &output[..20]);
    assert!(
        output.ends_with("x\nEND\n"),
        "{}",
        &output[output.len() - 20..]
    );
    assert!(output.contains("bytes of stdout dropped here"), "no marker");
    assert!(
        output.len() < 2 << 20,
        "about 1 MiB kept, not {} bytes",
        output.len()
    );
    let executions = c.ctl_json(["task", "executions", &id.to_string()]);
    assert_eq!(
        executions[0]["stdout_bytes"], 20_000_011,
        "the full size is recorded"
    );
}

fn dependants_wait_are_canceled_by_a_failure_and_come_back_with_a_relaunch(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "chain", 2, &[]);
    c.wait_worker_online("chain", CONNECT);

    let flag = c.scratch_path("go-first");
    let first = c.create_sh("dag", &format!("{}; exit 1", wait_for_file_sh(&flag)), &[]);
    let second = c.create_sh("dag", "echo second", &["--depends-on", &first.to_string()]);
    let third = c.create_sh("dag", "echo third", &["--depends-on", &second.to_string()]);
    assert_eq!(c.status(second), "waiting");
    let reasons = c.ctl_json(["task", "explain", &second.to_string()])["reasons"].to_string();
    assert!(
        reasons.contains(&format!("task(s) {first} to succeed")),
        "{reasons}"
    );
    assert_eq!(c.task(third)["depends_on"], serde_json::json!([second]));

    touch(&flag);
    c.wait_task(first, "failed", CONNECT);
    poll(CONNECT, "the chain to be canceled", || {
        let (s2, s3) = (c.task(second), c.task(third));
        if s2["status"] == "canceled" && s3["status"] == "canceled" {
            Ok((s2, s3))
        } else {
            Err(format!("{s2} {s3}"))
        }
    });
    assert_eq!(
        c.task(second)["status_reason"],
        format!("dependency {first} failed")
    );
    assert_eq!(
        c.task(third)["status_reason"],
        format!("dependency {second} failed")
    );

    c.ctl_ok([
        "task",
        "relaunch",
        &first.to_string(),
        "--command",
        "echo fixed",
    ]);
    c.wait_task(third, "succeeded", CONNECT);
    assert_eq!(c.output(second), "second\n");

    let before = c.task_count();
    let unknown = c.ctl(["task", "create", "--depends-on", "999999", "--", "true"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("999999"));
    assert_eq!(c.task_count(), before, "nothing created");
}

fn a_drained_worker_finishes_what_it_holds_then_its_agent_exits(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    // One running slot and one prefetched: the drain must finish both.
    let mut agent = Agent::start(&server, "drainer", 1, &["--prefetch", "1"]);
    let worker = c.wait_worker_online("drainer", CONNECT);

    let gate = c.scratch_path("gate");
    let held: Vec<i64> = (0..2)
        .map(|i| {
            let script = format!("{}; echo held {i}", wait_for_file_sh(&gate));
            c.create_sh("drain", &script, &[])
        })
        .collect();
    poll(CONNECT, "both tasks to reach the agent", || {
        let assigned = held.iter().filter(|id| c.status(**id) != "pending").count();
        if assigned == 2 {
            Ok(())
        } else {
            Err(format!("{assigned} of 2 assigned"))
        }
    });

    let shown = c.ctl_json(["worker", "drain", &worker.to_string(), "--json"]);
    assert_eq!(shown["draining"], true, "{shown:#}");
    let late = c.create_sh("drain", "echo late", &[]);
    let reasons = c.ctl_json(["task", "explain", &late.to_string()])["reasons"].to_string();
    assert!(reasons.contains("draining"), "{reasons}");
    // Once the agent has the drain, it must stay while it holds tasks (an agent that exits
    // at once would be gone by the time the tasks are released below).
    poll(CONNECT, "the agent to get the drain", || {
        let log = agent.log_tail(200);
        log.contains("draining: finishing")
            .then_some(())
            .ok_or_else(|| "no drain in the agent log yet".to_owned())
    });
    let listed = c.workers();
    assert_eq!(listed[0]["status"], "online", "{listed:?}");
    assert!(
        agent.wait_exit(Duration::ZERO).is_none(),
        "the agent must not exit while it holds tasks"
    );

    touch(&gate);
    let status = agent
        .wait_exit(CONNECT)
        .expect("the drained agent exits once its tasks are delivered");
    assert!(status.success(), "drained agent exit: {status:?}");
    for (i, id) in held.iter().enumerate() {
        assert_eq!(c.status(*id), "succeeded");
        assert_eq!(c.output(*id), format!("held {i}\n"));
    }
    assert_eq!(
        c.status(late),
        "pending",
        "a draining worker takes nothing new"
    );

    // Its agent started again is told to drain at once; resuming the worker undoes it.
    let mut again = Agent::start_as(&server, &agent, 1, &[]);
    let status = again
        .wait_exit(CONNECT)
        .expect("an agent of a draining worker exits at once");
    assert!(status.success(), "{status:?}");
    c.ctl_ok(["worker", "resume", &worker.to_string()]);
    let _third = Agent::start_as(&server, &agent, 1, &[]);
    c.wait_task(late, "succeeded", CONNECT);
    assert_eq!(c.workers()[0]["draining"], false);
}

/// `task output ID --follow` as a child; returns it with a thread collecting its stdout.
fn follow(c: &scitq_tests::Client, id: i64) -> (ChildGuard, std::thread::JoinHandle<String>) {
    use std::io::Read;
    let mut child = c
        .command()
        .args(["task", "output", &id.to_string(), "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start scitqctl task output --follow");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout
            .read_to_string(&mut text)
            .expect("read --follow output");
        text
    });
    (ChildGuard(child), reader)
}

fn follow_waits_for_a_task_not_started_and_goes_on_through_a_retry_and_a_relaunch(
    backend: Backend,
) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();

    // Not started yet (no agent): the follower waits, then shows both attempts of a retry.
    let marker = c.scratch_path("attempted");
    let flaky = format!(
        "if [ -f {m} ]; then echo attempt 2; else touch {m}; echo attempt 1; exit 3; fi",
        m = sh_quote(&marker.display().to_string())
    );
    let id = c.create_sh("follow", &flaky, &["--retry", "1"]);
    let (mut child, reader) = follow(&c, id);
    let _agent = Agent::start(&server, "narrator", 1, &[]);
    let status = child
        .wait_exit(CONNECT)
        .expect("task output --follow to end when its task succeeds");
    assert!(status.success(), "{status:?}");
    assert_eq!(reader.join().unwrap(), "attempt 1\nattempt 2\n");
    assert_eq!(c.status(id), "succeeded");

    // A failed task relaunched with a new command: the follower shows the new attempt.
    let failed = c.create_sh("follow", "echo old; exit 1", &[]);
    c.wait_task(failed, "failed", CONNECT);
    let gate = c.scratch_path("relaunch-gate");
    let command = format!("echo new; {}; echo done", wait_for_file_sh(&gate));
    c.ctl_ok([
        "task",
        "relaunch",
        &failed.to_string(),
        "--command",
        &command,
    ]);
    let (mut child, reader) = follow(&c, failed);
    c.wait_task(failed, "running", CONNECT);
    touch(&gate);
    let status = child
        .wait_exit(CONNECT)
        .expect("task output --follow to end when its task succeeds");
    assert!(status.success(), "{status:?}");
    assert_eq!(reader.join().unwrap(), "new\ndone\n");
}

/// A task of `batch` that writes its pid to `pid_file` then runs until killed; returns its id
/// and pid once it runs.
fn endless(c: &scitq_tests::Client, batch: &str, pid_file: &std::path::Path) -> (i64, i32) {
    let script = format!(
        "echo $$ > {}; while true; do sleep 0.05; done",
        sh_quote(&pid_file.display().to_string())
    );
    let id = c.create_sh(batch, &script, &[]);
    c.wait_task(id, "running", CONNECT);
    let pid = poll(CONNECT, "the task to write its pid", || {
        std::fs::read_to_string(pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse::<i32>()
            .map_err(|e| e.to_string())
    });
    (id, pid)
}

/// Waits until process `pid` is gone (reaped) or a zombie.
fn wait_gone(pid: i32, what: &str) {
    poll(
        CONNECT,
        format!("{what} (pid {pid}) to be killed"),
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => Ok(()),
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
            {
                Ok(())
            }
            Ok(stat) => Err(stat),
        },
    );
}

fn batch_stop_kill_and_batch_delete_kill_running_tasks(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "slayer", 2, &[]);
    c.wait_worker_online("slayer", CONNECT);

    let (stopped, stopped_pid) = endless(&c, "stopme", &c.scratch_path("stop-pid"));
    let (deleted, deleted_pid) = endless(&c, "deleteme", &c.scratch_path("delete-pid"));

    c.ctl_ok(["batch", "stop", "stopme", "--kill"]);
    wait_gone(stopped_pid, "the task of the batch stopped with --kill");
    let task = c.wait_task(stopped, "failed", CONNECT);
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(c.status(deleted), "running", "another batch is left alone");

    c.ctl_ok(["batch", "delete", "deleteme", "--yes"]);
    wait_gone(deleted_pid, "the task of the deleted batch");
    assert!(c.tasks(&["--batch", "deleteme"]).is_empty());
}

/// A task that runs until `flag` exists, so that an agent of concurrency 1 keeps its slot
/// busy and holds the next tasks prefetched.
fn blocker(c: &scitq_tests::Client, batch: &str, flag: &std::path::Path) -> i64 {
    let script = format!(
        "while [ ! -e {f} ]; do sleep 0.05; done; echo unblocked",
        f = sh_quote(&flag.display().to_string())
    );
    let id = c.create_sh(batch, &script, &[]);
    c.wait_task(id, "running", CONNECT);
    id
}

/// Waits until an agent holds task `id` without having started it.
fn wait_prefetched(c: &scitq_tests::Client, id: i64) {
    poll(CONNECT, format!("task {id} to be prefetched"), || {
        match c.status(id).as_str() {
            "assigned" | "accepted" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
}

fn a_prefetched_task_is_edited_recalled_and_runs_the_new_command(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "holder", 1, &["--prefetch", "2"]);
    c.wait_worker_online("holder", CONNECT);
    let flag = c.scratch_path("unblock");
    let first = blocker(&c, "held", &flag);
    let held = c.create_sh("held", "echo old", &["--retry", "2"]);
    wait_prefetched(&c, held);

    let edited = c.ctl_json(["task", "edit", &held.to_string(), "--command", "echo new"]);
    assert_eq!(edited[0]["command"], "echo new", "{edited}");
    // The agent gives it back unstarted: its first execution ends canceled as recalled.
    let executions = poll(CONNECT, "the prefetched execution to be recalled", || {
        let shown = c.ctl_json(["task", "show", &held.to_string()]);
        let executions = shown["executions"].as_array().cloned().unwrap_or_default();
        match executions.first() {
            Some(e) if e["state"] == "canceled" => Ok(executions),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(executions[0]["failure"], "recalled", "{executions:?}");

    touch(&flag);
    c.wait_task(first, "succeeded", CONNECT);
    let task = c.wait_task(held, "succeeded", CONNECT);
    assert_eq!(
        c.output(held),
        "new\n",
        "the edited command ran, not the old one"
    );
    assert_eq!(task["retry_left"], 2, "a recall spends no retry: {task:#}");
}

fn a_stopped_batch_recalls_its_prefetched_tasks(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "hoarder", 1, &["--prefetch", "2"]);
    c.wait_worker_online("hoarder", CONNECT);
    let flag = c.scratch_path("unblock");
    let first = blocker(&c, "busy", &flag);
    let stopped = c.create_sh("stopme", "echo stopped", &[]);
    wait_prefetched(&c, stopped);

    c.ctl_ok(["batch", "stop", "stopme"]);
    c.wait_task(stopped, "pending", CONNECT);
    // The agent runs tasks in the order it got them: one of another batch, created after
    // the stop, ends while the recalled one has not started.
    let later = c.create_sh("busy", "echo later", &[]);
    touch(&flag);
    c.wait_task(first, "succeeded", CONNECT);
    c.wait_task(later, "succeeded", CONNECT);
    assert_eq!(
        c.status(stopped),
        "pending",
        "a stopped batch starts nothing"
    );

    c.ctl_ok(["batch", "go", "stopme"]);
    c.wait_task(stopped, "succeeded", CONNECT);
    assert_eq!(c.output(stopped), "stopped\n");
}

scitq_tests::on_both_backends!(
    task_wait_retry_relaunches_a_failed_task_until_it_succeeds,
    a_concurrency_change_reaches_the_running_agent,
    an_agent_with_a_batch_filter_takes_only_that_batch_and_priority_goes_first,
    a_paused_task_is_skipped_until_resumed_and_kill_stops_a_running_one_for_good,
    tasks_not_started_are_edited_by_filter_with_a_dry_run_first,
    a_suspended_batch_freezes_its_running_tasks_until_go,
    explain_says_why_a_pending_task_does_not_run,
    a_task_past_its_run_timeout_is_stopped_and_fails_as_timeout,
    a_paused_worker_takes_nothing_new_and_only_an_idle_offline_worker_can_be_deleted,
    dependants_wait_are_canceled_by_a_failure_and_come_back_with_a_relaunch,
    a_drained_worker_finishes_what_it_holds_then_its_agent_exits,
    follow_waits_for_a_task_not_started_and_goes_on_through_a_retry_and_a_relaunch,
    batch_stop_kill_and_batch_delete_kill_running_tasks,
    output_past_the_cap_keeps_its_head_and_tail_with_a_marker,
    a_prefetched_task_is_edited_recalled_and_runs_the_new_command,
    a_stopped_batch_recalls_its_prefetched_tasks,
);
