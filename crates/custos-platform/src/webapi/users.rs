//! A user's lifecycle through the Web API (issue 10 §3): `PATCH systemusers(<id>)` with
//! `{"isdisabled": true}` disables the user (their sign-in and every session refused at once;
//! `DisableUser`), `false` enables them again (`EnableUser`); `DELETE systemusers(<id>)`
//! deletes the user with every role and team membership (`DeleteUser`, keeping the record's
//! values); `POST systemusers(<id>)/Microsoft.Dynamics.CRM.ResetPassword` with
//! `{"NewPassword"}` sets their password and ends every session (`ResetPassword`).
//!
//! Who may: someone with the ManageUsers privilege whose own roles in the instance give all
//! the target's roles give, when the target holds roles in no other instance and no tenant-wide
//! audit role; a tenant global admin for anyone but a global admin; a support engineer only for
//! the users they created. Nobody disables or deletes themselves here (a user changes their own
//! password with `POST /api/me/changePassword`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custos_audit::{Change, Operation, UserType};
use custos_records::{BuiltInRole, Principal, Privilege, ROLE_IDS, SecurityRole};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::records::entity_by_set;
use custos_http::blocking;
use custos_http::credentials::hash_secret;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::names;

/// The actions bound to a user.
pub(super) const USER_ACTIONS: [&str; 1] = ["ResetPassword"];

/// The principal behind `systemusers(<id>)`, if the caller may manage it (see the module).
pub(super) fn manageable(request: &WebRequest, target: Uuid) -> Result<Principal, AppError> {
    let caller = &request.caller;
    let principal = request.state.directory.principal(target).ok_or_else(|| {
        AppError::not_found(format!("systemuser with id {target} does not exist"))
    })?;
    let refuse = |why: &str| {
        Err(AppError::forbidden(format!(
            "user '{}' cannot manage user '{}': {why}",
            caller.principal.upn, principal.upn
        )))
    };
    if principal.id == caller.principal.id {
        return refuse("nobody disables, deletes or resets themselves here");
    }
    if principal.global_admin {
        return refuse("a tenant global admin is not managed through an instance");
    }
    if caller.user_type() == UserType::DcAdmin {
        if principal.created_by == Some(caller.principal.id) {
            return Ok(principal);
        }
        return refuse("a support engineer manages only the users they created");
    }
    if principal.user_type == UserType::DcAdmin.code() {
        return refuse("support engineers are let in and out in the admin center");
    }
    if caller.principal.global_admin {
        return Ok(principal);
    }
    let directory = &request.state.directory;
    let audit_role = ROLE_IDS.iter().any(|(role, id)| {
        matches!(role, BuiltInRole::AuditReader | BuiltInRole::AuditManager)
            && directory.has_role_anywhere(principal.id, *id)
    });
    if audit_role {
        return refuse("they hold a tenant-wide audit role, which only a global admin manages");
    }
    if directory
        .instances_with_roles(principal.id)
        .iter()
        .any(|i| *i != request.instance.name)
    {
        return refuse("they hold roles in another instance; a tenant global admin manages them");
    }
    let holder = caller.security_roles(&request.state, &request.instance);
    let custom = request.instance.custom_roles.load();
    let catalog = request.instance.store.catalog();
    for role in directory.effective_roles(principal.id, &request.instance.name) {
        let theirs = match ROLE_IDS.iter().find(|(_, id)| *id == role) {
            Some((built_in, _)) => SecurityRole::BuiltIn(*built_in),
            None => SecurityRole::Custom(custom.get(&role).cloned().unwrap_or_default()),
        };
        if let Some((privilege, entity)) =
            custos_records::uncovered(&holder, &theirs, catalog.entities())
        {
            return refuse(&format!(
                "they hold the {privilege:?} privilege on entity '{entity}', which you do not"
            ));
        }
    }
    Ok(principal)
}

/// The operation of a change to a user's `isdisabled`.
pub(super) fn disabling_operation(disabled: bool) -> Operation {
    if disabled {
        Operation::DisableUser
    } else {
        Operation::EnableUser
    }
}

/// `POST systemusers(<id>)/Microsoft.Dynamics.CRM.ResetPassword` with `{"NewPassword"}`.
pub(super) async fn bound_action(
    request: WebRequest,
    draft: &mut EventDraft,
    set: &str,
    id: Uuid,
) -> Result<Response, AppError> {
    draft.operation = Operation::ResetPassword;
    let entity = entity_by_set(&request, set)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    if entity.logical_name != "systemuser" {
        return Err(AppError::not_found(format!(
            "ResetPassword is bound to systemusers, not to {set}"
        )));
    }
    request.require(Privilege::ManageUsers, &entity)?;
    let principal = manageable(&request, id)?;
    if principal.client_id.is_some() {
        return Err(AppError::bad_request(
            "an application user has a client secret, not a password",
        ));
    }
    let body = request.json_object()?;
    let password = body
        .get("NewPassword")
        .and_then(Json::as_str)
        .ok_or_else(|| AppError::bad_request("'NewPassword' is required"))?;
    names::check_password(password, "NewPassword")?;
    draft.result_count = 1;
    draft.details =
        json!({"UserId": id, "UserUpn": principal.upn, "SessionsEnded": true}).to_string();
    draft.changes = vec![Change {
        attribute: "password".into(),
        old: None,
        new: Some("\"(set)\"".into()),
    }];
    // Recorded before the password changes.
    request.state.record(draft.clone()).await?;
    let password = password.to_string();
    let state = request.state.clone();
    blocking(move || state.directory.set_password(id, &hash_secret(&password))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
