//! scitq-bench: how fast scitq runs tiny tasks, compared with spawning them directly; how
//! fast it takes submissions; how much memory a large queue costs scitqd; how fast output
//! and steering reach their destination; what thousands of agents cost scitqd; the
//! per-task overhead of container tasks against a bare `docker run` loop; and what
//! recruitment costs, on the local provider and at scale on a fake OpenStack.

#[path = "bench/recruit.rs"]
mod recruit;
#[path = "bench/recruit_openstack.rs"]
mod recruit_openstack;
#[path = "bench/scale.rs"]
mod scale;
#[path = "bench/steering.rs"]
mod steering;
#[path = "bench/watch.rs"]
mod watch;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::Value;

use scitq_tests::images::{containers_labelled, remove_containers};
use scitq_tests::{Agent, Client, Image, Server, ServerOpts, bin_dir, rss_kib};

/// Tasks per `task create --from-file` call when queuing a large number of tasks.
const CHUNK: usize = 100_000;

/// Benchmarks scitq with its real binaries: scitqd (SQLite in a temp dir unless
/// --database-url is given), one scitq-agent and scitqctl, all on 127.0.0.1.
///
/// Parts, each selected by giving its size (with none given, all run with their defaults):
///
///   --tasks N: throughput. N `true` tasks submitted with `task create --from-file` and run by
///   one agent at --concurrency C, timed from submission until all succeeded (the batch's
///   counts read every 100 ms over one gRPC connection); then the bare
///   baseline in the same run, the same N `true` commands spawned directly by a loop at
///   concurrency C, and the ratio of the two rates.
///
///   --submit N: submission rate. One `task create --from-file` of N tasks (one CreateTasks
///   call), no agent.
///
///   --queue-memory N: scitqd's resident memory (VmRSS) idle and with N pending tasks queued
///   (no agent), submitted in chunks of 100,000.
///
///   --log-latency N: a task prints N lines 5 ms apart, each with the time it was written;
///   `scitqctl task output --follow` prints them: p50 and p99 of write-to-print latency.
///
///   --steering-agents N: N agents each run one task that waits for SIGTERM; the time from
///   `batch stop --term` returning to the last task getting the signal.
///
///   --scale-agents N (with --scale-tasks M, --scale-heartbeat D): N simulated agents speaking
///   the real protocol, heart-beating, while M tasks flow through them: scitqd's CPU (cores)
///   and memory, idle and under load.
///   --docker N: container overhead (only when asked). A tiny busybox image is built and
///   imported locally; N tasks running `true` in it through scitqd + one agent at
///   --concurrency C (containers without network), then N `docker run --rm --network none
///   IMAGE true` at the same concurrency, and the ratio of the two rates. scitq's clock stops
///   once its containers are removed too (`docker run --rm` pays the removal in each run).
///   The image and every container are removed afterwards.
///
///   --recruit N (with --recruit-interval D): recruitment (only when asked). scitqd with a
///   local provider recruits up to N machines (agents started as processes here) for
///   6 × N one-second tasks: the seconds from the batch's first waiting task to a recruited
///   agent running it, the provider calls per machine created and destroyed (scitqd's
///   /metrics), and the average recruiter pass time.
///
///   --recruit-openstack N (with --recruit-passes K, --recruit-interval D): the recruiter's
///   cost per pass at scale (only when asked). A fake OpenStack (Keystone, Nova, Glance,
///   Neutron from scitq-testkit) is served by the bench on 127.0.0.1; scitqd has an
///   `openstack` [[provider]] on it with max_instances N and a deploy timeout of a day, and a
///   rule whose batch gets N waiting tasks, so it recruits N instances, which never connect
///   (nothing boots them) and stay deploying. Over K passes with no instance, then K passes
///   with the N: scitqd's CPU time per pass (utime + stime of /proc/PID/stat), the mean of
///   scitq_recruiter_pass_seconds, and provider calls per pass (scitqd's
///   scitq_provider_calls_total, and the requests the fake received); also the time to
///   recruit the N and the calls per instance created. Use a short interval, e.g.
///   --recruit-openstack 200 --recruit-interval 1s.
///
///   The throughput and docker parts run --rounds R rounds, scitq and its baseline in turn
///   (a machine that slows down during the run weighs on both), and print each round's ratio
///   and the median.
///
/// Example:
///
///   cargo run --release -p scitq-tests --bin scitq-bench -- --tasks 10000 --concurrency 4
///
/// The scitq binaries are first rebuilt with the profile of this binary (so a release bench
/// measures release binaries); --no-build skips that.
#[derive(Parser, Debug)]
#[command(name = "scitq-bench", verbatim_doc_comment)]
struct Args {
    /// Throughput part: how many `true` tasks to run [default when no part is given: 10000].
    #[arg(long, value_name = "N")]
    tasks: Option<usize>,
    /// Agent prefetch: tasks the agent holds beyond its running slots, or "auto". Not given:
    /// the agent runs with its default (auto).
    #[arg(long, value_name = "P|auto")]
    prefetch: Option<scitq_proto::PrefetchSetting>,

