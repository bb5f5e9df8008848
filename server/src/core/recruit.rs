//! Recruitment decisions: given the recruiter rules, the machines scitqd recruited, the work
//! waiting and the quotas, which machines to create, re-use and destroy. Plain data in, a
//! list of [`Action`]s out; the recruiter loop (`service::recruiter`) gathers the input,
//! writes each action down as a job, then makes the cloud calls.
//!
//! Time is passed in (milliseconds since the epoch), never read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::ids::{MachineId, RecruiterId};

/// Consecutive failed deployments (a create the cloud refused, a machine that never
/// connected) after which a rule pauses itself.
pub const MAX_FAILURES: u32 = 3;
/// First wait after a failed deployment; doubled at each further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest wait between two deployments of a failing rule.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A machine size, as a provider offers it (the provisioner's own type: plain data).
pub use scitq_provisioner::Flavor;

/// Which flavor a rule recruits.
#[derive(Debug, Clone, PartialEq)]
pub enum FlavorChoice {
    /// This flavor, by name.
    Named(String),
    /// The cheapest flavor with at least these.
    Minimums {
        cpu: u32,
        memory_gib: u32,
        disk_gib: u32,
        gpu: u32,
    },
}

impl FlavorChoice {
    pub fn matches(&self, flavor: &Flavor) -> bool {
        match self {
            FlavorChoice::Named(name) => &flavor.name == name,
            FlavorChoice::Minimums {
                cpu,
                memory_gib,
                disk_gib,
                gpu,
            } => {
                flavor.cpu >= *cpu
                    && flavor.memory_mib >= u64::from(*memory_gib) * 1024
                    && flavor.disk_gib >= u64::from(*disk_gib)
                    && flavor.gpu >= *gpu
            }
        }
    }
}

impl std::fmt::Display for FlavorChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlavorChoice::Named(name) => f.write_str(name),
            FlavorChoice::Minimums {
                cpu,
                memory_gib,
                disk_gib,
                gpu,
            } => {
                write!(f, "cpu>={cpu} mem>={memory_gib}GiB")?;
                if *disk_gib > 0 {
                    write!(f, " disk>={disk_gib}GiB")?;
                }
                if *gpu > 0 {
                    write!(f, " gpu>={gpu}")?;
                }
                Ok(())
            }
        }
    }
}

/// The flavors matching `choice`, cheapest first: by price (unpriced last), then fewest
/// cpus, least memory, name.
pub fn matching<'a>(choice: &FlavorChoice, flavors: &'a [Flavor]) -> Vec<&'a Flavor> {
    let mut found: Vec<&Flavor> = flavors.iter().filter(|f| choice.matches(f)).collect();
    found.sort_by(|a, b| {
        let price = |f: &Flavor| f.price_per_hour.unwrap_or(f64::INFINITY);
        price(a)
            .total_cmp(&price(b))
            .then(a.cpu.cmp(&b.cpu))
            .then(a.memory_mib.cmp(&b.memory_mib))
            .then(a.name.cmp(&b.name))
    });
    found
}

/// A recruiter rule: recruit for `batch` on `provider`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: RecruiterId,
    pub batch: String,
    pub provider: String,
    /// `None`: the provider's first region.
    pub region: Option<String>,
    pub flavor: FlavorChoice,
    pub max_workers: u32,
    /// Tasks per worker slot that make another worker worth renting.
    pub rounds: u32,
    pub concurrency: u32,
    /// `None`: the agent adapts its prefetch.
    pub prefetch: Option<u32>,
    pub idle_timeout: Duration,
    pub paused: bool,
    /// No deployment before this time (a backoff after failures).
    pub retry_at: Option<i64>,
    /// Why it paused itself (`None`: paused by an operator, or not paused).
    pub paused_reason: Option<String>,
    /// Deployments that failed in a row.
    pub failures: u32,
}

impl Rule {
    /// Workers worth having for `waiting` tasks.
    pub fn wanted(&self, waiting: u64) -> u32 {
        let per_worker = u64::from(self.concurrency.max(1)) * u64::from(self.rounds.max(1));
        let wanted = waiting.div_ceil(per_worker);
        u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .min(self.max_workers)
    }
}

/// Where a recruited machine is in its life, as the recruiter knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    /// Its create call is being made (or was interrupted: see the loop's recovery).
    Creating,
    /// Created at the provider; its agent has not connected yet.
    Deploying,
    /// Its agent connected. `active`: executions it holds now (0 if it is offline);
    /// `idle_since`: since when it holds none; `offline_since`: since when its agent is gone.
    Running {
        active: u32,
        idle_since: Option<i64>,
        offline_since: Option<i64>,
    },
    /// Its delete call is being made.
    Destroying,
}

