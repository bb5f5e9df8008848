//! What the agent does with each server message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::sys::signal::Signal as Sig;
use scitq_proto::v1::{
    Assignment, ExecutionState, ServerMessage, Settings as WireSettings, Signal, Welcome,
    server_message,
};

use super::{Agent, Conn, Exec, Phase, Settings};
use crate::launch::Launch;
use crate::state::{ExecDir, ExecutionId, Failure, FinalReport, Phase as DiskPhase};

impl Agent {
    pub(super) fn on_server_message(&mut self, message: ServerMessage) {
        let Some(kind) = message.kind else {
            tracing::debug!("ignoring an empty server message");
            return;
        };
        match kind {
            server_message::Kind::Welcome(welcome) => self.on_welcome(welcome),
            server_message::Kind::Assignment(assignment) => self.on_assignment(&assignment),
            server_message::Kind::Settings(settings) => {
                self.apply_settings(settings);
                self.fill_slots();
            }
            server_message::Kind::Signal(signal) => {
                let id = ExecutionId(signal.execution_id);
                match Signal::try_from(signal.signal) {
                    Ok(signal) => self.on_signal(id, signal),
                    Err(_) => {
                        tracing::warn!(execution_id = %id, "ignoring unknown signal {}", signal.signal)
                    }
                }
            }
            server_message::Kind::Ack(ack) => self.on_ack(ack.seq),
            server_message::Kind::Drain(_) => self.on_drain(),
        }
    }

    fn on_welcome(&mut self, welcome: Welcome) {
        let conn = std::mem::replace(&mut self.conn, Conn::Closed);
        let Conn::Connecting {
            session,
            link,
            _task,
        } = conn
        else {
            tracing::warn!("ignoring an unexpected Welcome");
            self.conn = conn;
            return;
        };
        self.conn = Conn::Up {
            session,
            link,
            _task,
        };
        self.backoff.reset();
        tracing::info!(
            worker_id = welcome.worker_id,
            held = self.execs.len(),
            "connected to {} as {}",
            self.config.server,
            self.config.name
        );
        if let Some(settings) = welcome.settings {
            self.apply_settings(settings);
        }
        if welcome.lease_ms > 0 {
            self.lease
                .set(std::time::Duration::from_millis(welcome.lease_ms));
            self.chore_write_lease();
            self.set_heartbeat_interval();
        }
        let cache = self.config.work_dir.join(crate::staging::CACHE_DIR);
        let fasterq = crate::sra::Fasterq {
            engine: self.engine.clone(),
            image: self.config.sra_tools_image.clone(),
        };
        self.stager = crate::staging::Stager::new(&welcome.rclone_config, &cache, fasterq)
            .map(Arc::new)
            .map_err(Arc::new);
        if let Err(e) = &self.stager {
            tracing::error!("tasks with inputs or outputs will fail: {e}");
        }
        for id in welcome.cancel {
            self.cancel(ExecutionId(id));
        }
        let offsets: HashMap<ExecutionId, [u64; 2]> = welcome
            .offsets
            .iter()
            .map(|o| (ExecutionId(o.execution_id), [o.stdout, o.stderr]))
            .collect();
        for (id, exec) in &mut self.execs {
            let committed = offsets.get(id).copied().unwrap_or_default();
            for (spool, sent) in exec.streams.iter_mut().zip(committed) {
                spool.sent = sent;
            }
        }
        self.pump_all();
        self.fill_slots();
    }

    fn apply_settings(&mut self, settings: WireSettings) {
        let settings = Settings {
            concurrency: settings.concurrency,
            prefetch: settings.prefetch,
            batch: settings.batch,
            prefetch_auto: settings.prefetch_auto,
        };
        if settings.prefetch_auto {
            // The value in force; the measures move it from there.
            self.auto_prefetch.set_current(settings.prefetch);
        }
        if settings != self.settings {
            tracing::info!(
                concurrency = settings.concurrency,
                prefetch = settings.prefetch,
                prefetch_auto = settings.prefetch_auto,
                batch = settings.batch,
                "settings changed"
            );
            self.settings = settings;
        }
    }

    fn on_assignment(&mut self, assignment: &Assignment) {
        let launch = Launch::from_assignment(assignment);
        let id = launch.id;
        if self.execs.contains_key(&id) {
            tracing::debug!(execution_id = %id, "ignoring a repeated assignment");
            return;
        }
        if self.shutdown_deadline.is_some() {
            // Not accepted: the server finds it missing at the next Hello.
            return;
        }
        tracing::debug!(execution_id = %id, task_id = launch.task_id, "assigned");
        let mut exec = Exec::new(launch.task_id, Phase::Queued(Box::new(launch.clone())));
        // A prefetched task's data is staged while other tasks run.
        if launch.data.needs_staging_in()
            && let Ok(stager) = &self.stager
        {
            let dir = ExecDir::new(&self.config.work_dir, id);
            exec.staging = Some(crate::staging::stage_in(
                stager.clone(),
                id,
                dir,
                launch.data.clone(),
            ));
        }
        self.execs.insert(id, exec);
        self.queue.push_back(id);
        self.record_update(id, ExecutionState::Accepted);
        self.fill_slots();
    }

