//! Tiering: a store whose history is sealed into archives answers every
//! read exactly as its unsealed twin with the same events does.

use std::time::Duration;

use cairn_engine::reader::ReadOptions;
use cairn_engine::{AppendCondition, AppendError, Direction, Engine, EngineConfig, NewEvent, QueryItem, ReadError, ReadEvent, Retention, Tiering};

use crate::{batch, test_config, Backend, Fixture};

cairn_engine::on_every_backend!(a_sealed_store_reads_as_its_unsealed_twin, a_quiet_store_seals_all_it_may_in_the_background, sealing_stays_out_of_the_window_and_retention_drops_archives, sealing_and_reading_archives_ride_out_storage_errors);

fn config() -> EngineConfig {
    EngineConfig {
        idempotency_window: 50,
        max_recent_segments: 4,
        keep_recent: 1,
        max_indexes: 3,
        archive_events: 40,
        retired_grace: Duration::ZERO,
        manifest_retention: Duration::ZERO,
        ..test_config()
    }
}

/// Event `i` of the twins: ten streams, three types, a common tag and a
/// rare one.
fn event(i: u64) -> NewEvent {
    let mut tags = vec![("k".to_string(), (i % 3).to_string())];
    if i % 37 == 5 {
        tags.push(("flag".into(), "rare".into()));
    }
    NewEvent {
        stream: format!("s{}", (i * 7) % 10),
        tags,
        timestamp: Some(1_700_000_000_000 + (i as i64 % 13) * 1000 + i as i64),
        id: Some(uuid::Uuid::from_u128(u128::from(i) + 1)),
        ..NewEvent::json(["A", "B", "C"][(i % 3) as usize], &format!("{{\"i\":{i}}}"))
    }
}

async fn fill(e: &Engine, store: &str, n: u64) {
    e.create_store(store).await.unwrap();
    for c in 0..n / 10 {
        e.append(store, batch((c * 10..c * 10 + 10).map(event).collect())).await.unwrap();
    }
}

async fn store_read(e: &Engine, store: &str, from: u64, tag: Option<(&str, &str)>, limit: Option<usize>) -> Result<Vec<ReadEvent>, ReadError> {
    let opts = ReadOptions { limit, tag: tag.map(|(k, v)| (k.to_string(), v.to_string())) };
    let mut scan = e.read_store(store, from, opts).await?;
    let mut out = Vec::new();
    while let Some(c) = scan.next_chunk().await? {
        out.extend(c);
    }
    Ok(out)
}

async fn stream_read(e: &Engine, store: &str, stream: &str, from: Option<u64>, dir: Direction, limit: Option<usize>) -> Result<Vec<ReadEvent>, ReadError> {
    let mut scan = e.read_stream(store, stream, from, dir, ReadOptions { limit, tag: None }).await?;
    let mut out = Vec::new();
    while let Some(c) = scan.next_chunk().await? {
        out.extend(c);
    }
    Ok(out)
}

/// Every read of `sealed` against `plain`, from `first`.
async fn same_reads(e: &Engine, sealed: &str, plain: &str, first: u64, next: u64) {
    let outcome = |r: Result<Vec<ReadEvent>, ReadError>| r.map_err(|e| e.to_string());
    // Kept small: every read here is many requests on a real server.
    for from in [first, 41, 250, next - 1] {
        if from < first || from > next {
            continue;
        }
        for tag in [None, Some(("k", "1")), Some(("flag", "rare"))] {
            for limit in [None, Some(25)] {
                let want = outcome(store_read(e, plain, from, tag, limit).await);
                assert_eq!(outcome(store_read(e, sealed, from, tag, limit).await), want, "store read from {from}, tag {tag:?}, limit {limit:?}");
            }
        }
    }
    for s in ["s0", "s3", "s7", "missing"] {
        assert_eq!(e.stream_head(sealed, s).await.unwrap(), e.stream_head(plain, s).await.unwrap(), "head of {s}");
        for (from, dir) in [(None, Direction::Forward), (Some(17), Direction::Forward), (None, Direction::Backward), (Some(5), Direction::Backward)] {
            for limit in [None, Some(4)] {
                let want = outcome(stream_read(e, plain, s, from, dir, limit).await);
                assert_eq!(outcome(stream_read(e, sealed, s, from, dir, limit).await), want, "{s} from {from:?} {dir:?} limit {limit:?}");
            }
        }
    }
}

