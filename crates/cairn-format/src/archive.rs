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
//! `[block]* [space page]* [posting page]* [space filter] footer trailer`. A block is two
//! frames: the events' metadata in columns (compressed apart, so the columns
//! of small numbers cost almost nothing), then their data, concatenated.
//! Pages and blocks are framed like segment blocks (codec, lengths, CRC32C).
//! The byte layout is in docs/FORMAT.md.

use std::sync::Arc;

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::{Deserialize, Serialize};

use crate::block::{compress, decompress, frame, unframe, Codec, Event};
use crate::bloom::{Bloom, BloomHash};
use crate::codec::{put_bytes, put_varint, put_zigzag, Cursor};
use crate::segment::{encode_tail, split_tail, Trailer};
use crate::Error;

/// Persisted in the trailer, as are the version and the layout below it: a
/// decoder refuses any other version. Never renumber.
pub const ARCHIVE_MAGIC: &[u8; 8] = b"CAIRNARC";
pub const ARCHIVE_VERSION: u32 = 2;
/// A space filter of at most this many bytes sits in the footer; a larger
/// one in a section of its own, which only a space look-up fetches (a tag
/// read over an archive of 100 k streams need not fetch 122 KiB of it).
pub const INLINE_FILTER_BYTES: usize = 4 << 10;
/// Posting pages close past this many encoded bytes ...
const PAGE_BYTES: usize = 64 << 10;
/// ... and directory pages past this many: a stream read reads one
/// directory page of every archive that may hold the stream.
const SPACE_PAGE_BYTES: usize = 16 << 10;
/// A posting entry holds at most this many ordinals; a longer list goes on
/// in the next entry.
const POSTING_CHUNK: usize = 16 << 10;
/// No block holds more events: a decoder allocates from a block's count, so
/// a small hostile block cannot make it allocate gigabytes.
pub const MAX_BLOCK_EVENTS: usize = 1 << 16;

/// The seq column's first byte: its width, and this bit when the
/// differences are zigzag-coded. Persisted.
const SEQ_ZIGZAG: u8 = 0x80;

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
    /// Indexed values are *inlined* — their events stored in the posting
    /// entries too, so reading a value reads no block — rarest first, while
    /// the inlined events stay within this share of the archive's events
    /// (0 inlines nothing). A rare value's events are one here and one there
    /// across the blocks; a common value's fill most blocks anyway.
    pub inline_share: f64,
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
            inline_share: 0.125,
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
    /// The space's first ordinal: `first` + an ordinal here is its place in
    /// the archive, with no directory page to read.
    pub first: u64,
    pub ordinals: Vec<u8>,
    /// When the value is inlined: the metadata frame's length and the
    /// entry's events as one block (metadata frame, data frame), in order.
    pub inline: Option<(u32, Vec<u8>)>,
}

impl Posting {
    /// The entry's events, if its value is inlined; `count` is how many
    /// ordinals [`Posting::decode`] gave (the caller has them already).
    pub fn inlined(&self, count: usize, times: &TimeTable, object: &str) -> Result<Option<Vec<ArchivedEvent>>, Error> {
        let Some((meta_len, bytes)) = &self.inline else { return Ok(None) };
        let count = u32::try_from(count).map_err(|_| Error::Corrupt(format!("{object}: posting too long")))?;
        let data_len = (bytes.len() as u64).checked_sub(u64::from(*meta_len)).and_then(|l| u32::try_from(l).ok());
        let data_len = data_len.ok_or_else(|| Error::Corrupt(format!("{object}: inlined events: bad lengths")))?;
        let block = ArchiveBlock { offset: 0, meta_len: *meta_len, data_len, first: self.first, count };
        decode_archive_block(bytes, &block, times, object).map(Some)
    }

