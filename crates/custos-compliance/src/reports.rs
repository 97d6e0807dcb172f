//! Reports (SPEC §7): the nine preconfigured reports (the Dynamics 365 activities of the
//! Microsoft 365 audit log), custom reports an Audit Manager saves (a named search and a
//! grouping, run on demand and, if scheduled, hourly, daily or weekly), and the data-subject
//! report ("every event that touched this record", the GDPR access report).
//!
//! Each counts the events of its search over a time range — total, a time series per hour or
//! day, top users, operations and entities — from the index alone, and links to the matching
//! events. Running a report reads the audit trail, so it is recorded (`SearchAuditLog`) like a
//! search; saving and deleting a custom report are recorded too.

use std::time::Duration;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, ReportSummary, format_creation_time};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use crate::search::{audit_reader, parse_search};
use custos_http::answer::{answer, refuse};
use custos_http::auth::audit_manager;
use custos_http::blocking;
use custos_http::body::{known_properties, text};
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::query::{parse_time, query_pairs, recorded_query};

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// A report without `start` covers this many days (the default range of the audit search).
const DEFAULT_DAYS: i64 = 7;
/// Longest range a report covers, in days (a year, the longest retention most keep).
const RANGE_DAYS_MAX: i64 = 366;
/// Most buckets a series may have.
const BUCKETS_MAX: i64 = 24 * 92;
/// Entries of each top list, and of a saved report's grouping.
const TOP: usize = 10;
const GROUPS_MAX: usize = 100;
/// The directory setting that keeps the saved reports.
const SAVED_SETTING: &str = "audit.reports";
/// Most saved reports a tenant keeps.
const SAVED_MAX: usize = 200;
/// Longest report name, in characters.
const NAME_CHARS_MAX: usize = 100;
/// Scheduled runs kept per report.
const RUNS_KEPT: usize = 50;
/// How often the scheduler looks for reports that are due.
const SCHEDULER_TICK: Duration = Duration::from_secs(60);

/// A preconfigured report: its id (the category), name and what it counts.
pub struct Preconfigured {
    /// Its id: the category of the events it counts.
    pub id: &'static str,
    /// Its name, as the Microsoft 365 tab shows it.
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
}

/// The nine reports, in the order of the Microsoft 365 "Dynamics 365 activities" tab.
pub const PRECONFIGURED: [Preconfigured; 9] = [
    Preconfigured {
        id: "accessed-out-of-box-entity",
        name: "Accessed out-of-box entity",
        description: "Creates, reads, lists, updates, deletes and exports of standard entities such as account and contact.",
    },
    Preconfigured {
        id: "accessed-custom-entity",
        name: "Accessed custom entity",
        description: "Work on entities created by customization (publisher prefix, such as new_project).",
    },
    Preconfigured {
        id: "accessed-admin-entity",
        name: "Accessed admin entity",
        description: "Work on users, teams, roles, organization settings and other entities about the platform.",
    },
    Preconfigured {
        id: "performed-bulk-actions",
        name: "Performed bulk actions",
        description: "Bulk deletes and imports, with their counts and record ids.",
    },
    Preconfigured {
        id: "accessed-other-entity-type",
        name: "Accessed other entity type",
        description: "Work on intersect and internal entities.",
    },
    Preconfigured {
        id: "accessed-admin-center",
        name: "Accessed admin center",
        description: "Admin center use: instances created, deleted, converted, backed up and restored.",
    },
    Preconfigured {
        id: "accessed-internal-management-tool",
        name: "Accessed internal management tool",
        description: "Support engineers' use of the internal management tool, and backend commands.",
    },
    Preconfigured {
        id: "signed-in-or-out",
        name: "Signed in or out",
        description: "Sign-ins (failed ones too) and sign-outs.",
    },
    Preconfigured {
        id: "activated-process-or-plugin",
        name: "Activated process or plug-in",
        description: "Processes and plug-in steps activated or deactivated.",
    },
];

/// A report's time range and bucket, read from the query string.
pub(crate) struct Range {
    pub(crate) start_us: i64,
    pub(crate) end_us: i64,
    pub(crate) bucket_us: i64,
    pub(crate) bucket_name: &'static str,
}

