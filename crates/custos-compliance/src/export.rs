//! Exports of an audit search (SPEC §6): `GET /api/audit/export?format=csv|xlsx|jsonl&…filters`,
//! every matching event, newest first, with no row ceiling.
//!
//! CSV and JSON lines stream as they are read; the workbook is written on a blocking thread
//! (rows go to temporary files as they come, `rust_xlsxwriter`'s constant-memory mode) and
//! then sent. JSON lines are each event's canonical JSON — the bytes of its Merkle leaf — so
//! an exported line can be checked with an inclusion proof.
//!
//! The export is recorded before the first byte is sent (`ExportAuditLog`, origin `Export`),
//! with the filters and the number of events it holds, counted from the index.
//!
//! A long export runs as a job instead (`POST /api/audit/exports`): the file is written in the
//! data directory (`audit-exports/`, kept 7 days) while `GET /api/audit/exports/{id}` reports
//! how many events are done of how many, and `…/file` sends it once it is complete.

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use custos_audit::{
    AuditEvent, AuditLog, Operation, Origin, SearchQuery, canonical_json, format_creation_time,
};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ComplianceState;
use crate::search::{audit_reader, parse_search};
use custos_http::answer::{answer, refuse};
use custos_http::blocking;
use custos_http::body::known_properties;
use custos_http::cells::{csv_cell, csv_writer, xlsx_cell};
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::query::{query_pairs, recorded_query};

/// Events read from the log at a time.
const BATCH: usize = 1000;
/// Rows of a worksheet (Excel's limit); more go to a continuation sheet.
const SHEET_ROWS_MAX: u32 = 1_048_576;
/// The columns of the CSV and of the workbook's Events sheet.
const COLUMNS: [&str; 20] = [
    "Id",
    "CreationTime",
    "UserUpn",
    "UserId",
    "UserType",
    "Operation",
    "RecordType",
    "Category",
    "Workload",
    "Instance",
    "EntityName",
    "RecordCount",
    "ResultCount",
    "Origin",
    "ClientIP",
    "UserAgent",
    "ResultStatus",
    "CorrelationId",
    "Query",
    "Details",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Csv,
    Xlsx,
    Jsonl,
}

