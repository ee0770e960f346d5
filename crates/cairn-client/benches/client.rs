//! The client's benchmarks: `cargo bench -p cairn-client --bench client [-- scan rebuild]`.
//!
//! - `scan`: a 10,000,000-event store read over HTTP through the client
//!   (events/s, peak client RSS), beside the raw NDJSON transfer of the
//!   same answer (bytes only, nothing parsed) measured in the same run.
//! - `rebuild`: a projection rebuilt from a 1,000,000-event store, batched
//!   (1000 events a doc write) versus one doc write per event: time and doc
//!   writes. The unbatched run is bounded (`CAIRN_BENCH_UNBATCHED_SECS`,
//!   default 30 s) and its time extrapolated from its rate, which is
//!   constant (one doc write per event); `CAIRN_BENCH_FULL=1` runs it all.
//!
//! The node is this benchmark re-executed as a child process (local disk,
//! fsync on), so the client's memory is measured alone. The stores are
//! filled through the engine directly, in the child, before it listens;
//! with `CAIRN_BENCH_DIR` set they are kept and reused.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::projection::{DocView, Options, Projection, Runner, View};
use cairn_client::{Client, RecordedEvent};
use futures::{StreamExt, TryStreamExt};

const SCAN_EVENTS: u64 = 10_000_000;
const REBUILD_EVENTS: u64 = 1_000_000;
const TYPES: [&str; 8] = ["Placed", "Paid", "Packed", "Shipped", "Delivered", "Returned", "Refunded", "Cancelled"];

