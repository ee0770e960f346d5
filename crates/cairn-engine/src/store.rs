//! An open store: its newest known manifest, object access through the
//! caches, manifest discovery, and the long-poll poller.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_format::block::{decode_block_events, decode_block_stream, Event};
use cairn_format::index::{decode_index_footer, decode_page, IndexFooter, PageMeta, SegmentRef, StreamRuns};
use cairn_format::manifest::{Boundary, IndexRef, Manifest, Root};
use cairn_format::segment::{decode_core, decode_footer, BlockMeta, CoreFooter, Footer};
use object_store::path::Path;
use tokio::sync::{mpsc, watch};

use crate::cache::{Block, Caches};
use crate::error::{StorageError, StoreError};
use crate::objects::{numbered, Objects, StorePaths};
use crate::writer::WriterMsg;
use crate::EngineConfig;

/// What every open store shares.
pub(crate) struct Shared {
    pub objects: Objects,
    pub caches: Caches,
    pub config: EngineConfig,
    pub observer: Arc<dyn crate::observe::Observer>,
}

/// The newest GC boundary a node knows of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KnownBoundary {
    /// Number of the newest boundary object (0 = none yet).
    pub k: u64,
    pub floor: u64,
}

pub(crate) struct Store {
    pub shared: Arc<Shared>,
    pub paths: StorePaths,
    pub view: watch::Sender<Arc<Manifest>>,
    pub boundary: Mutex<KnownBoundary>,
    pub writer: Mutex<Option<mpsc::Sender<WriterMsg>>>,
    pub waiters: AtomicUsize,
    poller: AtomicBool,
    pub deleted: AtomicBool,
    root_checked: Mutex<Instant>,
    /// When the view was last confirmed the newest (N+1 absent).
    confirmed: Mutex<Instant>,
}

pub(crate) fn segment_name() -> String {
    format!("{}.seg", ulid::Ulid::generate())
}

pub(crate) fn index_name() -> String {
    format!("{}.idx", ulid::Ulid::generate())
}

pub(crate) fn archive_name() -> String {
    format!("{}.arc", ulid::Ulid::generate())
}

impl Store {
    /// Opens the live incarnation of `name`: root, newest boundary, newest
    /// manifest (a LIST from the boundary's floor, then GETs of N+1).
    pub async fn open(shared: Arc<Shared>, name: &str) -> Result<Arc<Store>, StoreError> {
        let root = read_root(&shared.objects, name).await?.ok_or_else(|| StoreError::NotFound(name.into()))?;
        let paths = StorePaths::new(name, &root.incarnation);
        let Some((boundary, m)) = newest_manifest(&shared.objects, &paths).await? else {
            // root.json exists but no manifest: a create or a delete in
            // progress.
            return Err(StoreError::NotFound(name.into()));
        };
        let (view, _) = watch::channel(Arc::new(m));
        let store = Arc::new(Store {
            shared,
            paths,
            view,
            boundary: Mutex::new(boundary),
            writer: Mutex::new(None),
            waiters: AtomicUsize::new(0),
            poller: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            root_checked: Mutex::new(Instant::now()),
            confirmed: Mutex::new(Instant::now()),
        });
        store.refresh().await?;
        Ok(store)
    }

    pub fn current(&self) -> Arc<Manifest> {
        self.view.borrow().clone()
    }

    /// Publishes `m` if it is newer than what is known.
    pub fn publish(&self, m: Arc<Manifest>) {
        self.view.send_if_modified(|cur| {
            if m.version > cur.version {
                *cur = m;
                true
            } else {
                false
            }
        });
    }

