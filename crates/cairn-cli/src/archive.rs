//! `cairn archive`: build an archive file from a store (through a node),
//! and read one (a local file or an object in storage) with no node
//! running.

use std::io::{BufWriter, Write};

use anyhow::{bail, Context};
use cairn_archive::{Archive, ArchiveOptions, ArchivedEvent, Direction, Key};
use cairn_client::RecordedEvent;
use cairn_format::archive::ArchiveBuilder;
use cairn_format::block::Event;
use clap::{Args, Subcommand};
use futures::TryStreamExt;

use crate::remote::Remote;

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn archive build shop --out shop.arc                       streams as spaces, an index on the type
  cairn archive build shop --out shop.arc --space tag:customer --grouping type --index tag:region
  cairn archive read shop.arc --space order-1 --backwards
  cairn archive read shop.arc --space order-1 --index type=OrderPaid
  cairn archive read shop.arc --index tag:region=eu --limit 10
  cairn archive read --storage s3://bucket/archives shop.arc --space order-1
  cairn inspect shop.arc --verify                                its layout; every checksum

A KEY is `stream`, `type` or `tag:NAME`. The archive's layout is in docs/FORMAT.md;
the cairn-archive crate reads archives from Rust.")]
pub struct ArchiveCmd {
    #[command(subcommand)]
    command: ArchiveSub,
}

#[derive(Subcommand)]
enum ArchiveSub {
    /// Write a store's events (or a range of seqs) as one archive file.
    Build(BuildCmd),
    /// Print events of an archive as NDJSON: a space (one grouping or all),
    /// one indexed value of a space or of the whole archive, or everything.
    Read(ReadArchiveCmd),
}

impl ArchiveCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            ArchiveSub::Build(c) => c.run().await,
            ArchiveSub::Read(c) => c.run().await,
        }
    }
}

fn parse_key(s: &str) -> Result<Key, String> {
    match s {
        "stream" => Ok(Key::Stream),
        "type" => Ok(Key::Type),
        _ => match s.strip_prefix("tag:") {
            Some(k) if !k.is_empty() => Ok(Key::Tag(k.to_string())),
            _ => Err(format!("{s:?} is not a key: use stream, type or tag:NAME")),
        },
    }
}

pub(crate) fn key_name(k: &Key) -> String {
    match k {
        Key::Stream => "stream".into(),
        Key::Type => "type".into(),
        Key::Tag(t) => format!("tag:{t}"),
    }
}

#[derive(Args)]
pub struct BuildCmd {
    store: String,
    /// The archive file to write (through a temporary file and a rename).
    #[arg(short, long)]
    out: std::path::PathBuf,
    /// The first seq to archive.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// One past the last seq to archive (default: the store's end).
    #[arg(long)]
    to: Option<u64>,
    /// What events are grouped by.
    #[arg(long, default_value = "stream", value_parser = parse_key)]
    space: Key,
    /// A grouping within each space, before time order.
    #[arg(long, value_parser = parse_key)]
    grouping: Option<Key>,
    /// A key with a secondary index (repeat for more; default: type).
    #[arg(long = "index", value_parser = parse_key)]
    indexes: Vec<Key>,
    /// No secondary index at all.
    #[arg(long, conflicts_with = "indexes")]
    no_index: bool,
    /// Refuse a range of more events than this: the archive is built in
    /// memory (about 200 bytes an event besides its data).
    #[arg(long, default_value_t = 5_000_000)]
    max_events: u64,
    #[command(flatten)]
    remote: Remote,
}

