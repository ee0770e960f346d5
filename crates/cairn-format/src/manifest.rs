//! The JSON documents of a store: `root.json`, manifest versions, GC
//! boundaries. Field names are persisted.

use serde::{Deserialize, Serialize};

use crate::index::SegmentRef;
use crate::Error;

/// A manifest larger than this is refused (DESIGN: hard cap 256 KiB).
pub const MAX_MANIFEST_BYTES: usize = 256 << 10;

/// `{store}/root.json`: names the live incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub incarnation: String,
    pub created_ms: i64,
}

/// `gc/boundary/{k}.json`: manifest versions below `floor` may be deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    pub floor: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    pub name: String,
    pub first_seq: u64,
    pub end_seq: u64,
    pub bytes: u64,
    pub footer_offset: u64,
    pub footer_len: u32,
}

/// An object no longer referenced, kept for readers until its grace ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    pub name: String,
    /// The store's clock when it was replaced (ms since the epoch).
    pub since_ms: i64,
}

/// A store's retention settings: events before `truncate_before`, and whole
/// objects whose newest event is older than `max_age_ms`, are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.truncate_before.is_none() && self.max_age_ms.is_none()
    }
}

/// A store's tiering settings: history before `seal_before`, or older than
/// `seal_after_ms`, is sealed into archives (whole index objects, from the
/// oldest end, never inside the idempotency window).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiering {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_after_ms: Option<u64>,
}

impl Tiering {
    pub fn is_empty(&self) -> bool {
        self.seal_before.is_none() && self.seal_after_ms.is_none()
    }
}

/// An archive of the store's history (`arc/{ulid}.arc`, docs/FORMAT.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    pub name: String,
    pub first_seq: u64,
    pub end_seq: u64,
    pub bytes: u64,
    /// The newest event's timestamp (for a maximum age).
    pub max_ts: i64,
    /// Where its footer starts, so it opens with one exact range GET (0:
    /// not recorded, as by versions before it was; a tail read then).
    #[serde(default)]
    pub footer_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub commit_id: String,
    pub parent_commit_id: Option<String>,
    pub incarnation: String,
    pub next_seq: u64,
    pub last_ts: i64,
    /// Ids of events at or after this seq are checked for idempotency.
    pub window_start: u64,
    /// The lowest seq a read may return: everything before it was
    /// truncated by retention (its objects are dropped as they empty).
    #[serde(default)]
    pub first_seq: u64,
    /// Where the stored objects start (`<= first_seq`).
    #[serde(default)]
    pub stored_from: u64,
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    /// The last revision of every stream whose objects were dropped: an
    /// index object with a stream table and no runs, so `no_stream` and
    /// revisions stay right after truncation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<IndexRef>,
    #[serde(default, skip_serializing_if = "Tiering::is_empty")]
    pub tiering: Tiering,
    /// Archives, oldest first, covering `[stored_from, indexes[0].first_seq)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<ArchiveRef>,
    /// Index objects, oldest first, covering the rest up to `segments[0].base_seq`.
    pub indexes: Vec<IndexRef>,
    /// Recent segments, oldest first, covering the rest up to `next_seq`.
    pub segments: Vec<SegmentRef>,
    #[serde(default)]
    pub retired: Vec<Retired>,
}

impl Manifest {
    /// Version 0 of a fresh incarnation.
    pub fn genesis(incarnation: &str, commit_id: String) -> Manifest {
        Manifest {
            version: 0,
            commit_id,
            parent_commit_id: None,
            incarnation: incarnation.to_string(),
            next_seq: 0,
            last_ts: 0,
            window_start: 0,
            first_seq: 0,
            stored_from: 0,
            retention: Retention::default(),
            heads: None,
            tiering: Tiering::default(),
            archives: Vec::new(),
            indexes: Vec::new(),
            segments: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// Whether retention or tiering may have work to do (a policy is set,
    /// or objects wholly before the first seq may still be stored).
    pub fn has_policies(&self) -> bool {
        !self.retention.is_empty() || !self.tiering.is_empty() || self.first_seq != self.stored_from
    }

    /// Where the index objects start.
    pub fn archived_end(&self) -> u64 {
        self.archives.last().map_or(self.stored_from, |a| a.end_seq)
    }

    /// Where the recent segments start.
    pub fn indexed_end(&self) -> u64 {
        self.indexes.last().map_or(self.archived_end(), |i| i.end_seq)
    }

    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        self.validate("manifest")?;
        let b = serde_json::to_vec(self).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
        if b.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Invalid(format!("manifest of {} bytes exceeds {MAX_MANIFEST_BYTES}", b.len())));
        }
        Ok(b)
    }

    pub fn decode(b: &[u8], object: &str) -> Result<Manifest, Error> {
        if b.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Corrupt(format!("{object}: manifest of {} bytes is too large", b.len())));
        }
        let m: Manifest = serde_json::from_slice(b).map_err(|e| Error::Corrupt(format!("{object}: {e}")))?;
        m.validate(object)?;
        Ok(m)
    }

    fn validate(&self, object: &str) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Corrupt(format!("{object}: {why}")));
        let mut seq = self.stored_from;
        if self.stored_from > self.first_seq || self.first_seq > self.next_seq {
            return bad("first_seq out of place");
        }
        for a in &self.archives {
            if a.first_seq != seq || a.end_seq <= a.first_seq {
                return bad("archives not contiguous");
            }
            seq = a.end_seq;
        }
        for i in &self.indexes {
            if i.first_seq != seq || i.end_seq <= i.first_seq {
                return bad("index objects not contiguous");
            }
            seq = i.end_seq;
        }
        for s in &self.segments {
            if s.base_seq != seq || s.count == 0 {
                return bad("segments not contiguous");
            }
            seq = match seq.checked_add(s.count) {
                Some(v) => v,
                None => return bad("seq overflow"),
            };
        }
        if seq != self.next_seq || self.window_start > self.next_seq {
            return bad("next_seq does not match the segments");
        }
        Ok(())
    }
}
