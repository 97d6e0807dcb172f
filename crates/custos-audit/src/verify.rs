//! Offline verification of a log folder (`custos audit verify`): recomputes every frame
//! checksum, decodes every record, rebuilds the Merkle tree from the records' canonical JSON,
//! and checks it against every signed checkpoint; checks that `ids.dat` agrees with the record
//! ids the log defines, and that every partition's index file is exactly what its segment
//! implies (so no event can be hidden from searches). It only reads; it never repairs.
//!
//! What it can tell apart: a torn tail after the last checkpoint (a crash: reported, not an
//! error); a frame whose position-bound checksum fails (a changed, removed, inserted or moved
//! event, named exactly); a log shorter than a checkpoint signed for it (truncation); and a
//! log whose events were rewritten with valid checksums (the checkpoint roots no longer match,
//! located between the last matching checkpoint and the first failing one).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::canonical::canonical_json;
use crate::checkpoint::verify_note_chained;
use crate::codec::decode_next;
use crate::ids::{IdFile, IdTable};
use crate::leaves::LeafFile;
use crate::log::{FRAME_HEADER_BYTES, HEADER_BYTES, RECORD_BYTES_MAX, frame_crc, read_header};
use crate::merkle::{Hash, InMemory, LeafSource, MerkleTree, leaf_hash};
use crate::partition::MemIndex;
use crate::retention::read_pruned;
use crate::sealed::{self, index_path};
use crate::{Error, Result};

/// What verification found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Segment files read.
    pub segments: usize,
    /// Records read.
    pub events: u64,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// Size of the largest signed checkpoint.
    pub latest_checkpoint: Option<u64>,
    /// Evidence of damage or tampering, first found first; empty when the log verifies.
    pub problems: Vec<String>,
    /// A torn tail after the last checkpoint (a crash), described; not a problem.
    pub torn_tail: Option<String>,
    /// Records deleted by retention, covered by their kept leaf hashes.
    pub purged_events: u64,
    /// Partition index files compared with their segments.
    pub indexes_checked: usize,
}

impl VerifyReport {
    /// Whether the log verified.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn read_checkpoints(
    dir: &Path,
    verifier_key: &str,
    report: &mut VerifyReport,
) -> Result<BTreeMap<u64, Hash>> {
    let path = dir.join("checkpoints.log");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut signed = BTreeMap::new();
    let mut key = verifier_key.to_string();
    let mut pos = 0usize;
    let mut index = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(note) = bytes
            .get(pos + 8..pos + 8 + len)
            .filter(|n| crc32fast::hash(n) == crc)
        else {
            report.problems.push(format!(
                "checkpoints.log: checkpoint #{index} at byte {pos} is damaged"
            ));
            break;
        };
        match verify_note_chained(&String::from_utf8_lossy(note), &mut key) {
            Ok(checkpoint) => {
                signed.insert(checkpoint.size, checkpoint.root);
            }
            Err(error) => report
                .problems
                .push(format!("checkpoints.log: checkpoint #{index}: {error}")),
        }
        index += 1;
        pos += 8 + len;
    }
    report.checkpoints = signed.len();
    report.latest_checkpoint = signed.keys().next_back().copied();
    Ok(signed)
}

/// The tree being rebuilt, checked against each signed checkpoint the moment it reaches its
/// size (so only the tail of the tree is kept in memory).
struct Rebuild {
    tree: MerkleTree,
    signed: BTreeMap<u64, Hash>,
    /// The largest checkpoint matched so far.
    last_good: u64,
    altered: bool,
}

impl Rebuild {
    fn push(&mut self, leaf: Hash, report: &mut VerifyReport) {
        self.tree.push(leaf);
        let size = self.tree.len();
        let Some(root) = self.signed.get(&size) else {
            return;
        };
        if self.altered {
            return;
        }
        let rebuilt = self
            .tree
            .root(size, &InMemory)
            .expect("the tail of the tree is in memory");
        if rebuilt == *root {
            self.last_good = size;
            self.tree.forget_below(size);
        } else {
            self.altered = true;
            report.problems.push(format!(
                "the first {size} records do not match the checkpoint signed for them: records between seq {} and {} were altered",
                self.last_good,
                size - 1
            ));
        }
    }
}

