#![allow(clippy::unwrap_used)]
//! The engine's integration tests: one binary, one module per concern. The
//! conformance checks run on every backend: memory, local disk, Azure
//! (Azurite) and S3 (SeaweedFS).

mod conditions;
mod conformance;
mod faults;
mod model;
mod processes;
mod retention;
mod tiering;

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::{AppendBatch, Engine, EngineConfig, NewEvent};
use object_store::ObjectStore;

pub use cairn_engine::testing::Backend;

/// An object store and what keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn ObjectStore>,
    _storage: cairn_engine::testing::TestStorage,
}

impl Fixture {
    pub fn new(b: Backend) -> Fixture {
        let storage = b.storage();
        Fixture { store: storage.store.clone(), _storage: storage }
    }
    pub fn engine(&self, cfg: EngineConfig) -> Arc<Engine> {
        Engine::new(self.store.clone(), cfg)
    }
}

pub fn test_config() -> EngineConfig {
    EngineConfig { gc_interval: None, commit_timeout: Duration::from_secs(20), ..EngineConfig::default() }
}

/// A config that rolls up and merges index objects after a few commits.
pub fn small_config() -> EngineConfig {
    EngineConfig { max_recent_segments: 6, keep_recent: 2, max_indexes: 3, ..test_config() }
}

pub fn ev(stream: &str, ty: &str, data: &str) -> NewEvent {
    NewEvent { stream: stream.into(), ..NewEvent::json(ty, data) }
}

pub fn with_id(mut e: NewEvent, id: u128) -> NewEvent {
    e.id = Some(uuid::Uuid::from_u128(id));
    e
}

pub fn batch(events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch { events, expected: vec![], condition: None }
}

/// Every event of the store, read from seq 0.
pub async fn read_all(engine: &Engine, store: &str) -> Vec<cairn_engine::ReadEvent> {
    let mut scan = engine.read_store(store, 0, Default::default()).await.expect("read_store");
    let mut out = Vec::new();
    while let Some(chunk) = scan.next_chunk().await.expect("next_chunk") {
        out.extend(chunk);
    }
    out
}

pub async fn read_stream(engine: &Engine, store: &str, stream: &str, from: Option<u64>, dir: cairn_engine::Direction, limit: Option<usize>) -> Vec<cairn_engine::ReadEvent> {
    let opts = cairn_engine::reader::ReadOptions { limit, tag: None };
    let mut scan = engine.read_stream(store, stream, from, dir, opts).await.expect("read_stream");
    let mut out = Vec::new();
    while let Some(chunk) = scan.next_chunk().await.expect("next_chunk") {
        out.extend(chunk);
    }
    out
}
