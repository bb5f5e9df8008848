//! The JSON form of scitq's objects. Field names and value spellings are a contract with
//! scripts and tests: enums are lowercase without their prefix, timestamps are RFC 3339,
//! absent optional values are `null`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scitq_proto::v1::{
    Batch, Execution, ExecutionState, FailureClass, Machine, Shell, Task, TaskStatus, Worker,
    WorkerStatus,
};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq)]
pub struct TaskView {
    pub id: i64,
    pub name: String,
    pub batch: String,
    pub command: String,
    pub shell: String,
    pub container: String,
    pub container_options: Vec<String>,
    pub inputs: Vec<String>,
    pub output: String,
    pub resources: Vec<String>,
    pub retry: u32,
    pub priority: i32,
    /// Seconds a run may take; null: no limit.
    pub run_timeout_s: Option<u32>,
    /// Tasks that must succeed first.
    pub depends_on: Vec<i64>,
    pub status: String,
    pub status_reason: String,
    pub retry_left: u32,
    pub execution_id: Option<i64>,
    pub worker_id: Option<i64>,
    pub exit_code: Option<i32>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<&Task> for TaskView {
    fn from(task: &Task) -> Self {
        let spec = task.spec.clone().unwrap_or_default();
        Self {
            id: task.id,
            name: spec.name,
            batch: spec.batch,
            command: spec.command,
            shell: shell_name(spec.shell),
            container: spec.container,
            container_options: spec.container_options,
            inputs: spec.inputs,
            output: spec.output,
            resources: spec.resources,
            retry: spec.retry,
            priority: spec.priority,
            run_timeout_s: (spec.run_timeout_s > 0).then_some(spec.run_timeout_s),
            depends_on: spec.depends_on.clone(),
            status: task_status_name(task.status),
            status_reason: task.status_reason.clone(),
            retry_left: task.retry_left,
            execution_id: task.execution_id,
            worker_id: task.worker_id,
            exit_code: task.exit_code,
            created_at: task.created_at.as_ref().and_then(rfc3339),
            updated_at: task.updated_at.as_ref().and_then(rfc3339),
        }
    }
}

/// `task show --json`: the task and its executions.
#[derive(Debug, Serialize)]
pub struct TaskDetailView {
    #[serde(flatten)]
    pub task: TaskView,
    pub executions: Vec<ExecutionView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ExecutionView {
    pub id: i64,
    pub task_id: i64,
    pub worker_id: i64,
    pub worker_name: String,
    pub state: String,
    pub command: String,
    pub exit_code: Option<i32>,
    pub failure: Option<String>,
    pub message: String,
    pub assigned_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Files uploaded from the output folder.
    pub uploaded: Vec<UploadedView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct UploadedView {
    pub uri: String,
    pub size: u64,
}

impl From<&Execution> for ExecutionView {
    fn from(execution: &Execution) -> Self {
        Self {
            id: execution.id,
            task_id: execution.task_id,
            worker_id: execution.worker_id,
            worker_name: execution.worker_name.clone(),
            state: execution_state_name(execution.state),
            command: execution.command.clone(),
            exit_code: execution.exit_code,
            failure: failure_name(execution.failure),
            message: execution.message.clone(),
            assigned_at: execution.assigned_at.as_ref().and_then(rfc3339),
            started_at: execution.started_at.as_ref().and_then(rfc3339),
            finished_at: execution.finished_at.as_ref().and_then(rfc3339),
            stdout_bytes: execution.stdout_bytes,
            stderr_bytes: execution.stderr_bytes,
            uploaded: execution
                .uploaded
                .iter()
                .map(|f| UploadedView {
                    uri: f.uri.clone(),
                    size: f.size,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerView {
    /// `None` for a recruited machine whose agent has not connected yet.
    pub id: Option<i64>,
    pub name: String,
    pub host: String,
    pub concurrency: u32,
    pub prefetch: u32,
    /// The agent adapts `prefetch` (the value in force now).
    pub prefetch_auto: bool,
    pub batch: String,
    pub status: String,
    /// deploying, running, idle, draining or offline.
    pub state: String,
    pub paused: bool,
    pub draining: bool,
    pub active: u32,
    pub last_contact: Option<String>,
    /// The machine scitqd recruited it on, if it did.
    pub provider: Option<String>,
    pub flavor: Option<String>,
    pub region: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl From<&Worker> for WorkerView {
    fn from(worker: &Worker) -> Self {
        Self {
            id: Some(worker.id),
            name: worker.name.clone(),
            host: worker.host.clone(),
            concurrency: worker.concurrency,
            prefetch: worker.prefetch,
            prefetch_auto: worker.prefetch_auto,
            batch: worker.batch.clone(),
            status: worker_status_name(worker.status),
            state: worker.state.clone(),
            paused: worker.paused,
            draining: worker.draining,
            active: worker.active,
            last_contact: worker.last_contact.as_ref().and_then(rfc3339),
            provider: non_empty(&worker.provider),
            flavor: non_empty(&worker.flavor),
            region: non_empty(&worker.region),
        }
    }
}

impl From<&Machine> for WorkerView {
    /// A recruited machine whose agent has not connected yet.
    fn from(machine: &Machine) -> Self {
        Self {
            id: None,
            name: machine.name.clone(),
            host: String::new(),
            concurrency: 0,
            prefetch: 0,
            prefetch_auto: false,
            batch: machine.batch.clone(),
            status: "-".to_owned(),
            state: "deploying".to_owned(),
            paused: false,
            draining: false,
            active: 0,
            last_contact: None,
            provider: non_empty(&machine.provider),
            flavor: non_empty(&machine.flavor),
            region: non_empty(&machine.region),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct BatchView {
    pub name: String,
    pub stopped: bool,
    pub suspended: bool,
    pub counts: BTreeMap<String, u64>,
}

impl From<&Batch> for BatchView {
    fn from(batch: &Batch) -> Self {
        Self {
            name: batch.name.clone(),
            stopped: batch.stopped,
            suspended: batch.suspended,
            counts: batch.counts.clone().into_iter().collect(),
        }
    }
}

/// `TASK_STATUS_RUNNING` → `running`; values this build does not know show as numbers.
fn enum_name(name: Option<&str>, prefix: &str, value: i32) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => format!("unknown({value})"),
    }
}

pub fn task_status_name(value: i32) -> String {
    let status = TaskStatus::try_from(value).ok();
    enum_name(status.map(|s| s.as_str_name()), "TASK_STATUS_", value)
}

pub fn shell_name(value: i32) -> String {
    let shell = Shell::try_from(value).ok();
    enum_name(shell.map(|s| s.as_str_name()), "SHELL_", value)
}

pub fn execution_state_name(value: i32) -> String {
    let state = ExecutionState::try_from(value).ok();
    enum_name(state.map(|s| s.as_str_name()), "EXECUTION_STATE_", value)
}

pub fn worker_status_name(value: i32) -> String {
    let status = WorkerStatus::try_from(value).ok();
    enum_name(status.map(|s| s.as_str_name()), "WORKER_STATUS_", value)
}

/// `None` when the execution did not fail (or the class is unspecified).
pub fn failure_name(value: i32) -> Option<String> {
    match FailureClass::try_from(value) {
        Ok(FailureClass::Unspecified) => None,
        class => Some(enum_name(
            class.ok().map(|c| c.as_str_name()),
            "FAILURE_CLASS_",
            value,
        )),
    }
}

/// Parses a status as users type it (`failed`, `FAILED`, `task_status_failed`).
pub fn parse_task_status(text: &str) -> Result<TaskStatus, String> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("TASK_STATUS_") {
        upper
    } else {
        format!("TASK_STATUS_{upper}")
    };
    match TaskStatus::from_str_name(&full) {
        Some(status) if status != TaskStatus::Unspecified => Ok(status),
        _ => Err(format!(
            "invalid status {text:?}: expected one of waiting, pending, assigned, accepted, \
             running, uploading, succeeded, failed, paused, canceled"
        )),
    }
}

/// Largest time humantime can print (year 9999).
const MAX_SECONDS: i64 = 253_402_300_799;

/// RFC 3339 in UTC with milliseconds (fixed width, so the strings sort like the times).
pub fn rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    let time = system_time(ts)?;
    Some(humantime::format_rfc3339_millis(time).to_string())
}

pub fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(ts.seconds)
        .ok()
        .filter(|&s| s <= MAX_SECONDS as u64)?;
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use scitq_proto::v1::TaskSpec;

    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn task_json_has_the_documented_shape() {
        let task = Task {
            id: 42,
            spec: Some(TaskSpec {
                name: "align".into(),
                batch: "b1".into(),
                command: "echo 'a b'".into(),
                shell: Shell::Bash as i32,
                container: "alpine".into(),
                container_options: vec!["--rm".into()],
                inputs: vec!["s3://in/a".into()],
                output: "s3://out/".into(),
                resources: vec![],
                retry: 2,
                priority: -1,
                run_timeout_s: 0,
                depends_on: vec![],
            }),
            status: TaskStatus::Succeeded as i32,
            status_reason: String::new(),
            retry_left: 1,
            execution_id: Some(7),
            worker_id: None,
            exit_code: Some(0),
            created_at: ts(1_700_000_000, 5_000_000),
            updated_at: None,
        };
        let json = serde_json::to_value(TaskView::from(&task)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 42, "name": "align", "batch": "b1", "command": "echo 'a b'",
                "shell": "bash", "container": "alpine", "container_options": ["--rm"],
                "inputs": ["s3://in/a"], "output": "s3://out/", "resources": [],
                "retry": 2, "priority": -1, "run_timeout_s": null, "depends_on": [], "status": "succeeded", "status_reason": "",
                "retry_left": 1, "execution_id": 7, "worker_id": null, "exit_code": 0,
                "created_at": "2023-11-14T22:13:20.005Z", "updated_at": null,
            })
        );
    }

    #[test]
    fn execution_json_names_the_failure() {
        let execution = Execution {
            id: 3,
            task_id: 42,
            worker_id: 1,
            worker_name: "w1".into(),
            state: ExecutionState::Failed as i32,
            command: "false".into(),
            shell: Shell::None as i32,
            exit_code: Some(1),
            failure: FailureClass::Run as i32,
            message: "exit status 1".into(),
            assigned_at: ts(0, 0),
            started_at: None,
            finished_at: ts(60, 0),
            stdout_bytes: 10,
            stderr_bytes: 0,
            uploaded: Vec::new(),
        };
        let json = serde_json::to_value(ExecutionView::from(&execution)).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["failure"], "run");
        assert_eq!(json["assigned_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["started_at"], serde_json::Value::Null);
        assert_eq!(json["finished_at"], "1970-01-01T00:01:00.000Z");
        let ok = Execution {
            failure: FailureClass::Unspecified as i32,
            ..execution
        };
        assert_eq!(ExecutionView::from(&ok).failure, None);
    }

    #[test]
    fn worker_and_batch_json() {
        let worker = Worker {
            id: 1,
            name: "w1".into(),
            host: "node1".into(),
            concurrency: 4,
            prefetch: 1,
            batch: String::new(),
            status: WorkerStatus::Lost as i32,
            active: 0,
            last_contact: None,
            paused: true,
            draining: false,
            prefetch_auto: true,
            ..Worker::default()
        };
        let json = serde_json::to_value(WorkerView::from(&worker)).unwrap();
        assert_eq!(json["prefetch_auto"], true);
        assert_eq!(json["status"], "lost");
        assert_eq!(json["paused"], true);
        assert_eq!(json["last_contact"], serde_json::Value::Null);
        let batch = Batch {
            name: "b".into(),
            stopped: true,
            counts: [("pending".to_owned(), 3)].into_iter().collect(),
            suspended: false,
        };
        assert_eq!(
            serde_json::to_value(BatchView::from(&batch)).unwrap(),
            serde_json::json!({"name": "b", "stopped": true, "suspended": false, "counts": {"pending": 3}})
        );
    }

    #[test]
    fn enum_names() {
        assert_eq!(shell_name(0), "none");
        assert_eq!(task_status_name(TaskStatus::Pending as i32), "pending");
        assert_eq!(task_status_name(99), "unknown(99)");
        assert_eq!(
            failure_name(FailureClass::Lost as i32).as_deref(),
            Some("lost")
        );
    }

    #[test]
    fn statuses_parse_as_typed() {
        assert_eq!(parse_task_status("failed"), Ok(TaskStatus::Failed));
        assert_eq!(parse_task_status("RUNNING"), Ok(TaskStatus::Running));
        assert_eq!(
            parse_task_status("task_status_canceled"),
            Ok(TaskStatus::Canceled)
        );
        let err = parse_task_status("done").unwrap_err();
        assert!(err.starts_with("invalid status \"done\""), "{err}");
        assert!(parse_task_status("unspecified").is_err());
    }

    #[test]
    fn out_of_range_timestamps_are_null() {
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            rfc3339(&prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }
}
