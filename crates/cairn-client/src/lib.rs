//! An async client for Cairn's v1 HTTP API, and a [`projection`] runner.
//!
//! ```no_run
//! use cairn_client::{Client, EventData, Expected};
//! use futures::TryStreamExt;
//!
//! # async fn demo() -> cairn_client::Result<()> {
//! let client = Client::new("http://127.0.0.1:7070")?;
//! let shop = client.store("shop");
//! shop.create().await?;
//! let placed = EventData::json("OrderPlaced", &serde_json::json!({"total": 12}))?;
//! let at = shop.append("order-1", vec![placed], Expected::NoStream).await?;
//! println!("order-1 is at revision {}, seq {}", at.last_revision, at.last_seq);
//!
//! // Lazily, in constant memory, however large the store.
//! let mut events = shop.read(0);
//! while let Some(e) = events.try_next().await? {
//!     println!("{} {} {}", e.seq, e.stream, e.event_type);
//! }
//! # Ok(()) }
//! ```
//!
//! Every [`EventData`] carries an id from the moment it is made, so the
//! client retries appends that failed in a way that is safe to retry
//! ([`ErrorKind::is_retry_safe`]): the node stores a retried batch once.
//! Reads resume from the last event they returned when a connection drops.

pub mod error;
mod event;
pub mod projection;
mod read;
mod subscribe;

use std::time::Duration;

use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

pub use error::{Error, ErrorKind, Result, StreamConflict};
pub use event::{Condition, EventData, Expected, Query, RecordedEvent};
pub use read::{Direction, Events, StreamRead};
pub use subscribe::{Message, Subscription};

/// A Cairn node (or a load balancer in front of many).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
}

/// Settings of a [`Client`].
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// A bearer token sent with every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// How many times a request that failed in a retry-safe way is sent
    /// again (default 6, about 10 s in all with the default back-off).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The first wait between retries; it doubles up to 5 s, with jitter.
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// Time for one request to be answered (default 60 s); reads that stream
    /// are bounded by their own silence, not their length.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    pub fn build(self) -> Result<Client> {
        let base = Url::parse(&self.base).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("node URL {:?}: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::new(ErrorKind::InvalidInput, format!("node URL {:?} must be http:// or https://", self.base)));
        }
        install_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            // Long-polls wait at most 30 s; silence past this is a dead peer.
            .read_timeout(Duration::from_secs(75))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, token: self.token, retries: self.retries, backoff: self.backoff, timeout: self.timeout })
    }
}

/// rustls needs a process-wide crypto provider before the first client.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A store's tiering settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Tiering {
    pub seal_before: Option<u64>,
    pub seal_after_ms: Option<u64>,
}

/// A store's retention, as the node answers it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Retention {
    pub truncate_before: Option<u64>,
    pub max_age_ms: Option<u64>,
    /// The lowest seq still readable.
    pub first_seq: u64,
    pub next_seq: u64,
}

/// A store as the node describes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct StoreInfo {
    pub name: String,
    pub incarnation: String,
    /// The seq the next event will get: the number of events in the store.
    pub next_seq: u64,
    pub version: u64,
    pub idempotency_window: u64,
    #[serde(default)]
    pub segments: u64,
    #[serde(default)]
    pub index_objects: u64,
    #[serde(default)]
    pub last_ts: i64,
    /// Bytes of the store's segments and index objects.
    #[serde(default)]
    pub bytes: u64,
    /// The lowest seq still readable: retention truncated what is before.
    #[serde(default)]
    pub first_seq: u64,
    /// Archives the store's sealed history is in.
    #[serde(default)]
    pub archives: u64,
}

/// The answer to a one-stream append.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_revision: u64,
    pub last_revision: u64,
    /// The batch had been appended before (a retry): nothing was added.
    #[serde(default)]
    pub deduplicated: bool,
}

/// Where one stream's events of a many-stream append went.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct StreamRange {
    pub stream: String,
    pub first_revision: u64,
    pub last_revision: u64,
}

/// The answer to a many-stream append.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AppendedMany {
    pub first_seq: u64,
    pub last_seq: u64,
    pub streams: Vec<StreamRange>,
    #[serde(default)]
    pub deduplicated: bool,
}

/// A doc and the ETag to update it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    pub body: bytes::Bytes,
    pub etag: String,
    pub content_type: Option<String>,
}

/// The condition of a doc write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// Only if the doc does not exist.
    Absent,
    /// Only if the doc is at this ETag.
    Matches(String),
}

#[derive(Deserialize)]
struct StoreList {
    stores: Vec<StoreName>,
}

