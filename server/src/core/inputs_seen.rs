//! What an execution's inputs held when its agent staged them, and whether they still hold
//! it: the identity a resume compares (issue 16), as Nextflow compares its inputs.
//!
//! A file is the same when it has the same path (below its URI) and size, and the same etag
//! when the store gives one (S3 and Azure do: a digest of the content), else the same
//! modification time. A store that gives neither cannot tell, and the file counts as
//! changed. Without an etag, a file rewritten with another content of the same size and
//! given back its old modification time passes for the same (Nextflow's default cache
//! has the same blind spot).

/// One input URI (its `|actions` left out) as the store listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSeen {
    pub uri: String,
    pub files: Vec<SeenFile>,
}

/// A file of an input, as the store listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenFile {
    /// Relative to the input's URI; the file name for a URI naming a file.
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    /// RFC 3339, as the store gives it.
    pub modified: Option<String>,
}

impl SeenFile {
    fn same_as(&self, now: &SeenFile) -> bool {
        if self.path != now.path || self.size != now.size {
            return false;
        }
        match (&self.etag, &now.etag) {
            (Some(then), Some(now)) => then == now,
            _ => self.modified.is_some() && self.modified == now.modified,
        }
    }
}

/// Whether the files an input holds `now` are those it held when it was staged.
pub fn unchanged(staged: &InputSeen, now: &[SeenFile]) -> bool {
    let mut then: Vec<&SeenFile> = staged.files.iter().collect();
    let mut now: Vec<&SeenFile> = now.iter().collect();
    then.sort_by(|a, b| a.path.cmp(&b.path));
    now.sort_by(|a, b| a.path.cmp(&b.path));
    then.len() == now.len() && then.iter().zip(&now).all(|(t, n)| t.same_as(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, etag: Option<&str>, modified: Option<&str>) -> SeenFile {
        SeenFile {
            path: path.to_owned(),
            size,
            etag: etag.map(str::to_owned),
            modified: modified.map(str::to_owned),
        }
    }

    fn staged(files: Vec<SeenFile>) -> InputSeen {
        InputSeen {
            uri: "s3://b/in/".to_owned(),
            files,
        }
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn an_etag_says_it_whatever_the_time() {
        let then = staged(vec![file("a", 3, Some("\"x\""), Some(T1))]);
        assert!(unchanged(&then, &[file("a", 3, Some("\"x\""), Some(T2))]));
        assert!(!unchanged(&then, &[file("a", 3, Some("\"y\""), Some(T1))]));
    }

    #[test]
    fn without_an_etag_the_size_and_time_say_it() {
        let then = staged(vec![file("a", 3, None, Some(T1))]);
        assert!(unchanged(&then, &[file("a", 3, None, Some(T1))]));
        assert!(!unchanged(&then, &[file("a", 4, None, Some(T1))]));
        assert!(!unchanged(&then, &[file("a", 3, None, Some(T2))]));
        let blind = staged(vec![file("a", 3, None, None)]);
        assert!(!unchanged(&blind, &[file("a", 3, None, None)]));
    }

    #[test]
    fn a_file_added_removed_or_renamed_is_a_change() {
        let a = file("a", 1, Some("1"), None);
        let b = file("b", 1, Some("2"), None);
        let then = staged(vec![a.clone(), b.clone()]);
        assert!(unchanged(&then, &[b.clone(), a.clone()]));
        assert!(!unchanged(&then, std::slice::from_ref(&a)));
        assert!(!unchanged(
            &then,
            &[a.clone(), b, file("c", 1, Some("3"), None)]
        ));
        assert!(!unchanged(&then, &[a, file("b2", 1, Some("2"), None)]));
    }
}
