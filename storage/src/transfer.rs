//! Moving one file: the streamed copy with its size and md5 checks, the empty-file case,
//! and sync's notion of a file already there.

use futures::TryStreamExt;
use md5::{Digest, Md5};
use opendal::{Metadata, Operator};

use crate::error::{Result, StorageError};
use crate::progress::Progress;
use crate::storage::{CHUNK, CONCURRENT_CHUNKS, Storage};
use crate::uri::{Location, Service};

impl Storage {
    /// Streams one file, then checks the size written (and the md5 when the caller, the
    /// source or the destination states one).
    pub(crate) async fn copy_file(
        &self,
        src: &Location,
        meta: &Metadata,
        dst: &Location,
        progress: &dyn Progress,
        expected_md5: Option<&str>,
    ) -> Result<u64> {
        let src_uri = src.uri();
        let dst_uri = dst.uri();
        let src_op = self.operator(src)?;
        let dst_op = self.operator(dst)?;
        let expected = meta.content_length();
        let name = dst.file_name().unwrap_or_default().to_string();
        progress.start(&name, Some(expected));
        let reader = src_op
            .reader_with(&src.path)
            // One streaming GET: ranged reads in parallel made moto (and servers that slice
            // the whole object per range) many times slower on large files.
            .await
            .map_err(|e| StorageError::remote(&src_uri, e))?;
        let mut stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| StorageError::remote(&src_uri, e))?;
        if expected == 0 && meta.is_file() {
            return self
                .copy_empty(&src_op, src, &dst_op, dst, &name, progress)
                .await;
        }
        let mut writer = dst_op
            .writer_with(&dst.path)
            .chunk(CHUNK)
            .concurrent(CONCURRENT_CHUNKS)
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let mut md5 = Md5::new();
        let mut done = 0u64;
        let copied: Result<()> = async {
            while let Some(bytes) = stream.try_next().await.map_err(|e| StorageError::Read {
                uri: src_uri.clone(),
                source: e,
            })? {
                md5.update(&bytes);
                let len = bytes.len() as u64;
                writer
                    .write(bytes)
                    .await
                    .map_err(|e| StorageError::remote(&dst_uri, e))?;
                done += len;
                progress.advance(len);
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .close()
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let written = dst_op
            .stat(&dst.path)
            .await
            .map_err(|e| StorageError::remote(&dst_uri, e))?;
        let digest = hex::encode(md5.finalize());
        let checks = Checks {
            src: meta,
            dst: &written,
            done,
            digest,
            expected_md5,
        };
        if let Err(e) = checks.verify(&src_uri, &dst_uri) {
            // A copy that failed its check is not left where it would be taken as good.
            let _ = dst_op.delete(&dst.path).await;
            return Err(e);
        }
        progress.finish(&name);
        tracing::debug!(src = %src_uri, dst = %dst_uri, bytes = done, "copied");
        Ok(done)
    }
}

impl Storage {
    /// An empty file: one plain write (some services create nothing for a writer that was
    /// never written to), after checking the source really is empty.
    async fn copy_empty(
        &self,
        src_op: &Operator,
        src: &Location,
        dst_op: &Operator,
        dst: &Location,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let content = src_op
            .read(&src.path)
            .await
            .map_err(|e| StorageError::remote(&src.uri(), e))?;
        if !content.is_empty() {
            return Err(StorageError::SizeMismatch {
                uri: src.uri(),
                expected: 0,
                actual: content.len() as u64,
            });
        }
        match &dst.service {
            Service::Ftp {
                endpoint,
                user,
                password,
            } => {
                crate::ftp_empty::create_empty(
                    &dst.uri(),
                    endpoint,
                    user.as_deref(),
                    password.as_deref(),
                    &dst.path,
                )
                .await?
            }
            _ => dst_op
                .write(&dst.path, Vec::<u8>::new())
                .await
                .map(|_| ())
                .map_err(|e| StorageError::remote(&dst.uri(), e))?,
        }
        let written = dst_op
            .stat(&dst.path)
            .await
            .map_err(|e| StorageError::remote(&dst.uri(), e))?;
        if written.content_length() != 0 {
            return Err(StorageError::SizeMismatch {
                uri: dst.uri(),
                expected: 0,
                actual: written.content_length(),
            });
        }
        progress.finish(name);
        Ok(0)
    }
}

/// What a finished copy is checked against.
struct Checks<'a> {
    src: &'a Metadata,
    dst: &'a Metadata,
    /// Bytes that went through.
    done: u64,
    /// md5 of the bytes that went through.
    digest: String,
    /// md5 stated by the caller (ENA's, for one).
    expected_md5: Option<&'a str>,
}

