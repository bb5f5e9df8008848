//! The recruiter at scale on the fake OpenStack: scitqd with an `openstack` `[[provider]]`
//! pointing at `scitq_testkit::openstack` (served by this process on 127.0.0.1) recruits N
//! instances for a rule whose batch has N waiting tasks. The instances never connect (nothing
//! boots them; the deploy timeout is a day, so they stay): every later pass sees N machines
//! deploying. Measured over K passes, first with no instance, then with the N: scitqd's CPU
//! time per pass (utime + stime from /proc/PID/stat), the pass time scitqd reports
//! (`scitq_recruiter_pass_seconds`), and the provider calls per pass (scitqd's own count and
//! the requests the fake received).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use scitq_testkit::openstack::{
    self as fake_cloud, FLAVOR, FakeOpenStack, IMAGE, KEYPAIR, NETWORK, PASSWORD, PROJECT, REGION,
    USER,
};
use scitq_tests::{Server, ServerOpts};

use crate::recruit::{sample, scrape};
use crate::scale::cpu_seconds;

/// What scitqd did over a window of whole passes.
struct Window {
    passes: f64,
    cpu_seconds: f64,
    pass_seconds: f64,
    provider_calls: f64,
    cloud_requests: usize,
}

impl Window {
    fn describe(&self) -> String {
        let passes = self.passes.max(1.0);
        format!(
            "scitqd CPU {:.2} ms per pass, pass time {:.2} ms, provider calls {:.2} per pass \
             ({} requests reached the cloud), over {} passes",
            1000.0 * self.cpu_seconds / passes,
            1000.0 * self.pass_seconds / passes,
            self.provider_calls / passes,
            self.cloud_requests,
            self.passes
        )
    }
}

/// A reading of the counters a window is the difference of.
struct Reading {
    passes: f64,
    pass_seconds: f64,
    provider_calls: f64,
    cpu_seconds: f64,
    cloud_requests: usize,
}

fn read(server: &Server, fake: &FakeOpenStack) -> Result<Reading> {
    let text = scrape(server)?;
    Ok(Reading {
        passes: sample(&text, "scitq_recruiter_pass_seconds_count", &[]),
        pass_seconds: sample(&text, "scitq_recruiter_pass_seconds_sum", &[]),
        provider_calls: sample(&text, "scitq_provider_calls_total", &[]),
        cpu_seconds: cpu_seconds(server.pid())?,
        cloud_requests: fake.requests(),
    })
}

/// Polls until scitqd has run `passes` more passes than `from` shows, then reads again.
fn until_passes(
    server: &Server,
    fake: &FakeOpenStack,
    from: f64,
    passes: usize,
) -> Result<Reading> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let now = read(server, fake)?;
        if now.passes >= from + passes as f64 {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "scitqd ran {} recruiter passes in an hour, not {passes}",
            now.passes - from
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `passes` whole passes: from the end of one pass to the end of the `passes`-th after it.
/// The counters are read every 50 ms only near the window's ends (a read costs scitqd a
/// `/metrics` answer).
fn window(
    server: &Server,
    fake: &FakeOpenStack,
    interval: Duration,
    passes: usize,
) -> Result<Window> {
    let before = read(server, fake)?;
    let start = until_passes(server, fake, before.passes, 1)?;
    std::thread::sleep(interval.mul_f64(passes as f64 - 0.5));
    let end = until_passes(server, fake, start.passes, passes)?;
    Ok(Window {
        passes: end.passes - start.passes,
        cpu_seconds: end.cpu_seconds - start.cpu_seconds,
        pass_seconds: end.pass_seconds - start.pass_seconds,
        provider_calls: end.provider_calls - start.provider_calls,
        cloud_requests: end.cloud_requests - start.cloud_requests,
    })
}

fn config(fake: &FakeOpenStack, instances: usize, interval: Duration) -> String {
    format!(
        "[recruit]\ninterval = \"{interval}\"\n\n\
         [[provider]]\nname = \"ovh\"\nkind = \"openstack\"\nauth_url = \"{auth}\"\n\
         username = \"{USER}\"\npassword = \"{PASSWORD}\"\nproject = \"{PROJECT}\"\n\
         regions = [\"{REGION}\"]\nimage = \"{IMAGE}\"\nnetwork = \"{NETWORK}\"\n\
         ssh_key = \"{KEYPAIR}\"\nmax_instances = {instances}\ndeploy_timeout = \"24h\"\n",
        interval = humantime::format_duration(interval),
        auth = fake.auth_url(),
    )
}

/// Succeeded create jobs, from `job list`.
fn created(server: &Server) -> usize {
    server
        .ctl_json(["job", "list", "--limit", "10000"])
        .as_array()
        .map_or(0, |jobs| {
            jobs.iter()
                .filter(|j| j["kind"] == "create" && j["status"] == "succeeded")
                .count()
        })
}

pub fn recruit_openstack(
    opts: &ServerOpts,
    instances: usize,
    interval: Duration,
    passes: usize,
) -> Result<()> {
    // The fake cloud is served by this process, on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let fake = runtime.block_on(fake_cloud::start());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("scitqd.toml");
    std::fs::write(&path, config(&fake, instances, interval))?;
    let mut opts = opts.clone();
    opts.args
        .extend(["--config".to_owned(), path.display().to_string()]);
    let server = Server::start(opts);
    let c = server.client();
    c.ctl_ok([
        "recruiter",
        "add",
        "--batch",
        "os",
        "--provider",
        "ovh",
        "--flavor",
        FLAVOR,
        "--max-workers",
        &instances.to_string(),
        "--concurrency",
        "1",
        "--rounds",
        "1",
    ]);
    let idle = window(&server, &fake, interval, passes)?;

    // One waiting task per instance wanted; nothing runs them.
    let before = read(&server, &fake)?;
    let start = Instant::now();
    c.create_from_file(&vec!["true".to_owned(); instances], &["--batch", "os"]);
    let deadline = start + Duration::from_secs(1800);
    while created(&server) < instances {
        ensure!(
            Instant::now() < deadline,
            "{} of {instances} instances created in 30 min",
            created(&server)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let recruited = start.elapsed();
    let after = read(&server, &fake)?;
    ensure!(
        fake.servers() == instances,
        "the fake cloud holds {} servers, {instances} were recruited",
        fake.servers()
    );
    let full = window(&server, &fake, interval, passes)?;
    ensure!(
        fake.servers() == instances,
        "the fake cloud holds {} servers after the passes, not {instances}",
        fake.servers()
    );
    let deploying = server
        .ctl_json(["worker", "list"])
        .as_array()
        .context("worker list")?
        .iter()
        .filter(|w| w["state"] == "deploying")
        .count();
    println!(
        "recruit-os  {instances} instances on the fake OpenStack recruited in {:.2} s \
         (scitqd CPU {:.1} ms, {:.1} provider calls, {:.1} cloud requests per instance; \
         {deploying} listed as deploying), pass interval {}",
        recruited.as_secs_f64(),
        1000.0 * (after.cpu_seconds - before.cpu_seconds) / instances as f64,
        (after.provider_calls - before.provider_calls) / instances as f64,
        (after.cloud_requests - before.cloud_requests) as f64 / instances as f64,
        humantime::format_duration(interval)
    );
    println!("recruit-os  no instance:     {}", idle.describe());
    println!("recruit-os  {instances} instances: {}", full.describe());
    drop(server);
    drop(fake);
    Ok(())
}
