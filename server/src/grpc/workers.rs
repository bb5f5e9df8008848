//! WorkerService: administration RPCs, through `service::ops` (the agent stream is in
//! `session.rs`).

use std::pin::Pin;

use futures::Stream;
use scitq_proto::v1;
use scitq_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status, Streaming};

use super::{State, convert, session, status};
use crate::auth::require_admin;
use crate::core::ids::WorkerId;
use crate::service::ops::{WorkerChange, WorkerDeleted, WorkerView};

pub struct Workers(pub State);

type ServerStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

fn worker(view: WorkerView) -> v1::Worker {
    let state = match (
        &view.worker.status,
        view.worker.settings.draining,
        view.active,
    ) {
        (crate::core::model::WorkerStatus::Online, true, _) => "draining",
        (crate::core::model::WorkerStatus::Online, false, 0) => "idle",
        (crate::core::model::WorkerStatus::Online, false, _) => "running",
        _ => "offline",
    };
    let machine = view.machine;
    let mut out = convert::worker(view.worker, view.active);
    out.state = state.to_owned();
    if let Some(m) = machine {
        out.provider = m.provider;
        out.flavor = m.flavor;
        out.region = m.region;
    }
    out
}

#[tonic::async_trait]
impl WorkerService for Workers {
    type SessionStream = ServerStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        session::open(self.0.clone(), request).await
    }

    async fn list_workers(
        &self,
        request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        require_admin(&request)?;
        let workers = self.0.ops.workers().await.map_err(status)?;
        let mut deploying = self.0.ops.live_machines().await.map_err(status)?;
        for w in &workers {
            deploying.remove(&w.worker.name);
        }
        let mut deploying: Vec<v1::Machine> =
            deploying.into_values().map(convert::machine).collect();
        deploying.sort_by_key(|m| m.id);
        Ok(Response::new(v1::ListWorkersResponse {
            workers: workers.into_iter().map(worker).collect(),
            deploying,
        }))
    }

    async fn update_worker(
        &self,
        request: Request<v1::UpdateWorkerRequest>,
    ) -> Result<Response<v1::Worker>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let change = WorkerChange {
            concurrency: req.concurrency,
            prefetch: req.prefetch,
            prefetch_auto: req.prefetch_auto,
            paused: req.paused,
            batch: req.batch,
        };
        let view = self
            .0
            .ops
            .update_worker(WorkerId(req.id), change)
            .await
            .map_err(status)?;
        Ok(Response::new(worker(view)))
    }

    async fn drain_worker(
        &self,
        request: Request<v1::WorkerRef>,
    ) -> Result<Response<v1::Worker>, Status> {
        require_admin(&request)?;
        let id = WorkerId(request.into_inner().id);
        let view = self.0.ops.drain_worker(id).await.map_err(status)?;
        Ok(Response::new(worker(view)))
    }

    async fn delete_worker(
        &self,
        request: Request<v1::WorkerRef>,
    ) -> Result<Response<v1::DeleteWorkerResponse>, Status> {
        require_admin(&request)?;
        let id = WorkerId(request.into_inner().id);
        let deleted = self.0.ops.delete_worker(id).await.map_err(status)?;
        Ok(Response::new(v1::DeleteWorkerResponse {
            destroying: match deleted {
                WorkerDeleted::Forgotten => String::new(),
                WorkerDeleted::Destroying { machine } => machine,
            },
        }))
    }

    async fn issue_enrollment_token(
        &self,
        request: Request<v1::IssueEnrollmentTokenRequest>,
    ) -> Result<Response<v1::EnrollmentToken>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_ENROLL_TTL,
            s => std::time::Duration::from_secs(s),
        };
        let issued = self
            .0
            .ops
            .enrollment()
            .issue(&req.name, ttl)
            .await
            .map_err(status)?;
        let expires_ms = issued
            .expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(Response::new(v1::EnrollmentToken {
            token: issued.token,
            name: issued.instance,
            expires_at: Some(convert::timestamp(expires_ms)),
        }))
    }
}

/// Lifetime of an enrollment token issued without one.
const DEFAULT_ENROLL_TTL: std::time::Duration = std::time::Duration::from_secs(600);
