//! The integrity state of the log: the Merkle tree over every event's canonical JSON (upper
//! levels in memory, leaves in `leaves.dat`), and the signed checkpoints, kept in
//! `checkpoints.log` (frames `u32 length | u32 crc32 | note`) so that a restart can prove the
//! rebuilt tree extends everything signed before — a log must never sign two inconsistent
//! checkpoints.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::checkpoint::{CheckpointSigner, verify_note};
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

/// The tree size a note states (its second line), without checking its signature.
fn note_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

pub(crate) struct Integrity {
    pub(crate) tree: RwLock<MerkleTree>,
    pub(crate) leaves: LeafFile,
    signer: CheckpointSigner,
    checkpoints: Mutex<CheckpointFile>,
}

impl Integrity {
    /// Reads where the signed checkpoints are (their signatures are checked by
    /// [`Integrity::check_signed`] and `custos audit verify`); returns the state and the
    /// largest signed size.
    pub(crate) fn open(dir: &Path, signer: CheckpointSigner) -> Result<(Integrity, u64)> {
        let path = dir.join("checkpoints.log");
        let file = crate::files::open_read_write(&path)?;
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let mut notes = Vec::new();
        let mut pos = 0usize;
        while pos + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
            let Some(note) = bytes
                .get(pos + 8..pos + 8 + len)
                .filter(|n| crc32fast::hash(n) == crc)
            else {
                break;
            };
            let size = std::str::from_utf8(note)
                .ok()
                .and_then(note_size)
                .ok_or_else(|| {
                    Error::Corrupted(format!("checkpoint at byte {pos} states no tree size"))
                })?;
            if notes.last().is_some_and(|n: &NoteAt| n.size >= size) {
                return Err(Error::Corrupted(format!(
                    "checkpoint at byte {pos} does not grow the tree"
                )));
            }
            notes.push(NoteAt {
                size,
                offset: (pos + 8) as u64,
                len: len as u32,
            });
            pos += 8 + len;
        }
        if pos < bytes.len() {
            // A torn last note from a crash: its events were durable before it, so nothing
            // signed is lost by cutting it.
            file.set_len(pos as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
        }
        let signed = notes.last().map_or(0, |n| n.size);
        let integrity = Integrity {
            tree: RwLock::new(MerkleTree::new()),
            leaves: LeafFile::open(dir)?,
            signer,
            checkpoints: Mutex::new(CheckpointFile {
                file,
                path,
                len: pos as u64,
                notes,
            }),
        };
        Ok((integrity, signed))
    }

    /// Checks that the rebuilt tree extends the latest checkpoint signed before (which
    /// extends every earlier one: they were all signed over this append-only tree).
    pub(crate) fn check_signed(&self) -> Result<()> {
        let tree = self.tree.read().expect("tree lock");
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let Some((size, note)) = checkpoints.latest()? else {
            return Ok(());
        };
        if size > tree.len() {
            return Err(Error::Corrupted(format!(
                "the log holds {} events but a checkpoint of {size} was signed",
                tree.len()
            )));
        }
        let checkpoint = verify_note(&note, &self.signer.verifier_key())?;
        if tree.root(size, &self.leaves)? != checkpoint.root {
            return Err(Error::Corrupted(format!(
                "the log's first {size} events do not match the checkpoint signed for them"
            )));
        }
        Ok(())
    }

    pub(crate) fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The latest checkpoint, signing a new one first when the tree has grown past it.
    pub(crate) fn checkpoint(&self) -> Result<Option<(u64, String)>> {
        let mut checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        let (size, root) = {
            let tree = self.tree.read().expect("tree lock");
            (tree.len(), tree.root(tree.len(), &self.leaves)?)
        };
        let latest = checkpoints.notes.last().map(|n| n.size);
        if size > 0 && latest.is_none_or(|l| size > l) {
            let note = self.signer.sign(size, &root);
            let mut frame = Vec::with_capacity(note.len() + 8);
            frame.extend_from_slice(&(note.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32fast::hash(note.as_bytes()).to_le_bytes());
            frame.extend_from_slice(note.as_bytes());
            let at = checkpoints.len;
            checkpoints
                .file
                .write_all_at(&frame, at)
                .and_then(|()| checkpoints.file.sync_data())
                .map_err(|e| Error::io(&checkpoints.path, e))?;
            checkpoints.len += frame.len() as u64;
            checkpoints.notes.push(NoteAt {
                size,
                offset: at + 8,
                len: note.len() as u32,
            });
            return Ok(Some((size, note)));
        }
        checkpoints.latest()
    }

    /// A checkpoint signed earlier for exactly `size` leaves.
    pub(crate) fn checkpoint_at(&self, size: u64) -> Result<Option<String>> {
        let checkpoints = self.checkpoints.lock().expect("checkpoint lock");
        match checkpoints.notes.binary_search_by_key(&size, |n| n.size) {
            Ok(i) => checkpoints.read_note(checkpoints.notes[i]).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Proves leaf `index` against the latest checkpoint (signed now if it does not cover it).
    pub(crate) fn inclusion(&self, index: u64) -> Result<InclusionProof> {
        let (tree_size, checkpoint) = self
            .checkpoint()?
            .ok_or_else(|| Error::InvalidQuery("the log is empty".into()))?;
        if index >= tree_size {
            return Err(Error::InvalidQuery(format!(
                "event {index} is not in the log yet"
            )));
        }
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
