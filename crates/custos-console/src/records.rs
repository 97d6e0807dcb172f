//! The records app: the entities of an instance, a grid view of one with paging (each page a
//! retrieve multiple, audited as the instance's settings say), and a record form to read,
//! change or delete a record.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use custos_records::{AttributeDef, AttributeType, EntityDef, OnDelete};
use maud::{Markup, html};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use super::confirm::{Confirmation, confirmed};
use super::page::notice;
use super::{
    Answer, Console, Page, encode, error_page, query_string, readable, see_other, text, trimmed,
    visible,
};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// Page sizes the grid offers.
const PAGE_SIZES: [u32; 4] = [10, 25, 50, 100];
const PAGE_SIZE_DEFAULT: u32 = 50;
/// The annotation of a value as a person reads it.
const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
/// Columns a grid shows besides the primary name.
const GRID_COLUMNS_MAX: usize = 5;

/// The entity of a record page's set and the record's id, or the error page titled `title`
/// saying which of them is wrong.
pub(crate) fn record_of(
    console: &Console,
    instance: &str,
    set: &str,
    id: &str,
    title: &str,
) -> Result<(EntityDef, Uuid), Box<Response>> {
    let entity = entity_or_page(console, instance, set, title)?;
    let id = Uuid::parse_str(id).map_err(|_| {
        Box::new(error_page(
            console,
            title,
            &format!("'{id}' is not a record id"),
        ))
    })?;
    Ok((entity, id))
}

/// The entity whose set is `set` in `instance`, when both exist.
fn entity(console: &Console, instance: &str, set: &str) -> Option<EntityDef> {
    let instance = console.state.instance(instance)?;
    instance.store.catalog().by_set_name(set).cloned()
}

/// The entity of a page's entity set, or the error page titled `title` saying it is missing.
fn entity_or_page(
    console: &Console,
    instance: &str,
    set: &str,
    title: &str,
) -> Result<EntityDef, Box<Response>> {
    entity(console, instance, set).ok_or_else(|| {
        Box::new(error_page(
            console,
            title,
            &format!("entity set '{set}' does not exist in '{instance}'"),
        ))
    })
}

/// The attributes a person edits (not kept by the platform, not the key).
fn editable(entity: &EntityDef) -> impl Iterator<Item = &AttributeDef> {
    let key = entity.primary_id();
    entity
        .attributes
        .iter()
        .filter(move |a| !a.read_only && a.logical_name != key)
}

/// The grid's columns: the primary name, then the first other editable attributes.
fn grid_columns(entity: &EntityDef) -> Vec<&AttributeDef> {
    let mut columns: Vec<&AttributeDef> = Vec::new();
    if let Some(name) = entity
        .primary_name
        .as_deref()
        .and_then(|n| entity.attribute(n))
    {
        columns.push(name);
    }
    for attribute in editable(entity) {
        if columns.len() > GRID_COLUMNS_MAX {
            break;
        }
        let shown = !matches!(attribute.attribute_type, AttributeType::Memo)
            && !columns
                .iter()
                .any(|c| c.logical_name == attribute.logical_name);
        if shown {
            columns.push(attribute);
        }
    }
    columns
}

/// The attributes the grid counts records by: choices, yes/no, lookups and short text — the
/// categories a person reads, which an aggregation groups by.
fn countable(entity: &EntityDef) -> Vec<&AttributeDef> {
    entity
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a.attribute_type,
                AttributeType::Choice
                    | AttributeType::Boolean
                    | AttributeType::Lookup { .. }
                    | AttributeType::String { .. }
            ) && a.logical_name != entity.primary_id()
        })
        .collect()
}

/// One value an attribute holds among the filter's records: as a person reads it, how many
/// records hold it, and the filter that lists them.
struct Count {
    shown: String,
    records: u64,
    filter: String,
}

/// The filter's records counted by `attribute`'s values, most first: an aggregation through
/// the Web API (`$apply=filter(…)/groupby((…),aggregate($count as count))`), so it is
/// checked and recorded as the records it counted.
async fn count_by(
    console: &Console,
    instance: &str,
    set: &str,
    attribute: &AttributeDef,
    filter: &str,
) -> Result<Vec<Count>, String> {
    let web = attribute.web_name();
    let group = format!("groupby(({web}),aggregate($count as count))");
    let apply = if filter.is_empty() {
        group
    } else {
        format!("filter({filter})/{group}")
    };
    let path = format!(
        "/{instance}/api/data/v9.2/{set}?{}",
        query_string([("$apply", apply.as_str())])
    );
    let prefer = format!("odata.include-annotations=\"{FORMATTED}\"");
    let answer = console
        .call(Method::GET, &path, None, &[("prefer", &prefer)])
        .await
        .map_err(|e| e.message)?;
    if let Some(problem) = answer.error() {
        return Err(problem);
    }
    let mut counts: Vec<Count> = answer.json["value"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|row| {
            let value = &row[web.as_str()];
            // A number, yes/no or a lookup's id is its own literal; text is quoted.
            let literal = match value {
                Json::Null => "null".to_string(),
                Json::String(text)
                    if matches!(attribute.attribute_type, AttributeType::String { .. }) =>
                {
                    format!("'{}'", text.replace('\'', "''"))
                }
                other => text(other),
            };
            let only = format!("{web} eq {literal}");
            Count {
                shown: row[format!("{web}@{FORMATTED}").as_str()]
                    .as_str()
                    .map_or_else(|| text(value), str::to_string),
                records: row["count"].as_u64().unwrap_or(0),
                filter: if filter.is_empty() {
                    only
                } else {
                    format!("({filter}) and {only}")
                },
            }
        })
        .collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.records));
    Ok(counts)
}

