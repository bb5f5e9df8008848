//! [`Storage`]: every operation on URIs, streaming, retried, and verified.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use opendal::{EntryMode, Metadata, Operator};
use serde::Serialize;

use crate::actions::{self, Action};
use crate::backend;
use crate::error::{Result, StorageError};
use crate::progress::Progress;
use crate::rclone::Remotes;
use crate::uri::{EnvDefaults, Location, Service, parse_location};

/// Transfers move in chunks of this size: memory per transfer stays around
/// `CHUNK * CONCURRENT_CHUNKS`, whatever the file size.
const CHUNK: usize = 8 * 1024 * 1024;
/// Multipart parts of one file written at the same time (reads are one streaming GET).
const CONCURRENT_CHUNKS: usize = 4;
/// Files of a folder transferred at the same time.
const CONCURRENT_FILES: usize = 4;

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

    fn operator(&self, loc: &Location) -> Result<Operator> {
        let mut operators = self.operators.lock().expect("operator cache lock");
        if let Some(op) = operators.get(&loc.service) {
            return Ok(op.clone());
        }
        let op = backend::build(loc)?;
        operators.insert(loc.service.clone(), op.clone());
        Ok(op)
    }

    async fn kind(&self, op: &Operator, loc: &Location) -> Result<Kind> {
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
        loop {
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
        let mut lister = match op.lister_with(&folder.path).recursive(true).await {
            Ok(lister) => lister,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StorageError::remote(&uri, e)),
        };
        let mut files = BTreeMap::new();
        while let Some(entry) = lister
            .try_next()
            .await
            .map_err(|e| StorageError::remote(&uri, e))?
        {
            if entry.metadata().mode() != EntryMode::FILE {
                continue;
            }
            let rel = entry.path()[folder.path.len()..].to_string();
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
            self.copy_file(&loc, &meta, &dest.join(&name), progress, Some(&file.md5))
                .await?;
            paths.push(dest_dir.join(name));
        }
        Ok(paths)
    }

    /// Uploads everything under the local folder `local_dir` to the folder `dst`.
    pub async fn upload_dir(
        &self,
        local_dir: &Path,
        dst: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<Uploaded>> {
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

    /// Streams one file, then checks the size written (and the md5 when the caller, the
    /// source or the destination states one).
    async fn copy_file(
        &self,
        src: &Location,
        meta: &Metadata,
        dst: &Location,
        progress: &dyn Progress,
        expected_md5: Option<&str>,
    ) -> Result<u64> {
        let src_uri = src.uri();
        let dst_uri = dst.uri();
        let src_op = self.operator(src)?;
        let dst_op = self.operator(dst)?;
        let expected = meta.content_length();
        let name = dst.file_name().unwrap_or_default().to_string();
        progress.start(&name, Some(expected));
        let reader = src_op
            .reader_with(&src.path)
            // One streaming GET: ranged reads in parallel made moto (and servers that slice
            // the whole object per range) many times slower on large files.
            .await
            .map_err(|e| StorageError::remote(&src_uri, e))?;
        let mut stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| StorageError::remote(&src_uri, e))?;
        if expected == 0 && meta.is_file() {
            return self
                .copy_empty(&src_op, src, &dst_op, dst, &name, progress)
                .await;
        }
        let mut writer = dst_op
            .writer_with(&dst.path)
            .chunk(CHUNK)
            .concurrent(CONCURRENT_CHUNKS)
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let mut md5 = Md5::new();
        let mut done = 0u64;
        let copied: Result<()> = async {
            while let Some(bytes) = stream.try_next().await.map_err(|e| StorageError::Read {
                uri: src_uri.clone(),
                source: e,
            })? {
                md5.update(&bytes);
                let len = bytes.len() as u64;
                writer
                    .write(bytes)
                    .await
                    .map_err(|e| StorageError::remote(&dst_uri, e))?;
                done += len;
                progress.advance(len);
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .close()
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let written = dst_op
            .stat(&dst.path)
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let digest = hex::encode(md5.finalize());
        let checks = Checks {
            src: meta,
            dst: &written,
            done,
            digest,
            expected_md5,
        };
        if let Err(e) = checks.verify(&src_uri, &dst_uri) {
            // A copy that failed its check is not left where it would be taken as good.
            let _ = dst_op.delete(&dst.path).await;
            return Err(e);
        }
        progress.finish(&name);
        tracing::debug!(src = %src_uri, dst = %dst_uri, bytes = done, "copied");
        Ok(done)
    }
}

impl Storage {
    /// An empty file: one plain write (some services create nothing for a writer that was
    /// never written to), after checking the source really is empty.
    async fn copy_empty(
        &self,
        src_op: &Operator,
        src: &Location,
        dst_op: &Operator,
        dst: &Location,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let content = src_op
            .read(&src.path)
            .await
            .map_err(|e| StorageError::remote(&src.uri(), e))?;
        if !content.is_empty() {
            return Err(StorageError::SizeMismatch {
                uri: src.uri(),
                expected: 0,
                actual: content.len() as u64,
            });
        }
        match &dst.service {
            Service::Ftp {
                endpoint,
                user,
                password,
            } => {
                crate::ftp_empty::create_empty(
                    &dst.uri(),
                    endpoint,
                    user.as_deref(),
                    password.as_deref(),
                    &dst.path,
                )
                .await?
            }
            _ => dst_op
                .write(&dst.path, Vec::<u8>::new())
                .await
                .map(|_| ())
                .map_err(|e| StorageError::remote(&dst.uri(), e))?,
        }
        let written = dst_op
            .stat(&dst.path)
            .await
            .map_err(|e| StorageError::remote(&dst.uri(), e))?;
        if written.content_length() != 0 {
            return Err(StorageError::SizeMismatch {
                uri: dst.uri(),
                expected: 0,
                actual: written.content_length(),
            });
        }
        progress.finish(name);
        Ok(0)
    }
}

/// What a finished copy is checked against.
struct Checks<'a> {
    src: &'a Metadata,
    dst: &'a Metadata,
    /// Bytes that went through.
    done: u64,
    /// md5 of the bytes that went through.
    digest: String,
    /// md5 stated by the caller (ENA's, for one).
    expected_md5: Option<&'a str>,
}

impl Checks<'_> {
    /// Size read = size stated = size the destination reports; md5 = every md5 stated.
    fn verify(&self, src_uri: &str, dst_uri: &str) -> Result<()> {
        let expected = self.src.content_length();
        let size_known =
            expected > 0 || self.src.last_modified().is_some() || self.src.etag().is_some();
        for (actual, what) in [(self.done, src_uri), (self.dst.content_length(), dst_uri)] {
            if size_known && actual != expected {
                return Err(StorageError::SizeMismatch {
                    uri: what.to_string(),
                    expected,
                    actual,
                });
            }
        }
        let given = self.expected_md5.map(str::to_ascii_lowercase);
        for (stated, uri) in [
            (given, src_uri),
            (md5_of(self.src), src_uri),
            (md5_of(self.dst), dst_uri),
        ] {
            if let Some(stated) = stated
                && stated != self.digest
            {
                return Err(StorageError::ChecksumMismatch {
                    uri: uri.to_string(),
                    expected: stated,
                    actual: self.digest.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The md5 a service states for an object: Content-MD5, or an S3-style single-part etag.
fn md5_of(meta: &Metadata) -> Option<String> {
    use base64::Engine;
    if let Some(b64) = meta.content_md5()
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64)
        && raw.len() == 16
    {
        return Some(hex::encode(raw));
    }
    let etag = meta
        .etag()?
        .trim_matches('"')
        .trim_start_matches("W/")
        .trim_matches('"');
    (etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase())
}

/// Sync's notion of "already there": same size, and the copy is not older than the source
/// (to the second: object stores keep whole seconds).
fn same_content(src: &Metadata, dst: &Metadata) -> bool {
    if src.content_length() != dst.content_length() {
        return false;
    }
    match (src.last_modified(), dst.last_modified()) {
        (Some(s), Some(d)) => d.into_inner().as_second() >= s.into_inner().as_second(),
        _ => true,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64, etag: Option<&str>, mtime: Option<i64>) -> Metadata {
        let mut meta = opendal::MetadataBuilder::file(len);
        if let Some(etag) = etag {
            meta.etag(etag);
        }
        if let Some(secs) = mtime {
            meta.last_modified(opendal::raw::Timestamp::from_second(secs).unwrap());
        }
        meta.build()
    }

    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

    fn checks<'a>(
        src: &'a Metadata,
        dst: &'a Metadata,
        done: u64,
        expected: Option<&'a str>,
    ) -> Checks<'a> {
        Checks {
            src,
            dst,
            done,
            digest: MD5_ABC.to_string(),
            expected_md5: expected,
        }
    }

    #[test]
    fn md5_from_single_part_etags_only() {
        assert_eq!(
            md5_of(&file(3, Some(&format!("\"{MD5_ABC}\"")), None)),
            Some(MD5_ABC.to_string())
        );
        assert_eq!(
            md5_of(&file(3, Some("\"abc-2\""), None)),
            None,
            "multipart etags are not md5s"
        );
        assert_eq!(md5_of(&file(3, None, None)), None);
    }

    #[test]
    fn verification_names_what_differs() {
        let good = file(3, Some(MD5_ABC), Some(10));
        assert!(
            checks(&good, &good, 3, Some(MD5_ABC))
                .verify("s", "d")
                .is_ok()
        );
        let short = file(2, None, Some(10));
        let err = checks(&good, &short, 3, None).verify("s", "d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d: size mismatch after transfer: expected 3 bytes, got 2"
        );
        let err = checks(&good, &good, 2, None).verify("s", "d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "s: size mismatch after transfer: expected 3 bytes, got 2"
        );
        let other = "0".repeat(32);
        let err = checks(&good, &good, 3, Some(&other))
            .verify("s", "d")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("s: md5 mismatch after transfer: expected {other}, got {MD5_ABC}")
        );
    }

    #[test]
    fn sync_compares_size_then_whole_seconds() {
        assert!(same_content(
            &file(3, None, Some(10)),
            &file(3, None, Some(10))
        ));
        assert!(same_content(
            &file(3, None, Some(10)),
            &file(3, None, Some(11))
        ));
        assert!(
            !same_content(&file(3, None, Some(11)), &file(3, None, Some(10))),
            "source newer"
        );
        assert!(
            !same_content(&file(3, None, Some(10)), &file(4, None, Some(10))),
            "size differs"
        );
    }
}
