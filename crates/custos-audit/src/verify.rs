//! Offline verification of a log folder (`custos audit verify`): recomputes every frame
//! checksum, decodes every record, rebuilds the Merkle tree from the records' canonical JSON,
//! and checks it against every signed checkpoint (and one kept outside, when given); checks
//! that `ids.dat` and `leaves.dat` agree with the records, that every purged range is accounted
//! for by a signed purge event, that the log is covered by checkpoints as the signing interval
//! promises, and that every partition's index file is exactly what its segment implies (so no
//! event can be hidden from searches). It only reads; it never repairs.
//!
//! Each kind of damage is one line: the first place it is seen and what is wrong; what follows
//! from it (the next checkpoint not matching, the frames after a bad one) is not repeated.
//! What it tells apart: a torn tail after the last checkpoint with nothing intact after it (a
//! crash: reported, not an error); a frame whose position-bound checksum fails (a changed,
//! removed, inserted or moved event, named exactly); a log shorter than a checkpoint signed for
//! it (truncation); and a log whose events were rewritten with valid checksums (the checkpoint
//! roots no longer match, located between the last matching checkpoint and the first failing
//! one).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::canonical::event_leaf_hash;
use crate::checkpoint::{IdsDigest, verify_note, verify_note_chained};
use crate::codec::decode_next;
use crate::event::AuditEvent;
use crate::ids::{IdFile, IdTable};
use crate::leaves::LeafFile;
use crate::log::{
    FRAME_HEADER_BYTES, HEADER_BYTES, RECORD_BYTES_MAX, frame_crc, intact_after, read_header,
};
use crate::merkle::{Hash, InMemory, LeafSource, MerkleTree, leaf_hash};
use crate::partition::{MemIndex, Place};
use crate::retention::{PrunedRange, PurgeClaim, read_pruned};
use crate::sealed::{self, index_path};
use crate::{Error, Result};

/// How long events may go unsigned before the last checkpoint is missing rather than not yet
/// made: the server signs at least every second while events come, so only the last second or
/// so before a crash or a stop is ever unsigned; ten seconds is the margin, microseconds.
pub const UNSIGNED_MARGIN_US: i64 = 10_000_000;

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
    /// The size of the checkpoint kept outside that the log was checked against.
    pub witness: Option<u64>,
}

impl VerifyReport {
    /// Whether the log verified.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the signed checkpoints say, by tree size.
#[derive(Default)]
struct Signed {
    roots: BTreeMap<u64, Hash>,
    ids: BTreeMap<u64, IdsDigest>,
    /// The verifier keys trusted, root first (each passed on by a handover both signed).
    keys: Vec<String>,
    /// The notes `checkpoints.log` holds, whether or not they verified.
    notes: usize,
}

/// Every checkpoint of `checkpoints.log` up to the first signed for more than `until` records.
fn read_checkpoints(
    dir: &Path,
    verifier_key: &str,
    until: u64,
    report: &mut VerifyReport,
) -> Result<Signed> {
    let path = dir.join("checkpoints.log");
    let bytes = match crate::files::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut signed = Signed {
        keys: vec![verifier_key.to_string()],
        ..Signed::default()
    };
    let mut key = verifier_key.to_string();
    let mut pos = 0usize;
    let mut index = 0;
    while pos < bytes.len() {
        let rest = bytes.len() - pos;
        let len = bytes
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let Some(len) = len.filter(|len| rest >= 8 + len) else {
            report.torn_tail.get_or_insert_with(|| {
                format!("checkpoints.log: {rest} bytes after checkpoint #{index} are an incomplete write (a crash)")
            });
            break;
        };
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let note = &bytes[pos + 8..pos + 8 + len];
        if crc32fast::hash(note) != crc {
            report.problems.push(format!(
                "checkpoints.log: checkpoint #{index} at byte {pos} fails its checksum"
            ));
        } else {
            match verify_note_chained(&String::from_utf8_lossy(note), &mut key) {
                Ok(checkpoint) if checkpoint.size > until => break,
                Ok(checkpoint) => {
                    if signed.keys.last() != Some(&key) {
                        signed.keys.push(key.clone());
                    }
                    signed.roots.insert(checkpoint.size, checkpoint.root);
                    if let Some(ids) = checkpoint.ids {
                        signed.ids.insert(checkpoint.size, ids);
                    }
                }
                Err(error) => report.problems.push(format!(
                    "checkpoints.log: checkpoint #{index} at byte {pos}: {error}"
                )),
            }
        }
        index += 1;
        pos += 8 + len;
    }
    signed.notes = index;
    report.checkpoints = signed.roots.len();
    report.latest_checkpoint = signed.roots.keys().next_back().copied();
    Ok(signed)
}

/// Adds a checkpoint kept outside the folder: it must be signed by a trusted key, and the log
/// must not sign another root for its size (a split view).
fn add_witness(note: &str, signed: &mut Signed, report: &mut VerifyReport) {
    let checkpoint = signed
        .keys
        .iter()
        .find_map(|key| verify_note(note, key).ok());
    let Some(checkpoint) = checkpoint else {
        report.problems.push(
            "the checkpoint kept outside is not signed by the pinned key or a key it handed over to"
                .into(),
        );
        return;
    };
    report.witness = Some(checkpoint.size);
    match signed.roots.get(&checkpoint.size) {
        Some(root) if *root != checkpoint.root => report.problems.push(format!(
            "the checkpoint kept outside and checkpoints.log sign different roots for {} records: a split view",
            checkpoint.size
        )),
        _ => {
            signed.roots.insert(checkpoint.size, checkpoint.root);
            if let Some(ids) = checkpoint.ids {
                signed.ids.entry(checkpoint.size).or_insert(ids);
            }
        }
    }
}

/// The tree being rebuilt, checked against each signed checkpoint the moment it reaches its
/// size (so only the tail of the tree is kept in memory).
struct Rebuild {
    tree: MerkleTree,
    roots: BTreeMap<u64, Hash>,
    /// The largest checkpoint matched so far.
    last_good: u64,
    /// Whether a mismatch was reported (later checkpoints follow from it).
    altered: bool,
    /// Whether a bad frame was reported before the next checkpoint (which then fails too).
    explained: bool,
}

impl Rebuild {
    fn push(&mut self, leaf: Hash, report: &mut VerifyReport) {
        self.tree.push(leaf);
        let size = self.tree.len();
        let Some(root) = self.roots.get(&size) else {
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
            if !self.explained {
                report.problems.push(format!(
                    "the first {size} records do not match the checkpoint signed for them: records between seq {} and {} were altered",
                    self.last_good,
                    size - 1
                ));
            }
        }
    }
}

/// Leaves of `leaves.dat` read in chunks as the scan moves forward.
#[derive(Default)]
struct LeafCursor {
    start: u64,
    chunk: Vec<Hash>,
}

impl LeafCursor {
    const CHUNK: u64 = 1 << 16;

