//! Many stateless nodes on one store: three `cairn serve` processes on the
//! same directory, Azurite container or S3 bucket, with nothing but the
//! object store between them.
//!
//! - Concurrent appends from every node, with and without expected
//!   revisions: every acknowledged event is read back exactly once at the
//!   seq it was acknowledged with, every node returns the identical order,
//!   seqs and per-stream revisions have no gaps, and a 409 comes only from a
//!   real conflict.
//! - A long-poll on one node wakes after an append on another within the
//!   poll interval plus one request, and no node touches storage while
//!   nobody waits.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use cairn_engine::testing::Backend;
use common::{all_events, http, Server};
use serde_json::{json, Value};

const NODES: usize = 3;
/// Writers per node without expectations, and batches each.
const BLIND_WRITERS: usize = 3;
const BLIND_BATCHES: usize = 25;
/// Writers per node doing read-then-append with an expected revision, on a
/// few contended streams, and successful appends each.
const CAS_WRITERS: usize = 2;
const CAS_APPENDS: usize = 12;
const CAS_STREAMS: usize = 2;
/// The default poll interval, which the test does not change.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

cairn_engine::on_shared_backends!(three_nodes_agree_on_one_order, long_polls_wake_across_nodes_and_idle_nodes_stay_quiet);

fn start_nodes(b: Backend) -> (cairn_engine::testing::TestStorage, Vec<Server>) {
    let storage = b.storage();
    let nodes = (0..NODES).map(|_| Server::spawn(&storage.args)).collect();
    (storage, nodes)
}

fn uuid(node: usize, writer: usize, n: usize) -> String {
    format!("{node:08x}-{writer:04x}-4000-8000-{n:012x}")
}

/// What one acknowledged append said.
#[derive(Debug)]
struct Ack {
    ids: Vec<String>,
    stream: String,
    first_seq: u64,
    first_revision: u64,
}

async fn blind_writer(base: String, node: usize, w: usize) -> Vec<Ack> {
    let http = http();
    let mut acks = Vec::new();
    for b in 0..BLIND_BATCHES {
        let size = 1 + (b + w) % 3;
        let ids: Vec<String> = (0..size).map(|i| uuid(node, w, b * 3 + i)).collect();
        let stream = format!("blind-{}", (node + w + b) % 4);
        let events: Vec<Value> = ids.iter().map(|id| json!({"type": "Blind", "id": id, "data": {"node": node}})).collect();
        let r = http.post(format!("{base}/v1/stores/k/streams/{stream}/events")).json(&events).send().await.unwrap();
        assert_eq!(r.status(), 200, "node {node}: {}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["last_seq"].as_u64().unwrap() - v["first_seq"].as_u64().unwrap(), size as u64 - 1);
        acks.push(Ack { ids, stream, first_seq: v["first_seq"].as_u64().unwrap(), first_revision: v["first_revision"].as_u64().unwrap() });
    }
    acks
}

/// A 409 that was answered, with what the writer had read.
#[derive(Debug)]
struct Conflict {
    stream: String,
    expected: Option<u64>,
    current: Option<u64>,
}

/// Read the head, append with it as the expected revision, retry on 409.
async fn cas_writer(base: String, node: usize, w: usize) -> (Vec<Ack>, Vec<Conflict>) {
    let http = http();
    let mut acks = Vec::new();
    let mut conflicts = Vec::new();
    let mut n = 0;
    while acks.len() < CAS_APPENDS {
        let stream = format!("cas-{}", (node + w + n) % CAS_STREAMS);
        let head: Value = http.get(format!("{base}/v1/stores/k/streams/{stream}")).send().await.unwrap().json().await.unwrap();
        let expected = head["revision"].as_u64();
        let id = uuid(100 + node, w, n);
        n += 1;
        let body = json!({"events": [{"type": "Cas", "id": id, "data": {"node": node}}], "expected": expected.map_or(json!("no_stream"), |r| json!(r))});
        let r = http.post(format!("{base}/v1/stores/k/streams/{stream}/events")).json(&body).send().await.unwrap();
        match r.status().as_u16() {
            200 => {
                let v: Value = r.json().await.unwrap();
                let rev = v["first_revision"].as_u64().unwrap();
                assert_eq!(Some(rev), expected.map_or(Some(0), |e| Some(e + 1)), "an append with an expected revision lands right after it");
                acks.push(Ack { ids: vec![id], stream, first_seq: v["first_seq"].as_u64().unwrap(), first_revision: rev });
            }
            409 => {
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "wrong_expected_revision", "{v}");
                conflicts.push(Conflict { stream, expected, current: v["error"]["current_revision"].as_u64() });
            }
            s => panic!("node {node}: {s} {}", r.text().await.unwrap()),
        }
    }
    (acks, conflicts)
}

