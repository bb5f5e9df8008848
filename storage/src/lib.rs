//! Storage for scitq, shared by the agent and `scitqctl fetch`: storage URIs (`s3://`,
//! `azure://`, `ftp://`, `sftp://`, `http(s)://`, `file://`, rclone remotes) with input actions
//! after `|`, streaming transfers through opendal (retried with backoff, sizes and md5s
//! verified), the agent's resource cache, and the runs of a sequencing project from ENA
//! ([`project_samples`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), scitq_storage::StorageError> {
//! use scitq_storage::{NoProgress, Remotes, Storage};
//! let storage = Storage::new(Remotes::parse("[lab]\ntype = s3\nendpoint = http://127.0.0.1:9000\n")?);
//! let inputs = storage
//!     .download("lab:refs/hg38.tar.gz|untar|mv:ref", std::path::Path::new("/work/input"), &NoProgress)
//!     .await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod actions;
mod backend;
mod cache;
mod ena;
mod ena_project;
mod error;
mod ftp_empty;
mod progress;
mod rclone;
mod storage;
mod transfer;
mod uri;

pub use actions::{Action, split_actions};
pub use cache::{FetchOutcome, ResourceCache, link_into};
pub use ena::{DEFAULT_ENA_URL, FastqFile};
pub use ena_project::{ProjectRun, ProjectSample, project_samples, valid_project};
pub use error::{Result, StorageError};
pub use progress::{NoProgress, Progress};
pub use rclone::{Remote, Remotes, obscure_with_iv, reveal};
pub use storage::{Entry, Storage, TransferReport, Uploaded};
pub use uri::{EnvDefaults, Location, parse_location};
