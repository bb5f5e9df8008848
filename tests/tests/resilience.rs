//! Network failures between one agent and scitqd, played by a proxy the test controls:
//! a cut shorter than the lease loses nothing and runs nothing twice; a cut longer than the
//! lease re-queues the task, which runs once more elsewhere, and the old attempt's late
//! report is recorded without changing the outcome. The fence: an agent cut off (or dead)
//! for its lease has its tasks killed before the server hands them to another agent, and an
//! agent restarted after a SIGKILL adopts its native tasks instead of running them again.

use std::time::Duration;

use scitq_tests::{
    Agent, Proxy, Server, ServerOpts, as_id, poll, sh_quote, str_field, touch, wait_for_file_sh,
    wait_until,
};

const CONNECT: Duration = Duration::from_secs(60);

/// A script that prints `before`, waits for `gate`, prints `lines` numbered lines, then
/// touches `done` (so the test knows it ended on the agent's side).
fn gated_script(gate: &std::path::Path, done: &std::path::Path, lines: u32) -> String {
    format!(
        "echo before; {}; i=1; while [ $i -le {lines} ]; do echo line $i; i=$((i+1)); done; touch {}",
        wait_for_file_sh(gate),
        sh_quote(&done.display().to_string())
    )
}

fn expected_output(lines: u32) -> String {
    let mut out = String::from("before\n");
    for i in 1..=lines {
        out.push_str(&format!("line {i}\n"));
    }
    out
}

fn worker_status(c: &scitq_tests::Client, name: &str) -> String {
    c.workers()
        .iter()
        .find(|w| w["name"] == name)
        .map(|w| str_field(w, "status"))
        .unwrap_or_default()
}

