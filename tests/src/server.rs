//! A `scitqd` in a temp dir on a loopback port, with its own HOME for every process it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nix::unistd::Pid;
use tempfile::TempDir;

use crate::client::{Client, apply_env};
use crate::pg_shared::PgDatabase;
use crate::process::{Proc, log_tail};
use crate::proxy::Proxy;
use crate::wait::poll;
use crate::{bin, keep_on_panic, temp_dir};

/// How long scitqd may take to start listening (migrations on a cold PostgreSQL included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean stop may take before the harness uses SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the data dir (scitqd's default).
    Sqlite,
    /// A database of its own on the PostgreSQL cluster shared by the test run.
    Postgres,
}

/// Options of a test server.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// `--database-url`; none means SQLite in the data dir.
    pub database_url: Option<String>,
    /// `--lease`, how long a disconnected worker keeps its executions.
    pub lease: Option<String>,
    /// More arguments, appended as given.
    pub args: Vec<String>,
}

impl ServerOpts {
    pub fn lease(mut self, lease: &str) -> Self {
        self.lease = Some(lease.to_string());
        self
    }

    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }
}

/// A running (or killed, then restarted) scitqd.
///
/// Layout of its temp dir: `home/` (HOME and XDG_CONFIG_HOME=home/.config of every process the
/// harness starts for it, so scitqctl and scitq-agent find the client config scitqd writes),
/// `data/` (the data dir), `scitqd.log` (stdout and stderr of every start), `files/` (scratch
/// for tests: task lists, flag files).
pub struct Server {
    proc: Option<Proc>,
    addr: SocketAddr,
    /// `addr` as text, shared with every [`Client`] of this server.
    shared_addr: Arc<RwLock<String>>,
    /// A stable address in front of scitqd for agents that must find it after a restart
    /// (see [`Server::stable_addr`]).
    front: Option<Proxy>,
    admin_token: String,
    worker_token: String,
    opts: ServerOpts,
    dir: TempDir,
    /// Declared after `proc` so the database outlives the server using it.
    postgres: Option<PgDatabase>,
}

impl Server {
    /// Starts scitqd on `127.0.0.1:0` with SQLite (or `opts.database_url`) and waits until
    /// it listens.
    pub fn start(opts: ServerOpts) -> Server {
        let dir = temp_dir("scitq-server-");
        for sub in ["home/.config", "data", "files"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create server dirs");
        }
        let mut server = Server {
            proc: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared_addr: Arc::new(RwLock::new(String::new())),
            front: None,
            admin_token: String::new(),
            worker_token: String::new(),
            opts,
            dir,
            postgres: None,
        };
        server.spawn("127.0.0.1:0");
        server
    }

    /// Starts scitqd on the given backend: on PostgreSQL, a fresh database on the cluster
    /// shared by the test run.
    pub fn start_on(backend: Backend, opts: ServerOpts) -> Server {
        match backend {
            Backend::Sqlite => Server::start(opts),
            Backend::Postgres => {
                let postgres = PgDatabase::create();
                let mut server = Server::start(opts.database_url(&postgres.url()));
                server.postgres = Some(postgres);
                server
            }
        }
    }

