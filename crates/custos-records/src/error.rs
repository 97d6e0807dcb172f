//! The one error type of the records crate, split by who is at fault.

/// Result of record operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the storage could not be written at all (a full disk, an I/O error): the
    /// request is to be refused as unavailable, not as a fault of the request or the code.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Io(_) => true,
            Error::Storage(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
            ),
            // No server answer at all (a lost connection), or the server out of resources
            // (53: disk full, too many connections) or going down (57P).
            Error::Postgres(e) => e.code().is_none_or(|code| {
                let code = code.code();
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
            }),
            _ => false,
        }
    }
}

impl Error {
    /// Whether a statement broke a unique index (an alternate key's, when not the primary
    /// key's): SQLite's `SQLITE_CONSTRAINT_UNIQUE`, PostgreSQL's 23505.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            Error::Storage(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// What went wrong with a records operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is invalid: bad query, unknown attribute, wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// The entity, attribute or record does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate id or name).
    #[error("{0}")]
    Conflict(String),
    /// An `If-Match` / `If-None-Match` precondition does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The `before_commit` hook refused the commit (the audit event could not be made durable);
    /// the transaction was rolled back.
    #[error("commit refused: {0}")]
    CommitRefused(String),
    /// The storage engine failed.
    #[error("record storage: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The PostgreSQL server failed or could not be reached.
    #[error("record storage (PostgreSQL): {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// A file outside the database could not be written or synced.
    #[error("record storage file: {0}")]
    Io(String),
    /// Stored metadata does not decode.
    #[error("record metadata corrupted: {0}")]
    Corrupted(String),
    /// A read ran longer than the store allows one (`RecordStore::limit_reads`) and was
    /// stopped.
    #[error(
        "the query ran longer than the {} ms a query may take and was stopped; narrow its $filter, or order it by an indexed attribute",
        .0.as_millis()
    )]
    TooLong(std::time::Duration),
}

/// What PostgreSQL said: the server's own message and code when it answered, else the client's
/// error with its cause.
fn postgres_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}
