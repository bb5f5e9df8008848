//! `GET /metrics`: Prometheus (OpenMetrics text) for an admin token (`Authorization:
//! Bearer`) or a source address in the `[metrics] allow` list. Worker tokens are refused:
//! one sits on every worker.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode, header};
use axum::response::IntoResponse;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::auth::Role;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn scrape(State(state): State<super::State>, request: Request) -> Response<Body> {
    if let Err(refused) = check(&state, &request) {
        return refused;
    }
    let gauges = match state.ops.gauges().await {
        Ok(gauges) => gauges,
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot read the task counts");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response();
        }
    };
    let snapshot = crate::metrics::snapshot(gauges.tasks, gauges.workers_connected);
    match crate::metrics::metrics().encode(&snapshot) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

/// An admin token, or no token from an allowed address.
#[allow(clippy::result_large_err)]
fn check(state: &super::State, request: &Request) -> Result<(), Response<Body>> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer.map(|token| state.tokens.role_of(token)) {
        Some(Some(Role::Admin)) => return Ok(()),
        Some(Some(Role::Worker)) => {
            return Err((
                StatusCode::FORBIDDEN,
                "a worker token cannot read metrics: use an admin token\n",
            )
                .into_response());
        }
        Some(None) => return Err(unauthorized("unknown token\n")),
        None => {}
    }
    let peer = peer(request);
    if let Some(peer) = peer
        && state.metrics_allow.iter().any(|net| net.contains(peer))
    {
        return Ok(());
    }
    Err(unauthorized(
        "metrics need an admin token (authorization: Bearer TOKEN) or a source address in \
         the [metrics] allow list\n",
    ))
}

fn unauthorized(message: &'static str) -> Response<Body> {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        message,
    )
        .into_response()
}

/// The client's address, as tonic's connection info records it (in clear or under TLS).
fn peer(request: &Request) -> Option<std::net::IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}
