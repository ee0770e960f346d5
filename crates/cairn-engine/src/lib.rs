//! Cairn's storage engine: event stores on any `object_store` backend.
//!
//! - [`Engine`] opens stores by name and routes appends to one writer per
//!   store ([`writer`]): group commit into one segment, then a manifest
//!   version created if absent — the commit point (DESIGN "The commit
//!   protocol").
//! - Reads ([`reader`]) stream a whole store from a seq, or one stream from a
//!   revision, with memory bounded by block size x read-ahead.
//! - Roll-up ([`rollup`]) keeps manifests bounded; GC ([`gc`]) removes
//!   collected manifest versions and unreferenced objects after their grace.
//!
//! Guarantees: an append is acknowledged only after its manifest version was
//! created and no newer GC boundary makes that version suspect; an unknown
//! outcome is resolved by reading back, never by re-encoding; readers never
//! see an uncommitted or partial batch.
//!
//! ```
//! # tokio_test_block_on(async {
//! use cairn_engine::{Engine, EngineConfig, NewEvent, AppendBatch};
//! let engine = Engine::new(std::sync::Arc::new(object_store::memory::InMemory::new()), EngineConfig::default());
//! engine.create_store("demo").await.unwrap();
//! let out = engine.append("demo", AppendBatch::one_stream("order-1", vec![NewEvent::json("Placed", "{}")])).await.unwrap();
//! assert_eq!((out.first_seq, out.last_seq), (0, 0));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod cache;
pub mod docs;
pub mod error;
pub mod gc;
pub mod local;
pub mod objects;
pub mod observe;
pub mod reader;
pub mod rollup;
pub mod storage;
mod store;
pub mod testing;
mod tier;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
pub use cairn_format::block::Event;
use cairn_format::manifest::{Manifest, Root};
use object_store::ObjectStore;
use tokio::sync::{mpsc, oneshot};

pub use cairn_format::manifest::{Retention, Tiering};
pub use error::{AppendError, ReadError, RetentionError, StorageError, StoreError, StreamConflict};
pub use reader::{Direction, ReadEvent, StoreScan, StreamScan};
use store::{json, read_root, Shared, Store};
use writer::WriterMsg;

/// Settings of an engine. Durations of GC are measured by the store's clock.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long a writer waits for more appends before committing, when
    /// its last commit held more than one request (a lone writer does not
    /// wait).
    pub linger: Duration,
    /// A batch is committed once its events reach this many bytes.
    pub max_batch_bytes: usize,
    /// The queue of a store's writer, in requests.
    pub queue_depth: usize,
    /// Past this, an append answers `commit_outcome_unknown` or `overloaded`.
    pub commit_timeout: Duration,
    /// How long idempotent storage requests are retried.
    pub retry_for: Duration,
    /// The ids of the last this-many events are checked for idempotency.
    pub idempotency_window: u64,
    pub encode: cairn_format::segment::EncodeOptions,
    pub meta_cache_bytes: u64,
    pub block_cache_bytes: u64,
    /// Range GETs of a scan merge adjacent blocks up to this size.
    pub scan_range_bytes: u64,
    /// Range GETs in flight per scan.
    pub read_ahead: usize,
    /// A tag-filtered read examines at most this many bytes of blocks.
    pub tag_scan_budget: u64,
    /// Roll-up starts past this many recent segments ...
    pub max_recent_segments: usize,
    /// ... or this many bytes in them, and leaves the newest `keep_recent`.
    pub rollup_bytes: u64,
    pub keep_recent: usize,
    /// Index objects are merged past this many.
    pub max_indexes: usize,
    pub poll_interval: Duration,
    pub root_check_interval: Duration,
    /// Manifest versions younger than this are kept by GC.
    pub manifest_retention: Duration,
    /// Unreferenced objects never committed are deleted after this. Must
    /// exceed `reupload_after` + `commit_timeout` by a margin: a segment is
    /// committed at most that long after its upload began.
    pub orphan_grace: Duration,
    /// Objects replaced by roll-up are deleted after this.
    pub retired_grace: Duration,
    /// A segment uploaded longer ago than this is uploaded again before its
    /// commit, so GC can never have taken it.
    pub reupload_after: Duration,
    /// How often an open store is collected (`None`: only on request).
    pub gc_interval: Option<Duration>,
    /// Tiering writes archives of at most this many events ...
    pub archive_events: u64,
    /// ... or this many bytes of event data (a `$all` read decodes one
    /// archive whole: this bounds its memory).
    pub archive_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            linger: Duration::from_millis(1),
            max_batch_bytes: 8 << 20,
            queue_depth: 4096,
            commit_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(5),
            idempotency_window: 1_000_000,
            encode: Default::default(),
            meta_cache_bytes: 256 << 20,
            block_cache_bytes: 256 << 20,
            scan_range_bytes: 8 << 20,
            read_ahead: 2,
            tag_scan_budget: 64 << 20,
            max_recent_segments: 200,
            rollup_bytes: 1 << 30,
            keep_recent: 16,
            max_indexes: 32,
            poll_interval: Duration::from_millis(200),
            root_check_interval: Duration::from_secs(1),
            manifest_retention: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(24 * 3600),
            retired_grace: Duration::from_secs(3600),
            reupload_after: Duration::from_secs(600),
            gc_interval: Some(Duration::from_secs(600)),
            archive_events: 1_000_000,
            archive_bytes: 32 << 20,
        }
    }
}

