//! A property test of the decisions together: random sequences of dispatches, agent
//! progress and failures, disconnections, lease expiries, agent restarts, operator kills and
//! relaunches, applied to an in-memory model of the server (through the real `core`
//! decisions: `dispatch`, `progress`, `attempt`, `reconcile`, `lease`) and of the agents (as
//! the agent stream specifies them: an agent cut off for its lease kills what it runs).
//!
//! After every event: no task succeeded twice; an active task has a live current execution;
//! no task runs on two machines at once; a live execution belongs to a worker that is
//! connected or within its lease. Once the faults stop, every task ends.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::attempt::{self, Ending, ExecView, TaskChange, TaskView};
use super::dispatch::Pool;
use super::ids::{ExecutionId, TaskId, WorkerId};
use super::lease::Leases;
use super::progress::{self, ExecRow, TaskRow};
use super::queue::Queue;
use super::reconcile::{self, Active, Held, Offsets, Resend};
use super::state::{ExecState, Failure, TaskStatus};
use super::worker::WorkerSettings;

const TASKS: usize = 4;
const AGENTS: usize = 2;
const LEASE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Event {
    Dispatch,
    /// An agent moves one of its executions one step forward (or fails it).
    Step {
        agent: usize,
        pick: usize,
        fail: bool,
    },
    /// A connected agent reports the state of everything it holds.
    Report {
        agent: usize,
    },
    Disconnect {
        agent: usize,
    },
    /// A disconnected agent comes back; `restart`: its process restarted and lost the
    /// assignments it had not accepted yet.
    Reconnect {
        agent: usize,
        restart: bool,
    },
    Tick {
        secs: u64,
    },
    Kill {
        task: usize,
    },
    Relaunch {
        task: usize,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Dispatch),
        6 => (0..AGENTS, 0..8usize, prop::bool::weighted(0.2))
            .prop_map(|(agent, pick, fail)| Event::Step { agent, pick, fail }),
        4 => (0..AGENTS).prop_map(|agent| Event::Report { agent }),
        1 => (0..AGENTS).prop_map(|agent| Event::Disconnect { agent }),
        1 => (0..AGENTS, any::<bool>())
            .prop_map(|(agent, restart)| Event::Reconnect { agent, restart }),
        2 => (1..12u64).prop_map(|secs| Event::Tick { secs }),
        1 => (0..TASKS).prop_map(|task| Event::Kill { task }),
        1 => (0..TASKS).prop_map(|task| Event::Relaunch { task }),
    ]
}

#[derive(Clone, Debug)]
struct Task {
    status: TaskStatus,
    current: Option<ExecutionId>,
    worker: Option<WorkerId>,
    retry_left: i32,
    killed: bool,
    /// Its execution when an operator killed it: it must never get another.
    killed_in: Option<ExecutionId>,
    successes: u32,
}

#[derive(Clone, Debug)]
struct Exec {
    task: usize,
    worker: WorkerId,
    state: ExecState,
}

/// What an agent holds: its own view of each execution.
#[derive(Clone, Debug, Default)]
struct Agent {
    connected: bool,
    /// When it last heard from the server (while cut off).
    cut_at: Option<Instant>,
    session: u64,
    local: BTreeMap<ExecutionId, (ExecState, Failure)>,
}

struct World {
    t0: Instant,
    now: Instant,
    tasks: Vec<Task>,
    execs: Vec<Exec>,
    agents: Vec<Agent>,
    queue: Queue,
    pool: Pool,
    leases: Leases,
    sessions: u64,
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 1,
        prefetch: 1,
        batch: None,
        paused: false,
        draining: false,
        prefetch_auto: false,
    }
}

fn worker_of(agent: usize) -> WorkerId {
    WorkerId(agent as i64)
}

impl World {
    fn new() -> World {
        let t0 = Instant::now();
        let mut world = World {
            t0,
            now: t0,
            tasks: vec![
                Task {
                    status: TaskStatus::Pending,
                    current: None,
                    worker: None,
                    retry_left: 1,
                    killed: false,
                    killed_in: None,
                    successes: 0,
                };
                TASKS
            ],
            execs: Vec::new(),
            agents: vec![Agent::default(); AGENTS],
            queue: Queue::default(),
            pool: Pool::default(),
            leases: Leases::new(LEASE),
            sessions: 0,
        };
        for task in 0..TASKS {
            world.queue.push("a", 0, TaskId(task as i64));
        }
        for agent in 0..AGENTS {
            world.reconnect(agent, false);
        }
        world
    }

