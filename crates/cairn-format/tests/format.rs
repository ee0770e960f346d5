#![allow(clippy::unwrap_used)]
//! Round trips of every format, and hostile bytes that must never panic.

use bytes::Bytes;
use cairn_format::block::{decode_block, decode_block_stream, Codec, Event};
use cairn_format::index::{decode_index_footer, decode_page, IndexBuilder, SegmentRef};
use cairn_format::manifest::Manifest;
use cairn_format::segment::{decode_footer, encode_segment, merge_footers, EncodeOptions, Footer, MergeInput};
use proptest::prelude::*;

fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    let ev = (
        0usize..5,
        0usize..3,
        any::<i32>(),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::collection::vec((0usize..3, 0usize..3), 0..3),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    (proptest::collection::vec(ev, 1..120), 0u64..1000).prop_map(|(evs, rev0)| {
        let mut next = [rev0; 5];
        evs.into_iter()
            .map(|(s, t, ts, id, tags, binary, data)| {
                let revision = next[s];
                next[s] += 1;
                Event {
                    stream: format!("stream-{s}").into(),
                    revision,
                    event_type: format!("Type{t}").into(),
                    timestamp: i64::from(ts),
                    id,
                    tags: tags.into_iter().map(|(k, v)| (format!("k{k}"), format!("v{v}"))).collect(),
                    binary,
                    data: Bytes::from(data),
                }
            })
            .collect()
    })
}

fn arb_codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Lz4), Just(Codec::Zstd)]
}

