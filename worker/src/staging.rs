//! Data staging around a run: inputs downloaded into `input/` and resources linked into
//! `resource/` before it, the `output/` folder uploaded after it (also after a failure).
//!
//! Inputs of a prefetched task are staged as soon as the task is accepted, while other tasks
//! run: the agent starts [`stage_in`] then and the executor waits for it before the command.
//! Resources come from one cache per agent ([`ResourceCache`]): downloaded once, re-fetched
//! only when the remote changed, hard-linked into each task.
//!
//! A `run+fastq://` input that ENA cannot deliver is dumped from NCBI with `fasterq-dump` in a
//! container instead (`sra.rs`); staging returns one line per such input saying which source
//! gave it, which the executor puts at the head of the task's stderr.
//!
//! Transfers run on threads of their own ([`transfers`]), not on the agent loop's one thread:
//! a download checksums (and, over TLS, decrypts) every byte it receives, work that can take
//! several cores on a fast network and must not hold up live output or steering.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use scitq_proto::v1::UploadedFile;
use scitq_storage::{NoProgress, Remotes, ResourceCache, Storage, StorageError, link_into};

use crate::sra::{Fasterq, FasterqError};
use crate::state::{ExecDir, ExecutionId, InputSeen, SeenFile};

/// The resource cache's folder in the agent's work dir.
pub const CACHE_DIR: &str = "resource-cache";

/// Transfers of one task that run at once.
const PARALLEL: usize = 4;

/// Most threads the transfers run on (one per core up to this).
const TRANSFER_THREADS: usize = 8;

/// The runtime that transfers run on: started at the first transfer, kept for the life of
/// the process (a static is never dropped, so never within the agent's async context). When
/// its threads cannot be started, transfers run on the caller's runtime.
fn transfers() -> tokio::runtime::Handle {
    static TRANSFERS: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    let runtime = TRANSFERS.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(TRANSFER_THREADS);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("scitq-transfer")
            .enable_all()
            .build()
            .inspect_err(|e| tracing::warn!("cannot start the transfer threads: {e}"))
            .ok()
    });
    match runtime {
        Some(runtime) => runtime.handle().clone(),
        None => tokio::runtime::Handle::current(),
    }
}

/// Why a task's data could not be staged: the message of its `download` or `upload` failure.
/// Each names the URI and says what the storage said. The storage's errors are boxed: they
/// are large, and a staging result travels through every task's future.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("invalid rclone config from the server: {0}")]
    Config(#[source] Box<StorageError>),
    #[error("cannot use resource cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: Box<StorageError>,
    },
    #[error("no storage configuration from the server yet")]
    NotConfigured,
    /// The agent has no stager (one error for every task: shared).
    #[error(transparent)]
    NoStager(Arc<StagingError>),
    #[error("cannot download input {uri}: {source}")]
    Input {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("cannot download input {uri}: ENA failed: {ena}; {fallback}")]
    Run {
        uri: String,
        ena: Box<StorageError>,
        fallback: Box<FallbackError>,
    },
    #[error("cannot download resource {uri}: {source}")]
    Resource {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("cannot link resource {uri}: {source}")]
    Link {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("staging stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
    #[error("cannot upload the output to {uri}: {source}")]
    Upload {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
}

/// Why the second source of a run failed too.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    #[error(transparent)]
    Dump(#[from] FasterqError),
    /// The input's actions (e.g. `|gunzip`) on the dumped files.
    #[error(transparent)]
    Actions(StorageError),
}

/// What the agent stages with: the storage remotes scitqd handed it, and its resource cache.
pub struct Stager {
    storage: Storage,
    cache: ResourceCache,
    /// The second source of `run+fastq://` inputs.
    fasterq: Fasterq,
}

/// The data a task asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSpec {
    pub inputs: Vec<String>,
    pub resources: Vec<String>,
    /// Where `output/` goes after the run; empty: nowhere.
    pub output: String,
}

impl std::fmt::Debug for Stager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stager").finish_non_exhaustive()
    }
}

impl DataSpec {
    pub fn needs_staging_in(&self) -> bool {
        !self.inputs.is_empty() || !self.resources.is_empty()
    }
}

/// What staging in did, for the executor.
#[derive(Debug, Default)]
pub struct StagedIn {
    /// Lines to put at the head of the task's stderr (where each `run+fastq://` input came
    /// from).
    pub notes: Vec<String>,
    /// What each input's URI held just before its download, in the task's order of inputs;
    /// an input that could not be listed (or a `run+fastq://` one) is left out.
    pub inputs: Vec<InputSeen>,
}

