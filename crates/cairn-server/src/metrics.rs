//! Prometheus metrics (`prometheus-client`), served at `/metrics`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    events_appended: Counter,
    bytes_appended: Counter,
    deduplicated: Counter,
    batch_events: Histogram,
    waiters: Gauge,
    waiters_now: AtomicI64,
    cache_bytes: Family<CacheLabels, Gauge>,
    commits: Family<StoreLabels, Counter>,
    conflicts: Family<StoreLabels, Counter>,
    commit_events: Histogram,
    commit_seconds: Histogram,
    object_ops: Family<ObjectLabels, Counter>,
    object_seconds: Family<OpLabels, Histogram>,
    cache_lookups: Family<LookupLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)));
        registry.register("http_request_duration_seconds", "Time to the response head, by route (appends: commit latency)", latency.clone());
        let events_appended = Counter::default();
        registry.register("events_appended", "Events appended", events_appended.clone());
        let bytes_appended = Counter::default();
        registry.register("event_bytes_appended", "Bytes of event data appended", bytes_appended.clone());
        let deduplicated = Counter::default();
        registry.register("appends_deduplicated", "Appends answered from an earlier identical batch", deduplicated.clone());
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 20));
        registry.register("append_batch_events", "Events per append request", batch_events.clone());
        let waiters = Gauge::default();
        registry.register("long_poll_waiters", "Long-polls and live tails held now", waiters.clone());
        let cache_bytes = Family::<CacheLabels, Gauge>::default();
        registry.register("cache_bytes", "Bytes held by the caches", cache_bytes.clone());
        let commits = Family::<StoreLabels, Counter>::default();
        registry.register("commits", "Batches committed, by store", commits.clone());
        let conflicts = Family::<StoreLabels, Counter>::default();
        registry.register("commit_conflicts", "Manifest creates lost to another writer, by store", conflicts.clone());
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 20));
        registry.register("commit_events", "Events per committed batch (group commit)", commit_events.clone());
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register("commit_duration_seconds", "From taking a batch off the queue to acknowledging it", commit_seconds.clone());
        let object_ops = Family::<ObjectLabels, Counter>::default();
        registry.register("object_store_requests", "Object-store requests by kind and outcome", object_ops.clone());
        let object_seconds = Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.00005, 2.0, 20)));
        registry.register("object_store_request_duration_seconds", "Object-store request latency (with retries), by kind", object_seconds.clone());
        let cache_lookups = Family::<LookupLabels, Counter>::default();
        registry.register("cache_lookups", "Cache look-ups by cache and result (hit or miss)", cache_lookups.clone());
        Metrics {
            registry,
            requests,
            latency,
            events_appended,
            bytes_appended,
            deduplicated,
            batch_events,
            waiters,
            waiters_now: AtomicI64::new(0),
            cache_bytes,
            commits,
            conflicts,
            commit_events,
            commit_seconds,
            object_ops,
            object_seconds,
            cache_lookups,
        }
    }

    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests.get_or_create(&RequestLabels { route: route.into(), method: method.into(), status }).inc();
        self.latency.get_or_create(&RouteLabels { route: route.into() }).observe(took.as_secs_f64());
    }

    pub fn appended(&self, events: usize, bytes: usize, deduplicated: bool) {
        if deduplicated {
            self.deduplicated.inc();
            return;
        }
        self.events_appended.inc_by(events as u64);
        self.bytes_appended.inc_by(bytes as u64);
        self.batch_events.observe(events as f64);
    }

    /// Returns the number of waiters now.
    pub fn waiters_inc(&self) -> i64 {
        self.waiters.inc();
        self.waiters_now.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn waiters_dec(&self) {
        self.waiters.dec();
        self.waiters_now.fetch_sub(1, Ordering::AcqRel);
    }
}

impl cairn_engine::observe::Observer for Metrics {
    fn commit(&self, store: &str, events: usize, _bytes: usize, took: Duration) {
        self.commits.get_or_create(&StoreLabels { store: store.into() }).inc();
        self.commit_events.observe(events as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
    fn conflict(&self, store: &str) {
        self.conflicts.get_or_create(&StoreLabels { store: store.into() }).inc();
    }
    fn object_op(&self, op: cairn_engine::observe::ObjectOp, outcome: cairn_engine::observe::Outcome, took: Duration) {
        self.object_ops.get_or_create(&ObjectLabels { op: op.as_str(), outcome: outcome.as_str() }).inc();
        self.object_seconds.get_or_create(&OpLabels { op: op.as_str() }).observe(took.as_secs_f64());
    }
    fn cache(&self, kind: cairn_engine::observe::CacheKind, hit: bool) {
        self.cache_lookups.get_or_create(&LookupLabels { kind: kind.as_str(), result: if hit { "hit" } else { "miss" } }).inc();
    }
}

pub async fn scrape(State(s): State<AppState>) -> Response {
    let (meta, blocks) = s.engine.cache_weights();
    s.metrics.cache_bytes.get_or_create(&CacheLabels { kind: "metadata" }).set(meta as i64);
    s.metrics.cache_bytes.get_or_create(&CacheLabels { kind: "blocks" }).set(blocks as i64);
    let mut out = String::new();
    if encode(&mut out, &s.metrics.registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
