//! Tiering: history sealed into archives (`cairn_format::archive`, read
//! with `cairn_archive`), and the reads of archived history.
//!
//! Sealing takes whole index objects from the oldest end, never inside the
//! idempotency window, reads their events in seq order (from any manifest:
//! seqs never change), writes archives of at most `archive_events` events
//! or `archive_bytes` of data, space = stream, indexed by type and by every
//! tag key, and folds the streams' last revisions into the heads object, so
//! heads never need an archive. The writer commits the swap.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_archive::{Archive, ArchiveError, ArchiveOptions, ArchivedEvent, Direction, Key};
use cairn_format::block::Event;
use cairn_format::manifest::{ArchiveRef, Manifest};

use crate::error::{ReadError, StorageError};
use crate::reader::{ReadOptions, StoreScan};
use crate::rollup::{fold_heads, Replacement, ReplacementKind};
use crate::store::{archive_name, Store};
use crate::AppendCondition;

/// Tag keys an archive indexes at most (the most frequent ones).
const MAX_INDEXED_TAG_KEYS: usize = 32;

fn storage(name: &str, e: ArchiveError) -> StorageError {
    match e {
        ArchiveError::Storage(object_store::Error::NotFound { .. }) => StorageError::NotFound(name.into()),
        ArchiveError::Storage(e) => StorageError::Backend(e.to_string()),
        ArchiveError::Corrupt(e) => StorageError::Corrupt(e.to_string()),
        ArchiveError::Invalid(m) => StorageError::Corrupt(format!("{name}: {m}")),
    }
}

