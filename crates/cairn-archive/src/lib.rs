//! Reads Cairn archives from a local file or an object store, with range
//! GETs and no server: find a space, scan it forwards or backwards (one
//! grouping or all), scan one indexed value of a space or of the whole
//! archive. The format is in `cairn_format::archive` and docs/FORMAT.md.
//!
//! ```no_run
//! # async fn f() -> Result<(), cairn_archive::ArchiveError> {
//! use cairn_archive::{Archive, Direction, Key};
//! let archive = Archive::open_file("activity.arc").await?;
//! if let Some(customer) = archive.space("customer-3").await? {
//!     let clicks = archive.scan_index(&customer, &Key::Type, "click", Direction::Backward).await?;
//!     for e in clicks.collect().await? {
//!         println!("{} {}", e.seq, String::from_utf8_lossy(&e.event.data));
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

pub use cairn_format::archive::{ArchiveFooter, ArchiveOptions, ArchivedEvent, Group, Key, Space, SpaceFilter};
use cairn_format::archive::{
    TimeTable, decode_archive_block, decode_archive_footer, decode_archive_trailer, decode_posting_page, decode_space_filter, decode_space_page,
};
use cairn_format::bloom::Bloom;
use cairn_format::segment::{MAX_FOOTER_LEN, TRAILER_LEN};

/// The tail read when an archive is opened: the footer too, if it fits.
const OPEN_READ: u64 = 64 << 10;
/// Consecutive blocks are fetched together up to this many bytes.
const COALESCE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error(transparent)]
    Corrupt(#[from] cairn_format::Error),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// What an archive's reads have fetched so far: requests and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub requests: u64,
    pub bytes: u64,
}

/// A space found in an archive, with its place in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceRef {
    pub index: u64,
    pub space: Space,
}

