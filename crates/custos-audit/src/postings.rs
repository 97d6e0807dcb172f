//! Posting lists: sorted event ordinals of one partition, as they are written in index files,
//! and the set operations a search runs on them.
//!
//! An index file writes each list of more than one event in one of two ways ([`Lists`]):
//! files of versions 2 to 4 as varints (the first ordinal, then the gaps); files of version 5
//! the same when that takes fewer than [`PACKED_FROM`] bytes, and otherwise as an Elias–Fano
//! list over the partition's ordinals, padded with zeros to at least [`PACKED_FROM`] bytes —
//! so a reader tells the two apart by the list's length alone:
//!
//! ```text
//! varint n | high bits: n + ((events - 1) >> l) bits, padded to a byte
//!          | low bits: n × l bits, padded to a byte | zeros up to PACKED_FROM bytes
//! l = ⌊log2(events / n)⌋ (0 when n ≥ events); ordinal i = (high_i << l) | low_i, where
//! high_i is the position of the i-th set bit of the high bits, less i
//! ```
//!
//! About 2 + log2(events / n) bits an ordinal: a list of thousands of events, most of the
//! bytes of the lists, takes about half its varints' bytes, and its count is its first bytes.

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

/// A list whose varints take at least this many bytes is written packed in [`Lists::Packed`].
const PACKED_FROM: usize = 8;

/// The most bytes [`Lists::count`] reads of a list: a packed list's count is its first varint.
const COUNT_BYTES: usize = 5;

/// How an index file writes its posting lists of more than one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lists {
    /// The first ordinal, then the gaps, as varints (index files of versions 2 to 4).
    Varints,
    /// As varints when they take fewer than [`PACKED_FROM`] bytes, otherwise Elias–Fano over
    /// the partition's ordinals (version 5; the module's documentation has the layout).
    Packed,
}

impl Lists {
    /// Appends the strictly increasing `list` of ordinals below `events`.
    pub(crate) fn encode(self, list: &[u32], events: u32, out: &mut Vec<u8>) {
        let at = out.len();
        encode_varints(list, out);
        if self == Lists::Packed && out.len() - at >= PACKED_FROM {
            out.truncate(at);
            encode_packed(list, events, out);
            out.resize(out.len().max(at + PACKED_FROM), 0);
        }
    }

    /// Decodes a whole list written by [`Lists::encode`] for a partition of `events`.
    pub(crate) fn decode(self, bytes: &[u8], events: u32) -> Result<Vec<u32>> {
        match self {
            Lists::Packed if bytes.len() >= PACKED_FROM => decode_packed(bytes, events),
            _ => decode_varints(bytes),
        }
    }

    /// How many of a list's `len` bytes [`Lists::count`] needs.
    pub(crate) fn count_bytes(self, len: usize) -> usize {
        match self {
            Lists::Packed if len >= PACKED_FROM => len.min(COUNT_BYTES),
            _ => len,
        }
    }

    /// How many ordinals the list of `len` bytes beginning with `head` (its first
    /// [`Lists::count_bytes`]) holds, without decoding it; `None` when it is malformed: a
    /// varint cut short, or a packed list whose length is not its count's.
    pub(crate) fn count(self, head: &[u8], len: usize, events: u32) -> Option<u64> {
        match self {
            Lists::Packed if len >= PACKED_FROM => {
                let n = packed_count(head).ok()?;
                (packed_len(n, events)? == len).then_some(n)
            }
            _ => count_varints(head),
        }
    }
}

/// Appends a strictly increasing list as the first value, then the gaps.
fn encode_varints(list: &[u32], out: &mut Vec<u8>) {
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

/// Decodes a whole list written by [`encode_varints`].
fn decode_varints(bytes: &[u8]) -> Result<Vec<u32>> {
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

/// How many values a list of varints holds — one varint each, so the bytes that end one (high
/// bit clear) — without decoding it; `None` when its last varint is cut short.
fn count_varints(bytes: &[u8]) -> Option<u64> {
    if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Some(bytes.iter().filter(|b| **b & 0x80 == 0).count() as u64)
}

/// The Elias–Fano split of `n` ordinals below `events`: bits of each ordinal kept low, and
/// the bits of the high part, in which each ordinal sets one.
fn split(n: u64, events: u32) -> (u32, u64) {
    let low = (u64::from(events) / n).checked_ilog2().unwrap_or(0);
    (low, n + ((u64::from(events) - 1) >> low))
}

/// The bytes of a packed list of `n` ordinals below `events`, padding included; `None` when
/// no such list exists (none, or more than there are events).
fn packed_len(n: u64, events: u32) -> Option<usize> {
    if n == 0 || n > u64::from(events) {
        return None;
    }
    let (low, high_bits) = split(n, events);
    let natural = varint_len(n) as u64 + high_bits.div_ceil(8) + (n * u64::from(low)).div_ceil(8);
    Some((natural as usize).max(PACKED_FROM))
}

/// The bytes of `value`'s varint.
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros()).div_ceil(7) as usize
}

