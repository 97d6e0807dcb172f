//! A batch of events as one self-contained message: how a cluster node's group commit travels
//! through JetStream to every audit node (docs/scale-out.md).
//!
//! A message is `CAB1`, a varint count, then each event as a varint length and the log's own
//! record encoding (`codec.rs`), its record ids and strings numbered within the message alone:
//! a value's first appearance is inline, later ones refer back to it. So a message decodes with
//! nothing but itself, exactly — no text is reformatted, so the canonical JSON and the Merkle
//! leaf are the same on every node — and takes the space of the log's records, not of JSON.
//! A message is input: every length is checked and any damage is an error, never a panic.

use crate::codec::{Encoder, decode_next, put_varint};
use crate::event::AuditEvent;
use crate::ids::{IdDict, IdTable};
use crate::{Error, Result};

/// The first bytes of a message: the format and its version.
const MAGIC: &[u8; 4] = b"CAB1";

/// The bytes of `events` as one message.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Vec<u8> {
    let events: Vec<&AuditEvent> = events.into_iter().collect();
    let mut encoder = Encoder::default();
    let mut ids = IdDict::default();
    let mut record = Vec::new();
    let mut numbers = Vec::new();
    let mut out = Vec::with_capacity(16 + 512 * events.len());
    out.extend_from_slice(MAGIC);
    put_varint(&mut out, events.len() as u64);
    for event in events {
        record.clear();
        encoder.encode(event, &mut ids, &mut record, &mut numbers);
        put_varint(&mut out, record.len() as u64);
        out.extend_from_slice(&record);
    }
    out
}

/// The most bytes `event` can take in a message (to cut messages below a size limit): its
/// record alone, and room for its length and for references that grow longer than the inline
/// values they replace (one byte per string at most: an inline string takes at least two, a
/// reference at most three in a message of a few thousand events).
pub fn batch_len_max(event: &AuditEvent) -> usize {
    let mut record = Vec::new();
    Encoder::default().encode(event, &mut IdDict::default(), &mut record, &mut Vec::new());
    record.len() + 10 + 24 + 3 * event.changes.len()
}

/// The events of a message.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<AuditEvent>> {
    let damaged = |why: String| Error::Corrupted(format!("audit message: {why}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("not a Custos audit message (bad magic)".into()))?;
    let mut at = 0usize;
    let varint = |at: &mut usize| -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *rest
                .get(*at)
                .ok_or_else(|| damaged(format!("cut short at byte {}", *at + MAGIC.len())))?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(damaged("a varint longer than 64 bits".into()))
    };
    let count = varint(&mut at)?;
    // Every record takes at least 20 bytes, so a count larger than that allows is damage.
    if count.saturating_mul(20) > rest.len() as u64 {
        return Err(damaged(format!(
            "{count} events cannot fit in {} bytes",
            bytes.len()
        )));
    }
    let mut ids = IdTable::default();
    let mut strings: Vec<String> = Vec::new();
    let mut events = Vec::with_capacity(count as usize);
    for n in 0..count {
        let len = varint(&mut at)?;
        let record = at
            .checked_add(usize::try_from(len).unwrap_or(usize::MAX))
            .and_then(|end| rest.get(at..end))
            .ok_or_else(|| damaged(format!("event {n} runs past the end")))?;
        at += record.len();
        let (event, _) = decode_next(record, &mut ids, &mut strings)
            .map_err(|e| damaged(format!("event {n}: {e}")))?;
        events.push(event);
    }
    if at != rest.len() {
        return Err(damaged(format!(
            "{} bytes after the last event",
            rest.len() - at
        )));
    }
    Ok(events)
}

#[cfg(test)]
mod tests;