impl Checks<'_> {
    /// Size read = size stated = size the destination reports; md5 = every md5 stated.
    fn verify(&self, src_uri: &str, dst_uri: &str) -> Result<()> {
        let expected = self.src.content_length();
        let size_known =
            expected > 0 || self.src.last_modified().is_some() || self.src.etag().is_some();
        for (actual, what) in [(self.done, src_uri), (self.dst.content_length(), dst_uri)] {
            if size_known && actual != expected {
                return Err(StorageError::SizeMismatch {
                    uri: what.to_string(),
                    expected,
                    actual,
                });
            }
        }
        let given = self.expected_md5.map(str::to_ascii_lowercase);
        for (stated, uri) in [
            (given, src_uri),
            (md5_of(self.src), src_uri),
            (md5_of(self.dst), dst_uri),
        ] {
            if let Some(stated) = stated
                && stated != self.digest
            {
                return Err(StorageError::ChecksumMismatch {
                    uri: uri.to_string(),
                    expected: stated,
                    actual: self.digest.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The md5 a service states for an object: Content-MD5, or an S3-style single-part etag.
fn md5_of(meta: &Metadata) -> Option<String> {
    use base64::Engine;
    if let Some(b64) = meta.content_md5()
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64)
        && raw.len() == 16
    {
        return Some(hex::encode(raw));
    }
    let etag = meta
        .etag()?
        .trim_matches('"')
        .trim_start_matches("W/")
        .trim_matches('"');
    (etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| etag.to_ascii_lowercase())
}

/// Sync's notion of "already there": same size, and the copy is not older than the source
/// (to the second: object stores keep whole seconds).
pub(crate) fn same_content(src: &Metadata, dst: &Metadata) -> bool {
    if src.content_length() != dst.content_length() {
        return false;
    }
    match (src.last_modified(), dst.last_modified()) {
        (Some(s), Some(d)) => d.into_inner().as_second() >= s.into_inner().as_second(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64, etag: Option<&str>, mtime: Option<i64>) -> Metadata {
        let mut meta = opendal::MetadataBuilder::file(len);
        if let Some(etag) = etag {
            meta.etag(etag);
        }
        if let Some(secs) = mtime {
            meta.last_modified(opendal::raw::Timestamp::from_second(secs).unwrap());
        }
        meta.build()
    }

    const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

    fn checks<'a>(
        src: &'a Metadata,
        dst: &'a Metadata,
        done: u64,
        expected: Option<&'a str>,
    ) -> Checks<'a> {
        Checks {
            src,
            dst,
            done,
            digest: MD5_ABC.to_string(),
            expected_md5: expected,
        }
    }

    #[test]
    fn md5_from_single_part_etags_only() {
        assert_eq!(
            md5_of(&file(3, Some(&format!("\"{MD5_ABC}\"")), None)),
            Some(MD5_ABC.to_string())
        );
        assert_eq!(
            md5_of(&file(3, Some("\"abc-2\""), None)),
            None,
            "multipart etags are not md5s"
        );
        assert_eq!(md5_of(&file(3, None, None)), None);
    }

    #[test]
    fn verification_names_what_differs() {
        let good = file(3, Some(MD5_ABC), Some(10));
        assert!(
            checks(&good, &good, 3, Some(MD5_ABC))
                .verify("s", "d")
                .is_ok()
        );
        let short = file(2, None, Some(10));
        let err = checks(&good, &short, 3, None).verify("s", "d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d: size mismatch after transfer: expected 3 bytes, got 2"
        );
        let err = checks(&good, &good, 2, None).verify("s", "d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "s: size mismatch after transfer: expected 3 bytes, got 2"
        );
        let other = "0".repeat(32);
        let err = checks(&good, &good, 3, Some(&other))
            .verify("s", "d")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("s: md5 mismatch after transfer: expected {other}, got {MD5_ABC}")
        );
    }

    #[test]
    fn sync_compares_size_then_whole_seconds() {
        assert!(same_content(
            &file(3, None, Some(10)),
            &file(3, None, Some(10))
        ));
        assert!(same_content(
            &file(3, None, Some(10)),
            &file(3, None, Some(11))
        ));
        assert!(
            !same_content(&file(3, None, Some(11)), &file(3, None, Some(10))),
            "source newer"
        );
        assert!(
            !same_content(&file(3, None, Some(10)), &file(4, None, Some(10))),
            "size differs"
        );
    }
}
