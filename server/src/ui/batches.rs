//! The batches page (the UI's home): counts by status with a progress bar, tasks finished
//! per minute, workers serving each batch; stop, suspend, go, delete.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, Render, html};

use super::layout::{self, Section};
use super::session::{Authed, Posted};
use super::{UiError, UiState};
use crate::service::ops::BatchCounts;

/// How far back the tasks per minute look.
const RATE_WINDOW: Duration = Duration::from_secs(300);
/// Samples closer than this to the previous one are not kept.
const RATE_STEP: Duration = Duration::from_secs(2);

/// Finished-task counts of each batch as the page saw them: the rate is what changed
/// within [`RATE_WINDOW`]. Nothing is counted while nobody looks; the page reloads
/// itself, so a rate shows a few seconds after it opens.
#[derive(Default)]
pub struct Rates(HashMap<String, VecDeque<(Instant, u64)>>);

impl Rates {
    /// Records `done` for `batch` at `now`; the tasks per minute, once two samples at
    /// least 5 s apart are known.
    fn observe(&mut self, batch: &str, done: u64, now: Instant) -> Option<f64> {
        let samples = self.0.entry(batch.to_owned()).or_default();
        // A relaunch or a delete takes finished tasks back: start again.
        if samples.back().is_some_and(|&(_, last)| done < last) {
            samples.clear();
        }
        if samples
            .back()
            .is_none_or(|&(at, _)| now.duration_since(at) >= RATE_STEP)
        {
            samples.push_back((now, done));
        }
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|&(at, _)| now.duration_since(at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
        let &(first_at, first) = samples.front()?;
        let elapsed = now.duration_since(first_at);
        if elapsed < Duration::from_secs(5) {
            return None;
        }
        Some((done - first) as f64 * 60.0 / elapsed.as_secs_f64())
    }

    fn forget_others(&mut self, batches: &[BatchCounts]) {
        self.0
            .retain(|name, _| batches.iter().any(|b| &b.batch.name == name));
    }
}

#[derive(serde::Deserialize)]
pub struct PageQuery {
    note: Option<String>,
}

/// Segments of the progress bar, in order, with the statuses each counts.
const SEGMENTS: [(&str, &[&str]); 5] = [
    ("succeeded", &["succeeded"]),
    ("failed", &["failed"]),
    ("active", &["assigned", "accepted", "running", "uploading"]),
    ("queued", &["waiting", "pending", "paused"]),
    ("canceled", &["canceled"]),
];

fn sum(counts: &BTreeMap<String, u64>, statuses: &[&str]) -> u64 {
    statuses
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum()
}

fn progress(counts: &BTreeMap<String, u64>) -> Markup {
    let total: u64 = counts.values().sum();
    let done = sum(counts, &["succeeded", "failed", "canceled"]);
    let percent = (done * 100).checked_div(total).unwrap_or(0);
    let summary = SEGMENTS
        .iter()
        .map(|(name, statuses)| format!("{} {name}", sum(counts, statuses)))
        .collect::<Vec<_>>()
        .join(", ");
    // (name, count, x, width), in percent of the bar.
    let mut x = 0.0;
    let mut segments = Vec::new();
    for (name, statuses) in SEGMENTS {
        let n = sum(counts, statuses);
        if n > 0 && total > 0 {
            let width = n as f64 * 100.0 / total as f64;
            segments.push((name, n, x, width));
            x += width;
        }
    }
    html! {
        div.progress {
            svg viewBox="0 0 100 8" preserveAspectRatio="none" role="img"
                aria-label=(summary) {
                @for (name, n, x, width) in segments {
                    rect class={ "seg-" (name) } x=(format!("{x:.3}")) y="0"
                        width=(format!("{width:.3}")) height="8" {
                        title { (n) " " (name) }
                    }
                }
            }
            span.done { (percent) "% done (" (done) " of " (total) ")" }
        }
    }
}

fn counts_list(counts: &BTreeMap<String, u64>) -> Markup {
    html! {
        ul.counts {
            @for (status, n) in counts {
                li { (layout::status(status)) " " (n) }
            }
        }
    }
}

fn state_word(b: &BatchCounts) -> &'static str {
    match (b.batch.suspended, b.batch.stopped) {
        (true, _) => "suspended",
        (false, true) => "stopped",
        (false, false) => "running",
    }
}

