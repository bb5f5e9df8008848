//! A Hello: the agent lists the executions it holds; the server compares them with those it
//! believes the worker holds, and its word decides (see ARCHITECTURE.md, "The agent stream",
//! step 2).

use std::collections::{HashMap, HashSet};

use super::ids::ExecutionId;

/// Output bytes of an execution the server has committed, per stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

/// An execution the server believes the worker holds (not ended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    pub id: ExecutionId,
    pub offsets: Offsets,
    /// An operator killed its task: the kill may have been lost with the old session.
    pub killed: bool,
    /// An operator froze its task (SIGSTOP).
    pub frozen: bool,
    /// Its task is being recalled unstarted (edited, or its batch stopped).
    pub recalling: bool,
}

/// An execution the agent says it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub id: ExecutionId,
    /// It ended on the agent (its report may not have reached the server).
    pub finished: bool,
}

/// A signal to send again once the session is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    Kill,
    Stop,
    Recall,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Held executions the server still wants, with the output it has: the agent resumes
    /// sending from there.
    pub keep: Vec<(ExecutionId, Offsets)>,
    /// Executions the server believed held that the agent does not have: they end as missing
    /// (`core::attempt`).
    pub missing: Vec<ExecutionId>,
    /// Held executions the server no longer wants: the agent stops and forgets them.
    pub cancel: Vec<ExecutionId>,
    /// Operator signals to send again to kept executions.
    pub resend: Vec<(ExecutionId, Resend)>,
    /// Executions the worker holds once reconciled (its busy slots).
    pub active: u32,
}

/// `ended_here`: executions of this worker the server already ended (failed after its lease,
/// say), with their committed output. A finished one the agent still holds is kept, so that
/// its output and report are delivered and recorded as late, without changing its task.
pub fn reconcile(
    active: &[Active],
    held: &[Held],
    ended_here: &HashMap<ExecutionId, Offsets>,
) -> Reconciliation {
    let mut out = Reconciliation::default();
    let held_ids: HashSet<ExecutionId> = held.iter().map(|h| h.id).collect();
    let active_ids: HashSet<ExecutionId> = active.iter().map(|a| a.id).collect();
    for execution in active {
        if !held_ids.contains(&execution.id) {
            out.missing.push(execution.id);
            continue;
        }
        out.keep.push((execution.id, execution.offsets));
        out.active += 1;
        if execution.killed {
            out.resend.push((execution.id, Resend::Kill));
        } else if execution.frozen {
            out.resend.push((execution.id, Resend::Stop));
        } else if execution.recalling {
            out.resend.push((execution.id, Resend::Recall));
        }
    }
    for h in held.iter().filter(|h| !active_ids.contains(&h.id)) {
        match ended_here.get(&h.id) {
            Some(offsets) if h.finished => out.keep.push((h.id, *offsets)),
            _ => out.cancel.push(h.id),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(id: i64) -> Active {
        Active {
            id: ExecutionId(id),
            offsets: Offsets {
                stdout: id as u64 * 10,
                stderr: 1,
            },
            killed: false,
            frozen: false,
            recalling: false,
        }
    }

    fn held(id: i64, finished: bool) -> Held {
        Held {
            id: ExecutionId(id),
            finished,
        }
    }

    #[test]
    fn both_sides_agree() {
        let r = reconcile(
            &[active(1), active(2)],
            &[held(1, false), held(2, true)],
            &HashMap::new(),
        );
        assert_eq!(r.keep.len(), 2);
        assert_eq!(r.keep[0].1.stdout, 10);
        assert!(r.missing.is_empty() && r.cancel.is_empty() && r.resend.is_empty());
        assert_eq!(r.active, 2);
    }

    #[test]
    fn what_the_agent_lost_ends_and_what_the_server_dropped_is_canceled() {
        let r = reconcile(
            &[active(1), active(2)],
            &[held(2, false), held(9, false)],
            &HashMap::new(),
        );
        assert_eq!(r.missing, vec![ExecutionId(1)]);
        assert_eq!(r.cancel, vec![ExecutionId(9)]);
        assert_eq!(r.active, 1);
    }

    #[test]
    fn a_late_finished_execution_is_delivered_not_canceled() {
        let ended = HashMap::from([(
            ExecutionId(5),
            Offsets {
                stdout: 3,
                stderr: 0,
            },
        )]);
        // Finished: kept, so its report and output arrive (recorded as late).
        let r = reconcile(&[], &[held(5, true)], &ended);
        assert_eq!(
            r.keep,
            vec![(
                ExecutionId(5),
                Offsets {
                    stdout: 3,
                    stderr: 0
                }
            )]
        );
        assert_eq!(r.active, 0, "it holds no slot");
        // Still running on the agent although the server ended it: stopped.
        let r = reconcile(&[], &[held(5, false)], &ended);
        assert_eq!(r.cancel, vec![ExecutionId(5)]);
        // Finished, but another worker's (or unknown): canceled.
        let r = reconcile(&[], &[held(6, true)], &ended);
        assert_eq!(r.cancel, vec![ExecutionId(6)]);
    }

    #[test]
    fn operator_signals_lost_with_the_old_session_are_sent_again() {
        let mut killed = active(1);
        killed.killed = true;
        let mut frozen = active(2);
        frozen.frozen = true;
        let mut recalled = active(3);
        recalled.recalling = true;
        let r = reconcile(
            &[killed, frozen, recalled],
            &[held(1, false), held(2, false), held(3, false)],
            &HashMap::new(),
        );
        assert_eq!(
            r.resend,
            vec![
                (ExecutionId(1), Resend::Kill),
                (ExecutionId(2), Resend::Stop),
                (ExecutionId(3), Resend::Recall)
            ]
        );
        assert_eq!(r.active, 3);
    }
}
