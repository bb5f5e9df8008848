//! Polling with a deadline, instead of fixed sleeps.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Ok`, and returns that value. `Err` carries what was seen
/// last, which the panic message shows when `timeout` passes first.
pub fn poll<T>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Polls `condition` until it holds; panics naming `what` when `timeout` passes first.
pub fn wait_until(timeout: Duration, what: impl Display, mut condition: impl FnMut() -> bool) {
    poll(timeout, what, || {
        if condition() {
            Ok(())
        } else {
            Err("condition false".to_string())
        }
    })
}