/// `GET /ui/{instance}/records`.
pub(crate) async fn entities(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let here = format!("/ui/{instance}/records");
    let console = console!(state, headers, context, here);
    let Some(found) = state.instance(&instance) else {
        return error_page(
            &console,
            "Records",
            &format!("instance '{instance}' does not exist"),
        );
    };
    let catalog = found.store.catalog();
    let mut entities: Vec<&EntityDef> = catalog.entities().collect();
    entities.sort_by(|a, b| {
        (a.category.as_str(), &a.logical_name).cmp(&(b.category.as_str(), &b.logical_name))
    });
    let body = html! {
        table {
            caption.muted { "Entities of instance " code { (instance) } }
            thead { tr { th scope="col" { "Entity" } th scope="col" { "Category" } th scope="col" { "Entity set" } } }
            tbody {
                @for entity in &entities {
                    tr {
                        td { a href={ "/ui/" (instance) "/records/" (entity.set_name) } { (entity.logical_name) } }
                        td { (entity.category.as_str()) }
                        td { code { (entity.set_name) } }
                    }
                }
            }
        }
    };
    Page {
        title: "Records",
        section: "records",
        body,
    }
    .render(&console)
}

/// A view the grid offers.
struct ViewChoice {
    /// `saved:<id>` or `user:<id>`, the grid's `view` parameter.
    param: String,
    /// `savedQuery` or `userQuery`, the API's parameter.
    kind: &'static str,
    id: String,
    label: String,
    columns: Option<String>,
}

/// The system views of an entity and the signed-in user's personal views of it.
async fn views(
    console: &Console,
    instance: &str,
    entity: &EntityDef,
) -> Result<Vec<ViewChoice>, String> {
    let mut out = Vec::new();
    let me = console.caller.principal.id.to_string();
    let entity_filter = format!("returnedtypecode eq '{}'", entity.logical_name);
    let mine = format!("{entity_filter} and ownerid eq {me}");
    for (set, kind, prefix, filter) in [
        (
            "savedqueries",
            "savedQuery",
            "saved",
            entity_filter.as_str(),
        ),
        ("userqueries", "userQuery", "user", mine.as_str()),
    ] {
        let key = if kind == "savedQuery" {
            "savedqueryid"
        } else {
            "userqueryid"
        };
        let path = format!(
            "/{instance}/api/data/v9.2/{set}?{}",
            query_string([
                ("$select", format!("{key},name,columns").as_str()),
                ("$filter", filter),
                ("$orderby", "name"),
            ])
        );
        let answer = console
            .call(Method::GET, &path, None, &[])
            .await
            .map_err(|e| e.message)?;
        if answer.status == axum::http::StatusCode::FORBIDDEN {
            continue;
        }
        if let Some(message) = answer.error() {
            return Err(message);
        }
        for view in answer.json["value"].as_array().into_iter().flatten() {
            let id = view[key].as_str().unwrap_or_default().to_string();
            let name = view["name"].as_str().unwrap_or_default();
            out.push(ViewChoice {
                param: format!("{prefix}:{id}"),
                kind,
                label: if prefix == "user" {
                    format!("{name} (mine)")
                } else {
                    name.to_string()
                },
                columns: view["columns"].as_str().map(str::to_string),
                id,
            });
        }
    }
    Ok(out)
}

/// `POST /ui/{instance}/records/{set}/views` with `name` and `filter`: saves the grid's filter
/// as a personal view and opens it.
pub(crate) async fn save_view(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let list = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, list);
    let entity = match entity_or_page(&console, &instance, &set, "Save view") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let body = serde_json::json!({
        "name": form.get("name").map(|n| n.trim()).unwrap_or_default(),
        "returnedtypecode": entity.logical_name,
        "filter": form.get("filter").map(|f| f.trim()).unwrap_or_default(),
    });
    let path = format!("/{instance}/api/data/v9.2/userqueries");
    match console.create(&path, body).await {
        Ok(id) => see_other(&format!("{list}?view=user:{id}")),
        Err(message) => error_page(&console, "Save view", &message),
    }
}

