//! The audit search API (SPEC §6 and §13): `GET /api/audit/records` and
//! `GET /api/audit/records/{id}`, for Audit Readers, Audit Managers and global admins. Every
//! search is itself recorded (`SearchAuditLog`), as an auditor's reading is a data access too.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::{
    AuditEvent, Operation, Origin, ResultStatus, SearchQuery, SearchSort, SortCursor, SortKey,
    SortValue,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use custos_http::answer::answer;
use custos_http::auth::authorize;
use custos_http::blocking;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::query::{parse_time, query_pairs, recorded_query};

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

/// `orderby=<field> [asc|desc]` (`CreationTime`, `UserUpn`, `Operation`, `EntityName`;
/// ascending unless `desc`).
fn parse_sort(text: &str) -> Result<SearchSort, AppError> {
    let mut words = text.split_whitespace();
    let field = words.next().unwrap_or("");
    let key = SortKey::ALL
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(field))
        .map(|(key, _)| *key)
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "orderby takes CreationTime, UserUpn, Operation or EntityName, then asc or desc; got '{text}'"
            ))
        })?;
    let descending = match (
        words.next().map(str::to_ascii_lowercase).as_deref(),
        words.next(),
    ) {
        (None | Some("asc"), None) => false,
        (Some("desc"), None) => true,
        _ => {
            return Err(AppError::bad_request(format!(
                "orderby is a field and asc or desc; got '{text}'"
            )));
        }
    };
    Ok(SearchSort { key, descending })
}

/// The `skiptoken` of a sorted page: base64url of `[orderby, value, seq]` — opaque, and bound
/// to its order.
fn sorted_token(order: &str, cursor: &SortCursor) -> String {
    let value = match &cursor.value {
        SortValue::Time(us) => json!(us),
        SortValue::Text(text) => json!(text),
    };
    URL_SAFE_NO_PAD.encode(json!([order, value, cursor.seq]).to_string())
}

/// The cursor a sorted page's `skiptoken` names; a token of another order, or not made here,
/// is refused.
fn sorted_cursor(order: &str, token: &str) -> Result<SortCursor, AppError> {
    let invalid =
        || AppError::bad_request(format!("invalid skiptoken '{token}' for orderby '{order}'"));
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let parsed: Json = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    match parsed.as_array().map(Vec::as_slice) {
        Some([Json::String(made_for), value, Json::Number(seq)]) if made_for == order => {
            let value = match value {
                Json::Number(us) => SortValue::Time(us.as_i64().ok_or_else(invalid)?),
                Json::String(text) => SortValue::Text(text.clone()),
                _ => return Err(invalid()),
            };
            Ok(SortCursor {
                value,
                seq: seq.as_u64().ok_or_else(invalid)?,
            })
        }
        _ => Err(invalid()),
    }
}

pub(crate) async fn audit_reader(
    state: &ComplianceState,
    draft: &mut EventDraft,
    headers: &HeaderMap,
) -> Result<custos_http::credentials::Caller, AppError> {
    let caller = authorize(
        state,
        draft,
        headers,
        |caller| caller.can_read_audit(state),
        "needs the Audit Reader role to search the audit log",
    )?;
    if !state.search_enabled() {
        return Err(AppError::new(
            custos_http::error::ErrorCode::Conflict,
            "audit log search is turned off; an Audit Manager can turn it on in the console's Audit settings (or PUT /api/audit/settings)",
        ));
    }
    // On a cluster node, only once this node's log holds what every node has acknowledged.
    state.audit_caught_up().await?;
    Ok(caller)
}

/// `GET /api/audit/records`.
pub(crate) async fn search(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    let pairs = query_pairs(raw);
    draft.query = recorded_query(&pairs);
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        // `count=true` adds how many events match in all (`@odata.count`), from the indexes.
        let counted = match pairs
            .iter()
            .find(|(k, _)| k == "count")
            .map(|(_, v)| v.as_str())
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(AppError::bad_request(format!(
                    "count must be true or false, got '{other}'"
                )));
            }
        };
        // `orderby` sorts the whole result (its own `skiptoken`); without it, newest arrival
        // first.
        let order = pairs
            .iter()
            .find(|(k, _)| k == "orderby")
            .map(|(_, v)| v.trim().to_string());
        let sort = order.as_deref().map(parse_sort).transpose()?;
        let cursor = match (&order, pairs.iter().find(|(k, _)| k == "skiptoken")) {
            (Some(order), Some((_, token))) => Some(sorted_cursor(order, token)?),
            _ => None,
        };
        let searched: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| {
                k != "count" && k != "orderby" && !(sort.is_some() && k == "skiptoken")
            })
            .cloned()
            .collect();
        let query = parse_search(&searched, state.clock.now_us())?;
        let log = state.log.clone();
        let (events, next, total) = blocking(move || {
            let total = counted
                .then(|| {
                    let whole = custos_audit::SearchQuery {
                        before_seq: None,
                        ..query.clone()
                    };
                    log.histogram(&whole, None).map(|h| h.values().sum::<u64>())
                })
                .transpose()?;
            let (events, next) = match sort {
                Some(sort) => {
                    let page = log.search_sorted(&query, sort, cursor.as_ref())?;
                    let order = order.unwrap_or_default();
                    (page.events, page.next.map(|c| sorted_token(&order, &c)))
                }
                None => {
                    let page = log.search(&query)?;
                    (page.events, page.next_before_seq.map(|s| s.to_string()))
                }
            };
            Ok::<_, AppError>((events, next, total))
        })
        .await?;
        let mut recorded = draft.clone();
        recorded.result_count = events.len() as u64;
        state.record(recorded).await?;
        let mut body = Map::new();
        if let Some(total) = total {
            body.insert("@odata.count".into(), json!(total));
        }
        body.insert(
            "value".into(),
            Json::Array(events.iter().map(|(_, e)| event_json(e)).collect()),
        );
        if let Some(next) = next {
            let mut link = form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs.iter().filter(|(k, _)| k != "skiptoken") {
                link.append_pair(k, v);
            }
            link.append_pair("skiptoken", &next);
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
    State(state): State<ComplianceState>,
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

/// The 404 of an audit record id the log does not hold. Retention deletes records with their
/// ids, so once it has purged any the answer says that the record may be one of them.
pub(crate) fn missing(state: &ComplianceState, id: Uuid) -> AppError {
    match state.log.purged_events() {
        0 => AppError::not_found(format!("audit record {id} does not exist")),
        purged => AppError::not_found(format!(
            "audit record {id} does not exist, or retention purged it ({purged} records purged so far, each range by a PurgeAuditLog event)"
        )),
    }
}
