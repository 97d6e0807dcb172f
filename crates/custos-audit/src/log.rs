//! Segment files of the append-only audit log: framing, group append with one `fdatasync`,
//! and recovery of a torn tail after a crash.
//!
//! A segment is `seg-<first seq, 20 digits>.log`: a 16-byte header (`CUSTOSAL`, format version,
//! reserved zeros) followed by frames `u32 payload length | u32 crc32 | payload`, each payload
//! one record of `codec`. Sequence numbers are dense from 0 in file order, so a frame's seq is
//! its segment's first seq plus its position. The checksum covers the seq (8 bytes, little
//! endian, not stored) and the payload, so a frame is only valid in its own place: a removed,
//! inserted or swapped event breaks the checksum of the first frame out of place.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::codec::{Dictionary, Encoder, decode_event, decode_next};
use crate::event::AuditEvent;
use crate::{Error, Result};

/// Position of an event in the log: dense, strictly increasing, from 0.
pub type Seq = u64;

pub(crate) const MAGIC: &[u8; 8] = b"CUSTOSAL";
const FORMAT_VERSION: u8 = 1;
pub(crate) const HEADER_BYTES: u64 = 16;
pub(crate) const FRAME_HEADER_BYTES: u64 = 8;
/// A frame larger than this is corruption, not a record (a record is at most a few MiB).
pub(crate) const RECORD_BYTES_MAX: u32 = 64 << 20;

/// Where the log lives and how it is cut.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Folder of the segment files (created when missing).
    pub dir: PathBuf,
    /// A segment that reached this size is closed and a new one started.
    pub segment_bytes_max: u64,
    /// Most events written in one group commit.
    pub batch_events_max: usize,
    /// How many appends may wait for the writer before callers block (back-pressure).
    pub queue_events_max: usize,
    /// Ed25519 seed of the checkpoint signing key.
    pub signing_seed: [u8; 32],
    /// The checkpoints' origin line (also the key name).
    pub origin: String,
    /// Most time between two checkpoints while events flow, milliseconds.
    pub checkpoint_interval_ms: u64,
}

impl LogConfig {
    /// The defaults for a log in `dir` signed by `signing_seed` under `origin`.
    pub fn new(dir: impl Into<PathBuf>, signing_seed: [u8; 32], origin: &str) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes_max: 256 << 20,
            batch_events_max: 4096,
            queue_events_max: 16_384,
            signing_seed,
            origin: origin.to_string(),
            checkpoint_interval_ms: 1000,
        }
    }
}

/// Where one record's payload sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// One segment of the log; its file is `None` once retention purged it.
#[derive(Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) first_seq: Seq,
    pub(crate) path: PathBuf,
    pub(crate) file: Option<Arc<File>>,
    /// The values its records numbered so far, to decode any one of them.
    pub(crate) dictionary: Arc<RwLock<Dictionary>>,
}

/// Read access to every segment, shared by searches; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogReader {
    segments: Arc<RwLock<Vec<SegmentInfo>>>,
}

impl LogReader {
    /// Reads and decodes the record at `location`.
    pub(crate) fn read_event(&self, location: Location) -> Result<AuditEvent> {
        let (file, dictionary) = {
            let segments = self.segments.read().expect("segment list lock");
            let segment = segments
                .get(location.segment as usize)
                .filter(|s| s.file.is_some())
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "segment {} was purged by retention",
                        location.segment
                    ))
                })?;
            (
                segment.file.clone().expect("checked above"),
                segment.dictionary.clone(),
            )
        };
        let mut payload = vec![0u8; location.len as usize];
        file.read_exact_at(&mut payload, location.offset)
            .map_err(|e| Error::io(format!("segment {}", location.segment), e))?;
        decode_event(&payload, &dictionary.read().expect("dictionary lock"))
    }

    /// Every segment, in order.
    pub(crate) fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.read().expect("segment list lock").clone()
    }

    /// Closes a purged segment's file and deletes it (the last segment is never purged).
    pub(crate) fn delete(&self, segment: usize, dir: &Path) -> Result<()> {
        let path = {
            let mut segments = self.segments.write().expect("segment list lock");
            assert!(
                segment + 1 < segments.len(),
                "the active segment is never purged"
            );
            segments[segment].file = None;
            *segments[segment]
                .dictionary
                .write()
                .expect("dictionary lock") = Dictionary::default();
            segments[segment].path.clone()
        };
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    }
}

/// The writable end of the log, owned by the writer thread.
pub(crate) struct LogFiles {
    config: LogConfig,
    /// First seq of each segment, in order.
    first_seqs: Vec<Seq>,
    active: File,
    active_path: PathBuf,
    active_len: u64,
    /// UTC day (days since the epoch) of the active segment's events; `None` while it is empty.
    active_day: Option<i64>,
    /// Numbers the active segment's values.
    encoder: Encoder,
    next_seq: Seq,
    reader: LogReader,
}

