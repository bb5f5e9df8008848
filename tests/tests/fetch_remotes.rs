//! `scitqctl fetch` and the remotes scitqd knows, through the real binaries: a URI naming a
//! remote of scitqd's `--rclone-config` works with no local rclone.conf; `--rclone-config` and
//! `SCITQ_RCLONE_CONFIG` replace scitqd's remotes; rclone's default file fills in what scitqd
//! lacks; a worker token, an unreachable or a silent scitqd and an unknown remote give errors
//! naming the remote and where it was looked for, and plain URIs never ask scitqd.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scitq_tests::{Client, S3Server, Server, ServerOpts, describe};

/// One object reachable under the same URI two ways: `lab:/tmp/<dir>/x.txt` is the object
/// `<dir>/x.txt` of bucket `tmp` when `lab` is scitqd's S3 remote, and the local file
/// `/tmp/<dir>/x.txt` when `lab` is a `type = local` remote. What a copy gets says which
/// definition of `lab` was used.
struct TwoWays {
    _dir: tempfile::TempDir,
    uri: String,
}

const FROM_S3: &str = "from scitqd's remote\n";
const FROM_FILE: &str = "from a local rclone.conf\n";

impl TwoWays {
    fn new(s3: &S3Server) -> TwoWays {
        let dir = tempfile::Builder::new()
            .prefix("scitq-fetch")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(&path, FROM_FILE).unwrap();
        let key = path.strip_prefix("/tmp/").unwrap().display().to_string();
        s3.create_bucket("tmp");
        s3.put_object("tmp", &key, FROM_S3.as_bytes());
        TwoWays {
            uri: format!("lab:{}", path.display()),
            _dir: dir,
        }
    }
}

/// Runs a prepared scitqctl command; returns (exit code, stdout, stderr).
fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("hush"),
        "a secret of the rclone config was printed: {}",
        describe(&out)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// `scitqctl --server ADDR ARGS` with the test client's home (its client config holds the
/// admin token; it has no rclone.conf).
fn ctl(c: &Client, args: &[&str]) -> Command {
    let mut cmd = c.command();
    cmd.args(args);
    cmd
}

/// `fetch copy EXTRA… URI` to a fresh local file; returns what it holds, and stderr.
fn fetched(c: &Client, extra: &[&str], uri: &str, env: &[(&str, &Path)]) -> (String, String) {
    let dest = c.scratch_path("fetched.txt");
    let _ = std::fs::remove_file(&dest);
    let mut cmd = ctl(c, &["fetch", "copy"]);
    cmd.args(extra).arg(uri).arg(&dest);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, 0, "fetch copy {uri}: {stderr}");
    (std::fs::read_to_string(&dest).unwrap(), stderr)
}

fn server_with_remote(s3: &S3Server, dir: &Path) -> Server {
    let conf = dir.join("scitqd-rclone.conf");
    let secret = "secret_access_key = hush\n";
    let text = s3.rclone_section("lab").replace(
        &format!("secret_access_key = {}\n", scitq_tests::S3_SECRET_KEY),
        secret,
    );
    assert!(text.contains(secret), "{text}");
    std::fs::write(&conf, text).unwrap();
    Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    )
}

