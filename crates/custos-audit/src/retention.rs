//! Retention (SPEC §8): how long each event is kept, and the record of what was purged.
//!
//! Expired events are deleted in whole partitions (a day's segment, or less). A deletion is
//! provable: first a `PurgeAuditLog` event (by Custos) states the range, the policy that let it
//! go and when its last event could go (`KeptUntil`), and the digest of every range purged
//! before it; the event is made durable and covered by a signed checkpoint; only then is the
//! range recorded in `pruned.log` (frames `u32 length | u32 crc32 | u64 first seq | u64 count
//! | u64 seq of that event`) and the files deleted. Nothing is deleted, and no range accepted,
//! on the strength of `pruned.log` alone: the server on start and `custos audit verify` check
//! that each range is accounted for by its event — or, once that event was itself purged, by
//! the digest a later purge event states. The purged events' leaf hashes stay in `leaves.dat`,
//! so the one Merkle tree over the whole log, every checkpoint signed before and every proof
//! stay valid, at 32 bytes per purged event instead of the event itself.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::log::Seq;
use crate::{Error, Result};

/// Days meaning "keep forever".
pub const KEEP_FOREVER: i64 = -1;

/// One retention policy: events matching every non-empty list are kept `days`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    /// Name shown to admins.
    pub name: String,
    /// Record types it applies to (any when empty).
    pub record_types: Vec<String>,
    /// Operations it applies to (any when empty).
    pub operations: Vec<String>,
    /// Users (principal names) it applies to (any when empty).
    pub users: Vec<String>,
    /// Days to keep, or [`KEEP_FOREVER`].
    pub days: i64,
}

/// How long events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for events no rule matches (the tenant's retention).
    pub default_days: i64,
    /// Per-instance defaults (`auditretentionperiodv2`), overriding `default_days` for the
    /// events of that instance.
    pub instance_days: HashMap<String, i64>,
    /// Policies; of those matching an event, the longest wins.
    pub rules: Vec<RetentionRule>,
}

fn listed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v.eq_ignore_ascii_case(value))
}

fn longer(a: i64, b: i64) -> i64 {
    if a == KEEP_FOREVER || b == KEEP_FOREVER {
        KEEP_FOREVER
    } else {
        a.max(b)
    }
}

impl RetentionPolicy {
    /// Days an event with these fields is kept.
    pub fn days_for(&self, record_type: &str, operation: &str, user: &str, instance: &str) -> i64 {
        let matching = self
            .rules
            .iter()
            .filter(|r| {
                listed(&r.record_types, record_type)
                    && listed(&r.operations, operation)
                    && listed(&r.users, user)
            })
            .map(|r| r.days)
            .reduce(longer);
        matching.unwrap_or_else(|| {
            self.instance_days
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(instance))
                .map_or(self.default_days, |(_, d)| *d)
        })
    }
}

impl RetentionPolicy {
    /// The policy as a `PurgeAuditLog` event states it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let instances: BTreeMap<&String, i64> =
            self.instance_days.iter().map(|(k, v)| (k, *v)).collect();
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "Name": r.name,
                    "RecordTypes": r.record_types,
                    "Operations": r.operations,
                    "Users": r.users,
                    "Days": r.days,
                })
            })
            .collect();
        serde_json::json!({"DefaultDays": self.default_days, "InstanceDays": instances, "Rules": rules})
    }
}

/// One range of records deleted by retention, and the seq of the `PurgeAuditLog` event that
/// accounts for it (`None` in a frame of the first format, which did not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrunedRange {
    pub(crate) first: Seq,
    pub(crate) count: u64,
    pub(crate) event: Option<Seq>,
}

/// The purged ranges, in `pruned.log` (frames `u32 length | u32 crc32 | u64 first | u64 count
/// | u64 event seq`; a first-format frame lacks the event seq).
pub(crate) struct PrunedFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// The ranges, in the order they were purged.
    pub(crate) ranges: Vec<PrunedRange>,
}

/// A first-format range body: first and count.
const RANGE_BYTES_V1: usize = 16;
/// A range body with the seq of its purge event.
const RANGE_BYTES: usize = 24;

/// What `pruned.log` holds.
#[derive(Debug, Default)]
pub(crate) struct PrunedRead {
    pub(crate) ranges: Vec<PrunedRange>,
    /// Bytes of whole, intact frames.
    pub(crate) intact: usize,
    /// A whole frame that fails its check (damage, not a crash), described.
    pub(crate) damage: Option<String>,
}

