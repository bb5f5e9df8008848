//! The transport of the agent stream: one `WorkerService.Session` call per connection attempt,
//! the outgoing queue feeding it ([`Link`]), and the reconnection backoff.
//!
//! A connection task opens the stream with `Hello` already queued (the server may wait for it
//! before answering), forwards every server message to the agent loop tagged with the session
//! number, and reports how the stream ended. The agent loop decides everything else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use scitq_proto::v1::worker_service_client::WorkerServiceClient;
use scitq_proto::v1::{AgentMessage, ServerMessage, agent_message, server_message};
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::config::{Bearer, Config};

/// Output bytes queued for the stream above which live output waits on disk instead.
const CONGESTED_BYTES: usize = 8 * 1024 * 1024;

/// How a session ended, or why it could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {server}: {}", chain(.source))]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("stream failed: {}", describe(.0))]
    Status(Status),
    #[error("the server closed the stream")]
    Closed,
}

/// An error and its sources, `a: b: c`: tonic's transport error alone says only "transport error".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn describe(status: &Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

impl SessionError {
    /// A bad token, an incompatible protocol or a Hello the server refuses (a bad name, a
    /// wrong credential, say) will not get better by retrying. Another live session of
    /// this worker (ALREADY_EXISTS) may: it may be a dead one the server has not noticed
    /// yet.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SessionError::Status(s)
        if matches!(
            s.code(),
            Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::PermissionDenied
                | Code::InvalidArgument
        ))
    }
}

/// What a connection task tells the agent loop.
#[derive(Debug)]
pub enum SessionEvent {
    Message {
        session: u64,
        message: Box<ServerMessage>,
    },
    Closed {
        session: u64,
        error: SessionError,
    },
}

/// Who this agent is to the server, beyond its name: see `crate::credential`.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// The worker's own secret, presented in every Hello.
    pub credential: String,
    /// Random per agent process.
    pub instance: String,
}

/// Opens sessions to one server with one token.
#[derive(Clone)]
pub struct Connector {
    endpoint: Endpoint,
    server: String,
    /// The bearer of the next session: an enrollment token is replaced by the credential
    /// once a session was welcomed with it (shared by every clone).
    authorization: Arc<Mutex<MetadataValue<Ascii>>>,
    /// The credential's bearer form, when an enrollment token is in use until a Welcome.
    enrolled: Option<MetadataValue<Ascii>>,
    identity: Identity,
}

