//! The audit search API (SPEC §6 and §13): `GET /api/audit/records` and
//! `GET /api/audit/records/{id}`, for Audit Readers, Audit Managers and global admins. Every
//! search is itself recorded (`SearchAuditLog`), as an auditor's reading is a data access too.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation, Origin, ResultStatus, SearchQuery};
use serde_json::{Map, Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::audit::EventDraft;
use crate::auth::authenticate;
use crate::context::RequestContext;
use crate::error::AppError;
use crate::state::AppState;
use crate::state::blocking;
use crate::webapi::refuse;

/// Default and largest page of a synchronous search.
const TOP_DEFAULT: usize = 100;
const TOP_MAX: usize = 1000;
/// A search without `start` looks back this far (the default retention).
const DEFAULT_LOOKBACK_US: i64 = 90 * 24 * 3600 * 1_000_000;

fn format_time(us: i64) -> String {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        time.year(),
        time.month() as u8,
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.microsecond()
    )
}

fn json_or_text(text: &Option<String>) -> Json {
    match text {
        None => Json::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
    }
}

/// The API JSON of one audit record (SPEC §5 names).
pub(crate) fn event_json(event: &AuditEvent) -> Json {
    let changes: Vec<Json> = event
        .changes
        .iter()
        .map(|c| json!({"Attribute": c.attribute, "Old": json_or_text(&c.old), "New": json_or_text(&c.new)}))
        .collect();
    let details = if event.details.is_empty() {
        Json::Null
    } else {
        json_or_text(&Some(event.details.clone()))
    };
    let mut out = Map::new();
    for (key, value) in [
        ("Id", json!(event.id)),
        ("CreationTime", json!(format_time(event.creation_time_us))),
        ("TenantId", json!(event.tenant_id)),
        ("Instance", json!(event.instance)),
        ("InstanceUrl", json!(event.instance_url)),
        ("Workload", json!(event.workload)),
        ("RecordType", json!(event.record_type)),
        ("Operation", json!(event.operation)),
        ("Category", json!(event.category)),
        ("UserId", json!(event.user_id)),
        ("UserUpn", json!(event.user_upn)),
        ("UserType", json!(event.user_type.code())),
        ("CallerId", json!(event.caller_id)),
        ("ClientIP", json!(event.client_ip)),
        ("UserAgent", json!(event.user_agent)),
        ("Origin", json!(event.origin.as_str())),
        ("CorrelationId", json!(event.correlation_id)),
        ("SessionId", json!(event.session_id)),
        ("ClientRequestId", json!(event.client_request_id)),
        ("ResultStatus", json!(event.result_status.as_str())),
        ("ErrorCode", json!(event.error_code)),
        ("EntityName", json!(event.entity_name)),
        ("EntityCategory", json!(event.entity_category.as_str())),
        ("RecordIds", json!(event.record_ids)),
        ("Query", json!(event.query)),
        ("ResultCount", json!(event.result_count)),
        ("Changes", Json::Array(changes)),
        ("Details", details),
    ] {
        out.insert(key.into(), value);
    }
    Json::Object(out)
}

fn parse_time(name: &str, text: &str) -> Result<i64, AppError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339))
        .map_err(|_| {
            AppError::bad_request(format!(
                "'{name}' must be an ISO 8601 date or date-time, got '{text}'"
            ))
        })?;
    Ok((parsed.unix_timestamp_nanos() / 1000) as i64)
}

/// Reads the search filters of the query string.
fn parse_search(pairs: &[(String, String)], now_us: i64) -> Result<SearchQuery, AppError> {
    let mut query = SearchQuery {
        start_us: now_us - DEFAULT_LOOKBACK_US,
        end_us: i64::MAX,
        top: TOP_DEFAULT,
        ..Default::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            "start" => query.start_us = parse_time(name, value)?,
            "end" => query.end_us = parse_time(name, value)?,
            "operation" => query.operations.push(value.clone()),
            "user" => query.users.push(value.clone()),
            "instance" => query.instances.push(value.clone()),
            "entity" => query.entities.push(value.clone()),
            "recordId" => {
                query.record_ids.push(Uuid::parse_str(value).map_err(|_| {
                    AppError::bad_request(format!("recordId '{value}' is not a GUID"))
                })?)
            }
            "ip" => query.ips.push(value.clone()),
            "origin" => query.origins.push(
                Origin::parse(value)
                    .ok_or_else(|| AppError::bad_request(format!("unknown origin '{value}'")))?,
            ),
            "status" => query.statuses.push(
                ResultStatus::parse(value)
                    .ok_or_else(|| AppError::bad_request(format!("unknown status '{value}'")))?,
            ),
            "recordType" => query.record_types.push(value.clone()),
            "workload" => query.workloads.push(value.clone()),
            "q" => query.text = Some(value.clone()).filter(|t| !t.is_empty()),
            "top" => {
                let top: usize = value.parse().map_err(|_| {
                    AppError::bad_request(format!("top must be a number, got '{value}'"))
                })?;
                if !(1..=TOP_MAX).contains(&top) {
                    return Err(AppError::bad_request(format!(
                        "top must be between 1 and {TOP_MAX}"
                    )));
                }
                query.top = top;
            }
            "skiptoken" => {
                query.before_seq =
                    Some(value.parse().map_err(|_| {
                        AppError::bad_request(format!("invalid skiptoken '{value}'"))
                    })?)
            }
            other => {
                return Err(AppError::bad_request(format!(
                    "unknown search parameter '{other}'"
                )));
            }
        }
    }
    if query.start_us >= query.end_us {
        return Err(AppError::bad_request("'start' must be before 'end'"));
    }
    Ok(query)
}

async fn audit_reader(
    state: &AppState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    let caller = authenticate(state, headers)?;
    draft.set_caller(&caller);
    if !caller.can_read_audit(state) {
        return Err(AppError::forbidden(format!(
            "user '{}' needs the Audit Reader role to search the audit log",
            caller.principal.upn
        )));
    }
    Ok(())
}

/// `GET /api/audit/records`.
pub(crate) async fn search(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    draft.query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let query = parse_search(&pairs, state.clock.now_us())?;
        let log = state.log.clone();
        let page = blocking(move || log.search(&query)).await?;
        let mut recorded = draft.clone();
        recorded.result_count = page.events.len() as u64;
        state.record(recorded).await?;
        let mut body = Map::new();
        body.insert(
            "value".into(),
            Json::Array(page.events.iter().map(|(_, e)| event_json(e)).collect()),
        );
        if let Some(next) = page.next_before_seq {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(k, _)| k != "skiptoken") {
                link.append_pair(k, v);
            }
            link.append_pair("skiptoken", &next.to_string());
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| state.config.listen.to_string());
            body.insert(
                "@odata.nextLink".into(),
                json!(format!("http://{host}/api/audit/records?{}", link.finish())),
            );
        }
        Ok::<_, AppError>(axum::Json(Json::Object(body)).into_response())
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => refuse(&state, draft, error).await,
    }
}

/// `GET /api/audit/records/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = format!("id={id}");
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::bad_request(format!("'{id}' is not an audit record id")))?;
        let log = state.log.clone();
        let found = blocking(move || log.get(id)).await?;
        let (_, event) = found
            .ok_or_else(|| AppError::not_found(format!("audit record {id} does not exist")))?;
        let mut recorded = draft.clone();
        recorded.result_count = 1;
        state.record(recorded).await?;
        Ok::<_, AppError>(axum::Json(event_json(&event)).into_response())
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => refuse(&state, draft, error).await,
    }
}
