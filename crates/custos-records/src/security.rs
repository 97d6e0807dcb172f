//! Built-in security roles and the privilege check (SPEC §3 "Security").

use crate::metadata::EntityCategory;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Create users and assign roles.
    ManageUsers,
}

/// Whether any of `roles` grants `privilege` on an entity of `category`.
pub fn allows(roles: &[BuiltInRole], privilege: Privilege, category: EntityCategory) -> bool {
    roles.iter().any(|role| match role {
        BuiltInRole::SystemAdministrator => true,
        BuiltInRole::BasicUser => match category {
            EntityCategory::OutOfBox | EntityCategory::Custom => matches!(
                privilege,
                Privilege::Create
                    | Privilege::Read
                    | Privilege::Write
                    | Privilege::Delete
                    | Privilege::Export
                    | Privilege::Import
            ),
            EntityCategory::Admin | EntityCategory::Other => privilege == Privilege::Read,
        },
        BuiltInRole::AuditReader | BuiltInRole::AuditManager => false,
    })
}
