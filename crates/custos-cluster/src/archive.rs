//! Sealed partitions in JetStream's object store, and the stream trimmed behind them.
//!
//! The node that signs the cluster's checkpoints (`signer.rs`) also archives: whatever its log
//! has sealed beyond the archive's end goes into the object store bucket `CUSTOS_ARCHIVE` as
//! objects `audit/<tenant>/<first seq>` of at most `OBJECT_EVENTS` events, each a run of
//! frames `u32 length | message` in the stream's own message encoding
//! (`custos_audit::encode_batch`). Not the segment files: a segment refers to record ids
//! numbered in earlier partitions, where a message decodes alone and a node importing it
//! appends exactly what the stream would have delivered — so it builds the same segments,
//! index, `ids.dat`, leaves and tree as from the stream, and the signed checkpoints that follow
//! in the stream check it. An object never spans two partitions, and says when it ends one:
//! partitions are cut at the same events on every node (by size and day, event by event, or at
//! a seal marker), and a marker trimmed from the stream lives on as that mark. An object's metadata
//! says its first seq, its events, and `stream`: a stream sequence whose messages, and all
//! before it, hold only events below the object's end (from the replica's marks, `Marks`).
//!
//! Behind the latest object the stream is purged — this tenant's subject, up to that `stream`
//! sequence, and never past the acknowledged floor of any durable consumer of the subject, so
//! an audit node that is following keeps every message it has not appended. A node that starts
//! behind the archive (a new node, a rebuilt one, one whose consumer JetStream removed after
//! `CONSUMER_IDLE`) first makes its consumer (which holds the stream from its position on),
//! then imports the objects beyond its log, then follows the stream, skipping what it already
//! holds (`replica.rs`).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::object_store::{ObjectInfo, ObjectMetadata, ObjectStore};
use async_nats::jetstream::{self, stream};
use custos_audit::{AuditLog, PurgedRange};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::signer::SignerStatus;

/// The object store bucket of archived partitions.
const BUCKET: &str = "CUSTOS_ARCHIVE";
/// Most events in one object.
const OBJECT_EVENTS: u64 = 65_536;
/// Events per message inside an object.
const MESSAGE_EVENTS: usize = 1_024;
/// Most bytes of one message inside an object (a damaged length is refused, not allocated).
const MESSAGE_BYTES_MAX: usize = 256 << 20;
/// How often the signer looks for sealed events to archive.
const ARCHIVE_EVERY: Duration = Duration::from_secs(5);
/// How long JetStream keeps a durable consumer nobody pulls from; a node away longer starts
/// from the archive.
pub(crate) const CONSUMER_IDLE: Duration = Duration::from_secs(3_600);
/// Marks the replica keeps.
const MARKS_KEPT: usize = 4_096;

/// After each append of the replica: the log's length and the last stream sequence appended,
/// so every message up to that sequence holds only events below that length.
#[derive(Debug, Default)]
pub(crate) struct Marks(VecDeque<(u64, u64)>);

impl Marks {
    pub(crate) fn push(&mut self, log_len: u64, stream_sequence: u64) {
        if self.0.len() == MARKS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((log_len, stream_sequence));
    }

    /// The largest stream sequence all of whose messages' events are below `end`.
    fn stream_below(&self, end: u64) -> Option<u64> {
        self.0
            .iter()
            .filter(|(len, _)| *len <= end)
            .map(|(_, sequence)| *sequence)
            .max()
    }
}

/// An object of the archive, as its metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Archived {
    first: u64,
    events: u64,
    stream: u64,
    /// Whether a partition of the log ends with the object's last event (an object never
    /// spans two): a node importing it seals there, as the node that archived it did.
    ends_partition: bool,
    /// Whether retention purged its events: it holds their leaves and record ids alone
    /// (`encode_purged`), and stands for the whole partition.
    purged: bool,
}

