//! Enrollment tokens: how a machine scitqd recruited gets in without the shared worker token.
//!
//! scitqd issues a token for one instance name, short-lived and single use; the machine's
//! agent presents it as its bearer token in its first Hello, under that name and with the
//! credential it made (`core::credential`). The Hello that uses the token binds the worker
//! to that credential in the same commit that marks the token used; from then on the agent
//! presents its credential as its bearer. A stream that breaks before the agent read its
//! Welcome loses nothing: the agent made the credential, and a used token presented again
//! with the credential it bound is let in ([`Verdict::Enrolled`]).
//!
//! Only the token's SHA-256 is stored ([`crate::core::credential::hash`]).

use std::time::{Duration, UNIX_EPOCH};

/// Longest life of a token.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest instance name (the worker name it becomes).
pub const MAX_NAME: usize = 256;

/// A stored token, as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The instance (worker name) it was issued for.
    pub instance: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// When a Hello used it.
    pub used_at: Option<i64>,
}

/// What a Hello presenting a token may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First use: bind the worker to the Hello's credential and mark the token used.
    Enroll,
    /// Used already, by this very agent: the worker of that name is bound to the credential
    /// the Hello presents (its Welcome was lost, or it restarted with the token still set).
    Enrolled,
}

/// Why a token is refused. Each says what the agent's operator can do.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "enrollment token refused: it is bound to instance {bound:?}, and this agent's name is \
         {presented:?} (a recruited agent runs with --name set to its instance name)"
    )]
    OtherInstance { bound: String, presented: String },
    #[error(
        "enrollment token refused: it was used at {at} to enroll worker {instance:?}; a token \
         enrolls one agent once (that agent now presents its own credential)"
    )]
    Used { instance: String, at: String },
    #[error(
        "enrollment token refused: it expired at {at} (instance {instance:?}); scitqd issues \
         a new one when it recruits the instance again"
    )]
    Expired { instance: String, at: String },
    #[error(
        "enrollment token refused: the Hello of {instance:?} presents no credential (this \
         agent is too old to enroll)"
    )]
    NoCredential { instance: String },
}

/// Decides whether a Hello under `name` may use `token` at `now` (ms). `has_credential`:
/// the Hello presents a credential; `credential_bound`: the worker `name` exists and is
/// bound to that very credential.
pub fn verify(
    token: &Token,
    now: i64,
    name: &str,
    has_credential: bool,
    credential_bound: bool,
) -> Result<Verdict, Refused> {
    if token.instance != name {
        return Err(Refused::OtherInstance {
            bound: token.instance.clone(),
            presented: name.to_owned(),
        });
    }
    if let Some(used) = token.used_at {
        if credential_bound {
            return Ok(Verdict::Enrolled);
        }
        return Err(Refused::Used {
            instance: token.instance.clone(),
            at: rfc3339(used),
        });
    }
    if now >= token.expires_at {
        return Err(Refused::Expired {
            instance: token.instance.clone(),
            at: rfc3339(token.expires_at),
        });
    }
    if !has_credential {
        return Err(Refused::NoCredential {
            instance: token.instance.clone(),
        });
    }
    Ok(Verdict::Enroll)
}

/// Why a token cannot be issued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("invalid instance name {0:?}: must be 1 to {MAX_NAME} bytes, no whitespace")]
    BadName(String),
    #[error("enrollment token lifetime {0:?} must be more than 0 and at most 7 days")]
    BadTtl(Duration),
}

/// Checks what a token is issued for.
pub fn check_issue(instance: &str, ttl: Duration) -> Result<(), IssueError> {
    if instance.is_empty()
        || instance.len() > MAX_NAME
        || instance
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(IssueError::BadName(instance.to_owned()));
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(IssueError::BadTtl(ttl));
    }
    Ok(())
}

/// A stored time (ms since the Unix epoch) as people read it.
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(used_at: Option<i64>) -> Token {
        Token {
            instance: "node-1".into(),
            expires_at: 10_000,
            used_at,
        }
    }

    #[test]
    fn a_fresh_token_enrolls_its_own_instance_once() {
        assert_eq!(
            verify(&token(None), 9_999, "node-1", true, false),
            Ok(Verdict::Enroll)
        );
        let used = verify(&token(Some(5_000)), 6_000, "node-1", true, false).unwrap_err();
        assert!(matches!(used, Refused::Used { .. }));
        assert!(
            used.to_string()
                .contains("was used at 1970-01-01T00:00:05Z"),
            "{used}"
        );
    }

    #[test]
    fn the_agent_that_used_it_gets_back_in_even_after_expiry() {
        assert_eq!(
            verify(&token(Some(5_000)), 99_999, "node-1", true, true),
            Ok(Verdict::Enrolled)
        );
    }

    #[test]
    fn an_expired_token_is_refused_naming_when() {
        let err = verify(&token(None), 10_000, "node-1", true, false).unwrap_err();
        assert!(matches!(err, Refused::Expired { .. }));
        assert!(
            err.to_string().contains("expired at 1970-01-01T00:00:10Z"),
            "{err}"
        );
    }

    #[test]
    fn a_token_of_another_instance_is_refused_even_used() {
        for used in [None, Some(1)] {
            let err = verify(&token(used), 1, "node-2", true, true).unwrap_err();
            assert_eq!(
                err,
                Refused::OtherInstance {
                    bound: "node-1".into(),
                    presented: "node-2".into()
                }
            );
        }
    }

    #[test]
    fn enrolling_needs_a_credential() {
        assert_eq!(
            verify(&token(None), 1, "node-1", false, false),
            Err(Refused::NoCredential {
                instance: "node-1".into()
            })
        );
    }

    #[test]
    fn issue_checks_name_and_lifetime() {
        assert!(check_issue("node-1", Duration::from_secs(600)).is_ok());
        assert!(check_issue("", Duration::from_secs(1)).is_err());
        assert!(check_issue("a b", Duration::from_secs(1)).is_err());
        assert!(check_issue(&"x".repeat(257), Duration::from_secs(1)).is_err());
        assert!(check_issue("n", Duration::ZERO).is_err());
        assert!(check_issue("n", MAX_TTL + Duration::from_secs(1)).is_err());
    }
}
