//! Running scitqctl against a test server, and the queries tests share.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::bin;
use crate::process::output_within;
use crate::wait::poll;

/// How long one scitqctl command may run before the test fails naming it (`launch` and
/// `task wait` run until a task ends, so it is generous).
const CTL_TIMEOUT: Duration = Duration::from_secs(300);

/// Statuses a task does not leave by itself.
const FINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "canceled"];

/// Sets up the environment of a process the harness starts: its own HOME and
/// XDG_CONFIG_HOME, none of the caller's `SCITQ_*` settings, and `RUST_LOG` from
/// `SCITQ_TEST_LOG` (default `info`).
pub(crate) fn apply_env(cmd: &mut Command, home: &Path) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SCITQ_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("SCITQ_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
        );
}

/// Runs scitqctl against one server. Cheap to clone and usable from any thread.
#[derive(Clone, Debug)]
pub struct Client {
    /// Shared with the [`crate::Server`] it came from, which restarts on a new port: a client
    /// made before a restart follows the server.
    addr: Arc<RwLock<String>>,
    home: PathBuf,
    files: PathBuf,
    /// More environment for every scitqctl it runs (e.g. `SSL_CERT_FILE`).
    env: Vec<(OsString, OsString)>,
}

impl Client {
    pub fn new(addr: String, home: PathBuf, files: PathBuf) -> Client {
        Client::following(Arc::new(RwLock::new(addr)), home, files)
    }

    pub(crate) fn following(addr: Arc<RwLock<String>>, home: PathBuf, files: PathBuf) -> Client {
        Client {
            addr,
            home,
            files,
            env: Vec::new(),
        }
    }

    /// The same client, running scitqctl with `key=value` in its environment too.
    pub fn with_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Client {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn addr(&self) -> String {
        self.addr.read().expect("client address").clone()
    }

    /// `scitqctl --server ADDR` with the test environment; add arguments and run it.
    pub fn command(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--server").arg(self.addr());
        cmd
    }

    /// `scitqctl` with the test environment (the client config in HOME) but no `--server`.
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(bin("scitqctl"));
        apply_env(&mut cmd, &self.home);
        // scitqctl's own logs would only clutter the stderr tests look at.
        cmd.env_remove("RUST_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `scitqctl --server ADDR ARGS…`, whatever its outcome.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        output_within(&mut cmd, CTL_TIMEOUT)
    }

    /// Like [`Client::ctl`], and panics with the output unless it succeeded; returns stdout.
    pub fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.ctl(&args);
        if !out.status.success() {
            panic!("scitqctl {args:?} failed: {}", describe(&out));
        }
        String::from_utf8(out.stdout).expect("scitqctl stdout is UTF-8")
    }

