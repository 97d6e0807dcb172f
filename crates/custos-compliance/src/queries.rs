//! Asynchronous audit queries in the style of Microsoft Graph's `auditLogQuery` (SPEC §6):
//! `POST /api/audit/queries` starts one (201, status `notStarted`), a background task runs it
//! to the end (`running`, then `succeeded` or `failed`), `GET /api/audit/queries/{id}` tells its
//! status and count, and `GET /api/audit/queries/{id}/records` pages through what it found —
//! with no ceiling on how many.
//!
//! A query keeps the seqs of its events (8 bytes each, in `audit-queries/<id>.seqs`) and its
//! description (`<id>.json`) in the data directory, for 30 days. Starting a query and reading
//! each page of its records are recorded (`SearchAuditLog`); a restart runs again the queries
//! it interrupted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use axum::extract::{Extension, Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation, SearchQuery, format_creation_time};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use crate::search::{audit_reader, event_json};
use custos_http::answer::answer;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::query::{parse_time, query_pairs};
use custos_http::state::blocking;

/// Events a query reads from the log at a time.
const BATCH: usize = 1000;
/// Records in one page of a query's results, by default and at most.
const PAGE_DEFAULT: u64 = 100;
const PAGE_MAX: u64 = 1000;
/// Days a query and its results are kept.
const KEPT_DAYS: i64 = 30;
/// A query without `filterStartDateTime` looks back this far.
const DEFAULT_LOOKBACK_US: i64 = 90 * 24 * 3_600_000_000;

/// The folder of the queries of `state`'s data directory.
fn folder(state: &ComplianceState) -> PathBuf {
    state.config.data_dir.join("audit-queries")
}

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
    if let Some(key) = object
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !LIST_FILTERS.contains(&k.as_str()))
    {
        return Err(AppError::bad_request(format!("unknown property '{key}'")));
    }
    let text = |key: &str| -> Result<Option<String>, AppError> {
        match object.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AppError::bad_request(format!("'{key}' must be a string"))),
        }
    };
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
    let end_us = match text("filterEndDateTime")? {
        Some(t) => parse_time("filterEndDateTime", &t)?,
        None => now_us,
    };
    let start_us = match text("filterStartDateTime")? {
        Some(t) => parse_time("filterStartDateTime", &t)?,
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
        text: text("keywordFilter")?.filter(|t| !t.is_empty()),
        top: BATCH,
        ..Default::default()
    };
    let mut description = Map::new();
    description.insert(
        "displayName".into(),
        json!(text("displayName")?.unwrap_or_default()),
    );
    description.insert(
        "filterStartDateTime".into(),
        json!(format_creation_time(start_us)),
    );
    description.insert(
        "filterEndDateTime".into(),
        json!(format_creation_time(end_us)),
    );
    description.insert("keywordFilter".into(), json!(text("keywordFilter")?));
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
    ] {
        body.remove(key);
    }
    Ok(parse_body(&Json::Object(body), 0)?.1)
}

fn description_path(folder: &Path, id: Uuid) -> PathBuf {
    folder.join(format!("{id}.json"))
}

fn seqs_path(folder: &Path, id: Uuid) -> PathBuf {
    folder.join(format!("{id}.seqs"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |e| AppError::new(ErrorCode::Internal, format!("{}: {e}", path.display()))
}

/// Writes a query's description (whole file, then renamed into place).
fn save(folder: &Path, id: Uuid, description: &Map<String, Json>) -> Result<(), AppError> {
    fs::create_dir_all(folder).map_err(io(folder))?;
    let path = description_path(folder, id);
    let temporary = path.with_extension("json.tmp");
    fs::write(&temporary, Json::Object(description.clone()).to_string()).map_err(io(&temporary))?;
    fs::rename(&temporary, &path).map_err(io(&path))
}

fn load(folder: &Path, id: Uuid) -> Result<Option<Map<String, Json>>, AppError> {
    let path = description_path(folder, id);
    match fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice::<Json>(&bytes)
            .ok()
            .and_then(|j| j.as_object().cloned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Runs query `id` to the end: every matching event's seq into its results, newest first.
fn run(state: &ComplianceState, id: Uuid) -> Result<(), AppError> {
    let folder = folder(state);
    let mut description =
        load(&folder, id)?.ok_or_else(|| AppError::not_found(format!("no query {id}")))?;
    description.insert("status".into(), json!("running"));
    save(&folder, id, &description)?;
    let outcome = (|| -> Result<u64, AppError> {
        let mut query = search_of(&description)?;
        let path = seqs_path(&folder, id);
        let mut file = fs::File::create(&path).map_err(io(&path))?;
        let mut found = 0u64;
        loop {
            let page = state.log.search(&query)?;
            let bytes: Vec<u8> = page
                .events
                .iter()
                .flat_map(|(seq, _)| seq.to_le_bytes())
                .collect();
            file.write_all(&bytes).map_err(io(&path))?;
            found += page.events.len() as u64;
            match page.next_before_seq {
                Some(next) => query.before_seq = Some(next),
                None => break,
            }
        }
        file.sync_all().map_err(io(&path))?;
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
    save(&folder, id, &description)
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

/// On start: deletes queries older than their 30 days and runs again those a stop
/// interrupted.
pub(crate) fn resume(state: &ComplianceState) {
    let folder = folder(state);
    let Ok(entries) = fs::read_dir(&folder) else {
        return;
    };
    let oldest = time::OffsetDateTime::now_utc() - time::Duration::days(KEPT_DAYS);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(id) = name
            .strip_suffix(".json")
            .and_then(|n| Uuid::parse_str(n).ok())
        else {
            continue;
        };
        let Ok(Some(description)) = load(&folder, id) else {
            continue;
        };
        let created = description["createdDateTime"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if created.is_some_and(|c| c < oldest) {
            let _ = fs::remove_file(description_path(&folder, id));
            let _ = fs::remove_file(seqs_path(&folder, id));
            continue;
        }
        if matches!(
            description["status"].as_str(),
            Some("notStarted" | "running")
        ) {
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
        let body: Json = serde_json::from_slice(&body)
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
        draft.query = format!("auditLogQuery {id} {}", Json::Object(description.clone()));
        state.record(draft.clone()).await?;
        let folder = folder(&state);
        let saved = description.clone();
        blocking(move || save(&folder, id, &saved)).await?;
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
        let folder = folder(&state);
        let mut queries = blocking(move || -> Result<Vec<Json>, AppError> {
            let mut out = Vec::new();
            for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(id) = name
                    .strip_suffix(".json")
                    .and_then(|n| Uuid::parse_str(n).ok())
                    && let Some(description) = load(&folder, id)?
                {
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
        let folder = folder(&state);
        let description = blocking(move || load(&folder, id))
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
        let folder = folder(&state);
        let log = state.log.clone();
        let (events, total) = blocking(move || -> Result<(Vec<AuditEvent>, u64), AppError> {
            let description = load(&folder, id)?
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
            let path = seqs_path(&folder, id);
            let file = fs::File::open(&path).map_err(io(&path))?;
            let total = file.metadata().map_err(io(&path))?.len() / 8;
            let end = (skip + top).min(total);
            let mut events = Vec::new();
            if skip < end {
                let mut bytes = vec![0u8; ((end - skip) * 8) as usize];
                file.read_exact_at(&mut bytes, skip * 8)
                    .map_err(io(&path))?;
                for chunk in bytes.chunks_exact(8) {
                    let seq = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    // An event retention purged since the query ran is gone.
                    if let Some(event) = log.get_seq(seq)? {
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
        if skip + top < total {
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
