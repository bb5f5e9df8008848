//! The agent stream (`WorkerService.Session`), at the edge: the Hello (checked, reconciled,
//! answered with Welcome), then the agent's messages decoded into `core::agent` events and
//! handed to `service::session`, which commits and acknowledges them. See ARCHITECTURE.md,
//! "The agent stream".

use std::pin::Pin;

use futures::{Stream, StreamExt};
use scitq_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{State, convert};
use crate::core::agent::{self, AgentEvent, Chunk, Hello, HostStats, ToAgent, Update, Uploaded};
use crate::core::ids::ExecutionId;
use crate::core::ids::WorkerId;
use crate::core::inputs_seen::{InputSeen, SeenFile};
use crate::core::reconcile::{Held, Resend};
use crate::core::state::{ExecState, Failure};
use crate::core::steering::Signal;
use crate::service;
use crate::service::scheduler::AgentTx;
use crate::service::session::{Inbound, SessionError};

/// Most agent messages applied in one store write.
const MAX_BATCH: usize = 512;
const MAX_NAME: usize = 256;

type ServerStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

fn message(kind: v1::server_message::Kind) -> Result<v1::ServerMessage, Status> {
    Ok(v1::ServerMessage { kind: Some(kind) })
}

/// A message of the session protocol on the wire; an error ends the stream with its status.
fn encode(message: Result<ToAgent, SessionError>) -> Result<v1::ServerMessage, Status> {
    use v1::server_message::Kind;
    let kind = match message.map_err(super::status)? {
        ToAgent::Assignment {
            assignment,
            credentials,
        } => Kind::Assignment(convert::assignment(*assignment, credentials)),
        ToAgent::Settings(settings) => Kind::Settings(convert::settings(&settings)),
        ToAgent::Drain => Kind::Drain(v1::Drain {}),
        ToAgent::Signal { execution, signal } => Kind::Signal(v1::SignalExecution {
            execution_id: execution.0,
            signal: convert::signal(signal) as i32,
        }),
        ToAgent::Ack(seq) => Kind::Ack(v1::Ack { seq }),
    };
    Ok(v1::ServerMessage { kind: Some(kind) })
}