/// `GET /ui/{instance}/records/{set}?view=&filter=&size=&skiptoken=`.
pub(crate) async fn grid(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, here);
    let entity = match entity_or_page(&console, &instance, &set, "Records") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let size = params
        .get("size")
        .and_then(|s| s.parse().ok())
        .filter(|s| PAGE_SIZES.contains(s))
        .unwrap_or(PAGE_SIZE_DEFAULT);
    // The pages before this one, as the `$skiptoken`s that opened them (the first has none):
    // "Previous page" goes back one without the server keeping anything.
    let trail: Vec<&str> = params
        .get("trail")
        .map(|t| t.split('.').filter(|t| !t.is_empty()).collect())
        .unwrap_or_default();
    let skip = params.get("skiptoken").cloned();
    let page = match &skip {
        None => 1,
        Some(_) => trail.len() as u64 + 2,
    };
    let views = match views(&console, &instance, &entity).await {
        Ok(views) => views,
        Err(message) => return error_page(&console, &entity.logical_name, &message),
    };
    let view_param = params.get("view").cloned().unwrap_or_default();
    let view = views.iter().find(|v| v.param == view_param);
    let key = entity.primary_id();
    let columns: Vec<&AttributeDef> = match view.and_then(|v| v.columns.as_deref()) {
        Some(names) => names
            .split(',')
            .filter_map(|n| entity.attribute_by_web_name(n.trim()))
            .filter(|a| a.logical_name != key)
            .collect(),
        None => grid_columns(&entity),
    };
    let select: Vec<String> = std::iter::once(key.clone())
        .chain(columns.iter().map(|c| c.web_name()))
        .collect();
    let select = select.join(",");
    let filter = trimmed(&params, "filter");
    // A column header sorts by its column (no view: a view has its own order).
    let sort = params
        .get("sort")
        .and_then(|name| columns.iter().find(|c| c.logical_name == *name))
        .map(|c| c.logical_name.clone());
    let descending = params.get("dir").is_some_and(|d| d == "desc");
    let order = match (&sort, entity.primary_name.as_deref()) {
        (Some(column), _) => Some(format!(
            "{column} {}",
            if descending { "desc" } else { "asc" }
        )),
        (None, name) => name.map(str::to_string),
    };
    let mut pairs = vec![("$count", "true")];
    match view {
        Some(view) => pairs.push((view.kind, view.id.as_str())),
        None => {
            pairs.push(("$select", select.as_str()));
            if let Some(order) = &order {
                pairs.push(("$orderby", order));
            }
            if !filter.is_empty() {
                pairs.push(("$filter", &filter));
            }
        }
    }
    if let Some(skip) = &skip {
        pairs.push(("$skiptoken", skip));
    }
    let path = format!("/{instance}/api/data/v9.2/{set}?{}", query_string(pairs));
    // Money, numbers, dates, yes/no and lookups as a person reads them (a lookup's name is a
    // record seen: the API records it).
    let prefer = format!("odata.maxpagesize={size},odata.include-annotations=\"{FORMATTED}\"");
    let answer = match console
        .call(Method::GET, &path, None, &[("prefer", &prefer)])
        .await
    {
        Ok(answer) => answer,
        Err(error) => return error_page(&console, &entity.logical_name, &error.message),
    };
    // A refused filter is shown beside the filter as typed, with no rows: the page stays.
    let problem = answer.error();
    if let (Some(problem), true) = (&problem, filter.is_empty()) {
        return error_page(&console, &entity.logical_name, problem);
    }
    let rows = answer.json["value"].as_array().cloned().unwrap_or_default();
    let total = answer.json["@odata.count"].as_u64();
    let next = answer.json["@odata.nextLink"].as_str().and_then(|link| {
        link.split_once('?').and_then(|(_, q)| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "$skiptoken")
                .map(|(_, v)| v.into_owned())
        })
    });
    let first_row = (page - 1) * u64::from(size) + 1;
    let size_text = size.to_string();
    let sort_text = sort.clone().unwrap_or_default();
    let dir_text = if descending { "desc" } else { "asc" };
    // The grid's settings and where a pager link goes.
    let paging = |at: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = [
            ("size", size_text.as_str()),
            ("filter", filter.as_str()),
            ("view", view_param.as_str()),
            ("sort", sort_text.as_str()),
            ("dir", dir_text),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        pairs.extend(at.iter().map(|(k, v)| (*k, v.to_string())));
        pairs
    };
    // Next: this page's token joins the trail; previous: the trail's last token opens it.
    let forward = trail
        .iter()
        .copied()
        .chain(skip.as_deref())
        .collect::<Vec<_>>()
        .join(".");
    let back_trail = trail[..trail.len().saturating_sub(1)].join(".");
    let previous: Vec<(&'static str, &str)> = match trail.last() {
        Some(token) => vec![("skiptoken", token), ("trail", back_trail.as_str())],
        None => Vec::new(),
    };
    // The filter's records counted by one attribute's values, when asked (not a view's: a
    // count follows the filter).
    let counted = match params.get("countby") {
        Some(name) if view.is_none() => match countable(&entity)
            .into_iter()
            .find(|a| a.logical_name == *name)
        {
            Some(attribute) => Some((
                attribute,
                count_by(&console, &instance, &set, attribute, &filter).await,
            )),
            None => None,
        },
        _ => None,
    };
    let outcome = match (
        params.get("imported"),
        params.get("deleted"),
        params.get("removed"),
    ) {
        (Some(n), _, _) => Some(format!("Imported {n} records.")),
        (None, Some(n), _) => Some(format!("Deleted {n} records.")),
        (None, None, Some(name)) => Some(format!("Deleted “{name}”.")),
        _ => None,
    };
    let body = html! {
        (notice(outcome.as_deref()))
        form.search method="get" action=(here) {
            p {
                label for="view" { "View" }
                select id="view" name="view" {
                    option value="" selected[view.is_none()] { "(no view: the filter below)" }
                    @for option in &views {
                        option value=(option.param) selected[option.param == view_param] { (option.label) }
                    }
                }
            }
            p {
                label for="filter" { "Filter " span.muted { "(an OData $filter, e.g. " code { "startswith(" (entity.primary_name.as_deref().unwrap_or("name")) ",'A')" } ")" } }
                input id="filter" name="filter" type="text" value=(filter)
                    aria-invalid=[problem.as_ref().map(|_| "true")] aria-describedby=[problem.as_ref().map(|_| "filter-error")];
                @if let Some(problem) = &problem {
                    span.field-error id="filter-error" { (problem) }
                }
            }
            div.actions {
                label.check for="size" { "Rows per page" }
                select id="size" name="size" {
                    @for option in PAGE_SIZES {
                        option value=(option) selected[option == size] { (option) }
                    }
                }
                button type="submit" { "Show" }
                a.button.secondary href={ "/ui/" (instance) "/records" } { "All entities" }
            }
        }
        div.actions {
            form method="post" action={ (here) "/export" } {
                (console.form_field())
                input type="hidden" name="filter" value=(filter);
                input type="hidden" name="view" value=(view_param);
                label.check for="format" { "Export" }
                select id="format" name="format" {
                    option value="xlsx" { "Excel workbook (.xlsx)" }
                    option value="csv" { "CSV" }
                }
                button.secondary type="submit" { "Export to Excel" }
            }
            a.button href={ (here) "/new" } { "New" }
            a.button.secondary href={ (here) "/import" } { "Import from CSV" }
            @if view.is_none() && !filter.is_empty() {
                form method="post" action={ (here) "/views" } {
                    (console.form_field())
                    input type="hidden" name="filter" value=(filter);
                    label.check for="view-name" { "Save as personal view" }
                    input id="view-name" name="name" type="text" required;
                    button.secondary type="submit" { "Save view" }
                }
            }
            a.button.secondary href={ (here) "/bulk-delete?" (query_string([("filter", filter.as_str())])) } { "Bulk delete" }
        }
        @if view.is_none() {
            form.search method="get" action=(here) {
                input type="hidden" name="filter" value=(filter);
                input type="hidden" name="size" value=(size_text);
                div.actions {
                    label.check for="countby" { "Count the records by" }
                    select id="countby" name="countby" {
                        option value="" { "(an attribute)" }
                        @for attribute in countable(&entity) {
                            option value=(attribute.logical_name) selected[counted.as_ref().is_some_and(|(a, _)| a.logical_name == attribute.logical_name)] { (label(attribute)) }
                        }
                    }
                    button.secondary type="submit" { "Count" }
                }
            }
        }
        @if let Some((attribute, counts)) = &counted {
            section aria-labelledby="count-title" {
                h2 id="count-title" { "Records by " (label(attribute)) }
                @match counts {
                    Err(problem) => p.field-error role="alert" { (problem) },
                    Ok(counts) => {
                        @let total: u64 = counts.iter().map(|c| c.records).sum();
                        table {
                            caption.muted { (total) " records, " (counts.len()) " values" }
                            thead {
                                tr {
                                    th scope="col" { (label(attribute)) }
                                    th scope="col" { "Records" }
                                    th scope="col" { "Share" }
                                }
                            }
                            tbody {
                                @for count in counts {
                                    tr {
                                        td {
                                            a href={ (here) "?" (query_string([("filter", count.filter.as_str()), ("size", size_text.as_str())])) } {
                                                @if count.shown.is_empty() { "(empty)" } @else { (visible(&count.shown)) }
                                            }
                                        }
                                        td { (count.records) }
                                        td {
                                            meter min="0" max=(total) value=(count.records) { (count.records) " of " (total) }
                                            " " ((count.records * 100 + total / 2) / total.max(1)) " %"
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        table {
            caption.muted {
                @if rows.is_empty() { "No records." }
                @else {
                    "Rows " (first_row) "–" (first_row + rows.len() as u64 - 1)
                    @if let Some(total) = total { " of " (total) }
                }
            }
            thead {
                tr {
                    @for column in &columns {
                        @let sorted = sort.as_deref() == Some(column.logical_name.as_str());
                        th scope="col" aria-sort=(match (sorted, descending) { (true, false) => "ascending", (true, true) => "descending", _ => "none" }) {
                            @if view.is_none() {
                                a href={ (here) "?" (query_string([("size", size_text.as_str()), ("filter", filter.as_str()), ("sort", column.logical_name.as_str()), ("dir", if sorted && !descending { "desc" } else { "asc" })])) } {
                                    (label(column))
                                    @if sorted { @if descending { " ▼" } @else { " ▲" } }
                                }
                            } @else {
                                (label(column))
                            }
                        }
                    }
                }
            }
            tbody {
                @for row in &rows {
                    @let id = row[key.as_str()].as_str().unwrap_or_default();
                    tr data-id=(id) {
                        @for (i, column) in columns.iter().enumerate() {
                            @let web = column.web_name();
                            @let value = visible(
                                &row[format!("{web}@{FORMATTED}").as_str()]
                                    .as_str()
                                    .map_or_else(|| text(&row[web.as_str()]), str::to_string),
                            );
                            td {
                                @if i == 0 {
                                    a href={ "/ui/" (instance) "/records/" (set) "/" (id) } {
                                        @if value.is_empty() { "(no name)" } @else { (value) }
                                    }
                                } @else { (value) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if page > 1 {
                a.button.secondary rel="prev" href={ (here) "?" (link(paging(&previous))) } { "Previous page" }
            }
            span { "Page " (page) }
            @if let Some(next) = &next {
                a.button rel="next" href={ (here) "?" (link(paging(&[("skiptoken", next.as_str()), ("trail", forward.as_str())]))) } { "Next page" }
            }
            @if page > 2 {
                a.button.secondary href={ (here) "?" (link(paging(&[]))) } { "First page" }
            }
        }
    };
    Page {
        title: &entity.logical_name,
        section: "records",
        body,
    }
    .render_refused(&console, problem.is_some())
}

/// What a person reads for an attribute: Dataverse's label for an out-of-box one, else its
/// logical name.
pub(crate) fn label(attribute: &AttributeDef) -> &str {
    custos_records::display_name(&attribute.logical_name).unwrap_or(&attribute.logical_name)
}

/// A query string of owned pairs.
fn link(pairs: Vec<(&'static str, String)>) -> String {
    query_string(pairs.iter().map(|(k, v)| (*k, v.as_str())))
}

/// An input for one attribute, filled with its value (typed from the API, or text as the
/// user left it), and the error that concerns it beside it.
fn field(
    attribute: &AttributeDef,
    value: &Json,
    error: Option<&str>,
    lookup: Option<Picker<'_>>,
) -> Markup {
    let id = format!("f-{}", attribute.logical_name);
    let error_id = format!("{id}-error");
    let name = attribute.logical_name.as_str();
    let is = |flag: bool| {
        value == &Json::Bool(flag) || value.as_str() == Some(if flag { "true" } else { "false" })
    };
    html! {
        p {
            label for=(id) { (label(attribute)) " " span.muted { "(" (name) ", " (attribute.attribute_type.name()) ")" } }
            @match attribute.attribute_type {
                AttributeType::Memo => textarea id=(id) name=(name) rows="4" aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())] { (text(value)) },
                AttributeType::Boolean => select id=(id) name=(name) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())] {
                    option value="" selected[!is(true) && !is(false)] { "" }
                    option value="true" selected[is(true)] { "Yes" }
                    option value="false" selected[is(false)] { "No" }
                },
                // A choice with options is picked by label (the number stays the value).
                AttributeType::Choice if !attribute.options.is_empty() => {
                    @let current = text(value);
                    select id=(id) name=(name) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())] {
                        option value="" selected[current.is_empty()] { "(none)" }
                        @if !current.is_empty() && !attribute.options.iter().any(|o| o.value.to_string() == current) {
                            option value=(current) selected { (current) }
                        }
                        @for option in &attribute.options {
                            @let code = option.value.to_string();
                            option value=(code) selected[code == current] { (option.label) }
                        }
                    }
                },
                AttributeType::Lookup { .. } => @match lookup {
                    // A picker of the records it may point at, by name.
                    Some((choices, current_name)) => {
                        @let current = text(value);
                        select id=(id) name=(name) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())] {
                            option value="" selected[current.is_empty()] { "(none)" }
                            @if !current.is_empty() && !choices.iter().any(|(c, _)| *c == current) {
                                option value=(current) selected { (current_name.unwrap_or(&current)) }
                            }
                            @for (choice, choice_name) in choices {
                                option value=(choice) selected[*choice == current] { (choice_name) }
                            }
                        }
                    },
                    // Not offered (the user may not list its entity): shown, never posted back.
                    None => input id=(id) type="text" value=(text(value)) readonly aria-readonly="true";,
                },
                _ => input id=(id) name=(name) type="text" value=(text(value)) aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())];,
            }
            @if let Some(error) = error {
                span.field-error id=(error_id) { (error) }
            }
        }
    }
}

/// The records each lookup of a form may point at, by attribute: (id, name), the first hundred
/// by name. Listing them is reading them (recorded as the lists of their entity are); a lookup
/// whose entity the user may not list keeps its read-only text.
type Choices = HashMap<String, Vec<(String, String)>>;

/// A lookup's picker: the records offered, and the name of the one it holds.
type Picker<'a> = (&'a [(String, String)], Option<&'a str>);

/// How many records a lookup's picker offers.
const LOOKUP_CHOICES: u32 = 100;

async fn lookup_choices(console: &Console, instance: &str, entity: &EntityDef) -> Choices {
    let mut out = Choices::new();
    let Some(catalog) = console.state.instance(instance).map(|i| i.store.catalog()) else {
        return out;
    };
    for attribute in editable(entity) {
        let AttributeType::Lookup { target, .. } = &attribute.attribute_type else {
            continue;
        };
        let Some(target) = catalog.entity(target) else {
            continue;
        };
        let Some(name) = target.primary_name.as_deref() else {
            continue;
        };
        let key = target.primary_id();
        let path = format!(
            "/{instance}/api/data/v9.2/{}?{}",
            target.set_name,
            query_string([
                ("$select", name),
                ("$orderby", name),
                ("$top", LOOKUP_CHOICES.to_string().as_str()),
            ])
        );
        if let Ok(answer) = console.call(Method::GET, &path, None, &[]).await
            && answer.error().is_none()
        {
            let rows = answer.json["value"].as_array().cloned().unwrap_or_default();
            out.insert(
                attribute.logical_name.clone(),
                rows.iter()
                    .map(|row| (text(&row[key.as_str()]), text(&row[name])))
                    .collect(),
            );
        }
    }
    out
}

/// The attribute an API or form message is about (`attribute 'name' …`, `name must be …`).
fn field_of<'e>(entity: &'e EntityDef, message: &str) -> Option<&'e str> {
    let quoted = message
        .split('\'')
        .skip(1)
        .step_by(2)
        .find_map(|word| entity.attribute_by_web_name(word));
    let leading = message
        .split_whitespace()
        .next()
        .and_then(|word| entity.attribute_by_web_name(word));
    quoted
        .or(leading)
        .filter(|a| !a.read_only)
        .map(|a| a.logical_name.as_str())
}

/// The form as the user left it, as values for `field`.
fn as_left(form: &HashMap<String, String>) -> Json {
    Json::Object(
        form.iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// The editable fields of a record form posting to `action`, with `values` and the error of
/// a refused save placed beside its field (or above the form when it names none).
fn record_form(
    console: &Console,
    entity: &EntityDef,
    action: &str,
    values: &Json,
    error: Option<&str>,
    back: &str,
    choices: &Choices,
) -> Markup {
    let concerned = error.and_then(|message| field_of(entity, message));
    html! {
        @if let (Some(message), None) = (error, concerned) {
            p.error role="alert" { (message) }
        }
        @if concerned.is_some() {
            p.error role="alert" { "The record was not saved: see the field marked below." }
        }
        form method="post" action=(action) {
            (console.form_field())
            @for attribute in editable(entity) {
                @let name = attribute.logical_name.as_str();
                @let value = values.get(name).or_else(|| values.get(attribute.web_name().as_str())).unwrap_or(&Json::Null);
                // A lookup: the name of the record it points at, and what it may point at.
                @let named = values.get(format!("{}@{FORMATTED}", attribute.web_name()).as_str()).and_then(Json::as_str);
                @let lookup = choices.get(name).map(|c| (c.as_slice(), named));
                @let shown_value = match (&attribute.attribute_type, lookup, named) {
                    (AttributeType::Lookup { .. }, None, Some(named)) => Json::String(named.to_string()),
                    _ => value.clone(),
                };
                (field(attribute, &shown_value, error.filter(|_| concerned == Some(name)), lookup))
            }
            div.actions {
                button type="submit" { "Save" }
                a.button.secondary href=(back) { "Back to the list" }
            }
        }
    }
}

/// `GET /ui/{instance}/records/{set}/{id}`.
pub(crate) async fn form(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/{id}");
    let console = console!(state, headers, context, here);
    let (entity, id) = match record_of(&console, &instance, &set, &id, "Record") {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let path = format!("/{instance}/api/data/v9.2/{set}({id})");
    let prefer = format!("odata.include-annotations=\"{FORMATTED}\"");
    let answer = match console
        .call(Method::GET, &path, None, &[("prefer", &prefer)])
        .await
    {
        Ok(answer) => answer,
        Err(error) => return error_page(&console, &entity.logical_name, &error.message),
    };
    if let Some(message) = answer.error() {
        return error_page(&console, &entity.logical_name, &message);
    }
    let record = &answer.json;
    let choices = lookup_choices(&console, &instance, &entity).await;
    let title = entity
        .primary_name
        .as_deref()
        .map(|n| text(&record[n]))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.to_string());
    let read_only: Vec<&AttributeDef> = entity.attributes.iter().filter(|a| a.read_only).collect();
    let body = html! {
        (notice(params.get("saved").map(|_| "Saved.")))
        (notice(params.get("created").map(|_| "Created.")))
        p.muted { (entity.logical_name) " " code { (id) } }
        (record_form(&console, &entity, &here, record, None, &format!("/ui/{instance}/records/{set}"), &choices))
        form method="post" action={ (here) "/delete" } {
            (console.form_field())
            input type="hidden" name="name" value=(title);
            button.danger type="submit" { "Delete this record" }
        }
        @if super::history::offered(&console, &instance, &entity.logical_name) {
            p { a href={ (here) "/history" } { "Audit history" } " Every change of this record: who, when, each field before and after." }
        }
        @if console.caller.can_read_audit(&console.state) {
            p { a href={ "/ui/audit/subjects/" (id) } { "Who touched this record?" } " Every event that created, read, listed, exported, changed or deleted it." }
        }
        h2 { "Kept by the platform" }
        table {
            tbody {
                @for attribute in &read_only {
                    tr { th scope="row" { (label(attribute)) } td { (readable(&record[attribute.web_name().as_str()])) } }
                }
            }
        }
    };
    Page {
        title: &title,
        section: "records",
        body,
    }
    .render(&console)
}

/// The JSON body of an update from the form: every editable attribute, typed; an empty field
/// clears the value.
fn update_body(
    console: &Console,
    instance: &str,
    entity: &EntityDef,
    form: &HashMap<String, String>,
) -> Result<Map<String, Json>, String> {
    let catalog = console.state.instance(instance).map(|i| i.store.catalog());
    let mut body = Map::new();
    for attribute in editable(entity) {
        let Some(text) = form.get(&attribute.logical_name) else {
            continue;
        };
        let text = text.trim();
        // A lookup is bound to the chosen record (`x@odata.bind`), or cleared.
        if let AttributeType::Lookup { target, .. } = &attribute.attribute_type {
            let Some(set) = catalog
                .as_ref()
                .and_then(|c| c.entity(target))
                .map(|t| t.set_name.clone())
            else {
                continue;
            };
            let bound = if text.is_empty() {
                Json::Null
            } else {
                Json::String(format!("/{set}({text})"))
            };
            body.insert(format!("{}@odata.bind", attribute.logical_name), bound);
            continue;
        }
        let value = if text.is_empty() {
            Json::Null
        } else {
            match attribute.attribute_type {
                AttributeType::Integer | AttributeType::BigInt | AttributeType::Choice => text
                    .parse::<i64>()
                    .map(Json::from)
                    .map_err(|_| format!("{} must be a whole number", attribute.logical_name))?,
                AttributeType::Decimal | AttributeType::Money => {
                    let number = text
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .ok_or_else(|| format!("{} must be a number", attribute.logical_name))?;
                    // Checked from the text typed: once a JSON number, it is a float already.
                    custos_records::Value::decimal_from_text(attribute, text)
                        .map_err(|refused| refused.to_string())?;
                    Json::Number(number)
                }
                AttributeType::Boolean => Json::Bool(text == "true"),
                _ => Json::String(text.to_string()),
            }
        };
        body.insert(attribute.logical_name.clone(), value);
    }
    Ok(body)
}

/// `POST /ui/{instance}/records/{set}/{id}`: saves the form (an update).
pub(crate) async fn save(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set, id)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/{id}");
    let console = console!(state, headers, context, here);
    let Some(entity) = entity(&console, &instance, &set) else {
        return error_page(
            &console,
            "Record",
            &format!("entity set '{set}' does not exist"),
        );
    };
    let list = format!("/ui/{instance}/records/{set}");
    let kept = |message: String| KeptForm {
        console: &console,
        instance: &instance,
        entity: &entity,
        title: "Record",
        action: &here,
        form: &form,
        message,
        back: &list,
    };
    let body = match update_body(&console, &instance, &entity, &form) {
        Ok(body) => body,
        Err(message) => return kept(message).render().await,
    };
    let path = format!("/{instance}/api/data/v9.2/{set}({})", encode(&id));
    let message = match console
        .call(Method::PATCH, &path, Some(Json::Object(body)), &[])
        .await
    {
        Ok(answer) => match answer.error() {
            None => return see_other(&format!("{here}?saved=1")),
            Some(message) => message,
        },
        Err(error) => error.message,
    };
    kept(message).render().await
}

/// A refused save: the form again, as the user left it, with the reason beside its field
/// (400).
struct KeptForm<'a> {
    console: &'a Console,
    instance: &'a str,
    entity: &'a EntityDef,
    title: &'a str,
    action: &'a str,
    form: &'a HashMap<String, String>,
    message: String,
    back: &'a str,
}

impl KeptForm<'_> {
    async fn render(self) -> Response {
        let choices = lookup_choices(self.console, self.instance, self.entity).await;
        let body = record_form(
            self.console,
            self.entity,
            self.action,
            &as_left(self.form),
            Some(&self.message),
            self.back,
            &choices,
        );
        Page {
            title: self.title,
            section: "records",
            body,
        }
        .render_refused(self.console, true)
    }
}

/// `GET /ui/{instance}/records/{set}/new`: an empty record form.
pub(crate) async fn new_form(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/new");
    let console = console!(state, headers, context, here);
    let entity = match entity_or_page(&console, &instance, &set, "New record") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let list = format!("/ui/{instance}/records/{set}");
    let choices = lookup_choices(&console, &instance, &entity).await;
    Page {
        title: &format!("New {}", entity.logical_name),
        section: "records",
        body: record_form(&console, &entity, &here, &Json::Null, None, &list, &choices),
    }
    .render(&console)
}

/// `POST /ui/{instance}/records/{set}/new`: creates the record, then shows it.
pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/new");
    let console = console!(state, headers, context, here);
    let entity = match entity_or_page(&console, &instance, &set, "New record") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let list = format!("/ui/{instance}/records/{set}");
    let title = format!("New {}", entity.logical_name);
    let made = async {
        let mut body = update_body(&console, &instance, &entity, &form)?;
        // A new record has no value to clear.
        body.retain(|_, value| !value.is_null());
        let path = format!("/{instance}/api/data/v9.2/{set}");
        console.create(&path, Json::Object(body)).await
    }
    .await;
    match made {
        Ok(id) => see_other(&format!("{list}/{}?created=1", encode(&id))),
        Err(message) => {
            KeptForm {
                console: &console,
                instance: &instance,
                entity: &entity,
                title: &title,
                action: &here,
                form: &form,
                message,
                back: &list,
            }
            .render()
            .await
        }
    }
}

/// What deleting record `id` of `set` does to the records that name it directly, as the API
/// counts them (`…/navigation/$count`): each collection-valued navigation property whose
/// lookup deletes, clears or restricts, with the records it holds now (none left out but those
/// with none, or that the caller may not read).
async fn delete_reaches(
    console: &Console,
    instance: &str,
    set: &str,
    id: &str,
) -> Vec<(OnDelete, u64, String, String)> {
    let navigations: Vec<(String, OnDelete, String, String)> = {
        let Some(found) = console.state.instance(instance) else {
            return Vec::new();
        };
        let catalog = found.store.catalog();
        let Some(entity) = catalog.by_set_name(set) else {
            return Vec::new();
        };
        catalog
            .navigations(entity)
            .into_iter()
            .filter(|n| n.collection)
            .filter_map(|n| match n.lookup.attribute_type {
                AttributeType::Lookup { on_delete, .. } if on_delete != OnDelete::NoCascade => {
                    Some((
                        n.name.clone(),
                        on_delete,
                        n.referencing.set_name.clone(),
                        n.lookup.logical_name.clone(),
                    ))
                }
                _ => None,
            })
            .collect()
    };
    let mut reached = Vec::new();
    for (navigation, on_delete, related, lookup) in navigations {
        let path = format!(
            "/{instance}/api/data/v9.2/{set}({})/{navigation}/$count",
            encode(id)
        );
        if let Ok(answer) = console.call(Method::GET, &path, None, &[]).await
            && answer.status == StatusCode::OK
            && let Some(count) = answer.json.as_u64().filter(|n| *n > 0)
        {
            reached.push((on_delete, count, related, lookup));
        }
    }
    reached
}

/// `POST /ui/{instance}/records/{set}/{id}/delete`.
pub(crate) async fn delete(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set, id)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let list = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, list);
    if !confirmed(&form) {
        let name = form.get("name").cloned().unwrap_or_else(|| id.clone());
        let here = format!("{list}/{}", encode(&id));
        let reached = delete_reaches(&console, &instance, &set, &id).await;
        return Confirmation {
            title: "Delete this record?",
            section: "records",
            consequence: html! {
                p { "The " (set) " record " strong { "“" (name) "”" } " is deleted from instance " strong { (instance) } " — it cannot be restored from here." }
                @if !reached.is_empty() {
                    p { "Records that name it directly:" }
                    ul {
                        @for (on_delete, count, related, lookup) in &reached {
                            li {
                                strong { (related) " (" (count) ")" }
                                @match on_delete {
                                    OnDelete::Cascade => " belong to it and are deleted with it, each recorded as a Delete naming this one.",
                                    OnDelete::Restrict => {
                                        " name it in '" (lookup) "', which restricts its deletion: the delete is refused until they are deleted or changed."
                                    }
                                    _ => {
                                        " keep no link to it: their '" (lookup) "' is cleared, each recorded as an Update."
                                    }
                                }
                            }
                        }
                    }
                }
                p { "When the entity's changes are audited, the audit log's Delete event keeps every value it held, so what it was stays known." }
            },
            action: &format!("{here}/delete"),
            form: &form,
            button: "Delete the record",
            back: &here,
        }
        .render(&console);
    }
    let path = format!("/{instance}/api/data/v9.2/{set}({})", encode(&id));
    match console.call(Method::DELETE, &path, None, &[]).await {
        Ok(answer) => match answer.error() {
            None => see_other(&format!(
                "{list}?removed={}",
                encode(form.get("name").map_or(id.as_str(), String::as_str))
            )),
            Some(message) => error_page(&console, "Delete", &message),
        },
        Err(error) => error_page(&console, "Delete", &error.message),
    }
}