/// What an append expects of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub stream: String,
    pub event_type: String,
    pub data: Bytes,
    /// `data` is raw bytes, not JSON.
    pub binary: bool,
    pub tags: Vec<(String, String)>,
    pub id: Option<uuid::Uuid>,
    /// Milliseconds since the epoch; the node's clock when absent.
    pub timestamp: Option<i64>,
}

impl NewEvent {
    /// A JSON event; its stream is set by [`AppendBatch::one_stream`].
    pub fn json(event_type: &str, data: &str) -> Self {
        NewEvent {
            stream: String::new(),
            event_type: event_type.into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            binary: false,
            tags: Vec::new(),
            id: None,
            timestamp: None,
        }
    }
}

/// An atomic batch: all of it is appended, or none.
#[derive(Clone, Debug, Default)]
pub struct AppendBatch {
    pub events: Vec<NewEvent>,
    /// Per stream; streams not named expect `Any`.
    pub expected: Vec<(String, Expectation)>,
    /// Checked with the commit, beside the expectations.
    pub condition: Option<AppendCondition>,
}

/// One item of an append condition's query: events of one of `types` (of
/// any type when empty) that carry every tag of `tags` (any tags when
/// empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryItem {
    pub types: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl QueryItem {
    pub fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| *t == *e.event_type))
            && self.tags.iter().all(|(k, v)| e.tags.iter().any(|(a, b)| a == k && b == v))
    }
}

/// A condition over the whole store (a "dynamic consistency boundary"):
/// the batch commits only if no event matching any item of
/// `fail_if_events_match` was committed after seq `after` (with no
/// `after`, at all). It is checked atomically with the commit: a commit
/// another writer slipped in first is checked too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendCondition {
    pub fail_if_events_match: Vec<QueryItem>,
    pub after: Option<u64>,
}

impl AppendCondition {
    pub fn matches(&self, e: &Event) -> bool {
        self.fail_if_events_match.iter().any(|q| q.matches(e))
    }

    /// The first seq the condition looks at.
    pub fn first_seq(&self) -> u64 {
        self.after.map_or(0, |a| a.saturating_add(1))
    }
}

impl AppendBatch {
    pub fn one_stream(stream: &str, mut events: Vec<NewEvent>) -> Self {
        for e in &mut events {
            e.stream = stream.into();
        }
        AppendBatch { events, expected: Vec::new(), condition: None }
    }
    pub fn expect(mut self, stream: &str, e: Expectation) -> Self {
        self.expected.push((stream.into(), e));
        self
    }
    pub fn condition(mut self, c: AppendCondition) -> Self {
        self.condition = Some(c);
        self
    }
}

/// Revisions a batch took in one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRange {
    pub stream: String,
    pub first_revision: u64,
    pub last_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    pub first_seq: u64,
    pub last_seq: u64,
    pub streams: Vec<StreamRange>,
    /// The batch had been appended before (same ids): nothing was added.
    pub deduplicated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateStore {
    Created,
    Existed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub name: String,
    pub incarnation: String,
    pub next_seq: u64,
    pub version: u64,
    pub idempotency_window: u64,
    pub segments: usize,
    pub index_objects: usize,
    pub archives: usize,
    pub last_ts: i64,
    /// Bytes of the segments and index objects that make up the store.
    pub bytes: u64,
    /// The lowest seq still readable (retention truncated what is before).
    pub first_seq: u64,
    pub retention: Retention,
}

