//! The v1 routes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cairn_engine::reader::ReadOptions;
use cairn_engine::{AppendBatch, CreateStore, Direction, Expectation, ReadEvent};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
// Answers are built from the OpenAPI schemas themselves, so the document
// cannot drift from what is sent.
use crate::openapi as api;
use crate::wire::{parse_append, parse_expectation, parse_expectation_str, write_event};
use crate::AppState;

pub fn v1(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/stores", get(list_stores))
        .route("/stores/{store}", put(create_store).get(store_info).delete(delete_store))
        .route("/stores/{store}/events", post(append_many).get(read_store))
        .route("/stores/{store}/streams/{stream}/events", post(append_one).get(read_stream))
        .route("/stores/{store}/streams/{stream}", get(stream_head))
        .route("/stores/{store}/docs/{key}", put(put_doc).get(get_doc).delete(delete_doc))
        .route("/stores/{store}/retention", put(put_retention).get(get_retention))
        .route("/stores/{store}/tiering", put(put_tiering).get(get_tiering))
        .route("/openapi.json", get(crate::openapi::serve))
        .layer(DefaultBodyLimit::max(body_limit))
}

type ApiResult<T> = Result<T, ApiError>;

fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v).map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
}

fn body(b: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    b.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is over the limit"),
        _ => ApiError::bad_request("invalid_body", e.body_text()),
    })
}

#[utoipa::path(get, path = "/stores", responses((status = 503, description = "storage unavailable", body = crate::openapi::ErrorBody), (status = 200, description = "the stores", body = crate::openapi::StoreList)))]
pub(crate) async fn list_stores(State(s): State<AppState>, caller: Option<axum::Extension<crate::auth::Caller>>) -> ApiResult<Json<api::StoreList>> {
    let mut names = s.engine.list_stores().await?;
    // With tokens, only the stores this one may read.
    if let Some(axum::Extension(c)) = caller {
        names.retain(|n| c.token().allows(n, crate::auth::Right::Read));
    }
    Ok(Json(api::StoreList { stores: names.into_iter().map(|name| api::StoreName { name }).collect() }))
}

#[utoipa::path(put, path = "/stores/{store}", params(("store" = String, Path, description = "^[a-z0-9][a-z0-9-]{0,62}$")), responses((status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 201, description = "created", body = crate::openapi::StoreInfo), (status = 200, description = "existed", body = crate::openapi::StoreInfo), (status = 400, description = "bad input", body = crate::openapi::ErrorBody), (status = 503, description = "storage unavailable; nothing written", body = crate::openapi::ErrorBody)))]
pub(crate) async fn create_store(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    let name = path(p)?;
    let status = match s.engine.create_store(&name).await? {
        CreateStore::Created => StatusCode::CREATED,
        CreateStore::Existed => StatusCode::OK,
    };
    let info = s.engine.store_info(&name).await?;
    Ok((status, Json(info_json(info))).into_response())
}

fn info_json(i: cairn_engine::StoreInfo) -> api::StoreInfo {
    api::StoreInfo {
        name: i.name,
        incarnation: i.incarnation,
        next_seq: i.next_seq,
        version: i.version,
        idempotency_window: i.idempotency_window,
        segments: i.segments as u64,
        index_objects: i.index_objects as u64,
        last_ts: i.last_ts,
        bytes: i.bytes,
        first_seq: i.first_seq,
        archives: i.archives as u64,
    }
}

fn tiering_json(t: cairn_engine::Tiering) -> api::TieringBody {
    api::TieringBody { seal_before: t.seal_before, seal_after_ms: t.seal_after_ms }
}

#[utoipa::path(get, path = "/stores/{store}/tiering", params(("store" = String, Path)), responses((status = 503, description = "storage unavailable", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name", body = crate::openapi::ErrorBody), (status = 200, description = "the store's tiering", body = crate::openapi::TieringBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_tiering(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<Json<api::TieringBody>> {
    let name = path(p)?;
    check_store(&name)?;
    Ok(Json(tiering_json(s.engine.tiering(&name).await?)))
}

