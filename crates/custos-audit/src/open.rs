//! Opening the log: from the files in its folder to the state the writer and readers share.
//!
//! The sealed partitions (those with an intact index file) are opened, not read: their record
//! ids come from `ids.dat` and their leaves from `leaves.dat`, both durable up to them. Every
//! segment from the first without an index file on is scanned: its records decoded (a torn
//! tail cut off), their leaves recomputed and their index rebuilt in memory, to be sealed
//! again. So a restart costs one scan of the unsealed tail plus reading 32 bytes of leaf and
//! 16 bytes of record id per event, whatever the size of the log.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::canonical::canonical_json;
use crate::codec::decode_next;
use crate::ids::{IdDict, IdFile};
use crate::index::{PartState, Partition};
use crate::integrity::Integrity;
use crate::leaves::LeafFile;
use crate::log::{
    ActiveSegment, LogConfig, Seq, is_unfinished_segment, list_segments, read_header_of,
    scan_segment,
};
use crate::merkle::{LeafSource, MerkleTree, leaf_hash};
use crate::partition::MemIndex;
use crate::retention::PrunedFile;
use crate::sealed::{SealedIndex, index_path};
use crate::writer::DAY_US;
use crate::{Error, Result};

/// Leaves read from `leaves.dat` at a time while rebuilding the tree.
const LEAF_CHUNK: u64 = 1 << 20;

/// What opening found, handed to the writer and readers.
pub(crate) struct Opened {
    pub(crate) lock: File,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) ids: IdDict,
    pub(crate) ids_len: usize,
    pub(crate) id_file: IdFile,
    pub(crate) integrity: Integrity,
    pub(crate) pruned: PrunedFile,
    pub(crate) active: ActiveSegment,
    pub(crate) active_day: Option<i64>,
    /// Complete partitions without an index file, in log order.
    pub(crate) to_seal: Vec<usize>,
}

