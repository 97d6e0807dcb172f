//! The admin center (tenant global admins): the tenant's instances — create, convert a trial
//! to paid, delete — and one instance's backups — back up now, restore. Every page reads the
//! admin API, so opening the admin center is itself recorded (`AccessAdminCenter`).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use maud::html;
use serde_json::json;

use super::confirm::{Confirmation, confirmed, counted};
use super::page::notice;
use super::{Console, Page, encode, error_page, see_other, text};
use crate::ConsoleState;
use custos_http::context::RequestContext;

/// `GET /ui/admin`: the tenant's instances.
pub(crate) async fn instances(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/admin");
    let answer = call!(
        console,
        "Admin center",
        Method::GET,
        "/api/admin/instances",
        None
    );
    let instances = answer.json["value"].as_array().cloned().unwrap_or_default();
    let outcome = match (params.get("created"), params.get("deleted")) {
        (Some(name), _) => Some(format!("Instance {name} created.")),
        (None, Some(name)) => Some(format!("Instance {name} deleted.")),
        _ => None,
    };
    let body = html! {
        (notice(outcome.as_deref()))
        p { "Tenant " code { (state.directory.tenant_id()) } ". Everything done here is recorded with origin " code { "AdminCenter" } "." }
        table {
            caption.muted { "Instances" }
            thead { tr { th scope="col" { "Instance" } th scope="col" { "State" } th scope="col" { "Web API" } th scope="col" { "Records" } } }
            tbody {
                @for instance in &instances {
                    @let name = text(&instance["name"]);
                    tr {
                        td { a href={ "/ui/admin/instances/" (name) } { (name) } }
                        td { (text(&instance["state"])) }
                        td { code { (text(&instance["webApi"])) } }
                        td { a href={ "/ui/" (name) "/records" } { "Open" } }
                    }
                }
            }
        }
        h2 { "New instance" }
        form method="post" action="/ui/admin/instances" {
            (console.form_field())
            p {
                label for="name" { "Name " span.muted { "(a-z, 0-9 and -; it becomes the first part of the instance's URLs)" } }
                input id="name" name="name" type="text" required pattern="[a-z][a-z0-9-]{1,31}";
            }
            p {
                label for="state" { "State" }
                select id="state" name="state" {
                    option value="trial" { "Trial" }
                    option value="paid" { "Paid" }
                }
            }
            div.actions { button type="submit" { "Create instance" } }
        }
    };
    Page {
        title: "Admin center",
        section: "admin",
        body,
    }
    .render(&console)
}

/// `POST /ui/admin/instances` with `name` and `state`.
pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let console = console!(state, headers, context, "/ui/admin");
    let name = form.get("name").cloned().unwrap_or_default();
    let body =
        json!({"name": name.trim(), "state": form.get("state").map_or("trial", String::as_str)});
    call!(
        console,
        "New instance",
        Method::POST,
        "/api/admin/instances",
        Some(body)
    );
    see_other(&format!("/ui/admin?created={}", encode(name.trim())))
}

