//! Recruitment operations for the edges: recruiter rules, flavors, machines recruited by
//! hand, provisioning jobs. The loop that acts on the rules is `service::recruiter`.

use std::collections::HashMap;
use std::time::Duration;

use super::{Ops, OpsError};
use crate::core::ids::RecruiterId;
use crate::core::recruit::{Flavor, FlavorChoice, Job, MachineRecord, Rule, Usage, matching};
use crate::core::task::validate_batch_name;
use crate::core::worker::check_settings;
use crate::persistence::recruit as store;
use crate::service::recruiter::Request;

/// Most machines one `worker deploy` asks for.
pub const MAX_DEPLOY: u32 = 100;
/// Idle timeout of a rule that gives none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A rule as asked for.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub batch: String,
    pub provider: String,
    pub region: Option<String>,
    pub flavor: FlavorChoice,
    pub max_workers: u32,
    pub rounds: u32,
    pub concurrency: u32,
    pub prefetch: Option<u32>,
    pub idle_timeout: Duration,
}

/// A rule with its machines that exist now.
#[derive(Debug, Clone)]
pub struct RuleView {
    pub rule: Rule,
    pub machines: u32,
}

/// Machines to recruit by hand.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub provider: String,
    pub flavor: String,
    pub region: Option<String>,
    pub count: u32,
    pub batch: Option<String>,
    /// `None`: the flavor's cpus.
    pub concurrency: Option<u32>,
    pub prefetch: Option<u32>,
}

impl Ops {
    fn checked_region(&self, provider: &str, region: Option<&str>) -> Result<String, OpsError> {
        let config =
            self.recruiter()?
                .config(provider)
                .ok_or_else(|| OpsError::UnknownProvider {
                    name: provider.to_owned(),
                    known: self
                        .recruiter()
                        .map(|r| r.provider_names())
                        .unwrap_or_default(),
                })?;
        match region {
            None | Some("") => Ok(config.regions[0].clone()),
            Some(r) if config.regions.iter().any(|known| known == r) => Ok(r.to_owned()),
            Some(r) => Err(OpsError::UnknownRegion {
                provider: provider.to_owned(),
                region: r.to_owned(),
                known: config.regions.clone(),
            }),
        }
    }

