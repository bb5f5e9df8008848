//! SFTP storage against a real OpenSSH server on loopback (see `scitq_tests::SftpServer`):
//! `scitqctl fetch` through `sftp://` URIs and through an rclone `type = sftp` remote (checked
//! against rclone itself), a task staged in and out by the agent, and bad input.
//!
//! Everything that talks SFTP runs as a separate process with the server's `env()`, so the
//! system ssh client uses the harness's known_hosts and never the account's `~/.ssh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use scitq_tests::{Agent, Server, ServerOpts, SftpServer, read_tree, str_field, write_tree};

const CONNECT: Duration = Duration::from_secs(60);

/// Runs `scitqctl ARGS` with the SFTP client environment; returns (exit code, stdout, stderr).
fn scitqctl(sftp: &SftpServer, args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(scitq_tests::bin("scitqctl"));
    cmd.args(args)
        .env_remove("SCITQ_RCLONE_CONFIG")
        .env_remove("SCITQ_SERVER")
        .env_remove("SCITQ_TOKEN")
        // No rclone.conf or client config from the machine's user: only what the test gives.
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .envs(sftp.env());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `scitqctl` that must succeed; returns its stdout and stderr.
fn scitqctl_ok(sftp: &SftpServer, args: &[&str]) -> (String, String) {
    let (code, stdout, stderr) = scitqctl(sftp, args);
    assert_eq!(
        code,
        0,
        "scitqctl {args:?}: {stderr}\n--- sshd ---\n{}",
        sftp.log_tail(20)
    );
    (stdout, stderr)
}

fn sample_tree() -> BTreeMap<&'static str, Vec<u8>> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    BTreeMap::from([
        ("a.txt", b"alpha\n".to_vec()),
        ("sub/b.bin", big),
        ("sub/deeper/c.txt", Vec::new()),
    ])
}

fn owned(tree: &BTreeMap<&str, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    tree.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// `[(path, size)]` from `scitqctl --json fetch list -R`.
fn listed_sizes(json: &str) -> Vec<(String, u64)> {
    let listed: serde_json::Value = serde_json::from_str(json).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap().to_string();
            (path, e["size"].as_u64().unwrap())
        })
        .collect()
}

fn sample_sizes() -> Vec<(String, u64)> {
    vec![
        ("a.txt".to_string(), 6),
        ("sub/b.bin".to_string(), 300_000),
        ("sub/deeper/c.txt".to_string(), 0),
    ]
}

/// The ssh client keeps one control master per connection; none may outlive scitqctl.
fn assert_no_ssh_left(sftp: &SftpServer) {
    assert_eq!(
        sftp.control_dirs(),
        Vec::<PathBuf>::new(),
        "an ssh control master outlived scitqctl"
    );
}