#[utoipa::path(put, path = "/stores/{store}/tiering", params(("store" = String, Path)), request_body = crate::openapi::TieringBody, responses((status = 503, description = "storage unavailable or commit outcome unknown; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "invalid_tiering", body = crate::openapi::ErrorBody), (status = 200, description = "set; history is sealed into archives in the background", body = crate::openapi::TieringBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put_tiering(State(s): State<AppState>, p: Result<Path<String>, PathRejection>, b: Result<Bytes, BytesRejection>) -> ApiResult<Json<api::TieringBody>> {
    let name = path(p)?;
    check_store(&name)?;
    let b = body(b)?;
    let t = crate::wire::parse_tiering(&b).map_err(|m| ApiError::bad_request("invalid_tiering", m))?;
    let t = s.engine.set_tiering(&name, t).await.map_err(|e| match e {
        cairn_engine::RetentionError::Invalid(m) => ApiError::bad_request("invalid_tiering", m),
        other => ApiError::from(other),
    })?;
    Ok(Json(tiering_json(t)))
}

fn retention_json(r: cairn_engine::RetentionInfo) -> api::RetentionAnswer {
    api::RetentionAnswer { truncate_before: r.retention.truncate_before, max_age_ms: r.retention.max_age_ms, first_seq: r.first_seq, next_seq: r.next_seq }
}

#[utoipa::path(get, path = "/stores/{store}/retention", params(("store" = String, Path)), responses((status = 503, description = "storage unavailable", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name", body = crate::openapi::ErrorBody), (status = 200, description = "the store's retention and first seq", body = crate::openapi::RetentionAnswer), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_retention(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<Json<api::RetentionAnswer>> {
    let name = path(p)?;
    check_store(&name)?;
    Ok(Json(retention_json(s.engine.retention(&name).await?)))
}

#[utoipa::path(put, path = "/stores/{store}/retention", params(("store" = String, Path)), request_body = crate::openapi::RetentionBody, responses((status = 503, description = "storage unavailable or commit outcome unknown; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "invalid_retention", body = crate::openapi::ErrorBody), (status = 200, description = "set; objects before the first seq are dropped in the background", body = crate::openapi::RetentionAnswer), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put_retention(State(s): State<AppState>, p: Result<Path<String>, PathRejection>, b: Result<Bytes, BytesRejection>) -> ApiResult<Json<api::RetentionAnswer>> {
    let name = path(p)?;
    check_store(&name)?;
    let b = body(b)?;
    let r = crate::wire::parse_retention(&b).map_err(|m| ApiError::bad_request("invalid_retention", m))?;
    Ok(Json(retention_json(s.engine.set_retention(&name, r).await?)))
}

#[utoipa::path(get, path = "/stores/{store}", params(("store" = String, Path)), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 200, description = "store info", body = crate::openapi::StoreInfo), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn store_info(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<Json<api::StoreInfo>> {
    let name = path(p)?;
    Ok(Json(info_json(s.engine.store_info(&name).await?)))
}

#[utoipa::path(delete, path = "/stores/{store}", params(("store" = String, Path)), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 204, description = "deleted"), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn delete_store(State(s): State<AppState>, p: Result<Path<String>, PathRejection>) -> ApiResult<StatusCode> {
    let name = path(p)?;
    s.engine.delete_store(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn is_ndjson(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-ndjson"))
}

fn check_store(name: &str) -> ApiResult<()> {
    if cairn_engine::valid_store_name(name) {
        Ok(())
    } else {
        Err(ApiError::from(cairn_engine::StoreError::InvalidName(name.into())))
    }
}

fn check_stream(name: &str) -> ApiResult<()> {
    if cairn_engine::valid_stream_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_stream_name", format!("invalid stream name {name:?}: 1-256 bytes of UTF-8, no control characters")))
    }
}

