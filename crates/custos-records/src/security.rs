//! Security roles and the privilege check (SPEC §3 "Security"): the built-in roles, custom
//! roles with per-entity privileges, and whether a set of roles allows a request.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};

use crate::metadata::{EntityCategory, EntityDef};
use crate::{Error, Result};

/// The roles every instance has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltInRole {
    /// Everything in the instance.
    SystemAdministrator,
    /// Works with business records.
    BasicUser,
    /// Searches the audit log, runs reports, exports.
    AuditReader,
    /// Audit Reader plus retention, saved reports, search on/off.
    AuditManager,
}

impl BuiltInRole {
    /// Display name, as the `role` record's `name`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltInRole::SystemAdministrator => "System Administrator",
            BuiltInRole::BasicUser => "Basic User",
            BuiltInRole::AuditReader => "Audit Reader",
            BuiltInRole::AuditManager => "Audit Manager",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// Create records.
    Create,
    /// Read records.
    Read,
    /// Change records.
    Write,
    /// Delete records.
    Delete,
    /// Export records to Excel or CSV.
    Export,
    /// Delete records by query.
    BulkDelete,
    /// Import records from a file.
    Import,
    /// Change metadata, audit flags and instance settings, and publish.
    Customize,
    /// Create users and teams, assign roles.
    ManageUsers,
    /// Act on behalf of another user (`MSCRMCallerID`), with only what both of them may do.
    ActOnBehalf,
    /// Read the change history of the records one may read (Dataverse's "View Audit History",
    /// `prvReadRecordAuditHistory`).
    ReadRecordAuditHistory,
    /// Read the instance's audit summary: the changes of every entity one may read, through the
    /// Web API's `audits` (Dataverse's "View Audit Summary", `prvReadAuditSummary`).
    ReadAuditSummary,
}

impl Privilege {
    /// The privileges a role grants per entity.
    pub const PER_ENTITY: [Privilege; 7] = [
        Privilege::Create,
        Privilege::Read,
        Privilege::Write,
        Privilege::Delete,
        Privilege::Export,
        Privilege::BulkDelete,
        Privilege::Import,
    ];

    /// The name in privilege names (`prvCreate…`) and in role JSON.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Create => "Create",
            Privilege::Read => "Read",
            Privilege::Write => "Write",
            Privilege::Delete => "Delete",
            Privilege::Export => "Export",
            Privilege::BulkDelete => "BulkDelete",
            Privilege::Import => "Import",
            Privilege::Customize => "Customize",
            Privilege::ManageUsers => "ManageUsers",
            Privilege::ActOnBehalf => "ActOnBehalfOfAnotherUser",
            Privilege::ReadRecordAuditHistory => "ReadRecordAuditHistory",
            Privilege::ReadAuditSummary => "ReadAuditSummary",
        }
    }

    /// The privileges a role grants on the whole instance.
    pub const INSTANCE: [Privilege; 5] = [
        Privilege::Customize,
        Privilege::ManageUsers,
        Privilege::ActOnBehalf,
        Privilege::ReadRecordAuditHistory,
        Privilege::ReadAuditSummary,
    ];

    fn parse(text: &str) -> Option<Privilege> {
        Privilege::PER_ENTITY
            .into_iter()
            .chain(Privilege::INSTANCE)
            .find(|p| p.name().eq_ignore_ascii_case(text))
    }
}

/// What a custom role grants: privileges per entity, and the instance-wide ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Per entity logical name, the privileges held on it.
    pub entities: BTreeMap<String, BTreeSet<Privilege>>,
    /// Instance-wide privileges (`Customize`, `ManageUsers`, `ActOnBehalf`,
    /// `ReadRecordAuditHistory`, `ReadAuditSummary`).
    pub instance: BTreeSet<Privilege>,
}