/// An archive's object, and what has been fetched from it.
struct Object {
    store: Arc<dyn ObjectStore>,
    path: Path,
    name: String,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Object {
    async fn fetch(&self, range: std::ops::Range<u64>) -> Result<Bytes, ArchiveError> {
        let want = range.end - range.start;
        let b = self.store.get_range(&self.path, range).await?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        if b.len() as u64 != want {
            return Err(cairn_format::Error::Corrupt(format!("{}: a range read gave {} bytes, not {want}", self.name, b.len())).into());
        }
        Ok(b)
    }

    fn fetched(&self) -> Fetched {
        Fetched { requests: self.requests.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

/// An open archive: its footer is read once, everything else by range.
pub struct Archive {
    object: Object,
    size: u64,
    footer: ArchiveFooter,
    times: TimeTable,
    opening: Fetched,
    /// The space filter, once a look-up read it from its section.
    space_filter: OnceLock<Bloom>,
}

impl Archive {
    /// Opens an archive on a local disk.
    pub async fn open_file(file: impl AsRef<std::path::Path>) -> Result<Archive, ArchiveError> {
        let file = file.as_ref();
        let abs = std::fs::canonicalize(file).map_err(|e| ArchiveError::Invalid(format!("{}: {e}", file.display())))?;
        let path = Path::from_absolute_path(&abs).map_err(|e| ArchiveError::Invalid(format!("{}: {e}", file.display())))?;
        Archive::open(Arc::new(LocalFileSystem::new()), path).await
    }

    /// Opens the archive at `path` in `store`: a HEAD for its size, then one
    /// range GET of its tail (two when the footer is larger than 64 KiB;
    /// [`Archive::open_at`] reads exactly the footer).
    pub async fn open(store: Arc<dyn ObjectStore>, path: Path) -> Result<Archive, ArchiveError> {
        let size = store.head(&path).await?.size;
        Archive::open_counted(store, path, size, 1).await
    }

    /// [`Archive::open`] for a caller that knows the size: no HEAD.
    pub async fn open_sized(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Result<Archive, ArchiveError> {
        Archive::open_counted(store, path, size, 0).await
    }

    /// [`Archive::open`] for a caller that knows the size and where the
    /// footer starts (the encoder's `footer_offset`): one range GET of
    /// exactly the footer and trailer.
    pub async fn open_at(store: Arc<dyn ObjectStore>, path: Path, size: u64, footer_offset: u64) -> Result<Archive, ArchiveError> {
        let name = path.to_string();
        if footer_offset > size.saturating_sub(TRAILER_LEN as u64) || size - footer_offset > u64::from(MAX_FOOTER_LEN) + TRAILER_LEN as u64 {
            return Err(cairn_format::Error::Corrupt(format!("{name}: a footer at {footer_offset} does not fit in {size} bytes")).into());
        }
        let object = Object { store, path, name, requests: AtomicU64::new(0), bytes: AtomicU64::new(0) };
        let tail = object.fetch(footer_offset..size).await?;
        Archive::with_tail(object, size, tail, footer_offset)
    }

    fn with_tail(object: Object, size: u64, tail: Bytes, footer_offset: u64) -> Result<Archive, ArchiveError> {
        let footer = decode_archive_footer(&tail, footer_offset, &object.name)?;
        let times = footer.times(&object.name)?;
        let opening = object.fetched();
        Ok(Archive { object, size, footer, times, opening, space_filter: OnceLock::new() })
    }

    /// Opens with `heads` HEAD requests already made.
    async fn open_counted(store: Arc<dyn ObjectStore>, path: Path, size: u64, heads: u64) -> Result<Archive, ArchiveError> {
        let name = path.to_string();
        if size < TRAILER_LEN as u64 {
            return Err(cairn_format::Error::Corrupt(format!("{name}: {size} bytes is too short for an archive")).into());
        }
        let object = Object { store, path, name, requests: AtomicU64::new(heads), bytes: AtomicU64::new(0) };
        let start = size.saturating_sub(OPEN_READ);
        let mut tail = object.fetch(start..size).await?;
        let name = &object.name;
        let t = decode_archive_trailer(&tail[tail.len() - TRAILER_LEN..], name)?;
        let tail_start = size.checked_sub(t.tail_len()).filter(|s| *s == t.footer_offset).ok_or_else(|| {
            cairn_format::Error::Corrupt(format!("{name}: the trailer's footer offset does not match the object's size"))
        })?;
        if tail_start < start {
            tail = object.fetch(tail_start..size).await?;
        } else {
            tail = tail.slice((tail_start - start) as usize..);
        }
        Archive::with_tail(object, size, tail, tail_start)
    }

    pub fn footer(&self) -> &ArchiveFooter {
        &self.footer
    }

    /// The archive's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What opening the archive fetched (its HEAD, if any, and its tail):
    /// what a reader that keeps the archive open pays once.
    pub fn opening(&self) -> Fetched {
        self.opening
    }

    /// Requests (HEADs and range GETs) and bytes fetched so far, opening
    /// included.
    pub fn fetched(&self) -> Fetched {
        self.object.fetched()
    }

    async fn fetch(&self, range: std::ops::Range<u64>) -> Result<Bytes, ArchiveError> {
        self.object.fetch(range).await
    }

    /// The space `key` (the seed's `Find`), or `None`: its directory page
    /// is read unless the space filter rules it out. A filter in a section
    /// of its own is read by the first look-up, and kept.
    pub async fn space(&self, key: &str) -> Result<Option<SpaceRef>, ArchiveError> {
        let filter = match &self.footer.space_filter {
            SpaceFilter::Inline(f) => f,
            SpaceFilter::At { offset, len } => match self.space_filter.get() {
                Some(f) => f,
                None => {
                    let f = decode_space_filter(&self.fetch(*offset..offset + u64::from(*len)).await?, &self.object.name)?;
                    self.space_filter.get_or_init(|| f)
                }
            },
        };
        let Some(i) = self.footer.space_page_for(key, filter) else { return Ok(None) };
        let p = &self.footer.space_pages[i];
        let page = decode_space_page(&self.fetch(p.offset..p.offset + u64::from(p.len)).await?, &self.object.name)?;
        let Ok(at) = page.binary_search_by(|s| s.key.as_str().cmp(key)) else { return Ok(None) };
        Ok(page.into_iter().nth(at).map(|space| SpaceRef { index: p.first_index + at as u64, space }))
    }

    /// Every space, in order.
    pub async fn spaces(&self) -> Result<Vec<Space>, ArchiveError> {
        let mut out = Vec::new();
        for p in &self.footer.space_pages {
            out.extend(decode_space_page(&self.fetch(p.offset..p.offset + u64::from(p.len)).await?, &self.object.name)?);
        }
        Ok(out)
    }

    /// The events of a space in (grouping, timestamp, seq) order, or of one
    /// grouping only (`Some`): the seed's `Scan`, forwards or backwards.
    pub fn scan(&self, space: &SpaceRef, group: Option<&str>, dir: Direction) -> Result<Scan<'_>, ArchiveError> {
        let range = space.space.range(group).ok_or_else(|| ArchiveError::Invalid(format!("space {:?} has no grouping {group:?}", space.space.key)))?;
        Ok(Scan::of_range(self, range, dir))
    }

    /// Every event of the archive, in its order.
    pub fn scan_all(&self, dir: Direction) -> Scan<'_> {
        Scan::of_range(self, 0..self.footer.event_count, dir)
    }

    /// The events of a space that have `value` for the indexed `key`, in
    /// the space's order: the seed's `ScanIndex` and `RevScanIndex`.
    pub async fn scan_index(&self, space: &SpaceRef, key: &Key, value: &str, dir: Direction) -> Result<Scan<'_>, ArchiveError> {
        self.scan_postings(key, value, Some(space.index), dir).await
    }

    /// The events of every space that have `value` for the indexed `key`,
    /// in the archive's order.
    pub async fn scan_value(&self, key: &Key, value: &str, dir: Direction) -> Result<Scan<'_>, ArchiveError> {
        self.scan_postings(key, value, None, dir).await
    }

    fn corrupt(&self, why: &str) -> ArchiveError {
        cairn_format::Error::Corrupt(format!("{}: {why}", self.object.name)).into()
    }

    /// The events of `value` of `key`, of one space or of all. An inlined
    /// value is read from its postings alone; any other from its blocks.
    async fn scan_postings(&self, key: &Key, value: &str, space: Option<u64>, dir: Direction) -> Result<Scan<'_>, ArchiveError> {
        if !self.footer.indexes.contains(key) {
            return Err(ArchiveError::Invalid(format!("the archive has no index on {key:?} (it indexes {:?})", self.footer.indexes)));
        }
        let mut entries = Vec::new();
        for p in &self.footer.posting_pages[self.footer.posting_pages_for(key, value, space)] {
            let page = decode_posting_page(&self.fetch(p.offset..p.offset + u64::from(p.len)).await?, &self.object.name)?;
            entries.extend(page.into_iter().filter(|x| &x.key == key && x.value == value && space.is_none_or(|s| s == x.space)));
        }
        let mut ordinals = Vec::new();
        let mut inlined = Vec::new();
        let all_inline = entries.iter().all(|x| x.inline.is_some());
        for x in &entries {
            let mine: Vec<u64> = x.decode(&self.object.name)?.into_iter().map(|o| x.first.checked_add(o).ok_or_else(|| self.corrupt("a posting overflows"))).collect::<Result<_, _>>()?;
            if all_inline {
                let events = x.inlined(mine.len(), &self.times, &self.object.name)?.unwrap_or_default();
                inlined.extend(mine.into_iter().zip(events));
            } else {
                ordinals.extend(mine);
            }
        }
        if all_inline {
            inlined.sort_unstable_by_key(|(o, _)| *o);
            let mut events: Vec<ArchivedEvent> = inlined.into_iter().map(|(_, e)| e).collect();
            if dir == Direction::Backward {
                events.reverse();
            }
            return Ok(Scan { archive: self, plan: VecDeque::new(), dir, ready: Some(events) });
        }
        ordinals.sort_unstable();
        Ok(Scan::of_ordinals(self, ordinals, dir))
    }
}

