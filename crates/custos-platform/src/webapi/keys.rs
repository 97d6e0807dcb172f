//! Alternate keys of the Web API: `EntityDefinitions(LogicalName='x')/Keys` (Dataverse's
//! `EntityKeyMetadata`). A key is a customization like an attribute: added to or taken from the
//! entity's draft (an admin event, always recorded) and put into force by `PublishAllXml`,
//! which builds its unique index — or refuses, naming the key, when records already share its
//! values. Its `EntityKeyIndexStatus` is `Pending` until then and `Active` after, Dataverse's
//! words for an index not yet built and one in force.

use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use custos_records::{EntityDef, EntityKey, KEY_ATTRIBUTES_MAX, KEYS_MAX};
use serde_json::{Map, Value as Json, json};

use super::WebRequest;
use super::metadata::{
    check_properties, custom_name, customizable, key_metadata_id, label, label_text,
    record_and_save_draft, shown_definition,
};
use super::metaquery::{Kind, MetaQuery};
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

pub(super) fn key_json(
    request: &WebRequest,
    entity: &EntityDef,
    key: &EntityKey,
) -> Map<String, Json> {
    let active = request
        .instance
        .store
        .catalog()
        .entity(&entity.logical_name)
        .is_some_and(|published| published.keys.contains(key));
    let mut out = Map::new();
    out.insert(
        "MetadataId".into(),
        json!(key_metadata_id(&entity.logical_name, &key.logical_name)),
    );
    out.insert("LogicalName".into(), json!(key.logical_name));
    out.insert("SchemaName".into(), json!(key.schema_name));
    out.insert("EntityLogicalName".into(), json!(entity.logical_name));
    out.insert("KeyAttributes".into(), json!(key.attributes));
    out.insert("DisplayName".into(), label(Some(&key.display_name)));
    out.insert(
        "EntityKeyIndexStatus".into(),
        json!(if active { "Active" } else { "Pending" }),
    );
    out.insert("IsManaged".into(), json!(false));
    out
}

/// `GET EntityDefinitions(LogicalName='x')/Keys`: the published keys, or the draft's with
/// `?RetrieveAsIfPublished=true` (those not yet published `Pending`).
pub(crate) fn list_keys(request: &WebRequest, entity: &str) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Key, false)?;
    let definition = shown_definition(request, entity)?;
    let value = query.apply(
        definition
            .keys
            .iter()
            .map(|k| key_json(request, &definition, k)),
    )?;
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#EntityDefinitions('{entity}')/Keys{}", request.service_root, query.context_selection()),
        "value": value,
    }))
    .into_response())
}

/// `GET EntityDefinitions(LogicalName='x')/Keys(LogicalName='y')`.
pub(crate) fn get_key(request: &WebRequest, entity: &str, key: &str) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Key, true)?;
    let definition = shown_definition(request, entity)?;
    let found = find(&definition, key)?;
    let mut body = query.shape(key_json(request, &definition, found));
    body.shift_insert(
        0,
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#EntityDefinitions('{entity}')/Keys{}/$entity",
            request.service_root,
            query.context_selection()
        )),
    );
    Ok(axum::Json(Json::Object(body)).into_response())
}

fn find<'d>(definition: &'d EntityDef, key: &str) -> Result<&'d EntityKey, AppError> {
    definition
        .keys
        .iter()
        .find(|k| k.logical_name == key)
        .ok_or_else(|| {
            AppError::not_found(format!(
                "alternate key '{key}' does not exist on entity '{}'{}",
                definition.logical_name,
                if definition.keys.is_empty() {
                    ""
                } else {
                    " (a key not yet published is listed with ?RetrieveAsIfPublished=true)"
                }
            ))
        })
}

/// The attributes of a new key from `KeyAttributes`: each an attribute of the entity (its
/// draft) that a client writes, of a type a key takes, named once.
fn key_attributes(
    definition: &EntityDef,
    body: &Map<String, Json>,
) -> Result<Vec<String>, AppError> {
    let listed = body
        .get("KeyAttributes")
        .and_then(Json::as_array)
        .filter(|names| (1..=KEY_ATTRIBUTES_MAX).contains(&names.len()))
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "a new key needs 'KeyAttributes': the logical names of 1 to {KEY_ATTRIBUTES_MAX} attributes"
            ))
        })?;
    let mut attributes: Vec<String> = Vec::with_capacity(listed.len());
    for name in listed {
        let name = name.as_str().ok_or_else(|| {
            AppError::bad_request("each of 'KeyAttributes' is an attribute's logical name")
        })?;
        let attribute = definition.attribute(name).ok_or_else(|| {
            AppError::bad_request(format!(
                "attribute '{name}' does not exist on entity '{}'",
                definition.logical_name
            ))
        })?;
        if attribute.read_only
            || attribute.logical_name == "ownerid"
            || !EntityKey::takes(&attribute.attribute_type)
        {
            return Err(AppError::bad_request(format!(
                "'{name}' ({}) cannot be part of a key: a key takes attributes a client writes, of type String, Integer, Decimal, DateTime, Picklist or Lookup, other than the owner",
                attribute.attribute_type.name()
            )));
        }
        if attributes.iter().any(|a| a == name) {
            return Err(AppError::bad_request(format!(
                "'{name}' is named twice in 'KeyAttributes'"
            )));
        }
        attributes.push(name.to_string());
    }
    Ok(attributes)
}

