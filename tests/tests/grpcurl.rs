//! The API through grpcurl, which knows nothing of scitq but what reflection tells it.

use std::time::Duration;

use serde_json::Value;

use scitq_tests::{Agent, Grpcurl, Server, ServerOpts, as_id, describe};

#[test]
fn grpcurl_lists_describes_and_creates_a_task_with_reflection_only() {
    let grpcurl = Grpcurl::find();
    let server = Server::start(ServerOpts::default());
    let (addr, token) = (server.addr(), server.admin_token().to_string());
    let c = server.client();
    let _agent = Agent::start(&server, "grpcurl", 1, &[]);
    c.wait_worker_online("grpcurl", Duration::from_secs(60));

    let out = grpcurl.run(&addr, Some(&token), &[], &["list"]);
    assert!(out.status.success(), "grpcurl list: {}", describe(&out));
    let services = String::from_utf8_lossy(&out.stdout);
    for service in [
        "scitq.v1.TaskService",
        "scitq.v1.WorkerService",
        "scitq.v1.ExecutionService",
        "scitq.v1.StorageService",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == service),
            "grpcurl list lacks {service}: {services}"
        );
    }

    let out = grpcurl.run(
        &addr,
        Some(&token),
        &[],
        &["describe", "scitq.v1.TaskService"],
    );
    assert!(out.status.success(), "grpcurl describe: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rpc CreateTasks"), "{text}");
    let out = grpcurl.run(&addr, Some(&token), &[], &["describe", "scitq.v1.TaskSpec"]);
    assert!(
        out.status.success(),
        "grpcurl describe TaskSpec: {}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("command"));

    let request = r#"{"tasks": [{"command": "echo from-grpcurl", "batch": "grpcurl"}]}"#;
    let out = grpcurl.run(
        &addr,
        Some(&token),
        &["-d", request],
        &["scitq.v1.TaskService/CreateTasks"],
    );
    assert!(
        out.status.success(),
        "grpcurl CreateTasks: {}",
        describe(&out)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("CreateTasks reply is JSON");
    let ids = reply["ids"].as_array().expect("CreateTasks reply has ids");
    assert_eq!(ids.len(), 1, "{reply}");
    let id = as_id(&ids[0]);

    c.wait_task(id, "succeeded", Duration::from_secs(60));
    assert_eq!(c.output(id), "from-grpcurl\n");
    let out = grpcurl.run(
        &addr,
        Some(&token),
        &["-d", &format!(r#"{{"id": {id}}}"#)],
        &["scitq.v1.TaskService/GetTask"],
    );
    assert!(out.status.success(), "grpcurl GetTask: {}", describe(&out));
    let task: Value = serde_json::from_slice(&out.stdout).expect("GetTask reply is JSON");
    assert_eq!(task["status"], "TASK_STATUS_SUCCEEDED", "{task}");
}

#[test]
fn grpcurl_without_a_valid_token_is_refused() {
    let grpcurl = Grpcurl::find();
    let server = Server::start(ServerOpts::default());
    let addr = server.addr();
    for token in [None, Some("not-a-token")] {
        let out = grpcurl.run(&addr, token, &[], &["list"]);
        assert!(
            !out.status.success(),
            "grpcurl list with token {token:?}: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("unauthenticated"),
            "token {token:?}: {}",
            describe(&out)
        );
        if token.is_none() {
            // A grpcurl user learns how to send one, not only scitqctl's flag.
            assert!(
                stderr.contains("authorization: bearer"),
                "the error names the header: {}",
                describe(&out)
            );
        }
        let request = r#"{"tasks": [{"command": "echo sneaky"}]}"#;
        let out = grpcurl.run(
            &addr,
            token,
            &["-d", request],
            &["scitq.v1.TaskService/CreateTasks"],
        );
        assert!(
            !out.status.success(),
            "CreateTasks with token {token:?}: {}",
            describe(&out)
        );
    }
    assert_eq!(server.client().task_count(), 0);
}

#[test]
fn grpcurl_a_ten_megabyte_command_is_refused_naming_the_size_limit() {
    let grpcurl = Grpcurl::find();
    let server = Server::start(ServerOpts::default());
    let request = format!(
        r#"{{"tasks": [{{"command": "echo {}"}}]}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let out = grpcurl.call_stdin(
        &server.addr(),
        server.admin_token(),
        "scitq.v1.TaskService/CreateTasks",
        request.as_bytes(),
    );
    assert!(
        !out.status.success(),
        "a 10 MB CreateTasks: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("limit") && stderr.chars().any(|ch| ch.is_ascii_digit()),
        "the error should name the size limit: {}",
        describe(&out)
    );
    // Many small tasks in one request are fine, and an empty command among them spoils all.
    let request = r#"{"tasks": [{"command": "echo a"}, {"command": ""}]}"#;
    let out = grpcurl.run(
        &server.addr(),
        Some(server.admin_token()),
        &["-d", request],
        &["scitq.v1.TaskService/CreateTasks"],
    );
    assert!(
        !out.status.success(),
        "CreateTasks with an empty command: {}",
        describe(&out)
    );
    assert_eq!(
        server.client().task_count(),
        0,
        "a refused request created tasks"
    );
}

#[test]
fn grpcurl_the_storage_config_is_for_admin_tokens_only() {
    let grpcurl = Grpcurl::find();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    let text = "[lab]\ntype = s3\nendpoint = http://127.0.0.1:9\nsecret_access_key = hush\n";
    std::fs::write(&conf, text).unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let addr = server.addr();
    let method = "scitq.v1.StorageService/GetStorageConfig";

    let out = grpcurl.run(&addr, Some(server.admin_token()), &[], &[method]);
    assert!(out.status.success(), "{method}: {}", describe(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("GetStorageConfig reply");
    assert_eq!(reply["rcloneConfig"], text, "{reply}");

    for (token, code) in [
        (Some(server.worker_token()), "permissiondenied"),
        (Some("not-a-token"), "unauthenticated"),
        (None, "unauthenticated"),
    ] {
        let out = grpcurl.run(&addr, token, &[], &[method]);
        assert!(
            !out.status.success(),
            "{method} with {token:?}: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.to_lowercase().replace(' ', "").contains(code),
            "{method} with {token:?}: {}",
            describe(&out)
        );
        assert!(!stderr.contains("hush"), "{}", describe(&out));
        assert!(out.stdout.is_empty(), "{}", describe(&out));
    }
}

#[test]
fn grpcurl_reflection_is_refused_to_the_worker_token() {
    let grpcurl = Grpcurl::find();
    let server = Server::start(ServerOpts::default());
    let addr = server.addr();

    let out = grpcurl.run(&addr, Some(server.admin_token()), &[], &["list"]);
    assert!(out.status.success(), "list: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("scitq.v1.TaskService"),
        "{}",
        describe(&out)
    );

    // Every agent machine holds the worker token: it opens sessions and nothing else.
    let out = grpcurl.run(&addr, Some(server.worker_token()), &[], &["list"]);
    assert!(!out.status.success(), "list: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.replace(' ', "").contains("permissiondenied"),
        "{}",
        describe(&out)
    );
}
