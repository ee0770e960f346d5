//! End-to-end tests of the v1 API over real sockets (a server on
//! 127.0.0.1, port 0), on every backend: memory, local disk, Azure
//! (Azurite) and S3 (SeaweedFS).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::EngineConfig;
use cairn_server::{router, AppState, ServerConfig};
use futures::StreamExt;
use serde_json::{json, Value};

use cairn_engine::testing::{Backend, TestStorage};

struct Node {
    base: String,
    http: reqwest::Client,
    _storage: Arc<TestStorage>,
}

async fn start(b: Backend) -> Node {
    start_cfg(b, ServerConfig::default()).await
}

async fn start_cfg(b: Backend, cfg: ServerConfig) -> Node {
    serve(Arc::new(b.storage()), cfg).await
}

/// A node on `storage`, which other nodes may share.
async fn serve(storage: Arc<TestStorage>, cfg: ServerConfig) -> Node {
    serve_engine(storage, cfg, EngineConfig::default()).await
}

async fn serve_engine(storage: Arc<TestStorage>, cfg: ServerConfig, engine_cfg: EngineConfig) -> Node {
    let metrics = Arc::new(cairn_server::metrics::Metrics::new());
    let engine_cfg = EngineConfig { gc_interval: None, poll_interval: Duration::from_millis(20), ..engine_cfg };
    let engine = AppState::engine_with_metrics(storage.store.clone(), engine_cfg, &metrics);
    let app = router(AppState::with_metrics(engine, cfg, metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Node { base, http: reqwest::Client::new(), _storage: storage }
}

impl Node {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }
    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn put(&self, p: &str) -> (u16, Value) {
        self.send(self.http.put(self.url(p))).await
    }
    async fn get(&self, p: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(p)).header("accept", "application/json")).await
    }
    async fn post(&self, p: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.url(p)).json(&body)).await
    }
    async fn ndjson(&self, p: &str) -> Vec<Value> {
        let text = self.http.get(self.url(p)).send().await.unwrap().text().await.unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
    /// Sends bytes as they are; returns the status and the rest.
    async fn raw(&self, req: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(self.base.trim_start_matches("http://")).await.unwrap();
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    async fn next_seq(&self, store: &str) -> u64 {
        self.get(&format!("/v1/stores/{store}")).await.1["next_seq"].as_u64().unwrap()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

cairn_engine::on_every_backend!(stores_routes, appends_and_reads, bad_input_changes_nothing, idempotent_retries, long_polls_and_live_tails, docs_of_health_and_metrics, docs_with_etags, conditions_on_three_nodes, the_esdb_seed_example, retention_over_http, tiering_over_http);

async fn stores_routes(b: Backend) {
    let n = start(b).await;
    let (s, v) = n.put("/v1/stores/sales").await;
    assert_eq!((s, v["name"].as_str()), (201, Some("sales")));
    assert_eq!(n.put("/v1/stores/sales").await.0, 200);
    let (s, v) = n.put("/v1/stores/Not_Valid").await;
    assert_eq!((s, code(&v)), (400, "invalid_store_name"));
    // Raw requests, so no client normalises the dots away.
    for target in ["/v1/stores/..", "/v1/stores/%2e%2e", "/v1/stores/a%2F..%2Fb", "/v1/stores/%00", "/v1/stores/sales/docs/..", "/v1/stores/sales/docs/%2e%2e%2fx"] {
        let (s, body) = n.raw(&format!("PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(s, 400, "{target}: {body}");
        assert!(body.contains("invalid_store_name") || body.contains("invalid_doc_key"), "{target}: {body}");
    }
    let (s, v) = n.get("/v1/stores").await;
    assert_eq!((s, v), (200, json!({"stores": [{"name": "sales"}]})));
    let (s, v) = n.get("/v1/stores/sales").await;
    assert_eq!(s, 200);
    for k in ["name", "incarnation", "next_seq", "version", "idempotency_window"] {
        assert!(!v[k].is_null(), "{k} in {v}");
    }
    let (s, v) = n.get("/v1/stores/nope").await;
    assert_eq!((s, code(&v)), (404, "store_not_found"));
    assert_eq!(n.send(n.http.delete(n.url("/v1/stores/sales"))).await.0, 204);
    assert_eq!(n.send(n.http.delete(n.url("/v1/stores/sales"))).await.0, 404);
    let (s, v) = n.post("/v1/stores/sales/streams/a/events", json!([{"type": "T"}])).await;
    assert_eq!((s, code(&v)), (404, "store_not_found"));
}

async fn appends_and_reads(b: Backend) {
    let n = start(b).await;
    n.put("/v1/stores/s").await;
    let (s, v) = n.post("/v1/stores/s/streams/order-1/events", json!([{"type": "Placed", "data": {"total": 12}}, {"type": "Paid", "data_b64": "AAEC", "tags": {"region": "eu"}}])).await;
    assert_eq!((s, v["first_seq"].as_u64(), v["last_seq"].as_u64(), v["first_revision"].as_u64(), v["last_revision"].as_u64()), (200, Some(0), Some(1), Some(0), Some(1)), "{v}");
    // The object form with `expected`, and the header.
    let (s, _) = n.post("/v1/stores/s/streams/order-1/events", json!({"events": [{"type": "Shipped", "data": null}], "expected": 1})).await;
    assert_eq!(s, 200);
    let (s, v) = n.send(n.http.post(n.url("/v1/stores/s/streams/order-1/events")).header("Expected-Revision", "1").json(&json!([{"type": "X"}]))).await;
    assert_eq!((s, code(&v), v["error"]["current_revision"].as_u64()), (409, "wrong_expected_revision", Some(2)));
    // NDJSON in.
    let nd = "{\"type\":\"A\",\"data\":1,\"id\":\"6c9e6679-7425-40de-944b-e07fc1f90ae7\"}\n{\"type\":\"B\",\"data\":[2],\"id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"timestamp\":1700000000000}\n";
    let (s, v) = n.send(n.http.post(n.url("/v1/stores/s/streams/other/events")).header("content-type", "application/x-ndjson").body(nd)).await;
    assert_eq!((s, v["first_seq"].as_u64()), (200, Some(3)), "{v}");
    // Many streams, atomically, with a map of expectations.
    let (s, v) = n.post("/v1/stores/s/events", json!({"events": [{"stream": "x", "type": "T"}, {"stream": "order-1", "type": "T"}], "expected": {"x": "no_stream", "order-1": 2}})).await;
    assert_eq!((s, v["first_seq"].as_u64(), v["last_seq"].as_u64()), (200, Some(5), Some(6)), "{v}");
    let (s, v) = n.post("/v1/stores/s/events", json!({"events": [{"stream": "y", "type": "T"}, {"stream": "x", "type": "T"}], "expected": {"y": "no_stream", "x": 7}})).await;
    assert_eq!((s, code(&v)), (409, "wrong_expected_revision"));
    assert_eq!(v["error"]["streams"][0]["stream"], "x");
    assert_eq!(v["error"]["streams"][0]["current_revision"], 0);
    assert_eq!(n.next_seq("s").await, 7);
    // Reads: NDJSON with the last line {"next"}.
    let lines = n.ndjson("/v1/stores/s/events").await;
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[7], json!({"next": 7}));
    assert_eq!(lines[0]["data"], json!({"total": 12}));
    assert_eq!(lines[1]["data_b64"], "AAEC");
    assert_eq!(lines[1]["tags"], json!({"region": "eu"}));
    assert_eq!(lines[4]["id"], "7c9e6679-7425-40de-944b-e07fc1f90ae7");
    assert_eq!(lines[4]["timestamp"], 1700000000000i64);
    for (i, l) in lines[..7].iter().enumerate() {
        assert_eq!(l["seq"], i as u64);
        for k in ["stream", "revision", "type", "timestamp", "id", "tags"] {
            assert!(l.get(k).is_some(), "{k} in {l}");
        }
    }
    let lines = n.ndjson("/v1/stores/s/events?from=5&limit=1").await;
    assert_eq!(lines, vec![lines[0].clone(), json!({"next": 6})]);
    let (_, v) = n.get("/v1/stores/s/events?tag=region:eu").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["next"], 7);
    // One stream, both ways.
    let (_, v) = n.get("/v1/stores/s/streams/order-1/events").await;
    let revs: Vec<u64> = v["events"].as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revs, vec![0, 1, 2, 3]);
    assert_eq!(v["next"], 4);
    let (_, v) = n.get("/v1/stores/s/streams/order-1/events?direction=backward&limit=2").await;
    let revs: Vec<u64> = v["events"].as_array().unwrap().iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!((revs, v["next"].clone()), (vec![3, 2], json!(1)));
    let lines = n.ndjson("/v1/stores/s/streams/unknown/events").await;
    assert_eq!(lines, vec![json!({"next": 0})]);
    assert_eq!(n.get("/v1/stores/s/streams/order-1").await.1, json!({"stream": "order-1", "revision": 3}));
    assert_eq!(n.get("/v1/stores/s/streams/none").await.1, json!({"stream": "none", "revision": null}));
    // A stream name with characters that must be escaped in a path.
    let (s, _) = n.post("/v1/stores/s/streams/a%2Fb%20c/events", json!([{"type": "T"}])).await;
    assert_eq!(s, 200);
    assert_eq!(n.get("/v1/stores/s/streams/a%2Fb%20c").await.1["revision"], 0);
    // Past the end is an error, not a silent wait.
    let (s, v) = n.get("/v1/stores/s/events?from=99").await;
    assert_eq!((s, code(&v)), (400, "position_beyond_end"));
}

async fn bad_input_changes_nothing(b: Backend) {
    let n = start_cfg(b, ServerConfig { body_limit: 4096, ..ServerConfig::default() }).await;
    n.put("/v1/stores/s").await;
    let p = "/v1/stores/s/streams/a/events";
    let raw = |body: &'static str| n.http.post(n.url(p)).header("content-type", "application/json").body(body);
    let cond = |c: Value| n.http.post(n.url(p)).json(&json!({"events": [{"type": "T"}], "condition": c}));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (raw("[{\"type\":\"T\""), 400, "malformed_json"),
        (raw("{}"), 400, "malformed_json"),
        (raw("\"x\""), 400, "malformed_json"),
        (raw("[]"), 400, "invalid_batch"),
        (raw("[{\"type\":5}]"), 400, "malformed_json"),
        (raw("[{\"type\":\"\"}]"), 400, "invalid_batch"),
        (raw("[{\"type\":\"T\",\"bogus\":1}]"), 400, "malformed_json"),
        (raw("[{\"type\":\"T\",\"data_b64\":\"!!\"}]"), 400, "invalid_event"),
        (raw("[{\"type\":\"T\",\"data\":1,\"data_b64\":\"AA==\"}]"), 400, "invalid_event"),
        (raw("[{\"type\":\"T\",\"id\":\"not-a-uuid\"}]"), 400, "malformed_json"),
        (raw("[{\"type\":\"T\",\"timestamp\":\"soon\"}]"), 400, "malformed_json"),
        (raw("[{\"type\":\"T\",\"stream\":\"other\"}]"), 400, "invalid_event"),
        (raw("[{\"type\":\"T\",\"id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\"},{\"type\":\"T\",\"id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\"}]"), 400, "invalid_batch"),
        (raw("{\"events\":[{\"type\":\"T\"}],\"expected\":-1}"), 400, "invalid_expected_revision"),
        (raw("{\"events\":[{\"type\":\"T\"}],\"expected\":\"sometimes\"}"), 400, "invalid_expected_revision"),
        (raw("[{\"type\":\"T\"}]").header("Expected-Revision", "banana"), 400, "invalid_expected_revision"),
        (raw("{\"events\":[{\"type\":\"T\"}],\"expected\":2}").header("Expected-Revision", "3"), 400, "invalid_expected_revision"),
        (n.http.post(n.url(p)).header("content-type", "application/x-ndjson").body("{\"type\":\"A\"}\n{\"type\":\n"), 400, "malformed_ndjson"),
        (n.http.post(n.url(p)).body(vec![b'['; 5000]), 413, "body_too_large"),
        (n.http.post(n.url("/v1/stores/s/events")).json(&json!([{"type": "T"}])), 400, "invalid_event"),
        (n.http.post(n.url("/v1/stores/s/events")).json(&json!({"events": [{"type": "T", "stream": "a"}], "expected": [1]})), 400, "invalid_expected_revision"),
        (n.http.post(n.url("/v1/stores/s/streams/a%0Ab/events")).json(&json!([{"type": "T"}])), 400, "invalid_stream_name"),
        (n.http.post(n.url("/v1/stores/BAD/streams/a/events")).json(&json!([{"type": "T"}])), 400, "invalid_store_name"),
        (n.http.get(n.url("/v1/stores/s/events?from=abc")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?limit=-3")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?limit=0")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?wait=31")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?tag=novalue")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?unknown=1")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/streams/a/events?direction=sideways")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/stores/s/events?direction=backward")), 400, "invalid_query"),
        (n.http.get(n.url("/v1/nothing-here")), 404, "not_found"),
        (n.http.patch(n.url("/v1/stores/s")), 405, "method_not_allowed"),
        (n.http.get(n.url("/v1/stores/s/events")).header("accept", "text/event-stream").header("last-event-id", "18446744073709551615"), 400, "invalid_last_event_id"),
        (n.http.get(n.url("/v1/stores/s/events")).header("accept", "text/event-stream").header("last-event-id", "abc"), 400, "invalid_last_event_id"),
        (n.http.get(n.url("/v1/stores/s/events?from=18446744073709551615")), 400, "position_beyond_end"),
        (cond(json!({})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": []})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": 5})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {"types": "T"}})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {"types": [""]}})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {"typo": []}})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": [{"tags": {"k": 1}}]})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {}, "after": -1})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {}, "bogus": 1})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": vec![json!({}); 65]})), 400, "invalid_condition"),
        (cond(json!({"fail_if_events_match": {}, "after": 0})), 400, "position_beyond_end"),
        (cond(json!("x")), 400, "invalid_condition"),
    ];
    for (i, (req, status, want)) in cases.into_iter().enumerate() {
        let (s, v) = n.send(req).await;
        assert_eq!((s, code(&v)), (status, want), "case {i}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}: {v}");
    }
    assert_eq!(n.next_seq("s").await, 0, "no bad request appended anything");
    // The NDJSON error names the line.
    let (_, v) = n.send(n.http.post(n.url(p)).header("content-type", "application/x-ndjson").body("{\"type\":\"A\"}\n\n{\"type\":\n")).await;
    assert_eq!(v["error"]["line"], 3, "{v}");
}

