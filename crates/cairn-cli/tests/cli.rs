//! The `cairn` subcommands, run as processes against a real `cairn serve`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::Server;

fn spawn(dir: &std::path::Path) -> Server {
    Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.as_os_str()])
}

fn cairn(s: &Server, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.args(args).env("CAIRN_URL", &s.base).env_remove("CAIRN_TOKEN");
    c
}

fn run(s: &Server, args: &[&str]) -> Output {
    cairn(s, args).stdin(Stdio::null()).output().unwrap()
}

fn with_stdin(s: &Server, args: &[&str], input: &str) -> Output {
    let mut child = cairn(s, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Exit code 1 and one line on stderr containing `want`.
fn fails(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit 1 expected; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: ") && err.contains(want), "{want:?} in {err:?}");
}

fn lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn stores_append_read_and_docs() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    assert_eq!(ok(&run(&s, &["stores", "create", "shop"])).trim(), "created store shop");
    assert_eq!(ok(&run(&s, &["stores", "create", "shop"])).trim(), "already had store shop");
    assert_eq!(ok(&run(&s, &["stores", "list"])).trim(), "shop");
    fails(&run(&s, &["stores", "create", "Bad_Name"]), "invalid_store_name");

    let a: Value = serde_json::from_str(&ok(&run(&s, &["append", "shop", "order-1", "-t", "Placed", "-d", r#"{"total":12}"#, "-d", "2", "--tag", "region=eu", "--expected", "no_stream"]))).unwrap();
    assert_eq!((a["first_seq"].as_u64(), a["last_revision"].as_u64(), a["deduplicated"].as_bool()), (Some(0), Some(1), Some(false)));
    fails(&run(&s, &["append", "shop", "order-1", "-t", "X", "-d", "1", "--expected", "no_stream"]), "wrong_expected_revision");
    fails(&run(&s, &["append", "shop", "order-1", "-t", "X", "-d", "{oops"]), "--data");
    // NDJSON on stdin, each event naming its stream.
    let nd = "{\"stream\":\"a\",\"type\":\"T\",\"data\":1}\n\n{\"stream\":\"b\",\"type\":\"T\",\"data_b64\":\"AAE=\",\"tags\":{\"region\":\"us\"}}\n";
    let m: Value = serde_json::from_str(&ok(&with_stdin(&s, &["append", "shop"], nd))).unwrap();
    assert_eq!((m["first_seq"].as_u64(), m["last_seq"].as_u64()), (Some(2), Some(3)));
    fails(&with_stdin(&s, &["append", "shop"], "{\"type\":\"T\"}\n"), "names no stream");
    fails(&with_stdin(&s, &["append", "shop"], "{\"stream\":\"a\",\"type\":\"T\",\"bogus\":1}\n"), "line 1");
    let info: Value = serde_json::from_str(&ok(&run(&s, &["stores", "info", "shop"]))).unwrap();
    assert_eq!(info["next_seq"], 4, "failed appends changed nothing");

    let all = lines(&ok(&run(&s, &["read", "shop"])));
    assert_eq!(all.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(all[0]["data"], json!({"total": 12}));
    assert_eq!(all[3]["data_b64"], "AAE=");
    let back = lines(&ok(&run(&s, &["read", "shop", "order-1", "--backward", "--limit", "1"])));
    assert_eq!((back.len(), back[0]["revision"].as_u64()), (1, Some(1)));
    let eu = lines(&ok(&run(&s, &["read", "shop", "--tag", "region:eu"])));
    assert_eq!(eu.len(), 2);
    let table = ok(&run(&s, &["read", "shop", "--from", "2", "--format", "table"]));
    assert!(table.starts_with("     SEQ  STREAM"), "{table}");
    assert_eq!(table.lines().count(), 3, "a header and two events: {table}");
    assert!(table.contains("<2 bytes>") && table.contains("#region:us"), "{table}");
    fails(&run(&s, &["read", "shop", "--backward"]), "streams");
    fails(&run(&s, &["read", "shop", "--from", "99"]), "position_beyond_end");
    fails(&run(&s, &["read", "nope"]), "does not exist");

    let etag = ok(&run(&s, &["doc", "put", "shop", "view", "--data", r#"{"n":1}"#, "--if-absent"])).trim().to_string();
    fails(&run(&s, &["doc", "put", "shop", "view", "--data", "{}", "--if-absent"]), "precondition_failed");
    let got = run(&s, &["doc", "get", "shop", "view"]);
    assert_eq!(ok(&got), r#"{"n":1}"#);
    assert!(String::from_utf8_lossy(&got.stderr).contains(&etag));
    let etag2 = ok(&with_stdin(&s, &["doc", "put", "shop", "view", "--if-match", &etag], r#"{"n":2}"#)).trim().to_string();
    fails(&run(&s, &["doc", "put", "shop", "view", "--data", "{}", "--if-match", &etag]), "precondition_failed");
    fails(&run(&s, &["doc", "delete", "shop", "view", "--if-match", &etag]), "precondition_failed");
    ok(&run(&s, &["doc", "delete", "shop", "view", "--if-match", &etag2]));
    fails(&run(&s, &["doc", "get", "shop", "view"]), "no doc");

    fails(&run(&s, &["stores", "delete", "shop"]), "--yes");
    ok(&run(&s, &["stores", "delete", "shop", "--yes"]));
    assert_eq!(ok(&run(&s, &["stores", "list"])).trim(), "");
}

#[test]
fn usage_errors_exit_2_and_unreachable_nodes_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    for args in [&["read"][..], &["append", "s", "x", "--expected", "bogus"], &["stores", "frobnicate"], &["read", "s", "--limit", "x"]] {
        let o = run(&s, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(run(&s, &["health"]).status.success());
    assert!(run(&s, &["health", "--ready"]).status.success());
    for cmd in ["stores", "append", "read", "doc", "import", "export", "inspect", "bench", "health"] {
        let help = ok(&run(&s, &[cmd, "--help"]));
        assert!(help.contains("Examples:"), "{cmd} --help has examples");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["stores", "list", "--url", "http://127.0.0.1:1"]).output().unwrap();
    fails(&o, "cannot connect");
    let o = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["health", "--url", "http://127.0.0.1:1"]).output().unwrap();
    fails(&o, "not healthy");
    // A closed pipe is not an error.
    ok(&run(&s, &["stores", "create", "p"]));
    let nd: String = (0..20_000).map(|i| format!("{{\"stream\":\"s\",\"type\":\"T\",\"data\":{i}}}\n")).collect();
    ok(&with_stdin(&s, &["append", "p"], &nd));
    let mut child = cairn(&s, &["read", "p"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    drop(out);
    assert!(child.wait().unwrap().success(), "exits 0 when its reader goes away");
}

#[test]
fn read_follow_tails_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "t"]));
    ok(&run(&s, &["append", "t", "x", "-t", "Old", "-d", "0"]));
    let mut child = cairn(&s, &["read", "t", "--follow"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["type"], "Old");
    for i in 1..=3 {
        ok(&run(&s, &["append", "t", "y", "-t", "New", "-d", &i.to_string()]));
        line.clear();
        out.read_line(&mut line).unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        assert_eq!((e["seq"].as_u64(), e["type"].as_str()), (Some(i), Some("New")));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn export_then_import_copies_a_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "src"]));
    let nd: String = (0..2500).map(|i| format!("{{\"stream\":\"s-{}\",\"type\":\"T{}\",\"data\":{{\"i\":{i}}},\"tags\":{{\"k\":\"{}\"}}}}\n", i % 7, i % 3, i % 2)).collect();
    ok(&with_stdin(&s, &["append", "src"], &nd));
    let file = dir.path().join("src.ndjson");
    let e = run(&s, &["export", "src", "--out", file.to_str().unwrap()]);
    ok(&e);
    assert!(String::from_utf8_lossy(&e.stderr).contains("exported 2500 events"));
    let i = run(&s, &["import", "dst", file.to_str().unwrap(), "--create", "--batch", "1000"]);
    ok(&i);
    assert!(String::from_utf8_lossy(&i.stderr).contains("imported 2500 events"), "{}", String::from_utf8_lossy(&i.stderr));
    let strip = |v: Vec<Value>| v.into_iter().map(|mut e| {
        e.as_object_mut().unwrap().remove("revision");
        e
    }).collect::<Vec<_>>();
    let src = strip(lines(&ok(&run(&s, &["read", "src"]))));
    let dst = strip(lines(&ok(&run(&s, &["read", "dst"]))));
    assert_eq!(src, dst, "same seqs, streams, types, data, tags, ids and timestamps");
    // Again, from stdin: the ids make it a no-op.
    let again = with_stdin(&s, &["import", "dst", "--batch", "1000"], &std::fs::read_to_string(&file).unwrap());
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("2500 were already there"), "{}", String::from_utf8_lossy(&again.stderr));
    let info: Value = serde_json::from_str(&ok(&run(&s, &["stores", "info", "dst"]))).unwrap();
    assert_eq!(info["next_seq"], 2500);
    let part = lines(&ok(&run(&s, &["export", "src", "--from", "2490"])));
    assert_eq!(part.len(), 10);
    fails(&with_stdin(&s, &["import", "dst"], "not json\n"), "line 1");
}

/// The esdb seed's example through the command line: a store of customers'
/// activity, archived to a file, then read with no node running.
#[test]
fn archive_build_read_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "activity"]));
    let seed: [(&str, i64, &str, &str); 14] = [
        ("1", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
        ("1", 1403534920, "click", r#"{"button_text":"Checkout"}"#),
        ("1", 1403534921, "page", r#"{"url":"http://mysite.com/checkout"}"#),
        ("1", 1403534923, "purchase", r#"{"total":"42.99"}"#),
        ("1", 1403534923, "page", r#"{"url":"http://mysite.com/thankyou"}"#),
        ("2", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
        ("2", 1403534920, "click", r#"{"button_text":"About"}"#),
        ("2", 1403534921, "page", r#"{"url":"http://mysite.com/about"}"#),
        ("3", 1403534919, "page", r#"{"url":"http://mysite.com/"}"#),
        ("3", 1403534920, "click", r#"{"button_text":"About"}"#),
        ("3", 1403534921, "page", r#"{"url":"http://mysite.com/about"}"#),
        ("3", 1403534922, "click", r#"{"button_text":"Checkout"}"#),
        ("3", 1403534923, "purchase", r#"{"total":"126.99"}"#),
        ("3", 1403534923, "page", r#"{"url":"http://mysite.com/thankyou"}"#),
    ];
    let nd: String = seed
        .iter()
        .map(|(c, ts, ty, d)| format!("{{\"stream\":\"customer-{c}\",\"type\":\"{ty}\",\"timestamp\":{},\"tags\":{{\"customer\":\"{c}\"}},\"data\":{d}}}\n", ts * 1000))
        .collect();
    ok(&with_stdin(&s, &["append", "activity"], &nd));
    let file = dir.path().join("activity.arc");
    let f = file.to_str().unwrap();
    let b = run(&s, &["archive", "build", "activity", "--out", f, "--index", "type", "--index", "tag:customer"]);
    ok(&b);
    assert!(String::from_utf8_lossy(&b.stderr).contains("archived 14 events"), "{}", String::from_utf8_lossy(&b.stderr));
    fails(&run(&s, &["archive", "build", "activity", "--out", f, "--max-events", "10"]), "archive them in parts");
    fails(&run(&s, &["archive", "build", "activity", "--out", f, "--from", "9", "--to", "3"]), "before --from");
    let by_space = dir.path().join("by-customer.arc");
    ok(&run(&s, &["archive", "build", "activity", "--out", by_space.to_str().unwrap(), "--space", "tag:customer", "--grouping", "type", "--from", "5"]));
    // The node is gone: everything below reads the files alone.
    s.child.kill().unwrap();
    s.child.wait().unwrap();

    let data = |out: &str| lines(out).iter().map(|e| e["data"].to_string()).collect::<Vec<_>>();
    let one = lines(&ok(&run(&s, &["archive", "read", f, "--space", "customer-1", "--backwards"])));
    assert_eq!(one.len(), 5);
    assert_eq!((one[0]["seq"].as_u64(), one[0]["revision"].as_u64(), one[0]["type"].as_str()), (Some(4), Some(4), Some("page")));
    assert_eq!(one[0]["tags"], json!({"customer": "1"}));
    assert_eq!(one[4]["timestamp"], 1403534919000i64);
    assert_eq!(data(&ok(&run(&s, &["archive", "read", f, "--space", "customer-1", "--index", "type=purchase"]))), [r#"{"total":"42.99"}"#]);
    assert_eq!(
        data(&ok(&run(&s, &["archive", "read", f, "--space", "customer-3", "--index", "type=click", "--backwards"]))),
        [r#"{"button_text":"Checkout"}"#, r#"{"button_text":"About"}"#]
    );
    assert_eq!(data(&ok(&run(&s, &["archive", "read", f, "--index", "type=purchase"]))), [r#"{"total":"42.99"}"#, r#"{"total":"126.99"}"#]);
    assert_eq!(lines(&ok(&run(&s, &["archive", "read", f, "--index", "tag:customer=2"]))).len(), 3);
    assert_eq!(lines(&ok(&run(&s, &["archive", "read", f, "--limit", "3"]))).len(), 3);
    assert_eq!(lines(&ok(&run(&s, &["archive", "read", f]))).len(), 14);
    // Spaces by the customer tag, grouped by type, from seq 5 on.
    let clicks = lines(&ok(&run(&s, &["archive", "read", by_space.to_str().unwrap(), "--space", "3", "--group", "click"])));
    assert_eq!(clicks.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [9, 11]);
    assert!(lines(&ok(&run(&s, &["archive", "read", by_space.to_str().unwrap(), "--space", "1"]))).is_empty(), "customer 1 is before seq 5");

    let info = ok(&run(&s, &["inspect", f, "--verify"]));
    assert!(info.contains("archive ") && info.contains("events          14") && info.contains("spaces          3 by stream"), "{info}");
    assert!(info.contains("indexes         type, tag:customer") && info.contains("verified:"), "{info}");

    // Clear errors, and exit 2 for usage.
    fails(&run(&s, &["archive", "read", f, "--index", "tag:region=eu"]), "no index on tag:region");
    fails(&run(&s, &["archive", "read", f, "--index", "purchase"]), "KEY=VALUE");
    fails(&run(&s, &["archive", "read", f, "--space", "customer-1", "--group", "page"]), "no grouping");
    fails(&run(&s, &["archive", "read", dir.path().join("nope.arc").to_str().unwrap()]), "nope.arc");
    assert_eq!(run(&s, &["archive", "build", "activity", "--out", f, "--space", "colour"]).status.code(), Some(2));
    let mut cut = std::fs::read(&file).unwrap();
    cut.truncate(cut.len() - 3);
    std::fs::write(&file, &cut).unwrap();
    fails(&run(&s, &["archive", "read", f]), "corrupt");
}

/// Every file under `dir` whose name ends with `ext`.
fn files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.to_string_lossy().ends_with(ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn inspect_reads_segments_indexes_and_manifests_and_finds_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "i"]));
    let nd: String = (0..3000).map(|i| format!("{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{{\"i\":{i},\"pad\":\"{}\"}},\"tags\":{{\"k\":\"v{}\"}}}}\n", i % 10, "x".repeat(i % 50), i % 3)).collect();
    ok(&with_stdin(&s, &["append", "i"], &nd));
    // Enough small commits for a roll-up, which writes an index object.
    let http = common::http();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..300 {
            http.post(s.url("/v1/stores/i/streams/one/events")).body(format!("[{{\"type\":\"T\",\"data\":{i}}}]")).send().await.unwrap().error_for_status().unwrap();
        }
    });
    let seg = files(dir.path(), ".seg").into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).expect("a segment");
    let out = ok(&run(&s, &["inspect", seg.to_str().unwrap(), "--verify"]));
    assert!(out.starts_with("segment ") && out.contains("events") && out.contains("streams") && out.contains("verified:"), "{out}");
    let manifest = files(dir.path(), ".json").into_iter().filter(|p| p.to_string_lossy().contains("/manifest/")).max().expect("a manifest");
    let out = ok(&run(&s, &["inspect", manifest.to_str().unwrap()]));
    assert!(out.starts_with("manifest ") && out.contains("next seq"), "{out}");
    // Through the storage URL, as for S3 or Azure.
    let key = manifest.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned();
    let out = ok(&run(&s, &["inspect", "--storage", dir.path().to_str().unwrap(), &key]));
    assert!(out.contains("next seq"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let idx = loop {
        if let Some(p) = files(dir.path(), ".idx").pop() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "the roll-up wrote an index object");
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = ok(&run(&s, &["inspect", idx.to_str().unwrap(), "--verify"]));
    assert!(out.starts_with("index object ") && out.contains("verified:"), "{out}");
    // The store's size counts what the index object covers too.
    let info: Value = serde_json::from_str(&ok(&run(&s, &["stores", "info", "i"]))).unwrap();
    let floor = std::fs::metadata(&idx).unwrap().len() + std::fs::metadata(&seg).unwrap().len();
    assert!(info["bytes"].as_u64().unwrap() >= floor, "{info} vs {floor}");
    // A flipped byte in a block: the footer is fine, --verify is not.
    let copy = dir.path().join("bad.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    let o = run(&s, &["inspect", copy.to_str().unwrap(), "--verify"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("BAD block 0") && err.contains("failed verification"), "{err}");
    // Truncated: the trailer is gone.
    std::fs::write(&copy, &bytes[..bytes.len() / 2]).unwrap();
    fails(&run(&s, &["inspect", copy.to_str().unwrap()]), "bad.seg");
    fails(&run(&s, &["inspect", dir.path().join("missing").to_str().unwrap()]), "reading");
}

#[test]
fn bench_prints_throughput_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    let out = ok(&run(&s, &["bench", "append", "--clients", "4", "--events", "10", "--seconds", "1"]));
    assert!(out.contains("events") && out.contains("p99"), "{out}");
    let n: u64 = out.lines().find_map(|l| l.trim().strip_prefix("events")).and_then(|l| l.trim().split(':').next()).unwrap().trim().parse().unwrap();
    assert!(n >= 10, "{out}");
    let info: Value = serde_json::from_str(&ok(&run(&s, &["stores", "info", "bench"]))).unwrap();
    assert_eq!(info["next_seq"].as_u64(), Some(n), "what it counted is what was stored");
    let out = ok(&run(&s, &["bench", "read", "--clients", "1", "--seconds", "1"]));
    assert!(out.contains("read:") && out.contains("p50"), "{out}");
}

#[test]
fn stores_retention_shows_sets_and_guards_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "r"]));
    let nd: String = (0..10).map(|i| format!("{{\"stream\":\"s\",\"type\":\"T\",\"data\":{i}}}\n")).collect();
    ok(&with_stdin(&s, &["append", "r"], &nd));
    let show = |args: &[&str]| -> Value { serde_json::from_str(&ok(&run(&s, args))).unwrap() };
    assert_eq!(show(&["stores", "retention", "r"]), json!({"truncate_before": null, "max_age_ms": null, "first_seq": 0, "next_seq": 10}));
    // Truncating needs --yes; nothing changes without it.
    fails(&run(&s, &["stores", "retention", "r", "--truncate-before", "4"]), "add --yes");
    assert_eq!(show(&["stores", "retention", "r"])["first_seq"], 0);
    assert_eq!(show(&["stores", "retention", "r", "--truncate-before", "4", "--yes"])["first_seq"], 4);
    // A flag not given keeps its value.
    let r = show(&["stores", "retention", "r", "--max-age", "30d"]);
    assert_eq!((&r["truncate_before"], &r["max_age_ms"]), (&json!(4), &json!(2_592_000_000u64)));
    assert_eq!(show(&["stores", "retention", "r", "--no-max-age"])["max_age_ms"], Value::Null);
    fails(&run(&s, &["stores", "retention", "r", "--truncate-before", "11", "--yes"]), "invalid_retention");
    assert_eq!(run(&s, &["stores", "retention", "r", "--max-age", "soon"]).status.code(), Some(2));
    // Reads before the point fail clearly; export starts where the store does.
    fails(&run(&s, &["read", "r", "--from", "0"]), "truncated");
    let out = run(&s, &["export", "r"]);
    let evs = lines(&ok(&out));
    assert_eq!(evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), (4..10).collect::<Vec<_>>());
}

#[test]
fn stores_tiering_shows_and_sets_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path());
    ok(&run(&s, &["stores", "create", "t"]));
    let show = |args: &[&str]| -> Value { serde_json::from_str(&ok(&run(&s, args))).unwrap() };
    assert_eq!(show(&["stores", "tiering", "t"]), json!({"seal_before": null, "seal_after_ms": null}));
    assert_eq!(show(&["stores", "tiering", "t", "--seal-after", "7d"]), json!({"seal_before": null, "seal_after_ms": 604_800_000u64}));
    assert_eq!(show(&["stores", "tiering", "t", "--seal-before", "100"]), json!({"seal_before": 100, "seal_after_ms": 604_800_000u64}));
    assert_eq!(show(&["stores", "tiering", "t", "--off"]), json!({"seal_before": null, "seal_after_ms": null}));
    assert_eq!(run(&s, &["stores", "tiering", "t", "--off", "--seal-before", "1"]).status.code(), Some(2));
    fails(&run(&s, &["stores", "tiering", "nope"]), "store_not_found");
    assert_eq!(show(&["stores", "info", "t"])["archives"], 0);
}
