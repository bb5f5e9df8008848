//! The scheduler: a service loop that owns the queue of pending tasks and the connected
//! workers, and pushes assignments over their streams as soon as they have free slots.
//! Everyone else talks to it through a cheap [`SchedulerHandle`].
//!
//! Dispatch cost does not depend on queue length: one B-tree pop per task. Dispatches are
//! grouped: while one batch of assignments commits, new events queue up and are handled
//! together in the next round.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use scitq_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::hub::Hub;
use super::ids::{ExecutionId, TaskId, WorkerId};
use super::queue::Queue;
use crate::persistence::tasks::Queued;
use crate::persistence::workers::WorkerSettings;
use crate::persistence::{Store, executions, workers};

/// Messages to an agent, as the gRPC response stream expects them.
pub type AgentTx = mpsc::UnboundedSender<Result<v1::ServerMessage, Status>>;

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
        signal: v1::Signal,
    },
    Active(oneshot::Sender<HashMap<WorkerId, u32>>),
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
}

struct Connected {
    session: u64,
    tx: AgentTx,
    settings: WorkerSettings,
    active: u32,
}

impl Connected {
    fn free(&self) -> u32 {
        if self.settings.paused || self.settings.draining {
            return 0;
        }
        (self.settings.concurrency + self.settings.prefetch).saturating_sub(self.active)
    }

    fn push(&self, kind: v1::server_message::Kind) {
        let _ = self.tx.send(Ok(v1::ServerMessage { kind: Some(kind) }));
    }
}