/// The child: fills the stores named in `CAIRN_BENCH_FILL` (`name=count,...`)
/// and serves them.
fn node_main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = std::env::var("CAIRN_BENCH_NODE_DIR").expect("CAIRN_BENCH_NODE_DIR");
        let storage = cairn_engine::storage::open(&dir, &Default::default()).expect("storage");
        let engine = cairn_engine::Engine::new(storage, Default::default());
        for spec in std::env::var("CAIRN_BENCH_FILL").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
            let (name, count) = spec.split_once('=').expect("name=count");
            fill(&engine, name, count.parse().expect("a count")).await;
        }
        let app = cairn_server::router(cairn_server::AppState::new(engine, Default::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("port");
        println!("listening on {}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Appends ~100-byte JSON events until the store holds `count`.
async fn fill(engine: &Arc<cairn_engine::Engine>, name: &str, count: u64) {
    engine.create_store(name).await.expect("create");
    let have = engine.store_info(name).await.expect("info").next_seq;
    if have >= count {
        eprintln!("store {name}: {have} events already");
        return;
    }
    let started = Instant::now();
    let per_batch = 10_000u64;
    let batches = (count - have).div_ceil(per_batch);
    futures::stream::iter(0..batches)
        .for_each_concurrent(8, |b| async move {
            let first = have + b * per_batch;
            let n = per_batch.min(count - first);
            let events = (first..first + n)
                .map(|i| {
                    let t = TYPES[(i.wrapping_mul(2_654_435_761) % TYPES.len() as u64) as usize];
                    let data = format!(r#"{{"order":{},"amount":{},"note":"{:0>48}"}}"#, i % 100_000, i % 977, i);
                    cairn_engine::NewEvent { stream: format!("order-{}", i / 100), ..cairn_engine::NewEvent::json(t, &data) }
                })
                .collect();
            engine.append(name, cairn_engine::AppendBatch { events, expected: Vec::new(), condition: None }).await.expect("append");
        })
        .await;
    eprintln!("store {name}: filled to {count} in {:.1?}", started.elapsed());
}

struct NodeProcess {
    child: Child,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(fill: &str) -> NodeProcess {
    let (dir, keep) = match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => (std::path::PathBuf::from(d).join("client-bench"), None),
        None => {
            let t = tempfile::tempdir().expect("temp dir");
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("CAIRN_BENCH_ROLE", "node")
        .env("CAIRN_BENCH_NODE_DIR", &dir)
        .env("CAIRN_BENCH_FILL", fill)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected {line:?}")).to_string();
    NodeProcess { child, url: format!("http://{addr}"), _dir: keep }
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0);
    kb / 1024.0
}

async fn bench_scan() {
    let node = spawn_node(&format!("scan={SCAN_EVENTS}"));
    let client = Client::new(&node.url).expect("client");
    let store = client.store("scan");
    // Raw: the NDJSON answer's bytes, nothing parsed (what the node and the
    // socket can do).
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut body = http.get(format!("{}/v1/stores/scan/events", node.url)).send().await.expect("read").bytes_stream();
    let mut raw_bytes = 0u64;
    while let Some(chunk) = body.next().await {
        raw_bytes += chunk.expect("chunk").len() as u64;
    }
    let raw = started.elapsed();
    let rss_before = peak_rss_mib();
    // The client: every event parsed into a RecordedEvent, lazily.
    let started = Instant::now();
    let mut events = store.read(0);
    let (mut n, mut data) = (0u64, 0u64);
    while let Some(e) = events.try_next().await.expect("event") {
        n += 1;
        data += e.data.len() as u64;
    }
    let took = started.elapsed();
    assert_eq!(n, SCAN_EVENTS);
    let rate = n as f64 / took.as_secs_f64();
    let raw_rate = SCAN_EVENTS as f64 / raw.as_secs_f64();
    println!("scan  raw NDJSON over HTTP: {:.2} M events/s ({:.0} MB/s of NDJSON, {raw_bytes} bytes, {raw:.1?})", raw_rate / 1e6, raw_bytes as f64 / raw.as_secs_f64() / 1e6);
    println!(
        "scan  client (parsed events): {:.2} M events/s ({:.0} MB/s of NDJSON, {data} bytes of data, {took:.1?}); {:.2}x the raw rate",
        rate / 1e6,
        raw_bytes as f64 / took.as_secs_f64() / 1e6,
        rate / raw_rate
    );
    println!("scan  peak client RSS: {:.1} MiB (before the client scan: {rss_before:.1} MiB; target <= 64)", peak_rss_mib());
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct PerType(BTreeMap<String, u64>);

impl View for PerType {
    type Write = (String, u64);
    fn apply(&mut self, (t, n): (String, u64)) {
        *self.0.entry(t).or_default() += n;
    }
}

/// Counts per type; aggregated within each batch.
struct CountTypes;

impl Projection for CountTypes {
    type Write = (String, u64);
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<(String, u64)>) {
        let mut n = BTreeMap::<&str, u64>::new();
        for e in events {
            *n.entry(&e.event_type).or_default() += 1;
        }
        out.extend(n.into_iter().map(|(t, c)| (t.to_string(), c)));
    }
}

async fn bench_rebuild() {
    let node = spawn_node(&format!("rebuild={REBUILD_EVENTS}"));
    let client = Client::new(&node.url).expect("client");
    let store = client.store("rebuild");
    let run = |key: &'static str, batch: usize, budget: Option<Duration>| {
        let store = store.clone();
        async move {
            let _ = store.delete_doc(key, None).await;
            let opts = Options { batch_size: batch, flush_interval: Duration::from_secs(5), ..Options::default() };
            let mut runner = Runner::new(store.clone(), CountTypes, DocView::<PerType>::new(store.clone(), key)).options(opts);
            let progress = runner.progress();
            let started = Instant::now();
            match budget {
                None => {
                    runner.catch_up().await.expect("rebuild");
                }
                Some(b) => {
                    let _ = tokio::time::timeout(b, runner.catch_up()).await;
                }
            }
            let took = started.elapsed();
            let p = progress.borrow().clone();
            (took, p.events, p.commits)
        }
    };
    let (bt, be, bc) = run("batched", 1000, None).await;
    assert_eq!(be, REBUILD_EVENTS);
    let full = std::env::var("CAIRN_BENCH_FULL").is_ok_and(|v| v == "1");
    let budget = Duration::from_secs(std::env::var("CAIRN_BENCH_UNBATCHED_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let (ut, ue, uc) = run("unbatched", 1, (!full).then_some(budget)).await;
    let per_event = ut.as_secs_f64() / ue.max(1) as f64;
    let unbatched_total = per_event * REBUILD_EVENTS as f64;
    let unbatched_writes = if ue == REBUILD_EVENTS { uc } else { REBUILD_EVENTS };
    println!("rebuild batched (1000 a write): {REBUILD_EVENTS} events in {bt:.2?} ({:.0} events/s), {bc} doc writes", be as f64 / bt.as_secs_f64());
    let how = if ue == REBUILD_EVENTS { "measured".to_string() } else { format!("extrapolated from {ue} events in {ut:.1?}") };
    println!("rebuild one write per event: {unbatched_total:.0} s for {REBUILD_EVENTS} events ({:.0} events/s, {how}), {unbatched_writes} doc writes", 1.0 / per_event);
    println!("rebuild ratio: {:.0}x less time, {:.0}x fewer doc writes with batching", unbatched_total / bt.as_secs_f64(), unbatched_writes as f64 / bc as f64);
}

fn main() {
    if std::env::var("CAIRN_BENCH_ROLE").as_deref() == Ok("node") {
        return node_main();
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let on = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        if on("scan") {
            bench_scan().await;
        }
        if on("rebuild") {
            bench_rebuild().await;
        }
    });
}
