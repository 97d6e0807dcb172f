//! The records platform (SPEC §3, §2): the OData Web API of each instance (records, metadata,
//! customization, security, solutions, bulk work), the admin center of the tenant, processes
//! and plug-ins, and the support tool by which support engineers reach an instance.
//!
//! Built on `custos-http`; it knows no other area. The one thing it asks of compliance — the
//! support tool's `run-retention` backend command — comes in as a function when the server
//! opens it ([`RunRetention`]).
#![warn(missing_docs)]

mod admin;
mod automation;
mod support;
mod webapi;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use custos_audit::PurgedPartition;
use custos_http::{AppError, AppState, StartError};

/// Runs retention now (the compliance area's purge), for the support tool's `run-retention`.
pub type RunRetention = fn(&AppState) -> Result<Vec<PurgedPartition>, AppError>;

/// The records platform's state: the shared application state, and what only this area keeps.
#[derive(Clone)]
pub struct PlatformState {
    app: AppState,
    own: Arc<Own>,
}

struct Own {
    /// The tenant's support access grants (Customer Lockbox style).
    grants: support::Grants,
    /// The active processes and plug-in steps of each instance.
    automations: automation::Automations,
    /// Compliance's purge, for the support tool.
    run_retention: RunRetention,
}

impl Deref for PlatformState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl PlatformState {
    /// The platform over `app`: its support grants read from the directory; `run_retention` is
    /// what the support tool's `run-retention` command runs.
    pub fn open(app: &AppState, run_retention: RunRetention) -> Result<PlatformState, StartError> {
        let own = Arc::new(Own {
            grants: support::Grants::load(&app.directory)?,
            automations: automation::Automations::default(),
            run_retention,
        });
        // Another node's changes: support grants given or ended, processes and plug-ins
        // written (they are read again on next use).
        let following = Arc::downgrade(&own);
        app.on_change(move |app, change| {
            let Some(own) = following.upgrade() else {
                return;
            };
            if let Err(error) = own.grants.follow(&app.directory, change) {
                tracing::warn!(%error, "the support grants another node changed could not be read");
            }
            own.automations.follow(app, change);
        });
        Ok(PlatformState {
            own,
            app: app.clone(),
        })
    }

    /// The shared application state.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// The routes of the Web API (`/{instance}/api/data/v9.2/…`), the admin center
    /// (`/api/admin/…`) and the support tool (`/api/support/…`).
    pub fn routes(&self) -> Router {
        let api_root = "/{instance}/api/data/v9.2";
        Router::new()
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
            .route(api_root, any(webapi::handle))
            .route(&format!("{api_root}/"), any(webapi::handle))
            .route(&format!("{api_root}/{{*rest}}"), any(webapi::handle))
            .with_state(self.clone())
    }

    /// Starts the area's background work: delivering the process and plug-in webhooks.
    pub async fn start(&self) {
        automation::start(self).await;
    }
}
