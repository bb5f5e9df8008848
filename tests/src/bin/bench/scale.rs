//! Scale benchmark: thousands of simulated agents speaking the real agent protocol to one
//! scitqd, heart-beating, while many short tasks flow through them. Reports scitqd's CPU
//! and memory.
//!
//! A simulated agent is one `WorkerService.Session` stream: Hello, then for each assignment
//! a final `succeeded` update after the task time (as a real agent reports a task too short
//! to be seen running), a heartbeat at the agent's interval, and nothing else. Streams share a few HTTP/2
//! connections (100 per connection), so the client side stays light.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use scitq_proto::v1::worker_service_client::WorkerServiceClient;
use scitq_proto::v1::{
    AgentMessage, ExecutionState, ExecutionUpdate, Heartbeat, Hello, ProtocolVersion,
    agent_message, server_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use scitq_tests::{Server, ServerOpts, poll, rss_kib};

/// Simulated agents per HTTP/2 connection.
const PER_CONNECTION: usize = 100;

#[derive(Default)]
struct Counters {
    welcomed: AtomicU64,
    completed: AtomicU64,
    heartbeats: AtomicU64,
}

/// scitqd's CPU time so far (user + system), from /proc/PID/stat. Linux reports it in
/// USER_HZ, which is 100 on every architecture.
pub fn cpu_seconds(pid: nix::unistd::Pid) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').context("parse /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    Ok((utime + stime) / 100.0)
}

