//! The record store of a cluster node (`custos serve --postgres`, docs/scale-out.md): one
//! PostgreSQL schema per instance holding what the embedded SQLite database holds — the entity
//! definitions (`custos_entity`, published and draft JSON) and one table per entity — written
//! and read through the same store (`engine.rs`) in PostgreSQL's dialect:
//! numbered parameters, `citext` for text (case-insensitive as SQLite's `NOCASE`), native
//! `uuid`, `bigint`, `double precision` and `boolean` columns, nulls ordered as SQLite orders
//! them. Date-times stay normalised RFC 3339 text, as in SQLite, so they compare the same.
//!
//! Writes to one instance are serialised across every node by a transaction-scoped advisory
//! lock on its schema (as SQLite's one writer), so a read-then-write — an update's before
//! image, a bulk delete's match — sees no other writer between its read and its commit. A
//! backup is a snapshot in the embedded format (an SQLite file, `sqlite::write_snapshot`), so a
//! backup restores on either kind of store.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient, Row};
use uuid::Uuid;

use crate::engine::{Engine, ReadLimit, Sql, Store, load_catalog, read_snapshot, write_snapshot};
use crate::metadata::{AttributeDef, AttributeType, is_logical_name};
use crate::sql::{Dialect, numbered};
use crate::sqlite::{read_backup_file, write_backup_file};
use crate::value::Value;
use crate::{Error, Result};

/// Connections kept open for reuse.
const CLIENTS_KEPT_MAX: usize = 16;
/// How long a connection may sit idle before it is asked whether it still answers.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);
/// How long that question may take.
const IDLE_CHECK_WAIT: Duration = Duration::from_secs(2);

/// The channel a store notifies when something other nodes keep in memory changed: its
/// published metadata, or a record of an entity it was told others cache
/// (`RecordStore::watch_entities`); the payload is its schema.
mod tls;
pub use tls::trust_postgres_ca;

pub(crate) const STORE_CHANNEL: &str = "custos_store";

/// A notification one node's transaction sent to every node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notice<'a> {
    /// The channel it was sent on.
    pub(crate) channel: &'a str,
    /// What it says.
    pub(crate) payload: &'a str,
}

/// The PostgreSQL engine of one instance's store: its schema in a database.
pub struct Postgres {
    url: String,
    schema: String,
    /// Idle connections, each with when it was last given back.
    clients: Mutex<Vec<(Client, Instant)>>,
    /// Longest a read may run: every connection's `statement_timeout`, which the transactions
    /// of writes and backups lift (`unlimited`).
    read_limit: ReadLimit,
}

/// A cluster node's record store: an instance's schema in PostgreSQL.
pub type PgStore = Store<Postgres>;

/// A value bound to a statement, typed by the column it meets.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        fn typed<T: ToSql>(
            value: T,
            ty: &Type,
            out: &mut BytesMut,
        ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            if !T::accepts(ty) {
                return Err(format!(
                    "a {} value cannot be stored as {ty}",
                    std::any::type_name::<T>()
                )
                .into());
            }
            value.to_sql(ty, out)
        }
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::String(s) | Value::DateTime(s) => typed(s.as_str(), ty, out),
            Value::Integer(n) => typed(*n, ty, out),
            Value::Decimal(n) => typed(*n, ty, out),
            Value::Boolean(b) => typed(*b, ty, out),
            Value::Guid(g) => typed(*g, ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn params(values: &[Value]) -> Vec<Param<'_>> {
    values.iter().map(Param).collect()
}

fn refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn column_type(attribute: &AttributeDef) -> &'static str {
    match attribute.attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => "citext",
        AttributeType::Integer | AttributeType::BigInt | AttributeType::Choice => "bigint",
        AttributeType::Boolean => "boolean",
        AttributeType::Decimal | AttributeType::Money => "double precision",
        AttributeType::DateTime => "text",
        AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => "uuid",
    }
}

fn from_pg(attribute: &AttributeDef, row: &Row, i: usize) -> Result<Value> {
    Ok(match attribute.attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::String),
        AttributeType::DateTime => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::DateTime),
        AttributeType::Integer | AttributeType::BigInt | AttributeType::Choice => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Integer),
        AttributeType::Boolean => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Boolean),
        AttributeType::Decimal | AttributeType::Money => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Decimal),
        AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => row
            .try_get::<_, Option<Uuid>>(i)?
            .map_or(Value::Null, Value::Guid),
    })
}