impl Archived {
    fn end(&self) -> u64 {
        self.first + self.events
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("first".to_string(), self.first.to_string()),
            ("events".to_string(), self.events.to_string()),
            ("stream".to_string(), self.stream.to_string()),
            ("partition_end".to_string(), self.ends_partition.to_string()),
            ("purged".to_string(), self.purged.to_string()),
        ])
    }

    fn read(info: &ObjectInfo) -> Result<Archived, String> {
        // Objects archived before partitions were cut alike everywhere, or before retention ran
        // in a cluster, do not say.
        let flag = |key: &str| info.metadata.get(key).is_some_and(|value| value == "true");
        let number = |key: &str| {
            info.metadata
                .get(key)
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| format!("archived object {} has no {key}", info.name))
        };
        Ok(Archived {
            first: number("first")?,
            events: number("events")?,
            stream: number("stream")?,
            ends_partition: flag("partition_end"),
            purged: flag("purged"),
        })
    }
}

fn prefix(tenant: uuid::Uuid) -> String {
    format!("audit/{tenant}/")
}

/// The name of the tenant's object that begins at seq `first` (the listing's order).
fn object_name(tenant: uuid::Uuid, first: u64) -> String {
    format!("{}{first:020}", prefix(tenant))
}

/// Opens (or makes) the archive bucket. Its stream is made here in the object store's layout
/// (`OBJ_<bucket>`), as the lease bucket's is, so nothing depends on a newer server's account
/// answers.
pub(crate) async fn bucket(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> Result<ObjectStore, String> {
    if let Ok(store) = jetstream.get_object_store(BUCKET).await {
        return Ok(store);
    }
    jetstream
        .get_or_create_stream(stream::Config {
            name: format!("OBJ_{BUCKET}"),
            subjects: vec![format!("$O.{BUCKET}.C.>"), format!("$O.{BUCKET}.M.>")],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the archive bucket {BUCKET}: {e}"))?;
    jetstream
        .get_object_store(BUCKET)
        .await
        .map_err(|e| format!("the archive bucket {BUCKET}: {e}"))
}

/// The tenant's objects in order, and the leftovers of a replacement cut short (event objects
/// inside a purged object's range, to delete); the rest must follow each other without a gap
/// or an overlap.
async fn objects(
    store: &ObjectStore,
    tenant: uuid::Uuid,
) -> Result<(Vec<Archived>, Vec<Archived>), String> {
    let prefix = prefix(tenant);
    let mut listed = store
        .list()
        .await
        .map_err(|e| format!("listing the archive: {e}"))?;
    let mut found = Vec::new();
    while let Some(info) = listed.next().await {
        let info = info.map_err(|e| format!("listing the archive: {e}"))?;
        if info.name.starts_with(&prefix) && !info.deleted {
            found.push(Archived::read(&info)?);
        }
    }
    in_order(found)
}

/// `objects` sorted by their first seq, if each begins where the one before ends — but for
/// event objects inside a purged object's range, handed back apart.
fn in_order(mut objects: Vec<Archived>) -> Result<(Vec<Archived>, Vec<Archived>), String> {
    objects.sort_by_key(|object| object.first);
    let mut end = objects.first().map_or(0, |object| object.first);
    let (mut kept, mut leftovers) = (Vec::new(), Vec::new());
    for object in objects {
        if !object.purged && object.first < end && kept.last().is_some_and(|o: &Archived| o.purged)
        {
            leftovers.push(object);
            continue;
        }
        if object.first != end {
            return Err(format!(
                "the archive has no events {end}..{} (objects must follow each other)",
                object.first
            ));
        }
        end = object.end();
        kept.push(object);
    }
    Ok((kept, leftovers))
}

/// The folder of `cluster_dir` where a node keeps the ranges its log purged (their leaves and
/// record ids) until the archive holds them.
pub(crate) fn purged_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("purged")
}

/// A purged range as bytes: `first`, `count`, the purge event's seq and the number of record
/// ids (`u64` little endian each), then the leaves (32 bytes each), then the record ids (16
/// bytes each).
fn encode_purged(range: &PurgedRange) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32 + range.leaves.len() * 32 + range.ids.len() * 16);
    for number in [
        range.first,
        range.count,
        range.event_seq,
        range.ids.len() as u64,
    ] {
        bytes.extend_from_slice(&number.to_le_bytes());
    }
    for leaf in &range.leaves {
        bytes.extend_from_slice(leaf);
    }
    for id in &range.ids {
        bytes.extend_from_slice(id.as_bytes());
    }
    bytes
}

