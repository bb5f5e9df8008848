//! Provider errors, classified so the recruiter can decide what to do (wait and retry, learn a
//! quota, pick another flavor, give up).

use std::time::Duration;

/// What kind of failure an error is; kept with the error ([`ProviderError::class`]) so it can be
/// persisted and acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Credentials refused or expired.
    Auth,
    /// A quota (instances, cores, memory, IPs) would be exceeded.
    Quota,
    /// The cloud has no room for this flavor now (try later or elsewhere).
    Capacity,
    UnknownFlavor,
    UnknownImage,
    /// The instance does not exist (or is not ours).
    NotFound,
    /// Throttling, 5xx, timeouts, connection failures: worth retrying later.
    Transient,
    /// Anything else: a bad request, bad config, an unexpected answer.
    Other,
}

impl ErrorClass {
    /// A stable lowercase name, for persistence and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::Quota => "quota",
            ErrorClass::Capacity => "capacity",
            ErrorClass::UnknownFlavor => "unknown_flavor",
            ErrorClass::UnknownImage => "unknown_image",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Transient => "transient",
            ErrorClass::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed provider operation. `provider` is the provider's configured name.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: authentication failed: {detail}")]
    Auth { provider: String, detail: String },
    #[error("{provider}: quota exceeded: {detail}")]
    Quota { provider: String, detail: String },
    #[error("{provider}: no capacity: {detail}")]
    Capacity { provider: String, detail: String },
    #[error("{provider}: unknown flavor {flavor:?}")]
    UnknownFlavor { provider: String, flavor: String },
    #[error("{provider}: unknown image {image:?}")]
    UnknownImage { provider: String, image: String },
    #[error("{provider}: instance {instance:?} not found")]
    NotFound { provider: String, instance: String },
    #[error("{provider}: {operation} throttled: {detail}")]
    Throttled {
        provider: String,
        operation: &'static str,
        /// The wait the cloud asked for (`Retry-After`), if it did.
        retry_after: Option<Duration>,
        detail: String,
    },
    #[error("{provider}: {operation} failed on the cloud's side: {detail}")]
    ServerError {
        provider: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{provider}: {operation} timed out after {timeout:?}")]
    Timeout {
        provider: String,
        operation: &'static str,
        timeout: Duration,
    },
    #[error("{provider}: {operation}: cannot reach the cloud: {detail}")]
    Connection {
        provider: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{provider}: {operation} refused: {detail}")]
    Refused {
        provider: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{provider}: {operation}: unexpected answer: {detail}")]
    BadResponse {
        provider: String,
        operation: &'static str,
        detail: String,
    },
    #[error("{provider}: invalid {key}: {detail}")]
    Config {
        provider: String,
        key: &'static str,
        detail: String,
    },
    #[error("{provider}: {operation}: {source}")]
    Io {
        provider: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{provider}: docker {operation}: {source}")]
    Docker {
        provider: String,
        operation: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

impl ProviderError {
    /// The error's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Auth { .. } => ErrorClass::Auth,
            ProviderError::Quota { .. } => ErrorClass::Quota,
            ProviderError::Capacity { .. } => ErrorClass::Capacity,
            ProviderError::UnknownFlavor { .. } => ErrorClass::UnknownFlavor,
            ProviderError::UnknownImage { .. } => ErrorClass::UnknownImage,
            ProviderError::NotFound { .. } => ErrorClass::NotFound,
            ProviderError::Throttled { .. }
            | ProviderError::ServerError { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Connection { .. } => ErrorClass::Transient,
            ProviderError::Refused { .. }
            | ProviderError::BadResponse { .. }
            | ProviderError::Config { .. }
            | ProviderError::Io { .. }
            | ProviderError::Docker { .. } => ErrorClass::Other,
        }
    }

    /// Whether the same call may succeed if made again later.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// Whether the cloud refused the request without acting on it, so even a call that is not
    /// idempotent (a create) can be re-sent.
    pub fn was_refused_untouched(&self) -> bool {
        matches!(self, ProviderError::Throttled { .. })
    }

    /// The wait the cloud asked for before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Reads a `Retry-After` header value: delay-seconds (RFC 9110 §10.2.3). The HTTP-date form is
/// not used by the clouds here; it yields `None` (plain backoff).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_are_transient_quota_is_not() {
        let throttled = ProviderError::Throttled {
            provider: "p".into(),
            operation: "create",
            retry_after: Some(Duration::from_secs(3)),
            detail: "slow down".into(),
        };
        assert_eq!(throttled.class(), ErrorClass::Transient);
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        assert!(throttled.was_refused_untouched());
        let quota = ProviderError::Quota {
            provider: "p".into(),
            detail: "cores".into(),
        };
        assert_eq!(quota.class(), ErrorClass::Quota);
        assert!(!quota.is_transient());
        assert_eq!(quota.to_string(), "p: quota exceeded: cores");
    }

    #[test]
    fn retry_after_takes_seconds() {
        assert_eq!(parse_retry_after(" 7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