/// A connection or transaction of the engine, speaking [`Sql`].
struct Pg<'a, C> {
    db: &'a mut C,
    schema: &'a str,
}

impl<C: GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        let bound = params(values);
        Ok(self.db.execute(numbered(sql).as_str(), &refs(&bound))?)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.db.batch_execute(sql)?)
    }

    fn insert(&mut self, sql: &str, values: &[Value]) -> Result<bool> {
        // A savepoint, so that a taken key leaves the transaction usable.
        let mut savepoint = self.db.transaction()?;
        let bound = params(values);
        match savepoint.execute(numbered(sql).as_str(), &refs(&bound)) {
            Ok(_) => {
                savepoint.commit()?;
                Ok(true)
            }
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn rows(
        &mut self,
        sql: &str,
        values: &[Value],
        columns: &[AttributeDef],
    ) -> Result<Vec<Vec<Value>>> {
        let bound = params(values);
        self.db
            .query(numbered(sql).as_str(), &refs(&bound))?
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| from_pg(column, row, i))
                    .collect()
            })
            .collect()
    }

    fn column_type(&self, attribute: &AttributeDef) -> &'static str {
        column_type(attribute)
    }

    fn announce(&mut self) -> Result<()> {
        self.db
            .execute("SELECT pg_notify($1, $2)", &[&STORE_CHANNEL, &self.schema])?;
        Ok(())
    }
}

