//! A record's Audit History, as Dataverse's record form shows it: the record's changes, newest
//! first, a row per changed field with its old and new value, who changed it and when (in the
//! viewer's time zone). Read through the Web API's `RetrieveRecordChangeHistory`, so it is
//! offered, checked and recorded exactly as that function is; the form links here only for a
//! viewer whose roles grant "View Audit History" (`prvReadRecordAuditHistory`), so that opening
//! a form is never a refused read of the trail.

use std::collections::HashMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use custos_audit::UserType;
use custos_records::{AttributeDef, AttributeType, EntityDef, Privilege};
use maud::{Markup, html};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use super::records::{label, record_of};
use super::zone::Zone;
use super::{Console, Page, query_string, readable, text, visible};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// Changes a page shows.
const PAGE: u64 = 50;
/// The annotation of a value as a person reads it.
const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";

/// Whether the viewer's roles in `instance` grant viewing the audit history of the records of
/// `entity` (a logical name; the Web API decides each reading, and whether the viewer reads the
/// record; this spares a link that would be refused).
pub(crate) fn offered(console: &Console, instance: &str, entity: &str) -> bool {
    console.caller.user_type() != UserType::DcAdmin
        && console.holds(instance, Privilege::ReadRecordAuditHistory, entity)
}

/// One row of the table: a field's change in one event.
struct Row {
    when: String,
    by: String,
    event: String,
    field: String,
    old: String,
    new: String,
}

/// The rows of one `AuditDetail`: a share's principal and rights, else each attribute whose
/// value either side names (an event that changed no audited value: one row without a field).
fn rows(console: &Console, entity: &EntityDef, zone: &Zone, detail: &Json) -> Vec<Row> {
    let record = &detail["AuditRecord"];
    // Who, and — for a change made on their behalf (or a process their change set off) — who
    // really called.
    let mut by = text(&record[format!("_userid_value@{FORMATTED}").as_str()]);
    if let Some(caller) = record["_callinguserid_value"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
    {
        let name = console
            .state
            .directory
            .principal(caller)
            .map_or_else(|| caller.to_string(), |p| p.upn);
        by = format!("{by} (through {name})");
    }
    let row = |field: String, old: String, new: String| Row {
        when: zone.show_text(&text(&record["createdon"])),
        by: by.clone(),
        event: text(&record[format!("action@{FORMATTED}").as_str()]),
        field,
        old,
        new,
    };
    if detail["@odata.type"] == "#Microsoft.Dynamics.CRM.ShareAuditDetail" {
        let principal = &detail["Principal"]["systemuserid"];
        let who = principal
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| console.state.directory.principal(id))
            .map_or_else(|| text(principal), |p| p.upn);
        let old = match &detail["OldPrivileges"] {
            Json::Null => String::new(),
            old => readable(old),
        };
        return vec![row(
            format!("Access of {}", visible(&who)),
            old,
            readable(&detail["NewPrivileges"]),
        )];
    }
    if detail["@odata.type"] == "#Microsoft.Dynamics.CRM.RelationshipAuditDetail" {
        // A role given or taken, a member added or taken away: the other side, named.
        let target = &detail["TargetRecords"][0];
        let named = readable(target.get("name").unwrap_or(&target["domainname"]));
        let field = if detail["RelationshipName"] == "teammembership_association" {
            "Member"
        } else {
            "Security role"
        };
        let added = matches!(record["action"].as_i64(), Some(35 | 53 | 55));
        let (old, new) = if added {
            (String::new(), named)
        } else {
            (named, String::new())
        };
        return vec![row(field.to_string(), old, new)];
    }
    if detail["@odata.type"] == "#Microsoft.Dynamics.CRM.RolePrivilegeAuditDetail" {
        // A role's privileges: a row for each one it gained or lost.
        let names = |side: &str| -> Vec<String> {
            detail[side]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["PrivilegeName"].as_str().map(str::to_string))
                .collect()
        };
        let (before, after) = (names("OldRolePrivileges"), names("NewRolePrivileges"));
        let lost = before.iter().filter(|p| !after.contains(p));
        let gained = after.iter().filter(|p| !before.contains(p));
        let mut shown: Vec<Row> = lost
            .map(|p| row("Privilege".into(), visible(p), String::new()))
            .chain(gained.map(|p| row("Privilege".into(), String::new(), visible(p))))
            .collect();
        if shown.is_empty() {
            shown.push(row("Privilege".into(), String::new(), String::new()));
        }
        return shown;
    }
    let (old, new) = (&detail["OldValue"], &detail["NewValue"]);
    let named = |name: &str| old.get(name).is_some() || new.get(name).is_some();
    // The entity's attributes in its own order, as its form lists them; a value of an
    // attribute deleted since, after them under its recorded name.
    let lookup = |a: &AttributeDef| matches!(a.attribute_type, AttributeType::Lookup { .. });
    let mut shown: Vec<Row> = entity
        .attributes
        .iter()
        .filter(|a| named(&a.web_name()))
        .map(|a| {
            let name = a.web_name();
            row(
                label(a).to_string(),
                value(console, lookup(a), &old[name.as_str()]),
                value(console, lookup(a), &new[name.as_str()]),
            )
        })
        .collect();
    let gone = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|values| values.keys())
        .filter(|name| {
            !name.starts_with('@') && !entity.attributes.iter().any(|a| a.web_name() == **name)
        });
    for name in gone {
        if !shown.iter().any(|row| row.field == *name) {
            shown.push(row(
                visible(name),
                value(console, false, &old[name.as_str()]),
                value(console, false, &new[name.as_str()]),
            ));
        }
    }
    if shown.is_empty() {
        shown.push(row(String::new(), String::new(), String::new()));
    }
    shown
}