#[test]
fn a_cut_shorter_than_the_lease_loses_no_output_and_runs_nothing_twice() {
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let proxy = Proxy::start(&server.addr());
    let _agent = Agent::start_via(&server, &proxy.addr(), "islander", 2, &[]);
    c.wait_worker_online("islander", CONNECT);

    const LINES: u32 = 2000;
    let gate = c.scratch_path("gate");
    let tasks: Vec<(i64, std::path::PathBuf)> = (0..2)
        .map(|i| {
            let done = c.scratch_path(&format!("done-{i}"));
            let id = c.create_sh("cut", &gated_script(&gate, &done, LINES), &[]);
            (id, done)
        })
        .collect();
    for (id, _) in &tasks {
        poll(
            CONNECT,
            format!("task {id} to print its first line"),
            || match c.output(*id).as_str() {
                "before\n" => Ok(()),
                other => Err(other.to_owned()),
            },
        );
    }

    proxy.cut();
    poll(
        CONNECT,
        "scitqd to see the agent gone",
        || match worker_status(&c, "islander").as_str() {
            "offline" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
    // The tasks finish while the agent cannot reach the server.
    touch(&gate);
    for (id, done) in &tasks {
        poll(CONNECT, format!("task {id} to end on the agent"), || {
            done.exists()
                .then_some(())
                .ok_or_else(|| "still running".to_owned())
        });
        assert_eq!(c.status(*id), "running", "nothing changes during the cut");
    }

    proxy.restore();
    for (id, _) in &tasks {
        let task = c.wait_task(*id, "succeeded", CONNECT);
        let executions = task["executions"].as_array().expect("executions");
        assert_eq!(executions.len(), 1, "ran once: {task:#}");
        assert_eq!(c.output(*id), expected_output(LINES), "task {id}'s output");
    }
    assert!(
        proxy.connections() >= 2,
        "the agent reconnected through the proxy"
    );
}

#[test]
fn a_cut_longer_than_the_lease_requeues_and_the_late_report_changes_nothing() {
    let lease = Duration::from_secs(5);
    let server = Server::start(ServerOpts::default().lease("5s"));
    let c = server.client();
    let proxy = Proxy::start(&server.addr());
    let _far = Agent::start_via(&server, &proxy.addr(), "far", 1, &[]);
    let far_id = c.wait_worker_online("far", CONNECT);

    let gate = c.scratch_path("gate");
    let done = c.scratch_path("done-far");
    // Both attempts run the same script; only the one in far's work dir marks `done`.
    let script = gated_script(&gate, &c.scratch_path("done-any"), 3).replace(
        "; touch ",
        &format!(
            "; case \"$PWD\" in *scitq-agent-far-*) touch {};; esac; touch ",
            sh_quote(&done.display().to_string())
        ),
    );
    let id = c.create_sh("lease", &script, &["--retry", "1"]);
    c.wait_task(id, "running", CONNECT);

    let cut_wall = std::time::SystemTime::now();
    proxy.cut();
    let cut_at = std::time::Instant::now();
    poll(
        CONNECT,
        "scitqd to see the agent gone",
        || match worker_status(&c, "far").as_str() {
            "offline" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
    // Before the lease ends the task stays with its worker. Seen here only when this check
    // comes in time (a loaded machine may be slower than the lease); the execution's end
    // time, checked below, says it on any machine.
    let task = c.task(id);
    if cut_at.elapsed() < lease {
        assert_eq!(task["status"], "running", "{task:#}");
        assert_eq!(
            task["executions"].as_array().map(Vec::len),
            Some(1),
            "{task:#}"
        );
    } else {
        eprintln!(
            "offline seen {:?} after the cut, past the lease: the end time check stands alone",
            cut_at.elapsed()
        );
    }

    let _near = Agent::start(&server, "near", 1, &[]);
    let near_id = c.wait_worker_online("near", CONNECT);
    poll(CONNECT, format!("task {id} to run again on near"), || {
        let task = c.task(id);
        let executions = task["executions"].as_array().cloned().unwrap_or_default();
        match executions.as_slice() {
            [_, again] if again["state"] == "running" && as_id(&again["worker_id"]) == near_id => {
                Ok(())
            }
            _ => Err(task.to_string()),
        }
    });
    assert!(
        cut_at.elapsed() >= lease,
        "re-queued before the lease ended"
    );

    // The far attempt was killed by its agent when the lease passed (the fence), before
    // the task ran again on near: only near's attempt gets through the gate.
    touch(&gate);
    c.wait_task(id, "succeeded", CONNECT);
    proxy.restore();
    // Its report (killed) is late: scitqd records it without changing anything.
    poll(
        CONNECT,
        "the far agent to be back",
        || match worker_status(&c, "far").as_str() {
            "online" => Ok(()),
            other => Err(other.to_owned()),
        },
    );

    let task = c.task(id);
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(as_id(&task["worker_id"]), near_id, "{task:#}");
    let executions = task["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 2, "no third attempt: {task:#}");
    let (first, second) = (&executions[0], &executions[1]);
    assert_eq!(as_id(&first["worker_id"]), far_id, "{first:#}");
    assert_eq!(
        first["state"], "failed",
        "the late report cannot make it succeed: {first:#}"
    );
    assert_eq!(first["failure"], "lost", "{first:#}");
    assert!(!done.exists(), "the far attempt ran on past its lease");
    // The server kept it for the whole lease: it ended no sooner than the lease after the
    // cut (scitqd runs on this machine, so its clock is this test's).
    let ended = humantime::parse_rfc3339_weak(&str_field(first, "finished_at"))
        .unwrap_or_else(|e| panic!("finished_at of {first:#}: {e}"));
    let held = ended.duration_since(cut_wall).unwrap_or_default();
    assert!(
        held >= lease,
        "the lost execution ended {held:?} after the cut, before the {lease:?} lease: {first:#}"
    );
    assert_eq!(second["state"], "succeeded", "{second:#}");
    assert_eq!(c.output(id), expected_output(3));
    assert_eq!(worker_status(&c, "far"), "online", "the far agent is back");
}

#[test]
fn a_long_server_outage_keeps_output_in_a_bounded_spool_and_delivers_it_all() {
    let mut server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    // One slot, three prefetched; at most 1 MiB of output held for the server. The agent
    // finds the server after its restart (on a new port) through a stable address.
    let front = server.stable_addr();
    let agent = Agent::start_via(
        &server,
        &front,
        "hermit",
        1,
        &["--prefetch", "3", "--spool-limit-mib", "1"],
    );
    c.wait_worker_online("hermit", CONNECT);

    // Each task prints 600,000 bytes: two fit under the limit, a third would not.
    let gate = c.scratch_path("gate");
    let tasks: Vec<(i64, std::path::PathBuf)> = (0..4)
        .map(|i| {
            let started = c.scratch_path(&format!("started-{i}"));
            let script = format!(
                "touch {}; {}; head -c 600000 /dev/zero | tr '\\0' '{i}'",
                sh_quote(&started.display().to_string()),
                wait_for_file_sh(&gate)
            );
            (c.create_sh("outage", &script, &[]), started)
        })
        .collect();
    poll(CONNECT, "all four tasks to reach the agent", || {
        let held = tasks
            .iter()
            .filter(|(id, _)| c.status(*id) != "pending")
            .count();
        (held == 4)
            .then_some(())
            .ok_or_else(|| format!("{held} of 4"))
    });

    server.stop();
    touch(&gate);
    poll(CONNECT, "the agent to stop at its spool limit", || {
        let log = agent.log_tail(200);
        log.contains("spool full")
            .then_some(())
            .ok_or_else(|| "no spool-full warning yet".to_owned())
    });
    let started = tasks.iter().filter(|(_, s)| s.exists()).count();
    assert_eq!(started, 2, "two tasks fill the 1 MiB spool; the rest wait");

    server.start_again();
    for (i, (id, _)) in tasks.iter().enumerate() {
        let task = c.wait_task(*id, "succeeded", CONNECT);
        assert_eq!(
            task["executions"].as_array().map(Vec::len),
            Some(1),
            "{task:#}"
        );
        let output = c.output(*id);
        assert_eq!(output.len(), 600_000, "task {id}");
        assert!(
            output.bytes().all(|b| b == b'0' + i as u8),
            "task {id}'s bytes"
        );
    }
}

/// Total size of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_task_printing_a_gigabyte_leaves_scitqd_small_in_memory_and_on_disk() {
    const SIZE: u64 = 1_000_000_000;
    let server = Server::start(ServerOpts::default().arg("--max-output-mib").arg("1"));
    let c = server.client();
    let _agent = Agent::start(&server, "firehose", 1, &[]);
    c.wait_worker_online("firehose", CONNECT);

    let id = c.create_sh(
        "flood",
        &format!("echo BEGIN; head -c {SIZE} /dev/zero | tr '\\0' x; echo; echo END"),
        &[],
    );
    let pid = server.pid();
    let mut peak_kib = 0;
    poll(
        Duration::from_secs(600),
        "the gigabyte task to succeed",
        || {
            peak_kib = peak_kib.max(scitq_tests::rss_kib(pid).unwrap_or(0));
            match c.status(id).as_str() {
                "succeeded" => Ok(()),
                "failed" | "canceled" => panic!("{:#}", c.task(id)),
                other => Err(other.to_owned()),
            }
        },
    );
    let executions = c.ctl_json(["task", "executions", &id.to_string()]);
    assert_eq!(
        executions[0]["stdout_bytes"],
        SIZE + 11,
        "the full size is recorded"
    );
    let output = c.output(id);
    assert!(output.starts_with("BEGIN\nxxx") && output.ends_with("x\nEND\n"));
    assert!(output.contains("bytes of stdout dropped here"), "no marker");
    assert!(output.len() < 2 << 20, "kept {} bytes", output.len());
    let on_disk = dir_size(&server.data_dir());
    println!(
        "1 GB of output: scitqd peak RSS {} MiB, data dir {} MiB",
        peak_kib >> 10,
        on_disk >> 20
    );
    assert!(peak_kib < 256 << 10, "scitqd peaked at {peak_kib} KiB");
    assert!(on_disk < 64 << 20, "data dir holds {on_disk} bytes");
}

#[test]
fn a_silent_stall_loses_nothing_and_the_session_carries_on() {
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let proxy = Proxy::start(&server.addr());
    let _agent = Agent::start_via(&server, &proxy.addr(), "stalled", 1, &[]);
    c.wait_worker_online("stalled", CONNECT);

    const LINES: u32 = 500;
    let gate = c.scratch_path("gate");
    let done = c.scratch_path("done");
    let id = c.create_sh("stall", &gated_script(&gate, &done, LINES), &[]);
    poll(
        CONNECT,
        format!("task {id} to print its first line"),
        || match c.output(id).as_str() {
            "before\n" => Ok(()),
            other => Err(other.to_owned()),
        },
    );

    // No byte crosses, but no connection breaks: the task ends meanwhile.
    proxy.blackhole();
    touch(&gate);
    poll(CONNECT, "the task to end on the agent", || {
        done.exists()
            .then_some(())
            .ok_or_else(|| "still running".to_owned())
    });
    assert_eq!(c.status(id), "running", "the server cannot know yet");

    proxy.restore();
    let task = c.wait_task(id, "succeeded", CONNECT);
    assert_eq!(
        task["executions"].as_array().map(Vec::len),
        Some(1),
        "{task:#}"
    );
    assert_eq!(c.output(id), expected_output(LINES));
    assert_eq!(proxy.connections(), 1, "the same session carried on");
}

/// A task that appends `PID TIME_MS` to `log` every 0.2 s for `ticks` ticks, then
/// `PID done`: each execution leaves the span of time it ran in.
fn ticking_script(log: &std::path::Path, ticks: u32) -> String {
    let log = sh_quote(&log.display().to_string());
    format!(
        "i=0; while [ $i -lt {ticks} ]; do echo \"$$ $(date +%s%3N)\" >> {log}; sleep 0.2; i=$((i+1)); done; echo \"$$ done\" >> {log}"
    )
}

/// The executions recorded in a ticking log: per pid, first and last tick (ms) and whether
/// it finished.
fn spans(log: &std::path::Path) -> Vec<(u64, u64, bool)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut by_pid: std::collections::BTreeMap<&str, (u64, u64, bool)> = Default::default();
    for line in text.lines() {
        let Some((pid, what)) = line.split_once(' ') else {
            continue;
        };
        let span = by_pid.entry(pid).or_insert((u64::MAX, 0, false));
        match what.parse::<u64>() {
            Ok(ms) => {
                span.0 = span.0.min(ms);
                span.1 = span.1.max(ms);
            }
            Err(_) => span.2 = true,
        }
    }
    let mut spans: Vec<_> = by_pid.into_values().collect();
    spans.sort();
    spans
}

#[test]
fn a_dead_agents_tasks_are_killed_before_they_run_elsewhere_and_never_overlap() {
    // The scenario: a short lease, agent A running tasks, agent B connected, A
    // SIGKILLed. Its orphaned tasks must be dead before B runs them again.
    let server = Server::start(ServerOpts::default().lease("4s"));
    let c = server.client();
    let mut a = Agent::start(&server, "a", 4, &[]);
    c.wait_worker_online("a", CONNECT);
    // Each runs ~12 s: without the fence, A's orphans would still run when B gets them.
    let logs: Vec<_> = (0..4)
        .map(|i| c.scratch_path(&format!("ticks-{i}")))
        .collect();
    let ids: Vec<i64> = logs
        .iter()
        .map(|log| c.create_sh("fence", &ticking_script(log, 60), &["--retry", "1"]))
        .collect();
    for &id in &ids {
        c.wait_task(id, "running", CONNECT);
    }
    let _b = Agent::start(&server, "b", 4, &[]);
    let b_id = c.wait_worker_online("b", CONNECT);
    wait_until(CONNECT, "every task to tick on A", || {
        logs.iter().all(|log| spans(log).len() == 1)
    });

    a.kill9();
    for &id in &ids {
        let task = c.wait_task(id, "succeeded", Duration::from_secs(120));
        assert_eq!(as_id(&task["worker_id"]), b_id, "{task:#}");
        let executions = task["executions"].as_array().expect("executions");
        assert_eq!(executions.len(), 2, "{task:#}");
        assert_eq!(executions[0]["failure"], "lost", "{task:#}");
    }
    for log in &logs {
        let spans = spans(log);
        assert_eq!(
            spans.len(),
            2,
            "two executions in {}: {spans:?}",
            log.display()
        );
        let (killed, rerun) = (spans[0], spans[1]);
        assert!(!killed.2 && rerun.2, "only the re-run finished: {spans:?}");
        assert!(
            killed.1 < rerun.0,
            "the executions overlap by {} ms: {spans:?}",
            killed.1 - rerun.0
        );
    }
}

#[test]
fn a_live_agent_cut_off_past_its_lease_kills_its_tasks() {
    let lease = Duration::from_secs(4);
    let server = Server::start(ServerOpts::default().lease("4s"));
    let c = server.client();
    let proxy = Proxy::start(&server.addr());
    let _far = Agent::start_via(&server, &proxy.addr(), "far", 2, &[]);
    c.wait_worker_online("far", CONNECT);
    let log = c.scratch_path("ticks-far");
    let id = c.create_sh("fence", &ticking_script(&log, 600), &["--retry", "0"]);
    c.wait_task(id, "running", CONNECT);
    wait_until(CONNECT, "the task to tick", || spans(&log).len() == 1);

    proxy.cut();
    let cut_at = std::time::Instant::now();
    // The server may re-queue it at lease + 5 s: the task must be dead before.
    let last_len = std::cell::Cell::new(0);
    let still_since = std::cell::Cell::new(std::time::Instant::now());
    poll(Duration::from_secs(30), "the task to stop ticking", || {
        let len = std::fs::metadata(&log).map_or(0, |m| m.len());
        if len != last_len.get() {
            last_len.set(len);
            still_since.set(std::time::Instant::now());
        }
        // Ticks come every 0.2 s: a second without one means it is dead.
        if still_since.get().elapsed() >= Duration::from_secs(1) {
            Ok(())
        } else {
            Err(format!("{len} bytes"))
        }
    });
    let stopped = still_since.get() - cut_at;
    assert!(
        stopped < lease + Duration::from_secs(5),
        "killed {stopped:?} after the cut, after the server may re-queue it"
    );
    assert!(
        stopped + Duration::from_secs(1) >= lease,
        "killed {stopped:?} after the cut, before the lease ended"
    );
    let spans = spans(&log);
    assert!(
        spans.len() == 1 && !spans[0].2,
        "killed, not finished: {spans:?}"
    );

    proxy.restore();
    let task = c.wait_task(id, "failed", CONNECT);
    assert_eq!(
        task["executions"].as_array().map(Vec::len),
        Some(1),
        "{task:#}"
    );
}

/// A task that writes `started $$` to `marker` once, waits for `gate`, then prints `lines`
/// lines and exits with `code`.
fn adoptable_script(marker: &std::path::Path, gate: &std::path::Path, code: u8) -> String {
    format!(
        "echo \"started $$\" >> {}; echo before; {}; i=1; while [ $i -le 3 ]; do echo line $i; i=$((i+1)); done; exit {code}",
        sh_quote(&marker.display().to_string()),
        wait_for_file_sh(gate),
    )
}

#[test]
fn an_agent_restarted_after_sigkill_adopts_its_running_native_tasks() {
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let mut agent = Agent::start(&server, "phoenix", 2, &[]);
    c.wait_worker_online("phoenix", CONNECT);
    let gate = c.scratch_path("adopt-gate");
    let markers: Vec<_> = (0..2)
        .map(|i| c.scratch_path(&format!("adopt-marker-{i}")))
        .collect();
    let ids: Vec<i64> = markers
        .iter()
        .map(|m| c.create_sh("adopt", &adoptable_script(m, &gate, 0), &["--retry", "1"]))
        .collect();
    for &id in &ids {
        c.wait_task(id, "running", CONNECT);
        poll(CONNECT, format!("task {id} to print"), || {
            (c.output(id) == "before\n")
                .then_some(())
                .ok_or_else(|| c.output(id))
        });
    }

    agent.kill9();
    let killed_at = std::time::Instant::now();
    // Restarted 2 s later, while its tasks still run.
    poll(CONNECT, "2 s to pass", || {
        (killed_at.elapsed() >= Duration::from_secs(2))
            .then_some(())
            .ok_or_else(|| format!("{:?}", killed_at.elapsed()))
    });
    agent.start_again();
    c.wait_worker_online("phoenix", CONNECT);
    touch(&gate);
    for (&id, marker) in ids.iter().zip(&markers) {
        let task = c.wait_task(id, "succeeded", CONNECT);
        assert_eq!(
            task["executions"].as_array().map(Vec::len),
            Some(1),
            "adopted, not run again: {task:#}"
        );
        assert_eq!(c.output(id), expected_output(3), "{task:#}");
        let started = std::fs::read_to_string(marker).unwrap();
        assert_eq!(started.lines().count(), 1, "started once: {started}");
    }
}

#[test]
fn an_agent_restarted_after_its_tasks_ended_reports_their_real_exit() {
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let mut agent = Agent::start(&server, "phoenix", 2, &[]);
    c.wait_worker_online("phoenix", CONNECT);
    let gate = c.scratch_path("ended-gate");
    let markers: Vec<_> = (0..2)
        .map(|i| c.scratch_path(&format!("ended-marker-{i}")))
        .collect();
    let ok = c.create_sh(
        "ended",
        &adoptable_script(&markers[0], &gate, 0),
        &["--retry", "1"],
    );
    let three = c.create_sh(
        "ended",
        &adoptable_script(&markers[1], &gate, 3),
        &["--retry", "0"],
    );
    for id in [ok, three] {
        c.wait_task(id, "running", CONNECT);
    }
    wait_until(CONNECT, "both tasks to start", || {
        markers.iter().all(|m| m.exists())
    });

    agent.kill9();
    touch(&gate);
    // Both end while no agent runs: their process groups are gone.
    let pids: Vec<i32> = markers
        .iter()
        .map(|m| {
            let text = std::fs::read_to_string(m).unwrap();
            text.trim().trim_start_matches("started ").parse().unwrap()
        })
        .collect();
    wait_until(CONNECT, "both tasks to end", || {
        pids.iter()
            .all(|&pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err())
    });
    agent.start_again();

    let task = c.wait_task(ok, "succeeded", CONNECT);
    assert_eq!(
        task["executions"].as_array().map(Vec::len),
        Some(1),
        "{task:#}"
    );
    assert_eq!(c.output(ok), expected_output(3));
    let task = c.wait_task(three, "failed", CONNECT);
    let executions = task["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 1, "not run again: {task:#}");
    assert_eq!(executions[0]["failure"], "run", "{task:#}");
    assert_eq!(executions[0]["exit_code"], 3, "{task:#}");
    assert_eq!(c.output(three), expected_output(3));
    for marker in &markers {
        let started = std::fs::read_to_string(marker).unwrap();
        assert_eq!(started.lines().count(), 1, "started once: {started}");
    }
}

#[test]
fn a_dead_agents_container_is_killed_when_its_lease_passes() {
    use scitq_tests::Image;
    use scitq_tests::images::{containers_labelled, docker, remove_containers};
    let lease = Duration::from_secs(4);
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default().lease("4s"));
    let c = server.client();
    let mut agent = Agent::start(&server, "boxed", 1, &["--docker-network", "none"]);
    c.wait_worker_online("boxed", CONNECT);
    let work_dir = agent.work_dir().to_string_lossy().into_owned();
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_containers(&containers_labelled("scitq.agent", &self.0));
        }
    }
    let _cleanup = Cleanup(work_dir.clone());
    let ticker = "while true; do echo tick; sleep 0.2; done";
    let id = c.create(&[
        "--container",
        image.tag(),
        "--retry",
        "0",
        "--shell",
        "--",
        ticker,
    ]);
    let container = poll(CONNECT, "the task's container to run", || {
        let ids = containers_labelled("scitq.agent", &work_dir);
        match ids.as_slice() {
            [one] if c.output(id).contains("tick") => Ok(one.clone()),
            _ => Err(format!("{ids:?}")),
        }
    });

    agent.kill9();
    let killed_at = std::time::Instant::now();
    let running = || {
        docker(&["inspect", "--format", "{{.State.Running}}", &container])
            .trim()
            .to_owned()
    };
    poll(
        Duration::from_secs(30),
        "the container to be killed",
        || match running().as_str() {
            "false" => Ok(()),
            other => Err(other.to_owned()),
        },
    );
    let stopped = killed_at.elapsed();
    assert!(
        stopped < lease + Duration::from_secs(5),
        "the container ran {stopped:?} after its agent died, past the server's re-queue"
    );
}

/// Issue 13: the supervisor is the subreaper of its tasks. A task's orphan (here one that
/// also left the task's process group) becomes the supervisor's child, is reaped by it, and
/// is killed with the tasks when the lease passes without an agent.
#[test]
fn a_tasks_orphan_is_the_supervisors_child_and_dies_at_the_fence() {
    let server = Server::start(ServerOpts::default().lease("4s"));
    let c = server.client();
    let mut a = Agent::start(&server, "parent", 1, &[]);
    c.wait_worker_online("parent", CONNECT);
    let pid_file = c.scratch_path("orphan-pid");
    let script = format!(
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {}",
        sh_quote(&pid_file.to_string_lossy())
    );
    let id = c.create_sh("orphans", &script, &[]);
    c.wait_task(id, "succeeded", CONNECT);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the orphan's pid")
        .trim()
        .parse()
        .expect("a pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_dir.join("status")).expect("the orphan runs");
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|p| p.trim().to_owned())
        .unwrap_or_default();
    let parent = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&parent).contains("__supervise"),
        "the orphan's parent {ppid} is not the supervisor: {:?}",
        String::from_utf8_lossy(&parent)
    );

    a.kill9();
    poll(
        Duration::from_secs(60),
        "the orphan to be killed and reaped",
        || {
            if proc_dir.exists() {
                Err(std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default())
            } else {
                Ok(())
            }
        },
    );
}

/// Continues a stopped process when dropped, so that a failing test does not leave scitqd
/// frozen for its teardown.
struct Frozen(nix::unistd::Pid);

impl Frozen {
    fn freeze(pid: nix::unistd::Pid) -> Frozen {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP scitqd");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Issue 13, item 4: scitqd frozen (SIGSTOP) past the agent's keepalive, then continued.
/// The agent gives up on its session and tries again while scitqd cannot answer, so that on
/// waking scitqd finds the old session gone and several Hellos of the same agent waiting in
/// its accept queue, most from connections the agent already dropped. scitqd is continued
/// while the agent's latest attempt is on, so that its live Hello is handled together with
/// the old session's end (continued while the agent waits out its backoff, the live Hello
/// comes once all that is settled, and the test passed on the pre-fix code five times out
/// of five; continued during an attempt, it failed five out of five, see the commit that
/// says so). Before the claim ordering of `service/scheduler.rs`
/// (`Command::Claim`), an old session's offline mark could be committed after a newer one's
/// online mark (the worker then stayed `offline` while it ran tasks), and assignments could
/// go to a session that was already replaced (they stayed `assigned`, running nowhere, until
/// the lease). Several freezes in a row, with tasks flowing through each.
#[test]
fn a_frozen_scitqd_continued_keeps_its_worker_online_and_runs_every_task() {
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    // A short keepalive makes the agent give up on the frozen server within 2 s, as it does
    // within 40 s at its default. Its debug log says when an attempt starts. A fixed
    // prefetch: an automatic one grows with these short tasks until the agent holds them all
    // (then none is left to dispatch after a thaw).
    let agent = Agent::start_with_env(
        &server,
        "thawed",
        2,
        &["--keepalive", "1s", "--prefetch", "2"],
        &[("SCITQ_LOG", "info,scitq_worker::agent=debug")],
    );
    c.wait_worker_online("thawed", CONNECT);

    const ROUNDS: u64 = 4;
    // Enough for a round: 10 before the freeze, the 4 the agent holds through it, 4 after.
    const PER_ROUND: usize = 50;
    let commands = vec!["sleep 0.1".to_string(); PER_ROUND];
    // A freeze can find the agent up ("lost the server … reconnecting in") or still
    // connecting after the last thaw ("… retrying in"): both are a failure and a retry.
    let is_failure = |line: &str| line.contains("reconnecting in") || line.contains("retrying in");
    let failures = |log: &str| log.lines().filter(|l| is_failure(l)).count();
    // Whether the agent's last word is an attempt started after its last failure.
    let connecting = |log: &str| {
        log.lines()
            .rev()
            .find(|l| is_failure(l) || l.contains("connecting to"))
            .is_some_and(|l| l.contains("connecting to"))
    };
    let succeeded = || {
        c.batches()
            .iter()
            .find(|b| b["name"] == "thaw")
            .and_then(|b| b["counts"]["succeeded"].as_u64())
            .unwrap_or(0)
    };
    for round in 1..=ROUNDS {
        c.create_from_file(&commands, &["--batch", "thaw", "--retry", "0"]);
        // Tasks are running when scitqd freezes.
        let flowing = succeeded() + 10;
        wait_until(CONNECT, format!("round {round}: tasks to flow"), || {
            succeeded() >= flowing
        });
        let before = failures(&agent.log_tail(10_000));
        let frozen = Frozen::freeze(server.pid());
        // The agent noticed, at least two more attempts of it timed out (dead Hellos now
        // wait in scitqd's accept queue), and another one is on.
        poll(
            CONNECT,
            format!("round {round}: the agent to give up on the frozen scitqd and try again"),
            || {
                let log = agent.log_tail(10_000);
                if failures(&log) >= before + 3 && connecting(&log) {
                    Ok(())
                } else {
                    Err(agent.log_tail(5))
                }
            },
        );
        drop(frozen);
        // The agent is connected again: tasks go through its session...
        let thawed = succeeded();
        wait_until(
            CONNECT,
            format!("round {round}: tasks to flow again"),
            || succeeded() >= thawed + 4,
        );
        // ...and scitqd lists its worker online (a stale offline mark, committed after the
        // new session's online one, stays until the agent's next Hello).
        poll(
            CONNECT / 6,
            format!("round {round}: the connected worker to be listed online"),
            || match worker_status(&c, "thawed").as_str() {
                "online" => Ok(()),
                other => Err(format!("{other}; agent: {}", agent.log_tail(5))),
            },
        );
    }
    // Nothing assigned to a dead session: every task runs, within the lease of an hour.
    let total = PER_ROUND as u64 * ROUNDS;
    c.wait_batch_succeeded("thaw", total, CONNECT);
    let tasks = c.tasks(&["--batch", "thaw"]);
    let stuck: Vec<_> = tasks
        .iter()
        .filter(|t| str_field(t, "status") != "succeeded")
        .collect();
    assert!(stuck.is_empty(), "tasks not succeeded: {stuck:?}");
    assert_eq!(
        worker_status(&c, "thawed"),
        "online",
        "the agent is connected and idle: {}",
        agent.log_tail(20)
    );
}
