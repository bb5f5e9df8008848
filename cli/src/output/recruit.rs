//! How recruiters, flavors, recruited machines and provisioning jobs print.

use scitq_proto::v1::{Flavor, Job, Machine, Recruiter};
use serde::Serialize;

use super::Listing;
use super::views::rfc3339;

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecruiterView {
    pub id: i64,
    pub batch: String,
    pub provider: String,
    pub region: Option<String>,
    pub flavor: Option<String>,
    pub min_cpu: u32,
    pub min_mem_gib: u32,
    pub min_disk_gib: u32,
    pub gpu: u32,
    pub max_workers: u32,
    pub rounds: u32,
    pub concurrency: u32,
    /// `None`: automatic.
    pub prefetch: Option<u32>,
    pub idle_timeout_s: u64,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub failures: u32,
    pub machines: u32,
}

fn some(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl Listing for Recruiter {
    type View = RecruiterView;
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "BATCH",
        "PROVIDER",
        "REGION",
        "FLAVOR",
        "MACHINES",
        "CONCURRENCY",
        "PREFETCH",
        "ROUNDS",
        "IDLE",
        "STATE",
    ];

    fn view(&self) -> RecruiterView {
        RecruiterView {
            id: self.id,
            batch: self.batch.clone(),
            provider: self.provider.clone(),
            region: some(&self.region),
            flavor: some(&self.flavor),
            min_cpu: self.min_cpu,
            min_mem_gib: self.min_mem_gib,
            min_disk_gib: self.min_disk_gib,
            gpu: self.gpu,
            max_workers: self.max_workers,
            rounds: self.rounds,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            idle_timeout_s: self.idle_timeout_s,
            paused: self.paused,
            paused_reason: some(&self.paused_reason),
            failures: self.failures,
            machines: self.machines,
        }
    }

    fn row(&self) -> Vec<String> {
        let flavor = if self.flavor.is_empty() {
            let mut f = format!("cpu>={} mem>={}GiB", self.min_cpu, self.min_mem_gib);
            if self.min_disk_gib > 0 {
                f.push_str(&format!(" disk>={}GiB", self.min_disk_gib));
            }
            if self.gpu > 0 {
                f.push_str(&format!(" gpu>={}", self.gpu));
            }
            f
        } else {
            self.flavor.clone()
        };
        let state = match (self.paused, self.paused_reason.as_str()) {
            (false, _) if self.failures > 0 => format!("active ({} failed)", self.failures),
            (false, _) => "active".to_owned(),
            (true, "") => "paused".to_owned(),
            (true, why) => format!("paused: {why}"),
        };
        vec![
            self.id.to_string(),
            self.batch.clone(),
            self.provider.clone(),
            dash(&self.region),
            flavor,
            format!("{}/{}", self.machines, self.max_workers),
            self.concurrency.to_string(),
            self.prefetch
                .map_or_else(|| "auto".to_owned(), |p| p.to_string()),
            self.rounds.to_string(),
            humantime::format_duration(std::time::Duration::from_secs(self.idle_timeout_s))
                .to_string(),
            state,
        ]
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlavorView {
    pub provider: String,
    pub name: String,
    pub cpu: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub gpu: u32,
    pub price_per_hour: Option<f64>,
}

impl Listing for Flavor {
    type View = FlavorView;
    const HEADERS: &'static [&'static str] = &[
        "PROVIDER", "FLAVOR", "CPU", "MEMORY", "DISK", "GPU", "PRICE/H",
    ];

    fn view(&self) -> FlavorView {
        FlavorView {
            provider: self.provider.clone(),
            name: self.name.clone(),
            cpu: self.cpu,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            gpu: self.gpu,
            price_per_hour: self.price_per_hour,
        }
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.provider.clone(),
            self.name.clone(),
            self.cpu.to_string(),
            format!("{:.1} GiB", self.memory_mib as f64 / 1024.0),
            format!("{} GiB", self.disk_gib),
            self.gpu.to_string(),
            self.price_per_hour
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.4}")),
        ]
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MachineView {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub region: String,
    pub flavor: String,
    pub state: String,
    pub recruiter_id: Option<i64>,
    pub batch: Option<String>,
    pub created_at: Option<String>,
    pub reason: Option<String>,
}

impl Listing for Machine {
    type View = MachineView;
    const HEADERS: &'static [&'static str] = &[
        "ID", "NAME", "PROVIDER", "FLAVOR", "REGION", "STATE", "BATCH",
    ];

    fn view(&self) -> MachineView {
        MachineView {
            id: self.id,
            name: self.name.clone(),
            provider: self.provider.clone(),
            region: self.region.clone(),
            flavor: self.flavor.clone(),
            state: self.state.clone(),
            recruiter_id: (self.recruiter_id != 0).then_some(self.recruiter_id),
            batch: some(&self.batch),
            created_at: self.created_at.as_ref().and_then(rfc3339),
            reason: some(&self.reason),
        }
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.name.clone(),
            self.provider.clone(),
            self.flavor.clone(),
            self.region.clone(),
            self.state.clone(),
            if self.batch.is_empty() {
                "(any)".to_owned()
            } else {
                self.batch.clone()
            },
        ]
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub id: i64,
    pub machine: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub error_class: Option<String>,
    pub log: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl Listing for Job {
    type View = JobView;
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "MACHINE",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "ERROR",
        "UPDATED",
        "LAST LOG LINE",
    ];

    fn view(&self) -> JobView {
        JobView {
            id: self.id,
            machine: self.machine.clone(),
            kind: self.kind.clone(),
            status: self.status.clone(),
            attempts: self.attempts,
            error_class: some(&self.error_class),
            log: self.log.clone(),
            created_at: self.created_at.as_ref().and_then(rfc3339),
            updated_at: self.updated_at.as_ref().and_then(rfc3339),
        }
    }

    fn row(&self) -> Vec<String> {
        let last = self.log.lines().last().unwrap_or_default();
        vec![
            self.id.to_string(),
            self.machine.clone(),
            self.kind.clone(),
            self.status.clone(),
            self.attempts.to_string(),
            dash(&self.error_class),
            self.updated_at
                .as_ref()
                .and_then(rfc3339)
                .unwrap_or_else(|| "-".to_owned()),
            super::truncate(last, 60),
        ]
    }
}