/// A machine scitqd recruited and has not destroyed.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub id: MachineId,
    pub provider: String,
    pub region: String,
    pub flavor: String,
    pub cpu: u32,
    pub memory_mib: u64,
    /// The rule it serves; `None`: recruited by hand (`worker deploy`).
    pub rule: Option<RecruiterId>,
    /// The batch its worker takes tasks of.
    pub batch: Option<String>,
    /// Destroyed after this long idle; `None`: never by the recruiter.
    pub idle_timeout: Option<Duration>,
    pub state: MachineState,
    pub created_at: i64,
    /// A job (create, destroy) is being carried out for it: no other action.
    pub busy: bool,
}

/// Limits on what one provider's region may hold at once; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub instances: Option<u32>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
}

impl Quota {
    /// The tighter of two quotas, limit by limit.
    pub fn min(self, other: Quota) -> Quota {
        fn tighter<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Quota {
            instances: tighter(self.instances, other.instances),
            cores: tighter(self.cores, other.cores),
            memory_mib: tighter(self.memory_mib, other.memory_mib),
        }
    }

    /// Whether `usage` plus one more machine of `cpu` and `memory_mib` fits.
    pub fn admits(&self, usage: &Usage, cpu: u32, memory_mib: u64) -> bool {
        self.instances.is_none_or(|max| usage.instances < max)
            && self
                .cores
                .is_none_or(|max| u64::from(usage.cores) + u64::from(cpu) <= u64::from(max))
            && self
                .memory_mib
                .is_none_or(|max| usage.memory_mib + memory_mib <= max)
    }

    /// Whether `usage` is within the quota.
    pub fn holds(&self, usage: &Usage) -> bool {
        self.instances.is_none_or(|max| usage.instances <= max)
            && self.cores.is_none_or(|max| usage.cores <= max)
            && self.memory_mib.is_none_or(|max| usage.memory_mib <= max)
    }
}

/// What a provider's region holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: u32,
    pub cores: u32,
    pub memory_mib: u64,
}

impl Usage {
    fn add(&mut self, cpu: u32, memory_mib: u64) {
        self.instances += 1;
        self.cores += cpu;
        self.memory_mib += memory_mib;
    }
}

/// What the recruiter knows of a provider.
#[derive(Debug, Clone, Default)]
pub struct ProviderInfo {
    /// Configured regions, the default first.
    pub regions: Vec<String>,
    /// Its flavors; `None`: not known (the provider cannot be reached): nothing is created
    /// on it this pass.
    pub flavors: Option<Vec<Flavor>>,
    /// Configured quota, per region.
    pub quota: Quota,
    /// Quotas learned from the provider's quota errors, by region.
    pub learned: BTreeMap<String, Quota>,
    /// How long a machine may take to connect before it is destroyed.
    pub deploy_timeout: Duration,
}

impl ProviderInfo {
    pub fn quota(&self, region: &str) -> Quota {
        match self.learned.get(region) {
            Some(learned) => self.quota.min(*learned),
            None => self.quota,
        }
    }
}

/// Everything a pass decides on.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub now: i64,
    pub rules: Vec<Rule>,
    pub machines: Vec<Machine>,
    pub providers: BTreeMap<String, ProviderInfo>,
    /// Tasks waiting to be assigned (pending), by batch; batches not running (stopped)
    /// are left out.
    pub waiting: BTreeMap<String, u64>,
}

/// Why a machine is destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyReason {
    /// Not connected within the provider's deploy timeout.
    NeverConnected,
    /// Its agent has been gone for the deploy timeout.
    Lost,
    /// Idle past its idle timeout, with nothing waiting that it could run.
    Idle,
}

impl DestroyReason {
    pub fn describe(&self) -> &'static str {
        match self {
            DestroyReason::NeverConnected => "its agent did not connect within the deploy timeout",
            DestroyReason::Lost => "its agent has been gone for the deploy timeout",
            DestroyReason::Idle => "idle past its idle timeout with no task waiting for it",
        }
    }
}

/// What a pass decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a machine for `rule`.
    Create {
        rule: RecruiterId,
        provider: String,
        region: String,
        flavor: Flavor,
    },
    /// Move an idle machine to `rule` (its batch and settings).
    Reuse {
        machine: MachineId,
        rule: RecruiterId,
    },
    Destroy {
        machine: MachineId,
        reason: DestroyReason,
    },
    /// The rule cannot recruit as configured: pause it, saying why.
    Pause { rule: RecruiterId, reason: String },
}

