//! Record operations of the Web API: create, retrieve, retrieve multiple, update (and upsert),
//! delete, and role assignment; each audited as the instance's policy says.
//!
//! Reads append their event after the query and before answering. Writes append theirs inside
//! the record store's transaction (the `before_commit` hook), so a change is never committed
//! without a durable event; a refused append rolls the change back and answers 503.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use custos_records::{
    AttributeType, Catalog, ChangeFailed, EntityDef, Filter, FilterContext, NewPrincipal,
    ORGANIZATION_ENTITY, PAGE_SIZE_MAX, Privilege, ROLE_IDS, Record, RecordChange, RecordQuery,
    SHARE_ENTITY, Value, WriteContext, WriteMode, WriteOutcome, check_custom_option, page_size,
    parse_query_options, parse_query_options_at,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::annotations::Presentation;
use super::cascade::Cascade;
use super::expand;
use super::sharing::require_on_record;
use crate::automation::{self, Message, activation_operation, is_automation};
use custos_http::blocking;
use custos_http::credentials::hash_secret;
use custos_http::draft::{EventDraft, changes};
use custos_http::error::{AppError, ErrorCode};
use custos_http::names;

/// Entities whose every change is an admin event, recorded whatever the audit settings say
/// (SPEC §4: user, team and role changes).
const ALWAYS_AUDITED: [&str; 5] = [
    "systemuser",
    "team",
    "role",
    "workflow",
    "sdkmessageprocessingstep",
];

/// Whether a change to a record of `entity` is recorded.
pub(super) fn audits_change(policy: &custos_audit::AuditPolicy, entity: &EntityDef) -> bool {
    ALWAYS_AUDITED.contains(&entity.logical_name.as_str())
        || policy.audits_change(&entity.logical_name)
}

/// After a write: the instance's role grants or automations are reloaded when one of them
/// changed, and the active processes and plug-in steps that react to the write run.
async fn after_write(
    request: &WebRequest,
    entity: &EntityDef,
    message: Message,
    outcome: &WriteOutcome,
    trigger: &EventDraft,
) -> Result<(), AppError> {
    if entity.logical_name == "role" {
        request.instance.refresh_roles()?;
    }
    if is_automation(&entity.logical_name) {
        request.state.own.automations.refresh(&request.instance)?;
    }
    run_automations(
        request,
        entity,
        message,
        std::slice::from_ref(outcome),
        trigger,
    )
    .await
}

/// Runs the processes and plug-in steps that react to `outcomes` (writes of `entity` by
/// `message`), then those of the records the writes reached: a delete's records taken with it
/// or unlinked are deleted and updated as their own requests would be, so their automations
/// run too — a webhook told of every contact deleted must hear of those that went with their
/// account. (A share that went with a record is no record's message.)
pub(super) async fn run_automations(
    request: &WebRequest,
    entity: &EntityDef,
    message: Message,
    outcomes: &[WriteOutcome],
    trigger: &EventDraft,
) -> Result<(), AppError> {
    let (state, instance) = (&request.state, &request.instance);
    let written: Vec<&WriteOutcome> = outcomes.iter().collect();
    automation::run(state, instance, entity, message, &written, trigger).await?;
    // The records reached, by entity and message, in the order first reached.
    let mut reached: Vec<(&str, Message, Vec<&WriteOutcome>)> = Vec::new();
    for one in outcomes
        .iter()
        .flat_map(|outcome| &outcome.cascaded)
        .filter(|one| one.entity != SHARE_ENTITY)
    {
        let message = if one.after.is_some() {
            Message::Update
        } else {
            Message::Delete
        };
        match reached
            .iter_mut()
            .find(|(name, m, _)| *name == one.entity && *m == message)
        {
            Some((_, _, group)) => group.push(one),
            None => reached.push((&one.entity, message, vec![one])),
        }
    }
    for (name, message, group) in reached {
        let Some(entity) = instance.store.catalog().entity(name).cloned() else {
            continue;
        };
        automation::run(state, instance, &entity, message, &group, trigger).await?;
    }
    Ok(())
}

/// Organization attributes that are audit settings: changing one is `UpdateAuditSettings`.
const AUDIT_SETTINGS: [&str; 5] = [
    "isauditenabled",
    "isreadauditenabled",
    "isuseraccessauditenabled",
    "auditretentionperiodv2",
    "useraccessauditinginterval",
];

pub(super) fn entity_by_set(request: &WebRequest, set: &str) -> Result<EntityDef, AppError> {
    request
        .instance
        .store
        .catalog()
        .by_set_name(set)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity set '{set}' does not exist")))
}

/// The id of the record `set(key)` names, where `key` is not a bare GUID: a named primary key
/// (`accountid=…`) or the values of one of the entity's alternate keys (found as
/// [`key_values`] says, with the Read privilege on the entity). A `PATCH` naming no
/// record is an upsert that creates one (a new id; the key's values are given to it through
/// [`WebRequest::upsert_key`]) unless `If-Match` asks for an existing one, or the key names the
/// record a longer path starts from (`upsert` false); anything else is 404.
pub(super) async fn find_by_key(
    request: &mut WebRequest,
    draft: &mut EventDraft,
    set: &str,
    key: &str,
    upsert: bool,
) -> Result<Uuid, AppError> {
    // Until the record is found, the event names what was asked for.
    draft.query = query_text(&format!("{set}({key})"), request);
    let entity = entity_by_set(request, set)?;
    let values = match key_values(request, &entity, key)? {
        Ok(id) => return Ok(id),
        Err(values) => values,
    };
    let store = request.instance.store.clone();
    let (logical_name, wanted) = (entity.logical_name.clone(), values.clone());
    let found =
        blocking(move || -> Result<_, AppError> { Ok(store.find_by_key(&logical_name, &wanted)?) })
            .await?;
    if let Some(id) = found {
        draft.record_ids = vec![id];
        return Ok(id);
    }
    if upsert && request.method == axum::http::Method::PATCH && request.header("if-match").is_none()
    {
        request.upsert_key = Some(values);
        return Ok(Uuid::new_v4());
    }
    Err(AppError::not_found(no_record_with(&entity, &values)))
}

/// Whether `$select` (all when `None`) names `attribute`, by web or logical name.
pub(super) fn selected(
    attribute: &custos_records::AttributeDef,
    select: Option<&[String]>,
) -> bool {
    select.is_none_or(|names| {
        names
            .iter()
            .any(|n| *n == attribute.web_name() || *n == attribute.logical_name)
    })
}

/// The Web API JSON of a record, limited to `select` when given.
pub(super) fn record_json(
    request: &WebRequest,
    entity: &EntityDef,
    record: &Record,
    select: Option<&[String]>,
) -> Map<String, Json> {
    let mut out = Map::new();
    if !request.metadata_none()
        && let Some(Value::Integer(version)) = record.values.get("versionnumber")
    {
        out.insert("@odata.etag".into(), json!(format!("W/\"{version}\"")));
    }
    for attribute in &entity.attributes {
        if selected(attribute, select) || attribute.logical_name == entity.primary_id() {
            let web_name = attribute.web_name();
            let value = record
                .values
                .get(&attribute.logical_name)
                .map_or(Json::Null, Value::to_json);
            let value = if wide_number(&attribute.attribute_type) {
                request.wide(value)
            } else {
                value
            };
            out.insert(web_name, value);
        }
    }
    out
}

/// Whether values of `attribute_type` are decimals or money.
fn is_decimal(attribute_type: &AttributeType) -> bool {
    matches!(
        attribute_type,
        AttributeType::Decimal | AttributeType::Money
    )
}

/// Whether values of `attribute_type` are `Edm.Int64` or `Edm.Decimal`, the numbers OData's
/// `IEEE754Compatible=true` writes and reads as strings.
pub(super) fn wide_number(attribute_type: &AttributeType) -> bool {
    matches!(
        attribute_type,
        AttributeType::BigInt | AttributeType::Decimal | AttributeType::Money
    )
}

pub(super) fn check_select(
    entity: &EntityDef,
    select: &Option<Vec<String>>,
) -> Result<(), AppError> {
    for name in select.iter().flatten() {
        if entity.attribute_by_web_name(name).is_none() {
            return Err(AppError::bad_request(format!(
                "attribute '{name}' in $select does not exist on entity '{}'",
                entity.logical_name
            )));
        }
    }
    Ok(())
}

/// The decoded query string, as recorded in `Query`.
fn query_text(set: &str, request: &WebRequest) -> String {
    let pairs: Vec<String> = request
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        set.to_string()
    } else {
        format!("{set}?{}", pairs.join("&"))
    }
}

/// A view a retrieve multiple runs (`?savedQuery=<id>` or `?userQuery=<id>`): its query
/// options, and what the event records of it.
pub(super) struct View {
    /// `$filter`, `$select` and `$orderby` of the view.
    pub(super) options: Vec<(String, String)>,
    /// What the event records of the view.
    pub(super) details: Json,
}

/// The view a request names (see [`load_view`]); the request may add no query option the view
/// brings itself.
fn view_query(request: &WebRequest, entity: &EntityDef) -> Result<Option<View>, AppError> {
    let named: Vec<&(String, String)> = request
        .query
        .iter()
        .filter(|(k, _)| k == "savedQuery" || k == "userQuery")
        .collect();
    let (kind, id) = match named.as_slice() {
        [] => return Ok(None),
        [(kind, id)] => (kind.as_str(), id.as_str()),
        _ => {
            return Err(AppError::bad_request(
                "name one view: savedQuery or userQuery, once",
            ));
        }
    };
    if let Some((option, _)) = request
        .query
        .iter()
        .find(|(k, _)| matches!(k.as_str(), "$filter" | "$select" | "$orderby"))
    {
        return Err(AppError::bad_request(format!(
            "{option} cannot be combined with {kind}: the view brings its own"
        )));
    }
    load_view(request, entity, kind, id).map(Some)
}

