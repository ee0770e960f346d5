//! Tokens on every route, over a real socket: a token for one store can
//! never read, write or list another's events or docs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cairn_server::auth::Auth;
use cairn_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};

fn hash(t: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, t.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn tokens_file(entries: &[(&str, &str, &[&str], &[&str])]) -> String {
    let tokens: Vec<Value> = entries.iter().map(|(name, secret, stores, rights)| json!({"name": name, "sha256": hash(secret), "stores": stores, "rights": rights})).collect();
    json!({ "tokens": tokens }).to_string()
}

struct Node {
    base: String,
    http: reqwest::Client,
    auth: Arc<Auth>,
    file: tempfile::NamedTempFile,
}

async fn start(metrics_public: bool) -> Node {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let text = tokens_file(&[
        ("a-rw", "token-a", &["a"], &["read", "write"]),
        ("b-read", "token-b", &["b*"], &["read"]),
        ("admin", "token-admin", &["*"], &["admin"]),
    ]);
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    let auth = Arc::new(Auth::load(file.path(), metrics_public).unwrap());
    let engine = cairn_engine::Engine::new(Arc::new(object_store::memory::InMemory::new()), Default::default());
    let app = router(AppState::new(engine, ServerConfig::default()).with_auth(auth.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    cairn_engine::storage::install_crypto();
    Node { base, http: reqwest::Client::new(), auth, file }
}

impl Node {
    async fn call(&self, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Every route that touches a store, with a body where it takes one.
fn routes(store: &str) -> Vec<(&'static str, String, Option<&'static str>)> {
    vec![
        ("GET", format!("/v1/stores/{store}"), None),
        ("PUT", format!("/v1/stores/{store}"), None),
        ("DELETE", format!("/v1/stores/{store}"), None),
        ("POST", format!("/v1/stores/{store}/events"), Some(r#"[{"stream":"s","type":"T","data":1}]"#)),
        ("GET", format!("/v1/stores/{store}/events"), None),
        ("GET", format!("/v1/stores/{store}/events?wait=1"), None),
        ("POST", format!("/v1/stores/{store}/streams/s/events"), Some(r#"[{"type":"T","data":1}]"#)),
        ("GET", format!("/v1/stores/{store}/streams/s/events"), None),
        ("GET", format!("/v1/stores/{store}/streams/s"), None),
        ("PUT", format!("/v1/stores/{store}/docs/d"), Some("{}")),
        ("GET", format!("/v1/stores/{store}/docs/d"), None),
        ("DELETE", format!("/v1/stores/{store}/docs/d"), None),
        ("GET", format!("/v1/stores/{store}/retention"), None),
        ("PUT", format!("/v1/stores/{store}/retention"), Some(r#"{"max_age_ms":null}"#)),
        ("GET", format!("/v1/stores/{store}/tiering"), None),
        ("PUT", format!("/v1/stores/{store}/tiering"), Some(r#"{"seal_before":null}"#)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_token_with_the_right_on_that_store() {
    let n = start(false).await;
    for s in ["a", "b", "b2"] {
        assert_eq!(n.call(Some("token-admin"), "PUT", &format!("/v1/stores/{s}"), None).await.0, 201);
    }
    n.call(Some("token-a"), "POST", "/v1/stores/a/streams/s/events", Some(r#"[{"type":"T","data":1}]"#)).await;
    n.call(Some("token-a"), "PUT", "/v1/stores/a/docs/d", Some("{}")).await;

    for (m, p, body) in routes("a").into_iter().chain(routes("b")) {
        // No token, a malformed header, an unknown token: 401.
        let (st, v) = n.call(None, m, &p, body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (401, Some("unauthorized")), "{m} {p} without a token");
        let (st, _) = n.call(Some("not-a-token"), m, &p, body).await;
        assert_eq!(st, 401, "{m} {p} with an unknown token");
        assert_eq!(n.call(Some(&hash("token-a")), m, &p, body).await.0, 401, "{m} {p}: the hash is not the token");
    }
    // Token a: read and write on a, nothing on b; never admin.
    for (m, p, body) in routes("b") {
        let (st, v) = n.call(Some("token-a"), m, &p, body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "token a: {m} {p}");
    }
    for (m, p, body) in routes("a") {
        let (st, _) = n.call(Some("token-a"), m, &p, body).await;
        if (m == "PUT" || m == "DELETE") && (p == "/v1/stores/a" || p == "/v1/stores/a/retention" || p == "/v1/stores/a/tiering") {
            assert_eq!(st, 403, "token a cannot create or delete stores or set retention or tiering: {m} {p}");
        } else {
            assert!(st < 400, "token a: {m} {p} gave {st}");
        }
    }
    // Token b: reads on b* only; no writes anywhere.
    for (m, p, body) in routes("b2") {
        let (st, _) = n.call(Some("token-b"), m, &p, body).await;
        if m == "GET" {
            assert!(st == 200 || st == 404, "token b reads b2: {m} {p} gave {st}");
        } else {
            assert_eq!(st, 403, "token b cannot write: {m} {p}");
        }
    }
    for (m, p, body) in routes("a") {
        assert_eq!(n.call(Some("token-b"), m, &p, body).await.0, 403, "token b on a: {m} {p}");
    }
    // Nothing token b tried landed.
    let (_, info) = n.call(Some("token-admin"), "GET", "/v1/stores/b2", None).await;
    assert_eq!(info["error"]["code"], "forbidden", "admin is only admin");
    let (_, head) = n.call(Some("token-b"), "GET", "/v1/stores/b2/streams/s", None).await;
    assert_eq!(head["revision"], Value::Null);
    // The store list shows only what a token may read.
    let names = |v: Value| v["stores"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(n.call(Some("token-a"), "GET", "/v1/stores", None).await.1), vec!["a"]);
    assert_eq!(names(n.call(Some("token-b"), "GET", "/v1/stores", None).await.1), vec!["b", "b2"]);
    assert_eq!(n.call(None, "GET", "/v1/stores", None).await.0, 401);
    // A percent-encoded name is checked as the router decodes it.
    assert_eq!(n.call(Some("token-b"), "GET", "/v1/stores/%61/events", None).await.0, 403);
    assert_eq!(n.call(Some("token-a"), "GET", "/v1/stores/%61/events", None).await.0, 200);
    // Open: health, readiness, the OpenAPI document, the console. Metrics need a token.
    for p in ["/healthz", "/readyz", "/v1/openapi.json", "/", "/console/console.js"] {
        assert_eq!(n.call(None, "GET", p, None).await.0, 200, "{p} is open");
    }
    assert_eq!(n.call(None, "GET", "/metrics", None).await.0, 401);
    assert_eq!(n.call(Some("token-b"), "GET", "/metrics", None).await.0, 200);
    let (st, _) = n.call(Some("token-admin"), "DELETE", "/v1/stores/b", None).await;
    assert_eq!(st, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reload_and_metrics_can_be_public() {
    let n = start(true).await;
    assert_eq!(n.call(None, "GET", "/metrics", None).await.0, 200, "public metrics");
    assert_eq!(n.call(Some("token-admin"), "PUT", "/v1/stores/a", None).await.0, 201);
    assert_eq!(n.call(Some("token-a"), "GET", "/v1/stores/a", None).await.0, 200);
    // Rotate: a new token for a, the old one gone.
    std::fs::write(n.file.path(), tokens_file(&[("a-new", "token-a2", &["a"], &["read"])])).unwrap();
    assert_eq!(n.auth.reload().unwrap(), 1);
    assert_eq!(n.call(Some("token-a"), "GET", "/v1/stores/a", None).await.0, 401);
    assert_eq!(n.call(Some("token-a2"), "GET", "/v1/stores/a", None).await.0, 200);
    // A broken file keeps the tokens in force.
    std::fs::write(n.file.path(), "{\"tokens\": [oops").unwrap();
    assert!(n.auth.reload().unwrap_err().contains("not a tokens file"));
    assert_eq!(n.call(Some("token-a2"), "GET", "/v1/stores/a", None).await.0, 200);
}
