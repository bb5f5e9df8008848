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
        // The agent download: `.nest("/agent", …)`.
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