async fn three_nodes_agree_on_one_order(b: Backend) {
    let (_storage, nodes) = start_nodes(b);
    let http = http();
    assert_eq!(http.put(nodes[0].url("/v1/stores/k")).send().await.unwrap().status(), 201);
    // Every node sees the store at once: it is created, not cached.
    for n in &nodes[1..] {
        assert_eq!(http.put(n.url("/v1/stores/k")).send().await.unwrap().status(), 200);
    }
    let t = Instant::now();
    let mut blind = Vec::new();
    let mut cas = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for w in 0..BLIND_WRITERS {
            blind.push(tokio::spawn(blind_writer(n.base.clone(), i, w)));
        }
        for w in 0..CAS_WRITERS {
            cas.push(tokio::spawn(cas_writer(n.base.clone(), i, w)));
        }
    }
    let mut acks = Vec::new();
    for t in blind {
        acks.extend(t.await.unwrap());
    }
    let mut conflicts = Vec::new();
    for t in cas {
        let (a, c) = t.await.unwrap();
        acks.extend(a);
        conflicts.extend(c);
    }
    let elapsed = t.elapsed();

    // One order, the same on every node.
    let mut reads = Vec::new();
    for n in &nodes {
        reads.push(all_events(&http, &n.base, "k").await);
    }
    for (i, r) in reads.iter().enumerate().skip(1) {
        assert_eq!(r.len(), reads[0].len(), "node {i} reads as many events as node 0");
        assert!(r == &reads[0], "node {i} reads the same events in the same order as node 0");
    }
    let events = &reads[0];

    // Gap-free seqs, each event once, gap-free revisions per stream.
    let mut by_id = HashMap::new();
    let mut revisions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64), "seqs have no gaps");
        let id = e["id"].as_str().unwrap().to_string();
        let stream = e["stream"].as_str().unwrap().to_string();
        let rev = e["revision"].as_u64().unwrap();
        let next = revisions.entry(stream.clone()).or_insert(0);
        assert_eq!(rev, *next, "revisions of {stream} have no gaps");
        *next += 1;
        assert!(by_id.insert(id, (i as u64, stream, rev)).is_none(), "an event stored twice");
    }

    // Every acknowledged event, exactly where its answer said; nothing else.
    let mut acked_ids = HashSet::new();
    for a in &acks {
        for (k, id) in a.ids.iter().enumerate() {
            let (seq, stream, rev) = by_id.get(id).unwrap_or_else(|| panic!("acknowledged event {id} is missing"));
            assert_eq!((*seq, stream, *rev), (a.first_seq + k as u64, &a.stream, a.first_revision + k as u64), "{id}");
            acked_ids.insert(id.clone());
        }
    }
    assert_eq!(acked_ids.len(), events.len(), "every stored event was acknowledged");
    assert_eq!(acks.len(), NODES * (BLIND_WRITERS * BLIND_BATCHES + CAS_WRITERS * CAS_APPENDS));

    // A 409 only on a real conflict: the stream had moved past what the
    // writer read, and someone else's event sits at the revision it wanted.
    for c in &conflicts {
        assert_ne!(c.current, c.expected, "409 although the stream was where the writer expected: {c:?}");
        let wanted = c.expected.map_or(0, |e| e + 1);
        assert!(c.current.is_some_and(|cur| cur >= wanted), "{c:?}");
        assert!(events.iter().any(|e| e["stream"] == c.stream.as_str() && e["revision"] == wanted), "{c:?}");
    }
    eprintln!(
        "{b:?}: {NODES} nodes, {} appends acknowledged ({} events) in {elapsed:?}, {} real conflicts answered 409",
        acks.len(),
        events.len(),
        conflicts.len()
    );
}

fn storage_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("cairn_object_store_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn long_polls_wake_across_nodes_and_idle_nodes_stay_quiet(b: Backend) {
    let (_storage, nodes) = start_nodes(b);
    let http = http();
    http.put(nodes[0].url("/v1/stores/k")).send().await.unwrap();
    let append = |n: &Server, i: u64| http.post(n.url("/v1/stores/k/streams/s/events")).json(&json!([{"type": "T", "data": i}])).send();
    assert_eq!(append(&nodes[1], 0).await.unwrap().status(), 200);
    let mut woke = Vec::new();
    for i in 1..=6u64 {
        let (waiter, writer) = (&nodes[(i as usize) % NODES], &nodes[(i as usize + 1) % NODES]);
        let poll = tokio::spawn(http.get(waiter.url(&format!("/v1/stores/k/events?from={i}&wait=20"))).send());
        // Let the waiter settle into waiting (and its poller into its rhythm).
        tokio::time::sleep(Duration::from_millis(150 + 70 * i)).await;
        assert!(!poll.is_finished(), "the long-poll waits for seq {i}");
        let sent = Instant::now();
        let r = append(writer, i).await.unwrap();
        let acked = Instant::now();
        // An append is two storage requests (segment, manifest): a bound on
        // what one request takes right now, on this machine.
        let one_request = acked - sent;
        assert_eq!(r.status(), 200);
        let resp = poll.await.unwrap().unwrap();
        let latency = acked.elapsed();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], i, "{text}");
        // The poll interval plus one request (and room for a loaded machine).
        let bound = POLL_INTERVAL + one_request.max(Duration::from_millis(100)) + Duration::from_millis(50);
        assert!(latency <= bound, "wake-up {latency:?} > {bound:?}");
        woke.push(latency);
    }
    woke.sort();
    eprintln!("{b:?}: cross-node long-poll wake-ups after the ack: {woke:?}");

    // Nobody waits: no node sends storage a single request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scrape = || async {
        let mut total = Vec::new();
        for n in &nodes {
            total.push(storage_requests(&http.get(n.url("/metrics")).send().await.unwrap().text().await.unwrap()));
        }
        total
    };
    let before = scrape().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(scrape().await, before, "storage requests per node while nobody waits");
}
