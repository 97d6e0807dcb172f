//! An instance's Audit Summary, as Dataverse's Auditing settings offer it: every change of the
//! entities the viewer may read and users' access to the instance, newest first, filtered by entity, event, who changed it and
//! when (in the viewer's time zone), fifty to a page. Read through the Web API's `audits`, so
//! it is offered, checked and recorded exactly as that set is (each page a `SearchAuditLog`);
//! the Auditing settings page links here only for a viewer whose roles grant "View Audit
//! Summary" (`prvReadAuditSummary`).

use std::collections::HashMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use custos_audit::UserType;
use custos_records::Privilege;
use maud::html;

use super::zone::Zone;
use super::{Console, Page, error_page, query_string, text, visible};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// Changes a page shows.
const PAGE: &str = "50";
/// The annotation of a value as a person reads it.
const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
/// The events the filter offers: Dataverse's `audit.action` codes of the changes recorded.
const EVENTS: [(&str, &str); 13] = [
    ("1", "Create"),
    ("2", "Update"),
    ("3", "Delete"),
    ("13", "Assign"),
    ("14", "Share"),
    ("48", "Modify Share"),
    ("49", "Unshare"),
    ("57", "Add Privileges To Role"),
    ("58", "Remove Privileges From Role"),
    ("59", "Replace Privileges In Role"),
    ("64", "User Access via Web"),
    ("65", "User Access via Web Services"),
    ("104", "Audit Change at Org Level"),
];

/// Whether the viewer's roles in `instance` grant viewing its audit summary (the Web API
/// decides each reading; this spares a link that would be refused).
pub(crate) fn offered(console: &Console, instance: &str) -> bool {
    console.caller.user_type() != UserType::DcAdmin
        && console.holds(
            instance,
            Privilege::ReadAuditSummary,
            custos_records::ORGANIZATION_ENTITY,
        )
}

/// The `$filter` the form's fields ask for, or what is wrong with one of them.
fn filter_of(
    console: &Console,
    params: &HashMap<String, String>,
    zone: &Zone,
) -> Result<String, String> {
    let given = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut conditions = Vec::new();
    if let Some(entity) = given("entity") {
        conditions.push(format!(
            "objecttypecode eq '{}'",
            entity.replace('\'', "''")
        ));
    }
    if let Some(event) = given("event") {
        let code = EVENTS
            .iter()
            .find(|(code, _)| *code == event)
            .ok_or_else(|| format!("'{event}' is not an event this summary offers"))?;
        conditions.push(format!("action eq {}", code.0));
    }
    if let Some(user) = given("user") {
        let found = console
            .state
            .directory
            .principals()
            .into_iter()
            .find(|p| custos_records::same_without_case(&p.upn, user))
            .ok_or_else(|| format!("no user signs in as '{user}'"))?;
        conditions.push(format!("_userid_value eq {}", found.id));
    }
    for (name, op, to) in [("from", "ge", false), ("to", "lt", true)] {
        if let Some(typed) = given(name) {
            let at = zone.instant(typed, to)?;
            conditions.push(format!("createdon {op} {at}"));
        }
    }
    Ok(conditions.join(" and "))
}