impl Store<Postgres> {
    /// Opens (creating when missing) the schema `schema` of the database at `url` — a
    /// connection string or URL; the database must exist — as an instance's store. `schema` is
    /// `[a-z_][a-z0-9_]*`.
    pub fn open(url: &str, schema: &str) -> Result<PgStore> {
        let engine = Postgres::open(
            url,
            schema,
            "CREATE TABLE IF NOT EXISTS custos_entity (
                 logical_name text PRIMARY KEY,
                 published text,
                 draft text NOT NULL
             )",
        )?;
        Store::over(engine)
    }

    /// Removes the schema `schema` of the database at `url`, with every definition and record
    /// in it (the instance was deleted).
    pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
        if !is_logical_name(schema) {
            return Err(Error::BadRequest(format!("invalid schema name '{schema}'")));
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<()> {
                    let mut client = tls::connect(url)?;
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))?;
                    Ok(())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Postgres {
    /// Opens (creating when missing) the schema `schema` of the database at `url` with the
    /// tables `tables` (`CREATE TABLE IF NOT EXISTS` statements, run in the schema).
    pub(crate) fn open(url: &str, schema: &str, tables: &str) -> Result<Postgres> {
        if !is_logical_name(schema) || schema.len() > 63 {
            return Err(Error::BadRequest(format!("invalid schema name '{schema}'")));
        }
        let engine = Postgres {
            url: url.to_string(),
            schema: schema.to_string(),
            clients: Mutex::new(Vec::new()),
            read_limit: ReadLimit::default(),
        };
        engine.with_client(|client| {
            // The extension lives in the public schema, once per database; each store's schema
            // is its own. `IF NOT EXISTS` does not make two sessions creating the same thing at
            // once safe, so creation holds one lock for the whole database.
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('custos: creating schemas', 0))",
                &[],
            )?;
            tx.batch_execute(&format!(
                "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
                 CREATE SCHEMA IF NOT EXISTS \"{schema}\";"
            ))?;
            // The connection's search path is the schema, so unqualified names land there.
            tx.batch_execute(tables)?;
            tx.commit()?;
            // `citext` folds case by the database's LC_CTYPE: under C only ASCII letters, so
            // `MÜLLER` would differ from `müller` here and equal it in the embedded store.
            let row = client.query_one(
                "SELECT lower('ÄÉΣ') = 'äéσ', current_setting('lc_ctype')",
                &[],
            )?;
            if !row.get::<_, bool>(0) {
                let ctype: String = row.get(1);
                tracing::warn!(
                    lc_ctype = %ctype,
                    "this PostgreSQL database folds only ASCII letters' case, so text beyond ASCII compares with case here and without it in the embedded store; create the database with a UTF-8 locale (e.g. C.UTF-8)"
                );
            }
            Ok(())
        })?;
        Ok(engine)
    }

    /// Calls `changed` with what `alive` points to and the notification whenever a transaction
    /// that notified one of `channels` commits, on any node — and with `None` each time it
    /// (re)connects, since anything may have changed while it was not listening; on a thread
    /// of its own, which ends soon after `alive` is gone.
    pub(crate) fn follow<T: Send + Sync + 'static>(
        &self,
        channels: &'static [&'static str],
        alive: std::sync::Weak<T>,
        changed: impl Fn(&T, Option<Notice<'_>>) + Send + 'static,
    ) {
        follow_url(self.url.clone(), channels, alive, changed);
    }
    /// Takes the session advisory lock `lock` of the database — `alone`, or shared with others
    /// that take it shared — on a connection of its own, held until the returned sender is
    /// dropped; `None` when another session holds it in the other way (or alone).
    pub(crate) fn claim(
        &self,
        lock: &'static str,
        alone: bool,
    ) -> Result<Option<std::sync::mpsc::Sender<()>>> {
        let url = self.url.clone();
        let (granted_tx, granted_rx) = std::sync::mpsc::channel::<Result<bool>>();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        // The connection lives and closes on this thread (closing one blocks on the client's
        // own runtime, which must not happen on an async worker).
        std::thread::spawn(move || {
            let claimed = tls::connect(&url)
                .map_err(Error::from)
                .and_then(|mut client| {
                    let function = if alone {
                        "pg_try_advisory_lock"
                    } else {
                        "pg_try_advisory_lock_shared"
                    };
                    let granted: bool = client
                        .query_one(
                            &format!("SELECT {function}(hashtextextended($1, 0))"),
                            &[&lock],
                        )?
                        .get(0);
                    Ok((client, granted))
                });
            match claimed {
                Ok((client, granted)) => {
                    let _ = granted_tx.send(Ok(granted));
                    if granted {
                        // Held until the claim's sender is dropped.
                        let _ = hold_rx.recv();
                    }
                    drop(client);
                }
                Err(error) => {
                    let _ = granted_tx.send(Err(error));
                }
            }
        });
        let granted = granted_rx
            .recv()
            .map_err(|_| Error::Io("the claim's thread ended without an answer".into()))??;
        Ok(granted.then_some(hold_tx))
    }

    /// Holds the session lock `lock` of the database whenever it can, on a connection and a
    /// thread of its own: `leading` hears `true` once it is held and `false` when the
    /// connection holding it is lost (the server then frees it for another node; the loss of
    /// this process frees it too). Asks again every second; ends soon after `alive` is gone.
    pub(crate) fn lead<T: Send + Sync + 'static>(
        &self,
        lock: &'static str,
        alive: std::sync::Weak<T>,
        leading: impl Fn(&T, bool) + Send + 'static,
    ) {
        let url = self.url.clone();
        let tell = move |held: bool| match alive.upgrade() {
            Some(target) => {
                leading(&target, held);
                true
            }
            None => false,
        };
        std::thread::spawn(move || {
            let mut client: Option<Client> = None;
            loop {
                let held = match client.as_mut() {
                    None => false,
                    Some(held_by) => held_by.is_valid(IDLE_CHECK_WAIT).is_ok(),
                };
                if !held {
                    if !tell(false) {
                        return;
                    }
                    client = tls::connect(&url).ok().and_then(|mut candidate| {
                        let row = candidate
                            .query_one(
                                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                                &[&lock],
                            )
                            .ok()?;
                        row.get::<_, bool>(0).then_some(candidate)
                    });
                    if client.is_some() && !tell(true) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
                if !tell(client.is_some()) {
                    return;
                }
            }
        });
    }

    fn connect(&self) -> Result<Client> {
        let mut client = tls::connect(&self.url)?;
        client.batch_execute(&format!(
            "SET search_path TO \"{}\", public; SET TIME ZONE 'UTC'; SET statement_timeout = {}",
            self.schema,
            self.read_limit.get().as_millis()
        ))?;
        Ok(client)
    }

    /// Lifts the read limit for the rest of `tx`: a write is never stopped midway (its event
    /// may be on its way), nor a backup (SQLite's has no limit either).
    fn unlimited(&self, tx: &mut postgres::Transaction<'_>) -> Result<()> {
        if !self.read_limit.get().is_zero() {
            tx.batch_execute("SET LOCAL statement_timeout = 0")?;
        }
        Ok(())
    }

    /// A connection of the pool that still answers, or a new one. One idle for a while — or
    /// any, for a write (`for_write`) — is asked first (an empty query): the server may have
    /// restarted since, and a request should not fail for a connection that was gone before
    /// it came (a read that meets one fails once; a write never starts on one).
    fn client(&self, for_write: bool) -> Result<Client> {
        loop {
            let pooled = self.clients.lock().expect("client pool lock").pop();
            let Some((mut client, idle_since)) = pooled else {
                return self.connect();
            };
            if client.is_closed() {
                continue;
            }
            let trusted = !for_write && idle_since.elapsed() < IDLE_CHECK_AFTER;
            if trusted || client.is_valid(IDLE_CHECK_WAIT).is_ok() {
                return Ok(client);
            }
        }
    }

    /// Closes every idle connection: one was found gone. Call off the async runtime's threads
    /// (see `Drop`).
    fn forget_pool(&self) {
        let clients = std::mem::take(&mut *self.clients.lock().expect("client pool lock"));
        drop(clients);
    }

    /// Gives a connection back to the pool, unless it failed.
    fn put_back(&self, client: Client) {
        let mut pool = self.clients.lock().expect("client pool lock");
        if pool.len() < CLIENTS_KEPT_MAX && !client.is_closed() {
            pool.push((client, Instant::now()));
        }
    }

    /// Runs `f` with a connection of the pool.
    ///
    /// The PostgreSQL client blocks on a runtime of its own, which panics on a thread that
    /// drives async tasks; callers of a store may be on one (SQLite has no such rule), so the
    /// work runs on a scoped thread of its own, which its caller waits for as for SQLite.
    ///
    /// A connection that turns out to be gone (the server restarted, its other connections
    /// with it) empties the pool, and `f` runs once more on a new one: it only reads, or
    /// creates what is missing.
    fn with_client<T: Send>(&self, f: impl Fn(&mut Client) -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let mut client = self.client(false)?;
                    let mut result = f(&mut client);
                    if result.is_err() && client.is_closed() {
                        self.forget_pool();
                        client = self.connect()?;
                        result = f(&mut client);
                    }
                    self.put_back(client);
                    result
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's own runtime, which panics on a thread
        // that drives async tasks (the last handle may drop there): close them on a thread
        // of their own.
        let clients = std::mem::take(self.clients.get_mut().expect("client pool lock"));
        if !clients.is_empty() {
            std::thread::spawn(move || drop(clients));
        }
    }
}

