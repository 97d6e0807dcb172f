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

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient, NoTls, Row};
use uuid::Uuid;

use crate::engine::{Engine, Sql, Store, load_catalog, read_snapshot, record_of, write_snapshot};
use crate::metadata::{AttributeDef, AttributeType, EntityDef, is_logical_name};
use crate::sql::{Dialect, numbered};
use crate::sqlite::{read_backup_file, write_backup_file};
use crate::store::Record;
use crate::value::Value;
use crate::{Error, Result};

/// Connections kept open for reuse.
const CLIENTS_KEPT_MAX: usize = 16;

/// The PostgreSQL engine of one instance's store: its schema in a database.
pub struct Postgres {
    url: String,
    schema: String,
    clients: Mutex<Vec<Client>>,
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
        AttributeType::Integer | AttributeType::Choice => "bigint",
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
        AttributeType::Integer | AttributeType::Choice => row
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
struct Pg<'a, C>(&'a mut C);

impl<C: GenericClient> Pg<'_, C> {
    fn rows(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let bound = params(values);
        Ok(self.0.query(numbered(sql).as_str(), &refs(&bound))?)
    }
}

impl<C: GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        let bound = params(values);
        Ok(self.0.execute(numbered(sql).as_str(), &refs(&bound))?)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.batch_execute(sql)?)
    }

    fn insert(&mut self, sql: &str, values: &[Value]) -> Result<bool> {
        // A savepoint, so that a taken key leaves the transaction usable.
        let mut savepoint = self.0.transaction()?;
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

    fn texts(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Option<String>>>> {
        self.rows(sql, values)?
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| Ok(row.try_get::<_, Option<String>>(i)?))
                    .collect()
            })
            .collect()
    }

    fn records(
        &mut self,
        definition: &EntityDef,
        sql: &str,
        values: &[Value],
    ) -> Result<Vec<Record>> {
        self.rows(sql, values)?
            .iter()
            .map(|row| {
                let values = definition
                    .attributes
                    .iter()
                    .enumerate()
                    .map(|(i, attribute)| from_pg(attribute, row, i))
                    .collect::<Result<Vec<_>>>()?;
                record_of(definition, values)
            })
            .collect()
    }

    fn values(
        &mut self,
        attribute: &AttributeDef,
        sql: &str,
        values: &[Value],
    ) -> Result<Vec<(Uuid, Value)>> {
        self.rows(sql, values)?
            .iter()
            .map(|row| Ok((row.try_get::<_, Uuid>(0)?, from_pg(attribute, row, 1)?)))
            .collect()
    }

    fn count(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        let bound = params(values);
        let total: i64 = self
            .0
            .query_one(numbered(sql).as_str(), &refs(&bound))?
            .try_get(0)?;
        Ok(total as u64)
    }

    fn column_type(&self, attribute: &AttributeDef) -> &'static str {
        column_type(attribute)
    }
}

impl Store<Postgres> {
    /// Opens (creating when missing) the schema `schema` of the database at `url` — a
    /// connection string or URL; the database must exist — as an instance's store. `schema` is
    /// `[a-z_][a-z0-9_]*`.
    pub fn open(url: &str, schema: &str) -> Result<PgStore> {
        if !is_logical_name(schema) || schema.len() > 63 {
            return Err(Error::BadRequest(format!("invalid schema name '{schema}'")));
        }
        let engine = Postgres {
            url: url.to_string(),
            schema: schema.to_string(),
            clients: Mutex::new(Vec::new()),
        };
        engine.with_client(|client| {
            // The extension lives in the public schema, once per database; each instance's
            // schema is its own. Two nodes creating them at once may race: the loser's
            // statement fails and the next attempt finds them.
            let create = format!(
                "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
                 CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 CREATE TABLE IF NOT EXISTS \"{schema}\".custos_entity (
                     logical_name text PRIMARY KEY,
                     published text,
                     draft text NOT NULL
                 )"
            );
            if client.batch_execute(&create).is_err() {
                client.batch_execute(&create)?;
            }
            Ok(())
        })?;
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
                    let mut client = Client::connect(url, NoTls)?;
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))?;
                    Ok(())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Postgres {
    fn connect(&self) -> Result<Client> {
        let mut client = Client::connect(&self.url, NoTls)?;
        client.batch_execute(&format!(
            "SET search_path TO \"{}\", public; SET TIME ZONE 'UTC'",
            self.schema
        ))?;
        Ok(client)
    }

    /// A connection of the pool, or a new one.
    fn client(&self) -> Result<Client> {
        let pooled = self.clients.lock().expect("client pool lock").pop();
        match pooled {
            Some(client) if !client.is_closed() => Ok(client),
            _ => self.connect(),
        }
    }

    /// Gives a connection back to the pool, unless it failed.
    fn put_back(&self, client: Client) {
        let mut pool = self.clients.lock().expect("client pool lock");
        if pool.len() < CLIENTS_KEPT_MAX && !client.is_closed() {
            pool.push(client);
        }
    }

    /// Runs `f` with a connection of the pool.
    ///
    /// The PostgreSQL client blocks on a runtime of its own, which panics on a thread that
    /// drives async tasks; callers of a store may be on one (SQLite has no such rule), so the
    /// work runs on a scoped thread of its own, which its caller waits for as for SQLite.
    fn with_client<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = self.client()?;
                    let result = f(&mut client);
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
    fn read<T: Send>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T> + Send) -> Result<T> {
        self.with_client(|client| f(&mut Pg(client)))
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
                let mut client = match self.client() {
                    Ok(client) => client,
                    Err(e) => {
                        let _ = made_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let finished = (|| {
                    let mut tx = client.transaction()?;
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                        &[&self.schema],
                    )?;
                    let made = work(&mut Pg(&mut tx));
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
            let snapshot = read_snapshot(&mut Pg(&mut tx))?;
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
                write_snapshot(sql, &snapshot)
            },
            |_| Ok(()),
        )
    }
}

#[cfg(test)]
mod tests;
