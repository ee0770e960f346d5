//! The per-store writer: group commit and the commit protocol.
//!
//! One task per open store takes everything queued (after a short linger
//! when its last commit held more than one request, up to a byte bound),
//! checks each request's expectations and ids against the
//! stream heads, assigns revisions and encodes ONE segment, uploads it under
//! a fresh name, then creates manifest version N+1 if absent. An ambiguous
//! answer (`AlreadyExists`, an error, a timeout) is resolved by reading N+1
//! back: ours means committed, someone else's means rebase and retry at N+2,
//! absent means put the identical bytes again. Only after the manifest put
//! and the GC-boundary check is anything acknowledged.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_format::block::Event;
use cairn_format::bloom::BloomHash;
use cairn_format::index::SegmentRef;
use cairn_format::manifest::{Manifest, Retention, Retired, Tiering};
use cairn_format::segment::{encode_segment, EncodedSegment};
use rand::RngExt;
use tokio::sync::{mpsc, oneshot};

use crate::error::{AppendError, RetentionError, StorageError, StreamConflict};
use crate::objects::CreateOutcome;
use crate::reader;
use crate::rollup::{self, Replacement, ReplacementKind};
use crate::store::{load_manifest, segment_name, KnownBoundary, Store};
use crate::{AppendBatch, AppendCondition, AppendOutcome, Clock, EngineConfig, Expectation, StreamRange};

/// Entries of a manifest's `retired` list kept at most.
const MAX_RETIRED: usize = 128;

pub(crate) enum WriterMsg {
    /// `checked_to`: the batch's condition was found to hold below this seq.
    Append { batch: AppendBatch, reply: oneshot::Sender<Result<AppendOutcome, AppendError>>, checked_to: u64 },
    /// Anything else: handled between commits.
    Control(Control),
}

pub(crate) enum Control {
    /// Sets the store's retention: a manifest version of its own.
    SetRetention { retention: Retention, reply: oneshot::Sender<Result<Arc<Manifest>, RetentionError>> },
    /// Sets the store's tiering: a manifest version of its own.
    SetTiering { tiering: Tiering, reply: oneshot::Sender<Result<Arc<Manifest>, RetentionError>> },
    /// Lets retention drop and tiering seal what they may now (`reply`:
    /// when nothing more is due).
    Enforce { reply: Option<oneshot::Sender<Result<Arc<Manifest>, RetentionError>>> },
    /// A truncation prepared in the background, to be committed.
    Truncation(Result<Option<Replacement>, StorageError>),
}

/// How often, at most, the writer looks for objects past a maximum age
/// after its commits (the GC tick looks too).
const AGE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Checks what can be checked without storage. A batch that fails here
/// changes nothing.
pub fn validate(batch: &AppendBatch) -> Result<(), AppendError> {
    let bad = |m: String| Err(AppendError::Invalid(m));
    if batch.events.is_empty() {
        return bad("a batch needs at least one event".into());
    }
    let mut ids = std::collections::HashSet::new();
    for (i, e) in batch.events.iter().enumerate() {
        if !crate::valid_stream_name(&e.stream) {
            return bad(format!("event {i}: invalid stream name {:?} (1-256 bytes, no control characters)", e.stream));
        }
        if e.event_type.is_empty() || e.event_type.len() > 256 || e.event_type.chars().any(char::is_control) {
            return bad(format!("event {i}: invalid type {:?} (1-256 bytes, no control characters)", e.event_type));
        }
        for (k, v) in &e.tags {
            if k.is_empty() || k.len() > 256 || v.len() > 1024 {
                return bad(format!("event {i}: invalid tag {k:?}"));
            }
        }
        if let Some(id) = e.id {
            if !ids.insert(id) {
                return bad(format!("event {i}: id {id} appears twice in the batch"));
            }
        }
    }
    if batch.events.iter().any(|e| e.id.is_some()) && batch.events.iter().any(|e| e.id.is_none()) {
        return bad("either every event of a batch has an id or none has".into());
    }
    for (s, _) in &batch.expected {
        if !batch.events.iter().any(|e| &e.stream == s) {
            return bad(format!("expectation for stream {s:?}, which has no event in the batch"));
        }
    }
    if let Some(c) = &batch.condition {
        validate_condition(c).map_err(AppendError::InvalidCondition)?;
    }
    Ok(())
}

/// Items a condition's query may hold, and types or tags an item may name.
pub const MAX_QUERY_ITEMS: usize = 64;
pub const MAX_QUERY_TERMS: usize = 64;

fn validate_condition(c: &AppendCondition) -> Result<(), String> {
    if c.fail_if_events_match.is_empty() {
        return Err("fail_if_events_match needs at least one query item".into());
    }
    if c.fail_if_events_match.len() > MAX_QUERY_ITEMS {
        return Err(format!("fail_if_events_match holds more than {MAX_QUERY_ITEMS} query items"));
    }
    for (i, q) in c.fail_if_events_match.iter().enumerate() {
        if q.types.len() > MAX_QUERY_TERMS || q.tags.len() > MAX_QUERY_TERMS {
            return Err(format!("query item {i}: more than {MAX_QUERY_TERMS} types or tags"));
        }
        if let Some(t) = q.types.iter().find(|t| t.is_empty() || t.len() > 256 || t.chars().any(char::is_control)) {
            return Err(format!("query item {i}: invalid type {t:?} (1-256 bytes, no control characters)"));
        }
        if let Some((k, _)) = q.tags.iter().find(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 1024) {
            return Err(format!("query item {i}: invalid tag {k:?}"));
        }
    }
    Ok(())
}

/// Checks a condition over the history committed so far, here rather than
/// in the store's writer, which commits one batch after another: a condition
/// that reaches far back costs its own request time, not every writer's.
/// Returns the seq below which it holds (the writer checks only from there).
/// A match fails the append at once, unless the batch has ids: then it may
/// be a retry of a batch that committed, which the writer answers as before.
pub(crate) async fn precheck(s: &Store, c: &AppendCondition, ids: bool) -> Result<u64, AppendError> {
    let from = c.first_seq();
    let view = s.current();
    if from < view.first_seq {
        return Err(AppendError::ConditionTruncated { first_seq: view.first_seq });
    }
    if from >= view.next_seq {
        return Ok(from);
    }
    match reader::first_match(s, &view, from, view.next_seq, c).await {
        Ok(None) => Ok(view.next_seq),
        Ok(Some(_)) if !ids => Err(AppendError::ConditionFailed { after: c.after }),
        // It holds below its first match, where the writer starts.
        Ok(Some(seq)) => Ok(seq),
        // The writer looks again (an object may have been rolled up and
        // collected under this view).
        Err(_) => Ok(from),
    }
}

struct Pending {
    batch: AppendBatch,
    reply: Option<oneshot::Sender<Result<AppendOutcome, AppendError>>>,
    /// The batch's condition holds for the committed seqs below this (it
    /// was checked there): a rebase checks only what came since.
    checked_to: u64,
}

impl Pending {
    fn new(batch: AppendBatch, reply: oneshot::Sender<Result<AppendOutcome, AppendError>>, checked_to: u64) -> Self {
        let checked_to = batch.condition.as_ref().map_or(0, |c| checked_to.max(c.first_seq()));
        Pending { batch, reply: Some(reply), checked_to }
    }
    fn answer(&mut self, r: Result<AppendOutcome, AppendError>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
    fn bytes(&self) -> usize {
        self.batch.events.iter().map(|e| e.data.len() + e.stream.len() + 32).sum()
    }
}

/// Where an id was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdHit {
    pub seq: u64,
    pub revision: u64,
    pub stream_hash: u64,
}

