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
use custos_audit::AuditLog;
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

    /// The last stream sequence the replica has applied (0 before its first append).
    pub(crate) fn through(&self) -> u64 {
        self.0.back().map_or(0, |(_, sequence)| *sequence)
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
        ])
    }

    fn read(info: &ObjectInfo) -> Result<Archived, String> {
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
            // Objects archived before partitions were cut alike everywhere do not say.
            ends_partition: info
                .metadata
                .get("partition_end")
                .is_some_and(|value| value == "true"),
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

/// The tenant's objects in order; they must follow each other without a gap or an overlap.
async fn objects(store: &ObjectStore, tenant: uuid::Uuid) -> Result<Vec<Archived>, String> {
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

/// `objects` sorted by their first seq, if each begins where the one before ends.
fn in_order(mut objects: Vec<Archived>) -> Result<Vec<Archived>, String> {
    objects.sort_by_key(|object| object.first);
    let mut end = objects.first().map_or(0, |object| object.first);
    for object in &objects {
        if object.first != end {
            return Err(format!(
                "the archive has no events {end}..{} (objects must follow each other)",
                object.first
            ));
        }
        end = object.end();
    }
    Ok(objects)
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
/// and trims the stream behind the archive.
pub(crate) async fn run(task: ArchiveTask) {
    let mut store = None;
    loop {
        tokio::time::sleep(ARCHIVE_EVERY).await;
        if !task.signer.lock().expect("signer status lock").signing {
            continue;
        }
        if store.is_none() {
            store = bucket(&task.jetstream, task.replicas)
                .await
                .map_err(|error| tracing::warn!(%error, "waiting for the archive bucket"))
                .ok();
        }
        let Some(store) = &store else { continue };
        if let Err(error) = archive_step(&task, store).await {
            tracing::warn!(%error, "archiving sealed partitions");
        }
    }
}

/// Archives the sealed events beyond the archive's end, one object at a time, then trims.
async fn archive_step(task: &ArchiveTask, store: &ObjectStore) -> Result<(), String> {
    let mut archived = objects(store, task.tenant_id).await?;
    let sealed = task.log.sealed_len();
    let partition_ends = task.log.partition_ends();
    let mut next = archived.last().map_or(0, Archived::end);
    while next < sealed {
        let partition_end = partition_ends
            .iter()
            .copied()
            .find(|end| *end > next)
            .unwrap_or(sealed);
        let end = partition_end.min(next + OBJECT_EVENTS);
        let previous = archived.last().map_or(0, |object| object.stream);
        // Marks are kept for the last few thousand appends: an object sealed before this node
        // restarted takes the stream sequence of the one before it, which is also true.
        let below = task.marks.lock().expect("marks lock").stream_below(end);
        let object = Archived {
            first: next,
            events: end - next,
            stream: below.unwrap_or(previous).max(previous),
            ends_partition: end == partition_end,
        };
        put(task, store, object).await?;
        tracing::info!(
            first = object.first,
            events = object.events,
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

/// Writes the events of `object` to a file of this node's, then puts the file in the bucket.
async fn put(task: &ArchiveTask, store: &ObjectStore, object: Archived) -> Result<(), String> {
    let path = task.dir.join("archive.part");
    let (log, written) = (task.log.clone(), path.clone());
    tokio::task::spawn_blocking(move || write_object(&log, object, &written))
        .await
        .map_err(|e| format!("writing an archive object: {e}"))??;
    let mut file = tokio::fs::File::open(&path)
        .await
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
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let _ = std::fs::remove_file(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(failed)?;
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
    for object in objects(store, tenant).await? {
        if object.end() <= log.len() {
            continue;
        }
        let name = object_name(tenant, object.first);
        let mut reader = store
            .get(&name)
            .await
            .map_err(|e| format!("reading {name} from the archive: {e}"))?;
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
        }
    }

    #[test]
    fn objects_must_follow_each_other() {
        let sorted = in_order(vec![object(10, 5), object(0, 10)]).unwrap();
        assert_eq!(sorted, vec![object(0, 10), object(10, 5)]);
        let gap = in_order(vec![object(0, 10), object(11, 5)]).unwrap_err();
        assert!(gap.contains("no events 10..11"), "{gap}");
        assert!(in_order(vec![object(0, 10), object(5, 10)]).is_err());
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