#[utoipa::path(post, path = "/stores/{store}/streams/{stream}/events", params(("store" = String, Path), ("stream" = String, Path), ("Expected-Revision" = Option<String>, Header, description = "any | no_stream | stream_exists | N")), request_body(content = crate::openapi::AppendBody, description = "a JSON array of events, this object, or NDJSON (application/x-ndjson)"), responses((status = 410, description = "truncated: the read or the condition reaches before the store's first seq (retention); the error has `first_seq`, and for a stream read `first_revision`", body = crate::openapi::ErrorBody), (status = 200, description = "appended atomically", body = crate::openapi::AppendedOne), (status = 409, description = "wrong_expected_revision, condition_failed or idempotency_conflict", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 413, description = "body_too_large, event_too_large (an event's data over --max-event-bytes) or line_too_large (NDJSON)", body = crate::openapi::ErrorBody), (status = 400, description = "bad input", body = crate::openapi::ErrorBody), (status = 503, description = "storage unavailable; nothing written", body = crate::openapi::ErrorBody)))]
pub(crate) async fn append_one(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<api::AppendedOne>> {
    let (store, stream) = path(p)?;
    check_store(&store)?;
    check_stream(&stream)?;
    let raw = body(b)?;
    let parsed = parse_append(&raw, is_ndjson(&headers), s.config.max_event_bytes)?;
    let header = match headers.get("expected-revision") {
        None => None,
        Some(v) => Some(parse_expectation_str(v.to_str().map_err(|_| ApiError::bad_request("invalid_expected_revision", "Expected-Revision is not ASCII"))?.trim())?),
    };
    let body_exp = parsed.expected.as_ref().map(parse_expectation).transpose()?;
    let expected = match (header, body_exp) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::bad_request("invalid_expected_revision", "the Expected-Revision header and the body's expected disagree"))
        }
        (h, b) => h.or(b).unwrap_or(Expectation::Any),
    };
    let mut events = parsed.events;
    for (i, e) in events.iter_mut().enumerate() {
        if !e.stream.is_empty() && e.stream != stream {
            return Err(ApiError::bad_request("invalid_event", format!("event {i} names stream {:?}, not the stream of the path", e.stream)));
        }
        e.stream = stream.clone();
    }
    let batch = AppendBatch { events, expected: vec![(stream.clone(), expected)], condition: parsed.condition };
    let n = batch.events.len();
    let bytes: usize = batch.events.iter().map(|e| e.data.len()).sum();
    let o = s.engine.append(&store, batch).await?;
    s.metrics.appended(n, bytes, o.deduplicated);
    let r = &o.streams[0];
    Ok(Json(api::AppendedOne {
        first_seq: o.first_seq,
        last_seq: o.last_seq,
        first_revision: r.first_revision,
        last_revision: r.last_revision,
        deduplicated: o.deduplicated,
    }))
}

#[utoipa::path(post, path = "/stores/{store}/events", params(("store" = String, Path)), request_body(content = crate::openapi::AppendBody, description = "events that each name their stream; expected is a map"), responses((status = 410, description = "truncated: the read or the condition reaches before the store's first seq (retention); the error has `first_seq`, and for a stream read `first_revision`", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 200, description = "appended atomically", body = crate::openapi::AppendedMany), (status = 409, description = "wrong_expected_revision (lists each failing stream), condition_failed or idempotency_conflict", body = crate::openapi::ErrorBody), (status = 400, description = "bad input", body = crate::openapi::ErrorBody), (status = 413, description = "body_too_large, event_too_large or line_too_large", body = crate::openapi::ErrorBody), (status = 503, description = "storage unavailable; nothing written", body = crate::openapi::ErrorBody)))]
pub(crate) async fn append_many(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<api::AppendedMany>> {
    let store = path(p)?;
    check_store(&store)?;
    let raw = body(b)?;
    if headers.contains_key("expected-revision") {
        return Err(ApiError::bad_request("invalid_expected_revision", "on this route expectations go in the body: {\"expected\": {\"stream\": ...}}"));
    }
    let parsed = parse_append(&raw, is_ndjson(&headers), s.config.max_event_bytes)?;
    for (i, e) in parsed.events.iter().enumerate() {
        if e.stream.is_empty() {
            return Err(ApiError::bad_request("invalid_event", format!("event {i} has no stream (this route needs one per event)")));
        }
    }
    let mut expected = Vec::new();
    match parsed.expected {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                check_stream(&k)?;
                expected.push((k, parse_expectation(&v)?));
            }
        }
        Some(_) => return Err(ApiError::bad_request("invalid_expected_revision", "expected must be an object from stream to expectation")),
    }
    let batch = AppendBatch { events: parsed.events, expected, condition: parsed.condition };
    let n = batch.events.len();
    let bytes: usize = batch.events.iter().map(|e| e.data.len()).sum();
    let o = s.engine.append(&store, batch).await?;
    s.metrics.appended(n, bytes, o.deduplicated);
    let streams = o.streams.into_iter().map(|r| api::StreamRange { stream: r.stream, first_revision: r.first_revision, last_revision: r.last_revision }).collect();
    Ok(Json(api::AppendedMany { first_seq: o.first_seq, last_seq: o.last_seq, streams, deduplicated: o.deduplicated }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    from: Option<String>,
    limit: Option<String>,
    direction: Option<String>,
    wait: Option<String>,
    tag: Option<String>,
}

/// Parsed and checked read parameters.
struct Read {
    from: Option<u64>,
    limit: Option<usize>,
    backward: bool,
    wait: Duration,
    tag: Option<(String, String)>,
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Json,
    Sse,
}

/// Most events a JSON (not streamed) answer holds.
const JSON_MAX: usize = 100_000;
const JSON_DEFAULT: usize = 1000;

fn num(name: &str, v: &Option<String>) -> ApiResult<Option<u64>> {
    v.as_deref()
        .map(|s| s.parse::<u64>().map_err(|_| ApiError::bad_request("invalid_query", format!("{name}={s:?} is not a non-negative integer"))))
        .transpose()
}

fn read_params(q: Result<Query<ReadParams>, QueryRejection>, headers: &HeaderMap, max_wait: Duration) -> ApiResult<Read> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = if accept.contains("text/event-stream") {
        Format::Sse
    } else if accept.contains("application/json") && !accept.contains("ndjson") {
        Format::Json
    } else {
        Format::Ndjson
    };
    let backward = match q.direction.as_deref() {
        None | Some("forward") => false,
        Some("backward") => true,
        Some(d) => return Err(ApiError::bad_request("invalid_query", format!("direction={d:?} must be forward or backward"))),
    };
    let wait = num("wait", &q.wait)?.unwrap_or(0);
    if Duration::from_secs(wait) > max_wait {
        return Err(ApiError::bad_request("invalid_query", format!("wait={wait} is over the most, {} seconds", max_wait.as_secs())));
    }
    let mut limit = num("limit", &q.limit)?.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    if limit == Some(0) {
        return Err(ApiError::bad_request("invalid_query", "limit must be at least 1"));
    }
    if format == Format::Json {
        if limit.is_some_and(|l| l > JSON_MAX) {
            return Err(ApiError::bad_request("invalid_query", format!("limit is at most {JSON_MAX} with Accept: application/json; stream NDJSON for more")));
        }
        limit = Some(limit.unwrap_or(JSON_DEFAULT));
    }
    let tag = match q.tag.as_deref() {
        None => None,
        Some(t) => match t.split_once(':') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => return Err(ApiError::bad_request("invalid_query", format!("tag={t:?} must be KEY:VALUE"))),
        },
    };
    let mut from = num("from", &q.from)?;
    if format == Format::Sse {
        if let Some(id) = headers.get("last-event-id") {
            let id = id.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
            let id = id.and_then(|i| i.checked_add(1)).ok_or_else(|| ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be a seq"))?;
            from = Some(id);
        }
    }
    Ok(Read { from, limit, backward, wait: Duration::from_secs(wait), tag, format })
}

