//! Errors: the node's `{"error":{"code","message"}}` answers and transport
//! failures, each with a coarse [`ErrorKind`] that says whether a retry is
//! safe.

use std::time::Duration;

use serde::Deserialize;

/// What went wrong, coarsely: enough to decide what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was wrong (400, 413, 405): fix it; a retry fails again.
    InvalidInput,
    /// The store, doc or route does not exist (404).
    NotFound,
    /// 409: a stream is not at the expected revision
    /// ([`Error::current_revision`], [`Error::conflicts`]), or the ids of a
    /// batch partly match events already stored. Nothing was appended.
    Conflict,
    /// 412: a doc's ETag did not match. Nothing was written.
    PreconditionFailed,
    /// 401: no token, or an unknown one.
    Unauthorized,
    /// 403: the token lacks the right for this store.
    Forbidden,
    /// 429 or 503 `overloaded`: nothing was done; retry after
    /// [`Error::retry_after`].
    Busy,
    /// 503 `storage_unavailable`, `shutting_down`, `timeout`, or the node
    /// could not be reached: nothing was written; a retry is safe.
    Unavailable,
    /// The request may or may not have taken effect (503
    /// `commit_outcome_unknown`, or the connection broke after the request
    /// was sent). Retrying an append with the same event ids is safe.
    OutcomeUnknown,
    /// Stored data failed its checksum (500 `data_corrupt`): a retry reads
    /// the same bytes. Other data is still served.
    Corrupt,
    /// 410 `truncated`: the read (or an append's condition) reaches before
    /// what the store's retention kept. [`Error::first_seq`] says where the
    /// store now starts; for a stream read, [`Error::first_revision`] where
    /// the stream does.
    Truncated,
    /// The node answered something this client does not understand.
    Protocol,
}

impl ErrorKind {
    /// Whether sending the same request again is safe: it cannot apply
    /// twice (appends carry event ids; reads change nothing).
    pub fn is_retry_safe(self) -> bool {
        matches!(self, ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::OutcomeUnknown)
    }
}

/// One stream that failed its expectation in a 409.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StreamConflict {
    pub stream: String,
    /// `"any"`, `"no_stream"`, `"stream_exists"` or a revision, as sent.
    pub expected: serde_json::Value,
    /// `None`: the stream has no events.
    pub current_revision: Option<u64>,
}

/// An error from the client or the node (boxed: one pointer wide).
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    status: Option<u16>,
    code: Option<String>,
    message: String,
    current_revision: Option<u64>,
    conflicts: Vec<StreamConflict>,
    first_seq: Option<u64>,
    first_revision: Option<u64>,
    retry_after: Option<Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)?;
        if let Some(c) = &self.0.code {
            write!(f, " ({c})")?;
        }
        if let Some(s) = &self.0.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The node's error object.
#[derive(Deserialize)]
pub(crate) struct WireError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub current_revision: Option<u64>,
    #[serde(default)]
    pub streams: Vec<StreamConflict>,
    #[serde(default)]
    pub first_seq: Option<u64>,
    #[serde(default)]
    pub first_revision: Option<u64>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

