//! The bulk actions of the Web API (SPEC §3.1): `ExportToExcel` (a real .xlsx workbook, or
//! CSV), `BulkDelete` (every record a query matches) and `ImportRecords` (CSV). Each is an
//! unbound action taking a JSON body that names the entity set:
//!
//! - `POST ExportToExcel` `{"EntitySetName", "Format": "xlsx"|"csv", "Filter"?, "Select"?,
//!   "OrderBy"?}` answers the file itself; its event (origin `Export`) lists every exported
//!   record id and is durable before the first byte is sent.
//! - `POST BulkDelete` `{"EntitySetName", "Filter", "JobName"?}` deletes what the filter
//!   matches in one transaction.
//! - `POST ImportRecords` `{"EntitySetName", "Content", "FileName"?}` creates one record per CSV
//!   row (a header row of attribute names first), all or none.
//!
//! Bulk delete and import are recorded as one `BulkDelete` / `ImportRecords` event with the
//! count and every record id (when the instance audits at all), beside a `Delete` / `Create`
//! event per record with its values (when the entity's changes are audited), all made durable
//! inside the transaction, before it commits.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditPolicy, Operation, Origin};
use custos_records::{
    AttributeDef, EntityDef, ImportRow, Privilege, QueryOptions, Record, RecordQuery, Value,
    WriteOutcome, datetime_text, parse_query_options_at,
};
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::cascade::Cascade;
use super::records::{
    context, describe_write, entity_by_set, load_view, run_automations, undeletable,
};
use crate::automation::Message;
use custos_http::blocking;
use custos_http::body::{known_properties, text};
use custos_http::cells::{UTF8_BOM, csv_cell, csv_writer, xlsx_cell};
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

/// Most rows one export holds (Dataverse's limit for export to Excel).
pub(crate) const EXPORT_ROWS_MAX: u64 = 100_000;
/// Most records one bulk delete or import changes.
pub(crate) const BULK_RECORDS_MAX: u64 = 50_000;

/// The entity an action names in `EntitySetName`, recorded in the draft.
fn target_entity(
    request: &WebRequest,
    draft: &mut EventDraft,
    body: &Map<String, Json>,
) -> Result<EntityDef, AppError> {
    let set = text(body, "EntitySetName")?
        .ok_or_else(|| AppError::bad_request("'EntitySetName' is required (e.g. \"accounts\")"))?;
    let entity = entity_by_set(request, set)?;
    draft.set_entity(&entity);
    Ok(entity)
}

/// The query options of `Filter`, `Select` and `OrderBy` — or of the view named by
/// `SavedQuery` / `UserQuery` — checked against the entity, and their text as recorded in
/// `Query`.
fn query_options(
    request: &WebRequest,
    entity: &EntityDef,
    body: &Map<String, Json>,
) -> Result<(QueryOptions, String, Option<Json>), AppError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (field, option) in [
        ("Filter", "$filter"),
        ("Select", "$select"),
        ("OrderBy", "$orderby"),
    ] {
        if let Some(value) = text(body, field)? {
            pairs.push((option.to_string(), value.to_string()));
        }
    }
    let mut view_details = None;
    for (field, kind) in [("SavedQuery", "savedQuery"), ("UserQuery", "userQuery")] {
        if let Some(id) = text(body, field)? {
            if !pairs.is_empty() {
                return Err(AppError::bad_request(format!(
                    "{field} cannot be combined with Filter, Select, OrderBy or another view: the view brings its own"
                )));
            }
            let view = load_view(request, entity, kind, id)?;
            view_details = Some(view.details);
            pairs = view.options;
        }
    }
    let options = parse_query_options_at(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &super::records::filter_context(request),
    )?;
    for name in options.select.iter().flatten() {
        if entity.attribute_by_web_name(name).is_none() {
            return Err(AppError::bad_request(format!(
                "attribute '{name}' in Select does not exist on entity '{}'",
                entity.logical_name
            )));
        }
    }
    let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let query = if text.is_empty() {
        entity.set_name.clone()
    } else {
        format!("{}?{}", entity.set_name, text.join("&"))
    };
    Ok((options, query, view_details))
}

#[derive(Clone, Copy)]
enum FileFormat {
    Xlsx,
    Csv,
}

