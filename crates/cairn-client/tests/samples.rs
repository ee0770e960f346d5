//! The samples in `examples/`, run as the processes a user would run,
//! against a real node. Build them first: `cargo build --examples`
//! (`scripts/test` does).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_client::{EventData, Expected, Store};
use rand::RngExt;
use serde_json::{json, Value};
use support::node::Node;

/// `target/<profile>/examples/<name>`, beside this test's `deps/`.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(|d| d.parent()).map(|d| d.join("examples")).expect("target dir");
    let path: PathBuf = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --examples` first (scripts/test does)", path.display());
    Command::new(path)
}

async fn fill(store: &Store, n: usize) {
    let types = ["Placed", "Paid", "Shipped", "Cancelled"];
    let batch: Vec<_> = {
        let mut rng = rand::rng();
        (0..n)
            .map(|i| {
                let t = types[rng.random_range(0..types.len())];
                let pad = "x".repeat(rng.random_range(0..40));
                EventData::json(t, &json!({"i": i, "pad": pad})).unwrap().stream(format!("order-{}", rng.random_range(0..50)))
            })
            .collect()
    };
    store.append_many(batch, []).await.unwrap();
}

/// What the continuous sample computes, from scratch.
async fn stats_from_scratch(store: &Store) -> Value {
    let mut types: BTreeMap<String, Value> = BTreeMap::new();
    for e in store.read(0).collect_all().await.unwrap() {
        let s = types.entry(e.event_type.clone()).or_insert_with(|| json!({"events": 0, "bytes": 0, "first_seq": e.seq, "last_seq": e.seq}));
        s["events"] = json!(s["events"].as_u64().unwrap() + 1);
        s["bytes"] = json!(s["bytes"].as_u64().unwrap() + e.data.len() as u64);
        s["last_seq"] = json!(e.seq);
    }
    json!({ "types": types })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_continuous_projection_survives_kill_9_and_counts_everything_once() {
    let node = Node::memory().await;
    let store = node.client().store("shop");
    store.create().await.unwrap();
    for _ in 0..10 {
        fill(&store, 2000).await;
    }
    let mut kills = 0;
    for round in 0..8 {
        let mut child = example("continuous").args(["--store", "shop", "--batch", "300", "--url", &node.url]).stderr(Stdio::null()).spawn().unwrap();
        let wait = Duration::from_millis(rand::rng().random_range(30..400));
        tokio::time::sleep(wait).await;
        fill(&store, 500).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        let doc = store.get_doc("stats-by-type").await.unwrap();
        if let Some(d) = doc {
            let v: Value = serde_json::from_slice(&d.body).unwrap();
            let cp = v["checkpoint"].as_u64().unwrap();
            let counted: u64 = v["view"]["types"].as_object().unwrap().values().map(|t| t["events"].as_u64().unwrap()).sum();
            assert_eq!(counted, cp + 1, "round {round}: the view counts each event up to its checkpoint once");
        }
    }
    assert!(kills >= 6, "the projection was killed while running ({kills} of 8)");
    let out = tokio::task::spawn_blocking({
        let url = node.url.clone();
        move || example("continuous").args(["--store", "shop", "--once", "--url", &url]).stderr(Stdio::null()).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, stats_from_scratch(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dump_writes_every_event_as_the_api_does() {
    let node = Node::memory().await;
    let store = node.client().store("d");
    store.create().await.unwrap();
    fill(&store, 3000).await;
    store.append("bin", vec![EventData::binary("Blob", [0u8, 1, 2, 255]).tag("k", "v")], Expected::NoStream).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.ndjson");
    let out = tokio::task::spawn_blocking({
        let (url, file) = (node.url.clone(), file.clone());
        move || example("dump").args(["--store", "d", "--url", &url, "--out"]).arg(&file).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dumped 3001 events"));
    let dumped: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The node's own NDJSON, minus its last line.
    let text = reqwest::get(format!("{}/v1/stores/d/events", node.url)).await.unwrap().text().await.unwrap();
    let mut served: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(served.pop(), Some(json!({"next": 3001})));
    assert_eq!(dumped, served);
    let from = tokio::task::spawn_blocking({
        let url = node.url.clone();
        move || example("dump").args(["--store", "d", "--from", "2990", "--url", &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&from.stdout).lines().count(), 11, "from seq 2990 to the end, on stdout");
    let missing = tokio::task::spawn_blocking({
        let url = node.url.clone();
        move || example("dump").args(["--store", "nope", "--url", &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_clients_see_each_others_messages_live() {
    let node = Node::memory().await;
    let spawn = |name: &str| {
        example("chat").args(["lobby", "--name", name, "--url", &node.url]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut alice = spawn("alice");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = spawn("bob");
    let bob_out = BufReader::new(bob.stdout.take().unwrap());
    let alice_out = BufReader::new(alice.stdout.take().unwrap());
    let mut alice_in = alice.stdin.take().unwrap();
    let mut bob_in = bob.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    writeln!(alice_in, "hello bob").unwrap();
    alice_in.flush().unwrap();
    let bob_saw = tokio::task::spawn_blocking(move || {
        let mut lines = bob_out.lines();
        lines.next().map(|l| l.unwrap())
    });
    let line = tokio::time::timeout(Duration::from_secs(10), bob_saw).await.expect("bob saw it in time").unwrap();
    assert_eq!(line.as_deref(), Some("[0] alice: hello bob"));
    writeln!(bob_in, "hi alice").unwrap();
    bob_in.flush().unwrap();
    let alice_saw = tokio::task::spawn_blocking(move || alice_out.lines().take(2).map(|l| l.unwrap()).collect::<Vec<_>>());
    let lines = tokio::time::timeout(Duration::from_secs(10), alice_saw).await.expect("alice saw it in time").unwrap();
    assert_eq!(lines, vec!["[0] alice: hello bob", "[1] bob: hi alice"]);
    let _ = alice.kill();
    let _ = bob.kill();
    let _ = alice.wait();
    let _ = bob.wait();
}