/// `POST EntityDefinitions(LogicalName='x')/Keys`: a new alternate key, a draft until
/// published. Its `CreateEntityKey` event is durable before the draft is saved.
pub(crate) async fn create_key(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::CreateEntityKey;
    let mut definition = customizable(request, draft, entity)?;
    let body = request.json_object()?;
    check_properties(
        &body,
        &[
            "SchemaName",
            "LogicalName",
            "KeyAttributes",
            "EntityLogicalName",
        ],
    )?;
    if let Some(other) = body
        .get("EntityLogicalName")
        .and_then(Json::as_str)
        .filter(|e| *e != entity)
    {
        return Err(AppError::bad_request(format!(
            "'EntityLogicalName' is '{other}', but the key is posted to '{entity}'"
        )));
    }
    let name = custom_name(&body, "key")?;
    let attributes = key_attributes(&definition, &body)?;
    let conflict = |message: String| AppError::new(ErrorCode::Conflict, message);
    if let Some(taken) = definition.keys.iter().find(|k| {
        k.logical_name == name
            || (k.attributes.len() == attributes.len()
                && k.attributes.iter().all(|a| attributes.contains(a)))
    }) {
        return Err(conflict(if taken.logical_name == name {
            format!("alternate key '{name}' already exists on entity '{entity}'")
        } else {
            format!(
                "the alternate key '{}' of '{entity}' already holds {}",
                taken.logical_name,
                attributes.join(", ")
            )
        }));
    }
    if definition.keys.len() >= KEYS_MAX {
        return Err(AppError::bad_request(format!(
            "entity '{entity}' has {KEYS_MAX} alternate keys, as many as an entity may have"
        )));
    }
    let key = EntityKey {
        schema_name: body
            .get("SchemaName")
            .and_then(Json::as_str)
            .unwrap_or(&name)
            .to_string(),
        display_name: body
            .get("DisplayName")
            .and_then(label_text)
            .unwrap_or_default()
            .chars()
            .take(250)
            .collect(),
        logical_name: name.clone(),
        attributes,
    };
    draft.details = json!({
        "Entity": entity,
        "Key": name,
        "KeyAttributes": key.attributes,
        "Draft": true,
    })
    .to_string();
    definition.keys.push(key);
    let made = format!("EntityDefinitions(LogicalName='{entity}')/Keys(LogicalName='{name}')");
    record_and_save_draft(request, draft, definition, Some(made)).await
}

/// `DELETE EntityDefinitions(LogicalName='x')/Keys(LogicalName='y')`: the key leaves the
/// draft; publishing drops its index. Its `DeleteEntityKey` event is durable first.
pub(crate) async fn delete_key(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
    key: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::DeleteEntityKey;
    let mut definition = customizable(request, draft, entity)?;
    let attributes = find(&definition, key)?.attributes.clone();
    draft.details = json!({
        "Entity": entity,
        "Key": key,
        "KeyAttributes": attributes,
        "Draft": true,
    })
    .to_string();
    definition.keys.retain(|k| k.logical_name != key);
    record_and_save_draft(request, draft, definition, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_attributes_are_written_ones_of_the_types_a_key_takes() {
        let account = custos_records::seed_entities()
            .into_iter()
            .find(|e| e.logical_name == "account")
            .unwrap();
        let body = |names: Json| {
            let Json::Object(body) = json!({"KeyAttributes": names}) else {
                unreachable!()
            };
            body
        };
        assert_eq!(
            key_attributes(&account, &body(json!(["accountnumber", "name"]))).unwrap(),
            ["accountnumber", "name"]
        );
        for refused in [
            json!([]),
            json!("accountnumber"),
            json!(["accountnumber", "accountnumber"]),
            json!(["nosuch"]),
            json!(["createdon"]),
            json!(["ownerid"]),
            json!(["accountid"]),
            json!(["description"]),
            json!([5]),
            json!(vec!["accountnumber"; KEY_ATTRIBUTES_MAX + 1]),
        ] {
            assert!(
                key_attributes(&account, &body(refused.clone())).is_err(),
                "{refused}"
            );
        }
    }
}
