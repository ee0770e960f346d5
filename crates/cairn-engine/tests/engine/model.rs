//! The engine against a simple in-memory model: random appends with every
//! kind of expectation, idempotent retries, reads, truncations by
//! retention and sealing into archives, through two engine instances (two
//! nodes) on one store, with roll-up and index merging going on underneath.
//! (About a third of the runs seal something.)

use std::collections::HashMap;

use cairn_engine::{AppendBatch, AppendError, AppendOutcome, Direction, Expectation, NewEvent, ReadError, Retention};
use proptest::prelude::*;

use crate::{small_config, Backend, Fixture};

#[derive(Clone, Debug)]
enum Op {
    Append { node: usize, streams: Vec<u8>, expect: u8, off: u8, ids: bool },
    Retry { node: usize, which: usize },
    Read { node: usize, stream: u8, from: u8, backward: bool, limit: u8 },
    /// Truncates `by` more events (at most to the end).
    Truncate { node: usize, by: u8 },
    /// Seals what it can of the history into archives.
    Seal { node: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2usize, proptest::collection::vec(0..4u8, 1..4), 0..5u8, 0..3u8, any::<bool>())
            .prop_map(|(node, streams, expect, off, ids)| Op::Append { node, streams, expect, off, ids }),
        2 => (0..2usize, any::<usize>()).prop_map(|(node, which)| Op::Retry { node, which }),
        2 => (0..2usize, 0..4u8, 0..6u8, any::<bool>(), 0..4u8)
            .prop_map(|(node, stream, from, backward, limit)| Op::Read { node, stream, from, backward, limit }),
        1 => (0..2usize, 0..8u8).prop_map(|(node, by)| Op::Truncate { node, by }),
        2 => (0..2usize).prop_map(|node| Op::Seal { node }),
    ]
}

/// The idempotency window: history before it may be sealed.
const WINDOW: u64 = 8;

#[derive(Default)]
struct Model {
    log: Vec<(String, u64, String)>,
    heads: HashMap<String, u64>,
    /// The first seq kept (everything before was truncated).
    first: u64,
}

impl Model {
    fn head(&self, s: &str) -> Option<u64> {
        self.heads.get(s).copied()
    }
}

