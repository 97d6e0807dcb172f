//! System Settings → Auditing, Customizations (each entity's and attribute's audit flags,
//! saved as drafts, then published) and the admin center's list of instances.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use maud::html;
use serde_json::{Value as Json, json};

use super::page::notice;
use super::{Console, Page, encode, error_page, see_other, trimmed};
use crate::ConsoleState;
use custos_http::context::RequestContext;

async fn organization(console: &Console, instance: &str) -> Result<(String, Json), String> {
    let who = console
        .call(
            Method::GET,
            &format!("/{instance}/api/data/v9.2/WhoAmI"),
            None,
            &[],
        )
        .await
        .map_err(|e| e.message)?;
    if let Some(message) = who.error() {
        return Err(message);
    }
    let id = who.json["OrganizationId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let org = console
        .call(
            Method::GET,
            &format!("/{instance}/api/data/v9.2/organizations({id})"),
            None,
            &[],
        )
        .await
        .map_err(|e| e.message)?;
    match org.error() {
        Some(message) => Err(message),
        None => Ok((id, org.json)),
    }
}

/// `GET /ui/{instance}/settings/auditing`.
pub(crate) async fn auditing(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/settings/auditing");
    let console = console!(state, headers, context, here);
    let (id, org) = match organization(&console, &instance).await {
        Ok(found) => found,
        Err(message) => return error_page(&console, "Auditing settings", &message),
    };
    let on = |name: &str| org[name].as_bool().unwrap_or(false);
    let auditing = on("isauditenabled");
    let retention = org["auditretentionperiodv2"].as_i64().unwrap_or(90);
    let body = html! {
        (notice(params.get("saved").map(|_| "Saved: the settings apply to the next request.")))
        p { "Auditing of instance " code { (instance) } ". Entity and attribute auditing are set under " a href={ "/ui/" (instance) "/customizations" } { "Customizations" } "." }
        @if super::summary::offered(&console, &instance) {
            p { a href={ "/ui/" (instance) "/settings/audit-summary" } { "Audit summary" } ": every change recorded in this instance, who made it and when." }
        }
        @if super::history::offered(&console, &instance, custos_records::ORGANIZATION_ENTITY) {
            p { a href={ "/ui/" (instance) "/records/organizations/" (id) "/history" } { "History of these settings" } ": who changed them, when, and from what to what." }
        }
        form method="post" action=(here) {
            (console.form_field())
            fieldset {
                legend { "Auditing" }
                div.check {
                    input id="isauditenabled" name="isauditenabled" type="checkbox" value="true" checked[auditing];
                    label for="isauditenabled" { "Start Auditing" }
                }
                div.check {
                    input id="isreadauditenabled" name="isreadauditenabled" type="checkbox" value="true"
                        checked[on("isreadauditenabled")] disabled[!auditing] aria-describedby="read-help";
                    label for="isreadauditenabled" { "Start Read Auditing" }
                    @if !auditing {
                        p.muted id="read-help" { "Offered only while Start Auditing is on: turn auditing on and save first." }
                    } @else {
                        p.muted id="read-help" { "Records reads: single records and every record a view lists." }
                    }
                }
                div.check {
                    input id="isuseraccessauditenabled" name="isuseraccessauditenabled" type="checkbox" value="true" checked[on("isuseraccessauditenabled")];
                    label for="isuseraccessauditenabled" { "Audit user access (sign-in and sign-out)" }
                }
            }
            p {
                label for="auditretentionperiodv2" { "Keep this instance's audit events (days; -1 for ever)" }
                input id="auditretentionperiodv2" name="auditretentionperiodv2" type="number" min="-1" value=(retention);
            }
            div.actions { button type="submit" { "Save" } }
        }
    };
    Page {
        title: "Auditing settings",
        section: "settings",
        body,
    }
    .render(&console)
}

/// `POST /ui/{instance}/settings/auditing`.
pub(crate) async fn save_auditing(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/settings/auditing");
    let console = console!(state, headers, context, here);
    let (id, org) = match organization(&console, &instance).await {
        Ok(found) => found,
        Err(message) => return error_page(&console, "Auditing settings", &message),
    };
    let checked = |name: &str| form.get(name).is_some_and(|v| v == "true");
    let auditing = checked("isauditenabled");
    // A disabled box is not sent: read auditing keeps its value until auditing is on.
    let read = if org["isauditenabled"].as_bool().unwrap_or(false) || auditing {
        checked("isreadauditenabled") && auditing
    } else {
        false
    };
    let retention: i64 = match form
        .get("auditretentionperiodv2")
        .map(|v| v.trim().parse())
        .unwrap_or(Ok(90))
    {
        Ok(days) => days,
        Err(_) => {
            return error_page(
                &console,
                "Auditing settings",
                "the retention must be a whole number of days",
            );
        }
    };
    let mut body = json!({
        "isauditenabled": auditing,
        "isuseraccessauditenabled": checked("isuseraccessauditenabled"),
        "auditretentionperiodv2": retention,
    });
    // Read auditing can only be turned on while auditing is on: set it after auditing.
    let path = format!("/{instance}/api/data/v9.2/organizations({id})");
    call!(
        console,
        "Auditing settings",
        Method::PATCH,
        path,
        Some(body.take())
    );
    if read != org["isreadauditenabled"].as_bool().unwrap_or(false) {
        call!(
            console,
            "Auditing settings",
            Method::PATCH,
            path,
            Some(json!({"isreadauditenabled": read}))
        );
    }
    see_other(&format!("{here}?saved=1"))
}

/// The Web API path of an entity's definition.
fn definition_root(instance: &str, entity: &str) -> String {
    format!(
        "/{instance}/api/data/v9.2/EntityDefinitions(LogicalName='{}')",
        encode(entity)
    )
}

fn flag(value: &Json) -> bool {
    value["Value"].as_bool().unwrap_or(false)
}

/// `GET /ui/{instance}/customizations`.
pub(crate) async fn customizations(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations");
    let console = console!(state, headers, context, here);
    let root = format!("/{instance}/api/data/v9.2/EntityDefinitions");
    let published = call!(console, "Customizations", Method::GET, root.clone(), None);
    let published: Vec<&str> = published.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["LogicalName"].as_str())
        .collect();
    let drafts = call!(
        console,
        "Customizations",
        Method::GET,
        format!("{root}?RetrieveAsIfPublished=true"),
        None
    );
    let entities = drafts.json["value"].as_array().cloned().unwrap_or_default();
    let mark = |on: bool| if on { "On" } else { "Off" };
    let body = html! {
        (notice(params.get("published").map(|_| "Published: every draft now applies.")))
        p { "Audit flags of each entity as they will be once published. Change an entity's flags or attributes, save them as a draft, then publish." }
        table {
            thead { tr {
                th scope="col" { "Entity" } th scope="col" { "Category" }
                th scope="col" { "Auditing" } th scope="col" { "Retrieve record auditing" } th scope="col" { "Retrieve multiple auditing" }
            } }
            tbody {
                @for entity in &entities {
                    @let name = entity["LogicalName"].as_str().unwrap_or_default();
                    tr {
                        td {
                            a href={ (here) "/" (name) } { (name) }
                            @if !published.contains(&name) { " " span.muted { "(not yet published)" } }
                        }
                        td { (entity["EntityCategory"].as_str().unwrap_or_default()) }
                        td { (mark(flag(&entity["IsAuditEnabled"]))) }
                        td { (mark(flag(&entity["IsRetrieveAuditEnabled"]))) }
                        td { (mark(flag(&entity["IsRetrieveMultipleAuditEnabled"]))) }
                    }
                }
            }
        }
        form method="post" action={ (here) "/publish" } {
            (console.form_field())
            button type="submit" { "Publish all customizations" }
        }
        h2 { "New entity" }
        form method="post" action=(here) {
            (console.form_field())
            p {
                label for="schema" { "Name " span.muted { "(with your publisher prefix, e.g. new_project)" } }
                input id="schema" name="name" type="text" required pattern="[a-z]{2,8}_[a-z0-9_]+";
            }
            div.actions { button.secondary type="submit" { "Create entity" } }
        }
    };
    Page {
        title: "Customizations",
        section: "customizations",
        body,
    }
    .render(&console)
}

