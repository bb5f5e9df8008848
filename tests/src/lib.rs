//! End-to-end test harness for scitq: starts the real `scitqd`, `scitq-agent` and `scitqctl`
//! binaries (and, when asked, a database on a PostgreSQL cluster shared by the test run, see
//! `pg_shared`) on loopback, in temp dirs, and tears them down afterwards; builds tiny
//! container images (`images`, from `scitq-testkit`) and starts a private registry
//! (`registry`) for the container tests; storage servers on loopback (S3, FTP, SFTP, HTTP)
//! for the storage tests.
//!
//! The binaries are taken from the cargo target dir the running executable lives in, so build
//! them first: `cargo build --workspace` (scripts/test does it). Everything is polled with a
//! deadline; nothing sleeps a fixed time. When a test panics, the harness prints the tail of
//! every process log it started.
//!
//! Environment knobs:
//! - `SCITQ_TEST_KEEP=1`: keep the temp dirs of a failed test (their paths are printed).
//! - `SCITQ_TEST_LOG`: `RUST_LOG` of scitqd and scitq-agent (default `info`).
//! - `SCITQ_BIN_DIR`: where the scitq binaries are (default: this executable's profile dir).
//! - `SCITQ_PG_BIN`: PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin).
//! - `GRPCURL`: the grpcurl binary (default: target/test-tools/bin/grpcurl, then PATH).
//! - `MOTO_SERVER`: moto's S3 server (default: target/test-tools/venv/bin/moto_server, then PATH).
//! - `SCITQ_TEST_PYTHON`: a Python with pyftpdlib (default: the venv's python3, then PATH).
//! - `RCLONE`: the rclone binary for the storage tests and the benchmark (default: PATH).
//! - `SCITQ_TEST_SSHD`: OpenSSH's sshd for the SFTP tests (default: /usr/sbin/sshd);
//!   `SCITQ_TEST_SSH`, `SCITQ_TEST_SSH_KEYGEN`, `SCITQ_TEST_SSH_AGENT`, `SCITQ_TEST_SSH_ADD`:
//!   its client tools (default: PATH).

#![forbid(unsafe_code)]

mod agent;
mod bins;
mod certs;
mod client;
mod ftp;
mod grpcurl;
mod http;
mod loopback;
mod pg_shared;
mod postgres;
mod process;
mod proxy;
pub mod recruiting;
pub mod recruiting_docker;
pub mod registry;
mod s3;
mod server;
mod sftp;
mod tree;
mod wait;

pub use agent::Agent;
pub use bins::{bin, bin_dir};
pub use certs::{make_certs, make_certs_for};
pub use client::{Client, as_id, describe, sh_quote, str_field, wait_for_file_sh};
pub use ftp::{FTP_PASSWORD, FTP_USER, FtpServer};
pub use grpcurl::Grpcurl;
pub use http::HttpServer;
pub use loopback::{find_tool, http_request, python};
pub use pg_shared::PgDatabase;
pub use postgres::Postgres;
pub use process::{
    ChildGuard, Proc, descendants, group_stopped, log_tail, output_within, rss_kib, touch,
};
pub use proxy::Proxy;
pub use registry::Registry;
pub use s3::{S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, S3Server};
pub use scitq_testkit::images::{self, Image};
pub use server::{Backend, Server, ServerOpts};
pub use sftp::SftpServer;
pub use tree::{read_tree, write_tree};
pub use wait::{poll, wait_until};

/// Runs one test body `fn NAME(backend: Backend)` on both databases: `sqlite::NAME` and
/// `postgres::NAME` (production runs on PostgreSQL; SQLite is the default).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::Backend::Postgres)
                }
            )*
        }
    };
}

/// Whether a panicking test should leave its temp dirs behind (`SCITQ_TEST_KEEP=1`).
pub(crate) fn keep_temp_dirs() -> bool {
    std::env::var_os("SCITQ_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A fresh temp dir, kept after a failure when `SCITQ_TEST_KEEP` is set.
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir")
}

/// Called from `Drop` impls: on a failing test, keep the dir if asked and say where it is.
pub(crate) fn keep_on_panic(dir: &mut tempfile::TempDir, what: &str) {
    if std::thread::panicking() && keep_temp_dirs() {
        dir.disable_cleanup(true);
        eprintln!("[harness] kept {what} dir {}", dir.path().display());
    }
}
