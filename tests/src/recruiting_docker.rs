//! scitqd in a container, recruiting on the local provider's docker mode: its machines are
//! agent containers on a docker network the harness creates, which scitqd's container is on
//! too. A container cannot reach the host's loopback, so scitqd runs beside its agents: they
//! reach it by its container name over TLS (a certificate for that name, signed by a test CA
//! scitqd hands to its agents), and its port is published on 127.0.0.1 for the test's
//! scitqctl. The docker socket is mounted into it for its provider. Both images are built
//! from the binaries built here by `deploy/docker/build-images` (nothing pulled).
//!
//! scitqd's port is published from a second network of its own (`front`), so the test can
//! take scitqd off its agents' network ([`DockerRecruiting::cut`]) to play machines that
//! never connect, and keep talking to it. Docker publishes ports through the gateway
//! network, the first by name among those of equal priority: `front` sorts first.
//!
//! Dropping a [`DockerRecruiting`] removes, by id, scitqd's container, every container on
//! either network (the agents, whatever their state), the networks and the images; a failed
//! test prints scitqd's log and its agents'.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use scitq_provisioner::local::{LocalConfig, LocalProvider};
use scitq_provisioner::{Instance, OWNER_TAG, OwnerId, Provider};
use serde_json::Value;

use crate::images::{docker, remove_containers, try_docker, unique_tag};
use crate::recruiting::{LocalProviderOpts, block_on, owner_of};
use crate::{Client, describe, make_certs_for, poll, temp_dir};

/// The port scitqd listens on in its container.
const PORT: u16 = 5000;
/// How long scitqd's container may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A containerised scitqd recruiting agent containers on a local provider named `local`.
pub struct DockerRecruiting {
    /// scitqd's container: its id, and its name (the host name agents reach it by).
    scitqd: String,
    name: String,
    /// The network scitqd and its agents are on: its id, and its name (`[[provider]]
    /// network`).
    network: String,
    network_name: String,
    /// The network scitqd's port is published from (id).
    front: String,
    /// `scitqd:TAG` and `scitq-agent:TAG`.
    images: Vec<String>,
    /// `127.0.0.1:PORT` published for scitqd's port.
    addr: String,
    admin_token: String,
    /// `etc/` (config, certificates; /etc/scitq in scitqd's container), `data/` (its data
    /// dir), `home/` (scitqctl's HOME, with a client config pointing at `addr`), `files/`.
    dir: tempfile::TempDir,
}

impl DockerRecruiting {
    pub fn start(opts: LocalProviderOpts) -> DockerRecruiting {
        let run = unique_tag("x").replace(['x', ':'], "");
        let name = format!("scitqd-{run}");
        let dir = temp_dir("scitq-docker-recruit-");
        for sub in ["etc", "data", "home/.config/scitq", "files"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create harness dirs");
        }
        let tag = format!("test-{run}");
        let mut setup = DockerRecruiting {
            scitqd: String::new(),
            name: name.clone(),
            network: String::new(),
            network_name: format!("scitq-test-{run}-1agents"),
            front: String::new(),
            images: Vec::new(),
            addr: String::new(),
            admin_token: String::new(),
            dir,
        };
        setup.images = build_images(&tag);
        let create_network = |name: &str| {
            docker(&["network", "create", "--driver", "bridge", name])
                .trim()
                .to_owned()
        };
        setup.front = create_network(&format!("scitq-test-{run}-0front"));
        setup.network = create_network(&setup.network_name);
        let etc = setup.dir.path().join("etc");
        make_certs_for(&etc, &[&name]);
        std::fs::write(etc.join("scitqd.toml"), config(&opts, &setup, &tag)).expect("config");

        let data = setup.dir.path().join("data");
        let created = docker(&[
            "create",
            "--name",
            &name,
            "--network",
            &setup.front,
            "--publish",
            &format!("127.0.0.1::{PORT}"),
            "--volume",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--volume",
            &format!("{}:/etc/scitq:ro", etc.display()),
            "--volume",
            &format!("{}:/var/lib/scitq", data.display()),
            "--env",
            &format!(
                "RUST_LOG={}",
                std::env::var("SCITQ_TEST_LOG").unwrap_or_else(|_| "info".to_owned())
            ),
            &setup.images[0],
            "--config",
            "/etc/scitq/scitqd.toml",
            "--tls-cert",
            "/etc/scitq/cert.pem",
            "--tls-key",
            "/etc/scitq/key.pem",
        ]);
        setup.scitqd = created.trim().to_owned();
        setup.restore();
        setup.start_container();
        setup
    }

