//! The one place where errors become HTTP: a closed set of codes, each with one status, and the
//! OData error body `{"error": {"code", "message"}}` on every route. Also why a server could not
//! start, and the one way blocking work reports a task that died.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The categories clients can rely on; add new ones with care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed or invalid input.
    BadRequest,
    /// No credentials, or invalid or expired ones.
    Unauthenticated,
    /// Authenticated but not allowed.
    Forbidden,
    /// The resource does not exist.
    NotFound,
    /// The method is not supported on this resource.
    MethodNotAllowed,
    /// Conflicts with the current state.
    Conflict,
    /// An `If-Match` / `If-None-Match` precondition failed.
    PreconditionFailed,
    /// A request of a batch that depends on one that did not succeed (not run).
    FailedDependency,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The client stalled while sending its request.
    Timeout,
    /// Too many attempts: try again after the `Retry-After` seconds.
    TooManyRequests,
    /// The body is not JSON (or form data where that is expected).
    UnsupportedMediaType,
    /// The audit log cannot be written: refused rather than served unaudited (and not
    /// recorded, since it cannot be).
    Unavailable,
    /// The record store cannot be reached or written (a PostgreSQL server down, a full disk);
    /// the refusal is recorded like any failure.
    StoreUnavailable,
    /// This node's audit log does not yet hold every event the cluster has acknowledged (its
    /// replica is catching up with the stream, or cannot follow it): an audit read is refused
    /// rather than answered from part of the log. The refusal is recorded like any failure.
    LogBehind,
    /// An audit record failed its integrity check: the log on disk was altered or damaged.
    Corrupted,
    /// A bug or a storage failure.
    Internal,
}

impl ErrorCode {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::FailedDependency => StatusCode::FAILED_DEPENDENCY,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unavailable | ErrorCode::StoreUnavailable | ErrorCode::LogBehind => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Corrupted => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the body, also the audit record's `ErrorCode`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequest",
            ErrorCode::Unauthenticated => "Unauthenticated",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::FailedDependency => "FailedDependency",
            ErrorCode::PayloadTooLarge => "PayloadTooLarge",
            ErrorCode::Timeout => "RequestTimeout",
            ErrorCode::TooManyRequests => "TooManyRequests",
            ErrorCode::UnsupportedMediaType => "UnsupportedMediaType",
            ErrorCode::Unavailable | ErrorCode::StoreUnavailable | ErrorCode::LogBehind => {
                "ServiceUnavailable"
            }
            ErrorCode::Corrupted => "IntegrityError",
            ErrorCode::Internal => "InternalError",
        }
    }
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct AppError {
    /// Category.
    pub code: ErrorCode,
    /// What the client is told (5xx: a generic text; the detail is logged).
    pub message: String,
    /// The code the body names instead of `code`'s, where an API has codes of its own (the
    /// activity feed's `AF…`, as Microsoft's Management Activity API); the status and the
    /// recorded error code stay `code`'s.
    pub api_code: Option<&'static str>,
}

impl AppError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError {
            code,
            message: message.into(),
            api_code: None,
        }
    }

    /// This error, its body naming `api_code` (unless it names one already).
    pub fn with_api_code(mut self, api_code: &'static str) -> AppError {
        self.api_code.get_or_insert(api_code);
        self
    }

    /// Malformed input.
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::BadRequest, message)
    }

    /// A missing resource.
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::NotFound, message)
    }

    /// A refused privilege.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::Forbidden, message)
    }

    /// Whether the refusal is a denial (audited as `Denied`) rather than a failure.
    pub fn is_denial(&self) -> bool {
        matches!(self.code, ErrorCode::Unauthenticated | ErrorCode::Forbidden)
    }
}

impl From<custos_records::Error> for AppError {
    fn from(error: custos_records::Error) -> AppError {
        use custos_records::Error as E;
        let code = match &error {
            // A query stopped for its time is the query's: it would be stopped again.
            E::BadRequest(_) | E::TooLong(_) => ErrorCode::BadRequest,
            E::NotFound(_) => ErrorCode::NotFound,
            E::Conflict(_) => ErrorCode::Conflict,
            E::PreconditionFailed(_) => ErrorCode::PreconditionFailed,
            E::CommitRefused(_) => ErrorCode::Unavailable,
            _ if error.is_unavailable() => ErrorCode::StoreUnavailable,
            E::Storage(_) | E::Postgres(_) | E::Corrupted(_) | E::Io(_) => ErrorCode::Internal,
        };
        AppError::new(code, error.to_string())
    }
}

impl From<custos_audit::Error> for AppError {
    fn from(error: custos_audit::Error) -> AppError {
        use custos_audit::Error as E;
        let code = match &error {
            E::Io { .. } | E::Unavailable(_) => ErrorCode::Unavailable,
            E::InvalidQuery(_) => ErrorCode::BadRequest,
            E::Corrupted(_) => ErrorCode::Corrupted,
        };
        AppError::new(code, error.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let message = match self.code {
            ErrorCode::Unavailable => {
                tracing::error!(error = %self.message, "refusing request: audit log unavailable");
                "the audit log cannot be written; the request was refused and nothing was changed"
                    .to_string()
            }
            ErrorCode::StoreUnavailable => {
                tracing::error!(error = %self.message, "refusing request: record store unavailable");
                "the record store cannot be reached or written; the request was refused and nothing was changed"
                    .to_string()
            }
            ErrorCode::Internal => {
                tracing::error!(error = %self.message, "internal error");
                "internal error".to_string()
            }
            ErrorCode::Corrupted => {
                tracing::error!(error = %self.message, "audit log integrity error");
                format!(
                    "an audit record failed its integrity check and is not served: {}",
                    self.message
                )
            }
            _ => self.message,
        };
        let code = self.api_code.unwrap_or(self.code.as_str());
        let body = json!({"error": {"code": code, "message": message}});
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if self.code == ErrorCode::Unauthenticated {
            // RFC 6750 §3: a 401 says which scheme it wants (Dataverse's says Bearer too).
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"custos\""),
            );
        }
        if self.code == ErrorCode::LogBehind {
            // A replica catches up in moments; one that cannot follow says why at /healthz.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A records database could not be opened or seeded.
    #[error(transparent)]
    Records(#[from] custos_records::Error),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] custos_audit::Error),
    /// A file in the data directory could not be used.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (shown in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// Seeding the first run failed.
    #[error("first run: {0}")]
    FirstRun(String),
    /// A start-up flag is invalid.
    #[error("{0}")]
    Config(String),
}

impl StartError {
    /// How an I/O error on `path` stops the start.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
        move |error| StartError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Runs blocking work (storage, the audit append) off the async threads.
pub async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, AppError>
where
    T: Send + 'static,
    E: Into<AppError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("blocking task: {e}")))?
        .map_err(Into::into)
}
