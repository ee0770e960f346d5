//! The exercise of the fast-projections seed, on a real Cairn node and the
//! real projection runner:
//!
//! ```sh
//! cargo run --release --example video_views                 # a node in this process
//! CAIRN_URL=http://127.0.0.1:7070 cargo run --release --example video_views
//! ```
//!
//! A video service's stream holds 3500 historic views and 50 historic
//! bookmarks; 100 live views follow while the projection runs. The view
//! counts views per viewer. Its storage is the seed's: it executes single
//! statements (cost 1 each) or batches (1 + 0.1 per statement, the
//! checkpoint included); here each execution is a real compare-and-swap
//! write of a Cairn doc. Four strategies, one line each:
//!
//! 1. checkpoint after every event: 7250;
//! 2. checkpoint only after handled events: 7200;
//! 3. batches of 100 while catching up, every event once live: about 93% less;
//! 4. the same, with each batch aggregated by viewer first.
#![allow(dead_code)]

#[path = "../tests/support/node.rs"]
pub mod node;

use std::collections::BTreeMap;
use std::time::Duration;
use cairn_client::projection::{Options, Projection, Runner, Sink};
use cairn_client::{Client, Error, ErrorKind, EventData, Expected, Precondition, RecordedEvent, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const HISTORIC_VIEWS: usize = 3500;
pub const HISTORIC_BOOKMARKS: usize = 50;
pub const LIVE_VIEWS: usize = 100;
const VIEWERS: usize = 3;

/// The seed's one kind of statement (the checkpoint is the other).
#[derive(Clone, Debug)]
pub struct Increment {
    viewer: String,
    by: u64,
}

/// Maps each view to one statement.
struct PerEvent;

impl Projection for PerEvent {
    type Write = Increment;
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<Increment>) {
        out.extend(events.iter().filter(|e| e.event_type == "VideoViewed").filter_map(viewer).map(|viewer| Increment { viewer, by: 1 }));
    }
}

/// Counts a batch's views per viewer first: one statement per viewer.
struct Aggregated;

impl Projection for Aggregated {
    type Write = Increment;
    fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<Increment>) {
        let mut n = BTreeMap::<String, u64>::new();
        for v in events.iter().filter(|e| e.event_type == "VideoViewed").filter_map(viewer) {
            *n.entry(v).or_default() += 1;
        }
        out.extend(n.into_iter().map(|(viewer, by)| Increment { viewer, by }));
    }
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Protocol, e.to_string())
}

fn viewer(e: &RecordedEvent) -> Option<String> {
    e.json::<serde_json::Value>().ok()?["viewer"].as_str().map(str::to_string)
}

/// What the doc holds: view counts and the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub checkpoint: Option<u64>,
    pub views: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Execution {
    /// Each statement alone, the checkpoint too.
    OneByOne,
    /// The statements and the checkpoint in one batch.
    Batched,
}

/// The seed's storage engine: executes statements, alone or in a batch,
/// against a doc in Cairn, and keeps the seed's cost in tenths of a unit.
struct StatementStore {
    store: Store,
    key: String,
    execution: Execution,
    state: Counts,
    etag: Option<String>,
    cost_tenths: u64,
    executions: u64,
}

impl StatementStore {
    fn new(store: Store, key: &str, execution: Execution) -> Self {
        StatementStore { store, key: key.into(), execution, state: Counts::default(), etag: None, cost_tenths: 0, executions: 0 }
    }

    /// One execution: the doc replaced, if no one else changed it.
    async fn execute(&mut self) -> Result<(), Error> {
        let body = serde_json::to_vec(&self.state).map_err(bad)?;
        let pre = self.etag.take().map_or(Precondition::Absent, Precondition::Matches);
        self.etag = Some(self.store.put_doc(&self.key, body, "application/json", pre).await?);
        self.executions += 1;
        Ok(())
    }
}

impl Sink for StatementStore {
    type Write = Increment;

    async fn checkpoint(&mut self) -> Result<Option<u64>, Error> {
        if let Some(d) = self.store.get_doc(&self.key).await? {
            self.state = serde_json::from_slice(&d.body).map_err(bad)?;
            self.etag = Some(d.etag);
        }
        Ok(self.state.checkpoint)
    }

    async fn commit(&mut self, writes: Vec<Increment>, last_seq: u64) -> Result<(), Error> {
        match self.execution {
            Execution::OneByOne => {
                for w in writes {
                    *self.state.views.entry(w.viewer).or_default() += w.by;
                    self.execute().await?;
                    self.cost_tenths += 10;
                }
                self.state.checkpoint = Some(last_seq);
                self.execute().await?;
                self.cost_tenths += 10;
            }
            Execution::Batched => {
                let statements = writes.len() as u64 + 1;
                for w in writes {
                    *self.state.views.entry(w.viewer).or_default() += w.by;
                }
                self.state.checkpoint = Some(last_seq);
                self.execute().await?;
                self.cost_tenths += 10 + statements;
            }
        }
        Ok(())
    }
}

