//! A throwaway PostgreSQL cluster: `initdb` in a temp dir, `pg_ctl` on a free loopback port.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and
//! run as the `postgres` system user (created by Debian's package) through `runuser`.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use tempfile::TempDir;

use crate::client::describe;
use crate::process::log_tail;
use crate::{keep_on_panic, temp_dir};

/// The cluster's superuser and the database created for the test.
const USER: &str = "scitq";
const DATABASE: &str = "scitq";
/// System user that runs the cluster when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// A running PostgreSQL cluster, stopped (`-m immediate`) and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    port: u16,
    run_as: Option<User>,
    dir: TempDir,
}

impl Postgres {
    /// Creates and starts a cluster with a database `scitq`; see [`Postgres::url`].
    pub fn start() -> Postgres {
        let bin = pg_bin_dir();
        let run_as = if nix::unistd::getuid().is_root() {
            Some(system_user())
        } else {
            None
        };
        let dir = temp_dir("scitq-pg-");
        let pg = dir.path().join("pg");
        std::fs::create_dir(&pg).expect("create the cluster dir");
        std::fs::create_dir(pg.join("sock")).expect("create the socket dir");
        if let Some(user) = &run_as {
            // The cluster's user must reach its dirs: open the temp dir, give it pg/.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the cluster's temp dir");
            for path in [pg.clone(), pg.join("sock")] {
                std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .unwrap_or_else(|e| panic!("chown {} to {SYSTEM_USER}: {e}", path.display()));
            }
        }
        let mut postgres = Postgres {
            bin,
            port: 0,
            run_as,
            dir,
        };
        postgres.init();
        postgres.start_on_free_port();
        postgres.create_database();
        postgres
    }

    /// `postgres://scitq@127.0.0.1:PORT/scitq` (trust authentication on loopback).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn pg_dir(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn data_dir(&self) -> PathBuf {
        self.pg_dir().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.pg_dir().join("postgres.log")
    }

    /// A command running a PostgreSQL program as the cluster's user.
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            None => Command::new(program),
            Some(user) => {
                let mut cmd = Command::new(runuser());
                cmd.arg("-u").arg(&user.name).arg("--").arg(program);
                cmd
            }
        };
        // The cluster's user may not be allowed into the caller's working dir.
        cmd.current_dir(self.pg_dir());
        cmd
    }

    fn run(&self, mut cmd: Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{cmd:?} failed: {}\n--- postgres log ---\n{}",
                describe(&out),
                log_tail(&self.log_path(), 40)
            );
        }
        out
    }

    fn init(&self) {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        self.run(cmd);
    }

    /// A port picked free can be taken before the server binds it: try a few.
    fn start_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            let options = format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                self.port,
                self.pg_dir().join("sock").display()
            );
            let mut cmd = self.pg_command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "-o", &options, "start"]);
            let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
            if out.status.success() {
                return;
            }
            let log = log_tail(&self.log_path(), 40);
            if !log.contains("could not bind") && !log.contains("already in use") {
                panic!(
                    "{cmd:?} failed: {}\n--- postgres log ---\n{log}",
                    describe(&out)
                );
            }
        }
        panic!("PostgreSQL found no free port in 5 tries");
    }

    fn create_database(&self) {
        let mut cmd = Command::new(self.bin.join("createdb"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            DATABASE,
        ]);
        self.run(cmd);
    }

    fn postmaster_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- [harness] last 30 lines of postgres log -----\n{}\n----- end of postgres log -----",
                log_tail(&self.log_path(), 30)
            );
        }
        let pid = self.postmaster_pid();
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "20", "stop"]);
        let stopped = cmd.output().is_ok_and(|out| out.status.success());
        if !stopped && let Some(pid) = pid {
            let _ = kill(pid, Signal::SIGKILL);
        }
        keep_on_panic(&mut self.dir, "postgres");
    }
}

/// The bin dir of the newest PostgreSQL under /usr/lib/postgresql (Debian's layout), or
/// `SCITQ_PG_BIN`.
pub(crate) fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCITQ_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin: install Debian's \
             postgresql package (scripts/test does) or set SCITQ_PG_BIN"
        ),
    }
}

/// The `postgres` system user, created when missing (root only gets here).
pub(crate) fn system_user() -> User {
    if let Some(user) = User::from_name(SYSTEM_USER).expect("read the user database") {
        return user;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ])
        .status()
        .expect("run useradd");
    assert!(status.success(), "useradd {SYSTEM_USER} failed: {status}");
    User::from_name(SYSTEM_USER)
        .expect("read the user database")
        .unwrap_or_else(|| panic!("user {SYSTEM_USER} missing after useradd"))
}

pub(crate) fn runuser() -> &'static Path {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("runuser (util-linux) is needed to run PostgreSQL as root")
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
