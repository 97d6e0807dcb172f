//! The audit search API (SPEC §6 and §13): `GET /api/audit/records` and
//! `GET /api/audit/records/{id}`, for Audit Readers, Audit Managers and global admins. Every
//! search is itself recorded (`SearchAuditLog`), as an auditor's reading is a data access too.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_audit::{AuditEvent, Operation, Origin, ResultStatus, SearchQuery};
use serde_json::{Map, Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::audit::EventDraft;
use crate::auth::{audit_reader_caller, authorize};
use crate::context::RequestContext;
use crate::error::AppError;
use crate::state::AppState;
use crate::state::blocking;
use crate::webapi::answer;

/// Default and largest page of a synchronous search.
const TOP_DEFAULT: usize = 100;
const TOP_MAX: usize = 1000;
/// A search without `start` looks back this far (the default retention).
const DEFAULT_LOOKBACK_US: i64 = 90 * 24 * 3600 * 1_000_000;

/// The API JSON of one audit record: its canonical JSON, parsed (so a verifier can rebuild the
/// Merkle leaf from what it is shown).
pub(crate) fn event_json(event: &AuditEvent) -> Json {
    custos_audit::event_value(event)
}

pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, AppError> {
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
pub(crate) fn parse_search(
    pairs: &[(String, String)],
    now_us: i64,
) -> Result<SearchQuery, AppError> {
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
            "category" => query.categories.push(value.clone()),
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

pub(crate) async fn audit_reader(
    state: &AppState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
) -> Result<crate::auth::Caller, AppError> {
    let caller = authorize(
        state,
        draft,
        headers,
        |caller| caller.can_read_audit(state),
        "needs the Audit Reader role to search the audit log",
    )?;
    if !state.search_enabled() {
        return Err(AppError::new(
            crate::error::ErrorCode::Conflict,
            "audit log search is turned off; an Audit Manager can turn it on (PUT /api/audit/settings)",
        ));
    }
    Ok(caller)
}

/// The query pairs as recorded in an event's `Query`.
pub(crate) fn recorded_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /api/audit/records`.
pub(crate) async fn search(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    let pairs = query_pairs(raw);
    draft.query = recorded_query(&pairs);
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
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/api/audit/records?{}",
                    state.public_url(),
                    link.finish()
                )),
            );
        }
        Ok::<_, AppError>(axum::Json(Json::Object(body)).into_response())
    }
    .await;
    answer(&state, draft, result).await
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
        let (_, event) = found.ok_or_else(|| missing(&state, id))?;
        let mut recorded = draft.clone();
        recorded.result_count = 1;
        state.record(recorded).await?;
        Ok::<_, AppError>(axum::Json(event_json(&event)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

fn note_response(note: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response()
}

fn b64(hashes: &[custos_audit::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

pub(crate) fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn number(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, AppError> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| {
            v.parse().map_err(|_| {
                AppError::bad_request(format!("'{name}' must be a whole number, got '{v}'"))
            })
        })
        .transpose()
}

/// The 404 of an audit record id the log does not hold. Retention deletes records with their
/// ids, so once it has purged any the answer says that the record may be one of them.
fn missing(state: &AppState, id: Uuid) -> AppError {
    match state.log.purged_events() {
        0 => AppError::not_found(format!("audit record {id} does not exist")),
        purged => AppError::not_found(format!(
            "audit record {id} does not exist, or retention purged it ({purged} records purged so far, each range by a PurgeAuditLog event)"
        )),
    }
}

/// `GET /api/audit/checkpoint[?treeSize=N]`: the latest signed checkpoint (a C2SP signed note),
/// or the one signed earlier for exactly N events.
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        if let Some(size) = number(&pairs, "treeSize")? {
            let log = state.log.clone();
            let note = blocking(move || log.checkpoint_at(size))
                .await?
                .ok_or_else(|| {
                    AppError::not_found(format!("no checkpoint was signed for {size} events"))
                })?;
            return Ok(note_response(note));
        }
        let log = state.log.clone();
        let latest = blocking(move || log.latest_checkpoint()).await?;
        let (_, note) = latest.ok_or_else(|| AppError::not_found("the log is empty"))?;
        Ok::<_, AppError>(note_response(note))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/audit/key`: the checkpoints' verifier key.
pub(crate) async fn key(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match audit_reader_caller(&state, &headers).map(drop) {
        Ok(()) => note_response(format!("{}\n", state.log.verifier_key())),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/audit/proofs/inclusion?id=…`: the event's inclusion proof against the latest
/// checkpoint (signed on the spot when the event is newer than it).
pub(crate) async fn inclusion(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        let id = pairs
            .iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| AppError::bad_request("'id' is required"))?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::bad_request(format!("'{id}' is not an audit record id")))?;
        let log = state.log.clone();
        let proof = blocking(move || log.inclusion_proof(id)).await?;
        let proof = proof.ok_or_else(|| missing(&state, id))?;
        Ok::<_, AppError>(
            axum::Json(json!({
                "id": id,
                "leafIndex": proof.leaf_index,
                "treeSize": proof.tree_size,
                "leafHash": STANDARD.encode(proof.leaf_hash),
                "hashes": b64(&proof.hashes),
                "checkpoint": proof.checkpoint,
            }))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/audit/proofs/consistency?from=m&to=n`.
pub(crate) async fn consistency(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        let from =
            number(&pairs, "from")?.ok_or_else(|| AppError::bad_request("'from' is required"))?;
        let to = number(&pairs, "to")?.ok_or_else(|| AppError::bad_request("'to' is required"))?;
        let hashes = state.log.consistency_proof(from, to)?;
        Ok::<_, AppError>(
            axum::Json(json!({"from": from, "to": to, "hashes": b64(&hashes)})).into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
