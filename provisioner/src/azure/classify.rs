//! ARM errors mapped to [`ErrorClass`](crate::ErrorClass)es, from their status and
//! `{"error": {"code", "message"}}` body ("Azure Resource Manager error codes",
//! "Troubleshoot common Azure deployment errors").

use std::time::Duration;

use crate::ProviderError;

/// Classifies an ARM error from its status and `{"error": {"code", "message"}}` body.
pub(super) fn classify(
    provider: &str,
    operation: &'static str,
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> ProviderError {
    let provider = provider.to_owned();
    let detail = format!("http {status}: {code}: {message}");
    let quota = code.contains("Quota") || message.to_lowercase().contains("quota");
    match (status, code) {
        (401, _) | (_, "InvalidAuthenticationToken" | "AuthenticationFailed") => {
            ProviderError::Auth { provider, detail }
        }
        (403, "AuthorizationFailed") => ProviderError::Auth { provider, detail },
        _ if quota => ProviderError::Quota { provider, detail },
        (
            _,
            "SkuNotAvailable"
            | "AllocationFailed"
            | "ZonalAllocationFailed"
            | "OverconstrainedAllocationRequest"
            | "OverconstrainedZonalAllocationRequest"
            | "SpotMaxPriceIsLowerThanCurrentPrice",
        ) => ProviderError::Capacity { provider, detail },
        (429, _) => ProviderError::Throttled {
            provider,
            operation,
            retry_after,
            detail,
        },
        (404, _) => ProviderError::NotFound {
            provider,
            instance: detail,
        },
        (500..=599, _) => ProviderError::ServerError {
            provider,
            operation,
            detail,
        },
        _ => ProviderError::Refused {
            provider,
            operation,
            detail,
        },
    }
}

/// Classifies an error of azure_core (the compute crate, the credential).
pub(super) fn classify_core(
    provider: &str,
    operation: &'static str,
    e: &azure_core::Error,
) -> ProviderError {
    if let Some(http) = e.as_http_error() {
        return classify(
            provider,
            operation,
            u16::from(http.status()),
            http.error_code().unwrap_or_default(),
            http.error_message().unwrap_or_default(),
            None,
        );
    }
    let detail = e.to_string();
    match e.kind() {
        azure_core::error::ErrorKind::Credential => ProviderError::Auth {
            provider: provider.to_owned(),
            detail: format!(
                "{detail}: {}",
                std::error::Error::source(e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        },
        azure_core::error::ErrorKind::Io => ProviderError::Connection {
            provider: provider.to_owned(),
            operation,
            detail,
        },
        _ => ProviderError::BadResponse {
            provider: provider.to_owned(),
            operation,
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_errors_keep_their_class() {
        let class =
            |status, code, message| classify("az", "create", status, code, message, None).class();
        use crate::ErrorClass::*;
        assert_eq!(
            class(
                409,
                "OperationNotAllowed",
                "exceeding approved Total Regional Cores quota"
            ),
            Quota
        );
        assert_eq!(
            class(
                409,
                "QuotaExceeded",
                "Operation results in exceeding quota limits of Core"
            ),
            Quota
        );
        assert_eq!(
            class(
                409,
                "SkuNotAvailable",
                "The requested size is not available"
            ),
            Capacity
        );
        assert_eq!(
            class(200, "AllocationFailed", "Allocation failed"),
            Capacity
        );
        assert_eq!(class(401, "InvalidAuthenticationToken", "expired"), Auth);
        assert_eq!(class(429, "TooManyRequests", "slow down"), Transient);
        assert_eq!(class(400, "InvalidParameter", "bad"), Other);
    }
}