/// What a scan reads from one block: a range of ordinals, or some of them.
enum Want {
    Range(u64, u64),
    Some(Vec<u64>),
}

impl Want {
    fn keeps(&self, ordinal: u64) -> bool {
        match self {
            Want::Range(lo, hi) => (*lo..*hi).contains(&ordinal),
            Want::Some(v) => v.binary_search(&ordinal).is_ok(),
        }
    }
}

/// A scan, block by block: consecutive blocks are fetched in one range GET
/// (up to 1 MiB), and only blocks holding wanted events are fetched.
pub struct Scan<'a> {
    archive: &'a Archive,
    plan: VecDeque<(usize, Want)>,
    dir: Direction,
    /// Events already in hand (an inlined value), handed out first.
    ready: Option<Vec<ArchivedEvent>>,
}

impl<'a> Scan<'a> {
    fn of_range(archive: &'a Archive, range: std::ops::Range<u64>, dir: Direction) -> Scan<'a> {
        let f = &archive.footer;
        let mut plan = VecDeque::new();
        if range.start < range.end {
            if let (Some(first), Some(last)) = (f.block_of(range.start), f.block_of(range.end - 1)) {
                for b in first..=last {
                    plan.push_back((b, Want::Range(range.start, range.end)));
                }
            }
        }
        Scan::planned(archive, plan, dir)
    }

    /// `ordinals` sorted ascending.
    fn of_ordinals(archive: &'a Archive, ordinals: Vec<u64>, dir: Direction) -> Scan<'a> {
        let f = &archive.footer;
        let mut plan: VecDeque<(usize, Want)> = VecDeque::new();
        for o in ordinals {
            let Some(b) = f.block_of(o) else { continue };
            match plan.back_mut() {
                Some((last, Want::Some(v))) if *last == b => v.push(o),
                _ => plan.push_back((b, Want::Some(vec![o]))),
            }
        }
        Scan::planned(archive, plan, dir)
    }

    fn planned(archive: &'a Archive, mut plan: VecDeque<(usize, Want)>, dir: Direction) -> Scan<'a> {
        if dir == Direction::Backward {
            plan.make_contiguous().reverse();
        }
        Scan { archive, plan, dir, ready: None }
    }

    /// The next events, in the scan's order; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ArchivedEvent>>, ArchiveError> {
        if let Some(events) = self.ready.take().filter(|e| !e.is_empty()) {
            return Ok(Some(events));
        }
        let blocks = &self.archive.footer.blocks;
        let Some((first, _)) = self.plan.front() else { return Ok(None) };
        // A run of blocks adjacent in the file, in the scan's direction.
        let mut run = 1;
        let mut bytes = blocks[*first].len();
        while let Some((b, _)) = self.plan.get(run) {
            let prev = self.plan[run - 1].0;
            let adjacent = match self.dir {
                Direction::Forward => *b == prev + 1,
                Direction::Backward => *b + 1 == prev,
            };
            if !adjacent || bytes + blocks[*b].len() > COALESCE {
                break;
            }
            bytes += blocks[*b].len();
            run += 1;
        }
        let steps: Vec<(usize, Want)> = self.plan.drain(..run).collect();
        let lo = steps.iter().map(|(b, _)| *b).min().unwrap_or(0);
        let hi = steps.iter().map(|(b, _)| *b).max().unwrap_or(0);
        let start = blocks[lo].offset;
        let all = self.archive.fetch(start..blocks[hi].offset + blocks[hi].len()).await?;
        let mut out = Vec::new();
        for (b, want) in steps {
            let blk = &blocks[b];
            let at = (blk.offset - start) as usize;
            let events = decode_archive_block(&all[at..at + blk.len() as usize], blk, &self.archive.times, &self.archive.object.name)?;
            let mut kept: Vec<ArchivedEvent> = events.into_iter().enumerate().filter(|(i, _)| want.keeps(blk.first + *i as u64)).map(|(_, e)| e).collect();
            if self.dir == Direction::Backward {
                kept.reverse();
            }
            out.extend(kept);
        }
        Ok(Some(out))
    }

    /// Every event of the scan.
    pub async fn collect(mut self) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend(chunk);
        }
        Ok(out)
    }
}

/// Writes an encoded archive to a local file (through a temporary file and
/// a rename, so a reader never sees half of one).
pub fn write_file(file: impl AsRef<std::path::Path>, bytes: &[u8]) -> std::io::Result<()> {
    let file = file.as_ref();
    let tmp = file.with_extension("arc.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, file)
}
