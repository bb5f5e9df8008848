//! The service loops: they own the in-memory state (the queue, the connected workers and
//! their streams, the leases), await the store, and carry out what `crate::core` decides.

pub mod hub;
pub mod ops;
pub mod recruit_metrics;
pub mod recruiter;
pub mod scheduler;
pub mod session;
