//! Segments: `[block]* footer trailer`.
//!
//! The footer (postcard, CRC32C in the trailer) holds the block index, the
//! stream directory, the tag index, a stream-membership filter and filters of
//! the event ids. The 32-byte trailer is fixed:
//! `magic "CAIRNSEG" | version u32 | footer_len u32 | footer_crc u32 |
//! event_count u32 | footer_offset u64` (little endian).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use serde::{Deserialize, Serialize};

use crate::block::{encode_block, Codec, Event};
use crate::bloom::{Bloom, BloomHash};
use crate::codec::{le_u32, le_u64};
use crate::Error;

pub const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNSEG";
/// Segment format version. Persisted: bump on any change of layout. Version
/// 2 splits the footer so that its block and tag index (the *core*) can be
/// fetched alone; version 1 segments still decode.
pub const SEGMENT_VERSION: u32 = 2;
pub const TRAILER_LEN: usize = 32;
/// A footer larger than this is corruption (a roll-up of 256 MB of tiny events
/// stays far below).
pub const MAX_FOOTER_LEN: u32 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub offset: u64,
    pub len: u32,
    pub decoded_len: u32,
    pub first_index: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBlock {
    pub block: u32,
    /// The stream's first revision in that block.
    pub first_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub name: String,
    pub first_revision: u64,
    pub count: u32,
    pub blocks: Vec<StreamBlock>,
}

impl StreamEntry {
    pub fn last_revision(&self) -> u64 {
        self.first_revision + u64::from(self.count) - 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    pub key: String,
    pub value: String,
    pub blocks: Vec<u32>,
}

/// Ids of the events `first_index .. first_index + count`. A rolled-up segment
/// keeps the filters of the segments it was made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdFilter {
    pub first_index: u32,
    pub count: u32,
    pub filter: Bloom,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub event_count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub blocks: Vec<BlockMeta>,
    /// Sorted by name.
    pub streams: Vec<StreamEntry>,
    /// Sorted by (key, value).
    pub tags: Vec<TagEntry>,
    pub stream_filter: Bloom,
    pub id_filters: Vec<IdFilter>,
}

/// The part of a version 2 footer that scans and tag reads need: the blocks
/// and the tag index, fetched without the stream directory and filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreFooter {
    pub event_count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub blocks: Vec<BlockMeta>,
    /// Sorted by (key, value).
    pub tags: Vec<TagEntry>,
}

/// A footer's core as written: borrowed from the whole footer.
#[derive(Serialize)]
struct CoreRef<'a> {
    event_count: u32,
    min_ts: i64,
    max_ts: i64,
    blocks: &'a [BlockMeta],
    tags: &'a [TagEntry],
}

/// The rest of a version 2 footer: what stream reads, heads and id look-ups need.
#[derive(Serialize, Deserialize)]
struct Aux<S, F, I> {
    streams: S,
    stream_filter: F,
    id_filters: I,
}

fn block_of(blocks: &[BlockMeta], index: u32) -> Option<usize> {
    let i = blocks.partition_point(|b| b.first_index <= index);
    (i > 0 && index < blocks[i - 1].first_index + blocks[i - 1].count).then(|| i - 1)
}

fn tag_blocks<'a>(tags: &'a [TagEntry], key: &str, value: &str) -> &'a [u32] {
    match tags.binary_search_by(|t| (t.key.as_str(), t.value.as_str()).cmp(&(key, value))) {
        Ok(i) => &tags[i].blocks,
        Err(_) => &[],
    }
}

fn data_len(blocks: &[BlockMeta]) -> u64 {
    blocks.last().map_or(0, |b| b.offset + u64::from(b.len))
}

