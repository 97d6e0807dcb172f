//! The embedded record store: one SQLite database per instance (WAL, `synchronous=FULL`),
//! holding the entity definitions (published and draft JSON) and one table per entity.
//!
//! One writer connection behind a mutex serialises writes (SQLite allows one writer anyway);
//! reads use a small pool of connections that run beside the writer under WAL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params_from_iter};
use uuid::Uuid;

use crate::metadata::{AttributeDef, AttributeType, Catalog, EntityDef, is_logical_name};
use crate::options::QueryOptions;
use crate::seed::COMPOSED;
use crate::sql::{compile_filter, resolve};
use crate::store::{
    BeforeAttributeDelete, BeforeCommit, BeforeCommitAll, BeforeEntityDelete, ImportRow, Record,
    RecordPage, RecordQuery, RecordStore, WriteContext, WriteMode, WriteOutcome,
};
use crate::value::{Value, datetime_now};
use crate::{Error, Result};

/// Times a restore waits 10 ms for a busy database before giving up.
const RESTORE_TRIES_MAX: u32 = 1000;
/// Reader connections kept open for reuse.
const READERS_KEPT_MAX: usize = 32;

/// SQLite implementation of [`RecordStore`].
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    catalog: ArcSwap<Catalog>,
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS custos_entity (
            logical_name TEXT PRIMARY KEY,
            published TEXT,
            draft TEXT NOT NULL
        )",
    )?;
    Ok(conn)
}

fn column_type(attribute: &AttributeDef) -> &'static str {
    match attribute.attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => "TEXT COLLATE NOCASE",
        AttributeType::Integer | AttributeType::Choice | AttributeType::Boolean => "INTEGER",
        AttributeType::Decimal | AttributeType::Money => "REAL",
        AttributeType::DateTime
        | AttributeType::Lookup { .. }
        | AttributeType::UniqueIdentifier => "TEXT",
    }
}

fn create_table(conn: &Connection, definition: &EntityDef) -> Result<()> {
    let primary_id = definition.primary_id();
    let mut columns = Vec::new();
    for attribute in &definition.attributes {
        if !is_logical_name(&attribute.logical_name) {
            return Err(Error::BadRequest(format!(
                "invalid attribute name '{}'",
                attribute.logical_name
            )));
        }
        let mut column = format!("\"{}\" {}", attribute.logical_name, column_type(attribute));
        if attribute.logical_name == primary_id {
            column.push_str(" PRIMARY KEY NOT NULL");
        }
        columns.push(column);
    }
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" ({})",
        definition.table(),
        columns.join(", ")
    ))?;
    Ok(())
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::String(s) | Value::DateTime(s) => SqlValue::Text(s.clone()),
        Value::Integer(n) => SqlValue::Integer(*n),
        Value::Decimal(n) => SqlValue::Real(*n),
        Value::Boolean(b) => SqlValue::Integer(i64::from(*b)),
        Value::Guid(g) => SqlValue::Text(g.to_string()),
    }
}

fn from_sql(attribute: &AttributeDef, raw: ValueRef<'_>) -> Result<Value> {
    let corrupt = || {
        Error::Corrupted(format!(
            "column '{}' holds a value of the wrong type",
            attribute.logical_name
        ))
    };
    if raw == ValueRef::Null {
        return Ok(Value::Null);
    }
    Ok(match attribute.attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => {
            Value::String(raw.as_str().map_err(|_| corrupt())?.to_string())
        }
        AttributeType::Integer | AttributeType::Choice => {
            Value::Integer(raw.as_i64().map_err(|_| corrupt())?)
        }
        AttributeType::Boolean => Value::Boolean(raw.as_i64().map_err(|_| corrupt())? != 0),
        AttributeType::Decimal | AttributeType::Money => Value::Decimal(match raw {
            ValueRef::Integer(n) => n as f64,
            other => other.as_f64().map_err(|_| corrupt())?,
        }),
        AttributeType::DateTime => {
            Value::DateTime(raw.as_str().map_err(|_| corrupt())?.to_string())
        }
        AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => Value::Guid(
            raw.as_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(corrupt)?,
        ),
    })
}

