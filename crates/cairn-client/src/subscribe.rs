//! Catch up, then follow live: a read to the end, then long-polls, resumed
//! after failures for as long as they are safe to retry.

use std::time::Duration;

use futures::Stream;

use crate::error::Result;
use crate::read::{Item, Reader, StreamRead};
use crate::{RecordedEvent, Store};

/// What a [`Subscription`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Event(RecordedEvent),
    /// Everything committed when the last read started has been handed out;
    /// `next` is the position the subscription continues from (a seq, or a
    /// revision for a stream). Comes after the catch-up and after each batch
    /// of live events.
    CaughtUp { next: u64 },
}

/// Seconds each long-poll is held (the node's most).
const LONG_POLL: u64 = 30;

/// A subscription to a store or one stream. Failures that are safe to
/// retry (the node restarting, a dropped connection, 503s) are retried
/// forever with a capped back-off; others are returned by
/// [`Subscription::next`], and calling it again tries again.
pub struct Subscription {
    reader: Reader,
    /// Events handed out since the last `CaughtUp`, or no `CaughtUp` yet.
    fresh: bool,
    failures: u32,
}

impl Subscription {
    pub(crate) fn store(store: Store, from: u64) -> Subscription {
        Subscription { reader: Reader::store(store, from, None, None, 0), fresh: true, failures: 0 }
    }

    pub(crate) fn stream(store: Store, name: String, from: u64) -> Subscription {
        Subscription { reader: Reader::stream(store, name, StreamRead::forward().from(from), 0), fresh: true, failures: 0 }
    }

    /// The position the subscription continues from.
    pub fn position(&self) -> u64 {
        self.reader.position().unwrap_or(0)
    }

    /// The next event, or word that the subscription has caught up.
    pub async fn next(&mut self) -> Result<Message> {
        loop {
            match self.reader.next_item().await {
                Ok(Item::Event(e)) => {
                    self.failures = 0;
                    self.fresh = true;
                    return Ok(Message::Event(e));
                }
                Ok(Item::End) => {
                    self.failures = 0;
                    self.reader.set_wait(LONG_POLL);
                    if std::mem::take(&mut self.fresh) {
                        return Ok(Message::CaughtUp { next: self.position() });
                    }
                }
                Err(e) if e.is_retry_safe() => {
                    let pause = e.retry_after().unwrap_or_else(|| Duration::from_millis(200u64 << self.failures.min(5)).min(Duration::from_secs(5)));
                    tracing::warn!(error = %e, "subscription interrupted; resuming in {pause:?}");
                    self.failures += 1;
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// As a [`Stream`] (which never ends by itself).
    pub fn into_stream(self) -> impl Stream<Item = Result<Message>> + Send {
        futures::stream::unfold(self, |mut s| async move { Some((s.next().await, s)) })
    }
}
