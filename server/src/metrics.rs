//! What scitqd counts for Prometheus (`GET /metrics`, see `http/metrics.rs`).
//!
//! Counters and histograms live in one process-wide [`Metrics`] ([`metrics()`]): the hot
//! paths (dispatch, agent updates, the store writer) bump atomics and never wait for a
//! scrape. Values that are a state rather than a count of events (tasks by batch and
//! status, connected workers) are read at scrape time from what scitqd already keeps
//! (`persistence::counts`, the scheduler), not counted twice.
//!
//! Other components register their own series once at start with [`Metrics::register`]
//! (the recruiter's counters go there), and they are scraped with the rest.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::core::state::{ExecState, Failure};

/// The labels of an ended execution.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ended {
    /// succeeded, failed or canceled.
    pub outcome: &'static str,
    /// The failure class (`none` for a success).
    pub failure: &'static str,
}

fn ended(state: ExecState, failure: Failure) -> Ended {
    Ended {
        outcome: state.as_str(),
        failure: match failure {
            Failure::None => "none",
            other => other.as_str(),
        },
    }
}

/// The labels of a task count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub batch: String,
    pub status: String,
}

/// scitqd's series; see [`metrics()`].
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Executions created by dispatch (a task assigned to a worker).
    pub executions_started: Counter,
    ended: Family<Ended, Counter>,
    /// From the scheduler learning of work (a new task, a freed slot, a connected worker)
    /// to the assignment it made being sent to the agent, commit included.
    pub dispatch_latency: Histogram,
    /// Duration of one store transaction (a group of writes), commit included.
    pub commit_seconds: Histogram,
    /// Writes per store transaction.
    pub commit_group: Histogram,
    /// Agent sessions open now.
    pub agent_sessions: Gauge,
    /// Agent sessions let in since start.
    pub sessions_opened: Counter,
    /// Task output bytes written to the store (replayed bytes already stored not counted).
    pub output_bytes: Counter,
}

/// The process-wide series.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("scitq");
        let executions_started = Counter::default();
        registry.register(
            "executions_started",
            "Executions created: a task assigned to a worker",
            executions_started.clone(),
        );
        let ended = Family::<Ended, Counter>::default();
        registry.register(
            "executions_finished",
            "Executions that ended, by outcome and failure class (a success an agent replays \
             after a reconnection may count twice)",
            ended.clone(),
        );
        // 1 ms to about 33 s.
        let dispatch_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "dispatch_latency_seconds",
            "From the scheduler learning of work (new task, freed slot) to the assignment sent",
            dispatch_latency.clone(),
        );
        // 0.1 ms to about 3 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Duration of one store transaction (a group of writes), commit included",
            commit_seconds.clone(),
        );
        let commit_group = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_commit_group_size",
            "Writes grouped in one store transaction",
            commit_group.clone(),
        );
        let agent_sessions = Gauge::default();
        registry.register(
            "agent_sessions",
            "Agent sessions open now",
            agent_sessions.clone(),
        );
        let sessions_opened = Counter::default();
        registry.register(
            "agent_sessions_opened",
            "Agent sessions let in since scitqd started",
            sessions_opened.clone(),
        );
        let output_bytes = Counter::default();
        registry.register(
            "output_bytes_stored",
            "Task output bytes written to the store",
            output_bytes.clone(),
        );
        // Every outcome and class from the start: a rate over a series that appears late
        // misses its first increase.
        for state in ExecState::ALL.into_iter().filter(|s| s.is_final()) {
            for failure in Failure::ALL {
                let _ = ended.get_or_create(&self::ended(state, failure));
            }
        }
        Metrics {
            registry: Mutex::new(registry),
            executions_started,
            ended,
            dispatch_latency,
            commit_seconds,
            commit_group,
            agent_sessions,
            sessions_opened,
            output_bytes,
        }
    }

    /// An execution ended in `state` (succeeded, failed, canceled) with `failure`.
    pub fn execution_ended(&self, state: ExecState, failure: Failure) {
        self.ended.get_or_create(&ended(state, failure)).inc();
    }

    /// Adds a series of another component (the recruiter's counters), named
    /// `scitq_<name>`; call it once, at start.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// The OpenMetrics text of every series, then of `snapshot` (the state series read at
    /// scrape time), then the end marker.
    pub fn encode(&self, snapshot: &Registry) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::with_capacity(8 << 10);
        encode_registry(&mut text, &self.lock())?;
        encode_registry(&mut text, snapshot)?;
        encode_eof(&mut text)?;
        Ok(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves nothing half-done worth refusing a scrape for.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state series of one scrape: tasks by batch and status, connected workers.
pub fn snapshot(tasks: Vec<(String, String, i64)>, workers_connected: usize) -> Registry {
    let mut registry = Registry::with_prefix("scitq");
    let family = Family::<TaskLabels, Gauge>::default();
    for (batch, status, count) in tasks {
        family
            .get_or_create(&TaskLabels { batch, status })
            .set(count);
    }
    registry.register("tasks", "Tasks by batch and status", family);
    let workers = Gauge::<i64>::default();
    workers.set(workers_connected as i64);
    registry.register(
        "workers_connected",
        "Workers with a live agent session",
        workers,
    );
    registry
}
