//! The ingest API (SPEC §9): other applications post their own audit events —
//! `POST /api/audit/ingest` with a JSON array — authenticated as applications (client
//! credentials). Each event keeps its own `Workload`, `RecordType` and `Operation`, is stored
//! with origin `Ingest` and the sending application as `CallerId`, and is searched beside
//! Custos's own. A batch is checked whole, then made durable whole, before the answer.
//!
//! Fields of an event (Microsoft 365 common schema names): `Operation` (required), `Workload`
//! (default: the application's name), `RecordType` (default: the workload), `CreationTime`
//! (ISO 8601, at most 7 days old and 5 minutes ahead; default: now), `UserId`, `UserType`
//! (0–6), `ClientIP`, `UserAgent`, `ResultStatus`, `ObjectIds` (at most 5,000 record ids),
//! `EntityName`, `Query`, `ResultCount`, `Details` (any JSON of at most 32 KiB). An event is at
//! most 64 KiB of JSON without its `ObjectIds`, a post at most 1,000 events and 8 MiB.
//!
//! An application cannot pass for Custos: a `Workload` that is or looks like `Custos` (any
//! case, compatibility form or confusable letters, with or without spaces), and an `Operation`
//! or `RecordType` of Custos's own catalogue in any such form, are refused. What the server's
//! own followers act on (process and plug-in webhooks, alerts) is only what it wrote itself.

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{
    AuditEvent, EntityCategory, Operation, Origin, ResultStatus, UserType, format_creation_time,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::SiemState;
use custos_http::answer::answer;
use custos_http::auth::authorize;
use custos_http::blocking;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::query::parse_time;

/// Most events in one post.
const BATCH_MAX: usize = 1000;
/// Longest text field of an ingested event, in characters.
const TEXT_MAX: usize = 1024;
/// How far back an ingested event may be dated, microseconds (7 days).
const PAST_US: i64 = 7 * 86_400_000_000;
/// How far ahead an ingested event may be dated (clock skew), microseconds (5 minutes).
const FUTURE_US: i64 = 300_000_000;
/// Most record ids one ingested event lists (a Web API page's most).
const OBJECT_IDS_MAX: usize = 5_000;
/// Largest `Details` of an ingested event, bytes of JSON.
const DETAILS_BYTES_MAX: usize = 32 << 10;
/// Largest ingested event, bytes of JSON without its `ObjectIds`.
const EVENT_BYTES_MAX: usize = 64 << 10;

/// What a name looks like, for telling whether it passes for one of Custos's: compatibility
/// form, lower case, white space and punctuation gone, confusable letters folded (TS #39).
fn look(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let plain: String = name
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect();
    unicode_security::skeleton(&plain).collect()
}

/// Refuses a workload, operation or record type that is, or looks like, one of Custos's own.
fn not_custos(at: usize, field: &str, value: &str) -> Result<(), AppError> {
    let seen = look(value);
    let ours = match field {
        "Workload" => look("Custos") == seen,
        "Operation" => Operation::ALL.iter().any(|o| look(o.as_str()) == seen),
        _ => custos_audit::RecordType::ALL
            .iter()
            .any(|r| look(r.as_str()) == seen),
    };
    if ours || seen.is_empty() {
        return Err(AppError::bad_request(format!(
            "event {at}: '{field}' '{value}' is Custos's own (or empty); ingested events carry the sending application's names"
        )));
    }
    Ok(())
}

fn text<'a>(
    event: &'a Map<String, Json>,
    key: &str,
    at: usize,
) -> Result<Option<&'a str>, AppError> {
    match event.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.chars().count() <= TEXT_MAX => Ok(Some(s)),
        Some(Json::String(_)) => Err(AppError::bad_request(format!(
            "event {at}: '{key}' is longer than {TEXT_MAX} characters"
        ))),
        Some(_) => Err(AppError::bad_request(format!(
            "event {at}: '{key}' must be a string"
        ))),
    }
}

