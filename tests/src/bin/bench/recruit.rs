//! The recruitment part: scitqd with a local provider (its machines are agents started as
//! processes here) recruits for a batch. Measured: the seconds from a batch's first waiting
//! task to a recruited agent running it, at the configured pass interval; the cloud calls per
//! recruited machine (scitqd's own count, `/metrics`); and the time of one recruiter pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use scitq_tests::{Server, ServerOpts};

/// A `/metrics` sample's value, summed over the series whose labels include `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// scitqd's `/metrics` text (admin token).
pub fn scrape(server: &Server) -> Result<String> {
    let out = std::process::Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "-H",
            &format!("Authorization: Bearer {}", server.admin_token()),
            &format!("http://{}/metrics", server.addr()),
        ])
        .output()
        .context("curl /metrics")?;
    ensure!(
        out.status.success(),
        "GET /metrics failed: {:?}",
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `machines` machines at concurrency 2 run `2 × machines × 3` one-second tasks.
pub fn recruit(opts: &ServerOpts, machines: usize, interval: Duration) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("scitqd.toml");
    std::fs::write(
        &config,
        format!(
            "[recruit]\ninterval = \"{}\"\n\n[[provider]]\nname = \"local\"\nkind = \"local\"\n\
             max_instances = {machines}\n",
            humantime::format_duration(interval)
        ),
    )?;
    let mut opts = opts.clone();
    opts.args
        .extend(["--config".to_owned(), config.display().to_string()]);
    let server = Server::start(opts);
    let c = server.client();
    c.ctl_ok([
        "recruiter",
        "add",
        "--batch",
        "rec",
        "--provider",
        "local",
        "--max-workers",
        &machines.to_string(),
        "--concurrency",
        "2",
        "--rounds",
        "3",
        "--idle-timeout",
        "3s",
    ]);
    // The first task arrives once the rule exists: its wait is the recruitment's.
    std::thread::sleep(interval.min(Duration::from_secs(2)));
    let start = Instant::now();
    let first = c.create_sh("rec", "sleep 1", &[]);
    let mut first_running = None;
    let n = 2 * machines * 3;
    for _ in 1..n {
        c.create_sh("rec", "sleep 1", &[]);
    }
    let deadline = start + Duration::from_secs(600);
    loop {
        let status = c.status(first);
        if first_running.is_none() && (status == "running" || status == "succeeded") {
            first_running = Some(start.elapsed());
        }
        let done = c
            .batches()
            .iter()
            .find(|b| b["name"] == "rec")
            .and_then(|b| b["counts"]["succeeded"].as_u64())
            .unwrap_or(0);
        if done == n as u64 {
            break;
        }
        ensure!(Instant::now() < deadline, "the batch did not end in 10 min");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_done = start.elapsed();
    // Until every machine is destroyed again.
    loop {
        let jobs = c.ctl_json(["job", "list", "--limit", "10000"]);
        let jobs = jobs.as_array().cloned().unwrap_or_default();
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for j in jobs.iter().filter(|j| j["status"] == "succeeded") {
            *by_kind
                .entry(j["kind"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        let created = by_kind.get("create").copied().unwrap_or(0);
        if created > 0 && by_kind.get("destroy").copied().unwrap_or(0) == created {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the machines were not destroyed in 10 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = scrape(&server)?;
    let created = sample(
        &text,
        "scitq_recruited_machines_total",
        &["event=\"created\""],
    );
    let calls = sample(&text, "scitq_provider_calls_total", &[]);
    let passes = sample(&text, "scitq_recruiter_pass_seconds_count", &[]);
    let pass_time = sample(&text, "scitq_recruiter_pass_seconds_sum", &[]);
    let first_running = first_running.context("the first task never ran")?;
    println!(
        "recruit     {machines} local machines at concurrency 2, {n} one-second tasks, pass \
         interval {}: first task running {:.2} s after it was created; all done in {:.2} s",
        humantime::format_duration(interval),
        first_running.as_secs_f64(),
        all_done.as_secs_f64()
    );
    println!(
        "recruit     provider calls: {calls} for {created} machines created and destroyed = \
         {:.1} per machine; recruiter pass: {:.2} ms on average over {passes} passes",
        calls / created.max(1.0),
        1000.0 * pass_time / passes.max(1.0)
    );
    Ok(())
}
