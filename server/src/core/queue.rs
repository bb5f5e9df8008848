//! The in-memory queue of pending tasks: per batch, ordered by priority (highest first)
//! then id (oldest first). About 24 bytes per queued task, so a million queued tasks cost
//! tens of megabytes; the task bodies stay in the database until dispatch.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::ids::TaskId;

type Key = (Reverse<i32>, TaskId);

/// A task entering (or leaving) the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub id: TaskId,
    pub batch: String,
    pub priority: i32,
}

#[derive(Default, Debug)]
pub struct Queue {
    batches: HashMap<String, BTreeSet<Key>>,
    stopped: HashSet<String>,
    len: usize,
}

impl Queue {
    pub fn push(&mut self, batch: &str, priority: i32, id: TaskId) {
        let inserted = self
            .batches
            .entry(batch.to_owned())
            .or_default()
            .insert((Reverse(priority), id));
        if inserted {
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn set_stopped(&mut self, batch: &str, stopped: bool) {
        if stopped {
            self.stopped.insert(batch.to_owned());
        } else {
            self.stopped.remove(batch);
        }
    }

    pub fn is_stopped(&self, batch: &str) -> bool {
        self.stopped.contains(batch)
    }

    /// Takes one task out of the queue, if it is there.
    pub fn remove(&mut self, batch: &str, priority: i32, id: TaskId) {
        let Some(set) = self.batches.get_mut(batch) else {
            return;
        };
        if set.remove(&(Reverse(priority), id)) {
            self.len -= 1;
        }
        if set.is_empty() {
            self.batches.remove(batch);
        }
    }

    /// Where a task stands in its batch's queue: how many go before it, or None when it
    /// is not queued. Walks the tasks ahead, so for explanations only.
    pub fn position(&self, batch: &str, priority: i32, id: TaskId) -> Option<usize> {
        let set = self.batches.get(batch)?;
        let key = (Reverse(priority), id);
        set.contains(&key).then(|| set.range(..key).count())
    }

    /// Forgets a whole batch (deleted).
    pub fn remove_batch(&mut self, batch: &str) {
        if let Some(set) = self.batches.remove(batch) {
            self.len -= set.len();
        }
        self.stopped.remove(batch);
    }

    /// Takes the best eligible task for a worker whose batch filter is `filter` (None: any
    /// batch). Cost: one B-tree pop, plus a scan of the batch heads when unfiltered.
    pub fn pop(&mut self, filter: Option<&str>) -> Option<(TaskId, String, i32)> {
        let batch = match filter {
            Some(batch) => {
                if self.stopped.contains(batch) {
                    return None;
                }
                batch.to_owned()
            }
            None => self
                .batches
                .iter()
                .filter(|(name, _)| !self.stopped.contains(*name))
                .filter_map(|(name, set)| set.first().map(|key| (key, name)))
                .min()
                .map(|(_, name)| name.clone())?,
        };
        let set = self.batches.get_mut(&batch)?;
        let (Reverse(priority), id) = set.pop_first()?;
        if set.is_empty() {
            self.batches.remove(&batch);
        }
        self.len -= 1;
        Some((id, batch, priority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_first_then_fifo() {
        let mut q = Queue::default();
        q.push("a", 0, TaskId(3));
        q.push("a", 0, TaskId(1));
        q.push("b", 5, TaskId(7));
        q.push("b", 0, TaskId(2));
        let order: Vec<_> = std::iter::from_fn(|| q.pop(None).map(|(id, _, _)| id)).collect();
        assert_eq!(order, vec![TaskId(7), TaskId(1), TaskId(2), TaskId(3)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn filter_and_stopped_batches_are_respected() {
        let mut q = Queue::default();
        q.push("a", 0, TaskId(1));
        q.push("b", 0, TaskId(2));
        assert_eq!(q.pop(Some("b")), Some((TaskId(2), "b".to_owned(), 0)));
        assert_eq!(q.pop(Some("b")), None);
        q.set_stopped("a", true);
        assert_eq!(q.pop(None), None);
        assert_eq!(q.pop(Some("a")), None);
        q.set_stopped("a", false);
        assert_eq!(q.pop(None), Some((TaskId(1), "a".to_owned(), 0)));
    }

    #[test]
    fn position_counts_the_tasks_ahead() {
        let mut q = Queue::default();
        q.push("a", 0, TaskId(1));
        q.push("a", 0, TaskId(2));
        q.push("a", 9, TaskId(3));
        assert_eq!(q.position("a", 0, TaskId(2)), Some(2));
        assert_eq!(q.position("a", 9, TaskId(3)), Some(0));
        assert_eq!(q.position("a", 0, TaskId(4)), None);
    }

    #[test]
    fn pushing_twice_queues_once_and_batches_can_go() {
        let mut q = Queue::default();
        q.push("a", 0, TaskId(1));
        q.push("a", 0, TaskId(1));
        q.push("a", 0, TaskId(2));
        assert_eq!(q.len(), 2);
        q.remove("a", 0, TaskId(2));
        q.remove("a", 0, TaskId(9));
        assert_eq!(q.len(), 1);
        q.remove_batch("a");
        assert_eq!(q.len(), 0);
        assert_eq!(q.pop(None), None);
    }
}
