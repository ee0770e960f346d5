//! Errors, one enum per operation, each listing only what it can return.

use std::time::Duration;

/// A failure of object storage itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("storage unavailable: {0}")]
    Backend(String),
    #[error("{0}")]
    Corrupt(String),
}

impl From<cairn_format::Error> for StorageError {
    fn from(e: cairn_format::Error) -> Self {
        StorageError::Corrupt(e.to_string())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store name {0:?}: must match ^[a-z0-9][a-z0-9-]{{0,62}}$")]
    InvalidName(String),
    #[error("store not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One stream whose expectation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConflict {
    pub stream: String,
    pub expected: crate::Expectation,
    /// `None` when the stream has no events.
    pub current_revision: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("store not found: {0}")]
    StoreNotFound(String),
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("wrong expected revision")]
    WrongExpectedRevision(Vec<StreamConflict>),
    #[error("idempotency conflict: {0}")]
    IdempotencyConflict(String),
    #[error("invalid append condition: {0}")]
    InvalidCondition(String),
    /// An event matching the batch's condition was committed after its
    /// `after`; nothing was appended.
    #[error("append condition failed")]
    ConditionFailed { after: Option<u64> },
    /// The condition's `after` is not a seq of the store yet.
    #[error("condition after={after} is beyond the end of the store ({next})")]
    ConditionBeyondEnd { after: u64, next: u64 },
    /// The condition would look at events retention truncated; nothing was
    /// appended.
    #[error("the condition reaches before the store's first seq {first_seq} (truncated by retention)")]
    ConditionTruncated { first_seq: u64 },
    /// Not known whether the batch was committed; retrying with the same
    /// event ids is safe.
    #[error("commit outcome unknown")]
    CommitOutcomeUnknown,
    /// Nothing was written.
    #[error("overloaded: too many conflicting commits")]
    Overloaded { retry_after: Duration },
    /// Nothing was written.
    #[error(transparent)]
    Storage(StorageError),
    /// Nothing was written.
    #[error("shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("store not found: {0}")]
    StoreNotFound(String),
    #[error("invalid read: {0}")]
    Invalid(String),
    #[error("position {from} is beyond the end ({next})")]
    PositionBeyondEnd { from: u64, next: u64 },
    /// The read starts before what retention kept: the store's first seq,
    /// and for a stream read the stream's first revision still stored
    /// (`None` when none is).
    #[error("position is before the store's first seq {first_seq} (truncated by retention)")]
    Truncated { first_seq: u64, first_revision: Option<u64> },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(s) => ReadError::StoreNotFound(s),
            StoreError::InvalidName(s) => ReadError::Invalid(format!("invalid store name {s:?}")),
            StoreError::Storage(e) => ReadError::Storage(e),
        }
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(s) => AppendError::StoreNotFound(s),
            StoreError::InvalidName(s) => AppendError::Invalid(format!("invalid store name {s:?}")),
            StoreError::Storage(e) => AppendError::Storage(e),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RetentionError {
    #[error("store not found: {0}")]
    StoreNotFound(String),
    #[error("invalid retention: {0}")]
    Invalid(String),
    /// Not known whether the settings were committed; setting them again is
    /// safe.
    #[error("commit outcome unknown")]
    CommitOutcomeUnknown,
    #[error(transparent)]
    Storage(StorageError),
    #[error("shutting down")]
    ShuttingDown,
}

impl From<StoreError> for RetentionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(s) => RetentionError::StoreNotFound(s),
            StoreError::InvalidName(s) => RetentionError::Invalid(format!("invalid store name {s:?}")),
            StoreError::Storage(e) => RetentionError::Storage(e),
        }
    }
}
