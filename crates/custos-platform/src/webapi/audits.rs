//! Dataverse's `audit` table through the Web API — the instance's Audit Summary:
//! `GET audits?$filter=_objectid_value eq <id> and createdon ge 2026-12-01&$top=50`, one row a
//! change (who, when, which record, which action), newest first, and
//! `GET audits(<id>)/Microsoft.Dynamics.CRM.RetrieveAuditDetails()` for one change's old and
//! new values; `GET audits/$count[?$filter=…]` how many rows a filter selects.
//!
//! Read from the audit log as a record's history is (`history.rs`): the instance's change events
//! — changes only, as Dataverse's `audit` table holds no reads — of the entities the caller may
//! read. It needs `prvReadAuditSummary` ("View Audit Summary"); a support engineer is refused
//! and audit log search off refuses it, as for a record's history. `$filter` takes what the log's
//! index answers: `eq` on `_objectid_value`, `objecttypecode`, `_userid_value`, `operation` and
//! `action` (several joined by `or` on one of them), `createdon` compared with `gt`, `ge`, `lt`
//! or `le`, all joined by `and`; anything else is refused by name. Each reading is a search of the
//! trail, recorded as one (`SearchAuditLog`, the OData query in `Query`; for a change's details,
//! the changed record in `RecordIds`).

use axum::response::{IntoResponse, Response};
use custos_audit::{AuditEvent, Operation, ResultStatus, SearchQuery};
use custos_records::{
    CompareOp, EntityDef, Filter, Literal, PAGE_SIZE_MAX, Privilege, page_size, parse_filter,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::annotations::{FORMATTED, Presentation};
use super::history::{
    ACCESS, CHANGES, SETTINGS, audit_record, codes_of, detail, is_access, is_row, merged_page,
    merged_total, refuse_support, search_on,
};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::query::parse_time;

/// The entity set's name.
pub(super) const SET: &str = "audits";
/// The function bound to one of its rows.
pub(super) const DETAILS: &str = "RetrieveAuditDetails";

/// The operations each Dataverse `audit.operation` (1 Create, 2 Update, 3 Delete, 4 Access) and
/// `audit.action` code stands for among those recorded: `history::codes_of` read backwards, so
/// a row's codes and the filter on them cannot disagree.
fn operations_of(field: &str, code: i64) -> Vec<Operation> {
    CHANGES
        .into_iter()
        .chain(ACCESS)
        .chain([SETTINGS])
        .filter(|operation| {
            // A role's operation serves users and teams, its action told apart by the entity.
            ["systemuser", "team"].into_iter().any(|entity| {
                let (operation_code, action_code) = codes_of(*operation, entity);
                code == if field == "operation" {
                    operation_code.0
                } else {
                    action_code.0
                }
            })
        })
        .collect()
}

/// Why an `audit.action` code Custos records is not a row of `audits`: an answer of no rows
/// would say that no such change was made.
fn not_a_row(code: i64) -> Option<&'static str> {
    Some(match code {
        100 | 101 => {
            "a table or column deleted names no record: it is a DeleteEntity or DeleteAttribute event of the audit log (GET /api/audit/records?operation=DeleteEntity)"
        }
        102 | 103 | 105 | 106 | 108 | 109 => {
            "a table's or column's audit settings changed name no record: each change is an UpdateAuditSettings event of the audit log (GET /api/audit/records?operation=UpdateAuditSettings&entity=<table>)"
        }
        107 | 110 | 112 | 113 => {
            "the organization's auditing or user access auditing turned on or off is a row of action 104 (Audit Change at Org Level), not told apart from the instance's other audit settings: filter on action eq 104 and read each row's details"
        }
        111 => {
            "expired events deleted by retention are a PurgeAuditLog event of the audit log (GET /api/audit/records?operation=PurgeAuditLog)"
        }
        _ => return None,
    })
}

/// What `$filter` asks of the log.
#[derive(Debug, Default, PartialEq)]
struct Asked {
    records: Option<Vec<Uuid>>,
    entities: Option<Vec<String>>,
    users: Option<Vec<String>>,
    operations: Option<Vec<Operation>>,
    start_us: i64,
    end_us: i64,
}

