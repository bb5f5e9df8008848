//! The provisioning jobs page: the last creates and destroys of recruited machines, with
//! their status, error class and log (the last line shown, the whole log on demand).

use axum::extract::{Query, State};
use maud::{Markup, html};

use super::layout::{self, Section};
use super::session::Authed;
use super::{UiError, UiState};
use crate::core::recruit::Job;

/// Jobs listed, newest first.
const LIMIT: u64 = 100;

#[derive(serde::Deserialize)]
pub struct PageQuery {
    note: Option<String>,
}

/// The log's last line in the summary, the whole log when opened. The `details` has an id
/// so the page's reload keeps it open.
fn log(job: &Job) -> Markup {
    let lines = job.log.lines().count();
    let last = job.log.lines().last().unwrap_or_default();
    html! {
        @if lines == 0 {
            span.muted { "empty" }
        } @else {
            details #{ "job-log-" (job.id) } .log {
                summary { (last) @if lines > 1 { " " span.muted { "(" (lines) " lines)" } } }
                pre { (job.log) }
            }
        }
    }
}

fn row(job: &Job) -> Markup {
    html! {
        tr data-job=(job.id) data-machine=(job.machine_name) data-kind=(job.kind.as_str()) {
            th scope="row" { (job.id) }
            td { (job.machine_name) }
            td.kind { (job.kind.as_str()) }
            td.status { (layout::status(job.status.as_str())) }
            td { (job.attempts) }
            td.error-class { @match &job.error_class { Some(class) => (class), None => span.muted { "—" } } }
            td { (layout::time(job.created_at)) div.muted { "updated " (layout::time(job.updated_at)) } }
            td.log { (log(job)) }
        }
    }
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let jobs = state.ops().jobs(LIMIT).await?;
    let content = html! {
        h1 { "Provisioning jobs" }
        p.hint { "The last " (LIMIT) " creates and destroys of recruited machines, newest first." }
        @if jobs.is_empty() {
            p { "No job yet: " a href="/ui/recruiters" { "a rule" } " or " code { "scitqctl worker deploy" } " recruits machines." }
        } @else {
            (layout::table(
                "jobs",
                &[&"Job", &"Machine", &"Kind", &"Status", &"Attempts", &"Error", &"Started", &"Log"],
                html! { @for job in &jobs { (row(job)) } },
            ))
        }
    };
    Ok(layout::page(
        &authed,
        Section::Jobs,
        "Jobs",
        query.note.as_deref(),
        10,
        content,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::MachineId;
    use crate::core::recruit::{JobKind, JobStatus};

    #[test]
    fn a_job_log_is_escaped_with_its_last_line_in_the_summary() {
        let job = Job {
            id: 7,
            machine: MachineId(1),
            machine_name: "m-1".into(),
            kind: JobKind::Create,
            status: JobStatus::Failed,
            attempts: 1,
            error_class: Some("quota".into()),
            log: "creating\n<script>alert(1)</script> refused".into(),
            created_at: 0,
            updated_at: 0,
        };
        let html = row(&job).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains(
                "<summary>&lt;script&gt;alert(1)&lt;/script&gt; refused <span class=\"muted\">(2 lines)</span></summary>"
            ),
            "{html}"
        );
        assert!(html.contains("id=\"job-log-7\""), "{html}");
        assert!(html.contains(">quota<"), "{html}");
    }
}
