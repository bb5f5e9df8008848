//! The workers page: status, the machine a recruited worker runs on (provider, flavor,
//! region), host figures from the last heartbeat, settings editable in place
//! (concurrency, prefetch), pause, resume, drain, delete; and the recruited machines whose
//! agent has not connected yet, with their state.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, Section};
use super::session::{Authed, Form, Posted};
use super::{UiError, UiState};
use crate::core::agent::HostStats;
use crate::core::ids::WorkerId;
use crate::core::recruit::{MachineRecord, RecordState};
use crate::service::ops::{WorkerChange, WorkerView};

#[derive(serde::Deserialize)]
pub struct PageQuery {
    note: Option<String>,
}

fn stats(stats: &Option<(HostStats, std::time::SystemTime)>) -> Markup {
    let Some((s, at)) = stats else {
        return html! { span.muted { "no heartbeat yet" } };
    };
    let age = at.elapsed().map_or(0, |d| d.as_secs());
    let used = |avail: u64, total: u64| {
        (avail * 100)
            .checked_div(total)
            .map_or(0, |free| 100 - free.min(100))
    };
    html! {
        dl.stats {
            dt { "CPU" } dd { (format!("{:.0}%", s.cpu_percent)) " of " (s.cpus) }
            dt { "Load" } dd { (format!("{:.2}", s.load)) }
            dt { "Memory" } dd {
                meter min="0" max="100" value=(used(s.mem_available, s.mem_total)) {}
                " " (layout::bytes(s.mem_available)) " free of " (layout::bytes(s.mem_total))
            }
            dt { "Disk" } dd {
                meter min="0" max="100" value=(used(s.disk_available, s.disk_total)) {}
                " " (layout::bytes(s.disk_available)) " free of " (layout::bytes(s.disk_total))
            }
        }
        span.muted { (age) " s ago" }
    }
}

/// Who recruited a machine: a rule (linked), or an operator by hand.
fn recruited_by(m: &MachineRecord) -> Markup {
    match m.rule {
        Some(rule) => html! { a href={ "/ui/recruiters#rule-" (rule.0) } { "rule " (rule.0) } },
        None => html! { "by hand" },
    }
}

/// Where a worker runs: the machine scitqd recruited it on, if it did.
fn machine(view: &WorkerView) -> Markup {
    let Some(m) = &view.machine else {
        return html! { span.muted { "not recruited" } };
    };
    html! {
        dl.stats {
            dt { "Provider" } dd.provider { (m.provider) }
            dt { "Flavor" } dd.flavor { (m.flavor) }
            dt { "Region" } dd.region { (m.region) }
            dt { "Recruited" } dd { (recruited_by(m)) }
        }
        @if m.state != RecordState::Running { (layout::status(m.state.as_str())) }
    }
}

fn state_words(view: &WorkerView) -> Markup {
    let s = &view.worker.settings;
    html! {
        (layout::status(view.worker.status.as_str()))
        @if s.draining { " " (layout::status("draining")) }
        @else if s.paused { " " (layout::status("paused")) }
    }
}

fn row(authed: &Authed, view: &WorkerView) -> Markup {
    let w = &view.worker;
    let s = &w.settings;
    let id = w.id.0;
    let form_id = format!("settings-{id}");
    html! {
        tr data-worker=(w.name) {
            th scope="row" {
                a href={ "/ui/tasks?worker=" (id) } title="its tasks" { (w.name) }
                div.muted { (w.host) }
            }
            td { (state_words(view)) }
            td.machine { (machine(view)) }
            td.active { (view.active) }
            td {
                form #(form_id) .settings method="post" action={ "/ui/workers/" (id) "/settings" } {
                    (layout::csrf(authed))
                    label { "Concurrency " input type="number" name="concurrency" min="1" value=(s.concurrency) required; }
                    label { "Prefetch "
                        input type="text" name="prefetch" inputmode="numeric" size="5"
                            value=(if s.prefetch_auto { "auto".to_owned() } else { s.prefetch.to_string() });
                    }
                    @if s.prefetch_auto { span.muted { "auto, " (s.prefetch) " now" } }
                    label { "Batch " input type="text" name="batch" size="10" placeholder="any" value=(s.batch.clone().unwrap_or_default()); }
                    button type="submit" { "Save" }
                }
            }
            td { (stats(&view.stats)) }
            td { (layout::time(w.last_contact)) }
            td {
                form.actions method="post" action={ "/ui/workers/" (id) "/act" } {
                    (layout::csrf(authed))
                    @if s.paused || s.draining {
                        button type="submit" name="action" value="resume" { "Resume" }
                    } @else {
                        button type="submit" name="action" value="pause" { "Pause" }
                    }
                    @if !s.draining {
                        button type="submit" name="action" value="drain"
                            data-confirm={ "Drain " (w.name) "? Its agent exits once its tasks end." } { "Drain" }
                    }
                    button.danger type="submit" name="action" value="delete"
                        data-confirm={ "Forget worker " (w.name) " and its credential?" } { "Delete" }
                }
            }
        }
    }
}