fn ndjson_response<S>(body: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}


/// A scan that can be streamed: the store's or a stream's.
trait Scan: Send + 'static {
    /// Hands the next events to `f`; `None` at the end.
    fn chunk_into(&mut self, f: &mut (dyn FnMut(u64, &cairn_engine::Event) + Send)) -> impl std::future::Future<Output = Result<Option<()>, cairn_engine::ReadError>> + Send;
    fn next_json(&self) -> Value;
}

impl Scan for cairn_engine::StoreScan {
    // Serialised straight from the decoded blocks: no copy of the events.
    async fn chunk_into(&mut self, f: &mut (dyn FnMut(u64, &cairn_engine::Event) + Send)) -> Result<Option<()>, cairn_engine::ReadError> {
        Ok(self.next_view().await?.map(|c| c.iter().for_each(|(seq, e)| f(seq, e))))
    }
    fn next_json(&self) -> Value {
        Value::from(self.next())
    }
}

impl Scan for cairn_engine::StreamScan {
    async fn chunk_into(&mut self, f: &mut (dyn FnMut(u64, &cairn_engine::Event) + Send)) -> Result<Option<()>, cairn_engine::ReadError> {
        Ok(self.next_chunk().await?.map(|c| c.iter().for_each(|r| f(r.seq, &r.event))))
    }
    fn next_json(&self) -> Value {
        json!(self.next())
    }
}

enum Step<S> {
    /// Bytes already read, then the scan.
    Ready(Bytes, Option<S>),
    /// The scan, and the length of the last run of lines it gave.
    Go(S, usize),
    Abort,
    Done,
}

