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
    /// The lowest seq still readable: retention truncated what is before.
    pub first_seq: u64,
    /// Archives the store's sealed history is in.
    pub archives: u64,
}

/// A store's tiering. Both fields may be null or left out (nothing sealed
/// on that account).
#[derive(Serialize, ToSchema)]
pub struct TieringBody {
    /// History before this seq is sealed into archives (whole index
    /// objects, never the idempotency window).
    pub seal_before: Option<u64>,
    /// History whose newest event is older than this is sealed.
    #[schema(minimum = 1)]
    pub seal_after_ms: Option<u64>,
}

/// A store's retention. Both fields may be null or left out (no limit).
#[derive(Serialize, ToSchema)]
pub struct RetentionBody {
    /// Events before this seq are truncated (at most the store's next seq;
    /// the first seq never moves back).
    pub truncate_before: Option<u64>,
    /// Whole objects whose newest event is older than this are dropped.
    #[schema(minimum = 1)]
    pub max_age_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct RetentionAnswer {
    pub truncate_before: Option<u64>,
    pub max_age_ms: Option<u64>,
    /// The lowest seq still readable.
    pub first_seq: u64,
    pub next_seq: u64,
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
    pub condition: Option<Condition>,
}

/// Which events an append condition looks for: events of one of `types`
/// (any type when absent or empty) that carry every tag of `tags`.
#[derive(Serialize, ToSchema)]
pub struct QueryItem {
    pub types: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// The append commits only if no event matching the query (one item, or
/// any item of an array) was committed after seq `after` (with no `after`:
/// none at all). Checked atomically with the commit; else 409
/// `condition_failed` and nothing is appended.
#[derive(Serialize, ToSchema)]
pub struct Condition {
    #[schema(value_type = Object)]
    pub fail_if_events_match: serde_json::Value,
    /// A seq of the store: events after it count (400 `position_beyond_end`
    /// when the store has no such seq yet).
    #[schema(minimum = 0)]
    pub after: Option<u64>,
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
        crate::routes::put_retention,
        crate::routes::get_retention,
        crate::routes::put_tiering,
        crate::routes::get_tiering,
    ),
    components(schemas(ErrorBody, StoreInfo, StoreList, AppendBody, EventIn, Condition, QueryItem, AppendedOne, AppendedMany, ReadAnswer, EventOut, StreamHead, DocWritten, RetentionBody, RetentionAnswer, TieringBody))
)]
pub struct ApiDoc;

