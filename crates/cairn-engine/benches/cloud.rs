#![allow(clippy::unwrap_used)]
//! Writing and reading through a slow object store: where throughput must
//! come from batching and pipelining, not from small PUTs.
//!
//! `cargo bench -p cairn-engine --bench cloud [-- latency|seaweedfs|azurite]`
//!
//! - `latency`: an in-memory store behind 30 ms per request (S3 Standard's
//!   first byte), and a baseline in the same run that commits every request
//!   on its own (no group commit).
//! - `seaweedfs`, `azurite`: real servers on loopback, no injected latency;
//!   run through `scripts/backends.py -- cargo bench ...`, which starts them.
//!
//! 1 KiB events from 1, 16 and 256 writers, each appending one request at a
//! time (1 event, or 64) to its own stream: throughput, ack latency
//! p50/p99, PUTs per commit; then a cold engine reads the store back: GETs
//! and bytes fetched per MB of events.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::testing::{CountingStore, FaultStore, Faults};
use cairn_engine::{AppendBatch, Engine, EngineConfig, NewEvent};
use object_store::ObjectStore;

const LATENCY: Duration = Duration::from_millis(30);
const RUN: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);

fn config() -> EngineConfig {
    EngineConfig { gc_interval: None, ..EngineConfig::default() }
}