fn usage_of<'a>(machines: impl Iterator<Item = &'a Machine>) -> BTreeMap<(String, String), Usage> {
    let mut usage: BTreeMap<(String, String), Usage> = BTreeMap::new();
    for m in machines {
        usage
            .entry((m.provider.clone(), m.region.clone()))
            .or_default()
            .add(m.cpu, m.memory_mib);
    }
    usage
}

/// Every machine counts against its region's quota until it is gone: one being destroyed
/// still bills.
pub fn usage(machines: &[Machine]) -> BTreeMap<(String, String), Usage> {
    usage_of(machines.iter())
}

/// One pass: what to create, re-use and destroy.
pub fn plan(input: &Input) -> Vec<Action> {
    let mut actions = Vec::new();
    // Machines an action of this pass already took.
    let mut taken: BTreeSet<MachineId> = BTreeSet::new();
    let rules: BTreeMap<RecruiterId, &Rule> = input.rules.iter().map(|r| (r.id, r)).collect();
    let waiting = |batch: Option<&str>| batch.map_or(0, |b| *input.waiting.get(b).unwrap_or(&0));

    // Machines that never connected, or whose agent is gone for good.
    for m in input.machines.iter().filter(|m| !m.busy) {
        let timeout = input
            .providers
            .get(&m.provider)
            .map_or(Duration::from_secs(600), |p| p.deploy_timeout);
        let timeout = ms(timeout);
        let reason = match m.state {
            MachineState::Creating | MachineState::Deploying
                if input.now - m.created_at >= timeout =>
            {
                Some(DestroyReason::NeverConnected)
            }
            MachineState::Running {
                offline_since: Some(since),
                ..
            } if input.now - since >= timeout => Some(DestroyReason::Lost),
            _ => None,
        };
        if let Some(reason) = reason {
            taken.insert(m.id);
            actions.push(Action::Destroy {
                machine: m.id,
                reason,
            });
        }
    }

    let mut usage = usage(&input.machines);
    for rule in input.rules.iter().filter(|r| !r.paused) {
        let wanted = rule.wanted(waiting(Some(&rule.batch)));
        let serving = input
            .machines
            .iter()
            .filter(|m| m.rule == Some(rule.id) && !taken.contains(&m.id))
            .filter(|m| !matches!(m.state, MachineState::Destroying))
            .count() as u32;
        let mut need = wanted.saturating_sub(serving);
        if need == 0 {
            continue;
        }
        let Some(provider) = input.providers.get(&rule.provider) else {
            actions.push(Action::Pause {
                rule: rule.id,
                reason: format!("provider {:?} is not configured", rule.provider),
            });
            continue;
        };
        let region = match &rule.region {
            Some(r) if provider.regions.contains(r) => r.clone(),
            Some(r) => {
                actions.push(Action::Pause {
                    rule: rule.id,
                    reason: format!(
                        "region {r:?} is not one of provider {:?}'s regions {:?}",
                        rule.provider, provider.regions
                    ),
                });
                continue;
            }
            None => match provider.regions.first() {
                Some(r) => r.clone(),
                None => continue,
            },
        };
        let flavors = provider.flavors.as_deref();

        // First the idle machines of the same kind whose own batch waits for nothing.
        for m in &input.machines {
            if need == 0 {
                break;
            }
            let idle = matches!(
                m.state,
                MachineState::Running {
                    active: 0,
                    offline_since: None,
                    ..
                }
            );
            let same_kind = m.provider == rule.provider
                && m.region == region
                && match flavors.and_then(|fs| fs.iter().find(|f| f.name == m.flavor)) {
                    Some(flavor) => rule.flavor.matches(flavor),
                    None => rule.flavor == FlavorChoice::Named(m.flavor.clone()),
                };
            let free = m.rule != Some(rule.id)
                && waiting(m.batch.as_deref()) == 0
                && m.rule.and_then(|r| rules.get(&r)).is_none_or(|r| {
                    // Its own rule does not want it either.
                    r.wanted(waiting(Some(&r.batch))) == 0
                });
            if idle && same_kind && free && !m.busy && !taken.contains(&m.id) {
                taken.insert(m.id);
                actions.push(Action::Reuse {
                    machine: m.id,
                    rule: rule.id,
                });
                need -= 1;
            }
        }
        if need == 0 || rule.retry_at.is_some_and(|t| input.now < t) {
            continue;
        }
        let Some(flavors) = flavors else { continue };
        let Some(flavor) = matching(&rule.flavor, flavors).into_iter().next() else {
            actions.push(Action::Pause {
                rule: rule.id,
                reason: format!(
                    "no flavor of provider {:?} matches {}",
                    rule.provider, rule.flavor
                ),
            });
            continue;
        };
        let quota = provider.quota(&region);
        let used = usage
            .entry((rule.provider.clone(), region.clone()))
            .or_default();
        while need > 0 && quota.admits(used, flavor.cpu, flavor.memory_mib) {
            used.add(flavor.cpu, flavor.memory_mib);
            actions.push(Action::Create {
                rule: rule.id,
                provider: rule.provider.clone(),
                region: region.clone(),
                flavor: flavor.clone(),
            });
            need -= 1;
        }
    }

    // Idle machines nothing waits for.
    for m in &input.machines {
        let MachineState::Running {
            active: 0,
            idle_since: Some(since),
            ..
        } = m.state
        else {
            continue;
        };
        let Some(timeout) = m.idle_timeout else {
            continue;
        };
        let wanted_by_rule = m
            .rule
            .and_then(|r| rules.get(&r))
            .is_some_and(|r| !r.paused && waiting(Some(&r.batch)) > 0);
        if m.busy
            || taken.contains(&m.id)
            || waiting(m.batch.as_deref()) > 0
            || wanted_by_rule
            || input.now - since < ms(timeout)
        {
            continue;
        }
        taken.insert(m.id);
        actions.push(Action::Destroy {
            machine: m.id,
            reason: DestroyReason::Idle,
        });
    }
    actions
}

