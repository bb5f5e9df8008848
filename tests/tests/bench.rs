//! The benchmark binary still runs, on tiny sizes, so it does not rot between uses.

use std::process::Command;

use scitq_tests::describe;

#[test]
fn bench_runs_every_part_on_tiny_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_scitq-bench"))
        .args(["--no-build", "--tasks", "20", "--concurrency", "2"])
        .args(["--submit", "200", "--queue-memory", "1000", "--docker", "4"])
        .args(["--log-latency", "20", "--steering-agents", "2"])
        .args(["--scale-agents", "10", "--scale-tasks", "100"])
        .args(["--scale-heartbeat", "200ms", "--scale-idle", "1s"])
        .output()
        .expect("run scitq-bench");
    assert!(out.status.success(), "scitq-bench: {}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for part in [
        "throughput:",
        "baseline:",
        "ratio:",
        "submission:",
        "memory:",
        "docker:",
        "docker run:",
        "docker ratio:",
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
