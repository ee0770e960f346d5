//! Byte-bounded caches keyed by immutable object names (and offsets):
//! nothing is ever invalidated, because nothing cached ever changes.

use std::sync::Arc;

use cairn_format::block::Event;
use cairn_format::index::{IndexFooter, StreamRuns};
use cairn_format::segment::{CoreFooter, Footer};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::observe::{CacheKind, Observer};

#[derive(Clone)]
struct ByWeight;

pub trait Weigh {
    fn weight(&self) -> u64;
}

impl<K, V: Weigh> Weighter<K, V> for ByWeight {
    fn weight(&self, _k: &K, v: &V) -> u64 {
        v.weight().max(1)
    }
}

pub struct Sized<T>(pub Arc<T>, pub u64);

// By hand: a derive would ask `T: Clone`, and only the `Arc` is cloned.
impl<T> Clone for Sized<T> {
    fn clone(&self) -> Self {
        Sized(self.0.clone(), self.1)
    }
}

impl<T> Weigh for Sized<T> {
    fn weight(&self) -> u64 {
        self.1
    }
}

type C<K, V> = Cache<K, Sized<V>, ByWeight>;

/// Footers and pages (metadata) share one budget, decoded blocks another.
pub struct Caches {
    observer: Arc<dyn Observer>,
    footers: C<Arc<str>, Footer>,
    /// Footer cores (blocks and tags) of segments whose whole footer no
    /// read has needed.
    cores: C<Arc<str>, CoreFooter>,
    index_footers: C<Arc<str>, IndexFooter>,
    pages: C<(Arc<str>, u64), Vec<StreamRuns>>,
    blocks: C<(Arc<str>, u64), Block>,
    /// Open archives (their decoded footers).
    archives: C<Arc<str>, cairn_archive::Archive>,
}

fn footer_weight(f: &Footer) -> u64 {
    (f.blocks.len() * 48 + f.streams.iter().map(|s| s.name.len() + 48 + s.blocks.len() * 16).sum::<usize>()
        + f.tags.len() * 64
        + f.stream_filter.byte_len()
        + f.id_filters.iter().map(|i| i.filter.byte_len() + 16).sum::<usize>()) as u64
}

/// The decoded events of one block: a window of a shared vector, so the
/// writer caches the blocks it committed without copying them.
#[derive(Clone, Debug)]
pub struct Block {
    events: Arc<Vec<Event>>,
    start: usize,
    len: usize,
    pub first_index: u32,
}

impl Block {
    pub fn new(events: Vec<Event>, first_index: u32) -> Block {
        let len = events.len();
        Block { events: Arc::new(events), start: 0, len, first_index }
    }

    pub fn window(events: Arc<Vec<Event>>, start: usize, len: usize, first_index: u32) -> Block {
        debug_assert!(start + len <= events.len());
        Block { events, start, len, first_index }
    }

    /// (index in the segment, event)
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u32, &Event)> {
        let first = self.first_index;
        self.events[self.start..self.start + self.len].iter().enumerate().map(move |(i, e)| (first + i as u32, e))
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn weight(&self) -> u64 {
        self.iter().map(|(_, e)| (e.data.len() + e.stream.len() + e.event_type.len() + 96) as u64).sum()
    }
}

impl Caches {
    pub fn new(meta_bytes: u64, block_bytes: u64, observer: Arc<dyn Observer>) -> Self {
        // Every stream read and head look-up consults the footer of every
        // recent segment (up to `max_recent_segments`), so footers get the
        // most: when they do not all fit, each read decodes them again.
        let eighth = meta_bytes / 8;
        Caches {
            observer,
            footers: Cache::with_weighter(1024, (eighth * 4).max(1), ByWeight),
            cores: Cache::with_weighter(1024, eighth.max(1), ByWeight),
            index_footers: Cache::with_weighter(256, eighth.max(1), ByWeight),
            pages: Cache::with_weighter(1024, (eighth * 2).max(1), ByWeight),
            blocks: Cache::with_weighter(1024, block_bytes.max(1), ByWeight),
            archives: Cache::with_weighter(256, eighth.max(1), ByWeight),
        }
    }

