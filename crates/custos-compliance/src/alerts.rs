//! Alerts (SPEC §7): rules an Audit Manager sets — "a user viewed or exported more than N
//! records (of an entity) in M minutes", or "any event of these operations (by these user
//! types)", such as a bulk delete by an admin — evaluated on the log as it grows. An alert is
//! a record in the log (`AlertTriggered`, by the system) and a notification to the rule's
//! webhook.
//!
//! Two followers read the log with cursors kept in the directory's settings, so neither ever
//! blocks or slows a request, and a restart loses nothing: the detector reads every new event
//! (and starts at the end of the log the first time, not at its history); the notifier reads
//! the `AlertTriggered` events and posts each to its webhook, retrying with back-off, at least
//! once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation, UserType, format_creation_time};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use custos_http::answer::answer;
use custos_http::auth::audit_manager;
use custos_http::auth::audit_reader_caller;
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::webhook::{Outbox, cursor, init_cursor};

const RULES_SETTING: &str = "audit.alerts";
const DETECTOR_CURSOR: &str = "audit.alerts.cursor";
const NOTIFIER_CURSOR: &str = "audit.alerts.notified";
/// Most rules a tenant keeps.
const RULES_MAX: usize = 100;
/// Events the detector reads at a time.
const BATCH: usize = 1000;
/// How often the detector looks for new events when idle.
const POLL: Duration = Duration::from_millis(500);
/// Triggering event ids an alert lists at most.
const TRIGGERS_LISTED: usize = 50;

fn rules(state: &ComplianceState) -> Result<Vec<Json>, AppError> {
    Ok(state
        .directory
        .setting(RULES_SETTING)?
        .and_then(|t| serde_json::from_str::<Vec<Json>>(&t).ok())
        .unwrap_or_default())
}

fn strings(object: &Map<String, Json>, key: &str) -> Result<Vec<String>, AppError> {
    match object.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    AppError::bad_request(format!("'{key}' must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(AppError::bad_request(format!(
            "'{key}' must be a list of strings"
        ))),
    }
}

/// Checks a rule's body; returns the rule as stored (without its id).
fn parse_rule(state: &ComplianceState, body: &Json) -> Result<Map<String, Json>, AppError> {
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    let known = [
        "name",
        "kind",
        "operations",
        "entity",
        "threshold",
        "windowMinutes",
        "userTypes",
        "webhook",
        "enabled",
    ];
    known_properties(object, &known)?;
    // Every property given is of its type, whether or not the rule's kind uses it: a value
    // of the wrong type is a mistake to name, not something to store as a default.
    for (key, value) in object {
        let typed = match key.as_str() {
            "operations" | "userTypes" => value.is_array(),
            "threshold" | "windowMinutes" => value.is_u64(),
            "enabled" => value.is_boolean(),
            _ => value.is_string(),
        };
        if !typed && !value.is_null() {
            return Err(AppError::bad_request(format!(
                "'{key}' must be {}",
                match key.as_str() {
                    "operations" | "userTypes" => "a list of strings",
                    "threshold" | "windowMinutes" => "a whole number",
                    "enabled" => "true or false",
                    _ => "a string",
                }
            )));
        }
    }
    let name = object
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("")
        .trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::bad_request(
            "a rule needs a 'name' of 1 to 100 characters",
        ));
    }
    let webhook = object.get("webhook").and_then(Json::as_str).unwrap_or("");
    if !webhook.is_empty() {
        state.outbound().check_url(webhook, "webhook")?;
    }
    let mut rule = Map::new();
    rule.insert("name".into(), json!(name));
    rule.insert("webhook".into(), json!(webhook));
    rule.insert(
        "enabled".into(),
        json!(
            object
                .get("enabled")
                .and_then(Json::as_bool)
                .unwrap_or(true)
        ),
    );
    match object.get("kind").and_then(Json::as_str) {
        Some("volume") => {
            let operations = strings(object, "operations")?;
            let operations = if operations.is_empty() {
                vec![
                    "Retrieve".to_string(),
                    "RetrieveMultiple".into(),
                    "ExportToExcel".into(),
                ]
            } else {
                operations
            };
            let threshold = object
                .get("threshold")
                .and_then(Json::as_u64)
                .filter(|t| *t >= 1)
                .ok_or_else(|| {
                    AppError::bad_request("'threshold' must be a number of records, at least 1")
                })?;
            let window = object
                .get("windowMinutes")
                .and_then(Json::as_u64)
                .filter(|w| (1..=1440).contains(w))
                .ok_or_else(|| AppError::bad_request("'windowMinutes' must be 1 to 1440"))?;
            rule.insert("kind".into(), json!("volume"));
            rule.insert("operations".into(), json!(operations));
            rule.insert(
                "entity".into(),
                json!(object.get("entity").and_then(Json::as_str).unwrap_or("")),
            );
            rule.insert("threshold".into(), json!(threshold));
            rule.insert("windowMinutes".into(), json!(window));
        }
        Some("operation") => {
            let operations = strings(object, "operations")?;
            if operations.is_empty() {
                return Err(AppError::bad_request(
                    "an operation rule needs 'operations'",
                ));
            }
            let user_types = strings(object, "userTypes")?;
            if let Some(bad) = user_types.iter().find(|t| UserType::parse(t).is_none()) {
                return Err(AppError::bad_request(format!("unknown user type '{bad}'")));
            }
            rule.insert("kind".into(), json!("operation"));
            rule.insert("operations".into(), json!(operations));
            rule.insert("userTypes".into(), json!(user_types));
        }
        _ => return Err(AppError::bad_request("'kind' must be volume or operation")),
    }
    Ok(rule)
}