/// `idle`: how long the fleet heart-beats with no task before the tasks come, to measure
/// the idle cost.
pub fn scale(
    opts: &ServerOpts,
    agents: usize,
    tasks: usize,
    heartbeat: Duration,
    idle: Duration,
    task_time: Duration,
) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let pid = server.pid();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();

    let start = Instant::now();
    runtime.block_on(async {
        let mut channel = None;
        for i in 0..agents {
            if i % PER_CONNECTION == 0 {
                channel = Some(
                    Endpoint::from_shared(format!("http://{}", server.addr()))?
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .context("connect to scitqd")?,
                );
            }
            let channel = channel.clone().expect("set above");
            tokio::spawn(simulated_agent(
                channel,
                server.worker_token().to_owned(),
                format!("sim-{i:05}"),
                (heartbeat, task_time),
                counters.clone(),
                stop.clone(),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while counters.welcomed.load(Ordering::Relaxed) < agents as u64 {
            ensure!(
                Instant::now() < deadline,
                "only {} of {agents} agents welcomed",
                counters.welcomed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })?;
    let connected = start.elapsed();

    let idle_cpu = cpu_seconds(pid)?;
    let idle_start = Instant::now();
    std::thread::sleep(idle);
    let idle_cores = (cpu_seconds(pid)? - idle_cpu) / idle_start.elapsed().as_secs_f64();
    let idle_rss = rss_kib(pid).context("scitqd VmRSS")?;

    let cpu_before = cpu_seconds(pid)?;
    let flow_start = Instant::now();
    let commands = vec!["true".to_string(); tasks.min(100_000)];
    let mut submitted = 0;
    while submitted < tasks {
        let chunk = (tasks - submitted).min(commands.len());
        let file = c.scratch_file("scale", &(commands[..chunk].join("\n") + "\n"));
        let out = c.ctl([
            "task".as_ref(),
            "create".as_ref(),
            "--batch".as_ref(),
            "scale".as_ref(),
            "--from-file".as_ref(),
            file.as_os_str(),
        ]);
        ensure!(
            out.status.success(),
            "task create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        submitted += chunk;
    }
    let mut peak_rss = idle_rss;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while counters.completed.load(Ordering::Relaxed) < tasks as u64 {
        ensure!(
            Instant::now() < deadline,
            "not done after an hour: {} of {tasks}",
            counters.completed.load(Ordering::Relaxed)
        );
        peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every report is sent; the flow ends when scitqd has committed them all.
    let counts = poll(
        Duration::from_secs(120),
        "scitqd to commit every report",
        || {
            let counts = c
                .batches()
                .into_iter()
                .find(|b| b["name"] == "scale")
                .map(|b| b["counts"].clone())
                .unwrap_or_default();
            if counts["succeeded"] == tasks as u64 {
                Ok(counts)
            } else {
                Err(counts.to_string())
            }
        },
    );
    let flow = flow_start.elapsed();
    let flow_cores = (cpu_seconds(pid)? - cpu_before) / flow.as_secs_f64();
    peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(5));
    ensure!(
        counts["failed"].as_u64().unwrap_or(0) == 0,
        "tasks failed: {counts}"
    );
    println!(
        "scale: {agents} simulated agents (heartbeat every {}) connected in {:.1} s; idle: \
         scitqd {:.3} cores, {:.0} MiB",
        humantime::format_duration(heartbeat),
        connected.as_secs_f64(),
        idle_cores,
        idle_rss as f64 / 1024.0
    );
    println!(
        "scale: {tasks} tasks of {} through them in {:.1} s ({:.0} tasks/s, {} heartbeats sent): \
         scitqd {flow_cores:.2} cores on average ({:.3} ms of CPU per task), peak {:.0} MiB \
         (targets: < 1 core, < 1 GB)",
        humantime::format_duration(task_time),
        flow.as_secs_f64(),
        tasks as f64 / flow.as_secs_f64(),
        counters.heartbeats.load(Ordering::Relaxed),
        1000.0 * flow_cores * flow.as_secs_f64() / tasks as f64,
        peak_rss as f64 / 1024.0
    );
    Ok(())
}

async fn simulated_agent(
    channel: Channel,
    token: String,
    name: String,
    (heartbeat, task_time): (Duration, Duration),
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    if let Err(e) = run_agent(
        channel,
        token,
        &name,
        (heartbeat, task_time),
        &counters,
        &stop,
    )
    .await
        && !stop.is_cancelled()
    {
        eprintln!("simulated agent {name}: {e:#}");
    }
}

async fn run_agent(
    channel: Channel,
    token: String,
    name: &str,
    (heartbeat, task_time): (Duration, Duration),
    counters: &Counters,
    stop: &CancellationToken,
) -> Result<()> {
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client =
        WorkerServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let (tx, rx) = mpsc::channel(64);
    let mut seq = 1;
    tx.send(AgentMessage {
        seq,
        kind: Some(agent_message::Kind::Hello(Hello {
            protocol: ProtocolVersion::ProtocolVersion1 as i32,
            name: name.to_owned(),
            host: "simulated".to_owned(),
            concurrency: 1,
            prefetch: 0,
            batch: String::new(),
            held: Vec::new(),
            // A worker of its own, bound to this secret at its first Hello.
            credential: format!("{name:0>40}"),
            instance: String::new(),
            prefetch_auto: false,
        })),
    })
    .await?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .context("open session")?
        .into_inner();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    // Executions running, oldest first, with when each ends.
    let mut running: VecDeque<(Instant, i64)> = VecDeque::new();
    loop {
        let next_end = running.front().map(|(end, _)| *end);
        let mut done = None;
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                seq += 1;
                tx.send(AgentMessage {
                    seq,
                    kind: Some(agent_message::Kind::Heartbeat(Heartbeat::default())),
                }).await?;
                counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(next_end.unwrap_or_else(Instant::now).into()), if next_end.is_some() => {
                done = running.pop_front().map(|(_, id)| id);
            }
            message = inbound.message() => {
                let Some(message) = message? else { return Ok(()) };
                match message.kind {
                    Some(server_message::Kind::Welcome(_)) => {
                        counters.welcomed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(server_message::Kind::Assignment(assignment)) if task_time.is_zero() => {
                        done = Some(assignment.execution_id);
                    }
                    Some(server_message::Kind::Assignment(assignment)) => {
                        running.push_back((Instant::now() + task_time, assignment.execution_id));
                    }
                    _ => {}
                }
            }
        }
        if let Some(execution_id) = done {
            seq += 1;
            tx.send(AgentMessage {
                seq,
                kind: Some(agent_message::Kind::Update(ExecutionUpdate {
                    execution_id,
                    state: ExecutionState::Succeeded as i32,
                    exit_code: Some(0),
                    ..ExecutionUpdate::default()
                })),
            })
            .await?;
            counters.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
