//! The API's errors: one stable code per failure, mapped from the engine's
//! errors in one exhaustive `match`. Internals are never sent to clients;
//! 5xx are logged.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_engine::{AppendError, Expectation, ReadError, RetentionError, StorageError, StoreError};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Fields added to the error object (e.g. `current_revision`).
    pub extra: Option<serde_json::Map<String, Value>>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), extra: None, retry_after: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn with(mut self, key: &str, v: Value) -> Self {
        self.extra.get_or_insert_with(Default::default).insert(key.into(), v);
        self
    }

    /// The JSON body, also used for the error line of a failed NDJSON read.
    pub fn body(&self) -> Value {
        let mut e = serde_json::Map::new();
        e.insert("code".into(), Value::from(self.code));
        e.insert("message".into(), Value::from(self.message.clone()));
        if let Some(x) = &self.extra {
            e.extend(x.clone());
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(d) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

fn storage(e: StorageError) -> ApiError {
    match e {
        // An object the manifest names is gone, or storage failed: not the
        // client's fault, and nothing was written.
        StorageError::NotFound(m) | StorageError::Backend(m) => {
            tracing::warn!(error = %m, "storage error");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "object storage failed; nothing was written")
        }
        // Bytes that fail their checksum: a retry reads the same bytes.
        // The object is named in the log, not to the client.
        StorageError::Corrupt(m) => {
            tracing::error!(error = %m, "corrupt data in storage");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "data_corrupt",
                "stored data failed its checksum; other data is still served; `cairn inspect --verify` finds the object",
            )
        }
    }
}

pub fn expectation_json(e: Expectation) -> Value {
    match e {
        Expectation::Any => "any".into(),
        Expectation::NoStream => "no_stream".into(),
        Expectation::StreamExists => "stream_exists".into(),
        Expectation::Exact(n) => n.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidName(n) => {
                ApiError::bad_request("invalid_store_name", format!("invalid store name {n:?}: it must match ^[a-z0-9][a-z0-9-]{{0,62}}$"))
            }
            StoreError::NotFound(n) => ApiError::not_found("store_not_found", format!("store {n:?} does not exist")),
            StoreError::Storage(e) => storage(e),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::StoreNotFound(n) => ApiError::not_found("store_not_found", format!("store {n:?} does not exist")),
            AppendError::Invalid(m) => ApiError::bad_request("invalid_batch", m),
            AppendError::WrongExpectedRevision(c) => {
                let streams: Vec<Value> = c
                    .iter()
                    .map(|s| json!({"stream": s.stream, "expected": expectation_json(s.expected), "current_revision": s.current_revision}))
                    .collect();
                let mut err = ApiError::new(StatusCode::CONFLICT, "wrong_expected_revision", "a stream is not at the expected revision; nothing was appended");
                if let [one] = c.as_slice() {
                    err = err.with("current_revision", json!(one.current_revision));
                }
                err.with("streams", Value::from(streams))
            }
            AppendError::IdempotencyConflict(m) => ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", m),
            AppendError::InvalidCondition(m) => ApiError::bad_request("invalid_condition", format!("condition: {m}")),
            AppendError::ConditionFailed { after } => {
                let since = after.map_or("in the store".to_string(), |a| format!("after seq {a}"));
                ApiError::new(StatusCode::CONFLICT, "condition_failed", format!("an event matching the condition's query was appended {since}; nothing was appended"))
            }
            AppendError::ConditionBeyondEnd { after, next } => {
                ApiError::bad_request("position_beyond_end", format!("condition after={after} is beyond the end of the store (next seq {next})")).with("next", json!(next))
            }
            AppendError::ConditionTruncated { first_seq } => truncated(
                first_seq,
                format!("the condition looks at events before seq {first_seq}, which retention truncated; give an `after` of at least {}; nothing was appended", first_seq.saturating_sub(1)),
            ),
            AppendError::CommitOutcomeUnknown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "commit_outcome_unknown",
                "the commit may or may not have happened; retrying with the same event ids is safe",
            ),
            AppendError::Overloaded { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many conflicting commits; nothing was written")
            },
            AppendError::Storage(e) => storage(e),
            AppendError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the node is shutting down; nothing was written"),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::StoreNotFound(n) => ApiError::not_found("store_not_found", format!("store {n:?} does not exist")),
            ReadError::Invalid(m) => ApiError::bad_request("invalid_request", m),
            ReadError::PositionBeyondEnd { from, next } => {
                ApiError::bad_request("position_beyond_end", format!("from={from} is beyond the end of the store (next seq {next})")).with("next", json!(next))
            }
            ReadError::Truncated { first_seq, first_revision: Some(r) } => {
                truncated(first_seq, format!("the read starts before what retention kept: the stream's first revision still stored is {r}")).with("first_revision", json!(r))
            }
            ReadError::Truncated { first_seq, first_revision: None } => {
                truncated(first_seq, format!("the read starts before what retention kept: the store's first seq is {first_seq}"))
            }
            ReadError::Storage(e) => storage(e),
        }
    }
}

/// 410 `truncated`: what was asked for is before the store's first seq.
fn truncated(first_seq: u64, message: String) -> ApiError {
    ApiError::new(StatusCode::GONE, "truncated", message).with("first_seq", json!(first_seq))
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::StoreNotFound(n) => ApiError::not_found("store_not_found", format!("store {n:?} does not exist")),
            RetentionError::Invalid(m) => ApiError::bad_request("invalid_retention", m),
            RetentionError::CommitOutcomeUnknown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "commit_outcome_unknown",
                "the change may or may not have been committed; setting the same retention again is safe",
            ),
            RetentionError::Storage(e) => storage(e),
            RetentionError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the node is shutting down; nothing was changed"),
        }
    }
}
