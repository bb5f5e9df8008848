//! Test support shared by the provisioner's integration tests (a dev-dependency) and by
//! `scitq-tests` (its harness and `scitq-bench`):
//!
//! - [`fake`]: a fake HTTP server on 127.0.0.1 (axum on a free port) with a request log and
//!   canned answers, the scaffolding of the fake clouds;
//! - [`openstack`]: Keystone, Nova, Glance and Neutron as the `openstack` crate calls them;
//! - [`azure`]: the Microsoft identity platform's token endpoint and Azure Resource Manager;
//! - [`images`]: a busybox image built locally (`docker import`, no pull) and docker helpers;
//! - [`wait_for`]: polling a condition with a deadline, for async tests.
//!
//! It depends on no scitq crate (see Cargo.toml), so it speaks plain HTTP and JSON: the
//! tests build their provider configs from [`fake::FakeServer::addr`].

#![forbid(unsafe_code)]

pub mod azure;
pub mod fake;
pub mod images;
pub mod openstack;

use std::time::Duration;

/// Polls `check` until it returns `Some`, failing the test with `what` after a generous
/// deadline (a condition, not a timing, is what the tests assert).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
