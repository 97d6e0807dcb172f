//! Solutions (SPEC §3): a package of entity definitions, attributes, views, processes and
//! plug-in steps that configures an instance when imported, and unconfigures it when removed.
//!
//! `POST ImportSolution` with `{"CustomizationFile": {…}}` (the solution as JSON, or that JSON
//! as a string):
//!
//! ```json
//! {"UniqueName": "contoso_projects", "FriendlyName": "Projects", "Version": "1.0.0.0",
//!  "Publisher": {"Prefix": "contoso"},
//!  "Entities": [{"SchemaName": "contoso_project", "Attributes": [...]}],
//!  "Attributes": [{"EntityLogicalName": "account", "SchemaName": "contoso_tier", "AttributeType": "Integer"}],
//!  "Views": [{"name": "...", "returnedtypecode": "contoso_project", "filter": "...", "columns": "..."}],
//!  "Processes": [{"name": "...", "primaryentity": "...", "triggeron": "create", ..., "Activate": true}],
//!  "PluginSteps": [{"name": "...", "sdkmessage": "Update", ..., "Activate": true}]}
//! ```
//!
//! The whole solution is checked first — names carry the publisher's prefix and are new, every
//! view and process fits the entities it will find, the solution's own included — so an import
//! either applies completely or changes nothing. `ImportSolution` is recorded first; then every
//! part is made with its own events (drafts published as `PublishAllCustomizations`, a `Create`
//! per view, process and step, an activation for those marked `Activate`). `DELETE
//! solutions(<id>)` removes what it brought (`RemoveSolution`, then `Delete`, `DeleteAttribute`
//! and `DeleteEntity` events that keep what was destroyed).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use custos_records::{
    AttributeDef, Catalog, EntityDef, Privilege, RecordStore, Value, WriteMode, WriteOutcome,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::cascade::Cascade;
use super::metadata::{entity_from_body, new_attribute, remove_attribute, remove_entity};
use super::records::{check_view_values, context, describe_write, entity_by_set};
use crate::PlatformState;
use crate::automation;
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

/// Most components of each kind one solution brings.
const COMPONENTS_MAX: usize = 200;

/// A record a solution creates: its entity, id, values, and whether to activate it.
struct Row {
    entity: &'static str,
    id: Uuid,
    values: BTreeMap<String, Value>,
    activate: bool,
}

/// A checked solution, ready to apply.
struct Solution {
    unique_name: String,
    friendly_name: String,
    version: String,
    prefix: String,
    entities: Vec<EntityDef>,
    attributes: Vec<(String, AttributeDef)>,
    rows: Vec<Row>,
}

impl Solution {
    /// What the solution brought, kept on its record so removal knows.
    fn components(&self) -> Json {
        let ids = |entity: &str| -> Vec<Uuid> {
            self.rows
                .iter()
                .filter(|r| r.entity == entity)
                .map(|r| r.id)
                .collect()
        };
        json!({
            "Entities": self.entities.iter().map(|e| &e.logical_name).collect::<Vec<_>>(),
            "Attributes": self.attributes.iter().map(|(e, a)| json!([e, a.logical_name])).collect::<Vec<_>>(),
            "Views": ids("savedquery"),
            "Processes": ids("workflow"),
            "PluginSteps": ids("sdkmessageprocessingstep"),
        })
    }
}

fn list<'a>(
    file: &'a Map<String, Json>,
    key: &str,
) -> Result<Vec<&'a Map<String, Json>>, AppError> {
    match file.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) if items.len() <= COMPONENTS_MAX => items
            .iter()
            .map(|i| {
                i.as_object()
                    .ok_or_else(|| AppError::bad_request(format!("each of '{key}' is an object")))
            })
            .collect(),
        Some(_) => Err(AppError::bad_request(format!(
            "'{key}' must be an array of at most {COMPONENTS_MAX} objects"
        ))),
    }
}

fn owned_by(prefix: &str, name: &str, what: &str) -> Result<(), AppError> {
    if name.starts_with(&format!("{prefix}_")) {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "{what} '{name}' does not carry the solution publisher's prefix '{prefix}_'"
        )))
    }
}

/// The values of a view, process or step from its JSON: every key an attribute of `entity`.
fn row_values(
    entity: &EntityDef,
    object: &Map<String, Json>,
) -> Result<(BTreeMap<String, Value>, bool), AppError> {
    let mut values = BTreeMap::new();
    let mut activate = false;
    for (key, json) in object {
        if key == "Activate" {
            activate = json
                .as_bool()
                .ok_or_else(|| AppError::bad_request("'Activate' is true or false"))?;
            continue;
        }
        let attribute = entity
            .attribute(key)
            .filter(|a| !a.read_only && a.logical_name != entity.primary_id() && key != "statecode")
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "'{key}' is not a settable attribute of a {}",
                    entity.logical_name
                ))
            })?;
        values.insert(key.clone(), Value::from_json(attribute, json)?);
    }
    Ok((values, activate))
}

