//! `cairn inspect`: a segment, index object or manifest, read straight from
//! a file or a storage URL with no node running.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use cairn_format::{archive, index, manifest, segment};
use clap::Args;
use object_store::{ObjectStore, ObjectStoreExt};

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn inspect ./data/shop/01J.../seg/01J....seg
  cairn inspect ./data/shop/01J.../seg/01J....seg --verify
  cairn inspect --storage s3://bucket/cairn shop/01J.../manifest/00000000000000000042.json
  cairn inspect --storage ./data shop/01J.../idx/01J....idx --verify

The kind is read from the object itself: a segment, index object or archive
by its trailer, a manifest, root or GC boundary by its JSON. --verify decodes
every block (and index or archive page) and checks its CRC32C; any failure
exits 1 and names the bad block.")]
pub struct InspectCmd {
    /// A local file, or an object key when --storage is given.
    path: String,
    /// Read the object from this storage URL (a directory, s3://, az://).
    /// Not read from CAIRN_STORAGE: a path means a file unless this is given.
    #[arg(long)]
    storage: Option<String>,
    #[command(flatten)]
    cloud: crate::serve::Cloud,
    /// Decode every block and check every checksum.
    #[arg(long)]
    verify: bool,
}

/// Where the bytes come from: a whole file, or ranges of an object.
enum Source {
    File(Bytes),
    Object { store: Arc<dyn ObjectStore>, path: object_store::path::Path, size: u64 },
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::File(b) => b.len() as u64,
            Source::Object { size, .. } => *size,
        }
    }

    async fn range(&self, start: u64, end: u64) -> anyhow::Result<Bytes> {
        if end > self.size() || start > end {
            bail!("range {start}..{end} is outside the object ({} bytes): truncated?", self.size());
        }
        match self {
            Source::File(b) => Ok(b.slice(start as usize..end as usize)),
            Source::Object { store, path, .. } => Ok(store.get_range(path, start..end).await.with_context(|| format!("reading {path}"))?),
        }
    }
}

/// The storage at `url` and `key` as an object key in it (for `inspect`
/// and `archive read --storage`).
pub(crate) fn object_at(url: &str, cloud: &crate::serve::Cloud, key: &str) -> anyhow::Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
    let store = cairn_engine::storage::open(url, &cloud.options())?;
    let path = object_store::path::Path::parse(key).map_err(|e| anyhow::anyhow!("{key:?} is not an object key: {e}"))?;
    Ok((store, path))
}

impl InspectCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let src = match &self.storage {
            None => Source::File(Bytes::from(std::fs::read(&self.path).with_context(|| format!("reading {}", self.path))?)),
            Some(url) => {
                let (store, path) = object_at(url, &self.cloud, &self.path)?;
                let size = store.head(&path).await.with_context(|| format!("{} in {url}", self.path))?.size;
                Source::Object { store, path, size }
            }
        };
        let name = self.path.as_str();
        let size = src.size();
        if size >= segment::TRAILER_LEN as u64 {
            let trailer = src.range(size - segment::TRAILER_LEN as u64, size).await?;
            match &trailer[..8] {
                m if m == segment::SEGMENT_MAGIC => return inspect_segment(&src, name, self.verify).await,
                m if m == index::INDEX_MAGIC => return inspect_index(&src, name, self.verify).await,
                m if m == archive::ARCHIVE_MAGIC => return inspect_archive(&src, name, self.verify).await,
                _ => {}
            }
        }
        let body = src.range(0, size).await?;
        inspect_json(&body, name)
    }
}

/// The footer and trailer of a segment or index object (both share the
/// trailer layout; the decoders check magic, version and CRC), and the
/// footer's length.
async fn tail(src: &Source, name: &str) -> anyhow::Result<(u32, Bytes)> {
    let size = src.size();
    let trailer = src.range(size - segment::TRAILER_LEN as u64, size).await?;
    let footer_len = u32::from_le_bytes([trailer[12], trailer[13], trailer[14], trailer[15]]);
    let tail_len = u64::from(footer_len) + segment::TRAILER_LEN as u64;
    if tail_len > size {
        bail!("{name}: the trailer names a footer of {footer_len} bytes in a {size}-byte object: truncated");
    }
    Ok((footer_len, src.range(size - tail_len, size).await?))
}

