//! Sequence numbers and the execution updates the server has not committed yet.
//!
//! Every message of a session gets the next `seq`, from 1. For each held execution the outbox
//! keeps its latest update, whether it went out in this session and with which `seq`, and
//! whether an `Ack` covered it. An `Ack` covering a final update releases the execution.
//! Output needs no tracking here: after a reconnect `Welcome` says how much the server has.

use std::collections::HashMap;

use scitq_proto::v1::{ExecutionState, ExecutionUpdate};

use crate::state::ExecutionId;

#[derive(Debug)]
struct Tracked {
    update: ExecutionUpdate,
    /// `seq` it was sent with in the current session.
    seq: Option<u64>,
    acked: bool,
}

#[derive(Debug)]
pub struct Outbox {
    next_seq: u64,
    tracked: HashMap<ExecutionId, Tracked>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

/// True for the updates that end an execution on the agent.
pub fn is_final(update: &ExecutionUpdate) -> bool {
    matches!(
        ExecutionState::try_from(update.state),
        Ok(ExecutionState::Succeeded | ExecutionState::Failed | ExecutionState::Canceled)
    )
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            next_seq: 1,
            tracked: HashMap::new(),
        }
    }

    /// A new session starts: numbering restarts at 1 and nothing counts as sent in it.
    pub fn new_session(&mut self) {
        self.next_seq = 1;
        for tracked in self.tracked.values_mut() {
            tracked.seq = None;
        }
    }

    /// Takes the next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Records the latest update of an execution; it replaces any earlier one.
    pub fn record(&mut self, update: ExecutionUpdate) {
        let id = ExecutionId(update.execution_id);
        self.tracked.insert(
            id,
            Tracked {
                update,
                seq: None,
                acked: false,
            },
        );
    }

    /// The latest update of `id` if it still has to go out in this session.
    pub fn unsent(&self, id: ExecutionId) -> Option<&ExecutionUpdate> {
        self.tracked
            .get(&id)
            .filter(|t| t.seq.is_none() && !t.acked)
            .map(|t| &t.update)
    }

    pub fn mark_sent(&mut self, id: ExecutionId, seq: u64) {
        if let Some(tracked) = self.tracked.get_mut(&id) {
            tracked.seq = Some(seq);
        }
    }

    /// Everything up to `seq` is committed. Returns the executions whose final update is, in
    /// id order; they are no longer tracked.
    pub fn ack(&mut self, seq: u64) -> Vec<ExecutionId> {
        let mut done = Vec::new();
        for (id, tracked) in &mut self.tracked {
            if tracked.seq.is_some_and(|s| s <= seq) {
                tracked.acked = true;
                if is_final(&tracked.update) {
                    done.push(*id);
                }
            }
        }
        for id in &done {
            self.tracked.remove(id);
        }
        done.sort();
        done
    }

    /// Stops tracking an execution (the server canceled it).
    pub fn forget(&mut self, id: ExecutionId) {
        self.tracked.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: i64, state: ExecutionState) -> ExecutionUpdate {
        ExecutionUpdate {
            execution_id: id,
            state: state as i32,
            ..ExecutionUpdate::default()
        }
    }

    fn send(outbox: &mut Outbox, id: i64) -> u64 {
        assert!(
            outbox.unsent(ExecutionId(id)).is_some(),
            "{id} has something to send"
        );
        let seq = outbox.next_seq();
        outbox.mark_sent(ExecutionId(id), seq);
        seq
    }

    #[test]
    fn seq_starts_at_one_and_restarts_per_session() {
        let mut outbox = Outbox::new();
        assert_eq!((outbox.next_seq(), outbox.next_seq()), (1, 2));
        outbox.new_session();
        assert_eq!(outbox.next_seq(), 1);
    }

    #[test]
    fn only_acked_final_updates_release_executions() {
        let mut outbox = Outbox::new();
        outbox.record(update(1, ExecutionState::Running));
        outbox.record(update(2, ExecutionState::Succeeded));
        outbox.record(update(3, ExecutionState::Failed));
        let s1 = send(&mut outbox, 1);
        let s2 = send(&mut outbox, 2);
        let s3 = send(&mut outbox, 3);
        assert!(
            outbox.unsent(ExecutionId(2)).is_none(),
            "sent once per session"
        );
        assert_eq!(outbox.ack(s1), vec![]);
        assert_eq!(outbox.ack(s2), vec![ExecutionId(2)]);
        assert_eq!(outbox.ack(s3 + 10), vec![ExecutionId(3)]);
        assert_eq!(outbox.ack(s3 + 10), vec![], "released once");
    }

    #[test]
    fn unacked_updates_are_resent_in_the_next_session() {
        let mut outbox = Outbox::new();
        outbox.record(update(1, ExecutionState::Running));
        outbox.record(update(2, ExecutionState::Running));
        let s2 = send(&mut outbox, 2);
        send(&mut outbox, 1);
        // Only the first message is acknowledged before the stream breaks.
        outbox.record(update(2, ExecutionState::Succeeded));
        outbox.ack(s2);
        outbox.new_session();
        assert!(
            outbox.unsent(ExecutionId(1)).is_some(),
            "running update not acked"
        );
        let final2 = outbox.unsent(ExecutionId(2)).unwrap();
        assert_eq!(final2.state, ExecutionState::Succeeded as i32);
    }

    #[test]
    fn ack_of_an_earlier_update_does_not_cover_a_newer_one() {
        let mut outbox = Outbox::new();
        outbox.record(update(1, ExecutionState::Running));
        let s1 = send(&mut outbox, 1);
        outbox.record(update(1, ExecutionState::Succeeded));
        let _s2 = send(&mut outbox, 1);
        assert_eq!(outbox.ack(s1), vec![]);
        // A new session: the final one was not acknowledged, so it goes again.
        outbox.new_session();
        assert!(outbox.unsent(ExecutionId(1)).is_some());
    }

    #[test]
    fn acked_non_final_update_is_not_resent() {
        let mut outbox = Outbox::new();
        outbox.record(update(1, ExecutionState::Accepted));
        let s = send(&mut outbox, 1);
        outbox.ack(s);
        outbox.new_session();
        assert!(outbox.unsent(ExecutionId(1)).is_none());
        outbox.forget(ExecutionId(1));
        assert!(outbox.unsent(ExecutionId(1)).is_none());
    }
}
