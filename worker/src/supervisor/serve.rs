//! The supervisor's side: listen on the work dir's socket, spawn and wait for tasks, tell the
//! connected agent (or the work dir) how they ended, and fence them on the lease.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::task::JoinSet;

use super::wire::{self, Channel, Exit, Reply, Request, SpawnError};
use super::{EXIT_FILE, LOCK, SOCKET};
use crate::state::{ExecDir, ExecutionId};

/// How often the lease file is read.
const LEASE_CHECK: Duration = Duration::from_millis(250);

/// `scitq-agent __supervise WORK_DIR`: runs the supervisor of `WORK_DIR` until no agent is
/// connected and nothing is left to supervise. Exits 0 at once when another one runs.
pub fn main(work_dir: PathBuf) -> ExitCode {
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(work_dir.join(LOCK))
    {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", work_dir.join(LOCK).display());
            return ExitCode::FAILURE;
        }
    };
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return ExitCode::SUCCESS,
        Err(std::fs::TryLockError::Error(e)) => {
            eprintln!("error: cannot lock {}: {e}", work_dir.join(LOCK).display());
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match listen(&work_dir) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}",
                work_dir.join(SOCKET).display()
            );
            return ExitCode::FAILURE;
        }
    };
    // The orphans a task leaves (its background processes, once it exits) become this
    // process's children rather than init's: reaped here, and killed at the fence even when
    // they left the task's process group.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become the subreaper of the tasks: {e}");
    }
    tracing::info!(work_dir = %work_dir.display(), "task supervisor starting");
    runtime.block_on(serve(work_dir, listener, true));
    drop(lock);
    ExitCode::SUCCESS
}

/// Binds the work dir's socket (replacing a stale one: the caller holds the lock).
pub fn listen(work_dir: &Path) -> io::Result<OwnedFd> {
    let path = work_dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let fd = wire::socket()?;
    let (_dir, addr) = super::wire::unix_addr(&path)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 16)?;
    Ok(fd)
}

/// A task the supervisor spawned and whose end no agent took yet.
struct Task {
    pid: u32,
    exit: Option<Exit>,
    /// When it was spawned (unix ms): a lease that ended before cannot concern it.
    spawned_ms: u64,
}

struct Supervisor {
    work_dir: PathBuf,
    tasks: HashMap<ExecutionId, Task>,
    agent: Option<Channel>,
    /// The tasks still running, by pid.
    running: HashMap<u32, ExecutionId>,
    /// Its own process: it reaps every child (tasks, and their orphans, as their subreaper).
    /// Run within another process (unit tests), it reaps only the tasks it spawned.
    own_process: bool,
    /// The lease deadline the tasks were last killed for.
    fenced: Option<u64>,
    /// Spawns under way, each on a blocking thread: `vfork` holds its caller until the child
    /// has exec'd (up to a millisecond under load), and done one at a time in this loop the
    /// starts of an agent's tasks queued behind each other while its slots stood idle.
    spawning: JoinSet<Result<u32, SpawnError>>,
    spawn_ids: HashMap<tokio::task::Id, ExecutionId>,
    /// Children reaped before their spawn came back, by pid (own process only): a short
    /// task may end before its spawning thread returns. Emptied once no spawn is under way:
    /// the pids left were orphans.
    early: HashMap<u32, Exit>,
    /// An agent connected once, or the one that started the supervisor had its time to.
    greeted: bool,
}

/// How long a new supervisor waits for its first agent before it may exit idle.
const FIRST_AGENT: Duration = Duration::from_secs(30);