/// `GET /ui/{instance}/settings/audit-summary[?entity=&event=&user=&from=&to=&skiptoken=]`.
pub(crate) async fn summary(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/settings/audit-summary");
    let console = console!(state, headers, context, here);
    let title = "Audit summary";
    let zone = Zone::viewer(&headers);
    let filter = match filter_of(&console, &params, &zone) {
        Ok(filter) => filter,
        Err(problem) => return error_page(&console, title, &problem),
    };
    let mut pairs = vec![("$count", "true")];
    if !filter.is_empty() {
        pairs.push(("$filter", filter.as_str()));
    }
    let skiptoken = params.get("skiptoken").map(String::as_str);
    if let Some(token) = skiptoken {
        pairs.push(("$skiptoken", token));
    }
    let path = format!("/{instance}/api/data/v9.2/audits?{}", query_string(pairs));
    let prefer = format!("odata.include-annotations=\"{FORMATTED}\",odata.maxpagesize={PAGE}");
    let answer = match console
        .read_or_page(&path, &[("prefer", &prefer)], title)
        .await
    {
        Ok(answer) => answer,
        Err(page) => return *page,
    };
    let rows = answer.json["value"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let next = answer.json["@odata.nextLink"].as_str().and_then(|link| {
        let (_, query) = link.split_once('?')?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "$skiptoken")
            .map(|(_, v)| v.into_owned())
    });
    let kept: Vec<(&str, &str)> = ["entity", "event", "user", "from", "to"]
        .into_iter()
        .filter_map(|name| params.get(name).map(|v| (name, v.as_str())))
        .collect();
    let catalog = console
        .state
        .instance(&instance)
        .map(|instance| instance.store.catalog());
    let entities: Vec<(String, String)> = catalog
        .iter()
        .flat_map(|catalog| catalog.entities())
        .map(|e| (e.logical_name.clone(), e.set_name.clone()))
        .collect();
    let chosen = |name: &str, value: &str| params.get(name).is_some_and(|v| v == value);
    let history = |entity: &str| {
        catalog
            .as_ref()
            .is_some_and(|catalog| catalog.entity(entity).is_some())
            && super::history::offered(&console, &instance, entity)
    };
    let body = html! {
        p {
            "Every change recorded in instance " code { (instance) } " of the entities you may read, and users' access to it when it audits user access, newest first. "
            "Reads and lists are not changes; who saw a record is the compliance console's to tell. Each page you open here is recorded."
        }
        form.filters method="get" action=(here) {
            p {
                label for="entity" { "Entity" }
                select id="entity" name="entity" {
                    option value="" { "(every entity)" }
                    @for (name, _) in &entities {
                        option value=(name) selected[chosen("entity", name)] { (name) }
                    }
                }
            }
            p {
                label for="event" { "Event" }
                select id="event" name="event" {
                    option value="" { "(every event)" }
                    @for (code, name) in EVENTS {
                        option value=(code) selected[chosen("event", code)] { (name) }
                    }
                }
            }
            p {
                label for="user" { "Changed by (sign-in name)" }
                input id="user" name="user" type="text" value=(params.get("user").map_or("", String::as_str));
            }
            p {
                label for="from" { "From (" (zone.name()) ")" }
                input id="from" name="from" type="text" placeholder="2026-12-01" value=(params.get("from").map_or("", String::as_str));
            }
            p {
                label for="to" { "To, included (" (zone.name()) ")" }
                input id="to" name="to" type="text" placeholder="2026-12-31" value=(params.get("to").map_or("", String::as_str));
            }
            p { button type="submit" { "Show" } }
        }
        @if let Some(total) = answer.json["@odata.count"].as_u64() {
            p { (total) @if total == 1 { " change." } @else { " changes." } }
        }
        @if rows.is_empty() {
            p { "No change matches." }
        } @else {
            table {
                thead {
                    tr {
                        th scope="col" { "Changed date (" (zone.name()) ")" }
                        th scope="col" { "Changed by" }
                        th scope="col" { "Event" }
                        th scope="col" { "Entity" }
                        th scope="col" { "Record" }
                    }
                }
                tbody {
                    @for row in rows {
                        @let entity = text(&row["objecttypecode"]);
                        @let record = text(&row["_objectid_value"]);
                        @let set = entities.iter().find(|(name, _)| *name == entity).map(|(_, set)| set.as_str());
                        tr {
                            td { (zone.show_text(&text(&row["createdon"]))) }
                            td { (visible(&text(&row[format!("_userid_value@{FORMATTED}").as_str()]))) }
                            td { (text(&row[format!("action@{FORMATTED}").as_str()])) }
                            td { (entity) }
                            td {
                                @match set {
                                    Some(set) if history(&entity) => a href={ "/ui/" (instance) "/records/" (set) "/" (record) "/history" } { code { (record) } },
                                    _ => code { (record) },
                                }
                            }
                        }
                    }
                }
            }
        }
        nav aria-label="Pages" {
            @if skiptoken.is_some() {
                a href={ (here) "?" (query_string(kept.iter().copied())) } { "Newest changes" } " "
            }
            @if let Some(next) = &next {
                a rel="next" href={ (here) "?" (query_string(kept.iter().copied().chain([("skiptoken", next.as_str())]))) } { "Older changes" }
            }
        }
    };
    Page {
        title,
        section: "settings",
        body,
    }
    .render(&console)
}