/// Reads and checks a solution against the instance as it is.
fn parse(request: &WebRequest, file: &Map<String, Json>) -> Result<Solution, AppError> {
    const KNOWN: [&str; 9] = [
        "UniqueName",
        "FriendlyName",
        "Version",
        "Publisher",
        "Entities",
        "Attributes",
        "Views",
        "Processes",
        "PluginSteps",
    ];
    if let Some(unknown) = file.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(AppError::bad_request(format!(
            "unknown part '{unknown}' of the solution"
        )));
    }
    let text = |key: &str| file.get(key).and_then(Json::as_str).map(str::trim);
    let unique_name = text("UniqueName")
        .filter(|n| {
            (2..=64).contains(&n.len())
                && n.starts_with(|c: char| c.is_ascii_alphabetic())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .ok_or_else(|| {
            AppError::bad_request(
                "'UniqueName' is required: 2 to 64 letters, digits and '_', starting with a letter",
            )
        })?
        .to_string();
    let version = text("Version").unwrap_or("1.0.0.0").to_string();
    let prefix = file
        .get("Publisher")
        .and_then(|p| p["Prefix"].as_str())
        .filter(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase()))
        .ok_or_else(|| {
            AppError::bad_request("'Publisher' needs a 'Prefix' of 2 to 8 lowercase letters")
        })?
        .to_string();
    let store = &request.instance.store;
    let published = store.catalog();
    let drafts = store.drafts()?;
    let taken = |name: &str| drafts.iter().any(|d| d.logical_name == name);

    // Entities first: attributes, views and processes may use them.
    let mut known: Vec<EntityDef> = published.entities().cloned().collect();
    let mut entities = Vec::new();
    for body in list(file, "Entities")? {
        let catalog = Catalog::new(known.clone());
        let definition = entity_from_body(&catalog, body)?;
        owned_by(&prefix, &definition.logical_name, "entity")?;
        if taken(&definition.logical_name)
            || known.iter().any(|e| e.set_name == definition.set_name)
        {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("entity '{}' already exists", definition.logical_name),
            ));
        }
        known.push(definition.clone());
        entities.push(definition);
    }
    let mut attributes = Vec::new();
    for body in list(file, "Attributes")? {
        let entity = body
            .get("EntityLogicalName")
            .and_then(Json::as_str)
            .ok_or_else(|| {
                AppError::bad_request("each of 'Attributes' names its 'EntityLogicalName'")
            })?
            .to_string();
        let mut attribute_body = body.clone();
        attribute_body.remove("EntityLogicalName");
        let attribute = new_attribute(&Catalog::new(known.clone()), &attribute_body)?;
        owned_by(&prefix, &attribute.logical_name, "attribute")?;
        let target = known
            .iter_mut()
            .find(|e| e.logical_name == entity && published.entity(&entity).is_some())
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "'{entity}' is not a published entity (a solution's own entities list their attributes themselves)"
                ))
            })?;
        let in_draft = drafts
            .iter()
            .find(|d| d.logical_name == entity)
            .is_some_and(|d| d.attribute(&attribute.logical_name).is_some());
        if target.attribute(&attribute.logical_name).is_some() || in_draft {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!(
                    "attribute '{}' already exists on '{entity}'",
                    attribute.logical_name
                ),
            ));
        }
        target.attributes.push(attribute.clone());
        attributes.push((entity, attribute));
    }
    let catalog = Catalog::new(known);

    let mut rows = Vec::new();
    for (key, entity) in [
        ("Views", "savedquery"),
        ("Processes", "workflow"),
        ("PluginSteps", "sdkmessageprocessingstep"),
    ] {
        let definition = published
            .entity(entity)
            .ok_or_else(|| AppError::not_found(format!("entity '{entity}' does not exist")))?;
        for object in list(file, key)? {
            let (values, activate) = row_values(definition, object)?;
            let id = Uuid::new_v4();
            if entity == "savedquery" {
                if activate {
                    return Err(AppError::bad_request("views are not activated"));
                }
                check_view_values(&catalog, &values)?;
            } else {
                automation::definition(&catalog, entity, id, &values)
                    .map_err(|why| AppError::bad_request(format!("{key}: {why}")))?;
                automation::check_target(&request.state, &values)?;
            }
            rows.push(Row {
                entity,
                id,
                values,
                activate,
            });
        }
    }
    Ok(Solution {
        friendly_name: text("FriendlyName").unwrap_or(&unique_name).to_string(),
        unique_name,
        version,
        prefix,
        entities,
        attributes,
        rows,
    })
}

/// The customizations privilege, checked on the organization entity.
fn require_customizer(request: &WebRequest) -> Result<(), AppError> {
    let organization = entity_by_set(request, "organizations")?;
    request.require(Privilege::Customize, &organization)
}