/// `GET /ui/{instance}/customizations/{entity}`: the draft flags of an entity and its
/// attributes.
pub(crate) async fn entity(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    let root = definition_root(&instance, &entity);
    let draft = call!(
        console,
        "Customizations",
        Method::GET,
        format!("{root}?RetrieveAsIfPublished=true"),
        None
    );
    let published = match console.call(Method::GET, &root, None, &[]).await {
        Ok(answer) if answer.status.is_success() => Some(answer.json),
        _ => None,
    };
    let attributes = call!(
        console,
        "Customizations",
        Method::GET,
        format!("{root}/Attributes?RetrieveAsIfPublished=true"),
        None
    );
    let attributes = attributes.json["value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keys = call!(
        console,
        "Customizations",
        Method::GET,
        format!("{root}/Keys?RetrieveAsIfPublished=true"),
        None
    );
    let keys = keys.json["value"].as_array().cloned().unwrap_or_default();
    // What a key may hold: attributes a client writes, of the types a key takes (the API says
    // why it refuses anything else).
    let keyable: Vec<&str> = attributes
        .iter()
        .filter(|a| a["IsValidForCreate"] == true)
        .filter(|a| {
            matches!(
                a["AttributeType"].as_str(),
                Some("String" | "Integer" | "Decimal" | "DateTime" | "Picklist" | "Lookup")
            )
        })
        .filter_map(|a| a["LogicalName"].as_str())
        .filter(|name| *name != "ownerid")
        .collect();
    let flags = [
        ("IsAuditEnabled", "Auditing"),
        ("IsRetrieveAuditEnabled", "Retrieve record auditing"),
        (
            "IsRetrieveMultipleAuditEnabled",
            "Retrieve multiple auditing",
        ),
    ];
    let pending = published.as_ref().is_none_or(|published| {
        flags
            .iter()
            .any(|(key, _)| flag(&draft.json[*key]) != flag(&published[*key]))
    });
    let custom: Vec<&str> = attributes
        .iter()
        .filter(|a| a["IsCustomAttribute"] == true)
        .filter_map(|a| a["LogicalName"].as_str())
        .filter(|name| draft.json["PrimaryNameAttribute"].as_str() != Some(name))
        .collect();
    let entities = call!(
        console,
        "Customizations",
        Method::GET,
        format!("/{instance}/api/data/v9.2/EntityDefinitions"),
        None
    );
    let targets: Vec<String> = entities.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["LogicalName"].as_str().map(str::to_string))
        .collect();
    let outcome = if params.contains_key("saved") {
        Some("Saved as a draft. Publish to apply it.".to_string())
    } else if params.contains_key("created") {
        Some("Entity created as a draft. Add attributes, then publish.".to_string())
    } else if let Some(name) = params.get("added") {
        Some(format!(
            "Attribute {name} added as a draft. Publish to apply it."
        ))
    } else if let Some(name) = params.get("keyadded") {
        Some(format!(
            "Alternate key {name} added as a draft. Publishing builds it, or says which records share its values."
        ))
    } else if let Some(name) = params.get("keydeleted") {
        Some(format!(
            "Alternate key {name} taken away as a draft. Publish to apply it."
        ))
    } else {
        params.get("deleted").map(|name| {
            format!("Attribute {name} and its data were deleted; the audit log keeps every value.")
        })
    };
    let body = html! {
        (notice(outcome.as_deref()))
        @if pending {
            p.notice role="status" { "This entity has unpublished changes." }
        }
        form method="post" action=(here) {
            (console.form_field())
            fieldset {
                legend { "Data Services: auditing of " (entity) }
                @for (key, label) in flags {
                    div.check {
                        input id=(key) name=(key) type="checkbox" value="true" checked[flag(&draft.json[key])];
                        label for=(key) { (label) }
                    }
                }
            }
            fieldset.columns {
                legend { "Auditing of each attribute (changes list only audited attributes)" }
                @for attribute in &attributes {
                    @let name = attribute["LogicalName"].as_str().unwrap_or_default();
                    div.check {
                        input id={ "attr-" (name) } name={ "attr-" (name) } type="checkbox" value="true" checked[flag(&attribute["IsAuditEnabled"])];
                        label for={ "attr-" (name) } { (name) }
                    }
                }
            }
            div.actions { button type="submit" { "Save" } }
        }
        form method="post" action={ "/ui/" (instance) "/customizations/publish" } {
            (console.form_field())
            button.secondary type="submit" { "Publish all customizations" }
        }
        h2 { "New attribute" }
        form method="post" action={ (here) "/attributes" } {
            (console.form_field())
            p {
                label for="attribute-name" { "Name " span.muted { "(with your publisher prefix, e.g. new_budget)" } }
                input id="attribute-name" name="name" type="text" required pattern="[a-z]{2,8}_[a-z0-9_]+";
            }
            p {
                label for="attribute-type" { "Type" }
                select id="attribute-type" name="type" {
                    @for (value, label) in ATTRIBUTE_TYPES {
                        option value=(value) { (label) }
                    }
                }
            }
            p {
                label for="max-length" { "Most characters (String)" }
                input id="max-length" name="maxLength" type="number" min="1" max="4000" value="100";
            }
            p {
                label for="target" { "Refers to (Lookup)" }
                select id="target" name="target" {
                    @for target in &targets { option value=(target) { (target) } }
                }
            }
            div.actions { button.secondary type="submit" { "Add attribute" } }
        }
        h2 { "Alternate keys" }
        p.muted { "A key's attributes name one record each: integrations read, upsert and bind records by them (accounts(accountnumber='A-1')), and no two records may share them." }
        @if keys.is_empty() {
            p { "None." }
        } @else {
            table {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Attributes" } th scope="col" { "Status" } th scope="col" { "Delete" } } }
                tbody {
                    @for key in &keys {
                        @let name = key["LogicalName"].as_str().unwrap_or_default();
                        tr {
                            td { code { (name) } }
                            td {
                                @for (i, attribute) in key["KeyAttributes"].as_array().into_iter().flatten().filter_map(Json::as_str).enumerate() {
                                    @if i > 0 { ", " }
                                    code { (attribute) }
                                }
                            }
                            td { (key["EntityKeyIndexStatus"].as_str().unwrap_or_default()) }
                            td {
                                form.inline method="post" action={ (here) "/keys/" (name) "/delete" } {
                                    (console.form_field())
                                    button.secondary type="submit" { "Delete " (name) }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={ (here) "/keys" } {
            (console.form_field())
            p {
                label for="key-name" { "New key's name " span.muted { "(with your publisher prefix, e.g. new_accountnumber)" } }
                input id="key-name" name="name" type="text" required pattern="[a-z]{2,8}_[a-z0-9_]+";
            }
            fieldset.columns {
                legend { "Its attributes" }
                @for name in &keyable {
                    div.check {
                        input id={ "key-attr-" (name) } name={ "key-attr-" (name) } type="checkbox" value="true";
                        label for={ "key-attr-" (name) } { (name) }
                    }
                }
            }
            div.actions { button.secondary type="submit" { "Add key" } }
        }
        @if !custom.is_empty() {
            h2 { "Delete a custom attribute" }
            p.muted { "Deleting an attribute deletes its value in every record, at once. The audit log keeps every deleted value, so it can be put back." }
            @for name in &custom {
                form.inline method="post" action={ (here) "/attributes/" (name) "/delete" } {
                    (console.form_field())
                    div.check {
                        input id={ "confirm-" (name) } name="confirm" type="checkbox" value="yes" required;
                        label for={ "confirm-" (name) } { "Delete " code { (name) } " and its data" }
                    }
                    button.danger type="submit" { "Delete " (name) }
                }
            }
        }
    };
    Page {
        title: &format!("Customize {entity}"),
        section: "customizations",
        body,
    }
    .render(&console)
}

/// `POST /ui/{instance}/customizations/{entity}`: saves the flags as a draft.
pub(crate) async fn save_entity(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    let root = definition_root(&instance, &entity);
    let checked = |name: &str| form.get(name).is_some_and(|v| v == "true");
    let body = json!({
        "IsAuditEnabled": {"Value": checked("IsAuditEnabled")},
        "IsRetrieveAuditEnabled": {"Value": checked("IsRetrieveAuditEnabled")},
        "IsRetrieveMultipleAuditEnabled": {"Value": checked("IsRetrieveMultipleAuditEnabled")},
    });
    call!(console, "Customizations", Method::PATCH, root, Some(body));
    let attributes = call!(
        console,
        "Customizations",
        Method::GET,
        format!("{root}/Attributes?RetrieveAsIfPublished=true"),
        None
    );
    for attribute in attributes.json["value"].as_array().into_iter().flatten() {
        let name = attribute["LogicalName"].as_str().unwrap_or_default();
        let wanted = checked(&format!("attr-{name}"));
        if wanted != flag(&attribute["IsAuditEnabled"]) {
            call!(
                console,
                "Customizations",
                Method::PATCH,
                format!("{root}/Attributes(LogicalName='{}')", encode(name)),
                Some(json!({"IsAuditEnabled": {"Value": wanted}}))
            );
        }
    }
    see_other(&format!("{here}?saved=1"))
}

/// The attribute types a new attribute can have: (`AttributeType`, label).
const ATTRIBUTE_TYPES: [(&str, &str); 11] = [
    ("String", "Text"),
    ("Memo", "Long text"),
    ("Integer", "Whole number"),
    ("BigInt", "Big whole number"),
    ("Decimal", "Decimal number"),
    ("Money", "Currency"),
    ("Boolean", "Yes/No"),
    ("DateTime", "Date and time"),
    ("Picklist", "Choice"),
    ("Lookup", "Lookup"),
    ("Uniqueidentifier", "Unique identifier"),
];

/// `POST /ui/{instance}/customizations` with `name`: a new custom entity (a draft).
pub(crate) async fn create_entity(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations");
    let console = console!(state, headers, context, here);
    let name = trimmed(&form, "name");
    call!(
        console,
        "New entity",
        Method::POST,
        format!("/{instance}/api/data/v9.2/EntityDefinitions"),
        Some(json!({"SchemaName": name}))
    );
    see_other(&format!("{here}/{}?created=1", encode(&name)))
}

/// `POST /ui/{instance}/customizations/{entity}/attributes` with `name`, `type`, `maxLength`
/// and `target`: a new custom attribute (a draft).
pub(crate) async fn create_attribute(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    let field = |key: &str| form.get(key).map(|v| v.trim()).unwrap_or_default();
    let name = field("name").to_string();
    let mut body = json!({"SchemaName": name, "AttributeType": field("type")});
    match field("type") {
        "String" => {
            let Ok(length) = field("maxLength").parse::<u64>() else {
                return error_page(
                    &console,
                    "New attribute",
                    "most characters must be a number",
                );
            };
            body["MaxLength"] = json!(length);
        }
        "Lookup" => body["Targets"] = json!([field("target")]),
        _ => {}
    }
    call!(
        console,
        "New attribute",
        Method::POST,
        format!("{}/Attributes", definition_root(&instance, &entity)),
        Some(body)
    );
    see_other(&format!("{here}?added={}", encode(&name)))
}

/// `POST /ui/{instance}/customizations/{entity}/attributes/{attribute}/delete` with `confirm`.
pub(crate) async fn delete_attribute(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity, attribute)): Path<(String, String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return error_page(
            &console,
            "Delete attribute",
            "tick the box to confirm that the attribute's data is to be deleted",
        );
    }
    call!(
        console,
        "Delete attribute",
        Method::DELETE,
        format!(
            "{}/Attributes(LogicalName='{}')",
            definition_root(&instance, &entity),
            encode(&attribute)
        ),
        None
    );
    see_other(&format!("{here}?deleted={}", encode(&attribute)))
}

/// `POST /ui/{instance}/customizations/{entity}/keys` with `name` and a `key-attr-<attribute>`
/// for each attribute of the key: a new alternate key (a draft).
pub(crate) async fn create_key(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    let name = trimmed(&form, "name");
    let mut attributes: Vec<&str> = form
        .keys()
        .filter_map(|k| k.strip_prefix("key-attr-"))
        .collect();
    attributes.sort_unstable();
    call!(
        console,
        "New alternate key",
        Method::POST,
        format!("{}/Keys", definition_root(&instance, &entity)),
        Some(json!({"SchemaName": name, "KeyAttributes": attributes}))
    );
    see_other(&format!("{here}?keyadded={}", encode(&name)))
}

/// `POST /ui/{instance}/customizations/{entity}/keys/{key}/delete`.
pub(crate) async fn delete_key(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path((instance, entity, key)): Path<(String, String, String)>,
) -> Response {
    let here = format!("/ui/{instance}/customizations/{entity}");
    let console = console!(state, headers, context, here);
    call!(
        console,
        "Delete alternate key",
        Method::DELETE,
        format!(
            "{}/Keys(LogicalName='{}')",
            definition_root(&instance, &entity),
            encode(&key)
        ),
        None
    );
    see_other(&format!("{here}?keydeleted={}", encode(&key)))
}

/// `POST /ui/{instance}/customizations/publish`.
pub(crate) async fn publish(
    State(state): State<ConsoleState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Response {
    let here = format!("/ui/{instance}/customizations");
    let console = console!(state, headers, context, here);
    call!(
        console,
        "Publish",
        Method::POST,
        format!("/{instance}/api/data/v9.2/PublishAllXml"),
        None
    );
    see_other(&format!("{here}?published=1"))
}
