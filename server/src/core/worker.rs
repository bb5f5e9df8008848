//! A worker's settings, as the scheduler sees them, and their limits.

/// Most concurrent tasks of one worker (stored as a signed integer: more would wrap).
pub const MAX_CONCURRENCY: u32 = scitq_proto::MAX_CONCURRENCY;
/// Most prefetched tasks of one worker.
pub const MAX_PREFETCH: u32 = scitq_proto::MAX_PREFETCH;

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("concurrency 0 is not allowed: it must be at least 1")]
    ZeroConcurrency,
    #[error("concurrency {0} is too large: it must be at most {MAX_CONCURRENCY}")]
    ConcurrencyTooHigh(u32),
    #[error("prefetch {0} is too large: it must be at most {MAX_PREFETCH}")]
    PrefetchTooHigh(u32),
    #[error("prefetch {0} and an automatic prefetch cannot both be asked for: choose one")]
    PrefetchAndAuto(u32),
}

/// Range checks of worker settings, before anything is read or stored: a value past the
/// limit used to wrap to a negative number in the database.
pub fn check_settings(
    concurrency: Option<u32>,
    prefetch: Option<u32>,
) -> Result<(), SettingsError> {
    match concurrency {
        Some(0) => return Err(SettingsError::ZeroConcurrency),
        Some(c) if c > MAX_CONCURRENCY => return Err(SettingsError::ConcurrencyTooHigh(c)),
        _ => {}
    }
    match prefetch {
        Some(p) if p > MAX_PREFETCH => Err(SettingsError::PrefetchTooHigh(p)),
        _ => Ok(()),
    }
}

/// The settings a worker runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    pub concurrency: u32,
    pub prefetch: u32,
    /// Batch filter; None takes any batch.
    pub batch: Option<String>,
    /// Paused by an operator: no new task.
    pub paused: bool,
    /// Draining: no new task; the agent exits once it holds nothing.
    pub draining: bool,
    /// The agent adapts `prefetch` (the value in force now) and says each new value.
    pub prefetch_auto: bool,
}

impl WorkerSettings {
    /// Whether the worker takes tasks of `batch`.
    pub fn serves(&self, batch: &str) -> bool {
        self.batch.as_deref().is_none_or(|b| b == batch)
    }

    /// Whether it takes any new task at all.
    pub fn takes_work(&self) -> bool {
        !self.paused && !self.draining
    }
}
