//! The client against a real node on a loopback socket.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cairn_client::{Client, Direction, ErrorKind, EventData, Expected, Message, Precondition, StreamRead};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use support::node::Node;
use support::proxy::Proxy;

fn ev(t: &str, n: u64) -> EventData {
    EventData::json(t, &json!({ "n": n })).unwrap()
}

#[tokio::test]
async fn stores_are_created_listed_described_and_deleted() {
    let node = Node::memory().await;
    let c = node.client();
    let s = c.store("shop");
    assert!(s.create().await.unwrap(), "new");
    assert!(!s.create().await.unwrap(), "existed");
    assert_eq!(c.list_stores().await.unwrap(), vec!["shop".to_string()]);
    let info = s.info().await.unwrap();
    assert_eq!((info.name.as_str(), info.next_seq, info.bytes), ("shop", 0, 0));
    s.append("x", vec![ev("T", 0)], Expected::Any).await.unwrap();
    assert!(s.info().await.unwrap().bytes > 0, "a segment's bytes");
    s.delete().await.unwrap();
    assert_eq!(s.info().await.unwrap_err().kind(), ErrorKind::NotFound);
    let bad = c.store("Bad_Name").create().await.unwrap_err();
    assert_eq!((bad.kind(), bad.code()), (ErrorKind::InvalidInput, Some("invalid_store_name")));
    let missing = c.store("nope").append("s", vec![ev("T", 0)], Expected::Any).await.unwrap_err();
    assert_eq!((missing.kind(), missing.code(), missing.is_retry_safe()), (ErrorKind::NotFound, Some("store_not_found"), false));
}

#[tokio::test]
async fn appends_check_expected_revisions() {
    let node = Node::memory().await;
    let s = node.client().store("s");
    s.create().await.unwrap();
    let a = s.append("order-1", vec![ev("Placed", 0), ev("Paid", 1)], Expected::NoStream).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq, a.first_revision, a.last_revision, a.deduplicated), (0, 1, 0, 1, false));
    let e = s.append("order-1", vec![ev("Placed", 2)], Expected::NoStream).await.unwrap_err();
    assert_eq!((e.kind(), e.code(), e.current_revision()), (ErrorKind::Conflict, Some("wrong_expected_revision"), Some(1)));
    let e = s.append("order-1", vec![ev("X", 2)], Expected::Revision(0)).await.unwrap_err();
    assert_eq!(e.current_revision(), Some(1));
    s.append("order-1", vec![ev("Shipped", 2)], Expected::Revision(1)).await.unwrap();
    s.append("order-1", vec![ev("Shipped", 3)], Expected::StreamExists).await.unwrap();
    assert_eq!(s.stream_head("order-1").await.unwrap(), Some(3));
    assert_eq!(s.stream_head("order-2").await.unwrap(), None);

    let many = vec![ev("A", 0).stream("a"), ev("B", 0).stream("b"), ev("A", 1).stream("a")];
    let m = s.append_many(many, [("a".to_string(), Expected::NoStream), ("b".to_string(), Expected::NoStream)]).await.unwrap();
    assert_eq!((m.first_seq, m.last_seq), (4, 6));
    assert_eq!(m.streams.iter().find(|r| r.stream == "a").map(|r| (r.first_revision, r.last_revision)), Some((0, 1)));
    let e = s.append_many(vec![ev("A", 2).stream("a"), ev("B", 1).stream("b")], [("a".to_string(), Expected::NoStream), ("b".to_string(), Expected::Revision(0))]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let failing: Vec<_> = e.conflicts().iter().map(|c| (c.stream.as_str(), c.current_revision)).collect();
    assert_eq!(failing, vec![("a", Some(1))], "only a failed: {:?}", e.conflicts());
    assert!(s.append_many(vec![ev("A", 2)], []).await.is_err(), "an event without a stream is refused before sending");
    assert_eq!(s.info().await.unwrap().next_seq, 7, "failed appends changed nothing");
}

