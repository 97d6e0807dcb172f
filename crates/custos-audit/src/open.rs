//! Opening the log: from the files in its folder to the state the writer and readers share.
//! Everything is checked before anything is written, so a start refused for damage leaves the
//! folder as it found it.
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

use crate::canonical::event_leaf_hash;
use crate::codec::decode_next;
use crate::handles::{Handle, Handles};
use crate::ids::{IdDict, IdFile};
use crate::index::{PartState, Partition};
use crate::integrity::Integrity;
use crate::leaves::LeafFile;
use crate::log::{
    ActiveSegment, DAY_US, LogConfig, Seq, cut_segment, is_unfinished_segment, list_segments,
    read_header_of, scan_segment,
};
use crate::merkle::{LeafSource, MerkleTree, TILE_LEAVES};
use crate::partition::MemIndex;
use crate::retention::{PrunedFile, PurgeClaim};
use crate::sealed::{SealedIndex, index_path};
use crate::{Error, Result};

/// Leaves read from `leaves.dat` at a time while rebuilding the tree.
const LEAF_CHUNK: u64 = 1 << 20;

/// What opening found, handed to the writer and readers.
pub(crate) struct Opened {
    pub(crate) lock: File,
    pub(crate) partitions: Vec<Partition>,
    /// The budget of open files its partitions' handles share.
    pub(crate) handles: Arc<Handles>,
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
    let file = crate::files::open_read_write(&path)?;
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
    crate::files::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

fn segment_bytes(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}

/// Deletes every partition index file in `dir` (and any half-written one), so the next open
/// rebuilds them all from the segments.
pub(crate) fn remove_indexes(dir: &Path) -> Result<usize> {
    crate::treefile::remove(dir)?;
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
    crate::files::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(removed)
}

/// What opening found to write, once the whole log is known to be sound.
struct Repairs {
    integrity: crate::integrity::IntegrityRepairs,
    /// `pruned.log`'s torn last frame: the length to cut it to.
    pruned_torn_at: Option<u64>,
    /// Segments of accounted purges that a crash left behind, and a stub of a segment that a
    /// crash interrupted while creating it.
    delete: Vec<PathBuf>,
    /// `ids.dat` and `leaves.dat` cut back to what the sealed prefix covers, then the record
    /// ids and leaves the scanned segments define written after it.
    ids_from: u64,
    ids: Vec<uuid::Uuid>,
    leaves_from: Seq,
    leaves: Vec<(Seq, Vec<crate::merkle::Hash>)>,
    /// The last segment's torn tail: cut it to this length.
    cut_tail: Option<(PathBuf, u64)>,
    /// No segment is left: start one at this seq.
    create_active: Option<Seq>,
}

/// Opens the log in `config.dir`, whose lock the caller holds.
///
/// Everything is read and checked first — the checkpoints and their key chain, the purged
/// ranges and the events that account for them, the sealed prefix's record ids and leaves, the
/// unsealed segments frame by frame, the tree against the latest signed checkpoint — and only
/// when all of it holds are the derived files brought up to date, a crash's torn writes cut
/// and the segments of finished purges deleted. A start refused for damage writes nothing in
/// the folder.
pub(crate) fn open(config: &LogConfig, lock: File) -> Result<Opened> {
    // Opening creates the log's files when they are missing; a refused start takes back the
    // empty ones it made, so the folder is as it was.
    let missing: Vec<PathBuf> = LOG_FILES
        .iter()
        .map(|name| config.dir.join(name))
        .filter(|path| matches!(path.try_exists(), Ok(false)))
        .collect();
    let opened = open_checked(config, lock);
    if opened.is_err() {
        for path in missing {
            if fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = fs::remove_file(&path);
            }
        }
    }
    opened
}

/// The files beside the segments that opening creates when missing.
const LOG_FILES: [&str; 4] = ["checkpoints.log", "pruned.log", "ids.dat", "leaves.dat"];

