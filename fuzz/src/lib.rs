//! What each fuzz target checks. The targets in `fuzz_targets/` are one line
//! each; the work is here so that `examples/seeds.rs` and the targets share
//! it.
//!
//! Every persisted frame carries a CRC32C, and random bytes almost never
//! pass it, so each decoder is fed the input twice: as it is (the checksum
//! paths), and with the checksums recomputed over the mutated bytes (the
//! parsers behind them). The property everywhere: decoding returns `Ok` or
//! `Err`, never panics, never allocates from an unchecked length; and
//! whatever decodes encodes again to something that decodes the same.

use cairn_format::archive::{decode_archive_block, decode_archive_footer, decode_posting_page, decode_space_page, ArchiveFooter};
use cairn_format::block::{decode_block_events, decode_block_stream, encode_block, Codec, Event, BLOCK_HEADER_LEN};
use cairn_format::bloom::BloomHash;
use cairn_format::index::decode_index_footer;
use cairn_format::manifest::{Boundary, Manifest, Root};
use cairn_format::segment::{decode_footer, decode_trailer, Footer, TRAILER_LEN};

const OBJECT: &str = "fuzz";

/// Recomputes a frame's CRC32C (header bytes 9..13, over the first 9 bytes
/// and the stored payload).
fn fix_frame(frame: &mut [u8]) {
    if frame.len() >= BLOCK_HEADER_LEN {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..9]), &frame[BLOCK_HEADER_LEN..]);
        frame[9..13].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes the footer CRC32C in an object's trailer. Returns false when
/// the trailer's footer length does not fit the object.
fn fix_tail(obj: &mut [u8]) -> bool {
    let Some(start) = raw_tail_start(obj) else { return false };
    let t = obj.len() - TRAILER_LEN;
    let crc = crc32c::crc32c(&obj[start..t]);
    obj[t + 16..t + 20].copy_from_slice(&crc.to_le_bytes());
    true
}

/// Where the tail (footer + trailer) of a whole object starts, by its trailer.
fn tail_start(obj: &[u8]) -> Option<usize> {
    let t = decode_trailer(&obj[obj.len().checked_sub(TRAILER_LEN)?..], OBJECT).ok()?;
    obj.len().checked_sub(usize::try_from(t.tail_len()).ok()?)
}

/// Where the tail starts by the trailer's footer length alone (index
/// objects have their own magic; `decode_index_footer` checks it).
fn raw_tail_start(obj: &[u8]) -> Option<usize> {
    let t = obj.len().checked_sub(TRAILER_LEN)?;
    let footer_len = u32::from_le_bytes([obj[t + 12], obj[t + 13], obj[t + 14], obj[t + 15]]) as usize;
    t.checked_sub(footer_len)
}

/// A segment's footer, read as the engine reads it: the tail at the offset
/// that the manifest names.
fn segment_footer(obj: &[u8]) -> Option<Footer> {
    let start = tail_start(obj)?;
    decode_footer(&obj[start..], Some(start as u64), OBJECT).ok()
}

/// What decodes must encode again, and decode to the same events.
fn roundtrip(events: &[Event]) {
    let again = encode_block(events, Codec::Lz4, 0).expect("decoded events encode");
    let back = decode_block_events(&again, OBJECT).expect("a re-encoded block decodes");
    assert_eq!(back, events, "a block round-trips");
}

fn read_block(frame: &[u8]) {
    let whole = decode_block_events(frame, OBJECT);
    // One stream decoded alone is held to the same checks, and gives that
    // stream's events of the whole block.
    let first = whole.as_ref().ok().and_then(|e| e.first()).map(|e| e.stream.to_string());
    for s in first.iter().map(String::as_str).chain(["no-such-stream"]) {
        match (&whole, decode_block_stream(frame, OBJECT, s)) {
            (Ok(all), Ok(alone)) => {
                let expected: Vec<_> = all.iter().enumerate().filter(|(_, e)| &*e.stream == s).map(|(i, e)| (i as u32, e.clone())).collect();
                assert_eq!(alone, expected, "stream {s} decoded alone");
            }
            (Err(_), Err(_)) => {}
            (w, a) => panic!("the whole block gave {:?}, stream {s} alone {:?}", w.as_ref().map(Vec::len), a.map(|v| v.len())),
        }
    }
    if let Ok(events) = whole {
        roundtrip(&events);
    }
}

/// One block frame.
pub fn block(data: &[u8]) {
    read_block(data);
    let mut f = data.to_vec();
    fix_frame(&mut f);
    read_block(&f);
}

fn read_segment(obj: &[u8]) {
    let Some(footer) = segment_footer(obj) else { return };
    // Every look-up the reader makes on a footer.
    for s in &footer.streams {
        let _ = footer.stream(&s.name);
        let _ = s.last_revision();
    }
    let _ = footer.stream("no-such-stream");
    for t in &footer.tags {
        let _ = footer.tag_blocks(&t.key, &t.value);
    }
    let _ = footer.id_candidates(BloomHash::of(b"id")).count();
    for i in 0..footer.event_count.saturating_add(1).min(4096) {
        let _ = footer.block_of(i);
    }
    // A footer that decodes places its blocks before itself.
    for b in &footer.blocks {
        let frame = &obj[b.offset as usize..(b.offset + u64::from(b.len)) as usize];
        read_block(frame);
    }
}

