//! The benchmark binary still runs, on tiny sizes, so it does not rot between uses.

use std::process::Command;
use std::time::Duration;

use scitq_tests::{describe, output_within};

#[test]
fn bench_runs_every_part_on_tiny_sizes() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_scitq-bench"));
    bench
        .args([
            "--no-build",
            "--tasks",
            "20",
            "--concurrency",
            "2",
            "--rounds",
            "2",
        ])
        .args(["--submit", "200", "--queue-memory", "1000", "--docker", "4"])
        .args(["--log-latency", "20", "--steering-agents", "2"])
        .args(["--scale-agents", "10", "--scale-tasks", "100"])
        .args(["--scale-heartbeat", "200ms", "--scale-idle", "1s"]);
    let out = output_within(&mut bench, Duration::from_secs(500));
    assert!(out.status.success(), "scitq-bench: {}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for part in [
        "throughput round 1:",
        "baseline   round 1:",
        "ratio      round 2:",
        "ratio:      median of 2 rounds",
        "submission:",
        "memory:",
        "docker      round 1:",
        "docker run  round 2:",
        "docker ratio round 2:",
        "docker ratio: median of 2 rounds",
        "log latency:",
        "steering latency:",
        "scale:",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(part)),
            "no {part} line in: {report}"
        );
    }
    assert!(
        report.contains("tasks/s") && report.contains("VmRSS"),
        "{report}"
    );
}
