//! The scheduler: a service loop that owns the queue of pending tasks, the connected
//! workers' streams and the leases of disconnected ones, and pushes assignments as soon as
//! workers have free slots. Which task goes where is decided by `core::dispatch::Pool`,
//! when leases run out by `core::lease::Leases`; this loop commits and pushes. Everyone
//! else talks to it through a cheap [`SchedulerHandle`].
//!
//! Dispatch cost does not depend on queue length: one B-tree pop per task. Dispatches are
//! grouped: while one batch of assignments commits, new events queue up and are handled
//! together in the next round.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::session::SessionError;
use crate::core::agent::{HostStats, ToAgent};
use crate::core::dispatch::Pool;
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::lease::Leases;
use crate::core::queue::{Queue, Queued};
use crate::core::steering::Signal;
use crate::core::worker::WorkerSettings;
use crate::persistence::{Store, executions, workers};

/// Messages to an agent's live session, before encoding (`grpc/session.rs`); an `Err`
/// ends the session with that error.
pub type AgentTx = mpsc::UnboundedSender<Result<ToAgent, SessionError>>;

pub enum Command {
    Connect {
        worker: WorkerId,
        session: u64,
        tx: AgentTx,
        settings: WorkerSettings,
        active: u32,
    },
    Disconnect {
        worker: WorkerId,
        session: u64,
    },
    /// A new session of the worker says Hello. Refused while another agent process (another
    /// instance) holds a live session of that worker. Otherwise the worker's old session, a
    /// dead one of the same agent (its stream may be half-open without anyone knowing yet),
    /// gets no more dispatches before the Hello is reconciled, so that no assignment slips
    /// between the reconciliation and the new session. Answers once no dispatch to the
    /// worker is in flight and its status writes are committed. The claim holds until the
    /// session connects or disconnects.
    Claim {
        worker: WorkerId,
        owner: Owner,
        reply: oneshot::Sender<Result<(), Owner>>,
    },
    /// Executions of the worker ended: their slots are free.
    Finished {
        worker: WorkerId,
        count: u32,
    },
    Enqueue(Vec<Queued>),
    /// Takes tasks out of the queue (their priority is about to change).
    Dequeue(Vec<Queued>),
    BatchStopped {
        batch: String,
        stopped: bool,
    },
    BatchDeleted {
        batch: String,
    },
    Settings {
        worker: WorkerId,
        settings: WorkerSettings,
    },
    Signal {
        targets: Vec<(ExecutionId, WorkerId)>,
        signal: Signal,
    },
    Active(oneshot::Sender<HashMap<WorkerId, u32>>),
    /// The agent of `worker` adapts its prefetch and wants this one now.
    AgentPrefetch {
        worker: WorkerId,
        prefetch: u32,
    },
    /// The prefetch in force per connected worker, and whether its agent adapts it.
    Prefetch(oneshot::Sender<HashMap<WorkerId, (u32, bool)>>),
    /// A connected worker's agent said how its host is.
    AgentStats {
        worker: WorkerId,
        stats: HostStats,
    },
    /// The last host figures of each connected worker, and when they came.
    Stats(oneshot::Sender<HashMap<WorkerId, (HostStats, std::time::SystemTime)>>),
    /// Why a pending task of `batch` does not run yet.
    Explain {
        task: Queued,
        reply: oneshot::Sender<Vec<String>>,
    },
}

#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl SchedulerHandle {
    pub fn send(&self, command: Command) {
        // The loop only stops at shutdown, when nobody needs an answer any more.
        let _ = self.tx.send(command);
    }

    pub fn enqueue(&self, queued: Vec<Queued>) {
        if !queued.is_empty() {
            self.send(Command::Enqueue(queued));
        }
    }

    /// See [`Command::Claim`]; `Err` names the live session in the way.
    pub async fn claim(&self, worker: WorkerId, owner: Owner) -> Result<(), Owner> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Claim {
            worker,
            owner,
            reply,
        });
        // No answer: scitqd is stopping; the session ends with the server anyway.
        rx.await.unwrap_or(Ok(()))
    }

    /// Why a pending task does not run yet, in plain words.
    pub async fn explain(&self, task: Queued) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Explain { task, reply });
        rx.await.unwrap_or_default()
    }

    /// Active executions per connected worker.
    pub async fn active(&self) -> HashMap<WorkerId, u32> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Active(tx));
        rx.await.unwrap_or_default()
    }

    /// The last host figures of each connected worker, and when they came.
    pub async fn stats(&self) -> HashMap<WorkerId, (HostStats, std::time::SystemTime)> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Stats(tx));
        rx.await.unwrap_or_default()
    }

    /// The prefetch in force per connected worker, and whether its agent adapts it.
    pub async fn prefetch(&self) -> HashMap<WorkerId, (u32, bool)> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Prefetch(tx));
        rx.await.unwrap_or_default()
    }
}

/// Who holds a worker's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub session: u64,
    /// The agent process (random per process; empty from agents that do not say).
    pub instance: String,
    pub peer: Option<std::net::SocketAddr>,
    pub since: std::time::SystemTime,
}

