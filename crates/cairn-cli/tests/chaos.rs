//! Fault campaigns, scripted, seeded and bounded in time, on loopback:
//!
//! - `kill_9_at_random_points`: a `cairn serve` process under append load
//!   from writers with and without expected revisions is killed with
//!   SIGKILL at a random moment, 100 times (`CAIRN_CHAOS_TRIALS`), and
//!   restarted on the same directory. After each restart every writer first
//!   retries the batch whose answer it lost, with the same ids.
//! - `three_nodes_under_storage_faults`: three nodes on one store, each
//!   through its own fault injector: 5% of storage requests fail, 2% stall
//!   for 300 ms, 2% of writes land but answer only after the commit
//!   deadline, 5% of conditional creates land and then answer an error.
//!   Clients (the Rust client, with its retries) append through all three,
//!   blind and with expected revisions on shared streams.
//!
//! One checker judges both over everything that was sent: seqs run 0..n
//! with no gap; every stream's revisions run 0..m in seq order; no id is
//! stored twice; every batch is stored whole (consecutive seqs and
//! revisions) or not at all; every acknowledged batch is at the seq and
//! revision it was acknowledged with; every batch left unknown is stored
//! once after a retry; a batch refused with 409 is not stored; and every
//! node returns the same events. Counts are printed (`--nocapture`).
//! `CAIRN_CHAOS_SEED` replays a run's faults (the seed is printed; timing
//! still varies), `CAIRN_CHAOS_SECONDS` lengthens the three-node run, and
//! `CAIRN_CHAOS_LOG=FILE` writes the engine's debug log (every commit with
//! its version, commit id and seqs) to FILE.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::{Client, ErrorKind, EventData, Expected};
use cairn_engine::testing::{Backend, FaultStore, Faults};
use cairn_engine::EngineConfig;
use common::{all_events, http, Server};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    let s = env_u64("CAIRN_CHAOS_SEED", rand::random());
    eprintln!("chaos seed {s} (CAIRN_CHAOS_SEED={s} replays it)");
    s
}

/// One batch as it was sent: the same ids go out on every retry.
#[derive(Clone, Debug)]
struct Batch {
    ids: Vec<String>,
    stream: String,
    /// What the batch expected; `None`: any.
    expected: Option<Expected>,
}

impl Batch {
    /// The batch as an append body in the object form.
    fn body(&self, writer: usize) -> Value {
        let events: Vec<Value> = self.ids.iter().map(|id| json!({"type": "T", "id": id, "data": {"w": writer}})).collect();
        let expected = match self.expected {
            None => json!("any"),
            Some(Expected::NoStream) => json!("no_stream"),
            Some(Expected::Revision(r)) => json!(r),
            Some(e) => panic!("unused expectation {e:?}"),
        };
        json!({"events": events, "expected": expected})
    }
}

/// What became of a batch, as far as its writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Acknowledged at (first seq, first revision).
    Acked(u64, u64),
    /// Refused with 409: must not be stored.
    Refused,
    /// No answer that says (a crash, a timeout, an exhausted retry): stored
    /// once or not at all, and once after a final retry.
    Unknown,
}

#[derive(Default, Debug)]
struct Tally {
    batches: usize,
    acked_batches: usize,
    acked_events: usize,
    refused: usize,
    unknown: usize,
    stored_events: usize,
    streams: usize,
}