    fn apply(&mut self, event: &Event) {
        match *event {
            Event::Dispatch => self.dispatch(),
            Event::Step { agent, pick, fail } => self.step(agent, pick, fail),
            Event::Report { agent } => self.report(agent),
            Event::Disconnect { agent } => self.disconnect(agent),
            Event::Reconnect { agent, restart } => self.reconnect(agent, restart),
            Event::Tick { secs } => self.tick(Duration::from_secs(secs)),
            Event::Kill { task } => self.kill(task),
            Event::Relaunch { task } => self.relaunch(task),
        }
    }

    /// Dispatch as the scheduler does it, with the store's guard (the task must still be
    /// pending) and the delivery of assignments to connected agents.
    fn dispatch(&mut self) {
        for (q, worker) in self.pool.pick(&mut self.queue) {
            let task = q.id.0 as usize;
            if self.tasks[task].status != TaskStatus::Pending {
                self.pool.release(worker, 1);
                continue;
            }
            let id = ExecutionId(self.execs.len() as i64);
            self.execs.push(Exec {
                task,
                worker,
                state: ExecState::Assigned,
            });
            let t = &mut self.tasks[task];
            t.status = TaskStatus::Assigned;
            t.current = Some(id);
            t.worker = Some(worker);
            let agent = &mut self.agents[worker.0 as usize];
            if agent.connected {
                agent.local.insert(id, (ExecState::Assigned, Failure::None));
            }
        }
    }

    fn step(&mut self, agent: usize, pick: usize, fail: bool) {
        let local = &mut self.agents[agent].local;
        let live: Vec<ExecutionId> = local
            .iter()
            .filter(|(_, (state, _))| !state.is_final())
            .map(|(id, _)| *id)
            .collect();
        let Some(id) = live.get(pick % live.len().max(1)).copied() else {
            return;
        };
        let entry = local.get_mut(&id).expect("listed");
        entry.0 = match (entry.0, fail) {
            (ExecState::Running, true) => {
                entry.1 = Failure::Run;
                ExecState::Failed
            }
            (ExecState::Assigned, _) => ExecState::Accepted,
            (ExecState::Accepted, _) => ExecState::Running,
            (ExecState::Running, _) => ExecState::Uploading,
            (ExecState::Uploading, _) => ExecState::Succeeded,
            (state, _) => state,
        };
    }

    fn report(&mut self, agent: usize) {
        if !self.agents[agent].connected {
            return;
        }
        let worker = worker_of(agent);
        let local = std::mem::take(&mut self.agents[agent].local);
        for (id, (state, failure)) in &local {
            match state {
                ExecState::Failed | ExecState::Canceled => {
                    let ending = Ending::Reported {
                        state: *state,
                        failure: *failure,
                        exit_code: Some(1),
                        message: String::new(),
                    };
                    self.end(*id, worker, ending);
                }
                target => self.advance(*id, worker, *target),
            }
        }
        // Final reports are acknowledged: the agent forgets them.
        self.agents[agent].local = local
            .into_iter()
            .filter(|(_, (state, _))| !state.is_final())
            .collect();
    }

    fn advance(&mut self, id: ExecutionId, worker: WorkerId, target: ExecState) {
        let exec = &self.execs[id.0 as usize];
        let task = &self.tasks[exec.task];
        let row = ExecRow {
            worker: exec.worker,
            state: exec.state,
        };
        let task_row = TaskRow {
            status: task.status,
            current: task.current,
            worker: task.worker,
        };
        let advanced = progress::advance(id, row, task_row, worker, target);
        let task_index = exec.task;
        if let Some(state) = advanced.exec {
            self.execs[id.0 as usize].state = state;
        }
        if let Some(status) = advanced.task {
            let task = &mut self.tasks[task_index];
            task.status = status;
            if status == TaskStatus::Succeeded {
                task.successes += 1;
            }
        }
        if target.is_final() {
            self.pool.release(worker, 1);
        }
    }