/// Reads `start`, `end` and `bucket` (`hour` or `day`; by default hours for two days or
/// less, days beyond).
pub(crate) fn parse_range(pairs: &[(String, String)], now_us: i64) -> Result<Range, AppError> {
    let mut start = None;
    let mut end = None;
    let mut bucket = None;
    for (name, value) in pairs {
        match name.as_str() {
            "start" => start = Some(parse_time(name, value)?),
            "end" => end = Some(parse_time(name, value)?),
            "bucket" => {
                bucket = Some(match value.as_str() {
                    "hour" => (HOUR_US, "hour"),
                    "day" => (DAY_US, "day"),
                    other => {
                        return Err(AppError::bad_request(format!(
                            "bucket must be 'hour' or 'day', got '{other}'"
                        )));
                    }
                })
            }
            other => {
                return Err(AppError::bad_request(format!(
                    "unknown report parameter '{other}'"
                )));
            }
        }
    }
    let end_us = end.unwrap_or(now_us);
    let start_us = start.unwrap_or(end_us - DEFAULT_DAYS * DAY_US);
    if start_us >= end_us {
        return Err(AppError::bad_request("'start' must be before 'end'"));
    }
    if end_us - start_us > RANGE_DAYS_MAX * DAY_US {
        return Err(AppError::bad_request(format!(
            "a report covers at most {RANGE_DAYS_MAX} days"
        )));
    }
    let (bucket_us, bucket_name) = bucket.unwrap_or(if end_us - start_us <= 2 * DAY_US {
        (HOUR_US, "hour")
    } else {
        (DAY_US, "day")
    });
    if (end_us - start_us) / bucket_us > BUCKETS_MAX {
        return Err(AppError::bad_request(format!(
            "at most {BUCKETS_MAX} buckets: use bucket=day for a range this long"
        )));
    }
    Ok(Range {
        start_us,
        end_us,
        bucket_us,
        bucket_name,
    })
}

/// Every bucket of the range with its count (zero where no event fell).
pub(crate) fn series(
    range: &Range,
    counts: &std::collections::BTreeMap<i64, u64>,
) -> Vec<(i64, u64)> {
    let first = range.start_us.div_euclid(range.bucket_us) * range.bucket_us;
    let mut out = Vec::new();
    let mut at = first;
    while at < range.end_us {
        out.push((at, counts.get(&at).copied().unwrap_or(0)));
        at += range.bucket_us;
    }
    out
}

fn top_json(name: &str, list: &[(String, u64)]) -> Json {
    Json::Array(
        list.iter()
            .map(|(value, count)| json!({name: value, "count": count}))
            .collect(),
    )
}

/// What a report counts: its identity and the search it runs.
pub(crate) struct Spec {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) kind: &'static str,
    /// Search parameters of `GET /api/audit/records` (no time range).
    pub(crate) search: Vec<(String, String)>,
    /// `user`, `operation` or `entity` for a custom report's grouping.
    pub(crate) group_by: Option<String>,
    /// A custom report's schedule (`none`, `hourly`, `daily`, `weekly`).
    pub(crate) schedule: Option<String>,
}

impl Spec {
    fn preconfigured(report: &Preconfigured) -> Spec {
        Spec {
            id: report.id.to_string(),
            name: report.name.to_string(),
            description: report.description.to_string(),
            kind: "preconfigured",
            search: vec![("category".into(), report.id.into())],
            group_by: None,
            schedule: None,
        }
    }

    fn saved(saved: &Json) -> Spec {
        let text = |key: &str| saved[key].as_str().unwrap_or_default().to_string();
        Spec {
            id: text("id"),
            name: text("name"),
            description: text("description"),
            kind: "saved",
            search: form_urlencoded::parse(text("search").as_bytes())
                .into_owned()
                .collect(),
            group_by: saved["groupBy"].as_str().map(str::to_string),
            schedule: saved["schedule"].as_str().map(str::to_string),
        }
    }
}

