//! The connection to scitqd: one channel, every request carrying the bearer token.

use std::time::Duration;

use anyhow::Context as _;
use scitq_proto::v1::execution_service_client::ExecutionServiceClient;
use scitq_proto::v1::recruit_service_client::RecruitServiceClient;
use scitq_proto::v1::storage_service_client::StorageServiceClient;
use scitq_proto::v1::task_service_client::TaskServiceClient;
use scitq_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::config::Target;
use crate::error::UsageError;

/// Listing thousands of tasks makes big replies; tonic's default cap is 4 MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerAuth {
    header: MetadataValue<Ascii>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Result<Self, UsageError> {
        let header = format!("Bearer {token}").parse().map_err(|_| {
            UsageError("invalid token: it must be printable ASCII without line breaks".into())
        })?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, BearerAuth>;

/// A connected client for the services.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    auth: BearerAuth,
}

impl Client {
    /// Connects now, so an unreachable server is reported as such before any work starts.
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        Self::connect_within(target, Duration::from_secs(10)).await
    }

    /// [`Client::connect`], giving up on the connection after `timeout` (for a command that
    /// can do without the server).
    pub async fn connect_within(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let auth = BearerAuth::new(&target.token)?;
        let address = &target.address;
        let mut endpoint = Endpoint::from_shared(address.uri())
            .map_err(|e| UsageError(format!("invalid server address \"{address}\": {e}")))?
            .connect_timeout(timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if address.tls() {
            let tls = ClientTlsConfig::new()
                .with_native_roots()
                .domain_name(address.host_name());
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("cannot set up TLS for {address}"))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!("cannot reach scitqd at {address}: {}", source_chain(&e))
        })?;
        Ok(Self { channel, auth })
    }

    pub fn tasks(&self) -> TaskServiceClient<Authed> {
        TaskServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn executions(&self) -> ExecutionServiceClient<Authed> {
        ExecutionServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn workers(&self) -> WorkerServiceClient<Authed> {
        WorkerServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn storage(&self) -> StorageServiceClient<Authed> {
        StorageServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn recruit(&self) -> RecruitServiceClient<Authed> {
        RecruitServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// The innermost causes of a transport error ("transport error" alone says nothing).
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        // hyper repeats its inner error in its own message; keep the shortest useful form.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = inner.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_carries_the_token() {
        let mut auth = BearerAuth::new("s3cret").unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
    }

    #[test]
    fn tokens_with_line_breaks_are_refused() {
        assert!(BearerAuth::new("a\nb").is_err());
    }
}
