//! Reads: the whole store from a seq, one stream from a revision, stream
//! heads, and id look-ups for idempotency.
//!
//! A reader takes the newest manifest when it starts and never pins it: when
//! an object it needs was collected (404), it reloads the manifest and
//! resumes from its cursor (a seq or a revision), which roll-up never
//! changes. Memory is bounded by the range size times the read-ahead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use cairn_format::block::{Event, BLOCK_HEADER_LEN};
use cairn_format::bloom::BloomHash;
use cairn_format::index::{IndexFooter, SegmentRef, StreamRuns};
use cairn_format::manifest::{ArchiveRef, IndexRef, Manifest};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{StreamExt, TryStreamExt};

use crate::cache::Block;
use crate::error::{ReadError, StorageError};
use crate::store::Store;
use crate::writer::{stream_hash, IdHit};
use crate::AppendCondition;

/// An event with its position in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEvent {
    pub seq: u64,
    pub event: Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// At most this many events (`None`: no bound).
    pub limit: Option<usize>,
    /// Only events with this tag.
    pub tag: Option<(String, String)>,
}

fn has_tag(e: &Event, tag: &Option<(String, String)>) -> bool {
    tag.as_ref().is_none_or(|(k, v)| e.tags.iter().any(|(a, b)| a == k && b == v))
}

/// The last revision of `stream` as of manifest `m`: recent segments newest
/// first, then index objects newest first, each skipped by its filter.
pub(crate) async fn head(store: &Store, m: &Manifest, stream: &str) -> Result<Option<u64>, StorageError> {
    Ok(heads(store, m, &[stream]).await?[0])
}

/// The heads of many streams at once: every footer and index page is
/// looked at once for all of them, not once per stream (a batch of
/// thousands of new streams must prove each absent from all recent
/// segments).
pub(crate) async fn heads(store: &Store, m: &Manifest, names: &[&str]) -> Result<Vec<Option<u64>>, StorageError> {
    let hashes: Vec<BloomHash> = names.iter().map(|n| BloomHash::of(n.as_bytes())).collect();
    let mut found: Vec<Option<u64>> = vec![None; names.len()];
    let mut open: Vec<usize> = (0..names.len()).collect();
    // Newest first, FOOTER_WINDOW footers in flight (a cold node on object
    // storage would otherwise pay a round trip a segment); what is in
    // flight when the last head is found is dropped.
    let mut footers = windowed(m.segments.iter().rev().map(|seg| store.footer(seg)));
    while !open.is_empty() {
        let Some(f) = footers.try_next().await? else { break };
        open.retain(|&i| match f.stream_hashed(names[i], hashes[i]) {
            Some(s) => {
                found[i] = Some(s.last_revision());
                false
            }
            None => true,
        });
    }
    // Then the heads of streams whose objects retention dropped.
    for idx in m.indexes.iter().rev().chain(m.heads.iter()) {
        if open.is_empty() {
            break;
        }
        let f = store.index_footer(idx).await?;
        let mut by_page: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
        for &i in &open {
            if let Some(p) = f.page_for_hashed(names[i], hashes[i]) {
                by_page.entry(p).or_default().push(i);
            }
        }
        for (p, members) in by_page {
            let page = store.page(&idx.name, &f.pages[p]).await?;
            for i in members {
                if let Ok(k) = page.binary_search_by(|s| s.name.as_str().cmp(names[i])) {
                    found[i] = Some(page[k].last_revision);
                }
            }
        }
        open.retain(|&i| found[i].is_none());
    }
    Ok(found)
}

/// A block of a stream: where it is and the stream's first revision in it.
#[derive(Clone, Debug)]
struct StreamBlockLoc {
    segment: Arc<str>,
    base_seq: u64,
    offset: u64,
    len: u32,
    first_index: u32,
    first_revision: u64,
    /// The stream's events in an archive instead (all of them, at once).
    archive: Option<ArchiveRef>,
}