/// The view `kind` (`savedQuery` or `userQuery`) `id` of `entity`, checked: it exists, it is a
/// view of `entity`, and a personal view is the caller's own (or the caller is a System
/// Administrator).
pub(super) fn load_view(
    request: &WebRequest,
    entity: &EntityDef,
    kind: &str,
    id: &str,
) -> Result<View, AppError> {
    let id = Uuid::parse_str(id).map_err(|_| {
        AppError::bad_request(format!("{kind} must be a view id (a GUID), got '{id}'"))
    })?;
    let view_entity = if kind == "savedQuery" {
        "savedquery"
    } else {
        "userquery"
    };
    let record = match request.instance.store.retrieve(view_entity, id) {
        Ok(record) => record,
        Err(custos_records::Error::NotFound(_)) => {
            return Err(AppError::not_found(format!("{kind} {id} does not exist")));
        }
        Err(e) => return Err(e.into()),
    };
    let text = |name: &str| match record.values.get(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
        _ => None,
    };
    if text("returnedtypecode").as_deref() != Some(entity.logical_name.as_str()) {
        return Err(AppError::bad_request(format!(
            "{kind} {id} is a view of '{}', not of '{}'",
            text("returnedtypecode").unwrap_or_default(),
            entity.logical_name
        )));
    }
    if view_entity == "userquery" {
        let owner = record.values.get("ownerid");
        let own = owner == Some(&Value::Guid(request.caller.principal.id));
        let admin = request
            .caller
            .security_roles(&request.state, &request.instance)
            .contains(&custos_records::SecurityRole::BuiltIn(
                custos_records::BuiltInRole::SystemAdministrator,
            ));
        if !own && !admin {
            return Err(AppError::forbidden(format!(
                "user '{}' may not run another user's personal view",
                request.caller.principal.upn
            )));
        }
    }
    let mut options = Vec::new();
    for (field, option) in [
        ("filter", "$filter"),
        ("columns", "$select"),
        ("orderby", "$orderby"),
    ] {
        if let Some(value) = text(field) {
            options.push((option.to_string(), value));
        }
    }
    Ok(View {
        options,
        details: json!({
            "ViewType": view_entity,
            "ViewId": id,
            "ViewName": text("name").unwrap_or_default(),
            "Filter": text("filter"),
            "Columns": text("columns"),
            "OrderBy": text("orderby"),
        }),
    })
}

/// Checks a view record about to be written (its values after the write): it names an entity
/// and its filter, columns and order are valid for that entity — a dry run of its query.
fn check_view(
    request: &WebRequest,
    entity: &EntityDef,
    id: Option<Uuid>,
    values: &[(String, Value)],
) -> Result<(), AppError> {
    if !matches!(entity.logical_name.as_str(), "savedquery" | "userquery") {
        return Ok(());
    }
    let mut merged = match id.map(|id| request.instance.store.retrieve(&entity.logical_name, id)) {
        Some(Ok(record)) => record.values,
        Some(Err(custos_records::Error::NotFound(_))) | None => Default::default(),
        Some(Err(e)) => return Err(e.into()),
    };
    merged.extend(values.iter().cloned());
    check_view_values(&request.instance.store.catalog(), &merged)
}

/// Checks a view's values against the entities of `catalog`: it names one of them, and its
/// filter, columns and order are valid for it.
pub(crate) fn check_view_values(
    catalog: &Catalog,
    values: &std::collections::BTreeMap<String, Value>,
) -> Result<(), AppError> {
    let text = |name: &str| match values.get(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.as_str()),
        _ => None,
    };
    let target = text("returnedtypecode").ok_or_else(|| {
        AppError::bad_request(
            "a view needs 'returnedtypecode', the logical name of the entity it lists",
        )
    })?;
    let viewed = catalog.entity(target).ok_or_else(|| {
        AppError::bad_request(format!("returnedtypecode '{target}' is not an entity"))
    })?;
    let mut pairs = Vec::new();
    for (field, option) in [
        ("filter", "$filter"),
        ("columns", "$select"),
        ("orderby", "$orderby"),
    ] {
        if let Some(value) = text(field) {
            pairs.push((option, value));
        }
    }
    // A view is checked for its shape, not run: each run reads its query functions
    // (`LastXDays`, `EqualUserId`) against its own request.
    let options = parse_query_options_at(pairs, &FilterContext::checking())?;
    check_select(viewed, &options.select)?;
    Ok(custos_records::check_query(viewed, &options)?)
}

/// The entity a list (or count) of `set` reads, the draft saying so with the request's query
/// under `path`; refused (403) without the read privilege.
fn list_of(
    request: &WebRequest,
    draft: &mut EventDraft,
    set: &str,
    path: &str,
) -> Result<EntityDef, AppError> {
    draft.operation = Operation::RetrieveMultiple;
    let entity = entity_by_set(request, set)?;
    draft.set_entity(&entity);
    draft.query = query_text(path, request);
    request.require(Privilege::Read, &entity)?;
    Ok(entity)
}

pub(crate) async fn retrieve_multiple(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
) -> Result<Response, AppError> {
    list(request, draft, set, None).await
}

/// The records of a collection-valued navigation property's path (`accounts(<id>)/contact_
/// parentcustomerid`): those whose lookup points at one record.
struct Related {
    /// The request's path, which the event's `Query` and the next page's link name.
    path: String,
    /// Only the records whose lookup holds the record's id.
    filter: Filter,
    /// What the event's `Details` say showed them.
    details: Map<String, Json>,
    /// The lookup and the record's id `filter` asks for.
    lookup: (String, Uuid),
    /// Only their references (`…/$ref`): `{"@odata.id"}` each, in a `Collection($ref)`.
    references: bool,
}

impl Related {
    /// Whether `record` is one of them.
    fn filter_holds(&self, record: &Record) -> bool {
        let (lookup, id) = &self.lookup;
        record.values.get(lookup) == Some(&Value::Guid(*id))
    }
}

/// The FetchXML query of a list (`?fetchXml=<fetch>…</fetch>`), which is the whole query: no
/// system query option or view beside it.
fn fetch_query(
    request: &WebRequest,
    entity: &EntityDef,
    view: bool,
) -> Result<Option<custos_records::FetchQuery>, AppError> {
    let Some((_, xml)) = request.query.iter().find(|(k, _)| k == "fetchXml") else {
        return Ok(None);
    };
    if view
        || request
            .query
            .iter()
            .any(|(k, _)| k.starts_with('$') && k != "$format")
    {
        return Err(AppError::bad_request(
            "fetchXml is the whole query: it takes no view and no system query option beside it ($select, $filter, $orderby, $top, $count, $expand, $skiptoken)",
        ));
    }
    Ok(Some(custos_records::read_fetch(entity, xml)?))
}

/// The `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie` of page `page`, in Dataverse's form: the
/// next page's number and the paging cookie, URL-encoded twice, which a client decodes and
/// sends back as the `paging-cookie` of the next page's `<fetch>`.
fn fetch_paging_cookie(page: u64, skiptoken: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let cookie = custos_records::paging_cookie(page, skiptoken);
    let once = utf8_percent_encode(&cookie, NON_ALPHANUMERIC).to_string();
    let twice = utf8_percent_encode(&once, NON_ALPHANUMERIC);
    format!(
        "<cookie pagenumber=\"{}\" pagingcookie=\"{twice}\" istracking=\"False\" />",
        page + 1
    )
}

/// A retrieve multiple of `set`, or of the records `related` to one record.
async fn list(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    related: Option<Related>,
) -> Result<Response, AppError> {
    let path = related
        .as_ref()
        .map_or(set, |r| r.path.as_str())
        .to_string();
    let entity = list_of(&request, draft, set, &path)?;
    if request.query.iter().any(|(name, _)| name == "$apply") {
        if related.is_some() {
            return Err(AppError::bad_request(
                "$apply aggregates an entity set's records (GET accounts?$apply=…), not a record's related ones; filter by the lookup in $apply=filter(…)",
            ));
        }
        return super::aggregate::aggregated(request, draft, set, entity).await;
    }
    let view = view_query(&request, &entity)?;
    let fetch = fetch_query(&request, &entity, view.is_some())?;
    if let Some(fetch) = &fetch
        && let Some(apply) = &fetch.aggregate
    {
        if related.is_some() {
            return Err(AppError::bad_request(
                "an aggregate FetchXML query reads an entity set's records, not a record's related ones",
            ));
        }
        let options = parse_query_options_at(
            fetch.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &filter_context(&request),
        )?;
        let apply = custos_records::Apply {
            filter: options.filter,
            ..apply.clone()
        };
        return super::aggregate::answer(request, draft, set, entity, apply, true).await;
    }
    let mut details = related.as_ref().map(|r| r.details.clone());
    let pairs: Vec<(String, String)> = match &view {
        _ if let Some(fetch) = &fetch => fetch.options.clone(),
        Some(view) => {
            let mut shown = details.take().unwrap_or_default();
            if let Json::Object(view) = &view.details {
                shown.extend(view.clone());
            }
            details = Some(shown);
            request
                .query
                .iter()
                .filter(|(k, _)| k.starts_with('$') || k.starts_with('@'))
                .cloned()
                .chain(view.options.iter().cloned())
                .collect()
        }
        None => request.query.clone(),
    };
    if let Some(details) = details {
        draft.details = Json::Object(details).to_string();
    }
    let mut options = parse_query_options_at(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &filter_context(&request),
    )?;
    check_select(&entity, &options.select)?;
    let references = related.as_ref().is_some_and(|r| r.references);
    if references {
        if options.select.is_some() || !options.expand.is_empty() {
            return Err(AppError::bad_request(
                "$select and $expand do not apply to references ($ref)",
            ));
        }
        options.select = Some(vec![entity.primary_id()]);
    }
    if let Some(related) = related {
        options.filter = Some(match options.filter.take() {
            Some(filter) => Filter::And(Box::new(related.filter), Box::new(filter)),
            None => related.filter,
        });
    }
    let page_size = match &fetch {
        Some(fetch) => fetch.count.unwrap_or(PAGE_SIZE_MAX),
        None => page_size(request.prefer().as_deref())?,
    };
    let passed_over = fetch
        .as_ref()
        .map_or(0, custos_records::FetchQuery::passed_over);
    let audited = request
        .policy()
        .audits_retrieve_multiple(&entity.logical_name);

    let store = request.instance.store.clone();
    let logical_name = entity.logical_name.clone();
    let (page, options) = blocking(move || -> Result<_, AppError> {
        // A FetchXML page asked for by number alone: the records before it are read and
        // passed over (bounded by `SIMPLE_PAGING_MAX`), never shown nor recorded as seen.
        let mut options = options;
        let mut left = passed_over;
        while left > 0 {
            let count = std::mem::take(&mut options.count);
            let before = store.retrieve_multiple(&RecordQuery {
                entity: &logical_name,
                options: &options,
                page_size: left.min(PAGE_SIZE_MAX),
            })?;
            options.count = count;
            left = left.saturating_sub(before.records.len() as u64);
            match before.next {
                Some(next) => options.after = Some(next),
                // The query ends before the page asked for: it is empty.
                None => {
                    return Ok((
                        custos_records::RecordPage {
                            records: Vec::new(),
                            total: None,
                            next: None,
                        },
                        options,
                    ));
                }
            }
        }
        let page = store.retrieve_multiple(&RecordQuery {
            entity: &logical_name,
            options: &options,
            page_size,
        })?;
        Ok((page, options))
    })
    .await?;
    let expanded = expand::fetch(&request, &entity, &options.expand, &page.records).await?;
    let mut presentation = Presentation::of(&request);
    let mut seen = presentation
        .read_lookup_names(&request, &entity, &page.records, options.select.as_deref())
        .await?;
    if audited {
        let mut event = draft.clone();
        event.record_ids = page.records.iter().map(|r| r.id).collect();
        event.result_count = page.records.len() as u64;
        request.state.record(event).await?;
    }
    seen.extend(expand::seen(&entity, &expanded));
    expand::record_seen(&request, draft, seen).await?;

    let mut body = Map::new();
    if !request.metadata_none() {
        let context = match &options.select {
            _ if references => format!("{}/$metadata#Collection($ref)", request.service_root),
            Some(names) => format!(
                "{}/$metadata#{set}({})",
                request.service_root,
                names.join(",")
            ),
            None => format!("{}/$metadata#{set}", request.service_root),
        };
        body.insert("@odata.context".into(), json!(context));
    }
    if let Some(total) = page.total {
        let total = request.wide(json!(total));
        if fetch.is_some() {
            body.insert("@Microsoft.Dynamics.CRM.totalrecordcount".into(), total);
            body.insert(
                "@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded".into(),
                json!(false),
            );
        } else {
            body.insert("@odata.count".into(), total);
        }
    }
    let values: Vec<Json> = page
        .records
        .iter()
        .map(|r| {
            if references {
                let id = format!("{}/{set}({})", request.service_root, r.id);
                return json!({"@odata.id": id});
            }
            let mut body = record_json(&request, &entity, r, options.select.as_deref());
            if fetch.is_some() {
                // FetchXML's answers leave out what is empty, as Dataverse's do.
                body.retain(|_, value| !value.is_null());
            }
            let mut body = presentation.present(&request, &entity, r, body);
            expand::attach(&request, &expanded, r.id, &mut body);
            Json::Object(body)
        })
        .collect();
    body.insert("value".into(), Json::Array(values));
    if let Some(fetch) = &fetch {
        // FetchXML pages by its `page` and paging cookie, not by next links.
        body.insert(
            "@Microsoft.Dynamics.CRM.morerecords".into(),
            json!(page.next.is_some()),
        );
        if let Some(cursor) = &page.next {
            body.insert(
                "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie".into(),
                json!(fetch_paging_cookie(fetch.page, &cursor.token())),
            );
        }
    } else if let Some(cursor) = &page.next {
        body.insert(
            "@odata.nextLink".into(),
            json!(request.next_link(&path, &cursor.token())),
        );
    }
    let mut applied = Vec::new();
    if page_size < PAGE_SIZE_MAX
        || request
            .prefer()
            .is_some_and(|p| p.contains("odata.maxpagesize"))
    {
        applied.push(format!("odata.maxpagesize={page_size}"));
    }
    applied.extend(presentation.applied().map(str::to_string));
    Ok(with_preferences_applied(
        axum::Json(Json::Object(body)).into_response(),
        &applied,
    ))
}