/// Runs `f` again while storage fails (not for a missing object or bad
/// bytes), for `retry_for`, as every other read of the engine is retried.
async fn retried<T, F, Fut>(store: &Store, name: &str, f: F) -> Result<T, StorageError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ArchiveError>>,
{
    let deadline = Instant::now() + store.shared.config.retry_for;
    let mut delay = Duration::from_millis(20);
    loop {
        match f().await.map_err(|e| storage(name, e)) {
            Err(StorageError::Backend(m)) if Instant::now() < deadline => {
                tracing::debug!(archive = name, error = %m, "archive read failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The open archive (its footer cached by name).
pub(crate) async fn open(store: &Store, a: &ArchiveRef) -> Result<Arc<Archive>, StorageError> {
    if let Some(x) = store.shared.caches.archive(&a.name) {
        return Ok(x);
    }
    let path = store.paths.object(&a.name);
    let inner = store.shared.objects.inner.clone();
    let x = retried(store, &a.name, || {
        let (inner, path) = (inner.clone(), path.clone());
        async move {
            match a.footer_offset {
                0 => Archive::open_sized(inner, path, a.bytes).await,
                at => Archive::open_at(inner, path, a.bytes, at).await,
            }
        }
    })
    .await?;
    let f = x.footer();
    if f.first_seq < a.first_seq || f.end_seq != a.end_seq || f.space != Key::Stream {
        return Err(StorageError::Corrupt(format!("{path}: the archive disagrees with the manifest")));
    }
    let x = Arc::new(x);
    store.shared.caches.put_archive(a.name.as_str().into(), x.clone());
    Ok(x)
}

/// Every event of the archive in seq order, checked to be gap-free, and the
/// seq of the first. Each event goes to its place as its block is decoded,
/// so a whole archive is held once, not once as read and again as ordered.
pub(crate) async fn all(store: &Store, a: &ArchiveRef) -> Result<(u64, Vec<Event>), StorageError> {
    let x = open(store, a).await?;
    let first = x.footer().first_seq;
    let events = retried(store, &a.name, || {
        let x = x.clone();
        async move {
            let mut order = SeqOrder::new(first, a.end_seq, x.footer().event_count)?;
            let mut scan = x.scan_all(Direction::Forward);
            while let Some(chunk) = scan.next_chunk().await? {
                for e in chunk {
                    order.place(e)?;
                }
            }
            order.finish()
        }
    })
    .await?;
    Ok((first, events))
}

/// The events of [`all`] that `keep` keeps, each with its seq (in seq
/// order): the rest are dropped as they are paired, not copied.
async fn all_where(store: &Store, a: &ArchiveRef, keep: impl Fn(u64, &Event) -> bool) -> Result<Vec<ArchivedEvent>, StorageError> {
    let (first, events) = all(store, a).await?;
    Ok(events.into_iter().zip(first..).filter(|(e, seq)| keep(*seq, e)).map(|(event, seq)| ArchivedEvent { seq, event }).collect())
}

/// An archive's events (in its own order) put in seq order and checked to
/// be exactly `first..end`. Seqs are dense, so each event goes straight to
/// its slot: a sort would move each of a million events some twenty times.
struct SeqOrder {
    first: u64,
    slots: Vec<Option<Event>>,
}

impl SeqOrder {
    /// `count`: the events the archive's footer says it holds, which its
    /// blocks were checked to add up to. A range that disagrees is refused
    /// before anything is allocated for it.
    fn new(first: u64, end: u64, count: u64) -> Result<Self, ArchiveError> {
        let n = end.checked_sub(first).filter(|n| *n == count).and_then(|n| usize::try_from(n).ok()).ok_or_else(gaps)?;
        Ok(SeqOrder { first, slots: std::iter::repeat_with(|| None).take(n).collect() })
    }

    fn place(&mut self, e: ArchivedEvent) -> Result<(), ArchiveError> {
        let slot = e.seq.checked_sub(self.first).and_then(|i| usize::try_from(i).ok()).and_then(|i| self.slots.get_mut(i)).ok_or_else(gaps)?;
        match slot.replace(e.event) {
            None => Ok(()),
            Some(_) => Err(gaps()),
        }
    }

    fn finish(self) -> Result<Vec<Event>, ArchiveError> {
        self.slots.into_iter().collect::<Option<Vec<_>>>().ok_or_else(gaps)
    }
}

fn gaps() -> ArchiveError {
    ArchiveError::Invalid("the archive's seqs have gaps".into())
}

/// The events of the archive tagged `k`=`v`, in seq order: from its
/// postings when it indexes `k`, else from all of it.
pub(crate) async fn tagged(store: &Store, a: &ArchiveRef, k: &str, v: &str) -> Result<Vec<ArchivedEvent>, StorageError> {
    let x = open(store, a).await?;
    let key = Key::Tag(k.to_string());
    let has = |e: &Event| e.tags.iter().any(|(a, b)| a == k && b == v);
    if !x.footer().indexes.contains(&key) {
        return all_where(store, a, |_, e| has(e)).await;
    }
    let mut evs = retried(store, &a.name, || {
        let (x, key) = (x.clone(), key.clone());
        async move { x.scan_value(&key, v, Direction::Forward).await?.collect().await }
    })
    .await?;
    evs.retain(|e| has(&e.event));
    evs.sort_unstable_by_key(|e| e.seq);
    Ok(evs)
}

/// How many events of `stream` the archive holds (one directory page,
/// none when its filter rules the stream out).
pub(crate) async fn stream_count(store: &Store, a: &ArchiveRef, stream: &str) -> Result<u64, StorageError> {
    let x = open(store, a).await?;
    let space = retried(store, &a.name, || {
        let x = x.clone();
        async move { x.space(stream).await }
    })
    .await?;
    Ok(space.map_or(0, |s| s.space.count))
}

/// The events of `stream` in the archive, in revision order.
pub(crate) async fn stream_events(store: &Store, a: &ArchiveRef, stream: &str) -> Result<Vec<ArchivedEvent>, StorageError> {
    let x = open(store, a).await?;
    let mut evs = retried(store, &a.name, || {
        let x = x.clone();
        async move {
            match x.space(stream).await? {
                Some(s) => x.scan(&s, None, Direction::Forward)?.collect().await,
                None => Ok(Vec::new()),
            }
        }
    })
    .await?;
    evs.sort_unstable_by_key(|e| e.event.revision);
    Ok(evs)
}

/// The first seq in `[from, to)` of an event of the archive matching `c`:
/// by postings for an item whose first tag key (or, with no tags, whose
/// types) the archive indexes, else from all of it.
pub(crate) async fn first_match(store: &Store, a: &ArchiveRef, from: u64, to: u64, c: &AppendCondition) -> Result<Option<u64>, StorageError> {
    let x = open(store, a).await?;
    let indexed = |k: &Key| x.footer().indexes.contains(k);
    let mut whole: Option<Vec<ArchivedEvent>> = None;
    let mut best: Option<u64> = None;
    for q in &c.fail_if_events_match {
        let by: Vec<(Key, String)> = match q.tags.first() {
            Some((k, v)) if indexed(&Key::Tag(k.clone())) => vec![(Key::Tag(k.clone()), v.clone())],
            None if !q.types.is_empty() && indexed(&Key::Type) => q.types.iter().map(|t| (Key::Type, t.clone())).collect(),
            _ => Vec::new(),
        };
        let mut candidates = Vec::new();
        if by.is_empty() {
            if whole.is_none() {
                whole = Some(all_where(store, a, |seq, _| seq >= from && seq < to).await?);
            }
        } else {
            for (key, value) in &by {
                candidates.extend(
                    retried(store, &a.name, || {
                        let (x, key) = (x.clone(), key.clone());
                        async move { x.scan_value(&key, value, Direction::Forward).await?.collect().await }
                    })
                    .await?,
                );
            }
        }
        let pool = if by.is_empty() { whole.as_deref().unwrap_or_default() } else { &candidates[..] };
        if let Some(seq) = pool.iter().filter(|e| e.seq >= from && e.seq < to && q.matches(&e.event)).map(|e| e.seq).min() {
            best = Some(best.map_or(seq, |b| b.min(seq)));
        }
    }
    Ok(best)
}

/// A failed read of the history being sealed, as a storage error.
fn sealing_read(e: ReadError) -> StorageError {
    match e {
        ReadError::Storage(s) => s,
        other => StorageError::Backend(format!("sealing: {other}")),
    }
}

/// Builds and uploads one archive of `events` (in seq order).
async fn build(store: &Store, events: Vec<ArchivedEvent>) -> Result<ArchiveRef, StorageError> {
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        for (k, _) in &e.event.tags {
            *keys.entry(k.as_str()).or_default() += 1;
        }
    }
    let mut keys: Vec<(&str, usize)> = keys.into_iter().collect();
    keys.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut indexes = vec![Key::Type];
    indexes.extend(keys.into_iter().take(MAX_INDEXED_TAG_KEYS).map(|(k, _)| Key::Tag(k.to_string())));
    let cfg = &store.shared.config;
    let opts = ArchiveOptions { indexes, zstd_level: cfg.encode.zstd_level, ..ArchiveOptions::default() };
    let enc = tokio::task::spawn_blocking(move || {
        let mut b = cairn_format::archive::ArchiveBuilder::new(opts)?;
        for e in events {
            b.add(e);
        }
        b.finish()
    })
    .await
    .map_err(|e| StorageError::Backend(format!("archive task: {e}")))??;
    let name = archive_name();
    let bytes = enc.bytes.len() as u64;
    store.shared.objects.put(&store.paths.object(&name), Bytes::from(enc.bytes)).await?;
    Ok(ArchiveRef { name, first_seq: enc.footer.first_seq, end_seq: enc.footer.end_seq, bytes, max_ts: enc.footer.max_ts, footer_offset: enc.footer_offset })
}

/// What tiering seals in `m` as of `now_ms`: the oldest index objects that
/// are past the policy and out of the idempotency window (a bounded number
/// of events a step), as archives. `None` when nothing is due.
pub(crate) async fn seal(store: &Arc<Store>, m: &Manifest, now_ms: i64) -> Result<Option<Replacement>, StorageError> {
    let made = Instant::now();
    let t = &m.tiering;
    if t.is_empty() {
        return Ok(None);
    }
    let cfg = &store.shared.config;
    let cutoff = t.seal_after_ms.map(|a| now_ms.saturating_sub(i64::try_from(a).unwrap_or(i64::MAX)));
    let mut chosen = Vec::new();
    for idx in &m.indexes {
        if idx.end_seq > m.window_start {
            break;
        }
        let f = store.index_footer(idx).await?;
        let max_ts = f.segments.iter().map(|s| s.max_ts).max().unwrap_or(i64::MIN);
        let due = t.seal_before.is_some_and(|b| idx.end_seq <= b) || cutoff.is_some_and(|c| max_ts < c);
        let step: u64 = chosen.iter().map(|(i, _): &(cairn_format::manifest::IndexRef, _)| i.end_seq - i.first_seq).sum();
        if !due || (!chosen.is_empty() && step + (idx.end_seq - idx.first_seq) > cfg.archive_events.saturating_mul(4)) {
            break;
        }
        chosen.push((idx.clone(), f));
    }
    let (Some((first, _)), Some((last, _))) = (chosen.first(), chosen.last()) else { return Ok(None) };
    let (start, end) = (first.first_seq, last.end_seq);
    // Events before the first seq were truncated: they are not archived.
    let from = start.max(m.first_seq);
    let mut archives = Vec::new();
    if from < end {
        let opts = ReadOptions { limit: Some((end - from) as usize), tag: None };
        let mut scan = match StoreScan::new(store.clone(), from, opts).await {
            Ok(s) => s,
            // Truncated meanwhile by another node: this view is behind, and
            // a seal prepared on it would not apply.
            Err(ReadError::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(sealing_read(e)),
        };
        let (mut part, mut part_bytes) = (Vec::new(), 0u64);
        loop {
            let chunk = scan.next_chunk().await.map_err(sealing_read)?;
            let Some(chunk) = chunk else { break };
            for e in chunk.into_iter().filter(|e| e.seq < end) {
                part_bytes += e.event.data.len() as u64;
                part.push(ArchivedEvent { seq: e.seq, event: e.event });
                if part.len() as u64 >= cfg.archive_events || part_bytes >= cfg.archive_bytes {
                    archives.push(build(store, std::mem::take(&mut part)).await?);
                    part_bytes = 0;
                }
            }
        }
        if !part.is_empty() {
            archives.push(build(store, part).await?);
        }
    }
    // The archives cover the index objects' range exactly, the first from
    // the objects' start (what is before the first seq is hidden anyway).
    let contiguous = archives.first().is_some_and(|a| a.first_seq == from) && archives.windows(2).all(|w| w[0].end_seq == w[1].first_seq) && archives.last().is_some_and(|a| a.end_seq == end);
    if !contiguous {
        return Err(StorageError::Backend(format!("sealing [{from}, {end}) read {} archives that do not cover it", archives.len())));
    }
    if let Some(a) = archives.first_mut() {
        a.first_seq = start;
    }
    let indexes: Vec<_> = chosen.iter().map(|(i, _)| i.clone()).collect();
    let mut retire: Vec<String> = Vec::new();
    for (i, f) in &chosen {
        retire.push(i.name.clone());
        retire.extend(f.segments.iter().map(|s| s.name.clone()));
    }
    let (heads, since_ms) = fold_heads(store, m, &indexes, &[], end).await?;
    if let Some(h) = &m.heads {
        retire.push(h.name.clone());
    }
    tracing::info!(store = %store.paths.store, index_objects = indexes.len(), archives = archives.len(), start, end, "sealed history into archives");
    let kind = ReplacementKind::Seal { indexes: indexes.into_iter().map(|i| i.name).collect(), archives, old_heads: m.heads.as_ref().map(|h| h.name.clone()), heads, retire, since_ms };
    Ok(Some(Replacement { kind, made }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> ArchivedEvent {
        let event = Event { stream: "s".into(), revision: seq, event_type: "T".into(), timestamp: 0, id: None, tags: Vec::new(), binary: false, data: Bytes::new() };
        ArchivedEvent { seq, event }
    }

    /// The events placed one by one, then their revisions (= their seqs).
    fn in_seq_order(evs: Vec<ArchivedEvent>, first: u64, end: u64, name: &str) -> Result<Vec<Event>, StorageError> {
        let placed = || -> Result<Vec<Event>, ArchiveError> {
            let mut order = SeqOrder::new(first, end, evs.len() as u64)?;
            for e in evs {
                order.place(e)?;
            }
            order.finish()
        };
        placed().map_err(|e| storage(name, e))
    }

    fn seqs(r: Result<Vec<Event>, StorageError>) -> Result<Vec<u64>, String> {
        r.map(|v| v.iter().map(|e| e.revision).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn an_archives_events_are_put_in_seq_order_and_checked_dense() {
        let order = [13, 10, 12, 11, 14];
        assert_eq!(seqs(in_seq_order(order.map(ev).into(), 10, 15, "a")), Ok(vec![10, 11, 12, 13, 14]));
        assert_eq!(seqs(in_seq_order(Vec::new(), 7, 7, "a")), Ok(vec![]));
        for (bad, first, end) in [(vec![10, 12], 10, 12), (vec![10, 10], 10, 12), (vec![9, 10], 10, 12), (vec![10, 11], 10, 13), (vec![10, 11, 12], 10, 12), (vec![], 12, 10)] {
            let r = seqs(in_seq_order(bad.iter().copied().map(ev).collect(), first, end, "a"));
            assert!(r.as_ref().is_err_and(|m| m.contains("gaps")), "{bad:?} in {first}..{end}: {r:?}");
        }
        // Fewer events than the footer's count leave a slot empty.
        let mut short = SeqOrder::new(10, 13, 3).unwrap();
        short.place(ev(10)).unwrap();
        short.place(ev(12)).unwrap();
        assert!(short.finish().is_err());
        // A range the count disagrees with is refused before its slots are
        // allocated (a corrupt footer cannot ask for 2^40 of them).
        assert!(SeqOrder::new(0, 1 << 40, 5).is_err());
    }
}