/// Serves until, with `exit_when_idle` (the supervisor's own process), no agent is connected,
/// no task runs and no container waits for its fence.
pub async fn serve(work_dir: PathBuf, listener: OwnedFd, exit_when_idle: bool) {
    let listener = match wire::watch(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot watch the supervisor socket: {e}");
            return;
        }
    };
    // Before any spawn: an exit is never missed. One signal may stand for several exits.
    let mut exits = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(exits) => exits,
        Err(e) => {
            tracing::error!("cannot watch the tasks' exits: {e}");
            return;
        }
    };
    let mut sup = Supervisor {
        work_dir,
        tasks: HashMap::new(),
        agent: None,
        running: HashMap::new(),
        own_process: exit_when_idle,
        fenced: None,
        spawning: JoinSet::new(),
        spawn_ids: HashMap::new(),
        early: HashMap::new(),
        greeted: false,
    };
    let started = tokio::time::Instant::now();
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let mut tick = tokio::time::interval(LEASE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Ends first: a task that exited frees its agent's slot only once it is told, so
            // its report must not wait behind the spawns queued meanwhile.
            biased;
            _ = exits.recv() => sup.reap().await,
            ready = listener.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(e) => { tracing::error!("supervisor socket failed: {e}"); return; }
                };
                let flags = rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC;
                if let Ok(accepted) = guard.try_io(|fd| Ok(rustix::net::accept_with(fd.get_ref(), flags)?)) {
                    match accepted {
                        Ok(fd) => sup.on_agent(fd).await,
                        Err(e) => tracing::warn!("cannot accept an agent: {e}"),
                    }
                }
            }
            Some(spawned) = sup.spawning.join_next_with_id(), if !sup.spawning.is_empty() => {
                sup.on_spawned(spawned).await;
            }
            received = recv_from(sup.agent.as_ref(), &mut buf) => match received {
                Ok(Some((request, fds))) => sup.on_request(request, fds).await,
                Ok(None) => sup.on_agent_gone(),
                Err(e) => {
                    tracing::warn!("dropping the agent connection: {e}");
                    sup.on_agent_gone();
                }
            },
            _ = tick.tick() => {
                if !sup.work_dir.is_dir() {
                    tracing::info!("work dir gone; supervisor exiting");
                    return;
                }
                sup.check_lease().await;
                sup.greeted |= started.elapsed() >= FIRST_AGENT;
            }
        }
        if exit_when_idle && sup.idle() {
            tracing::info!("no agent and no task left; supervisor exiting");
            return;
        }
    }
}

