//! The recruiters page: the rules (batch, provider, flavor, machines of their maximum,
//! state: paused and why, failures), pause, resume, delete, and a form to add one. The
//! loop that acts on them is `service::recruiter`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::layout::{self, Section};
use super::session::{Authed, Form, Posted};
use super::workers::number;
use super::{UiError, UiState};
use crate::core::ids::RecruiterId;
use crate::core::recruit::{FlavorChoice, Rule};
use crate::service::ops::{DEFAULT_IDLE_TIMEOUT, NewRule, RuleView};

#[derive(serde::Deserialize)]
pub struct PageQuery {
    note: Option<String>,
}

fn flavor(choice: &FlavorChoice) -> Markup {
    let any = FlavorChoice::Minimums {
        cpu: 0,
        memory_gib: 0,
        disk_gib: 0,
        gpu: 0,
    };
    match choice {
        FlavorChoice::Named(name) => html! { (name) },
        _ if *choice == any => html! { "the cheapest" },
        FlavorChoice::Minimums { .. } => html! { "the cheapest with " (choice) },
    }
}

/// Whether a rule recruits, in words: active, paused (by whom, why), or retrying after
/// failed deployments.
fn state(rule: &Rule) -> Markup {
    html! {
        @if rule.paused {
            (layout::status("paused"))
            @match &rule.paused_reason {
                Some(reason) => div.reason { "by itself: " (reason) },
                None => div.muted { "by an operator" },
            }
        } @else if rule.failures > 0 {
            (layout::status("retrying"))
            div.reason {
                (rule.failures) " deployment(s) failed in a row"
                @if let Some(at) = rule.retry_at { "; next try at " (layout::time(at)) }
            }
        } @else {
            (layout::status("active"))
        }
    }
}

fn settings(rule: &Rule) -> Markup {
    html! {
        dl.stats {
            dt { "Concurrency" } dd { (rule.concurrency) }
            dt { abbr title="waiting tasks per worker slot that make another machine worth renting" { "Rounds" } }
            dd { (rule.rounds) }
            dt { "Prefetch" } dd { @match rule.prefetch { Some(n) => (n), None => "auto" } }
            dt { "Idle timeout" } dd { (layout::duration(rule.idle_timeout)) }
        }
    }
}

fn row(authed: &Authed, view: &RuleView) -> Markup {
    let rule = &view.rule;
    let id = rule.id.0;
    let tasks_url = format!(
        "/ui/tasks?batch={}",
        form_urlencoded::byte_serialize(rule.batch.as_bytes()).collect::<String>()
    );
    html! {
        tr #{ "rule-" (id) } data-rule=(id) data-batch=(rule.batch) {
            th scope="row" { (id) }
            td { a href=(tasks_url) { (rule.batch) } }
            td {
                (rule.provider)
                div.muted { @match &rule.region { Some(r) => (r), None => "its first region" } }
            }
            td { (flavor(&rule.flavor)) }
            td.machines { (view.machines) " of " (rule.max_workers) }
            td { (settings(rule)) }
            td.state { (state(rule)) }
            td {
                form.actions method="post" action={ "/ui/recruiters/" (id) "/act" } {
                    (layout::csrf(authed))
                    @if rule.paused {
                        button type="submit" name="action" value="resume" { "Resume" }
                    } @else {
                        button type="submit" name="action" value="pause" { "Pause" }
                    }
                    button.danger type="submit" name="action" value="delete"
                        data-confirm={ "Delete rule " (id) " of batch " (rule.batch) "? Its machines are destroyed once idle." } { "Delete" }
                }
            }
        }
    }
}

/// A form refused: what it held, shown again with why.
struct Refused<'a> {
    form: &'a Form,
    error: &'a str,
}

