//! TaskService's steering calls (pause, resume, kill, edit), decoded and validated here.

use scitq_proto::v1;
use tonic::Status;

use super::{State, convert, status};
use crate::core::ids::TaskId;
use crate::core::state::TaskStatus;
use crate::core::task::{MAX_COMMAND_BYTES, MAX_FIELD_BYTES, validate_batch_name};
use crate::persistence::steering::{self, Changes, EDITABLE, Selector, Target};
use crate::service::scheduler::Command;

fn signal(state: &State, target: Option<Target>, signal: v1::Signal) {
    if let Some(target) = target {
        state.scheduler.send(Command::Signal {
            targets: vec![target],
            signal,
        });
    }
}

pub async fn pause(state: &State, id: i64) -> Result<v1::Task, Status> {
    let (row, target) = steering::pause(&state.store, TaskId(id))
        .await
        .map_err(status)?;
    signal(state, target, v1::Signal::Pause);
    state.hub.notify([TaskId(id)]);
    Ok(convert::task(&row))
}

pub async fn resume(state: &State, id: i64) -> Result<v1::Task, Status> {
    let (row, queued, target) = steering::resume(&state.store, TaskId(id))
        .await
        .map_err(status)?;
    state.scheduler.enqueue(queued.into_iter().collect());
    signal(state, target, v1::Signal::Resume);
    state.hub.notify([TaskId(id)]);
    Ok(convert::task(&row))
}

pub async fn kill(state: &State, id: i64) -> Result<v1::Task, Status> {
    let (row, target) = steering::kill(&state.store, TaskId(id))
        .await
        .map_err(status)?;
    signal(state, target, v1::Signal::Kill);
    state.hub.notify([TaskId(id)]);
    Ok(convert::task(&row))
}

fn selector(raw: Option<v1::TaskSelector>) -> Result<Selector, Status> {
    let raw = raw.unwrap_or_default();
    let mut statuses = Vec::new();
    for value in &raw.status {
        let status = v1::TaskStatus::try_from(*value)
            .ok()
            .and_then(TaskStatus::from_proto)
            .ok_or_else(|| Status::invalid_argument(format!("unknown task status {value}")))?;
        if !EDITABLE.contains(&status) {
            return Err(Status::invalid_argument(format!(
                "{status} tasks cannot be edited: only waiting, pending or paused ones"
            )));
        }
        statuses.push(status);
    }
    let batch = match raw.batch {
        Some(b) => {
            Some(validate_batch_name(0, &b).map_err(|e| Status::invalid_argument(e.to_string()))?)
        }
        None => None,
    };
    let selector = Selector {
        ids: raw.ids.into_iter().map(TaskId).collect(),
        batch,
        statuses,
        name_like: raw.name.as_deref().map(super::tasks::glob_to_like),
        all: raw.all,
    };
    let filtered =
        selector.batch.is_some() || !selector.statuses.is_empty() || selector.name_like.is_some();
    if !selector.ids.is_empty() && (filtered || selector.all) {
        return Err(Status::invalid_argument(
            "give task ids or a filter, not both",
        ));
    }
    if selector.ids.is_empty() && !filtered && !selector.all {
        return Err(Status::invalid_argument(
            "no task selected: give task ids, a filter (batch, status, name), or all to edit every task not started",
        ));
    }
    Ok(selector)
}

