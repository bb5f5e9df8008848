//! The table form of scitq's objects.

use std::time::SystemTime;

use scitq_proto::v1::{Batch, Execution, Task, Worker};

use super::Listing;
use super::views::{
    BatchView, ExecutionView, TaskView, WorkerView, execution_state_name, failure_name,
    task_status_name,
};

/// Commands longer than this are cut in tables.
const COMMAND_WIDTH: usize = 50;

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn time_or_dash(ts: Option<&prost_types::Timestamp>) -> String {
    or_dash(ts.and_then(super::views::rfc3339))
}

/// Cuts `text` to `width` characters, marking the cut with `…`; line breaks become spaces.
pub fn truncate(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How long ago `then` was, coarsely: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(then: SystemTime, now: SystemTime) -> String {
    let Ok(elapsed) = now.duration_since(then) else {
        return "just now".to_owned();
    };
    let seconds = elapsed.as_secs();
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

impl Listing for Task {
    type View = TaskView;
    const HEADERS: &'static [&'static str] =
        &["ID", "NAME", "BATCH", "STATUS", "WORKER", "EXIT", "COMMAND"];

    fn view(&self) -> TaskView {
        TaskView::from(self)
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.as_ref();
        vec![
            self.id.to_string(),
            spec.map(|s| s.name.clone()).unwrap_or_default(),
            spec.map(|s| s.batch.clone()).unwrap_or_default(),
            task_status_name(self.status),
            or_dash(self.worker_id),
            or_dash(self.exit_code),
            truncate(spec.map_or("", |s| &s.command), COMMAND_WIDTH),
        ]
    }
}

impl Listing for Execution {
    type View = ExecutionView;
    const HEADERS: &'static [&'static str] = &[
        "ID", "WORKER", "STATE", "EXIT", "FAILURE", "ASSIGNED", "STARTED", "FINISHED", "STDOUT",
        "STDERR", "UPLOADED", "MESSAGE",
    ];

    fn view(&self) -> ExecutionView {
        ExecutionView::from(self)
    }

    fn row(&self) -> Vec<String> {
        let worker = if self.worker_name.is_empty() {
            self.worker_id.to_string()
        } else {
            format!("{} ({})", self.worker_name, self.worker_id)
        };
        vec![
            self.id.to_string(),
            worker,
            execution_state_name(self.state),
            or_dash(self.exit_code),
            or_dash(failure_name(self.failure)),
            time_or_dash(self.assigned_at.as_ref()),
            time_or_dash(self.started_at.as_ref()),
            time_or_dash(self.finished_at.as_ref()),
            self.stdout_bytes.to_string(),
            self.stderr_bytes.to_string(),
            match self.uploaded.len() {
                0 => "-".to_owned(),
                1 => "1 file".to_owned(),
                n => format!("{n} files"),
            },
            truncate(&self.message, COMMAND_WIDTH),
        ]
    }
}

impl Listing for Worker {
    type View = WorkerView;
    const HEADERS: &'static [&'static str] = WorkerView::HEADERS;

    fn view(&self) -> WorkerView {
        WorkerView::from(self)
    }

    fn row(&self) -> Vec<String> {
        WorkerView::from(self).row()
    }
}

impl Listing for WorkerView {
    type View = WorkerView;
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "NAME",
        "HOST",
        "STATUS",
        "STATE",
        "CONCURRENCY",
        "PREFETCH",
        "BATCH",
        "ACTIVE",
        "MACHINE",
        "LAST CONTACT",
    ];

    fn view(&self) -> WorkerView {
        self.clone()
    }

    fn row(&self) -> Vec<String> {
        let last_contact = self
            .last_contact
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|then| ago(then, SystemTime::now()));
        let machine = match (&self.provider, &self.flavor, &self.region) {
            (Some(p), Some(f), Some(r)) => format!("{p} {f} {r}"),
            _ => "-".to_owned(),
        };
        vec![
            or_dash(self.id),
            self.name.clone(),
            or_dash(Some(&self.host).filter(|h| !h.is_empty())),
            if self.draining {
                format!("{} (draining)", self.status)
            } else if self.paused {
                format!("{} (paused)", self.status)
            } else {
                self.status.clone()
            },
            or_dash(Some(&self.state).filter(|s| !s.is_empty())),
            self.concurrency.to_string(),
            if self.prefetch_auto {
                format!("auto ({})", self.prefetch)
            } else {
                self.prefetch.to_string()
            },
            if self.batch.is_empty() {
                "(any)".to_owned()
            } else {
                self.batch.clone()
            },
            self.active.to_string(),
            machine,
            or_dash(last_contact),
        ]
    }
}

