//! One task: its spec, every execution (worker, times, exit code, failure class, uploaded
//! files), its output (stored, then followed live through server-sent events, searched and
//! downloaded by the page), and a relaunch with a new command.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maud::{Markup, Render, html};

use super::layout::{self, Section};
use super::session::{Authed, Posted};
use super::{UiError, UiState};
use crate::core::agent::Stream;
use crate::core::ids::{ExecutionId, TaskId};
use crate::core::model::{Execution, StoredChunk, Task};

/// Output shown in the page (its end); the whole of it is a download away.
const SHOWN_OUTPUT: usize = 1 << 20;

#[derive(serde::Deserialize)]
pub struct TaskQuery {
    execution: Option<i64>,
    note: Option<String>,
}

fn stream_class(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
    }
}

/// The end of the stored output, as spans of text (stderr marked).
fn output_spans(chunks: &[StoredChunk]) -> (Markup, bool) {
    let mut size = 0;
    let start = chunks
        .iter()
        .rposition(|c| {
            size += c.data.len();
            size > SHOWN_OUTPUT
        })
        .map_or(0, |i| i + 1);
    let markup = html! {
        @for c in &chunks[start..] {
            span class=(stream_class(c.stream)) { (String::from_utf8_lossy(&c.data)) }
        }
    };
    (markup, start > 0)
}

fn spec(task: &Task, worker: &str, reasons: &[String]) -> Markup {
    let s = &task.spec;
    html! {
        dl.spec {
            dt { "Status" } dd { (layout::status(task.status.as_str())) }
            @if !reasons.is_empty() {
                dt { "Why" } dd { ul { @for r in reasons { li { (r) } } } }
            }
            dt { "Batch" } dd { a href={ "/ui/tasks?batch=" (form_urlencoded::byte_serialize(s.batch.as_bytes()).collect::<String>()) } { (s.batch) } }
            @if !worker.is_empty() { dt { "Worker" } dd { (worker) } }
            dt { "Command" } dd { pre.command { (s.command) } }
            dt { "Shell" } dd { (format!("{:?}", s.shell).to_lowercase()) }
            @if !s.container.is_empty() {
                dt { "Container" } dd { code { (s.container) } @for o in &s.container_options { " " code { (o) } } }
            }
            @if !s.inputs.is_empty() { dt { "Inputs" } dd { ul { @for i in &s.inputs { li { code { (i) } } } } } }
            @if !s.resources.is_empty() { dt { "Resources" } dd { ul { @for r in &s.resources { li { code { (r) } } } } } }
            @if !s.output.is_empty() { dt { "Output" } dd { code { (s.output) } } }
            @if !s.depends_on.is_empty() {
                dt { "Depends on" } dd { @for d in &s.depends_on { a href={ "/ui/tasks/" (d) } { (d) } " " } }
            }
            dt { "Retries left" } dd { (task.retry_left) }
            dt { "Created" } dd { (layout::time(task.created_at)) }
            dt { "Updated" } dd { (layout::time(task.updated_at)) }
        }
    }
}

