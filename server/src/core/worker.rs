//! A worker's settings, as the scheduler sees them.

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