/// `POST /ui/{instance}/records/{set}/export` with `format` and the grid's `view` or `filter`:
/// the file, as the API's `ExportToExcel` made it.
pub(crate) async fn export(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, here);
    let mut body = Map::new();
    body.insert("EntitySetName".into(), Json::from(set.as_str()));
    body.insert(
        "Format".into(),
        Json::from(form.get("format").map_or("xlsx", String::as_str)),
    );
    let filter = form
        .get("filter")
        .map(|f| f.trim())
        .filter(|f| !f.is_empty());
    match (form.get("view").and_then(|v| v.split_once(':')), filter) {
        (Some(("saved", id)), _) => {
            body.insert("SavedQuery".into(), Json::from(id));
        }
        (Some((_, id)), _) => {
            body.insert("UserQuery".into(), Json::from(id));
        }
        (None, Some(filter)) => {
            body.insert("Filter".into(), Json::from(filter));
        }
        (None, None) => {}
    }
    let path = format!("/{instance}/api/data/v9.2/ExportToExcel");
    let response = match console
        .call_raw(Method::POST, &path, Some(Json::Object(body)), &[])
        .await
    {
        Ok(response) => response,
        Err(error) => return error_page(&console, "Export", &error.message),
    };
    if response.status().is_success() {
        return response;
    }
    let message = match Answer::read(response).await {
        Ok(answer) => answer.error().unwrap_or_default(),
        Err(error) => error.message,
    };
    error_page(&console, "Export", &message)
}