impl LogFiles {
    /// Opens the log, truncating a torn tail of the last segment, and reports every intact
    /// record in order to `on_record`. The first `protected` records are covered by a signed
    /// checkpoint: a bad frame among them is damage or tampering, never a torn tail to cut.
    /// Ranges purged by retention (`first seq → count`) fill the gaps between segments: each
    /// is reported to `on_gap`; a gap no purge explains is corruption.
    pub(crate) fn open(
        config: LogConfig,
        protected: Seq,
        purged: &BTreeMap<Seq, u64>,
        mut on_record: impl FnMut(Seq, Location, &AuditEvent) -> Result<()>,
        mut on_gap: impl FnMut(Seq, u64) -> Result<()>,
    ) -> Result<LogFiles> {
        fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        let mut names: Vec<(Seq, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&config.dir).map_err(|e| Error::io(&config.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&config.dir, e))?;
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
            names.push((first, entry.path()));
        }
        names.sort();
        // A purge that crashed after recording its range but before deleting the file: finish it.
        let mut kept = Vec::with_capacity(names.len());
        for (first, path) in names {
            if purged.contains_key(&first) {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            } else {
                kept.push((first, path));
            }
        }
        let mut names = kept;
        if names.is_empty() {
            let first = purged
                .iter()
                .next_back()
                .map_or(0, |(first, count)| first + count);
            let path = segment_path(&config.dir, first);
            create_segment(&path, &config.dir)?;
            names.push((first, path));
        }

        let mut segments = Vec::new();
        let mut first_seqs = Vec::new();
        let mut next_seq: Seq = 0;
        let mut active_len = 0;
        let n_segments = names.len();
        for (segment_idx, (first, path)) in names.iter().enumerate() {
            while next_seq < *first {
                let Some(count) = purged.get(&next_seq) else {
                    break;
                };
                on_gap(next_seq, *count)?;
                next_seq += count;
            }
            if *first != next_seq {
                return Err(Error::Corrupted(format!(
                    "segment {} starts at seq {first}, expected {next_seq}: events are missing that no retention purge explains",
                    path.display()
                )));
            }
            let is_last = segment_idx + 1 == n_segments;
            let mut dictionary = Dictionary::default();
            let (n_records, intact_len) = scan_segment(
                path,
                segments.len() as u32,
                *first,
                is_last,
                protected,
                &mut dictionary,
                &mut on_record,
            )?;
            next_seq += n_records;
            first_seqs.push(*first);
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            segments.push(SegmentInfo {
                first_seq: *first,
                path: path.clone(),
                file: Some(Arc::new(file)),
                dictionary: Arc::new(RwLock::new(dictionary)),
            });
            if is_last {
                active_len = intact_len;
            }
        }
        let active_path = names.last().expect("at least one segment").1.clone();
        let active = OpenOptions::new()
            .write(true)
            .open(&active_path)
            .map_err(|e| Error::io(&active_path, e))?;
        let last = segments
            .last()
            .expect("at least one segment")
            .dictionary
            .read()
            .expect("dictionary lock")
            .clone();
        Ok(LogFiles {
            config,
            first_seqs,
            active,
            active_path,
            active_len,
            active_day: None,
            encoder: Encoder::resume(last),
            next_seq,
            reader: LogReader {
                segments: Arc::new(RwLock::new(segments)),
            },
        })
    }

    /// Tells the log the UTC day of the active segment's events (found while opening).
    pub(crate) fn set_active_day(&mut self, day: Option<i64>) {
        self.active_day = day;
    }

    pub(crate) fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// Writes every payload with one write and one `fdatasync`; on success every record is
    /// durable and gets its seq and location, on failure none of them is in the log.
    /// The batch goes into the partition of `day` (UTC days since the epoch): a later day starts
    /// a new segment, so retention can drop whole days. A batch of an earlier day (events
    /// stamped just before midnight that reach the writer just after it) joins the current
    /// segment instead of starting one: segments only move forward in time, so the instants
    /// around midnight cannot flap between days and cut a segment per batch.
    pub(crate) fn append_batch(
        &mut self,
        events: &[&AuditEvent],
        day: i64,
    ) -> Result<Vec<(Seq, Location)>> {
        let new_day = self.active_day.is_some_and(|d| d < day);
        if self.active_len >= self.config.segment_bytes_max || new_day {
            self.roll()?;
        }
        let mark = self.encoder.dictionary().len();
        let payloads: Vec<Vec<u8>> = events
            .iter()
            .map(|event| {
                let mut payload = Vec::with_capacity(128 + event.record_ids.len() * 4);
                self.encoder.encode(event, &mut payload);
                payload
            })
            .collect();
        let segment = (self.first_seqs.len() - 1) as u32;
        let total: usize = payloads
            .iter()
            .map(|p| p.len() + FRAME_HEADER_BYTES as usize)
            .sum();
        let mut buffer = Vec::with_capacity(total);
        let mut placed = Vec::with_capacity(payloads.len());
        let mut offset = self.active_len;
        for (i, payload) in payloads.iter().enumerate() {
            assert!(
                payload.len() <= RECORD_BYTES_MAX as usize,
                "record of {} bytes exceeds the frame limit",
                payload.len()
            );
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&frame_crc(self.next_seq + i as u64, payload).to_le_bytes());
            buffer.extend_from_slice(payload);
            offset += FRAME_HEADER_BYTES;
            placed.push((
                self.next_seq + i as u64,
                Location {
                    segment,
                    offset,
                    len: payload.len() as u32,
                },
            ));
            offset += payload.len() as u64;
        }
        let written = self
            .active
            .write_all_at(&buffer, self.active_len)
            .and_then(|()| self.active.sync_data());
        if let Err(error) = written {
            // Take the partial batch back out so the next batch starts on a clean tail; if even
            // that fails the file's state is unknown and the writer must stop.
            let undone = self
                .active
                .set_len(self.active_len)
                .and_then(|()| self.active.sync_data());
            self.encoder.rewind(mark);
            if let Err(undo_error) = undone {
                return Err(Error::Unavailable(format!(
                    "append failed ({error}) and could not be undone ({undo_error})"
                )));
            }
            return Err(Error::io(&self.active_path, error));
        }
        {
            let segments = self.reader.segments.read().expect("segment list lock");
            let active = segments.last().expect("at least one segment");
            active
                .dictionary
                .write()
                .expect("dictionary lock")
                .extend_from(self.encoder.dictionary());
        }
        self.active_len = offset;
        self.next_seq += payloads.len() as u64;
        self.active_day.get_or_insert(day);
        Ok(placed)
    }

    fn roll(&mut self) -> Result<()> {
        let path = segment_path(&self.config.dir, self.next_seq);
        create_segment(&path, &self.config.dir)?;
        let active = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let read = File::open(&path).map_err(|e| Error::io(&path, e))?;
        self.reader
            .segments
            .write()
            .expect("segment list lock")
            .push(SegmentInfo {
                first_seq: self.next_seq,
                path: path.clone(),
                file: Some(Arc::new(read)),
                dictionary: Arc::new(RwLock::new(Dictionary::default())),
            });
        self.encoder = Encoder::default();
        self.first_seqs.push(self.next_seq);
        self.active = active;
        self.active_path = path;
        self.active_len = HEADER_BYTES;
        self.active_day = None;
        Ok(())
    }
}

fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

fn create_segment(path: &Path, dir: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8] = FORMAT_VERSION;
    file.write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Reads every frame of a segment. A bad frame in the last segment is a torn tail from a crash:
/// it is cut off. A bad frame in any earlier segment is corruption.
fn scan_segment(
    path: &Path,
    segment: u32,
    first_seq: Seq,
    is_last: bool,
    protected: Seq,
    dictionary: &mut Dictionary,
    on_record: &mut impl FnMut(Seq, Location, &AuditEvent) -> Result<()>,
) -> Result<(u64, u64)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
        if is_last
            && bytes.len() < HEADER_BYTES as usize
            && MAGIC.starts_with(&bytes[..bytes.len().min(8)])
        {
            // Crashed while creating the segment: write its header again.
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            let mut header = [0u8; HEADER_BYTES as usize];
            header[..8].copy_from_slice(MAGIC);
            header[8] = FORMAT_VERSION;
            file.write_all_at(&header, 0)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(path, e))?;
            return Ok((0, HEADER_BYTES));
        }
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
    let mut pos = HEADER_BYTES as usize;
    let mut n_records = 0u64;
    while pos < bytes.len() {
        match frame_at(&bytes, pos, first_seq + n_records) {
            Some(payload_len) => {
                let offset = pos + FRAME_HEADER_BYTES as usize;
                let payload = &bytes[offset..offset + payload_len];
                let location = Location {
                    segment,
                    offset: offset as u64,
                    len: payload_len as u32,
                };
                let event = decode_next(payload, dictionary).map_err(|e| {
                    Error::Corrupted(format!(
                        "{} record seq {}: {e}",
                        path.display(),
                        first_seq + n_records
                    ))
                })?;
                on_record(first_seq + n_records, location, &event)?;
                n_records += 1;
                pos = offset + payload_len;
            }
            None if is_last && first_seq + n_records >= protected => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                file.set_len(pos as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io(path, e))?;
                return Ok((n_records, pos as u64));
            }
            None => {
                return Err(Error::Corrupted(format!(
                    "{} has a bad frame at byte {pos} (record seq {}){}",
                    path.display(),
                    first_seq + n_records,
                    if first_seq + n_records < protected {
                        ", inside a signed checkpoint"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    Ok((n_records, pos as u64))
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
