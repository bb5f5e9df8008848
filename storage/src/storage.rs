//! [`Storage`]: every operation on URIs, streaming, retried, and verified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};
use opendal::{EntryMode, Metadata, Operator};
use serde::Serialize;

use crate::actions::{self, Action};
use crate::backend;
use crate::error::{Result, StorageError};
use crate::progress::Progress;
use crate::rclone::Remotes;
use crate::transfer::same_content;
use crate::uri::{EnvDefaults, Location, Service, parse_location};

/// Transfers move in chunks of this size: memory per transfer stays around
/// `CHUNK * CONCURRENT_CHUNKS`, whatever the file size.
pub(crate) const CHUNK: usize = 8 * 1024 * 1024;
/// Multipart parts of one file written at the same time (reads are one streaming GET).
pub(crate) const CONCURRENT_CHUNKS: usize = 4;
/// Files of a folder transferred at the same time.
const CONCURRENT_FILES: usize = 4;
/// Entries one listing may return: past it, a listing that never ends (a misbehaving server,
/// a link cycle) fails instead of running on.
const MAX_LISTED: usize = 50_000_000;
/// Downloads of one ENA FASTQ file before its run is given up.
const ENA_ATTEMPTS: u32 = 2;

/// A file or folder as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Reusable URI of the entry.
    pub uri: String,
    /// Path relative to the listed location (`/`-separated; folders end with `/`).
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    /// RFC 3339, when the service gives it.
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

/// One uploaded file: its URI and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    pub uri: String,
    pub size: u64,
}

/// What a copy or a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    /// Files written, with their destination URI and size.
    pub copied: Vec<Uploaded>,
    /// Files left alone because the destination already had them (sync).
    pub skipped: u64,
    /// Destination files removed because the source lacks them (sync with delete).
    pub deleted: Vec<String>,
}

impl TransferReport {
    pub fn bytes(&self) -> u64 {
        self.copied.iter().map(|c| c.size).sum()
    }
}

/// A source resolved to a file (with its metadata) or a folder.
enum Kind {
    File(Metadata),
    Folder,
}

/// Storage access for a set of rclone remotes plus the environment's credentials.
///
/// Cheap to share behind an `Arc`; operators (and their connection pools) are built once per
/// bucket, container or host and reused.
pub struct Storage {
    remotes: Remotes,
    env: EnvDefaults,
    operators: Mutex<HashMap<Service, Operator>>,
}

impl Storage {
    /// Remotes from an rclone.conf, credentials for bare `s3://`/`azure://` from the environment.
    pub fn new(remotes: Remotes) -> Storage {
        Storage::with_env(remotes, EnvDefaults::from_env())
    }

    /// As [`Storage::new`] with explicit defaults instead of the process environment.
    pub fn with_env(remotes: Remotes, env: EnvDefaults) -> Storage {
        Storage {
            remotes,
            env,
            operators: Mutex::new(HashMap::new()),
        }
    }

    pub fn remotes(&self) -> &Remotes {
        &self.remotes
    }

    /// Parses and validates `uri` (location and `|actions`) without touching the network.
    pub fn parse(&self, uri: &str) -> Result<(Location, Vec<Action>)> {
        let (location, actions) = actions::split_actions(uri)?;
        Ok((parse_location(location, &self.remotes, &self.env)?, actions))
    }

    /// Parses a location that must not carry actions (destinations, list, delete).
    pub fn location(&self, uri: &str) -> Result<Location> {
        let (location, actions) = self.parse(uri)?;
        if let Some(action) = actions.first() {
            return Err(StorageError::BadAction {
                uri: uri.to_string(),
                action: action.to_string(),
                reason: "actions only apply to downloads".to_string(),
            });
        }
        Ok(location)
    }

    pub(crate) fn operator(&self, loc: &Location) -> Result<Operator> {
        let mut operators = self.operators.lock().expect("operator cache lock");
        if let Some(op) = operators.get(&loc.service) {
            return Ok(op.clone());
        }
        let op = backend::build(loc)?;
        operators.insert(loc.service.clone(), op.clone());
        Ok(op)
    }