async fn inspect_segment(src: &Source, name: &str, verify: bool) -> anyhow::Result<()> {
    let (footer_len, tail) = tail(src, name).await?;
    let f = segment::decode_footer(&tail, None, name)?;
    let data: u64 = f.blocks.iter().map(|b| u64::from(b.len)).sum();
    let decoded: u64 = f.blocks.iter().map(|b| u64::from(b.decoded_len)).sum();
    println!("segment {name}");
    println!("  size            {} bytes: blocks {data}, footer {footer_len}, trailer {}", src.size(), segment::TRAILER_LEN);
    println!("  events          {} (indexes 0..{})", f.event_count, f.event_count);
    println!("  blocks          {}, {decoded} bytes decoded ({:.2}x compression)", f.blocks.len(), decoded as f64 / data.max(1) as f64);
    println!("  time            {} .. {} (UTC)", crate::remote::utc(f.min_ts), crate::remote::utc(f.max_ts));
    println!("  streams         {}", f.streams.len());
    let mut biggest: Vec<_> = f.streams.iter().collect();
    biggest.sort_by_key(|s| std::cmp::Reverse(s.count));
    for s in biggest.iter().take(5) {
        println!("    {:<32} revisions {}..={} in {} blocks", s.name, s.first_revision, s.last_revision(), s.blocks.len());
    }
    if f.streams.len() > 5 {
        println!("    ... and {} more", f.streams.len() - 5);
    }
    let tag_keys: BTreeMap<&str, usize> = f.tags.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.key.as_str()).or_default() += 1;
        m
    });
    println!("  tags            {} key:value pairs{}", f.tags.len(), tag_keys.iter().map(|(k, n)| format!(", {k} ({n} values)")).collect::<String>());
    println!("  id filters      {}", f.id_filters.len());
    println!("  per event       {:.1} bytes stored, {:.1} decoded", src.size() as f64 / f64::from(f.event_count.max(1)), decoded as f64 / f64::from(f.event_count.max(1)));
    for (i, b) in f.blocks.iter().enumerate().take(3) {
        println!("    block {i:<5} offset {:>10}  {:>8} bytes  events {}..{}", b.offset, b.len, b.first_index, b.first_index + b.count);
    }
    if f.blocks.len() > 3 {
        println!("    ... {} blocks in all", f.blocks.len());
    }
    if verify {
        let mut events = 0u64;
        let mut bad = Vec::new();
        for (i, b) in f.blocks.iter().enumerate() {
            let frame = src.range(b.offset, b.offset + u64::from(b.len)).await?;
            match cairn_format::block::decode_block(&frame, b.first_index, name) {
                Ok(evs) if evs.len() == b.count as usize => events += evs.len() as u64,
                Ok(evs) => bad.push(format!("block {i} at {}: {} events, the footer says {}", b.offset, evs.len(), b.count)),
                Err(e) => bad.push(format!("block {i} at {}: {e}", b.offset)),
            }
        }
        if !bad.is_empty() {
            for b in &bad {
                eprintln!("  BAD {b}");
            }
            bail!("{name}: {} of {} blocks failed verification", bad.len(), f.blocks.len());
        }
        println!("verified: trailer, footer CRC, {} blocks (CRC32C, decode), {events} events", f.blocks.len());
    }
    Ok(())
}

async fn inspect_archive(src: &Source, name: &str, verify: bool) -> anyhow::Result<()> {
    let (footer_len, tail) = tail(src, name).await?;
    let f = archive::decode_archive_footer(&tail, src.size() - tail.len() as u64, name)?;
    let blocks: u64 = f.blocks.iter().map(archive::ArchiveBlock::len).sum();
    let meta: u64 = f.blocks.iter().map(|b| u64::from(b.meta_len)).sum();
    let spaces: u64 = f.space_pages.iter().map(|p| u64::from(p.len)).sum();
    let postings: u64 = f.posting_pages.iter().map(|p| u64::from(p.len)).sum();
    println!("archive {name}");
    println!("  size            {} bytes: blocks {blocks} (metadata {meta}), directory {spaces}, postings {postings}, footer {footer_len}, trailer {}", src.size(), segment::TRAILER_LEN);
    println!("  events          {} (seqs {}..{})", f.event_count, f.first_seq, f.end_seq);
    println!("  time            {} .. {} (UTC)", crate::remote::utc(f.min_ts), crate::remote::utc(f.max_ts));
    println!("  spaces          {} by {}{}", f.space_count, crate::archive::key_name(&f.space), f.grouping.as_ref().map(|g| format!(", grouped by {}", crate::archive::key_name(g))).unwrap_or_default());
    println!("  indexes         {}", if f.indexes.is_empty() { "none".into() } else { f.indexes.iter().map(crate::archive::key_name).collect::<Vec<_>>().join(", ") });
    println!("  blocks          {}; pages: {} directory, {} postings", f.blocks.len(), f.space_pages.len(), f.posting_pages.len());
    println!("  per event       {:.1} bytes stored", src.size() as f64 / f.event_count.max(1) as f64);
    if verify {
        let times = f.times(name)?;
        let mut bad = Vec::new();
        let mut events = 0u64;
        for (i, b) in f.blocks.iter().enumerate() {
            let bytes = src.range(b.offset, b.offset + b.len()).await?;
            match archive::decode_archive_block(&bytes, b, &times, name) {
                Ok(evs) => events += evs.len() as u64,
                Err(e) => bad.push(format!("block {i} at {}: {e}", b.offset)),
            }
        }
        let mut spaces = 0u64;
        for (i, p) in f.space_pages.iter().enumerate() {
            match archive::decode_space_page(&src.range(p.offset, p.offset + u64::from(p.len)).await?, name) {
                Ok(page) => spaces += page.len() as u64,
                Err(e) => bad.push(format!("directory page {i} at {}: {e}", p.offset)),
            }
        }
        let mut entries = 0u64;
        for (i, p) in f.posting_pages.iter().enumerate() {
            match archive::decode_posting_page(&src.range(p.offset, p.offset + u64::from(p.len)).await?, name) {
                Ok(page) => {
                    for x in page {
                        match x.decode(name) {
                            Ok(o) => entries += o.len() as u64,
                            Err(e) => bad.push(format!("posting page {i}: {e}")),
                        }
                    }
                }
                Err(e) => bad.push(format!("posting page {i} at {}: {e}", p.offset)),
            }
        }
        if spaces != f.space_count {
            bad.push(format!("the directory holds {spaces} spaces, the footer says {}", f.space_count));
        }
        if !bad.is_empty() {
            for b in &bad {
                eprintln!("  BAD {b}");
            }
            bail!("{name}: {} parts failed verification", bad.len());
        }
        println!("verified: trailer, footer CRC, {} blocks, {events} events, {spaces} spaces, {entries} index entries", f.blocks.len());
    }
    Ok(())
}