/// The form that adds a rule; `providers` the configured ones with their regions,
/// `batches` the names to suggest; `refused` a form sent before, shown again.
fn add_form(
    authed: &Authed,
    providers: &[(String, Vec<String>)],
    batches: &[String],
    refused: Option<&Refused<'_>>,
) -> Markup {
    let sent = |key: &str, default: &str| -> String {
        refused
            .and_then(|r| r.form.get(key))
            .unwrap_or(default)
            .to_owned()
    };
    let chosen = sent("provider", "");
    html! {
        form.rule method="post" action="/ui/recruiters" {
            (layout::csrf(authed))
            @if let Some(r) = refused {
                p.error role="alert" { "The rule was not added: " (r.error) }
            }
            fieldset {
                legend { "For" }
                label { "Batch " input type="text" name="batch" required list="batch-names" autocomplete="off" value=(sent("batch", "")); }
                datalist #batch-names { @for b in batches { option value=(b) {} } }
                label { "Provider "
                    select name="provider" required {
                        @for (name, _) in providers { option value=(name) selected[*name == chosen] { (name) } }
                    }
                }
                label { "Region "
                    input type="text" name="region" list="regions" placeholder="the provider's first" autocomplete="off" value=(sent("region", ""));
                }
                datalist #regions {
                    @for (name, regions) in providers {
                        @for r in regions { option value=(r) { (name) } }
                    }
                }
            }
            fieldset {
                legend { "Flavor: a name, or minimums (the cheapest matching; neither: the cheapest)" }
                label { "Flavor " input type="text" name="flavor" size="14" autocomplete="off" value=(sent("flavor", "")); }
                label { "CPUs at least " input type="number" name="min_cpu" min="0" value=(sent("min_cpu", "")); }
                label { "Memory at least (GiB) " input type="number" name="min_mem" min="0" value=(sent("min_mem", "")); }
                label { "Disk at least (GiB) " input type="number" name="min_disk" min="0" value=(sent("min_disk", "")); }
                label { "GPUs at least " input type="number" name="gpu" min="0" value=(sent("gpu", "")); }
            }
            fieldset {
                legend { "How many" }
                label { "Max workers " input type="number" name="max_workers" min="1" required value=(sent("max_workers", "")); }
                label { "Concurrency " input type="number" name="concurrency" min="1" required value=(sent("concurrency", "1")); }
                label title="waiting tasks per worker slot that make another machine worth renting" {
                    "Rounds " input type="number" name="rounds" min="1" required value=(sent("rounds", "1"));
                }
                label { "Prefetch " input type="text" name="prefetch" inputmode="numeric" size="5" value=(sent("prefetch", "auto")); }
                label { "Idle timeout " input type="text" name="idle_timeout" size="6" value=(sent("idle_timeout", &layout::duration(DEFAULT_IDLE_TIMEOUT))); }
            }
            button type="submit" { "Add the rule" }
        }
    }
}

pub async fn page(
    State(state): State<UiState>,
    authed: Authed,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    render(&state, &authed, query.note.as_deref(), None).await
}

/// The page; with a refused form it does not reload itself (that would empty the form).
async fn render(
    state: &UiState,
    authed: &Authed,
    note: Option<&str>,
    refused: Option<&Refused<'_>>,
) -> Result<Markup, UiError> {
    let ops = state.ops();
    let rules = ops.recruiters().await?;
    let providers = ops.providers();
    let batches: Vec<String> = ops
        .batches()
        .await?
        .into_iter()
        .map(|b| b.batch.name)
        .collect();
    let content = html! {
        h1 { "Recruiters" }
        p.hint { "A rule recruits machines for a batch while its tasks wait, within the provider's quotas, and destroys them once idle. "
            a href="/ui/workers#deploying" { "Workers" } " shows the machines, "
            a href="/ui/jobs" { "Jobs" } " how their creation goes." }
        @if rules.is_empty() {
            p { "No rule yet." }
        } @else {
            (layout::table(
                "recruiters",
                &[&"Rule", &"Batch", &"Provider", &"Flavor", &"Machines", &"Settings", &"State", &"Actions"],
                html! { @for view in &rules { (row(authed, view)) } },
            ))
        }
        h2 #add { "Add a rule" }
        @if providers.is_empty() {
            p { "No recruitment here: scitqd has no " code { "[[provider]]" } " configured." }
        } @else {
            (add_form(authed, &providers, &batches, refused))
        }
    };
    let refresh = if refused.is_some() { 0 } else { 10 };
    Ok(layout::page(
        authed,
        Section::Recruiters,
        "Recruiters",
        note,
        refresh,
        content,
    ))
}

fn text<'a>(form: &'a Form, key: &str) -> &'a str {
    form.get(key).map(str::trim).unwrap_or_default()
}