async fn a_sealed_store_reads_as_its_unsealed_twin(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(config());
    let n = 300;
    fill(&e, "sealed", n).await;
    fill(&e, "plain", n).await;
    let t = e.set_tiering("sealed", Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None }).await.unwrap();
    assert_eq!(t.seal_before, Some(i64::MAX as u64));
    e.apply_policies("sealed").await.unwrap();
    let info = e.store_info("sealed").await.unwrap();
    assert!(info.archives >= 3, "history sealed into archives of at most 40 events: {info:?}");
    assert_eq!(store_read(&e, "sealed", 0, None, None).await.unwrap().len() as u64, n);
    same_reads(&e, "sealed", "plain", 0, n).await;

    // A cold engine, then after GC took the sealed index objects.
    let cold = fx.engine(config());
    same_reads(&cold, "sealed", "plain", 0, n).await;
    let gc = e.gc("sealed").await.unwrap();
    assert!(gc.objects_deleted > 0, "the sealed objects were collected: {gc:?}");
    same_reads(&fx.engine(config()), "sealed", "plain", 0, n).await;

    // Conditions over archived history fail and hold as on the twin, and
    // appends go on with the same seqs and revisions.
    let item = |types: &[&str], tags: &[(&str, &str)]| QueryItem { types: types.iter().map(|t| t.to_string()).collect(), tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    let conds = [
        (item(&[], &[("flag", "rare")]), Some(5)),
        (item(&[], &[("flag", "rare")]), Some(4)),
        (item(&["C"], &[("k", "1")]), None),
        (item(&["B"], &[]), Some(100)),
        (item(&["Z"], &[]), None),
        (item(&[], &[("k", "7")]), Some(3)),
        (QueryItem::default(), Some(298)),
    ];
    for (i, (q, after)) in conds.into_iter().enumerate() {
        let c = AppendCondition { fail_if_events_match: vec![q], after };
        let probe = || batch(vec![NewEvent { stream: "probe".into(), ..NewEvent::json("P", "{}") }]).condition(c.clone());
        let (a, b) = (e.append("sealed", probe()).await, e.append("plain", probe()).await);
        let kind = |r: &Result<cairn_engine::AppendOutcome, AppendError>| match r {
            Ok(o) => format!("ok {} {:?}", o.first_seq, o.streams),
            Err(e) => e.to_string(),
        };
        assert_eq!(kind(&a), kind(&b), "condition {i}");
    }
    for s in ["s0", "s3"] {
        let (a, b) = (e.append("sealed", batch(vec![NewEvent { stream: s.into(), ..NewEvent::json("A", "{}") }])).await.unwrap(), e.append("plain", batch(vec![NewEvent { stream: s.into(), ..NewEvent::json("A", "{}") }])).await.unwrap());
        assert_eq!((a.first_seq, &a.streams), (b.first_seq, &b.streams));
    }
}

/// A tiering policy set on a store nobody appends to any more is carried
/// out whole in the background, step after step, as on command: a step is
/// bounded (four archives' worth), and no commit comes to start the next.
async fn a_quiet_store_seals_all_it_may_in_the_background(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(config());
    let n = 400;
    fill(&e, "quiet", n).await;
    fill(&e, "commanded", n).await;
    let all = Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None };
    e.set_tiering("commanded", all.clone()).await.unwrap();
    e.apply_policies("commanded").await.unwrap();
    let want = e.store_info("commanded").await.unwrap();
    assert!(want.archives > 4, "more than one step's worth of archives: {want:?}");
    e.set_tiering("quiet", all).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = e.store_info("quiet").await.unwrap();
        if (got.index_objects == want.index_objects && got.archives > 0) || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // (How many archives depends on where the steps fell.)
    assert_eq!(got.index_objects, want.index_objects, "sealed in the background as on command: {got:?} against {want:?}");
    assert!(got.archives > 4, "{got:?}");
    same_reads(&e, "quiet", "commanded", 0, n).await;
}