/// `GET /ui/admin/instances/{name}`: one instance, its backups, trial → paid, delete.
pub(crate) async fn instance(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/admin/instances/{name}");
    let console = console!(state, headers, context, here);
    let answer = call!(
        console,
        "Admin center",
        Method::GET,
        format!("/api/admin/instances/{}", encode(&name)),
        None
    );
    let instance = answer.json;
    let backups = instance["backups"].as_array().cloned().unwrap_or_default();
    let solutions = call!(
        console,
        "Admin center",
        Method::GET,
        format!(
            "/{}/api/data/v9.2/solutions?$select=uniquename,friendlyname,version&$orderby=uniquename",
            encode(&name)
        ),
        None
    );
    let solutions = solutions.json["value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let outcome = if params.contains_key("converted") {
        Some("Converted to paid.".to_string())
    } else if let Some(solution) = params.get("imported") {
        Some(format!("Solution {solution} imported."))
    } else if params.contains_key("removed") {
        Some(
            "Solution removed with everything it brought; the audit log keeps what was deleted."
                .to_string(),
        )
    } else if let Some(id) = params.get("backup") {
        Some(format!("Backup {id} made."))
    } else {
        params.get("restored").map(|id| {
            format!(
                "Restored from backup {id}. The audit log keeps every event, this restore included."
            )
        })
    };
    let body = html! {
        (notice(outcome.as_deref()))
        table {
            tbody {
                tr { th scope="row" { "State" } td { (text(&instance["state"])) } }
                tr { th scope="row" { "Organization id" } td { code { (text(&instance["organizationId"])) } } }
                tr { th scope="row" { "Web API" } td { code { (text(&instance["webApi"])) } } }
            }
        }
        @if instance["state"] == "trial" {
            form method="post" action={ (here) "/convert" } {
                (console.form_field())
                div.actions { button type="submit" { "Convert to paid" } }
            }
        }
        h2 { "Backups" }
        p.muted { "A backup is a consistent snapshot of the instance's records, customizations and settings. Restoring one replaces them; the audit log is never rolled back." }
        form method="post" action={ (here) "/backups" } {
            (console.form_field())
            p {
                label for="label" { "Label" }
                input id="label" name="label" type="text" maxlength="200";
            }
            div.actions { button type="submit" { "Back up now" } }
        }
        table {
            caption.muted { @if backups.is_empty() { "No backups yet." } @else { (backups.len()) " backups, newest first" } }
            thead { tr { th scope="col" { "Made" } th scope="col" { "Label" } th scope="col" { "Size" } th scope="col" { "Restore" } } }
            tbody {
                @for backup in &backups {
                    @let id = text(&backup["id"]);
                    tr {
                        td { (text(&backup["createdOn"])) }
                        td { (text(&backup["label"])) }
                        td { (backup["bytes"].as_u64().unwrap_or(0) / 1024) " KiB" }
                        td {
                            form method="post" action={ (here) "/restore" } {
                                (console.form_field())
                                input type="hidden" name="backupId" value=(id);
                                input type="hidden" name="made" value=(text(&backup["createdOn"]));
                                input type="hidden" name="label" value=(text(&backup["label"]));
                                button.danger type="submit" aria-label={ "Restore backup of " (text(&backup["createdOn"])) } { "Restore" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Solutions" }
        table {
            caption.muted { @if solutions.is_empty() { "No solutions installed." } @else { (solutions.len()) " solutions installed" } }
            thead { tr { th scope="col" { "Solution" } th scope="col" { "Unique name" } th scope="col" { "Version" } th scope="col" { "Remove" } } }
            tbody {
                @for solution in &solutions {
                    @let id = text(&solution["solutionid"]);
                    tr {
                        td { (text(&solution["friendlyname"])) }
                        td { code { (text(&solution["uniquename"])) } }
                        td { (text(&solution["version"])) }
                        td {
                            form method="post" action={ (here) "/solutions/" (id) "/remove" } {
                                (console.form_field())
                                button.danger type="submit" aria-label={ "Remove " (text(&solution["uniquename"])) } { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={ (here) "/solutions" } enctype="multipart/form-data" {
            (console.form_field())
            p {
                label for="solution-file" { "Solution file " span.muted { "(JSON: entities, attributes, views, processes, plug-in steps)" } }
                input id="solution-file" name="file" type="file" accept=".json,application/json" required;
            }
            div.actions { button.secondary type="submit" { "Import solution" } }
        }
        h2 { "Delete this instance" }
        form method="post" action={ (here) "/delete" } {
            (console.form_field())
            p {
                label for="confirm" { "Type the instance's name to delete it with every record and backup (its audit events stay)" }
                input id="confirm" name="confirm" type="text" autocomplete="off";
            }
            div.actions { button.danger type="submit" { "Delete instance" } }
        }
    };
    Page {
        title: &format!("Instance {name}"),
        section: "admin",
        body,
    }
    .render(&console)
}

/// `POST /ui/admin/instances/{name}/{action}`: convert, backups, restore, delete.
pub(crate) async fn act(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/admin/instances/{name}");
    let console = console!(state, headers, context, here);
    let api = format!("/api/admin/instances/{}", encode(&name));
    let field = |key: &str| form.get(key).cloned().unwrap_or_default();
    match action.as_str() {
        "convert" => {
            call!(
                console,
                "Convert to paid",
                Method::POST,
                format!("{api}/convert"),
                None
            );
            see_other(&format!("{here}?converted=1"))
        }
        "backups" => {
            let answer = call!(
                console,
                "Back up",
                Method::POST,
                format!("{api}/backups"),
                Some(json!({"label": field("label")}))
            );
            see_other(&format!(
                "{here}?backup={}",
                encode(&text(&answer.json["id"]))
            ))
        }
        "restore" => {
            let id = field("backupId");
            if !confirmed(&form) {
                return Confirmation {
                    title: "Restore this backup?",
                    section: "admin",
                    consequence: html! {
                        p { "Instance " strong { (name) } " goes back to the backup made " strong { (field("made")) } @if !field("label").is_empty() { " (“" (field("label")) "”)" } "." }
                        p { "Every record created, changed or deleted since then, and every customization published since then, is replaced by what the backup holds. The audit log keeps every event of those changes and records the restore." }
                    },
                    action: &format!("{here}/restore"),
                    form: &form,
                    button: "Restore the backup",
                    back: &here,
                }
                .render(&console);
            }
            call!(
                console,
                "Restore",
                Method::POST,
                format!("{api}/restore"),
                Some(json!({"backupId": id}))
            );
            see_other(&format!("{here}?restored={}", encode(&id)))
        }
        "delete" => {
            if field("confirm").trim() != name {
                return error_page(
                    &console,
                    "Delete instance",
                    &format!("type '{name}' to confirm that this instance is to be deleted"),
                );
            }
            call!(console, "Delete instance", Method::DELETE, api, None);
            see_other(&format!("/ui/admin?deleted={}", encode(&name)))
        }
        other => error_page(&console, "Admin center", &format!("no action '{other}'")),
    }
}

impl Console {
    /// Whether the signed-in user may use the admin center.
    pub(crate) fn is_global_admin(&self) -> bool {
        self.caller.principal.global_admin
    }
}

/// `POST /ui/admin/instances/{name}/solutions` (multipart, field `file`): imports a solution.
pub(crate) async fn import_solution(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(name): Path<String>,
    mut multipart: Multipart,
) -> Response {
    let here = format!("/ui/admin/instances/{name}");
    let console = console!(state, headers, context, here);
    let mut file = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            file = field.text().await.ok();
        }
    }
    let Some(file) = file else {
        return error_page(
            &console,
            "Import solution",
            "choose a solution file (JSON) to import",
        );
    };
    let answer = call!(
        console,
        "Import solution",
        Method::POST,
        format!("/{}/api/data/v9.2/ImportSolution", encode(&name)),
        Some(json!({"CustomizationFile": file}))
    );
    see_other(&format!(
        "{here}?imported={}",
        encode(&text(&answer.json["UniqueName"]))
    ))
}

/// `POST /ui/admin/instances/{name}/solutions/{id}/remove`.
pub(crate) async fn remove_solution(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/admin/instances/{name}");
    let console = console!(state, headers, context, here);
    let path = format!(
        "/{}/api/data/v9.2/solutions({})",
        encode(&name),
        encode(&id)
    );
    if !confirmed(&form) {
        let solution = call!(console, "Remove solution", Method::GET, path, None).json;
        let components: serde_json::Value =
            serde_json::from_str(&text(&solution["components"])).unwrap_or_default();
        let count = |key: &str| components[key].as_array().map_or(0, Vec::len) as u64;
        // The records the solution's entities hold go with them: count them first.
        let mut records = 0;
        let catalog = console.state.instance(&name).map(|i| i.store.catalog());
        for entity in components["Entities"].as_array().into_iter().flatten() {
            let set = catalog
                .as_ref()
                .and_then(|c| c.entity(&text(entity)).map(|e| e.set_name.clone()));
            if let Some(set) = set {
                let counted = call!(
                    console,
                    "Remove solution",
                    Method::GET,
                    format!("/{}/api/data/v9.2/{set}/$count", encode(&name)),
                    None
                );
                records += counted.json.as_u64().unwrap_or(0);
            }
        }
        return Confirmation {
            title: "Remove this solution?",
            section: "admin",
            consequence: html! {
                p { "Removing " strong { "“" (text(&solution["friendlyname"])) "”" } " from instance " strong { (name) } " deletes what it brought:" }
                ul {
                    li { (counted(count("Entities"), "entity", "entities")) ", with the " strong { (counted(records, "record", "records")) } " they hold" }
                    li { (counted(count("Attributes"), "attribute", "attributes")) ", with their values" }
                    li { (counted(count("Views"), "view", "views")) ", " (counted(count("Processes"), "process", "processes")) " and " (counted(count("PluginSteps"), "plug-in step", "plug-in steps")) }
                }
                p { "Each deletion is recorded with what it destroyed." }
            },
            action: &format!("{here}/solutions/{}/remove", encode(&id)),
            form: &form,
            button: "Remove the solution",
            back: &here,
        }
        .render(&console);
    }
    call!(console, "Remove solution", Method::DELETE, path, None);
    see_other(&format!("{here}?removed=1"))
}
