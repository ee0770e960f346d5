//! Append conditions: a batch commits only if no event matching a query
//! was committed after a seq, checked atomically with the commit, on one
//! node and across several.

use std::sync::Arc;

use cairn_engine::reader::ReadOptions;
use cairn_engine::{AppendBatch, AppendCondition, AppendError, Engine, NewEvent, QueryItem};

use crate::{batch, ev, read_all, small_config, test_config, with_id, Backend, Fixture};

cairn_engine::on_every_backend!(
    conditions_look_after_their_seq_by_type_and_tags,
    concurrent_writers_on_three_nodes_never_overbook,
    a_condition_sees_the_requests_before_it_in_its_commit,
    a_retried_batch_is_answered_as_before_not_failed_by_its_own_events,
);

fn tagged(stream: &str, ty: &str, tags: &[(&str, &str)]) -> NewEvent {
    NewEvent { tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..ev(stream, ty, "{}") }
}

fn item(types: &[&str], tags: &[(&str, &str)]) -> QueryItem {
    QueryItem { types: types.iter().map(|t| t.to_string()).collect(), tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

fn cond(items: Vec<QueryItem>, after: Option<u64>) -> AppendCondition {
    AppendCondition { fail_if_events_match: items, after }
}

async fn conditions_look_after_their_seq_by_type_and_tags(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("c").await.unwrap();
    // 0: CourseDefined c1, 1: Subscribed c1/s1, 2: X c2.
    e.append("c", batch(vec![tagged("course-1", "CourseDefined", &[("course", "c1")]), tagged("student-1", "Subscribed", &[("course", "c1"), ("student", "s1")])])).await.unwrap();
    e.append("c", batch(vec![tagged("other", "X", &[("course", "c2")])])).await.unwrap();
    let next = |e: Arc<Engine>| async move { e.store_info("c").await.unwrap().next_seq };
    let probe = || batch(vec![tagged("probe", "P", &[("course", "none")])]);
    let fails = [
        // Type and tag both match seq 1.
        cond(vec![item(&["Subscribed"], &[("course", "c1")])], None),
        cond(vec![item(&["Subscribed"], &[("course", "c1")])], Some(0)),
        // Tags alone; types alone.
        cond(vec![item(&[], &[("course", "c2")])], Some(1)),
        cond(vec![item(&["X", "Y"], &[])], Some(1)),
        // An array of items fails on any of them.
        cond(vec![item(&[], &[("course", "zzz")]), item(&["X"], &[])], Some(0)),
        // An empty item matches every event.
        cond(vec![QueryItem::default()], Some(1)),
    ];
    for (i, c) in fails.into_iter().enumerate() {
        let before = next(e.clone()).await;
        let r = e.append("c", probe().condition(c.clone())).await;
        assert!(matches!(r, Err(AppendError::ConditionFailed { after }) if after == c.after), "case {i}: {r:?}");
        assert_eq!(next(e.clone()).await, before, "case {i}: nothing appended");
    }
    let holds = [
        // The match is at or before `after`.
        cond(vec![item(&["Subscribed"], &[("course", "c1")])], Some(1)),
        // Every tag of an item must be carried, and the type must be one of its types.
        cond(vec![item(&[], &[("course", "c1"), ("student", "s2")])], None),
        cond(vec![item(&["Subscribed"], &[("course", "c2")])], None),
        cond(vec![item(&["CourseDefined"], &[])], Some(0)),
        // Values are compared whole.
        cond(vec![item(&[], &[("course", "c")])], None),
    ];
    for (i, c) in holds.into_iter().enumerate() {
        let before = next(e.clone()).await;
        let out = e.append("c", probe().condition(c)).await.unwrap_or_else(|err| panic!("case {i}: {err:?}"));
        assert_eq!(out.first_seq, before, "case {i}");
    }
    // The probes themselves now match a query on their tag.
    let r = e.append("c", probe().condition(cond(vec![item(&["P"], &[])], Some(3)))).await;
    assert!(matches!(r, Err(AppendError::ConditionFailed { .. })), "{r:?}");
    // `after` must be a seq of the store.
    let end = next(e.clone()).await;
    let r = e.append("c", probe().condition(cond(vec![item(&["P"], &[])], Some(end)))).await;
    assert!(matches!(r, Err(AppendError::ConditionBeyondEnd { after, next }) if (after, next) == (end, end)), "{r:?}");
    let r = e.append("c", probe().condition(cond(vec![], None))).await;
    assert!(matches!(r, Err(AppendError::InvalidCondition(_))), "{r:?}");
    let r = e.append("c", probe().condition(cond(vec![item(&[""], &[])], None))).await;
    assert!(matches!(r, Err(AppendError::InvalidCondition(_))), "{r:?}");
    assert_eq!(next(e.clone()).await, end);
    // A fresh engine (another node, a restart) sees the same.
    let other = fx.engine(test_config());
    let r = other.append("c", probe().condition(cond(vec![item(&["Subscribed"], &[])], Some(0)))).await;
    assert!(matches!(r, Err(AppendError::ConditionFailed { .. })), "{r:?}");
    other.append("c", probe().condition(cond(vec![item(&["Subscribed"], &[])], Some(1)))).await.unwrap();
}

/// The events tagged `course:c1` as one node sees them, and the seq the
/// look reached (`after` for a condition).
async fn look(e: &Engine) -> (usize, Option<u64>) {
    let opts = ReadOptions { limit: None, tag: Some(("course".into(), "c1".into())) };
    let mut scan = e.read_store("c", 0, opts).await.unwrap();
    let mut n = 0;
    while let Some(chunk) = scan.next_chunk().await.unwrap() {
        n += chunk.len();
    }
    (n, scan.next().checked_sub(1))
}

/// A course of 5 seats, 12 students on 3 nodes: each reads the course's
/// events, and subscribes only if it saw a free seat, on the condition that
/// nothing for the course was appended since it looked. Exactly 5 get in.
async fn concurrent_writers_on_three_nodes_never_overbook(b: Backend) {
    const SEATS: usize = 5;
    let fx = Fixture::new(b);
    let nodes: Vec<Arc<Engine>> = (0..3).map(|_| fx.engine(small_config())).collect();
    nodes[0].create_store("c").await.unwrap();
    // Every student looks once before any of them appends: the race is
    // certain, whatever the scheduling (a fast node could otherwise serve
    // them one after another).
    let looked = Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for s in 0..12 {
        let e = nodes[s % 3].clone();
        let looked = looked.clone();
        tasks.push(tokio::spawn(async move {
            let mut tries = 0;
            loop {
                tries += 1;
                let (taken, after) = look(&e).await;
                if tries == 1 {
                    looked.wait().await;
                }
                if taken >= SEATS {
                    return (false, tries);
                }
                let b = AppendBatch::one_stream(&format!("student-{s}"), vec![tagged("", "Subscribed", &[("course", "c1"), ("student", &s.to_string())])]);
                match e.append("c", b.condition(cond(vec![item(&[], &[("course", "c1")])], after))).await {
                    Ok(_) => return (true, tries),
                    Err(AppendError::ConditionFailed { .. }) => continue,
                    Err(err) => panic!("student {s}: {err:?}"),
                }
            }
        }));
    }
    let mut got = 0;
    let mut retried = 0;
    for t in tasks {
        let (ok, tries) = t.await.unwrap();
        got += usize::from(ok);
        retried += tries - 1;
    }
    let all = read_all(&nodes[1], "c").await;
    assert_eq!((got, all.len()), (SEATS, SEATS), "{all:?}");
    assert!(retried > 0, "no writer ever lost a race: the test did not test anything");
}

/// Twenty appends of the same name at once, on one node: they share
/// commits, and only the first may register the name.
async fn a_condition_sees_the_requests_before_it_in_its_commit(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("c").await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move {
                let b = AppendBatch::one_stream(&format!("user-{i}"), vec![tagged("", "Registered", &[("username", "alice")])]);
                e.append("c", b.condition(cond(vec![item(&["Registered"], &[("username", "alice")])], None))).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AppendError::ConditionFailed { after: None }) => {}
            Err(err) => panic!("{err:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(read_all(&e, "c").await.len(), 1);
}

async fn a_retried_batch_is_answered_as_before_not_failed_by_its_own_events(b: Backend) {
    let fx = Fixture::new(b);
    let e = fx.engine(test_config());
    e.create_store("c").await.unwrap();
    let register = || {
        let b = AppendBatch::one_stream("user-bob", vec![with_id(tagged("", "Registered", &[("username", "bob")]), 7)]);
        b.condition(cond(vec![item(&[], &[("username", "bob")])], None))
    };
    let first = e.append("c", register()).await.unwrap();
    let again = e.append("c", register()).await.unwrap();
    assert_eq!((again.first_seq, again.deduplicated), (first.first_seq, true));
    // Another node, which has no ids in memory, finds it in storage.
    let again = fx.engine(test_config()).append("c", register()).await.unwrap();
    assert_eq!((again.first_seq, again.deduplicated), (first.first_seq, true));
    // Another batch with ids is no retry: its condition fails.
    let mut other = register();
    other.events[0].id = Some(uuid::Uuid::from_u128(8));
    let r = e.append("c", other).await;
    assert!(matches!(r, Err(AppendError::ConditionFailed { after: None })), "{r:?}");
    assert_eq!(read_all(&e, "c").await.len(), 1);
}
