//! Every cloud call goes through [`call`]: one timeout per attempt, then retries with
//! exponential backoff (jittered) for transient failures, waiting at least what a 429's
//! `Retry-After` asks for.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::ProviderError;

/// How long one attempt may take and how hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Limit for one attempt (one HTTP exchange, or the few a crate call makes).
    pub timeout: Duration,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(60),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            max_retries: 5,
        }
    }
}

/// Whether a call may be re-sent after an unclear failure (a timeout, a 5xx): a GET, a DELETE,
/// a PUT of a named resource may; a POST that creates may only when it was refused untouched
/// (throttled), or it could create twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// Runs `attempt` with the policy's timeout and retries.
pub async fn call<T, F, Fut>(
    policy: &RetryPolicy,
    provider: &str,
    operation: &'static str,
    idempotency: Idempotency,
    mut attempt: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let timeout = policy.timeout;
    let timed = || {
        let fut = attempt();
        async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Timeout {
                    provider: provider.to_owned(),
                    operation,
                    timeout,
                }),
            }
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    let max_retry_after = policy.max_retry_after;
    timed
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &ProviderError| match idempotency {
            Idempotency::Idempotent => e.is_transient(),
            Idempotency::NotIdempotent => e.was_refused_untouched(),
        })
        .adjust(move |e: &ProviderError, delay| {
            // `None` means the retries are used up: keep it so.
            let delay = delay?;
            Some(match e.retry_after() {
                Some(asked) => asked.min(max_retry_after).max(delay),
                None => delay,
            })
        })
        .notify(|e: &ProviderError, delay| {
            tracing::warn!(provider, operation, error = %e, ?delay, "retrying cloud call");
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn throttled(retry_after: u64) -> ProviderError {
        ProviderError::Throttled {
            provider: "p".into(),
            operation: "list",
            retry_after: Some(Duration::from_secs(retry_after)),
            detail: "rate limited".into(),
        }
    }

    fn server_error() -> ProviderError {
        ProviderError::ServerError {
            provider: "p".into(),
            operation: "create",
            detail: "http 503: unavailable".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_waits_what_retry_after_asks() {
        let tries = AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let got = call(
            &RetryPolicy::default(),
            "p",
            "list",
            Idempotency::Idempotent,
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(throttled(40)),
                    _ => Ok(7),
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 7);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        // Virtual time: the backoff alone (about 1 s) would be far shorter than 40 s.
        assert!(
            start.elapsed() >= Duration::from_secs(40),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_is_not_resent_after_a_5xx_but_is_after_throttling() {
        let tries = AtomicUsize::new(0);
        let err = call(
            &RetryPolicy::default(),
            "p",
            "create",
            Idempotency::NotIdempotent,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(server_error())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1, "{err}");

        let tries = AtomicUsize::new(0);
        call(
            &RetryPolicy::default(),
            "p",
            "create",
            Idempotency::NotIdempotent,
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(throttled(1)),
                    _ => Ok(()),
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_stop_after_max_retries_and_keep_their_class() {
        let tries = AtomicUsize::new(0);
        let policy = RetryPolicy {
            max_retries: 3,
            ..RetryPolicy::default()
        };
        let err = call(&policy, "p", "get", Idempotency::Idempotent, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(server_error())
        })
        .await
        .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert_eq!(err.class(), crate::ErrorClass::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_times_out_and_is_retried() {
        let tries = AtomicUsize::new(0);
        let policy = RetryPolicy {
            timeout: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let got = call(&policy, "p", "get", Idempotency::Idempotent, || async {
            if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                std::future::pending::<()>().await;
            }
            Ok("answered")
        })
        .await
        .unwrap();
        assert_eq!(got, "answered");
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_error_is_not_retried() {
        let tries = AtomicUsize::new(0);
        let err = call(
            &RetryPolicy::default(),
            "p",
            "create",
            Idempotency::Idempotent,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(ProviderError::Quota {
                    provider: "p".into(),
                    detail: "instances".into(),
                })
            },
        )
        .await
        .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert_eq!(err.class(), crate::ErrorClass::Quota);
    }
}
