//! Retention settings (SPEC §8) and the purge that applies them: `GET` / `PUT
//! /api/audit/retention` (Audit Manager to change, always audited as `SetRetention`),
//! `POST /api/audit/retention/run`, and the hourly background purge.
//!
//! The tenant's default and its policies are stored as JSON in the directory's settings; each
//! instance's `auditretentionperiodv2` is the default for that instance's events.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{
    KEEP_FOREVER, Operation, PurgedPartition, RetentionPolicy, RetentionRule, format_creation_time,
};
use custos_records::{ORGANIZATION_ENTITY, Value};
use serde_json::{Value as Json, json};

use custos_http::AppState;
use custos_http::auth::audit_manager;
use custos_http::auth::audit_reader_caller;
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

use crate::ComplianceState;
use custos_http::answer::answer;

const SETTING_KEY: &str = "audit.retention";
/// Days a tenant keeps events by default.
const DEFAULT_DAYS: i64 = 90;
/// Most policies a tenant may have (the Microsoft 365 limit).
const POLICIES_MAX: usize = 50;
/// Longest policy name, in characters.
const POLICY_NAME_CHARS_MAX: usize = 64;
/// How often the background purge runs.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// What a retention policy may say.
const POLICY_KEYS: [&str; 5] = ["name", "recordTypes", "operations", "users", "days"];

