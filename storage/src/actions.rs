//! Input actions written after `|` in a URI: `gunzip`, `untar`, `unzip`, `mv:SUBDIR`.
//!
//! They run in order on what the download produced, in the destination folder: `gunzip`
//! turns `x.gz` into `x`, `untar` (plain, gzip or bzip-less tarballs: gzip is detected by its
//! magic bytes) and `unzip` extract next to the archive and remove it, `mv:SUBDIR` moves the
//! current results into `SUBDIR` under the destination. They run on blocking threads.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Gunzip,
    Untar,
    Unzip,
    /// Move into this relative sub-folder of the destination.
    Move(PathBuf),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Gunzip => f.write_str("gunzip"),
            Action::Untar => f.write_str("untar"),
            Action::Unzip => f.write_str("unzip"),
            Action::Move(dir) => write!(f, "mv:{}", dir.display()),
        }
    }
}

/// Splits `LOCATION|action|action` into the location text and its parsed actions.
pub fn split_actions(uri: &str) -> Result<(&str, Vec<Action>)> {
    let mut parts = uri.split('|');
    let location = parts.next().unwrap_or_default();
    let actions = parts
        .map(|text| parse_action(uri, text))
        .collect::<Result<Vec<_>>>()?;
    Ok((location, actions))
}

fn parse_action(uri: &str, text: &str) -> Result<Action> {
    let bad = |reason: &str| StorageError::BadAction {
        uri: uri.to_string(),
        action: text.to_string(),
        reason: reason.to_string(),
    };
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg.trim())),
        None => (text.trim(), None),
    };
    let action = match name {
        "gunzip" => Action::Gunzip,
        "untar" => Action::Untar,
        "unzip" => Action::Unzip,
        "mv" => {
            let dir = arg.ok_or_else(|| bad("mv needs a folder: mv:SUBDIR"))?;
            return Ok(Action::Move(valid_subdir(dir).map_err(&bad)?));
        }
        "" => return Err(bad("empty action")),
        _ => {
            return Err(bad(
                "unknown action (known: gunzip, untar, unzip, mv:SUBDIR)",
            ));
        }
    };
    if arg.is_some() {
        return Err(bad("this action takes no argument"));
    }
    Ok(action)
}

fn valid_subdir(dir: &str) -> std::result::Result<PathBuf, &'static str> {
    let path = Path::new(dir);
    if dir.is_empty() {
        return Err("mv needs a folder: mv:SUBDIR");
    }
    if path.is_absolute() {
        return Err("the folder must be relative to the destination");
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("the folder must stay inside the destination (no ..)");
    }
    Ok(path.to_path_buf())
}

/// Applies `actions` in order to `paths` (files or folders inside `dest`); returns the results.
pub(crate) fn apply(
    actions: &[Action],
    dest: &Path,
    mut paths: Vec<PathBuf>,
) -> Result<Vec<PathBuf>> {
    for action in actions {
        let mut next = Vec::new();
        match action {
            Action::Move(sub) => {
                let target = dest.join(sub);
                std::fs::create_dir_all(&target).map_err(|e| StorageError::local(&target, e))?;
                for path in &paths {
                    let name = path.file_name().expect("downloaded paths have a name");
                    let to = target.join(name);
                    std::fs::rename(path, &to).map_err(|e| failed(action, path, e))?;
                    next.push(to);
                }
            }
            _ => {
                for path in &paths {
                    next.extend(apply_one(action, path)?);
                }
            }
        }
        paths = next;
    }
    Ok(paths)
}

fn failed(action: &Action, path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::ActionFailed {
        action: action.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn apply_one(action: &Action, path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        return Err(failed(action, path, "is a folder, not an archive"));
    }
    let dir = path.parent().expect("downloaded files have a parent");
    let open = || File::open(path).map_err(|e| failed(action, path, e));
    match action {
        Action::Gunzip => {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let Some(stem) = name.strip_suffix(".gz").filter(|s| !s.is_empty()) else {
                return Err(failed(action, path, "name does not end in .gz"));
            };
            let out_path = dir.join(stem);
            let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::new(open()?));
            let mut out = File::create(&out_path).map_err(|e| StorageError::local(&out_path, e))?;
            std::io::copy(&mut decoder, &mut out).map_err(|e| failed(action, path, e))?;
            remove(path)?;
            Ok(vec![out_path])
        }
        Action::Untar => {
            let mut reader = BufReader::new(open()?);
            let mut magic = [0u8; 2];
            let gzipped = reader.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
            let reader = BufReader::new(open()?);
            let source: Box<dyn Read> = if gzipped {
                Box::new(flate2::read::MultiGzDecoder::new(reader))
            } else {
                Box::new(reader)
            };
            let mut archive = tar::Archive::new(source);
            let mut tops = Vec::new();
            for entry in archive.entries().map_err(|e| failed(action, path, e))? {
                let mut entry = entry.map_err(|e| failed(action, path, e))?;
                let entry_path = entry
                    .path()
                    .map_err(|e| failed(action, path, e))?
                    .into_owned();
                note_top(&mut tops, dir, &entry_path);
                // unpack_in refuses entries that would land outside `dir`.
                entry.unpack_in(dir).map_err(|e| failed(action, path, e))?;
            }
            remove(path)?;
            Ok(tops)
        }
        Action::Unzip => {
            let mut archive = zip::ZipArchive::new(open()?).map_err(|e| failed(action, path, e))?;
            let mut tops = Vec::new();
            for i in 0..archive.len() {
                let file = archive.by_index(i).map_err(|e| failed(action, path, e))?;
                if let Some(name) = file.enclosed_name() {
                    note_top(&mut tops, dir, &name);
                }
            }
            archive.extract(dir).map_err(|e| failed(action, path, e))?;
            remove(path)?;
            Ok(tops)
        }
        Action::Move(_) => unreachable!("handled by apply"),
    }
}

