//! Roll-up: merges old recent segments into one large segment plus an index
//! object, and merges adjacent index objects, so a manifest stays bounded
//! whatever the history. Blocks are copied as they are (they hold no seqs);
//! seqs and revisions never change. The result is committed by the writer
//! with its next batch, only if the manifest still holds what it replaces.

use std::sync::Arc;

use bytes::Bytes;
use cairn_format::index::{HeadsBuilder, IndexBuilder, SegmentRef};
use cairn_format::manifest::{ArchiveRef, IndexRef, Manifest};
use cairn_format::segment::{encode_footer, merge_footers, MergeInput};
use object_store::buffered::BufWriter;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use crate::error::StorageError;
use crate::store::{index_name, segment_name, Store};

/// Objects a roll-up or index merge reads at once.
const FETCHES_IN_FLIGHT: usize = 8;

/// A change to the manifest prepared in the background. `made` is taken
/// before its objects were uploaded: past the writer's `reupload_after` GC
/// may take them as orphans, so the writer drops a replacement that old.
#[derive(Clone, Debug)]
pub struct Replacement {
    pub kind: ReplacementKind,
    pub made: std::time::Instant,
}

#[derive(Clone, Debug)]
pub enum ReplacementKind {
    /// `replaced` are the first recent segments; `index` covers them.
    RollUp { replaced: Vec<String>, index: IndexRef, since_ms: i64 },
    /// `replaced` are adjacent index objects.
    MergeIndexes { replaced: Vec<String>, index: IndexRef, since_ms: i64 },
    /// Retention: the first `archives`, then the first `indexes` index
    /// objects, then the first `segments` recent segments are dropped
    /// (everything before `end`); `heads` (replacing `old_heads`) keeps
    /// their streams' last revisions. `retire` lists every object dropped,
    /// the segments behind the index objects too.
    Truncate { archives: Vec<String>, indexes: Vec<String>, segments: Vec<String>, old_heads: Option<String>, heads: Option<IndexRef>, end: u64, retire: Vec<String>, since_ms: i64 },
    /// Tiering: the first `indexes` index objects are replaced by
    /// `archives` (the same seqs); `heads` (replacing `old_heads`) takes
    /// their streams' last revisions.
    Seal { indexes: Vec<String>, archives: Vec<ArchiveRef>, old_heads: Option<String>, heads: Option<IndexRef>, retire: Vec<String>, since_ms: i64 },
}

/// Uploads an index object and returns its reference and the store's clock
/// (its Last-Modified).
async fn upload_index(store: &Store, b: IndexBuilder) -> Result<(IndexRef, i64), StorageError> {
    let cfg = &store.shared.config;
    let (codec, level) = (cfg.encode.codec, cfg.encode.zstd_level);
    upload_encoded(store, move || b.finish(codec, level)).await
}

async fn upload_encoded(store: &Store, encode: impl FnOnce() -> Result<cairn_format::index::EncodedIndex, cairn_format::Error> + Send + 'static) -> Result<(IndexRef, i64), StorageError> {
    let enc = tokio::task::spawn_blocking(encode)
        .await
        .map_err(|e| StorageError::Backend(format!("index task: {e}")))??;
    let name = index_name();
    let path = store.paths.object(&name);
    store.shared.objects.put(&path, Bytes::from(enc.bytes)).await?;
    let since = store.shared.objects.head(&path).await?.last_modified.timestamp_millis();
    let r = IndexRef {
        name: name.clone(),
        first_seq: enc.footer.first_seq,
        end_seq: enc.footer.end_seq,
        bytes: enc.footer_offset + u64::from(enc.footer_len),
        footer_offset: enc.footer_offset,
        footer_len: enc.footer_len,
    };
    store.shared.caches.put_index_footer(name.as_str().into(), Arc::new(enc.footer));
    Ok((r, since))
}