fn field(name: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(Status::invalid_argument(format!(
            "{name} is {} bytes, the limit is {MAX_FIELD_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn changes(raw: Option<v1::TaskChanges>) -> Result<Changes, Status> {
    let raw = raw.unwrap_or_default();
    if let Some(command) = &raw.command {
        if command.trim().is_empty() {
            return Err(Status::invalid_argument("command is empty"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(Status::invalid_argument(format!(
                "command is {} bytes, the limit is {MAX_COMMAND_BYTES}",
                command.len()
            )));
        }
    }
    if let Some(shell) = raw.shell {
        v1::Shell::try_from(shell)
            .map_err(|_| Status::invalid_argument(format!("shell value {shell} is unknown")))?;
    }
    for (name, value) in [
        ("container", &raw.container),
        ("output", &raw.output),
        ("name", &raw.name),
    ] {
        if let Some(value) = value {
            field(name, value)?;
        }
    }
    let list = |l: Option<v1::StringList>| -> Result<Option<Vec<String>>, Status> {
        let Some(l) = l else { return Ok(None) };
        for value in &l.values {
            field("uri or option", value)?;
        }
        Ok(Some(l.values))
    };
    if let Some(image) = &raw.container {
        crate::core::task::check_image(image).map_err(|reason| {
            Status::invalid_argument(format!("invalid container image {image:?}: {reason}"))
        })?;
    }
    if let Some(options) = &raw.container_options {
        scitq_proto::container::ContainerOptions::parse(&options.values)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let changes = Changes {
        command: raw.command,
        shell: raw.shell,
        container: raw.container,
        container_options: list(raw.container_options)?,
        inputs: list(raw.inputs)?,
        output: raw.output,
        resources: list(raw.resources)?,
        retry: raw.retry,
        priority: raw.priority,
        name: raw.name,
        run_timeout_s: raw.run_timeout_s,
    };
    if changes.is_empty() {
        return Err(Status::invalid_argument("no change given"));
    }
    if changes
        .retry
        .is_some_and(|r| r > crate::core::task::MAX_RETRY)
    {
        return Err(Status::invalid_argument(format!(
            "retry {} is over the limit of {}",
            changes.retry.unwrap_or_default(),
            crate::core::task::MAX_RETRY
        )));
    }
    Ok(changes)
}

pub async fn edit(
    state: &State,
    req: v1::EditTasksRequest,
) -> Result<v1::EditTasksResponse, Status> {
    let selector = selector(req.selector)?;
    let changes = changes(req.changes)?;
    crate::core::task::UriCheck::new(&state.rclone_config)
        .check_edit(
            changes.inputs.as_deref(),
            changes.output.as_deref(),
            changes.resources.as_deref(),
        )
        .map_err(Status::invalid_argument)?;
    let edited = steering::edit(&state.store, selector, changes, req.dry_run)
        .await
        .map_err(status)?;
    if !req.dry_run {
        let (old, new): (Vec<_>, Vec<_>) = edited.requeue.into_iter().unzip();
        if !old.is_empty() {
            state.scheduler.send(Command::Dequeue(old));
            state.scheduler.enqueue(new);
        }
        state.hub.notify(edited.tasks.iter().map(|t| TaskId(t.id)));
    }
    Ok(v1::EditTasksResponse {
        tasks: edited.tasks.iter().map(convert::task).collect(),
        dry_run: req.dry_run,
    })
}

/// Why a task is where it is.
pub async fn explain(state: &State, id: i64) -> Result<v1::ExplainTaskResponse, Status> {
    let row = crate::persistence::tasks::get(&state.store.db, TaskId(id))
        .await
        .map_err(status)?;
    let task_status: TaskStatus = row
        .status
        .parse()
        .map_err(|e: crate::core::state::UnknownStatus| Status::internal(e.to_string()))?;
    let mut reasons = Vec::new();
    if !row.status_reason.is_empty() {
        reasons.push(row.status_reason.clone());
    }
    match task_status {
        TaskStatus::Pending => {
            let queued = crate::persistence::tasks::Queued {
                id: TaskId(row.id),
                batch: row.batch.clone(),
                priority: row.priority,
            };
            reasons.extend(state.scheduler.explain(queued).await);
        }
        TaskStatus::Paused => reasons.push(format!(
            "paused: run `scitqctl task resume {id}` to queue it again"
        )),
        TaskStatus::Assigned => reasons.push(format!(
            "sent to worker {}, which has not acknowledged it yet",
            row.worker_id.unwrap_or_default()
        )),
        TaskStatus::Accepted => reasons.push(format!(
            "held by worker {}, waiting for a free slot or staging its inputs",
            row.worker_id.unwrap_or_default()
        )),
        TaskStatus::Running | TaskStatus::Uploading => reasons.push(format!(
            "{task_status} on worker {}",
            row.worker_id.unwrap_or_default()
        )),
        TaskStatus::Succeeded => reasons.push("it succeeded".to_owned()),
        TaskStatus::Failed | TaskStatus::Canceled => reasons.push(format!(
            "it is {task_status}: `scitqctl task relaunch {id}` runs it again"
        )),
        TaskStatus::Waiting => {
            let unmet = crate::persistence::deps::unmet(&state.store.db, TaskId(row.id))
                .await
                .map_err(status)?;
            let list: Vec<String> = unmet.iter().map(i64::to_string).collect();
            reasons.push(format!(
                "it waits for task(s) {} to succeed",
                list.join(", ")
            ));
        }
    }
    Ok(v1::ExplainTaskResponse {
        status: task_status.to_proto() as i32,
        reasons,
    })
}
