//! Retention: truncate-before and max-age, set per store; whole objects
//! are dropped; reads before the first seq say so; heads survive.

use std::time::Duration;

use cairn_engine::reader::ReadOptions;
use cairn_engine::{AppendCondition, AppendError, Direction, Engine, EngineConfig, Expectation, NewEvent, QueryItem, ReadError, Retention, RetentionError};
use futures::TryStreamExt;

use crate::{batch, ev, read_all, read_stream, small_config, test_config, Backend, Fixture};

cairn_engine::on_every_backend!(
    truncate_before_refuses_reads_below_and_keeps_heads,
    max_age_drops_whole_objects_past_the_age,
    retention_settings_are_checked_and_kept,
    another_node_sees_a_truncation_within_a_poll_interval,
    a_writer_behind_a_truncation_gives_the_next_revision,
);

fn config() -> EngineConfig {
    EngineConfig { retired_grace: Duration::ZERO, manifest_retention: Duration::ZERO, ..small_config() }
}

async fn store_bytes(fx: &Fixture) -> u64 {
    fx.store.list(None).map_ok(|m| m.size).try_fold(0u64, |a, s| async move { Ok(a + s) }).await.unwrap()
}

async fn read_from(e: &Engine, store: &str, from: u64) -> Result<Vec<cairn_engine::ReadEvent>, ReadError> {
    let mut scan = e.read_store(store, from, ReadOptions::default()).await?;
    let mut out = Vec::new();
    while let Some(c) = scan.next_chunk().await? {
        out.extend(c);
    }
    Ok(out)
}

async fn stream_from(e: &Engine, store: &str, stream: &str, from: Option<u64>, dir: Direction) -> Result<Vec<cairn_engine::ReadEvent>, ReadError> {
    let mut scan = e.read_stream(store, stream, from, dir, ReadOptions::default()).await?;
    let mut out = Vec::new();
    while let Some(c) = scan.next_chunk().await? {
        out.extend(c);
    }
    Ok(out)
}

/// 60 events in 15 commits of 4 (rolled up into index objects as they
/// come): `early` only in the first commit, `s0`..`s2` in every one.
async fn fill(e: &Engine, store: &str) {
    e.create_store(store).await.unwrap();
    for i in 0..15 {
        let first = if i == 0 { "early".to_string() } else { "s0".to_string() };
        let evs = vec![ev(&first, "A", "{}"), ev("s0", "B", "{}"), ev("s1", "C", "{}"), ev("s2", "D", "{}")];
        e.append(store, batch(evs)).await.unwrap();
    }
}

