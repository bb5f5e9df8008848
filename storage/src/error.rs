//! The one error type of the crate: every variant names the value that was wrong.

use std::path::PathBuf;

/// What went wrong with a storage URI or a transfer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid uri \"{uri}\": unknown scheme {scheme}")]
    UnknownScheme { uri: String, scheme: String },
    #[error("invalid uri \"{uri}\": unknown rclone remote {remote}")]
    UnknownRemote { uri: String, remote: String },
    #[error("invalid uri \"{uri}\": {reason}")]
    MalformedUri { uri: String, reason: String },
    #[error("invalid action \"{action}\" in \"{uri}\": {reason}")]
    BadAction {
        uri: String,
        action: String,
        reason: String,
    },
    #[error("rclone config: {reason}")]
    RcloneConfig { reason: String },
    #[error("rclone remote {remote}: {reason}")]
    BadRemote { remote: String, reason: String },
    #[error("{uri}: no such object")]
    NotFound { uri: String },
    #[error("{uri}: no such bucket or container")]
    NoSuchBucket { uri: String },
    #[error("{uri}: access denied: {source}")]
    Denied {
        uri: String,
        #[source]
        source: opendal::Error,
    },
    #[error("{uri}: {op} is not supported by this storage")]
    Unsupported { uri: String, op: &'static str },
    #[error("{uri}: {source}")]
    Remote {
        uri: String,
        #[source]
        source: opendal::Error,
    },
    #[error("{uri}: read failed: {source}")]
    Read {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: size mismatch after transfer: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        uri: String,
        expected: u64,
        actual: u64,
    },
    #[error("{uri}: md5 mismatch after transfer: expected {expected}, got {actual}")]
    ChecksumMismatch {
        uri: String,
        expected: String,
        actual: String,
    },
    #[error("{uri}: the listing stopped after {limit} entries")]
    TooManyEntries { uri: String, limit: usize },
    #[error("{uri}: refusing the name {name:?}: it leaves its folder")]
    EscapingName { uri: String, name: String },
    #[error("{}: is a symbolic link, not a folder: links are not followed", path.display())]
    LinkedFolder { path: PathBuf },
    #[error("{uri}: ENA: {reason}")]
    Ena { uri: String, reason: String },
    #[error(
        "invalid project accession \"{project}\": expected PRJEB, PRJNA, PRJDB, ERP, SRP or DRP and digits"
    )]
    BadProject { project: String },
    #[error("ENA project {project}: {reason}")]
    EnaProject { project: String, reason: String },
    #[error("action {action} on {}: {reason}", path.display())]
    ActionFailed {
        action: String,
        path: PathBuf,
        reason: String,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps an opendal error on `uri`, sorting out the kinds a user acts on differently.
    pub(crate) fn remote(uri: &str, source: opendal::Error) -> StorageError {
        let uri = uri.to_string();
        match source.kind() {
            opendal::ErrorKind::NotFound => StorageError::NotFound { uri },
            _ if source.to_string().contains("NoSuchBucket")
                || source.to_string().contains("ContainerNotFound") =>
            {
                StorageError::NoSuchBucket { uri }
            }
            opendal::ErrorKind::PermissionDenied => StorageError::Denied { uri, source },
            _ if looks_like_denied(&source) => StorageError::Denied { uri, source },
            _ => StorageError::Remote { uri, source },
        }
    }

    pub(crate) fn local(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Local {
            path: path.into(),
            source,
        }
    }

    /// True when the data could not be fetched whole from its source (a remote error, or a
    /// size or md5 mismatch after the transfer).
    pub fn is_transfer_failure(&self) -> bool {
        matches!(
            self,
            StorageError::Remote { .. }
                | StorageError::Read { .. }
                | StorageError::SizeMismatch { .. }
                | StorageError::ChecksumMismatch { .. }
        )
    }

    /// For a `run+fastq://` download: true when ENA could not deliver the run (its file
    /// report failed, lists no FASTQ for it, or a file could not be fetched whole), so another
    /// source may; false for a bad URI or action, or a local problem, which no other source
    /// would fix.
    pub fn ena_may_fall_back(&self) -> bool {
        self.is_transfer_failure()
            || matches!(
                self,
                StorageError::Ena { .. }
                    | StorageError::NotFound { .. }
                    | StorageError::NoSuchBucket { .. }
                    | StorageError::Denied { .. }
                    | StorageError::Unsupported { .. }
            )
    }

    /// True when the object (or folder) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StorageError::NotFound { .. } | StorageError::NoSuchBucket { .. }
        )
    }
}

/// Some services report a refused login as a generic error (FTP's 530 reply, for one; the
/// ssh client's "Permission denied (publickey)" for SFTP, a few sources down the chain).
fn looks_like_denied(e: &opendal::Error) -> bool {
    let text = e.to_string();
    if text.contains("530")
        || text.contains("Login incorrect")
        || text.contains("Authentication failed")
    {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.to_string().contains("Permission denied (") {
            return true;
        }
        source = cause.source();
    }
    false
}
