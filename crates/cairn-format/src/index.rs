//! Index objects: `[page]* footer trailer`, covering a contiguous seq range.
//!
//! The footer (postcard) holds the segment table (sorted by base seq), a
//! sparse index of the pages (first and last stream name of each), and a
//! filter of the stream names. Each page is framed like a block (codec,
//! lengths, CRC32C) and holds a run of the stream table sorted by name: for
//! each stream its last revision and, per segment, the blocks (offset,
//! length, first index, first revision) that hold it, so a stream read goes
//! from a page straight to block range GETs. The trailer is a segment trailer
//! with magic `CAIRNIDX`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::block::{frame, unframe, Codec};
use crate::bloom::{Bloom, BloomHash};
use crate::segment::{encode_tail, split_tail, Footer};
use crate::Error;

pub const INDEX_MAGIC: &[u8; 8] = b"CAIRNIDX";
/// Index format version. Persisted.
/// Version 2 adds `core_len` to the segment table; version 1 still decodes.
pub const INDEX_VERSION: u32 = 2;
/// A page is closed past this many encoded bytes.
const PAGE_TARGET: usize = 64 << 10;

/// A segment as the manifest and index objects name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub name: String,
    pub base_seq: u64,
    pub count: u64,
    pub bytes: u64,
    pub footer_offset: u64,
    pub footer_len: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    /// The last this-many bytes hold the footer's core (blocks and tags,
    /// FORMAT.md): what scans and tag reads fetch. 0 for a version 1
    /// segment, or one recorded before it was: they fetch the whole footer.
    #[serde(default)]
    pub core_len: u32,
}

/// A segment reference as version 1 index objects hold it.
#[derive(Deserialize)]
struct SegmentRefV1 {
    name: String,
    base_seq: u64,
    count: u64,
    bytes: u64,
    footer_offset: u64,
    footer_len: u32,
    min_ts: i64,
    max_ts: i64,
}

/// A version 1 index footer.
#[derive(Deserialize)]
struct IndexFooterV1 {
    first_seq: u64,
    end_seq: u64,
    segments: Vec<SegmentRefV1>,
    pages: Vec<PageMeta>,
    stream_filter: Bloom,
    stream_count: u64,
}

impl From<IndexFooterV1> for IndexFooter {
    fn from(f: IndexFooterV1) -> Self {
        let segments = f
            .segments
            .into_iter()
            .map(|s| SegmentRef { name: s.name, base_seq: s.base_seq, count: s.count, bytes: s.bytes, footer_offset: s.footer_offset, footer_len: s.footer_len, min_ts: s.min_ts, max_ts: s.max_ts, core_len: 0 })
            .collect();
        IndexFooter { first_seq: f.first_seq, end_seq: f.end_seq, segments, pages: f.pages, stream_filter: f.stream_filter, stream_count: f.stream_count }
    }
}

impl SegmentRef {
    pub fn end_seq(&self) -> u64 {
        self.base_seq + self.count
    }
}

/// One block of a segment that holds a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub offset: u64,
    pub len: u32,
    pub first_index: u32,
    pub count: u32,
    /// The stream's first revision in the block.
    pub first_revision: u64,
}

/// A stream's events in one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Index into the segment table.
    pub segment: u32,
    pub first_revision: u64,
    pub count: u32,
    pub blocks: Vec<BlockRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRuns {
    pub name: String,
    pub last_revision: u64,
    pub runs: Vec<Run>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageMeta {
    pub first: String,
    pub last: String,
    pub offset: u64,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFooter {
    pub first_seq: u64,
    pub end_seq: u64,
    pub segments: Vec<SegmentRef>,
    pub pages: Vec<PageMeta>,
    pub stream_filter: Bloom,
    pub stream_count: u64,
}

impl IndexFooter {
    /// The page that may hold `stream`, if the filter lets it through.
    pub fn page_for(&self, stream: &str) -> Option<usize> {
        self.page_for_hashed(stream, BloomHash::of(stream.as_bytes()))
    }

    /// [`IndexFooter::page_for`] with the filter hash computed by the caller.
    pub fn page_for_hashed(&self, stream: &str, h: BloomHash) -> Option<usize> {
        if !self.stream_filter.may_contain(h) {
            return None;
        }
        let i = self.pages.partition_point(|p| p.last.as_str() < stream);
        (i < self.pages.len() && self.pages[i].first.as_str() <= stream).then_some(i)
    }

    /// The segment holding `seq`.
    pub fn segment_of(&self, seq: u64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.base_seq <= seq);
        (i > 0 && seq < self.segments[i - 1].end_seq()).then(|| i - 1)
    }

    fn validate(&self, object: &str) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Corrupt(format!("{object}: index footer: {why}")));
        let mut seq = self.first_seq;
        for s in &self.segments {
            if s.base_seq != seq || s.count == 0 {
                return bad("segment table not contiguous");
            }
            seq = match seq.checked_add(s.count) {
                Some(v) => v,
                None => return bad("seq overflow"),
            };
        }
        if seq != self.end_seq {
            return bad("segment table does not cover the seq range");
        }
        let mut offset = 0;
        for w in self.pages.iter() {
            if w.offset != offset || w.first > w.last {
                return bad("pages out of place");
            }
            offset += u64::from(w.len);
        }
        for w in self.pages.windows(2) {
            if w[0].last >= w[1].first {
                return bad("pages not sorted");
            }
        }
        Ok(())
    }
}