/// Checks and decodes a Hello; protocol mismatch is fatal for the agent
/// (FAILED_PRECONDITION).
fn decode_hello(hello: v1::Hello) -> Result<Hello, Status> {
    if hello.protocol != v1::ProtocolVersion::ProtocolVersion1 as i32 {
        return Err(Status::failed_precondition(format!(
            "incompatible protocol version {}: this server speaks version 1",
            hello.protocol
        )));
    }
    if hello.name.trim().is_empty() || hello.name.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "invalid worker name {:?}: must be 1 to {MAX_NAME} bytes",
            hello.name
        )));
    }
    // Stored as signed integers: a value past the limits would come back negative.
    crate::core::worker::check_settings(Some(hello.concurrency), Some(hello.prefetch))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let held = hello
        .held
        .iter()
        .map(|h| {
            let state = v1::ExecutionState::try_from(h.state)
                .ok()
                .and_then(ExecState::from_proto)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "Hello.held.state: unknown execution state {} (execution {})",
                        h.state, h.execution_id
                    ))
                })?;
            Ok(Held {
                id: ExecutionId(h.execution_id),
                finished: state.is_final(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Hello {
        name: hello.name,
        host: hello.host,
        concurrency: hello.concurrency,
        prefetch: hello.prefetch,
        batch: hello.batch,
        held,
        credential: (!hello.credential.is_empty()).then_some(hello.credential),
        instance: hello.instance,
        prefetch_auto: hello.prefetch_auto,
    })
}

pub async fn open(
    state: State,
    request: Request<Streaming<v1::AgentMessage>>,
) -> Result<Response<ServerStream>, Status> {
    let peer = request.remote_addr();
    let bearer = match request.extensions().get::<crate::auth::AgentBearer>() {
        Some(agent) => service::session::Bearer::Agent(agent.0.clone()),
        None => service::session::Bearer::ApiToken,
    };
    let mut inbound = request.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("session closed before Hello"))?;
    let Some(v1::agent_message::Kind::Hello(hello)) = first.kind else {
        return Err(Status::invalid_argument("the first message must be Hello"));
    };
    let hello = decode_hello(hello)?;
    let name = hello.name.clone();
    let context = state.sessions.clone();
    let opened = match service::session::hello(&context, hello, bearer, peer).await {
        Ok(opened) => opened,
        Err(err) => {
            tracing::warn!(name, peer = ?peer, error = %err, "agent session refused");
            return Err(super::status(err));
        }
    };
    let worker = opened.welcomed.worker.id;
    let settings = &opened.welcomed.worker.settings;
    let reconciled = &opened.welcomed.reconciled;
    tracing::info!(%worker, name, active = reconciled.active, cancel = reconciled.cancel.len(), "agent connected");

    // What opens the stream, before anything the session protocol sends.
    let mut opening = Vec::with_capacity(3 + reconciled.resend.len());
    opening.push(message(v1::server_message::Kind::Welcome(v1::Welcome {
        worker_id: worker.0,
        settings: Some(convert::settings(settings)),
        offsets: reconciled
            .offsets
            .iter()
            .map(|(id, o)| v1::OutputOffsets {
                execution_id: id.0,
                stdout: o.stdout,
                stderr: o.stderr,
            })
            .collect(),
        cancel: reconciled.cancel.iter().map(|id| id.0).collect(),
        rclone_config: state.rclone_config.to_string(),
        lease_ms: u64::try_from(state.lease.as_millis()).unwrap_or(u64::MAX),
    })));
    if settings.draining {
        opening.push(message(v1::server_message::Kind::Drain(v1::Drain {})));
    }
    // An operator's kill or freeze sent to a session that broke before the agent got it.
    for (execution, resend) in &reconciled.resend {
        let signal = match resend {
            Resend::Kill => Signal::Kill,
            Resend::Stop => Signal::Pause,
            Resend::Recall => Signal::Recall,
        };
        opening.push(message(v1::server_message::Kind::Signal(
            v1::SignalExecution {
                execution_id: execution.0,
                signal: convert::signal(signal) as i32,
            },
        )));
    }
    opening.push(message(v1::server_message::Kind::Ack(v1::Ack {
        seq: first.seq,
    })));
    let (tx, rx) = mpsc::unbounded_channel();
    let session = opened.session;
    service::session::connect(&context, opened, tx.clone());

    let state_shutdown = state.shutdown.clone();
    let span = tracing::info_span!("session", %worker, name);
    tokio::spawn(
        async move {
            let end = read(context, worker, inbound, &tx).await;
            match end {
                Ok(()) => tracing::info!(%worker, "agent disconnected"),
                Err(err) => {
                    tracing::warn!(%worker, error = %err, "agent session ended");
                    let _ = tx.send(Err(err));
                }
            }
            service::session::disconnect(&state.sessions, worker, session);
        }
        .instrument(span),
    );

    let stream = futures::stream::iter(opening).chain(UnboundedReceiverStream::new(rx).map(encode));
    Ok(Response::new(Box::pin(super::until_shutdown(
        stream,
        &state_shutdown,
    ))))
}

/// Reads the agent's messages in batches of what is ready, decoded; the session protocol
/// (grouped commits, in-flight budget, acks) is `service::session`'s.
async fn read(
    context: service::session::Context,
    worker: WorkerId,
    inbound: Streaming<v1::AgentMessage>,
    tx: &AgentTx,
) -> Result<(), SessionError> {
    let batches = inbound.ready_chunks(MAX_BATCH).map(decode_batch);
    service::session::run(context, worker, batches, tx).await
}

