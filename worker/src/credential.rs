//! The worker's own credential: a random secret in `WORK_DIR/credential` (mode 0600), made
//! before the agent's first Hello and presented in every Hello. The first Hello under the
//! agent's name binds the worker to it on the server; from then on the shared worker token
//! alone does not open a session under that name. Made here, on disk before it is ever sent,
//! so a stream that breaks cannot lose it. To reset it: stop the agent, `scitqctl worker
//! delete ID`, remove the file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

/// The file in the work dir.
pub const FILE: &str = "credential";

/// Reads the credential, or makes one when there is none. Blocking.
pub fn load_or_create(work_dir: &Path) -> std::io::Result<String> {
    let path = work_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = work_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret)
}

/// A random id for this agent process: the server lets a new session of the same process
/// replace its own old one (half-open after a network stall), and refuses another process
/// under the same name while that one's session is live.
pub fn instance() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_credential_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::load_or_create(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(super::load_or_create(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join(super::FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(super::instance(), super::instance());
    }
}
