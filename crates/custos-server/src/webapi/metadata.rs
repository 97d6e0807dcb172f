//! Metadata of the Web API: the service document, `$metadata` (CSDL XML), `WhoAmI`,
//! `EntityDefinitions` with their audit flags (saved as drafts, always audited), and
//! `PublishAllXml`, which makes drafts current and swaps the audit policy.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use custos_audit::{Change, Operation};
use custos_records::{AttributeDef, EntityDef, Privilege};
use serde_json::{Map, Value as Json, json};

use super::WebRequest;
use crate::audit::EventDraft;
use crate::error::AppError;
use crate::state::blocking;

pub(crate) fn service_document(request: &WebRequest) -> Response {
    let sets: Vec<Json> = request
        .instance
        .store
        .catalog()
        .entities()
        .map(|e| json!({"name": e.set_name, "kind": "EntitySet", "url": e.set_name}))
        .collect();
    axum::Json(
        json!({"@odata.context": format!("{}/$metadata", request.service_root), "value": sets}),
    )
    .into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn csdl(request: &WebRequest) -> Response {
    let catalog = request.instance.store.catalog();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\n<edmx:DataServices>\n<Schema Namespace=\"Microsoft.Dynamics.CRM\" Alias=\"mscrm\" xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">\n",
    );
    for entity in catalog.entities() {
        xml.push_str(&format!(
            "<EntityType Name=\"{}\"><Key><PropertyRef Name=\"{}\"/></Key>",
            xml_escape(&entity.logical_name),
            xml_escape(&entity.primary_id())
        ));
        for attribute in &entity.attributes {
            xml.push_str(&format!(
                "<Property Name=\"{}\" Type=\"{}\"/>",
                xml_escape(&attribute.web_name()),
                attribute.attribute_type.edm_type()
            ));
        }
        xml.push_str("</EntityType>\n");
    }
    xml.push_str("<EntityContainer Name=\"System\">\n");
    for entity in catalog.entities() {
        xml.push_str(&format!(
            "<EntitySet Name=\"{}\" EntityType=\"Microsoft.Dynamics.CRM.{}\"/>\n",
            xml_escape(&entity.set_name),
            xml_escape(&entity.logical_name)
        ));
    }
    xml.push_str("<FunctionImport Name=\"WhoAmI\" Function=\"Microsoft.Dynamics.CRM.WhoAmI\"/>\n<ActionImport Name=\"PublishAllXml\" Action=\"Microsoft.Dynamics.CRM.PublishAllXml\"/>\n");
    xml.push_str("</EntityContainer>\n</Schema>\n</edmx:DataServices>\n</edmx:Edmx>\n");
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

pub(crate) fn who_am_i(request: &WebRequest) -> Response {
    axum::Json(json!({
        "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", request.service_root),
        "UserId": request.caller.principal.id,
        "BusinessUnitId": request.instance.organization_id,
        "OrganizationId": request.instance.organization_id,
        "UserPrincipalName": request.caller.principal.upn,
        "UserType": request.caller.principal.user_type,
    }))
    .into_response()
}

fn managed(value: bool) -> Json {
    json!({"Value": value, "CanBeChanged": true, "ManagedPropertyLogicalName": "canmodifyauditsettings"})
}

fn entity_json(entity: &EntityDef) -> Map<String, Json> {
    let mut out = Map::new();
    out.insert("LogicalName".into(), json!(entity.logical_name));
    out.insert("EntitySetName".into(), json!(entity.set_name));
    out.insert("PrimaryIdAttribute".into(), json!(entity.primary_id()));
    out.insert("PrimaryNameAttribute".into(), json!(entity.primary_name));
    out.insert(
        "IsCustomEntity".into(),
        json!(entity.category == custos_records::EntityCategory::Custom),
    );
    out.insert("EntityCategory".into(), json!(entity.category.as_str()));
    out.insert("IsAuditEnabled".into(), managed(entity.audit));
    out.insert(
        "IsRetrieveAuditEnabled".into(),
        json!({"Value": entity.retrieve_audit}),
    );
    out.insert(
        "IsRetrieveMultipleAuditEnabled".into(),
        json!({"Value": entity.retrieve_multiple_audit}),
    );
    out
}

