//! Sharing a record with a user (SPEC §4 "share"), as Dataverse's `GrantAccess`,
//! `ModifyAccess` and `RevokeAccess` actions:
//!
//! - `POST GrantAccess` `{"Target": {"@odata.id": "accounts(<id>)"}, "PrincipalAccess":
//!   {"Principal": {"@odata.id": "systemusers(<id>)"}, "AccessMask": "ReadAccess, WriteAccess"}}`
//!   adds those rights to what the user already holds of the record;
//! - `POST ModifyAccess`, the same body, replaces what the user holds of a shared record with
//!   exactly those rights (so it can narrow a share);
//! - `POST RevokeAccess` `{"Target": {…}, "Revokee": {"@odata.id": "systemusers(<id>)"}}`
//!   ends the share.
//!
//! A share lets its user read (and with `WriteAccess` change) that one record although their
//! roles do not grant it on the entity. Shares are `principalobjectaccess` records; sharing is
//! recorded as `Share` / `ModifyShare` / `Unshare` (Dataverse's audit actions 14, 48 and 49)
//! when the entity's changes are audited, with the rights before and after, durable before the
//! share commits.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custos_audit::Operation;
use custos_records::{
    EntityDef, Privilege, RecordQuery, Value, WriteMode, WriteOutcome, parse_query_options,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::cascade::Cascade;
use super::records::{context, entity_by_set};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::state::Instance;

const READ: i64 = 1;
const WRITE: i64 = 2;

/// The rights of a share's access mask as `GrantAccess` names them (`ReadAccess, WriteAccess`).
pub(super) fn access_names(mask: i64) -> String {
    let rights: Vec<&str> = [(READ, "ReadAccess"), (WRITE, "WriteAccess")]
        .into_iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| name)
        .collect();
    rights.join(", ")
}

/// The entity and id an `{"@odata.id": ".../set(<id>)"}` reference names.
fn reference(
    request: &WebRequest,
    body: &Map<String, Json>,
    key: &str,
) -> Result<(EntityDef, Uuid), AppError> {
    let text = body
        .get(key)
        .and_then(|r| r["@odata.id"].as_str())
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "'{key}' needs '@odata.id', e.g. {{\"@odata.id\": \"accounts(<id>)\"}}"
            ))
        })?;
    named_record(request, text)
}

/// The entity and id a record's `@odata.id` names: `set(<id>)`, relative or absolute.
pub(super) fn named_record(
    request: &WebRequest,
    text: &str,
) -> Result<(EntityDef, Uuid), AppError> {
    let tail = text.rsplit('/').next().unwrap_or(text);
    let (set, id) = tail
        .split_once('(')
        .and_then(|(set, rest)| Some((set, Uuid::parse_str(rest.strip_suffix(')')?).ok()?)))
        .ok_or_else(|| {
            AppError::bad_request(format!("'{text}' does not name a record as set(<id>)"))
        })?;
    Ok((entity_by_set(request, set)?, id))
}

/// The share of record `id` of `entity` with `principal`: its row id and access mask, when
/// there is one. A share names its record's entity too: ids are unique within an entity only.
fn share_of(
    instance: &Instance,
    entity: &EntityDef,
    id: Uuid,
    principal: Uuid,
) -> Result<Option<(Uuid, i64)>, AppError> {
    let filter = format!(
        "objectid eq {id} and principalid eq {principal} and objecttypecode eq '{}'",
        entity.logical_name
    );
    let options = parse_query_options([("$filter", filter.as_str())])?;
    let page = instance.store.retrieve_multiple(&RecordQuery {
        entity: "principalobjectaccess",
        options: &options,
        page_size: 1,
    })?;
    Ok(page.records.first().map(|r| {
        let mask = match r.values.get("accessrightsmask") {
            Some(Value::Integer(mask)) => *mask,
            _ => 0,
        };
        (r.id, mask)
    }))
}

/// Refuses unless the caller's roles grant `privilege` on `entity`, or record `id` is shared
/// with them for it (read or write).
pub(super) fn require_on_record(
    request: &WebRequest,
    privilege: Privilege,
    entity: &EntityDef,
    id: Uuid,
) -> Result<(), AppError> {
    // A share opens a record to the user it names, never to whoever acts on their behalf.
    request.require_delegate(privilege, entity)?;
    let refused = match request.require(privilege, entity) {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    let needed = match privilege {
        Privilege::Read => READ,
        Privilege::Write => WRITE,
        _ => return Err(refused),
    };
    match share_of(&request.instance, entity, id, request.caller.principal.id)? {
        Some((_, mask)) if mask & needed != 0 => Ok(()),
        _ => Err(refused),
    }
}

/// Which of the sharing actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// `GrantAccess`: the rights asked for are added to those held.
    Grant,
    /// `ModifyAccess`: the rights asked for replace those held.
    Modify,
    /// `RevokeAccess`: the share ends.
    Revoke,
}

