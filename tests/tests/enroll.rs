//! Enrollment tokens: a machine's agent gets in with a single-use, short-lived token bound
//! to its name instead of the shared worker token, and from then on with its own credential.

use std::time::{Duration, SystemTime};

use scitq_tests::{Agent, Backend, Server, ServerOpts, poll};

const CONNECT: Duration = Duration::from_secs(60);

/// `scitqctl worker enroll NAME`: the token on stdout.
fn enroll(server: &Server, name: &str, ttl: &str) -> String {
    let token = server
        .client()
        .ctl_ok(["worker", "enroll", name, "--ttl", ttl]);
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "{token:?}");
    token
}

/// An agent that holds no worker token (no client config) and enrolls with `token`.
fn enrolling_agent(server: &Server, name: &str, token: &str) -> Agent {
    let no_config = server.home().join("no-client-config");
    Agent::start_with_env(
        server,
        name,
        1,
        &[],
        &[
            ("XDG_CONFIG_HOME", no_config.to_str().expect("utf-8 path")),
            ("SCITQ_ENROLL_TOKEN", token),
        ],
    )
}

/// The agent stops by itself, non-zero, saying why: its log has every one of `words`.
fn refused(agent: &mut Agent, words: &[&str]) {
    let status = agent
        .wait_exit(CONNECT)
        .expect("an agent whose enrollment token is refused stops");
    assert!(!status.success(), "{status:?}");
    let log = agent.log_tail(30);
    for word in words {
        assert!(
            log.contains(word),
            "{word:?} not in the agent's log:\n{log}"
        );
    }
}

fn run_one(server: &Server, batch: &str) {
    let c = server.client();
    let id = c.create_sh(batch, "echo ran on $(hostname)", &[]);
    c.wait_task(id, "succeeded", CONNECT);
}

fn an_enrolled_agent_runs_and_restarts_on_its_own_credential(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let token = enroll(&server, "node-1", "10m");
    let mut agent = enrolling_agent(&server, "node-1", &token);
    c.wait_worker_online("node-1", CONNECT);
    run_one(&server, "first");

    // Restarted with the token still set (a unit file keeps it): it presents the
    // credential that token bound, and gets back in.
    agent.stop(Duration::from_secs(10));
    agent.start_again();
    run_one(&server, "second");

    // Restarted without the token, and without any worker token: its credential is its
    // bearer now.
    agent.stop(Duration::from_secs(10));
    agent.remove_env("SCITQ_ENROLL_TOKEN");
    agent.start_again();
    run_one(&server, "third");
    let workers = c.workers();
    assert_eq!(workers.len(), 1, "one worker, enrolled once: {workers:?}");

    // The same token replayed by another machine under the same name: refused, saying so.
    agent.stop(Duration::from_secs(10));
    let mut thief = enrolling_agent(&server, "node-1", &token);
    refused(
        &mut thief,
        &["Unauthenticated", "enrollment token refused", "was used at"],
    );
}

scitq_tests::on_both_backends!(an_enrolled_agent_runs_and_restarts_on_its_own_credential);

#[test]
fn expired_foreign_and_unknown_enrollment_tokens_are_refused() {
    let server = Server::start(ServerOpts::default());

    let expired = enroll(&server, "node-a", "1s");
    let past = SystemTime::now() + Duration::from_millis(1500);
    poll(Duration::from_secs(10), "the token to expire", || {
        if SystemTime::now() >= past {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    let mut late = enrolling_agent(&server, "node-a", &expired);
    refused(&mut late, &["Unauthenticated", "expired at", "node-a"]);

    let other = enroll(&server, "node-b", "10m");
    let mut wrong_name = enrolling_agent(&server, "node-c", &other);
    refused(
        &mut wrong_name,
        &[
            "Unauthenticated",
            "bound to instance \"node-b\"",
            "\"node-c\"",
        ],
    );

    let mut unknown = enrolling_agent(&server, "node-d", &"ab".repeat(32));
    refused(&mut unknown, &["Unauthenticated", "bad token"]);

    // None of them became a worker; the token of node-b still enrolls node-b.
    let c = server.client();
    assert!(c.workers().is_empty(), "{:?}", c.workers());
    let _b = enrolling_agent(&server, "node-b", &other);
    c.wait_worker_online("node-b", CONNECT);
}

#[test]
fn enrollment_tokens_are_for_admins_and_checked_at_issue() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let bad = c.ctl(["worker", "enroll", "has space"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid instance name"), "{err}");
    let long = c.ctl(["worker", "enroll", "n", "--ttl", "8d"]);
    assert!(!long.status.success());
    assert!(
        String::from_utf8_lossy(&long.stderr).contains("at most 7 days"),
        "{long:?}"
    );
}