/// The next non-empty run of lines, or the `{"next":N}` line at the end.
/// `hint`: the length of the run before, which this one likely matches
/// (a buffer that size is not grown by doubling and copying).
async fn next_lines<S: Scan>(scan: &mut S, hint: usize) -> Result<(Bytes, bool), cairn_engine::ReadError> {
    loop {
        let mut buf = Vec::with_capacity((hint + hint / 8).min(4 << 20));
        let got = scan
            .chunk_into(&mut |seq, e| {
                write_event(&mut buf, seq, e);
                buf.push(b'\n');
            })
            .await?;
        match got {
            Some(()) if buf.is_empty() => continue,
            Some(()) => return Ok((Bytes::from(buf), false)),
            None => return Ok((Bytes::from(format!("{}\n", json!({ "next": scan.next_json() }))), true)),
        }
    }
}

/// NDJSON: one event a line, then `{"next":N}`. A read that fails before
/// its first line is an ordinary error answer; one that fails midway ends
/// with an `{"error":...}` line and an aborted body. Pulled by the client,
/// so a slow client holds back the reads (back-pressure) and memory stays
/// bounded.
async fn stream_ndjson<S: Scan>(mut scan: S) -> ApiResult<Response> {
    let (first, done) = next_lines(&mut scan, 0).await?;
    let body = futures::stream::unfold(Step::Ready(first, (!done).then_some(scan)), |step| async move {
        match step {
            Step::Ready(bytes, next) => {
                let hint = bytes.len();
                Some((Ok(bytes), next.map_or(Step::Done, |scan| Step::Go(scan, hint))))
            }
            Step::Go(mut scan, hint) => match next_lines(&mut scan, hint).await {
                Ok((bytes, true)) => Some((Ok(bytes), Step::Done)),
                Ok((bytes, false)) => {
                    let hint = bytes.len();
                    Some((Ok(bytes), Step::Go(scan, hint)))
                }
                Err(e) => {
                    let err = ApiError::from(e);
                    Some((Ok(Bytes::from(format!("{}\n", err.body()))), Step::Abort))
                }
            },
            Step::Abort => Some((Err(std::io::Error::other("read failed")), Step::Done)),
            Step::Done => None,
        }
    });
    Ok(ndjson_response(body))
}