/// The first whole number of the JSON text `json` (a valid one) that fits neither a signed nor
/// an unsigned 64-bit integer. The log keeps such a number exactly as a record's canonical
/// JSON would only round it through a double (docs/verify.md, "Numbers"), so ingest refuses
/// it rather than store another number than the one sent. A scan of the text: the parsed
/// value no longer tells `1e30` from thirty-one digits.
fn wide_integer(json: &[u8]) -> Option<&str> {
    let mut in_string = false;
    let mut escaped = false;
    let mut at = 0;
    while at < json.len() {
        let byte = json[at];
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            at += 1;
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let end = json[at..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(json.len(), |n| at + n);
                let token = std::str::from_utf8(&json[at..end]).ok()?;
                let whole = !token.contains(['.', 'e', 'E']);
                if whole && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Some(token);
                }
                at = end;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    None
}

/// One posted event, checked, as an audit record of `app`.
fn event(
    state: &SiemState,
    json: &Json,
    at: usize,
    app: &custos_http::credentials::Caller,
    context: &RequestContext,
    now_us: i64,
) -> Result<AuditEvent, AppError> {
    const KNOWN: [&str; 13] = [
        "Operation",
        "Workload",
        "RecordType",
        "CreationTime",
        "UserId",
        "UserType",
        "ClientIP",
        "UserAgent",
        "ResultStatus",
        "ObjectIds",
        "EntityName",
        "Query",
        "ResultCount",
    ];
    let object = json
        .as_object()
        .ok_or_else(|| AppError::bad_request(format!("event {at} is not a JSON object")))?;
    let without_ids: std::collections::BTreeMap<&String, &Json> =
        object.iter().filter(|(k, _)| *k != "ObjectIds").collect();
    let size = serde_json::to_vec(&without_ids).map_or(usize::MAX, |bytes| bytes.len());
    if size > EVENT_BYTES_MAX {
        return Err(AppError::bad_request(format!(
            "event {at} is {size} bytes of JSON without its ObjectIds; at most {EVENT_BYTES_MAX}"
        )));
    }
    if let Some(unknown) = object
        .keys()
        .find(|k| !KNOWN.contains(&k.as_str()) && k.as_str() != "Details")
    {
        return Err(AppError::bad_request(format!(
            "event {at}: unknown field '{unknown}'"
        )));
    }
    let operation = text(object, "Operation", at)?
        .filter(|o| !o.trim().is_empty())
        .ok_or_else(|| AppError::bad_request(format!("event {at}: 'Operation' is required")))?;
    not_custos(at, "Operation", operation)?;
    let workload = text(object, "Workload", at)?
        .unwrap_or(&app.principal.display_name)
        .to_string();
    not_custos(at, "Workload", &workload)?;
    let record_type = text(object, "RecordType", at)?
        .unwrap_or(&workload)
        .to_string();
    not_custos(at, "RecordType", &record_type)?;
    let creation_time_us = match text(object, "CreationTime", at)? {
        None => now_us,
        Some(time) => {
            let us = parse_time("CreationTime", time)?;
            if us < now_us - PAST_US || us > now_us + FUTURE_US {
                return Err(AppError::bad_request(format!(
                    "event {at}: 'CreationTime' must be within the last 7 days (and at most 5 minutes ahead), got {time}"
                )));
            }
            us
        }
    };
    let user_type = match object.get("UserType") {
        None | Some(Json::Null) => UserType::Regular,
        Some(value) => value
            .as_u64()
            .and_then(|c| u8::try_from(c).ok())
            .and_then(UserType::from_code)
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "event {at}: 'UserType' must be a Microsoft 365 user type code (0, 2–6)"
                ))
            })?,
    };
    let result_status = match text(object, "ResultStatus", at)? {
        None => ResultStatus::Succeeded,
        Some(status) => ResultStatus::parse(status).ok_or_else(|| {
            AppError::bad_request(format!(
                "event {at}: 'ResultStatus' must be Succeeded, Failed or Denied"
            ))
        })?,
    };
    let record_ids = match object.get("ObjectIds") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(ids)) if ids.len() <= OBJECT_IDS_MAX => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| {
                        AppError::bad_request(format!(
                            "event {at}: 'ObjectIds' must be GUIDs, got {id}"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AppError::bad_request(format!(
                "event {at}: 'ObjectIds' must be an array of at most {OBJECT_IDS_MAX} GUIDs"
            )));
        }
    };
    let result_count = match object.get("ResultCount") {
        None | Some(Json::Null) => record_ids.len() as u64,
        Some(value) => value.as_u64().ok_or_else(|| {
            AppError::bad_request(format!("event {at}: 'ResultCount' must be a whole number"))
        })?,
    };
    let details = match object.get("Details") {
        None | Some(Json::Null) => String::new(),
        Some(value) => value.to_string(),
    };
    if details.len() > DETAILS_BYTES_MAX {
        return Err(AppError::bad_request(format!(
            "event {at}: 'Details' is {} bytes of JSON; at most {DETAILS_BYTES_MAX}",
            details.len()
        )));
    }
    let owned = |key: &str| -> Result<String, AppError> {
        Ok(text(object, key, at)?.unwrap_or_default().to_string())
    };
    Ok(AuditEvent {
        id: Uuid::now_v7(),
        creation_time_us,
        tenant_id: state.directory.tenant_id(),
        instance: String::new(),
        instance_url: String::new(),
        record_type,
        workload,
        operation: operation.to_string(),
        category: String::new(),
        user_id: owned("UserId")?,
        user_upn: owned("UserId")?,
        user_type,
        caller_id: app.principal.id.to_string(),
        client_ip: owned("ClientIP")?,
        user_agent: owned("UserAgent")?,
        origin: Origin::Ingest,
        correlation_id: context.correlation_id.clone(),
        session_id: app.session_id.to_string(),
        client_request_id: context.client_request_id.clone(),
        result_status,
        error_code: String::new(),
        entity_name: owned("EntityName")?,
        entity_category: EntityCategory::None,
        record_ids,
        query: owned("Query")?,
        result_count,
        changes: Vec::new(),
        details,
    })
}

