//! The record store, written once over the SQL engines that hold it: [`Store`] implements
//! [`RecordStore`] — definitions, drafts and publishing, reads and paging, writes with their
//! audit hook — in statements with `?` parameters, and an [`Engine`] runs them: SQLite for the
//! embedded product (`sqlite.rs`), PostgreSQL for a cluster node (`pg.rs`). What differs
//! between engines is only how a transaction is held, how values travel, the column types and
//! the few places `sql::Dialect` names; so a behaviour is written, and tested
//! (`contract.rs`), once for both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use uuid::Uuid;

use crate::metadata::{
    AttributeDef, AttributeType, Catalog, EntityCategory, EntityDef, EntityKey, OnDelete,
    is_logical_name,
};
use crate::options::{PageCursor, QueryOptions};
use crate::seed::SHARE_ENTITY;
use crate::sql::{Dialect, column_list, resolve, select_sql};
use crate::store::{
    BeforeAttributeDelete, BeforeCommit, BeforeCommitAll, BeforeEntityDelete, ChangeFailed,
    ImportRow, LookupNaming, Record, RecordChange, RecordPage, RecordQuery, RecordStore,
    WriteContext, WriteMode, WriteOutcome,
};
use crate::value::Value;
use crate::write::{
    check_version, check_writable, compose_sql, delete_sql, fetch_sql, insert_sql, not_found,
    parse_definition, update_sql,
};
use crate::{Error, Result};

/// A connection or transaction of an engine: runs statements written with `?` parameters.
pub(crate) trait Sql {
    /// The engine's dialect.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs statements without parameters (schema changes).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Runs an `INSERT`; `false` when a unique key is taken (nothing was written, and the
    /// transaction can go on).
    fn insert(&mut self, sql: &str, params: &[Value]) -> Result<bool>;
    /// Rows of a query, each column read as the attribute of the same place in `columns`
    /// says.
    fn rows(
        &mut self,
        sql: &str,
        params: &[Value],
        columns: &[AttributeDef],
    ) -> Result<Vec<Vec<Value>>>;
    /// The column type of `attribute`.
    fn column_type(&self, attribute: &AttributeDef) -> &'static str;
    /// Tells every other node, once this transaction commits, that something they keep in
    /// memory of this store changed (its published metadata, or a watched entity's records).
    fn announce(&mut self) -> Result<()>;

    /// Rows of `width` text (or null) columns.
    fn texts(
        &mut self,
        sql: &str,
        params: &[Value],
        width: usize,
    ) -> Result<Vec<Vec<Option<String>>>> {
        let columns = vec![AttributeDef::new("text", AttributeType::Memo); width];
        Ok(self
            .rows(sql, params, &columns)?
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|value| match value {
                        Value::String(text) => Some(text),
                        _ => None,
                    })
                    .collect()
            })
            .collect())
    }

    /// `definition`'s records, selected with every column in definition order.
    fn records(
        &mut self,
        definition: &EntityDef,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Record>> {
        self.rows(sql, params, &definition.attributes)?
            .into_iter()
            .map(|row| record_of(definition, row))
            .collect()
    }

    /// Rows of (record id, value of `attribute`).
    fn values(
        &mut self,
        attribute: &AttributeDef,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<(Uuid, Value)>> {
        let columns = [
            AttributeDef::new("id", AttributeType::UniqueIdentifier),
            attribute.clone(),
        ];
        self.rows(sql, params, &columns)?
            .into_iter()
            .map(|row| match <[Value; 2]>::try_from(row) {
                Ok([Value::Guid(id), value]) => Ok((id, value)),
                _ => Err(Error::Corrupted("a record has no id".into())),
            })
            .collect()
    }

    /// A count.
    fn count(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let columns = [AttributeDef::new("count", AttributeType::Integer)];
        match self.rows(sql, params, &columns)?.pop().as_deref() {
            Some([Value::Integer(n)]) => Ok(*n as u64),
            _ => Err(Error::Corrupted("a count without its number".into())),
        }
    }
}

/// How an engine holds its connections and transactions, backs up and restores.
pub(crate) trait Engine: Send + Sync {
    /// Runs `f` on a connection that reads beside the writer.
    fn read<T: Send>(&self, f: impl Fn(&mut dyn Sql) -> Result<T> + Send) -> Result<T>;
    /// Runs `work` in the instance's one write transaction, then `before_commit` on the
    /// caller's thread with what it made; commits only when both succeed.
    fn write<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T> + Send,
        before_commit: impl FnOnce(&T) -> std::result::Result<(), String>,
    ) -> Result<T>;
    /// Writes a consistent snapshot to a new file at `to` (durable when this returns).
    fn backup(&self, to: &std::path::Path) -> Result<()>;
    /// Replaces everything with the snapshot at `from`, atomically.
    fn restore(&self, from: &std::path::Path) -> Result<()>;
    /// Stops any read that runs longer than `most` with [`crate::Error::TooLong`]; zero: none
    /// is.
    fn limit_reads(&self, most: std::time::Duration);
}

/// The longest a read of an engine may run ([`Engine::limit_reads`]), shared by its threads.
#[derive(Debug, Default)]
pub(crate) struct ReadLimit(std::sync::atomic::AtomicU64);

