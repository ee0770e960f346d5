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
    /// Extra latency on every request, uniformly up to this.
    pub latency: Duration,
}

#[derive(Debug, Default)]
pub struct FaultCounts {
    pub errors: AtomicU64,
    pub landed_then_error: AtomicU64,
    pub landed_then_exists: AtomicU64,
    pub phantom_exists: AtomicU64,
    pub slow_acks: AtomicU64,
}

pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    pub counts: FaultCounts,
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
        Arc::new(FaultStore { inner, faults: Mutex::new(Faults::default()), rng: Mutex::new(StdRng::seed_from_u64(seed)), counts: FaultCounts::default() })
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
        let max = self.faults().latency;
        if !max.is_zero() {
            let us = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random_range(0..=max.as_micros() as u64);
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    async fn before(&self) -> Result<()> {
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
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before().await?;
        let f = self.faults();
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
        if self.roll(self.faults().error) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.roll(self.faults().error) {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.inner.list_with_offset(prefix, offset)
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