pub struct Scheduler {
    store: Store,
    hub: Hub,
    lease: Duration,
    registries: crate::core::registry::Registries,
    queue: Queue,
    workers: BTreeMap<WorkerId, Connected>,
    /// Disconnected workers and when their lease ends.
    leases: HashMap<WorkerId, Instant>,
    dirty: bool,
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
        let deadline = Instant::now() + lease;
        let leases = workers::all_offline(&store)
            .await?
            .into_iter()
            .map(|w| (w, deadline))
            .collect();
        tracing::info!(queued = queue.len(), "scheduler ready");
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            store,
            hub,
            lease,
            registries,
            queue,
            workers: BTreeMap::new(),
            leases,
            dirty: true,
        };
        let join = tokio::spawn(scheduler.run(rx, cancel));
        Ok((SchedulerHandle { tx }, join))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, cancel: CancellationToken) {
        let mut commands = Vec::with_capacity(1024);
        loop {
            let next_lease = self.leases.values().min().copied();
            tokio::select! {
                _ = cancel.cancelled() => break,
                n = rx.recv_many(&mut commands, 1024) => {
                    if n == 0 {
                        break;
                    }
                    for command in commands.drain(..) {
                        self.handle(command);
                    }
                }
                _ = sleep_until(next_lease) => self.expire_leases().await,
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
                self.leases.remove(&worker);
                let new = Connected {
                    session,
                    tx,
                    settings,
                    active,
                };
                if let Some(old) = self.workers.insert(worker, new) {
                    let _ = old.tx.send(Err(Status::aborted(
                        "replaced by a newer session of this worker",
                    )));
                }
                self.dirty = true;
            }
            Command::Disconnect { worker, session } => {
                if self
                    .workers
                    .get(&worker)
                    .is_some_and(|w| w.session == session)
                {
                    self.workers.remove(&worker);
                    self.leases.insert(worker, Instant::now() + self.lease);
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(err) = workers::mark(&store, worker, "offline").await {
                            tracing::warn!(%worker, error = %err, "could not mark worker offline");
                        }
                    });
                }
            }
            Command::Finished { worker, count } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.active = w.active.saturating_sub(count);
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
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.push(v1::server_message::Kind::Settings(settings.to_proto()));
                    if settings.draining && !w.settings.draining {
                        w.push(v1::server_message::Kind::Drain(v1::Drain {}));
                    }
                    w.settings = settings;
                    self.dirty = true;
                }
            }
            Command::Signal { targets, signal } => {
                for (execution, worker) in targets {
                    let Some(w) = self.workers.get_mut(&worker) else {
                        continue;
                    };
                    w.push(v1::server_message::Kind::Signal(v1::SignalExecution {
                        execution_id: execution.0,
                        signal: signal as i32,
                    }));
                    if signal == v1::Signal::Cancel {
                        // The agent forgets it without a report.
                        w.active = w.active.saturating_sub(1);
                        self.dirty = true;
                    }
                }
            }
            Command::Explain { task, reply } => {
                let _ = reply.send(self.explain(&task));
            }
            Command::Active(reply) => {
                let _ = reply.send(self.workers.iter().map(|(id, w)| (*id, w.active)).collect());
            }
        }
    }

    /// Reasons, in plain words, why a pending task is not running.
    fn explain(&self, task: &Queued) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.queue.is_stopped(&task.batch) {
            reasons.push(format!(
                "batch {:?} is stopped: run `scitqctl batch go {}`",
                task.batch, task.batch
            ));
        }
        if self.workers.is_empty() {
            reasons.push("no worker is connected".to_owned());
            return reasons;
        }
        let serving: Vec<&Connected> = self
            .workers
            .values()
            .filter(|w| w.settings.batch.as_deref().is_none_or(|b| b == task.batch))
            .collect();
        if serving.is_empty() {
            reasons.push(format!(
                "no connected worker serves batch {:?} (every one is limited to another batch)",
                task.batch
            ));
            return reasons;
        }
        let free: u32 = serving.iter().map(|w| w.free()).sum();
        if serving
            .iter()
            .all(|w| w.settings.paused || w.settings.draining)
        {
            reasons.push("every worker that serves its batch is paused or draining".to_owned());
        } else if free == 0 {
            reasons.push(format!(
                "every slot is busy on the {} worker(s) that serve its batch",
                serving.len()
            ));
        }
        match self.queue.position(&task.batch, task.priority, task.id) {
            Some(0) => reasons.push("it is next in its batch's queue".to_owned()),
            Some(n) => reasons.push(format!("{n} task(s) of its batch go before it")),
            None => reasons.push("it is about to be assigned".to_owned()),
        }
        reasons
    }

    /// Hands out tasks round-robin to workers with free slots, then commits and pushes.
    async fn dispatch(&mut self) {
        let mut picks: Vec<(TaskId, WorkerId)> = Vec::new();
        let mut popped: HashMap<TaskId, Queued> = HashMap::new();
        loop {
            let mut progressed = false;
            for (id, worker) in self.workers.iter_mut() {
                if worker.free() == 0 {
                    continue;
                }
                let Some((task, batch, priority)) =
                    self.queue.pop(worker.settings.batch.as_deref())
                else {
                    continue;
                };
                worker.active += 1;
                picks.push((task, *id));
                popped.insert(
                    task,
                    Queued {
                        id: task,
                        batch,
                        priority,
                    },
                );
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if picks.is_empty() {
            return;
        }
        match executions::assign(&self.store, picks.clone()).await {
            Ok(assigned) => {
                let mut touched = Vec::with_capacity(assigned.len());
                for (worker, mut assignment) in assigned {
                    let task = TaskId(assignment.task_id);
                    if let Some(spec) = &assignment.spec {
                        assignment.registry_credentials =
                            self.registries.for_image(&spec.container);
                    }
                    popped.remove(&task);
                    touched.push(task);
                    if let Some(w) = self.workers.get(&worker) {
                        w.push(v1::server_message::Kind::Assignment(assignment));
                    }
                }
                // Picked tasks the database no longer had pending (paused, deleted,
                // edited): free their slots and look again.
                for (task, worker) in picks {
                    if popped.contains_key(&task)
                        && let Some(w) = self.workers.get_mut(&worker)
                    {
                        w.active = w.active.saturating_sub(1);
                        self.dirty = !self.queue.is_empty();
                    }
                }
                self.hub.notify(touched);
            }
            Err(err) => {
                tracing::error!(error = %err, "could not commit assignments; tasks stay queued");
                for (task, worker) in picks {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.active = w.active.saturating_sub(1);
                    }
                    if let Some(q) = popped.remove(&task) {
                        self.queue.push(&q.batch, q.priority, q.id);
                    }
                }
            }
        }
    }

    async fn expire_leases(&mut self) {
        let now = Instant::now();
        let due: Vec<WorkerId> = self
            .leases
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(w, _)| *w)
            .collect();
        for worker in due {
            self.leases.remove(&worker);
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
                    self.leases.insert(worker, now + Duration::from_secs(5));
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