impl Error {
    /// An error of this kind (for sinks and projections of your own).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            kind,
            status: None,
            code: None,
            message: message.into(),
            current_revision: None,
            conflicts: Vec::new(),
            first_seq: None,
            first_revision: None,
            retry_after: None,
            source: None,
        }))
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Shorthand for `self.kind().is_retry_safe()`.
    pub fn is_retry_safe(&self) -> bool {
        self.0.kind.is_retry_safe()
    }

    /// The HTTP status, when the node answered.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The node's error code (`wrong_expected_revision`, `store_not_found`, ...).
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// On a 409 for one stream: its revision now (`None`: no events).
    pub fn current_revision(&self) -> Option<u64> {
        self.0.current_revision
    }

    /// On a 409: every stream that failed its expectation.
    pub fn conflicts(&self) -> &[StreamConflict] {
        &self.0.conflicts
    }

    /// On a 410 `truncated`: the store's first seq still stored.
    pub fn first_seq(&self) -> Option<u64> {
        self.0.first_seq
    }

    /// On a 410 `truncated` stream read: the stream's first revision still
    /// stored (`None` when retention dropped all of it).
    pub fn first_revision(&self) -> Option<u64> {
        self.0.first_revision
    }

    /// How long the node asked to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// An error object the node sent: as an answer, or as the last line of a
    /// read that failed midway.
    pub(crate) fn from_wire(status: Option<u16>, e: WireError, retry_after: Option<Duration>) -> Error {
        let kind = match (status, e.code.as_str()) {
            (_, "commit_outcome_unknown") => ErrorKind::OutcomeUnknown,
            (_, "overloaded" | "too_many_waiters") => ErrorKind::Busy,
            (_, "data_corrupt") => ErrorKind::Corrupt,
            (_, "truncated") => ErrorKind::Truncated,
            (_, "storage_unavailable" | "shutting_down" | "timeout") => ErrorKind::Unavailable,
            (Some(401), _) => ErrorKind::Unauthorized,
            (Some(403), _) => ErrorKind::Forbidden,
            (Some(404), _) | (_, "store_not_found" | "doc_not_found") => ErrorKind::NotFound,
            (Some(409), _) => ErrorKind::Conflict,
            (Some(412), _) => ErrorKind::PreconditionFailed,
            (Some(429), _) => ErrorKind::Busy,
            (Some(s), _) if (400..500).contains(&s) => ErrorKind::InvalidInput,
            (Some(503), _) => ErrorKind::Unavailable,
            // Other 5xx say nothing about what was done.
            _ => ErrorKind::OutcomeUnknown,
        };
        Error(Box::new(Inner {
            kind,
            status,
            code: Some(e.code),
            message: e.message,
            current_revision: e.current_revision,
            conflicts: e.streams,
            first_seq: e.first_seq,
            first_revision: e.first_revision,
            retry_after,
            source: None,
        }))
    }

    /// A non-2xx answer.
    pub(crate) async fn from_response(resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<WireErrorBody>(&body) {
            Ok(b) => Error::from_wire(Some(status), b.error, retry_after),
            Err(_) => {
                // Not a Cairn error body (a proxy, a load balancer).
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
                let wire = WireError { code: format!("http_{status}"), message: format!("HTTP {status}: {text}"), current_revision: None, streams: Vec::new(), first_seq: None, first_revision: None };
                Error::from_wire(Some(status), wire, retry_after)
            }
        }
    }

    /// A transport failure. `sent`: the request may have reached the node,
    /// so its effect is unknown (unless it changes nothing).
    pub(crate) fn transport(e: reqwest::Error, sent: bool) -> Error {
        let kind = if e.is_connect() || !sent { ErrorKind::Unavailable } else { ErrorKind::OutcomeUnknown };
        let what = if e.is_timeout() { "request timed out" } else if e.is_connect() { "cannot connect to the node" } else { "connection failed" };
        let mut err = Error::new(kind, what);
        err.0.source = Some(Box::new(e));
        err
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(code: &str) -> WireError {
        WireError { code: code.into(), message: "m".into(), current_revision: None, streams: Vec::new(), first_seq: None, first_revision: None }
    }

    #[test]
    fn kinds_say_whether_a_retry_is_safe() {
        let cases = [
            (400, "invalid_event", ErrorKind::InvalidInput, false),
            (413, "body_too_large", ErrorKind::InvalidInput, false),
            (404, "store_not_found", ErrorKind::NotFound, false),
            (409, "wrong_expected_revision", ErrorKind::Conflict, false),
            (409, "idempotency_conflict", ErrorKind::Conflict, false),
            (409, "condition_failed", ErrorKind::Conflict, false),
            (412, "precondition_failed", ErrorKind::PreconditionFailed, false),
            (401, "unauthorized", ErrorKind::Unauthorized, false),
            (403, "forbidden", ErrorKind::Forbidden, false),
            (429, "too_many_waiters", ErrorKind::Busy, true),
            (503, "overloaded", ErrorKind::Busy, true),
            (503, "storage_unavailable", ErrorKind::Unavailable, true),
            (503, "commit_outcome_unknown", ErrorKind::OutcomeUnknown, true),
            (500, "internal", ErrorKind::OutcomeUnknown, true),
            (500, "data_corrupt", ErrorKind::Corrupt, false),
            (410, "truncated", ErrorKind::Truncated, false),
        ];
        for (status, code, kind, safe) in cases {
            let e = Error::from_wire(Some(status), wire(code), None);
            assert_eq!((e.kind(), e.is_retry_safe()), (kind, safe), "{status} {code}");
        }
        // An error line in the middle of a read has no status.
        assert_eq!(Error::from_wire(None, wire("storage_unavailable"), None).kind(), ErrorKind::Unavailable);
    }
}
