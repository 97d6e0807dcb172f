//! The audit log handle: one writer thread with group commit, and search over the index.
//!
//! Callers encode their event, put it on a bounded queue (a full queue blocks the caller:
//! back-pressure, never a drop) and wait for the writer's answer. The writer takes every event
//! waiting, writes them with one write and one `fdatasync`, adds them to the index and only
//! then answers each caller, so an acknowledged event is both durable and searchable.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Instant;

use uuid::Uuid;

use crate::canonical::canonical_json;
use crate::checkpoint::CheckpointSigner;
use crate::event::AuditEvent;
use crate::index::{MemIndex, SearchPage, SearchQuery};
use crate::integrity::{InclusionProof, Integrity};
use crate::log::{LogConfig, LogFiles, LogReader, Seq};
use crate::merkle::{Hash, leaf_hash};
use crate::retention::{PrunedFile, RetentionPolicy};

/// Microseconds in a day: partitions are UTC days.
const DAY_US: i64 = 86_400_000_000;
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
    /// Sum of write + fdatasync time, microseconds.
    pub fsync_us_total: AtomicU64,
    /// Count of batches at or under each bound of [`FSYNC_BUCKETS_US`] (not cumulative).
    pub fsync_us_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

struct Job {
    event: AuditEvent,
    leaf: Hash,
    done: SyncSender<Result<Seq>>,
}

/// The durable audit log of one data directory.
pub struct AuditLog {
    queue: SyncSender<Job>,
    index: Arc<RwLock<MemIndex>>,
    reader: LogReader,
    stats: Arc<LogStats>,
    stopped: Arc<AtomicBool>,
    integrity: Arc<Integrity>,
    /// Purged ranges; its lock also keeps two purges from running at once.
    pruned: Mutex<PrunedFile>,
    dir: PathBuf,
}

/// A partition deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedPartition {
    /// Its segment file.
    pub segment: String,
    /// Its first record's seq.
    pub first_seq: Seq,
    /// Records it held.
    pub events: u64,
    /// Oldest and newest `CreationTime` in it, microseconds.
    pub oldest_us: i64,
    /// See `oldest_us`.
    pub newest_us: i64,
}