/// A whole segment object.
pub fn segment(data: &[u8]) {
    read_segment(data);
    let mut obj = data.to_vec();
    if !fix_tail(&mut obj) {
        return;
    }
    if let Some(footer) = segment_footer(&obj) {
        for b in &footer.blocks {
            fix_frame(&mut obj[b.offset as usize..(b.offset + u64::from(b.len)) as usize]);
        }
    }
    read_segment(&obj);
}

fn read_index(obj: &[u8]) {
    let Some(start) = raw_tail_start(obj) else { return };
    let Ok(footer) = decode_index_footer(&obj[start..], Some(start as u64), OBJECT) else { return };
    for seq in [footer.first_seq, footer.end_seq.saturating_sub(1), footer.end_seq, u64::MAX] {
        let _ = footer.segment_of(seq);
    }
    for p in &footer.pages {
        let _ = footer.page_for(&p.first);
        let _ = footer.page_for(&p.last);
        let frame = &obj[p.offset as usize..(p.offset + u64::from(p.len)) as usize];
        if let Ok(page) = cairn_format::index::decode_page(frame, OBJECT) {
            for s in &page {
                let _ = footer.page_for(&s.name);
            }
        }
    }
}

/// A whole index object.
pub fn index(data: &[u8]) {
    read_index(data);
    let mut obj = data.to_vec();
    if !fix_tail(&mut obj) {
        return;
    }
    if let Some(start) = raw_tail_start(&obj) {
        if let Ok(footer) = decode_index_footer(&obj[start..], Some(start as u64), OBJECT) {
            for p in &footer.pages {
                fix_frame(&mut obj[p.offset as usize..(p.offset + u64::from(p.len)) as usize]);
            }
        }
    }
    read_index(&obj);
}

/// A manifest, a root or a GC boundary (all JSON).
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data, OBJECT) {
        let again = m.encode().expect("a decoded manifest encodes");
        assert_eq!(Manifest::decode(&again, OBJECT).expect("a re-encoded manifest decodes"), m);
        let _ = m.indexed_end();
    }
    let _ = serde_json::from_slice::<Root>(data);
    let _ = serde_json::from_slice::<Boundary>(data);
}

/// An append body: the first byte picks NDJSON or JSON.
pub fn append_body(data: &[u8]) {
    let Some((mode, body)) = data.split_first() else { return };
    if let Ok(b) = cairn_server::wire::parse_append(body, mode & 1 == 1, 1 << 20) {
        if let Some(e) = &b.expected {
            let _ = cairn_server::wire::parse_expectation(e);
        }
        for e in &b.events {
            if !e.binary {
                // Text data must be JSON text: it is written out verbatim.
                // (Syntax only: a number like 1e999 is JSON, if no f64.)
                serde_json::from_slice::<&serde_json::value::RawValue>(&e.data).expect("accepted data is JSON");
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = cairn_server::wire::parse_expectation_str(s);
    }
}

fn archive_footer(obj: &[u8]) -> Option<ArchiveFooter> {
    let start = raw_tail_start(obj)?;
    decode_archive_footer(&obj[start..], start as u64, OBJECT).ok()
}

fn read_archive(obj: &[u8]) {
    let Some(f) = archive_footer(obj) else { return };
    let Ok(times) = f.times(OBJECT) else { return };
    for o in [0, f.event_count.saturating_sub(1), f.event_count, u64::MAX] {
        let _ = f.block_of(o);
    }
    for b in &f.blocks {
        if let Ok(events) = decode_archive_block(&obj[b.offset as usize..(b.offset + b.len()) as usize], b, &times, OBJECT) {
            assert_eq!(events.len(), b.count as usize, "a block gives the events its footer says");
        }
    }
    for p in &f.space_pages {
        if let Ok(page) = decode_space_page(&obj[p.offset as usize..(p.offset + u64::from(p.len)) as usize], OBJECT) {
            for s in &page {
                let _ = f.space_page_for(&s.key);
                for g in &s.groups {
                    let _ = s.range(Some(&g.value));
                }
            }
        }
    }
    for p in &f.posting_pages {
        if let Ok(page) = decode_posting_page(&obj[p.offset as usize..(p.offset + u64::from(p.len)) as usize], OBJECT) {
            for x in &page {
                let _ = f.posting_pages_for(&x.key, &x.value, Some(x.space));
                if let Ok(ordinals) = x.decode(OBJECT) {
                    if let Ok(Some(events)) = x.inlined(ordinals.len(), &times, OBJECT) {
                        assert_eq!(ordinals.len(), events.len(), "inlined events match their ordinals");
                    }
                }
            }
        }
    }
}

/// A whole archive: trailer, footer, every block, directory page and
/// posting (inlined events included).
pub fn archive(data: &[u8]) {
    read_archive(data);
    let mut obj = data.to_vec();
    if !fix_tail(&mut obj) {
        return;
    }
    if let Some(f) = archive_footer(&obj) {
        for b in &f.blocks {
            let meta_end = (b.offset + u64::from(b.meta_len)) as usize;
            fix_frame(&mut obj[b.offset as usize..meta_end]);
            fix_frame(&mut obj[meta_end..(b.offset + b.len()) as usize]);
        }
        for (offset, len) in f.space_pages.iter().map(|p| (p.offset, p.len)).chain(f.posting_pages.iter().map(|p| (p.offset, p.len))) {
            fix_frame(&mut obj[offset as usize..(offset + u64::from(len)) as usize]);
        }
    }
    read_archive(&obj);
}
