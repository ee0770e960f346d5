//! Sample: dump a store to NDJSON (one event a line, as the API writes
//! them), with a progress bar showing events/s and bytes.
//!
//! ```sh
//! cargo run --release --example dump -- --store shop --out shop.ndjson
//! cargo run --release --example dump -- --store shop --from 1000000 > tail.ndjson
//! ```
//!
//! The store is read lazily in one request (resumed if the connection
//! drops), so memory stays flat however large it is. The dump stops at the
//! store's end as of its start.

use std::io::{BufWriter, Write};

use cairn_client::Client;
use clap::Parser;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    store: String,
    /// First seq to dump.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = Client::builder(&args.url).token(args.token.unwrap_or_default()).build()?.store(&args.store);
    let end = store.info().await?.next_seq;
    let total = end.saturating_sub(args.from);
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    // Drawn on stderr, only when it is a terminal.
    let bar = ProgressBar::new(total).with_style(ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  {msg}  eta {eta}")?);
    let mut bytes = 0u64;
    let mut n = 0u64;
    let mut events = store.read_with(args.from, Some(total), None);
    if total > 0 {
        while let Some(e) = events.try_next().await? {
            serde_json::to_writer(&mut out, &e)?;
            out.write_all(b"\n")?;
            bytes += e.data.len() as u64;
            n += 1;
            if n.is_multiple_of(1024) {
                bar.set_position(n);
                bar.set_message(format!("{}", indicatif::HumanBytes(bytes)));
            }
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("dumped {n} events ({}) of store {} from seq {}", indicatif::HumanBytes(bytes), args.store, args.from);
    Ok(())
}
