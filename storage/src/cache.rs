//! The agent's resource cache: each resource downloaded once, re-fetched only when the remote
//! changed, shared with tasks by hard links.
//!
//! Layout under the cache dir, per resource URI (actions included: `x.tar.gz|untar` and
//! `x.tar.gz` are different resources): `<sha256 of the uri>/state.json` (the uri, the
//! remote's fingerprint when it was fetched, the current data dir) and `data-N/` (what the
//! download and its actions produced). A changed remote is downloaded into `data-N+1`; the
//! previous version is kept until the next change so tasks still linking from it finish, and
//! files already linked into tasks survive in any case (hard links keep their inode).
//!
//! One agent per cache dir: concurrent fetches are serialized per URI inside the process.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actions::split_actions;
use crate::error::{Result, StorageError};
use crate::progress::NoProgress;
use crate::storage::Storage;

/// Size, etag and modification time of every remote file of a resource, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint(Vec<(String, u64, Option<String>, Option<String>)>);

#[derive(Debug, Serialize, Deserialize)]
struct State {
    uri: String,
    fingerprint: Fingerprint,
    version: u64,
}

/// Resources downloaded once per agent. See the module docs.
pub struct ResourceCache {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What [`ResourceCache::fetch`] did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The cached copy matched the remote.
    Hit,
    /// First download, or the remote changed since the last one.
    Downloaded,
}

impl ResourceCache {
    /// A cache in `dir` (created if missing; what it already holds is reused).
    pub fn new(dir: impl Into<PathBuf>) -> Result<ResourceCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::local(&dir, e))?;
        Ok(ResourceCache {
            dir,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The local folder holding the resource `uri`, downloading it first if it is not cached
    /// or the remote changed. Several callers asking for the same URI at once share one
    /// download. Link the result into a task with [`link_into`].
    pub async fn fetch(&self, storage: &Storage, uri: &str) -> Result<PathBuf> {
        self.fetch_with_outcome(storage, uri).await.map(|(p, _)| p)
    }

    /// As [`ResourceCache::fetch`], also saying whether it downloaded.
    pub async fn fetch_with_outcome(
        &self,
        storage: &Storage,
        uri: &str,
    ) -> Result<(PathBuf, FetchOutcome)> {
        // Validate everything (actions too) before touching the network.
        storage.parse(uri)?;
        let key = hex::encode(Sha256::digest(uri.as_bytes()));
        let lock = {
            let mut locks = self.locks.lock().expect("cache lock table");
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let entry_dir = self.dir.join(&key);
        let state_path = entry_dir.join("state.json");
        let fingerprint = fingerprint(storage, uri).await?;
        let previous = read_state(&state_path).await;
        if let Some(state) = &previous {
            let data = entry_dir.join(format!("data-{}", state.version));
            if state.fingerprint == fingerprint && tokio::fs::metadata(&data).await.is_ok() {
                tracing::debug!(uri, "resource cache hit");
                return Ok((data, FetchOutcome::Hit));
            }
        }
        let version = previous.as_ref().map_or(1, |s| s.version + 1);
        let data = entry_dir.join(format!("data-{version}"));
        let partial = entry_dir.join(format!("partial-{version}"));
        remove_if_present(&partial).await?;
        tracing::info!(uri, version, "downloading resource");
        storage.download(uri, &partial, &NoProgress).await?;
        let readonly = partial.clone();
        tokio::task::spawn_blocking(move || make_read_only(&readonly))
            .await
            .expect("chmod walk does not panic")?;
        remove_if_present(&data).await?;
        rename(&partial, &data).await?;
        let state = State {
            uri: uri.to_string(),
            fingerprint,
            version,
        };
        write_state(&state_path, &state).await?;
        // Keep the version just replaced (a task may still be linking from it), drop older.
        if version >= 2 {
            remove_if_present(&entry_dir.join(format!("data-{}", version - 2))).await?;
        }
        Ok((data, FetchOutcome::Downloaded))
    }
}

async fn fingerprint(storage: &Storage, uri: &str) -> Result<Fingerprint> {
    let (location, _) = split_actions(uri)?;
    let entries = storage.list(location, true).await?;
    Ok(Fingerprint(
        entries
            .into_iter()
            .map(|e| (e.path, e.size, e.etag, e.last_modified))
            .collect(),
    ))
}

async fn read_state(path: &Path) -> Option<State> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn write_state(path: &Path, state: &State) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state).expect("state serializes");
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| StorageError::local(&tmp, e))?;
    rename(&tmp, path).await
}

async fn rename(from: &Path, to: &Path) -> Result<()> {
    tokio::fs::rename(from, to)
        .await
        .map_err(|e| StorageError::local(to, e))
}

async fn remove_if_present(path: &Path) -> Result<()> {
    match tokio::fs::symlink_metadata(path).await {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => {
            // Read-only files inside a writable folder can be removed.
            tokio::fs::remove_dir_all(path)
                .await
                .map_err(|e| StorageError::local(path, e))
        }
        Ok(_) => tokio::fs::remove_file(path)
            .await
            .map_err(|e| StorageError::local(path, e)),
    }
}

/// Files become read-only (0444): tasks share their inodes through hard links.
fn make_read_only(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::local(dir, e))? {
        let entry = entry.map_err(|e| StorageError::local(dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| StorageError::local(&path, e))?;
        if kind.is_dir() {
            make_read_only(&path)?;
        } else if kind.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| StorageError::local(&path, e))?;
        }
    }
    Ok(())
}

/// Hard-links the content of the cached folder `cached` into `dest_dir` (created if
/// missing), recreating sub-folders; falls back to a copy across file systems. Returns the
/// top-level paths created. An existing path in `dest_dir` is an error naming it.
pub async fn link_into(cached: &Path, dest_dir: &Path) -> Result<Vec<PathBuf>> {
    let (cached, dest_dir) = (cached.to_path_buf(), dest_dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dest_dir).map_err(|e| StorageError::local(&dest_dir, e))?;
        let mut tops = Vec::new();
        for entry in std::fs::read_dir(&cached).map_err(|e| StorageError::local(&cached, e))? {
            let entry = entry.map_err(|e| StorageError::local(&cached, e))?;
            let to = dest_dir.join(entry.file_name());
            link_tree(&entry.path(), &to)?;
            tops.push(to);
        }
        tops.sort();
        Ok(tops)
    })
    .await
    .expect("link walk does not panic")
}

fn link_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| StorageError::local(from, e))?;
    if meta.is_dir() {
        std::fs::create_dir(to).map_err(|e| StorageError::local(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| StorageError::local(from, e))? {
            let entry = entry.map_err(|e| StorageError::local(from, e))?;
            link_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        // EXDEV: the task dir is on another file system.
        Err(e) if e.raw_os_error() == Some(18) => std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| StorageError::local(to, e)),
        Err(e) => Err(StorageError::local(to, e)),
    }
}