/// A value as the table shows it: a user a lookup names by their sign-in name, else the value.
fn value(console: &Console, lookup: bool, value: &Json) -> String {
    value
        .as_str()
        .filter(|_| lookup)
        .and_then(|text| Uuid::parse_str(text).ok())
        .and_then(|id| console.state.directory.principal(id))
        .map_or_else(|| readable(value), |user| visible(&user.upn))
}

fn table(rows: &[Row], zone: &Zone) -> Markup {
    html! {
        table {
            thead {
                tr {
                    th scope="col" { "Changed date" @if !zone.is_utc() { " (" (zone.name()) ")" } @else { " (UTC)" } }
                    th scope="col" { "Changed by" }
                    th scope="col" { "Event" }
                    th scope="col" { "Changed field" }
                    th scope="col" { "Old value" }
                    th scope="col" { "New value" }
                }
            }
            tbody {
                @for row in rows {
                    tr {
                        td { (row.when) }
                        td { (visible(&row.by)) }
                        td { (row.event) }
                        td { (row.field) }
                        td { (row.old) }
                        td { (row.new) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/{instance}/records/{set}/{id}/history[?page=N]`.
pub(crate) async fn history(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, set, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/records/{set}/{id}/history");
    let console = console!(state, headers, context, here);
    let title = "Audit history";
    let (entity, id) = match record_of(&console, &instance, &set, &id, title) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let page = params
        .get("page")
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let target = json!({"@odata.id": format!("{set}({id})")}).to_string();
    let paging =
        json!({"PageNumber": page, "Count": PAGE, "ReturnTotalRecordCount": page == 1}).to_string();
    let path = format!(
        "/{instance}/api/data/v9.2/RetrieveRecordChangeHistory(Target=@target,PagingInfo=@paging)?{}",
        query_string([("@target", target.as_str()), ("@paging", paging.as_str())])
    );
    let prefer = format!("odata.include-annotations=\"{FORMATTED}\"");
    let answer = match console
        .read_or_page(&path, &[("prefer", &prefer)], title)
        .await
    {
        Ok(answer) => answer,
        Err(page) => return *page,
    };
    let zone = Zone::viewer(&headers);
    let collection = &answer.json["AuditDetailCollection"];
    let details = collection["AuditDetails"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let shown: Vec<Row> = details
        .iter()
        .flat_map(|detail| rows(&console, &entity, &zone, detail))
        .collect();
    let form = format!("/ui/{instance}/records/{set}/{id}");
    let more = collection["MoreRecords"] == true;
    let body = html! {
        p.muted { (entity.logical_name) " " code { (id) } " — " a href=(form) { "Back to the record" } }
        p {
            "Every change recorded for this record, newest first: who made it, when, and each audited field's value before and after. "
            "Reads and lists are not changes; who saw the record is the compliance console's to tell. Opening this page is recorded."
        }
        @if let Some(total) = collection["TotalRecordCount"].as_i64().filter(|t| *t >= 0) {
            p { (total) @if total == 1 { " change recorded." } @else { " changes recorded." } }
        }
        @if shown.is_empty() {
            p { "No change of this record is recorded." }
        } @else {
            (table(&shown, &zone))
        }
        nav aria-label="Pages" {
            @if page > 1 {
                a href={ (here) "?page=" (page - 1) } rel="prev" { "Newer changes" } " "
            }
            @if more {
                a href={ (here) "?page=" (page + 1) } rel="next" { "Older changes" }
            }
        }
    };
    Page {
        title,
        section: "records",
        body,
    }
    .render(&console)
}