    fn spawn(&mut self, listen: &str) {
        let data = self.data_dir();
        let addr_file = data.join("scitqd.addr");
        // A SIGKILLed scitqd leaves its address file: never mistake it for the new one.
        let _ = std::fs::remove_file(&addr_file);

        let mut cmd = Command::new(bin("scitqd"));
        cmd.arg("--listen").arg(listen).arg("--data-dir").arg(&data);
        if let Some(url) = &self.opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(lease) = &self.opts.lease {
            cmd.arg("--lease").arg(lease);
        }
        cmd.args(&self.opts.args);
        apply_env(&mut cmd, &self.home());
        let mut proc = Proc::spawn("scitqd", cmd, &self.log_path());

        let mut previous = None;
        let addr = poll(START_TIMEOUT, "scitqd to write scitqd.addr", || {
            if let Some(status) = proc.try_exit() {
                proc.print_log_tail(60);
                panic!("scitqd exited during start-up with {status}");
            }
            let text = std::fs::read_to_string(&addr_file).map_err(|e| e.to_string())?;
            let addr = text
                .trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{text:?}: {e}"))?;
            // A file caught mid-write may hold a shorter, valid-looking port: trust a complete
            // line, or the same address read twice.
            if text.ends_with('\n') || previous == Some(addr) {
                return Ok(addr);
            }
            previous = Some(addr);
            Err(format!("{text:?} (checking it again)"))
        });
        assert!(
            addr.ip().is_loopback(),
            "scitqd listens on {addr}, not on loopback"
        );
        // The address file says scitqd is ready: the client config scitqctl and scitq-agent
        // read must be there by then, or a client started at once fails for no visible reason.
        let config = self.home().join(".config/scitq/config.toml");
        assert!(
            config.is_file(),
            "scitqd wrote {} before the client config {} (the address file must come last)",
            addr_file.display(),
            config.display()
        );
        self.addr = addr;
        *self.shared_addr.write().expect("server address") = addr.to_string();
        if let Some(front) = &self.front {
            front.retarget(&addr.to_string());
        }
        self.admin_token = read_token(&data.join("admin.token"));
        self.worker_token = read_token(&data.join("worker.token"));
        self.proc = Some(proc);
    }

    /// `HOST:PORT` the server listens on now (a restart picks a new port).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// An address that reaches this server across restarts: a proxy held by the harness
    /// for the server's life, pointed at each new port. Agents that must reconnect after
    /// [`Server::restart`] or [`Server::start_again`] use it ([`crate::Agent::start_via`]).
    pub fn stable_addr(&mut self) -> String {
        let addr = self.addr();
        self.front.get_or_insert_with(|| Proxy::start(&addr)).addr()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn worker_token(&self) -> &str {
        &self.worker_token
    }

    /// HOME of every process started for this server.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch dir for the test (task lists, flag files), removed with the server.
    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("scitqd.log")
    }

    pub fn pid(&self) -> Pid {
        self.proc.as_ref().expect("scitqd is running").pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.try_exit().is_none())
    }

    /// A cheap handle running scitqctl against this server, usable from other threads.
    pub fn client(&self) -> Client {
        Client::following(self.shared_addr.clone(), self.home(), self.files_dir())
    }

    /// `scitqctl --server ADDR ARGS…`.
    pub fn ctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.client().ctl(args)
    }

    /// `scitqctl --server ADDR ARGS… --json`, parsed; panics when the command fails.
    pub fn ctl_json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.client().ctl_json(args)
    }

    /// SIGKILL, as in a crash; nothing is flushed. Processes it started live on, as after a
    /// crash (the local provider's instances: a test that recruits deletes them itself).
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
            proc.take_orphans();
        }
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after a grace period).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate(STOP_GRACE);
        }
    }

    /// Stops the server if it runs, then starts it again on the same data dir.
    ///
    /// It gets a new port: the old one, free meanwhile, may have been taken by another test's
    /// process. Clients follow; agents reach it through [`Server::stable_addr`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn("127.0.0.1:0");
    }

    /// Starts a stopped or killed server again on the same data dir, on a new port (see
    /// [`Server::restart`]).
    pub fn start_again(&mut self) {
        assert!(self.proc.is_none(), "scitqd is still running");
        self.spawn("127.0.0.1:0");
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// The PostgreSQL database, if the server uses one.
    pub fn postgres(&self) -> Option<&PgDatabase> {
        self.postgres.as_ref()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- [harness] last 80 lines of scitqd log ({}) -----\n{}\n----- end of scitqd log -----",
                self.log_path().display(),
                self.log_tail(80)
            );
        }
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
        keep_on_panic(&mut self.dir, "scitqd");
    }
}

fn read_token(path: &Path) -> String {
    let token = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read token {}: {e}", path.display()));
    let token = token.trim().to_string();
    assert!(!token.is_empty(), "{} is empty", path.display());
    token
}