/// A built index object.
pub struct EncodedIndex {
    pub bytes: Vec<u8>,
    pub footer_offset: u64,
    pub footer_len: u32,
    pub footer: IndexFooter,
}

/// Collects stream runs from segments (or from other index objects) in seq
/// order and encodes one index object.
#[derive(Default)]
pub struct IndexBuilder {
    segments: Vec<SegmentRef>,
    streams: BTreeMap<String, StreamRuns>,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push_segment(&mut self, seg: SegmentRef) -> Result<u32, Error> {
        if let Some(last) = self.segments.last() {
            if last.end_seq() != seg.base_seq {
                return Err(Error::Invalid(format!("segment {} does not follow {}", seg.name, last.name)));
            }
        }
        self.segments.push(seg);
        Ok(self.segments.len() as u32 - 1)
    }

    fn push_run(&mut self, name: &str, run: Run) -> Result<(), Error> {
        let last = run.first_revision + u64::from(run.count) - 1;
        match self.streams.get_mut(name) {
            Some(s) => {
                if run.first_revision != s.last_revision + 1 {
                    return Err(Error::Invalid(format!("stream {name:?}: revisions not consecutive across segments")));
                }
                s.last_revision = last;
                s.runs.push(run);
            }
            None => {
                self.streams.insert(name.to_string(), StreamRuns { name: name.to_string(), last_revision: last, runs: vec![run] });
            }
        }
        Ok(())
    }

    /// Adds the next segment, from its footer.
    pub fn add_segment(&mut self, seg: SegmentRef, footer: &Footer) -> Result<(), Error> {
        let si = self.push_segment(seg)?;
        for s in &footer.streams {
            let blocks = s
                .blocks
                .iter()
                .map(|b| {
                    let m = &footer.blocks[b.block as usize];
                    BlockRef { offset: m.offset, len: m.len, first_index: m.first_index, count: m.count, first_revision: b.first_revision }
                })
                .collect();
            self.push_run(&s.name, Run { segment: si, first_revision: s.first_revision, count: s.count, blocks })?;
        }
        Ok(())
    }

    /// Adds the whole content of an index object: its footer and all its pages.
    pub fn add_index(&mut self, footer: &IndexFooter, pages: Vec<Vec<StreamRuns>>) -> Result<(), Error> {
        let shift = self.segments.len() as u32;
        for s in &footer.segments {
            self.push_segment(s.clone())?;
        }
        for page in pages {
            for s in page {
                for mut run in s.runs {
                    run.segment += shift;
                    self.push_run(&s.name, run)?;
                }
            }
        }
        Ok(())
    }

    pub fn finish(self, codec: Codec, zstd_level: i32) -> Result<EncodedIndex, Error> {
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return Err(Error::Invalid("an index object covers at least one segment".into()));
        };
        let (first_seq, end_seq) = (first.base_seq, last.end_seq());
        encode_index(first_seq, end_seq, self.segments, self.streams, codec, zstd_level)
    }
}

/// The last revisions of streams whose objects retention dropped, encoded
/// as an index object with no segments and no runs (a stream table only).
#[derive(Default)]
pub struct HeadsBuilder {
    streams: BTreeMap<String, StreamRuns>,
}

