//! The internal management tool's API (SPEC §2, §4): support engineers of the service operator
//! (user type `DcAdmin`), let in by a tenant global admin (`POST /api/admin/support/engineers`),
//! reach a customer's instance only through the tool (`custos support …`), and only while the
//! tenant has an open access grant for a ticket of theirs (`POST /api/admin/support/grants`, in
//! the style of Customer Lockbox): every Web API request of an engineer to an instance without
//! one, and every use of the tool for a ticket without one, is refused and recorded.
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

use std::sync::RwLock;

use custos_audit::format_creation_time;
use uuid::Uuid;

use crate::PlatformState;
use custos_http::answer::answer;
use custos_http::auth::authorize;
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::context::RequestContext;
use custos_http::credentials::Caller;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

/// The backend commands a support engineer may run.
const COMMANDS: [&str; 4] = [
    "seal-partition",
    "run-retention",
    "refresh-instance",
    "log-status",
];

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
fn engineer(
    state: &PlatformState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
) -> Result<Caller, AppError> {
    authorize(
        state,
        draft,
        headers,
        |caller| caller.user_type() == UserType::DcAdmin,
        "is not a support engineer; the internal management tool is the operator's",
    )
}

/// Longest a grant lasts, hours; and how long when the admin names no duration.
const GRANT_HOURS_MAX: i64 = 24;
const GRANT_HOURS_DEFAULT: i64 = 8;
/// Most grants kept (the oldest ended ones go first).
const GRANTS_KEPT: usize = 1000;
/// The directory setting that keeps the grants.
const GRANTS_SETTING: &str = "support.grants";

/// A tenant's approval of one support engineer's access to one instance, for one ticket, until
/// it expires or is ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) id: Uuid,
    pub(crate) engineer: Uuid,
    pub(crate) engineer_upn: String,
    pub(crate) ticket: String,
    pub(crate) instance: String,
    pub(crate) approved_by: String,
    pub(crate) opened_us: i64,
    pub(crate) expires_us: i64,
    pub(crate) ended_us: Option<i64>,
}

impl Grant {
    fn is_open(&self, now_us: i64) -> bool {
        self.ended_us.is_none() && now_us < self.expires_us
    }

    pub(crate) fn to_json(&self, now_us: i64) -> Json {
        let status = match (self.ended_us, self.is_open(now_us)) {
            (Some(_), _) => "ended",
            (None, true) => "open",
            (None, false) => "expired",
        };
        json!({
            "id": self.id,
            "engineerId": self.engineer,
            "engineerUpn": self.engineer_upn,
            "ticket": self.ticket,
            "instance": self.instance,
            "approvedBy": self.approved_by,
            "opened": format_creation_time(self.opened_us),
            "expires": format_creation_time(self.expires_us),
            "ended": self.ended_us.map(format_creation_time),
            "status": status,
        })
    }

    fn stored(&self) -> Json {
        json!({
            "id": self.id,
            "engineer": self.engineer,
            "engineerUpn": self.engineer_upn,
            "ticket": self.ticket,
            "instance": self.instance,
            "approvedBy": self.approved_by,
            "openedUs": self.opened_us,
            "expiresUs": self.expires_us,
            "endedUs": self.ended_us,
        })
    }

    fn from_stored(value: &Json) -> Option<Grant> {
        let text = |key: &str| value[key].as_str().map(str::to_string);
        Some(Grant {
            id: Uuid::parse_str(value["id"].as_str()?).ok()?,
            engineer: Uuid::parse_str(value["engineer"].as_str()?).ok()?,
            engineer_upn: text("engineerUpn")?,
            ticket: text("ticket")?,
            instance: text("instance")?,
            approved_by: text("approvedBy")?,
            opened_us: value["openedUs"].as_i64()?,
            expires_us: value["expiresUs"].as_i64()?,
            ended_us: value["endedUs"].as_i64(),
        })
    }
}

/// The tenant's support access grants, kept in the directory's settings and in memory.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    all: RwLock<Vec<Grant>>,
}