    /// Agent concurrency, and that of the direct-spawn baseline.
    #[arg(long, value_name = "C", default_value_t = 4)]
    concurrency: u32,
    /// Submission part: how many tasks to create in one call [default when no part is
    /// given: 100000].
    #[arg(long, value_name = "N")]
    submit: Option<usize>,
    /// Memory part: how many pending tasks to queue [default when no part is given: 1000000].
    #[arg(long, value_name = "N")]
    queue_memory: Option<usize>,
    /// Log-latency part: how many lines [default when no part is given: 1000].
    #[arg(long, value_name = "N")]
    log_latency: Option<usize>,
    /// Steering-latency part: how many agents [default when no part is given: 50].
    #[arg(long, value_name = "N")]
    steering_agents: Option<usize>,
    /// Scale part: how many simulated agents [default when no part is given: 2000].
    #[arg(long, value_name = "N")]
    scale_agents: Option<usize>,
    /// Scale part: how many tasks flow through the simulated agents.
    #[arg(long, value_name = "M", default_value_t = 100_000)]
    scale_tasks: usize,
    /// Scale part: heartbeat interval of the simulated agents (as real agents' default).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = humantime::parse_duration)]
    scale_heartbeat: Duration,
    /// Scale part: how long the agents heart-beat with no task, to measure the idle cost.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = humantime::parse_duration)]
    scale_idle: Duration,
    /// Scale part: how long each simulated task runs; 0s reports it done at once, so that
    /// scitqd alone sets the pace (and uses all the CPU it can).
    #[arg(long, value_name = "D", default_value = "0s", value_parser = humantime::parse_duration)]
    scale_task_time: Duration,
    /// Throughput and docker parts: rounds of scitq then its baseline, interleaved.
    #[arg(long, value_name = "R", default_value_t = 3)]
    rounds: usize,
    /// Docker part: how many container tasks to run (only when given).
    #[arg(long, value_name = "N")]
    docker: Option<usize>,
    /// Recruitment part: how many local machines at most (only when given).
    #[arg(long, value_name = "N")]
    recruit: Option<usize>,
    /// Recruitment parts: the recruiter's pass interval (scitqd's default).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = humantime::parse_duration)]
    recruit_interval: Duration,
    /// Recruiter-at-scale part: how many fake OpenStack instances (only when given).
    #[arg(long, value_name = "N")]
    recruit_openstack: Option<usize>,
    /// Recruiter-at-scale part: passes measured, with no instance and with N.
    #[arg(long, value_name = "K", default_value_t = 20)]
    recruit_passes: usize,
    /// Run scitqd on this database (e.g. postgres://…) instead of SQLite in a temp dir.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Do not rebuild scitqd, scitq-agent and scitqctl first.
    #[arg(long)]
    no_build: bool,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    if args.tasks.is_none()
        && args.submit.is_none()
        && args.queue_memory.is_none()
        && args.log_latency.is_none()
        && args.steering_agents.is_none()
        && args.scale_agents.is_none()
        && args.docker.is_none()
        && args.recruit.is_none()
        && args.recruit_openstack.is_none()
    {
        args.tasks = Some(10_000);
        args.submit = Some(100_000);
        args.queue_memory = Some(1_000_000);
        args.log_latency = Some(1000);
        args.steering_agents = Some(50);
        args.scale_agents = Some(2000);
    }
    if !args.no_build {
        build_binaries()?;
    }
    let opts = ServerOpts {
        database_url: args.database_url.clone(),
        ..ServerOpts::default()
    };
    if let Some(n) = args.tasks {
        throughput(&opts, n, args.concurrency, args.prefetch, args.rounds)?;
    }
    if let Some(n) = args.submit {
        submission(&opts, n)?;
    }
    if let Some(n) = args.queue_memory {
        queue_memory(&opts, n)?;
    }
    if let Some(n) = args.log_latency {
        ensure!(n > 0, "--log-latency must be at least 1");
        steering::log_latency(&opts, n)?;
    }
    if let Some(n) = args.steering_agents {
        ensure!(n > 0, "--steering-agents must be at least 1");
        steering::steering_latency(&opts, n)?;
    }
    if let Some(n) = args.scale_agents {
        ensure!(n > 0, "--scale-agents must be at least 1");
        scale::scale(
            &opts,
            n,
            args.scale_tasks,
            args.scale_heartbeat,
            args.scale_idle,
            args.scale_task_time,
        )?;
    }
    if let Some(n) = args.docker {
        docker_overhead(&opts, n, args.concurrency, args.rounds)?;
    }
    if let Some(n) = args.recruit {
        ensure!(n > 0, "--recruit must be at least 1");
        recruit::recruit(&opts, n, args.recruit_interval)?;
    }
    if let Some(n) = args.recruit_openstack {
        ensure!(
            (1..=10_000).contains(&n),
            "--recruit-openstack must be 1 to 10000 (what `job list` shows)"
        );
        ensure!(
            args.recruit_passes > 0,
            "--recruit-passes must be at least 1"
        );
        recruit_openstack::recruit_openstack(&opts, n, args.recruit_interval, args.recruit_passes)?;
    }
    Ok(())
}