fn open_checked(config: &LogConfig, lock: File) -> Result<Opened> {
    let dir = &config.dir;
    let handles = Handles::new(config.open_files_max);
    let seeds: Vec<[u8; 32]> = std::iter::once(config.signing_seed)
        .chain(config.next_signing_seed)
        .collect();
    let (integrity, protected, integrity_repairs) = Integrity::open(dir, &config.origin, &seeds)?;
    let (pruned, pruned_torn_at) = PrunedFile::open(dir)?;
    let id_file = IdFile::open(dir)?;
    let mut repairs = Repairs {
        integrity: integrity_repairs,
        pruned_torn_at,
        delete: Vec::new(),
        ids_from: 0,
        ids: Vec::new(),
        leaves_from: 0,
        leaves: Vec::new(),
        cut_tail: None,
        create_active: None,
    };

    let mut segments = Vec::new();
    for (first, path) in list_segments(dir)? {
        if pruned.count_at(first).is_some() {
            // A purge that crashed after recording its range but before deleting the files;
            // deleted below once its range is found accounted for.
            repairs.delete.push(path);
        } else {
            segments.push((first, path));
        }
    }
    if let Some((_, last)) = segments.last()
        && is_unfinished_segment(last)?
    {
        // Crashed while creating it: it holds nothing; the segment before goes on.
        repairs.delete.push(last.clone());
        segments.pop();
    }
    let purged_end = pruned
        .ranges
        .iter()
        .map(|r| r.first + r.count)
        .max()
        .unwrap_or(0);

    // The sealed prefix: segments (but the last) with an index file that matches them.
    let mut sealed = Vec::new();
    for (first, path) in segments.iter().take(segments.len().saturating_sub(1)) {
        match SealedIndex::open(&handles, path, *first, segment_bytes(path)?)? {
            Some(index) => sealed.push(index),
            None => break,
        }
    }
    let first_unsealed = sealed.len();
    let (unsealed_first, ids_before) = match segments.get(first_unsealed) {
        Some((first, path)) => (*first, u64::from(read_header_of(path)?)),
        None => (purged_end, id_file.len()?),
    };
    let ids_held = id_file.len()?;
    if ids_held < ids_before {
        return Err(Error::Corrupted(format!(
            "ids.dat holds {ids_held} record ids, but the sealed partitions need {ids_before}"
        )));
    }
    let mut ids = IdDict::from_table(id_file.read(ids_before)?);
    repairs.ids_from = ids_before;

    let leaves_held = integrity.leaves.len()?;
    if leaves_held < unsealed_first {
        return Err(Error::Corrupted(format!(
            "leaves.dat holds {leaves_held} leaves, but the sealed partitions need {unsealed_first}"
        )));
    }
    repairs.leaves_from = unsealed_first;
    let kept = crate::treefile::read(dir, unsealed_first)?;
    let mut kept_leaves = kept.as_ref().map_or(0, MerkleTree::len);
    let mut tree = extend_tree(kept.unwrap_or_default(), &integrity.leaves, unsealed_first)?;

    let mut partitions = Vec::new();
    let mut next_seq: Seq = 0;
    let fill_gap = |partitions: &mut Vec<Partition>, next_seq: &mut Seq, first: Seq| {
        while *next_seq < first {
            let Some(count) = pruned.count_at(*next_seq) else {
                return Err(Error::Corrupted(format!(
                    "records {next_seq}..{first} are missing and no retention purge explains it"
                )));
            };
            partitions.push(Partition {
                first_seq: *next_seq,
                n_events: count,
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
            file: Some(Handle::open(&handles, path)?),
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
                let leaf = event_leaf_hash(&event);
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
        if scanned.torn {
            repairs.cut_tail = Some((path.clone(), scanned.intact_len));
        }
        repairs.leaves.push((*first, leaves));
        let file = Some(Handle::open(&handles, path)?);
        let state = if is_last {
            active_day = index.times.first().map(|t| t.div_euclid(DAY_US));
            active = Some((path.clone(), *first, scanned.intact_len, scanned.n_records));
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
    if segments.is_empty() {
        fill_gap(&mut partitions, &mut next_seq, purged_end)?;
        repairs.create_active = Some(purged_end);
    }
    repairs.ids = ids.table.since(ids_before as usize);
    *integrity.tree.write().expect("tree lock") = tree;
    let mut mismatch = integrity.check_signed(&ids.table)?;
    if mismatch.is_some() && kept_leaves > 0 {
        // `tree.dat` may be what differs: the tree again from `leaves.dat` alone.
        let mut tree = extend_tree(MerkleTree::new(), &integrity.leaves, unsealed_first)?;
        for leaf in repairs.leaves.iter().flat_map(|(_, leaves)| leaves) {
            tree.push(*leaf);
        }
        *integrity.tree.write().expect("tree lock") = tree;
        mismatch = integrity.check_signed(&ids.table)?;
        kept_leaves = 0;
    }
    if let Some(size) = mismatch {
        return Err(Error::Corrupted(locate_mismatch(
            &partitions,
            &ids,
            &integrity,
            size,
            unsealed_first,
        )?));
    }
    check_purges(&pruned, &partitions, &ids, &integrity, protected)?;
    check_unsigned(&partitions, &ids, protected)?;

    // Sound: bring the derived files up to date, cut what crashes left, finish purges.
    integrity.repair(&repairs.integrity)?;
    if let Some(len) = repairs.pruned_torn_at {
        pruned.cut_torn(len)?;
    }
    for path in &repairs.delete {
        delete_partition_files(path, dir)?;
    }
    {
        // `tree.dat` catches up with the sealed prefix (a log it never covered, or a crash
        // between a seal and its write).
        let tree = integrity.tree.read().expect("tree lock");
        let cold = tree.cold_tiles() * TILE_LEAVES;
        if cold > kept_leaves {
            crate::treefile::write(dir, cold, &tree.upper_levels(cold))?;
        }
    }
    id_file.truncate(repairs.ids_from)?;
    id_file.write(repairs.ids_from, &repairs.ids)?;
    integrity.leaves.truncate(repairs.leaves_from)?;
    for (first, leaves) in &repairs.leaves {
        integrity.leaves.write(*first, leaves)?;
    }
    if let Some((path, len)) = &repairs.cut_tail {
        cut_segment(path, *len)?;
    }
    let active = match (active, repairs.create_active) {
        (Some((path, first, len, n_records)), _) => {
            ActiveSegment::resume(path, first, len, n_records)?
        }
        (None, Some(first)) => {
            let active = ActiveSegment::create(dir, first, ids.table.len() as u32)?;
            partitions.push(Partition {
                first_seq: first,
                n_events: 0,
                path: active.path().to_path_buf(),
                file: Some(Handle::open(&handles, active.path())?),
                strings: Arc::new(RwLock::new(Vec::new())),
                state: PartState::Live(Box::default()),
            });
            active
        }
        (None, None) => unreachable!("either the last segment goes on or a new one starts"),
    };

    // `verifier.key` beside the log names the chain of keys for `custos audit verify`; a
    // verifier that must not trust this folder pins the root key.

    let ids_len = ids.table.len();
    Ok(Opened {
        lock,
        partitions,
        handles,
        ids,
        ids_len,
        id_file,
        integrity,
        pruned,
        active,
        active_day,
        to_seal,
    })
}

/// Says where the first `size` records and their leaves stop matching the signed checkpoint:
/// each record's hash is compared with its leaf in `leaves.dat`. Below `unsealed_first` the
/// tree was built from `leaves.dat`, so a difference there is `leaves.dat`'s (or a sealed
/// record's); above it the tree was built from the records, so a difference is the record's.
fn locate_mismatch(
    partitions: &[Partition],
    ids: &IdDict,
    integrity: &Integrity,
    size: Seq,
    unsealed_first: Seq,
) -> Result<String> {
    let held = integrity.leaves.len()?;
    for partition in partitions {
        for ordinal in 0..partition.n_events {
            let seq = partition.first_seq + ordinal;
            if seq >= size.min(held) {
                break;
            }
            let Some(event) = partition.read_ordinal(ordinal, &ids.table)? else {
                break;
            };
            let computed = event_leaf_hash(&event);
            let stored = integrity.leaves.read_leaves(seq, seq + 1)?[0];
            if computed == stored {
                continue;
            }
            return Ok(if seq < unsealed_first {
                format!(
                    "leaves.dat: the leaf of record seq {seq} is not that record's hash, and the signed checkpoint of {size} records does not match (leaves.dat, or {}, was altered)",
                    partition.path.display()
                )
            } else {
                format!(
                    "{} record seq {seq} was altered: it does not match the checkpoint signed for the first {size} records",
                    partition.path.display()
                )
            });
        }
    }
    Ok(format!(
        "the log's first {size} records do not match the checkpoint signed for them (`custos audit verify` names where)"
    ))
}

/// The microseconds at which the record at `seq` was made (its UUIDv7 id), unless purged.
fn made_at(partitions: &[Partition], ids: &IdDict, seq: Seq) -> Result<Option<i64>> {
    let Some(holder) = partitions
        .iter()
        .find(|p| p.first_seq <= seq && seq < p.first_seq + p.n_events)
    else {
        return Ok(None);
    };
    Ok(holder
        .read_ordinal(seq - holder.first_seq, &ids.table)?
        .and_then(|event| event.id.get_timestamp())
        .map(|t| t.to_unix())
        .map(|(seconds, nanos)| seconds as i64 * 1_000_000 + i64::from(nanos / 1000)))
}

/// Refuses a log whose records after the latest checkpoint were made over a longer time than
/// the signing interval allows (checkpoints were removed): the server signs at least every
/// second while events come, and on every start, so only the last moments before a crash are
/// ever unsigned.
fn check_unsigned(partitions: &[Partition], ids: &IdDict, protected: Seq) -> Result<()> {
    let end = partitions.last().map_or(0, |p| p.first_seq + p.n_events);
    if protected >= end {
        return Ok(());
    }
    let (Some(first), Some(last)) = (
        made_at(partitions, ids, protected)?,
        made_at(partitions, ids, end - 1)?,
    ) else {
        return Ok(());
    };
    if last - first > crate::UNSIGNED_MARGIN_US {
        return Err(Error::Corrupted(format!(
            "checkpoints.log: no checkpoint covers records {protected}..{end}, though they were made over {} s: checkpoints were removed",
            (last - first) / 1_000_000
        )));
    }
    Ok(())
}

/// Checks that every purged range is accounted for: by its own `PurgeAuditLog` event — an
/// event of Custos, covered by a signed checkpoint, matching its leaf, naming exactly that
/// range and the ranges before it — or, once that event was itself purged, by a later purge
/// event, whose digest of the ranges before it covers this one. Nothing is deleted or accepted
/// on the strength of `pruned.log` alone.
fn check_purges(
    pruned: &PrunedFile,
    partitions: &[Partition],
    ids: &IdDict,
    integrity: &Integrity,
    protected: Seq,
) -> Result<()> {
    let ranges = &pruned.ranges;
    let mut covered_below = 0usize;
    let mut own = vec![false; ranges.len()];
    for (at, range) in ranges.iter().enumerate() {
        let Some(seq) = range.event else {
            continue;
        };
        let unaccounted = |why: String| {
            Error::Corrupted(format!(
                "pruned.log: range #{at} (records {}..{}) is not accounted for: {why}",
                range.first,
                range.first + range.count
            ))
        };
        let holder = partitions
            .iter()
            .find(|p| p.first_seq <= seq && seq < p.first_seq + p.n_events);
        let Some(holder) = holder else {
            return Err(unaccounted(format!(
                "its purge event, seq {seq}, is not in the log"
            )));
        };
        let Some(event) = holder.read_ordinal(seq - holder.first_seq, &ids.table)? else {
            // Its event was purged since; a later purge event vouches for it.
            continue;
        };
        if seq >= protected {
            return Err(unaccounted(format!(
                "its purge event, seq {seq}, is not covered by a signed checkpoint"
            )));
        }
        let tree = integrity.tree.read().expect("tree lock");
        if event_leaf_hash(&event) != tree.leaf(seq, &integrity.leaves)? {
            return Err(unaccounted(format!(
                "its purge event, seq {seq}, does not match its leaf"
            )));
        }
        PurgeClaim::accounts(&event, seq, ranges, at).map_err(unaccounted)?;
        own[at] = true;
        covered_below = covered_below.max(at);
    }
    if let Some(at) = (0..ranges.len()).find(|at| !own[*at] && *at >= covered_below) {
        let range = ranges[at];
        return Err(Error::Corrupted(format!(
            "pruned.log: range #{at} (records {}..{}) is not accounted for by any signed purge event",
            range.first,
            range.first + range.count
        )));
    }
    Ok(())
}

/// `tree` (of the leaves `tree.dat` kept, or none) grown to the first `n` leaves of
/// `leaves.dat`, keeping only what the tail needs in memory.
fn extend_tree(mut tree: MerkleTree, leaves: &LeafFile, n: u64) -> Result<MerkleTree> {
    let mut at = tree.len();
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
