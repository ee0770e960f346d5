//! Lazy reads: NDJSON parsed as it arrives, resumed after the
//! last event returned when the connection drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
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

/// Runs of the body at least this long are parsed on another core while
/// the caller works through the run before; shorter ones (a live read's
/// few events) are parsed where they arrive, without the hop.
const PARSE_ELSEWHERE_BYTES: usize = 16 * 1024;
/// Runs parsed ahead of the caller.
const PARSE_AHEAD: usize = 2;

/// Splits a body into runs of whole lines as its chunks arrive. The lines
/// inside a chunk stay in it, uncopied; only a line split between two
/// chunks is copied together.
#[derive(Default)]
struct Splitter {
    partial: BytesMut,
}

impl Splitter {
    /// The whole lines `chunk` completes: the line begun in earlier chunks
    /// (if it ends here), then the chunk's own whole lines.
    fn push(&mut self, mut chunk: Bytes) -> [Option<Bytes>; 2] {
        let mut runs = [None, None];
        if !self.partial.is_empty() {
            let Some(i) = memchr::memchr(b'\n', &chunk) else {
                self.partial.extend_from_slice(&chunk);
                return runs;
            };
            self.partial.extend_from_slice(&chunk.split_to(i + 1));
            runs[0] = Some(self.partial.split().freeze());
        }
        if let Some(i) = memchr::memrchr(b'\n', &chunk) {
            runs[1] = Some(chunk.split_to(i + 1));
        }
        self.partial.extend_from_slice(&chunk);
        runs
    }
}

/// Every line of `runs`, parsed, up to the first that is not readable.
fn parse_runs(runs: [Option<Bytes>; 2]) -> Vec<Result<Line>> {
    // Lines are rarely shorter than this; the vector seldom grows.
    let mut lines = Vec::with_capacity(runs.iter().flatten().map(|r| r.len() / 128 + 1).sum());
    for run in runs.iter().flatten() {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', run) {
            let line = parse_line(&run.slice(start..end));
            let bad = line.is_err();
            lines.push(line);
            if bad {
                return lines;
            }
            start = end + 1;
        }
    }
    lines
}

/// The lines of one answer, parsed as they arrive: a run of whole lines
/// at a time, up to [`PARSE_AHEAD`] runs ahead of the caller, long runs on
/// the runtime's other threads. A catch-up read is bound by this parse, so
/// it gets the cores the node leaves idle.
struct Lines {
    runs: BoxStream<'static, Vec<Result<Line>>>,
    ready: std::vec::IntoIter<Result<Line>>,
}