    fn get(&mut self, file: &LeafFile, seq: u64, held: u64) -> Result<Hash> {
        let end = self.start + self.chunk.len() as u64;
        if seq < self.start || seq >= end {
            self.start = seq;
            self.chunk = file.read_leaves(seq, (seq + Self::CHUNK).min(held))?;
        }
        Ok(self.chunk[(seq - self.start) as usize])
    }
}

/// Where leaves go, in log order: the tree being rebuilt, and `leaves.dat` compared with them.
struct LeafSink {
    rebuild: Rebuild,
    leaves: Option<LeafFile>,
    leaves_held: u64,
    /// The first record whose leaf `leaves.dat` holds otherwise.
    leaves_differ: Option<u64>,
    cursor: LeafCursor,
}

impl LeafSink {
    /// A decoded record's leaf at `seq`: compared with `leaves.dat`, then added to the tree.
    fn record(&mut self, seq: u64, leaf: Hash, report: &mut VerifyReport) -> Result<()> {
        if self.leaves_differ.is_none()
            && seq < self.leaves_held
            && let Some(kept) = &self.leaves
            && self.cursor.get(kept, seq, self.leaves_held)? != leaf
        {
            self.leaves_differ = Some(seq);
        }
        self.rebuild.push(leaf, report);
        Ok(())
    }
}

/// What the tree takes next, in log order.
enum Queued {
    /// A decoded record at this seq: its leaf comes from the hashing thread.
    Record(u64),
    /// A leaf known already (a record that does not decode is hashed as its bytes).
    Leaf(Hash),
    /// A bad frame was reported here: the next checkpoint failing follows from it.
    Explained,
    /// Damage found here, reported in log order with the checkpoints' findings.
    Problem(String),
}

/// Records on their way to the tree and the segment's index. A record's leaf (its canonical
/// JSON's SHA-256) and its entry in the index rebuilt to check the index file need nothing but
/// the record and the ones before it in the index, so each chunk of decoded records is hashed on
/// a second thread and indexed on a third while this one decodes the next chunk; the leaves come
/// back in log order.
struct LeafQueue {
    records: Chunk,
    queued: Vec<Queued>,
    /// The leaves of the decoded records queued, in order, as far as they are hashed.
    leaves: Vec<Hash>,
    /// Whether the segment's index is rebuilt.
    indexing: bool,
    to_hasher: std::sync::mpsc::SyncSender<Arc<Chunk>>,
    from_hasher: std::sync::mpsc::Receiver<(Vec<Hash>, Arc<Chunk>)>,
    to_indexer: std::sync::mpsc::SyncSender<ToIndexer>,
    from_indexer: std::sync::mpsc::Receiver<FromIndexer>,
    /// A chunk is in flight, and whether the indexer has it too.
    in_flight: Option<bool>,
    /// The seq of the next record queued.
    next_seq: u64,
}

/// A chunk of decoded records: each with its record-id numbers and its place in the segment.
type Chunk = Vec<(AuditEvent, Vec<u32>, Place)>;

enum ToIndexer {
    /// Add these records to the segment's index.
    Add(Arc<Chunk>),
    /// Hand over the segment's index and start the next one empty.
    Take,
}

enum FromIndexer {
    Added(Arc<Chunk>),
    Index(Box<MemIndex>),
}

impl LeafQueue {
    /// Records hashed and indexed in one go on the other threads.
    const CHUNK: usize = 2048;

