//! Behaviour every backend must show.

use std::time::Duration;

use cairn_engine::{AppendError, CreateStore, Direction, Expectation, ReadError, StoreError};

use crate::{batch, ev, read_all, read_stream, small_config, test_config, with_id, Backend, Fixture};

cairn_engine::on_every_backend!(
    stores_are_created_listed_and_deleted,
    appends_get_gapless_seqs_and_revisions,
    expectations_are_checked_per_stream_and_atomically,
    retried_batches_return_the_original_answer,
    idempotency_window_survives_a_restart,
    stream_reads_go_forwards_and_backwards,
    tag_reads_skip_and_page_with_next,
    rollup_keeps_manifests_bounded_and_reads_correct,
    gc_collects_versions_and_replaced_objects,
    stale_writer_in_a_collected_slot_recommits,
    long_polls_wake_on_local_and_remote_commits,
    two_engines_interleave_commits,
    manifests_stay_small_over_many_commits,
    docs_compare_and_swap,
    a_batch_over_many_streams_finds_every_head,
    a_stream_over_many_blocks_reads_whole_cold_and_warm,
);

async fn stores_are_created_listed_and_deleted(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    assert_eq!(e.create_store("sales").await.unwrap(), CreateStore::Created);
    assert_eq!(e.create_store("sales").await.unwrap(), CreateStore::Existed);
    e.create_store("tmp-1").await.unwrap();
    assert!(matches!(e.create_store("Bad_Name").await, Err(StoreError::InvalidName(_))));
    assert!(matches!(e.create_store("../x").await, Err(StoreError::InvalidName(_))));
    assert_eq!(e.list_stores().await.unwrap(), vec!["sales".to_string(), "tmp-1".to_string()]);
    let info = e.store_info("sales").await.unwrap();
    assert_eq!((info.next_seq, info.version, info.idempotency_window), (0, 0, 1_000_000));
    e.append("sales", batch(vec![ev("a", "T", "{}")])).await.unwrap();
    e.delete_store("sales").await.unwrap();
    assert!(matches!(e.store_info("sales").await, Err(StoreError::NotFound(_))));
    assert!(matches!(e.append("sales", batch(vec![ev("a", "T", "{}")])).await, Err(AppendError::StoreNotFound(_))));
    assert!(matches!(e.delete_store("sales").await, Err(StoreError::NotFound(_))));
    // A re-created store is a fresh incarnation: empty, and the old one's
    // cached state cannot leak into it.
    e.create_store("sales").await.unwrap();
    let info2 = e.store_info("sales").await.unwrap();
    assert_ne!(info.incarnation, info2.incarnation);
    assert_eq!(info2.next_seq, 0);
    assert!(read_all(&e, "sales").await.is_empty());
    assert_eq!(e.list_stores().await.unwrap().len(), 2);
}

async fn appends_get_gapless_seqs_and_revisions(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("s").await.unwrap();
    let o = e.append("s", batch(vec![ev("a", "T", "1"), ev("a", "T", "2")])).await.unwrap();
    assert_eq!((o.first_seq, o.last_seq), (0, 1));
    assert_eq!((o.streams[0].first_revision, o.streams[0].last_revision), (0, 1));
    let o = e.append("s", batch(vec![ev("b", "U", "3"), ev("a", "T", "4"), ev("b", "U", "5")])).await.unwrap();
    assert_eq!((o.first_seq, o.last_seq), (2, 4));
    // Concurrent appends are group-committed; every one gets its own seqs.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move { e.append("s", batch(vec![ev(&format!("c{}", i % 5), "T", &i.to_string())])).await.unwrap() }));
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().first_seq);
    }
    seqs.sort();
    assert_eq!(seqs, (5..55).collect::<Vec<_>>());
    let all = read_all(&e, "s").await;
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..55).collect::<Vec<_>>());
    assert_eq!(all[3].event.data.as_ref(), b"4");
    assert_eq!((&*all[3].event.stream, all[3].event.revision), ("a", 2));
    for s in 0..5 {
        let revs: Vec<u64> = all.iter().filter(|r| *r.event.stream == *format!("c{s}")).map(|r| r.event.revision).collect();
        assert_eq!(revs, (0..10).collect::<Vec<_>>());
    }
    assert_eq!(e.stream_head("s", "a").await.unwrap(), Some(2));
    assert_eq!(e.stream_head("s", "nope").await.unwrap(), None);
    // Invalid batches change nothing.
    assert!(matches!(e.append("s", batch(vec![])).await, Err(AppendError::Invalid(_))));
    assert!(matches!(e.append("s", batch(vec![ev("", "T", "1")])).await, Err(AppendError::Invalid(_))));
    assert!(matches!(e.append("s", batch(vec![ev("a\n", "T", "1")])).await, Err(AppendError::Invalid(_))));
    assert!(matches!(e.append("s", batch(vec![ev("a", "", "1")])).await, Err(AppendError::Invalid(_))));
    assert_eq!(e.store_info("s").await.unwrap().next_seq, 55);
    // A fresh engine (a restart) sees the same.
    let e2 = fx.engine(test_config());
    assert_eq!(read_all(&e2, "s").await, all);
    let o = e2.append("s", batch(vec![ev("a", "T", "x")])).await.unwrap();
    assert_eq!((o.first_seq, o.streams[0].first_revision), (55, 3));
    // Reading from past the end is an error, not a silent wait.
    assert!(matches!(e2.read_store("s", 57, Default::default()).await, Err(ReadError::PositionBeyondEnd { .. })));
}