/// Keeps what both lists hold: two conditions on one attribute joined by `and`.
fn narrow<T: PartialEq>(slot: &mut Option<Vec<T>>, values: Vec<T>) {
    *slot = Some(match slot.take() {
        None => values,
        Some(held) => held.into_iter().filter(|v| values.contains(v)).collect(),
    });
}

fn unsupported(what: &str) -> AppError {
    AppError::bad_request(format!(
        "audits takes $filter conditions joined by 'and': eq on _objectid_value, objecttypecode, _userid_value, operation or action (several joined by 'or' on one of them), and createdon with gt, ge, lt or le; {what} is not one"
    ))
}

/// The `eq` comparisons of `filter` on one attribute, joined by `or`: its name and values.
fn alternatives(filter: &Filter) -> Result<(String, Vec<Literal>), AppError> {
    match filter {
        Filter::Compare {
            attribute,
            op: CompareOp::Eq,
            value,
        } => Ok((attribute.clone(), vec![value.clone()])),
        Filter::Or(left, right) => {
            let (name, mut values) = alternatives(left)?;
            let (other, more) = alternatives(right)?;
            if other != name {
                return Err(unsupported(&format!("'or' between {name} and {other}")));
            }
            values.extend(more);
            Ok((name, values))
        }
        _ => Err(unsupported("a condition other than eq")),
    }
}

/// Reads one condition (a conjunct) of `$filter` into `asked`.
fn read_condition(filter: &Filter, asked: &mut Asked) -> Result<(), AppError> {
    if let Filter::And(left, right) = filter {
        read_condition(left, asked)?;
        return read_condition(right, asked);
    }
    if let Filter::Compare {
        attribute,
        op,
        value,
    } = filter
        && attribute == "createdon"
    {
        let text = match value {
            Literal::DateTime(text) | Literal::Date(text) => text,
            _ => return Err(unsupported("createdon compared with something not a date")),
        };
        let at = parse_time("createdon", text)?;
        match op {
            CompareOp::Ge => asked.start_us = asked.start_us.max(at),
            CompareOp::Gt => asked.start_us = asked.start_us.max(at.saturating_add(1)),
            CompareOp::Lt => asked.end_us = asked.end_us.min(at),
            CompareOp::Le => asked.end_us = asked.end_us.min(at.saturating_add(1)),
            CompareOp::Eq | CompareOp::Ne => {
                return Err(unsupported(&format!("createdon {}", op.as_str())));
            }
        }
        return Ok(());
    }
    let (name, values) = alternatives(filter)?;
    let guid = |value: &Literal| match value {
        Literal::Guid(id) => Ok(*id),
        _ => Err(unsupported(&format!("{name} with a value not a GUID"))),
    };
    let code = |value: &Literal| match value {
        Literal::Integer(code) => Ok(*code),
        _ => Err(unsupported(&format!("{name} with a value not a number"))),
    };
    match name.as_str() {
        "_objectid_value" => {
            let ids = values.iter().map(guid).collect::<Result<_, _>>()?;
            narrow(&mut asked.records, ids);
        }
        "_userid_value" => {
            let ids: Vec<Uuid> = values.iter().map(guid).collect::<Result<_, _>>()?;
            narrow(
                &mut asked.users,
                ids.into_iter().map(|id| id.to_string()).collect(),
            );
        }
        "objecttypecode" => {
            let names = values
                .iter()
                .map(|value| match value {
                    Literal::String(text) => Ok(text.to_ascii_lowercase()),
                    _ => Err(unsupported(
                        "objecttypecode with a value not a logical name",
                    )),
                })
                .collect::<Result<_, _>>()?;
            narrow(&mut asked.entities, names);
        }
        "operation" | "action" => {
            let codes = values.iter().map(code).collect::<Result<Vec<_>, _>>()?;
            if name == "action"
                && let Some((code, why)) = codes.iter().find_map(|c| Some((c, not_a_row(*c)?)))
            {
                return Err(AppError::bad_request(format!(
                    "action {code} is recorded but is not a row of audits here: {why}"
                )));
            }
            // A role given to or taken from a user (55, 56) or a team (53, 54) is one operation
            // told apart by its entity: such a code stands alone, and narrows the entity too.
            if name == "action"
                && let Some(role) = codes.iter().find(|c| (53..=56).contains(*c))
            {
                if codes.len() > 1 {
                    return Err(unsupported(&format!(
                        "action {role} joined by 'or' with another action"
                    )));
                }
                let holder = if *role >= 55 { "systemuser" } else { "team" };
                narrow(&mut asked.entities, vec![holder.to_string()]);
            }
            let mut operations = Vec::new();
            for code in codes {
                operations.extend(operations_of(&name, code));
            }
            narrow(&mut asked.operations, operations);
        }
        other => return Err(unsupported(&format!("a condition on '{other}'"))),
    }
    Ok(())
}

