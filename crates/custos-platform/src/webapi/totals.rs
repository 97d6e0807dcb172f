//! `RetrieveTotalRecordCount(EntityNames=[…])`: how many records each named entity holds,
//! Dataverse's function (its counts come from a daily snapshot; these are read at once).
//!
//! Each count is read and recorded exactly as `set/$count` is: the caller needs Read on every
//! entity named (checked for all before any is counted, so a refusal counts nothing), and each
//! entity whose lists are audited gets a `RetrieveMultiple` with the count and no record ids.

use axum::response::{IntoResponse, Response};
use custos_records::{EntityDef, Privilege, QueryOptions};
use serde_json::{Value as Json, json};

use super::records::total_of;
use super::{WebRequest, parameter_json};
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

/// The most entities one call counts.
const ENTITY_NAMES_MAX: usize = 100;

/// The entity logical names of `EntityNames`: the parameter's text in the path (or the
/// parameter alias it names, `EntityNames=@p1` with `@p1=[…]`), a collection written as JSON
/// (`["account","contact"]`) or with OData's single quotes (`['account','contact']`).
fn entity_names(request: &WebRequest, parameter: &str) -> Result<Vec<String>, AppError> {
    let text = request.parameter(parameter)?;
    let names: Vec<String> = parameter_json(text)
        .and_then(|json| serde_json::from_value(json).ok())
        .ok_or_else(|| {
        AppError::bad_request(format!(
            "EntityNames is a collection of entity logical names, [\"account\",\"contact\"]; got {text}"
        ))
    })?;
    if names.is_empty() || names.len() > ENTITY_NAMES_MAX {
        return Err(AppError::bad_request(format!(
            "EntityNames names 1 to {ENTITY_NAMES_MAX} entities"
        )));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(AppError::bad_request(format!(
                "EntityNames names '{name}' twice"
            )));
        }
    }
    Ok(names)
}

/// Answers `GET RetrieveTotalRecordCount(EntityNames=…)`; `draft` is its `RetrieveMultiple`.
pub(super) async fn total_record_count(
    request: WebRequest,
    draft: &mut EventDraft,
    parameter: &str,
) -> Result<Response, AppError> {
    let names = entity_names(&request, parameter)?;
    let catalog = request.instance.store.catalog();
    let mut entities: Vec<EntityDef> = Vec::with_capacity(names.len());
    for name in &names {
        let entity = catalog.entity(name).cloned().ok_or_else(|| {
            AppError::bad_request(format!(
                "EntityNames: entity '{name}' does not exist (name entities by their logical names)"
            ))
        })?;
        // A refusal names the entity it was refused on.
        draft.set_entity(&entity);
        request.require(Privilege::Read, &entity)?;
        entities.push(entity);
    }
    let mut values = Vec::with_capacity(entities.len());
    for entity in &entities {
        let options = QueryOptions {
            select: Some(vec![entity.primary_id()]),
            count: true,
            top: Some(1),
            ..QueryOptions::default()
        };
        let total = total_of(&request, entity, options).await?;
        if request
            .policy()
            .audits_retrieve_multiple(&entity.logical_name)
        {
            let mut event = draft.clone();
            event.set_entity(entity);
            event.result_count = total;
            request.state.record(event).await?;
        }
        values.push(request.wide(json!(total)));
    }
    Ok(axum::Json(json!({
        "@odata.context": format!(
            "{}/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse",
            request.service_root
        ),
        "EntityRecordCountCollection": {
            "Count": names.len(),
            "IsReadOnly": false,
            "Keys": names,
            "Values": Json::Array(values),
        },
    }))
    .into_response())
}
