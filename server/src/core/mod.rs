//! The decisions: domain types, state machines, the queue and the scheduler loop.

pub mod hub;
pub mod ids;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod state;
pub mod task;