/// Reads `$filter` (none: every change).
fn read_filter(text: Option<&str>) -> Result<Asked, AppError> {
    let mut asked = Asked {
        start_us: 0,
        end_us: i64::MAX,
        ..Asked::default()
    };
    if let Some(text) = text {
        read_condition(&parse_filter(text)?, &mut asked)?;
    }
    Ok(asked)
}

/// The entities whose changes the caller sees: those they may read, narrowed to those `$filter`
/// names — naming one they may not read is refused (403), not answered empty.
fn readable(request: &WebRequest, named: Option<Vec<String>>) -> Result<Vec<String>, AppError> {
    let catalog = request.instance.store.catalog();
    match named {
        Some(names) => {
            for name in &names {
                if let Some(entity) = catalog.entity(name) {
                    request.require(Privilege::Read, entity)?;
                }
            }
            Ok(names)
        }
        None => Ok(catalog
            .entities()
            .filter(|entity| request.require(Privilege::Read, entity).is_ok())
            .map(|entity| entity.logical_name.clone())
            .collect()),
    }
}

/// Refuses a caller who may not read the audit summary.
fn require_summary(request: &WebRequest) -> Result<(), AppError> {
    refuse_support(request)?;
    request.require(Privilege::ReadAuditSummary, &request.organization()?)
}

/// The record an event is a row of: the record changed, or the user who reached the instance.
fn object_of(event: &AuditEvent) -> Uuid {
    if is_access(event) {
        Uuid::parse_str(&event.user_id).unwrap_or_default()
    } else {
        event.record_ids.first().copied().unwrap_or_default()
    }
}

/// The row of `audits` an event is.
fn row(event: &AuditEvent, formatted: bool, select: Option<&[String]>) -> Json {
    let id = object_of(event);
    let mut row = audit_record(event, id, formatted);
    if let Json::Object(values) = &mut row {
        // A row of the set is of the set's own type.
        values.shift_remove("@odata.type");
        if let Some(select) = select {
            values.retain(|name, _| {
                let property = name.split('@').next().unwrap_or(name);
                select.iter().any(|s| s == property)
            });
        }
    }
    row
}

/// The properties a row has, for `$select`.
const PROPERTIES: [&str; 8] = [
    "auditid",
    "createdon",
    "operation",
    "action",
    "objecttypecode",
    "_objectid_value",
    "_userid_value",
    "_callinguserid_value",
];