impl ExportFormat {
    fn parse(text: &str) -> Result<ExportFormat, AppError> {
        match text {
            "csv" => Ok(ExportFormat::Csv),
            "xlsx" => Ok(ExportFormat::Xlsx),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(AppError::bad_request(format!(
                "format must be csv, xlsx or jsonl, got '{other}'"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Xlsx => "xlsx",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

/// The values of an event's row.
fn row(event: &AuditEvent) -> [String; COLUMNS.len()] {
    [
        event.id.to_string(),
        format_creation_time(event.creation_time_us),
        event.user_upn.clone(),
        event.user_id.clone(),
        event.user_type.code().to_string(),
        event.operation.clone(),
        event.record_type.clone(),
        event.category.clone(),
        event.workload.clone(),
        event.instance.clone(),
        event.entity_name.clone(),
        event.record_ids.len().to_string(),
        event.result_count.to_string(),
        event.origin.as_str().to_string(),
        event.client_ip.clone(),
        event.user_agent.clone(),
        event.result_status.as_str().to_string(),
        event.correlation_id.clone(),
        event.query.clone(),
        event.details.clone(),
    ]
}

/// Reads every event of `query`, newest first, in batches, until `each` says stop.
fn for_each_event(
    log: &AuditLog,
    mut query: SearchQuery,
    each: &mut dyn FnMut(&AuditEvent) -> bool,
) -> Result<(), AppError> {
    query.top = BATCH;
    loop {
        let page = log.search(&query)?;
        for (_, event) in &page.events {
            if !each(event) {
                return Ok(());
            }
        }
        match page.next_before_seq {
            Some(next) => query.before_seq = Some(next),
            None => return Ok(()),
        }
    }
}

/// CSV of the events (with the record ids space-separated and the record's JSON last); the
/// first chunk begins the file (`cells::csv_writer`).
fn csv_chunk(events: &[AuditEvent], header: bool) -> Result<Vec<u8>, AppError> {
    let mut writer = csv_writer(header);
    let internal = |e: csv::Error| AppError::new(ErrorCode::Internal, format!("csv: {e}"));
    if header {
        let mut names: Vec<&str> = COLUMNS.to_vec();
        names.extend(["RecordIds", "AuditData"]);
        writer.write_record(&names).map_err(internal)?;
    }
    for event in events {
        let mut values = row(event).to_vec();
        values.push(
            event
                .record_ids
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
        values.push(canonical_json(event));
        writer
            .write_record(values.iter().map(|v| csv_cell(v).into_owned()))
            .map_err(internal)?;
    }
    writer
        .into_inner()
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("csv: {e}")))
}

/// A sheet that continues on a new one when Excel's row limit is reached.
struct Sheets {
    name: &'static str,
    header: &'static [&'static str],
    /// Sheets of this kind so far.
    index: usize,
    /// The workbook's number of the current one.
    current: usize,
    row: u32,
}

impl Sheets {
    fn new(name: &'static str, header: &'static [&'static str]) -> Sheets {
        Sheets {
            name,
            header,
            index: 0,
            current: 0,
            row: SHEET_ROWS_MAX,
        }
    }

    /// The sheet and row to write the next row at, opening a sheet when needed.
    fn next<'a>(
        &mut self,
        workbook: &'a mut Workbook,
        bold: &Format,
    ) -> Result<(&'a mut Worksheet, u32), XlsxError> {
        if self.row >= SHEET_ROWS_MAX {
            self.index += 1;
            let name = if self.index == 1 {
                self.name.to_string()
            } else {
                format!("{} ({})", self.name, self.index)
            };
            self.current = workbook.worksheets().len();
            let sheet = workbook.add_worksheet_with_constant_memory();
            sheet.set_name(&name)?;
            for (column, title) in self.header.iter().enumerate() {
                sheet.write_string_with_format(0, column as u16, *title, bold)?;
            }
            self.row = 1;
        }
        let row = self.row;
        self.row += 1;
        Ok((workbook.worksheet_from_index(self.current)?, row))
    }
}

/// The workbook of every event of `query`: sheet Events (one row per event), Records (one row
/// per record id an event lists) and Changes (one row per changed attribute).
fn workbook(
    log: &AuditLog,
    query: SearchQuery,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<u8>, AppError> {
    let excel = |e: XlsxError| AppError::new(ErrorCode::Internal, format!("xlsx: {e}"));
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let mut events = Sheets::new("Events", &COLUMNS);
    let mut records = Sheets::new(
        "Records",
        &["EventId", "Operation", "EntityName", "RecordId"],
    );
    let mut changes = Sheets::new("Changes", &["EventId", "Attribute", "Old", "New"]);
    let mut failure = None;
    let mut done = 0u64;
    for_each_event(log, query, &mut |event| {
        done += 1;
        progress(done);
        let written = (|| -> Result<(), XlsxError> {
            let (sheet, row) = events.next(&mut workbook, &bold)?;
            for (column, value) in self::row(event).iter().enumerate() {
                sheet.write_string(row, column as u16, xlsx_cell(value))?;
            }
            let id = event.id.to_string();
            for record in &event.record_ids {
                let (sheet, row) = records.next(&mut workbook, &bold)?;
                sheet.write_string(row, 0, &id)?;
                sheet.write_string(row, 1, &event.operation)?;
                sheet.write_string(row, 2, &event.entity_name)?;
                sheet.write_string(row, 3, record.to_string())?;
            }
            for change in &event.changes {
                let (sheet, row) = changes.next(&mut workbook, &bold)?;
                sheet.write_string(row, 0, &id)?;
                sheet.write_string(row, 1, &change.attribute)?;
                sheet.write_string(row, 2, xlsx_cell(change.old.as_deref().unwrap_or("")))?;
                sheet.write_string(row, 3, xlsx_cell(change.new.as_deref().unwrap_or("")))?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(excel(error));
    }
    // An empty search still gives every sheet with its header.
    for sheets in [&mut events, &mut records, &mut changes] {
        if sheets.index == 0 {
            sheets.next(&mut workbook, &bold).map_err(excel)?;
        }
    }
    workbook.save_to_buffer().map_err(excel)
}

/// `GET /api/audit/export?format=…&filters`.
pub(crate) async fn export(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut draft = EventDraft::new(Operation::ExportAuditLog, &context);
    draft.origin = Origin::Export;
    let pairs = query_pairs(raw);
    draft.query = recorded_query(&pairs);
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let format = ExportFormat::parse(
            pairs
                .iter()
                .find(|(k, _)| k == "format")
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| AppError::bad_request("'format' is required: csv, xlsx or jsonl"))?,
        )?;
        let filters: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "format")
            .cloned()
            .collect();
        if let Some((name, _)) = filters.iter().find(|(k, _)| k == "top" || k == "skiptoken") {
            return Err(AppError::bad_request(format!(
                "'{name}' does not apply to an export: it holds every matching event"
            )));
        }
        let query = parse_search(&filters, state.clock.now_us())?;
        let log = state.log.clone();
        let counted = query.clone();
        let count: u64 = blocking(move || log.histogram(&counted, None))
            .await?
            .values()
            .sum();
        let mut recorded = draft.clone();
        recorded.result_count = count;
        state.record(recorded).await?;
        Ok::<_, AppError>((format, query, count))
    }
    .await;
    let (format, query, count) = match result {
        Ok(found) => found,
        Err(error) => return refuse(&state, draft, error).await,
    };
    let body = match format {
        ExportFormat::Xlsx => {
            let log = state.log.clone();
            match blocking(move || workbook(&log, query, &mut |_| {})).await {
                Ok(bytes) => Body::from(bytes),
                Err(error) => return error.into_response(),
            }
        }
        ExportFormat::Csv | ExportFormat::Jsonl => stream(state.log.clone(), query, format),
    };
    let name = format!(
        "attachment; filename=\"custos-audit-{}.{}\"",
        time::OffsetDateTime::now_utc().unix_timestamp(),
        format.extension()
    );
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&name).expect("an ascii file name"),
    );
    headers.insert(
        "x-custos-export-events",
        HeaderValue::from_str(&count.to_string()).expect("digits"),
    );
    response
}

/// Writes every event of `query` in `format`, handing each chunk to `sink` as it is ready
/// (CSV and JSON lines every batch; the workbook once it is whole) until `sink` says stop,
/// and telling `progress` how many events are written.
fn write_export(
    log: &AuditLog,
    query: SearchQuery,
    format: ExportFormat,
    sink: &mut dyn FnMut(Vec<u8>) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), AppError> {
    if format == ExportFormat::Xlsx {
        let bytes = workbook(log, query, progress)?;
        sink(bytes);
        return Ok(());
    }
    let mut batch = Vec::with_capacity(BATCH);
    let mut first = true;
    let mut done = 0u64;
    let mut flush = |batch: &mut Vec<AuditEvent>, first: &mut bool| -> Result<bool, AppError> {
        let chunk = match format {
            ExportFormat::Csv => csv_chunk(batch, *first)?,
            _ => batch
                .iter()
                .flat_map(|e| {
                    let mut line = canonical_json(e).into_bytes();
                    line.push(b'\n');
                    line
                })
                .collect(),
        };
        *first = false;
        done += batch.len() as u64;
        progress(done);
        batch.clear();
        Ok(sink(chunk))
    };
    let mut failure = None;
    for_each_event(log, query, &mut |event| {
        batch.push(event.clone());
        if batch.len() < BATCH {
            return true;
        }
        flush(&mut batch, &mut first).unwrap_or_else(|error| {
            failure = Some(error);
            false
        })
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    if !batch.is_empty() || first {
        flush(&mut batch, &mut first)?;
    }
    Ok(())
}

/// CSV or JSON lines sent as they are read, from a blocking thread.
fn stream(log: std::sync::Arc<AuditLog>, query: SearchQuery, format: ExportFormat) -> Body {
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let outcome = write_export(
            &log,
            query,
            format,
            &mut |chunk| sender.blocking_send(Ok(chunk)).is_ok(),
            &mut |_| {},
        );
        if let Err(error) = outcome {
            let _ = sender.blocking_send(Err(std::io::Error::other(error.message)));
        }
    });
    Body::from_stream(tokio_stream(receiver))
}

/// The receiver as a stream of body chunks.
fn tokio_stream(
    mut receiver: mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Days an export job's file is kept.
const JOB_KEPT_DAYS: i64 = 7;

/// The area of the shared files (`custos_http::files`) that holds export jobs' files and
/// statuses: every node of a cluster serves every job, whichever node ran it.
const JOBS_AREA: &str = "audit-exports";

/// An unfinished file left behind longer than this is a job whose node stopped.
const UNFINISHED_KEPT_SECS: u64 = 86_400;

fn job_file(id: Uuid, format: ExportFormat) -> String {
    format!("{id}.{}", format.extension())
}

fn status_file(id: Uuid) -> String {
    format!("{id}.json")
}

/// A job's status, kept in memory while it runs and in `<id>.json` once it ends.
fn set_job(state: &ComplianceState, id: Uuid, status: Json) {
    state
        .own
        .export_jobs
        .lock()
        .expect("export jobs lock")
        .insert(id, status);
}

fn job_status(state: &ComplianceState, id: Uuid) -> Result<Option<Json>, AppError> {
    if let Some(status) = state
        .own
        .export_jobs
        .lock()
        .expect("export jobs lock")
        .get(&id)
    {
        return Ok(Some(status.clone()));
    }
    Ok(state
        .shared_files()
        .get(JOBS_AREA, &status_file(id))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Saves a job's status where every node reads it.
fn save_job(state: &ComplianceState, id: Uuid, status: &Json) {
    let saved =
        state
            .shared_files()
            .put(JOBS_AREA, &status_file(id), status.to_string().as_bytes());
    if let Err(error) = saved {
        tracing::error!(export = %id, error = %error.message, "export status not saved");
    }
}

/// Runs an export job: the file written beside its status, progress counted as it goes (and
/// saved for the other nodes at every tenth of the total).
fn run_job(
    state: &ComplianceState,
    id: Uuid,
    format: ExportFormat,
    query: SearchQuery,
    mut status: Json,
) {
    let total = status["total"].as_u64().unwrap_or(0);
    let mut written = 0;
    let outcome = (|| -> Result<(), AppError> {
        let mut file = state
            .shared_files()
            .create(JOBS_AREA, &job_file(id, format))?;
        let mut failure = None;
        let mut saved_at = 0;
        write_export(
            &state.log,
            query,
            format,
            &mut |chunk| match file.write(&chunk) {
                Ok(()) => true,
                Err(error) => {
                    failure = Some(error);
                    false
                }
            },
            &mut |done| {
                written = done;
                let mut running = status.clone();
                running["done"] = json!(done);
                if done >= saved_at + total.div_ceil(10).max(1) {
                    saved_at = done;
                    save_job(state, id, &running);
                }
                set_job(state, id, running);
            },
        )?;
        if let Some(error) = failure {
            return Err(error);
        }
        file.finish()
    })();
    match outcome {
        Ok(()) => {
            status["status"] = json!("succeeded");
            status["done"] = json!(written);
        }
        Err(error) => {
            status["status"] = json!("failed");
            status["error"] = json!(error.message);
        }
    }
    save_job(state, id, &status);
    set_job(state, id, status);
}

/// On start: deletes export files past their days, and the half-written files of jobs whose
/// node stopped (such a job is gone: it ran in that node).
pub(crate) fn tidy_jobs(state: &ComplianceState) {
    let tidied = state.shared_files().tidy(
        JOBS_AREA,
        std::time::Duration::from_secs(JOB_KEPT_DAYS as u64 * 86_400),
        std::time::Duration::from_secs(UNFINISHED_KEPT_SECS),
    );
    if let Err(error) = tidied {
        tracing::warn!(error = %error.message, "old export files not removed");
    }
}

/// An export job's `search`: the audit search's query string, or an object of its filters
/// (`{"operation": "Export"}`), each a string; none is the default search. Anything else is
/// refused rather than read as no filter at all, which would export the whole log.
fn search_text(search: &Json) -> Result<String, AppError> {
    match search {
        Json::Null => Ok(String::new()),
        Json::String(text) => Ok(text.clone()),
        Json::Object(filters) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (name, value) in filters {
                let value = value.as_str().ok_or_else(|| {
                    AppError::bad_request(format!(
                        "the search filter '{name}' must be a string, as in the search API's query"
                    ))
                })?;
                query.append_pair(name, value);
            }
            Ok(query.finish())
        }
        _ => Err(AppError::bad_request(
            "'search' must be the audit search's query string or an object of its filters",
        )),
    }
}

/// `POST /api/audit/exports` (`{"format", "search"}`): starts an export in the background; its
/// progress is at `GET /api/audit/exports/{id}` and its file, once done, at `…/file`.
pub(crate) async fn start_job(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut draft = EventDraft::new(Operation::ExportAuditLog, &context);
    draft.origin = Origin::Export;
    let result = async {
        audit_reader(&state, &mut draft, &headers).await?;
        let body: Json = custos_http::body::parse_json(&body)
            .map_err(|e| AppError::bad_request(format!("the body is not valid JSON: {e}")))?;
        let object = body
            .as_object()
            .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
        known_properties(object, &["format", "search"])?;
        let search = search_text(&body["search"])?;
        let search = search.as_str();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(search.as_bytes())
            .into_owned()
            .collect();
        let named = body["format"].as_str().unwrap_or("");
        draft.query = format!("format={named}&{}", recorded_query(&pairs));
        let format = ExportFormat::parse(named)?;
        if let Some((name, _)) = pairs.iter().find(|(k, _)| k == "top" || k == "skiptoken") {
            return Err(AppError::bad_request(format!(
                "'{name}' does not apply to an export: it holds every matching event"
            )));
        }
        let mut query = parse_search(&pairs, state.clock.now_us())?;
        // The export holds the matching events the log held when it was asked — not its own
        // event, nor any after — so its total is exactly what its file holds.
        query.before_seq = Some(state.log.len());
        let log = state.log.clone();
        let counted = query.clone();
        let total: u64 = blocking(move || log.histogram(&counted, None))
            .await?
            .values()
            .sum();
        let mut recorded = draft.clone();
        recorded.result_count = total;
        state.record(recorded).await?;
        let id = Uuid::new_v4();
        let status = json!({
            "id": id,
            "format": format.extension(),
            "search": search,
            "status": "running",
            "done": 0,
            "total": total,
            "createdBy": draft.user_upn,
            "createdById": draft.user_id,
            "createdDateTime": format_creation_time(state.clock.now_us()),
            "file": format!("/api/audit/exports/{id}/file"),
        });
        set_job(&state, id, status.clone());
        save_job(&state, id, &status);
        let worker = state.clone();
        let running = status.clone();
        tokio::task::spawn_blocking(move || run_job(&worker, id, format, query, running));
        Ok::<_, AppError>((axum::http::StatusCode::ACCEPTED, axum::Json(status)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// The caller may read export jobs (an Audit Reader while search is on).
async fn job_reader(
    state: &ComplianceState,
    context: &RequestContext,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let mut draft = EventDraft::new(Operation::SearchAuditLog, context);
    match audit_reader(state, &mut draft, headers).await {
        Ok(_) => Ok(()),
        Err(error) => Err(refuse(state, draft, error).await),
    }
}

fn job_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text)
        .map_err(|_| AppError::bad_request(format!("'{text}' is not an export id")))
}

/// `GET /api/audit/exports/{id}`.
pub(crate) async fn job(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Err(refused) = job_reader(&state, &context, &headers).await {
        return refused;
    }
    let found = job_id(&id).and_then(|id| job_status(&state, id));
    match found {
        Ok(Some(status)) => axum::Json(status).into_response(),
        Ok(None) => AppError::not_found(format!("no export {id}")).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/audit/exports/{id}/file`: the file of a finished export, to the Audit Reader who
/// started it or an Audit Manager; each download is recorded (`DownloadAuditExport`, origin
/// `Export`) before its first byte.
pub(crate) async fn job_file_download(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let mut draft = EventDraft::new(Operation::DownloadAuditExport, &context);
    draft.origin = Origin::Export;
    let result = async {
        let caller = audit_reader(&state, &mut draft, &headers).await?;
        let id = job_id(&id)?;
        let status = job_status(&state, id)?
            .ok_or_else(|| AppError::not_found(format!("no export {id}")))?;
        draft.query = status["search"].as_str().unwrap_or_default().to_string();
        draft.details = json!({
            "ExportId": id,
            "Format": status["format"],
            "CreatedBy": status["createdBy"],
        })
        .to_string();
        let own = status["createdById"].as_str() == Some(caller.principal.id.to_string().as_str());
        if !own && !caller.can_manage_audit(&state) {
            return Err(AppError::forbidden(format!(
                "user '{}' did not start export {id}; its file is its creator's or an Audit Manager's",
                caller.principal.upn
            )));
        }
        if status["status"] != "succeeded" {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!(
                    "export {id} is {}: its file is ready once it succeeded",
                    status["status"].as_str().unwrap_or("unknown")
                ),
            ));
        }
        let format = ExportFormat::parse(status["format"].as_str().unwrap_or(""))?;
        draft.result_count = status["total"].as_u64().unwrap_or(0);
        state.record(draft.clone()).await?;
        let file = state
            .shared_files()
            .open(JOBS_AREA, &job_file(id, format))?
            .ok_or_else(|| AppError::not_found(format!("export {id} has no file any more")))?;
        let body = file_stream(file);
        let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!(
                "attachment; filename=\"custos-audit-{id}.{}\"",
                format.extension()
            ))
            .expect("an ascii file name"),
        );
        Ok::<_, AppError>(response)
    }
    .await;
    answer(&state, draft, result).await
}

/// A shared file's bytes as a stream of body chunks, read on a blocking thread.
fn file_stream(mut file: custos_http::files::FileReader) -> Body {
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let next = file
                .next_part()
                .map_err(|error| std::io::Error::other(error.message));
            let more = match next {
                Ok(Some(part)) => sender.blocking_send(Ok(part)).is_ok(),
                Ok(None) => false,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    false
                }
            };
            if !more {
                return;
            }
        }
    });
    Body::from_stream(tokio_stream(receiver))
}