/// Lists what `uri` (actions left out) holds now; `None` when the store cannot say.
async fn seen(storage: &Storage, uri: &str) -> Option<InputSeen> {
    let (location, _actions) = scitq_storage::split_actions(uri).ok()?;
    let entries = storage.list(location, true).await.ok()?;
    let files = entries
        .into_iter()
        .filter(|e| !e.is_dir)
        .map(|e| SeenFile {
            path: e.path,
            size: e.size,
            etag: e.etag,
            modified: e.last_modified,
        })
        .collect();
    Some(InputSeen {
        uri: location.to_owned(),
        files,
    })
}

/// The outcome of staging in, awaited by the executor.
pub type StageIn = tokio::task::JoinHandle<Result<StagedIn, StagingError>>;

impl Stager {
    /// A stager for `rclone_config` (rclone.conf text; empty for none) with its resource cache
    /// in `cache_dir`, falling back on `fasterq` for runs ENA cannot deliver.
    pub fn new(
        rclone_config: &str,
        cache_dir: &std::path::Path,
        fasterq: Fasterq,
    ) -> Result<Stager, StagingError> {
        let remotes = if rclone_config.trim().is_empty() {
            Remotes::empty()
        } else {
            Remotes::parse(rclone_config).map_err(|e| StagingError::Config(Box::new(e)))?
        };
        let cache = ResourceCache::new(cache_dir).map_err(|source| StagingError::Cache {
            path: cache_dir.to_owned(),
            source: Box::new(source),
        })?;
        Ok(Stager {
            storage: Storage::new(remotes),
            cache,
            fasterq,
        })
    }
}

/// Downloads the inputs into `input/` and links the resources into `resource/`, a few at a
/// time. The error names the URI and says what the storage said.
pub fn stage_in(stager: Arc<Stager>, id: ExecutionId, dir: ExecDir, data: DataSpec) -> StageIn {
    transfers().spawn(async move {
        let mut jobs: Vec<BoxFuture<'static, Result<Staged, StagingError>>> = Vec::new();
        for (index, uri) in data.inputs.into_iter().enumerate() {
            let (stager, input) = (stager.clone(), dir.input());
            jobs.push(Box::pin(async move {
                if let Some(accession) = stager.storage.run_accession(&uri) {
                    let note = stage_run(&stager, id, &uri, &input, &accession).await?;
                    return Ok(Staged::Note(note));
                }
                // Listed first: a change made during the download then shows at a resume.
                let seen = seen(&stager.storage, &uri).await;
                match stager.storage.download(&uri, &input, &NoProgress).await {
                    Ok(_) => Ok(seen.map_or(Staged::Nothing, |s| Staged::Input(index, s))),
                    Err(source) => Err(StagingError::Input {
                        uri,
                        source: Box::new(source),
                    }),
                }
            }));
        }
        for uri in data.resources {
            let (stager, resource) = (stager.clone(), dir.resource());
            jobs.push(Box::pin(async move {
                let cached = match stager.cache.fetch(&stager.storage, &uri).await {
                    Ok(cached) => cached,
                    Err(source) => {
                        let source = Box::new(source);
                        return Err(StagingError::Resource { uri, source });
                    }
                };
                match link_into(&cached, &resource).await {
                    Ok(_) => Ok(Staged::Nothing),
                    Err(source) => Err(StagingError::Link {
                        uri,
                        source: Box::new(source),
                    }),
                }
            }));
        }
        let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
        let mut notes = Vec::new();
        let mut inputs = Vec::new();
        while let Some(result) = results.next().await {
            match result? {
                Staged::Note(note) => notes.push(note),
                Staged::Input(index, seen) => inputs.push((index, seen)),
                Staged::Nothing => {}
            }
        }
        // In a stable order, whichever input finished first.
        notes.sort();
        inputs.sort_by_key(|(index, _)| *index);
        let inputs = inputs.into_iter().map(|(_, seen)| seen);
        let inputs = scitq_proto::within_input_files_seen(inputs, |s| s.files.len()).collect();
        Ok(StagedIn { notes, inputs })
    })
}

/// What one staging job gives.
enum Staged {
    Nothing,
    /// Where a `run+fastq://` input came from.
    Note(String),
    /// The `index`-th input, as it was listed.
    Input(usize, InputSeen),
}

