//! A `scitq-agent` serving a test server, with its own work dir.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use crate::client::apply_env;
use crate::process::{Proc, log_tail};
use crate::server::Server;
use crate::{bin, keep_on_panic, temp_dir};

/// A running scitq-agent. Dropping it kills it and the tasks it started.
pub struct Agent {
    name: String,
    proc: Proc,
    dir: TempDir,
    /// How it was started, to start it again on the same work dir.
    command: Vec<std::ffi::OsString>,
    /// Environment variables given at the start.
    env: Vec<(String, String)>,
    home: PathBuf,
    starts: u32,
}

impl Agent {
    /// `scitq-agent --server ADDR --name NAME --concurrency N --work-dir TMP
    /// --reconnect-max 1s EXTRA…`, in the server's HOME so it finds the worker token.
    /// Does not wait for the agent to connect (see `Client::wait_worker_online`).
    pub fn start(server: &Server, name: &str, concurrency: u32, extra: &[&str]) -> Agent {
        Agent::start_raw(server, name, &concurrency.to_string(), extra)
    }

    /// Like [`Agent::start`] with the concurrency given as text, to try bad values.
    pub fn start_raw(server: &Server, name: &str, concurrency: &str, extra: &[&str]) -> Agent {
        Agent::spawn(server, &server.addr(), name, concurrency, extra, &[], None)
    }

    /// A new agent process on a new work dir, under the name of `previous` and with its
    /// credential (`WORK_DIR/credential`): the same worker, as a machine that lost its
    /// work dir but kept its identity would be. (A new work dir without it is refused:
    /// the worker is bound to its credential.)
    pub fn start_as(server: &Server, previous: &Agent, concurrency: u32, extra: &[&str]) -> Agent {
        let credential = previous.work_dir().join("credential");
        Agent::spawn(
            server,
            &server.addr(),
            &previous.name,
            &concurrency.to_string(),
            extra,
            &[],
            Some(&credential),
        )
    }

    /// Like [`Agent::start`] with these environment variables set (and kept by
    /// [`Agent::start_again`]).
    pub fn start_with_env(
        server: &Server,
        name: &str,
        concurrency: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let concurrency = concurrency.to_string();
        Agent::spawn(server, &server.addr(), name, &concurrency, extra, env, None)
    }

    /// Like [`Agent::start`], reaching the server through `addr` (e.g. a [`crate::Proxy`]).
    pub fn start_via(
        server: &Server,
        addr: &str,
        name: &str,
        concurrency: u32,
        extra: &[&str],
    ) -> Agent {
        Agent::spawn(
            server,
            addr,
            name,
            &concurrency.to_string(),
            extra,
            &[],
            None,
        )
    }

    fn spawn(
        server: &Server,
        addr: &str,
        name: &str,
        concurrency: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        credential: Option<&std::path::Path>,
    ) -> Agent {
        let dir = temp_dir(&format!("scitq-agent-{name}-"));
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("create agent work dir");
        if let Some(credential) = credential {
            std::fs::copy(credential, work.join("credential")).expect("copy the credential");
        }
        let mut cmd = Command::new(bin("scitq-agent"));
        cmd.arg("--server")
            .arg(addr)
            .arg("--name")
            .arg(name)
            .arg("--concurrency")
            .arg(concurrency)
            .arg("--work-dir")
            .arg(&work)
            .arg("--reconnect-max")
            .arg("1s")
            .args(extra);
        let command = cmd.get_args().map(ToOwned::to_owned).collect();
        apply_env(&mut cmd, &server.home());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let log = dir.path().join("agent.log");
        let proc = Proc::spawn(&format!("scitq-agent {name}"), cmd, &log);
        Agent {
            name: name.to_string(),
            proc,
            dir,
            command,
            env,
            home: server.home(),
            starts: 1,
        }
    }

    /// Starts the agent again with the same arguments and work dir, once it has exited (after
    /// [`Agent::kill9`] or [`Agent::stop`]). Its log goes to a new file.
    pub fn start_again(&mut self) {
        assert!(self.proc.try_exit().is_some(), "the agent still runs");
        self.starts += 1;
        let mut cmd = Command::new(bin("scitq-agent"));
        cmd.args(&self.command);
        apply_env(&mut cmd, &self.home);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.dir.path().join(format!("agent-{}.log", self.starts));
        // What the previous process left runs on (its supervisor and tasks): the new one
        // adopts it, and answers for it when dropped.
        let orphans = self.proc.take_orphans();
        self.proc = Proc::spawn(
            &format!("scitq-agent {} (start {})", self.name, self.starts),
            cmd,
            &log,
        );
        self.proc.add_orphans(orphans);
    }

    /// Drops an environment variable given at the start, for the next [`Agent::start_again`].
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        self.proc.pid()
    }

    /// SIGKILL to the agent alone; the tasks it started are killed when it is dropped.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.proc.terminate(grace)
    }

    /// Waits at most `timeout` for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.proc.log(), lines)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.proc.print_log_tail(60);
        }
        keep_on_panic(&mut self.dir, "agent");
    }
}
