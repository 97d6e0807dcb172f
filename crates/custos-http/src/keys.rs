//! The data directory's keys (`keys/`): the 32-byte secrets that sign bearer tokens and the
//! audit log's checkpoints, created 0600 on first use, and the file steps of a rotation of the
//! checkpoint key, whose routes are compliance's (SPEC §8).
//!
//! A rotation is recorded first (`RotateCheckpointKey`, always), then: the new seed is written
//! to `keys/checkpoint.key.next` (0600, fsynced); the log writes the handover checkpoint, signed
//! by the old and the new key and naming the new one; `checkpoint.key.next` replaces
//! `checkpoint.key`. A crash at any point is finished on the next start
//! ([`finish_rotation`]): if the handover was written the next seed is the key in force and
//! takes its place, otherwise it is discarded and the old key stays.
//!
//! A cluster on PostgreSQL keeps its key in the shared directory and rotates it through the
//! audit stream ([`DirectoryKeys`], docs/scale-out.md "Rotating the cluster's key"): the admin's
//! request leaves the incoming seed in the directory (`keys.checkpoint.next`); the node that
//! signs the cluster's checkpoints signs the handover with its log, makes the seed the
//! directory's key in force (the old verifier key joining `keys.checkpoint.retired`) and
//! publishes the handover into the stream; every node takes it in stream order, with the same
//! file steps as above around its log's switch.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use custos_audit::{AuditLog, LogConfig, files};
use custos_records::Directory;

use crate::error::{AppError, ErrorCode, StartError};

/// Reads a 32-byte secret key, creating it (mode 0600) on first use.
pub fn secret_key(path: &Path) -> Result<Vec<u8>, StartError> {
    match files::read(path) {
        Ok(key) if key.len() == 32 => return Ok(key),
        Ok(_) => {
            return Err(StartError::FirstRun(format!(
                "{} is not a 32-byte key",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StartError::io(path)(e)),
    }
    let key: [u8; 32] = rand::random();
    write_secret(path, &key).map_err(StartError::io(path))?;
    Ok(key.to_vec())
}

/// The key that signs bearer tokens: `keys/token.key` in the data directory, or on a cluster
/// node on PostgreSQL the one every node shares, kept in the directory (made by the first node
/// that asks), so that a token issued by one node is accepted by all.
pub fn token_key(
    data_dir: &Path,
    directory: &Directory,
    shared: bool,
) -> Result<Vec<u8>, StartError> {
    if !shared {
        return secret_key(&data_dir.join("keys").join("token.key"));
    }
    use base64::Engine as _;
    let encoded = directory.setting_or_init(TOKEN_KEY_SETTING, || {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| key.len() == 32)
        .ok_or_else(|| {
            StartError::FirstRun(format!(
                "the directory's {TOKEN_KEY_SETTING} is not a 32-byte key"
            ))
        })
}

/// The directory setting that keeps the shared token key of a cluster on PostgreSQL.
const TOKEN_KEY_SETTING: &str = "keys.token";

/// Writes a new secret key file (mode 0600), durably; fails if the file exists.
fn write_secret(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    let mut file = files::create_new(path)?;
    file.write_all(key)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        files::sync_dir(dir)?;
    }
    Ok(())
}

/// How a node's audit log is written and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// The embedded log: it takes the node's events and signs its own checkpoints with the
    /// data directory's key.
    Embedded,
    /// A cluster's audit node: its log is built from the audit stream and signs nothing of its
    /// own; the cluster's signer signs (`custos_cluster`). With `shared_directory` (the
    /// directory on PostgreSQL, so the nodes are one tenant) every node holds the cluster's one
    /// checkpoint key, kept in the directory like the token key.
    ClusterNode {
        /// Whether the tenant directory is shared with other nodes.
        shared_directory: bool,
    },
}

/// Where the audit log of `data_dir` lives, how its checkpoints are signed (every
/// `checkpoint_interval_ms` while events arrive) and its memory budget (`memory`, or the
/// default; on a cluster node sharing a directory, the cluster's).
pub fn audit_log_config(
    data_dir: &Path,
    directory: &Directory,
    checkpoint_interval_ms: u64,
    memory: Option<u64>,
    mode: LogMode,
) -> Result<LogConfig, StartError> {
    let seed: [u8; 32] = match mode {
        LogMode::ClusterNode {
            shared_directory: true,
        } => cluster_checkpoint_key(data_dir, directory)?,
        _ => secret_key(&key_path(data_dir))?
            .try_into()
            .expect("32-byte key"),
    };
    let origin = checkpoint_origin(directory);
    let next = next_seed(data_dir)?;
    let index_bytes_max = match mode {
        LogMode::ClusterNode {
            shared_directory: true,
        } => cluster_memory(directory, memory)?,
        _ => memory.unwrap_or(custos_audit::INDEX_BYTES_DEFAULT),
    };
    Ok(LogConfig {
        next_signing_seed: next,
        index_bytes_max,
        checkpoint_interval_ms,
        signs_own_checkpoints: mode == LogMode::Embedded,
        open_files_max: audit_open_files(),
        ..LogConfig::new(data_dir.join("audit"), seed, &origin)
    })
}

/// How many of its segment and index files the audit log may hold open: a quarter of the
/// process's limit on open files (`custos serve` raises its soft limit to the hard one first),
/// at least 16 and at most 1,024. The rest is for connections (`--max-connections`), the
/// instances' databases and the followers' files.
fn audit_open_files() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(1024, |limit| (limit / 4).clamp(16, 1024) as usize)
}

/// The directory setting of the seed a rotation of the cluster's key hands over to, while one
/// is under way (empty otherwise).
pub const NEXT_KEY_SETTING: &str = "keys.checkpoint.next";
/// The directory setting of the verifier keys the cluster signed with before its key in force
/// (a JSON array, oldest first).
const RETIRED_SETTING: &str = "keys.checkpoint.retired";

/// The checkpoint keys of a cluster on PostgreSQL: the shared directory's, and this node's key
/// file (`custos_cluster::KeyStore`).
pub struct DirectoryKeys {
    directory: Directory,
    data_dir: PathBuf,
    origin: String,
}

impl DirectoryKeys {
    /// The keys of the cluster whose directory is `directory`, this node's in `data_dir`.
    pub fn new(directory: Directory, data_dir: &Path) -> DirectoryKeys {
        let origin = checkpoint_origin(&directory);
        DirectoryKeys {
            directory,
            data_dir: data_dir.to_path_buf(),
            origin,
        }
    }

    fn seed(&self, setting: &str) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let encoded = self.directory.setting(setting).ok().flatten()?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?
            .try_into()
            .ok()
    }

    fn verifier(&self, seed: [u8; 32]) -> String {
        custos_audit::CheckpointSigner::new(seed, &self.origin).verifier_key()
    }
}