/// The solution record with this unique name, when one is installed.
fn installed(request: &WebRequest, unique_name: &str) -> Result<Option<Uuid>, AppError> {
    let options = custos_records::parse_query_options([(
        "$filter",
        format!("uniquename eq '{}'", unique_name.replace('\'', "''")).as_str(),
    )])?;
    let page = request
        .instance
        .store
        .retrieve_multiple(&custos_records::RecordQuery {
            entity: "solution",
            options: &options,
            page_size: 1,
        })?;
    Ok(page.records.first().map(|r| r.id))
}

/// Creates one record of a solution, its `Create` event durable before it commits; an
/// automation marked `Activate` is activated after, with its own event.
fn create_row(
    state: &PlatformState,
    request: &WebRequest,
    template: &EventDraft,
    row: Row,
) -> Result<(), AppError> {
    let store = &request.instance.store;
    let catalog = store.catalog();
    let entity = catalog
        .entity(row.entity)
        .ok_or_else(|| AppError::not_found(format!("entity '{}' does not exist", row.entity)))?;
    let policy = request.policy();
    let write = |operation: Operation, outcome: &WriteOutcome| {
        let mut event = template.clone();
        event.operation = operation;
        event.set_entity(entity);
        describe_write(&mut event, entity, &policy, outcome);
        state.append_blocking(event).map_err(|e| e.message)
    };
    store.create(
        row.entity,
        Some(row.id),
        row.values.into_iter().collect(),
        context(request),
        &mut |outcome| write(Operation::Create, outcome),
    )?;
    if row.activate {
        let operation =
            automation::activation_operation(row.entity, automation::Activation::Activated)
                .expect("an activation has its operation");
        store.update(
            row.entity,
            row.id,
            vec![("statecode".into(), Value::Integer(1))],
            WriteMode::UpdateOnly,
            context(request),
            &mut |outcome| write(operation, outcome),
        )?;
    }
    Ok(())
}

/// `POST ImportSolution`.
pub(super) async fn import(
    request: WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::ImportSolution;
    let solution_entity = entity_by_set(&request, "solutions")?;
    draft.set_entity(&solution_entity);
    require_customizer(&request)?;
    let body = request.json_object()?;
    if let Some(unknown) = body.keys().find(|k| {
        !matches!(
            k.as_str(),
            "CustomizationFile"
                | "OverwriteUnmanagedCustomizations"
                | "PublishWorkflows"
                | "ImportJobId"
        )
    }) {
        return Err(AppError::bad_request(format!(
            "unknown parameter '{unknown}'"
        )));
    }
    let file = match body.get("CustomizationFile") {
        Some(Json::Object(file)) => file.clone(),
        Some(Json::String(text)) => match serde_json::from_str(text) {
            Ok(Json::Object(file)) => file,
            _ => {
                return Err(AppError::bad_request(
                    "'CustomizationFile' must be a solution: a JSON object (or its text)",
                ));
            }
        },
        _ => {
            return Err(AppError::bad_request(
                "'CustomizationFile' is required: the solution as a JSON object",
            ));
        }
    };
    let solution = parse(&request, &file)?;
    if installed(&request, &solution.unique_name)?.is_some() {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "solution '{}' is already installed; remove it before importing it again",
                solution.unique_name
            ),
        ));
    }
    let solution_id = Uuid::new_v4();
    let components = solution.components();
    draft.record_ids = vec![solution_id];
    draft.details = json!({
        "UniqueName": solution.unique_name,
        "Version": solution.version,
        "PublisherPrefix": solution.prefix,
        "Components": components,
    })
    .to_string();
    draft.result_count = 1;
    // Recorded before anything changes; every part then has its own events.
    request.state.record(draft.clone()).await?;
    let state = request.state.clone();
    let template = draft.clone();
    let answer = json!({
        "SolutionId": solution_id,
        "UniqueName": solution.unique_name,
        "Version": solution.version,
        "Components": components,
    });
    blocking(move || -> Result<(), AppError> {
        let store = &request.instance.store;
        for entity in &solution.entities {
            store.create_draft(entity)?;
        }
        for (entity, attribute) in &solution.attributes {
            let mut definition = store.draft(entity)?;
            definition.attributes.push(attribute.clone());
            store.save_draft(&definition)?;
        }
        if !solution.entities.is_empty() || !solution.attributes.is_empty() {
            store.publish_all(&mut |changed| {
                let mut event = template.clone();
                event.operation = Operation::PublishAllCustomizations;
                event.record_ids = Vec::new();
                event.details =
                    json!({"PublishedEntities": changed, "Solution": solution.unique_name})
                        .to_string();
                event.result_count = changed.len() as u64;
                state.append_blocking(event).map_err(|e| e.message)
            })?;
        }
        for row in solution.rows {
            create_row(&state, &request, &template, row)?;
        }
        let mut record = context(&request);
        record.platform = true;
        store.create(
            "solution",
            Some(solution_id),
            vec![
                (
                    "uniquename".into(),
                    Value::String(solution.unique_name.clone()),
                ),
                ("friendlyname".into(), Value::String(solution.friendly_name)),
                ("version".into(), Value::String(solution.version)),
                ("publisherprefix".into(), Value::String(solution.prefix)),
                ("components".into(), Value::String(components.to_string())),
            ],
            record,
            // The ImportSolution event, durable already, records this.
            &mut |_| Ok(()),
        )?;
        request.instance.refresh_policy()?;
        request.state.own.automations.refresh(&request.instance)?;
        Ok(())
    })
    .await?;
    Ok(axum::Json(answer).into_response())
}

