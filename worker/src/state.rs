//! What the agent keeps on disk per execution: the work dir layout and `state.json` (read at
//! startup by `scan.rs` to learn what a previous agent process left behind).
//!
//! `WORK_DIR/exec-<id>/` holds `input/ output/ tmp/ resource/`, the spool files `stdout.log`
//! and `stderr.log`, `state.json`, and `exit` when the supervisor recorded a native task's end
//! while no agent was connected. `state.json` is written (in place, never fsynced) when
//! the process starts (with its pid) and when it ends (with its final report), then marked
//! acknowledged once the server has committed the final report.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, openat};
use scitq_proto::v1::{ExecutionState, ExecutionUpdate, FailureClass};
use serde::{Deserialize, Serialize};

/// The server's id of one execution (one attempt of a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub i64);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Paths of one execution's work dir.
#[derive(Debug, Clone)]
pub struct ExecDir {
    root: PathBuf,
}

impl ExecDir {
    const PREFIX: &'static str = "exec-";

    pub fn new(work_dir: &Path, id: ExecutionId) -> Self {
        ExecDir {
            root: work_dir.join(format!("{}{id}", Self::PREFIX)),
        }
    }

    /// The layout of a work dir at any path (a spare, see `spares`).
    pub fn at(root: PathBuf) -> Self {
        ExecDir { root }
    }

    pub(crate) fn parse_id(name: &str) -> Option<ExecutionId> {
        name.strip_prefix(Self::PREFIX)?
            .parse()
            .ok()
            .map(ExecutionId)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn input(&self) -> PathBuf {
        self.root.join("input")
    }
    pub fn output(&self) -> PathBuf {
        self.root.join("output")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn resource(&self) -> PathBuf {
        self.root.join("resource")
    }
    pub fn log(&self, stream: Stream) -> PathBuf {
        self.root.join(match stream {
            Stream::Stdout => "stdout.log",
            Stream::Stderr => "stderr.log",
        })
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }
}

/// The name of an execution's state file in its work dir.
pub const STATE_FILE: &str = "state.json";

/// One of the two output streams of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn to_proto(self) -> scitq_proto::v1::OutputStream {
        match self {
            Stream::Stdout => scitq_proto::v1::OutputStream::Stdout,
            Stream::Stderr => scitq_proto::v1::OutputStream::Stderr,
        }
    }
}

/// Why a finished execution failed, as far as the agent can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The command exited non-zero, died of a signal, or could not start.
    Run,
    /// The server asked for it to be killed.
    Killed,
    /// It ran past its time limit.
    Timeout,
    /// Its inputs or resources could not be staged.
    Download,
    /// Its output folder could not be uploaded.
    Upload,
    /// The server took it back before it started (an edit, a stopped batch): reported
    /// canceled, not failed.
    Recalled,
}

/// One input URI (its actions left out) as the store listed it before the download: each
/// file's path, size, etag and modification time. A resume compares it with what the URI
/// holds then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputSeen {
    pub uri: String,
    pub files: Vec<SeenFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeenFile {
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl InputSeen {
    pub fn to_proto(&self) -> scitq_proto::v1::StagedInput {
        scitq_proto::v1::StagedInput {
            uri: self.uri.clone(),
            files: self
                .files
                .iter()
                .map(|f| scitq_proto::v1::RemoteFile {
                    path: f.path.clone(),
                    size: f.size,
                    etag: f.etag.clone(),
                    modified: f.modified.clone(),
                })
                .collect(),
        }
    }
}

/// The result of a finished execution: what its final update says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReport {
    /// `None` when it succeeded.
    pub failure: Option<Failure>,
    pub exit_code: Option<i32>,
    pub message: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Files uploaded from the output folder: URI and size.
    #[serde(default)]
    pub uploaded: Vec<(String, u64)>,
    /// What the inputs' URIs held when they were staged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSeen>,
}

impl FinalReport {
    pub fn failed(failure: Failure, message: impl Into<String>) -> Self {
        FinalReport {
            failure: Some(failure),
            exit_code: None,
            message: message.into(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            uploaded: Vec::new(),
            inputs: Vec::new(),
        }
    }

    pub fn state(&self) -> ExecutionState {
        match self.failure {
            None => ExecutionState::Succeeded,
            Some(Failure::Recalled) => ExecutionState::Canceled,
            Some(_) => ExecutionState::Failed,
        }
    }

    pub fn bytes(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Stdout => self.stdout_bytes,
            Stream::Stderr => self.stderr_bytes,
        }
    }

    pub fn to_update(&self, id: ExecutionId) -> ExecutionUpdate {
        let failure = match self.failure {
            None => FailureClass::Unspecified,
            Some(Failure::Run) => FailureClass::Run,
            Some(Failure::Killed) => FailureClass::Killed,
            Some(Failure::Timeout) => FailureClass::Timeout,
            Some(Failure::Download) => FailureClass::Download,
            Some(Failure::Upload) => FailureClass::Upload,
            Some(Failure::Recalled) => FailureClass::Recalled,
        };
        ExecutionUpdate {
            execution_id: id.0,
            state: self.state() as i32,
            exit_code: self.exit_code,
            failure: failure as i32,
            message: self.message.clone(),
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            uploaded: self
                .uploaded
                .iter()
                .map(|(uri, size)| scitq_proto::v1::UploadedFile {
                    uri: uri.clone(),
                    size: *size,
                })
                .collect(),
            inputs: self.inputs.iter().map(|i| i.to_proto()).collect(),
        }
    }
}

