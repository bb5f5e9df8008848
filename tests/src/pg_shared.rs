//! One PostgreSQL cluster for a whole test run, one database per test.
//!
//! nextest runs every test in a process of its own, so the cluster cannot live in one test's
//! memory: it lives in a known dir (`$TMPDIR/scitq-test-pg-UID/`, reachable by the `postgres`
//! user when the tests run as root), started by the first test that needs it, under a lock
//! file. Each test registers its pid there and gets a database of its own, dropped at its end.
//! A watchdog started with the cluster stops it once no registered test process has been alive
//! for [`IDLE_S`] seconds, so nothing is left running after the run (a later run starts it
//! again).

use std::fs::File;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::unistd::User;

use crate::client::describe;
use crate::postgres::{free_port, pg_bin_dir, runuser, system_user};
use crate::process::log_tail;

/// The cluster's superuser (trust authentication on loopback).
const USER: &str = "scitq";
/// How long the cluster outlives its last test process.
const IDLE_S: u32 = 30;

/// A database of its own on the shared cluster, dropped on drop.
pub struct PgDatabase {
    bin: PathBuf,
    port: u16,
    name: String,
    registration: PathBuf,
}

impl PgDatabase {
    /// Starts the shared cluster if it is not running, and creates a fresh database on it.
    pub fn create() -> PgDatabase {
        let cluster = Cluster::new();
        let lock = File::create(cluster.dir.join("lock")).expect("create the cluster lock file");
        lock.lock().expect("lock the shared cluster");
        let port = cluster.running_port().unwrap_or_else(|| cluster.start());
        let registration = cluster
            .dir
            .join("users")
            .join(std::process::id().to_string());
        File::create(&registration).expect("register this test with the shared cluster");
        drop(lock);

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let database = PgDatabase {
            bin: cluster.bin.clone(),
            port,
            name,
            registration,
        };
        if let Err(e) = database.run("createdb", &[]) {
            panic!("{e}");
        }
        database
    }

    /// `postgres://scitq@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn run(&self, program: &str, extra: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(extra)
            .arg(&self.name);
        let out = cmd.output().map_err(|e| format!("run {cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?} failed: {}", describe(&out)))
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // scitqd is stopped by now (the server drops first); --force ends what it left.
        if let Err(e) = self.run("dropdb", &["--force"]) {
            eprintln!("[harness] {e}");
        }
        let _ = std::fs::remove_file(&self.registration);
    }
}

/// Where the shared cluster lives and how to run its programs.
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<User>,
}

impl Cluster {
    fn new() -> Cluster {
        let uid = nix::unistd::getuid();
        let dir = std::env::temp_dir().join(format!("scitq-test-pg-{uid}"));
        std::fs::create_dir_all(dir.join("users")).expect("create the shared cluster's dir");
        let run_as = uid.is_root().then(system_user);
        Cluster {
            dir,
            bin: pg_bin_dir(),
            run_as,
        }
    }

    fn pg_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }

    fn port_file(&self) -> PathBuf {
        self.dir.join("port")
    }

    /// The port of a cluster that answers, if one does.
    fn running_port(&self) -> Option<u16> {
        let port: u16 = std::fs::read_to_string(self.port_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
            .ok()
            .map(|_| port)
    }

    /// A PostgreSQL program run as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            None => Command::new(program),
            Some(user) => {
                let mut cmd = Command::new(runuser());
                cmd.arg("-u").arg(&user.name).arg("--").arg(program);
                cmd
            }
        };
        cmd.current_dir(self.pg_dir());
        cmd
    }

    /// A fresh cluster (whatever a stopped one left is removed), its port, and its watchdog.
    fn start(&self) -> u16 {
        let pg = self.pg_dir();
        let _ = std::fs::remove_file(self.port_file());
        let _ = std::fs::remove_dir_all(&pg);
        std::fs::create_dir_all(pg.join("sock")).expect("create the cluster dir");
        if let Some(user) = &self.run_as {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the shared cluster's dir");
            for path in [pg.clone(), pg.join("sock")] {
                std::os::unix::fs::chown(&path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
        }
        let data = pg.join("data");
        let log = pg.join("postgres.log");
        let mut init = self.command("initdb");
        init.arg("-D").arg(&data).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        check(init, &log);
        let port = self.start_on_free_port(&data, &log);
        std::fs::write(self.port_file(), port.to_string()).expect("write the cluster's port");
        self.start_watchdog(&data);
        port
    }

    fn start_on_free_port(&self, data: &Path, log: &Path) -> u16 {
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=300",
                self.pg_dir().join("sock").display()
            );
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(data)
                .arg("-l")
                .arg(log)
                .args(["-w", "-t", "60", "-o", &options, "start"]);
            let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
            if out.status.success() {
                return port;
            }
            let tail = log_tail(log, 40);
            if !tail.contains("could not bind") && !tail.contains("already in use") {
                panic!(
                    "{cmd:?} failed: {}\n--- postgres log ---\n{tail}",
                    describe(&out)
                );
            }
        }
        panic!("the shared PostgreSQL cluster found no free port in 5 tries");
    }

    /// A shell loop, in a process group of its own (it outlives the test that starts it),
    /// that stops the cluster once no registered test process has lived for IDLE_S seconds.
    fn start_watchdog(&self, data: &Path) {
        let stop = self.command("pg_ctl");
        let mut stop_argv: Vec<String> = vec![stop.get_program().to_string_lossy().into_owned()];
        stop_argv.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        stop_argv.extend(
            [
                "-D",
                &data.display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ]
            .map(String::from),
        );
        let quoted: Vec<String> = stop_argv.iter().map(|a| crate::sh_quote(a)).collect();
        let script = format!(
            r#"dir={dir}; idle=0
exec 9>"$dir/lock"
while sleep 5; do
  flock 9
  live=0
  for f in "$dir"/users/*; do
    [ -e "$f" ] || continue
    if kill -0 "${{f##*/}}" 2>/dev/null; then live=1; else rm -f "$f"; fi
  done
  if [ "$live" = 1 ]; then idle=0; else idle=$((idle + 5)); fi
  if [ "$idle" -ge {IDLE_S} ]; then
    rm -f "$dir/port"; (cd "$dir/pg" && {stop}); flock -u 9; exit 0
  fi
  flock -u 9
done"#,
            dir = crate::sh_quote(&self.dir.display().to_string()),
            stop = quoted.join(" ")
        );
        let log = File::create(self.dir.join("watchdog.log")).expect("create the watchdog log");
        // The outer shell puts the loop in the background and ends at once: the loop is
        // nobody's child to wait for, and no zombie is left in the test process.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("(\n{script}\n) &"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log handle"))
            .stderr(log)
            .process_group(0)
            .status()
            .expect("start the shared cluster's watchdog");
        assert!(status.success(), "starting the watchdog: {status}");
    }
}

fn check(mut cmd: Command, log: &Path) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n--- postgres log ---\n{}",
            describe(&out),
            log_tail(log, 40)
        );
    }
}
