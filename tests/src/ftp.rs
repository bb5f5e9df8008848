//! An FTP server on loopback: pyftpdlib (PyPI, installed by scripts/test into the test venv)
//! serving a temp dir to one user with write rights (opendal's ftp writes then renames).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::loopback::{python, start_on_free_port};
use crate::process::Proc;
use crate::{keep_on_panic, temp_dir};

pub const FTP_USER: &str = "scitq";
pub const FTP_PASSWORD: &str = "ftp-secret";

/// A running pyftpdlib server, killed (by PID) on drop.
pub struct FtpServer {
    port: u16,
    proc: Proc,
    dir: TempDir,
}

impl FtpServer {
    pub fn start() -> FtpServer {
        let python = python();
        let dir = temp_dir("scitq-ftp-");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("create the ftp root");
        let log = dir.path().join("ftp.log");
        let (proc, port) = start_on_free_port(
            "pyftpdlib",
            &log,
            |port| {
                let mut cmd = std::process::Command::new(&python);
                cmd.args([
                    "-m",
                    "pyftpdlib",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-w",
                    "-d",
                ])
                .arg(&root)
                .args(["-u", FTP_USER, "-P", FTP_PASSWORD]);
                cmd
            },
            banner_ready,
        );
        FtpServer { port, proc, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder the server serves (`/` for its user).
    pub fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    /// `ftp://USER:PASSWORD@127.0.0.1:PORT/path`.
    pub fn uri(&self, path: &str) -> String {
        format!(
            "ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// A file under the served root, for checks.
    pub fn local(&self, path: &str) -> std::path::PathBuf {
        self.root().join(Path::new(path.trim_start_matches('/')))
    }
}

/// An FTP server is ready once it greets with 220.
fn banner_ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"220"
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.proc.print_log_tail(30);
        }
        keep_on_panic(&mut self.dir, "ftp");
    }
}