    /// Follows N+1 until it is absent: no LIST needed on a warm node. A view
    /// not confirmed for half the manifest retention may be older than GC's
    /// floor (its N+1 deleted): then the newest boundary is checked too, and
    /// the newest version listed from its floor.
    pub async fn refresh(&self) -> Result<Arc<Manifest>, StorageError> {
        let mut cur = self.current();
        let started = Instant::now();
        let stale = self.confirmed.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= self.shared.config.manifest_retention / 2;
        while let Some(next) = load_manifest(&self.shared.objects, &self.paths, cur.version + 1).await? {
            cur = Arc::new(next);
            if !stale {
                // A fresh view's successor is real: waiters see it now, not
                // one request later when N+2 is found absent.
                self.publish(cur.clone());
            }
        }
        if stale {
            let b = newest_boundary(&self.shared.objects, &self.paths).await?;
            self.learn_boundary(b);
            if b.floor > cur.version {
                cur = self.reload_cold().await?;
            }
        }
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = started;
        self.publish(cur.clone());
        Ok(self.current())
    }

    /// The view, refreshed first if it was last confirmed newest longer
    /// than `age` ago: what a read that does not start at the tail uses, so
    /// another node's commits (a truncation among them) reach it within
    /// `age`, at no more than one request per `age`.
    pub async fn view_within(&self, age: std::time::Duration) -> Result<Arc<Manifest>, StorageError> {
        if self.confirmed.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < age {
            return Ok(self.current());
        }
        self.refresh().await
    }

    /// The newest version as a cold node finds it: a LIST from the floor of
    /// the newest boundary, then N+1 until absent.
    pub async fn reload_cold(&self) -> Result<Arc<Manifest>, StorageError> {
        let Some((b, m)) = newest_manifest(&self.shared.objects, &self.paths).await? else {
            return Err(StorageError::NotFound(self.paths.manifest_dir().to_string()));
        };
        self.learn_boundary(b);
        let mut cur = Arc::new(m);
        while let Some(next) = load_manifest(&self.shared.objects, &self.paths, cur.version + 1).await? {
            cur = Arc::new(next);
        }
        // A version below the floor may be a stale writer's: never go back
        // to it, but do replace a view the floor has passed.
        self.view.send_if_modified(|v| {
            if cur.version > v.version || v.version < b.floor {
                *v = cur.clone();
                true
            } else {
                false
            }
        });
        Ok(self.current())
    }

    /// Starts [`check_root`](Self::check_root) in the background if it is
    /// due; a deletion is then seen by the next request.
    pub fn check_root_in_background(self: &Arc<Self>) {
        if self.root_check_due(*self.root_checked.lock().unwrap_or_else(|p| p.into_inner())) {
            let s = self.clone();
            tokio::spawn(async move {
                if let Err(e) = s.check_root().await {
                    tracing::debug!(store = %s.paths.store, error = %e, "root check failed");
                }
            });
        }
    }

    fn root_check_due(&self, last: Instant) -> bool {
        last.elapsed() >= self.shared.config.root_check_interval
    }

    /// Whether root.json still names this incarnation (checked at most once
    /// per `root_check_interval`).
    pub async fn check_root(&self) -> Result<bool, StorageError> {
        if self.deleted.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let before = {
            let mut last = self.root_checked.lock().unwrap_or_else(|p| p.into_inner());
            if !self.root_check_due(*last) {
                return Ok(true);
            }
            std::mem::replace(&mut *last, Instant::now())
        };
        let root = match read_root(&self.shared.objects, &self.paths.store).await {
            Ok(r) => r,
            Err(e) => {
                // Not a deletion; ask again next time.
                *self.root_checked.lock().unwrap_or_else(|p| p.into_inner()) = before;
                return Err(e);
            }
        };
        let live = root.is_some_and(|r| r.incarnation == self.paths.incarnation);
        if !live {
            self.deleted.store(true, Ordering::Relaxed);
        }
        Ok(live)
    }