impl Listing for Batch {
    type View = BatchView;
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "STATE",
        "PENDING",
        "ASSIGNED",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "OTHER",
    ];

    fn view(&self) -> BatchView {
        BatchView::from(self)
    }

    /// ASSIGNED counts assigned and accepted tasks, RUNNING running and uploading ones,
    /// OTHER the rest (waiting, paused, canceled).
    fn row(&self) -> Vec<String> {
        let count = |names: &[&str]| -> u64 {
            names
                .iter()
                .map(|name| self.counts.get(*name).copied().unwrap_or(0))
                .sum()
        };
        let shown = [
            &["pending"][..],
            &["assigned", "accepted"],
            &["running", "uploading"],
            &["succeeded"],
            &["failed"],
        ];
        let total: u64 = self.counts.values().sum();
        let mut row = vec![self.name.clone(), batch_state(self).to_owned()];
        let mut accounted = 0;
        for names in shown {
            let n = count(names);
            accounted += n;
            row.push(n.to_string());
        }
        row.push((total - accounted).to_string());
        row
    }
}

/// Whether a batch runs, is stopped (no new task starts) or suspended (its tasks frozen).
pub fn batch_state(batch: &Batch) -> &'static str {
    if batch.suspended {
        "suspended"
    } else if batch.stopped {
        "stopped"
    } else {
        "running"
    }
}

/// `task show` in table form: one `key  value` line per field.
pub fn task_detail_lines(task: &Task) -> Vec<Vec<String>> {
    let view = TaskView::from(task);
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(" ")
        }
    };
    let text = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            value.to_owned()
        }
    };
    let pairs = [
        ("id", view.id.to_string()),
        ("name", text(&view.name)),
        ("batch", text(&view.batch)),
        ("status", view.status.clone()),
        ("reason", text(&view.status_reason)),
        ("command", view.command.clone()),
        ("shell", view.shell.clone()),
        ("container", text(&view.container)),
        ("container options", list(&view.container_options)),
        ("inputs", list(&view.inputs)),
        ("output", text(&view.output)),
        ("resources", list(&view.resources)),
        (
            "retry",
            format!("{} ({} left)", view.retry, view.retry_left),
        ),
        ("priority", view.priority.to_string()),
        ("execution", or_dash(view.execution_id)),
        ("worker", or_dash(view.worker_id)),
        ("exit code", or_dash(view.exit_code)),
        ("created", or_dash(view.created_at)),
        ("updated", or_dash(view.updated_at)),
    ];
    pairs
        .into_iter()
        .map(|(key, value)| vec![key.to_owned(), value])
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_commands_are_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(truncate("a\nb", 10), "a b");
    }

    #[test]
    fn ago_is_coarse() {
        let now = SystemTime::now();
        assert_eq!(ago(now - Duration::from_secs(5), now), "5s ago");
        assert_eq!(ago(now - Duration::from_secs(125), now), "2m ago");
        assert_eq!(ago(now - Duration::from_secs(7200), now), "2h ago");
        assert_eq!(ago(now + Duration::from_secs(3), now), "just now");
    }

    #[test]
    fn batch_rows_group_statuses() {
        let batch = Batch {
            name: "b".into(),
            stopped: false,
            suspended: false,
            counts: [
                ("pending", 1),
                ("assigned", 2),
                ("accepted", 3),
                ("running", 4),
                ("uploading", 1),
                ("succeeded", 5),
                ("failed", 6),
                ("paused", 7),
                ("canceled", 1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        assert_eq!(
            batch.row(),
            ["b", "running", "1", "5", "5", "5", "6", "8"].map(str::to_owned)
        );
    }
}