/// `response` with `Preference-Applied` naming `applied`, when any preference was.
fn with_preferences_applied(mut response: Response, applied: &[String]) -> Response {
    if !applied.is_empty()
        && let Ok(value) = HeaderValue::from_str(&applied.join(","))
    {
        response.headers_mut().insert("preference-applied", value);
    }
    response
}

/// The entity of a retrieve of record `id` of `set` (the request's `path` in the event's
/// `Query`), once the caller may read it.
fn retrieving(
    request: &WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    path: &str,
) -> Result<EntityDef, AppError> {
    draft.operation = Operation::Retrieve;
    let entity = entity_by_set(request, set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    draft.query = query_text(path, request);
    require_on_record(request, Privilege::Read, &entity, id)?;
    Ok(entity)
}

/// Reads record `id`, recording the retrieve when the entity's reads are audited (before the
/// answer).
async fn read_audited(
    request: &WebRequest,
    draft: &EventDraft,
    entity: &EntityDef,
    id: Uuid,
) -> Result<Record, AppError> {
    let record = read_record(request, entity, id).await?;
    record_read(request, draft, entity).await?;
    Ok(record)
}

async fn read_record(
    request: &WebRequest,
    entity: &EntityDef,
    id: Uuid,
) -> Result<Record, AppError> {
    let store = request.instance.store.clone();
    let logical_name = entity.logical_name.clone();
    blocking(move || -> Result<Record, AppError> { Ok(store.retrieve(&logical_name, id)?) }).await
}

/// Appends the retrieve of `draft` when the entity's reads are audited.
async fn record_read(
    request: &WebRequest,
    draft: &EventDraft,
    entity: &EntityDef,
) -> Result<(), AppError> {
    if request.policy().audits_retrieve(&entity.logical_name) {
        let mut event = draft.clone();
        event.result_count = 1;
        request.state.record(event).await?;
    }
    Ok(())
}

/// `GET set(id)/property[/$value]`: one property of a record — `{"@odata.context", "value"}`,
/// or the bare value as text for `$value`; 204 when it is null. A retrieve like any other.
pub(crate) async fn property(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    property: &str,
    raw: bool,
) -> Result<Response, AppError> {
    let path = format!("{set}({id})/{property}{}", if raw { "/$value" } else { "" });
    let entity = retrieving(&request, draft, set, id, &path)?;
    let navigation = request
        .instance
        .store
        .catalog()
        .navigation(&entity, property)
        .map(|n| {
            (
                n.collection,
                n.lookup.logical_name.clone(),
                n.shows().clone(),
            )
        });
    if let Some((collection, lookup, shows)) = navigation {
        if raw {
            return Err(AppError::bad_request(format!(
                "'{property}' is a navigation property: $value applies to a property's value"
            )));
        }
        if collection {
            // The records pointing here, as a list of their own entity; the record itself
            // must exist, but none of its values is shown.
            let (related, related_set) = related_of(&request, set, id, property, &path).await?;
            return list(request, draft, &related_set, Some(related)).await;
        }
        // The record its lookup points at: the lookup is a value of this record (its read
        // is recorded as a property's), then the related record's retrieve.
        let record = read_audited(&request, draft, &entity, id).await?;
        return match record.values.get(&lookup) {
            Some(Value::Guid(target)) => {
                let target = *target;
                retrieve_at(request, draft, &shows.set_name, target, &path).await
            }
            _ => Ok(StatusCode::NO_CONTENT.into_response()),
        };
    }
    if entity.attribute_by_web_name(property).is_none() {
        return Err(AppError::not_found(format!(
            "'{property}' is not a property of '{}'",
            entity.logical_name
        )));
    }
    let record = read_audited(&request, draft, &entity, id).await?;
    let select = [property.to_string()];
    let body = record_json(&request, &entity, &record, Some(&select));
    let value = body.get(property).cloned().unwrap_or(Json::Null);
    if value.is_null() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if raw {
        let text = match value {
            Json::String(text) => text,
            other => other.to_string(),
        };
        return Ok(plain_text(text));
    }
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#{set}({id})/{property}", request.service_root),
        "value": value,
    }))
    .into_response())
}

