//! A fault-injecting `ObjectStore` wrapper for tests and simulation: errors,
//! latency, creates that land but answer an error or `AlreadyExists`,
//! `AlreadyExists` for creates that did not land, and acknowledgements that
//! arrive after a long stall. Seeded, so a failing run can be replayed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Notify;

/// Probabilities (0..1) of each fault, per request.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A request fails before it does anything.
    pub error: f64,
    /// A create-if-absent lands, then answers a 5xx-like error.
    pub create_landed_then_error: f64,
    /// A create-if-absent lands, then answers `AlreadyExists` (what
    /// object_store's retry of a 500 looks like).
    pub create_landed_then_exists: f64,
    /// A create-if-absent does not land and answers `AlreadyExists` (S3's
    /// 409 ConditionalRequestConflict is mapped so).
    pub phantom_exists: f64,
    /// A write lands, then its answer is held back this long.
    pub slow_ack: f64,
    pub slow_ack_for: Duration,
    /// Extra latency on every request, uniformly up to this ...
    pub latency: Duration,
    /// ... on top of exactly this much on every request (LISTs included):
    /// what a cloud object store's first byte costs.
    pub fixed_latency: Duration,
    /// A latency spike: this request waits `spike_for` more.
    pub spike: f64,
    pub spike_for: Duration,
    /// Create-if-absent is ignored and overwrites: a backend without
    /// conditional writes, which a node must refuse.
    pub ignore_create: bool,
}

#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Every request that reached the wrapper.
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub landed_then_error: AtomicU64,
    pub landed_then_exists: AtomicU64,
    pub phantom_exists: AtomicU64,
    pub slow_acks: AtomicU64,
    pub spikes: AtomicU64,
}

pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    hold: Mutex<Option<ListHold>>,
    pub counts: FaultCounts,
}

/// The next listing whose prefix contains `part` is taken, then held until
/// `go`.
struct ListHold {
    part: String,
    listed: Arc<Notify>,
    go: Arc<Notify>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic { store: "fault", source: format!("injected fault: {what}").into() }
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> Arc<Self> {
        Arc::new(FaultStore {
            inner,
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hold: Mutex::new(None),
            counts: FaultCounts::default(),
        })
    }

