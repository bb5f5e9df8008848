//! Live-steering benchmarks: how soon a line a task prints reaches `task output --follow`,
//! and how soon `batch stop --term` reaches every one of many agents.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use scitq_tests::{Agent, Server, ServerOpts, poll, sh_quote};

/// Pause between two lines of the log-latency task.
const LINE_EVERY: &str = "0.005";

/// Nanoseconds since the epoch: the task's `date +%s%N` and this process share the clock.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The value at quantile `q` of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A task prints `lines` lines, each with the time it was written; `task output --follow`,
/// started before the task, prints them. Latency per line: from the task writing it (the
/// agent reads it at once) to scitqctl printing it.
pub fn log_latency(opts: &ServerOpts, lines: usize) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let _agent = Agent::start(&server, "talker", 1, &[]);
    c.wait_worker_online("talker", Duration::from_secs(60));

    let gate = c.scratch_path("log-gate");
    let script = format!(
        "while [ ! -e {gate} ]; do sleep 0.01; done; i=0; while [ $i -lt {lines} ]; do \
         echo \"$i $(date +%s%N)\"; i=$((i+1)); sleep {LINE_EVERY}; done",
        gate = sh_quote(&gate.display().to_string())
    );
    let id = c.create_sh("latency", &script, &[]);
    let mut follow = c
        .command()
        .args(["task", "output", &id.to_string(), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start scitqctl task output --follow")?;
    let stdout = follow.stdout.take().context("follow stdout")?;
    // The follower is attached once the task runs and it has seen no line yet.
    c.wait_task(id, "running", Duration::from_secs(60));
    std::fs::File::create(&gate).context("open the gate")?;

    let mut latencies_ms = Vec::with_capacity(lines);
    for line in BufReader::new(stdout).lines() {
        let received = now_ns();
        let line = line.context("read follow output")?;
        let Some((_, written)) = line.split_once(' ') else {
            bail!("unexpected line {line:?}");
        };
        let written: u128 = written
            .trim()
            .parse()
            .with_context(|| format!("line {line:?}"))?;
        latencies_ms.push(received.saturating_sub(written) as f64 / 1e6);
    }
    let status = follow.wait()?;
    ensure!(
        status.success(),
        "task output --follow exited with {status}"
    );
    ensure!(
        latencies_ms.len() == lines,
        "follow printed {} lines of {lines}",
        latencies_ms.len()
    );
    latencies_ms.sort_by(f64::total_cmp);
    println!(
        "log latency: {lines} lines, task write -> `task output --follow` print: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (targets: p50 <= 100 ms, p99 <= 500 ms)",
        quantile(&latencies_ms, 0.5),
        quantile(&latencies_ms, 0.99),
        latencies_ms[lines - 1]
    );
    Ok(())
}

/// `agents` agents each run one task of a batch that waits for SIGTERM and records when it
/// got it; latency: from `batch stop --term` returning to the last task recording it.
pub fn steering_latency(opts: &ServerOpts, agents: usize) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let fleet: Vec<Agent> = (0..agents)
        .map(|i| Agent::start(&server, &format!("fleet-{i}"), 1, &[]))
        .collect();
    poll(
        Duration::from_secs(120),
        format!("{agents} agents online"),
        || {
            let online = c
                .workers()
                .iter()
                .filter(|w| w["status"] == "online")
                .count();
            if online == agents {
                Ok(())
            } else {
                Err(format!("{online} online"))
            }
        },
    );

    let marks = c.scratch_path("stop-marks");
    std::fs::create_dir_all(&marks)?;
    let ids: Vec<i64> = (0..agents)
        .map(|i| {
            let mark = sh_quote(&marks.join(i.to_string()).display().to_string());
            let ready = sh_quote(&marks.join(format!("ready-{i}")).display().to_string());
            let script = format!(
                "trap 'date +%s%N > {mark}; exit 0' TERM; sleep 3600 & touch {ready}; wait"
            );
            c.create_sh("steered", &script, &[])
        })
        .collect();
    poll(
        Duration::from_secs(120),
        "every task to wait for its signal",
        || {
            let ready = (0..agents)
                .filter(|i| marks.join(format!("ready-{i}")).exists())
                .count();
            if ready == agents {
                Ok(())
            } else {
                Err(format!("{ready} of {agents} ready"))
            }
        },
    );

    let issued = now_ns();
    c.ctl_ok(["batch", "stop", "steered", "--term"]);
    let returned = now_ns();
    let last = poll(Duration::from_secs(60), "every task to get SIGTERM", || {
        let mut last = 0u128;
        for i in 0..agents {
            let Ok(text) = std::fs::read_to_string(marks.join(i.to_string())) else {
                return Err(format!("task on fleet-{i} has not seen it"));
            };
            let Ok(at) = text.trim().parse::<u128>() else {
                return Err(format!("task on fleet-{i} is writing its mark"));
            };
            last = last.max(at);
        }
        Ok(last)
    });
    let after_return_ms = (last as i128 - returned as i128) as f64 / 1e6;
    let after_issue_ms = (last as i128 - issued as i128) as f64 / 1e6;
    println!(
        "steering latency: `batch stop --term` with {agents} agents connected, one task each: \
         the last task got SIGTERM {after_return_ms:.1} ms after the command returned \
         ({after_issue_ms:.1} ms after it was started; target <= 1000 ms)"
    );
    drop(ids);
    drop(fleet);
    Ok(())
}
