//! Archives: immutable, self-describing files of history.
//!
//! An archive holds events grouped by *space* (the stream by default, or the
//! value of a chosen tag), within a space by an optional *grouping* (the
//! value of another key), and within a grouping by timestamp (then seq).
//! That order gives every event an *ordinal*, its place in the archive.
//! Secondary indexes on chosen keys map (key, value, space) to the ordinals
//! of the events that carry the value, so one value of one space, or of the
//! whole archive, is read without the rest.
//!
//! `[block]* [space page]* [posting page]* footer trailer`. A block is two
//! frames: the events' metadata in columns (compressed apart, so the columns
//! of small numbers cost almost nothing), then their data, concatenated.
//! Pages and blocks are framed like segment blocks (codec, lengths, CRC32C).
//! The byte layout is in docs/FORMAT.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};

use crate::block::{frame, unframe, Codec, Event};
use crate::bloom::{Bloom, BloomHash};
use crate::codec::{put_bytes, put_varint, put_zigzag, Cursor};
use crate::segment::{encode_tail, split_tail, Trailer};
use crate::Error;

pub const ARCHIVE_MAGIC: &[u8; 8] = b"CAIRNARC";
pub const ARCHIVE_VERSION: u32 = 1;
/// Pages (space directory, postings) close past this many encoded bytes.
const PAGE_BYTES: usize = 64 << 10;
/// A posting entry holds at most this many ordinals; a longer list goes on
/// in the next entry.
const POSTING_CHUNK: usize = 16 << 10;

/// Event flags in a block's flag column. Persisted: never renumber.
const FLAG_ID: u8 = 1;
const FLAG_TAGS: u8 = 2;
const FLAG_BINARY: u8 = 4;

/// What a space, a grouping or an index is keyed by. Persisted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// The event's stream.
    Stream,
    /// The event's type.
    Type,
    /// The value of this tag key (an event without it has the value "").
    Tag(String),
}

impl Key {
    /// `event`'s value of this key.
    pub fn of<'a>(&self, event: &'a Event) -> &'a str {
        match self {
            Key::Stream => &event.stream,
            Key::Type => &event.event_type,
            Key::Tag(k) => event.tags.iter().find(|(t, _)| t == k).map_or("", |(_, v)| v.as_str()),
        }
    }

    /// The values `event` has for this key: a tag key may be given more
    /// than once; an event without the tag has none.
    fn values<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a str> + 'a {
        let one = match self {
            Key::Stream => Some(&*event.stream),
            Key::Type => Some(&*event.event_type),
            Key::Tag(_) => None,
        };
        let tags = event.tags.iter().filter(move |(t, _)| matches!(self, Key::Tag(k) if k == t)).map(|(_, v)| v.as_str());
        one.into_iter().chain(tags)
    }
}

/// One event of an archive: an event and its seq in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedEvent {
    pub seq: u64,
    pub event: Event,
}

#[derive(Clone, Debug)]
pub struct ArchiveOptions {
    /// What events are grouped by: `Key::Stream` unless another is chosen.
    pub space: Key,
    /// An optional grouping within a space, before the timestamp order.
    pub grouping: Option<Key>,
    /// The keys with a secondary index.
    pub indexes: Vec<Key>,
    /// A block closes once its events' data passes this many bytes ...
    pub block_bytes: usize,
    /// ... or it holds this many events.
    pub block_events: usize,
    /// The codec of metadata columns and pages.
    pub meta_codec: Codec,
    /// The codec of event data.
    pub data_codec: Codec,
    pub zstd_level: i32,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            space: Key::Stream,
            grouping: None,
            indexes: vec![Key::Type],
            block_bytes: 16 << 10,
            block_events: 1024,
            meta_codec: Codec::Zstd,
            data_codec: Codec::Zstd,
            zstd_level: 3,
        }
    }
}

/// Where a block is: its metadata frame at `offset`, its data frame right
/// after it; `first` is the ordinal of its first event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveBlock {
    pub offset: u64,
    pub meta_len: u32,
    pub data_len: u32,
    pub first: u64,
    pub count: u32,
}