async fn run(ops: Vec<Op>) {
    let fx = Fixture::new(Backend::Memory);
    // Roll-up early and often, so there are index objects to seal.
    let cfg = cairn_engine::EngineConfig { idempotency_window: WINDOW, max_recent_segments: 3, keep_recent: 1, max_indexes: 2, ..small_config() };
    let nodes = [fx.engine(cfg.clone()), fx.engine(cfg)];
    nodes[0].create_store("m").await.unwrap();
    let mut model = Model::default();
    let mut sent: Vec<(AppendBatch, Result<AppendOutcome, String>)> = Vec::new();
    let mut next_id = 1u128;
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { node, streams, expect, off, ids } => {
                let target = format!("s{}", streams[0]);
                let events: Vec<NewEvent> = streams
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let mut e = NewEvent { stream: format!("s{s}"), ..NewEvent::json("T", &format!("\"{i}.{j}\"")) };
                        if ids {
                            e.id = Some(uuid::Uuid::from_u128(next_id));
                            next_id += 1;
                        }
                        e
                    })
                    .collect();
                let head = model.head(&target);
                let expectation = match expect {
                    0 => Expectation::Any,
                    1 => Expectation::NoStream,
                    2 => Expectation::StreamExists,
                    _ => Expectation::Exact((head.unwrap_or(0) + u64::from(off)).saturating_sub(1)),
                };
                let batch = AppendBatch { events, expected: vec![(target.clone(), expectation)], condition: None };
                let ok = match expectation {
                    Expectation::Any => true,
                    Expectation::NoStream => head.is_none(),
                    Expectation::StreamExists => head.is_some(),
                    Expectation::Exact(n) => head == Some(n),
                };
                let r = nodes[node].append("m", batch.clone()).await;
                if ok {
                    let o = r.unwrap_or_else(|e| panic!("op {i}: expected success, got {e:?}"));
                    assert_eq!(o.first_seq, model.log.len() as u64, "op {i}");
                    assert!(!o.deduplicated);
                    for e in &batch.events {
                        let rev = model.heads.get(&e.stream).map_or(0, |h| h + 1);
                        model.heads.insert(e.stream.clone(), rev);
                        model.log.push((e.stream.clone(), rev, String::from_utf8_lossy(&e.data).into()));
                    }
                    assert_eq!(o.last_seq + 1, model.log.len() as u64);
                    sent.push((batch, Ok(o)));
                } else {
                    match r {
                        Err(AppendError::WrongExpectedRevision(c)) => {
                            assert_eq!(c[0].current_revision, head, "op {i}");
                            sent.push((batch, Err("409".into())));
                        }
                        other => panic!("op {i}: expected 409, got {other:?}"),
                    }
                }
            }
            Op::Retry { node, which } => {
                if sent.is_empty() {
                    continue;
                }
                let (batch, original) = sent[which % sent.len()].clone();
                if batch.events[0].id.is_none() {
                    continue;
                }
                // Ids of truncated events are not looked for any more (the
                // writer may still have them in memory): either answer is
                // right, so the model does not ask.
                if original.as_ref().map_or(model.first > 0, |o| o.first_seq < model.first) {
                    continue;
                }
                // Nor out of the idempotency window (kept small, so that
                // history can be sealed): a retry there may append again.
                if original.as_ref().map_or(true, |o| o.first_seq + WINDOW < model.log.len() as u64) {
                    continue;
                }
                let r = nodes[node].append("m", batch.clone()).await;
                match (&original, r) {
                    (Ok(o), Ok(again)) => {
                        assert!(again.deduplicated, "op {i}: a retry appended again");
                        assert_eq!((again.first_seq, again.last_seq, &again.streams), (o.first_seq, o.last_seq, &o.streams), "op {i}");
                    }
                    // A retry of a rejected batch may now be accepted or
                    // rejected, like any new batch; the model follows.
                    (Err(_), Ok(o)) => {
                        assert_eq!(o.first_seq, model.log.len() as u64, "op {i}");
                        for e in &batch.events {
                            let rev = model.heads.get(&e.stream).map_or(0, |h| h + 1);
                            model.heads.insert(e.stream.clone(), rev);
                            model.log.push((e.stream.clone(), rev, String::from_utf8_lossy(&e.data).into()));
                        }
                        let idx = which % sent.len();
                        sent[idx].1 = Ok(o);
                    }
                    (Err(_), Err(AppendError::WrongExpectedRevision(_))) => {}
                    (o, r) => panic!("op {i}: retry of {o:?} gave {r:?}"),
                }
            }
            Op::Read { node, stream, from, backward, limit } => {
                let s = format!("s{stream}");
                let dir = if backward { Direction::Backward } else { Direction::Forward };
                let limit = (limit > 0).then_some(limit as usize);
                let from = u64::from(from);
                let mut want: Vec<(u64, String)> = model
                    .log
                    .iter()
                    .enumerate()
                    .filter(|(seq, (st, rev, _))| st == &s && *seq as u64 >= model.first && if backward { *rev <= from } else { *rev >= from })
                    .map(|(_, (_, rev, d))| (*rev, d.clone()))
                    .collect();
                // What retention truncated is refused, never left out:
                // forwards, when revisions from `from` on were dropped;
                // backwards, when nothing at or below `from` is kept.
                let kept_first = model.log.iter().enumerate().find(|(seq, (st, _, _))| st == &s && *seq as u64 >= model.first).map(|(_, (_, r, _))| *r);
                let head = model.head(&s);
                let truncated = match (backward, head) {
                    (_, None) => false,
                    (false, Some(h)) => from <= h && kept_first.is_none_or(|k| from < k),
                    (true, Some(_)) => want.is_empty(),
                };
                let opts = cairn_engine::reader::ReadOptions { limit, tag: None };
                let r = async {
                    let mut scan = nodes[node].read_stream("m", &s, Some(from), dir, opts).await?;
                    let mut out = Vec::new();
                    while let Some(c) = scan.next_chunk().await? {
                        out.extend(c);
                    }
                    Ok::<_, ReadError>(out)
                }
                .await;
                if truncated {
                    assert!(matches!(r, Err(ReadError::Truncated { .. })), "op {i}: read of {s} from {from} (first {}): {r:?}", model.first);
                    continue;
                }
                let got = r.unwrap_or_else(|e| panic!("op {i}: read of {s} from {from}: {e:?}"));
                if backward {
                    want.reverse();
                }
                if let Some(l) = limit {
                    want.truncate(l);
                }
                let got: Vec<(u64, String)> = got.iter().map(|r| (r.event.revision, String::from_utf8_lossy(&r.event.data).into())).collect();
                assert_eq!(got, want, "op {i}: read of {s}");
            }
            Op::Truncate { node, by } => {
                let at = (model.first + u64::from(by)).min(model.log.len() as u64);
                let info = nodes[node].set_retention("m", Retention { truncate_before: Some(at), max_age_ms: None }).await.unwrap();
                assert_eq!(info.first_seq, at, "op {i}");
                nodes[node].apply_policies("m").await.unwrap();
                model.first = at;
            }
            Op::Seal { node } => {
                let t = cairn_engine::Tiering { seal_before: Some(model.log.len() as u64), seal_after_ms: None };
                nodes[node].set_tiering("m", t).await.unwrap();
                nodes[node].apply_policies("m").await.unwrap();
            }
        }
    }
    for n in &nodes {
        let mut scan = n.read_store("m", model.first, Default::default()).await.unwrap();
        let mut all = Vec::new();
        while let Some(c) = scan.next_chunk().await.unwrap() {
            all.extend(c);
        }
        let got: Vec<(String, u64, String)> = all.iter().map(|r| (r.event.stream.to_string(), r.event.revision, String::from_utf8_lossy(&r.event.data).into())).collect();
        assert_eq!(got, model.log[model.first as usize..].to_vec());
        if model.first > 0 {
            let r = n.read_store("m", model.first - 1, Default::default()).await;
            assert!(matches!(r, Err(ReadError::Truncated { .. })), "{:?}", r.err());
        }
        for (s, h) in &model.heads {
            assert_eq!(n.stream_head("m", s).await.unwrap(), Some(*h));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
