//! The tenant directory: tenants, instances, principals (users and application users, with
//! their credential hashes) and role assignments, in the control database `control.db`.
//!
//! Principals are tenant-wide identities, like Entra ID accounts; each instance projects them as
//! `systemuser` records with the same id. Lookups on the request path come from an in-memory
//! copy that writes go through.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

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
}

struct Cache {
    principals: HashMap<Uuid, Principal>,
    /// Roles held, by (principal or team, instance).
    roles: HashMap<(Uuid, String), Vec<Uuid>>,
    /// Teams a principal belongs to, by (principal, instance).
    teams: HashMap<(Uuid, String), Vec<Uuid>>,
}

/// The control database of one tenant.
pub struct Directory {
    conn: Mutex<Connection>,
    tenant_id: Uuid,
    cache: RwLock<Cache>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenant (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instance (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, organization_id TEXT NOT NULL);
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
";

/// Columns added to `principal` after its first version, added to an older control database
/// when it opens.
const PRINCIPAL_COLUMNS: [(&str, &str); 2] = [
    ("created_by", "TEXT"),
    ("token_generation", "INTEGER NOT NULL DEFAULT 0"),
];

fn add_missing_columns(conn: &Connection) -> Result<()> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('principal')")?;
    let present: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, kind) in PRINCIPAL_COLUMNS {
        if !present.iter().any(|p| p == name) {
            conn.execute_batch(&format!("ALTER TABLE principal ADD COLUMN {name} {kind}"))?;
        }
    }
    Ok(())
}