/// The columns of an export: the primary id first (so the file can be imported back), then the
/// selected attributes, or every attribute.
fn export_columns<'a>(entity: &'a EntityDef, select: Option<&[String]>) -> Vec<&'a AttributeDef> {
    let key = entity.primary_id();
    let mut columns: Vec<_> = entity
        .attributes
        .iter()
        .filter(|a| a.logical_name == key)
        .collect();
    columns.extend(entity.attributes.iter().filter(|a| {
        a.logical_name != key
            && select.is_none_or(|names| {
                names
                    .iter()
                    .any(|n| *n == a.logical_name || *n == a.web_name())
            })
    }));
    columns
}

fn csv_file(columns: &[&AttributeDef], records: &[Record]) -> Result<Vec<u8>, AppError> {
    let failed = |e: csv::Error| AppError::new(ErrorCode::Internal, format!("csv: {e}"));
    let mut writer = csv_writer(true);
    writer
        .write_record(columns.iter().map(|c| c.logical_name.as_str()))
        .map_err(failed)?;
    for record in records {
        writer
            .write_record(
                columns
                    .iter()
                    .map(|c| match record.values.get(&c.logical_name) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => csv_cell(s).into_owned(),
                        Some(Value::DateTime(s)) => datetime_text(s),
                        Some(Value::Integer(n)) => n.to_string(),
                        Some(Value::Decimal(n)) => n.to_string(),
                        Some(Value::Boolean(b)) => b.to_string(),
                        Some(Value::Guid(g)) => g.to_string(),
                    }),
            )
            .map_err(failed)?;
    }
    writer
        .into_inner()
        .map_err(|e| AppError::new(ErrorCode::Internal, format!("csv: {e}")))
}