/// After a failed deployment of a rule (its `failures`-th in a row): when it may try again,
/// or why it pauses.
pub fn after_failure(now: i64, failures: u32) -> Result<i64, String> {
    if failures >= MAX_FAILURES {
        return Err(format!(
            "{failures} deployments in a row failed; resume it once the cause is fixed"
        ));
    }
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    let wait = BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX);
    Ok(now + ms(wait))
}

/// A quota learned from a quota error: what the region held when the cloud refused one more.
pub fn learned_quota(held: Usage) -> Quota {
    Quota {
        instances: Some(held.instances),
        cores: None,
        memory_mib: None,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A machine's record as stored (kept after it is destroyed, for `job list` and the UI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Creating,
    Deploying,
    Running,
    Destroying,
    Destroyed,
    /// Its create failed; nothing of it is left at the provider.
    Failed,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Creating => "creating",
            RecordState::Deploying => "deploying",
            RecordState::Running => "running",
            RecordState::Destroying => "destroying",
            RecordState::Destroyed => "destroyed",
            RecordState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<RecordState> {
        Some(match text {
            "creating" => RecordState::Creating,
            "deploying" => RecordState::Deploying,
            "running" => RecordState::Running,
            "destroying" => RecordState::Destroying,
            "destroyed" => RecordState::Destroyed,
            "failed" => RecordState::Failed,
            _ => return None,
        })
    }

    /// Whether the machine may exist at the provider (and bill).
    pub fn is_live(self) -> bool {
        !matches!(self, RecordState::Destroyed | RecordState::Failed)
    }
}

/// A recruited machine's record.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRecord {
    pub id: MachineId,
    /// Its instance name, also its worker's name.
    pub name: String,
    pub provider: String,
    pub region: String,
    pub flavor: String,
    pub cpu: u32,
    pub memory_mib: u64,
    /// The provider's id for it, once its create returned.
    pub provider_id: Option<String>,
    pub rule: Option<RecruiterId>,
    pub batch: Option<String>,
    pub concurrency: u32,
    pub prefetch: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub state: RecordState,
    pub created_at: i64,
    pub connected_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Why it was destroyed, or why its create failed.
    pub reason: Option<String>,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Create,
    Destroy,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Written down; its cloud call is being made (or was, when scitqd stopped).
    Running,
    Succeeded,
    Failed,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $text:literal),* }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
            pub fn parse(text: &str) -> Option<$ty> {
                match text { $($text => Some($ty::$variant),)* _ => None }
            }
        }
    };
}
text_enum!(JobKind { Create = "create", Destroy = "destroy" });
text_enum!(JobStatus { Running = "running", Succeeded = "succeeded", Failed = "failed" });

/// A provisioning job: one create or destroy of a machine, with its attempts and log.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub machine: MachineId,
    pub machine_name: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub attempts: u32,
    /// The provider error's class (`auth`, `quota`, ...) when it failed.
    pub error_class: Option<String>,
    /// What happened, a line per step.
    pub log: String,
    pub created_at: i64,
    pub updated_at: i64,
}
