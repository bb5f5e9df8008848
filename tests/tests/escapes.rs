//! Nothing leaves its place: tokens in clear, files out of a task's folders, host paths in
//! containers.

use std::time::Duration;

use scitq_tests::images::{containers_labelled, remove_containers};
use scitq_tests::{Agent, Client, Image, Server, ServerOpts, bin, describe, read_tree};

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

/// A secret file and a secret folder outside any task's folders, and a local output folder.
struct Bait {
    secret: std::path::PathBuf,
    secret_dir: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Bait {
    fn new(c: &Client, name: &str) -> Bait {
        let root = c.scratch_path(name);
        let secret_dir = root.join("secret-dir");
        std::fs::create_dir_all(&secret_dir).unwrap();
        std::fs::write(secret_dir.join("inside"), "secret too\n").unwrap();
        let secret = root.join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let out = root.join("out");
        Bait {
            secret,
            secret_dir,
            out,
        }
    }

    /// Links to the secrets from `dir` (the task's output folder), and one real file.
    fn script(&self, dir: &str) -> String {
        format!(
            "ln -s {} {dir}/link && ln -s {} {dir}/dirlink && mkdir {dir}/sub && \
             ln -s {} {dir}/sub/deep && echo fine > {dir}/real",
            self.secret.display(),
            self.secret_dir.display(),
            self.secret.display(),
        )
    }

    fn output_uri(&self) -> String {
        format!("file://{}/", self.out.display())
    }

    /// Only the real file was uploaded: no secret came along. The links left out are named
    /// where the user looks: the execution's message and the task's stderr.
    fn check(&self, c: &Client, id: i64) {
        let task = c.wait_task(id, "succeeded", CONNECT);
        let uploaded = read_tree(&self.out);
        let names: Vec<&String> = uploaded.keys().collect();
        assert_eq!(names, ["real"], "uploaded {uploaded:?}: {task:#}");
        let named = "dirlink, link, sub/deep";
        let execution = task["executions"]
            .as_array()
            .and_then(|e| e.last().cloned())
            .unwrap_or_default();
        let message = execution["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "message {message:?}: {task:#}");
        let out = c.ctl(["task", "output", &id.to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(named) && stderr.contains("symbolic links"),
            "stderr: {}",
            describe(&out)
        );
    }
}

#[test]
fn a_native_task_s_links_are_not_followed_on_upload() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _agent = Agent::start(&server, "native", 1, &[]);
    c.wait_worker_online("native", CONNECT);
    let bait = Bait::new(&c, "native-links");
    let id = c.create_sh(
        "links",
        &bait.script("$OUTPUT"),
        &["--output", &bait.output_uri()],
    );
    bait.check(&c, id);
}

#[test]
fn a_container_task_s_links_are_not_followed_on_upload() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let agent = Agent::start(&server, "boxed", 1, &["--docker-network", "none"]);
    c.wait_worker_online("boxed", CONNECT);
    let work = agent.work_dir().to_string_lossy().into_owned();
    let bait = Bait::new(&c, "container-links");
    let id = c.create(&[
        "--container",
        image.tag(),
        "--output",
        &bait.output_uri(),
        "--",
        "sh",
        "-c",
        &bait.script("/output"),
    ]);
    bait.check(&c, id);
    remove_containers(&containers_labelled("scitq.agent", &work));
}

#[test]
fn a_container_mounts_only_the_host_folders_its_agent_allows() {
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("ref.txt"), "reference\n").unwrap();
    let shared_dir = shared.path().display().to_string();
    let agent = Agent::start(
        &server,
        "mounts",
        1,
        &["--docker-network", "none", "--allow-mount", &shared_dir],
    );
    c.wait_worker_online("mounts", CONNECT);
    let work = agent.work_dir().to_string_lossy().into_owned();

    // The whole host: refused, naming the path and the setting; the command never runs.
    let id = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        "-v /:/host",
        "--",
        "cat",
        "/host/etc/hostname",
    ]);
    let task = c.wait_task(id, "failed", CONNECT);
    let execution = &task["executions"][0];
    let message = execution["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("host path / may not be mounted") && message.contains("--allow-mount"),
        "{task:#}"
    );
    assert_eq!(c.output(id), "", "{task:#}");

    // An allowed folder mounts.
    let volume = format!("-v {shared_dir}:/refs:ro");
    let id = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        &volume,
        "--",
        "cat",
        "/refs/ref.txt",
    ]);
    c.wait_task(id, "succeeded", CONNECT);
    assert_eq!(c.output(id), "reference\n");
    remove_containers(&containers_labelled("scitq.agent", &work));
}

#[test]
fn an_empty_allow_mounts_variable_allows_no_mount() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("scitq-agent"))
        .env("SCITQ_ALLOW_MOUNTS", "")
        .args(["--server", "127.0.0.1:1", "--token", "t", "--print-config"])
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("run scitq-agent");
    assert!(out.status.success(), "{}", describe(&out));
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("allow_mounts = []"), "{}", describe(&out));
}
