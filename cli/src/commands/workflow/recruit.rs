//! `recruit:` in a workflow file: a recruiter rule for each step's batch that has one (the
//! workflow's keys are defaults for its steps', one by one; a step's flavor or minimums
//! replace the workflow's as a whole). `run` creates the rules with the steps, `--dry-run`
//! shows them, `workflow delete` deletes them.

use std::time::Duration;

use anyhow::Context as _;
use scitq_proto::v1::{CreateRecruiterRequest, ListRecruitersRequest, RecruiterRef};

use super::file::Recruit;
use crate::client::Client;

/// Idle timeout of a rule that gives none (scitqd's default too).
const DEFAULT_IDLE: Duration = Duration::from_secs(300);

fn has_flavor_choice(r: &Recruit) -> bool {
    r.flavor.is_some()
        || r.min_cpu.is_some()
        || r.min_mem.is_some()
        || r.min_disk.is_some()
        || r.gpu.is_some()
}

/// A step's `recruit` keys over the workflow's.
pub fn merge(defaults: Option<&Recruit>, own: Option<&Recruit>) -> Option<Recruit> {
    let (d, o) = match (defaults, own) {
        (None, None) => return None,
        (Some(one), None) | (None, Some(one)) => return Some(one.clone()),
        (Some(d), Some(o)) => (d, o),
    };
    let flavor = if has_flavor_choice(o) { o } else { d };
    Some(Recruit {
        provider: o.provider.clone().or_else(|| d.provider.clone()),
        region: o.region.clone().or_else(|| d.region.clone()),
        flavor: flavor.flavor.clone(),
        min_cpu: flavor.min_cpu,
        min_mem: flavor.min_mem,
        min_disk: flavor.min_disk,
        gpu: flavor.gpu,
        max_workers: o.max_workers.or(d.max_workers),
        concurrency: o.concurrency.or(d.concurrency),
        rounds: o.rounds.or(d.rounds),
        prefetch: o.prefetch.or(d.prefetch),
        idle_timeout: o.idle_timeout.clone().or_else(|| d.idle_timeout.clone()),
    })
}

fn at_least_one(key: &str, value: Option<u32>) -> Result<u32, String> {
    match value {
        None => Ok(1),
        Some(0) => Err(format!("{key} must be at least 1")),
        Some(n) => Ok(n),
    }
}

/// The rule of `batch` from merged keys, or why they cannot make one.
pub fn rule(batch: &str, r: &Recruit) -> Result<CreateRecruiterRequest, String> {
    let provider = r
        .provider
        .clone()
        .filter(|p| !p.trim().is_empty())
        .ok_or("provider is needed: a provider configured in scitqd ([[provider]] name)")?;
    let max_workers = match r.max_workers {
        None => {
            return Err(
                "max_workers is needed: it caps how many machines the step may have".into(),
            );
        }
        Some(0) => return Err("max_workers must be at least 1".into()),
        Some(n) => n,
    };
    let minimums = [r.min_cpu, r.min_mem, r.min_disk, r.gpu];
    if r.flavor.is_some() && minimums.iter().any(Option::is_some) {
        return Err("give flavor or minimums (min_cpu, min_mem, min_disk, gpu), not both".into());
    }
    if r.flavor.as_deref().is_some_and(|f| f.trim().is_empty()) {
        return Err("flavor is empty: give a flavor name, or minimums".into());
    }
    let idle = match &r.idle_timeout {
        None => DEFAULT_IDLE,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("invalid idle_timeout {text:?}: {e}"))?,
    };
    if idle < Duration::from_secs(1) {
        return Err("idle_timeout must be at least 1s".into());
    }
    Ok(CreateRecruiterRequest {
        batch: batch.to_owned(),
        provider,
        region: r.region.clone().unwrap_or_default(),
        flavor: r.flavor.clone().unwrap_or_default(),
        min_cpu: r.min_cpu.unwrap_or(0),
        min_mem_gib: r.min_mem.unwrap_or(0),
        min_disk_gib: r.min_disk.unwrap_or(0),
        gpu: r.gpu.unwrap_or(0),
        max_workers,
        rounds: at_least_one("rounds", r.rounds)?,
        concurrency: at_least_one("concurrency", r.concurrency)?,
        prefetch: r.prefetch,
        idle_timeout_s: idle.as_secs(),
    })
}

