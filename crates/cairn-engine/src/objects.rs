//! Object access: the paths of a store, conditional create, and reads retried
//! with back-off in one place.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::StorageError;
use crate::observe::{ObjectOp, Observer, Outcome};

/// Where a store's objects live (DESIGN "Objects of a store").
#[derive(Clone, Debug)]
pub struct StorePaths {
    pub store: String,
    pub incarnation: String,
    base: String,
}

impl StorePaths {
    pub fn new(store: &str, incarnation: &str) -> Self {
        StorePaths { store: store.into(), incarnation: incarnation.into(), base: format!("{store}/{incarnation}") }
    }
    pub fn root(store: &str) -> Path {
        Path::from(format!("{store}/root.json"))
    }
    pub fn prefix(&self) -> Path {
        Path::from(self.base.as_str())
    }
    pub fn manifest_dir(&self) -> Path {
        Path::from(format!("{}/manifest", self.base))
    }
    pub fn manifest(&self, v: u64) -> Path {
        Path::from(format!("{}/manifest/{v:020}.json", self.base))
    }
    pub fn boundary_dir(&self) -> Path {
        Path::from(format!("{}/gc/boundary", self.base))
    }
    pub fn boundary(&self, k: u64) -> Path {
        Path::from(format!("{}/gc/boundary/{k:020}.json", self.base))
    }
    pub fn clock(&self) -> Path {
        Path::from(format!("{}/gc/clock", self.base))
    }
    pub fn doc(&self, key: &str) -> Path {
        Path::from(format!("{}/doc/{key}", self.base))
    }
    pub fn seg_dir(&self) -> Path {
        Path::from(format!("{}/seg", self.base))
    }
    pub fn idx_dir(&self) -> Path {
        Path::from(format!("{}/idx", self.base))
    }
    pub fn arc_dir(&self) -> Path {
        Path::from(format!("{}/arc", self.base))
    }
    /// Segments, index objects and archives are named by their file name alone.
    pub fn object(&self, name: &str) -> Path {
        let dir = if name.ends_with(".idx") {
            "idx"
        } else if name.ends_with(".arc") {
            "arc"
        } else {
            "seg"
        };
        Path::from(format!("{}/{dir}/{name}", self.base))
    }
}

/// The number in a file name such as `00000000000000000042.json`.
pub fn numbered(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// What a create-if-absent put came back with.
#[derive(Debug)]
pub enum CreateOutcome {
    Created,
    /// Either someone else's object is there, or ours landed and the answer
    /// was lost (object_store retries a 500 into `AlreadyExists`): read back.
    AlreadyExists,
}

#[derive(Clone)]
pub struct Objects {
    pub inner: Arc<dyn ObjectStore>,
    retry: Duration,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({})", self.inner)
    }
}

fn outcome<T>(r: &Result<T, StorageError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(StorageError::NotFound(_)) => Outcome::NotFound,
        Err(_) => Outcome::Error,
    }
}

fn transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

impl Objects {
    pub fn new(inner: Arc<dyn ObjectStore>, retry: Duration, observer: Arc<dyn Observer>) -> Self {
        Objects { inner, retry, observer }
    }

    /// Retries transient failures of an idempotent request until `self.retry`
    /// has passed, with exponential back-off.
    async fn retrying<T, F, Fut>(&self, op: ObjectOp, path: &Path, f: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        self.retrying_checked(op, path, f, None::<fn() -> std::future::Ready<Option<StorageError>>>).await
    }

    /// [`Self::retrying`], asking `check` once, at the first transient
    /// failure, whether the failure is final after all (it answers the
    /// error to stop with).
    async fn retrying_checked<T, F, Fut, C, CFut>(&self, op: ObjectOp, path: &Path, f: F, check: Option<C>) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
        C: FnOnce() -> CFut,
        CFut: std::future::Future<Output = Option<StorageError>>,
    {
        let start = std::time::Instant::now();
        let r = self.retrying_inner(op.as_str(), path, f, check).await;
        self.observer.object_op(op, outcome(&r), start.elapsed());
        r
    }

    async fn retrying_inner<T, F, Fut, C, CFut>(&self, what: &str, path: &Path, mut f: F, mut check: Option<C>) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
        C: FnOnce() -> CFut,
        CFut: std::future::Future<Output = Option<StorageError>>,
    {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NotFound(path.to_string())),
                Err(e) if transient(&e) && start.elapsed() < self.retry => {
                    if let Some(final_error) = match check.take() {
                        Some(c) => c().await,
                        None => None,
                    } {
                        return Err(final_error);
                    }
                    tracing::debug!(%path, error = %e, "{what} failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(StorageError::Backend(format!("{what} {path}: {e}"))),
            }
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        self.retrying(ObjectOp::Get, path, || async { self.inner.get(path).await?.bytes().await }).await
    }