/// `GET /ui/{instance}/records/{set}/import`: a CSV file to import.
pub(crate) async fn import_form(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/import");
    let console = console!(state, headers, context, here);
    let entity = match entity_or_page(&console, &instance, &set, "Import") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    import_page(&console, &instance, &entity, None)
}

/// The import form; after a refused import, why, beside the file field (a browser never
/// fills a file field again, so the file is chosen anew).
fn import_page(
    console: &Console,
    instance: &str,
    entity: &EntityDef,
    problem: Option<&str>,
) -> Response {
    let set = &entity.set_name;
    let here = format!("/ui/{instance}/records/{set}/import");
    let example: Vec<String> = grid_columns(entity)
        .iter()
        .map(|a| a.logical_name.clone())
        .collect();
    let body = html! {
        p { "A CSV file: a header row naming attributes of " code { (entity.logical_name) } ", then one record per row. Every row is created, or none is: a bad value names its row and column. A column " code { (entity.primary_id()) } " keeps the ids the file gives." }
        p.muted { "For example: " code { (example.join(",")) } }
        form method="post" action=(here) enctype="multipart/form-data" {
            (console.form_field())
            p {
                label for="file" { "CSV file" }
                input id="file" name="file" type="file" accept=".csv,text/csv" required
                    aria-invalid=[problem.map(|_| "true")] aria-describedby=[problem.map(|_| "file-error")];
                @if let Some(problem) = problem {
                    span.field-error id="file-error" { "Nothing was imported: " (problem) }
                }
            }
            div.actions {
                button type="submit" { "Import" }
                a.button.secondary href={ "/ui/" (instance) "/records/" (set) } { "Back to the list" }
            }
        }
    };
    Page {
        title: &format!("Import {}", entity.set_name),
        section: "records",
        body,
    }
    .render_refused(console, problem.is_some())
}

