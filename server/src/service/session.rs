//! The agent session protocol, once messages are decoded (`grpc/session.rs`).
//!
//! Opening ([`hello`]): the worker's credential is checked (and issued at its first Hello,
//! `core::credential`), a live session of another agent process under the same name is
//! refused, a dead one of the same process is replaced, and what the agent holds is
//! reconciled, all before `Welcome`. A recruited agent's bearer is its enrollment token at
//! its first Hello, its own credential afterwards ([`Bearer::Agent`], `core::enroll`).
//!
//! Then each batch of
//! what an agent sent is queued to the store writer without waiting for the commit, so that
//! while one group commits the next messages are read and share the next transaction; an
//! acker awaits the commits in order, then acknowledges the highest `seq`, tells the
//! scheduler which slots freed, re-queues retries, promotes dependants and wakes followers.
//! Output read and not yet committed is bounded per session ([`IN_FLIGHT_BYTES`]): past it
//! the session stops reading and HTTP/2 flow control holds the agent back.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::hub::Hub;
use super::scheduler::{AgentTx, Command, Owner, SchedulerHandle};
use crate::core::agent::{AgentEvent, Hello, ToAgent};
use crate::core::ids::WorkerId;
use crate::persistence::executions::{self, Applied};
use crate::persistence::workers::{self, Welcomed};
use crate::persistence::writer::Pending;
use crate::persistence::{Store, StoreError};

/// Output bytes of one session read but not yet committed. Past it the session stops
/// reading, and HTTP/2 flow control holds the agent back: a task printing gigabytes fast
/// cannot pile them up in scitqd's memory.
const IN_FLIGHT_BYTES: usize = 8 << 20;

/// What a session needs from the rest of scitqd.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub scheduler: SchedulerHandle,
    pub hub: Hub,
}

/// Why a session could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A bad or missing credential for a worker that has one.
    #[error(transparent)]
    Credential(#[from] crate::core::credential::Refused),
    /// A used, expired or foreign enrollment token.
    #[error(transparent)]
    Enrollment(#[from] crate::core::enroll::Refused),
    /// A bearer that is neither an enrollment token nor the credential of the named worker.
    #[error("bad token: rejected by this server")]
    UnknownToken,
    /// Another agent process holds a live session of this worker.
    #[error(
        "worker {name:?} already has a live session, since {since} from {peer} (another agent \
         process under the same name): this one is refused; stop the other agent, or give \
         this one its own --name"
    )]
    Busy {
        name: String,
        since: String,
        peer: String,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OpenError {
    fn from(err: StoreError) -> OpenError {
        match err {
            StoreError::Credential(refused) => OpenError::Credential(refused),
            StoreError::Enrollment(refused) => OpenError::Enrollment(refused),
            StoreError::UnknownToken => OpenError::UnknownToken,
            other => OpenError::Store(other),
        }
    }
}

/// Why a session that was let in ended, short of the agent closing it.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A newer session of the same worker (the same agent process, reconnected) took over.
    #[error("replaced by a newer session of this worker")]
    Replaced,
    /// A message the edge could not decode (an agent newer than this server, or a broken
    /// one); the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// What the agent sent could not be committed; it sends it again in its next session.
    #[error("could not apply agent updates: {0}")]
    Apply(StoreError),
    /// A task of the session stopped on its own.
    #[error("{0}")]
    Internal(String),
}

/// A session that said Hello and was let in; its worker is claimed for it until it
/// connects ([`connect`]), or until this is dropped (the RPC ended before: the claim is
/// released, so it cannot lock the worker out).
pub struct Opened {
    pub session: u64,
    pub welcomed: Welcomed,
    claim: Claim,
}

/// Releases a worker's claim when dropped, unless the session connected.
struct Claim {
    scheduler: SchedulerHandle,
    worker: WorkerId,
    session: u64,
    held: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.held {
            self.scheduler.send(Command::Disconnect {
                worker: self.worker,
                session: self.session,
            });
        }
    }
}

/// Session numbers, unique for this scitqd's life.
static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How the agent's bearer token got it past the interceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// An API token (worker or admin): the Hello's credential alone decides.
    ApiToken,
    /// Another token (its SHA-256): the named worker's own credential, or an enrollment
    /// token (`core::enroll`).
    Agent(String),
}