/// Reads `pruned.log`'s frames. An incomplete last frame is a crash's torn write (everything
/// after `intact`); a whole frame that fails its check, or has an unknown length, is damage.
pub(crate) fn read_pruned(bytes: &[u8]) -> PrunedRead {
    let mut read = PrunedRead::default();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len != RANGE_BYTES && len != RANGE_BYTES_V1 {
            read.damage = Some(format!(
                "pruned.log: the frame at byte {pos} has an unknown length {len}"
            ));
            break;
        }
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            read.damage = Some(format!(
                "pruned.log: the frame at byte {pos} (range #{}) fails its checksum",
                read.ranges.len()
            ));
            break;
        }
        let number = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        read.ranges.push(PrunedRange {
            first: number(0),
            count: number(8),
            event: (len == RANGE_BYTES).then(|| number(16)),
        });
        pos += 8 + len;
    }
    read.intact = pos;
    read
}

/// The digest a `PurgeAuditLog` event states of every range purged before it: SHA-256 over
/// each range's first seq and count (8 bytes each, little endian), in order.
pub(crate) fn pruned_digest(ranges: &[PrunedRange]) -> String {
    let mut hasher = Sha256::new();
    for range in ranges {
        hasher.update(range.first.to_le_bytes());
        hasher.update(range.count.to_le_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    /// When the last of its events could go under the policy that purged it, microseconds.
    pub kept_until_us: i64,
    /// The seq of the `PurgeAuditLog` event that records the deletion.
    pub event_seq: Seq,
}

impl PurgedPartition {
    /// The sealed partition of `first_seq`, `n_events`, segment `path` and `index`, to be purged
    /// as kept until `kept_until_us` (its purge event's seq not known yet).
    pub(crate) fn of(
        first_seq: Seq,
        n_events: u64,
        path: &Path,
        index: &crate::sealed::SealedIndex,
        kept_until_us: i64,
    ) -> PurgedPartition {
        let meta = index.meta();
        PurgedPartition {
            segment: path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            first_seq,
            events: n_events,
            oldest_us: meta.oldest_us,
            newest_us: meta.newest_us,
            kept_until_us,
            event_seq: 0,
        }
    }
}

/// What a `PurgeAuditLog` event claims: the range it deleted, when the last of its events
/// could go under the policy in force, and the digest of the ranges purged before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PurgeClaim {
    pub(crate) first: Seq,
    pub(crate) count: u64,
    /// The `CreationTime` of the newest event purged, microseconds.
    pub(crate) newest_us: i64,
    pub(crate) kept_until_us: i64,
    pub(crate) ranges_before: usize,
    pub(crate) digest_before: String,
}

impl PurgeClaim {
    /// The `Details` of the event.
    pub(crate) fn details(&self, partition: &PurgedPartition, policy: &RetentionPolicy) -> String {
        serde_json::json!({
            "Partition": partition.segment,
            "FirstSeq": self.first,
            "Events": self.count,
            "OldestEvent": crate::format_creation_time(partition.oldest_us),
            "NewestEvent": crate::format_creation_time(partition.newest_us),
            "NewestEventUs": partition.newest_us,
            "KeptUntil": crate::format_creation_time(self.kept_until_us),
            "KeptUntilUs": self.kept_until_us,
            "Policy": policy.to_json(),
            "PrunedBefore": {"Ranges": self.ranges_before, "Sha256": self.digest_before},
        })
        .to_string()
    }

    /// The claim of an event's `Details`, when they are a purge's.
    pub(crate) fn parse(details: &str) -> Option<PurgeClaim> {
        let json: serde_json::Value = serde_json::from_str(details).ok()?;
        Some(PurgeClaim {
            first: json["FirstSeq"].as_u64()?,
            count: json["Events"].as_u64()?,
            newest_us: json["NewestEventUs"].as_i64()?,
            kept_until_us: json["KeptUntilUs"].as_i64()?,
            ranges_before: usize::try_from(json["PrunedBefore"]["Ranges"].as_u64()?).ok()?,
            digest_before: json["PrunedBefore"]["Sha256"].as_str()?.to_string(),
        })
    }

    /// Whether `event`, the record at `seq`, accounts for range `at` of `ranges` by itself: a
    /// successful `PurgeAuditLog` of Custos (never an ingested one) after the range, naming it,
    /// made after the range's last event could go under the policy it states (never sooner
    /// than the policy's shortest retention after the newest purged event), and stating the
    /// ranges purged before it.
    pub(crate) fn accounts(
        event: &crate::AuditEvent,
        seq: Seq,
        ranges: &[PrunedRange],
        at: usize,
    ) -> std::result::Result<PurgeClaim, String> {
        let range = ranges[at];
        if event.workload != "Custos"
            || event.operation != "PurgeAuditLog"
            || event.origin == crate::Origin::Ingest
            || event.result_status != crate::ResultStatus::Succeeded
        {
            return Err(format!("record seq {seq} is not a purge by Custos"));
        }
        let claim = PurgeClaim::parse(&event.details)
            .ok_or_else(|| format!("record seq {seq} does not state what it purged"))?;
        if (claim.first, claim.count) != (range.first, range.count) {
            return Err(format!(
                "record seq {seq} purged records {}..{}, not {}..{}",
                claim.first,
                claim.first + claim.count,
                range.first,
                range.first + range.count
            ));
        }
        if seq < range.first + range.count {
            return Err(format!(
                "record seq {seq} lies inside the range it claims to purge"
            ));
        }
        if claim.kept_until_us > event.creation_time_us {
            return Err(format!(
                "record seq {seq} purged records that its policy kept until {}",
                crate::format_creation_time(claim.kept_until_us)
            ));
        }
        // The policy it states must have let the newest event go by then: no event is kept
        // less than the policy's shortest retention.
        let shortest = shortest_days(&event.details)
            .ok_or_else(|| format!("record seq {seq} does not state its policy"))?
            .ok_or_else(|| {
                format!("record seq {seq} states a policy that keeps every event forever")
            })?;
        let earliest = claim
            .newest_us
            .saturating_add(shortest.max(0).saturating_mul(crate::log::DAY_US));
        if claim.kept_until_us < earliest {
            return Err(format!(
                "record seq {seq} purged an event of {} that its policy kept at least {shortest} days",
                crate::format_creation_time(claim.newest_us)
            ));
        }
        if claim.ranges_before != at || claim.digest_before != pruned_digest(&ranges[..at]) {
            return Err(format!(
                "record seq {seq} states other ranges purged before it than pruned.log holds"
            ));
        }
        Ok(claim)
    }
}

/// The shortest retention, in days, the policy a purge event's `Details` state gives any
/// event (`Some(None)` when it keeps every event forever); `None` when they state none.
fn shortest_days(details: &str) -> Option<Option<i64>> {
    let json: serde_json::Value = serde_json::from_str(details).ok()?;
    let policy = &json["Policy"];
    let mut days = vec![policy["DefaultDays"].as_i64()];
    days.extend(
        policy["InstanceDays"]
            .as_object()?
            .values()
            .map(|d| d.as_i64()),
    );
    days.extend(
        policy["Rules"]
            .as_array()?
            .iter()
            .map(|r| r["Days"].as_i64()),
    );
    let days = days.into_iter().collect::<Option<Vec<i64>>>()?;
    Some(days.into_iter().filter(|d| *d != KEEP_FOREVER).min())
}

impl PrunedFile {
    /// Reads `pruned.log` without writing: damage is an error; the length of a torn last
    /// frame to cut off is returned, to be cut once the whole log is found sound.
    pub(crate) fn open(dir: &Path) -> Result<(PrunedFile, Option<u64>)> {
        let path = dir.join("pruned.log");
        let file = crate::files::open_read_write(&path)?;
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let read = read_pruned(&bytes);
        if let Some(damage) = read.damage {
            return Err(Error::Corrupted(damage));
        }
        let torn = (read.intact < bytes.len()).then_some(read.intact as u64);
        Ok((
            PrunedFile {
                file,
                path,
                len: read.intact as u64,
                ranges: read.ranges,
            },
            torn,
        ))
    }

    /// Cuts a torn last frame off (a purge that crashed while recording its range).
    pub(crate) fn cut_torn(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// The count of the range that starts at `first`, if one does.
    pub(crate) fn count_at(&self, first: Seq) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| r.first == first)
            .map(|r| r.count)
    }

    /// Durably records that `first .. first + count` is purged, accounted for by the event at
    /// `event`.
    pub(crate) fn record(&mut self, first: Seq, count: u64, event: Seq) -> Result<()> {
        let mut body = Vec::with_capacity(RANGE_BYTES);
        body.extend_from_slice(&first.to_le_bytes());
        body.extend_from_slice(&count.to_le_bytes());
        body.extend_from_slice(&event.to_le_bytes());
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        self.file
            .write_all_at(&frame, self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += frame.len() as u64;
        self.ranges.push(PrunedRange {
            first,
            count,
            event: Some(event),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
