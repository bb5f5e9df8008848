//! grpcurl, the generic gRPC client, to check the API works with reflection alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::bin_dir;

/// A grpcurl binary: `GRPCURL` when set, else `target/test-tools/bin/grpcurl` (installed by
/// scripts/test), else `grpcurl` on PATH.
pub struct Grpcurl {
    path: PathBuf,
}

impl Grpcurl {
    /// Finds grpcurl; panics with how to get it when it is nowhere.
    pub fn find() -> Grpcurl {
        let candidates = std::env::var_os("GRPCURL")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                bin_dir()
                    .parent()
                    .map(|target| target.join("test-tools/bin/grpcurl")),
            )
            .chain(
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|dir| dir.join("grpcurl")),
            );
        for path in candidates {
            if path.is_file() {
                return Grpcurl { path };
            }
        }
        panic!(
            "grpcurl not found (GRPCURL, target/test-tools/bin/grpcurl, PATH): run scripts/test, \
             which installs it, or set GRPCURL"
        );
    }

    /// `grpcurl -plaintext [-H 'authorization: Bearer TOKEN'] FLAGS… ADDR REST…`.
    pub fn command(
        &self,
        addr: &str,
        token: Option<&str>,
        flags: &[&str],
        rest: &[&str],
    ) -> Command {
        self.command_over(&["-plaintext"], addr, token, flags, rest)
    }

    /// [`Grpcurl::command`] over TLS, trusting the CA in `ca_pem`.
    pub fn command_tls(
        &self,
        ca_pem: &Path,
        addr: &str,
        token: Option<&str>,
        flags: &[&str],
        rest: &[&str],
    ) -> Command {
        let cacert = ca_pem.display().to_string();
        self.command_over(&["-cacert", &cacert], addr, token, flags, rest)
    }

    fn command_over(
        &self,
        transport: &[&str],
        addr: &str,
        token: Option<&str>,
        flags: &[&str],
        rest: &[&str],
    ) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(transport);
        if let Some(token) = token {
            cmd.arg("-H").arg(format!("authorization: Bearer {token}"));
        }
        cmd.args(flags).arg(addr).args(rest);
        cmd
    }

    /// Runs [`Grpcurl::command`].
    pub fn run(&self, addr: &str, token: Option<&str>, flags: &[&str], rest: &[&str]) -> Output {
        let mut cmd = self.command(addr, token, flags, rest);
        cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
    }

    /// Calls `method` with the request JSON on stdin (`-d @`), for requests too big for argv.
    pub fn call_stdin(&self, addr: &str, token: &str, method: &str, request: &[u8]) -> Output {
        let mut cmd = self.command(addr, Some(token), &["-d", "@"], &[method]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        let mut stdin = child.stdin.take().expect("grpcurl stdin");
        let request = request.to_vec();
        // Write from another thread: grpcurl may answer (and fill its pipes) before reading all.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&request);
        });
        let out = child.wait_with_output().expect("wait for grpcurl");
        writer.join().expect("stdin writer thread");
        out
    }
}
