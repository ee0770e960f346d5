//! `cairn import` and `cairn export`: NDJSON in and out, in batches, with a
//! progress bar on the terminal.

use std::io::{BufRead, BufWriter, Write};

use anyhow::{bail, Context};
use clap::Args;
use futures::TryStreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::remote::{EventIn, Remote};

fn bar(total: Option<u64>) -> ProgressBar {
    // Drawn on stderr, and only when it is a terminal.
    match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:32} {human_pos}/{human_len} events  {per_sec}  {msg}  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {human_pos} events  {per_sec}  {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())),
    }
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn export shop --out shop.ndjson
  cairn export shop --from 1000000 | gzip > tail.ndjson.gz

One event a line, exactly as the API reads them back:
  {\"seq\",\"stream\",\"revision\",\"type\",\"timestamp\",\"id\",\"tags\",\"data\" | \"data_b64\"}
The export stops at the store's end as of its start.")]
pub struct ExportCmd {
    store: String,
    /// The first seq to export (default: the store's first seq, where
    /// retention left it).
    #[arg(long)]
    from: Option<u64>,
    /// Write here instead of stdout.
    #[arg(short, long)]
    out: Option<std::path::PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

impl ExportCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        let store = self.remote.client()?.store(&self.store);
        let info = store.info().await.with_context(|| format!("store {}", self.store))?;
        let (from, end) = (self.from.unwrap_or(info.first_seq), info.next_seq);
        let total = end.saturating_sub(from);
        let sink: Box<dyn Write> = match &self.out {
            Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut out = BufWriter::with_capacity(1 << 20, sink);
        let pb = bar(Some(total));
        let (mut n, mut bytes) = (0u64, 0u64);
        if total > 0 {
            let mut events = store.read_with(from, Some(total), None);
            while let Some(e) = events.try_next().await? {
                let mut line = serde_json::to_vec(&e)?;
                line.push(b'\n');
                out.write_all(&line)?;
                n += 1;
                bytes += e.data.len() as u64;
                if n.is_multiple_of(4096) {
                    pb.set_position(n);
                    pb.set_message(HumanBytes(bytes).to_string());
                }
            }
        }
        out.flush()?;
        pb.finish_and_clear();
        eprintln!("exported {n} events ({} of data) from store {}", HumanBytes(bytes), self.store);
        Ok(())
    }
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn import copy shop.ndjson --create
  zcat tail.ndjson.gz | cairn import copy

Reads what `export` writes (seq and revision are ignored: the target store
assigns its own), or any NDJSON of events that name their stream. Events
keep their ids, so importing the same file again with the same --batch
appends nothing twice (within the store's idempotency window). Each batch
is atomic; the import as a whole is not.")]
pub struct ImportCmd {
    store: String,
    /// NDJSON file; `-` or nothing is stdin.
    file: Option<String>,
    /// Events per append.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Create the store if it does not exist.
    #[arg(long)]
    create: bool,
    #[command(flatten)]
    remote: Remote,
}

impl ImportCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let store = self.remote.client()?.store(&self.store);
        if self.create {
            store.create().await?;
        }
        let input: Box<dyn BufRead> = match self.file.as_deref() {
            None | Some("-") => Box::new(std::io::stdin().lock()),
            Some(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(f).with_context(|| format!("opening {f}"))?)),
        };
        // Lines are not counted ahead: a spinner with events/s and bytes.
        let pb = bar(None);
        let (mut n, mut bytes, mut dup) = (0u64, 0u64, 0u64);
        let mut batch = Vec::with_capacity(self.batch);
        let mut batch_bytes = 0usize;
        let mut lines = input.lines().enumerate();
        loop {
            let next = lines.next();
            if let Some((i, line)) = &next {
                let line = line.as_ref().map_err(|e| anyhow::anyhow!("reading line {}: {e}", i + 1))?;
                if !line.trim().is_empty() {
                    let e: EventIn = serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
                    let e = e.into_event().with_context(|| format!("line {}", i + 1))?;
                    if e.stream_name().is_none() {
                        bail!("line {}: the event names no stream", i + 1);
                    }
                    batch_bytes += line.len();
                    batch.push(e);
                }
            }
            // Bounded by events and by bytes (the node's body limit is 64 MiB).
            if batch.len() >= self.batch || batch_bytes >= 16 << 20 || (next.is_none() && !batch.is_empty()) {
                let k = batch.len() as u64;
                let a = store.append_many(std::mem::take(&mut batch), []).await.with_context(|| format!("appending events {}..{}", n + 1, n + k))?;
                if a.deduplicated {
                    dup += k;
                }
                n += k;
                bytes += batch_bytes as u64;
                batch_bytes = 0;
                pb.set_position(n);
                pb.set_message(HumanBytes(bytes).to_string());
            }
            if next.is_none() {
                break;
            }
        }
        pb.finish_and_clear();
        eprintln!("imported {n} events ({} of NDJSON) into store {}{}", HumanBytes(bytes), self.store, if dup > 0 { format!("; {dup} were already there") } else { String::new() });
        Ok(())
    }
}