/// The document as served: utoipa's, with the constraints the handlers
/// enforce written in (name patterns, query bounds, header forms, the
/// event's either-or data, every content type a route answers with), so
/// that a request valid by the document is never refused by the node.
pub fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = ApiDoc::openapi();
    // Paths are relative to /v1.
    doc.servers = Some(vec![utoipa::openapi::Server::new("/v1")]);
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    // 1-256 bytes of UTF-8: at most 256 characters (schemas count
    // characters; a name of many multi-byte characters can still be too long).
    let stream_name = json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$", "description": "1-256 bytes of UTF-8 without control characters"});
    let param_schema = |name: &str, location: &str| -> Option<serde_json::Value> {
        Some(match (location, name) {
            ("path", "store") => json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}),
            ("path", "stream") => stream_name.clone(),
            ("path", "key") => json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,200}$", "not": {"enum": [".", ".."]}}),
            ("query", "from") => json!({"type": "integer", "minimum": 0}),
            ("query", "limit") => json!({"type": "integer", "minimum": 1}),
            ("query", "wait") => json!({"type": "integer", "minimum": 0, "maximum": 30}),
            ("query", "direction") => json!({"type": "string", "enum": ["forward", "backward"]}),
            ("query", "tag") => json!({"type": "string", "pattern": "^[^:]+:"}),
            ("header", "Expected-Revision") => json!({"type": "string", "pattern": "^(any|no_stream|stream_exists|[0-9]{1,19})$"}),
            // Any visible ASCII but a weak ETag.
            ("header", "If-Match") => json!({"type": "string", "pattern": "^(?!W/)[!-~]([ -~]*[!-~])?$"}),
            ("header", "If-None-Match") => json!({"type": "string", "enum": ["*"]}),
            _ => return None,
        })
    };
    let read = json!({
        "application/x-ndjson": {"schema": {"type": "string", "description": "one EventOut a line, then {\"next\": N}"}},
        "application/json": {"schema": {"$ref": "#/components/schemas/ReadAnswer"}},
        "text/event-stream": {"schema": {"type": "string"}}
    });
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else { continue };
            for (method, op) in ops.iter_mut() {
                if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                    for p in params {
                        let (name, location) = (p["name"].as_str().unwrap_or("").to_string(), p["in"].as_str().unwrap_or("").to_string());
                        if let Some(schema) = param_schema(&name, &location) {
                            p["schema"] = schema;
                        }
                    }
                }
                if method == "get" && path.ends_with("/events") {
                    op["responses"]["200"]["content"] = read.clone();
                    op["responses"]["500"] = json!({"description": "data_corrupt: stored data failed its checksum", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
                }
                if method == "get" && path.ends_with("/docs/{key}") {
                    op["responses"]["200"]["content"] = json!({"*/*": {"schema": {"type": "string", "format": "binary"}}});
                }
            }
        }
    }
    if let Some(schemas) = v.pointer_mut("/components/schemas") {
        let ev = &mut schemas["EventIn"];
        ev["required"] = json!(["type"]);
        ev["properties"]["data"] = json!({"description": "Any JSON (default null)."});
        ev["properties"]["data_b64"] = json!({"type": "string", "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$", "description": "Binary data, base64, instead of `data`."});
        // A UUID as the uuid crate reads it: hyphenated, simple, braced or URN.
        let h = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
        let uuid = format!("^({h}|[0-9a-fA-F]{{32}}|\\{{{h}\\}}|urn:uuid:{h})$");
        ev["properties"]["id"] = json!({"type": "string", "pattern": uuid, "description": "A UUID; makes the append idempotent."});
        ev["properties"]["stream"] = stream_name.clone();
        ev["properties"]["timestamp"] = json!({"type": ["integer", "null"], "format": "int64", "description": "Milliseconds since the epoch (default: the node's clock)."});
        // Type: 1-256 bytes; tag keys 1-256 bytes, values up to 1024 (bytes
        // of UTF-8, stated as characters).
        ev["properties"]["type"] = json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"});
        ev["properties"]["tags"] = json!({"type": ["object", "null"], "maxProperties": crate::wire::MAX_TAGS, "additionalProperties": {"type": "string", "maxLength": 1024}, "propertyNames": {"minLength": 1, "maxLength": 256}});
        ev["properties"]["data_b64"]["type"] = json!(["string", "null"]);
        ev["properties"]["id"]["type"] = json!(["string", "null"]);
        ev["additionalProperties"] = json!(false);
        // Not both data and data_b64 (null counts as absent).
        ev["not"] = json!({"required": ["data", "data_b64"], "properties": {"data": {"not": {"type": "null"}}, "data_b64": {"type": "string"}}});
        let expectation = json!({"oneOf": [{"type": "string", "enum": ["any", "no_stream", "stream_exists"]}, {"type": "integer", "minimum": 0}]});
        let mut many_event = schemas["EventIn"].clone();
        many_event["required"] = json!(["type", "stream"]);
        schemas["EventInMany"] = many_event;
        // On the one-stream route the path names the stream.
        if let Some(p) = schemas["EventIn"]["properties"].as_object_mut() {
            p.remove("stream");
        }
        schemas["EventIn"]["description"] = json!("An event to append to the stream of the path.");
        schemas["StreamConflict"]["properties"]["expected"] = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        let item = &mut schemas["QueryItem"];
        item["additionalProperties"] = json!(false);
        item["properties"]["types"] = json!({"type": ["array", "null"], "maxItems": 64, "items": {"type": "string", "minLength": 1, "maxLength": 256}});
        item["properties"]["tags"] = json!({"type": ["object", "null"], "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 1024}, "propertyNames": {"minLength": 1, "maxLength": 256}});
        let cond = &mut schemas["Condition"];
        cond["additionalProperties"] = json!(false);
        cond["required"] = json!(["fail_if_events_match"]);
        cond["properties"]["fail_if_events_match"] = json!({"oneOf": [
            {"$ref": "#/components/schemas/QueryItem"},
            {"type": "array", "minItems": 1, "maxItems": 64, "items": {"$ref": "#/components/schemas/QueryItem"}}
        ]});
        let body = &mut schemas["AppendBody"];
        body["required"] = json!(["events"]);
        // Every event has an id, or none has.
        let with_id = json!({"required": ["id"], "properties": {"id": {"type": "string"}}});
        body["properties"]["events"]["oneOf"] = json!([{"items": with_id}, {"items": {"not": with_id}}]);
        body["additionalProperties"] = json!(false);
        let mut one = expectation["oneOf"].clone();
        if let Some(a) = one.as_array_mut() {
            a.push(json!({"type": "null"}));
        }
        body["properties"]["expected"] = json!({"description": "any | no_stream | stream_exists | N (or the Expected-Revision header); null is the same as absent", "oneOf": one});
        let mut many = body.clone();
        many["description"] = json!("Events that each name their stream; expected maps streams to expectations.");
        many["properties"]["events"]["items"] = json!({"$ref": "#/components/schemas/EventInMany"});
        many["properties"]["expected"] = json!({"type": ["object", "null"], "additionalProperties": expectation, "propertyNames": stream_name});
        schemas["AppendManyBody"] = many;
    }
    if let Some(op) = v.pointer_mut("/paths/~1stores~1{store}~1events/post") {
        op["requestBody"]["content"]["application/json"]["schema"] = json!({"$ref": "#/components/schemas/AppendManyBody"});
    }
    v
}

pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(document()).into_response()
}