    /// An attempt ends as `core::attempt` decides; `worker` is the reporting one, if any.
    fn end(&mut self, id: ExecutionId, worker: WorkerId, ending: Ending) {
        let exec = &self.execs[id.0 as usize];
        if exec.worker != worker {
            return;
        }
        let task_index = exec.task;
        let task = &self.tasks[task_index];
        let view = TaskView {
            id: TaskId(task_index as i64),
            status: task.status,
            current: task.current,
            retry_left: task.retry_left,
            killed: task.killed,
        };
        let decision = attempt::end(
            ExecView {
                id,
                state: exec.state,
            },
            &view,
            ending,
        );
        let Some(change) = decision.exec else {
            return;
        };
        self.execs[id.0 as usize].state = change.state;
        if self.agents[worker.0 as usize].connected {
            self.pool.release(worker, 1);
        }
        let task = &mut self.tasks[task_index];
        match decision.task {
            TaskChange::Unchanged => {}
            TaskChange::Requeue { retry_left, .. } => {
                task.status = TaskStatus::Pending;
                task.retry_left = retry_left;
                self.queue.push("a", 0, TaskId(task_index as i64));
            }
            TaskChange::End { status, .. } => task.status = status,
        }
    }

    fn disconnect(&mut self, agent: usize) {
        let a = &mut self.agents[agent];
        if !a.connected {
            return;
        }
        a.connected = false;
        a.cut_at = Some(self.now);
        let session = a.session;
        self.pool.disconnect(worker_of(agent), session);
        self.leases.disconnected(worker_of(agent), self.now);
    }

