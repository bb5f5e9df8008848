//! The task supervisor: one small process per work dir (the agent binary run as
//! `scitq-agent __supervise WORK_DIR`) that is the parent of every native task, outlives the
//! agent, and fences its tasks on the worker's lease.
//!
//! Why a separate process: an agent that dies (SIGKILL, a crash, an upgrade) must neither take
//! its tasks down nor leave them unsupervised. The supervisor spawns each native task on the
//! agent's request (its stdout and stderr opened by the agent on the spool files and passed
//! along, so no pipe ties the task to the agent), waits for it, and tells the agent how it
//! ended; while no agent is connected it writes that end to `exec-<id>/exit`, where a
//! restarted agent finds it. A restarted agent connects to the supervisor already running and
//! adopts the tasks it still holds (see `scan::scan`).
//!
//! The fence (as HTCondor's job leases): the agent keeps `WORK_DIR/lease` holding the time
//! until which the server keeps its executions (see [`crate::lease`]); once it has passed, the
//! supervisor kills every task's process group and the containers of the work dir, whether an
//! agent is alive or not, so the server may hand them to another worker. The live agent does
//! the same on its own clock.
//!
//! One process for all tasks, not one per task: a task costs a message each way and no extra
//! process. [`serve`] is the supervisor's loop; [`Supervisor`] is the agent's handle on it.

pub mod serve;
pub mod wire;

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::state::ExecutionId;
use wire::{Channel, Reply, Request};
pub use wire::{Exit, SpawnError};

/// The supervisor's socket in the work dir.
pub const SOCKET: &str = "supervisor.sock";
/// Its lock: one supervisor per work dir.
pub const LOCK: &str = "supervisor.lock";
/// Its log (stderr) in the work dir.
pub const LOG: &str = "supervisor.log";
/// The hidden subcommand that runs it.
pub const SUBCOMMAND: &str = "__supervise";
/// Where a task's end is recorded in its work dir when no agent could take it.
pub const EXIT_FILE: &str = "exit";

/// How long a starting supervisor may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot start the task supervisor {}: {source}", exe.display())]
    Start { exe: PathBuf, source: io::Error },
    #[error("cannot connect to the task supervisor at {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the task supervisor at {} speaks version {found}, not {}", path.display(), wire::VERSION)]
    Version { path: PathBuf, found: u32 },
    #[error("cannot reach the task supervisor: {0}")]
    Send(io::Error),
    #[error("lost the task supervisor")]
    Lost,
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// What the agent waits on for one task.
#[derive(Debug, Default)]
struct Slot {
    spawned: Option<oneshot::Sender<Result<u32, SpawnError>>>,
    waiter: Option<oneshot::Sender<Exit>>,
    /// An end that came before anyone waited for it (an adopted task's).
    exit: Option<Exit>,
}

type Slots = Arc<Mutex<HashMap<ExecutionId, Slot>>>;