/// A workbook with one sheet named after the entity set: a bold header row of attribute names,
/// numbers and booleans as typed cells, the rest as text.
fn xlsx_file(
    entity: &EntityDef,
    columns: &[&AttributeDef],
    records: &[Record],
) -> Result<Vec<u8>, AppError> {
    let written = (|| -> Result<Vec<u8>, XlsxError> {
        let mut workbook = Workbook::new();
        let bold = Format::new().set_bold();
        let sheet = workbook.add_worksheet();
        sheet.set_name(&entity.set_name)?;
        for (column, attribute) in columns.iter().enumerate() {
            sheet.write_string_with_format(0, column as u16, &attribute.logical_name, &bold)?;
        }
        for (i, record) in records.iter().enumerate() {
            let row = i as u32 + 1;
            for (column, attribute) in columns.iter().enumerate() {
                let column = column as u16;
                match record.values.get(&attribute.logical_name) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => {
                        sheet.write_string(row, column, xlsx_cell(s))?;
                    }
                    Some(Value::DateTime(s)) => {
                        sheet.write_string(row, column, datetime_text(s))?;
                    }
                    Some(Value::Integer(n)) => {
                        sheet.write_number(row, column, *n as f64)?;
                    }
                    Some(Value::Decimal(n)) => {
                        sheet.write_number(row, column, *n)?;
                    }
                    Some(Value::Boolean(b)) => {
                        sheet.write_boolean(row, column, *b)?;
                    }
                    Some(Value::Guid(g)) => {
                        sheet.write_string(row, column, g.to_string())?;
                    }
                }
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        workbook.save_to_buffer()
    })();
    written.map_err(|e| AppError::new(ErrorCode::Internal, format!("xlsx: {e}")))
}

/// `POST ExportToExcel`.
pub(crate) async fn export_to_excel(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::ExportToExcel;
    draft.origin = Origin::Export;
    let body = request.json_object()?;
    let entity = target_entity(&request, draft, &body)?;
    request.require(Privilege::Read, &entity)?;
    request.require(Privilege::Export, &entity)?;
    known_properties(
        &body,
        &[
            "EntitySetName",
            "Format",
            "Filter",
            "Select",
            "OrderBy",
            "SavedQuery",
            "UserQuery",
        ],
    )?;
    let format = match text(&body, "Format")?.unwrap_or("xlsx") {
        "xlsx" => FileFormat::Xlsx,
        "csv" => FileFormat::Csv,
        other => {
            return Err(AppError::bad_request(format!(
                "'Format' must be xlsx or csv, got '{other}'"
            )));
        }
    };
    let (options, query, view) = query_options(&request, &entity, &body)?;
    draft.query = query;
    let mut details = json!({"Format": match format {
        FileFormat::Xlsx => "xlsx",
        FileFormat::Csv => "csv",
    }});
    if let Some(view) = view {
        details["View"] = view;
    }
    draft.details = details.to_string();
    let audited = request.policy().audits_export(&entity.logical_name);
    let store = request.instance.store.clone();
    let entity_for_task = entity.clone();
    let (records, file) = blocking(move || -> Result<_, AppError> {
        // One statement, so the file is one consistent view of the records.
        let page = store.retrieve_multiple(&RecordQuery {
            entity: &entity_for_task.logical_name,
            options: &options,
            page_size: EXPORT_ROWS_MAX + 1,
        })?;
        if page.records.len() as u64 > EXPORT_ROWS_MAX {
            return Err(AppError::bad_request(format!(
                "the query matches more than {EXPORT_ROWS_MAX} records, the most one export holds; narrow it with a Filter"
            )));
        }
        let columns = export_columns(&entity_for_task, options.select.as_deref());
        let file = match format {
            FileFormat::Xlsx => xlsx_file(&entity_for_task, &columns, &page.records)?,
            FileFormat::Csv => csv_file(&columns, &page.records)?,
        };
        let ids: Vec<Uuid> = page.records.iter().map(|r| r.id).collect();
        Ok((ids, file))
    })
    .await?;
    draft.result_count = records.len() as u64;
    if audited {
        let mut event = draft.clone();
        event.record_ids = records;
        request.state.record(event).await?;
    }
    let (content_type, extension) = match format {
        FileFormat::Xlsx => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        FileFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let disposition = format!(
        "attachment; filename=\"{}-{}.{extension}\"",
        entity.set_name,
        request.state.clock.now().date()
    );
    let mut response = file.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        "x-custos-record-count",
        HeaderValue::from_str(&draft.result_count.to_string()).expect("digits"),
    );
    Ok(response)
}

/// The per-record events of a batch (when the entity's changes are audited) and its summary
/// event with the count and every record id (when the instance audits at all).
fn batch_events(
    policy: &AuditPolicy,
    summary: &EventDraft,
    entity: &EntityDef,
    per_record: Operation,
    outcomes: &[WriteOutcome],
) -> Vec<EventDraft> {
    let mut events = Vec::new();
    if policy.audits_change(&entity.logical_name) {
        for outcome in outcomes {
            let mut event = summary.clone();
            event.operation = per_record;
            event.details = String::new();
            describe_write(&mut event, entity, policy, outcome);
            events.push(event);
        }
    }
    if policy.audits_bulk() {
        let mut event = summary.clone();
        event.record_ids = outcomes.iter().map(|o| o.id).collect();
        event.result_count = outcomes.len() as u64;
        events.push(event);
    }
    events
}

/// `POST BulkDelete`.
pub(crate) async fn bulk_delete(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::BulkDelete;
    let body = request.json_object()?;
    let entity = target_entity(&request, draft, &body)?;
    request.require(Privilege::Delete, &entity)?;
    request.require(Privilege::BulkDelete, &entity)?;
    known_properties(&body, &["EntitySetName", "Filter", "JobName"])?;
    undeletable(&entity, None)?;
    if text(&body, "Filter")?.is_none_or(|f| f.trim().is_empty()) {
        return Err(AppError::bad_request(
            "'Filter' is required: a $filter expression naming the records to delete (to delete every record, say so, e.g. \"createdon ne null\")",
        ));
    }
    let (options, query, _) = query_options(&request, &entity, &body)?;
    let job_id = Uuid::new_v4();
    let job_name = text(&body, "JobName")?
        .map(str::to_string)
        .unwrap_or_else(|| format!("Bulk delete of {}", entity.set_name));
    draft.query = query;
    draft.details = json!({"JobId": job_id, "JobName": job_name}).to_string();
    let policy = request.policy();
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let summary = draft.clone();
    let entity_for_task = entity.clone();
    let mut cascade = Cascade::new(&request);
    let context = context(&request);
    let deleted = blocking(move || -> Result<Vec<WriteOutcome>, AppError> {
        let mut before_commit = |outcomes: &[WriteOutcome]| -> Result<(), String> {
            let mut events = batch_events(
                &policy,
                &summary,
                &entity_for_task,
                Operation::Delete,
                outcomes,
            );
            for outcome in outcomes {
                events.extend(cascade.events(&*store, &summary, outcome)?);
            }
            state.append_all_blocking(events).map_err(|e| e.message)
        };
        store
            .bulk_delete(
                &entity_for_task.logical_name,
                &options,
                BULK_RECORDS_MAX,
                context,
                &mut before_commit,
            )
            .map_err(|e| cascade.answer(e.into()))
    })
    .await?;
    run_automations(&request, &entity, Message::Delete, &deleted, draft).await?;
    Ok(axum::Json(json!({
        "JobId": job_id,
        "JobName": job_name,
        "EntitySetName": entity.set_name,
        "DeletedCount": deleted.len(),
    }))
    .into_response())
}

/// The rows of a CSV file for `entity`: a header row of attribute names (logical or Web API
/// names; the primary id column optional), then one record per row. Errors name the row and
/// column, counting the header as row 1.
fn parse_csv(entity: &EntityDef, content: &str) -> Result<Vec<ImportRow>, AppError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(content.strip_prefix(UTF8_BOM).unwrap_or(content).as_bytes());
    let mut records = reader.records();
    let header = records
        .next()
        .ok_or_else(|| AppError::bad_request("the file is empty; it needs a header row"))?
        .map_err(|e| AppError::bad_request(format!("row 1: {e}")))?;
    let key = entity.primary_id();
    let mut columns = Vec::new();
    for name in header.iter() {
        let name = name.trim().trim_start_matches('\u{feff}');
        let attribute = entity.attribute_by_web_name(name).ok_or_else(|| {
            AppError::bad_request(format!(
                "row 1: column '{name}' is not an attribute of entity '{}'",
                entity.logical_name
            ))
        })?;
        if attribute.read_only {
            return Err(AppError::bad_request(format!(
                "row 1: column '{name}' is kept by the platform and cannot be imported"
            )));
        }
        if columns
            .iter()
            .any(|c: &&AttributeDef| c.logical_name == attribute.logical_name)
        {
            return Err(AppError::bad_request(format!(
                "row 1: column '{name}' appears twice"
            )));
        }
        columns.push(attribute);
    }
    let mut rows = Vec::new();
    for (i, record) in records.enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| AppError::bad_request(format!("row {line}: {e}")))?;
        if rows.len() as u64 >= BULK_RECORDS_MAX {
            return Err(AppError::bad_request(format!(
                "the file has more than {BULK_RECORDS_MAX} rows, the most one import takes; split it"
            )));
        }
        let mut id = None;
        let mut values = Vec::new();
        for (attribute, text) in columns.iter().zip(record.iter()) {
            let value = Value::from_text(attribute, text).map_err(|e| {
                AppError::bad_request(format!(
                    "row {line}, column '{}': {e}",
                    attribute.logical_name
                ))
            })?;
            if attribute.logical_name == key {
                if let Value::Guid(given) = value {
                    id = Some(given);
                }
                continue;
            }
            // An empty cell leaves the attribute to its default (e.g. the owner).
            if value != Value::Null {
                values.push((attribute.logical_name.clone(), value));
            }
        }
        rows.push((id, values));
    }
    Ok(rows)
}