    fn reconnect(&mut self, agent: usize, restart: bool) {
        if self.agents[agent].connected {
            return;
        }
        let worker = worker_of(agent);
        if restart {
            // Not accepted yet: never written down by the agent.
            self.agents[agent]
                .local
                .retain(|_, (state, _)| *state != ExecState::Assigned);
        }
        let active: Vec<Active> = self
            .execs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.worker == worker && !e.state.is_final())
            .map(|(i, e)| Active {
                id: ExecutionId(i as i64),
                offsets: Offsets::default(),
                killed: self.tasks[e.task].killed,
                frozen: false,
                recalling: false,
            })
            .collect();
        let held: Vec<Held> = self.agents[agent]
            .local
            .iter()
            .map(|(id, (state, _))| Held {
                id: *id,
                finished: state.is_final(),
            })
            .collect();
        let ended_here: HashMap<ExecutionId, Offsets> = held
            .iter()
            .filter(|h| {
                let e = &self.execs[h.id.0 as usize];
                e.worker == worker && e.state.is_final()
            })
            .map(|h| (h.id, Offsets::default()))
            .collect();
        let decided = reconcile::reconcile(&active, &held, &ended_here);
        for id in &decided.missing {
            self.end(
                *id,
                worker,
                Ending::Missing {
                    why: "the agent no longer holds it",
                },
            );
        }
        for id in &decided.cancel {
            self.agents[agent].local.remove(id);
        }
        self.sessions += 1;
        let session = self.sessions;
        self.pool
            .connect(worker, session, settings(), decided.active);
        self.leases.connected(worker);
        let a = &mut self.agents[agent];
        a.session = session;
        a.connected = true;
        a.cut_at = None;
        for (id, resend) in decided.resend {
            if resend == Resend::Kill {
                self.signal_kill(agent, id);
            }
        }
    }

    fn signal_kill(&mut self, agent: usize, id: ExecutionId) {
        if let Some(entry) = self.agents[agent].local.get_mut(&id)
            && !entry.0.is_final()
        {
            *entry = (ExecState::Failed, Failure::Killed);
        }
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        // The agents' fence: cut off for the lease, an agent kills what it runs.
        for agent in &mut self.agents {
            if let Some(cut_at) = agent.cut_at
                && self.now >= cut_at + LEASE
            {
                for entry in agent.local.values_mut() {
                    if !entry.0.is_final() {
                        *entry = (ExecState::Failed, Failure::Lost);
                    }
                }
            }
        }
        for worker in self.leases.due(self.now) {
            let ids: Vec<ExecutionId> = self
                .execs
                .iter()
                .enumerate()
                .filter(|(_, e)| e.worker == worker && !e.state.is_final())
                .map(|(i, _)| ExecutionId(i as i64))
                .collect();
            for id in ids {
                self.end(
                    id,
                    worker,
                    Ending::Missing {
                        why: "the worker's lease expired",
                    },
                );
            }
        }
    }

    fn kill(&mut self, task: usize) {
        let t = &mut self.tasks[task];
        if t.status.is_active() {
            t.killed = true;
            t.killed_in = t.current;
            let (Some(id), Some(worker)) = (t.current, t.worker) else {
                return;
            };
            let agent = worker.0 as usize;
            if self.agents[agent].connected {
                self.signal_kill(agent, id);
            }
        } else if matches!(
            t.status,
            TaskStatus::Pending | TaskStatus::Waiting | TaskStatus::Paused
        ) {
            t.status = TaskStatus::Canceled;
        }
    }

    fn relaunch(&mut self, task: usize) {
        let t = &mut self.tasks[task];
        // Relaunching a succeeded task is meant to run it again; the model keeps to the
        // others, so that "succeeded twice" always means a bug.
        if matches!(t.status, TaskStatus::Failed | TaskStatus::Canceled) {
            t.status = TaskStatus::Pending;
            t.killed = false;
            t.killed_in = None;
            self.queue.push("a", 0, TaskId(task as i64));
        }
    }

    fn check(&self) -> Result<(), String> {
        for (i, task) in self.tasks.iter().enumerate() {
            if task.killed && task.current != task.killed_in {
                return Err(format!("task {i} was killed and runs again"));
            }
            if task.successes > 1 {
                return Err(format!("task {i} succeeded {} times", task.successes));
            }
            if task.status.is_active() {
                let live = task
                    .current
                    .map(|id| &self.execs[id.0 as usize])
                    .filter(|e| e.task == i && !e.state.is_final());
                if live.is_none() {
                    return Err(format!(
                        "task {i} is {} with no live execution ({:?})",
                        task.status, task.current
                    ));
                }
            }
            let running: Vec<usize> = self
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.local.iter().any(|(id, (state, _))| {
                        self.execs[id.0 as usize].task == i
                            && matches!(state, ExecState::Running | ExecState::Uploading)
                    })
                })
                .map(|(agent, _)| agent)
                .collect();
            if running.len() > 1 {
                return Err(format!("task {i} runs on agents {running:?} at once"));
            }
        }
        for (i, exec) in self.execs.iter().enumerate() {
            let agent = &self.agents[exec.worker.0 as usize];
            if !exec.state.is_final() && !agent.connected && !self.leases.is_away(exec.worker) {
                return Err(format!(
                    "execution {i} is {:?} on a worker that is gone and out of its lease",
                    exec.state
                ));
            }
        }
        Ok(())
    }

    /// The faults stop: every agent comes back and works, and every task must end.
    fn settle(&mut self) -> Result<(), String> {
        for agent in 0..AGENTS {
            self.reconnect(agent, false);
        }
        for _ in 0..64 {
            self.dispatch();
            for agent in 0..AGENTS {
                for _ in 0..4 {
                    for pick in 0..4 {
                        self.step(agent, pick, false);
                    }
                }
                self.report(agent);
            }
            self.check()?;
            if self.tasks.iter().all(|t| t.status.is_final()) {
                return Ok(());
            }
        }
        let stuck: Vec<String> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.status.is_final())
            .map(|(i, t)| format!("task {i} {} ({:?})", t.status, t.current))
            .collect();
        Err(format!(
            "stuck after {:?} of faults: {}",
            self.now - self.t0,
            stuck.join(", ")
        ))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_task_succeeds_twice_runs_twice_or_is_left_behind(
        events in prop::collection::vec(event(), 1..80)
    ) {
        let mut world = World::new();
        for (n, event) in events.iter().enumerate() {
            world.apply(event);
            if let Err(broken) = world.check() {
                return Err(TestCaseError::fail(format!("after event {n} {event:?}: {broken}")));
            }
        }
        if let Err(broken) = world.settle() {
            return Err(TestCaseError::fail(broken));
        }
    }
}
