//! Bearer tokens scoped to stores and rights (DESIGN.md, "Operating it").
//!
//! The tokens file holds SHA-256 hashes, never tokens:
//! `{"tokens":[{"name":"ingest","sha256":"<hex>","stores":["sales","tmp-*"],"rights":["read","write"]}]}`.
//! A request's token is hashed and compared with every entry in constant
//! time. Rights: `read` (events, heads, docs, store info, listing),
//! `write` (appends, doc writes and deletes), `admin` (create and delete
//! stores); each is granted on its own. A missing or unknown token is 401,
//! a token without the right is 403.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Read,
    Write,
    Admin,
}

impl Right {
    fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    sha256: String,
    stores: Vec<String>,
    rights: Vec<Right>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tokens: Vec<FileEntry>,
}

/// One token of the file.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    hash: [u8; 32],
    stores: Vec<String>,
    rights: Vec<Right>,
}

impl Token {
    /// Whether this token has `right` on `store`.
    pub fn allows(&self, store: &str, right: Right) -> bool {
        self.rights.contains(&right) && self.stores.iter().any(|p| glob(p, store))
    }
}

/// `*` matches any run of characters (none included); everything else
/// matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else { return pattern == name };
    let Some(mut left) = name.strip_prefix(head) else { return false };
    let parts: Vec<&str> = rest.split('*').collect();
    let (middle, last) = parts.split_at(parts.len() - 1);
    for part in middle {
        match left.find(part) {
            Some(i) => left = &left[i + part.len()..],
            None => return false,
        }
    }
    left.len() >= last[0].len() && left.ends_with(last[0])
}