async fn expectations_are_checked_per_stream_and_atomically(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("s").await.unwrap();
    let one = |s: &str| batch(vec![ev(s, "T", "{}")]);
    e.append("s", one("a").expect("a", Expectation::NoStream)).await.unwrap();
    let err = e.append("s", one("a").expect("a", Expectation::NoStream)).await.unwrap_err();
    match err {
        AppendError::WrongExpectedRevision(c) => assert_eq!(c[0].current_revision, Some(0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(e.append("s", one("b").expect("b", Expectation::StreamExists)).await, Err(AppendError::WrongExpectedRevision(_))));
    e.append("s", one("a").expect("a", Expectation::StreamExists)).await.unwrap();
    e.append("s", one("a").expect("a", Expectation::Exact(1))).await.unwrap();
    assert!(matches!(e.append("s", one("a").expect("a", Expectation::Exact(1))).await, Err(AppendError::WrongExpectedRevision(_))));
    // A many-stream batch with one failing stream appends nothing.
    let multi = batch(vec![ev("x", "T", "1"), ev("a", "T", "2")]).expect("x", Expectation::NoStream).expect("a", Expectation::Exact(7));
    match e.append("s", multi).await.unwrap_err() {
        AppendError::WrongExpectedRevision(c) => {
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].stream.as_str(), c[0].current_revision), ("a", Some(2)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.stream_head("s", "x").await.unwrap(), None);
    assert_eq!(e.store_info("s").await.unwrap().next_seq, 3);
    // Expectations hold for requests group-committed together: exactly one
    // of many racing `no_stream` appends wins.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move { e.append("s", batch(vec![ev("race", "T", "{}")]).expect("race", Expectation::NoStream)).await }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap().is_ok() as usize;
    }
    assert_eq!(ok, 1);
    // The same between two engines (two nodes) on one store.
    let e2 = fx.engine(test_config());
    let (r1, r2) = tokio::join!(
        e.append("s", one("dup").expect("dup", Expectation::NoStream)),
        e2.append("s", one("dup").expect("dup", Expectation::NoStream))
    );
    assert_eq!(r1.is_ok() as u8 + r2.is_ok() as u8, 1, "{r1:?} {r2:?}");
}

async fn retried_batches_return_the_original_answer(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("s").await.unwrap();
    e.append("s", batch(vec![ev("pad", "T", "{}")])).await.unwrap();
    let b1 = batch(vec![with_id(ev("a", "T", "1"), 1), with_id(ev("a", "T", "2"), 2)]);
    let first = e.append("s", b1.clone()).await.unwrap();
    let again = e.append("s", b1.clone()).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.first_seq, again.last_seq, again.streams.clone()), (first.first_seq, first.last_seq, first.streams.clone()));
    // By position, with an exact expectation.
    let b2 = batch(vec![with_id(ev("a", "T", "3"), 3)]).expect("a", Expectation::Exact(1));
    let first2 = e.append("s", b2.clone()).await.unwrap();
    let again2 = e.append("s", b2.clone()).await.unwrap();
    assert_eq!((again2.first_seq, again2.deduplicated), (first2.first_seq, true));
    // A partial match is a conflict; nothing is appended.
    let partial = batch(vec![with_id(ev("a", "T", "1"), 1), with_id(ev("a", "T", "9"), 99)]);
    assert!(matches!(e.append("s", partial).await, Err(AppendError::IdempotencyConflict(_))));
    // Two copies of one batch in flight at once: one append, same answer.
    let b3 = batch(vec![with_id(ev("c", "T", "1"), 10)]);
    let (x, y) = tokio::join!(e.append("s", b3.clone()), e.append("s", b3.clone()));
    assert_eq!(x.unwrap().first_seq, y.unwrap().first_seq);
    let all = read_all(&e, "s").await;
    assert_eq!(all.len(), 5);
    assert_eq!(all.iter().filter(|r| r.event.id == Some(*uuid::Uuid::from_u128(1).as_bytes())).count(), 1);
}

