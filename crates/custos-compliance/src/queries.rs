//! Asynchronous audit queries in the style of Microsoft Graph's `auditLogQuery` (SPEC §6):
//! `POST /api/audit/queries` starts one (201, status `notStarted`), a background task runs it
//! to the end (`running`, then `succeeded` or `failed`), `GET /api/audit/queries/{id}` tells its
//! status and count, and `GET /api/audit/queries/{id}/records` pages through what it found —
//! with no ceiling on how many.
//!
//! A query keeps the seqs of its events (8 bytes each, `<id>.seqs`) and its description
//! (`<id>.json`) in the shared files' area `audit-queries` (`custos_http::files`: the data
//! directory, or on a cluster the shared database, so that every node answers for every query
//! — the seqs are the same on every audit node, whose logs are the same), for 30 days. Starting
//! a query and reading each page of its records are recorded (`SearchAuditLog`); a restart runs
//! again the queries it interrupted (on a cluster, those of the restarted node: a query names
//! the node running it).

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation, SearchQuery, format_creation_time};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use crate::search::{audit_reader, event_json};
use custos_http::answer::answer;
use custos_http::blocking;
use custos_http::body::{known_properties, text};
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::query::{parse_time, query_pairs};

/// Events a query reads from the log at a time.
const BATCH: usize = 1000;
/// Records in one page of a query's results, by default and at most.
const PAGE_DEFAULT: u64 = 100;
const PAGE_MAX: u64 = 1000;
/// Days a query and its results are kept.
const KEPT_DAYS: i64 = 30;
/// A query without `filterStartDateTime` looks back this far.
const DEFAULT_LOOKBACK_US: i64 = 90 * 24 * 3_600_000_000;

/// The area of the shared files that holds the queries.
const AREA: &str = "audit-queries";

/// The Graph filter properties a query takes: (name, what it filters).
const LIST_FILTERS: [&str; 6] = [
    "operationFilters",
    "userPrincipalNameFilters",
    "ipAddressFilters",
    "objectIdFilters",
    "recordTypeFilters",
    "serviceFilters",
];

