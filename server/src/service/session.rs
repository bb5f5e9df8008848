//! The agent session protocol, once messages are decoded (`grpc/session.rs`): each batch of
//! what an agent sent is queued to the store writer without waiting for the commit, so that
//! while one group commits the next messages are read and share the next transaction; an
//! acker awaits the commits in order, then acknowledges the highest `seq`, tells the
//! scheduler which slots freed, re-queues retries, promotes dependants and wakes followers.
//! Output read and not yet committed is bounded per session ([`IN_FLIGHT_BYTES`]): past it
//! the session stops reading and HTTP/2 flow control holds the agent back.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use scitq_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;

use super::hub::Hub;
use super::scheduler::{AgentTx, Command, SchedulerHandle};
use crate::core::agent::AgentEvent;
use crate::core::ids::WorkerId;
use crate::persistence::Store;
use crate::persistence::executions::{self, Applied};
use crate::persistence::writer::Pending;

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

/// A batch of decoded agent messages.
pub struct Inbound {
    /// The highest `seq` in it, acknowledged once its events are committed.
    pub last_seq: u64,
    pub events: Vec<AgentEvent>,
    /// The transport broke after these messages (agent gone, network cut).
    pub broke: Option<Status>,
}

/// Runs a session until the agent's stream ends; acknowledgements go to `tx`.
pub async fn run(
    context: Context,
    worker: WorkerId,
    batches: impl Stream<Item = Result<Inbound, Status>> + Unpin,
    tx: &AgentTx,
) -> Result<(), Status> {
    let (commits_tx, commits_rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let acker = tokio::spawn(acknowledge(context.clone(), worker, commits_rx, tx.clone()));
    let result = queue(&context, worker, batches, &commits_tx, &budget).await;
    drop(commits_tx);
    let acked = acker
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("acker failed: {e}"))));
    result.and(acked)
}

/// The last seq of a batch, its pending write, and the share of the in-flight budget it
/// holds until committed.
type Commit = (u64, Option<Pending<Applied>>, Option<OwnedSemaphorePermit>);

async fn queue(
    state: &Context,
    worker: WorkerId,
    mut batches: impl Stream<Item = Result<Inbound, Status>> + Unpin,
    commits: &mpsc::UnboundedSender<Commit>,
    budget: &Arc<Semaphore>,
) -> Result<(), Status> {
    while let Some(batch) = batches.next().await {
        let Inbound {
            last_seq,
            events,
            broke: stream_error,
        } = batch?;
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
                    .map_err(|_| Status::internal("session budget closed"))?,
            )
        };
        let pending = if events.is_empty() {
            None
        } else {
            Some(
                executions::apply(&state.store, worker, events)
                    .await
                    .map_err(|e| Status::aborted(format!("could not apply agent updates: {e}")))?,
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
) -> Result<(), Status> {
    while let Some((seq, pending, permit)) = commits.recv().await {
        if let Some(pending) = pending {
            let applied = pending
                .await
                .map_err(|e| Status::aborted(format!("could not apply agent updates: {e}")))?;
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
            let _ = tx.send(Ok(v1::ServerMessage {
                kind: Some(v1::server_message::Kind::Ack(v1::Ack { seq })),
            }));
        }
    }
    Ok(())
}