fn write_file(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn fetch_uses_scitqds_remotes_unless_a_file_is_given() {
    let s3 = S3Server::start(&["data"]);
    let work = tempfile::tempdir().unwrap();
    let server = server_with_remote(&s3, work.path());
    let c = server.client();
    let object = TwoWays::new(&s3);
    assert!(
        !server.home().join(".config/rclone").exists(),
        "the client must have no rclone.conf of its own"
    );

    // No local rclone.conf at all: scitqd's remote is used, both ways.
    let (got, _) = fetched(&c, &[], &object.uri, &[]);
    assert_eq!(got, FROM_S3);
    let upload = write_file(&work.path().join("up.txt"), "uploaded\n");
    let (code, _, stderr) = run(ctl(
        &c,
        &[
            "fetch",
            "copy",
            &upload.display().to_string(),
            "lab:data/up/",
        ],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s3.get_object("data", "up/up.txt").unwrap(), b"uploaded\n");

    // A file given by flag or env is used alone: its `lab` wins, and scitqd is not asked.
    let file = write_file(&work.path().join("mine.conf"), "[lab]\ntype = local\n");
    let flag = ["--rclone-config", file.to_str().unwrap()];
    let (got, _) = fetched(&c, &flag, &object.uri, &[]);
    assert_eq!(got, FROM_FILE, "--rclone-config");
    let (got, _) = fetched(&c, &[], &object.uri, &[("SCITQ_RCLONE_CONFIG", &file)]);
    assert_eq!(got, FROM_FILE, "SCITQ_RCLONE_CONFIG");

    let other = write_file(&work.path().join("other.conf"), "[other]\ntype = local\n");
    let (code, _, stderr) = run(ctl(
        &c,
        &[
            "fetch",
            "--rclone-config",
            other.to_str().unwrap(),
            "list",
            "lab:data",
        ],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: invalid uri \"lab:data\": unknown rclone remote lab (not in {})",
            other.display()
        )
    );

    // A worker token may not read scitqd's remotes: the remote is then unknown, and the
    // error says why scitqd did not tell.
    let (code, _, stderr) = run(ctl(
        &c,
        &[
            "--token",
            server.worker_token(),
            "fetch",
            "list",
            "lab:data",
        ],
    ));
    assert_eq!(code, 2, "{stderr}");
    let expected = format!(
        "error: invalid uri \"lab:data\": unknown rclone remote lab (scitqd at {}: this call \
         needs an admin token",
        server.addr()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&format!(
            "{} does not exist)",
            server.home().join(".config/rclone/rclone.conf").display()
        )),
        "{stderr}"
    );
}

#[test]
fn rclone_default_file_fills_in_what_scitqd_lacks() {
    let s3 = S3Server::start(&["data"]);
    let work = tempfile::tempdir().unwrap();
    let server = server_with_remote(&s3, work.path());
    let c = server.client();
    let object = TwoWays::new(&s3);
    // rclone's own file, in another XDG_CONFIG_HOME (the token then comes by flag).
    let xdg = work.path().join("xdg");
    let default = write_file(
        &xdg.join("rclone/rclone.conf"),
        "[lab]\ntype = local\n\n[mine]\ntype = local\n",
    );
    let token = ["--token", server.admin_token()];
    let env = [("XDG_CONFIG_HOME", xdg.as_path())];

    // `lab` is in both: scitqd's definition, and a note says so.
    let (got, stderr) = fetched(&c, &token, &object.uri, &env);
    assert_eq!(got, FROM_S3);
    assert!(
        stderr.contains(&format!(
            "note: remote lab: using scitqd's definition, not the one in {}",
            default.display()
        )),
        "{stderr}"
    );
    // `mine` is only in the local file.
    let mine = object.uri.replacen("lab:", "mine:", 1);
    let (got, stderr) = fetched(&c, &token, &mine, &env);
    assert_eq!(got, FROM_FILE);
    assert!(!stderr.contains("note:"), "{stderr}");

    // Unknown everywhere: the error names the remote and both places.
    let mut cmd = ctl(&c, &token);
    cmd.args(["fetch", "list", "nowhere:x"]).envs(env);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: invalid uri \"nowhere:x\": unknown rclone remote nowhere (not in the rclone \
             config of scitqd at {}; not in {})",
            server.addr(),
            default.display()
        )
    );
}

#[test]
fn fetch_does_without_scitqd_and_never_waits_long_for_it() {
    // A server without an rclone config says so.
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let local_default = server.home().join(".config/rclone/rclone.conf");
    let (code, _, stderr) = run(ctl(&c, &["fetch", "list", "nowhere:x"]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: invalid uri \"nowhere:x\": unknown rclone remote nowhere (scitqd at {} has \
             no rclone config; {} does not exist)",
            server.addr(),
            local_default.display()
        )
    );

    // Nothing listens on the port: refused at once.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut cmd = c.bare_command();
    cmd.args(["--server", &closed, "fetch", "list", "nowhere:x"]);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: invalid uri \"nowhere:x\": unknown rclone remote nowhere (cannot reach \
             scitqd at {closed}"
        )),
        "{stderr}"
    );

    // A server that accepts connections and never answers (the kernel completes the
    // handshakes of a listener nobody accepts from).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let files = tempfile::tempdir().unwrap();
    let src = write_file(&files.path().join("src.txt"), "plain\n");
    let dest = files.path().join("dest.txt");

    // Plain URIs do not ask scitqd at all.
    let mut cmd = c.bare_command();
    cmd.args(["--server", &silent_addr, "fetch", "copy"])
        .arg(format!("file://{}", src.display()))
        .arg(&dest);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "plain\n");
    silent.set_nonblocking(true).unwrap();
    assert_eq!(
        silent.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "fetch of a plain URI connected to scitqd"
    );

    // A remote in rclone's own file: used after a bounded wait, with a warning.
    let mine = write_file(&local_default, "[mine]\ntype = local\n");
    let started = Instant::now();
    let mut cmd = c.bare_command();
    cmd.args(["--server", &silent_addr, "fetch", "copy"])
        .arg(format!("mine:{}", src.display()))
        .arg(files.path().join("via-mine.txt"));
    let (code, _, stderr) = run(cmd);
    let waited = started.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(files.path().join("via-mine.txt")).unwrap(),
        "plain\n"
    );
    assert!(
        stderr.contains(&format!(
            "warning: scitqd at {silent_addr}: no answer within 5s; using the remotes of {}",
            mine.display()
        )),
        "{stderr}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "fetch waited {waited:?} for a silent scitqd"
    );
}