/// `POST /ui/{instance}/records/{set}/import` (multipart, field `file`).
pub(crate) async fn import(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    mut multipart: Multipart,
) -> Response {
    let list = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, list);
    let entity = match entity_or_page(&console, &instance, &set, "Import") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let refused = |problem: &str| import_page(&console, &instance, &entity, Some(problem));
    let mut file = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                let name = field.file_name().unwrap_or("import.csv").to_string();
                match field.bytes().await {
                    Ok(bytes) => file = Some((name, bytes)),
                    Err(e) => return refused(&e.body_text()),
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return refused(&e.body_text()),
        }
    }
    let Some((name, bytes)) = file else {
        return refused("choose a CSV file to import");
    };
    let Ok(content) = String::from_utf8(bytes.to_vec()) else {
        return refused("the file is not UTF-8 text");
    };
    let body = serde_json::json!({"EntitySetName": set, "Content": content, "FileName": name});
    let path = format!("/{instance}/api/data/v9.2/ImportRecords");
    let answer = match console.call(Method::POST, &path, Some(body), &[]).await {
        Ok(answer) => answer,
        Err(error) => return refused(&error.message),
    };
    if let Some(message) = answer.error() {
        return refused(&message);
    }
    let created = answer.json["CreatedCount"].as_u64().unwrap_or(0);
    see_other(&format!("{list}?imported={created}"))
}

