//! Where the built scitq binaries are.

use std::path::PathBuf;

/// The directory holding the built binaries: `SCITQ_BIN_DIR` when set, else the cargo
/// profile dir of the running executable (`target/debug/deps/x` → `target/debug`).
///
/// `env!("CARGO_BIN_EXE_…")` only covers binaries of the crate under test, and the scitq
/// binaries live in other crates of the workspace, hence this.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCITQ_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the running executable");
    let mut dir = exe
        .parent()
        .expect("the running executable has a parent dir")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of a built scitq binary (`scitqd`, `scitq-agent`, `scitqctl`); panics with the
/// command to run when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "{name} not found at {}: run `cargo build --workspace` first (or set SCITQ_BIN_DIR)",
            path.display()
        );
    }
    path
}
