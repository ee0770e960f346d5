#![allow(clippy::unwrap_used)]
//! What a read of one rare tag value touches in a large archive, against a
//! full scan of it: objects (requests) and bytes fetched. `cargo bench -p
//! cairn-archive --bench tags`; `CAIRN_BENCH_EVENTS` (default 10,000,000)
//! events, 0.01% of them tagged `flag:rare`, 100,000 streams, ~100 B of
//! JSON data each, in an in-memory object store, and one stream of 10
//! events spread over the whole history (`needle`), read from the archive
//! and from 10 archives of 1,000,000 events each, as tiering would seal
//! it. `CAIRN_BENCH_BLOCKS` (block sizes, comma-separated) and
//! `CAIRN_BENCH_INLINE` (the share of events that may be inlined; 0 reads
//! the value from its blocks) vary it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cairn_archive::{Archive, ArchivedEvent, Direction, Key};
use cairn_format::archive::{ArchiveBuilder, ArchiveOptions};
use cairn_format::block::Event;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

mod common;
use common::Rng;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("CAIRN_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let blocks: Vec<usize> = std::env::var("CAIRN_BENCH_BLOCKS").ok().map(|v| v.split(',').filter_map(|b| b.parse().ok()).collect()).unwrap_or_else(|| vec![16 << 10]);
    let inline_share: f64 = std::env::var("CAIRN_BENCH_INLINE").ok().and_then(|v| v.parse().ok()).unwrap_or(ArchiveOptions::default().inline_share);
    let mut rng = Rng(7);
    let mut revs = vec![0u64; 100_000];
    let mut rare = 0u64;
    let mut needles = 0u64;
    let events: Vec<ArchivedEvent> = (0..n)
        .map(|seq| {
            let s = (rng.next() % 100_000) as usize;
            let r = rng.next();
            let needle = seq % (n / 10).max(1) == n / 20;
            let tags = if r.is_multiple_of(10_000) {
                rare += 1;
                vec![("flag".to_string(), "rare".to_string())]
            } else {
                Vec::new()
            };
            let (stream, revision) = if needle {
                needles += 1;
                ("needle".to_string(), needles - 1)
            } else {
                revs[s] += 1;
                (format!("order-{s}"), revs[s] - 1)
            };
            ArchivedEvent {
                seq,
                event: Event {
                    stream: stream.into(),
                    revision,
                    event_type: ["OrderPlaced", "OrderPaid", "OrderShipped"][(r % 3) as usize].into(),
                    timestamp: 1_700_000_000_000 + seq as i64 / 2,
                    id: None,
                    tags,
                    binary: false,
                    data: Bytes::from(format!(r#"{{"order":"o-{s}","amount":{}.{:02},"currency":"EUR","items":{},"note":"{:016x}"}}"#, r % 1000, r % 100, 1 + r % 9, r >> 8)),
                },
            }
        })
        .collect();
    println!("{n} events, {rare} tagged flag:rare ({:.4}%)", rare as f64 * 100.0 / n as f64);
    for block_bytes in blocks {
        let started = Instant::now();
        let mut b = ArchiveBuilder::new(ArchiveOptions { indexes: vec![Key::Type, Key::Tag("flag".into())], block_bytes, inline_share, ..ArchiveOptions::default() }).unwrap();
        for e in &events {
            b.add(e.clone());
        }
        let enc = b.finish().unwrap();
        let built = started.elapsed();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("big.arc");
        let size = enc.bytes.len() as u64;
        store.put(&path, enc.bytes.into()).await.unwrap();

        let full = Archive::open_sized(store.clone(), path.clone(), size).await.unwrap();
        let mut scan = full.scan_all(Direction::Forward);
        let mut count = 0;
        while let Some(c) = scan.next_chunk().await.unwrap() {
            count += c.len() as u64;
        }
        assert_eq!(count, n);
        let f = full.fetched();

        let db = Archive::open(store.clone(), path.clone()).await.unwrap();
        let started = Instant::now();
        let s = db.space("needle").await.unwrap().unwrap();
        let got = db.scan(&s, None, Direction::Forward).unwrap().collect().await.unwrap();
        assert_eq!(got.len() as u64, needles);
        println!(
            "  one stream of {needles} events, cold (HEAD, footer, directory page, blocks): {:?}; {:.2} ms in memory; footer cached: {} requests, {} KiB",
            db.fetched(),
            started.elapsed().as_secs_f64() * 1e3,
            db.fetched().requests - db.opening().requests,
            (db.fetched().bytes - db.opening().bytes) / 1024,
        );

        let db = Archive::open_sized(store.clone(), path.clone(), size).await.unwrap();
        let pages = db.footer().posting_pages_for(&Key::Tag("flag".into()), "rare", None);
        let pbytes: u64 = db.footer().posting_pages[pages.clone()].iter().map(|p| u64::from(p.len)).sum();
        let opened = db.fetched();
        println!("  opened: {opened:?}; posting pages for flag:rare: {} ({pbytes} bytes); {} posting pages in all, {} blocks", pages.len(), db.footer().posting_pages.len(), db.footer().blocks.len());
        let started = Instant::now();
        let got = db.scan_value(&Key::Tag("flag".into()), "rare", Direction::Forward).await.unwrap().collect().await.unwrap();
        let took = started.elapsed();
        assert_eq!(got.len() as u64, rare);
        let t = db.fetched();
        println!(
            "blocks of {block_bytes} B, inline share {inline_share}: archive {:.1} MiB ({:.2} B an event), built in {:.1} s; full scan {} requests, {:.1} MiB; tag read {} requests, {:.2} MiB in {:.0} ms: {:.2}% of the bytes, {:.2}% of the requests",
            size as f64 / (1 << 20) as f64,
            size as f64 / n as f64,
            built.as_secs_f64(),
            f.requests,
            f.bytes as f64 / (1 << 20) as f64,
            t.requests,
            t.bytes as f64 / (1 << 20) as f64,
            took.as_secs_f64() * 1e3,
            t.bytes as f64 * 100.0 / f.bytes as f64,
            t.requests as f64 * 100.0 / f.requests as f64,
        );
        // As tiering would seal it: archives of 1,000,000 events each.
        let parts = (n / 1_000_000).max(1) as usize;
        let per = events.len().div_ceil(parts);
        let mut opened = Vec::new();
        for (i, chunk) in events.chunks(per).enumerate() {
            let mut b = ArchiveBuilder::new(ArchiveOptions { indexes: vec![Key::Type, Key::Tag("flag".into())], block_bytes, inline_share, ..ArchiveOptions::default() }).unwrap();
            for e in chunk {
                b.add(e.clone());
            }
            let path = Path::from(format!("part-{i}.arc"));
            store.put(&path, b.finish().unwrap().bytes.into()).await.unwrap();
            opened.push(Archive::open(store.clone(), path).await.unwrap());
        }
        let before: u64 = opened.iter().map(|a| a.fetched().requests).sum();
        let before_bytes: u64 = opened.iter().map(|a| a.fetched().bytes).sum();
        let started = Instant::now();
        let mut found = 0;
        let mut touched = 0;
        for a in &opened {
            if let Some(s) = a.space("needle").await.unwrap() {
                touched += 1;
                found += a.scan(&s, None, Direction::Forward).unwrap().collect().await.unwrap().len() as u64;
            }
        }
        assert_eq!(found, needles);
        let after: u64 = opened.iter().map(|a| a.fetched().requests).sum();
        let after_bytes: u64 = opened.iter().map(|a| a.fetched().bytes).sum();
        println!(
            "  the same stream from {parts} archives of {per} events, footers cached: {} archives touched, {} requests, {} KiB, {:.2} ms in memory (opening them: {before} requests, {} KiB)",
            touched,
            after - before,
            (after_bytes - before_bytes) / 1024,
            started.elapsed().as_secs_f64() * 1e3,
            before_bytes / 1024,
        );
    }
}
