//! The tenant directory: tenants, instances, principals (users and application users, with
//! their credential hashes), role assignments, team members and settings — in the control
//! database `control.db` (SQLite), or for a cluster node in the schema `custos_directory` of
//! its PostgreSQL database, through the same engines as the record store (`engine.rs`).
//!
//! Principals are tenant-wide identities, like Entra ID accounts; each instance projects them as
//! `systemuser` records with the same id. Lookups on the request path come from an in-memory
//! copy that writes go through. On PostgreSQL every write also notifies the channel
//! `custos_directory` in its transaction, and every node reloads its copy when one commits, so a
//! change made on one node (a user disabled, a role taken away) holds on all of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::engine::{Engine, Sql};
use crate::metadata::{AttributeDef, AttributeType};
use crate::pg::Postgres;
use crate::sql::Dialect;
use crate::sqlite::Sqlite;
use crate::value::Value;
use crate::{Error, Result};

/// An identity that can sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Id; also the `systemuserid` in every instance.
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// User principal name (sign-in name), unique ignoring case.
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Microsoft 365 user type code (0 regular, 2 admin, 3 support, 5 application…).
    pub user_type: u8,
    /// PHC string of the password hash, for users.
    pub password_hash: Option<String>,
    /// Client id, for application users.
    pub client_id: Option<String>,
    /// PHC string of the client secret hash, for application users.
    pub secret_hash: Option<String>,
    /// Tenant global administrator.
    pub global_admin: bool,
    /// Disabled principals cannot sign in, and their tokens are refused.
    pub disabled: bool,
    /// Who created it, when a support engineer did (what they made goes with them).
    pub created_by: Option<Uuid>,
    /// Bumped when the principal's sessions must end (password change or reset, disabling):
    /// a token carries the generation it was issued in and is refused once it changes.
    pub token_generation: u32,
}

/// A principal to add.
#[derive(Debug, Clone)]
pub struct NewPrincipal {
    /// Id to give it.
    pub id: Uuid,
    /// User principal name.
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Microsoft 365 user type code.
    pub user_type: u8,
    /// Password hash (users).
    pub password_hash: Option<String>,
    /// Client id (application users).
    pub client_id: Option<String>,
    /// Client secret hash (application users).
    pub secret_hash: Option<String>,
    /// Tenant global administrator.
    pub global_admin: bool,
    /// The support engineer who creates it, if one does.
    pub created_by: Option<Uuid>,
}

/// An instance of the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Unique name (`main`), also the first segment of its URLs.
    pub name: String,
    /// `trial` or `paid`.
    pub state: String,
    /// Id of its `organization` record.
    pub organization_id: Uuid,
    /// The PostgreSQL database holding its records when it is not the node's own
    /// (`--postgres`): an instance is the unit of sharding, as a Dataverse environment is.
    pub database: Option<String>,
}

struct Cache {
    principals: HashMap<Uuid, Principal>,
    /// Roles held, by (principal or team, instance).
    roles: HashMap<(Uuid, String), Vec<Uuid>>,
    /// Teams a principal belongs to, by (principal, instance).
    teams: HashMap<(Uuid, String), Vec<Uuid>>,
}

/// Where a directory is kept.
enum Db {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl Db {
    fn read<T: Send>(&self, f: impl Fn(&mut dyn Sql) -> Result<T> + Send) -> Result<T> {
        match self {
            Db::Sqlite(engine) => engine.read(f),
            Db::Postgres(engine) => engine.read(f),
        }
    }

    /// Runs `f` in a write transaction that tells no other node: for what no node keeps in
    /// memory (the shared counters), read where it is needed.
    fn write_quiet<T: Send>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T> + Send) -> Result<T> {
        match self {
            Db::Sqlite(engine) => engine.write(f, |_| Ok(())),
            Db::Postgres(engine) => engine.write(f, |_| Ok(())),
        }
    }

    /// Runs `f` in a write transaction which, on PostgreSQL, tells every node what changed
    /// when it commits: `payload` is empty for what the copy in memory holds (it is reloaded),
    /// `setting:<key>` for a setting.
    fn write<T: Send>(
        &self,
        payload: &str,
        f: impl FnOnce(&mut dyn Sql) -> Result<T> + Send,
    ) -> Result<T> {
        let notified = |sql: &mut dyn Sql| {
            let value = f(sql)?;
            if sql.dialect() == Dialect::Postgres {
                sql.execute("SELECT pg_notify(?, ?)", &[text(CHANNEL), text(payload)])?;
            }
            Ok(value)
        };
        match self {
            Db::Sqlite(engine) => engine.write(notified, |_| Ok(())),
            Db::Postgres(engine) => engine.write(notified, |_| Ok(())),
        }
    }
}

/// Which engine a directory is on.
enum DbKind {
    Sqlite,
    Postgres,
}

/// The PostgreSQL session lock every node serving the database holds: shared by cluster nodes,
/// alone by a node that is not one.
const NODES_LOCK: &str = "custos: the nodes that serve this database";

