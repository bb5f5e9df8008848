//! Tiny container images built locally (this machine cannot pull from a public registry):
//! a rootfs of Debian's `busybox-static` (`/bin/busybox` plus one symlink per applet),
//! tarred and `docker import`ed under a tag unique to the test run. Dropping an [`Image`]
//! removes it (by tag) from the daemon.
//!
//! Docker must be reachable: a test that needs an image fails, it never skips.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian's `busybox-static` installs the static busybox.
const BUSYBOX: &str = "/bin/busybox";

/// A locally built image, removed from the daemon when dropped.
pub struct Image {
    tag: String,
}

impl Image {
    /// Builds the busybox image under `scitq-test-tiny:<unique>`.
    pub fn tiny() -> Image {
        Image::tiny_with(&[])
    }

    /// The busybox image plus executable files (`/bin/tool`, content), e.g. shell scripts
    /// standing in for a real tool.
    pub fn tiny_with(executables: &[(&str, &str)]) -> Image {
        Image::tiny_changed(executables, &[])
    }

    /// The busybox image with Dockerfile instructions applied at import (`docker import
    /// --change`), e.g. an `ENTRYPOINT`.
    pub fn tiny_with_changes(changes: &[&str]) -> Image {
        Image::tiny_changed(&[], changes)
    }

    fn tiny_changed(executables: &[(&str, &str)], changes: &[&str]) -> Image {
        use std::os::unix::fs::PermissionsExt;
        let tag = unique_tag("scitq-test-tiny");
        let root = tempfile::Builder::new()
            .prefix("scitq-rootfs-")
            .tempdir()
            .expect("create a temp dir");
        build_rootfs(root.path());
        for (path, content) in executables {
            let file = root.path().join(path.trim_start_matches('/'));
            // A busybox applet of the same name is a symlink: replace it, not its target.
            let _ = std::fs::remove_file(&file);
            std::fs::write(&file, content).unwrap_or_else(|e| panic!("write {path}: {e}"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {path}: {e}"));
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let mut args = vec!["import"];
        for change in changes {
            args.extend(["--change", change]);
        }
        args.extend(["-", &tag]);
        let import = Command::new("docker")
            .args(&args)
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("run docker import");
        let tarred = tar.wait().expect("wait for tar");
        assert!(tarred.success(), "tar of the rootfs failed: {tarred}");
        assert!(
            import.status.success(),
            "docker import failed (is the Docker daemon running?): {}",
            String::from_utf8_lossy(&import.stderr)
        );
        Image { tag }
    }

    /// An image the daemon has (or will pull) under `reference`, removed on drop.
    pub fn named(reference: &str) -> Image {
        Image {
            tag: reference.to_owned(),
        }
    }

    /// Another name for the same image (removed with it).
    pub fn tag_as(&self, name: &str) -> Image {
        docker(&["tag", &self.tag, name]);
        Image {
            tag: name.to_owned(),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["rmi", "--force", &self.tag])
            .output();
        if let Ok(out) = out
            && !out.status.success()
            && !String::from_utf8_lossy(&out.stderr).contains("No such image")
        {
            eprintln!(
                "[harness] cannot remove image {}: {}",
                self.tag,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `name:<pid>-<n>-<nanos>`: unique across concurrent test processes and runs.
pub fn unique_tag(name: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{name}:{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

fn build_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| {
        panic!("copy {BUSYBOX} (install Debian's busybox-static; scripts/test does): {e}")
    });
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("run busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .unwrap_or_else(|e| panic!("symlink {applet}: {e}"));
    }
    for dir in ["etc", "root", "usr"] {
        std::fs::create_dir_all(root.join(dir)).expect("create rootfs dir");
    }
    std::os::unix::fs::symlink("../bin", root.join("usr/bin")).expect("symlink usr/bin");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .expect("write etc/passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .expect("write etc/group");
}

/// Runs `docker ARGS` and returns its stdout, or `None` when it fails (for cleanups, where
/// what is gone already is fine).
pub fn try_docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `docker ARGS` and returns its stdout; panics with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ids of the containers (any state) whose label `key` is `value`.
pub fn containers_labelled(key: &str, value: &str) -> Vec<String> {
    containers_with(&[(key, value)])
}

/// Ids of the containers (any state) carrying all these labels (one `docker ps`, so a
/// container removed meanwhile is simply not listed).
pub fn containers_with(labels: &[(&str, &str)]) -> Vec<String> {
    let filters: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("label={key}={value}"))
        .collect();
    let mut args = vec!["ps", "--all", "--quiet", "--no-trunc"];
    for filter in &filters {
        args.extend(["--filter", filter]);
    }
    docker(&args).lines().map(str::to_owned).collect()
}

/// Removes containers by id (force), ignoring ones already gone.
pub fn remove_containers(ids: &[String]) {
    for id in ids {
        let _ = Command::new("docker")
            .args(["rm", "--force", "--volumes", id])
            .output();
    }
}
