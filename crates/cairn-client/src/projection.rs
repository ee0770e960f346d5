//! Projections that batch and checkpoint (the fast-projections seed).
//!
//! A [`Projection`] maps a batch of events to writes; a [`Sink`] applies
//! the writes and the checkpoint (the seq of the batch's last event) in one
//! atomic step; the [`Runner`] feeds one to the other:
//!
//! - while catching up it buffers events and flushes every
//!   [`Options::batch_size`] events or [`Options::flush_interval`],
//!   whichever comes first;
//! - once caught up it flushes what arrived as soon as it arrives (after
//!   [`Options::live_linger`], zero by default);
//! - it starts from the sink's checkpoint, so with an atomic sink a crash
//!   never applies an event twice and never skips one.
//!
//! [`DocView`] is the sink most projections want: the whole view and its
//! checkpoint in one Cairn doc, written with compare-and-swap.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use cairn_client::projection::{DocView, Projection, Runner, View};
//! use cairn_client::{Client, RecordedEvent};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct PerType(BTreeMap<String, u64>);
//!
//! impl View for PerType {
//!     type Write = (String, u64);
//!     fn apply(&mut self, (t, n): (String, u64)) {
//!         *self.0.entry(t).or_default() += n;
//!     }
//! }
//!
//! struct CountTypes;
//!
//! impl Projection for CountTypes {
//!     type Write = (String, u64);
//!     // Aggregates the batch: one write per type, not one per event.
//!     fn project(&mut self, events: &[RecordedEvent], out: &mut Vec<(String, u64)>) {
//!         let mut n = BTreeMap::<&str, u64>::new();
//!         for e in events {
//!             *n.entry(&e.event_type).or_default() += 1;
//!         }
//!         out.extend(n.into_iter().map(|(t, c)| (t.to_string(), c)));
//!     }
//! }
//!
//! # async fn demo() -> cairn_client::Result<()> {
//! let store = Client::new("http://127.0.0.1:7070")?.store("shop");
//! let view = DocView::<PerType>::new(store.clone(), "per-type");
//! Runner::new(store, CountTypes, view).run().await
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::{Message, Precondition, RecordedEvent, Store};

/// Maps events to writes. It sees each batch once, in order, and should
/// keep no state of its own between batches (state belongs in the sink,
/// where the checkpoint protects it); it may aggregate within a batch.
pub trait Projection: Send {
    type Write: Send;

    fn project(&mut self, events: &[RecordedEvent], writes: &mut Vec<Self::Write>);
}

/// Where a projection's writes go, with the checkpoint beside them.
pub trait Sink: Send {
    type Write: Send;

    /// The seq of the last event the view holds (`None`: nothing yet).
    /// Called when a runner starts; a sink whose commit failed must reload
    /// its state here.
    fn checkpoint(&mut self) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Applies `writes` and moves the checkpoint to `last_seq`, atomically:
    /// after a crash either both happened or neither did.
    fn commit(&mut self, writes: Vec<Self::Write>, last_seq: u64) -> impl Future<Output = Result<()>> + Send;
}

/// How a [`Runner`] batches.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events per flush, at most (default 1000).
    pub batch_size: usize,
    /// A buffered event waits at most this long for its flush while
    /// catching up (default 1 s).
    pub flush_interval: Duration,
    /// Once caught up, how long to wait for more events before flushing
    /// what arrived (default 0: flush at once).
    pub live_linger: Duration,
    /// Whether a batch that gave no writes still moves the checkpoint
    /// (default true; false saves writes when most events are ignored, at
    /// the price of re-reading them after a restart).
    pub commit_empty: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { batch_size: 1000, flush_interval: Duration::from_secs(1), live_linger: Duration::ZERO, commit_empty: true }
    }
}

