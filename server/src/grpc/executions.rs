//! ExecutionService: attempts and their output, stored or followed live, through
//! `service::ops`.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use scitq_proto::v1;
use scitq_proto::v1::execution_service_server::ExecutionService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{State, convert, status};
use crate::auth::require_admin;
use crate::core::ids::{ExecutionId, TaskId, WorkerId};
use crate::core::state::ExecState;
use crate::service::ops::ExecutionFilter;

pub struct Executions(pub State);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::OutputChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutionService for Executions {
    async fn list_executions(
        &self,
        request: Request<v1::ListExecutionsRequest>,
    ) -> Result<Response<v1::ListExecutionsResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let states = req
            .state
            .iter()
            .map(|s| {
                v1::ExecutionState::try_from(*s)
                    .ok()
                    .and_then(ExecState::from_proto)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown execution state {s}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = ExecutionFilter {
            task: (req.task_id != 0).then_some(TaskId(req.task_id)),
            batch: req.batch,
            states,
            worker: req.worker_id.map(WorkerId),
            after_id: req.after_id,
            limit: u64::from(req.limit),
        };
        let (executions, next_after_id) =
            self.0.ops.list_executions(filter).await.map_err(status)?;
        Ok(Response::new(v1::ListExecutionsResponse {
            executions: executions.into_iter().map(convert::execution).collect(),
            next_after_id,
        }))
    }

    async fn get_output(
        &self,
        request: Request<v1::GetOutputRequest>,
    ) -> Result<Response<v1::GetOutputResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let output = self
            .0
            .ops
            .output(TaskId(req.task_id), req.execution_id.map(ExecutionId))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::GetOutputResponse {
            execution_id: output.execution.map_or(0, |e| e.0),
            chunks: output.chunks.into_iter().map(convert::chunk).collect(),
        }))
    }

    type FollowOutputStream = ChunkStream;

    async fn follow_output(
        &self,
        request: Request<v1::FollowOutputRequest>,
    ) -> Result<Response<Self::FollowOutputStream>, Status> {
        require_admin(&request)?;
        let task = TaskId(request.into_inner().task_id);
        let shutdown = self.0.shutdown.clone();
        let follow = self
            .0
            .ops
            .follow_output(task, shutdown.clone())
            .await
            .map_err(status)?;
        let chunks =
            ReceiverStream::new(follow).map(|item| item.map(convert::chunk).map_err(status));
        Ok(Response::new(Box::pin(super::until_shutdown(
            chunks, &shutdown,
        ))))
    }
}