async fn idempotency_window_survives_a_restart(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(small_config());
    e.create_store("s").await.unwrap();
    let mut originals = Vec::new();
    for i in 0..20u128 {
        let bt = batch(vec![with_id(ev(&format!("s{}", i % 3), "T", "{}"), 1000 + i)]);
        originals.push((bt.clone(), e.append("s", bt).await.unwrap()));
    }
    // A new engine has no ids in memory: it finds them through the
    // segments' id filters, also in rolled-up segments.
    let e2 = fx.engine(small_config());
    for (bt, o) in &originals {
        let again = e2.append("s", bt.clone()).await.unwrap();
        assert!(again.deduplicated);
        assert_eq!(again.first_seq, o.first_seq);
    }
    assert_eq!(read_all(&e2, "s").await.len(), 20);
}

async fn stream_reads_go_forwards_and_backwards(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(small_config());
    e.create_store("s").await.unwrap();
    for i in 0..30 {
        e.append("s", batch(vec![ev("x", "T", &i.to_string()), ev(&format!("other{i}"), "T", "{}")])).await.unwrap();
    }
    let fwd = read_stream(&e, "s", "x", None, Direction::Forward, None).await;
    assert_eq!(fwd.iter().map(|r| r.event.revision).collect::<Vec<_>>(), (0..30).collect::<Vec<_>>());
    assert_eq!(fwd.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..30).map(|i| i * 2).collect::<Vec<_>>());
    let part = read_stream(&e, "s", "x", Some(10), Direction::Forward, Some(5)).await;
    assert_eq!(part.iter().map(|r| r.event.revision).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    let back = read_stream(&e, "s", "x", None, Direction::Backward, Some(4)).await;
    assert_eq!(back.iter().map(|r| r.event.revision).collect::<Vec<_>>(), vec![29, 28, 27, 26]);
    let back = read_stream(&e, "s", "x", Some(2), Direction::Backward, None).await;
    assert_eq!(back.iter().map(|r| r.event.revision).collect::<Vec<_>>(), vec![2, 1, 0]);
    assert!(read_stream(&e, "s", "missing", None, Direction::Forward, None).await.is_empty());
    assert!(read_stream(&e, "s", "missing", None, Direction::Backward, None).await.is_empty());
    let info = e.store_info("s").await.unwrap();
    assert!(info.index_objects > 0, "the small config rolls up: {info:?}");
}

async fn tag_reads_skip_and_page_with_next(b: Backend) {
    let fx = Fixture::new(b);
    let mut cfg = test_config();
    cfg.tag_scan_budget = 1; // every read scans a little and says where it stopped
    let e = fx.engine(cfg);
    e.create_store("s").await.unwrap();
    for i in 0..40u64 {
        let mut x = ev("s", "T", &i.to_string());
        if i % 10 == 3 {
            x.tags = vec![("region".into(), "eu".into())];
        }
        e.append("s", batch(vec![x])).await.unwrap();
    }
    let tag = Some(("region".to_string(), "eu".to_string()));
    let mut from = 0;
    let mut got = Vec::new();
    let mut reads = 0;
    while from < 40 {
        let mut scan = e.read_store("s", from, cairn_engine::reader::ReadOptions { limit: None, tag: tag.clone() }).await.unwrap();
        while let Some(c) = scan.next_chunk().await.unwrap() {
            got.extend(c.into_iter().map(|r| r.seq));
        }
        assert!(scan.next() > from, "a read always makes progress");
        from = scan.next();
        reads += 1;
    }
    assert_eq!(got, vec![3, 13, 23, 33]);
    assert!(reads > 1, "the budget made the client page");
}

