//! The embedded record store's engine: one SQLite database per instance (WAL,
//! `synchronous=FULL`), holding the entity definitions (published and draft JSON) and one
//! table per entity, which `engine.rs` reads and writes.
//!
//! One writer connection behind a mutex serialises writes (SQLite allows one writer anyway);
//! reads use a small pool of connections that run beside the writer under WAL. A backup is
//! `VACUUM INTO` a new file; a backup file is also the format PostgreSQL's store backs up to.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params_from_iter};
use uuid::Uuid;

use crate::engine::{
    Engine, ReadLimit, SnapshotEntity, Sql, Store, load_catalog, read_snapshot, write_snapshot,
};
use crate::metadata::{AttributeDef, AttributeType};
use crate::sql::Dialect;
use crate::value::Value;
use crate::{Error, Result};

/// Times a restore waits 10 ms for a busy database before giving up.
const RESTORE_TRIES_MAX: u32 = 1000;
/// Reader connections kept open for reuse.
const READERS_KEPT_MAX: usize = 32;
/// SQLite virtual machine steps between two looks at a read's deadline (well under a
/// millisecond of work).
const DEADLINE_STEPS: i32 = 10_000;

/// The SQLite engine of one instance's store.
pub struct Sqlite {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Longest a read may run.
    read_limit: ReadLimit,
}

/// The embedded record store: an instance's SQLite database.
pub type SqliteStore = Store<Sqlite>;

/// The table of entity definitions of a record store.
const ENTITY_TABLE: &str = "CREATE TABLE IF NOT EXISTS custos_entity (
    logical_name TEXT PRIMARY KEY,
    published TEXT,
    draft TEXT NOT NULL
)";

/// Opens the database at `path` as the data directory's other files are opened: never through
/// a symbolic link standing at the file's own name (`SQLITE_OPEN_NOFOLLOW`). SQLite refuses a
/// link anywhere in the path with that flag, so the folders above are resolved first: a data
/// directory reached through a link (another disk) still opens. Nor is a database written
/// through a file that has another name (a hard link) — the database or the journal files
/// SQLite keeps beside it — since that would change the file at the other name; read-only
/// opens allow one, as the audit log's reads do.
fn open_own(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let shown = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Io(format!(
            "{}: a symbolic link stands where Custos keeps a file; it is not followed",
            path.display()
        )));
    }
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        refuse_hard_links(path)?;
    }
    let resolved = match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => {
            let folder = if folder.as_os_str().is_empty() {
                Path::new(".")
            } else {
                folder
            };
            folder.canonicalize().map_err(shown)?.join(name)
        }
        _ => path.to_path_buf(),
    };
    Ok(Connection::open_with_flags(
        resolved,
        flags | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?)
}

/// Refuses a database at `path`, or a journal file beside it, that has another name.
fn refuse_hard_links(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(name.into());
    }
    for name in names {
        if std::fs::symlink_metadata(&name).is_ok_and(|m| m.is_file() && m.nlink() > 1) {
            return Err(Error::Io(format!(
                "{}: a file with another name (a hard link) stands where Custos keeps a file; it is not written through",
                name.display()
            )));
        }
    }
    Ok(())
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = open_own(path, OpenFlags::default())?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    caseless_text(&conn)?;
    Ok(conn)
}

/// Makes `conn` compare text without case beyond ASCII ([`crate::caseless`]): SQLite's own
/// `NOCASE` collation — every text column's — and `LIKE` fold only ASCII letters, so `MÜLLER`
/// would differ from `müller` here and equal it on PostgreSQL. Both are replaced on every
/// connection before it runs a statement; indexes built under SQLite's own `NOCASE` are rebuilt
/// once when the store is opened ([`crate::engine`]'s upgrade, `REINDEX NOCASE`).
fn caseless_text(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_collation("NOCASE", crate::caseless::compare)?;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for arguments in [2, 3] {
        conn.create_scalar_function("like", arguments, flags, |ctx| {
            let text = |i: usize| -> rusqlite::Result<Option<&str>> {
                match ctx.get_raw(i) {
                    ValueRef::Null => Ok(None),
                    value => value.as_str().map(Some).map_err(Into::into),
                }
            };
            let escape = match ctx.len() {
                3 => match text(2)? {
                    Some(escape) => {
                        let mut chars = escape.chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) => Some(c),
                            _ => {
                                return Err(rusqlite::Error::UserFunctionError(
                                    "ESCAPE expression must be a single character".into(),
                                ));
                            }
                        }
                    }
                    None => return Ok(None),
                },
                _ => None,
            };
            let (Some(given), Some(value)) = (text(0)?, text(1)?) else {
                return Ok(None);
            };
            // The pattern is read once a statement (SQLite keeps it beside the argument while
            // it stays the same), not once a row.
            let pattern = ctx.get_or_create_aux(0, |_| -> rusqlite::Result<_> {
                Ok((escape, crate::caseless::Pattern::new(given, escape)))
            })?;
            Ok(Some(if pattern.0 == escape {
                pattern.1.matches(value)
            } else {
                crate::caseless::Pattern::new(given, escape).matches(value)
            }))
        })?;
    }
    Ok(())
}