/// One batch of agent messages, decoded. A transport error ends the batch (what came before
/// it is still applied); a message that does not decode ends the session.
fn decode_batch(batch: Vec<Result<v1::AgentMessage, Status>>) -> Result<Inbound, SessionError> {
    let mut inbound = Inbound {
        last_seq: 0,
        events: Vec::with_capacity(batch.len()),
        broke: None,
    };
    for item in batch {
        let msg = match item {
            Ok(msg) => msg,
            Err(err) => {
                inbound.broke = Some(err.to_string());
                break;
            }
        };
        inbound.last_seq = inbound.last_seq.max(msg.seq);
        match msg.kind {
            Some(v1::agent_message::Kind::Update(update)) => inbound
                .events
                .push(AgentEvent::Update(decode_update(update)?)),
            Some(v1::agent_message::Kind::Output(chunk)) => inbound
                .events
                .push(AgentEvent::Output(decode_chunk(chunk)?)),
            Some(v1::agent_message::Kind::Heartbeat(beat)) => inbound
                .events
                .push(AgentEvent::Heartbeat(decode_heartbeat(&beat))),
            Some(v1::agent_message::Kind::Prefetch(p)) => {
                if p.prefetch > scitq_proto::MAX_PREFETCH {
                    return Err(SessionError::Invalid(format!(
                        "Prefetch.prefetch: {} is too large: it must be at most {}",
                        p.prefetch,
                        scitq_proto::MAX_PREFETCH
                    )));
                }
                inbound.events.push(AgentEvent::Prefetch(p.prefetch))
            }
            Some(v1::agent_message::Kind::Hello(_)) => {
                return Err(SessionError::Invalid(
                    "Hello sent twice in one session".into(),
                ));
            }
            None => {}
        }
    }
    Ok(inbound)
}

/// An agent's update, checked: an unknown state or failure class ends the session with
/// INVALID_ARGUMENT naming the field (an agent newer than this server, or a broken one),
/// rather than being read as something it is not.
/// A heartbeat's host figures; what cannot be a measure (NaN, negative) reads as 0, and a
/// CPU share is at most 100: they are shown, never acted on.
fn decode_heartbeat(beat: &v1::Heartbeat) -> HostStats {
    let finite = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    HostStats {
        load: finite(beat.load),
        cpu_percent: finite(beat.cpu_percent).min(100.0),
        cpus: beat.cpus,
        mem_available: beat.mem_available_bytes,
        mem_total: beat.mem_total_bytes,
        disk_available: beat.disk_available_bytes,
        disk_total: beat.disk_total_bytes,
    }
}