impl ArchiveBlock {
    pub fn len(&self) -> u64 {
        u64::from(self.meta_len) + u64::from(self.data_len)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn end(&self) -> u64 {
        self.first + u64::from(self.count)
    }
}

/// One space: its events are the ordinals `first..first + count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub key: String,
    pub first: u64,
    pub count: u64,
    /// The space's groupings in order, each with its count (empty when the
    /// archive has no grouping).
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub value: String,
    pub count: u64,
}

impl Space {
    /// The ordinals of one grouping's events; the whole space for `None`.
    pub fn range(&self, group: Option<&str>) -> Option<std::ops::Range<u64>> {
        let Some(g) = group else { return Some(self.first..self.first + self.count) };
        let mut at = self.first;
        for x in &self.groups {
            if x.value == g {
                return Some(at..at + x.count);
            }
            at += x.count;
        }
        None
    }
}

/// The ordinals of the events of one space that have `value` for `key`,
/// relative to the space's first ordinal: varint deltas, the first from 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub key: Key,
    pub value: String,
    /// The space's index in the directory.
    pub space: u64,
    pub ordinals: Vec<u8>,
}

impl Posting {
    /// The ordinals, relative to the space's first.
    pub fn decode(&self, object: &str) -> Result<Vec<u64>, Error> {
        let mut c = Cursor::new(&self.ordinals, "posting");
        let mut out = Vec::new();
        let mut at: u64 = 0;
        while c.remaining() > 0 {
            let d = c.varint()?;
            at = if out.is_empty() { d } else { at.checked_add(d).and_then(|v| v.checked_add(1)).ok_or_else(|| Error::Corrupt(format!("{object}: posting overflows")))? };
            out.push(at);
        }
        Ok(out)
    }
}

/// Where a page of the space directory is, and the keys it runs between.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpacePage {
    pub first: String,
    pub last: String,
    /// The directory index of its first space.
    pub first_index: u64,
    pub offset: u64,
    pub len: u32,
}

/// Where a page of postings is, and the (key, value, space) it runs between.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostingPage {
    pub first: (Key, String, u64),
    pub last: (Key, String, u64),
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFooter {
    pub event_count: u64,
    /// The lowest seq and one past the highest.
    pub first_seq: u64,
    pub end_seq: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub space: Key,
    pub grouping: Option<Key>,
    pub indexes: Vec<Key>,
    pub blocks: Vec<ArchiveBlock>,
    pub space_pages: Vec<SpacePage>,
    pub space_count: u64,
    pub space_filter: Bloom,
    pub posting_pages: Vec<PostingPage>,
    /// Every (key, value) pair indexed, as `key-tag \0 value`.
    pub value_filter: Bloom,
}

fn value_item(key: &Key, value: &str) -> Vec<u8> {
    let mut item = match key {
        Key::Stream => b"s".to_vec(),
        Key::Type => b"y".to_vec(),
        Key::Tag(k) => [b"t", k.as_bytes()].concat(),
    };
    item.push(0);
    item.extend_from_slice(value.as_bytes());
    item
}

impl ArchiveFooter {
    /// The block holding `ordinal`.
    pub fn block_of(&self, ordinal: u64) -> Option<usize> {
        let i = self.blocks.partition_point(|b| b.first <= ordinal);
        (i > 0 && ordinal < self.blocks[i - 1].end()).then(|| i - 1)
    }

    /// The page that may hold space `key`, if the filter lets it through.
    pub fn space_page_for(&self, key: &str) -> Option<usize> {
        if !self.space_filter.may_contain(BloomHash::of(key.as_bytes())) {
            return None;
        }
        let i = self.space_pages.partition_point(|p| p.last.as_str() < key);
        (i < self.space_pages.len() && self.space_pages[i].first.as_str() <= key).then_some(i)
    }