/// A store's retention settings and where its events now start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionInfo {
    pub retention: Retention,
    pub first_seq: u64,
    pub next_seq: u64,
}

impl RetentionInfo {
    fn of(m: &Manifest) -> Self {
        RetentionInfo { retention: m.retention.clone(), first_seq: m.first_seq, next_seq: m.next_seq }
    }
}

/// The node's clock, for event timestamps only (GC uses the store's clock).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

pub fn valid_store_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

/// An engine over one object store. Cheap to share behind an `Arc`.
pub struct Engine {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    stores: Mutex<HashMap<String, Arc<Store>>>,
    /// Background work (GC), aborted at shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Writers, awaited at shutdown.
    writers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// An age setting is at least 1 ms and fits the clock's i64.
fn check_age(field: &str, v: Option<u64>) -> Result<(), RetentionError> {
    match v {
        Some(a) if a == 0 || a > i64::MAX as u64 => Err(RetentionError::Invalid(format!("{field}={a} must be between 1 and {}", i64::MAX))),
        _ => Ok(()),
    }
}

/// The store's writer, started if it is not running.
fn writer_of(s: &Arc<Store>, clock: &Arc<dyn Clock>, writers: &Mutex<Vec<tokio::task::JoinHandle<()>>>) -> mpsc::Sender<WriterMsg> {
    let mut w = s.writer.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = w.as_ref().filter(|tx| !tx.is_closed()) {
        return tx.clone();
    }
    let (tx, rx) = mpsc::channel(s.shared.config.queue_depth);
    let h = tokio::spawn(writer::run(s.clone(), rx, clock.clone()));
    writers.lock().unwrap_or_else(|p| p.into_inner()).push(h);
    *w = Some(tx.clone());
    tx
}

impl Engine {
    pub fn new(object_store: Arc<dyn ObjectStore>, config: EngineConfig) -> Arc<Engine> {
        Engine::with_clock(object_store, config, Arc::new(SystemClock))
    }

    pub fn with_clock(object_store: Arc<dyn ObjectStore>, config: EngineConfig, clock: Arc<dyn Clock>) -> Arc<Engine> {
        Engine::with_parts(object_store, config, clock, Arc::new(observe::Nothing))
    }

    /// An engine whose work is reported to `observer` (metrics).
    pub fn with_parts(object_store: Arc<dyn ObjectStore>, config: EngineConfig, clock: Arc<dyn Clock>, observer: Arc<dyn observe::Observer>) -> Arc<Engine> {
        let shared = Arc::new(Shared {
            objects: objects::Objects::new(object_store, config.retry_for, observer.clone()),
            caches: cache::Caches::new(config.meta_cache_bytes, config.block_cache_bytes, observer.clone()),
            config,
            observer,
        });
        Arc::new(Engine { shared, clock, stores: Mutex::new(HashMap::new()), tasks: Mutex::new(Vec::new()), writers: Arc::new(Mutex::new(Vec::new())) })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Whether object storage answers (a GET of an absent object).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.shared.objects.get_opt(&object_store::path::Path::from("_cairn_ping")).await.map(|_| ())
    }

    /// Bytes held by the caches: (metadata, blocks).
    pub fn cache_weights(&self) -> (u64, u64) {
        self.shared.caches.weights()
    }

    fn check_name(name: &str) -> Result<(), StoreError> {
        if valid_store_name(name) {
            Ok(())
        } else {
            Err(StoreError::InvalidName(name.into()))
        }
    }

