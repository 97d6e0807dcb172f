//! Audit log search on and off (SPEC §8): `GET` / `PUT /api/audit/settings`
//! (`{"searchEnabled": bool}`). Turning search off stops every way of reading the trail —
//! search, records, reports, exports, queries — with 409; recording goes on unless auditing
//! itself is off in an instance's settings. Turning it off or on is always recorded
//! (`SetAuditLogSearch`), before it takes effect; only an Audit Manager or a global admin may.

use std::sync::atomic::Ordering;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use serde_json::{Value as Json, json};

use custos_http::AppState;
use custos_http::auth::{audit_manager, audit_reader_caller};
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

use crate::ComplianceState;
use custos_http::answer::answer;

use custos_http::state::AUDIT_SEARCH_SETTING as SEARCH_SETTING;

/// Reads the switch again when another node turned search off or on.
pub(crate) fn follow(
    app: &AppState,
    search_enabled: &std::sync::atomic::AtomicBool,
    change: custos_records::Change<'_>,
) {
    use custos_records::Change;
    if matches!(change, Change::Setting(SEARCH_SETTING) | Change::Anything) {
        match app.audit_search_stored() {
            Ok(enabled) => search_enabled.store(enabled, Ordering::Release),
            Err(error) => {
                tracing::warn!(%error, "the search switch another node changed could not be read")
            }
        }
    }
}

impl ComplianceState {
    /// Whether audit log search is on.
    pub fn search_enabled(&self) -> bool {
        self.own.search_enabled.load(Ordering::Acquire)
    }

    /// Turns audit log search on or off, durably. Call from blocking code.
    fn set_search_enabled(&self, enabled: bool) -> Result<(), AppError> {
        let value = if enabled { "on" } else { "off" };
        self.directory.set_setting(SEARCH_SETTING, value)?;
        self.own.search_enabled.store(enabled, Ordering::Release);
        Ok(())
    }
}

fn settings_json(state: &ComplianceState) -> Json {
    json!({"searchEnabled": state.search_enabled()})
}

/// `GET /api/audit/settings` (Audit Reader and up).
pub(crate) async fn get(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    let result = (|| -> Result<Response, AppError> {
        audit_reader_caller(&state, &headers)?;
        Ok(axum::Json(settings_json(&state)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /api/audit/settings`.
pub(crate) async fn put(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::SetAuditLogSearch, &context);
    let result = async {
        audit_manager(
            &state,
            &mut draft,
            &headers,
            "turn audit log search on or off",
        )?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let object = body
            .as_object()
            .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
        known_properties(object, &["searchEnabled"])?;
        let enabled = object
            .get("searchEnabled")
            .and_then(Json::as_bool)
            .ok_or_else(|| AppError::bad_request("'searchEnabled' must be true or false"))?;
        draft.details = json!({"Old": state.search_enabled(), "New": enabled}).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || worker.set_search_enabled(enabled)).await?;
        Ok::<_, AppError>(axum::Json(settings_json(&state)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}