/// Lets an agent in, or says why not (see the module doc).
pub async fn hello(
    context: &Context,
    hello: Hello,
    bearer: Bearer,
    peer: Option<std::net::SocketAddr>,
) -> Result<Opened, OpenError> {
    let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let owner = Owner {
        session,
        instance: hello.instance.clone(),
        peer,
        since: std::time::SystemTime::now(),
    };
    let name = hello.name.clone();
    let known = workers::by_name(&context.store, &name).await?;
    let stored = known.as_ref().and_then(|(_, stored)| stored.as_deref());
    let enrollment = match bearer {
        Bearer::ApiToken => None,
        // The worker's own credential as its bearer: the check below decides.
        Bearer::Agent(hash) if stored == Some(hash.as_str()) => None,
        Bearer::Agent(hash) => {
            // Checked before the claim, and again in the Hello's transaction, which decides.
            workers::enroll_check(
                &context.store.db,
                &hash,
                &name,
                stored,
                hello.credential.as_deref(),
            )
            .await?;
            Some(hash)
        }
    };
    let mut claim = None;
    if let Some((worker, stored)) = &known {
        // Checked before the claim, so an impostor learns nothing of the live session, and
        // again in the Hello's transaction, which decides.
        crate::core::credential::check(
            &name,
            worker.0,
            stored.as_deref(),
            hello.credential.as_deref(),
        )?;
        claim = Some(claim_worker(context, *worker, owner.clone(), &name).await?);
    }
    // Dropped on an error below: the claim is released.
    let prefetch_auto = hello.prefetch_auto;
    let mut welcomed = workers::hello(&context.store, hello, enrollment).await?;
    // Not stored: the agent says it in every Hello.
    welcomed.worker.settings.prefetch_auto = prefetch_auto;
    let claim = match claim {
        Some(claim) => claim,
        // A new worker: nothing to detach, but the claim says who holds it.
        None => claim_worker(context, welcomed.worker.id, owner, &name).await?,
    };
    Ok(Opened {
        session,
        welcomed,
        claim,
    })
}

async fn claim_worker(
    context: &Context,
    worker: WorkerId,
    owner: Owner,
    name: &str,
) -> Result<Claim, OpenError> {
    let session = owner.session;
    context
        .scheduler
        .claim(worker, owner)
        .await
        .map_err(|holder| busy(name, &holder))?;
    Ok(Claim {
        scheduler: context.scheduler.clone(),
        worker,
        session,
        held: true,
    })
}

/// Registers a session that was let in as its worker's live one: from now on it gets
/// assignments, settings and signals through `tx`.
pub fn connect(context: &Context, mut opened: Opened, tx: AgentTx) {
    let worker = &opened.welcomed.worker;
    let reconciled = &opened.welcomed.reconciled;
    context.scheduler.send(Command::Connect {
        worker: worker.id,
        session: opened.session,
        tx,
        settings: worker.settings.clone(),
        active: reconciled.active,
    });
    opened.claim.held = false;
    crate::metrics::metrics().sessions_opened.inc();
    context.scheduler.enqueue(reconciled.requeued.clone());
    context.hub.notify(reconciled.touched.iter().copied());
}

/// The session ended: its worker's slots and lease are the scheduler's to settle.
pub fn disconnect(context: &Context, worker: WorkerId, session: u64) {
    context
        .scheduler
        .send(Command::Disconnect { worker, session });
}

fn busy(name: &str, holder: &Owner) -> OpenError {
    let age = holder.since.elapsed().unwrap_or_default().as_secs();
    OpenError::Busy {
        name: name.to_owned(),
        since: format!("{age} s ago"),
        peer: holder
            .peer
            .map_or_else(|| "an unknown address".to_owned(), |p| p.to_string()),
    }
}

/// A batch of decoded agent messages.
pub struct Inbound {
    /// The highest `seq` in it, acknowledged once its events are committed.
    pub last_seq: u64,
    pub events: Vec<AgentEvent>,
    /// The transport broke after these messages (agent gone, network cut): why.
    pub broke: Option<String>,
}