async fn rollup_keeps_manifests_bounded_and_reads_correct(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(small_config());
    e.create_store("s").await.unwrap();
    for i in 0..120u64 {
        e.append("s", batch(vec![ev(&format!("st{}", i % 7), "T", &i.to_string())])).await.unwrap();
    }
    // Roll-up runs in the background and lands with a later commit: the
    // recent segments stay near the bound (the writer waits for a roll-up
    // a quarter past it), far from the 120 commits.
    let info = e.store_info("s").await.unwrap();
    assert!(info.segments <= 12 && info.index_objects <= 8, "{info:?}");
    let all = read_all(&e, "s").await;
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..120).collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.event.data.as_ref() == r.seq.to_string().as_bytes()));
    let e2 = fx.engine(small_config());
    for s in 0..7u64 {
        let n = (0..120).filter(|i| i % 7 == s).count() as u64;
        assert_eq!(e2.stream_head("s", &format!("st{s}")).await.unwrap(), Some(n - 1));
        let r = read_stream(&e2, "s", &format!("st{s}"), None, Direction::Forward, None).await;
        assert_eq!(r.len() as u64, n);
    }
    // Writes after a restart continue revisions found through index objects.
    let o = e2.append("s", batch(vec![ev("st0", "T", "x")]).expect("st0", Expectation::Exact(17))).await.unwrap();
    assert_eq!(o.streams[0].first_revision, 18);
}

async fn gc_collects_versions_and_replaced_objects(b: Backend) {
    let fx = Fixture::new(b);
    let mut cfg = small_config();
    cfg.manifest_retention = Duration::ZERO;
    cfg.retired_grace = Duration::ZERO;
    let e = fx.engine(cfg.clone());
    e.create_store("s").await.unwrap();
    for i in 0..40u64 {
        e.append("s", batch(vec![ev("a", "T", &i.to_string())])).await.unwrap();
    }
    let reader = e.read_store("s", 0, Default::default()).await.unwrap();
    let r = e.gc("s").await.unwrap();
    assert!(r.manifests_deleted > 30 && r.objects_deleted > 0, "{r:?}");
    // The newest two versions are always kept.
    let info = e.store_info("s").await.unwrap();
    assert_eq!(r.floor, info.version - 1);
    // A reader that started before GC resumes from its cursor.
    let mut reader = reader;
    let mut n = 0;
    while let Some(c) = reader.next_chunk().await.unwrap() {
        n += c.len();
    }
    assert_eq!(n, 40);
    // Cold engines find the newest version from the boundary.
    let e2 = fx.engine(cfg);
    assert_eq!(read_all(&e2, "s").await.len(), 40);
    e2.append("s", batch(vec![ev("a", "T", "x")]).expect("a", Expectation::Exact(39))).await.unwrap();
    // Orphans younger than their grace are kept.
    let r2 = e2.gc("s").await.unwrap();
    assert_eq!(read_all(&e, "s").await.len(), 41);
    assert!(r2.floor >= r.floor);
}

async fn stale_writer_in_a_collected_slot_recommits(b: Backend) {
    // Node A knows version N; node B commits many versions and GC deletes
    // N+1.. below its floor. A's create of N+1 then succeeds — a re-created
    // name. A must see the newer boundary, not acknowledge that commit, and
    // commit again on top of the newest version.
    let fx = Fixture::new(b);
    let mut cfg = test_config();
    cfg.manifest_retention = Duration::ZERO;
    let a = fx.engine(cfg.clone());
    let bnode = fx.engine(cfg);
    a.create_store("s").await.unwrap();
    a.append("s", batch(vec![ev("x", "T", "a0")])).await.unwrap();
    for i in 0..10 {
        bnode.append("s", batch(vec![ev("y", "T", &format!("b{i}"))])).await.unwrap();
    }
    let r = bnode.gc("s").await.unwrap();
    assert!(r.floor >= 9, "{r:?}");
    let o = a.append("s", batch(vec![ev("x", "T", "a1")])).await.unwrap();
    assert_eq!(o.first_seq, 11);
    assert_eq!(o.streams[0].first_revision, 1);
    let all = read_all(&bnode, "s").await;
    assert_eq!(all.len(), 12);
    assert_eq!(all.iter().filter(|r| r.event.data.as_ref() == b"a1").count(), 1);
    assert_eq!(all[11].event.data.as_ref(), b"a1");
}