fn attribute_json(entity: &EntityDef, attribute: &AttributeDef) -> Map<String, Json> {
    let mut out = Map::new();
    out.insert("LogicalName".into(), json!(attribute.logical_name));
    out.insert("EntityLogicalName".into(), json!(entity.logical_name));
    out.insert(
        "AttributeType".into(),
        json!(attribute.attribute_type.name()),
    );
    out.insert("IsValidForCreate".into(), json!(!attribute.read_only));
    out.insert(
        "IsValidForUpdate".into(),
        json!(!attribute.read_only && attribute.logical_name != entity.primary_id()),
    );
    out.insert("IsAuditEnabled".into(), managed(attribute.audit));
    out
}

/// The definition to show: published, or the draft with `?RetrieveAsIfPublished=true`.
fn shown_definition(request: &WebRequest, entity: &str) -> Result<EntityDef, AppError> {
    let as_if_published = request
        .query
        .iter()
        .any(|(k, v)| k == "RetrieveAsIfPublished" && v == "true");
    if as_if_published {
        return Ok(request.instance.store.draft(entity)?);
    }
    request
        .instance
        .store
        .catalog()
        .entity(entity)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity '{entity}' does not exist")))
}

pub(crate) fn list_entities(request: &WebRequest) -> Result<Response, AppError> {
    let value: Vec<Json> = request
        .instance
        .store
        .catalog()
        .entities()
        .map(|e| Json::Object(entity_json(e)))
        .collect();
    Ok(axum::Json(json!({"@odata.context": format!("{}/$metadata#EntityDefinitions", request.service_root), "value": value})).into_response())
}

pub(crate) fn get_entity(request: &WebRequest, entity: &str) -> Result<Response, AppError> {
    let definition = shown_definition(request, entity)?;
    let mut body = entity_json(&definition);
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#EntityDefinitions/$entity",
            request.service_root
        )),
    );
    Ok(axum::Json(Json::Object(body)).into_response())
}

pub(crate) fn list_attributes(request: &WebRequest, entity: &str) -> Result<Response, AppError> {
    let definition = shown_definition(request, entity)?;
    let value: Vec<Json> = definition
        .attributes
        .iter()
        .map(|a| Json::Object(attribute_json(&definition, a)))
        .collect();
    Ok(axum::Json(json!({"@odata.context": format!("{}/$metadata#EntityDefinitions('{entity}')/Attributes", request.service_root), "value": value})).into_response())
}

pub(crate) fn get_attribute(
    request: &WebRequest,
    entity: &str,
    attribute: &str,
) -> Result<Response, AppError> {
    let definition = shown_definition(request, entity)?;
    let found = definition.attribute(attribute).ok_or_else(|| {
        AppError::not_found(format!(
            "attribute '{attribute}' does not exist on entity '{entity}'"
        ))
    })?;
    let mut body = attribute_json(&definition, found);
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#EntityDefinitions('{entity}')/Attributes/$entity",
            request.service_root
        )),
    );
    Ok(axum::Json(Json::Object(body)).into_response())
}

/// Reads a flag given as `true` or as `{"Value": true, …}`.
fn flag(key: &str, value: &Json) -> Result<bool, AppError> {
    match value {
        Json::Bool(b) => Ok(*b),
        Json::Object(object) => object
            .get("Value")
            .and_then(Json::as_bool)
            .ok_or_else(|| AppError::bad_request(format!("{key} needs a boolean 'Value'"))),
        _ => Err(AppError::bad_request(format!(
            "{key} must be a boolean or {{\"Value\": boolean}}"
        ))),
    }
}

/// Applies the settable flags of `body` to `flags` (name → slot); other keys of `shown` are
/// accepted unchanged (a PUT sends the whole definition back), anything else is refused.
fn apply_flags(
    body: &Map<String, Json>,
    shown: &Map<String, Json>,
    flags: &mut [(&str, &mut bool)],
    changes: &mut Vec<Change>,
) -> Result<(), AppError> {
    for (key, value) in body {
        if key.starts_with('@') {
            continue;
        }
        if let Some((name, slot)) = flags.iter_mut().find(|(name, _)| name == key) {
            let new = flag(key, value)?;
            if **slot != new {
                changes.push(Change {
                    attribute: name.to_string(),
                    old: Some(slot.to_string()),
                    new: Some(new.to_string()),
                });
                **slot = new;
            }
            continue;
        }
        match shown.get(key) {
            Some(current) if current == value => {}
            Some(_) => {
                return Err(AppError::bad_request(format!(
                    "'{key}' cannot be changed here"
                )));
            }
            None => return Err(AppError::bad_request(format!("unknown property '{key}'"))),
        }
    }
    Ok(())
}