/// The JSON of a report run.
fn report_json(spec: &Spec, range: &Range, summary: &ReportSummary) -> Json {
    let mut link = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &spec.search {
        link.append_pair(k, v);
    }
    link.append_pair("start", &format_creation_time(range.start_us))
        .append_pair("end", &format_creation_time(range.end_us));
    let mut out = json!({
        "id": spec.id,
        "name": spec.name,
        "description": spec.description,
        "kind": spec.kind,
        "start": format_creation_time(range.start_us),
        "end": format_creation_time(range.end_us),
        "bucket": range.bucket_name,
        "total": summary.total,
        "series": series(range, &summary.series)
            .into_iter()
            .map(|(start, count)| json!({"start": format_creation_time(start), "count": count}))
            .collect::<Vec<_>>(),
        "topUsers": top_json("user", &summary.top_users[..summary.top_users.len().min(TOP)]),
        "topOperations": top_json("operation", &summary.top_operations[..summary.top_operations.len().min(TOP)]),
        "topEntities": top_json("entity", &summary.top_entities[..summary.top_entities.len().min(TOP)]),
        "searchLink": format!("/api/audit/records?{}", link.finish()),
        "distinctUsers": summary.distinct[0],
        "distinctOperations": summary.distinct[1],
        "distinctEntities": summary.distinct[2],
    });
    if let Some(schedule) = &spec.schedule {
        out["schedule"] = json!(schedule);
    }
    if let Some(group_by) = &spec.group_by {
        let groups = match group_by.as_str() {
            "user" => &summary.top_users,
            "operation" => &summary.top_operations,
            _ => &summary.top_entities,
        };
        out["groupBy"] = json!(group_by);
        out["groups"] = top_json(group_by, groups);
    }
    out
}

/// Counts `spec`'s events over `range`.
pub(crate) async fn run_spec(
    state: &ComplianceState,
    spec: &Spec,
    range: &Range,
) -> Result<ReportSummary, AppError> {
    let mut query = parse_search(&spec.search, range.end_us)?;
    query.start_us = range.start_us;
    query.end_us = range.end_us;
    let log = state.log.clone();
    let bucket_us = range.bucket_us;
    let top = if spec.group_by.is_some() {
        GROUPS_MAX
    } else {
        TOP
    };
    blocking(move || log.report(&query, bucket_us, top)).await
}

/// Every saved report (their JSON).
fn saved_reports(state: &ComplianceState) -> Result<Vec<Json>, AppError> {
    Ok(state
        .directory
        .setting(SAVED_SETTING)?
        .and_then(|text| serde_json::from_str::<Vec<Json>>(&text).ok())
        .unwrap_or_default())
}

fn store_saved(state: &ComplianceState, reports: &[Json]) -> Result<(), AppError> {
    let text = Json::Array(reports.to_vec()).to_string();
    state.directory.set_setting(SAVED_SETTING, &text)?;
    Ok(())
}

/// The report named `id`: preconfigured, or saved.
fn spec_of(state: &ComplianceState, id: &str) -> Result<Option<Spec>, AppError> {
    if let Some(report) = PRECONFIGURED.iter().find(|r| r.id == id) {
        return Ok(Some(Spec::preconfigured(report)));
    }
    Ok(saved_reports(state)?
        .iter()
        .find(|r| r["id"].as_str() == Some(id))
        .map(Spec::saved))
}

/// `GET /api/audit/reports`.
pub(crate) async fn list(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = "reports".into();
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let mut value: Vec<Json> = PRECONFIGURED
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "name": r.name,
                    "description": r.description,
                    "kind": "preconfigured",
                    "link": format!("/api/audit/reports/{}", r.id),
                })
            })
            .collect();
        for mut saved in saved_reports(&state)? {
            saved["kind"] = json!("saved");
            saved["link"] = json!(format!(
                "/api/audit/reports/{}",
                saved["id"].as_str().unwrap_or_default()
            ));
            value.push(saved);
        }
        Ok::<_, AppError>(axum::Json(json!({"value": value})).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// `GET /api/audit/reports/{id}?start&end&bucket`.
pub(crate) async fn get(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = match recorded_query(&pairs) {
        rest if rest.is_empty() => format!("report={id}"),
        rest => format!("report={id}&{rest}"),
    };
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let range = parse_range(&pairs, state.clock.now_us())?;
        let spec = spec_of(&state, &id)?
            .ok_or_else(|| AppError::not_found(format!("no report '{id}'")))?;
        let summary = run_spec(&state, &spec, &range).await?;
        let mut recorded = draft.clone();
        recorded.result_count = summary.total;
        state.record(recorded).await?;
        Ok::<_, AppError>(axum::Json(report_json(&spec, &range, &summary)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// Checks a saved report's body; returns its stored JSON (without id and bookkeeping).
fn parse_saved(body: &Json, now_us: i64) -> Result<Map<String, Json>, AppError> {
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    let known = [
        "name",
        "description",
        "search",
        "groupBy",
        "schedule",
        "rangeDays",
    ];
    known_properties(object, &known)?;
    let trimmed =
        |key: &str| Ok::<_, AppError>(text(object, key)?.unwrap_or("").trim().to_string());
    let name = trimmed("name")?;
    if name.is_empty() || name.chars().count() > NAME_CHARS_MAX {
        return Err(AppError::bad_request(format!(
            "a report needs a 'name' of 1 to {NAME_CHARS_MAX} characters"
        )));
    }
    let search = trimmed("search")?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(search.as_bytes())
        .into_owned()
        .collect();
    if let Some((key, _)) = pairs
        .iter()
        .find(|(k, _)| ["start", "end", "top", "skiptoken"].contains(&k.as_str()))
    {
        return Err(AppError::bad_request(format!(
            "'search' takes filters only; '{key}' is given when the report runs"
        )));
    }
    parse_search(&pairs, now_us)?;
    let group_by = match text(object, "groupBy")? {
        None => "user",
        Some(g @ ("user" | "operation" | "entity")) => g,
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "groupBy must be user, operation or entity, got '{other}'"
            )));
        }
    };
    let schedule = match text(object, "schedule")? {
        None => "none",
        Some(s @ ("none" | "hourly" | "daily" | "weekly")) => s,
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "schedule must be none, hourly, daily or weekly, got '{other}'"
            )));
        }
    };
    let range_days = match object.get("rangeDays") {
        None => 7,
        Some(days) => days
            .as_i64()
            .filter(|d| (1..=RANGE_DAYS_MAX).contains(d))
            .ok_or_else(|| {
                AppError::bad_request(format!("rangeDays must be 1 to {RANGE_DAYS_MAX}"))
            })?,
    };
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("description".into(), json!(trimmed("description")?));
    out.insert("search".into(), json!(search));
    out.insert("groupBy".into(), json!(group_by));
    out.insert("schedule".into(), json!(schedule));
    out.insert("rangeDays".into(), json!(range_days));
    Ok(out)
}

