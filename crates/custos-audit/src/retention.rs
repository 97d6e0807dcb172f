//! Retention (SPEC §8): how long each event is kept, and the record of what was purged.
//!
//! Expired events are deleted in whole partitions (a day's segment, or less). Each purged range
//! is recorded in `pruned.log` (frames `u32 length | u32 crc32 | u64 first seq | u64 count`);
//! the purged events' leaf hashes stay in `leaves.dat`, so the one Merkle tree over the whole
//! log, every checkpoint signed before and every proof stay valid, at 32 bytes per purged
//! event instead of the event itself.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

/// The purged ranges.
pub(crate) struct PrunedFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Event counts by the first seq of each purged range.
    pub(crate) ranges: BTreeMap<Seq, u64>,
}

const RANGE_BYTES: usize = 16;

/// Reads `pruned.log` frames from `bytes`; returns the ranges and the length of the intact part.
pub(crate) fn read_pruned(bytes: &[u8]) -> (BTreeMap<Seq, u64>, usize) {
    let mut ranges = BTreeMap::new();
    let mut pos = 0usize;
    while pos + 8 + RANGE_BYTES <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let body = &bytes[pos + 8..pos + 8 + RANGE_BYTES];
        if len != RANGE_BYTES || crc32fast::hash(body) != crc {
            break;
        }
        let first = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(body[8..].try_into().expect("8 bytes"));
        ranges.insert(first, count);
        pos += 8 + RANGE_BYTES;
    }
    (ranges, pos)
}

impl PrunedFile {
    pub(crate) fn open(dir: &Path) -> Result<PrunedFile> {
        let path = dir.join("pruned.log");
        let file = crate::files::open_read_write(&path)?;
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let (ranges, intact) = read_pruned(&bytes);
        if intact < bytes.len() {
            // A torn record of a purge that crashed before its segment was deleted.
            file.set_len(intact as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
        }
        Ok(PrunedFile {
            file,
            path,
            len: intact as u64,
            ranges,
        })
    }

    /// Durably records that `first .. first + count` is purged.
    pub(crate) fn record(&mut self, first: Seq, count: u64) -> Result<()> {
        let mut body = Vec::with_capacity(RANGE_BYTES);
        body.extend_from_slice(&first.to_le_bytes());
        body.extend_from_slice(&count.to_le_bytes());
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        self.file
            .write_all_at(&frame, self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += frame.len() as u64;
        self.ranges.insert(first, count);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