async fn recv_from(
    agent: Option<&Channel>,
    buf: &mut [u8],
) -> io::Result<Option<(Request, Vec<OwnedFd>)>> {
    match agent {
        Some(agent) => agent.recv(buf).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    async fn on_agent(&mut self, fd: OwnedFd) {
        let channel = match Channel::new(fd) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!("cannot use an agent connection: {e}");
                return;
            }
        };
        if self.agent.is_some() {
            tracing::warn!("a new agent connected; dropping the previous connection");
        }
        let mut held: Vec<_> = self.tasks.iter().map(|(id, t)| (*id, t.pid)).collect();
        held.sort();
        let hello = Reply::Hello {
            version: wire::VERSION,
            held,
        };
        if let Err(e) = channel.send(&hello, &[]).await {
            tracing::warn!("cannot greet the agent: {e}");
            return;
        }
        tracing::info!(tasks = self.tasks.len(), "agent connected");
        self.greeted = true;
        for (id, task) in &self.tasks {
            if let Some(exit) = task.exit {
                let _ = channel.send(&Reply::Exited { id: *id, exit }, &[]).await;
            }
        }
        self.agent = Some(channel);
    }

    fn on_agent_gone(&mut self) {
        tracing::info!(tasks = self.tasks.len(), "agent disconnected");
        self.agent = None;
        // Ends the agent heard of but may not have recorded.
        for (id, task) in &self.tasks {
            if let Some(exit) = task.exit {
                write_exit(&self.work_dir, *id, exit);
            }
        }
    }

    async fn on_request(&mut self, request: Request, fds: Vec<OwnedFd>) {
        match request {
            Request::Spawn {
                id,
                argv,
                cwd,
                env,
                done,
            } => {
                for id in done {
                    self.forget(id);
                }
                match command(&argv, &cwd, env, fds) {
                    Ok((program, mut command)) => {
                        let spawn = move || {
                            // Reaped by `reap`, not by the runtime: dropping the `Child`
                            // leaves it be.
                            command
                                .spawn()
                                .map(|child| child.id())
                                .map_err(|e| SpawnError::exec(&program, &e))
                        };
                        let task = self.spawning.spawn_blocking(spawn);
                        self.spawn_ids.insert(task.id(), id);
                    }
                    Err(error) => self.reply(&Reply::SpawnError { id, error }).await,
                }
            }
            Request::Done { id } => self.forget(id),
        }
    }

    /// The agent recorded the end of `id`.
    fn forget(&mut self, id: ExecutionId) {
        if self.tasks.get(&id).is_some_and(|t| t.exit.is_some()) {
            self.tasks.remove(&id);
        }
    }

    /// A spawn came back: the task is registered, then the agent told (and, when the task
    /// ended meanwhile, told that too).
    async fn on_spawned(
        &mut self,
        spawned: Result<(tokio::task::Id, Result<u32, SpawnError>), tokio::task::JoinError>,
    ) {
        let (task, result) = match spawned {
            Ok((task, result)) => (task, result),
            Err(e) => {
                let error = SpawnError::Earlier {
                    message: format!("the supervisor's spawning thread failed: {e}"),
                };
                (e.id(), Err(error))
            }
        };
        let Some(id) = self.spawn_ids.remove(&task) else {
            return;
        };
        match result {
            Ok(pid) => {
                let spawned_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                self.tasks.insert(
                    id,
                    Task {
                        pid,
                        exit: None,
                        spawned_ms,
                    },
                );
                self.running.insert(pid, id);
                self.reply(&Reply::Spawned { id, pid }).await;
                if let Some(exit) = self.early.remove(&pid) {
                    self.running.remove(&pid);
                    self.on_exit(id, exit).await;
                } else if !self.own_process {
                    // Its SIGCHLD may have come before it was known here.
                    self.reap().await;
                }
            }
            Err(error) => self.reply(&Reply::SpawnError { id, error }).await,
        }
        if self.spawning.is_empty() {
            self.early.clear();
        }
    }

    /// Collects the children that exited: the tasks' ends, and the orphans they left.
    async fn reap(&mut self) {
        loop {
            let exited = if self.own_process {
                reap_one(None)
            } else {
                // Only the tasks' own processes: the host process has children of its own.
                let pids: Vec<u32> = self.running.keys().copied().collect();
                pids.into_iter().find_map(|pid| reap_one(Some(pid)))
            };
            let Some((pid, exit)) = exited else {
                return;
            };
            match self.running.remove(&pid) {
                Some(id) => self.on_exit(id, exit).await,
                // Maybe a task whose spawn has not come back yet.
                None if !self.spawning.is_empty() => {
                    self.early.insert(pid, exit);
                }
                None => tracing::debug!(pid, ?exit, "reaped an orphan of a task"),
            }
        }
    }

    async fn on_exit(&mut self, id: ExecutionId, exit: Exit) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.exit = Some(exit);
        if self.agent.is_some() {
            self.reply(&Reply::Exited { id, exit }).await;
        } else {
            write_exit(&self.work_dir, id, exit);
        }
    }

    async fn reply(&mut self, reply: &Reply) {
        let Some(agent) = &self.agent else { return };
        if let Err(e) = agent.send(reply, &[]).await {
            tracing::warn!("cannot reach the agent: {e}");
            self.on_agent_gone();
        }
    }

    /// Kills every task and container of the work dir once the lease has passed.
    async fn check_lease(&mut self) {
        let Some(lease) = crate::lease::read(&self.work_dir) else {
            return;
        };
        if !lease.expired() || self.fenced == Some(lease.deadline_ms) {
            return;
        }
        self.fenced = Some(lease.deadline_ms);
        let running: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.exit.is_none() && t.spawned_ms < lease.deadline_ms)
            .map(|(id, t)| (*id, t.pid))
            .collect();
        let containers = running_containers(&self.work_dir);
        // What the tasks left running: their own groups are killed below, these may have
        // left them.
        let orphans: Vec<u32> = if self.own_process {
            orphans()
                .into_iter()
                .filter(|pid| !self.running.contains_key(pid))
                .collect()
        } else {
            Vec::new()
        };
        if running.is_empty() && containers.is_empty() && orphans.is_empty() {
            return;
        }
        tracing::warn!(
            tasks = running.len(),
            containers = containers.len(),
            orphans = orphans.len(),
            "the lease has passed without word from the server: killing the tasks"
        );
        for (id, pid) in running {
            if let Err(e) =
                crate::process_group::signal_group(pid, nix::sys::signal::Signal::SIGKILL)
            {
                tracing::warn!(execution_id = %id, pid, "cannot kill: {e}");
            }
        }
        for pid in orphans {
            if let Ok(raw) = i32::try_from(pid) {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
            }
        }
        if !containers.is_empty() {
            kill_containers(&self.work_dir, containers).await;
        }
    }

    /// No agent, no task running, no end waiting for an agent but on disk, and no container
    /// or orphan left to fence.
    fn idle(&self) -> bool {
        if !self.greeted
            || self.agent.is_some()
            || !self.spawning.is_empty()
            || self.tasks.values().any(|t| t.exit.is_none())
        {
            return false;
        }
        let lease_pending =
            crate::lease::read(&self.work_dir).is_some_and(|lease| !lease.expired());
        !lease_pending || (running_containers(&self.work_dir).is_empty() && orphans().is_empty())
    }
}

