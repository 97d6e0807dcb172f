//! The request plumbing every area of Custos builds on, and the state they share: the
//! application state (configuration, the tenant directory, the instances, the audit log, the
//! clock), each request's context, credentials, authentication, sign-in and the token endpoint,
//! event drafts, the one answer and refusal path, errors in the OData format, the listener and
//! its limits, throttling and the service protection limits, outbound delivery, the data directory's keys and metrics.
//!
//! It knows no area: the records platform, compliance, the SIEM feeds and the console are
//! crates above it (ARCHITECTURE.md, "Layers").
#![warn(missing_docs)]

pub mod answer;
pub mod auth;
pub mod body;
pub mod cells;
pub mod context;
pub mod credentials;
pub mod draft;
pub mod error;
pub mod files;
pub mod keys;
pub mod listener;
pub mod maintenance;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod protection;
pub mod query;
pub mod sign_in;
pub mod state;
pub mod throttle;
pub mod webhook;

pub use answer::{answer, refuse};
pub use context::RequestContext;
pub use draft::EventDraft;
pub use error::{AppError, ErrorCode, StartError, blocking};
pub use state::{AppState, Clock, Config, Instance, Journal, SystemClock};
