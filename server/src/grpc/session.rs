//! The agent stream (`WorkerService.Session`), at the edge: the Hello (checked, reconciled,
//! answered with Welcome), then the agent's messages decoded into `core::agent` events and
//! handed to `service::session`, which commits and acknowledges them. See ARCHITECTURE.md,
//! "The agent stream".

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use scitq_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::State;
use crate::core::agent::{self, AgentEvent, Chunk, Update, Uploaded};
use crate::core::ids::ExecutionId;
use crate::core::ids::WorkerId;
use crate::core::reconcile::Resend;
use crate::core::state::{ExecState, Failure};
use crate::persistence::workers::{self, settings_of};
use crate::service;
use crate::service::scheduler::{AgentTx, Command};
use crate::service::session::Inbound;

static SESSIONS: AtomicU64 = AtomicU64::new(1);
/// Most agent messages applied in one store write.
const MAX_BATCH: usize = 512;
const MAX_NAME: usize = 256;

type ServerStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

fn message(kind: v1::server_message::Kind) -> Result<v1::ServerMessage, Status> {
    Ok(v1::ServerMessage { kind: Some(kind) })
}

/// Checks a Hello; protocol mismatch is fatal for the agent (FAILED_PRECONDITION).
fn validate_hello(hello: &v1::Hello) -> Result<(), Status> {
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
    if hello.concurrency == 0 {
        return Err(Status::invalid_argument("concurrency must be at least 1"));
    }
    // Stored as signed integers: a value past the limits would come back negative.
    super::workers::check_settings(Some(hello.concurrency), Some(hello.prefetch))?;
    Ok(())
}

pub async fn open(
    state: State,
    request: Request<Streaming<v1::AgentMessage>>,
) -> Result<Response<ServerStream>, Status> {
    let mut inbound = request.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("session closed before Hello"))?;
    let Some(v1::agent_message::Kind::Hello(hello)) = first.kind else {
        return Err(Status::invalid_argument("the first message must be Hello"));
    };
    validate_hello(&hello)?;
    let name = hello.name.clone();
    if let Some(known) = workers::id_by_name(&state.store, &name)
        .await
        .map_err(super::status)?
    {
        state.scheduler.detach(known).await;
    }
    let (row, reconciled) = workers::hello(&state.store, hello)
        .await
        .map_err(super::status)?;
    let worker = WorkerId(row.id);
    let settings = settings_of(&row);
    tracing::info!(%worker, name, active = reconciled.active, cancel = reconciled.cancel.len(), "agent connected");

    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(message(v1::server_message::Kind::Welcome(v1::Welcome {
        worker_id: worker.0,
        settings: Some(settings.to_proto()),
        offsets: reconciled.offsets,
        cancel: reconciled.cancel,
        rclone_config: state.rclone_config.to_string(),
        lease_ms: u64::try_from(state.lease.as_millis()).unwrap_or(u64::MAX),
    })));
    if settings.draining {
        let _ = tx.send(message(v1::server_message::Kind::Drain(v1::Drain {})));
    }
    // An operator's kill or freeze sent to a session that broke before the agent got it.
    for (execution, resend) in &reconciled.resend {
        let signal = match resend {
            Resend::Kill => v1::Signal::Kill,
            Resend::Stop => v1::Signal::Pause,
        };
        let _ = tx.send(message(v1::server_message::Kind::Signal(
            v1::SignalExecution {
                execution_id: execution.0,
                signal: signal as i32,
            },
        )));
    }
    let _ = tx.send(message(v1::server_message::Kind::Ack(v1::Ack {
        seq: first.seq,
    })));
    let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
    state.scheduler.send(Command::Connect {
        worker,
        session,
        tx: tx.clone(),
        settings,
        active: reconciled.active,
    });
    state.scheduler.enqueue(reconciled.requeued);
    state.hub.notify(reconciled.touched);

    let state_shutdown = state.shutdown.clone();
    let span = tracing::info_span!("session", %worker, name);
    tokio::spawn(
        async move {
            let end = read(&state, worker, inbound, &tx).await;
            match end {
                Ok(()) => tracing::info!(%worker, "agent disconnected"),
                Err(err) => {
                    tracing::warn!(%worker, error = %err, "agent session ended");
                    let _ = tx.send(Err(err));
                }
            }
            state
                .scheduler
                .send(Command::Disconnect { worker, session });
        }
        .instrument(span),
    );

    let stream = UnboundedReceiverStream::new(rx);
    Ok(Response::new(Box::pin(super::until_shutdown(
        stream,
        &state_shutdown,
    ))))
}