/// The command of a spawn request: the program's name (for errors) and the command, in its
/// own process group, its output on the two files the agent passed.
fn command(
    argv: &[String],
    cwd: &Path,
    env: Vec<(String, String)>,
    fds: Vec<OwnedFd>,
) -> Result<(String, std::process::Command), SpawnError> {
    let (Some(program), Ok([stdout, stderr])) = (argv.first(), <[OwnedFd; 2]>::try_from(fds))
    else {
        return Err(SpawnError::BadRequest);
    };
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command
        .args(&argv[1..])
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    Ok((program.clone(), command))
}

/// Reaps one exited child (`None`: any), without blocking.
fn reap_one(pid: Option<u32>) -> Option<(u32, Exit)> {
    let pid = match pid {
        Some(pid) => Some(Pid::from_raw(i32::try_from(pid).ok()?)),
        None => None,
    };
    loop {
        return match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => Some((
                pid.as_raw() as u32,
                Exit {
                    code: Some(code),
                    signal: None,
                },
            )),
            Ok(WaitStatus::Signaled(pid, signal, _)) => Some((
                pid.as_raw() as u32,
                Exit {
                    code: None,
                    signal: Some(signal as i32),
                },
            )),
            Ok(WaitStatus::StillAlive) => None,
            // Stopped or continued: not an end.
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => None,
        };
    }
}

/// The children of this process: as the tasks' subreaper, the tasks and their orphans.
fn orphans() -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for thread in threads.flatten() {
        if let Ok(text) = std::fs::read_to_string(thread.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids
}

/// Records a task's end in its work dir (written aside, then renamed in place).
fn write_exit(work_dir: &Path, id: ExecutionId, exit: Exit) {
    let dir = ExecDir::new(work_dir, id);
    let path = dir.root().join(EXIT_FILE);
    let aside = dir.root().join(".exit.tmp");
    let written = serde_json::to_vec(&exit)
        .map_err(io::Error::other)
        .and_then(|text| std::fs::write(&aside, text))
        .and_then(|()| std::fs::rename(&aside, &path));
    if let Err(e) = written {
        tracing::warn!(execution_id = %id, "cannot write {}: {e}", path.display());
    }
}

/// Reads the end of a task recorded by a supervisor, if any.
pub fn read_exit(dir: &ExecDir) -> Option<Exit> {
    let text = std::fs::read(dir.root().join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Containers of the work dir's executions that `state.json` says may run.
fn running_containers(work_dir: &Path) -> Vec<(ExecutionId, String)> {
    crate::state::running_containers(work_dir).unwrap_or_default()
}

async fn kill_containers(work_dir: &Path, containers: Vec<(ExecutionId, String)>) {
    let engine = crate::docker::Engine::new(
        scitq_proto::container::Network::None,
        Duration::from_secs(60),
        work_dir.to_string_lossy().into_owned(),
    );
    let docker = match engine.docker().await {
        Ok(docker) => docker,
        Err(e) => {
            tracing::warn!(
                "cannot kill the containers: {}",
                crate::docker::message_of(&e)
            );
            return;
        }
    };
    for (id, container) in containers {
        tracing::warn!(execution_id = %id, container, "killing container");
        crate::docker::kill(docker, &container).await;
    }
}