    fn seen<T>(&self, kind: CacheKind, v: Option<T>) -> Option<T> {
        self.observer.cache(kind, v.is_some());
        v
    }

    pub fn footer(&self, name: &str) -> Option<Arc<Footer>> {
        self.seen(CacheKind::Footer, self.footers.get(name).map(|s| s.0))
    }
    pub fn put_footer(&self, name: Arc<str>, f: Arc<Footer>) {
        let w = footer_weight(&f);
        self.footers.insert(name, Sized(f, w));
    }
    /// A whole footer if one is cached, not counted as a look-up (the
    /// caller looks for the core next).
    pub fn footer_if_cached(&self, name: &str) -> Option<Arc<Footer>> {
        self.footers.get(name).map(|s| s.0)
    }
    pub fn core(&self, name: &str) -> Option<Arc<CoreFooter>> {
        self.seen(CacheKind::Footer, self.cores.get(name).map(|s| s.0))
    }
    pub fn put_core(&self, name: Arc<str>, c: Arc<CoreFooter>) {
        let w = (c.blocks.len() * 48 + c.tags.iter().map(|t| t.key.len() + t.value.len() + 48 + t.blocks.len() * 4).sum::<usize>()) as u64;
        self.cores.insert(name, Sized(c, w));
    }
    pub fn index_footer(&self, name: &str) -> Option<Arc<IndexFooter>> {
        self.seen(CacheKind::IndexFooter, self.index_footers.get(name).map(|s| s.0))
    }
    pub fn put_index_footer(&self, name: Arc<str>, f: Arc<IndexFooter>) {
        let w = (f.segments.len() * 96 + f.pages.len() * 64 + f.stream_filter.byte_len()) as u64;
        self.index_footers.insert(name, Sized(f, w));
    }
    pub fn page(&self, name: &Arc<str>, offset: u64) -> Option<Arc<Vec<StreamRuns>>> {
        self.seen(CacheKind::Page, self.pages.get(&(name.clone(), offset)).map(|s| s.0))
    }
    pub fn put_page(&self, name: Arc<str>, offset: u64, p: Arc<Vec<StreamRuns>>, w: u64) {
        self.pages.insert((name, offset), Sized(p, w));
    }
    pub fn block(&self, name: &Arc<str>, offset: u64) -> Option<Arc<Block>> {
        self.seen(CacheKind::Block, self.blocks.get(&(name.clone(), offset)).map(|s| s.0))
    }
    pub fn put_block(&self, name: Arc<str>, offset: u64, b: Arc<Block>) {
        let w = b.weight();
        self.blocks.insert((name, offset), Sized(b, w));
    }
    pub fn archive(&self, name: &str) -> Option<Arc<cairn_archive::Archive>> {
        self.seen(CacheKind::IndexFooter, self.archives.get(name).map(|s| s.0))
    }
    pub fn put_archive(&self, name: Arc<str>, a: Arc<cairn_archive::Archive>) {
        let f = a.footer();
        // A filter in its own section is weighed as if read: a look-up keeps it.
        let space_filter = match &f.space_filter {
            cairn_archive::SpaceFilter::Inline(b) => b.byte_len(),
            cairn_archive::SpaceFilter::At { len, .. } => *len as usize,
        };
        let w = (f.time_table.len() + f.blocks.len() * 40 + f.space_pages.len() * 64 + f.posting_pages.len() * 96 + space_filter + f.value_filter.byte_len()) as u64;
        self.archives.insert(name, Sized(a, w));
    }
    /// Bytes held: (metadata, blocks).
    pub fn weights(&self) -> (u64, u64) {
        (self.footers.weight() + self.cores.weight() + self.index_footers.weight() + self.pages.weight() + self.archives.weight(), self.blocks.weight())
    }
}
