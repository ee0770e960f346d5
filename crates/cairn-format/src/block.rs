//! Blocks: runs of consecutive events, each decodable alone.
//!
//! On disk a block is a 13-byte header and a payload:
//! `codec u8 | decoded_len u32 | stored_len u32 | crc32c u32` (little endian;
//! the CRC covers the first 9 header bytes and the stored payload). The
//! decoded payload carries its own dictionaries of stream names, types and tag
//! strings, so no other block is needed to read it. Seqs are not stored: an
//! event's seq is its segment's base seq plus its index in the segment.

use std::sync::Arc;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};

use crate::codec::{le_u32, put_bytes, put_varint, put_zigzag, Cursor};
use crate::Error;

/// Block codecs. Persisted: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    None = 0,
    Lz4 = 1,
    Zstd = 2,
}

impl Codec {
    pub(crate) fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

pub const BLOCK_HEADER_LEN: usize = 13;
/// No block decodes to more than this; a larger length is corruption.
pub const MAX_BLOCK_DECODED: u32 = 160 << 20;

/// Event flags. Persisted: never renumber.
const FLAG_ID: u8 = 1;
const FLAG_TAGS: u8 = 2;
const FLAG_BINARY: u8 = 4;

/// One event as stored. `data` holds JSON text, or raw bytes when `binary`.
/// Stream and type names are shared (`Arc<str>`): a decoded block holds one
/// copy of each, as its dictionaries do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub stream: Arc<str>,
    pub revision: u64,
    pub event_type: Arc<str>,
    pub timestamp: i64,
    pub id: Option<[u8; 16]>,
    pub tags: Vec<(String, String)>,
    pub binary: bool,
    pub data: Bytes,
}

/// An event read back, with its index in its segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedEvent {
    pub index: u32,
    pub event: Event,
}

/// Encodes `events` (whose index in the segment starts at `first_index`) as
/// one framed block. Events of one stream must have consecutive revisions.
pub fn encode_block(events: &[Event], codec: Codec, zstd_level: i32) -> Result<Vec<u8>, Error> {
    let mut streams: Vec<(&str, u64)> = Vec::new();
    let mut stream_ix: HashMap<&str, usize> = HashMap::new();
    let mut types: Vec<&str> = Vec::new();
    let mut type_ix: HashMap<&str, usize> = HashMap::new();
    let mut strings: Vec<&str> = Vec::new();
    let mut string_ix: HashMap<&str, usize> = HashMap::new();
    let mut body = Vec::with_capacity(events.iter().map(|e| e.data.len() + 8).sum());
    let base_ts = events.first().map_or(0, |e| e.timestamp);
    let mut prev_ts = base_ts;
    let mut next_rev: Vec<u64> = Vec::new();
    let mut last: Option<(&str, usize)> = None;
    for e in events {
        // Runs of one stream (the usual batch) skip the look-up.
        let si = match last {
            Some((name, i)) if name == &*e.stream => i,
            _ => *stream_ix.entry(&e.stream).or_insert_with(|| {
                streams.push((&e.stream, e.revision));
                next_rev.push(e.revision);
                streams.len() - 1
            }),
        };
        last = Some((&e.stream, si));
        if e.revision != next_rev[si] {
            return Err(Error::Invalid(format!("stream {:?}: revision {} where {} was next", e.stream, e.revision, next_rev[si])));
        }
        next_rev[si] += 1;
        let ti = *type_ix.entry(&e.event_type).or_insert_with(|| {
            types.push(&e.event_type);
            types.len() - 1
        });
        let mut flags = 0;
        if e.id.is_some() {
            flags |= FLAG_ID;
        }
        if !e.tags.is_empty() {
            flags |= FLAG_TAGS;
        }
        if e.binary {
            flags |= FLAG_BINARY;
        }
        body.push(flags);
        put_varint(&mut body, si as u64);
        put_varint(&mut body, ti as u64);
        put_zigzag(&mut body, e.timestamp.wrapping_sub(prev_ts));
        prev_ts = e.timestamp;
        if let Some(id) = &e.id {
            body.extend_from_slice(id);
        }
        if !e.tags.is_empty() {
            put_varint(&mut body, e.tags.len() as u64);
            for (k, v) in &e.tags {
                for s in [k.as_str(), v.as_str()] {
                    let i = *string_ix.entry(s).or_insert_with(|| {
                        strings.push(s);
                        strings.len() - 1
                    });
                    put_varint(&mut body, i as u64);
                }
            }
        }
        put_bytes(&mut body, &e.data);
    }
    let mut raw = Vec::with_capacity(body.len() + 64 * streams.len() + 16);
    put_varint(&mut raw, events.len() as u64);
    put_zigzag(&mut raw, base_ts);
    put_varint(&mut raw, streams.len() as u64);
    for (name, first) in &streams {
        put_bytes(&mut raw, name.as_bytes());
        put_varint(&mut raw, *first);
    }
    put_varint(&mut raw, types.len() as u64);
    for t in &types {
        put_bytes(&mut raw, t.as_bytes());
    }
    put_varint(&mut raw, strings.len() as u64);
    for s in &strings {
        put_bytes(&mut raw, s.as_bytes());
    }
    raw.extend_from_slice(&body);
    if raw.len() > MAX_BLOCK_DECODED as usize {
        return Err(Error::Invalid(format!("block of {} bytes exceeds {MAX_BLOCK_DECODED}", raw.len())));
    }
    frame(&raw, codec, zstd_level)
}