/// The range `encode_purged` wrote, if `bytes` are exactly one.
fn decode_purged(bytes: &[u8]) -> Result<PurgedRange, String> {
    let number = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or("a purged range cut short")
    };
    let (first, count, event_seq, n_ids) = (number(0)?, number(8)?, number(16)?, number(24)?);
    let expected = count
        .checked_mul(32)
        .and_then(|leaves| n_ids.checked_mul(16)?.checked_add(leaves)?.checked_add(32));
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "a purged range of {count} records and {n_ids} record ids is not {} bytes long",
            bytes.len()
        ));
    }
    let leaves_end = 32 + count as usize * 32;
    Ok(PurgedRange {
        first,
        count,
        event_seq,
        leaves: bytes[32..leaves_end]
            .chunks_exact(32)
            .map(|leaf| leaf.try_into().expect("32 bytes"))
            .collect(),
        ids: bytes[leaves_end..]
            .chunks_exact(16)
            .map(|id| uuid::Uuid::from_bytes(id.try_into().expect("16 bytes")))
            .collect(),
    })
}

/// Keeps `range`, which this node's log is about to delete, in `dir` (0700) until the archive
/// holds it (a new private file, made durable, then renamed into place). Call from blocking
/// code.
pub(crate) fn keep_purged(dir: &Path, range: &PurgedRange) -> custos_audit::Result<()> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| {
            custos_audit::Error::Unavailable(format!(
                "keeping a purged range: {}: {e}",
                path.display()
            ))
        }
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed(dir))?;
    }
    let path = dir.join(format!("{:020}", range.first));
    let fresh = path.with_extension("new");
    let mut file = custos_audit::files::create_replacing(&fresh).map_err(failed(&fresh))?;
    file.write_all(&encode_purged(range))
        .and_then(|()| file.sync_all())
        .map_err(failed(&fresh))?;
    std::fs::rename(&fresh, &path).map_err(failed(&path))?;
    custos_audit::files::sync_dir(dir).map_err(failed(dir))
}

/// The ranges kept in `dir`, by first seq.
fn kept_purged(dir: &Path) -> Result<Vec<(PurgedRange, PathBuf)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut kept = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some() {
            continue;
        }
        let bytes =
            custos_audit::files::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        kept.push((
            decode_purged(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            path,
        ));
    }
    kept.sort_by_key(|(range, _)| range.first);
    Ok(kept)
}

/// What the archiving task needs.
pub(crate) struct ArchiveTask {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) replicas: usize,
    pub(crate) subject: String,
    pub(crate) tenant_id: uuid::Uuid,
    pub(crate) log: Arc<AuditLog>,
    pub(crate) marks: Arc<Mutex<Marks>>,
    pub(crate) signer: Arc<Mutex<SignerStatus>>,
    /// A folder of this node's own for the object being written.
    pub(crate) dir: PathBuf,
}

/// Runs for as long as the process: while this node signs, archives what its log has sealed
/// and trims the stream behind the archive; on every node, forgets the purged ranges it kept
/// once the archive holds them.
pub(crate) async fn run(task: ArchiveTask) {
    let mut store = None;
    loop {
        tokio::time::sleep(ARCHIVE_EVERY).await;
        let signing = task.signer.lock().expect("signer status lock").signing;
        let keeping = std::fs::read_dir(purged_dir(&task.dir))
            .is_ok_and(|mut entries| entries.next().is_some());
        if !signing && !keeping {
            continue;
        }
        if store.is_none() {
            store = bucket(&task.jetstream, task.replicas)
                .await
                .map_err(|error| tracing::warn!(%error, "waiting for the archive bucket"))
                .ok();
        }
        let Some(store) = &store else { continue };
        let step = if signing {
            archive_step(&task, store).await
        } else {
            forget_archived_purges(&task, store).await
        };
        if let Err(error) = step {
            tracing::warn!(%error, "archiving sealed partitions");
        }
    }
}

