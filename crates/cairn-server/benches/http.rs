//! HTTP benchmarks: a node in-process on 127.0.0.1 over local disk with
//! fsync, the load generator (reqwest) in the same process. Run with
//! `cargo bench -p cairn-server --bench http [-- SCENARIO...]`; scenarios:
//! `append`, `append1`, `scan`, `wake` (all when none is named).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{Engine, EngineConfig};
use cairn_server::{router, AppState, ServerConfig};
use futures::StreamExt;

async fn start(dir: &std::path::Path) -> String {
    let store = Arc::new(cairn_engine::local::LocalStore::new(dir).unwrap());
    let linger = Duration::from_micros(std::env::var("CAIRN_BENCH_LINGER_US").ok().and_then(|v| v.parse().ok()).unwrap_or(1000));
    let engine = Engine::new(store, EngineConfig { gc_interval: None, block_cache_bytes: 1 << 30, linger, ..EngineConfig::default() });
    let app = router(AppState::new(engine, ServerConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let listener = axum::serve::ListenerExt::tap_io(listener, |t| {
        let _ = t.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    reqwest::Client::new().put(format!("{base}/v1/stores/b")).send().await.unwrap();
    base
}

fn body(first: u64, n: u64) -> Vec<u8> {
    let events: Vec<String> = (first..first + n)
        .map(|i| format!(r#"{{"type":"OrderPlaced","data":{{"order_id":"o-{i:08}","customer":"c-{:06}","amount":{}.{:02},"currency":"EUR","items":{}}}}}"#, (i * 7919) % 1_000_000, (i * 31) % 10_000, i % 100, 1 + i % 9))
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn appends(base: &str, batches: u64, per_batch: u64, clients: u64) -> (f64, Vec<Duration>) {
    let bodies: Vec<(u64, Vec<u8>)> = (0..batches).map(|b| (b, body(b * per_batch, per_batch))).collect();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (queue, http, base) = (queue.clone(), http.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some((b, body)) = queue.lock().unwrap().pop() else { return lat };
                let t = Instant::now();
                let r = http.post(format!("{base}/v1/stores/b/streams/order-{}/events", b % 10_000)).header("content-type", "application/json").body(body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    ((batches * per_batch) as f64 / start.elapsed().as_secs_f64(), lat)
}

async fn bench_append(base: &str) {
    appends(base, 64, 1000, 16).await;
    let (rate, mut lat) = appends(base, 1500, 1000, 16).await;
    println!("HTTP append 100 B x 1000/batch, 16 clients: {rate:.0} events/s, request p50 {:.1} ms p99 {:.1} ms", pct(&mut lat, 0.5).as_secs_f64() * 1e3, pct(&mut lat, 0.99).as_secs_f64() * 1e3);
}

async fn bench_append1(base: &str) {
    appends(base, 2000, 1, 64).await;
    let (rate, mut lat) = appends(base, 30_000, 1, 64).await;
    println!("HTTP single-event appends, 64 clients: {rate:.0} events/s, p50 {:.2} ms p99 {:.2} ms", pct(&mut lat, 0.5).as_secs_f64() * 1e3, pct(&mut lat, 0.99).as_secs_f64() * 1e3);
}

async fn bench_scan(base: &str) {
    // 2 M events (on top of what earlier scenarios wrote).
    appends(base, 2000, 1000, 16).await;
    let http = reqwest::Client::new();
    for round in ["first", "second"] {
        let t = Instant::now();
        let r = http.get(format!("{base}/v1/stores/b/events")).send().await.unwrap();
        let mut s = r.bytes_stream();
        let (mut lines, mut bytes) = (0u64, 0u64);
        while let Some(c) = s.next().await {
            let c = c.unwrap();
            bytes += c.len() as u64;
            lines += c.iter().filter(|b| **b == b'\n').count() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("HTTP NDJSON scan ({round}): {} events in {secs:.2} s = {:.0} events/s, {:.0} MB/s", lines - 1, (lines - 1) as f64 / secs, bytes as f64 / 1e6 / secs);
    }
}

async fn bench_wake(base: &str) {
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    for i in 0..300 {
        let next: serde_json::Value = http.get(format!("{base}/v1/stores/b")).send().await.unwrap().json().await.unwrap();
        let from = next["next_seq"].as_u64().unwrap();
        let poll = {
            let (http, base) = (http.clone(), base.to_string());
            tokio::spawn(async move {
                let r = http.get(format!("{base}/v1/stores/b/events?from={from}&wait=10")).send().await.unwrap();
                r.bytes().await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = http.post(format!("{base}/v1/stores/b/streams/wake/events")).body(body(i, 1)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let acked = Instant::now();
        let answered = poll.await.unwrap();
        lat.push(answered.saturating_duration_since(acked));
    }
    println!(
        "long-poll wake-up after a commit (poll answered minus append acknowledged): p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        pct(&mut lat, 0.5).as_secs_f64() * 1e3,
        pct(&mut lat, 0.99).as_secs_f64() * 1e3,
        pct(&mut lat, 1.0).as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let all = args.is_empty();
    let on = |s: &str| all || args.iter().any(|a| a == s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Each scenario on a fresh node and directory: file creation on ext4
    // slows down as a directory fills, and scenarios should not pay for
    // each other's files.
    let fresh = || tempfile::tempdir_in(std::env::var_os("CAIRN_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)).unwrap();
    rt.block_on(async {
        for (name, f) in [("append", 0), ("append1", 1), ("wake", 2), ("scan", 3)] {
            if !on(name) {
                continue;
            }
            let dir = fresh();
            let base = start(dir.path()).await;
            match f {
                0 => bench_append(&base).await,
                1 => bench_append1(&base).await,
                2 => bench_wake(&base).await,
                _ => bench_scan(&base).await,
            }
        }
    });
}
