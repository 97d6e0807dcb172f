//! Security roles of an instance (issue 16): the roles, a form to make a custom one, and each
//! custom role's privileges as a grid of entities and privileges, saved at once with
//! `ReplacePrivilegesRole`. The API refuses a privilege the user's own roles do not give (the
//! grant ceiling) and records every change; a refused save keeps the grid as the user left it.

use std::collections::{BTreeSet, HashMap};

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use custos_records::{BuiltInRole, ROLE_IDS};
use maud::{Markup, html};
use serde_json::json;

use super::page::notice;
use super::{Console, Page, encode, error_page, see_other, text};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// The privileges a custom role holds on an entity, as the API names them (`prv<name><entity>`).
const ENTITY_PRIVILEGES: [&str; 7] = [
    "Create",
    "Read",
    "Write",
    "Delete",
    "Export",
    "BulkDelete",
    "Import",
];

/// The privileges a custom role holds on the instance, with what they let a user do.
const INSTANCE_PRIVILEGES: [(&str, &str); 5] = [
    (
        "prvCustomizeSystem",
        "Customize the instance (entities, attributes, publishing)",
    ),
    ("prvManageUsers", "Manage users, teams and their roles"),
    (
        "prvActOnBehalfOfAnotherUser",
        "Act on behalf of another user through the Web API (MSCRMCallerID), with only what both may do",
    ),
    (
        "prvReadRecordAuditHistory",
        "View audit history: the changes of the records one may read",
    ),
    (
        "prvReadAuditSummary",
        "View audit summary: the changes of the entities one may read, through the Web API's audits",
    ),
];

/// What a built-in role lets its holders do (its privileges are fixed).
fn built_in_scope(role: BuiltInRole) -> &'static str {
    match role {
        BuiltInRole::SystemAdministrator => "Everything in the instance.",
        BuiltInRole::BasicUser => {
            "Create, read, write, delete, export and import business records (out-of-box and custom entities) and personal views; read elsewhere."
        }
        BuiltInRole::AuditReader => "Search the audit log, run reports, export — nothing else.",
        BuiltInRole::AuditManager => {
            "What an Audit Reader does, and retention, saved reports, alerts and turning search on and off."
        }
    }
}

/// A section of the users page: the roles, each leading to its privileges, and a form to make
/// a custom role.
pub(crate) fn section(here: &str, console: &Console, roles: &[serde_json::Value]) -> Markup {
    html! {
        h2 { "Security roles" }
        table {
            caption { (roles.len()) " roles" }
            thead { tr { th scope="col" { "Role" } th scope="col" { "Kind" } th scope="col" { "Privileges" } } }
            tbody {
                @for role in roles {
                    @let id = text(&role["roleid"]);
                    @let built_in = ROLE_IDS.iter().any(|(_, built)| built.to_string() == id);
                    tr {
                        td { (text(&role["name"])) }
                        td { @if built_in { "built-in" } @else { "custom" } }
                        td { a href={ (here) "/roles/" (encode(&id)) } { @if built_in { "What it allows" } @else { "Privileges" } } }
                    }
                }
            }
        }
        form method="post" action={ (here) "/roles/new" } {
            (console.form_field())
            div.actions {
                label.check for="role-name" { "New custom role" }
                input id="role-name" name="name" type="text" required maxlength="100";
                button.secondary type="submit" { "Create role" }
            }
        }
    }
}

/// `GET /ui/{instance}/users/roles/{id}`.
pub(crate) async fn role(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/users/roles/{id}");
    let console = console!(state, headers, context, here);
    page(&console, &instance, &id, &params, None, None).await
}