/// Where an execution stands, as recorded in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The process was started with this pid, which is also its process group id; or, for a
    /// container task, the container was created (pid 0) and may run.
    Running {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        /// The task's run time limit, so a re-attached container still gets it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_timeout_s: Option<u64>,
        /// Where `output/` goes after the run, so a re-attached container still uploads it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        output: String,
        /// Bytes the agent wrote at the head of stderr before the command's own output (where
        /// the inputs came from), so a re-attached container's logs are matched past them.
        #[serde(default, skip_serializing_if = "is_zero")]
        stderr_preamble: u64,
    },
    /// It ended; the server may not have committed the report yet.
    Finished {
        report: FinalReport,
        acknowledged: bool,
    },
    /// Given up by the agent (killed at agent shutdown or found orphaned at startup); the
    /// server fails it as lost.
    Abandoned,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub execution_id: ExecutionId,
    pub task_id: i64,
    #[serde(flatten)]
    pub phase: Phase,
}

impl StateFile {
    /// Overwrites `state.json` in place (see [`StateWriter`]). Blocking: call from
    /// `spawn_blocking`.
    pub fn write(&self, dir: &ExecDir) -> io::Result<()> {
        StateWriter::open(dir)?.write(self)
    }

    /// Blocking.
    pub fn read(dir: &ExecDir) -> io::Result<StateFile> {
        let text = std::fs::read(dir.state_file())?;
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// An open `state.json`, for an execution that writes it more than once (running, then
/// finished) without opening it again.
///
/// Each write overwrites the file in place with one write, padded with spaces (valid JSON
/// whitespace) to the old length, so the file is never truncated and never half old, half
/// new. Not a temporary file and a rename: that allocates an inode per write (see `spares`
/// for why it matters); nor a truncation: ext4 flushes a file truncated to zero on close.
/// Blocking: call from `spawn_blocking`, or where a moment's blocking is already the price (a
/// native task's start and end, see `start` in `executor/native.rs`).
#[derive(Debug)]
pub struct StateWriter {
    file: std::fs::File,
    /// The file's length.
    len: usize,
}

impl StateWriter {
    pub fn open(dir: &ExecDir) -> io::Result<StateWriter> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.state_file())?;
        StateWriter::from_file(file)
    }

    /// Opens the `state.json` of the work dir open at `root` (not through a symbolic link).
    pub fn open_in(root: &OwnedFd) -> io::Result<StateWriter> {
        StateWriter::from_file(open_for_writing(root, STATE_FILE)?)
    }

    fn from_file(file: std::fs::File) -> io::Result<StateWriter> {
        let len = file.metadata()?.len() as usize;
        Ok(StateWriter { file, len })
    }

    pub fn write(&mut self, state: &StateFile) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        text.push(b'\n');
        if text.len() < self.len {
            text.resize(self.len, b' ');
        }
        self.file.write_all_at(&text, 0)?;
        self.len = text.len();
        Ok(())
    }
}

/// The containers of the work dir's executions that `state.json` says may run. Blocking.
pub fn running_containers(work_dir: &Path) -> io::Result<Vec<(ExecutionId, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(work_dir)? {
        let Some(id) = entry?.file_name().to_str().and_then(ExecDir::parse_id) else {
            continue;
        };
        if let Ok(StateFile {
            execution_id,
            phase:
                Phase::Running {
                    container: Some(container),
                    ..
                },
            ..
        }) = StateFile::read(&ExecDir::new(work_dir, id))
            && execution_id == id
        {
            found.push((id, container));
        }
    }
    Ok(found)
}

/// Opens the regular file `name` of `dir` for writing (and reading: the agent tails the logs a
/// task writes to), created when missing, never through a
/// symbolic link (a task may have left one in its place).
pub(crate) fn open_for_writing<P: rustix::path::Arg>(
    dir: &OwnedFd,
    name: P,
) -> io::Result<std::fs::File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(openat(dir, name, flags, Mode::from_raw_mode(0o666))?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(work: &Path, id: i64, phase: Phase) {
        let dir = ExecDir::new(work, ExecutionId(id));
        std::fs::create_dir_all(dir.root()).unwrap();
        StateFile {
            execution_id: ExecutionId(id),
            task_id: id * 10,
            phase,
        }
        .write(&dir)
        .unwrap();
    }

    #[test]
    fn a_shorter_state_overwrites_a_longer_one_cleanly() {
        let work = tempfile::tempdir().unwrap();
        let report = FinalReport::failed(Failure::Run, "x".repeat(500));
        write(
            work.path(),
            1,
            Phase::Finished {
                report,
                acknowledged: false,
            },
        );
        let running = Phase::Running {
            pid: 7,
            container: None,
            run_timeout_s: None,
            output: String::new(),
            stderr_preamble: 0,
        };
        write(work.path(), 1, running.clone());
        let dir = ExecDir::new(work.path(), ExecutionId(1));
        assert_eq!(StateFile::read(&dir).unwrap().phase, running);
    }
}