/// One strategy's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub strategy: &'static str,
    /// The seed's cost, in tenths of a unit (exact).
    pub cost_tenths: u64,
    /// Doc writes made.
    pub writes: u64,
    /// The view at the end, as stored.
    pub counts: Counts,
    /// Views in the store per viewer, counted from scratch.
    pub expected: BTreeMap<String, u64>,
}

fn view_event(i: usize) -> EventData {
    let data = json!({"viewer": format!("viewer-{}", i % VIEWERS), "video": format!("video-{}", i % 17)});
    EventData::json("VideoViewed", &data).expect("JSON")
}

/// 3500 views with 50 bookmarks among them (every 71st event).
fn historic() -> Vec<EventData> {
    (0..HISTORIC_VIEWS + HISTORIC_BOOKMARKS)
        .map(|i| {
            if i % 71 == 70 {
                EventData::json("VideoBookmarked", &json!({"viewer": format!("viewer-{}", i % VIEWERS), "video": "video-1"})).expect("JSON")
            } else {
                view_event(i)
            }
        })
        .collect()
}

async fn strategy<P: Projection<Write = Increment>>(client: &Client, n: usize, strategy: &'static str, projection: P, execution: Execution, options: Options) -> Result<Outcome, Error> {
    let store = client.store(&format!("video-views-{n}"));
    store.delete().await.or_else(|e| if e.kind() == ErrorKind::NotFound { Ok(()) } else { Err(e) })?;
    store.create().await?;
    store.append("videos", historic(), Expected::NoStream).await?;
    let sink = StatementStore::new(store.clone(), "views", execution);
    let mut runner = Runner::new(store.clone(), projection, sink).options(options);
    let mut progress = runner.progress();
    // The live views come one by one, each after the view has caught up.
    let live = async {
        progress.wait_for(|p| p.caught_up).await.map_err(bad)?;
        for i in 0..LIVE_VIEWS {
            let at = store.append("videos", vec![view_event(i)], Expected::Any).await?;
            progress.wait_for(|p| p.position > at.last_seq).await.map_err(bad)?;
        }
        Ok::<_, Error>(())
    };
    tokio::select! {
        r = runner.run() => r?,
        r = live => r?,
    }
    let (_, sink) = runner.into_parts();
    let mut expected = BTreeMap::new();
    for e in store.read(0).collect_all().await? {
        if e.event_type == "VideoViewed" {
            *expected.entry(viewer(&e).unwrap_or_default()).or_default() += 1;
        }
    }
    let stored: Counts = match store.get_doc("views").await? {
        Some(d) => serde_json::from_slice(&d.body).map_err(bad)?,
        None => Counts::default(),
    };
    Ok(Outcome { strategy, cost_tenths: sink.cost_tenths, writes: sink.executions, counts: stored, expected })
}

/// Runs the four strategies against the node at `url`.
pub async fn run(url: &str) -> Result<Vec<Outcome>, Error> {
    let client = Client::new(url)?;
    let one = Options { batch_size: 1, ..Options::default() };
    // The seed flushes by count only while catching up: no timer.
    let hundred = Options { batch_size: 100, flush_interval: Duration::from_secs(3600), ..Options::default() };
    Ok(vec![
        strategy(&client, 1, "checkpoint after every event", PerEvent, Execution::OneByOne, one.clone()).await?,
        strategy(&client, 2, "checkpoint only after handled events", PerEvent, Execution::OneByOne, Options { commit_empty: false, ..one }).await?,
        strategy(&client, 3, "batch (100 while catching up, every event once live)", PerEvent, Execution::Batched, hundred.clone()).await?,
        strategy(&client, 4, "batch with aggregation by viewer", Aggregated, Execution::Batched, hundred).await?,
    ])
}

pub fn line(o: &Outcome, baseline: u64) -> String {
    let saved = 100.0 * (1.0 - o.cost_tenths as f64 / baseline as f64);
    format!("{:<55} {:>6}.{} units ({saved:>4.1}% less, {} doc writes)", o.strategy, o.cost_tenths / 10, o.cost_tenths % 10, o.writes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (url, _node) = match std::env::var("CAIRN_URL") {
            Ok(u) => (u, None),
            Err(_) => {
                let n = node::Node::memory().await;
                (n.url.clone(), Some(n))
            }
        };
        eprintln!("node: {url}; {HISTORIC_VIEWS} historic views, {HISTORIC_BOOKMARKS} bookmarks, {LIVE_VIEWS} live views");
        let started = std::time::Instant::now();
        let outcomes = run(&url).await?;
        let baseline = outcomes[0].cost_tenths;
        for o in &outcomes {
            if o.counts.views != o.expected {
                return Err(format!("{}: the view {:?} is not the count {:?}", o.strategy, o.counts.views, o.expected).into());
            }
            println!("{}", line(o, baseline));
        }
        eprintln!("took {:.1?}", started.elapsed());
        Ok(())
    })
}