/// Judges the store's events against every batch sent and its fate.
fn check(events: &[Value], ledger: &[(Batch, Fate)]) -> Tally {
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64), "seqs run 0..n without gaps");
        let id = e["id"].as_str().expect("every event has an id");
        assert!(at.insert(id, i).is_none(), "event {id} stored twice");
    }
    let mut next_rev: HashMap<&str, u64> = HashMap::new();
    for e in events {
        let s = e["stream"].as_str().unwrap();
        let want = next_rev.entry(s).or_insert(0);
        assert_eq!(e["revision"].as_u64(), Some(*want), "stream {s}: revisions without gaps (seq {})", e["seq"]);
        *want += 1;
    }
    let mut known = HashSet::new();
    let mut t = Tally { batches: ledger.len(), stored_events: events.len(), streams: next_rev.len(), ..Tally::default() };
    for (b, fate) in ledger {
        known.extend(b.ids.iter().map(String::as_str));
        let found: Vec<Option<usize>> = b.ids.iter().map(|id| at.get(id.as_str()).copied()).collect();
        let stored = found.iter().all(Option::is_some);
        assert!(stored || found.iter().all(Option::is_none), "batch {:?} stored in part: {found:?}", b.ids);
        if stored {
            let first = found[0].unwrap();
            for (k, f) in found.iter().enumerate() {
                assert_eq!(*f, Some(first + k), "batch {:?} stored whole, in order", b.ids);
                assert_eq!(events[first + k]["stream"].as_str(), Some(b.stream.as_str()));
            }
        }
        match fate {
            Fate::Acked(seq, rev) => {
                if !stored {
                    let holder: Vec<_> = ledger.iter().filter(|(o, _)| o.ids.iter().any(|id| at.get(id.as_str()) == Some(&(*seq as usize)))).collect();
                    eprintln!("LOST {b:?} {fate:?}; at seq {seq}: {} held by {holder:?}", events.get(*seq as usize).map_or(Value::Null, Clone::clone));
                }
                assert!(stored, "acknowledged batch {:?} (seq {seq}) lost", b.ids);
                let e = &events[found[0].unwrap()];
                assert_eq!((e["seq"].as_u64(), e["revision"].as_u64()), (Some(*seq), Some(*rev)), "batch {:?} where it was acknowledged", b.ids);
                t.acked_batches += 1;
                t.acked_events += b.ids.len();
            }
            Fate::Refused => {
                assert!(!stored, "batch {:?} refused with 409, yet stored", b.ids);
                t.refused += 1;
            }
            Fate::Unknown => t.unknown += 1,
        }
    }
    for id in at.keys() {
        assert!(known.contains(id), "event {id} was never sent");
    }
    t
}

fn batch_ids(writer: usize, n: usize, size: usize, salt: u64) -> Vec<String> {
    (0..size).map(|i| uuid::Uuid::from_u128((u128::from(salt) << 64) | ((writer as u128) << 40) | ((n as u128) << 8) | i as u128).to_string()).collect()
}

// ---------------------------------------------------------------------
// kill -9

const KILL_WRITERS: usize = 6;

/// A writer on its own stream; even ones send the exact expected revision.
struct Writer {
    w: usize,
    salt: u64,
    n: usize,
    head: Option<u64>,
    pending: Option<Batch>,
    ledger: Vec<(Batch, Fate)>,
    retried: usize,
    deduplicated: usize,
}

impl Writer {
    fn next_batch(&mut self) -> Batch {
        self.n += 1;
        let size = 1 + self.n % 4;
        let expected = self.w.is_multiple_of(2).then(|| Expected::at(self.head));
        Batch { ids: batch_ids(self.w, self.n, size, self.salt), stream: format!("w{}", self.w), expected }
    }