    /// The posting pages that may hold `value` of `key`: of one space, or of
    /// every space for `None`. Empty when the filter rules it out.
    pub fn posting_pages_for(&self, key: &Key, value: &str, space: Option<u64>) -> std::ops::Range<usize> {
        if !self.indexes.contains(key) || !self.value_filter.may_contain(BloomHash::of(&value_item(key, value))) {
            return 0..0;
        }
        let (lo, hi) = match space {
            Some(s) => (s, s),
            None => (0, u64::MAX),
        };
        let below = |p: &PostingPage| (&p.last.0, p.last.1.as_str(), p.last.2) < (key, value, lo);
        let start = self.posting_pages.partition_point(below);
        let end = self.posting_pages.partition_point(|p| (&p.first.0, p.first.1.as_str(), p.first.2) <= (key, value, hi));
        start..end.max(start)
    }

    fn validate(&self, data_end: u64, object: &str) -> Result<(), Error> {
        let err = |why: &str| Error::Corrupt(format!("{object}: archive footer: {why}"));
        let (mut offset, mut first) = (0u64, 0u64);
        for b in &self.blocks {
            if b.offset != offset || b.first != first || b.count == 0 {
                return Err(err("blocks are not contiguous"));
            }
            offset += b.len();
            first += u64::from(b.count);
        }
        if first != self.event_count {
            return Err(err("block counts do not add up"));
        }
        for p in &self.space_pages {
            if p.offset != offset {
                return Err(err("space pages are not contiguous"));
            }
            offset += u64::from(p.len);
        }
        for p in &self.posting_pages {
            if p.offset != offset {
                return Err(err("posting pages are not contiguous"));
            }
            offset += u64::from(p.len);
        }
        if offset != data_end {
            return Err(err("the pages do not end where the footer starts"));
        }
        let sorted_spaces = self.space_pages.windows(2).all(|w| w[0].last < w[1].first && w[0].first_index < w[1].first_index);
        let sorted_postings = self.posting_pages.windows(2).all(|w| w[0].last <= w[1].first);
        if !sorted_spaces || !sorted_postings {
            return Err(err("pages are not sorted"));
        }
        Ok(())
    }
}

/// An encoded archive and what it holds.
pub struct EncodedArchive {
    pub bytes: Vec<u8>,
    pub footer: ArchiveFooter,
    /// The bytes of event data as stored (after the data codec).
    pub data_bytes: u64,
    /// The bytes of the posting pages.
    pub index_bytes: u64,
    /// How many (event, key, value) entries the indexes hold.
    pub index_entries: u64,
}

/// Collects events in any order and encodes them as one archive.
pub struct ArchiveBuilder {
    opts: ArchiveOptions,
    events: Vec<ArchivedEvent>,
}

impl ArchiveBuilder {
    pub fn new(opts: ArchiveOptions) -> Result<Self, Error> {
        if opts.block_bytes == 0 || opts.block_events == 0 || opts.block_events > u32::MAX as usize {
            return Err(Error::Invalid("an archive block must hold at least one event and one byte".into()));
        }
        let mut seen = opts.indexes.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != opts.indexes.len() {
            return Err(Error::Invalid("an index key is given twice".into()));
        }
        Ok(ArchiveBuilder { opts, events: Vec::new() })
    }

