//! What goes over the wire: append bodies in, events out.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use cairn_engine::{AppendCondition, Event, Expectation, NewEvent, QueryItem};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ApiError;

/// One event of an append body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    stream: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    data_b64: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    id: Option<uuid::Uuid>,
    timestamp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyIn<'a> {
    #[serde(borrow)]
    events: Vec<EventIn<'a>>,
    expected: Option<Value>,
    condition: Option<Value>,
}

/// One item of a condition's query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryIn {
    types: Option<Vec<String>>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionIn {
    fail_if_events_match: Value,
    after: Option<u64>,
}

/// A parsed append body.
pub struct AppendBody {
    pub events: Vec<NewEvent>,
    pub expected: Option<Value>,
    pub condition: Option<AppendCondition>,
}

fn bad_condition(m: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_condition", format!("condition: {m}"))
}

/// `{"fail_if_events_match": QUERY, "after"?: SEQ}`, where QUERY is one
/// item `{"types"?: [str], "tags"?: {str: str}}` or an array of them (an
/// event matching any item fails the append).
fn parse_condition(v: Value) -> Result<AppendCondition, ApiError> {
    let c: ConditionIn = serde_json::from_value(v).map_err(bad_condition)?;
    let items: Vec<QueryIn> = match c.fail_if_events_match {
        Value::Array(a) => a.into_iter().map(serde_json::from_value).collect::<Result<_, _>>().map_err(bad_condition)?,
        o @ Value::Object(_) => vec![serde_json::from_value(o).map_err(bad_condition)?],
        other => return Err(bad_condition(format!("fail_if_events_match must be a query object or an array of them, not {other}"))),
    };
    let fail_if_events_match = items
        .into_iter()
        .map(|q| QueryItem { types: q.types.unwrap_or_default(), tags: q.tags.map(|t| t.into_iter().collect()).unwrap_or_default() })
        .collect();
    Ok(AppendCondition { fail_if_events_match, after: c.after })
}

/// Tags one event may carry.
pub const MAX_TAGS: usize = 64;

/// Bytes an NDJSON line may hold beyond the event's data: its type,
/// stream, id, timestamp and tags, with room for JSON escapes.
const LINE_OVERHEAD: usize = 512 << 10;

fn too_large(code: &'static str, message: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, code, message)
}

fn convert(i: usize, e: EventIn<'_>, max_event: usize) -> Result<NewEvent, ApiError> {
    if e.tags.as_ref().is_some_and(|t| t.len() > MAX_TAGS) {
        return Err(ApiError::bad_request("invalid_event", format!("event {i}: more than {MAX_TAGS} tags")));
    }
    let (data, binary) = match (e.data, e.data_b64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("invalid_event", format!("event {i}: give either data or data_b64, not both"))),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b.as_bytes()) {
            Ok(d) => (Bytes::from(d), true),
            Err(err) => return Err(ApiError::bad_request("invalid_event", format!("event {i}: data_b64 is not valid base64: {err}"))),
        },
        (Some(raw), None) => (Bytes::copy_from_slice(raw.get().as_bytes()), false),
        (None, None) => (Bytes::from_static(b"null"), false),
    };
    if data.len() > max_event {
        return Err(too_large("event_too_large", format!("event {i}: its data is {} bytes, over the limit of {max_event}", data.len())));
    }
    Ok(NewEvent {
        stream: e.stream.unwrap_or_default(),
        event_type: e.event_type,
        data,
        binary,
        tags: e.tags.map(|t| t.into_iter().collect()).unwrap_or_default(),
        id: e.id,
        timestamp: e.timestamp,
    })
}

fn json_error(what: &str, e: &serde_json::Error) -> ApiError {
    ApiError::bad_request("malformed_json", format!("{what}: {e} (line {}, column {})", e.line(), e.column()))
}

/// Parses a JSON array of events, an object `{"events", "expected",
/// "condition"}`, or
/// NDJSON (one event a line) when `ndjson`. An event's data (decoded, for
/// `data_b64`) may hold at most `max_event` bytes (413 `event_too_large`),
/// an NDJSON line that plus its fields (413 `line_too_large`).
pub fn parse_append(body: &[u8], ndjson: bool, max_event: usize) -> Result<AppendBody, ApiError> {
    if ndjson {
        let mut events = Vec::new();
        let max_line = max_event.saturating_mul(4).div_ceil(3).saturating_add(LINE_OVERHEAD);
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max_line {
                return Err(too_large("line_too_large", format!("line {}: {} bytes, over the limit of {max_line}", n + 1, line.len())).with("line", Value::from(n + 1)));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e: EventIn = serde_json::from_slice(line).map_err(|e| {
                ApiError::bad_request("malformed_ndjson", format!("line {}: {e}", n + 1)).with("line", Value::from(n + 1))
            })?;
            events.push(convert(events.len(), e, max_event)?);
        }
        return Ok(AppendBody { events, expected: None, condition: None });
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => {
            let evs: Vec<EventIn> = serde_json::from_slice(body).map_err(|e| json_error("body", &e))?;
            let events = evs.into_iter().enumerate().map(|(i, e)| convert(i, e, max_event)).collect::<Result<_, _>>()?;
            Ok(AppendBody { events, expected: None, condition: None })
        }
        Some(b'{') => {
            let b: BodyIn = serde_json::from_slice(body).map_err(|e| json_error("body", &e))?;
            let condition = b.condition.filter(|c| !c.is_null()).map(parse_condition).transpose()?;
            let events = b.events.into_iter().enumerate().map(|(i, e)| convert(i, e, max_event)).collect::<Result<_, _>>()?;
            Ok(AppendBody { events, expected: b.expected, condition })
        }
        _ => Err(ApiError::bad_request("malformed_json", "the body must be a JSON array of events, an object {\"events\": [...]}, or NDJSON")),
    }
}

