//! Building (and reusing) one opendal operator per service.

use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryEvent, RetryInterceptor, RetryLayer};

use crate::error::{Result, StorageError};
use crate::uri::{Location, Service};

/// Transient errors (opendal marks them) are retried this many times, with jittered
/// exponential backoff from 200 ms up to 10 s.
const RETRIES: usize = 5;

pub(crate) fn build(loc: &Location) -> Result<Operator> {
    // Installs opendal's HTTP transport (reqwest) as the process default; idempotent. The
    // `auto-register-services` feature does it before main as well, this keeps it explicit.
    opendal::install_default();
    let uri = loc.uri();
    let config = |e: opendal::Error| StorageError::Remote {
        uri: uri.clone(),
        source: e,
    };
    let op = match &loc.service {
        Service::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            let mut b = opendal::services::S3::default()
                .bucket(bucket)
                .region(region.as_deref().unwrap_or("us-east-1"))
                // Only what the URI, the remote or the environment gave: no surprise profile.
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(endpoint) = endpoint {
                b = b.endpoint(endpoint);
            }
            match (access_key_id, secret_access_key) {
                (Some(id), Some(secret)) => {
                    b = b.access_key_id(id).secret_access_key(secret);
                    if let Some(token) = session_token {
                        b = b.session_token(token);
                    }
                }
                _ => b = b.skip_signature(),
            }
            Operator::new(b).map_err(config)?
        }
        Service::Azblob {
            container,
            endpoint,
            account,
            key,
            sas_token,
        } => {
            let mut b = opendal::services::Azblob::default()
                .container(container)
                .endpoint(endpoint);
            if let Some(account) = account {
                b = b.account_name(account);
            }
            if let Some(key) = key {
                b = b.account_key(key);
            }
            if let Some(sas) = sas_token {
                b = b.sas_token(sas);
            }
            Operator::new(b).map_err(config)?
        }
        Service::Ftp {
            endpoint,
            user,
            password,
        } => {
            let mut b = opendal::services::Ftp::default()
                .endpoint(endpoint)
                .root("/");
            if let Some(user) = user {
                b = b.user(user);
            }
            if let Some(password) = password {
                b = b.password(password);
            }
            Operator::new(b).map_err(config)?
        }
        Service::Sftp {
            endpoint,
            user,
            key,
            root,
            strict_host_key,
        } => {
            // "strict" is ssh's StrictHostKeyChecking=yes; "accept" is =no, which takes any
            // host key (and lets ssh append a new one to the user's known_hosts). An empty
            // root leaves paths relative to the folder the server starts the session in.
            let policy = if *strict_host_key { "strict" } else { "accept" };
            let mut b = opendal::services::Sftp::default()
                .endpoint(endpoint)
                .root(root)
                .known_hosts_strategy(policy);
            if let Some(user) = user {
                b = b.user(user);
            }
            if let Some(key) = key {
                b = b.key(key);
            }
            Operator::new(b).map_err(config)?
        }
        Service::Http { endpoint } => {
            let b = opendal::services::Http::default().endpoint(endpoint);
            Operator::new(b).map_err(config)?
        }
        Service::Ena { .. } => {
            return Err(StorageError::Unsupported {
                uri,
                op: "anything but a download",
            });
        }
        Service::Fs => {
            let b = opendal::services::Fs::default().root("/");
            Operator::new(b).map_err(config)?
        }
    };
    Ok(op.layer(
        RetryLayer::new()
            .with_max_times(RETRIES)
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_notify(LogRetry {
                service: loc.uri_of(""),
            }),
    ))
}

/// Logs each retry in one line. opendal's own notice prints the error's `Debug` form, which
/// holds a whole backtrace per retried call when `RUST_BACKTRACE` is set.
struct LogRetry {
    /// The service's URI prefix (`s3://bucket/`), as the operator serves every path in it.
    service: String,
}

impl RetryInterceptor for LogRetry {
    fn intercept(&self, event: RetryEvent<'_>) {
        tracing::warn!(
            "{}",
            retry_line(
                &self.service,
                event.op,
                event.attempt,
                event.retry_after,
                event.err
            )
        );
    }
}

/// `s3://bkt/: read failed (retry 2 in 0.4s): <the error's one-line form>`.
fn retry_line(
    service: &str,
    op: opendal::raw::Operation,
    attempt: u32,
    after: Duration,
    err: &opendal::Error,
) -> String {
    let message = err.to_string().replace('\n', " ");
    format!(
        "{service}: {} failed (retry {attempt} in {:.1}s): {message}",
        op.into_static(),
        after.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_one_line_without_a_backtrace() {
        let err = opendal::Error::new(opendal::ErrorKind::Unexpected, "connection refused")
            .set_temporary();
        let line = retry_line(
            "s3://bkt/",
            opendal::raw::Operation::Read,
            2,
            Duration::from_millis(400),
            &err,
        );
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("s3://bkt/: read failed (retry 2 in 0.4s): "),
            "{line}"
        );
        assert!(line.contains("connection refused"), "{line}");
    }
}
