//! TaskService.

use scitq_proto::v1;
use scitq_proto::v1::task_service_server::TaskService;
use tonic::{Request, Response, Status};

use super::{State, convert, status};
use crate::auth::require_admin;
use crate::core::ids::TaskId;
use crate::core::state::TaskStatus;
use crate::core::task::{NewTask, SpecError, UriCheck, validate_batch_name};
use crate::persistence::tasks::{self, TaskFilter};
use crate::service::scheduler::Command;

/// Largest number of tasks in one CreateTasks call.
pub const MAX_TASKS_PER_CALL: usize = 100_000;
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;

pub struct Tasks(pub State);

/// Turns a glob (`*`, `?`) into a LIKE pattern.
pub fn glob_to_like(glob: &str) -> String {
    glob.chars()
        .map(|c| match c {
            '*' => '%',
            '?' => '_',
            c => c,
        })
        .collect()
}

fn batch_name(name: &str) -> Result<String, Status> {
    if name.trim().is_empty() {
        return Err(Status::invalid_argument("batch name is empty"));
    }
    validate_batch_name(0, name).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl TaskService for Tasks {
    async fn create_tasks(
        &self,
        request: Request<v1::CreateTasksRequest>,
    ) -> Result<Response<v1::CreateTasksResponse>, Status> {
        require_admin(&request)?;
        let specs = request.into_inner().tasks;
        if specs.is_empty() {
            return Err(Status::invalid_argument("no task given"));
        }
        if specs.len() > MAX_TASKS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} tasks in one call, the limit is {MAX_TASKS_PER_CALL}",
                specs.len()
            )));
        }
        let uris = UriCheck::new(&self.0.rclone_config);
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let task = NewTask::validate(i, spec)?;
                task.check_uris(i, &uris)?;
                Ok(task)
            })
            .collect::<Result<Vec<_>, SpecError>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let created = tasks::create(&self.0.store, tasks).await.map_err(status)?;
        let ids = created.ids.iter().map(|id| id.0).collect();
        self.0.scheduler.enqueue(created.queued);
        Ok(Response::new(v1::CreateTasksResponse { ids }))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let mut statuses = Vec::new();
        for raw in &req.status {
            let status = v1::TaskStatus::try_from(*raw)
                .ok()
                .and_then(TaskStatus::from_proto)
                .ok_or_else(|| Status::invalid_argument(format!("unknown task status {raw}")))?;
            statuses.push(status);
        }
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is over the maximum of {MAX_LIMIT}"
                )));
            }
            n => n,
        };
        let filter = TaskFilter {
            batch: req.batch,
            statuses,
            name_like: req.name.as_deref().map(glob_to_like),
            ids: req.ids.into_iter().map(TaskId).collect(),
            after_id: req.after_id,
            limit: limit as u64,
        };
        let rows = tasks::list(&self.0.store, filter).await.map_err(status)?;
        let next_after_id = if rows.len() == limit as usize {
            rows.last().map_or(0, |r| r.id)
        } else {
            0
        };
        let tasks = with_dependencies(&self.0, rows.iter().map(convert::task).collect()).await?;
        Ok(Response::new(v1::ListTasksResponse {
            tasks,
            next_after_id,
        }))
    }

    async fn get_task(
        &self,
        request: Request<v1::GetTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let id = TaskId(request.into_inner().id);
        let row = tasks::get(&self.0.store.db, id).await.map_err(status)?;
        let mut task = with_dependencies(&self.0, vec![convert::task(&row)]).await?;
        Ok(Response::new(task.remove(0)))
    }

    async fn relaunch_task(
        &self,
        request: Request<v1::RelaunchTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        if let Some(command) = &req.command {
            if command.trim().is_empty() {
                return Err(Status::invalid_argument("command is empty"));
            }
            if command.len() > crate::core::task::MAX_COMMAND_BYTES {
                return Err(Status::invalid_argument(format!(
                    "command is {} bytes, the limit is {}",
                    command.len(),
                    crate::core::task::MAX_COMMAND_BYTES
                )));
            }
        }
        let id = TaskId(req.id);
        let (row, queued) = tasks::relaunch(&self.0.store, id, req.command)
            .await
            .map_err(status)?;
        self.0.scheduler.enqueue(vec![queued]);
        self.0.hub.notify([id]);
        Ok(Response::new(convert::task(&row)))
    }

    async fn pause_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        super::steering::pause(&self.0, request.into_inner().id)
            .await
            .map(Response::new)
    }

    async fn resume_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        super::steering::resume(&self.0, request.into_inner().id)
            .await
            .map(Response::new)
    }

    async fn kill_task(&self, request: Request<v1::TaskRef>) -> Result<Response<v1::Task>, Status> {
        require_admin(&request)?;
        super::steering::kill(&self.0, request.into_inner().id)
            .await
            .map(Response::new)
    }

    async fn edit_tasks(
        &self,
        request: Request<v1::EditTasksRequest>,
    ) -> Result<Response<v1::EditTasksResponse>, Status> {
        require_admin(&request)?;
        super::steering::edit(&self.0, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn explain_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::ExplainTaskResponse>, Status> {
        require_admin(&request)?;
        super::steering::explain(&self.0, request.into_inner().id)
            .await
            .map(Response::new)
    }

    async fn list_batches(
        &self,
        request: Request<v1::ListBatchesRequest>,
    ) -> Result<Response<v1::ListBatchesResponse>, Status> {
        require_admin(&request)?;
        let batches = tasks::batches(&self.0.store)
            .await
            .map_err(status)?
            .into_iter()
            .map(|(row, counts)| v1::Batch {
                name: row.name,
                stopped: row.stopped,
                counts: counts.into_iter().collect(),
                suspended: row.suspended,
            })
            .collect();
        Ok(Response::new(v1::ListBatchesResponse { batches }))
    }

    async fn stop_batch(
        &self,
        request: Request<v1::StopBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let name = batch_name(&req.name)?;
        let signal = v1::Signal::try_from(req.signal)
            .map_err(|_| Status::invalid_argument(format!("unknown signal {}", req.signal)))?;
        if !matches!(
            signal,
            v1::Signal::Unspecified | v1::Signal::Term | v1::Signal::Kill
        ) {
            return Err(Status::invalid_argument(
                "batch stop takes TERM or KILL as signal",
            ));
        }
        let current = tasks::get_batch(&self.0.store.db, &name)
            .await
            .map_err(status)?;
        let (_, row) = tasks::set_batch_state(&self.0.store, name.clone(), true, current.suspended)
            .await
            .map_err(status)?;
        self.0.scheduler.send(Command::BatchStopped {
            batch: name.clone(),
            stopped: true,
        });
        if signal != v1::Signal::Unspecified {
            self.signal_batch(&name, signal).await?;
        }
        Ok(Response::new(batch_message(row)))
    }

    async fn suspend_batch(
        &self,
        request: Request<v1::SuspendBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let name = batch_name(&request.into_inner().name)?;
        let (_, row) = tasks::set_batch_state(&self.0.store, name.clone(), true, true)
            .await
            .map_err(status)?;
        self.0.scheduler.send(Command::BatchStopped {
            batch: name.clone(),
            stopped: true,
        });
        self.signal_batch(&name, v1::Signal::Pause).await?;
        Ok(Response::new(batch_message(row)))
    }

    async fn go_batch(
        &self,
        request: Request<v1::GoBatchRequest>,
    ) -> Result<Response<v1::Batch>, Status> {
        require_admin(&request)?;
        let name = batch_name(&request.into_inner().name)?;
        let (before, row) = tasks::set_batch_state(&self.0.store, name.clone(), false, false)
            .await
            .map_err(status)?;
        if before.suspended {
            self.signal_batch(&name, v1::Signal::Resume).await?;
        }
        self.0.scheduler.send(Command::BatchStopped {
            batch: name,
            stopped: false,
        });
        Ok(Response::new(batch_message(row)))
    }

    async fn delete_batch(
        &self,
        request: Request<v1::DeleteBatchRequest>,
    ) -> Result<Response<v1::DeleteBatchResponse>, Status> {
        require_admin(&request)?;
        let name = batch_name(&request.into_inner().name)?;
        let (deleted, active) = tasks::delete_batch(&self.0.store, name.clone())
            .await
            .map_err(status)?;
        self.0.scheduler.send(Command::BatchDeleted { batch: name });
        self.0.scheduler.send(Command::Signal {
            targets: active,
            signal: v1::Signal::Cancel,
        });
        Ok(Response::new(v1::DeleteBatchResponse { deleted }))
    }
}

/// Fills the dependencies of tasks about to be shown (one query per 500 tasks).
async fn with_dependencies(
    state: &State,
    mut tasks: Vec<v1::Task>,
) -> Result<Vec<v1::Task>, Status> {
    if !state
        .store
        .has_dependencies
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(tasks);
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let mut deps = crate::persistence::deps::of_tasks(&state.store.db, &ids)
        .await
        .map_err(status)?;
    for task in &mut tasks {
        if let (Some(spec), Some(list)) = (task.spec.as_mut(), deps.remove(&task.id)) {
            spec.depends_on = list;
        }
    }
    Ok(tasks)
}

fn batch_message(row: crate::persistence::entities::batch::Model) -> v1::Batch {
    v1::Batch {
        name: row.name,
        stopped: row.stopped,
        counts: Default::default(),
        suspended: row.suspended,
    }
}

impl Tasks {
    /// Sends a signal to every execution of the batch that a worker holds.
    async fn signal_batch(&self, name: &str, signal: v1::Signal) -> Result<(), Status> {
        let targets = tasks::active_executions_of_batch(&self.0.store.db, name)
            .await
            .map_err(status)?;
        self.0.scheduler.send(Command::Signal { targets, signal });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_become_like_patterns() {
        assert_eq!(super::glob_to_like("sample-*-r?"), "sample-%-r_");
    }
}
