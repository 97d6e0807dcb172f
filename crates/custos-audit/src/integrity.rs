//! The integrity state of the log: the Merkle tree over every event's canonical JSON (upper
//! levels in memory, leaves in `leaves.dat`), and the signed checkpoints, kept in
//! `checkpoints.log` (frames `u32 length | u32 crc32 | note`) so that a restart can prove the
//! rebuilt tree extends everything signed before — a log must never sign two inconsistent
//! checkpoints.
//!
//! Keys: `verifier.key` lists the chain of verifier keys, the first (root) key first; a key
//! rotation appends the incoming key there, then writes the handover checkpoint (signed by both
//! keys, naming the incoming one), then signs with the incoming key only. On open the key in
//! force is the one the last handover names (or the root when there was none).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::checkpoint::{
    CheckpointSigner, IdsDigest, handover_key, verify_note, verify_note_chained,
};
use crate::ids::IdTable;
use crate::leaves::LeafFile;
use crate::merkle::{Hash, MerkleTree};
use crate::{Error, Result};

/// An inclusion proof of one event against a signed checkpoint.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The event's leaf index (its seq).
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The leaf hash.
    pub leaf_hash: Hash,
    /// Sibling hashes, leaf to root.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

/// Where one signed note is in `checkpoints.log`.
#[derive(Debug, Clone, Copy)]
struct NoteAt {
    size: u64,
    offset: u64,
    len: u32,
}

struct CheckpointFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Every signed note, by increasing tree size (the notes stay on disk).
    notes: Vec<NoteAt>,
}

impl CheckpointFile {
    fn read_note(&self, at: NoteAt) -> Result<String> {
        let mut bytes = vec![0u8; at.len as usize];
        self.file
            .read_exact_at(&mut bytes, at.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        String::from_utf8(bytes)
            .map_err(|_| Error::Corrupted("checkpoint note is not UTF-8".into()))
    }

    fn latest(&self) -> Result<Option<(u64, String)>> {
        self.notes
            .last()
            .map(|at| Ok((at.size, self.read_note(*at)?)))
            .transpose()
    }
}

/// Refuses when `running` has reached the count `signed` states and its digest differs (a
/// table shorter than the count is refused once it is all read).
fn check_ids_digest(running: &RunningIds, signed: Option<IdsDigest>) -> Result<()> {
    let Some(signed) = signed else {
        return Ok(());
    };
    if running.count < signed.count {
        return Err(Error::Corrupted(format!(
            "ids.dat holds {} record ids, but the latest checkpoint signed {}",
            running.count, signed.count
        )));
    }
    if running.count == signed.count {
        let digest: Hash = running.hasher.clone().finalize().into();
        if digest != signed.sha256 {
            return Err(Error::Corrupted(format!(
                "ids.dat: its first {} record ids are not those the latest checkpoint signed: it was altered",
                signed.count
            )));
        }
    }
    Ok(())
}

/// The tree size a note states (its second line), without checking its signature.
fn note_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

/// The running digest of the record ids numbered so far, for the checkpoints' `custos-ids`
/// line, with the digest's state after each of the latest batches, so that a checkpoint signed
/// by another node at a count this log has passed is checked without hashing every id again.
#[derive(Default)]
struct RunningIds {
    count: u64,
    hasher: Sha256,
    marks: std::collections::VecDeque<(u64, Sha256)>,
}

/// Batches whose digest state [`RunningIds`] keeps.
const ID_MARKS: usize = 1024;

/// What [`Integrity::adopt`] did with a checkpoint signed elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// It is the log's latest checkpoint now.
    Appended(u64),
    /// It matches the log, and the log holds a checkpoint as large already.
    Covered(u64),
    /// It was signed by a key the cluster retired before this log's chain began.
    Stale(u64),
}

/// What an audit node knows of its cluster's checkpoint keys beyond its own log (the shared
/// directory keeps them).
pub trait ClusterKeys {
    /// The seed of `verifier_key`, when it is the cluster's key in force or the one it is being
    /// handed over to.
    fn seed_of(&self, verifier_key: &str) -> Option<[u8; 32]>;
    /// The verifier keys the cluster signed with before its key in force.
    fn retired(&self) -> Vec<String>;
}

