//! scitq-staging-bench: staging throughput of scitq-storage against `rclone copy`, on the same
//! file and the same loopback S3 server (moto), in the same run.
//!
//! A file of --size-mb MiB is put on the server once. Then, per round and for each tool:
//! download it into an `input/` folder ("in"), upload it back under a new key ("out"),
//! check sizes, and delete the uploaded copy (moto keeps objects in memory). The best round
//! of each is printed in MB/s, with the ratio scitq / rclone (the target is at least 0.9).
//! Both use their default concurrency (scitq-storage: 8 MiB chunks, 4 at a time; rclone: its
//! defaults for S3), and rclone reads the same rclone.conf section as scitq.
//!
//! Example (release, as numbers from a debug build mean little):
//!
//!   cargo run --release -p scitq-tests --bin scitq-staging-bench -- --size-mb 1024 --rounds 2

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use scitq_storage::{NoProgress, Remotes, Storage};
use scitq_tests::{S3Server, find_tool};

#[derive(Debug, Parser)]
#[command(name = "scitq-staging-bench")]
struct Args {
    /// Size of the staged file in MiB
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Rounds per tool; the best is kept
    #[arg(long, default_value_t = 1)]
    rounds: u32,
}

const REMOTE: &str = "bench";
const BUCKET: &str = "staging";

fn main() -> Result<()> {
    let args = Args::parse();
    let rclone = find_tool("RCLONE", "rclone");
    let work = tempfile::Builder::new()
        .prefix("scitq-staging-bench-")
        .tempdir()?;
    let size = args.size_mb * 1024 * 1024;
    let source = work.path().join("big.bin");
    write_file(&source, size)?;

    let s3 = S3Server::start(&[BUCKET]);
    let conf_text = s3.rclone_section(REMOTE);
    let conf = work.path().join("rclone.conf");
    std::fs::write(&conf, &conf_text)?;
    let storage = Storage::new(Remotes::parse(&conf_text)?);
    let runtime = tokio::runtime::Runtime::new()?;
    let object = format!("{REMOTE}:{BUCKET}/big.bin");
    runtime.block_on(storage.copy(source.to_str().context("utf-8 path")?, &object, &NoProgress))?;
    std::fs::remove_file(&source)?;
    eprintln!("staged {} MiB on {}", args.size_mb, s3.endpoint());

    let mut best = [
        (Duration::MAX, Duration::MAX),
        (Duration::MAX, Duration::MAX),
    ];
    for round in 0..args.rounds {
        for (tool, slot) in [("scitq", 0), ("rclone", 1)] {
            let input = work.path().join(format!("{tool}-{round}/input"));
            std::fs::create_dir_all(&input)?;
            let local = input.join("big.bin");
            let out = format!("{REMOTE}:{BUCKET}/out-{tool}-{round}/");
            let (down, up) = if tool == "scitq" {
                let down = timed(|| {
                    runtime.block_on(storage.download(&object, &input, &NoProgress))?;
                    Ok(())
                })?;
                let up = timed(|| {
                    runtime.block_on(storage.upload_dir(&input, &out, &NoProgress))?;
                    Ok(())
                })?;
                (down, up)
            } else {
                let down =
                    timed(|| run_rclone(&rclone, &conf, &object, &input.display().to_string()))?;
                let up = timed(|| run_rclone(&rclone, &conf, &local.display().to_string(), &out))?;
                (down, up)
            };
            ensure!(
                std::fs::metadata(&local)?.len() == size,
                "{tool}: wrong size downloaded"
            );
            let uploaded = runtime.block_on(storage.stat(&format!("{out}big.bin")))?;
            ensure!(uploaded.size == size, "{tool}: wrong size uploaded");
            runtime.block_on(storage.delete(&out))?;
            std::fs::remove_file(&local)?;
            eprintln!(
                "round {round} {tool:6}: in {:8.1} MB/s, out {:8.1} MB/s",
                mbps(size, down),
                mbps(size, up)
            );
            best[slot].0 = best[slot].0.min(down);
            best[slot].1 = best[slot].1.min(up);
        }
    }
    let [(s_in, s_out), (r_in, r_out)] = best;
    let both = |a: Duration, b: Duration| mbps(2 * size, a + b);
    println!(
        "staging {} MiB through S3 on loopback (best of {} round(s))",
        args.size_mb, args.rounds
    );
    println!("           in (MB/s)  out (MB/s)  in+out (MB/s)");
    println!(
        "scitq      {:9.1}  {:10.1}  {:13.1}",
        mbps(size, s_in),
        mbps(size, s_out),
        both(s_in, s_out)
    );
    println!(
        "rclone     {:9.1}  {:10.1}  {:13.1}",
        mbps(size, r_in),
        mbps(size, r_out),
        both(r_in, r_out)
    );
    println!(
        "ratio      {:9.2}  {:10.2}  {:13.2}   (scitq / rclone, target >= 0.9)",
        r_in.as_secs_f64() / s_in.as_secs_f64(),
        r_out.as_secs_f64() / s_out.as_secs_f64(),
        (r_in + r_out).as_secs_f64() / (s_in + s_out).as_secs_f64()
    );
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn run_rclone(rclone: &Path, conf: &Path, src: &str, dst: &str) -> Result<()> {
    let out = Command::new(rclone)
        .arg("--config")
        .arg(conf)
        .args(["copy", src, dst])
        // rclone 1.60 cannot combine a custom CA bundle with its transport, even for plain
        // http on loopback; the bundle is useless here.
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .context("run rclone")?;
    ensure!(
        out.status.success(),
        "rclone copy {src} {dst}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A file of `size` bytes of pseudo-random data, written in 1 MiB blocks.
fn write_file(path: &PathBuf, size: u64) -> Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}
