#![allow(clippy::unwrap_used)]
//! Archives: round trips against a model of what each read must give, and
//! hostile bytes that must never panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_format::archive::{
    decode_archive_block, decode_archive_footer, decode_posting_page, decode_space_filter, decode_space_page, ArchiveBuilder, ArchiveFooter,
    ArchiveOptions, ArchivedEvent, Key, Space, SpaceFilter,
};
use cairn_format::block::{Codec, Event};
use cairn_format::bloom::Bloom;
use proptest::prelude::*;

fn arb_events() -> impl Strategy<Value = Vec<ArchivedEvent>> {
    let ev = (
        0usize..6,
        0usize..3,
        -50i64..50,
        proptest::option::of(any::<[u8; 16]>()),
        proptest::collection::vec((0usize..3, 0usize..4), 0..3),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..200),
    );
    (proptest::collection::vec(ev, 1..150), 0u64..1000).prop_map(|(evs, seq0)| {
        let mut next = [0u64; 6];
        evs.into_iter()
            .enumerate()
            .map(|(i, (s, t, ts, id, tags, binary, data))| {
                let revision = next[s];
                next[s] += 1;
                // Timestamps mostly rise with seq, with some going back.
                let timestamp = 1_000 + i as i64 * 10 + ts;
                ArchivedEvent {
                    seq: seq0 + i as u64 * 2,
                    event: Event {
                        stream: format!("stream-{s}").into(),
                        revision,
                        event_type: format!("Type{t}").into(),
                        timestamp,
                        id,
                        tags: tags.into_iter().map(|(k, v)| (format!("k{k}"), format!("v{v}"))).collect(),
                        binary,
                        data: Bytes::from(data),
                    },
                }
            })
            .collect()
    })
}

fn arb_codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Lz4), Just(Codec::Zstd)]
}

fn arb_key() -> impl Strategy<Value = Key> {
    prop_oneof![Just(Key::Stream), Just(Key::Type), (0usize..3).prop_map(|k| Key::Tag(format!("k{k}")))]
}

fn arb_options() -> impl Strategy<Value = ArchiveOptions> {
    (arb_key(), proptest::option::of(arb_key()), proptest::collection::btree_set(arb_key(), 0..4), 1usize..3000, 1usize..40, arb_codec(), arb_codec(), prop_oneof![Just(0.0), Just(0.125), Just(1.0)])
        .prop_map(|(space, grouping, indexes, block_bytes, block_events, meta_codec, data_codec, inline_share)| ArchiveOptions {
            space,
            grouping,
            indexes: indexes.into_iter().collect(),
            block_bytes,
            block_events,
            meta_codec,
            data_codec,
            zstd_level: 1,
            inline_share,
        })
}

/// Every event in ordinal order, every space, and every posting, read the
/// plain way from the bytes.
struct Read {
    footer: ArchiveFooter,
    events: Vec<ArchivedEvent>,
    spaces: Vec<Space>,
    postings: BTreeMap<(Key, String, u64), Vec<u64>>,
    /// Each posting's space → the first ordinal it names for it.
    firsts: BTreeMap<u64, u64>,
    /// Events inlined in postings, with the ordinal they name.
    inlined: Vec<(u64, ArchivedEvent)>,
    space_filter: Bloom,
}

fn read(bytes: &[u8]) -> Result<Read, cairn_format::Error> {
    let t = cairn_format::archive::decode_archive_trailer(&bytes[bytes.len().saturating_sub(32)..], "arc")?;
    let tail = bytes.get(t.footer_offset as usize..).ok_or_else(|| cairn_format::Error::Corrupt("offset".into()))?;
    let footer = decode_archive_footer(tail, t.footer_offset, "arc")?;
    let slice = |o: u64, l: u64| &bytes[o as usize..(o + l) as usize];
    let times = footer.times("arc")?;
    let mut events = Vec::new();
    for b in &footer.blocks {
        events.extend(decode_archive_block(slice(b.offset, b.len()), b, &times, "arc")?);
    }
    let mut spaces = Vec::new();
    for p in &footer.space_pages {
        spaces.extend(decode_space_page(slice(p.offset, u64::from(p.len)), "arc")?);
    }
    let mut postings: BTreeMap<(Key, String, u64), Vec<u64>> = BTreeMap::new();
    let mut firsts = BTreeMap::new();
    let mut inlined = Vec::new();
    for p in &footer.posting_pages {
        for x in decode_posting_page(slice(p.offset, u64::from(p.len)), "arc")? {
            let ords = x.decode("arc")?;
            firsts.insert(x.space, x.first);
            if let Some(evs) = x.inlined(ords.len(), &times, "arc")? {
                inlined.extend(ords.iter().map(|o| x.first + o).zip(evs));
            }
            postings.entry((x.key, x.value, x.space)).or_default().extend(ords);
        }
    }
    let space_filter = match &footer.space_filter {
        SpaceFilter::Inline(f) => f.clone(),
        SpaceFilter::At { offset, len } => decode_space_filter(slice(*offset, u64::from(*len)), "arc")?,
    };
    Ok(Read { footer, events, spaces, postings, firsts, inlined, space_filter })
}

