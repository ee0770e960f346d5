//! Docs: key-value documents of a store, for projected views and
//! checkpoints, updated with compare-and-swap.
//!
//! One object per doc (`doc/{key}`), written with the backend's conditional
//! put: create-if-absent for a new doc, If-Match (`PutMode::Update`) for an
//! existing one (local disk through [`crate::local::LocalStore`]). Each
//! version carries a write id, which is the doc's ETag: an ambiguous answer
//! (`AlreadyExists` or a failed precondition after a retried put) is
//! resolved by reading back. A delete writes a tombstone, so a later
//! conditional write cannot race it.

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::store::Store;

pub fn valid_doc_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 200 && k != "." && k != ".." && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A write's precondition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocCondition {
    None,
    /// The doc's current ETag must be this.
    IfMatch(String),
    /// The doc must not exist (`If-None-Match: *`).
    IfNoneMatch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    pub body: Bytes,
    pub etag: String,
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocWritten {
    pub etag: String,
    /// The doc did not exist before.
    pub created: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DocError {
    #[error("store not found: {0}")]
    StoreNotFound(String),
    #[error("invalid doc key {0:?}")]
    InvalidKey(String),
    #[error("doc not found")]
    NotFound,
    #[error("precondition failed")]
    PreconditionFailed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Persisted: the first line of a doc object.
#[derive(Serialize, Deserialize)]
struct Header {
    write_id: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    content_type: Option<String>,
}

fn envelope(h: &Header, body: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(h).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The current version: its header, body and the backend's ETag.
struct Current {
    header: Header,
    body: Bytes,
    backend_etag: Option<String>,
}

async fn current(store: &Store, key: &str) -> Result<Option<Current>, StorageError> {
    let path = store.paths.doc(key);
    let inner = &store.shared.objects.inner;
    let r = match inner.get(&path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(StorageError::Backend(format!("get {path}: {e}"))),
    };
    let etag = r.meta.e_tag.clone();
    let bytes = r.bytes().await.map_err(|e| StorageError::Backend(format!("get {path}: {e}")))?;
    let nl = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| StorageError::Corrupt(format!("{path}: no header")))?;
    let header: Header = serde_json::from_slice(&bytes[..nl]).map_err(|e| StorageError::Corrupt(format!("{path}: {e}")))?;
    Ok(Some(Current { header, body: bytes.slice(nl + 1..), backend_etag: etag }))
}

const ATTEMPTS: usize = 16;

/// Writes a version (`body` = `None`: a tombstone) under `cond`.
async fn write(store: &Store, key: &str, body: Option<(&[u8], Option<String>)>, cond: &DocCondition) -> Result<DocWritten, DocError> {
    let write_id = ulid::Ulid::generate().to_string();
    let header = Header { write_id: write_id.clone(), deleted: body.is_none(), content_type: body.as_ref().and_then(|b| b.1.clone()) };
    let bytes = envelope(&header, body.as_ref().map_or(&[][..], |b| b.0));
    let tombstone = body.is_none();
    let path = store.paths.doc(key);
    let inner = &store.shared.objects.inner;
    let mut created = None;
    for _ in 0..ATTEMPTS {
        let cur = current(store, key).await?;
        let live = cur.as_ref().filter(|c| !c.header.deleted);
        // Our own write landed (an ambiguous answer before): done.
        if cur.as_ref().is_some_and(|c| c.header.write_id == write_id) {
            return Ok(DocWritten { etag: write_id, created: created.unwrap_or(false) });
        }
        match (cond, live, tombstone) {
            (_, None, true) => return Err(DocError::NotFound),
            (DocCondition::IfNoneMatch, Some(_), _) => return Err(DocError::PreconditionFailed),
            (DocCondition::IfMatch(want), l, _) if l.is_none_or(|c| &c.header.write_id != want) => {
                return Err(if l.is_none() && tombstone { DocError::NotFound } else { DocError::PreconditionFailed })
            }
            _ => {}
        }
        created.get_or_insert(live.is_none());
        let mode = match &cur {
            None => PutMode::Create,
            Some(c) => PutMode::Update(UpdateVersion { e_tag: c.backend_etag.clone(), version: None }),
        };
        match inner.put_opts(&path, PutPayload::from_bytes(bytes.clone()), PutOptions { mode, ..Default::default() }).await {
            Ok(_) => return Ok(DocWritten { etag: write_id, created: live.is_none() }),
            // Someone else's version, or ours retried: look again.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => continue,
            Err(e) => {
                tracing::debug!(%path, error = %e, "doc write failed; reading back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    Err(DocError::Storage(StorageError::Backend(format!("{path}: too many conflicting writes"))))
}

pub(crate) async fn put(store: &Store, key: &str, body: &[u8], content_type: Option<String>, cond: &DocCondition) -> Result<DocWritten, DocError> {
    write(store, key, Some((body, content_type)), cond).await
}

pub(crate) async fn get(store: &Store, key: &str) -> Result<Doc, DocError> {
    match current(store, key).await? {
        Some(c) if !c.header.deleted => Ok(Doc { body: c.body, etag: c.header.write_id, content_type: c.header.content_type }),
        _ => Err(DocError::NotFound),
    }
}

pub(crate) async fn delete(store: &Store, key: &str, if_match: Option<String>) -> Result<(), DocError> {
    let cond = if_match.map_or(DocCondition::None, DocCondition::IfMatch);
    write(store, key, None, &cond).await.map(|_| ())
}