    /// Takes scitqd off its agents' network: they cannot reach it (the test still can).
    pub fn cut(&self) {
        docker(&["network", "disconnect", &self.network, &self.scitqd]);
    }

    /// Puts scitqd back on its agents' network, reachable by its name.
    pub fn restore(&self) {
        docker(&["network", "connect", &self.network, &self.scitqd]);
    }

    /// Starts scitqd's (created or killed) container and waits until it listens.
    fn start_container(&mut self) {
        let data = self.dir.path().join("data");
        // A SIGKILLed scitqd leaves its address file: never mistake it for the new one.
        let _ = std::fs::remove_file(data.join("scitqd.addr"));
        docker(&["start", &self.scitqd]);
        poll(START_TIMEOUT, "scitqd's container to listen", || {
            let state = docker(&["inspect", "-f", "{{.State.Status}}", &self.scitqd]);
            if state.trim() == "exited" {
                return Err(format!("it exited: {}", self.log_tail(40)));
            }
            let addr =
                std::fs::read_to_string(data.join("scitqd.addr")).map_err(|e| e.to_string())?;
            if addr.ends_with('\n') {
                Ok(())
            } else {
                Err(format!("{addr:?}"))
            }
        });
        // The published port changes with each start.
        let published = docker(&["port", &self.scitqd, &format!("{PORT}/tcp")]);
        self.addr = published
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("scitqd's port is not published on 127.0.0.1: {published}"))
            .to_owned();
        self.admin_token = std::fs::read_to_string(data.join("admin.token"))
            .expect("scitqd's admin token")
            .trim()
            .to_owned();
        std::fs::write(
            self.dir.path().join("home/.config/scitq/config.toml"),
            format!(
                "server = \"https://{}\"\ntoken = \"{}\"\n",
                self.addr, self.admin_token
            ),
        )
        .expect("write the client config");
    }

    /// scitqctl against the published port, trusting the test CA.
    pub fn client(&self) -> Client {
        Client::new(
            format!("https://{}", self.addr),
            self.dir.path().join("home"),
            self.dir.path().join("files"),
        )
        .with_env("SSL_CERT_FILE", self.ca())
    }

    /// `scitqctl ARGS… --json`, parsed.
    pub fn ctl_json<const N: usize>(&self, args: [&str; N]) -> Value {
        self.client().ctl_json(args)
    }

    /// The CA that signed scitqd's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("etc/ca.pem")
    }

    /// `127.0.0.1:PORT`, scitqd's published port (a restart publishes another).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The name of the network scitqd and its agents are on.
    pub fn network_name(&self) -> &str {
        &self.network_name
    }

    /// The agent image recruited machines run.
    pub fn agent_image(&self) -> &str {
        &self.images[1]
    }

    /// `job list`, newest first.
    pub fn jobs(&self) -> Vec<Value> {
        self.ctl_json(["job", "list", "--limit", "10000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// scitqd's owner id, from a machine's name (`OWNER-N`); none before its first job.
    pub fn owner(&self) -> Option<String> {
        owner_of(&self.jobs())
    }

    /// The local provider (docker mode, on this network) as `owner` sees it. Instances the
    /// test creates with it only sleep: machines scitqd has no record of.
    pub fn provider(&self, owner: &str) -> LocalProvider {
        let config = LocalConfig {
            name: "local".to_owned(),
            command: vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "exec sleep 600".to_owned(),
            ],
            env: Default::default(),
            flavors: Vec::new(),
            state_dir: self.dir.path().join("files"),
            image: Some(self.agent_image().to_owned()),
            network: Some(self.network_name.clone()),
        };
        let owner = OwnerId::new(owner).expect("an owner id");
        block_on(LocalProvider::docker(config, owner)).expect("the local provider, docker mode")
    }

    /// Every instance the provider lists under scitqd's owner id: its own listing.
    pub fn instances(&self) -> Vec<Instance> {
        match self.owner() {
            Some(owner) => {
                let provider = self.provider(&owner);
                block_on(provider.list()).expect("list local instances")
            }
            None => Vec::new(),
        }
    }

    /// Ids of the containers (any state) docker lists with scitqd's owner label.
    pub fn owned_containers(&self) -> Vec<String> {
        match self.owner() {
            Some(owner) => crate::images::containers_labelled(OWNER_TAG, &owner),
            None => Vec::new(),
        }
    }

    /// The enrollment token in a machine's user data (its container's environment), or
    /// `None` while docker has no such container (a worker is listed from its provisioning
    /// job, before its container exists and after it is destroyed).
    pub fn token_of(&self, name: &str) -> Option<String> {
        let env = try_docker(&[
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            name,
        ])?;
        // SCITQ_USER_DATA holds `KEY=value` lines: the token is on one of them.
        let token = env
            .lines()
            .find_map(|l| l.strip_prefix("SCITQ_ENROLL_TOKEN="))
            .unwrap_or_else(|| panic!("no SCITQ_ENROLL_TOKEN in {name}'s environment: {env}"));
        Some(token.to_owned())
    }

    /// SIGKILL scitqd's container, as in a crash: its agent containers live on.
    pub fn kill9(&mut self) {
        docker(&["kill", "--signal", "KILL", &self.scitqd]);
        poll(START_TIMEOUT, "scitqd's container to stop", || {
            let state = docker(&["inspect", "-f", "{{.State.Status}}", &self.scitqd]);
            if state.trim() == "exited" {
                Ok(())
            } else {
                Err(state)
            }
        });
    }

    /// Starts a killed scitqd again on the same data dir (on another published port).
    pub fn start_again(&mut self) {
        self.start_container();
    }

    /// The last `lines` of scitqd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        container_log(&self.scitqd, lines)
    }
}