/// Checks blocks contiguous from 0 adding up to `event_count`, and tag
/// entries in range.
fn validate_core(event_count: u32, blocks: &[BlockMeta], tags: &[TagEntry], object: &str) -> Result<(), Error> {
    let bad = |why: String| Err(Error::Corrupt(format!("{object}: footer: {why}")));
    let mut offset = 0u64;
    let mut index = 0u32;
    for (i, b) in blocks.iter().enumerate() {
        if b.offset != offset || b.first_index != index || b.count == 0 {
            return bad(format!("block {i} out of place"));
        }
        let (Some(o), Some(x)) = (offset.checked_add(u64::from(b.len)), index.checked_add(b.count)) else {
            return bad("overflow".into());
        };
        (offset, index) = (o, x);
    }
    if index != event_count {
        return bad(format!("blocks hold {index} events, footer says {event_count}"));
    }
    let n = blocks.len() as u32;
    if tags.iter().any(|t| t.blocks.iter().any(|b| *b >= n)) {
        return bad("tag entry out of range".into());
    }
    Ok(())
}

impl CoreFooter {
    pub fn tag_blocks(&self, key: &str, value: &str) -> &[u32] {
        tag_blocks(&self.tags, key, value)
    }

    /// The block holding event `index`.
    pub fn block_of(&self, index: u32) -> Option<usize> {
        block_of(&self.blocks, index)
    }
}

impl Footer {
    /// The footer's core (blocks and tags), copied.
    pub fn core(&self) -> CoreFooter {
        CoreFooter { event_count: self.event_count, min_ts: self.min_ts, max_ts: self.max_ts, blocks: self.blocks.clone(), tags: self.tags.clone() }
    }

    pub fn stream(&self, name: &str) -> Option<&StreamEntry> {
        self.stream_hashed(name, BloomHash::of(name.as_bytes()))
    }

    /// [`Footer::stream`] with the name's filter hash computed once by the
    /// caller (who probes many footers with it).
    pub fn stream_hashed(&self, name: &str, h: BloomHash) -> Option<&StreamEntry> {
        if !self.stream_filter.may_contain(h) {
            return None;
        }
        self.streams
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.streams[i])
    }

    pub fn tag_blocks(&self, key: &str, value: &str) -> &[u32] {
        tag_blocks(&self.tags, key, value)
    }

    /// The index ranges whose id filter may hold `h`.
    pub fn id_candidates(&self, h: BloomHash) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.id_filters
            .iter()
            .filter(move |f| f.filter.may_contain(h))
            .map(|f| (f.first_index, f.count))
    }

    /// The block holding event `index`.
    pub fn block_of(&self, index: u32) -> Option<usize> {
        block_of(&self.blocks, index)
    }

    /// The bytes of the block region (everything before the footer).
    pub fn data_len(&self) -> u64 {
        data_len(&self.blocks)
    }

    fn validate(&self, object: &str) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Corrupt(format!("{object}: footer: {why}")));
        validate_core(self.event_count, &self.blocks, &self.tags, object)?;
        let n = self.blocks.len() as u32;
        for w in self.streams.windows(2) {
            if w[0].name >= w[1].name {
                return bad("stream directory not sorted".into());
            }
        }
        for s in &self.streams {
            if s.count == 0 || s.blocks.is_empty() || s.blocks.iter().any(|b| b.block >= n) {
                return bad(format!("stream {:?} entry out of range", s.name));
            }
            if s.first_revision.checked_add(u64::from(s.count)).is_none() {
                return bad("revision overflow".into());
            }
        }
        Ok(())
    }
}

/// Options for encoding segments.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    pub codec: Codec,
    pub zstd_level: i32,
    /// A block is closed once its events' data reach this many bytes.
    pub block_target: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { codec: Codec::Zstd, zstd_level: 1, block_target: 256 << 10 }
    }
}

/// A whole encoded segment.
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    pub bytes: Vec<u8>,
    pub footer_offset: u64,
    /// Footer plus trailer.
    pub footer_len: u32,
    /// The core (blocks and tags), its CRC and length, and the trailer: the
    /// last this-many bytes.
    pub core_len: u32,
    pub footer: Footer,
}

