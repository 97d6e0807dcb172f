//! Segment files of the append-only audit log: framing, group append with one `fdatasync`,
//! and recovery of a torn tail after a crash.
//!
//! A segment is `seg-<first seq, 20 digits>.log`: a 16-byte header (`CUSTOSAL`, format version
//! 2, three zero bytes, `u32` record ids the log had numbered before the segment) followed by
//! frames `u32 payload length | u32 crc32 | payload`, each payload one record of `codec`.
//! Sequence numbers are dense from 0 in file order, so a frame's seq is its segment's first
//! seq plus its position. The checksum covers the seq (8 bytes, little endian, not stored) and
//! the payload, so a frame is only valid in its own place: a removed, inserted or swapped event
//! breaks the checksum of the first frame out of place.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::partition::Place;
use crate::{Error, Result};

/// Position of an event in the log: dense, strictly increasing, from 0.
pub type Seq = u64;

/// Microseconds in a day: a partition holds events of one UTC day at most.
pub(crate) const DAY_US: i64 = 86_400_000_000;

pub(crate) const MAGIC: &[u8; 8] = b"CUSTOSAL";
pub(crate) const FORMAT_VERSION: u8 = 2;
pub(crate) const HEADER_BYTES: u64 = 16;
pub(crate) const FRAME_HEADER_BYTES: u64 = 8;
/// A frame larger than this is corruption, not a record (a record is at most a few MiB).
pub(crate) const RECORD_BYTES_MAX: u32 = 64 << 20;

/// The default memory budget of the partition being written ([`LogConfig::index_bytes_max`]).
pub const INDEX_BYTES_DEFAULT: u64 = 128 << 20;

/// The default of [`LogConfig::open_files_max`]: 256 partitions' segment and index files.
pub const OPEN_FILES_DEFAULT: usize = 512;

/// Where the log lives and how it is cut.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Folder of the segment files (created when missing).
    pub dir: PathBuf,
    /// A segment that reached this size is closed and a new one started.
    pub segment_bytes_max: u64,
    /// The memory budget of the partition being written: its in-memory index is sealed to a
    /// file once it holds about this many bytes (`custos serve --audit-memory`), so resident
    /// memory stays flat under any steady load.
    pub index_bytes_max: u64,
    /// Most events written in one group commit.
    pub batch_events_max: usize,
    /// How many appends may wait for the writer before callers block (back-pressure).
    pub queue_events_max: usize,
    /// Ed25519 seed of the checkpoint signing key.
    pub signing_seed: [u8; 32],
    /// The seed of a key rotation that may have been interrupted: used when the checkpoints
    /// show its key in force (the handover was written), ignored otherwise.
    pub next_signing_seed: Option<[u8; 32]>,
    /// The checkpoints' origin line (also the key name).
    pub origin: String,
    /// Most time between two checkpoints while events flow, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Whether the log signs its own checkpoints (on opening, then on its interval). An audit
    /// node of a cluster does not: the cluster's one signer tells its log when to sign
    /// ([`crate::AuditLog::sign_for_cluster`]) and every other node adopts the notes it signed
    /// ([`crate::AuditLog::adopt_checkpoint`]).
    pub signs_own_checkpoints: bool,
    /// Most of the log's segment and index files held open at once for reading (`handles.rs`):
    /// beyond it the least recently read are closed, and opened again when read, so the log's
    /// file descriptors do not grow with its partitions.
    pub open_files_max: usize,
}

impl LogConfig {
    /// The defaults for a log in `dir` signed by `signing_seed` under `origin`.
    pub fn new(dir: impl Into<PathBuf>, signing_seed: [u8; 32], origin: &str) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes_max: 256 << 20,
            index_bytes_max: INDEX_BYTES_DEFAULT,
            batch_events_max: 4096,
            queue_events_max: 16_384,
            signing_seed,
            next_signing_seed: None,
            origin: origin.to_string(),
            checkpoint_interval_ms: 1000,
            signs_own_checkpoints: true,
            open_files_max: OPEN_FILES_DEFAULT,
        }
    }
}

/// The file name of the segment starting at `first_seq`.
pub(crate) fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

/// The segments in `dir`, by first seq.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(first) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        else {
            continue;
        };
        let first: Seq = first
            .parse()
            .map_err(|_| Error::Corrupted(format!("unexpected segment name {name}")))?;
        segments.push((first, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

fn header(ids_before: u32) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8] = FORMAT_VERSION;
    header[12..].copy_from_slice(&ids_before.to_le_bytes());
    header
}

/// The record ids numbered before the segment whose first bytes are `bytes`.
pub(crate) fn read_header(path: &Path, bytes: &[u8]) -> Result<u32> {
    if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
        return Err(Error::Corrupted(format!(
            "{} has no segment header",
            path.display()
        )));
    }
    if bytes[8] != FORMAT_VERSION {
        return Err(Error::Corrupted(format!(
            "{} has unknown format version {}",
            path.display(),
            bytes[8]
        )));
    }
    Ok(u32::from_le_bytes(
        bytes[12..16].try_into().expect("4 bytes"),
    ))
}