    pub fn add(&mut self, e: ArchivedEvent) {
        self.events.push(e);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn finish(self) -> Result<EncodedArchive, Error> {
        let ArchiveBuilder { opts, mut events } = self;
        if events.len() > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} events are too many for one archive", events.len())));
        }
        let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        if seqs.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Invalid("two events with one seq".into()));
        }
        let space = &opts.space;
        let grouping = opts.grouping.as_ref();
        events.sort_by(|a, b| {
            (space.of(&a.event), grouping.map(|g| g.of(&a.event)), a.event.timestamp, a.seq).cmp(&(
                space.of(&b.event),
                grouping.map(|g| g.of(&b.event)),
                b.event.timestamp,
                b.seq,
            ))
        });

        let mut out = Vec::new();
        let mut blocks = Vec::new();
        let mut data_bytes = 0u64;
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len() && end - start < opts.block_events && (end == start || bytes < opts.block_bytes) {
                bytes += events[end].event.data.len();
                end += 1;
            }
            let (meta, data) = encode_archive_block(&events[start..end], &opts)?;
            blocks.push(ArchiveBlock {
                offset: out.len() as u64,
                meta_len: meta.len() as u32,
                data_len: data.len() as u32,
                first: start as u64,
                count: (end - start) as u32,
            });
            data_bytes += data.len() as u64;
            out.extend_from_slice(&meta);
            out.extend_from_slice(&data);
            start = end;
        }

        // The space directory, and the postings of each space.
        let mut spaces: Vec<Space> = Vec::new();
        let mut postings: BTreeMap<(Key, String, u64), Vec<u64>> = BTreeMap::new();
        for (ordinal, e) in events.iter().enumerate() {
            let ordinal = ordinal as u64;
            let key = space.of(&e.event);
            if spaces.last().is_none_or(|s| s.key != key) {
                spaces.push(Space { key: key.to_string(), first: ordinal, count: 0, groups: Vec::new() });
            }
            let space_index = spaces.len() as u64 - 1;
            let s = spaces.last_mut().ok_or_else(|| Error::Invalid("no space".into()))?;
            s.count += 1;
            if let Some(g) = grouping {
                let value = g.of(&e.event);
                match s.groups.last_mut() {
                    Some(last) if last.value == value => last.count += 1,
                    _ => s.groups.push(Group { value: value.to_string(), count: 1 }),
                }
            }
            let relative = ordinal - s.first;
            for k in &opts.indexes {
                for v in k.values(&e.event) {
                    let list = postings.entry((k.clone(), v.to_string(), space_index)).or_default();
                    if list.last() != Some(&relative) {
                        list.push(relative);
                    }
                }
            }
        }

        let space_filter = Bloom::from_items(spaces.iter().map(|s| s.key.as_bytes()));
        let mut space_pages = Vec::new();
        let mut page: Vec<&Space> = Vec::new();
        let mut page_bytes = 0;
        let mut first_index = 0u64;
        for (i, s) in spaces.iter().enumerate() {
            page_bytes += s.key.len() + 16 + s.groups.iter().map(|g| g.value.len() + 4).sum::<usize>();
            page.push(s);
            if page_bytes >= PAGE_BYTES || i + 1 == spaces.len() {
                let raw = postcard::to_stdvec(&page).map_err(|e| Error::Invalid(format!("space page: {e}")))?;
                let framed = frame(&raw, opts.meta_codec, opts.zstd_level)?;
                space_pages.push(SpacePage {
                    first: page[0].key.clone(),
                    last: page[page.len() - 1].key.clone(),
                    first_index,
                    offset: out.len() as u64,
                    len: framed.len() as u32,
                });
                out.extend_from_slice(&framed);
                first_index = i as u64 + 1;
                page.clear();
                page_bytes = 0;
            }
        }

        let values: std::collections::BTreeSet<Vec<u8>> = postings.keys().map(|(k, v, _)| value_item(k, v)).collect();
        let value_filter = Bloom::from_items(values.iter().map(Vec::as_slice));
        let index_entries: u64 = postings.values().map(|l| l.len() as u64).sum();
        let index_start = out.len() as u64;
        let mut posting_pages = Vec::new();
        let mut page: Vec<Posting> = Vec::new();
        let mut page_bytes = 0;
        let total = postings.len();
        for (n, ((key, value, space), list)) in postings.into_iter().enumerate() {
            for chunk in list.chunks(POSTING_CHUNK) {
                let mut ordinals = Vec::with_capacity(chunk.len() * 2);
                for (i, o) in chunk.iter().enumerate() {
                    put_varint(&mut ordinals, if i == 0 { *o } else { o - chunk[i - 1] - 1 });
                }
                page_bytes += ordinals.len() + value.len() + 8;
                page.push(Posting { key: key.clone(), value: value.clone(), space, ordinals });
                if page_bytes >= PAGE_BYTES {
                    flush_postings(&mut page, &mut posting_pages, &mut out, &opts)?;
                    page_bytes = 0;
                }
            }
            if n + 1 == total && !page.is_empty() {
                flush_postings(&mut page, &mut posting_pages, &mut out, &opts)?;
            }
        }
        let index_bytes = out.len() as u64 - index_start;

        let footer = ArchiveFooter {
            event_count: events.len() as u64,
            first_seq: seqs.first().copied().unwrap_or(0),
            end_seq: seqs.last().map_or(0, |s| s + 1),
            min_ts: events.iter().map(|e| e.event.timestamp).min().unwrap_or(0),
            max_ts: events.iter().map(|e| e.event.timestamp).max().unwrap_or(0),
            space: opts.space.clone(),
            grouping: opts.grouping.clone(),
            indexes: opts.indexes.clone(),
            blocks,
            space_pages,
            space_count: spaces.len() as u64,
            space_filter,
            posting_pages,
            value_filter,
        };
        let body = postcard::to_stdvec(&footer).map_err(|e| Error::Invalid(format!("archive footer: {e}")))?;
        let offset = out.len() as u64;
        out.extend_from_slice(&encode_tail(body, ARCHIVE_MAGIC, ARCHIVE_VERSION, events.len() as u32, offset)?);
        Ok(EncodedArchive { bytes: out, footer, data_bytes, index_bytes, index_entries })
    }
}