async fn json_answer<S: Scan>(mut scan: S) -> ApiResult<Response> {
    let mut buf = Vec::from(&b"{\"events\":["[..]);
    let mut first = true;
    while scan
        .chunk_into(&mut |seq, e| {
            if !first {
                buf.push(b',');
            }
            first = false;
            write_event(&mut buf, seq, e);
        })
        .await?
        .is_some()
    {}
    buf.extend_from_slice(format!("],\"next\":{}}}", scan.next_json()).as_bytes());
    Ok(([(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

/// Counts a long-poll or live tail against `max_waiters`.
struct WaiterSlot(std::sync::Arc<crate::metrics::Metrics>);

impl WaiterSlot {
    fn take(s: &AppState) -> ApiResult<WaiterSlot> {
        if s.metrics.waiters_inc() > s.config.max_waiters as i64 {
            s.metrics.waiters_dec();
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_waiters", "too many long-polls and live tails on this node"));
        }
        Ok(WaiterSlot(s.metrics.clone()))
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.waiters_dec();
    }
}

#[utoipa::path(get, path = "/stores/{store}/events", params(("store" = String, Path), ("from" = Option<u64>, Query, description = "seq"), ("limit" = Option<u64>, Query), ("wait" = Option<u64>, Query, description = "long-poll seconds, at most 30"), ("tag" = Option<String>, Query, description = "KEY:VALUE")), responses((status = 410, description = "truncated: the read or the condition reaches before the store's first seq (retention); the error has `first_seq`, and for a stream read `first_revision`", body = crate::openapi::ErrorBody), (status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 200, description = "NDJSON by default (last line {\"next\":N}); application/json; or text/event-stream (live tail, id = seq, Last-Event-ID)", body = crate::openapi::ReadAnswer), (status = 400, description = "bad query or position_beyond_end", body = crate::openapi::ErrorBody), (status = 429, description = "too_many_waiters", body = crate::openapi::ErrorBody)))]
pub(crate) async fn read_store(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let store = path(p)?;
    check_store(&store)?;
    let r = read_params(q, &headers, s.config.max_wait)?;
    if r.backward {
        return Err(ApiError::bad_request("invalid_query", "the store reads forwards only; direction=backward is for streams"));
    }
    let from = r.from.unwrap_or(0);
    if r.format == Format::Sse {
        // Checks the store and the position before the tail starts.
        drop(s.engine.read_store(&store, from, ReadOptions { limit: Some(1), tag: None }).await?);
        let slot = WaiterSlot::take(&s)?;
        return Ok(sse_store(s, store, from, r.tag, slot).into_response());
    }
    if !r.wait.is_zero() {
        let next = s.engine.newest_next_seq(&store).await?;
        if from == next {
            let _slot = WaiterSlot::take(&s)?;
            s.wait_for(&store, from, r.wait).await?;
        }
    }
    let scan = s.engine.read_store(&store, from, ReadOptions { limit: r.limit, tag: r.tag }).await?;
    match r.format {
        Format::Json => json_answer(scan).await,
        _ => stream_ndjson(scan).await,
    }
}

#[utoipa::path(get, path = "/stores/{store}/streams/{stream}/events", params(("store" = String, Path), ("stream" = String, Path), ("from" = Option<u64>, Query, description = "revision"), ("limit" = Option<u64>, Query), ("direction" = Option<String>, Query, description = "forward | backward"), ("wait" = Option<u64>, Query), ("tag" = Option<String>, Query)), responses((status = 410, description = "truncated: the read or the condition reaches before the store's first seq (retention); the error has `first_seq`, and for a stream read `first_revision`", body = crate::openapi::ErrorBody), (status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 200, description = "NDJSON, JSON or SSE as for the store; an unknown stream gives no events", body = crate::openapi::ReadAnswer), (status = 400, description = "bad query", body = crate::openapi::ErrorBody), (status = 429, description = "too_many_waiters", body = crate::openapi::ErrorBody)))]
pub(crate) async fn read_stream(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<ReadParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (store, stream) = path(p)?;
    check_store(&store)?;
    check_stream(&stream)?;
    let mut r = read_params(q, &headers, s.config.max_wait)?;
    if r.format == Format::Sse {
        if r.backward {
            return Err(ApiError::bad_request("invalid_query", "a live tail reads forwards"));
        }
        // Last-Event-ID is a seq: find the revision of that event.
        if let (Some(seq), Some(_)) = (r.from, headers.get("last-event-id")) {
            let mut at = s.engine.read_store(&store, seq - 1, ReadOptions { limit: Some(1), tag: None }).await?;
            r.from = match at.next_chunk().await?.and_then(|c| c.into_iter().next()) {
                Some(e) if *e.event.stream == *stream => Some(e.event.revision + 1),
                _ => return Err(ApiError::bad_request("invalid_last_event_id", "Last-Event-ID is not an event of this stream")),
            };
        }
        // Checks the store and that the start was not truncated.
        let mut probe = s.engine.read_stream(&store, &stream, r.from, Direction::Forward, ReadOptions { limit: Some(1), tag: None }).await?;
        probe.next_chunk().await?;
        drop(probe);
        let slot = WaiterSlot::take(&s)?;
        return Ok(sse_stream(s, store, stream, r.from.unwrap_or(0), r.tag, slot).into_response());
    }
    let dir = if r.backward { Direction::Backward } else { Direction::Forward };
    if !r.wait.is_zero() && !r.backward {
        let from = r.from.unwrap_or(0);
        let deadline = tokio::time::Instant::now() + r.wait;
        let _slot = WaiterSlot::take(&s)?;
        loop {
            let head = s.engine.stream_head(&store, &stream).await?;
            if head.is_some_and(|h| h >= from) {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = s.engine.next_seq(&store).await?;
            if left.is_zero() || !s.wait_for(&store, next, left).await? {
                break;
            }
        }
    }
    let scan = s.engine.read_stream(&store, &stream, r.from, dir, ReadOptions { limit: r.limit, tag: r.tag }).await?;
    match r.format {
        Format::Json => json_answer(scan).await,
        _ => stream_ndjson(scan).await,
    }
}

#[utoipa::path(get, path = "/stores/{store}/streams/{stream}", params(("store" = String, Path), ("stream" = String, Path)), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 200, description = "the stream head (revision null when empty)", body = crate::openapi::StreamHead)))]
pub(crate) async fn stream_head(State(s): State<AppState>, p: Result<Path<(String, String)>, PathRejection>) -> ApiResult<Json<api::StreamHead>> {
    let (store, stream) = path(p)?;
    check_store(&store)?;
    check_stream(&stream)?;
    let revision = s.engine.stream_head(&store, &stream).await?;
    Ok(Json(api::StreamHead { stream, revision }))
}

fn sse_event(e: &ReadEvent) -> SseEvent {
    let mut buf = Vec::with_capacity(160);
    write_event(&mut buf, e.seq, &e.event);
    SseEvent::default().id(e.seq.to_string()).data(String::from_utf8_lossy(&buf))
}

fn sse_error(e: ApiError) -> SseEvent {
    SseEvent::default().event("error").data(e.body().to_string())
}

/// A live tail of the store: never ends; resumes from `Last-Event-ID`.
fn sse_store(s: AppState, store: String, from: u64, tag: Option<(String, String)>, slot: WaiterSlot) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let heartbeat = s.config.heartbeat;
    let stream = futures::stream::unfold((s, store, from, tag, slot, Vec::<SseEvent>::new(), false), |(s, store, mut from, tag, slot, mut pending, failed)| async move {
        if failed {
            return None;
        }
        loop {
            if let Some(e) = pending.pop() {
                return Some((Ok(e), (s, store, from, tag, slot, pending, false)));
            }
            let got = async {
                let mut scan = s.engine.read_store(&store, from, ReadOptions { limit: Some(1000), tag: tag.clone() }).await?;
                let mut out = Vec::new();
                while let Some(c) = scan.next_chunk().await? {
                    out.extend(c);
                }
                Ok::<_, cairn_engine::ReadError>((out, scan.next()))
            }
            .await;
            match got {
                Ok((events, next)) => {
                    from = next;
                    if events.is_empty() {
                        match s.wait_for(&store, from, Duration::from_secs(30)).await {
                            Err(e) => return Some((Ok(sse_error(e.into())), (s, store, from, tag, slot, pending, true))),
                            Ok(_) if s.shutting_down() => return None,
                            Ok(_) => continue,
                        }
                    }
                    pending = events.iter().rev().map(sse_event).collect();
                }
                Err(e) => return Some((Ok(sse_error(e.into())), (s, store, from, tag, slot, pending, true))),
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

/// A live tail of one stream; `id:` is the event's seq.
fn sse_stream(s: AppState, store: String, stream: String, from: u64, tag: Option<(String, String)>, slot: WaiterSlot) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let heartbeat = s.config.heartbeat;
    let state = (s, store, stream, from, tag, slot, Vec::<SseEvent>::new(), false);
    let out = futures::stream::unfold(state, |(s, store, stream, mut from, tag, slot, mut pending, failed)| async move {
        if failed {
            return None;
        }
        loop {
            if let Some(e) = pending.pop() {
                return Some((Ok(e), (s, store, stream, from, tag, slot, pending, false)));
            }
            let got = async {
                let next = s.engine.next_seq(&store).await?;
                let mut scan = s.engine.read_stream(&store, &stream, Some(from), Direction::Forward, ReadOptions { limit: Some(1000), tag: tag.clone() }).await?;
                let mut out = Vec::new();
                while let Some(c) = scan.next_chunk().await? {
                    out.extend(c);
                }
                Ok::<_, cairn_engine::ReadError>((out, scan.next().unwrap_or(from), next))
            }
            .await;
            match got {
                Ok((events, next_rev, next_seq)) => {
                    from = next_rev;
                    if events.is_empty() {
                        match s.wait_for(&store, next_seq, Duration::from_secs(30)).await {
                            Err(e) => return Some((Ok(sse_error(e.into())), (s, store, stream, from, tag, slot, pending, true))),
                            Ok(_) if s.shutting_down() => return None,
                            Ok(_) => continue,
                        }
                    }
                    pending = events.iter().rev().map(sse_event).collect();
                }
                Err(e) => return Some((Ok(sse_error(e.into())), (s, store, stream, from, tag, slot, pending, true))),
            }
        }
    });
    Sse::new(out).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

fn doc_error(e: cairn_engine::docs::DocError) -> ApiError {
    use cairn_engine::docs::DocError;
    match e {
        DocError::StoreNotFound(n) => ApiError::not_found("store_not_found", format!("store {n:?} does not exist")),
        DocError::InvalidKey(k) => ApiError::bad_request("invalid_doc_key", format!("invalid doc key {k:?}: it must match ^[A-Za-z0-9._-]{{1,200}}$ and not be . or ..")),
        DocError::NotFound => ApiError::not_found("doc_not_found", "no such doc"),
        DocError::PreconditionFailed => ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", "the doc's ETag does not match the precondition; nothing was written"),
        DocError::Storage(e) => ApiError::from(cairn_engine::StoreError::Storage(e)),
    }
}

/// An ETag from a header: quoted (`"abc"`) or bare; weak ones never match.
fn etag_header(h: &HeaderMap, name: header::HeaderName) -> ApiResult<Option<String>> {
    let Some(v) = h.get(&name) else { return Ok(None) };
    let v = v.to_str().map_err(|_| ApiError::bad_request("invalid_precondition", format!("{name} is not ASCII")))?.trim();
    if v.starts_with("W/") {
        return Err(ApiError::bad_request("invalid_precondition", format!("{name}: weak ETags are not used by docs")));
    }
    let tag = v.trim_matches('"');
    if tag.is_empty() {
        return Err(ApiError::bad_request("invalid_precondition", format!("{name} is empty")));
    }
    Ok(Some(tag.to_string()))
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

#[utoipa::path(put, path = "/stores/{store}/docs/{key}", params(("store" = String, Path), ("key" = String, Path, description = "^[A-Za-z0-9._-]{1,200}$"), ("If-Match" = Option<String>, Header), ("If-None-Match" = Option<String>, Header, description = "*")), request_body(content = Vec<u8>, description = "any bytes; Content-Type is kept"), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 404, description = "store_not_found", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 201, description = "created; ETag header", body = crate::openapi::DocWritten), (status = 200, description = "updated; ETag header", body = crate::openapi::DocWritten), (status = 412, description = "precondition_failed", body = crate::openapi::ErrorBody), (status = 413, description = "body_too_large", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put_doc(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    use cairn_engine::docs::DocCondition;
    let (store, key) = path(p)?;
    check_store(&store)?;
    let body = body(b)?;
    let if_match = etag_header(&headers, header::IF_MATCH)?;
    let if_none = etag_header(&headers, header::IF_NONE_MATCH)?;
    let cond = match (if_match, if_none) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("invalid_precondition", "give If-Match or If-None-Match, not both")),
        (None, Some(n)) if n == "*" => DocCondition::IfNoneMatch,
        (None, Some(_)) => return Err(ApiError::bad_request("invalid_precondition", "If-None-Match takes only * on a write")),
        (Some(m), None) if m == "*" => {
            // Any existing version: take the current one's ETag.
            let cur = s.engine.get_doc(&store, &key).await.map_err(|e| match e {
                cairn_engine::docs::DocError::NotFound => doc_error(cairn_engine::docs::DocError::PreconditionFailed),
                other => doc_error(other),
            })?;
            DocCondition::IfMatch(cur.etag)
        }
        (Some(m), None) => DocCondition::IfMatch(m),
        (None, None) => DocCondition::None,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let w = s.engine.put_doc(&store, &key, &body, content_type, cond).await.map_err(doc_error)?;
    let status = if w.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, [(header::ETAG, quoted(&w.etag))], Json(api::DocWritten { key, etag: w.etag })).into_response())
}

#[utoipa::path(get, path = "/stores/{store}/docs/{key}", params(("store" = String, Path), ("key" = String, Path)), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 200, description = "the doc, with ETag and its Content-Type"), (status = 404, description = "doc_not_found", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_doc(State(s): State<AppState>, p: Result<Path<(String, String)>, PathRejection>) -> ApiResult<Response> {
    let (store, key) = path(p)?;
    check_store(&store)?;
    let d = s.engine.get_doc(&store, &key).await.map_err(doc_error)?;
    let ct = d.content_type.unwrap_or_else(|| "application/octet-stream".into());
    Ok(([(header::ETAG, quoted(&d.etag)), (header::CONTENT_TYPE, ct)], d.body).into_response())
}

#[utoipa::path(delete, path = "/stores/{store}/docs/{key}", params(("store" = String, Path), ("key" = String, Path), ("If-Match" = Option<String>, Header)), responses((status = 503, description = "storage unavailable or timeout; see the code", body = crate::openapi::ErrorBody), (status = 400, description = "a bad name, header or query value", body = crate::openapi::ErrorBody), (status = 204, description = "deleted"), (status = 404, description = "doc_not_found", body = crate::openapi::ErrorBody), (status = 412, description = "precondition_failed", body = crate::openapi::ErrorBody)))]
pub(crate) async fn delete_doc(State(s): State<AppState>, p: Result<Path<(String, String)>, PathRejection>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (store, key) = path(p)?;
    check_store(&store)?;
    let if_match = etag_header(&headers, header::IF_MATCH)?.filter(|m| m != "*");
    s.engine.delete_doc(&store, &key, if_match).await.map_err(doc_error)?;
    Ok(StatusCode::NO_CONTENT)
}