/// A batch's row: `rate` its tasks per minute when known, `serving` the workers holding
/// one of its tasks.
fn row(authed: &Authed, b: &BatchCounts, rate: Option<f64>, serving: u64) -> Markup {
    let name = &b.batch.name;
    let tasks_url = format!(
        "/ui/tasks?batch={}",
        form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    );
    html! {
        tr data-batch=(name) {
            th scope="row" { a href=(tasks_url) { (name) } }
            td.state { (layout::status(state_word(b))) }
            td { (progress(&b.counts)) }
            td { (counts_list(&b.counts)) }
            td.rate { @match rate { Some(r) => (format!("{r:.1}")), None => span.muted { "measuring" } } }
            td.serving { (serving) }
            td {
                form.actions method="post" action="/ui/batches/act" {
                    (layout::csrf(authed))
                    input type="hidden" name="name" value=(name);
                    @if b.batch.stopped {
                        button type="submit" name="action" value="go" { "Go" }
                    } @else {
                        button type="submit" name="action" value="stop" { "Stop" }
                    }
                    @if !b.batch.suspended {
                        button type="submit" name="action" value="suspend" { "Suspend" }
                    }
                    button.danger type="submit" name="action" value="delete"
                        data-confirm={ "Delete batch " (name) " with all its tasks and their output?" } { "Delete" }
                }
            }
        }
    }
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let batches = state.ops().batches().await?;
    let serving = state.ops().serving_workers().await?;
    let now = Instant::now();
    let rates: Vec<Option<f64>> = {
        let mut rates = state.0.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.forget_others(&batches);
        batches
            .iter()
            .map(|b| {
                let done = sum(&b.counts, &["succeeded", "failed"]);
                rates.observe(&b.batch.name, done, now)
            })
            .collect()
    };
    let rate_header = html! {
        abbr title="tasks finished per minute, over the last 5 minutes" { "Tasks/min" }
    };
    let headers: [&dyn Render; 7] = [
        &"Batch",
        &"State",
        &"Progress",
        &"Tasks by status",
        &rate_header,
        &"Workers",
        &"Actions",
    ];
    let rows = html! {
        @for (b, rate) in batches.iter().zip(&rates) {
            (row(&authed, b, *rate, serving.get(&b.batch.name).copied().unwrap_or(0)))
        }
    };
    let content = html! {
        h1 { "Batches" }
        @if batches.is_empty() {
            p { "No batch yet: tasks submitted with " code { "scitqctl task create" } " appear here." }
        } @else {
            (layout::table("batches", &headers, rows))
        }
    };
    Ok(layout::page(
        &authed,
        Section::Batches,
        "Batches",
        query.note.as_deref(),
        5,
        content,
    ))
}

/// Stop, suspend, go or delete one batch.
pub async fn act(
    State(state): State<UiState>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let name = form.get("name").unwrap_or_default();
    let ops = state.ops();
    let note = match form.get("action") {
        Some("stop") => {
            ops.stop_batch(name, None).await?;
            format!("batch {name} stopped: no new task of it starts")
        }
        Some("suspend") => {
            ops.suspend_batch(name).await?;
            format!("batch {name} suspended: its running tasks are frozen")
        }
        Some("go") => {
            ops.go_batch(name).await?;
            format!("batch {name} goes on")
        }
        Some("delete") => {
            let n = ops.delete_batch(name).await?;
            format!("batch {name} deleted with its {n} tasks")
        }
        other => {
            return Err(UiError::bad_request(format!(
                "unknown batch action {:?}",
                other.unwrap_or_default()
            )));
        }
    };
    Ok(super::redirect_noted("/ui/", &note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_per_minute_over_the_window() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        assert_eq!(rates.observe("b", 10, t0), None);
        assert_eq!(rates.observe("b", 12, t0 + Duration::from_secs(1)), None);
        let r = rates
            .observe("b", 40, t0 + Duration::from_secs(30))
            .unwrap();
        assert_eq!(r, 60.0);
        // Fewer done than before (a relaunch): measured again from there.
        assert_eq!(rates.observe("b", 5, t0 + Duration::from_secs(40)), None);
        // Old samples leave the window.
        let later = t0 + Duration::from_secs(1000);
        rates.observe("b", 5, later);
        let r = rates
            .observe("b", 105, later + Duration::from_secs(60))
            .unwrap();
        assert!((r - 100.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn the_progress_bar_says_its_numbers_in_words() {
        let counts = BTreeMap::from([
            ("succeeded".to_owned(), 3),
            ("failed".to_owned(), 1),
            ("pending".to_owned(), 4),
        ]);
        let html = progress(&counts).into_string();
        assert!(html.contains("50% done (4 of 8)"), "{html}");
        assert!(
            html.contains("3 succeeded, 1 failed, 0 active, 4 queued"),
            "{html}"
        );
    }
}
