//! The store's error type, with the kind callers map to their own errors.

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store url `{0}` (expected sqlite://PATH or postgres://…)")]
    Url(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused the statement.
    #[error("postgres: {0}")]
    Postgres(String),
    /// PostgreSQL could not be reached, or the connection broke (worth retrying).
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    #[error("store writer has stopped")]
    Closed,
    #[error("write batch failed: {0}")]
    Batch(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The SQLite file at the store's path is no longer the one it opened (deleted or
    /// replaced): writes would go to an unlinked file, so none is made.
    #[error("the store file {0} was deleted or replaced since it was opened")]
    Replaced(String),
    /// The op would pass a limit (e.g. a balance above the maximum); nothing was written.
    #[error("{0}")]
    Limit(&'static str),
    #[error("blocking task failed: {0}")]
    Task(String),
    /// The store file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What kind of failure a [`StoreError`] is, for callers that map it to their own errors
/// (HTTP statuses, metrics labels, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store cannot be reached or has stopped: worth retrying later (503).
    Unavailable,
    /// The write conflicts with what is stored (a duplicate id).
    Conflict,
    /// The write would pass a limit; nothing was written.
    Limit,
    /// The store's configuration or URL is wrong, or the operation needs another store.
    Config,
    /// The stored data is not what this binary expects (corrupt row, newer schema).
    Corrupt,
    /// Anything else the database refused.
    Internal,
}

impl StoreError {
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Unavailable(_)
            | StoreError::Closed
            | StoreError::Batch(_)
            | StoreError::Replaced(_)
            | StoreError::Task(_) => StoreErrorKind::Unavailable,
            StoreError::Duplicate(_) => StoreErrorKind::Conflict,
            StoreError::Limit(_) => StoreErrorKind::Limit,
            StoreError::Url(_) | StoreError::Unsupported(_) | StoreError::Create { .. } => {
                StoreErrorKind::Config
            }
            StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => StoreErrorKind::Corrupt,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => match f.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    StoreErrorKind::Unavailable
                }
                rusqlite::ErrorCode::ConstraintViolation => StoreErrorKind::Conflict,
                _ => StoreErrorKind::Internal,
            },
            StoreError::Sqlite(_) | StoreError::Postgres(_) => StoreErrorKind::Internal,
        }
    }
}