impl ReadLimit {
    /// Sets the limit; zero: none.
    pub(crate) fn set(&self, most: std::time::Duration) {
        let ms = u64::try_from(most.as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The limit; zero: none.
    pub(crate) fn get(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// One instance's record store on engine `E`.
pub struct Store<E> {
    pub(crate) engine: E,
    catalog: ArcSwap<Catalog>,
    /// Entities whose writes are announced to other nodes.
    watched: std::sync::RwLock<Vec<String>>,
}

/// The row of `custos_entity` naming `entity`: its published definition (none before its
/// first publish) and its draft.
fn definitions(sql: &mut dyn Sql, entity: &str) -> Result<(Option<EntityDef>, EntityDef)> {
    let mut rows = sql.texts(
        "SELECT published, draft FROM custos_entity WHERE logical_name = ?",
        &[Value::String(entity.into())],
        2,
    )?;
    let row = rows
        .pop()
        .ok_or_else(|| Error::NotFound(format!("entity '{entity}' does not exist")))?;
    let [published, draft] = <[Option<String>; 2]>::try_from(row)
        .map_err(|_| Error::Corrupted("custos_entity row".into()))?;
    Ok((
        published.as_deref().map(parse_definition).transpose()?,
        parse_definition(draft.as_deref().unwrap_or_default())?,
    ))
}

/// The first column of every row, which must not be null.
fn first_texts(rows: Vec<Vec<Option<String>>>) -> Result<Vec<String>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .next()
                .flatten()
                .ok_or_else(|| Error::Corrupted("custos_entity holds a null definition".into()))
        })
        .collect()
}

/// Every published definition.
pub(crate) fn load_catalog(sql: &mut dyn Sql) -> Result<Catalog> {
    let rows = sql.texts(
        "SELECT published FROM custos_entity WHERE published IS NOT NULL",
        &[],
        1,
    )?;
    let definitions: Vec<EntityDef> = first_texts(rows)?
        .iter()
        .map(|text| parse_definition(text))
        .collect::<Result<_>>()?;
    Ok(Catalog::new(definitions))
}

/// The `custos_meta` mark of a store whose entities have `createdonbehalfby` and
/// `modifiedonbehalfby`.
const DELEGATE_ATTRIBUTES: &str = "delegate-attributes";

/// Gives every entity of a store written before them `createdonbehalfby` and
/// `modifiedonbehalfby` (empty on its records: nothing was done on anyone's behalf before),
/// run [`once`]: in its published and draft definitions, after `modifiedby`, and as columns
/// of its table. An entity without `modifiedby` has no system attributes and is left as it is.
fn delegate_attributes(sql: &mut dyn Sql) -> Result<()> {
    let rows = sql.texts(
        "SELECT logical_name, published, draft FROM custos_entity ORDER BY logical_name",
        &[],
        3,
    )?;
    for row in rows {
        let [name, published, draft] = <[Option<String>; 3]>::try_from(row)
            .map_err(|_| Error::Corrupted("custos_entity row".into()))?;
        let mut published = published.as_deref().map(parse_definition).transpose()?;
        let mut draft = draft.as_deref().map(parse_definition).transpose()?;
        let mut added = Vec::new();
        for (definition, is_published) in [(&mut published, true), (&mut draft, false)] {
            let Some(definition) = definition else {
                continue;
            };
            let Some(after) = definition
                .attributes
                .iter()
                .position(|a| a.logical_name == "modifiedby")
            else {
                continue;
            };
            for (offset, name) in ["createdonbehalfby", "modifiedonbehalfby"]
                .iter()
                .enumerate()
            {
                if definition.attribute(name).is_none() {
                    let attribute = crate::seed::delegate(name);
                    if is_published {
                        added.push(attribute.clone());
                    }
                    definition.attributes.insert(after + 1 + offset, attribute);
                }
            }
        }
        if let Some(definition) = &published {
            for attribute in &added {
                sql.batch(&format!(
                    "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                    definition.table(),
                    attribute.logical_name,
                    sql.column_type(attribute)
                ))?;
            }
        }
        sql.execute(
            "UPDATE custos_entity SET published = ?, draft = ? WHERE logical_name = ?",
            &[
                published.map_or(Value::Null, |p| Value::String(p.to_json().to_string())),
                draft.map_or(Value::Null, |d| Value::String(d.to_json().to_string())),
                Value::String(name.unwrap_or_default()),
            ],
        )?;
    }
    Ok(())
}

/// The `custos_meta` mark of a store whose date-times are in the millisecond form.
const MILLISECOND_DATETIMES: &str = "datetime-milliseconds";

/// Rewrites date-times a store kept to the second (`…:SSZ`, before it kept milliseconds) in
/// the millisecond form (`…:SS.000Z`), run [`once`]: text order is time order only when
/// every value has the one fixed width.
fn millisecond_datetimes(sql: &mut dyn Sql) -> Result<()> {
    for entity in load_catalog(sql)?.entities() {
        for attribute in &entity.attributes {
            if attribute.attribute_type == AttributeType::DateTime {
                let column = format!("\"{}\"", attribute.logical_name);
                sql.execute(
                    &format!(
                        "UPDATE \"{}\" SET {column} = substr({column}, 1, 19) || '.000Z' WHERE length({column}) = 20",
                        entity.table()
                    ),
                    &[],
                )?;
            }
        }
    }
    Ok(())
}

/// The `custos_meta` mark of an SQLite store whose text indexes are in the order of
/// [`crate::caseless`] (Unicode's lower case), not of SQLite's own `NOCASE` (ASCII's).
pub(crate) const CASELESS_INDEXES: &str = "caseless-indexes";

/// Rebuilds every index of text columns (`REINDEX NOCASE`) in the order of the `NOCASE`
/// collation the engine now gives SQLite, run [`once`] in a record store and in the control
/// database: an index in the old order would miss rows whose text is beyond ASCII. Two records
/// whose key values differ only in the case of such letters are one key's value now, and are
/// named rather than left to fail as a constraint.
pub(crate) fn caseless_indexes(sql: &mut dyn Sql) -> Result<()> {
    match sql.batch("REINDEX NOCASE") {
        Err(error) if error.is_unique_violation() => Err(Error::Conflict(format!(
            "rebuilding the text indexes, whose letters beyond ASCII now compare without case, found two records that a unique key (an alternate key, a user's sign-in name) now takes for the same values ({error}); change one of them with the earlier build, then open this store again"
        ))),
        other => other,
    }
}

/// Runs `step` unless the store's `custos_meta` holds `mark`, then marks it: each step of an
/// upgrade is made once per store, in the transaction of its opening.
pub(crate) fn once(
    sql: &mut dyn Sql,
    mark: &str,
    step: fn(&mut dyn Sql) -> Result<()>,
) -> Result<()> {
    sql.batch(
        "CREATE TABLE IF NOT EXISTS custos_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )?;
    let mark = [Value::String(mark.into())];
    if sql.count("SELECT COUNT(*) FROM custos_meta WHERE key = ?", &mark)? > 0 {
        return Ok(());
    }
    step(sql)?;
    sql.execute(
        "INSERT INTO custos_meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO NOTHING",
        &mark,
    )?;
    Ok(())
}

/// Brings a store written by an older build up to this one's form, in the transaction of its
/// opening (or restore): date-times kept to the millisecond, and every published entity's list
/// indexes (`CREATE INDEX IF NOT EXISTS`: built once, then a lookup in the schema).
fn upgrade(sql: &mut dyn Sql) -> Result<()> {
    once(sql, MILLISECOND_DATETIMES, millisecond_datetimes)?;
    once(sql, DELEGATE_ATTRIBUTES, delegate_attributes)?;
    if sql.dialect() == Dialect::Sqlite {
        once(sql, CASELESS_INDEXES, caseless_indexes)?;
    }
    for entity in load_catalog(sql)?.entities() {
        for attribute in listed(entity) {
            create_list_index(sql, entity, &attribute.logical_name)?;
        }
    }
    Ok(())
}

/// The attributes of `definition` whose filtered and sorted lists a Dataverse user runs most —
/// every lookup (the owner, created and modified by among them), the primary name, the state,
/// created and modified on — each served by an index, as Dataverse indexes them; and the
/// record and the user of a share, which every check of a share and every delete looks up.
fn listed(definition: &EntityDef) -> impl Iterator<Item = &AttributeDef> {
    let shares = definition.logical_name == SHARE_ENTITY;
    definition.attributes.iter().filter(move |attribute| {
        matches!(attribute.attribute_type, AttributeType::Lookup { .. })
            || definition.primary_name.as_deref() == Some(attribute.logical_name.as_str())
            || matches!(
                attribute.logical_name.as_str(),
                "statecode" | "createdon" | "modifiedon"
            )
            || (shares && matches!(attribute.logical_name.as_str(), "objectid" | "principalid"))
    })
}

/// The name of the list index of `attribute` on `definition`'s table: `rec_<entity>.<attribute>`
/// (a dot is in no logical name, so no two read alike), or `ix.` and a hash of it where that is
/// longer than PostgreSQL's 63 bytes (which would cut it, and two cut names could meet).
fn index_name(definition: &EntityDef, attribute: &str) -> String {
    short_index_name(format!("{}.{attribute}", definition.table()))
}

/// The name of the unique index of alternate key `key` on `definition`'s table:
/// `rec_<entity>#<key>` (no logical name holds a `#`, nor a list index's name), shortened as
/// [`index_name`]'s.
fn key_index_name(definition: &EntityDef, key: &str) -> String {
    short_index_name(format!("{}#{key}", definition.table()))
}

fn short_index_name(name: String) -> String {
    use sha2::Digest;
    if name.len() <= 63 {
        return name;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("ix.{hex}")
}

/// Creates the index on (`attribute`, primary id) of `definition`'s table when it has none: a
/// page of a list filtered on the attribute, or sorted by it, reads its rows in the index's
/// order — the primary id last, as every page's order ends — instead of scanning and sorting
/// the table. Nulls come first in it on both engines, as pages order them (`sql::select_sql`).
fn create_list_index(sql: &mut dyn Sql, definition: &EntityDef, attribute: &str) -> Result<()> {
    let nulls = match sql.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " NULLS FIRST",
    };
    sql.batch(&format!(
        "CREATE INDEX IF NOT EXISTS \"{}\" ON \"{}\" (\"{attribute}\"{nulls}, \"{}\")",
        index_name(definition, attribute),
        definition.table(),
        definition.primary_id()
    ))
}

/// Creates `definition`'s table and its list indexes.
pub(crate) fn create_table(sql: &mut dyn Sql, definition: &EntityDef) -> Result<()> {
    let primary_id = definition.primary_id();
    let mut columns = Vec::new();
    for attribute in &definition.attributes {
        if !is_logical_name(&attribute.logical_name) {
            return Err(Error::BadRequest(format!(
                "invalid attribute name '{}'",
                attribute.logical_name
            )));
        }
        let mut column = format!(
            "\"{}\" {}",
            attribute.logical_name,
            sql.column_type(attribute)
        );
        if attribute.logical_name == primary_id {
            column.push_str(" PRIMARY KEY NOT NULL");
        }
        columns.push(column);
    }
    sql.batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" ({})",
        definition.table(),
        columns.join(", ")
    ))?;
    for attribute in listed(definition) {
        create_list_index(sql, definition, &attribute.logical_name)?;
    }
    for key in &definition.keys {
        create_key_index(sql, definition, key)?;
    }
    Ok(())
}