async fn inspect_index(src: &Source, name: &str, verify: bool) -> anyhow::Result<()> {
    let (footer_len, tail) = tail(src, name).await?;
    let f = index::decode_index_footer(&tail, None, name)?;
    let pages: u64 = f.pages.iter().map(|p| u64::from(p.len)).sum();
    println!("index object {name}");
    println!("  size            {} bytes: pages {pages}, footer {footer_len}", src.size());
    println!("  seqs            {}..{} ({} events)", f.first_seq, f.end_seq, f.end_seq - f.first_seq);
    println!("  segments        {}", f.segments.len());
    for s in f.segments.iter().take(3) {
        println!("    {:<40} seqs {}..{}  {} bytes", s.name, s.base_seq, s.end_seq(), s.bytes);
    }
    if f.segments.len() > 3 {
        println!("    ... {} in all", f.segments.len());
    }
    println!("  streams         {} in {} pages", f.stream_count, f.pages.len());
    if verify {
        let mut streams = 0u64;
        for (i, p) in f.pages.iter().enumerate() {
            let frame = src.range(p.offset, p.offset + u64::from(p.len)).await?;
            let page = index::decode_page(&frame, name).with_context(|| format!("page {i}"))?;
            streams += page.len() as u64;
        }
        if streams != f.stream_count {
            bail!("{name}: the pages hold {streams} streams, the footer says {}", f.stream_count);
        }
        println!("verified: trailer, footer CRC, {} pages (CRC32C, decode), {streams} streams", f.pages.len());
    }
    Ok(())
}

fn inspect_json(body: &[u8], name: &str) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| anyhow::anyhow!("{name}: not a segment, index object, manifest, root or GC boundary"))?;
    if v.get("commit_id").is_some() {
        let m = manifest::Manifest::decode(body, name)?;
        let seg_bytes: u64 = m.segments.iter().map(|s| s.bytes).sum();
        let idx_events: u64 = m.indexes.iter().map(|i| i.end_seq - i.first_seq).sum();
        println!("manifest {name}");
        println!("  version         {} (commit {}, parent {})", m.version, m.commit_id, m.parent_commit_id.as_deref().unwrap_or("none"));
        println!("  incarnation     {}", m.incarnation);
        println!("  next seq        {} (last event at {} UTC)", m.next_seq, crate::remote::utc(m.last_ts));
        println!("  id window from  {}", m.window_start);
        println!("  index objects   {} covering {idx_events} events", m.indexes.len());
        for i in &m.indexes {
            println!("    {:<40} seqs {}..{}  {} bytes", i.name, i.first_seq, i.end_seq, i.bytes);
        }
        println!("  recent segments {} ({seg_bytes} bytes)", m.segments.len());
        for s in m.segments.iter().rev().take(5) {
            println!("    {:<40} seqs {}..{}  {} bytes", s.name, s.base_seq, s.end_seq(), s.bytes);
        }
        println!("  retired         {} objects awaiting their grace period", m.retired.len());
        println!("  size            {} bytes (hard cap {})", body.len(), manifest::MAX_MANIFEST_BYTES);
    } else if let Ok(r) = serde_json::from_value::<manifest::Root>(v.clone()) {
        println!("root {name}: incarnation {}, created {} UTC", r.incarnation, crate::remote::utc(r.created_ms));
    } else if let Ok(b) = serde_json::from_value::<manifest::Boundary>(v) {
        println!("GC boundary {name}: manifest versions below {} may be deleted", b.floor);
    } else {
        bail!("{name}: JSON, but not a manifest, root or GC boundary");
    }
    Ok(())
}
