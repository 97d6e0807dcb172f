//! Offline verification of a log folder (`custos audit verify`): recomputes every frame
//! checksum, decodes every record, rebuilds the Merkle tree from the records' canonical JSON,
//! and checks it against every signed checkpoint. It only reads; it never repairs.
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
use crate::checkpoint::verify_note;
use crate::codec::{Dictionary, decode_next};
use crate::log::{FRAME_HEADER_BYTES, HEADER_BYTES, MAGIC, RECORD_BYTES_MAX, frame_crc};
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::retention::read_pruned;
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
        match verify_note(&String::from_utf8_lossy(note), verifier_key) {
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

/// Verifies the log in `dir` against checkpoints signed by `verifier_key`; `progress` hears
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
    let pruned = match fs::read(&pruned_path) {
        Ok(bytes) => read_pruned(&bytes)?.0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io(&pruned_path, e)),
    };
    let mut tree = MerkleTree::new();
    let mut bad_frames = 0u64;
    for (segment_idx, (first, path, name)) in segments.iter().enumerate() {
        let is_last = segment_idx + 1 == segments.len();
        if pruned.contains_key(first) {
            // A purge that crashed before deleting its file; the server finishes it on start.
            continue;
        }
        while tree.len() < *first {
            let Some(hashes) = pruned.get(&tree.len()) else {
                break;
            };
            for hash in hashes {
                tree.push(*hash);
            }
            report.purged_events += hashes.len() as u64;
        }
        if *first != tree.len() {
            report.problems.push(format!(
                "{name}: starts at record seq {first}, but the segments before end at seq {}",
                tree.len()
            ));
        }
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
            report
                .problems
                .push(format!("{name}: has no segment header"));
            continue;
        }
        let mut dictionary = Dictionary::default();
        let mut pos = HEADER_BYTES as usize;
        while pos < bytes.len() {
            let seq = tree.len();
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
            let decoded = decode_next(payload, &mut dictionary);
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
                        .map(|e| format!(" (event {})", e.id))
                        .unwrap_or_default();
                    report.problems.push(format!(
                        "{name}: record seq {seq}{id} at byte {pos} fails its checksum: an event was changed, removed, inserted or moved here"
                    ));
                }
            }
            match decoded {
                Ok(event) => tree.push(leaf_hash(canonical_json(&event).as_bytes())),
                Err(error) => {
                    report.problems.push(format!(
                        "{name}: record seq {seq} at byte {pos} does not decode: {error}"
                    ));
                    tree.push(leaf_hash(payload));
                }
            }
            pos = payload_at + payload.len();
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
    report.events = tree.len();

    let mut last_good = 0;
    for (size, root) in &signed {
        if *size > tree.len() {
            report.problems.push(format!(
                "the log holds {} records but a checkpoint was signed for {size}: records {}..{} were removed (truncation)",
                tree.len(),
                tree.len(),
                size - 1
            ));
            break;
        }
        if tree.root(*size) != *root {
            report.problems.push(format!(
                "the first {size} records do not match the checkpoint signed for them: records between seq {last_good} and {} were altered",
                size - 1
            ));
            break;
        }
        last_good = *size;
    }
    Ok(report)
}