/// How long a starting node waits for the database claim before it is refused.
const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The PostgreSQL session lock the node that runs the log's followers holds.
const FOLLOWERS_LOCK: &str = "custos: the node that runs the followers of the log";

/// The PostgreSQL channel a directory write notifies.
const CHANNEL: &str = "custos_directory";

/// The payload prefix of a notification that a setting changed.
const SETTING: &str = "setting:";

/// The PostgreSQL schema of the directory.
const PG_SCHEMA: &str = "custos_directory";

/// What another node changed, as a [`Directory::subscribe`]r hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The directory (already reloaded when this is heard): instances, principals, roles,
    /// settings.
    Directory,
    /// What the record store in this PostgreSQL schema keeps in memory: its published
    /// metadata, or records of an entity it watches.
    Store(&'a str),
    /// The tenant setting of this key.
    Setting(&'a str),
    /// Anything: the node was not listening for a while.
    Anything,
}

/// A subscriber to other nodes' changes.
type Subscriber = Box<dyn Fn(Change<'_>) + Send + Sync>;

struct Shared {
    db: Db,
    cache: RwLock<Cache>,
    tenant_id: Uuid,
    subscribers: RwLock<Vec<Subscriber>>,
    /// Whether this node runs the log's followers (see [`Directory::leads`]).
    leading: std::sync::atomic::AtomicBool,
    /// The other PostgreSQL databases whose instances' changes this node follows.
    followed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// This node's claim on the database (see [`Directory::claim_database`]), held while it
    /// is kept.
    claim: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl Shared {
    /// Reloads the copy in memory, then tells the subscribers.
    fn heard(&self, notice: Option<crate::pg::Notice<'_>>) {
        let change = match notice {
            Some(notice) if notice.channel == crate::pg::STORE_CHANNEL => {
                Change::Store(notice.payload)
            }
            Some(notice) => match notice.payload.strip_prefix(SETTING) {
                Some(key) => Change::Setting(key),
                None => Change::Directory,
            },
            None => Change::Anything,
        };
        if matches!(change, Change::Directory | Change::Anything) {
            match self.db.read(|sql| load_cache(sql, self.tenant_id)) {
                Ok(cache) => *self.cache.write().expect("directory cache") = cache,
                Err(error) => {
                    tracing::warn!(%error, "the directory could not be reloaded; it is reloaded again when the next change or connection comes");
                    return;
                }
            }
        }
        for subscriber in self.subscribers.read().expect("subscribers").iter() {
            subscriber(change);
        }
    }
}

/// The directory of one tenant.
#[derive(Clone)]
pub struct Directory(Arc<Shared>);

const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS tenant (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instance (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, organization_id TEXT NOT NULL, database TEXT);
CREATE TABLE IF NOT EXISTS principal (
    id TEXT PRIMARY KEY, upn TEXT NOT NULL UNIQUE COLLATE NOCASE, display_name TEXT NOT NULL,
    user_type INTEGER NOT NULL, password_hash TEXT, client_id TEXT UNIQUE, secret_hash TEXT,
    global_admin INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS setting (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS role_assignment (
    principal_id TEXT NOT NULL, instance TEXT NOT NULL, role_id TEXT NOT NULL,
    PRIMARY KEY (principal_id, instance, role_id));
CREATE TABLE IF NOT EXISTS team_member (
    instance TEXT NOT NULL, team_id TEXT NOT NULL, principal_id TEXT NOT NULL,
    PRIMARY KEY (instance, team_id, principal_id));
CREATE TABLE IF NOT EXISTS counter (
    key TEXT PRIMARY KEY, a INTEGER NOT NULL, b INTEGER NOT NULL, c INTEGER NOT NULL,
    d INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS file (
    area TEXT NOT NULL, name TEXT NOT NULL, part INTEGER NOT NULL, body TEXT NOT NULL,
    modified INTEGER NOT NULL, PRIMARY KEY (area, name, part));
";

/// The same tables on PostgreSQL (made whole at once: no older versions to upgrade).
const PG_TABLES: &str = "
CREATE TABLE IF NOT EXISTS tenant (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS instance (
    name text PRIMARY KEY, state text NOT NULL, organization_id text NOT NULL, database text);
CREATE TABLE IF NOT EXISTS principal (
    id text PRIMARY KEY, upn citext NOT NULL UNIQUE, display_name text NOT NULL,
    user_type bigint NOT NULL, password_hash text, client_id text UNIQUE, secret_hash text,
    global_admin bigint NOT NULL, disabled bigint NOT NULL DEFAULT 0, created_by text,
    token_generation bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS setting (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS role_assignment (
    principal_id text NOT NULL, instance text NOT NULL, role_id text NOT NULL,
    PRIMARY KEY (principal_id, instance, role_id));
CREATE TABLE IF NOT EXISTS team_member (
    instance text NOT NULL, team_id text NOT NULL, principal_id text NOT NULL,
    PRIMARY KEY (instance, team_id, principal_id));
CREATE TABLE IF NOT EXISTS counter (
    key text PRIMARY KEY, a bigint NOT NULL, b bigint NOT NULL, c bigint NOT NULL,
    d bigint NOT NULL);
CREATE TABLE IF NOT EXISTS file (
    area text NOT NULL, name text NOT NULL, part bigint NOT NULL, body text NOT NULL,
    modified bigint NOT NULL, PRIMARY KEY (area, name, part));
";

/// Columns added to tables after their first version, added to an older control database
/// when it opens: (table, column, type).
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("principal", "created_by", "TEXT"),
    (
        "principal",
        "token_generation",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    ("instance", "database", "TEXT"),
];

fn add_missing_columns(sql: &mut dyn Sql) -> Result<()> {
    for (table, name, kind) in ADDED_COLUMNS {
        let present = sql.texts(
            &format!("SELECT name FROM pragma_table_info('{table}')"),
            &[],
            1,
        )?;
        if !present.iter().any(|row| row[0].as_deref() == Some(name)) {
            sql.batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

fn text(value: impl ToString) -> Value {
    Value::String(value.to_string())
}

fn optional_text(value: Option<impl ToString>) -> Value {
    value.map_or(Value::Null, text)
}

fn flag(value: bool) -> Value {
    Value::Integer(i64::from(value))
}

/// The shared counter `key`, if set.
fn read_counter(sql: &mut dyn Sql, key: &str) -> Result<Option<[i64; 4]>> {
    let columns = ["a", "b", "c", "d"].map(|name| AttributeDef::new(name, AttributeType::Integer));
    let rows = sql.rows(
        "SELECT a, b, c, d FROM counter WHERE key = ?",
        &[text(key)],
        &columns,
    )?;
    Ok(rows.into_iter().next().map(|row| {
        let mut values = [0; 4];
        for (value, cell) in values.iter_mut().zip(row) {
            if let Value::Integer(n) = cell {
                *value = n;
            }
        }
        values
    }))
}

fn parse_uuid(value: Option<String>) -> Result<Uuid> {
    value
        .as_deref()
        .and_then(|text| Uuid::parse_str(text).ok())
        .ok_or_else(|| Error::Corrupted("the directory holds an id that is not a GUID".into()))
}

/// Runs an `INSERT`, a taken key being the conflict `message`.
fn insert(sql: &mut dyn Sql, statement: &str, params: &[Value], message: String) -> Result<()> {
    if sql.insert(statement, params)? {
        Ok(())
    } else {
        Err(Error::Conflict(message))
    }
}

impl Directory {
    /// Opens the control database at `path`, creating tenant `tenant_name` when it is new;
    /// returns it and whether it was created now (the first run).
    pub fn open(path: &Path, tenant_name: &str) -> Result<(Directory, bool)> {
        let engine = Sqlite::open(path, SQLITE_TABLES)?;
        engine.write(
            |sql| {
                add_missing_columns(sql)?;
                crate::engine::once(
                    sql,
                    crate::engine::CASELESS_INDEXES,
                    crate::engine::caseless_indexes,
                )
            },
            |_| Ok(()),
        )?;
        Directory::over(Db::Sqlite(engine), tenant_name)
    }

    /// Opens the directory in the PostgreSQL database at `url` (schema `custos_directory`),
    /// creating tenant `tenant_name` when it is new — one tenant per database; returns it and
    /// whether it was created now. Its copy in memory follows every node's writes.
    pub fn open_postgres(url: &str, tenant_name: &str) -> Result<(Directory, bool)> {
        let engine = Postgres::open(url, PG_SCHEMA, PG_TABLES)?;
        let (directory, created) = Directory::over(Db::Postgres(engine), tenant_name)?;
        if let Db::Postgres(engine) = &directory.0.db {
            engine.follow(
                &[CHANNEL, crate::pg::STORE_CHANNEL],
                Arc::downgrade(&directory.0),
                |shared: &Shared, notice| shared.heard(notice),
            );
            engine.lead(
                FOLLOWERS_LOCK,
                Arc::downgrade(&directory.0),
                |shared: &Shared, held| {
                    let was = shared
                        .leading
                        .swap(held, std::sync::atomic::Ordering::AcqRel);
                    if was != held {
                        if held {
                            tracing::info!("this node now runs the followers of the log");
                        } else {
                            tracing::warn!("this node no longer runs the followers of the log");
                        }
                    }
                },
            );
        }
        Ok((directory, created))
    }

    fn over(db: Db, tenant_name: &str) -> Result<(Directory, bool)> {
        let db_kind = match db {
            Db::Sqlite(_) => DbKind::Sqlite,
            Db::Postgres(_) => DbKind::Postgres,
        };
        // One transaction (on PostgreSQL under the schema's lock): of two nodes starting at
        // once, one creates the tenant and the other finds it.
        let (tenant_id, created) = db.write("", |sql| {
            let existing = sql.texts("SELECT id FROM tenant", &[], 1)?.pop();
            match existing {
                Some(row) => Ok((parse_uuid(row.into_iter().next().flatten())?, false)),
                None => {
                    let id = Uuid::new_v4();
                    sql.execute(
                        "INSERT INTO tenant (id, name) VALUES (?, ?)",
                        &[text(id), text(tenant_name)],
                    )?;
                    Ok((id, true))
                }
            }
        })?;
        let cache = db.read(|sql| load_cache(sql, tenant_id))?;
        Ok((
            Directory(Arc::new(Shared {
                db,
                cache: RwLock::new(cache),
                tenant_id,
                subscribers: RwLock::new(Vec::new()),
                // One node on SQLite; on PostgreSQL the lock decides.
                leading: std::sync::atomic::AtomicBool::new(matches!(db_kind, DbKind::Sqlite)),
                followed: std::sync::Mutex::default(),
                claim: std::sync::Mutex::default(),
            })),
            created,
        ))
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.0.cache.read().expect("directory cache")
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.0.cache.write().expect("directory cache")
    }

    /// Calls `subscriber` whenever another node changes something this node keeps in memory
    /// (on its own thread; never on SQLite, which has one node).
    pub fn subscribe(&self, subscriber: impl Fn(Change<'_>) + Send + Sync + 'static) {
        self.0
            .subscribers
            .write()
            .expect("subscribers")
            .push(Box::new(subscriber));
    }

    /// Claims the PostgreSQL database for this node for as long as the directory is open:
    /// `alone` for a node that keeps an audit log of its own (no cluster), refused while any
    /// other node serves the database; shared for a cluster node, refused while a node serves
    /// it alone. So several nodes on one database are all cluster nodes, which share one log.
    /// Waits up to `CLAIM_PATIENCE` for a claim held by a node that just died. Nothing on
    /// SQLite.
    pub fn claim_database(&self, alone: bool) -> Result<()> {
        let Db::Postgres(engine) = &self.0.db else {
            return Ok(());
        };
        // A node restarted right after it was killed may find its old session not yet gone:
        // PostgreSQL frees the lock once it sees the connection closed, within moments.
        let deadline = std::time::Instant::now() + CLAIM_PATIENCE;
        let mut claimed = engine.claim(NODES_LOCK, alone)?;
        while claimed.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(250));
            claimed = engine.claim(NODES_LOCK, alone)?;
        }
        match claimed {
            Some(held) => {
                *self.0.claim.lock().expect("claim lock") = Some(held);
                Ok(())
            }
            None if alone => Err(Error::Conflict(
                "another node serves this PostgreSQL database: several nodes on one database must all be cluster nodes (--nats … --node-id), which share one audit log (docs/scale-out.md)".into(),
            )),
            None => Err(Error::Conflict(
                "a node that is not a cluster node (no --nats) serves this PostgreSQL database with an audit log of its own: stop it, or restart it as a cluster node (docs/scale-out.md)".into(),
            )),
        }
    }

    /// Whether the directory is shared with other nodes (on PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.0.db, Db::Postgres(_))
    }

    /// The shared counters `keys` (four numbers each, their meaning the caller's: the sign-in
    /// lock-outs of every node), `None` for one never set; in the order asked.
    pub fn counters(&self, keys: &[&str]) -> Result<Vec<Option<[i64; 4]>>> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.0.db.read(|sql| read_counter(sql, key))?);
        }
        Ok(found)
    }

    /// Changes the shared counter `key` in one transaction (`change` gets what it holds, and
    /// returns what it is to hold, or `None` to remove it); tells no other node.
    pub fn update_counter(
        &self,
        key: &str,
        change: impl FnOnce(Option<[i64; 4]>) -> Option<[i64; 4]> + Send,
    ) -> Result<()> {
        self.0.db.write_quiet(|sql| {
            let held = read_counter(sql, key)?;
            sql.execute("DELETE FROM counter WHERE key = ?", &[text(key)])?;
            if let Some([a, b, c, d]) = change(held) {
                sql.execute(
                    "INSERT INTO counter (key, a, b, c, d) VALUES (?, ?, ?, ?, ?)",
                    &[
                        text(key),
                        Value::Integer(a),
                        Value::Integer(b),
                        Value::Integer(c),
                        Value::Integer(d),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Removes the shared counters whose second number is below `b` and fourth below `d`
    /// (for the sign-in lock-outs: the window began before `b` and the lock-out ended before
    /// `d`, so the counter no longer matters).
    pub fn prune_counters(&self, b: i64, d: i64) -> Result<u64> {
        self.0.db.write_quiet(|sql| {
            sql.execute(
                "DELETE FROM counter WHERE b < ? AND d < ?",
                &[Value::Integer(b), Value::Integer(d)],
            )
        })
    }

    /// Writes part `part` of the shared file `name` of `area` (text: the caller encodes), at
    /// `modified` (seconds); tells no other node.
    pub fn put_file_part(
        &self,
        area: &str,
        name: &str,
        part: i64,
        body: &str,
        modified: i64,
    ) -> Result<()> {
        self.0.db.write_quiet(|sql| {
            sql.execute(
                "DELETE FROM file WHERE area = ? AND name = ? AND part = ?",
                &[text(area), text(name), Value::Integer(part)],
            )?;
            sql.execute(
                "INSERT INTO file (area, name, part, body, modified) VALUES (?, ?, ?, ?, ?)",
                &[
                    text(area),
                    text(name),
                    Value::Integer(part),
                    text(body),
                    Value::Integer(modified),
                ],
            )?;
            Ok(())
        })
    }

    /// Part `part` of the shared file `name` of `area`, if there is one.
    pub fn file_part(&self, area: &str, name: &str, part: i64) -> Result<Option<String>> {
        let rows = self.0.db.read(|sql| {
            sql.texts(
                "SELECT body FROM file WHERE area = ? AND name = ? AND part = ?",
                &[text(area), text(name), Value::Integer(part)],
                1,
            )
        })?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten()))
    }

    /// Renames the shared file `from` of `area` to `to` in one transaction, replacing any file
    /// of that name: a file written part by part appears whole or not at all.
    pub fn rename_file(&self, area: &str, from: &str, to: &str) -> Result<()> {
        self.0.db.write_quiet(|sql| {
            sql.execute(
                "DELETE FROM file WHERE area = ? AND name = ?",
                &[text(area), text(to)],
            )?;
            sql.execute(
                "UPDATE file SET name = ? WHERE area = ? AND name = ?",
                &[text(to), text(area), text(from)],
            )?;
            Ok(())
        })
    }

    /// The names of the whole shared files of `area` (not those still being written).
    pub fn file_names(&self, area: &str) -> Result<Vec<String>> {
        let rows = self.0.db.read(|sql| {
            sql.texts(
                "SELECT DISTINCT name FROM file WHERE area = ? AND name NOT LIKE '%.part' ORDER BY name",
                &[text(area)],
                1,
            )
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect())
    }

    /// Removes the shared file `name` of `area`.
    pub fn remove_file(&self, area: &str, name: &str) -> Result<()> {
        self.0.db.write_quiet(|sql| {
            sql.execute(
                "DELETE FROM file WHERE area = ? AND name = ?",
                &[text(area), text(name)],
            )?;
            Ok(())
        })
    }

    /// Removes the shared files of `area` last written before `before` (seconds) whose name
    /// ends with `suffix` (every one for an empty suffix); how many parts went.
    pub fn remove_files_before(&self, area: &str, suffix: &str, before: i64) -> Result<u64> {
        self.0.db.write_quiet(|sql| {
            sql.execute(
                "DELETE FROM file WHERE area = ? AND name LIKE ? AND modified < ?",
                &[
                    text(area),
                    text(format!("%{suffix}")),
                    Value::Integer(before),
                ],
            )
        })
    }

    /// Follows the instances' changes announced in the PostgreSQL database at `url`, one that
    /// holds instances placed on another server ([`InstanceInfo::database`]): the subscribers
    /// hear them as they hear those of the directory's own database. Once per database; nothing
    /// on SQLite.
    pub fn follow_database(&self, url: &str) {
        if !matches!(self.0.db, Db::Postgres(_)) {
            return;
        }
        if !self
            .0
            .followed
            .lock()
            .expect("followed databases")
            .insert(url.to_string())
        {
            return;
        }
        crate::pg::follow_url(
            url.to_string(),
            &[crate::pg::STORE_CHANNEL],
            Arc::downgrade(&self.0),
            |shared: &Shared, notice| shared.heard(notice),
        );
    }

    /// Whether this node runs the followers of the log — alerts, streams to SIEMs, the activity
    /// feed, webhooks, scheduled reports, retention — so that they run once however many nodes
    /// serve: always on SQLite (one node); on PostgreSQL while this node holds the database's
    /// followers lock, which another node takes within about a second of this one's loss.
    pub fn leads(&self) -> bool {
        self.0.leading.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> Uuid {
        self.0.tenant_id
    }

    /// Records a new instance.
    pub fn add_instance(&self, instance: &InstanceInfo) -> Result<()> {
        self.0.db.write("", |sql| {
            insert(
                sql,
                "INSERT INTO instance (name, state, organization_id, database) VALUES (?, ?, ?, ?)",
                &[
                    text(&instance.name),
                    text(&instance.state),
                    text(instance.organization_id),
                    optional_text(instance.database.as_ref()),
                ],
                format!("instance '{}' already exists", instance.name),
            )
        })
    }

    /// Changes an instance's state (`trial` → `paid`); false when there is no such instance.
    pub fn set_instance_state(&self, name: &str, state: &str) -> Result<bool> {
        let changed = self.0.db.write("", |sql| {
            sql.execute(
                "UPDATE instance SET state = ? WHERE name = ?",
                &[text(state), text(name)],
            )
        })?;
        Ok(changed == 1)
    }

    /// Forgets an instance and every role held in it; false when there is no such instance.
    pub fn remove_instance(&self, name: &str) -> Result<bool> {
        let removed = self.0.db.write("", |sql| {
            let removed = sql.execute("DELETE FROM instance WHERE name = ?", &[text(name)])?;
            sql.execute(
                "DELETE FROM role_assignment WHERE instance = ?",
                &[text(name)],
            )?;
            sql.execute("DELETE FROM team_member WHERE instance = ?", &[text(name)])?;
            Ok(removed)
        })?;
        let mut cache = self.cache_mut();
        cache.roles.retain(|(_, instance), _| instance != name);
        cache.teams.retain(|(_, instance), _| instance != name);
        Ok(removed == 1)
    }

    /// Every instance, by name.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>> {
        let rows = self.0.db.read(|sql| {
            sql.texts(
                "SELECT name, state, organization_id, database FROM instance ORDER BY name",
                &[],
                4,
            )
        })?;
        rows.into_iter()
            .map(|row| {
                let [name, state, organization_id, database] = <[Option<String>; 4]>::try_from(row)
                    .map_err(|_| Error::Corrupted("instance row".into()))?;
                Ok(InstanceInfo {
                    name: name.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                    organization_id: parse_uuid(organization_id)?,
                    database,
                })
            })
            .collect()
    }

    /// Adds a principal; a taken UPN or client id is a conflict.
    pub fn add_principal(&self, new: NewPrincipal) -> Result<Principal> {
        let principal = Principal {
            id: new.id,
            tenant_id: self.0.tenant_id,
            upn: new.upn,
            display_name: new.display_name,
            user_type: new.user_type,
            password_hash: new.password_hash,
            client_id: new.client_id,
            secret_hash: new.secret_hash,
            global_admin: new.global_admin,
            disabled: false,
            created_by: new.created_by,
            token_generation: 0,
        };
        self.0.db.write("", |sql| {
            insert(
                sql,
                "INSERT INTO principal (id, upn, display_name, user_type, password_hash, client_id, secret_hash, global_admin, created_by)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    text(principal.id),
                    text(&principal.upn),
                    text(&principal.display_name),
                    Value::Integer(i64::from(principal.user_type)),
                    optional_text(principal.password_hash.as_ref()),
                    optional_text(principal.client_id.as_ref()),
                    optional_text(principal.secret_hash.as_ref()),
                    flag(principal.global_admin),
                    optional_text(principal.created_by),
                ],
                format!(
                    "a user named '{}' (or with that id or client id) already exists",
                    principal.upn
                ),
            )
        })?;
        self.cache_mut()
            .principals
            .insert(principal.id, principal.clone());
        Ok(principal)
    }

    /// A principal by id.
    pub fn principal(&self, id: Uuid) -> Option<Principal> {
        self.cache().principals.get(&id).cloned()
    }

    /// Disables or enables a principal's sign-in; disabling also ends every session. False
    /// when there is no such principal.
    pub fn set_disabled(&self, id: Uuid, disabled: bool) -> Result<bool> {
        self.change_principal(
            id,
            "disabled = ?, token_generation = token_generation + ?",
            vec![flag(disabled), flag(disabled)],
            |principal| {
                principal.disabled = disabled;
                if disabled {
                    principal.token_generation += 1;
                }
            },
        )
    }

    /// Sets a user's password hash and ends every session of theirs; false when there is no
    /// such principal.
    pub fn set_password(&self, id: Uuid, password_hash: &str) -> Result<bool> {
        self.change_principal(
            id,
            "password_hash = ?, token_generation = token_generation + 1",
            vec![text(password_hash)],
            |principal| {
                principal.password_hash = Some(password_hash.to_string());
                principal.token_generation += 1;
            },
        )
    }

    /// Updates one principal row (`assignments` take `params`, then the id) and then its
    /// cached copy the same way.
    fn change_principal(
        &self,
        id: Uuid,
        assignments: &str,
        mut params: Vec<Value>,
        apply: impl FnOnce(&mut Principal),
    ) -> Result<bool> {
        params.push(text(id));
        let changed = self.0.db.write("", |sql| {
            sql.execute(
                &format!("UPDATE principal SET {assignments} WHERE id = ?"),
                &params,
            )
        })?;
        if changed == 1
            && let Some(principal) = self.cache_mut().principals.get_mut(&id)
        {
            apply(principal);
        }
        Ok(changed == 1)
    }

    /// Deletes a principal with every role and team membership it holds; its tokens are
    /// refused from now on. False when there is no such principal.
    pub fn remove_principal(&self, id: Uuid) -> Result<bool> {
        let removed = self.0.db.write("", |sql| {
            let removed = sql.execute("DELETE FROM principal WHERE id = ?", &[text(id)])?;
            sql.execute(
                "DELETE FROM role_assignment WHERE principal_id = ?",
                &[text(id)],
            )?;
            sql.execute(
                "DELETE FROM team_member WHERE principal_id = ?",
                &[text(id)],
            )?;
            Ok(removed)
        })?;
        let mut cache = self.cache_mut();
        cache.principals.remove(&id);
        cache.roles.retain(|(holder, _), _| *holder != id);
        cache.teams.retain(|(member, _), _| *member != id);
        Ok(removed == 1)
    }

    /// The principals a support engineer created.
    pub fn created_by(&self, engineer: Uuid) -> Vec<Principal> {
        let mut out: Vec<Principal> = self
            .cache()
            .principals
            .values()
            .filter(|p| p.created_by == Some(engineer))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.upn.cmp(&b.upn));
        out
    }

    /// Every instance in which `principal` holds a role directly or through a team.
    pub fn instances_with_roles(&self, principal: Uuid) -> Vec<String> {
        let cache = self.cache();
        let mut out: Vec<String> = cache
            .roles
            .iter()
            .filter(|((holder, _), roles)| *holder == principal && !roles.is_empty())
            .map(|((_, instance), _)| instance.clone())
            .chain(
                cache
                    .teams
                    .iter()
                    .filter(|((member, _), teams)| *member == principal && !teams.is_empty())
                    .map(|((_, instance), _)| instance.clone()),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every principal, by sign-in name.
    pub fn principals(&self) -> Vec<Principal> {
        let mut out: Vec<Principal> = self.cache().principals.values().cloned().collect();
        out.sort_by(|a, b| a.upn.cmp(&b.upn));
        out
    }

    /// A principal by user principal name, ignoring case — of letters beyond ASCII too, as the
    /// control database's unique index compares them (no two names share a lower-cased
    /// skeleton, so at most one is found).
    pub fn by_upn(&self, upn: &str) -> Option<Principal> {
        self.cache()
            .principals
            .values()
            .find(|p| crate::caseless::same_without_case(&p.upn, upn))
            .cloned()
    }

    /// An application user by client id.
    pub fn by_client_id(&self, client_id: &str) -> Option<Principal> {
        self.cache()
            .principals
            .values()
            .find(|p| p.client_id.as_deref() == Some(client_id))
            .cloned()
    }

    /// Gives `principal` the role `role_id` in `instance`; returns false when it already had it.
    pub fn assign_role(&self, principal: Uuid, instance: &str, role_id: Uuid) -> Result<bool> {
        let added = self.0.db.write("", |sql| {
            sql.execute(
                "INSERT INTO role_assignment (principal_id, instance, role_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                &[text(principal), text(instance), text(role_id)],
            )
        })?;
        if added > 0 {
            self.cache_mut()
                .roles
                .entry((principal, instance.to_string()))
                .or_default()
                .push(role_id);
        }
        Ok(added > 0)
    }

    /// Takes role `role_id` in `instance` from `principal` (a user or a team); returns false
    /// when it did not hold it.
    pub fn unassign_role(&self, principal: Uuid, instance: &str, role_id: Uuid) -> Result<bool> {
        let removed = self.0.db.write("", |sql| {
            sql.execute(
                "DELETE FROM role_assignment WHERE principal_id = ? AND instance = ? AND role_id = ?",
                &[text(principal), text(instance), text(role_id)],
            )
        })?;
        if removed > 0
            && let Some(held) = self
                .cache_mut()
                .roles
                .get_mut(&(principal, instance.to_string()))
        {
            held.retain(|r| *r != role_id);
        }
        Ok(removed > 0)
    }

    /// The roles `principal` (a user or a team) holds in `instance` directly.
    pub fn roles(&self, principal: Uuid, instance: &str) -> Vec<Uuid> {
        self.cache()
            .roles
            .get(&(principal, instance.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The roles a user holds in `instance`: their own and those of every team they are in.
    pub fn effective_roles(&self, principal: Uuid, instance: &str) -> Vec<Uuid> {
        let cache = self.cache();
        let key = (principal, instance.to_string());
        let mut out: Vec<Uuid> = cache.roles.get(&key).cloned().unwrap_or_default();
        for team in cache.teams.get(&key).into_iter().flatten() {
            for role in cache
                .roles
                .get(&(*team, instance.to_string()))
                .into_iter()
                .flatten()
            {
                if !out.contains(role) {
                    out.push(*role);
                }
            }
        }
        out
    }

    /// Adds `principal` to team `team` of `instance`; returns false when already a member.
    pub fn add_team_member(&self, instance: &str, team: Uuid, principal: Uuid) -> Result<bool> {
        let added = self.0.db.write("", |sql| {
            sql.execute(
                "INSERT INTO team_member (instance, team_id, principal_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                &[text(instance), text(team), text(principal)],
            )
        })?;
        if added > 0 {
            self.cache_mut()
                .teams
                .entry((principal, instance.to_string()))
                .or_default()
                .push(team);
        }
        Ok(added > 0)
    }

    /// Removes `principal` from team `team`; returns false when not a member.
    pub fn remove_team_member(&self, instance: &str, team: Uuid, principal: Uuid) -> Result<bool> {
        let removed = self.0.db.write("", |sql| {
            sql.execute(
                "DELETE FROM team_member WHERE instance = ? AND team_id = ? AND principal_id = ?",
                &[text(instance), text(team), text(principal)],
            )
        })?;
        if removed > 0
            && let Some(teams) = self
                .cache_mut()
                .teams
                .get_mut(&(principal, instance.to_string()))
        {
            teams.retain(|t| *t != team);
        }
        Ok(removed > 0)
    }

    /// The members of team `team` of `instance`.
    pub fn team_members(&self, instance: &str, team: Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self
            .cache()
            .teams
            .iter()
            .filter(|((_, i), teams)| i == instance && teams.contains(&team))
            .map(|((principal, _), _)| *principal)
            .collect();
        out.sort();
        out
    }

    /// A tenant setting's stored text.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        let mut rows = self
            .0
            .db
            .read(|sql| sql.texts("SELECT value FROM setting WHERE key = ?", &[text(key)], 1))?;
        Ok(rows.pop().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Stores a tenant setting (durably: `synchronous=FULL`, or PostgreSQL's commit).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.0.db.write(&format!("{SETTING}{key}"), |sql| {
            sql.execute(
                "INSERT INTO setting (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[text(key), text(value)],
            )
        })?;
        Ok(())
    }

    /// A setting made once, by whichever node asks first (`init` gives its value): one
    /// transaction reads it and, when it is missing, stores it.
    pub fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String + Send,
    ) -> Result<String> {
        self.0.db.write(&format!("{SETTING}{key}"), |sql| {
            let stored = sql
                .texts("SELECT value FROM setting WHERE key = ?", &[text(key)], 1)?
                .pop()
                .and_then(|row| row.into_iter().next().flatten());
            if let Some(value) = stored {
                return Ok(value);
            }
            let value = init();
            sql.execute(
                "INSERT INTO setting (key, value) VALUES (?, ?)",
                &[text(key), text(&value)],
            )?;
            Ok(value)
        })
    }

    /// Removes a tenant setting (nothing when there is none).
    pub fn remove_setting(&self, key: &str) -> Result<()> {
        self.0.db.write(&format!("{SETTING}{key}"), |sql| {
            sql.execute("DELETE FROM setting WHERE key = ?", &[text(key)])
        })?;
        Ok(())
    }

    /// Whether `principal` holds `role_id` in any instance.
    pub fn has_role_anywhere(&self, principal: Uuid, role_id: Uuid) -> bool {
        self.cache()
            .roles
            .iter()
            .any(|((p, _), roles)| *p == principal && roles.contains(&role_id))
    }
}

fn load_cache(sql: &mut dyn Sql, tenant_id: Uuid) -> Result<Cache> {
    let column = |name: &str, attribute_type| AttributeDef::new(name, attribute_type);
    let string = || AttributeType::Memo;
    let columns = [
        column("id", string()),
        column("upn", string()),
        column("display_name", string()),
        column("user_type", AttributeType::Integer),
        column("password_hash", string()),
        column("client_id", string()),
        column("secret_hash", string()),
        column("global_admin", AttributeType::Integer),
        column("disabled", AttributeType::Integer),
        column("created_by", string()),
        column("token_generation", AttributeType::Integer),
    ];
    let rows = sql.rows(
        "SELECT id, upn, display_name, user_type, password_hash, client_id, secret_hash, global_admin, disabled, created_by, token_generation FROM principal",
        &[],
        &columns,
    )?;
    let text_of = |value: Value| match value {
        Value::String(text) => Some(text),
        _ => None,
    };
    let number_of = |value: &Value| match value {
        Value::Integer(n) => *n,
        _ => 0,
    };
    let mut principals = HashMap::new();
    for row in rows {
        let [
            id,
            upn,
            display_name,
            user_type,
            password_hash,
            client_id,
            secret_hash,
            global_admin,
            disabled,
            created_by,
            token_generation,
        ] = <[Value; 11]>::try_from(row).map_err(|_| Error::Corrupted("principal row".into()))?;
        let principal = Principal {
            id: parse_uuid(text_of(id))?,
            tenant_id,
            upn: text_of(upn).unwrap_or_default(),
            display_name: text_of(display_name).unwrap_or_default(),
            user_type: u8::try_from(number_of(&user_type))
                .map_err(|_| Error::Corrupted("a user type out of range".into()))?,
            password_hash: text_of(password_hash),
            client_id: text_of(client_id),
            secret_hash: text_of(secret_hash),
            global_admin: number_of(&global_admin) != 0,
            disabled: number_of(&disabled) != 0,
            created_by: text_of(created_by)
                .map(|t| parse_uuid(Some(t)))
                .transpose()?,
            token_generation: u32::try_from(number_of(&token_generation))
                .map_err(|_| Error::Corrupted("a token generation out of range".into()))?,
        };
        principals.insert(principal.id, principal);
    }
    let mut roles: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
    for row in sql.texts(
        "SELECT principal_id, instance, role_id FROM role_assignment",
        &[],
        3,
    )? {
        let [principal, instance, role] = <[Option<String>; 3]>::try_from(row)
            .map_err(|_| Error::Corrupted("role assignment row".into()))?;
        roles
            .entry((parse_uuid(principal)?, instance.unwrap_or_default()))
            .or_default()
            .push(parse_uuid(role)?);
    }
    let mut teams: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
    for row in sql.texts(
        "SELECT instance, team_id, principal_id FROM team_member",
        &[],
        3,
    )? {
        let [instance, team, principal] = <[Option<String>; 3]>::try_from(row)
            .map_err(|_| Error::Corrupted("team member row".into()))?;
        teams
            .entry((parse_uuid(principal)?, instance.unwrap_or_default()))
            .or_default()
            .push(parse_uuid(team)?);
    }
    Ok(Cache {
        principals,
        roles,
        teams,
    })
}

#[cfg(test)]
mod tests;
