//! Events going in ([`EventData`]) and coming out ([`RecordedEvent`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{Error, Result, WireError};

/// What a stream must look like for an append to go ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    #[default]
    Any,
    /// The stream has no events.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event is at this revision.
    Revision(u64),
}

impl Expected {
    pub(crate) fn json(self) -> serde_json::Value {
        match self {
            Expected::Any => "any".into(),
            Expected::NoStream => "no_stream".into(),
            Expected::StreamExists => "stream_exists".into(),
            Expected::Revision(n) => n.into(),
        }
    }

    /// The expectation that a stream is at `head` (`None`: empty).
    pub fn at(head: Option<u64>) -> Expected {
        head.map_or(Expected::NoStream, Expected::Revision)
    }
}

/// Which events an append [`Condition`] looks for: events of one of the
/// types given (of any type when none is) that carry every tag given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Query {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    types: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

impl Query {
    /// Every event.
    pub fn any() -> Self {
        Query::default()
    }
    /// Events of this type (or of any type added with it).
    pub fn of_type(mut self, event_type: impl Into<String>) -> Self {
        self.types.push(event_type.into());
        self
    }
    /// Events that carry this tag (and every other tag added).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// An append condition: the append commits only if no event matching any of
/// its queries was committed after seq `after` — checked by the node
/// atomically with the commit, on every node. Take `after` from what the
/// decision was made on: the seq of the last event read (`None` if none was).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    fail_if_events_match: Vec<Query>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
}

impl Condition {
    /// Fails the append if an event matching `query` came after `after`.
    pub fn none_after(query: Query, after: Option<u64>) -> Self {
        Condition { fail_if_events_match: vec![query], after }
    }
    /// Fails it also on events matching `query`.
    pub fn or(mut self, query: Query) -> Self {
        self.fail_if_events_match.push(query);
        self
    }
}

/// An event to append. Every one gets a fresh id when it is made, so a
/// retried append is recognised by the node and stored once.
#[derive(Clone, Debug, Serialize)]
pub struct EventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

impl EventData {
    /// An event whose data is `data` as JSON.
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, data: &T) -> Result<EventData> {
        let raw = serde_json::value::to_raw_value(data).map_err(|e| Error::new(crate::ErrorKind::InvalidInput, format!("event data is not JSON: {e}")))?;
        Ok(EventData::with_data(event_type.into(), Some(raw), None))
    }

    /// An event whose data is already JSON text (checked here).
    pub fn raw_json(event_type: impl Into<String>, json: impl Into<String>) -> Result<EventData> {
        let raw = RawValue::from_string(json.into()).map_err(|e| Error::new(crate::ErrorKind::InvalidInput, format!("event data is not JSON: {e}")))?;
        Ok(EventData::with_data(event_type.into(), Some(raw), None))
    }

    /// An event with binary data (sent as base64, read back as bytes).
    pub fn binary(event_type: impl Into<String>, data: impl AsRef<[u8]>) -> EventData {
        EventData::with_data(event_type.into(), None, Some(base64::engine::general_purpose::STANDARD.encode(data)))
    }

    fn with_data(event_type: String, data: Option<Box<RawValue>>, data_b64: Option<String>) -> EventData {
        EventData { stream: None, event_type, data, data_b64, tags: BTreeMap::new(), id: Uuid::new_v4(), timestamp: None }
    }

    /// The stream, for [`crate::Store::append_many`] (the one-stream append
    /// sets it from its argument).
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Replaces the generated id: give the same id to the same fact, and
    /// appending it twice stores it once.
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Milliseconds since the epoch (default: the node's clock).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    pub fn event_id(&self) -> Uuid {
        self.id
    }

    pub fn stream_name(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    pub(crate) fn set_stream(&mut self, stream: &str) {
        self.stream = Some(stream.to_string());
    }
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its position in the store.
    pub seq: u64,
    pub stream: String,
    /// Its position in its stream.
    pub revision: u64,
    pub event_type: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub id: Option<Uuid>,
    pub tags: BTreeMap<String, String>,
    /// The data: JSON text, or the bytes of a binary event. JSON data
    /// shares the buffer the read's answer arrived in (a chunk of a few
    /// hundred KiB at most), so keeping one event keeps its chunk: copy the
    /// data (`Bytes::copy_from_slice`) to hold a few events of a long read.
    pub data: Bytes,
    /// Whether `data` is binary rather than JSON.
    pub binary: bool,
}

impl RecordedEvent {
    /// The data deserialised from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        if self.binary {
            return Err(Error::new(crate::ErrorKind::InvalidInput, format!("event {} has binary data, not JSON", self.seq)));
        }
        serde_json::from_slice(&self.data).map_err(|e| Error::new(crate::ErrorKind::InvalidInput, format!("event {}: {e}", self.seq)))
    }
}

