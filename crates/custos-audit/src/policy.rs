//! The audit policy: an immutable snapshot of the settings that decide what is recorded
//! (SPEC §4). The server swaps in a new snapshot when settings change or customizations are
//! published; a decision is a few hash lookups with no I/O and no lock.

use std::collections::{HashMap, HashSet};

/// Instance-level switches (System Settings → Auditing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceAuditSettings {
    /// Start Auditing: the master switch.
    pub audit: bool,
    /// Start Read Auditing.
    pub read: bool,
    /// Audit user access (sign-in, sign-out).
    pub user_access: bool,
}

/// Published flags of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityAuditFlags {
    /// Auditing (changes).
    pub audit: bool,
    /// Retrieve Record Auditing.
    pub retrieve: bool,
    /// Retrieve Multiple Auditing.
    pub retrieve_multiple: bool,
    /// Attributes whose auditing is turned off; every other attribute is audited.
    pub unaudited_attributes: HashSet<String>,
}

/// What one instance records.
#[derive(Debug, Clone, Default)]
pub struct AuditPolicy {
    /// Instance switches.
    pub settings: InstanceAuditSettings,
    /// Published flags by entity logical name.
    pub entities: HashMap<String, EntityAuditFlags>,
}

impl AuditPolicy {
    /// This policy with every switch and flag on, for callers whose every action is recorded
    /// whatever the instance's settings say (support engineers).
    pub fn everything(&self) -> AuditPolicy {
        AuditPolicy {
            settings: InstanceAuditSettings {
                audit: true,
                read: true,
                user_access: true,
            },
            entities: self
                .entities
                .keys()
                .map(|name| {
                    let flags = EntityAuditFlags {
                        audit: true,
                        retrieve: true,
                        retrieve_multiple: true,
                        unaudited_attributes: HashSet::new(),
                    };
                    (name.clone(), flags)
                })
                .collect(),
        }
    }

    fn entity(&self, entity: &str) -> Option<&EntityAuditFlags> {
        self.entities.get(entity)
    }

    /// Create, update, delete, upsert, assign, share.
    pub fn audits_change(&self, entity: &str) -> bool {
        self.settings.audit && self.entity(entity).is_some_and(|e| e.audit)
    }

    /// Retrieve of one record.
    pub fn audits_retrieve(&self, entity: &str) -> bool {
        self.settings.audit
            && self.settings.read
            && self.entity(entity).is_some_and(|e| e.audit && e.retrieve)
    }

    /// Retrieve multiple (every page).
    pub fn audits_retrieve_multiple(&self, entity: &str) -> bool {
        self.settings.audit
            && self.settings.read
            && self
                .entity(entity)
                .is_some_and(|e| e.audit && e.retrieve_multiple)
    }

    /// Export to Excel or csv.
    pub fn audits_export(&self, entity: &str) -> bool {
        self.audits_change(entity)
    }

    /// Bulk delete and import.
    pub fn audits_bulk(&self) -> bool {
        self.settings.audit
    }

    /// Sign-in, sign-out and access.
    pub fn audits_user_access(&self) -> bool {
        self.settings.user_access
    }

    /// Whether a changed attribute's values go into the event.
    pub fn audits_attribute(&self, entity: &str, attribute: &str) -> bool {
        self.entity(entity)
            .is_some_and(|e| !e.unaudited_attributes.contains(attribute))
    }
}

#[cfg(test)]
mod tests;