/// The tokens in force.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Tokens {
    /// Parses and checks a tokens file.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let f: File = serde_json::from_str(text).map_err(|e| format!("not a tokens file: {e}"))?;
        let mut tokens = Vec::new();
        for (i, e) in f.tokens.into_iter().enumerate() {
            let what = format!("token {} ({:?})", i + 1, e.name);
            let hash = hex32(&e.sha256).ok_or_else(|| format!("{what}: sha256 must be 64 hex digits (the SHA-256 of the token, not the token)"))?;
            if e.stores.is_empty() || e.rights.is_empty() {
                return Err(format!("{what}: needs at least one store pattern and one right"));
            }
            for p in &e.stores {
                if p.is_empty() || !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*') {
                    return Err(format!("{what}: store pattern {p:?} may hold only a-z, 0-9, - and *"));
                }
            }
            if tokens.iter().any(|t: &Token| t.hash == hash) {
                return Err(format!("{what}: the same hash as another token"));
            }
            tokens.push(Token { name: e.name, hash, stores: e.stores, rights: e.rights });
        }
        Ok(Tokens { tokens })
    }

    /// The token whose hash is the presented token's, compared with every
    /// entry in constant time.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        self.position(presented).map(|i| &self.tokens[i])
    }

    fn position(&self, presented: &str) -> Option<usize> {
        let h = sha256(presented);
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if bool::from(t.hash.ct_eq(&h)) {
                found = Some(i);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// The tokens file and what it holds now; reloaded on SIGHUP.
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
    /// `/metrics` without a token.
    pub metrics_public: bool,
}

impl Auth {
    pub fn load(path: &Path, metrics_public: bool) -> Result<Auth, String> {
        let tokens = Auth::read(path)?;
        Ok(Auth { path: path.to_path_buf(), tokens: RwLock::new(Arc::new(tokens)), metrics_public })
    }

    fn read(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
    }

    /// Reads the file again; on an error the tokens in force stay.
    pub fn reload(&self) -> Result<usize, String> {
        let t = Auth::read(&self.path)?;
        let n = t.len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
        Ok(n)
    }

    pub fn current(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Who made a request, for handlers that filter (the store list).
#[derive(Clone)]
pub struct Caller(pub Arc<Tokens>, pub usize);

impl Caller {
    pub fn token(&self) -> &Token {
        &self.0.tokens[self.1]
    }
}

/// What a request needs: a right on a store, or only a valid token.
fn needs(method: &Method, path: &str) -> Option<(String, Right)> {
    let rest = path.strip_prefix("/v1/stores/")?;
    let mut parts = rest.split('/');
    let raw = parts.next()?;
    // As the router will see it (percent-decoded); an undecodable name is
    // checked as it is and refused by the handler.
    let store = percent_encoding::percent_decode_str(raw).decode_utf8().map_or_else(|_| raw.to_string(), |s| s.into_owned());
    let right = match (parts.next(), method) {
        (None | Some(""), &Method::PUT | &Method::DELETE) => Right::Admin,
        (None | Some(""), _) => Right::Read,
        // Retention deletes data: as deleting the store.
        (Some("retention" | "tiering"), m) if m != Method::GET && m != Method::HEAD => Right::Admin,
        (Some(_), &Method::GET | &Method::HEAD) => Right::Read,
        (Some(_), _) => Right::Write,
    };
    Some((store, right))
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cairn\""));
    r
}

/// Checks the token of every request but the open ones: `/healthz`,
/// `/readyz`, the console's assets, the OpenAPI document, and `/metrics`
/// when it is public.
pub async fn check(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = s.auth.clone() else { return next.run(req).await };
    let path = req.uri().path();
    let open = matches!(path, "/healthz" | "/readyz" | "/" | "/v1/openapi.json") || path.starts_with("/console/") || (path == "/metrics" && auth.metrics_public);
    if open {
        return next.run(req).await;
    }
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    let Some(presented) = presented.filter(|t| !t.is_empty()) else { return unauthorized("a bearer token is required (Authorization: Bearer ...)") };
    let tokens = auth.current();
    let Some(i) = tokens.position(&presented) else {
        return unauthorized("unknown token");
    };
    if let Some((store, right)) = needs(req.method(), path) {
        let t = &tokens.tokens[i];
        if !t.allows(&store, right) {
            let msg = format!("token {:?} does not have the {} right on store {store:?}", t.name, right.name());
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg).into_response();
        }
    }
    req.extensions_mut().insert(Caller(tokens, i));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, ok) in [
            ("sales", "sales", true),
            ("sales", "sales2", false),
            ("tmp-*", "tmp-", true),
            ("tmp-*", "tmp-x1", true),
            ("tmp-*", "tmpx", false),
            ("*", "anything", true),
            ("*-prod", "eu-prod", true),
            ("*-prod", "eu-prod-2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(p, n), ok, "{p} ~ {n}");
        }
    }

    fn file(entries: &str) -> String {
        format!("{{\"tokens\":[{entries}]}}")
    }

    fn hash(t: &str) -> String {
        sha256(t).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tokens_are_found_by_hash_and_checked() {
        let text = file(&format!(
            r#"{{"name":"a","sha256":"{}","stores":["a","tmp-*"],"rights":["read","write"]}},{{"name":"adm","sha256":"{}","stores":["*"],"rights":["admin"]}}"#,
            hash("secret-a"),
            hash("secret-adm").to_uppercase()
        ));
        let t = Tokens::parse(&text).unwrap();
        let a = t.find("secret-a").unwrap();
        assert_eq!(a.name, "a");
        assert!(a.allows("a", Right::Write) && a.allows("tmp-1", Right::Read));
        assert!(!a.allows("b", Right::Read) && !a.allows("a", Right::Admin));
        assert!(t.find("secret-adm").unwrap().allows("b", Right::Admin));
        assert!(t.find("secret-b").is_none() && t.find("").is_none());
        assert!(t.find(&hash("secret-a")).is_none(), "the hash is not the token");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let h = hash("x");
        for (text, why) in [
            ("{}".to_string(), "not a tokens file"),
            (file(r#"{"name":"a","sha256":"abc","stores":["a"],"rights":["read"]}"#), "64 hex digits"),
            (file(&format!(r#"{{"name":"a","sha256":"{h}","stores":[],"rights":["read"]}}"#)), "at least one"),
            (file(&format!(r#"{{"name":"a","sha256":"{h}","stores":["a"],"rights":["root"]}}"#)), "not a tokens file"),
            (file(&format!(r#"{{"name":"a","sha256":"{h}","stores":["../x"],"rights":["read"]}}"#)), "may hold only"),
            (file(&format!(r#"{{"name":"a","sha256":"{h}","stores":["a"],"rights":["read"],"extra":1}}"#)), "not a tokens file"),
            (file(&format!(r#"{{"name":"a","sha256":"{h}","stores":["a"],"rights":["read"]}},{{"name":"b","sha256":"{h}","stores":["b"],"rights":["read"]}}"#)), "same hash"),
        ] {
            let e = Tokens::parse(&text).unwrap_err();
            assert!(e.contains(why), "{e} should say {why}");
        }
    }

    #[test]
    fn routes_need_the_right_rights() {
        let cases = [
            (Method::GET, "/v1/stores", None),
            (Method::PUT, "/v1/stores/a", Some(("a", Right::Admin))),
            (Method::DELETE, "/v1/stores/a", Some(("a", Right::Admin))),
            (Method::GET, "/v1/stores/a", Some(("a", Right::Read))),
            (Method::POST, "/v1/stores/a/events", Some(("a", Right::Write))),
            (Method::GET, "/v1/stores/a/events", Some(("a", Right::Read))),
            (Method::POST, "/v1/stores/a/streams/s/events", Some(("a", Right::Write))),
            (Method::GET, "/v1/stores/a/streams/s", Some(("a", Right::Read))),
            (Method::PUT, "/v1/stores/a/docs/k", Some(("a", Right::Write))),
            (Method::DELETE, "/v1/stores/a/docs/k", Some(("a", Right::Write))),
            (Method::GET, "/v1/stores/a/docs/k", Some(("a", Right::Read))),
            (Method::PUT, "/v1/stores/a/retention", Some(("a", Right::Admin))),
            (Method::GET, "/v1/stores/a/retention", Some(("a", Right::Read))),
            (Method::PUT, "/v1/stores/a/tiering", Some(("a", Right::Admin))),
            (Method::GET, "/v1/stores/sh%6Fp/events", Some(("shop", Right::Read))),
        ];
        for (m, p, want) in cases {
            assert_eq!(needs(&m, p), want.map(|(s, r)| (s.to_string(), r)), "{m} {p}");
        }
    }
}
