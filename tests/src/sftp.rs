//! An SFTP server on loopback: Debian's OpenSSH `sshd` (package openssh-server, installed by
//! scripts/test), started from a temp dir with its own config (`-f`, no system config), its
//! own host key, and key authentication only, for a freshly generated client key.
//!
//! scitq's sftp storage (opendal, through the `openssh` crate) drives the system `ssh`
//! client, which reads `~/.ssh/config` and `~/.ssh/known_hosts` of the account in the
//! password database, whatever `$HOME` says. So that tests neither read nor write the
//! account's `~/.ssh`, the processes they start get [`SftpServer::env`]: a `PATH` whose first
//! `ssh` is a shim adding `-F` with the harness's client config (its `UserKnownHostsFile` is a
//! known_hosts the harness writes with the server's real host key), an `XDG_STATE_HOME` for
//! the control sockets, and an ssh agent holding the client key.
//!
//! The SFTP subsystem is sshd's `internal-sftp -d ROOT`: paths that do not start with `/`
//! resolve under the served root (as they would under a home directory), absolute paths are
//! plain file system paths. No chroot, so no root-owned folders are needed.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::loopback::{find_tool, start_on_free_port};
use crate::process::Proc;
use crate::wait::poll;
use crate::{keep_on_panic, temp_dir};

/// Where Debian installs sshd (it is not on a normal user's PATH); `SCITQ_TEST_SSHD` overrides.
const DEFAULT_SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and the ssh agent of its clients, both killed (by PID) on drop.
pub struct SftpServer {
    port: u16,
    user: String,
    sshd: Proc,
    agent: Proc,
    dir: TempDir,
}

impl SftpServer {
    pub fn start() -> SftpServer {
        let sshd = sshd_binary();
        let dir = temp_dir("scitq-sftp-");
        let base = dir.path().to_path_buf();
        for sub in ["root", "sshd", "client", "bin", "state"] {
            std::fs::create_dir(base.join(sub)).expect("create an sftp test folder");
        }
        keygen(&base.join("sshd/host_key"), "scitq-test-host");
        keygen(&base.join("client/id_ed25519"), "scitq-test-client");
        // A key the server does not know, for the "wrong key" cases.
        keygen(&base.join("client/wrong_ed25519"), "scitq-test-stranger");
        std::fs::copy(
            base.join("client/id_ed25519.pub"),
            base.join("sshd/authorized_keys"),
        )
        .expect("write authorized_keys");

        let log = base.join("sshd.log");
        let (sshd, port) = start_on_free_port(
            "sshd",
            &log,
            |port| {
                let config = base.join("sshd/sshd_config");
                std::fs::write(&config, sshd_config(&base, port)).expect("write sshd_config");
                let mut cmd = Command::new(&sshd);
                // -D: stay in the foreground (killed by PID); -e: log to stderr (our log).
                cmd.arg("-D").arg("-e").arg("-f").arg(&config);
                cmd
            },
            banner_ready,
        );
        let host_key = std::fs::read_to_string(base.join("sshd/host_key.pub"))
            .expect("read the host public key");
        std::fs::write(
            base.join("client/known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .expect("write known_hosts");
        write_client_shim(&base);
        let agent = start_agent(&base);
        SftpServer {
            port,
            user: current_user(),
            sshd,
            agent,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account clients log in as: the one running the tests (sshd runs as it too).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The folder the server serves; relative SFTP paths resolve under it.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A file under the served root, for checks.
    pub fn local(&self, path: &str) -> PathBuf {
        self.root().join(Path::new(path.trim_start_matches('/')))
    }

    /// `sftp://USER@127.0.0.1:PORT/ROOT/path`: an absolute path under the served root (no key
    /// in the URI: the client finds it in the agent of [`SftpServer::env`]).
    pub fn uri(&self, path: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}/{}",
            self.user,
            self.port,
            self.root().display(),
            path.trim_start_matches('/')
        )
    }

    /// The private key the server accepts.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("client/id_ed25519")
    }

    /// A valid private key the server does not accept.
    pub fn wrong_key_file(&self) -> PathBuf {
        self.dir.path().join("client/wrong_ed25519")
    }

    /// An rclone.conf section for this server, with rclone's key names.
    pub fn rclone_section(&self, name: &str, key_file: &Path) -> String {
        format!(
            "[{name}]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nkey_file = {}\n",
            self.port,
            self.user,
            key_file.display()
        )
    }

    /// Replaces the server's key in the clients' known_hosts by another one, as if the
    /// server had been swapped: clients that check host keys must refuse it.
    pub fn distrust_host_key(&self) {
        let base = self.dir.path();
        let other = std::fs::read_to_string(base.join("client/wrong_ed25519.pub"))
            .expect("read another public key");
        std::fs::write(
            base.join("client/known_hosts"),
            format!("[127.0.0.1]:{} {other}", self.port),
        )
        .expect("write known_hosts");
    }

    /// Environment for a process that talks to this server through the system ssh client:
    /// the `ssh` shim first on `PATH`, the control sockets' folder, the client key's agent.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let base = self.dir.path();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(base.join("bin")).chain(std::env::split_paths(&path));
        let path = std::env::join_paths(dirs).expect("PATH with the ssh shim");
        vec![
            ("PATH", path.to_string_lossy().into_owned()),
            ("XDG_STATE_HOME", base.join("state").display().to_string()),
            ("SSH_AUTH_SOCK", agent_socket(base).display().to_string()),
        ]
    }