    /// Creates a store with a fresh incarnation; `Existed` if it is there.
    pub async fn create_store(&self, name: &str) -> Result<CreateStore, StoreError> {
        Self::check_name(name)?;
        let objects = &self.shared.objects;
        if read_root(objects, name).await?.is_some() {
            return Ok(CreateStore::Existed);
        }
        let incarnation = ulid::Ulid::generate().to_string();
        let paths = objects::StorePaths::new(name, &incarnation);
        let genesis = Manifest::genesis(&incarnation, ulid::Ulid::generate().to_string());
        let bytes = Bytes::from(genesis.encode().map_err(StorageError::from)?);
        // A fresh incarnation's first version cannot exist: create it plainly.
        objects.put(&paths.manifest(0), bytes).await?;
        let root = Root { incarnation: incarnation.clone(), created_ms: self.clock.now_ms() };
        let outcome = objects.create(&objects::StorePaths::root(name), json(&root)).await;
        let ours = match outcome {
            Ok(objects::CreateOutcome::Created) => true,
            // Landed and answered 5xx, or someone else created it: read back.
            _ => read_root(objects, name).await?.is_some_and(|r| r.incarnation == incarnation),
        };
        if ours {
            Ok(CreateStore::Created)
        } else {
            let _ = objects.purge(&paths.prefix()).await;
            match read_root(objects, name).await? {
                Some(_) => Ok(CreateStore::Existed),
                None => Err(StoreError::Storage(StorageError::Backend(format!("could not create store {name}")))),
            }
        }
    }

    pub async fn list_stores(&self) -> Result<Vec<String>, StoreError> {
        let listed = self.shared.objects.inner.list_with_delimiter(None).await.map_err(|e| StorageError::Backend(e.to_string()))?;
        let mut names = Vec::new();
        for p in listed.common_prefixes {
            let Some(name) = p.filename() else { continue };
            if valid_store_name(name) && read_root(&self.shared.objects, name).await?.is_some() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The open store, opened (and its background work started) if needed.
    async fn open(&self, name: &str) -> Result<Arc<Store>, StoreError> {
        Self::check_name(name)?;
        let open = self.stores.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        if let Some(s) = open {
            if !s.deleted.load(std::sync::atomic::Ordering::Relaxed) {
                // Whether another node deleted the store is asked in the
                // background (once per root_check_interval), not on the
                // path of the request; the writer asks beside each create.
                s.check_root_in_background();
                return Ok(s);
            }
            self.forget(name, &s);
        }
        let s = Store::open(self.shared.clone(), name).await?;
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = stores.get(name) {
            if existing.paths.incarnation == s.paths.incarnation {
                return Ok(existing.clone());
            }
        }
        stores.insert(name.to_string(), s.clone());
        drop(stores);
        if let Some(every) = self.shared.config.gc_interval {
            let weak = Arc::downgrade(&s);
            let (clock, writers) = (self.clock.clone(), self.writers.clone());
            let h = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(s) = weak.upgrade() else { return };
                    if s.deleted.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    if let Err(e) = gc::collect(&s).await {
                        tracing::warn!(store = %s.paths.store, error = %e, "gc failed");
                    }
                    // A maximum age is applied on an idle store too.
                    let m = s.current();
                    if m.has_policies() {
                        let _ = writer_of(&s, &clock, &writers).send(WriterMsg::Control(writer::Control::Enforce { reply: None })).await;
                    }
                }
            });
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(h);
        }
        Ok(s)
    }

    fn forget(&self, name: &str, s: &Arc<Store>) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if stores.get(name).is_some_and(|x| Arc::ptr_eq(x, s)) {
            stores.remove(name);
        }
        s.deleted.store(true, std::sync::atomic::Ordering::Relaxed);
        s.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub async fn store_info(&self, name: &str) -> Result<StoreInfo, StoreError> {
        let s = self.open(name).await?;
        let m = s.refresh().await?;
        // Segments behind index objects are listed in their footers (cached).
        let mut bytes: u64 = m.segments.iter().map(|g| g.bytes).sum::<u64>() + m.heads.as_ref().map_or(0, |h| h.bytes) + m.archives.iter().map(|a| a.bytes).sum::<u64>();
        for i in &m.indexes {
            bytes += i.bytes + s.index_footer(i).await?.segments.iter().map(|g| g.bytes).sum::<u64>();
        }
        Ok(StoreInfo {
            name: name.into(),
            incarnation: m.incarnation.clone(),
            next_seq: m.next_seq,
            version: m.version,
            idempotency_window: self.shared.config.idempotency_window,
            segments: m.segments.len(),
            index_objects: m.indexes.len(),
            archives: m.archives.len(),
            last_ts: m.last_ts,
            bytes,
            first_seq: m.first_seq,
            retention: m.retention.clone(),
        })
    }