pub(crate) fn stream_hash(s: &str) -> u64 {
    BloomHash::of(s.as_bytes()).0 ^ (s.len() as u64)
}

/// The ids of recent events: in memory for what this writer committed or
/// read, in storage (id filters) for the gaps.
struct IdWindow {
    map: HashMap<[u8; 16], IdHit>,
    order: VecDeque<(u64, [u8; 16])>,
    /// Seq ranges whose ids are not in memory.
    gaps: Vec<(u64, u64)>,
}

impl IdWindow {
    fn new(start: u64, end: u64) -> Self {
        IdWindow { map: HashMap::new(), order: VecDeque::new(), gaps: if start < end { vec![(start, end)] } else { vec![] } }
    }
    fn insert(&mut self, id: [u8; 16], hit: IdHit) {
        self.map.insert(id, hit);
        self.order.push_back((hit.seq, id));
    }
    fn evict_below(&mut self, start: u64) {
        while let Some((seq, id)) = self.order.front().copied() {
            if seq >= start {
                break;
            }
            self.order.pop_front();
            if self.map.get(&id).is_some_and(|h| h.seq == seq) {
                self.map.remove(&id);
            }
        }
        self.gaps.retain_mut(|g| {
            g.0 = g.0.max(start);
            g.0 < g.1
        });
    }
}

enum Resolved {
    Committed,
    Conflict,
    /// Nothing was written.
    Failed(StorageError),
    Unknown,
}

enum PrepareError {
    NeedFreshLook,
    Storage(StorageError),
}

impl From<StorageError> for PrepareError {
    fn from(e: StorageError) -> Self {
        PrepareError::Storage(e)
    }
}

struct Prepared {
    events: Arc<Vec<Event>>,
    /// (request, index of its first event in `events`, its ranges)
    accepted: Vec<(usize, usize, Vec<StreamRange>)>,
    /// (request, the earlier request in this batch with the same ids)
    same_as: Vec<(usize, usize)>,
}

struct Uploaded {
    name: String,
    seg: EncodedSegment,
    /// The events encoded: a rebase that leaves every (stream, revision)
    /// as it was reuses the segment (seqs in it are relative).
    events: Arc<Vec<Event>>,
    at: Instant,
}

fn same_positions(a: &[Event], b: &[Event]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.revision == y.revision && x.stream == y.stream)
}

struct Writer {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    cfg: EngineConfig,
    view: Arc<Manifest>,
    known: KnownBoundary,
    heads: HashMap<String, Option<u64>>,
    window: IdWindow,
    maintenance: Option<tokio::task::JoinHandle<Result<Replacement, StorageError>>>,
    ready: Option<Replacement>,
    /// Requests taken off the queue while the previous batch committed.
    carry: Vec<Pending>,
    /// `carry` prepared and uploaded on top of that batch (pipelining).
    staged: Option<Staged>,
    last_was_rollup: bool,
    /// A moment at which `view`'s successor N+1 was known absent: when our
    /// create of `view` began, or when a refresh that found `view` newest
    /// began. A version GC collects has aged `manifest_retention`, so within
    /// half of it N+1 cannot be a collected version's name, and a created
    /// N+1 needs no look at the GC boundary before it is acknowledged.
    view_confirmed: Option<Instant>,
    /// Messages other than appends, taken off the queue while batching.
    control: VecDeque<Control>,
    /// A truncation being prepared in the background.
    truncating: bool,
    /// Waiting for the truncation in progress to be committed.
    enforce_waiters: Vec<oneshot::Sender<Result<Arc<Manifest>, RetentionError>>>,
    last_age_check: Option<Instant>,
}

/// A batch prepared and uploaded on the assumption that the batch before it
/// commits: valid only on top of exactly that manifest.
struct Staged {
    prep: Prepared,
    up: Uploaded,
    based_on: (u64, String),
}

pub(crate) async fn run(store: Arc<Store>, mut rx: mpsc::Receiver<WriterMsg>, clock: Arc<dyn Clock>) {
    let cfg = store.shared.config.clone();
    let known = store.known_boundary();
    let view = store.current();
    let window = IdWindow::new(view.window_start, view.next_seq);
    let mut w = Writer {
        store,
        clock,
        cfg,
        view,
        known,
        heads: HashMap::new(),
        window,
        maintenance: None,
        ready: None,
        carry: Vec::new(),
        staged: None,
        last_was_rollup: false,
        view_confirmed: None,
        control: VecDeque::new(),
        truncating: false,
        enforce_waiters: Vec::new(),
        last_age_check: None,
    };
    // Requests in the last commit: the linger is for writers that come
    // together (closed-loop clients whose answers went out at once come
    // back at once); a lone writer is not made to wait for company, and
    // the linger ends as soon as as many have come as last time (they are
    // most likely all there is, and the timer's millisecond would be
    // spent waiting for nobody).
    let mut last_batch = 0;
    loop {
        if let Some(msg) = w.control.pop_front() {
            w.handle_control(msg).await;
            continue;
        }
        if !w.carry.is_empty() {
            let reqs = std::mem::take(&mut w.carry);
            last_batch = reqs.len();
            w.commit(reqs, &mut rx).await;
            continue;
        }
        let (batch, reply, checked_to) = match rx.recv().await {
            Some(WriterMsg::Append { batch, reply, checked_to }) => (batch, reply, checked_to),
            Some(WriterMsg::Control(c)) => {
                w.handle_control(c).await;
                continue;
            }
            None => break,
        };
        let mut reqs = vec![Pending::new(batch, reply, checked_to)];
        let mut bytes = reqs[0].bytes();
        let linger = if last_batch > 1 { w.cfg.linger } else { Duration::ZERO };
        let linger_until = tokio::time::Instant::now() + linger;
        while bytes < w.cfg.max_batch_bytes {
            let msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if reqs.len() >= last_batch => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(linger_until, rx.recv()).await.ok().flatten(),
            };
            let (batch, reply, checked_to) = match msg {
                Some(WriterMsg::Append { batch, reply, checked_to }) => (batch, reply, checked_to),
                Some(WriterMsg::Control(c)) => {
                    w.control.push_back(c);
                    break;
                }
                None => break,
            };
            let p = Pending::new(batch, reply, checked_to);
            bytes += p.bytes();
            reqs.push(p);
        }
        last_batch = reqs.len();
        w.commit(reqs, &mut rx).await;
    }
    if let Some(m) = w.maintenance.take() {
        m.abort();
    }
}

impl Writer {
    /// Looks up, all at once, the heads of the streams of `reqs` that are
    /// neither cached nor in `overlay`.
    async fn load_heads(&mut self, reqs: &[Pending], overlay: &HashMap<String, Option<u64>>) -> Result<(), StorageError> {
        let mut seen = foldhash::HashSet::default();
        let names: Vec<&str> = reqs
            .iter()
            .filter(|r| r.reply.is_some())
            .flat_map(|r| r.batch.events.iter().map(|e| e.stream.as_str()))
            .filter(|s| !self.heads.contains_key(*s) && !overlay.contains_key(*s) && seen.insert(*s))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let found = reader::heads(&self.store, &self.view, &names).await?;
        self.remember(&names, &found);
        Ok(())
    }