#[test]
fn scitqctl_fetch_through_sftp_uris() {
    let sftp = SftpServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    write_tree(&src, &sample_tree());
    let src_arg = format!("{}/", src.display());

    let (stdout, _) = scitqctl_ok(&sftp, &["fetch", "copy", &src_arg, &sftp.uri("in/")]);
    assert!(stdout.contains(&sftp.uri("in/sub/b.bin")), "{stdout}");
    // The bytes are on the server's disk.
    assert_eq!(read_tree(&sftp.local("in")), owned(&sample_tree()));
    assert_no_ssh_left(&sftp);

    let (stdout, _) = scitqctl_ok(&sftp, &["--json", "fetch", "list", "-R", &sftp.uri("in")]);
    assert_eq!(listed_sizes(&stdout), sample_sizes());

    let (_, stderr) = scitqctl_ok(
        &sftp,
        &["fetch", "sync", &src_arg, "--delete", &sftp.uri("in")],
    );
    assert!(
        stderr.contains("copied 0 file(s), 0 bytes; 3 unchanged; 0 deleted"),
        "{stderr}"
    );
    // A changed file is copied again, one gone locally is deleted on the server.
    std::fs::write(src.join("a.txt"), b"alpha, longer now\n").unwrap();
    std::fs::remove_file(src.join("sub/deeper/c.txt")).unwrap();
    let (_, stderr) = scitqctl_ok(
        &sftp,
        &["fetch", "sync", &src_arg, "--delete", &sftp.uri("in")],
    );
    assert!(
        stderr.contains("copied 1 file(s), 18 bytes; 1 unchanged; 1 deleted"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(sftp.local("in/a.txt")).unwrap(),
        b"alpha, longer now\n"
    );
    assert!(!sftp.local("in/sub/deeper/c.txt").exists());

    let dest = work.path().join("a.txt");
    let dest_arg = dest.display().to_string();
    scitqctl_ok(&sftp, &["fetch", "copy", &sftp.uri("in/a.txt"), &dest_arg]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"alpha, longer now\n");

    scitqctl_ok(&sftp, &["fetch", "delete", &sftp.uri("in")]);
    assert!(
        !sftp.local("in").exists(),
        "left after delete: {:?}",
        read_tree(&sftp.local("in")).keys()
    );
    assert_no_ssh_left(&sftp);

    // A missing file: a clear line naming the URI, and a non-zero exit.
    let missing = sftp.uri("in/none.txt");
    let (code, _, stderr) = scitqctl(&sftp, &["fetch", "copy", &missing, &dest_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim(), format!("error: {missing}: no such object"));
}

/// rclone itself, pointed at `conf`: what it sees is what scitq wrote.
fn rclone_lsl(conf: &Path, sftp: &SftpServer, target: &str) -> Vec<(String, u64)> {
    let rclone = scitq_tests::find_tool("RCLONE", "rclone");
    let out = Command::new(rclone)
        .arg("--config")
        .arg(conf)
        .args(["lsf", "-R", "--files-only", "--format", "ps", target])
        .envs(sftp.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", scitq_tests::describe(&out));
    let mut files: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (path, size) = line.split_once(';').unwrap();
            (path.to_string(), size.parse().unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn scitqctl_fetch_through_an_rclone_sftp_remote_agrees_with_rclone() {
    let sftp = SftpServer::start();
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("rclone.conf");
    let section = sftp.rclone_section("box", &sftp.key_file());
    let wrong = sftp.rclone_section("stranger", &sftp.wrong_key_file());
    std::fs::write(&conf, format!("{section}\n{wrong}")).unwrap();
    let conf_arg = conf.display().to_string();
    let src = work.path().join("src");
    write_tree(&src, &sample_tree());
    let src_arg = format!("{}/", src.display());
    let fetch = |args: &[&str]| {
        let mut all = vec!["fetch", "--rclone-config", &conf_arg];
        all.extend_from_slice(args);
        scitqctl(&sftp, &all)
    };

    // `box:in/` is relative to the login folder, as for rclone: under the served root.
    let (code, stdout, stderr) = fetch(&["copy", &src_arg, "box:in/"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("box:in/sub/b.bin"), "{stdout}");
    assert_eq!(read_tree(&sftp.local("in")), owned(&sample_tree()));
    assert_eq!(rclone_lsl(&conf, &sftp, "box:in"), sample_sizes());

    let (code, stdout, stderr) = fetch(&["--json", "list", "-R", "box:in"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed_sizes(&stdout), sample_sizes());
    // An absolute path names the same files.
    let absolute = format!("box:{}", sftp.local("in").display());
    let (code, stdout, stderr) = fetch(&["--json", "list", "-R", &absolute]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed_sizes(&stdout), sample_sizes());

    let (code, _, stderr) = fetch(&["sync", &src_arg, "--delete", "box:in"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("copied 0 file(s), 0 bytes; 3 unchanged; 0 deleted"),
        "{stderr}"
    );

    let down = work.path().join("down");
    let (code, _, stderr) = fetch(&["copy", "box:in/", &format!("{}/", down.display())]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_tree(&down), owned(&sample_tree()));

    let (code, _, stderr) = fetch(&["delete", "box:in/sub"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        rclone_lsl(&conf, &sftp, "box:in"),
        [("a.txt".to_string(), 6)]
    );
    assert_no_ssh_left(&sftp);

    // Bad input: one line naming the URI, and a non-zero exit.
    let (code, _, stderr) = fetch(&["copy", "box:in/none.txt", &down.display().to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim(), "error: box:in/none.txt: no such object");
    let (code, _, stderr) = fetch(&["list", "stranger:in"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("error: stranger:in: access denied"),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    assert_no_ssh_left(&sftp);
}

#[test]
fn known_hosts_file_makes_the_ssh_client_check_the_host_key() {
    let sftp = SftpServer::start();
    std::fs::write(sftp.local("a.txt"), "alpha\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("rclone.conf");
    let trusting = sftp.rclone_section("trusting", &sftp.key_file());
    let checking = sftp.rclone_section("checking", &sftp.key_file())
        + "known_hosts_file = ~/.ssh/known_hosts\n";
    std::fs::write(&conf, format!("{trusting}\n{checking}")).unwrap();
    let conf_arg = conf.display().to_string();
    let list = |target: &str| {
        scitqctl(
            &sftp,
            &["fetch", "--rclone-config", &conf_arg, "list", target],
        )
    };

    // The harness's known_hosts (which the test's ssh client reads in place of
    // ~/.ssh/known_hosts) holds the server's key: both remotes connect.
    for remote in ["trusting:", "checking:"] {
        let (code, stdout, stderr) = list(remote);
        assert_eq!(code, 0, "{remote}: {stderr}");
        assert!(stdout.contains("a.txt"), "{remote}: {stdout}");
    }
    sftp.distrust_host_key();
    let (code, _, stderr) = list("checking:");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: checking:"), "{stderr}");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    // Without known_hosts_file, as with rclone, any host key is taken.
    let (code, stdout, stderr) = list("trusting:");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("a.txt"), "{stdout}");
    assert_no_ssh_left(&sftp);
}

#[test]
fn a_task_takes_its_input_from_sftp_and_uploads_its_output_there() {
    let sftp = SftpServer::start();
    std::fs::create_dir_all(sftp.local("data")).unwrap();
    std::fs::write(
        sftp.local("data/s1.fastq"),
        "@r1\nACGT\n+\nIIII\n@r2\nTTGA\n+\nIIII\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("rclone.conf");
    std::fs::write(&conf, sftp.rclone_section("box", &sftp.key_file())).unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    let env = sftp.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = Agent::start_with_env(&server, "sftp-stager", 2, &[], &env);
    c.wait_worker_online("sftp-stager", CONNECT);

    let id = c.create_sh(
        "sftp",
        "n=$(grep -c '^@' \"$INPUT\"/s1.fastq); echo \"$n reads\" > \"$OUTPUT\"/count.txt; echo counted $n",
        &["--input", "box:data/s1.fastq", "--output", "box:results/s1/"],
    );
    let task = c.wait_task(id, "succeeded", Duration::from_secs(120));
    assert_eq!(c.output(id), "counted 2\n", "{task:#}");
    assert_eq!(
        std::fs::read_to_string(sftp.local("results/s1/count.txt")).unwrap(),
        "2 reads\n"
    );
    let executions = c.ctl_json(["task", "executions", &id.to_string()]);
    let uploaded = executions[0]["uploaded"].as_array().cloned().unwrap();
    assert_eq!(uploaded.len(), 1, "{executions:#}");
    assert_eq!(str_field(&uploaded[0], "uri"), "box:results/s1/count.txt");

    // A missing input fails the task as a download naming it; the command does not run.
    let id = c.create_sh(
        "sftp",
        "echo should not run",
        &["--input", "box:data/none.fastq"],
    );
    c.wait_task(id, "failed", CONNECT);
    let execution = &c.ctl_json(["task", "executions", &id.to_string()])[0];
    assert_eq!(execution["failure"], "download", "{execution:#}");
    let message = str_field(execution, "message");
    assert!(
        message.contains("box:data/none.fastq: no such object"),
        "{message}"
    );
    assert_eq!(c.output(id), "");
}