/// `POST /api/audit/ingest` with a JSON array of events.
pub(crate) async fn ingest(
    State(state): State<SiemState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Refusals are Custos's own events about the attempt.
    let mut draft = EventDraft::new(Operation::IngestAuditEvents, &context);
    draft.origin = Origin::Ingest;
    let work = async {
        let app = authorize(
            &state,
            &mut draft,
            &headers,
            |caller| {
                matches!(
                    caller.user_type(),
                    UserType::Application | UserType::ServicePrincipal
                )
            },
            "is not an application; events are ingested with an application's client credentials",
        )?;
        let posted: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        if let Some(number) = wide_integer(&body) {
            return Err(AppError::bad_request(format!(
                "the body holds the whole number {number}, outside the 64 bits the audit log keeps exactly: send it as a string"
            )));
        }
        let list = posted
            .as_array()
            .ok_or_else(|| AppError::bad_request("the body must be a JSON array of events"))?;
        if list.is_empty() || list.len() > BATCH_MAX {
            return Err(AppError::bad_request(format!(
                "post 1 to {BATCH_MAX} events at a time, got {}",
                list.len()
            )));
        }
        let now_us = state.clock.now_us();
        let events: Vec<AuditEvent> = list
            .iter()
            .enumerate()
            .map(|(at, json)| event(&state, json, at, &app, &context, now_us))
            .collect::<Result<_, _>>()?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let times: Vec<String> = events
            .iter()
            .map(|e| format_creation_time(e.creation_time_us))
            .collect();
        let worker = state.clone();
        blocking(move || worker.append_events_blocking(events)).await?;
        let accepted: Vec<Json> = ids
            .iter()
            .zip(&times)
            .map(|(id, time)| json!({"Id": id, "CreationTime": time}))
            .collect();
        Ok((
            StatusCode::OK,
            axum::Json(json!({"accepted": accepted.len(), "value": accepted})),
        )
            .into_response())
    }
    .await;
    answer(&state, draft, work).await
}

#[cfg(test)]
mod tests {
    use super::wide_integer;

    #[test]
    fn only_whole_numbers_outside_64_bits_are_found() {
        for fits in [
            r#"[{"Details": {"a": 9223372036854775807, "b": -9223372036854775808}}]"#,
            r#"[{"Details": {"u": 18446744073709551615, "d": 1e300, "f": -0.5}}]"#,
            r#"[{"Details": {"s": "18446744073709551616 \" 99999999999999999999"}}]"#,
        ] {
            assert_eq!(wide_integer(fits.as_bytes()), None, "{fits}");
        }
        let wide = r#"[{"Details": {"s": "\\", "n": [1, -9223372036854775809]}}]"#;
        assert_eq!(wide_integer(wide.as_bytes()), Some("-9223372036854775809"));
        let wide = r#"[{"Details": 18446744073709551616}]"#;
        assert_eq!(wide_integer(wide.as_bytes()), Some("18446744073709551616"));
    }
}
