//! The record store trait and the types it speaks in. SQLite implements it for the embedded
//! default (`sqlite.rs`), PostgreSQL for a cluster node (`pg.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;
use crate::metadata::{AttributeDef, Catalog, EntityDef};
use crate::options::{PageCursor, QueryOptions};
use crate::value::Value;

/// One record: its id and its attribute values by logical name.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Primary key.
    pub id: Uuid,
    /// Values by attribute logical name (the primary id included).
    pub values: BTreeMap<String, Value>,
}

/// A retrieve multiple.
#[derive(Debug, Clone)]
pub struct RecordQuery<'a> {
    /// Entity logical name.
    pub entity: &'a str,
    /// Parsed system query options.
    pub options: &'a QueryOptions,
    /// Most records on this page.
    pub page_size: u64,
}

/// One page of a retrieve multiple.
#[derive(Debug, Clone)]
pub struct RecordPage {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Every matching record, when `$count` asked for it.
    pub total: Option<u64>,
    /// Where the next page starts, when another page follows.
    pub next: Option<PageCursor>,
}

/// The result of a write, given to the `before_commit` hook and returned.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// Entity logical name.
    pub entity: String,
    /// The record written.
    pub id: Uuid,
    /// The record before the write; `None` when it was created.
    pub before: Option<Record>,
    /// The record after the write; `None` when it was deleted.
    pub after: Option<Record>,
    /// What a delete did to the records that named the deleted one (their lookups'
    /// [`OnDelete`](crate::OnDelete)): each deleted (`after` is `None`) or with its lookup
    /// cleared, in the order made, what those deletes did in turn included; empty for any
    /// other write.
    pub cascaded: Vec<WriteOutcome>,
}

/// A lookup attribute and the entity it names ([`RecordStore::lookups_naming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupNaming {
    /// The entity the lookup is an attribute of.
    pub entity: String,
    /// The lookup's logical name.
    pub attribute: String,
    /// The entity it names.
    pub target: String,
}

/// How a write treats an existing or missing record (PATCH with `If-Match` / `If-None-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Update when it exists, create when it does not.
    Upsert,
    /// Update only (`If-Match: *`); a missing record is not found.
    UpdateOnly,
    /// Create only (`If-None-Match: *`); an existing record fails the precondition.
    CreateOnly,
    /// Update only the record at this version (`If-Match: W/"<versionnumber>"`): a missing
    /// record is not found, one changed since fails the precondition.
    UpdateIfVersion(i64),
}

/// One write of a changeset ([`RecordStore::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordChange {
    /// Creates a record with this id.
    Create {
        /// Entity logical name.
        entity: String,
        /// The new record's id (chosen before the changeset runs, so that later writes of the
        /// same changeset can refer to it).
        id: Uuid,
        /// Its values.
        values: Vec<(String, Value)>,
    },
    /// Updates (or upserts) a record, as `mode` says.
    Update {
        /// Entity logical name.
        entity: String,
        /// The record.
        id: Uuid,
        /// The values to set.
        values: Vec<(String, Value)>,
        /// Upsert, update only, create only or update at a version.
        mode: WriteMode,
    },
    /// Deletes a record (only at `version` when one is given).
    Delete {
        /// Entity logical name.
        entity: String,
        /// The record.
        id: Uuid,
        /// The version `If-Match` named.
        version: Option<i64>,
    },
}

impl RecordChange {
    /// The entity the change writes to.
    pub fn entity(&self) -> &str {
        match self {
            RecordChange::Create { entity, .. }
            | RecordChange::Update { entity, .. }
            | RecordChange::Delete { entity, .. } => entity,
        }
    }
}

/// Why a changeset was rolled back: the error, and which change met it (none when the commit
/// itself was refused, or the failure belongs to no one change).
#[derive(Debug)]
pub struct ChangeFailed {
    /// The position of the change that failed.
    pub index: Option<usize>,
    /// What went wrong.
    pub error: crate::Error,
}

/// Who writes and when.
#[derive(Debug, Clone, Copy)]
pub struct WriteContext {
    /// The acting user (becomes `createdby`, `modifiedby`, default `ownerid`).
    pub actor: Uuid,
    /// Who sent the request, when it acts on behalf of `actor` (`MSCRMCallerID`): becomes
    /// `createdonbehalfby` of a record it creates, `modifiedonbehalfby` of one it changes
    /// (cleared by a change made in one's own name), as Dataverse records its delegates.
    pub delegate: Option<Uuid>,
    /// The time of the write.
    pub now: OffsetDateTime,
    /// The platform itself writes (a role's privileges): read-only attributes are writable.
    pub platform: bool,
}

/// Runs inside the write transaction after the change is made and before it commits; an error
/// rolls the change back. The server makes the audit event durable here.
pub type BeforeCommit<'a> = &'a mut dyn FnMut(&WriteOutcome) -> std::result::Result<(), String>;

/// Runs inside the transaction of a batch (import, bulk delete) after every change is made and
/// before any commits; an error rolls them all back.
pub type BeforeCommitAll<'a> =
    &'a mut dyn FnMut(&[WriteOutcome]) -> std::result::Result<(), String>;

/// Runs inside the transaction that deletes an attribute, with its definition and every value
/// it destroys (record id and value); an error rolls the deletion back.
pub type BeforeAttributeDelete<'a> =
    &'a mut dyn FnMut(&AttributeDef, &[(Uuid, Value)]) -> std::result::Result<(), String>;