    /// A queue for the segment beginning at `seq`, its index rebuilt when `indexing`, whose
    /// hashing and indexing threads run in `scope` until the queue is dropped. Each chunk comes
    /// back to this thread, to be freed by the thread that allocated it.
    fn new<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        seq: u64,
        indexing: bool,
    ) -> Self {
        let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<Arc<Chunk>>(1);
        let (hashed, from_hasher) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for records in chunks {
                let leaves = records
                    .iter()
                    .map(|(record, _, _)| event_leaf_hash(record))
                    .collect();
                if hashed.send((leaves, records)).is_err() {
                    return;
                }
            }
        });
        let (to_indexer, jobs) = std::sync::mpsc::sync_channel::<ToIndexer>(1);
        let (indexed, from_indexer) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            let mut index = MemIndex::for_comparison();
            for job in jobs {
                let answer = match job {
                    ToIndexer::Add(records) => {
                        for (record, numbers, place) in records.iter() {
                            index.insert(*place, record, numbers);
                        }
                        FromIndexer::Added(records)
                    }
                    ToIndexer::Take => {
                        index.settle();
                        FromIndexer::Index(Box::new(std::mem::replace(
                            &mut index,
                            MemIndex::for_comparison(),
                        )))
                    }
                };
                if indexed.send(answer).is_err() {
                    return;
                }
            }
        });
        LeafQueue {
            records: Vec::new(),
            queued: Vec::new(),
            leaves: Vec::new(),
            indexing,
            to_hasher,
            from_hasher,
            to_indexer,
            from_indexer,
            in_flight: None,
            next_seq: seq,
        }
    }

    fn push_event(&mut self, event: AuditEvent, numbers: Vec<u32>, place: Place) -> Result<()> {
        self.queued.push(Queued::Record(self.next_seq));
        self.records.push((event, numbers, place));
        self.next_seq += 1;
        if self.records.len() >= Self::CHUNK {
            self.dispatch()?;
        }
        Ok(())
    }

    fn push_leaf(&mut self, leaf: Hash) {
        self.queued.push(Queued::Leaf(leaf));
        self.next_seq += 1;
    }

    fn explain(&mut self) {
        self.queued.push(Queued::Explained);
    }

    fn problem(&mut self, problem: String) {
        self.queued.push(Queued::Problem(problem));
    }

    /// Takes the leaves of the chunk in flight, then hands the records decoded since to the
    /// other threads.
    fn dispatch(&mut self) -> Result<()> {
        self.join()?;
        let records = Arc::new(std::mem::take(&mut self.records));
        let gone = || Error::Corrupted("the hashing or indexing thread is gone".into());
        if self.indexing {
            self.to_indexer
                .send(ToIndexer::Add(records.clone()))
                .map_err(|_| gone())?;
        }
        self.to_hasher.send(records).map_err(|_| gone())?;
        self.in_flight = Some(self.indexing);
        Ok(())
    }

    /// Takes the leaves of the chunk in flight, if any.
    fn join(&mut self) -> Result<()> {
        let Some(indexed) = self.in_flight.take() else {
            return Ok(());
        };
        let failed = || Error::Corrupted("the hashing or indexing thread failed".into());
        let (leaves, records) = self.from_hasher.recv().map_err(|_| failed())?;
        if indexed {
            match self.from_indexer.recv().map_err(|_| failed())? {
                FromIndexer::Added(other) => drop(other),
                FromIndexer::Index(_) => return Err(failed()),
            }
        }
        drop(records);
        self.leaves.extend(leaves);
        Ok(())
    }

    /// Every record queued is hashed and indexed: the segment's rebuilt index, and what goes
    /// to the tree.
    fn finish(mut self) -> Result<(MemIndex, Vec<Queued>, Vec<Hash>)> {
        if !self.records.is_empty() {
            self.dispatch()?;
        }
        self.join()?;
        let failed = || Error::Corrupted("the indexing thread failed".into());
        self.to_indexer
            .send(ToIndexer::Take)
            .map_err(|_| failed())?;
        let index = match self.from_indexer.recv().map_err(|_| failed())? {
            FromIndexer::Index(index) => *index,
            FromIndexer::Added(_) => return Err(failed()),
        };
        Ok((index, self.queued, self.leaves))
    }
}

/// Applies `queued` in order, decoded records taking `leaves` in turn.
fn apply(
    queued: Vec<Queued>,
    leaves: Vec<Hash>,
    sink: &mut LeafSink,
    report: &mut VerifyReport,
) -> Result<()> {
    let mut leaves = leaves.into_iter();
    for entry in queued {
        match entry {
            Queued::Record(seq) => {
                let leaf = leaves
                    .next()
                    .ok_or_else(|| Error::Corrupted("a record without its leaf".into()))?;
                sink.record(seq, leaf, report)?;
            }
            Queued::Leaf(leaf) => sink.rebuild.push(leaf, report),
            Queued::Explained => sink.rebuild.explained = true,
            Queued::Problem(problem) => report.problems.push(problem),
        }
    }
    Ok(())
}