impl Grants {
    /// Adds a privilege by its Dataverse-style name: `prv<Privilege><entity>` for a
    /// per-entity one (`prvReadaccount`, `prvCreatenew_project`; case ignored), or
    /// `prvCustomizeSystem` / `prvManageUsers` / `prvActOnBehalfOfAnotherUser` /
    /// `prvReadRecordAuditHistory` / `prvReadAuditSummary`.
    pub fn add_named(&mut self, name: &str) -> Result<()> {
        let bad = || {
            Error::BadRequest(format!(
                "'{name}' is not a privilege: use prv<Create|Read|Write|Delete|Export|BulkDelete|Import><entity>, prvCustomizeSystem, prvManageUsers, prvActOnBehalfOfAnotherUser, prvReadRecordAuditHistory or prvReadAuditSummary"
            ))
        };
        let rest = name
            .strip_prefix("prv")
            .or_else(|| name.strip_prefix("Prv"))
            .ok_or_else(bad)?;
        match rest.to_ascii_lowercase().as_str() {
            "customizesystem" => {
                self.instance.insert(Privilege::Customize);
                return Ok(());
            }
            "manageusers" => {
                self.instance.insert(Privilege::ManageUsers);
                return Ok(());
            }
            "actonbehalfofanotheruser" => {
                self.instance.insert(Privilege::ActOnBehalf);
                return Ok(());
            }
            "readrecordaudithistory" => {
                self.instance.insert(Privilege::ReadRecordAuditHistory);
                return Ok(());
            }
            "readauditsummary" => {
                self.instance.insert(Privilege::ReadAuditSummary);
                return Ok(());
            }
            _ => {}
        }
        // The longest privilege name that begins the rest wins (BulkDelete before Delete).
        let mut per_entity = Privilege::PER_ENTITY;
        per_entity.sort_by_key(|p| std::cmp::Reverse(p.name().len()));
        let (privilege, entity) = per_entity
            .into_iter()
            .find_map(|p| {
                let head = rest.get(..p.name().len())?;
                head.eq_ignore_ascii_case(p.name())
                    .then(|| (p, rest[p.name().len()..].to_ascii_lowercase()))
            })
            .ok_or_else(bad)?;
        if entity.is_empty() {
            return Err(bad());
        }
        self.entities.entry(entity).or_default().insert(privilege);
        Ok(())
    }

    /// Every privilege's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .entities
            .iter()
            .flat_map(|(entity, privileges)| {
                privileges
                    .iter()
                    .map(move |p| format!("prv{}{entity}", p.name()))
            })
            .collect();
        for privilege in &self.instance {
            out.push(match privilege {
                Privilege::Customize => "prvCustomizeSystem".to_string(),
                other => format!("prv{}", other.name()),
            });
        }
        out.sort();
        out
    }

    /// The stored JSON form: `{"entities": {"account": ["Create", …]}, "instance": [...]}`.
    pub fn to_json(&self) -> Json {
        let entities: serde_json::Map<String, Json> = self
            .entities
            .iter()
            .map(|(entity, privileges)| {
                (
                    entity.clone(),
                    json!(privileges.iter().map(|p| p.name()).collect::<Vec<_>>()),
                )
            })
            .collect();
        json!({
            "entities": entities,
            "instance": self.instance.iter().map(|p| p.name()).collect::<Vec<_>>(),
        })
    }

    /// Reads the stored JSON form.
    pub fn from_json(json: &Json) -> Result<Grants> {
        let bad = || Error::Corrupted(format!("role privileges: {json}"));
        let names = |list: &Json| -> Result<BTreeSet<Privilege>> {
            list.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|p| p.as_str().and_then(Privilege::parse).ok_or_else(bad))
                .collect()
        };
        let mut grants = Grants::default();
        if let Some(entities) = json["entities"].as_object() {
            for (entity, list) in entities {
                grants.entities.insert(entity.clone(), names(list)?);
            }
        }
        if !json["instance"].is_null() {
            grants.instance = names(&json["instance"])?;
        }
        Ok(grants)
    }
}

/// A role as the privilege check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityRole {
    /// One of the roles every instance has; its grants follow entity categories, so they
    /// cover entities created later.
    BuiltIn(BuiltInRole),
    /// A role made by an admin, with its grants.
    Custom(Grants),
}

/// Entities a Basic User fully manages although they are about the platform: their own
/// personal views.
const USER_OWNED_ADMIN_ENTITIES: [&str; 1] = ["userquery"];

/// Whether any of `roles` grants `privilege` on `entity`.
pub fn allows(roles: &[SecurityRole], privilege: Privilege, entity: &EntityDef) -> bool {
    roles.iter().any(|role| match role {
        SecurityRole::BuiltIn(BuiltInRole::SystemAdministrator) => true,
        SecurityRole::BuiltIn(BuiltInRole::BasicUser) => {
            let business = matches!(
                entity.category,
                EntityCategory::OutOfBox | EntityCategory::Custom
            ) || USER_OWNED_ADMIN_ENTITIES.contains(&entity.logical_name.as_str());
            if business {
                matches!(
                    privilege,
                    Privilege::Create
                        | Privilege::Read
                        | Privilege::Write
                        | Privilege::Delete
                        | Privilege::Export
                        | Privilege::Import
                )
            } else {
                privilege == Privilege::Read
            }
        }
        SecurityRole::BuiltIn(BuiltInRole::AuditReader | BuiltInRole::AuditManager) => false,
        SecurityRole::Custom(grants) => {
            grants.instance.contains(&privilege)
                || grants
                    .entities
                    .get(&entity.logical_name)
                    .is_some_and(|p| p.contains(&privilege))
        }
    })
}