impl custos_audit::ClusterKeys for DirectoryKeys {
    fn seed_of(&self, verifier_key: &str) -> Option<[u8; 32]> {
        [NEXT_KEY_SETTING, CHECKPOINT_KEY_SETTING]
            .into_iter()
            .filter_map(|setting| self.seed(setting))
            .find(|seed| self.verifier(*seed) == verifier_key)
    }

    fn retired(&self) -> Vec<String> {
        retired_keys(&self.directory)
    }
}

impl custos_cluster::KeyStore for DirectoryKeys {
    fn incoming(&self) -> Option<[u8; 32]> {
        self.seed(NEXT_KEY_SETTING)
            .filter(|next| Some(*next) != self.seed(CHECKPOINT_KEY_SETTING))
    }

    fn switching(&self, seed: [u8; 32]) -> Result<(), String> {
        let next = next_path(&self.data_dir);
        let _ = fs::remove_file(&next);
        write_secret(&next, &seed).map_err(|e| format!("{}: {e}", next.display()))
    }

    fn switched(&self, seed: [u8; 32], retired: Option<&str>) -> Result<(), String> {
        use base64::Engine as _;
        let (next, current) = (next_path(&self.data_dir), key_path(&self.data_dir));
        match fs::rename(&next, &current) {
            Ok(()) => {}
            // Kept there before a restart that finished the switch ([`finish_rotation`]).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", current.display())),
        }
        let keys = self.data_dir.join("keys");
        files::sync_dir(&keys).map_err(|e| format!("{}: {e}", keys.display()))?;
        let Some(retired) = retired else {
            return Ok(());
        };
        let mut chain = retired_keys(&self.directory);
        if !chain.iter().any(|key| key == retired) {
            chain.push(retired.to_string());
        }
        let stored = |key: &str, value: &str| {
            self.directory
                .set_setting(key, value)
                .map_err(|e| format!("the directory's {key}: {e}"))
        };
        stored(RETIRED_SETTING, &serde_json::json!(chain).to_string())?;
        stored(
            CHECKPOINT_KEY_SETTING,
            &base64::engine::general_purpose::STANDARD.encode(seed),
        )?;
        stored(NEXT_KEY_SETTING, "")
    }
}