/// Creates the unique index that holds alternate key `key`: no two records with the same
/// values of its attributes (text compared without case, as every comparison of text here; a
/// record with any of them empty is not named by the key and is not held to it, as nulls are
/// distinct to a unique index on both engines). Records that already share values refuse it:
/// a conflict naming the key, and nothing is changed.
fn create_key_index(sql: &mut dyn Sql, definition: &EntityDef, key: &EntityKey) -> Result<()> {
    let columns: Vec<String> = key.attributes.iter().map(|a| format!("\"{a}\"")).collect();
    let statement = format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS \"{}\" ON \"{}\" ({})",
        key_index_name(definition, &key.logical_name),
        definition.table(),
        columns.join(", ")
    );
    match sql.batch(&statement) {
        Err(error) if error.is_unique_violation() => Err(Error::Conflict(format!(
            "the alternate key '{}' of {} cannot be published: records of it hold the same values of {}; change them so that no two share them, then publish again",
            key.logical_name,
            definition.logical_name,
            key.attributes.join(", ")
        ))),
        other => other,
    }
}

/// Refuses a write that would give record `id` the values of an alternate key that another
/// record holds: `row` is what the record's key attributes will be (absent: empty). Checked in
/// the write's transaction before the write, so that the refusal names the key; the unique
/// index stays the guarantee.
fn check_keys(
    sql: &mut dyn Sql,
    definition: &EntityDef,
    id: Uuid,
    row: &dyn Fn(&str) -> Option<Value>,
) -> Result<()> {
    for key in &definition.keys {
        let Some(values) = key
            .attributes
            .iter()
            .map(|a| row(a).filter(|v| *v != Value::Null))
            .collect::<Option<Vec<Value>>>()
        else {
            continue;
        };
        let mut condition: Vec<String> = key
            .attributes
            .iter()
            .map(|a| format!("\"{a}\" = ?"))
            .collect();
        condition.push(format!("\"{}\" <> ?", definition.primary_id()));
        let mut params = values.clone();
        params.push(Value::Guid(id));
        let statement = format!(
            "SELECT COUNT(*) FROM \"{}\" WHERE {}",
            definition.table(),
            condition.join(" AND ")
        );
        if sql.count(&statement, &params)? > 0 {
            let shown: Vec<String> = key
                .attributes
                .iter()
                .zip(&values)
                .map(|(a, v)| format!("{a} {}", v.to_json()))
                .collect();
            return Err(Error::Conflict(format!(
                "a {} record with {} exists already: the alternate key '{}' lets no two records share those values",
                definition.logical_name,
                shown.join(" and "),
                key.logical_name
            )));
        }
    }
    Ok(())
}

/// The `INSERT` of one row of `definition`'s table with every column, in definition order.
pub(crate) fn insert_all_sql(definition: &EntityDef) -> String {
    format!(
        "INSERT INTO \"{}\" ({}) VALUES ({})",
        definition.table(),
        column_list(definition),
        vec!["?"; definition.attributes.len()].join(", ")
    )
}

