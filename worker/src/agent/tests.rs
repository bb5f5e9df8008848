//! The agent loop against a scripted in-process server on a loopback port.

use std::time::Duration;

use scitq_proto::v1::{
    Assignment, ExecutionState, FailureClass, OutputOffsets, Settings as WireSettings,
    Signal as WireSignal, TaskSpec, agent_message, server_message,
};

use super::test_harness::*;
use crate::state::Phase as DiskPhase;

#[tokio::test]
async fn runs_a_task_streams_output_and_forgets_it_after_ack() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent) = h.spawn_agent();
    let mut c = h.next_session().await;
    assert_eq!(c.authorization, "Bearer secret");
    let hello = hello_of(&mut c).await;
    assert_eq!(
        (hello.name.as_str(), hello.concurrency, hello.protocol),
        ("w1", 1, 1)
    );
    assert!(hello.held.is_empty());
    c.welcome(2, vec![], vec![]);
    c.assign(5, "echo hi; echo err >&2");
    let outcome = c.run_to_final(5, [0, 0]).await;
    // Progress updates of a task this short may be merged into its final one.
    let progress = [
        state(ExecutionState::Accepted),
        state(ExecutionState::Running),
    ];
    assert!(
        outcome.states.iter().all(|s| progress.contains(s)),
        "{:?}",
        outcome.states
    );
    assert_eq!(outcome.output, [b"hi\n".to_vec(), b"err\n".to_vec()]);
    assert_eq!(outcome.last.state, state(ExecutionState::Succeeded));
    assert_eq!(
        (
            outcome.last.exit_code,
            outcome.last.stdout_bytes,
            outcome.last.stderr_bytes
        ),
        (Some(0), 3, 4)
    );
    assert!(h.dir(5).root().is_dir(), "kept until acknowledged");
    c.ack(outcome.last_seq);
    eventually("work dir removed", || !h.dir(5).root().exists()).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failed_task_keeps_its_dir_marked_acknowledged() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(6, "exit 3");
    let outcome = c.run_to_final(6, [0, 0]).await;
    assert_eq!(outcome.last.state, state(ExecutionState::Failed));
    assert_eq!(outcome.last.failure, FailureClass::Run as i32);
    assert_eq!(outcome.last.exit_code, Some(3));
    c.ack(outcome.last_seq);
    let dir = h.dir(6);
    eventually("acknowledged mark", || {
        matches!(
            disk_phase(&dir),
            Some(DiskPhase::Finished {
                acknowledged: true,
                ..
            })
        )
    })
    .await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn after_a_break_only_missing_output_and_the_final_update_are_resent() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(7, "echo one; sleep 0.5; echo two");
    let running = c.recv_state(7, state(ExecutionState::Running)).await;
    assert_eq!(running.state, state(ExecutionState::Running));
    drop(c); // the server goes away while the task runs

    let mut c = h.next_session().await;
    let dir = h.dir(7);
    eventually("task finished offline", || {
        matches!(disk_phase(&dir), Some(DiskPhase::Finished { .. }))
    })
    .await;
    let hello = hello_of(&mut c).await;
    assert_eq!(hello.held.len(), 1);
    assert_eq!(hello.held[0].execution_id, 7);
    // Pretend the server committed "on" of stdout before the break.
    c.welcome(
        1,
        vec![OutputOffsets {
            execution_id: 7,
            stdout: 2,
            stderr: 0,
        }],
        vec![],
    );
    let outcome = c.run_to_final(7, [2, 0]).await;
    assert_eq!(String::from_utf8_lossy(&outcome.output[0]), "e\ntwo\n");
    assert_eq!(outcome.last.state, state(ExecutionState::Succeeded));
    assert_eq!(outcome.last.stdout_bytes, 8);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn welcome_cancel_kills_and_forgets_silently() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(8, "sleep 30");
    c.recv_state(8, state(ExecutionState::Running)).await;
    let pid = match disk_phase(&h.dir(8)) {
        Some(DiskPhase::Running { pid, .. }) => pid,
        other => panic!("unexpected {other:?}"),
    };
    drop(c);
    let mut c = h.next_session().await;
    let hello = hello_of(&mut c).await;
    assert_eq!(hello.held[0].state, state(ExecutionState::Running));
    c.welcome(1, vec![], vec![8]);
    let dir = h.dir(8);
    eventually("canceled dir removed", || !dir.root().exists()).await;
    assert!(!process_group_alive(pid));
    // Nothing is reported for it; the next message is the next task's.
    c.assign(9, "true");
    let (_, update) = c.recv_update().await;
    assert_eq!(update.execution_id, 9);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// True when a process of the group is alive. Zombies do not count: in some containers
