//! Local disk as a real backend: `LocalFileSystem` with fsync, plus the one
//! thing it lacks — conditional updates (`PutMode::Update`, If-Match) —
//! done under a file lock shared by every process on the directory: compare
//! the ETag, write a temp file, fsync it, rename it over, fsync the
//! directory.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

pub struct LocalStore {
    fs: Arc<LocalFileSystem>,
    lock: PathBuf,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.fs)
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.fs)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic { store: "LocalStore", source: Box::new(e) }
}

impl LocalStore {
    /// A store in `dir` (created if missing) with fsync on.
    pub fn new(dir: impl AsRef<std::path::Path>) -> std::io::Result<LocalStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(std::io::Error::other)?.with_fsync(true);
        // Store names never start with a dot, so this name is never an object's.
        Ok(LocalStore { fs: Arc::new(fs), lock: dir.join(".cairn-update.lock") })
    }

    fn update_blocking(fs: &LocalFileSystem, lock: &std::path::Path, location: &Path, bytes: Vec<u8>, etag: Option<String>) -> Result<String> {
        let lock_file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock).map_err(generic)?;
        lock_file.lock().map_err(generic)?;
        let target = fs.path_to_filesystem(location)?;
        let precondition = |why: &str| object_store::Error::Precondition { path: location.to_string(), source: why.to_string().into() };
        let current = match std::fs::metadata(&target) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(precondition("object does not exist")),
            Err(e) => return Err(generic(e)),
        };
        let meta_etag = etag_of(&current);
        if etag.as_deref().is_some_and(|want| want != meta_etag) {
            return Err(precondition("etag does not match"));
        }
        let dir = target.parent().ok_or_else(|| precondition("no parent directory"))?;
        let tmp = dir.join(format!(".{}.cairn-tmp", ulid::Ulid::generate()));
        let mut f = std::fs::File::create(&tmp).map_err(generic)?;
        f.write_all(&bytes).map_err(generic)?;
        f.sync_all().map_err(generic)?;
        drop(f);
        std::fs::rename(&tmp, &target).map_err(generic)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(generic)?;
        let new = std::fs::metadata(&target).map_err(generic)?;
        drop(lock_file);
        Ok(etag_of(&new))
    }
}

/// The ETag `LocalFileSystem` reports: inode, mtime (µs) and size, in hex.
fn etag_of(m: &std::fs::Metadata) -> String {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let inode = 0u64;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_micros());
    // Exactly object_store's format, so ETags from its GETs (taken from the
    // open file, consistent with the bytes read) compare equal.
    format!("\"{inode:x}-{mtime:x}-{:x}\"", m.len())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        match opts.mode {
            PutMode::Update(v) => {
                let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
                let (fs, lock, location) = (self.fs.clone(), self.lock.clone(), location.clone());
                let e_tag = tokio::task::spawn_blocking(move || LocalStore::update_blocking(&fs, &lock, &location, bytes, v.e_tag))
                    .await
                    .map_err(generic)??;
                Ok(PutResult { e_tag: Some(e_tag), version: None, extensions: Default::default() })
            }
            _ => self.fs.put_opts(location, payload, opts).await,
        }
    }
    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.fs.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.fs.get_opts(location, options).await
    }
    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.fs.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list(prefix)
    }
    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.fs.list_with_offset(prefix, offset)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.fs.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.fs.copy_opts(from, to, options).await
    }
}
