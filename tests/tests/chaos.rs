//! Chaos: 1,000 tasks on two agents while scitqd is SIGKILLed 20 times and one agent is
//! SIGKILLed and restarted 5 times, then a network cut longer than a short lease. Nothing may
//! be lost, nothing may run twice at the same time, nothing may be left stuck. Every run of a
//! task writes its start and end times (and ticks in between) to a log of its own, which the
//! test reads to find overlaps.

use std::path::Path;
use std::time::Duration;

use scitq_tests::{Agent, Client, Proxy, Server, ServerOpts, poll, sh_quote};
use serde_json::Value;

const CONNECT: Duration = Duration::from_secs(60);
const TASKS: usize = 1000;
const SERVER_KILLS: usize = 20;
const AGENT_KILLS: usize = 5;
const LEASE: Duration = Duration::from_secs(6);

/// A task that logs `start PID MS`, `ticks` lines `tick PID MS` 0.2 s apart, then
/// `end PID MS` to `log`. Runs of a task that overlap write to the same log: the pid (unique
/// among processes alive at once on this machine) tells whose line is whose.
fn logged_script(log: &Path, ticks: u32) -> String {
    let log = sh_quote(&log.display().to_string());
    format!(
        "echo start $$ $(date +%s%3N) >> {log}; i=0; while [ $i -lt {ticks} ]; do \
         echo tick $$ $(date +%s%3N) >> {log}; sleep 0.2; i=$((i+1)); done; \
         echo end $$ $(date +%s%3N) >> {log}"
    )
}

/// The runs in a task's log, in the order they started: (start, last time seen, ended).
fn runs(log: &Path) -> Vec<(u64, u64, bool)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<(u64, (u64, u64, bool))> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [word, pid, ms] = fields[..] else {
            continue;
        };
        let (Ok(pid), Ok(ms)) = (pid.parse::<u64>(), ms.parse::<u64>()) else {
            continue;
        };
        // A pid may come back in a later run: the latest run of that pid is the one.
        let run = runs.iter_mut().rev().find(|(p, _)| *p == pid);
        match (word, run) {
            ("start", _) => runs.push((pid, (ms, ms, false))),
            ("tick", Some((_, run))) => run.1 = ms,
            ("end", Some((_, run))) => {
                run.1 = ms;
                run.2 = true;
            }
            _ => {}
        }
    }
    let mut runs: Vec<(u64, u64, bool)> = runs.into_iter().map(|(_, run)| run).collect();
    runs.sort();
    runs
}

/// Succeeded tasks of `batch`, asserting none failed.
fn succeeded(c: &Client, batch: &str) -> u64 {
    let batches = c.batches();
    let Some(found) = batches.iter().find(|b| b["name"] == batch) else {
        return 0;
    };
    let counts = found["counts"].as_object().cloned().unwrap_or_default();
    let failed = counts.get("failed").and_then(Value::as_u64).unwrap_or(0);
    assert_eq!(failed, 0, "failed tasks in {batch}: {found}");
    counts.get("succeeded").and_then(Value::as_u64).unwrap_or(0)
}

fn wait_succeeded(c: &Client, batch: &str, at_least: u64, timeout: Duration) {
    poll(
        timeout,
        format!("{at_least} tasks of batch {batch} to succeed"),
        || {
            let done = succeeded(c, batch);
            if done >= at_least {
                Ok(())
            } else {
                Err(format!("{done} succeeded"))
            }
        },
    );
}