/// Decodes one framed block whose first event has index `first_index` in its
/// segment. `object` names the object in errors.
pub fn decode_block(frame: &[u8], first_index: u32, object: &str) -> Result<Vec<DecodedEvent>, Error> {
    let events = decode_block_events(frame, object)?;
    if first_index.checked_add(events.len() as u32).is_none() {
        return Err(Error::Corrupt(format!("{object}: event index overflows")));
    }
    Ok(events.into_iter().zip(first_index..).map(|(event, index)| DecodedEvent { index, event }).collect())
}

/// Decodes one framed block into its events, in order. The events' data
/// are slices of one buffer holding the decoded block (one allocation for
/// the block, not one per event).
pub fn decode_block_events(frame: &[u8], object: &str) -> Result<Vec<Event>, Error> {
    let raw = Bytes::from(unframe(frame, object, "block")?.into_owned());
    let mut out = Vec::with_capacity(Cursor::new(&raw, "payload").varint().unwrap_or(0).min(raw.len() as u64 / 5) as usize);
    decode_payload(&raw, None, |_, e| out.push(e)).map_err(|e| Error::Corrupt(format!("{object}: block: {e}")))?;
    Ok(out)
}

/// The events of one stream in a framed block, each with its position in
/// the block. The block's other events are walked and checked, not built:
/// a read of one stream among thousands in a block costs a fraction of
/// decoding the block.
pub fn decode_block_stream(frame: &[u8], object: &str, stream: &str) -> Result<Vec<(u32, Event)>, Error> {
    let raw = Bytes::from(unframe(frame, object, "block")?.into_owned());
    let mut out = Vec::new();
    decode_payload(&raw, Some(stream), |i, e| out.push((i, e))).map_err(|e| Error::Corrupt(format!("{object}: block: {e}")))?;
    Ok(out)
}

/// Frames `raw` (blocks and index pages alike): the 13-byte header, then
/// the payload, compressed unless that does not make it smaller.
pub(crate) fn frame(raw: &[u8], codec: Codec, zstd_level: i32) -> Result<Vec<u8>, Error> {
    if raw.len() > MAX_BLOCK_DECODED as usize {
        return Err(Error::Invalid(format!("a frame of {} bytes exceeds {MAX_BLOCK_DECODED}", raw.len())));
    }
    let (codec, stored) = compress(raw, codec, zstd_level)?;
    let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + stored.len());
    out.push(codec as u8);
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &stored);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&stored);
    Ok(out)
}

/// `raw` compressed with `codec`, or `raw` itself (codec none) when that
/// does not make it smaller.
pub(crate) fn compress(raw: &[u8], codec: Codec, zstd_level: i32) -> Result<(Codec, std::borrow::Cow<'_, [u8]>), Error> {
    let compressed = match codec {
        Codec::None => None,
        Codec::Lz4 => Some(lz4_flex::block::compress(raw)),
        Codec::Zstd => Some(zstd_compress(raw, zstd_level).map_err(|e| Error::Invalid(format!("zstd: {e}")))?),
    };
    Ok(match compressed {
        Some(c) if c.len() < raw.len() => (codec, c.into()),
        _ => (Codec::None, raw.into()),
    })
}

/// Decompresses `stored` to exactly `decoded_len` bytes (at most
/// [`MAX_BLOCK_DECODED`]); `err` names what is corrupt.
pub(crate) fn decompress<'a>(codec: Codec, stored: &'a [u8], decoded_len: u32, err: impl Fn(String) -> Error) -> Result<std::borrow::Cow<'a, [u8]>, Error> {
    if decoded_len > MAX_BLOCK_DECODED {
        return Err(err(format!("decoded length {decoded_len} too large")));
    }
    let raw: std::borrow::Cow<[u8]> = match codec {
        Codec::None => stored.into(),
        Codec::Lz4 => lz4_flex::block::decompress(stored, decoded_len as usize).map_err(|e| err(format!("lz4: {e}")))?.into(),
        Codec::Zstd => zstd_decompress(stored, decoded_len as usize).map_err(|e| err(format!("zstd: {e}")))?.into(),
    };
    if raw.len() != decoded_len as usize {
        return Err(err("decoded length mismatch".into()));
    }
    Ok(raw)
}

thread_local! {
    /// One zstd context per thread and level, not one per frame: making a
    /// context costs more than compressing a small column.
    static ZSTD_C: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn zstd_compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(raw),
            None => zstd::bulk::compress(raw, level),
        }
    })
}