/// nothing reaps orphans.
fn process_group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

#[tokio::test]
async fn signals_from_the_server() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(10, "sleep 30");
    c.assign(11, "echo never");
    c.assign(12, "echo never");
    let want = [
        (10, state(ExecutionState::Running)),
        (11, state(ExecutionState::Accepted)),
        (12, state(ExecutionState::Accepted)),
    ];
    c.recv_until(|seen| {
        want.iter()
            .all(|w| seen.iter().any(|u| (u.execution_id, u.state) == *w))
    })
    .await;
    c.signal(12, WireSignal::Cancel); // queued: dropped silently
    c.signal(11, WireSignal::Kill); // queued: failed as killed
    let (_, killed_queued) = c.recv_update().await;
    assert_eq!(killed_queued.execution_id, 11);
    assert_eq!(killed_queued.failure, FailureClass::Killed as i32);
    c.signal(10, WireSignal::Pause);
    c.signal(10, WireSignal::Term);
    let (_, term) = c.recv_update().await;
    assert_eq!(
        (term.execution_id, term.state),
        (10, state(ExecutionState::Failed))
    );
    assert_eq!(term.failure, FailureClass::Killed as i32);
    assert_eq!(term.message, "killed by signal 15");
    assert!(!h.dir(12).root().exists(), "the canceled task never ran");
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn concurrency_limits_running_tasks_and_settings_change_it_live() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(20, "sleep 30");
    c.assign(21, "echo second");
    let seen = c
        .recv_until(|seen| {
            let has = |id, s| {
                seen.iter()
                    .any(|u| u.execution_id == id && u.state == state(s))
            };
            has(20, ExecutionState::Running) && has(21, ExecutionState::Accepted)
        })
        .await;
    assert!(
        !seen
            .iter()
            .any(|u| u.execution_id == 21 && u.state == state(ExecutionState::Running)),
        "{seen:?}"
    );
    c.send(server_message::Kind::Settings(WireSettings {
        concurrency: 2,
        prefetch: 0,
        batch: String::new(),
        prefetch_auto: false,
    }));
    let outcome = c.run_to_final(21, [0, 0]).await;
    assert_eq!(outcome.output[0], b"second\n");
    c.signal(20, WireSignal::Kill);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unauthenticated_agent_stops_with_an_error() {
    let h = Harness::start(true).await;
    let (_shutdown, agent) = h.spawn_agent();
    let result = tokio::time::timeout(WAIT, agent).await.unwrap().unwrap();
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("Unauthenticated") && err.contains("bad token"),
        "{err}"
    );
}