fn read_all(bytes: &[u8], footer: &Footer) -> Result<Vec<Event>, cairn_format::Error> {
    let mut out = Vec::new();
    for b in &footer.blocks {
        let frame = &bytes[b.offset as usize..(b.offset + u64::from(b.len)) as usize];
        let evs = decode_block(frame, b.first_index, "seg")?;
        assert_eq!(evs.len() as u32, b.count);
        out.extend(evs.into_iter().map(|d| d.event));
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn segments_round_trip(events in arb_events(), codec in arb_codec(), target in 1usize..4000) {
        let opts = EncodeOptions { codec, zstd_level: 1, block_target: target };
        let seg = encode_segment(&events, &opts).unwrap();
        let tail = &seg.bytes[seg.footer_offset as usize..];
        prop_assert_eq!(tail.len() as u32, seg.footer_len);
        let footer = decode_footer(tail, Some(seg.footer_offset), "seg").unwrap();
        prop_assert_eq!(&footer, &seg.footer);
        prop_assert_eq!(read_all(&seg.bytes, &footer).unwrap(), events.clone());
        // The core alone: the last core_len bytes, equal to the whole footer's.
        let core_tail = &seg.bytes[seg.bytes.len() - seg.core_len as usize..];
        prop_assert!(seg.core_len < seg.footer_len);
        prop_assert_eq!(cairn_format::segment::decode_core(core_tail, Some(seg.footer_offset), "seg").unwrap(), footer.core());
        prop_assert!(cairn_format::segment::decode_core(&core_tail[1..], Some(seg.footer_offset), "seg").is_err());
        prop_assert!(cairn_format::segment::decode_core(core_tail, Some(seg.footer_offset + 1), "seg").is_err());
        for e in &events {
            let s = footer.stream(&e.stream).unwrap();
            prop_assert!(s.first_revision <= e.revision && e.revision <= s.last_revision());
            for (k, v) in &e.tags {
                prop_assert!(!footer.tag_blocks(k, v).is_empty());
            }
            if let Some(id) = e.id {
                let h = cairn_format::bloom::BloomHash::of(&id);
                prop_assert!(footer.id_candidates(h).count() > 0);
            }
        }
        prop_assert!(footer.stream("absent-stream").is_none() || footer.streams.iter().all(|s| s.name != "absent-stream"));
    }

    #[test]
    fn a_stream_decoded_alone_is_its_events_of_the_whole_block(events in arb_events(), codec in arb_codec(), target in 1usize..4000) {
        let opts = EncodeOptions { codec, zstd_level: 1, block_target: target };
        let seg = encode_segment(&events, &opts).unwrap();
        for b in &seg.footer.blocks {
            let frame = &seg.bytes[b.offset as usize..(b.offset + u64::from(b.len)) as usize];
            let whole = decode_block(frame, 0, "seg").unwrap();
            for s in ["stream-0", "stream-3", "stream-9"] {
                let alone = decode_block_stream(frame, "seg", s).unwrap();
                let expected: Vec<(u32, Event)> = whole.iter().filter(|d| &*d.event.stream == s).map(|d| (d.index, d.event.clone())).collect();
                prop_assert_eq!(alone, expected);
            }
        }
    }

    #[test]
    fn flipped_bytes_never_give_wrong_events(events in arb_events(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let seg = encode_segment(&events, &EncodeOptions::default()).unwrap();
        let mut bytes = seg.bytes.clone();
        let p = pos.index(bytes.len());
        bytes[p] ^= 1 << bit;
        let tail = &bytes[seg.footer_offset as usize..];
        let core = &bytes[bytes.len() - seg.core_len as usize..];
        if let Ok(c) = cairn_format::segment::decode_core(core, Some(seg.footer_offset), "seg") {
            // The flip missed the core, or hit a block.
            prop_assert_eq!(c, seg.footer.core());
        }
        match decode_footer(tail, Some(seg.footer_offset), "seg") {
            Err(e) => prop_assert!(e.to_string().contains("seg")),
            Ok(footer) => {
                // The flip hit a block: its checksum must catch it.
                prop_assert!(read_all(&bytes, &footer).is_err());
            }
        }
    }

    #[test]
    fn truncated_and_random_bytes_are_errors(events in arb_events(), cut in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let seg = encode_segment(&events, &EncodeOptions::default()).unwrap();
        let tail = &seg.bytes[seg.footer_offset as usize..];
        let c = cut.index(tail.len());
        prop_assert!(decode_footer(&tail[c..], None, "seg").is_err() || c == 0);
        prop_assert!(decode_footer(&tail[..c], None, "seg").is_err());
        let _ = decode_footer(&junk, None, "junk");
        let _ = cairn_format::segment::decode_core(&junk, None, "junk");
        let _ = decode_block(&junk, 0, "junk");
        let _ = decode_index_footer(&junk, None, "junk");
        let _ = decode_page(&junk, "junk");
        let _ = Manifest::decode(&junk, "junk");
        let mut framed = junk.clone();
        framed.extend_from_slice(&tail[tail.len() - 32..]);
        let _ = decode_footer(&framed, None, "junk");
    }

    #[test]
    fn merged_footers_equal_one_segment(events in arb_events(), split in any::<prop::sample::Index>()) {
        // Rolling up two segments equals encoding their events as one: same
        // blocks, same events, same stream directory.
        let cut = split.index(events.len()).max(1).min(events.len());
        let opts = EncodeOptions { block_target: 500, ..EncodeOptions::default() };
        let (a, b) = (&events[..cut], &events[cut..]);
        let sa = encode_segment(a, &opts).unwrap();
        let mut bytes = sa.bytes[..sa.footer_offset as usize].to_vec();
        let mut inputs = vec![MergeInput { footer: &sa.footer, byte_offset: 0, index_offset: 0 }];
        let sb;
        if !b.is_empty() {
            sb = encode_segment(b, &opts).unwrap();
            inputs.push(MergeInput { footer: &sb.footer, byte_offset: bytes.len() as u64, index_offset: a.len() as u32 });
            bytes.extend_from_slice(&sb.bytes[..sb.footer_offset as usize]);
        }
        let merged = merge_footers(&inputs).unwrap();
        let off = bytes.len() as u64;
        bytes.extend_from_slice(&cairn_format::segment::encode_footer(&merged, off).unwrap());
        let footer = decode_footer(&bytes[off as usize..], Some(off), "merged").unwrap();
        prop_assert_eq!(read_all(&bytes, &footer).unwrap(), events.clone());
        let whole = encode_segment(&events, &opts).unwrap().footer;
        for s in &whole.streams {
            let m = footer.stream(&s.name).unwrap();
            prop_assert_eq!((m.first_revision, m.count), (s.first_revision, s.count));
        }
    }

    #[test]
    fn index_objects_round_trip_and_merge(events in arb_events(), parts in 1usize..5) {
        let chunk = events.len().div_ceil(parts);
        let mut segs = Vec::new();
        let mut base = 0u64;
        for (i, c) in events.chunks(chunk).enumerate() {
            let s = encode_segment(c, &EncodeOptions::default()).unwrap();
            let r = SegmentRef { name: format!("s{i}"), base_seq: base, count: c.len() as u64, bytes: s.bytes.len() as u64,
                footer_offset: s.footer_offset, footer_len: s.footer_len, min_ts: 0, max_ts: 0, core_len: s.core_len };
            base += c.len() as u64;
            segs.push((r, s.footer));
        }
        let mut whole = IndexBuilder::new();
        for (r, f) in &segs { whole.add_segment(r.clone(), f).unwrap(); }
        let whole = whole.finish(Codec::Zstd, 1).unwrap();
        let decode = |bytes: &[u8], off: u64| {
            let footer = decode_index_footer(&bytes[off as usize..], Some(off), "idx").unwrap();
            let pages: Vec<_> = footer.pages.iter().map(|p| decode_page(&bytes[p.offset as usize..(p.offset + u64::from(p.len)) as usize], "idx").unwrap()).collect();
            (footer, pages)
        };
        let (wf, wp) = decode(&whole.bytes, whole.footer_offset);
        prop_assert_eq!(&wf, &whole.footer);
        // An index built from halves and merged equals one built whole.
        let mid = segs.len() / 2;
        let mut merged = IndexBuilder::new();
        for part in [&segs[..mid], &segs[mid..]] {
            if part.is_empty() { continue; }
            let mut b = IndexBuilder::new();
            for (r, f) in part { b.add_segment(r.clone(), f).unwrap(); }
            let e = b.finish(Codec::Lz4, 1).unwrap();
            let (f, p) = decode(&e.bytes, e.footer_offset);
            merged.add_index(&f, p).unwrap();
        }
        let merged = merged.finish(Codec::Zstd, 1).unwrap();
        let (mf, mp) = decode(&merged.bytes, merged.footer_offset);
        prop_assert_eq!(mf, wf.clone());
        prop_assert_eq!(mp, wp.clone());
        for e in &events {
            let page = wf.page_for(&e.stream).unwrap();
            let s = wp[page].iter().find(|s| *s.name == *e.stream).unwrap();
            prop_assert!(e.revision <= s.last_revision);
        }
    }

    #[test]
    fn manifests_round_trip(n in 0u64..5, next in 1u64..100) {
        let mut m = Manifest::genesis("inc", "c1".into());
        m.version = n;
        m.next_seq = next;
        m.segments.push(SegmentRef { name: "a".into(), base_seq: 0, count: next, bytes: 10, footer_offset: 5, footer_len: 5, min_ts: 0, max_ts: 0, core_len: 0 });
        let b = m.encode().unwrap();
        prop_assert_eq!(Manifest::decode(&b, "m").unwrap(), m.clone());
        m.next_seq += 1;
        prop_assert!(m.encode().is_err());
    }
}

/// A segment and an index object written by the first format version (one
/// footer in one piece; a segment table without core lengths), committed
/// as written: they still decode, and read as a version 1 segment does.
#[test]
fn version_1_segments_and_index_objects_still_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let seg = std::fs::read(dir.join("v1.seg")).unwrap();
    // Written from 60 events: event i in customer-(i mod 6), revision i / 6,
    // an id unless i mod 4 is 0, tag customer=c(i mod 6) when i mod 5 is 0, data {"n":i}.
    let (footer_offset, footer_len) = (1396u64, 515usize);
    let footer = decode_footer(&seg[footer_offset as usize..], Some(footer_offset), "v1.seg").unwrap();
    assert_eq!(seg.len(), footer_offset as usize + footer_len);
    let events = read_all(&seg, &footer).unwrap();
    assert_eq!(events.len(), 60);
    for (i, e) in events.iter().enumerate() {
        assert_eq!((&*e.stream, e.revision, e.data.as_ref()), (format!("customer-{}", i % 6).as_str(), i as u64 / 6, format!("{{\"n\":{i}}}").as_bytes()));
        assert_eq!(e.id.is_some(), i % 4 != 0);
    }
    assert_eq!(footer.stream("customer-3").unwrap().last_revision(), 9);
    assert!(!footer.tag_blocks("customer", "c0").is_empty());
    assert!(cairn_format::segment::decode_core(&seg[seg.len() - 100..], Some(footer_offset), "v1.seg").is_err(), "a version 1 segment has no core");

    let idx = std::fs::read(dir.join("v1.idx")).unwrap();
    let t = cairn_format::segment::decode_trailer(&idx[idx.len() - 32..], "v1.idx");
    assert!(t.is_err(), "an index trailer is not a segment's");
    let off = u64::from_le_bytes(idx[idx.len() - 8..].try_into().unwrap());
    let f = decode_index_footer(&idx[off as usize..], Some(off), "v1.idx").unwrap();
    assert_eq!((f.first_seq, f.end_seq, f.segments.len()), (100, 160, 1));
    assert_eq!(f.segments[0].core_len, 0, "a version 1 segment table has no core lengths");
    assert_eq!((f.segments[0].footer_offset, f.segments[0].footer_len), (footer_offset, footer_len as u32));
    let page = decode_page(&idx[f.pages[0].offset as usize..(f.pages[0].offset + u64::from(f.pages[0].len)) as usize], "v1.idx").unwrap();
    assert_eq!(page.iter().map(|s| (s.name.as_str(), s.last_revision)).collect::<Vec<_>>(), (0..6).map(|c| (format!("customer-{c}"), 9)).collect::<Vec<_>>().iter().map(|(n, r)| (n.as_str(), *r)).collect::<Vec<_>>());
}
