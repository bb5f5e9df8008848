//! scitqd, the scitq server: the gRPC API, the scheduler that pushes tasks to agents over
//! their streams, and persistence with sea-orm (SQLite by default, PostgreSQL).
//!
//! Layout: `grpc/` is the edge (decode, call, encode), `service/` the operations
//! (`service::ops`, what every edge calls) and the loops that own in-memory state (the
//! scheduler, the agent sessions), `core/` the decisions (plain functions and data),
//! `persistence/` the database and its group-commit writer, `auth` the tokens. See
//! ARCHITECTURE.md.

pub mod auth;
pub mod config;
pub mod core;
pub mod enroll_config;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod persistence;
pub mod provider_config;
pub mod service;
pub mod ui;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::Context;
use scitq_proto::v1::execution_service_server::ExecutionServiceServer;
use scitq_proto::v1::recruit_service_server::RecruitServiceServer;
use scitq_proto::v1::storage_service_server::StorageServiceServer;
use scitq_proto::v1::task_service_server::TaskServiceServer;
use scitq_proto::v1::worker_service_server::WorkerServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::persistence::{Store, Writer};
use crate::service::hub::Hub;
use crate::service::scheduler::Scheduler;

/// Largest accepted gRPC message: room for a batch of thousands of tasks, and for a
/// too-long command to reach validation and get a clear error.
const MAX_MESSAGE: usize = 64 << 20;

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Read before anything is created: a bad path changes nothing.
    let rclone_config: std::sync::Arc<str> = match &config.rclone_config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read rclone_config {}", path.display()))?
            .into(),
        None => "".into(),
    };
    let tls = match &config.tls {
        Some(tls) => Some(http::tls::acceptor(&tls.cert, &tls.key)?),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict data dir {}", config.data_dir.display()))?;
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| persistence::default_url(&config.data_dir));
    let (db, writer_db) = persistence::connect(&url)
        .await
        .with_context(|| format!("cannot open database {}", redact(&url)))?;
    let ids = persistence::load_ids(&db).await?;
    let (writer, writer_done) = Writer::spawn(writer_db, ids);
    let has_dependencies = persistence::deps::any(&db).await?;
    let store = Store {
        db,
        writer,
        output_cap: config.max_output_mib << 20,
        has_dependencies: std::sync::Arc::new(has_dependencies.into()),
    };
    let (tokens, fresh) = auth::bootstrap(&store, &config.data_dir).await?;

    let hub = Hub::default();
    let scheduler_stop = CancellationToken::new();
    let (scheduler, scheduler_done) = Scheduler::start(
        store.clone(),
        hub.clone(),
        config.lease,
        crate::core::registry::Registries::new(config.registries.clone()),
        scheduler_stop.clone(),
    )
    .await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    if let Some(fresh) = fresh {
        let server = match config.tls {
            Some(_) => format!("https://{local}"),
            None => local.to_string(),
        };
        match auth::write_client_config(&server, &fresh) {
            Ok(auth::ClientConfig::Written(path)) => {
                tracing::info!(path = %path.display(), "wrote the local client config")
            }
            Ok(auth::ClientConfig::Kept { path, server }) => tracing::warn!(
                path = %path.display(),
                other = %server,
                tokens = %config.data_dir.display(),
                "kept the local client config: it points at another server; this one's tokens \
                 are admin.token and worker.token in its data dir"
            ),
            Ok(auth::ClientConfig::Nowhere) => {}
            Err(err) => tracing::warn!(error = %err, "could not write the local client config"),
        }
    }
    // Written last: whoever waits for this file finds the tokens and client config ready.
    let addr_file = config.data_dir.join("scitqd.addr");
    std::fs::write(addr_file.with_extension("tmp"), format!("{local}\n"))?;
    std::fs::rename(addr_file.with_extension("tmp"), &addr_file)?;

    let deployment = {
        let (deploy, tls) = (config.deploy.clone(), config.tls.is_some());
        tokio::task::spawn_blocking(move || service::ops::Deployment::resolve(&deploy, local, tls))
            .await?
            .context("cannot read [deploy] server_ca or agent_binary")?
    };
    let ops = service::ops::Ops::new(
        store.clone(),
        scheduler.clone(),
        hub.clone(),
        rclone_config.clone(),
    )
    .with_deployment(deployment);
    // Recruitment: only with providers configured.
    let recruit_stop = CancellationToken::new();
    let (ops, recruiter_done) = if config.providers.is_empty() {
        (ops, None)
    } else {
        let owner = persistence::recruit::owner_id(&store).await?;
        let owner = scitq_provisioner::OwnerId::new(owner)
            .context("the stored owner id is not a valid tag")?;
        let recruiter = service::recruiter::Recruiter::new(
            owner,
            config.providers.clone(),
            local_context(&config),
        );
        let ops = ops.with_recruiter(recruiter.clone());
        let done = service::recruiter::spawn(
            ops.clone(),
            recruiter,
            config.recruit.interval,
            recruit_stop.clone(),
        );
        (ops, Some(done))
    };
    let state = grpc::State {
        ops,
        sessions: service::session::Context {
            store: store.clone(),
            scheduler,
            hub,
        },
        shutdown: shutdown.clone(),
        rclone_config,
        lease: config.lease,
    };
    let http_state = http::State {
        ops: state.ops.clone(),
        tokens: tokens.clone(),
        tls: tls.is_some(),
        metrics_allow: config.metrics_allow.clone().into(),
        shutdown: shutdown.clone(),
    };
    let admin_only = auth::admin_interceptor(tokens.clone());
    let check = auth::interceptor(tokens.clone());
    let agents = auth::agent_interceptor(tokens);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scitq_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(scitq_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut services = Routes::builder();
    services
        .add_service(InterceptedService::new(
            TaskServiceServer::new(grpc::tasks::Tasks(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            ExecutionServiceServer::new(grpc::executions::Executions(state.clone())),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            WorkerServiceServer::new(grpc::workers::Workers(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
            agents,
        ))
        .add_service(InterceptedService::new(
            StorageServiceServer::new(grpc::storage::Storage(state.clone())),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            RecruitServiceServer::new(grpc::recruit::Recruit(state.clone())),
            check.clone(),
        ))
        .add_service(InterceptedService::new(reflection_v1, admin_only.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, admin_only));
    // One router, one port: gRPC (HTTP/2) and the HTTP routes (HTTP/1.1 or HTTP/2).
    let app = http::with_grpc(services.routes().into_axum_router(), http_state);

    let server = Server::builder()
        .accept_http1(true)
        // One span per request, named by its path (an RPC's is its method): what a log
        // line belongs to.
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_routes(Routes::from(app));

    tracing::info!(
        listen = %local,
        data_dir = %config.data_dir.display(),
        database = %redact(&url),
        tls = tls.is_some(),
        "scitqd listening on {local}"
    );
    // Builder::tcp_nodelay is ignored with an incoming stream: set it here, or Nagle holds
    // every small message (an assignment, an ack) for tens of ms.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    match tls {
        Some(acceptor) => {
            server
                .serve_with_incoming_shutdown(
                    http::tls::incoming(incoming, acceptor),
                    shutdown.cancelled(),
                )
                .await?
        }
        None => {
            server
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await?
        }
    }

    tracing::info!("shutting down");
    recruit_stop.cancel();
    if let Some(done) = recruiter_done {
        let _ = done.await;
    }
    scheduler_stop.cancel();
    let _ = scheduler_done.await;
    drop(state);
    drop(store);
    // Every writer handle is gone once the sessions are: the writer commits what it
    // holds and stops.
    if tokio::time::timeout(Duration::from_secs(10), writer_done)
        .await
        .is_err()
    {
        tracing::warn!("the store writer did not finish within 10s");
    }
    Ok(())
}

/// What local instances need from the config.
pub fn local_context(config: &Config) -> service::recruiter::LocalContext {
    service::recruiter::LocalContext {
        data_dir: config.data_dir.clone(),
        agent_binary: config.deploy.agent_binary.clone(),
        server_ca: config.deploy.server_ca.clone(),
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redact("postgres://scitq:secret@db/scitq"),
            "postgres://scitq:***@db/scitq"
        );
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
