//! The worker side of the lease (HTCondor's job leases): the server keeps this worker's
//! executions for its lease after it last heard from the agent, then hands them to another
//! worker. So an agent that has heard nothing from the server for the lease (counted from the
//! last message it received, acknowledgements of its heartbeats included) kills what it holds
//! first; and it keeps `WORK_DIR/lease` up to date, so the supervisor does the same when the
//! agent itself is dead.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Agent, Phase};
use crate::lease::Lease;
use crate::state::{Failure, FinalReport};

/// The agent's view of its lease.
#[derive(Debug, Default)]
pub(super) struct LeaseClock {
    lease: Option<Duration>,
    /// When this agent process last received a message from the server.
    heard: Option<(Instant, SystemTime)>,
    /// The deadline a previous agent left on disk, until this one hears from the server.
    inherited: Option<Instant>,
    /// The `heard` last written to disk, and when.
    written: Option<(Instant, Instant)>,
    /// When the lease file is due to be written.
    next_write: Option<Instant>,
    /// What the agent held was killed for the lease; until the server is heard again.
    fenced: bool,
}

impl LeaseClock {
    pub(super) fn new(on_disk: Option<Lease>) -> LeaseClock {
        LeaseClock {
            lease: on_disk.map(|l| l.lease()).filter(|l| !l.is_zero()),
            inherited: on_disk.map(|l| Instant::now() + l.remaining()),
            ..LeaseClock::default()
        }
    }

    /// A message came from the server.
    pub(super) fn heard(&mut self) {
        self.heard = Some((Instant::now(), SystemTime::now()));
        self.fenced = false;
        if self.next_write.is_none() && self.lease.is_some() {
            // At once after a silence: the deadline on disk may be near, or past.
            let due = match self.written {
                Some((_, at)) => at + self.refresh(),
                None => Instant::now(),
            };
            self.next_write = Some(due);
        }
    }

    /// The server told its lease: recorded at once.
    pub(super) fn set(&mut self, lease: Duration) {
        self.lease = Some(lease);
        self.next_write = Some(Instant::now());
    }

    pub(super) fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// How often the lease file is refreshed while the server talks: a quarter of the lease,
    /// so the deadline on disk is never much earlier than the true one.
    fn refresh(&self) -> Duration {
        self.lease.map_or(Duration::MAX, |l| l / 4)
    }

    /// When what the agent holds must be killed, if it holds anything.
    pub(super) fn fence_at(&self, holding: bool) -> Option<Instant> {
        if self.fenced || !holding {
            return None;
        }
        match (self.heard, self.lease) {
            (Some((at, _)), Some(lease)) => Some(at + lease),
            _ => self.inherited,
        }
    }

    pub(super) fn write_at(&self) -> Option<Instant> {
        self.next_write
    }

    /// The lease to write now, if the server was heard since the last write.
    fn due(&mut self) -> Option<Lease> {
        self.next_write = None;
        let ((at, wall), lease) = (self.heard?, self.lease?);
        if self.written.is_some_and(|(heard, _)| heard == at) {
            return None;
        }
        self.written = Some((at, Instant::now()));
        self.next_write = Some(Instant::now() + self.refresh());
        Some(Lease::from(wall, lease))
    }
}

impl Agent {
    /// Heartbeats at most a quarter of the lease apart: their acknowledgements are what keeps
    /// an idle agent's lease fresh.
    pub(super) fn set_heartbeat_interval(&mut self) {
        let every = match self.lease.lease() {
            Some(lease) => self
                .config
                .heartbeat
                .min(lease / 4)
                .max(Duration::from_millis(100)),
            None => self.config.heartbeat,
        };
        self.heartbeats.every.send_if_modified(|current| {
            let changed = *current != every;
            *current = every;
            changed
        });
    }

    /// Writes the lease file when the server was heard since the last write.
    ///
    /// On the loop's thread, not in `spawn_blocking`: a small local file a few times per
    /// lease, and once a silence ends it must be on disk before the tasks that come next
    /// start, or the supervisor would read the old deadline.
    pub(super) fn chore_write_lease(&mut self) {
        let Some(lease) = self.lease.due() else {
            return;
        };
        let work_dir = &self.config.work_dir;
        if let Err(e) = crate::lease::write(work_dir, lease) {
            tracing::warn!(
                "cannot write {}: {e}",
                work_dir.join(crate::lease::FILE).display()
            );
        }
    }

    /// Nothing from the server for the lease: it may have given what the agent holds to
    /// another worker. Running tasks are killed, queued ones fail unstarted.
    pub(super) fn fence(&mut self) {
        self.lease.fenced = true;
        let mut killed = 0;
        let mut dropped = Vec::new();
        for (id, exec) in &mut self.execs {
            match exec.phase {
                Phase::Running => {
                    exec.killed.store(true, Ordering::Release);
                    exec.signal(*id, Signal::SIGKILL);
                    killed += 1;
                }
                Phase::Queued(_) => dropped.push(*id),
                Phase::Finished(_) | Phase::Canceled => {}
            }
        }
        if killed == 0 && dropped.is_empty() {
            return;
        }
        tracing::warn!(
            killed,
            queued = dropped.len(),
            "nothing from the server for the lease: killing what this agent holds"
        );
        self.queue.retain(|id| !dropped.contains(id));
        for id in dropped {
            let Some(exec) = self.execs.get_mut(&id) else {
                continue;
            };
            if let Some(staging) = exec.staging.take() {
                staging.abort();
            }
            let report = FinalReport::failed(
                Failure::Killed,
                "not started: nothing from the server for the lease",
            );
            exec.phase = Phase::Finished(report.clone());
            self.outbox.record(report.to_update(id));
        }
    }
}