impl Grants {
    /// The grants saved in the directory.
    pub(crate) fn load(
        directory: &custos_records::Directory,
    ) -> Result<Grants, custos_records::Error> {
        let all = directory
            .setting(GRANTS_SETTING)?
            .and_then(|text| serde_json::from_str::<Vec<Json>>(&text).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(Grant::from_stored)
            .collect();
        Ok(Grants {
            all: RwLock::new(all),
        })
    }

    /// Reads the grants again when another node changed them.
    pub(crate) fn follow(
        &self,
        directory: &custos_records::Directory,
        change: custos_records::Change<'_>,
    ) -> Result<(), custos_records::Error> {
        use custos_records::Change;
        if matches!(change, Change::Setting(GRANTS_SETTING) | Change::Anything) {
            let stored = Grants::load(directory)?;
            *self.all.write().expect("grants lock") = stored.all.into_inner().expect("grants lock");
        }
        Ok(())
    }

    /// Every grant, newest first.
    pub(crate) fn list(&self) -> Vec<Grant> {
        let mut all = self.all.read().expect("grants lock").clone();
        all.reverse();
        all
    }

    /// An open grant of `engineer` matching the instance and ticket, where named.
    pub(crate) fn open_for(
        &self,
        engineer: Uuid,
        instance: Option<&str>,
        ticket: Option<&str>,
        now_us: i64,
    ) -> Option<Grant> {
        self.all
            .read()
            .expect("grants lock")
            .iter()
            .rev()
            .find(|g| {
                g.engineer == engineer
                    && g.is_open(now_us)
                    && instance.is_none_or(|i| g.instance == i)
                    && ticket.is_none_or(|t| g.ticket == t)
            })
            .cloned()
    }

    /// Changes the grants with `change` and saves them durably (call from blocking code).
    pub(crate) fn change(
        &self,
        directory: &custos_records::Directory,
        change: impl FnOnce(&mut Vec<Grant>),
    ) -> Result<(), AppError> {
        let mut all = self.all.write().expect("grants lock");
        let mut changed = all.clone();
        change(&mut changed);
        while changed.len() > GRANTS_KEPT {
            let oldest_ended = changed
                .iter()
                .position(|g| g.ended_us.is_some())
                .unwrap_or(0);
            changed.remove(oldest_ended);
        }
        let text = Json::Array(changed.iter().map(Grant::stored).collect()).to_string();
        directory.set_setting(GRANTS_SETTING, &text)?;
        *all = changed;
        Ok(())
    }
}

/// Refuses a support engineer's request to `instance` (`None`: any) for `ticket` (`None`: any)
/// unless the tenant has an open grant for it.
pub(crate) fn require_grant(
    state: &PlatformState,
    caller: &Caller,
    instance: Option<&str>,
    ticket: Option<&str>,
) -> Result<Grant, AppError> {
    state
        .own.grants
        .open_for(caller.principal.id, instance, ticket, state.clock.now_us())
        .ok_or_else(|| {
            let what = match (instance, ticket) {
                (Some(i), Some(t)) => format!("to instance '{i}' for ticket '{t}'"),
                (Some(i), None) => format!("to instance '{i}'"),
                (None, Some(t)) => format!("for ticket '{t}'"),
                (None, None) => "at all".to_string(),
            };
            AppError::forbidden(format!(
                "support engineer '{}' has no open access {what}: a tenant global admin approves access per ticket",
                caller.principal.upn
            ))
        })
}

/// Opens a grant (call from blocking code, after its event is durable).
pub(crate) fn open_grant(state: &PlatformState, grant: Grant) -> Result<(), AppError> {
    state
        .own
        .grants
        .change(&state.directory, |all| all.push(grant))
}

/// Ends every open grant of `engineer`, or the one grant `id` (call from blocking code).
pub(crate) fn end_grants(
    state: &PlatformState,
    engineer: Option<Uuid>,
    id: Option<Uuid>,
) -> Result<(), AppError> {
    let now = state.clock.now_us();
    state.own.grants.change(&state.directory, |all| {
        for grant in all.iter_mut() {
            let chosen =
                engineer.is_none_or(|e| grant.engineer == e) && id.is_none_or(|i| grant.id == i);
            if chosen && grant.is_open(now) {
                grant.ended_us = Some(now);
            }
        }
    })
}

/// The duration of a new grant from its body's `hours`, microseconds.
pub(crate) fn grant_duration_us(hours: Option<&Json>) -> Result<i64, AppError> {
    let hours = match hours {
        None | Some(Json::Null) => GRANT_HOURS_DEFAULT,
        Some(value) => value
            .as_i64()
            .filter(|h| (1..=GRANT_HOURS_MAX).contains(h))
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "'hours' must be a whole number from 1 to {GRANT_HOURS_MAX}"
                ))
            })?,
    };
    Ok(hours * 3_600_000_000)
}

/// The instance a request names, which must exist.
fn instance(state: &PlatformState, body: &Map<String, Json>) -> Result<Option<String>, AppError> {
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
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::AccessInternalTool, &context);
    draft.origin = Origin::SupportTool;
    let work = async {
        let caller = engineer(&state, &mut draft, &headers)?;
        let body = custos_http::body::json_object(&body)?;
        known_properties(&body, &["ticket", "instance", "reason"])?;
        let ticket = text(&body, "ticket")?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::bad_request("'ticket' is required: the support case this work is for")
            })?;
        draft.instance = instance(&state, &body)?.unwrap_or_default();
        let named = Some(draft.instance.as_str()).filter(|i| !i.is_empty());
        let grant = require_grant(&state, &caller, named, Some(&ticket))?;
        draft.details = json!({
            "Ticket": ticket,
            "Reason": text(&body, "reason")?,
            "Tool": context.user_agent,
            "GrantId": grant.id,
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
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::BackendCommand, &context);
    draft.origin = Origin::Backend;
    let work = async {
        let caller = engineer(&state, &mut draft, &headers)?;
        let body = custos_http::body::json_object(&body)?;
        known_properties(&body, &["command", "instance", "ticket"])?;
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
        let ticket = text(&body, "ticket")?;
        let grant = require_grant(&state, &caller, instance.as_deref(), ticket.as_deref())?;
        draft.details = json!({
            "Command": command,
            "Ticket": grant.ticket,
            "GrantId": grant.id,
        })
        .to_string();
        // Recorded before it runs.
        state.record(draft.clone()).await?;
        let name = command.clone();
        let worker = state.clone();
        let result = blocking(move || -> Result<Json, AppError> {
            Ok(match command.as_str() {
                "seal-partition" => {
                    worker.seal_partition_blocking()?;
                    json!({"sealed": true, "events": worker.log.len()})
                }
                "run-retention" => {
                    let purged = (worker.own.run_retention)(worker.app())?;
                    json!({"purgedPartitions": purged.len(), "purgedEvents": purged.iter().map(|p| p.events).sum::<u64>()})
                }
                "refresh-instance" => {
                    let name = instance.unwrap_or_default();
                    let found = worker
                        .instance(&name)
                        .ok_or_else(|| AppError::not_found(format!("instance '{name}' does not exist")))?;
                    found.refresh_policy()?;
                    found.refresh_roles()?;
                    worker.own.automations.refresh(&found)?;
                    json!({"refreshed": name})
                }
                _ => {
                    let checkpoint = worker.log.latest_checkpoint()?.map(|(size, _)| size);
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