/// The agent's connection to its supervisor.
#[derive(Debug)]
pub struct Supervisor {
    channel: Arc<Channel>,
    slots: Slots,
    /// Ends recorded in `state.json` that the supervisor has not heard of yet: they go along
    /// with the next `Spawn` (or in `Done`s at [`Supervisor::flush_done`]), saving the
    /// supervisor a wake-up per task.
    done: Mutex<Vec<ExecutionId>>,
    /// The tasks the supervisor held when the agent connected, with their pids.
    held: HashMap<ExecutionId, u32>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Resolves to a task's end; an error means the supervisor was lost.
pub type ExitWaiter = oneshot::Receiver<Exit>;

impl Supervisor {
    /// Connects to the supervisor of `work_dir`, starting one if none listens. The caller holds
    /// the work dir's lock, so no other agent starts one at the same time.
    pub async fn connect_or_start(work_dir: &Path) -> Result<Supervisor, SupervisorError> {
        let path = work_dir.join(SOCKET);
        let fd = match connect(&path) {
            Ok(fd) => fd,
            Err(_) => {
                start(work_dir).await?;
                wait_connect(&path).await?
            }
        };
        let channel = Channel::new(fd).map_err(|source| SupervisorError::Connect {
            path: path.clone(),
            source,
        })?;
        let mut buf = vec![0u8; wire::MAX_MESSAGE];
        let hello = tokio::time::timeout(START_TIMEOUT, channel.recv::<Reply>(&mut buf)).await;
        let lost = |source| SupervisorError::Connect {
            path: path.clone(),
            source,
        };
        let (version, held) = match hello {
            Ok(Ok(Some((Reply::Hello { version, held }, _)))) => (version, held),
            Ok(Ok(_)) => return Err(lost(io::Error::other("no hello"))),
            Ok(Err(e)) => return Err(lost(e)),
            Err(_) => return Err(lost(io::ErrorKind::TimedOut.into())),
        };
        if version != wire::VERSION {
            return Err(SupervisorError::Version {
                path,
                found: version,
            });
        }
        let channel = Arc::new(channel);
        let slots = Slots::default();
        let reader = tokio::spawn(read_replies(channel.clone(), slots.clone(), buf));
        Ok(Supervisor {
            channel,
            slots,
            done: Mutex::default(),
            held: held.into_iter().collect(),
            reader: reader.abort_handle(),
        })
    }

    /// The tasks the supervisor held at connection, with their pids.
    pub fn held(&self) -> &HashMap<ExecutionId, u32> {
        &self.held
    }