async fn truncate_before_refuses_reads_below_and_keeps_heads(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(config());
    fill(&e, "r").await;
    let all = read_all(&e, "r").await;
    assert_eq!(all.len(), 60);
    let info = e.store_info("r").await.unwrap();
    assert!(info.index_objects > 0, "roll-up made index objects: {info:?}");
    let bytes_before = store_bytes(&fx).await;

    let set = e.set_retention("r", Retention { truncate_before: Some(30), max_age_ms: None }).await.unwrap();
    assert_eq!((set.first_seq, set.next_seq), (30, 60));
    e.apply_policies("r").await.unwrap();
    e.gc("r").await.unwrap();

    // Cold, on another engine too: the answers come from storage.
    for engine in [e.clone(), fx.engine(config())] {
        let e = &engine;
        for from in [0, 29] {
            let r = read_from(e, "r", from).await;
            assert!(matches!(r, Err(ReadError::Truncated { first_seq: 30, .. })), "from {from}: {r:?}");
        }
        assert_eq!(read_from(e, "r", 30).await.unwrap(), all[30..].to_vec());
        assert_eq!(read_from(e, "r", 45).await.unwrap(), all[45..].to_vec());

        // s1 has one event a commit: revisions 0..15, seq 4k+2. Seq 30 is
        // in commit 7, so s1's first revision kept is 7 (seq 30).
        let s1: Vec<_> = all.iter().filter(|x| &*x.event.stream == "s1").cloned().collect();
        for from in [None, Some(0), Some(6)] {
            let r = stream_from(e, "r", "s1", from, Direction::Forward).await;
            assert!(matches!(r, Err(ReadError::Truncated { first_seq: 30, first_revision: Some(7) })), "s1 from {from:?}: {r:?}");
        }
        assert_eq!(stream_from(e, "r", "s1", Some(7), Direction::Forward).await.unwrap(), s1[7..].to_vec());
        let back = stream_from(e, "r", "s1", None, Direction::Backward).await.unwrap();
        assert_eq!(back.iter().map(|x| x.event.revision).collect::<Vec<_>>(), (7..15).rev().collect::<Vec<_>>());
        let r = stream_from(e, "r", "s1", Some(6), Direction::Backward).await;
        assert!(matches!(r, Err(ReadError::Truncated { .. })), "backward below: {r:?}");

        // A stream wholly before the point: no events, but its head stays.
        let r = stream_from(e, "r", "early", None, Direction::Forward).await;
        assert!(matches!(r, Err(ReadError::Truncated { first_revision: None, .. })), "early: {r:?}");
        assert_eq!(e.stream_head("r", "early").await.unwrap(), Some(0));
        assert_eq!(e.stream_head("r", "s1").await.unwrap(), Some(14));
    }
    let info = e.store_info("r").await.unwrap();
    assert_eq!(info.first_seq, 30);
    assert!(store_bytes(&fx).await < bytes_before, "whole objects were deleted");

    // Revisions go on and `no_stream` still knows the stream.
    let r = e.append("r", batch(vec![ev("early", "A", "{}")]).expect("early", Expectation::NoStream)).await;
    assert!(matches!(r, Err(AppendError::WrongExpectedRevision(ref c)) if c[0].current_revision == Some(0)), "{r:?}");
    let out = e.append("r", batch(vec![ev("early", "A", "{}")]).expect("early", Expectation::Exact(0))).await.unwrap();
    assert_eq!(out.streams[0].first_revision, 1);

    // A condition reaching below the first seq cannot be checked.
    let c = |after| AppendCondition { fail_if_events_match: vec![QueryItem { types: vec!["Z".into()], tags: vec![] }], after };
    for after in [None, Some(28)] {
        let r = e.append("r", batch(vec![ev("x", "A", "{}")]).condition(c(after))).await;
        assert!(matches!(r, Err(AppendError::ConditionTruncated { first_seq: 30 })), "after {after:?}: {r:?}");
    }
    e.append("r", batch(vec![ev("x", "A", "{}")]).condition(c(Some(29)))).await.unwrap();

    // Everything, then more appends: the store starts again from there.
    let end = e.store_info("r").await.unwrap().next_seq;
    e.set_retention("r", Retention { truncate_before: Some(end), max_age_ms: None }).await.unwrap();
    e.apply_policies("r").await.unwrap();
    let info = e.store_info("r").await.unwrap();
    assert_eq!((info.first_seq, info.segments, info.index_objects), (end, 0, 0), "{info:?}");
    let out = e.append("r", batch(vec![ev("s1", "C", "{}")])).await.unwrap();
    assert_eq!((out.first_seq, out.streams[0].first_revision), (end, 15));
    let cold = fx.engine(config());
    let tail = read_from(&cold, "r", end).await.unwrap();
    assert_eq!(tail.iter().map(|x| (x.seq, x.event.revision)).collect::<Vec<_>>(), vec![(end, 15)]);
    assert_eq!(cold.stream_head("r", "s0").await.unwrap(), Some(28));
}

async fn max_age_drops_whole_objects_past_the_age(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("a").await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let day = 86_400_000;
    let at = |ts: i64| NewEvent { timestamp: Some(ts), ..ev("s", "T", "{}") };
    // Three commits ten days old, one mixing old and new, one new.
    for _ in 0..3 {
        e.append("a", batch(vec![at(now - 10 * day), at(now - 10 * day)])).await.unwrap();
    }
    e.append("a", batch(vec![at(now - 10 * day), at(now)])).await.unwrap();
    e.append("a", batch(vec![at(now)])).await.unwrap();
    let all = read_all(&e, "a").await;
    e.set_retention("a", Retention { truncate_before: None, max_age_ms: Some(day as u64) }).await.unwrap();
    let info = e.apply_policies("a").await.unwrap();
    // Only whole objects go: the mixed commit stays, old event and all.
    assert_eq!(info.first_seq, 6);
    let r = read_from(&e, "a", 5).await;
    assert!(matches!(r, Err(ReadError::Truncated { first_seq: 6, .. })), "{r:?}");
    assert_eq!(read_from(&e, "a", 6).await.unwrap(), all[6..].to_vec());
    assert_eq!(read_stream(&e, "a", "s", Some(6), Direction::Forward, None).await, all[6..].to_vec());
    assert_eq!(e.store_info("a").await.unwrap().segments, 2);
    assert_eq!(e.stream_head("a", "s").await.unwrap(), Some(8));
    // Enforcing again drops nothing more.
    assert_eq!(e.apply_policies("a").await.unwrap().first_seq, 6);
}