    /// The ordinals, relative to the space's first.
    pub fn decode(&self, object: &str) -> Result<Vec<u64>, Error> {
        let mut c = Cursor::new(&self.ordinals, "posting");
        let mut out = Vec::new();
        let mut at: u64 = 0;
        while c.remaining() > 0 {
            if out.len() == POSTING_CHUNK {
                return Err(Error::Corrupt(format!("{object}: a posting entry of more than {POSTING_CHUNK} ordinals")));
            }
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
    /// Stored as (meta_len, data_len, count) each: offsets and first
    /// ordinals follow from the sums, as blocks are contiguous from 0.
    #[serde(with = "block_table")]
    pub blocks: Vec<ArchiveBlock>,
    pub space_pages: Vec<SpacePage>,
    pub space_count: u64,
    pub space_filter: SpaceFilter,
    pub posting_pages: Vec<PostingPage>,
    /// Every (key, value) pair indexed, as `key-tag \0 value`.
    pub value_filter: Bloom,
    /// The [`TimeTable`], encoded.
    pub time_table: Vec<u8>,
}

/// Where the filter over an archive's space keys is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpaceFilter {
    /// In the footer (every filter of a version 1 archive).
    Inline(Bloom),
    /// A framed section (postcard `Bloom`, codec 0) right before the
    /// footer, after the posting pages.
    At { offset: u64, len: u32 },
}

/// The footer of a version 1 archive, which holds its space filter inline.
#[derive(Deserialize)]
struct ArchiveFooterV1 {
    event_count: u64,
    first_seq: u64,
    end_seq: u64,
    min_ts: i64,
    max_ts: i64,
    space: Key,
    grouping: Option<Key>,
    indexes: Vec<Key>,
    #[serde(with = "block_table")]
    blocks: Vec<ArchiveBlock>,
    space_pages: Vec<SpacePage>,
    space_count: u64,
    space_filter: Bloom,
    posting_pages: Vec<PostingPage>,
    value_filter: Bloom,
    time_table: Vec<u8>,
}

impl From<ArchiveFooterV1> for ArchiveFooter {
    fn from(f: ArchiveFooterV1) -> Self {
        ArchiveFooter {
            event_count: f.event_count,
            first_seq: f.first_seq,
            end_seq: f.end_seq,
            min_ts: f.min_ts,
            max_ts: f.max_ts,
            space: f.space,
            grouping: f.grouping,
            indexes: f.indexes,
            blocks: f.blocks,
            space_pages: f.space_pages,
            space_count: f.space_count,
            space_filter: SpaceFilter::Inline(f.space_filter),
            posting_pages: f.posting_pages,
            value_filter: f.value_filter,
            time_table: f.time_table,
        }
    }
}

mod block_table {
    use super::ArchiveBlock;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(blocks: &[ArchiveBlock], s: S) -> Result<S::Ok, S::Error> {
        let lens: Vec<(u32, u32, u32)> = blocks.iter().map(|b| (b.meta_len, b.data_len, b.count)).collect();
        lens.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ArchiveBlock>, D::Error> {
        let lens: Vec<(u32, u32, u32)> = Vec::deserialize(d)?;
        let (mut offset, mut first) = (0u64, 0u64);
        let mut out = Vec::with_capacity(lens.len());
        for (meta_len, data_len, count) in lens {
            out.push(ArchiveBlock { offset, meta_len, data_len, first, count });
            offset += u64::from(meta_len) + u64::from(data_len);
            first += u64::from(count);
        }
        Ok(out)
    }
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
    /// The archive's time table, which decoding its blocks needs.
    pub fn times(&self, object: &str) -> Result<TimeTable, Error> {
        TimeTable::decode(&self.time_table, object)
    }

    /// The block holding `ordinal`.
    pub fn block_of(&self, ordinal: u64) -> Option<usize> {
        let i = self.blocks.partition_point(|b| b.first <= ordinal);
        (i > 0 && ordinal < self.blocks[i - 1].end()).then(|| i - 1)
    }

    /// The page that may hold space `key`, if `filter` (the archive's space
    /// filter: inline, or read from its section) lets it through.
    pub fn space_page_for(&self, key: &str, filter: &Bloom) -> Option<usize> {
        if !filter.may_contain(BloomHash::of(key.as_bytes())) {
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
            if b.offset != offset || b.first != first || b.count == 0 || b.count as usize > MAX_BLOCK_EVENTS {
                return Err(err("blocks are not contiguous, or a block's count is out of range"));
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
        if let SpaceFilter::At { offset: at, len } = self.space_filter {
            if at != offset {
                return Err(err("the space filter does not follow the posting pages"));
            }
            offset += u64::from(len);
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
    /// Where the footer starts: a reader that knows it opens the archive
    /// with one exact range GET.
    pub footer_offset: u64,
    /// The bytes of event data as stored (after the data codec).
    pub data_bytes: u64,
    /// The bytes of the posting pages.
    pub index_bytes: u64,
    /// How many (event, key, value) entries the indexes hold.
    pub index_entries: u64,
    /// How many events are inlined in the postings too.
    pub inlined: u64,
    /// The bytes of each metadata column.
    pub columns: ColumnBytes,
}

/// A posting list being built: (index key's place in the options, value,
/// space).
type ListKey<'a> = (usize, &'a str, u64);

/// Collects events in any order and encodes them as one archive.
pub struct ArchiveBuilder {
    opts: ArchiveOptions,
    events: Vec<ArchivedEvent>,
}

impl ArchiveBuilder {
    pub fn new(opts: ArchiveOptions) -> Result<Self, Error> {
        if opts.block_bytes == 0 || opts.block_events == 0 || opts.block_events > MAX_BLOCK_EVENTS {
            return Err(Error::Invalid(format!("an archive block holds 1 to {MAX_BLOCK_EVENTS} events and at least one byte")));
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
        let ArchiveBuilder { opts, events } = self;
        if events.len() > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} events are too many for one archive", events.len())));
        }
        let mut by_seq: Vec<(u64, i64)> = events.iter().map(|e| (e.seq, e.event.timestamp)).collect();
        by_seq.sort_unstable();
        if by_seq.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Invalid("two events with one seq".into()));
        }
        if by_seq.last().is_some_and(|p| p.0 == u64::MAX) {
            return Err(Error::Invalid("seq u64::MAX has no end".into()));
        }
        let times = TimeTable::build(&by_seq);
        let space = &opts.space;
        let grouping = opts.grouping.as_ref();
        // Sorted by ranks of the space and grouping values: integers to
        // compare, not strings.
        let rank = |key: Option<&Key>| -> Vec<u32> {
            let Some(key) = key else { return vec![0; events.len()] };
            let mut ids: HashMap<&str, u32> = HashMap::new();
            let of: Vec<u32> = events
                .iter()
                .map(|e| {
                    let next = ids.len() as u32;
                    *ids.entry(key.of(&e.event)).or_insert(next)
                })
                .collect();
            let mut values: Vec<(&str, u32)> = ids.into_iter().collect();
            values.sort_unstable();
            let mut rank = vec![0u32; values.len()];
            for (r, (_, id)) in values.iter().enumerate() {
                rank[*id as usize] = r as u32;
            }
            of.into_iter().map(|id| rank[id as usize]).collect()
        };
        let (spaces_rank, groups_rank) = (rank(Some(space)), rank(grouping));
        let mut order: Vec<u32> = (0..events.len() as u32).collect();
        order.sort_unstable_by_key(|&i| {
            let i = i as usize;
            (spaces_rank[i], groups_rank[i], events[i].event.timestamp, events[i].seq)
        });
        let mut slots: Vec<Option<ArchivedEvent>> = events.into_iter().map(Some).collect();
        let events: Vec<ArchivedEvent> = order.iter().filter_map(|&i| slots[i as usize].take()).collect();

        let mut out = Vec::new();
        let mut blocks = Vec::new();
        let mut data_bytes = 0u64;
        let mut columns = ColumnBytes::default();
        let mut start = 0;
        while start < events.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < events.len() && end - start < opts.block_events && (end == start || bytes < opts.block_bytes) {
                bytes += events[end].event.data.len();
                end += 1;
            }
            let (meta, data) = encode_archive_block(&events[start..end], &times, &opts, &mut columns)?;
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
        let mut lists: HashMap<ListKey, Vec<u64>> = HashMap::new();
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
            for (ki, k) in opts.indexes.iter().enumerate() {
                for v in k.values(&e.event) {
                    let list = lists.entry((ki, v, space_index)).or_default();
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
            if page_bytes >= SPACE_PAGE_BYTES || i + 1 == spaces.len() {
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

        let mut postings: Vec<(ListKey, Vec<u64>)> = lists.into_iter().collect();
        postings.sort_unstable_by(|((ka, va, sa), _), ((kb, vb, sb), _)| (&opts.indexes[*ka], va, sa).cmp(&(&opts.indexes[*kb], vb, sb)));
        let values: std::collections::BTreeSet<Vec<u8>> = postings.iter().map(|((k, v, _), _)| value_item(&opts.indexes[*k], v)).collect();
        let value_filter = Bloom::from_items(values.iter().map(Vec::as_slice));
        let index_entries: u64 = postings.iter().map(|(_, l)| l.len() as u64).sum();
        // The values to inline: the rarest first, within the budget.
        let mut per_value: HashMap<(usize, &str), u64> = HashMap::new();
        for ((k, v, _), l) in &postings {
            *per_value.entry((*k, v)).or_default() += l.len() as u64;
        }
        let mut by_count: Vec<((usize, &str), u64)> = per_value.into_iter().collect();
        by_count.sort_unstable_by(|a, b| (a.1, &opts.indexes[a.0 .0], a.0 .1).cmp(&(b.1, &opts.indexes[b.0 .0], b.0 .1)));
        let budget = (events.len() as f64 * opts.inline_share.clamp(0.0, 1.0)) as u64;
        let mut inline_values: HashSet<(usize, &str)> = HashSet::new();
        let mut inlined = 0u64;
        for (value, count) in by_count {
            if inlined + count > budget {
                break;
            }
            inlined += count;
            inline_values.insert(value);
        }
        let mut inline_columns = ColumnBytes::default();
        let index_start = out.len() as u64;
        let mut posting_pages = Vec::new();
        let mut page: Vec<Posting> = Vec::new();
        let mut page_bytes = 0;
        let total = postings.len();
        for (n, ((ki, value, space), list)) in postings.into_iter().enumerate() {
            let key = &opts.indexes[ki];
            let inline = inline_values.contains(&(ki, value));
            for chunk in list.chunks(POSTING_CHUNK) {
                let mut ordinals = Vec::with_capacity(chunk.len() * 2);
                for (i, o) in chunk.iter().enumerate() {
                    put_varint(&mut ordinals, if i == 0 { *o } else { o - chunk[i - 1] - 1 });
                }
                page_bytes += ordinals.len() + value.len() + 8;
                let first = spaces.get(space as usize).map_or(0, |s| s.first);
                let inline = if inline {
                    let those: Vec<ArchivedEvent> = chunk.iter().filter_map(|o| events.get((first + o) as usize).cloned()).collect();
                    let (meta, data) = encode_archive_block(&those, &times, &opts, &mut inline_columns)?;
                    page_bytes += meta.len() + data.len();
                    Some((meta.len() as u32, [meta, data].concat()))
                } else {
                    None
                };
                page.push(Posting { key: key.clone(), value: value.to_string(), space, first, ordinals, inline });
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
        let encoded = postcard::to_stdvec(&space_filter).map_err(|e| Error::Invalid(format!("space filter: {e}")))?;
        let space_filter = if encoded.len() <= INLINE_FILTER_BYTES {
            SpaceFilter::Inline(space_filter)
        } else {
            let framed = frame(&encoded, Codec::None, 0)?;
            let at = SpaceFilter::At { offset: out.len() as u64, len: framed.len() as u32 };
            out.extend_from_slice(&framed);
            at
        };

        let footer = ArchiveFooter {
            event_count: events.len() as u64,
            first_seq: by_seq.first().map_or(0, |p| p.0),
            end_seq: by_seq.last().map_or(0, |p| p.0 + 1),
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
            time_table: times.encode(),
        };
        // Framed with the meta codec: its block table, time table and page
        // keys compress several times over, and every reader fetches it.
        let raw = postcard::to_stdvec(&footer).map_err(|e| Error::Invalid(format!("archive footer: {e}")))?;
        let body = frame(&raw, opts.meta_codec, opts.zstd_level)?;
        let offset = out.len() as u64;
        out.extend_from_slice(&encode_tail(body, ARCHIVE_MAGIC, ARCHIVE_VERSION, events.len() as u32, offset)?);
        Ok(EncodedArchive { bytes: out, footer, footer_offset: offset, data_bytes, index_bytes, index_entries, inlined, columns })
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

/// Sampled (seq, timestamp) points of an archive in seq order: every
/// [`TIME_STRIDE`]-th event and the last. A block stores an event's
/// timestamp as its difference from the line through the two points around
/// its seq: a node stamps events as it commits them, so that difference is
/// a few ms where the difference from the stream's previous event is the
/// whole time between its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeTable(Vec<(u64, i64)>);

/// Events between two points of a [`TimeTable`].
pub const TIME_STRIDE: usize = 128;

impl TimeTable {
    fn build(by_seq: &[(u64, i64)]) -> TimeTable {
        let mut points: Vec<(u64, i64)> = by_seq.iter().step_by(TIME_STRIDE).copied().collect();
        if let Some(last) = by_seq.last() {
            if points.last() != Some(last) {
                points.push(*last);
            }
        }
        TimeTable(points)
    }

    /// The timestamp the table expects at `seq`.
    pub fn predict(&self, seq: u64) -> i64 {
        let k = self.0.partition_point(|p| p.0 <= seq);
        let Some(&(s0, t0)) = k.checked_sub(1).and_then(|i| self.0.get(i)) else {
            return self.0.first().map_or(0, |p| p.1);
        };
        let Some(&(s1, t1)) = self.0.get(k) else { return t0 };
        // s0 <= seq < s1: a point between t0 and t1, so it fits an i64.
        let between = (i128::from(t1) - i128::from(t0)) * i128::from(seq - s0) / i128::from(s1 - s0);
        (i128::from(t0) + between) as i64
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 4);
        let (mut s, mut t) = (0u64, 0i64);
        for &(seq, ts) in &self.0 {
            put_varint(&mut out, seq - s);
            put_zigzag(&mut out, ts.wrapping_sub(t));
            (s, t) = (seq, ts);
        }
        out
    }

    pub fn decode(b: &[u8], object: &str) -> Result<TimeTable, Error> {
        let mut c = Cursor::new(b, "time table");
        let mut points: Vec<(u64, i64)> = Vec::new();
        let (mut s, mut t) = (0u64, 0i64);
        while c.remaining() > 0 {
            let d = c.varint()?;
            if d == 0 && !points.is_empty() {
                return Err(Error::Corrupt(format!("{object}: time table seqs do not rise")));
            }
            s = s.checked_add(d).ok_or_else(|| Error::Corrupt(format!("{object}: time table overflows")))?;
            t = t.wrapping_add(c.zigzag()?);
            points.push((s, t));
        }
        Ok(TimeTable(points))
    }
}

/// Appends a column: its decoded length, codec and stored bytes.
/// Appends column `which` and counts its stored bytes in `sizes`.
fn put_column(m: &mut Vec<u8>, sizes: &mut ColumnBytes, which: usize, raw: &[u8], codec: Codec, level: i32) -> Result<(), Error> {
    let (codec, stored) = compress(raw, codec, level)?;
    let before = m.len();
    put_varint(m, raw.len() as u64);
    m.push(codec as u8);
    put_bytes(m, &stored);
    sizes.0[which] += (m.len() - before) as u64;
    Ok(())
}

/// The metadata columns of a block, in order. Persisted: never reorder.
pub const COLUMNS: [&str; 10] = ["dictionaries", "flags", "stream", "revision", "type", "timestamp", "seq", "length", "id", "tags"];

/// Bytes stored per metadata column over all blocks, as [`COLUMNS`] names
/// them (their headers included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnBytes(pub [u64; 10]);

fn column<'a>(c: &mut Cursor<'a>, object: &str, what: &str) -> Result<std::borrow::Cow<'a, [u8]>, Error> {
    let err = |why: String| Error::Corrupt(format!("{object}: archive block {what} column: {why}"));
    let len = u32::try_from(c.varint()?).map_err(|_| err("too long".into()))?;
    let codec = c.u8()?;
    let codec = Codec::from_u8(codec).ok_or_else(|| err(format!("unknown codec {codec}")))?;
    decompress(codec, c.bytes()?, len, err)
}

/// A block's two frames: metadata, then data. The metadata frame holds the
/// block's dictionaries and one column per field, each compressed apart.
fn encode_archive_block(events: &[ArchivedEvent], times: &TimeTable, opts: &ArchiveOptions, sizes: &mut ColumnBytes) -> Result<(Vec<u8>, Vec<u8>), Error> {
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
    let n = events.len();
    let base_seq = events.first().map_or(0, |e| e.seq);
    let mut m = Vec::with_capacity(n * 4);
    put_varint(&mut m, n as u64);
    put_varint(&mut m, base_seq);
    let (codec, level) = (opts.meta_codec, opts.zstd_level);

    let mut col = Vec::with_capacity(n * 8);
    put_varint(&mut col, streams.len() as u64);
    for (s, rev) in &streams {
        put_bytes(&mut col, s.as_bytes());
        put_varint(&mut col, *rev);
    }
    put_varint(&mut col, types.len() as u64);
    for t in &types {
        put_bytes(&mut col, t.as_bytes());
    }
    put_varint(&mut col, strings.len() as u64);
    for s in &strings {
        put_bytes(&mut col, s.as_bytes());
    }
    put_column(&mut m, sizes, 0, &col, codec, level)?;

    col.clear();
    col.extend(events.iter().map(|e| {
        let ev = &e.event;
        (if ev.id.is_some() { FLAG_ID } else { 0 }) | (if ev.tags.is_empty() { 0 } else { FLAG_TAGS }) | (if ev.binary { FLAG_BINARY } else { 0 })
    }));
    put_column(&mut m, sizes, 1, &col, codec, level)?;

    col.clear();
    for e in events {
        put_varint(&mut col, stream_at[&*e.event.stream] as u64);
    }
    put_column(&mut m, sizes, 2, &col, codec, level)?;

    col.clear();
    let mut next_rev: Vec<u64> = streams.iter().map(|(_, r)| *r).collect();
    for e in events {
        let i = stream_at[&*e.event.stream];
        put_zigzag(&mut col, e.event.revision.wrapping_sub(next_rev[i]) as i64);
        next_rev[i] = e.event.revision.wrapping_add(1);
    }
    put_column(&mut m, sizes, 3, &col, codec, level)?;

    col.clear();
    for e in events {
        put_varint(&mut col, type_at[&*e.event.event_type] as u64);
    }
    put_column(&mut m, sizes, 4, &col, codec, level)?;

    col.clear();
    for e in events {
        put_zigzag(&mut col, e.event.timestamp.wrapping_sub(times.predict(e.seq)));
    }
    put_column(&mut m, sizes, 5, &col, codec, level)?;

    // Seqs: differences from one past the previous, as byte planes (every
    // low byte, then every next byte): the planes compress apart. They are
    // zigzag-coded only when one goes back (a timestamp older than its
    // stream's previous one); otherwise the sign bit would cost a bit an
    // event.
    col.clear();
    let mut prev = base_seq;
    let mut deltas: Vec<u64> = events
        .iter()
        .map(|e| {
            let d = e.seq.wrapping_sub(prev);
            prev = e.seq.wrapping_add(1);
            d
        })
        .collect();
    let signed = deltas.iter().any(|d| (*d as i64) < 0);
    if signed {
        deltas.iter_mut().for_each(|d| *d = ((*d as i64) << 1 ^ ((*d as i64) >> 63)) as u64);
    }
    let width = deltas.iter().map(|d| 8 - (d.leading_zeros() / 8) as usize).max().unwrap_or(0);
    col.push(width as u8 | if signed { SEQ_ZIGZAG } else { 0 });
    for plane in 0..width {
        col.extend(deltas.iter().map(|d| (d >> (8 * plane)) as u8));
    }
    put_column(&mut m, sizes, 6, &col, codec, level)?;

    col.clear();
    for e in events {
        put_varint(&mut col, e.event.data.len() as u64);
    }
    put_column(&mut m, sizes, 7, &col, codec, level)?;

    col.clear();
    for id in events.iter().filter_map(|e| e.event.id.as_ref()) {
        col.extend_from_slice(id);
    }
    put_column(&mut m, sizes, 8, &col, codec, level)?;

    col.clear();
    for e in events.iter().filter(|e| !e.event.tags.is_empty()) {
        put_varint(&mut col, e.event.tags.len() as u64);
        for (k, v) in &e.event.tags {
            put_varint(&mut col, string_at[k.as_str()] as u64);
            put_varint(&mut col, string_at[v.as_str()] as u64);
        }
    }
    put_column(&mut m, sizes, 9, &col, codec, level)?;

    let mut d = Vec::with_capacity(events.iter().map(|e| e.event.data.len()).sum());
    for e in events {
        d.extend_from_slice(&e.event.data);
    }
    Ok((frame(&m, Codec::None, level)?, frame(&d, opts.data_codec, level)?))
}

/// Decodes a block (its two frames, as stored one after the other) into its
/// events, in ordinal order. `times` is the archive's time table.
pub fn decode_archive_block(bytes: &[u8], block: &ArchiveBlock, times: &TimeTable, object: &str) -> Result<Vec<ArchivedEvent>, Error> {
    let err = |why: &str| Error::Corrupt(format!("{object}: archive block at {}: {why}", block.offset));
    if bytes.len() as u64 != block.len() {
        return Err(err("length does not match the footer"));
    }
    let (meta, data) = bytes.split_at(block.meta_len as usize);
    let meta = unframe(meta, object, "archive block metadata")?;
    let data = unframe(data, object, "archive block data")?;
    let data = Bytes::from(data.into_owned());
    let mut m = Cursor::new(&meta, "archive block");
    let count = m.varint()?;
    if count != u64::from(block.count) || count > MAX_BLOCK_EVENTS as u64 {
        return Err(err("event count does not match the footer"));
    }
    let count = count as usize;
    let base_seq = m.varint()?;
    let index = |c: &mut Cursor, len: usize| -> Result<usize, Error> {
        let i = c.varint()?;
        if i >= len as u64 {
            return Err(err("dictionary index out of range"));
        }
        Ok(i as usize)
    };

    let dicts = column(&mut m, object, "dictionary")?;
    let mut c = Cursor::new(&dicts, "archive block dictionaries");
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
    if c.remaining() != 0 {
        return Err(err("trailing bytes in the dictionaries"));
    }

    let flags = column(&mut m, object, "flag")?;
    if flags.len() != count || flags.iter().any(|f| f & !(FLAG_ID | FLAG_TAGS | FLAG_BINARY) != 0) {
        return Err(err("bad flag column"));
    }
    let col = column(&mut m, object, "stream")?;
    let mut c = Cursor::new(&col, "stream column");
    let mut stream_of = Vec::with_capacity(count);
    for _ in 0..count {
        stream_of.push(index(&mut c, streams.len())?);
    }
    let col = column(&mut m, object, "revision")?;
    let mut c = Cursor::new(&col, "revision column");
    let mut next_rev: Vec<u64> = streams.iter().map(|(_, r)| *r).collect();
    let mut revisions = Vec::with_capacity(count);
    for s in &stream_of {
        let r = next_rev[*s].wrapping_add(c.zigzag()? as u64);
        next_rev[*s] = r.wrapping_add(1);
        revisions.push(r);
    }
    let col = column(&mut m, object, "type")?;
    let mut c = Cursor::new(&col, "type column");
    let mut type_of = Vec::with_capacity(count);
    for _ in 0..count {
        type_of.push(index(&mut c, types.len())?);
    }
    let stamps = column(&mut m, object, "timestamp")?;
    let seq_col = column(&mut m, object, "seq")?;
    let head = *seq_col.first().ok_or_else(|| err("empty seq column"))?;
    let (width, signed) = ((head & !SEQ_ZIGZAG) as usize, head & SEQ_ZIGZAG != 0);
    if width > 8 || seq_col.len() != 1 + width * count {
        return Err(err("bad seq column"));
    }
    let mut seqs = Vec::with_capacity(count);
    let mut prev = base_seq;
    for i in 0..count {
        let z = (0..width).fold(0u64, |v, p| v | u64::from(seq_col[1 + p * count + i]) << (8 * p));
        let d = if signed { (((z >> 1) as i64) ^ -((z & 1) as i64)) as u64 } else { z };
        let s = prev.wrapping_add(d);
        seqs.push(s);
        prev = s.wrapping_add(1);
    }
    let mut c = Cursor::new(&stamps, "timestamp column");
    let mut times_of = Vec::with_capacity(count);
    for s in &seqs {
        times_of.push(times.predict(*s).wrapping_add(c.zigzag()?));
    }
    let col = column(&mut m, object, "length")?;
    let mut c = Cursor::new(&col, "length column");
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
    let ids_col = column(&mut m, object, "id")?;
    if ids_col.len() != 16 * flags.iter().filter(|f| *f & FLAG_ID != 0).count() {
        return Err(err("bad id column"));
    }
    let tags_col = column(&mut m, object, "tag")?;
    let mut tc = Cursor::new(&tags_col, "tag column");
    if m.remaining() != 0 {
        return Err(err("trailing bytes"));
    }
    let mut out = Vec::with_capacity(count);
    let (mut at, mut id_at) = (0, 0);
    for i in 0..count {
        let mut tags = Vec::new();
        if flags[i] & FLAG_TAGS != 0 {
            let n = tc.count(2)?;
            for _ in 0..n {
                let k = index(&mut tc, strings.len())?;
                let v = index(&mut tc, strings.len())?;
                tags.push((strings[k].to_string(), strings[v].to_string()));
            }
        }
        let id = if flags[i] & FLAG_ID != 0 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&ids_col[id_at..id_at + 16]);
            id_at += 16;
            Some(a)
        } else {
            None
        };
        out.push(ArchivedEvent {
            seq: seqs[i],
            event: Event {
                stream: streams[stream_of[i]].0.clone(),
                revision: revisions[i],
                event_type: types[type_of[i]].clone(),
                timestamp: times_of[i],
                id,
                tags,
                binary: flags[i] & FLAG_BINARY != 0,
                data: data.slice(at..at + lens[i]),
            },
        });
        at += lens[i];
    }
    if tc.remaining() != 0 {
        return Err(err("trailing bytes in the tag column"));
    }
    Ok(out)
}

/// Reads an archive trailer (the last 32 bytes).
pub fn decode_archive_trailer(b: &[u8], object: &str) -> Result<Trailer, Error> {
    crate::segment::decode_trailer_with(b, ARCHIVE_MAGIC, ARCHIVE_VERSION, object)
}

/// Decodes and checks an archive footer from `tail` (footer + trailer),
/// which starts at `footer_offset` in the archive: of version 1 or 2.
pub fn decode_archive_footer(tail: &[u8], footer_offset: u64, object: &str) -> Result<ArchiveFooter, Error> {
    let (t, body) = split_tail(tail, ARCHIVE_MAGIC, ARCHIVE_VERSION, Some(footer_offset), object)?;
    let bad = |e: postcard::Error| Error::Corrupt(format!("{object}: archive footer: {e}"));
    let footer: ArchiveFooter = match t.version {
        1 => postcard::from_bytes::<ArchiveFooterV1>(body).map_err(bad)?.into(),
        _ => postcard::from_bytes(&unframe(body, object, "archive footer")?).map_err(bad)?,
    };
    footer.validate(t.footer_offset, object)?;
    footer.times(object)?;
    if footer.event_count != u64::from(t.event_count) {
        return Err(Error::Corrupt(format!("{object}: archive footer disagrees with its trailer")));
    }
    Ok(footer)
}

/// Decodes a space filter section ([`SpaceFilter::At`]).
pub fn decode_space_filter(frame: &[u8], object: &str) -> Result<Bloom, Error> {
    let raw = unframe(frame, object, "space filter")?;
    postcard::from_bytes(&raw).map_err(|e| Error::Corrupt(format!("{object}: space filter: {e}")))
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