    /// Has the supervisor run `argv` with `stdout` and `stderr`; returns its pid (also its
    /// process group) and its end to come.
    pub async fn spawn(
        &self,
        id: ExecutionId,
        argv: Vec<String>,
        cwd: PathBuf,
        env: Vec<(String, String)>,
        logs: [BorrowedFd<'_>; 2],
    ) -> Result<(u32, ExitWaiter), SupervisorError> {
        let (spawned_tx, spawned_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        lock(&self.slots).insert(
            id,
            Slot {
                spawned: Some(spawned_tx),
                waiter: Some(exit_tx),
                exit: None,
            },
        );
        let done = std::mem::take(&mut *lock_done(&self.done));
        let request = Request::Spawn {
            id,
            argv,
            cwd,
            env,
            done,
        };
        if let Err(e) = self.channel.send(&request, &logs).await {
            lock(&self.slots).remove(&id);
            if let Request::Spawn { done, .. } = request {
                lock_done(&self.done).extend(done);
            }
            return Err(SupervisorError::Send(e));
        }
        match spawned_rx.await {
            Ok(Ok(pid)) => Ok((pid, exit_rx)),
            Ok(Err(error)) => {
                lock(&self.slots).remove(&id);
                Err(SupervisorError::Spawn(error))
            }
            Err(_) => Err(SupervisorError::Lost),
        }
    }

    /// The end of a task the supervisor already held (an adopted one).
    pub fn watch(&self, id: ExecutionId) -> ExitWaiter {
        let (tx, rx) = oneshot::channel();
        let mut slots = lock(&self.slots);
        let slot = slots.entry(id).or_default();
        match slot.exit.take() {
            Some(exit) => {
                slots.remove(&id);
                let _ = tx.send(exit);
            }
            None => slot.waiter = Some(tx),
        }
        rx
    }

    /// The end of `id` is on disk: the supervisor may forget it (told with the next spawn).
    pub fn done(&self, id: ExecutionId) {
        let mut done = lock_done(&self.done);
        done.push(id);
        // Bounded, should no task start for long.
        if done.len() >= MAX_DONE_HELD {
            let ids = std::mem::take(&mut *done);
            drop(done);
            self.send_done(ids);
        }
    }

    /// Tells the supervisor every end it has not heard of yet (the agent is leaving).
    pub async fn flush_done(&self) {
        let ids = std::mem::take(&mut *lock_done(&self.done));
        for id in ids {
            if let Err(e) = self.channel.send(&Request::Done { id }, &[]).await {
                tracing::debug!(execution_id = %id, "cannot tell the supervisor: {e}");
            }
        }
    }

    fn send_done(&self, ids: Vec<ExecutionId>) {
        let channel = self.channel.clone();
        tokio::spawn(async move {
            for id in ids {
                if let Err(e) = channel.send(&Request::Done { id }, &[]).await {
                    tracing::debug!(execution_id = %id, "cannot tell the supervisor: {e}");
                }
            }
        });
    }
}

/// Most ends held back from the supervisor.
const MAX_DONE_HELD: usize = 256;

fn lock_done(done: &Mutex<Vec<ExecutionId>>) -> std::sync::MutexGuard<'_, Vec<ExecutionId>> {
    done.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Slot>> {
    slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands each reply to whoever waits for it. When the supervisor is lost, every waiter hears
/// of it (its sender is dropped).
async fn read_replies(channel: Arc<Channel>, slots: Slots, mut buf: Vec<u8>) {
    loop {
        let reply = match channel.recv::<Reply>(&mut buf).await {
            Ok(Some((reply, _))) => reply,
            Ok(None) => {
                tracing::error!("the task supervisor closed its connection");
                break;
            }
            Err(e) => {
                tracing::error!("cannot read from the task supervisor: {e}");
                break;
            }
        };
        let mut slots = lock(&slots);
        match reply {
            Reply::Spawned { id, pid } => {
                if let Some(tx) = slots.get_mut(&id).and_then(|s| s.spawned.take()) {
                    let _ = tx.send(Ok(pid));
                }
            }
            Reply::SpawnError { id, error } => {
                if let Some(tx) = slots.get_mut(&id).and_then(|s| s.spawned.take()) {
                    let _ = tx.send(Err(error));
                }
            }
            Reply::SpawnFailed { id, message } => {
                if let Some(tx) = slots.get_mut(&id).and_then(|s| s.spawned.take()) {
                    let _ = tx.send(Err(SpawnError::Earlier { message }));
                }
            }
            Reply::Exited { id, exit } => {
                let slot = slots.entry(id).or_default();
                match slot.waiter.take() {
                    Some(tx) => {
                        slots.remove(&id);
                        let _ = tx.send(exit);
                    }
                    None => slot.exit = Some(exit),
                }
            }
            Reply::Hello { .. } => tracing::warn!("ignoring a second hello from the supervisor"),
        }
    }
    lock(&slots).clear();
}

fn connect(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    let fd = wire::socket()?;
    let (_dir, addr) = wire::unix_addr(path)?;
    rustix::net::connect(&fd, &addr)?;
    Ok(fd)
}

async fn wait_connect(path: &Path) -> Result<std::os::fd::OwnedFd, SupervisorError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match connect(path) {
            Ok(fd) => return Ok(fd),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(SupervisorError::Connect {
                    path: path.to_owned(),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Starts a supervisor for `work_dir`: in its own process group (a Ctrl-C meant for the agent
/// does not reach it), its stderr appended to `supervisor.log`. Its exit is logged.
#[cfg(not(test))]
async fn start(work_dir: &Path) -> Result<(), SupervisorError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|source| SupervisorError::Start {
        exe: PathBuf::from("scitq-agent"),
        source,
    })?;
    let failed = |source| SupervisorError::Start {
        exe: exe.clone(),
        source,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work_dir.join(LOG))
        .map_err(failed)?;
    let mut command = std::process::Command::new(&exe);
    command
        .arg(SUBCOMMAND)
        .arg(work_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(false)
        .spawn()
        .map_err(failed)?;
    tracing::info!(pid = child.id(), "started the task supervisor");
    // Reaped when it exits while this agent runs; otherwise it outlives the agent.
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::info!("the task supervisor exited: {status}"),
            Err(e) => tracing::warn!("cannot wait for the task supervisor: {e}"),
        }
    });
    Ok(())
}

/// In unit tests the supervisor runs as a task of the test process (the test binary has no
/// `__supervise`).
#[cfg(test)]
async fn start(work_dir: &Path) -> Result<(), SupervisorError> {
    let listener = serve::listen(work_dir).map_err(|source| SupervisorError::Start {
        exe: PathBuf::from("in-process"),
        source,
    })?;
    tokio::spawn(serve::serve(work_dir.to_owned(), listener, false));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_work_dir_deeper_than_a_socket_path_can_hold_still_gets_its_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        assert!(deep.join(SOCKET).as_os_str().len() > 107);
        let supervisor = Supervisor::connect_or_start(&deep).await.unwrap();
        assert!(deep.join(SOCKET).exists());
        drop(supervisor);
        // A second agent finds the one already listening there.
        Supervisor::connect_or_start(&deep).await.unwrap();
    }

    #[tokio::test]
    async fn a_command_that_cannot_run_comes_back_as_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::connect_or_start(dir.path()).await.unwrap();
        let out = std::fs::File::create(dir.path().join("out")).unwrap();
        let err = std::fs::File::create(dir.path().join("err")).unwrap();
        use std::os::fd::AsFd;
        let failed = supervisor
            .spawn(
                ExecutionId(7),
                vec!["/nonexistent/scitq-test-program".into()],
                dir.path().to_owned(),
                Vec::new(),
                [out.as_fd(), err.as_fd()],
            )
            .await
            .unwrap_err();
        match &failed {
            SupervisorError::Spawn(SpawnError::Exec { program, errno, .. }) => {
                assert_eq!(program, "/nonexistent/scitq-test-program");
                assert_eq!(*errno, Some(nix::libc::ENOENT));
            }
            other => panic!("expected an exec error, got {other:?}"),
        }
        assert!(
            failed
                .to_string()
                .starts_with("cannot run \"/nonexistent/scitq-test-program\": "),
            "{failed}"
        );
    }

    /// Spawns run side by side on the supervisor's blocking threads and come back in any
    /// order; a task may end before its spawn is back. Each end must still reach its own
    /// task, once.
    #[tokio::test]
    async fn many_short_tasks_spawned_at_once_each_get_their_own_end() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Arc::new(Supervisor::connect_or_start(dir.path()).await.unwrap());
        let mut runs = tokio::task::JoinSet::new();
        for id in 1..=48i64 {
            let supervisor = supervisor.clone();
            let path = dir.path().to_owned();
            runs.spawn(async move {
                use std::os::fd::AsFd;
                let out = std::fs::File::create(path.join(format!("out-{id}"))).unwrap();
                let err = std::fs::File::create(path.join(format!("err-{id}"))).unwrap();
                let argv = vec!["sh".into(), "-c".into(), format!("exit {}", id % 7)];
                let (_pid, exit) = supervisor
                    .spawn(
                        ExecutionId(id),
                        argv,
                        path,
                        Vec::new(),
                        [out.as_fd(), err.as_fd()],
                    )
                    .await
                    .unwrap();
                (
                    id,
                    tokio::time::timeout(Duration::from_secs(20), exit).await,
                )
            });
        }
        while let Some(run) = runs.join_next().await {
            let (id, exit) = run.unwrap();
            let exit = exit
                .unwrap_or_else(|_| panic!("task {id}: no end within 20 s"))
                .unwrap_or_else(|_| panic!("task {id}: supervisor lost"));
            assert_eq!(exit.code, Some((id % 7) as i32), "task {id}");
        }
    }

    #[test]
    fn a_spawn_failure_from_an_earlier_supervisor_is_still_read() {
        let reply: Reply =
            serde_json::from_str(r#"{"SpawnFailed":{"id":3,"message":"cannot run \"x\": gone"}}"#)
                .unwrap();
        assert!(matches!(reply, Reply::SpawnFailed { message, .. } if message.ends_with("gone")),);
    }
}