    /// Deletes a store: root.json first (so nothing can commit into it and a
    /// re-created name gets a fresh incarnation), then purges its objects in
    /// the background.
    pub async fn delete_store(&self, name: &str) -> Result<(), StoreError> {
        Self::check_name(name)?;
        let Some(root) = read_root(&self.shared.objects, name).await? else {
            return Err(StoreError::NotFound(name.into()));
        };
        self.shared.objects.delete(&objects::StorePaths::root(name)).await?;
        let open = self.stores.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        if let Some(s) = open {
            self.forget(name, &s);
        }
        let objects = self.shared.objects.clone();
        let prefix = objects::StorePaths::new(name, &root.incarnation).prefix();
        tokio::spawn(async move {
            if let Err(e) = objects.purge(&prefix).await {
                tracing::warn!(%prefix, error = %e, "purge of a deleted store failed");
            }
        });
        Ok(())
    }

    fn writer_for(&self, s: &Arc<Store>) -> mpsc::Sender<WriterMsg> {
        writer_of(s, &self.clock, &self.writers)
    }

    /// The store's retention settings and first seq.
    pub async fn retention(&self, store: &str) -> Result<RetentionInfo, RetentionError> {
        let s = self.open(store).await?;
        let m = s.refresh().await.map_err(|e| RetentionError::from(StoreError::from(e)))?;
        Ok(RetentionInfo::of(&m))
    }

    /// Sets a store's retention. `truncate_before` takes effect at once for
    /// reads (they answer [`ReadError::Truncated`] below it) and never moves
    /// back; objects are dropped, whole, in the background as they empty
    /// or pass `max_age_ms`, and deleted by GC after their grace.
    pub async fn set_retention(&self, store: &str, retention: Retention) -> Result<RetentionInfo, RetentionError> {
        check_age("max_age_ms", retention.max_age_ms)?;
        let m = self.control(store, |reply| writer::Control::SetRetention { retention, reply }).await?;
        Ok(RetentionInfo::of(&m))
    }

    /// Sends a control message to the store's writer; its answer.
    async fn control(&self, store: &str, msg: impl FnOnce(oneshot::Sender<Result<Arc<Manifest>, RetentionError>>) -> writer::Control) -> Result<Arc<Manifest>, RetentionError> {
        let s = self.open(store).await?;
        let (reply, rx) = oneshot::channel();
        self.writer_for(&s).send(WriterMsg::Control(msg(reply))).await.map_err(|_| RetentionError::ShuttingDown)?;
        rx.await.map_err(|_| RetentionError::ShuttingDown)?
    }

    /// The store's tiering settings.
    pub async fn tiering(&self, store: &str) -> Result<Tiering, RetentionError> {
        let s = self.open(store).await?;
        let m = s.refresh().await.map_err(|e| RetentionError::from(StoreError::from(e)))?;
        Ok(m.tiering.clone())
    }

    /// Sets a store's tiering: whole index objects before `seal_before`,
    /// or whose newest event is older than `seal_after_ms`, are sealed into
    /// archives in the background (never inside the idempotency window).
    /// Reads are the same before and after.
    pub async fn set_tiering(&self, store: &str, tiering: Tiering) -> Result<Tiering, RetentionError> {
        check_age("seal_after_ms", tiering.seal_after_ms)?;
        // Seqs are int64 in the API's document.
        if let Some(b) = tiering.seal_before.filter(|b| *b > i64::MAX as u64) {
            return Err(RetentionError::Invalid(format!("seal_before={b} must be at most {}", i64::MAX)));
        }
        let m = self.control(store, |reply| writer::Control::SetTiering { tiering, reply }).await?;
        Ok(m.tiering.clone())
    }

    /// Drops now what retention lets go of and seals what tiering may,
    /// step by step, and answers once nothing more is due.
    pub async fn apply_policies(&self, store: &str) -> Result<RetentionInfo, RetentionError> {
        let m = self.control(store, |reply| writer::Control::Enforce { reply: Some(reply) }).await?;
        Ok(RetentionInfo::of(&m))
    }