/// As the node writes it: one NDJSON line of a read.
impl Serialize for RecordedEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap};
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("stream", &self.stream)?;
        m.serialize_entry("revision", &self.revision)?;
        m.serialize_entry("type", &self.event_type)?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("tags", &self.tags)?;
        if self.binary {
            m.serialize_entry("data_b64", &base64::engine::general_purpose::STANDARD.encode(&self.data))?;
        } else {
            let text = std::str::from_utf8(&self.data).map_err(S::Error::custom)?;
            let raw: &RawValue = serde_json::from_str(text).map_err(S::Error::custom)?;
            m.serialize_entry("data", raw)?;
        }
        m.end()
    }
}

/// One line of an NDJSON read: an event, `{"next": N}` or `{"error": ...}`.
#[derive(Deserialize)]
struct WireLine<'a> {
    seq: Option<u64>,
    stream: Option<String>,
    revision: Option<u64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    timestamp: Option<i64>,
    id: Option<Uuid>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    data_b64: Option<&'a str>,
    next: Option<u64>,
    error: Option<WireError>,
}

pub(crate) enum Line {
    Event(RecordedEvent),
    /// The read is complete; where to continue (`None` for a backward
    /// stream read that reached revision 0).
    Next(Option<u64>),
    Error(Error),
}

/// One line; an event's JSON data is a slice of `line`, not a copy.
pub(crate) fn parse_line(line: &Bytes) -> Result<Line> {
    let w: WireLine = serde_json::from_slice(line).map_err(|e| Error::protocol(format!("unreadable line from the node: {e}")))?;
    if let Some(e) = w.error {
        return Ok(Line::Error(Error::from_wire(None, e, None)));
    }
    let Some(seq) = w.seq else { return Ok(Line::Next(w.next)) };
    let (Some(stream), Some(revision), Some(event_type)) = (w.stream, w.revision, w.event_type) else {
        return Err(Error::protocol(format!("event {seq} lacks its stream, revision or type")));
    };
    let (data, binary) = match (w.data, w.data_b64) {
        (_, Some(b)) => {
            let d = base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| Error::protocol(format!("event {seq}: bad base64: {e}")))?;
            (Bytes::from(d), true)
        }
        (Some(raw), None) => (line.slice_ref(raw.get().as_bytes()), false),
        (None, None) => (Bytes::from_static(b"null"), false),
    };
    Ok(Line::Event(RecordedEvent {
        seq,
        stream,
        revision,
        event_type,
        timestamp: w.timestamp.unwrap_or_default(),
        id: w.id,
        tags: w.tags.unwrap_or_default(),
        data,
        binary,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_read() {
        let e_line = br#"{"seq":7,"stream":"a/b","revision":2,"type":"T","timestamp":5,"id":null,"tags":{"k":"v"},"data":{"x":[1,2]}}"#;
        let Ok(Line::Event(e)) = parse_line(&Bytes::from_static(e_line)) else { panic!("an event") };
        assert_eq!((e.seq, e.stream.as_str(), e.revision, e.binary), (7, "a/b", 2, false));
        assert_eq!(e.json::<serde_json::Value>().unwrap(), serde_json::json!({"x": [1, 2]}));
        assert_eq!(e.tags.get("k").map(String::as_str), Some("v"));
        let b_line = br#"{"seq":8,"stream":"s","revision":0,"type":"B","timestamp":5,"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","tags":{},"data_b64":"AAEC"}"#;
        let Ok(Line::Event(b)) = parse_line(&Bytes::from_static(b_line)) else { panic!("an event") };
        assert_eq!((&b.data[..], b.binary), (&[0u8, 1, 2][..], true));
        assert!(b.json::<serde_json::Value>().is_err());
        assert!(matches!(parse_line(&Bytes::from_static(br#"{"next":9}"#)), Ok(Line::Next(Some(9)))));
        assert!(matches!(parse_line(&Bytes::from_static(br#"{"next":null}"#)), Ok(Line::Next(None))));
        let Ok(Line::Error(e)) = parse_line(&Bytes::from_static(br#"{"error":{"code":"storage_unavailable","message":"m"}}"#)) else { panic!("an error") };
        assert!(e.is_retry_safe());
        assert!(parse_line(&Bytes::from_static(b"{\"seq\":1}")).is_err());
        // Written back as it came.
        for line in [&e_line[..], &b_line[..]] {
            let Ok(Line::Event(ev)) = parse_line(&Bytes::from_static(line)) else { panic!("an event") };
            assert_eq!(serde_json::to_vec(&ev).unwrap(), line);
        }
        assert!(parse_line(&Bytes::from_static(b"not json")).is_err());
    }

    #[test]
    fn events_carry_ids_and_serialise_as_the_api_wants() {
        let a = EventData::json("T", &serde_json::json!({"n": 1})).unwrap().tag("k", "v");
        let b = EventData::json("T", &1).unwrap();
        assert_ne!(a.event_id(), b.event_id());
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["type"], "T");
        assert_eq!(v["data"], serde_json::json!({"n": 1}));
        assert_eq!(v["tags"]["k"], "v");
        assert_eq!(v["id"], a.event_id().to_string());
        let bin = serde_json::to_value(EventData::binary("B", [0u8, 255])).unwrap();
        assert_eq!(bin["data_b64"], "AP8=");
        assert!(bin.get("data").is_none());
        assert!(EventData::raw_json("T", "{oops").is_err());
    }
}