    /// The ssh control masters' folders still present (the client makes one per
    /// connection under `XDG_STATE_HOME` and removes it when the connection ends).
    pub fn control_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("state"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::log_tail(self.sshd.log(), lines)
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.sshd.print_log_tail(40);
            self.agent.print_log_tail(10);
        }
        keep_on_panic(&mut self.dir, "sftp");
    }
}

fn sshd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SCITQ_TEST_SSHD") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(DEFAULT_SSHD);
    assert!(
        path.is_file(),
        "{DEFAULT_SSHD} not found: run scripts/test, which installs openssh-server, \
         or set SCITQ_TEST_SSHD"
    );
    if nix::unistd::geteuid().is_root() {
        // sshd started by root refuses to run without its privilege separation folder, which
        // the package's service creates at boot; scripts/test creates it otherwise.
        assert!(
            Path::new("/run/sshd").is_dir(),
            "/run/sshd is missing (sshd needs it when run as root): run scripts/test, \
             or `install -d -m 0755 /run/sshd`"
        );
    }
    path
}

/// The whole server config: nothing from /etc/ssh. Keys only, for the test's client key.
/// `StrictModes no` because the temp dir sits under the world-writable /tmp.
fn sshd_config(base: &Path, port: u16) -> String {
    let base = base.display();
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey {base}/sshd/host_key\n\
         PidFile none\n\
         AuthorizedKeysFile {base}/sshd/authorized_keys\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         AllowTcpForwarding no\n\
         X11Forwarding no\n\
         MaxStartups 100\n\
         LogLevel VERBOSE\n\
         Subsystem sftp internal-sftp -d {base}/root\n"
    )
}

/// An SSH server is ready once it sends its identification line.
fn banner_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut greeting = [0u8; 8];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"SSH-2.0-"
}

/// `ssh-keygen -t ed25519` without a passphrase, writing `path` and `path.pub`.
fn keygen(path: &Path, comment: &str) {
    let keygen = find_tool("SCITQ_TEST_SSH_KEYGEN", "ssh-keygen");
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen {}: {out:?}",
        path.display()
    );
}

/// The `ssh` the storage code runs, found first on the PATH of [`SftpServer::env`]: the real
/// client with the harness's config, which points it at the harness's known_hosts.
fn write_client_shim(base: &Path) {
    let ssh = find_tool("SCITQ_TEST_SSH", "ssh");
    let config = base.join("client/ssh_config");
    std::fs::write(
        &config,
        format!(
            "UserKnownHostsFile {}/client/known_hosts\nGlobalKnownHostsFile /dev/null\n",
            base.display()
        ),
    )
    .expect("write the ssh client config");
    let shim = base.join("bin/ssh");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n# scitq test harness: the real ssh client with the test's config.\n\
             exec '{}' -F '{}' \"$@\"\n",
            ssh.display(),
            config.display()
        ),
    )
    .expect("write the ssh shim");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
        .expect("make the ssh shim executable");
}

fn agent_socket(base: &Path) -> PathBuf {
    base.join("agent.sock")
}

/// `ssh-agent -D` on a socket in the temp dir, holding the client key.
fn start_agent(base: &Path) -> Proc {
    let socket = agent_socket(base);
    let mut cmd = Command::new(find_tool("SCITQ_TEST_SSH_AGENT", "ssh-agent"));
    cmd.arg("-D").arg("-a").arg(&socket);
    let mut agent = Proc::spawn("ssh-agent", cmd, &base.join("ssh-agent.log"));
    let key = base.join("client/id_ed25519");
    poll(
        Duration::from_secs(30),
        "ssh-agent to take the client key",
        || {
            if let Some(status) = agent.try_exit() {
                panic!("ssh-agent exited at start ({status}): see its log");
            }
            if !socket.exists() {
                return Err("no socket yet".to_string());
            }
            let out = Command::new(find_tool("SCITQ_TEST_SSH_ADD", "ssh-add"))
                .arg("-q")
                .arg(&key)
                .env("SSH_AUTH_SOCK", &socket)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    agent
}

fn current_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|user| user.name)
        .unwrap_or_else(|| panic!("uid {uid} has no entry in the password database"))
}
