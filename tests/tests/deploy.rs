//! `deploy/`: the scitqd and scitq-agent images build from the binaries built here, with
//! nothing pulled, and run.

use std::path::PathBuf;
use std::process::Command;

use scitq_tests::{bin_dir, describe};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("docker")
}

/// Removes the images it names when dropped.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker(&["rmi", "--force", image]);
        }
    }
}

#[test]
fn the_images_build_from_local_binaries_and_run() {
    let tag = format!("test-{}", std::process::id());
    let out = Command::new(repo().join("deploy/docker/build-images"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(["--tag", &tag])
        .output()
        .expect("run deploy/docker/build-images");
    let images = Images(vec![format!("scitqd:{tag}"), format!("scitq-agent:{tag}")]);
    assert!(out.status.success(), "{}", describe(&out));
    let built = String::from_utf8_lossy(&out.stdout);
    for image in &images.0 {
        assert!(built.lines().any(|l| l == image), "{image} not in {built}");
        let name = image.split(':').next().expect("a name");
        let run = docker(&["run", "--rm", "--network", "none", image, "--version"]);
        assert!(run.status.success(), "{}", describe(&run));
        assert!(
            String::from_utf8_lossy(&run.stdout).starts_with(&format!("{name} ")),
            "{}",
            describe(&run)
        );
    }
    // What the local provider's docker mode runs: `sh` and `scitq-agent` on the PATH.
    let run = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        &images.0[1],
        "-c",
        "command -v scitq-agent && test -w /tmp",
    ]);
    assert!(run.status.success(), "{}", describe(&run));
    // scitqd refuses to listen on all interfaces without TLS, saying how to fix it.
    let run = docker(&["run", "--rm", "--network", "none", &images.0[0]]);
    assert!(!run.status.success(), "{}", describe(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("--tls-cert"),
        "{}",
        describe(&run)
    );
}