impl HeadsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `stream` reached `last_revision` (the highest one wins).
    pub fn add(&mut self, stream: &str, last_revision: u64) {
        match self.streams.get_mut(stream) {
            Some(s) => s.last_revision = s.last_revision.max(last_revision),
            None => {
                self.streams.insert(stream.to_string(), StreamRuns { name: stream.to_string(), last_revision, runs: Vec::new() });
            }
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Encodes the heads of every stream with events before `end_seq`.
    pub fn finish(self, end_seq: u64, codec: Codec, zstd_level: i32) -> Result<EncodedIndex, Error> {
        encode_index(end_seq, end_seq, Vec::new(), self.streams, codec, zstd_level)
    }
}

fn encode_index(first_seq: u64, end_seq: u64, segments: Vec<SegmentRef>, streams: BTreeMap<String, StreamRuns>, codec: Codec, zstd_level: i32) -> Result<EncodedIndex, Error> {
    let stream_count = streams.len() as u64;
    let stream_filter = Bloom::from_items(streams.keys().map(|s| s.as_bytes()).collect::<Vec<_>>().into_iter());
    let mut bytes = Vec::new();
    let mut pages = Vec::new();
    let mut page: Vec<StreamRuns> = Vec::new();
    let mut page_size = 0;
    let mut flush = |page: &mut Vec<StreamRuns>, bytes: &mut Vec<u8>| -> Result<(), Error> {
        if page.is_empty() {
            return Ok(());
        }
        let raw = postcard::to_stdvec(&*page).map_err(|e| Error::Invalid(format!("index page: {e}")))?;
        let frame = frame(&raw, codec, zstd_level)?;
        pages.push(PageMeta {
            first: page[0].name.clone(),
            last: page[page.len() - 1].name.clone(),
            offset: bytes.len() as u64,
            len: frame.len() as u32,
        });
        bytes.extend_from_slice(&frame);
        page.clear();
        Ok(())
    };
    for (_, s) in streams {
        page_size += s.name.len() + 16 + s.runs.iter().map(|r| 16 + r.blocks.len() * 20).sum::<usize>();
        page.push(s);
        if page_size >= PAGE_TARGET {
            flush(&mut page, &mut bytes)?;
            page_size = 0;
        }
    }
    flush(&mut page, &mut bytes)?;
    let footer = IndexFooter { first_seq, end_seq, segments, pages, stream_filter, stream_count };
    let footer_offset = bytes.len() as u64;
    let body = postcard::to_stdvec(&footer).map_err(|e| Error::Invalid(format!("index footer: {e}")))?;
    let body = encode_tail(body, INDEX_MAGIC, INDEX_VERSION, 0, footer_offset)?;
    let footer_len = body.len() as u32;
    bytes.extend_from_slice(&body);
    Ok(EncodedIndex { bytes, footer_offset, footer_len, footer })
}

/// Decodes an index footer from `tail` (footer + trailer).
pub fn decode_index_footer(tail: &[u8], footer_offset: Option<u64>, object: &str) -> Result<IndexFooter, Error> {
    let (t, body) = split_tail(tail, INDEX_MAGIC, INDEX_VERSION, footer_offset, object)?;
    let bad = |e: postcard::Error| Error::Corrupt(format!("{object}: index footer: {e}"));
    let footer: IndexFooter = match t.version {
        1 => postcard::from_bytes::<IndexFooterV1>(body).map_err(bad)?.into(),
        _ => postcard::from_bytes(body).map_err(bad)?,
    };
    footer.validate(object)?;
    if footer.pages.last().map_or(0, |p| p.offset + u64::from(p.len)) != t.footer_offset {
        return Err(Error::Corrupt(format!("{object}: index footer disagrees with trailer")));
    }
    Ok(footer)
}

/// Decodes one page of an index object.
pub fn decode_page(frame: &[u8], object: &str) -> Result<Vec<StreamRuns>, Error> {
    let err = |why: String| Error::Corrupt(format!("{object}: index page: {why}"));
    let raw = unframe(frame, object, "index page")?;
    let page: Vec<StreamRuns> = postcard::from_bytes(&raw).map_err(|e| err(e.to_string()))?;
    for w in page.windows(2) {
        if w[0].name >= w[1].name {
            return Err(err("streams not sorted".into()));
        }
    }
    for s in &page {
        // No runs at all is a head only (a heads object's entries).
        if s.runs.iter().any(|r| r.count == 0 || r.blocks.is_empty()) {
            return Err(err(format!("stream {:?}: empty run", s.name)));
        }
    }
    Ok(page)
}
