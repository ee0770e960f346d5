//! Fault injection: errors, latency, creates that landed but answered an
//! error or `AlreadyExists`, `AlreadyExists` for creates that did not land,
//! acknowledgements stalled past the commit deadline, two nodes and an
//! aggressive GC at once. Invariant: every acknowledged event is readable
//! exactly once at the seq it was acknowledged with; seqs and revisions
//! have no gaps; nothing is acknowledged twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_engine::testing::{FaultStore, Faults};
use cairn_engine::{AppendError, AppendOutcome, Engine, EngineConfig};

use crate::{batch, ev, read_all, small_config, test_config, with_id, Backend, Fixture};

fn faulty_config() -> EngineConfig {
    EngineConfig {
        commit_timeout: Duration::from_millis(1500),
        retry_for: Duration::from_millis(300),
        manifest_retention: Duration::ZERO,
        retired_grace: Duration::ZERO,
        // Past reupload_after + commit_timeout, or GC could take a
        // segment whose commit is still in flight.
        orphan_grace: Duration::from_secs(4),
        reupload_after: Duration::from_millis(800),
        max_recent_segments: 12,
        keep_recent: 3,
        max_indexes: 3,
        poll_interval: Duration::from_millis(20),
        ..test_config()
    }
}

fn faults() -> Faults {
    Faults {
        error: 0.05,
        create_landed_then_error: 0.1,
        create_landed_then_exists: 0.1,
        phantom_exists: 0.1,
        slow_ack: 0.01,
        slow_ack_for: Duration::from_millis(2000),
        latency: Duration::from_millis(2),
        ..Faults::default()
    }
}

/// One client: appends batches, with ids retrying each until it gets an
/// answer that says what happened; without ids never retrying an unknown
/// outcome (a retry could append twice, by the client's choice).
async fn client(engines: Vec<Arc<Engine>>, c: u64, batches: u64, ids_on: bool) -> Vec<(Vec<u128>, AppendOutcome)> {
    let mut acked = Vec::new();
    for b in 0..batches {
        let ids: Vec<u128> = (0..1 + (b % 3) as u128).map(|i| (u128::from(c) << 64) | (u128::from(b) << 8) | i).collect();
        let stream = format!("stream-{}", (c + b) % 5);
        let events = ids
            .iter()
            .map(|id| {
                let e = ev(&stream, "T", &format!("{id}"));
                if ids_on {
                    with_id(e, *id)
                } else {
                    e
                }
            })
            .collect();
        let bt = batch(events);
        for attempt in 0.. {
            let node = &engines[(attempt + c as usize) % engines.len()];
            match node.append("s", bt.clone()).await {
                Ok(o) => {
                    acked.push((ids.clone(), o));
                    break;
                }
                Err(AppendError::CommitOutcomeUnknown) if !ids_on => break,
                Err(e @ (AppendError::CommitOutcomeUnknown | AppendError::Overloaded { .. } | AppendError::Storage(_))) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    assert!(attempt < 200, "client {c} batch {b} never got through: {e:?}");
                }
                Err(other) => panic!("client {c} batch {b}: {other:?}"),
            }
        }
    }
    acked
}

