//! Shared plumbing for the storage servers the tests start on loopback: finding the tools
//! scripts/test installs, picking a free port, and waiting until a server answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bin_dir;
use crate::process::Proc;

/// How long a test server gets to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `env_var` when set, else `target/test-tools/venv/bin/<name>` (installed by scripts/test),
/// else `<name>` on PATH; panics saying how to get it.
pub fn find_tool(env_var: &str, name: &str) -> PathBuf {
    let venv = bin_dir()
        .parent()
        .map(|target| target.join("test-tools/venv/bin").join(name));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name));
    let candidates = std::env::var_os(env_var)
        .map(PathBuf::from)
        .into_iter()
        .chain(venv)
        .chain(on_path);
    for path in candidates {
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{name} not found ({env_var}, target/test-tools/venv/bin, PATH): run scripts/test, \
         which installs it, or set {env_var}"
    );
}

/// The Python of the test venv (it has pyftpdlib and moto): `SCITQ_TEST_PYTHON` when set.
pub fn python() -> PathBuf {
    find_tool("SCITQ_TEST_PYTHON", "python3")
}

/// Starts a server on a free loopback port and waits until `ready(port)` holds. A port
/// picked free can be taken before the server binds it, so a server that exits early is
/// started again on another port (a few times).
pub(crate) fn start_on_free_port(
    name: &str,
    log: &Path,
    command: impl Fn(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> (Proc, u16) {
    for _ in 0..5 {
        let port = crate::postgres::free_port();
        let mut proc = Proc::spawn(name, command(port), log);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if ready(port) {
                return (proc, port);
            }
            if proc.try_exit().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                proc.print_log_tail(40);
                panic!("{name} did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        eprintln!("[harness] {name} exited at start (port {port} taken?); trying another port");
    }
    panic!(
        "{name} could not start on a free port in 5 tries; see {}",
        log.display()
    );
}

/// A minimal HTTP/1.1 exchange on loopback: the status code and the body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    http_request_with(port, method, path, &[], body)
}

/// [`http_request`] with extra header lines (`Name: value`).
pub fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    Ok((status, response[body_at..].to_vec()))
}
