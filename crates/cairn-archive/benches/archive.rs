#![allow(clippy::unwrap_used)]
//! Archive benchmarks: write and scan speed, per-event and per-index-entry
//! overhead against the esdb seed's claim (3 bytes an event, 17 an index
//! entry), and what reads fetch. `cargo bench -p cairn-archive --bench
//! archive`; `CAIRN_BENCH_EVENTS` (default 1,000,000) sets the size. The
//! baseline in the same run is a Cairn segment of the same events.
//!
//! The workload is the seed's: website activity of 10,000 customers (one
//! stream each), page views, clicks and purchases, a secondary index on the
//! event type, timestamps a few ms apart as a node assigns them.

use std::time::Instant;

use bytes::Bytes;
use cairn_archive::{write_file, Archive, ArchivedEvent, Direction, Key};
use cairn_format::archive::{ArchiveBuilder, ArchiveOptions};
use cairn_format::block::{decode_block, Codec, Event};
use cairn_format::segment::{encode_segment, EncodeOptions};

mod common;
use common::Rng;

const CUSTOMERS: u64 = 10_000;
const PAGES: [&str; 6] = ["", "about", "checkout", "thankyou", "pricing", "blog/archives-on-object-storage"];
const BUTTONS: [&str; 4] = ["Checkout", "About", "Sign up", "Add to cart"];

