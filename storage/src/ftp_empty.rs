//! Creating an empty file over FTP. opendal's FTP writer opens its data connection on the
//! first byte, so a file with no bytes is never created; this does the one STOR itself.

use suppaftp::tokio::AsyncFtpStream;

use crate::error::{Result, StorageError};

pub(crate) async fn create_empty(
    uri: &str,
    endpoint: &str,
    user: Option<&str>,
    password: Option<&str>,
    path: &str,
) -> Result<()> {
    let failed = |e: suppaftp::FtpError| {
        let reason = e.to_string();
        if reason.contains("530") {
            StorageError::Denied {
                uri: uri.to_string(),
                source: opendal::Error::new(opendal::ErrorKind::PermissionDenied, reason),
            }
        } else {
            StorageError::Remote {
                uri: uri.to_string(),
                source: opendal::Error::new(opendal::ErrorKind::Unexpected, reason),
            }
        }
    };
    let addr = endpoint.trim_start_matches("ftp://");
    let mut ftp = AsyncFtpStream::connect(addr).await.map_err(failed)?;
    ftp.login(user.unwrap_or("anonymous"), password.unwrap_or(""))
        .await
        .map_err(failed)?;
    // Parents first (an existing one answers 550, which is fine).
    let mut parent = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for dir in parts.iter().take(parts.len().saturating_sub(1)) {
        parent.push('/');
        parent.push_str(dir);
        let _ = ftp.mkdir(&parent).await;
    }
    ftp.put_file(format!("/{}", parts.join("/")), &mut tokio::io::empty())
        .await
        .map_err(failed)?;
    let _ = ftp.quit().await;
    Ok(())
}