/// `record`'s values in definition order (null where it has none).
pub(crate) fn row_values(definition: &EntityDef, record: &Record) -> Vec<Value> {
    definition
        .attributes
        .iter()
        .map(|a| {
            record
                .values
                .get(&a.logical_name)
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// One entity of a backup: its logical name, published definition (none before its first
/// publish) and draft, as stored JSON text; and the records of its table.
pub(crate) struct SnapshotEntity {
    pub(crate) name: String,
    pub(crate) published: Option<String>,
    pub(crate) draft: String,
    pub(crate) records: Vec<Record>,
}

/// Every entity and record `sql` sees.
pub(crate) fn read_snapshot(sql: &mut dyn Sql) -> Result<Vec<SnapshotEntity>> {
    let rows = sql.texts(
        "SELECT logical_name, published, draft FROM custos_entity ORDER BY logical_name",
        &[],
        3,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let [name, published, draft] = <[Option<String>; 3]>::try_from(row)
            .map_err(|_| Error::Corrupted("custos_entity row".into()))?;
        let mut records = Vec::new();
        if let Some(definition) = published.as_deref().map(parse_definition).transpose()? {
            let select = format!(
                "SELECT {} FROM \"{}\"",
                column_list(&definition),
                definition.table()
            );
            records = sql.records(&definition, &select, &[])?;
        }
        out.push(SnapshotEntity {
            name: name.unwrap_or_default(),
            published,
            draft: draft.unwrap_or_default(),
            records,
        });
    }
    Ok(out)
}

/// Writes `snapshot` into an empty `custos_entity` (and creates its tables).
pub(crate) fn write_snapshot(sql: &mut dyn Sql, snapshot: &[SnapshotEntity]) -> Result<()> {
    for entity in snapshot {
        sql.execute(
            "INSERT INTO custos_entity (logical_name, published, draft) VALUES (?, ?, ?)",
            &[
                Value::String(entity.name.clone()),
                entity.published.clone().map_or(Value::Null, Value::String),
                Value::String(entity.draft.clone()),
            ],
        )?;
        let Some(published) = entity.published.as_deref() else {
            continue;
        };
        let definition = parse_definition(published)?;
        create_table(sql, &definition)?;
        let insert = insert_all_sql(&definition);
        for record in &entity.records {
            sql.execute(&insert, &row_values(&definition, record))?;
        }
    }
    Ok(())
}

fn fetch(sql: &mut dyn Sql, definition: &EntityDef, id: Uuid) -> Result<Option<Record>> {
    Ok(sql
        .records(definition, &fetch_sql(definition), &[Value::Guid(id)])?
        .pop())
}

/// Refuses a lookup set to a record that does not exist — checked inside the write's
/// transaction, as Dataverse refuses a reference to a missing record: a lookup names a record
/// that is there (or was, until it was deleted).
fn check_references(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    definition: &EntityDef,
    values: &[(String, Value)],
) -> Result<()> {
    for (name, value) in values {
        let Value::Guid(id) = value else { continue };
        let Some(AttributeType::Lookup { target, .. }) =
            definition.attribute(name).map(|a| &a.attribute_type)
        else {
            continue;
        };
        let Some(referenced) = catalog.entity(target) else {
            continue;
        };
        let present = format!(
            "SELECT COUNT(*) FROM \"{}\" WHERE \"{}\" = ?",
            referenced.table(),
            referenced.primary_id()
        );
        if sql.count(&present, &[Value::Guid(*id)])? == 0 {
            return Err(Error::BadRequest(format!(
                "'{name}' of {} refers to {target} {id}, which does not exist",
                definition.logical_name
            )));
        }
    }
    Ok(())
}

fn insert(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    definition: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    context: WriteContext,
) -> Result<()> {
    check_references(sql, catalog, definition, values)?;
    check_keys(sql, definition, id, &|name| given(values, name))?;
    let (statement, bound) = insert_sql(definition, id, values, context);
    if sql.insert(&statement, &bound)? {
        Ok(())
    } else {
        Err(crate::write::taken(definition, id))
    }
}

/// The value `values` give attribute `name`, if they give one.
fn given(values: &[(String, Value)], name: &str) -> Option<Value> {
    values
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Creates a record inside the write transaction.
fn create_in(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    definition: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    context: WriteContext,
) -> Result<WriteOutcome> {
    insert(sql, catalog, definition, id, values, context)?;
    written(sql, definition, id, None)
}

/// Updates (or upserts) a record inside the write transaction, as `mode` says.
fn update_in(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    definition: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    mode: WriteMode,
    context: WriteContext,
) -> Result<WriteOutcome> {
    let before = fetch(sql, definition, id)?;
    if let (Some(before), WriteMode::UpdateIfVersion(version)) = (&before, mode) {
        check_version(definition, before, version)?;
    }
    match (&before, mode) {
        (None, WriteMode::UpdateOnly | WriteMode::UpdateIfVersion(_)) => {
            return Err(not_found(definition, id));
        }
        (Some(_), WriteMode::CreateOnly) => {
            return Err(Error::PreconditionFailed(format!(
                "{} with id {id} already exists",
                definition.logical_name
            )));
        }
        (None, _) => insert(sql, catalog, definition, id, values, context)?,
        (Some(current), _) => {
            check_references(sql, catalog, definition, values)?;
            check_keys(sql, definition, id, &|name| {
                given(values, name).or_else(|| current.values.get(name).cloned())
            })?;
            let (statement, bound) = update_sql(definition, id, values, context);
            // Another node's write that committed after `check_keys` looked (PostgreSQL).
            sql.execute(&statement, &bound).map_err(|error| {
                if error.is_unique_violation() {
                    Error::Conflict(format!(
                        "another {} record holds the values of an alternate key this update gives it",
                        definition.logical_name
                    ))
                } else {
                    error
                }
            })?;
        }
    }
    written(sql, definition, id, before)
}

/// Deletes a record inside the write transaction — only at `version` when one is given — and
/// then does to the records that name it what their lookups' [`OnDelete`] says.
fn delete_in(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    definition: &EntityDef,
    id: Uuid,
    version: Option<i64>,
    context: WriteContext,
) -> Result<WriteOutcome> {
    let before = fetch(sql, definition, id)?.ok_or_else(|| not_found(definition, id))?;
    if let Some(version) = version {
        check_version(definition, &before, version)?;
    }
    sql.execute(&delete_sql(definition), &[Value::Guid(id)])?;
    let cascaded = cascade_delete(sql, catalog, definition, id, context)?;
    Ok(WriteOutcome {
        entity: definition.logical_name.clone(),
        id,
        before: Some(before),
        after: None,
        cascaded,
    })
}

/// Deletes the shares of record `id` of `entity` — and, when it is a user, the shares with
/// them — adding each to `outcomes`.
fn delete_shares(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    entity: &EntityDef,
    id: Uuid,
    outcomes: &mut Vec<WriteOutcome>,
) -> Result<()> {
    let Some(shares) = catalog.entity(SHARE_ENTITY) else {
        return Ok(());
    };
    if entity.logical_name == SHARE_ENTITY {
        return Ok(());
    }
    let mut naming = vec![(
        "\"objectid\" = ? AND \"objecttypecode\" = ?",
        vec![Value::Guid(id), Value::String(entity.logical_name.clone())],
    )];
    if entity.logical_name == "systemuser" {
        naming.push(("\"principalid\" = ?", vec![Value::Guid(id)]));
    }
    let delete = delete_sql(shares);
    for (condition, params) in naming {
        let select = format!(
            "SELECT {} FROM \"{}\" WHERE {condition}",
            crate::sql::column_list(shares),
            shares.table()
        );
        for share in sql.records(shares, &select, &params)? {
            sql.execute(&delete, &[Value::Guid(share.id)])?;
            outcomes.push(WriteOutcome {
                entity: SHARE_ENTITY.to_string(),
                id: share.id,
                before: Some(share),
                after: None,
                cascaded: Vec::new(),
            });
        }
    }
    Ok(())
}

/// The most records one delete may delete or change through the lookups that name it; more is
/// refused, so that one request cannot become an unbounded transaction (delete the related
/// records in batches first).
const CASCADE_MAX: usize = 50_000;

/// What deleting record `id` of `deleted` does to the records that name it, followed through
/// the records it deletes in turn: `Restrict` refuses while any names it, `Cascade` deletes
/// them, `RemoveLink` clears the lookup (a change by `context`), `NoCascade` leaves it. A
/// record already deleted is not found again, so a cycle of lookups ends. The shares of each
/// record deleted (and, for a user, the shares with them) are deleted too: they name it by id,
/// and would otherwise open a record made again under that id (an import of an old export) to
/// whoever the one deleted was shared with.
fn cascade_delete(
    sql: &mut dyn Sql,
    catalog: &Catalog,
    deleted: &EntityDef,
    id: Uuid,
    context: WriteContext,
) -> Result<Vec<WriteOutcome>> {
    // The lookups that act on a delete, by the entity they name: gathered once, the records
    // reached are looked up by them.
    let mut acting: HashMap<&str, Vec<(&EntityDef, &AttributeDef, OnDelete)>> = HashMap::new();
    for referencing in catalog.entities() {
        for lookup in &referencing.attributes {
            if let AttributeType::Lookup { target, on_delete } = &lookup.attribute_type
                && *on_delete != OnDelete::NoCascade
            {
                acting
                    .entry(target.as_str())
                    .or_default()
                    .push((referencing, lookup, *on_delete));
            }
        }
    }
    let mut outcomes = Vec::new();
    let mut pending = vec![(deleted, id)];
    while let Some((target, id)) = pending.pop() {
        delete_shares(sql, catalog, target, id, &mut outcomes)?;
        let naming_target = acting.get(target.logical_name.as_str());
        for &(referencing, lookup, on_delete) in naming_target.into_iter().flatten() {
            let naming = format!(
                "SELECT {} FROM \"{}\" WHERE \"{}\" = ? ORDER BY \"{}\"",
                crate::sql::column_list(referencing),
                referencing.table(),
                lookup.logical_name,
                referencing.primary_id()
            );
            let records = sql.records(referencing, &naming, &[Value::Guid(id)])?;
            if records.is_empty() {
                continue;
            }
            if outcomes.len() + records.len() > CASCADE_MAX {
                return Err(Error::BadRequest(format!(
                    "deleting {} {id} would delete or change more than {CASCADE_MAX} records that name it; delete or change them first",
                    target.logical_name
                )));
            }
            match on_delete {
                // How many name it is not said: the caller may not read them (the console's
                // confirmation counts them through the API, which checks that it may).
                OnDelete::Restrict => {
                    return Err(Error::Conflict(format!(
                        "{} {id} cannot be deleted: {} records name it in '{}', which restricts its deletion; delete them or change their '{}' first",
                        target.logical_name,
                        referencing.logical_name,
                        lookup.logical_name,
                        lookup.logical_name
                    )));
                }
                OnDelete::Cascade => {
                    let delete = delete_sql(referencing);
                    for record in records {
                        sql.execute(&delete, &[Value::Guid(record.id)])?;
                        pending.push((referencing, record.id));
                        outcomes.push(WriteOutcome {
                            entity: referencing.logical_name.clone(),
                            id: record.id,
                            before: Some(record),
                            after: None,
                            cascaded: Vec::new(),
                        });
                    }
                }
                OnDelete::RemoveLink => {
                    let cleared = [(lookup.logical_name.clone(), Value::Null)];
                    for record in records {
                        let (statement, bound) =
                            update_sql(referencing, record.id, &cleared, context);
                        sql.execute(&statement, &bound)?;
                        outcomes.push(written(sql, referencing, record.id, Some(record))?);
                    }
                }
                OnDelete::NoCascade => {}
            }
        }
    }
    Ok(outcomes)
}

/// Recomputes the composed attributes of the record just written and reads it back.
fn written(
    sql: &mut dyn Sql,
    definition: &EntityDef,
    id: Uuid,
    before: Option<Record>,
) -> Result<WriteOutcome> {
    for statement in compose_sql(definition) {
        sql.execute(&statement, &[Value::Guid(id)])?;
    }
    let after = fetch(sql, definition, id)?.ok_or_else(|| not_found(definition, id))?;
    Ok(WriteOutcome {
        entity: definition.logical_name.clone(),
        id,
        before,
        after: Some(after),
        cascaded: Vec::new(),
    })
}

fn publish_pending(sql: &mut dyn Sql) -> Result<Vec<String>> {
    let differs = match sql.dialect() {
        Dialect::Sqlite => "published IS NOT draft",
        Dialect::Postgres => "published IS DISTINCT FROM draft",
    };
    let pending = sql.texts(
        &format!("SELECT logical_name, published, draft FROM custos_entity WHERE {differs}"),
        &[],
        3,
    )?;
    let mut changed = Vec::new();
    for row in pending {
        let [name, published, draft] = <[Option<String>; 3]>::try_from(row)
            .map_err(|_| Error::Corrupted("custos_entity row".into()))?;
        let name = name.unwrap_or_default();
        let draft_def = parse_definition(draft.as_deref().unwrap_or_default())?;
        match published.as_deref().map(parse_definition).transpose()? {
            None => create_table(sql, &draft_def)?,
            Some(old) => {
                for attribute in &draft_def.attributes {
                    if old.attribute(&attribute.logical_name).is_none() {
                        let column_type = sql.column_type(attribute);
                        sql.batch(&format!(
                            "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {column_type}",
                            draft_def.table(),
                            attribute.logical_name,
                        ))?;
                    }
                }
                for attribute in listed(&draft_def) {
                    create_list_index(sql, &draft_def, &attribute.logical_name)?;
                }
                for key in old.keys.iter().filter(|k| !draft_def.keys.contains(k)) {
                    sql.batch(&format!(
                        "DROP INDEX IF EXISTS \"{}\"",
                        key_index_name(&draft_def, &key.logical_name)
                    ))?;
                }
                for key in draft_def.keys.iter().filter(|k| !old.keys.contains(k)) {
                    create_key_index(sql, &draft_def, key)?;
                }
            }
        }
        sql.execute(
            "UPDATE custos_entity SET published = draft WHERE logical_name = ?",
            &[Value::String(name.clone())],
        )?;
        changed.push(name);
    }
    Ok(changed)
}

fn remove_attribute(
    sql: &mut dyn Sql,
    entity: &str,
    attribute: &str,
) -> Result<(AttributeDef, Vec<(Uuid, Value)>)> {
    let (mut published, mut draft) = definitions(sql, entity)?;
    let found = published
        .as_ref()
        .and_then(|p| p.attribute(attribute))
        .or_else(|| draft.attribute(attribute))
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "attribute '{attribute}' does not exist on entity '{entity}'"
            ))
        })?;
    if !found.custom || draft.primary_name.as_deref() == Some(attribute) {
        return Err(Error::BadRequest(format!(
            "attribute '{attribute}' is not a custom attribute other than the primary name; it cannot be deleted"
        )));
    }
    if let Some(key) = published
        .iter()
        .chain(std::iter::once(&draft))
        .flat_map(|d| &d.keys)
        .find(|k| k.attributes.iter().any(|a| a == attribute))
    {
        return Err(Error::Conflict(format!(
            "attribute '{attribute}' is part of the alternate key '{}' of {entity}; delete the key and publish first",
            key.logical_name
        )));
    }
    let mut destroyed = Vec::new();
    if let Some(definition) = published
        .as_mut()
        .filter(|p| p.attribute(attribute).is_some())
    {
        destroyed = sql.values(
            &found,
            &format!(
                "SELECT \"{}\", \"{attribute}\" FROM \"{}\" WHERE \"{attribute}\" IS NOT NULL ORDER BY 1",
                definition.primary_id(),
                definition.table()
            ),
            &[],
        )?;
        // SQLite refuses to drop a column an index names.
        sql.batch(&format!(
            "DROP INDEX IF EXISTS \"{}\"",
            index_name(definition, attribute)
        ))?;
        sql.batch(&format!(
            "ALTER TABLE \"{}\" DROP COLUMN \"{attribute}\"",
            definition.table()
        ))?;
        definition
            .attributes
            .retain(|a| a.logical_name != attribute);
    }
    draft.attributes.retain(|a| a.logical_name != attribute);
    sql.execute(
        "UPDATE custos_entity SET published = ?, draft = ? WHERE logical_name = ?",
        &[
            published.map_or(Value::Null, |p| Value::String(p.to_json().to_string())),
            Value::String(draft.to_json().to_string()),
            Value::String(entity.into()),
        ],
    )?;
    Ok((found, destroyed))
}