    /// `scitqctl ARGS… --json`, parsed (`--json` is added when missing).
    pub fn ctl_json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        if !args.iter().any(|a| a == "--json") {
            args.push("--json".into());
        }
        let stdout = self.ctl_ok(&args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("scitqctl {args:?} printed invalid JSON ({e}): {stdout}"))
    }

    /// `task create ARGS…`; returns the new id.
    pub fn create<S: AsRef<OsStr>>(&self, args: &[S]) -> i64 {
        let mut all = vec![OsStr::new("task").to_owned(), "create".into()];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let stdout = self.ctl_ok(&all);
        parse_id(stdout.trim())
    }

    /// `task create --shell [--batch B] -- SCRIPT`; returns the new id.
    pub fn create_sh(&self, batch: &str, script: &str, extra: &[&str]) -> i64 {
        let mut args = vec!["--shell", "--batch", batch];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", script]);
        self.create(&args)
    }

    /// `task create --from-file FILE ARGS…` with one command per line; returns the ids.
    pub fn create_from_file(&self, commands: &[String], args: &[&str]) -> Vec<i64> {
        let file = self.scratch_file("tasks", &(commands.join("\n") + "\n"));
        let mut all: Vec<&OsStr> = vec!["task".as_ref(), "create".as_ref()];
        all.extend(args.iter().map(|a| OsStr::new(*a)));
        all.extend([OsStr::new("--from-file"), file.as_os_str()]);
        let stdout = self.ctl_ok(&all);
        let ids: Vec<i64> = stdout.lines().map(|l| parse_id(l.trim())).collect();
        assert_eq!(
            ids.len(),
            commands.len(),
            "task create --from-file printed {} ids for {} commands",
            ids.len(),
            commands.len()
        );
        ids
    }

    /// Writes a file in the server's scratch dir and returns its path.
    pub fn scratch_file(&self, prefix: &str, content: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self
            .files
            .join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A path in the scratch dir that does not exist yet (for flag files).
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.files.join(name)
    }

    /// `task list ARGS… --json`.
    pub fn tasks(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["task", "list"];
        all.extend_from_slice(args);
        as_array(self.ctl_json(&all), "task list")
    }

    /// `task show ID --json`: the task with its `executions`.
    pub fn task(&self, id: i64) -> Value {
        self.ctl_json(["task", "show", &id.to_string()])
    }

    /// The status of a task, from `task show`.
    pub fn status(&self, id: i64) -> String {
        str_field(&self.task(id), "status")
    }

    /// `task output ID`: the task's stdout.
    pub fn output(&self, id: i64) -> String {
        self.ctl_ok(["task", "output", &id.to_string()])
    }

    /// `worker list --json`.
    pub fn workers(&self) -> Vec<Value> {
        as_array(self.ctl_json(["worker", "list"]), "worker list")
    }

    /// `batch list --json`.
    pub fn batches(&self) -> Vec<Value> {
        as_array(self.ctl_json(["batch", "list"]), "batch list")
    }

    /// How many tasks exist, over all batches.
    pub fn task_count(&self) -> usize {
        self.tasks(&[]).len()
    }

    /// Waits until the worker named `name` is online; returns its id.
    pub fn wait_worker_online(&self, name: &str, timeout: Duration) -> i64 {
        poll(timeout, format!("worker {name} to be online"), || {
            let workers = self.workers();
            match workers.iter().find(|w| w["name"] == name) {
                Some(w) if w["status"] == "online" => Ok(as_id(&w["id"])),
                _ => Err(Value::Array(workers).to_string()),
            }
        })
    }

    /// Waits until task `id` reaches `want`; panics at once if it ends in another final
    /// status. Returns `task show --json`.
    pub fn wait_task(&self, id: i64, want: &str, timeout: Duration) -> Value {
        poll(timeout, format!("task {id} to be {want}"), || {
            let task = self.task(id);
            let status = str_field(&task, "status");
            if status == want {
                return Ok(task);
            }
            if FINAL_STATUSES.contains(&status.as_str()) && task["retry_left"] == 0 {
                panic!("task {id} ended {status}, not {want}: {task:#}");
            }
            Err(task.to_string())
        })
    }

    /// Waits until `n` tasks of `batch` succeeded; panics at once if one failed.
    pub fn wait_batch_succeeded(&self, batch: &str, n: u64, timeout: Duration) {
        poll(
            timeout,
            format!("{n} tasks of batch {batch} to succeed"),
            || {
                let batches = self.batches();
                let Some(found) = batches.iter().find(|b| b["name"] == batch) else {
                    return Err(Value::Array(batches).to_string());
                };
                let counts = &found["counts"];
                let failed = counts["failed"].as_u64().unwrap_or(0);
                if failed > 0 {
                    panic!("{failed} tasks of batch {batch} failed: {found}");
                }
                if counts["succeeded"].as_u64().unwrap_or(0) >= n {
                    Ok(())
                } else {
                    Err(found.to_string())
                }
            },
        )
    }
}

/// One readable paragraph about a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        clip(&String::from_utf8_lossy(&out.stdout)),
        clip(&String::from_utf8_lossy(&out.stderr))
    )
}

fn clip(text: &str) -> String {
    const MAX: usize = 4000;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn parse_id(text: &str) -> i64 {
    text.parse()
        .unwrap_or_else(|e| panic!("expected a task id, got {text:?}: {e}"))
}

fn as_array(value: Value, what: &str) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("{what} --json printed {other}, not an array"),
    }
}

/// A string field of a JSON object ("" when missing).
pub fn str_field(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

/// An id from JSON, written as a number or as a string of digits.
pub fn as_id(value: &Value) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("id {n} is not an i64")),
        Value::String(s) => parse_id(s),
        other => panic!("expected an id, got {other}"),
    }
}

/// Quotes a string for sh.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A sh snippet that waits for `path` to exist, then goes on; it gives up (exit 97) after
/// about two minutes so that a failed test leaves no task running forever.
pub fn wait_for_file_sh(path: &Path) -> String {
    let p = sh_quote(&path.to_string_lossy());
    format!(
        "i=0; while [ ! -e {p} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; [ -e {p} ] || exit 97"
    )
}