#[tokio::test]
async fn an_append_whose_answer_is_lost_is_retried_and_stored_once() {
    let node = Node::memory().await;
    let proxy = Proxy::to(&node.url).await;
    let c = Client::builder(&proxy.url).backoff(Duration::from_millis(10)).build().unwrap();
    let s = c.store("s");
    s.create().await.unwrap();
    // The node commits each attempt; the proxy drops the first two answers.
    proxy.drop_answers(2);
    let a = s.append("x", vec![ev("T", 0), ev("T", 1)], Expected::Any).await.unwrap();
    assert_eq!(proxy.answers_dropped(), 2);
    assert_eq!((a.first_seq, a.last_seq, a.deduplicated), (0, 1, true), "the retry found the first attempt");
    proxy.drop_answers(1);
    let b = s.append("x", vec![ev("T", 2)], Expected::Revision(1)).await.unwrap();
    assert_eq!((b.first_revision, b.deduplicated), (2, true), "exact expectations are idempotent by position");
    let all = s.read(0).collect_all().await.unwrap();
    assert_eq!(all.len(), 3, "stored once each");

    // A retry without the client: the same events again append nothing.
    let same = vec![ev("T", 9)];
    let first = s.append("y", same.clone(), Expected::Any).await.unwrap();
    let again = s.append("y", same, Expected::Any).await.unwrap();
    assert_eq!((again.first_seq, again.deduplicated), (first.first_seq, true));
}

#[tokio::test]
async fn reads_are_lazy_and_filtered() {
    let node = Node::memory().await;
    let s = node.client().store("s");
    s.create().await.unwrap();
    let odd = "a/b c?d#e%f é";
    for chunk in 0..5u64 {
        let batch: Vec<_> = (0..1000).map(|i| {
            let n = chunk * 1000 + i;
            let stream = if n % 2 == 1 { odd.to_string() } else { format!("even-{}", n % 10) };
            ev("T", n).stream(stream).tag("parity", if n % 2 == 1 { "odd" } else { "even" })
        }).collect();
        s.append_many(batch, []).await.unwrap();
    }
    let mut seqs = Vec::new();
    let mut events = s.read(0);
    while let Some(e) = events.try_next().await.unwrap() {
        assert_eq!(e.json::<serde_json::Value>().unwrap()["n"], e.seq);
        seqs.push(e.seq);
    }
    assert_eq!(seqs, (0..5000).collect::<Vec<_>>());
    let page = s.read_with(4990, Some(5), None).collect_all().await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4990, 4991, 4992, 4993, 4994]);
    let tagged = s.read_with(0, None, Some(("parity", "odd"))).collect_all().await.unwrap();
    assert_eq!(tagged.len(), 2500);
    assert!(tagged.iter().all(|e| e.seq % 2 == 1 && e.stream == odd));

    let fwd = s.read_stream(odd, StreamRead::forward().from(10).limit(3)).collect_all().await.unwrap();
    assert_eq!(fwd.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![10, 11, 12]);
    let back = s.read_stream(odd, StreamRead::backward().limit(2)).collect_all().await.unwrap();
    assert_eq!(back.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2499, 2498]);
    let back_all = s.read_stream("even-4", StreamRead::backward()).collect_all().await.unwrap();
    assert_eq!(back_all.len(), 500);
    assert_eq!(back_all.last().map(|e| e.revision), Some(0));
    assert!(s.read_stream("nothing-here", StreamRead::forward()).collect_all().await.unwrap().is_empty());
    let _ = Direction::Backward;
    let e = s.read(999_999).collect_all().await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::InvalidInput, Some("position_beyond_end")));
}