/// Every lookup attribute, published or in a draft, whose target is one of `targets`; each once,
/// by entity and attribute.
fn lookups_naming(sql: &mut dyn Sql, targets: &[&str]) -> Result<Vec<LookupNaming>> {
    let mut naming: Vec<LookupNaming> = Vec::new();
    for row in sql.texts(
        "SELECT published, draft FROM custos_entity ORDER BY logical_name",
        &[],
        2,
    )? {
        for text in row.into_iter().flatten() {
            let definition = parse_definition(&text)?;
            for attribute in &definition.attributes {
                let AttributeType::Lookup { target, .. } = &attribute.attribute_type else {
                    continue;
                };
                let found = LookupNaming {
                    entity: definition.logical_name.clone(),
                    attribute: attribute.logical_name.clone(),
                    target: target.clone(),
                };
                if targets.contains(&target.as_str()) && !naming.contains(&found) {
                    naming.push(found);
                }
            }
        }
    }
    Ok(naming)
}

fn remove_entity(sql: &mut dyn Sql, entity: &str) -> Result<(EntityDef, Vec<Record>)> {
    let (published, draft) = definitions(sql, entity)?;
    if draft.category != EntityCategory::Custom {
        return Err(Error::BadRequest(format!(
            "entity '{entity}' is not a custom entity; it cannot be deleted"
        )));
    }
    // A lookup of another entity naming it would name an entity that is gone (and, with no
    // target to check, take any id): refused, as Dataverse refuses to delete a table another
    // one relates to, until those lookups are deleted.
    let naming: Vec<String> = lookups_naming(sql, &[entity])?
        .into_iter()
        .filter(|lookup| lookup.entity != entity)
        .map(|lookup| format!("{}.{}", lookup.entity, lookup.attribute))
        .collect();
    if !naming.is_empty() {
        return Err(Error::Conflict(format!(
            "entity '{entity}' cannot be deleted while lookups name it: {}; delete them first",
            naming.join(", ")
        )));
    }
    let mut records = Vec::new();
    if let Some(published) = published {
        records = sql.records(
            &published,
            &format!(
                "SELECT {} FROM \"{}\" ORDER BY \"{}\"",
                column_list(&published),
                published.table(),
                published.primary_id()
            ),
            &[],
        )?;
        sql.batch(&format!("DROP TABLE \"{}\"", published.table()))?;
        // Their shares go with them (the `DeleteEntity` event, which holds every record,
        // stands for them): an entity made again under the name, its records imported again
        // under their ids, must not open to whoever the old ones were shared with.
        if let Some(shares) = load_catalog(sql)?.entity(SHARE_ENTITY) {
            sql.execute(
                &format!(
                    "DELETE FROM \"{}\" WHERE \"objecttypecode\" = ?",
                    shares.table()
                ),
                &[Value::String(entity.into())],
            )?;
        }
    }
    sql.execute(
        "DELETE FROM custos_entity WHERE logical_name = ?",
        &[Value::String(entity.into())],
    )?;
    Ok((draft, records))
}

