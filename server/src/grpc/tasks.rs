//! TaskService: decodes requests into domain inputs, calls `service::ops`, encodes.

use scitq_proto::v1;
use scitq_proto::v1::task_service_server::TaskService;
use tonic::{Request, Response, Status};

use super::{State, convert, status};
use crate::auth::require_admin;
use crate::core::ids::TaskId;
use crate::service::ops::{StopSignal, TaskQuery};

pub struct Tasks(pub State);

#[tonic::async_trait]
impl TaskService for Tasks {
    async fn create_tasks(
        &self,
        request: Request<v1::CreateTasksRequest>,
    ) -> Result<Response<v1::CreateTasksResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let specs = req
            .tasks
            .into_iter()
            .enumerate()
            .map(|(i, spec)| convert::decode_spec(i, spec))
            .collect::<Result<Vec<_>, Status>>()?;
        let ids = if req.resume {
            self.0.ops.create_tasks_resuming(specs).await
        } else {
            self.0.ops.create_tasks(specs).await
        }
        .map_err(status)?;
        Ok(Response::new(v1::CreateTasksResponse {
            ids: ids.into_iter().map(|id| id.0).collect(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let query = TaskQuery {
            batch: req.batch,
            statuses: req
                .status
                .iter()
                .map(|s| convert::decode_task_status(*s))
                .collect::<Result<_, _>>()?,
            name: req.name,
            ids: convert::task_ids(req.ids),
            after_id: req.after_id,
            limit: req.limit,
            ..Default::default()
        };
        let page = self.0.ops.list_tasks(query).await.map_err(status)?;
        Ok(Response::new(v1::ListTasksResponse {
            tasks: convert::tasks(page.tasks),
            next_after_id: page.next_after_id,
        }))
    }

    async fn get_task(
        &self,
        request: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let task = self.0.ops.task(id).await.map_err(status)?;
        Ok(Response::new(convert::task(task)))
    }

    async fn relaunch_task(
        &self,
        request: Request<v1::RelaunchTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let task = self
            .0
            .ops
            .relaunch_task(TaskId(req.id), req.command)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::task(task)))
    }

    async fn pause_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let task = self.0.ops.pause_task(id).await.map_err(status)?;
        Ok(Response::new(convert::task(task)))
    }

    async fn resume_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let task = self.0.ops.resume_task(id).await.map_err(status)?;
        Ok(Response::new(convert::task(task)))
    }

    async fn kill_task(&self, request: Request<v1::TaskRef>) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let task = self.0.ops.kill_task(id).await.map_err(status)?;
        Ok(Response::new(convert::task(task)))
    }

    async fn edit_tasks(
        &self,
        request: Request<v1::EditTasksRequest>,
    ) -> Result<Response<v1::EditTasksResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let selection = super::steering::selection(req.selector)?;
        let changes = super::steering::changes(req.changes)?;
        let tasks = self
            .0
            .ops
            .edit_tasks(selection, changes, req.dry_run)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::EditTasksResponse {
            tasks: convert::tasks(tasks),
            dry_run: req.dry_run,
        }))
    }

    async fn explain_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::ExplainTaskResponse>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let explained = self.0.ops.explain_task(id).await.map_err(status)?;
        Ok(Response::new(v1::ExplainTaskResponse {
            status: explained.status.to_proto() as i32,
            reasons: explained.reasons,
        }))
    }

    async fn list_batches(
        &self,
        request: Request<v1::ListBatchesRequest>,
    ) -> Result<Response<v1::ListBatchesResponse>, Status> {
        require_admin(&request)?;
        let batches = self
            .0
            .ops
            .batches()
            .await
            .map_err(status)?
            .into_iter()
            .map(|b| convert::batch(b.batch, b.counts))
            .collect();
        Ok(Response::new(v1::ListBatchesResponse { batches }))
    }

    async fn stop_batch(
        &self,
        request: Request<v1::StopBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let signal = match v1::Signal::try_from(req.signal) {
            Ok(v1::Signal::Unspecified) => None,
            Ok(v1::Signal::Term) => Some(StopSignal::Term),
            Ok(v1::Signal::Kill) => Some(StopSignal::Kill),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "batch stop takes TERM or KILL as signal",
                ));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown signal {}",
                    req.signal
                )));
            }
        };
        let batch = self
            .0
            .ops
            .stop_batch(&req.name, signal)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::batch(batch, Default::default())))
    }

    async fn suspend_batch(
        &self,
        request: Request<v1::SuspendBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let name = request.into_inner().name;
        let batch = self.0.ops.suspend_batch(&name).await.map_err(status)?;
        Ok(Response::new(convert::batch(batch, Default::default())))
    }

    async fn go_batch(
        &self,
        request: Request<v1::GoBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let name = request.into_inner().name;
        let batch = self.0.ops.go_batch(&name).await.map_err(status)?;
        Ok(Response::new(convert::batch(batch, Default::default())))
    }

    async fn delete_batch(
        &self,
        request: Request<v1::DeleteBatchRequest>,
    ) -> Result<Response<v1::DeleteBatchResponse>, Status> {
        require_admin(&request)?;
        let name = request.into_inner().name;
        let deleted = self.0.ops.delete_batch(&name).await.map_err(status)?;
        Ok(Response::new(v1::DeleteBatchResponse { deleted }))
    }

    async fn delete_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::DeleteTaskResponse>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        self.0.ops.delete_task(id).await.map_err(status)?;
        Ok(Response::new(v1::DeleteTaskResponse {}))
    }
}
