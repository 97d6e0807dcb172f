//! The HTTP side of Custos: the axum router (Web API, token endpoint, audit API, health and
//! metrics), authentication, and the request pipeline that checks privileges, runs the
//! operation, asks the audit policy and makes the audit event durable before answering.
#![warn(missing_docs)]

mod admin;
mod alerts;
mod audit;
mod audit_api;
mod audit_settings;
mod auth;
mod automation;
mod cells;
mod console;
mod context;
mod error;
mod export;
mod feed;
mod ingest;
mod listener;
mod m365;
mod maintenance;
mod metrics;
mod names;
mod outbound;
mod queries;
mod reports;
mod retention;
mod siem;
mod signing_key;
mod state;
mod streams;
mod support;
mod throttle;
mod verification;
mod webapi;
mod webhook;
mod witness;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

pub use error::{AppError, ErrorCode};
pub use listener::Limits;
pub use maintenance::{ReindexSummary, reindex_audit_log};
pub use state::{AppState, Clock, Config, StartError, SystemClock, private_files};

/// `GET /openapi.json`: an OpenAPI 3 description of the fixed routes (for API fuzzers and client
/// generators; the Web API's full description is its CSDL `$metadata`).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// Free bytes below which the data directory's file system counts as full: audited work
/// (records and their events) is being refused, or soon will be.
const DISK_FREE_BYTES_MIN: u64 = 1 << 20;

/// Whether Custos takes and serves audited work: `Err` with the reason while the audit log
/// refuses events (the writer stopped, a failed write) or found a record altered on disk, or
/// the data directory's file system is full.
pub(crate) fn health(state: &AppState) -> Result<(), String> {
    state.log.health()?;
    if let Ok(stat) = rustix::fs::statvfs(&state.config.data_dir) {
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < DISK_FREE_BYTES_MIN {
            return Err(format!(
                "the data directory's file system is full ({free} bytes free): audited requests are refused"
            ));
        }
    }
    Ok(())
}

/// `GET /healthz`: 200 while Custos takes and serves audited work; 503 with the reason while
/// it refuses it (see [`health`]).
async fn healthz(State(state): State<AppState>) -> Response {
    match health(&state) {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

/// Prometheus metrics; like every route but `/healthz` and the token endpoint it needs a valid
/// bearer token (Prometheus can fetch one with its `oauth2` client-credentials setting).
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Err(error) = auth::authenticate(&state, &headers) {
        return error.into_response();
    }
    let text = state
        .metrics
        .render(state.log.stats(), state.log.len(), health(&state).is_ok());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> Response {
    AppError::not_found("no such route").into_response()
}

async fn method_not_allowed() -> Response {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
    .into_response()
}

/// The routes of the JSON API (Web API, token endpoint, audit API) with the catch-all that
/// records their refusals, without the connection middleware: the console calls them
/// in-process with its own request context.
pub(crate) fn api_routes(state: &AppState) -> Router<AppState> {
    let api_root = "/{instance}/api/data/v9.2";
    Router::new()
        .route("/oauth2/token", post(auth::token))
        .route("/oauth2/logout", post(auth::logout))
        .route("/api/me/changePassword", post(auth::change_password))
        .route("/api/admin/instances", get(admin::list).post(admin::create))
        .route(
            "/api/admin/instances/{name}",
            get(admin::get).delete(admin::delete),
        )
        .route("/api/admin/instances/{name}/convert", post(admin::convert))
        .route(
            "/api/admin/instances/{name}/backups",
            get(admin::backups).post(admin::backup),
        )
        .route("/api/admin/instances/{name}/restore", post(admin::restore))
        .route(
            "/api/admin/support/engineers",
            get(admin::engineers).post(admin::grant_support),
        )
        .route(
            "/api/admin/support/engineers/{id}",
            axum::routing::delete(admin::revoke_support),
        )
        .route(
            "/api/admin/support/grants",
            get(admin::grants).post(admin::open_grant),
        )
        .route(
            "/api/admin/support/grants/{id}",
            axum::routing::delete(admin::end_grant),
        )
        .route("/api/support/access", post(support::access))
        .route("/api/support/backend", post(support::backend))
        .route("/api/audit/ingest", post(ingest::ingest))
        .route(
            "/api/audit/streams",
            get(streams::list).post(streams::create),
        )
        .route(
            "/api/audit/streams/{id}",
            get(streams::get).delete(streams::delete),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/subscriptions/start",
            post(feed::start),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/subscriptions/stop",
            post(feed::stop),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/subscriptions/list",
            get(feed::list),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/subscriptions/content",
            get(feed::content),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/subscriptions/notifications",
            get(feed::notifications),
        )
        .route(
            "/api/v1.0/{tenant}/activity/feed/audit/{id}",
            get(feed::blob),
        )
        .route("/api/audit/records", get(audit_api::search))
        .route("/api/audit/records/{id}", get(audit_api::get))
        .route("/api/audit/exports", post(export::start_job))
        .route("/api/audit/exports/{id}", get(export::job))
        .route(
            "/api/audit/exports/{id}/file",
            get(export::job_file_download),
        )
        .route("/api/audit/export", get(export::export))
        .route("/api/audit/alerts", get(alerts::list).post(alerts::create))
        .route(
            "/api/audit/alerts/{id}",
            axum::routing::delete(alerts::delete),
        )
        .route(
            "/api/audit/queries",
            get(queries::list).post(queries::create),
        )
        .route("/api/audit/queries/{id}", get(queries::get))
        .route("/api/audit/queries/{id}/records", get(queries::records))
        .route(
            "/api/audit/reports",
            get(reports::list).post(reports::create),
        )
        .route(
            "/api/audit/reports/{id}",
            get(reports::get)
                .put(reports::update)
                .delete(reports::delete),
        )
        .route("/api/audit/reports/{id}/runs", get(reports::runs))
        .route("/api/audit/subjects/{record}", get(reports::subject))
        .route(
            "/api/audit/retention",
            get(retention::get).put(retention::put),
        )
        .route("/api/audit/retention/run", post(retention::run))
        .route(
            "/api/audit/settings",
            get(audit_settings::get).put(audit_settings::put),
        )
        .route(
            "/api/audit/verify",
            get(verification::get).post(verification::start),
        )
        .route("/api/audit/checkpoint", get(audit_api::checkpoint))
        .route("/api/audit/key", get(audit_api::key))
        .route("/api/audit/keys", get(signing_key::keys))
        .route("/api/audit/key/rotate", post(signing_key::rotate))
        .route("/api/audit/proofs/inclusion", get(audit_api::inclusion))
        .route("/api/audit/proofs/consistency", get(audit_api::consistency))
        .route(api_root, any(webapi::handle))
        .route(&format!("{api_root}/"), any(webapi::handle))
        .route(&format!("{api_root}/{{*rest}}"), any(webapi::handle))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            webapi::record_refusals,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(listener::BODY_BYTES_MAX))
}

/// The whole application; tests and the binary use the same router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .merge(console::routes(&state))
        .merge(api_routes(&state))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            listener::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            context::correlate,
        ))
        .layer(axum::middleware::from_fn(console::security_headers))
        .with_state(state)
}

