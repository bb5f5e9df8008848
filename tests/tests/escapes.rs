//! Nothing leaves its place: tokens in clear, files out of a task's folders, host paths in
//! containers.

use std::time::Duration;

use scitq_tests::{Agent, Server, ServerOpts, describe};

const CONNECT: Duration = Duration::from_secs(60);

/// 0.0.0.0 is not a loopback address, yet connecting to it reaches this machine: the refusal
/// is checked without a remote host, and `--insecure` is seen to really connect.
fn not_loopback(server: &Server) -> String {
    format!("0.0.0.0:{}", server.port())
}

#[test]
fn scitqctl_refuses_to_send_its_token_in_clear_to_another_host() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let addr = not_loopback(&server);
    let out = c
        .bare_command()
        .args(["--server", &addr, "task", "list"])
        .output()
        .expect("run scitqctl");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("https://") && stderr.contains("--insecure") && stderr.contains(&addr),
        "the refusal should name the address, https:// and --insecure: {}",
        describe(&out)
    );
    // The opt-out, as a flag and from the environment.
    let out = c
        .bare_command()
        .args(["--server", &addr, "--insecure", "task", "list"])
        .output()
        .expect("run scitqctl");
    assert!(out.status.success(), "--insecure: {}", describe(&out));
    let out = c
        .bare_command()
        .args(["--server", &addr, "task", "list"])
        .env("SCITQ_INSECURE", "1")
        .output()
        .expect("run scitqctl");
    assert!(out.status.success(), "SCITQ_INSECURE=1: {}", describe(&out));
}

#[test]
fn the_agent_refuses_to_send_its_token_in_clear_to_another_host() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let addr = not_loopback(&server);
    let mut refused = Agent::start_via(&server, &addr, "clear", 1, &[]);
    let status = refused
        .wait_exit(CONNECT)
        .expect("scitq-agent should refuse at once");
    assert_eq!(status.code(), Some(2), "{}", refused.log_tail(20));
    let log = refused.log_tail(20);
    assert!(
        log.contains("https://") && log.contains("--insecure") && log.contains("0.0.0.0"),
        "the refusal should name the address, https:// and --insecure: {log}"
    );
    assert!(c.workers().is_empty(), "a refused agent registered");
    let _agent = Agent::start_via(&server, &addr, "opted-out", 1, &["--insecure"]);
    c.wait_worker_online("opted-out", CONNECT);
}
