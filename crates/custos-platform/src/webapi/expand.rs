//! `$expand`: the related records shown with each record of a retrieve or retrieve multiple —
//! through a lookup (single-valued: the record it points at) or its reverse (collection-valued:
//! the records whose lookup points here).
//!
//! What an expansion shows is a multi-record view of the related entity: the caller needs its
//! read privilege, and, when that entity's lists are audited, the records shown are a
//! `RetrieveMultiple` event of their own entity (same correlation as the request's event),
//! appended before the answer.

use std::collections::{BTreeMap, BTreeSet};

use custos_audit::Operation;
use custos_records::{
    CompareOp, EntityDef, Expand, Filter, Literal, PAGE_SIZE_MAX, Privilege, QueryOptions, Record,
    RecordQuery, Value,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::records::{check_select, record_json};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

/// One expanded navigation property over a set of records.
pub(super) struct Expanded {
    property: String,
    shows: EntityDef,
    select: Option<Vec<String>>,
    collection: bool,
    /// The related records by the id of the record they are shown with.
    related: BTreeMap<Uuid, Vec<Record>>,
}

/// `ids` as the filter `attribute in (ids…)`, a balanced tree of `eq`s.
pub(super) fn any_of(attribute: &str, ids: &[Uuid]) -> Filter {
    match ids {
        [] => Filter::Constant(false),
        [one] => Filter::Compare {
            attribute: attribute.to_string(),
            op: CompareOp::Eq,
            value: Literal::Guid(*one),
        },
        _ => {
            let (left, right) = ids.split_at(ids.len() / 2);
            Filter::Or(
                Box::new(any_of(attribute, left)),
                Box::new(any_of(attribute, right)),
            )
        }
    }
}

fn lookup_of(record: &Record, attribute: &str) -> Option<Uuid> {
    match record.values.get(attribute) {
        Some(Value::Guid(id)) => Some(*id),
        _ => None,
    }
}

/// Reads what `items` expand for `records` of `entity`.
pub(super) async fn fetch(
    request: &WebRequest,
    entity: &EntityDef,
    items: &[Expand],
    records: &[Record],
) -> Result<Vec<Expanded>, AppError> {
    if items.is_empty() {
        // The audited list's own path: nothing to look up.
        return Ok(Vec::new());
    }
    let catalog = request.instance.store.catalog();
    // `*`: every navigation property the request does not name, with no options (OData's
    // star expansion) — those whose records the caller may read: a role that cannot read
    // users still expands an account's contacts, where naming `createdby` is refused.
    let mut items = items.to_vec();
    if let Some(star) = items.iter().position(|i| i.property == "*") {
        items.remove(star);
        let named: BTreeSet<String> = items.iter().map(|i| i.property.clone()).collect();
        items.extend(
            catalog
                .navigations(entity)
                .into_iter()
                .filter(|n| {
                    !named.contains(&n.name) && request.require(Privilege::Read, n.shows()).is_ok()
                })
                .map(|n| Expand {
                    property: n.name,
                    options: QueryOptions::default(),
                }),
        );
    }
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let navigation = catalog.navigation(entity, &item.property).ok_or_else(|| {
            AppError::bad_request(format!(
                "'{}' is not a navigation property of '{}'",
                item.property, entity.logical_name
            ))
        })?;
        let shows = navigation.shows().clone();
        check_select(&shows, &item.options.select)?;
        let nested = &item.options;
        if !navigation.collection
            && (nested.filter.is_some() || nested.top.is_some() || !nested.order_by.is_empty())
        {
            return Err(AppError::bad_request(format!(
                "'{}' is single-valued: only $select applies inside its $expand",
                item.property
            )));
        }
        custos_records::check_query(&shows, nested)?;
        request.require(Privilege::Read, &shows)?;
        let lookup = navigation.lookup.logical_name.clone();
        // The ids to look for: the lookups' targets, or the records themselves.
        let keys: Vec<Uuid> = if navigation.collection {
            records.iter().map(|r| r.id).collect()
        } else {
            records
                .iter()
                .filter_map(|r| lookup_of(r, &lookup))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let matched = if navigation.collection {
            lookup.clone()
        } else {
            shows.primary_id()
        };
        let mut options = QueryOptions {
            filter: Some(any_of(&matched, &keys)),
            order_by: nested.order_by.clone(),
            ..QueryOptions::default()
        };
        if let Some(filter) = nested.filter.clone() {
            options.filter = Some(Filter::And(
                Box::new(options.filter.take().expect("set above")),
                Box::new(filter),
            ));
        }
        let store = request.instance.store.clone();
        let logical_name = shows.logical_name.clone();
        let found = if keys.is_empty() {
            Vec::new()
        } else {
            blocking(move || -> Result<Vec<Record>, AppError> {
                Ok(store
                    .retrieve_multiple(&RecordQuery {
                        entity: &logical_name,
                        options: &options,
                        page_size: PAGE_SIZE_MAX + 1,
                    })?
                    .records)
            })
            .await?
        };
        if found.len() as u64 > PAGE_SIZE_MAX {
            return Err(AppError::bad_request(format!(
                "'{}' expands to more than {PAGE_SIZE_MAX} records; narrow it with $filter or $top inside $expand, or ask for fewer records",
                item.property
            )));
        }
        let mut related: BTreeMap<Uuid, Vec<Record>> = BTreeMap::new();
        if navigation.collection {
            for record in found {
                if let Some(parent) = lookup_of(&record, &lookup) {
                    let shown = related.entry(parent).or_default();
                    if nested.top.is_none_or(|top| (shown.len() as u64) < top) {
                        shown.push(record);
                    }
                }
            }
        } else {
            let by_id: BTreeMap<Uuid, Record> = found.into_iter().map(|r| (r.id, r)).collect();
            for record in records {
                if let Some(target) = lookup_of(record, &lookup).and_then(|id| by_id.get(&id)) {
                    related.insert(record.id, vec![target.clone()]);
                }
            }
        }
        out.push(Expanded {
            property: item.property.clone(),
            shows,
            select: nested.select.clone(),
            collection: navigation.collection,
            related,
        });
    }
    Ok(out)
}

/// Records of another entity an answer shows besides its own: an expansion's, or those whose
/// names a lookup's formatted value shows.
pub(super) struct Seen {
    /// Their entity.
    pub(super) entity: EntityDef,
    /// Their ids.
    pub(super) ids: BTreeSet<Uuid>,
    /// What showed them (the event's `Details`).
    pub(super) details: Json,
}

/// What each expansion shows.
pub(super) fn seen(from: &EntityDef, expanded: &[Expanded]) -> Vec<Seen> {
    expanded
        .iter()
        .map(|expansion| Seen {
            entity: expansion.shows.clone(),
            ids: expansion.related.values().flatten().map(|r| r.id).collect(),
            details: json!({
                "ExpandedFrom": from.logical_name,
                "NavigationProperty": expansion.property,
            }),
        })
        .collect()
}

/// Appends, for each of `seen` whose entity's lists are audited and that showed records, a
/// `RetrieveMultiple` of exactly those records under that entity.
pub(super) async fn record_seen(
    request: &WebRequest,
    draft: &EventDraft,
    seen: Vec<Seen>,
) -> Result<(), AppError> {
    let policy = request.policy();
    for shown in seen {
        if shown.ids.is_empty() || !policy.audits_retrieve_multiple(&shown.entity.logical_name) {
            continue;
        }
        let mut event = draft.clone();
        event.operation = Operation::RetrieveMultiple;
        event.set_entity(&shown.entity);
        event.result_count = shown.ids.len() as u64;
        event.record_ids = shown.ids.into_iter().collect();
        event.details = shown.details.to_string();
        request.state.record(event).await?;
    }
    Ok(())
}

/// Adds the expansions of record `id` to its JSON `body`: an object (or null) for a
/// single-valued property, an array for a collection.
pub(super) fn attach(
    request: &WebRequest,
    expanded: &[Expanded],
    id: Uuid,
    body: &mut Map<String, Json>,
) {
    for expansion in expanded {
        let shown = expansion.related.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mut values = shown.iter().map(|record| {
            Json::Object(record_json(
                request,
                &expansion.shows,
                record,
                expansion.select.as_deref(),
            ))
        });
        let value = if expansion.collection {
            Json::Array(values.collect())
        } else {
            values.next().unwrap_or(Json::Null)
        };
        body.insert(expansion.property.clone(), value);
    }
}