fn decode_update(update: v1::ExecutionUpdate) -> Result<Update, SessionError> {
    let state = v1::ExecutionState::try_from(update.state)
        .ok()
        .and_then(ExecState::from_proto)
        .ok_or_else(|| {
            SessionError::Invalid(format!(
                "ExecutionUpdate.state: unknown execution state {} (execution {})",
                update.state, update.execution_id
            ))
        })?;
    let failure = v1::FailureClass::try_from(update.failure)
        .map(Failure::from_proto)
        .map_err(|_| {
            SessionError::Invalid(format!(
                "ExecutionUpdate.failure: unknown failure class {} (execution {})",
                update.failure, update.execution_id
            ))
        })?;
    Ok(Update {
        execution: ExecutionId(update.execution_id),
        state,
        exit_code: update.exit_code,
        failure,
        message: update.message,
        uploaded: update
            .uploaded
            .into_iter()
            .map(|f| Uploaded {
                uri: f.uri,
                size: f.size,
            })
            .collect(),
        inputs: scitq_proto::within_input_files_seen(update.inputs, |i| i.files.len())
            .map(|input| InputSeen {
                uri: input.uri,
                files: input
                    .files
                    .into_iter()
                    .map(|f| SeenFile {
                        path: f.path,
                        size: f.size,
                        etag: f.etag,
                        modified: f.modified,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn decode_chunk(chunk: v1::OutputChunk) -> Result<Chunk, SessionError> {
    let stream = match v1::OutputStream::try_from(chunk.stream) {
        Ok(v1::OutputStream::Stdout) => agent::Stream::Stdout,
        Ok(v1::OutputStream::Stderr) => agent::Stream::Stderr,
        Err(_) => {
            return Err(SessionError::Invalid(format!(
                "OutputChunk.stream: unknown output stream {} (execution {})",
                chunk.stream, chunk.execution_id
            )));
        }
    };
    Ok(Chunk {
        execution: ExecutionId(chunk.execution_id),
        stream,
        offset: chunk.offset,
        data: chunk.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_past_the_settings_limits_is_refused() {
        let hello = |concurrency, prefetch| v1::Hello {
            protocol: v1::ProtocolVersion::ProtocolVersion1 as i32,
            name: "w".into(),
            concurrency,
            prefetch,
            ..Default::default()
        };
        assert!(decode_hello(hello(4, 0)).is_ok());
        let err = decode_hello(hello(0, 0)).unwrap_err();
        assert!(err.message().contains("concurrency 0"), "{err}");
        let err = decode_hello(hello(u32::MAX, 0)).unwrap_err();
        assert!(err.message().contains("concurrency 4294967295"), "{err}");
        let err = decode_hello(hello(1, 3_000_000_000)).unwrap_err();
        assert!(err.message().contains("prefetch 3000000000"), "{err}");
    }

    #[test]
    fn a_hello_decodes_its_credential_and_held_states() {
        let mut hello = v1::Hello {
            protocol: v1::ProtocolVersion::ProtocolVersion1 as i32,
            name: "w".into(),
            concurrency: 1,
            held: vec![
                v1::HeldExecution {
                    execution_id: 3,
                    state: v1::ExecutionState::Running as i32,
                },
                v1::HeldExecution {
                    execution_id: 4,
                    state: v1::ExecutionState::Succeeded as i32,
                },
            ],
            instance: "i".into(),
            ..Default::default()
        };
        let decoded = decode_hello(hello.clone()).unwrap();
        assert_eq!(decoded.credential, None);
        assert_eq!(decoded.held.iter().filter(|h| h.finished).count(), 1);
        hello.credential = "s".repeat(40);
        assert_eq!(
            decode_hello(hello.clone())
                .unwrap()
                .credential
                .map(|c| c.len()),
            Some(40)
        );
        hello.held[0].state = 42;
        let err = decode_hello(hello).unwrap_err();
        assert!(err.message().contains("Hello.held.state"), "{err}");
    }

    #[test]
    fn unknown_enum_values_are_refused_naming_the_field() {
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: 99,
            ..Default::default()
        };
        let err = crate::grpc::status(decode_update(update).unwrap_err());
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("ExecutionUpdate.state"), "{err}");
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: v1::ExecutionState::Failed as i32,
            failure: 42,
            ..Default::default()
        };
        let err = decode_update(update).unwrap_err();
        assert!(err.to_string().contains("ExecutionUpdate.failure"), "{err}");
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: v1::ExecutionState::Unspecified as i32,
            ..Default::default()
        };
        assert!(decode_update(update).is_err(), "a missing state is refused");
        let chunk = v1::OutputChunk {
            execution_id: 4,
            stream: 7,
            offset: 0,
            data: b"x".to_vec(),
        };
        let err = decode_chunk(chunk).unwrap_err();
        assert!(err.to_string().contains("OutputChunk.stream"), "{err}");
    }

    #[test]
    fn a_good_update_decodes_whole() {
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: v1::ExecutionState::Failed as i32,
            exit_code: Some(3),
            failure: v1::FailureClass::Timeout as i32,
            message: "too long".into(),
            uploaded: vec![v1::UploadedFile {
                uri: "s3://b/k".into(),
                size: 5,
            }],
            ..Default::default()
        };
        let decoded = decode_update(update).unwrap();
        assert_eq!(decoded.state, ExecState::Failed);
        assert_eq!(decoded.failure, Failure::Timeout);
        assert_eq!(decoded.exit_code, Some(3));
        assert_eq!(decoded.uploaded[0].size, 5);
    }

    #[test]
    fn the_inputs_seen_are_kept_within_their_bound() {
        let input = |uri: &str, files: usize| v1::StagedInput {
            uri: uri.into(),
            files: vec![
                v1::RemoteFile {
                    path: "f".into(),
                    size: 1,
                    etag: Some("e".into()),
                    modified: None,
                };
                files
            ],
        };
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: v1::ExecutionState::Succeeded as i32,
            inputs: vec![
                input("a", 2),
                input("huge", scitq_proto::MAX_INPUT_FILES_SEEN),
                input("b", 1),
            ],
            ..Default::default()
        };
        let decoded = decode_update(update).unwrap();
        let kept: Vec<(&str, usize)> = decoded
            .inputs
            .iter()
            .map(|i| (i.uri.as_str(), i.files.len()))
            .collect();
        assert_eq!(kept, [("a", 2), ("b", 1)]);
        assert_eq!(decoded.inputs[0].files[0].etag.as_deref(), Some("e"));
    }
}