fn executions_table(task: TaskId, executions: &[Execution], shown: Option<ExecutionId>) -> Markup {
    let headers: [&dyn Render; 10] = [
        &"Execution",
        &"Worker",
        &"State",
        &"Assigned",
        &"Started",
        &"Finished",
        &"Ran",
        &"Exit",
        &"Failure",
        &"Uploaded",
    ];
    let rows = html! {
        @for e in executions.iter().rev() {
            tr aria-current=[(Some(e.id) == shown).then_some("true")] {
                td { a href={ "/ui/tasks/" (task.0) "?execution=" (e.id.0) "#output" } { (e.id.0) } }
                td { (if e.worker_name.is_empty() { e.worker.0.to_string() } else { e.worker_name.clone() }) }
                td { (layout::status(e.state.as_str())) }
                td { (layout::time(e.assigned_at)) }
                td { (layout::opt_time(e.started_at)) }
                td { (layout::opt_time(e.finished_at)) }
                td { @if let (Some(s), Some(f)) = (e.started_at, e.finished_at) { (layout::span(s, f)) } }
                td { @if let Some(code) = e.exit_code { (code) } }
                td {
                    @if e.failure != crate::core::state::Failure::None { (e.failure.as_str()) }
                    @if !e.message.is_empty() { div.message { (e.message) } }
                }
                td {
                    @if !e.uploaded.is_empty() {
                        ul.files { @for f in &e.uploaded { li { code { (f.uri) } " (" (layout::bytes(f.size)) ")" } } }
                    }
                }
            }
        }
    };
    layout::table("executions", &headers, rows)
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Path(id): Path<i64>,
    Query(query): Query<TaskQuery>,
) -> Result<Markup, UiError> {
    let id = TaskId(id);
    let ops = state.ops();
    let task = ops.task(id).await?;
    let executions = ops.executions(id).await?;
    let reasons = ops.explain_task(id).await?.reasons;
    let names = ops.worker_names().await?;
    let output = ops.output(id, query.execution.map(ExecutionId)).await?;
    let shown = output.execution;
    let live = !task.status.is_final() && shown == task.execution;
    let worker = task
        .worker
        .map(|w| names.get(&w).cloned().unwrap_or_else(|| w.0.to_string()))
        .unwrap_or_default();
    let (spans, cut) = output_spans(&output.chunks);
    let back = format!("/ui/tasks/{}", id.0);
    let download = match shown {
        Some(e) => format!("/ui/tasks/{}/output?execution={}", id.0, e.0),
        None => format!("/ui/tasks/{}/output", id.0),
    };
    let content = html! {
        h1 { "Task " (id.0) " " span.name { (task.spec.name) } }
        form.actions method="post" action="/ui/tasks/act" {
            (layout::csrf(&authed))
            input type="hidden" name="ids" value=(id.0);
            input type="hidden" name="back" value=(back);
            button type="submit" name="action" value="pause" { "Pause" }
            button type="submit" name="action" value="resume" { "Resume" }
            button.danger type="submit" name="action" value="kill" data-confirm="Kill this task?" { "Kill" }
        }
        (spec(&task, &worker, &reasons))
        h2 { "Executions" }
        @if executions.is_empty() { p { "Not run yet." } } @else { (executions_table(id, &executions, shown)) }
        section #output-section aria-labelledby="output-title" {
            h2 #output-title {
                "Output"
                @if let Some(e) = shown { " of execution " (e.0) }
            }
            div.output-tools {
                label { "Search " input #output-search type="search" placeholder="text in the output"; }
                span #output-matches role="status" {}
                @if live {
                    label { input #output-follow type="checkbox" checked; " Follow" }
                }
                a href=(download) download { "Download the whole output" }
                @if live { span #output-live role="status" { "live" } }
            }
            @if cut { p.muted { "Only the last MiB is shown here: download the whole output." } }
            pre #output tabindex="0" data-follow=[live.then(|| format!("/ui/tasks/{}/follow", id.0))] { (spans) }
            pre #output-found hidden tabindex="0" {}
        }
        h2 { "Relaunch" }
        @if task.status.is_final() {
            form.relaunch method="post" action={ "/ui/tasks/" (id.0) "/relaunch" } {
                (layout::csrf(&authed))
                label for="relaunch-command" { "Command (change it to run another one)" }
                textarea #relaunch-command name="command" rows="3" { (task.spec.command) }
                button type="submit" { "Relaunch" }
            }
        } @else {
            p.muted { "A task is relaunched once it has ended (" (task.status.as_str()) " now)." }
        }
    };
    Ok(layout::page(
        &authed,
        Section::Tasks,
        &format!("Task {}", id.0),
        query.note.as_deref(),
        0,
        content,
    ))
}

/// The whole stored output of an execution (the task's current one by default), as a file.
pub async fn output(
    State(state): State<UiState>,
    _authed: Authed,
    Path(id): Path<i64>,
    Query(query): Query<TaskQuery>,
) -> Result<Response, UiError> {
    let output = state
        .ops()
        .output(TaskId(id), query.execution.map(ExecutionId))
        .await?;
    let body: Vec<u8> = output.chunks.into_iter().flat_map(|c| c.data).collect();
    let name = match output.execution {
        Some(e) => format!("task-{id}-execution-{}.log", e.0),
        None => format!("task-{id}.log"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The task's output as it arrives, from its current execution's start, until the task
/// ends: one `chunk` event per stored piece (JSON: stream and text), then `end`.
pub async fn follow(
    State(state): State<UiState>,
    _authed: Authed,
    Path(id): Path<i64>,
) -> Result<Response, UiError> {
    let stop = state.0.shutdown.child_token();
    let rx = state.ops().follow_output(TaskId(id), stop.clone()).await?;
    // The follower stops when the page goes (the stream is dropped) or scitqd stops.
    let guard = stop.drop_guard();
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
        let _ = &guard;
        let event = match item {
            Ok(chunk) => {
                let text = String::from_utf8_lossy(&chunk.data);
                let json = serde_json::json!({ "s": stream_class(chunk.stream), "d": text });
                Event::default().event("chunk").data(json.to_string())
            }
            Err(err) => Event::default().event("failed").data(
                serde_json::json!({ "d": format!("\n[scitq: the output stopped: {err}]\n") })
                    .to_string(),
            ),
        };
        Ok::<_, Infallible>(event)
    });
    // Browsers drop an event with no data: this one says something.
    let end = futures::stream::once(async { Ok(Event::default().event("end").data("ended")) });
    Ok(Sse::new(chunks.chain(end))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Runs a finished task again, with the command of the form when it changed.
pub async fn relaunch(
    State(state): State<UiState>,
    Path(id): Path<i64>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let id = TaskId(id);
    let ops = state.ops();
    let current = ops.task(id).await?;
    // Browsers send a textarea's line ends as CRLF.
    let command = form
        .get("command")
        .map(|c| c.replace("\r\n", "\n"))
        .filter(|c| *c != current.spec.command);
    let changed = command.is_some();
    ops.relaunch_task(id, command).await?;
    let note = if changed {
        "relaunched with the new command"
    } else {
        "relaunched"
    };
    Ok(super::redirect_noted(&format!("/ui/tasks/{}", id.0), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: Stream, data: &str) -> StoredChunk {
        StoredChunk {
            seq: 1,
            execution: ExecutionId(1),
            stream,
            offset: 0,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn output_is_text_with_stderr_marked() {
        let chunks = [
            chunk(Stream::Stdout, "<script>alert(1)</script>\n"),
            chunk(Stream::Stderr, "oops & more\n"),
        ];
        let (html, cut) = output_spans(&chunks);
        let html = html.into_string();
        assert!(!cut);
        assert_eq!(
            html,
            "<span class=\"out\">&lt;script&gt;alert(1)&lt;/script&gt;\n</span>\
             <span class=\"err\">oops &amp; more\n</span>"
        );
    }

    #[test]
    fn only_the_end_of_a_long_output_is_shown() {
        let big = "x".repeat(SHOWN_OUTPUT);
        let chunks = [chunk(Stream::Stdout, "first"), chunk(Stream::Stdout, &big)];
        let (html, cut) = output_spans(&chunks);
        assert!(cut);
        assert!(!html.into_string().contains("first"));
    }
}