#[derive(Deserialize)]
struct StoreName {
    name: String,
}

#[derive(Deserialize)]
struct StreamHead {
    revision: Option<u64>,
}

#[derive(Serialize)]
struct AppendBody<'a, X: Serialize> {
    events: &'a [EventData],
    expected: X,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<&'a Condition>,
}

impl Client {
    /// A client of the node at `base` (`http://host:port`) with the default
    /// settings.
    pub fn new(base: &str) -> Result<Client> {
        Client::builder(base).build()
    }

    pub fn builder(base: &str) -> ClientBuilder {
        ClientBuilder {
            base: base.to_string(),
            token: None,
            retries: 6,
            backoff: Duration::from_millis(100),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// A handle on one store (nothing is sent until it is used).
    pub fn store(&self, name: &str) -> Store {
        Store { client: self.clone(), name: name.to_string() }
    }

    pub async fn list_stores(&self) -> Result<Vec<String>> {
        let resp = self.send(|| self.request(Method::GET, &["stores"])).await?.0;
        let list: StoreList = json(resp).await?;
        Ok(list.stores.into_iter().map(|s| s.name).collect())
    }

    /// Whether the node is alive (`/healthz`), or also reaches its storage
    /// (`/readyz`, when `ready`). One attempt, no retries.
    pub async fn health(&self, ready: bool) -> Result<()> {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().push(if ready { "readyz" } else { "healthz" });
        }
        match self.http.get(url).timeout(self.timeout).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(Error::from_response(r).await),
            Err(e) => Err(Error::transport(e, false)),
        }
    }

    /// `{base}/v1/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_url(method, self.url(segments))
    }

    fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// The wait before retry `attempt` (from 0): exponential with full
    /// jitter, or what the node asked for.
    fn pause(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        if let Some(d) = asked {
            return d;
        }
        let cap = self.backoff.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(5));
        cap.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    /// Sends a request, retrying failures that are safe to retry. Returns
    /// the 2xx answer and whether an earlier attempt may have taken effect.
    async fn send(&self, make: impl Fn() -> RequestBuilder) -> Result<(Response, bool)> {
        let (r, ambiguous) = self.try_send(make).await;
        r.map(|r| (r, ambiguous))
    }

    /// Like `send`, and says whether an attempt may have taken effect even
    /// when the last one failed (a retried delete that finds nothing).
    async fn try_send(&self, make: impl Fn() -> RequestBuilder) -> (Result<Response>, bool) {
        self.try_send_timed(|| make().timeout(self.timeout)).await
    }

    /// `try_send` without the request timeout (a streamed read can be long;
    /// the client's read timeout catches a silent peer).
    async fn try_send_timed(&self, make: impl Fn() -> RequestBuilder) -> (Result<Response>, bool) {
        let mut ambiguous = false;
        let mut attempt = 0;
        loop {
            let err = match make().send().await {
                Ok(r) if r.status().is_success() => return (Ok(r), ambiguous),
                Ok(r) => Error::from_response(r).await,
                Err(e) => Error::transport(e, true),
            };
            if !err.is_retry_safe() || attempt >= self.retries {
                return (Err(err), ambiguous);
            }
            ambiguous |= err.kind() == ErrorKind::OutcomeUnknown;
            tracing::debug!(error = %err, attempt, "retrying");
            tokio::time::sleep(self.pause(attempt, err.retry_after())).await;
            attempt += 1;
        }
    }
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T> {
    let body = resp.bytes().await.map_err(|e| Error::transport(e, true))?;
    serde_json::from_slice(&body).map_err(|e| Error::protocol(format!("unexpected answer from the node: {e}")))
}

/// One store of a node.
#[derive(Clone)]
pub struct Store {
    client: Client,
    name: String,
}

