//! The agent's service loop: it owns every execution the agent holds, the running slots, the
//! outbox and the connection state, and reacts to executor events, server messages, heartbeat
//! samples, finished spool reads and shutdown. Nothing else mutates that state, and it never
//! waits on I/O itself: file work runs in `spawn_blocking` tasks whose results come back here.

mod execs;
mod fence;
mod output;
mod prefetch;
mod server;
mod shutdown;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::sys::signal::Signal;
use scitq_proto::PrefetchSetting;
use scitq_proto::v1::{
    AgentMessage, ExecutionState, ExecutionUpdate, Heartbeat, HeldExecution, Hello, Prefetch,
    ProtocolVersion, agent_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::docker::Engine;
use crate::executor::{self, ExecEvent};
use crate::launch::Launch;
use crate::outbox::Outbox;
use crate::scan::{Adopt, Found, Reattach, Recovered};
use crate::session::{Backoff, Connector, Link, SessionError, SessionEvent};
use crate::spares::Spares;
use crate::state::{ExecutionId, FinalReport};
use crate::supervisor::Supervisor;

/// First reconnection delay.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// How long a progress update (running, uploading) may wait to be sent with (or replaced
/// by) a later one.
const PROGRESS_DELAY: Duration = Duration::from_millis(15);
/// How long an execution's acceptance may wait. Longer: with prefetch, a queued task often
/// starts (or ends) first, and then the acceptance is never sent at all, sparing scitqd a
/// third of the writes of a short task.
const ACCEPT_DELAY: Duration = Duration::from_millis(250);
/// How long the work dir of an execution that is over waits for a starting execution to take
/// it over before it is recycled on its own (see `spares`).
const RECYCLE_DELAY: Duration = Duration::from_secs(1);

/// Settings the server may change at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    concurrency: u32,
    prefetch: u32,
    batch: String,
    /// `prefetch` follows [`prefetch::AutoPrefetch`] (the default) rather than a fixed value.
    prefetch_auto: bool,
}

/// Where one held execution stands in the agent.
#[derive(Debug)]
enum Phase {
    /// Accepted, waiting for a running slot.
    Queued(Box<Launch>),
    /// Its executor runs (the process or container exists once `started`).
    Running,
    /// Ended; waiting for its output and final update to be committed.
    Finished(FinalReport),
    /// The server no longer wants it; forgotten silently once its process is gone.
    Canceled,
}

/// How much of one output stream is on disk and how much went out in this session.
#[derive(Debug, Default, Clone, Copy)]
struct Spool {
    written: u64,
    sent: u64,
    /// A replay read of the spool file is in flight.
    reading: bool,
}

#[derive(Debug)]
struct Exec {
    task_id: i64,
    phase: Phase,
    /// How to signal it; for a container task, from the moment its executor starts.
    handle: Option<executor::Handle>,
    /// Its process or container runs (or ran).
    started: bool,
    /// Runs in a container: it survives the agent, which re-attaches after a restart.
    container: bool,
    /// Its executor, aborted when the agent leaves a container running at shutdown.
    abort: Option<tokio::task::AbortHandle>,
    /// Signals asked for before the process existed, delivered when it starts.
    pending: Vec<Signal>,
    /// Set when the server asked for a kill, read by the executor for the failure class.
    killed: Arc<AtomicBool>,
    /// Killed because the agent is shutting down: not a result to report.
    abandoned: bool,
    streams: [Spool; 2],
    /// Its inputs and resources, staged from the moment it is accepted.
    staging: Option<crate::staging::StageIn>,
    /// When it took a running slot (not for adopted or re-attached executions).
    slot_at: Option<Instant>,
    /// When it ended, until its result is committed (measures the round trip).
    ended_at: Option<Instant>,
}

impl Exec {
    fn new(task_id: i64, phase: Phase) -> Self {
        Exec {
            task_id,
            phase,
            handle: None,
            started: false,
            container: false,
            abort: None,
            pending: Vec::new(),
            killed: Arc::new(AtomicBool::new(false)),
            abandoned: false,
            streams: [Spool::default(); 2],
            staging: None,
            slot_at: None,
            ended_at: None,
        }
    }

    /// Signals its process group or container now, or as soon as the process exists.
    fn signal(&mut self, id: ExecutionId, signal: Signal) {
        match &self.handle {
            Some(handle) => {
                if let Err(e) = handle.signal(signal) {
                    tracing::warn!(execution_id = %id, ?handle, "cannot send {signal}: {e}");
                }
            }
            None => self.pending.push(signal),
        }
    }

