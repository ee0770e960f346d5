//! Writes a seed corpus for every target into `corpus/<target>/`: real
//! segments, blocks, index objects, manifests and append bodies, as the
//! engine and clients make them. `scripts/fuzz` runs it before fuzzing.

use std::path::Path;

use bytes::Bytes;
use cairn_format::archive::{ArchiveBuilder, ArchiveOptions, ArchivedEvent, Key};
use cairn_format::block::{encode_block, Codec, Event};
use cairn_format::index::{IndexBuilder, SegmentRef};
use cairn_format::manifest::{IndexRef, Manifest};
use cairn_format::segment::{encode_segment, EncodeOptions};

fn events(n: usize, streams: usize, tags: bool, binary: bool) -> Vec<Event> {
    let mut next = vec![0u64; streams];
    (0..n)
        .map(|i| {
            let s = i % streams;
            next[s] += 1;
            Event {
                stream: format!("order-{s}").into(),
                revision: next[s] - 1,
                event_type: ["Placed", "Paid", "Shipped"][i % 3].into(),
                timestamp: 1_700_000_000_000 + i as i64 * 7,
                id: (i % 2 == 0).then(|| (i as u128 * 0x9e37_79b9).to_le_bytes()),
                tags: if tags { vec![("region".into(), ["eu", "us"][i % 2].into())] } else { vec![] },
                binary: binary && i % 4 == 0,
                data: Bytes::from(if binary && i % 4 == 0 { vec![0, 159, 146, 150] } else { format!("{{\"n\":{i},\"total\":\"42.99\"}}").into_bytes() }),
            }
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut segments = Vec::new();
    let mut base = 0u64;
    for (k, (n, s, tags, binary, codec, target)) in [
        (1, 1, false, false, Codec::None, 256 << 10),
        (12, 3, true, true, Codec::None, 64),
        (40, 5, true, false, Codec::Lz4, 200),
        (30, 2, false, true, Codec::Zstd, 300),
    ]
    .into_iter()
    .enumerate()
    {
        let evs = events(n, s, tags, binary);
        let seg = encode_segment(&evs, &EncodeOptions { codec, zstd_level: 1, block_target: target }).expect("segment");
        write(&corpus.join("segment"), &format!("seed-{k}"), &seg.bytes);
        let block = encode_block(&evs, codec, 1).expect("block");
        write(&corpus.join("block"), &format!("seed-{k}"), &block);
        segments.push((
            SegmentRef {
                name: format!("seg-{k}"),
                base_seq: base,
                count: n as u64,
                bytes: seg.bytes.len() as u64,
                footer_offset: seg.footer_offset,
                footer_len: seg.footer_len,
                min_ts: seg.footer.min_ts,
                max_ts: seg.footer.max_ts,
            },
            seg.footer,
        ));
        base += n as u64;
    }
    // Segments with distinct streams per index (the builder needs revisions
    // that continue across segments).
    let mut b = IndexBuilder::new();
    let (r, f) = &segments[0];
    b.add_segment(r.clone(), f).expect("add segment");
    let idx = b.finish(Codec::Zstd, 1).expect("index");
    write(&corpus.join("index"), "seed-0", &idx.bytes);
    // Two segments, many streams, uncompressed pages.
    let mut b = IndexBuilder::new();
    let mut ibase = 0;
    for k in 0..2 {
        let mut evs = events(300, 150, k == 0, false);
        for e in &mut evs {
            e.revision += 2 * k as u64;
        }
        let seg = encode_segment(&evs, &EncodeOptions { codec: Codec::None, zstd_level: 1, block_target: 4096 }).expect("segment");
        let r = SegmentRef {
            name: format!("seg-{k}"),
            base_seq: ibase,
            count: 300,
            bytes: seg.bytes.len() as u64,
            footer_offset: seg.footer_offset,
            footer_len: seg.footer_len,
            min_ts: seg.footer.min_ts,
            max_ts: seg.footer.max_ts,
        };
        b.add_segment(r, &seg.footer).expect("add segment");
        ibase += 300;
    }
    write(&corpus.join("index"), "seed-1", &b.finish(Codec::None, 1).expect("index").bytes);
    let mut m = Manifest::genesis("01JZ0000000000000000000000", "c0".into());
    m.version = 7;
    m.indexes.push(IndexRef {
        name: "idx-0".into(),
        first_seq: 0,
        end_seq: 1,
        bytes: idx.bytes.len() as u64,
        footer_offset: idx.footer_offset,
        footer_len: idx.footer_len,
    });
    m.segments = segments[1..].iter().map(|(r, _)| r.clone()).collect();
    m.next_seq = base;
    m.window_start = 0;
    write(&corpus.join("manifest"), "seed-0", &m.encode().expect("manifest"));
    write(&corpus.join("manifest"), "seed-1", br#"{"incarnation":"01JZ0000000000000000000000","created_ms":1}"#);
    write(&corpus.join("manifest"), "seed-2", br#"{"floor":12}"#);
    for (k, (space, grouping, inline_share, block_bytes)) in [
        (Key::Stream, None, 0.0, 64),
        (Key::Tag("region".into()), Some(Key::Type), 1.0, 300),
        (Key::Type, Some(Key::Stream), 0.125, 1 << 14),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = ArchiveBuilder::new(ArchiveOptions { space, grouping, indexes: vec![Key::Type, Key::Tag("region".into())], block_bytes, inline_share, ..ArchiveOptions::default() }).expect("options");
        for (seq, e) in events(40, 4, true, k == 1).into_iter().enumerate() {
            b.add(ArchivedEvent { seq: seq as u64 * 3, event: e });
        }
        write(&corpus.join("archive"), &format!("seed-{k}"), &b.finish().expect("archive").bytes);
    }
    let bodies: [&[u8]; 5] = [
        br#"0[{"type":"Placed","data":{"total":"42.99"},"tags":{"region":"eu"}}]"#,
        br#"0{"events":[{"type":"Paid","id":"0b4a3b3e-3f1c-4c2b-9a7e-1f2d3c4b5a69","timestamp":1700000000000,"data_b64":"AJ+Slg=="}],"expected":3}"#,
        br#"0{"events":[{"stream":"a","type":"T"},{"stream":"b","type":"T","data":[1,2.5,"x",null,true]}],"expected":{"a":"no_stream","b":"any"}}"#,
        b"1{\"type\":\"A\",\"data\":{}}\r\n{\"type\":\"B\",\"data\":\"\\u00e9\"}\n\n",
        b"0stream_exists",
    ];
    for (i, b) in bodies.iter().enumerate() {
        write(&corpus.join("append_body"), &format!("seed-{i}"), b);
    }
}