fn workload(n: u64, ids: bool) -> Vec<ArchivedEvent> {
    let mut rng = Rng(42);
    let mut revs = vec![0u64; CUSTOMERS as usize];
    let mut ts = 1_403_534_919_000i64;
    (0..n)
        .map(|seq| {
            let c = rng.below(CUSTOMERS) as usize;
            ts += rng.below(4) as i64;
            let roll = rng.below(100);
            let (ty, data) = if roll < 70 {
                ("page", format!(r#"{{"url":"http://mysite.com/{}"}}"#, PAGES[rng.below(6) as usize]))
            } else if roll < 95 {
                ("click", format!(r#"{{"button_text":"{}"}}"#, BUTTONS[rng.below(4) as usize]))
            } else {
                ("purchase", format!(r#"{{"total":"{}.{:02}"}}"#, rng.below(500), rng.below(100)))
            };
            let id = ids.then(|| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&rng.next().to_le_bytes());
                b[8..].copy_from_slice(&rng.next().to_le_bytes());
                b
            });
            let revision = revs[c];
            revs[c] += 1;
            ArchivedEvent {
                seq,
                event: Event {
                    stream: format!("customer-{c}").into(),
                    revision,
                    event_type: ty.into(),
                    timestamp: ts,
                    id,
                    tags: Vec::new(),
                    binary: false,
                    data: Bytes::from(data),
                },
            }
        })
        .collect()
}

fn build(events: &[ArchivedEvent], opts: ArchiveOptions) -> (cairn_format::archive::EncodedArchive, f64) {
    let started = Instant::now();
    let mut b = ArchiveBuilder::new(opts).unwrap();
    for e in events {
        b.add(e.clone());
    }
    let enc = b.finish().unwrap();
    (enc, started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("CAIRN_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let events = workload(n, false);
    let data: u64 = events.iter().map(|e| e.event.data.len() as u64).sum();
    println!("workload: {n} events of {CUSTOMERS} customers, {data} bytes of data ({:.1} B an event), an index on the type", data as f64 / n as f64);

    // Overhead, as the seed counts it: data stored as it is, everything else
    // is overhead (metadata columns, framing, directory, postings, footer).
    // No inlining here: the seed's index holds positions, not events.
    let raw = ArchiveOptions { indexes: vec![Key::Type], data_codec: Codec::None, inline_share: 0.0, ..ArchiveOptions::default() };
    let (enc, _) = build(&events, raw.clone());
    let unindexed = build(&events, ArchiveOptions { indexes: vec![], ..raw.clone() }).0;
    let per_event = (unindexed.bytes.len() as f64 - data as f64) / n as f64;
    let per_entry = enc.index_bytes as f64 / enc.index_entries as f64;
    println!("overhead, data stored raw: {per_event:.2} B an event (seed: 3), {per_entry:.2} B an index entry (seed: 17); {} index entries in {} bytes", enc.index_entries, enc.index_bytes);
    println!(
        "  an event in one index: {:.2} B (seed: 20), {:.2}x smaller",
        per_event + per_entry,
        20.0 / (per_event + per_entry)
    );
    let framing = unindexed.bytes.len() as u64 - data - unindexed.columns.0.iter().sum::<u64>();
    let parts: Vec<String> = cairn_format::archive::COLUMNS
        .iter()
        .zip(unindexed.columns.0)
        .filter(|(_, b)| *b > 0)
        .map(|(c, b)| format!("{c} {:.2}", b as f64 / n as f64))
        .chain(std::iter::once(format!("frames, directory, footer {:.2}", framing as f64 / n as f64)))
        .collect();
    println!("  where it goes, B an event: {}", parts.join(", "));
    let with_ids = workload(n, true);
    let ided = build(&with_ids, ArchiveOptions { indexes: vec![], ..raw.clone() }).0;
    println!("  with a random 16-byte id on every event: {:.2} B an event", (ided.bytes.len() as f64 - data as f64) / n as f64);

    // Sizes and speeds with the default codecs, against a segment.
    let (enc, secs) = build(&events, ArchiveOptions { indexes: vec![Key::Type], ..ArchiveOptions::default() });
    let plain: Vec<Event> = events.iter().map(|e| e.event.clone()).collect();
    let started = Instant::now();
    let seg = encode_segment(&plain, &EncodeOptions::default()).unwrap();
    let seg_secs = started.elapsed().as_secs_f64();
    println!(
        "  default inline share: {} events inlined (the purchases), postings {} bytes ({:.2} B an event)",
        enc.inlined,
        enc.index_bytes,
        enc.index_bytes as f64 / n as f64
    );
    println!(
        "write: archive {:.0} k events/s ({:.1} MB/s of data), {} bytes ({:.2} B an event); segment {:.0} k events/s, {} bytes ({:.2} B an event); archive/segment speed {:.2}x, size {:.2}x",
        n as f64 / secs / 1e3,
        data as f64 / secs / 1e6,
        enc.bytes.len(),
        enc.bytes.len() as f64 / n as f64,
        n as f64 / seg_secs / 1e3,
        seg.bytes.len(),
        seg.bytes.len() as f64 / n as f64,
        seg_secs / secs,
        enc.bytes.len() as f64 / seg.bytes.len() as f64,
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("activity.arc");
    write_file(&file, &enc.bytes).unwrap();
    let db = Archive::open_file(&file).await.unwrap();
    let started = Instant::now();
    let mut scan = db.scan_all(Direction::Forward);
    let mut count = 0u64;
    while let Some(chunk) = scan.next_chunk().await.unwrap() {
        count += chunk.len() as u64;
    }
    let scan_secs = started.elapsed().as_secs_f64();
    assert_eq!(count, n);
    let started = Instant::now();
    let mut seg_count = 0u64;
    for b in &seg.footer.blocks {
        let frame = &seg.bytes[b.offset as usize..(b.offset + u64::from(b.len)) as usize];
        seg_count += decode_block(frame, b.first_index, "seg").unwrap().len() as u64;
    }
    let seg_scan = started.elapsed().as_secs_f64();
    assert_eq!(seg_count, n);
    println!(
        "scan (local file, every event): archive {:.2} M events/s ({:.0} MB/s of data); segment blocks in memory {:.2} M events/s; archive/segment {:.2}x",
        n as f64 / scan_secs / 1e6,
        data as f64 / scan_secs / 1e6,
        n as f64 / seg_scan / 1e6,
        seg_scan / scan_secs,
    );

    // One customer, and one customer's purchases, from a fresh open.
    let mut latencies = Vec::new();
    let mut fetched = Vec::new();
    for c in 0..200u64 {
        let db = Archive::open_file(&file).await.unwrap();
        let started = Instant::now();
        let s = db.space(&format!("customer-{}", c * 37)).await.unwrap().unwrap();
        let all = db.scan(&s, None, Direction::Backward).unwrap().collect().await.unwrap();
        let purchases = db.scan_index(&s, &Key::Type, "purchase", Direction::Forward).await.unwrap().collect().await.unwrap();
        latencies.push(started.elapsed());
        assert!(purchases.len() <= all.len());
        fetched.push(db.fetched());
    }
    latencies.sort();
    let footer = Archive::open_file(&file).await.unwrap().fetched().bytes;
    let reqs: f64 = fetched.iter().map(|f| f.requests as f64).sum::<f64>() / fetched.len() as f64;
    let bytes: f64 = fetched.iter().map(|f| f.bytes as f64).sum::<f64>() / fetched.len() as f64;
    println!(
        "one customer (~{} events) and its purchases, opened cold: p50 {:.2} ms, p99 {:.2} ms; {reqs:.1} requests, {:.0} KiB fetched (footer {:.0} KiB) of {:.1} MiB",
        n / CUSTOMERS,
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3,
        bytes / 1024.0,
        footer as f64 / 1024.0,
        enc.bytes.len() as f64 / (1 << 20) as f64,
    );
}