    /// The state reported for it in `Hello`.
    fn held_state(&self) -> ExecutionState {
        match &self.phase {
            Phase::Queued(_) | Phase::Canceled => ExecutionState::Accepted,
            Phase::Running if !self.started => ExecutionState::Accepted,
            Phase::Running => ExecutionState::Running,
            Phase::Finished(report) => report.state(),
        }
    }
}

enum Conn {
    /// Not connected; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// `Hello` sent, waiting for `Welcome`.
    Connecting {
        session: u64,
        link: Link,
        _task: AbortOnDrop,
    },
    Up {
        session: u64,
        link: Link,
        _task: AbortOnDrop,
    },
    /// Shutting down: no more attempts.
    Closed,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A finished replay read of a spool file.
struct ReadDone {
    session: u64,
    id: ExecutionId,
    stream: crate::state::Stream,
    offset: u64,
    data: std::io::Result<bytes::Bytes>,
}

/// Heartbeat samples from `stats`, and how often it takes them (the agent shortens it to a
/// quarter of the lease: acknowledged heartbeats are what keeps the lease fresh).
pub struct Heartbeats {
    pub samples: mpsc::Receiver<Heartbeat>,
    pub every: tokio::sync::watch::Sender<Duration>,
}

pub struct Agent {
    config: Config,
    /// Spawns the native tasks; outlives the agent.
    supervisor: Arc<Supervisor>,
    /// Native tasks a previous agent left, adopted when the loop starts.
    adopt: Vec<Adopt>,
    /// The lease as the agent knows it (see `fence`).
    lease: fence::LeaseClock,
    spares: Arc<Spares>,
    engine: Arc<Engine>,
    /// Container tasks a previous agent left, re-attached when the loop starts.
    reattach: Vec<Reattach>,
    settings: Settings,
    cpus: u32,
    execs: HashMap<ExecutionId, Exec>,
    queue: VecDeque<ExecutionId>,
    /// Executors alive, canceled ones included: they hold a slot until their process is gone.
    running: usize,
    outbox: Outbox,
    connector: Connector,
    conn: Conn,
    session: u64,
    backoff: Backoff,
    exec_tx: mpsc::Sender<ExecEvent>,
    exec_rx: mpsc::Receiver<ExecEvent>,
    session_tx: mpsc::UnboundedSender<SessionEvent>,
    session_rx: mpsc::UnboundedReceiver<SessionEvent>,
    heartbeats: Heartbeats,
    executors: JoinSet<()>,
    executor_ids: HashMap<tokio::task::Id, ExecutionId>,
    reads: JoinSet<ReadDone>,
    chores: JoinSet<()>,
    /// Set once shutdown began: when to escalate, then when to give up.
    shutdown_deadline: Option<(Instant, bool)>,
    /// Executions with a progress update (accepted, running) not sent yet, each with when to
    /// send it. Progress waits a moment so that a short task's start and end travel (and are
    /// committed by the server) together.
    deferred: Vec<(Instant, ExecutionId)>,
    /// The earliest time in `deferred`.
    flush_at: Option<Instant>,
    /// Executions whose final update waits (see [`Agent::hold_result`]), and when they go
    /// at the latest.
    held_results: Vec<ExecutionId>,
    results_at: Option<Instant>,
    /// When the released work dirs no execution took over are recycled.
    recycle_at: Option<Instant>,
    /// The server asked for a drain: once nothing is held, the agent exits.
    draining: bool,
    /// No task starts: the output held on disk reached the spool limit.
    spool_full: bool,
    /// Storage for the tasks' data, set up from the remotes in `Welcome`.
    stager: Result<Arc<crate::staging::Stager>, Arc<crate::staging::StagingError>>,
    /// The automatic prefetch's measures (used while `settings.prefetch_auto`).
    auto_prefetch: prefetch::AutoPrefetch,
}

impl Agent {
    pub fn new(
        config: Config,
        connector: Connector,
        spares: Arc<Spares>,
        found: Found,
        heartbeats: Heartbeats,
        supervisor: Arc<Supervisor>,
    ) -> Agent {
        let Found {
            recovered,
            reattach,
            adopt,
        } = found;
        let (exec_tx, exec_rx) = mpsc::channel(1024);
        let (session_tx, session_rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new();
        let mut execs = HashMap::new();
        for Recovered {
            id,
            task_id,
            report,
        } in recovered
        {
            outbox.record(report.to_update(id));
            let mut exec = Exec::new(task_id, Phase::Finished(report.clone()));
            for stream in crate::state::Stream::BOTH {
                exec.streams[stream.index()].written = report.bytes(stream);
            }
            execs.insert(id, exec);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mut engine = Engine::new(
            config.docker_network,
            config.pull_timeout,
            config.work_dir.to_string_lossy().into_owned(),
        );
        engine.allowed_mounts = config.allow_mounts.clone();
        let engine = Arc::new(engine);
        let lease = fence::LeaseClock::new(crate::lease::read(&config.work_dir));
        let (prefetch, prefetch_auto) = match config.prefetch {
            PrefetchSetting::Auto => (0, true),
            PrefetchSetting::Fixed(n) => (n, false),
        };
        Agent {
            auto_prefetch: prefetch::AutoPrefetch::new(prefetch, config.result_hold),
            engine,
            reattach,
            adopt,
            supervisor,
            lease,
            settings: Settings {
                concurrency: config.concurrency,
                prefetch,
                batch: config.batch.clone(),
                prefetch_auto,
            },
            backoff: Backoff::new(FIRST_RETRY, config.reconnect_max),
            config,
            spares,
            cpus,
            execs,
            queue: VecDeque::new(),
            running: 0,
            outbox,
            connector,
            conn: Conn::Down {
                retry_at: Instant::now(),
            },
            session: 0,
            exec_tx,
            exec_rx,
            session_tx,
            session_rx,
            heartbeats,
            executors: JoinSet::new(),
            executor_ids: HashMap::new(),
            reads: JoinSet::new(),
            chores: JoinSet::new(),
            shutdown_deadline: None,
            deferred: Vec::new(),
            flush_at: None,
            held_results: Vec::new(),
            results_at: None,
            recycle_at: None,
            draining: false,
            spool_full: false,
            stager: Err(Arc::new(crate::staging::StagingError::NotConfigured)),
        }
    }

    /// Runs until shutdown (Ok) or until the server rejects the agent for good (Err); either
    /// way running tasks are terminated first.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        let mut fatal = None;
        self.start_reattached();
        self.start_adopted();
        self.set_heartbeat_interval();
        let mut sweep = tokio::time::interval(crate::janitor::interval(self.config.keep_failed));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.shutdown_deadline.is_some() && self.running == 0 {
                break;
            }
            if self.draining && self.execs.is_empty() && self.running == 0 {
                tracing::info!("drained: every result is delivered; exiting");
                break;
            }
            let retry_at = match self.conn {
                Conn::Down { retry_at } => Some(retry_at),
                _ => None,
            };
            let gauge = match &self.conn {
                Conn::Up { link, .. } => Some(link.gauge.clone()),
                _ => None,
            };
            let deadline = self.shutdown_deadline.map(|(at, _)| at);
            let fence_at = self.lease.fence_at(!self.execs.is_empty());
            let lease_write_at = self.lease.write_at();
            tokio::select! {
                _ = shutdown.cancelled(), if self.shutdown_deadline.is_none() => self.begin_shutdown(),
                Some(event) = self.exec_rx.recv() => self.on_exec_event(event),
                Some(event) = self.session_rx.recv() => {
                    if let Err(error) = self.on_session_event(event) {
                        tracing::debug!("fatal session error: {error}");
                        fatal = Some(error);
                        self.conn = Conn::Closed;
                        if self.shutdown_deadline.is_none() {
                            self.begin_shutdown();
                        }
                    }
                }
                Some(heartbeat) = self.heartbeats.samples.recv() => {
                    self.send(agent_message::Kind::Heartbeat(heartbeat));
                }
                _ = tokio::time::sleep_until(fence_at.unwrap_or_else(Instant::now)), if fence_at.is_some() => {
                    self.fence();
                }
                _ = tokio::time::sleep_until(lease_write_at.unwrap_or_else(Instant::now)), if lease_write_at.is_some() => {
                    self.chore_write_lease();
                }
                Some(done) = self.reads.join_next(), if !self.reads.is_empty() => match done {
                    Ok(done) => self.on_read(done),
                    Err(e) => tracing::error!("spool read task failed: {e}"),
                },
                Some(done) = self.executors.join_next_with_id(), if !self.executors.is_empty() => {
                    self.on_executor_exit(done);
                }
                Some(done) = self.chores.join_next(), if !self.chores.is_empty() => {
                    if let Err(e) = done { tracing::error!("work dir chore failed: {e}"); }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.connect();
                }
                _ = async { gauge.as_ref().expect("guarded").drained.notified().await }, if gauge.is_some() => {
                    self.pump_all();
                }
                _ = tokio::time::sleep_until(self.flush_at.unwrap_or_else(Instant::now)), if self.flush_at.is_some() => {
                    self.flush_deferred();
                }
                _ = tokio::time::sleep_until(self.results_at.unwrap_or_else(Instant::now)), if self.results_at.is_some() => {
                    self.release_results();
                }
                _ = tokio::time::sleep_until(self.recycle_at.unwrap_or_else(Instant::now)), if self.recycle_at.is_some() => {
                    self.chore_recycle_released();
                }
                _ = sweep.tick(), if self.shutdown_deadline.is_none() => self.chore_sweep(),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if !self.escalate_shutdown() { break; }
                }
            }
        }
        self.close().await;
        fatal.map_or(Ok(()), Err)
    }

