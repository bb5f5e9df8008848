//! A static HTTP server on loopback: Python's `http.server` serving a temp dir (it answers
//! HEAD with Content-Length and Last-Modified, which is what the storage code stats).

use std::path::PathBuf;

use tempfile::TempDir;

use crate::loopback::{http_request, python, start_on_free_port};
use crate::process::Proc;
use crate::{keep_on_panic, temp_dir};

/// A running `python -m http.server`, killed (by PID) on drop.
pub struct HttpServer {
    port: u16,
    proc: Proc,
    dir: TempDir,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let python = python();
        let dir = temp_dir("scitq-http-");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("create the http root");
        let log = dir.path().join("http.log");
        let (proc, port) = start_on_free_port(
            "http.server",
            &log,
            |port| {
                let mut cmd = std::process::Command::new(&python);
                cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
                    .arg(&root)
                    .arg(port.to_string());
                cmd
            },
            |port| http_request(port, "HEAD", "/", b"").is_ok(),
        );
        HttpServer { port, proc, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder served at `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.proc.print_log_tail(30);
        }
        keep_on_panic(&mut self.dir, "http");
    }
}
