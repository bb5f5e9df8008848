//! The decisions, as plain functions and data: no database, no network, no async. The
//! service loops (`crate::service`) hold the state, call these, and carry out what they
//! decide through the store and the agent streams.

pub mod agent;
pub mod attempt;
pub mod credential;
pub mod deps;
pub mod dispatch;
pub mod enroll;
pub mod enroll_user_data;
pub mod ids;
pub mod inputs_seen;
pub mod lease;
pub mod model;
#[cfg(test)]
mod model_tests;
pub mod progress;
pub mod queue;
pub mod reconcile;
pub mod recruit;
#[cfg(test)]
mod recruit_tests;
pub mod registry;
pub mod state;
pub mod steering;
pub mod task;
pub mod worker;