async fn long_polls_wake_on_local_and_remote_commits(b: Backend) {
    let fx = Fixture::new(b);
    let mut cfg = test_config();
    cfg.poll_interval = Duration::from_millis(20);
    let e = fx.engine(cfg.clone());
    let other = fx.engine(cfg);
    e.create_store("s").await.unwrap();
    assert!(!e.wait_for("s", 0, Duration::from_millis(50)).await.unwrap());
    let waiter = {
        let e = e.clone();
        tokio::spawn(async move { e.wait_for("s", 0, Duration::from_secs(10)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.append("s", batch(vec![ev("a", "T", "{}")])).await.unwrap();
    assert!(waiter.await.unwrap());
    // A commit on another node is found by the poller.
    let waiter = {
        let e = e.clone();
        tokio::spawn(async move { e.wait_for("s", 1, Duration::from_secs(10)).await.unwrap() })
    };
    other.append("s", batch(vec![ev("a", "T", "{}")])).await.unwrap();
    assert!(waiter.await.unwrap());
}

async fn two_engines_interleave_commits(b: Backend) {
    let fx = Fixture::new(b);
    let e1 = fx.engine(small_config());
    let e2 = fx.engine(small_config());
    e1.create_store("s").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let e = if i % 2 == 0 { e1.clone() } else { e2.clone() };
        tasks.push(tokio::spawn(async move {
            e.append("s", batch(vec![ev(&format!("s{}", i % 4), "T", &i.to_string())])).await.unwrap()
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.push(t.await.unwrap());
    }
    let all = read_all(&e1, "s").await;
    assert_eq!(all.len(), 60);
    for a in &acks {
        let r = &all[a.first_seq as usize];
        assert_eq!((&*r.event.stream, r.event.revision), (a.streams[0].stream.as_str(), a.streams[0].first_revision));
    }
    for s in 0..4 {
        let revs: Vec<u64> = all.iter().filter(|r| *r.event.stream == *format!("s{s}")).map(|r| r.event.revision).collect();
        assert_eq!(revs, (0..15).collect::<Vec<_>>());
    }
}

async fn manifests_stay_small_over_many_commits(b: Backend) {
    // Default roll-up settings; many single-event commits. The newest
    // manifest object must stay far below the 256 KiB cap.
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("s").await.unwrap();
    for i in 0..1200u64 {
        e.append("s", batch(vec![ev(&format!("s{}", i % 97), "T", "{}")])).await.unwrap();
    }
    let info = e.store_info("s").await.unwrap();
    assert_eq!(info.next_seq, 1200);
    assert!(info.version > 256, "many commits: {info:?}");
    // 200 recent segments, and a quarter more while a roll-up is in flight.
    assert!(info.segments <= 250 && info.index_objects >= 1, "{info:?}");
    let incarnation = info.incarnation.clone();
    let path = object_store::path::Path::from(format!("s/{incarnation}/manifest/{:020}.json", info.version));
    let size = object_store::ObjectStoreExt::head(fx.store.as_ref(), &path).await.unwrap().size;
    assert!(size < 64 << 10, "manifest of {size} bytes");
    assert_eq!(read_all(&e, "s").await.len(), 1200);
}

async fn docs_compare_and_swap(b: Backend) {
    use cairn_engine::docs::{DocCondition, DocError};
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("s").await.unwrap();
    assert!(matches!(e.get_doc("s", "view").await, Err(DocError::NotFound)));
    assert!(matches!(e.put_doc("s", "../x", b"{}", None, DocCondition::None).await, Err(DocError::InvalidKey(_))));
    assert!(matches!(e.put_doc("nope", "k", b"{}", None, DocCondition::None).await, Err(DocError::StoreNotFound(_))));
    let w = e.put_doc("s", "view", b"{\"n\":1}", Some("application/json".into()), DocCondition::IfNoneMatch).await.unwrap();
    assert!(w.created);
    assert!(matches!(e.put_doc("s", "view", b"x", None, DocCondition::IfNoneMatch).await, Err(DocError::PreconditionFailed)));
    let d = e.get_doc("s", "view").await.unwrap();
    assert_eq!((d.body.as_ref(), d.etag.as_str(), d.content_type.as_deref()), (&b"{\"n\":1}"[..], w.etag.as_str(), Some("application/json")));
    assert!(matches!(e.put_doc("s", "view", b"x", None, DocCondition::IfMatch("stale".into())).await, Err(DocError::PreconditionFailed)));
    // Racing writers from one etag: exactly one wins each round, on two engines.
    let e2 = fx.engine(test_config());
    let mut etag = w.etag.clone();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (e, tag) = (if i % 2 == 0 { e.clone() } else { e2.clone() }, etag.clone());
            tasks.push(tokio::spawn(async move { e.put_doc("s", "view", format!("{round}-{i}").as_bytes(), None, DocCondition::IfMatch(tag)).await }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(w) => winners.push(w.etag),
                Err(DocError::PreconditionFailed) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        etag = winners.pop().unwrap();
        assert_eq!(e.get_doc("s", "view").await.unwrap().etag, etag);
    }
    // Conditional delete, then the name can be created again.
    assert!(matches!(e.delete_doc("s", "view", Some("stale".into())).await, Err(DocError::PreconditionFailed)));
    e.delete_doc("s", "view", Some(etag)).await.unwrap();
    assert!(matches!(e.get_doc("s", "view").await, Err(DocError::NotFound)));
    assert!(matches!(e.delete_doc("s", "view", None).await, Err(DocError::NotFound)));
    let again = e.put_doc("s", "view", b"new", None, DocCondition::IfNoneMatch).await.unwrap();
    assert!(again.created);
    e.put_doc("s", "view", b"newer", None, DocCondition::None).await.unwrap();
    assert_eq!(e.get_doc("s", "view").await.unwrap().body.as_ref(), b"newer");
}

/// Heads of a batch's streams are looked up together (every footer and
/// index page once): streams in recent segments, behind index objects,
/// in both, and new ones all get the next revision, from a node whose
/// cache is cold.
async fn a_batch_over_many_streams_finds_every_head(b: Backend) {
    let fx = Fixture::new(b);
    let w = fx.engine(small_config());
    w.create_store("s").await.unwrap();
    // Stream k gets k % 7 + 1 events over many small commits, so roll-ups
    // put the older ones behind index objects.
    for round in 0..7 {
        let events: Vec<_> = (0..60).filter(|k| k % 7 >= round).map(|k| ev(&format!("s{k}"), "T", "1")).collect();
        for chunk in events.chunks(9) {
            w.append("s", batch(chunk.to_vec())).await.unwrap();
        }
    }
    assert!(w.store_info("s").await.unwrap().index_objects > 0, "some history is behind index objects");
    let cold = fx.engine(small_config());
    let events: Vec<_> = (0..80).map(|k| ev(&format!("s{k}"), "T", "2")).collect();
    let o = cold.append("s", batch(events)).await.unwrap();
    for r in &o.streams {
        let k: u64 = r.stream[1..].parse().unwrap();
        let want = if k < 60 { k % 7 + 1 } else { 0 };
        assert_eq!(r.first_revision, want, "stream {}", r.stream);
    }
}

/// A stream whose events lie one to a block over many segments and index
/// objects (the blocks are read ahead, several at once, and decoded for
/// that stream alone) reads whole and in order, forwards and backwards,
/// with limits, from a cold node and again warm.
async fn a_stream_over_many_blocks_reads_whole_cold_and_warm(b: Backend) {
    let fx = Fixture::new(b);
    let w = fx.engine(small_config());
    w.create_store("s").await.unwrap();
    for i in 0..120 {
        let mut events = vec![ev("x", "T", &format!("{{\"i\":{i}}}"))];
        events.extend((0..3).map(|k| ev(&format!("o{}", i * 3 + k), "U", "{}")));
        w.append("s", batch(events)).await.unwrap();
    }
    assert!(w.store_info("s").await.unwrap().index_objects > 0, "some history is behind index objects");
    let revs = |v: &[cairn_engine::ReadEvent]| v.iter().map(|r| r.event.revision).collect::<Vec<_>>();
    let cold = fx.engine(small_config());
    for e in [&cold, &cold, &w] {
        let all = read_stream(e, "s", "x", None, Direction::Forward, None).await;
        assert_eq!(revs(&all), (0..120).collect::<Vec<_>>());
        for r in &all {
            assert_eq!(r.seq, r.event.revision * 4);
            assert_eq!(r.event.data.as_ref(), format!("{{\"i\":{}}}", r.event.revision).as_bytes());
            assert_eq!(&*r.event.event_type, "T");
        }
        assert_eq!(revs(&read_stream(e, "s", "x", Some(50), Direction::Forward, Some(33)).await), (50..83).collect::<Vec<_>>());
        assert_eq!(revs(&read_stream(e, "s", "x", None, Direction::Backward, Some(45)).await), (75..120).rev().collect::<Vec<_>>());
        assert_eq!(revs(&read_stream(e, "s", "x", Some(9), Direction::Backward, None).await), (0..10).rev().collect::<Vec<_>>());
        let other = read_stream(e, "s", "o200", None, Direction::Forward, None).await;
        assert_eq!((other.len(), other[0].seq), (1, 66 * 4 + 3));
    }
}
