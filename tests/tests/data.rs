//! A task's data through the agent: what `output/` holds is uploaded after a failed run too,
//! and a `--resource` is downloaded once per agent, fetched again only when it changed (the
//! HTTP test server counts the GETs).

use std::time::{Duration, SystemTime};

use scitq_tests::{Agent, HttpServer, Server, ServerOpts, str_field};

const CONNECT: Duration = Duration::from_secs(60);

#[test]
fn output_is_uploaded_after_a_failed_run_too() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "uploader", 1, &[]);
    c.wait_worker_online("uploader", CONNECT);

    let results = tempfile::tempdir().unwrap();
    let output = format!("file://{}/run1/", results.path().display());
    let id = c.create_sh(
        "out",
        "echo partial > $OUTPUT/partial.txt; exit 3",
        &["--output", &output],
    );
    c.wait_task(id, "failed", CONNECT);
    let executions = c.ctl_json(["task", "executions", &id.to_string()]);
    let execution = &executions[0];
    assert_eq!(execution["exit_code"], 3, "{execution:#}");
    let uploaded =
        std::fs::read_to_string(results.path().join("run1/partial.txt")).unwrap_or_else(|e| {
            panic!("the failed run's output was not uploaded ({e}): {execution:#}")
        });
    assert_eq!(uploaded, "partial\n");
    let listed = execution["uploaded"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed.len(), 1, "{execution:#}");
    assert!(
        str_field(&listed[0], "uri").ends_with("run1/partial.txt"),
        "{execution:#}"
    );
}

#[test]
fn a_resource_is_fetched_once_per_agent_and_again_only_when_it_changed() {
    let http = HttpServer::start();
    let file = http.root().join("ref.txt");
    std::fs::write(&file, "ref v1\n").unwrap();
    let resource = http.url("ref.txt");
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "cacher", 1, &[]);
    c.wait_worker_online("cacher", CONNECT);
    let run = || {
        let id = c.create_sh("res", "cat $RESOURCE/ref.txt", &["--resource", &resource]);
        c.wait_task(id, "succeeded", CONNECT);
        c.output(id)
    };

    assert_eq!(run(), "ref v1\n");
    assert_eq!(http.gets("/ref.txt"), 1);
    assert_eq!(run(), "ref v1\n");
    assert_eq!(
        http.gets("/ref.txt"),
        1,
        "an unchanged resource is not fetched again"
    );

    // Changed, with a later modification time (HTTP dates count whole seconds).
    std::fs::write(&file, "ref v2\n").unwrap();
    let later = SystemTime::now() + Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(later))
        .unwrap();
    assert_eq!(run(), "ref v2\n", "a changed resource is fetched again");
    assert_eq!(http.gets("/ref.txt"), 2);
}
