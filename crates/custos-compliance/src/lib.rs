//! Compliance (SPEC §6, §7, §8): audit log search and records, the preconfigured and saved
//! reports and the data-subject report, asynchronous queries, exports, alerts, retention and
//! its purge, search on and off, verification of the whole log, and the integrity routes
//! (checkpoints, keys and their rotation, proofs).
//!
//! Built on `custos-http`; it knows no other area.
#![warn(missing_docs)]

mod alerts;
mod export;
mod integrity;
mod queries;
mod reports;
mod retention;
mod search;
mod switch;
mod verification;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use custos_http::{AppState, StartError};
use serde_json::Value as Json;
use uuid::Uuid;

pub use reports::{PRECONFIGURED, Preconfigured};
pub use retention::purge;

/// The compliance area's state: the shared application state, and what only this area keeps.
#[derive(Clone)]
pub struct ComplianceState {
    app: AppState,
    own: Arc<Own>,
}

struct Own {
    /// Whether audit log search is on (SPEC §8); kept in the directory's settings.
    search_enabled: AtomicBool,
    /// Export jobs by id: their status while they run (then also in their folder).
    export_jobs: Mutex<HashMap<Uuid, Json>>,
}

impl Deref for ComplianceState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl ComplianceState {
    /// The compliance area over `app`, with the search switch as the directory keeps it.
    pub fn open(app: &AppState) -> Result<ComplianceState, StartError> {
        let own = Arc::new(Own {
            search_enabled: AtomicBool::new(app.audit_search_stored()?),
            export_jobs: Mutex::new(HashMap::new()),
        });
        // Search turned off or on by another node holds here too.
        let following = Arc::downgrade(&own);
        app.on_change(move |app, change| {
            if let Some(own) = following.upgrade() {
                switch::follow(app, &own.search_enabled, change);
            }
        });
        Ok(ComplianceState {
            own,
            app: app.clone(),
        })
    }

    /// The shared application state.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// The routes of the audit API under `/api/audit/…` (but ingest and streams, which are
    /// the SIEM area's).
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/api/audit/records", get(search::search))
            .route("/api/audit/records/{id}", get(search::get))
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
            .route("/api/audit/terms", get(reports::terms))
            .route("/api/audit/subjects/{record}", get(reports::subject))
            .route(
                "/api/audit/retention",
                get(retention::get).put(retention::put),
            )
            .route("/api/audit/retention/run", post(retention::run))
            .route("/api/audit/retention/preview", post(retention::preview))
            .route("/api/audit/settings", get(switch::get).put(switch::put))
            .route(
                "/api/audit/verify",
                get(verification::get).post(verification::start),
            )
            .route("/api/audit/checkpoint", get(integrity::checkpoint))
            .route("/api/audit/key", get(integrity::key))
            .route("/api/audit/keys", get(integrity::keys))
            .route("/api/audit/key/rotate", post(integrity::rotate))
            .route("/api/audit/proofs/inclusion", get(integrity::inclusion))
            .route("/api/audit/proofs/consistency", get(integrity::consistency))
            .with_state(self.clone())
    }

    /// Starts the area's background work: the hourly retention purge, the log's verification
    /// on its interval, interrupted queries and export jobs, scheduled reports, and the alert
    /// detector and notifier.
    pub async fn start(&self) {
        tokio::spawn(retention::purge_periodically(self.clone()));
        if let Some(interval) = self.config.verify_interval {
            tokio::spawn(verification::verify_periodically(self.clone(), interval));
        }
        queries::resume(self);
        export::tidy_jobs(self);
        tokio::spawn(reports::schedule(self.clone()));
        alerts::start(self).await;
    }
}