#[tokio::test]
async fn a_read_cut_off_midway_resumes_after_its_last_event() {
    let node = Node::memory().await;
    let proxy = Proxy::to(&node.url).await;
    let c = Client::builder(&proxy.url).backoff(Duration::from_millis(10)).build().unwrap();
    let s = c.store("s");
    s.create().await.unwrap();
    let batch: Vec<_> = (0..3000).map(|n| ev("T", n)).collect();
    s.append("x", batch, Expected::Any).await.unwrap();
    // Forwards: cut after ~100 KB of the answer.
    proxy.cut_next_answer_after(100_000);
    let all = s.read(0).collect_all().await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (0..3000).collect::<Vec<_>>());
    assert_eq!(proxy.answers_cut(), 1);
    // Backwards with a limit: the resumed read keeps both.
    proxy.cut_next_answer_after(50_000);
    let back = s.read_stream("x", StreamRead::backward().limit(2000)).collect_all().await.unwrap();
    assert_eq!(back.iter().map(|e| e.revision).collect::<Vec<_>>(), (1000..3000).rev().collect::<Vec<_>>());
    assert_eq!(proxy.answers_cut(), 2);
}

#[tokio::test]
async fn a_subscription_catches_up_then_follows_live_across_broken_connections() {
    let node = Node::memory().await;
    let proxy = Proxy::to(&node.url).await;
    let c = Client::builder(&proxy.url).backoff(Duration::from_millis(10)).build().unwrap();
    let s = c.store("s");
    s.create().await.unwrap();
    s.append("x", (0..10).map(|n| ev("T", n)).collect(), Expected::Any).await.unwrap();
    let mut sub = s.subscribe(3);
    for seq in 3..10 {
        match sub.next().await.unwrap() {
            Message::Event(e) => assert_eq!(e.seq, seq),
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(sub.next().await.unwrap(), Message::CaughtUp { next: 10 });
    let writer = node.client().store("s");
    for round in 0..3u64 {
        // The subscription is in a long-poll; break it, then append.
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.break_all();
        writer.append("y", vec![ev("Live", round)], Expected::Any).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("live event in time").unwrap();
        let Message::Event(e) = got else { panic!("{got:?}") };
        assert_eq!((e.seq, e.event_type.as_str()), (10 + round, "Live"));
        assert_eq!(sub.next().await.unwrap(), Message::CaughtUp { next: 11 + round });
    }
    // One stream.
    let mut one = s.subscribe_stream("y", 1);
    let mut revs = Vec::new();
    while let Message::Event(e) = one.next().await.unwrap() {
        revs.push(e.revision);
    }
    assert_eq!(revs, vec![1, 2]);
    writer.append("x", vec![ev("Other", 0)], Expected::Any).await.unwrap();
    writer.append("y", vec![ev("Mine", 0)], Expected::Any).await.unwrap();
    let Message::Event(e) = one.next().await.unwrap() else { panic!() };
    assert_eq!((e.stream.as_str(), e.revision, e.event_type.as_str()), ("y", 3, "Mine"));
    // A deleted store ends the subscription with an error.
    writer.delete().await.unwrap();
    let stream = s.subscribe(0).into_stream();
    let first: Vec<_> = stream.take(1).collect().await;
    assert_eq!(first[0].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn docs_are_compare_and_swap() {
    let node = Node::memory().await;
    let s = node.client().store("s");
    s.create().await.unwrap();
    assert_eq!(s.get_doc("view").await.unwrap(), None);
    let e1 = s.put_doc("view", &b"{\"a\":1}"[..], "application/json", Precondition::Absent).await.unwrap();
    let e = s.put_doc("view", &b"{}"[..], "application/json", Precondition::Absent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    let e2 = s.put_doc("view", &b"{\"a\":2}"[..], "application/json", Precondition::Matches(e1.clone())).await.unwrap();
    assert_ne!(e1, e2);
    let stale = s.put_doc("view", &b"{\"a\":3}"[..], "application/json", Precondition::Matches(e1.clone())).await.unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    let d = s.get_doc("view").await.unwrap().unwrap();
    assert_eq!((&d.body[..], d.etag.as_str(), d.content_type.as_deref()), (&b"{\"a\":2}"[..], e2.as_str(), Some("application/json")));
    assert_eq!(s.delete_doc("view", Some(&e1)).await.unwrap_err().kind(), ErrorKind::PreconditionFailed);
    assert!(s.delete_doc("view", Some(&e2)).await.unwrap());
    assert!(!s.delete_doc("view", None).await.unwrap());
    s.put_doc("free", &b"x"[..], "text/plain", Precondition::None).await.unwrap();
    s.put_doc("free", &b"y"[..], "text/plain", Precondition::None).await.unwrap();
    assert_eq!(s.put_doc("../x", &b"x"[..], "text/plain", Precondition::None).await.unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_doc_write_whose_answer_is_lost_is_resolved_by_reading_back() {
    let node = Node::memory().await;
    let proxy = Proxy::to(&node.url).await;
    let c = Client::builder(&proxy.url).backoff(Duration::from_millis(10)).build().unwrap();
    let s = c.store("s");
    s.create().await.unwrap();
    let e1 = s.put_doc("d", &b"one"[..], "text/plain", Precondition::Absent).await.unwrap();
    // The write lands, its answer is lost, the retry gets 412: ours.
    proxy.drop_answers(1);
    let e2 = s.put_doc("d", &b"two"[..], "text/plain", Precondition::Matches(e1.clone())).await.unwrap();
    assert_eq!(proxy.answers_dropped(), 1);
    assert_eq!(s.get_doc("d").await.unwrap().unwrap().etag, e2);
    // Someone else's write is still a 412.
    let e = s.put_doc("d", &b"three"[..], "text/plain", Precondition::Matches(e1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
}

#[tokio::test]
async fn tokens_are_sent_and_unreachable_nodes_are_retry_safe() {
    let node = Node::memory().await;
    let proxy = Proxy::to(&node.url).await;
    let c = Client::builder(&proxy.url).token("s3cret").build().unwrap();
    c.list_stores().await.unwrap();
    assert!(proxy.sent().to_ascii_lowercase().contains("authorization: bearer s3cret"), "{}", proxy.sent());
    let dead = Client::builder("http://127.0.0.1:1").retries(1).backoff(Duration::from_millis(1)).build().unwrap();
    let e = dead.list_stores().await.unwrap_err();
    assert_eq!((e.kind(), e.is_retry_safe()), (ErrorKind::Unavailable, true));
    assert!(Client::new("ftp://x").is_err());
    assert!(Client::new("not a url").is_err());
}

/// Usernames are unique across the store because each registration is
/// conditional on no registration of the name after what was read; a
/// retry whose first answer was lost gets that answer back.
/// A read that ended says where it would go on: how far a tag read looked
/// even when nothing matched, which is what an append condition's `after`
/// needs.
#[tokio::test]
async fn an_ended_read_says_where_it_would_go_on() {
    use cairn_client::{Condition, Query};
    let node = Node::memory().await;
    let s = node.client().store("s");
    s.create().await.unwrap();
    for i in 0..3 {
        s.append(&format!("other-{i}"), vec![ev("Registered", i).tag("username", "bob")], Expected::Any).await.unwrap();
    }
    let mut ann = s.read_with(0, None, Some(("username", "ann")));
    assert_eq!(ann.next_position(), None, "not before the end");
    assert!(ann.try_next().await.unwrap().is_none(), "no ann yet");
    assert_eq!(ann.next_position(), Some(3), "it looked at seqs 0..3");
    let taken = Query::any().tag("username", "ann");
    let after = ann.next_position().and_then(|n| n.checked_sub(1));
    s.append_if("user-ann", vec![ev("Registered", 9).tag("username", "ann")], Expected::NoStream, &Condition::none_after(taken.clone(), after)).await.unwrap();
    let e = s.append_if("user-ann2", vec![ev("Registered", 10).tag("username", "ann")], Expected::NoStream, &Condition::none_after(taken, after)).await.unwrap_err();
    assert_eq!(e.code(), Some("condition_failed"));

    let mut two = s.read_with(0, Some(2), None);
    while two.try_next().await.unwrap().is_some() {}
    assert_eq!(two.next_position(), Some(2), "a limited read goes on after its last event");
    let mut fwd = s.read_stream("other-1", StreamRead::forward());
    while fwd.try_next().await.unwrap().is_some() {}
    assert_eq!(fwd.next_position(), Some(1), "the next revision");
    let mut back = s.read_stream("other-1", StreamRead::backward());
    while back.try_next().await.unwrap().is_some() {}
    assert_eq!(back.next_position(), None, "nothing before revision 0");
}

#[tokio::test]
async fn conditional_appends_fail_on_a_matching_event_after_their_seq() {
    use cairn_client::{Condition, Query};
    let node = Node::memory().await;
    let s = node.client().store("s");
    s.create().await.unwrap();
    let taken = Query::any().of_type("Registered").tag("username", "ann");
    let seen = s.read_with(0, None, Some(("username", "ann"))).try_collect::<Vec<_>>().await.unwrap();
    let after = seen.last().map(|e| e.seq);
    let first = ev("Registered", 1).tag("username", "ann");
    let a = s.append_if("user-1", vec![first.clone()], Expected::NoStream, &Condition::none_after(taken.clone(), after)).await.unwrap();
    let again = s.append_if("user-1", vec![first], Expected::NoStream, &Condition::none_after(taken.clone(), after)).await.unwrap();
    assert_eq!((again.first_seq, again.deduplicated), (a.first_seq, true));
    let e = s.append_if("user-2", vec![ev("Registered", 2).tag("username", "ann")], Expected::Any, &Condition::none_after(taken.clone(), after)).await.unwrap_err();
    assert_eq!((e.kind(), e.code(), e.is_retry_safe()), (ErrorKind::Conflict, Some("condition_failed"), false));
    // Read again, decide again: after the registration, other names are free.
    let bob = Condition::none_after(Query::any().tag("username", "bob"), Some(a.last_seq)).or(Query::any().of_type("Banned"));
    let m = s.append_many_if(vec![ev("Registered", 3).stream("user-3").tag("username", "bob")], [], &bob).await.unwrap();
    assert_eq!(m.first_seq, a.last_seq + 1);
    let e = s.append_many_if(vec![ev("Registered", 4).stream("user-4").tag("username", "bob")], [], &bob).await.unwrap_err();
    assert_eq!(e.code(), Some("condition_failed"));
    assert_eq!(s.info().await.unwrap().next_seq, 2);
}

#[tokio::test]
async fn retention_truncates_and_reads_before_it_say_where_to_start() {
    let node = Node::memory().await;
    let s = node.client().store("r");
    s.create().await.unwrap();
    for i in 0..4 {
        s.append("a", vec![ev("T", i)], Expected::Any).await.unwrap();
        s.append("b", vec![ev("T", i)], Expected::Any).await.unwrap();
    }
    let r = s.retention().await.unwrap();
    assert_eq!((r.truncate_before, r.max_age_ms, r.first_seq, r.next_seq), (None, None, 0, 8));
    let r = s.set_retention(Some(3), None).await.unwrap();
    assert_eq!((r.truncate_before, r.first_seq), (Some(3), 3));
    assert_eq!(s.info().await.unwrap().first_seq, 3);

    let e = s.read_with(0, None, None).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!((e.kind(), e.status(), e.first_seq(), e.is_retry_safe()), (ErrorKind::Truncated, Some(410), Some(3), false));
    // Seq 3 is b's revision 1; a keeps revisions 2.. (seq 4 on).
    let e = s.read_stream("a", StreamRead::forward()).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!((e.kind(), e.first_revision()), (ErrorKind::Truncated, Some(2)));
    let kept = s.read_stream("a", StreamRead::forward().from(2)).try_collect::<Vec<_>>().await.unwrap();
    assert_eq!(kept.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2, 3]);
    let all = s.read_with(3, None, None).try_collect::<Vec<_>>().await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (3..8).collect::<Vec<_>>());

    let e = s.set_retention(Some(99), None).await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::InvalidInput, Some("invalid_retention")));
}