/// Opens the data directory and serves until the process ends; prints the bound address first.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(ServeError::Bind)?;
    let local = listener.local_addr().map_err(ServeError::Bind)?;
    let config = Config {
        listen: local,
        ..config
    };
    let state = tokio::task::spawn_blocking(move || AppState::open(config, Arc::new(SystemClock)))
        .await
        .map_err(|e| ServeError::Start(StartError::FirstRun(e.to_string())))??;
    println!("custos: listening on http://{local}");
    let log = state.log.clone();
    tokio::select! {
        served = serve_on(listener, state) => served.map_err(ServeError::Bind),
        () = stop_signal() => {
            // Every answered request's event is durable already; sign over them, so a stopped
            // log has no unsigned tail.
            let signed = tokio::task::spawn_blocking(move || log.sign_checkpoint())
                .await
                .map_err(|e| e.to_string())
                .and_then(|signed| signed.map_err(|e| e.to_string()));
            match signed {
                Ok(Some((size, _))) => println!("custos: stopped; a checkpoint covers all {size} events"),
                Ok(None) => println!("custos: stopped"),
                Err(error) => tracing::error!(%error, "the last checkpoint could not be signed"),
            }
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        // Without signal handlers the process ends the default way, unsigned tail and all.
        _ => std::future::pending().await,
    }
}

/// Serves an opened state on a bound listener until the runtime ends, within the configured
/// limits; also runs the hourly retention purge and the log's followers.
pub async fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    tokio::spawn(retention::purge_periodically(state.clone()));
    queries::resume(&state);
    export::tidy_jobs(&state);
    tokio::spawn(reports::schedule(state.clone()));
    let followers = state.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || alerts::init_cursors(&followers))
        .await
        .expect("setting cursors does not panic")
    {
        tracing::error!(error = %error.message, "alerts are off: their cursors could not be set");
    } else {
        tokio::spawn(alerts::detect(state.clone()));
        tokio::spawn(webhook::follow(state.clone(), alerts::NOTIFIER));
    }
    let outbox = state.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || {
        webhook::init_cursor(&outbox, automation::OUTBOX_CURSOR)
    })
    .await
    .expect("setting a cursor does not panic")
    {
        tracing::error!(error = %error.message, "process and plug-in webhooks are off: their cursor could not be set");
    } else {
        tokio::spawn(webhook::follow(state.clone(), automation::OUTBOX));
    }
    tokio::spawn(feed::publish_periodically(state.clone()));
    tokio::spawn(throttle::flush_periodically(state.clone()));
    streams::resume(&state);
    let limits = state.config.limits;
    listener::serve(listener, router(state), limits).await
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket failed.
    #[error("listen: {0}")]
    Bind(std::io::Error),
    /// The data directory could not be opened.
    #[error(transparent)]
    Start(#[from] StartError),
}
