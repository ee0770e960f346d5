//! Cairn's HTTP node: the v1 API of `DESIGN.md` over a [`cairn_engine::Engine`].
//!
//! [`router`] builds the whole API; `cairn serve` (crate `cairn-cli`) only
//! wires it to a listener. Every error is `{"error":{"code","message"}}` with
//! a stable code (see [`error`]); reads stream NDJSON whose last line is
//! `{"next":N}`, or JSON, or a live tail over SSE.
//!
//! ```no_run
//! # async fn demo() {
//! let engine = cairn_engine::Engine::new(std::sync::Arc::new(object_store::memory::InMemory::new()), Default::default());
//! let app = cairn_server::router(cairn_server::AppState::new(engine, Default::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

pub mod auth;
mod console;
pub mod error;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cairn_engine::Engine;

pub use error::ApiError;

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Request bodies larger than this get 413.
    pub body_limit: usize,
    /// An event's data larger than this gets 413 `event_too_large`.
    pub max_event_bytes: usize,
    /// Until the response starts; streamed bodies may take longer.
    pub request_timeout: Duration,
    /// Upper bound of `wait` (seconds).
    pub max_wait: Duration,
    /// SSE heartbeat.
    pub heartbeat: Duration,
    /// Long-polls and live tails held at once on this node.
    pub max_waiters: usize,
    /// Serve the web console at `/`.
    pub console: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit: 64 << 20,
            max_event_bytes: 16 << 20,
            request_timeout: Duration::from_secs(60),
            max_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            max_waiters: 10_000,
            console: true,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<metrics::Metrics>,
    /// Tokens; `None`: the API is open.
    pub auth: Option<Arc<auth::Auth>>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AppState {
    /// A state with its own metrics (the engine's work is not observed:
    /// build the engine with [`AppState::engine_with_metrics`] for that).
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Self {
        AppState::with_metrics(engine, config, Arc::new(metrics::Metrics::new()))
    }

    pub fn with_metrics(engine: Arc<Engine>, config: ServerConfig, metrics: Arc<metrics::Metrics>) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        AppState { engine, config: Arc::new(config), metrics, auth: None, shutdown: Arc::new(shutdown) }
    }

    /// Requires tokens from `auth` on every route but the open ones.
    pub fn with_auth(mut self, auth: Arc<auth::Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// An engine that reports commits, conflicts, object-store requests and
    /// cache look-ups to `metrics`.
    pub fn engine_with_metrics(store: Arc<dyn object_store::ObjectStore>, config: cairn_engine::EngineConfig, metrics: &Arc<metrics::Metrics>) -> Arc<Engine> {
        Engine::with_parts(store, config, Arc::new(cairn_engine::SystemClock), metrics.clone())
    }

    /// Ends live tails and long-polls (they answer what they have), so a
    /// graceful shutdown does not wait on them.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits on the store like `Engine::wait_for`, but gives up (false) at
    /// shutdown.
    pub(crate) async fn wait_for(&self, store: &str, seq: u64, timeout: Duration) -> Result<bool, cairn_engine::ReadError> {
        let mut rx = self.shutdown.subscribe();
        if *rx.borrow() {
            return Ok(false);
        }
        tokio::select! {
            r = self.engine.wait_for(store, seq, timeout) => r,
            _ = rx.wait_for(|down| *down) => Ok(false),
        }
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Limits of the accept loop ([`serve`]), and TLS if it is on.
#[derive(Clone)]
pub struct ConnLimits {
    /// A client must finish the TLS handshake, then send a request's
    /// headers, each within this (slowloris).
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// Serve TLS with this certificate (`None`: plain HTTP).
    pub tls: Option<Arc<tls::Tls>>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { header_read_timeout: Duration::from_secs(10), max_connections: 10_000, tls: None }
    }
}

/// Bytes a request head may take: request line and headers (431 past it).
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open connections to finish their requests
/// (idle ones are closed). Like `axum::serve`, plus a header read timeout
/// and a bound on open connections.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, limits: ConnLimits, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request head (request line and headers) over MAX_HEAD_BYTES gets
    // 431 from hyper, and the connection is closed.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    // The same bound on an HTTP/2 header list, and at most 256 requests at
    // once on one connection.
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD_BYTES as u32).max_concurrent_streams(256);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        match &limits.tls {
            None => {
                let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's task, bounded like
                // the headers, so a slow one holds up nobody else.
                let (acceptor, watcher, builder, timeout) = (tls.acceptor(), graceful.watcher(), builder.clone(), limits.header_read_timeout);
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).into_owned()).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The whole API: `/v1/...`, `/healthz`, `/readyz`, `/metrics`, and the
/// web console at `/` (unless `ServerConfig::console` is off).
pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    let console = if state.config.console { console::routes() } else { Router::new() };
    Router::new()
        .merge(console)
        .nest("/v1", routes::v1(limit))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method") })
        .layer(middleware::from_fn_with_state(state.clone(), auth::check))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(limit_uri))
        .with_state(state)
}

/// Bytes a request's path and query may take together (414 past it). No
/// route needs more than a few hundred: names are short, queries few.
pub const MAX_URI_BYTES: usize = 8 << 10;

async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", format!("the path and query are {len} bytes, over the limit of {MAX_URI_BYTES}")).into_response();
    }
    next.run(req).await
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.engine.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "storage not reachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "object storage is not reachable").into_response()
        }
    }
}

/// Request span, metrics and the request timeout, for every route.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().clone();
    let span = tracing::info_span!("request", %method, route = %route);
    let start = std::time::Instant::now();
    let fut = next.run(req);
    let resp = match tokio::time::timeout(s.config.request_timeout, tracing::Instrument::instrument(fut, span)).await {
        Ok(r) => r,
        Err(_) if method == Method::POST => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "commit_outcome_unknown",
            "the request timed out; it may or may not have been committed; retrying with the same event ids is safe",
        )
        .into_response(),
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request timed out").into_response(),
    };
    s.metrics.request(&route, method.as_str(), resp.status().as_u16(), start.elapsed());
    resp
}
