//! Agent shutdown: stop taking tasks, terminate running ones, close the stream.
//!
//! Running tasks get SIGTERM, then SIGKILL after [`TERM_GRACE`]; they are marked abandoned on
//! disk, not reported, so the server fails them as lost (and re-queues them within their retry
//! budget) at the agent's next `Hello` or when its lease expires. Finished executions whose
//! result was not acknowledged stay on disk and are reported by the next agent.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Agent, Conn, Phase};
use crate::session::SessionEvent;

/// How long tasks get after SIGTERM before SIGKILL, then before the agent gives up on them.
const TERM_GRACE: Duration = Duration::from_secs(10);
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the server gets to see the end of the stream.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Agent {
    pub(super) fn begin_shutdown(&mut self) {
        tracing::info!(
            running = self.running,
            queued = self.queue.len(),
            "shutting down: no new tasks, running ones are terminated"
        );
        self.shutdown_deadline = Some((Instant::now() + TERM_GRACE, false));
        if matches!(self.conn, Conn::Down { .. }) {
            self.conn = Conn::Closed;
        }
        for id in std::mem::take(&mut self.queue) {
            self.execs.remove(&id);
            self.outbox.forget(id);
        }
        let mut detached = Vec::new();
        for (id, exec) in &mut self.execs {
            if !matches!(exec.phase, Phase::Running) {
                continue;
            }
            if exec.container {
                // Containers outlive the agent: the next one re-attaches to them.
                if let Some(abort) = exec.abort.take() {
                    abort.abort();
                }
                detached.push(*id);
                continue;
            }
            exec.abandoned = true;
            exec.signal(*id, Signal::SIGTERM);
            exec.signal(*id, Signal::SIGCONT);
        }
        for id in detached {
            tracing::info!(execution_id = %id, "leaving its container running for the next agent");
            self.execs.remove(&id);
            self.outbox.forget(id);
            self.running = self.running.saturating_sub(1);
        }
    }

    /// Past a shutdown deadline: SIGKILL what still runs, or give up. False to stop now.
    pub(super) fn escalate_shutdown(&mut self) -> bool {
        match self.shutdown_deadline {
            Some((_, false)) => {
                tracing::warn!(
                    running = self.running,
                    "tasks still running after SIGTERM: killing them"
                );
                for (id, exec) in &mut self.execs {
                    if matches!(exec.phase, Phase::Running | Phase::Canceled) {
                        exec.signal(*id, Signal::SIGKILL);
                    }
                }
                self.shutdown_deadline = Some((Instant::now() + KILL_GRACE, true));
                true
            }
            _ => {
                tracing::warn!(running = self.running, "giving up on tasks that do not end");
                false
            }
        }
    }

    /// Ends the stream cleanly: the server sees the end of the request stream.
    pub(super) async fn close(&mut self) {
        let session = self.session;
        let was_connected = !matches!(self.conn, Conn::Down { .. } | Conn::Closed);
        // Dropping the link ends the request stream once what is queued has gone.
        let task = match std::mem::replace(&mut self.conn, Conn::Closed) {
            Conn::Up { _task, .. } | Conn::Connecting { _task, .. } => Some(_task),
            _ => None,
        };
        if was_connected {
            let wait_closed = async {
                while let Some(event) = self.session_rx.recv().await {
                    if matches!(event, SessionEvent::Closed { session: s, .. } if s == session) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, wait_closed).await;
        }
        drop(task);
        self.supervisor.flush_done().await;
        // Work dirs left for a starting execution are recycled now: none will start.
        self.chore_recycle_released();
        while self.chores.join_next().await.is_some() {}
    }
}
