#![allow(clippy::unwrap_used)]
//! Inputs that `scripts/fuzz` found to break a decoder, reduced and kept so
//! that the bug stays fixed. Each builds its bytes by hand: frames carry
//! valid checksums, so only the decoder's own checks stand in the way.

use cairn_format::block::{decode_block_events, decode_block_stream};

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An uncompressed block frame around `raw`, with a correct CRC32C.
fn frame(raw: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    f.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&f), raw);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(raw);
    f
}

/// A payload: `streams` (name, first revision), one type `T`, no tag
/// strings, then one empty event per entry of `events` (a stream index).
fn payload(streams: &[(&str, u64)], events: &[u64]) -> Vec<u8> {
    let mut raw = Vec::new();
    varint(&mut raw, events.len() as u64);
    varint(&mut raw, 0); // base timestamp
    varint(&mut raw, streams.len() as u64);
    for (name, first) in streams {
        string(&mut raw, name);
        varint(&mut raw, *first);
    }
    varint(&mut raw, 1);
    string(&mut raw, "T");
    varint(&mut raw, 0);
    for si in events {
        raw.push(0); // flags
        varint(&mut raw, *si);
        varint(&mut raw, 0); // type
        varint(&mut raw, 0); // timestamp delta
        varint(&mut raw, 0); // data length
    }
    raw
}

#[test]
fn the_hand_built_block_decodes() {
    let events = decode_block_events(&frame(&payload(&[("a", 3), ("b", 0)], &[0, 1, 0])), "x").unwrap();
    let revs: Vec<(&str, u64)> = events.iter().map(|e| (&*e.stream, e.revision)).collect();
    assert_eq!(revs, [("a", 3), ("b", 0), ("a", 4)]);
}

/// Found by the `segment` and `block` targets: a block whose dictionary
/// names one stream twice gave that stream two runs of revisions (3, 4 and
/// again 0, 1), which no writer makes and the reader would serve.
#[test]
fn a_stream_listed_twice_in_a_block_is_corrupt() {
    let err = decode_block_events(&frame(&payload(&[("a", 3), ("a", 0)], &[0, 1])), "seg-1").unwrap_err();
    assert!(matches!(&err, cairn_format::Error::Corrupt(m) if m.contains("listed twice")), "{err}");
    // Also when only one stream, or another, is decoded.
    for s in ["a", "b"] {
        let err = decode_block_stream(&frame(&payload(&[("a", 3), ("a", 0)], &[0, 1])), "seg-1", s).unwrap_err();
        assert!(matches!(&err, cairn_format::Error::Corrupt(m) if m.contains("listed twice")), "{err}");
    }
}

/// Revisions counted past u64::MAX overflowed (a panic with overflow checks).
#[test]
fn a_revision_past_u64_max_is_corrupt() {
    let err = decode_block_events(&frame(&payload(&[("a", u64::MAX)], &[0, 0])), "seg-1").unwrap_err();
    assert!(matches!(&err, cairn_format::Error::Corrupt(m) if m.contains("overflows")), "{err}");
}
