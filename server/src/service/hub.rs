//! Wake-ups for followers of a task's output and status. Publishers bump a per-task
//! counter after committing; followers wake and read what changed from the database, so
//! a slow follower never loses anything and a fast one waits on nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::core::ids::TaskId;

#[derive(Clone, Default)]
pub struct Hub {
    tasks: Arc<Mutex<HashMap<TaskId, watch::Sender<u64>>>>,
}

impl Hub {
    pub fn subscribe(&self, task: TaskId) -> watch::Receiver<u64> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .entry(task)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Whether anyone follows any task (if not, nobody needs to know what changed).
    pub fn has_followers(&self) -> bool {
        !self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn notify(&self, changed: impl IntoIterator<Item = TaskId>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.is_empty() {
            return;
        }
        for task in changed {
            let Some(sender) = tasks.get(&task) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                tasks.remove(&task);
            } else {
                sender.send_modify(|n| *n += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_on_their_task_only() {
        let hub = Hub::default();
        let mut rx = hub.subscribe(TaskId(1));
        hub.notify([TaskId(2)]);
        assert!(!rx.has_changed().unwrap());
        hub.notify([TaskId(1)]);
        rx.changed().await.unwrap();
        drop(rx);
        hub.notify([TaskId(1)]);
        assert!(hub.tasks.lock().unwrap().is_empty());
    }
}