/// A packed list's count, the varint it begins with, in its shortest form (the one
/// [`put_varint`] writes: [`packed_len`] counts its bytes so).
fn packed_count(bytes: &[u8]) -> Result<u64> {
    let mut pos = 0;
    let n = get_varint(bytes, &mut pos)?;
    if pos != varint_len(n) {
        return Err(Error::Corrupted(
            "packed posting list's count not in its shortest form".into(),
        ));
    }
    Ok(n)
}

/// Appends `list` as Elias–Fano over `0..events`, without the padding.
fn encode_packed(list: &[u32], events: u32, out: &mut Vec<u8>) {
    let n = list.len() as u64;
    assert!(
        list.last().is_some_and(|last| *last < events),
        "ordinals lie inside their partition"
    );
    let (low, high_bits) = split(n, events);
    put_varint(out, n);
    let high_at = out.len();
    out.resize(high_at + high_bits.div_ceil(8) as usize, 0);
    for (i, value) in list.iter().enumerate() {
        let bit = (u64::from(*value) >> low) + i as u64;
        out[high_at + (bit / 8) as usize] |= 1 << (bit % 8);
    }
    if low > 0 {
        let mask = (1u64 << low) - 1;
        let (mut acc, mut bits) = (0u64, 0u32);
        for value in list {
            acc |= (u64::from(*value) & mask) << bits;
            bits += low;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
    }
}

/// Decodes a list written by [`encode_packed`] and padded: every byte accounted for, the
/// padding zero, the ordinals strictly increasing and inside the partition.
fn decode_packed(bytes: &[u8], events: u32) -> Result<Vec<u32>> {
    let bad = |what: &str| Error::Corrupted(format!("packed posting list {what}"));
    let n = packed_count(bytes)?;
    if packed_len(n, events) != Some(bytes.len()) {
        return Err(bad("of the wrong length for its count"));
    }
    let pos = varint_len(n);
    let (low, high_bits) = split(n, events);
    let high = &bytes[pos..pos + high_bits.div_ceil(8) as usize];
    let lows =
        &bytes[pos + high.len()..pos + high.len() + (n * u64::from(low)).div_ceil(8) as usize];
    if bytes[pos + high.len() + lows.len()..]
        .iter()
        .any(|b| *b != 0)
    {
        return Err(bad("padded with other than zeros"));
    }
    // The high bits, checked first so that the loops below need no checks: exactly `n` set,
    // none past the part, and the last event's high part inside the partition.
    let ones: u64 = high.iter().map(|b| u64::from(b.count_ones())).sum();
    let past = high_bits % 8;
    if ones != n || (past != 0 && high[high.len() - 1] >> past != 0) {
        return Err(bad("with a count of events other than its own"));
    }
    let (k, byte) = high
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| **b != 0)
        .expect("n > 0 bits are set");
    let last_bit = k as u64 * 8 + 7 - u64::from(byte.leading_zeros());
    if (last_bit - (n - 1)) << low >= u64::from(events) {
        return Err(bad("with an event outside its partition"));
    }
    let used = n * u64::from(low);
    if used % 8 != 0 && lows[lows.len() - 1] >> (used % 8) != 0 {
        return Err(bad("padded with other than zeros"));
    }
    let mask = (1u64 << low) - 1;
    // Event i's low bits are read as the 8 bytes from the one they start in.
    let whole = lows.len().saturating_sub(7);
    let low_bits = |i: usize| {
        let bit = i * low as usize;
        let at = bit / 8;
        let word = if at < whole {
            u64::from_le_bytes(lows[at..at + 8].try_into().expect("8"))
        } else {
            let mut word = [0u8; 8];
            word[..lows.len() - at].copy_from_slice(&lows[at..]);
            u64::from_le_bytes(word)
        };
        (word >> (bit % 8)) & mask
    };
    let mut out: Vec<u32> = Vec::with_capacity(n as usize);
    // Strictly increasing, checked as it is read. Each fits a `u32`: its high part is no more
    // than the last one's, checked above, and its low bits stay below the next multiple of
    // 2^low.
    let mut increasing = true;
    let mut next = 0u64;
    for (k, chunk) in high.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let mut set = u64::from_le_bytes(word);
        while set != 0 {
            let bit = k as u64 * 64 + u64::from(set.trailing_zeros());
            set &= set - 1;
            let i = out.len();
            // The i-th set bit is at i or later.
            let high = (bit - i as u64) << low;
            let value = if low > 0 { high | low_bits(i) } else { high };
            increasing &= value >= next;
            next = value + 1;
            out.push(value as u32);
        }
    }
    if !increasing || out.last().is_some_and(|v| *v >= events) {
        return Err(bad("not increasing inside its partition"));
    }
    Ok(out)
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
