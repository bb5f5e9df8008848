//! The wire forms of a task edit (`EditTasks`), decoded; `service::ops` checks them.

use scitq_proto::v1;
use tonic::Status;

use super::convert;
use crate::service::ops::{Changes, TaskSelection};

pub fn selection(raw: Option<v1::TaskSelector>) -> Result<TaskSelection, Status> {
    let raw = raw.unwrap_or_default();
    Ok(TaskSelection {
        ids: convert::task_ids(raw.ids),
        batch: raw.batch,
        statuses: raw
            .status
            .iter()
            .map(|s| convert::decode_task_status(*s))
            .collect::<Result<_, _>>()?,
        name: raw.name,
        all: raw.all,
    })
}

pub fn changes(raw: Option<v1::TaskChanges>) -> Result<Changes, Status> {
    let raw = raw.unwrap_or_default();
    let shell = raw
        .shell
        .map(|s| convert::decode_shell("changes", s))
        .transpose()?;
    Ok(Changes {
        command: raw.command,
        shell,
        container: raw.container,
        container_options: raw.container_options.map(|l| l.values),
        inputs: raw.inputs.map(|l| l.values),
        output: raw.output,
        resources: raw.resources.map(|l| l.values),
        retry: raw.retry,
        priority: raw.priority,
        name: raw.name,
        run_timeout_s: raw.run_timeout_s,
        batch: raw.batch,
    })
}