async fn run(b: Backend, seed: u64) {
    let fx = Fixture::new(b);
    let fault = FaultStore::new(fx.store.clone(), seed);
    let cfg = faulty_config();
    let n1 = Engine::new(fault.clone(), cfg.clone());
    let n2 = Engine::new(fault.clone(), cfg.clone());
    n1.create_store("s").await.unwrap();
    fault.set(faults());
    let gc = {
        let n = n2.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                let _ = n.gc("s").await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..8 {
        let engines = if c % 2 == 0 { vec![n1.clone(), n2.clone()] } else { vec![n2.clone()] };
        tasks.push(tokio::spawn(client(engines, c, 25, c < 6)));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    gc.abort();
    fault.set(Faults::default());

    let fresh = Engine::new(fx.store.clone(), test_config());
    let all = read_all(&fresh, "s").await;
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..all.len() as u64).collect::<Vec<_>>(), "seqs have gaps");
    let mut revs: HashMap<&str, u64> = HashMap::new();
    for r in &all {
        let next = revs.entry(&*r.event.stream).or_insert(0);
        assert_eq!(r.event.revision, *next, "revision gap in {}", r.event.stream);
        *next += 1;
    }
    // Every event is stored at most once (payloads are unique).
    let mut seen = HashSet::new();
    for r in &all {
        assert!(seen.insert(r.event.data.clone()), "an event is stored twice, at seq {}", r.seq);
    }
    let mut acked_seqs = HashSet::new();
    for (ids, o) in &acked {
        assert_eq!(o.last_seq - o.first_seq + 1, ids.len() as u64);
        for (i, id) in ids.iter().enumerate() {
            let seq = o.first_seq + i as u64;
            assert!(acked_seqs.insert(seq), "seq {seq} acknowledged twice");
            let r = &all[seq as usize];
            assert_eq!(r.event.data.as_ref(), id.to_string().as_bytes(), "acknowledged event not at its seq {seq}");
        }
    }
    // Clients with ids retried until answered: all their events were
    // acknowledged.
    let with_ids = all.iter().filter(|r| r.event.id.is_some()).count();
    assert_eq!(with_ids, acked.iter().filter(|(ids, _)| (ids[0] >> 64) < 6).map(|(ids, _)| ids.len()).sum::<usize>());
    let c = &fault.counts;
    let injected: u64 = [&c.errors, &c.landed_then_error, &c.landed_then_exists, &c.phantom_exists]
        .iter()
        .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    eprintln!("seed {seed}: {} events, {} acked batches, {injected} faults, {:?}", all.len(), acked.len(), c);
    assert!(injected > 20, "faults were injected: {injected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_memory_seed_1() {
    run(Backend::Memory, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_memory_seed_2() {
    run(Backend::Memory, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_memory_seed_3() {
    run(Backend::Memory, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_local_disk() {
    run(Backend::Local, 4).await;
}

/// Found by the three-node campaign (crates/cairn-cli/tests/chaos.rs):
/// node A's manifest create N lands but its answer stalls; meanwhile B
/// commits N+1.. on top of it and GC collects below a floor past N+1. A's
/// answer arrives, the boundary check finds the new floor and confirms N
/// (B's manifests reference A's segment): acknowledged, rightly, and A now
/// knows the floor. A's next batch is prepared on its view N, so it
/// creates N+1 — a collected name, which the create accepts. The check
/// used to look only for boundaries newer than the one known and found
/// none: a second N+1 was acknowledged, its events never in the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_below_a_known_gc_floor_is_not_acknowledged() {
    let fx = Fixture::new(Backend::Memory);
    let cfg = EngineConfig { manifest_retention: Duration::ZERO, commit_timeout: Duration::from_secs(10), reupload_after: Duration::from_secs(10), ..test_config() };
    let slow = FaultStore::new(fx.store.clone(), 7);
    let a = Engine::new(slow.clone(), cfg.clone());
    let b = Engine::new(fx.store.clone(), cfg.clone());
    a.create_store("s").await.unwrap();
    a.append("s", batch(vec![ev("a", "T", "0")])).await.unwrap();
    // Every write of A lands at once and answers 600 ms later.
    slow.set(Faults { slow_ack: 1.0, slow_ack_for: Duration::from_millis(600), ..Faults::default() });
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.append("s", batch(vec![ev("a", "T", "1")])).await }
    });
    // A's segment and manifest are both stored by ~10 ms; its answer waits.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..4 {
        b.append("s", batch(vec![ev("b", "T", &i.to_string())])).await.unwrap();
    }
    let report = b.gc("s").await.unwrap();
    slow.set(Faults::default());
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.first_seq, 1, "A's first batch committed at seq 1");
    assert!(report.floor > 3, "GC collected past A's next version: {report:?}");
    let second = a.append("s", batch(vec![ev("a", "T", "2")])).await.unwrap();
    let all = read_all(&Engine::new(fx.store.clone(), test_config()), "s").await;
    let data: Vec<&[u8]> = all.iter().map(|r| r.event.data.as_ref()).collect();
    assert_eq!(data, [&b"0"[..], b"1", b"0", b"1", b"2", b"3", b"2"], "every acknowledged event, in order");
    assert_eq!(second.first_seq, 6, "A's second batch at the seq it was acknowledged with");
}

/// Found by a 45 s run of the three-node campaign: a writer whose view
/// names segments that other nodes rolled up and GC then took (after
/// `retired_grace`) failed every append with `storage_unavailable`, for as
/// long as nothing moved its view. It now starts over from the newest
/// manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_view_was_collected_starts_over() {
    let fx = Fixture::new(Backend::Memory);
    let cfg = EngineConfig { manifest_retention: Duration::ZERO, retired_grace: Duration::ZERO, ..small_config() };
    let a = Engine::new(fx.store.clone(), cfg.clone());
    let b = Engine::new(fx.store.clone(), cfg.clone());
    b.create_store("s").await.unwrap();
    for i in 0..3 {
        b.append("s", batch(vec![ev(&format!("early-{i}"), "T", "0")])).await.unwrap();
    }
    // A opens the store: its view names those three segments, none read.
    assert_eq!(a.store_info("s").await.unwrap().next_seq, 3);
    for i in 0..30 {
        b.append("s", batch(vec![ev(&format!("late-{i}"), "T", "1")])).await.unwrap();
    }
    let report = b.gc("s").await.unwrap();
    assert!(report.objects_deleted > 0, "the early segments were collected: {report:?}");
    let o = a.append("s", batch(vec![ev("new", "T", "2")])).await.unwrap();
    assert_eq!(o.first_seq, 33);
    assert_eq!(read_all(&b, "s").await.len(), 34);
}

