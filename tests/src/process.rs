//! Child processes whose output goes to a log file, killed by PID, never by name.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A started program, with stdout and stderr appended to one log file.
///
/// Dropping it kills the program and every process it started that is still running
/// (tasks run in their own process groups, so killing the program alone would leave them).
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Descendants seen when the program was killed, killed in turn on drop.
    orphans: Vec<Pid>,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let _ = writeln!(file, "=== [harness] starting {cmd:?}");
        let stderr = file.try_clone().expect("clone a log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            orphans: Vec::new(),
        }
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("process was started");
        Pid::from_raw(child.id() as i32)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status if the program has ended (reaping it), else `None`.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("poll a child process")
    }

    /// Waits at most `timeout` for the program to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the program alone (its tasks, if any, live on as orphans, as they would
    /// after a crash), then reaps it.
    pub fn kill9(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let pid = self.pid();
        self.orphans.extend(descendants(pid));
        let _ = kill(pid, Signal::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    /// The processes it left behind at a [`Proc::kill9`], handed to the program started
    /// again in its place (an agent adopts the tasks its previous process left).
    pub fn take_orphans(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.orphans)
    }

    /// Makes this program answer for `orphans` (see [`Proc::take_orphans`]).
    pub fn add_orphans(&mut self, orphans: Vec<Pid>) {
        self.orphans.extend(orphans);
    }

    /// SIGTERM, then SIGKILL if the program is still there after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Some(status);
        }
        let _ = kill(self.pid(), Signal::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        eprintln!(
            "[harness] {} did not stop within {grace:?} of SIGTERM; sending SIGKILL",
            self.name
        );
        self.kill9();
        None
    }

    /// Prints the end of the log, with a header naming the program.
    pub fn print_log_tail(&self, lines: usize) {
        eprintln!(
            "----- [harness] last {lines} lines of {} log ({}) -----\n{}\n----- end of {} log -----",
            self.name,
            self.log.display(),
            log_tail(&self.log, lines),
            self.name
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() && self.try_exit().is_none() {
            let pid = self.pid();
            self.orphans.extend(descendants(pid));
            let _ = kill(pid, Signal::SIGKILL);
            if let Some(child) = self.child.as_mut() {
                let _ = child.wait();
            }
        }
        // What the orphans started since (an agent's supervisor runs tasks) goes too.
        let mut orphans = std::mem::take(&mut self.orphans);
        for pid in orphans.clone() {
            orphans.extend(descendants(pid));
        }
        for pid in orphans {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// The last `lines` lines of a log file (or why it could not be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Every live process descended from `root`, read from /proc.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_pid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(Pid::from_raw(child));
            todo.push(child);
        }
    }
    found
}

/// One process of a group, from /proc/PID/stat: its pid, state letter and parent.
struct Member {
    pid: i32,
    state: char,
    ppid: i32,
}

/// The live (not zombie) processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp: i32 = fields.next()?.parse().ok()?;
            (pgrp == pgid && state != 'Z').then_some(Member { pid, state, ppid })
        })
        .collect()
}

/// Whether every process of group `pgid` is stopped by a signal, and if not, which is not.
///
/// A process in `D` whose child in the group is stopped counts as stopped: a SIGSTOP that
/// lands while a shell is in `vfork` stops the child, and the parent waits (uninterruptibly,
/// hence `D`) for that child to exec or exit, which it cannot do while stopped.
pub fn group_stopped(pgid: i32) -> Result<(), String> {
    let members = group_members(pgid);
    if members.is_empty() {
        return Err(format!("process group {pgid} has no live process"));
    }
    let stopped = |m: &Member| matches!(m.state, 'T' | 't');
    let in_vfork_of_stopped =
        |m: &Member| m.state == 'D' && members.iter().any(|c| c.ppid == m.pid && stopped(c));
    let running: Vec<String> = members
        .iter()
        .filter(|m| !stopped(m) && !in_vfork_of_stopped(m))
        .map(|m| format!("pid {} in state {}", m.pid, m.state))
        .collect();
    if running.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "process group {pgid} is not stopped: {}",
            running.join(", ")
        ))
    }
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parens, so cut at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a process in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Creates (truncating) a file, for flags that tasks wait on.
pub fn touch(path: &Path) {
    File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

/// Runs `cmd` to its end like [`Command::output`], but for at most `timeout`: past it the
/// program is killed and the test fails naming it, with what it printed so far.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}")));
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    // Read both pipes while waiting, or a chatty program blocks on a full pipe.
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = child.wait_exit(timeout);
    if status.is_none() {
        let _ = child.0.kill();
    }
    let output = Output {
        status: status.unwrap_or_else(|| child.0.wait().expect("reap a killed child")),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    if status.is_none() {
        panic!(
            "{cmd:?} did not end within {timeout:?}; stdout: {}; stderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// A child process the test talks to through pipes; killed (by PID) if still running on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits at most `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("poll a child process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