/// `POST /api/audit/reports` (a new custom report) and `PUT /api/audit/reports/{id}`.
async fn save(
    state: &ComplianceState,
    context: &RequestContext,
    headers: &HeaderMap,
    id: Option<String>,
    body: &[u8],
) -> Response {
    let mut draft = EventDraft::new(Operation::SaveAuditReport, context);
    let result = async {
        audit_manager(state, &mut draft, headers, "save reports")?;
        let body: Json = custos_http::body::parse_json(body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let mut report = parse_saved(&body, state.clock.now_us())?;
        let mut reports = saved_reports(state)?;
        let id = match &id {
            Some(id) => {
                if PRECONFIGURED.iter().any(|r| r.id == id) {
                    return Err(AppError::new(
                        ErrorCode::Conflict,
                        "a preconfigured report cannot be changed",
                    ));
                }
                let found = reports
                    .iter()
                    .position(|r| r["id"].as_str() == Some(id.as_str()));
                let index =
                    found.ok_or_else(|| AppError::not_found(format!("no saved report '{id}'")))?;
                report.insert("createdBy".into(), reports[index]["createdBy"].clone());
                report.insert("lastRun".into(), reports[index]["lastRun"].clone());
                reports.remove(index);
                id.clone()
            }
            None => {
                if reports.len() >= SAVED_MAX {
                    return Err(AppError::new(
                        ErrorCode::Conflict,
                        format!("at most {SAVED_MAX} saved reports"),
                    ));
                }
                report.insert("createdBy".into(), json!(draft.user_upn));
                Uuid::new_v4().to_string()
            }
        };
        report.insert("id".into(), json!(id));
        report.insert(
            "modifiedOn".into(),
            json!(format_creation_time(state.clock.now_us())),
        );
        let report = Json::Object(report);
        reports.push(report.clone());
        draft.details = report.to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || store_saved(&worker, &reports)).await?;
        if report["schedule"] != "none" {
            // A newly scheduled report runs once now, then on its schedule.
            let worker = state.clone();
            tokio::spawn(async move {
                if let Err(error) = run_due(&worker).await {
                    tracing::error!(error = %error.message, "scheduled reports failed");
                }
            });
        }
        Ok::<_, AppError>(report)
    }
    .await;
    match result {
        Ok(report) if id.is_none() => (StatusCode::CREATED, axum::Json(report)).into_response(),
        Ok(report) => axum::Json(report).into_response(),
        Err(error) => refuse(state, draft, error).await,
    }
}

/// `POST /api/audit/reports`.
pub(crate) async fn create(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    save(&state, &context, &headers, None, &body).await
}