pub(crate) async fn roll_up(store: &Store, segs: Vec<SegmentRef>) -> Result<Replacement, StorageError> {
    let made = std::time::Instant::now();
    let large = segment_name();
    let path = store.paths.object(&large);
    let objects = &store.shared.objects;
    let mut w = BufWriter::with_capacity(objects.inner.clone(), path.clone(), 16 << 20);
    let mut footers = Vec::with_capacity(segs.len());
    let (mut byte_offset, mut index_offset) = (0u64, 0u32);
    // Several segments in flight at once, appended in order: on a store
    // with tens of milliseconds per request, one at a time would take
    // seconds per roll-up.
    let fetches = futures::stream::iter(segs.clone().into_iter().map(|seg| async move {
        let f = store.footer(&seg).await?;
        let data = objects.get_range(&store.paths.object(&seg.name), 0..seg.footer_offset).await?;
        Ok::<_, StorageError>((seg, f, data))
    }))
    .buffered(FETCHES_IN_FLIGHT);
    futures::pin_mut!(fetches);
    while let Some(fetched) = fetches.next().await {
        let (seg, f, data) = fetched?;
        w.put(data).await.map_err(|e| StorageError::Backend(format!("roll-up upload: {e}")))?;
        footers.push((f, byte_offset, index_offset));
        byte_offset += seg.footer_offset;
        index_offset = index_offset
            .checked_add(seg.count as u32)
            .ok_or_else(|| StorageError::Backend("roll-up input too large".into()))?;
    }
    let inputs: Vec<MergeInput> = footers.iter().map(|(f, b, i)| MergeInput { footer: f, byte_offset: *b, index_offset: *i }).collect();
    let merged = merge_footers(&inputs)?;
    let tail = encode_footer(&merged, byte_offset)?;
    let (footer_len, core_len) = (tail.len() as u32, cairn_format::segment::core_tail_len(&tail));
    w.put(Bytes::from(tail)).await.map_err(|e| StorageError::Backend(format!("roll-up upload: {e}")))?;
    w.shutdown().await.map_err(|e| StorageError::Backend(format!("roll-up upload: {e}")))?;
    let seg_ref = SegmentRef {
        name: large.clone(),
        base_seq: segs[0].base_seq,
        count: u64::from(index_offset),
        bytes: byte_offset + u64::from(footer_len),
        footer_offset: byte_offset,
        footer_len,
        min_ts: merged.min_ts,
        max_ts: merged.max_ts,
        core_len,
    };
    let mut b = IndexBuilder::new();
    b.add_segment(seg_ref, &merged)?;
    store.shared.caches.put_footer(large.as_str().into(), Arc::new(merged));
    let (index, since_ms) = upload_index(store, b).await?;
    tracing::info!(store = %store.paths.store, segments = segs.len(), events = index_offset, "rolled up");
    let kind = ReplacementKind::RollUp { replaced: segs.into_iter().map(|s| s.name).collect(), index, since_ms };
    Ok(Replacement { kind, made })
}