/// Downloads a `run+fastq://` input from ENA, else with `fasterq-dump`. Returns the line
/// saying which source gave it; the error names the URI and gives both sources' errors.
async fn stage_run(
    stager: &Stager,
    id: ExecutionId,
    uri: &str,
    input: &std::path::Path,
    accession: &str,
) -> Result<String, StagingError> {
    let ena_error = match stager.storage.download(uri, input, &NoProgress).await {
        Ok(paths) => {
            tracing::info!(execution_id = %id, uri, "run downloaded from ENA");
            return Ok(format!("scitq: {uri}: {} file(s) from ENA\n", paths.len()));
        }
        Err(source) if !source.ena_may_fall_back() => {
            let uri = uri.to_owned();
            let source = Box::new(source);
            return Err(StagingError::Input { uri, source });
        }
        Err(e) => e,
    };
    tracing::warn!(execution_id = %id, uri, "ENA failed, trying fasterq-dump: {ena_error}");
    let dumped = match stager.fasterq.dump(id, input, accession).await {
        Ok(paths) => stager
            .storage
            .apply_actions_of(uri, input, paths)
            .await
            .map_err(FallbackError::Actions),
        Err(e) => Err(FallbackError::Dump(e)),
    };
    match dumped {
        Ok(paths) => {
            tracing::info!(execution_id = %id, uri, "run dumped with fasterq-dump");
            Ok(format!(
                "scitq: {uri}: {} file(s) from NCBI fasterq-dump ({}), as ENA failed: {ena_error}\n",
                paths.len(),
                stager.fasterq.image
            ))
        }
        Err(fallback) => Err(StagingError::Run {
            uri: uri.to_owned(),
            ena: Box::new(ena_error),
            fallback: Box::new(fallback),
        }),
    }
}

/// What an upload did: the files uploaded and the symbolic links left out.
#[derive(Debug, Default)]
pub struct StagedOut {
    pub files: Vec<UploadedFile>,
    /// Links in `output/` (paths relative to it), not uploaded: links are never followed.
    pub links: Vec<String>,
}

/// Uploads everything in `output/` under `uri`; returns the files uploaded and the links
/// left out.
pub async fn stage_out(
    stager: Arc<Stager>,
    dir: &ExecDir,
    uri: &str,
) -> Result<StagedOut, StagingError> {
    let output = dir.output();
    let links = {
        let output = output.clone();
        tokio::task::spawn_blocking(move || links_under(&output))
            .await
            .unwrap_or_default()
    };
    let target = uri.to_owned();
    let uploaded = transfers()
        .spawn(async move {
            stager
                .storage
                .upload_dir(&output, &target, &NoProgress)
                .await
        })
        .await
        .map_err(StagingError::Stopped)?
        .map_err(|source| StagingError::Upload {
            uri: uri.to_owned(),
            source: Box::new(source),
        })?;
    let files = uploaded
        .into_iter()
        .map(|u| UploadedFile {
            uri: u.uri,
            size: u.size,
        })
        .collect();
    Ok(StagedOut { files, links })
}

/// Most links named (the upload itself bounds the walk).
const MAX_LINKS: usize = 100;

/// The symbolic links under `root` (relative paths, sorted), at most [`MAX_LINKS`]; folders
/// behind links are not entered. The folder itself being a link is the upload's error.
pub fn links_under(root: &std::path::Path) -> Vec<String> {
    let mut links = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    let mut seen = 0usize;
    while let Some((dir, prefix)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 1_000_000 || links.len() >= MAX_LINKS {
                links.sort();
                return links;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if kind.is_symlink() {
                links.push(rel);
            } else if kind.is_dir() {
                pending.push((entry.path(), format!("{rel}/")));
            }
        }
    }
    links.sort();
    links
}

/// The line that names the links an upload left out, for the task's stderr and message.
pub fn links_note(links: &[String]) -> Option<String> {
    if links.is_empty() {
        return None;
    }
    let more = if links.len() >= MAX_LINKS {
        " and maybe more"
    } else {
        ""
    };
    Some(format!(
        "scitq: not uploaded, symbolic links are never followed: {}{more} (in output/)",
        links.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_input_is_seen_as_its_files_with_their_sizes_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("in");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("b.txt"), "bb").unwrap();
        std::fs::write(folder.join("sub/a.txt"), "a").unwrap();
        let storage = Storage::new(Remotes::empty());
        let uri = format!("file://{}/", folder.display());
        let input = seen(&storage, &format!("{uri}|untar")).await.unwrap();
        assert_eq!(input.uri, uri, "the actions are left out");
        let files: Vec<(&str, u64)> = input
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.size))
            .collect();
        assert_eq!(files, [("b.txt", 2), ("sub/a.txt", 1)]);
        assert!(
            input.files.iter().all(|f| f.modified.is_some()),
            "{input:?}"
        );
        let missing = format!("file://{}/none.txt", dir.path().display());
        assert_eq!(seen(&storage, &missing).await, None);
    }
}