/// Encodes events that are consecutive in their store (the writer checked
/// expectations and assigned revisions).
pub fn encode_segment(events: &[Event], opts: &EncodeOptions) -> Result<EncodedSegment, Error> {
    if events.is_empty() {
        return Err(Error::Invalid("a segment holds at least one event".into()));
    }
    if events.len() > u32::MAX as usize / 2 {
        return Err(Error::Invalid("too many events for one segment".into()));
    }
    let mut bytes = Vec::with_capacity(events.iter().map(|e| e.data.len() + 16).sum::<usize>() / 2 + 1024);
    let mut blocks = Vec::new();
    // Hash maps while collecting (one look-up per event, and none while
    // the stream stays the same), sorted once at the end.
    let mut stream_ix: HashMap<&str, usize> = HashMap::new();
    let mut streams: Vec<StreamEntry> = Vec::new();
    let mut tags: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut size = 0;
        while end < events.len() && (end == start || size < opts.block_target) {
            size += events[end].data.len() + events[end].stream.len() + 16;
            end += 1;
        }
        let chunk = &events[start..end];
        let block = blocks.len() as u32;
        let frame = encode_block(chunk, opts.codec, opts.zstd_level)?;
        let decoded_len = le_u32(&frame, 1);
        let mut last: Option<(&str, usize)> = None;
        for e in chunk {
            let i = match last {
                Some((name, i)) if name == &*e.stream => i,
                _ => *stream_ix.entry(&e.stream).or_insert_with(|| {
                    streams.push(StreamEntry { name: e.stream.to_string(), first_revision: e.revision, count: 0, blocks: Vec::new() });
                    streams.len() - 1
                }),
            };
            last = Some((&e.stream, i));
            let entry = &mut streams[i];
            if e.revision != entry.first_revision + u64::from(entry.count) {
                return Err(Error::Invalid(format!("stream {:?}: revisions not consecutive", e.stream)));
            }
            entry.count += 1;
            if entry.blocks.last().is_none_or(|b| b.block != block) {
                entry.blocks.push(StreamBlock { block, first_revision: e.revision });
            }
            for (k, v) in &e.tags {
                let bl = tags.entry((k, v)).or_default();
                if bl.last() != Some(&block) {
                    bl.push(block);
                }
            }
        }
        blocks.push(BlockMeta {
            offset: bytes.len() as u64,
            len: frame.len() as u32,
            decoded_len,
            first_index: start as u32,
            count: chunk.len() as u32,
            min_ts: chunk.iter().map(|e| e.timestamp).min().unwrap_or(0),
            max_ts: chunk.iter().map(|e| e.timestamp).max().unwrap_or(0),
        });
        bytes.extend_from_slice(&frame);
        start = end;
    }
    let ids: Vec<&[u8]> = events.iter().filter_map(|e| e.id.as_ref().map(|i| &i[..])).collect();
    let id_filters = if ids.is_empty() {
        Vec::new()
    } else {
        vec![IdFilter { first_index: 0, count: events.len() as u32, filter: Bloom::from_items(ids.into_iter()) }]
    };
    let footer = Footer {
        event_count: events.len() as u32,
        min_ts: blocks.iter().map(|b| b.min_ts).min().unwrap_or(0),
        max_ts: blocks.iter().map(|b| b.max_ts).max().unwrap_or(0),
        blocks,
        stream_filter: Bloom::from_items(streams.iter().map(|s| s.name.as_bytes()).collect::<Vec<_>>().into_iter()),
        streams: {
            streams.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            streams
        },
        tags: {
            let mut t: Vec<TagEntry> =
                tags.into_iter().map(|((k, v), blocks)| TagEntry { key: k.to_string(), value: v.to_string(), blocks }).collect();
            t.sort_unstable_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
            t
        },
        id_filters,
    };
    let footer_offset = bytes.len() as u64;
    let tail = encode_footer(&footer, footer_offset)?;
    let (footer_len, core_len) = (tail.len() as u32, core_tail_len(&tail));
    bytes.extend_from_slice(&tail);
    Ok(EncodedSegment { bytes, footer_offset, footer_len, core_len, footer })
}

