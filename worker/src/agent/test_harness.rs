//! A scripted in-process server on a loopback port, for the agent loop tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use scitq_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use scitq_proto::v1::{
    Ack, AgentMessage, Assignment, ExecutionState, ExecutionUpdate, ListWorkersRequest,
    ListWorkersResponse, OutputOffsets, ServerMessage, Settings as WireSettings, Shell,
    Signal as WireSignal, SignalExecution, TaskSpec, UpdateWorkerRequest, Welcome, Worker,
    agent_message, server_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::config::{Config, ServerAddr};
use crate::state::{ExecDir, ExecutionId, Phase as DiskPhase, StateFile};

pub(super) const WAIT: Duration = Duration::from_secs(10);

/// One session as the fake server sees it.
pub(super) struct Conversation {
    pub(super) inbound: Streaming<AgentMessage>,
    pub(super) outbound: mpsc::UnboundedSender<Result<ServerMessage, Status>>,
    pub(super) authorization: String,
}

pub(super) struct FakeServer {
    pub(super) sessions: mpsc::UnboundedSender<Conversation>,
    pub(super) reject: bool,
}

#[tonic::async_trait]
impl WorkerService for FakeServer {
    type SessionStream = UnboundedReceiverStream<Result<ServerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.reject {
            return Err(Status::unauthenticated("bad token"));
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (outbound, rx) = mpsc::unbounded_channel();
        let inbound = request.into_inner();
        let _ = self.sessions.send(Conversation {
            inbound,
            outbound,
            authorization,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn update_worker(
        &self,
        _: Request<UpdateWorkerRequest>,
    ) -> Result<Response<Worker>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_worker(
        &self,
        _: Request<scitq_proto::v1::WorkerRef>,
    ) -> Result<Response<scitq_proto::v1::DeleteWorkerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn issue_enrollment_token(
        &self,
        _: Request<scitq_proto::v1::IssueEnrollmentTokenRequest>,
    ) -> Result<Response<scitq_proto::v1::EnrollmentToken>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drain_worker(
        &self,
        _: Request<scitq_proto::v1::WorkerRef>,
    ) -> Result<Response<scitq_proto::v1::Worker>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

impl Conversation {
    /// The next message that is not a heartbeat.
    pub(super) async fn recv(&mut self) -> AgentMessage {
        loop {
            let message = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("agent message in time")
                .expect("stream ok")
                .expect("stream open");
            if !matches!(message.kind, Some(agent_message::Kind::Heartbeat(_))) {
                return message;
            }
        }
    }

    pub(super) async fn recv_update(&mut self) -> (u64, ExecutionUpdate) {
        let message = self.recv().await;
        match message.kind {
            Some(agent_message::Kind::Update(update)) => (message.seq, update),
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// Reads updates until `done` holds for those seen so far (progress updates may be
    /// merged, so tests wait for states rather than count messages); returns them all.
    pub(super) async fn recv_until(
        &mut self,
        mut done: impl FnMut(&[ExecutionUpdate]) -> bool,
    ) -> Vec<ExecutionUpdate> {
        let mut seen = Vec::new();
        while !done(&seen) {
            // Output may overtake a progress update that waits to be merged.
            if let Some(agent_message::Kind::Update(update)) = self.recv().await.kind {
                seen.push(update);
            }
        }
        seen
    }

    /// Reads updates until execution `id` reports `state`.
    pub(super) async fn recv_state(&mut self, id: i64, state: i32) -> ExecutionUpdate {
        let seen = self
            .recv_until(|seen| {
                seen.last()
                    .is_some_and(|u| u.execution_id == id && u.state == state)
            })
            .await;
        seen.last().cloned().expect("one update")
    }

    pub(super) fn send(&self, kind: server_message::Kind) {
        self.outbound
            .send(Ok(ServerMessage { kind: Some(kind) }))
            .expect("agent listening");
    }

    pub(super) fn welcome(&self, concurrency: u32, offsets: Vec<OutputOffsets>, cancel: Vec<i64>) {
        self.send(server_message::Kind::Welcome(Welcome {
            worker_id: 1,
            settings: Some(WireSettings {
                concurrency,
                prefetch: 0,
                batch: String::new(),
                prefetch_auto: false,
            }),
            offsets,
            cancel,
            rclone_config: String::new(),
            lease_ms: 6 * 3600 * 1000,
        }));
    }

    pub(super) fn assign(&self, id: i64, command: &str) {
        self.send(server_message::Kind::Assignment(Assignment {
            execution_id: id,
            task_id: id * 10,
            spec: Some(TaskSpec {
                command: command.to_owned(),
                shell: Shell::Sh as i32,
                ..TaskSpec::default()
            }),
            registry_credentials: Vec::new(),
        }));
    }

    pub(super) fn signal(&self, id: i64, signal: WireSignal) {
        self.send(server_message::Kind::Signal(SignalExecution {
            execution_id: id,
            signal: signal as i32,
        }));
    }

    pub(super) fn ack(&self, seq: u64) {
        self.send(server_message::Kind::Ack(Ack { seq }));
    }

    /// Reads messages until the final update of `id`, checking the seq numbering; returns the
    /// stdout and stderr received from `from` offsets, the non-final updates and the final one.
    pub(super) async fn run_to_final(&mut self, id: i64, from: [u64; 2]) -> Outcome {
        let mut outcome = Outcome {
            output: [Vec::new(), Vec::new()],
            states: Vec::new(),
            last_seq: 0,
            last: ExecutionUpdate::default(),
        };
        let mut next = from;
        loop {
            let message = self.recv().await;
            assert!(message.seq > outcome.last_seq, "seq increases");
            outcome.last_seq = message.seq;
            match message.kind.unwrap() {
                agent_message::Kind::Output(chunk) if chunk.execution_id == id => {
                    let s = chunk.stream as usize;
                    assert_eq!(chunk.offset, next[s], "chunks follow each other");
                    next[s] += chunk.data.len() as u64;
                    outcome.output[s].extend_from_slice(&chunk.data);
                }
                agent_message::Kind::Update(update) if update.execution_id == id => {
                    if crate::outbox::is_final(&update) {
                        outcome.last = update;
                        return outcome;
                    }
                    outcome.states.push(update.state);
                }
                _ => {}
            }
        }
    }
}

pub(super) struct Outcome {
    pub(super) output: [Vec<u8>; 2],
    pub(super) states: Vec<i32>,
    pub(super) last_seq: u64,
    pub(super) last: ExecutionUpdate,
}

pub(super) struct Harness {
    pub(super) sessions: mpsc::UnboundedReceiver<Conversation>,
    pub(super) config: Config,
    pub(super) _work: tempfile::TempDir,
}

impl Harness {
    pub(super) async fn start(reject: bool) -> Harness {
        let work = tempfile::tempdir().unwrap();
        let work_dir = work.path().to_owned();
        Self::start_in(reject, work, work_dir).await
    }

    pub(super) async fn start_in(
        reject: bool,
        work: tempfile::TempDir,
        work_dir: PathBuf,
    ) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let server = FakeServer {
            sessions: sessions_tx,
            reject,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(server))
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
        );
        let config = Config {
            server: ServerAddr {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            },
            bearer: crate::config::Bearer::Token("secret".into()),
            server_ca: None,
            concurrency: 1,
            prefetch: scitq_proto::PrefetchSetting::Fixed(0),
            name: "w1".into(),
            host: "h".into(),
            batch: String::new(),
            work_dir,
            heartbeat: Duration::from_secs(3600),
            keepalive: Duration::from_secs(20),
            reconnect_max: Duration::from_millis(400),
            spool_limit: u64::MAX,
            docker_network: scitq_proto::container::Network::None,
            pull_timeout: Duration::from_secs(60),
            sra_tools_image: "ncbi/sra-tools".into(),
            keep_failed: Duration::from_secs(3600),
            disk_threshold: 100,
            result_hold: Duration::from_millis(5),
            allow_mounts: Vec::new(),
        };
        Harness {
            sessions,
            config,
            _work: work,
        }
    }

    pub(super) fn spawn_agent(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), crate::AgentError>>,
    ) {
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(crate::run(self.config.clone(), shutdown.clone()));
        (shutdown, agent)
    }

    /// Starts the agent and takes its session past `Hello` and a welcome at the configured
    /// concurrency: the way most tests begin. Returns the agent's stop token and task, and
    /// the session.
    pub(super) async fn welcomed(
        &mut self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), crate::AgentError>>,
        Conversation,
    ) {
        let (shutdown, agent) = self.spawn_agent();
        let mut c = self.next_session().await;
        hello_of(&mut c).await;
        c.welcome(self.config.concurrency, vec![], vec![]);
        (shutdown, agent, c)
    }

    pub(super) async fn next_session(&mut self) -> Conversation {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("a session in time")
            .unwrap()
    }

    pub(super) fn dir(&self, id: i64) -> ExecDir {
        ExecDir::new(&self.config.work_dir, ExecutionId(id))
    }
}

pub(super) async fn hello_of(conversation: &mut Conversation) -> scitq_proto::v1::Hello {
    let message = conversation.recv().await;
    assert_eq!(message.seq, 1, "Hello opens the session at seq 1");
    match message.kind {
        Some(agent_message::Kind::Hello(hello)) => hello,
        other => panic!("expected Hello, got {other:?}"),
    }
}

pub(super) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) fn disk_phase(dir: &ExecDir) -> Option<DiskPhase> {
    StateFile::read(dir).ok().map(|s| s.phase)
}

pub(super) fn state(s: ExecutionState) -> i32 {
    s as i32
}

/// A shell loop that waits until the test creates `gate`, or until the folder holding it is
/// removed: a test that fails before opening the gate drops that folder, and its task must not
/// loop on for ever after it.
pub(super) fn wait_for_gate(gate: &Path) -> String {
    let folder = gate.parent().expect("a gate inside a folder");
    format!(
        "while [ -d '{}' ] && [ ! -e '{}' ]; do sleep 0.01; done",
        folder.display(),
        gate.display()
    )
}