/// Refuses, before anything is removed, a solution one of whose entities a lookup outside it
/// names (published or in a draft): the store refuses to delete such an entity, and would only
/// do so after the solution's other parts were gone.
fn check_removable(store: &dyn RecordStore, components: &Json) -> Result<(), AppError> {
    let entities: Vec<&str> = components["Entities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    let attributes: Vec<(&str, &str)> = components["Attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair[0].as_str()?, pair[1].as_str()?)))
        .collect();
    let outside = store.lookups_naming(&entities)?.into_iter().find(|lookup| {
        !entities.contains(&lookup.entity.as_str())
            && !attributes.contains(&(lookup.entity.as_str(), lookup.attribute.as_str()))
    });
    match outside {
        Some(lookup) => Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "the solution's entity '{}' is named by lookup {}.{}, which is not part of it: delete that lookup first",
                lookup.target, lookup.entity, lookup.attribute
            ),
        )),
        None => Ok(()),
    }
}

/// `DELETE solutions(<id>)`: removes the solution and everything it brought.
pub(super) async fn remove(
    request: WebRequest,
    draft: &mut EventDraft,
    id: Uuid,
) -> Result<Response, AppError> {
    draft.operation = Operation::RemoveSolution;
    require_customizer(&request)?;
    let record = request.instance.store.retrieve("solution", id)?;
    let text = |name: &str| match record.values.get(name) {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    };
    let components: Json = serde_json::from_str(&text("components")).unwrap_or(Json::Null);
    draft.details = json!({
        "UniqueName": text("uniquename"),
        "Version": text("version"),
        "Components": components,
    })
    .to_string();
    draft.result_count = 1;
    check_removable(&*request.instance.store, &components)?;
    request.state.record(draft.clone()).await?;
    let state = request.state.clone();
    let template = draft.clone();
    let mut cascade = Cascade::new(&request);
    let context = context(&request);
    blocking(move || -> Result<(), AppError> {
        let store = &*request.instance.store;
        let policy = request.policy();
        for (key, entity) in [
            ("PluginSteps", "sdkmessageprocessingstep"),
            ("Processes", "workflow"),
            ("Views", "savedquery"),
        ] {
            let Some(definition) = store.catalog().entity(entity).cloned() else {
                continue;
            };
            for row in components[key].as_array().into_iter().flatten() {
                let Some(row) = row.as_str().and_then(|r| Uuid::parse_str(r).ok()) else {
                    continue;
                };
                let deleted = store.delete(entity, row, None, context, &mut |outcome| {
                    let mut event = template.clone();
                    event.operation = Operation::Delete;
                    event.set_entity(&definition);
                    describe_write(&mut event, &definition, &policy, outcome);
                    let mut events = cascade.events(store, &event, outcome)?;
                    events.insert(0, event);
                    state.append_all_blocking(events).map_err(|e| e.message)
                });
                match deleted {
                    Ok(_) | Err(custos_records::Error::NotFound(_)) => {}
                    Err(e) => return Err(cascade.answer(e.into())),
                }
            }
        }
        for pair in components["Attributes"].as_array().into_iter().flatten() {
            let (Some(entity), Some(attribute)) = (pair[0].as_str(), pair[1].as_str()) else {
                continue;
            };
            match remove_attribute(&state, store, &template, entity, attribute) {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for entity in components["Entities"].as_array().into_iter().flatten() {
            let Some(entity) = entity.as_str() else {
                continue;
            };
            match remove_entity(&state, store, &template, entity) {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // The RemoveSolution event, durable already, records this.
        store
            .delete("solution", id, None, context, &mut |outcome| {
                let events = cascade.events(store, &template, outcome)?;
                if events.is_empty() {
                    return Ok(());
                }
                state.append_all_blocking(events).map_err(|e| e.message)
            })
            .map_err(|e| cascade.answer(e.into()))?;
        request.instance.refresh_policy()?;
        request.state.own.automations.refresh(&request.instance)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
