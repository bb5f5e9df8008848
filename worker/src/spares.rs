//! Recycled work dirs.
//!
//! Creating and deleting a work dir for every execution (five directories and three files)
//! makes the filesystem allocate and free inodes at a high rate, which on some filesystems
//! (ext4 without a journal scans recently deleted inodes on every allocation) costs more than
//! running a short task. So a work dir whose execution is over is renamed out of the way to
//! `WORK_DIR/spare-<n>`, emptied (its four folders emptied, its logs truncated), and renamed
//! into place for a later execution. All methods block: call them from `spawn_blocking`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::{ExecDir, Stream};

const PREFIX: &str = "spare-";

/// A pool of clean work dirs.
#[derive(Debug)]
pub struct Spares {
    work_dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    max: usize,
}

impl Spares {
    pub fn new(work_dir: &Path, max: usize) -> Spares {
        Spares {
            work_dir: work_dir.to_owned(),
            free: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            max,
        }
    }

    /// Takes in the spares a previous agent left (cleaning them again: it may have stopped
    /// half-way).
    pub fn adopt(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.work_dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                self.keep(entry.path());
            }
        }
        Ok(())
    }

    /// Moves a clean spare to `dir`; false when there is none (or `dir` exists already).
    pub fn take(&self, dir: &ExecDir) -> bool {
        let Some(spare) = self.lock().pop() else {
            return false;
        };
        match std::fs::rename(&spare, dir.root()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(
                    "cannot move {} to {}: {e}",
                    spare.display(),
                    dir.root().display()
                );
                self.lock().push(spare);
                false
            }
        }
    }

    /// Takes the work dir of an execution that is over: out of the way at once, then emptied
    /// and kept for a later execution (or removed when the pool is full).
    pub fn recycle(&self, dir: &ExecDir) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let spare = self
            .work_dir
            .join(format!("{PREFIX}{}-{n}", std::process::id()));
        if let Err(e) = std::fs::rename(dir.root(), &spare) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot move {} away: {e}", dir.root().display());
                remove(dir.root());
            }
            return;
        }
        self.keep(spare);
    }

    fn keep(&self, spare: PathBuf) {
        if self.lock().len() >= self.max {
            remove(&spare);
            return;
        }
        match clean(&spare) {
            Ok(()) => self.lock().push(spare),
            Err(e) => {
                tracing::debug!("cannot clean {}: {e}", spare.display());
                remove(&spare);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Empties a former work dir: its four folders stay (emptied), its logs are truncated, its
/// `state.json` stays (a later execution overwrites it; the scan ignores a foreign one), and
/// anything else goes.
fn clean(root: &Path) -> io::Result<()> {
    let layout = ExecDir::at(root.to_owned());
    let folders = [
        layout.input(),
        layout.output(),
        layout.tmp(),
        layout.resource(),
    ];
    let logs = [layout.log(Stream::Stdout), layout.log(Stream::Stderr)];
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() && folders.contains(&path) {
            empty(&path)?;
        } else if kind.is_file() && logs.contains(&path) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(0)?;
        } else if !(kind.is_file() && path == layout.state_file()) {
            remove_entry(&path, kind)?;
        }
    }
    Ok(())
}

fn remove_entry(path: &Path, kind: std::fs::FileType) -> io::Result<()> {
    if kind.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

fn empty(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        remove_entry(&entry.path(), entry.file_type()?)?;
    }
    Ok(())
}

fn remove(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ExecutionId;

    fn used_dir(work: &Path, id: i64) -> ExecDir {
        let dir = ExecDir::new(work, ExecutionId(id));
        for sub in [dir.input(), dir.output(), dir.tmp(), dir.resource()] {
            std::fs::create_dir_all(sub).unwrap();
        }
        std::fs::write(dir.log(Stream::Stdout), "out").unwrap();
        std::fs::write(dir.state_file(), "{}").unwrap();
        std::fs::write(dir.output().join("result"), "x").unwrap();
        std::fs::create_dir_all(dir.tmp().join("a/b")).unwrap();
        std::fs::write(dir.root().join("stray"), "x").unwrap();
        dir
    }

    #[test]
    fn a_recycled_dir_comes_back_clean_under_its_new_name() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let old = used_dir(work.path(), 1);
        spares.recycle(&old);
        assert!(!old.root().exists(), "the old work dir is gone");

        let new = ExecDir::new(work.path(), ExecutionId(2));
        assert!(spares.take(&new));
        assert!(new.output().is_dir() && new.tmp().is_dir());
        assert_eq!(std::fs::read_dir(new.output()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(new.tmp()).unwrap().count(), 0);
        assert_eq!(std::fs::read(new.log(Stream::Stdout)).unwrap(), b"");
        assert!(!new.root().join("stray").exists());
        assert!(
            !spares.take(&ExecDir::new(work.path(), ExecutionId(3))),
            "pool empty"
        );
    }

    #[test]
    fn the_pool_is_bounded_and_adopts_leftovers() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 1);
        spares.recycle(&used_dir(work.path(), 1));
        spares.recycle(&used_dir(work.path(), 2));
        let names = |dir: &Path| std::fs::read_dir(dir).unwrap().count();
        assert_eq!(names(work.path()), 1, "one spare kept, the other removed");

        let restarted = Spares::new(work.path(), 4);
        restarted.adopt().unwrap();
        assert!(restarted.take(&ExecDir::new(work.path(), ExecutionId(3))));
    }
}
