//! The assembly of Custos: opens the areas (the records platform, compliance, feeds and SIEM,
//! the console) over the shared application state, joins their routes into one router with
//! the connection middleware, `/healthz`, `/metrics` and `/openapi.json`, starts their
//! background work and serves until SIGTERM or Ctrl-C (ARCHITECTURE.md, "Layers").
#![warn(missing_docs)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custos_compliance::ComplianceState;
use custos_console::ConsoleState;
use custos_http::{AppError, ErrorCode, listener};
use custos_platform::PlatformState;
use custos_siem::SiemState;

pub use custos_cluster::ClusterConfig;
pub use custos_http::error::StartError;
pub use custos_http::maintenance::{ReindexSummary, reindex_audit_log};
pub use custos_http::protection::UserLimits;
pub use custos_http::state::{AppState, Clock, Config, SystemClock, pg_schema, private_files};
pub use custos_http::state::{Limits, VERIFY_INTERVAL_SECS};
pub use custos_records::trust_postgres_ca;

/// `GET /openapi.json`: an OpenAPI 3 description of the fixed routes (for API fuzzers and client
/// generators; the Web API's full description is its CSDL `$metadata`).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// `GET /healthz`: 200 while Custos takes and serves audited work; 503 with the reason while
/// it refuses it (see [`health`]).
async fn healthz(State(state): State<AppState>) -> Response {
    let (status, mut body) = match state.health() {
        Ok(()) => (
            axum::http::StatusCode::OK,
            serde_json::json!({"status": "ok"}),
        ),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unavailable", "reason": reason}),
        ),
    };
    if let Some(cluster) = state.cluster_status() {
        body["cluster"] = cluster;
    }
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics; like every route but `/healthz` and the token endpoint it needs a valid
/// bearer token (Prometheus can fetch one with its `oauth2` client-credentials setting).
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Err(error) = custos_http::auth::authenticate(&state, &headers) {
        return error.into_response();
    }
    let text = state.metrics.render(
        state.log.stats(),
        state.log.len(),
        state.health().is_ok(),
        state.log.open_files(),
    );
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

/// The areas of the application, each with its own state over the shared one.
#[derive(Clone)]
pub struct Areas {
    /// The records platform.
    pub platform: PlatformState,
    /// Compliance.
    pub compliance: ComplianceState,
    /// Feeds and SIEM.
    pub siem: SiemState,
}

impl Areas {
    /// Opens every area over `app`; the platform's support tool runs compliance's purge.
    pub fn open(app: &AppState) -> Result<Areas, StartError> {
        Ok(Areas {
            platform: PlatformState::open(app, custos_compliance::purge)?,
            compliance: ComplianceState::open(app)?,
            siem: SiemState::open(app)?,
        })
    }

    /// Starts every area's background work.
    pub async fn start(&self) {
        self.compliance.start().await;
        self.platform.start().await;
        self.siem.start();
    }
}

/// The routes of the JSON API (the token endpoint, the Web API, the admin center and support
/// tool, the audit API, the feed, `/metrics`) with each user's service protection limits and
/// the catch-all that records their refusals, without the connection middleware: the console calls them in-process with its own request
/// context.
fn api_routes(state: &AppState, areas: &Areas) -> Router {
    Router::new()
        .merge(custos_http::sign_in::routes(state))
        .merge(areas.platform.routes())
        .merge(areas.compliance.routes())
        .merge(areas.siem.routes())
        .route("/metrics", get(metrics).with_state(state.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            custos_http::answer::protect,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            custos_http::answer::record_refusals,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(listener::BODY_BYTES_MAX))
}

/// The whole application; tests and the binary use the same router.
pub fn router(state: AppState, areas: &Areas) -> Router {
    let api = api_routes(&state, areas);
    let console = ConsoleState::new(&state, api.clone());
    Router::new()
        .route("/healthz", get(healthz).with_state(state.clone()))
        .route("/openapi.json", get(openapi))
        .merge(custos_console::routes(&console))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            listener::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            custos_http::context::Correlation {
                metrics: state.metrics.clone(),
                trusted_proxies: state.config.trusted_proxies.clone().into(),
                session_cookie: state.session_cookie(),
            },
            custos_http::context::correlate,
        ))
        .layer(axum::middleware::from_fn(custos_console::security_headers))
}

/// Raises the process's soft limit on open files to its hard limit, as long-running servers do
/// (Go's runtime does it for every program): the soft limit is often 1,024, which a server of
/// many connections and a log of many partitions outgrows, while the hard limit an operator
/// set is what the process may really use. The audit log takes a quarter of it for its files
/// (`custos_http::keys`).
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return;
    };
    if current < maximum {
        let raised = Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = current,
                to = maximum,
                "raised the limit on open files"
            ),
            Err(error) => {
                tracing::warn!(%error, current, "the limit on open files could not be raised")
            }
        }
    }
}

/// Opens the data directory and serves until the process ends; prints the bound address first.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    raise_open_files_limit();
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
    // A cluster node's checkpoints are the cluster signer's, which signs on its interval.
    let signs_own = !state.in_cluster();
    tokio::select! {
        served = serve_on(listener, state) => served.map_err(ServeError::Bind),
        () = stop_signal() => {
            // Every answered request's event is durable already; sign over them, so a stopped
            // log has no unsigned tail.
            // Closing the log first writes what is queued and refuses what comes after, so the
            // checkpoint covers every event the log will hold.
            let signed = tokio::task::spawn_blocking(move || {
                if let Err(error) = log.close() {
                    tracing::warn!(%error, "the audit log could not be closed");
                }
                log.sign_checkpoint()
            })
                .await
                .map_err(|e| e.to_string())
                .and_then(|signed| signed.map_err(|e| e.to_string()));
            match signed {
                Ok(Some((size, _))) if signs_own => println!("custos: stopped; a checkpoint covers all {size} events"),
                Ok(_) => println!("custos: stopped"),
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
/// limits; opens every area and starts its background work first.
pub async fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let opened = state.clone();
    let areas = tokio::task::spawn_blocking(move || Areas::open(&opened))
        .await
        .expect("opening the areas does not panic")
        .map_err(std::io::Error::other)?;
    areas.start().await;
    tokio::spawn(custos_http::answer::flush_periodically(state.clone()));
    let limits = state.config.limits;
    let exempt = state.config.trusted_proxies.clone().into();
    listener::serve(listener, router(state, &areas), limits, exempt).await
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
