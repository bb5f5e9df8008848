//! Output delivery. A read from a task's spool file goes out at once when the stream is up and that
//! output stream is caught up; otherwise it waits in the spool file, and `pump` replays it from
//! the file, one chunk in flight per stream, before the execution's final update.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use scitq_proto::v1::{OutputChunk, agent_message};

use super::{Agent, Conn, Phase, ReadDone, send_on, send_update_on};
use crate::executor::CHUNK;
use crate::outbox::is_final;
use crate::state::{ExecDir, ExecutionId, Stream};

fn chunk(id: ExecutionId, stream: Stream, offset: u64, data: Bytes) -> agent_message::Kind {
    agent_message::Kind::Output(OutputChunk {
        execution_id: id.0,
        stream: stream.to_proto() as i32,
        offset,
        data: Vec::from(data),
    })
}

impl Agent {
    pub(super) fn on_output(&mut self, id: ExecutionId, stream: Stream, offset: u64, data: Bytes) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let end = offset + data.len() as u64;
        let spool = &mut exec.streams[stream.index()];
        spool.written = spool.written.max(end);
        let Conn::Up { link, .. } = &self.conn else {
            return;
        };
        if matches!(exec.phase, Phase::Canceled) {
            return;
        }
        let live = !spool.reading && offset <= spool.sent && spool.sent < end;
        if live && !link.gauge.congested() {
            // A progress update waiting to be merged goes first: the server must not see a
            // task print before it knows the task runs.
            if self.outbox.unsent(id).is_some_and(|u| !is_final(u)) {
                send_update_on(&self.conn, &mut self.outbox, id);
            }
            let skip = (spool.sent - offset) as usize;
            let sent_at = spool.sent;
            spool.sent = end;
            send_on(
                &self.conn,
                &mut self.outbox,
                chunk(id, stream, sent_at, data.slice(skip..)),
            );
        } else if spool.sent < spool.written {
            self.pump(id);
        }
    }

    pub(super) fn pump_all(&mut self) {
        let mut ids: Vec<ExecutionId> = self.execs.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.pump(id);
        }
    }

    /// Moves `id` forward on an up session: its pending non-final update, then replays of
    /// spooled output, then its final update once all output has gone.
    pub(super) fn pump(&mut self, id: ExecutionId) {
        let Conn::Up { session, link, .. } = &self.conn else {
            return;
        };
        let session = *session;
        let congested = link.gauge.congested();
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        if matches!(exec.phase, Phase::Canceled) {
            return;
        }
        if self.outbox.unsent(id).is_some_and(|u| !is_final(u)) {
            send_update_on(&self.conn, &mut self.outbox, id);
        }
        for stream in Stream::BOTH {
            let spool = &mut exec.streams[stream.index()];
            if spool.reading || spool.sent >= spool.written || congested {
                continue;
            }
            spool.reading = true;
            let offset = spool.sent;
            let len = (spool.written - offset).min(CHUNK as u64) as usize;
            let path = ExecDir::new(&self.config.work_dir, id).log(stream);
            self.reads.spawn_blocking(move || {
                let data = read_at(&path, offset, len);
                ReadDone {
                    session,
                    id,
                    stream,
                    offset,
                    data,
                }
            });
        }
        let caught_up = exec
            .streams
            .iter()
            .all(|s| !s.reading && s.sent >= s.written);
        if caught_up && matches!(exec.phase, Phase::Finished(_)) {
            if self.queue.is_empty() || self.config.result_hold.is_zero() {
                send_update_on(&self.conn, &mut self.outbox, id);
            } else {
                // A queued task takes the freed slot without the server: this result may
                // wait a moment and travel (and be committed) with the next ones.
                self.hold_result(id);
            }
        }
    }

    pub(super) fn on_read(&mut self, done: ReadDone) {
        let ReadDone {
            session,
            id,
            stream,
            offset,
            data,
        } = done;
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        let spool = &mut exec.streams[stream.index()];
        spool.reading = false;
        let current = matches!(&self.conn, Conn::Up { session: s, .. } if *s == session);
        if !current || spool.sent != offset {
            self.pump(id);
            return;
        }
        match data {
            Ok(data) if !data.is_empty() => {
                spool.sent = offset + data.len() as u64;
                send_on(
                    &self.conn,
                    &mut self.outbox,
                    chunk(id, stream, offset, data),
                );
            }
            Ok(_) => {
                tracing::warn!(execution_id = %id, ?stream, missing = spool.written - offset,
                    "spool file is shorter than the output read; that output is lost");
                spool.sent = spool.written;
            }
            Err(e) => {
                tracing::warn!(execution_id = %id, ?stream, missing = spool.written - offset,
                    "cannot read spool file, that output is lost: {e}");
                spool.sent = spool.written;
            }
        }
        self.pump(id);
    }
}

/// Reads up to `len` bytes at `offset`. Blocking.
fn read_at(path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}
