//! Posting lists: sorted event ordinals of one partition, as delta-coded varints on disk, and
//! the set operations a search runs on them.

use crate::{Error, Result};

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a varint at `*pos`, moving past it.
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*pos)
            .ok_or_else(|| Error::Corrupted(format!("varint cut short at byte {pos}")))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Corrupted(format!("varint too long at byte {pos}")))
}

/// Appends a strictly increasing list as the first value, then the gaps.
pub(crate) fn encode(list: &[u32], out: &mut Vec<u8>) {
    let mut previous = None;
    for value in list {
        match previous {
            None => put_varint(out, u64::from(*value)),
            Some(p) => {
                debug_assert!(*value > p, "postings are strictly increasing");
                put_varint(out, u64::from(value - p));
            }
        }
        previous = Some(*value);
    }
}

/// Decodes a whole list written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    let mut value: u64 = 0;
    while pos < bytes.len() {
        let step = get_varint(bytes, &mut pos)?;
        value = if out.is_empty() {
            step
        } else {
            value
                .checked_add(step)
                .filter(|_| step > 0)
                .ok_or_else(|| {
                    Error::Corrupted(format!("posting list not increasing at byte {pos}"))
                })?
        };
        out.push(
            u32::try_from(value)
                .map_err(|_| Error::Corrupted(format!("posting {value} out of range")))?,
        );
    }
    Ok(out)
}

/// How many values an encoded list holds — one varint each, so the bytes that end one (high
/// bit clear) — without decoding it; `None` when its last varint is cut short.
pub(crate) fn count(bytes: &[u8]) -> Option<u64> {
    if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Some(bytes.iter().filter(|b| **b & 0x80 == 0).count() as u64)
}

/// The sorted union of sorted lists, without repeats.
pub(crate) fn union(lists: Vec<Vec<u32>>) -> Vec<u32> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.into_iter().next().expect("one list"),
        _ => {
            let mut all: Vec<u32> = lists.into_iter().flatten().collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

/// The values of sorted `a` also in sorted `b`.
pub(crate) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // Galloping pays when one list is much shorter; a merge otherwise.
    if small.len() * 16 < large.len() {
        let mut from = 0;
        return small
            .iter()
            .copied()
            .filter(|v| {
                let found = large[from..].binary_search(v);
                let (hit, at) = match found {
                    Ok(at) => (true, at),
                    Err(at) => (false, at),
                };
                from += at;
                hit
            })
            .collect();
    }
    let mut out = Vec::with_capacity(small.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