#[test]
fn kills_and_cuts_lose_nothing_run_nothing_twice_at_once_and_leave_nothing_stuck() {
    let mut server = Server::start(ServerOpts::default().lease("6s"));
    let c = server.client();
    let near = Proxy::start(&server.addr());
    let far = Proxy::start(&server.addr());
    let mut a = Agent::start_via(&server, &near.addr(), "a", 4, &[]);
    // b has room to spare: what the server re-queues from a starts there at once.
    let _b = Agent::start_via(&server, &far.addr(), "b", 8, &[]);
    c.wait_worker_online("a", CONNECT);
    c.wait_worker_online("b", CONNECT);

    let logs = c.scratch_path("chaos-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let commands: Vec<String> = (0..TASKS)
        .map(|n| logged_script(&logs.join(n.to_string()), 1))
        .collect();
    let ids = c.create_from_file(&commands, &["--batch", "chaos", "--shell", "--retry", "5"]);

    // Kill scitqd each time some more work got done; the agent `a` every fourth time.
    let step = (TASKS / (SERVER_KILLS + 5)) as u64;
    for kill in 1..=SERVER_KILLS {
        wait_succeeded(&c, "chaos", step * kill as u64, CONNECT);
        server.kill9();
        if kill % 4 == 0 && kill / 4 <= AGENT_KILLS {
            a.kill9();
            a.start_again();
        }
        server.start_again();
        // It listens on a new port: the agents' proxies follow it.
        near.retarget(&server.addr());
        far.retarget(&server.addr());
    }
    let agent_kills = (SERVER_KILLS / 4).min(AGENT_KILLS);

    // A cut longer than the lease while long tasks run on both agents.
    let cut_logs: Vec<_> = (0..8).map(|n| logs.join(format!("cut-{n}"))).collect();
    let cut_ids: Vec<i64> = cut_logs
        .iter()
        .map(|log| c.create_sh("cut", &logged_script(log, 40), &["--retry", "5"]))
        .collect();
    poll(CONNECT, "the long tasks to start", || {
        let started = cut_logs.iter().filter(|l| !runs(l).is_empty()).count();
        if started >= 4 {
            Ok(())
        } else {
            Err(format!("{started} started"))
        }
    });
    near.cut();
    // The cut agent's executions stay active until its lease (and the fence margin) ends,
    // then fail as lost and their tasks are re-queued.
    poll(
        Duration::from_secs(120),
        "the cut agent's executions to end",
        || {
            let held: Vec<i64> = cut_ids
                .iter()
                .copied()
                .filter(|&id| {
                    c.task(id)["executions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| {
                            e["worker_name"] == "a"
                                && matches!(
                                    e["state"].as_str(),
                                    Some("assigned" | "accepted" | "running" | "uploading")
                                )
                        })
                })
                .collect();
            if held.is_empty() {
                Ok(())
            } else {
                Err(format!("still held by a: {held:?}"))
            }
        },
    );
    near.restore();

    wait_succeeded(&c, "chaos", TASKS as u64, Duration::from_secs(300));
    wait_succeeded(&c, "cut", cut_ids.len() as u64, Duration::from_secs(300));

    let mut ran_twice = Vec::new();
    let mut overlaps = Vec::new();
    let all_logs = (0..TASKS)
        .map(|n| logs.join(n.to_string()))
        .chain(cut_logs.iter().cloned());
    for log in all_logs {
        let runs = runs(&log);
        assert!(
            runs.iter().any(|run| run.2),
            "{} has no finished run: {runs:?}",
            log.display()
        );
        if runs.len() > 1 {
            let name = log.file_name().map(|n| n.to_string_lossy().into_owned());
            ran_twice.push(format!("{}: {runs:?}", name.unwrap_or_default()));
        }
        for pair in runs.windows(2) {
            if pair[1].0 <= pair[0].1 {
                overlaps.push(format!("{}: {pair:?}", log.display()));
            }
        }
    }
    eprintln!(
        "chaos: {} tasks, scitqd SIGKILLed {SERVER_KILLS} times, agent SIGKILLed {agent_kills} \
         times, one cut longer than the lease ({LEASE:?}): {} task(s) ran more than once, \
         {} overlap(s), all succeeded",
        ids.len() + cut_ids.len(),
        ran_twice.len(),
        overlaps.len()
    );
    eprintln!("chaos: ran more than once: {ran_twice:#?}");
    assert!(overlaps.is_empty(), "runs overlap: {overlaps:#?}");
}