/// Container tasks through scitq against a bare `docker run` loop, in the same run, in
/// interleaved rounds.
fn docker_overhead(opts: &ServerOpts, n: usize, concurrency: u32, rounds: usize) -> Result<()> {
    let image = Image::tiny();
    let server = Server::start(opts.clone());
    let c = server.client();
    let agent = Agent::start(
        &server,
        "bench-docker",
        concurrency,
        &["--docker-network", "none"],
    );
    c.wait_worker_online("bench-docker", Duration::from_secs(60));
    let scope = agent.work_dir().to_string_lossy().into_owned();
    let commands = vec!["true".to_string(); n];
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let batch = format!("docker-{round}");
        let start = Instant::now();
        submit_with(&c, &commands, &batch, &["--container", image.tag()])?;
        watch::wait_all_succeeded(&server, &batch, n)?;
        // The agent reports success before it removes the container: the clock runs until
        // the last one is gone, as `docker run --rm` waits for its removal.
        let succeeded = start.elapsed();
        wait_no_containers(&scope)?;
        let elapsed = start.elapsed();
        let scitq_rate = n as f64 / elapsed.as_secs_f64();
        println!(
            "docker      round {round}: {n} `true` container tasks, one agent at concurrency {concurrency}: {:.2} s \
             (all succeeded at {:.2} s) -> {scitq_rate:.2} tasks/s",
            elapsed.as_secs_f64(),
            succeeded.as_secs_f64()
        );
        let bare = docker_run_directly(image.tag(), n, concurrency)?;
        let bare_rate = n as f64 / bare.as_secs_f64();
        println!(
            "docker run  round {round}: {n} `docker run --rm --network none IMAGE true` at concurrency {concurrency}: {:.2} s -> {bare_rate:.2} tasks/s",
            bare.as_secs_f64()
        );
        let ratio = scitq_rate / bare_rate;
        println!("docker ratio round {round}: scitq / docker run = {ratio:.3}");
        ratios.push(ratio);
    }
    let each = ratios_text(&ratios);
    println!(
        "docker ratio: median of {rounds} rounds = {:.3} (rounds: {each})",
        median(&mut ratios)
    );
    remove_containers(&containers_labelled("scitq.agent", &scope));
    drop(agent);
    Ok(())
}