/// Runs a session until the agent's stream ends; acknowledgements go to `tx`.
pub async fn run(
    context: Context,
    worker: WorkerId,
    batches: impl Stream<Item = Result<Inbound, SessionError>> + Unpin,
    tx: &AgentTx,
) -> Result<(), SessionError> {
    let metrics = crate::metrics::metrics();
    metrics.agent_sessions.inc();
    // Decremented however the session ends (an error, a panic of its task).
    let _open = scopeguard(|| {
        metrics.agent_sessions.dec();
    });
    let (commits_tx, commits_rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let acker = tokio::spawn(acknowledge(context.clone(), worker, commits_rx, tx.clone()));
    let result = queue(&context, worker, batches, &commits_tx, &budget).await;
    drop(commits_tx);
    let acked = acker
        .await
        .unwrap_or_else(|e| Err(SessionError::Internal(format!("acker failed: {e}"))));
    result.and(acked)
}

/// The last seq of a batch, its pending write, and the share of the in-flight budget it
/// holds until committed.
type Commit = (u64, Option<Pending<Applied>>, Option<OwnedSemaphorePermit>);

async fn queue(
    state: &Context,
    worker: WorkerId,
    mut batches: impl Stream<Item = Result<Inbound, SessionError>> + Unpin,
    commits: &mpsc::UnboundedSender<Commit>,
    budget: &Arc<Semaphore>,
) -> Result<(), SessionError> {
    while let Some(batch) = batches.next().await {
        let Inbound {
            last_seq,
            mut events,
            broke: stream_error,
        } = batch?;
        // Not stored: the scheduler holds it.
        events.retain(|event| match event {
            AgentEvent::Prefetch(prefetch) => {
                state.scheduler.send(Command::AgentPrefetch {
                    worker,
                    prefetch: *prefetch,
                });
                false
            }
            // Stored as a contact (the worker's last_contact); its figures are the scheduler's.
            AgentEvent::Heartbeat(stats) => {
                state.scheduler.send(Command::AgentStats {
                    worker,
                    stats: *stats,
                });
                true
            }
            _ => true,
        });
        let bytes: usize = events
            .iter()
            .map(|e| match e {
                AgentEvent::Output(chunk) => chunk.data.len(),
                _ => 0,
            })
            .sum();
        let permit = if bytes == 0 {
            None
        } else {
            let share = bytes.min(IN_FLIGHT_BYTES) as u32;
            Some(
                budget
                    .clone()
                    .acquire_many_owned(share)
                    .await
                    .map_err(|_| SessionError::Internal("session budget closed".into()))?,
            )
        };
        let pending = if events.is_empty() {
            None
        } else {
            Some(
                executions::apply(&state.store, worker, events)
                    .await
                    .map_err(SessionError::Apply)?,
            )
        };
        if commits.send((last_seq, pending, permit)).is_err() {
            return Ok(()); // the acker stopped on an error it reports itself
        }
        if let Some(err) = stream_error {
            // The transport broke (agent gone, network cut): not an error of ours.
            tracing::debug!(%worker, error = %err, "agent stream broke");
            return Ok(());
        }
    }
    Ok(())
}

/// Waits for each queued write in order; once committed, acknowledges it and tells the
/// scheduler and followers what changed.
async fn acknowledge(
    state: Context,
    worker: WorkerId,
    mut commits: mpsc::UnboundedReceiver<Commit>,
    tx: AgentTx,
) -> Result<(), SessionError> {
    while let Some((seq, pending, permit)) = commits.recv().await {
        if let Some(pending) = pending {
            let applied = pending.await.map_err(SessionError::Apply)?;
            if !applied.finished.is_empty() {
                state.scheduler.send(Command::Finished {
                    worker,
                    count: applied.finished.len() as u32,
                });
            }
            state.scheduler.enqueue(applied.requeued);
            state.hub.notify(applied.touched);
            if !applied.succeeded.is_empty()
                && state
                    .store
                    .has_dependencies
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                match executions::promote_dependants(&state.store, applied.succeeded).await {
                    Ok(ready) => {
                        state.hub.notify(ready.iter().map(|q| q.id));
                        state.scheduler.enqueue(ready);
                    }
                    Err(err) => tracing::error!(error = %err, "could not promote dependants"),
                }
            }
            if !applied.executions.is_empty() && state.hub.has_followers() {
                match executions::tasks_of(&state.store.db, &applied.executions).await {
                    Ok(tasks) => state.hub.notify(tasks),
                    Err(err) => tracing::warn!(error = %err, "could not wake followers"),
                }
            }
        }
        drop(permit);
        if seq > 0 {
            let _ = tx.send(Ok(ToAgent::Ack(seq)));
        }
    }
    Ok(())
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
