//! Local instances as processes. Each one is its own process group; a record (name, flavor,
//! pid, the process's start time, tags) is kept in the state directory, so another process
//! (a restarted scitqd) lists and deletes the same instances. The start time guards against
//! a recycled pid: a record whose pid now names another process is a stopped instance.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{LocalConfig, REGION};
use crate::{Instance, InstanceId, InstanceSpec, InstanceState, ProviderError};

/// How long a process has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    flavor: String,
    pid: i32,
    /// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks after boot.
    start_ticks: u64,
    tags: BTreeMap<String, String>,
}

pub(super) struct Processes {
    provider: String,
    dir: PathBuf,
    /// Children this process started, kept to reap them (a restarted owner has none).
    children: Mutex<HashMap<String, tokio::process::Child>>,
}

impl Processes {
    pub(super) fn new(config: &LocalConfig) -> Result<Processes, ProviderError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| ProviderError::Io {
            provider: config.name.clone(),
            operation: "create the state directory",
            source,
        })?;
        Ok(Processes {
            provider: config.name.clone(),
            dir: config.state_dir.clone(),
            children: Mutex::new(HashMap::new()),
        })
    }

    fn io(&self, operation: &'static str) -> impl FnOnce(std::io::Error) -> ProviderError + '_ {
        move |source| ProviderError::Io {
            provider: self.provider.clone(),
            operation,
            source,
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub(super) async fn create(
        &self,
        spec: &InstanceSpec,
        tags: BTreeMap<String, String>,
        command: Vec<String>,
        env: BTreeMap<String, String>,
    ) -> Result<Instance, ProviderError> {
        let path = self.record_path(&spec.name);
        if tokio::fs::try_exists(&path)
            .await
            .map_err(self.io("read the state directory"))?
        {
            return Err(ProviderError::Config {
                provider: self.provider.clone(),
                key: "instance name",
                detail: format!("{:?} is already used by an instance", spec.name),
            });
        }
        let log = std::fs::File::create(self.dir.join(format!("{}.log", spec.name)))
            .map_err(self.io("create the instance log"))?;
        let log_err = log
            .try_clone()
            .map_err(self.io("create the instance log"))?;
        let child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|source| ProviderError::Io {
                provider: self.provider.clone(),
                operation: "start the instance command",
                source,
            })?;
        let pid = child.id().map_or(0, |p| p as i32);
        let record = Record {
            name: spec.name.clone(),
            flavor: spec.flavor.clone(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            tags,
        };
        self.children
            .lock()
            .expect("children lock")
            .insert(spec.name.clone(), child);
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(&record).expect("record to json"),
        )
        .await
        .map_err(self.io("write the instance record"))?;
        Ok(self.instance(record))
    }

    pub(super) async fn get(&self, id: &InstanceId) -> Result<Option<Instance>, ProviderError> {
        Ok(self.read(&id.0).await?.map(|r| self.instance(r)))
    }

    pub(super) async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(self.io("read the state directory"))?;
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(self.io("read the state directory"))?
        {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if let Some(record) = self.read(name).await? {
                found.push(self.instance(record));
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    pub(super) async fn delete(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let Some(record) = self.read(&id.0).await? else {
            return Ok(());
        };
        let child = self.children.lock().expect("children lock").remove(&id.0);
        if self.alive(&record) {
            stop(record.pid, child).await;
        }
        match tokio::fs::remove_file(self.record_path(&id.0)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.io("remove the instance record")(e))
            }
            _ => Ok(()),
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Record>, ProviderError> {
        let bytes = match tokio::fs::read(self.record_path(name)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read an instance record")(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ProviderError::BadResponse {
                provider: self.provider.clone(),
                operation: "read an instance record",
                detail: format!("{}: {e}", self.record_path(name).display()),
            })
    }

    /// Whether the recorded process still runs (reaping it if it is our child and exited).
    fn alive(&self, record: &Record) -> bool {
        if let Some(child) = self
            .children
            .lock()
            .expect("children lock")
            .get_mut(&record.name)
        {
            return matches!(child.try_wait(), Ok(None));
        }
        start_ticks(record.pid) == Some(record.start_ticks) && !is_zombie(record.pid)
    }

    fn instance(&self, record: Record) -> Instance {
        let state = if self.alive(&record) {
            InstanceState::Running
        } else {
            InstanceState::Stopped
        };
        Instance {
            id: InstanceId(record.name.clone()),
            name: record.name,
            flavor: Some(record.flavor),
            region: Some(REGION.to_owned()),
            state,
            address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            tags: record.tags,
        }
    }
}

/// SIGTERM to the instance's process group, SIGKILL if it is still there after the grace.
async fn stop(pid: i32, child: Option<tokio::process::Child>) {
    // 0 or 1 would signal our own process group or init: a record never holds them for a
    // process we started, but records are files anyone can edit.
    if pid <= 1 {
        return;
    }
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let exited = match child {
        Some(mut child) => tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok(),
        None => {
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            loop {
                if std::fs::metadata(format!("/proc/{pid}")).is_err() || is_zombie(pid) {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Children of the instance may outlive its leader: the group gets SIGKILL either way.
    let _ = killpg(group, Signal::SIGKILL);
    if !exited {
        tracing::warn!(pid, "instance did not stop on SIGTERM: killed");
    }
}

/// `/proc/PID/stat` fields after the command name (which may hold spaces and parentheses).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

fn start_ticks(pid: i32) -> Option<u64> {
    // Field 22 overall; fields here start at 3 (state).
    stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z" || s == "X"))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}