#[tokio::test]
async fn a_restarted_agent_reports_unacknowledged_results() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(30, "echo done");
    c.run_to_final(30, [0, 0]).await;
    shutdown.cancel(); // no Ack: the result must survive the restart
    agent.await.unwrap().unwrap();

    let (shutdown, agent) = h.spawn_agent();
    let mut c = h.next_session().await;
    let hello = hello_of(&mut c).await;
    assert_eq!(hello.held.len(), 1);
    assert_eq!(
        (hello.held[0].execution_id, hello.held[0].state),
        (30, state(ExecutionState::Succeeded))
    );
    c.welcome(
        1,
        vec![OutputOffsets {
            execution_id: 30,
            stdout: 0,
            stderr: 0,
        }],
        vec![],
    );
    let outcome = c.run_to_final(30, [0, 0]).await;
    assert_eq!(outcome.output[0], b"done\n");
    c.ack(outcome.last_seq);
    let dir = h.dir(30);
    eventually("dir removed", || !dir.root().exists()).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_kills_running_tasks_and_abandons_them() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(40, "sleep 30");
    c.recv_state(40, state(ExecutionState::Running)).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(disk_phase(&h.dir(40)), Some(DiskPhase::Abandoned));
    // The stream was closed by the agent.
    let end = tokio::time::timeout(WAIT, c.inbound.message())
        .await
        .unwrap();
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test]
async fn heartbeats_carry_host_figures() {
    let mut h = Harness::start(false).await;
    h.config.heartbeat = Duration::from_millis(50);
    let (shutdown, agent, mut c) = h.welcomed().await;
    let heartbeat = loop {
        let message = tokio::time::timeout(WAIT, c.inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(agent_message::Kind::Heartbeat(hb)) = message.kind {
            break hb;
        }
    };
    assert!(heartbeat.mem_available_bytes > 0 && heartbeat.disk_available_bytes > 0);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn two_agents_cannot_share_a_work_dir() {
    let mut h = Harness::start(false).await;
    let (shutdown, first) = h.spawn_agent();
    let _connected = h.next_session().await; // the lock is taken before connecting
    let (_s, second) = h.spawn_agent();
    let err = tokio::time::timeout(WAIT, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    shutdown.cancel();
    first.await.unwrap().unwrap();
}

/// The agent's own throughput, with a server that answers at once: `true` tasks at concurrency
/// 4, compared with a bare spawn loop. Run with
/// `cargo test --release -p scitq-worker -- --ignored --nocapture agent_throughput`
/// (`BENCH_PREFETCH=N` keeps N more tasks assigned than running slots).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn agent_throughput_against_an_instant_server() {
    const N: i64 = 10_000;
    const CONCURRENCY: u32 = 4;
    let mut h = Harness::start(false).await;
    h.config.concurrency = CONCURRENCY;
    let (shutdown, agent, mut c) = h.welcomed().await;
    let assign_true = |c: &Conversation, id: i64| {
        c.send(server_message::Kind::Assignment(Assignment {
            execution_id: id,
            task_id: id,
            spec: Some(TaskSpec {
                command: "true".into(),
                ..TaskSpec::default()
            }),
            registry_credentials: Vec::new(),
        }));
    };
    let start = std::time::Instant::now();
    let mut assigned = 0;
    let prefetch: i64 = std::env::var("BENCH_PREFETCH").map_or(0, |p| p.parse().unwrap());
    while assigned < i64::from(CONCURRENCY) + prefetch {
        assigned += 1;
        assign_true(&c, assigned);
    }
    let mut finished = 0;
    while finished < N {
        let message = c.recv().await;
        if let Some(agent_message::Kind::Update(update)) = &message.kind
            && crate::outbox::is_final(update)
        {
            assert_eq!(update.state, state(ExecutionState::Succeeded));
            finished += 1;
            c.ack(message.seq);
            if assigned < N {
                assigned += 1;
                assign_true(&c, assigned);
            }
        }
    }
    let agent_rate = N as f64 / start.elapsed().as_secs_f64();
    shutdown.cancel();
    agent.await.unwrap().unwrap();

    let start = std::time::Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let threads: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < N {
                    let status = std::process::Command::new("true")
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let bare_rate = N as f64 / start.elapsed().as_secs_f64();
    println!(
        "agent: {agent_rate:.0} tasks/s, bare spawn loop: {bare_rate:.0} tasks/s, ratio {:.2}",
        agent_rate / bare_rate
    );
}

/// A short task's result waits while queued tasks keep the slot busy, but never longer than
/// `RESULT_HOLD`: here the next task runs for a second and the result comes long before.
#[tokio::test]
async fn a_held_result_goes_out_within_its_hold_time() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    // 6 runs until the test lets it end: 5's result must not wait for it.
    let gate = tempfile::tempdir().unwrap();
    let gate = gate.path().join("gate");
    c.assign(5, "true");
    c.assign(6, &wait_for_gate(&gate));
    c.assign(7, "true");
    c.assign(8, "true");
    let succeeded = state(ExecutionState::Succeeded);
    let seen = c
        .recv_until(|seen| {
            seen.iter()
                .any(|u| u.execution_id == 5 && u.state == succeeded)
        })
        .await;
    assert!(
        !seen
            .iter()
            .any(|u| u.execution_id == 6 && u.state == succeeded),
        "{seen:?}"
    );
    std::fs::write(&gate, "").unwrap();
    for id in [6, 7, 8] {
        c.recv_state(id, succeeded).await;
    }
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// Results held while tasks were queued go out together, once they are as many as the tasks
/// still queued, so that the server commits them (and refills the slots) in one round. (The
/// hold time is long here, so only the queue releases them.)
#[tokio::test]
async fn held_results_go_out_together_before_the_queue_runs_dry() {
    let mut h = Harness::start(false).await;
    h.config.result_hold = Duration::from_secs(60);
    let (shutdown, agent, mut c) = h.welcomed().await;
    // 5 and 6 end one after the other; 7 and 8 wait in the queue, then run for a while. 5
    // waits for a gate until all four are queued: were 5 to end before the agent read the
    // last assignments, the queue would be too short to hold its result (a loaded machine).
    let gate = tempfile::tempdir().unwrap();
    let gate = gate.path().join("gate");
    c.assign(5, &wait_for_gate(&gate));
    c.assign(6, "true");
    c.assign(7, "sleep 2");
    c.assign(8, "sleep 2");
    let accepted = state(ExecutionState::Accepted);
    c.recv_until(|seen| {
        seen.iter()
            .any(|u| u.execution_id == 8 && u.state == accepted)
    })
    .await;
    std::fs::write(&gate, "").unwrap();
    let succeeded = state(ExecutionState::Succeeded);
    let mut finals = Vec::new();
    while finals.len() < 2 {
        let (seq, update) = c.recv_update().await;
        if update.state == succeeded {
            if update.execution_id == 5 {
                // Held until 6 ended too (one result, two tasks queued).
                assert!(
                    matches!(disk_phase(&h.dir(6)), Some(DiskPhase::Finished { .. })),
                    "the result of 5 went before 6 ended: {:?}",
                    disk_phase(&h.dir(6))
                );
            }
            finals.push((seq, update.execution_id));
        }
    }
    assert_eq!(finals.iter().map(|(_, id)| *id).collect::<Vec<_>>(), [5, 6]);
    // Sent one right after the other: nothing came between them.
    assert_eq!(finals[1].0, finals[0].0 + 1, "{finals:?}");
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// A task that ends before its "running" update is due: the timer of that update must not
/// send the final one, which is held with the next results like any other. (It did: a
/// `true` task's result went out 15 ms after its start, one commit on the server per task.)
#[tokio::test]
async fn a_short_task_s_result_stays_held_past_its_running_update_s_timer() {
    let mut h = Harness::start(false).await;
    h.config.result_hold = Duration::from_secs(60);
    let (shutdown, agent, mut c) = h.welcomed().await;
    // 6 starts when 5 ends and waits for the test; 7 and 8 stay queued, so nothing but the
    // hold (a minute) could release 5's result while 6 runs.
    let gate = tempfile::tempdir().unwrap();
    let gate = gate.path().join("gate");
    c.assign(5, "true");
    c.assign(6, &wait_for_gate(&gate));
    c.assign(7, "true");
    c.assign(8, "true");
    let (running, succeeded) = (
        state(ExecutionState::Running),
        state(ExecutionState::Succeeded),
    );
    let seen = c
        .recv_until(|seen| {
            seen.iter()
                .any(|u| u.execution_id == 6 && u.state == running)
        })
        .await;
    // Well past the running update's delay of 5 (and of 6).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !seen.iter().any(|u| u.state == succeeded),
        "a result went out while 6 still ran: {seen:?}"
    );
    std::fs::write(&gate, "").unwrap();
    let (_, first) = loop {
        let (seq, update) = c.recv_update().await;
        if update.state == succeeded {
            break (seq, update);
        }
    };
    assert_eq!(first.execution_id, 5);
    assert!(
        matches!(disk_phase(&h.dir(6)), Some(DiskPhase::Finished { .. })),
        "the result of 5 went out while 6 still ran: {:?}",
        disk_phase(&h.dir(6))
    );
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// With `--result-hold 0s` every result goes at once, queue or not.
#[tokio::test]
async fn with_no_hold_a_result_goes_at_once() {
    let mut h = Harness::start(false).await;
    h.config.result_hold = Duration::ZERO;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(5, "true");
    c.assign(6, "sleep 2");
    c.assign(7, "true");
    c.assign(8, "true");
    c.recv_state(5, state(ExecutionState::Succeeded)).await;
    assert!(
        !matches!(disk_phase(&h.dir(6)), Some(DiskPhase::Finished { .. })),
        "the result of 5 waited for 6"
    );
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// The default prefetch is automatic: the agent says so in `Hello`, starts at 0, and asks
/// for more once short tasks end faster than a round trip to the server.
#[tokio::test]
async fn an_automatic_prefetch_grows_with_short_tasks() {
    let mut h = Harness::start(false).await;
    h.config.prefetch = scitq_proto::PrefetchSetting::Auto;
    let (shutdown, agent) = h.spawn_agent();
    let mut c = h.next_session().await;
    let hello = hello_of(&mut c).await;
    assert_eq!((hello.prefetch, hello.prefetch_auto), (0, true));
    c.send(server_message::Kind::Welcome(scitq_proto::v1::Welcome {
        worker_id: 1,
        settings: Some(WireSettings {
            concurrency: 1,
            prefetch: 0,
            batch: String::new(),
            prefetch_auto: true,
        }),
        lease_ms: 6 * 3600 * 1000,
        ..Default::default()
    }));
    let mut next = 1;
    c.assign(next, "true");
    let wanted = loop {
        let message = c.recv().await;
        match message.kind {
            Some(agent_message::Kind::Prefetch(p)) => break p.prefetch,
            Some(agent_message::Kind::Update(update)) if crate::outbox::is_final(&update) => {
                // A slow server: the round trip stays well above a `true` task's run time
                // even when spawning is slow on a loaded machine.
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.ack(message.seq);
                assert!(next < 50, "no prefetch asked for after {next} short tasks");
                next += 1;
                c.assign(next, "true");
            }
            _ => {}
        }
    };
    assert!(wanted > 0, "{wanted}");
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_recall_gives_back_a_queued_task_and_leaves_a_started_one() {
    let mut h = Harness::start(false).await;
    let (shutdown, agent, mut c) = h.welcomed().await;
    c.assign(30, "sleep 30");
    c.assign(31, "echo never");
    let want = [
        (30, state(ExecutionState::Running)),
        (31, state(ExecutionState::Accepted)),
    ];
    c.recv_until(|seen| {
        want.iter()
            .all(|w| seen.iter().any(|u| (u.execution_id, u.state) == *w))
    })
    .await;
    c.signal(31, WireSignal::Recall);
    c.signal(30, WireSignal::Recall); // started: it runs on
    let (_, recalled) = c.recv_update().await;
    assert_eq!(
        (recalled.execution_id, recalled.state),
        (31, state(ExecutionState::Canceled))
    );
    assert_eq!(recalled.failure, FailureClass::Recalled as i32);
    c.signal(30, WireSignal::Kill);
    let (_, killed) = c.recv_update().await;
    assert_eq!(
        (killed.execution_id, killed.failure),
        (30, FailureClass::Killed as i32),
        "the recall left the started task running until the kill"
    );
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}

/// When the automatic prefetch falls (tasks turned long), the queued tasks past the slots
/// and the new prefetch go back to the server, the last assigned first, reported
/// `Recalled`; the one left runs.
#[tokio::test]
async fn a_falling_automatic_prefetch_gives_back_the_queued_tasks_past_it() {
    let mut h = Harness::start(false).await;
    h.config.prefetch = scitq_proto::PrefetchSetting::Auto;
    let (shutdown, agent) = h.spawn_agent();
    let mut c = h.next_session().await;
    hello_of(&mut c).await;
    c.send(server_message::Kind::Welcome(scitq_proto::v1::Welcome {
        worker_id: 1,
        settings: Some(WireSettings {
            concurrency: 1,
            prefetch: 3,
            batch: String::new(),
            prefetch_auto: true,
        }),
        lease_ms: 6 * 3600 * 1000,
        ..Default::default()
    }));
    // A task far longer than a round trip, then three queued behind it.
    c.assign(40, "sleep 0.5");
    for id in 41..=43 {
        c.assign(id, "true");
    }
    let mut prefetch = None;
    let mut recalled = Vec::new();
    let mut succeeded = Vec::new();
    while prefetch.is_none() || recalled.len() < 2 || !succeeded.contains(&41) {
        let message = c.recv().await;
        match message.kind {
            Some(agent_message::Kind::Prefetch(p)) => prefetch = Some(p.prefetch),
            Some(agent_message::Kind::Update(update)) if crate::outbox::is_final(&update) => {
                c.ack(message.seq);
                if update.failure == FailureClass::Recalled as i32 {
                    recalled.push(update.execution_id);
                } else if update.state == state(ExecutionState::Succeeded) {
                    succeeded.push(update.execution_id);
                }
            }
            _ => {}
        }
    }
    assert_eq!(prefetch, Some(0), "one long task brings the prefetch to 0");
    assert_eq!(recalled, vec![43, 42], "the last assigned go back first");
    assert_eq!(succeeded, vec![40, 41]);
    shutdown.cancel();
    agent.await.unwrap().unwrap();
}
