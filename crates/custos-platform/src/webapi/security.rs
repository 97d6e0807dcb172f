//! Users, teams and security roles in the Web API (SPEC §3 "Security"), as Dataverse spells
//! them:
//!
//! - role assignment: `POST systemusers(<id>)/systemuserroles_association/$ref` and
//!   `POST teams(<id>)/teamroles_association/$ref` with `{"@odata.id": ".../roles(<id>)"}`;
//!   `DELETE …/systemuserroles_association(<role id>)/$ref` takes it back;
//! - team membership: `POST teams(<id>)/teammembership_association/$ref` with
//!   `{"@odata.id": ".../systemusers(<id>)"}`, `DELETE …/teammembership_association(<user
//!   id>)/$ref`; `GET` of an association lists it;
//! - a custom role's privileges: `POST roles(<id>)/Microsoft.Dynamics.CRM.AddPrivilegesRole`
//!   and `ReplacePrivilegesRole` with `{"Privileges": [{"PrivilegeName": "prvReadaccount"}]}`,
//!   `RemovePrivilegeRole` with `{"PrivilegeName"}`, and `RetrieveRolePrivilegesRole`.
//!
//! Every change is an admin event, always recorded, made durable before the change.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custos_audit::{Change, Operation, UserType};
use custos_records::{
    BuiltInRole, EntityDef, Grants, Privilege, ROLE_IDS, SecurityRole, Value, WriteMode,
    WriteOutcome,
};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use super::records::{context, entity_by_set as entity};
use super::{Target, WebRequest};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

/// The associations Custos knows: (entity set, relationship, entity set of the other side).
pub(super) const RELATIONS: [(&str, &str, &str); 3] = [
    ("systemusers", "systemuserroles_association", "roles"),
    ("teams", "teamroles_association", "roles"),
    ("teams", "teammembership_association", "systemusers"),
];

/// The actions bound to a role.
pub(super) const BOUND_ACTIONS: [&str; 4] = [
    "AddPrivilegesRole",
    "ReplacePrivilegesRole",
    "RemovePrivilegeRole",
    "RetrieveRolePrivilegesRole",
];

/// The operation of associating (or, with `add` false, disassociating) along `relation`.
pub(super) fn association_operation(relation: &str, add: bool) -> Operation {
    match (relation, add) {
        ("teammembership_association", true) => Operation::AddTeamMember,
        ("teammembership_association", false) => Operation::RemoveTeamMember,
        (_, true) => Operation::AssignRole,
        (_, false) => Operation::RemoveRole,
    }
}

/// The id a `{"@odata.id": ".../set(<id>)"}` body references in `set`.
fn referenced(request: &WebRequest, set: &str) -> Result<Uuid, AppError> {
    let body = request.json_object()?;
    let reference = body
        .get("@odata.id")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            AppError::bad_request(format!("the body needs '@odata.id' naming {set}(<id>)"))
        })?;
    reference
        .rsplit_once(&format!("{set}("))
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(|id| Uuid::parse_str(id.trim_matches('\'')).ok())
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "'@odata.id' must reference {set}(<id>), got '{reference}'"
            ))
        })
}

/// A role's name: built-in, or a custom role's record.
fn role_name(request: &WebRequest, role: Uuid) -> Result<String, AppError> {
    if let Some((built_in, _)) = ROLE_IDS.iter().find(|(_, id)| *id == role) {
        return Ok(built_in.name().to_string());
    }
    record_name(request, "role", role)
}