/// A segment file of the folder.
struct Segment {
    /// The seq of its first record, as its name says.
    first: u64,
    path: std::path::PathBuf,
    name: String,
}

/// What every segment's scan is checked against.
struct Context<'a> {
    /// The size of the largest signed checkpoint.
    protected: u64,
    /// Records from this seq on are not read (a live log's, made after its verification began).
    until: u64,
    id_file: &'a Option<IdFile>,
    ids_held: u64,
}

/// One segment read through ([`scan`]): what it adds to the tree, in order, with the damage
/// found on the way, and what the checks after the last segment need of it.
struct Scan {
    /// Record ids its header says were numbered before it.
    ids_before: u32,
    queued: Vec<Queued>,
    leaves: Vec<Hash>,
    /// The log's record ids after the segment.
    ids: IdTable,
    /// Whether every record id the segment numbered is in `ids.dat` at that number.
    ids_agree: bool,
    bad_frames: u64,
    torn_tail: Option<String>,
    /// Purge events, by seq.
    purges: Vec<(u64, AuditEvent)>,
    /// The first record not covered by a signed checkpoint, and when it was made.
    first_unsigned_made: Option<(u64, i64)>,
    /// When the newest of its records was made.
    last_made: Option<i64>,
    indexes_checked: usize,
    bytes: u64,
}

/// What the log holds before a segment, as its scan takes it.
struct Before {
    /// The seq its first record takes.
    seq: u64,
    /// The log's record ids before it.
    ids: IdTable,
    /// Frames that failed their checksums before it.
    bad_frames: u64,
}

/// Reads the segment `bytes` (its header said `ids_before`) as the records after `before`,
/// numbering the record ids it defines after those: checks each frame, decodes and hashes each
/// record, and compares its index file (unless it is the last segment, still being written)
/// with what its records imply.
fn scan(
    segment: &Segment,
    bytes: &[u8],
    ids_before: u32,
    before: Before,
    is_last: bool,
    context: &Context,
) -> Result<Scan> {
    let Segment { first, path, name } = segment;
    let Before {
        seq: start,
        mut ids,
        bad_frames: bad_before,
    } = before;
    let protected = context.protected;
    let mut strings = Vec::new();
    // The index is rebuilt only to compare it with the segment's index file.
    let index_file = index_path(path);
    let has_index = !is_last
        && index_file
            .try_exists()
            .map_err(|e| Error::io(&index_file, e))?;
    let mut decoded_all = true;
    let mut bad_in_segment = false;
    let mut bad_frames = 0u64;
    let mut torn_tail = None;
    let mut purges = Vec::new();
    let mut first_unsigned_made = None;
    let mut last_made: Option<i64> = None;
    let mut pos = HEADER_BYTES as usize;
    std::thread::scope(|threads| -> Result<Scan> {
        let mut queue = LeafQueue::new(threads, start, has_index);
        while pos < bytes.len() && queue.next_seq < context.until {
            let seq = queue.next_seq;
            let header = bytes.get(pos..pos + FRAME_HEADER_BYTES as usize);
            let len = header.map(|h| u32::from_le_bytes(h[..4].try_into().expect("4 bytes")));
            let payload_at = pos + FRAME_HEADER_BYTES as usize;
            let payload = len
                .filter(|l| *l <= RECORD_BYTES_MAX)
                .and_then(|l| bytes.get(payload_at..payload_at + l as usize));
            let crc_ok = payload.is_some_and(|payload| {
                let crc = u32::from_le_bytes(
                    header.expect("read above")[4..]
                        .try_into()
                        .expect("4 bytes"),
                );
                frame_crc(seq, payload) == crc
            });
            if !crc_ok
                && bad_before + bad_frames == 0
                && is_last
                && seq >= protected
                && !intact_after(bytes, pos, seq)
            {
                torn_tail = Some(format!(
                    "{name}: {} bytes from byte {pos} (record seq {seq} on) are a write a crash tore, after the last checkpoint",
                    bytes.len() - pos
                ));
                break;
            }
            let Some(payload) = payload else {
                queue.problem(format!(
                    "{name}: record seq {seq} at byte {pos} is cut short ({} bytes left){}",
                    bytes.len() - pos,
                    if seq < protected {
                        ", inside a signed checkpoint"
                    } else {
                        ""
                    }
                ));
                queue.explain();
                break;
            };
            let decoded = decode_next(payload, &mut ids, &mut strings);
            if !crc_ok {
                bad_frames += 1;
                queue.explain();
                if !bad_in_segment {
                    bad_in_segment = true;
                    let id = decoded
                        .as_ref()
                        .map(|(e, _)| format!(" (event {})", e.id))
                        .unwrap_or_default();
                    queue.problem(format!(
                        "{name}: record seq {seq}{id} at byte {pos} fails its checksum: an event was changed, removed, inserted or moved here"
                    ));
                }
            }
            match decoded {
                Ok((event, numbers)) => {
                    if let Some(made) = made_us(&event) {
                        last_made = Some(last_made.map_or(made, |l| l.max(made)));
                        if seq >= protected && first_unsigned_made.is_none() {
                            first_unsigned_made = Some((seq, made));
                        }
                    }
                    if event.operation == "PurgeAuditLog" && event.workload == "Custos" {
                        purges.push((seq, event.clone()));
                    }
                    let place = Place {
                        offset: payload_at as u32,
                        len: payload.len() as u32,
                    };
                    queue.push_event(event, numbers, place)?;
                }
                Err(error) => {
                    if !bad_in_segment {
                        queue.problem(format!(
                            "{name}: record seq {seq} at byte {pos} does not decode: {error}"
                        ));
                    }
                    bad_in_segment = true;
                    queue.explain();
                    queue.push_leaf(leaf_hash(payload));
                    decoded_all = false;
                }
            }
            pos = payload_at + payload.len();
        }
        // Stopped at `until` with records of the segment left unread (a live log's segment
        // written on and sealed since the checkpoint its verification began with): its index
        // file covers records this scan did not read, so it is the next verification's to check.
        let read_whole = pos >= bytes.len() || queue.next_seq < context.until;
        let (index, mut queued, leaves) = queue.finish()?;
        let ids_differ = check_ids(context, &ids, ids_before, name)?;
        let ids_agree = ids_differ.is_none() && ids.len() as u64 <= context.ids_held;
        queued.extend(ids_differ.map(Queued::Problem));
        let mut indexes_checked = 0;
        if has_index && decoded_all && read_whole {
            let expected = |version| {
                sealed::encode(
                    &index,
                    &strings,
                    bytes.len() as u64,
                    *first,
                    ids.len() as u32,
                    version,
                )
            };
            let (checked, differs) = check_index(path, expected, name)?;
            indexes_checked += usize::from(checked);
            queued.extend(differs.map(Queued::Problem));
        }
        Ok(Scan {
            ids_before,
            queued,
            leaves,
            ids,
            ids_agree,
            bad_frames,
            torn_tail,
            purges,
            first_unsigned_made,
            last_made,
            indexes_checked,
            bytes: bytes.len() as u64,
        })
    })
}

