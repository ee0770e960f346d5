//! Sample: a continuous projection. Scans a whole store, incrementally and
//! in batches, into a view doc of per-type statistics, then follows it
//! live. Stop it at any moment (Ctrl-C, kill -9): started again, it carries
//! on from the checkpoint stored in the view, with nothing counted twice.
//!
//! ```sh
//! cargo run --release --example continuous -- --store shop
//! curl localhost:7070/v1/stores/shop/docs/stats-by-type
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_client::projection::{DocView, Options, Projection, Runner, View};
use cairn_client::{Client, RecordedEvent};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    store: String,
    /// The doc holding the view and its checkpoint.
    #[arg(long, default_value = "stats-by-type")]
    doc: String,
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Events per batch while catching up.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Stop once caught up instead of following live.
    #[arg(long)]
    once: bool,
}

/// Per event type: events, data bytes, first and last seq.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub types: BTreeMap<String, TypeStats>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TypeStats {
    pub events: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl View for Stats {
    type Write = (String, TypeStats);
    fn apply(&mut self, (t, s): (String, TypeStats)) {
        let e = self.types.entry(t).or_insert_with(|| TypeStats { first_seq: s.first_seq, ..TypeStats::default() });
        e.events += s.events;
        e.bytes += s.bytes;
        e.last_seq = s.last_seq;
    }
}

/// One write per type in the batch, however many events it holds.
struct ByType;

impl Projection for ByType {
    type Write = (String, TypeStats);
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<Self::Write>) {
        let mut per: BTreeMap<&str, TypeStats> = BTreeMap::new();
        for e in events {
            let s = per.entry(&e.event_type).or_insert_with(|| TypeStats { first_seq: e.seq, ..TypeStats::default() });
            s.events += 1;
            s.bytes += e.data.len() as u64;
            s.last_seq = e.seq;
        }
        out.extend(per.into_iter().map(|(t, s)| (t.to_string(), s)));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = Client::builder(&args.url).token(args.token.unwrap_or_default()).build()?.store(&args.store);
    let view = DocView::<Stats>::new(store.clone(), &args.doc);
    let opts = Options { batch_size: args.batch, ..Options::default() };
    let mut runner = Runner::new(store, ByType, view).options(opts);
    let mut progress = runner.progress();
    let report = tokio::spawn(async move {
        let started = Instant::now();
        let mut caught_up = false;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let p = progress.borrow_and_update().clone();
            let rate = p.events as f64 / started.elapsed().as_secs_f64();
            eprintln!("at seq {} ({} events, {} commits, {rate:.0} events/s)", p.position, p.events, p.commits);
            if p.caught_up && !caught_up {
                caught_up = true;
                eprintln!("caught up; following live");
            }
        }
    });
    let result = if args.once { runner.catch_up().await.map(|p| eprintln!("caught up at seq {}", p.position)) } else { runner.run().await };
    report.abort();
    let (_, view) = runner.into_parts();
    if args.once {
        println!("{}", serde_json::to_string_pretty(view.view())?);
    }
    Ok(result?)
}
