//! `cairn bench`: a load generator against a node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cairn_client::{EventData, Expected};
use clap::{Args, ValueEnum};
use futures::TryStreamExt;

use crate::remote::Remote;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Appends of --events events of --size bytes each, by --clients at once.
    Append,
    /// Full scans of the store from seq 0, by --clients at once.
    Read,
}

#[derive(Args)]
#[command(after_help = "\
Examples:
  cairn bench append --clients 64 --events 1 --seconds 10      single-event latency
  cairn bench append --clients 16 --events 1000 --size 100     throughput
  cairn bench read --clients 2 --seconds 10                     scans of what was appended

Appends go to --streams streams of store --store (created if needed), each
request one atomic batch. Prints requests/s, events/s, MB/s of event data and
the latency percentiles of the requests (of whole scans for `read`).")]
pub struct BenchCmd {
    #[arg(value_enum)]
    workload: Workload,
    /// The store to load (created if needed; appends add to it).
    #[arg(long, default_value = "bench")]
    store: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Events per append.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Bytes of data per event (a JSON string of that length, about).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Streams the appends spread over.
    #[arg(long, default_value_t = 1000)]
    streams: u64,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(flatten)]
    remote: Remote,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

impl BenchCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.clients == 0 || self.events == 0 || self.streams == 0 {
            bail!("--clients, --events and --streams must be at least 1");
        }
        let store = self.remote.client()?.store(&self.store);
        store.create().await?;
        let deadline = Instant::now() + Duration::from_secs(self.seconds);
        let events = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..self.clients {
            let (store, events, bytes) = (store.clone(), events.clone(), bytes.clone());
            let (workload, per, size, streams) = (self.workload, self.events, self.size, self.streams);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let pad = "x".repeat(size.saturating_sub(2));
                let mut i = client as u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match workload {
                        Workload::Append => {
                            let batch: Vec<_> = (0..per).map(|_| EventData::raw_json("BenchEvent", format!("\"{pad}\"")).expect("a JSON string")).collect();
                            store.append(&format!("bench-{}", i % streams), batch, Expected::Any).await?;
                            events.fetch_add(per as u64, Ordering::Relaxed);
                            bytes.fetch_add((per * size) as u64, Ordering::Relaxed);
                        }
                        Workload::Read => {
                            let mut scan = store.read(0);
                            while let Some(e) = scan.try_next().await? {
                                events.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(e.data.len() as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    lat.push(t.elapsed());
                    i += 7919;
                }
                Ok::<_, cairn_client::Error>(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let took = started.elapsed().as_secs_f64();
        lat.sort();
        let (n, b) = (events.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
        let what = match self.workload {
            Workload::Append => format!("append: {} clients, {} events of {} B per request, {} streams", self.clients, self.events, self.size, self.streams),
            Workload::Read => format!("read: {} clients scanning store {}", self.clients, self.store),
        };
        println!("{what}");
        println!("  requests  {} in {took:.1} s: {:.0}/s", lat.len(), lat.len() as f64 / took);
        println!("  events    {n}: {:.0}/s, {:.1} MB/s of data", n as f64 / took, b as f64 / took / 1e6);
        println!(
            "  latency   p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  p99.9 {:.2?}  max {:.2?}",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            lat.last().copied().unwrap_or_default()
        );
        Ok(())
    }
}