async fn sealing_stays_out_of_the_window_and_retention_drops_archives(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(config());
    fill(&e, "w", 300).await;
    fill(&e, "twin", 300).await;
    e.set_tiering("w", Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None }).await.unwrap();
    e.apply_policies("w").await.unwrap();
    // Nothing the idempotency window covers (the last 50 events) is sealed:
    // a retry of a batch in it is still recognised.
    let info = e.store_info("w").await.unwrap();
    assert!(info.archives > 0);
    let again = e.append("w", batch((260..270).map(event).collect())).await.unwrap();
    assert!(again.deduplicated && again.first_seq == 260, "{again:?}");
    for t in ["w", "twin"] {
        e.append(t, batch((300..310).map(event).collect())).await.unwrap();
    }
    // Retention through archives: whole ones go, reads from the point are the twin's.
    for t in ["w", "twin"] {
        e.set_retention(t, Retention { truncate_before: Some(130), max_age_ms: None }).await.unwrap();
        e.apply_policies(t).await.unwrap();
    }
    let after = e.store_info("w").await.unwrap();
    assert!(after.archives < info.archives, "archives before 130 were dropped: {info:?} then {after:?}");
    let r = store_read(&e, "w", 129, None, None).await;
    assert!(matches!(r, Err(ReadError::Truncated { first_seq: 130, .. })), "{r:?}");
    same_reads(&e, "w", "twin", 130, 310).await;
    // A cold node agrees, and the policy reads back.
    let cold = fx.engine(config());
    same_reads(&cold, "w", "twin", 130, 310).await;
    assert_eq!(cold.tiering("w").await.unwrap().seal_before, Some(i64::MAX as u64));
    let r = e.set_tiering("w", Tiering { seal_before: None, seal_after_ms: Some(0) }).await;
    assert!(r.is_err(), "seal_after_ms 0 is refused");
}

/// Sealing and the reads of archives under injected storage errors (5% of
/// requests, and creates that landed but answered an error): what is read
/// is the twin's, errors are retried, nothing is sealed twice or lost.
async fn sealing_and_reading_archives_ride_out_storage_errors(b: Backend) {
    use cairn_engine::testing::{FaultStore, Faults};
    let fx = Fixture::new(b);
    let clean = fx.engine(config());
    fill(&clean, "f", 300).await;
    fill(&clean, "twin", 300).await;
    let fault = FaultStore::new(fx.store.clone(), 7);
    let faulty = Engine::new(fault.clone(), config());
    fault.set(Faults { error: 0.05, create_landed_then_error: 0.1, latency: Duration::from_millis(1), ..Faults::default() });
    let t = Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None };
    // A failed step is retried by the next call, as by the next commit.
    let mut sealed = false;
    for _ in 0..10 {
        let set = faulty.set_tiering("f", t.clone()).await.is_ok();
        if set && faulty.apply_policies("f").await.is_ok() && faulty.store_info("f").await.is_ok_and(|i| i.archives >= 3) {
            sealed = true;
            break;
        }
    }
    assert!(sealed, "sealed in the end");
    for (from, tag) in [(0, None), (41, None), (0, Some(("flag", "rare"))), (100, Some(("k", "2")))] {
        assert_eq!(store_read(&faulty, "f", from, tag, None).await.unwrap(), store_read(&clean, "twin", from, tag, None).await.unwrap(), "from {from} tag {tag:?}");
    }
    for s in ["s1", "s4"] {
        for dir in [Direction::Forward, Direction::Backward] {
            assert_eq!(stream_read(&faulty, "f", s, None, dir, None).await.unwrap(), stream_read(&clean, "twin", s, None, dir, None).await.unwrap(), "{s} {dir:?}");
        }
    }
    assert!(fault.counts.errors.load(std::sync::atomic::Ordering::Relaxed) > 0, "errors were injected");
    fault.set(Faults::default());
    // And a cold, clean node reads the same.
    assert_eq!(store_read(&fx.engine(config()), "f", 0, None, None).await.unwrap(), store_read(&clean, "twin", 0, None, None).await.unwrap());
}

