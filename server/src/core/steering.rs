//! What operator steering leaves on a task, for the decisions that must honour it later.

/// Reason of an active task an operator killed: it must stay killed, whatever becomes of
/// its execution (a lost or undelivered one is not re-queued; a kill lost with an agent's
/// session is sent again when it reconnects).
pub const KILLED: &str = "killed by an operator";

/// Reason of an active task an operator froze (SIGSTOP), until it is resumed.
pub const FROZEN: &str = "frozen by an operator";
