//! Progress reporting: the CLI draws bars from it, the agent may log or ignore it.

/// Told about transfers as they go. Calls may come from several transfers at once.
pub trait Progress: Send + Sync {
    /// A batch is about to start: `files` files, `bytes` bytes in all.
    fn plan(&self, _files: u64, _bytes: u64) {}
    /// A file starts (`total` bytes when known).
    fn start(&self, _name: &str, _total: Option<u64>) {}
    /// `bytes` more bytes are through (a delta; files of a folder move concurrently).
    fn advance(&self, _bytes: u64) {}
    /// A file is through and verified.
    fn finish(&self, _name: &str) {}
}

/// Ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {}
