//! Executions and their output, stored or followed live.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ops, OpsError};
use crate::core::agent::Stream;
use crate::core::ids::{ExecutionId, TaskId};
use crate::core::model::{Execution, StoredChunk};
use crate::persistence::removal::{self, ExecutionFilter};
use crate::persistence::{StoreError, executions, tasks};

/// An execution's stored output, with a marker where the middle of a too long output was
/// dropped.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// None: the task never ran.
    pub execution: Option<ExecutionId>,
    pub chunks: Vec<StoredChunk>,
}

/// Adds a marker where a stream's offsets jump (the middle of a too long output was
/// dropped by the server's `max_output_mib`).
#[derive(Default)]
struct Gaps(HashMap<(ExecutionId, Stream), u64>);

impl Gaps {
    fn convert(&mut self, chunk: StoredChunk) -> Vec<StoredChunk> {
        let key = (chunk.execution, chunk.stream);
        let expected = self.0.get(&key).copied().unwrap_or(0);
        self.0.insert(key, chunk.offset + chunk.data.len() as u64);
        let mut out = Vec::with_capacity(2);
        if chunk.offset > expected {
            let stream = match chunk.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            out.push(StoredChunk {
                seq: chunk.seq,
                execution: chunk.execution,
                stream: chunk.stream,
                offset: expected,
                data: format!(
                    "\n[scitq: {} bytes of {stream} dropped here: the output passed the \
                     server's max_output_mib]\n",
                    chunk.offset - expected
                )
                .into_bytes(),
            });
        }
        out.push(chunk);
        out
    }
}

/// The channel a follower reads: chunks, or the error that ended the follow.
pub type Follow = mpsc::Receiver<Result<StoredChunk, OpsError>>;

/// Chunks a follower may have queued before it reads them.
const FOLLOW_QUEUE: usize = 64;

impl Ops {
    /// Every execution of a task, oldest first.
    pub async fn executions(&self, task: TaskId) -> Result<Vec<Execution>, OpsError> {
        tasks::get(&self.store.db, task).await?;
        Ok(executions::of_task(&self.store.db, task).await?)
    }

    /// Executions of every task matching a filter, oldest first, a page at a time.
    pub async fn list_executions(
        &self,
        mut filter: ExecutionFilter,
    ) -> Result<(Vec<Execution>, i64), OpsError> {
        let limit = match filter.limit {
            0 => u64::from(super::tasks::DEFAULT_LIMIT),
            n if n > u64::from(super::MAX_LIMIT) => {
                return Err(OpsError::LimitTooHigh { limit: n as u32 });
            }
            n => n,
        };
        filter.limit = limit;
        if let Some(task) = filter.task {
            tasks::get(&self.store.db, task).await?;
        }
        if let Some(batch) = &filter.batch {
            tasks::get_batch(&self.store.db, batch).await?;
        }
        let found = removal::executions(&self.store.db, filter).await?;
        let next = if found.len() as u64 == limit {
            found.last().map_or(0, |e| e.id.0)
        } else {
            0
        };
        Ok((found, next))
    }

    /// The stored output of a task's execution (its current one by default).
    pub async fn output(
        &self,
        task: TaskId,
        execution: Option<ExecutionId>,
    ) -> Result<Output, OpsError> {
        let db = &self.store.db;
        let current = tasks::get(db, task).await?;
        let execution = match execution {
            Some(id) => {
                if executions::task_of(db, id).await? != task {
                    return Err(OpsError::ForeignExecution {
                        execution: id,
                        task,
                    });
                }
                Some(id)
            }
            None => current.execution,
        };
        let Some(execution) = execution else {
            return Ok(Output::default());
        };
        let mut gaps = Gaps::default();
        let chunks = executions::output(db, execution)
            .await?
            .into_iter()
            .flat_map(|chunk| gaps.convert(chunk))
            .collect();
        Ok(Output {
            execution: Some(execution),
            chunks,
        })
    }

    /// Streams a task's output from its current execution on, through retries and
    /// relaunches, until the task is final (or `stop` is cancelled, or the reader goes).
    pub async fn follow_output(
        &self,
        task: TaskId,
        stop: CancellationToken,
    ) -> Result<Follow, OpsError> {
        // Subscribe before the first read so nothing committed in between is missed.
        let wake = self.hub.subscribe(task);
        let first = tasks::get(&self.store.db, task).await?;
        let (tx, rx) = mpsc::channel(FOLLOW_QUEUE);
        let ops = self.clone();
        tokio::spawn(async move {
            let followed = tokio::select! {
                r = ops.follow(task, first.execution, wake, &tx) => r,
                _ = stop.cancelled() => Ok(()),
            };
            if let Err(err) = followed {
                let _ = tx.send(Err(err)).await;
            }
        });
        Ok(rx)
    }

    async fn follow(
        &self,
        task: TaskId,
        first_execution: Option<ExecutionId>,
        mut wake: tokio::sync::watch::Receiver<u64>,
        tx: &mpsc::Sender<Result<StoredChunk, OpsError>>,
    ) -> Result<(), OpsError> {
        let db = &self.store.db;
        // Start at the current execution's first chunk: earlier attempts are history.
        let mut reader = Reader {
            cursor: 0,
            skip_before: first_execution.unwrap_or(ExecutionId(0)),
            gaps: Gaps::default(),
        };
        loop {
            wake.mark_unchanged();
            if !reader.send_new(db, task, tx).await? {
                return Ok(()); // the reader went away
            }
            let current = match tasks::get(db, task).await {
                Ok(current) => current,
                Err(StoreError::NotFound { .. }) => return Ok(()),
                Err(err) => return Err(err.into()),
            };
            if current.status.is_final() {
                // A last read: output committed with the final update is already there.
                reader.send_new(db, task, tx).await?;
                return Ok(());
            }
            // Wake on the next change, or re-check now and then (deleted tasks say nothing).
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return Ok(()) },
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }
}

/// Where a follower is in a task's stored output.
struct Reader {
    /// Last chunk sent (or skipped).
    cursor: i64,
    /// Chunks of executions before this one are history, not shown.
    skip_before: ExecutionId,
    gaps: Gaps,
}

impl Reader {
    /// Sends every chunk stored since the last call; false when the reader went away.
    async fn send_new(
        &mut self,
        db: &sea_orm::DatabaseConnection,
        task: TaskId,
        tx: &mpsc::Sender<Result<StoredChunk, OpsError>>,
    ) -> Result<bool, OpsError> {
        loop {
            let chunks = executions::output_after(db, task, self.cursor).await?;
            let n = chunks.len();
            for chunk in chunks {
                self.cursor = chunk.seq;
                if chunk.execution < self.skip_before {
                    continue;
                }
                self.skip_before = chunk.execution;
                for piece in self.gaps.convert(chunk) {
                    if tx.send(Ok(piece)).await.is_err() {
                        return Ok(false);
                    }
                }
            }
            if n < executions::OUTPUT_PAGE {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_offsets_gets_a_marker() {
        let chunk = |offset, data: &str| StoredChunk {
            seq: 1,
            execution: ExecutionId(3),
            stream: Stream::Stderr,
            offset,
            data: data.as_bytes().to_vec(),
        };
        let mut gaps = Gaps::default();
        assert_eq!(gaps.convert(chunk(0, "abc")).len(), 1);
        let out = gaps.convert(chunk(10, "xyz"));
        assert_eq!(out.len(), 2);
        let marker = String::from_utf8(out[0].data.clone()).unwrap();
        assert!(marker.contains("7 bytes of stderr dropped"), "{marker}");
        assert_eq!(out[0].offset, 3);
    }
}