    /// Takes the next `seq` and queues a message if the session is up.
    fn send(&mut self, kind: agent_message::Kind) -> Option<u64> {
        send_on(&self.conn, &mut self.outbox, kind)
    }

    /// Sends the latest update of `id` if it has not gone out in this session.
    fn send_update_if_due(&mut self, id: ExecutionId) {
        send_update_on(&self.conn, &mut self.outbox, id);
    }

    /// Records a progress update (accepted, running); it goes out after [`ACCEPT_DELAY`] or
    /// [`PROGRESS_DELAY`] unless a later update of the same execution supersedes it first.
    fn record_update(&mut self, id: ExecutionId, state: ExecutionState) {
        self.outbox.record(ExecutionUpdate {
            execution_id: id.0,
            state: state as i32,
            ..ExecutionUpdate::default()
        });
        let delay = match state {
            ExecutionState::Accepted => ACCEPT_DELAY,
            _ => PROGRESS_DELAY,
        };
        let due = Instant::now() + delay;
        self.deferred.push((due, id));
        self.flush_at = Some(self.flush_at.map_or(due, |at| at.min(due)));
    }

    /// Holds the final update of `id` for at most `--result-hold`, so that the results of
    /// short tasks reach the server (and are committed, and their slots refilled) a few at
    /// a time rather than one by one. They all go as soon as they are as many as the queued
    /// tasks: the queue must not run dry before the server's refill arrives.
    fn hold_result(&mut self, id: ExecutionId) {
        self.held_results.push(id);
        if self.results_at.is_none() {
            self.results_at = Some(Instant::now() + self.config.result_hold);
        }
        self.release_results_if_due();
    }