// `Engine` is this crate's own seam (no engine is written outside it), so a bound the public
// `Store` cannot name outside the crate is what is meant.
#[allow(private_bounds)]
impl<E: Engine> Store<E> {
    /// A store over `engine`, with its published definitions loaded.
    pub(crate) fn over(engine: E) -> Result<Store<E>> {
        engine.write(upgrade, |_| Ok(()))?;
        let catalog = engine.read(|sql| load_catalog(sql))?;
        Ok(Store {
            engine,
            catalog: ArcSwap::from_pointee(catalog),
            watched: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Whether writes to `entity` are announced.
    /// Whether `outcomes` wrote a watched entity's records, the records their deletes reached
    /// included.
    fn touches_watched(&self, outcomes: &[WriteOutcome]) -> bool {
        outcomes
            .iter()
            .any(|outcome| self.watched(&outcome.entity) || self.touches_watched(&outcome.cascaded))
    }

    fn watched(&self, entity: &str) -> bool {
        self.watched
            .read()
            .expect("watched lock")
            .iter()
            .any(|w| w == entity)
    }

    fn definition(&self, entity: &str) -> Result<EntityDef> {
        self.catalog
            .load()
            .entity(entity)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("entity '{entity}' does not exist")))
    }
}

#[cfg(test)]
#[allow(private_bounds)]
impl<E: Engine> Store<E> {
    /// How the engine would read the first page of 50 of `entity` under `query`: its plan as
    /// text (PostgreSQL's with sequential scans and sorts priced out, as on a table large
    /// enough for them not to pay: a sort left in the plan is one no index can spare).
    pub(crate) fn plan(&self, entity: &str, query: &[(&str, &str)]) -> String {
        let definition = self.definition(entity).unwrap();
        let options = crate::options::parse_query_options(query.iter().copied()).unwrap();
        self.engine
            .write(
                |sql| {
                    let selection = select_sql(sql.dialect(), &definition, &options, 50)?;
                    let lines = match sql.dialect() {
                        Dialect::Sqlite => {
                            let number = AttributeDef::new("n", AttributeType::Integer);
                            let detail = AttributeDef::new(
                                "detail",
                                AttributeType::String { max_length: 4000 },
                            );
                            sql.rows(
                                &format!("EXPLAIN QUERY PLAN {}", selection.select),
                                &selection.params,
                                &[number.clone(), number.clone(), number, detail],
                            )?
                            .into_iter()
                            .filter_map(|row| match row.into_iter().nth(3) {
                                Some(Value::String(text)) => Some(text),
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                        }
                        Dialect::Postgres => {
                            sql.batch(
                                "SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off",
                            )?;
                            first_texts(sql.texts(
                                &format!("EXPLAIN {}", selection.select),
                                &selection.params,
                                1,
                            )?)?
                        }
                    };
                    Ok(lines.join("\n"))
                },
                |_| Ok(()),
            )
            .unwrap()
    }
}

impl<E: Engine> RecordStore for Store<E> {
    fn limit_reads(&self, most: std::time::Duration) {
        self.engine.limit_reads(most);
    }

    fn watch_entities(&self, entities: &[&str]) {
        *self.watched.write().expect("watched lock") =
            entities.iter().map(|e| e.to_string()).collect();
    }

    fn reload(&self) -> Result<()> {
        let catalog = self.engine.read(|sql| load_catalog(sql))?;
        self.catalog.store(Arc::new(catalog));
        Ok(())
    }

    fn install(&self, definitions: &[EntityDef]) -> Result<()> {
        self.engine.write(
            |sql| {
                for definition in definitions {
                    let json = Value::String(definition.to_json().to_string());
                    // Another node may have installed it first: its definition stands.
                    let added = sql.execute(
                        "INSERT INTO custos_entity (logical_name, published, draft) VALUES (?, ?, ?) ON CONFLICT (logical_name) DO NOTHING",
                        &[Value::String(definition.logical_name.clone()), json.clone(), json],
                    )?;
                    if added == 1 {
                        create_table(sql, definition)?;
                    }
                }
                sql.announce()
            },
            |_| Ok(()),
        )?;
        self.reload()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    fn draft(&self, entity: &str) -> Result<EntityDef> {
        self.engine.read(|sql| Ok(definitions(sql, entity)?.1))
    }

    fn lookups_naming(&self, targets: &[&str]) -> Result<Vec<LookupNaming>> {
        self.engine.read(|sql| lookups_naming(sql, targets))
    }

    fn drafts(&self) -> Result<Vec<EntityDef>> {
        self.engine.read(|sql| {
            let rows = sql.texts(
                "SELECT draft FROM custos_entity ORDER BY logical_name",
                &[],
                1,
            )?;
            first_texts(rows)?
                .iter()
                .map(|text| parse_definition(text))
                .collect()
        })
    }

    fn save_draft(&self, definition: &EntityDef) -> Result<()> {
        let changed = self.engine.write(
            |sql| {
                sql.execute(
                    "UPDATE custos_entity SET draft = ? WHERE logical_name = ?",
                    &[
                        Value::String(definition.to_json().to_string()),
                        Value::String(definition.logical_name.clone()),
                    ],
                )
            },
            |_| Ok(()),
        )?;
        if changed == 0 {
            return Err(Error::NotFound(format!(
                "entity '{}' does not exist",
                definition.logical_name
            )));
        }
        Ok(())
    }

    fn create_draft(&self, definition: &EntityDef) -> Result<()> {
        if !is_logical_name(&definition.logical_name) {
            return Err(Error::BadRequest(format!(
                "invalid entity name '{}'",
                definition.logical_name
            )));
        }
        self.engine.write(
            |sql| {
                let drafts = first_texts(sql.texts("SELECT draft FROM custos_entity", &[], 1)?)?;
                for text in drafts {
                    let existing = parse_definition(&text)?;
                    if existing.logical_name == definition.logical_name
                        || existing.set_name == definition.set_name
                    {
                        return Err(Error::Conflict(format!(
                            "an entity named '{}' or with entity set '{}' already exists",
                            definition.logical_name, definition.set_name
                        )));
                    }
                }
                sql.execute(
                    "INSERT INTO custos_entity (logical_name, published, draft) VALUES (?, NULL, ?)",
                    &[
                        Value::String(definition.logical_name.clone()),
                        Value::String(definition.to_json().to_string()),
                    ],
                )?;
                Ok(())
            },
            |_| Ok(()),
        )
    }

    fn delete_attribute(
        &self,
        entity: &str,
        attribute: &str,
        before_commit: BeforeAttributeDelete<'_>,
    ) -> Result<()> {
        self.engine.write(
            |sql| {
                let removed = remove_attribute(sql, entity, attribute)?;
                sql.announce()?;
                Ok(removed)
            },
            |(found, destroyed)| before_commit(found, destroyed),
        )?;
        self.reload()
    }

    fn publish_all(
        &self,
        before_commit: &mut dyn FnMut(&[String]) -> std::result::Result<(), String>,
    ) -> Result<Vec<String>> {
        let changed = self.engine.write(
            |sql| {
                let changed = publish_pending(sql)?;
                sql.announce()?;
                Ok(changed)
            },
            |changed| before_commit(changed),
        )?;
        self.reload()?;
        Ok(changed)
    }

    fn retrieve(&self, entity: &str, id: Uuid) -> Result<Record> {
        let definition = self.definition(entity)?;
        self.engine
            .read(|sql| fetch(sql, &definition, id)?.ok_or_else(|| not_found(&definition, id)))
    }

    fn find_by_key(&self, entity: &str, values: &[(String, Value)]) -> Result<Option<Uuid>> {
        let definition = self.definition(entity)?;
        let mut condition = Vec::with_capacity(values.len());
        for (name, _) in values {
            resolve(&definition, name)?;
            condition.push(format!("\"{name}\" = ?"));
        }
        let statement = format!(
            "SELECT \"{}\" FROM \"{}\" WHERE {} LIMIT 1",
            definition.primary_id(),
            definition.table(),
            condition.join(" AND ")
        );
        let params: Vec<Value> = values.iter().map(|(_, v)| v.clone()).collect();
        let id = AttributeDef::new("id", AttributeType::UniqueIdentifier);
        self.engine.read(|sql| {
            Ok(
                match sql
                    .rows(&statement, &params, std::slice::from_ref(&id))?
                    .pop()
                    .as_deref()
                {
                    Some([Value::Guid(id)]) => Some(*id),
                    _ => None,
                },
            )
        })
    }

    fn retrieve_multiple(&self, query: &RecordQuery<'_>) -> Result<RecordPage> {
        let definition = self.definition(query.entity)?;
        let options = query.options;
        let returned = options.after.as_ref().map_or(0, |cursor| cursor.returned);
        let remaining = options
            .top
            .map_or(u64::MAX, |top| top.saturating_sub(returned));
        let n = query.page_size.min(remaining);
        self.engine.read(|sql| {
            let selection = select_sql(sql.dialect(), &definition, options, n.saturating_add(1))?;
            let mut records = if n > 0 {
                sql.records(&definition, &selection.select, &selection.params)?
            } else {
                Vec::new()
            };
            let more = records.len() as u64 > n && n < remaining;
            records.truncate(n as usize);
            let total = if options.count {
                let count = format!(
                    "SELECT COUNT(*) FROM \"{}\"{}",
                    definition.table(),
                    selection.condition
                );
                Some(sql.count(&count, &selection.params[..selection.condition_params])?)
            } else {
                None
            };
            let next = match records.last() {
                Some(last) if more => Some(page_cursor(
                    &definition,
                    options,
                    last,
                    returned + records.len() as u64,
                )?),
                _ => None,
            };
            Ok(RecordPage {
                records,
                total,
                next,
            })
        })
    }

    fn create(
        &self,
        entity: &str,
        id: Option<Uuid>,
        values: Vec<(String, Value)>,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome> {
        let definition = self.definition(entity)?;
        check_writable(&definition, &values, context)?;
        let id = id.unwrap_or_else(Uuid::new_v4);
        let announce = self.watched(entity);
        let catalog = self.catalog.load_full();
        self.engine.write(
            |sql| {
                let outcome = create_in(sql, &catalog, &definition, id, &values, context)?;
                if announce {
                    sql.announce()?;
                }
                Ok(outcome)
            },
            |outcome| before_commit(outcome),
        )
    }

    fn update(
        &self,
        entity: &str,
        id: Uuid,
        values: Vec<(String, Value)>,
        mode: WriteMode,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome> {
        let definition = self.definition(entity)?;
        check_writable(&definition, &values, context)?;
        let announce = self.watched(entity);
        let catalog = self.catalog.load_full();
        self.engine.write(
            |sql| {
                let outcome = update_in(sql, &catalog, &definition, id, &values, mode, context)?;
                if announce {
                    sql.announce()?;
                }
                Ok(outcome)
            },
            |outcome| before_commit(outcome),
        )
    }

    fn delete(
        &self,
        entity: &str,
        id: Uuid,
        version: Option<i64>,
        context: WriteContext,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome> {
        let definition = self.definition(entity)?;
        let catalog = self.catalog.load_full();
        self.engine.write(
            |sql| {
                let outcome = delete_in(sql, &catalog, &definition, id, version, context)?;
                if self.touches_watched(std::slice::from_ref(&outcome)) {
                    sql.announce()?;
                }
                Ok(outcome)
            },
            |outcome| before_commit(outcome),
        )
    }

    fn apply(
        &self,
        changes: Vec<RecordChange>,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> std::result::Result<Vec<WriteOutcome>, ChangeFailed> {
        let at = |index: usize| {
            move |error: Error| ChangeFailed {
                index: Some(index),
                error,
            }
        };
        let mut definitions = Vec::with_capacity(changes.len());
        let mut announce = false;
        for (index, change) in changes.iter().enumerate() {
            let definition = self.definition(change.entity()).map_err(at(index))?;
            if let RecordChange::Create { values, .. } | RecordChange::Update { values, .. } =
                change
            {
                check_writable(&definition, values, context).map_err(at(index))?;
            }
            announce |= self.watched(change.entity());
            definitions.push(definition);
        }
        // The change being made, so that a failure names it.
        let current = std::sync::atomic::AtomicUsize::new(0);
        let catalog = self.catalog.load_full();
        self.engine
            .write(
                |sql| {
                    let mut outcomes = Vec::with_capacity(changes.len());
                    for (index, (change, definition)) in
                        changes.iter().zip(&definitions).enumerate()
                    {
                        current.store(index, std::sync::atomic::Ordering::Relaxed);
                        outcomes.push(match change {
                            RecordChange::Create { id, values, .. } => {
                                create_in(sql, &catalog, definition, *id, values, context)?
                            }
                            RecordChange::Update {
                                id, values, mode, ..
                            } => update_in(sql, &catalog, definition, *id, values, *mode, context)?,
                            RecordChange::Delete { id, version, .. } => {
                                delete_in(sql, &catalog, definition, *id, *version, context)?
                            }
                        });
                    }
                    current.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
                    if announce || self.touches_watched(&outcomes) {
                        sql.announce()?;
                    }
                    Ok(outcomes)
                },
                |outcomes| before_commit(outcomes),
            )
            .map_err(|error| ChangeFailed {
                index: Some(current.load(std::sync::atomic::Ordering::Relaxed))
                    .filter(|i| *i != usize::MAX && !matches!(error, Error::CommitRefused(_))),
                error,
            })
    }

    fn import(
        &self,
        entity: &str,
        rows: Vec<ImportRow>,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> Result<Vec<WriteOutcome>> {
        let definition = self.definition(entity)?;
        for (_, values) in &rows {
            check_writable(&definition, values, context)?;
        }
        let announce = self.watched(entity);
        let catalog = self.catalog.load_full();
        self.engine.write(
            |sql| {
                let mut outcomes = Vec::with_capacity(rows.len());
                for (id, values) in rows {
                    let id = id.unwrap_or_else(Uuid::new_v4);
                    insert(sql, &catalog, &definition, id, &values, context)?;
                    outcomes.push(written(sql, &definition, id, None)?);
                }
                if announce {
                    sql.announce()?;
                }
                Ok(outcomes)
            },
            |outcomes| before_commit(outcomes),
        )
    }

    fn bulk_delete(
        &self,
        entity: &str,
        options: &QueryOptions,
        limit: u64,
        context: WriteContext,
        before_commit: BeforeCommitAll<'_>,
    ) -> Result<Vec<WriteOutcome>> {
        let definition = self.definition(entity)?;
        let catalog = self.catalog.load_full();
        self.engine.write(
            |sql| {
                let selection =
                    select_sql(sql.dialect(), &definition, options, limit.saturating_add(1))?;
                let matched = sql.records(&definition, &selection.select, &selection.params)?;
                if matched.len() as u64 > limit {
                    return Err(Error::BadRequest(format!(
                        "the query matches more than {limit} {} records; narrow it and run it again",
                        definition.logical_name
                    )));
                }
                let delete = delete_sql(&definition);
                let mut outcomes: Vec<WriteOutcome> = Vec::with_capacity(matched.len());
                // What an earlier delete's cascade did to the records matched: deleted (`None`)
                // or changed (the record as it is now).
                let mut reached = std::collections::HashMap::new();
                for matched in matched {
                    let record = match reached.remove(&matched.id) {
                        Some(None) => continue,
                        Some(Some(now)) => now,
                        None => matched,
                    };
                    sql.execute(&delete, &[Value::Guid(record.id)])?;
                    let cascaded = cascade_delete(sql, &catalog, &definition, record.id, context)?;
                    for outcome in &cascaded {
                        if outcome.entity == definition.logical_name {
                            reached.insert(outcome.id, outcome.after.clone());
                        }
                    }
                    outcomes.push(WriteOutcome {
                        entity: entity.to_string(),
                        id: record.id,
                        before: Some(record),
                        after: None,
                        cascaded,
                    });
                }
                if self.touches_watched(&outcomes) {
                    sql.announce()?;
                }
                Ok(outcomes)
            },
            |outcomes| before_commit(outcomes),
        )
    }

    fn delete_entity(&self, entity: &str, before_commit: BeforeEntityDelete<'_>) -> Result<()> {
        self.engine.write(
            |sql| {
                let removed = remove_entity(sql, entity)?;
                sql.announce()?;
                Ok(removed)
            },
            |(draft, records)| before_commit(draft, records),
        )?;
        self.reload()
    }

    fn backup(&self, to: &std::path::Path) -> Result<()> {
        self.engine.backup(to)
    }

    fn restore(&self, from: &std::path::Path) -> Result<()> {
        self.engine.restore(from)?;
        // A backup taken before date-times kept milliseconds.
        self.engine.write(upgrade, |_| Ok(()))?;
        self.reload()
    }
}

/// Values by logical name, read from a row's columns in definition order.
/// The cursor after `last`, the last row of a page, in the order of `options`.
fn page_cursor(
    definition: &EntityDef,
    options: &QueryOptions,
    last: &Record,
    returned: u64,
) -> Result<PageCursor> {
    let keys = options
        .order_by
        .iter()
        .map(|term| {
            let attribute = resolve(definition, &term.attribute)?;
            Ok(last
                .values
                .get(&attribute.logical_name)
                .map_or(serde_json::Value::Null, Value::to_json))
        })
        .collect::<Result<_>>()?;
    Ok(PageCursor {
        returned,
        keys,
        id: last.id,
    })
}

pub(crate) fn record_of(
    definition: &EntityDef,
    values: impl IntoIterator<Item = Value>,
) -> Result<Record> {
    let values: BTreeMap<String, Value> = definition
        .attributes
        .iter()
        .map(|a| a.logical_name.clone())
        .zip(values)
        .collect();
    let id = match values.get(&definition.primary_id()) {
        Some(Value::Guid(id)) => *id,
        _ => {
            return Err(Error::Corrupted(format!(
                "a {} record has no id",
                definition.logical_name
            )));
        }
    };
    Ok(Record { id, values })
}