/// The `name` of a record that must exist.
fn record_name(request: &WebRequest, entity: &str, id: Uuid) -> Result<String, AppError> {
    match request.instance.store.retrieve(entity, id) {
        Ok(record) => Ok(match record.values.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => String::new(),
        }),
        Err(custos_records::Error::NotFound(_)) => Err(AppError::not_found(format!(
            "{entity} with id {id} does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A user's sign-in name (the user must exist in the tenant).
fn user_name(request: &WebRequest, user: Uuid) -> Result<String, AppError> {
    request
        .state
        .directory
        .principal(user)
        .map(|p| p.upn)
        .ok_or_else(|| AppError::not_found(format!("systemuser with id {user} does not exist")))
}

/// A team's name (the team record must exist in the instance).
fn team_name(request: &WebRequest, team: Uuid) -> Result<String, AppError> {
    match request.instance.store.retrieve("team", team) {
        Ok(record) => Ok(match record.values.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => String::new(),
        }),
        Err(custos_records::Error::NotFound(_)) => Err(AppError::not_found(format!(
            "team with id {team} does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `set(id)/relation[(other)][/$ref]`: list, associate or disassociate.
pub(super) async fn association(
    request: WebRequest,
    draft: &mut EventDraft,
    target: &Target,
) -> Result<Response, AppError> {
    let Target::Association {
        set,
        id,
        relation,
        other,
        reference,
    } = target
    else {
        unreachable!("dispatched on an association")
    };
    let (_, _, other_set) = RELATIONS
        .iter()
        .find(|(s, r, _)| s == set && r == relation)
        .expect("parse_target admits known relations only");
    let owner = entity(&request, set)?;
    draft.set_entity(&owner);
    draft.record_ids = vec![*id];
    if request.method == axum::http::Method::GET {
        return list(request, draft, &owner, *id, relation, other_set).await;
    }
    request.require(Privilege::ManageUsers, &owner)?;
    refuse_support_engineer(&request)?;
    if !reference {
        return Err(AppError::bad_request(format!(
            "associate and disassociate with '{set}({id})/{relation}/$ref'"
        )));
    }
    let add = request.method == axum::http::Method::POST;
    draft.operation = association_operation(relation, add);
    let other = match (add, other) {
        (true, None) => referenced(&request, other_set)?,
        (false, Some(other)) => *other,
        (true, Some(_)) => {
            return Err(AppError::bad_request(format!(
                "POST to '{set}({id})/{relation}/$ref' with the other record in '@odata.id'"
            )));
        }
        (false, None) => {
            return Err(AppError::bad_request(format!(
                "DELETE '{set}({id})/{relation}(<id>)/$ref' names the record to take away"
            )));
        }
    };
    let instance = request.instance.name.clone();
    let directory = &request.state.directory;
    let (holder, details) = match relation.as_str() {
        "teammembership_association" => (
            other,
            json!({"TeamId": id, "TeamName": team_name(&request, *id)?, "UserId": other, "UserUpn": user_name(&request, other)?}),
        ),
        "teamroles_association" => (
            *id,
            json!({"TeamId": id, "TeamName": team_name(&request, *id)?, "RoleId": other, "RoleName": role_name(&request, other)?}),
        ),
        _ => (
            *id,
            json!({"UserId": id, "UserUpn": user_name(&request, *id)?, "RoleId": other, "RoleName": role_name(&request, other)?}),
        ),
    };
    let granted = match relation.as_str() {
        "teammembership_association" => directory.roles(*id, &instance),
        _ => vec![other],
    };
    for role in granted {
        check_grantable(&request, role)?;
    }
    if relation == "systemuserroles_association"
        && directory
            .principal(*id)
            .is_some_and(|p| p.user_type == UserType::DcAdmin.code())
    {
        return Err(AppError::forbidden(
            "support engineers hold no roles: the tenant opens their access per ticket",
        ));
    }
    let holds = match relation.as_str() {
        "teammembership_association" => directory.team_members(&instance, *id).contains(&other),
        _ => directory.roles(holder, &instance).contains(&other),
    };
    if holds == add {
        return Err(AppError::new(
            ErrorCode::Conflict,
            if add {
                format!("{set}({id}) is already associated with {other_set}({other})")
            } else {
                format!("{set}({id}) is not associated with {other_set}({other})")
            },
        ));
    }
    draft.record_ids = vec![*id, other];
    draft.result_count = 1;
    draft.details = details.to_string();
    // The event is durable before the change is made, so no change goes unrecorded.
    request.state.record(draft.clone()).await?;
    let state = request.state.clone();
    let (team_or_user, relation) = (*id, relation.clone());
    blocking(move || -> Result<bool, AppError> {
        let directory = &state.directory;
        Ok(match (relation.as_str(), add) {
            ("teammembership_association", true) => {
                directory.add_team_member(&instance, team_or_user, other)?
            }
            ("teammembership_association", false) => {
                directory.remove_team_member(&instance, team_or_user, other)?
            }
            (_, true) => directory.assign_role(holder, &instance, other)?,
            (_, false) => directory.unassign_role(holder, &instance, other)?,
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET set(id)/relation`: the associated records (a retrieve multiple of them).
async fn list(
    request: WebRequest,
    draft: &mut EventDraft,
    owner: &EntityDef,
    id: Uuid,
    relation: &str,
    other_set: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::RetrieveMultiple;
    let other = entity(&request, other_set)?;
    draft.set_entity(&other);
    draft.query = format!("{}({id})/{relation}", owner.set_name);
    request.require(Privilege::Read, owner)?;
    request.require(Privilege::Read, &other)?;
    let directory = &request.state.directory;
    let instance = &request.instance.name;
    let ids = match relation {
        "teammembership_association" => directory.team_members(instance, id),
        _ => directory.roles(id, instance),
    };
    let mut value = Vec::new();
    let key = other.primary_id();
    for other_id in &ids {
        let name = if other_set == "roles" {
            role_name(&request, *other_id)?
        } else {
            user_name(&request, *other_id)?
        };
        let label = if other_set == "roles" {
            "name"
        } else {
            "domainname"
        };
        value.push(json!({key.as_str(): other_id, label: name}));
    }
    if request
        .policy()
        .audits_retrieve_multiple(&other.logical_name)
    {
        let mut event = draft.clone();
        event.record_ids = ids.clone();
        event.result_count = ids.len() as u64;
        request.state.record(event).await?;
    }
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#{other_set}", request.service_root),
        "value": value,
    }))
    .into_response())
}

/// Refuses a support engineer: they never change roles (issue 10 §2).
pub(super) fn refuse_support_engineer(request: &WebRequest) -> Result<(), AppError> {
    if request.caller.user_type() == UserType::DcAdmin {
        return Err(AppError::forbidden(format!(
            "support engineer '{}' cannot change roles, audit settings or retention",
            request.caller.principal.upn
        )));
    }
    Ok(())
}

/// Refuses unless the caller's roles in this instance give everything `granted` gives: nobody
/// grants a privilege they do not hold.
fn check_covered(request: &WebRequest, granted: &SecurityRole, name: &str) -> Result<(), AppError> {
    if request.caller.principal.global_admin {
        return Ok(());
    }
    let holder = request
        .caller
        .security_roles(&request.state, &request.instance);
    let catalog = request.instance.store.catalog();
    match custos_records::uncovered(&holder, granted, catalog.entities()) {
        None => Ok(()),
        Some((privilege, entity)) => Err(AppError::forbidden(format!(
            "user '{}' cannot grant '{name}': it gives the {privilege:?} privilege on entity '{entity}', which they do not hold",
            request.caller.principal.upn
        ))),
    }
}

/// Refuses unless the caller may grant or take back `role` in this instance: never a support
/// engineer, the tenant-wide Audit Reader and Audit Manager only a tenant global admin, and any
/// other role only someone whose own roles give all it gives.
pub(super) fn check_grantable(request: &WebRequest, role: Uuid) -> Result<(), AppError> {
    refuse_support_engineer(request)?;
    let built_in = ROLE_IDS.iter().find(|(_, id)| *id == role).map(|(r, _)| *r);
    if let Some(tenant_wide @ (BuiltInRole::AuditReader | BuiltInRole::AuditManager)) = built_in {
        if request.caller.principal.global_admin {
            return Ok(());
        }
        return Err(AppError::forbidden(format!(
            "only a tenant global admin grants the tenant-wide role '{}'",
            tenant_wide.name()
        )));
    }
    let granted = match built_in {
        Some(role) => SecurityRole::BuiltIn(role),
        None => SecurityRole::Custom(
            request
                .instance
                .custom_roles
                .load()
                .get(&role)
                .cloned()
                .unwrap_or_default(),
        ),
    };
    check_covered(request, &granted, &role_name(request, role)?)
}

/// The privilege names of a body's `Privileges` list.
fn privilege_names(body: &serde_json::Map<String, Json>) -> Result<Vec<String>, AppError> {
    body.get("Privileges")
        .and_then(Json::as_array)
        .ok_or_else(|| {
            AppError::bad_request(
                "'Privileges' is required: [{\"PrivilegeName\": \"prvReadaccount\"}, …]",
            )
        })?
        .iter()
        .map(|p| {
            let name = p
                .get("PrivilegeName")
                .and_then(Json::as_str)
                .ok_or_else(|| AppError::bad_request("each privilege needs 'PrivilegeName'"))?;
            check_depth(name, p.get("Depth"))?;
            Ok(name.to_string())
        })
        .collect()
}

/// A role here grants a privilege across the instance — Dataverse's `Depth` `Global` (3). A
/// narrower depth (`Basic`: the user's own records, `Local`, `Deep`: a business unit's) is
/// refused rather than granted wider than asked; none given is `Global`.
fn check_depth(name: &str, depth: Option<&Json>) -> Result<(), AppError> {
    let global = match depth {
        None => true,
        Some(Json::String(text)) => text.eq_ignore_ascii_case("Global") || text == "3",
        Some(Json::Number(number)) => number.as_u64() == Some(3),
        Some(_) => false,
    };
    if global {
        return Ok(());
    }
    Err(AppError::bad_request(format!(
        "{name}: a role grants its privileges across the instance (Depth 'Global'); Depth {} is not offered",
        depth.map_or_else(String::new, Json::to_string)
    )))
}

/// Checks that every entity a grant names exists in the instance.
fn check_entities(request: &WebRequest, grants: &Grants) -> Result<(), AppError> {
    let catalog = request.instance.store.catalog();
    match grants.entities.keys().find(|e| catalog.entity(e).is_none()) {
        Some(missing) => Err(AppError::bad_request(format!(
            "entity '{missing}' does not exist (privileges name an entity's logical name, e.g. prvReadaccount)"
        ))),
        None => Ok(()),
    }
}

/// `roles(<id>)/…PrivilegesRole`: changes or reads a custom role's privileges.
pub(super) async fn bound_action(
    request: WebRequest,
    draft: &mut EventDraft,
    target: &Target,
) -> Result<Response, AppError> {
    let Target::BoundAction { set, id, action } = target else {
        unreachable!("dispatched on a bound action")
    };
    let role_entity = entity(&request, set)?;
    draft.set_entity(&role_entity);
    if role_entity.logical_name != "role" {
        return Err(AppError::not_found(format!(
            "{action} is bound to roles, not to {set}"
        )));
    }
    let role_id = *id;
    let name = role_name(&request, role_id)?;
    let built_in = ROLE_IDS.iter().any(|(_, built)| *built == role_id);
    let current = request
        .instance
        .custom_roles
        .load()
        .get(&role_id)
        .cloned()
        .unwrap_or_default();
    if action == "RetrieveRolePrivilegesRole" {
        request.require(Privilege::Read, &role_entity)?;
        let privileges: Vec<Json> = current
            .names()
            .into_iter()
            .map(|n| json!({"PrivilegeName": n}))
            .collect();
        return Ok(axum::Json(json!({
            "RoleId": role_id,
            "Name": name,
            "BuiltIn": built_in,
            "RolePrivileges": privileges,
        }))
        .into_response());
    }
    request.require(Privilege::ManageUsers, &role_entity)?;
    if built_in {
        return Err(AppError::bad_request(format!(
            "'{name}' is a built-in role; its privileges cannot be changed (make a custom role)"
        )));
    }
    let body = request.json_object()?;
    let mut grants = current.clone();
    let operation = match action.as_str() {
        "AddPrivilegesRole" => {
            for privilege in privilege_names(&body)? {
                grants.add_named(&privilege)?;
            }
            Operation::AddPrivilegesRole
        }
        "ReplacePrivilegesRole" => {
            grants = Grants::default();
            for privilege in privilege_names(&body)? {
                grants.add_named(&privilege)?;
            }
            Operation::ReplacePrivilegesRole
        }
        _ => {
            let privilege = body
                .get("PrivilegeName")
                .and_then(Json::as_str)
                .ok_or_else(|| AppError::bad_request("'PrivilegeName' is required"))?;
            let mut removed = Grants::default();
            removed.add_named(privilege)?;
            for (entity, privileges) in &removed.entities {
                if let Some(held) = grants.entities.get_mut(entity) {
                    held.retain(|p| !privileges.contains(p));
                }
            }
            grants.entities.retain(|_, held| !held.is_empty());
            grants.instance.retain(|p| !removed.instance.contains(p));
            Operation::RemovePrivilegeRole
        }
    };
    draft.operation = operation;
    check_entities(&request, &grants)?;
    refuse_support_engineer(&request)?;
    check_covered(&request, &SecurityRole::Custom(grants.clone()), &name)?;
    draft.details = json!({"RoleName": name, "Privileges": grants.names()}).to_string();
    draft.changes = vec![Change {
        attribute: "privileges".into(),
        old: Some(json!(current.names()).to_string()),
        new: Some(json!(grants.names()).to_string()),
    }];
    draft.result_count = 1;
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let mut write_context = context(&request);
    write_context.platform = true;
    let text = grants.to_json().to_string();
    blocking(move || -> Result<WriteOutcome, AppError> {
        Ok(store.update(
            "role",
            role_id,
            vec![("privileges".into(), Value::String(text))],
            WriteMode::UpdateOnly,
            write_context,
            &mut |_| state.append_blocking(event.clone()).map_err(|e| e.message),
        )?)
    })
    .await?;
    request.instance.refresh_roles()?;
    Ok(axum::Json(json!({"RoleId": role_id, "RolePrivileges": grants.names()})).into_response())
}