    /// Appends until the node stops answering; what was in flight then is
    /// left pending and retried first next time.
    async fn run(mut self, http: reqwest::Client, base: String) -> Writer {
        loop {
            let retry = self.pending.is_some();
            let b = match self.pending.take() {
                Some(b) => b,
                None => self.next_batch(),
            };
            let r = http.post(format!("{base}/v1/stores/k/streams/{}/events", b.stream)).json(&b.body(self.w)).send().await;
            let answer = match r {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    resp.json::<Value>().await.ok().map(|v| (status, v))
                }
                Err(_) => None,
            };
            match answer {
                Some((200, v)) => {
                    if retry {
                        self.retried += 1;
                        self.deduplicated += usize::from(v["deduplicated"] == true);
                    }
                    self.head = v["last_revision"].as_u64();
                    let fate = Fate::Acked(v["first_seq"].as_u64().unwrap(), v["first_revision"].as_u64().unwrap());
                    self.ledger.push((b, fate));
                }
                Some((status, v)) if status < 500 => panic!("writer {}: {status} {v}", self.w),
                // The node died under us (or answered 5xx): not acknowledged.
                _ => {
                    self.pending = Some(b);
                    return self;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points() {
    let trials = env_u64("CAIRN_CHAOS_TRIALS", 100);
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let http = http();
    let started = Instant::now();
    let mut writers: Vec<Writer> = (0..KILL_WRITERS)
        .map(|w| Writer { w, salt: seed, n: 0, head: None, pending: None, ledger: Vec::new(), retried: 0, deduplicated: 0 })
        .collect();
    let mut kill_points = Vec::new();
    for trial in 0..trials {
        let mut node = Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.path().as_os_str()]);
        if trial == 0 {
            assert_eq!(http.put(node.url("/v1/stores/k")).send().await.unwrap().status(), 201);
        }
        let tasks: Vec<_> = writers.into_iter().map(|w| tokio::spawn(w.run(http.clone(), node.base.clone()))).collect();
        // Mostly mid-load; one trial in eight right after start-up, while
        // the first batches are committing against a cold store.
        let ms = if rng.random_bool(0.125) { rng.random_range(0..5) } else { rng.random_range(5..250) };
        kill_points.push(ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        writers = Vec::new();
        for t in tasks {
            writers.push(t.await.unwrap());
        }
    }
    // The last restart: what was in flight is retried until answered.
    let node = Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.path().as_os_str()]);
    let mut ledger = Vec::new();
    let (mut retried, mut deduplicated) = (0, 0);
    for w in writers {
        let mut w = if w.pending.is_some() { retry_once(w, &http, &node.base).await } else { w };
        retried += w.retried;
        deduplicated += w.deduplicated;
        ledger.append(&mut w.ledger);
    }
    let events = all_events(&http, &node.base, "k").await;
    let t = check(&events, &ledger);
    assert_eq!(t.unknown, 0, "every batch was answered in the end");
    assert_eq!(t.stored_events, t.acked_events, "everything stored was acknowledged");
    eprintln!(
        "kill -9: {trials} trials in {:.1} s (kills {}..{} ms after load began); {} batches, {} events acknowledged, {} batches retried after a crash ({} answered deduplicated: they had landed), {} events stored; lost 0, duplicated 0",
        started.elapsed().as_secs_f64(),
        kill_points.iter().min().unwrap(),
        kill_points.iter().max().unwrap(),
        t.acked_batches,
        t.acked_events,
        retried,
        deduplicated,
        t.stored_events,
    );
}

/// Sends a writer's pending batch once more on a live node.
async fn retry_once(mut w: Writer, http: &reqwest::Client, base: &str) -> Writer {
    let b = w.pending.take().unwrap();
    let r = http.post(format!("{base}/v1/stores/k/streams/{}/events", b.stream)).json(&b.body(w.w)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the retried batch is answered");
    let v: Value = r.json().await.unwrap();
    w.retried += 1;
    w.deduplicated += usize::from(v["deduplicated"] == true);
    w.ledger.push((b, Fate::Acked(v["first_seq"].as_u64().unwrap(), v["first_revision"].as_u64().unwrap())));
    w
}

// ---------------------------------------------------------------------
// three nodes, storage faults

cairn_engine::on_shared_backends!(three_nodes_under_storage_faults);

const NODES: usize = 3;
const BLIND_PER_NODE: usize = 2;
const CAS_PER_NODE: usize = 2;
const SHARED_STREAMS: usize = 3;

fn faults() -> Faults {
    Faults {
        error: 0.05,
        spike: 0.02,
        spike_for: Duration::from_millis(300),
        slow_ack: 0.02,
        slow_ack_for: Duration::from_millis(2000),
        create_landed_then_error: 0.05,
        latency: Duration::from_millis(3),
        ..Faults::default()
    }
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        // Acknowledgements stalled past this make outcomes unknown.
        commit_timeout: Duration::from_millis(1500),
        retry_for: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
        // Roll-ups, index merges and GC all run during the campaign.
        max_recent_segments: 12,
        keep_recent: 3,
        max_indexes: 3,
        manifest_retention: Duration::ZERO,
        retired_grace: Duration::ZERO,
        // Past reupload_after + commit_timeout, or GC could take a
        // segment whose commit is still in flight.
        orphan_grace: Duration::from_secs(4),
        reupload_after: Duration::from_millis(800),
        gc_interval: Some(Duration::from_millis(700)),
        ..EngineConfig::default()
    }
}

/// Whether every kind of fault the campaign is about has been injected at
/// least once, over all nodes' stores. A slow backend (Azurite on a busy CI
/// machine) may see too few creates in the nominal time for a 5% fault to
/// come up, so the writers run on until it has.
fn every_fault_seen(injectors: &[Arc<FaultStore>]) -> bool {
    let seen = |f: fn(&cairn_engine::testing::FaultCounts) -> &std::sync::atomic::AtomicU64| injectors.iter().any(|i| f(&i.counts).load(Ordering::Relaxed) > 0);
    seen(|c| &c.errors) && seen(|c| &c.slow_acks) && seen(|c| &c.landed_then_error)
}

/// One writer through one node until `deadline`, and on (up to `cap`)
/// until `enough()` says every fault has been seen. Blind writers append to a
/// shared stream with `any`; CAS writers read the head and append with it
/// as the expected revision, so the nodes race on the same streams.
/// Returns every batch with its fate, and how many acknowledgements were
/// of a retry whose earlier attempt had landed (`deduplicated`).
async fn fault_writer(
    client: Client,
    node: usize,
    w: usize,
    cas: bool,
    salt: u64,
    (deadline, cap): (Instant, Instant),
    enough: Arc<dyn Fn() -> bool + Send + Sync>,
) -> (Vec<(Batch, Fate, Vec<EventData>)>, usize) {
    let store = client.store("k");
    let mut out = Vec::new();
    let mut dedup = 0;
    let deduplicated = &mut dedup;
    let mut n = 0;
    let writer = node * 100 + w + if cas { 50 } else { 0 };
    loop {
        let now = Instant::now();
        if now >= cap || (now >= deadline && enough()) {
            break;
        }
        n += 1;
        let stream = format!("{}-{}", if cas { "cas" } else { "blind" }, (node + w + n) % SHARED_STREAMS);
        let expected = if cas {
            match store.stream_head(&stream).await {
                Ok(h) => Expected::at(h),
                Err(e) if e.is_retry_safe() => continue,
                Err(e) => panic!("node {node}: head: {e}"),
            }
        } else {
            Expected::Any
        };
        let ids = batch_ids(writer, n, 1 + n % 3, salt);
        let events: Vec<EventData> = ids
            .iter()
            .map(|id| EventData::json("T", &json!({"node": node})).unwrap().id(uuid::Uuid::parse_str(id).unwrap()))
            .collect();
        let fate = match store.append(&stream, events.clone(), expected).await {
            Ok(a) => {
                *deduplicated += usize::from(a.deduplicated);
                Fate::Acked(a.first_seq, a.first_revision)
            }
            Err(e) if e.kind() == ErrorKind::Conflict => Fate::Refused,
            Err(e) if e.is_retry_safe() => Fate::Unknown,
            Err(e) => panic!("node {node}: append: {e}"),
        };
        out.push((Batch { ids, stream, expected: Some(expected) }, fate, events));
    }
    (out, dedup)
}

async fn three_nodes_under_storage_faults(b: Backend) {
    if let Ok(f) = std::env::var("CAIRN_CHAOS_LOG") {
        let file = std::fs::File::create(f).unwrap();
        let _ = tracing_subscriber::fmt().with_env_filter("cairn_engine=debug").with_writer(std::sync::Mutex::new(file)).with_ansi(false).try_init();
    }
    let seed = seed();
    let storage = b.storage();
    let secs = env_u64("CAIRN_CHAOS_SECONDS", 8);
    let mut bases = Vec::new();
    let mut injectors = Vec::new();
    for i in 0..NODES {
        let fault = FaultStore::new(storage.store.clone(), seed.wrapping_add(i as u64));
        let metrics = Arc::new(cairn_server::metrics::Metrics::new());
        let engine = cairn_server::AppState::engine_with_metrics(fault.clone(), engine_config(), &metrics);
        let app = cairn_server::router(cairn_server::AppState::with_metrics(engine, Default::default(), metrics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        injectors.push(fault);
    }
    let client = |i: usize| Client::builder(&bases[i]).retries(4).backoff(Duration::from_millis(20)).timeout(Duration::from_secs(10)).build().unwrap();
    assert!(client(0).store("k").create().await.unwrap());
    for f in &injectors {
        f.set(faults());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let cap = started + Duration::from_secs(4 * secs);
    let enough: Arc<dyn Fn() -> bool + Send + Sync> = {
        let injectors = injectors.clone();
        Arc::new(move || every_fault_seen(&injectors))
    };
    let mut tasks = Vec::new();
    for node in 0..NODES {
        for w in 0..BLIND_PER_NODE + CAS_PER_NODE {
            tasks.push(tokio::spawn(fault_writer(client(node), node, w, w >= BLIND_PER_NODE, seed, (deadline, cap), enough.clone())));
        }
    }
    let mut sent = Vec::new();
    let mut client_dedup = 0;
    for t in tasks {
        let (batches, d) = t.await.unwrap();
        sent.extend(batches);
        client_dedup += d;
    }
    let ran_for = started.elapsed();
    for f in &injectors {
        f.set(Faults::default());
    }
    // Late acknowledgements already rolled are still held back.
    tokio::time::sleep(faults().slow_ack_for + Duration::from_millis(500)).await;
    // Unknown outcomes are retried with the same ids and expectation, now
    // without faults: each is then stored exactly once, or refused.
    let mut ledger = Vec::new();
    let (mut unknown, mut deduplicated) = (0, 0);
    for (b, fate, events) in sent {
        let fate = if fate == Fate::Unknown {
            unknown += 1;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match client(unknown % NODES).store("k").append(&b.stream, events.clone(), b.expected.unwrap()).await {
                    Ok(a) => {
                        deduplicated += usize::from(a.deduplicated);
                        break Fate::Acked(a.first_seq, a.first_revision);
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => break Fate::Refused,
                    Err(e) if e.is_retry_safe() && attempt < 10 => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(e) => panic!("retry without faults: {e}"),
                }
            }
        } else {
            fate
        };
        ledger.push((b, fate));
    }
    let http = http();
    let events = all_events(&http, &bases[0], "k").await;
    for base in &bases[1..] {
        assert!(all_events(&http, base, "k").await == events, "every node returns the same events");
    }
    let t = check(&events, &ledger);
    assert_eq!(t.unknown, 0, "every batch was answered in the end");
    assert_eq!(t.stored_events, t.acked_events, "everything stored was acknowledged");
    let sum = |f: fn(&cairn_engine::testing::FaultCounts) -> &std::sync::atomic::AtomicU64| injectors.iter().map(|i| f(&i.counts).load(Ordering::Relaxed)).sum::<u64>();
    let by_kind: BTreeMap<&str, u64> = [
        ("requests", sum(|c| &c.requests)),
        ("errors", sum(|c| &c.errors)),
        ("spikes", sum(|c| &c.spikes)),
        ("late acks", sum(|c| &c.slow_acks)),
        ("landed then error", sum(|c| &c.landed_then_error)),
    ]
    .into_iter()
    .collect();
    assert!(by_kind["errors"] > 0 && by_kind["late acks"] > 0 && by_kind["landed then error"] > 0, "faults were injected: {by_kind:?}");
    assert!(t.acked_batches > 50, "the workload ran: {t:?}");
    eprintln!(
        "storage faults on {b:?}: {NODES} nodes, {:.1} s; storage {by_kind:?}; {} batches sent, {} acknowledged ({} events), {} refused with 409; {client_dedup} acknowledged on a retry by the client after a lost answer (deduplicated: the first attempt had landed); {} left unknown and retried after the faults ({deduplicated} of them had landed); {} events in {} streams, identical on every node; lost 0, duplicated 0",
        ran_for.as_secs_f64(),
        t.batches,
        t.acked_batches,
        t.acked_events,
        t.refused,
        unknown,
        t.stored_events,
        t.streams,
    );
}