fn values<'a>(k: &Key, e: &'a Event) -> Vec<&'a str> {
    match k {
        Key::Stream => vec![&e.stream],
        Key::Type => vec![&e.event_type],
        Key::Tag(t) => e.tags.iter().filter(|(x, _)| x == t).map(|(_, v)| v.as_str()).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn archives_round_trip_in_space_group_timestamp_order(events in arb_events(), opts in arb_options()) {
        let mut b = ArchiveBuilder::new(opts.clone()).unwrap();
        for e in events.iter().rev() {
            b.add(e.clone());
        }
        let enc = b.finish().unwrap();
        let r = read(&enc.bytes).unwrap();
        prop_assert_eq!(&r.footer, &enc.footer);
        prop_assert_eq!(r.footer.event_count, events.len() as u64);
        prop_assert_eq!(r.footer.first_seq, events[0].seq);
        prop_assert_eq!(r.footer.end_seq, events[events.len() - 1].seq + 1);

        // Every event once, whole, in (space, grouping, timestamp, seq) order.
        let sort_key = |e: &ArchivedEvent| (
            opts.space.of(&e.event).to_string(),
            opts.grouping.as_ref().map(|g| g.of(&e.event).to_string()),
            e.event.timestamp,
            e.seq,
        );
        let mut want = events.clone();
        want.sort_by_key(sort_key);
        prop_assert_eq!(&r.events, &want);

        // Spaces cover the ordinals in order; groups add up to their space.
        let mut at = 0;
        for (i, s) in r.spaces.iter().enumerate() {
            prop_assert_eq!(s.first, at);
            prop_assert!(r.events[at as usize..(at + s.count) as usize].iter().all(|e| opts.space.of(&e.event) == s.key));
            if opts.grouping.is_some() {
                prop_assert_eq!(s.groups.iter().map(|g| g.count).sum::<u64>(), s.count);
                for g in &s.groups {
                    let range = s.range(Some(&g.value)).unwrap();
                    let grouping = opts.grouping.as_ref().unwrap();
                    prop_assert!(r.events[range.start as usize..range.end as usize].iter().all(|e| grouping.of(&e.event) == g.value));
                }
            } else {
                prop_assert!(s.groups.is_empty());
            }
            let page = r.footer.space_page_for(&s.key, &r.space_filter).unwrap();
            let p = &r.footer.space_pages[page];
            prop_assert!(p.first_index <= i as u64);
            at += s.count;
        }
        prop_assert_eq!(at, events.len() as u64);
        prop_assert_eq!(r.footer.space_count, r.spaces.len() as u64);

        // Postings: exactly the events of the space with the value, found
        // through the pages the footer points at.
        let mut want_postings: BTreeMap<(Key, String, u64), Vec<u64>> = BTreeMap::new();
        for (i, s) in r.spaces.iter().enumerate() {
            for (rel, e) in r.events[s.first as usize..(s.first + s.count) as usize].iter().enumerate() {
                for k in &opts.indexes {
                    for v in values(k, &e.event) {
                        let l = want_postings.entry((k.clone(), v.to_string(), i as u64)).or_default();
                        if l.last() != Some(&(rel as u64)) {
                            l.push(rel as u64);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(&r.postings, &want_postings);
        for (space, first) in &r.firsts {
            prop_assert_eq!(r.spaces[*space as usize].first, *first);
        }
        // Inlined events are the events at the ordinals they stand for,
        // within the budget, and every posting of an inlined value is inlined.
        for (o, e) in &r.inlined {
            prop_assert_eq!(&r.events[*o as usize], e);
        }
        prop_assert!(r.inlined.len() as f64 <= (events.len() as f64 * opts.inline_share).floor() + 0.5);
        prop_assert_eq!(enc.inlined as usize, r.inlined.len());
        prop_assert_eq!(enc.index_entries, want_postings.values().map(|l| l.len() as u64).sum::<u64>());
        for (k, v, space) in want_postings.keys() {
            let pages = r.footer.posting_pages_for(k, v, Some(*space));
            prop_assert!(!pages.is_empty());
            let all = r.footer.posting_pages_for(k, v, None);
            prop_assert!(all.start <= pages.start && pages.end <= all.end);
        }
        prop_assert!(r.footer.posting_pages_for(&Key::Tag("k0".into()), "absent", None).len() <= r.footer.posting_pages.len());
        for (o, _) in r.events.iter().enumerate() {
            let b = &r.footer.blocks[r.footer.block_of(o as u64).unwrap()];
            prop_assert!(b.first <= o as u64 && (o as u64) < b.end());
        }
        prop_assert!(r.footer.block_of(events.len() as u64).is_none());
    }

    #[test]
    fn flipped_bytes_never_give_wrong_events(events in arb_events(), opts in arb_options(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut b = ArchiveBuilder::new(opts).unwrap();
        for e in &events {
            b.add(e.clone());
        }
        let enc = b.finish().unwrap();
        let good = read(&enc.bytes).unwrap();
        let mut bytes = enc.bytes.clone();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // Every frame and the footer are checksummed: a flipped bit is an
        // error, or lands where nothing reads it (never a different event).
        if let Ok(r) = read(&bytes) {
            prop_assert_eq!(r.events, good.events);
            prop_assert_eq!(r.spaces, good.spaces);
            prop_assert_eq!(r.postings, good.postings);
        }
    }

    #[test]
    fn truncated_and_random_bytes_are_errors(events in arb_events(), cut in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut b = ArchiveBuilder::new(ArchiveOptions::default()).unwrap();
        for e in &events {
            b.add(e.clone());
        }
        let enc = b.finish().unwrap();
        let n = cut.index(enc.bytes.len());
        prop_assert!(read(&enc.bytes[..n]).is_err());
        let _ = read(&junk);
        let _ = decode_archive_footer(&junk, 0, "junk");
        let _ = decode_space_page(&junk, "junk");
        let _ = decode_posting_page(&junk, "junk");
        let _ = decode_space_filter(&junk, "junk");
        let times = enc.footer.times("arc").unwrap();
        for blk in &enc.footer.blocks {
            let _ = decode_archive_block(&junk, blk, &times, "junk");
        }
        let _ = cairn_format::archive::TimeTable::decode(&junk, "junk");
    }
}

#[test]
fn builder_refuses_what_it_cannot_encode() {
    let e = |seq| ArchivedEvent { seq, event: Event { stream: "s".into(), revision: 0, event_type: "T".into(), timestamp: 0, id: None, tags: vec![], binary: false, data: Bytes::new() } };
    let mut b = ArchiveBuilder::new(ArchiveOptions::default()).unwrap();
    b.add(e(1));
    b.add(e(1));
    assert!(b.finish().is_err(), "two events with one seq");
    let mut b = ArchiveBuilder::new(ArchiveOptions::default()).unwrap();
    b.add(e(u64::MAX));
    assert!(b.finish().is_err(), "no seq past the last");
    assert!(ArchiveBuilder::new(ArchiveOptions { block_events: 0, ..ArchiveOptions::default() }).is_err());
    assert!(ArchiveBuilder::new(ArchiveOptions { block_events: cairn_format::archive::MAX_BLOCK_EVENTS + 1, ..ArchiveOptions::default() }).is_err());
    assert!(ArchiveBuilder::new(ArchiveOptions { indexes: vec![Key::Type, Key::Type], ..ArchiveOptions::default() }).is_err());
    let empty = ArchiveBuilder::new(ArchiveOptions::default()).unwrap().finish().unwrap();
    let r = read(&empty.bytes).unwrap();
    assert_eq!((r.events.len(), r.spaces.len(), r.footer.blocks.len()), (0, 0, 0));
}

#[test]
fn extreme_seqs_and_timestamps_round_trip() {
    let e = |seq, ts, s: &str| ArchivedEvent { seq, event: Event { stream: s.into(), revision: u64::MAX - seq % 7, event_type: "T".into(), timestamp: ts, id: Some([7; 16]), tags: vec![], binary: true, data: Bytes::from_static(b"\x00\xff") } };
    let events = vec![e(0, i64::MAX, "a"), e(u64::MAX - 1, i64::MIN, "a"), e(5, 0, "b"), e(u64::MAX / 2, i64::MIN + 1, "a"), e(6, i64::MAX - 1, "b")];
    let mut b = ArchiveBuilder::new(ArchiveOptions { block_events: 2, ..ArchiveOptions::default() }).unwrap();
    for x in &events {
        b.add(x.clone());
    }
    let r = read(&b.finish().unwrap().bytes).unwrap();
    let mut want = events.clone();
    want.sort_by_key(|x| (x.event.stream.clone(), x.event.timestamp, x.seq));
    assert_eq!(r.events, want);
    assert_eq!((r.footer.first_seq, r.footer.end_seq), (0, u64::MAX));
}