pub(crate) struct Integrity {
    pub(crate) tree: RwLock<MerkleTree>,
    ids: Mutex<RunningIds>,
    pub(crate) leaves: LeafFile,
    signer: RwLock<CheckpointSigner>,
    /// The verifier keys, root first, each with the tree size from which it signs.
    chain: RwLock<Vec<(u64, String)>>,
    chain_path: PathBuf,
    checkpoints: Mutex<CheckpointFile>,
    /// Woken whenever a checkpoint is signed (proofs wait on it for one that covers them).
    signed: Condvar,
}

impl CheckpointFile {
    /// Appends a signed note of `size` leaves, durably.
    fn append(&mut self, size: u64, note: &str) -> Result<()> {
        let mut frame = Vec::with_capacity(note.len() + 8);
        frame.extend_from_slice(&(note.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(note.as_bytes()).to_le_bytes());
        frame.extend_from_slice(note.as_bytes());
        let at = self.len;
        self.file
            .write_all_at(&frame, at)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += frame.len() as u64;
        self.notes.push(NoteAt {
            size,
            offset: at + 8,
            len: note.len() as u32,
        });
        Ok(())
    }
}

/// The text of `verifier.key`: the chain of verifier keys, root first, one per line.
fn chain_text(chain: &[(u64, String)]) -> String {
    chain.iter().map(|(_, key)| format!("{key}\n")).collect()
}

/// Writes the chain of verifier keys, root first, one per line (temporary file, fsync,
/// rename).
fn write_chain(path: &Path, chain: &[(u64, String)]) -> Result<()> {
    crate::files::replace_file(path, "tmp", chain_text(chain).as_bytes())
}

/// Longest checkpoint note, bytes: a frame claiming more is damage, not a torn write.
const NOTE_BYTES_MAX: usize = 4096;

/// What opening the integrity state found that must be written once the whole log is known to
/// be sound (never before: a refused start writes nothing).
#[derive(Debug, Default)]
pub(crate) struct IntegrityRepairs {
    /// The length to cut `checkpoints.log` to: its last frame is an incomplete write.
    pub(crate) torn_at: Option<u64>,
    /// `verifier.key` is missing and is to be written.
    pub(crate) write_chain: bool,
}

impl Integrity {
    /// Reads where the signed checkpoints are (the latest's root is checked against the tree by
    /// [`Integrity::check_signed`]; every one by `custos audit verify`), follows the key
    /// handovers from the root key, and finds the key in force, which must be the key of one
    /// of `seeds`. Writes nothing; returns the state, the largest signed size, and the repairs
    /// to make once the whole log is found sound. A checkpoint frame that is whole and fails
    /// its check, a `verifier.key` that is not the chain the checkpoints prove, or a handover
    /// that does not verify, is damage.
    pub(crate) fn open(
        dir: &Path,
        origin: &str,
        seeds: &[[u8; 32]],
    ) -> Result<(Integrity, u64, IntegrityRepairs)> {
        let path = dir.join("checkpoints.log");
        let file = crate::files::open_read_write(&path)?;
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let mut notes = Vec::new();
        let mut handovers = Vec::new();
        let mut handover_notes = Vec::new();
        let mut pos = 0usize;
        let mut repairs = IntegrityRepairs::default();
        while pos < bytes.len() {
            let rest = bytes.len() - pos;
            let len = bytes
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
            let whole = len.filter(|len| *len <= NOTE_BYTES_MAX && rest >= 8 + len);
            let zeros = bytes[pos..].iter().all(|b| *b == 0);
            let Some(len) = whole.filter(|_| !zeros) else {
                // Not a whole frame. It is a crash's incomplete last append when it is short
                // enough to be one frame (or zeros the file system left): the events it would
                // have signed were durable before it, so nothing signed is lost by cutting it.
                // Anything else is damage.
                let torn = zeros
                    || (rest <= 8 + NOTE_BYTES_MAX && len.is_none_or(|l| l <= NOTE_BYTES_MAX));
                if !torn {
                    return Err(Error::Corrupted(format!(
                        "checkpoints.log: checkpoint #{} at byte {pos} is damaged ({rest} bytes cannot be a torn last write)",
                        notes.len()
                    )));
                }
                repairs.torn_at = Some(pos as u64);
                break;
            };
            let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
            let note = &bytes[pos + 8..pos + 8 + len];
            if crc32fast::hash(note) != crc {
                return Err(Error::Corrupted(format!(
                    "checkpoints.log: checkpoint #{} at byte {pos} fails its checksum",
                    notes.len()
                )));
            }
            let text = std::str::from_utf8(note).map_err(|_| {
                Error::Corrupted(format!(
                    "checkpoints.log: checkpoint #{} at byte {pos} is not text",
                    notes.len()
                ))
            })?;
            let size = note_size(text).ok_or_else(|| {
                Error::Corrupted(format!(
                    "checkpoints.log: checkpoint #{} at byte {pos} states no tree size",
                    notes.len()
                ))
            })?;
            // Each note grows the tree, except a key handover, which may sign the size of the
            // note before it.
            let handover = handover_key(text);
            if notes
                .last()
                .is_some_and(|n: &NoteAt| n.size > size || (n.size == size && handover.is_none()))
            {
                return Err(Error::Corrupted(format!(
                    "checkpoints.log: checkpoint #{} at byte {pos} does not grow the tree",
                    notes.len()
                )));
            }
            notes.push(NoteAt {
                size,
                offset: (pos + 8) as u64,
                len: len as u32,
            });
            if let Some(key) = handover {
                handovers.push((size, key));
                handover_notes.push((pos, text.to_string()));
            }
            pos += 8 + len;
        }
        let signed = notes.last().map_or(0, |n| n.size);
        let checkpoints = CheckpointFile {
            file,
            path,
            len: pos as u64,
            notes,
        };
        let signers: Vec<CheckpointSigner> = seeds
            .iter()
            .map(|seed| CheckpointSigner::new(*seed, origin))
            .collect();
        let chain_path = dir.join("verifier.key");
        let kept = match crate::files::read_to_string(&chain_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&chain_path, e)),
        };
        let root = if handovers.is_empty() {
            signers[0].verifier_key()
        } else {
            kept.as_deref()
                .and_then(|text| text.lines().next().map(str::to_string))
                .ok_or_else(|| {
                    Error::Corrupted(format!(
                        "the signing key was rotated but {} no longer names the first key",
                        chain_path.display()
                    ))
                })?
        };
        // Trust passes from the root only through handovers both keys signed.
        let mut key = root.clone();
        for (at, note) in &handover_notes {
            verify_note_chained(note, &mut key).map_err(|e| {
                Error::Corrupted(format!(
                    "checkpoints.log: the key handover at byte {at} does not verify from the root key of verifier.key: {e}"
                ))
            })?;
        }
        let mut chain = vec![(0, root)];
        chain.extend(handovers);
        let (since, in_force) = chain.last().cloned().expect("a chain has a root");
        let signer = signers
            .into_iter()
            .find(|s| s.verifier_key() == in_force)
            .ok_or_else(|| {
                Error::Corrupted(format!(
                    "checkpoints are signed by {in_force} from tree size {since} on, and its seed is not among the signing keys"
                ))
            })?;
        match kept {
            None => repairs.write_chain = true,
            Some(text) if text != chain_text(&chain) => {
                return Err(Error::Corrupted(format!(
                    "{} does not hold the chain of keys the checkpoints prove (root first): it was altered",
                    chain_path.display()
                )));
            }
            Some(_) => {}
        }
        let integrity = Integrity {
            tree: RwLock::new(MerkleTree::new()),
            ids: Mutex::new(RunningIds::default()),
            leaves: LeafFile::open(dir)?,
            signer: RwLock::new(signer),
            chain: RwLock::new(chain),
            chain_path,
            checkpoints: Mutex::new(checkpoints),
            signed: Condvar::new(),
        };
        Ok((integrity, signed, repairs))
    }

    /// Makes the repairs [`Integrity::open`] found, once the whole log is known to be sound.
    pub(crate) fn repair(&self, repairs: &IntegrityRepairs) -> Result<()> {
        if let Some(len) = repairs.torn_at {
            let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
            checkpoints
                .file
                .set_len(len)
                .and_then(|()| checkpoints.file.sync_data())
                .map_err(|e| Error::io(&checkpoints.path, e))?;
            checkpoints.len = len;
        }
        if repairs.write_chain {
            write_chain(&self.chain_path, &self.chain.read().expect("chain lock"))?;
        }
        Ok(())
    }

    /// The verifier keys, root first, each with the tree size of its handover (0 for the root).
    pub(crate) fn verifier_keys(&self) -> Vec<(u64, String)> {
        self.chain.read().expect("chain lock").clone()
    }

    /// Hands signing over to the key of `next_seed`: the incoming key is added to
    /// `verifier.key`, then the handover checkpoint over the whole tree, signed by both keys,
    /// is made durable, then only the incoming key signs. Returns the handover's size.
    pub(crate) fn rotate(&self, next_seed: [u8; 32]) -> Result<u64> {
        let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let (size, root) = {
            let tree = self.tree.read().expect("tree lock");
            (tree.len(), tree.root(tree.len(), &self.leaves)?)
        };
        if size == 0 {
            return Err(Error::InvalidQuery(
                "an empty log has nothing to hand over: its first key simply stays".into(),
            ));
        }
        let mut signer = self.signer.write().expect("signer lock");
        let next = CheckpointSigner::new(next_seed, signer.origin());
        if next.verifier_key() == signer.verifier_key() {
            return Err(Error::InvalidQuery(
                "the incoming key is the key in force".into(),
            ));
        }
        let mut chain = self.chain.write().expect("chain lock");
        let mut extended = chain.clone();
        extended.push((size, next.verifier_key()));
        write_chain(&self.chain_path, &extended)?;
        let note = signer.sign_handover(&next, size, &root, Some(self.ids_digest()));
        checkpoints.append(size, &note)?;
        self.signed.notify_all();
        *chain = extended;
        *signer = next;
        Ok(size)
    }

    /// Checks that the record ids `table` holds begin with those the latest checkpoint signed,
    /// and whether the rebuilt tree extends that checkpoint (which extends every earlier one:
    /// they were all signed over this append-only tree): `Some(size)` when its first `size`
    /// leaves do not; then starts the running digest of the record ids from `table`.
    pub(crate) fn check_signed(&self, table: &IdTable) -> Result<Option<u64>> {
        let tree = self.tree.read().expect("tree lock");
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let mut running = RunningIds::default();
        let latest = match checkpoints.latest()? {
            None => None,
            Some((size, note)) => {
                if size > tree.len() {
                    return Err(Error::Corrupted(format!(
                        "the log holds {} events but a checkpoint of {size} was signed: records {}..{size} are missing",
                        tree.len(),
                        tree.len()
                    )));
                }
                let checkpoint = verify_note(&note, &self.verifier_key()).map_err(|e| {
                    Error::Corrupted(format!("checkpoints.log: the latest checkpoint: {e}"))
                })?;
                Some((size, checkpoint))
            }
        };
        // The record ids first: a changed one also changes the records that use it, and so
        // the root; this names the file.
        let signed_ids = latest.as_ref().and_then(|(_, c)| c.ids);
        for number in 0..table.len() {
            if signed_ids.is_some_and(|ids| ids.count == running.count) {
                check_ids_digest(&running, signed_ids)?;
            }
            let id = table.get(number).expect("a number below the length");
            running.hasher.update(id.as_bytes());
            running.count += 1;
        }
        check_ids_digest(&running, signed_ids)?;
        running
            .marks
            .push_back((running.count, running.hasher.clone()));
        *self.ids.lock().expect("ids digest lock") = running;
        if let Some((size, checkpoint)) = latest
            && tree.root(size, &self.leaves)? != checkpoint.root
        {
            return Ok(Some(size));
        }
        Ok(None)
    }

    /// Adds record ids numbered by a durable batch to the running digest.
    pub(crate) fn add_ids(&self, ids: &[uuid::Uuid]) {
        let mut running = self.ids.lock().expect("ids digest lock");
        for id in ids {
            running.hasher.update(id.as_bytes());
        }
        running.count += ids.len() as u64;
        if !ids.is_empty() {
            let mark = (running.count, running.hasher.clone());
            if running.marks.len() == ID_MARKS {
                running.marks.pop_front();
            }
            running.marks.push_back(mark);
        }
    }

    /// The digest of the first `count` record ids, from the nearest mark at or below it and the
    /// ids after it (`numbered(from, to)`: the ids numbered `from..to`); `None` when the log
    /// has not numbered that many durably.
    fn ids_digest_at(
        &self,
        count: u64,
        numbered: &dyn Fn(u64, u64) -> Option<Vec<uuid::Uuid>>,
    ) -> Option<Hash> {
        let (from, mut hasher) = {
            let running = self.ids.lock().expect("ids digest lock");
            if count > running.count {
                return None;
            }
            running
                .marks
                .iter()
                .rev()
                .find(|(at, _)| *at <= count)
                .map_or((0, Sha256::new()), |(at, state)| (*at, state.clone()))
        };
        for id in numbered(from, count)? {
            hasher.update(id.as_bytes());
        }
        Some(hasher.finalize().into())
    }

    /// Adopts `note`, a checkpoint the cluster's signer signed over the same stream of events:
    /// it must be signed by the key in force, and this log's tree of that size must have its
    /// root, and its first record ids the digest it states — otherwise the logs have diverged,
    /// which is damage, never skipped. A note larger than what the log holds is refused too
    /// (the stream delivers a checkpoint after the events it covers). Appended to
    /// `checkpoints.log` when it is larger than the latest. A handover (the cluster rotated its
    /// key) must also be signed by the key it names, whose seed `keys` gives: the log then
    /// signs and checks with that key, as [`Integrity::rotate`] leaves it. A note of a key the
    /// cluster retired before this log's chain began (a node started after a rotation meets
    /// notes the stream still holds) is `Stale`: nothing to adopt. Takes no lock while holding
    /// another.
    pub(crate) fn adopt(
        &self,
        note: &str,
        numbered: &dyn Fn(u64, u64) -> Option<Vec<uuid::Uuid>>,
        keys: &dyn ClusterKeys,
    ) -> Result<Adopted> {
        let key = self.verifier_key();
        let checkpoint = match verify_note(note, &key) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                // Retired: before this log's key in force in its own chain, or in the cluster's.
                let own: Vec<String> = {
                    let chain = self.chain.read().expect("chain lock");
                    chain.iter().map(|(_, key)| key.clone()).collect()
                };
                if let Some(stale) = own
                    .into_iter()
                    .filter(|retired| *retired != key)
                    .chain(keys.retired())
                    .find_map(|retired| verify_note(note, &retired).ok())
                {
                    return Ok(Adopted::Stale(stale.size));
                }
                return Err(Error::Corrupted(format!(
                    "a checkpoint from the cluster: {error}"
                )));
            }
        };
        let handover = checkpoint.next_key.as_ref().filter(|next| **next != key);
        if let Some(next) = handover {
            verify_note(note, next)
                .map_err(|e| Error::Corrupted(format!("a key handover from the cluster: {e}")))?;
        }
        let size = checkpoint.size;
        let root = {
            let tree = self.tree.read().expect("tree lock");
            if size > tree.len() {
                return Err(Error::Corrupted(format!(
                    "the cluster signed a checkpoint of {size} events and this log holds {}: it is missing events",
                    tree.len()
                )));
            }
            tree.root(size, &self.leaves)?
        };
        if root != checkpoint.root {
            return Err(Error::Corrupted(format!(
                "this log's tree of {size} events does not have the root the cluster signed: the logs have diverged"
            )));
        }
        if let Some(ids) = checkpoint.ids
            && self.ids_digest_at(ids.count, numbered) != Some(ids.sha256)
        {
            return Err(Error::Corrupted(format!(
                "this log's first {} record ids are not those the cluster signed: the logs have diverged",
                ids.count
            )));
        }
        if let Some(next) = handover {
            let seed = keys.seed_of(next).ok_or_else(|| {
                Error::Unavailable(format!(
                    "the cluster handed its checkpoint key over to {next}, whose seed this node cannot read"
                ))
            })?;
            return self.hand_over(size, note, seed, next);
        }
        let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        if checkpoints.notes.last().is_some_and(|n| n.size >= size) {
            return Ok(Adopted::Covered(size));
        }
        checkpoints.append(size, note)?;
        self.signed.notify_all();
        Ok(Adopted::Appended(size))
    }

    /// Takes the handover `note` of size `size` to the key `next` (seed `seed`), as
    /// [`Integrity::rotate`] makes one: the chain extended, the note appended, the signer
    /// switched.
    fn hand_over(&self, size: u64, note: &str, seed: [u8; 32], next: &str) -> Result<Adopted> {
        let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let mut signer = self.signer.write().expect("signer lock");
        let incoming = CheckpointSigner::new(seed, signer.origin());
        if incoming.verifier_key() != next {
            return Err(Error::Corrupted(format!(
                "the seed given for {next} is another key's"
            )));
        }
        let mut chain = self.chain.write().expect("chain lock");
        let mut extended = chain.clone();
        extended.push((size, incoming.verifier_key()));
        write_chain(&self.chain_path, &extended)?;
        checkpoints.append(size, note)?;
        self.signed.notify_all();
        *chain = extended;
        *signer = incoming;
        Ok(Adopted::Appended(size))
    }

    /// The digest of the record ids numbered so far.
    fn ids_digest(&self) -> IdsDigest {
        let running = self.ids.lock().expect("ids digest lock");
        IdsDigest {
            count: running.count,
            sha256: running.hasher.clone().finalize().into(),
        }
    }

    /// The verifier key the signing seed `seed` has in this log.
    pub(crate) fn verifier_key_for(&self, seed: [u8; 32]) -> String {
        let signer = self.signer.read().expect("signer lock");
        CheckpointSigner::new(seed, signer.origin()).verifier_key()
    }

    /// The verifier key in force.
    pub(crate) fn verifier_key(&self) -> String {
        self.signer.read().expect("signer lock").verifier_key()
    }

    /// The latest signed checkpoint (none is signed here).
    pub(crate) fn latest(&self) -> Result<Option<(u64, String)>> {
        self.checkpoints.lock().expect("checkpoint lock").latest()
    }

    /// The latest checkpoint, signing a new one first when the tree has grown past it: the
    /// checkpointer on its interval, and the few places that need a signature now (a purge
    /// before it deletes anything).
    pub(crate) fn checkpoint(&self) -> Result<Option<(u64, String)>> {
        let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let (size, root) = {
            let tree = self.tree.read().expect("tree lock");
            (tree.len(), tree.root(tree.len(), &self.leaves)?)
        };
        let latest = checkpoints.notes.last().map(|n| n.size);
        if size > 0 && latest.is_none_or(|l| size > l) {
            let ids = self.ids_digest();
            let note = self
                .signer
                .read()
                .expect("signer lock")
                .sign(size, &root, Some(ids));
            checkpoints.append(size, &note)?;
            self.signed.notify_all();
            return Ok(Some((size, note)));
        }
        checkpoints.latest()
    }

    /// A checkpoint signed earlier for exactly `size` leaves.
    pub(crate) fn checkpoint_at(&self, size: u64) -> Result<Option<String>> {
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        // The last of that size: a key handover of the same size comes after the note it
        // re-signs, and names the key that signs from then on.
        let after = checkpoints.notes.partition_point(|n| n.size <= size);
        match after.checked_sub(1).map(|i| checkpoints.notes[i]) {
            Some(at) if at.size == size => checkpoints.read_note(at).map(Some),
            _ => Ok(None),
        }
    }

    /// The first checkpoint signed over at least `size` leaves, with its size: the one that
    /// first covered them, so the answer never changes once there is one.
    pub(crate) fn checkpoint_covering(&self, size: u64) -> Result<Option<(u64, String)>> {
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let first = checkpoints.notes.partition_point(|n| n.size < size);
        checkpoints
            .notes
            .get(first)
            .map(|at| Ok((at.size, checkpoints.read_note(*at)?)))
            .transpose()
    }

    /// Proves leaf `index` against the latest signed checkpoint; when none covers it yet, waits
    /// up to `wait` for the checkpointer to sign one (a reader never makes the log sign).
    pub(crate) fn inclusion(&self, index: u64, wait: Duration) -> Result<InclusionProof> {
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let covered = |c: &mut CheckpointFile| c.notes.last().is_some_and(|n| n.size > index);
        let (checkpoints, _) = self
            .signed
            .wait_timeout_while(checkpoints, wait, |c| !covered(c))
            .expect("checkpoint lock");
        let (tree_size, checkpoint) = checkpoints
            .latest()?
            .filter(|(size, _)| *size > index)
            .ok_or_else(|| {
                Error::InvalidQuery(format!(
                    "record seq {index} is not covered by a signed checkpoint yet: try again in a moment"
                ))
            })?;
        drop(checkpoints);
        let tree = self.tree.read().expect("tree lock");
        Ok(InclusionProof {
            leaf_index: index,
            tree_size,
            leaf_hash: tree.leaf(index, &self.leaves)?,
            hashes: tree.inclusion_proof(index, tree_size, &self.leaves)?,
            checkpoint,
        })
    }

    /// The consistency proof between two tree sizes.
    pub(crate) fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        let tree = self.tree.read().expect("tree lock");
        if from == 0 || from > to || to > tree.len() {
            return Err(Error::InvalidQuery(format!(
                "a consistency proof needs 0 < from ≤ to ≤ {}, got {from} and {to}",
                tree.len()
            )));
        }
        tree.consistency_proof(from, to, &self.leaves)
    }
}