/// Found by the three-node campaign in CI (seed 1358219448840796168): a
/// node opening a store LISTed its manifest versions from the GC floor,
/// and before it read the newest of them other nodes committed twice more
/// and GC collected every version it had listed. The open then found no
/// manifest and answered `store_not_found` for a live store. It now looks
/// again from the newer boundary's floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_that_races_gc_finds_the_newer_versions() {
    let fx = Fixture::new(Backend::Memory);
    let cfg = EngineConfig { manifest_retention: Duration::ZERO, ..test_config() };
    let held = FaultStore::new(fx.store.clone(), 3);
    let a = Engine::new(held.clone(), cfg.clone());
    let b = Engine::new(fx.store.clone(), cfg);
    b.create_store("s").await.unwrap();
    for i in 0..3 {
        b.append("s", batch(vec![ev("b", "T", &i.to_string())])).await.unwrap();
    }
    let listed_up_to = b.store_info("s").await.unwrap().version;
    let (listed, go) = held.hold_next_list("/manifest");
    let opening = tokio::spawn({
        let a = a.clone();
        async move { a.append("s", batch(vec![ev("a", "T", "a")])).await }
    });
    listed.notified().await;
    for i in 3..6 {
        b.append("s", batch(vec![ev("b", "T", &i.to_string())])).await.unwrap();
    }
    let report = b.gc("s").await.unwrap();
    assert!(report.floor > listed_up_to, "GC collected every version the open had listed: {report:?}, listed up to {listed_up_to}");
    go.notify_one();
    let o = opening.await.unwrap().expect("the open finds the store");
    assert_eq!(o.first_seq, 6);
    assert_eq!(read_all(&b, "s").await.len(), 7);
}

/// The linger is for writers that come together: a lone writer's appends
/// commit at once, and only after a commit that several requests shared
/// does the writer wait for company.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_does_not_wait_out_the_linger() {
    let fx = Fixture::new(Backend::Memory);
    let slow = FaultStore::new(fx.store.clone(), 11);
    let linger = Duration::from_millis(600);
    let e = Engine::new(slow.clone(), EngineConfig { linger, ..test_config() });
    e.create_store("s").await.unwrap();
    let started = std::time::Instant::now();
    for i in 0..5 {
        e.append("s", batch(vec![ev("a", "T", &i.to_string())])).await.unwrap();
    }
    assert!(started.elapsed() < linger, "5 lone appends took {:?}; each waited out the linger", started.elapsed());
    // Every request now takes 100 ms: while the first of 20 commits, the
    // other 19 queue and share the next commit.
    slow.set(Faults { fixed_latency: Duration::from_millis(100), ..Faults::default() });
    let before = e.store_info("s").await.unwrap().version;
    let appends = (0..20).map(|i| {
        let e = e.clone();
        tokio::spawn(async move { e.append("s", batch(vec![ev(&format!("c{i}"), "T", "1")])).await })
    });
    for a in appends.collect::<Vec<_>>() {
        a.await.unwrap().unwrap();
    }
    slow.set(Faults::default());
    let shared = e.store_info("s").await.unwrap().version - before;
    assert!(shared < 20, "20 concurrent appends took {shared} commits");
    let started = std::time::Instant::now();
    e.append("s", batch(vec![ev("a", "T", "after")])).await.unwrap();
    assert!(started.elapsed() >= linger - Duration::from_millis(50), "after a shared commit the writer lingers: {:?}", started.elapsed());
}
