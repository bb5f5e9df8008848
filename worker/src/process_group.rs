//! Signals to the process group of a native task (its pid is also its group id): the agent
//! loop's steering, the time limit, the fence and the supervisor's fence all go through here.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Sends a signal to a process group; a group that no longer exists is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> nix::Result<()> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Ok(());
    };
    if raw <= 1 {
        // 0 would signal our own group, 1 init's; neither is a task.
        return Ok(());
    }
    match killpg(Pid::from_raw(raw), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}
