//! The audit log handle: one writer thread with group commit, a sealer thread that writes
//! each complete partition's index file, and searches over the partitions.
//!
//! Callers put their event on a bounded queue (a full queue blocks the caller: back-pressure,
//! never a drop) and wait for the writer's answer. The writer takes every event waiting,
//! encodes them, writes them with one write and one `fdatasync` (on the syncer thread while it
//! encodes the next batch, when one is at hand), adds them to the Merkle tree, hands them to
//! the indexer thread, and only then answers each caller, so an acknowledged event is durable,
//! and found by every read that starts after the answer.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::Instant;

use uuid::Uuid;

use crate::canonical::event_leaf_hash;
use crate::codec::{Encoder, Numbered, decode_event};
use crate::event::AuditEvent;
use crate::handles::{Handle, Handles};
use crate::ids::{IdDict, IdFile};
use crate::index::{
    Compiled, Location, PartState, Partition, ReportTotals, SearchPage, SearchQuery, SearchSort,
    SortCursor, SortedCandidates, SortedPage, collect_newest, count_into, report_into,
};
use crate::integrity::{Adopted, ClusterKeys, InclusionProof, Integrity};
use crate::log::{ActiveSegment, DAY_US, FRAME_HEADER_BYTES, LogConfig, Seq};
use crate::merkle::{Hash, TILE_LEAVES};
use crate::partition::{Field, MemIndex, PartitionIndex, Place};
use crate::retention::{PrunedFile, PurgeClaim, PurgedPartition, RetentionPolicy, pruned_digest};
use crate::sealed::{self, SealedIndex};
use crate::verify::VerifyReport;
use crate::{Error, Result};

/// Upper bounds (microseconds) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Counters of the writer, for metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Events made durable.
    pub events_appended: AtomicU64,
    /// Group commits done.
    pub batches: AtomicU64,
    /// Group commits that failed.
    pub batches_failed: AtomicU64,
    /// Checkpoints signed.
    pub checkpoints_signed: AtomicU64,
    /// Partitions whose index file was written.
    pub partitions_sealed: AtomicU64,
    /// Index files that could not be written (the partition stays searchable from memory).
    pub seal_failures: AtomicU64,
    /// Sum of write + fdatasync time, microseconds.
    pub fsync_us_total: AtomicU64,
    /// Count of batches at or under each bound of [`FSYNC_BUCKETS_US`] (not cumulative).
    pub fsync_us_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

/// Hears, on the writer thread, whether an append is durable and searchable (its seq) or why
/// not. It must not block: it hands the outcome on (to a waiting thread or task).
pub type Done = Box<dyn FnOnce(Result<Seq>) + Send>;

/// What the writer is asked to do.
enum Job {
    /// Append an event (its leaf hash computed by the caller) and answer with its seq.
    Append {
        event: Box<AuditEvent>,
        leaf: Hash,
        done: Done,
    },
    /// Close the active segment now, so it is sealed (answered once it is closed).
    Roll { done: SyncSender<Result<()>> },
    /// Take a range another audit node purged, as its leaves and record ids
    /// ([`AuditLog::import_purged`]).
    ImportPurged {
        range: Box<PurgedRange>,
        done: SyncSender<Result<()>>,
    },
    /// Stop once the appends before this are written: the log is closing.
    Close { done: SyncSender<()> },
}

/// State shared by the writer, the sealer and readers. Locks are never nested.
pub(crate) struct Shared {
    pub(crate) partitions: RwLock<Vec<Partition>>,
    /// The budget of open files the partitions' handles share.
    pub(crate) handles: Arc<Handles>,
    pub(crate) ids: RwLock<IdDict>,
    pub(crate) id_file: IdFile,
    pub(crate) integrity: Integrity,
    pub(crate) stats: LogStats,
    /// Partitions waiting for their index file, and the last sealing failure.
    pub(crate) sealing: Mutex<Sealing>,
    pub(crate) sealed: Condvar,
    /// The first damage found while serving: a record that does not match its leaf.
    pub(crate) damage: Mutex<Option<String>>,
    /// Why the last batch was refused (the disk is full, a write failed), until one succeeds.
    pub(crate) refusing: Mutex<Option<String>>,
    /// How far the indexer has come behind the writer ([`Shared::settle`]).
    pub(crate) indexing: Mutex<Indexing>,
    pub(crate) indexed: Condvar,
    /// Makes this many of the next syncs done on the syncer thread fail, as a failing disk would.
    #[cfg(test)]
    pub(crate) failing_syncs: AtomicU64,
}

impl Shared {
    /// Waits until every batch the writer has answered for is in the live partition's index
    /// (see [`indexer`]): called before anything reads the partitions, so an event whose append
    /// has returned is found by every search, count and read that starts after it. Fails when
    /// the indexer has stopped (what it has not indexed stays unsearchable until a restart
    /// rebuilds the index from the segment).
    pub(crate) fn settle(&self) -> Result<()> {
        let mut indexing = self.indexing.lock().expect("indexing lock");
        let target = indexing.sent;
        while indexing.done < target {
            if let Some(why) = &indexing.stopped {
                return Err(Error::Unavailable(why.clone()));
            }
            indexing = self.indexed.wait(indexing).expect("indexing lock");
        }
        Ok(())
    }

    /// Keeps `damage` as the log's, unless damage was found before.
    pub(crate) fn note_damage(&self, damage: String) {
        self.damage
            .lock()
            .expect("damage lock")
            .get_or_insert(damage);
    }
}

/// Batches handed to the indexer and indexed, counted since the log opened.
#[derive(Default)]
pub(crate) struct Indexing {
    pub(crate) sent: u64,
    pub(crate) done: u64,
    /// Why the indexer stopped (it panicked), if it has.
    pub(crate) stopped: Option<String>,
    /// Makes the indexer wait this long before each batch, as a loaded machine might.
    #[cfg(test)]
    pub(crate) delay: std::time::Duration,
}

#[derive(Default)]
pub(crate) struct Sealing {
    pub(crate) pending: usize,
    pub(crate) failure: Option<String>,
    /// Makes the next seal panic, as a broken invariant of the index encoder would.
    #[cfg(test)]
    pub(crate) panic_next: bool,
    /// The index file versions the next partitions are sealed in, first first, as earlier
    /// builds sealed them (then this build's).
    #[cfg(test)]
    pub(crate) versions: std::collections::VecDeque<u8>,
}

/// The durable audit log of one data directory.
pub struct AuditLog {
    queue: SyncSender<Job>,
    shared: Arc<Shared>,
    stopped: Arc<AtomicBool>,
    /// Purged ranges; its lock also keeps two purges from running at once.
    pruned: Mutex<PrunedFile>,
    /// Most time between two checkpoints while events flow, milliseconds.
    checkpoint_interval_ms: u64,
    /// Whether the log signs its own checkpoints ([`LogConfig::signs_own_checkpoints`]).
    signs_own_checkpoints: bool,
    dir: PathBuf,
    /// The writer's thread, which must not wait for itself to close the log.
    writer_thread: thread::ThreadId,
    /// Held (locked) while the log is open, so no second process writes it.
    _lock: File,
}

impl Drop for AuditLog {
    /// Closes the log before its lock is let go, so no write of this handle's writer follows
    /// another opening of the log (a writer that has stopped already has nothing to close). A
    /// log whose last handle goes with an append's answer, on the writer's own thread, is left
    /// to stop when its queue closes.
    fn drop(&mut self) {
        if thread::current().id() != self.writer_thread {
            let _ = self.close();
        }
    }
}

/// What [`AuditLog::report`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// Matching events.
    pub total: u64,
    /// Matching events by bucket start (microseconds); buckets without events are absent.
    pub series: BTreeMap<i64, u64>,
    /// Users (principal names) with the most matching events, most first.
    pub top_users: Vec<(String, u64)>,
    /// Operations with the most matching events, most first.
    pub top_operations: Vec<(String, u64)>,
    /// Entities with the most matching events, most first (an event without one counts under
    /// the empty name).
    pub top_entities: Vec<(String, u64)>,
    /// How many different users, operations and entities matched: the lists above hold at
    /// most `top` of each, and a reader must know how many more there are.
    pub distinct: [u64; 3],
}

/// The `PurgeAuditLog` event that purges `partition` after the ranges `before` under `policy`:
/// `describe` gives who and when; the claim (the range, the policy, when its last event could
/// go, the digest of the ranges before) is the log's to state.
fn purge_event(
    partition: &PurgedPartition,
    before: &[crate::retention::PrunedRange],
    policy: &RetentionPolicy,
    describe: &dyn Fn(&PurgedPartition) -> AuditEvent,
) -> AuditEvent {
    let claim = PurgeClaim {
        first: partition.first_seq,
        count: partition.events,
        newest_us: partition.newest_us,
        kept_until_us: partition.kept_until_us,
        ranges_before: before.len(),
        digest_before: pruned_digest(before),
    };
    let mut event = describe(partition);
    event.workload = "Custos".into();
    event.operation = crate::Operation::PurgeAuditLog.as_str().into();
    event.result_status = crate::ResultStatus::Succeeded;
    event.details = claim.details(partition, policy);
    event
}