fn column_type(attribute: &AttributeDef) -> &'static str {
    match attribute.attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => "TEXT COLLATE NOCASE",
        AttributeType::Integer
        | AttributeType::BigInt
        | AttributeType::Choice
        | AttributeType::Boolean => "INTEGER",
        AttributeType::Decimal | AttributeType::Money => "REAL",
        AttributeType::DateTime
        | AttributeType::Lookup { .. }
        | AttributeType::UniqueIdentifier => "TEXT",
    }
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
        AttributeType::Integer | AttributeType::BigInt | AttributeType::Choice => {
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

/// A connection or transaction of the engine, speaking [`Sql`].
struct Lite<'a>(&'a Connection);

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut statement = self.0.prepare_cached(sql)?;
        Ok(statement.execute(params_from_iter(params.iter().map(to_sql)))? as u64)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn insert(&mut self, sql: &str, params: &[Value]) -> Result<bool> {
        match self.execute(sql, params) {
            Ok(_) => Ok(true),
            Err(Error::Storage(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn rows(
        &mut self,
        sql: &str,
        params: &[Value],
        columns: &[AttributeDef],
    ) -> Result<Vec<Vec<Value>>> {
        let mut statement = self.0.prepare_cached(sql)?;
        let mut rows = statement.query(params_from_iter(params.iter().map(to_sql)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(from_sql(column, row.get_ref(i)?)?);
            }
            out.push(values);
        }
        Ok(out)
    }

    fn column_type(&self, attribute: &AttributeDef) -> &'static str {
        column_type(attribute)
    }

    /// One process holds an SQLite database: there is no other node to tell.
    fn announce(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Store<Sqlite> {
    /// Opens the database of an existing instance, or an empty one.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Store::over(Sqlite::open(path, ENTITY_TABLE)?)
    }
}

impl Sqlite {
    /// Opens (creating when missing) the database at `path` with the tables `tables`
    /// (`CREATE TABLE IF NOT EXISTS` statements).
    pub(crate) fn open(path: &Path, tables: &str) -> Result<Sqlite> {
        let writer = connect(path)?;
        writer.execute_batch(tables)?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            read_limit: ReadLimit::default(),
        })
    }
}

impl Engine for Sqlite {
    fn read<T: Send>(&self, f: impl Fn(&mut dyn Sql) -> Result<T> + Send) -> Result<T> {
        let pooled = self.readers.lock().expect("reader pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let most = self.read_limit.get();
        let result = if most.is_zero() {
            f(&mut Lite(&conn))
        } else {
            let deadline = Instant::now() + most;
            conn.progress_handler(DEADLINE_STEPS, Some(move || Instant::now() >= deadline));
            let result = f(&mut Lite(&conn));
            conn.progress_handler(0, None::<fn() -> bool>);
            result.map_err(|error| match error {
                Error::Storage(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    Error::TooLong(most)
                }
                other => other,
            })
        };
        let mut pool = self.readers.lock().expect("reader pool lock");
        if pool.len() < READERS_KEPT_MAX {
            pool.push(conn);
        }
        result
    }

    fn write<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T> + Send,
        before_commit: impl FnOnce(&T) -> std::result::Result<(), String>,
    ) -> Result<T> {
        let mut conn = self.writer.lock().expect("writer lock");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = work(&mut Lite(&tx))?;
        // Dropping the transaction on the error path rolls the change back.
        before_commit(&value).map_err(Error::CommitRefused)?;
        tx.commit()?;
        Ok(value)
    }

    fn backup(&self, to: &Path) -> Result<()> {
        // One statement in one read transaction of a connection of its own: a consistent
        // snapshot beside the writer.
        connect(&self.path)?.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
        sync_file(to)
    }

    fn limit_reads(&self, most: Duration) {
        self.read_limit.set(most);
    }

    fn restore(&self, from: &Path) -> Result<()> {
        let source = open_backup(from)?;
        let mut conn = self.writer.lock().expect("writer lock");
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
        Ok(())
    }
}

/// Makes a new file and its folder durable.
fn sync_file(path: &Path) -> Result<()> {
    let sync = |path: &Path| std::fs::File::open(path).and_then(|f| f.sync_all());
    sync(path)
        .and_then(|()| path.parent().map_or(Ok(()), sync))
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Opens a backup file read-only, refusing one that is not a backup of an instance.
fn open_backup(from: &Path) -> Result<Connection> {
    let source = open_own(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let snapshot = load_catalog(&mut Lite(&source)).map_err(|e| {
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
    Ok(source)
}

/// Writes a new backup file at `to` in this engine's format from another engine's snapshot,
/// and makes it durable.
pub(crate) fn write_backup_file(to: &Path, snapshot: &[SnapshotEntity]) -> Result<()> {
    let mut conn = connect(to)?;
    conn.execute_batch(ENTITY_TABLE)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    write_snapshot(&mut Lite(&tx), snapshot)?;
    tx.commit()?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    drop(conn);
    sync_file(to)
}

/// Reads every entity and record of a backup file.
pub(crate) fn read_backup_file(from: &Path) -> Result<Vec<SnapshotEntity>> {
    read_snapshot(&mut Lite(&open_backup(from)?))
}

#[cfg(test)]
mod tests;