    async fn head(&mut self, stream: &str) -> Result<Option<u64>, StorageError> {
        if let Some(h) = self.heads.get(stream) {
            return Ok(*h);
        }
        let h = reader::head(&self.store, &self.view, stream).await?;
        self.remember(&[stream], &[h]);
        Ok(h)
    }

    /// Caches heads looked up in storage, forgetting all of them first when
    /// the cache would pass a million streams.
    fn remember(&mut self, names: &[&str], heads: &[Option<u64>]) {
        if self.heads.len() + names.len() > 1_000_000 {
            self.heads.clear();
        }
        for (n, h) in names.iter().zip(heads) {
            self.heads.insert(n.to_string(), *h);
        }
    }

    async fn commit(&mut self, mut reqs: Vec<Pending>, rx: &mut mpsc::Receiver<WriterMsg>) {
        let started = Instant::now();
        let deadline = started + self.cfg.commit_timeout;
        if self.store.deleted.load(std::sync::atomic::Ordering::Relaxed) {
            let name = self.store.paths.store.clone();
            reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::StoreNotFound(name.clone()))));
            return;
        }
        self.take_maintenance().await;
        let mut uploaded: Option<Uploaded> = None;
        let mut fresh_look = false;
        let mut restarted = false;
        let mut attempt = 0u32;
        // A batch staged while the one before committed is used as it is if
        // that commit is the view now.
        let mut staged = self.staged.take().filter(|s| s.based_on == (self.view.version, self.view.commit_id.clone()));
        loop {
            let prep = if let Some(st) = staged.take() {
                uploaded = Some(st.up);
                st.prep
            } else {
                match self.prepare(&mut reqs, fresh_look, None).await {
                Ok(p) => p,
                Err(PrepareError::NeedFreshLook) => {
                    fresh_look = true;
                    if let Err(e) = self.rebase_to_newest().await {
                        reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(e.clone()))));
                        return;
                    }
                    continue;
                }
                Err(PrepareError::Storage(StorageError::NotFound(m))) if !restarted => {
                    // An object the view names is gone: other nodes rolled
                    // it up and GC took it after its grace, while this view
                    // stood still. Start over from the newest manifest once,
                    // rather than fail every request on the same view.
                    tracing::debug!(store = %self.store.paths.store, missing = %m, "view behind GC; starting over from storage");
                    restarted = true;
                    self.restart_from_storage().await;
                    continue;
                }
                Err(PrepareError::Storage(e)) => {
                    reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(e.clone()))));
                    return;
                }
                }
            };
            if prep.events.is_empty() {
                self.answer_same(&mut reqs, &prep, &[]);
                return;
            }
            let reuse = uploaded.as_ref().is_some_and(|u| same_positions(&u.events, &prep.events) && u.at.elapsed() < self.cfg.reupload_after);
            if !reuse {
                match self.upload(prep.events.clone()).await {
                    Ok(u) => uploaded = Some(u),
                    Err(e) => {
                        reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(e.clone()))));
                        return;
                    }
                }
            }
            let Some(up) = uploaded.as_ref() else { return };
            if up.at.elapsed() >= self.cfg.reupload_after {
                // GC may take an uncommitted segment once its grace is over:
                // never commit one that old.
                if Instant::now() >= deadline {
                    let e = StorageError::Backend("segment upload too slow".into());
                    reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(e.clone()))));
                    return;
                }
                uploaded = None;
                continue;
            }
            let (next, applied) = self.next_manifest(up, &prep);
            let bytes = match next.encode() {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(StorageError::from(e.clone())))));
                    return;
                }
            };
            let seg_name = up.name.clone();
            // While N+1 is created, the requests queued behind this batch
            // are prepared and uploaded on top of it.
            // The batch is acknowledged the moment its commit is known,
            // not when the staging of the next one is done.
            let fresh = self.view_confirmed.is_some_and(|t| t.elapsed() < self.cfg.manifest_retention / 2);
            let mut committer = Committer { store: self.store.clone(), known: self.known, fresh, create_started: None };
            let outcomes = outcomes_of(&prep, self.view.next_seq);
            let mut senders: Vec<_> = reqs.iter_mut().map(|r| r.reply.take()).collect();
            let same_as = &prep.same_as;
            let store = self.store.clone();
            let create = async {
                // Whether the store was deleted meanwhile is asked beside the
                // create (at most once per root_check_interval), not before
                // it: no extra round trip on the path of an ack. A failed
                // look is not a deletion; the next commit asks again.
                let ours = |m: &Manifest| m.segments.iter().any(|s| s.name == seg_name) || m.retired.iter().any(|r| r.name == seg_name);
                let (live, r) = tokio::join!(store.check_root(), committer.create_resolved(&next, bytes, &ours, deadline));
                if matches!(r, Resolved::Committed) {
                    if live.unwrap_or(true) {
                        // Readers and long-polls on this node see it at once.
                        store.publish(Arc::new(next.clone()));
                        answer_all(&mut senders, &outcomes, same_as);
                    } else {
                        // Committed into an incarnation deleted meanwhile:
                        // its objects are purged with it.
                        for tx in senders.iter_mut().filter_map(Option::take) {
                            let _ = tx.send(Err(AppendError::StoreNotFound(store.paths.store.clone())));
                        }
                    }
                }
                (r, committer.known, committer.create_started, senders)
            };
            let ((resolved, known, create_started, senders), ()) = tokio::join!(create, self.stage_next(rx, &prep, &next));
            for (r, tx) in reqs.iter_mut().zip(senders) {
                r.reply = tx;
            }
            self.known = known;
            match resolved {
                Resolved::Committed => {
                    self.view_confirmed = create_started;
                    let Some(up) = uploaded.take() else { return };
                    let bytes: usize = prep.events.iter().map(|e| e.data.len()).sum();
                    self.store.shared.observer.commit(&self.store.paths.store, prep.events.len(), bytes, started.elapsed());
                    let mut prep = prep;
                    // Every request was answered when the commit was known.
                    self.after_commit(next, &mut prep, up, applied);
                    return;
                }
                Resolved::Conflict => {
                    attempt += 1;
                    self.store.shared.observer.conflict(&self.store.paths.store);
                    tracing::debug!(store = %self.store.paths.store, attempt, "commit conflict, rebasing");
                    if Instant::now() >= deadline {
                        let retry_after = Duration::from_secs(1);
                        reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Overloaded { retry_after })));
                        let _ = self.rebase_to_newest().await;
                        return;
                    }
                    let ms = rand::rng().random_range(1..=(5u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if let Err(e) = self.rebase_to_newest().await {
                        reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::CommitOutcomeUnknown)));
                        tracing::warn!(error = %e, "rebase failed after a conflict");
                        return;
                    }
                }
                Resolved::Failed(e) => {
                    reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::Storage(e.clone()))));
                    return;
                }
                Resolved::Unknown => {
                    reqs.iter_mut().for_each(|r| r.answer(Err(AppendError::CommitOutcomeUnknown)));
                    // Start over from storage: our view may be behind or ahead.
                    self.restart_from_storage().await;
                    return;
                }
            }
        }
    }

    /// Takes what is queued (up to the byte bound) and prepares and uploads
    /// it on top of `prep`/`next`, which is being committed. The requests go
    /// to `carry`, the result (if the speculation held) to `staged`; a
    /// request that would be answered at once, or ids shared with `prep`,
    /// leave it unstaged, to be prepared after the commit.
    async fn stage_next(&mut self, rx: &mut mpsc::Receiver<WriterMsg>, prep: &Prepared, next: &Manifest) {
        let mut bytes = 0;
        while bytes < self.cfg.max_batch_bytes {
            let (batch, reply, checked_to) = match rx.try_recv() {
                Ok(WriterMsg::Append { batch, reply, checked_to }) => (batch, reply, checked_to),
                Ok(WriterMsg::Control(c)) => {
                    self.control.push_back(c);
                    break;
                }
                Err(_) => break,
            };
            let p = Pending::new(batch, reply, checked_to);
            bytes += p.bytes();
            self.carry.push(p);
        }
        if self.carry.is_empty() {
            return;
        }
        let mut carry = std::mem::take(&mut self.carry);
        let staged = match self.prepare(&mut carry, false, Some(prep)).await {
            Ok(p) if !p.events.is_empty() => match self.upload(p.events.clone()).await {
                Ok(up) => Some(Staged { prep: p, up, based_on: (next.version, next.commit_id.clone()) }),
                Err(_) => None,
            },
            _ => None,
        };
        self.carry = carry;
        self.staged = staged;
    }

    fn answer_same(&self, reqs: &mut [Pending], prep: &Prepared, outcomes: &[(usize, AppendOutcome)]) {
        let mut senders: Vec<_> = reqs.iter_mut().map(|r| r.reply.take()).collect();
        answer_all(&mut senders, outcomes, &prep.same_as);
    }

    /// Checks every unanswered request in order against the heads (and the
    /// heads after the requests before it), and assigns revisions.
    /// With `on_top` (speculation on a batch not yet committed: its heads
    /// and ids), nothing is answered: any request that would be answered
    /// now aborts the speculation (`NeedFreshLook`).
    async fn prepare(&mut self, reqs: &mut [Pending], final_409: bool, on_top: Option<&Prepared>) -> Result<Prepared, PrepareError> {
        let now = self.clock.now_ms();
        let mut overlay: HashMap<String, Option<u64>> = HashMap::new();
        let mut batch_ids: HashMap<[u8; 16], usize> = HashMap::new();
        if let Some(k) = on_top {
            for e in k.events.iter() {
                overlay.insert(e.stream.to_string(), Some(e.revision));
                if let Some(id) = e.id {
                    batch_ids.insert(id, usize::MAX);
                }
            }
        }
        let mut events: Vec<Event> = Vec::new();
        let mut out = Prepared { events: Arc::new(Vec::new()), accepted: Vec::new(), same_as: Vec::new() };
        let mut replies: Vec<(usize, Result<AppendOutcome, AppendError>)> = Vec::new();
        self.load_heads(reqs, &overlay).await?;
        for ri in 0..reqs.len() {
            if reqs[ri].reply.is_none() {
                continue;
            }
            let verdict = self.check_condition(&mut reqs[ri], &events, on_top, final_409).await?;
            let batch = &reqs[ri].batch;
            let mut streams: Vec<String> = Vec::new();
            let mut stream_ix: HashMap<&str, usize> = HashMap::new();
            for e in &batch.events {
                if !stream_ix.contains_key(e.stream.as_str()) {
                    stream_ix.insert(&e.stream, streams.len());
                    streams.push(e.stream.clone());
                }
            }
            let expected: HashMap<&str, Expectation> = batch.expected.iter().map(|(n, e)| (n.as_str(), *e)).collect();
            let expect = |s: &str| expected.get(s).copied().unwrap_or(Expectation::Any);
            let mut cur = Vec::with_capacity(streams.len());
            for s in &streams {
                let h = match overlay.get(s) {
                    Some(h) => *h,
                    None => self.head(s).await?,
                };
                cur.push(h);
            }
            let conflicts: Vec<StreamConflict> = streams
                .iter()
                .zip(&cur)
                .filter(|(s, h)| !matches(expect(s), **h))
                .map(|(s, h)| StreamConflict { stream: s.clone(), expected: expect(s), current_revision: *h })
                .collect();
            let ids: Vec<[u8; 16]> = batch.events.iter().filter_map(|e| e.id.map(|u| *u.as_bytes())).collect();
            if !ids.is_empty() {
                let in_batch: Vec<usize> = ids.iter().filter_map(|i| batch_ids.get(i).copied()).collect();
                if in_batch.len() == ids.len() && in_batch[0] != usize::MAX && in_batch.iter().all(|k| *k == in_batch[0]) && reqs[in_batch[0]].batch.events.len() == ids.len() {
                    out.same_as.push((ri, in_batch[0]));
                    reqs[ri].reply.as_ref();
                    continue;
                }
                if !in_batch.is_empty() {
                    replies.push((ri, Err(AppendError::IdempotencyConflict("some of the batch's ids were used by another batch".into()))));
                    continue;
                }
                let window_rule = conflicts.is_empty() && streams.iter().any(|s| matches!(expect(s), Expectation::Any | Expectation::StreamExists));
                // A retry of a batch that committed fails its own condition
                // (its events match): the original answer is looked for first.
                if !conflicts.is_empty() || window_rule || verdict != Verdict::Holds {
                    match self.find_original(&reqs[ri].batch, &streams, &cur, !conflicts.is_empty()).await? {
                        Found::All(o) => {
                            replies.push((ri, Ok(o)));
                            continue;
                        }
                        Found::Partial => {
                            replies.push((ri, Err(AppendError::IdempotencyConflict("some of the batch's ids were appended before, not all".into()))));
                            continue;
                        }
                        Found::None => {}
                    }
                }
            }
            let after = reqs[ri].batch.condition.as_ref().and_then(|c| c.after);
            match verdict {
                Verdict::Holds => {}
                Verdict::Fails => {
                    replies.push((ri, Err(AppendError::ConditionFailed { after })));
                    continue;
                }
                Verdict::BeyondEnd(next) => {
                    replies.push((ri, Err(AppendError::ConditionBeyondEnd { after: after.unwrap_or(0), next })));
                    continue;
                }
                Verdict::Truncated(first_seq) => {
                    replies.push((ri, Err(AppendError::ConditionTruncated { first_seq })));
                    continue;
                }
            }
            if !conflicts.is_empty() {
                if !final_409 || on_top.is_some() {
                    return Err(PrepareError::NeedFreshLook);
                }
                replies.push((ri, Err(AppendError::WrongExpectedRevision(conflicts))));
                continue;
            }
            let first = events.len();
            let mut ranges: Vec<StreamRange> = streams
                .iter()
                .zip(&cur)
                .map(|(s, h)| {
                    let r = h.map_or(0, |r| r + 1);
                    StreamRange { stream: s.clone(), first_revision: r, last_revision: r }
                })
                .collect();
            let mut counts = vec![0u64; streams.len()];
            // One shared name per stream and type of the request.
            let names: Vec<Arc<str>> = streams.iter().map(|s| Arc::from(s.as_str())).collect();
            let mut types: HashMap<&str, Arc<str>> = HashMap::new();
            for e in &reqs[ri].batch.events {
                let si = stream_ix[e.stream.as_str()];
                let revision = ranges[si].first_revision + counts[si];
                counts[si] += 1;
                ranges[si].last_revision = revision;
                let event_type = types.entry(e.event_type.as_str()).or_insert_with(|| Arc::from(e.event_type.as_str())).clone();
                events.push(Event {
                    stream: names[si].clone(),
                    revision,
                    event_type,
                    timestamp: e.timestamp.unwrap_or(now),
                    id: e.id.map(|u| *u.as_bytes()),
                    tags: e.tags.clone(),
                    binary: e.binary,
                    data: e.data.clone(),
                });
            }
            for (s, r) in streams.iter().zip(&ranges) {
                overlay.insert(s.clone(), Some(r.last_revision));
            }
            for id in &ids {
                batch_ids.insert(*id, ri);
            }
            out.accepted.push((ri, first, ranges));
        }
        if on_top.is_some() && !replies.is_empty() {
            return Err(PrepareError::NeedFreshLook);
        }
        for (ri, r) in replies {
            reqs[ri].answer(r);
        }
        out.events = Arc::new(events);
        Ok(out)
    }

    /// Checks a request's condition against the committed events after its
    /// `after` (only those not checked before), the batch it is staged on
    /// (`on_top`) and the requests before it in its own batch (`earlier`).
    /// A match in `on_top`, or an `after` past the view before a fresh look,
    /// is not a verdict: the speculation or the view is stale.
    async fn check_condition(&self, req: &mut Pending, earlier: &[Event], on_top: Option<&Prepared>, fresh_look: bool) -> Result<Verdict, PrepareError> {
        let Some(c) = &req.batch.condition else { return Ok(Verdict::Holds) };
        let next = self.view.next_seq;
        if let Some(after) = c.after.filter(|a| *a >= next) {
            if on_top.is_some() || !fresh_look {
                return Err(PrepareError::NeedFreshLook);
            }
            tracing::debug!(after, next, "condition after the end of the store");
            return Ok(Verdict::BeyondEnd(next));
        }
        if c.first_seq() < self.view.first_seq {
            return Ok(Verdict::Truncated(self.view.first_seq));
        }
        if req.checked_to < next {
            if reader::first_match(&self.store, &self.view, req.checked_to, next, c).await?.is_some() {
                return Ok(Verdict::Fails);
            }
            req.checked_to = next;
        }
        if on_top.is_some_and(|p| p.events.iter().any(|e| c.matches(e))) {
            return Err(PrepareError::NeedFreshLook);
        }
        Ok(if earlier.iter().any(|e| c.matches(e)) { Verdict::Fails } else { Verdict::Holds })
    }

    /// Looks for a batch's ids: in the window, then (for a failed exact or
    /// `no_stream` expectation) at the position the batch asked for.
    async fn find_original(&mut self, batch: &AppendBatch, streams: &[String], cur: &[Option<u64>], by_position: bool) -> Result<Found, StorageError> {
        let ids: Vec<[u8; 16]> = batch.events.iter().filter_map(|e| e.id.map(|u| *u.as_bytes())).collect();
        let mut hits: Vec<Option<IdHit>> = ids.iter().map(|i| self.window.map.get(i).copied()).collect();
        if hits.iter().any(Option::is_none) && !self.window.gaps.is_empty() {
            let missing: Vec<[u8; 16]> = ids.iter().zip(&hits).filter(|(_, h)| h.is_none()).map(|(i, _)| *i).collect();
            let found = reader::find_ids(&self.store, &self.view, &self.window.gaps, &missing).await?;
            for (i, h) in ids.iter().zip(hits.iter_mut()) {
                if h.is_none() {
                    *h = found.get(i).copied();
                }
            }
        }
        if by_position && hits.iter().any(Option::is_none) {
            for (si, s) in streams.iter().enumerate() {
                let from = match batch.expected.iter().find(|(n, _)| n == s).map(|(_, e)| *e) {
                    Some(Expectation::Exact(n)) => match n.checked_add(1) {
                        Some(f) => f,
                        None => continue,
                    },
                    Some(Expectation::NoStream) => 0,
                    _ => continue,
                };
                let n = batch.events.iter().filter(|e| &e.stream == s).count() as u64;
                if cur[si].is_none_or(|h| h.saturating_add(1) < from.saturating_add(n)) {
                    continue;
                }
                let stored = reader::stream_events(&self.store, &self.view, s, from, n as usize).await?;
                let mine = batch.events.iter().enumerate().filter(|(_, e)| &e.stream == s);
                for ((i, _), ev) in mine.zip(stored) {
                    if ev.event.id.is_some() && ev.event.id == Some(ids[i]) && hits[i].is_none() {
                        hits[i] = Some(IdHit { seq: ev.seq, revision: ev.event.revision, stream_hash: stream_hash(s) });
                    }
                }
            }
        }
        let found = hits.iter().filter(|h| h.is_some()).count();
        if found == 0 {
            return Ok(Found::None);
        }
        if found < hits.len() {
            return Ok(Found::Partial);
        }
        let hits: Vec<IdHit> = hits.into_iter().flatten().collect();
        let mut ranges: Vec<StreamRange> = Vec::new();
        for (i, (e, h)) in batch.events.iter().zip(&hits).enumerate() {
            if h.stream_hash != stream_hash(&e.stream) || (i > 0 && h.seq != hits[i - 1].seq + 1) {
                return Ok(Found::Partial);
            }
            match ranges.iter_mut().find(|r| r.stream == e.stream) {
                Some(r) if r.last_revision + 1 == h.revision => r.last_revision = h.revision,
                Some(_) => return Ok(Found::Partial),
                None => ranges.push(StreamRange { stream: e.stream.clone(), first_revision: h.revision, last_revision: h.revision }),
            }
        }
        Ok(Found::All(AppendOutcome { first_seq: hits[0].seq, last_seq: hits[hits.len() - 1].seq, streams: ranges, deduplicated: true }))
    }

    async fn upload(&self, events: Arc<Vec<Event>>) -> Result<Uploaded, StorageError> {
        let enc = self.cfg.encode;
        // Small batches encode in place: a hand-off to the blocking pool
        // costs more than they do.
        let seg = if events.iter().map(|e| e.data.len()).sum::<usize>() < 64 << 10 {
            encode_segment(&events, &enc)?
        } else {
            let owned = events.clone();
            tokio::task::spawn_blocking(move || encode_segment(&owned, &enc))
                .await
                .map_err(|e| StorageError::Backend(format!("encoder task: {e}")))??
        };
        let name = segment_name();
        // Its age counts from before the put: a put can land long before
        // its answer arrives.
        let at = Instant::now();
        self.store.shared.objects.put(&self.store.paths.object(&name), Bytes::from(seg.bytes.clone())).await?;
        Ok(Uploaded { name, seg, events, at })
    }

    fn next_manifest(&mut self, up: &Uploaded, prep: &Prepared) -> (Manifest, bool) {
        let mut next = (*self.view).clone();
        next.version += 1;
        next.parent_commit_id = Some(next.commit_id.clone());
        next.commit_id = ulid::Ulid::generate().to_string();
        let n = prep.events.len() as u64;
        let f = &up.seg.footer;
        next.segments.push(SegmentRef {
            name: up.name.clone(),
            base_seq: next.next_seq,
            count: n,
            bytes: up.seg.bytes.len() as u64,
            footer_offset: up.seg.footer_offset,
            footer_len: up.seg.footer_len,
            min_ts: f.min_ts,
            max_ts: f.max_ts,
            core_len: up.seg.core_len,
        });
        next.next_seq += n;
        next.last_ts = next.last_ts.max(f.max_ts);
        next.window_start = next.next_seq.saturating_sub(self.cfg.idempotency_window);
        let applied = match &self.ready {
            Some(r) if r.made.elapsed() < self.cfg.reupload_after => r.apply(&mut next),
            _ => false,
        };
        if self.ready.is_some() && !applied {
            tracing::debug!("roll-up no longer applies to the newest manifest; dropped");
            self.ready = None;
        }
        // Retired objects are unreferenced: dropping an entry only hands
        // the object to GC's orphan rule (its own age), so the list is kept
        // short to keep the manifest small.
        if next.retired.len() > MAX_RETIRED {
            let extra = next.retired.len() - MAX_RETIRED;
            next.retired.drain(..extra);
        }
        (next, applied)
    }

    fn after_commit(&mut self, next: Manifest, prep: &mut Prepared, up: Uploaded, applied: bool) {
        let base = self.view.next_seq;
        tracing::debug!(store = %self.store.paths.store, version = next.version, commit_id = %next.commit_id, base_seq = base, events = prep.events.len(), segment = %up.name, "committed");
        let next = Arc::new(next);
        self.view = next.clone();
        self.store.publish(next.clone());
        if applied {
            self.ready = None;
        }
        for (_, _, ranges) in &prep.accepted {
            for r in ranges {
                match self.heads.get_mut(&r.stream) {
                    Some(h) => *h = Some(r.last_revision),
                    None => {
                        self.heads.insert(r.stream.clone(), Some(r.last_revision));
                    }
                }
            }
        }
        for (i, e) in prep.events.iter().enumerate() {
            if let Some(id) = e.id {
                self.window.insert(id, IdHit { seq: base + i as u64, revision: e.revision, stream_hash: stream_hash(&e.stream) });
            }
        }
        self.window.evict_below(next.window_start);
        // The writer fills the cache with what it committed, so live tails
        // read from memory.
        let caches = &self.store.shared.caches;
        let name: Arc<str> = up.name.as_str().into();
        // The blocks share the committed events: nothing is copied.
        let Uploaded { seg, events, .. } = up;
        for b in &seg.footer.blocks {
            let block = crate::cache::Block::window(events.clone(), b.first_index as usize, b.count as usize, b.first_index);
            caches.put_block(name.clone(), b.offset, Arc::new(block));
        }
        caches.put_footer(name, Arc::new(seg.footer));
        self.maybe_start_maintenance();
        self.maybe_start_truncation();
    }

    fn maybe_start_maintenance(&mut self) {
        if self.maintenance.is_some() || self.ready.is_some() {
            return;
        }
        let m = &self.view;
        let recent_bytes: u64 = m.segments.iter().map(|s| s.bytes).sum();
        let store = self.store.clone();
        let roll = m.segments.len() > self.cfg.max_recent_segments || (recent_bytes > self.cfg.rollup_bytes && m.segments.len() > self.cfg.keep_recent);
        let merge = m.indexes.len() > self.cfg.max_indexes;
        // Under steady load a roll-up is due after every roll-up: take turns,
        // so index objects stay bounded too.
        if roll && !(merge && self.last_was_rollup) {
            let take = m.segments.len() - self.cfg.keep_recent.min(m.segments.len() - 1);
            let segs = m.segments[..take].to_vec();
            self.last_was_rollup = true;
            self.maintenance = Some(tokio::spawn(async move { rollup::roll_up(&store, segs).await }));
        } else if merge {
            let idx = m.indexes.clone();
            self.last_was_rollup = false;
            self.maintenance = Some(tokio::spawn(async move { rollup::merge_indexes(&store, idx).await }));
        }
    }

    async fn take_maintenance(&mut self) {
        // Back-pressure: a quarter past the recent-segment bound, wait for
        // the roll-up in flight rather than let the manifest grow.
        let bound = self.cfg.max_recent_segments.max(1);
        let behind = self.view.segments.len() >= bound + bound.div_ceil(4);
        if self.maintenance.as_ref().is_some_and(|h| h.is_finished() || behind) {
            if let Some(h) = self.maintenance.take() {
                match h.await {
                    Ok(Ok(r)) => self.ready = Some(r),
                    Ok(Err(e)) => tracing::warn!(store = %self.store.paths.store, error = %e, "roll-up failed; will retry"),
                    Err(e) => tracing::warn!(error = %e, "roll-up task failed"),
                }
            }
        }
    }

    async fn handle_control(&mut self, msg: Control) {
        match msg {
            Control::SetRetention { retention, reply } => {
                let r = self.set_retention(&retention).await;
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    self.start_truncation();
                }
            }
            Control::SetTiering { tiering, reply } => {
                self.rebase_to_newest().await.ok();
                let change = |m: &mut Manifest| {
                    if m.tiering == tiering {
                        return Ok(false);
                    }
                    m.tiering = tiering.clone();
                    Ok(true)
                };
                let r = self.commit_change(&change, &|m| m.tiering == tiering).await;
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    self.start_truncation();
                }
            }
            Control::Enforce { reply } => {
                if let Some(tx) = reply {
                    self.enforce_waiters.push(tx);
                }
                // What is due is judged on the newest manifest.
                if !self.truncating {
                    if let Err(e) = self.rebase_to_newest().await {
                        self.enforce_waiters.drain(..).for_each(|tx| drop(tx.send(Err(RetentionError::Storage(e.clone())))));
                        return;
                    }
                }
                self.start_truncation();
                if !self.truncating {
                    let view = self.view.clone();
                    self.enforce_waiters.drain(..).for_each(|tx| drop(tx.send(Ok(view.clone()))));
                }
            }
            Control::Truncation(prepared) => {
                self.truncating = false;
                let r = match prepared {
                    Ok(Some(t)) => {
                        let r = self
                            .commit_change(&|m| Ok(t.apply(m)), &|m| match &t.kind {
                                ReplacementKind::Truncate { end, .. } => m.stored_from >= *end,
                                ReplacementKind::Seal { archives, .. } => archives.first().is_some_and(|a| m.archives.iter().any(|x| x.name == a.name)),
                                _ => false,
                            })
                            .await;
                        if r.is_ok() {
                            // Go on until nothing more is due: on command,
                            // and in the background too, where a quiet
                            // store has no commit to start the next step.
                            if self.enforce_waiters.is_empty() {
                                self.maybe_start_truncation();
                            } else {
                                self.start_truncation();
                            }
                            if self.truncating && !self.enforce_waiters.is_empty() {
                                return;
                            }
                        }
                        r
                    }
                    Ok(None) => Ok(self.view.clone()),
                    Err(e) => Err(RetentionError::Storage(e)),
                };
                if let Err(e) = &r {
                    tracing::warn!(store = %self.store.paths.store, error = %e, "retention or tiering failed; will retry");
                }
                self.enforce_waiters.drain(..).for_each(|tx| drop(tx.send(r.clone())));
            }
        }
    }

    /// Commits the store's new retention settings; a `truncate_before`
    /// moves the first seq at once (reads below it are refused from now
    /// on), the objects go as they empty.
    async fn set_retention(&mut self, retention: &Retention) -> Result<Arc<Manifest>, RetentionError> {
        // The end of the store is checked against the newest manifest.
        self.rebase_to_newest().await.map_err(RetentionError::Storage)?;
        let change = |m: &mut Manifest| {
            if let Some(t) = retention.truncate_before.filter(|t| *t > m.next_seq) {
                return Err(RetentionError::Invalid(format!("truncate_before={t} is beyond the end of the store (next seq {})", m.next_seq)));
            }
            let first_seq = m.first_seq.max(retention.truncate_before.unwrap_or(0));
            if m.retention == *retention && m.first_seq == first_seq {
                return Ok(false);
            }
            m.retention = retention.clone();
            m.first_seq = first_seq;
            Ok(true)
        };
        let floor = retention.truncate_before.unwrap_or(0);
        self.commit_change(&change, &|m| m.retention == *retention && m.first_seq >= floor).await
    }

    /// Commits a manifest version that only changes metadata (no segment),
    /// on top of the newest manifest: `change` edits a copy of it (false:
    /// nothing to change); `ours` tells whether a manifest holds the change.
    async fn commit_change(&mut self, change: &(dyn Fn(&mut Manifest) -> Result<bool, RetentionError> + Sync), ours: &(dyn Fn(&Manifest) -> bool + Sync)) -> Result<Arc<Manifest>, RetentionError> {
        let deadline = Instant::now() + self.cfg.commit_timeout;
        let mut attempt = 0u32;
        loop {
            let mut next = (*self.view).clone();
            if !change(&mut next)? {
                return Ok(self.view.clone());
            }
            next.version += 1;
            next.parent_commit_id = Some(next.commit_id.clone());
            next.commit_id = ulid::Ulid::generate().to_string();
            if next.retired.len() > MAX_RETIRED {
                let extra = next.retired.len() - MAX_RETIRED;
                next.retired.drain(..extra);
            }
            let bytes = Bytes::from(next.encode().map_err(|e| RetentionError::Storage(e.into()))?);
            let fresh = self.view_confirmed.is_some_and(|t| t.elapsed() < self.cfg.manifest_retention / 2);
            let mut committer = Committer { store: self.store.clone(), known: self.known, fresh, create_started: None };
            let resolved = committer.create_resolved(&next, bytes, ours, deadline).await;
            self.known = committer.known;
            match resolved {
                Resolved::Committed => {
                    self.view_confirmed = committer.create_started;
                    let next = Arc::new(next);
                    self.view = next.clone();
                    self.store.publish(next.clone());
                    tracing::info!(store = %self.store.paths.store, version = next.version, first_seq = next.first_seq, "manifest changed");
                    return Ok(next);
                }
                Resolved::Conflict => {
                    attempt += 1;
                    if Instant::now() >= deadline {
                        return Err(RetentionError::Storage(StorageError::Backend("too many conflicting commits".into())));
                    }
                    let ms = rand::rng().random_range(1..=(5u64 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    self.rebase_to_newest().await.map_err(RetentionError::Storage)?;
                }
                Resolved::Failed(e) => return Err(RetentionError::Storage(e)),
                Resolved::Unknown => {
                    self.restart_from_storage().await;
                    return Err(RetentionError::CommitOutcomeUnknown);
                }
            }
        }
    }

    /// Starts preparing a truncation of what retention lets go of, unless
    /// one is being prepared; it comes back as a `Truncation` message.
    fn start_truncation(&mut self) {
        let m = &self.view;
        if self.truncating || !m.has_policies() {
            return;
        }
        self.truncating = true;
        self.last_age_check = Some(Instant::now());
        let (store, view, now) = (self.store.clone(), self.view.clone(), self.clock.now_ms());
        tokio::spawn(async move {
            // What is dropped is not sealed first.
            let r = match rollup::truncate(&store, &view, now).await {
                Ok(None) => crate::tier::seal(&store, &view, now).await,
                other => other,
            };
            let tx = store.writer.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(tx) = tx {
                let _ = tx.send(WriterMsg::Control(Control::Truncation(r))).await;
            }
        });
    }

    /// After a commit: whether retention may drop something now (objects
    /// wholly before the first seq, or, at most every
    /// [`AGE_CHECK_INTERVAL`], objects past the maximum age).
    fn maybe_start_truncation(&mut self) {
        let m = &self.view;
        if !m.has_policies() {
            return;
        }
        let oldest_end = m.archives.first().map(|a| a.end_seq).or_else(|| m.indexes.first().map(|i| i.end_seq)).or_else(|| m.segments.first().map(|s| s.end_seq()));
        let emptied = oldest_end.is_some_and(|e| e <= m.first_seq);
        let sealable = m.indexes.first().is_some_and(|i| i.end_seq <= m.window_start && m.tiering.seal_before.is_some_and(|b| i.end_seq <= b));
        let aged = m.retention.max_age_ms.is_some() || (m.tiering.seal_after_ms.is_some() && m.indexes.first().is_some_and(|i| i.end_seq <= m.window_start));
        let age_due = aged && self.last_age_check.is_none_or(|t| t.elapsed() >= AGE_CHECK_INTERVAL);
        if emptied || sealable || age_due {
            self.start_truncation();
        }
    }

    /// Forgets the cached heads and takes the newest manifest as the view;
    /// the ids of what it adds are looked up in storage when needed.
    async fn restart_from_storage(&mut self) {
        self.heads.clear();
        if let Ok(m) = self.store.refresh().await {
            self.window.gaps.push((self.view.next_seq.min(m.next_seq), m.next_seq));
            self.view = m;
            self.view_confirmed = None;
        }
    }

    /// Moves the view to the newest manifest and updates the cached heads
    /// from the segments committed since.
    async fn rebase_to_newest(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        let newest = self.store.refresh().await?;
        if newest.version >= self.view.version {
            self.view_confirmed = Some(started);
        }
        if newest.version <= self.view.version {
            return Ok(());
        }
        let old = self.view.next_seq;
        if newest.archived_end() > old {
            // Retention dropped (or tiering sealed) commits this writer
            // never saw: their streams' heads are in the heads object, not
            // in any segment left to read. Look every head up again.
            self.heads.clear();
        }
        for seg in self.store.segments_between(&newest, old, newest.next_seq).await? {
            let f = self.store.footer(&seg).await?;
            for s in &f.streams {
                if let Some(h) = self.heads.get_mut(&s.name) {
                    *h = Some(h.map_or(s.last_revision(), |v| v.max(s.last_revision())));
                }
            }
        }
        if newest.next_seq > old {
            self.window.gaps.push((old, newest.next_seq));
        }
        self.window.evict_below(newest.window_start);
        self.view = newest;
        Ok(())
    }
}

/// What a manifest create needs, apart from the writer, so the next batch
/// can be prepared while it runs.
struct Committer {
    store: Arc<Store>,
    known: KnownBoundary,
    /// The view was confirmed newest recently enough that N+1 cannot be a
    /// collected version's name (see `Writer::view_confirmed`).
    fresh: bool,
    /// When the first create of N+1 was sent.
    create_started: Option<Instant>,
}

impl Committer {
    /// Creates N+1 and resolves what the answer means.
    /// `ours` says whether a manifest holds this commit's change (asked of
    /// the newest manifest when a GC boundary makes N+1 suspect).
    async fn create_resolved(&mut self, next: &Manifest, bytes: Bytes, ours: &(dyn Fn(&Manifest) -> bool + Sync), deadline: Instant) -> Resolved {
        // A boundary this node already knows (learned by its own GC, a
        // reader or an earlier commit) may put N+1 below the floor: then
        // the view is behind, N+1 was someone's and is collected, and a
        // create would only leave a stray manifest. Rebase instead.
        let learned = self.store.known_boundary();
        if learned.k > self.known.k {
            self.known = learned;
        }
        if next.version < self.known.floor {
            return Resolved::Conflict;
        }
        let objects = &self.store.shared.objects;
        let path = self.store.paths.manifest(next.version);
        let mut put_needed = true;
        let mut attempted = false;
        let mut delay = Duration::from_millis(5);
        loop {
            if put_needed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return if attempted { Resolved::Unknown } else { Resolved::Failed(StorageError::Backend("commit deadline passed".into())) };
                }
                attempted = true;
                self.create_started.get_or_insert_with(Instant::now);
                if let Ok(Ok(CreateOutcome::Created)) = tokio::time::timeout(left, objects.create(&path, bytes.clone())).await {
                    return self.check_boundary(next, ours, deadline).await;
                }
                // AlreadyExists, an error or a timeout: none of them says
                // who won. Read back.
                put_needed = false;
            }
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            match tokio::time::timeout(left, load_manifest(objects, &self.store.paths, next.version)).await {
                Ok(Ok(Some(m))) if m.commit_id == next.commit_id => return self.check_boundary(next, ours, deadline).await,
                Ok(Ok(Some(_))) => return Resolved::Conflict,
                Ok(Ok(None)) => put_needed = true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "reading back a manifest failed");
                    if Instant::now() >= deadline {
                        return Resolved::Unknown;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(_) => return Resolved::Unknown,
            }
        }
    }

    /// A GC boundary newer than the one known means N+1 may have been a
    /// collected version's name: then the commit counts only if the newest
    /// manifest references our segment.
    ///
    /// The floor that counts is the newest known, not only one found now:
    /// a commit acknowledged through the look below can leave the view
    /// behind a floor learned on the way (the chain went on meanwhile), and
    /// the next N+1 from that view is then a collected name, created anew.
    async fn check_boundary(&mut self, next: &Manifest, ours: &(dyn Fn(&Manifest) -> bool + Sync), deadline: Instant) -> Resolved {
        if self.fresh && next.version >= self.known.floor {
            return Resolved::Committed;
        }
        loop {
            match self.newer_boundary().await {
                Ok(newer) => {
                    if let Some(b) = newer {
                        self.known = b;
                    }
                    if next.version >= self.known.floor {
                        return Resolved::Committed;
                    }
                    self.store.learn_boundary(self.known);
                    return match self.store.reload_cold().await {
                        Ok(m) if ours(&m) => Resolved::Committed,
                        Ok(_) => Resolved::Conflict,
                        Err(_) => Resolved::Unknown,
                    };
                }
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => return Resolved::Unknown,
            }
        }
    }

    async fn newer_boundary(&self) -> Result<Option<KnownBoundary>, StorageError> {
        let mut newest = None;
        let mut k = self.known.k + 1;
        while let Some(b) = self.store.shared.objects.get_opt(&self.store.paths.boundary(k)).await? {
            let b: cairn_format::manifest::Boundary = serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt(format!("boundary {k}: {e}")))?;
            newest = Some(KnownBoundary { k, floor: b.floor });
            k += 1;
        }
        Ok(newest)
    }

}

