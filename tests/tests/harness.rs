//! The harness itself: a test that passes only because the harness is broken is worthless.

use std::process::Command;
use std::time::Duration;

use scitq_tests::{Postgres, Proc, descendants, describe, poll, wait_until};

#[test]
fn postgres_cluster_starts_and_accepts_connections() {
    let pg = Postgres::start();
    let url = pg.url();
    assert!(
        url.starts_with("postgres://") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    let psql = std::path::Path::new("/usr/bin/psql");
    if psql.exists() {
        let out = Command::new(psql)
            .args([&url, "-tAc", "select 40 + 2"])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    } else {
        std::net::TcpStream::connect(("127.0.0.1", pg.port())).expect("connect to PostgreSQL");
    }
}

#[test]
fn a_dropped_process_takes_its_children_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 300 & echo started; wait"]);
    let proc = Proc::spawn("sh", cmd, &dir.path().join("log"));
    let pid = proc.pid();
    let children = poll(Duration::from_secs(10), "sh to start sleep", || {
        let found = descendants(pid);
        if found.is_empty() {
            Err("no child yet".into())
        } else {
            Ok(found)
        }
    });
    drop(proc);
    wait_until(Duration::from_secs(10), "the children to be gone", || {
        children.iter().all(|c| {
            !std::path::Path::new(&format!("/proc/{c}")).exists()
                || std::fs::read_to_string(format!("/proc/{c}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
    });
}
