//! PostgreSQL through tokio-postgres, with the table event stores on
//! PostgreSQL commonly use (message-db, Marten, many hand-written ones): a
//! global `bigserial` position, `(stream, revision)` unique for optimistic
//! concurrency, the event id unique for idempotency, JSONB data.
//! `synchronous_commit` is on: a commit returns once its WAL is flushed.

use std::collections::{HashMap, VecDeque};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{error::SqlState, AsyncMessage, Client, NoTls, Statement};

use super::{Conflict, Corpus, Event, Peer, Read, Session, Tail, EVENT_TYPE};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position bigserial PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    stream text NOT NULL,
    revision bigint NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, revision)
)";

/// One statement appends a batch: the revisions are the writer's
/// expectation, so a stale writer meets the unique constraint.
const INSERT: &str = "
INSERT INTO events (id, stream, revision, type, data)
SELECT i, $2, r, $5, d::jsonb FROM unnest($1::uuid[], $3::bigint[], $4::text[]) AS t(i, r, d)";

/// [`INSERT`] with a notification for live readers, in the same
/// statement (so in the same transaction: sent at commit).
fn insert_notify() -> String {
    format!("WITH ins AS ({INSERT} RETURNING position) SELECT pg_notify('events', max(position)::text) FROM ins")
}

/// Rows per COPY chunk while loading.
const COPY_CHUNK: u64 = 10_000;

pub struct Postgres {
    config: String,
    /// The connection one-stream reads share, as an application's pool
    /// would hold it.
    reads: Client,
    read_stream: Statement,
}

/// Connects and drives the connection in a task; notifications (LISTEN)
/// go to `notify` when given.
async fn connect(config: &str, notify: Option<mpsc::UnboundedSender<String>>) -> Result<Client> {
    let (client, mut conn) = tokio_postgres::connect(config, NoTls).await.context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let (AsyncMessage::Notification(n), Some(tx)) = (m, notify.as_ref()) {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    Ok(client)
}

impl Postgres {
    pub async fn connect(config: &str) -> Result<Postgres> {
        let client = connect(config, None).await?;
        client.batch_execute(SCHEMA).await.context("creating the events table")?;
        let read_stream = client.prepare("SELECT position, revision, type, data::text FROM events WHERE stream = $1 ORDER BY revision").await?;
        Ok(Postgres { config: config.to_string(), reads: client, read_stream })
    }
}

#[async_trait]
impl Peer for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn session(&self, live: bool) -> Result<Box<dyn Session>> {
        let client = connect(&self.config, None).await?;
        // NOTIFY takes a lock that serialises commits, so only writers that
        // live readers wait on notify.
        let insert = if live { client.prepare(&insert_notify()).await? } else { client.prepare(INSERT).await? };
        Ok(Box::new(PgSession { client, insert, next: HashMap::new() }))
    }

    async fn load(&self, corpus: Corpus) -> Result<()> {
        let client = connect(&self.config, None).await?;
        let mut first = 0;
        while first < corpus.total {
            let last = (first + COPY_CHUNK).min(corpus.total);
            let sink = client.copy_in::<_, Bytes>("COPY events (id, stream, revision, type, data) FROM STDIN").await?;
            futures::pin_mut!(sink);
            let mut buf = BytesMut::new();
            for k in first..last {
                let e = Event::new(k, corpus.size);
                // Text COPY: the data has no tab, newline or backslash.
                buf.extend_from_slice(format!("{}\t{}\t{}\t{EVENT_TYPE}\t", e.id, corpus.stream_of(k), k / corpus.streams).as_bytes());
                buf.extend_from_slice(&e.data);
                buf.extend_from_slice(b"\n");
            }
            sink.send(buf.freeze()).await?;
            sink.finish().await?;
            first = last;
        }
        client.batch_execute("ANALYZE events").await?;
        Ok(())
    }

    async fn catch_up(&self, total: u64) -> Result<Read> {
        let client = connect(&self.config, None).await?;
        let rows = client
            .query_raw("SELECT position, stream, revision, type, data::text FROM events ORDER BY position LIMIT $1", [total as i64])
            .await?;
        futures::pin_mut!(rows);
        let mut read = Read::default();
        while let Some(row) = rows.try_next().await? {
            let data: &str = row.try_get(4)?;
            read.add(data.len());
        }
        Ok(read)
    }

    async fn read_stream(&self, stream: &str) -> Result<Read> {
        let rows = self.reads.query(&self.read_stream, &[&stream]).await?;
        let mut read = Read::default();
        for row in rows {
            let data: &str = row.try_get(3)?;
            read.add(data.len());
        }
        Ok(read)
    }

    async fn tail(&self, stream: &str) -> Result<Box<dyn Tail>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = connect(&self.config, Some(tx)).await?;
        client.batch_execute("LISTEN events").await?;
        let row = client.query_one("SELECT coalesce(max(position), 0) FROM events", &[]).await?;
        let query = client.prepare("SELECT position, data::text FROM events WHERE stream = $1 AND position > $2 ORDER BY position").await?;
        Ok(Box::new(PgTail { client, query, stream: stream.to_string(), after: row.try_get(0)?, notifications: rx, ready: VecDeque::new() }))
    }
}

struct PgSession {
    client: Client,
    insert: Statement,
    /// The next revision of each stream this session wrote to.
    next: HashMap<String, i64>,
}

#[async_trait]
impl Session for PgSession {
    async fn append(&mut self, stream: &str, events: Vec<Event>) -> Result<()> {
        let first = self.next.get(stream).copied().unwrap_or(0);
        let n = events.len() as i64;
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let revisions: Vec<i64> = (first..first + n).collect();
        let data = events.iter().map(|e| std::str::from_utf8(&e.data)).collect::<Result<Vec<&str>, _>>()?;
        match self.client.execute(&self.insert, &[&ids, &stream, &revisions, &data, &EVENT_TYPE]).await {
            Ok(_) => {
                self.next.insert(stream.to_string(), first + n);
                Ok(())
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(Conflict.into()),
            Err(e) => Err(e.into()),
        }
    }
}

struct PgTail {
    client: Client,
    query: Statement,
    stream: String,
    after: i64,
    notifications: mpsc::UnboundedReceiver<String>,
    ready: VecDeque<Bytes>,
}

#[async_trait]
impl Tail for PgTail {
    async fn next(&mut self) -> Result<Bytes> {
        loop {
            if let Some(data) = self.ready.pop_front() {
                return Ok(data);
            }
            if self.notifications.recv().await.is_none() {
                bail!("the LISTEN connection closed");
            }
            while self.notifications.try_recv().is_ok() {}
            for row in self.client.query(&self.query, &[&self.stream, &self.after]).await? {
                self.after = row.try_get(0)?;
                let data: &str = row.try_get(1)?;
                self.ready.push_back(Bytes::copy_from_slice(data.as_bytes()));
            }
        }
    }
}