/// A segment's bytes and what its header says (the record ids numbered before it), or why it
/// has no readable header.
fn read_segment(segment: &Segment) -> Result<(Vec<u8>, std::result::Result<u32, String>)> {
    let bytes = crate::files::read(&segment.path).map_err(|e| Error::io(&segment.path, e))?;
    let header =
        read_header(&segment.path, &bytes).map_err(|error| format!("{}: {error}", segment.name));
    Ok((bytes, header))
}

/// A sealed segment read ahead of its turn, on the assumption that the log before it is sound:
/// its records start at the seq its name says, and the record ids before it are `ids.dat`'s
/// (`all_ids`). `None` when its header cannot be read or `ids.dat` lacks ids it needs; the
/// segment is then read in its turn.
fn scan_ahead(segment: &Segment, all_ids: &IdTable, context: &Context) -> Result<Option<Scan>> {
    let (bytes, header) = read_segment(segment)?;
    let Ok(ids_before) = header else {
        return Ok(None);
    };
    if ids_before as usize > all_ids.len() {
        return Ok(None);
    }
    let before = Before {
        seq: segment.first,
        ids: all_ids.prefix(ids_before as usize),
        bad_frames: 0,
    };
    scan(segment, &bytes, ids_before, before, false, context).map(Some)
}

/// The first ids of a table hashed as a checkpoint's `custos-ids` line states them, for one
/// count after another: one pass over the ids while the counts grow (every checkpoint signs
/// one, so hashing each from the first id was quadratic in the log).
struct IdsDigests<'a> {
    table: &'a IdTable,
    hasher: Sha256,
    /// Ids hashed so far.
    at: u64,
}

impl<'a> IdsDigests<'a> {
    fn new(table: &'a IdTable) -> Self {
        IdsDigests {
            table,
            hasher: Sha256::new(),
            at: 0,
        }
    }

    /// The digest of the first `count` ids, if the table holds that many.
    fn digest(&mut self, count: u64) -> Option<Hash> {
        if count > self.table.len() as u64 {
            return None;
        }
        if count < self.at {
            self.hasher = Sha256::new();
            self.at = 0;
        }
        for number in self.at..count {
            let id = self.table.get(number as usize).expect("below the length");
            self.hasher.update(id.as_bytes());
        }
        self.at = count;
        Some(self.hasher.clone().finalize().into())
    }
}

/// The microseconds of a UUIDv7 event id (when the event was made), if it is one.
fn made_us(event: &AuditEvent) -> Option<i64> {
    event
        .id
        .get_timestamp()
        .map(|t| t.to_unix())
        .map(|(seconds, nanos)| seconds as i64 * 1_000_000 + i64::from(nanos / 1000))
}