/// Waits until no container of the agent whose work dir is `scope` is left.
fn wait_no_containers(scope: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = containers_labelled("scitq.agent", scope);
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} containers still there 10 min after their tasks succeeded",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The median of `values` (sorted in place; the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ratios_text(values: &[f64]) -> String {
    values
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn docker_run_directly(image: &str, n: usize, concurrency: u32) -> Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let image = image.to_owned();
            std::thread::spawn(move || -> Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    let out = Command::new("docker")
                        .args(["run", "--rm", "--network", "none", &image, "true"])
                        .stdin(Stdio::null())
                        .output()?;
                    ensure!(
                        out.status.success(),
                        "docker run exited with {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("docker run thread")?;
    }
    Ok(start.elapsed())
}

/// Rebuilds scitqd, scitq-agent and scitqctl with this binary's profile, into this binary's
/// target dir.
fn build_binaries() -> Result<()> {
    let profile_dir = bin_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("name of the profile dir")?
        .to_string();
    let target_dir = profile_dir.parent().context("target dir")?;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "-p",
            "scitq-server",
            "-p",
            "scitq-worker",
            "-p",
            "scitq-cli",
            "--bins",
        ]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building the scitq binaries ({profile})…");
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}

fn throughput(
    opts: &ServerOpts,
    n: usize,
    concurrency: u32,
    prefetch: Option<scitq_proto::PrefetchSetting>,
    rounds: usize,
) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let prefetch_arg = prefetch.map(|p| p.to_string());
    let args: Vec<&str> = match &prefetch_arg {
        Some(p) => vec!["--prefetch", p],
        None => Vec::new(),
    };
    let _agent = Agent::start(&server, "bench", concurrency, &args);
    let prefetch = prefetch_arg.unwrap_or_else(|| "default".to_owned());
    c.wait_worker_online("bench", Duration::from_secs(60));

    let commands = vec!["true".to_string(); n];
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let batch = format!("bench-{round}");
        let start = Instant::now();
        submit(&c, &commands, &batch)?;
        let submitted = start.elapsed();
        watch::wait_all_succeeded(&server, &batch, n)?;
        let elapsed = start.elapsed();
        let scitq_rate = n as f64 / elapsed.as_secs_f64();
        let in_force = c
            .workers()
            .into_iter()
            .find(|w| w["name"] == "bench")
            .map(|w| match w["prefetch_auto"].as_bool() {
                Some(true) => format!("auto, {} now", w["prefetch"]),
                _ => w["prefetch"].to_string(),
            })
            .unwrap_or_default();
        println!(
            "throughput round {round}: {n} `true` tasks, one agent at concurrency {concurrency} prefetch {prefetch} ({in_force}): {:.2} s \
             (submission {:.2} s) -> {scitq_rate:.0} tasks/s",
            elapsed.as_secs_f64(),
            submitted.as_secs_f64()
        );
        let bare = spawn_directly(n, concurrency)?;
        let bare_rate = n as f64 / bare.as_secs_f64();
        println!(
            "baseline   round {round}: {n} `true` spawned directly at concurrency {concurrency}: {:.2} s -> {bare_rate:.0} tasks/s",
            bare.as_secs_f64()
        );
        let ratio = scitq_rate / bare_rate;
        println!("ratio      round {round}: scitq / direct = {ratio:.3}");
        ratios.push(ratio);
    }
    let each = ratios_text(&ratios);
    let mid = median(&mut ratios);
    println!(
        "ratio:      median of {rounds} rounds, scitq / direct = {mid:.3} (scitq runs tiny tasks at {:.1}% of the bare spawn rate; rounds: {each})",
        100.0 * mid
    );
    Ok(())
}