    /// Adds a rule, after checking it names a configured provider, one of its regions and,
    /// when the provider can be reached, a flavor it offers.
    pub async fn create_recruiter(&self, new: NewRule) -> Result<RuleView, OpsError> {
        if new.batch.trim().is_empty() {
            return Err(OpsError::EmptyBatchName);
        }
        let batch = validate_batch_name(0, &new.batch)?;
        check_settings(Some(new.concurrency), new.prefetch)?;
        if new.max_workers == 0 {
            return Err(OpsError::BadRule(
                "max workers must be at least 1".to_owned(),
            ));
        }
        if new.rounds == 0 {
            return Err(OpsError::BadRule("rounds must be at least 1".to_owned()));
        }
        if let FlavorChoice::Named(name) = &new.flavor
            && name.trim().is_empty()
        {
            return Err(OpsError::BadRule(
                "give a flavor, or minimums (--min-cpu, --min-mem ...)".to_owned(),
            ));
        }
        let region = match new.region.as_deref() {
            None | Some("") => None,
            r => Some(self.checked_region(&new.provider, r)?),
        };
        self.checked_region(&new.provider, None)?;
        // A flavor that does not exist is refused now, not at the first pass; a provider
        // that cannot be reached now is not a reason to refuse the rule.
        match self.recruiter()?.flavors(&new.provider).await {
            Ok(flavors) if matching(&new.flavor, &flavors).is_empty() => {
                return Err(OpsError::NoFlavor {
                    provider: new.provider.clone(),
                    wanted: new.flavor.to_string(),
                    offered: flavors.iter().map(|f| f.name.clone()).collect(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(provider = %new.provider, error = %e, "adding a rule whose flavor cannot be checked now")
            }
        }
        let rule = store::insert_rule(
            &self.store,
            Rule {
                id: RecruiterId(0),
                batch,
                provider: new.provider,
                region,
                flavor: new.flavor,
                max_workers: new.max_workers,
                rounds: new.rounds,
                concurrency: new.concurrency,
                prefetch: new.prefetch,
                idle_timeout: new.idle_timeout,
                paused: false,
                retry_at: None,
                paused_reason: None,
                failures: 0,
            },
        )
        .await?;
        self.recruiter()?.nudge();
        Ok(RuleView { rule, machines: 0 })
    }

    pub async fn recruiters(&self) -> Result<Vec<RuleView>, OpsError> {
        let rules = store::rules(&self.store.db).await?;
        let mut counts: HashMap<RecruiterId, u32> = HashMap::new();
        for m in store::live_machines(&self.store.db).await? {
            if let Some(rule) = m.rule {
                *counts.entry(rule).or_default() += 1;
            }
        }
        Ok(rules
            .into_iter()
            .map(|rule| RuleView {
                machines: counts.get(&rule.id).copied().unwrap_or(0),
                rule,
            })
            .collect())
    }

    pub async fn delete_recruiter(&self, id: RecruiterId) -> Result<(), OpsError> {
        store::delete_rule(&self.store, id).await?;
        Ok(())
    }

    pub async fn pause_recruiter(
        &self,
        id: RecruiterId,
        paused: bool,
    ) -> Result<RuleView, OpsError> {
        let rule = store::set_paused(&self.store, id, paused, None).await?;
        if let Ok(r) = self.recruiter() {
            r.nudge();
        }
        let machines = store::live_machines(&self.store.db)
            .await?
            .iter()
            .filter(|m| m.rule == Some(id))
            .count() as u32;
        Ok(RuleView { rule, machines })
    }

    /// Flavors of one provider (or all), cheapest first, with the minimums; and the
    /// providers that could not be reached.
    pub async fn flavors(
        &self,
        provider: Option<&str>,
        minimums: FlavorChoice,
    ) -> Result<(Vec<(String, Flavor)>, Vec<String>), OpsError> {
        let recruiter = self.recruiter()?;
        let names = match provider {
            Some(p) => {
                self.checked_region(p, None)?;
                vec![p.to_owned()]
            }
            None => recruiter.provider_names(),
        };
        let (mut found, mut errors) = (Vec::new(), Vec::new());
        for name in names {
            match recruiter.flavors(&name).await {
                Ok(flavors) => found.extend(
                    matching(&minimums, &flavors)
                        .into_iter()
                        .map(|f| (name.clone(), f.clone())),
                ),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Ok((found, errors))
    }

    /// Recruits machines by hand, within the provider's quota.
    pub async fn deploy_workers(&self, deploy: Deploy) -> Result<Vec<MachineRecord>, OpsError> {
        let region = self.checked_region(&deploy.provider, deploy.region.as_deref())?;
        if deploy.count == 0 || deploy.count > MAX_DEPLOY {
            return Err(OpsError::BadRule(format!(
                "count {} is out of range: 1 to {MAX_DEPLOY}",
                deploy.count
            )));
        }
        let batch = match deploy.batch.as_deref() {
            None | Some("") => None,
            Some(b) => Some(validate_batch_name(0, b)?),
        };
        check_settings(deploy.concurrency, deploy.prefetch)?;
        let recruiter = self.recruiter()?.clone();
        let flavors = recruiter.flavors(&deploy.provider).await?;
        let flavor = flavors
            .iter()
            .find(|f| f.name == deploy.flavor)
            .cloned()
            .ok_or_else(|| OpsError::NoFlavor {
                provider: deploy.provider.clone(),
                wanted: deploy.flavor.clone(),
                offered: flavors.iter().map(|f| f.name.clone()).collect(),
            })?;
        let config = recruiter.config(&deploy.provider).expect("checked above");
        let mut used = Usage::default();
        for m in store::live_machines(&self.store.db).await? {
            if m.provider == deploy.provider && m.region == region {
                used.instances += 1;
                used.cores += m.cpu;
                used.memory_mib += m.memory_mib;
            }
        }
        for _ in 0..deploy.count {
            if !config.quota.admits(&used, flavor.cpu, flavor.memory_mib) {
                return Err(OpsError::OverQuota {
                    provider: deploy.provider.clone(),
                    region: region.clone(),
                    count: deploy.count,
                });
            }
            used.instances += 1;
            used.cores += flavor.cpu;
            used.memory_mib += flavor.memory_mib;
        }
        let mut made = Vec::new();
        for _ in 0..deploy.count {
            made.push(
                self.create_machine(Request {
                    provider: deploy.provider.clone(),
                    region: region.clone(),
                    flavor: flavor.clone(),
                    rule: None,
                    batch: batch.clone(),
                    concurrency: deploy.concurrency.unwrap_or(flavor.cpu).max(1),
                    prefetch: deploy.prefetch,
                    idle_timeout: None,
                })
                .await?,
            );
        }
        Ok(made)
    }

    /// The configured providers with their regions, first region first (none when
    /// scitqd recruits nothing): what a form offers to choose from.
    pub fn providers(&self) -> Vec<(String, Vec<String>)> {
        let Ok(recruiter) = self.recruiter() else {
            return Vec::new();
        };
        recruiter
            .provider_names()
            .into_iter()
            .filter_map(|name| {
                let regions = recruiter.config(&name)?.regions.clone();
                Some((name, regions))
            })
            .collect()
    }

    pub async fn jobs(&self, limit: u64) -> Result<Vec<Job>, OpsError> {
        Ok(store::jobs(&self.store.db, false, limit).await?)
    }

    /// Recruited machines that exist now, by name (a worker's name).
    pub async fn live_machines(&self) -> Result<HashMap<String, MachineRecord>, OpsError> {
        Ok(store::live_machines(&self.store.db)
            .await?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect())
    }
}
