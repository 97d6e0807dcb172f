//! Retention in a cluster (docs/scale-out.md, "Retention in a cluster"): a purge decided on one
//! node and carried out by every audit node at the same point of the stream.
//!
//! The deciding node deletes nothing: it makes one `PurgeAuditLog` event per expired sealed
//! partition ([`AuditLog::purge_claims`]), each stating its claim as a purge on one machine
//! does (the range, the policy, when its last event could go, and the digest of the ranges
//! purged before it — chained after the claims still pending), and publishes them through the
//! stream. Every audit node meets the events in stream order and, once a signed checkpoint
//! covers one, carries it out ([`AuditLog::carry_out_purges`]): the event must account for the
//! range as the next one purged (`PurgeClaim::accounts`, what `custos audit verify` checks of
//! every range) and the range must be exactly one of the node's sealed partitions (partitions
//! are cut at the same events on every node); the range's leaves and record ids are handed over
//! to be kept, then the range is recorded in `pruned.log` and its files deleted, as
//! [`AuditLog::purge_expired`] does on one machine. A claim is trusted from the log's content
//! only as far as `accounts` allows: never an ingested event, never a claim the policy it
//! states would not allow at the event's time. A node built later takes such a range as its
//! leaves and record ids alone ([`AuditLog::import_purged`]) and records it when it meets the
//! claim.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::{AuditLog, Job, PurgedPartition, Writer, expired_at, purge_event};
use crate::codec::Encoder;
use crate::event::{AuditEvent, Origin, ResultStatus};
use crate::index::{PartState, Partition, SearchQuery};
use crate::log::{ActiveSegment, Seq};
use crate::merkle::Hash;
use crate::retention::{PrunedFile, PrunedRange, PurgeClaim, RetentionPolicy};
use crate::{Error, Result};

/// A range of the log that retention purged, as an audit node keeps it for nodes built later:
/// the leaves and the record ids it numbered, without its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedRange {
    /// Its first record's seq.
    pub first: Seq,
    /// Records it held.
    pub count: u64,
    /// The seq of the `PurgeAuditLog` event that accounts for it.
    pub event_seq: Seq,
    /// Its records' Merkle leaves, in order.
    pub leaves: Vec<Hash>,
    /// The record ids its records numbered first, in the order they were numbered.
    pub ids: Vec<Uuid>,
}

/// A purge event in the log whose claim is not carried out yet.
struct Pending {
    seq: Seq,
    event: AuditEvent,
    claim: PurgeClaim,
}

/// Purge events searched at a time.
const PAGE: usize = 200;

impl AuditLog {
    /// The claims of purge events in the log that are not carried out yet, by the place in
    /// `pruned.log` they claim (the oldest event of each place). Events at or before the one
    /// that accounts for the last range purged are done or stale, and not read.
    fn pending_claims(&self, pruned: &PrunedFile) -> Result<BTreeMap<usize, Pending>> {
        let after = pruned.ranges.last().and_then(|range| range.event);
        let mut found = BTreeMap::new();
        let mut before_seq = None;
        loop {
            let page = self.search(&SearchQuery {
                start_us: i64::MIN,
                end_us: i64::MAX,
                operations: vec![crate::Operation::PurgeAuditLog.as_str().into()],
                workloads: vec!["Custos".into()],
                statuses: vec![ResultStatus::Succeeded],
                before_seq,
                top: PAGE,
                ..Default::default()
            })?;
            for (seq, event) in page.events {
                if after.is_some_and(|last| seq <= last) || event.origin == Origin::Ingest {
                    continue;
                }
                let Some(claim) = PurgeClaim::parse(&event.details) else {
                    continue;
                };
                if claim.ranges_before >= pruned.ranges.len() {
                    // Newest first: the oldest event claiming a place keeps it.
                    found.insert(claim.ranges_before, Pending { seq, event, claim });
                }
            }
            match page.next_before_seq {
                Some(next) if after.is_none_or(|last| next > last + 1) => before_seq = Some(next),
                _ => return Ok(found),
            }
        }
    }

    /// Whether the record at `seq` was purged by retention (or taken as purged,
    /// [`AuditLog::import_purged`]): a replica meeting it again in the stream holds it.
    pub fn is_purged(&self, seq: Seq) -> bool {
        let partitions = self.partitions_as_indexed();
        partitions.iter().any(|p| {
            matches!(p.state, PartState::Purged)
                && p.first_seq <= seq
                && seq < p.first_seq + p.n_events
        })
    }