fn payload(i: u64) -> String {
    // 1 KiB of JSON that compresses like real data, not like zeros.
    let mut s = format!(r#"{{"order":"o-{i:010}","customer":"c-{:06}","lines":["#, (i * 7919) % 1_000_000);
    let mut k = 0;
    while s.len() < 1000 {
        s.push_str(&format!(r#"{{"sku":"s-{:05}","qty":{}}},"#, (i * 31 + k * 17) % 100_000, 1 + (i + k) % 9));
        k += 1;
    }
    s.pop();
    s.push_str("]}");
    while s.len() < 1024 {
        s.insert(s.len() - 1, ' ');
    }
    s
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default()
}

struct Result {
    events_per_s: f64,
    mb_per_s: f64,
    p50: Duration,
    p99: Duration,
    commits: u64,
    puts_per_commit: f64,
    events_per_commit: f64,
}

/// `writers` tasks append `per_request` 1 KiB events at a time to their
/// own streams for WARMUP + RUN; what completes within RUN is measured.
async fn write_load(engine: &Arc<Engine>, counting: &CountingStore, store: &str, writers: u64, per_request: u64) -> Result {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (engine, measuring, stop, events, store) = (engine.clone(), measuring.clone(), stop.clone(), events.clone(), store.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w << 32;
            while !stop.load(Ordering::Relaxed) {
                let batch = AppendBatch {
                    events: (0..per_request).map(|k| NewEvent { stream: format!("writer-{w}"), ..NewEvent::json("OrderPlaced", &payload(i + k)) }).collect(),
                    expected: vec![],
                    condition: None,
                };
                i += per_request;
                let t = Instant::now();
                engine.append(&store, batch).await.expect("append");
                // What completes within the window counts.
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed());
                    events.fetch_add(per_request, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(WARMUP).await;
    let v0 = engine.store_info(store).await.unwrap().version;
    counting.reset();
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(RUN).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed();
    let (seg, _) = counting.count("put", Some("seg"));
    let (man, _) = counting.count("put", Some("manifest"));
    let commits = engine.store_info(store).await.unwrap().version - v0;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let n = events.load(Ordering::Relaxed) as f64;
    Result {
        events_per_s: n / elapsed.as_secs_f64(),
        mb_per_s: n * 1024.0 / 1e6 / elapsed.as_secs_f64(),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        commits,
        puts_per_commit: (seg + man) as f64 / man.max(1) as f64,
        events_per_commit: n / commits.max(1) as f64,
    }
}

/// A fresh engine reads the whole store: GETs and bytes fetched per MB of
/// event data, and how fast.
async fn read_back(base: Arc<dyn ObjectStore>, store: &str) -> String {
    let counting = CountingStore::new(base);
    let engine = Engine::new(counting.clone(), config());
    let t = Instant::now();
    let mut scan = engine.read_store(store, 0, Default::default()).await.unwrap();
    let (mut n, mut data) = (0u64, 0u64);
    while let Some(c) = scan.next_view().await.unwrap() {
        for (_, e) in c.iter() {
            n += 1;
            data += e.data.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let (gets, fetched) = counting.count("get", None);
    let mb = data as f64 / 1e6;
    format!(
        "read back {n} events ({mb:.0} MB) cold: {:.0} MB/s, {:.2} GETs per MB, {:.3} MB fetched per MB ({gets} GETs)",
        mb / secs,
        gets as f64 / mb,
        fetched as f64 / 1e6 / mb
    )
}

async fn scenario(label: &str, make: &dyn Fn() -> Arc<dyn ObjectStore>, cfg: EngineConfig, shapes: &[(u64, u64)]) {
    let base = make();
    let counting = CountingStore::new(base.clone());
    let engine = Engine::new(counting.clone(), cfg);
    engine.create_store("b").await.unwrap();
    for &(writers, per_request) in shapes {
        let r = write_load(&engine, &counting, "b", writers, per_request).await;
        println!(
            "{label}: {writers:>3} writers x {per_request:>2} events/request: {:>7.0} events/s {:>6.1} MB/s, ack p50 {:>6.1} ms p99 {:>6.1} ms, {} commits ({:.0} events, {:.2} PUTs each)",
            r.events_per_s,
            r.mb_per_s,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.commits,
            r.events_per_commit,
            r.puts_per_commit
        );
    }
    engine.shutdown().await;
    println!("{label}: {}", read_back(base, "b").await);
}

const SHAPES: &[(u64, u64)] = &[(1, 1), (16, 1), (256, 1), (1, 64), (16, 64), (256, 64)];

fn slow_memory() -> Arc<dyn ObjectStore> {
    let f = FaultStore::new(Arc::new(object_store::memory::InMemory::new()), 7);
    f.set(Faults { fixed_latency: LATENCY, ..Faults::default() });
    f
}

fn real(var: &str, options: cairn_engine::storage::StorageOptions) -> Option<impl Fn() -> Arc<dyn ObjectStore>> {
    let url = std::env::var(var).ok()?;
    Some(move || {
        let unique = ulid::Ulid::generate().to_string().to_ascii_lowercase();
        cairn_engine::storage::open(&format!("{url}/bench-{unique}"), &options).unwrap()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let on = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if on("latency") {
            let label = format!("{} ms/request", LATENCY.as_millis());
            scenario(&label, &slow_memory, config(), SHAPES).await;
            // The baseline: every request committed alone (no group commit).
            let alone = EngineConfig { max_batch_bytes: 1, ..config() };
            scenario(&format!("{label}, one request per commit"), &slow_memory, alone, &[(256, 64)]).await;
        }
        if on("seaweedfs") {
            let opts = cairn_engine::storage::StorageOptions {
                endpoint: std::env::var("CAIRN_TEST_S3_ENDPOINT").ok(),
                allow_http: true,
                ..Default::default()
            };
            match real("CAIRN_TEST_S3", opts) {
                Some(make) => scenario("SeaweedFS (S3, loopback)", &make, config(), SHAPES).await,
                None => println!("seaweedfs: skipped (CAIRN_TEST_S3 unset; run through scripts/backends.py)"),
            }
        }
        if on("azurite") {
            let opts = cairn_engine::storage::StorageOptions { azure_emulator: true, ..Default::default() };
            match real("CAIRN_TEST_AZURE", opts) {
                Some(make) => scenario("Azurite (loopback)", &make, config(), SHAPES).await,
                None => println!("azurite: skipped (CAIRN_TEST_AZURE unset; run through scripts/backends.py)"),
            }
        }
    });
}