/// The response stream of a connected worker's live session.
struct Stream {
    tx: AgentTx,
    owner: Owner,
}

impl Stream {
    fn push(&self, message: ToAgent) {
        let _ = self.tx.send(Ok(message));
    }

    fn end(&self, err: SessionError) {
        let _ = self.tx.send(Err(err));
    }
}

pub struct Scheduler {
    store: Store,
    hub: Hub,
    registries: crate::core::registry::Registries,
    queue: Queue,
    pool: Pool,
    streams: HashMap<WorkerId, Stream>,
    leases: Leases,
    /// Workers to mark offline before anything else is answered (in order with the Hello
    /// of their next session, which marks them online).
    offline: Vec<WorkerId>,
    /// Claims answered once `offline` is committed.
    detached: Vec<oneshot::Sender<Result<(), Owner>>>,
    /// Sessions that claimed their worker and have not connected yet.
    claims: HashMap<WorkerId, Owner>,
    /// The last heartbeat figures of connected workers (shown, never stored).
    stats: HashMap<WorkerId, (HostStats, std::time::SystemTime)>,
    dirty: bool,
    /// When the loop last woke up with something to do: where the dispatch latency of the
    /// assignments it leads to starts.
    woke: Instant,
}

impl Scheduler {
    /// Fills the queue from the database and starts the loop. Workers that were connected
    /// before a restart get a fresh lease to come back.
    pub async fn start(
        store: Store,
        hub: Hub,
        lease: Duration,
        registries: crate::core::registry::Registries,
        cancel: CancellationToken,
    ) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), crate::persistence::StoreError>
    {
        let mut queue = Queue::default();
        for batch in crate::persistence::tasks::stopped_batches(&store).await? {
            queue.set_stopped(&batch, true);
        }
        for q in crate::persistence::tasks::pending(&store).await? {
            queue.push(&q.batch, q.priority, q.id);
        }
        let mut leases = Leases::new(lease);
        let now = std::time::Instant::now();
        for worker in workers::all_offline(&store).await? {
            leases.disconnected(worker, now);
        }
        tracing::info!(queued = queue.len(), "scheduler ready");
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            store,
            hub,
            registries,
            queue,
            pool: Pool::default(),
            streams: HashMap::new(),
            leases,
            offline: Vec::new(),
            detached: Vec::new(),
            claims: HashMap::new(),
            stats: HashMap::new(),
            dirty: true,
            woke: Instant::now(),
        };
        let join = tokio::spawn(scheduler.run(rx, cancel));
        Ok((SchedulerHandle { tx }, join))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, cancel: CancellationToken) {
        let mut commands = Vec::with_capacity(1024);
        loop {
            let next_lease = self.leases.next().map(Instant::from_std);
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = rx.recv_many(&mut commands, 1024) => {
                    if n == 0 {
                        break;
                    }
                    self.woke = Instant::now();
                    for command in commands.drain(..) {
                        self.handle(command);
                    }
                    self.mark_offline().await;
                }
                _ = sleep_until(next_lease) => {
                    self.woke = Instant::now();
                    self.expire_leases().await
                }
            }
            while self.dirty {
                self.dirty = false;
                self.dispatch().await;
            }
        }
        tracing::debug!("scheduler stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                worker,
                session,
                tx,
                settings,
                active,
            } => {
                self.leases.connected(worker);
                self.pool.connect(worker, session, settings, active);
                let owner = match self.claims.remove(&worker) {
                    Some(owner) if owner.session == session => owner,
                    other => {
                        // Not this session's claim (it cannot happen: a claim holds until
                        // its session connects or ends): keep it, and go on.
                        if let Some(other) = other {
                            self.claims.insert(worker, other);
                        }
                        Owner {
                            session,
                            instance: String::new(),
                            peer: None,
                            since: std::time::SystemTime::now(),
                        }
                    }
                };
                if let Some(old) = self.streams.insert(worker, Stream { tx, owner }) {
                    old.end(SessionError::Replaced);
                }
                self.dirty = true;
            }
            Command::Disconnect { worker, session } => {
                if self
                    .claims
                    .get(&worker)
                    .is_some_and(|c| c.session == session)
                {
                    self.claims.remove(&worker);
                }
                if self.pool.disconnect(worker, session) {
                    self.streams.remove(&worker);
                    self.stats.remove(&worker);
                    self.leases.disconnected(worker, std::time::Instant::now());
                    self.offline.push(worker);
                }
            }
            Command::Claim {
                worker,
                owner,
                reply,
            } => {
                let holder = self
                    .streams
                    .get(&worker)
                    .map(|s| &s.owner)
                    .or_else(|| self.claims.get(&worker));
                if let Some(holder) = holder.filter(|h| h.instance != owner.instance) {
                    let _ = reply.send(Err(holder.clone()));
                    return;
                }
                self.claims.insert(worker, owner);
                if let Some(session) = self.pool.session(worker) {
                    self.pool.disconnect(worker, session);
                    if let Some(old) = self.streams.remove(&worker) {
                        old.end(SessionError::Replaced);
                    }
                    // Should the new Hello fail, the lease runs as for any disconnection.
                    self.leases.disconnected(worker, std::time::Instant::now());
                }
                self.detached.push(reply);
            }
            Command::Finished { worker, count } => {
                if self.pool.release(worker, count) {
                    self.dirty = true;
                }
            }
            Command::Enqueue(queued) => {
                for q in queued {
                    self.queue.push(&q.batch, q.priority, q.id);
                }
                self.dirty = true;
            }
            Command::Dequeue(queued) => {
                for q in queued {
                    self.queue.remove(&q.batch, q.priority, q.id);
                }
            }
            Command::BatchStopped { batch, stopped } => {
                self.queue.set_stopped(&batch, stopped);
                self.dirty = true;
            }
            Command::BatchDeleted { batch } => self.queue.remove_batch(&batch),
            Command::Settings { worker, settings } => {
                let told = settings.clone();
                if let Some(change) = self.pool.set_settings(worker, settings)
                    && let Some(stream) = self.streams.get(&worker)
                {
                    stream.push(ToAgent::Settings(told));
                    if change.drain {
                        stream.push(ToAgent::Drain);
                    }
                    self.dirty = true;
                }
            }
            Command::Signal { targets, signal } => {
                for (execution, worker) in targets {
                    let Some(stream) = self.streams.get(&worker) else {
                        continue;
                    };
                    stream.push(ToAgent::Signal { execution, signal });
                    if signal == Signal::Cancel {
                        // The agent forgets it without a report.
                        self.pool.release(worker, 1);
                        self.dirty = true;
                    }
                }
            }
            Command::Explain { task, reply } => {
                let _ = reply.send(self.pool.explain(&self.queue, &task));
            }
            Command::Active(reply) => {
                let _ = reply.send(self.pool.active());
            }
            Command::AgentPrefetch { worker, prefetch } => {
                if self.pool.agent_prefetch(worker, prefetch) {
                    self.dirty = true;
                }
            }
            Command::Prefetch(reply) => {
                let _ = reply.send(self.pool.prefetch());
            }
            Command::AgentStats { worker, stats } => {
                if self.streams.contains_key(&worker) {
                    self.stats
                        .insert(worker, (stats, std::time::SystemTime::now()));
                }
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats.clone());
            }
        }
    }

    /// Hands out tasks round-robin to workers with free slots, then commits and pushes.
    async fn dispatch(&mut self) {
        let picks = self.pool.pick(&mut self.queue);
        if picks.is_empty() {
            return;
        }
        let pairs: Vec<(TaskId, WorkerId)> = picks.iter().map(|(q, w)| (q.id, *w)).collect();
        match executions::assign(&self.store, pairs).await {
            Ok(assigned) => {
                let metrics = crate::metrics::metrics();
                metrics.executions_started.inc_by(assigned.len() as u64);
                let mut touched = Vec::with_capacity(assigned.len());
                for assignment in assigned {
                    let credentials = self.registries.for_image(&assignment.spec.container);
                    touched.push(assignment.task);
                    if let Some(stream) = self.streams.get(&assignment.worker) {
                        stream.push(ToAgent::Assignment {
                            assignment: Box::new(assignment),
                            credentials,
                        });
                    }
                }
                let latency = self.woke.elapsed().as_secs_f64();
                for _ in &touched {
                    metrics.dispatch_latency.observe(latency);
                }
                // Picked tasks the database no longer had pending (paused, deleted,
                // edited): free their slots and look again.
                for (queued, worker) in &picks {
                    if !touched.contains(&queued.id) {
                        self.pool.release(*worker, 1);
                        self.dirty = !self.queue.is_empty();
                    }
                }
                self.hub.notify(touched);
            }
            Err(err) => {
                tracing::error!(error = %err, "could not commit assignments; tasks stay queued");
                for (queued, worker) in picks {
                    self.pool.release(worker, 1);
                    self.queue.push(&queued.batch, queued.priority, queued.id);
                }
            }
        }
    }

    /// Commits the offline marks of this round, then answers the detach requests: a Hello
    /// that follows writes its online mark after them.
    async fn mark_offline(&mut self) {
        for worker in std::mem::take(&mut self.offline) {
            if let Err(err) = workers::mark(&self.store, worker, "offline").await {
                tracing::warn!(%worker, error = %err, "could not mark worker offline");
            }
        }
        for reply in self.detached.drain(..) {
            let _ = reply.send(Ok(()));
        }
    }

    async fn expire_leases(&mut self) {
        let now = std::time::Instant::now();
        for worker in self.leases.due(now) {
            match crate::persistence::recovery::expire_lease(&self.store, worker).await {
                Ok((requeued, touched)) => {
                    if !touched.is_empty() {
                        tracing::warn!(%worker, executions = touched.len(), "lease expired, executions failed as lost");
                    }
                    for q in requeued {
                        self.queue.push(&q.batch, q.priority, q.id);
                    }
                    self.hub.notify(touched);
                    self.dirty = true;
                }
                Err(err) => {
                    tracing::error!(%worker, error = %err, "could not expire lease; retrying soon");
                    self.leases.retry(worker, now);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
