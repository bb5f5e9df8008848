//! The messages between the agent and its supervisor, and the socket that carries them: a
//! Unix `SOCK_SEQPACKET` socket (one message per packet, so no framing), JSON payloads, and the
//! two spool files of a task passed along its `Spawn` as file descriptors (`SCM_RIGHTS`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use crate::state::ExecutionId;

/// Bumped when a message changes meaning; a supervisor of another version is not used.
pub const VERSION: u32 = 1;

/// Largest message: a `Spawn` carries the task's command line.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Agent → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Run `argv` in its own process group, stdout and stderr on the two files passed along.
    Spawn {
        id: ExecutionId,
        argv: Vec<String>,
        cwd: PathBuf,
        env: Vec<(String, String)>,
        /// Tasks whose end the agent recorded since its last message: as `Done`, carried
        /// along rather than in a message each (a supervisor that does not know the field
        /// ignores it, and only keeps those ends longer).
        #[serde(default)]
        done: Vec<ExecutionId>,
    },
    /// The agent recorded the end of `id` in its `state.json`: the supervisor may forget it.
    Done { id: ExecutionId },
}

/// Supervisor → agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// First message of a connection: every task whose end no agent took yet, with its pid
    /// (those that ended follow as `Exited`).
    Hello {
        version: u32,
        held: Vec<(ExecutionId, u32)>,
    },
    Spawned {
        id: ExecutionId,
        pid: u32,
    },
    /// The task could not start.
    SpawnError {
        id: ExecutionId,
        error: SpawnError,
    },
    /// How a supervisor of an earlier build (one may outlive an agent upgrade) says
    /// `SpawnError`: as text. Read, never sent.
    SpawnFailed {
        id: ExecutionId,
        message: String,
    },
    Exited {
        id: ExecutionId,
        exit: Exit,
    },
}

/// Why the supervisor could not start a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpawnError {
    /// The request had no command, or not the two output files.
    #[error("bad spawn request: no command or not two output files")]
    BadRequest,
    /// `exec` failed (no such program, not executable, no such working directory...).
    #[error("cannot run {program:?}: {message}")]
    Exec {
        program: String,
        /// The OS error number, when there is one.
        errno: Option<i32>,
        message: String,
    },
    /// Said by a supervisor of an earlier build, in words only.
    #[error("{message}")]
    Earlier { message: String },
}

impl SpawnError {
    pub fn exec(program: &str, err: &io::Error) -> SpawnError {
        SpawnError::Exec {
            program: program.to_owned(),
            errno: err.raw_os_error(),
            message: err.to_string(),
        }
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    pub fn of(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

/// One end of the agent–supervisor socket.
#[derive(Debug)]
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wraps a connected, non-blocking socket. Must be called within the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Channel> {
        Ok(Channel { fd: watch(fd)? })
    }

    /// Sends one message, with `fds` attached.
    pub async fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes is over the limit of {MAX_MESSAGE}",
                    bytes.len()
                ),
            ));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() {
                    control.push(SendAncillaryMessage::ScmRights(fds));
                }
                rustix::net::sendmsg(
                    fd.get_ref(),
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message and the descriptors attached to it; `None` once the peer closed.
    pub async fn recv<T: for<'de> Deserialize<'de>>(
        &self,
        buf: &mut [u8],
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let received = guard.try_io(|fd| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let message = rustix::net::recvmsg(
                    fd.get_ref(),
                    &mut [IoSliceMut::new(buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                let mut fds = Vec::new();
                for part in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = part {
                        fds.extend(rights);
                    }
                }
                Ok((message.bytes, message.flags, fds))
            });
            let (len, flags, fds) = match received {
                Ok(result) => result?,
                Err(_would_block) => continue,
            };
            if len == 0 {
                return Ok(None);
            }
            if flags.contains(rustix::net::ReturnFlags::TRUNC) || len > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message truncated",
                ));
            }
            let message = serde_json::from_slice(&buf[..len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(Some((message, fds)));
        }
    }
}

/// Registers a socket with the runtime.
///
/// `AsyncFd::new` is deprecated for types that may not own their descriptor; an `OwnedFd`
/// does, and its replacement (`register`) is `unsafe`, which this crate forbids.
#[allow(deprecated)]
pub fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// The address of a socket file. A Unix socket path holds at most 107 bytes: a longer one
/// (a deep work dir) is reached through `/proc/self/fd/N/NAME`, N a descriptor of its folder,
/// which the caller keeps open until its bind or connect is done.
pub fn unix_addr(
    path: &std::path::Path,
) -> io::Result<(Option<OwnedFd>, rustix::net::SocketAddrUnix)> {
    use rustix::net::SocketAddrUnix;
    use std::os::unix::ffi::OsStrExt;
    const MAX: usize = 107;
    if path.as_os_str().as_bytes().len() <= MAX {
        return Ok((None, SocketAddrUnix::new(path)?));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "{} is no socket path",
            path.display()
        )));
    };
    let dir_fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let short = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir_fd)
    ))
    .join(name);
    Ok((Some(dir_fd), SocketAddrUnix::new(&short)?))
}

/// A new non-blocking, close-on-exec seqpacket socket.
pub fn socket() -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}