/// Runs inside the transaction that deletes a custom entity, with its definition and every
/// record it destroys; an error rolls the deletion back.
pub type BeforeEntityDelete<'a> =
    &'a mut dyn FnMut(&EntityDef, &[Record]) -> std::result::Result<(), String>;

/// One record of an import: its id when the file names one, and its values.
pub type ImportRow = (Option<Uuid>, Vec<(String, Value)>);

/// Storage of one instance's metadata and records.
pub trait RecordStore: Send + Sync {
    /// Stops any read of records that runs longer than `most` — a scan or sort of a large
    /// table that no index serves — with [`crate::Error::TooLong`], so that one query cannot
    /// hold a core and a connection for as long as it likes; zero: none is stopped. Writes and
    /// backups are never stopped.
    fn limit_reads(&self, most: std::time::Duration);
    /// Has every other node told, when a write to one of `entities` commits, that this store
    /// changed: they keep what they derive from those records in memory (settings, roles,
    /// automations). Metadata changes are always told. Replaces the entities watched before.
    fn watch_entities(&self, entities: &[&str]);
    /// Reads the published metadata again (another node changed it).
    fn reload(&self) -> Result<()>;
    /// Adds published entities directly (used to seed a new instance); one already there
    /// (another node seeding the same instance) is left as it is.
    fn install(&self, definitions: &[EntityDef]) -> Result<()>;
    /// The published metadata snapshot.
    fn catalog(&self) -> Arc<Catalog>;
    /// The draft definition of an entity (what publishing would make current).
    fn draft(&self, entity: &str) -> Result<EntityDef>;
    /// Every entity's draft definition (what publishing would make current), by logical name.
    fn drafts(&self) -> Result<Vec<EntityDef>>;
    /// Every lookup attribute, published or in a draft, that names one of `targets` (an entity
    /// may be deleted only when no other entity's lookup names it).
    fn lookups_naming(&self, targets: &[&str]) -> Result<Vec<LookupNaming>>;
    /// Saves a draft definition.
    fn save_draft(&self, definition: &EntityDef) -> Result<()>;
    /// Adds a new entity as a draft only (no table until it is published); a taken logical
    /// or entity set name is a conflict.
    fn create_draft(&self, definition: &EntityDef) -> Result<()>;
    /// Deletes an attribute now — from the published and the draft definition, and its data
    /// from every record. `before_commit` sees every record's value that is destroyed (id and
    /// value, non-empty ones only) while the change can still be rolled back.
    fn delete_attribute(
        &self,
        entity: &str,
        attribute: &str,
        before_commit: BeforeAttributeDelete<'_>,
    ) -> Result<()>;
    /// Publishes every draft; returns the entities whose published definition changed.
    fn publish_all(
        &self,
        before_commit: &mut dyn FnMut(&[String]) -> std::result::Result<(), String>,
    ) -> Result<Vec<String>>;
    /// One record.
    fn retrieve(&self, entity: &str, id: Uuid) -> Result<Record>;
    /// The id of the record whose alternate key has `values` (each key attribute's logical
    /// name and value), if one has.
    fn find_by_key(&self, entity: &str, values: &[(String, Value)]) -> Result<Option<Uuid>>;
    /// One page of records.
    fn retrieve_multiple(&self, query: &RecordQuery<'_>) -> Result<RecordPage>;
    /// Creates a record (with `id` when given).
    fn create(
        &self,
        entity: &str,
        id: Option<Uuid>,
        values: Vec<(String, Value)>,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome>;
    /// Updates (or upserts) a record.
    fn update(
        &self,
        entity: &str,
        id: Uuid,
        values: Vec<(String, Value)>,
        mode: WriteMode,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome>;
    /// Deletes a record — only at `version` when one is given (`If-Match`): a record changed
    /// since fails the precondition and stays. The records that name it are then deleted,
    /// cleared or the delete refused, as their lookups' [`OnDelete`](crate::OnDelete) says
    /// (`WriteOutcome::cascaded`; a cleared lookup is a change by `context`).
    fn delete(
        &self,
        entity: &str,
        id: Uuid,
        version: Option<i64>,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome>;
    /// Makes every change in order in one transaction — all of them or none — then runs
    /// `before_commit` with every outcome before anything commits (a changeset of `$batch`).
    fn apply(
        &self,
        changes: Vec<RecordChange>,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> std::result::Result<Vec<WriteOutcome>, ChangeFailed>;
    /// Creates every row in one transaction: all of them or none.
    fn import(
        &self,
        entity: &str,
        rows: Vec<ImportRow>,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> Result<Vec<WriteOutcome>>;
    /// Deletes every record the query's filter matches (at most `limit`; more is refused) in
    /// one transaction, so what is deleted is exactly what matched; each delete cascades as
    /// [`RecordStore::delete`]'s does.
    fn bulk_delete(
        &self,
        entity: &str,
        options: &QueryOptions,
        limit: u64,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> Result<Vec<WriteOutcome>>;
    /// Deletes a custom entity now — its definition and its table with every record.
    fn delete_entity(&self, entity: &str, before_commit: BeforeEntityDelete<'_>) -> Result<()>;
    /// Writes a consistent snapshot of every definition and record to a new file at `to`
    /// (durable when this returns).
    fn backup(&self, to: &std::path::Path) -> Result<()>;
    /// Replaces every definition and record with the snapshot at `from`, atomically.
    fn restore(&self, from: &std::path::Path) -> Result<()>;
}
