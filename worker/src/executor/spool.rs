//! Output on its way to the agent loop, for both runners: the spool files a container's logs
//! are appended to ([`Spool`]), the agent's own lines at the head of stderr
//! ([`announce_preamble`]) and the largest piece sent at once ([`CHUNK`]). A native task
//! writes its spool files itself; `native.rs` tails them.

use std::io;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::context::ExecEvent;
use crate::state::{ExecutionId, Stream};

/// Largest piece of output read (and sent) at once.
pub const CHUNK: usize = 64 * 1024;

/// A spool file being appended to, and how many bytes its stream has in all.
#[derive(Debug)]
pub(crate) struct Spool {
    file: tokio::fs::File,
    pub total: u64,
    ok: bool,
}

impl Spool {
    pub fn new(file: tokio::fs::File, total: u64) -> Spool {
        Spool {
            file,
            total,
            ok: true,
        }
    }

    /// Appends `data` to the file, then tells the agent loop.
    pub async fn write(
        &mut self,
        id: ExecutionId,
        stream: Stream,
        data: Bytes,
        events: &mpsc::Sender<ExecEvent>,
    ) {
        if data.is_empty() {
            return;
        }
        // The file must hold the bytes before the loop hears of them: replays read it.
        if self.ok
            && let Err(e) = append(&mut self.file, &data).await
        {
            tracing::warn!(execution_id = %id, ?stream, "cannot write spool file: {e}");
            self.ok = false;
        }
        let offset = self.total;
        self.total += data.len() as u64;
        let _ = events
            .send(ExecEvent::Output {
                id,
                stream,
                offset,
                data,
            })
            .await;
    }
}

/// Tells the agent loop about the lines the agent put at the head of stderr (already in the
/// spool file): after `Started`, as the contract wants, and before the command's output.
pub(crate) async fn announce_preamble(
    id: ExecutionId,
    preamble: Bytes,
    events: &mpsc::Sender<ExecEvent>,
) {
    if preamble.is_empty() {
        return;
    }
    let _ = events
        .send(ExecEvent::Output {
            id,
            stream: Stream::Stderr,
            offset: 0,
            data: preamble,
        })
        .await;
}

pub(crate) async fn append(log: &mut tokio::fs::File, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    log.write_all(data).await?;
    log.flush().await
}