/// `GET /api/audit/alerts`: the rules.
pub(crate) async fn list(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    let result = (|| -> Result<Response, AppError> {
        audit_reader_caller(&state, &headers)?;
        Ok(axum::Json(json!({"value": rules(&state)?})).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/audit/alerts`: a new rule.
pub(crate) async fn create(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::SaveAlertRule, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "set alert rules")?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let mut rule = parse_rule(&state, &body)?;
        let mut all = rules(&state)?;
        if all.len() >= RULES_MAX {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("at most {RULES_MAX} alert rules"),
            ));
        }
        rule.insert("id".into(), json!(Uuid::new_v4()));
        rule.insert("createdBy".into(), json!(draft.user_upn));
        let rule = Json::Object(rule);
        all.push(rule.clone());
        draft.details = rule.to_string();
        state.record(draft.clone()).await?;
        state
            .save_setting(RULES_SETTING.into(), Json::Array(all).to_string())
            .await?;
        Ok::<_, AppError>((StatusCode::CREATED, axum::Json(rule)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// `DELETE /api/audit/alerts/{id}`.
pub(crate) async fn delete(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::DeleteAlertRule, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "delete alert rules")?;
        let mut all = rules(&state)?;
        let index = all
            .iter()
            .position(|r| r["id"].as_str() == Some(id.as_str()))
            .ok_or_else(|| AppError::not_found(format!("no alert rule '{id}'")))?;
        draft.details = all.remove(index).to_string();
        state.record(draft.clone()).await?;
        state
            .save_setting(RULES_SETTING.into(), Json::Array(all).to_string())
            .await?;
        Ok::<_, AppError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// The records an event counts toward a volume rule (its record ids, or its result count).
fn volume(event: &AuditEvent) -> u64 {
    (event.record_ids.len() as u64).max(event.result_count)
}

/// An event in a volume window: its time, the records it counts, its id.
type Counted = (i64, u64, Uuid);

/// The sliding windows of volume rules: per (rule id, user), the recent events.
#[derive(Default)]
struct Windows {
    open: HashMap<(String, String), VecDeque<Counted>>,
}

impl Windows {
    /// Adds `event` to its window; returns (records, triggering events) when the rule's
    /// threshold is crossed (the window then starts over, so one burst is one alert).
    fn add(&mut self, rule: &Json, event: &AuditEvent) -> Option<(u64, Vec<Uuid>)> {
        let window_us = rule["windowMinutes"].as_i64().unwrap_or(1) * 60_000_000;
        let key = (
            rule["id"].as_str().unwrap_or_default().to_string(),
            event.user_upn.to_lowercase(),
        );
        let events = self.open.entry(key).or_default();
        events.push_back((event.creation_time_us, volume(event), event.id));
        while events
            .front()
            .is_some_and(|(time, _, _)| *time <= event.creation_time_us - window_us)
        {
            events.pop_front();
        }
        let total: u64 = events.iter().map(|(_, n, _)| n).sum();
        if total <= rule["threshold"].as_u64().unwrap_or(u64::MAX) {
            return None;
        }
        let ids = events
            .iter()
            .rev()
            .take(TRIGGERS_LISTED)
            .map(|(_, _, id)| *id)
            .collect();
        events.clear();
        Some((total, ids))
    }
}

fn listed(rule: &Json, key: &str, value: &str) -> bool {
    rule[key].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.eq_ignore_ascii_case(value)))
    })
}

/// The alerts `event` raises under `rules`: (rule, details).
fn evaluate(rules: &[Json], windows: &mut Windows, event: &AuditEvent) -> Vec<(Json, Json)> {
    let mut alerts = Vec::new();
    if event.operation == Operation::AlertTriggered.as_str() {
        return alerts;
    }
    for rule in rules
        .iter()
        .filter(|r| r["enabled"].as_bool().unwrap_or(true))
    {
        if !listed(rule, "operations", &event.operation) {
            continue;
        }
        match rule["kind"].as_str() {
            Some("volume") => {
                let entity = rule["entity"].as_str().unwrap_or("");
                if !entity.is_empty() && !entity.eq_ignore_ascii_case(&event.entity_name) {
                    continue;
                }
                if let Some((records, ids)) = windows.add(rule, event) {
                    alerts.push((
                        rule.clone(),
                        json!({
                            "Records": records,
                            "WindowMinutes": rule["windowMinutes"],
                            "Entity": entity,
                            "TriggeringEvents": ids,
                        }),
                    ));
                }
            }
            Some("operation") => {
                let types = rule["userTypes"].as_array().map_or(0, Vec::len);
                if types == 0 || listed(rule, "userTypes", event.user_type.as_str()) {
                    alerts.push((rule.clone(), json!({"TriggeringEvents": [event.id]})));
                }
            }
            _ => {}
        }
    }
    alerts
}

/// Sets the followers' cursors the first time the server runs with alerts: both at the end
/// of the log (alerts are about what comes, not about the history). Call before the followers
/// start, from blocking code.
pub(crate) fn init_cursors(state: &ComplianceState) -> Result<(), AppError> {
    for key in [DETECTOR_CURSOR, NOTIFIER_CURSOR] {
        init_cursor(state, key)?;
    }
    Ok(())
}

/// Starts the detector and the notifier, once their cursors are set.
pub(crate) async fn start(state: &ComplianceState) {
    let followers = state.clone();
    match blocking(move || init_cursors(&followers)).await {
        Ok(()) => {
            tokio::spawn(detect(state.clone()));
            tokio::spawn(custos_http::webhook::follow(state.app().clone(), NOTIFIER));
        }
        Err(error) => {
            tracing::error!(error = %error.message, "alerts are off: their cursors could not be set");
        }
    }
}

/// Reads new events and raises the alerts they trigger, for as long as the server runs.
pub(crate) async fn detect(state: ComplianceState) {
    let mut windows = Windows::default();
    loop {
        // One node of a cluster detects (`Directory::leads`); a node that takes over starts
        // its windows empty, as after a restart.
        if !state.directory.leads() {
            windows = Windows::default();
            tokio::time::sleep(POLL).await;
            continue;
        }
        match detect_once(&state, &mut windows).await {
            Ok(0) => tokio::time::sleep(POLL).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %error.message, "alert detection failed; trying again");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}

/// One pass of the detector; returns the events it read.
async fn detect_once(state: &ComplianceState, windows: &mut Windows) -> Result<usize, AppError> {
    let worker = state.clone();
    let (from, rules, events) = blocking(move || -> Result<_, AppError> {
        let from = cursor(&worker, DETECTOR_CURSOR)?;
        Ok((from, rules(&worker)?, worker.log.read_from(from, BATCH)?))
    })
    .await?;
    let Some((last, _)) = events.last() else {
        return Ok(0);
    };
    let next = last + 1;
    for (_, event) in &events {
        for (rule, details) in evaluate(&rules, windows, event) {
            let mut draft = state.system_draft(Operation::AlertTriggered, &event.instance);
            let mut details = details;
            details["Rule"] = rule["name"].clone();
            details["RuleId"] = rule["id"].clone();
            details["Kind"] = rule["kind"].clone();
            details["User"] = json!(event.user_upn);
            details["Webhook"] = rule["webhook"].clone();
            draft.details = details.to_string();
            draft.entity_name = event.entity_name.clone();
            draft.entity_category = event.entity_category;
            draft.result_count = details["Records"].as_u64().unwrap_or(1);
            state.record(draft).await?;
        }
    }
    let worker = state.clone();
    blocking(move || {
        worker
            .directory
            .set_setting(DETECTOR_CURSOR, &next.to_string())
            .map_err(AppError::from)
    })
    .await?;
    debug_assert!(next > from, "the cursor moves forward");
    Ok(events.len())
}

/// The notifier: every `AlertTriggered` event to its rule's webhook.
pub(crate) const NOTIFIER: Outbox = Outbox {
    cursor: NOTIFIER_CURSOR,
    operations: &[Operation::AlertTriggered],
    user_agent: "custos-alerts",
    call: alert_call,
};

/// An alert's webhook and the body posted to it.
fn alert_call(alert: &AuditEvent) -> Option<(String, Json)> {
    let details: Json = serde_json::from_str(&alert.details).unwrap_or(Json::Null);
    let webhook = details["Webhook"]
        .as_str()
        .filter(|w| !w.is_empty())?
        .to_string();
    let body = json!({
        "alert": details,
        "record": custos_audit::event_value(alert),
        "createdDateTime": format_creation_time(alert.creation_time_us),
    });
    Some((webhook, body))
}
