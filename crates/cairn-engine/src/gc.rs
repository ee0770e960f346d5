//! Garbage collection, measured by the store's clock (the Last-Modified of
//! an object just written), never a node's.
//!
//! Manifest versions: first create `gc/boundary/{k+1}` holding a floor F
//! (the oldest version younger than the retention; the newest two are always
//! kept), then delete versions below F. Boundaries are never deleted: a
//! writer that committed into a collected version's name sees the newer
//! boundary and does not acknowledge (see the writer).
//!
//! Segments and index objects not referenced by the newest manifest are
//! deleted after their grace: `retired_grace` from their retirement for
//! objects replaced by roll-up, `orphan_grace` from their upload for objects
//! no commit ever referenced.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cairn_format::manifest::Boundary;

use crate::error::StorageError;
use crate::objects::{numbered, CreateOutcome};
use crate::store::{json, KnownBoundary, Store};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The floor in force after this run.
    pub floor: u64,
    pub manifests_deleted: usize,
    pub objects_deleted: usize,
}

pub(crate) async fn collect(store: &Store) -> Result<GcReport, StorageError> {
    let objects = &store.shared.objects;
    let cfg = &store.shared.config;
    let clock_path = store.paths.clock();
    objects.put(&clock_path, Bytes::from_static(b"{}")).await?;
    let now = objects.head(&clock_path).await?.last_modified.timestamp_millis();
    let ms = |d: std::time::Duration| d.as_millis() as i64;

    // Manifest versions.
    let mut versions: Vec<(u64, i64)> = objects
        .list(&store.paths.manifest_dir())
        .await?
        .iter()
        .filter_map(|m| numbered(&m.location).map(|v| (v, m.last_modified.timestamp_millis())))
        .collect();
    versions.sort_unstable();
    let mut report = GcReport::default();
    let known = crate::store::newest_boundary(objects, &store.paths).await?;
    let mut floor = known.floor;
    if let Some(&(newest, _)) = versions.last() {
        let young = versions.iter().find(|(_, t)| now - t < ms(cfg.manifest_retention)).map_or(newest, |(v, _)| *v);
        let f = young.min(newest.saturating_sub(1));
        if f > known.floor {
            let k = known.k + 1;
            match objects.create(&store.paths.boundary(k), json(&Boundary { floor: f })).await? {
                CreateOutcome::Created => {
                    store.learn_boundary(KnownBoundary { k, floor: f });
                    floor = f;
                }
                // Another node's GC got there first; the next run goes on.
                CreateOutcome::AlreadyExists => {
                    let b = crate::store::newest_boundary(objects, &store.paths).await?;
                    store.learn_boundary(b);
                    floor = b.floor;
                }
            }
        }
    }
    report.floor = floor;
    for (v, _) in versions.iter().filter(|(v, _)| *v < floor) {
        objects.delete(&store.paths.manifest(*v)).await?;
        report.manifests_deleted += 1;
    }

    // Segments and index objects.
    let m = store.refresh().await?;
    let mut live: HashSet<String> = m.segments.iter().map(|s| s.name.clone()).collect();
    live.extend(m.heads.iter().map(|h| h.name.clone()));
    live.extend(m.archives.iter().map(|a| a.name.clone()));
    for idx in &m.indexes {
        live.insert(idx.name.clone());
        let f = store.index_footer(idx).await?;
        live.extend(f.segments.iter().map(|s| s.name.clone()));
    }
    let retired: HashMap<&str, i64> = m.retired.iter().map(|r| (r.name.as_str(), r.since_ms)).collect();
    for dir in [store.paths.seg_dir(), store.paths.idx_dir(), store.paths.arc_dir()] {
        for o in objects.list(&dir).await? {
            let Some(name) = o.location.filename() else { continue };
            if live.contains(name) {
                continue;
            }
            let expired = match retired.get(name) {
                Some(since) => now - since >= ms(cfg.retired_grace),
                None => now - o.last_modified.timestamp_millis() >= ms(cfg.orphan_grace),
            };
            if expired {
                objects.delete(&o.location).await?;
                report.objects_deleted += 1;
            }
        }
    }
    tracing::debug!(store = %store.paths.store, ?report, "gc done");
    Ok(report)
}
