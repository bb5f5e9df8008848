//! Recycled work dirs.
//!
//! Creating and deleting a work dir for every execution (five directories and three files)
//! makes the filesystem allocate and free inodes at a high rate, which on some filesystems
//! (ext4 without a journal scans recently deleted inodes on every allocation) costs more than
//! running a short task. So the work dir of an execution that is over is emptied (its four
//! folders emptied, its logs truncated) and renamed into place for a later execution.
//!
//! The agent hands over a finished work dir with [`Spares::release`], which only records it:
//! the next execution to start takes it over ([`Spares::take`]), renaming it to its own name and
//! emptying it in the same blocking call that prepares its work dir. Short tasks in a row thus
//! pay one rename and no thread hop for their work dirs. What no execution took is moved out of
//! the way to `WORK_DIR/spare-<n>` and emptied by [`Spares::recycle_released`], which the agent
//! runs a moment later. All methods but `release` block: call them from `spawn_blocking`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::{ExecDir, Stream};

const PREFIX: &str = "spare-";

/// A pool of work dirs to reuse.
#[derive(Debug)]
pub struct Spares {
    work_dir: PathBuf,
    /// Clean spares, ready to be renamed into place.
    free: Mutex<Vec<PathBuf>>,
    /// Work dirs of executions that are over, still under their own name and not emptied.
    released: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    max: usize,
}

impl Spares {
    pub fn new(work_dir: &Path, max: usize) -> Spares {
        Spares {
            work_dir: work_dir.to_owned(),
            free: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
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

    /// Records that the work dir of an execution that is over may be reused. Does not block.
    pub fn release(&self, dir: &ExecDir) {
        lock(&self.released).push(dir.root().to_owned());
    }

    /// Whether released work dirs wait for [`Spares::recycle_released`].
    pub fn has_released(&self) -> bool {
        !lock(&self.released).is_empty()
    }

    /// Moves a released work dir (emptied) or a clean spare to `dir`. True when `dir` then
    /// holds the four empty folders and empty logs; false when there was none to take, or
    /// `dir` exists already.
    pub fn take(&self, dir: &ExecDir) -> bool {
        loop {
            // Popped on its own line: the guard must not live through the body.
            let Some(old) = lock(&self.released).pop() else {
                break;
            };
            match move_back_on_error(&self.released, old, dir.root()) {
                Ok(()) => match clean(dir.root()) {
                    Ok(()) => return true,
                    Err(e) => {
                        tracing::debug!("cannot clean {}: {e}", dir.root().display());
                        remove(dir.root());
                        return false;
                    }
                },
                // Gone already (an execution canceled before its work dir existed).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return false,
            }
        }
        let Some(spare) = lock(&self.free).pop() else {
            return false;
        };
        move_back_on_error(&self.free, spare, dir.root()).is_ok()
    }

    /// Recycles the released work dirs no execution took.
    pub fn recycle_released(&self) {
        let released = std::mem::take(&mut *lock(&self.released));
        for root in released {
            self.recycle(&ExecDir::at(root));
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
        if lock(&self.free).len() >= self.max {
            remove(&spare);
            return;
        }
        match clean(&spare) {
            Ok(()) => lock(&self.free).push(spare),
            Err(e) => {
                tracing::debug!("cannot clean {}: {e}", spare.display());
                remove(&spare);
            }
        }
    }
}

/// Renames `from` (taken out of `pool`) to `to`. When that fails for another reason than
/// `from` being gone (`to` exists, say), `from` goes back to `pool`.
fn move_back_on_error(pool: &Mutex<Vec<PathBuf>>, from: PathBuf, to: &Path) -> io::Result<()> {
    let moved = std::fs::rename(&from, to);
    if let Err(e) = &moved
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!("cannot move {} to {}: {e}", from.display(), to.display());
        lock(pool).push(from);
    }
    moved
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Empties a former work dir: its four folders stay (emptied, or created when missing), its
/// logs are truncated (or created), its `state.json` stays (a later execution overwrites it; the
/// scan ignores a foreign one), and anything else goes.
fn clean(root: &Path) -> io::Result<()> {
    let layout = ExecDir::at(root.to_owned());
    let folders = [
        layout.input(),
        layout.output(),
        layout.tmp(),
        layout.resource(),
    ];
    let logs = [layout.log(Stream::Stdout), layout.log(Stream::Stderr)];
    let (mut folders_seen, mut logs_seen) = (0, 0);
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() && folders.contains(&path) {
            empty(&path)?;
            folders_seen += 1;
        } else if kind.is_file() && logs.contains(&path) {
            // Most logs of short tasks are empty: a stat rather than an open and a truncation.
            if entry.metadata()?.len() > 0 {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(0)?;
            }
            logs_seen += 1;
        } else if !(kind.is_file() && path == layout.state_file()) {
            remove_entry(&path, kind)?;
        }
    }
    if folders_seen < folders.len() {
        for folder in &folders {
            std::fs::create_dir_all(folder)?;
        }
    }
    if logs_seen < logs.len() {
        for log in &logs {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)?;
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
    fn a_released_dir_is_taken_over_by_the_next_execution_emptied() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let old = used_dir(work.path(), 1);
        std::fs::remove_dir(old.resource()).unwrap();
        spares.release(&old);
        assert!(old.root().exists(), "a released dir stays until taken");

        let new = ExecDir::new(work.path(), ExecutionId(2));
        assert!(spares.take(&new));
        assert!(!old.root().exists(), "moved, not copied");
        for folder in [new.input(), new.output(), new.tmp(), new.resource()] {
            assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0, "{folder:?}");
        }
        for stream in Stream::BOTH {
            assert_eq!(std::fs::read(new.log(stream)).unwrap(), b"");
        }
        assert!(!new.root().join("stray").exists());
        assert!(!spares.has_released());
    }

    #[test]
    fn released_dirs_no_execution_took_become_spares() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let old = used_dir(work.path(), 1);
        spares.release(&old);
        // One released dir vanished (an execution canceled before its dir existed).
        spares.release(&ExecDir::new(work.path(), ExecutionId(7)));
        spares.recycle_released();
        assert!(!old.root().exists());
        assert!(!spares.has_released());
        let new = ExecDir::new(work.path(), ExecutionId(2));
        assert!(spares.take(&new), "the recycled dir is a spare now");
        assert_eq!(std::fs::read_dir(new.output()).unwrap().count(), 0);
        assert!(!spares.take(&ExecDir::new(work.path(), ExecutionId(3))));
    }

    #[test]
    fn a_released_dir_does_not_replace_a_dir_with_staged_inputs() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let old = used_dir(work.path(), 1);
        spares.release(&old);
        let staged = ExecDir::new(work.path(), ExecutionId(2));
        std::fs::create_dir_all(staged.input()).unwrap();
        std::fs::write(staged.input().join("reads.fq"), "@r").unwrap();
        assert!(!spares.take(&staged));
        assert_eq!(
            std::fs::read(staged.input().join("reads.fq")).unwrap(),
            b"@r"
        );
        assert!(spares.has_released(), "kept for the next execution");
        assert!(spares.take(&ExecDir::new(work.path(), ExecutionId(3))));
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