impl Engine for Postgres {
    fn read<T: Send>(&self, f: impl Fn(&mut dyn Sql) -> Result<T> + Send) -> Result<T> {
        self.with_client(move |client| {
            f(&mut Pg {
                db: client,
                schema: &self.schema,
            })
        })
        .map_err(|error| match error {
            Error::Postgres(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                Error::TooLong(self.read_limit.get())
            }
            other => other,
        })
    }

    /// Connections made from now on carry the limit: the idle ones are closed.
    fn limit_reads(&self, most: Duration) {
        self.read_limit.set(most);
        self.forget_pool();
    }

    /// The transaction runs on a thread of its own (see `with_client`) and holds a
    /// transaction-scoped advisory lock on the schema: writes to one instance are serialised
    /// on every node, as SQLite's one writer serialises them. `before_commit` runs on the
    /// caller's thread while the transaction waits for its verdict.
    fn write<T: Send>(
        &self,
        work: impl FnOnce(&mut dyn Sql) -> Result<T> + Send,
        before_commit: impl FnOnce(&T) -> std::result::Result<(), String>,
    ) -> Result<T> {
        let (made_tx, made_rx) = std::sync::mpsc::channel::<Result<T>>();
        let (verdict_tx, verdict_rx) = std::sync::mpsc::channel::<bool>();
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || -> Result<()> {
                let mut client = match self.client(true) {
                    Ok(client) => client,
                    Err(e) => {
                        let _ = made_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let finished = (|| {
                    let mut tx = client.transaction()?;
                    self.unlimited(&mut tx)?;
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        &[&self.schema],
                    )?;
                    let made = work(&mut Pg {
                        db: &mut tx,
                        schema: &self.schema,
                    });
                    let go_on = made.is_ok();
                    let _ = made_tx.send(made);
                    // Dropping the transaction without a commit rolls it back.
                    if go_on && verdict_rx.recv() == Ok(true) {
                        tx.commit()?;
                    }
                    Ok(())
                })();
                self.put_back(client);
                finished
            });
            let outcome = match made_rx.recv() {
                Ok(Ok(value)) => {
                    let verdict = before_commit(&value);
                    let _ = verdict_tx.send(verdict.is_ok());
                    verdict.map(|()| value).map_err(Error::CommitRefused)
                }
                Ok(Err(e)) => Err(e),
                // The worker ended without a word: its own error says why.
                Err(_) => Err(Error::Io("the PostgreSQL worker stopped".into())),
            };
            drop(verdict_tx);
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            outcome
        })
    }

    /// A snapshot in one repeatable-read transaction, written as an SQLite backup file.
    fn backup(&self, to: &Path) -> Result<()> {
        let snapshot = self.with_client(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            self.unlimited(&mut tx)?;
            let snapshot = read_snapshot(&mut Pg {
                db: &mut tx,
                schema: &self.schema,
            })?;
            tx.commit()?;
            Ok(snapshot)
        })?;
        write_backup_file(to, &snapshot)
    }

    /// One transaction replaces everything: readers see the old instance or the restored one,
    /// never a mixture (PostgreSQL's DDL is transactional).
    fn restore(&self, from: &Path) -> Result<()> {
        let snapshot = read_backup_file(from)?;
        self.write(
            |sql| {
                for definition in load_catalog(sql)?.entities() {
                    sql.batch(&format!("DROP TABLE IF EXISTS \"{}\"", definition.table()))?;
                }
                sql.execute("DELETE FROM custos_entity", &[])?;
                write_snapshot(sql, &snapshot)?;
                sql.announce()
            },
            |_| Ok(()),
        )
    }
}

