//! The recruiter's series on `/metrics`: cloud calls by provider, operation and outcome
//! (every call a [`Counted`] provider makes), machines created and destroyed, and how long a
//! pass takes. Registered once, with the first recruiter.

use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use scitq_provisioner::{Flavor, Instance, InstanceId, InstanceSpec, Provider, ProviderError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    pub provider: String,
    pub operation: &'static str,
    /// `ok`, or the error's class.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Machines {
    pub provider: String,
    /// `created`, or why it was destroyed.
    pub event: &'static str,
}

pub struct RecruitMetrics {
    pub calls: Family<Call, Counter>,
    pub machines: Family<Machines, Counter>,
    /// One recruiter pass, from reading the records to the last action started.
    pub pass_seconds: Histogram,
}

/// The recruiter's series, registered with scitqd's at first use.
pub fn recruit_metrics() -> &'static RecruitMetrics {
    static METRICS: LazyLock<RecruitMetrics> = LazyLock::new(|| {
        let m = RecruitMetrics {
            calls: Family::default(),
            machines: Family::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        let all = crate::metrics::metrics();
        all.register(
            "provider_calls",
            "Cloud provider calls by provider, operation and outcome (ok or error class)",
            m.calls.clone(),
        );
        all.register(
            "recruited_machines",
            "Machines created, and destroyed by reason, by provider",
            m.machines.clone(),
        );
        all.register(
            "recruiter_pass_seconds",
            "Duration of one recruiter pass",
            m.pass_seconds.clone(),
        );
        m
    });
    &METRICS
}

/// A provider whose every call is counted.
pub struct Counted(pub Arc<dyn Provider>);

impl Counted {
    fn count<T>(&self, operation: &'static str, result: &Result<T, ProviderError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.class().as_str(),
        };
        recruit_metrics()
            .calls
            .get_or_create(&Call {
                provider: self.0.name().to_owned(),
                operation,
                outcome,
            })
            .inc();
    }
}

#[async_trait::async_trait]
impl Provider for Counted {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn flavors(&self, region: Option<&str>) -> Result<Vec<Flavor>, ProviderError> {
        let r = self.0.flavors(region).await;
        self.count("flavors", &r);
        r
    }

    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        let r = self.0.regions().await;
        self.count("regions", &r);
        r
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<Instance, ProviderError> {
        let r = self.0.create(spec).await;
        self.count("create", &r);
        r
    }

    async fn get(&self, id: &InstanceId) -> Result<Instance, ProviderError> {
        let r = self.0.get(id).await;
        self.count("get", &r);
        r
    }

    async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let r = self.0.delete(id).await;
        self.count("delete", &r);
        r
    }

    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let r = self.0.list().await;
        self.count("list", &r);
        r
    }
}
