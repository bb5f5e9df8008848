//! The `scitq.v1` gRPC protocol shared by `scitqd`, `scitq-agent` and `scitqctl`.
//!
//! Generated from `proto/scitq/v1/scitq.proto` at build time with protox, so a fresh
//! checkout builds with cargo alone. [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("scitq.v1");
}

/// The encoded descriptor set of the whole protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scitq_descriptor.bin"));

/// Port scitqd listens on when none is given.
pub const DEFAULT_PORT: u16 = 5000;

/// Name of the batch a task lands in when none is given.
pub const DEFAULT_BATCH: &str = "Default";

/// Most tasks a worker may run at once. The database keeps worker settings as 32-bit signed
/// integers; anything past this is a typo, not a machine.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// Most tasks a worker may hold ahead of its free slots (same reason as [`MAX_CONCURRENCY`]).
pub const MAX_PREFETCH: u32 = 1_000_000;

pub mod container;

/// Selects rustls's ring crypto provider for the process. Call it first thing in `main`:
/// the workspace enables two providers (tonic's ring, the storage clients' aws-lc-rs), and
/// rustls then refuses to guess, panicking at the first TLS connection.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
