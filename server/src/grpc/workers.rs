//! WorkerService: administration RPCs (the agent stream is in `session.rs`).

use std::pin::Pin;

use futures::Stream;
use scitq_proto::v1;
use scitq_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status, Streaming};

use super::{State, convert, session, status};
use crate::auth::require_admin;
use crate::core::ids::WorkerId;
use crate::core::task::validate_batch_name;
use crate::persistence::workers::{self, WorkerSettings, settings_of};
use crate::service::scheduler::Command;

pub struct Workers(pub State);

type ServerStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

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
        let rows = workers::list(&self.0.store).await.map_err(status)?;
        let active = self.0.scheduler.active().await;
        let workers = rows
            .iter()
            .map(|row| convert::worker(row, active.get(&WorkerId(row.id)).copied()))
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn update_worker(
        &self,
        request: Request<v1::UpdateWorkerRequest>,
    ) -> Result<Response<v1::Worker>, Status> {
        require_admin(&request)?;
        let req = request.into_inner();
        let id = WorkerId(req.id);
        check_settings(req.concurrency, req.prefetch)?;
        let current = workers::get(&self.0.store.db, id).await.map_err(status)?;
        let mut settings: WorkerSettings = settings_of(&current);
        if let Some(c) = req.concurrency {
            settings.concurrency = c;
        }
        if let Some(p) = req.prefetch {
            settings.prefetch = p;
        }
        if let Some(paused) = req.paused {
            settings.paused = paused;
            if !paused {
                // Resuming also undoes a drain.
                settings.draining = false;
            }
        }
        if let Some(batch) = req.batch {
            settings.batch = if batch.trim().is_empty() {
                None
            } else {
                Some(
                    validate_batch_name(0, &batch)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                )
            };
        }
        self.apply(id, settings).await
    }

    async fn drain_worker(
        &self,
        request: Request<v1::WorkerRef>,
    ) -> Result<Response<v1::Worker>, Status> {
        require_admin(&request)?;
        let id = WorkerId(request.into_inner().id);
        let current = workers::get(&self.0.store.db, id).await.map_err(status)?;
        let mut settings = settings_of(&current);
        settings.draining = true;
        self.apply(id, settings).await
    }

    async fn delete_worker(
        &self,
        request: Request<v1::WorkerRef>,
    ) -> Result<Response<v1::DeleteWorkerResponse>, Status> {
        require_admin(&request)?;
        let id = WorkerId(request.into_inner().id);
        workers::get(&self.0.store.db, id).await.map_err(status)?;
        if self.0.scheduler.active().await.contains_key(&id) {
            return Err(Status::failed_precondition(format!(
                "worker {id} is connected: stop its agent first (or pause it)"
            )));
        }
        workers::delete(&self.0.store, id).await.map_err(status)?;
        Ok(Response::new(v1::DeleteWorkerResponse {}))
    }
}

/// Range checks of worker settings, before anything is read or stored: a value past the
/// limit used to wrap to a negative number in the database.
pub(super) fn check_settings(
    concurrency: Option<u32>,
    prefetch: Option<u32>,
) -> Result<(), Status> {
    if concurrency == Some(0) {
        return Err(Status::invalid_argument(
            "concurrency 0 is not allowed: it must be at least 1",
        ));
    }
    if let Some(c) = concurrency.filter(|c| *c > scitq_proto::MAX_CONCURRENCY) {
        return Err(Status::invalid_argument(format!(
            "concurrency {c} is too large: it must be at most {}",
            scitq_proto::MAX_CONCURRENCY
        )));
    }
    if let Some(p) = prefetch.filter(|p| *p > scitq_proto::MAX_PREFETCH) {
        return Err(Status::invalid_argument(format!(
            "prefetch {p} is too large: it must be at most {}",
            scitq_proto::MAX_PREFETCH
        )));
    }
    Ok(())
}

impl Workers {
    /// Stores a worker's new settings, then pushes them to its agent.
    async fn apply(
        &self,
        id: WorkerId,
        settings: WorkerSettings,
    ) -> Result<Response<v1::Worker>, Status> {
        let row = workers::update_settings(&self.0.store, id, settings.clone())
            .await
            .map_err(status)?;
        self.0.scheduler.send(Command::Settings {
            worker: id,
            settings,
        });
        let active = self.0.scheduler.active().await;
        Ok(Response::new(convert::worker(
            &row,
            active.get(&id).copied(),
        )))
    }
}