/// Merges the run of adjacent index objects with the fewest bytes (a few at
/// a time, so old, large ones are rarely rewritten).
pub(crate) async fn merge_indexes(store: &Store, indexes: Vec<IndexRef>) -> Result<Replacement, StorageError> {
    let made = std::time::Instant::now();
    const RUN: usize = 8;
    let run = RUN.min(indexes.len());
    let start = (0..=indexes.len() - run)
        .min_by_key(|i| indexes[*i..*i + run].iter().map(|x| x.bytes).sum::<u64>())
        .unwrap_or(0);
    let chosen = &indexes[start..start + run];
    let mut b = IndexBuilder::new();
    for idx in chosen {
        let f = store.index_footer(idx).await?;
        let pages: Vec<_> = futures::stream::iter(f.pages.iter().cloned().map(|p| async move { store.page(&idx.name, &p).await.map(|p| p.as_ref().clone()) }))
            .buffered(FETCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        b.add_index(&f, pages)?;
    }
    let (index, since_ms) = upload_index(store, b).await?;
    let kind = ReplacementKind::MergeIndexes { replaced: chosen.iter().map(|x| x.name.clone()).collect(), index, since_ms };
    Ok(Replacement { kind, made })
}

/// A heads object holding the last revision of every stream of the index
/// objects `indexes`, the segments `segments` and `m`'s heads object, for
/// the history before `end`; `None` when there is no stream. With the
/// store's clock (for the grace of what it replaces).
pub(crate) async fn fold_heads(store: &Store, m: &Manifest, indexes: &[IndexRef], segments: &[SegmentRef], end: u64) -> Result<(Option<IndexRef>, i64), StorageError> {
    let mut heads = HeadsBuilder::new();
    for idx in indexes.iter().chain(m.heads.iter()) {
        let f = store.index_footer(idx).await?;
        let pages: Vec<_> = futures::stream::iter(f.pages.iter().cloned().map(|p| async move { store.page(&idx.name, &p).await }))
            .buffered(FETCHES_IN_FLIGHT)
            .try_collect()
            .await?;
        for page in &pages {
            for s in page.iter() {
                heads.add(&s.name, s.last_revision);
            }
        }
    }
    for seg in segments {
        let f = store.footer(seg).await?;
        for s in &f.streams {
            heads.add(&s.name, s.last_revision());
        }
    }
    if heads.is_empty() {
        let clock = store.paths.clock();
        store.shared.objects.put(&clock, Bytes::from_static(b"{}")).await?;
        return Ok((None, store.shared.objects.head(&clock).await?.last_modified.timestamp_millis()));
    }
    let cfg = &store.shared.config;
    let (codec, level) = (cfg.encode.codec, cfg.encode.zstd_level);
    let (r, since) = upload_encoded(store, move || heads.finish(end, codec, level)).await?;
    Ok((Some(r), since))
}

/// What retention lets go of in `m` as of `now_ms` (the node's clock, which
/// event timestamps come from): whole objects from the oldest end
/// (archives, then index objects, then recent segments), those entirely
/// before `m.first_seq` or whose newest event is older than the maximum
/// age. `None` when nothing is due.
pub(crate) async fn truncate(store: &Store, m: &Manifest, now_ms: i64) -> Result<Option<Replacement>, StorageError> {
    let made = std::time::Instant::now();
    let cutoff = m.retention.max_age_ms.map(|a| now_ms.saturating_sub(i64::try_from(a).unwrap_or(i64::MAX)));
    let old = |end: u64, max_ts: i64| end <= m.first_seq || cutoff.is_some_and(|c| max_ts < c);
    let mut retire = Vec::new();
    let mut end = m.stored_from;
    // Archives' streams are in the heads object already (sealing put them there).
    let mut archives = Vec::new();
    for a in &m.archives {
        if !old(a.end_seq, a.max_ts) {
            break;
        }
        archives.push(a.name.clone());
        retire.push(a.name.clone());
        end = a.end_seq;
    }
    let mut indexes = Vec::new();
    if archives.len() == m.archives.len() {
        for idx in &m.indexes {
            let f = store.index_footer(idx).await?;
            let max_ts = f.segments.iter().map(|s| s.max_ts).max().unwrap_or(i64::MIN);
            if !old(idx.end_seq, max_ts) {
                break;
            }
            indexes.push(idx.clone());
            retire.push(idx.name.clone());
            retire.extend(f.segments.iter().map(|s| s.name.clone()));
            end = idx.end_seq;
        }
    }
    let mut segments = Vec::new();
    if archives.len() == m.archives.len() && indexes.len() == m.indexes.len() {
        for seg in &m.segments {
            if !old(seg.end_seq(), seg.max_ts) {
                break;
            }
            segments.push(seg.clone());
            retire.push(seg.name.clone());
            end = seg.end_seq();
        }
    }
    if archives.is_empty() && indexes.is_empty() && segments.is_empty() {
        return Ok(None);
    }
    let old_heads = m.heads.as_ref().map(|h| h.name.clone());
    if let Some(h) = &old_heads {
        retire.push(h.clone());
    }
    let (heads, since_ms) = fold_heads(store, m, &indexes, &segments, end).await?;
    tracing::info!(store = %store.paths.store, archives = archives.len(), index_objects = indexes.len(), segments = segments.len(), end, "retention drops objects");
    let kind = ReplacementKind::Truncate {
        archives,
        indexes: indexes.into_iter().map(|i| i.name).collect(),
        segments: segments.into_iter().map(|s| s.name).collect(),
        old_heads,
        heads,
        end,
        retire,
        since_ms,
    };
    Ok(Some(Replacement { kind, made }))
}