/// Records the top-level entry of an archive member (what `mv:` should move afterwards).
fn note_top(tops: &mut Vec<PathBuf>, dir: &Path, member: &Path) {
    let Some(Component::Normal(first)) = member
        .components()
        .find(|c| !matches!(c, Component::CurDir))
    else {
        return;
    };
    let top = dir.join(first);
    if !tops.contains(&top) {
        tops.push(top);
    }
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| StorageError::local(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_chains() {
        let (loc, actions) = split_actions("s3://b/x.tar.gz|untar|mv:ref/db").unwrap();
        assert_eq!(loc, "s3://b/x.tar.gz");
        assert_eq!(actions, [Action::Untar, Action::Move("ref/db".into())]);
        let (_, actions) = split_actions("s3://b/x").unwrap();
        assert!(actions.is_empty());
    }

    #[test]
    fn bad_actions_are_named() {
        let cases = [
            ("s3://b/x|gunzp", "gunzp", "unknown action"),
            ("s3://b/x|mv:", "mv:", "mv needs a folder"),
            ("s3://b/x|mv", "mv", "mv needs a folder"),
            ("s3://b/x|mv:../up", "mv:../up", "no .."),
            ("s3://b/x|mv:/abs", "mv:/abs", "relative"),
            ("s3://b/x|untar:y", "untar:y", "takes no argument"),
            ("s3://b/x||untar", "", "empty action"),
        ];
        for (uri, action, reason) in cases {
            let err = split_actions(uri).unwrap_err().to_string();
            let prefix = format!("invalid action \"{action}\" in \"{uri}\": ");
            assert!(
                err.starts_with(&prefix) && err.contains(reason),
                "{uri}: {err}"
            );
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gunzip_then_move() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reads.fq.gz");
        std::fs::write(&file, gz(b"@r1\nACGT\n")).unwrap();
        let actions = [Action::Gunzip, Action::Move("in".into())];
        let out = apply(&actions, dir.path(), vec![file.clone()]).unwrap();
        assert_eq!(out, [dir.path().join("in/reads.fq")]);
        assert_eq!(std::fs::read(&out[0]).unwrap(), b"@r1\nACGT\n");
        assert!(!file.exists());
    }

    #[test]
    fn untar_gzipped_and_plain() {
        for gzipped in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "db/index.txt", &b"hello"[..])
                .unwrap();
            let tar = builder.into_inner().unwrap();
            let archive = dir.path().join("db.tar.gz");
            std::fs::write(&archive, if gzipped { gz(&tar) } else { tar }).unwrap();
            let out = apply(&[Action::Untar], dir.path(), vec![archive.clone()]).unwrap();
            assert_eq!(out, [dir.path().join("db")]);
            assert_eq!(
                std::fs::read(dir.path().join("db/index.txt")).unwrap(),
                b"hello"
            );
            assert!(!archive.exists());
        }
    }

    #[test]
    fn unzip_extracts() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.zip");
        let mut zip = zip::ZipWriter::new(File::create(&archive).unwrap());
        zip.start_file("top.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"zipped").unwrap();
        zip.finish().unwrap();
        let out = apply(&[Action::Unzip], dir.path(), vec![archive]).unwrap();
        assert_eq!(out, [dir.path().join("top.txt")]);
        assert_eq!(std::fs::read(&out[0]).unwrap(), b"zipped");
    }

    #[test]
    fn failures_name_action_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain.txt");
        std::fs::write(&file, b"not gzip").unwrap();
        let err = apply(&[Action::Gunzip], dir.path(), vec![file.clone()]).unwrap_err();
        assert!(err.to_string().starts_with("action gunzip on "), "{err}");
        assert!(
            err.to_string()
                .contains("plain.txt: name does not end in .gz"),
            "{err}"
        );
        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, b"not gzip").unwrap();
        assert!(apply(&[Action::Gunzip], dir.path(), vec![bad]).is_err());
        let err = apply(&[Action::Unzip], dir.path(), vec![file]).unwrap_err();
        assert!(err.to_string().contains("plain.txt"), "{err}");
    }
}