/// Recruited machines that have no worker yet: being created, deploying their agent, or
/// destroyed before it connected.
fn deploying(machines: &[&MachineRecord]) -> Markup {
    let rows = html! {
        @for m in machines {
            tr data-machine=(m.name) {
                th scope="row" { (m.name) }
                td.state { (layout::status(m.state.as_str())) }
                td { (m.provider) }
                td { (m.flavor) }
                td { (m.region) }
                td { (m.batch.as_deref().unwrap_or("any")) }
                td { (recruited_by(m)) }
                td { (layout::time(m.created_at)) div.muted { (layout::age(m.created_at)) " ago" } }
            }
        }
    };
    layout::table(
        "machines",
        &[
            &"Machine",
            &"State",
            &"Provider",
            &"Flavor",
            &"Region",
            &"Batch",
            &"Recruited",
            &"Since",
        ],
        rows,
    )
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let workers = state.ops().workers().await?;
    let machines = state.ops().live_machines().await?;
    let mut waiting: Vec<&MachineRecord> = machines
        .values()
        .filter(|m| !workers.iter().any(|v| v.worker.name == m.name))
        .collect();
    waiting.sort_by_key(|m| m.id.0);
    let content = html! {
        h1 { "Workers" }
        @if workers.is_empty() {
            p { "No worker yet: start " code { "scitq-agent" } " on a machine"
                @if waiting.is_empty() { "." } @else { ", or wait for the machines below." } }
        } @else {
            (layout::table(
                "workers",
                &[&"Worker", &"State", &"Machine", &"Running", &"Settings", &"Host", &"Last contact", &"Actions"],
                html! { @for view in &workers { (row(&authed, view)) } },
            ))
        }
        @if !waiting.is_empty() {
            h2 #deploying { "Machines not connected yet" }
            p.hint { "Recruited machines whose agent has not reached scitqd yet. "
                a href="/ui/jobs" { "Jobs" } " says how their creation goes." }
            (deploying(&waiting))
        }
    };
    Ok(layout::page(
        &authed,
        Section::Workers,
        "Workers",
        query.note.as_deref(),
        10,
        content,
    ))
}

/// A whole number field; empty or absent: `None`.
pub(super) fn number(form: &Form, key: &str) -> Result<Option<u32>, UiError> {
    match form.get(key).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| UiError::bad_request(format!("{key} {v:?} is not a whole number"))),
    }
}

/// Saves the settings of the row's form.
pub async fn settings(
    State(state): State<UiState>,
    Path(id): Path<i64>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let mut change = WorkerChange {
        concurrency: number(&form, "concurrency")?,
        batch: form.get("batch").map(|b| b.trim().to_owned()),
        ..Default::default()
    };
    match form.get("prefetch").map(str::trim) {
        Some("auto") => change.prefetch_auto = Some(true),
        _ => change.prefetch = number(&form, "prefetch")?,
    }
    let view = state.ops().update_worker(WorkerId(id), change).await?;
    let note = format!(
        "worker {} now runs {} task(s) at once",
        view.worker.name, view.worker.settings.concurrency
    );
    Ok(super::redirect_noted("/ui/workers", &note))
}

/// Pause, resume, drain or delete a worker.
pub async fn act(
    State(state): State<UiState>,
    Path(id): Path<i64>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let id = WorkerId(id);
    let ops = state.ops();
    let pause = |paused| WorkerChange {
        paused: Some(paused),
        ..Default::default()
    };
    let note = match form.get("action") {
        Some("pause") => {
            let v = ops.update_worker(id, pause(true)).await?;
            format!("worker {} paused: it takes no new task", v.worker.name)
        }
        Some("resume") => {
            let v = ops.update_worker(id, pause(false)).await?;
            format!("worker {} takes tasks again", v.worker.name)
        }
        Some("drain") => {
            let v = ops.drain_worker(id).await?;
            format!(
                "worker {} drains: its agent exits once its tasks end",
                v.worker.name
            )
        }
        Some("delete") => match ops.delete_worker(id).await? {
            crate::service::ops::WorkerDeleted::Forgotten => format!("worker {id} deleted"),
            crate::service::ops::WorkerDeleted::Destroying { machine } => {
                format!("worker {id}: its machine {machine} is being destroyed")
            }
        },
        other => {
            return Err(UiError::bad_request(format!(
                "unknown worker action {:?}",
                other.unwrap_or_default()
            )));
        }
    };
    Ok(super::redirect_noted("/ui/workers", &note))
}