/// Reads a segment's header from its file.
pub(crate) fn read_header_of(path: &Path) -> Result<u32> {
    let file = crate::files::open_read(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = [0u8; HEADER_BYTES as usize];
    let n = file
        .read_at(&mut bytes, 0)
        .map_err(|e| Error::io(path, e))?;
    read_header(path, &bytes[..n])
}

/// Whether the segment at `path` is the stub of a crash during [`create_segment`]: shorter
/// than a header, and what there is of it is the start of one.
pub(crate) fn is_unfinished_segment(path: &Path) -> Result<bool> {
    let bytes = crate::files::read(path).map_err(|e| Error::io(path, e))?;
    Ok(bytes.len() < HEADER_BYTES as usize && MAGIC.starts_with(&bytes[..bytes.len().min(8)]))
}

/// Creates a segment file with its header, durably (file and folder).
///
/// A file already at its name that holds the start of that very header, or all of it and
/// nothing more, is the stub of an attempt that failed after creating it (a roll that ran out
/// of file descriptors, or of space, before it finished): it is completed rather than refused,
/// so the writer's next attempt succeeds once the cause has passed. Anything else at the name
/// is refused.
pub(crate) fn create_segment(path: &Path, dir: &Path, ids_before: u32) -> Result<()> {
    let header = header(ids_before);
    let mut file = match crate::files::create_new(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let held = crate::files::read(path).map_err(|e| Error::io(path, e))?;
            if held.len() > header.len() || !header.starts_with(&held) {
                return Err(Error::io(path, e));
            }
            let file = crate::files::open_write(path).map_err(|e| Error::io(path, e))?;
            file.set_len(0).map_err(|e| Error::io(path, e))?;
            file
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    file.write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))?;
    crate::files::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// The writable end of the active segment, owned by the writer thread.
pub(crate) struct ActiveSegment {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes written to the file (durable once the writer's sync of them succeeded).
    len: u64,
    /// Records in it.
    pub(crate) n_records: u64,
    pub(crate) first_seq: Seq,
}

impl ActiveSegment {
    /// Continues the segment at `path`, whose first `len` bytes hold `n_records` intact records.
    pub(crate) fn resume(path: PathBuf, first_seq: Seq, len: u64, n_records: u64) -> Result<Self> {
        let file = crate::files::open_write(&path).map_err(|e| Error::io(&path, e))?;
        Ok(ActiveSegment {
            file: Arc::new(file),
            path,
            len,
            n_records,
            first_seq,
        })
    }

    /// Starts a new segment at `first_seq`.
    pub(crate) fn create(dir: &Path, first_seq: Seq, ids_before: u32) -> Result<Self> {
        let path = segment_path(dir, first_seq);
        create_segment(&path, dir, ids_before)?;
        ActiveSegment::resume(path, first_seq, HEADER_BYTES, 0)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The file, for a sync on another thread while the writer writes the next batch.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Writes every payload after the records before it with one write, not yet durable: they
    /// are once a sync of [`ActiveSegment::file`] that began after this returned succeeds
    /// (until then, [`ActiveSegment::cut`] takes them back). Returns each record's place; on
    /// failure none of them is in the file.
    pub(crate) fn write(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<Place>> {
        let total: usize = payloads
            .iter()
            .map(|p| p.len() + FRAME_HEADER_BYTES as usize)
            .sum();
        let mut buffer = Vec::with_capacity(total);
        let mut places = Vec::with_capacity(payloads.len());
        let mut offset = self.len;
        for (i, payload) in payloads.iter().enumerate() {
            assert!(
                payload.len() <= RECORD_BYTES_MAX as usize,
                "record of {} bytes exceeds the frame limit",
                payload.len()
            );
            let seq = self.first_seq + self.n_records + i as u64;
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&frame_crc(seq, payload).to_le_bytes());
            buffer.extend_from_slice(payload);
            offset += FRAME_HEADER_BYTES;
            places.push(Place {
                offset: u32::try_from(offset).expect("segments stay under 4 GiB"),
                len: payload.len() as u32,
            });
            offset += payload.len() as u64;
        }
        if let Err(error) = self.file.write_all_at(&buffer, self.len) {
            self.cut(self.len, self.n_records, &error)?;
            return Err(Error::io(&self.path, error));
        }
        self.len = offset;
        self.n_records += payloads.len() as u64;
        Ok(places)
    }

    /// Takes back what was written after the first `len` bytes, which hold `n_records`
    /// records (writes that failed, or whose sync did: `cause`), and syncs, so the next write
    /// starts on a clean tail. If even that fails the file's state is unknown and the writer
    /// must stop: [`Error::Unavailable`].
    pub(crate) fn cut(
        &mut self,
        len: u64,
        n_records: u64,
        cause: &dyn std::fmt::Display,
    ) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|undo| {
                Error::Unavailable(format!(
                    "append failed ({cause}) and could not be undone ({undo})"
                ))
            })?;
        self.len = len;
        self.n_records = n_records;
        Ok(())
    }
}

/// What scanning a segment found.
pub(crate) struct Scanned {
    pub(crate) ids_before: u32,
    pub(crate) n_records: u64,
    /// Bytes of intact records (with the header).
    pub(crate) intact_len: u64,
    /// Whether bytes after them are a crash's torn write, to be cut to `intact_len`.
    pub(crate) torn: bool,
}

/// What a scan does with each intact record: (seq, place, payload).
pub(crate) type OnRecord<'a> = dyn FnMut(Seq, Place, &[u8]) -> Result<()> + 'a;

/// How far past a bad frame a scan looks for intact records, bytes.
const DAMAGE_SCAN_BYTES_MAX: usize = 64 << 20;

/// Whether an intact frame of record `seq` or `seq + 1` lies after the bad frame at `pos`:
/// where the bad frame's length says the next begins, or anywhere in the next
/// [`DAMAGE_SCAN_BYTES_MAX`] bytes. A crash's torn write is only ever the end of the file, so
/// intact records after a bad frame mean the bad frame is damage.
pub(crate) fn intact_after(bytes: &[u8], pos: usize, seq: Seq) -> bool {
    let intact_at =
        |at: usize| frame_at(bytes, at, seq).is_some() || frame_at(bytes, at, seq + 1).is_some();
    let stated = bytes
        .get(pos..pos + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .filter(|len| *len <= RECORD_BYTES_MAX as usize);
    if stated.is_some_and(|len| intact_at(pos + FRAME_HEADER_BYTES as usize + len)) {
        return true;
    }
    let end = bytes.len().min(pos.saturating_add(DAMAGE_SCAN_BYTES_MAX));
    (pos + 1..end).any(intact_at)
}

/// Reads every frame of a segment, giving each record's payload to `on_record`; writes
/// nothing. A bad frame in the last segment, after the first `protected` records of the log
/// (those covered by a signed checkpoint) and with no intact record after it, is a crash's
/// torn tail: the scan stops there and says so, for the caller to cut once the whole log is
/// found sound. A bad frame anywhere else is damage.
pub(crate) fn scan_segment(
    path: &Path,
    first_seq: Seq,
    is_last: bool,
    protected: Seq,
    on_record: &mut OnRecord<'_>,
) -> Result<Scanned> {
    let bytes = crate::files::read(path).map_err(|e| Error::io(path, e))?;
    let ids_before = read_header(path, &bytes)?;
    let mut pos = HEADER_BYTES as usize;
    let mut n_records = 0u64;
    let mut torn = false;
    while pos < bytes.len() {
        let seq = first_seq + n_records;
        match frame_at(&bytes, pos, seq) {
            Some(payload_len) => {
                let offset = pos + FRAME_HEADER_BYTES as usize;
                let place = Place {
                    offset: offset as u32,
                    len: payload_len as u32,
                };
                on_record(seq, place, &bytes[offset..offset + payload_len]).map_err(
                    |e| match e {
                        Error::Corrupted(why) => {
                            Error::Corrupted(format!("{} record seq {seq}: {why}", path.display()))
                        }
                        other => other,
                    },
                )?;
                n_records += 1;
                pos = offset + payload_len;
            }
            None => {
                let why = if seq < protected {
                    ", inside a signed checkpoint"
                } else if !is_last {
                    ", in a segment before the last"
                } else if intact_after(&bytes, pos, seq) {
                    ", and intact records follow it: damage, not a crash"
                } else {
                    torn = true;
                    break;
                };
                return Err(Error::Corrupted(format!(
                    "{} has a bad frame at byte {pos} (record seq {seq}){why}",
                    path.display()
                )));
            }
        }
    }
    Ok(Scanned {
        ids_before,
        n_records,
        intact_len: pos as u64,
        torn,
    })
}

/// Cuts a segment's torn tail off at `len`, durably.
pub(crate) fn cut_segment(path: &Path, len: u64) -> Result<()> {
    let file = crate::files::open_write(path).map_err(|e| Error::io(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// The checksum of the frame of record `seq`.
pub(crate) fn frame_crc(seq: Seq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The payload length of an intact frame of record `seq` at `pos`, or `None` when the frame is
/// torn, damaged or out of place.
pub(crate) fn frame_at(bytes: &[u8], pos: usize, seq: Seq) -> Option<usize> {
    let header = bytes.get(pos..pos + FRAME_HEADER_BYTES as usize)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let start = pos + FRAME_HEADER_BYTES as usize;
    let payload = bytes.get(start..start + len as usize)?;
    (frame_crc(seq, payload) == crc).then_some(len as usize)
}

#[cfg(test)]
mod tests;