    /// Holds the next listing whose prefix contains `part` between taking
    /// it and handing it over: `listed` is notified once it is taken, and
    /// it is handed over when `go` is notified. For races between a LIST
    /// and what other nodes do before its caller reads what it found.
    pub fn hold_next_list(&self, part: &str) -> (Arc<Notify>, Arc<Notify>) {
        let (listed, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = Some(ListHold { part: part.into(), listed: listed.clone(), go: go.clone() });
        (listed, go)
    }

    /// `list`, held if a hold is set for its prefix.
    fn maybe_held(&self, prefix: Option<&Path>, list: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        let mut hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        let Some(h) = hold.take_if(|h| prefix.is_some_and(|p| p.as_ref().contains(h.part.as_str()))) else { return list };
        futures::stream::once(async move {
            let taken: Vec<Result<ObjectMeta>> = list.collect().await;
            h.listed.notify_one();
            h.go.notified().await;
            futures::stream::iter(taken)
        })
        .flatten()
        .boxed()
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap_or_else(|p| p.into_inner()).random_bool(p.min(1.0))
    }

    async fn delay(&self) {
        let f = self.faults();
        let mut wait = f.fixed_latency;
        if !f.latency.is_zero() {
            wait += Duration::from_micros(self.rng.lock().unwrap_or_else(|p| p.into_inner()).random_range(0..=f.latency.as_micros() as u64));
        }
        if self.roll(f.spike) {
            self.counts.spikes.fetch_add(1, Ordering::Relaxed);
            wait += f.spike_for;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A listing that starts after the injected delay.
    fn delayed_list(&self, list: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        let wait = self.faults().fixed_latency;
        if wait.is_zero() {
            return list;
        }
        futures::stream::once(tokio::time::sleep(wait)).filter_map(|_| async { None }).chain(list).boxed()
    }

    async fn before(&self) -> Result<()> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        self.delay().await;
        if self.roll(self.faults().error) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return Err(injected("error"));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, mut opts: PutOptions) -> Result<PutResult> {
        self.before().await?;
        let f = self.faults();
        if f.ignore_create && matches!(opts.mode, PutMode::Create) {
            opts.mode = PutMode::Overwrite;
        }
        let create = matches!(opts.mode, PutMode::Create);
        if create && self.roll(f.phantom_exists) {
            self.counts.phantom_exists.fetch_add(1, Ordering::Relaxed);
            return Err(object_store::Error::AlreadyExists { path: location.to_string(), source: "injected phantom".into() });
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        if create && self.roll(f.create_landed_then_error) {
            self.counts.landed_then_error.fetch_add(1, Ordering::Relaxed);
            return Err(injected("landed, then 500"));
        }
        if create && self.roll(f.create_landed_then_exists) {
            self.counts.landed_then_exists.fetch_add(1, Ordering::Relaxed);
            return Err(object_store::Error::AlreadyExists { path: location.to_string(), source: "injected retry of a landed put".into() });
        }
        if self.roll(f.slow_ack) {
            self.counts.slow_acks.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(f.slow_ack_for).await;
        }
        Ok(r)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.before().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before().await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        if self.roll(self.faults().error) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.delayed_list(self.maybe_held(prefix, self.inner.list(prefix)))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        if self.roll(self.faults().error) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.delayed_list(self.maybe_held(prefix, self.inner.list_with_offset(prefix, offset)))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before().await?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// The backends every conformance suite runs on. Memory and local disk are
/// always there; Azure and S3 are real servers (Azurite, SeaweedFS) that
/// `scripts/backends.py` starts and announces in `CAIRN_TEST_AZURE`,
/// `CAIRN_TEST_S3` and `CAIRN_TEST_S3_ENDPOINT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Local,
    Azure,
    S3,
}

/// A fresh, empty place on one backend (a temp directory, or a unique prefix
/// in the shared container or bucket), and how a `cairn serve` reaches it.
pub struct TestStorage {
    pub store: Arc<dyn ObjectStore>,
    pub url: String,
    pub options: crate::storage::StorageOptions,
    /// The `cairn serve` flags that name the same place.
    pub args: Vec<String>,
    dir: Option<std::path::PathBuf>,
}

impl Drop for TestStorage {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Backend {
    fn env(self) -> Option<&'static str> {
        match self {
            Backend::Memory | Backend::Local => None,
            Backend::Azure => Some("CAIRN_TEST_AZURE"),
            Backend::S3 => Some("CAIRN_TEST_S3"),
        }
    }

    /// Whether the backend's server is there. Outside `scripts/test` a
    /// missing server skips the test, loudly; under it
    /// (`CAIRN_TEST_REQUIRE_BACKENDS=1`) it fails the test.
    pub fn available(self) -> bool {
        let Some(var) = self.env() else { return true };
        if std::env::var_os(var).is_some() {
            return true;
        }
        if std::env::var_os("CAIRN_TEST_REQUIRE_BACKENDS").is_some() {
            panic!("{var} is not set: run the tests through scripts/test (scripts/backends.py starts the servers)");
        }
        eprintln!("SKIPPED on {self:?}: {var} is not set (scripts/test starts Azurite and SeaweedFS)");
        false
    }

    /// A fresh place on this backend. Panics if the backend is not
    /// [`available`](Self::available).
    pub fn storage(self) -> TestStorage {
        let unique = ulid::Ulid::generate().to_string().to_ascii_lowercase();
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
        let (url, options, args, dir) = match self {
            Backend::Memory => ("memory://".to_string(), Default::default(), vec![], None),
            Backend::Local => {
                let dir = std::env::temp_dir().join(format!("cairn-test-{unique}"));
                (dir.display().to_string(), Default::default(), vec![], Some(dir))
            }
            Backend::Azure => {
                let url = format!("{}/t-{unique}", var("CAIRN_TEST_AZURE").trim_end_matches('/'));
                let options = crate::storage::StorageOptions { azure_emulator: true, ..Default::default() };
                (url, options, vec!["--azure-emulator".to_string()], None)
            }
            Backend::S3 => {
                let url = format!("{}/t-{unique}", var("CAIRN_TEST_S3").trim_end_matches('/'));
                let endpoint = var("CAIRN_TEST_S3_ENDPOINT");
                let options = crate::storage::StorageOptions { endpoint: Some(endpoint.clone()), allow_http: true, ..Default::default() };
                (url, options, vec!["--storage-endpoint".to_string(), endpoint, "--storage-allow-http".to_string()], None)
            }
        };
        let store = crate::storage::open(&url, &options).unwrap_or_else(|e| panic!("{self:?}: {e}"));
        let mut args = args;
        args.splice(0..0, ["--storage".to_string(), url.clone()]);
        TestStorage { store, url, options, args, dir }
    }
}

type Counts = std::collections::BTreeMap<(&'static str, &'static str), (u64, u64)>;

/// Counts requests and bytes by operation and by the kind of object (the
/// folder under a store's incarnation: `manifest`, `seg`, `idx`, `doc`,
/// `gc`; `root` for root.json), to show what a workload costs.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    /// (operation, kind) -> (requests, bytes)
    counts: Mutex<Counts>,
    /// Every object read, with its kind.
    read: Mutex<std::collections::HashSet<(&'static str, Path)>>,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

fn kind(path: &Path) -> &'static str {
    let mut parts = path.parts();
    let (_, second, third) = (parts.next(), parts.next(), parts.next());
    match (second.as_ref().map(|p| p.as_ref()), third.as_ref().map(|p| p.as_ref())) {
        (Some("root.json"), None) => "root",
        (_, Some(dir)) => ["manifest", "seg", "idx", "arc", "doc", "gc"].into_iter().find(|k| *k == dir).unwrap_or("other"),
        _ => "other",
    }
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(CountingStore { inner, counts: Mutex::new(Default::default()), read: Mutex::new(Default::default()) })
    }

    fn add(&self, op: &'static str, path: &Path, bytes: u64) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry((op, kind(path))).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// Requests and bytes of `op` ("put", "get", "list", "delete") on
    /// objects of `kind` (None: all kinds).
    pub fn count(&self, op: &str, kind: Option<&str>) -> (u64, u64) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().filter(|((o, k), _)| *o == op && kind.is_none_or(|want| want == *k)).fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
    }

    /// How many distinct objects were read whose kind `keep` accepts.
    pub fn objects_read(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.read.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(k, _)| keep(k)).count()
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.read.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.add("put", location, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.add("put", location, 0);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let r = self.inner.get_opts(location, options).await;
        let bytes = r.as_ref().map_or(0, |r| r.range.end - r.range.start);
        self.add("get", location, bytes);
        self.read.lock().unwrap_or_else(|p| p.into_inner()).insert((kind(location), location.clone()));
        r
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.add("list", prefix.unwrap_or(&Path::default()), 0);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.add("list", prefix.unwrap_or(&Path::default()), 0);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.add("list", prefix.unwrap_or(&Path::default()), 0);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Turns each named `async fn(Backend)` into one test per backend: modules
/// `memory`, `local`, `azure` and `s3` beside the functions. A backend whose
/// server is missing skips (see [`Backend::available`]).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $crate::__on_backends!([memory Memory] [local Local] [azure Azure] [s3 S3]; [$($name)*]);
    };
}

/// As [`on_every_backend!`], on the backends several processes can share:
/// `local`, `azure` and `s3`.
#[macro_export]
macro_rules! on_shared_backends {
    ($($name:ident),* $(,)?) => {
        $crate::__on_backends!([local Local] [azure Azure] [s3 S3]; [$($name)*]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __on_backends {
    (@mod $m:ident $b:ident [$($name:ident)*]) => {
        mod $m {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = $crate::testing::Backend::$b;
                    if b.available() {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
    ($([$m:ident $b:ident])*; $names:tt) => {
        $( $crate::__on_backends!(@mod $m $b $names); )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_store_names_kinds_of_objects() {
        for (path, want) in [
            ("sales/root.json", "root"),
            ("sales/01ABC/manifest/00000000000000000001.json", "manifest"),
            ("sales/01ABC/seg/01XYZ.seg", "seg"),
            ("sales/01ABC/idx/01XYZ.idx", "idx"),
            ("sales/01ABC/gc/boundary/00000000000000000001.json", "gc"),
            ("sales/01ABC/doc/view", "doc"),
            ("_cairn_probe_01XYZ", "other"),
        ] {
            assert_eq!(kind(&Path::from(path)), want, "{path}");
        }
    }
}
