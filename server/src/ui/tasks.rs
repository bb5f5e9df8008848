//! The tasks page: filters (batch, status, name, worker), keyset paging, and actions on
//! the selected tasks (pause, resume, kill, relaunch; a new command for tasks not
//! started, shown before it applies).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, Render, html};

use super::layout::{self, Section};
use super::session::{Authed, Form, Posted};
use super::{UiError, UiState};
use crate::core::ids::{TaskId, WorkerId};
use crate::core::model::Task;
use crate::core::state::TaskStatus;
use crate::service::ops::{Changes, TaskQuery, TaskSelection};

/// Tasks per page.
const PAGE: u32 = 100;
/// Characters of a command shown in the list.
const COMMAND_SHOWN: usize = 120;
/// Most tasks one action or edit takes.
const MAX_SELECTED: usize = 10_000;

#[derive(serde::Deserialize, Default)]
pub struct Filters {
    batch: Option<String>,
    status: Option<String>,
    name: Option<String>,
    worker: Option<String>,
    #[serde(default)]
    after: i64,
    note: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl Filters {
    fn query(&self) -> Result<TaskQuery, UiError> {
        let statuses = match non_empty(&self.status) {
            None => Vec::new(),
            Some(word) => vec![parse_status(word)?],
        };
        let worker = match non_empty(&self.worker) {
            None => None,
            Some(id) => Some(WorkerId(id.parse().map_err(|_| {
                UiError::bad_request(format!("worker {id:?} is not a worker id"))
            })?)),
        };
        Ok(TaskQuery {
            batch: non_empty(&self.batch).map(str::to_owned),
            statuses,
            name: non_empty(&self.name).map(str::to_owned),
            worker,
            after_id: self.after.max(0),
            limit: PAGE,
            ..Default::default()
        })
    }

    /// This listing's URL with another `after`.
    fn url(&self, after: i64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("batch", &self.batch),
            ("status", &self.status),
            ("name", &self.name),
            ("worker", &self.worker),
        ] {
            if let Some(v) = non_empty(value) {
                query.append_pair(key, v);
            }
        }
        if after > 0 {
            query.append_pair("after", &after.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            "/ui/tasks".to_owned()
        } else {
            format!("/ui/tasks?{query}")
        }
    }
}

fn parse_status(word: &str) -> Result<TaskStatus, UiError> {
    TaskStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == word)
        .ok_or_else(|| UiError::bad_request(format!("unknown task status {word:?}")))
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn worker_name(names: &HashMap<WorkerId, String>, worker: Option<WorkerId>) -> String {
    match worker {
        None => String::new(),
        Some(id) => names.get(&id).cloned().unwrap_or_else(|| id.0.to_string()),
    }
}

fn filter_form(filters: &Filters, names: &HashMap<WorkerId, String>) -> Markup {
    let mut workers: Vec<(&WorkerId, &String)> = names.iter().collect();
    workers.sort_by(|a, b| a.1.cmp(b.1));
    let chosen = non_empty(&filters.worker).unwrap_or_default();
    let status = non_empty(&filters.status).unwrap_or_default();
    html! {
        form.filters method="get" action="/ui/tasks" role="search" {
            label { "Batch " input type="text" name="batch" value=(non_empty(&filters.batch).unwrap_or_default()); }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in TaskStatus::ALL {
                        option value=(s.as_str()) selected[s.as_str() == status] { (s.as_str()) }
                    }
                }
            }
            label { "Name " input type="text" name="name" placeholder="glob: sample-*" value=(non_empty(&filters.name).unwrap_or_default()); }
            label { "Worker "
                select name="worker" {
                    option value="" { "any" }
                    @for (id, name) in workers {
                        @let value = id.0.to_string();
                        option value=(value) selected[value == chosen] { (name) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn task_rows(tasks: &[Task], names: &HashMap<WorkerId, String>) -> Markup {
    html! {
        @for t in tasks {
            tr {
                td { input type="checkbox" name="ids" value=(t.id.0) aria-label={ "select task " (t.id.0) }; }
                td { a href={ "/ui/tasks/" (t.id.0) } { (t.id.0) } }
                td { (t.spec.name) }
                td { (t.spec.batch) }
                td { (layout::status(t.status.as_str())) }
                td { (worker_name(names, t.worker)) }
                td { @if let Some(code) = t.exit_code { (code) } }
                td.cmd title=(t.spec.command) { code { (shorten(&t.spec.command, COMMAND_SHOWN)) } }
            }
        }
    }
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Query(filters): Query<Filters>,
) -> Result<Markup, UiError> {
    let query = filters.query()?;
    let page = state.ops().list_tasks(query).await?;
    let names = state.ops().worker_names().await?;
    let here = filters.url(filters.after);
    let select_all = html! {
        input type="checkbox" data-select-all="ids" aria-label="select every task of the page";
    };
    let headers: [&dyn Render; 8] = [
        &select_all,
        &"ID",
        &"Name",
        &"Batch",
        &"Status",
        &"Worker",
        &"Exit",
        &"Command",
    ];
    let content = html! {
        h1 { "Tasks" }
        (filter_form(&filters, &names))
        form #tasks method="post" action="/ui/tasks/act" {
            (layout::csrf(&authed))
            input type="hidden" name="back" value=(here);
            div.toolbar role="group" aria-label="Actions on the selected tasks" {
                button type="submit" name="action" value="pause" { "Pause" }
                button type="submit" name="action" value="resume" { "Resume" }
                button.danger type="submit" name="action" value="kill" data-confirm="Kill the selected tasks?" { "Kill" }
                button type="submit" name="action" value="relaunch" { "Relaunch" }
            }
            @if page.tasks.is_empty() {
                p { "No task matches." }
            } @else {
                (layout::table("tasks", &headers, task_rows(&page.tasks, &names)))
            }
            fieldset.edit {
                legend { "New command for the selected tasks not started yet" }
                label for="new-command" { "Command" }
                textarea #new-command name="command" rows="2" {}
                button type="submit" formaction="/ui/tasks/edit" { "Preview the edit" }
            }
        }
        nav.paging aria-label="Pages" {
            @if filters.after > 0 { a href=(filters.url(0)) { "First page" } }
            @if page.next_after_id > 0 { a rel="next" href=(filters.url(page.next_after_id)) { "Next page" } }
        }
    };
    Ok(layout::page(
        &authed,
        Section::Tasks,
        "Tasks",
        filters.note.as_deref(),
        0,
        content,
    ))
}

fn selected(form: &Form) -> Result<Vec<TaskId>, UiError> {
    let ids = form
        .all("ids")
        .map(|id| {
            id.parse()
                .map(TaskId)
                .map_err(|_| UiError::bad_request(format!("{id:?} is not a task id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(UiError::bad_request("no task selected: tick some first"));
    }
    if ids.len() > MAX_SELECTED {
        return Err(UiError::bad_request(format!(
            "{} tasks selected, at most {MAX_SELECTED} at once",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Pause, resume, kill or relaunch the selected tasks, one by one: each one's refusal is
/// said, the others go on.
pub async fn act(
    State(state): State<UiState>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let ids = selected(&form)?;
    let action = form.get("action").unwrap_or_default();
    let done_word = match action {
        "pause" => "paused",
        "resume" => "resumed",
        "kill" => "killed",
        "relaunch" => "relaunched",
        other => return Err(UiError::bad_request(format!("unknown action {other:?}"))),
    };
    let ops = state.ops();
    let mut done = 0;
    let mut refused = Vec::new();
    for id in ids {
        let result = match action {
            "pause" => ops.pause_task(id).await,
            "resume" => ops.resume_task(id).await,
            "kill" => ops.kill_task(id).await,
            _ => ops.relaunch_task(id, None).await,
        };
        match result {
            Ok(_) => done += 1,
            Err(err) => refused.push(format!("task {id}: {err}")),
        }
    }
    let mut note = format!("{done} task(s) {done_word}");
    if !refused.is_empty() {
        note.push_str("; ");
        note.push_str(&refused.join("; "));
    }
    let back = super::back_to(form.get("back"), "/ui/tasks");
    Ok(super::redirect_noted(&back, &shorten(&note, 1500)))
}

/// A new command for the selected tasks: first shown (a dry run of the edit, so a task
/// that cannot take it is named before anything changes), then applied, all or none.
pub async fn edit(
    State(state): State<UiState>,
    Posted { authed, form }: Posted,
) -> Result<Response, UiError> {
    let ids = selected(&form)?;
    let command = form.get("command").unwrap_or_default().to_owned();
    let back = super::back_to(form.get("back"), "/ui/tasks");
    let selection = TaskSelection {
        ids: ids.clone(),
        ..Default::default()
    };
    let changes = Changes {
        command: Some(command.clone()),
        ..Default::default()
    };
    let ops = state.ops();
    if form.get("apply") == Some("yes") {
        let edited = ops.edit_tasks(selection, changes, false).await?;
        let note = format!("new command set on {} task(s)", edited.len());
        return Ok(super::redirect_noted(&back, &note));
    }
    let before = ops
        .list_tasks(TaskQuery {
            ids: ids.clone(),
            limit: MAX_SELECTED as u32,
            ..Default::default()
        })
        .await?
        .tasks;
    let after = ops.edit_tasks(selection, changes, true).await?;
    let old: HashMap<TaskId, &str> = before
        .iter()
        .map(|t| (t.id, t.spec.command.as_str()))
        .collect();
    let rows = html! {
        @for t in &after {
            tr {
                td { a href={ "/ui/tasks/" (t.id.0) } { (t.id.0) " " (t.spec.name) } }
                td { (layout::status(t.status.as_str())) }
                td { del { code { (old.get(&t.id).copied().unwrap_or_default()) } } }
                td { ins { code { (t.spec.command) } } }
            }
        }
    };
    let content = html! {
        h1 { "New command: preview" }
        p { "Nothing has changed yet. " (after.len()) " task(s) will run:" }
        (layout::table("preview", &[&"Task", &"Status", &"Command now", &"New command"], rows))
        form method="post" action="/ui/tasks/edit" {
            (layout::csrf(&authed))
            @for id in &ids { input type="hidden" name="ids" value=(id.0); }
            input type="hidden" name="command" value=(command);
            input type="hidden" name="back" value=(back);
            input type="hidden" name="apply" value="yes";
            button type="submit" { "Apply to " (after.len()) " task(s)" }
            " "
            a href=(back) { "Cancel" }
        }
    };
    Ok(layout::page(&authed, Section::Tasks, "Edit preview", None, 0, content).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_url_keeps_its_filters() {
        let filters = Filters {
            batch: Some("b 1".into()),
            status: Some("failed".into()),
            name: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(filters.url(0), "/ui/tasks?batch=b+1&status=failed");
        assert_eq!(
            filters.url(42),
            "/ui/tasks?batch=b+1&status=failed&after=42"
        );
        let query = filters.query().unwrap();
        assert_eq!(query.statuses, [TaskStatus::Failed]);
        assert_eq!(query.name, None);
    }

    #[test]
    fn bad_filters_are_said() {
        let filters = Filters {
            status: Some("done".into()),
            ..Default::default()
        };
        assert!(filters.query().is_err());
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