/// Reads the agent's messages in batches of what is ready, decoded; the session protocol
/// (grouped commits, in-flight budget, acks) is `service::session`'s.
async fn read(
    state: &State,
    worker: WorkerId,
    inbound: Streaming<v1::AgentMessage>,
    tx: &AgentTx,
) -> Result<(), Status> {
    let batches = inbound.ready_chunks(MAX_BATCH).map(decode_batch);
    let context = service::session::Context {
        store: state.store.clone(),
        scheduler: state.scheduler.clone(),
        hub: state.hub.clone(),
    };
    service::session::run(context, worker, batches, tx).await
}

/// One batch of agent messages, decoded. A transport error ends the batch (what came before
/// it is still applied); a message that does not decode ends the session.
fn decode_batch(batch: Vec<Result<v1::AgentMessage, Status>>) -> Result<Inbound, Status> {
    let mut inbound = Inbound {
        last_seq: 0,
        events: Vec::with_capacity(batch.len()),
        broke: None,
    };
    for item in batch {
        let msg = match item {
            Ok(msg) => msg,
            Err(err) => {
                inbound.broke = Some(err);
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
            Some(v1::agent_message::Kind::Heartbeat(_)) => {
                inbound.events.push(AgentEvent::Heartbeat)
            }
            Some(v1::agent_message::Kind::Hello(_)) => {
                return Err(Status::invalid_argument("Hello sent twice in one session"));
            }
            None => {}
        }
    }
    Ok(inbound)
}

/// An agent's update, checked: an unknown state or failure class ends the session with
/// INVALID_ARGUMENT naming the field (an agent newer than this server, or a broken one),
/// rather than being read as something it is not.
fn decode_update(update: v1::ExecutionUpdate) -> Result<Update, Status> {
    let state = v1::ExecutionState::try_from(update.state)
        .ok()
        .and_then(ExecState::from_proto)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "ExecutionUpdate.state: unknown execution state {} (execution {})",
                update.state, update.execution_id
            ))
        })?;
    let failure = v1::FailureClass::try_from(update.failure)
        .map(Failure::from_proto)
        .map_err(|_| {
            Status::invalid_argument(format!(
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
    })
}

fn decode_chunk(chunk: v1::OutputChunk) -> Result<Chunk, Status> {
    let stream = match v1::OutputStream::try_from(chunk.stream) {
        Ok(v1::OutputStream::Stdout) => agent::Stream::Stdout,
        Ok(v1::OutputStream::Stderr) => agent::Stream::Stderr,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
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
        assert!(validate_hello(&hello(4, 0)).is_ok());
        let err = validate_hello(&hello(u32::MAX, 0)).unwrap_err();
        assert!(err.message().contains("concurrency 4294967295"), "{err}");
        let err = validate_hello(&hello(1, 3_000_000_000)).unwrap_err();
        assert!(err.message().contains("prefetch 3000000000"), "{err}");
    }

    #[test]
    fn unknown_enum_values_are_refused_naming_the_field() {
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: 99,
            ..Default::default()
        };
        let err = decode_update(update).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("ExecutionUpdate.state"), "{err}");
        let update = v1::ExecutionUpdate {
            execution_id: 4,
            state: v1::ExecutionState::Failed as i32,
            failure: 42,
            ..Default::default()
        };
        let err = decode_update(update).unwrap_err();
        assert!(err.message().contains("ExecutionUpdate.failure"), "{err}");
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
        assert!(err.message().contains("OutputChunk.stream"), "{err}");
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
}
