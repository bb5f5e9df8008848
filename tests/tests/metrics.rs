//! `GET /metrics` on scitqd's port: scraped and parsed as Prometheus text, its task counts
//! match `scitqctl task list`, its execution counters what ran; an admin token or an
//! allowed address reads it, a worker token or no token does not.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;
use scitq_tests::{Agent, Backend, Server, ServerOpts, poll, str_field};

const WAIT: Duration = Duration::from_secs(60);

/// GET /metrics with an optional bearer token: status and body.
fn get_metrics(server: &Server, token: Option<&str>) -> (StatusCode, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .http1_only()
            .build()
            .expect("http client");
        let mut request = client.get(format!("http://{}/metrics", server.addr()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET /metrics");
        let status = response.status();
        (status, response.text().await.expect("metrics body"))
    })
}

fn scrape(server: &Server) -> Scrape {
    let (status, text) = get_metrics(server, Some(server.admin_token()));
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a number: {other:?}"),
        })
        .sum()
}

/// `scitq_tasks` as (batch, status) → count, zeros left out.
fn task_series(scrape: &Scrape) -> BTreeMap<(String, String), u64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "scitq_tasks")
        .filter_map(|s| {
            let Value::Gauge(v) = s.value else {
                panic!("scitq_tasks is not a gauge: {s:?}")
            };
            let key = (
                s.labels.get("batch")?.to_owned(),
                s.labels.get("status")?.to_owned(),
            );
            (v != 0.0).then_some((key, v as u64))
        })
        .collect()
}

fn metrics_count_what_task_list_shows(backend: Backend) {
    let server = Server::start_on(backend, ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "metrics", 2, &[]);
    c.wait_worker_online("metrics", WAIT);

    let ok: Vec<i64> = (0..3)
        .map(|_| c.create(&["--batch", "ok", "echo", "hello"]))
        .collect();
    let bad: Vec<i64> = (0..2)
        .map(|_| c.create(&["--batch", "bad", "--retry", "0", "false"]))
        .collect();
    let slow = c.create(&["--batch", "slow", "sleep", "600"]);
    let waiting = c.create(&[
        "--batch",
        "later",
        &format!("--depends-on={slow}"),
        "--",
        "true",
    ]);
    for id in &ok {
        c.wait_task(*id, "succeeded", WAIT);
    }
    for id in &bad {
        poll(WAIT, format!("task {id} to fail"), || {
            let status = c.status(*id);
            if status == "failed" {
                Ok(())
            } else {
                Err(status)
            }
        });
    }
    c.wait_task(slow, "running", WAIT);
    assert_eq!(c.status(waiting), "waiting");

    let listed: BTreeMap<(String, String), u64> =
        c.tasks(&[])
            .iter()
            .fold(BTreeMap::new(), |mut counts, task| {
                *counts
                    .entry((str_field(task, "batch"), str_field(task, "status")))
                    .or_default() += 1;
                counts
            });
    assert_eq!(listed.values().sum::<u64>(), 7, "{listed:?}");

    let scraped = scrape(&server);
    assert_eq!(task_series(&scraped), listed);
    assert_eq!(value(&scraped, "scitq_workers_connected", &[]), 1.0);
    assert_eq!(value(&scraped, "scitq_agent_sessions", &[]), 1.0);
    assert!(value(&scraped, "scitq_agent_sessions_opened_total", &[]) >= 1.0);
    // Three succeeded, two failed, one running: six executions.
    assert_eq!(value(&scraped, "scitq_executions_started_total", &[]), 6.0);
    assert_eq!(
        value(&scraped, "scitq_dispatch_latency_seconds_count", &[]),
        6.0
    );
    let ended = |outcome, failure| {
        value(
            &scraped,
            "scitq_executions_finished_total",
            &[("outcome", outcome), ("failure", failure)],
        )
    };
    assert_eq!(ended("succeeded", "none"), 3.0);
    assert_eq!(ended("failed", "run"), 2.0);
    assert_eq!(value(&scraped, "scitq_executions_finished_total", &[]), 5.0);
    // "hello\n" three times.
    assert_eq!(
        value(&scraped, "scitq_output_bytes_stored_total", &[]),
        18.0
    );
    assert!(value(&scraped, "scitq_store_commit_seconds_count", &[]) > 0.0);
    assert!(value(&scraped, "scitq_store_commit_group_size_count", &[]) > 0.0);

    // A deleted batch leaves no series behind; the others stay as they were.
    c.ctl_ok(["batch", "delete", "ok", "--yes"]);
    let mut expected = listed.clone();
    expected.retain(|(batch, _), _| batch != "ok");
    assert_eq!(task_series(&scrape(&server)), expected);
}

scitq_tests::on_both_backends!(metrics_count_what_task_list_shows);

/// Every series the sample Grafana dashboard queries is one scitqd serves.
#[test]
fn the_sample_dashboard_queries_only_series_scitqd_serves() {
    let server = Server::start(ServerOpts::default());
    // A task, so that the task series has a sample.
    server.client().create(&["--batch", "dash", "true"]);
    let (status, text) = get_metrics(&server, Some(server.admin_token()));
    assert_eq!(status, StatusCode::OK, "{text}");
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json"),
    )
    .expect("read deploy/grafana-dashboard.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queried = Vec::new();
    collect_exprs(&json, &mut queried);
    assert!(queried.len() > 10, "{queried:?}");
    let mut names = std::collections::BTreeSet::new();
    for expr in &queried {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("scitq_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not served: {unknown:?}\n{text}");
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn metrics_need_an_admin_token_or_an_allowed_address() {
    let server = Server::start(ServerOpts::default());
    let (status, body) = get_metrics(&server, None);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("admin token"), "{body}");
    let (status, body) = get_metrics(&server, Some("not-a-token"));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = get_metrics(&server, Some(server.worker_token()));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = get_metrics(&server, Some(server.admin_token()));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("scitq_executions_started_total 0"), "{body}");

    // Loopback allowed in the config: no token needed; a worker token is still refused.
    let config = tempfile::tempdir().expect("temp dir");
    let path = config.path().join("scitqd.toml");
    std::fs::write(&path, "[metrics]\nallow = [\"127.0.0.0/8\"]\n").expect("write config");
    let allowed = Server::start(
        ServerOpts::default()
            .arg("--config")
            .arg(&path.display().to_string()),
    );
    let (status, body) = get_metrics(&allowed, None);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get_metrics(&allowed, Some(allowed.worker_token()));
    assert_eq!(status, StatusCode::FORBIDDEN);
}