/// Verifies the log in `dir` against checkpoints signed by `verifier_key` (the root key) and by
/// the keys it handed over to, each checked by the handover's two signatures; `progress` hears
/// (bytes done, bytes in all) as segments are read.
pub fn verify_log(
    dir: &Path,
    verifier_key: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let signed = read_checkpoints(dir, verifier_key, &mut report)?;
    let protected = report.latest_checkpoint.unwrap_or(0);

    let mut segments: Vec<(u64, std::path::PathBuf, String)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(first) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            match first.parse() {
                Ok(first) => segments.push((first, entry.path(), name)),
                Err(_) => report.problems.push(format!("{name}: not a segment name")),
            }
        }
    }
    segments.sort();
    report.segments = segments.len();
    let total: u64 = segments
        .iter()
        .filter_map(|(_, p, _)| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;

    let pruned_path = dir.join("pruned.log");
    let pruned: BTreeMap<u64, u64> = match fs::read(&pruned_path) {
        Ok(bytes) => read_pruned(&bytes)
            .ranges
            .iter()
            .map(|r| (r.first, r.count))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io(&pruned_path, e)),
    };
    let leaves = LeafFile::open_existing(dir)?;
    let id_file = IdFile::open_existing(dir)?;
    let ids_held = match &id_file {
        Some(file) => file.len()?,
        None => 0,
    };
    let mut ids: Option<IdTable> = None;
    let mut rebuild = Rebuild {
        tree: MerkleTree::new(),
        signed,
        last_good: 0,
        altered: false,
    };
    let mut bad_frames = 0u64;
    for (segment_idx, (first, path, name)) in segments.iter().enumerate() {
        let is_last = segment_idx + 1 == segments.len();
        if pruned.contains_key(first) {
            // A purge that crashed before deleting its file; the server finishes it on start.
            continue;
        }
        while rebuild.tree.len() < *first {
            let start = rebuild.tree.len();
            let Some(count) = pruned.get(&start) else {
                break;
            };
            let kept = match &leaves {
                Some(leaves) if leaves.len()? >= start + count => {
                    leaves.read_leaves(start, start + count)?
                }
                _ => {
                    report.problems.push(format!(
                        "leaves.dat lacks the leaves of the purged records {start}..{}",
                        start + count
                    ));
                    vec![[0u8; 32]; *count as usize]
                }
            };
            for leaf in kept {
                rebuild.push(leaf, &mut report);
            }
            report.purged_events += count;
        }
        if *first != rebuild.tree.len() {
            report.problems.push(format!(
                "{name}: starts at record seq {first}, but the segments before end at seq {}",
                rebuild.tree.len()
            ));
        }
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let ids_before = match read_header(path, &bytes) {
            Ok(ids_before) => ids_before,
            Err(error) => {
                report.problems.push(format!("{name}: {error}"));
                continue;
            }
        };
        // The record ids before the first segment come from ids.dat (their segments were
        // purged); after that the log defines them itself.
        let ids = ids.get_or_insert_with(IdTable::default);
        if ids.len() == 0 && ids_before > 0 {
            match &id_file {
                Some(file) if ids_held >= u64::from(ids_before) => {
                    *ids = file.read(u64::from(ids_before))?;
                }
                _ => report.problems.push(format!(
                    "{name}: needs {ids_before} record ids from ids.dat, which holds {ids_held}"
                )),
            }
        }
        if ids.len() != ids_before as usize {
            report.problems.push(format!(
                "{name}: says {ids_before} record ids came before it, but the log numbered {}",
                ids.len()
            ));
        }
        let mut strings = Vec::new();
        // The index is rebuilt only to compare it with the segment's index file.
        let index_file = index_path(path);
        let has_index = !is_last
            && index_file
                .try_exists()
                .map_err(|e| Error::io(&index_file, e))?;
        let mut index = MemIndex::default();
        let mut decoded_all = true;
        let mut pos = HEADER_BYTES as usize;
        while pos < bytes.len() {
            let seq = rebuild.tree.len();
            let header = bytes.get(pos..pos + FRAME_HEADER_BYTES as usize);
            let len = header.map(|h| u32::from_le_bytes(h[..4].try_into().expect("4 bytes")));
            let payload_at = pos + FRAME_HEADER_BYTES as usize;
            let payload = len
                .filter(|l| *l <= RECORD_BYTES_MAX)
                .and_then(|l| bytes.get(payload_at..payload_at + l as usize));
            let Some(payload) = payload else {
                if is_last && seq >= protected {
                    report.torn_tail = Some(format!(
                        "{name}: {} bytes after record seq {} are an incomplete write (a crash), after the last checkpoint",
                        bytes.len() - pos,
                        seq.saturating_sub(1)
                    ));
                } else {
                    report.problems.push(format!(
                        "{name}: record seq {seq} at byte {pos} is cut short ({} bytes left)",
                        bytes.len() - pos
                    ));
                }
                break;
            };
            let crc = u32::from_le_bytes(
                header.expect("read above")[4..]
                    .try_into()
                    .expect("4 bytes"),
            );
            let decoded = decode_next(payload, ids, &mut strings);
            if frame_crc(seq, payload) != crc {
                if is_last && seq >= protected && bad_frames == 0 {
                    report.torn_tail = Some(format!(
                        "{name}: the write of record seq {seq} and after (byte {pos} on) was torn by a crash, after the last checkpoint"
                    ));
                    break;
                }
                bad_frames += 1;
                if bad_frames == 1 {
                    let id = decoded
                        .as_ref()
                        .map(|(e, _)| format!(" (event {})", e.id))
                        .unwrap_or_default();
                    report.problems.push(format!(
                        "{name}: record seq {seq}{id} at byte {pos} fails its checksum: an event was changed, removed, inserted or moved here"
                    ));
                }
            }
            match decoded {
                Ok((event, numbers)) => {
                    rebuild.push(leaf_hash(canonical_json(&event).as_bytes()), &mut report);
                    if has_index {
                        let place = crate::partition::Place {
                            offset: payload_at as u32,
                            len: payload.len() as u32,
                        };
                        index.insert(place, &event, &numbers);
                    }
                }
                Err(error) => {
                    report.problems.push(format!(
                        "{name}: record seq {seq} at byte {pos} does not decode: {error}"
                    ));
                    rebuild.push(leaf_hash(payload), &mut report);
                    decoded_all = false;
                }
            }
            pos = payload_at + payload.len();
        }
        check_ids(&id_file, ids, ids_before, ids_held, name, &mut report)?;
        if has_index && decoded_all {
            let expected = sealed::encode(
                &index,
                &strings,
                bytes.len() as u64,
                *first,
                ids.len() as u32,
            );
            check_index(path, &expected, name, &mut report)?;
        }
        done += bytes.len() as u64;
        progress(done, total);
    }
    if bad_frames > 1 {
        report.problems.push(format!(
            "{} more records after the first fail their checksum",
            bad_frames - 1
        ));
    }
    report.events = rebuild.tree.len();
    if let Some(size) = rebuild.signed.keys().next_back()
        && *size > rebuild.tree.len()
        && !rebuild.altered
    {
        report.problems.push(format!(
            "the log holds {} records but a checkpoint was signed for {size}: records {}..{} were removed (truncation)",
            rebuild.tree.len(),
            rebuild.tree.len(),
            size - 1
        ));
    }
    Ok(report)
}