fn strings(value: &Json, key: &str) -> Result<Vec<String>, AppError> {
    match value.get(key) {
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

fn days(value: &Json, key: &str) -> Result<i64, AppError> {
    let days = value
        .get(key)
        .and_then(Json::as_i64)
        .ok_or_else(|| AppError::bad_request(format!("'{key}' must be a whole number of days")))?;
    if days != KEEP_FOREVER && !(1..=365_000).contains(&days) {
        return Err(AppError::bad_request(format!(
            "'{key}' must be -1 (forever) or 1 to 365000 days"
        )));
    }
    Ok(days)
}

/// Reads the settings body (`{"defaultDays", "policies": [{"name", "recordTypes", "operations", "users", "days"}]}`).
fn parse(body: &Json) -> Result<(i64, Vec<RetentionRule>), AppError> {
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    known_properties(object, &["defaultDays", "policies"])?;
    let default_days = days(body, "defaultDays")?;
    let policies = match body.get("policies") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.clone(),
        Some(_) => return Err(AppError::bad_request("'policies' must be a list")),
    };
    if policies.len() > POLICIES_MAX {
        return Err(AppError::bad_request(format!(
            "at most {POLICIES_MAX} policies"
        )));
    }
    let mut rules = Vec::new();
    for policy in &policies {
        let object = policy
            .as_object()
            .ok_or_else(|| AppError::bad_request("every policy must be a JSON object"))?;
        known_properties(object, &POLICY_KEYS)?;
        let name = policy
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() || name.chars().count() > POLICY_NAME_CHARS_MAX {
            return Err(AppError::bad_request(format!(
                "every policy needs a 'name' of 1 to {POLICY_NAME_CHARS_MAX} characters"
            )));
        }
        let rule = RetentionRule {
            name,
            record_types: strings(policy, "recordTypes")?,
            operations: strings(policy, "operations")?,
            users: strings(policy, "users")?,
            days: days(policy, "days")?,
        };
        if rule.record_types.is_empty() && rule.operations.is_empty() && rule.users.is_empty() {
            return Err(AppError::bad_request(format!(
                "policy '{}' must name record types, operations or users",
                rule.name
            )));
        }
        rules.push(rule);
    }
    Ok((default_days, rules))
}

fn to_json(default_days: i64, rules: &[RetentionRule]) -> Json {
    let policies: Vec<Json> = rules
        .iter()
        .map(|r| json!({"name": r.name, "recordTypes": r.record_types, "operations": r.operations, "users": r.users, "days": r.days}))
        .collect();
    json!({"defaultDays": default_days, "policies": policies})
}

/// The stored settings (the default when none were saved).
fn stored(state: &AppState) -> Result<(i64, Vec<RetentionRule>), AppError> {
    match state.directory.setting(SETTING_KEY)? {
        None => Ok((DEFAULT_DAYS, Vec::new())),
        Some(text) => {
            let json: Json = serde_json::from_str(&text).map_err(|e| {
                AppError::new(
                    custos_http::ErrorCode::Internal,
                    format!("stored retention: {e}"),
                )
            })?;
            parse(&json)
        }
    }
}

/// The policy in force: the tenant's settings plus each instance's `auditretentionperiodv2`.
pub(crate) fn policy(state: &AppState) -> Result<RetentionPolicy, AppError> {
    let (default_days, rules) = stored(state)?;
    policy_of(state, default_days, rules)
}

/// The policy `default_days` and `rules` would make, with each instance's own default.
fn policy_of(
    state: &AppState,
    default_days: i64,
    rules: Vec<RetentionRule>,
) -> Result<RetentionPolicy, AppError> {
    let mut instance_days = HashMap::new();
    let instances: Vec<_> = state
        .instances
        .read()
        .expect("instances lock")
        .values()
        .cloned()
        .collect();
    for instance in instances {
        let org = instance
            .store
            .retrieve(ORGANIZATION_ENTITY, instance.organization_id)?;
        if let Some(Value::Integer(days)) = org.values.get("auditretentionperiodv2") {
            instance_days.insert(instance.name.clone(), *days);
        }
    }
    Ok(RetentionPolicy {
        default_days,
        instance_days,
        rules,
    })
}

/// Deletes expired partitions now; each deletion is recorded and signed first (the log states
/// the range, the policy and the ranges purged before in the event's `Details`). On a cluster
/// node the purge events are what this does: they go through the audit stream, and every
/// audit node deletes the partitions they claim once a signed checkpoint covers them
/// (`AuditLog::carry_out_purges`, docs/scale-out.md); the partitions claimed are returned.
pub fn purge(state: &AppState) -> Result<Vec<PurgedPartition>, AppError> {
    let policy = policy(state)?;
    let describe = |partition: &PurgedPartition| {
        let mut draft = state.system_draft(Operation::PurgeAuditLog, "");
        draft.result_count = partition.events;
        state.finish(draft)
    };
    let now_us = state.clock.now_us();
    if state.in_cluster() {
        let (claimed, events): (Vec<PurgedPartition>, Vec<_>) = state
            .log
            .purge_claims(now_us, &policy, &describe)?
            .into_iter()
            .unzip();
        state.append_events_blocking(events)?;
        return Ok(claimed);
    }
    Ok(state.log.purge_expired(now_us, &policy, &describe)?)
}

/// Runs the purge every hour for as long as the server runs.
pub(crate) async fn purge_periodically(state: ComplianceState) {
    loop {
        let worker = state.clone();
        // One node of a cluster purges (`Directory::leads`).
        if state.directory.leads()
            && let Err(error) = blocking(move || purge(&worker)).await
        {
            tracing::error!(error = %error.message, "retention purge failed; it runs again in an hour");
        }
        tokio::time::sleep(PURGE_INTERVAL).await;
    }
}

fn partitions_json(purged: &[PurgedPartition]) -> Json {
    Json::Array(
        purged
            .iter()
            .map(|p| json!({"partition": p.segment, "firstSeq": p.first_seq, "events": p.events, "oldestEvent": format_creation_time(p.oldest_us), "newestEvent": format_creation_time(p.newest_us)}))
            .collect(),
    )
}

/// `GET /api/audit/retention`.
pub(crate) async fn get(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    let result = (|| -> Result<Response, AppError> {
        audit_reader_caller(&state, &headers)?;
        let (default_days, rules) = stored(&state)?;
        Ok(axum::Json(to_json(default_days, &rules)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT /api/audit/retention`: always recorded as `SetRetention`, before it takes effect.
pub(crate) async fn put(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::SetRetention, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "change retention")?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let (default_days, rules) = parse(&body)?;
        let (old_days, old_rules) = stored(&state)?;
        let new = to_json(default_days, &rules);
        draft.details = json!({"Old": to_json(old_days, &old_rules), "New": new}).to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        let text = new.to_string();
        blocking(move || worker.directory.set_setting(SETTING_KEY, &text)).await?;
        Ok(axum::Json(new).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// `POST /api/audit/retention/preview` with settings as `PUT` takes them: what they would
/// delete now — `{"partitions", "events"}` — deleting nothing (the console's confirmation
/// step names it before a change that deletes).
pub(crate) async fn preview(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let (default_days, rules) = parse(&body)?;
        let worker = state.clone();
        let (partitions, events) = blocking(move || {
            let policy = policy_of(&worker, default_days, rules)?;
            Ok::<_, AppError>(worker.log.expiring(worker.clock.now_us(), &policy)?)
        })
        .await?;
        Ok::<_, AppError>(
            axum::Json(json!({"partitions": partitions, "events": events})).into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/audit/retention/run`: purge expired partitions now.
pub(crate) async fn run(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::PurgeAuditLog, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "run retention")?;
        let worker = state.clone();
        let purged = blocking(move || purge(&worker)).await?;
        Ok(axum::Json(json!({"purged": partitions_json(&purged)})).into_response())
    }
    .await;
    answer(&state, draft, result).await
}
