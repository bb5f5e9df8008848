//! The web UI: server-rendered pages under `/ui/` over the operations (`service::ops`),
//! like `grpc/`: it decodes forms and queries, calls `Ops`, and renders HTML (maud, so
//! every value is escaped). No inline script: the page behaviour is `assets/app.js`,
//! served from the binary, and the Content-Security-Policy says so.
//!
//! Security: a token logs in (admin tokens only) and gets a session cookie (HttpOnly,
//! SameSite=Strict, Secure under TLS) that expires; every state change is a POST carrying
//! the session's CSRF token (`session.rs`).

mod batches;
mod jobs;
mod layout;
mod recruiters;
mod session;
mod task;
mod tasks;
mod workers;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::persistence::StoreError;
use crate::service::ops::{Ops, OpsError};

pub use session::SESSION_TTL;

/// What every page handler holds.
#[derive(Clone)]
pub struct UiState(Arc<Inner>);

struct Inner {
    ops: Ops,
    tokens: Tokens,
    sessions: session::Sessions,
    /// Served under TLS: the session cookie is `Secure`.
    secure: bool,
    /// Cancelled when scitqd stops: live output streams end then.
    shutdown: CancellationToken,
    /// Finished-task counts seen per batch, for the tasks per minute.
    rates: Mutex<batches::Rates>,
}

impl UiState {
    pub fn new(ops: Ops, tokens: Tokens, secure: bool, shutdown: CancellationToken) -> UiState {
        UiState(Arc::new(Inner {
            ops,
            tokens,
            sessions: session::Sessions::default(),
            secure,
            shutdown,
            rates: Mutex::default(),
        }))
    }

    fn ops(&self) -> &Ops {
        &self.0.ops
    }
}

/// The UI's routes, all under `/ui/`, to merge into scitqd's HTTP router.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(batches::page))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/batches/act", post(batches::act))
        .route("/ui/tasks", get(tasks::page))
        .route("/ui/tasks/act", post(tasks::act))
        .route("/ui/tasks/edit", post(tasks::edit))
        .route("/ui/tasks/{id}", get(task::page))
        .route("/ui/tasks/{id}/output", get(task::output))
        .route("/ui/tasks/{id}/follow", get(task::follow))
        .route("/ui/tasks/{id}/relaunch", post(task::relaunch))
        .route("/ui/workers", get(workers::page))
        .route("/ui/workers/{id}/settings", post(workers::settings))
        .route("/ui/workers/{id}/act", post(workers::act))
        .route(
            "/ui/recruiters",
            get(recruiters::page).post(recruiters::create),
        )
        .route("/ui/recruiters/{id}/act", post(recruiters::act))
        .route("/ui/jobs", get(jobs::page))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Script only from this origin, no inline script or style, no framing, no form posted
/// elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    for (name, value) in set {
        headers.insert(name, value);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The stylesheet and the script, compiled in.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// An operation's refusal or failure, as a page.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn bad_request(message: impl Into<String>) -> UiError {
        UiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<OpsError> for UiError {
    fn from(err: OpsError) -> UiError {
        let status = match &err {
            OpsError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            OpsError::Store(
                StoreError::Db(_) | StoreError::Closed | StoreError::Corrupt { .. },
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            OpsError::Store(_) | OpsError::WorkerConnected { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %err, "web UI request failed");
        }
        UiError {
            status,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        let body = layout::bare(
            title,
            maud::html! {
                h1 { (title) }
                p.error role="alert" { (self.message) }
                p { a href="/ui/" { "Back to the batches" } }
            },
        );
        (self.status, body).into_response()
    }
}

/// Where to go back to after an action: a page of the UI, never another site.
fn back_to(target: Option<&str>, default: &str) -> String {
    match target {
        Some(t) if t.starts_with("/ui/") && !t.starts_with("/ui//") && !t.contains('\\') => {
            t.to_owned()
        }
        _ => default.to_owned(),
    }
}

/// Where an action ends: back to `target`, which says `note` (what was done).
fn redirect_noted(target: &str, note: &str) -> Response {
    Redirect::to(&with_note(target, note)).into_response()
}

/// `target` with `note` added as the `note` query parameter (said on the page).
fn with_note(target: &str, note: &str) -> String {
    let base: String = target
        .split_once('?')
        .map(|(path, query)| {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("note="))
                .collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        })
        .unwrap_or_else(|| target.to_owned());
    let sep = if base.contains('?') { '&' } else { '?' };
    let note: String = form_urlencoded::byte_serialize(note.as_bytes()).collect();
    format!("{base}{sep}note={note}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_go_back_to_ui_pages_only() {
        assert_eq!(
            back_to(Some("/ui/tasks?batch=a"), "/ui/"),
            "/ui/tasks?batch=a"
        );
        for foreign in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/x",
        ] {
            assert_eq!(back_to(Some(foreign), "/ui/"), "/ui/", "{foreign}");
        }
        assert_eq!(back_to(None, "/ui/workers"), "/ui/workers");
    }

    #[test]
    fn a_note_replaces_the_previous_one() {
        assert_eq!(with_note("/ui/", "done"), "/ui/?note=done");
        assert_eq!(
            with_note("/ui/tasks?batch=a&note=old", "2 paused"),
            "/ui/tasks?batch=a&note=2+paused"
        );
        assert_eq!(with_note("/ui/tasks?note=x", "y"), "/ui/tasks?note=y");
    }
}