/// Every block holding `stream`, in revision order; `head` is its last
/// revision (archives hold a count of a stream's events, not revisions:
/// theirs are counted back from what follows them).
async fn stream_blocks(store: &Store, m: &Manifest, stream: &str, head: Option<u64>) -> Result<Vec<StreamBlockLoc>, StorageError> {
    // One directory page an archive (none where its filter rules the
    // stream out), FOOTER_WINDOW asked at once: on object storage each is
    // a round trip.
    let counts: Vec<u64> = windowed(m.archives.iter().map(|a| crate::tier::stream_count(store, a, stream))).try_collect().await?;
    let archived: Vec<(&ArchiveRef, u64)> = m.archives.iter().zip(counts).filter(|(_, n)| *n > 0).collect();
    let mut out = stream_blocks_after_archives(store, m, stream).await?;
    let mut next = out.first().map(|b| b.first_revision).or(head.map(|h| h + 1));
    let mut front = Vec::with_capacity(archived.len());
    for (a, n) in archived.into_iter().rev() {
        let first = next.and_then(|r| r.checked_sub(n)).ok_or_else(|| StorageError::Corrupt(format!("{}: more events of {stream:?} than revisions before", a.name)))?;
        front.push(StreamBlockLoc { segment: a.name.as_str().into(), base_seq: a.first_seq, offset: 0, len: 0, first_index: 0, first_revision: first, archive: Some(a.clone()) });
        next = Some(first);
    }
    front.reverse();
    front.append(&mut out);
    Ok(front)
}

async fn stream_blocks_after_archives(store: &Store, m: &Manifest, stream: &str) -> Result<Vec<StreamBlockLoc>, StorageError> {
    let mut out = Vec::new();
    // Every object is asked, FOOTER_WINDOW at a time.
    let pages: Vec<_> = windowed(m.indexes.iter().map(|idx| index_stream_page(store, idx, stream))).try_collect().await?;
    for (idx, found) in m.indexes.iter().zip(pages) {
        let Some((f, page)) = found else { continue };
        let Ok(i) = page.binary_search_by(|s| s.name.as_str().cmp(stream)) else { continue };
        for run in &page[i].runs {
            let seg = f
                .segments
                .get(run.segment as usize)
                .ok_or_else(|| StorageError::Corrupt(format!("{}: run names segment {}", idx.name, run.segment)))?;
            let name: Arc<str> = seg.name.as_str().into();
            for b in &run.blocks {
                out.push(StreamBlockLoc { segment: name.clone(), base_seq: seg.base_seq, offset: b.offset, len: b.len, first_index: b.first_index, first_revision: b.first_revision, archive: None });
            }
        }
    }
    let footers: Vec<_> = windowed(m.segments.iter().map(|seg| store.footer(seg))).try_collect().await?;
    for (seg, f) in m.segments.iter().zip(footers) {
        let Some(s) = f.stream(stream) else { continue };
        let name: Arc<str> = seg.name.as_str().into();
        for b in &s.blocks {
            let meta = &f.blocks[b.block as usize];
            out.push(StreamBlockLoc { segment: name.clone(), base_seq: seg.base_seq, offset: meta.offset, len: meta.len, first_index: meta.first_index, first_revision: b.first_revision, archive: None });
        }
    }
    Ok(out)
}

/// An index object's footer and the directory page that would hold
/// `stream` (none where its filter rules the stream out).
async fn index_stream_page(store: &Store, idx: &IndexRef, stream: &str) -> Result<Option<(Arc<IndexFooter>, Arc<Vec<StreamRuns>>)>, StorageError> {
    let f = store.index_footer(idx).await?;
    let Some(p) = f.page_for(stream) else { return Ok(None) };
    let page = store.page(&idx.name, &f.pages[p]).await?;
    Ok(Some((f, page)))
}