/// Verifies the log in `dir` against checkpoints signed by `verifier_key` (the root key) and by
/// the keys it handed over to, each checked by the handover's two signatures; `progress` hears
/// (bytes done, bytes in all) as segments are read. As many sealed segments are read ahead at
/// once as there are cores, as a running server's verification does (`AuditLog::verify`, which
/// also stops at the checkpoint it signs first): that leaves the cores part of the time to the
/// requests it serves meanwhile (and bounds its memory).
pub fn verify_log(
    dir: &Path,
    verifier_key: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    verify_with(dir, verifier_key, None, crate::cores(), u64::MAX, progress)
}

/// [`verify_log`] for the offline verifier (`custos audit verify`, `custos bench verify`),
/// which has the machine to itself: one sealed segment more is read ahead than there are
/// cores, since each segment's own threads leave the cores idle part of the time (at
/// 10,000,000 events on two cores: 184 → 128–136 s, 148 → 186–195 % CPU, peak memory
/// 524 → 732–757 MB; BENCHMARKS.md, B6). Also checks the log against `witness`, a checkpoint
/// note kept outside the folder (a SIEM's copy, one a verifier saved): it must be signed by a
/// trusted key, the log must reach its size and its first records must have its root.
pub fn verify_log_against(
    dir: &Path,
    verifier_key: &str,
    witness: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    verify_with(
        dir,
        verifier_key,
        witness,
        crate::cores() + 1,
        u64::MAX,
        progress,
    )
}