    /// Appends a batch atomically; see [`writer`] for what is checked.
    pub async fn append(&self, store: &str, batch: AppendBatch) -> Result<AppendOutcome, AppendError> {
        writer::validate(&batch)?;
        let s = self.open(store).await?;
        let checked_to = match &batch.condition {
            Some(c) => writer::precheck(&s, c, batch.events.iter().any(|e| e.id.is_some())).await?,
            None => 0,
        };
        let tx = self.writer_for(&s);
        let (reply, rx) = oneshot::channel();
        tx.send(WriterMsg::Append { batch, reply, checked_to }).await.map_err(|_| AppendError::ShuttingDown)?;
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// Reads the whole store from `from` (a seq).
    pub async fn read_store(&self, store: &str, from: u64, opts: reader::ReadOptions) -> Result<StoreScan, ReadError> {
        let s = self.open(store).await?;
        StoreScan::new(s, from, opts).await
    }

    /// Reads one stream from revision `from` (`None`: its start, or its end
    /// backwards).
    pub async fn read_stream(&self, store: &str, stream: &str, from: Option<u64>, direction: Direction, opts: reader::ReadOptions) -> Result<StreamScan, ReadError> {
        if !valid_stream_name(stream) {
            return Err(ReadError::Invalid(format!("invalid stream name {stream:?}")));
        }
        let s = self.open(store).await?;
        StreamScan::new(s, stream, from, direction, opts).await
    }

    /// The last revision of a stream, `None` when it has no events.
    pub async fn stream_head(&self, store: &str, stream: &str) -> Result<Option<u64>, ReadError> {
        if !valid_stream_name(stream) {
            return Err(ReadError::Invalid(format!("invalid stream name {stream:?}")));
        }
        let s = self.open(store).await?;
        let m = s.refresh().await?;
        Ok(reader::head(&s, &m, stream).await?)
    }

    /// Waits until the store holds an event at or after `seq`; false on timeout.
    pub async fn wait_for(&self, store: &str, seq: u64, timeout: Duration) -> Result<bool, ReadError> {
        let s = self.open(store).await?;
        Ok(s.wait_for(seq, timeout).await)
    }

    /// The next seq after a fresh look at the newest manifest (what
    /// `store_info` says, without adding up sizes).
    pub async fn newest_next_seq(&self, store: &str) -> Result<u64, StoreError> {
        let s = self.open(store).await?;
        Ok(s.refresh().await?.next_seq)
    }

    /// A watch of the store's next seq, for live tails.
    pub async fn next_seq(&self, store: &str) -> Result<u64, ReadError> {
        let s = self.open(store).await?;
        Ok(s.current().next_seq)
    }

    async fn open_for_docs(&self, store: &str, key: &str) -> Result<Arc<Store>, docs::DocError> {
        if !docs::valid_doc_key(key) {
            return Err(docs::DocError::InvalidKey(key.into()));
        }
        self.open(store).await.map_err(|e| match e {
            StoreError::NotFound(s) | StoreError::InvalidName(s) => docs::DocError::StoreNotFound(s),
            StoreError::Storage(e) => docs::DocError::Storage(e),
        })
    }

    /// Writes a doc under a precondition (compare-and-swap).
    pub async fn put_doc(&self, store: &str, key: &str, body: &[u8], content_type: Option<String>, cond: docs::DocCondition) -> Result<docs::DocWritten, docs::DocError> {
        let s = self.open_for_docs(store, key).await?;
        docs::put(&s, key, body, content_type, &cond).await
    }

    pub async fn get_doc(&self, store: &str, key: &str) -> Result<docs::Doc, docs::DocError> {
        let s = self.open_for_docs(store, key).await?;
        docs::get(&s, key).await
    }

    /// Deletes a doc; with `if_match`, only at that ETag.
    pub async fn delete_doc(&self, store: &str, key: &str, if_match: Option<String>) -> Result<(), docs::DocError> {
        let s = self.open_for_docs(store, key).await?;
        docs::delete(&s, key, if_match).await
    }

    /// Collects the store now.
    pub async fn gc(&self, store: &str) -> Result<gc::GcReport, StoreError> {
        let s = self.open(store).await?;
        Ok(gc::collect(&s).await?)
    }

    /// Stops taking appends, finishes the commits in flight, stops
    /// background work.
    pub async fn shutdown(&self) {
        let stores: Vec<_> = self.stores.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in &stores {
            s.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        for t in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner())) {
            t.abort();
        }
        // A writer ends once its queue is closed and drained.
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in writers {
            let _ = w.await;
        }
    }
}
