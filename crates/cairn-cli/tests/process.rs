//! Real `cairn serve` processes: start on port 0, kill -9 under append
//! load and restart, SIGTERM under load.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{http, Server};

fn spawn(dir: &std::path::Path) -> Server {
    Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.as_os_str()])
}

/// Appends batches with ids from `clients` tasks until stopped; returns what
/// was acknowledged: id -> seq.
async fn load(base: String, clients: usize, stop: Arc<Mutex<bool>>) -> HashMap<String, u64> {
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (base, stop, acked) = (base.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = http();
            for b in 0.. {
                if *stop.lock().unwrap() {
                    return;
                }
                let ids: Vec<String> = (0..3).map(|i| format!("{:08x}-0000-4000-8000-{:012x}", c, b * 3 + i)).collect();
                let events: Vec<Value> = ids.iter().map(|id| json!({"type": "T", "id": id, "data": {"c": c}})).collect();
                let r = http.post(format!("{base}/v1/stores/k/streams/s{c}/events")).json(&events).send().await;
                match r {
                    Ok(resp) if resp.status() == 200 => {
                        let v: Value = resp.json().await.unwrap();
                        let first = v["first_seq"].as_u64().unwrap();
                        let mut a = acked.lock().unwrap();
                        for (i, id) in ids.iter().enumerate() {
                            a.insert(id.clone(), first + i as u64);
                        }
                    }
                    // The server died under us or answered 5xx: not acknowledged.
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

async fn all_events(base: &str) -> Vec<Value> {
    common::all_events(&http(), base, "k").await
}

fn check(events: &[Value], acked: &HashMap<String, u64>) {
    let mut seen = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), i as u64, "seqs have no gaps");
        let id = e["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id, i as u64).is_none(), "an event stored twice");
    }
    for (id, seq) in acked {
        assert_eq!(seen.get(id), Some(seq), "acknowledged event {id} at seq {seq}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = HashMap::new();
    for round in 0..3 {
        let mut s = spawn(dir.path());
        if round == 0 {
            let r = http().put(format!("{}/v1/stores/k", s.base)).send().await.unwrap();
            assert_eq!(r.status(), 201);
        }
        let stop = Arc::new(Mutex::new(false));
        let loader = tokio::spawn(load(s.base.clone(), 8, stop.clone()));
        tokio::time::sleep(Duration::from_millis(700)).await;
        // SIGKILL: no shutdown, no flush.
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let acked = loader.await.unwrap();
        assert!(!acked.is_empty(), "round {round}: the load ran");
        total.extend(acked);
    }
    let s = spawn(dir.path());
    let events = all_events(&s.base).await;
    eprintln!("kill -9: {} acknowledged over 3 rounds, {} stored", total.len(), events.len());
    check(&events, &total);
    assert!(events.len() >= total.len());
    let mut s = s;
    s.child.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spawn(dir.path());
    http().put(format!("{}/v1/stores/k", s.base)).send().await.unwrap();
    let stop = Arc::new(Mutex::new(false));
    let loader = tokio::spawn(load(s.base.clone(), 8, stop.clone()));
    // A live tail and a long-poll must not hold the shutdown up.
    let tail = http().get(format!("{}/v1/stores/k/events", s.base)).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(tail.status(), 200);
    let poll = tokio::spawn(http().get(format!("{}/v1/stores/k/events?from=999999999&wait=30", s.base)).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(10) {
            s.child.kill().unwrap();
            panic!("SIGTERM did not stop the node within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t.elapsed());
    drop(tail);
    let _ = poll.await;
    let acked = loader.await.unwrap();
    let s2 = spawn(dir.path());
    let events = all_events(&s2.base).await;
    eprintln!("SIGTERM: {} acknowledged, {} stored", acked.len(), events.len());
    check(&events, &acked);
    // Nothing was half-done: every stored event was acknowledged (a client
    // stops at its first failure, which SIGTERM causes only between requests).
    assert!(events.len() >= acked.len());
    let mut s2 = s2;
    s2.child.kill().unwrap();
}

#[test]
fn serve_help_documents_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--storage", "--listen", "--linger-ms", "--max-batch-bytes", "--block-cache-bytes", "--meta-cache-bytes", "--body-limit", "--max-event-bytes", "--log-format", "CAIRN_STORAGE", "CAIRN_LISTEN",
        "--storage-endpoint", "--storage-region", "--storage-allow-http", "--s3-virtual-hosted-style", "--azure-account", "--azure-emulator",
        "--storage-option", "--poll-interval-ms", "CAIRN_STORAGE_ENDPOINT", "AWS_", "AZURE"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_storage_is_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["--storage", "ftp://nowhere"], "unknown scheme"),
        (&["--storage", "s3://"], "no bucket name"),
        (&["--storage", "s3://b/../up"], "bad prefix"),
        (&["--storage", "s3://b", "--storage-option", "nonsense"], "not KEY=VALUE"),
        (&["--storage", "s3://b", "--storage-option", "aws_no_such_key=1"], "aws_no_such_key"),
        // Nothing listens on port 9 of loopback: refused at start-up.
        (&["--storage", "s3://b", "--storage-endpoint", "http://127.0.0.1:9", "--storage-allow-http", "--storage-retries", "0"], "create-if-absent"),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(*args)
            .env_remove("AZURE_STORAGE_ACCOUNT_NAME")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Without the `aws-sdk` feature a profile cannot be honoured: say so.
#[cfg(not(feature = "aws-sdk"))]
#[test]
fn aws_profile_needs_the_sdk_feature() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["serve", "--listen", "127.0.0.1:0", "--storage", "s3://b", "--aws-profile", "dev"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aws-sdk") && err.contains("export-credentials"), "{err}");
}

/// With the `aws-sdk` feature, the keys of a named profile in an AWS config
/// file sign the requests (none in the environment); a profile with wrong
/// keys is refused at start-up.
#[cfg(feature = "aws-sdk")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_profile_signs_s3_requests() {
    use cairn_engine::testing::Backend;
    if !Backend::S3.available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    std::fs::write(&config, format!("[profile good]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\nregion = us-east-1\n[profile bad]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n")).unwrap();
    let storage = Backend::S3.storage();
    let run = |profile: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--aws-profile", profile])
            .args(&storage.args)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("CAIRN_LOG", "warn");
        c
    };
    let out = run("bad").output().unwrap();
    assert!(!out.status.success(), "started with wrong keys");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("create-if-absent"), "{err}");
    let mut child = run("good").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let base = format!("http://{}", line.trim().strip_prefix("listening on ").unwrap());
    let http = http();
    assert_eq!(http.put(format!("{base}/v1/stores/p")).send().await.unwrap().status(), 201);
    let r = http.post(format!("{base}/v1/stores/p/streams/s/events")).json(&json!([{"type": "T", "data": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let events = common::all_events(&http, &base, "p").await;
    assert_eq!(events.len(), 1);
    let _ = child.kill();
    let _ = child.wait();
}

fn sha256_hex(t: &str) -> String {
    // The same digest the node uses; computed by the `sha256sum` everyone has.
    let mut child = Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), t.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn tokens_guard_the_api_reload_on_sighup_and_a_bad_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let write = |secret: &str| {
        let t = json!({"tokens": [{"name": "ops", "sha256": sha256_hex(secret), "stores": ["*"], "rights": ["read", "write", "admin"]}]});
        std::fs::write(&file, t.to_string()).unwrap();
    };
    write("first-secret");
    let data = dir.path().join("data");
    let s = Server::spawn(&[std::ffi::OsStr::new("--storage"), data.as_os_str(), std::ffi::OsStr::new("--tokens"), file.as_os_str()]);
    let cli = |token: &str, args: &[&str]| Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).env("CAIRN_URL", &s.base).env("CAIRN_TOKEN", token).output().unwrap();
    let denied = cli("", &["stores", "list"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("unauthorized"));
    assert!(cli("first-secret", &["stores", "create", "x"]).status.success());
    // Rotate the token and send SIGHUP: the old one stops working.
    write("second-secret");
    assert!(Command::new("kill").args(["-HUP", &s.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli("first-secret", &["stores", "list"]).status.success() {
        assert!(Instant::now() < deadline, "the old token still works after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = cli("second-secret", &["stores", "list"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "x");
    drop(s);
    // A bad tokens file: refused at start-up, in one line.
    std::fs::write(&file, "{\"tokens\": [{\"name\": \"a\", \"sha256\": \"plaintext-token\", \"stores\": [\"*\"], \"rights\": [\"read\"]}]}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["serve", "--listen", "127.0.0.1:0", "--storage"]).arg(&data).arg("--tokens").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64 hex digits") && err.trim_end().lines().count() == 1, "{err}");
}

#[test]
fn slow_clients_are_cut_off_and_others_served() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.path().as_os_str(), std::ffi::OsStr::new("--header-timeout-secs"), std::ffi::OsStr::new("1")]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Slowloris: headers that never end.
    let mut slow: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /v1/stores HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    // Others are served meanwhile.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async { http().get(s.url("/v1/stores")).send().await.unwrap().status() });
    assert_eq!(status, 200);
    let started = Instant::now();
    for c in &mut slow {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        // The node closes the connection (after a 408 or without a word).
        let _ = c.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after the 1 s header timeout, took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_a_clear_4xx_and_change_nothing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(&[std::ffi::OsStr::new("--storage"), dir.path().as_os_str(), std::ffi::OsStr::new("--max-event-bytes"), std::ffi::OsStr::new("1000")]);
    let http = http();
    assert_eq!(http.put(s.url("/v1/stores/k")).send().await.unwrap().status(), 201);
    let post = |body: String, ndjson: bool| {
        let r = http.post(s.url("/v1/stores/k/streams/s/events")).body(body);
        if ndjson { r.header("content-type", "application/x-ndjson") } else { r.header("content-type", "application/json") }
    };
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_string();
    // An event's data over --max-event-bytes, as JSON and as base64.
    let big = "x".repeat(1200);
    for body in [json!([{"type": "T", "data": big}]), json!([{"type": "T", "data_b64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 1001])}])] {
        let r = post(body.to_string(), false).send().await.unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(code(&r.json().await.unwrap()), "event_too_large");
    }
    // An NDJSON line past what one event can take is refused before parsing.
    let r = post(format!("{{\"type\":\"T\",\"data\":{{}}}}\n{}\n", " ".repeat(600 << 10)), true).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!((code(&v), v["error"]["line"].as_u64()), ("line_too_large".to_string(), Some(2)), "{v}");
    // Too many tags.
    let tags: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = post(json!([{"type": "T", "tags": tags}]).to_string(), false).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A query past 8 KiB.
    let r = http.get(s.url(&format!("/v1/stores/k/events?tag=k:{}", "v".repeat(9000)))).send().await.unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(code(&r.json().await.unwrap()), "uri_too_long");
    // Headers past 64 KiB: 431 from the HTTP layer, the connection closed.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(format!("GET /v1/stores HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "h".repeat(70 << 10)).as_bytes());
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&buf));
    // Nothing was written; an event at the limit is taken.
    let r = post(json!([{"type": "T", "data": "y".repeat(998)}]).to_string(), false).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["first_seq"], 0, "nothing before it was stored: {v}");
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_from_pem_files_and_reloads_them_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let make = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), name.to_string()]).unwrap();
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        reqwest::Certificate::from_pem(c.cert.pem().as_bytes()).unwrap()
    };
    let first = make("first.test");
    let data = dir.path().join("data");
    let s = Server::spawn(&[
        std::ffi::OsStr::new("--storage"), data.as_os_str(),
        std::ffi::OsStr::new("--tls-cert"), cert.as_os_str(),
        std::ffi::OsStr::new("--tls-key"), key.as_os_str(),
    ]);
    cairn_engine::storage::install_crypto();
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");
    let trusting = |c: &reqwest::Certificate| reqwest::Client::builder().tls_certs_only([c.clone()]).timeout(Duration::from_secs(10)).build().unwrap();
    let c1 = trusting(&first);
    assert_eq!(c1.put(format!("{https}/v1/stores/k")).send().await.unwrap().status(), 201);
    let r = c1.post(format!("{https}/v1/stores/k/streams/s/events")).json(&json!([{"type": "T", "data": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // HTTP/2 by ALPN.
    let h2 = reqwest::Client::builder().tls_certs_only([first.clone()]).http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{https}/v1/stores/k")).send().await.unwrap();
    assert_eq!((r.status(), r.version()), (reqwest::StatusCode::OK, reqwest::Version::HTTP_2));
    // The header bound holds on HTTP/2 too.
    let big = h2.get(format!("{https}/v1/stores/k")).header("x-big", "h".repeat(70 << 10)).send().await;
    assert!(big.as_ref().map_or(true, |r| r.status() == 431), "{big:?}");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(http().get(s.url("/healthz")).send().await.is_err(), "no plain HTTP on the TLS port");
    // A client that does not trust the certificate is refused.
    let stranger = make("other.test");
    assert!(trusting(&stranger).get(format!("{https}/healthz")).send().await.is_err());
    // The files now hold the new pair: SIGHUP, and new connections get it.
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = trusting(&stranger).get(format!("{https}/v1/stores/k")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the reloaded certificate is served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A bad pair on SIGHUP keeps the one in force.
    std::fs::write(&key, "not a key").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(trusting(&stranger).get(format!("{https}/healthz")).send().await.unwrap().status(), 200);
}

#[test]
fn tls_flags_need_each_other_and_readable_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| Command::new(env!("CARGO_BIN_EXE_cairn")).args(["serve", "--listen", "127.0.0.1:0", "--storage"]).arg(dir.path()).args(extra).output().unwrap();
    let o = run(&["--tls-cert", "/nonexistent/cert.pem"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses a cert without a key");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let o = run(&["--tls-cert", garbage.to_str().unwrap(), "--tls-key", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("garbage.pem") && err.trim_end().lines().count() <= 2, "{err}");
}

/// Retention set while appends go on, then kill -9 (with the truncation it
/// started possibly in flight), twice: what is kept is all there, at its
/// seq; what is before the first seq says so; heads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_truncating_keeps_everything_after_the_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = HashMap::new();
    let mut set_at = 0;
    for round in 0..2 {
        let mut s = spawn(dir.path());
        if round == 0 {
            assert_eq!(http().put(s.url("/v1/stores/k")).send().await.unwrap().status(), 201);
        }
        let stop = Arc::new(Mutex::new(false));
        let loader = tokio::spawn(load(s.base.clone(), 8, stop.clone()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let next = http().get(s.url("/v1/stores/k")).send().await.unwrap().json::<Value>().await.unwrap()["next_seq"].as_u64().unwrap();
        let r = http().put(s.url("/v1/stores/k/retention")).json(&json!({"truncate_before": next / 2 + set_at / 2})).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        set_at = r.json::<Value>().await.unwrap()["first_seq"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(round * 300)).await;
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        total.extend(loader.await.unwrap());
    }
    let s = spawn(dir.path());
    let http = http();
    let r: Value = http.get(s.url("/v1/stores/k/retention")).send().await.unwrap().json().await.unwrap();
    let first = r["first_seq"].as_u64().unwrap();
    assert_eq!(first, set_at, "an answered setting survives kill -9");
    let r = http.get(s.url("/v1/stores/k/events?from=0")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    // Every event from the first seq on, at its seq; every acknowledged one among them.
    let mut events = Vec::new();
    let mut from = first;
    loop {
        let text = http.get(s.url(&format!("/v1/stores/k/events?from={from}"))).send().await.unwrap().text().await.unwrap();
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let next = lines.pop().unwrap()["next"].as_u64().unwrap();
        if lines.is_empty() {
            break;
        }
        events.extend(lines);
        from = next;
    }
    let seen: HashMap<String, u64> = events.iter().map(|e| (e["id"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap())).collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64().unwrap(), first + i as u64, "no gap after the first seq");
    }
    for (id, seq) in total.iter().filter(|(_, seq)| **seq >= first) {
        assert_eq!(seen.get(id), Some(seq), "acknowledged event {id} at seq {seq}");
    }
    // Each stream's kept revisions end at its head, and appends go on from it.
    for c in 0..8 {
        let revs: Vec<u64> = events.iter().filter(|e| e["stream"] == format!("s{c}")).map(|e| e["revision"].as_u64().unwrap()).collect();
        let head = http.get(s.url(&format!("/v1/stores/k/streams/s{c}"))).send().await.unwrap().json::<Value>().await.unwrap()["revision"].as_u64();
        if let Some(last) = revs.last() {
            assert_eq!(Some(*last), head, "s{c}");
            assert!(revs.windows(2).all(|w| w[1] == w[0] + 1), "s{c}: revisions dense");
        }
        let Some(h) = head else { continue };
        let r = http.post(s.url(&format!("/v1/stores/k/streams/s{c}/events"))).header("expected-revision", h.to_string()).json(&json!([{"type": "T", "data": 1}])).send().await.unwrap();
        assert_eq!(r.status(), 200, "s{c} goes on from {h}");
    }
    eprintln!("kill -9 while truncating: first seq {first}, {} events kept, {} acknowledged in all", events.len(), total.len());
}
