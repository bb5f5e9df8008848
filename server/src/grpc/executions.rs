//! ExecutionService: attempts and their output, stored or followed live.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use scitq_proto::v1;
use scitq_proto::v1::execution_service_server::ExecutionService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{State, convert, status};
use crate::auth::require_admin;
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::state::TaskStatus;
use crate::persistence::entities::log_chunk;
use crate::persistence::{executions, tasks, workers};

pub struct Executions(pub State);

fn chunk(row: log_chunk::Model) -> v1::OutputChunk {
    v1::OutputChunk {
        execution_id: row.execution_id,
        stream: row.stream,
        offset: row.offset as u64,
        data: row.data,
    }
}

/// Turns stored rows into chunks, with a marker where the middle of a too long output
/// was dropped (a jump in a stream's offsets).
#[derive(Default)]
struct Gaps(HashMap<(i64, i32), u64>);

impl Gaps {
    fn convert(&mut self, row: log_chunk::Model) -> Vec<v1::OutputChunk> {
        let key = (row.execution_id, row.stream);
        let expected = self.0.get(&key).copied().unwrap_or(0);
        let offset = row.offset as u64;
        self.0.insert(key, offset + row.data.len() as u64);
        let mut out = Vec::with_capacity(2);
        if offset > expected {
            let stream = if row.stream == v1::OutputStream::Stderr as i32 {
                "stderr"
            } else {
                "stdout"
            };
            out.push(v1::OutputChunk {
                execution_id: row.execution_id,
                stream: row.stream,
                offset: expected,
                data: format!(
                    "\n[scitq: {} bytes of {stream} dropped here: the output passed the \
                     server's max_output_mib]\n",
                    offset - expected
                )
                .into_bytes(),
            });
        }
        out.push(chunk(row));
        out
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::OutputChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutionService for Executions {
    async fn list_executions(
        &self,
        request: Request<v1::ListExecutionsRequest>,
    ) -> Result<Response<v1::ListExecutionsResponse>, Status> {
        require_admin(&request)?;
        let task = TaskId(request.into_inner().task_id);
        let db = &self.0.store.db;
        tasks::get(db, task).await.map_err(status)?;
        let rows = executions::of_task(db, task).await.map_err(status)?;
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if let std::collections::hash_map::Entry::Vacant(e) = names.entry(row.worker_id) {
                let name = workers::get(db, WorkerId(row.worker_id))
                    .await
                    .map(|w| w.name)
                    .unwrap_or_default();
                e.insert(name);
            }
            out.push(convert::execution(row, names[&row.worker_id].clone()));
        }
        Ok(Response::new(v1::ListExecutionsResponse {
            executions: out,
        }))
    }

    async fn get_output(
        &self,
        request: Request<v1::GetOutputRequest>,
    ) -> Result<Response<v1::GetOutputResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let db = &self.0.store.db;
        let task = tasks::get(db, TaskId(req.task_id)).await.map_err(status)?;
        let execution = match req.execution_id {
            Some(id) => {
                let row = executions::get(db, ExecutionId(id)).await.map_err(status)?;
                if row.task_id != task.id {
                    return Err(Status::not_found(format!(
                        "execution {id} is not an execution of task {}",
                        task.id
                    )));
                }
                Some(id)
            }
            None => task.execution_id,
        };
        let Some(execution) = execution else {
            return Ok(Response::new(v1::GetOutputResponse::default()));
        };
        let mut gaps = Gaps::default();
        let chunks = executions::output(db, ExecutionId(execution))
            .await
            .map_err(status)?
            .into_iter()
            .flat_map(|row| gaps.convert(row))
            .collect();
        Ok(Response::new(v1::GetOutputResponse {
            execution_id: execution,
            chunks,
        }))
    }

    type FollowOutputStream = ChunkStream;

    async fn follow_output(
        &self,
        request: Request<v1::FollowOutputRequest>,
    ) -> Result<Response<Self::FollowOutputStream>, Status> {
        require_admin(&request)?;
        let task = TaskId(request.into_inner().task_id);
        let state = self.0.clone();
        let shutdown = state.shutdown.clone();
        // Subscribe before the first read so nothing committed in between is missed.
        let wake = state.hub.subscribe(task);
        let first = tasks::get(&state.store.db, task).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            if let Err(err) = follow(state, task, first.execution_id, wake, &tx).await {
                let _ = tx.send(Err(err)).await;
            }
        });
        Ok(Response::new(Box::pin(super::until_shutdown(
            ReceiverStream::new(rx),
            &shutdown,
        ))))
    }
}

/// Where a follower is in a task's stored output.
struct Reader {
    /// Last chunk row sent (or skipped).
    cursor: i64,
    /// Chunks of executions before this one are history, not shown.
    skip_before: i64,
    gaps: Gaps,
}

impl Reader {
    /// Sends every chunk stored since the last call; false when the client went away.
    async fn send_new(
        &mut self,
        db: &sea_orm::DatabaseConnection,
        task: TaskId,
        tx: &mpsc::Sender<Result<v1::OutputChunk, Status>>,
    ) -> Result<bool, Status> {
        loop {
            let rows = executions::output_after(db, task, self.cursor)
                .await
                .map_err(status)?;
            let n = rows.len();
            for row in rows {
                self.cursor = row.id;
                if row.execution_id < self.skip_before {
                    continue;
                }
                self.skip_before = row.execution_id;
                for piece in self.gaps.convert(row) {
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

/// Streams a task's output from its current execution on, until the task is final.
async fn follow(
    state: State,
    task: TaskId,
    first_execution: Option<i64>,
    mut wake: tokio::sync::watch::Receiver<u64>,
    tx: &mpsc::Sender<Result<v1::OutputChunk, Status>>,
) -> Result<(), Status> {
    let db = &state.store.db;
    // Start at the current execution's first chunk: earlier attempts are history.
    let mut reader = Reader {
        cursor: 0,
        skip_before: first_execution.unwrap_or(0),
        gaps: Gaps::default(),
    };
    loop {
        wake.mark_unchanged();
        if !reader.send_new(db, task, tx).await? {
            return Ok(()); // the client went away
        }
        let row = match tasks::get(db, task).await {
            Ok(row) => row,
            Err(crate::persistence::StoreError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(status(err)),
        };
        if row.status.parse::<TaskStatus>().is_ok_and(|s| s.is_final()) {
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
