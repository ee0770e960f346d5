//! NATS JetStream through async-nats: one JetStream stream `EVENTS` over
//! subjects `ev.>`, one subject per event stream, file storage.
//!
//! Concurrency per event stream is JetStream's
//! `Nats-Expected-Last-Subject-Sequence`; exactly-once is `Nats-Msg-Id`
//! within the duplicate window; a batch of several events is an atomic
//! batch (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence`,
//! `Nats-Batch-Commit`; server 2.12 and later), so a batch commits whole
//! or not at all, as in the other systems.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, message::PublishMessage, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};

use super::{Conflict, Corpus, Event, Peer, Read, Session, Tail, EVENT_TYPE};

const STREAM: &str = "EVENTS";
/// Publishes awaiting their acknowledgement while loading.
const LOAD_WINDOW: usize = 4096;

pub struct Nats {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Nats {
    pub async fn connect(url: &str) -> Result<Nats> {
        let client = async_nats::connect(url).await.with_context(|| format!("connecting to NATS at {url}"))?;
        let js = jetstream::new(client.clone());
        js.get_or_create_stream(stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["ev.>".to_string()],
            storage: stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream")?;
        Ok(Nats { url: url.to_string(), client, js })
    }

    fn subject(stream: &str) -> String {
        format!("ev.{stream}")
    }

    fn headers(e: &Event) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", e.id.to_string().as_str());
        h.insert("Event-Type", EVENT_TYPE);
        h
    }

    async fn ordered(&self, js: &jetstream::Context, filter: String, deliver: consumer::DeliverPolicy) -> Result<consumer::pull::Ordered> {
        let stream = js.get_stream(STREAM).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig { filter_subject: filter, deliver_policy: deliver, ..Default::default() })
            .await?;
        Ok(consumer.messages().await?)
    }
}

/// An acknowledgement's error as a [`Conflict`] where it is one.
fn publish_error(e: jetstream::context::PublishError) -> anyhow::Error {
    if e.kind() == PublishErrorKind::WrongLastSequence {
        Conflict.into()
    } else {
        e.into()
    }
}

#[async_trait]
impl Peer for Nats {
    fn name(&self) -> &'static str {
        "NATS JetStream"
    }

    async fn session(&self, _live: bool) -> Result<Box<dyn Session>> {
        Ok(Box::new(NatsSession { client: self.client.clone(), js: self.js.clone(), last: HashMap::new() }))
    }

    async fn load(&self, corpus: Corpus) -> Result<()> {
        let mut acks = FuturesUnordered::new();
        for k in 0..corpus.total {
            let e = Event::new(k, corpus.size);
            let msg = PublishMessage::build().headers(Nats::headers(&e)).payload(e.data);
            let ack = self.js.send_publish(Nats::subject(&corpus.stream_of(k)), msg).await?;
            acks.push(async move { ack.await });
            while acks.len() >= LOAD_WINDOW {
                acks.next().await.transpose()?;
            }
        }
        while acks.next().await.transpose()?.is_some() {}
        Ok(())
    }

    async fn catch_up(&self, total: u64) -> Result<Read> {
        let client = async_nats::connect(&self.url).await?;
        let js = jetstream::new(client);
        let mut messages = self.ordered(&js, "ev.>".to_string(), consumer::DeliverPolicy::All).await?;
        let mut read = Read::default();
        while read.events < total {
            let Some(m) = messages.try_next().await? else { bail!("the consumer ended after {} events", read.events) };
            read.add(m.payload.len());
        }
        Ok(read)
    }

    async fn read_stream(&self, stream: &str) -> Result<Read> {
        let mut messages = self.ordered(&self.js, Nats::subject(stream), consumer::DeliverPolicy::All).await?;
        let mut read = Read::default();
        while let Some(m) = messages.try_next().await? {
            read.add(m.payload.len());
            // `pending` is what the server holds for this consumer beyond
            // this message: none left is the end of the stream.
            if m.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 {
                break;
            }
        }
        Ok(read)
    }

    async fn tail(&self, stream: &str) -> Result<Box<dyn Tail>> {
        let messages = self.ordered(&self.js, Nats::subject(stream), consumer::DeliverPolicy::New).await?;
        Ok(Box::new(NatsTail { messages }))
    }
}

struct NatsSession {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The stream sequence of the last message this session wrote to each
    /// subject.
    last: HashMap<String, u64>,
}

#[async_trait]
impl Session for NatsSession {
    async fn append(&mut self, stream: &str, events: Vec<Event>) -> Result<()> {
        let subject = Nats::subject(stream);
        let expected = self.last.get(stream).copied().unwrap_or(0);
        let ack = if let [e] = events.as_slice() {
            let msg = PublishMessage::build().headers(Nats::headers(e)).payload(e.data.clone()).expected_last_subject_sequence(expected);
            self.js.send_publish(subject, msg).await.map_err(publish_error)?.await.map_err(publish_error)?
        } else {
            let batch = uuid::Uuid::new_v4().simple().to_string();
            let n = events.len();
            let mut commit = None;
            for (i, e) in events.into_iter().enumerate() {
                let mut h = Nats::headers(&e);
                h.insert("Nats-Batch-Id", batch.as_str());
                h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                if i == 0 {
                    h.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
                }
                if i + 1 < n {
                    self.client.publish_with_headers(subject.clone(), h, e.data).await?;
                } else {
                    h.insert("Nats-Batch-Commit", "1");
                    commit = Some(PublishMessage::build().headers(h).payload(e.data));
                }
            }
            let commit = commit.context("an append needs at least one event")?;
            self.js.send_publish(subject, commit).await.map_err(publish_error)?.await.map_err(publish_error)?
        };
        self.last.insert(stream.to_string(), ack.sequence);
        Ok(())
    }
}

struct NatsTail {
    messages: consumer::pull::Ordered,
}

#[async_trait]
impl Tail for NatsTail {
    async fn next(&mut self) -> Result<Bytes> {
        match self.messages.try_next().await? {
            Some(m) => Ok(m.payload.clone()),
            None => bail!("the consumer ended"),
        }
    }
}
