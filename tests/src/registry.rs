//! A private container registry for tests: Debian's `docker-registry` with a private config
//! bound to 127.0.0.1 on a free port, htpasswd (bcrypt) auth, storage in a temp dir; stopped
//! by PID on drop. Docker talks plain HTTP to registries on 127.0.0.0/8, so no TLS is needed.
//!
//! Pushing uses the docker CLI with a private `--config` dir, so the machine's own docker
//! login is never touched.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::images::{Image, docker};
use crate::process::Proc;
use crate::{keep_on_panic, poll, temp_dir};

/// Debian's registry binary.
const REGISTRY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    port: u16,
    user: String,
    password: String,
    proc: Proc,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry accepting `user` / `password`, and waits until it listens.
    pub fn start(user: &str, password: &str) -> Registry {
        let dir = temp_dir("scitq-registry-");
        let port = free_port();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash(password, 5).expect("bcrypt a password");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("create registry storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: scitq-test\n    path: {}\n",
                storage.display(),
                htpasswd.display()
            ),
        )
        .expect("write registry config");
        let mut cmd = Command::new(REGISTRY);
        cmd.arg("serve").arg(&config);
        let proc = Proc::spawn("docker-registry", cmd, &dir.path().join("registry.log"));
        let mut registry = Registry {
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            proc,
            dir,
        };
        poll(Duration::from_secs(30), "the registry to listen", || {
            if let Some(status) = registry.proc.try_exit() {
                panic!(
                    "docker-registry exited ({status}):\n{}",
                    crate::log_tail(registry.proc.log(), 30)
                );
            }
            TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        registry.login();
        registry
    }

    /// `127.0.0.1:PORT`, as image references spell the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    fn login(&self) {
        let out = Command::new("docker")
            .arg("--config")
            .arg(self.docker_config())
            .args([
                "login",
                "--username",
                &self.user,
                "--password-stdin",
                &self.host(),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(self.password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run docker login");
        assert!(
            out.status.success(),
            "docker login to the test registry failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes `image` as `HOST/NAME:TAG` and removes that name from the daemon again, so a
    /// task has to pull it. Returns the reference.
    pub fn push(&self, image: &Image, name: &str) -> String {
        let tag = image.tag().rsplit_once(':').map_or("latest", |(_, t)| t);
        let reference = format!("{}/{name}:{tag}", self.host());
        docker(&["tag", image.tag(), &reference]);
        let out = Command::new("docker")
            .arg("--config")
            .arg(self.docker_config())
            .args(["push", &reference])
            .output()
            .expect("run docker push");
        docker(&["rmi", &reference]);
        assert!(
            out.status.success(),
            "docker push {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.proc.print_log_tail(30);
        }
        self.proc.terminate(Duration::from_secs(5));
        keep_on_panic(&mut self.dir, "registry");
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