/// Takes the folder's lock file, so a second process cannot open the same log.
pub(crate) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "{} is open in another process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Deletes a partition's segment and index files, and makes the deletion durable.
pub(crate) fn delete_partition_files(segment: &Path, dir: &Path) -> Result<()> {
    for path in [index_path(segment), segment.to_path_buf()] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn segment_bytes(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}

/// Deletes every partition index file in `dir` (and any half-written one), so the next open
/// rebuilds them all from the segments.
pub(crate) fn remove_indexes(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if name.is_some_and(|n| {
            n.starts_with("seg-") && (n.ends_with(".idx") || n.ends_with(".idx.tmp"))
        }) {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    Ok(removed)
}

/// Opens the log in `config.dir`, whose lock the caller holds.
pub(crate) fn open(config: &LogConfig, lock: File) -> Result<Opened> {
    let dir = &config.dir;
    let seeds: Vec<[u8; 32]> = std::iter::once(config.signing_seed)
        .chain(config.next_signing_seed)
        .collect();
    let (integrity, protected) = Integrity::open(dir, &config.origin, &seeds)?;
    let pruned = PrunedFile::open(dir)?;
    let id_file = IdFile::open(dir)?;

    let mut segments = Vec::new();
    for (first, path) in list_segments(dir)? {
        if pruned.ranges.contains_key(&first) {
            // A purge that crashed after recording its range but before deleting the files.
            delete_partition_files(&path, dir)?;
        } else {
            segments.push((first, path));
        }
    }
    if let Some((_, last)) = segments.last()
        && is_unfinished_segment(last)?
    {
        // Crashed while creating it: it holds nothing; the segment before goes on.
        delete_partition_files(last, dir)?;
        segments.pop();
    }
    let purged_end = pruned
        .ranges
        .iter()
        .next_back()
        .map_or(0, |(first, count)| first + count);
    if segments.is_empty() {
        let ids = id_file.len()? as u32;
        let active = ActiveSegment::create(dir, purged_end, ids)?;
        segments.push((purged_end, active.path().to_path_buf()));
    }

    // The sealed prefix: segments (but the last) with an index file that matches them.
    let mut sealed = Vec::new();
    for (first, path) in &segments[..segments.len() - 1] {
        match SealedIndex::open(path, *first, segment_bytes(path)?)? {
            Some(index) => sealed.push(index),
            None => break,
        }
    }
    let first_unsealed = sealed.len();
    let (unsealed_first, unsealed_path) = &segments[first_unsealed];
    let ids_before = read_header_of(unsealed_path)?;
    let ids_held = id_file.len()?;
    if ids_held < u64::from(ids_before) {
        return Err(Error::Corrupted(format!(
            "ids.dat holds {ids_held} record ids, but {} needs {ids_before}",
            unsealed_path.display()
        )));
    }
    let mut ids = IdDict::from_table(id_file.read(u64::from(ids_before))?);
    id_file.truncate(u64::from(ids_before))?;

    let leaves_held = integrity.leaves.len()?;
    if leaves_held < *unsealed_first {
        return Err(Error::Corrupted(format!(
            "leaves.dat holds {leaves_held} leaves, but the sealed partitions need {unsealed_first}"
        )));
    }
    integrity.leaves.truncate(*unsealed_first)?;
    let mut tree = rebuild_tree(&integrity.leaves, *unsealed_first)?;

    let mut partitions = Vec::new();
    let mut next_seq: Seq = 0;
    let fill_gap = |partitions: &mut Vec<Partition>, next_seq: &mut Seq, first: Seq| {
        while *next_seq < first {
            let Some(count) = pruned.ranges.get(next_seq) else {
                return Err(Error::Corrupted(format!(
                    "records {next_seq}..{first} are missing and no retention purge explains it"
                )));
            };
            partitions.push(Partition {
                first_seq: *next_seq,
                n_events: *count,
                path: PathBuf::new(),
                file: None,
                strings: Arc::new(RwLock::new(Vec::new())),
                state: PartState::Purged,
            });
            *next_seq += count;
        }
        if *next_seq != first {
            return Err(Error::Corrupted(format!(
                "a segment starts at record {first}, inside the records before it (which end at {next_seq})"
            )));
        }
        Ok(())
    };
    for ((first, path), index) in segments.iter().zip(sealed) {
        fill_gap(&mut partitions, &mut next_seq, *first)?;
        let n_events = u64::from(index.meta().n_events);
        partitions.push(Partition {
            first_seq: *first,
            n_events,
            path: path.clone(),
            file: Some(Arc::new(File::open(path).map_err(|e| Error::io(path, e))?)),
            strings: Arc::new(RwLock::new(Vec::new())),
            state: PartState::Sealed(Arc::new(index)),
        });
        next_seq += n_events;
    }

    let mut to_seal = Vec::new();
    let mut active = None;
    let mut active_day = None;
    let n_segments = segments.len();
    for (k, (first, path)) in segments.iter().enumerate().skip(first_unsealed) {
        fill_gap(&mut partitions, &mut next_seq, *first)?;
        let is_last = k + 1 == n_segments;
        let ids_at_start = ids.table.len();
        let mut strings = Vec::new();
        let mut index = MemIndex::default();
        let mut leaves = Vec::new();
        let scanned = scan_segment(
            path,
            *first,
            is_last,
            protected,
            &mut |_, place, payload| {
                let (event, numbers) = decode_next(payload, &mut ids, &mut strings)?;
                let leaf = leaf_hash(canonical_json(&event).as_bytes());
                tree.push(leaf);
                leaves.push(leaf);
                index.insert(place, &event, &numbers);
                Ok(())
            },
        )?;
        if scanned.ids_before as usize != ids_at_start {
            return Err(Error::Corrupted(format!(
                "{} says {} record ids came before it, but the segments before it numbered {ids_at_start}",
                path.display(),
                scanned.ids_before
            )));
        }
        integrity.leaves.write(*first, &leaves)?;
        id_file.write(ids_at_start as u64, &ids.table.since(ids_at_start))?;
        let file = Some(Arc::new(File::open(path).map_err(|e| Error::io(path, e))?));
        let state = if is_last {
            active_day = index.times.first().map(|t| t.div_euclid(DAY_US));
            active = Some(ActiveSegment::resume(
                path.clone(),
                *first,
                scanned.intact_len,
                scanned.n_records,
            )?);
            PartState::Live(Box::new(index))
        } else {
            to_seal.push(partitions.len());
            PartState::Frozen {
                index: Arc::new(index),
                ids_end: ids.table.len() as u32,
            }
        };
        partitions.push(Partition {
            first_seq: *first,
            n_events: scanned.n_records,
            path: path.clone(),
            file,
            strings: Arc::new(RwLock::new(strings)),
            state,
        });
        next_seq += scanned.n_records;
    }
    *integrity.tree.write().expect("tree lock") = tree;
    integrity.check_signed()?;

    // `verifier.key` beside the log (written by `Integrity::open`) names the chain of keys for
    // `custos audit verify`; a verifier that must not trust this folder pins the root key.

    let ids_len = ids.table.len();
    Ok(Opened {
        lock,
        partitions,
        ids,
        ids_len,
        id_file,
        integrity,
        pruned,
        active: active.expect("the last segment is scanned"),
        active_day,
        to_seal,
    })
}

/// The tree of the first `n` leaves of `leaves.dat`, keeping only what the tail needs in
/// memory.
fn rebuild_tree(leaves: &LeafFile, n: u64) -> Result<MerkleTree> {
    let mut tree = MerkleTree::new();
    let mut at = 0;
    while at < n {
        let end = (at + LEAF_CHUNK).min(n);
        for leaf in leaves.read_leaves(at, end)? {
            tree.push(leaf);
        }
        tree.forget_below(end);
        at = end;
    }
    Ok(tree)
}
