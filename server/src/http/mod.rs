//! The HTTP edge, served beside the gRPC API on the same address (HTTP/1.1 and HTTP/2, TLS
//! when the API has it): like `grpc/`, it only translates, calling the operations
//! (`service::ops`) every edge calls.
//!
//! Where routes go ([`router`]): the web UI is nested under `/ui/`, the agent binary download
//! under `/agent/`, Prometheus metrics at `/metrics`. Requests no route takes get a 404, or,
//! when they are gRPC calls, the `UNIMPLEMENTED` status a gRPC client expects.

pub mod metrics;
pub mod tls;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::service::ops::Ops;

/// What the HTTP routes hold: the operations, the API tokens (a web login and a metrics
/// scrape take the same tokens as the API), and how the port is served.
#[derive(Clone)]
pub struct State {
    pub ops: Ops,
    pub tokens: Tokens,
    /// The port is served over TLS (cookies are then `Secure`).
    pub tls: bool,
    /// Source networks that may scrape `/metrics` without a token (`[metrics] allow`).
    pub metrics_allow: std::sync::Arc<[crate::config::Net]>,
    /// Cancelled when scitqd stops: long-lived responses (event streams) end then, or the
    /// graceful shutdown would wait on them.
    pub shutdown: CancellationToken,
}

/// Every HTTP route. Mount new ones here, each under its own prefix.
pub fn router(state: State) -> Router {
    let ui = crate::ui::UiState::new(
        state.ops.clone(),
        state.tokens.clone(),
        state.tls,
        state.shutdown.clone(),
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::scrape))
        .route("/agent/scitq-agent", get(agent_binary))
        .route("/agent/scitq-agent.sha256", get(agent_sha256))
        .with_state(state)
        // The web UI: its routes are all under `/ui/` (and `/ui` sends there).
        .merge(crate::ui::router(ui))
}

/// The whole server: the gRPC services (`grpc`, as tonic builds them) and the HTTP routes,
/// one router, one port.
pub fn with_grpc(grpc: Router, state: State) -> Router {
    grpc.merge(router(state)).fallback(not_found)
}

/// Liveness for load balancers and service managers: answers once scitqd serves.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The agent binary recruited machines download (their user data holds its sha256, which
/// they check). Not secret: no token needed.
async fn agent_binary(axum::extract::State(state): axum::extract::State<State>) -> Response<Body> {
    let (path, _) = match state.ops.served_agent().await {
        Ok(Some(found)) => found,
        Ok(None) => return (StatusCode::NOT_FOUND, "no agent binary here\n").into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot serve the agent binary");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the agent binary\n",
            )
                .into_response();
        }
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    }
    response
}

/// `SHA256  scitq-agent`, as `sha256sum -c` reads it.
async fn agent_sha256(axum::extract::State(state): axum::extract::State<State>) -> Response<Body> {
    match state.ops.served_agent().await {
        Ok(Some((_, sha))) => format!("{sha}  scitq-agent\n").into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no agent binary here\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// No route: a gRPC call to an unknown service gets `UNIMPLEMENTED` (HTTP 200 with
/// `grpc-status: 12`, what gRPC clients read); anything else a plain 404.
async fn not_found(headers: HeaderMap) -> Response<Body> {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