fn zstd_decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress(stored, capacity),
            None => zstd::bulk::decompress(stored, capacity),
        }
    })
}

/// Checks a frame (lengths, CRC32C, codec) and returns its decoded payload.
pub(crate) fn unframe<'a>(frame: &'a [u8], object: &str, what: &str) -> Result<std::borrow::Cow<'a, [u8]>, Error> {
    let err = |why: String| Error::Corrupt(format!("{object}: {what}: {why}"));
    if frame.len() < BLOCK_HEADER_LEN {
        return Err(err("truncated header".into()));
    }
    let codec = Codec::from_u8(frame[0]).ok_or_else(|| err(format!("unknown codec {}", frame[0])))?;
    let decoded_len = le_u32(frame, 1);
    let stored_len = le_u32(frame, 5) as usize;
    let crc = le_u32(frame, 9);
    if frame.len() != BLOCK_HEADER_LEN + stored_len {
        return Err(err(format!("frame is {} bytes, header says {}", frame.len(), BLOCK_HEADER_LEN + stored_len)));
    }
    let stored = &frame[BLOCK_HEADER_LEN..];
    if crc32c::crc32c_append(crc32c::crc32c(&frame[..9]), stored) != crc {
        return Err(err("checksum mismatch".into()));
    }
    decompress(codec, stored, decoded_len, err)
}

/// Decodes a block's payload, all of it checked, handing each event and
/// its position to `keep` (their data are slices of `raw`); with `only`,
/// just the events of that stream (the others are checked as strictly,
/// but nothing of theirs is built).
fn decode_payload(raw: &Bytes, only: Option<&str>, mut keep: impl FnMut(u32, Event)) -> Result<(), Error> {
    let mut c = Cursor::new(raw, "payload");
    // Every event takes at least 5 bytes (flags, stream, type, ts, data len).
    let n = c.count(5)?;
    let base_ts = c.zigzag()?;
    let ns = c.count(2)?;
    // The streams wanted (all, or `only`), by index, and every stream's
    // next revision.
    let mut streams: Vec<Option<Arc<str>>> = Vec::with_capacity(ns);
    let mut next_rev = Vec::with_capacity(ns);
    let mut names = foldhash::HashSet::default();
    for _ in 0..ns {
        let name = c.str()?;
        let wanted = only.is_none_or(|o| o == name);
        // A stream listed twice would number its events twice over.
        if !names.insert(name) {
            return Err(Error::Corrupt(format!("stream {name:?} listed twice")));
        }
        streams.push(wanted.then(|| Arc::<str>::from(name)));
        next_rev.push(c.varint()?);
    }
    let nt = c.count(1)?;
    let mut types = Vec::with_capacity(nt);
    for _ in 0..nt {
        types.push(Arc::<str>::from(c.str()?));
    }
    let nstr = c.count(1)?;
    let mut strings = Vec::with_capacity(nstr);
    for _ in 0..nstr {
        strings.push(c.str()?);
    }
    let mut ts = base_ts;
    for i in 0..n {
        let flags = c.u8()?;
        if flags & !(FLAG_ID | FLAG_TAGS | FLAG_BINARY) != 0 {
            return Err(Error::Corrupt(format!("event {i}: unknown flags {flags:#x}")));
        }
        let si = c.varint()? as usize;
        let ti = c.varint()? as usize;
        let stream = streams.get(si).ok_or_else(|| Error::Corrupt(format!("event {i}: stream index {si}")))?;
        let event_type = types.get(ti).ok_or_else(|| Error::Corrupt(format!("event {i}: type index {ti}")))?;
        ts = ts.wrapping_add(c.zigzag()?);
        let id = if flags & FLAG_ID != 0 { Some(c.array::<16>()?) } else { None };
        let mut tags = Vec::new();
        if flags & FLAG_TAGS != 0 {
            let nt = c.count(2)?;
            for _ in 0..nt {
                let mut kv = ["", ""];
                for s in &mut kv {
                    let ix = c.varint()? as usize;
                    *s = strings.get(ix).ok_or_else(|| Error::Corrupt(format!("event {i}: tag string {ix}")))?;
                }
                if stream.is_some() {
                    tags.push((kv[0].to_string(), kv[1].to_string()));
                }
            }
        }
        let data = c.bytes()?;
        let revision = next_rev[si];
        next_rev[si] = revision.checked_add(1).ok_or_else(|| Error::Corrupt(format!("event {i}: revision overflows")))?;
        if let Some(stream) = stream {
            keep(i as u32, Event { stream: stream.clone(), revision, event_type: event_type.clone(), timestamp: ts, id, tags, binary: flags & FLAG_BINARY != 0, data: raw.slice_ref(data) });
        }
    }
    if c.remaining() != 0 {
        return Err(Error::Corrupt(format!("{} trailing bytes", c.remaining())));
    }
    Ok(())
}