/// [`verify_log_against`], reading up to `read_ahead` sealed segments ahead of their turn at
/// once (none: every segment in its turn), and only the first `until` records and the
/// checkpoints signed for no more (a live log's checkpoint signed when its verification began:
/// what comes after it is still being written and signed).
pub(crate) fn verify_with(
    dir: &Path,
    verifier_key: &str,
    witness: Option<&str>,
    read_ahead: usize,
    until: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut signed = read_checkpoints(dir, verifier_key, until, &mut report)?;
    if let Some(note) = witness {
        add_witness(note, &mut signed, &mut report);
    }
    let protected = report.latest_checkpoint.unwrap_or(0);

    let mut segments: Vec<Segment> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(first) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            match first.parse() {
                Ok(first) => segments.push(Segment {
                    first,
                    path: entry.path(),
                    name,
                }),
                Err(_) => report.problems.push(format!("{name}: not a segment name")),
            }
        }
    }
    segments.sort_by(|a, b| (a.first, &a.name).cmp(&(b.first, &b.name)));
    // A segment that begins at `until` or later (and has records) holds none of those read;
    // when there is one, the last segment read is not the log's last.
    let listed = segments.len();
    segments.retain(|s| s.first < until || s.first == 0);
    let cut = segments.len() < listed;
    report.segments = segments.len();
    let total: u64 = segments
        .iter()
        .filter_map(|s| fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;

    let pruned_path = dir.join("pruned.log");
    let ranges: Vec<PrunedRange> = match crate::files::read(&pruned_path) {
        Ok(bytes) => {
            let read = read_pruned(&bytes);
            if let Some(damage) = read.damage {
                report.problems.push(damage);
            }
            read.ranges
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&pruned_path, e)),
    };
    let pruned: BTreeMap<u64, u64> = ranges.iter().map(|r| (r.first, r.count)).collect();
    let leaves = LeafFile::open_existing(dir)?;
    let leaves_held = match &leaves {
        Some(leaves) => leaves.len()?,
        None => 0,
    };
    let id_file = IdFile::open_existing(dir)?;
    let ids_held = match &id_file {
        Some(file) => file.len()?,
        None => 0,
    };
    let context = Context {
        protected,
        until,
        id_file: &id_file,
        ids_held,
    };
    // The record ids the segments define, in the order they define them (those of purged
    // records from ids.dat, their segments being gone).
    let mut ids = IdTable::default();
    // Whether `ids` is a prefix of ids.dat, so that a segment read ahead of its turn with
    // ids.dat's ids decoded as it does in its turn.
    let mut ids_agree = true;
    // Whether ids.dat was found to lack ids a sealed segment numbers (reported once).
    let mut ids_short = false;
    // Sealed segments are read ahead on every core, each assuming the log before it sound
    // (`scan_ahead`), and taken in log order; one whose assumption fails is read again in turn.
    let all_ids = match &id_file {
        Some(file) if segments.len() > 1 && read_ahead > 0 => Some(file.read(ids_held)?),
        _ => None,
    };
    let rebuild = Rebuild {
        tree: MerkleTree::new(),
        roots: signed.roots.clone(),
        last_good: 0,
        altered: false,
        explained: false,
    };
    let mut sink = LeafSink {
        rebuild,
        leaves,
        leaves_held,
        leaves_differ: None,
        cursor: LeafCursor::default(),
    };
    let mut bad_frames = 0u64;
    // Purge events, by seq, and the times events were made, for the unsigned tail.
    let mut purges: BTreeMap<u64, AuditEvent> = BTreeMap::new();
    let mut first_unsigned_made: Option<(u64, i64)> = None;
    let mut last_made: Option<i64> = None;
    std::thread::scope(|threads| -> Result<()> {
        let mut ahead = std::collections::VecDeque::new();
        let mut next_ahead = 0;
        for (segment_idx, segment) in segments.iter().enumerate() {
            while next_ahead + 1 < segments.len() && ahead.len() < read_ahead {
                let later = &segments[next_ahead];
                if let Some(all_ids) = &all_ids
                    && !pruned.contains_key(&later.first)
                {
                    let context = &context;
                    let scan = threads.spawn(move || scan_ahead(later, all_ids, context));
                    ahead.push_back((next_ahead, scan));
                }
                next_ahead += 1;
            }
            let scanned_ahead = match ahead.front() {
                Some((idx, _)) if *idx == segment_idx => {
                    let (_, scan) = ahead.pop_front().expect("looked at");
                    scan.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?
                }
                _ => None,
            };
            let Segment { first, name, .. } = segment;
            let is_last = segment_idx + 1 == segments.len() && !cut;
            if pruned.contains_key(first) {
                // A purge that crashed before deleting its file; the server finishes it on start
                // once the range is found accounted for (checked below like every range).
                continue;
            }
            let mut after_purge = false;
            while sink.rebuild.tree.len() < *first {
                let start = sink.rebuild.tree.len();
                let Some(count) = pruned.get(&start) else {
                    break;
                };
                after_purge = true;
                let kept = match &sink.leaves {
                    Some(leaves) if sink.leaves_held >= start + count => {
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
                    sink.rebuild.push(leaf, &mut report);
                }
                report.purged_events += count;
            }
            let start = sink.rebuild.tree.len();
            if *first != start {
                report.problems.push(format!(
                    "{name}: starts at record seq {first}, but the records before it end at seq {start}{}",
                    if *first > start {
                        " and no purge accounts for the gap"
                    } else {
                        ""
                    }
                ));
            }
            // The segment's bytes, when read here (a segment read ahead left them behind).
            let (bytes, header) = match &scanned_ahead {
                Some(scan) => (None, Ok(scan.ids_before)),
                None => {
                    let (bytes, header) = read_segment(segment)?;
                    (Some(bytes), header)
                }
            };
            let ids_before = match header {
                Ok(ids_before) => ids_before,
                Err(problem) => {
                    report.problems.push(problem);
                    continue;
                }
            };
            // The record ids numbered by purged records come from ids.dat (their segments are
            // gone), before the first segment or between two; the segments define the rest.
            let held = ids.len() as u64;
            if (after_purge || held == 0) && u64::from(ids_before) > held {
                match &id_file {
                    Some(file) if ids_held >= u64::from(ids_before) => {
                        for id in file.read_range(held, u64::from(ids_before))? {
                            ids.push(id);
                        }
                    }
                    _ => report.problems.push(format!(
                        "{name}: needs {ids_before} record ids from ids.dat, which holds {ids_held}"
                    )),
                }
            }
            let numbered_as_said = ids.len() == ids_before as usize;
            if !numbered_as_said {
                report.problems.push(format!(
                    "{name}: says {ids_before} record ids came before it, but the log numbered {}",
                    ids.len()
                ));
            }
            let scan = match scanned_ahead {
                Some(scan) if *first == start && ids_agree && numbered_as_said => scan,
                _ => {
                    let bytes = match bytes {
                        Some(bytes) => bytes,
                        None => read_segment(segment)?.0,
                    };
                    let before = Before {
                        seq: start,
                        ids: std::mem::take(&mut ids),
                        bad_frames,
                    };
                    scan(segment, &bytes, ids_before, before, is_last, &context)?
                }
            };
            ids_agree = ids_agree && numbered_as_said && scan.ids_agree;
            ids = scan.ids;
            if !is_last && ids.len() as u64 > ids_held && !ids_short {
                // The server numbers a sealed partition's ids from ids.dat alone.
                ids_short = true;
                report.problems.push(format!(
                    "ids.dat holds {ids_held} record ids, but the sealed {name} numbers {} (ids.dat was cut short or removed: the server refuses to open the log)",
                    ids.len()
                ));
            }
            bad_frames += scan.bad_frames;
            if scan.torn_tail.is_some() {
                report.torn_tail = scan.torn_tail;
            }
            purges.extend(scan.purges);
            if first_unsigned_made.is_none() {
                first_unsigned_made = scan.first_unsigned_made;
            }
            last_made = last_made.max(scan.last_made);
            report.indexes_checked += scan.indexes_checked;
            apply(scan.queued, scan.leaves, &mut sink, &mut report)?;
            done += scan.bytes;
            progress(done, total);
        }
        Ok(())
    })?;
    if bad_frames > 1 {
        report.problems.push(format!(
            "{} more records after the first fail their checksum",
            bad_frames - 1
        ));
    }
    report.events = sink.rebuild.tree.len();
    if let Some(seq) = sink.leaves_differ {
        report.problems.push(format!(
            "leaves.dat: the leaf of record seq {seq} is not the hash of that record (leaves.dat was altered or damaged)"
        ));
    }
    let mut digests = IdsDigests::new(&ids);
    for (size, digest) in &signed.ids {
        match digests.digest(digest.count) {
            Some(found) if found == digest.sha256 => {}
            Some(_) => {
                report.problems.push(format!(
                    "ids.dat: its first {} record ids are not those the checkpoint of {size} records signed (ids.dat was altered)",
                    digest.count
                ));
                break;
            }
            None => {
                report.problems.push(format!(
                    "the log numbers {} record ids, but the checkpoint of {size} records signed {}",
                    ids.len(),
                    digest.count
                ));
                break;
            }
        }
    }
    if let Some(size) = sink.rebuild.roots.keys().next_back()
        && *size > sink.rebuild.tree.len()
        && !sink.rebuild.altered
    {
        report.problems.push(format!(
            "the log holds {} records but a checkpoint was signed for {size}: records {}..{} were removed (truncation)",
            sink.rebuild.tree.len(),
            sink.rebuild.tree.len(),
            size - 1
        ));
    }
    if report.events > 0 && signed.roots.is_empty() && signed.notes > 0 {
        report.problems.push(format!(
            "the log holds {} records and none of the {} checkpoints of checkpoints.log verifies with the key trusted ({}): the log is not the one that key signs, or its checkpoints were replaced",
            report.events, signed.notes, signed.keys[0]
        ));
    } else if report.events > 0 && signed.roots.is_empty() {
        report.problems.push(format!(
            "the log holds {} records and no signed checkpoint: checkpoints.log was removed or emptied",
            report.events
        ));
    } else if let (Some((seq, made)), Some(last)) = (first_unsigned_made, last_made)
        && last - made > UNSIGNED_MARGIN_US
    {
        report.problems.push(format!(
            "records from seq {seq} on are covered by no checkpoint, though events went on being made for {} s after them: checkpoints are missing",
            (last - made) / 1_000_000
        ));
    }
    check_ranges(&ranges, &purges, protected, &mut report);
    Ok(report)
}

