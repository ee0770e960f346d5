//! Lazy reads: NDJSON parsed line by line as it arrives, resumed after the
//! last event returned when the connection drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::{header, Method};

use crate::error::{Error, Result};
use crate::event::{parse_line, Line, RecordedEvent};
use crate::Store;

/// The order of a stream read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Forward,
    Backward,
}

/// How to read one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamRead {
    direction: Direction,
    from: Option<u64>,
    limit: Option<u64>,
    tag: Option<String>,
}

impl StreamRead {
    /// Oldest first, from revision 0.
    pub fn forward() -> Self {
        StreamRead::default()
    }

    /// Newest first, from the last event.
    pub fn backward() -> Self {
        StreamRead { direction: Direction::Backward, ..StreamRead::default() }
    }

    /// Start at this revision (included).
    pub fn from(mut self, revision: u64) -> Self {
        self.from = Some(revision);
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Only events with tag `key:value`.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tag = Some(format!("{key}:{value}"));
        self
    }
}

#[derive(Clone)]
enum Target {
    Store,
    Stream { name: String, backward: bool },
}

/// What a [`Reader`] hands out.
pub(crate) enum Item {
    Event(RecordedEvent),
    /// The read is complete (the position is where to continue).
    End,
}

/// The body of one answer, split into lines as it arrives. Lines inside
/// a chunk are handed out without copying; only a line split between two
/// chunks is copied together.
struct LineBody {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    chunk: Bytes,
    partial: BytesMut,
}

impl LineBody {
    fn new(body: BoxStream<'static, reqwest::Result<Bytes>>) -> LineBody {
        LineBody { body, chunk: Bytes::new(), partial: BytesMut::new() }
    }

    /// The next line; `Ok(None)` at the end of the body. A last line
    /// without its newline was cut off and is dropped.
    async fn next_line(&mut self) -> std::result::Result<Option<Bytes>, reqwest::Error> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.chunk) {
                let line = self.chunk.split_to(i + 1);
                if self.partial.is_empty() {
                    return Ok(Some(line.slice(..i)));
                }
                self.partial.extend_from_slice(&line[..i]);
                return Ok(Some(self.partial.split().freeze()));
            }
            if !self.chunk.is_empty() {
                self.partial.extend_from_slice(&self.chunk);
                self.chunk = Bytes::new();
            }
            match self.body.next().await {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(None),
            }
        }
    }
}

/// One logical read, over as many requests as failures need.
pub(crate) struct Reader {
    store: Store,
    target: Target,
    /// The position to ask for next (`None`: the stream's default start).
    pos: Option<u64>,
    limit: Option<u64>,
    tag: Option<String>,
    /// Long-poll seconds.
    wait: u64,
    body: Option<LineBody>,
    /// Failures since the last progress.
    failures: u32,
}

impl Reader {
    pub(crate) fn store(store: Store, from: u64, limit: Option<u64>, tag: Option<String>, wait: u64) -> Reader {
        Reader { store, target: Target::Store, pos: Some(from), limit, tag, wait, body: None, failures: 0 }
    }

    pub(crate) fn stream(store: Store, name: String, how: StreamRead, wait: u64) -> Reader {
        let backward = how.direction == Direction::Backward;
        Reader { store, target: Target::Stream { name, backward }, pos: how.from, limit: how.limit, tag: how.tag, wait, body: None, failures: 0 }
    }

    /// The position the next request would start at.
    pub(crate) fn position(&self) -> Option<u64> {
        self.pos
    }

    fn url(&self) -> reqwest::Url {
        let c = &self.store.client;
        let mut url = match &self.target {
            Target::Store => c.url(&["stores", &self.store.name, "events"]),
            Target::Stream { name, .. } => c.url(&["stores", &self.store.name, "streams", name, "events"]),
        };
        {
            let mut q = url.query_pairs_mut();
            if let Some(p) = self.pos {
                q.append_pair("from", &p.to_string());
            }
            if let Target::Stream { backward: true, .. } = self.target {
                q.append_pair("direction", "backward");
            }
            if let Some(l) = self.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(t) = &self.tag {
                q.append_pair("tag", t);
            }
            if self.wait > 0 {
                q.append_pair("wait", &self.wait.to_string());
            }
        }
        url
    }

