#![allow(clippy::unwrap_used)]
//! The reader over real files and an object store: the esdb seed's example,
//! groupings, reads that fetch only what they need, and clear errors.

use std::sync::Arc;

use bytes::Bytes;
use cairn_archive::{write_file, Archive, ArchiveError, ArchiveOptions, ArchivedEvent, Direction, Key};
use cairn_format::archive::ArchiveBuilder;
use cairn_format::block::{Codec, Event};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

fn event(seq: u64, stream: &str, revision: u64, ty: &str, ts: i64, tags: &[(&str, &str)], data: &str) -> ArchivedEvent {
    ArchivedEvent {
        seq,
        event: Event {
            stream: stream.into(),
            revision,
            event_type: ty.into(),
            timestamp: ts,
            id: None,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            binary: false,
            data: Bytes::copy_from_slice(data.as_bytes()),
        },
    }
}

/// The seed's events, in its order: (customer, timestamp in s, type, data).
const SEED: [(&str, i64, &str, &str); 14] = [
    ("1", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
    ("1", 1403534920, "click", r#"{"button_text":"Checkout"}"#),
    ("1", 1403534921, "page", r#"{"url":"http://mysite.com/checkout"}"#),
    ("1", 1403534923, "purchase", r#"{"total":"42.99"}"#),
    ("1", 1403534923, "page", r#"{"url":"http://mysite.com/thankyou"}"#),
    ("2", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
    ("2", 1403534920, "click", r#"{"button_text":"About"}"#),
    ("2", 1403534921, "page", r#"{"url":"http://mysite.com/about"}"#),
    ("3", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
    ("3", 1403534920, "click", r#"{"button_text":"About"}"#),
    ("3", 1403534921, "page", r#"{"url":"http://mysite.com/about"}"#),
    ("3", 1403534922, "click", r#"{"button_text":"Checkout"}"#),
    ("3", 1403534923, "purchase", r#"{"total":"126.99"}"#),
    ("3", 1403534923, "page", r#"{"url":"http://mysite.com/thankyou"}"#),
];

fn seed_archive(opts: ArchiveOptions) -> Vec<u8> {
    let mut b = ArchiveBuilder::new(opts).unwrap();
    let mut revs = std::collections::HashMap::new();
    for (seq, (c, ts, ty, data)) in SEED.iter().enumerate() {
        let r = revs.entry(*c).or_insert(0u64);
        b.add(event(seq as u64, c, *r, ty, ts * 1000, &[("type", ty), ("customer", c)], data));
        *r += 1;
    }
    b.finish().unwrap().bytes
}

fn data(events: &[ArchivedEvent]) -> Vec<String> {
    events.iter().map(|e| String::from_utf8(e.event.data.to_vec()).unwrap()).collect()
}

#[tokio::test]
async fn the_esdb_seed_example_from_a_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("activity.arc");
    write_file(&file, &seed_archive(ArchiveOptions { indexes: vec![Key::Type], ..ArchiveOptions::default() })).unwrap();
    let db = Archive::open_file(&file).await.unwrap();
    assert_eq!(db.footer().event_count, 14);
    assert_eq!(db.footer().space_count, 3);

    // Customer 1's activity, newest first, as the seed prints it.
    let one = db.space("1").await.unwrap().unwrap();
    let activity = db.scan(&one, None, Direction::Backward).unwrap().collect().await.unwrap();
    assert_eq!(
        data(&activity),
        [r#"{"url":"http://mysite.com/thankyou"}"#, r#"{"total":"42.99"}"#, r#"{"url":"http://mysite.com/checkout"}"#, r#"{"button_text":"Checkout"}"#, r#"{"url":"http://mysite.com/"}"#]
    );
    // Same timestamp: seq decides (the purchase was appended first).
    assert_eq!(activity[1].seq, 3);
    let forward = db.scan(&one, None, Direction::Forward).unwrap().collect().await.unwrap();
    assert_eq!(forward.iter().rev().cloned().collect::<Vec<_>>(), activity);
    assert!(forward.iter().all(|e| &*e.event.stream == "1"));
    assert_eq!(forward.iter().map(|e| e.event.revision).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    // Just customer 1's purchases.
    let purchases = db.scan_index(&one, &Key::Type, "purchase", Direction::Forward).await.unwrap().collect().await.unwrap();
    assert_eq!(data(&purchases), [r#"{"total":"42.99"}"#]);

    // Customer 3's clicks, newest first.
    let three = db.space("3").await.unwrap().unwrap();
    let clicks = db.scan_index(&three, &Key::Type, "click", Direction::Backward).await.unwrap().collect().await.unwrap();
    assert_eq!(data(&clicks), [r#"{"button_text":"Checkout"}"#, r#"{"button_text":"About"}"#]);
    assert_eq!(clicks.iter().map(|e| e.event.timestamp).collect::<Vec<_>>(), [1403534922000, 1403534920000]);

    // Every purchase of the archive; nothing for a type or a customer it lacks.
    let all = db.scan_value(&Key::Type, "purchase", Direction::Forward).await.unwrap().collect().await.unwrap();
    assert_eq!(data(&all), [r#"{"total":"42.99"}"#, r#"{"total":"126.99"}"#]);
    assert!(db.scan_value(&Key::Type, "refund", Direction::Forward).await.unwrap().collect().await.unwrap().is_empty());
    assert!(db.scan_index(&three, &Key::Type, "refund", Direction::Forward).await.unwrap().collect().await.unwrap().is_empty());
    assert!(db.space("4").await.unwrap().is_none());
    assert_eq!(db.spaces().await.unwrap().iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
}

#[tokio::test]
async fn spaces_by_tag_and_groupings_within_them() {
    let opts = ArchiveOptions { space: Key::Tag("customer".into()), grouping: Some(Key::Type), indexes: vec![Key::Tag("type".into())], ..ArchiveOptions::default() };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("archives/activity.arc");
    store.put(&path, seed_archive(opts).into()).await.unwrap();
    let db = Archive::open(store, path).await.unwrap();
    let three = db.space("3").await.unwrap().unwrap();
    assert_eq!(three.space.groups.iter().map(|g| (g.value.as_str(), g.count)).collect::<Vec<_>>(), [("click", 2), ("page", 3), ("purchase", 1)]);
    let clicks = db.scan(&three, Some("click"), Direction::Forward).unwrap().collect().await.unwrap();
    assert_eq!(data(&clicks), [r#"{"button_text":"About"}"#, r#"{"button_text":"Checkout"}"#]);
    // The whole space: grouping first, then time.
    let all = db.scan(&three, None, Direction::Forward).unwrap().collect().await.unwrap();
    assert_eq!(all.iter().map(|e| &*e.event.event_type).collect::<Vec<_>>(), ["click", "click", "page", "page", "page", "purchase"]);
    let purchases = db.scan_index(&three, &Key::Tag("type".into()), "purchase", Direction::Forward).await.unwrap().collect().await.unwrap();
    assert_eq!(data(&purchases), [r#"{"total":"126.99"}"#]);
    // Clear errors for what the archive does not have.
    let e = db.scan(&three, Some("refund"), Direction::Forward).err().unwrap();
    assert!(matches!(e, ArchiveError::Invalid(_)), "{e}");
    let e = db.scan_index(&three, &Key::Type, "page", Direction::Forward).await.err().unwrap();
    assert!(e.to_string().contains("no index"), "{e}");
}

/// 60,000 events in 3,000 streams, so that the directory and the postings
/// span several pages and a posting list several entries.
fn big(codec: Codec, inline_share: f64) -> (Vec<ArchivedEvent>, Vec<u8>) {
    let mut events = Vec::new();
    let mut revs = vec![0u64; 3000];
    for seq in 0..60_000u64 {
        let s = ((seq * 7919) % 3000) as usize;
        let tagged = seq % 1000 == 7;
        let tags: Vec<(&str, &str)> = if tagged { vec![("flag", "rare")] } else { vec![("flag", "common")] };
        let ty = ["page", "click", "purchase"][(seq % 3) as usize];
        events.push(event(seq, &format!("customer-{s:05}-with-a-longer-name"), revs[s], ty, 1_000_000 + seq as i64, &tags, &format!("{{\"n\":{seq},\"pad\":\"{}\"}}", "x".repeat((seq % 50) as usize))));
        revs[s] += 1;
    }
    let opts = ArchiveOptions { indexes: vec![Key::Type, Key::Tag("flag".into())], block_bytes: 4096, data_codec: codec, inline_share, ..ArchiveOptions::default() };
    let mut b = ArchiveBuilder::new(opts).unwrap();
    for e in &events {
        b.add(e.clone());
    }
    (events, b.finish().unwrap().bytes)
}

#[tokio::test]
async fn reads_fetch_only_the_blocks_they_need() {
    reads_fetch_only_what_they_need(0.0).await;
}

/// With the rare value inlined, reading it reads one posting page.
#[tokio::test]
async fn an_inlined_value_is_read_from_its_postings_alone() {
    reads_fetch_only_what_they_need(0.125).await;
}

async fn reads_fetch_only_what_they_need(inline_share: f64) {
    let (events, bytes) = big(Codec::Zstd, inline_share);
    let size = bytes.len() as u64;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("big.arc");
    store.put(&path, bytes.into()).await.unwrap();
    let db = Archive::open_sized(store.clone(), path.clone(), size).await.unwrap();
    assert!(db.footer().space_pages.len() > 1 && db.footer().posting_pages.len() > 1, "several pages");
    let opened = db.fetched();
    assert_eq!(opened.requests, 1, "opened with one range GET");
    assert_eq!(db.opening(), opened);

    // One stream: its 20 events, its blocks only.
    let name = "customer-01234-with-a-longer-name";
    let s = db.space(name).await.unwrap().unwrap();
    let got = db.scan(&s, None, Direction::Forward).unwrap().collect().await.unwrap();
    let want: Vec<&ArchivedEvent> = events.iter().filter(|e| &*e.event.stream == name).collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    let one = db.fetched();
    // A directory page and the stream's block or two.
    assert!(one.bytes - opened.bytes < size / 40, "one stream of 3,000 read {} of {size} bytes", one.bytes - opened.bytes);
    assert!(one.requests - opened.requests <= 3, "{one:?}");

    // The rare value over the whole archive: 60 events, in archive order.
    let before = db.fetched();
    let rare = db.scan_value(&Key::Tag("flag".into()), "rare", Direction::Forward).await.unwrap().collect().await.unwrap();
    let mut want: Vec<u64> = events.iter().filter(|e| e.event.tags[0].1 == "rare").map(|e| e.seq).collect();
    let mut got: Vec<u64> = rare.iter().map(|e| e.seq).collect();
    assert_eq!(got.len(), 60);
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    let after = db.fetched();
    let read = after.bytes - before.bytes;
    if inline_share > 0.0 {
        assert_eq!(after.requests - before.requests, 1, "one posting page");
        assert!(read < size / 100, "an inlined value on 0.1% of events read {read} of {size} bytes");
    } else {
        // The 60 are in three streams: their blocks come in a few GETs.
        assert!(after.requests - before.requests > 1, "a posting page, then the events' blocks");
        assert!(read < size / 4, "a value on 0.1% of events read {read} of {size} bytes");
    }

    // A common value with a posting list longer than one entry, backwards.
    let common = db.scan_index(&s, &Key::Tag("flag".into()), "common", Direction::Backward).await.unwrap().collect().await.unwrap();
    assert_eq!(common.len(), want_common(&events, name));
    assert!(common.windows(2).all(|w| w[0].event.timestamp >= w[1].event.timestamp));
    let clicks = db.scan_value(&Key::Type, "click", Direction::Backward).await.unwrap().collect().await.unwrap();
    assert_eq!(clicks.len(), 20_000);

    // A full scan, both ways, gives every event once.
    let all = db.scan_all(Direction::Forward).collect().await.unwrap();
    assert_eq!(all.len(), events.len());
    let back = db.scan_all(Direction::Backward).collect().await.unwrap();
    assert_eq!(back.iter().rev().map(|e| e.seq).collect::<Vec<_>>(), all.iter().map(|e| e.seq).collect::<Vec<_>>());
    // Opened without a known size too (HEAD, then the tail).
    let again = Archive::open(store, path).await.unwrap();
    assert_eq!(again.fetched().requests, 2);
    assert_eq!(again.opening(), again.fetched());
    assert_eq!(again.footer(), db.footer());
}

fn want_common(events: &[ArchivedEvent], stream: &str) -> usize {
    events.iter().filter(|e| &*e.event.stream == stream && e.event.tags[0].1 == "common").count()
}

#[tokio::test]
async fn what_is_not_an_archive_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Archive::open_file(dir.path().join("nope.arc")).await.err().unwrap();
    assert!(missing.to_string().contains("nope.arc"), "{missing}");
    let junk = dir.path().join("junk.arc");
    std::fs::write(&junk, b"this is not an archive, whatever its name says, and it is long enough").unwrap();
    let e = Archive::open_file(&junk).await.err().unwrap();
    assert!(matches!(e, ArchiveError::Corrupt(_)), "{e}");
    std::fs::write(&junk, b"short").unwrap();
    assert!(matches!(Archive::open_file(&junk).await.err().unwrap(), ArchiveError::Corrupt(_)));
    // A cut archive is refused, however it is cut.
    let (_, bytes) = big(Codec::None, 0.125);
    for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2, 100] {
        std::fs::write(&junk, &bytes[..cut]).unwrap();
        assert!(Archive::open_file(&junk).await.is_err(), "cut at {cut}");
    }
    // A flipped byte in a block is found when the block is read.
    let mut bad = bytes.clone();
    bad[20] ^= 0x40;
    std::fs::write(&junk, &bad).unwrap();
    let db = Archive::open_file(&junk).await.unwrap();
    let e = db.scan_all(Direction::Forward).collect().await.err().unwrap();
    assert!(e.to_string().contains("checksum"), "{e}");
}

/// Past 4 KiB, the space filter has a section of its own: opening (one
/// exact GET) and tag reads never fetch it; the first space look-up does,
/// once.
#[tokio::test]
async fn a_large_space_filter_is_fetched_only_by_space_look_ups() {
    let streams = 8_000u64;
    let mut b = ArchiveBuilder::new(ArchiveOptions { indexes: vec![Key::Type, Key::Tag("flag".into())], ..ArchiveOptions::default() }).unwrap();
    for seq in 0..2 * streams {
        let tags: &[(&str, &str)] = if seq % 997 == 5 { &[("flag", "rare")] } else { &[] };
        b.add(event(seq, &format!("order-{}", seq % streams), seq / streams, "placed", 1_000 + seq as i64, tags, "{}"));
    }
    let enc = b.finish().unwrap();
    let cairn_archive::SpaceFilter::At { len: filter_len, .. } = enc.footer.space_filter else { panic!("a filter over 8,000 spaces is not inline") };
    assert!(u64::from(filter_len) > 8_000 * 10 / 8, "10 bits a space");
    let size = enc.bytes.len() as u64;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from("wide.arc");
    store.put(&path, enc.bytes.into()).await.unwrap();

    let db = Archive::open_at(store.clone(), path.clone(), size, enc.footer_offset).await.unwrap();
    assert_eq!(db.fetched().requests, 1);
    assert_eq!(db.fetched().bytes, size - enc.footer_offset, "exactly the footer and trailer");
    let before = db.fetched();
    let rare = db.scan_value(&Key::Tag("flag".into()), "rare", Direction::Forward).await.unwrap().collect().await.unwrap();
    assert_eq!(rare.len() as u64, (0..2 * streams).filter(|s| s % 997 == 5).count() as u64);
    let pages: u64 = db.footer().posting_pages[db.footer().posting_pages_for(&Key::Tag("flag".into()), "rare", None)].iter().map(|p| u64::from(p.len)).sum();
    assert_eq!((db.fetched().requests - before.requests, db.fetched().bytes - before.bytes), (1, pages), "the value's posting page, not the filter");

    let s = db.space("order-17").await.unwrap().unwrap();
    assert_eq!(s.space.count, 2);
    let first = db.fetched();
    assert_eq!(first.requests - before.requests - 1, 2, "the tag read's page, then the filter and a directory page");
    assert!(db.space("order-18").await.unwrap().is_some());
    assert_eq!(db.fetched().requests, first.requests + 1, "the filter is kept: one directory page");
    let absent = db.fetched();
    assert!(db.space("not-a-stream").await.unwrap().is_none());
    assert!(db.fetched().requests - absent.requests <= 1, "the kept filter rules out what is absent (or a false positive reads one page)");

    // A wrong footer offset is an error, not a wrong archive.
    assert!(Archive::open_at(store.clone(), path.clone(), size, enc.footer_offset - 1).await.is_err());
    assert!(Archive::open_at(store, path, size, size).await.is_err());
}

/// An archive written by the first format version (its space filter in the
/// footer), committed as written: it still opens and reads the same.
#[tokio::test]
async fn a_version_1_archive_still_reads() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1.arc");
    let db = Archive::open_file(&file).await.unwrap();
    assert!(matches!(db.footer().space_filter, cairn_archive::SpaceFilter::Inline(_)));
    assert_eq!((db.footer().first_seq, db.footer().end_seq, db.footer().event_count), (100, 160, 60));
    // Written from 60 events: event i in customer-(i mod 6), revision i / 6,
    // type page/click/purchase by i mod 3, tag customer=c(i mod 6) when i mod 5 is 0, data {"n":i}.
    let c3 = db.space("customer-3").await.unwrap().unwrap();
    let all = db.scan(&c3, None, Direction::Forward).unwrap().collect().await.unwrap();
    let want: Vec<String> = (0..60).filter(|i| i % 6 == 3).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(data(&all), want);
    assert!(all.iter().enumerate().all(|(r, e)| e.event.revision == r as u64 && e.seq == 100 + 3 + 6 * r as u64));
    let clicks = db.scan_index(&c3, &Key::Type, "page", Direction::Backward).await.unwrap().collect().await.unwrap();
    assert_eq!(data(&clicks), ["{\"n\":57}", "{\"n\":51}", "{\"n\":45}", "{\"n\":39}", "{\"n\":33}", "{\"n\":27}", "{\"n\":21}", "{\"n\":15}", "{\"n\":9}", "{\"n\":3}"]);
    let tagged = db.scan_value(&Key::Tag("customer".into()), "c0", Direction::Forward).await.unwrap().collect().await.unwrap();
    let mut seqs: Vec<u64> = tagged.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [100, 130]);
    assert!(db.space("customer-9").await.unwrap().is_none());
}