    pub fn known_boundary(&self) -> KnownBoundary {
        *self.boundary.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn learn_boundary(&self, b: KnownBoundary) {
        let mut cur = self.boundary.lock().unwrap_or_else(|p| p.into_inner());
        if b.k > cur.k {
            *cur = b;
        }
    }

    /// A segment's footer, from the cache or one range GET.
    pub async fn footer(&self, seg: &SegmentRef) -> Result<Arc<Footer>, StorageError> {
        if let Some(f) = self.shared.caches.footer(&seg.name) {
            return Ok(f);
        }
        let path = self.paths.object(&seg.name);
        let end = seg.footer_offset + u64::from(seg.footer_len);
        let tail = self.shared.objects.get_range(&path, seg.footer_offset..end).await?;
        let f = Arc::new(decode_footer(&tail, Some(seg.footer_offset), path.as_ref())?);
        if u64::from(f.event_count) != seg.count {
            return Err(StorageError::Corrupt(format!("{path}: holds {} events, manifest says {}", f.event_count, seg.count)));
        }
        self.shared.caches.put_footer(seg.name.as_str().into(), f.clone());
        Ok(f)
    }

    /// What scans and tag reads need of a segment, its blocks and tag
    /// index: the whole footer when it is cached or the segment has no core
    /// of its own (version 1), else the core alone, one range GET of the
    /// footer's last `core_len` bytes (a 1,000-event segment's core is a
    /// few hundred bytes of its ~19 KiB footer).
    pub async fn block_index(&self, seg: &SegmentRef) -> Result<BlockIndex, StorageError> {
        if let Some(f) = self.shared.caches.footer_if_cached(&seg.name) {
            return Ok(BlockIndex::Full(f));
        }
        if seg.core_len == 0 {
            return self.footer(seg).await.map(BlockIndex::Full);
        }
        if let Some(c) = self.shared.caches.core(&seg.name) {
            return Ok(BlockIndex::Core(c));
        }
        let path = self.paths.object(&seg.name);
        let end = seg.footer_offset + u64::from(seg.footer_len);
        let start = end.checked_sub(u64::from(seg.core_len)).filter(|s| *s >= seg.footer_offset);
        let Some(start) = start else {
            return Err(StorageError::Corrupt(format!("{path}: the manifest's core length exceeds its footer")));
        };
        let tail = self.shared.objects.get_range(&path, start..end).await?;
        let c = Arc::new(decode_core(&tail, Some(seg.footer_offset), path.as_ref())?);
        if u64::from(c.event_count) != seg.count {
            return Err(StorageError::Corrupt(format!("{path}: holds {} events, manifest says {}", c.event_count, seg.count)));
        }
        self.shared.caches.put_core(seg.name.as_str().into(), c.clone());
        Ok(BlockIndex::Core(c))
    }

    pub async fn index_footer(&self, idx: &IndexRef) -> Result<Arc<IndexFooter>, StorageError> {
        if let Some(f) = self.shared.caches.index_footer(&idx.name) {
            return Ok(f);
        }
        let path = self.paths.object(&idx.name);
        let end = idx.footer_offset + u64::from(idx.footer_len);
        let tail = self.shared.objects.get_range(&path, idx.footer_offset..end).await?;
        let f = Arc::new(decode_index_footer(&tail, Some(idx.footer_offset), path.as_ref())?);
        if f.first_seq != idx.first_seq || f.end_seq != idx.end_seq {
            return Err(StorageError::Corrupt(format!("{path}: seq range disagrees with the manifest")));
        }
        self.shared.caches.put_index_footer(idx.name.as_str().into(), f.clone());
        Ok(f)
    }

    pub async fn page(&self, idx: &str, page: &PageMeta) -> Result<Arc<Vec<StreamRuns>>, StorageError> {
        let key: Arc<str> = idx.into();
        if let Some(p) = self.shared.caches.page(&key, page.offset) {
            return Ok(p);
        }
        let path = self.paths.object(idx);
        let b = self.shared.objects.get_range(&path, page.offset..page.offset + u64::from(page.len)).await?;
        let p = Arc::new(decode_page(&b, path.as_ref())?);
        self.shared.caches.put_page(key, page.offset, p.clone(), u64::from(page.len) * 3);
        Ok(p)
    }

    /// One block, decoded. `fill` puts it in the cache (scans do not, so a
    /// full scan cannot evict the working set).
    pub async fn block(&self, seg: &str, offset: u64, len: u32, first_index: u32, fill: bool) -> Result<Arc<Block>, StorageError> {
        let key: Arc<str> = seg.into();
        if let Some(b) = self.shared.caches.block(&key, offset) {
            return Ok(b);
        }
        let (path, frame) = self.block_frame(seg, offset, len).await?;
        let b = Arc::new(Block::new(decode_block_events(&frame, path.as_ref())?, first_index));
        if fill {
            self.shared.caches.put_block(key, offset, b.clone());
        }
        Ok(b)
    }

    /// The events of `stream` in one block, with their indexes in the
    /// segment: from the block cache when it holds the block, else fetched
    /// and decoded for that stream alone and not cached (a read of one
    /// stream would fill the cache with thousands of others' events).
    pub async fn stream_block(&self, seg: &str, offset: u64, len: u32, first_index: u32, stream: &str) -> Result<Vec<(u32, Event)>, StorageError> {
        if let Some(b) = self.shared.caches.block(&seg.into(), offset) {
            return Ok(b.iter().filter(|(_, e)| *e.stream == *stream).map(|(i, e)| (i, e.clone())).collect());
        }
        let (path, frame) = self.block_frame(seg, offset, len).await?;
        decode_block_stream(&frame, path.as_ref(), stream)?
            .into_iter()
            .map(|(i, e)| first_index.checked_add(i).map(|index| (index, e)).ok_or_else(|| cairn_format::Error::Corrupt(format!("{path}: event index overflows")).into()))
            .collect()
    }

    /// One block's frame, read from storage, and the path of its segment.
    async fn block_frame(&self, seg: &str, offset: u64, len: u32) -> Result<(object_store::path::Path, Bytes), StorageError> {
        let path = self.paths.object(seg);
        let frame = self.shared.objects.get_range(&path, offset..offset + u64::from(len)).await?;
        Ok((path, frame))
    }

    /// Decodes blocks out of a range read that covers several of them.
    pub fn decode_cached(&self, seg: &str, offset: u64, frame: &[u8], first_index: u32) -> Result<Arc<Block>, StorageError> {
        if let Some(b) = self.shared.caches.block(&seg.into(), offset) {
            return Ok(b);
        }
        Ok(Arc::new(Block::new(decode_block_events(frame, self.paths.object(seg).as_ref())?, first_index)))
    }

    /// Every segment holding seqs in `[from, to)`, in seq order: recent ones
    /// from the manifest, older ones from the index objects' segment tables.
    pub async fn segments_between(&self, m: &Manifest, from: u64, to: u64) -> Result<Vec<SegmentRef>, StorageError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for idx in &m.indexes {
            if idx.end_seq <= from || idx.first_seq >= to {
                continue;
            }
            let f = self.index_footer(idx).await?;
            let start = f.segment_of(from.max(f.first_seq)).unwrap_or(0);
            out.extend(f.segments[start..].iter().take_while(|s| s.base_seq < to).cloned());
        }
        let start = m.segments.partition_point(|s| s.end_seq() <= from);
        out.extend(m.segments[start..].iter().take_while(|s| s.base_seq < to).cloned());
        Ok(out)
    }

