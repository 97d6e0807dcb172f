//! What a baseline (the SQL audit table a user would pick instead of Custos) must do, so every
//! scenario runs the same workload and queries on each.

use std::time::{Duration, Instant};

use custos_audit::AuditEvent;
use uuid::Uuid;

pub(crate) use crate::workload::DAY_US;

/// How a baseline is loaded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loading {
    /// As B1 measures ingest: each batch of `batch` events one durable transaction, the
    /// indexes kept up as rows arrive.
    Durable { batch: usize },
    /// As B3 wants its data loaded, quickly: no sync per batch and the indexes built after the
    /// load ([`Baseline::finish_load`]), then statistics gathered. Durability per batch is B1's
    /// question, not B3's.
    Bulk,
}

/// A SQL audit store under test beside Custos.
pub(crate) trait Baseline {
    /// Stores one batch (one transaction; durable when loading [`Loading::Durable`]).
    fn insert_batch(&mut self, events: &[AuditEvent]) -> anyhow::Result<()>;
    /// After a [`Loading::Bulk`] load: builds the indexes, gathers statistics and makes
    /// commits durable again.
    fn finish_load(&mut self) -> anyhow::Result<()>;
    /// Bytes it takes on disk, indexes included.
    fn bytes(&mut self) -> anyhow::Result<u64>;
    /// q1: events that touched `record` since `since`: count and first 100 newest, or every one.
    fn q1(&mut self, record: Uuid, since: i64, first_page: bool) -> anyhow::Result<usize>;
    /// q2: `user`'s newest 100 since `since`.
    fn q2(&mut self, user: &str, since: i64) -> anyhow::Result<usize>;
    /// q3: exports since `since`, count and newest 100.
    fn q3(&mut self, since: i64) -> anyhow::Result<usize>;
    /// q4: "accessed out-of-box entity" per day since `since`.
    fn q4(&mut self, since: i64) -> anyhow::Result<usize>;
    /// q5: newest 100 containing `text`.
    fn q5(&mut self, text: &str, since: i64) -> anyhow::Result<usize>;
}

/// Stores `events` in `baseline`, `batch` per transaction (one writer, as both allow);
/// returns the time spent storing (not generating).
pub(crate) fn load(
    baseline: &mut dyn Baseline,
    events: impl Iterator<Item = AuditEvent>,
    batch: usize,
) -> anyhow::Result<Duration> {
    let mut elapsed = Duration::ZERO;
    let mut pending = Vec::with_capacity(batch);
    let mut flush = |pending: &mut Vec<AuditEvent>| -> anyhow::Result<()> {
        let started = Instant::now();
        baseline.insert_batch(pending)?;
        elapsed += started.elapsed();
        pending.clear();
        Ok(())
    };
    for event in events {
        pending.push(event);
        if pending.len() >= batch {
            flush(&mut pending)?;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending)?;
    }
    Ok(elapsed)
}