/// Every purged range must be accounted for: by its own purge event (present, signed, naming
/// it and the ranges before it), or — once that event was itself purged — by a later one whose
/// digest of the ranges before it covers it.
fn check_ranges(
    ranges: &[PrunedRange],
    purges: &BTreeMap<u64, AuditEvent>,
    protected: u64,
    report: &mut VerifyReport,
) {
    let mut covered_below = 0usize;
    let mut own = vec![false; ranges.len()];
    for (at, range) in ranges.iter().enumerate() {
        let Some(seq) = range.event else {
            continue;
        };
        let Some(event) = purges.get(&seq) else {
            continue;
        };
        let claim = if seq >= protected {
            Err(format!(
                "its purge event, seq {seq}, is not covered by a signed checkpoint"
            ))
        } else {
            PurgeClaim::accounts(event, seq, ranges, at)
        };
        match claim {
            Ok(_) => {
                own[at] = true;
                covered_below = covered_below.max(at);
            }
            Err(why) => report.problems.push(format!(
                "pruned.log: range #{at} (records {}..{}): {why}",
                range.first,
                range.first + range.count
            )),
        }
    }
    for (at, range) in ranges.iter().enumerate() {
        if !own[at]
            && at >= covered_below
            && !report
                .problems
                .iter()
                .any(|p| p.contains(&format!("range #{at} ")))
        {
            report.problems.push(format!(
                "pruned.log: range #{at} (records {}..{}) is not accounted for by any signed purge event: its deletion cannot be proven",
                range.first,
                range.first + range.count
            ));
        }
    }
}

/// The record ids a segment defined must be in `ids.dat` at the same numbers (the server
/// decodes sealed partitions, and purged ones' successors, with them): the first difference.
fn check_ids(
    context: &Context,
    ids: &IdTable,
    ids_before: u32,
    name: &str,
) -> Result<Option<String>> {
    let Some(file) = context.id_file else {
        return Ok(None);
    };
    let end = (ids.len() as u64).min(context.ids_held);
    if end <= u64::from(ids_before) {
        return Ok(None);
    }
    let held = file.read_range(u64::from(ids_before), end)?;
    Ok(held.iter().enumerate().find_map(|(k, id)| {
        let number = ids_before as usize + k;
        (ids.get(number) != Some(*id)).then(|| {
            format!("ids.dat: record id number {number} differs from the one {name} defines")
        })
    }))
}

/// A sealed partition's index file must be exactly what its segment implies (`expected`, in
/// the file's version when this build reads it), or a search could be made to miss events:
/// whether there was one to compare, and how it differs.
fn check_index(
    segment: &Path,
    expected: impl FnOnce(u8) -> Vec<u8>,
    name: &str,
) -> Result<(bool, Option<String>)> {
    let path = index_path(segment);
    match crate::files::read(&path) {
        Ok(bytes) => Ok((
            true,
            match sealed::unread_version(&bytes) {
                Some(version) => Some(format!(
                    "{name}: its index file is of version {version}, which this build does not read (a later build's, or damaged): the server indexes the partition again when it opens the log, and `custos audit reindex` rewrites the file"
                )),
                None => (bytes != expected(sealed::version_of(&bytes))).then(|| format!(
                    "{name}: its index file does not match its records (altered or damaged; `custos audit reindex` rebuilds it)"
                )),
            },
        )),
        // Not sealed yet: the server indexes it again on start.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((false, None)),
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