/// The searches of the log that answer `asked`: the changes of `entities` (those the caller
/// reads, as `$filter` narrowed them), the changes of the instance's audit settings when
/// `organization` is among them, and users' access to the instance when `systemuser` is — each
/// a row of the user's record, so `_objectid_value` names the user there.
/// None where no condition admits anything (two conditions on one attribute that no value
/// meets both).
fn searches(request: &WebRequest, asked: Asked, entities: Vec<String>) -> Vec<SearchQuery> {
    let operations = |admitted: &[Operation]| -> Vec<String> {
        admitted
            .iter()
            .filter(|o| {
                asked
                    .operations
                    .as_ref()
                    .is_none_or(|asked| asked.contains(o))
            })
            .map(|o| o.as_str().to_string())
            .collect()
    };
    let base = SearchQuery {
        start_us: asked.start_us,
        end_us: asked.end_us,
        instances: vec![request.instance.name.clone()],
        statuses: vec![ResultStatus::Succeeded],
        ..SearchQuery::default()
    };
    let mut out = Vec::new();
    let changes = SearchQuery {
        operations: operations(&CHANGES),
        users: asked.users.clone().unwrap_or_default(),
        record_ids: asked.records.clone().unwrap_or_default(),
        entities: entities.clone(),
        ..base.clone()
    };
    if !changes.operations.is_empty()
        && !changes.entities.is_empty()
        && !nothing(&asked.records)
        && !nothing(&asked.users)
    {
        out.push(changes);
    }
    // The instance's audit settings: changes of its one `organization` record (an entity's or
    // attribute's flags name no record, and are not rows).
    let organization = request.instance.organization_id;
    let settings = SearchQuery {
        operations: operations(&[SETTINGS]),
        users: asked.users.clone().unwrap_or_default(),
        record_ids: vec![organization],
        entities: vec![custos_records::ORGANIZATION_ENTITY.to_string()],
        ..base.clone()
    };
    if !settings.operations.is_empty()
        && entities
            .iter()
            .any(|e| e == custos_records::ORGANIZATION_ENTITY)
        && asked
            .records
            .as_ref()
            .is_none_or(|records| records.contains(&organization))
        && !nothing(&asked.users)
    {
        out.push(settings);
    }
    // An access's record is its user: `_objectid_value` and `_userid_value` both name them.
    let records = asked
        .records
        .map(|ids| ids.iter().map(Uuid::to_string).collect::<Vec<_>>());
    let users = match (records, asked.users) {
        (Some(records), Some(users)) => Some(
            records
                .into_iter()
                .filter(|r| users.contains(r))
                .collect::<Vec<_>>(),
        ),
        (records, users) => records.or(users),
    };
    let access = SearchQuery {
        operations: operations(&ACCESS),
        users: users.clone().unwrap_or_default(),
        ..base
    };
    if !access.operations.is_empty()
        && entities.iter().any(|e| e == "systemuser")
        && !nothing(&users)
    {
        out.push(access);
    }
    out
}

/// The searches that answer `$filter` (`filter`) for the caller — refused unless they may read
/// the summary and every entity it names — once the log holds every acknowledged event.
async fn searches_for(
    request: &WebRequest,
    filter: Option<&str>,
) -> Result<Vec<SearchQuery>, AppError> {
    require_summary(request)?;
    let mut asked = read_filter(filter)?;
    let entities = readable(request, asked.entities.take())?;
    let searches = searches(request, asked, entities);
    request.state.audit_caught_up().await?;
    Ok(searches)
}

/// Whether `$filter` asked for values of an attribute that no value meets: `Some` and empty.
fn nothing<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(Vec::is_empty)
}

/// Answers `GET audits`; `draft` becomes its `SearchAuditLog`.
pub(super) async fn list(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::SearchAuditLog;
    draft.query = format!("{SET}?{}", recorded_query(&request));
    let mut filter = None;
    let mut top = None;
    let mut select = None;
    let mut counted = false;
    let mut before_seq = None;
    for (name, value) in &request.query {
        match name.as_str() {
            "$filter" => filter = Some(value.as_str()),
            "$top" => {
                top = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|t| *t >= 1)
                        .ok_or_else(|| AppError::bad_request("$top is a whole number from 1"))?,
                )
            }
            "$select" => {
                let names: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(unknown) = names.iter().find(|n| !PROPERTIES.contains(&n.as_str())) {
                    return Err(AppError::bad_request(format!(
                        "'{unknown}' is not a property of audit"
                    )));
                }
                select = Some(names);
            }
            "$orderby" if !value.trim().eq_ignore_ascii_case("createdon desc") => {
                return Err(AppError::bad_request(
                    "audits are ordered newest first only: $orderby=createdon desc",
                ));
            }
            "$orderby" => {}
            "$count" => {
                counted = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(AppError::bad_request("$count is true or false")),
                }
            }
            "$skiptoken" => {
                before_seq =
                    Some(value.parse::<u64>().map_err(|_| {
                        AppError::bad_request("$skiptoken is not one this set gave")
                    })?)
            }
            "$format" => {}
            other if other.starts_with('$') => {
                return Err(AppError::bad_request(format!(
                    "query option {other} is not supported on audits"
                )));
            }
            _ => {}
        }
    }
    let page = page_size(request.prefer().as_deref())?
        .min(top.unwrap_or(PAGE_SIZE_MAX))
        .min(PAGE_SIZE_MAX);
    let searches = searches_for(&request, filter).await?;
    let state = request.state.clone();
    let (events, next, total) = blocking(move || -> Result<_, AppError> {
        search_on(&state)?;
        let total = counted
            .then(|| merged_total(&state.log, &searches))
            .transpose()?;
        let merged = merged_page(&state.log, &searches, before_seq, page as usize)?;
        Ok((merged.events, merged.next, total))
    })
    .await?;
    let mut recorded = draft.clone();
    recorded.result_count = events.len() as u64;
    request.state.record(recorded).await?;
    let presentation = Presentation::of(&request);
    let formatted = presentation.wants(FORMATTED);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$metadata#{SET}", request.service_root)),
    );
    if let Some(total) = total {
        body.insert("@odata.count".into(), json!(total));
    }
    body.insert(
        "value".into(),
        Json::Array(
            events
                .iter()
                .map(|(_, event)| row(event, formatted, select.as_deref()))
                .collect(),
        ),
    );
    if let Some(next) = next {
        body.insert(
            "@odata.nextLink".into(),
            json!(request.next_link(SET, &next.to_string())),
        );
    }
    Ok(super::records::presented(&presentation, body))
}