fn flush_postings(page: &mut Vec<Posting>, pages: &mut Vec<PostingPage>, out: &mut Vec<u8>, opts: &ArchiveOptions) -> Result<(), Error> {
    let (Some(first), Some(last)) = (page.first(), page.last()) else { return Ok(()) };
    let first = (first.key.clone(), first.value.clone(), first.space);
    let last = (last.key.clone(), last.value.clone(), last.space);
    let raw = postcard::to_stdvec(&page).map_err(|e| Error::Invalid(format!("posting page: {e}")))?;
    let framed = frame(&raw, opts.meta_codec, opts.zstd_level)?;
    pages.push(PostingPage { first, last, offset: out.len() as u64, len: framed.len() as u32 });
    out.extend_from_slice(&framed);
    page.clear();
    Ok(())
}

/// A block's two frames: metadata columns, then data.
fn encode_archive_block(events: &[ArchivedEvent], opts: &ArchiveOptions) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut streams: Vec<(&str, u64)> = Vec::new();
    let mut stream_at: HashMap<&str, usize> = HashMap::new();
    let mut types: Vec<&str> = Vec::new();
    let mut type_at: HashMap<&str, usize> = HashMap::new();
    let mut strings: Vec<&str> = Vec::new();
    let mut string_at: HashMap<&str, usize> = HashMap::new();
    for e in events {
        let ev = &e.event;
        if !stream_at.contains_key(&*ev.stream) {
            stream_at.insert(&ev.stream, streams.len());
            streams.push((&ev.stream, ev.revision));
        }
        if !type_at.contains_key(&*ev.event_type) {
            type_at.insert(&ev.event_type, types.len());
            types.push(&ev.event_type);
        }
        for (k, v) in &ev.tags {
            for s in [k.as_str(), v.as_str()] {
                if !string_at.contains_key(s) {
                    string_at.insert(s, strings.len());
                    strings.push(s);
                }
            }
        }
    }
    let base_seq = events.first().map_or(0, |e| e.seq);
    let base_ts = events.first().map_or(0, |e| e.event.timestamp);
    let mut m = Vec::with_capacity(events.len() * 8);
    put_varint(&mut m, events.len() as u64);
    put_varint(&mut m, base_seq);
    put_zigzag(&mut m, base_ts);
    put_varint(&mut m, streams.len() as u64);
    for (s, rev) in &streams {
        put_bytes(&mut m, s.as_bytes());
        put_varint(&mut m, *rev);
    }
    put_varint(&mut m, types.len() as u64);
    for t in &types {
        put_bytes(&mut m, t.as_bytes());
    }
    put_varint(&mut m, strings.len() as u64);
    for s in &strings {
        put_bytes(&mut m, s.as_bytes());
    }
    for e in events {
        let ev = &e.event;
        let flags = if ev.id.is_some() { FLAG_ID } else { 0 } | if ev.tags.is_empty() { 0 } else { FLAG_TAGS } | if ev.binary { FLAG_BINARY } else { 0 };
        m.push(flags);
    }
    for e in events {
        put_varint(&mut m, stream_at[&*e.event.stream] as u64);
    }
    let mut next_rev: Vec<u64> = streams.iter().map(|(_, r)| *r).collect();
    for e in events {
        let i = stream_at[&*e.event.stream];
        put_zigzag(&mut m, e.event.revision.wrapping_sub(next_rev[i]) as i64);
        next_rev[i] = e.event.revision.wrapping_add(1);
    }
    for e in events {
        put_varint(&mut m, type_at[&*e.event.event_type] as u64);
    }
    let mut ts = base_ts;
    for e in events {
        put_zigzag(&mut m, e.event.timestamp.wrapping_sub(ts));
        ts = e.event.timestamp;
    }
    let mut seq = base_seq;
    for e in events {
        put_zigzag(&mut m, e.seq.wrapping_sub(seq) as i64);
        seq = e.seq.wrapping_add(1);
    }
    for e in events {
        put_varint(&mut m, e.event.data.len() as u64);
    }
    for e in events {
        if let Some(id) = &e.event.id {
            m.extend_from_slice(id);
        }
    }
    for e in events.iter().filter(|e| !e.event.tags.is_empty()) {
        put_varint(&mut m, e.event.tags.len() as u64);
        for (k, v) in &e.event.tags {
            put_varint(&mut m, string_at[k.as_str()] as u64);
            put_varint(&mut m, string_at[v.as_str()] as u64);
        }
    }
    let mut d = Vec::with_capacity(events.iter().map(|e| e.event.data.len()).sum());
    for e in events {
        d.extend_from_slice(&e.event.data);
    }
    Ok((frame(&m, opts.meta_codec, opts.zstd_level)?, frame(&d, opts.data_codec, opts.zstd_level)?))
}