impl BuildCmd {
    async fn run(self) -> anyhow::Result<()> {
        let store = self.remote.client()?.store(&self.store);
        let end = store.info().await.with_context(|| format!("store {}", self.store))?.next_seq;
        let to = self.to.unwrap_or(end).min(end);
        if to < self.from {
            bail!("--to {to} is before --from {}", self.from);
        }
        if to - self.from > self.max_events {
            bail!(
                "seqs {}..{to} are {} events, more than --max-events {} (an archive is built in memory): archive them in parts with --from and --to",
                self.from,
                to - self.from,
                self.max_events
            );
        }
        let indexes = if self.no_index {
            Vec::new()
        } else if self.indexes.is_empty() {
            vec![Key::Type]
        } else {
            self.indexes
        };
        let opts = ArchiveOptions { space: self.space, grouping: self.grouping, indexes, ..ArchiveOptions::default() };
        let mut builder = ArchiveBuilder::new(opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        if to > self.from {
            let mut events = store.read_with(self.from, Some(to - self.from), None);
            while let Some(e) = events.try_next().await? {
                builder.add(archived(e));
            }
        }
        let n = builder.len();
        let enc = builder.finish().map_err(|e| anyhow::anyhow!("{e}"))?;
        cairn_archive::write_file(&self.out, &enc.bytes).with_context(|| format!("writing {}", self.out.display()))?;
        eprintln!(
            "archived {n} events (seqs {}..{to}) of store {} in {} spaces to {}: {} bytes, {:.1} an event",
            self.from,
            self.store,
            enc.footer.space_count,
            self.out.display(),
            enc.bytes.len(),
            enc.bytes.len() as f64 / n.max(1) as f64
        );
        Ok(())
    }
}

fn archived(e: RecordedEvent) -> ArchivedEvent {
    ArchivedEvent {
        seq: e.seq,
        event: Event {
            stream: e.stream.into(),
            revision: e.revision,
            event_type: e.event_type.into(),
            timestamp: e.timestamp,
            id: e.id.map(|u| *u.as_bytes()),
            tags: e.tags.into_iter().collect(),
            binary: e.binary,
            data: e.data,
        },
    }
}

fn recorded(e: ArchivedEvent) -> RecordedEvent {
    let ev = e.event;
    RecordedEvent {
        seq: e.seq,
        stream: ev.stream.to_string(),
        revision: ev.revision,
        event_type: ev.event_type.to_string(),
        timestamp: ev.timestamp,
        id: ev.id.map(uuid::Uuid::from_bytes),
        tags: ev.tags.into_iter().collect(),
        data: ev.data,
        binary: ev.binary,
    }
}

#[derive(Args)]
pub struct ReadArchiveCmd {
    /// A local file, or an object key when --storage is given.
    path: String,
    /// Read the object from this storage URL (a directory, s3://, az://).
    #[arg(long)]
    storage: Option<String>,
    #[command(flatten)]
    cloud: crate::serve::Cloud,
    /// The space to read (a stream, a type or a tag value, as the archive
    /// was built); without it, the whole archive.
    #[arg(long)]
    space: Option<String>,
    /// Only this grouping of the space.
    #[arg(long, requires = "space")]
    group: Option<String>,
    /// Only events with this value of an indexed key: KEY=VALUE.
    #[arg(long, conflicts_with = "group")]
    index: Option<String>,
    /// Newest first.
    #[arg(long)]
    backwards: bool,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
}

impl ReadArchiveCmd {
    async fn run(self) -> anyhow::Result<()> {
        let archive = match &self.storage {
            None => Archive::open_file(&self.path).await?,
            Some(url) => {
                let (store, path) = crate::inspect::object_at(url, &self.cloud, &self.path)?;
                Archive::open(store, path).await.with_context(|| format!("{} in {url}", self.path))?
            }
        };
        let dir = if self.backwards { Direction::Backward } else { Direction::Forward };
        let index = match &self.index {
            None => None,
            Some(kv) => {
                let Some((k, v)) = kv.split_once('=') else { bail!("--index {kv:?}: use KEY=VALUE, as in type=OrderPaid or tag:region=eu") };
                let key = parse_key(k).map_err(anyhow::Error::msg)?;
                if !archive.footer().indexes.contains(&key) {
                    let have: Vec<String> = archive.footer().indexes.iter().map(key_name).collect();
                    bail!("the archive has no index on {k} (it indexes: {})", if have.is_empty() { "nothing".into() } else { have.join(", ") });
                }
                Some((key, v.to_string()))
            }
        };
        let mut scan = match (&self.space, &index) {
            (None, None) => archive.scan_all(dir),
            (None, Some((k, v))) => archive.scan_value(k, v, dir).await?,
            (Some(s), _) => {
                let Some(space) = archive.space(s).await? else {
                    eprintln!("no space {s:?} in {}", self.path);
                    return Ok(());
                };
                match &index {
                    None => archive.scan(&space, self.group.as_deref(), dir)?,
                    Some((k, v)) => archive.scan_index(&space, k, v, dir).await?,
                }
            }
        };
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let mut left = self.limit.unwrap_or(u64::MAX);
        'outer: while let Some(chunk) = scan.next_chunk().await? {
            for e in chunk {
                if left == 0 {
                    break 'outer;
                }
                left -= 1;
                serde_json::to_writer(&mut out, &recorded(e))?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        Ok(())
    }
}