impl AuditLog {
    /// Opens (or creates) the log, recovers a torn tail, rebuilds the index and the Merkle tree,
    /// checks the tree against every checkpoint signed before, and starts the writer and the
    /// checkpointer.
    pub fn open(config: LogConfig) -> Result<AuditLog> {
        std::fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        let signer = CheckpointSigner::new(config.signing_seed, &config.origin);
        let (integrity, signed) = Integrity::open(&config.dir, signer)?;
        let pruned = PrunedFile::open(&config.dir)?;
        let index = RefCell::new(MemIndex::default());
        // UTC day of the first event of the segment being read: after the scan, the active one's.
        let mut segment_day: Option<(u32, i64)> = None;
        let mut files = {
            let tree = RefCell::new(integrity.tree.write().expect("tree lock"));
            LogFiles::open(
                config.clone(),
                signed,
                &pruned.counts(),
                |seq, location, event| {
                    tree.borrow_mut()
                        .push(leaf_hash(canonical_json(event).as_bytes()));
                    index.borrow_mut().insert(seq, location, event);
                    if segment_day.is_none_or(|(segment, _)| segment != location.segment) {
                        segment_day =
                            Some((location.segment, event.creation_time_us.div_euclid(DAY_US)));
                    }
                    Ok(())
                },
                |first, count| {
                    for hash in &pruned.ranges[&first] {
                        tree.borrow_mut().push(*hash);
                    }
                    index.borrow_mut().insert_gap(first, count);
                    Ok(())
                },
            )?
        };
        let index = index.into_inner();
        let active_segment = files.reader().segments().len() as u32 - 1;
        files.set_active_day(
            segment_day
                .filter(|(segment, _)| *segment == active_segment)
                .map(|(_, day)| day),
        );
        integrity.check_signed()?;
        // The public verifier key beside the log, for `custos audit verify` (a verifier that
        // must not trust this folder pins the key given by `GET /api/audit/key` instead).
        let key_path = config.dir.join("verifier.key");
        let temporary = config.dir.join("verifier.key.tmp");
        std::fs::write(&temporary, format!("{}\n", integrity.verifier_key()))
            .and_then(|()| std::fs::rename(&temporary, &key_path))
            .map_err(|e| Error::io(&key_path, e))?;
        let integrity = Arc::new(integrity);
        let reader = files.reader();
        let index = Arc::new(RwLock::new(index));
        let stats = Arc::new(LogStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let (queue, jobs) = mpsc::sync_channel(config.queue_events_max);
        let writer = Writer {
            files,
            jobs,
            index: index.clone(),
            integrity: integrity.clone(),
            stats: stats.clone(),
            stopped: stopped.clone(),
            batch_events_max: config.batch_events_max,
        };
        thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&config.dir, e))?;
        let (weak, weak_stats) = (Arc::downgrade(&integrity), Arc::downgrade(&stats));
        let interval = std::time::Duration::from_millis(config.checkpoint_interval_ms);
        thread::Builder::new()
            .name("audit-checkpointer".into())
            .spawn(move || checkpointer(weak, weak_stats, interval))
            .map_err(|e| Error::io(&config.dir, e))?;
        Ok(AuditLog {
            queue,
            index,
            reader,
            stats,
            stopped,
            integrity,
            pruned: Mutex::new(pruned),
            dir: config.dir.clone(),
        })
    }

    /// Appends `event` and blocks until it is durable and searchable.
    pub fn append(&self, event: AuditEvent) -> Result<Seq> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::Unavailable("the audit writer has stopped".into()));
        }
        // The leaf is computed here, on the caller's thread; the writer only encodes and writes.
        let leaf = leaf_hash(canonical_json(&event).as_bytes());
        let (done, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job { event, leaf, done })
            .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("the audit writer stopped before answering".into()))?
    }

    /// Events in the log.
    pub fn len(&self) -> u64 {
        self.index.read().expect("index lock").len()
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The writer's counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// The latest signed checkpoint, signing one first when events arrived since the last.
    pub fn checkpoint(&self) -> Result<Option<(u64, String)>> {
        self.integrity.checkpoint()
    }

    /// The checkpoint signed earlier for exactly `size` events.
    pub fn checkpoint_at(&self, size: u64) -> Option<String> {
        self.integrity.checkpoint_at(size)
    }

    /// The signed-note verifier key of the checkpoints.
    pub fn verifier_key(&self) -> String {
        self.integrity.verifier_key()
    }

    /// The inclusion proof of an event against the latest checkpoint.
    pub fn inclusion_proof(&self, id: Uuid) -> Result<Option<InclusionProof>> {
        let found = self.index.read().expect("index lock").seq_of(id);
        let Some((seq, _)) = found else {
            return Ok(None);
        };
        self.integrity.inclusion(seq).map(Some)
    }

    /// The consistency proof between the trees of `from` and `to` events.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.integrity.consistency(from, to)
    }

    /// One event by id.
    pub fn get(&self, id: Uuid) -> Result<Option<(Seq, AuditEvent)>> {
        let found = self.index.read().expect("index lock").seq_of(id);
        let Some((seq, location)) = found else {
            return Ok(None);
        };
        Ok(Some((seq, self.reader.read_event(location)?)))
    }

    /// Deletes every whole partition whose events have all expired under `policy` at `now_us`
    /// (the active partition is never touched). Each deletion is first recorded as the event
    /// `describe` makes of it (durable before anything is deleted); then the partition's leaf
    /// hashes are kept in `pruned.log`, so checkpoints and proofs stay valid; then its file is
    /// deleted.
    pub fn purge_expired(
        &self,
        now_us: i64,
        policy: &RetentionPolicy,
        describe: &dyn Fn(&PurgedPartition) -> AuditEvent,
    ) -> Result<Vec<PurgedPartition>> {
        let mut pruned = self.pruned.lock().expect("pruned lock");
        let segments = self.reader.segments();
        let mut purged = Vec::new();
        for (i, window) in segments.windows(2).enumerate() {
            let (segment, next) = (&window[0], &window[1]);
            if segment.file.is_none() {
                continue;
            }
            let (first, end) = (segment.first_seq, next.first_seq);
            let (expired, oldest_us, newest_us) = self.index.read().expect("index lock").expired(
                first,
                end,
                now_us,
                |rt, op, user, instance| policy.days_for(rt, op, user, instance),
            );
            if !expired {
                continue;
            }
            let partition = PurgedPartition {
                segment: segment
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                first_seq: first,
                events: end - first,
                oldest_us,
                newest_us,
            };
            self.append(describe(&partition))?;
            let hashes: Vec<Hash> = {
                let tree = self.integrity.tree.read().expect("tree lock");
                (first..end)
                    .map(|seq| tree.leaf(seq).expect("purged records are in the tree"))
                    .collect()
            };
            pruned.record(first, hashes)?;
            self.index
                .write()
                .expect("index lock")
                .purge_range(first, end);
            self.reader.delete(i, &self.dir)?;
            purged.push(partition);
        }
        Ok(purged)
    }

    /// How many events match `query` (its free text aside), by `bucket_us`-wide time buckets
    /// (bucket start → count), or in one bucket keyed 0 when `bucket_us` is `None`. Answered
    /// from the index alone.
    pub fn histogram(
        &self,
        query: &SearchQuery,
        bucket_us: Option<i64>,
    ) -> std::collections::BTreeMap<i64, u64> {
        self.index
            .read()
            .expect("index lock")
            .histogram(query, bucket_us)
    }

    /// One page of events matching `query`, newest first. Every filter, free text included, is
    /// answered from the index; the log is read only for the events returned.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage> {
        if query.top == 0 {
            return Err(Error::InvalidQuery("top must be at least 1".into()));
        }
        let candidates = self
            .index
            .read()
            .expect("index lock")
            .candidates(query, query.top + 1);
        let more = candidates.len() > query.top;
        let mut events = Vec::with_capacity(candidates.len().min(query.top));
        for (seq, location) in candidates.into_iter().take(query.top) {
            events.push((seq, self.reader.read_event(location)?));
        }
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

