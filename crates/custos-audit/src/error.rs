//! The one error type of the audit crate, split by who is at fault.

use std::path::PathBuf;

/// Result of audit operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log could not be written or read: the request that needed it must be refused.
    #[error("audit log i/o on {path}: {error}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error (shown in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// Bytes on disk do not decode: corruption or a format this build does not know.
    #[error("audit log corrupted: {0}")]
    Corrupted(String),
    /// The writer has stopped after an earlier failure; nothing more is accepted.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A search request that cannot be answered as asked.
    #[error("invalid audit search: {0}")]
    InvalidQuery(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