    /// Sends the held final updates once they are as many as the queued tasks.
    fn release_results_if_due(&mut self) {
        if !self.held_results.is_empty() && self.held_results.len() >= self.queue.len() {
            self.release_results();
        }
    }

    fn release_results(&mut self) {
        self.results_at = None;
        for id in std::mem::take(&mut self.held_results) {
            self.send_update_if_due(id);
        }
    }

    /// Sends the deferred progress updates that are due.
    fn flush_deferred(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.flush_at = later.iter().map(|(at, _)| *at).min();
        self.deferred = later;
        for (_, id) in due {
            // The execution ended meanwhile: its final update, now the latest, goes when its
            // output is caught up, held with the next results (`pump`), not on this timer.
            if self.outbox.unsent(id).is_some_and(crate::outbox::is_final) {
                continue;
            }
            self.send_update_if_due(id);
        }
    }

    /// Measures a task that held its slot until now and, with an automatic prefetch, tells
    /// the server a new value when the measures call for one.
    fn measure_run(&mut self, slot_at: Option<Instant>) {
        if let Some(at) = slot_at {
            self.auto_prefetch.ran(at.elapsed());
        }
        if !self.settings.prefetch_auto {
            return;
        }
        if self.queue.is_empty() && slot_at.is_some() {
            self.auto_prefetch.starved(self.settings.concurrency);
        }
        if let Some(prefetch) = self.auto_prefetch.update(self.settings.concurrency) {
            tracing::debug!(prefetch, "automatic prefetch changed");
            let fell = prefetch < self.settings.prefetch;
            self.settings.prefetch = prefetch;
            self.send(agent_message::Kind::Prefetch(Prefetch { prefetch }));
            if fell && self.auto_prefetch.long() {
                self.give_back_excess();
            }
        }
    }