impl Connector {
    /// The credential and process instance every Hello presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn new(config: &Config, credential: String) -> Result<Connector, tonic::transport::Error> {
        let server = config.server.uri();
        let mut endpoint = Endpoint::from_shared(server.clone())?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive)
            .keep_alive_timeout(config.keepalive)
            .keep_alive_while_idle(true);
        if config.server.tls {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(pem) = &config.server_ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let bearer = |token: &str| -> MetadataValue<Ascii> {
            format!("Bearer {token}")
                .parse()
                .expect("token validated by Config, credential made printable")
        };
        let (authorization, enrolled) = match &config.bearer {
            Bearer::Token(token) => (bearer(token), None),
            Bearer::Enroll(token) => (bearer(token), Some(bearer(&credential))),
            Bearer::Credential => (bearer(&credential), None),
        };
        Ok(Connector {
            endpoint,
            server,
            authorization: Arc::new(Mutex::new(authorization)),
            enrolled,
            identity: Identity {
                credential,
                instance: crate::credential::instance(),
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetadataValue<Ascii>> {
        self.authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session was welcomed: an enrollment token did its work (the server bound the
    /// worker to this agent's credential), the next sessions present the credential.
    fn welcomed(&self) {
        let Some(credential) = &self.enrolled else {
            return;
        };
        let mut authorization = self.lock();
        if *authorization != *credential {
            *authorization = credential.clone();
            tracing::info!("enrolled: from now on this agent presents its own credential");
        }
    }

    /// Starts a connection task for session number `session`, whose outgoing messages are
    /// read from `outgoing` (with `Hello` first).
    pub fn spawn<S>(
        &self,
        session: u64,
        outgoing: S,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> tokio::task::JoinHandle<()>
    where
        S: tokio_stream::Stream<Item = AgentMessage> + Send + 'static,
    {
        let connector = self.clone();
        tokio::spawn(async move {
            let error = connector.converse(session, outgoing, &events).await;
            let _ = events.send(SessionEvent::Closed { session, error });
        })
    }

    async fn converse<S>(
        &self,
        session: u64,
        outgoing: S,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) -> SessionError
    where
        S: tokio_stream::Stream<Item = AgentMessage> + Send + 'static,
    {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(source) => {
                return SessionError::Connect {
                    server: self.server.clone(),
                    source,
                };
            }
        };
        let mut client =
            WorkerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let mut request = tonic::Request::new(outgoing);
        let authorization = self.lock().clone();
        request
            .metadata_mut()
            .insert("authorization", authorization);
        let mut incoming = match client.session(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return SessionError::Status(status),
        };
        loop {
            match incoming.message().await {
                Ok(Some(message)) => {
                    if matches!(message.kind, Some(server_message::Kind::Welcome(_))) {
                        self.welcomed();
                    }
                    if events
                        .send(SessionEvent::Message {
                            session,
                            message: Box::new(message),
                        })
                        .is_err()
                    {
                        return SessionError::Closed;
                    }
                }
                Ok(None) => return SessionError::Closed,
                Err(status) => return SessionError::Status(status),
            }
        }
    }
}

/// Output bytes handed to the stream but not yet taken by it.
#[derive(Debug, Default)]
pub struct Gauge {
    queued: AtomicUsize,
    /// Signalled when the queue drains below the congestion mark.
    pub drained: Notify,
}

impl Gauge {
    pub fn congested(&self) -> bool {
        self.queued.load(Ordering::Acquire) > CONGESTED_BYTES
    }

    fn add(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::AcqRel);
    }

    fn sub(&self, bytes: usize) {
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        if before > CONGESTED_BYTES && before - bytes <= CONGESTED_BYTES {
            self.drained.notify_one();
        }
    }
}

fn output_len(message: &AgentMessage) -> usize {
    match &message.kind {
        Some(agent_message::Kind::Output(chunk)) => chunk.data.len(),
        _ => 0,
    }
}

/// The sending side of one session.
#[derive(Debug)]
pub struct Link {
    tx: mpsc::UnboundedSender<AgentMessage>,
    pub gauge: Arc<Gauge>,
}

impl Link {
    /// A link and the stream of messages it feeds.
    pub fn new() -> (Link, UnboundedReceiverStream<AgentMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = Arc::new(Gauge::default());
        let link = Link {
            tx,
            gauge: gauge.clone(),
        };
        (link, UnboundedReceiverStream::new(rx))
    }

    /// Wraps the receiving side so the gauge counts down as the stream takes messages.
    pub fn metered(
        gauge: Arc<Gauge>,
        rx: UnboundedReceiverStream<AgentMessage>,
    ) -> impl tokio_stream::Stream<Item = AgentMessage> + Send + 'static {
        rx.map(move |message| {
            gauge.sub(output_len(&message));
            message
        })
    }

    /// Queues a message. A closed link is not an error: the session is ending and everything
    /// will be replayed in the next one.
    pub fn send(&self, message: AgentMessage) {
        let len = output_len(&message);
        self.gauge.add(len);
        if self.tx.send(message).is_err() {
            self.gauge.sub(len);
        }
    }
}

/// Jittered exponential backoff: each delay is drawn in [d/2, d] where d doubles from
/// `first` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Backoff {
            first,
            max,
            current: first,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let low = ceiling / 2;
        low + (ceiling - low).mul_f64(rand::rng().random::<f64>())
    }

    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_max_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[7] >= Duration::from_secs(1));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }

    #[test]
    fn fatal_statuses() {
        let status = |code| SessionError::Status(Status::new(code, "x"));
        assert!(status(Code::Unauthenticated).is_fatal());
        assert!(status(Code::FailedPrecondition).is_fatal());
        assert!(status(Code::InvalidArgument).is_fatal());
        assert!(!status(Code::Unavailable).is_fatal());
        assert!(status(Code::PermissionDenied).is_fatal());
        assert!(
            !status(Code::AlreadyExists).is_fatal(),
            "another live session of the worker may be a dead one: retried"
        );
        assert!(!status(Code::Aborted).is_fatal());
        assert!(!SessionError::Closed.is_fatal());
    }

    #[tokio::test]
    async fn gauge_counts_queued_output_and_signals_when_drained() {
        use scitq_proto::v1::OutputChunk;
        let (link, rx) = Link::new();
        let gauge = link.gauge.clone();
        let mut stream = std::pin::pin!(Link::metered(gauge.clone(), rx));
        let chunk = |n| AgentMessage {
            seq: 1,
            kind: Some(agent_message::Kind::Output(OutputChunk {
                data: vec![0u8; n],
                ..OutputChunk::default()
            })),
        };
        link.send(chunk(CONGESTED_BYTES));
        link.send(chunk(10));
        assert!(gauge.congested());
        stream.next().await.unwrap();
        assert!(!gauge.congested());
        // The permit is stored: a later waiter still sees it.
        tokio::time::timeout(Duration::from_secs(1), gauge.drained.notified())
            .await
            .unwrap();
    }
}