/// Removes the purged ranges this node kept that the archive holds as purged objects.
async fn forget_archived_purges(task: &ArchiveTask, store: &ObjectStore) -> Result<(), String> {
    let (archived, _) = objects(store, task.tenant_id).await?;
    for (range, path) in kept_purged(&purged_dir(&task.dir))? {
        if archived
            .iter()
            .any(|object| object.purged && object.first == range.first)
        {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Archives the sealed events beyond the archive's end, one object at a time (a range the log
/// purged as its purged object), replaces the archived events of the ranges the log purged
/// since by their purged objects, then trims.
async fn archive_step(task: &ArchiveTask, store: &ObjectStore) -> Result<(), String> {
    let (mut archived, leftovers) = objects(store, task.tenant_id).await?;
    for object in leftovers {
        delete(task, store, object.first).await?;
    }
    let mut kept = kept_purged(&purged_dir(&task.dir))?;
    let archived_end = archived.last().map_or(0, Archived::end);
    for (range, path) in &kept {
        let end = range.first + range.count;
        // A range the archive holds (or began to hold) as events.
        if range.first >= archived_end {
            continue;
        }
        let replaced: Vec<Archived> = archived
            .iter()
            .filter(|object| range.first <= object.first && object.first < end)
            .copied()
            .collect();
        if !replaced.is_empty() && replaced.iter().all(|object| !object.purged) {
            let below = task.marks.lock().expect("marks lock").stream_below(end);
            let object = Archived {
                first: range.first,
                events: range.count,
                stream: replaced
                    .iter()
                    .map(|o| o.stream)
                    .chain(below)
                    .max()
                    .unwrap_or(0),
                ends_partition: true,
                purged: true,
            };
            put_purged(task, store, object, range).await?;
            for inside in replaced.iter().filter(|o| o.first > range.first) {
                delete(task, store, inside.first).await?;
            }
            archived.retain(|o| !(range.first <= o.first && o.first < end));
            archived.push(object);
            archived.sort_by_key(|o| o.first);
            tracing::info!(
                first = range.first,
                events = range.count,
                "replaced purged audit events in the archive by their leaves"
            );
        }
        let _ = std::fs::remove_file(path);
    }
    let archive_end = archived.last().map_or(0, Archived::end);
    kept.retain(|(range, _)| range.first >= archive_end);
    let sealed = task.log.sealed_len();
    let partition_ends = task.log.partition_ends();
    let mut next = archive_end;
    while next < sealed {
        let partition_end = partition_ends
            .iter()
            .copied()
            .find(|end| *end > next)
            .unwrap_or(sealed);
        let purged = kept.iter().find(|(range, _)| range.first == next);
        let end = match purged {
            Some((range, _)) => range.first + range.count,
            None => partition_end.min(next + OBJECT_EVENTS),
        };
        let previous = archived.last().map_or(0, |object| object.stream);
        // Marks are kept for the last few thousand appends: an object sealed before this node
        // restarted takes the stream sequence of the one before it, which is also true.
        let below = task.marks.lock().expect("marks lock").stream_below(end);
        let object = Archived {
            first: next,
            events: end - next,
            stream: below.unwrap_or(previous).max(previous),
            ends_partition: end == partition_end,
            purged: purged.is_some(),
        };
        match purged {
            Some((range, path)) => {
                put_purged(task, store, object, range).await?;
                let _ = std::fs::remove_file(path);
            }
            None => put(task, store, object).await?,
        }
        tracing::info!(
            first = object.first,
            events = object.events,
            purged = object.purged,
            "archived audit events"
        );
        archived.push(object);
        next = end;
    }
    let Some(latest) = archived.last() else {
        return Ok(());
    };
    task.signer.lock().expect("signer status lock").archived = latest.end();
    if let Some(trimmed) = trim(task, latest.stream).await? {
        task.signer
            .lock()
            .expect("signer status lock")
            .trimmed_through = trimmed;
    }
    Ok(())
}

/// Deletes the object of the archive that begins at `first`.
async fn delete(task: &ArchiveTask, store: &ObjectStore, first: u64) -> Result<(), String> {
    let name = object_name(task.tenant_id, first);
    store
        .delete(&name)
        .await
        .map_err(|e| format!("deleting {name} from the archive: {e}"))
}

/// Puts the purged range `range` in the bucket as `object` (over the events object of the same
/// first seq, when there is one).
async fn put_purged(
    task: &ArchiveTask,
    store: &ObjectStore,
    object: Archived,
    range: &PurgedRange,
) -> Result<(), String> {
    let bytes = encode_purged(range);
    let name = object_name(task.tenant_id, object.first);
    let meta = ObjectMetadata {
        name: name.clone(),
        description: Some(format!(
            "audit events {}..{} purged by retention (the event at seq {}): their leaves and record ids",
            object.first,
            object.end(),
            range.event_seq
        )),
        metadata: object.metadata(),
        ..Default::default()
    };
    store
        .put(meta, &mut bytes.as_slice())
        .await
        .map(|_| ())
        .map_err(|e| format!("putting {name} in the archive: {e}"))
}

/// Writes the events of `object` to a file of this node's, then puts the file in the bucket.
async fn put(task: &ArchiveTask, store: &ObjectStore, object: Archived) -> Result<(), String> {
    let path = task.dir.join("archive.part");
    let (log, written) = (task.log.clone(), path.clone());
    tokio::task::spawn_blocking(move || write_object(&log, object, &written))
        .await
        .map_err(|e| format!("writing an archive object: {e}"))??;
    let mut file = custos_audit::files::open_read(&path)
        .map(tokio::fs::File::from_std)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let name = object_name(task.tenant_id, object.first);
    let meta = ObjectMetadata {
        name: name.clone(),
        description: Some(format!("audit events {}..{}", object.first, object.end())),
        metadata: object.metadata(),
        ..Default::default()
    };
    let put = store.put(meta, &mut file).await;
    let _ = std::fs::remove_file(&path);
    put.map(|_| ())
        .map_err(|e| format!("putting {name} in the archive: {e}"))
}

/// The events of `object` from `log`, as frames of messages, in a new file at `path` (0600,
/// never through a link planted there).
fn write_object(log: &AuditLog, object: Archived, path: &Path) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = custos_audit::files::create_replacing(path).map_err(failed)?;
    let mut out = std::io::BufWriter::new(file);
    let mut next = object.first;
    while next < object.end() {
        let wanted = (object.end() - next).min(MESSAGE_EVENTS as u64) as usize;
        let events = log
            .read_from(next, wanted)
            .map_err(|e| format!("reading audit events from {next}: {e}"))?;
        match events.last() {
            Some((last, _)) if *last < object.end() => next = last + 1,
            _ => return Err(format!("the log does not hold audit events from {next}")),
        }
        let message = custos_audit::encode_batch(
            events
                .iter()
                .filter(|(seq, _)| *seq < object.end())
                .map(|(_, event)| event),
        );
        let length = u32::try_from(message.len()).map_err(|_| "an archive message over 4 GiB")?;
        out.write_all(&length.to_le_bytes())
            .and_then(|()| out.write_all(&message))
            .map_err(failed)?;
    }
    out.into_inner()
        .map_err(|e| failed(e.into_error()))?
        .sync_all()
        .map_err(failed)
}

/// Purges this tenant's messages up to `through`, but none that a durable consumer of the
/// subject has not acknowledged; returns the sequence it purged up to, when it purged.
async fn trim(task: &ArchiveTask, through: u64) -> Result<Option<u64>, String> {
    let mut floor = through;
    let mut consumers = task.stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| format!("listing the audit stream's consumers: {e}"))?;
        let filter = info.config.filter_subject.as_str();
        if filter == task.subject || filter.is_empty() {
            floor = floor.min(info.ack_floor.stream_sequence);
        }
    }
    if floor == 0 {
        return Ok(None);
    }
    let first = task
        .stream
        .get_first_raw_message_by_subject(&task.subject, 1)
        .await
        .map(|message| message.sequence)
        .unwrap_or(u64::MAX);
    if first > floor {
        return Ok(None);
    }
    task.stream
        .purge()
        .filter(&task.subject)
        .sequence(floor + 1)
        .await
        .map_err(|e| format!("trimming the audit stream behind the archive: {e}"))?;
    tracing::info!(
        through = floor,
        "trimmed the audit stream behind the archive"
    );
    Ok(Some(floor))
}

