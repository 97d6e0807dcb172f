//! The preconfigured reports of SPEC §7 (the Dynamics 365 activities of the Microsoft 365
//! audit log): `GET /api/audit/reports` and `GET /api/audit/reports/{id}?start&end&bucket`.
//! Each counts the events of one report category over a time range — total, a time series
//! per hour or day, top users, operations and entities — from the index alone, and links to
//! the matching events. Running a report reads the audit trail, so it is recorded
//! (`SearchAuditLog`) like a search.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{Category, Operation, ReportSummary, SearchQuery, format_creation_time};
use serde_json::{Value as Json, json};

use crate::audit::EventDraft;
use crate::audit_api::{audit_reader, parse_time, query_pairs, recorded_query};
use crate::context::RequestContext;
use crate::error::AppError;
use crate::state::{AppState, blocking};
use crate::webapi::refuse;

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// A report without `start` covers this many days (the default range of the audit search).
const DEFAULT_DAYS: i64 = 7;
/// Longest range a report covers, in days (a year, the longest retention most keep).
const RANGE_DAYS_MAX: i64 = 366;
/// Most buckets a series may have.
const BUCKETS_MAX: i64 = 24 * 92;
/// Entries of each top list.
const TOP: usize = 10;

/// A preconfigured report: its id (the category), name and what it counts.
pub(crate) struct Preconfigured {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
}

/// The nine reports, in the order of the Microsoft 365 "Dynamics 365 activities" tab.
pub(crate) const PRECONFIGURED: [Preconfigured; 9] = [
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

/// The JSON of a report run.
fn report_json(report: &Preconfigured, range: &Range, summary: &ReportSummary) -> Json {
    let mut link = form_urlencoded::Serializer::new(String::new());
    link.append_pair("category", report.id)
        .append_pair("start", &format_creation_time(range.start_us))
        .append_pair("end", &format_creation_time(range.end_us));
    json!({
        "id": report.id,
        "name": report.name,
        "description": report.description,
        "start": format_creation_time(range.start_us),
        "end": format_creation_time(range.end_us),
        "bucket": range.bucket_name,
        "total": summary.total,
        "series": series(range, &summary.series)
            .into_iter()
            .map(|(start, count)| json!({"start": format_creation_time(start), "count": count}))
            .collect::<Vec<_>>(),
        "topUsers": top_json("user", &summary.top_users),
        "topOperations": top_json("operation", &summary.top_operations),
        "topEntities": top_json("entity", &summary.top_entities),
        "searchLink": format!("/api/audit/records?{}", link.finish()),
    })
}

/// Runs preconfigured report `id` over `range`; `None` when there is no such report.
pub(crate) async fn run(
    state: &AppState,
    id: &str,
    range: &Range,
) -> Result<Option<(&'static Preconfigured, ReportSummary)>, AppError> {
    let Some(report) = PRECONFIGURED.iter().find(|r| r.id == id) else {
        return Ok(None);
    };
    debug_assert!(
        Category::parse(report.id).is_some(),
        "a report id is a category"
    );
    let query = SearchQuery {
        start_us: range.start_us,
        end_us: range.end_us,
        categories: vec![report.id.to_string()],
        top: 1,
        ..Default::default()
    };
    let log = state.log.clone();
    let bucket_us = range.bucket_us;
    let summary = blocking(move || log.report(&query, bucket_us, TOP)).await?;
    Ok(Some((report, summary)))
}

/// `GET /api/audit/reports`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, &context);
    draft.query = "reports".into();
    if let Err(error) = audit_reader(&state, &mut draft, &headers).await {
        return refuse(&state, draft, error).await;
    }
    let value: Vec<Json> = PRECONFIGURED
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
    axum::Json(json!({"value": value})).into_response()
}

/// `GET /api/audit/reports/{id}?start&end&bucket`.
pub(crate) async fn get(
    State(state): State<AppState>,
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
        let (report, summary) = run(&state, &id, &range)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no report '{id}'")))?;
        let mut recorded = draft.clone();
        recorded.result_count = summary.total;
        state.record(recorded).await?;
        Ok::<_, AppError>(axum::Json(report_json(report, &range, &summary)).into_response())
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => refuse(&state, draft, error).await,
    }
}