    /// The `PurgeAuditLog` events that would purge what has expired at `now_us` under
    /// `policy`, with the partition each names: one per sealed partition whose events have all expired and that no pending
    /// claim in the log names, each claiming it after the ranges purged and the claims pending.
    /// Deletes nothing: on a cluster node the events go through the stream, and every audit
    /// node carries them out ([`AuditLog::carry_out_purges`]). `describe` gives who and when.
    pub fn purge_claims(
        &self,
        now_us: i64,
        policy: &RetentionPolicy,
        describe: &dyn Fn(&PurgedPartition) -> AuditEvent,
    ) -> Result<Vec<(PurgedPartition, AuditEvent)>> {
        let pruned = self.pruned.lock().expect("pruned lock");
        let mut pending = self.pending_claims(&pruned)?;
        let mut ranges = pruned.ranges.clone();
        while let Some(claimed) = pending.remove(&ranges.len()) {
            ranges.push(PrunedRange {
                first: claimed.claim.first,
                count: claimed.claim.count,
                event: Some(claimed.seq),
            });
        }
        let claimed: HashSet<Seq> = ranges[pruned.ranges.len()..]
            .iter()
            .map(|range| range.first)
            .collect();
        let mut events = Vec::new();
        for (_, first_seq, n_events, path, index) in self.sealed_partitions() {
            if claimed.contains(&first_seq) {
                continue;
            }
            let Some(kept_until_us) = expired_at(&index, policy, now_us)? else {
                continue;
            };
            let partition = PurgedPartition::of(first_seq, n_events, &path, &index, kept_until_us);
            let event = purge_event(&partition, &ranges, policy, describe);
            events.push((partition, event));
            ranges.push(PrunedRange {
                first: first_seq,
                count: n_events,
                event: None,
            });
        }
        Ok(events)
    }

    /// Carries out, in order, the pending claims a signed checkpoint covers (see the top of
    /// this file); `keep` is handed each range's leaves and record ids before its files go.
    /// Returns the ranges carried out. A claim that is not the next range, or not exactly one
    /// sealed partition of this log, stops the carrying out there, as an error: nothing is
    /// deleted on its strength.
    pub fn carry_out_purges(
        &self,
        keep: &mut dyn FnMut(&PurgedRange) -> Result<()>,
    ) -> Result<Vec<(Seq, u64)>> {
        let mut pruned = self.pruned.lock().expect("pruned lock");
        let signed = self.shared.integrity.latest()?.map_or(0, |(size, _)| size);
        let mut pending = self.pending_claims(&pruned)?;
        let mut done = Vec::new();
        while let Some(Pending { seq, event, claim }) = pending.remove(&pruned.ranges.len()) {
            if seq >= signed {
                break;
            }
            let (first, count) = (claim.first, claim.count);
            let mut ranges = pruned.ranges.clone();
            ranges.push(PrunedRange {
                first,
                count,
                event: Some(seq),
            });
            PurgeClaim::accounts(&event, seq, &ranges, ranges.len() - 1)
                .map_err(Error::Corrupted)?;
            let found = {
                let partitions = self.partitions()?;
                partitions
                    .iter()
                    .position(|p| p.first_seq == first && p.n_events == count)
                    .map(|i| {
                        let partition = &partitions[i];
                        let index = match &partition.state {
                            PartState::Sealed(index) => Some(index.clone()),
                            _ => None,
                        };
                        let imported = matches!(partition.state, PartState::Purged);
                        (i, index, imported, partition.path.clone())
                    })
            };
            match found {
                Some((i, Some(index), _, path)) => {
                    let range = self.purged_range(first, count, seq, &index, &path)?;
                    keep(&range)?;
                    drop(index);
                    self.delete_purged(&mut pruned, i, seq, &path)?;
                }
                // Taken as purged from another node ([`AuditLog::import_purged`]): only its
                // record was waiting for the claim.
                Some((_, None, true, _)) if pruned.count_at(first).is_none() => {
                    pruned.record(first, count, seq)?;
                }
                _ => {
                    return Err(Error::Unavailable(format!(
                        "the purge event at seq {seq} claims records {first}..{}, which are not one sealed partition of this log: nothing is deleted",
                        first + count
                    )));
                }
            }
            done.push((first, count));
        }
        Ok(done)
    }

