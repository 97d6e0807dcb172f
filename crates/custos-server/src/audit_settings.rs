//! Audit log search on and off (SPEC §8): `GET` / `PUT /api/audit/settings`
//! (`{"searchEnabled": bool}`). Turning search off stops every way of reading the trail —
//! search, records, reports, exports, queries — with 409; recording goes on unless auditing
//! itself is off in an instance's settings. Turning it off or on is always recorded
//! (`SetAuditLogSearch`), before it takes effect; only an Audit Manager or a global admin may.

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use serde_json::{Value as Json, json};

use crate::audit::EventDraft;
use crate::auth::{audit_reader_caller, authorize};
use crate::context::RequestContext;
use crate::error::AppError;
use crate::state::{AppState, blocking};
use crate::webapi::answer;

/// The directory setting that keeps whether search is on.
pub(crate) const SEARCH_SETTING: &str = "audit.search";

/// Refuses unless the caller is an Audit Manager (or a global admin); records who tried.
pub(crate) fn audit_manager(
    state: &AppState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
    what: &str,
) -> Result<crate::auth::Caller, AppError> {
    authorize(
        state,
        draft,
        headers,
        |caller| caller.can_manage_audit(state),
        &format!("needs the Audit Manager role to {what}"),
    )
}

fn settings_json(state: &AppState) -> Json {
    json!({"searchEnabled": state.search_enabled()})
}

/// `GET /api/audit/settings` (Audit Reader and up).
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = (|| -> Result<Response, AppError> {
        audit_reader_caller(&state, &headers)?;
        Ok(axum::Json(settings_json(&state)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /api/audit/settings`.
pub(crate) async fn put(
    State(state): State<AppState>,
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
        let body: Json = serde_json::from_slice(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let object = body
            .as_object()
            .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
        if let Some(key) = object.keys().find(|k| *k != "searchEnabled") {
            return Err(AppError::bad_request(format!("unknown property '{key}'")));
        }
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