type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

/// The answers of a committed batch whose events start at `base`.
fn outcomes_of(prep: &Prepared, base: u64) -> Vec<(usize, AppendOutcome)> {
    prep.accepted
        .iter()
        .map(|(ri, first, ranges)| {
            let n: u64 = ranges.iter().map(|r| r.last_revision - r.first_revision + 1).sum();
            let first_seq = base + *first as u64;
            (*ri, AppendOutcome { first_seq, last_seq: first_seq + n - 1, streams: ranges.clone(), deduplicated: false })
        })
        .collect()
}

/// Sends the answers of a committed batch (and of the requests that were
/// copies of one of its requests).
fn answer_all(senders: &mut [Option<Reply>], outcomes: &[(usize, AppendOutcome)], same_as: &[(usize, usize)]) {
    for (ri, o) in outcomes {
        if let Some(tx) = senders[*ri].take() {
            let _ = tx.send(Ok(o.clone()));
        }
    }
    for (ri, of) in same_as {
        let r = outcomes.iter().find(|(i, _)| i == of).map(|(_, o)| AppendOutcome { deduplicated: true, ..o.clone() });
        if let Some(tx) = senders[*ri].take() {
            let _ = tx.send(r.ok_or(AppendError::CommitOutcomeUnknown));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Holds,
    Fails,
    /// `after` is not a seq of the store (whose next seq this is).
    BeyondEnd(u64),
    /// What the condition looks at starts before the store's first seq.
    Truncated(u64),
}

enum Found {
    All(AppendOutcome),
    Partial,
    None,
}

fn matches(e: Expectation, head: Option<u64>) -> bool {
    match e {
        Expectation::Any => true,
        Expectation::NoStream => head.is_none(),
        Expectation::StreamExists => head.is_some(),
        Expectation::Exact(n) => head == Some(n),
    }
}

impl Replacement {
    /// Applies the replacement to `m` if `m` still holds what it replaces.
    pub(crate) fn apply(&self, m: &mut Manifest) -> bool {
        match &self.kind {
            ReplacementKind::RollUp { replaced, index, since_ms } => {
                let n = replaced.len();
                if m.segments.len() < n || m.segments[..n].iter().zip(replaced).any(|(s, r)| &s.name != r) || index.first_seq != m.indexed_end() {
                    return false;
                }
                m.segments.drain(..n);
                m.indexes.push(index.clone());
                m.retired.extend(replaced.iter().map(|name| Retired { name: name.clone(), since_ms: *since_ms }));
                true
            }
            ReplacementKind::MergeIndexes { replaced, index, since_ms } => {
                let n = replaced.len();
                let Some(i) = m.indexes.iter().position(|x| x.name == replaced[0]) else { return false };
                if m.indexes.len() < i + n || m.indexes[i..i + n].iter().zip(replaced).any(|(x, r)| &x.name != r) {
                    return false;
                }
                m.indexes.splice(i..i + n, [index.clone()]);
                m.retired.extend(replaced.iter().map(|name| Retired { name: name.clone(), since_ms: *since_ms }));
                true
            }
            ReplacementKind::Truncate { archives, indexes, segments, old_heads, heads, end, retire, since_ms } => {
                let (na, ni, ns) = (archives.len(), indexes.len(), segments.len());
                let holds = m.archives.len() >= na
                    && m.archives[..na].iter().zip(archives).all(|(x, r)| &x.name == r)
                    && (ni == 0 || (m.archives.len() == na && m.indexes.len() >= ni && m.indexes[..ni].iter().zip(indexes).all(|(x, r)| &x.name == r)))
                    && (ns == 0 || (m.archives.len() == na && m.indexes.len() == ni && m.segments.len() >= ns && m.segments[..ns].iter().zip(segments).all(|(x, r)| &x.name == r)))
                    && m.heads.as_ref().map(|h| &h.name) == old_heads.as_ref();
                if !holds {
                    return false;
                }
                m.archives.drain(..na);
                m.indexes.drain(..ni);
                m.segments.drain(..ns);
                m.heads = heads.clone();
                m.stored_from = *end;
                m.first_seq = m.first_seq.max(*end);
                m.retired.extend(retire.iter().map(|name| Retired { name: name.clone(), since_ms: *since_ms }));
                true
            }
            ReplacementKind::Seal { indexes, archives, old_heads, heads, retire, since_ms } => {
                let n = indexes.len();
                let holds = m.indexes.len() >= n
                    && m.indexes[..n].iter().zip(indexes).all(|(x, r)| &x.name == r)
                    && archives.first().is_some_and(|a| a.first_seq == m.archived_end())
                    && m.heads.as_ref().map(|h| &h.name) == old_heads.as_ref();
                if !holds {
                    return false;
                }
                m.indexes.drain(..n);
                m.archives.extend(archives.iter().cloned());
                m.heads = heads.clone();
                m.retired.extend(retire.iter().map(|name| Retired { name: name.clone(), since_ms: *since_ms }));
                true
            }
        }
    }
}