/// `GET /ui/{instance}/records/{set}/bulk-delete?filter=`: the filter, and how many records
/// it matches now.
pub(crate) async fn bulk_delete_form(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/bulk-delete");
    let console = console!(state, headers, context, here);
    let entity = match entity_or_page(&console, &instance, &set, "Bulk delete") {
        Ok(entity) => entity,
        Err(page) => return *page,
    };
    let filter = trimmed(&params, "filter");
    let matching = if filter.is_empty() {
        None
    } else {
        let path = format!(
            "/{instance}/api/data/v9.2/{set}?{}",
            query_string([
                ("$filter", filter.as_str()),
                ("$count", "true"),
                ("$top", "0")
            ])
        );
        let answer = call!(console, "Bulk delete", Method::GET, path, None);
        answer.json["@odata.count"].as_u64()
    };
    let body = html! {
        p { "Deletes every " code { (entity.logical_name) } " record an OData " code { "$filter" } " matches, in one step. Each deleted record's values are kept in the audit log." }
        form method="get" action=(here) {
            p {
                label for="filter" { "Filter" }
                input id="filter" name="filter" type="text" value=(filter) required;
            }
            div.actions { button.secondary type="submit" { "Count matching records" } }
        }
        @if let Some(matching) = matching {
            p role="status" { strong { (matching) } " records match " code { (filter) } " now." }
            @if matching > 0 {
                form method="post" action=(here) {
                    (console.form_field())
                    input type="hidden" name="filter" value=(filter);
                    p {
                        label for="job" { "Job name" }
                        input id="job" name="job" type="text" value={ "Bulk delete of " (set) };
                    }
                    div.actions {
                        button.danger type="submit" { "Delete matching records" }
                        a.button.secondary href={ "/ui/" (instance) "/records/" (set) } { "Back to the list" }
                    }
                }
            }
        }
    };
    Page {
        title: &format!("Bulk delete {}", entity.set_name),
        section: "records",
        body,
    }
    .render(&console)
}

/// `POST /ui/{instance}/records/{set}/bulk-delete` with `filter` and `job`.
pub(crate) async fn bulk_delete(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let list = format!("/ui/{instance}/records/{set}");
    let console = console!(state, headers, context, list);
    let mut body = Map::new();
    body.insert("EntitySetName".into(), Json::from(set.as_str()));
    body.insert(
        "Filter".into(),
        Json::from(form.get("filter").map_or("", String::as_str)),
    );
    if let Some(job) = form.get("job").map(|j| j.trim()).filter(|j| !j.is_empty()) {
        body.insert("JobName".into(), Json::from(job));
    }
    let path = format!("/{instance}/api/data/v9.2/BulkDelete");
    let answer = call!(
        console,
        "Bulk delete",
        Method::POST,
        path,
        Some(Json::Object(body))
    );
    let deleted = answer.json["DeletedCount"].as_u64().unwrap_or(0);
    see_other(&format!("{list}?deleted={deleted}"))
}