/// Builds `scitqd:TAG` and `scitq-agent:TAG` from the binaries of this build.
fn build_images(tag: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker/build-images");
    let out = Command::new(&script)
        .arg("--bin-dir")
        .arg(crate::bin_dir())
        .args(["--tag", tag])
        .output()
        .expect("run deploy/docker/build-images");
    let images = vec![format!("scitqd:{tag}"), format!("scitq-agent:{tag}")];
    if !out.status.success() {
        for image in &images {
            let _ = Command::new("docker")
                .args(["rmi", "--force", image])
                .output();
        }
        panic!("build-images failed: {}", describe(&out));
    }
    images
}

/// scitqd's config: agents reach it by its container name, over TLS, with the test CA.
fn config(opts: &LocalProviderOpts, setup: &DockerRecruiting, tag: &str) -> String {
    format!(
        "[recruit]\ninterval = \"{interval}\"\n\n\
         [deploy]\nserver = \"https://{name}:{PORT}\"\nserver_ca = \"/etc/scitq/ca.pem\"\n\n\
         [[provider]]\nname = \"local\"\nkind = \"local\"\nimage = \"scitq-agent:{tag}\"\n\
         network = \"{network}\"\nmax_instances = {max}\ndeploy_timeout = \"{deploy}\"\n\
         agent_args = [\"--reconnect-max\", \"1s\", \"--heartbeat\", \"1s\"]\n",
        interval = humantime::format_duration(opts.interval),
        name = setup.name,
        network = setup.network_name,
        max = opts.max_instances,
        deploy = humantime::format_duration(opts.deploy_timeout),
    )
}

fn container_log(id: &str, lines: usize) -> String {
    Command::new("docker")
        .args(["logs", "--tail", &lines.to_string(), id])
        .output()
        .map(|out| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_else(|e| format!("(docker logs {id}: {e})"))
}

impl Drop for DockerRecruiting {
    fn drop(&mut self) {
        let networks = [self.network.clone(), self.front.clone()];
        let networks: Vec<&String> = networks.iter().filter(|n| !n.is_empty()).collect();
        let on_network = || -> Vec<String> {
            let mut ids = BTreeSet::new();
            for network in &networks {
                let listed = Command::new("docker")
                    .args(["ps", "--all", "--quiet", "--no-trunc", "--filter"])
                    .arg(format!("network={network}"))
                    .output();
                if let Ok(out) = listed {
                    ids.extend(
                        String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .map(str::to_owned),
                    );
                }
            }
            ids.into_iter().collect()
        };
        if std::thread::panicking() {
            for id in on_network() {
                if id != self.scitqd {
                    eprintln!(
                        "----- [harness] agent container {id} -----\n{}",
                        container_log(&id, 30)
                    );
                }
            }
            if !self.scitqd.is_empty() {
                eprintln!(
                    "----- [harness] scitqd container -----\n{}\n----- end of scitqd log -----",
                    self.log_tail(80)
                );
            }
        }
        // scitqd first: it would create more containers meanwhile.
        if !self.scitqd.is_empty() {
            remove_containers(std::slice::from_ref(&self.scitqd));
        }
        remove_containers(&on_network());
        for network in &networks {
            let _ = Command::new("docker")
                .args(["network", "rm", network.as_str()])
                .output();
        }
        for image in &self.images {
            let _ = Command::new("docker")
                .args(["rmi", "--force", image])
                .output();
        }
    }
}