/// Where a runner is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The seq the runner reads next: every event before it has been
    /// handed to the projection and flushed.
    pub position: u64,
    /// The sink's checkpoint.
    pub checkpoint: Option<u64>,
    /// Whether the runner has reached the end of the store (it stays true
    /// while it follows live).
    pub caught_up: bool,
    /// Commits made to the sink by this runner.
    pub commits: u64,
    /// Events handed to the projection by this runner.
    pub events: u64,
}

/// Feeds a store's events to a projection and its writes to a sink.
pub struct Runner<P, S> {
    store: Store,
    projection: P,
    sink: S,
    options: Options,
    progress: watch::Sender<Progress>,
}

impl<P, S> Runner<P, S>
where
    P: Projection,
    S: Sink<Write = P::Write>,
{
    pub fn new(store: Store, projection: P, sink: S) -> Self {
        Runner { store, projection, sink, options: Options::default(), progress: watch::channel(Progress::default()).0 }
    }

    pub fn options(mut self, options: Options) -> Self {
        self.options = Options { batch_size: options.batch_size.max(1), ..options };
        self
    }

    /// Watches the runner's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn into_parts(self) -> (P, S) {
        (self.projection, self.sink)
    }

    /// Catches up, then follows the store live; returns only on an error
    /// that is not safe to retry (the store deleted, the sink failing,
    /// another runner writing the same view).
    pub async fn run(&mut self) -> Result<()> {
        self.drive(false).await
    }

    /// Catches up with the store as it is now, flushes, and returns.
    pub async fn catch_up(&mut self) -> Result<Progress> {
        self.drive(true).await?;
        Ok(self.progress.borrow().clone())
    }

    async fn drive(&mut self, until_caught_up: bool) -> Result<()> {
        let checkpoint = self.sink.checkpoint().await?;
        let from = checkpoint.map_or(0, |c| c + 1);
        self.progress.send_modify(|p| *p = Progress { position: from, checkpoint, ..Progress::default() });
        let mut sub = self.store.subscribe(from);
        let mut buf: Vec<RecordedEvent> = Vec::with_capacity(self.options.batch_size.min(100_000));
        let mut deadline: Option<Instant> = None;
        let mut caught_up = false;
        loop {
            let msg = match deadline {
                // The subscription is cancel-safe: what was received stays.
                Some(d) => tokio::time::timeout_at(d, sub.next()).await.ok(),
                None => Some(sub.next().await),
            };
            match msg.transpose()? {
                None => {
                    self.flush(&mut buf).await?;
                    deadline = None;
                }
                Some(Message::Event(e)) => {
                    if buf.is_empty() {
                        deadline = Some(Instant::now() + self.options.flush_interval);
                    }
                    buf.push(e);
                    if buf.len() >= self.options.batch_size {
                        self.flush(&mut buf).await?;
                        deadline = None;
                    }
                }
                Some(Message::CaughtUp { .. }) => {
                    if !caught_up {
                        caught_up = true;
                        self.progress.send_modify(|p| p.caught_up = true);
                    }
                    if !buf.is_empty() {
                        if until_caught_up || self.options.live_linger.is_zero() {
                            self.flush(&mut buf).await?;
                            deadline = None;
                        } else {
                            let linger = Instant::now() + self.options.live_linger;
                            deadline = Some(deadline.map_or(linger, |d| d.min(linger)));
                        }
                    }
                    if until_caught_up {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn flush(&mut self, buf: &mut Vec<RecordedEvent>) -> Result<()> {
        let Some(last) = buf.last().map(|e| e.seq) else { return Ok(()) };
        let mut writes = Vec::new();
        self.projection.project(buf, &mut writes);
        let n = buf.len() as u64;
        buf.clear();
        let commit = !writes.is_empty() || self.options.commit_empty;
        if commit {
            self.sink.commit(writes, last).await?;
        }
        self.progress.send_modify(|p| {
            p.position = last + 1;
            p.events += n;
            if commit {
                p.checkpoint = Some(last);
                p.commits += 1;
            }
        });
        Ok(())
    }
}

/// A view that lives in one doc: the state a [`DocView`] keeps.
pub trait View: Serialize + DeserializeOwned + Default + Send + Sync {
    type Write: Send;

    fn apply(&mut self, write: Self::Write);
}

#[derive(Serialize, Deserialize)]
struct Stored<V> {
    checkpoint: Option<u64>,
    view: V,
}

#[derive(Serialize)]
struct StoredRef<'a, V> {
    checkpoint: Option<u64>,
    view: &'a V,
}

/// A sink that keeps a [`View`] and its checkpoint in one doc,
/// `{"checkpoint": SEQ, "view": ...}`, replaced with compare-and-swap on
/// every commit: the view and the checkpoint can never disagree, and a
/// second runner on the same doc fails (412) instead of corrupting it.
/// Each commit writes the whole view: keep it small, or split it over
/// several docs.
pub struct DocView<V> {
    store: Store,
    key: String,
    view: V,
    checkpoint: Option<u64>,
    etag: Option<String>,
    /// False until loaded, and after a failed commit (the state in memory
    /// may be ahead of the doc).
    loaded: bool,
    bytes: usize,
}

impl<V: View> DocView<V> {
    pub fn new(store: Store, key: &str) -> Self {
        DocView { store, key: key.to_string(), view: V::default(), checkpoint: None, etag: None, loaded: false, bytes: 0 }
    }

    /// The view as of the last commit or load.
    pub fn view(&self) -> &V {
        &self.view
    }

    /// The size of the doc at the last commit or load.
    pub fn doc_bytes(&self) -> usize {
        self.bytes
    }

    /// Reads a view doc: its checkpoint and state (default when absent).
    pub async fn read(store: &Store, key: &str) -> Result<(Option<u64>, V)> {
        Ok(match store.get_doc(key).await? {
            None => (None, V::default()),
            Some(d) => {
                let s: Stored<V> = serde_json::from_slice(&d.body).map_err(|e| Error::new(ErrorKind::Protocol, format!("doc {key:?} is not a view: {e}")))?;
                (s.checkpoint, s.view)
            }
        })
    }

    async fn load(&mut self) -> Result<()> {
        match self.store.get_doc(&self.key).await? {
            None => {
                (self.view, self.checkpoint, self.etag, self.bytes) = (V::default(), None, None, 0);
            }
            Some(d) => {
                let s: Stored<V> = serde_json::from_slice(&d.body).map_err(|e| Error::new(ErrorKind::Protocol, format!("doc {:?} is not a view: {e}", self.key)))?;
                (self.view, self.checkpoint, self.etag, self.bytes) = (s.view, s.checkpoint, Some(d.etag), d.body.len());
            }
        }
        self.loaded = true;
        Ok(())
    }
}

impl<V: View> Sink for DocView<V> {
    type Write = V::Write;

    async fn checkpoint(&mut self) -> Result<Option<u64>> {
        self.load().await?;
        Ok(self.checkpoint)
    }

    async fn commit(&mut self, writes: Vec<V::Write>, last_seq: u64) -> Result<()> {
        if !self.loaded {
            return Err(Error::new(ErrorKind::InvalidInput, "the view must be loaded (Sink::checkpoint) before a commit"));
        }
        self.loaded = false;
        for w in writes {
            self.view.apply(w);
        }
        let body = serde_json::to_vec(&StoredRef { checkpoint: Some(last_seq), view: &self.view }).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("the view does not serialise: {e}")))?;
        let pre = match self.etag.take() {
            Some(t) => Precondition::Matches(t),
            None => Precondition::Absent,
        };
        let bytes = body.len();
        let etag = self.store.put_doc(&self.key, body, "application/json", pre).await.map_err(|e| {
            if e.kind() == ErrorKind::PreconditionFailed {
                Error::new(ErrorKind::Conflict, format!("view doc {:?} was changed by someone else (another runner?): {e}", self.key))
            } else {
                e
            }
        })?;
        (self.etag, self.checkpoint, self.bytes, self.loaded) = (Some(etag), Some(last_seq), bytes, true);
        Ok(())
    }
}