async fn retention_settings_are_checked_and_kept(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("k").await.unwrap();
    e.append("k", batch(vec![ev("s", "T", "{}"), ev("s", "T", "{}")])).await.unwrap();
    let version = e.store_info("k").await.unwrap().version;
    for bad in [Retention { truncate_before: Some(3), max_age_ms: None }, Retention { truncate_before: None, max_age_ms: Some(0) }] {
        let r = e.set_retention("k", bad.clone()).await;
        assert!(matches!(r, Err(RetentionError::Invalid(_))), "{bad:?}: {r:?}");
    }
    assert_eq!(e.store_info("k").await.unwrap().version, version, "a refused setting commits nothing");
    let r = e.set_retention("nope", Retention::default()).await;
    assert!(matches!(r, Err(RetentionError::StoreNotFound(_))), "{r:?}");

    let want = Retention { truncate_before: Some(2), max_age_ms: Some(3_600_000) };
    let set = e.set_retention("k", want.clone()).await.unwrap();
    assert_eq!((set.first_seq, &set.retention), (2, &want));
    // Kept in the manifest: a cold engine sees the same.
    let cold = fx.engine(test_config());
    let got = cold.retention("k").await.unwrap();
    assert_eq!((got.first_seq, got.retention), (2, want));
    // The first seq never moves back, whatever is set later.
    let later = e.set_retention("k", Retention::default()).await.unwrap();
    assert_eq!((later.first_seq, later.retention), (2, Retention::default()));
    // Setting the same again commits nothing (once the truncation that
    // dropped the first segment is in).
    e.apply_policies("k").await.unwrap();
    let v = e.store_info("k").await.unwrap().version;
    e.set_retention("k", Retention::default()).await.unwrap();
    assert_eq!(e.store_info("k").await.unwrap().version, v);
}

async fn another_node_sees_a_truncation_within_a_poll_interval(b: Backend) {
    let fx = Fixture::new(b);
    let cfg = EngineConfig { poll_interval: Duration::from_millis(100), ..test_config() };
    let (a, other) = (fx.engine(cfg.clone()), fx.engine(cfg));
    a.create_store("n").await.unwrap();
    for _ in 0..4 {
        a.append("n", batch(vec![ev("s", "T", "{}")])).await.unwrap();
    }
    // The other node has the store open and warm.
    assert_eq!(read_from(&other, "n", 0).await.unwrap().len(), 4);
    a.set_retention("n", Retention { truncate_before: Some(2), max_age_ms: None }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = read_from(&other, "n", 0).await;
    assert!(matches!(r, Err(ReadError::Truncated { first_seq: 2, .. })), "{r:?}");
    let r = stream_from(&other, "n", "s", Some(1), Direction::Forward).await;
    assert!(matches!(r, Err(ReadError::Truncated { first_revision: Some(2), .. })), "{r:?}");
    assert_eq!(read_from(&other, "n", 2).await.unwrap().len(), 2);
}

/// Found by the model test: a writer whose view predates both a commit and
/// the truncation that dropped it rebased onto a manifest with no segment
/// to learn the stream's head from, and gave revision 0 again.
async fn a_writer_behind_a_truncation_gives_the_next_revision(b: Backend) {
    let fx = Fixture::new(b);
    let (a, behind) = (fx.engine(test_config()), fx.engine(test_config()));
    a.create_store("w").await.unwrap();
    behind.append("w", batch(vec![ev("other", "T", "{}")])).await.unwrap();
    a.append("w", batch(vec![ev("s", "T", "{}"), ev("s", "T", "{}")])).await.unwrap();
    a.set_retention("w", Retention { truncate_before: Some(3), max_age_ms: None }).await.unwrap();
    a.apply_policies("w").await.unwrap();
    let out = behind.append("w", batch(vec![ev("s", "T", "{}")])).await.unwrap();
    assert_eq!((out.first_seq, out.streams[0].first_revision), (3, 2));
    let out = behind.append("w", batch(vec![ev("other", "T", "{}")])).await.unwrap();
    assert_eq!(out.streams[0].first_revision, 1);
}