pub(crate) async fn retrieve(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<Response, AppError> {
    retrieve_at(request, draft, set, id, &format!("{set}({id})")).await
}

/// The retrieve of record `id` of `set`, asked for at `path`.
async fn retrieve_at(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    path: &str,
) -> Result<Response, AppError> {
    let entity = retrieving(&request, draft, set, id, path)?;
    let mut single = Vec::new();
    for (name, value) in &request.query {
        match name.as_str() {
            "$select" | "$expand" | "$format" => single.push((name.as_str(), value.as_str())),
            other if other.starts_with('$') => {
                return Err(AppError::bad_request(format!(
                    "query option {other} is not supported on a single record"
                )));
            }
            other if other.starts_with('@') => {}
            other => check_custom_option(other)?,
        }
    }
    let options = parse_query_options_at(single, &filter_context(&request))?;
    let select = options.select;
    check_select(&entity, &select)?;
    let record = read_record(&request, &entity, id).await?;
    let expanded = expand::fetch(
        &request,
        &entity,
        &options.expand,
        std::slice::from_ref(&record),
    )
    .await?;
    let mut presentation = Presentation::of(&request);
    record_read(&request, draft, &entity).await?;
    // The client holds this version already: 304, no body (the read is recorded all the same:
    // it learnt the record is unchanged).
    let current = match record.values.get("versionnumber") {
        Some(Value::Integer(n)) => Some(*n),
        _ => None,
    };
    let unchanged = request.header("if-none-match").is_some_and(|etags| {
        etags.split(',').any(|etag| {
            etag.trim() == "*" || etag_version(etag).is_some_and(|v| Some(v) == current)
        })
    });
    if unchanged {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let mut seen = presentation
        .read_lookup_names(
            &request,
            &entity,
            std::slice::from_ref(&record),
            select.as_deref(),
        )
        .await?;
    seen.extend(expand::seen(&entity, &expanded));
    expand::record_seen(&request, draft, seen).await?;
    let body = record_json(&request, &entity, &record, select.as_deref());
    let mut body = presentation.present(&request, &entity, &record, body);
    expand::attach(&request, &expanded, record.id, &mut body);
    if !request.metadata_none() {
        body.shift_insert(
            0,
            "@odata.context".into(),
            json!(format!("{}/$metadata#{set}/$entity", request.service_root)),
        );
    }
    Ok(presented(&presentation, body))
}

/// `body` as the JSON answer, with `Preference-Applied` naming the annotations preference
/// `presentation` applied, when one was given.
pub(super) fn presented(presentation: &Presentation, body: Map<String, Json>) -> Response {
    let applied: Vec<String> = presentation
        .applied()
        .map(str::to_string)
        .into_iter()
        .collect();
    with_preferences_applied(axum::Json(Json::Object(body)).into_response(), &applied)
}

/// `GET set/$count[?$filter]`: how many records match, as plain text (what OData clients'
/// `count()` reads). No record is shown, so the event, when the entity's lists are audited,
/// is a `RetrieveMultiple` with the count and no record ids.
pub(crate) async fn count(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
) -> Result<Response, AppError> {
    count_of(request, draft, set, None).await
}

/// `set(<id>)/navigation/$count`: how many records a collection-valued navigation property
/// shows (that match `$filter`), recorded as `set/$count` is, with `Details` naming where they
/// were counted from.
pub(crate) async fn related_count(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    navigation: &str,
) -> Result<Response, AppError> {
    let (related, related_set) = related_of(
        &request,
        set,
        id,
        navigation,
        &format!("{set}({id})/{navigation}/$count"),
    )
    .await?;
    count_of(request, draft, &related_set, Some(related)).await
}

/// `set(<id>)/navigation/$ref`: the references of the records a collection-valued navigation
/// property shows — a list of them as any other (options, pages), recorded as one, since the
/// ids are what it shows.
pub(crate) async fn related_refs(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    navigation: &str,
) -> Result<Response, AppError> {
    let path = format!("{set}({id})/{navigation}/$ref");
    let (mut related, related_set) = related_of(&request, set, id, navigation, &path).await?;
    related.references = true;
    list(request, draft, &related_set, Some(related)).await
}

/// `set(<id>)/navigation(<other>)`: record `other` of the records a collection-valued
/// navigation property shows — its retrieve, when it is one of them (else 404).
pub(crate) async fn related_record(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    navigation: &str,
    other: Uuid,
) -> Result<Response, AppError> {
    let path = format!("{set}({id})/{navigation}({other})");
    let (related, related_set) = related_of(&request, set, id, navigation, &path).await?;
    let entity = entity_by_set(&request, &related_set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![other];
    // Before anything is read of it: a caller who may not read it learns nothing, not even
    // whether it is one of them.
    require_on_record(&request, Privilege::Read, &entity, other)?;
    let record = read_record(&request, &entity, other).await;
    if !record.is_ok_and(|record| related.filter_holds(&record)) {
        return Err(AppError::not_found(format!(
            "{related_set}({other}) is not one of {set}({id})/{navigation}"
        )));
    }
    retrieve_at(request, draft, &related_set, other, &path).await
}

/// The records of `set(<id>)/navigation`, a collection-valued navigation property (404 when it
/// is not one, or the record does not exist; 403 when the caller may not read it), and their
/// set.
async fn related_of(
    request: &WebRequest,
    set: &str,
    id: Uuid,
    navigation: &str,
    path: &str,
) -> Result<(Related, String), AppError> {
    let entity = entity_by_set(request, set)?;
    let (lookup, related_set) = related_lookup_of(request, set, navigation).ok_or_else(|| {
        AppError::not_found(format!(
            "'{navigation}' is not a collection-valued navigation property of '{}'",
            entity.logical_name
        ))
    })?;
    require_on_record(request, Privilege::Read, &entity, id)?;
    read_record(request, &entity, id).await?;
    let related = Related {
        path: path.to_string(),
        filter: expand::any_of(&lookup, &[id]),
        details: json!({
            "NavigatedFrom": entity.logical_name,
            "RecordId": id,
            "NavigationProperty": navigation,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
        lookup: (lookup, id),
        references: false,
    };
    Ok((related, related_set))
}

/// How many records of `set` — or of the records `related` to one record — match `$filter`.
async fn count_of(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    related: Option<Related>,
) -> Result<Response, AppError> {
    let path = match &related {
        Some(related) => related.path.clone(),
        None => format!("{set}/$count"),
    };
    let entity = list_of(&request, draft, set, &path)?;
    // Counted without its view, the count would be the whole set's.
    if let Some((view, _)) = request
        .query
        .iter()
        .find(|(k, _)| k == "savedQuery" || k == "userQuery")
    {
        return Err(AppError::bad_request(format!(
            "$count does not run a view ({view}): list the view with $count=true, or count with $filter"
        )));
    }
    // Options that would narrow what is counted, were they read, are refused rather than
    // ignored (the others — $top, $orderby, $select — do not change a count).
    if let Some((name, _)) = request
        .query
        .iter()
        .find(|(k, _)| k == "$apply" || k == "$search")
    {
        return Err(AppError::bad_request(format!(
            "{name} does not apply to $count: count with $filter, or with $apply=filter(…)/aggregate($count as n) on the entity set"
        )));
    }
    let filter = request
        .query
        .iter()
        .filter(|(k, _)| k == "$filter" || !k.starts_with('$'))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let mut options = parse_query_options_at(
        filter.chain([("$count", "true"), ("$top", "1")]),
        &filter_context(&request),
    )?;
    options.select = Some(vec![entity.primary_id()]);
    if let Some(related) = related {
        draft.details = Json::Object(related.details).to_string();
        options.filter = Some(match options.filter.take() {
            Some(filter) => Filter::And(Box::new(related.filter), Box::new(filter)),
            None => related.filter,
        });
    }
    let audited = request
        .policy()
        .audits_retrieve_multiple(&entity.logical_name);
    let total = total_of(&request, &entity, options).await?;
    if audited {
        let mut event = draft.clone();
        event.result_count = total;
        request.state.record(event).await?;
    }
    Ok(plain_text(total.to_string()))
}

/// A bare value as `text/plain`: a count (`set/$count`, `audits/$count`) or a property's `$value`.
pub(super) fn plain_text(text: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// How many records of `entity` `options` select (`$count` set in them, one row read).
pub(super) async fn total_of(
    request: &WebRequest,
    entity: &EntityDef,
    options: custos_records::QueryOptions,
) -> Result<u64, AppError> {
    let store = request.instance.store.clone();
    let logical_name = entity.logical_name.clone();
    blocking(move || -> Result<u64, AppError> {
        let page = store.retrieve_multiple(&RecordQuery {
            entity: &logical_name,
            options: &options,
            page_size: 1,
        })?;
        Ok(page.total.unwrap_or(0))
    })
    .await
}

/// The typed values of a body, and the primary id when the body names one.
type BodyValues = (Vec<(String, Value)>, Option<Uuid>);

/// What the text between a URL's parentheses names on `entity`: a record's id (`Ok`), or the
/// values of one of its alternate keys (`Err`), to be looked up — which searches the entity's
/// records, so it takes the Read privilege on the entity: a caller who may not read them learns
/// nothing of which values are taken.
fn key_values(
    request: &WebRequest,
    entity: &EntityDef,
    key: &str,
) -> Result<Result<Uuid, Vec<(String, Value)>>, AppError> {
    let values = match custos_records::record_key(entity, key)? {
        custos_records::RecordKey::Id(id) => return Ok(Ok(id)),
        custos_records::RecordKey::Alternate { values, .. } => values,
    };
    request.require(Privilege::Read, entity).map_err(|_| {
        AppError::forbidden(format!(
            "user '{}' lacks the Read privilege on entity '{}', which finding a record by an alternate key takes",
            request.caller.principal.upn, entity.logical_name
        ))
    })?;
    Ok(Err(values))
}

/// The record a lookup's `@odata.bind` names with `key_text` — its id, or an alternate key's
/// values, which must name a record (found as [`find_by_key`] finds one).
fn bound_record(
    request: &WebRequest,
    target: &EntityDef,
    bind: &str,
    key_text: &str,
) -> Result<Uuid, AppError> {
    let values = match key_values(request, target, key_text)? {
        Ok(id) => return Ok(id),
        Err(values) => values,
    };
    request
        .instance
        .store
        .find_by_key(&target.logical_name, &values)?
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "{bind} names no record: {}",
                no_record_with(target, &values)
            ))
        })
}

/// "no account record has accountnumber "A-1"": what a key naming no record says.
fn no_record_with(entity: &EntityDef, values: &[(String, Value)]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|(name, value)| format!("{name} {}", value.to_json()))
        .collect();
    format!(
        "no {} record has {}",
        entity.logical_name,
        shown.join(" and ")
    )
}

/// Reads a create or update body into typed values; returns the primary id when the body
/// names one.
fn body_values(
    request: &WebRequest,
    entity: &EntityDef,
    body: &Map<String, Json>,
) -> Result<BodyValues, AppError> {
    let catalog = request.instance.store.catalog();
    let strings = super::ieee754_compatible(request.header("content-type"));
    // The numerals as sent, for the decimals: parsed, a JSON number is already a float.
    let decimal_number = |(key, json): (&String, &Json)| {
        json.is_number()
            && entity
                .attribute_by_web_name(key)
                .is_some_and(|a| is_decimal(&a.attribute_type))
    };
    let sent = if body.iter().any(decimal_number) {
        request.raw_members()?
    } else {
        Default::default()
    };
    let mut values = Vec::new();
    let mut id = None;
    for (key, json) in body {
        if key.starts_with('@') {
            continue;
        }
        if let Some(name) = key.strip_suffix("@odata.bind") {
            let attribute = entity
                .attribute(name)
                .filter(|a| matches!(a.attribute_type, AttributeType::Lookup { .. }))
                .ok_or_else(|| {
                    AppError::bad_request(format!(
                        "'{name}' is not a lookup attribute of entity '{}'",
                        entity.logical_name
                    ))
                })?;
            let AttributeType::Lookup { target, .. } = &attribute.attribute_type else {
                unreachable!("filtered above")
            };
            let target_set = catalog
                .entity(target)
                .map(|e| e.set_name.clone())
                .unwrap_or_default();
            // `null` clears the lookup, as Dataverse's single-valued navigation properties.
            if json.is_null() {
                values.push((name.to_string(), Value::Null));
                continue;
            }
            let text = json.as_str().ok_or_else(|| {
                AppError::bad_request(format!(
                    "{key} must be null or a string like '/{target_set}(<id>)'"
                ))
            })?;
            // A reference may be relative (`/contacts(<id>)`) or absolute (the service root
            // before it); the key in it an id or an alternate key's values.
            let reference = match text.split_once("://") {
                Some((_, rest)) => rest
                    .find(&format!("/{target_set}("))
                    .map_or(text, |at| &rest[at..]),
                None => text,
            };
            let key_text = reference
                .trim_start_matches('/')
                .strip_prefix(target_set.as_str())
                .and_then(|t| t.strip_prefix('('))
                .and_then(|t| t.strip_suffix(')'))
                .ok_or_else(|| {
                    AppError::bad_request(format!(
                        "{key} must reference '/{target_set}(<id>)', got '{text}'"
                    ))
                })?;
            let referenced = match catalog.entity(target) {
                Some(target_entity) => bound_record(request, target_entity, key, key_text)?,
                None => Uuid::parse_str(key_text).map_err(|_| {
                    AppError::bad_request(format!(
                        "{key} must reference '/{target_set}(<id>)', got '{text}'"
                    ))
                })?,
            };
            values.push((name.to_string(), Value::Guid(referenced)));
            continue;
        }
        let attribute = entity.attribute_by_web_name(key).ok_or_else(|| {
            AppError::bad_request(format!(
                "attribute '{key}' does not exist on entity '{}'",
                entity.logical_name
            ))
        })?;
        // A lookup is set through its navigation property, never by its value: as in
        // Dataverse, `_x_value` is read-only (and one body could otherwise name it twice).
        if let AttributeType::Lookup { target, .. } = &attribute.attribute_type {
            let target_set = catalog
                .entity(target)
                .map(|e| e.set_name.clone())
                .unwrap_or_default();
            return Err(AppError::bad_request(format!(
                "'{key}' is read-only: set lookup '{0}' with \"{0}@odata.bind\": \"/{target_set}(<id>)\", or null to clear it",
                attribute.logical_name
            )));
        }
        let value = match json {
            // A decimal from the numeral sent, refused when a float would change it.
            Json::Number(_) if is_decimal(&attribute.attribute_type) => {
                let numeral = sent.get(key).ok_or_else(|| {
                    AppError::bad_request(format!("'{key}' is not a number of the body as sent"))
                })?;
                Value::decimal_from_text(attribute, numeral.get())?
            }
            // Sent as strings under `IEEE754Compatible=true`, a wide number is read as the
            // number.
            Json::String(text) if strings && is_decimal(&attribute.attribute_type) => {
                Value::decimal_from_text(attribute, text)?
            }
            Json::String(text) if strings && wide_number(&attribute.attribute_type) => {
                let number = text.parse::<i64>().map(Json::from);
                Value::from_json(attribute, number.as_ref().unwrap_or(json))?
            }
            _ => Value::from_json(attribute, json)?,
        };
        if attribute.logical_name == entity.primary_id() {
            match value {
                Value::Guid(given) => id = Some(given),
                _ => return Err(AppError::bad_request(format!("'{key}' must be a GUID"))),
            }
            continue;
        }
        values.push((attribute.logical_name.clone(), value));
    }
    Ok((values, id))
}

/// What the request's query functions are relative to: when it arrived, and who it acts as.
pub(super) fn filter_context(request: &WebRequest) -> FilterContext {
    FilterContext {
        now: request.state.clock.now(),
        user: request.caller.principal.id,
    }
}

pub(super) fn context(request: &WebRequest) -> WriteContext {
    WriteContext {
        actor: request.caller.principal.id,
        now: request.state.clock.now(),
        platform: false,
        delegate: request.delegate.as_ref().map(|sender| sender.principal.id),
    }
}

/// Fills the event of a write from its outcome.
pub(super) fn describe_write(
    event: &mut EventDraft,
    entity: &EntityDef,
    policy: &custos_audit::AuditPolicy,
    outcome: &WriteOutcome,
) {
    event.record_ids = vec![outcome.id];
    event.result_count = 1;
    // An update that found no record created it.
    if outcome.before.is_none() && event.operation == Operation::Update {
        event.operation = Operation::Upsert;
    }
    event.changes = changes(
        entity,
        outcome.before.as_ref(),
        outcome.after.as_ref(),
        |name| policy.audits_attribute(&entity.logical_name, name),
    );
}

/// What the answer to a create or an update shows of the record written, when `Prefer:
/// return=representation` asks for it (Dataverse's "create/update with data returned"): the
/// attributes `$select` names, or all.
pub(super) struct Shown {
    select: Option<Vec<String>>,
}

/// The representation a write's request asks for, checked before anything is written: showing
/// the record is reading it, so the caller needs `Read` on it (the entity's, or a share of
/// record `id`) — a caller who may write but not read a record must not read it through its
/// update's answer — and `$select` must name its attributes.
fn shown(
    request: &WebRequest,
    entity: &EntityDef,
    id: Option<Uuid>,
) -> Result<Option<Shown>, AppError> {
    if !request
        .prefer()
        .is_some_and(|p| p.contains("return=representation"))
    {
        return Ok(None);
    }
    match id {
        Some(id) => require_on_record(request, Privilege::Read, entity, id)?,
        None => request.require(Privilege::Read, entity)?,
    }
    let select = request
        .query
        .iter()
        .filter(|(name, _)| name == "$select")
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let select = parse_query_options(select)?.select;
    check_select(entity, &select)?;
    Ok(Some(Shown { select }))
}

/// The read a write's answer makes when it shows the record: a `Retrieve` of it with the
/// write's request, recorded with the write (in the same group commit) when the entity's
/// retrieves are audited.
fn shown_read(
    policy: &custos_audit::AuditPolicy,
    entity: &EntityDef,
    draft: &EventDraft,
    outcome: &WriteOutcome,
) -> Option<EventDraft> {
    if outcome.after.is_none() || !policy.audits_retrieve(&entity.logical_name) {
        return None;
    }
    let mut event = draft.clone();
    event.operation = Operation::Retrieve;
    event.set_entity(entity);
    event.record_ids = vec![outcome.id];
    event.result_count = 1;
    event.changes = Vec::new();
    event.details = json!({"ReturnedBy": draft.operation.as_str()}).to_string();
    Some(event)
}

fn write_response(
    request: &WebRequest,
    entity: &EntityDef,
    outcome: &WriteOutcome,
    created: bool,
    shown: Option<&Shown>,
) -> Response {
    let entity_id = format!(
        "{}/{}({})",
        request.service_root, entity.set_name, outcome.id
    );
    let mut response = match (&outcome.after, shown) {
        (Some(after), Some(shown)) => {
            let mut body = record_json(request, entity, after, shown.select.as_deref());
            body.shift_insert(
                0,
                "@odata.context".into(),
                json!(format!(
                    "{}/$metadata#{}/$entity",
                    request.service_root, entity.set_name
                )),
            );
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(Json::Object(body))).into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&entity_id) {
        response.headers_mut().insert("odata-entityid", value);
    }
    response
}

/// A create checked and ready to write.
struct CreateChecked {
    entity: EntityDef,
    values: Vec<(String, Value)>,
    /// The id the body gives (or the new principal's).
    id: Option<Uuid>,
    new_principal: Option<NewPrincipal>,
    shown: Option<Shown>,
}

/// Everything a create checks before it writes: privileges, the body, the view's and the
/// automations' rules.
fn check_create(
    request: &WebRequest,
    draft: &mut EventDraft,
    set: &str,
) -> Result<CreateChecked, AppError> {
    draft.operation = Operation::Create;
    let entity = entity_by_set(request, set)?;
    draft.set_entity(&entity);
    request.require(Privilege::Create, &entity)?;
    if entity.logical_name == "solution" {
        return Err(AppError::bad_request(
            "solutions are installed with ImportSolution, not created",
        ));
    }
    let mut body = request.json_object()?;
    let new_principal = if entity.logical_name == "systemuser" {
        draft.operation = Operation::CreateUser;
        request.require(Privilege::ManageUsers, &entity)?;
        Some(principal_from_body(request, &mut body)?)
    } else {
        None
    };
    let (values, given_id) = body_values(request, &entity, &body)?;
    check_view(request, &entity, None, &values)?;
    automation::check(
        &request.state,
        &*request.instance.store,
        &entity,
        None,
        &values,
    )?;
    let id = new_principal.as_ref().map(|p| p.id).or(given_id);
    let shown = shown(request, &entity, id)?;
    Ok(CreateChecked {
        entity,
        values,
        id,
        new_principal,
        shown,
    })
}

pub(crate) async fn create(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
) -> Result<Response, AppError> {
    let CreateChecked {
        entity,
        values,
        id,
        new_principal,
        shown,
    } = check_create(&request, draft, set)?;
    let policy = request.policy();
    let audited = audits_change(&policy, &entity);
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let context = context(&request);
    let entity_for_task = entity.clone();
    let showing = shown.is_some();
    let outcome = blocking(move || -> Result<WriteOutcome, AppError> {
        let mut before_commit = |outcome: &WriteOutcome| -> Result<(), String> {
            let mut events = Vec::new();
            if audited {
                let mut event = event.clone();
                describe_write(&mut event, &entity_for_task, &policy, outcome);
                events.push(event);
            }
            if showing {
                events.extend(shown_read(&policy, &entity_for_task, &event, outcome));
            }
            if !events.is_empty() {
                state.append_all_blocking(events).map_err(|e| e.message)?;
            }
            if let Some(principal) = &new_principal {
                state
                    .directory
                    .add_principal(principal.clone())
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        Ok(store.create(
            &entity_for_task.logical_name,
            id,
            values,
            context,
            &mut before_commit,
        )?)
    })
    .await?;
    after_write(&request, &entity, Message::Create, &outcome, draft).await?;
    Ok(write_response(
        &request,
        &entity,
        &outcome,
        true,
        shown.as_ref(),
    ))
}

/// `POST set(<id>)/collection`: creates a record of the related entity with its lookup bound
/// to record `id` (OData's create through a collection-valued navigation property) — a create
/// like any other, whose event's `Details` say which record it was made under.
pub(crate) async fn create_related(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    property: &str,
) -> Result<Response, AppError> {
    let (request, entity, related_set) = related_create(request, draft, set, id, property)?;
    // The record it starts from must exist: 404, as on any path naming a record.
    read_record(&request, &entity, id).await?;
    create(request, draft, &related_set).await
}

/// Checks a create through a collection-valued navigation property for a changeset: the
/// record it starts from may be one an earlier write of the changeset creates (`$1/…`), so
/// that it exists is checked by the store inside the changeset's transaction.
pub(crate) fn stage_create_related(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    property: &str,
) -> Result<StagedWrite, AppError> {
    let (request, _, related_set) = related_create(request, draft, set, id, property)?;
    stage_create(request, draft, &related_set)
}

/// The lookup and the set of the records a collection-valued navigation property `property`
/// of `entity` shows; `None` when it is not one.
pub(crate) fn related_lookup(
    catalog: &Catalog,
    entity: &EntityDef,
    property: &str,
) -> Option<(String, String)> {
    catalog
        .navigation(entity, property)
        .filter(|n| n.collection)
        .map(|n| (n.lookup.logical_name.clone(), n.shows().set_name.clone()))
}

/// The create `POST set(<id>)/property` makes: the request with its body binding the
/// related entity's lookup to record `id`, the entity of `set`, and the related entity's set;
/// 405 when `property` is not a collection-valued navigation property.
fn related_create(
    mut request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    property: &str,
) -> Result<(WebRequest, EntityDef, String), AppError> {
    let entity = entity_by_set(&request, set)?;
    let navigation = related_lookup(&request.instance.store.catalog(), &entity, property);
    let Some((lookup, related_set)) = navigation else {
        return Err(AppError::new(
            ErrorCode::MethodNotAllowed,
            format!(
                "POST is not supported on '{set}({id})/{property}': only a collection-valued navigation property takes one"
            ),
        ));
    };
    require_on_record(&request, Privilege::Read, &entity, id)?;
    let mut body = request.raw_members()?;
    let bind = format!("{lookup}@odata.bind");
    if body.contains_key(&bind) {
        return Err(AppError::bad_request(format!(
            "the path binds '{lookup}' to {set}({id}); leave '{bind}' out of the body"
        )));
    }
    let reference =
        serde_json::value::to_raw_value(&format!("/{set}({id})")).expect("a string is JSON");
    body.insert(bind, reference);
    request.body = serde_json::to_string(&body)
        .expect("JSON texts are JSON")
        .into();
    draft.record_ids.clear();
    draft.details = json!({
        "NavigatedFrom": entity.logical_name,
        "RecordId": id,
        "NavigationProperty": property,
    })
    .to_string();
    Ok((request, entity, related_set))
}

/// Takes the credentials out of a `systemusers` create body into a new principal.
fn principal_from_body(
    request: &WebRequest,
    body: &mut Map<String, Json>,
) -> Result<NewPrincipal, AppError> {
    let text = |body: &mut Map<String, Json>, key: &str| -> Result<Option<String>, AppError> {
        match body.remove(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(_) => Err(AppError::bad_request(format!("'{key}' must be a string"))),
        }
    };
    let password = text(body, "password")?;
    let secret = text(body, "clientsecret")?;
    let upn = body
        .get("domainname")
        .and_then(Json::as_str)
        .map(str::to_string);
    let application_id = body
        .get("applicationid")
        .and_then(Json::as_str)
        .map(str::to_string);
    let display_name = body
        .get("fullname")
        .and_then(Json::as_str)
        .map(str::to_string);
    let (upn, user_type, password_hash, client_id, secret_hash) = match (
        password,
        secret,
        application_id,
    ) {
        (Some(password), None, None) => {
            let upn = upn.ok_or_else(|| {
                AppError::bad_request("a user needs 'domainname' (the sign-in name)")
            })?;
            names::check_password(&password, "password")?;
            (
                upn,
                custos_audit::UserType::Regular,
                Some(hash_secret(&password)),
                None,
                None,
            )
        }
        (None, Some(secret), Some(application_id)) => {
            Uuid::parse_str(&application_id)
                .map_err(|_| AppError::bad_request("'applicationid' must be a GUID"))?;
            if secret.len() < 16 || secret.len() > names::PASSWORD_BYTES_MAX {
                return Err(AppError::bad_request(format!(
                    "'clientsecret' must be 16 to {} bytes",
                    names::PASSWORD_BYTES_MAX
                )));
            }
            let upn = upn.unwrap_or_else(|| format!("app-{application_id}"));
            (
                upn,
                custos_audit::UserType::Application,
                None,
                Some(application_id),
                Some(hash_secret(&secret)),
            )
        }
        _ => {
            return Err(AppError::bad_request(
                "a systemuser needs either 'password' (a user) or 'applicationid' with 'clientsecret' (an application user)",
            ));
        }
    };
    let upn = names::new_sign_in_name(&upn)?;
    let directory = &request.state.directory;
    names::check_distinct(&upn, directory.principals().iter().map(|p| p.upn.as_str()))?;
    if client_id
        .as_deref()
        .is_some_and(|c| directory.by_client_id(c).is_some())
    {
        return Err(AppError::new(
            ErrorCode::Conflict,
            "an application user with that application id already exists",
        ));
    }
    body.insert("domainname".into(), json!(upn));
    Ok(NewPrincipal {
        id: Uuid::new_v4(),
        display_name: display_name.unwrap_or_else(|| upn.clone()),
        upn,
        user_type: user_type.code(),
        password_hash,
        client_id,
        secret_hash,
        global_admin: false,
        created_by: (request.caller.user_type() == custos_audit::UserType::DcAdmin)
            .then_some(request.caller.principal.id),
    })
}

/// The version an ETag of ours names: `W/"<versionnumber>"` (or the same unweakened); `None`
/// for anything else, which then matches no record.
fn etag_version(etag: &str) -> Option<i64> {
    let etag = etag.trim();
    let quoted = etag.strip_prefix("W/").unwrap_or(etag);
    quoted.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The record version an `If-Match` header requires: `None` without one or for `*`; an ETag
/// that is not one of ours can match no version (412).
fn if_match_version(request: &WebRequest) -> Result<Option<i64>, AppError> {
    match request.header("if-match") {
        None | Some("*") => Ok(None),
        Some(etag) => etag_version(etag).map(Some).ok_or_else(|| {
            AppError::new(
                ErrorCode::PreconditionFailed,
                format!("If-Match '{etag}' is not the ETag of any version of the record"),
            )
        }),
    }
}

fn write_mode(request: &WebRequest) -> Result<WriteMode, AppError> {
    match (request.header("if-match"), request.header("if-none-match")) {
        (None, None) => Ok(WriteMode::Upsert),
        (Some(_), None) => Ok(match if_match_version(request)? {
            Some(version) => WriteMode::UpdateIfVersion(version),
            None => WriteMode::UpdateOnly,
        }),
        (None, Some("*")) => Ok(WriteMode::CreateOnly),
        (None, Some(other)) => Err(AppError::bad_request(format!(
            "If-None-Match on a write takes only '*', got '{other}'"
        ))),
        (Some(_), Some(_)) => Err(AppError::bad_request(
            "If-Match and If-None-Match cannot be combined",
        )),
    }
}

/// An update checked and ready to write.
struct UpdateChecked {
    entity: EntityDef,
    values: Vec<(String, Value)>,
    mode: WriteMode,
    /// The instance's settings record is written.
    is_organization: bool,
    /// A user is disabled (`true`) or enabled.
    disabling: Option<bool>,
    shown: Option<Shown>,
}

/// Everything an update (or upsert) checks before it writes.
fn check_update(
    request: &WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<UpdateChecked, AppError> {
    draft.operation = Operation::Update;
    let entity = entity_by_set(request, set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    let is_organization = entity.logical_name == ORGANIZATION_ENTITY;
    if is_organization {
        draft.operation = Operation::UpdateAuditSettings;
    }
    require_on_record(request, Privilege::Write, &entity, id)?;
    let mode = write_mode(request)?;
    // An upsert that would create needs the create privilege too.
    if mode != WriteMode::UpdateOnly {
        let exists = match request.instance.store.retrieve(&entity.logical_name, id) {
            Ok(_) => true,
            Err(custos_records::Error::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !exists || mode == WriteMode::CreateOnly {
            request.require(Privilege::Create, &entity)?;
        }
    }
    let body = request.json_object()?;
    let (mut values, given_id) = body_values(request, &entity, &body)?;
    if given_id.is_some_and(|given| given != id) {
        return Err(AppError::bad_request(format!(
            "the body's '{}' differs from the id in the URL",
            entity.primary_id()
        )));
    }
    // A record created through its alternate key has the key's values, or it would not be the
    // record the URL names.
    for (name, value) in request.upsert_key.iter().flatten() {
        match values.iter().find(|(n, _)| n == name) {
            Some((_, given)) if given != value => {
                return Err(AppError::bad_request(format!(
                    "the body's '{name}' differs from the alternate key in the URL, which the record it creates takes"
                )));
            }
            Some(_) => {}
            None => values.push((name.clone(), value.clone())),
        }
    }
    check_view(request, &entity, Some(id), &values)?;
    if values.len() == 1 && values[0].0 == "ownerid" && draft.operation == Operation::Update {
        draft.operation = Operation::Assign;
    }
    let activation = automation::check(
        &request.state,
        &*request.instance.store,
        &entity,
        Some(id),
        &values,
    )?;
    if let Some(operation) = activation_operation(&entity.logical_name, activation) {
        draft.operation = operation;
    }
    if is_organization
        && values
            .iter()
            .any(|(name, _)| AUDIT_SETTINGS.contains(&name.as_str()))
    {
        super::security::refuse_support_engineer(request)?;
    }
    let disabling = user_disabling(request, &entity, id, &values, draft)?;
    if is_organization && id != request.instance.organization_id {
        return Err(AppError::not_found(format!(
            "organization with id {id} does not exist"
        )));
    }
    let shown = shown(request, &entity, Some(id))?;
    Ok(UpdateChecked {
        entity,
        values,
        mode,
        is_organization,
        disabling,
        shown,
    })
}

pub(crate) async fn update(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<Response, AppError> {
    let UpdateChecked {
        entity,
        values,
        mode,
        is_organization,
        disabling,
        shown,
    } = check_update(&request, draft, set, id)?;
    let showing = shown.is_some();
    let policy = request.policy();
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let context = context(&request);
    let entity_for_task = entity.clone();
    let outcome = blocking(move || -> Result<WriteOutcome, AppError> {
        if is_organization {
            let mut merged = store.retrieve(ORGANIZATION_ENTITY, id)?;
            merged.values.extend(values.iter().cloned());
            check_settings(&merged)?;
        }
        let mut before_commit = |outcome: &WriteOutcome| -> Result<(), String> {
            let mut event = event.clone();
            describe_write(&mut event, &entity_for_task, &policy, outcome);
            let settings_changed = is_organization
                && event
                    .changes
                    .iter()
                    .any(|c| AUDIT_SETTINGS.contains(&c.attribute.as_str()));
            if is_organization && !settings_changed {
                event.operation = Operation::Update;
            }
            let mut events = Vec::new();
            if showing {
                events.extend(shown_read(&policy, &entity_for_task, &event, outcome));
            }
            if settings_changed || audits_change(&policy, &entity_for_task) {
                events.insert(0, event);
            }
            if !events.is_empty() {
                state.append_all_blocking(events).map_err(|e| e.message)?;
            }
            if let Some(disabled) = disabling {
                state
                    .directory
                    .set_disabled(id, disabled)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        Ok(store.update(
            &entity_for_task.logical_name,
            id,
            values,
            mode,
            context,
            &mut before_commit,
        )?)
    })
    .await?;
    if is_organization {
        request.instance.refresh_policy()?;
    }
    let message = if outcome.before.is_none() {
        Message::Create
    } else {
        Message::Update
    };
    after_write(&request, &entity, message, &outcome, draft).await?;
    Ok(write_response(
        &request,
        &entity,
        &outcome,
        outcome.before.is_none(),
        shown.as_ref(),
    ))
}

/// A `$ref` request as the update it is — `PUT set(id)/lookup/$ref` with `{"@odata.id":
/// "<reference>"}` sets a lookup, `DELETE` removes it: its body `{"lookup@odata.bind":
/// reference or null}`, and `If-Match: *` unless it names a version.
fn lookup_ref_as_update(
    mut request: WebRequest,
    set: &str,
    lookup: &str,
) -> Result<WebRequest, AppError> {
    let entity = entity_by_set(&request, set)?;
    if !entity
        .attribute(lookup)
        .is_some_and(|a| matches!(a.attribute_type, AttributeType::Lookup { .. }))
    {
        return Err(AppError::not_found(format!(
            "'{lookup}' is not a lookup of '{}'",
            entity.logical_name
        )));
    }
    let reference = if request.method == axum::http::Method::DELETE {
        Json::Null
    } else {
        let body = request.json_object()?;
        match body.get("@odata.id") {
            Some(Json::String(text)) => json!(text),
            _ => {
                return Err(AppError::bad_request(
                    "the body of a $ref must be {\"@odata.id\": \"<entity set>(<id>)\"}",
                ));
            }
        }
    };
    let mut bind = Map::new();
    bind.insert(format!("{lookup}@odata.bind"), reference);
    request.body = Json::Object(bind).to_string().into();
    // A reference is set on a record that exists: never an upsert.
    if !request.headers.contains_key("if-match") {
        request
            .headers
            .insert("if-match", HeaderValue::from_static("*"));
    }
    Ok(request)
}

/// `PUT set(<id>)/property` with `{"value": …}` sets one property of a record and `DELETE
/// set(<id>)/property` clears it (Dataverse's "update / delete a single property value"): the
/// update `{"property": …}` of a record that exists (`If-Match: *` unless the request names a
/// version), checked, audited and answered as that update. The value is carried over as the
/// client wrote it, so a decimal's numeral is checked as sent, not as a float read it.
fn property_as_update(
    mut request: WebRequest,
    set: &str,
    property: &str,
) -> Result<WebRequest, AppError> {
    let entity = entity_by_set(&request, set)?;
    let navigation = request
        .instance
        .store
        .catalog()
        .navigation(&entity, property)
        .map(|n| n.collection);
    match navigation {
        Some(true) => {
            return Err(AppError::new(
                ErrorCode::MethodNotAllowed,
                format!(
                    "{} is not supported on '{set}(<id>)/{property}': relate a record with POST …/{property}/$ref",
                    request.method
                ),
            ));
        }
        Some(false) => {
            return Err(AppError::bad_request(format!(
                "'{property}' is a navigation property: set it with PUT {set}(<id>)/{property}/$ref and {{\"@odata.id\": \"<entity set>(<id>)\"}}, or clear it with DELETE {set}(<id>)/{property}/$ref"
            )));
        }
        None => {}
    }
    if entity.attribute_by_web_name(property).is_none() {
        return Err(AppError::not_found(format!(
            "'{property}' is not a property of '{}'",
            entity.logical_name
        )));
    }
    let value = if request.method == axum::http::Method::DELETE {
        request
            .headers
            .insert("content-type", HeaderValue::from_static("application/json"));
        "null".to_string()
    } else {
        let body = request.raw_members()?;
        match body.get("value") {
            Some(value) if body.len() == 1 => value.get().to_string(),
            _ => {
                return Err(AppError::bad_request(format!(
                    "the body of PUT {set}(<id>)/{property} is {{\"value\": <the new value>}}"
                )));
            }
        }
    };
    request.body = format!("{{{}:{value}}}", Json::String(property.to_string())).into();
    // A property is set on a record that exists: never an upsert.
    if !request.headers.contains_key("if-match") {
        request
            .headers
            .insert("if-match", HeaderValue::from_static("*"));
    }
    Ok(request)
}

/// A request that is the update of one record written another way.
pub(crate) enum AsUpdate<'a> {
    /// `PUT` or `DELETE set(<id>)/property` ([`property_as_update`]).
    Property(&'a str),
    /// `PUT set(<id>)/lookup/$ref` with `{"@odata.id": "<reference>"}`, or `DELETE` ([`lookup_ref_as_update`]).
    LookupRef(&'a str),
}

impl AsUpdate<'_> {
    fn rewrite(&self, request: WebRequest, set: &str) -> Result<WebRequest, AppError> {
        match self {
            AsUpdate::Property(property) => property_as_update(request, set, property),
            AsUpdate::LookupRef(lookup) => lookup_ref_as_update(request, set, lookup),
        }
    }
}

/// The update `request` is, made (and audited) as one.
pub(crate) async fn update_as(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    how: AsUpdate<'_>,
) -> Result<Response, AppError> {
    let request = how.rewrite(request, set)?;
    update(request, draft, set, id).await
}

/// The lookup and set of the records `set`'s collection-valued navigation property
/// `navigation` shows, when it is one.
fn related_lookup_of(
    request: &WebRequest,
    set: &str,
    navigation: &str,
) -> Option<(String, String)> {
    let catalog = request.instance.store.catalog();
    let entity = catalog.by_set_name(set)?;
    related_lookup(&catalog, entity, navigation)
}

/// `POST set(<id>)/navigation/$ref` with `{"@odata.id": "<related set>(<other>)"}` relates
/// record `other` to this one, `DELETE set(<id>)/navigation(<other>)/$ref` (or `…/$ref?$id=`)
/// unrelates it — Dataverse's associate and disassociate through a one-to-many relationship.
/// Either is the update of `other`'s lookup (`{"lookup@odata.bind": "/set(<id>)" or null}`),
/// recorded as `other`'s update, saying where it was reached from. Unrelating checks that
/// `other` is related to this record, and updates it only at the version it was read at, so a
/// record related elsewhere meanwhile is not unrelated from there.
pub(crate) async fn set_related_ref(
    mut request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    navigation: &str,
    other: Option<Uuid>,
) -> Result<Response, AppError> {
    let entity = entity_by_set(&request, set)?;
    let (lookup, related_set) = related_lookup_of(&request, set, navigation).ok_or_else(|| {
        AppError::not_found(format!(
            "'{navigation}' is not a navigation property of '{}'",
            entity.logical_name
        ))
    })?;
    let related = entity_by_set(&request, &related_set)?;
    require_on_record(&request, Privilege::Read, &entity, id)?;
    // The record a reference names, by id or by an alternate key's values.
    let named = |text: &str| {
        let tail = text.rsplit('/').next().unwrap_or(text);
        let key = tail
            .strip_prefix(related_set.as_str())
            .and_then(|t| t.strip_prefix('('))
            .and_then(|t| t.strip_suffix(')'))
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "'{text}' does not name a record of '{related_set}' as {related_set}(<id>)"
                ))
            })?;
        bound_record(&request, &related, "the reference", key)
    };
    let (other, bind, version) = if request.method == axum::http::Method::POST {
        if other.is_some() {
            return Err(AppError::bad_request(format!(
                "POST to '{set}({id})/{navigation}/$ref' names the record in its body, not its path"
            )));
        }
        let body = request.json_object()?;
        let reference = body
            .get("@odata.id")
            .and_then(Json::as_str)
            .ok_or_else(|| {
                AppError::bad_request(
                    "the body of a $ref must be {\"@odata.id\": \"<entity set>(<id>)\"}",
                )
            })?;
        (named(reference)?, json!(format!("/{set}({id})")), None)
    } else {
        let other = match (other, request.query.iter().find(|(k, _)| k == "$id")) {
            (Some(other), None) => other,
            (None, Some((_, reference))) => named(reference)?,
            _ => {
                return Err(AppError::bad_request(format!(
                    "DELETE names the record to unrelate: '{set}({id})/{navigation}(<id>)/$ref' or '…/$ref?$id={related_set}(<id>)'"
                )));
            }
        };
        // Before it is read: a caller who may not change it learns nothing of it, not even
        // whether it is related here.
        require_on_record(&request, Privilege::Write, &related, other)?;
        let store = request.instance.store.clone();
        let logical_name = related.logical_name.clone();
        let record = blocking(move || store.retrieve(&logical_name, other)).await?;
        if record.values.get(&lookup) != Some(&Value::Guid(id)) {
            return Err(AppError::not_found(format!(
                "{related_set}({other}) is not related to {set}({id}) through '{navigation}'"
            )));
        }
        let version = match record.values.get("versionnumber") {
            Some(Value::Integer(version)) => Some(*version),
            _ => None,
        };
        (other, Json::Null, version)
    };
    let mut body = Map::new();
    body.insert(format!("{lookup}@odata.bind"), bind);
    request.body = Json::Object(body).to_string().into();
    request.method = axum::http::Method::PATCH;
    let precondition = match version {
        Some(version) => HeaderValue::from_str(&format!("W/\"{version}\"")).expect("digits"),
        None => HeaderValue::from_static("*"),
    };
    request.headers.insert("if-match", precondition);
    request
        .headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    draft.operation = Operation::Update;
    draft.details = json!({
        "NavigatedFrom": entity.logical_name,
        "RecordId": id,
        "NavigationProperty": navigation,
    })
    .to_string();
    update(request, draft, &related_set, other).await
}

/// A `systemusers` update: the sign-in name never changes, and a change of `isdisabled` (by
/// someone who may manage the user) disables or enables the principal too; returns the new
/// state to give the principal when it changes.
fn user_disabling(
    request: &WebRequest,
    entity: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    draft: &mut EventDraft,
) -> Result<Option<bool>, AppError> {
    if entity.logical_name != "systemuser" {
        return Ok(None);
    }
    if values.iter().any(|(name, _)| name == "domainname") {
        return Err(AppError::bad_request(
            "a user's sign-in name (domainname) cannot change; create a new user",
        ));
    }
    let Some((_, value)) = values.iter().find(|(name, _)| name == "isdisabled") else {
        return Ok(None);
    };
    let disabled = matches!(value, Value::Boolean(true));
    request.require(Privilege::ManageUsers, entity)?;
    let principal = super::users::manageable(request, id)?;
    if principal.disabled == disabled {
        return Ok(None);
    }
    draft.operation = super::users::disabling_operation(disabled);
    Ok(Some(disabled))
}

/// Rules on the instance settings: Start Read Auditing only while Start Auditing is on, and a
/// retention of -1 (forever) or 1 to 365,000 days, as Dataverse allows.
fn check_settings(after: &Record) -> Result<(), AppError> {
    let on = |name: &str| matches!(after.values.get(name), Some(Value::Boolean(true)));
    if on("isreadauditenabled") && !on("isauditenabled") {
        return Err(AppError::bad_request(
            "isreadauditenabled can only be turned on while isauditenabled is on",
        ));
    }
    if let Some(Value::Integer(days)) = after.values.get("auditretentionperiodv2")
        && *days != -1
        && !(1..=365_000).contains(days)
    {
        return Err(AppError::bad_request(
            "auditretentionperiodv2 must be -1 (forever) or 1 to 365000 days",
        ));
    }
    Ok(())
}

pub(crate) async fn delete(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<Response, AppError> {
    draft.operation = Operation::Delete;
    let entity = entity_by_set(&request, set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    if entity.logical_name == "solution" {
        return super::solutions::remove(request, draft, id).await;
    }
    let version = check_delete(&request, draft, &entity, id)?;
    let user = entity.logical_name == "systemuser";
    let policy = request.policy();
    let audited = audits_change(&policy, &entity);
    let mut cascade = Cascade::new(&request);
    let context = context(&request);
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let entity_for_task = entity.clone();
    let outcome = blocking(move || -> Result<WriteOutcome, AppError> {
        let mut before_commit = |outcome: &WriteOutcome| -> Result<(), String> {
            let mut events = Vec::new();
            if audited {
                let mut event = event.clone();
                describe_write(&mut event, &entity_for_task, &policy, outcome);
                events.push(event);
            }
            events.extend(cascade.events(&*store, &event, outcome)?);
            if !events.is_empty() {
                state.append_all_blocking(events).map_err(|e| e.message)?;
            }
            if user {
                state
                    .directory
                    .remove_principal(id)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let deleted = store.delete(
            &entity_for_task.logical_name,
            id,
            version,
            context,
            &mut before_commit,
        );
        deleted.map_err(|e| cascade.answer(e.into()))
    })
    .await?;
    after_write(&request, &entity, Message::Delete, &outcome, draft).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Everything a delete checks before it deletes; the record version `If-Match` names.
fn check_delete(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &EntityDef,
    id: Uuid,
) -> Result<Option<i64>, AppError> {
    request.require(Privilege::Delete, entity)?;
    undeletable(entity, Some(id))?;
    if entity.logical_name == "systemuser" {
        request.require(Privilege::ManageUsers, entity)?;
        super::users::manageable(request, id)?;
        draft.operation = Operation::DeleteUser;
    }
    if_match_version(request)
}

/// Refuses to delete records the platform itself needs: the settings and the built-in roles
/// (record `id` when one is named); users only one by one (`id` named).
pub(super) fn undeletable(entity: &EntityDef, id: Option<Uuid>) -> Result<(), AppError> {
    let built_in_role = entity.logical_name == "role"
        && id.is_none_or(|id| ROLE_IDS.iter().any(|(_, role)| *role == id));
    if entity.logical_name == ORGANIZATION_ENTITY
        || (entity.logical_name == "systemuser" && id.is_none())
        || built_in_role
    {
        return Err(AppError::bad_request(format!(
            "{} records cannot be deleted through the Web API",
            if built_in_role {
                "built-in role"
            } else {
                &entity.logical_name
            }
        )));
    }
    Ok(())
}

/// Entities a changeset may write: those whose writes change nothing but their records.
/// Users, teams, roles, automations, the settings and solutions act beyond their record when
/// they change (the directory, grants, running processes), outside the store's transaction.
pub(super) fn changeable_in_changeset(entity: &EntityDef) -> Result<(), AppError> {
    let name = entity.logical_name.as_str();
    if ALWAYS_AUDITED.contains(&name)
        || is_automation(name)
        || name == ORGANIZATION_ENTITY
        || name == "solution"
    {
        return Err(AppError::bad_request(format!(
            "{name} records cannot be written in a changeset: send the request outside one"
        )));
    }
    Ok(())
}

/// One write of a changeset, checked as the request alone would be and not yet made.
pub(crate) struct StagedWrite {
    request: WebRequest,
    draft: EventDraft,
    entity: EntityDef,
    change: RecordChange,
    shown: Option<Shown>,
}

impl StagedWrite {
    /// The record a create will make (`set(id)`), which later requests may refer to.
    pub(crate) fn created(&self) -> Option<String> {
        match &self.change {
            RecordChange::Create { id, .. } => Some(format!("{}({id})", self.entity.set_name)),
            _ => None,
        }
    }
}

/// Checks a create for a changeset; its id is chosen now.
pub(crate) fn stage_create(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
) -> Result<StagedWrite, AppError> {
    changeable_in_changeset(&entity_by_set(&request, set)?)?;
    let checked = check_create(&request, draft, set)?;
    let id = checked.id.unwrap_or_else(Uuid::new_v4);
    draft.record_ids = vec![id];
    Ok(StagedWrite {
        change: RecordChange::Create {
            entity: checked.entity.logical_name.clone(),
            id,
            values: checked.values,
        },
        entity: checked.entity,
        draft: draft.clone(),
        request,
        shown: checked.shown,
    })
}

/// Checks an update (or upsert) for a changeset.
pub(crate) fn stage_update(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<StagedWrite, AppError> {
    changeable_in_changeset(&entity_by_set(&request, set)?)?;
    let checked = check_update(&request, draft, set, id)?;
    Ok(StagedWrite {
        change: RecordChange::Update {
            entity: checked.entity.logical_name.clone(),
            id,
            values: checked.values,
            mode: checked.mode,
        },
        entity: checked.entity,
        draft: draft.clone(),
        request,
        shown: checked.shown,
    })
}

/// Checks for a changeset the update `request` is.
pub(crate) fn stage_update_as(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
    how: AsUpdate<'_>,
) -> Result<StagedWrite, AppError> {
    let request = how.rewrite(request, set)?;
    stage_update(request, draft, set, id)
}

/// Checks a delete for a changeset.
pub(crate) fn stage_delete(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<StagedWrite, AppError> {
    draft.operation = Operation::Delete;
    let entity = entity_by_set(&request, set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    changeable_in_changeset(&entity)?;
    let version = check_delete(&request, draft, &entity, id)?;
    Ok(StagedWrite {
        change: RecordChange::Delete {
            entity: entity.logical_name.clone(),
            id,
            version,
        },
        entity,
        draft: draft.clone(),
        request,
        shown: None,
    })
}

/// Makes a changeset's writes in one transaction, in order, with every audit event appended
/// together before it commits — all of them or none — then runs what follows each write and
/// answers each as it would be answered alone. A failure rolls everything back and is
/// answered (and recorded) as the refusal of the request that met it.
/// A failure names the position of the write that met it (none when the commit was refused).
pub(crate) async fn commit_changeset(
    staged: Vec<StagedWrite>,
) -> Result<Vec<Response>, (Option<usize>, Response)> {
    let Some(first) = staged.first() else {
        return Ok(Vec::new());
    };
    let state = first.request.state.clone();
    let store = first.request.instance.store.clone();
    let context = context(&first.request);
    let changes: Vec<RecordChange> = staged.iter().map(|s| s.change.clone()).collect();
    let events: Vec<(
        EventDraft,
        EntityDef,
        std::sync::Arc<custos_audit::AuditPolicy>,
        bool,
    )> = staged
        .iter()
        .map(|s| {
            let showing = s.shown.is_some();
            (
                s.draft.clone(),
                s.entity.clone(),
                s.request.policy(),
                showing,
            )
        })
        .collect();
    let appender = state.clone();
    let mut cascade = Cascade::new(&first.request);
    let applied = blocking(
        move || -> Result<Result<Vec<WriteOutcome>, ChangeFailed>, AppError> {
            let mut before_commit = |outcomes: &[WriteOutcome]| -> Result<(), String> {
                let mut drafts = Vec::new();
                for ((draft, entity, policy, showing), outcome) in events.iter().zip(outcomes) {
                    if audits_change(policy, entity) {
                        let mut event = draft.clone();
                        describe_write(&mut event, entity, policy, outcome);
                        drafts.push(event);
                    }
                    if *showing {
                        drafts.extend(shown_read(policy, entity, draft, outcome));
                    }
                    drafts.extend(cascade.events(&*store, draft, outcome)?);
                }
                if drafts.is_empty() {
                    return Ok(());
                }
                appender.append_all_blocking(drafts).map_err(|e| e.message)
            };
            match store.apply(changes, context, &mut before_commit) {
                // A change the caller may not make, found in the transaction: the refusal.
                Err(failed) if failed.index.is_none() => {
                    Err(cascade.answer(AppError::from(failed.error)))
                }
                applied => Ok(applied),
            }
        },
    )
    .await;
    let failure = match applied {
        Ok(Ok(outcomes)) => {
            let mut responses = Vec::with_capacity(staged.len());
            for (write, outcome) in staged.into_iter().zip(outcomes) {
                let message = match (&outcome.before, &outcome.after) {
                    (None, _) => Message::Create,
                    (Some(_), None) => Message::Delete,
                    (Some(_), Some(_)) => Message::Update,
                };
                let followed = after_write(
                    &write.request,
                    &write.entity,
                    message,
                    &outcome,
                    &write.draft,
                )
                .await;
                responses.push(match followed {
                    Err(error) => custos_http::refuse(&state, write.draft, error).await,
                    Ok(()) if message == Message::Delete => StatusCode::NO_CONTENT.into_response(),
                    Ok(()) => write_response(
                        &write.request,
                        &write.entity,
                        &outcome,
                        message == Message::Create,
                        write.shown.as_ref(),
                    ),
                });
            }
            return Ok(responses);
        }
        Ok(Err(ChangeFailed { index, error })) => (index, AppError::from(error)),
        Err(error) => (None, error),
    };
    // A refused commit belongs to no one write: the changeset's first request speaks for it.
    let (index, error) = failure;
    let draft = staged[index.unwrap_or(0)].draft.clone();
    Err((index, custos_http::refuse(&state, draft, error).await))
}
