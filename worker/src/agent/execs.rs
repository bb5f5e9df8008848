//! Executor events, running slots and work dir chores.

use scitq_proto::v1::ExecutionState;
use tracing::Instrument;

use super::{Agent, Exec, Phase, RECYCLE_DELAY};
use crate::executor::{self, ExecContext, ExecEvent, Handle, Runner};
use crate::launch::{ContainerSpec, Launch};
use crate::staging::DataSpec;
use crate::state::{ExecDir, ExecutionId, Failure, FinalReport, Phase as DiskPhase, StateFile};

impl Agent {
    pub(super) fn on_exec_event(&mut self, event: ExecEvent) {
        match event {
            ExecEvent::Started { id, runner } => self.on_started(id, runner),
            ExecEvent::Output {
                id,
                stream,
                offset,
                data,
            } => {
                self.on_output(id, stream, offset, data);
            }
            ExecEvent::Uploading { id } => {
                if matches!(self.execs.get(&id).map(|e| &e.phase), Some(Phase::Running)) {
                    self.record_update(id, ExecutionState::Uploading);
                }
            }
            ExecEvent::Finished { id, report } => self.on_finished(id, report),
        }
    }

    pub(super) fn on_started(&mut self, id: ExecutionId, runner: Runner) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let was_started = exec.started;
        exec.started = true;
        if let Runner::Group(pid) = runner {
            exec.handle = Some(Handle::Group(pid));
        }
        for signal in std::mem::take(&mut exec.pending) {
            exec.signal(id, signal);
        }
        if matches!(exec.phase, Phase::Running) && !was_started {
            tracing::debug!(execution_id = %id, ?runner, "running");
            self.record_update(id, ExecutionState::Running);
        }
    }

    pub(super) fn on_finished(&mut self, id: ExecutionId, report: FinalReport) {
        self.running = self.running.saturating_sub(1);
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let slot_at = exec.slot_at.take();
        exec.ended_at = Some(tokio::time::Instant::now());
        if matches!(exec.phase, Phase::Canceled) {
            self.execs.remove(&id);
            self.chore_recycle(id);
        } else if exec.abandoned {
            let task_id = exec.task_id;
            self.execs.remove(&id);
            self.outbox.forget(id);
            self.chore_write_state(id, task_id, DiskPhase::Abandoned);
        } else {
            tracing::debug!(execution_id = %id, ?report, "finished");
            exec.phase = Phase::Finished(report.clone());
            self.outbox.record(report.to_update(id));
            self.pump(id);
        }
        self.measure_run(slot_at);
        self.fill_slots();
    }

    pub(super) fn on_executor_exit(
        &mut self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let task = match &done {
            Ok((task, ())) => *task,
            Err(e) => e.id(),
        };
        let Some(id) = self.executor_ids.remove(&task) else {
            return;
        };
        if let Err(e) = done {
            if e.is_cancelled() {
                // Left running at shutdown (a container): the next agent re-attaches.
                return;
            }
            // Its Finished event never came: report the execution failed so the slot frees.
            tracing::error!(execution_id = %id, "executor failed: {e}");
            let report = FinalReport::failed(Failure::Run, format!("agent error: {e}"));
            self.on_finished(id, report);
        }
    }

    /// Starts queued executions while running slots are free.
    pub(super) fn fill_slots(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        while self.running < self.settings.concurrency as usize && !self.queue.is_empty() {
            let spooled = self.spooled();
            if spooled >= self.config.spool_limit {
                if !self.spool_full {
                    tracing::warn!(
                        spooled,
                        limit = self.config.spool_limit,
                        "spool full: starting no new task until the server takes the output held"
                    );
                    self.spool_full = true;
                }
                return;
            }
            self.spool_full = false;
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            self.start(id);
        }
        self.release_results_if_due();
    }

    /// Bytes of output on disk for the executions held (removed once the server has them).
    fn spooled(&self) -> u64 {
        self.execs
            .values()
            .flat_map(|exec| exec.streams.iter().map(|s| s.written))
            .sum()
    }

    pub(super) fn start(&mut self, id: ExecutionId) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let Phase::Queued(launch) = std::mem::replace(&mut exec.phase, Phase::Running) else {
            return;
        };
        exec.slot_at = Some(tokio::time::Instant::now());
        self.spawn_executor(id, *launch, None, None);
    }

    /// Starts the executor of `id`, or re-attaches to its container, or adopts its native task.
    fn spawn_executor(
        &mut self,
        id: ExecutionId,
        launch: Launch,
        reattach: Option<String>,
        adopt: Option<crate::scan::Adopt>,
    ) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let cpu = (self.cpus / self.settings.concurrency.max(1)).max(1);
        let mut signals = None;
        if launch.container.is_some() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            exec.handle = Some(Handle::Container { signals: tx });
            exec.container = true;
            signals = Some(rx);
            for signal in std::mem::take(&mut exec.pending) {
                exec.signal(id, signal);
            }
        }
        let ctx = ExecContext {
            dir: ExecDir::new(&self.config.work_dir, id),
            cpu,
            killed: exec.killed.clone(),
            spares: self.spares.clone(),
            events: self.exec_tx.clone(),
            engine: self.engine.clone(),
            signals,
            reattach,
            stager: self.stager.clone(),
            staged: exec.staging.take(),
            supervisor: self.supervisor.clone(),
            adopt,
        };
        let span = tracing::info_span!("execution", execution_id = %id, task_id = exec.task_id);
        let handle = self
            .executors
            .spawn(executor::run(launch, ctx).instrument(span));
        exec.abort = Some(handle.clone());
        self.executor_ids.insert(handle.id(), id);
        self.running += 1;
    }

    /// Holds an execution a previous agent left running, with the output it already spooled.
    fn hold_running(
        &mut self,
        id: ExecutionId,
        task_id: i64,
        spooled: [u64; 2],
        handle: Option<Handle>,
    ) {
        let mut exec = Exec::new(task_id, Phase::Running);
        exec.started = true;
        exec.handle = handle;
        for stream in crate::state::Stream::BOTH {
            exec.streams[stream.index()].written = spooled[stream.index()];
        }
        self.execs.insert(id, exec);
    }

    /// Re-attaches to the containers a previous agent left: they hold slots and are reported
    /// as running in `Hello`.
    pub(super) fn start_reattached(&mut self) {
        for found in std::mem::take(&mut self.reattach) {
            tracing::info!(execution_id = %found.id, container = found.container, "re-attaching to a container left by a previous agent");
            self.hold_running(found.id, found.task_id, found.spooled, None);
            let launch = Launch {
                id: found.id,
                task_id: found.task_id,
                argv: Ok(Vec::new()),
                run_timeout: found.run_timeout,
                container: Some(ContainerSpec {
                    image: String::new(),
                    options: Ok(Default::default()),
                    credentials: Vec::new(),
                }),
                data: DataSpec {
                    output: found.output,
                    ..DataSpec::default()
                },
            };
            self.spawn_executor(found.id, launch, Some(found.container), None);
        }
    }

    /// Adopts the native tasks a previous agent left with the supervisor (or that ended while
    /// no agent was there): they hold slots and are reported as running in `Hello`.
    pub(super) fn start_adopted(&mut self) {
        for found in std::mem::take(&mut self.adopt) {
            tracing::info!(execution_id = %found.id, pid = found.pid, ended = found.exit.is_some(), "adopting a task left by a previous agent");
            self.hold_running(
                found.id,
                found.task_id,
                found.spooled,
                Some(Handle::Group(found.pid)),
            );
            let launch = Launch {
                id: found.id,
                task_id: found.task_id,
                argv: Ok(Vec::new()),
                run_timeout: found.run_timeout,
                container: None,
                data: DataSpec {
                    output: found.output.clone(),
                    ..DataSpec::default()
                },
            };
            self.spawn_executor(found.id, launch, None, Some(found));
        }
    }

    /// Removes failed containers and work dirs past their keeping time (or at once when the
    /// disk is filling up).
    pub(super) fn chore_sweep(&mut self) {
        let engine = self.engine.clone();
        let policy = crate::janitor::Policy {
            work_dir: self.config.work_dir.clone(),
            keep_failed: self.config.keep_failed,
            disk_threshold: self.config.disk_threshold,
        };
        let held: Vec<ExecutionId> = self.execs.keys().copied().collect();
        self.chores
            .spawn(async move { crate::janitor::sweep(&engine, &policy, held).await });
    }

    /// The work dir is no longer needed: the next execution to start takes it over, or it is
    /// recycled after [`RECYCLE_DELAY`] (see `spares`).
    pub(super) fn chore_recycle(&mut self, id: ExecutionId) {
        self.spares
            .release(&ExecDir::new(&self.config.work_dir, id));
        if self.recycle_at.is_none() {
            self.recycle_at = Some(tokio::time::Instant::now() + RECYCLE_DELAY);
        }
    }

    /// Recycles the work dirs no execution took over.
    pub(super) fn chore_recycle_released(&mut self) {
        self.recycle_at = None;
        if self.spares.has_released() {
            let spares = self.spares.clone();
            self.chores
                .spawn_blocking(move || spares.recycle_released());
        }
    }

    /// Rewrites `state.json` if the work dir exists (executions failed before starting have none).
    pub(super) fn chore_write_state(&mut self, id: ExecutionId, task_id: i64, phase: DiskPhase) {
        let dir = ExecDir::new(&self.config.work_dir, id);
        self.chores.spawn_blocking(move || {
            if !dir.root().is_dir() {
                return;
            }
            let state = StateFile {
                execution_id: id,
                task_id,
                phase,
            };
            if let Err(e) = state.write(&dir) {
                tracing::warn!(execution_id = %id, "cannot write state.json: {e}");
            }
        });
    }
}
