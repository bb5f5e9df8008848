//! Leases of disconnected workers. A worker whose stream broke keeps its executions for its
//! lease; the agent, cut off as long, kills what it runs (it counts from the last message it
//! received, which is never later than when the server saw the stream break). The server
//! re-queues only [`FENCE_MARGIN`] after the lease, so that a task never runs twice at once.
//!
//! Time is passed in, never read: the service loop owns the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ids::WorkerId;

/// Time the server leaves an agent, past the lease, to kill its tasks.
pub const FENCE_MARGIN: Duration = Duration::from_secs(5);

/// After a failed expiry (the database refused it), the next attempt.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Leases {
    lease: Duration,
    /// Disconnected workers and when their executions may be re-queued.
    deadlines: HashMap<WorkerId, Instant>,
}

impl Leases {
    pub fn new(lease: Duration) -> Self {
        Leases {
            lease,
            deadlines: HashMap::new(),
        }
    }

    /// When the executions of a worker disconnected at `at` may be re-queued.
    pub fn requeue_at(&self, at: Instant) -> Instant {
        at + self.lease + FENCE_MARGIN
    }

    /// The worker's stream broke (or scitqd started without it) at `at`.
    pub fn disconnected(&mut self, worker: WorkerId, at: Instant) {
        let deadline = self.requeue_at(at);
        self.deadlines.insert(worker, deadline);
    }

    /// The worker is back: its lease no longer runs.
    pub fn connected(&mut self, worker: WorkerId) {
        self.deadlines.remove(&worker);
    }

    /// Whether the worker is disconnected and its lease still runs.
    pub fn is_away(&self, worker: WorkerId) -> bool {
        self.deadlines.contains_key(&worker)
    }

    /// The earliest deadline, if any worker is away.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Workers whose lease ran out by `now`; they are forgotten here (the caller ends their
    /// executions, or calls [`Leases::retry`]).
    pub fn due(&mut self, now: Instant) -> Vec<WorkerId> {
        let mut due: Vec<WorkerId> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(worker, _)| *worker)
            .collect();
        due.sort();
        for worker in &due {
            self.deadlines.remove(worker);
        }
        due
    }

    /// Ending a worker's executions failed: try again a little later.
    pub fn retry(&mut self, worker: WorkerId, now: Instant) {
        self.deadlines.insert(worker, now + RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_are_requeued_a_margin_after_the_lease() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(10);
        let mut leases = Leases::new(lease);
        leases.disconnected(WorkerId(1), t0);
        assert_eq!(leases.next(), Some(t0 + lease + FENCE_MARGIN));
        // At the lease itself the agent kills its tasks; the server has not moved yet.
        assert!(leases.due(t0 + lease).is_empty());
        assert_eq!(leases.due(t0 + lease + FENCE_MARGIN), vec![WorkerId(1)]);
        assert_eq!(leases.next(), None);
    }

    #[test]
    fn a_worker_that_comes_back_keeps_its_executions() {
        let t0 = Instant::now();
        let mut leases = Leases::new(Duration::from_secs(1));
        leases.disconnected(WorkerId(1), t0);
        leases.disconnected(WorkerId(2), t0);
        leases.connected(WorkerId(1));
        assert_eq!(
            leases.due(t0 + Duration::from_secs(3600)),
            vec![WorkerId(2)]
        );
    }

    #[test]
    fn a_failed_expiry_is_retried() {
        let t0 = Instant::now();
        let mut leases = Leases::new(Duration::from_secs(1));
        leases.disconnected(WorkerId(3), t0);
        let late = t0 + Duration::from_secs(60);
        assert_eq!(leases.due(late), vec![WorkerId(3)]);
        leases.retry(WorkerId(3), late);
        assert!(leases.due(late).is_empty());
        assert_eq!(leases.due(late + RETRY), vec![WorkerId(3)]);
    }
}
