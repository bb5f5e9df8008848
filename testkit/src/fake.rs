//! The scaffolding every fake cloud shares: an HTTP server on 127.0.0.1 (a free port) that
//! logs each request, answers from a queue of canned responses first (an error the test wants
//! next), and otherwise hands the request to the cloud's own router with the cloud's state
//! locked. The server stops when its [`FakeServer`] is dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// For [`Canned`] answers, without a dependency on axum in the tests.
pub use axum::http::{Method, StatusCode};

/// A canned answer the fake gives to the next request with this method whose path (without
/// its query) ends with `path`.
pub struct Canned {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// One request as the router sees it.
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    /// The path without a trailing `/`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The path's non-empty segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The value of `key` in the query string, as sent (not decoded).
    pub fn query(&self, key: &str) -> Option<&str> {
        self.uri
            .query()?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find_map(|(k, v)| (k == key).then_some(v))
    }
}

/// What a fake holds: the request log, the canned answers and the cloud's own state.
pub struct FakeState<C> {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `METHOD PATH[?QUERY]` of every request, in order.
    pub log: Vec<String>,
    canned: VecDeque<Canned>,
    pub cloud: C,
}

/// How a cloud answers a request that no canned answer took.
pub type Route<C> = fn(&mut FakeState<C>, &Request) -> Response;

struct Shared<C> {
    state: Mutex<FakeState<C>>,
    route: Route<C>,
}

/// A fake cloud on 127.0.0.1, stopped when dropped.
pub struct FakeServer<C> {
    addr: SocketAddr,
    shared: Arc<Shared<C>>,
    serve: tokio::task::JoinHandle<()>,
}

impl<C: Send + 'static> FakeServer<C> {
    /// Binds a free port on 127.0.0.1 and serves `cloud` through `route` on the current
    /// runtime.
    pub async fn start(cloud: C, route: Route<C>) -> FakeServer<C> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the fake's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                base: format!("http://{addr}"),
                log: Vec::new(),
                canned: VecDeque::new(),
                cloud,
            }),
            route,
        });
        let app = Router::new()
            .fallback(handle::<C>)
            .with_state(shared.clone());
        let serve = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake's server");
        });
        FakeServer {
            addr,
            shared,
            serve,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fake's state, for a test to read or change (do not hold it across an await).
    pub fn lock(&self) -> MutexGuard<'_, FakeState<C>> {
        self.shared.state.lock().expect("the fake's lock")
    }

    /// Answers the next matching request with `canned`.
    pub fn can(&self, canned: Canned) {
        self.lock().canned.push_back(canned);
    }

    /// Requests logged exactly as `line` (`METHOD PATH[?QUERY]`).
    pub fn count(&self, line: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| l.as_str() == line)
            .count()
    }

    /// Requests whose log line starts with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Every request so far.
    pub fn requests(&self) -> usize {
        self.lock().log.len()
    }

    /// The log lines from the `from`-th on.
    pub fn log_since(&self, from: usize) -> Vec<String> {
        self.lock().log.get(from..).unwrap_or_default().to_vec()
    }
}

impl<C> Drop for FakeServer<C> {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

async fn handle<C: Send + 'static>(
    State(shared): State<Arc<Shared<C>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_owned();
    let line = match uri.query() {
        Some(q) => format!("{method} {path}?{q}"),
        None => format!("{method} {path}"),
    };
    let mut state = shared.state.lock().expect("the fake's lock");
    state.log.push(line);
    if let Some(i) = state
        .canned
        .iter()
        .position(|c| c.method == method && path.ends_with(c.path.as_str()))
    {
        let canned = state.canned.remove(i).expect("a canned answer");
        let mut response = json_response(canned.status, canned.body);
        for (k, v) in canned.headers {
            response
                .headers_mut()
                .insert(k, v.parse().expect("a header value"));
        }
        return response;
    }
    let request = Request {
        method,
        uri,
        path,
        headers,
        body,
    };
    (shared.route)(&mut state, &request)
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `response` with `name: value` added.
pub fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    response
        .headers_mut()
        .insert(name, value.parse().expect("a header value"));
    response
}