/// `POST GrantAccess`, `POST ModifyAccess` and `POST RevokeAccess`.
pub(super) async fn share(
    request: WebRequest,
    draft: &mut EventDraft,
    access: Access,
) -> Result<Response, AppError> {
    draft.operation = match access {
        Access::Grant => Operation::Share,
        Access::Modify => Operation::ModifyShare,
        Access::Revoke => Operation::Unshare,
    };
    let grant = access != Access::Revoke;
    let body = request.json_object()?;
    let (entity, id) = reference(&request, &body, "Target")?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    request.require(Privilege::Write, &entity)?;
    let (principal_entity, principal) = if grant {
        let access = body
            .get("PrincipalAccess")
            .and_then(Json::as_object)
            .ok_or_else(|| AppError::bad_request("'PrincipalAccess' is required"))?;
        reference(&request, access, "Principal")?
    } else {
        reference(&request, &body, "Revokee")?
    };
    if principal_entity.logical_name != "systemuser" {
        return Err(AppError::bad_request(
            "records are shared with users (systemusers(<id>))",
        ));
    }
    let user = request
        .state
        .directory
        .principal(principal)
        .ok_or_else(|| {
            AppError::not_found(format!("systemuser with id {principal} does not exist"))
        })?;
    request.instance.store.retrieve(&entity.logical_name, id)?;
    let mask = if grant {
        let text = body["PrincipalAccess"]["AccessMask"]
            .as_str()
            .unwrap_or("ReadAccess");
        let mut mask = 0;
        for right in text.split(',').map(str::trim) {
            mask |= match right {
                "ReadAccess" => READ,
                "WriteAccess" => WRITE,
                other => {
                    return Err(AppError::bad_request(format!(
                        "AccessMask '{other}' is not ReadAccess or WriteAccess"
                    )));
                }
            };
        }
        mask
    } else {
        0
    };
    let existing = share_of(&request.instance, &entity, id, principal)?;
    if access != Access::Grant && existing.is_none() {
        return Err(AppError::not_found(format!(
            "{}({id}) is not shared with {}; GrantAccess shares it",
            entity.set_name, user.upn
        )));
    }
    // What the user held before, so a record's history shows the rights before and after.
    let before = existing.map_or(0, |(_, held)| held);
    let mask = if access == Access::Grant {
        mask | before
    } else {
        mask
    };
    draft.details = json!({
        "PrincipalId": principal,
        "PrincipalUpn": user.upn,
        "AccessMask": access_names(mask),
        "PreviousAccessMask": access_names(before),
    })
    .to_string();
    draft.result_count = 1;
    let audited = request.policy().audits_change(&entity.logical_name);
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let mut write_context = context(&request);
    write_context.platform = true;
    let object_type = entity.logical_name.clone();
    let mut cascade = Cascade::new(&request);
    blocking(move || -> Result<WriteOutcome, AppError> {
        let mut before_commit = |outcome: &WriteOutcome| -> Result<(), String> {
            let mut events = Vec::new();
            if audited {
                events.push(event.clone());
            }
            events.extend(cascade.events(&*store, &event, outcome)?);
            if !events.is_empty() {
                state.append_all_blocking(events).map_err(|e| e.message)?;
            }
            Ok(())
        };
        Ok(match (grant, existing) {
            (true, Some((row, _))) => store.update(
                "principalobjectaccess",
                row,
                vec![("accessrightsmask".into(), Value::Integer(mask))],
                WriteMode::UpdateOnly,
                write_context,
                &mut before_commit,
            )?,
            (true, None) => store.create(
                "principalobjectaccess",
                None,
                vec![
                    ("objectid".into(), Value::Guid(id)),
                    ("objecttypecode".into(), Value::String(object_type)),
                    ("principalid".into(), Value::Guid(principal)),
                    ("accessrightsmask".into(), Value::Integer(mask)),
                ],
                write_context,
                &mut before_commit,
            )?,
            (false, Some((row, _))) => store
                .delete(
                    "principalobjectaccess",
                    row,
                    None,
                    write_context,
                    &mut before_commit,
                )
                .map_err(|e| cascade.answer(e.into()))?,
            (false, None) => unreachable!("refused above"),
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