/// Spawns `true` n times with `concurrency` at a time; returns the time it took.
fn spawn_directly(n: usize, concurrency: u32) -> Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                    let status = Command::new("true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()?;
                    ensure!(status.success(), "true exited with {status}");
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("spawner thread")?;
    }
    Ok(start.elapsed())
}

fn submission(opts: &ServerOpts, n: usize) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let commands = vec!["true".to_string(); n];
    let file = c.scratch_file("submit", &(commands.join("\n") + "\n"));
    let start = Instant::now();
    let out = c.ctl([
        "task".as_ref(),
        "create".as_ref(),
        "--batch".as_ref(),
        "submit".as_ref(),
        "--from-file".as_ref(),
        file.as_os_str(),
    ]);
    let elapsed = start.elapsed();
    ensure!(
        out.status.success(),
        "task create --from-file failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8_lossy(&out.stdout).lines().count();
    ensure!(
        ids == n,
        "task create --from-file printed {ids} ids for {n} tasks"
    );
    println!(
        "submission: {n} tasks in one `task create --from-file`: {:.2} s -> {:.0} tasks/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn queue_memory(opts: &ServerOpts, n: usize) -> Result<()> {
    let server = Server::start(opts.clone());
    let c = server.client();
    let idle = rss_kib(server.pid()).context("read scitqd VmRSS")?;
    let commands = vec!["true".to_string(); n.min(CHUNK)];
    let start = Instant::now();
    let mut queued = 0;
    while queued < n {
        let chunk = (n - queued).min(CHUNK);
        submit(&c, &commands[..chunk], "memory")?;
        queued += chunk;
    }
    let elapsed = start.elapsed();
    let pending = batch_counts(&c, "memory")?
        .get("pending")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    ensure!(pending == n as u64, "{pending} tasks pending, {n} queued");
    let loaded = rss_kib(server.pid()).context("read scitqd VmRSS")?;
    println!(
        "memory:     scitqd VmRSS {:.1} MiB idle, {:.1} MiB with {n} pending tasks \
         ({:.0} bytes per task; queued in {:.1} s, {:.0} tasks/s)",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        (loaded.saturating_sub(idle) * 1024) as f64 / n as f64,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// `task create --batch BATCH --from-file` of `commands`.
fn submit(c: &Client, commands: &[String], batch: &str) -> Result<()> {
    submit_with(c, commands, batch, &[])
}

/// `task create --from-file` with `extra` field flags as the defaults of every line.
fn submit_with(c: &Client, commands: &[String], batch: &str, extra: &[&str]) -> Result<()> {
    let file = c.scratch_file("bench", &(commands.join("\n") + "\n"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "task".as_ref(),
        "create".as_ref(),
        "--batch".as_ref(),
        batch.as_ref(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    args.push("--from-file".as_ref());
    args.push(file.as_os_str());
    let out = c.ctl(args);
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!(
            "task create --from-file failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn batch_counts(c: &Client, batch: &str) -> Result<serde_json::Map<String, Value>> {
    let batches = c.batches();
    let found = batches
        .iter()
        .find(|b| b["name"] == batch)
        .with_context(|| format!("batch {batch} not listed"))?;
    Ok(found["counts"].as_object().cloned().unwrap_or_default())
}
