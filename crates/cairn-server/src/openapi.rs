//! The OpenAPI document of the v1 API, generated from the handlers'
//! `#[utoipa::path]` annotations and the schemas below; served at
//! `/v1/openapi.json`.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `{"error": {...}}`: every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: what went wrong and whether a retry is safe.
    pub code: String,
    pub message: String,
    /// On `wrong_expected_revision` with one stream.
    pub current_revision: Option<u64>,
    /// On `wrong_expected_revision`: each failing stream.
    pub streams: Option<Vec<StreamConflict>>,
    /// On `malformed_ndjson`: the line, from 1.
    pub line: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct StreamConflict {
    pub stream: String,
    /// `any`, `no_stream`, `stream_exists` or a revision.
    #[schema(value_type = Object)]
    pub expected: serde_json::Value,
    pub current_revision: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct StoreInfo {
    pub name: String,
    pub incarnation: String,
    pub next_seq: u64,
    pub version: u64,
    pub idempotency_window: u64,
    pub segments: u64,
    pub index_objects: u64,
    pub last_ts: i64,
    /// Bytes of the store's segments and index objects.
    pub bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct StoreName {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct StoreList {
    pub stores: Vec<StoreName>,
}

/// An event to append.
#[derive(Serialize, ToSchema)]
pub struct EventIn {
    /// On the many-stream route; on the one-stream route absent or the path's.
    #[schema(min_length = 1, max_length = 256)]
    pub stream: Option<String>,
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 256)]
    pub event_type: String,
    /// Any JSON (default null).
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    /// Binary data, base64, instead of `data`.
    pub data_b64: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Makes the append idempotent: all events of a batch have ids, or none.
    #[schema(format = "uuid")]
    pub id: Option<String>,
    /// Milliseconds since the epoch (default: the node's clock).
    pub timestamp: Option<i64>,
}

/// A JSON array of events, or this object.
#[derive(Serialize, ToSchema)]
pub struct AppendBody {
    #[schema(min_items = 1)]
    pub events: Vec<EventIn>,
    /// One stream: `any | no_stream | stream_exists | N`; many streams: a map
    /// from stream to that.
    #[schema(value_type = Object)]
    pub expected: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct AppendedOne {
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_revision: u64,
    pub last_revision: u64,
    /// A retry of a batch already appended: nothing was added.
    pub deduplicated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StreamRange {
    pub stream: String,
    pub first_revision: u64,
    pub last_revision: u64,
}

#[derive(Serialize, ToSchema)]
pub struct AppendedMany {
    pub first_seq: u64,
    pub last_seq: u64,
    pub streams: Vec<StreamRange>,
    pub deduplicated: bool,
}

/// An event read back (one NDJSON line; or an element of `events`).
#[derive(Serialize, ToSchema)]
pub struct EventOut {
    pub seq: u64,
    pub stream: String,
    pub revision: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: i64,
    pub id: Option<String>,
    pub tags: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
    pub data_b64: Option<String>,
}

/// With `Accept: application/json`. NDJSON (the default) is one
/// [`EventOut`] a line, then `{"next": N}`.
#[derive(Serialize, ToSchema)]
pub struct ReadAnswer {
    pub events: Vec<EventOut>,
    /// Where to continue (null past revision 0 of a backward read).
    pub next: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct StreamHead {
    pub stream: String,
    pub revision: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct DocWritten {
    pub key: String,
    pub etag: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn", description = "An event store on object storage: the v1 HTTP API."),
    paths(
        crate::routes::list_stores,
        crate::routes::create_store,
        crate::routes::store_info,
        crate::routes::delete_store,
        crate::routes::append_one,
        crate::routes::append_many,
        crate::routes::read_store,
        crate::routes::read_stream,
        crate::routes::stream_head,
        crate::routes::put_doc,
        crate::routes::get_doc,
        crate::routes::delete_doc,
    ),
    components(schemas(ErrorBody, StoreInfo, StoreList, AppendBody, EventIn, AppendedOne, AppendedMany, ReadAnswer, EventOut, StreamHead, DocWritten))
)]
pub struct ApiDoc;

pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut doc = ApiDoc::openapi();
    // Paths are relative to /v1.
    doc.servers = Some(vec![utoipa::openapi::Server::new("/v1")]);
    axum::Json(doc).into_response()
}
