#![allow(clippy::unwrap_used)]
//! Engine benchmarks on local disk with fsync (in-process). Run with
//! `cargo bench -p cairn-engine --bench engine [-- SCENARIO...]`; scenarios:
//! `append`, `append1`, `append1k`, `scan`, `stream`, `memory`, `overhead`,
//! `codecs`, `conditions`, `tags`, `retention` (all when none is named). Results go to stdout, one line each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_engine::{AppendBatch, AppendCondition, Direction, Engine, EngineConfig, NewEvent, QueryItem};
use cairn_format::block::{Codec, Event};
use cairn_format::segment::{encode_segment, EncodeOptions};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

fn json_event(i: u64, pad: usize) -> String {
    let mut s = format!(
        r#"{{"order_id":"o-{:08}","customer":"c-{:06}","amount":{}.{:02},"currency":"{}","items":{}"#,
        i,
        (i * 7919) % 1_000_000,
        (i * 31) % 10_000,
        i % 100,
        ["EUR", "USD", "GBP"][(i % 3) as usize],
        1 + i % 9
    );
    let n = pad.saturating_sub(s.len() + 12);
    if n > 0 {
        s.push_str(r#","note":""#);
        for k in 0..n {
            s.push((b'a' + ((i as usize + k * 7) % 26) as u8) as char);
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn event(stream: String, i: u64, pad: usize) -> NewEvent {
    NewEvent { stream, ..NewEvent::json("OrderPlaced", &json_event(i, pad)) }
}

fn local(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    if std::env::var_os("CAIRN_BENCH_MEMORY").is_some() {
        static MEM: std::sync::OnceLock<Arc<object_store::memory::InMemory>> = std::sync::OnceLock::new();
        return MEM.get_or_init(|| Arc::new(object_store::memory::InMemory::new())).clone();
    }
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("dir").with_fsync(true))
}

fn config() -> EngineConfig {
    EngineConfig { gc_interval: None, block_cache_bytes: 2 << 30, meta_cache_bytes: 256 << 20, ..EngineConfig::default() }
}

/// The corpus size of a scenario: `CAIRN_BENCH_EVENTS`, else `default`.
fn bench_events(default: u64) -> u64 {
    std::env::var("CAIRN_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// Appends `total` events in batches of `per_batch` from `clients` tasks.
/// The batches are made before the clock starts.
async fn append_load(engine: &Arc<Engine>, store: &str, total: u64, per_batch: u64, clients: u64, pad: usize, streams: u64) -> (f64, Vec<Duration>) {
    let batches: Vec<AppendBatch> = (0..total.div_ceil(per_batch))
        .map(|b| {
            // `streams` > 0: events spread over that many streams; 0: each
            // batch is one stream (the one-stream route).
            let events = (b * per_batch..((b + 1) * per_batch).min(total))
                .map(|i| event(if streams == 0 { format!("order-{b}") } else { format!("order-{}", i % streams) }, i, pad))
                .collect();
            AppendBatch { events, expected: vec![], condition: None }
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (engine, queue, store) = (engine.clone(), queue.clone(), store.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some(batch) = queue.lock().unwrap().pop() else { return lat };
                let t = Instant::now();
                engine.append(&store, batch).await.expect("append");
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    (total as f64 / start.elapsed().as_secs_f64(), lat)
}

async fn bench_append(name: &str, total: u64, per_batch: u64, clients: u64, pad: usize, streams: u64) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let engine = Engine::new(local(dir.path()), config());
    engine.create_store("b").await.expect("create");
    // Warm up the writer and the file system.
    append_load(&engine, "b", per_batch * clients * 2, per_batch, clients, pad, streams).await;
    let (rate, mut lat) = append_load(&engine, "b", total, per_batch, clients, pad, streams).await;
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    println!(
        "{name}: {:.0} events/s ({:.1} MB/s of data), batch latency p50 {:.2} ms p99 {:.2} ms",
        rate,
        rate * pad as f64 / 1e6,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    engine.shutdown().await;
}

/// Single-event appends by one client on a store of 1,000,000 events
/// tagged with one of 10,000 customers: plain, and with conditions of
/// increasing reach, taken in turns so that all see the same machine.
async fn bench_conditions() {
    const EVENTS: u64 = 1_000_000;
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    // A small cache: the history is read from disk, not from memory.
    let engine = Engine::new(local(dir.path()), EngineConfig { block_cache_bytes: 8 << 20, ..config() });
    engine.create_store("c").await.expect("create");
    let tagged = |i: u64, c: u64| NewEvent { tags: vec![("customer".into(), format!("c{c}"))], ..event(format!("customer-{c}"), i, 100) };
    for b in 0..EVENTS / 1000 {
        let events = (b * 1000..(b + 1) * 1000).map(|i| tagged(i, i % 10_000)).collect();
        engine.append("c", AppendBatch { events, expected: vec![], condition: None }).await.expect("fill");
    }
    let item = |tag: bool, types: &[&str]| QueryItem { types: types.iter().map(|t| t.to_string()).collect(), tags: if tag { vec![("customer".into(), "c20000".into())] } else { vec![] } };
    // (name, the condition on the customer c20000, which has no events yet:
    // (by its tag, of these types, after the last event); runs)
    type Looks = Option<(bool, &'static [&'static str], bool)>;
    let variants: [(&str, Looks, usize); 4] = [
        ("plain", None, 300),
        ("tag, after the last event", Some((true, &[], true)), 300),
        ("tag, whole history (tag indexes)", Some((true, &[], false)), 100),
        ("type only, whole history (every block)", Some((false, &["NoSuchType"], false)), 5),
    ];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut i = EVENTS;
    for round in 0..300 {
        for (v, (_, cond, runs)) in variants.iter().enumerate() {
            if round >= *runs {
                continue;
            }
            let next = engine.store_info("c").await.expect("info").next_seq;
            let mut b = AppendBatch { events: vec![tagged(i, i % 10_000)], expected: vec![], condition: None };
            b.condition = cond.map(|(tag, types, recent)| AppendCondition { fail_if_events_match: vec![item(tag, types)], after: recent.then(|| next - 1) });
            i += 1;
            let t = Instant::now();
            engine.append("c", b).await.expect("append");
            lat[v].push(t.elapsed());
        }
    }
    let base = pct(&mut lat[0], 0.5).as_secs_f64();
    for ((name, _, runs), l) in variants.iter().zip(&mut lat) {
        let p50 = pct(l, 0.5).as_secs_f64();
        println!("condition {name}: one writer, {runs} appends on {EVENTS} events, p50 {:.2} ms p99 {:.2} ms ({:.2}x plain)", p50 * 1e3, pct(l, 0.99).as_secs_f64() * 1e3, p50 / base);
    }
    engine.shutdown().await;
}

/// What a store-wide read of a rare tag touches in live segments and index
/// objects, against a full scan: requests and bytes, counted under the
/// engine (`CAIRN_BENCH_EVENTS`, default 1,000,000; 0.01% tagged), each
/// read by a fresh engine with cold caches, on an in-memory store.
/// Retention on a store of `n` events in 100,000 streams (rolled up as it
/// grows): truncating half of it, what that costs and what it gives back.
async fn bench_retention() {
    let n = bench_events(1_000_000);
    let dir = tempfile::tempdir_in(bench_dir()).expect("dir");
    let cfg = EngineConfig { retired_grace: Duration::ZERO, manifest_retention: Duration::ZERO, ..config() };
    let engine = Engine::new(local(dir.path()), cfg.clone());
    engine.create_store("r").await.expect("create");
    for b in 0..n.div_ceil(1000) {
        let events = (b * 1000..((b + 1) * 1000).min(n)).map(|i| event(format!("order-{}", (i * 7919) % 100_000), i, 100)).collect();
        engine.append("r", AppendBatch { events, expected: vec![], condition: None }).await.expect("fill");
    }
    let before = engine.store_info("r").await.expect("info");
    let disk_before = walk(dir.path());
    let t = Instant::now();
    engine.set_retention("r", cairn_engine::Retention { truncate_before: Some(n / 2), max_age_ms: None }).await.expect("set");
    let set = t.elapsed();
    let after = engine.apply_policies("r").await.expect("enforce");
    let enforced = t.elapsed();
    let gc = engine.gc("r").await.expect("gc");
    let info = engine.store_info("r").await.expect("info");
    let disk_after = walk(dir.path());
    // An append right after, and a read of what is kept.
    let t2 = Instant::now();
    engine.append("r", AppendBatch::one_stream("order-1", vec![NewEvent::json("T", "{}")])).await.expect("append");
    let append = t2.elapsed();
    let (kept, _) = scan_from(&engine, "r", after.first_seq).await;
    assert_eq!(kept, n + 1 - after.first_seq);
    println!(
        "retention: {n} events, {} index objects + {} segments, {:.1} MiB on disk; truncate_before {}: set in {:.1} ms, objects dropped in {:.0} ms (first seq {}, {} index objects + {} segments left), GC deleted {} objects: {:.1} MiB on disk ({:.0}% given back); next append {:.1} ms; {kept} events read back",
        before.index_objects,
        before.segments,
        disk_before as f64 / (1 << 20) as f64,
        n / 2,
        set.as_secs_f64() * 1e3,
        enforced.as_secs_f64() * 1e3,
        after.first_seq,
        info.index_objects,
        info.segments,
        gc.objects_deleted,
        disk_after as f64 / (1 << 20) as f64,
        100.0 * (1.0 - disk_after as f64 / disk_before as f64),
        append.as_secs_f64() * 1e3
    );
}

async fn bench_tags() {
    let n = bench_events(1_000_000);
    let counting = cairn_engine::testing::CountingStore::new(Arc::new(object_store::memory::InMemory::new()));
    // A short idempotency window, so that history can be sealed.
    let config = || EngineConfig { idempotency_window: 10_000, ..config() };
    let engine = Engine::new(counting.clone(), config());
    engine.create_store("t").await.expect("create");
    let mut rare = 0u64;
    for b in 0..n.div_ceil(1000) {
        let events = (b * 1000..((b + 1) * 1000).min(n))
            .map(|i| {
                // One stream of ten events across the whole history.
                let stream = if i % (n / 10) == 3 { "needle".to_string() } else { format!("order-{}", (i * 7919) % 100_000) };
                let mut e = event(stream, i, 100);
                if (i * 2_654_435_761) % 10_000 == 17 {
                    rare += 1;
                    e.tags = vec![("flag".into(), "rare".into())];
                }
                e
            })
            .collect();
        engine.append("t", AppendBatch { events, expected: vec![], condition: None }).await.expect("fill");
    }
    engine.shutdown().await;
    let cold = || Engine::new(counting.clone(), EngineConfig { block_cache_bytes: 1 << 20, ..config() });
    measure_tags(&counting, &cold, n, rare, "segments").await;
    // The same store with its history sealed into archives.
    let sealing = Engine::new(counting.clone(), config());
    let t = Instant::now();
    sealing.set_tiering("t", cairn_engine::Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None }).await.expect("tiering");
    sealing.apply_policies("t").await.expect("seal");
    let sealed_in = t.elapsed();
    sealing.gc("t").await.expect("gc");
    sealing.shutdown().await;
    println!("tags: sealed in {:.1} s ({:.0} k events/s)", sealed_in.as_secs_f64(), n as f64 / sealed_in.as_secs_f64() / 1e3);
    measure_tags(&counting, &cold, n, rare, "archives").await;
}

/// A first-byte latency typical of S3 Standard and Azure Blob (hot).
const OBJECT_STORAGE_LATENCY: Duration = Duration::from_millis(30);

/// A full scan, the rare tag and the ten-event stream, each on a fresh engine.
async fn measure_tags(counting: &Arc<cairn_engine::testing::CountingStore>, cold: &impl Fn() -> Arc<Engine>, n: u64, rare: u64, what: &str) {
    let info = cold().store_info("t").await.expect("info");
    counting.reset();
    let full = cold();
    assert_eq!(scan_all(&full, "t").await.0, n);
    let (full_req, full_bytes) = counting.count("get", None);
    counting.reset();
    let tagged = cold();
    let opts = cairn_engine::reader::ReadOptions { limit: None, tag: Some(("flag".into(), "rare".into())) };
    // A tag read scans a bounded number of bytes a request and says where
    // it stopped: page on, as a client does.
    let (mut got, mut pos, mut pages) = (0u64, 0u64, 0u32);
    loop {
        let mut scan = tagged.read_store("t", pos, opts.clone()).await.expect("tag read");
        while let Some(c) = scan.next_chunk().await.expect("chunk") {
            got += c.len() as u64;
        }
        pages += 1;
        pos = scan.next();
        if pos >= scan.end() {
            break;
        }
    }
    assert_eq!(got, rare);
    let (tag_req, tag_bytes) = counting.count("get", None);
    let by_kind: Vec<String> = ["seg", "idx", "arc"]
        .iter()
        .map(|k| {
            let (r, b) = counting.count("get", Some(k));
            format!("{k} {r} GETs {:.2} MiB", b as f64 / (1 << 20) as f64)
        })
        .collect();
    println!("tags ({what}): the tag read by kind of object: {}", by_kind.join(", "));
    // One stream of ten events: cold, then with the engine's caches warm.
    counting.reset();
    let e = cold();
    let t = Instant::now();
    let mut scan = e.read_stream("t", "needle", None, Direction::Forward, Default::default()).await.expect("stream");
    let mut ten = 0;
    while let Some(c) = scan.next_chunk().await.expect("chunk") {
        ten += c.len();
    }
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(ten, 10);
    let (cold_req, cold_bytes) = counting.count("get", None);
    counting.reset();
    let t = Instant::now();
    let mut scan = e.read_stream("t", "needle", None, Direction::Forward, Default::default()).await.expect("stream");
    while scan.next_chunk().await.expect("chunk").is_some() {}
    let warm_ms = t.elapsed().as_secs_f64() * 1e3;
    let (warm_req, warm_bytes) = counting.count("get", None);
    println!(
        "tags ({what}): one stream of 10 events: cold {cold_req} GETs, {:.1} KiB, {cold_ms:.2} ms; warm {warm_req} GETs, {:.1} KiB, {warm_ms:.2} ms",
        cold_bytes as f64 / 1024.0,
        warm_bytes as f64 / 1024.0
    );
    // The same two reads where every request takes as long as on object
    // storage: what a read costs is then its round trips one after another.
    let slow = cairn_engine::testing::FaultStore::new(counting.clone(), 7);
    slow.set(cairn_engine::testing::Faults { fixed_latency: OBJECT_STORAGE_LATENCY, ..Default::default() });
    let e = Engine::new(slow, EngineConfig { block_cache_bytes: 1 << 20, ..config() });
    let mut times = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let mut scan = e.read_stream("t", "needle", None, Direction::Forward, Default::default()).await.expect("stream");
        while scan.next_chunk().await.expect("chunk").is_some() {}
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("tags ({what}): the same at {} ms a request: cold {:.0} ms, warm {:.0} ms", OBJECT_STORAGE_LATENCY.as_millis(), times[0], times[1]);
    println!(
        "tags ({what}): {n} events in {} archives, {} index objects and {} segments, {rare} tagged flag:rare; full scan {full_req} GETs, {:.1} MiB; tag read ({pages} pages) {tag_req} GETs, {:.2} MiB: {:.2}% of the bytes, {:.1}% of the requests",
        info.archives,
        info.index_objects,
        info.segments,
        full_bytes as f64 / (1 << 20) as f64,
        tag_bytes as f64 / (1 << 20) as f64,
        tag_bytes as f64 * 100.0 / full_bytes as f64,
        tag_req as f64 * 100.0 / full_req as f64,
    );
}

async fn scan_all(engine: &Engine, store: &str) -> (u64, u64) {
    scan_from(engine, store, 0).await
}

async fn scan_from(engine: &Engine, store: &str, from: u64) -> (u64, u64) {
    let mut scan = engine.read_store(store, from, Default::default()).await.expect("scan");
    let (mut n, mut bytes) = (0u64, 0u64);
    // The zero-copy path, as the HTTP node serves it.
    while let Some(c) = scan.next_view().await.expect("chunk") {
        for (_, e) in c.iter() {
            n += 1;
            bytes += e.data.len() as u64;
        }
    }
    (n, bytes)
}

async fn bench_scan() {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let engine = Engine::new(local(dir.path()), config());
    engine.create_store("b").await.expect("create");
    let total = 3_000_000;
    append_load(&engine, "b", total, 1000, 4, 100, 10_000).await;
    let t = Instant::now();
    let (n, _) = scan_all(&engine, "b").await;
    let warm = n as f64 / t.elapsed().as_secs_f64();
    let cold_engine = Engine::new(local(dir.path()), config());
    let t = Instant::now();
    let (n2, _) = scan_all(&cold_engine, "b").await;
    let cold = n2 as f64 / t.elapsed().as_secs_f64();
    assert_eq!((n, n2), (total, total));
    println!("scan of {total} events: warm cache {warm:.0} events/s; fresh engine (page cache warm) {cold:.0} events/s");
}

async fn bench_stream() {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let engine = Engine::new(local(dir.path()), config());
    engine.create_store("b").await.expect("create");
    let total: u64 = 10_000_000;
    let streams: u64 = 100_000;
    // 1,000 of the streams hold exactly 10 events, spread over the store.
    let small = 1000u64;
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(1000, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let events = (first..first + 1000)
                    .map(|i| {
                        let s = if i % 1000 == 7 && (i / 1000) < small * 10 { format!("small-{}", (i / 1000) % small) } else { format!("order-{}", i % (streams - small)) };
                        event(s, i, 100)
                    })
                    .collect();
                engine.append("b", AppendBatch { events, expected: vec![], condition: None }).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let load = t.elapsed();
    let info = engine.store_info("b").await.expect("info");
    let counting = cairn_engine::testing::CountingStore::new(local(dir.path()));
    let reader = Engine::new(counting.clone(), config());
    let mut lat = Vec::new();
    let mut cold_objects = Vec::new();
    for round in 0..2 {
        for k in 0..small {
            counting.reset();
            let t = Instant::now();
            let mut scan = reader.read_stream("b", &format!("small-{k}"), None, Direction::Forward, Default::default()).await.expect("read");
            let mut n = 0;
            while let Some(c) = scan.next_chunk().await.expect("chunk") {
                n += c.len();
            }
            assert_eq!(n, 10);
            if round == 0 {
                cold_objects.push(counting.objects_read(|kind| kind != "manifest" && kind != "root"));
            } else {
                lat.push(t.elapsed());
            }
        }
    }
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    cold_objects.sort();
    println!(
        "10-event stream among {streams} streams in {total} events (loaded in {:.1} s; {} index objects, {} recent segments): warm p50 {:.3} ms p99 {:.3} ms; cold first read touched median {} max {} segment/index objects",
        load.as_secs_f64(),
        info.index_objects,
        info.segments,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        cold_objects[cold_objects.len() / 2],
        cold_objects[cold_objects.len() - 1]
    );
}

/// Appends where every event starts a new stream, so every head is looked
/// up cold (`no_stream` must be proven against all history): batches of
/// 1,000 new streams, one appender, on a store that grows to `total`.
async fn bench_cold_streams() {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let engine = Engine::new(local(dir.path()), config());
    engine.create_store("b").await.expect("create");
    let total: u64 = 300_000;
    let mut rates = Vec::new();
    let mut t = Instant::now();
    for first in (0..total).step_by(1000) {
        let events = (first..first + 1000).map(|i| event(format!("new-{i}"), i, 100)).collect();
        engine.append("b", AppendBatch { events, expected: vec![], condition: None }).await.expect("append");
        if (first + 1000) % 100_000 == 0 {
            rates.push(100_000.0 / t.elapsed().as_secs_f64());
            t = Instant::now();
        }
    }
    let info = engine.store_info("b").await.expect("info");
    println!(
        "append 100 B x 1000/batch, every event a new stream, 1 appender: {} events/s per 100k events as the store grows to {total} ({} index objects, {} recent segments)",
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
        info.index_objects,
        info.segments,
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

async fn bench_memory() {
    // Write a 5 GB store, then scan it in a fresh process that measures its
    // own peak RSS.
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    {
        let mut cfg = config();
        cfg.block_cache_bytes = 64 << 20;
        let engine = Engine::new(local(dir.path()), cfg);
        engine.create_store("b").await.expect("create");
        append_load(&engine, "b", 5_000_000, 1000, 4, 1000, 10_000).await;
        engine.shutdown().await;
    }
    let stored: u64 = walk(dir.path());
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe).args(["scan-child", dir.path().to_str().unwrap_or_default()]).output().expect("child");
    println!("{} (store holds {:.2} GB on disk)", String::from_utf8_lossy(&out.stdout).trim(), stored as f64 / 1e9);
}

/// A store of small events read in seq order from a fresh process, as
/// loaded and again after its history was sealed into archives: an
/// archive is ordered by stream, so the sealed read puts a whole archive
/// in seq order, and this measures what that holds in memory.
async fn bench_memory_sealed() {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let n = bench_events(3_000_000);
    let engine = Engine::new(local(dir.path()), config());
    engine.create_store("b").await.expect("create");
    append_load(&engine, "b", n, 1000, 4, 100, 30_000).await;
    let exe = std::env::current_exe().expect("exe");
    let child = || {
        let out = std::process::Command::new(&exe).args(["scan-child", dir.path().to_str().unwrap_or_default()]).output().expect("child");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    println!("memory, 100 B events in 30,000 streams, on segments: {}", child());
    engine.set_tiering("b", cairn_engine::Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None }).await.expect("tiering");
    engine.apply_policies("b").await.expect("seal");
    let info = engine.store_info("b").await.expect("info");
    engine.shutdown().await;
    println!("memory, the same sealed into {} archives ({} index objects, {} segments left): {}", info.archives, info.index_objects, info.segments, child());
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
            .sum()
    })
}

async fn scan_child(dir: &str) {
    let cfg = EngineConfig { gc_interval: None, block_cache_bytes: 16 << 20, meta_cache_bytes: 16 << 20, ..EngineConfig::default() };
    let engine = Engine::new(local(std::path::Path::new(dir)), cfg);
    let before = peak_rss_kib();
    let t = Instant::now();
    let (n, bytes) = scan_all(&engine, "b").await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "scan of {n} events, {:.2} GB of event data: {:.2} s ({:.2} GB/s), peak RSS {:.1} MiB (at start {:.1} MiB)",
        bytes as f64 / 1e9,
        secs,
        bytes as f64 / 1e9 / secs,
        peak_rss_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
}

fn overhead() {
    let events: Vec<Event> = (0..100_000u64)
        .map(|i| Event {
            stream: format!("order-{}", i % 1000).into(),
            revision: i / 1000,
            event_type: "OrderPlaced".into(),
            timestamp: 1_700_000_000_000 + i as i64,
            id: None,
            tags: vec![],
            binary: false,
            data: Bytes::from(json_event(i, 100)),
        })
        .collect();
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e.stream.clone());
    // Revisions must be consecutive per stream: re-number in seq order.
    let mut next = std::collections::HashMap::new();
    let events: Vec<Event> = events
        .into_iter()
        .map(|mut e| {
            let r = next.entry(e.stream.clone()).or_insert(0u64);
            e.revision = *r;
            *r += 1;
            e
        })
        .collect();
    let raw: usize = events.iter().map(|e| e.data.len() + e.stream.len() + e.event_type.len()).sum();
    let data: usize = events.iter().map(|e| e.data.len()).sum();
    for (name, codec) in [("none", Codec::None), ("lz4", Codec::Lz4), ("zstd-1", Codec::Zstd)] {
        let t = Instant::now();
        let seg = encode_segment(&events, &EncodeOptions { codec, zstd_level: 1, block_target: 256 << 10 }).expect("encode");
        let n = events.len() as f64;
        println!("{name}: encode {:.0} ns/event", t.elapsed().as_nanos() as f64 / n);
        println!(
            "{name}: {:.1} B/event stored for {:.1} B of data ({:.1} B with stream and type); format overhead {:+.1} B/event; ratio {:.2}x",
            seg.bytes.len() as f64 / n,
            data as f64 / n,
            raw as f64 / n,
            (seg.bytes.len() as f64 - raw as f64) / n,
            data as f64 / seg.bytes.len() as f64
        );
    }
}

fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("CAIRN_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if args.first().map(String::as_str) == Some("scan-child") {
        rt.block_on(scan_child(&args[1]));
        return;
    }
    let all = args.is_empty();
    let on = |s: &str| all || args.iter().any(|a| a == s);
    rt.block_on(async {
        if on("overhead") || on("codecs") {
            overhead();
        }
        if on("append") {
            bench_append("append 100 B x 1000/batch (one stream each), 16 appenders", 3_000_000, 1000, 16, 100, 0).await;
            bench_append("append 100 B x 1000/batch (1000 streams each), 16 appenders", 3_000_000, 1000, 16, 100, 1000).await;
        }
        if on("coldstreams") {
            bench_cold_streams().await;
        }
        if on("append1") {
            bench_append("append 100 B x 1/batch, 64 appenders", 50_000, 1, 64, 100, 1000).await;
        }
        if on("append1k") {
            bench_append("append 1 KiB x 1000/batch (one stream each), 16 appenders", 1_000_000, 1000, 16, 1024, 0).await;
        }
        if on("scan") {
            bench_scan().await;
        }
        if on("stream") {
            bench_stream().await;
        }
        if on("memory") {
            bench_memory().await;
        }
        if on("memory-sealed") {
            bench_memory_sealed().await;
        }
        if on("conditions") {
            bench_conditions().await;
        }
        if on("tags") {
            bench_tags().await;
        }
        if on("retention") {
            bench_retention().await;
        }
    });
}