    /// `Ok(None)` for an absent object.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_range(&self, path: &Path, range: std::ops::Range<u64>) -> Result<Bytes, StorageError> {
        let want = range.end - range.start;
        // A range that starts past the object's end fails on every backend
        // (a local error, or HTTP 416) and would fail on every retry: the
        // object is shorter than whoever recorded the range says, which is
        // corruption, not an outage.
        let cut_short = || async {
            let size = self.inner.head(path).await.ok()?.size;
            (size < range.end).then(|| StorageError::Corrupt(format!("{path}: the object is {size} bytes, a read wanted bytes {}..{}: it was cut short", range.start, range.end)))
        };
        let b = self.retrying_checked(ObjectOp::GetRange, path, || self.inner.get_range(path, range.clone()), Some(cut_short)).await?;
        if b.len() as u64 != want {
            return Err(StorageError::Corrupt(format!("{path}: range read returned {} bytes, wanted {want}", b.len())));
        }
        Ok(b)
    }

    pub async fn head(&self, path: &Path) -> Result<ObjectMeta, StorageError> {
        self.retrying(ObjectOp::Head, path, || self.inner.head(path)).await
    }

    /// An unconditional put: only for objects with fresh unique names (or the
    /// clock object), where a repeat is harmless.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.retrying(ObjectOp::Put, path, || self.inner.put(path, PutPayload::from_bytes(bytes.clone()))).await.map(|_| ())
    }

    /// One create-if-absent attempt. Errors are returned, not retried: the
    /// caller resolves an unknown outcome by reading back.
    pub async fn create(&self, path: &Path, bytes: Bytes) -> Result<CreateOutcome, StorageError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let start = std::time::Instant::now();
        let (r, o) = match self.inner.put_opts(path, PutPayload::from_bytes(bytes), opts).await {
            Ok(_) => (Ok(CreateOutcome::Created), Outcome::Ok),
            Err(object_store::Error::AlreadyExists { .. }) => (Ok(CreateOutcome::AlreadyExists), Outcome::AlreadyExists),
            Err(e) => (Err(StorageError::Backend(format!("create {path}: {e}"))), Outcome::Error),
        };
        self.observer.object_op(ObjectOp::Create, o, start.elapsed());
        r
    }

    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        self.retrying(ObjectOp::List, prefix, || self.inner.list(Some(prefix)).try_collect::<Vec<_>>()).await
    }

    /// Lists objects under `prefix` whose path sorts after `offset`.
    pub async fn list_after(&self, prefix: &Path, offset: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        self.retrying(ObjectOp::List, prefix, || self.inner.list_with_offset(Some(prefix), offset).try_collect::<Vec<_>>()).await
    }

    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.retrying(ObjectOp::Delete, path, || self.inner.delete(path)).await {
            Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes everything under `prefix`.
    pub async fn purge(&self, prefix: &Path) -> Result<usize, StorageError> {
        let objs = self.list(prefix).await?;
        for o in &objs {
            self.delete(&o.location).await?;
        }
        Ok(objs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    /// A range past an object's end is corruption, answered at once on
    /// every kind of store rather than retried as an outage.
    #[tokio::test]
    async fn a_range_past_the_end_of_an_object_is_corrupt_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let stores: [Arc<dyn ObjectStore>; 2] = [Arc::new(InMemory::new()), Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap())];
        for store in stores {
            let objects = Objects::new(store, Duration::from_secs(30), Arc::new(crate::observe::Nothing));
            let path = Path::from("s/seg");
            objects.put(&path, Bytes::from_static(b"0123456789")).await.unwrap();
            assert_eq!(objects.get_range(&path, 2..6).await.unwrap(), Bytes::from_static(b"2345"));
            let started = std::time::Instant::now();
            for range in [20..30, 8..16] {
                match objects.get_range(&path, range.clone()).await {
                    Err(StorageError::Corrupt(m)) => assert!(m.contains("cut short") || m.contains("wanted"), "{range:?}: {m}"),
                    other => panic!("{range:?}: {other:?}"),
                }
            }
            assert!(started.elapsed() < Duration::from_secs(5), "not retried: {:?}", started.elapsed());
            assert!(matches!(objects.get_range(&Path::from("s/none"), 0..4).await, Err(StorageError::NotFound(_))));
        }
    }
}