fn column_list(definition: &EntityDef) -> String {
    definition
        .attributes
        .iter()
        .map(|a| format!("\"{}\"", a.logical_name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_row(definition: &EntityDef, row: &rusqlite::Row<'_>) -> Result<Record> {
    let mut values = std::collections::BTreeMap::new();
    for (i, attribute) in definition.attributes.iter().enumerate() {
        values.insert(
            attribute.logical_name.clone(),
            from_sql(attribute, row.get_ref(i)?)?,
        );
    }
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

fn fetch(conn: &Connection, definition: &EntityDef, id: Uuid) -> Result<Option<Record>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?",
        column_list(definition),
        definition.table(),
        definition.primary_id()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query([id.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_row(definition, row)?)),
        None => Ok(None),
    }
}

fn check_writable(
    definition: &EntityDef,
    values: &[(String, Value)],
    context: WriteContext,
) -> Result<()> {
    for (name, _) in values {
        let attribute = definition.attribute(name).ok_or_else(|| {
            Error::BadRequest(format!(
                "attribute '{name}' does not exist on entity '{}'",
                definition.logical_name
            ))
        })?;
        if (attribute.read_only && !context.platform) || *name == definition.primary_id() {
            return Err(Error::BadRequest(format!(
                "attribute '{name}' is read-only"
            )));
        }
    }
    Ok(())
}

fn not_found(definition: &EntityDef, id: Uuid) -> Error {
    Error::NotFound(format!(
        "{} with id {id} does not exist",
        definition.logical_name
    ))
}

impl SqliteStore {
    /// Opens the database of an existing instance, or an empty one.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let writer = connect(path)?;
        let catalog = load_catalog(&writer)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            catalog: ArcSwap::from_pointee(catalog),
        })
    }

    /// Whether the database holds no entity yet (a new instance).
    pub fn is_empty(&self) -> bool {
        self.catalog.load().entities().next().is_none()
    }

    /// Adds published entities directly (used to seed a new instance).
    pub fn install(&self, definitions: &[EntityDef]) -> Result<()> {
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for definition in definitions {
            let json = definition.to_json().to_string();
            tx.execute(
                "INSERT INTO custos_entity (logical_name, published, draft) VALUES (?1, ?2, ?2)",
                [&definition.logical_name, &json],
            )?;
            create_table(&tx, definition)?;
        }
        tx.commit()?;
        self.catalog.store(Arc::new(load_catalog(&conn)?));
        Ok(())
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().expect("reader pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().expect("reader pool lock");
        if pool.len() < READERS_KEPT_MAX {
            pool.push(conn);
        }
        result
    }

    fn definition(&self, entity: &str) -> Result<EntityDef> {
        self.catalog
            .load()
            .entity(entity)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("entity '{entity}' does not exist")))
    }

    fn insert(
        conn: &Connection,
        definition: &EntityDef,
        id: Uuid,
        values: &[(String, Value)],
        context: WriteContext,
    ) -> Result<()> {
        let now = Value::DateTime(datetime_now(context.now));
        let actor = Value::Guid(context.actor);
        let mut columns = vec![definition.primary_id()];
        let mut bound = vec![Value::Guid(id)];
        for (name, value) in values {
            columns.push(name.clone());
            bound.push(value.clone());
        }
        for (name, value) in [
            ("createdon", now.clone()),
            ("modifiedon", now),
            ("createdby", actor.clone()),
            ("modifiedby", actor.clone()),
            ("ownerid", actor),
            ("versionnumber", Value::Integer(1)),
        ] {
            if !columns.iter().any(|c| c == name) {
                columns.push(name.to_string());
                bound.push(value);
            }
        }
        let sql = format!(
            "INSERT INTO \"{}\" ({}) VALUES ({})",
            definition.table(),
            columns
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        match conn.execute(&sql, params_from_iter(bound.iter().map(to_sql))) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Conflict(format!(
                    "{} with id {id} already exists",
                    definition.logical_name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Recomputes the composed attributes of a record just written (see [`COMPOSED`]).
    fn compose(conn: &Connection, definition: &EntityDef, id: Uuid) -> Result<()> {
        for (entity, attribute, parts) in COMPOSED {
            if entity != definition.logical_name || definition.attribute(attribute).is_none() {
                continue;
            }
            let joined = parts
                .iter()
                .filter(|p| definition.attribute(p).is_some())
                .map(|p| format!("coalesce(\"{p}\", '')"))
                .collect::<Vec<_>>()
                .join(" || ' ' || ");
            conn.execute(
                &format!(
                    "UPDATE \"{}\" SET \"{attribute}\" = nullif(trim({joined}), '') WHERE \"{}\" = ?",
                    definition.table(),
                    definition.primary_id()
                ),
                [id.to_string()],
            )?;
        }
        Ok(())
    }

    fn finish(
        tx: rusqlite::Transaction<'_>,
        outcome: WriteOutcome,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome> {
        // Dropping the transaction on the error path rolls the change back.
        before_commit(&outcome).map_err(Error::CommitRefused)?;
        tx.commit()?;
        Ok(outcome)
    }
}

/// The `SELECT` of the records `options` match, in their order, `limit` of them after `offset`;
/// also the `WHERE` clause alone and its parameters (for a count).
fn select_sql(
    definition: &EntityDef,
    options: &QueryOptions,
    limit: u64,
    offset: u64,
) -> Result<(String, String, Vec<Value>)> {
    let mut condition = String::new();
    let mut params = Vec::new();
    if let Some(filter) = &options.filter {
        condition.push_str(" WHERE ");
        compile_filter(definition, filter, &mut condition, &mut params)?;
    }
    let mut order = Vec::new();
    for term in &options.order_by {
        let attribute = resolve(definition, &term.attribute)?;
        order.push(format!(
            "\"{}\" {}",
            attribute.logical_name,
            if term.descending { "DESC" } else { "ASC" }
        ));
    }
    order.push(format!("\"{}\"", definition.primary_id()));
    let sql = format!(
        "SELECT {} FROM \"{}\"{condition} ORDER BY {} LIMIT {} OFFSET {}",
        column_list(definition),
        definition.table(),
        order.join(", "),
        limit.min(i64::MAX as u64),
        offset.min(i64::MAX as u64),
    );
    Ok((sql, condition, params))
}

/// An entity's published definition (none before its first publish) and its draft.
fn definitions(conn: &Connection, entity: &str) -> Result<(Option<EntityDef>, EntityDef)> {
    let row: Option<(Option<String>, String)> = conn
        .query_row(
            "SELECT published, draft FROM custos_entity WHERE logical_name = ?",
            [entity],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (published, draft) =
        row.ok_or_else(|| Error::NotFound(format!("entity '{entity}' does not exist")))?;
    Ok((
        published.as_deref().map(parse_definition).transpose()?,
        parse_definition(&draft)?,
    ))
}

/// A stored definition's JSON text.
fn parse_definition(text: &str) -> Result<EntityDef> {
    EntityDef::from_json(&serde_json::from_str(text).map_err(|e| Error::Corrupted(e.to_string()))?)
}

fn load_catalog(conn: &Connection) -> Result<Catalog> {
    let mut statement =
        conn.prepare("SELECT published FROM custos_entity WHERE published IS NOT NULL")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let mut definitions = Vec::new();
    for row in rows {
        definitions.push(parse_definition(&row?)?);
    }
    Ok(Catalog::new(definitions))
}

impl RecordStore for SqliteStore {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    fn draft(&self, entity: &str) -> Result<EntityDef> {
        self.with_reader(|conn| {
            let draft: Option<String> = conn
                .query_row(
                    "SELECT draft FROM custos_entity WHERE logical_name = ?",
                    [entity],
                    |row| row.get(0),
                )
                .optional()?;
            let draft = draft
                .ok_or_else(|| Error::NotFound(format!("entity '{entity}' does not exist")))?;
            parse_definition(&draft)
        })
    }

    fn drafts(&self) -> Result<Vec<EntityDef>> {
        self.with_reader(|conn| {
            let mut statement =
                conn.prepare("SELECT draft FROM custos_entity ORDER BY logical_name")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(parse_definition(&row?)?);
            }
            Ok(out)
        })
    }

    fn save_draft(&self, definition: &EntityDef) -> Result<()> {
        let conn = self.writer.lock().expect("writer lock");
        let changed = conn.execute(
            "UPDATE custos_entity SET draft = ?1 WHERE logical_name = ?2",
            [
                definition.to_json().to_string(),
                definition.logical_name.clone(),
            ],
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
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let drafts: Vec<String> = {
            let mut statement = tx.prepare("SELECT draft FROM custos_entity")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
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
        tx.execute(
            "INSERT INTO custos_entity (logical_name, published, draft) VALUES (?1, NULL, ?2)",
            [
                definition.logical_name.clone(),
                definition.to_json().to_string(),
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn delete_attribute(
        &self,
        entity: &str,
        attribute: &str,
        before_commit: BeforeAttributeDelete<'_>,
    ) -> Result<()> {
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut published, mut draft) = definitions(&tx, entity)?;
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
        let mut destroyed = Vec::new();
        if let Some(definition) = published
            .as_mut()
            .filter(|p| p.attribute(attribute).is_some())
        {
            {
                let mut statement = tx.prepare(&format!(
                    "SELECT \"{}\", \"{attribute}\" FROM \"{}\" WHERE \"{attribute}\" IS NOT NULL ORDER BY 1",
                    definition.primary_id(),
                    definition.table()
                ))?;
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    let id = row
                        .get_ref(0)?
                        .as_str()
                        .ok()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .ok_or_else(|| Error::Corrupted(format!("a {entity} record has no id")))?;
                    destroyed.push((id, from_sql(&found, row.get_ref(1)?)?));
                }
            }
            tx.execute_batch(&format!(
                "ALTER TABLE \"{}\" DROP COLUMN \"{attribute}\"",
                definition.table()
            ))?;
            definition
                .attributes
                .retain(|a| a.logical_name != attribute);
        }
        draft.attributes.retain(|a| a.logical_name != attribute);
        tx.execute(
            "UPDATE custos_entity SET published = ?1, draft = ?2 WHERE logical_name = ?3",
            rusqlite::params![
                published.map(|p| p.to_json().to_string()),
                draft.to_json().to_string(),
                entity
            ],
        )?;
        before_commit(&found, &destroyed).map_err(Error::CommitRefused)?;
        tx.commit()?;
        self.catalog.store(Arc::new(load_catalog(&conn)?));
        Ok(())
    }

    fn delete_entity(&self, entity: &str, before_commit: BeforeEntityDelete<'_>) -> Result<()> {
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (published, draft) = definitions(&tx, entity)?;
        if draft.category != crate::metadata::EntityCategory::Custom {
            return Err(Error::BadRequest(format!(
                "entity '{entity}' is not a custom entity; it cannot be deleted"
            )));
        }
        let mut records = Vec::new();
        if let Some(published) = published {
            {
                let mut statement = tx.prepare(&format!(
                    "SELECT {} FROM \"{}\" ORDER BY \"{}\"",
                    column_list(&published),
                    published.table(),
                    published.primary_id()
                ))?;
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    records.push(read_row(&published, row)?);
                }
            }
            tx.execute_batch(&format!("DROP TABLE \"{}\"", published.table()))?;
        }
        tx.execute("DELETE FROM custos_entity WHERE logical_name = ?", [entity])?;
        before_commit(&draft, &records).map_err(Error::CommitRefused)?;
        tx.commit()?;
        self.catalog.store(Arc::new(load_catalog(&conn)?));
        Ok(())
    }

    fn publish_all(
        &self,
        before_commit: &mut dyn FnMut(&[String]) -> std::result::Result<(), String>,
    ) -> Result<Vec<String>> {
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending: Vec<(String, Option<String>, String)> = {
            let mut statement = tx.prepare("SELECT logical_name, published, draft FROM custos_entity WHERE published IS NOT draft")?;
            let rows =
                statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut changed = Vec::new();
        for (name, published, draft) in pending {
            let draft_def = parse_definition(&draft)?;
            match published.as_deref().map(parse_definition).transpose()? {
                None => create_table(&tx, &draft_def)?,
                Some(old) => {
                    for attribute in &draft_def.attributes {
                        if old.attribute(&attribute.logical_name).is_none() {
                            tx.execute_batch(&format!(
                                "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                                draft_def.table(),
                                attribute.logical_name,
                                column_type(attribute)
                            ))?;
                        }
                    }
                }
            }
            tx.execute(
                "UPDATE custos_entity SET published = draft WHERE logical_name = ?",
                [&name],
            )?;
            changed.push(name);
        }
        before_commit(&changed).map_err(Error::CommitRefused)?;
        tx.commit()?;
        self.catalog.store(Arc::new(load_catalog(&conn)?));
        Ok(changed)
    }

    fn retrieve(&self, entity: &str, id: Uuid) -> Result<Record> {
        let definition = self.definition(entity)?;
        self.with_reader(|conn| {
            fetch(conn, &definition, id)?.ok_or_else(|| not_found(&definition, id))
        })
    }

    fn retrieve_multiple(&self, query: &RecordQuery<'_>) -> Result<RecordPage> {
        let definition = self.definition(query.entity)?;
        let options = query.options;
        let remaining = options
            .top
            .map_or(u64::MAX, |top| top.saturating_sub(options.skip));
        let n = query.page_size.min(remaining);
        let (sql, condition, params) =
            select_sql(&definition, options, n.saturating_add(1), options.skip)?;
        self.with_reader(|conn| {
            let mut records = Vec::new();
            if n > 0 {
                let mut statement = conn.prepare_cached(&sql)?;
                let mut rows = statement.query(params_from_iter(params.iter().map(to_sql)))?;
                while let Some(row) = rows.next()? {
                    records.push(read_row(&definition, row)?);
                }
            }
            let more = records.len() as u64 > n && n < remaining;
            records.truncate(n as usize);
            let total = if options.count {
                let count_sql =
                    format!("SELECT COUNT(*) FROM \"{}\"{condition}", definition.table());
                let total: i64 = conn.query_row(
                    &count_sql,
                    params_from_iter(params.iter().map(to_sql)),
                    |row| row.get(0),
                )?;
                Some(total as u64)
            } else {
                None
            };
            let next_skip = more.then(|| options.skip + records.len() as u64);
            Ok(RecordPage {
                records,
                total,
                next_skip,
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
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::insert(&tx, &definition, id, &values, context)?;
        Self::compose(&tx, &definition, id)?;
        let after = fetch(&tx, &definition, id)?.ok_or_else(|| not_found(&definition, id))?;
        let outcome = WriteOutcome {
            entity: entity.to_string(),
            id,
            before: None,
            after: Some(after),
        };
        Self::finish(tx, outcome, before_commit)
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
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = fetch(&tx, &definition, id)?;
        match (&before, mode) {
            (None, WriteMode::UpdateOnly) => return Err(not_found(&definition, id)),
            (Some(_), WriteMode::CreateOnly) => {
                return Err(Error::PreconditionFailed(format!(
                    "{} with id {id} already exists",
                    definition.logical_name
                )));
            }
            (None, _) => Self::insert(&tx, &definition, id, &values, context)?,
            (Some(_), _) => {
                let mut sets: Vec<String> = values
                    .iter()
                    .map(|(name, _)| format!("\"{name}\" = ?"))
                    .collect();
                sets.push("\"modifiedon\" = ?".into());
                sets.push("\"modifiedby\" = ?".into());
                sets.push("\"versionnumber\" = \"versionnumber\" + 1".into());
                let mut bound: Vec<Value> = values.iter().map(|(_, v)| v.clone()).collect();
                bound.push(Value::DateTime(datetime_now(context.now)));
                bound.push(Value::Guid(context.actor));
                bound.push(Value::Guid(id));
                let sql = format!(
                    "UPDATE \"{}\" SET {} WHERE \"{}\" = ?",
                    definition.table(),
                    sets.join(", "),
                    definition.primary_id()
                );
                tx.execute(&sql, params_from_iter(bound.iter().map(to_sql)))?;
            }
        }
        Self::compose(&tx, &definition, id)?;
        let after = fetch(&tx, &definition, id)?.ok_or_else(|| not_found(&definition, id))?;
        let outcome = WriteOutcome {
            entity: entity.to_string(),
            id,
            before,
            after: Some(after),
        };
        Self::finish(tx, outcome, before_commit)
    }

    fn delete(
        &self,
        entity: &str,
        id: Uuid,
        before_commit: BeforeCommit<'_>,
    ) -> Result<WriteOutcome> {
        let definition = self.definition(entity)?;
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = fetch(&tx, &definition, id)?.ok_or_else(|| not_found(&definition, id))?;
        tx.execute(
            &format!(
                "DELETE FROM \"{}\" WHERE \"{}\" = ?",
                definition.table(),
                definition.primary_id()
            ),
            [id.to_string()],
        )?;
        let outcome = WriteOutcome {
            entity: entity.to_string(),
            id,
            before: Some(before),
            after: None,
        };
        Self::finish(tx, outcome, before_commit)
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
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for (id, values) in rows {
            let id = id.unwrap_or_else(Uuid::new_v4);
            Self::insert(&tx, &definition, id, &values, context)?;
            Self::compose(&tx, &definition, id)?;
            let after = fetch(&tx, &definition, id)?.ok_or_else(|| not_found(&definition, id))?;
            outcomes.push(WriteOutcome {
                entity: entity.to_string(),
                id,
                before: None,
                after: Some(after),
            });
        }
        before_commit(&outcomes).map_err(Error::CommitRefused)?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn bulk_delete(
        &self,
        entity: &str,
        options: &QueryOptions,
        limit: u64,
        before_commit: BeforeCommitAll<'_>,
    ) -> Result<Vec<WriteOutcome>> {
        let definition = self.definition(entity)?;
        let (sql, _, params) = select_sql(&definition, options, limit.saturating_add(1), 0)?;
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut matched = Vec::new();
        {
            let mut statement = tx.prepare(&sql)?;
            let mut rows = statement.query(params_from_iter(params.iter().map(to_sql)))?;
            while let Some(row) = rows.next()? {
                matched.push(read_row(&definition, row)?);
            }
        }
        if matched.len() as u64 > limit {
            return Err(Error::BadRequest(format!(
                "the query matches more than {limit} {} records; narrow it and run it again",
                definition.logical_name
            )));
        }
        let delete = format!(
            "DELETE FROM \"{}\" WHERE \"{}\" = ?",
            definition.table(),
            definition.primary_id()
        );
        let mut outcomes = Vec::with_capacity(matched.len());
        for record in matched {
            tx.execute(&delete, [record.id.to_string()])?;
            outcomes.push(WriteOutcome {
                entity: entity.to_string(),
                id: record.id,
                before: Some(record),
                after: None,
            });
        }
        before_commit(&outcomes).map_err(Error::CommitRefused)?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn backup(&self, to: &Path) -> Result<()> {
        self.with_reader(|conn| {
            // One statement in one read transaction: a consistent snapshot beside the writer.
            conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
            Ok(())
        })?;
        let sync = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
        sync(to)
            .and_then(|()| to.parent().map_or(Ok(()), sync))
            .map_err(|e| Error::Io(format!("{}: {e}", to.display())))
    }

    fn restore(&self, from: &Path) -> Result<()> {
        let source = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let snapshot = load_catalog(&source).map_err(|e| {
            Error::BadRequest(format!(
                "{} is not a backup of an instance: {e}",
                from.display()
            ))
        })?;
        if snapshot.entities().next().is_none() {
            return Err(Error::BadRequest(format!(
                "{} is not a backup of an instance: it holds no entity",
                from.display()
            )));
        }
        let mut conn = self.writer.lock().expect("writer lock");
        {
            // One step copies every page under the writer's lock: readers see the old database
            // or the restored one, never a mixture.
            let backup = rusqlite::backup::Backup::new(&source, &mut conn)?;
            let mut tries = 0;
            while backup.step(-1)? != rusqlite::backup::StepResult::Done {
                tries += 1;
                if tries > RESTORE_TRIES_MAX {
                    return Err(Error::Conflict(
                        "the instance stayed busy; the restore was not made".into(),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        self.catalog.store(Arc::new(load_catalog(&conn)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