    async fn open(&mut self) -> Result<()> {
        let url = self.url();
        let c = &self.store.client;
        let make = || c.request_url(Method::GET, url.clone()).header(header::ACCEPT, "application/x-ndjson");
        let resp = c.try_send_timed(make).await.0?;
        self.body = Some(LineBody::new(resp.bytes_stream().boxed()));
        Ok(())
    }

    /// A failure: retried (after a pause) while it is safe and within the
    /// client's retry budget, else returned.
    async fn failed(&mut self, e: Error) -> Result<()> {
        self.body = None;
        if !e.is_retry_safe() || self.failures >= self.store.client.retries {
            return Err(e);
        }
        tracing::debug!(error = %e, "read interrupted; resuming");
        tokio::time::sleep(self.store.client.pause(self.failures, e.retry_after())).await;
        self.failures += 1;
        Ok(())
    }

    pub(crate) async fn next_item(&mut self) -> Result<Item> {
        loop {
            if self.limit == Some(0) {
                return Ok(Item::End);
            }
            if self.body.is_none() {
                if let Err(e) = self.open().await {
                    self.failed(e).await?;
                    continue;
                }
            }
            let Some(body) = self.body.as_mut() else { continue };
            let line = match body.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    self.failed(Error::new(crate::ErrorKind::Unavailable, "the read was cut off")).await?;
                    continue;
                }
                Err(e) => {
                    self.failed(Error::transport(e, false)).await?;
                    continue;
                }
            };
            match parse_line(&line)? {
                Line::Event(e) => {
                    self.failures = 0;
                    self.pos = match self.target {
                        Target::Store => Some(e.seq + 1),
                        Target::Stream { backward: false, .. } => Some(e.revision + 1),
                        Target::Stream { backward: true, .. } => e.revision.checked_sub(1),
                    };
                    if let Some(l) = &mut self.limit {
                        *l -= 1;
                    }
                    if self.pos.is_none() {
                        // A backward read reached revision 0: nothing before.
                        self.limit = Some(0);
                    }
                    return Ok(Item::Event(e));
                }
                Line::Next(next) => {
                    self.body = None;
                    self.failures = 0;
                    if let (Target::Store | Target::Stream { backward: false, .. }, Some(n)) = (&self.target, next) {
                        self.pos = Some(n);
                    }
                    return Ok(Item::End);
                }
                Line::Error(e) => self.failed(e).await?,
            }
        }
    }

    /// Starts another request from the current position.
    pub(crate) fn set_wait(&mut self, secs: u64) {
        self.wait = secs;
    }
}

/// Events of a read, as a [`Stream`]; the first error ends it.
pub struct Events {
    inner: BoxStream<'static, Result<RecordedEvent>>,
}

impl Events {
    pub(crate) fn store(store: Store, from: u64, limit: Option<u64>, tag: Option<String>) -> Events {
        Events::from_reader(Reader::store(store, from, limit, tag, 0))
    }

    pub(crate) fn stream(store: Store, name: String, how: StreamRead) -> Events {
        Events::from_reader(Reader::stream(store, name, how, 0))
    }

    fn from_reader(reader: Reader) -> Events {
        let inner = futures::stream::unfold(Some(reader), |r| async move {
            let mut r = r?;
            match r.next_item().await {
                Ok(Item::Event(e)) => Some((Ok(e), Some(r))),
                Ok(Item::End) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Events { inner: inner.boxed() }
    }

    /// Everything, collected (for small reads).
    pub async fn collect_all(self) -> Result<Vec<RecordedEvent>> {
        futures::TryStreamExt::try_collect(self).await
    }
}

impl Stream for Events {
    type Item = Result<RecordedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