fn parse_uuid(text: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Directory {
    /// Opens the control database, creating tenant `tenant_name` when it is new; returns it
    /// and whether it was created now (the first run).
    pub fn open(path: &Path, tenant_name: &str) -> Result<(Directory, bool)> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        let existing: Option<String> = conn
            .query_row("SELECT id FROM tenant", [], |row| row.get(0))
            .optional()?;
        let (tenant_id, created) = match existing {
            Some(id) => (parse_uuid(id)?, false),
            None => {
                let id = Uuid::new_v4();
                conn.execute(
                    "INSERT INTO tenant (id, name) VALUES (?1, ?2)",
                    [id.to_string(), tenant_name.to_string()],
                )?;
                (id, true)
            }
        };
        let cache = load_cache(&conn, tenant_id)?;
        Ok((
            Directory {
                conn: Mutex::new(conn),
                tenant_id,
                cache: RwLock::new(cache),
            },
            created,
        ))
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Records a new instance.
    pub fn add_instance(&self, instance: &InstanceInfo) -> Result<()> {
        let conn = self.conn.lock().expect("directory lock");
        conn.execute(
            "INSERT INTO instance (name, state, organization_id) VALUES (?1, ?2, ?3)",
            [
                &instance.name,
                &instance.state,
                &instance.organization_id.to_string(),
            ],
        )
        .map_err(|e| conflict(e, format!("instance '{}' already exists", instance.name)))?;
        Ok(())
    }

    /// Changes an instance's state (`trial` → `paid`); false when there is no such instance.
    pub fn set_instance_state(&self, name: &str, state: &str) -> Result<bool> {
        let conn = self.conn.lock().expect("directory lock");
        let changed = conn.execute(
            "UPDATE instance SET state = ?1 WHERE name = ?2",
            [state, name],
        )?;
        Ok(changed == 1)
    }

    /// Forgets an instance and every role held in it; false when there is no such instance.
    pub fn remove_instance(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn.lock().expect("directory lock");
        let tx = conn.transaction()?;
        let removed = tx.execute("DELETE FROM instance WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM role_assignment WHERE instance = ?1", [name])?;
        tx.execute("DELETE FROM team_member WHERE instance = ?1", [name])?;
        tx.commit()?;
        let mut cache = self.cache.write().expect("directory cache lock");
        cache.roles.retain(|(_, instance), _| instance != name);
        cache.teams.retain(|(_, instance), _| instance != name);
        Ok(removed == 1)
    }

    /// Every instance, by name.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>> {
        let conn = self.conn.lock().expect("directory lock");
        let mut statement =
            conn.prepare("SELECT name, state, organization_id FROM instance ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok(InstanceInfo {
                name: row.get(0)?,
                state: row.get(1)?,
                organization_id: parse_uuid(row.get(2)?)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a principal; a taken UPN or client id is a conflict.
    pub fn add_principal(&self, new: NewPrincipal) -> Result<Principal> {
        let principal = Principal {
            id: new.id,
            tenant_id: self.tenant_id,
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
        let conn = self.conn.lock().expect("directory lock");
        conn.execute(
            "INSERT INTO principal (id, upn, display_name, user_type, password_hash, client_id, secret_hash, global_admin, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                principal.id.to_string(),
                principal.upn,
                principal.display_name,
                principal.user_type,
                principal.password_hash,
                principal.client_id,
                principal.secret_hash,
                principal.global_admin,
                principal.created_by.map(|id| id.to_string()),
            ],
        )
        .map_err(|e| conflict(e, format!("a user named '{}' (or with that id or client id) already exists", principal.upn)))?;
        self.cache
            .write()
            .expect("directory cache")
            .principals
            .insert(principal.id, principal.clone());
        Ok(principal)
    }

    /// A principal by id.
    pub fn principal(&self, id: Uuid) -> Option<Principal> {
        self.cache
            .read()
            .expect("directory cache")
            .principals
            .get(&id)
            .cloned()
    }

    /// Disables or enables a principal's sign-in; disabling also ends every session. False
    /// when there is no such principal.
    pub fn set_disabled(&self, id: Uuid, disabled: bool) -> Result<bool> {
        self.change_principal(
            id,
            "disabled = ?1, token_generation = token_generation + ?2",
            rusqlite::params![disabled, u32::from(disabled), id.to_string()],
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
            "password_hash = ?1, token_generation = token_generation + ?2",
            rusqlite::params![password_hash, 1, id.to_string()],
            |principal| {
                principal.password_hash = Some(password_hash.to_string());
                principal.token_generation += 1;
            },
        )
    }

    /// Updates one principal row (`assignments` use `?1`, `?2`; the id is `?3`) and then its
    /// cached copy the same way.
    fn change_principal(
        &self,
        id: Uuid,
        assignments: &str,
        params: impl rusqlite::Params,
        apply: impl FnOnce(&mut Principal),
    ) -> Result<bool> {
        let conn = self.conn.lock().expect("directory lock");
        let changed = conn.execute(
            &format!("UPDATE principal SET {assignments} WHERE id = ?3"),
            params,
        )?;
        if changed == 1 {
            let mut cache = self.cache.write().expect("directory cache");
            if let Some(principal) = cache.principals.get_mut(&id) {
                apply(principal);
            }
        }
        Ok(changed == 1)
    }

    /// Deletes a principal with every role and team membership it holds; its tokens are
    /// refused from now on. False when there is no such principal.
    pub fn remove_principal(&self, id: Uuid) -> Result<bool> {
        let mut conn = self.conn.lock().expect("directory lock");
        let tx = conn.transaction()?;
        let key = id.to_string();
        let removed = tx.execute("DELETE FROM principal WHERE id = ?1", [&key])?;
        tx.execute(
            "DELETE FROM role_assignment WHERE principal_id = ?1",
            [&key],
        )?;
        tx.execute("DELETE FROM team_member WHERE principal_id = ?1", [&key])?;
        tx.commit()?;
        let mut cache = self.cache.write().expect("directory cache");
        cache.principals.remove(&id);
        cache.roles.retain(|(holder, _), _| *holder != id);
        cache.teams.retain(|(member, _), _| *member != id);
        Ok(removed == 1)
    }

    /// The principals a support engineer created.
    pub fn created_by(&self, engineer: Uuid) -> Vec<Principal> {
        let cache = self.cache.read().expect("directory cache");
        let mut out: Vec<Principal> = cache
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
        let cache = self.cache.read().expect("directory cache");
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
        let cache = self.cache.read().expect("directory cache");
        let mut out: Vec<Principal> = cache.principals.values().cloned().collect();
        out.sort_by(|a, b| a.upn.cmp(&b.upn));
        out
    }

    /// A principal by user principal name, ignoring case.
    pub fn by_upn(&self, upn: &str) -> Option<Principal> {
        let cache = self.cache.read().expect("directory cache");
        cache
            .principals
            .values()
            .find(|p| p.upn.eq_ignore_ascii_case(upn))
            .cloned()
    }

    /// An application user by client id.
    pub fn by_client_id(&self, client_id: &str) -> Option<Principal> {
        let cache = self.cache.read().expect("directory cache");
        cache
            .principals
            .values()
            .find(|p| p.client_id.as_deref() == Some(client_id))
            .cloned()
    }

    /// Gives `principal` the role `role_id` in `instance`; returns false when it already had it.
    pub fn assign_role(&self, principal: Uuid, instance: &str, role_id: Uuid) -> Result<bool> {
        let conn = self.conn.lock().expect("directory lock");
        let added = conn.execute(
            "INSERT OR IGNORE INTO role_assignment (principal_id, instance, role_id) VALUES (?1, ?2, ?3)",
            [principal.to_string(), instance.to_string(), role_id.to_string()],
        )?;
        if added > 0 {
            let mut cache = self.cache.write().expect("directory cache");
            cache
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
        let conn = self.conn.lock().expect("directory lock");
        let removed = conn.execute(
            "DELETE FROM role_assignment WHERE principal_id = ?1 AND instance = ?2 AND role_id = ?3",
            [principal.to_string(), instance.to_string(), role_id.to_string()],
        )?;
        if removed > 0 {
            let mut cache = self.cache.write().expect("directory cache");
            if let Some(held) = cache.roles.get_mut(&(principal, instance.to_string())) {
                held.retain(|r| *r != role_id);
            }
        }
        Ok(removed > 0)
    }

    /// The roles `principal` (a user or a team) holds in `instance` directly.
    pub fn roles(&self, principal: Uuid, instance: &str) -> Vec<Uuid> {
        let cache = self.cache.read().expect("directory cache");
        cache
            .roles
            .get(&(principal, instance.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The roles a user holds in `instance`: their own and those of every team they are in.
    pub fn effective_roles(&self, principal: Uuid, instance: &str) -> Vec<Uuid> {
        let cache = self.cache.read().expect("directory cache");
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
        let conn = self.conn.lock().expect("directory lock");
        let added = conn.execute(
            "INSERT OR IGNORE INTO team_member (instance, team_id, principal_id) VALUES (?1, ?2, ?3)",
            [instance.to_string(), team.to_string(), principal.to_string()],
        )?;
        if added > 0 {
            let mut cache = self.cache.write().expect("directory cache");
            cache
                .teams
                .entry((principal, instance.to_string()))
                .or_default()
                .push(team);
        }
        Ok(added > 0)
    }

    /// Removes `principal` from team `team`; returns false when not a member.
    pub fn remove_team_member(&self, instance: &str, team: Uuid, principal: Uuid) -> Result<bool> {
        let conn = self.conn.lock().expect("directory lock");
        let removed = conn.execute(
            "DELETE FROM team_member WHERE instance = ?1 AND team_id = ?2 AND principal_id = ?3",
            [
                instance.to_string(),
                team.to_string(),
                principal.to_string(),
            ],
        )?;
        if removed > 0 {
            let mut cache = self.cache.write().expect("directory cache");
            if let Some(teams) = cache.teams.get_mut(&(principal, instance.to_string())) {
                teams.retain(|t| *t != team);
            }
        }
        Ok(removed > 0)
    }

    /// The members of team `team` of `instance`.
    pub fn team_members(&self, instance: &str, team: Uuid) -> Vec<Uuid> {
        let cache = self.cache.read().expect("directory cache");
        let mut out: Vec<Uuid> = cache
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
        let conn = self.conn.lock().expect("directory lock");
        Ok(conn
            .query_row("SELECT value FROM setting WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// Stores a tenant setting (durably: `synchronous=FULL`).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.conn.lock().expect("directory lock");
        conn.execute(
            "INSERT INTO setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Removes a tenant setting (nothing when there is none).
    pub fn remove_setting(&self, key: &str) -> Result<()> {
        let conn = self.conn.lock().expect("directory lock");
        conn.execute("DELETE FROM setting WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Whether `principal` holds `role_id` in any instance.
    pub fn has_role_anywhere(&self, principal: Uuid, role_id: Uuid) -> bool {
        let cache = self.cache.read().expect("directory cache");
        cache
            .roles
            .iter()
            .any(|((p, _), roles)| *p == principal && roles.contains(&role_id))
    }
}

fn conflict(error: rusqlite::Error, message: String) -> Error {
    match error {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Conflict(message)
        }
        other => other.into(),
    }
}

fn load_cache(conn: &Connection, tenant_id: Uuid) -> Result<Cache> {
    let mut principals = HashMap::new();
    let mut statement = conn.prepare(
        "SELECT id, upn, display_name, user_type, password_hash, client_id, secret_hash, global_admin, disabled, created_by, token_generation FROM principal",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(Principal {
            id: parse_uuid(row.get(0)?)?,
            tenant_id,
            upn: row.get(1)?,
            display_name: row.get(2)?,
            user_type: row.get(3)?,
            password_hash: row.get(4)?,
            client_id: row.get(5)?,
            secret_hash: row.get(6)?,
            global_admin: row.get(7)?,
            disabled: row.get(8)?,
            created_by: row
                .get::<_, Option<String>>(9)?
                .map(parse_uuid)
                .transpose()?,
            token_generation: row.get(10)?,
        })
    })?;
    for principal in rows {
        let principal = principal?;
        principals.insert(principal.id, principal);
    }
    let mut roles: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
    let mut statement =
        conn.prepare("SELECT principal_id, instance, role_id FROM role_assignment")?;
    let rows = statement.query_map([], |row| {
        Ok((
            parse_uuid(row.get(0)?)?,
            row.get::<_, String>(1)?,
            parse_uuid(row.get(2)?)?,
        ))
    })?;
    for row in rows {
        let (principal, instance, role) = row?;
        roles.entry((principal, instance)).or_default().push(role);
    }
    let mut teams: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
    let mut statement = conn.prepare("SELECT instance, team_id, principal_id FROM team_member")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            parse_uuid(row.get(1)?)?,
            parse_uuid(row.get(2)?)?,
        ))
    })?;
    for row in rows {
        let (instance, team, principal) = row?;
        teams.entry((principal, instance)).or_default().push(team);
    }
    Ok(Cache {
        principals,
        roles,
        teams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_kept_replaced_and_removed_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.db");
        {
            let (directory, _) = Directory::open(&path, "default").unwrap();
            directory.set_setting("a", "1").unwrap();
            directory.set_setting("a", "2").unwrap();
            directory.set_setting("b", "3").unwrap();
            directory.remove_setting("b").unwrap();
            directory.remove_setting("never-set").unwrap();
        }
        let (directory, _) = Directory::open(&path, "default").unwrap();
        assert_eq!(directory.setting("a").unwrap().as_deref(), Some("2"));
        assert_eq!(directory.setting("b").unwrap(), None);
    }
}