/// A partition's number, first seq and index, to search without the partitions lock.
type SharedPartition = (usize, Seq, Arc<dyn PartitionIndex>);

/// How a partition's strings are found for decoding one of its records.
enum StringSource {
    Mem(Arc<RwLock<Vec<String>>>),
    Sealed(Arc<SealedIndex>),
}

/// The fewest encoded bytes of records a page must hold to be shared among the reader threads:
/// at about 20 ns of decoding and hashing a byte (a record id is 3–4 bytes encoded and 39 of
/// JSON), some 1.3 ms of work, against tens of µs to hand it to them.
const SHARED_READ_BYTES: u64 = 64 * 1024;

/// The most batches waiting for the indexer before the writer waits for it: its lag, and the
/// events it holds in memory, stay bounded however the two threads are scheduled.
const INDEX_QUEUE_BATCHES: usize = 16;

impl AuditLog {
    /// Opens (or creates) the log: recovers a torn tail, rebuilds the Merkle tree and the
    /// indexes of partitions that have no index file yet, checks the tree against the latest
    /// signed checkpoint, and starts the writer, the sealer and the checkpointer.
    pub fn open(config: LogConfig) -> Result<AuditLog> {
        std::fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        let lock = crate::open::lock(&config.dir)?;
        AuditLog::open_locked(config, lock)
    }

    /// Rebuilds every derived file of the log from its segments (`custos audit reindex`):
    /// deletes the partitions' index files, then opens the log, which scans every segment,
    /// recomputes the leaves and record-id numbers they define, and writes each partition's
    /// index again; returns once all are written.
    pub fn reindex(config: LogConfig) -> Result<AuditLog> {
        let lock = crate::open::lock(&config.dir)?;
        crate::open::remove_indexes(&config.dir)?;
        let log = AuditLog::open_locked(config, lock)?;
        log.wait_sealed()?;
        Ok(log)
    }