/// A cold tag read over sealed history: each archive opens with one exact
/// GET of its footer (the manifest says where it starts) and one posting
/// page, never the 122 KiB-per-100 k-streams space filter, which has a
/// section of its own past 4 KiB; a stream read then fetches it once.
#[tokio::test]
async fn a_tag_read_fetches_footers_and_postings_only() {
    use futures::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
    let counting = cairn_engine::testing::CountingStore::new(memory.clone());
    let cfg = || EngineConfig { archive_events: 10_000, ..config() };
    let e = Engine::new(counting.clone(), cfg());
    e.create_store("w").await.unwrap();
    // 6,000 streams in one archive: a filter of 7.3 KiB.
    let wide = |i: u64| NewEvent { stream: format!("order-{i}"), tags: if i % 1000 == 1 { vec![("flag".into(), "rare".into())] } else { vec![] }, ..event(i) };
    for c in 0..60 {
        e.append("w", batch((c * 100..c * 100 + 100).map(wide).collect())).await.unwrap();
    }
    e.set_tiering("w", Tiering { seal_before: Some(5_900), seal_after_ms: None }).await.unwrap();
    e.apply_policies("w").await.unwrap();
    e.shutdown().await;
    let cold = Engine::new(counting.clone(), cfg());
    let info = cold.store_info("w").await.unwrap();
    assert!(info.archives >= 1, "{info:?}");
    let archives = info.archives as u64;
    counting.reset();
    let rare = store_read(&cold, "w", 0, Some(("flag", "rare")), None).await.unwrap();
    assert_eq!(rare.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..6_000).filter(|i| i % 1000 == 1).collect::<Vec<_>>());
    let (requests, bytes) = counting.count("get", Some("arc"));
    assert_eq!(requests, 2 * archives, "a footer and a posting page an archive");
    // Exactly each archive's footer and trailer, and the value's pages.
    let mut want = 0;
    for meta in memory.list(None).collect::<Vec<_>>().await {
        let meta = meta.unwrap();
        if !meta.location.as_ref().ends_with(".arc") {
            continue;
        }
        let whole = memory.get(&meta.location).await.unwrap().bytes().await.unwrap();
        let t = cairn_format::archive::decode_archive_trailer(&whole[whole.len() - 32..], "arc").unwrap();
        let f = cairn_format::archive::decode_archive_footer(&whole[t.footer_offset as usize..], t.footer_offset, "arc").unwrap();
        assert!(matches!(f.space_filter, cairn_format::archive::SpaceFilter::At { .. }), "a filter over 6,000 streams has a section");
        let pages = &f.posting_pages[f.posting_pages_for(&cairn_format::archive::Key::Tag("flag".into()), "rare", None)];
        want += (whole.len() as u64 - t.footer_offset) + pages.iter().map(|p| u64::from(p.len)).sum::<u64>();
    }
    assert_eq!(bytes, want, "footers and posting pages, nothing else");
    // A stream read needs the filter: fetched once, then kept.
    counting.reset();
    assert_eq!(stream_read(&cold, "w", "order-17", None, Direction::Forward, None).await.unwrap().len(), 1);
    let (first, _) = counting.count("get", Some("arc"));
    counting.reset();
    assert_eq!(stream_read(&cold, "w", "order-18", None, Direction::Forward, None).await.unwrap().len(), 1);
    let (second, _) = counting.count("get", Some("arc"));
    assert!(second < first, "the filter is kept: {second} GETs, then {first}");
}