/// The verifier keys the cluster of `directory` signed with before its key in force.
fn retired_keys(directory: &Directory) -> Vec<String> {
    directory
        .setting(RETIRED_SETTING)
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The origin line of the checkpoints of `directory`'s tenant (also the key name).
fn checkpoint_origin(directory: &Directory) -> String {
    format!("localhost/custos/{}", directory.tenant_id())
}

/// The directory setting that keeps the audit log's memory budget of a cluster on PostgreSQL.
const MEMORY_SETTING: &str = "audit.memory";

/// The cluster's memory budget of the partition being written: the first node's (its
/// `--audit-memory`, or the default), kept in the directory. Every audit node must cut its
/// partitions at the same events, so a node asked for another budget is refused.
fn cluster_memory(directory: &Directory, memory: Option<u64>) -> Result<u64, StartError> {
    let stored = directory.setting_or_init(MEMORY_SETTING, || {
        memory
            .unwrap_or(custos_audit::INDEX_BYTES_DEFAULT)
            .to_string()
    })?;
    let budget: u64 = stored.parse().map_err(|_| {
        StartError::FirstRun(format!(
            "the directory's {MEMORY_SETTING} is not a number of bytes"
        ))
    })?;
    match memory {
        Some(asked) if asked != budget => Err(StartError::Config(format!(
            "--audit-memory {} is not the cluster's budget of {} MiB (the directory's {MEMORY_SETTING}): every node cuts its partitions at the same events; leave the flag out or give the same",
            asked >> 20,
            budget >> 20
        ))),
        _ => Ok(budget),
    }
}

/// The directory setting that keeps the checkpoint key of a cluster on PostgreSQL.
const CHECKPOINT_KEY_SETTING: &str = "keys.checkpoint";

/// The cluster's checkpoint key: made by the first node that asks (from its own key file when
/// it has one) and kept in the directory; written to this node's `keys/checkpoint.key` when it
/// has none. A node whose key file holds another key is refused: its log was signed by that
/// key, and the cluster's checkpoints would not verify against it.
fn cluster_checkpoint_key(data_dir: &Path, directory: &Directory) -> Result<[u8; 32], StartError> {
    use base64::Engine as _;
    let path = key_path(data_dir);
    let own = match files::read(&path) {
        Ok(key) => Some(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StartError::io(&path)(e)),
    };
    let encoded = directory.setting_or_init(CHECKPOINT_KEY_SETTING, || {
        let key = own
            .clone()
            .filter(|key| key.len() == 32)
            .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
        base64::engine::general_purpose::STANDARD.encode(key)
    })?;
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|key| key.try_into().ok())
        .ok_or_else(|| {
            StartError::FirstRun(format!(
                "the directory's {CHECKPOINT_KEY_SETTING} is not a 32-byte key"
            ))
        })?;
    // A node away while the cluster's key rotated still holds a key the cluster signed with
    // before, and meets the handover in the stream; one whose switch a crash cut short has the
    // new key beside its own ([`finish_rotation`] finishes it once the log is open).
    let earlier = |own: &[u8]| {
        let Ok(seed) = <[u8; 32]>::try_from(own) else {
            return false;
        };
        let verifier =
            custos_audit::CheckpointSigner::new(seed, &checkpoint_origin(directory)).verifier_key();
        retired_keys(directory).contains(&verifier)
            || next_seed(data_dir).ok().flatten() == Some(key)
    };
    match own {
        None => write_secret(&path, &key).map_err(StartError::io(&path))?,
        Some(own) if own != key && earlier(&own) => {
            return own.try_into().map_err(|_| {
                StartError::FirstRun(format!("{} is not a 32-byte key", path.display()))
            });
        }
        Some(own) if own != key => {
            return Err(StartError::Config(format!(
                "{} is not the cluster's checkpoint key (the directory's {CHECKPOINT_KEY_SETTING}): this node's log was signed by another key. Remove its audit folder and cluster/applied to rebuild the log from the stream, and the key file to take the cluster's",
                path.display()
            )));
        }
        Some(_) => {}
    }
    Ok(key)
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint.key")
}

fn next_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint.key.next")
}

/// The seed of a rotation that may have been interrupted, if its file is there.
pub fn next_seed(data_dir: &Path) -> Result<Option<[u8; 32]>, StartError> {
    let path = next_path(data_dir);
    match files::read(&path) {
        Ok(bytes) => Ok(Some(bytes.try_into().map_err(|_| {
            StartError::FirstRun(format!("{} is not a 32-byte key", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartError::io(&path)(e)),
    }
}

/// Finishes or discards an interrupted rotation once the log is open: the next seed becomes
/// the signing key when the log shows its key in force, and is deleted otherwise.
pub fn finish_rotation(data_dir: &Path, log: &AuditLog) -> Result<(), StartError> {
    let Some(seed) = next_seed(data_dir)? else {
        return Ok(());
    };
    let next = next_path(data_dir);
    if log.verifier_key_for(seed) == log.verifier_key() {
        let current = key_path(data_dir);
        std::fs::rename(&next, &current).map_err(StartError::io(&current))?;
    } else {
        std::fs::remove_file(&next).map_err(StartError::io(&next))?;
    }
    let keys = data_dir.join("keys");
    files::sync_dir(&keys).map_err(StartError::io(&keys))
}

/// The file steps of a rotation to `seed`, once it is recorded: the next seed written, the
/// handover checkpoint signed, the next seed made the key in force. Returns the handover's tree
/// size. Call from blocking code.
pub fn rotate(data_dir: &Path, log: &AuditLog, seed: [u8; 32]) -> Result<u64, AppError> {
    let next = next_path(data_dir);
    let internal =
        |e: std::io::Error| AppError::new(ErrorCode::Internal, format!("{}: {e}", next.display()));
    if next.exists() {
        fs::remove_file(&next).map_err(internal)?;
    }
    write_secret(&next, &seed).map_err(internal)?;
    let size = log.rotate_key(seed)?;
    fs::rename(&next, key_path(data_dir)).map_err(internal)?;
    files::sync_dir(&data_dir.join("keys")).map_err(internal)?;
    Ok(size)
}