    fn open_locked(config: LogConfig, lock: File) -> Result<AuditLog> {
        let opened = crate::open::open(&config, lock)?;
        // What the log holds when it opens is signed at once: only what a crash interrupts is
        // ever left unsigned.
        if config.signs_own_checkpoints {
            opened.integrity.checkpoint()?;
        }
        let shared = Arc::new(Shared {
            partitions: RwLock::new(opened.partitions),
            handles: opened.handles,
            ids: RwLock::new(opened.ids),
            id_file: opened.id_file,
            integrity: opened.integrity,
            stats: LogStats::default(),
            sealing: Mutex::new(Sealing::default()),
            sealed: Condvar::new(),
            damage: Mutex::new(None),
            refusing: Mutex::new(None),
            indexing: Mutex::new(Indexing::default()),
            indexed: Condvar::new(),
            #[cfg(test)]
            failing_syncs: AtomicU64::new(0),
        });
        let stopped = Arc::new(AtomicBool::new(false));
        let (seal_queue, seal_jobs) = mpsc::channel();
        let sealer = {
            let shared = shared.clone();
            move || sealer(shared, seal_jobs)
        };
        thread::Builder::new()
            .name("audit-sealer".into())
            .spawn(sealer)
            .map_err(|e| Error::io(&config.dir, e))?;
        for partition in opened.to_seal {
            shared.sealing.lock().expect("sealing lock").pending += 1;
            let _ = seal_queue.send(partition);
        }
        let (index_queue, index_jobs) = mpsc::sync_channel(INDEX_QUEUE_BATCHES);
        {
            let shared = shared.clone();
            thread::Builder::new()
                .name("audit-indexer".into())
                .spawn(move || indexer(&shared, index_jobs))
                .map_err(|e| Error::io(&config.dir, e))?;
        }
        let (queue, jobs) = mpsc::sync_channel(config.queue_events_max);
        let (strings, active_cost) = {
            let partitions = shared.partitions.read().expect("partitions lock");
            let live = partitions.last().expect("a live partition");
            let cost = match &live.state {
                PartState::Live(index) => index.cost,
                _ => 0,
            };
            (live.strings.read().expect("strings lock").clone(), cost)
        };
        let writer = Writer {
            held: None,
            in_flight: None,
            syncer: Syncer::start(&config.dir)?,
            behind: None,
            encoder: Encoder::resume(opened.ids_len, &strings),
            active: opened.active,
            active_day: opened.active_day,
            active_cost,
            jobs,
            shared: shared.clone(),
            stopped: stopped.clone(),
            seal_queue,
            index_queue,
            config: config.clone(),
        };
        let writer_thread = thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&config.dir, e))?
            .thread()
            .id();
        {
            let weak = Arc::downgrade(&shared);
            thread::Builder::new()
                .name("audit-tile-check".into())
                .spawn(move || check_tiles(weak))
                .map_err(|e| Error::io(&config.dir, e))?;
        }
        if config.signs_own_checkpoints {
            let weak = Arc::downgrade(&shared);
            let interval = std::time::Duration::from_millis(config.checkpoint_interval_ms);
            thread::Builder::new()
                .name("audit-checkpointer".into())
                .spawn(move || checkpointer(weak, interval))
                .map_err(|e| Error::io(&config.dir, e))?;
        }
        Ok(AuditLog {
            queue,
            shared,
            stopped,
            pruned: Mutex::new(opened.pruned),
            checkpoint_interval_ms: config.checkpoint_interval_ms,
            signs_own_checkpoints: config.signs_own_checkpoints,
            dir: config.dir.clone(),
            writer_thread,
            _lock: opened.lock,
        })
    }

    /// Appends `event` and blocks until it is durable and searchable.
    pub fn append(&self, event: AuditEvent) -> Result<Seq> {
        let (answered, answer) = mpsc::sync_channel(1);
        let done: Done = Box::new(move |outcome| {
            let _ = answered.send(outcome);
        });
        let job = self.job(event, done)?;
        self.queue
            .send(job)
            .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("the audit writer stopped before answering".into()))?
    }

    /// Appends every event and blocks until all are durable and searchable; they share the
    /// writer's group commits. On failure some of them may be durable: the caller undoes the
    /// change they record, which leaves a record of an attempt, never a change unrecorded.
    pub fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<Seq>> {
        let (answered, answers) = mpsc::channel();
        let count = events.len();
        for (i, event) in events.into_iter().enumerate() {
            let answered = answered.clone();
            let done: Done = Box::new(move |outcome| {
                let _ = answered.send((i, outcome));
            });
            let job = self.job(event, done)?;
            self.queue
                .send(job)
                .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        }
        drop(answered);
        let mut seqs = vec![0; count];
        for _ in 0..count {
            let (i, outcome) = answers.recv().map_err(|_| {
                Error::Unavailable("the audit writer stopped before answering".into())
            })?;
            seqs[i] = outcome?;
        }
        Ok(seqs)
    }

    /// Queues `event` without blocking; `done` hears when it is durable and searchable, or
    /// why not (also when the writer has stopped). When the queue is full the event comes back,
    /// for the caller to wait with [`AuditLog::append`] where it may block: back-pressure,
    /// never a drop.
    pub fn try_append(
        &self,
        event: AuditEvent,
        done: Done,
    ) -> std::result::Result<(), (Box<AuditEvent>, Done)> {
        let job = match self.job(event, done) {
            Ok(job) => job,
            // The writer has stopped: `done` already heard why.
            Err(_) => return Ok(()),
        };
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(Job::Append { event, done, .. })) => Err((event, done)),
            Err(mpsc::TrySendError::Disconnected(Job::Append { done, .. })) => {
                done(Err(Error::Unavailable(
                    "the audit writer has stopped".into(),
                )));
                Ok(())
            }
            Err(_) => unreachable!("an append job comes back as it went"),
        }
    }

    /// The job of appending `event`; when the writer has stopped, `done` hears so at once.
    fn job(&self, event: AuditEvent, done: Done) -> Result<Job> {
        if self.stopped.load(Ordering::Acquire) {
            let error = || Error::Unavailable("the audit writer has stopped".into());
            done(Err(error()));
            return Err(error());
        }
        // The leaf is computed here, on the caller's thread; the writer only encodes and writes.
        let leaf = event_leaf_hash(&event);
        Ok(Job::Append {
            event: Box::new(event),
            leaf,
            done,
        })
    }

    /// Closes the active partition now (when it holds events) and waits until every complete
    /// partition has its index file: what a clean shutdown or a measurement of the files on
    /// disk wants.
    pub fn seal_active(&self) -> Result<()> {
        let (done, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::Roll { done })
            .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        answer.recv().map_err(|_| {
            Error::Unavailable("the audit writer stopped before answering".into())
        })??;
        self.wait_sealed()
    }

    /// Stops the writer once the appends queued before this are written; appends after it are
    /// refused (503 for a request), so a checkpoint signed next covers every event the log
    /// will hold. Dropping the log closes it.
    pub fn close(&self) -> Result<()> {
        let (done, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::Close { done })
            .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("the audit writer stopped before answering".into()))
    }

    /// The partitions to read, once every event answered for is indexed ([`Shared::settle`]).
    /// Never called while a partitions lock is held: the indexer needs it to write.
    fn partitions(&self) -> Result<RwLockReadGuard<'_, Vec<Partition>>> {
        self.shared.settle()?;
        Ok(self.shared.partitions.read().expect("partitions lock"))
    }

    /// [`AuditLog::partitions`] for the counts that cannot fail: as far as the index has come
    /// when the indexer has stopped.
    fn partitions_as_indexed(&self) -> RwLockReadGuard<'_, Vec<Partition>> {
        let _ = self.shared.settle();
        self.shared.partitions.read().expect("partitions lock")
    }

    /// Events in the log (purged ones included: this is the next seq).
    pub fn len(&self) -> u64 {
        let partitions = self.partitions_as_indexed();
        partitions.last().map_or(0, |p| p.first_seq + p.n_events)
    }

    /// The seq after the last event of the sealed partitions before the first that is not
    /// sealed: what the log will never write again (a cluster archives it, `custos-cluster`).
    pub fn sealed_len(&self) -> u64 {
        let partitions = self.partitions_as_indexed();
        partitions
            .iter()
            .take_while(|p| matches!(p.state, PartState::Sealed(_) | PartState::Purged))
            .last()
            .map_or(0, |p| p.first_seq + p.n_events)
    }

    /// Where each partition before the active one ends (the seq after its last event), in
    /// order: the same on every log the same events were appended to (a cluster archives its
    /// objects within them, `custos-cluster`).
    pub fn partition_ends(&self) -> Vec<Seq> {
        let partitions = self.partitions_as_indexed();
        let before_active = partitions.len().saturating_sub(1);
        partitions[..before_active]
            .iter()
            .map(|p| p.first_seq + p.n_events)
            .collect()
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the log takes and serves events: `Err` with the reason when the writer has
    /// stopped, an index could not be written, the last batch was refused (a full disk, a
    /// failed write: until a batch succeeds again), or a record was found altered on disk.
    pub fn health(&self) -> std::result::Result<(), String> {
        if let Some(damage) = self.shared.damage.lock().expect("damage lock").clone() {
            return Err(damage);
        }
        if self.stopped.load(Ordering::Acquire) {
            let why = self
                .shared
                .sealing
                .lock()
                .expect("sealing lock")
                .failure
                .clone();
            return Err(why.unwrap_or_else(|| "the audit writer has stopped".into()));
        }
        if let Some(failure) = &self.shared.sealing.lock().expect("sealing lock").failure {
            return Err(failure.clone());
        }
        if let Some(why) = self.shared.refusing.lock().expect("refusing lock").clone() {
            return Err(why);
        }
        if let Some(why) = &self.shared.indexing.lock().expect("indexing lock").stopped {
            return Err(why.clone());
        }
        Ok(())
    }

    /// The log's segment and index files open now, and the most it keeps open
    /// ([`LogConfig::open_files_max`]).
    pub fn open_files(&self) -> (usize, usize) {
        let handles = &self.shared.handles;
        (handles.open_count(), handles.max())
    }

    /// The writer's counters.
    pub fn stats(&self) -> &LogStats {
        &self.shared.stats
    }

    /// Blocks until every complete partition has its index file; fails when one could not be
    /// written.
    pub fn wait_sealed(&self) -> Result<()> {
        let mut sealing = self.shared.sealing.lock().expect("sealing lock");
        while sealing.pending > 0 {
            sealing = self.shared.sealed.wait(sealing).expect("sealing lock");
        }
        match &sealing.failure {
            Some(why) => Err(Error::Unavailable(format!(
                "a partition's index could not be written: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// The latest signed checkpoint. The log signs one on its interval while events arrive;
    /// reading never makes it sign.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>> {
        self.shared.integrity.latest()
    }

    /// Signs a checkpoint now when events arrived since the last, and returns the latest: for
    /// what needs a signature at once (before a shutdown or a verification, in tests), never
    /// for a reader. A log that does not sign its own checkpoints (a cluster's audit node)
    /// only returns the latest.
    pub fn sign_checkpoint(&self) -> Result<Option<(u64, String)>> {
        if self.signs_own_checkpoints {
            self.shared.integrity.checkpoint()
        } else {
            self.shared.integrity.latest()
        }
    }

    /// Verifies the log as `custos audit verify` does, up to a checkpoint signed now (the
    /// latest the cluster signed, on a node that does not sign its own): what arrives meanwhile
    /// is left to the next verification, since its records are still being written and signed
    /// (read to the end, they would look like records no checkpoint covers). A log that does not
    /// verify is damaged: [`Self::health`] says so, naming the first problem, until a restart — what
    /// the log checks as it serves (each record against its leaf, each tile against the tree)
    /// cannot see an index file rewritten to leave an event out of searches, which only this
    /// comparison of each index file with its segment does.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let signed = self.sign_checkpoint()?.map_or(0, |(size, _)| size);
        let root_key = self.verifier_keys()[0].1.clone();
        let report = crate::verify::verify_with(
            &self.dir,
            &root_key,
            None,
            crate::cores(),
            signed,
            progress,
        )?;
        if let Some(first) = report.problems.first() {
            self.shared.note_damage(format!(
                "a verification of the audit log found {} problem(s), the first: {first}",
                report.problems.len()
            ));
        }
        Ok(report)
    }

    /// Signs a checkpoint now when events arrived since the last, and returns the latest,
    /// whether or not the log signs its own: for the cluster's one signer, which publishes it
    /// for the other audit nodes to adopt.
    pub fn sign_for_cluster(&self) -> Result<Option<(u64, String)>> {
        let signed = self.shared.integrity.checkpoint();
        if let Ok(Some(_)) = &signed {
            self.shared
                .stats
                .checkpoints_signed
                .fetch_add(1, Ordering::Relaxed);
        }
        signed
    }

    /// Adopts a checkpoint the cluster's signer signed over the same events (see
    /// [`Adopted`]): checked against this log's own tree and record ids, refused as damage when
    /// they differ; a handover switches the log to the key it names, whose seed `keys` gives.
    pub fn adopt_checkpoint(&self, note: &str, keys: &dyn ClusterKeys) -> Result<Adopted> {
        let numbered = |from: u64, to: u64| {
            let ids = self.shared.ids.read().expect("ids lock");
            (from..to)
                .map(|number| ids.table.get(usize::try_from(number).ok()?))
                .collect()
        };
        self.shared.integrity.adopt(note, &numbered, keys)
    }

    /// The checkpoint signed earlier for exactly `size` events.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>> {
        self.shared.integrity.checkpoint_at(size)
    }

    /// The first checkpoint signed over at least `size` events, with its size (it never
    /// changes once there is one).
    pub fn checkpoint_covering(&self, size: u64) -> Result<Option<(u64, String)>> {
        self.shared.integrity.checkpoint_covering(size)
    }

    /// The signed-note verifier key in force (the one signing new checkpoints).
    pub fn verifier_key(&self) -> String {
        self.shared.integrity.verifier_key()
    }

    /// The verifier key the signing seed `seed` has in this log (its origin names the key).
    pub fn verifier_key_for(&self, seed: [u8; 32]) -> String {
        self.shared.integrity.verifier_key_for(seed)
    }

    /// Every verifier key the log has had, the root first, each with the tree size of its
    /// handover checkpoint (0 for the root).
    pub fn verifier_keys(&self) -> Vec<(u64, String)> {
        self.shared.integrity.verifier_keys()
    }

    /// Hands checkpoint signing over to the key of `next_seed` (see `verifier.key` in
    /// ARCHITECTURE.md): a handover checkpoint of the whole tree signed by both keys, then the
    /// new key alone. Returns the handover's tree size.
    pub fn rotate_key(&self, next_seed: [u8; 32]) -> Result<u64> {
        self.shared.integrity.rotate(next_seed)
    }

    /// The inclusion proof of an event against the latest checkpoint.
    pub fn inclusion_proof(&self, id: Uuid) -> Result<Option<InclusionProof>> {
        let Some((seq, _)) = self.find(id)? else {
            return Ok(None);
        };
        let wait = std::time::Duration::from_millis(self.checkpoint_interval_ms.saturating_mul(3));
        self.shared.integrity.inclusion(seq, wait).map(Some)
    }

    /// The consistency proof between the trees of `from` and `to` events.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.shared.integrity.consistency(from, to)
    }

    /// Whether the log holds event `id` (retention may have purged it since).
    pub fn contains(&self, id: Uuid) -> Result<bool> {
        Ok(self.find(id)?.is_some())
    }

    /// One event by id.
    pub fn get(&self, id: Uuid) -> Result<Option<(Seq, AuditEvent)>> {
        let Some((seq, location)) = self.find(id)? else {
            return Ok(None);
        };
        Ok(Some((seq, self.read_event(seq, location)?)))
    }

    /// How many events retention has purged (their leaf hashes stay; the records and their
    /// ids are gone, so a purged record cannot be told from one that never existed).
    pub fn purged_events(&self) -> u64 {
        let partitions = self.partitions_as_indexed();
        partitions
            .iter()
            .filter(|p| matches!(p.state, PartState::Purged))
            .map(|p| p.n_events)
            .sum()
    }

    /// The events of seqs `from ..`, at most `max` of them, in log order; purged ones are
    /// skipped. For followers of the log (alerts, asynchronous queries) that keep a cursor.
    pub fn read_from(&self, from: Seq, max: usize) -> Result<Vec<(Seq, AuditEvent)>> {
        let mut places = Vec::new();
        {
            let partitions = self.partitions()?;
            let start = partitions.partition_point(|p| p.first_seq + p.n_events <= from);
            'partitions: for (i, partition) in partitions.iter().enumerate().skip(start) {
                let first_ordinal = from.saturating_sub(partition.first_seq);
                for ordinal in first_ordinal..partition.n_events {
                    if places.len() >= max {
                        break 'partitions;
                    }
                    let place = match &partition.state {
                        PartState::Live(index) => index.place(ordinal as u32)?,
                        PartState::Frozen { index, .. } => index.place(ordinal as u32)?,
                        PartState::Sealed(index) => index.place(ordinal as u32)?,
                        PartState::Purged => continue 'partitions,
                    };
                    places.push((
                        partition.first_seq + ordinal,
                        Location {
                            partition: i,
                            place,
                        },
                    ));
                }
            }
        }
        self.read_events(places)
    }

    /// The event of `seq`, unless retention purged it (or the log does not reach it).
    pub fn get_seq(&self, seq: Seq) -> Result<Option<AuditEvent>> {
        Ok(self
            .read_from(seq, 1)?
            .into_iter()
            .find(|(found, _)| *found == seq)
            .map(|(_, event)| event))
    }

    /// Where the event with id `id` is. Event ids are UUIDv7, stamped when the event was made,
    /// so the partitions whose time range is near that stamp are asked first.
    fn find(&self, id: Uuid) -> Result<Option<(Seq, Location)>> {
        let mut others = Vec::new();
        {
            let partitions = self.partitions()?;
            for (i, partition) in partitions.iter().enumerate().rev() {
                match &partition.state {
                    PartState::Live(index) => {
                        if let Some(found) = locate(index.as_ref(), i, partition.first_seq, &id)? {
                            return Ok(Some(found));
                        }
                    }
                    _ => {
                        if let Some(index) = partition.shared_index() {
                            others.push((i, partition.first_seq, index));
                        }
                    }
                }
            }
        }
        if let Some((seconds, nanos)) = id.get_timestamp().map(|t| t.to_unix()) {
            let stamp_us = seconds as i64 * 1_000_000 + i64::from(nanos / 1000);
            let near = |index: &Arc<dyn PartitionIndex>| {
                index.time_range().is_some_and(|(oldest, newest)| {
                    oldest - DAY_US <= stamp_us && stamp_us <= newest + DAY_US
                })
            };
            others.sort_by_key(|(_, _, index)| !near(index));
        }
        for (i, first_seq, index) in others {
            if let Some(found) = locate(index.as_ref(), i, first_seq, &id)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Reads and decodes record `seq` at `location`, and checks it against its leaf in the
    /// Merkle tree: a record altered on disk is never handed out; the first one found is kept
    /// as the log's damage ([`AuditLog::health`]), as is a record that does not decode or a
    /// file found replaced while the log was open.
    fn read_event(&self, seq: Seq, location: Location) -> Result<AuditEvent> {
        let event = match self.decode_at(location) {
            Ok(event) => event,
            Err(Error::Corrupted(damage)) => {
                self.shared.note_damage(damage.clone());
                return Err(Error::Corrupted(damage));
            }
            Err(other) => return Err(other),
        };
        let leaf = event_leaf_hash(&event);
        let signed = {
            let tree = self.shared.integrity.tree.read().expect("tree lock");
            tree.leaf(seq, &self.shared.integrity.leaves)
        };
        let damage = match signed {
            Ok(signed) if signed == leaf => return Ok(event),
            Ok(_) => format!(
                "record seq {seq} (event {}) does not match its leaf in the log's Merkle tree: it was altered or damaged on disk",
                event.id
            ),
            Err(Error::Corrupted(damage)) => damage,
            Err(other) => return Err(other),
        };
        self.shared.note_damage(damage.clone());
        Err(Error::Corrupted(damage))
    }

    /// The events at `places`, in their order, each read as [`Self::read_event`] reads one. When
    /// they are large enough to share — a hot record's newest views list thousands of record ids
    /// each, and decoding, writing the canonical JSON and hashing it cost about 70 ns an id —
    /// they are shared among the reader threads (`readers`); a few small ones are read on this
    /// thread alone.
    fn read_events(&self, places: Vec<(Seq, Location)>) -> Result<Vec<(Seq, AuditEvent)>> {
        let bytes: u64 = places.iter().map(|(_, l)| u64::from(l.place.len)).sum();
        let read = |&(seq, location): &(Seq, Location)| Ok((seq, self.read_event(seq, location)?));
        if bytes < SHARED_READ_BYTES {
            return places.iter().map(read).collect();
        }
        crate::readers::map(&places, &read)
    }

    /// Reads and decodes the record at `location`.
    fn decode_at(&self, location: Location) -> Result<AuditEvent> {
        use std::os::unix::fs::FileExt;
        let (file, strings) = {
            let partitions = self.shared.partitions.read().expect("partitions lock");
            let partition = &partitions[location.partition];
            let file = partition.file.clone().ok_or_else(|| {
                Error::Unavailable(format!(
                    "segment {} was purged by retention",
                    location.partition
                ))
            })?;
            let strings = match &partition.state {
                PartState::Sealed(index) => StringSource::Sealed(index.clone()),
                _ => StringSource::Mem(partition.strings.clone()),
            };
            (file, strings)
        };
        let mut payload = vec![0u8; location.place.len as usize];
        file.file()?
            .read_exact_at(&mut payload, u64::from(location.place.offset))
            .map_err(|e| Error::io(file.path(), e))?;
        let ids = self.shared.ids.read().expect("ids lock");
        match strings {
            StringSource::Sealed(index) => decode_event(&payload, &ids.table, &*index.strings()?),
            StringSource::Mem(strings) => decode_event(
                &payload,
                &ids.table,
                strings.read().expect("strings lock").as_slice(),
            ),
        }
    }

    /// Every partition's index to search, newest first: the live one is searched by `live`
    /// under the lock, the others are handed back to be searched without it.
    fn partitions_newest_first(
        &self,
        live: &mut dyn FnMut(&MemIndex, usize, Seq) -> Result<()>,
    ) -> Result<Vec<SharedPartition>> {
        let partitions = self.partitions()?;
        let mut others = Vec::new();
        for (i, partition) in partitions.iter().enumerate().rev() {
            match &partition.state {
                PartState::Live(index) => live(index, i, partition.first_seq)?,
                _ => {
                    if let Some(index) = partition.shared_index() {
                        others.push((i, partition.first_seq, index));
                    }
                }
            }
        }
        Ok(others)
    }

    /// Deletes every whole partition whose events have all expired under `policy` at `now_us`
    /// (the active partition is never touched). Each deletion is provable: first its
    /// `PurgeAuditLog` event — `describe` gives who and when; the log fills in the operation and
    /// the claim (the range, the policy, when its last event could go, the digest of the
    /// ranges purged before) — is made durable and covered by a signed checkpoint; then its
    /// range is recorded in `pruned.log` with that event's seq (its leaf hashes stay in
    /// `leaves.dat`, so checkpoints and proofs stay valid); then its files are deleted.
    pub fn purge_expired(
        &self,
        now_us: i64,
        policy: &RetentionPolicy,
        describe: &dyn Fn(&PurgedPartition) -> AuditEvent,
    ) -> Result<Vec<PurgedPartition>> {
        // Only sealed partitions are purged: their record ids and leaves are durable beside.
        self.wait_sealed()?;
        let mut pruned = self.pruned.lock().expect("pruned lock");
        let mut purged = Vec::new();
        for (i, first_seq, n_events, path, index) in self.sealed_partitions() {
            let Some(kept_until_us) = expired_at(&index, policy, now_us)? else {
                continue;
            };
            let mut partition =
                PurgedPartition::of(first_seq, n_events, &path, &index, kept_until_us);
            let event = purge_event(&partition, &pruned.ranges, policy, describe);
            let event_seq = self.append(event)?;
            partition.event_seq = event_seq;
            // The deletion's record is signed before anything goes.
            let signed = self
                .shared
                .integrity
                .checkpoint()?
                .map_or(0, |(size, _)| size);
            if signed <= event_seq {
                return Err(Error::Unavailable(format!(
                    "the purge event at seq {event_seq} is not covered by a signed checkpoint"
                )));
            }
            drop(index);
            self.delete_purged(&mut pruned, i, event_seq, &path)?;
            purged.push(partition);
        }
        Ok(purged)
    }

    /// Records partition `i` (segment `path`) as purged by the event at `event_seq` in
    /// `pruned.log`, then forgets and deletes its files.
    fn delete_purged(
        &self,
        pruned: &mut PrunedFile,
        i: usize,
        event_seq: Seq,
        path: &std::path::Path,
    ) -> Result<()> {
        {
            let partitions = self.shared.partitions.read().expect("partitions lock");
            let partition = &partitions[i];
            pruned.record(partition.first_seq, partition.n_events, event_seq)?;
        }
        {
            let mut partitions = self.shared.partitions.write().expect("partitions lock");
            partitions[i].state = PartState::Purged;
            partitions[i].file = None;
        }
        crate::open::delete_partition_files(path, &self.dir)
    }

    /// The sealed partitions: their number, first seq, events, segment and index.
    fn sealed_partitions(&self) -> Vec<(usize, Seq, u64, PathBuf, Arc<SealedIndex>)> {
        let partitions = self.partitions_as_indexed();
        partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.state {
                PartState::Sealed(index) => {
                    Some((i, p.first_seq, p.n_events, p.path.clone(), index.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// What [`AuditLog::purge_expired`] would delete at `now_us` under `policy`, deleting
    /// nothing: how many sealed partitions have expired whole, and how many events they hold.
    pub fn expiring(&self, now_us: i64, policy: &RetentionPolicy) -> Result<(u64, u64)> {
        // As the purge: partitions still being sealed count once they are.
        self.wait_sealed()?;
        let sealed: Vec<(u64, Arc<SealedIndex>)> = {
            let partitions = self.partitions()?;
            partitions
                .iter()
                .filter_map(|p| match &p.state {
                    PartState::Sealed(index) => Some((p.n_events, index.clone())),
                    _ => None,
                })
                .collect()
        };
        let (mut partitions, mut events) = (0, 0);
        for (n_events, index) in sealed {
            if expired_at(&index, policy, now_us)?.is_some() {
                partitions += 1;
                events += n_events;
            }
        }
        Ok((partitions, events))
    }

    /// How many events match `query` (its free text included), by `bucket_us`-wide time
    /// buckets (bucket start → count), or in one bucket keyed 0 when `bucket_us` is `None`.
    /// Answered from the indexes alone.
    pub fn histogram(
        &self,
        query: &SearchQuery,
        bucket_us: Option<i64>,
    ) -> Result<BTreeMap<i64, u64>> {
        let mut counts = BTreeMap::new();
        let Some(compiled) = Compiled::new(query, &self.shared.ids.read().expect("ids lock"))
        else {
            return Ok(counts);
        };
        let others = self.partitions_newest_first(&mut |index, _, first_seq| {
            count_into(index, first_seq, &compiled, bucket_us, &mut counts)
        })?;
        let count_one = |(_, first_seq, index): &SharedPartition| {
            let mut counts = BTreeMap::new();
            count_into(
                index.as_ref(),
                *first_seq,
                &compiled,
                bucket_us,
                &mut counts,
            )?;
            Ok(counts)
        };
        for partition_counts in crate::readers::map(&others, &count_one)? {
            for (bucket, n) in partition_counts {
                *counts.entry(bucket).or_insert(0) += n;
            }
        }
        Ok(counts)
    }

    /// A report over the events matching `query`: how many, how many per `bucket_us`-wide time
    /// bucket, and the `top` users, operations and entities with their counts. Answered from
    /// the indexes alone, however many events match.
    pub fn report(&self, query: &SearchQuery, bucket_us: i64, top: usize) -> Result<ReportSummary> {
        if bucket_us <= 0 {
            return Err(Error::InvalidQuery(
                "a report bucket must be positive".into(),
            ));
        }
        let mut totals = ReportTotals::default();
        if let Some(compiled) = Compiled::new(query, &self.shared.ids.read().expect("ids lock")) {
            let others = self.partitions_newest_first(&mut |index, _, first_seq| {
                report_into(index, first_seq, &compiled, bucket_us, &mut totals)
            })?;
            for (_, first_seq, index) in others {
                report_into(index.as_ref(), first_seq, &compiled, bucket_us, &mut totals)?;
            }
        }
        let distinct = totals.groups.each_ref().map(|group| group.len() as u64);
        let [users, operations, entities] = totals.groups.map(|group| {
            let mut ranked: Vec<(String, u64)> = group.into_values().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(top);
            ranked
        });
        Ok(ReportSummary {
            total: totals.total,
            series: totals.series,
            top_users: users,
            top_operations: operations,
            top_entities: entities,
            distinct,
        })
    }

    /// One page of events matching `query`, newest first. Every filter, free text included, is
    /// answered from the indexes; the log is read only for the events returned.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        if query.top == 0 {
            return Err(Error::InvalidQuery("top must be at least 1".into()));
        }
        let empty = SearchPage {
            events: Vec::new(),
            next_before_seq: None,
        };
        let Some(compiled) = Compiled::new(query, &self.shared.ids.read().expect("ids lock"))
        else {
            return Ok(empty);
        };
        let limit = query.top + 1;
        let mut found = Vec::with_capacity(limit);
        let others = self.partitions_newest_first(&mut |index, i, first_seq| {
            collect_newest(index, i, first_seq, &compiled, limit, &mut found)
        })?;
        for (i, first_seq, index) in others {
            if found.len() >= limit {
                break;
            }
            collect_newest(index.as_ref(), i, first_seq, &compiled, limit, &mut found)?;
        }
        let more = found.len() > query.top;
        found.truncate(query.top);
        let events = self.read_events(found)?;
        let next_before_seq = if more {
            events.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok(SearchPage {
            events,
            next_before_seq,
        })
    }
}

impl AuditLog {
    /// The workloads of the events since `since_us` (lowercase, sorted), from the indexes alone.
    pub fn workloads(&self, since_us: i64) -> Result<Vec<String>> {
        let mut found = std::collections::BTreeSet::new();
        let recent = |index: &dyn PartitionIndex| {
            index
                .time_range()
                .is_some_and(|(_, newest)| newest >= since_us)
        };
        let mut visit = |index: &dyn PartitionIndex| -> Result<()> {
            if recent(index) {
                found.extend(index.term_values(Field::Workload)?);
            }
            Ok(())
        };
        let others = self.partitions_newest_first(&mut |index, _, _| visit(index))?;
        for (_, _, index) in others {
            visit(index.as_ref())?;
        }
        found.remove("");
        Ok(found.into_iter().collect())
    }

    /// One page of events matching `query` in `sort`'s order, after `after` (the end of the
    /// previous page). Every partition is asked, since an event that arrived late (an ingested
    /// one with its own time) may belong anywhere in time; only the page is read from the log.
    pub fn search_sorted(
        &self,
        query: &SearchQuery,
        sort: SearchSort,
        after: Option<&SortCursor>,
    ) -> Result<SortedPage> {
        if query.top == 0 {
            return Err(Error::InvalidQuery("top must be at least 1".into()));
        }
        let Some(compiled) = Compiled::new(query, &self.shared.ids.read().expect("ids lock"))
        else {
            return Ok(SortedPage {
                events: Vec::new(),
                next: None,
            });
        };
        let mut candidates = SortedCandidates {
            sort,
            after,
            limit: query.top + 1,
            found: Vec::new(),
            sorted: true,
        };
        let others = self.partitions_newest_first(&mut |index, i, first_seq| {
            candidates.collect(index, i, first_seq, &compiled)
        })?;
        for (i, first_seq, index) in others {
            candidates.collect(index.as_ref(), i, first_seq, &compiled)?;
        }
        candidates.cut();
        let more = candidates.found.len() > query.top;
        candidates.found.truncate(query.top);
        let mut places = Vec::with_capacity(candidates.found.len());
        let mut next = None;
        for (value, seq, location) in candidates.found {
            places.push((seq, location));
            next = Some(SortCursor { value, seq });
        }
        Ok(SortedPage {
            events: self.read_events(places)?,
            next: next.filter(|_| more),
        })
    }
}

/// The seq and location of event `id` in one partition.
fn locate(
    index: &dyn PartitionIndex,
    partition: usize,
    first_seq: Seq,
    id: &Uuid,
) -> Result<Option<(Seq, Location)>> {
    let Some(ordinal) = index.ordinal_of(id)? else {
        return Ok(None);
    };
    let place = index.place(ordinal)?;
    Ok(Some((
        first_seq + u64::from(ordinal),
        Location { partition, place },
    )))
}

/// Checks every cold tile of the tree once after the log opens, in the background: the tree's
/// levels above the tiles may come from `tree.dat` rather than from hashing `leaves.dat` again,
/// so an altered leaf there is found now rather than when its record is first read (each read
/// checks its tile too). The first damage found is the log's ([`AuditLog::health`]).
///
/// It runs at the lowest priority: at 10,000,000 events it hashes 320 MB of leaves, about 0.7 s
/// of a core, and at the default priority it took that core from the searches of the first
/// seconds after an open (BENCHMARKS.md, B3: a count of a hot record, under a millisecond,
/// waited up to 12 ms for a core).
fn check_tiles(shared: std::sync::Weak<Shared>) {
    lowest_priority();
    let mut tile = 0;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let checked = {
            let tree = shared.integrity.tree.read().expect("tree lock");
            if tile >= tree.cold_tiles() {
                return;
            }
            tree.check_tile(tile, &shared.integrity.leaves)
        };
        if let Err(damage) = checked {
            shared.note_damage(damage.to_string());
            return;
        }
        tile += 1;
    }
}

/// Lowers the calling thread to the lowest priority, nice 19 (on Linux a nice value is a
/// thread's own, and `setpriority` of no pid sets the calling thread's): it then takes a core
/// when nothing else wants it, and gives it up at once when something does. A failure leaves
/// it where it was, which is only slower for the other threads. Threads it starts afterwards
/// inherit it (a scheduled verification's segment threads).
pub fn lowest_priority() {
    let _ = rustix::process::setpriority_process(None, 19);
}

/// Signs a checkpoint when events arrived since the last one, at most once per `interval`,
/// looking every tenth of it (so a log that just opened, or just started taking events, is
/// covered promptly); ends with the log.
fn checkpointer(shared: std::sync::Weak<Shared>, interval: std::time::Duration) {
    let tick = (interval / 10).max(std::time::Duration::from_millis(10));
    // The size the log opened with is signed already (the open signs): only growth counts.
    let mut signed = shared
        .upgrade()
        .and_then(|shared| shared.integrity.latest().ok().flatten())
        .map_or(0, |(size, _)| size);
    let mut last_signed: Option<Instant> = None;
    loop {
        thread::sleep(tick);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if last_signed.is_some_and(|at| at.elapsed() < interval) {
            continue;
        }
        match shared.integrity.checkpoint() {
            Ok(Some((size, _))) if size > signed => {
                signed = size;
                last_signed = Some(Instant::now());
                shared
                    .stats
                    .checkpoints_signed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            // The next tick tries again.
            Err(_) => {}
        }
    }
}

/// Writes the index file of each partition it is sent (in log order), then swaps the
/// partition's in-memory index for the file and lets the tree forget the partition's leaves.
///
/// A panic while sealing (a broken invariant of the index encoder, such as keys out of order)
/// is that partition's failure, as an error is, not the end of the thread: the partition stays
/// searchable from memory, the next open indexes its segment again, later partitions are still
/// sealed, and whoever waits for the seal hears why rather than waiting for ever.
fn sealer(shared: Arc<Shared>, jobs: Receiver<usize>) {
    while let Ok(partition) = jobs.recv() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(test)]
            if std::mem::take(&mut shared.sealing.lock().expect("sealing lock").panic_next) {
                panic!("a seal made to panic by a test");
            }
            seal(&shared, partition)
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|why| why.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Unavailable(format!("sealing panicked: {why}")))
        });
        let mut sealing = shared.sealing.lock().expect("sealing lock");
        sealing.pending -= 1;
        match outcome {
            Ok(()) => {
                shared
                    .stats
                    .partitions_sealed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                shared.stats.seal_failures.fetch_add(1, Ordering::Relaxed);
                sealing.failure = Some(error.to_string());
            }
        }
        shared.sealed.notify_all();
    }
}

fn seal(shared: &Shared, partition: usize) -> Result<()> {
    let (path, first_seq, index, ids_end, strings) = {
        let partitions = shared.partitions.read().expect("partitions lock");
        let p = &partitions[partition];
        let PartState::Frozen { index, ids_end } = &p.state else {
            return Ok(());
        };
        let strings = p.strings.read().expect("strings lock").clone();
        (
            p.path.clone(),
            p.first_seq,
            index.clone(),
            *ids_end,
            strings,
        )
    };
    let segment_bytes = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    // The partition's record ids and leaves become durable before its index says it is sealed.
    shared.id_file.sync()?;
    shared.integrity.leaves.sync()?;
    #[cfg(test)]
    let version = (shared.sealing.lock().expect("sealing lock").versions)
        .pop_front()
        .unwrap_or(sealed::VERSION);
    #[cfg(not(test))]
    let version = sealed::VERSION;
    let bytes = sealed::encode(&index, &strings, segment_bytes, first_seq, ids_end, version);
    sealed::write(&path, &bytes)?;
    let opened =
        SealedIndex::open(&shared.handles, &path, first_seq, segment_bytes)?.ok_or_else(|| {
            Error::Corrupted(format!(
                "{}: the index just written does not read back",
                path.display()
            ))
        })?;
    let end = first_seq + u64::from(index.n_events());
    {
        let mut partitions = shared.partitions.write().expect("partitions lock");
        let p = &mut partitions[partition];
        p.state = PartState::Sealed(Arc::new(opened));
        p.strings = Arc::new(RwLock::new(Vec::new()));
    }
    let (cold, upper) = {
        let mut tree = shared.integrity.tree.write().expect("tree lock");
        tree.forget_below(end);
        let cold = end.min(tree.len()) / TILE_LEAVES * TILE_LEAVES;
        (cold, tree.upper_levels(cold))
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    crate::treefile::write(dir, cold, &upper)
}

/// An append waiting in a batch.
struct Append {
    event: Box<AuditEvent>,
    leaf: Hash,
    done: Done,
}

struct Writer {
    active: ActiveSegment,
    /// A job taken from the queue but not yet done.
    held: Option<Job>,
    /// The batch written last, whose sync the syncer thread is doing ([`Writer::sync`]).
    in_flight: Option<Written>,
    syncer: Syncer,
    /// Where `ids.dat` and `leaves.dat` fell behind the log (a failed write of derived data,
    /// such as on a full disk): the first record id and leaf to write again before the next
    /// batch is taken.
    behind: Option<(u64, Seq)>,
    /// UTC day of the active segment's events; `None` while it is empty.
    active_day: Option<i64>,
    /// What the active segment's index will hold in memory once its events are indexed
    /// (`partition::index_cost`): counted here, event by event, so where a segment is cut never
    /// depends on how far the indexer has come.
    active_cost: u64,
    encoder: Encoder,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    stopped: Arc<AtomicBool>,
    seal_queue: Sender<usize>,
    index_queue: SyncSender<Batch>,
    config: LogConfig,
}

/// A batch made durable, for the indexer to add to the live partition's index.
struct Batch {
    places: Vec<Place>,
    events: Vec<AuditEvent>,
    /// The number of each event's record ids.
    numbers: Vec<Vec<u32>>,
    /// The strings the batch numbered in its segment.
    strings: Vec<String>,
}

/// A batch written to the active segment, not yet durable ([`Writer::write`]).
struct Written {
    appends: Vec<Append>,
    first_seq: Seq,
    places: Vec<Place>,
    /// The number of each event's record ids.
    numbers: Vec<Vec<u32>>,
    /// The record ids and strings it numbered.
    numbered: Numbered,
    /// The active segment as it was before it: what a failed sync goes back to.
    before: Before,
    started: Instant,
}

#[derive(Clone, Copy)]
struct Before {
    len: u64,
    n_records: u64,
    cost: u64,
    day: Option<i64>,
}

/// The syncer thread's two ends: a sync of the active segment's file asked for, and its
/// outcome, in order. The writer syncs there when it has a next batch to encode and write
/// meanwhile: on two cores the `fdatasync` of a group commit otherwise leaves the writer, and
/// the producers waiting for it, idle (BENCHMARKS.md, B1).
struct Syncer {
    requests: Sender<Arc<File>>,
    results: Receiver<std::io::Result<()>>,
}

impl Syncer {
    fn start(dir: &std::path::Path) -> Result<Syncer> {
        let (requests, asked) = mpsc::channel::<Arc<File>>();
        let (answer, results) = mpsc::channel();
        thread::Builder::new()
            .name("audit-syncer".into())
            .spawn(move || {
                for file in asked {
                    if answer.send(file.sync_data()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io(dir, e))?;
        Ok(Syncer { requests, results })
    }
}

/// Adds each batch the writer made durable to the live partition's index, in order, on a
/// thread of its own: indexing is about a third of the writer's work per event (the record
/// ids' postings, the terms and free-text words), and here it overlaps the writer's encoding
/// and `fdatasync` of the next batch rather than delaying its answers. Readers wait for it
/// ([`Shared::settle`]); the writer waits for it before it rolls to a new segment.
fn indexer(shared: &Shared, batches: Receiver<Batch>) {
    /// Tells the waiting readers when the thread ends by a panic.
    struct Stops<'a>(&'a Shared);
    impl Drop for Stops<'_> {
        fn drop(&mut self) {
            if thread::panicking() {
                let mut indexing = self.0.indexing.lock().expect("indexing lock");
                indexing.stopped =
                    Some("the audit log's indexer stopped; a restart rebuilds the index".into());
                self.0.indexed.notify_all();
            }
        }
    }
    let _stops = Stops(shared);
    for batch in batches {
        #[cfg(test)]
        {
            let delay = shared.indexing.lock().expect("indexing lock").delay;
            thread::sleep(delay);
        }
        {
            let mut partitions = shared.partitions.write().expect("partitions lock");
            let live = partitions.last_mut().expect("a live partition");
            live.strings
                .write()
                .expect("strings lock")
                .extend(batch.strings);
            let PartState::Live(index) = &mut live.state else {
                unreachable!("the writer rolls only once every batch is indexed");
            };
            for ((event, place), numbers) in
                batch.events.iter().zip(&batch.places).zip(&batch.numbers)
            {
                index.insert(*place, event, numbers);
            }
            live.n_events += batch.events.len() as u64;
        }
        let mut indexing = shared.indexing.lock().expect("indexing lock");
        indexing.done += 1;
        shared.indexed.notify_all();
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.held.take() {
                Some(job) => job,
                None => match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => {
                        // Nothing waits: what is written is made durable and answered before
                        // the writer sleeps.
                        self.settle_written();
                        match self.jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                },
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { event, leaf, done } => batch.push(Append { event, leaf, done }),
                    other => {
                        self.held = Some(other);
                        break;
                    }
                }
                if batch.len() < self.config.batch_events_max {
                    next = self.jobs.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
                continue;
            }
            self.settle_written();
            match self.held.take() {
                Some(Job::Roll { done }) => {
                    let rolled = if self.active.n_records > 0 {
                        self.roll()
                    } else {
                        Ok(())
                    };
                    let _ = done.send(rolled);
                }
                Some(Job::ImportPurged { range, done }) => {
                    let _ = done.send(self.import_purged(*range));
                }
                Some(Job::Close { done }) => {
                    self.stopped.store(true, Ordering::Release);
                    let _ = self.shared.settle();
                    let _ = done.send(());
                    return;
                }
                _ => {}
            }
        }
    }

    /// Writes `batch` in runs, each into the segment it belongs to (see [`Writer::write`]), and
    /// has each made durable ([`Writer::sync`]); after a run that fails, the rest are refused
    /// with it.
    fn commit(&mut self, batch: Vec<Append>) {
        let mut rest = batch;
        while !rest.is_empty() {
            let failure = match self.write(&mut rest) {
                Ok(written) => {
                    let more = !rest.is_empty();
                    self.sync(written, more).err()
                }
                Err(error) => Some(error),
            };
            if let (Some(error), false) = (failure, rest.is_empty()) {
                self.refuse(rest.drain(..), &error);
            }
        }
    }

    /// Makes a written batch durable and answers it. When nothing else is at hand the writer
    /// syncs it itself; otherwise the syncer thread does, while the writer encodes and writes
    /// the next batch (`more`, or a job already queued), and the batch written before this one
    /// is answered now that its sync is done. Returns the error of a sync that failed.
    fn sync(&mut self, written: Written, more: bool) -> Result<()> {
        if self.held.is_none() {
            self.held = self.jobs.try_recv().ok();
        }
        if !more && self.held.is_none() && self.in_flight.is_none() {
            let synced = self.active.file().sync_data();
            return self.synced(written, synced);
        }
        let _ = self.syncer.requests.send(self.active.file().clone());
        match self.in_flight.replace(written) {
            Some(before) => {
                let synced = self.sync_result();
                self.synced(before, synced)
            }
            None => Ok(()),
        }
    }

    /// Answers the batch in flight, if any, once the syncer has synced it.
    fn settle_written(&mut self) {
        if let Some(written) = self.in_flight.take() {
            let synced = self.sync_result();
            // A failure was answered to its appends.
            let _ = self.synced(written, synced);
        }
    }

    fn sync_result(&self) -> std::io::Result<()> {
        let result = self
            .syncer
            .results
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the audit syncer thread stopped")));
        #[cfg(test)]
        if self
            .shared
            .failing_syncs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(std::io::Error::other("a sync failed, as the test asked"));
        }
        result
    }

    /// Finishes `written` after its sync: answered if it succeeded; if not, it and the batch
    /// written after it (in flight, its sync waited for) are taken back out of the segment and
    /// refused, and the error returned.
    fn synced(&mut self, written: Written, synced: std::io::Result<()>) -> Result<()> {
        let Err(error) = synced else {
            self.finish(written);
            return Ok(());
        };
        let error = Error::io(self.active.path(), error);
        let mut failed = vec![written];
        if let Some(after) = self.in_flight.take() {
            let _ = self.sync_result();
            failed.push(after);
        }
        let before = failed[0].before;
        let cut = self
            .active
            .cut(before.len, before.n_records, &error.to_string());
        self.active_cost = before.cost;
        self.active_day = before.day;
        let numbered: Vec<Numbered> = failed
            .iter_mut()
            .map(|written| std::mem::take(&mut written.numbered))
            .collect();
        self.encoder
            .forget(&numbered, &mut self.shared.ids.write().expect("ids lock"));
        let error = cut.err().unwrap_or(error);
        self.refuse(
            failed.into_iter().flat_map(|written| written.appends),
            &error,
        );
        Err(error)
    }

    /// The derived state of a durable batch (record ids, leaves, the tree, the index), then
    /// its answers.
    fn finish(&mut self, written: Written) {
        let Written {
            appends,
            first_seq,
            places,
            numbers,
            numbered,
            started,
            ..
        } = written;
        self.record_batch(appends.len(), started.elapsed().as_micros() as u64);
        *self.shared.refusing.lock().expect("refusing lock") = None;
        // What follows is derived state; if it cannot be written the writer stops (a restart
        // rebuilds it from the log) but this batch stands.
        self.shared.integrity.add_ids(&numbered.ids);
        let derived = self
            .shared
            .id_file
            .write(u64::from(numbered.first_id), &numbered.ids);
        let leaves: Vec<Hash> = appends.iter().map(|job| job.leaf).collect();
        // The leaves go into the tree before the events become visible in the index: a
        // reader that finds an event can always check it against its leaf.
        {
            let mut tree = self.shared.integrity.tree.write().expect("tree lock");
            for leaf in &leaves {
                tree.push(*leaf);
            }
        }
        let derived = derived.and_then(|()| self.shared.integrity.leaves.write(first_seq, &leaves));
        if derived.is_err() {
            // The batch stands; its record ids and leaves are written again before the next.
            self.behind = Some(match self.behind {
                Some(earlier) => earlier,
                None => (u64::from(numbered.first_id), first_seq),
            });
        }
        let (events, answers): (Vec<_>, Vec<_>) = appends
            .into_iter()
            .map(|job| (*job.event, job.done))
            .unzip();
        self.index(Batch {
            places,
            events,
            numbers,
            strings: numbered.strings,
        });
        for (i, done) in answers.into_iter().enumerate() {
            done(Ok(first_seq + i as u64));
        }
    }

    /// Refuses `appends` with `error` (the disk is full, a write failed); an error that leaves
    /// the segment in a state unknown stops the writer.
    fn refuse(&mut self, appends: impl IntoIterator<Item = Append>, error: &Error) {
        self.shared
            .stats
            .batches_failed
            .fetch_add(1, Ordering::Relaxed);
        if matches!(error, Error::Unavailable(_)) {
            self.stopped.store(true, Ordering::Release);
        }
        let message = error.to_string();
        *self.shared.refusing.lock().expect("refusing lock") =
            Some(format!("the audit log refuses new events: {message}"));
        for job in appends {
            (job.done)(Err(Error::Unavailable(message.clone())));
        }
    }

    /// Hands a durable batch to the indexer; counted as sent before its appends are answered,
    /// so a reader that starts after an answer waits for it. An indexer that has stopped leaves
    /// the batch durable but unsearchable, and the writer stops: appends are refused (503)
    /// until a restart.
    fn index(&mut self, batch: Batch) {
        // Sent before it is counted, and never under the lock: a full queue waits for the
        // indexer, which takes the lock to count what it has done.
        let sent = self.index_queue.send(batch).is_ok();
        let mut indexing = self.shared.indexing.lock().expect("indexing lock");
        if sent {
            indexing.sent += 1;
        } else {
            self.stopped.store(true, Ordering::Release);
            indexing
                .stopped
                .get_or_insert_with(|| "the audit log's indexer stopped".into());
        }
    }

    /// Writes again the record ids and leaves that fell behind; until that succeeds no batch
    /// is taken (it would be refused: 503), so the derived files are whole before any
    /// partition is sealed.
    fn catch_up(&mut self) -> Result<()> {
        let Some((first_id, first_leaf)) = self.behind else {
            return Ok(());
        };
        let ids = self
            .shared
            .ids
            .read()
            .expect("ids lock")
            .table
            .since(first_id as usize);
        self.shared.id_file.write(first_id, &ids)?;
        let leaves = {
            let tree = self.shared.integrity.tree.read().expect("tree lock");
            (first_leaf..tree.len())
                .map(|seq| tree.leaf(seq, &self.shared.integrity.leaves))
                .collect::<Result<Vec<Hash>>>()?
        };
        self.shared.integrity.leaves.write(first_leaf, &leaves)?;
        self.behind = None;
        Ok(())
    }

    /// Whether an event of UTC day `day` goes into a segment of `bytes`, whose index holds
    /// about `cost` bytes of memory (`partition::index_cost`) and whose first event is of day
    /// `segment_day`, rather than starting the next one: a segment is cut before the first
    /// event that finds it full, its index at the memory budget, or of a later day. Segments only move forward in time:
    /// an event of an earlier day (stamped just before midnight, reaching the writer just
    /// after it) joins the current segment. Decided event by event, never by how events fell
    /// into batches, so the same events make the same segments wherever they are written (the
    /// audit nodes of a cluster, a node rebuilt from the archive).
    fn belongs(&self, bytes: u64, cost: u64, segment_day: Option<i64>, day: i64) -> bool {
        bytes < self.config.segment_bytes_max
            && cost < self.config.index_bytes_max
            && segment_day.is_none_or(|d| d >= day)
    }

    /// Whether the active segment is full for `job` (see [`Writer::belongs`]).
    fn full_for(&self, job: &Append) -> bool {
        self.active.n_records > 0
            && !self.belongs(
                self.active.len(),
                self.active_cost,
                self.active_day,
                job.event.creation_time_us.div_euclid(DAY_US),
            )
    }

    /// Writes the longest start of `rest` that belongs in one segment (rolling to the next
    /// first when its first event does not belong in the active one), not yet durable, and
    /// takes it out of `rest`; at least one event.
    fn write(&mut self, rest: &mut Vec<Append>) -> Result<Written> {
        if self.behind.is_some() {
            // What falls behind is written again from the table, which must then hold only
            // what is durable.
            self.settle_written();
        }
        self.catch_up()?;
        if self.full_for(&rest[0]) {
            self.settle_written();
            if self.full_for(&rest[0]) {
                self.roll()?;
            }
        }
        let started = Instant::now();
        let before = Before {
            len: self.active.len(),
            n_records: self.active.n_records,
            cost: self.active_cost,
            day: self.active_day,
        };
        let day_of = |job: &Append| job.event.creation_time_us.div_euclid(DAY_US);
        let mut cost = self.active_cost;
        let segment_day = self.active_day.unwrap_or_else(|| day_of(&rest[0]));
        let mut bytes = self.active.len();
        let mut payloads = Vec::with_capacity(rest.len());
        let mut numbers = Vec::with_capacity(rest.len());
        let numbered = {
            let mut ids = self.shared.ids.write().expect("ids lock");
            for job in rest.iter() {
                if !payloads.is_empty()
                    && !self.belongs(bytes, cost, Some(segment_day), day_of(job))
                {
                    break;
                }
                cost += crate::partition::index_cost(&job.event);
                let mut payload = Vec::with_capacity(128 + job.event.record_ids.len() * 4);
                let mut record_numbers = Vec::new();
                self.encoder
                    .encode(&job.event, &mut ids, &mut payload, &mut record_numbers);
                bytes += FRAME_HEADER_BYTES + payload.len() as u64;
                payloads.push(payload);
                numbers.push(record_numbers);
            }
            self.encoder.take_numbered()
        };
        let first_seq = self.active.first_seq + self.active.n_records;
        let places = match self.active.write(&payloads) {
            Ok(places) => places,
            Err(error) => {
                self.encoder.forget(
                    std::slice::from_ref(&numbered),
                    &mut self.shared.ids.write().expect("ids lock"),
                );
                return Err(error);
            }
        };
        self.active_day.get_or_insert(segment_day);
        self.active_cost = cost;
        Ok(Written {
            appends: rest.drain(..payloads.len()).collect(),
            first_seq,
            places,
            numbers,
            numbered,
            before,
            started,
        })
    }

    /// Closes the active segment (its index is written by the sealer) and starts the next.
    fn roll(&mut self) -> Result<()> {
        debug_assert!(
            self.in_flight.is_none(),
            "a roll waits for the batch in flight"
        );
        // The live index is frozen whole: every batch of the segment in it first.
        self.shared.settle()?;
        let ids_before = self.shared.ids.read().expect("ids lock").table.len() as u32;
        let next_seq = self.active.first_seq + self.active.n_records;
        let next = ActiveSegment::create(&self.config.dir, next_seq, ids_before)?;
        let read = Handle::open(&self.shared.handles, next.path())?;
        let frozen = {
            let mut partitions = self.shared.partitions.write().expect("partitions lock");
            let live = partitions.last_mut().expect("a live partition");
            let PartState::Live(index) = std::mem::replace(&mut live.state, PartState::Purged)
            else {
                unreachable!("the last partition is the live one");
            };
            live.state = PartState::Frozen {
                index: Arc::from(index),
                ids_end: ids_before,
            };
            partitions.push(Partition {
                first_seq: next_seq,
                n_events: 0,
                path: next.path().to_path_buf(),
                file: Some(read),
                strings: Arc::new(RwLock::new(Vec::new())),
                state: PartState::Live(Box::default()),
            });
            partitions.len() - 2
        };
        self.encoder.new_segment();
        self.active = next;
        self.active_day = None;
        self.active_cost = 0;
        self.shared.sealing.lock().expect("sealing lock").pending += 1;
        let _ = self.seal_queue.send(frozen);
        Ok(())
    }

    fn record_batch(&self, n_events: usize, elapsed_us: u64) {
        let stats = &self.shared.stats;
        stats
            .events_appended
            .fetch_add(n_events as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .fsync_us_total
            .fetch_add(elapsed_us, Ordering::Relaxed);
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|b| elapsed_us <= *b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        stats.fsync_us_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

mod cluster_purge;
pub use cluster_purge::PurgedRange;

#[cfg(test)]
mod tests;

/// When a sealed partition's last event may go under `policy` (the latest, over its groups of
/// record type, operation, user and instance), if every event in it has expired by `now_us`.
fn expired_at(index: &SealedIndex, policy: &RetentionPolicy, now_us: i64) -> Result<Option<i64>> {
    let mut kept_until_us = i64::MIN;
    for (key, newest) in index.retention_groups()? {
        let days = policy.days_for(&key[0], &key[1], &key[2], &key[3]);
        let until = newest.saturating_add(days.saturating_mul(DAY_US));
        if days < 0 || until > now_us {
            return Ok(None);
        }
        kept_until_us = kept_until_us.max(until);
    }
    Ok(Some(kept_until_us))
}
