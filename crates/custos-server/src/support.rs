//! The internal management tool's API (SPEC §2, §4): support engineers of the service operator
//! (user type `DcAdmin`), let in by a tenant global admin (`POST /api/admin/support/engineers`,
//! in the style of Customer Lockbox), reach a customer's instance only through the tool
//! (`custos support …`).
//!
//! - `POST /api/support/access` `{"ticket", "reason", "instance"?}`: each use of the tool is
//!   recorded first (`AccessInternalTool`, origin `SupportTool`).
//! - Reading and changing records goes through the Web API with the engineer's token; every
//!   such event is the tool's (origin `SupportTool`, user type `DcAdmin`).
//! - `POST /api/support/backend` `{"command", "instance"?, "ticket"?}` runs a backend command
//!   (`BackendCommand`, origin `Backend`): `seal-partition`, `run-retention`,
//!   `refresh-instance`, `log-status`.

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, Origin, UserType};
use serde_json::{Map, Value as Json, json};

use crate::audit::EventDraft;
use crate::auth::authorize;
use crate::context::RequestContext;
use crate::error::AppError;
use crate::state::{AppState, blocking};
use crate::webapi::answer;

/// The backend commands a support engineer may run.
const COMMANDS: [&str; 4] = [
    "seal-partition",
    "run-retention",
    "refresh-instance",
    "log-status",
];

fn body_object(body: &[u8]) -> Result<Map<String, Json>, AppError> {
    match serde_json::from_slice(body) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(AppError::bad_request("the body must be a JSON object")),
        Err(e) => Err(AppError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// A text field of at most 500 characters; `None` when absent.
fn text(body: &Map<String, Json>, key: &str) -> Result<Option<String>, AppError> {
    match body.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.chars().count() <= 500 => Ok(Some(s.trim().to_string())),
        Some(_) => Err(AppError::bad_request(format!(
            "'{key}' must be a string of at most 500 characters"
        ))),
    }
}

/// Refuses unless the caller is a support engineer; names them in the draft.
fn engineer(state: &AppState, draft: &mut EventDraft, headers: &HeaderMap) -> Result<(), AppError> {
    authorize(
        state,
        draft,
        headers,
        |caller| caller.user_type() == UserType::DcAdmin,
        "is not a support engineer; the internal management tool is the operator's",
    )
    .map(|_| ())
}

/// The instance a request names, which must exist.
fn instance(state: &AppState, body: &Map<String, Json>) -> Result<Option<String>, AppError> {
    match text(body, "instance")? {
        None => Ok(None),
        Some(name) if state.instance(&name).is_some() => Ok(Some(name)),
        Some(name) => Err(AppError::not_found(format!(
            "instance '{name}' does not exist"
        ))),
    }
}

/// `POST /api/support/access`.
pub(crate) async fn access(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::AccessInternalTool, &context);
    draft.origin = Origin::SupportTool;
    let work = async {
        engineer(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        let ticket = text(&body, "ticket")?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::bad_request("'ticket' is required: the support case this work is for")
            })?;
        draft.instance = instance(&state, &body)?.unwrap_or_default();
        draft.details = json!({
            "Ticket": ticket,
            "Reason": text(&body, "reason")?,
            "Tool": context.user_agent,
        })
        .to_string();
        state.record(draft.clone()).await?;
        Ok(axum::Json(json!({"ticket": ticket, "recorded": true})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}

/// `POST /api/support/backend`.
pub(crate) async fn backend(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::BackendCommand, &context);
    draft.origin = Origin::Backend;
    let work = async {
        engineer(&state, &mut draft, &headers)?;
        let body = body_object(&body)?;
        let command = text(&body, "command")?.unwrap_or_default();
        if !COMMANDS.contains(&command.as_str()) {
            return Err(AppError::bad_request(format!(
                "'command' must be one of {}",
                COMMANDS.join(", ")
            )));
        }
        let instance = instance(&state, &body)?;
        if command == "refresh-instance" && instance.is_none() {
            return Err(AppError::bad_request("refresh-instance needs 'instance'"));
        }
        draft.instance = instance.clone().unwrap_or_default();
        draft.details = json!({
            "Command": command,
            "Ticket": text(&body, "ticket")?,
        })
        .to_string();
        // Recorded before it runs.
        state.record(draft.clone()).await?;
        let name = command.clone();
        let worker = state.clone();
        let result = blocking(move || -> Result<Json, AppError> {
            Ok(match command.as_str() {
                "seal-partition" => {
                    worker.log.seal_active()?;
                    json!({"sealed": true, "events": worker.log.len()})
                }
                "run-retention" => {
                    let purged = crate::retention::purge(&worker)?;
                    json!({"purgedPartitions": purged.len(), "purgedEvents": purged.iter().map(|p| p.events).sum::<u64>()})
                }
                "refresh-instance" => {
                    let name = instance.unwrap_or_default();
                    let found = worker
                        .instance(&name)
                        .ok_or_else(|| AppError::not_found(format!("instance '{name}' does not exist")))?;
                    found.refresh_policy()?;
                    found.refresh_roles()?;
                    found.refresh_automations()?;
                    json!({"refreshed": name})
                }
                _ => {
                    let checkpoint = worker.log.checkpoint()?.map(|(size, _)| size);
                    json!({"events": worker.log.len(), "signedTreeSize": checkpoint})
                }
            })
        })
        .await?;
        Ok(axum::Json(json!({"command": name, "result": result})).into_response())
    }
    .await;
    answer(&state, draft, work).await
}
