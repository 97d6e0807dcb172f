//! Retention (SPEC §8): how long each event is kept, and the record of what was purged.
//!
//! Expired events are deleted in whole partitions (a day's segment). The leaf hashes of a
//! purged partition are kept in `pruned.log` (frames `u32 length | u32 crc32 | u64 first seq |
//! u64 count | count × 32-byte leaf hash`), so the one Merkle tree over the whole log, every
//! checkpoint signed before and every consistency proof stay valid, at 32 bytes per purged
//! event instead of the event itself.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::Seq;
use crate::merkle::Hash;
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

/// The purged ranges and their leaf hashes.
pub(crate) struct PrunedFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Leaf hashes by the first seq of each purged range.
    pub(crate) ranges: BTreeMap<Seq, Vec<Hash>>,
}

/// Reads `pruned.log` frames from `bytes`; returns the ranges and the length of the intact part.
pub(crate) fn read_pruned(bytes: &[u8]) -> Result<(BTreeMap<Seq, Vec<Hash>>, usize)> {
    let mut ranges = BTreeMap::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes
            .get(pos + 8..pos + 8 + len)
            .filter(|b| crc32fast::hash(b) == crc && b.len() >= 16)
        else {
            break;
        };
        let first = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        if (body.len() - 16) as u64 != count * 32 {
            return Err(Error::Corrupted(format!(
                "pruned.log: the range at byte {pos} has the wrong number of hashes"
            )));
        }
        let hashes = body[16..]
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        ranges.insert(first, hashes);
        pos += 8 + len;
    }
    Ok((ranges, pos))
}

impl PrunedFile {
    pub(crate) fn open(dir: &Path) -> Result<PrunedFile> {
        let path = dir.join("pruned.log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut bytes = Vec::new();
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        let (ranges, intact) = read_pruned(&bytes)?;
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

    /// Durably records that `first .. first + hashes.len()` is purged.
    pub(crate) fn record(&mut self, first: Seq, hashes: Vec<Hash>) -> Result<()> {
        let mut body = Vec::with_capacity(16 + hashes.len() * 32);
        body.extend_from_slice(&first.to_le_bytes());
        body.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
        for hash in &hashes {
            body.extend_from_slice(hash);
        }
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        self.file
            .write_all_at(&frame, self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += frame.len() as u64;
        self.ranges.insert(first, hashes);
        Ok(())
    }

    /// Purged ranges as `first → count`.
    pub(crate) fn counts(&self) -> BTreeMap<Seq, u64> {
        self.ranges
            .iter()
            .map(|(first, hashes)| (*first, hashes.len() as u64))
            .collect()
    }
}

#[cfg(test)]
mod tests;
