//! A static HTTP server on loopback: Python's `http.server` serving a temp dir (it answers
//! HEAD with Content-Length and Last-Modified, which is what the storage code stats), with a
//! log of the GETs it served and files that arrive damaged once (to test re-fetches).

use std::path::PathBuf;

use tempfile::TempDir;

use crate::loopback::{http_request, python, start_on_free_port};

/// `http.server`'s handler, plus: every GET path appended to `requests.log` (next to the
/// root) before it is answered, and `PATH.damaged-once` served (then removed) in place of
/// `PATH` once, when it exists.
const SERVER: &str = r#"
import functools, http.server, os, sys
root, port = sys.argv[1], int(sys.argv[2])
log = os.path.join(os.path.dirname(root), "requests.log")
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.path + "\n")
        once = self.translate_path(self.path) + ".damaged-once"
        try:
            with open(once, "rb") as f:
                data = f.read()
            os.remove(once)
        except FileNotFoundError:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
handler = functools.partial(Handler, directory=root)
http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
"#;
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
                cmd.args(["-c", SERVER]).arg(&root).arg(port.to_string());
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

    /// Serves `damaged` instead of the file at `path` for the next GET only.
    pub fn damage_once(&self, path: &str, damaged: &[u8]) {
        let file = self
            .root()
            .join(format!("{}.damaged-once", path.trim_start_matches('/')));
        std::fs::write(&file, damaged).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }

    /// How many GETs of `path` (`/a/b`) were answered or are being answered.
    pub fn gets(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        log.lines().filter(|line| *line == path).count()
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