/// Decodes a block (its two frames, as stored one after the other) into its
/// events, in ordinal order.
pub fn decode_archive_block(bytes: &[u8], block: &ArchiveBlock, object: &str) -> Result<Vec<ArchivedEvent>, Error> {
    let err = |why: &str| Error::Corrupt(format!("{object}: archive block at {}: {why}", block.offset));
    if bytes.len() as u64 != block.len() {
        return Err(err("length does not match the footer"));
    }
    let (meta, data) = bytes.split_at(block.meta_len as usize);
    let meta = unframe(meta, object, "archive block metadata")?;
    let data = unframe(data, object, "archive block data")?;
    let data = Bytes::from(data.into_owned());
    let mut c = Cursor::new(&meta, "archive block");
    let count = c.count(1)?;
    if count != block.count as usize {
        return Err(err("event count does not match the footer"));
    }
    let base_seq = c.varint()?;
    let base_ts = c.zigzag()?;
    let n = c.count(2)?;
    let mut streams: Vec<(Arc<str>, u64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let s: Arc<str> = c.str()?.into();
        streams.push((s, c.varint()?));
    }
    let n = c.count(1)?;
    let mut types: Vec<Arc<str>> = Vec::with_capacity(n);
    for _ in 0..n {
        types.push(c.str()?.into());
    }
    let n = c.count(1)?;
    let mut strings: Vec<&str> = Vec::with_capacity(n);
    for _ in 0..n {
        strings.push(c.str()?);
    }
    let flags = c.take(count)?.to_vec();
    if flags.iter().any(|f| f & !(FLAG_ID | FLAG_TAGS | FLAG_BINARY) != 0) {
        return Err(err("unknown event flags"));
    }
    let index = |c: &mut Cursor, len: usize| -> Result<usize, Error> {
        let i = c.varint()?;
        if i >= len as u64 {
            return Err(err("dictionary index out of range"));
        }
        Ok(i as usize)
    };
    let mut stream_of = Vec::with_capacity(count);
    for _ in 0..count {
        stream_of.push(index(&mut c, streams.len())?);
    }
    let mut next_rev: Vec<u64> = streams.iter().map(|(_, r)| *r).collect();
    let mut revisions = Vec::with_capacity(count);
    for s in &stream_of {
        let r = next_rev[*s].wrapping_add(c.zigzag()? as u64);
        next_rev[*s] = r.wrapping_add(1);
        revisions.push(r);
    }
    let mut type_of = Vec::with_capacity(count);
    for _ in 0..count {
        type_of.push(index(&mut c, types.len())?);
    }
    let mut stamps = Vec::with_capacity(count);
    let mut ts = base_ts;
    for _ in 0..count {
        ts = ts.checked_add(c.zigzag()?).ok_or_else(|| err("timestamp overflows"))?;
        stamps.push(ts);
    }
    let mut seqs = Vec::with_capacity(count);
    let mut seq = base_seq;
    for _ in 0..count {
        let s = seq.wrapping_add(c.zigzag()? as u64);
        seqs.push(s);
        seq = s.wrapping_add(1);
    }
    let mut lens = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for _ in 0..count {
        let l = c.varint()?;
        total = total.checked_add(l).ok_or_else(|| err("data lengths overflow"))?;
        lens.push(l as usize);
    }
    if total != data.len() as u64 {
        return Err(err("data lengths do not add up to the data frame"));
    }
    let mut ids = Vec::with_capacity(count);
    for f in &flags {
        ids.push(if f & FLAG_ID != 0 { Some(c.array::<16>()?) } else { None });
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    for i in 0..count {
        let mut tags = Vec::new();
        if flags[i] & FLAG_TAGS != 0 {
            let n = c.count(2)?;
            for _ in 0..n {
                let k = index(&mut c, strings.len())?;
                let v = index(&mut c, strings.len())?;
                tags.push((strings[k].to_string(), strings[v].to_string()));
            }
        }
        out.push(ArchivedEvent {
            seq: seqs[i],
            event: Event {
                stream: streams[stream_of[i]].0.clone(),
                revision: revisions[i],
                event_type: types[type_of[i]].clone(),
                timestamp: stamps[i],
                id: ids[i],
                tags,
                binary: flags[i] & FLAG_BINARY != 0,
                data: data.slice(at..at + lens[i]),
            },
        });
        at += lens[i];
    }
    if c.remaining() != 0 {
        return Err(err("trailing bytes"));
    }
    Ok(out)
}

/// Reads an archive trailer (the last 32 bytes).
pub fn decode_archive_trailer(b: &[u8], object: &str) -> Result<Trailer, Error> {
    crate::segment::decode_trailer_with(b, ARCHIVE_MAGIC, ARCHIVE_VERSION, object)
}

/// Decodes and checks an archive footer from `tail` (footer + trailer).
pub fn decode_archive_footer(tail: &[u8], object: &str) -> Result<ArchiveFooter, Error> {
    let (t, body) = split_tail(tail, ARCHIVE_MAGIC, ARCHIVE_VERSION, None, object)?;
    let footer: ArchiveFooter = postcard::from_bytes(body).map_err(|e| Error::Corrupt(format!("{object}: archive footer: {e}")))?;
    footer.validate(t.footer_offset, object)?;
    if footer.event_count != u64::from(t.event_count) {
        return Err(Error::Corrupt(format!("{object}: archive footer disagrees with its trailer")));
    }
    Ok(footer)
}

/// Decodes a page of the space directory.
pub fn decode_space_page(frame: &[u8], object: &str) -> Result<Vec<Space>, Error> {
    let raw = unframe(frame, object, "space page")?;
    postcard::from_bytes(&raw).map_err(|e| Error::Corrupt(format!("{object}: space page: {e}")))
}

/// Decodes a page of postings.
pub fn decode_posting_page(frame: &[u8], object: &str) -> Result<Vec<Posting>, Error> {
    let raw = unframe(frame, object, "posting page")?;
    postcard::from_bytes(&raw).map_err(|e| Error::Corrupt(format!("{object}: posting page: {e}")))
}