/// Reads a query's body into its description (Graph property names) and its search.
fn parse_body(body: &Json, now_us: i64) -> Result<(Map<String, Json>, SearchQuery), AppError> {
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    let known = [
        "displayName",
        "filterStartDateTime",
        "filterEndDateTime",
        "keywordFilter",
        "administrativeUnitIdFilters",
    ];
    known_properties(object, &[&known[..], &LIST_FILTERS[..]].concat())?;
    let list = |key: &str| -> Result<Vec<String>, AppError> {
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
    };
    if !list("administrativeUnitIdFilters")?.is_empty() {
        return Err(AppError::bad_request(
            "administrative units are not supported: Custos has none",
        ));
    }
    let end_us = match text(object, "filterEndDateTime")? {
        Some(t) => parse_time("filterEndDateTime", t)?,
        None => now_us,
    };
    let start_us = match text(object, "filterStartDateTime")? {
        Some(t) => parse_time("filterStartDateTime", t)?,
        None => end_us - DEFAULT_LOOKBACK_US,
    };
    if start_us >= end_us {
        return Err(AppError::bad_request(
            "'filterStartDateTime' must be before 'filterEndDateTime'",
        ));
    }
    let record_ids = list("objectIdFilters")?
        .iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|_| {
                AppError::bad_request(format!(
                    "objectIdFilters: '{id}' is not a record id (a GUID)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let query = SearchQuery {
        start_us,
        end_us,
        operations: list("operationFilters")?,
        users: list("userPrincipalNameFilters")?,
        ips: list("ipAddressFilters")?,
        record_ids,
        record_types: list("recordTypeFilters")?,
        workloads: list("serviceFilters")?,
        text: text(object, "keywordFilter")?
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        top: BATCH,
        ..Default::default()
    };
    let mut description = Map::new();
    description.insert(
        "displayName".into(),
        json!(text(object, "displayName")?.unwrap_or_default()),
    );
    description.insert(
        "filterStartDateTime".into(),
        json!(format_creation_time(start_us)),
    );
    description.insert(
        "filterEndDateTime".into(),
        json!(format_creation_time(end_us)),
    );
    description.insert(
        "keywordFilter".into(),
        json!(text(object, "keywordFilter")?),
    );
    for key in LIST_FILTERS {
        description.insert(key.into(), json!(list(key)?));
    }
    description.insert("administrativeUnitIdFilters".into(), json!([]));
    Ok((description, query))
}

/// The search a stored description stands for.
fn search_of(description: &Map<String, Json>) -> Result<SearchQuery, AppError> {
    let mut body = description.clone();
    for key in [
        "id",
        "status",
        "approximateReturnedRecordCount",
        "createdDateTime",
        "createdBy",
        "isRecordCountLimitExceeded",
        "recordCountLimit",
        "error",
        "runningOn",
    ] {
        body.remove(key);
    }
    Ok(parse_body(&Json::Object(body), 0)?.1)
}

fn description_name(id: Uuid) -> String {
    format!("{id}.json")
}

fn seqs_name(id: Uuid) -> String {
    format!("{id}.seqs")
}

/// Writes a query's description (whole, replacing the one there).
fn save(
    state: &ComplianceState,
    id: Uuid,
    description: &Map<String, Json>,
) -> Result<(), AppError> {
    state.shared_files().put(
        AREA,
        &description_name(id),
        Json::Object(description.clone()).to_string().as_bytes(),
    )
}

fn load(state: &ComplianceState, id: Uuid) -> Result<Option<Map<String, Json>>, AppError> {
    Ok(state
        .shared_files()
        .get(AREA, &description_name(id))?
        .and_then(|bytes| serde_json::from_slice::<Json>(&bytes).ok())
        .and_then(|j| j.as_object().cloned()))
}

/// Every query kept, by id.
fn ids(state: &ComplianceState) -> Result<Vec<Uuid>, AppError> {
    Ok(state
        .shared_files()
        .names(AREA)?
        .iter()
        .filter_map(|name| name.strip_suffix(".json"))
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect())
}

/// Runs query `id` to the end: every matching event's seq into its results, newest first.
fn run(state: &ComplianceState, id: Uuid) -> Result<(), AppError> {
    let mut description =
        load(state, id)?.ok_or_else(|| AppError::not_found(format!("no query {id}")))?;
    description.insert("status".into(), json!("running"));
    save(state, id, &description)?;
    let outcome = (|| -> Result<u64, AppError> {
        let mut query = search_of(&description)?;
        let mut file = state.shared_files().create(AREA, &seqs_name(id))?;
        let mut found = 0u64;
        loop {
            let page = state.log.search(&query)?;
            let bytes: Vec<u8> = page
                .events
                .iter()
                .flat_map(|(seq, _)| seq.to_le_bytes())
                .collect();
            file.write(&bytes)?;
            found += page.events.len() as u64;
            match page.next_before_seq {
                Some(next) => query.before_seq = Some(next),
                None => break,
            }
        }
        file.finish()?;
        Ok(found)
    })();
    match outcome {
        Ok(found) => {
            description.insert("status".into(), json!("succeeded"));
            description.insert("approximateReturnedRecordCount".into(), json!(found));
        }
        Err(error) => {
            description.insert("status".into(), json!("failed"));
            description.insert("error".into(), json!(error.message));
        }
    }
    save(state, id, &description)
}

/// Starts the background run of query `id`.
fn start(state: &ComplianceState, id: Uuid) {
    let state = state.clone();
    tokio::spawn(async move {
        let worker = state.clone();
        if let Err(error) = blocking(move || run(&worker, id)).await {
            tracing::error!(query = %id, error = %error.message, "audit query failed");
        }
    });
}

/// On start: deletes queries older than their 30 days and runs again those a stop of this
/// node interrupted.
pub(crate) fn resume(state: &ComplianceState) {
    let Ok(ids) = ids(state) else {
        return;
    };
    let node = state.node_id();
    let oldest = time::OffsetDateTime::now_utc() - time::Duration::days(KEPT_DAYS);
    let files = state.shared_files();
    for id in ids {
        let Ok(Some(description)) = load(state, id) else {
            continue;
        };
        let created = description["createdDateTime"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if created.is_some_and(|c| c < oldest) {
            let _ = files.remove(AREA, &description_name(id));
            let _ = files.remove(AREA, &seqs_name(id));
            continue;
        }
        let ours = description.get("runningOn").and_then(Json::as_str) == node;
        if ours
            && matches!(
                description["status"].as_str(),
                Some("notStarted" | "running")
            )
        {
            start(state, id);
        }
    }
}

/// The Graph `auditLogRecord` of an event, with the whole record as `auditData`.
fn record_json(event: &AuditEvent) -> Json {
    json!({
        "id": event.id,
        "createdDateTime": format_creation_time(event.creation_time_us),
        "auditLogRecordType": event.record_type,
        "operation": event.operation,
        "organizationId": event.tenant_id,
        "userType": event.user_type.as_str(),
        "userId": event.user_id,
        "userPrincipalName": event.user_upn,
        "service": event.workload,
        "objectId": event.record_ids.first().map(|id| id.to_string()).unwrap_or_default(),
        "clientIp": event.client_ip,
        "administrativeUnits": [],
        "auditData": event_json(event),
    })
}

/// `POST /api/audit/queries`.
pub(crate) async fn create(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let (mut description, _) = parse_body(&body, state.clock.now_us())?;
        let id = Uuid::new_v4();
        description.insert("id".into(), json!(id));
        description.insert("status".into(), json!("notStarted"));
        description.insert("approximateReturnedRecordCount".into(), json!(0));
        description.insert("isRecordCountLimitExceeded".into(), json!(false));
        description.insert(
            "createdDateTime".into(),
            json!(format_creation_time(state.clock.now_us())),
        );
        description.insert("createdBy".into(), json!(draft.user_upn));
        if let Some(node) = state.node_id() {
            description.insert("runningOn".into(), json!(node));
        }
        draft.query = format!("auditLogQuery {id} {}", Json::Object(description.clone()));
        state.record(draft.clone()).await?;
        let saved = description.clone();
        let worker = state.clone();
        blocking(move || save(&worker, id, &saved)).await?;
        start(&state, id);
        Ok::<_, AppError>(
            (StatusCode::CREATED, axum::Json(Json::Object(description))).into_response(),
        )
    }
    .await;
    answer(&state, draft, result).await
}

/// `GET /api/audit/queries`: every query kept, newest first.
pub(crate) async fn list(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = "auditLogQueries".into();
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let worker = state.clone();
        let mut queries = blocking(move || -> Result<Vec<Json>, AppError> {
            let mut out = Vec::new();
            for id in ids(&worker)? {
                if let Some(description) = load(&worker, id)? {
                    out.push(Json::Object(description));
                }
            }
            Ok(out)
        })
        .await?;
        queries.sort_by(|a, b| {
            b["createdDateTime"]
                .as_str()
                .cmp(&a["createdDateTime"].as_str())
        });
        Ok::<_, AppError>(axum::Json(json!({"value": queries})).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

fn query_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text).map_err(|_| AppError::bad_request(format!("'{text}' is not a query id")))
}

/// `GET /api/audit/queries/{id}`.
pub(crate) async fn get(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = format!("auditLogQuery {id}");
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let id = query_id(&id)?;
        let worker = state.clone();
        let description = blocking(move || load(&worker, id))
            .await?
            .ok_or_else(|| AppError::not_found(format!("no audit query {id}")))?;
        Ok::<_, AppError>(axum::Json(Json::Object(description)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// `GET /api/audit/queries/{id}/records?$top&$skiptoken`.
pub(crate) async fn records(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = format!("auditLogQuery {id} records");
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let id = query_id(&id)?;
        let number = |name: &str, default: u64| -> Result<u64, AppError> {
            pairs
                .iter()
                .find(|(k, _)| k == name || k.strip_prefix('$') == Some(name))
                .map(|(_, v)| {
                    v.parse().map_err(|_| {
                        AppError::bad_request(format!("'{name}' must be a whole number"))
                    })
                })
                .unwrap_or(Ok(default))
        };
        let top = number("top", PAGE_DEFAULT)?;
        if !(1..=PAGE_MAX).contains(&top) {
            return Err(AppError::bad_request(format!(
                "$top must be 1 to {PAGE_MAX}"
            )));
        }
        let skip = number("skiptoken", 0)?;
        let worker = state.clone();
        let (events, total) = blocking(move || -> Result<(Vec<AuditEvent>, u64), AppError> {
            let description = load(&worker, id)?
                .ok_or_else(|| AppError::not_found(format!("no audit query {id}")))?;
            if description["status"].as_str() != Some("succeeded") {
                return Err(AppError::new(
                    ErrorCode::Conflict,
                    format!(
                        "audit query {id} is {}: its records are ready once it succeeded",
                        description["status"].as_str().unwrap_or("unknown")
                    ),
                ));
            }
            let total = description["approximateReturnedRecordCount"]
                .as_u64()
                .unwrap_or(0);
            let end = skip.saturating_add(top).min(total);
            let mut events = Vec::new();
            if skip < end {
                let bytes = worker.shared_files().read_at(
                    AREA,
                    &seqs_name(id),
                    skip * 8,
                    ((end - skip) * 8) as usize,
                )?;
                for chunk in bytes.chunks_exact(8) {
                    let seq = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    // An event retention purged since the query ran is gone.
                    if let Some(event) = worker.log.get_seq(seq)? {
                        events.push(event);
                    }
                }
            }
            Ok((events, total))
        })
        .await?;
        let mut recorded = draft.clone();
        recorded.result_count = events.len() as u64;
        state.record(recorded).await?;
        let mut body = Map::new();
        body.insert(
            "value".into(),
            Json::Array(events.iter().map(record_json).collect()),
        );
        if skip.saturating_add(top) < total {
            body.insert(
                "@odata.nextLink".into(),
                json!(format!(
                    "{}/api/audit/queries/{id}/records?$top={top}&$skiptoken={}",
                    state.public_url(),
                    skip + top
                )),
            );
        }
        Ok::<_, AppError>(axum::Json(Json::Object(body)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}
