//! An S3-compatible server on loopback: moto's `moto_server` (PyPI `moto[server]`, installed
//! by scripts/test; `MOTO_SERVER` overrides where it is). It keeps objects in memory and does
//! not check signatures, so any key pair works.

use tempfile::TempDir;

use crate::loopback::{find_tool, http_request, http_request_with, start_on_free_port};
use crate::process::Proc;
use crate::{keep_on_panic, temp_dir};

/// The key pair handed to clients (moto accepts any).
pub const S3_ACCESS_KEY: &str = "scitq-test";
pub const S3_SECRET_KEY: &str = "scitq-test-secret";
pub const S3_REGION: &str = "us-east-1";

/// moto skips signature checks but applies ACLs: anonymous requests may not read objects a
/// signed request wrote. A well-formed (unchecked) signature makes the harness's own plain
/// HTTP requests count as the test user's.
const FAKE_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 \
    Credential=scitq-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A running moto server, killed (by PID) on drop.
pub struct S3Server {
    port: u16,
    proc: Proc,
    dir: TempDir,
}

impl S3Server {
    /// Starts moto on a free port and creates `buckets`.
    pub fn start(buckets: &[&str]) -> S3Server {
        let moto = find_tool("MOTO_SERVER", "moto_server");
        let dir = temp_dir("scitq-s3-");
        let log = dir.path().join("moto.log");
        let (proc, port) = start_on_free_port(
            "moto_server",
            &log,
            |port| {
                let mut cmd = std::process::Command::new(&moto);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                cmd
            },
            |port| http_request(port, "GET", "/", b"").is_ok(),
        );
        let server = S3Server { port, proc, dir };
        for bucket in buckets {
            server.create_bucket(bucket);
        }
        server
    }

    pub fn create_bucket(&self, bucket: &str) {
        match http_request_with(self.port, "PUT", &format!("/{bucket}"), &[FAKE_AUTH], b"") {
            Ok((200, _)) => {}
            other => panic!("create bucket {bucket} on moto: {other:?}"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("AWS_REGION", S3_REGION.to_string()),
        ]
    }

    /// An rclone.conf section `[name]` for this server (readable by rclone and scitq).
    pub fn rclone_section(&self, name: &str) -> String {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nendpoint = {}\nregion = {S3_REGION}\n\
             access_key_id = {S3_ACCESS_KEY}\nsecret_access_key = {S3_SECRET_KEY}\n\n",
            self.endpoint()
        )
    }

    /// An object's bytes, read over plain HTTP (path-style), or the status when it failed.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, u16> {
        match http_request_with(
            self.port,
            "GET",
            &format!("/{bucket}/{key}"),
            &[FAKE_AUTH],
            b"",
        ) {
            Ok((200, body)) => Ok(body),
            Ok((status, _)) => Err(status),
            Err(e) => panic!("GET {bucket}/{key} from moto: {e}"),
        }
    }

    /// Writes an object over plain HTTP (path-style).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        match http_request_with(
            self.port,
            "PUT",
            &format!("/{bucket}/{key}"),
            &[FAKE_AUTH],
            data,
        ) {
            Ok((200, _)) => {}
            other => panic!("PUT {bucket}/{key} on moto: {other:?}"),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.proc.print_log_tail(30);
        }
        keep_on_panic(&mut self.dir, "moto");
    }
}