/// Bytes after the core in a version 2 footer: its CRC32C and its length.
const CORE_END: usize = 8;

/// Footer and trailer bytes for a footer placed at `footer_offset`:
/// `aux core core_crc core_len` then the trailer. The last
/// [`core_tail_len`] bytes hold the core alone.
pub fn encode_footer(footer: &Footer, footer_offset: u64) -> Result<Vec<u8>, Error> {
    let bad = |e: postcard::Error| Error::Invalid(format!("footer: {e}"));
    let aux = Aux { streams: &footer.streams, stream_filter: &footer.stream_filter, id_filters: &footer.id_filters };
    let mut body = postcard::to_stdvec(&aux).map_err(bad)?;
    let core = CoreRef { event_count: footer.event_count, min_ts: footer.min_ts, max_ts: footer.max_ts, blocks: &footer.blocks, tags: &footer.tags };
    let core = postcard::to_stdvec(&core).map_err(bad)?;
    body.extend_from_slice(&core);
    body.extend_from_slice(&crc32c::crc32c(&core).to_le_bytes());
    body.extend_from_slice(&(core.len() as u32).to_le_bytes());
    encode_tail(body, SEGMENT_MAGIC, SEGMENT_VERSION, footer.event_count, footer_offset)
}

/// How many bytes at the end of an encoded footer (`encode_footer`'s
/// output) hold the core, its CRC and length, and the trailer: what a
/// reader of the core alone fetches.
pub fn core_tail_len(tail: &[u8]) -> u32 {
    let at = tail.len().saturating_sub(TRAILER_LEN + 4);
    let core = tail.get(at..at + 4).map_or(0, |b| le_u32(b, 0));
    core.saturating_add((CORE_END + TRAILER_LEN) as u32)
}

/// Appends the 32-byte trailer to a footer body (segments and index objects).
pub(crate) fn encode_tail(mut body: Vec<u8>, magic: &[u8; 8], version: u32, event_count: u32, footer_offset: u64) -> Result<Vec<u8>, Error> {
    if body.len() > MAX_FOOTER_LEN as usize {
        return Err(Error::Invalid(format!("footer of {} bytes is too large", body.len())));
    }
    let len = body.len() as u32;
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(magic);
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&crc.to_le_bytes());
    body.extend_from_slice(&event_count.to_le_bytes());
    body.extend_from_slice(&footer_offset.to_le_bytes());
    Ok(body)
}

/// What a trailer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The format version, from 1 to the newest this code reads.
    pub version: u32,
    pub footer_len: u32,
    pub footer_crc: u32,
    pub event_count: u32,
    pub footer_offset: u64,
}

impl Trailer {
    /// Footer plus trailer.
    pub fn tail_len(&self) -> u64 {
        u64::from(self.footer_len) + TRAILER_LEN as u64
    }
}

/// Reads a trailer of any version from 1 to `newest`.
pub(crate) fn decode_trailer_with(b: &[u8], magic: &[u8; 8], newest: u32, object: &str) -> Result<Trailer, Error> {
    if b.len() != TRAILER_LEN {
        return Err(Error::Corrupt(format!("{object}: trailer is {} bytes, not {TRAILER_LEN}", b.len())));
    }
    if &b[..8] != magic {
        return Err(Error::Corrupt(format!("{object}: bad magic")));
    }
    let v = le_u32(b, 8);
    if v == 0 || v > newest {
        return Err(Error::Corrupt(format!("{object}: unsupported format version {v}")));
    }
    let t = Trailer { version: v, footer_len: le_u32(b, 12), footer_crc: le_u32(b, 16), event_count: le_u32(b, 20), footer_offset: le_u64(b, 24) };
    if t.footer_len > MAX_FOOTER_LEN {
        return Err(Error::Corrupt(format!("{object}: footer length {} too large", t.footer_len)));
    }
    Ok(t)
}

