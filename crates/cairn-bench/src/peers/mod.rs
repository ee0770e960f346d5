//! The systems under test, behind one interface: appends with per-stream
//! optimistic concurrency, bulk loading, catch-up reads, one-stream reads
//! and live tails.

pub mod cairn;
pub mod nats;
pub mod postgres;

use anyhow::Result;
use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

/// The event type every benchmark event carries.
pub const EVENT_TYPE: &str = "BenchEvent";

/// An event to append: a unique id (for idempotent retries where the
/// system has them) and JSON data.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: Uuid,
    pub data: Bytes,
}

impl Event {
    /// An event whose JSON data is exactly `size` bytes (at least the
    /// bytes of `{"i":N,"p":""}`), carrying `i` so that a reader can tell
    /// which event it is.
    pub fn new(i: u64, size: usize) -> Event {
        let head = format!("{{\"i\":{i},\"p\":\"");
        let pad = size.saturating_sub(head.len() + 2);
        let mut s = String::with_capacity(head.len() + pad + 2);
        s.push_str(&head);
        s.extend(std::iter::repeat_n('x', pad));
        s.push_str("\"}");
        Event { id: Uuid::new_v4(), data: Bytes::from(s) }
    }

    /// The `i` of data made by [`Event::new`].
    pub fn index_of(data: &[u8]) -> Option<u64> {
        let rest = data.strip_prefix(b"{\"i\":".as_slice())?;
        let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
    }
}

/// The read corpus: `total` events over `streams` streams named `r-K`;
/// event `k` belongs to stream `r-{k % streams}` and is its revision
/// `k / streams`.
#[derive(Clone, Copy, Debug)]
pub struct Corpus {
    pub total: u64,
    pub streams: u64,
    pub size: usize,
}

impl Corpus {
    pub fn stream_of(&self, k: u64) -> String {
        format!("r-{}", k % self.streams)
    }

    /// How many events stream `r-j` holds.
    pub fn events_in(&self, j: u64) -> u64 {
        self.total / self.streams + u64::from(j < self.total % self.streams)
    }
}

/// What a read returned.
#[derive(Clone, Copy, Debug, Default)]
pub struct Read {
    pub events: u64,
    /// Bytes of event data handed to the caller.
    pub bytes: u64,
}

impl Read {
    pub fn add(&mut self, data_len: usize) {
        self.events += 1;
        self.bytes += data_len as u64;
    }
}

/// The stream already holds events this writer did not expect: the
/// optimistic concurrency check refused the append, and nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("the stream's revision is not the one expected")]
pub struct Conflict;

/// Whether an append's error is the concurrency check.
pub fn is_conflict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Conflict>().is_some()
}

#[async_trait]
pub trait Peer: Send + Sync {
    fn name(&self) -> &'static str;

    /// A writer, as one client of the system would hold it (a connection
    /// for PostgreSQL; a handle on the shared connection or HTTP pool for
    /// the others). `live`: live readers wait on its appends (only
    /// PostgreSQL needs telling: its appends then NOTIFY).
    async fn session(&self, live: bool) -> Result<Box<dyn Session>>;

    /// Writes the corpus by the fastest path the system has (the load is
    /// not measured).
    async fn load(&self, corpus: Corpus) -> Result<()>;

    /// Reads the first `total` events of the store in order, from a new
    /// connection.
    async fn catch_up(&self, total: u64) -> Result<Read>;

    /// Reads every event of one stream in order.
    async fn read_stream(&self, stream: &str) -> Result<Read>;

    /// Follows `stream` from its end: the next events appended to it.
    async fn tail(&self, stream: &str) -> Result<Box<dyn Tail>>;

    /// Moves the loaded history into the layout the system keeps for old
    /// data, if it has one besides the one it loaded into, and answers how
    /// long that took. Cairn seals it into archives (events grouped by
    /// stream), as a store with a tiering policy does; the peers have no
    /// such step (PostgreSQL's indexes are built as it loads).
    async fn seal_history(&self) -> Result<Option<std::time::Duration>> {
        Ok(None)
    }
}

#[async_trait]
pub trait Session: Send {
    /// Appends `events` to `stream` atomically, expecting the stream to be
    /// where this session left it (new, if it never wrote to it): an error
    /// holding [`Conflict`] if it is not. The answer means the events are
    /// durable.
    async fn append(&mut self, stream: &str, events: Vec<Event>) -> Result<()>;
}

#[async_trait]
pub trait Tail: Send {
    /// The data of the next event of the followed stream.
    async fn next(&mut self) -> Result<Bytes>;
}