    /// Starts the poller of N+1 if it is not running. It runs only while
    /// someone waits, once per `poll_interval` (never slower: a waiter must
    /// see another node's commit within one interval and one request).
    pub fn ensure_poller(self: &Arc<Self>) {
        if self.poller.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let interval = store.shared.config.poll_interval;
            loop {
                if store.waiters.load(Ordering::Acquire) == 0 {
                    store.poller.store(false, Ordering::Release);
                    // A waiter may have arrived between the check and the store.
                    if store.waiters.load(Ordering::Acquire) == 0 || store.poller.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
                tokio::time::sleep(interval).await;
                if let Err(e) = store.refresh().await {
                    tracing::debug!(store = %store.paths.manifest_dir(), error = %e, "poll for new commits failed");
                }
            }
        });
    }

    /// Waits until the store has an event at or after `seq`, or `timeout`.
    pub async fn wait_for(self: &Arc<Self>, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.view.subscribe();
        if rx.borrow().next_seq > seq {
            return true;
        }
        struct Waiter<'a>(&'a AtomicUsize);
        impl Drop for Waiter<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _w = Waiter(&self.waiters);
        self.ensure_poller();
        tokio::time::timeout(timeout, rx.wait_for(|m| m.next_seq > seq)).await.is_ok_and(|r| r.is_ok())
    }
}