/// Reads a segment trailer (the last 32 bytes of the object).
pub fn decode_trailer(b: &[u8], object: &str) -> Result<Trailer, Error> {
    decode_trailer_with(b, SEGMENT_MAGIC, SEGMENT_VERSION, object)
}

/// Splits `tail` (footer + trailer) and checks it: the trailer, the CRC, and
/// that the footer sits at `footer_offset` when the caller knows it.
pub(crate) fn split_tail<'a>(
    tail: &'a [u8],
    magic: &[u8; 8],
    newest: u32,
    footer_offset: Option<u64>,
    object: &str,
) -> Result<(Trailer, &'a [u8]), Error> {
    if tail.len() < TRAILER_LEN {
        return Err(Error::Corrupt(format!("{object}: truncated ({} bytes)", tail.len())));
    }
    let t = decode_trailer_with(&tail[tail.len() - TRAILER_LEN..], magic, newest, object)?;
    if t.tail_len() != tail.len() as u64 {
        return Err(Error::Corrupt(format!("{object}: footer length {} does not match the {} bytes read", t.footer_len, tail.len())));
    }
    if footer_offset.is_some_and(|o| o != t.footer_offset) {
        return Err(Error::Corrupt(format!("{object}: footer offset does not match the reference to it")));
    }
    let body = &tail[..t.footer_len as usize];
    if crc32c::crc32c(body) != t.footer_crc {
        return Err(Error::Corrupt(format!("{object}: footer checksum mismatch")));
    }
    Ok((t, body))
}

/// Splits a version 2 footer body into (aux, core), checking the core's CRC.
fn split_core<'a>(body: &'a [u8], object: &str) -> Result<(&'a [u8], &'a [u8]), Error> {
    let bad = |why: &str| Error::Corrupt(format!("{object}: footer: {why}"));
    let n = body.len().checked_sub(CORE_END).ok_or_else(|| bad("too short for a core"))?;
    let (crc, len) = (le_u32(body, n), le_u32(body, n + 4) as usize);
    let start = n.checked_sub(len).ok_or_else(|| bad("core length out of range"))?;
    let core = &body[start..n];
    if crc32c::crc32c(core) != crc {
        return Err(bad("core checksum mismatch"));
    }
    Ok((&body[..start], core))
}

/// Decodes and checks a footer's core from the last bytes of a version 2
/// segment (`core_tail_len` of them: core, CRC, length, trailer), which
/// belongs to a segment whose footer starts at `footer_offset` when known.
pub fn decode_core(tail: &[u8], footer_offset: Option<u64>, object: &str) -> Result<CoreFooter, Error> {
    let bad = |why: String| Error::Corrupt(format!("{object}: footer core: {why}"));
    let n = tail.len().checked_sub(TRAILER_LEN).ok_or_else(|| bad(format!("truncated ({} bytes)", tail.len())))?;
    let t = decode_trailer(&tail[n..], object)?;
    if t.version < 2 {
        return Err(bad("a version 1 segment has no core of its own".into()));
    }
    if footer_offset.is_some_and(|o| o != t.footer_offset) {
        return Err(bad("footer offset does not match the reference to it".into()));
    }
    let (_, core) = split_core(&tail[..n], object)?;
    if core.len() + CORE_END != n || n > t.footer_len as usize {
        return Err(bad(format!("{} bytes read, the core says {}", tail.len(), core.len() + CORE_END + TRAILER_LEN)));
    }
    let c: CoreFooter = postcard::from_bytes(core).map_err(|e| bad(e.to_string()))?;
    validate_core(c.event_count, &c.blocks, &c.tags, object)?;
    if c.event_count != t.event_count || data_len(&c.blocks) != t.footer_offset {
        return Err(bad("disagrees with the trailer".into()));
    }
    Ok(c)
}