    /// Gives back the queued tasks the agent holds past its slots and the (fallen) automatic
    /// prefetch, the last assigned first, as a recall would: tasks that turned long must not
    /// leave a queue here that an idle agent could run. The server queues them again, their
    /// retries untouched. A task whose inputs are being (or were) staged here is kept: that
    /// download is work done for this machine, and another agent would start it over.
    fn give_back_excess(&mut self) {
        let limit = (self.settings.concurrency + self.settings.prefetch) as usize;
        let excess = (self.running + self.queue.len()).saturating_sub(limit);
        let last: Vec<ExecutionId> = self
            .queue
            .iter()
            .rev()
            .filter(|id| self.execs.get(id).is_some_and(|e| e.staging.is_none()))
            .take(excess)
            .copied()
            .collect();
        if !last.is_empty() {
            tracing::info!(
                tasks = last.len(),
                prefetch = self.settings.prefetch,
                "the automatic prefetch fell: giving back queued tasks"
            );
        }
        for id in last {
            self.recall(id);
        }
    }

    fn connect(&mut self) {
        self.session += 1;
        self.outbox.new_session();
        let (link, rx) = Link::new();
        let hello = self.hello();
        let seq = self.outbox.next_seq();
        link.send(AgentMessage {
            seq,
            kind: Some(agent_message::Kind::Hello(hello)),
        });
        let outgoing = Link::metered(link.gauge.clone(), rx);
        let task = self
            .connector
            .spawn(self.session, outgoing, self.session_tx.clone());
        tracing::debug!(
            session = self.session,
            "connecting to {}",
            self.config.server
        );
        self.conn = Conn::Connecting {
            session: self.session,
            link,
            _task: AbortOnDrop(task),
        };
    }

    fn hello(&self) -> Hello {
        let mut held: Vec<HeldExecution> = self
            .execs
            .iter()
            .filter(|(_, exec)| !matches!(exec.phase, Phase::Canceled))
            .map(|(id, exec)| HeldExecution {
                execution_id: id.0,
                state: exec.held_state() as i32,
            })
            .collect();
        held.sort_by_key(|h| h.execution_id);
        Hello {
            protocol: ProtocolVersion::ProtocolVersion1 as i32,
            name: self.config.name.clone(),
            host: self.config.host.clone(),
            concurrency: self.settings.concurrency,
            prefetch: self.settings.prefetch,
            batch: self.settings.batch.clone(),
            held,
            credential: self.connector.identity().credential.clone(),
            instance: self.connector.identity().instance.clone(),
            prefetch_auto: self.settings.prefetch_auto,
        }
    }

    fn on_session_event(&mut self, event: SessionEvent) -> Result<(), SessionError> {
        match event {
            SessionEvent::Message { session, message } if session == self.session => {
                self.lease.heard();
                self.on_server_message(*message);
                Ok(())
            }
            SessionEvent::Closed { session, error } if session == self.session => {
                if error.is_fatal() {
                    return Err(error);
                }
                if self.shutdown_deadline.is_some() {
                    self.conn = Conn::Closed;
                    return Ok(());
                }
                let delay = self.backoff.next_delay();
                match self.conn {
                    Conn::Up { .. } => tracing::warn!(
                        "lost the server: {error}; reconnecting in {}",
                        humantime::format_duration(round_ms(delay))
                    ),
                    _ => tracing::warn!(
                        "{error}; retrying in {}",
                        humantime::format_duration(round_ms(delay))
                    ),
                }
                self.conn = Conn::Down {
                    retry_at: Instant::now() + delay,
                };
                Ok(())
            }
            // From an earlier session.
            _ => Ok(()),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Takes the next `seq` and queues a message if the session is up.
fn send_on(conn: &Conn, outbox: &mut Outbox, kind: agent_message::Kind) -> Option<u64> {
    let Conn::Up { link, .. } = conn else {
        return None;
    };
    let seq = outbox.next_seq();
    link.send(AgentMessage {
        seq,
        kind: Some(kind),
    });
    Some(seq)
}

fn send_update_on(conn: &Conn, outbox: &mut Outbox, id: ExecutionId) {
    if !matches!(conn, Conn::Up { .. }) {
        return;
    }
    let Some(update) = outbox.unsent(id).cloned() else {
        return;
    };
    if let Some(seq) = send_on(conn, outbox, agent_message::Kind::Update(update)) {
        outbox.mark_sent(id, seq);
    }
}

#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;