/// The rule a form asks for.
fn new_rule(form: &Form) -> Result<NewRule, UiError> {
    let minimums = [
        number(form, "min_cpu")?,
        number(form, "min_mem")?,
        number(form, "min_disk")?,
        number(form, "gpu")?,
    ];
    let has_minimums = minimums.iter().any(|m| m.unwrap_or(0) > 0);
    let [cpu, memory_gib, disk_gib, gpu] = minimums.map(|m| m.unwrap_or(0));
    // Neither a flavor nor minimums: the cheapest flavor.
    let flavor = match (text(form, "flavor"), has_minimums) {
        ("", _) => FlavorChoice::Minimums {
            cpu,
            memory_gib,
            disk_gib,
            gpu,
        },
        (name, false) => FlavorChoice::Named(name.to_owned()),
        (_, true) => {
            return Err(UiError::bad_request(
                "give a flavor or minimums (cpus, memory, disk, gpus), not both",
            ));
        }
    };
    let max_workers = number(form, "max_workers")?
        .ok_or_else(|| UiError::bad_request("give the most machines at once (max workers)"))?;
    let prefetch = match text(form, "prefetch") {
        "" | "auto" => None,
        _ => number(form, "prefetch")?,
    };
    let idle_timeout = match text(form, "idle_timeout") {
        "" => DEFAULT_IDLE_TIMEOUT,
        v => humantime::parse_duration(v)
            .map_err(|e| UiError::bad_request(format!("idle timeout {v:?}: {e}")))?,
    };
    if idle_timeout < Duration::from_secs(1) {
        return Err(UiError::bad_request("the idle timeout must be at least 1s"));
    }
    Ok(NewRule {
        batch: text(form, "batch").to_owned(),
        provider: text(form, "provider").to_owned(),
        region: Some(text(form, "region").to_owned()).filter(|r| !r.is_empty()),
        flavor,
        max_workers,
        rounds: number(form, "rounds")?.unwrap_or(1),
        concurrency: number(form, "concurrency")?.unwrap_or(1),
        prefetch,
        idle_timeout,
    })
}

/// Adds the form's rule; a refused one comes back filled in as it was sent, with why.
pub async fn create(
    State(state): State<UiState>,
    Posted { authed, form }: Posted,
) -> Result<Response, UiError> {
    let created = match new_rule(&form) {
        Ok(rule) => state
            .ops()
            .create_recruiter(rule)
            .await
            .map_err(UiError::from),
        Err(e) => Err(e),
    };
    let view = match created {
        Ok(view) => view,
        Err(err) => {
            let refused = Refused {
                form: &form,
                error: &err.message,
            };
            let page = render(&state, &authed, None, Some(&refused)).await?;
            return Ok((err.status, page).into_response());
        }
    };
    let rule = &view.rule;
    let note = format!(
        "rule {} added: up to {} machine(s) of {} for batch {} while its tasks wait",
        rule.id, rule.max_workers, rule.provider, rule.batch
    );
    Ok(super::redirect_noted("/ui/recruiters", &note))
}

/// Pause, resume or delete a rule.
pub async fn act(
    State(state): State<UiState>,
    Path(id): Path<i64>,
    Posted { form, .. }: Posted,
) -> Result<Response, UiError> {
    let id = RecruiterId(id);
    let ops = state.ops();
    let note = match form.get("action") {
        Some("pause") => {
            let v = ops.pause_recruiter(id, true).await?;
            format!(
                "rule {id} paused: it recruits nothing more for batch {}",
                v.rule.batch
            )
        }
        Some("resume") => {
            let v = ops.pause_recruiter(id, false).await?;
            format!("rule {id} recruits for batch {} again", v.rule.batch)
        }
        Some("delete") => {
            ops.delete_recruiter(id).await?;
            format!("rule {id} deleted: its machines are destroyed once idle")
        }
        other => {
            return Err(UiError::bad_request(format!(
                "unknown recruiter action {:?}",
                other.unwrap_or_default()
            )));
        }
    };
    Ok(super::redirect_noted("/ui/recruiters", &note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            id: RecruiterId(4),
            batch: "b".into(),
            provider: "local".into(),
            region: None,
            flavor: FlavorChoice::Named("f".into()),
            max_workers: 2,
            rounds: 1,
            concurrency: 1,
            prefetch: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            paused: false,
            retry_at: None,
            paused_reason: None,
            failures: 0,
        }
    }

    #[test]
    fn a_rule_state_is_said_in_words() {
        let mut r = rule();
        assert!(state(&r).into_string().contains(">active<"));
        r.failures = 2;
        r.retry_at = Some(0);
        let html = state(&r).into_string();
        assert!(html.contains(">retrying<"), "{html}");
        assert!(
            html.contains("2 deployment(s) failed in a row; next try at 1970-01-01 00:00:00 UTC"),
            "{html}"
        );
        r.paused = true;
        r.paused_reason = Some("3 rounds <never> connected".into());
        let html = state(&r).into_string();
        assert!(html.contains(">paused<"), "{html}");
        assert!(
            html.contains("by itself: 3 rounds &lt;never&gt; connected"),
            "{html}"
        );
        r.paused_reason = None;
        assert!(state(&r).into_string().contains("by an operator"));
    }
}