/// `PUT /api/audit/reports/{id}`.
pub(crate) async fn update(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    save(&state, &context, &headers, Some(id), &body).await
}

/// `DELETE /api/audit/reports/{id}`.
pub(crate) async fn delete(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::DeleteAuditReport, &context);
    draft.query = format!("report={id}");
    let result = async {
        audit_manager(&state, &mut draft, &headers, "delete reports")?;
        let mut reports = saved_reports(&state)?;
        let index = reports
            .iter()
            .position(|r| r["id"].as_str() == Some(id.as_str()))
            .ok_or_else(|| AppError::not_found(format!("no saved report '{id}'")))?;
        let removed = reports.remove(index);
        draft.details = removed.to_string();
        state.record(draft.clone()).await?;
        let worker = state.clone();
        blocking(move || {
            worker.shared_files().remove(RUNS_AREA, &runs_name(&id))?;
            store_saved(&worker, &reports)
        })
        .await?;
        Ok::<_, AppError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// The area of the shared files (`custos_http::files`) that keeps scheduled reports' runs:
/// every node of a cluster shows the runs, whichever node ran them.
const RUNS_AREA: &str = "audit-reports";

/// The shared file of a report's runs (JSON lines, oldest first).
fn runs_name(id: &str) -> String {
    format!("{}.runs", id.replace(['/', '.'], "_"))
}

/// The runs kept of report `id`, oldest first.
fn kept_runs(state: &ComplianceState, id: &str) -> Result<Vec<String>, AppError> {
    Ok(state
        .shared_files()
        .get(RUNS_AREA, &runs_name(id))?
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// `GET /api/audit/reports/{id}/runs`: the scheduled runs kept, newest first.
pub(crate) async fn runs(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = format!("report={id} runs");
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        spec_of(&state, &id)?.ok_or_else(|| AppError::not_found(format!("no report '{id}'")))?;
        let worker = state.clone();
        let kept = blocking(move || kept_runs(&worker, &id)).await?;
        let mut runs: Vec<Json> = kept
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        runs.reverse();
        // Reading a report's runs is reading the log.
        draft.result_count = runs.len() as u64;
        state.record(draft.clone()).await?;
        Ok::<_, AppError>(axum::Json(json!({"value": runs})).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// Names a search's fields offer, most frequent first.
const TERMS_MAX: usize = 200;

/// `GET /api/audit/terms`: the users, activities and entities of the last 30 days' events, most
/// frequent first (at most 200 of each, from the indexes), their workloads, and the instances —
/// what the
/// search form offers as the user types. Reading them is reading the log: recorded as a
/// search.
pub(crate) async fn terms(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = "terms of the last 30 days".into();
    let result = async {
        match audit_reader(&state, &mut draft, &headers).await {
            // Search is off: nothing is offered, and nothing was read.
            Err(off) if off.code == ErrorCode::Conflict => {
                let empty: [&str; 0] = [];
                return Ok(axum::Json(json!({"users": empty, "operations": empty, "entities": empty, "instances": empty, "workloads": empty})).into_response());
            }
            other => other?,
        };
        let now = state.clock.now_us();
        let query = custos_audit::SearchQuery {
            start_us: now - 30 * DAY_US,
            end_us: now,
            ..Default::default()
        };
        let log = state.log.clone();
        let (summary, workloads) = blocking(move || {
            Ok::<_, AppError>((
                log.report(&query, DAY_US, TERMS_MAX)?,
                log.workloads(query.start_us)?,
            ))
        })
        .await?;
        let names = |list: &[(String, u64)]| -> Vec<String> {
            list.iter()
                .map(|(name, _)| name.clone())
                .filter(|name| !name.is_empty())
                .collect()
        };
        let instances: Vec<String> = state
            .directory
            .instances()?
            .into_iter()
            .map(|i| i.name)
            .collect();
        draft.result_count = summary.total;
        state.record(draft.clone()).await?;
        Ok::<_, AppError>(
            axum::Json(json!({
                "users": names(&summary.top_users),
                "operations": names(&summary.top_operations),
                "entities": names(&summary.top_entities),
                "instances": instances,
                "workloads": workloads,
            }))
            .into_response(),
        )
    }
    .await;
    answer(&state, draft, result).await
}

/// How long between two runs of a schedule, in microseconds.
fn period_us(schedule: &str) -> Option<i64> {
    match schedule {
        "hourly" => Some(HOUR_US),
        "daily" => Some(DAY_US),
        "weekly" => Some(7 * DAY_US),
        _ => None,
    }
}

/// Runs every scheduled report that is due: over its last `rangeDays`, kept in its runs file,
/// recorded as a search by the system through the backend.
pub(crate) async fn run_due(state: &ComplianceState) -> Result<usize, AppError> {
    let now = state.clock.now_us();
    let mut reports = saved_reports(state)?;
    let mut ran = 0;
    for report in reports.iter_mut() {
        let Some(period) = period_us(report["schedule"].as_str().unwrap_or("none")) else {
            continue;
        };
        let last = report["lastRun"].as_i64().unwrap_or(i64::MIN);
        if now.saturating_sub(last) < period {
            continue;
        }
        let spec = Spec::saved(report);
        let days = report["rangeDays"].as_i64().unwrap_or(7);
        let range = Range {
            start_us: now - days * DAY_US,
            end_us: now,
            bucket_us: if days <= 2 { HOUR_US } else { DAY_US },
            bucket_name: if days <= 2 { "hour" } else { "day" },
        };
        let summary = run_spec(state, &spec, &range).await?;
        let mut draft = state.system_draft(Operation::SearchAuditLog, "");
        draft.query = format!("scheduled report={}", spec.id);
        draft.result_count = summary.total;
        state.record(draft).await?;
        let mut line = report_json(&spec, &range, &summary);
        line["ranAt"] = json!(format_creation_time(now));
        let worker = state.clone();
        let id = spec.id.clone();
        blocking(move || -> Result<(), AppError> {
            let mut kept = kept_runs(&worker, &id)?;
            kept.push(line.to_string());
            let start = kept.len().saturating_sub(RUNS_KEPT);
            let text: String = kept[start..].iter().map(|l| format!("{l}\n")).collect();
            worker
                .shared_files()
                .put(RUNS_AREA, &runs_name(&id), text.as_bytes())
        })
        .await?;
        report["lastRun"] = json!(now);
        ran += 1;
    }
    if ran > 0 {
        let worker = state.clone();
        blocking(move || store_saved(&worker, &reports)).await?;
    }
    Ok(ran)
}

/// Runs due reports every minute for as long as the server runs.
pub(crate) async fn schedule(state: ComplianceState) {
    loop {
        // One node of a cluster runs them (`Directory::leads`).
        if state.directory.leads()
            && let Err(error) = run_due(&state).await
        {
            tracing::error!(error = %error.message, "scheduled reports failed; trying again in a minute");
        }
        tokio::time::sleep(SCHEDULER_TICK).await;
    }
}

/// `GET /api/audit/subjects/{recordId}?start&end&bucket`: every event that created, read,
/// listed, exported, changed or deleted the record (default: the last 365 days), by operation
/// and by user, with the link to the events.
pub(crate) async fn subject(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(record): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut pairs = query_pairs(raw);
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = format!("subject={record}&{}", recorded_query(&pairs));
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let id = Uuid::parse_str(&record).map_err(|_| {
            AppError::bad_request(format!("'{record}' is not a record id (a GUID)"))
        })?;
        if !pairs.iter().any(|(k, _)| k == "start") {
            let end = pairs
                .iter()
                .find(|(k, _)| k == "end")
                .map(|(k, v)| parse_time(k, v))
                .transpose()?
                .unwrap_or_else(|| state.clock.now_us());
            pairs.push(("start".into(), format_creation_time(end - 365 * DAY_US)));
        }
        if !pairs.iter().any(|(k, _)| k == "bucket") {
            pairs.push(("bucket".into(), "day".into()));
        }
        let range = parse_range(&pairs, state.clock.now_us())?;
        let spec = Spec {
            id: id.to_string(),
            name: format!("Events that touched record {id}"),
            description:
                "Every event that created, read, listed, exported, changed or deleted the record."
                    .into(),
            kind: "subject",
            search: vec![("recordId".into(), id.to_string())],
            group_by: Some("operation".into()),
            schedule: None,
        };
        let summary = run_spec(&state, &spec, &range).await?;
        let mut recorded = draft.clone();
        recorded.record_ids = vec![id];
        recorded.result_count = summary.total;
        state.record(recorded).await?;
        let mut body = report_json(&spec, &range, &summary);
        body["recordId"] = json!(id);
        body["users"] = top_json("user", &summary.top_users);
        Ok::<_, AppError>(axum::Json(body).into_response())
    }
    .await;
    answer(&state, draft, result).await
}