/// A cold scan of recent segments fetches each one's footer core (blocks
/// and tags, the last `core_len` bytes), not its stream directory and
/// filters: a tag read that matches nothing fetches the cores and nothing else.
#[tokio::test]
async fn a_tag_read_over_segments_fetches_their_cores_only() {
    use futures::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
    let counting = cairn_engine::testing::CountingStore::new(memory.clone());
    let cfg = || EngineConfig { max_recent_segments: 1_000, ..test_config() };
    let e = Engine::new(counting.clone(), cfg());
    e.create_store("c").await.unwrap();
    let wide = |i: u64| NewEvent { stream: format!("order-{i}"), ..event(i) };
    for c in 0..20 {
        e.append("c", batch((c * 200..c * 200 + 200).map(wide).collect())).await.unwrap();
    }
    e.shutdown().await;
    let (mut cores, mut footers) = (0u64, 0u64);
    for meta in memory.list(None).collect::<Vec<_>>().await {
        let meta = meta.unwrap();
        if meta.location.as_ref().ends_with(".seg") {
            let whole = memory.get(&meta.location).await.unwrap().bytes().await.unwrap();
            cores += u64::from(cairn_format::segment::core_tail_len(&whole));
            let t = cairn_format::segment::decode_trailer(&whole[whole.len() - 32..], "seg").unwrap();
            footers += t.tail_len();
        }
    }
    let cold = Engine::new(counting.clone(), cfg());
    counting.reset();
    assert!(store_read(&cold, "c", 0, Some(("flag", "absent")), None).await.unwrap().is_empty());
    let (requests, bytes) = counting.count("get", Some("seg"));
    assert_eq!((requests, bytes), (20, cores), "one GET of each core");
    assert!(cores * 4 < footers, "cores {cores} bytes of footers' {footers}");
    // Stream reads still have the whole footer; the rest of the store reads as before.
    assert_eq!(stream_read(&cold, "c", "order-17", None, Direction::Forward, None).await.unwrap().len(), 1);
    assert_eq!(store_read(&cold, "c", 0, None, None).await.unwrap().len(), 4_000);
    assert_eq!(store_read(&cold, "c", 0, Some(("k", "1")), None).await.unwrap().len(), (0..4_000).filter(|i| i % 3 == 1).count());
}

/// An archive indexes its 32 most frequent tag keys: a read of a key it
/// does not index decodes the whole archive and keeps the key's events,
/// exactly those, in seq order.
#[tokio::test]
async fn a_tag_key_no_archive_indexes_is_read_from_whole_archives() {
    let fx = Fixture::new(Backend::Memory);
    let e = fx.engine(config());
    e.create_store("w").await.unwrap();
    // 40 keys as frequent as each other, one on every event: 8 of them are
    // not indexed in an archive of 40 events.
    let wide = |i: u64| NewEvent { stream: format!("s{}", i % 10), tags: vec![(format!("key{}", i % 40), ((i / 40) % 2).to_string())], ..NewEvent::json("A", "{}") };
    for c in 0..30 {
        e.append("w", batch((c * 10..c * 10 + 10).map(wide).collect())).await.unwrap();
    }
    e.set_tiering("w", Tiering { seal_before: Some(i64::MAX as u64), seal_after_ms: None }).await.unwrap();
    e.apply_policies("w").await.unwrap();
    assert!(e.store_info("w").await.unwrap().archives >= 3);
    let cold = fx.engine(config());
    for k in 0..40u64 {
        let got: Vec<u64> = store_read(&cold, "w", 0, Some((&format!("key{k}"), "1")), None).await.unwrap().iter().map(|r| r.seq).collect();
        let want: Vec<u64> = (0..300).filter(|i| i % 40 == k && (i / 40) % 2 == 1).collect();
        assert_eq!(got, want, "key{k}");
    }
}
