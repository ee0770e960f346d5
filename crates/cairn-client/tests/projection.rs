//! The projection runner against a real node: batching, live flushes,
//! and crashes at random points.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_client::projection::{DocView, Options, Projection, Runner, View};
use cairn_client::{ErrorKind, EventData, Expected, RecordedEvent, Store};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::node::Node;

/// Per stream: how many events and the sum of their values; and over all,
/// how many events were applied and the sum of their seqs, so an event
/// applied twice or skipped shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Totals {
    streams: BTreeMap<String, (u64, u64)>,
    applied: u64,
    seq_sum: u64,
}

enum Write {
    Stream { stream: String, count: u64, sum: u64 },
    Applied { count: u64, seq_sum: u64 },
}

impl View for Totals {
    type Write = Write;
    fn apply(&mut self, w: Write) {
        match w {
            Write::Stream { stream, count, sum } => {
                let t = self.streams.entry(stream).or_default();
                t.0 += count;
                t.1 += sum;
            }
            Write::Applied { count, seq_sum } => {
                self.applied += count;
                self.seq_sum += seq_sum;
            }
        }
    }
}

/// Aggregates each batch: one write per stream.
struct Fold;

impl Projection for Fold {
    type Write = Write;
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<Write>) {
        let mut per = BTreeMap::<&str, (u64, u64)>::new();
        for e in events {
            let v: u64 = e.json::<serde_json::Value>().ok().and_then(|d| d["v"].as_u64()).unwrap_or(0);
            let t = per.entry(&e.stream).or_default();
            t.0 += 1;
            t.1 += v;
        }
        out.extend(per.into_iter().map(|(s, (count, sum))| Write::Stream { stream: s.to_string(), count, sum }));
        out.push(Write::Applied { count: events.len() as u64, seq_sum: events.iter().map(|e| e.seq).sum() });
    }
}

/// The same fold, from scratch, over every event of the store.
async fn fold_from_scratch(store: &Store) -> Totals {
    let mut t = Totals::default();
    let events = store.read(0).collect_all().await.unwrap();
    let mut f = Fold;
    let mut writes = Vec::new();
    f.project(&events, &mut writes);
    writes.into_iter().for_each(|w| t.apply(w));
    t
}

async fn append_random(store: &Store, n: usize) {
    let batch: Vec<_> = {
        let mut rng = rand::rng();
        (0..n).map(|_| EventData::json("V", &json!({"v": rng.random_range(0..1000u64)})).unwrap().stream(format!("s-{}", rng.random_range(0..20)))).collect()
    };
    store.append_many(batch, []).await.unwrap();
}

#[tokio::test]
async fn a_runner_killed_at_random_points_never_applies_an_event_twice_or_skips_one() {
    let node = Node::memory().await;
    let store = node.client().store("crash");
    store.create().await.unwrap();
    for _ in 0..10 {
        append_random(&store, 300).await;
    }
    // A writer keeps appending while runners are killed, so some die while
    // catching up and some while following live.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = rand::rng().random_range(1..20);
                append_random(&store, n).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let trials = 80;
    let mut killed_with_progress = 0;
    for _ in 0..trials {
        // A kill point: after a random number of commits (0 to 4), then
        // a random moment within the next one (0-3 ms).
        let (batch, commits, delay) = {
            let mut rng = rand::rng();
            (rng.random_range(1..200), rng.random_range(0..5u64), Duration::from_micros(rng.random_range(0..3_000)))
        };
        let opts = Options { batch_size: batch, flush_interval: Duration::from_millis(5), ..Options::default() };
        let mut runner = Runner::new(store.clone(), Fold, DocView::<Totals>::new(store.clone(), "totals")).options(opts);
        let mut progress = runner.progress();
        let task = tokio::spawn(async move { runner.run().await });
        let _ = tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|p| p.commits >= commits)).await;
        tokio::time::sleep(delay).await;
        // kill: the task stops at whatever await it is in, a doc write
        // half-sent or landed but unanswered included.
        task.abort();
        let res = task.await;
        assert!(res.as_ref().is_err_and(|e| e.is_cancelled()), "the runner was still running: {res:?}");
        if progress.borrow().commits > 0 {
            killed_with_progress += 1;
        }
        // What is in the doc is always consistent with its checkpoint.
        let (cp, view) = DocView::<Totals>::read(&store, "totals").await.unwrap();
        let n = cp.map_or(0, |c| c + 1);
        assert_eq!(view.applied, n, "every event up to the checkpoint applied once");
        assert_eq!(view.seq_sum, n * n.saturating_sub(1) / 2);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let mut runner = Runner::new(store.clone(), Fold, DocView::<Totals>::new(store.clone(), "totals"));
    let p = runner.catch_up().await.unwrap();
    let next = store.info().await.unwrap().next_seq;
    assert_eq!(p.checkpoint, Some(next - 1));
    let (_, view) = DocView::<Totals>::read(&store, "totals").await.unwrap();
    assert_eq!(view, fold_from_scratch(&store).await);
    assert!(killed_with_progress > trials / 2, "most kills came after commits: {killed_with_progress} of {trials}");
}