/// [`Postgres::follow`] on the database at `url` (one that holds no schema of this node's
/// directory: an instance placed on another server).
pub(crate) fn follow_url<T: Send + Sync + 'static>(
    url: String,
    channels: &'static [&'static str],
    alive: std::sync::Weak<T>,
    changed: impl Fn(&T, Option<Notice<'_>>) + Send + 'static,
) {
    use postgres::fallible_iterator::FallibleIterator;
    std::thread::spawn(move || {
        loop {
            let listening = tls::connect(&url).and_then(|mut client| {
                for channel in channels {
                    client.batch_execute(&format!("LISTEN {channel}"))?;
                }
                Ok(client)
            });
            let Ok(mut client) = listening else {
                if alive.strong_count() == 0 {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            };
            let Some(target) = alive.upgrade() else {
                return;
            };
            changed(&target, None);
            drop(target);
            loop {
                let mut notifications = client.notifications();
                let next = notifications
                    .timeout_iter(std::time::Duration::from_secs(1))
                    .next();
                match next {
                    Ok(Some(notification)) => match alive.upgrade() {
                        Some(target) => changed(
                            &target,
                            Some(Notice {
                                channel: notification.channel(),
                                payload: notification.payload(),
                            }),
                        ),
                        None => return,
                    },
                    Ok(None) if alive.strong_count() == 0 => return,
                    Ok(None) => {}
                    // The connection broke: listen again on a new one.
                    Err(_) => break,
                }
            }
        }
    });
}

/// Where the database at `url` is, without its password: `postgres://user@host:port/dbname`
/// (what an answer or a log may show of an instance's database); `None` when `url` is not a
/// connection string or URL.
pub fn database_address(url: &str) -> Option<String> {
    let config: postgres::Config = url.parse().ok()?;
    let host = match config.get_hosts().first()? {
        postgres::config::Host::Tcp(host) => host.clone(),
        postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Some(format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    ))
}

#[cfg(test)]
pub(crate) mod tests;
