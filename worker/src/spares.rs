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
//! emptying it just before its command is spawned. Short tasks in a row thus pay one rename and
//! no thread hop for their work dirs. What no execution took is moved out of the way to
//! `WORK_DIR/spare-<n>` and emptied by [`Spares::recycle_released`], which the agent runs a
//! moment later. All methods but `release` block: call them from `spawn_blocking`, or where
//! blocking a moment is already the price (the native executor's spawn).
//!
//! Reading a folder costs more than the rest of cleaning it (ext4 builds a hash tree of a
//! one-block directory to list it). So a folder found empty is remembered by its [`Stamp`],
//! and not read again while the stamp holds: a task that adds an entry changes it.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, RawDir, Stat, fstatfs, mkdirat, openat, statat, unlinkat,
};
use rustix::time::{ClockId, clock_gettime};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::{ExecDir, open_for_writing};

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
    /// The folders found empty when each work dir (by path) was last cleaned; `None` where
    /// the filesystem's change times are not this kernel's (see [`Stamp`]).
    stamps: Option<Mutex<HashMap<PathBuf, Stamps>>>,
}

impl Spares {
    pub fn new(work_dir: &Path, max: usize) -> Spares {
        Spares {
            work_dir: work_dir.to_owned(),
            free: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            max,
            stamps: local_times(work_dir).then(|| Mutex::new(HashMap::new())),
        }
    }

    /// The stamps recorded when the work dir at `root` was last cleaned, forgotten.
    fn take_stamps(&self, root: &Path) -> Option<Stamps> {
        lock(self.stamps.as_ref()?).remove(root)
    }

    /// Records the stamps of the work dir just cleaned at `root`.
    fn keep_stamps(&self, root: &Path, stamps: Stamps) {
        let Some(map) = &self.stamps else { return };
        let mut map = lock(map);
        // Work dirs kept for a look (failed executions) are never taken back: bounded.
        if map.len() >= 4 * self.max + 64 {
            map.clear();
        }
        map.insert(root.to_owned(), stamps);
    }

    /// Cleans the work dir at `root`, which was at `was` before (its stamps are moved along).
    fn clean_at(&self, was: &Path, root: &Path) -> io::Result<Ready> {
        let known = self.take_stamps(was);
        let (ready, stamps) = clean(root, known, self.stamps.is_some())?;
        self.keep_stamps(root, stamps);
        Ok(ready)
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

    /// Creates clean spares until there are `n` (at most the pool's size): as many work dirs
    /// as the agent may hold executions, made before its first task rather than by it.
    pub fn fill(&self, n: usize) -> io::Result<()> {
        while lock(&self.free).len() < n.min(self.max) {
            let spare = self.new_spare_path();
            std::fs::create_dir(&spare)?;
            // Cleaning an empty dir creates its folders and logs.
            if let Err(e) = self.clean_at(&spare, &spare) {
                remove(&spare);
                return Err(e);
            }
            lock(&self.free).push(spare);
        }
        Ok(())
    }

    fn new_spare_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.work_dir
            .join(format!("{PREFIX}{}-{n}", std::process::id()))
    }

    /// Records that the work dir of an execution that is over may be reused. Does not block.
    pub fn release(&self, dir: &ExecDir) {
        lock(&self.released).push(dir.root().to_owned());
    }

    /// Whether released work dirs wait for [`Spares::recycle_released`].
    pub fn has_released(&self) -> bool {
        !lock(&self.released).is_empty()
    }

    /// Prepares `dir` for an execution: a released work dir (emptied) or a clean spare moved
    /// in place, else new folders (around what staging put there already).
    pub fn prepare(&self, dir: &ExecDir) -> io::Result<Ready> {
        if let Some(ready) = self.take(dir) {
            return Ok(ready);
        }
        for sub in [dir.input(), dir.output(), dir.tmp(), dir.resource()] {
            std::fs::create_dir_all(sub)?;
        }
        Ready::open(open_dir(CWD, dir.root())?)
    }