impl Store {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the store; `true` if it was new, `false` if it existed.
    pub async fn create(&self) -> Result<bool> {
        let (resp, _) = self.client.send(|| self.client.request(Method::PUT, &["stores", &self.name])).await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    pub async fn info(&self) -> Result<StoreInfo> {
        let (resp, _) = self.client.send(|| self.client.request(Method::GET, &["stores", &self.name])).await?;
        json(resp).await
    }

    /// The store's retention settings and where its events now start.
    pub async fn retention(&self) -> Result<Retention> {
        let (resp, _) = self.client.send(|| self.client.request(Method::GET, &["stores", &self.name, "retention"])).await?;
        json(resp).await
    }

    /// Sets the store's retention: events before `truncate_before` are
    /// truncated at once (reads before it answer [`ErrorKind::Truncated`]),
    /// and whole objects older than `max_age_ms` are dropped as they age.
    /// Setting the same again is safe.
    pub async fn set_retention(&self, truncate_before: Option<u64>, max_age_ms: Option<u64>) -> Result<Retention> {
        let body = serde_json::json!({ "truncate_before": truncate_before, "max_age_ms": max_age_ms });
        let (resp, _) = self.client.send(|| self.client.request(Method::PUT, &["stores", &self.name, "retention"]).json(&body)).await?;
        json(resp).await
    }

    /// The store's tiering: what history is sealed into archives.
    pub async fn tiering(&self) -> Result<Tiering> {
        let (resp, _) = self.client.send(|| self.client.request(Method::GET, &["stores", &self.name, "tiering"])).await?;
        json(resp).await
    }

    /// Sets the store's tiering: history before `seal_before`, or older
    /// than `seal_after_ms`, is sealed into archives in the background.
    /// Reads answer the same either way.
    pub async fn set_tiering(&self, t: &Tiering) -> Result<Tiering> {
        let (resp, _) = self.client.send(|| self.client.request(Method::PUT, &["stores", &self.name, "tiering"]).json(t)).await?;
        json(resp).await
    }

    /// Deletes the store and everything in it.
    pub async fn delete(&self) -> Result<()> {
        match self.client.try_send(|| self.client.request(Method::DELETE, &["stores", &self.name])).await {
            (Ok(_), _) => Ok(()),
            // An earlier attempt that timed out did it.
            (Err(e), true) if e.kind() == ErrorKind::NotFound => Ok(()),
            (Err(e), _) => Err(e),
        }
    }

    /// Appends `events` to `stream` atomically, if the stream is as
    /// `expected`. Retries are safe: the events carry ids.
    pub async fn append(&self, stream: &str, events: Vec<EventData>, expected: Expected) -> Result<Appended> {
        self.append_to(stream, events, expected, None).await
    }

    /// [`Store::append`], if also `condition` holds: no event matching it
    /// came after its seq, else an error of kind `Conflict` with code
    /// `condition_failed` and nothing appended. A retry of an append that
    /// did commit returns its first answer, though its events match.
    pub async fn append_if(&self, stream: &str, events: Vec<EventData>, expected: Expected, condition: &Condition) -> Result<Appended> {
        self.append_to(stream, events, expected, Some(condition)).await
    }

    async fn append_to(&self, stream: &str, mut events: Vec<EventData>, expected: Expected, condition: Option<&Condition>) -> Result<Appended> {
        if events.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "an append needs at least one event"));
        }
        for e in &mut events {
            match e.stream_name() {
                Some(s) if s != stream => return Err(Error::new(ErrorKind::InvalidInput, format!("an event names stream {s:?}, not {stream:?}"))),
                _ => e.set_stream(stream),
            }
        }
        let body = serde_json::to_vec(&AppendBody { events: &events, expected: expected.json(), condition }).map_err(|e| Error::protocol(e.to_string()))?;
        let (resp, _) = self
            .client
            .send(|| self.client.request(Method::POST, &["stores", &self.name, "streams", stream, "events"]).header(header::CONTENT_TYPE, "application/json").body(body.clone()))
            .await?;
        json(resp).await
    }

    /// Appends events of many streams atomically (each names its stream
    /// with [`EventData::stream`]), if every stream in `expected` is as
    /// given.
    pub async fn append_many(&self, events: Vec<EventData>, expected: impl IntoIterator<Item = (String, Expected)>) -> Result<AppendedMany> {
        self.append_many_to(events, expected, None).await
    }

    /// [`Store::append_many`], if also `condition` holds (as for
    /// [`Store::append_if`]).
    pub async fn append_many_if(&self, events: Vec<EventData>, expected: impl IntoIterator<Item = (String, Expected)>, condition: &Condition) -> Result<AppendedMany> {
        self.append_many_to(events, expected, Some(condition)).await
    }

    async fn append_many_to(&self, events: Vec<EventData>, expected: impl IntoIterator<Item = (String, Expected)>, condition: Option<&Condition>) -> Result<AppendedMany> {
        if events.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "an append needs at least one event"));
        }
        if let Some(i) = events.iter().position(|e| e.stream_name().is_none()) {
            return Err(Error::new(ErrorKind::InvalidInput, format!("event {i} names no stream")));
        }
        let expected: serde_json::Map<String, serde_json::Value> = expected.into_iter().map(|(s, x)| (s, x.json())).collect();
        let body = serde_json::to_vec(&AppendBody { events: &events, expected, condition }).map_err(|e| Error::protocol(e.to_string()))?;
        let (resp, _) = self
            .client
            .send(|| self.client.request(Method::POST, &["stores", &self.name, "events"]).header(header::CONTENT_TYPE, "application/json").body(body.clone()))
            .await?;
        json(resp).await
    }

    /// The revision of a stream's last event (`None`: no events).
    pub async fn stream_head(&self, stream: &str) -> Result<Option<u64>> {
        let (resp, _) = self.client.send(|| self.client.request(Method::GET, &["stores", &self.name, "streams", stream])).await?;
        Ok(json::<StreamHead>(resp).await?.revision)
    }

    /// The store from seq `from`, lazily: events are parsed as they arrive,
    /// so memory stays constant however many there are; a dropped
    /// connection is resumed after the last event returned.
    pub fn read(&self, from: u64) -> Events {
        Events::store(self.clone(), from, None, None)
    }

    /// Like [`Store::read`], with at most `limit` events and only those
    /// with tag `key:value` when `tag` is given.
    pub fn read_with(&self, from: u64, limit: Option<u64>, tag: Option<(&str, &str)>) -> Events {
        Events::store(self.clone(), from, limit, tag.map(|(k, v)| format!("{k}:{v}")))
    }

    /// One stream: `StreamRead::forward()` or `backward()`, then `from`,
    /// `limit` and `tag`.
    pub fn read_stream(&self, stream: &str, how: StreamRead) -> Events {
        Events::stream(self.clone(), stream.to_string(), how)
    }

    /// The store from `from` to its end, then live: new events as they are
    /// committed (long-poll), resuming by itself after failures.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription::store(self.clone(), from)
    }

    /// One stream from revision `from`, then live.
    pub fn subscribe_stream(&self, stream: &str, from: u64) -> Subscription {
        Subscription::stream(self.clone(), stream.to_string(), from)
    }

    /// A doc, or `None` when there is none.
    pub async fn get_doc(&self, key: &str) -> Result<Option<Doc>> {
        match self.client.send(|| self.client.request(Method::GET, &["stores", &self.name, "docs", key])).await {
            Ok((resp, _)) => {
                let h = resp.headers();
                let etag = h.get(header::ETAG).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_string());
                let content_type = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                let etag = etag.ok_or_else(|| Error::protocol("a doc without an ETag"))?;
                let body = resp.bytes().await.map_err(|e| Error::transport(e, true))?;
                Ok(Some(Doc { body, etag, content_type }))
            }
            Err(e) if e.code() == Some("doc_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a doc if `pre` holds; returns its new ETag. A write whose
    /// outcome was unknown and whose retry found the precondition failing
    /// is read back: if the doc holds exactly these bytes, it was ours.
    pub async fn put_doc(&self, key: &str, body: impl Into<bytes::Bytes>, content_type: &str, pre: Precondition) -> Result<String> {
        let body = body.into();
        let make = || {
            let rb = self.client.request(Method::PUT, &["stores", &self.name, "docs", key]).header(header::CONTENT_TYPE, content_type).body(body.clone());
            match &pre {
                Precondition::None => rb,
                Precondition::Absent => rb.header(header::IF_NONE_MATCH, "*"),
                Precondition::Matches(etag) => rb.header(header::IF_MATCH, format!("\"{etag}\"")),
            }
        };
        match self.client.try_send(make).await {
            (Ok(resp), _) => {
                let etag = resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_string());
                etag.ok_or_else(|| Error::protocol("a doc write without an ETag"))
            }
            (Err(e), true) if e.kind() == ErrorKind::PreconditionFailed => match self.get_doc(key).await? {
                Some(d) if d.body == body => Ok(d.etag),
                _ => Err(e),
            },
            (Err(e), _) => Err(e),
        }
    }

    /// Deletes a doc (only at `etag` when given); `false` if there was none.
    pub async fn delete_doc(&self, key: &str, etag: Option<&str>) -> Result<bool> {
        let make = || {
            let rb = self.client.request(Method::DELETE, &["stores", &self.name, "docs", key]);
            match etag {
                Some(t) => rb.header(header::IF_MATCH, format!("\"{t}\"")),
                None => rb,
            }
        };
        match self.client.try_send(make).await {
            (Ok(_), _) => Ok(true),
            // Gone after an attempt that may have landed: that attempt did it.
            (Err(e), true) if e.code() == Some("doc_not_found") => Ok(true),
            (Err(e), _) if e.code() == Some("doc_not_found") => Ok(false),
            (Err(e), _) => Err(e),
        }
    }
}
