//! Bad input gets a clear error, on stderr, with a non-zero exit, and changes nothing.

use std::process::Output;
use std::time::Duration;

use scitq_tests::{
    Agent, ChildGuard, Client, Grpcurl, Proc, Server, ServerOpts, bin, describe, log_tail, poll,
};

const CONNECT: Duration = Duration::from_secs(60);

/// A server holding two pending tasks (no agent), so "nothing changed" means something.
fn server_with_two_tasks() -> (Server, Client) {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    c.create(&["--batch", "seed", "--", "echo", "one"]);
    c.create(&["--batch", "seed", "--", "echo", "two"]);
    assert_eq!(c.task_count(), 2);
    (server, c)
}

/// The command failed, printed nothing on stdout, and its stderr names every `needle`
/// (case-insensitive).
fn assert_refused(what: &str, out: &Output, needles: &[&str]) {
    assert!(
        !out.status.success(),
        "{what} should fail: {}",
        describe(out)
    );
    assert!(
        out.stdout.is_empty(),
        "{what} printed data on stdout: {}",
        describe(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    for needle in needles {
        assert!(
            stderr.contains(&needle.to_lowercase()),
            "{what}: the error should mention {needle:?}: {}",
            describe(out)
        );
    }
}

#[test]
fn an_empty_command_is_refused() {
    let (_server, c) = server_with_two_tasks();
    assert_refused(
        "task create with no command",
        &c.ctl(["task", "create", "--"]),
        &["command"],
    );
    assert_refused(
        "task create ''",
        &c.ctl(["task", "create", "--", ""]),
        &["command"],
    );
    assert_refused(
        "task create --shell ''",
        &c.ctl(["task", "create", "--shell", "--", ""]),
        &["command"],
    );
    let file = c.scratch_file("with-empty-line", "echo fine\n\necho fine too\n");
    let out = c.ctl([
        "task".as_ref(),
        "create".as_ref(),
        "--from-file".as_ref(),
        file.as_os_str(),
    ]);
    // A blank line may be skipped or refused; it must never become an empty task.
    if out.status.success() {
        let count = c.task_count();
        assert_eq!(
            count,
            4,
            "--from-file with a blank line: {}",
            describe(&out)
        );
        assert!(c.tasks(&[]).iter().all(|t| t["command"] != ""));
        return;
    }
    assert_eq!(c.task_count(), 2, "a refused --from-file created tasks");
}

#[test]
fn an_unknown_task_id_is_reported() {
    let (_server, c) = server_with_two_tasks();
    assert_refused(
        "task show 999999",
        &c.ctl(["task", "show", "999999"]),
        &["999999"],
    );
    assert_refused(
        "task output 999999",
        &c.ctl(["task", "output", "999999"]),
        &["999999"],
    );
    assert_eq!(c.task_count(), 2);
}

#[test]
fn an_unknown_batch_is_reported() {
    let (_server, c) = server_with_two_tasks();
    assert_refused(
        "batch go nosuch",
        &c.ctl(["batch", "go", "nosuch"]),
        &["nosuch"],
    );
    assert_refused(
        "batch delete nosuch",
        &c.ctl(["batch", "delete", "nosuch", "--yes"]),
        &["nosuch"],
    );
    assert_eq!(c.task_count(), 2);
    let batches = c.batches();
    assert!(batches.iter().all(|b| b["name"] != "nosuch"), "{batches:?}");
    assert!(batches.iter().all(|b| b["stopped"] == false), "{batches:?}");
    // Stopping a batch that has no task yet is how one prepares it: it is made, stopped.
    c.ctl_ok(["batch", "stop", "nosuch"]);
    let batches = c.batches();
    let made = batches
        .iter()
        .find(|b| b["name"] == "nosuch")
        .expect("made");
    assert_eq!(made["stopped"], true, "{made}");
}

#[test]
fn an_unparsable_server_address_exits_2_naming_it() {
    let (_server, c) = server_with_two_tasks();
    let out = c
        .bare_command()
        .args(["--server", "foo:bar:baz", "task", "list"])
        .output()
        .expect("run scitqctl");
    assert_refused("--server foo:bar:baz", &out, &["foo:bar:baz"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn a_ten_megabyte_command_is_refused_naming_the_size_limit() {
    let (_server, c) = server_with_two_tasks();
    let huge = format!("echo {}\n", "a".repeat(10 * 1024 * 1024));
    let file = c.scratch_file("huge", &huge);
    let out = c.ctl([
        "task".as_ref(),
        "create".as_ref(),
        "--from-file".as_ref(),
        file.as_os_str(),
    ]);
    assert_refused("a 10 MB command", &out, &["limit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.chars().any(|ch| ch.is_ascii_digit()),
        "the error should give the limit: {stderr}"
    );
    assert_eq!(c.task_count(), 2);
}

#[test]
fn worker_concurrency_must_be_positive() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "steady", 4, &[]);
    let id = c.wait_worker_online("steady", CONNECT).to_string();
    assert_refused(
        "worker set --concurrency 0",
        &c.ctl(["worker", "set", &id, "--concurrency", "0"]),
        &["concurrency"],
    );
    assert_refused(
        "worker set --concurrency -1",
        &c.ctl(["worker", "set", &id, "--concurrency", "-1"]),
        &["-1"],
    );
    assert_refused(
        "worker set on an unknown worker",
        &c.ctl(["worker", "set", "999999", "--concurrency", "2"]),
        &["999999"],
    );
    for verb in ["drain", "pause", "resume", "delete"] {
        assert_refused(
            &format!("worker {verb} on an unknown worker"),
            &c.ctl(["worker", verb, "999999"]),
            &["999999"],
        );
    }
    let workers = c.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["concurrency"], 4, "{workers:?}");
    assert_eq!(workers[0]["draining"], false, "{workers:?}");
}

#[test]
fn the_agent_refuses_concurrency_zero() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let mut agent = Agent::start_raw(&server, "idle", "0", &[]);
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("scitq-agent --concurrency 0 should exit at once");
    assert!(
        !status.success(),
        "scitq-agent --concurrency 0 exited with {status}"
    );
    let log = agent.log_tail(20).to_lowercase();
    assert!(
        log.contains("concurrency"),
        "the error should name --concurrency: {log}"
    );
    assert!(
        c.workers().is_empty(),
        "a refused agent registered a worker"
    );
}

#[test]
fn a_bad_token_is_rejected() {
    let (server, c) = server_with_two_tasks();
    assert_refused(
        "--token wrong",
        &c.ctl(["--token", "not-a-token", "task", "list"]),
        &["token"],
    );
    assert_refused(
        "task create with a bad token",
        &c.ctl([
            "--token",
            "not-a-token",
            "task",
            "create",
            "--",
            "echo",
            "x",
        ]),
        &["token"],
    );
    // A worker token is not an admin token.
    assert_refused(
        "--token WORKER_TOKEN",
        &c.ctl([
            "--token",
            server.worker_token(),
            "task",
            "create",
            "--",
            "echo",
            "x",
        ]),
        &["token"],
    );
    assert_eq!(c.task_count(), 2);
    assert!(
        !log_tail(&server.log_path(), 200).contains("not-a-token"),
        "scitqd logged the token it refused"
    );
}

#[test]
fn worker_settings_past_their_limit_are_refused_naming_it() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "steady", 4, &["--prefetch", "2"]);
    let id = c.wait_worker_online("steady", CONNECT).to_string();
    // scitqctl refuses before sending (clap), naming the limit.
    assert_refused(
        "worker set --concurrency 4294967295",
        &c.ctl(["worker", "set", &id, "--concurrency", "4294967295"]),
        &["100000"],
    );
    assert_refused(
        "worker set --prefetch 3000000000",
        &c.ctl(["worker", "set", &id, "--prefetch", "3000000000"]),
        &["1000000"],
    );
    // scitqd refuses at its edge too, whatever the client (a u32 fits on the wire).
    let grpcurl = Grpcurl::find();
    for (field, value, limit) in [
        ("concurrency", "4294967295", "100000"),
        ("prefetch", "3000000000", "1000000"),
    ] {
        let request = format!(r#"{{"id": {id}, "{field}": {value}}}"#);
        let out = grpcurl.run(
            &server.addr(),
            Some(server.admin_token()),
            &["-d", &request],
            &["scitq.v1.WorkerService/UpdateWorker"],
        );
        assert!(
            !out.status.success(),
            "UpdateWorker {request}: {}",
            describe(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(field) && stderr.contains(limit),
            "UpdateWorker {request} should name {field} and {limit}: {}",
            describe(&out)
        );
    }
    let workers = c.workers();
    assert_eq!(workers[0]["concurrency"], 4, "{workers:?}");
    assert_eq!(workers[0]["prefetch"], 2, "{workers:?}");
}

#[test]
fn a_second_scitqd_keeps_the_client_config_of_the_first() {
    let server = Server::start(ServerOpts::default());
    let config = server.home().join(".config/scitq/config.toml");
    let before = std::fs::read_to_string(&config).expect("client config of the first scitqd");
    // A second scitqd, same HOME, fresh data dir: a first start of its own.
    let data = server.files_dir().join("second-data");
    let log = server.files_dir().join("second-scitqd.log");
    let mut cmd = std::process::Command::new(bin("scitqd"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("HOME", server.home())
        .env("XDG_CONFIG_HOME", server.home().join(".config"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut second = Proc::spawn("second scitqd", cmd, &log);
    poll(CONNECT, "the second scitqd to write scitqd.addr", || {
        if let Some(status) = second.try_exit() {
            panic!(
                "the second scitqd exited with {status}: {}",
                log_tail(&log, 40)
            );
        }
        std::fs::read_to_string(data.join("scitqd.addr")).map_err(|e| e.to_string())
    });
    let after = std::fs::read_to_string(&config).expect("client config");
    assert_eq!(
        after, before,
        "the second scitqd rewrote the first one's client config"
    );
    let said = log_tail(&log, 40);
    assert!(
        said.contains("kept the local client config") && said.contains(&server.addr()),
        "the second scitqd should say it kept the config of {}: {said}",
        server.addr()
    );
    // The first server's clients still work.
    let out = server
        .client()
        .bare_command()
        .args(["task", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn bad_uris_and_actions_are_refused_at_create_naming_the_bad_part() {
    let (_server, c) = server_with_two_tasks();
    for (flag, uri, part) in [
        (
            "--input",
            "file:///some/dir/../data.txt",
            "file:///some/dir/../data.txt",
        ),
        ("--input", "http://host/x/..%2F..%2Fescape", ".."),
        ("--input", "s3://", "bucket"),
        ("--input", "ftp://", "host"),
        ("--input", "nosuch://x", "nosuch"),
        ("--input", "s3://b/x|frobnicate", "frobnicate"),
        ("--input", "s3://b/x|mv:../../x", "mv:../../x"),
        ("--resource", "unknownremote:refs/x", "unknownremote"),
        ("--output", "s3://b/out/../../x/", ".."),
    ] {
        assert_refused(
            &format!("task create {flag} {uri}"),
            &c.ctl(["task", "create", flag, uri, "--", "true"]),
            &[flag.trim_start_matches('-'), part],
        );
    }
    assert_eq!(c.task_count(), 2);
}

#[test]
fn bad_uris_are_refused_by_task_edit_too_and_nothing_changes() {
    let (_server, c) = server_with_two_tasks();
    // No agent: the tasks stay pending, so they can be edited.
    for (flag, uri, part) in [
        ("--input", "nosuch://x", "nosuch"),
        ("--input", "s3://b/x|frobnicate", "frobnicate"),
        ("--output", "s3://b/out/../../x/", ".."),
    ] {
        assert_refused(
            &format!("task edit {flag} {uri}"),
            &c.ctl(["task", "edit", "1", flag, uri]),
            &[flag.trim_start_matches('-'), part],
        );
    }
    let task = c.task(1);
    assert_eq!(task["status"], "pending", "{task:#}");
    assert!(
        task["inputs"].as_array().is_none_or(Vec::is_empty)
            && task["output"].as_str().unwrap_or("").is_empty(),
        "the edit changed the task: {task:#}"
    );
}

#[test]
fn fetch_of_a_uri_with_dot_dot_is_refused_at_once() {
    let (_server, c) = server_with_two_tasks();
    let dir = c.scratch_path("dotdot");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let uri = format!("file://{}/a/../data.txt", dir.display());
    let dst = format!("{}/out/", dir.display());
    // It used to hang, spinning in the local lister: run it with a deadline (and kill it
    // if it is still running when the test fails).
    let mut child = ChildGuard(
        c.bare_command()
            .args(["fetch", "copy", &uri, &dst])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run scitqctl"),
    );
    let exited = poll(CONNECT, "scitqctl fetch copy to exit", || {
        child
            .0
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or("still running".to_owned())
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!exited.success(), "fetch copy {uri} succeeded: {stderr}");
    assert!(stderr.contains(&uri) && stderr.contains(".."), "{stderr}");
}

#[test]
fn invalid_utf8_is_refused_naming_where() {
    use std::os::unix::ffi::OsStrExt as _;
    let (_server, c) = server_with_two_tasks();
    let file = c.scratch_path("bad-utf8.txt");
    std::fs::write(&file, b"echo fine\necho \xff bad\n").unwrap();
    let out = c.ctl([
        "task".as_ref(),
        "create".as_ref(),
        "--from-file".as_ref(),
        file.as_os_str(),
    ]);
    assert_refused(
        "--from-file with invalid UTF-8",
        &out,
        &["line 2", "byte 5"],
    );
    let bad = std::ffi::OsStr::from_bytes(b"ab\xffc");
    let out = c.ctl([
        "task".as_ref(),
        "create".as_ref(),
        "--".as_ref(),
        "echo".as_ref(),
        bad,
    ]);
    assert_refused(
        "an argument with invalid UTF-8",
        &out,
        &["argument", "byte 2"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(c.task_count(), 2);
}

#[test]
fn a_mistyped_option_before_the_command_is_refused_with_a_suggestion() {
    let (_server, c) = server_with_two_tasks();
    for (args, typo, meant) in [
        (
            &[
                "task",
                "create",
                "--contaner",
                "busybox",
                "--",
                "echo",
                "hi",
            ][..],
            "--contaner",
            "--container",
        ),
        (
            &["launch", "--inptu", "s3://b/x", "echo", "hi"],
            "--inptu",
            "--input",
        ),
    ] {
        let out = c.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert_refused(&args.join(" "), &out, &[typo, meant]);
    }
    assert_eq!(c.task_count(), 2, "no task was created");
}

#[test]
fn an_unknown_remote_is_refused_at_create_listing_scitqds_remotes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    std::fs::write(
        &conf,
        "[lab]\ntype = s3\nendpoint = http://127.0.0.1:9\n\n[s3]\ntype = s3\nendpoint = http://127.0.0.1:9\n",
    )
    .unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    for (flag, uri) in [("--input", "nosuch:path"), ("--output", "nosuch://x/")] {
        assert_refused(
            &format!("task create {flag} {uri}"),
            &c.ctl(["task", "create", flag, uri, "--", "true"]),
            &["nosuch", "scitqd's rclone remotes: lab, s3"],
        );
    }
    assert_eq!(c.task_count(), 0);
}

/// A storage that refuses connections: each retried call is one line of the agent's log,
/// without the backtrace `RUST_BACKTRACE=1` makes errors capture, and `scitqctl fetch`
/// says its error once.
#[test]
fn a_retried_storage_call_is_one_line_and_its_error_is_said_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("rclone.conf");
    std::fs::write(
        &conf,
        format!(
            "[dead]\ntype = s3\nendpoint = http://127.0.0.1:{closed}\nregion = us-east-1\n\
             access_key_id = a\nsecret_access_key = b\n"
        ),
    )
    .unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    let agent = Agent::start_with_env(&server, "retrier", 1, &[], &[("RUST_BACKTRACE", "1")]);
    c.wait_worker_online("retrier", CONNECT);
    let id = c.create(&["--input", "dead:bkt/x.txt", "--", "true"]);
    let task = poll(Duration::from_secs(120), "the download to fail", || {
        let task = c.task(id);
        if task["status"] == "failed" {
            Ok(task)
        } else {
            Err(task.to_string())
        }
    });
    assert!(
        task["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("dead:bkt/x.txt")),
        "{task:#}"
    );
    let log = agent.log_tail(10_000);
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed (retry "))
        .collect();
    assert!(!retries.is_empty(), "no retry logged: {log}");
    assert!(
        retries
            .iter()
            .all(|l| l.contains("s3://bkt/") || l.contains("dead:")),
        "a retry line names the storage: {retries:#?}"
    );
    // (The harness's own lines name RUST_BACKTRACE.)
    assert!(
        !log.lines()
            .filter(|l| !l.starts_with("=== [harness]"))
            .any(|l| l.to_lowercase().contains("backtrace")),
        "a backtrace in the agent's log: {log}"
    );

    // scitqctl fetch: the storage's message once, not once per layer of the error.
    let out = c.ctl(["fetch", "list", "dead:bkt/"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let opendal_part = stderr
        .split_once("dead:bkt/")
        .and_then(|(_, rest)| rest.split(", source:").next())
        .unwrap_or_default()
        .trim_start_matches([':', ' '])
        .to_owned();
    assert!(!opendal_part.is_empty(), "{}", describe(&out));
    assert_eq!(
        stderr.matches(&opendal_part).count(),
        1,
        "the message is said more than once: {}",
        describe(&out)
    );
}