/// Appends to `log` the archived events beyond it; returns how many. Events the log already
/// holds are skipped, and must be the very ones the archive holds there.
pub(crate) async fn import(
    store: &ObjectStore,
    tenant: uuid::Uuid,
    log: &Arc<AuditLog>,
) -> Result<u64, String> {
    let mut imported = 0;
    let (objects, _) = objects(store, tenant).await?;
    for object in objects {
        if object.end() <= log.len() {
            continue;
        }
        let name = object_name(tenant, object.first);
        let mut reader = store
            .get(&name)
            .await
            .map_err(|e| format!("reading {name} from the archive: {e}"))?;
        if object.purged {
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("reading {name} from the archive: {e}"))?;
            let range = decode_purged(&bytes).map_err(|e| format!("{name}: {e}"))?;
            if (range.first, range.count) != (object.first, object.events) {
                return Err(format!("{name}: it holds another range than it says"));
            }
            let taker = log.clone();
            tokio::task::spawn_blocking(move || taker.import_purged(range))
                .await
                .map_err(|e| format!("importing {name}: {e}"))?
                .map_err(|e| format!("importing {name}, purged by retention: {e}"))?;
            continue;
        }
        let mut seq = object.first;
        while seq < object.end() {
            let mut length = [0u8; 4];
            reader
                .read_exact(&mut length)
                .await
                .map_err(|e| format!("{name}: cut short at event {seq}: {e}"))?;
            let length = u32::from_le_bytes(length) as usize;
            if length > MESSAGE_BYTES_MAX {
                return Err(format!(
                    "{name}: a message of {length} bytes at event {seq}"
                ));
            }
            let mut message = vec![0; length];
            reader
                .read_exact(&mut message)
                .await
                .map_err(|e| format!("{name}: cut short at event {seq}: {e}"))?;
            let events = custos_audit::decode_batch(&message)
                .map_err(|e| format!("{name} at event {seq}: {e}"))?;
            let count = events.len() as u64;
            if count == 0 || seq + count > object.end() {
                return Err(format!(
                    "{name}: its messages do not match its {} events",
                    object.events
                ));
            }
            let appender = log.clone();
            let from = seq;
            imported += tokio::task::spawn_blocking(move || append_new(&appender, from, events))
                .await
                .map_err(|e| format!("importing {name}: {e}"))??;
            seq += count;
        }
        if object.ends_partition {
            let sealer = log.clone();
            tokio::task::spawn_blocking(move || {
                if sealer.len() == object.end() {
                    sealer.seal_active()?;
                }
                Ok::<_, custos_audit::Error>(())
            })
            .await
            .map_err(|e| format!("importing {name}: {e}"))?
            .map_err(|e| format!("sealing the partition {name} ends: {e}"))?;
        }
    }
    Ok(imported)
}

