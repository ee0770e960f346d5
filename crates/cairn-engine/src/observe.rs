//! Hooks for metrics: the engine reports what it does to an [`Observer`]
//! (the HTTP node turns it into Prometheus metrics). Every method has an
//! empty default, so an observer implements only what it needs.

use std::time::Duration;

/// Kinds of object-store requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectOp {
    Get,
    GetRange,
    Head,
    Put,
    Create,
    List,
    Delete,
}

impl ObjectOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectOp::Get => "get",
            ObjectOp::GetRange => "get_range",
            ObjectOp::Head => "head",
            ObjectOp::Put => "put",
            ObjectOp::Create => "create",
            ObjectOp::List => "list",
            ObjectOp::Delete => "delete",
        }
    }
}

/// How an object-store request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    NotFound,
    /// A create-if-absent found the object there.
    AlreadyExists,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::AlreadyExists => "already_exists",
            Outcome::Error => "error",
        }
    }
}

/// Caches of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKind {
    Footer,
    IndexFooter,
    Page,
    Block,
}

impl CacheKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Footer => "footer",
            CacheKind::IndexFooter => "index_footer",
            CacheKind::Page => "page",
            CacheKind::Block => "block",
        }
    }
}

pub trait Observer: Send + Sync + 'static {
    /// A batch was committed: its events and data bytes, and the time from
    /// taking it off the queue to acknowledging it.
    fn commit(&self, _store: &str, _events: usize, _bytes: usize, _took: Duration) {}
    /// A manifest create lost to another writer.
    fn conflict(&self, _store: &str) {}
    /// One object-store request (including its retries).
    fn object_op(&self, _op: ObjectOp, _outcome: Outcome, _took: Duration) {}
    /// A cache look-up.
    fn cache(&self, _kind: CacheKind, _hit: bool) {}
}

/// Observes nothing.
pub struct Nothing;

impl Observer for Nothing {}