/// The first privilege `granted` gives on one of `entities` that none of `holder` gives — what
/// a holder of `holder` would gain by granting it — or `None` when `holder` covers it all.
pub fn uncovered<'a>(
    holder: &[SecurityRole],
    granted: &SecurityRole,
    entities: impl IntoIterator<Item = &'a EntityDef>,
) -> Option<(Privilege, String)> {
    let all = Privilege::PER_ENTITY.into_iter().chain(Privilege::INSTANCE);
    let granted = std::slice::from_ref(granted);
    for entity in entities {
        for privilege in all.clone() {
            if allows(granted, privilege, entity) && !allows(holder, privilege, entity) {
                return Some((privilege, entity.logical_name.clone()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::seed_entities;

    fn entity(name: &str) -> EntityDef {
        seed_entities()
            .into_iter()
            .find(|e| e.logical_name == name)
            .unwrap()
    }

    #[test]
    fn privilege_names_parse_and_print_back() {
        let mut grants = Grants::default();
        for name in [
            "prvReadaccount",
            "prvCreateAccount",
            "prvBulkDeletecontact",
            "prvDeletecontact",
            "prvCustomizeSystem",
            "prvActOnBehalfOfAnotherUser",
            "prvReadRecordAuditHistory",
            "prvReadAuditSummary",
        ] {
            grants.add_named(name).unwrap();
        }
        // An instance privilege's name is not read as Read on an entity "recordaudithistory".
        assert!(!grants.entities.contains_key("recordaudithistory"));
        assert!(!grants.entities.contains_key("auditsummary"));
        assert_eq!(
            grants.names(),
            [
                "prvActOnBehalfOfAnotherUser",
                "prvBulkDeletecontact",
                "prvCreateaccount",
                "prvCustomizeSystem",
                "prvDeletecontact",
                "prvReadAuditSummary",
                "prvReadRecordAuditHistory",
                "prvReadaccount"
            ]
        );
        assert_eq!(Grants::from_json(&grants.to_json()).unwrap(), grants);
        for bad in ["Readaccount", "prvRead", "prvFlyaccount", "prv"] {
            assert!(grants.add_named(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_roles_grant_exactly_their_privileges() {
        let mut grants = Grants::default();
        grants.add_named("prvReadaccount").unwrap();
        let roles = [SecurityRole::Custom(grants)];
        assert!(allows(&roles, Privilege::Read, &entity("account")));
        assert!(!allows(&roles, Privilege::Write, &entity("account")));
        assert!(!allows(&roles, Privilege::Read, &entity("contact")));
        assert!(!allows(
            &roles,
            Privilege::Customize,
            &entity("organization")
        ));
    }

    #[test]
    fn a_role_is_covered_only_by_roles_that_give_all_it_gives() {
        let entities = seed_entities();
        let admin = SecurityRole::BuiltIn(BuiltInRole::SystemAdministrator);
        let basic = SecurityRole::BuiltIn(BuiltInRole::BasicUser);
        let mut manage = Grants::default();
        manage.add_named("prvManageUsers").unwrap();
        let manage = SecurityRole::Custom(manage);
        assert_eq!(
            uncovered(std::slice::from_ref(&admin), &basic, &entities),
            None
        );
        assert_eq!(
            uncovered(std::slice::from_ref(&admin), &admin, &entities),
            None
        );
        let (privilege, _) =
            uncovered(std::slice::from_ref(&manage), &admin, &entities).expect("escalation");
        assert_ne!(privilege, Privilege::ManageUsers);
        assert!(uncovered(std::slice::from_ref(&manage), &basic, &entities).is_some());
        assert!(uncovered(std::slice::from_ref(&basic), &manage, &entities).is_some());
        let mut read = Grants::default();
        read.add_named("prvReadaccount").unwrap();
        let read = SecurityRole::Custom(read);
        assert_eq!(
            uncovered(std::slice::from_ref(&basic), &read, &entities),
            None
        );
        assert_eq!(
            uncovered(&[], &read, &entities),
            Some((Privilege::Read, "account".into()))
        );
    }

    #[test]
    fn built_in_roles_follow_entity_categories() {
        let basic = [SecurityRole::BuiltIn(BuiltInRole::BasicUser)];
        assert!(allows(&basic, Privilege::Export, &entity("account")));
        assert!(!allows(&basic, Privilege::BulkDelete, &entity("account")));
        assert!(allows(&basic, Privilege::Read, &entity("role")));
        assert!(!allows(&basic, Privilege::Write, &entity("role")));
        let reader = [SecurityRole::BuiltIn(BuiltInRole::AuditReader)];
        assert!(!allows(&reader, Privilege::Read, &entity("account")));
        let admin = [SecurityRole::BuiltIn(BuiltInRole::SystemAdministrator)];
        assert!(allows(
            &admin,
            Privilege::ManageUsers,
            &entity("systemuser")
        ));
    }
}