impl Lines {
    fn new(body: BoxStream<'static, reqwest::Result<Bytes>>) -> Lines {
        let runs = futures::stream::unfold(Some((body, Splitter::default())), |state| async move {
            let (mut body, mut splitter) = state?;
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let runs = splitter.push(chunk);
                        if runs.iter().any(Option::is_some) {
                            return Some((Ok(runs), Some((body, splitter))));
                        }
                    }
                    Some(Err(e)) => return Some((Err(Error::transport(e, false)), None)),
                    // A last line without its newline was cut off: dropped.
                    None => return None,
                }
            }
        })
        .map(|runs| async move {
            let runs = match runs {
                Ok(runs) => runs,
                Err(e) => return vec![Err(e)],
            };
            let len: usize = runs.iter().flatten().map(Bytes::len).sum();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) if len >= PARSE_ELSEWHERE_BYTES => {
                    rt.spawn(async move { parse_runs(runs) }).await.unwrap_or_else(|e| vec![Err(Error::protocol(format!("parsing the read failed: {e}")))])
                }
                _ => parse_runs(runs),
            }
        })
        .buffered(PARSE_AHEAD);
        Lines { runs: runs.boxed(), ready: Vec::new().into_iter() }
    }

    /// The next line; `None` at the end of the body.
    async fn next(&mut self) -> Option<Result<Line>> {
        loop {
            if let Some(line) = self.ready.next() {
                return Some(line);
            }
            self.ready = self.runs.next().await?.into_iter();
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
    body: Option<Lines>,
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
        self.body = Some(Lines::new(resp.bytes_stream().boxed()));
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
            let line = match body.next().await {
                Some(Ok(line)) => line,
                // A broken connection is retried; an unreadable line is not.
                Some(Err(e)) => {
                    self.failed(e).await?;
                    continue;
                }
                None => {
                    self.failed(Error::new(crate::ErrorKind::Unavailable, "the read was cut off")).await?;
                    continue;
                }
            };
            match line {
                Line::Event(e) => return Ok(Item::Event(self.advance(e))),
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

    /// Moves the read past `e`, which is handed out.
    fn advance(&mut self, e: RecordedEvent) -> RecordedEvent {
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
        e
    }

    /// The next event if it is parsed and waiting, without awaiting
    /// anything; `None` when [`Reader::next_item`] has to go on.
    fn ready_event(&mut self) -> Option<RecordedEvent> {
        if self.limit == Some(0) {
            return None;
        }
        let ready = &mut self.body.as_mut()?.ready;
        if !matches!(ready.as_slice().first(), Some(Ok(Line::Event(_)))) {
            return None;
        }
        let Some(Ok(Line::Event(e))) = ready.next() else { return None };
        Some(self.advance(e))
    }

    /// Starts another request from the current position.
    pub(crate) fn set_wait(&mut self, secs: u64) {
        self.wait = secs;
    }
}

/// Events of a read, as a [`Stream`]; the first error ends it.
pub struct Events {
    /// `None` while `pending` holds it, and after the end.
    reader: Option<Box<Reader>>,
    /// The reader, off awaiting the next item (a request, a chunk).
    pending: Option<BoxFuture<'static, (Box<Reader>, Result<Item>)>>,
    /// Where the read would go on, once it has ended.
    ended_at: Option<Option<u64>>,
}

impl Events {
    pub(crate) fn store(store: Store, from: u64, limit: Option<u64>, tag: Option<String>) -> Events {
        Events::from_reader(Reader::store(store, from, limit, tag, 0))
    }

    pub(crate) fn stream(store: Store, name: String, how: StreamRead) -> Events {
        Events::from_reader(Reader::stream(store, name, how, 0))
    }

    fn from_reader(reader: Reader) -> Events {
        Events { reader: Some(Box::new(reader)), pending: None, ended_at: None }
    }

    /// Everything, collected (for small reads).
    pub async fn collect_all(self) -> Result<Vec<RecordedEvent>> {
        futures::TryStreamExt::try_collect(self).await
    }

    /// Once the read has ended (the stream gave `None`): where a read would
    /// go on, as the node said. For a store read, the seq after everything
    /// the read looked at, matched or not — a tag read with no match still
    /// says how far it looked, which is the `after` of an append condition
    /// (`next_position() - 1`). For a forward stream read, the next
    /// revision. `None` before the end, after an error, and for a backward
    /// read that reached revision 0.
    pub fn next_position(&self) -> Option<u64> {
        self.ended_at.flatten()
    }
}

impl Stream for Events {
    type Item = Result<RecordedEvent>;

    // Events already parsed are handed out straight from the reader; only
    // when it has to wait does it move into a future (boxed, so a move is
    // a pointer's).
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(pending) = &mut self.pending {
            let (reader, item) = std::task::ready!(pending.poll_unpin(cx));
            self.pending = None;
            return Poll::Ready(match item {
                Ok(Item::Event(e)) => {
                    self.reader = Some(reader);
                    Some(Ok(e))
                }
                Ok(Item::End) => {
                    self.ended_at = Some(reader.pos);
                    None
                }
                Err(e) => Some(Err(e)),
            });
        }
        let Some(mut reader) = self.reader.take() else { return Poll::Ready(None) };
        if let Some(e) = reader.ready_event() {
            self.reader = Some(reader);
            return Poll::Ready(Some(Ok(e)));
        }
        self.pending = Some(
            async move {
                let item = reader.next_item().await;
                (reader, item)
            }
            .boxed(),
        );
        self.poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_line(seq: u64) -> String {
        format!(r#"{{"seq":{seq},"stream":"s","revision":{seq},"type":"T","timestamp":1,"id":null,"tags":{{}},"data":{{"n":{seq}}}}}"#)
    }

    fn seqs(lines: Vec<Result<Line>>) -> Vec<u64> {
        lines
            .into_iter()
            .map(|l| match l {
                Ok(Line::Event(e)) => e.seq,
                Ok(Line::Next(n)) => 1000 + n.unwrap_or(0),
                _ => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn a_body_cut_anywhere_gives_every_whole_line_once_and_in_order() {
        let body: String = (0..5).map(|i| event_line(i) + "\n").collect::<String>() + "{\"next\":5}\n";
        let bytes = body.as_bytes();
        for a in 0..bytes.len() {
            for b in [a, (a + 7).min(bytes.len()), (a + 150).min(bytes.len())] {
                let mut splitter = Splitter::default();
                let mut got = Vec::new();
                for chunk in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    got.extend(seqs(parse_runs(splitter.push(Bytes::copy_from_slice(chunk)))));
                }
                assert_eq!(got, vec![0, 1, 2, 3, 4, 1005], "cut at {a} and {b}");
                assert!(splitter.partial.is_empty());
            }
        }
    }

    #[test]
    fn a_line_without_its_newline_is_held_back_and_a_bad_line_ends_the_run() {
        let mut splitter = Splitter::default();
        let runs = splitter.push(Bytes::from(event_line(0) + "\n" + &event_line(1)));
        assert_eq!(seqs(parse_runs(runs)), vec![0]);
        assert!(!splitter.partial.is_empty(), "the cut-off line waits for the rest");
        let runs = splitter.push(Bytes::from(format!("\nnot json\n{}\n", event_line(2))));
        let lines = parse_runs(runs);
        assert_eq!(lines.len(), 2, "parsing stops at the unreadable line");
        assert!(matches!(&lines[0], Ok(Line::Event(e)) if e.seq == 1));
        assert!(matches!(&lines[1], Err(e) if e.kind() == crate::ErrorKind::Protocol));
    }
}