/// Signs a checkpoint every `interval` while events arrive; ends with the log.
fn checkpointer(
    integrity: std::sync::Weak<Integrity>,
    stats: std::sync::Weak<LogStats>,
    interval: std::time::Duration,
) {
    let mut signed = 0;
    loop {
        thread::sleep(interval);
        let (Some(integrity), Some(stats)) = (integrity.upgrade(), stats.upgrade()) else {
            return;
        };
        match integrity.checkpoint() {
            Ok(Some((size, _))) if size > signed => {
                signed = size;
                stats.checkpoints_signed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            // The next tick tries again; proofs sign on demand and report their own errors.
            Err(_) => {}
        }
    }
}

struct Writer {
    files: LogFiles,
    jobs: Receiver<Job>,
    index: Arc<RwLock<MemIndex>>,
    integrity: Arc<Integrity>,
    stats: Arc<LogStats>,
    stopped: Arc<AtomicBool>,
    batch_events_max: usize,
}

impl Writer {
    fn run(mut self) {
        while let Ok(first) = self.jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < self.batch_events_max {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        let events: Vec<&AuditEvent> = batch.iter().map(|job| &job.event).collect();
        let day = batch[0].event.creation_time_us.div_euclid(DAY_US);
        let started = Instant::now();
        let result = self.files.append_batch(&events, day);
        let elapsed_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(placed) => {
                self.record_batch(batch.len(), elapsed_us);
                {
                    let mut index = self.index.write().expect("index lock");
                    let mut tree = self.integrity.tree.write().expect("tree lock");
                    for (job, (seq, location)) in batch.iter().zip(&placed) {
                        index.insert(*seq, *location, &job.event);
                        tree.push(job.leaf);
                    }
                }
                for (job, (seq, _)) in batch.into_iter().zip(placed) {
                    let _ = job.done.send(Ok(seq));
                }
            }
            Err(error) => {
                self.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                if matches!(error, Error::Unavailable(_)) {
                    self.stopped.store(true, Ordering::Release);
                }
                let message = error.to_string();
                for job in batch {
                    let _ = job.done.send(Err(Error::Unavailable(message.clone())));
                }
            }
        }
    }

    fn record_batch(&self, n_events: usize, elapsed_us: u64) {
        self.stats
            .events_appended
            .fetch_add(n_events as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fsync_us_total
            .fetch_add(elapsed_us, Ordering::Relaxed);
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|b| elapsed_us <= *b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.stats.fsync_us_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
