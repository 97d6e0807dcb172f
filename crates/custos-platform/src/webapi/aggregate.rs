//! `GET set?$apply=…`: aggregates of an entity's records (`custos_records::apply`).
//!
//! The records are read by the list query every page takes (their filter typed and compiled
//! as a `$filter`), at most `AGGREGATE_RECORDS_MAX` of them, and the answer is computed from
//! them. Its event is the list's — `RetrieveMultiple` when the entity's retrieve multiple
//! auditing is on — and lists every record whose values went into the answer: an aggregate
//! shows what those records hold as surely as a page of them would.

use axum::response::Response;
use custos_records::{
    AGGREGATE_RECORDS_MAX, Apply, EntityDef, PAGE_SIZE_MAX, QueryOptions, Record, RecordQuery,
    Value,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::annotations::{FORMATTED, Presentation};
use super::expand;
use super::records::{filter_context, presented, wide_number};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

/// The `$apply` and `$orderby` of a request, once nothing else that would change what it reads
/// is beside them.
fn apply_options(request: &WebRequest) -> Result<(&str, Option<&str>), AppError> {
    let (mut apply, mut order_by) = (None, None);
    for (name, value) in &request.query {
        let slot = match name.as_str() {
            "$apply" => &mut apply,
            "$orderby" => &mut order_by,
            "$format" => {
                custos_records::parse_query_options([("$format", value.as_str())])?;
                continue;
            }
            "savedQuery" | "userQuery" | "fetchXml" => {
                return Err(AppError::bad_request(format!(
                    "{name} does not apply beside $apply: an aggregation reads the records its own filter(…) names"
                )));
            }
            other if other.starts_with('$') || other.starts_with('@') => {
                return Err(AppError::bad_request(format!(
                    "{other} does not apply beside $apply: filter the records with $apply=filter(…)/groupby(…) and order the groups with $orderby"
                )));
            }
            other => {
                custos_records::check_custom_option(other)?;
                continue;
            }
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(AppError::bad_request(format!(
                "query option {name} is given more than once"
            )));
        }
    }
    let apply = apply.ok_or_else(|| AppError::bad_request("$apply is missing"))?;
    Ok((apply, order_by))
}

/// Every record of `entity` that `options` selects, refused past `AGGREGATE_RECORDS_MAX`.
fn read_all(
    store: &dyn custos_records::RecordStore,
    entity: &str,
    mut options: QueryOptions,
) -> Result<Vec<Record>, AppError> {
    let mut records = Vec::new();
    loop {
        let page = store.retrieve_multiple(&RecordQuery {
            entity,
            options: &options,
            page_size: PAGE_SIZE_MAX,
        })?;
        records.extend(page.records);
        if records.len() > AGGREGATE_RECORDS_MAX {
            return Err(AppError::bad_request(format!(
                "AggregateQueryRecordLimit exceeded: an aggregation reads at most {AGGREGATE_RECORDS_MAX} records; filter them with $apply=filter(…)/…"
            )));
        }
        match page.next {
            Some(next) => options.after = Some(next),
            None => return Ok(records),
        }
    }
}

/// Answers `GET set?$apply=…` for `entity` (the caller may read it; `draft` is its
/// `RetrieveMultiple`).
pub(super) async fn aggregated(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    entity: EntityDef,
) -> Result<Response, AppError> {
    let (text, order_by) = apply_options(&request)?;
    let apply =
        custos_records::read_apply(&entity, text, order_by, Some(&filter_context(&request)))?;
    answer(request, draft, set, entity, apply, false).await
}

/// Answers aggregation `apply` of `entity`'s records (a `$apply`, or a FetchXML aggregate
/// query, whose answers leave out empty values: `leave_out_empty`).
pub(super) async fn answer(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    entity: EntityDef,
    apply: Apply,
    leave_out_empty: bool,
) -> Result<Response, AppError> {
    let mut select = apply.attributes();
    if select.is_empty() {
        select.push(entity.primary_id());
    }
    let options = QueryOptions {
        filter: apply.filter.clone(),
        select: Some(select),
        ..QueryOptions::default()
    };
    let store = request.instance.store.clone();
    let logical_name = entity.logical_name.clone();
    let records = blocking(move || read_all(store.as_ref(), &logical_name, options)).await?;
    let rows = custos_records::aggregate(&entity, &apply, &records)?;

    // The groups' lookups are shown by name when formatted values are asked for: those
    // records are seen too.
    let groups: Vec<Record> = rows
        .iter()
        .map(|row| Record {
            id: Uuid::nil(),
            values: apply
                .group_by
                .iter()
                .cloned()
                .zip(row.group.iter().cloned())
                .collect(),
        })
        .collect();
    let mut presentation = Presentation::of(&request);
    let seen = presentation
        .read_lookup_names(&request, &entity, &groups, Some(&apply.group_by))
        .await?;
    draft.details = json!({"Aggregate": {"Rows": rows.len()}}).to_string();
    if request
        .policy()
        .audits_retrieve_multiple(&entity.logical_name)
    {
        // The records of the rows answered (FetchXML's `top` may leave some out).
        let mut event = draft.clone();
        event.record_ids = rows
            .iter()
            .flat_map(|r| r.members.iter().copied())
            .collect();
        event.result_count = event.record_ids.len() as u64;
        request.state.record(event).await?;
    }
    expand::record_seen(&request, draft, seen).await?;

    let number = |value: &Value, wide: bool| {
        if wide {
            request.wide(value.to_json())
        } else {
            value.to_json()
        }
    };
    let values: Vec<Json> = rows
        .iter()
        .zip(&groups)
        .map(|(row, group)| {
            let mut out = Map::new();
            for ((name, shown), value) in apply
                .group_by
                .iter()
                .zip(&apply.group_names)
                .zip(&row.group)
            {
                let Some(attribute) = entity.attribute(name) else {
                    continue;
                };
                // The group's value and its annotations, under the name it is answered as
                // (the attribute's own, or a FetchXML alias).
                let web_name = attribute.web_name();
                let mut annotated = Map::new();
                let value = number(value, wide_number(&attribute.attribute_type));
                presentation.annotate(
                    &entity,
                    &group.values,
                    Map::from_iter([(web_name.clone(), value)]),
                    &mut annotated,
                );
                for (key, value) in annotated {
                    let key = match key.strip_prefix(web_name.as_str()) {
                        Some(rest) if rest.is_empty() || rest.starts_with('@') => {
                            format!("{shown}{rest}")
                        }
                        _ => key,
                    };
                    out.insert(key, value);
                }
            }
            for (aggregate, value) in apply.aggregates.iter().zip(&row.values) {
                let source = aggregate
                    .attribute
                    .as_ref()
                    .and_then(|name| entity.attribute(name));
                if let Some(text) = presentation.formatted_aggregate(source, value) {
                    out.insert(format!("{}@{FORMATTED}", aggregate.alias), json!(text));
                }
                out.insert(aggregate.alias.clone(), number(value, true));
            }
            if leave_out_empty {
                out.retain(|_, value| !value.is_null());
            }
            Json::Object(out)
        })
        .collect();
    let mut body = Map::new();
    if !request.metadata_none() {
        body.insert(
            "@odata.context".into(),
            json!(format!("{}/$metadata#{set}", request.service_root)),
        );
    }
    body.insert("value".into(), Json::Array(values));
    Ok(presented(&presentation, body))
}
