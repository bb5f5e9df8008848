//! Which worker gets which task. The [`Pool`] knows the connected workers, their settings
//! and how many executions each holds; [`Pool::pick`] hands out queued tasks round-robin to
//! free slots (concurrency + prefetch − held), honouring batch filters, paused and
//! draining workers, and the queue's order (priority, then FIFO; stopped batches skipped).
//! The service commits the picks, pushes them, and gives back those the store refused.

use std::collections::{BTreeMap, HashMap};

use super::ids::WorkerId;
use super::queue::{Queue, Queued};
use super::worker::WorkerSettings;

/// A connected worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The session it is connected with (a newer one replaces it).
    pub session: u64,
    pub settings: WorkerSettings,
    /// Executions it holds (assigned, prefetched or running).
    pub active: u32,
}

impl Slot {
    /// Tasks it may still take.
    pub fn free(&self) -> u32 {
        if !self.settings.takes_work() {
            return 0;
        }
        (self.settings.concurrency + self.settings.prefetch).saturating_sub(self.active)
    }
}

/// What a settings change means for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingsChange {
    /// It was not draining and now is: tell it to drain.
    pub drain: bool,
}

#[derive(Debug, Default)]
pub struct Pool {
    workers: BTreeMap<WorkerId, Slot>,
}

impl Pool {
    /// A worker connected with `active` executions held. Returns the session it replaces.
    pub fn connect(
        &mut self,
        worker: WorkerId,
        session: u64,
        settings: WorkerSettings,
        active: u32,
    ) -> Option<u64> {
        let slot = Slot {
            session,
            settings,
            active,
        };
        self.workers
            .insert(worker, slot)
            .map(|replaced| replaced.session)
    }

    /// A session ended. Returns whether it was the worker's live one (an older, replaced
    /// session ending changes nothing).
    pub fn disconnect(&mut self, worker: WorkerId, session: u64) -> bool {
        let live = self
            .workers
            .get(&worker)
            .is_some_and(|slot| slot.session == session);
        if live {
            self.workers.remove(&worker);
        }
        live
    }

    /// The worker's live session, if it is connected.
    pub fn session(&self, worker: WorkerId) -> Option<u64> {
        self.workers.get(&worker).map(|slot| slot.session)
    }

    pub fn is_connected(&self, worker: WorkerId) -> bool {
        self.workers.contains_key(&worker)
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// `count` executions of the worker ended (or were forgotten): their slots are free.
    /// Returns whether the worker is connected.
    pub fn release(&mut self, worker: WorkerId, count: u32) -> bool {
        match self.workers.get_mut(&worker) {
            Some(slot) => {
                slot.active = slot.active.saturating_sub(count);
                true
            }
            None => false,
        }
    }

    /// New settings for a connected worker; None when it is not connected.
    pub fn set_settings(
        &mut self,
        worker: WorkerId,
        settings: WorkerSettings,
    ) -> Option<SettingsChange> {
        let slot = self.workers.get_mut(&worker)?;
        let change = SettingsChange {
            drain: settings.draining && !slot.settings.draining,
        };
        slot.settings = settings;
        Some(change)
    }

    /// The agent of `worker`, whose prefetch is automatic, wants `prefetch` now. Ignored when
    /// an operator fixed it since (the agent hears of that in `Settings`). Returns whether
    /// the worker may take more tasks than before.
    pub fn agent_prefetch(&mut self, worker: WorkerId, prefetch: u32) -> bool {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return false;
        };
        if !slot.settings.prefetch_auto {
            return false;
        }
        let grew = prefetch > slot.settings.prefetch;
        slot.settings.prefetch = prefetch;
        grew
    }

    /// The prefetch in force per connected worker, and whether its agent adapts it.
    pub fn prefetch(&self) -> HashMap<WorkerId, (u32, bool)> {
        self.workers
            .iter()
            .map(|(id, slot)| {
                let s = &slot.settings;
                (*id, (s.prefetch, s.prefetch_auto))
            })
            .collect()
    }

    /// Active executions per connected worker.
    pub fn active(&self) -> HashMap<WorkerId, u32> {
        self.workers
            .iter()
            .map(|(id, slot)| (*id, slot.active))
            .collect()
    }