    /// The leaves and the record ids of the sealed partition `first .. first + count` (segment
    /// `path`, index `index`), purged by the event at `event_seq`.
    fn purged_range(
        &self,
        first: Seq,
        count: u64,
        event_seq: Seq,
        index: &crate::sealed::SealedIndex,
        path: &std::path::Path,
    ) -> Result<PurgedRange> {
        use crate::merkle::LeafSource;
        let leaves = self
            .shared
            .integrity
            .leaves
            .read_leaves(first, first + count)?;
        let ids_before = u64::from(crate::log::read_header_of(path)?);
        let ids_end = u64::from(index.meta().ids_end);
        let ids = self.shared.id_file.read_range(ids_before, ids_end)?;
        Ok(PurgedRange {
            first,
            count,
            event_seq,
            leaves,
            ids,
        })
    }

    /// Takes `range`, purged on another audit node, as its leaves and record ids alone: the
    /// log must end where it begins, with nothing in its active partition. The range is
    /// recorded in `pruned.log` when its purge event is met and carried out
    /// ([`AuditLog::carry_out_purges`]); a log closed before that does not open (a gap no purge
    /// explains) and is rebuilt.
    pub fn import_purged(&self, range: PurgedRange) -> Result<()> {
        let (done, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Job::ImportPurged {
                range: Box::new(range),
                done,
            })
            .map_err(|_| Error::Unavailable("the audit writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("the audit writer stopped before answering".into()))?
    }
}

impl Writer {
    /// [`AuditLog::import_purged`], on the writer's thread. A failure once anything was
    /// changed stops the writer: a restart finds the log as it was before the range.
    pub(super) fn import_purged(&mut self, range: PurgedRange) -> Result<()> {
        self.catch_up()?;
        let end = self.active.first_seq + self.active.n_records;
        if self.active.n_records > 0
            || range.first != end
            || range.leaves.len() as u64 != range.count
        {
            return Err(Error::Unavailable(format!(
                "records {}..{} cannot be taken as purged: the log ends at {end}",
                range.first,
                range.first + range.count
            )));
        }
        {
            let ids = self.shared.ids.read().expect("ids lock");
            if let Some(held) = range.ids.iter().find(|id| ids.number(id).is_some()) {
                return Err(Error::Corrupted(format!(
                    "record id {held} of the purged records {}..{} was numbered before them",
                    range.first,
                    range.first + range.count
                )));
            }
        }
        let taken = self.take_purged(range);
        if taken.is_err() {
            self.stopped
                .store(true, std::sync::atomic::Ordering::Release);
        }
        taken
    }

    fn take_purged(&mut self, range: PurgedRange) -> Result<()> {
        let PurgedRange {
            first,
            count,
            leaves,
            ids,
            ..
        } = range;
        let first_id = {
            let mut dict = self.shared.ids.write().expect("ids lock");
            let first_id = dict.table.len();
            for id in &ids {
                dict.push(*id);
            }
            first_id
        };
        self.shared.integrity.add_ids(&ids);
        self.shared.id_file.write(first_id as u64, &ids)?;
        self.shared.id_file.sync()?;
        {
            let mut tree = self.shared.integrity.tree.write().expect("tree lock");
            for leaf in &leaves {
                tree.push(*leaf);
            }
        }
        self.shared.integrity.leaves.write(first, &leaves)?;
        self.shared.integrity.leaves.sync()?;
        let ids_len = first_id + ids.len();
        let next = ActiveSegment::create(&self.config.dir, first + count, ids_len as u32)?;
        let read = crate::handles::Handle::open(&self.shared.handles, next.path())?;
        let empty = {
            let mut partitions = self.shared.partitions.write().expect("partitions lock");
            let live = partitions.last_mut().expect("a live partition");
            live.n_events = count;
            live.state = PartState::Purged;
            live.file = None;
            let empty = std::mem::take(&mut live.path);
            partitions.push(Partition {
                first_seq: first + count,
                n_events: 0,
                path: next.path().to_path_buf(),
                file: Some(read),
                strings: Arc::new(RwLock::new(Vec::new())),
                state: PartState::Live(Box::default()),
            });
            empty
        };
        crate::open::delete_partition_files(&empty, &self.config.dir)?;
        self.active = next;
        self.active_day = None;
        self.encoder = Encoder::resume(ids_len, &[]);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