/// Up to `n` events of `stream` from revision `from`, forwards.
pub(crate) async fn stream_events(store: &Arc<Store>, m: &Arc<Manifest>, stream: &str, from: u64, n: usize) -> Result<Vec<ReadEvent>, StorageError> {
    let mut scan = StreamScan::at(store.clone(), m.clone(), stream, Some(from), Direction::Forward, ReadOptions { limit: Some(n), tag: None }).await?;
    let mut out = Vec::new();
    loop {
        match scan.next_chunk().await {
            Ok(Some(chunk)) => out.extend(chunk),
            Ok(None) => return Ok(out),
            // Retention dropped what was asked for: nothing there to find.
            Err(ReadError::Truncated { .. }) => return Ok(out),
            Err(ReadError::Storage(s)) => return Err(s),
            Err(other) => return Err(StorageError::Backend(other.to_string())),
        }
    }
}

/// Finds ids among the events of the seq ranges `gaps`, by the segments' id
/// filters; candidates are confirmed by decoding their blocks.
pub(crate) async fn find_ids(store: &Store, m: &Manifest, gaps: &[(u64, u64)], ids: &[[u8; 16]]) -> Result<HashMap<[u8; 16], IdHit>, StorageError> {
    let mut found = HashMap::new();
    let hashes: Vec<BloomHash> = ids.iter().map(|i| BloomHash::of(i)).collect();
    for &(from, to) in gaps {
        // Ids of events retention dropped, or tiering sealed (never inside
        // the window), are not looked for.
        let from = from.max(m.archived_end());
        for seg in store.segments_between(m, from, to).await? {
            let f = store.footer(&seg).await?;
            let mut blocks: Vec<usize> = Vec::new();
            for h in &hashes {
                for (first, count) in f.id_candidates(*h) {
                    let (Some(a), Some(b)) = (f.block_of(first), f.block_of(first + count - 1)) else { continue };
                    blocks.extend(a..=b);
                }
            }
            blocks.sort_unstable();
            blocks.dedup();
            for bi in blocks {
                let b = &f.blocks[bi];
                let evs = store.block(&seg.name, b.offset, b.len, b.first_index, false).await?;
                for (index, e) in evs.iter() {
                    let seq = seg.base_seq + u64::from(index);
                    if seq < from || seq >= to {
                        continue;
                    }
                    if let Some(id) = e.id {
                        if ids.contains(&id) {
                            found.insert(id, IdHit { seq, revision: e.revision, stream_hash: stream_hash(&e.stream) });
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The first seq in `[from, to)` of an event matching condition `c`. A
/// query item with tags looks only at the blocks the segments' tag
/// indexes list for all of its tags; one without tags reads every block.
pub(crate) async fn first_match(store: &Store, m: &Manifest, from: u64, to: u64, c: &AppendCondition) -> Result<Option<u64>, StorageError> {
    // Archives first: they are the oldest, so a match there is the first.
    for arc in m.archives.iter().filter(|x| x.end_seq > from && x.first_seq < to) {
        if let Some(seq) = crate::tier::first_match(store, arc, from, to, c).await? {
            return Ok(Some(seq));
        }
    }
    for seg in store.segments_between(m, from, to).await? {
        let f = store.block_index(&seg).await?;
        let blocks = f.blocks();
        let first = f.block_of(from.saturating_sub(seg.base_seq) as u32).unwrap_or(0);
        let mut wanted: Vec<usize> = Vec::new();
        for q in &c.fail_if_events_match {
            let Some(((k, v), rest)) = q.tags.split_first() else {
                wanted = (first..blocks.len()).collect();
                break;
            };
            let others: Vec<Vec<u32>> = rest
                .iter()
                .map(|(k, v)| {
                    let mut l = f.tag_blocks(k, v).to_vec();
                    l.sort_unstable();
                    l
                })
                .collect();
            let all = f.tag_blocks(k, v).iter().filter(|b| others.iter().all(|l| l.binary_search(b).is_ok()));
            wanted.extend(all.map(|b| *b as usize).filter(|b| *b >= first && *b < blocks.len()));
        }
        wanted.sort_unstable();
        wanted.dedup();
        for bi in wanted {
            let b = &blocks[bi];
            let evs = store.block(&seg.name, b.offset, b.len, b.first_index, false).await?;
            for (index, e) in evs.iter() {
                let seq = seg.base_seq + u64::from(index);
                if seq >= from && seq < to && c.matches(e) {
                    return Ok(Some(seq));
                }
            }
        }
    }
    Ok(None)
}

/// Events of a store scan, left in the blocks they were decoded into.
pub struct Chunk {
    base: u64,
    blocks: Vec<Arc<Block>>,
    /// Seqs `lo..hi`, filtered by `tag`.
    lo: u64,
    hi: u64,
    tag: Option<(String, String)>,
}

impl Chunk {
    /// (seq, event), in seq order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Event)> {
        let (base, lo, hi) = (self.base, self.lo, self.hi);
        self.blocks
            .iter()
            .flat_map(|b| b.iter())
            .map(move |(index, e)| (base + u64::from(index), e))
            .filter(move |(seq, e)| *seq >= lo && *seq < hi && has_tag(e, &self.tag))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// A range GET over adjacent blocks of one segment, or an archive.
struct Unit {
    seg: SegmentRef,
    /// (offset, len, first_index) of each block, adjacent.
    blocks: Vec<(u64, u32, u32)>,
    /// The seq this unit's scan reaches (for `next`).
    end_seq: u64,
    /// An archive, read whole (or by its postings for a tag), instead.
    archive: Option<ArchiveRef>,
}

type Fetched = Result<(u64, Vec<Arc<Block>>, u64), StorageError>;

/// A read of the whole store from a seq, in seq order.
pub struct StoreScan {
    store: Arc<Store>,
    view: Arc<Manifest>,
    pos: u64,
    end: u64,
    left: usize,
    tag: Option<(String, String)>,
    budget: u64,
    /// Archives to read before `segments`.
    archives: VecDeque<ArchiveRef>,
    segments: VecDeque<SegmentRef>,
    units: VecDeque<Unit>,
    inflight: FuturesOrdered<BoxFuture<'static, Fetched>>,
    /// Whether the tail was probed for newer commits (once per read).
    probed: bool,
}

impl StoreScan {
    pub(crate) async fn new(store: Arc<Store>, from: u64, opts: ReadOptions) -> Result<StoreScan, ReadError> {
        let mut view = store.view_within(store.shared.config.poll_interval).await?;
        let probed = from >= view.next_seq;
        if probed {
            view = store.refresh().await?;
        }
        if from > view.next_seq {
            return Err(ReadError::PositionBeyondEnd { from, next: view.next_seq });
        }
        if from < view.first_seq {
            return Err(ReadError::Truncated { first_seq: view.first_seq, first_revision: None });
        }
        let budget = store.shared.config.tag_scan_budget;
        let mut s = StoreScan {
            store,
            end: view.next_seq,
            view,
            pos: from,
            left: opts.limit.unwrap_or(usize::MAX),
            tag: opts.tag,
            budget,
            archives: VecDeque::new(),
            segments: VecDeque::new(),
            units: VecDeque::new(),
            inflight: FuturesOrdered::new(),
            probed,
        };
        // An object of the manifest may be collected under us: reload.
        for attempt in 0.. {
            match s.plan().await {
                Ok(()) => break,
                Err(ReadError::Storage(StorageError::NotFound(_))) if attempt < 3 => s.view = s.store.refresh().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(s)
    }

    /// Where to continue: the seq after the last one scanned.
    pub fn next(&self) -> u64 {
        self.pos
    }

    /// The store's next seq when the read started.
    pub fn end(&self) -> u64 {
        self.end
    }

    async fn plan(&mut self) -> Result<(), ReadError> {
        if self.pos < self.view.first_seq {
            return Err(ReadError::Truncated { first_seq: self.view.first_seq, first_revision: None });
        }
        self.units.clear();
        self.inflight = FuturesOrdered::new();
        let (pos, end) = (self.pos, self.end);
        self.archives = self.view.archives.iter().filter(|a| a.end_seq > pos && a.first_seq < end).cloned().collect();
        self.segments = self.store.segments_between(&self.view, self.pos, self.end).await?.into();
        Ok(())
    }

    /// Plans the units of the next segment.
    async fn plan_segment(&mut self) -> Result<bool, StorageError> {
        if let Some(a) = self.archives.pop_front() {
            let seg = SegmentRef { name: a.name.clone(), base_seq: a.first_seq, count: a.end_seq - a.first_seq, bytes: a.bytes, footer_offset: 0, footer_len: 0, min_ts: 0, max_ts: a.max_ts, core_len: 0 };
            self.units.push_back(Unit { seg, blocks: Vec::new(), end_seq: a.end_seq, archive: Some(a) });
            return Ok(true);
        }
        let Some(seg) = self.segments.pop_front() else { return Ok(false) };
        let f = self.store.block_index(&seg).await?;
        let blocks = f.blocks();
        let max = self.store.shared.config.scan_range_bytes;
        let first_index = self.pos.saturating_sub(seg.base_seq) as u32;
        let start = f.block_of(first_index).unwrap_or(0);
        let wanted: Vec<usize> = match &self.tag {
            None => (start..blocks.len()).collect(),
            Some((k, v)) => f.tag_blocks(k, v).iter().map(|b| *b as usize).filter(|b| *b >= start).collect(),
        };
        // A unit is bounded by its decoded size: that, times the read-ahead,
        // bounds a scan's memory (compressed sizes would let a 12x
        // compressible store decode 12 times as much).
        let mut unit: Option<Unit> = None;
        let mut decoded = 0u64;
        for bi in wanted {
            let b = &blocks[bi];
            let adjacent = unit.as_ref().is_some_and(|u| {
                let (o, l, _) = u.blocks[u.blocks.len() - 1];
                o + u64::from(l) == b.offset && decoded + u64::from(b.decoded_len) <= max
            });
            if !adjacent {
                if let Some(u) = unit.take() {
                    self.units.push_back(u);
                }
                unit = Some(Unit { seg: seg.clone(), blocks: Vec::new(), end_seq: 0, archive: None });
                decoded = 0;
            }
            decoded += u64::from(b.decoded_len);
            if let Some(u) = unit.as_mut() {
                u.blocks.push((b.offset, b.len, b.first_index));
                u.end_seq = seg.base_seq + u64::from(b.first_index + b.count);
            }
        }
        if let Some(u) = unit.take() {
            self.units.push_back(u);
        }
        // A tag read that skips a whole segment has still scanned it.
        if self.units.is_empty() && self.inflight.is_empty() {
            self.pos = self.pos.max(seg.end_seq());
        }
        self.budget = self.budget.saturating_sub(blocks.len() as u64 * 64);
        Ok(true)
    }

    fn fetch(&self, u: Unit) -> BoxFuture<'static, Fetched> {
        let store = self.store.clone();
        let tag = self.tag.clone();
        Box::pin(async move {
            if let Some(a) = &u.archive {
                // As blocks: the whole archive in seq order is one block
                // from its first seq; a tag's events one block each.
                return match &tag {
                    None => {
                        // Decoded once into the block cache: a reader paging
                        // through an archive does not read it again a page.
                        let key: Arc<str> = a.name.as_str().into();
                        if let Some(b) = store.shared.caches.block(&key, 0) {
                            return Ok((a.end_seq - b.len() as u64, vec![b], a.end_seq));
                        }
                        // Decoding a whole archive is a long piece of CPU
                        // work: on a task of its own it runs beside the
                        // streaming of what comes before it, not within it.
                        let (store, a) = (store.clone(), a.clone());
                        let task = tokio::spawn(async move {
                            let (base, events) = crate::tier::all(&store, &a).await?;
                            let block = Arc::new(Block::new(events, 0));
                            store.shared.caches.put_block(key, 0, block.clone());
                            Ok((base, vec![block], a.end_seq))
                        });
                        let _abort = AbortOnDrop(task.abort_handle());
                        task.await.map_err(|e| StorageError::Backend(format!("an archive read failed: {e}")))?
                    }
                    Some((k, v)) => {
                        let evs = crate::tier::tagged(&store, a, k, v).await?;
                        let blocks = evs.into_iter().map(|e| Arc::new(Block::new(vec![e.event], (e.seq - a.first_seq) as u32))).collect();
                        Ok((a.first_seq, blocks, a.end_seq))
                    }
                };
            }
            let name = u.seg.name.as_str();
            let all_cached: Option<Vec<_>> = u.blocks.iter().map(|(o, _, _)| store.shared.caches.block(&name.into(), *o)).collect();
            if let Some(blocks) = all_cached {
                return Ok((u.seg.base_seq, blocks, u.end_seq));
            }
            let start = u.blocks[0].0;
            let (lo, ll, _) = u.blocks[u.blocks.len() - 1];
            let bytes = store.shared.objects.get_range(&store.paths.object(name), start..lo + u64::from(ll)).await?;
            let mut out = Vec::with_capacity(u.blocks.len());
            for (o, l, fi) in &u.blocks {
                let at = (o - start) as usize;
                let frame = bytes.get(at..at + *l as usize).filter(|f| f.len() >= BLOCK_HEADER_LEN).ok_or_else(|| StorageError::Corrupt(format!("{name}: short range")))?;
                out.push(store.decode_cached(name, *o, frame, *fi)?);
            }
            Ok((u.seg.base_seq, out, u.end_seq))
        })
    }

    /// The next events, or `None` at the end (of the store as it was when
    /// the read started, of the limit, or of the tag scan budget).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ReadEvent>>, ReadError> {
        Ok(self.next_view().await?.map(|c| c.iter().map(|(seq, e)| ReadEvent { seq, event: e.clone() }).collect()))
    }

    /// Like [`StoreScan::next_chunk`], without copying: the events stay in
    /// the decoded (often cached) blocks they were read from.
    pub async fn next_view(&mut self) -> Result<Option<Chunk>, ReadError> {
        loop {
            if self.left == 0 {
                return Ok(None);
            }
            if self.pos >= self.end {
                // A read that reaches the cached tail probes once, so a
                // client sees its own writes through any node.
                if self.probed || (self.tag.is_some() && self.budget == 0) {
                    return Ok(None);
                }
                self.probed = true;
                let m = self.store.refresh().await?;
                if m.next_seq <= self.end {
                    return Ok(None);
                }
                self.end = m.next_seq;
                self.view = m;
                self.plan().await?;
                continue;
            }
            while self.inflight.len() < self.store.shared.config.read_ahead.max(1) {
                if let Some(u) = self.units.pop_front() {
                    let f = self.fetch(u);
                    self.inflight.push_back(f);
                    continue;
                }
                if self.tag.is_some() && self.budget == 0 {
                    break;
                }
                let before = self.pos;
                match self.plan_segment().await {
                    Ok(true) => {
                        if self.pos != before && self.units.is_empty() {
                            // A skipped segment: report progress.
                            return Ok(Some(Chunk { base: 0, blocks: Vec::new(), lo: 0, hi: 0, tag: None }));
                        }
                    }
                    Ok(false) => break,
                    Err(StorageError::NotFound(_)) => {
                        self.resume().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(r) = self.inflight.next().await else {
                if self.tag.is_some() && self.budget == 0 {
                    return Ok(None);
                }
                self.pos = self.end;
                return Ok(None);
            };
            let (base, blocks, unit_end) = match r {
                Ok(v) => v,
                Err(StorageError::NotFound(_)) => {
                    self.resume().await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Only counts here: which seqs the chunk holds.
            let lo = self.pos;
            let mut hi = self.end.min(unit_end.max(self.pos));
            let mut last = None;
            'blocks: for b in &blocks {
                if self.tag.is_some() {
                    self.budget = self.budget.saturating_sub(b.weight());
                }
                for (index, e) in b.iter() {
                    let seq = base + u64::from(index);
                    if seq < lo || seq >= self.end {
                        continue;
                    }
                    if has_tag(e, &self.tag) {
                        last = Some(seq);
                        self.left -= 1;
                        if self.left == 0 {
                            hi = seq + 1;
                            break 'blocks;
                        }
                    }
                }
            }
            self.pos = if self.left == 0 { last.map_or(self.pos, |s| s + 1) } else { unit_end.max(self.pos) };
            return Ok(Some(Chunk { base, blocks, lo, hi, tag: self.tag.clone() }));
        }
    }

    /// An object was collected: take the newest manifest and plan again
    /// from the cursor.
    async fn resume(&mut self) -> Result<(), ReadError> {
        tracing::debug!(pos = self.pos, "object gone, reloading the manifest");
        self.view = self.store.refresh().await?;
        self.plan().await?;
        Ok(())
    }
}

/// A read of one stream from a revision, forwards or backwards.
pub struct StreamScan {
    store: Arc<Store>,
    stream: String,
    direction: Direction,
    /// The next revision to return (forward: the lowest; backward: the
    /// highest); `None` when a backward read passed revision 0.
    next: Option<u64>,
    left: usize,
    tag: Option<(String, String)>,
    blocks: VecDeque<StreamBlockLoc>,
    /// Blocks being read ahead, in order: each a task, so blocks are
    /// fetched and decoded on all cores at once.
    inflight: VecDeque<(StreamBlockLoc, BlockTask)>,
    /// How many blocks to read ahead: 1 at first (a read of a few events
    /// costs no more), doubled with every block up to [`STREAM_READ_AHEAD`].
    depth: usize,
    /// The last revision of the stream when the read started.
    head: Option<u64>,
    /// The store's first seq (events before it were truncated).
    first_seq: u64,
    returned_any: bool,
}

/// A block being fetched and decoded: the stream's events in it, with
/// their indexes in the segment.
type BlockTask = tokio::task::JoinHandle<Result<Vec<(u32, Event)>, StorageError>>;

/// The most blocks a stream read fetches at once.
const STREAM_READ_AHEAD: usize = 16;

/// Stops a task when the read that awaits it is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Footers (and directory pages) a stream read or head look-up fetches at
/// once.
const FOOTER_WINDOW: usize = 16;

/// `asks`, [`FOOTER_WINDOW`] in flight at a time, answered in order. They
/// are gathered first: the stream then holds only the futures, not the
/// closure that made them (which would keep the caller's future from
/// being `Send`).
fn windowed<F: std::future::Future>(asks: impl Iterator<Item = F>) -> futures::stream::Buffered<futures::stream::Iter<std::vec::IntoIter<F>>> {
    futures::stream::iter(asks.collect::<Vec<_>>()).buffered(FOOTER_WINDOW)
}

impl Drop for StreamScan {
    fn drop(&mut self) {
        for (_, t) in &self.inflight {
            t.abort();
        }
    }
}

impl StreamScan {
    pub(crate) async fn new(store: Arc<Store>, stream: &str, from: Option<u64>, direction: Direction, opts: ReadOptions) -> Result<StreamScan, ReadError> {
        let view = store.refresh().await?;
        Ok(StreamScan::at(store, view, stream, from, direction, opts).await?)
    }

    async fn at(store: Arc<Store>, view: Arc<Manifest>, stream: &str, from: Option<u64>, direction: Direction, opts: ReadOptions) -> Result<StreamScan, StorageError> {
        let mut s = StreamScan {
            store,
            stream: stream.to_string(),
            direction,
            next: None,
            left: opts.limit.unwrap_or(usize::MAX),
            tag: opts.tag,
            blocks: VecDeque::new(),
            inflight: VecDeque::new(),
            depth: 1,
            head: None,
            first_seq: 0,
            returned_any: false,
        };
        s.plan(&view, from).await?;
        Ok(s)
    }

    /// The stream's last revision when the read started.
    pub fn head(&self) -> Option<u64> {
        self.head
    }

    /// Where to continue: forward, the next revision; backward, the revision
    /// below the last one returned (`None` past revision 0).
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    async fn plan(&mut self, view: &Manifest, from: Option<u64>) -> Result<(), StorageError> {
        for (_, t) in self.inflight.drain(..) {
            t.abort();
        }
        self.head = head(&self.store, view, &self.stream).await?;
        let all = stream_blocks(&self.store, view, &self.stream, self.head).await?;
        self.first_seq = view.first_seq;
        let ends: Vec<u64> = all.iter().skip(1).map(|b| b.first_revision).chain(self.head.map(|h| h + 1)).collect();
        match self.direction {
            Direction::Forward => {
                let from = from.unwrap_or(0);
                self.next = Some(from);
                self.blocks = all.into_iter().zip(ends).filter(|(_, end)| *end > from).map(|(b, _)| b).collect();
            }
            Direction::Backward => {
                let from = match (from, self.head) {
                    (Some(f), Some(h)) => Some(f.min(h)),
                    (None, h) => h,
                    (Some(_), None) => None,
                };
                self.next = from;
                let Some(from) = from else {
                    self.blocks.clear();
                    return Ok(());
                };
                self.blocks = all.into_iter().filter(|b| b.first_revision <= from).rev().collect();
            }
        }
        Ok(())
    }

    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ReadEvent>>, ReadError> {
        loop {
            if self.left == 0 {
                return Ok(None);
            }
            let Some(cursor) = self.next else { return Ok(None) };
            while self.inflight.len() < self.depth {
                let Some(loc) = self.blocks.pop_front() else { break };
                let (store, l, stream) = (self.store.clone(), loc.clone(), self.stream.clone());
                let task = tokio::spawn(async move {
                    match &l.archive {
                        Some(a) => Ok(crate::tier::stream_events(&store, a, &stream).await?.into_iter().map(|e| ((e.seq - a.first_seq) as u32, e.event)).collect()),
                        None => store.stream_block(&l.segment, l.offset, l.len, l.first_index, &stream).await,
                    }
                });
                self.inflight.push_back((loc, task));
            }
            let Some((loc, task)) = self.inflight.pop_front() else {
                // Revisions left that no block holds were truncated.
                let truncated = self.first_seq > 0
                    && match self.direction {
                        Direction::Forward => self.head.is_some_and(|h| cursor <= h),
                        Direction::Backward => !self.returned_any,
                    };
                if truncated {
                    return Err(ReadError::Truncated { first_seq: self.first_seq, first_revision: None });
                }
                if self.direction == Direction::Forward {
                    self.next = Some(self.head.map_or(cursor, |h| cursor.max(h + 1)));
                }
                return Ok(None);
            };
            self.depth = (self.depth * 2).min(STREAM_READ_AHEAD);
            let fetched = task.await.map_err(|e| StorageError::Backend(format!("a block read failed: {e}")))?;
            let evs = match fetched {
                Ok(e) => e,
                Err(StorageError::NotFound(_)) => {
                    let view = self.store.refresh().await?;
                    let left = self.left;
                    self.plan(&view, Some(cursor)).await?;
                    self.left = left;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            let first_seq = self.first_seq;
            let mine = evs.into_iter().filter(|(index, _)| loc.base_seq + u64::from(*index) >= first_seq);
            let pick = |index: u32, event: Event| ReadEvent { seq: loc.base_seq + u64::from(index), event };
            match self.direction {
                Direction::Forward => {
                    for (index, e) in mine.filter(|(_, e)| e.revision >= cursor) {
                        // Revisions are dense: a gap before the first one
                        // kept is what retention truncated.
                        if self.next.is_some_and(|n| e.revision > n) {
                            return Err(ReadError::Truncated { first_seq, first_revision: Some(e.revision) });
                        }
                        self.next = Some(e.revision + 1);
                        if has_tag(&e, &self.tag) {
                            out.push(pick(index, e));
                            self.left -= 1;
                            if self.left == 0 {
                                break;
                            }
                        }
                    }
                }
                Direction::Backward => {
                    for (index, e) in mine.rev().filter(|(_, e)| e.revision <= cursor) {
                        self.next = e.revision.checked_sub(1);
                        if has_tag(&e, &self.tag) {
                            out.push(pick(index, e));
                            self.left -= 1;
                            if self.left == 0 {
                                break;
                            }
                        }
                    }
                }
            }
            if !out.is_empty() {
                self.returned_any = true;
                return Ok(Some(out));
            }
        }
    }
}