/// Decodes and checks a segment footer from `tail` (footer + trailer), of
/// version 1 or 2.
pub fn decode_footer(tail: &[u8], footer_offset: Option<u64>, object: &str) -> Result<Footer, Error> {
    let (t, body) = split_tail(tail, SEGMENT_MAGIC, SEGMENT_VERSION, footer_offset, object)?;
    let bad = |e: postcard::Error| Error::Corrupt(format!("{object}: footer: {e}"));
    let footer: Footer = match t.version {
        1 => postcard::from_bytes(body).map_err(bad)?,
        _ => {
            let (aux, core) = split_core(body, object)?;
            let aux: Aux<Vec<StreamEntry>, Bloom, Vec<IdFilter>> = postcard::from_bytes(aux).map_err(bad)?;
            let c: CoreFooter = postcard::from_bytes(core).map_err(bad)?;
            Footer { event_count: c.event_count, min_ts: c.min_ts, max_ts: c.max_ts, blocks: c.blocks, streams: aux.streams, tags: c.tags, stream_filter: aux.stream_filter, id_filters: aux.id_filters }
        }
    };
    footer.validate(object)?;
    if footer.event_count != t.event_count || footer.data_len() != t.footer_offset {
        return Err(Error::Corrupt(format!("{object}: footer disagrees with trailer")));
    }
    Ok(footer)
}

/// One input of a roll-up: a segment's footer, placed at `byte_offset` and
/// `index_offset` in the merged segment.
pub struct MergeInput<'a> {
    pub footer: &'a Footer,
    pub byte_offset: u64,
    pub index_offset: u32,
}

/// The footer of a segment made by concatenating the block regions of
/// consecutive segments. Blocks are copied as they are: they hold no seqs.
pub fn merge_footers(inputs: &[MergeInput<'_>]) -> Result<Footer, Error> {
    let mut blocks = Vec::new();
    let mut streams: BTreeMap<String, StreamEntry> = BTreeMap::new();
    let mut tags: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    let mut id_filters = Vec::new();
    let mut event_count = 0u32;
    for input in inputs {
        let f = input.footer;
        if input.index_offset != event_count {
            return Err(Error::Invalid("roll-up inputs are not consecutive".into()));
        }
        let block_shift = blocks.len() as u32;
        for b in &f.blocks {
            blocks.push(BlockMeta { offset: b.offset + input.byte_offset, first_index: b.first_index + input.index_offset, ..b.clone() });
        }
        for s in &f.streams {
            let shifted = s.blocks.iter().map(|b| StreamBlock { block: b.block + block_shift, first_revision: b.first_revision });
            match streams.get_mut(&s.name) {
                Some(e) => {
                    if s.first_revision != e.first_revision + u64::from(e.count) {
                        return Err(Error::Invalid(format!("stream {:?}: revisions not consecutive in roll-up", s.name)));
                    }
                    e.count += s.count;
                    e.blocks.extend(shifted);
                }
                None => {
                    streams.insert(s.name.clone(), StreamEntry { blocks: shifted.collect(), ..s.clone() });
                }
            }
        }
        for t in &f.tags {
            tags.entry((t.key.clone(), t.value.clone()))
                .or_default()
                .extend(t.blocks.iter().map(|b| b + block_shift));
        }
        for idf in &f.id_filters {
            id_filters.push(IdFilter { first_index: idf.first_index + input.index_offset, ..idf.clone() });
        }
        event_count = event_count
            .checked_add(f.event_count)
            .ok_or_else(|| Error::Invalid("too many events for one segment".into()))?;
    }
    Ok(Footer {
        event_count,
        min_ts: blocks.iter().map(|b| b.min_ts).min().unwrap_or(0),
        max_ts: blocks.iter().map(|b| b.max_ts).max().unwrap_or(0),
        blocks,
        stream_filter: Bloom::from_items(streams.keys().map(|s| s.as_bytes()).collect::<Vec<_>>().into_iter()),
        streams: streams.into_values().collect(),
        tags: tags.into_iter().map(|((key, value), blocks)| TagEntry { key, value, blocks }).collect(),
        id_filters,
    })
}
