//! The workloads, the same for every system.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rand::{RngExt, SeedableRng};

use crate::peers::{is_conflict, Corpus, Event, Peer};

/// Latencies, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut v: Vec<Duration>) -> Latencies {
        v.sort_unstable();
        Latencies(v)
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }
}

/// What an append run measured.
#[derive(Clone, Debug)]
pub struct AppendRun {
    pub events: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl AppendRun {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// An append workload: `clients` writers, each appending batches of
/// `batch` events of `size` bytes to a stream of its own, one request at a
/// time, for `duration`. Every append carries the writer's expectation of
/// its stream's revision.
#[derive(Clone, Copy, Debug)]
pub struct Append {
    pub size: usize,
    pub batch: usize,
    pub clients: usize,
    pub duration: Duration,
}

pub async fn append(peer: Arc<dyn Peer>, w: Append, tag: &str) -> Result<AppendRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut sessions = Vec::with_capacity(w.clients);
    for _ in 0..w.clients {
        sessions.push(peer.session(false).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(c, mut session)| {
            let stop = stop.clone();
            let stream = format!("{tag}-{c}");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let events: Vec<Event> = (0..w.batch).map(|k| Event::new(i + k as u64, w.size)).collect();
                    let t = Instant::now();
                    session.append(&stream, events).await.with_context(|| format!("append to {stream}"))?;
                    latencies.push(t.elapsed());
                    i += w.batch as u64;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(w.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let events = all.len() as u64 * w.batch as u64;
    Ok(AppendRun { events, elapsed, latencies: Latencies::new(all) })
}

/// Checks the concurrency control the numbers rely on: a second writer
/// that believes a stream is new is refused once the first has written
/// to it, and writes nothing.
pub async fn check_concurrency(peer: &dyn Peer) -> Result<()> {
    let stream = format!("occ-{}", uuid::Uuid::new_v4().simple());
    let mut first = peer.session(false).await?;
    let mut second = peer.session(false).await?;
    first.append(&stream, vec![Event::new(0, 100)]).await?;
    first.append(&stream, vec![Event::new(1, 100), Event::new(2, 100)]).await?;
    for batch in [1, 3] {
        match second.append(&stream, (0..batch).map(|i| Event::new(10 + i, 100)).collect()).await {
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e.context(format!("{}: a stale append of {batch} failed, but not as a conflict", peer.name()))),
            Ok(()) => bail!("{}: a stale writer's append of {batch} was accepted: no optimistic concurrency", peer.name()),
        }
    }
    let read = peer.read_stream(&stream).await?;
    ensure!(read.events == 3, "{}: the stream holds {} events after the refused appends, not 3", peer.name(), read.events);
    Ok(())
}

/// A catch-up read of the first `total` events, timed.
pub async fn catch_up(peer: &dyn Peer, total: u64) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let read = peer.catch_up(total).await?;
    let elapsed = start.elapsed();
    ensure!(read.events == total, "{}: the catch-up read {} events of {total}", peer.name(), read.events);
    Ok((elapsed, read.bytes))
}

/// Reads of `samples` random streams of the corpus, one at a time, each
/// checked complete.
pub async fn read_streams(peer: &dyn Peer, corpus: Corpus, samples: usize, seed: u64) -> Result<Latencies> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let j = rng.random_range(0..corpus.streams);
        let stream = format!("r-{j}");
        let start = Instant::now();
        let read = peer.read_stream(&stream).await?;
        latencies.push(start.elapsed());
        ensure!(read.events == corpus.events_in(j), "{}: stream {stream} gave {} events, not {}", peer.name(), read.events, corpus.events_in(j));
    }
    Ok(Latencies::new(latencies))
}

/// Tail latency: one writer appends single events of `size` bytes to a
/// stream every `interval`; a live reader follows it. Each sample is the
/// time from the append being sent to the reader holding the event.
pub async fn tail(peer: Arc<dyn Peer>, samples: usize, size: usize, interval: Duration) -> Result<Latencies> {
    let stream = format!("tail-{}", uuid::Uuid::new_v4().simple());
    let mut writer = peer.session(true).await?;
    // The stream exists before the reader starts, as a live stream would.
    writer.append(&stream, vec![Event::new(u64::MAX, size)]).await?;
    let mut reader = peer.tail(&stream).await?;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; samples]));
    let sent_w = sent.clone();
    let stream_w = stream.clone();
    let writing = tokio::spawn(async move {
        // Let the reader's first request reach the server.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..samples {
            sent_w.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some(Instant::now());
            writer.append(&stream_w, vec![Event::new(i as u64, size)]).await?;
            tokio::time::sleep(interval).await;
        }
        anyhow::Ok(())
    });
    let mut latencies = Vec::with_capacity(samples);
    let deadline = Instant::now() + Duration::from_secs(30) + interval * samples as u32 * 2;
    while latencies.len() < samples {
        let left = deadline.saturating_duration_since(Instant::now());
        let data = tokio::time::timeout(left, reader.next()).await.context("the live reader stopped receiving")??;
        let seen = Instant::now();
        let Some(i) = Event::index_of(&data) else { bail!("{}: the reader got data it did not expect: {}", peer.name(), String::from_utf8_lossy(&data)) };
        if i == u64::MAX {
            continue;
        }
        let at = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(i as usize).copied().flatten();
        let at = at.with_context(|| format!("{}: event {i} seen before it was sent", peer.name()))?;
        latencies.push(seen - at);
    }
    writing.await??;
    Ok(Latencies::new(latencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.quantile(0.5), Duration::from_millis(50));
        assert_eq!(l.quantile(0.99), Duration::from_millis(99));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(Latencies::new(vec![]).quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn events_are_their_size_and_carry_their_index() {
        for size in [20, 100, 1024] {
            let e = Event::new(123_456, size);
            assert_eq!(e.data.len(), size);
            serde_json::from_slice::<serde_json::Value>(&e.data).expect("JSON");
            assert_eq!(Event::index_of(&e.data), Some(123_456));
        }
        // PostgreSQL's jsonb gives the data back with a space after colons.
        assert_eq!(Event::index_of(br#"{"i": 7, "p": "x"}"#), Some(7));
    }

    #[test]
    fn the_corpus_spreads_events_over_its_streams() {
        let c = Corpus { total: 1005, streams: 10, size: 100 };
        assert_eq!((0..10).map(|j| c.events_in(j)).sum::<u64>(), 1005);
        assert_eq!(c.events_in(4), 101);
        assert_eq!(c.events_in(5), 100);
        assert_eq!(c.stream_of(1004), "r-4");
    }
}
