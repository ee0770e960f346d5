//! Cairn over HTTP, through `cairn-client`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_client::{Client, ErrorKind, EventData, Expected, Message, Store, StreamRead, Subscription, Tiering};
use futures::{StreamExt, TryStreamExt};

use super::{Conflict, Corpus, Event, Peer, Read, Session, Tail, EVENT_TYPE};

/// How long sealing may take, and how long nothing may change before it
/// counts as done.
const SEAL_LIMIT: Duration = Duration::from_secs(900);
const SEAL_QUIET: Duration = Duration::from_secs(10);

/// Events per request while loading, and requests in flight.
const LOAD_BATCH: u64 = 1000;
const LOAD_CONCURRENCY: usize = 8;

pub struct Cairn {
    base: String,
    store: Store,
}

impl Cairn {
    pub async fn connect(base: &str, store: &str) -> Result<Cairn> {
        let client = Client::new(base)?;
        let store = client.store(store);
        store.create().await.context("creating the bench store")?;
        Ok(Cairn { base: base.to_string(), store })
    }

    fn event(e: Event) -> Result<EventData> {
        let json = String::from_utf8(e.data.to_vec())?;
        Ok(EventData::raw_json(EVENT_TYPE, json)?.id(e.id))
    }
}

#[async_trait]
impl Peer for Cairn {
    fn name(&self) -> &'static str {
        "Cairn"
    }

    async fn session(&self, _live: bool) -> Result<Box<dyn Session>> {
        Ok(Box::new(CairnSession { store: self.store.clone(), heads: HashMap::new() }))
    }

    async fn load(&self, corpus: Corpus) -> Result<()> {
        let batches = corpus.total.div_ceil(LOAD_BATCH);
        futures::stream::iter(0..batches)
            .map(|b| {
                let store = self.store.clone();
                async move {
                    let first = b * LOAD_BATCH;
                    let last = (first + LOAD_BATCH).min(corpus.total);
                    let events = (first..last)
                        .map(|k| Ok(Cairn::event(Event::new(k, corpus.size))?.stream(corpus.stream_of(k))))
                        .collect::<Result<Vec<_>>>()?;
                    store.append_many(events, std::iter::empty()).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn catch_up(&self, total: u64) -> Result<Read> {
        let store = Client::new(&self.base)?.store(self.store.name());
        let mut events = store.read_with(0, Some(total), None);
        let mut read = Read::default();
        while let Some(e) = events.try_next().await? {
            read.add(e.data.len());
        }
        Ok(read)
    }

    async fn read_stream(&self, stream: &str) -> Result<Read> {
        let mut events = self.store.read_stream(stream, StreamRead::forward());
        let mut read = Read::default();
        while let Some(e) = events.try_next().await? {
            read.add(e.data.len());
        }
        Ok(read)
    }

    async fn seal_history(&self) -> Result<Option<Duration>> {
        let start = Instant::now();
        let next = self.store.info().await?.next_seq;
        self.store.set_tiering(&Tiering { seal_before: Some(next), seal_after_ms: None }).await?;
        // Sealing takes whole index objects, never those of the
        // idempotency window (the newest million events by default), nor
        // what roll-up has not reached: it is done when no index object is
        // left, or when nothing has changed for a while.
        let mut last = None;
        let mut unchanged_since = Instant::now();
        loop {
            let info = self.store.info().await?;
            if info.index_objects == 0 && info.archives > 0 {
                return Ok(Some(start.elapsed()));
            }
            let now = (info.archives, info.index_objects);
            if last != Some(now) {
                eprintln!("bench:     {:.1} s: {} archives, {} index objects, {} segments", start.elapsed().as_secs_f64(), info.archives, info.index_objects, info.segments);
                last = Some(now);
                unchanged_since = Instant::now();
            } else if unchanged_since.elapsed() > SEAL_QUIET {
                if info.archives == 0 {
                    // All of it is inside the idempotency window.
                    eprintln!("bench:   nothing to seal: the corpus lies inside the idempotency window ({} events)", info.idempotency_window);
                    return Ok(None);
                }
                return Ok(Some(unchanged_since - start));
            }
            if start.elapsed() > SEAL_LIMIT {
                anyhow::bail!("sealing the history took over {SEAL_LIMIT:?} ({} archives, {} index objects left)", info.archives, info.index_objects);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tail(&self, stream: &str) -> Result<Box<dyn Tail>> {
        let from = self.store.stream_head(stream).await?.map_or(0, |h| h + 1);
        Ok(Box::new(CairnTail { sub: self.store.subscribe_stream(stream, from) }))
    }
}

struct CairnSession {
    store: Store,
    /// The last revision this session wrote to each stream.
    heads: HashMap<String, u64>,
}

#[async_trait]
impl Session for CairnSession {
    async fn append(&mut self, stream: &str, events: Vec<Event>) -> Result<()> {
        let expected = self.heads.get(stream).map_or(Expected::NoStream, |&r| Expected::Revision(r));
        let events = events.into_iter().map(Cairn::event).collect::<Result<Vec<_>>>()?;
        match self.store.append(stream, events, expected).await {
            Ok(done) => {
                self.heads.insert(stream.to_string(), done.last_revision);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Conflict => Err(Conflict.into()),
            Err(e) => Err(e.into()),
        }
    }
}

struct CairnTail {
    sub: Subscription,
}

#[async_trait]
impl Tail for CairnTail {
    async fn next(&mut self) -> Result<Bytes> {
        loop {
            if let Message::Event(e) = self.sub.next().await? {
                return Ok(e.data);
            }
        }
    }
}
