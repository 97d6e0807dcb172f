//! What a delete does to the records that name the deleted one, checked and recorded. The store
//! makes those changes inside the delete's transaction, as each lookup's `OnDelete` says
//! (`WriteOutcome::cascaded`); here, before anything commits, each is checked against what the
//! caller may do and becomes an event of its own — so a role that may delete accounts but not
//! contacts cannot take an account's contacts with it, and "who deleted contact X" finds the
//! request that did.

use std::sync::Arc;

use custos_audit::{AuditPolicy, Operation};
use custos_records::{
    Catalog, EntityDef, Privilege, RecordStore, SHARE_ENTITY, SecurityRole, Value, WriteOutcome,
    allows,
};
use serde_json::json;

use super::WebRequest;
use super::records::{audits_change, changeable_in_changeset, describe_write};
use super::sharing::access_names;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

/// The caller's rights and the instance's policy, carried into a delete's transaction.
pub(crate) struct Cascade {
    roles: Vec<SecurityRole>,
    /// The sender's, when the request acts on behalf of the caller: both must allow a change.
    sender_roles: Option<Vec<SecurityRole>>,
    upn: String,
    policy: Arc<AuditPolicy>,
    /// Why the last commit was refused, when the caller may not make a change the delete made.
    refused: Option<AppError>,
}

impl Cascade {
    pub(crate) fn new(request: &WebRequest) -> Cascade {
        Cascade {
            roles: request
                .caller
                .security_roles(&request.state, &request.instance),
            sender_roles: request
                .delegate
                .as_ref()
                .map(|sender| sender.security_roles(&request.state, &request.instance)),
            upn: request.caller.principal.upn.clone(),
            policy: request.policy(),
            refused: None,
        }
    }

    /// The events of everything `outcome`'s delete did to other records — a `Delete`, or an
    /// `Update` clearing the lookup, under the record's own entity, with the template's request
    /// (user, origin, correlation id) and `Details` naming the record whose delete did it — for
    /// the entities whose changes are audited. Refuses (the commit rolls back; [`Cascade::answer`]
    /// tells why) when the caller lacks `Delete`, or `Write` for a cleared lookup, on one of
    /// them, or when one is a record whose change acts beyond the store (a user, a role, an
    /// automation), which a delete elsewhere must not make behind the platform's back.
    pub(crate) fn events(
        &mut self,
        store: &dyn RecordStore,
        template: &EventDraft,
        outcome: &WriteOutcome,
    ) -> Result<Vec<EventDraft>, String> {
        let catalog = store.catalog();
        let mut events = Vec::with_capacity(outcome.cascaded.len());
        for change in &outcome.cascaded {
            if change.entity == SHARE_ENTITY {
                events.extend(self.share_ended(&catalog, template, outcome, change));
                continue;
            }
            let Some(entity) = catalog.entity(&change.entity) else {
                continue;
            };
            let deleted = change.after.is_none();
            if let Err(refused) = self.check(entity, deleted) {
                let message = refused.message.clone();
                self.refused = Some(refused);
                return Err(message);
            }
            if !audits_change(&self.policy, entity) {
                continue;
            }
            let mut event = template.clone();
            event.operation = if deleted {
                Operation::Delete
            } else {
                Operation::Update
            };
            event.set_entity(entity);
            event.details = json!({
                "CascadedFrom": {"Entity": outcome.entity, "RecordId": outcome.id}
            })
            .to_string();
            describe_write(&mut event, entity, &self.policy, change);
            events.push(event);
        }
        Ok(events)
    }

    /// A share deleted with its record (or with the user it was for) is the platform's own
    /// bookkeeping, needing no privilege: an `Unshare` of the shared record, as `RevokeAccess`
    /// records one, when that record's entity's changes are audited.
    fn share_ended(
        &self,
        catalog: &Catalog,
        template: &EventDraft,
        outcome: &WriteOutcome,
        share: &WriteOutcome,
    ) -> Option<EventDraft> {
        let values = &share.before.as_ref()?.values;
        let (Some(Value::String(entity)), Some(Value::Guid(object)), Some(Value::Guid(principal))) = (
            values.get("objecttypecode"),
            values.get("objectid"),
            values.get("principalid"),
        ) else {
            return None;
        };
        let entity = catalog.entity(entity)?;
        if !audits_change(&self.policy, entity) {
            return None;
        }
        let mask = match values.get("accessrightsmask") {
            Some(Value::Integer(mask)) => *mask,
            _ => 0,
        };
        let mut event = template.clone();
        event.operation = Operation::Unshare;
        event.set_entity(entity);
        event.record_ids = vec![*object];
        event.result_count = 1;
        event.changes = Vec::new();
        event.details = json!({
            "PrincipalId": principal,
            "AccessMask": access_names(mask),
            "CascadedFrom": {"Entity": outcome.entity, "RecordId": outcome.id},
        })
        .to_string();
        Some(event)
    }

    fn check(&self, entity: &EntityDef, deleted: bool) -> Result<(), AppError> {
        changeable_in_changeset(entity).map_err(|_| {
            AppError::bad_request(format!(
                "the delete would {} {} records, which are written only on their own: change them first",
                if deleted { "delete" } else { "change" },
                entity.logical_name
            ))
        })?;
        let privilege = if deleted {
            Privilege::Delete
        } else {
            Privilege::Write
        };
        let sender_allows = self
            .sender_roles
            .as_ref()
            .is_none_or(|roles| allows(roles, privilege, entity));
        if sender_allows && allows(&self.roles, privilege, entity) {
            return Ok(());
        }
        Err(AppError::forbidden(format!(
            "user '{}' lacks the {privilege:?} privilege on entity '{}', whose records the delete would {}",
            self.upn,
            entity.logical_name,
            if deleted { "delete" } else { "change" }
        )))
    }

    /// The answer for a delete that failed with `error`: why its cascade was refused, when that
    /// is what rolled it back.
    pub(crate) fn answer(&mut self, error: AppError) -> AppError {
        self.refused.take().unwrap_or(error)
    }
}