    /// Hands out queued tasks, one per worker with a free slot in turn, until no worker can
    /// take one of the tasks left. Each pick counts against its worker's slots at once.
    pub fn pick(&mut self, queue: &mut Queue) -> Vec<(Queued, WorkerId)> {
        let mut picks = Vec::new();
        loop {
            let mut progressed = false;
            for (id, slot) in self.workers.iter_mut() {
                if slot.free() == 0 {
                    continue;
                }
                let Some((task, batch, priority)) = queue.pop(slot.settings.batch.as_deref())
                else {
                    continue;
                };
                slot.active += 1;
                let queued = Queued {
                    id: task,
                    batch,
                    priority,
                };
                picks.push((queued, *id));
                progressed = true;
            }
            if !progressed {
                return picks;
            }
        }
    }

    /// Reasons, in plain words, why a pending task is not running.
    pub fn explain(&self, queue: &Queue, task: &Queued) -> Vec<String> {
        let mut reasons = Vec::new();
        if queue.is_stopped(&task.batch) {
            reasons.push(format!(
                "batch {:?} is stopped: run `scitqctl batch go {}`",
                task.batch, task.batch
            ));
        }
        if self.workers.is_empty() {
            reasons.push("no worker is connected".to_owned());
            return reasons;
        }
        let serving: Vec<&Slot> = self
            .workers
            .values()
            .filter(|slot| slot.settings.serves(&task.batch))
            .collect();
        if serving.is_empty() {
            reasons.push(format!(
                "no connected worker serves batch {:?} (every one is limited to another batch)",
                task.batch
            ));
            return reasons;
        }
        let free: u32 = serving.iter().map(|slot| slot.free()).sum();
        if serving.iter().all(|slot| !slot.settings.takes_work()) {
            reasons.push("every worker that serves its batch is paused or draining".to_owned());
        } else if free == 0 {
            reasons.push(format!(
                "every slot is busy on the {} worker(s) that serve its batch",
                serving.len()
            ));
        }
        match queue.position(&task.batch, task.priority, task.id) {
            Some(0) => reasons.push("it is next in its batch's queue".to_owned()),
            Some(n) => reasons.push(format!("{n} task(s) of its batch go before it")),
            None => reasons.push("it is about to be assigned".to_owned()),
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::TaskId;

    fn settings(concurrency: u32, prefetch: u32, batch: Option<&str>) -> WorkerSettings {
        WorkerSettings {
            concurrency,
            prefetch,
            batch: batch.map(str::to_owned),
            paused: false,
            draining: false,
            prefetch_auto: false,
        }
    }

    fn queue(tasks: &[(&str, i32, i64)]) -> Queue {
        let mut queue = Queue::default();
        for (batch, priority, id) in tasks {
            queue.push(batch, *priority, TaskId(*id));
        }
        queue
    }

    fn picked(picks: &[(Queued, WorkerId)]) -> Vec<(i64, i64)> {
        picks.iter().map(|(q, w)| (q.id.0, w.0)).collect()
    }

    #[test]
    fn tasks_go_round_robin_to_free_slots() {
        let mut pool = Pool::default();
        pool.connect(WorkerId(1), 1, settings(2, 0, None), 0);
        pool.connect(WorkerId(2), 2, settings(1, 1, None), 1);
        let mut q = queue(&[("a", 0, 1), ("a", 0, 2), ("a", 0, 3), ("a", 0, 4)]);
        let picks = pool.pick(&mut q);
        assert_eq!(picked(&picks), vec![(1, 1), (2, 2), (3, 1)]);
        assert_eq!(q.len(), 1, "no slot left for the fourth");
        assert!(pool.pick(&mut q).is_empty());
        pool.release(WorkerId(2), 1);
        assert_eq!(picked(&pool.pick(&mut q)), vec![(4, 2)]);
    }

    #[test]
    fn filters_pauses_and_drains_are_honoured() {
        let mut pool = Pool::default();
        pool.connect(WorkerId(1), 1, settings(4, 0, Some("b")), 0);
        let mut paused = settings(4, 0, None);
        paused.paused = true;
        pool.connect(WorkerId(2), 2, paused, 0);
        let mut q = queue(&[("a", 0, 1), ("b", 0, 2), ("a", 9, 3)]);
        assert_eq!(picked(&pool.pick(&mut q)), vec![(2, 1)]);
        let mut draining = settings(4, 0, None);
        draining.draining = true;
        assert_eq!(
            pool.set_settings(WorkerId(1), draining.clone()),
            Some(SettingsChange { drain: true })
        );
        assert_eq!(
            pool.set_settings(WorkerId(1), draining),
            Some(SettingsChange { drain: false }),
            "drain is told once"
        );
        assert!(pool.pick(&mut q).is_empty());
        assert_eq!(
            pool.set_settings(WorkerId(2), settings(1, 0, None)),
            Some(SettingsChange { drain: false })
        );
        assert_eq!(picked(&pool.pick(&mut q)), vec![(3, 2)], "priority first");
    }

    #[test]
    fn only_the_live_session_disconnects_its_worker() {
        let mut pool = Pool::default();
        assert_eq!(pool.connect(WorkerId(1), 1, settings(1, 0, None), 0), None);
        assert_eq!(
            pool.connect(WorkerId(1), 2, settings(1, 0, None), 0),
            Some(1)
        );
        assert!(!pool.disconnect(WorkerId(1), 1), "the replaced session");
        assert!(pool.is_connected(WorkerId(1)));
        assert!(pool.disconnect(WorkerId(1), 2));
        assert!(!pool.is_connected(WorkerId(1)));
        assert!(!pool.release(WorkerId(1), 1));
    }

    #[test]
    fn explain_names_the_first_obstacle() {
        let mut pool = Pool::default();
        let task = Queued {
            id: TaskId(5),
            batch: "a".into(),
            priority: 0,
        };
        let mut q = queue(&[("a", 0, 4), ("a", 0, 5)]);
        assert_eq!(
            pool.explain(&q, &task),
            vec!["no worker is connected".to_owned()]
        );
        pool.connect(WorkerId(1), 1, settings(1, 0, Some("b")), 0);
        assert!(pool.explain(&q, &task)[0].starts_with("no connected worker serves"));
        pool.connect(WorkerId(2), 2, settings(1, 0, None), 1);
        q.set_stopped("a", true);
        assert_eq!(
            pool.explain(&q, &task),
            vec![
                "batch \"a\" is stopped: run `scitqctl batch go a`".to_owned(),
                "every slot is busy on the 1 worker(s) that serve its batch".to_owned(),
                "1 task(s) of its batch go before it".to_owned(),
            ]
        );
    }

    #[test]
    fn prefetch_counts_as_slots_and_held_work_fills_them() {
        let slot = Slot {
            session: 1,
            settings: settings(2, 3, None),
            active: 4,
        };
        assert_eq!(slot.free(), 1);
        let over = Slot { active: 9, ..slot };
        assert_eq!(over.free(), 0, "never negative when settings shrink");
    }

    #[test]
    fn an_automatic_prefetch_follows_its_agent_and_a_fixed_one_does_not() {
        let mut pool = Pool::default();
        let (auto, fixed) = (WorkerId(1), WorkerId(2));
        let automatic = WorkerSettings {
            prefetch_auto: true,
            ..settings(2, 0, None)
        };
        pool.connect(auto, 1, automatic, 0);
        pool.connect(fixed, 2, settings(2, 1, None), 0);
        assert!(
            pool.agent_prefetch(auto, 5),
            "more room: a dispatch round is due"
        );
        assert!(!pool.agent_prefetch(auto, 3), "less room");
        assert!(!pool.agent_prefetch(fixed, 50), "fixed by an operator");
        assert!(!pool.agent_prefetch(WorkerId(3), 5), "not connected");
        let live = pool.prefetch();
        assert_eq!(live[&auto], (3, true));
        assert_eq!(live[&fixed], (1, false));
        assert_eq!(pool.workers[&auto].free(), 5, "2 slots and a prefetch of 3");
    }
}