/// The record ids a segment defined must be in `ids.dat` at the same numbers (the server
/// decodes sealed partitions, and purged ones' successors, with them).
fn check_ids(
    id_file: &Option<IdFile>,
    ids: &IdTable,
    ids_before: u32,
    ids_held: u64,
    name: &str,
    report: &mut VerifyReport,
) -> Result<()> {
    let Some(file) = id_file else {
        return Ok(());
    };
    let end = (ids.len() as u64).min(ids_held);
    if end <= u64::from(ids_before) {
        return Ok(());
    }
    let held = file.read_range(u64::from(ids_before), end)?;
    for (k, id) in held.iter().enumerate() {
        let number = ids_before as usize + k;
        if ids.get(number) != Some(*id) {
            report.problems.push(format!(
                "ids.dat: record id number {number} differs from the one {name} defines"
            ));
            break;
        }
    }
    Ok(())
}

/// A sealed partition's index file must be exactly what its segment implies, or a search could
/// be made to miss events.
fn check_index(
    segment: &Path,
    expected: &[u8],
    name: &str,
    report: &mut VerifyReport,
) -> Result<()> {
    let path = index_path(segment);
    match fs::read(&path) {
        Ok(bytes) => {
            report.indexes_checked += 1;
            if bytes != expected {
                report.problems.push(format!(
                    "{name}: its index file does not match its records (altered or damaged; `custos audit reindex` rebuilds it)"
                ));
            }
            Ok(())
        }
        // Not sealed yet: the server indexes it again on start.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}
