//! scitqd recruiting on the local provider (its machines are agents started as processes on
//! this machine), its agents reaching it through a [`Proxy`] the test can cut. Instances a
//! test leaves (a failure, a SIGKILLed scitqd) are deleted when it is dropped, by their pids,
//! through the provider; a failed test prints their agents' logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use scitq_provisioner::local::{LocalConfig, LocalProvider};
use scitq_provisioner::{Instance, OwnerId, Provider};
use serde_json::Value;

use crate::{Proxy, Server, ServerOpts, log_tail};

/// scitqd's owner id, from the name (`OWNER-N`) of the machine of the last of its jobs
/// (`job list --json`); none before its first job.
pub fn owner_of(jobs: &[Value]) -> Option<String> {
    let name = jobs.last()?["machine"].as_str()?;
    Some(name.rsplit_once('-')?.0.to_owned())
}

/// Asserts that every machine created was destroyed, by a job that says so, and that a
/// create a scitqd kill cut short is settled: found at the provider (it goes on), or failed
/// as interrupted.
pub fn assert_jobs_settled(jobs: &[Value]) {
    let machines = |kind: &str, status: &str| -> BTreeSet<String> {
        jobs.iter()
            .filter(|j| j["kind"] == kind && j["status"] == status)
            .map(|j| j["machine"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        machines("create", "succeeded"),
        machines("destroy", "succeeded"),
        "{jobs:?}"
    );
    assert!(
        jobs.iter()
            .filter(|j| j["status"] == "failed")
            .all(|j| j["error_class"] == "interrupted"),
        "{jobs:?}"
    );
}

/// The `[[provider]]` and `[recruit]` a [`LocalRecruiting`] starts scitqd with.
#[derive(Clone, Debug)]
pub struct LocalProviderOpts {
    pub max_instances: usize,
    pub deploy_timeout: Duration,
    pub interval: Duration,
}

/// A running scitqd that recruits on the local provider named `local`.
pub struct LocalRecruiting {
    pub server: Server,
    pub proxy: Proxy,
    _config_dir: tempfile::TempDir,
}

impl LocalRecruiting {
    pub fn start(opts: LocalProviderOpts) -> LocalRecruiting {
        // Its target is set once scitqd listens (its port is not known before).
        let proxy = Proxy::start("127.0.0.1:9");
        let config_dir = tempfile::tempdir().expect("a temp dir");
        let config = config_dir.path().join("scitqd.toml");
        std::fs::write(
            &config,
            format!(
                "[recruit]\ninterval = \"{interval}\"\n\n[deploy]\nserver = \"{proxy}\"\n\n\
                 [[provider]]\nname = \"local\"\nkind = \"local\"\nmax_instances = {max}\n\
                 deploy_timeout = \"{deploy}\"\n\
                 agent_args = [\"--reconnect-max\", \"1s\", \"--heartbeat\", \"1s\"]\n",
                interval = humantime::format_duration(opts.interval),
                proxy = proxy.addr(),
                max = opts.max_instances,
                deploy = humantime::format_duration(opts.deploy_timeout),
            ),
        )
        .expect("write the config");
        let server = Server::start(
            ServerOpts::default()
                .arg("--config")
                .arg(config.to_str().expect("utf-8 path")),
        );
        proxy.retarget(&server.addr());
        LocalRecruiting {
            server,
            proxy,
            _config_dir: config_dir,
        }
    }

    /// Where the local provider keeps its instances' records, logs and work dirs.
    pub fn state_dir(&self) -> PathBuf {
        self.server.data_dir().join("local-instances/local")
    }

    /// `job list`, newest first.
    pub fn jobs(&self) -> Vec<Value> {
        self.server
            .ctl_json(["job", "list", "--limit", "10000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// scitqd's owner id, from a machine's name (`OWNER-N`); none before its first job.
    pub fn owner(&self) -> Option<String> {
        owner_of(&self.jobs())
    }

    /// The local provider as `owner` sees it.
    pub fn provider(&self, owner: &str) -> LocalProvider {
        LocalProvider::processes(
            LocalConfig {
                name: "local".to_owned(),
                command: vec!["sleep".to_owned(), "600".to_owned()],
                env: BTreeMap::new(),
                flavors: Vec::new(),
                state_dir: self.state_dir(),
                image: None,
                network: None,
            },
            OwnerId::new(owner).expect("an owner id"),
        )
        .expect("the local provider")
    }

    /// Every instance the provider lists under scitqd's owner id: its own listing.
    pub fn instances(&self) -> Vec<Instance> {
        match self.owner() {
            Some(owner) => {
                let provider = self.provider(&owner);
                block_on(async { provider.list().await }).expect("list local instances")
            }
            None => Vec::new(),
        }
    }

    /// The enrollment token in a running instance's environment.
    pub fn token_of(&self, name: &str) -> String {
        token_of(&self.state_dir(), name)
    }
}

/// Runs `f` to its end on a runtime of its own, on a thread of its own (the caller may be
/// on a runtime already: an async test).
pub fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(f)
        })
        .join()
        .expect("the runtime's thread")
    })
}

fn token_of(state_dir: &Path, name: &str) -> String {
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(state_dir.join(format!("{name}.json"))).expect("its record"),
    )
    .expect("a JSON record");
    let pid = record["pid"].as_i64().expect("a pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("its environment");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("SCITQ_ENROLL_TOKEN="))
        .expect("SCITQ_ENROLL_TOKEN in the agent's environment")
        .to_owned()
}

impl Drop for LocalRecruiting {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(entries) = std::fs::read_dir(self.state_dir())
        {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    eprintln!(
                        "----- [harness] local instance log {} -----\n{}",
                        path.display(),
                        log_tail(&path, 30)
                    );
                }
            }
        }
        if let Some(owner) = self.owner() {
            let provider = self.provider(&owner);
            block_on(async {
                for instance in provider.list().await.unwrap_or_default() {
                    let _ = provider.delete(&instance.id).await;
                }
            });
        }
    }
}