/// Appends the events of seqs `from..` that `log` does not reach yet; those it holds must be
/// the same events.
fn append_new(
    log: &AuditLog,
    from: u64,
    events: Vec<custos_audit::AuditEvent>,
) -> Result<u64, String> {
    let held = log.len().saturating_sub(from).min(events.len() as u64) as usize;
    for (offset, event) in events[..held].iter().enumerate() {
        let seq = from + offset as u64;
        match log.get_seq(seq) {
            Ok(Some(own)) if own.id == event.id => {}
            Ok(_) => {
                return Err(format!(
                    "the archive's event {seq} is not this log's: the logs have diverged"
                ));
            }
            Err(e) => return Err(format!("reading this log's event {seq}: {e}")),
        }
    }
    let fresh: Vec<_> = events.into_iter().skip(held).collect();
    let count = fresh.len() as u64;
    log.append_all(fresh)
        .map_err(|e| format!("appending archived events from {}: {e}", from + held as u64))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(first: u64, events: u64) -> Archived {
        Archived {
            first,
            events,
            stream: 0,
            ends_partition: false,
            purged: false,
        }
    }

    #[test]
    fn objects_must_follow_each_other() {
        let (sorted, leftovers) = in_order(vec![object(10, 5), object(0, 10)]).unwrap();
        assert_eq!(sorted, vec![object(0, 10), object(10, 5)]);
        assert!(leftovers.is_empty());
        let gap = in_order(vec![object(0, 10), object(11, 5)]).unwrap_err();
        assert!(gap.contains("no events 10..11"), "{gap}");
        assert!(in_order(vec![object(0, 10), object(5, 10)]).is_err());
    }

    /// A purged object put over the first events object of its range, the others inside it not
    /// deleted yet (a replacement cut short): they are handed back to delete, not a gap.
    #[test]
    fn events_objects_inside_a_purged_one_are_leftovers() {
        let purged = Archived {
            purged: true,
            ends_partition: true,
            ..object(10, 20)
        };
        let (sorted, leftovers) =
            in_order(vec![object(0, 10), purged, object(20, 10), object(30, 5)]).unwrap();
        assert_eq!(sorted, vec![object(0, 10), purged, object(30, 5)]);
        assert_eq!(leftovers, vec![object(20, 10)]);
    }

    /// A kept range is private (folder 0700, file 0600) and written through no link planted
    /// where it goes.
    #[test]
    fn a_kept_range_is_private_and_follows_no_link() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, "untouched").unwrap();
        let range = PurgedRange {
            first: 10,
            count: 1,
            event_seq: 20,
            leaves: vec![[1; 32]],
            ids: Vec::new(),
        };
        let made = purged_dir(root.path());
        keep_purged(&made, &range).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made), 0o700);
        let kept = made.join(format!("{:020}", 10));
        assert_eq!(mode(&kept), 0o600);
        // A link where the new file goes is replaced, not written through.
        std::os::unix::fs::symlink(&outside, made.join(format!("{:020}.new", 10))).unwrap();
        keep_purged(&made, &range).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
        assert_eq!(kept_purged(&made).unwrap()[0].0, range);
    }

    #[test]
    fn a_purged_range_reads_back_and_nothing_else_does() {
        let range = PurgedRange {
            first: 10,
            count: 2,
            event_seq: 40,
            leaves: vec![[1; 32], [2; 32]],
            ids: vec![uuid::Uuid::from_u128(5)],
        };
        let bytes = encode_purged(&range);
        assert_eq!(bytes.len(), 32 + 64 + 16);
        assert_eq!(decode_purged(&bytes), Ok(range));
        assert!(decode_purged(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_purged(&[bytes.as_slice(), &[0]].concat()).is_err());
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            decode_purged(&huge).is_err(),
            "a count that overflows is refused"
        );
    }

    #[test]
    fn a_mark_names_the_last_stream_sequence_wholly_below_an_end() {
        let mut marks = Marks::default();
        marks.push(0, 4);
        marks.push(100, 9);
        marks.push(250, 12);
        assert_eq!(marks.stream_below(99), Some(4));
        assert_eq!(marks.stream_below(100), Some(9));
        assert_eq!(marks.stream_below(249), Some(9));
        assert_eq!(marks.stream_below(1_000), Some(12));
        for n in 0..MARKS_KEPT as u64 {
            marks.push(1_000 + n, 100 + n);
        }
        assert_eq!(marks.stream_below(999), None, "older marks are dropped");
    }

    #[test]
    fn metadata_reads_back() {
        let written = Archived {
            first: 7,
            events: 3,
            stream: 42,
            ends_partition: true,
            purged: true,
        };
        let info: ObjectInfo = serde_json::from_value(serde_json::json!({
            "name": "audit/x/00000000000000000007",
            "bucket": BUCKET,
            "metadata": written.metadata(),
        }))
        .unwrap();
        assert_eq!(Archived::read(&info).unwrap(), written);
    }
}