fn require_customizer(request: &WebRequest, entity: &EntityDef) -> Result<(), AppError> {
    request.require(Privilege::Customize, entity).map_err(|_| {
        AppError::forbidden(format!(
            "user '{}' may not change customizations",
            request.caller.principal.upn
        ))
    })
}

/// Saves a changed draft after its `UpdateAuditSettings` event is durable (always recorded).
async fn save_draft(
    request: &WebRequest,
    draft: &mut EventDraft,
    definition: EntityDef,
    changes: Vec<Change>,
    details: Json,
) -> Result<Response, AppError> {
    draft.changes = changes;
    draft.details = details.to_string();
    request.state.record(draft.clone()).await?;
    let store = request.instance.store.clone();
    blocking(move || store.save_draft(&definition)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn update_entity(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::UpdateAuditSettings;
    let published = request
        .instance
        .store
        .catalog()
        .entity(entity)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity '{entity}' does not exist")))?;
    draft.set_entity(&published);
    require_customizer(request, &published)?;
    let body = request.json_object()?;
    let mut definition = request.instance.store.draft(entity)?;
    let shown = entity_json(&definition);
    let mut changes = Vec::new();
    let (mut audit, mut retrieve, mut multiple) = (
        definition.audit,
        definition.retrieve_audit,
        definition.retrieve_multiple_audit,
    );
    apply_flags(
        &body,
        &shown,
        &mut [
            ("IsAuditEnabled", &mut audit),
            ("IsRetrieveAuditEnabled", &mut retrieve),
            ("IsRetrieveMultipleAuditEnabled", &mut multiple),
        ],
        &mut changes,
    )?;
    (
        definition.audit,
        definition.retrieve_audit,
        definition.retrieve_multiple_audit,
    ) = (audit, retrieve, multiple);
    let details = json!({"Level": "Entity", "Entity": entity, "Draft": true});
    save_draft(request, draft, definition, changes, details).await
}

pub(crate) async fn update_attribute(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
    attribute: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::UpdateAuditSettings;
    let published = request
        .instance
        .store
        .catalog()
        .entity(entity)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity '{entity}' does not exist")))?;
    draft.set_entity(&published);
    require_customizer(request, &published)?;
    let body = request.json_object()?;
    let mut definition = request.instance.store.draft(entity)?;
    let index = definition
        .attributes
        .iter()
        .position(|a| a.logical_name == attribute)
        .ok_or_else(|| {
            AppError::not_found(format!(
                "attribute '{attribute}' does not exist on entity '{entity}'"
            ))
        })?;
    let shown = attribute_json(&definition, &definition.attributes[index]);
    let mut changes = Vec::new();
    let mut audit = definition.attributes[index].audit;
    apply_flags(
        &body,
        &shown,
        &mut [("IsAuditEnabled", &mut audit)],
        &mut changes,
    )?;
    definition.attributes[index].audit = audit;
    let details =
        json!({"Level": "Attribute", "Entity": entity, "Attribute": attribute, "Draft": true});
    save_draft(request, draft, definition, changes, details).await
}

pub(crate) async fn publish_all(
    request: &WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::PublishAllCustomizations;
    let organization = request
        .instance
        .store
        .catalog()
        .entity(custos_records::ORGANIZATION_ENTITY)
        .cloned();
    if let Some(organization) = &organization {
        require_customizer(request, organization)?;
    }
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    blocking(move || {
        store.publish_all(&mut |changed| {
            let mut event = event.clone();
            event.details = json!({"PublishedEntities": changed}).to_string();
            event.result_count = changed.len() as u64;
            state.append_blocking(event).map_err(|e| e.message)
        })
    })
    .await?;
    request.instance.refresh_policy()?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