    fn on_signal(&mut self, id: ExecutionId, signal: Signal) {
        let Some(exec) = self.execs.get_mut(&id) else {
            tracing::debug!(execution_id = %id, ?signal, "signal for an execution not held");
            return;
        };
        tracing::info!(execution_id = %id, ?signal, "signal from the server");
        match (&exec.phase, signal) {
            (_, Signal::Cancel) => self.cancel(id),
            (Phase::Queued(_), Signal::Recall) => self.recall(id),
            (Phase::Queued(_), Signal::Term | Signal::Kill) => {
                self.queue.retain(|queued| *queued != id);
                let report = FinalReport::failed(Failure::Killed, "killed before it started");
                exec.phase = Phase::Finished(report.clone());
                self.outbox.record(report.to_update(id));
                self.pump(id);
            }
            (Phase::Running, Signal::Term) => {
                exec.killed.store(true, Ordering::Release);
                exec.signal(id, Sig::SIGTERM);
                // A paused task would not see SIGTERM until resumed.
                exec.signal(id, Sig::SIGCONT);
            }
            (Phase::Running, Signal::Kill) => {
                exec.killed.store(true, Ordering::Release);
                exec.signal(id, Sig::SIGKILL);
            }
            (Phase::Running, Signal::Pause) => exec.signal(id, Sig::SIGSTOP),
            (Phase::Running, Signal::Resume) => exec.signal(id, Sig::SIGCONT),
            _ => tracing::debug!(execution_id = %id, ?signal, "signal does not apply now"),
        }
    }

    /// The server takes back `id`, which has not started: it leaves the queue, its staging
    /// stops, and the report says it was recalled (the server queues its task again).
    pub(super) fn recall(&mut self, id: ExecutionId) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        self.queue.retain(|queued| *queued != id);
        if let Some(staging) = exec.staging.take() {
            staging.abort();
        }
        let report = FinalReport::failed(Failure::Recalled, "recalled before it started");
        exec.phase = Phase::Finished(report.clone());
        self.outbox.record(report.to_update(id));
        self.pump(id);
    }

    /// The server no longer wants `id`: stop it and forget it without reporting.
    fn cancel(&mut self, id: ExecutionId) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        self.outbox.forget(id);
        match exec.phase {
            Phase::Queued(_) => {
                self.queue.retain(|queued| *queued != id);
                if let Some(staging) = exec.staging.take() {
                    staging.abort();
                    self.execs.remove(&id);
                    self.chore_recycle(id);
                } else {
                    self.execs.remove(&id);
                }
            }
            Phase::Running => {
                exec.signal(id, Sig::SIGKILL);
                exec.phase = Phase::Canceled;
            }
            Phase::Finished(_) => {
                self.execs.remove(&id);
                self.chore_recycle(id);
            }
            Phase::Canceled => {}
        }
    }

    /// Everything up to `seq` is committed: executions whose final update is are forgotten, and
    /// their work dir removed after a success or kept (marked acknowledged) after a failure.
    fn on_drain(&mut self) {
        if !self.draining {
            tracing::info!(
                held = self.execs.len(),
                "draining: finishing what this agent holds, then exiting"
            );
        }
        self.draining = true;
    }

    fn on_ack(&mut self, seq: u64) {
        let mut oldest = None;
        for id in self.outbox.ack(seq) {
            let Some(exec) = self.execs.remove(&id) else {
                continue;
            };
            if let Some(ended) = exec.ended_at {
                oldest = Some(oldest.map_or(ended, |o: tokio::time::Instant| o.min(ended)));
            }
            let Phase::Finished(report) = exec.phase else {
                continue;
            };
            // Nothing of a recalled one is worth keeping: it never ran.
            if matches!(report.failure, None | Some(Failure::Recalled)) {
                self.chore_recycle(id);
            } else {
                let phase = DiskPhase::Finished {
                    report,
                    acknowledged: true,
                };
                self.chore_write_state(id, exec.task_id, phase);
            }
        }
        // From a task's end to its result committed: the round trip before the server may
        // refill the slot.
        if let Some(ended) = oldest {
            self.auto_prefetch.round_trip(ended.elapsed());
        }
        if self.spool_full {
            self.fill_slots();
        }
    }
}
