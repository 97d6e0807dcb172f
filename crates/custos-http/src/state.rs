//! The application state: configuration, the tenant directory, the instances with their record
//! stores and audit policies, the audit log, the token key and the clock. Also the first run
//! (SPEC §13), which seeds the tenant, the instance `main` and the global admin.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use custos_audit::{
    AuditEvent, AuditLog, AuditPolicy, EntityAuditFlags, InstanceAuditSettings, Operation, UserType,
};
use custos_records::{
    Change, Directory, Grants, InstanceInfo, NewPrincipal, ORGANIZATION_ENTITY, PgStore, ROLE_IDS,
    RecordStore, SqliteStore, Value, WriteContext, seed_entities, seed_views,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::draft::EventDraft;
use crate::error::{AppError, ErrorCode, StartError, blocking};
use crate::keys::{LogMode, audit_log_config, finish_rotation};
use crate::metrics::Metrics;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder of every file Custos keeps.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The first run's admin password; generated and printed once when `None`.
    pub admin_password: Option<String>,
    /// How long a bearer token is valid, seconds.
    pub token_lifetime_secs: u64,
    /// How often the activity feed cuts new content blobs.
    pub feed_interval: std::time::Duration,
    /// The base of every absolute URL Custos writes (`--public-url`); `None`: `http://` and the
    /// listening address.
    pub public_url: Option<String>,
    /// Whether streams and webhooks may reach loopback, link-local and private addresses
    /// (`--allow-private-targets`).
    pub allow_private_targets: bool,
    /// The only folder file streams may write in (`--stream-dir`); `None`: no file streams.
    pub stream_dir: Option<PathBuf>,
    /// Connections and timeouts.
    pub limits: Limits,
    /// Most time between two signed checkpoints while events arrive, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// The memory budget of the audit log's partition being written (`--audit-memory`);
    /// `None`: the cluster's, or `custos_audit::INDEX_BYTES_DEFAULT`.
    pub audit_memory_bytes: Option<u64>,
    /// The cluster this node is part of (`--nats`, `--node-id`); `None`: the embedded product.
    pub cluster: Option<custos_cluster::ClusterConfig>,
    /// The PostgreSQL database of every instance's records (`--postgres`), a schema per
    /// instance; `None`: an SQLite database per instance in the data directory.
    pub postgres: Option<String>,
    /// How often the server verifies its whole audit log by itself, as `POST /api/audit/verify`
    /// does (`--verify-interval-secs`); `None`: only when asked.
    pub verify_interval: Option<std::time::Duration>,
    /// The reverse proxies whose `X-Forwarded-For` names a request's client
    /// (`--trusted-proxy`; `context::client_address`); empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// How often `custos serve` verifies its whole audit log by default: once a day.
pub const VERIFY_INTERVAL_SECS: u64 = 86_400;

impl Config {
    /// The defaults of `custos serve` for a data directory and a listening address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            admin_password: None,
            token_lifetime_secs: 3600,
            feed_interval: std::time::Duration::from_secs(10),
            public_url: None,
            allow_private_targets: false,
            stream_dir: None,
            limits: Limits::default(),
            checkpoint_interval_ms: 1000,
            audit_memory_bytes: None,
            cluster: None,
            postgres: None,
            verify_interval: Some(std::time::Duration::from_secs(VERIFY_INTERVAL_SECS)),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Checks a `--public-url`: an absolute http or https URL without query or fragment; returns it
/// without a trailing slash.
fn public_base(url: &str) -> Result<String, StartError> {
    let bad = |why: &str| StartError::Config(format!("--public-url '{url}' {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(bad("must not have a query, fragment or user"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// How long the server waits on one client, and how many it serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub connections_max: usize,
    /// Most connections open at once from one client address (a trusted proxy's are not
    /// counted); 0: no limit.
    pub connections_per_address: usize,
    /// Longest wait for a request's headers (also between requests of a kept-alive
    /// connection), for the next piece of a request body, and for a client to take the next
    /// bytes of a response.
    pub idle_timeout: std::time::Duration,
    /// Each user's service protection limits on this node (`protection.rs`).
    pub per_user: crate::protection::UserLimits,
    /// Longest one read of an instance's records may run before it is stopped and refused
    /// (`RecordStore::limit_reads`); zero: none is stopped.
    pub query_time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections_max: 512,
            connections_per_address: 128,
            idle_timeout: std::time::Duration::from_secs(30),
            per_user: crate::protection::UserLimits::default(),
            query_time: std::time::Duration::from_secs(30),
        }
    }
}

/// Time source; injected so the core never reads the clock itself.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
    /// Microseconds since the epoch.
    fn now_us(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1000) as i64
    }
    /// Seconds since the epoch.
    fn now_secs(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The operating system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// One instance: its record store and the audit policy in force.
pub struct Instance {
    /// Unique name.
    pub name: String,
    /// Id of its organization record.
    pub organization_id: Uuid,
    /// Its records.
    pub store: Arc<dyn RecordStore>,
    /// What it audits; swapped whole on settings change or publish.
    pub policy: ArcSwap<AuditPolicy>,
    /// Its custom security roles' grants by role id; swapped whole when a role changes.
    pub custom_roles: ArcSwap<HashMap<Uuid, Grants>>,
    /// How often a user's access is recorded (`useraccessauditinginterval`), seconds.
    access_interval_secs: std::sync::atomic::AtomicI64,
    /// When each user's access was last recorded: (user, through the web) → seconds.
    last_access: std::sync::Mutex<HashMap<(Uuid, bool), i64>>,
}

/// Hours between two recorded accesses of one user, as Dataverse's default.
const ACCESS_INTERVAL_HOURS_DEFAULT: i64 = 4;

impl Instance {
    fn access_interval(&self) -> i64 {
        self.access_interval_secs
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether this node has not yet recorded, nor learnt of, `user`'s access (through the web
    /// or the API) within the interval before `now_secs`; if so the moment is taken, so that
    /// the node's concurrent requests ask once. [`AppState::access_due`] asks the directory
    /// next.
    fn access_unknown(&self, user: Uuid, web: bool, now_secs: i64) -> bool {
        let interval = self.access_interval();
        let mut last = self.last_access.lock().expect("last access lock");
        match last.get(&(user, web)) {
            Some(at) if (0..interval).contains(&(now_secs - at)) => false,
            _ => {
                last.insert((user, web), now_secs);
                true
            }
        }
    }

    /// Takes `at` as the moment `user`'s access was last recorded (by another node, or before
    /// a restart).
    fn access_recorded_at(&self, user: Uuid, web: bool, at: i64) {
        self.last_access
            .lock()
            .expect("last access lock")
            .insert((user, web), at);
    }

    /// Forgets that `user`'s access was recorded (its event could not be made durable).
    pub fn forget_access(&self, user: Uuid, web: bool) {
        self.last_access
            .lock()
            .expect("last access lock")
            .remove(&(user, web));
    }

    /// The directory's counter of `user`'s recorded access to this instance: `[at, until, 0,
    /// until]`, `until` being the interval's end (what `Directory::prune_counters` reads).
    fn access_key(&self, user: Uuid, web: bool) -> String {
        let channel = if web { "web" } else { "sdk" };
        format!("access:{}:{user}:{channel}", self.organization_id)
    }

    /// Reloads the grants of the custom roles from the `role` records.
    pub fn refresh_roles(&self) -> Result<(), custos_records::Error> {
        let options = custos_records::QueryOptions::default();
        let page = self.store.retrieve_multiple(&custos_records::RecordQuery {
            entity: "role",
            options: &options,
            page_size: u64::MAX,
        })?;
        let mut roles = HashMap::new();
        for record in page.records {
            if let Some(Value::String(text)) = record.values.get("privileges") {
                let json = serde_json::from_str(text)
                    .map_err(|e| custos_records::Error::Corrupted(e.to_string()))?;
                roles.insert(record.id, Grants::from_json(&json)?);
            }
        }
        self.custom_roles.store(Arc::new(roles));
        Ok(())
    }

    /// Rebuilds the policy from the organization record and the published catalog.
    pub fn refresh_policy(&self) -> Result<(), custos_records::Error> {
        let org = self
            .store
            .retrieve(ORGANIZATION_ENTITY, self.organization_id)?;
        let flag = |name: &str| matches!(org.values.get(name), Some(Value::Boolean(true)));
        let hours = match org.values.get("useraccessauditinginterval") {
            Some(Value::Integer(hours)) if *hours >= 0 => *hours,
            _ => ACCESS_INTERVAL_HOURS_DEFAULT,
        };
        self.access_interval_secs.store(
            hours.saturating_mul(3600),
            std::sync::atomic::Ordering::Release,
        );
        let settings = InstanceAuditSettings {
            audit: flag("isauditenabled"),
            read: flag("isreadauditenabled"),
            user_access: flag("isuseraccessauditenabled"),
        };
        let entities = self
            .store
            .catalog()
            .entities()
            .map(|e| {
                let flags = EntityAuditFlags {
                    audit: e.audit,
                    retrieve: e.retrieve_audit,
                    retrieve_multiple: e.retrieve_multiple_audit,
                    unaudited_attributes: e
                        .attributes
                        .iter()
                        .filter(|a| !a.audit)
                        .map(|a| a.logical_name.clone())
                        .collect(),
                };
                (e.logical_name.clone(), flags)
            })
            .collect();
        self.policy
            .store(Arc::new(AuditPolicy { settings, entities }));
        Ok(())
    }
}

/// Shared state of the server; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// Configuration.
    pub config: Config,
    /// Principals, instances, role assignments.
    pub directory: Directory,
    /// Instances by name.
    pub instances: RwLock<HashMap<String, Arc<Instance>>>,
    /// The audit log: in a cluster, this node's replica of the audit stream.
    pub log: Arc<AuditLog>,
    /// Where audited work's events are made durable: the log itself (embedded), or the
    /// cluster's audit stream, from which the log is built.
    pub journal: Journal,
    /// Key that signs bearer tokens.
    pub token_key: Vec<u8>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// The base of every absolute URL (no trailing slash).
    public_url: String,
    /// Signed-out sessions, by id, with the time (seconds) after which their tokens have
    /// expired anyway; kept in the directory's settings so a restart still refuses them.
    revoked: RwLock<HashMap<Uuid, i64>>,
    /// Lock-outs of sign-in names and client addresses.
    pub sign_ins: crate::throttle::SignInThrottle,
    /// How many refusals of each client address are recorded one by one.
    pub refusals: crate::throttle::RecordingBudget,
    /// Each user's demands on this node against their service protection limits.
    pub protection: crate::protection::ServiceProtection,
}

/// Where audited work's events are made durable before its answer.
pub enum Journal {
    /// This node's own log (the embedded product).
    Local,
    /// The cluster's audit stream (a quorum of NATS servers), which the log follows.
    Cluster(Box<custos_cluster::Cluster>),
}

/// The directory setting that keeps the revoked sessions.
const REVOKED_SETTING: &str = "sessions.revoked";

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Makes every file and folder this process creates from now on private to its user (mode
/// 0600 for files, 0700 for folders): the data directory holds password hashes, stream
/// credentials, every record and the whole audit trail. The binary calls it before anything
/// else; it is process-wide.
pub fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Takes every permission of the group and of others from the data directory and everything in
/// it (a folder made by an older version, or by hand); symbolic links are left alone.
fn make_private(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = fs::symlink_metadata(dir).map_err(StartError::io(dir))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
            .map_err(StartError::io(dir))?;
    }
    if !metadata.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(StartError::io(dir))? {
        let path = entry.map_err(StartError::io(dir))?.path();
        let kind = fs::symlink_metadata(&path)
            .map_err(StartError::io(&path))?
            .file_type();
        if kind.is_dir() || kind.is_file() {
            make_private(&path)?;
        }
    }
    Ok(())
}

fn generated_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl AppState {
    /// Opens the data directory, running the first run when it is empty.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
        let data_dir = config.data_dir.clone();
        let public_url = match &config.public_url {
            Some(url) => public_base(url)?,
            None => format!("http://{}", config.listen),
        };
        for dir in [
            data_dir.clone(),
            data_dir.join("keys"),
            data_dir.join("instances"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(StartError::io(&dir))?;
        }
        make_private(&data_dir)?;
        // Local copies and snapshots a stop interrupted (`files.rs`, backups) are of no use.
        match fs::remove_dir_all(data_dir.join("scratch")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StartError::io(&data_dir.join("scratch"))(e)),
        }
        let (directory, _) = open_directory(&data_dir, config.postgres.as_deref())?;
        if config.postgres.is_some() {
            directory
                .claim_database(config.cluster.is_none())
                .map_err(|e| StartError::Config(e.to_string()))?;
        }
        let token_key = crate::keys::token_key(&data_dir, &directory, config.postgres.is_some())?;
        let mode = match &config.cluster {
            None => LogMode::Embedded,
            Some(_) => LogMode::ClusterNode {
                shared_directory: config.postgres.is_some(),
            },
        };
        let log = Arc::new(AuditLog::open(audit_log_config(
            &data_dir,
            &directory,
            config.checkpoint_interval_ms,
            config.audit_memory_bytes,
            mode,
        )?)?);
        finish_rotation(&data_dir, &log)?;
        let journal = match &config.cluster {
            None => Journal::Local,
            Some(cluster) => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    StartError::Config("a cluster node runs inside `custos serve`".into())
                })?;
                let joined = runtime
                    .block_on(custos_cluster::Cluster::join(
                        cluster.clone(),
                        directory.tenant_id(),
                        cluster_keys(&directory, &data_dir, config.postgres.is_some()),
                    ))
                    .map_err(|e| StartError::Config(e.to_string()))?;
                // This node is an audit node too: its log is built from the stream.
                let dir = data_dir.join("cluster");
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(StartError::io(&dir))?;
                joined.replicate_into(log.clone(), dir.join("applied"));
                joined.sign_checkpoints(
                    log.clone(),
                    std::time::Duration::from_millis(config.checkpoint_interval_ms),
                );
                joined.archive_sealed(log.clone(), dir.clone());
                Journal::Cluster(Box::new(joined))
            }
        };
        let revoked = stored_revocations(&directory)?;
        let sign_ins = crate::throttle::SignInThrottle::over(&directory);
        let protection = crate::protection::ServiceProtection::new(config.limits.per_user);
        let state = AppState(Arc::new(Inner {
            config,
            directory,
            instances: RwLock::new(HashMap::new()),
            log,
            journal,
            token_key,
            clock,
            metrics: Arc::new(Metrics::default()),
            public_url,
            revoked: RwLock::new(revoked),
            sign_ins,
            refusals: crate::throttle::RecordingBudget::default(),
            protection,
        }));
        state.first_run()?;
        for info in state.directory.instances()? {
            state.open_instance(&info)?;
        }
        state.on_change(AppState::follow);
        // Whatever the log holds when it starts serving is signed at once (by the cluster's
        // signer on a cluster node).
        state.log.sign_checkpoint()?;
        Ok(state)
    }

    /// Calls `follow` with this state whenever another node changes something (a cluster node
    /// on PostgreSQL; never in the embedded product): how an area keeps what it holds in
    /// memory in step with the other nodes. Runs on the directory's listening thread.
    pub fn on_change(&self, follow: impl Fn(&AppState, Change<'_>) + Send + Sync + 'static) {
        let weak = Arc::downgrade(&self.0);
        self.directory.subscribe(move |change| {
            if let Some(inner) = weak.upgrade() {
                follow(&AppState(inner), change);
            }
        });
    }

    /// Catches up with what another node changed (a cluster node on PostgreSQL): instances
    /// created or deleted, and an instance's published metadata, audit settings and roles.
    /// Runs on the directory's listening thread.
    fn follow(&self, change: Change<'_>) {
        let mut stale: Vec<Arc<Instance>> = Vec::new();
        if matches!(change, Change::Directory | Change::Anything) {
            let listed = match self.directory.instances() {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(%error, "the instances could not be read again");
                    return;
                }
            };
            let open: Vec<String> = self
                .instances
                .read()
                .expect("instances lock")
                .keys()
                .cloned()
                .collect();
            for name in &open {
                if !listed.iter().any(|info| &info.name == name) {
                    self.instances.write().expect("instances lock").remove(name);
                }
            }
            for info in listed.iter().filter(|info| !open.contains(&info.name)) {
                if let Err(error) = self.open_instance(info) {
                    tracing::warn!(instance = %info.name, %error, "an instance another node created could not be opened");
                }
            }
        }
        if matches!(change, Change::Setting(REVOKED_SETTING) | Change::Anything) {
            match stored_revocations(&self.directory) {
                Ok(stored) => self.revoked.write().expect("revoked lock").extend(stored),
                Err(error) => {
                    tracing::warn!(%error, "the sessions another node signed out could not be read")
                }
            }
        }
        match change {
            Change::Store(schema) => stale.extend(
                self.instances
                    .read()
                    .expect("instances lock")
                    .values()
                    .filter(|instance| pg_schema(instance.organization_id) == schema)
                    .cloned(),
            ),
            Change::Anything => stale.extend(
                self.instances
                    .read()
                    .expect("instances lock")
                    .values()
                    .cloned(),
            ),
            Change::Directory | Change::Setting(_) => {}
        }
        for instance in stale {
            let reloaded = instance
                .store
                .reload()
                .and_then(|()| instance.refresh_policy())
                .and_then(|()| instance.refresh_roles());
            if let Err(error) = reloaded {
                tracing::warn!(instance = %instance.name, %error, "an instance another node changed could not be read again");
            }
        }
    }

    /// Idempotent first run: tenant admin, then instance `main`; each step is skipped when done.
    fn first_run(&self) -> Result<(), StartError> {
        if self.directory.by_upn("admin").is_none() {
            let (password, generated) = match &self.config.admin_password {
                Some(password) => (password.clone(), false),
                None => (generated_password(), true),
            };
            self.directory.add_principal(NewPrincipal {
                id: Uuid::new_v4(),
                upn: "admin".into(),
                display_name: "Global administrator".into(),
                user_type: UserType::Admin.code(),
                password_hash: Some(crate::credentials::hash_secret(&password)),
                client_id: None,
                secret_hash: None,
                global_admin: true,
                created_by: None,
            })?;
            if generated {
                println!(
                    "custos: first run: global admin 'admin' created with password {password} (shown once)"
                );
            }
        }
        if self.directory.instances()?.is_empty() {
            let info = InstanceInfo {
                name: "main".into(),
                state: "trial".into(),
                organization_id: Uuid::new_v4(),
                database: None,
            };
            self.directory.add_instance(&info)?;
            let mut draft = self.system_draft(Operation::CreateInstance, &info.name);
            draft.details =
                serde_json::json!({"instance": info.name, "state": info.state}).to_string();
            self.append_blocking(draft)
                .map_err(|e| StartError::FirstRun(e.message))?;
        }
        Ok(())
    }

    /// An event by the system itself (first run, backend work).
    pub fn system_draft(&self, operation: Operation, instance: &str) -> EventDraft {
        let mut draft = crate::draft::backend_draft(operation);
        draft.instance = instance.to_string();
        draft
    }

    /// The folder of an instance's records.
    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("instances").join(name)
    }

    /// The area of the shared files (`files.rs`) that holds an instance's backups.
    pub fn backups_area(name: &str) -> String {
        format!("backups/{name}")
    }

    /// Creates a new instance: recorded in the directory, its store seeded and opened.
    pub fn create_instance(&self, info: &InstanceInfo) -> Result<(), AppError> {
        self.directory.add_instance(info)?;
        self.open_instance(info).map_err(|e| {
            AppError::new(
                ErrorCode::Internal,
                format!("instance '{}': {e}", info.name),
            )
        })
    }

    /// Deletes an instance: forgotten by the directory, closed, its records and backups
    /// removed (its PostgreSQL schema dropped on a cluster node). Its audit events stay in the log.
    pub fn delete_instance(&self, name: &str) -> Result<(), AppError> {
        let info = self
            .directory
            .instances()?
            .into_iter()
            .find(|info| info.name == name);
        self.directory.remove_instance(name)?;
        self.instances.write().expect("instances lock").remove(name);
        if let Some(info) = info
            && let Some(url) = self.database_of(&info)
        {
            PgStore::drop_schema(url, &pg_schema(info.organization_id))?;
        }
        self.shared_files()
            .remove_area(&AppState::backups_area(name))?;
        for dir in [self.instance_dir(name)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(AppError::new(
                        ErrorCode::Internal,
                        format!("{}: {e}", dir.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The PostgreSQL database an instance's records are in: its own when it was placed on
    /// another server, else the node's (`--postgres`); none on SQLite.
    pub fn database_of<'a>(&'a self, info: &'a InstanceInfo) -> Option<&'a str> {
        info.database.as_deref().or(self.config.postgres.as_deref())
    }

    /// Opens an instance's store, seeding it when new (entities, settings, roles, admin user).
    fn open_instance(&self, info: &InstanceInfo) -> Result<(), StartError> {
        let dir = self.instance_dir(&info.name);
        fs::create_dir_all(&dir).map_err(StartError::io(&dir))?;
        let store: Arc<dyn RecordStore> = match self.database_of(info) {
            None => Arc::new(SqliteStore::open(&dir.join("records.db"))?),
            Some(url) => {
                if info.database.is_some() {
                    // Its changes are announced on its own server.
                    self.directory.follow_database(url);
                }
                Arc::new(PgStore::open(url, &pg_schema(info.organization_id))?)
            }
        };
        store.limit_reads(self.config.limits.query_time);
        store.watch_entities(&CACHED_ENTITIES);
        // A new instance gets every seeded entity; an older one those added since it was made.
        let known = store.drafts()?;
        let missing: Vec<_> = seed_entities()
            .into_iter()
            .filter(|e| !known.iter().any(|k| k.logical_name == e.logical_name))
            .collect();
        if !missing.is_empty() {
            store.install(&missing)?;
        }
        let admin = self
            .directory
            .by_upn("admin")
            .ok_or_else(|| StartError::FirstRun("no admin".into()))?;
        let context = WriteContext {
            actor: admin.id,
            now: self.clock.now(),
            platform: false,
            delegate: None,
        };
        let seed = |entity: &str, id: Uuid, values: Vec<(&str, Value)>| -> Result<(), StartError> {
            match store.retrieve(entity, id) {
                Ok(_) => return Ok(()),
                Err(custos_records::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let values = values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            match store.create(entity, Some(id), values, context, &mut |_| Ok(())) {
                // Another node seeding the same instance wrote it first.
                Ok(_) | Err(custos_records::Error::Conflict(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        };
        seed(
            ORGANIZATION_ENTITY,
            info.organization_id,
            vec![
                ("name", Value::String(info.name.clone())),
                ("isauditenabled", Value::Boolean(true)),
                ("isreadauditenabled", Value::Boolean(false)),
                ("isuseraccessauditenabled", Value::Boolean(false)),
                ("auditretentionperiodv2", Value::Integer(90)),
                ("useraccessauditinginterval", Value::Integer(4)),
            ],
        )?;
        for (role, id) in ROLE_IDS {
            seed(
                "role",
                id,
                vec![("name", Value::String(role.name().into()))],
            )?;
        }
        for (id, entity, name, columns) in seed_views() {
            seed(
                "savedquery",
                id,
                vec![
                    ("name", Value::String(name.into())),
                    ("returnedtypecode", Value::String(entity.into())),
                    ("columns", Value::String(columns.into())),
                    (
                        "orderby",
                        Value::String(columns.split(',').next().unwrap_or_default().into()),
                    ),
                    ("isdefault", Value::Boolean(true)),
                ],
            )?;
        }
        seed(
            "systemuser",
            admin.id,
            vec![
                ("fullname", Value::String(admin.display_name.clone())),
                ("domainname", Value::String(admin.upn.clone())),
            ],
        )?;
        let instance = Instance {
            name: info.name.clone(),
            organization_id: info.organization_id,
            store,
            policy: ArcSwap::from_pointee(AuditPolicy::default()),
            custom_roles: ArcSwap::from_pointee(HashMap::new()),
            access_interval_secs: std::sync::atomic::AtomicI64::new(
                ACCESS_INTERVAL_HOURS_DEFAULT * 3600,
            ),
            last_access: std::sync::Mutex::new(HashMap::new()),
        };
        instance.refresh_policy()?;
        instance.refresh_roles()?;
        self.instances
            .write()
            .expect("instances lock")
            .insert(info.name.clone(), Arc::new(instance));
        Ok(())
    }

    /// An instance by name.
    pub fn instance(&self, name: &str) -> Option<Arc<Instance>> {
        self.instances
            .read()
            .expect("instances lock")
            .get(name)
            .cloned()
    }

    /// Whether `user`'s access to `instance` now (through the web or the API) is to be
    /// recorded: the first in the instance's interval is — on any node of a cluster, and
    /// across restarts, for the directory keeps when it was last recorded
    /// ([`AppState::access_recorded`] writes it once the event is durable). Should the directory
    /// not answer, the access is recorded: more events, never fewer.
    pub async fn access_due(&self, instance: &Instance, user: Uuid, web: bool) -> bool {
        let now = self.clock.now_secs();
        if !instance.access_unknown(user, web, now) {
            return false;
        }
        if instance.access_interval() <= 0 {
            // Every access is recorded: there is no moment to share.
            return true;
        }
        let key = instance.access_key(user, web);
        let directory = self.directory.clone();
        let held = crate::error::blocking(move || directory.counters(&[&key])).await;
        match held.map(|held| held.into_iter().next().flatten()) {
            Ok(Some([at, ..])) if (0..instance.access_interval()).contains(&(now - at)) => {
                instance.access_recorded_at(user, web, at);
                false
            }
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(error = %error.message, "when a user's access was last recorded cannot be read; it is recorded again");
                true
            }
        }
    }

    /// Writes down in the directory that `user`'s access to `instance` was recorded at `at`
    /// (its event is durable), so that no node records it again within the interval.
    pub async fn access_recorded(&self, instance: &Instance, user: Uuid, web: bool, at: i64) {
        let interval = instance.access_interval();
        if interval <= 0 {
            return;
        }
        let key = instance.access_key(user, web);
        let directory = self.directory.clone();
        let written = crate::error::blocking(move || {
            directory.update_counter(&key, |held| {
                let at = held.map_or(at, |[held, ..]| held.max(at));
                let until = at.saturating_add(interval);
                Some([at, until, 0, until])
            })
        })
        .await;
        if let Err(error) = written {
            tracing::warn!(error = %error.message, "that a user's access was recorded was not written down; another node may record it again");
        }
    }

    /// Whether any instance audits user access (sign-in is tenant-wide).
    pub fn any_user_access_auditing(&self) -> bool {
        self.instances
            .read()
            .expect("instances lock")
            .values()
            .any(|i| i.policy.load().audits_user_access())
    }

    /// The base of every absolute URL Custos writes (`@odata.nextLink`, content URIs,
    /// instance URLs): `--public-url`, or `http://` and the listening address. Never the
    /// request's `Host` header, which the client chooses.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The name of the console's session cookie ([`crate::credentials::session_cookie_name`]).
    pub fn session_cookie(&self) -> &'static str {
        crate::credentials::session_cookie_name(&self.public_url)
    }

    /// Where the server may send things (`--allow-private-targets`).
    pub fn outbound(&self) -> crate::outbound::Rule {
        crate::outbound::Rule {
            allow_private: self.config.allow_private_targets,
        }
    }

    /// The service root URL of an instance.
    pub fn instance_url(&self, instance: &str) -> String {
        if instance.is_empty() {
            return String::new();
        }
        format!("{}/{instance}", self.public_url)
    }

    /// Whether session `id` was signed out.
    pub fn is_revoked(&self, id: Uuid) -> bool {
        self.revoked.read().expect("revoked lock").contains_key(&id)
    }

    /// Signs session `id` out for good (its tokens expire at `expires_secs`); forgets sessions
    /// whose tokens have expired anyway. Call from blocking code.
    pub fn revoke(&self, id: Uuid, expires_secs: i64) -> Result<(), AppError> {
        let now = self.clock.now_secs();
        // Other nodes' sign-outs are kept too (a cluster node on PostgreSQL).
        let stored = stored_revocations(&self.directory)?;
        let mut revoked = self.revoked.write().expect("revoked lock");
        revoked.extend(stored);
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(id, expires_secs);
        let text = serde_json::to_string(&*revoked).expect("a map serialises");
        self.directory.set_setting(REVOKED_SETTING, &text)?;
        Ok(())
    }

    /// Stamps a draft into a full event.
    pub fn finish(&self, draft: EventDraft) -> AuditEvent {
        let instance_url = self.instance_url(&draft.instance);
        stamp(
            draft,
            self.directory.tenant_id(),
            self.clock.now_us(),
            instance_url,
        )
    }
    /// Appends an event and waits until it is durable; call from blocking code only.
    pub fn append_blocking(&self, draft: EventDraft) -> Result<(), AppError> {
        let event = self.finish(draft);
        self.append_events_blocking(vec![event])
    }

    /// Appends events together (one group commit when they fit) and waits until all are
    /// durable; call from blocking code only.
    pub fn append_all_blocking(&self, drafts: Vec<EventDraft>) -> Result<(), AppError> {
        let events = drafts.into_iter().map(|d| self.finish(d)).collect();
        self.append_events_blocking(events)
    }

    /// Appends finished events together and waits until all are durable (in the log, or in
    /// the cluster's audit stream); call from blocking code only.
    pub fn append_events_blocking(&self, events: Vec<AuditEvent>) -> Result<(), AppError> {
        match &self.journal {
            Journal::Local => self.log.append_all(events).map(|_| ()),
            Journal::Cluster(cluster) => cluster.publisher().submit_all_blocking(events),
        }
        .map_err(AppError::from)
    }

    /// Ends the active partition of the audit log: at once on an embedded node; on a cluster
    /// node through a seal marker in the stream, so that every audit node ends it after the
    /// same event (`custos_cluster::Cluster::seal`). Call from blocking code only.
    pub fn seal_partition_blocking(&self) -> Result<(), AppError> {
        match &self.journal {
            Journal::Local => self.log.seal_active().map_err(AppError::from),
            Journal::Cluster(cluster) => tokio::runtime::Handle::current()
                .block_on(cluster.seal())
                .map_err(|e| AppError::from(custos_audit::Error::Unavailable(e.to_string()))),
        }
    }

    /// Waits until this node's log holds every audit event any node had acknowledged when this
    /// was asked, so that a search, report or export answers from the whole log: at once on an
    /// embedded node (its log is the one every answer waited on); on a cluster node until its
    /// replica reaches the end of the stream ([`custos_cluster::Cluster::caught_up`]), or 503.
    pub async fn audit_caught_up(&self) -> Result<(), AppError> {
        match &self.journal {
            Journal::Local => Ok(()),
            Journal::Cluster(cluster) => cluster
                .caught_up(custos_cluster::CAUGHT_UP_WAIT)
                .await
                .map_err(|e| {
                    AppError::new(
                        crate::error::ErrorCode::LogBehind,
                        format!("this node cannot answer from the whole audit log yet: {e}"),
                    )
                }),
        }
    }

    /// Whether this node is part of a cluster (its events go through the audit stream).
    pub fn in_cluster(&self) -> bool {
        matches!(self.journal, Journal::Cluster(_))
    }

    /// The files every node reads whichever wrote them (`files.rs`): the data directory's on
    /// an embedded node, the shared database's on a cluster node on PostgreSQL.
    pub fn shared_files(&self) -> crate::files::SharedFiles {
        crate::files::SharedFiles::over(self.config.data_dir.clone(), &self.directory)
    }

    /// This node's id in its cluster (`--node-id`); none on an embedded node.
    pub fn node_id(&self) -> Option<&str> {
        match &self.journal {
            Journal::Cluster(cluster) => Some(cluster.node_id()),
            Journal::Local => None,
        }
    }

    /// This node's place in its cluster, for `/healthz`: its id, which node signs the
    /// cluster's checkpoints, and (on the signer) how far the archive and the stream's trimming
    /// have come (none on an embedded node).
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        let Journal::Cluster(cluster) = &self.journal else {
            return None;
        };
        let signer = cluster.signer();
        Some(serde_json::json!({
            "node": cluster.node_id(),
            "checkpointSigner": signer.signer,
            "signsCheckpoints": signer.signing,
            "archivedEvents": signer.archived,
            "streamTrimmedThrough": signer.trimmed_through,
            "retentionRefused": cluster.retention_refused(),
        }))
    }

    /// Saves a directory setting from async code (on a blocking thread).
    pub async fn save_setting(&self, key: String, value: String) -> Result<(), AppError> {
        let worker = self.clone();
        blocking(move || {
            worker
                .directory
                .set_setting(&key, &value)
                .map_err(AppError::from)
        })
        .await
    }

    /// Appends an event from async code and waits until it is durable, without holding a
    /// thread: the writer wakes this task. Only when the writer's queue is full does it wait on
    /// a blocking thread (back-pressure).
    pub async fn record(&self, draft: EventDraft) -> Result<(), AppError> {
        let event = self.finish(draft);
        let (answered, answer) = tokio::sync::oneshot::channel();
        let done: custos_audit::Done = Box::new(move |outcome| {
            let _ = answered.send(outcome);
        });
        let queued = match &self.journal {
            Journal::Local => self.log.try_append(event, done),
            Journal::Cluster(cluster) => cluster.publisher().try_submit(event, done),
        };
        match queued {
            Ok(()) => answer
                .await
                .map_err(|_| {
                    AppError::from(custos_audit::Error::Unavailable(
                        "the audit writer stopped before answering".into(),
                    ))
                })?
                .map(|_| ())
                .map_err(AppError::from),
            Err((event, _)) => {
                let worker = self.clone();
                blocking(move || worker.append_events_blocking(vec![*event])).await
            }
        }
    }
}

/// Where a cluster node keeps the cluster's checkpoint keys: in the shared directory on
/// PostgreSQL (where the key can be rotated), else its own key stays.
fn cluster_keys(
    directory: &Directory,
    data_dir: &std::path::Path,
    shared: bool,
) -> Arc<dyn custos_cluster::KeyStore> {
    if shared {
        Arc::new(crate::keys::DirectoryKeys::new(directory.clone(), data_dir))
    } else {
        Arc::new(custos_cluster::FixedKey)
    }
}

/// The directory setting that keeps whether audit log search is on (SPEC §8): `off`, or on.
pub const AUDIT_SEARCH_SETTING: &str = "audit.search";

impl AppState {
    /// Whether audit log search is on, as the directory keeps it (on unless turned off). Every
    /// way of reading the trail asks — compliance's search, reports and exports, and a
    /// record's change history in the Web API. Reads the directory: call from blocking code.
    pub fn audit_search_stored(&self) -> Result<bool, custos_records::Error> {
        Ok(self.directory.setting(AUDIT_SEARCH_SETTING)?.as_deref() != Some("off"))
    }
}

/// Free bytes below which the data directory's file system counts as full: audited work
/// (records and their events) is being refused, or soon will be.
const DISK_FREE_BYTES_MIN: u64 = 1 << 20;

impl AppState {
    /// Whether Custos takes and serves audited work: `Err` with the reason while the audit log
    /// refuses events (the writer stopped, a failed write) or found a record altered on disk,
    /// or the data directory's file system is full.
    pub fn health(&self) -> Result<(), String> {
        self.log.health()?;
        if let Journal::Cluster(cluster) = &self.journal {
            cluster.health()?;
        }
        if let Ok(stat) = rustix::fs::statvfs(&self.config.data_dir) {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if free < DISK_FREE_BYTES_MIN {
                return Err(format!(
                    "the data directory's file system is full ({free} bytes free): audited requests are refused"
                ));
            }
        }
        Ok(())
    }
}

/// Stamps a draft into a full event of tenant `tenant_id` at `now_us`.
pub fn stamp(draft: EventDraft, tenant_id: Uuid, now_us: i64, instance_url: String) -> AuditEvent {
    let category = draft.operation.category(draft.entity_category);
    AuditEvent {
        id: Uuid::now_v7(),
        creation_time_us: now_us,
        tenant_id,
        instance_url,
        instance: draft.instance,
        workload: "Custos".into(),
        record_type: draft.operation.record_type().as_str().into(),
        operation: draft.operation.as_str().into(),
        category: category.as_str().into(),
        user_id: draft.user_id,
        user_upn: draft.user_upn,
        user_type: draft.user_type,
        caller_id: draft.caller_id,
        client_ip: draft.client_ip,
        user_agent: draft.user_agent,
        origin: draft.origin,
        correlation_id: draft.correlation_id,
        session_id: draft.session_id,
        client_request_id: draft.client_request_id,
        result_status: draft.status,
        error_code: draft.error_code,
        entity_name: draft.entity_name,
        entity_category: draft.entity_category,
        record_ids: draft.record_ids,
        query: draft.query,
        result_count: draft.result_count,
        changes: draft.changes,
        details: draft.details,
    }
}

/// The entities whose records some part of a node keeps in memory, so that a write to one is
/// announced to the other nodes: the organization's audit settings and the custom roles here,
/// the processes and plug-in steps in the platform's automation cache.
const CACHED_ENTITIES: [&str; 4] = [
    ORGANIZATION_ENTITY,
    "role",
    "workflow",
    "sdkmessageprocessingstep",
];

/// The PostgreSQL schema of an instance's records: named by its organization id, which never
/// changes.
pub fn pg_schema(organization_id: Uuid) -> String {
    format!("instance_{}", organization_id.simple())
}

/// The tenant directory of a node: `control.db` in its data directory, or the one in its
/// PostgreSQL database (`--postgres`), shared by every node of the cluster.
pub fn open_directory(
    data_dir: &Path,
    postgres: Option<&str>,
) -> Result<(Directory, bool), StartError> {
    Ok(match postgres {
        None => Directory::open(&data_dir.join("control.db"), "default")?,
        Some(url) => Directory::open_postgres(url, "default")?,
    })
}

/// The signed-out sessions kept in the directory.
fn stored_revocations(directory: &Directory) -> Result<HashMap<Uuid, i64>, custos_records::Error> {
    Ok(directory
        .setting(REVOKED_SETTING)?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}