pub(crate) async fn read_root(objects: &Objects, store: &str) -> Result<Option<Root>, StorageError> {
    let path = StorePaths::root(store);
    match objects.get_opt(&path).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StorageError::Corrupt(format!("{path}: {e}"))),
    }
}

pub(crate) async fn load_manifest(objects: &Objects, paths: &StorePaths, v: u64) -> Result<Option<Manifest>, StorageError> {
    let path = paths.manifest(v);
    let Some(b) = objects.get_opt(&path).await? else { return Ok(None) };
    let m = Manifest::decode(&b, path.as_ref())?;
    if m.version != v || m.incarnation != paths.incarnation {
        return Err(StorageError::Corrupt(format!("{path}: names version {} of incarnation {}", m.version, m.incarnation)));
    }
    Ok(Some(m))
}

/// The newest manifest version at or after `floor`, by LIST.
async fn newest_listed(objects: &Objects, paths: &StorePaths, floor: u64) -> Result<Option<Manifest>, StorageError> {
    let offset = Path::from(format!("{}/{:020}", paths.manifest_dir(), floor));
    let listed = objects.list_after(&paths.manifest_dir(), &offset).await?;
    let mut versions: Vec<u64> = listed.iter().filter_map(|m| numbered(&m.location)).filter(|v| *v >= floor).collect();
    versions.sort_unstable();
    // Newest first; a version deleted since the LIST is skipped.
    for v in versions.into_iter().rev() {
        if let Some(m) = load_manifest(objects, paths, v).await? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The newest boundary and the newest manifest at or after its floor. GC
/// deletes the versions below a floor only after it has created the
/// boundary naming that floor, so when every version a LIST found is gone
/// by the time it is read, a newer boundary exists: look again from its
/// floor. `None` only when the boundary stood still and no version is
/// there: the store is being created or deleted.
pub(crate) async fn newest_manifest(objects: &Objects, paths: &StorePaths) -> Result<Option<(KnownBoundary, Manifest)>, StorageError> {
    let mut b = newest_boundary(objects, paths).await?;
    loop {
        if let Some(m) = newest_listed(objects, paths, b.floor).await? {
            return Ok(Some((b, m)));
        }
        let again = newest_boundary(objects, paths).await?;
        if again.k == b.k {
            return Ok(None);
        }
        b = again;
    }
}

pub(crate) async fn newest_boundary(objects: &Objects, paths: &StorePaths) -> Result<KnownBoundary, StorageError> {
    let listed = objects.list(&paths.boundary_dir()).await?;
    let Some(k) = listed.iter().filter_map(|m| numbered(&m.location)).max() else {
        return Ok(KnownBoundary::default());
    };
    let b = objects.get(&paths.boundary(k)).await?;
    let b: Boundary = serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt(format!("boundary {k}: {e}")))?;
    Ok(KnownBoundary { k, floor: b.floor })
}

pub(crate) fn json(v: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A segment's blocks and tag index: from its whole footer or its core.
pub enum BlockIndex {
    Full(Arc<Footer>),
    Core(Arc<CoreFooter>),
}

impl BlockIndex {
    pub fn blocks(&self) -> &[BlockMeta] {
        match self {
            BlockIndex::Full(f) => &f.blocks,
            BlockIndex::Core(c) => &c.blocks,
        }
    }

    pub fn block_of(&self, index: u32) -> Option<usize> {
        match self {
            BlockIndex::Full(f) => f.block_of(index),
            BlockIndex::Core(c) => c.block_of(index),
        }
    }

    pub fn tag_blocks(&self, key: &str, value: &str) -> &[u32] {
        match self {
            BlockIndex::Full(f) => f.tag_blocks(key, value),
            BlockIndex::Core(c) => c.tag_blocks(key, value),
        }
    }
}