/// `any`, `no_stream`, `stream_exists` or a revision, from a header or a body.
pub fn parse_expectation(v: &Value) -> Result<Expectation, ApiError> {
    match v {
        Value::String(s) => parse_expectation_str(s),
        Value::Number(n) => n
            .as_u64()
            .map(Expectation::Exact)
            .ok_or_else(|| ApiError::bad_request("invalid_expected_revision", format!("expected revision {n} is not a non-negative integer"))),
        other => Err(ApiError::bad_request("invalid_expected_revision", format!("expected revision must be any, no_stream, stream_exists or a number, not {other}"))),
    }
}

pub fn parse_expectation_str(s: &str) -> Result<Expectation, ApiError> {
    match s {
        "any" => Ok(Expectation::Any),
        "no_stream" => Ok(Expectation::NoStream),
        "stream_exists" => Ok(Expectation::StreamExists),
        n => n.parse::<u64>().map(Expectation::Exact).map_err(|_| {
            ApiError::bad_request("invalid_expected_revision", format!("expected revision {n:?} must be any, no_stream, stream_exists or a number"))
        }),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// One event as a JSON object (one NDJSON line without the newline).
/// Written by hand, field by field: a catch-up read spends much of the
/// node's time here.
pub fn write_event(out: &mut Vec<u8>, seq: u64, e: &Event) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(n.format(seq).as_bytes());
    out.extend_from_slice(b",\"stream\":");
    json_str(out, &e.stream);
    out.extend_from_slice(b",\"revision\":");
    out.extend_from_slice(n.format(e.revision).as_bytes());
    out.extend_from_slice(b",\"type\":");
    json_str(out, &e.event_type);
    out.extend_from_slice(b",\"timestamp\":");
    out.extend_from_slice(n.format(e.timestamp).as_bytes());
    out.extend_from_slice(b",\"id\":");
    match e.id {
        Some(id) => {
            out.push(b'"');
            out.extend_from_slice(uuid::Uuid::from_bytes(id).hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"tags\":{");
    for (i, (k, v)) in e.tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        json_str(out, v);
    }
    out.push(b'}');
    if e.binary {
        out.extend_from_slice(b",\"data_b64\":\"");
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&e.data).as_bytes());
        out.extend_from_slice(b"\"}");
    } else {
        // Data was validated as JSON when it was appended.
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(&e.data);
        out.push(b'}');
    }
}

/// A settings body: a JSON object of the fields of `T`, no other.
fn parse_settings<T: serde::de::DeserializeOwned>(b: &[u8], what: &str, shape: &str) -> Result<T, String> {
    let v: Value = serde_json::from_slice(b).map_err(|e| format!("{what}: {e} (expected {shape})"))?;
    if !v.is_object() {
        return Err(format!("{what}: not an object (expected {shape})"));
    }
    serde_json::from_value(v).map_err(|e| format!("{what}: {e} (expected {shape})"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionIn {
    #[serde(default)]
    truncate_before: Option<u64>,
    #[serde(default)]
    max_age_ms: Option<u64>,
}

/// A retention body: `{"truncate_before": SEQ|null, "max_age_ms": N|null}`.
pub fn parse_retention(b: &[u8]) -> Result<cairn_engine::Retention, String> {
    let r: RetentionIn = parse_settings(b, "retention", r#"{"truncate_before": SEQ|null, "max_age_ms": N|null}"#)?;
    Ok(cairn_engine::Retention { truncate_before: r.truncate_before, max_age_ms: r.max_age_ms })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TieringIn {
    #[serde(default)]
    seal_before: Option<u64>,
    #[serde(default)]
    seal_after_ms: Option<u64>,
}

/// A tiering body: `{"seal_before": SEQ|null, "seal_after_ms": N|null}`.
pub fn parse_tiering(b: &[u8]) -> Result<cairn_engine::Tiering, String> {
    let t: TieringIn = parse_settings(b, "tiering", r#"{"seal_before": SEQ|null, "seal_after_ms": N|null}"#)?;
    Ok(cairn_engine::Tiering { seal_before: t.seal_before, seal_after_ms: t.seal_after_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<[u8; 16]>, tags: Vec<(String, String)>, binary: bool, data: &'static [u8]) -> Event {
        Event { stream: "a \"b\"\n".into(), revision: u64::MAX, event_type: "T\u{e9}".into(), timestamp: -5, id, tags, binary, data: Bytes::from_static(data) }
    }

    #[test]
    fn an_event_line_is_the_json_the_api_describes() {
        let e = event(Some([0xab; 16]), vec![("k".into(), "v\\1".into()), ("z".into(), String::new())], false, br#"{"x":[1,2]}"#);
        let mut out = Vec::new();
        write_event(&mut out, 0, &e);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 0, "stream": "a \"b\"\n", "revision": u64::MAX, "type": "T\u{e9}", "timestamp": -5,
                "id": "abababab-abab-abab-abab-abababababab", "tags": {"k": "v\\1", "z": ""}, "data": {"x": [1, 2]}})
        );
        let b = event(None, Vec::new(), true, &[0, 255]);
        let mut out = Vec::new();
        write_event(&mut out, 42, &b);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"seq":42,"stream":"a \"b\"\n","revision":18446744073709551615,"type":"Té","timestamp":-5,"id":null,"tags":{},"data_b64":"AP8="}"#
        );
    }
}