/// The role's page; after a refused save, `problem` and the privileges as the user ticked them.
async fn page(
    console: &Console,
    instance: &str,
    id: &str,
    params: &HashMap<String, String>,
    problem: Option<&str>,
    ticked: Option<&BTreeSet<String>>,
) -> Response {
    let api = format!("/{instance}/api/data/v9.2");
    let held = call!(
        console,
        "Security role",
        Method::GET,
        format!(
            "{api}/roles({})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()",
            encode(id)
        ),
        None
    );
    let name = text(&held.json["Name"]);
    let built_in = ROLE_IDS
        .iter()
        .find(|(_, built)| built.to_string() == id)
        .map(|(role, _)| *role);
    let holds: BTreeSet<String> = match ticked {
        Some(ticked) => ticked.clone(),
        None => held.json["RolePrivileges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| text(&p["PrivilegeName"]).to_ascii_lowercase())
            .collect(),
    };
    let has = |privilege: &str| holds.contains(&privilege.to_ascii_lowercase());
    let mut entities: Vec<(String, String)> = console
        .state
        .instance(instance)
        .map(|open| {
            open.store
                .catalog()
                .entities()
                .map(|e| (e.logical_name.clone(), e.set_name.clone()))
                .collect()
        })
        .unwrap_or_default();
    entities.sort();
    let list = format!("/ui/{instance}/users");
    let body = html! {
        (notice(params.get("saved").map(|_| "Privileges saved.")))
        @if let Some(problem) = problem { p.error role="alert" { (problem) } }
        p { a href=(list) { "← Users and roles" } }
        @if built_in.is_none() && super::history::offered(console, instance, "role") {
            p { a href={ "/ui/" (instance) "/records/roles/" (encode(id)) "/history" } { "Audit history" } ": who gave or took this role's privileges, and when." }
        }
        @match built_in {
            Some(role) => {
                p { strong { (name) } " is a built-in role: " (built_in_scope(role)) }
                p.muted { "Its privileges are fixed; make a custom role for another set." }
            }
            None => {
                p { "What a holder of " strong { (name) } " may do in " strong { (instance) } ". You can give only what your own roles give; the change is recorded with the privileges before and after." }
                form method="post" action={ (list) "/roles/" (encode(id)) } {
                    (console.form_field())
                    table {
                        caption { "Privileges by entity" }
                        thead { tr {
                            th scope="col" { "Entity" }
                            @for privilege in ENTITY_PRIVILEGES { th scope="col" { (privilege) } }
                        } }
                        tbody {
                            @for (entity, _) in &entities {
                                tr {
                                    th scope="row" {
                                        @match custos_records::display_name(entity) {
                                            Some(label) => { (label) " " span.muted { "(" (entity) ")" } },
                                            None => (entity),
                                        }
                                    }
                                    @for privilege in ENTITY_PRIVILEGES {
                                        @let value = format!("prv{privilege}{entity}");
                                        td {
                                            input id=(value) type="checkbox" name="privilege" value=(value) checked[has(&value)];
                                            label.hidden for=(value) { (privilege) " " (entity) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    fieldset {
                        legend { "On the instance" }
                        @for (privilege, meaning) in INSTANCE_PRIVILEGES {
                            p {
                                input id=(privilege) type="checkbox" name="privilege" value=(privilege) checked[has(privilege)];
                                label.check for=(privilege) { (meaning) }
                            }
                        }
                    }
                    div.actions { button type="submit" { "Save privileges" } }
                }
            }
        }
    };
    Page {
        title: &format!("Security role: {name}"),
        section: "users",
        body,
    }
    .render_refused(console, problem.is_some())
}

/// `POST /ui/{instance}/users/roles/{id}`: `new` makes a custom role named `name`; any other
/// id replaces that role's privileges with the ticked ones.
pub(crate) async fn save(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, id)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let list = format!("/ui/{instance}/users");
    let console = console!(state, headers, context, list);
    let api = format!("/{instance}/api/data/v9.2");
    if id == "new" {
        let name = form
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        return match console
            .create(&format!("{api}/roles"), json!({"name": name}))
            .await
        {
            Ok(made) => see_other(&format!("{list}/roles/{}", encode(&made))),
            Err(message) => error_page(&console, "Security roles", &message),
        };
    }
    let ticked: BTreeSet<String> = form
        .iter()
        .filter(|(k, _)| k == "privilege")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect();
    let privileges: Vec<serde_json::Value> = form
        .iter()
        .filter(|(k, _)| k == "privilege")
        .map(|(_, v)| json!({"PrivilegeName": v}))
        .collect();
    let saved = console
        .call(
            Method::POST,
            &format!(
                "{api}/roles({})/Microsoft.Dynamics.CRM.ReplacePrivilegesRole",
                encode(&id)
            ),
            Some(json!({"Privileges": privileges})),
            &[],
        )
        .await;
    let refused = match saved {
        Ok(answer) => answer.error(),
        Err(error) => Some(error.message),
    };
    match refused {
        None => see_other(&format!("{list}/roles/{}?saved=1", encode(&id))),
        Some(message) => {
            page(
                &console,
                &instance,
                &id,
                &HashMap::new(),
                Some(&message),
                Some(&ticked),
            )
            .await
        }
    }
}
