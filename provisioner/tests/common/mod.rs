//! Test helpers shared by the provisioner's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Polls `check` until it returns `Some`, failing the test with `what` after a generous
/// deadline (a condition, not a timing, is what the tests assert).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A busybox image built locally (no pull: `docker import` of a rootfs holding Debian's
/// `busybox-static`, the approach of the e2e harness), removed when dropped.
pub struct BusyboxImage {
    pub tag: String,
}

impl BusyboxImage {
    pub fn build() -> BusyboxImage {
        let tag = format!(
            "scitq-provisioner-test:{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let root = tempfile::tempdir().expect("rootfs temp dir");
        build_rootfs(root.path());
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let import = Command::new("docker")
            .args(["import", "-", &tag])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("run docker import");
        assert!(
            tar.wait().expect("wait for tar").success(),
            "tar of the rootfs failed"
        );
        assert!(
            import.status.success(),
            "docker import failed (is the docker daemon running?): {}",
            String::from_utf8_lossy(&import.stderr)
        );
        BusyboxImage { tag }
    }
}

impl Drop for BusyboxImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &self.tag])
            .output();
    }
}

fn build_rootfs(root: &Path) {
    const BUSYBOX: &str = "/bin/busybox";
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    std::fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} (install Debian's busybox-static): {e}"));
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink applet");
    }
    std::fs::create_dir_all(root.join("etc")).expect("create rootfs/etc");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
}

/// Runs `docker ARGS`, returning stdout (empty on failure).
pub fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
