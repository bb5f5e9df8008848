//! Per-worker credentials. Every agent keeps a secret of its own in its work dir
//! (`WORK_DIR/credential`, made before its first Hello) and presents it in each Hello. The
//! first Hello under a name binds the worker to that secret (only its SHA-256 is stored);
//! from then on only a session presenting it opens under that name, so the shared worker
//! token, which every agent machine holds, can no longer impersonate a worker.
//!
//! The agent makes the secret rather than scitqd handing one out in `Welcome`: a secret
//! lost with a stream that broke before the agent stored it would lock the worker out, one
//! the agent wrote before sending cannot be lost. Enrollment (the recruiter) will write the
//! file on the machines it makes and bind the hash when it creates the worker.

use sha2::{Digest, Sha256};

/// Shortest accepted secret (the agent makes 64 hex characters).
pub const MIN_LEN: usize = 32;
/// Longest accepted secret.
pub const MAX_LEN: usize = 256;

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What a Hello's credential means for the worker of its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The worker has none yet: bind it to this one (store the hash).
    Bind(String),
    /// The credential matches.
    Accept,
    /// Neither the worker nor the Hello has one (an agent from before credentials): let in,
    /// unbound.
    Unbound,
}

/// Why a Hello is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "worker {name:?} has its own credential and this session presented none: the shared \
         worker token alone does not open it (its agent keeps the credential in \
         WORK_DIR/credential; to reset it, stop the agent and run `scitqctl worker delete {id}`)"
    )]
    Missing { name: String, id: i64 },
    #[error(
        "worker {name:?}: the credential presented is not this worker's (its agent keeps it \
         in WORK_DIR/credential; to reset it, stop the agent and run `scitqctl worker delete {id}`)"
    )]
    Wrong { name: String, id: i64 },
    #[error(
        "credential of worker {name:?} is {len} bytes: it must be {MIN_LEN} to {MAX_LEN} printable characters"
    )]
    Malformed { name: String, len: usize },
}

/// Checks the credential a Hello presents (`presented`, empty: none) against the stored
/// hash of its worker (`None`: unbound, or a new worker).
pub fn check(
    name: &str,
    id: i64,
    stored: Option<&str>,
    presented: Option<&str>,
) -> Result<Check, Refused> {
    let presented = presented.filter(|p| !p.is_empty());
    if let Some(p) = presented
        && (p.len() < MIN_LEN || p.len() > MAX_LEN || !p.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(Refused::Malformed {
            name: name.to_owned(),
            len: p.len(),
        });
    }
    match (stored, presented) {
        (None, None) => Ok(Check::Unbound),
        (None, Some(p)) => Ok(Check::Bind(hash(p))),
        (Some(_), None) => Err(Refused::Missing {
            name: name.to_owned(),
            id,
        }),
        // Both sides are hashes of fixed length: comparing them leaks nothing of the secret.
        (Some(s), Some(p)) if hash(p) == s => Ok(Check::Accept),
        (Some(_), Some(_)) => Err(Refused::Wrong {
            name: name.to_owned(),
            id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_first_hello_binds_and_later_ones_need_the_same_secret() {
        assert_eq!(check("w", 1, None, None), Ok(Check::Unbound));
        assert_eq!(check("w", 1, None, Some("")), Ok(Check::Unbound));
        assert_eq!(
            check("w", 1, None, Some(SECRET)),
            Ok(Check::Bind(hash(SECRET)))
        );
        let stored = hash(SECRET);
        assert_eq!(
            check("w", 1, Some(&stored), Some(SECRET)),
            Ok(Check::Accept)
        );
        let missing = check("w", 3, Some(&stored), None).unwrap_err();
        assert_eq!(
            missing,
            Refused::Missing {
                name: "w".into(),
                id: 3
            }
        );
        assert!(
            missing.to_string().contains("scitqctl worker delete 3"),
            "{missing}"
        );
        let other = "f".repeat(64);
        assert_eq!(
            check("w", 3, Some(&stored), Some(&other)),
            Err(Refused::Wrong {
                name: "w".into(),
                id: 3
            })
        );
    }

    #[test]
    fn a_malformed_secret_is_refused_naming_its_length() {
        let err = check("w", 1, None, Some("short")).unwrap_err();
        assert!(err.to_string().contains("is 5 bytes"), "{err}");
        let spaced = format!("{} x", SECRET);
        assert!(check("w", 1, None, Some(&spaced)).is_err());
    }
}