/// What a rule recruits, in one line.
pub fn describe(rule: &CreateRecruiterRequest) -> String {
    let flavor = if rule.flavor.is_empty() {
        let minimums: Vec<String> = [
            ("cpu", rule.min_cpu, ""),
            ("memory", rule.min_mem_gib, " GiB"),
            ("disk", rule.min_disk_gib, " GiB"),
            ("gpu", rule.gpu, ""),
        ]
        .iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(what, n, unit)| format!("{what} >= {n}{unit}"))
        .collect();
        if minimums.is_empty() {
            "the cheapest flavor".to_owned()
        } else {
            format!("the cheapest flavor with {}", minimums.join(", "))
        }
    } else {
        format!("flavor {}", rule.flavor)
    };
    let region = if rule.region.is_empty() {
        String::new()
    } else {
        format!(" in {}", rule.region)
    };
    let prefetch = rule
        .prefetch
        .map_or_else(|| "auto".to_owned(), |p| p.to_string());
    format!(
        "recruits on {}{region}, {flavor}, at most {} machine(s), concurrency {}, rounds {}, \
         prefetch {prefetch}, idle timeout {}",
        rule.provider,
        rule.max_workers,
        rule.concurrency,
        rule.rounds,
        humantime::format_duration(Duration::from_secs(rule.idle_timeout_s))
    )
}

/// Creates the rules, in order; returns their ids. On a failure, the ones made are deleted.
pub async fn create(
    client: &Client,
    rules: &[&CreateRecruiterRequest],
) -> anyhow::Result<Vec<i64>> {
    let mut made = Vec::with_capacity(rules.len());
    for rule in rules {
        let created = client
            .recruit()
            .create_recruiter((*rule).clone())
            .await
            .with_context(|| format!("cannot add the recruiter of batch {}", rule.batch));
        match created {
            Ok(r) => made.push(r.into_inner().id),
            Err(e) => {
                delete_ids(client, &made).await;
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Deletes rules, saying on stderr which could not be.
pub async fn delete_ids(client: &Client, ids: &[i64]) {
    for &id in ids {
        if let Err(status) = client.recruit().delete_recruiter(RecruiterRef { id }).await {
            eprintln!(
                "warning: recruiter {id} was not deleted: {}",
                status.message()
            );
        }
    }
}

/// Deletes the rules of a workflow's batches (`NAME.STEP`) but those in `keep`; returns
/// how many.
pub async fn delete_of(client: &Client, workflow: &str, keep: &[i64]) -> anyhow::Result<usize> {
    let prefix = format!("{workflow}.");
    let ids: Vec<i64> = client
        .recruit()
        .list_recruiters(ListRecruitersRequest {})
        .await
        .context("cannot list the recruiters")?
        .into_inner()
        .recruiters
        .into_iter()
        .filter(|r| r.batch.starts_with(&prefix) && !keep.contains(&r.id))
        .map(|r| r.id)
        .collect();
    for &id in &ids {
        client
            .recruit()
            .delete_recruiter(RecruiterRef { id })
            .await
            .with_context(|| format!("cannot delete recruiter {id}"))?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> Recruit {
        serde_yaml::from_str(yaml).expect("recruit keys")
    }

    #[test]
    fn a_step_s_keys_win_one_by_one_and_its_flavor_choice_as_a_whole() {
        let top = keys("{provider: local, flavor: small, max_workers: 4, concurrency: 2}");
        let own = keys("{min_cpu: 2, max_workers: 1}");
        let merged = merge(Some(&top), Some(&own)).expect("merged");
        let rule = rule("wf.step", &merged).expect("a rule");
        assert_eq!(
            (rule.provider.as_str(), rule.flavor.as_str(), rule.min_cpu),
            ("local", "", 2)
        );
        assert_eq!((rule.max_workers, rule.concurrency, rule.rounds), (1, 2, 1));
        assert_eq!(rule.idle_timeout_s, 300);
        let inherited = merge(Some(&top), None).expect("the workflow's");
        assert_eq!(rule_of(&inherited).flavor, "small");
        assert!(merge(None, None).is_none());
    }

    fn rule_of(r: &Recruit) -> CreateRecruiterRequest {
        rule("wf.step", r).expect("a rule")
    }

    #[test]
    fn what_a_rule_cannot_do_without_is_named() {
        for (yaml, wanted) in [
            ("{max_workers: 1}", "provider is needed"),
            ("{provider: local}", "max_workers is needed"),
            (
                "{provider: local, max_workers: 0}",
                "max_workers must be at least 1",
            ),
            (
                "{provider: local, max_workers: 1, flavor: a, min_cpu: 2}",
                "not both",
            ),
            (
                "{provider: local, max_workers: 1, concurrency: 0}",
                "concurrency must be at least 1",
            ),
            (
                "{provider: local, max_workers: 1, idle_timeout: soon}",
                "invalid idle_timeout \"soon\"",
            ),
        ] {
            let err = rule("b", &keys(yaml)).expect_err(yaml);
            assert!(err.contains(wanted), "{yaml}: {err}");
        }
    }

    #[test]
    fn describe_says_what_is_recruited() {
        let r = rule_of(&keys(
            "{provider: local, min_cpu: 2, min_mem: 4, max_workers: 3, idle_timeout: 90s}",
        ));
        assert_eq!(
            describe(&r),
            "recruits on local, the cheapest flavor with cpu >= 2, memory >= 4 GiB, at most 3 \
             machine(s), concurrency 1, rounds 1, prefetch auto, idle timeout 1m 30s"
        );
    }
}