    async fn kind(&self, op: &Operator, loc: &Location) -> Result<Kind> {
        // A local folder is asked directly: opendal's lister panics on a link to a folder.
        if let Some(path) = loc.local_path()
            && tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir())
        {
            return Ok(Kind::Folder);
        }
        if !loc.is_folder_syntax() {
            match op.stat(&loc.path).await {
                Ok(meta) if meta.is_dir() => return Ok(Kind::Folder),
                Ok(meta) => return Ok(Kind::File(meta)),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::remote(&loc.uri(), e)),
            }
        }
        // Object stores have no folders, only prefixes: a folder exists if it holds something.
        let folder = loc.as_folder();
        let not_listable = |e: &opendal::Error| e.kind() == opendal::ErrorKind::Unsupported;
        let mut lister = match op.lister_with(&folder.path).recursive(true).await {
            Ok(lister) => lister,
            // Plain HTTP cannot list: what stat did not find does not exist.
            Err(e) if not_listable(&e) => return Err(StorageError::NotFound { uri: loc.uri() }),
            Err(e) => return Err(StorageError::remote(&loc.uri(), e)),
        };
        for listed in 0.. {
            if listed > MAX_LISTED {
                return Err(StorageError::TooManyEntries {
                    uri: loc.uri(),
                    limit: MAX_LISTED,
                });
            }
            let entry = match lister.try_next().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) if not_listable(&e) => {
                    return Err(StorageError::NotFound { uri: loc.uri() });
                }
                Err(e) => return Err(StorageError::remote(&loc.uri(), e)),
            };
            if entry.path() != folder.path {
                return Ok(Kind::Folder);
            }
        }
        // An empty folder still exists on file systems (the listing returned itself).
        match op.stat(&folder.path).await {
            Ok(meta) if meta.is_dir() => Ok(Kind::Folder),
            _ => Err(StorageError::NotFound { uri: loc.uri() }),
        }
    }

    /// Every file under the folder `loc`, as (relative path, metadata), sorted by path.
    async fn files_under(
        &self,
        op: &Operator,
        loc: &Location,
    ) -> Result<BTreeMap<String, Metadata>> {
        let folder = loc.as_folder();
        let uri = folder.uri();
        if let Some(root) = folder.local_path() {
            return self.local_files_under(op, &folder, root).await;
        }
        let mut lister = match op.lister_with(&folder.path).recursive(true).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StorageError::remote(&uri, e)),
        };
        let mut files = BTreeMap::new();
        let mut listed = 0;
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|e| StorageError::remote(&uri, e))?
        {
            listed += 1;
            if listed > MAX_LISTED {
                let limit = MAX_LISTED;
                return Err(StorageError::TooManyEntries { uri, limit });
            }
            if entry.metadata().mode() != EntryMode::FILE {
                continue;
            }
            let rel = entry.path()[folder.path.len()..].to_string();
            // An object store key may hold `..`: copied to a local folder, it would land
            // outside it.
            if crate::uri::has_parent_component(&rel) || rel.is_empty() {
                return Err(StorageError::EscapingName { uri, name: rel });
            }

            let (path, mut meta) = entry.into_parts();
            // Some listings (local files, FTP) carry only the mode: ask for the rest.
            if meta.content_length() == 0 && meta.last_modified().is_none() {
                meta = op
                    .stat(&path)
                    .await
                    .map_err(|e| StorageError::remote(&folder.uri_of(&path), e))?;
            }
            files.insert(rel, meta);
        }
        Ok(files)
    }

    /// [`Storage::files_under`] for a local folder, walked here rather than by opendal: its
    /// lister follows links (and panics on a link to a folder). A task may leave
    /// `ln -s /etc/shadow $OUTPUT/x` behind, so a link is never followed, whether a file or a
    /// folder (no store here keeps links): it is skipped, with a warning.
    async fn local_files_under(
        &self,
        op: &Operator,
        folder: &Location,
        root: PathBuf,
    ) -> Result<BTreeMap<String, Metadata>> {
        let walked = tokio::task::spawn_blocking(move || walk_local(&root))
            .await
            .expect("the local walk does not panic")?;
        let mut files = BTreeMap::new();
        for (rel, is_link) in walked {
            let path = format!("{}{rel}", folder.path);
            if is_link {
                tracing::warn!(
                    uri = %folder.uri_of(&path),
                    "skipped a symbolic link: links are not followed"
                );
                continue;
            }
            let meta = op
                .stat(&path)
                .await
                .map_err(|e| StorageError::remote(&folder.uri_of(&path), e))?;
            files.insert(rel, meta);
        }
        Ok(files)
    }

    /// Lists `uri`: a file gives itself, a folder its content (recursively if asked).
    pub async fn list(&self, uri: &str, recursive: bool) -> Result<Vec<Entry>> {
        let loc = self.location(uri)?;
        let op = self.operator(&loc)?;
        match self.kind(&op, &loc).await? {
            Kind::File(meta) => {
                let name = loc.file_name().unwrap_or_default().to_string();
                Ok(vec![entry(&loc, name, &meta)])
            }
            Kind::Folder => {
                let folder = loc.as_folder();
                if recursive {
                    let files = self.files_under(&op, &folder).await?;
                    return Ok(files
                        .into_iter()
                        .map(|(rel, meta)| entry(&folder.join(&rel), rel, &meta))
                        .collect());
                }
                let mut entries: Vec<opendal::Entry> = op
                    .list(&folder.path)
                    .await
                    .map_err(|e| StorageError::remote(uri, e))?;
                entries.retain(|e| e.path() != folder.path);
                entries.sort_by(|a, b| a.path().cmp(b.path()));
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    let rel = e.path()[folder.path.len()..].to_string();
                    let mut meta = e.metadata().clone();
                    if meta.is_file()
                        && meta.content_length() == 0
                        && meta.last_modified().is_none()
                    {
                        meta = op
                            .stat(e.path())
                            .await
                            .map_err(|err| StorageError::remote(uri, err))?;
                    }
                    out.push(entry(&folder.join(&rel), rel, &meta));
                }
                Ok(out)
            }
        }
    }

    /// Size, etag and modification time of the file at `uri` (or `NotFound`).
    pub async fn stat(&self, uri: &str) -> Result<Entry> {
        let loc = self.location(uri)?;
        let op = self.operator(&loc)?;
        let meta = op
            .stat(&loc.path)
            .await
            .map_err(|e| StorageError::remote(uri, e))?;
        Ok(entry(
            &loc,
            loc.file_name().unwrap_or_default().to_string(),
            &meta,
        ))
    }

    /// Downloads `src` (a file or a folder, optionally followed by `|actions`) into the local
    /// folder `dest_dir`, then applies the actions. Returns the resulting top-level paths.
    ///
    /// A file lands as `dest_dir/NAME`. A folder written with a trailing `/` has its content
    /// copied into `dest_dir`; without it, into `dest_dir/NAME/` (as `cp -r` and rsync do).
    pub async fn download(
        &self,
        src: &str,
        dest_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>> {
        let (loc, actions) = self.parse(src)?;
        tokio::fs::create_dir_all(dest_dir)
            .await
            .map_err(|e| StorageError::local(dest_dir, e))?;
        let dest_text = format!("{}/", dest_dir.display());
        let dest = self.location(&dest_text)?;
        if let Service::Ena {
            accession,
            report_url,
            fastq_scheme,
        } = &loc.service
        {
            let paths = self
                .download_run(
                    src,
                    accession,
                    report_url,
                    fastq_scheme,
                    &dest,
                    dest_dir,
                    progress,
                )
                .await?;
            return self.apply_actions(actions, dest_dir, paths).await;
        }
        let op = self.operator(&loc)?;
        let paths = match self.kind(&op, &loc).await? {
            Kind::File(meta) => {
                let name = loc
                    .file_name()
                    .ok_or_else(|| StorageError::MalformedUri {
                        uri: src.to_string(),
                        reason: "no file name".to_string(),
                    })?
                    .to_string();
                let to = dest.join(&name);
                progress.plan(1, meta.content_length());
                self.copy_file(&loc, &meta, &to, progress, None).await?;
                vec![dest_dir.join(name)]
            }
            Kind::Folder => {
                let (target, top) = match (loc.is_folder_syntax(), loc.file_name()) {
                    (false, Some(name)) => (dest.join(name).as_folder(), Some(dest_dir.join(name))),
                    _ => (dest.clone(), None),
                };
                let report = self.copy_folder(&op, &loc, &target, progress).await?;
                match top {
                    Some(top) => {
                        tokio::fs::create_dir_all(&top)
                            .await
                            .map_err(|e| StorageError::local(&top, e))?;
                        vec![top]
                    }
                    None => top_level(dest_dir, &report, &target),
                }
            }
        };
        self.apply_actions(actions, dest_dir, paths).await
    }

    async fn apply_actions(
        &self,
        actions: Vec<Action>,
        dest_dir: &Path,
        paths: Vec<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        if actions.is_empty() {
            return Ok(paths);
        }
        let dest_dir = dest_dir.to_path_buf();
        tokio::task::spawn_blocking(move || actions::apply(&actions, &dest_dir, paths))
            .await
            .expect("actions do not panic")
    }

    /// `run+fastq://ACCESSION`: every FASTQ file ENA lists, checked against its md5 and size.
    #[allow(clippy::too_many_arguments)]
    async fn download_run(
        &self,
        uri: &str,
        accession: &str,
        report_url: &str,
        scheme: &str,
        dest: &Location,
        dest_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<PathBuf>> {
        let files = crate::ena::resolve(uri, accession, report_url, scheme).await?;
        progress.plan(files.len() as u64, files.iter().map(|f| f.size).sum());
        let mut paths = Vec::new();
        for file in files {
            let loc = self.location(&file.url)?;
            let op = self.operator(&loc)?;
            let meta = op
                .stat(&loc.path)
                .await
                .map_err(|e| StorageError::remote(&file.url, e))?;
            if meta.content_length() != file.size {
                return Err(StorageError::SizeMismatch {
                    uri: file.url,
                    expected: file.size,
                    actual: meta.content_length(),
                });
            }
            let name = loc.file_name().unwrap_or(accession).to_string();
            let to = dest.join(&name);
            let mut attempt = 1;
            // Transient errors are retried inside opendal already; a file that arrives
            // damaged (size or md5) is fetched once more before the run is given up.
            while let Err(e) = self
                .copy_file(&loc, &meta, &to, progress, Some(&file.md5))
                .await
            {
                if attempt >= ENA_ATTEMPTS || !e.is_transfer_failure() {
                    return Err(e);
                }
                tracing::warn!(uri = file.url, attempt, "downloading again: {e}");
                attempt += 1;
            }
            paths.push(dest_dir.join(name));
        }
        Ok(paths)
    }

    /// The run accession of a `run+fastq://ACCESSION` URI (actions allowed), else `None`.
    pub fn run_accession(&self, uri: &str) -> Option<String> {
        match self.parse(uri).ok()?.0.service {
            Service::Ena { accession, .. } => Some(accession),
            _ => None,
        }
    }

    /// Applies the actions of `src` (what follows `|`) to `paths`, files that landed in
    /// `dest_dir` by other means than [`Storage::download`] (the agent's `fasterq-dump`
    /// fallback for `run+fastq://`). Returns the resulting top-level paths.
    pub async fn apply_actions_of(
        &self,
        src: &str,
        dest_dir: &Path,
        paths: Vec<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        let (_, actions) = self.parse(src)?;
        self.apply_actions(actions, dest_dir, paths).await
    }

    /// Uploads everything under the local folder `local_dir` to the folder `dst`.
    pub async fn upload_dir(
        &self,
        local_dir: &Path,
        dst: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<Uploaded>> {
        // The folder itself replaced by a link (`ln -s /etc $OUTPUT`) is refused whole.
        if let Ok(meta) = tokio::fs::symlink_metadata(local_dir).await
            && meta.file_type().is_symlink()
        {
            return Err(StorageError::LinkedFolder {
                path: local_dir.to_path_buf(),
            });
        }
        let src_text = format!("{}/", local_dir.display());
        let report = self.copy(&src_text, dst, progress).await?;
        Ok(report.copied)
    }

    /// Copies a file or a folder to `dst`. A file copied onto a folder (trailing `/` or an
    /// existing folder) keeps its name; a folder's content goes under `dst`.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        progress: &dyn Progress,
    ) -> Result<TransferReport> {
        let src_loc = self.location(src)?;
        let dst_loc = self.location(dst)?;
        let op = self.operator(&src_loc)?;
        match self.kind(&op, &src_loc).await? {
            Kind::File(meta) => {
                let target = self.file_target(&src_loc, &dst_loc).await?;
                progress.plan(1, meta.content_length());
                let size = self
                    .copy_file(&src_loc, &meta, &target, progress, None)
                    .await?;
                Ok(TransferReport {
                    copied: vec![Uploaded {
                        uri: target.uri(),
                        size,
                    }],
                    ..TransferReport::default()
                })
            }
            Kind::Folder => {
                self.copy_folder(&op, &src_loc, &dst_loc.as_folder(), progress)
                    .await
            }
        }
    }

    /// Makes the folder `dst` hold what the folder `src` holds: copies files missing in `dst`
    /// or differing in size or older there; deletes files `src` lacks only if `delete_extra`.
    pub async fn sync(
        &self,
        src: &str,
        dst: &str,
        delete_extra: bool,
        progress: &dyn Progress,
    ) -> Result<TransferReport> {
        let src_loc = self.location(src)?;
        let dst_loc = self.location(dst)?.as_folder();
        let src_op = self.operator(&src_loc)?;
        let dst_op = self.operator(&dst_loc)?;
        let src_files = match self.kind(&src_op, &src_loc).await? {
            Kind::File(meta) => {
                let name = src_loc.file_name().unwrap_or_default().to_string();
                let mut parent = src_loc.clone();
                parent.path.truncate(parent.path.len() - name.len());
                return self
                    .sync_files(
                        &parent,
                        BTreeMap::from([(name, meta)]),
                        &dst_loc,
                        &dst_op,
                        false,
                        progress,
                    )
                    .await;
            }
            Kind::Folder => self.files_under(&src_op, &src_loc).await?,
        };
        self.sync_files(
            &src_loc.as_folder(),
            src_files,
            &dst_loc,
            &dst_op,
            delete_extra,
            progress,
        )
        .await
    }

    async fn sync_files(
        &self,
        src: &Location,
        src_files: BTreeMap<String, Metadata>,
        dst: &Location,
        dst_op: &Operator,
        delete_extra: bool,
        progress: &dyn Progress,
    ) -> Result<TransferReport> {
        let dst_files = self.files_under(dst_op, dst).await?;
        let mut todo = BTreeMap::new();
        let mut report = TransferReport::default();
        for (rel, meta) in &src_files {
            match dst_files.get(rel) {
                Some(have) if same_content(meta, have) => report.skipped += 1,
                _ => {
                    todo.insert(rel.clone(), meta.clone());
                }
            }
        }
        let copied = self.copy_many(src, todo, dst, progress).await?;
        report.copied = copied;
        if delete_extra {
            for rel in dst_files.keys().filter(|rel| !src_files.contains_key(*rel)) {
                let loc = dst.join(rel);
                dst_op
                    .delete(&loc.path)
                    .await
                    .map_err(|e| StorageError::remote(&loc.uri(), e))?;
                report.deleted.push(loc.uri());
            }
        }
        Ok(report)
    }

    /// Deletes a file, or a folder with everything under it. Returns how many files went.
    pub async fn delete(&self, uri: &str) -> Result<u64> {
        let loc = self.location(uri)?;
        let op = self.operator(&loc)?;
        match self.kind(&op, &loc).await? {
            Kind::File(_) => {
                op.delete(&loc.path)
                    .await
                    .map_err(|e| StorageError::remote(uri, e))?;
                Ok(1)
            }
            Kind::Folder => {
                let folder = loc.as_folder();
                let count = self.files_under(&op, &folder).await?.len() as u64;
                op.delete_with(&folder.path)
                    .recursive(true)
                    .await
                    .map_err(|e| StorageError::remote(uri, e))?;
                Ok(count)
            }
        }
    }

    /// Where a file copied to `dst` goes: into it if it is a folder, else `dst` itself.
    async fn file_target(&self, src: &Location, dst: &Location) -> Result<Location> {
        let name = src.file_name().unwrap_or("file");
        if dst.is_folder_syntax() {
            return Ok(dst.join(name));
        }
        let op = self.operator(dst)?;
        match op.stat(&dst.path).await {
            Ok(meta) if meta.is_dir() => Ok(dst.join(name)),
            _ => Ok(dst.clone()),
        }
    }

    async fn copy_folder(
        &self,
        op: &Operator,
        src: &Location,
        dst: &Location,
        progress: &dyn Progress,
    ) -> Result<TransferReport> {
        let files = self.files_under(op, src).await?;
        if let Some(local) = dst.local_path() {
            // An empty source still yields its (empty) destination folder.
            tokio::fs::create_dir_all(&local)
                .await
                .map_err(|e| StorageError::local(&local, e))?;
        }
        let copied = self
            .copy_many(&src.as_folder(), files, dst, progress)
            .await?;
        Ok(TransferReport {
            copied,
            ..TransferReport::default()
        })
    }

    async fn copy_many(
        &self,
        src: &Location,
        files: BTreeMap<String, Metadata>,
        dst: &Location,
        progress: &dyn Progress,
    ) -> Result<Vec<Uploaded>> {
        progress.plan(
            files.len() as u64,
            files.values().map(Metadata::content_length).sum(),
        );
        let jobs = files.into_iter().map(|(rel, meta)| {
            let from = src.join(&rel);
            let to = dst.join(&rel);
            async move {
                let size = self.copy_file(&from, &meta, &to, progress, None).await?;
                Ok::<_, StorageError>(Uploaded {
                    uri: to.uri(),
                    size,
                })
            }
        });
        let mut copied: Vec<Uploaded> = futures::stream::iter(jobs)
            .buffer_unordered(CONCURRENT_FILES)
            .try_collect()
            .await?;
        copied.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(copied)
    }
}

/// Every regular file and link under the local folder `root`, as (relative `/`-separated
/// path, is a link), links not followed; a missing folder is empty. Bounded by
/// [`MAX_LISTED`].
fn walk_local(root: &Path) -> Result<Vec<(String, bool)>> {
    let mut found = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    let mut listed = 0;
    while let Some((dir, prefix)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.is_empty() => {
                return Ok(found);
            }
            Err(e) => return Err(StorageError::local(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::local(&dir, e))?;
            listed += 1;
            if listed > MAX_LISTED {
                return Err(StorageError::TooManyEntries {
                    uri: format!("file://{}", root.display()),
                    limit: MAX_LISTED,
                });
            }
            let kind = entry
                .file_type()
                .map_err(|e| StorageError::local(entry.path(), e))?;
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if kind.is_symlink() {
                found.push((rel, true));
            } else if kind.is_dir() {
                pending.push((entry.path(), format!("{rel}/")));
            } else if kind.is_file() {
                found.push((rel, false));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn entry(loc: &Location, path: String, meta: &Metadata) -> Entry {
    Entry {
        uri: loc.uri(),
        path,
        is_dir: meta.is_dir(),
        size: meta.content_length(),
        last_modified: meta.last_modified().map(|t| t.to_string()),
        etag: meta.etag().map(str::to_string),
    }
}

/// The distinct top-level paths a folder copy created under `dest_dir`.
fn top_level(dest_dir: &Path, report: &TransferReport, target: &Location) -> Vec<PathBuf> {
    let prefix = target.uri();
    let mut tops: Vec<PathBuf> = Vec::new();
    for c in &report.copied {
        let rel = c.uri.strip_prefix(&prefix).unwrap_or(&c.uri);
        let first = rel.split('/').next().unwrap_or(rel);
        let top = dest_dir.join(first);
        if !tops.contains(&top) {
            tops.push(top);
        }
    }
    tops
}