/// `POST ImportRecords`.
pub(crate) async fn import_records(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::ImportRecords;
    let body = request.json_object()?;
    let entity = target_entity(&request, draft, &body)?;
    request.require(Privilege::Create, &entity)?;
    request.require(Privilege::Import, &entity)?;
    known_properties(&body, &["EntitySetName", "Content", "FileName"])?;
    let content = text(&body, "Content")?
        .ok_or_else(|| AppError::bad_request("'Content' is required: the CSV text"))?;
    let file_name = text(&body, "FileName")?.unwrap_or("import.csv").to_string();
    let rows = parse_csv(&entity, content)?;
    let import_id = Uuid::new_v4();
    draft.query = file_name.clone();
    draft.details = json!({"ImportJobId": import_id, "FileName": file_name}).to_string();
    let policy = request.policy();
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let summary = draft.clone();
    let entity_for_task = entity.clone();
    let write_context = context(&request);
    let created = blocking(move || -> Result<Vec<WriteOutcome>, AppError> {
        let mut before_commit = |outcomes: &[WriteOutcome]| -> Result<(), String> {
            let events = batch_events(
                &policy,
                &summary,
                &entity_for_task,
                Operation::Create,
                outcomes,
            );
            state.append_all_blocking(events).map_err(|e| e.message)
        };
        Ok(store.import(
            &entity_for_task.logical_name,
            rows,
            write_context,
            &mut before_commit,
        )?)
    })
    .await?;
    run_automations(&request, &entity, Message::Create, &created, draft).await?;
    let created: Vec<Uuid> = created.iter().map(|o| o.id).collect();
    Ok(axum::Json(json!({
        "ImportJobId": import_id,
        "EntitySetName": entity.set_name,
        "FileName": draft.query,
        "CreatedCount": created.len(),
        "RecordIds": created,
    }))
    .into_response())
}

#[cfg(test)]
mod tests;
