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

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use scitq_proto::v1::UploadedFile;
use scitq_storage::{NoProgress, Remotes, ResourceCache, Storage, link_into};

use crate::sra::Fasterq;
use crate::state::{ExecDir, ExecutionId};

/// The resource cache's folder in the agent's work dir.
pub const CACHE_DIR: &str = "resource-cache";

/// Transfers of one task that run at once.
const PARALLEL: usize = 4;

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

/// The outcome of staging in, awaited by the executor: the lines to put at the head of the
/// task's stderr (where each `run+fastq://` input came from), or why staging failed.
pub type StageIn = tokio::task::JoinHandle<Result<Vec<String>, String>>;

impl Stager {
    /// A stager for `rclone_config` (rclone.conf text; empty for none) with its resource cache
    /// in `cache_dir`, falling back on `fasterq` for runs ENA cannot deliver.
    pub fn new(
        rclone_config: &str,
        cache_dir: &std::path::Path,
        fasterq: Fasterq,
    ) -> Result<Stager, String> {
        let remotes = if rclone_config.trim().is_empty() {
            Remotes::empty()
        } else {
            Remotes::parse(rclone_config)
                .map_err(|e| format!("invalid rclone config from the server: {e}"))?
        };
        let cache = ResourceCache::new(cache_dir)
            .map_err(|e| format!("cannot use resource cache {}: {e}", cache_dir.display()))?;
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
    tokio::spawn(async move {
        let mut jobs: Vec<BoxFuture<'static, Result<Option<String>, String>>> = Vec::new();
        for uri in data.inputs {
            let (stager, input) = (stager.clone(), dir.input());
            jobs.push(Box::pin(async move {
                if let Some(accession) = stager.storage.run_accession(&uri) {
                    return stage_run(&stager, id, &uri, &input, &accession)
                        .await
                        .map(Some);
                }
                stager
                    .storage
                    .download(&uri, &input, &NoProgress)
                    .await
                    .map(|_| None)
                    .map_err(|e| format!("cannot download input {uri}: {e}"))
            }));
        }
        for uri in data.resources {
            let (stager, resource) = (stager.clone(), dir.resource());
            jobs.push(Box::pin(async move {
                let cached = stager
                    .cache
                    .fetch(&stager.storage, &uri)
                    .await
                    .map_err(|e| format!("cannot download resource {uri}: {e}"))?;
                link_into(&cached, &resource)
                    .await
                    .map(|_| None)
                    .map_err(|e| format!("cannot link resource {uri}: {e}"))
            }));
        }
        let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
        let mut notes = Vec::new();
        while let Some(result) = results.next().await {
            notes.extend(result?);
        }
        // In a stable order, whichever input finished first.
        notes.sort();
        Ok(notes)
    })
}

/// Downloads a `run+fastq://` input from ENA, else with `fasterq-dump`. Returns the line
/// saying which source gave it; the error names the URI and gives both sources' errors.
async fn stage_run(
    stager: &Stager,
    id: ExecutionId,
    uri: &str,
    input: &std::path::Path,
    accession: &str,
) -> Result<String, String> {
    let ena_error = match stager.storage.download(uri, input, &NoProgress).await {
        Ok(paths) => {
            tracing::info!(execution_id = %id, uri, "run downloaded from ENA");
            return Ok(format!("scitq: {uri}: {} file(s) from ENA\n", paths.len()));
        }
        Err(e) if !e.ena_may_fall_back() => {
            return Err(format!("cannot download input {uri}: {e}"));
        }
        Err(e) => e,
    };
    tracing::warn!(execution_id = %id, uri, "ENA failed, trying fasterq-dump: {ena_error}");
    let dumped = match stager.fasterq.dump(id, input, accession).await {
        Ok(paths) => stager
            .storage
            .apply_actions_of(uri, input, paths)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
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
        Err(e) => Err(format!(
            "cannot download input {uri}: ENA failed: {ena_error}; {e}"
        )),
    }
}

/// Uploads everything in `output/` under `uri`; returns the files uploaded.
pub async fn stage_out(
    stager: &Stager,
    dir: &ExecDir,
    uri: &str,
) -> Result<Vec<UploadedFile>, String> {
    let uploaded = stager
        .storage
        .upload_dir(&dir.output(), uri, &NoProgress)
        .await
        .map_err(|e| format!("cannot upload the output to {uri}: {e}"))?;
    Ok(uploaded
        .into_iter()
        .map(|u| UploadedFile {
            uri: u.uri,
            size: u.size,
        })
        .collect())
}
