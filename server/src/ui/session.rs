//! Logging in and out, the session cookie, and the CSRF check of every POST.
//!
//! A session lives in scitqd's memory (a restart logs everyone out): the cookie holds a
//! random id, the map holds its SHA-256, its CSRF token and when it ends. Only admin
//! tokens log in: every agent machine holds the worker token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{UiError, UiState, layout};
use crate::auth::{Role, generate, hash};

/// How long a session lasts from its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most live sessions: past it the oldest goes.
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "scitq_session";

struct Session {
    csrf: String,
    expires: Instant,
}

/// The live sessions, by the hash of their cookie.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// A new session: its cookie value.
    fn open(&self) -> String {
        let id = generate();
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash(&id),
            Session {
                csrf: generate(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    /// The CSRF token of a live session.
    fn csrf(&self, id: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&hash(id))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    fn close(&self, id: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&hash(id));
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A logged-in request: its session's CSRF token goes into every form of the page.
pub struct Authed {
    pub csrf: String,
    session: String,
}

impl FromRequestParts<UiState> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Response> {
        let session = cookie_value(&parts.headers, COOKIE).unwrap_or_default();
        match state.0.sessions.csrf(session) {
            Some(csrf) => Ok(Authed {
                csrf,
                session: session.to_owned(),
            }),
            None if parts.method == axum::http::Method::GET => {
                let next: String = form_urlencoded::byte_serialize(
                    parts
                        .uri
                        .path_and_query()
                        .map_or("/ui/", |p| p.as_str())
                        .as_bytes(),
                )
                .collect();
                Err(Redirect::to(&format!("/ui/login?next={next}")).into_response())
            }
            None => Err((
                StatusCode::UNAUTHORIZED,
                "not logged in, or the session ended: log in again at /ui/login",
            )
                .into_response()),
        }
    }
}

/// What every state change starts with: a POST of a logged-in session whose form carries
/// that session's CSRF token (else 401 or 403, before the handler runs).
pub struct Posted {
    pub authed: Authed,
    pub form: Form,
}

impl FromRequest<UiState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &UiState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let authed = Authed::from_request_parts(&mut parts, state).await?;
        let body = axum::body::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = Form::checked(&authed, &body).map_err(IntoResponse::into_response)?;
        Ok(Posted { authed, form })
    }
}

/// A POSTed form, once its CSRF token is checked. Keys may repeat (`ids`).
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses `body` and checks its `csrf` field against the session's.
    fn checked(authed: &Authed, body: &[u8]) -> Result<Form, UiError> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let form = Form(fields);
        // Compared as hashes: no early exit on the first differing byte of the secret.
        let sent = form.get("csrf").map(hash);
        if sent.as_deref() != Some(hash(&authed.csrf).as_str()) {
            return Err(UiError {
                status: StatusCode::FORBIDDEN,
                message: "missing or wrong CSRF token: reload the page and try again".into(),
            });
        }
        Ok(form)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    login_form(query.next.as_deref(), None, StatusCode::OK)
}

fn login_form(next: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let next = super::back_to(next, "/ui/");
    let body = layout::bare(
        "Log in",
        html! {
            h1 { "scitq" }
            form.login method="post" action="/ui/login" {
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus;
                p.hint { "An admin token: scitqd wrote one in admin.token in its data dir." }
                button type="submit" { "Log in" }
            }
        },
    );
    (status, body).into_response()
}

/// Checks the token; an admin one opens a session.
pub async fn login(State(state): State<UiState>, body: axum::body::Bytes) -> Response {
    let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let next = fields.get("next").map(String::as_str);
    let token = fields.get("token").map(|t| t.trim()).unwrap_or_default();
    match state.0.tokens.role_of(token) {
        Some(Role::Admin) => {}
        Some(Role::Worker) => {
            return login_form(
                next,
                Some("a worker token cannot log in: use an admin token"),
                StatusCode::FORBIDDEN,
            );
        }
        None => {
            return login_form(
                next,
                Some("this token is not one of this server's"),
                StatusCode::UNAUTHORIZED,
            );
        }
    }
    let id = state.0.sessions.open();
    let secure = if state.0.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    );
    let target = super::back_to(next, "/ui/");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response()
}

pub async fn logout(State(state): State<UiState>, posted: Posted) -> Response {
    state.0.sessions.close(&posted.authed.session);
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open();
        let csrf = sessions.csrf(&id).unwrap();
        assert_eq!(csrf.len(), 64);
        assert!(sessions.csrf("other").is_none());
        sessions.close(&id);
        assert!(sessions.csrf(&id).is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; scitq_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&headers, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }

    #[test]
    fn a_form_without_the_csrf_token_is_refused() {
        let authed = Authed {
            csrf: "secret".into(),
            session: String::new(),
        };
        assert!(Form::checked(&authed, b"ids=1&ids=2").is_err());
        assert!(Form::checked(&authed, b"csrf=guess&ids=1").is_err());
        let form = Form::checked(&authed, b"csrf=secret&ids=1&ids=2")
            .ok()
            .unwrap();
        assert_eq!(form.all("ids").collect::<Vec<_>>(), ["1", "2"]);
    }
}