async fn idempotent_retries(b: Backend) {
    let n = start(b).await;
    n.put("/v1/stores/s").await;
    let b = json!([{"type": "T", "id": "11111111-1111-4111-8111-111111111111"}, {"type": "T", "id": "22222222-2222-4222-8222-222222222222"}]);
    let (_, first) = n.post("/v1/stores/s/streams/a/events", b.clone()).await;
    let (s, again) = n.post("/v1/stores/s/streams/a/events", b.clone()).await;
    assert_eq!(s, 200);
    assert_eq!((again["first_seq"].clone(), again["deduplicated"].clone()), (first["first_seq"].clone(), json!(true)));
    let partial = json!([{"type": "T", "id": "11111111-1111-4111-8111-111111111111"}, {"type": "T", "id": "33333333-3333-4333-8333-333333333333"}]);
    let (s, v) = n.post("/v1/stores/s/streams/a/events", partial).await;
    assert_eq!((s, code(&v)), (409, "idempotency_conflict"));
    assert_eq!(n.next_seq("s").await, 2);
}

async fn long_polls_and_live_tails(b: Backend) {
    let n = Arc::new(start(b).await);
    n.put("/v1/stores/s").await;
    // Nothing arrives: the wait runs out, next = from.
    let t = Instant::now();
    let (s, v) = n.get("/v1/stores/s/events?from=0&wait=1").await;
    assert_eq!((s, v.clone()), (200, json!({"events": [], "next": 0})));
    assert!(t.elapsed() >= Duration::from_millis(900));
    // A commit wakes the long-poll within milliseconds.
    let poll = {
        let n = n.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let v = n.ndjson("/v1/stores/s/events?from=0&wait=20").await;
            (v, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.post("/v1/stores/s/streams/a/events", json!([{"type": "T"}])).await;
    let (v, took) = poll.await.unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A stream long-poll for a revision not there yet.
    let poll = {
        let n = n.clone();
        tokio::spawn(async move { n.ndjson("/v1/stores/s/streams/b/events?from=0&wait=20").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.post("/v1/stores/s/streams/b/events", json!([{"type": "T"}])).await;
    assert_eq!(poll.await.unwrap().len(), 2);
    // SSE: id = seq; resumes after Last-Event-ID.
    let resp = n.http.get(n.url("/v1/stores/s/events")).header("accept", "text/event-stream").header("last-event-id", "0").send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    n.post("/v1/stores/s/streams/a/events", json!([{"type": "Live"}])).await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("id: 2") && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("id: 1") && seen.contains("id: 2") && !seen.contains("id: 0\n"), "{seen}");
    assert!(seen.contains("\"type\":\"Live\""), "{seen}");
    // A stream's tail.
    let resp = n.http.get(n.url("/v1/stores/s/streams/b/events")).header("accept", "text/event-stream").send().await.unwrap();
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("\"stream\":\"b\""));
}

async fn docs_of_health_and_metrics(b: Backend) {
    let n = start(b).await;
    assert_eq!(n.send(n.http.get(n.url("/healthz"))).await.0, 200);
    assert_eq!(n.send(n.http.get(n.url("/readyz"))).await.0, 200);
    n.put("/v1/stores/s").await;
    n.post("/v1/stores/s/streams/a/events", json!([{"type": "T"}, {"type": "T"}])).await;
    n.ndjson("/v1/stores/s/streams/a/events").await;
    let text = n.http.get(n.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("cairn_events_appended_total 2"), "{text}");
    assert!(text.contains("cairn_http_requests_total{route=\"/v1/stores/{store}/streams/{stream}/events\",method=\"POST\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("cairn_http_request_duration_seconds_bucket"));
    assert!(text.contains("cairn_cache_bytes{kind=\"blocks\"}"));
    assert!(text.contains("cairn_long_poll_waiters"));
    assert!(text.contains("cairn_commits_total{store=\"s\"} 1"), "{text}");
    assert!(text.contains("cairn_commit_duration_seconds_count 1"), "{text}");
    assert!(text.contains("cairn_object_store_requests_total{op=\"create\",outcome=\"ok\"}"), "{text}");
    assert!(text.contains("cairn_object_store_request_duration_seconds_bucket{"), "{text}");
    assert!(text.contains("cairn_cache_lookups_total{kind=\"block\",result=\"hit\"}"), "{text}");
    // The OpenAPI document names every route of the contract.
    let (s, doc) = n.get("/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    for (p, methods) in [
        ("/stores", vec!["get"]),
        ("/stores/{store}", vec!["put", "get", "delete"]),
        ("/stores/{store}/events", vec!["post", "get"]),
        ("/stores/{store}/streams/{stream}/events", vec!["post", "get"]),
        ("/stores/{store}/streams/{stream}", vec!["get"]),
        ("/stores/{store}/docs/{key}", vec!["put", "get", "delete"]),
    ] {
        for m in methods {
            assert!(doc["paths"][p][m].is_object(), "{m} {p} missing from the OpenAPI document");
        }
    }
    // Both append bodies take a condition, of the shape the node parses.
    let schemas = &doc["components"]["schemas"];
    for body in ["AppendBody", "AppendManyBody"] {
        assert!(schemas[body]["properties"]["condition"].is_object(), "{body}: {}", schemas[body]);
    }
    assert_eq!(schemas["Condition"]["required"], json!(["fail_if_events_match"]));
    assert_eq!(schemas["Condition"]["properties"]["fail_if_events_match"]["oneOf"][1]["maxItems"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_waiters_get_429() {
    let n = Arc::new(start_cfg(Backend::Memory, ServerConfig { max_waiters: 2, ..ServerConfig::default() }).await);
    n.put("/v1/stores/s").await;
    let mut polls = Vec::new();
    for _ in 0..2 {
        let n = n.clone();
        polls.push(tokio::spawn(async move { n.get("/v1/stores/s/events?wait=3").await.0 }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v) = n.get("/v1/stores/s/events?wait=3").await;
    assert_eq!((s, code(&v)), (429, "too_many_waiters"));
    for p in polls {
        assert_eq!(p.await.unwrap(), 200);
    }
    // Freed: a new waiter is taken again.
    assert_eq!(n.get("/v1/stores/s/events?wait=1").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_can_be_turned_off() {
    let n = start(Backend::Memory).await;
    let page = n.http.get(n.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/console.js") && html.contains("/console/console.css"));
    for (path, ct) in [("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")] {
        let r = n.http.get(n.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(ct), "{path}");
        assert!(r.text().await.unwrap().len() > 1000, "{path} is the real asset");
    }
    assert_eq!(n.get("/console/nope.js").await.0, 404);
    let off = start_cfg(Backend::Memory, ServerConfig { console: false, ..ServerConfig::default() }).await;
    let (s, v) = off.get("/").await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    assert_eq!(off.get("/v1/stores").await.0, 200, "the API stays");
}

async fn docs_with_etags(b: Backend) {
    let n = start(b).await;
    n.put("/v1/stores/s").await;
    let url = n.url("/v1/stores/s/docs/checkpoint");
    let r = n.http.put(&url).header("if-none-match", "*").header("content-type", "application/json").body("{\"seq\":1}").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    let r = n.http.put(&url).header("if-none-match", "*").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 412);
    // An empty If-Match is bad input, not a failed precondition.
    for empty in ["", "\"\""] {
        let r = n.http.put(&url).header("if-match", empty).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 400, "If-Match {empty:?}");
    }
    let r = n.http.get(&url).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["etag"].to_str().unwrap(), r.headers()["content-type"].to_str().unwrap()), (200, etag.as_str(), "application/json"));
    assert_eq!(r.text().await.unwrap(), "{\"seq\":1}");
    // Compare-and-swap: the first writer with the current ETag wins.
    let r1 = n.http.put(&url).header("if-match", &etag).body("{\"seq\":2}").send().await.unwrap();
    assert_eq!(r1.status(), 200);
    let etag2 = r1.headers()["etag"].to_str().unwrap().to_string();
    let r2 = n.http.put(&url).header("if-match", &etag).body("{\"seq\":3}").send().await.unwrap();
    assert_eq!(r2.status(), 412);
    let v: Value = r2.json().await.unwrap();
    assert_eq!(code(&v), "precondition_failed");
    assert_eq!(n.http.get(&url).send().await.unwrap().text().await.unwrap(), "{\"seq\":2}");
    // Conditional delete.
    assert_eq!(n.http.delete(&url).header("if-match", &etag).send().await.unwrap().status(), 412);
    assert_eq!(n.http.delete(&url).header("if-match", &etag2).send().await.unwrap().status(), 204);
    assert_eq!(n.http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(n.http.delete(&url).send().await.unwrap().status(), 404);
    // Bad keys, bad preconditions.
    for (req, status, c) in [
        (n.http.put(n.url("/v1/stores/s/docs/a%2Fb")).body("x"), 400, "invalid_doc_key"),
        (n.http.put(n.url("/v1/stores/s/docs/..")).body("x"), 404, "not_found"),
        (n.http.put(&url).header("if-none-match", "\"abc\"").body("x"), 400, "invalid_precondition"),
        (n.http.put(&url).header("if-match", "W/\"abc\"").body("x"), 400, "invalid_precondition"),
        (n.http.put(n.url("/v1/stores/nope/docs/k")).body("x"), 404, "store_not_found"),
    ] {
        let (s, v) = n.send(req).await;
        assert_eq!((s, code(&v)), (status, c), "{v}");
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_cheap_freed_on_disconnect_and_tails_beat() {
    let n = Arc::new(start_cfg(Backend::Memory, ServerConfig { heartbeat: Duration::from_millis(200), ..ServerConfig::default() }).await);
    n.put("/v1/stores/s").await;
    let scrape = || async { n.http.get(n.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    // 300 long-polls on one store: one poller, not 300.
    let mut polls = Vec::new();
    for _ in 0..300 {
        let n = n.clone();
        polls.push(tokio::spawn(async move { n.get("/v1/stores/s/events?from=0&wait=8").await.0 }));
    }
    let t = Instant::now();
    let before = loop {
        let m = scrape().await;
        if metric(&m, "cairn_long_poll_waiters ") == 300.0 || t.elapsed() > Duration::from_secs(5) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metric(&before, "cairn_long_poll_waiters "), 300.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = scrape().await;
    let gets = metric(&after, "cairn_object_store_requests_total{op=\"get\",outcome=\"not_found\"}") - metric(&before, "cairn_object_store_requests_total{op=\"get\",outcome=\"not_found\"}");
    // One poller, once per 20 ms poll interval: about 50, not 300 x 50.
    assert!((10.0..=75.0).contains(&gets), "{gets} GETs in a second for 300 waiters");
    for p in polls {
        assert_eq!(p.await.unwrap(), 200);
    }
    // A client that goes away frees its waiter.
    cairn_engine::storage::install_crypto();
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(quick.get(n.url("/v1/stores/s/events?from=0&wait=20")).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = scrape().await;
    assert_eq!(metric(&idle, "cairn_long_poll_waiters "), 0.0);
    // Nobody waits: nobody polls storage.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = |m: &str| m.lines().filter(|l| l.starts_with("cairn_object_store_requests_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
    let idle_later = scrape().await;
    assert_eq!(requests(&idle_later), requests(&idle), "storage requests with no waiter");
    // A live tail sends a heartbeat comment while nothing happens.
    let resp = n.http.get(n.url("/v1/stores/s/events")).header("accept", "text/event-stream").send().await.unwrap();
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with(':') && text.contains("heartbeat"), "{chunk:?}");
    drop(body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric(&scrape().await, "cairn_long_poll_waiters "), 0.0, "a closed tail frees its slot");
}

/// A node over a directory, as `cairn serve` runs it.
async fn start_dir(dir: &std::path::Path) -> String {
    let store = cairn_engine::storage::open(&dir.to_string_lossy(), &Default::default()).unwrap();
    let engine = cairn_engine::Engine::new(store, EngineConfig { gc_interval: None, ..EngineConfig::default() });
    let app = router(AppState::new(engine, ServerConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn files_ending(dir: &std::path::Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_ending(&p, ext, out);
        } else if p.to_string_lossy().ends_with(ext) {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_fails_its_reads_clearly_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    cairn_engine::storage::install_crypto();
    let http = reqwest::Client::new();
    let writer = start_dir(dir.path()).await;
    http.put(format!("{writer}/v1/stores/s")).send().await.unwrap();
    let pad = "x".repeat(200);
    for stream in ["bad", "good"] {
        let r = http.post(format!("{writer}/v1/stores/s/streams/{stream}/events")).json(&json!([{"type": "T", "data": {"pad": pad}}])).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Segments are named by ULID: the first holds stream "bad".
    let mut segs = Vec::new();
    files_ending(dir.path(), ".seg", &mut segs);
    segs.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    // A fresh node (nothing cached) on the same directory.
    let base = start_dir(dir.path()).await;
    let get = |p: &str| http.get(format!("{base}{p}")).header("accept", "application/json").send();
    let r = get("/v1/stores/s/streams/bad/events").await.unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "data_corrupt");
    assert!(!v["error"]["message"].as_str().unwrap().contains(".seg"), "no object names to clients: {v}");
    // Everything else is served.
    let r = get("/v1/stores/s/streams/good/events").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(get("/v1/stores/s").await.unwrap().status(), 200);
    let r = get("/v1/stores/s/events?from=1").await.unwrap();
    assert_eq!(r.status(), 200, "the store after the bad block");
    // NDJSON failing at its first block: an error answer, not a 200.
    let r = http.get(format!("{base}/v1/stores/s/events")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "data_corrupt");
    // And the node still takes writes.
    let r = http.post(format!("{base}/v1/stores/s/streams/new/events")).json(&json!([{"type": "T", "data": 1}])).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_fails_its_reads_clearly_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    cairn_engine::storage::install_crypto();
    let http = reqwest::Client::new();
    let writer = start_dir(dir.path()).await;
    http.put(format!("{writer}/v1/stores/s")).send().await.unwrap();
    for stream in ["bad", "good"] {
        let r = http.post(format!("{writer}/v1/stores/s/streams/{stream}/events")).json(&json!([{"type": "T", "data": {"n": 1}}, {"type": "T", "data": {"n": 2}}])).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut segs = Vec::new();
    files_ending(dir.path(), ".seg", &mut segs);
    segs.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    // Cut the first segment (stream "bad") to half: its footer is gone.
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segs[0]).unwrap().set_len(len / 2).unwrap();
    let base = start_dir(dir.path()).await;
    let get = |p: &str| http.get(format!("{base}{p}")).header("accept", "application/json").send();
    let started = std::time::Instant::now();
    let r = get("/v1/stores/s/streams/bad/events").await.unwrap();
    assert_eq!(r.status(), 500, "a truncated object is corrupt, not unavailable");
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "data_corrupt", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered without retrying for long: {:?}", started.elapsed());
    let r = get("/v1/stores/s/events?from=0").await.unwrap();
    assert_eq!(r.status(), 500, "a segment whose core is past its end is corrupt too");
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "data_corrupt");
    // The rest of the store, the store's info and writes are fine.
    let r = get("/v1/stores/s/events?from=2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["events"].as_array().unwrap().len(), 2);
    assert_eq!(get("/v1/stores/s").await.unwrap().status(), 200);
    let r = http.post(format!("{base}/v1/stores/s/streams/good/events")).json(&json!([{"type": "T", "data": 3}])).send().await.unwrap();
    assert_eq!(r.status(), 200, "a stream whose head is in a newer segment");
    // With its footer gone, nobody can tell which streams the segment
    // holds: a read of a stream that must look through it fails the same
    // way, rather than answer without what may be there.
    let r = get("/v1/stores/s/streams/good/events").await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "data_corrupt");
    // So does an append to a stream that may be in it; nothing is written.
    let r = http.post(format!("{base}/v1/stores/s/streams/new/events")).json(&json!([{"type": "T", "data": 4}])).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "data_corrupt");
    assert_eq!(get("/v1/stores/s").await.unwrap().json::<Value>().await.unwrap()["next_seq"], 5);
}

/// Nodes on one shared storage, as a deployment runs them.
async fn nodes_on(storage: &Arc<TestStorage>, n: usize) -> Vec<Node> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(serve(storage.clone(), ServerConfig::default()).await);
    }
    out
}

/// A course of 5 seats and 12 students, over HTTP on three nodes: each
/// student reads the course's events by tag, and subscribes if it saw a
/// seat free, on the condition that nothing for the course came after what
/// it read. Exactly 5 get in; the losers of each race get 409
/// `condition_failed` and nothing appended.
async fn conditions_on_three_nodes(b: Backend) {
    const SEATS: usize = 5;
    let storage = Arc::new(b.storage());
    let nodes = Arc::new(nodes_on(&storage, 3).await);
    assert_eq!(nodes[0].put("/v1/stores/c").await.0, 201);
    let (s, v) = nodes[1].post("/v1/stores/c/events", json!([{"stream": "course-c1", "type": "CourseDefined", "tags": {"course": "c1"}}])).await;
    assert_eq!(s, 200, "{v}");
    let mut tasks = Vec::new();
    for student in 0..12 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let n = &nodes[student % 3];
            let mut lost = 0;
            loop {
                let lines = n.ndjson("/v1/stores/c/events?tag=course:c1").await;
                let next = lines.last().and_then(|l| l["next"].as_u64()).unwrap();
                let taken = lines.iter().filter(|l| l["type"] == "Subscribed").count();
                if taken >= SEATS {
                    return (false, lost);
                }
                let body = json!({
                    "events": [{"type": "Subscribed", "tags": {"course": "c1", "student": student.to_string()}}],
                    "condition": {"fail_if_events_match": {"types": ["Subscribed", "CourseCapacityChanged"], "tags": {"course": "c1"}}, "after": next - 1},
                });
                let (s, v) = n.post(&format!("/v1/stores/c/streams/student-{student}/events"), body).await;
                match s {
                    200 => return (true, lost),
                    409 => {
                        assert_eq!(code(&v), "condition_failed", "{v}");
                        lost += 1;
                    }
                    _ => panic!("student {student}: {s} {v}"),
                }
            }
        }));
    }
    let (mut got, mut lost) = (0, 0);
    for t in tasks {
        let (ok, l) = t.await.unwrap();
        got += usize::from(ok);
        lost += l;
    }
    assert_eq!(got, SEATS);
    assert!(lost > 0, "no student lost a race: nothing was tested");
    let all = nodes[2].ndjson("/v1/stores/c/events").await;
    assert_eq!(all.iter().filter(|l| l["type"] == "Subscribed").count(), SEATS, "{all:?}");
    // The many-stream route takes a condition too; a match before `after` does not count.
    let body = |after: u64| json!({"events": [{"stream": "course-c1", "type": "CourseCapacityChanged", "tags": {"course": "c1"}}], "expected": {"course-c1": 0}, "condition": {"fail_if_events_match": [{"types": ["Subscribed"], "tags": {"course": "c1"}}], "after": after}});
    let (s, v) = nodes[0].post("/v1/stores/c/events", body(1)).await;
    assert_eq!((s, code(&v)), (409, "condition_failed"), "{v}");
    let (s, v) = nodes[0].post("/v1/stores/c/events", body(SEATS as u64)).await;
    assert_eq!(s, 200, "{v}");
}

/// The esdb seed's example (seeds/esdb-readme.txt) over HTTP: customers as
/// streams, their page views, clicks and purchases with the seed's
/// timestamps and a `type` tag; one customer's purchases by tag, another's
/// clicks backwards.
async fn the_esdb_seed_example(b: Backend) {
    let n = start(b).await;
    n.put("/v1/stores/activity").await;
    let seed = [
        ("1", 1403534919i64, "page", json!({"url": "http://mysite.com/"})),
        ("1", 1403534920, "click", json!({"button_text": "Checkout"})),
        ("1", 1403534921, "page", json!({"url": "http://mysite.com/checkout"})),
        ("1", 1403534923, "purchase", json!({"total": "42.99"})),
        ("1", 1403534923, "page", json!({"url": "http://mysite.com/thankyou"})),
        ("2", 1403534919, "page", json!({"url": "http://mysite.com/"})),
        ("2", 1403534920, "click", json!({"button_text": "About"})),
        ("2", 1403534921, "page", json!({"url": "http://mysite.com/about"})),
        ("3", 1403534919, "page", json!({"url": "http://mysite.com/"})),
        ("3", 1403534920, "click", json!({"button_text": "About"})),
        ("3", 1403534921, "page", json!({"url": "http://mysite.com/about"})),
        ("3", 1403534922, "click", json!({"button_text": "Checkout"})),
        ("3", 1403534923, "purchase", json!({"total": "126.99"})),
        ("3", 1403534923, "page", json!({"url": "http://mysite.com/thankyou"})),
    ];
    // In two requests, so the history spans two segments.
    for part in seed.chunks(7) {
        let events: Vec<Value> = part.iter().map(|(c, ts, t, d)| json!({"stream": c, "type": t, "timestamp": ts * 1000, "tags": {"type": t}, "data": d})).collect();
        let (s, v) = n.post("/v1/stores/activity/events", Value::from(events)).await;
        assert_eq!(s, 200, "{v}");
    }
    let data = |lines: Vec<Value>| -> Vec<String> { lines.iter().filter(|l| l.get("next").is_none()).map(|l| l["data"].to_string()).collect() };
    assert_eq!(data(n.ndjson("/v1/stores/activity/streams/1/events?tag=type:purchase").await), vec![r#"{"total":"42.99"}"#]);
    assert_eq!(
        data(n.ndjson("/v1/stores/activity/streams/3/events?tag=type:click&direction=backward").await),
        vec![r#"{"button_text":"Checkout"}"#, r#"{"button_text":"About"}"#]
    );
    // All of customer 2's activity, newest first as the seed prints it, with its timestamps.
    let two = n.ndjson("/v1/stores/activity/streams/2/events?direction=backward").await;
    assert_eq!(data(two.clone()), vec![r#"{"url":"http://mysite.com/about"}"#, r#"{"button_text":"About"}"#, r#"{"url":"http://mysite.com/"}"#]);
    let ts: Vec<i64> = two.iter().filter_map(|l| l["timestamp"].as_i64()).collect();
    assert_eq!(ts, vec![1403534921000, 1403534920000, 1403534919000]);
    // Customer 1 in full, oldest first; and every purchase of the store by tag.
    assert_eq!(data(n.ndjson("/v1/stores/activity/streams/1/events").await).len(), 5);
    assert_eq!(data(n.ndjson("/v1/stores/activity/events?tag=type:purchase").await), vec![r#"{"total":"42.99"}"#, r#"{"total":"126.99"}"#]);
}

async fn retention_over_http(b: Backend) {
    let n = start(b).await;
    assert_eq!(n.put("/v1/stores/ret").await.0, 201);
    for i in 0..6 {
        let (st, _) = n.post("/v1/stores/ret/streams/s/events", json!([{"type": "T", "data": i}])).await;
        assert_eq!(st, 200);
        let (st, _) = n.post("/v1/stores/ret/streams/t/events", json!([{"type": "T", "data": i}])).await;
        assert_eq!(st, 200);
    }
    let put = |body: &str| n.http.put(n.url("/v1/stores/ret/retention")).header("content-type", "application/json").body(body.to_string());
    let (st, v) = n.get("/v1/stores/ret/retention").await;
    assert_eq!((st, v), (200, json!({"truncate_before": null, "max_age_ms": null, "first_seq": 0, "next_seq": 12})));

    // Bad settings: 400 and nothing changes.
    for bad in [r#"{"truncate_before": -1}"#, r#"{"truncate_before": 13}"#, r#"{"max_age_ms": 0}"#, r#"{"keep": 1}"#, "[]", "not json", ""] {
        let (st, v) = n.send(put(bad)).await;
        assert_eq!((st, code(&v)), (400, "invalid_retention"), "{bad}: {v}");
    }
    let (st, v) = n.send(n.http.put(n.url("/v1/stores/nope/retention")).body("{}")).await;
    assert_eq!((st, code(&v)), (404, "store_not_found"));
    assert_eq!(n.get("/v1/stores/ret/retention").await.1["first_seq"], 0);
    assert_eq!(n.ndjson("/v1/stores/ret/events?from=0").await.len(), 13);

    // Seq 5 is t's revision 2: s keeps revisions 3.. (seq 6 on), t 2...
    let (st, v) = n.send(put(r#"{"truncate_before": 5, "max_age_ms": 86400000}"#)).await;
    assert_eq!((st, v), (200, json!({"truncate_before": 5, "max_age_ms": 86400000, "first_seq": 5, "next_seq": 12})));
    assert_eq!(n.get("/v1/stores/ret").await.1["first_seq"], 5);

    // Reads before the point say so, in every answer format.
    for p in ["/v1/stores/ret/events?from=0", "/v1/stores/ret/events?from=4&tag=k:v", "/v1/stores/ret/events?from=4&wait=1"] {
        let (st, v) = n.get(p).await;
        assert_eq!((st, code(&v), &v["error"]["first_seq"]), (410, "truncated", &json!(5)), "{p}: {v}");
        let r = n.http.get(n.url(p)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 410, "{p} as NDJSON");
    }
    let r = n.http.get(n.url("/v1/stores/ret/events?from=0")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410, "a live tail from before the point");
    let (st, v) = n.get("/v1/stores/ret/streams/s/events").await;
    assert_eq!((st, code(&v), &v["error"]["first_revision"]), (410, "truncated", &json!(3)), "{v}");
    let (st, v) = n.get("/v1/stores/ret/streams/t/events?from=1").await;
    assert_eq!((st, &v["error"]["first_revision"]), (410, &json!(2)), "{v}");
    assert_eq!(n.ndjson("/v1/stores/ret/streams/t/events?from=2").await.len(), 5);
    let r = n.http.get(n.url("/v1/stores/ret/streams/s/events?from=0")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410, "a stream's live tail from before the point");

    // From the point on, reads are as before.
    let evs = n.ndjson("/v1/stores/ret/events?from=5").await;
    assert_eq!(evs.iter().filter_map(|e| e["seq"].as_u64()).collect::<Vec<_>>(), (5..12).collect::<Vec<_>>());
    assert_eq!(evs.last().unwrap()["next"], 12);
    let evs = n.ndjson("/v1/stores/ret/streams/s/events?from=3").await;
    assert_eq!(evs.iter().filter_map(|e| e["revision"].as_u64()).collect::<Vec<_>>(), vec![3, 4, 5]);
    let evs = n.ndjson("/v1/stores/ret/streams/s/events?direction=backward").await;
    assert_eq!(evs.iter().filter_map(|e| e["revision"].as_u64()).collect::<Vec<_>>(), vec![5, 4, 3]);
    assert_eq!(n.get("/v1/stores/ret/streams/s").await.1["revision"], 5);

    // A condition that would look before the point is refused.
    let body = |after: u64| json!({"events": [{"type": "T", "data": 1}], "condition": {"fail_if_events_match": [{"types": ["Z"]}], "after": after}});
    let (st, v) = n.post("/v1/stores/ret/streams/s/events", body(3)).await;
    assert_eq!((st, code(&v), &v["error"]["first_seq"]), (410, "truncated", &json!(5)), "{v}");
    assert_eq!(n.next_seq("ret").await, 12, "nothing appended");
    let (st, v) = n.post("/v1/stores/ret/streams/s/events", body(4)).await;
    assert_eq!((st, &v["first_revision"]), (200, &json!(6)), "{v}");

    // Everything: the heads remain, no_stream still fails.
    let (st, _) = n.send(put(r#"{"truncate_before": 13}"#)).await;
    assert_eq!(st, 200);
    let (st, v) = n.send(n.http.post(n.url("/v1/stores/ret/streams/t/events")).header("expected-revision", "no_stream").json(&json!([{"type": "T", "data": 1}]))).await;
    assert_eq!((st, code(&v), &v["error"]["current_revision"]), (409, "wrong_expected_revision", &json!(5)), "{v}");
    let evs = n.ndjson("/v1/stores/ret/events?from=13").await;
    assert_eq!(evs, vec![json!({"next": 13})]);
}

async fn tiering_over_http(b: Backend) {
    // Small objects and a short idempotency window, so history seals soon.
    let engine = EngineConfig { idempotency_window: 20, max_recent_segments: 4, keep_recent: 1, max_indexes: 3, archive_events: 30, ..EngineConfig::default() };
    let n = serve_engine(Arc::new(b.storage()), ServerConfig::default(), engine).await;
    for store in ["sealed", "plain"] {
        assert_eq!(n.put(&format!("/v1/stores/{store}")).await.0, 201);
        for c in 0..20 {
            let events: Vec<Value> = (0..10)
                .map(|i| {
                    let k = c * 10 + i;
                    let ty = ["A", "B"][k % 2];
                    json!({"stream": format!("s{}", k % 7), "type": ty, "data": {"k": k}, "tags": {"t": (k % 3).to_string()}, "timestamp": 1_700_000_000_000u64 + k as u64, "id": format!("00000000-0000-4000-8000-{k:012}")})
                })
                .collect();
            assert_eq!(n.post(&format!("/v1/stores/{store}/events"), json!(events)).await.0, 200);
        }
    }
    let put = |body: &str| n.http.put(n.url("/v1/stores/sealed/tiering")).body(body.to_string());
    for bad in [r#"{"seal_after_ms": 0}"#, r#"{"seal_before": "x"}"#, r#"{"seal_before": 9223372036854775808}"#, r#"{"other": 1}"#, "[]", "nope"] {
        let (st, v) = n.send(put(bad)).await;
        assert_eq!((st, code(&v)), (400, "invalid_tiering"), "{bad}: {v}");
    }
    assert_eq!(n.get("/v1/stores/sealed/tiering").await.1, json!({"seal_before": null, "seal_after_ms": null}));
    let (st, v) = n.send(put(r#"{"seal_before": 1000000}"#)).await;
    assert_eq!((st, v), (200, json!({"seal_before": 1000000, "seal_after_ms": null})));
    // Sealed in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while n.get("/v1/stores/sealed").await.1["archives"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "nothing was sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every read answers as on the unsealed twin.
    for q in ["events?from=0", "events?from=33", "events?from=0&tag=t:1", "events?from=0&limit=7", "streams/s3/events", "streams/s3/events?direction=backward", "streams/s5/events?from=4&limit=3", "streams/s6/events?direction=backward&from=9"] {
        let a = n.ndjson(&format!("/v1/stores/sealed/{q}")).await;
        let b = n.ndjson(&format!("/v1/stores/plain/{q}")).await;
        assert_eq!(a, b, "{q}");
        assert!(a.len() > 1, "{q} read events");
    }
    for s in 0..7 {
        assert_eq!(n.get(&format!("/v1/stores/sealed/streams/s{s}")).await.1, n.get(&format!("/v1/stores/plain/streams/s{s}")).await.1);
    }
    // Conditions over sealed history: one fails, one holds, as on the twin.
    let body = |t: &str| json!({"events": [{"type": "P", "data": 1}], "condition": {"fail_if_events_match": [{"tags": {"t": t}}], "after": 10}});
    for store in ["sealed", "plain"] {
        let (st, v) = n.post(&format!("/v1/stores/{store}/streams/s1/events"), body("2")).await;
        assert_eq!((st, code(&v)), (409, "condition_failed"), "{store}: {v}");
        let (st, v) = n.post(&format!("/v1/stores/{store}/streams/s1/events"), body("9")).await;
        assert_eq!((st, &v["first_seq"], &v["first_revision"]), (200, &json!(200), &json!(29)), "{store}: {v}");
    }
}