    /// Moves a released work dir (emptied) or a clean spare to `dir`. None when there was
    /// none to take, or `dir` exists already.
    pub fn take(&self, dir: &ExecDir) -> Option<Ready> {
        loop {
            // Popped on its own line: the guard must not live through the body.
            let Some(old) = lock(&self.released).pop() else {
                break;
            };
            match move_back_on_error(&self.released, old.clone(), dir.root()) {
                Ok(()) => match self.clean_at(&old, dir.root()) {
                    Ok(ready) => return Some(ready),
                    Err(e) => {
                        tracing::debug!("cannot clean {}: {e}", dir.root().display());
                        remove(dir.root());
                        return None;
                    }
                },
                // Gone already (an execution canceled before its work dir existed).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            }
        }
        let spare = lock(&self.free).pop()?;
        move_back_on_error(&self.free, spare.clone(), dir.root()).ok()?;
        if let Some(stamps) = self.take_stamps(&spare) {
            self.keep_stamps(dir.root(), stamps);
        }
        match open_dir(CWD, dir.root()).and_then(Ready::open) {
            Ok(ready) => Some(ready),
            Err(e) => {
                tracing::debug!("cannot open {}: {e}", dir.root().display());
                remove(dir.root());
                None
            }
        }
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
        let spare = self.new_spare_path();
        if let Err(e) = std::fs::rename(dir.root(), &spare) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot move {} away: {e}", dir.root().display());
                remove(dir.root());
            }
            self.take_stamps(dir.root());
            return;
        }
        self.keep_from(dir.root(), spare);
    }

    fn keep(&self, spare: PathBuf) {
        self.keep_from(&spare.clone(), spare);
    }

    /// Cleans `spare` (the work dir that was at `was`) into the pool, or removes it when the
    /// pool is full.
    fn keep_from(&self, was: &Path, spare: PathBuf) {
        if lock(&self.free).len() >= self.max {
            self.take_stamps(was);
            remove(&spare);
            return;
        }
        match self.clean_at(was, &spare) {
            Ok(_) => lock(&self.free).push(spare),
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

/// A work dir ready for an execution, open: its root (for the files the execution creates
/// there) and its two logs, empty, open for writing.
#[derive(Debug)]
pub struct Ready {
    pub root: OwnedFd,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

impl Ready {
    /// Opens the logs of the work dir open at `root`, creating them or emptying them.
    fn open(root: OwnedFd) -> io::Result<Ready> {
        let [stdout, stderr] = LOGS.map(|log| open_empty(&root, OsStr::from_bytes(log)));
        Ok(Ready {
            stdout: stdout?,
            stderr: stderr?,
            root,
        })
    }
}

/// Opens the regular file `name` of `dir` for writing, created or emptied. Truncated only when
/// not empty: ext4 flushes a file truncated to zero when it is closed.
fn open_empty(dir: &OwnedFd, name: &OsStr) -> io::Result<std::fs::File> {
    let file = open_for_writing(dir, name)?;
    if file.metadata()?.len() > 0 {
        file.set_len(0)?;
    }
    Ok(file)
}

/// The folders of a work dir, by name (see [`ExecDir`]).
const FOLDERS: [&[u8]; 4] = [b"input", b"output", b"tmp", b"resource"];
/// The logs of a work dir, by name.
const LOGS: [&[u8]; 2] = [b"stdout.log", b"stderr.log"];
const STATE_FILE: &[u8] = crate::state::STATE_FILE.as_bytes();

/// A folder as it was when found empty: its inode and change time. Adding an entry to a
/// directory sets its change time to the kernel's clock, and no call sets a change time
/// back, so a folder whose stamp is the same later is still empty, provided the clock had
/// passed that change time when the stamp was taken ([`Stamp::settled`]). Kept only where the
/// filesystem takes its times from this kernel ([`local_times`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: (i64, i64),
}

/// The stamps of a work dir's [`FOLDERS`], where they were found empty.
type Stamps = [Option<Stamp>; FOLDERS.len()];

/// How long a folder's change time must lie in the past before its stamp is trusted: a
/// change within the same tick of the coarse clock leaves the time as it was, and this also
/// covers the clock stepped back by as much.
const SETTLED: i64 = 1;

impl Stamp {
    fn of(stat: &Stat) -> Stamp {
        Stamp {
            ino: stat.st_ino,
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
        }
    }

    /// Whether the clock has moved on from the change time far enough that any later change
    /// gets another time.
    fn settled(&self) -> bool {
        let now = clock_gettime(ClockId::RealtimeCoarse);
        self.ctime.0 + SETTLED < now.tv_sec
    }
}

/// Whether the filesystem of `dir` stamps changes with this kernel's clock (a local disk
/// filesystem or tmpfs, not a network or FUSE one).
fn local_times(dir: &Path) -> bool {
    // From statfs(2).
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const TMPFS: i64 = 0x0102_1994;
    let Ok(fd) = open_dir(CWD, dir) else {
        return false;
    };
    // `f_type`'s integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    fstatfs(&fd).is_ok_and(|fs| [EXT4, XFS, BTRFS, TMPFS].contains(&(fs.f_type as i64)))
}

/// Empties a former work dir: its four folders stay (emptied, or created when missing), its
/// logs are truncated (or created), its `state.json` stays (a later execution overwrites it; the
/// scan ignores a foreign one), and anything else goes. Returns it open, logs and all, and
/// the stamps of the folders found empty (when `stamp`): a folder whose stamp is the one in
/// `known` is not read.
///
/// Everything below the root is reached from the root's file descriptor, read with a buffer
/// on the stack: no path walk and no allocation per folder, which is most of what cleaning
/// a work dir costs when the task left nothing behind.
fn clean(root: &Path, known: Option<Stamps>, stamp: bool) -> io::Result<(Ready, Stamps)> {
    let root_fd = open_dir(CWD, root)?;
    let mut folders_seen = [false; FOLDERS.len()];
    let mut stamps: Stamps = [None; FOLDERS.len()];
    let mut stray = Vec::new();
    for_each_entry(&root_fd, |name, kind| {
        let bytes = name.to_bytes();
        let kind = match kind {
            FileType::Unknown => {
                FileType::from_raw_mode(statat(&root_fd, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
            }
            kind => kind,
        };
        if let (Some(i), FileType::Directory) = (FOLDERS.iter().position(|f| *f == bytes), kind) {
            let now = if stamp {
                Some(Stamp::of(&statat(
                    &root_fd,
                    name,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?))
            } else {
                None
            };
            let unchanged = now.is_some() && known.is_some_and(|k| k[i] == now);
            if unchanged {
                // Still empty: not read.
                stamps[i] = now;
            } else {
                let path = root.join(OsStr::from_bytes(bytes));
                let had_entries = empty(&root_fd, name, &path)?;
                // Found empty, so its stamp stands for an empty folder once it has settled
                // (removing entries moves it: emptied now, it is read again next time).
                if !had_entries && now.is_some_and(|s| s.settled()) {
                    stamps[i] = now;
                }
            }
            folders_seen[i] = true;
        } else if !((bytes == STATE_FILE || LOGS.contains(&bytes)) && kind == FileType::RegularFile)
        {
            stray.push((name.to_owned(), kind));
        }
        Ok(())
    })?;
    for (name, kind) in stray {
        remove_at(&root_fd, &name, kind, root)?;
    }
    for (folder, seen) in FOLDERS.iter().zip(folders_seen) {
        if !seen {
            mkdirat(
                &root_fd,
                OsStr::from_bytes(folder),
                Mode::from_raw_mode(0o777),
            )?;
        }
    }
    Ok((Ready::open(root_fd)?, stamps))
}

fn open_dir<Fd: AsFd, P: rustix::path::Arg>(at: Fd, path: P) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    Ok(openat(at, path, flags, Mode::empty())?)
}

/// Calls `f` with the name and type of each entry of the open directory `dir` (`.` and `..`
/// left out).
fn for_each_entry(
    dir: &OwnedFd,
    mut f: impl FnMut(&CStr, FileType) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = RawDir::new(dir, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            f(name, entry.file_type())?;
        }
    }
    Ok(())
}

/// Empties the folder `name` of the directory `parent` (at `path`). Returns whether there was
/// anything to remove.
fn empty(parent: &OwnedFd, name: &CStr, path: &Path) -> io::Result<bool> {
    let dir = open_dir(parent, name)?;
    let mut found = Vec::new();
    for_each_entry(&dir, |name, kind| {
        found.push((name.to_owned(), kind));
        Ok(())
    })?;
    // Removed once read: the listing of a directory changing under it may skip entries.
    let removed = !found.is_empty();
    for (name, kind) in found {
        remove_at(&dir, &name, kind, path)?;
    }
    Ok(removed)
}

/// Removes the entry `name` of the directory `dir` (at `path`), a whole tree for a folder.
fn remove_at(dir: &OwnedFd, name: &CStr, kind: FileType, path: &Path) -> io::Result<()> {
    let is_dir = match kind {
        FileType::Unknown => {
            FileType::from_raw_mode(statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
                == FileType::Directory
        }
        kind => kind == FileType::Directory,
    };
    if is_dir {
        // Rare (a task left a tree behind): the standard library's removal, which does
        // not follow symbolic links either.
        std::fs::remove_dir_all(path.join(OsStr::from_bytes(name.to_bytes())))
    } else {
        Ok(unlinkat(dir, name, AtFlags::empty())?)
    }
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
    use crate::state::{ExecutionId, Stream};

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
    fn filling_makes_clean_spares_up_to_the_pool_size() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 2);
        spares.fill(5).unwrap();
        let made = std::fs::read_dir(work.path()).unwrap().count();
        assert_eq!(made, 2, "no more than the pool holds");
        spares.fill(2).unwrap();
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 2);
        for id in [1, 2] {
            let dir = ExecDir::new(work.path(), ExecutionId(id));
            assert!(spares.take(&dir).is_some(), "spare {id}");
            for folder in [dir.input(), dir.output(), dir.tmp(), dir.resource()] {
                assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0, "{folder:?}");
            }
            assert_eq!(std::fs::read(dir.log(Stream::Stderr)).unwrap(), b"");
        }
        assert!(
            spares
                .take(&ExecDir::new(work.path(), ExecutionId(3)))
                .is_none()
        );
    }

    #[test]
    fn a_recycled_dir_comes_back_clean_under_its_new_name() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let old = used_dir(work.path(), 1);
        spares.recycle(&old);
        assert!(!old.root().exists(), "the old work dir is gone");

        let new = ExecDir::new(work.path(), ExecutionId(2));
        let mut ready = spares.take(&new).expect("a spare");
        assert!(new.output().is_dir() && new.tmp().is_dir());
        assert_eq!(std::fs::read_dir(new.output()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(new.tmp()).unwrap().count(), 0);
        assert_eq!(std::fs::read(new.log(Stream::Stdout)).unwrap(), b"");
        // What it hands over is the new work dir, open.
        use std::io::Write;
        ready.stdout.write_all(b"out").unwrap();
        ready.stderr.write_all(b"err").unwrap();
        assert_eq!(std::fs::read(new.log(Stream::Stdout)).unwrap(), b"out");
        assert_eq!(std::fs::read(new.log(Stream::Stderr)).unwrap(), b"err");
        let state = crate::state::StateFile {
            execution_id: ExecutionId(2),
            task_id: 7,
            phase: crate::state::Phase::Abandoned,
        };
        crate::state::StateWriter::open_in(&ready.root)
            .unwrap()
            .write(&state)
            .unwrap();
        assert_eq!(crate::state::StateFile::read(&new).unwrap(), state);
        assert!(!new.root().join("stray").exists());
        assert!(
            spares
                .take(&ExecDir::new(work.path(), ExecutionId(3)))
                .is_none(),
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
        assert!(spares.take(&new).is_some());
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
        assert!(
            spares.take(&new).is_some(),
            "the recycled dir is a spare now"
        );
        assert_eq!(std::fs::read_dir(new.output()).unwrap().count(), 0);
        assert!(
            spares
                .take(&ExecDir::new(work.path(), ExecutionId(3)))
                .is_none()
        );
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
        assert!(spares.take(&staged).is_none());
        assert_eq!(
            std::fs::read(staged.input().join("reads.fq")).unwrap(),
            b"@r"
        );
        assert!(spares.has_released(), "kept for the next execution");
        assert!(
            spares
                .take(&ExecDir::new(work.path(), ExecutionId(3)))
                .is_some()
        );
    }

    #[test]
    fn cleaning_replaces_odd_entries_and_follows_no_link() {
        let work = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "precious").unwrap();
        let dir = used_dir(work.path(), 1);
        std::fs::remove_dir(dir.input()).unwrap();
        std::fs::write(dir.input(), "a file where a folder belongs").unwrap();
        std::fs::remove_dir(dir.resource()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.resource()).unwrap();
        std::fs::remove_file(dir.log(Stream::Stdout)).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), dir.log(Stream::Stdout)).unwrap();

        let (ready, _) = clean(dir.root(), None, true).unwrap();
        for folder in [dir.input(), dir.output(), dir.tmp(), dir.resource()] {
            let meta = std::fs::symlink_metadata(&folder).unwrap();
            assert!(meta.is_dir(), "{folder:?} is a real folder again");
            assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0, "{folder:?}");
        }
        assert!(
            std::fs::symlink_metadata(dir.log(Stream::Stdout))
                .unwrap()
                .is_file()
        );
        assert_eq!(std::fs::read(dir.log(Stream::Stdout)).unwrap(), b"");
        assert_eq!(
            std::fs::read(outside.path().join("keep")).unwrap(),
            b"precious",
            "what the links pointed to is untouched"
        );
        assert_eq!(
            std::fs::read(dir.state_file()).unwrap(),
            b"{}",
            "state.json stays"
        );
        // Nor is state.json written through a link a task left in its place.
        std::fs::remove_file(dir.state_file()).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), dir.state_file()).unwrap();
        assert!(crate::state::StateWriter::open_in(&ready.root).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("keep")).unwrap(),
            b"precious"
        );
    }

    #[test]
    fn a_folder_found_empty_is_not_read_again_until_a_task_adds_to_it() {
        let work = tempfile::tempdir().unwrap();
        let spares = Spares::new(work.path(), 4);
        let stamps = |dir: &ExecDir| {
            let map = spares
                .stamps
                .as_ref()
                .expect("stamps on the test's filesystem");
            lock(map).get(dir.root()).copied()
        };
        spares.fill(1).unwrap();
        let first = ExecDir::new(work.path(), ExecutionId(1));
        spares.take(&first).unwrap();
        // Changed within the last second: not trusted yet (a change in the same tick of the
        // clock would keep the same time).
        assert_eq!(stamps(&first), Some([None; 4]));
        std::thread::sleep(std::time::Duration::from_millis(2100));

        spares.release(&first);
        let second = ExecDir::new(work.path(), ExecutionId(2));
        spares.take(&second).unwrap();
        let kept = stamps(&second).unwrap();
        assert!(kept.iter().all(Option::is_some), "{kept:?}");

        // A task adds to two folders; the next execution finds them empty again.
        std::fs::write(second.output().join("result"), "x").unwrap();
        std::fs::create_dir_all(second.tmp().join("a/b")).unwrap();
        spares.release(&second);
        let third = ExecDir::new(work.path(), ExecutionId(3));
        spares.take(&third).unwrap();
        for folder in [third.input(), third.output(), third.tmp(), third.resource()] {
            assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0, "{folder:?}");
        }
        let now = stamps(&third).unwrap();
        assert_eq!(now[0], kept[0], "input was not read");
        assert_eq!(now[3], kept[3], "resource was not read");
        assert_eq!(
            (now[1], now[2]),
            (None, None),
            "just emptied: not trusted yet"
        );
        assert!(stamps(&second).is_none(), "moved along with the dir");
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
        assert!(
            restarted
                .take(&ExecDir::new(work.path(), ExecutionId(3)))
                .is_some()
        );
    }
}