/// Answers `GET audits/$count[?$filter=…]`: how many rows the filter selects, as plain text,
/// recorded as the search of the trail it is (`SearchAuditLog`, the count in `ResultCount`).
pub(super) async fn count(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::SearchAuditLog;
    draft.query = format!("{SET}/$count?{}", recorded_query(&request));
    let mut filter = None;
    for (name, value) in &request.query {
        match name.as_str() {
            "$filter" => filter = Some(value.as_str()),
            "$format" => {}
            other if other.starts_with('$') => {
                return Err(AppError::bad_request(format!(
                    "query option {other} is not supported on audits/$count (only $filter)"
                )));
            }
            _ => {}
        }
    }
    let searches = searches_for(&request, filter).await?;
    let state = request.state.clone();
    let total = blocking(move || -> Result<u64, AppError> {
        search_on(&state)?;
        merged_total(&state.log, &searches)
    })
    .await?;
    let mut recorded = draft.clone();
    recorded.result_count = total;
    request.state.record(recorded).await?;
    Ok(super::records::plain_text(total.to_string()))
}

/// The query as recorded: its pairs, decoded, in order.
fn recorded_query(request: &WebRequest) -> String {
    request
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The change event `id` of this instance whose entity the caller may read, or 404, asked for
/// at `query` (`draft` becomes its `SearchAuditLog`).
async fn change(
    request: &WebRequest,
    draft: &mut EventDraft,
    id: Uuid,
    query: String,
) -> Result<(AuditEvent, EntityDef), AppError> {
    draft.operation = Operation::SearchAuditLog;
    draft.query = query;
    draft.record_ids = Vec::new();
    require_summary(request)?;
    request.state.audit_caught_up().await?;
    let state = request.state.clone();
    let found = blocking(move || -> Result<_, AppError> {
        search_on(&state)?;
        Ok(state.log.get(id)?)
    })
    .await?;
    let missing = || AppError::not_found(format!("audit with id {id} does not exist"));
    let (_, event) = found.ok_or_else(missing)?;
    if event.instance != request.instance.name || !is_row(&event) {
        return Err(missing());
    }
    let entity_name = if is_access(&event) {
        "systemuser"
    } else {
        event.entity_name.as_str()
    };
    let entity = request
        .instance
        .store
        .catalog()
        .entity(entity_name)
        .cloned()
        .ok_or_else(missing)?;
    request.require(Privilege::Read, &entity)?;
    Ok((event, entity))
}

/// Answers `GET audits(<id>)`: one row.
pub(super) async fn one(
    request: WebRequest,
    draft: &mut EventDraft,
    id: Uuid,
) -> Result<Response, AppError> {
    let (event, _) = change(&request, draft, id, format!("{SET}({id})")).await?;
    let mut recorded = draft.clone();
    recorded.result_count = 1;
    request.state.record(recorded).await?;
    let presentation = Presentation::of(&request);
    let mut body = match row(&event, presentation.wants(FORMATTED), None) {
        Json::Object(values) => values,
        _ => Map::new(),
    };
    body.shift_insert(
        0,
        "@odata.context".into(),
        json!(format!("{}/$metadata#{SET}/$entity", request.service_root)),
    );
    Ok(super::records::presented(&presentation, body))
}

/// Answers `GET audits(<id>)/Microsoft.Dynamics.CRM.RetrieveAuditDetails()`: the change's
/// details — the record's values before and after — recorded with the record they are of.
pub(super) async fn details(
    request: WebRequest,
    draft: &mut EventDraft,
    id: Uuid,
) -> Result<Response, AppError> {
    let (event, entity) = change(&request, draft, id, format!("{SET}({id})/{DETAILS}")).await?;
    let record = object_of(&event);
    let mut recorded = draft.clone();
    recorded.set_entity(&entity);
    recorded.record_ids = vec![record];
    recorded.result_count = 1;
    request.state.record(recorded).await?;
    let presentation = Presentation::of(&request);
    Ok(axum::Json(json!({
        "@odata.context": format!(
            "{}/$metadata#Microsoft.Dynamics.CRM.RetrieveAuditDetailsResponse",
            request.service_root
        ),
        "AuditDetail": detail(&entity, record, &event, presentation.wants(FORMATTED)),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_into_the_logs_search() {
        let id = Uuid::from_u128(42);
        let asked = read_filter(Some(&format!(
            "_objectid_value eq {id} and (objecttypecode eq 'account' or objecttypecode eq 'Contact') and createdon ge 2026-12-01T00:00:00Z and createdon lt 2026-12-02 and operation eq 2 and action eq 13"
        )))
        .unwrap();
        assert_eq!(asked.records, Some(vec![id]));
        assert_eq!(
            asked.entities,
            Some(vec!["account".to_string(), "contact".to_string()])
        );
        assert_eq!(asked.operations, Some(vec![Operation::Assign]));
        // A user's access is operation 4, actions 64 (the console) and 65 (the Web API).
        let access = read_filter(Some("operation eq 4 and (action eq 65 or action eq 1)")).unwrap();
        assert_eq!(access.operations, Some(vec![Operation::UserAccessViaSdk]));
        assert_eq!(
            asked.start_us,
            parse_time("t", "2026-12-01T00:00:00Z").unwrap()
        );
        assert_eq!(asked.end_us, parse_time("t", "2026-12-02").unwrap());
        // Two conditions on one attribute keep what both admit.
        // A role's action names its holder's entity too.
        let roles = read_filter(Some("action eq 55")).unwrap();
        assert_eq!(roles.operations, Some(vec![Operation::AssignRole]));
        assert_eq!(roles.entities, Some(vec!["systemuser".to_string()]));
        assert!(read_filter(Some("action eq 55 or action eq 53")).is_err());
        let both = read_filter(Some("action eq 1 and action eq 3")).unwrap();
        assert_eq!(both.operations, Some(Vec::new()));
        assert_eq!(
            read_filter(None).unwrap(),
            Asked {
                start_us: 0,
                end_us: i64::MAX,
                ..Asked::default()
            }
        );
        for bad in [
            "_objectid_value ne 00000000-0000-0000-0000-00000000002a",
            "name eq 'x'",
            "operation eq 1 or action eq 2",
            "not (operation eq 1)",
            "createdon eq 2026-12-01",
            "createdon ge 'yesterday'",
            "operation eq 'two'",
            "_userid_value eq 'admin'",
            "contains(objecttypecode, 'acc')",
            "objecttypecode eq 1",
        ] {
            assert!(read_filter(Some(bad)).is_err(), "{bad}");
        }
        // A change Custos records but does not show as a row is refused, not answered with
        // none (which would say it was never made); an action it never records has no rows.
        for code in [
            100, 101, 102, 103, 105, 106, 107, 108, 109, 110, 111, 112, 113,
        ] {
            let refused = read_filter(Some(&format!("action eq 48 or action eq {code}")))
                .expect_err("refused");
            assert!(
                refused.message.contains(&format!("action {code} ")),
                "{code}"
            );
        }
        assert_eq!(
            read_filter(Some("action eq 50")).unwrap().operations,
            Some(Vec::new()),
            "Book: nothing here makes one"
        );
    }
}