/// Counts commits and remembers their sizes.
#[derive(Default, Serialize, Deserialize)]
struct Count(u64);

impl View for Count {
    type Write = u64;
    fn apply(&mut self, n: u64) {
        self.0 += n;
    }
}

struct CountAll;

impl Projection for CountAll {
    type Write = u64;
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<u64>) {
        let interesting = events.iter().filter(|e| e.event_type != "Noise").count() as u64;
        if interesting > 0 {
            out.push(interesting);
        }
    }
}

#[tokio::test]
async fn the_runner_batches_while_catching_up_and_flushes_live_events_at_once() {
    let node = Node::memory().await;
    let store = node.client().store("b");
    store.create().await.unwrap();
    append_random(&store, 1050).await;
    let opts = Options { batch_size: 100, flush_interval: Duration::from_secs(60), ..Options::default() };
    let mut runner = Runner::new(store.clone(), CountAll, DocView::<Count>::new(store.clone(), "count")).options(opts.clone());
    let p = runner.catch_up().await.unwrap();
    assert_eq!((p.commits, p.events, p.checkpoint, p.caught_up), (11, 1050, Some(1049), true), "10 full batches and the rest");

    // Live: each arrival is flushed at once.
    let mut progress = runner.progress();
    let task = tokio::spawn(async move { runner.run().await });
    progress.wait_for(|p| p.caught_up).await.unwrap();
    for i in 0..5u64 {
        store.append("live", vec![EventData::json("V", &i).unwrap()], Expected::Any).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), progress.wait_for(|p| p.checkpoint == Some(1050 + i))).await;
        assert!(got.is_ok(), "live event {i} flushed without waiting for a batch");
    }
    assert_eq!(progress.borrow().commits, 5, "one commit per live event");
    task.abort();
    let (cp, Count(n)) = DocView::<Count>::read(&store, "count").await.unwrap();
    assert_eq!((cp, n), (Some(1054), 1055));

    // A linger gathers live events that arrive close together.
    let lingering = Options { live_linger: Duration::from_millis(400), ..opts.clone() };
    let mut runner = Runner::new(store.clone(), CountAll, DocView::<Count>::new(store.clone(), "count")).options(lingering);
    let mut progress = runner.progress();
    let task = tokio::spawn(async move { runner.run().await });
    progress.wait_for(|p| p.caught_up).await.unwrap();
    for i in 0..3u64 {
        store.append("live", vec![EventData::json("V", &i).unwrap()], Expected::Any).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), progress.wait_for(|p| p.checkpoint == Some(1057))).await.expect("flushed after the linger").unwrap();
    assert_eq!(progress.borrow().commits, 1, "three events, one commit");
    task.abort();

    // Batches with nothing to write need not move the checkpoint.
    store.append("noise", (0..250).map(|i| EventData::json("Noise", &i).unwrap()).collect(), Expected::Any).await.unwrap();
    let quiet = Options { commit_empty: false, ..opts };
    let mut runner = Runner::new(store.clone(), CountAll, DocView::<Count>::new(store.clone(), "count")).options(quiet);
    let p = runner.catch_up().await.unwrap();
    assert_eq!((p.commits, p.events, p.position, p.checkpoint), (0, 250, 1308, Some(1057)));
}

#[tokio::test]
async fn two_runners_on_one_view_do_not_corrupt_it() {
    let node = Node::memory().await;
    let store = node.client().store("two");
    store.create().await.unwrap();
    append_random(&store, 10).await;
    let mut a = Runner::new(store.clone(), Fold, DocView::<Totals>::new(store.clone(), "v"));
    let mut b = Runner::new(store.clone(), Fold, DocView::<Totals>::new(store.clone(), "v"));
    // Both load the (absent) view; a commits first; b's commit must fail.
    let mut sink_b = DocView::<Totals>::new(store.clone(), "v");
    cairn_client::projection::Sink::checkpoint(&mut sink_b).await.unwrap();
    a.catch_up().await.unwrap();
    let e = cairn_client::projection::Sink::commit(&mut sink_b, vec![Write::Applied { count: 99, seq_sum: 0 }], 99).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // A runner that starts from the doc carries on where a left off.
    append_random(&store, 5).await;
    let p = b.catch_up().await.unwrap();
    assert_eq!((p.events, p.checkpoint), (5, Some(14)));
    let (_, view) = DocView::<Totals>::read(&store, "v").await.unwrap();
    assert_eq!(view, fold_from_scratch(&store).await);
}
