//! Sorted tables inside a sealed partition's index file: keys (bytes, strictly increasing)
//! mapped to two integers, in blocks of [`BLOCK_ENTRIES`] with prefix-compressed keys, and a
//! block index of first keys. A lookup is a binary search in memory, then a read of one block
//! of the block index (in the [`Layout::Nested`] layout) and of one block; a prefix scan reads
//! consecutive blocks.
//!
//! Section layout:
//!
//! ```text
//! blocks, either
//!   Prefixed: entries (varint shared prefix | varint suffix length | suffix | varint a | varint b)
//!   Numbers:  varint entries | u8 gap bits | u8 value bits | varint first key
//!             | varint offset of the block's first list (0 when it has none)
//!             | (entries − 1) gaps, then entries values, bit-packed (below)
//! block index, either
//!   Flat:   per block (varint key length | first key | varint block offset)
//!   Nested: a Flat table section of each block's first key → (block offset, block length)
//! u32 number of blocks | u32 offset of the block index
//! ```
//!
//! The first entry of every block shares nothing with the one before, so each block decodes
//! alone. A table of [`Entries::Numbers`] (the record-id numbers of index files of version 4)
//! has 4-byte big-endian keys whose values are (ordinal, 0) or (offset, length) of posting
//! lists written back to back in key order: each key is the gap from the one before less one,
//! each value an ordinal `<< 1` or a list's length `<< 1 | 1` (its offset follows from the
//! block's first and the lengths before it), every gap in as many bits as the block's largest
//! needs and every value likewise, least significant bit first: 2.3–2.6 bytes an entry in the
//! bench's partitions, where prefix-compressed keys and varints took 7.3.
//!
//! A flat block index is read and parsed whole when the table is opened: at 1,000,000 events
//! a record table's is 5,200–5,700 blocks, 42–46 kB, and 0.1–0.25 ms to read and parse, paid
//! by the first search of each of the 90 partitions (10 times that at 10,000,000 events).
//! A nested one reads only its own block index when opened (a key for every 64 blocks), so a
//! table opens in time independent of its size, for a second small read per lookup.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::handles::Handle;
use crate::postings::{get_varint, put_varint};
use crate::{Error, Result};

/// Entries per block: a block is a few hundred bytes to a few KiB, one read.
const BLOCK_ENTRIES: usize = 64;
const TRAILER_BYTES: usize = 8;

/// How a table section finds its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Every block's first key and offset, read into memory whole when the table is opened
    /// (index files of version 2, and the block index of a nested table).
    Flat,
    /// A flat table of every block's first key → (offset, length): opening a table reads only
    /// that table's block index.
    Nested,
}

/// How a table's blocks hold their entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Entries {
    /// Any keys, prefix-compressed, and their values as varints.
    #[default]
    Prefixed,
    /// 4-byte big-endian keys and posting-list values, bit-packed (the module's comment).
    Numbers,
}

/// Builds a table section.
#[derive(Default)]
pub(crate) struct TableWriter {
    entries: Entries,
    out: Vec<u8>,
    in_block: usize,
    previous: Vec<u8>,
    /// (first key, offset) of each block.
    blocks: Vec<(Vec<u8>, u32)>,
    /// [`Entries::Numbers`]: the block being gathered, (key, packed value) of each entry.
    numbers: Vec<(u32, u64)>,
    /// Where the gathered block's first list starts.
    first_list: Option<u64>,
    /// Where the next list must start.
    next_list: Option<u64>,
}

impl TableWriter {
    /// A writer of a table whose entries are `entries`.
    pub(crate) fn new(entries: Entries) -> TableWriter {
        TableWriter {
            entries,
            ..TableWriter::default()
        }
    }

    /// Adds `key → (a, b)`; keys must come in strictly increasing order. In a table of
    /// [`Entries::Numbers`] a key is 4 bytes and `(a, b)` is `(ordinal, 0)` or the `(offset,
    /// length)` of a list that starts where the one before ended.
    pub(crate) fn add(&mut self, key: &[u8], a: u64, b: u64) {
        assert!(
            (self.blocks.is_empty() && self.numbers.is_empty()) || key > self.previous.as_slice(),
            "table keys must be strictly increasing"
        );
        match self.entries {
            Entries::Prefixed => self.add_prefixed(key, a, b),
            Entries::Numbers => self.add_number(key, a, b),
        }
        self.previous.clear();
        self.previous.extend_from_slice(key);
    }

    fn add_prefixed(&mut self, key: &[u8], a: u64, b: u64) {
        let shared = if self.in_block == 0 || self.in_block == BLOCK_ENTRIES {
            self.blocks.push((key.to_vec(), self.out.len() as u32));
            self.in_block = 0;
            0
        } else {
            key.iter()
                .zip(&self.previous)
                .take_while(|(x, y)| x == y)
                .count()
        };
        put_varint(&mut self.out, shared as u64);
        put_varint(&mut self.out, (key.len() - shared) as u64);
        self.out.extend_from_slice(&key[shared..]);
        put_varint(&mut self.out, a);
        put_varint(&mut self.out, b);
        self.in_block += 1;
    }

    fn add_number(&mut self, key: &[u8], a: u64, b: u64) {
        let key = u32::from_be_bytes(key.try_into().expect("a number table's keys are 4 bytes"));
        let value = if b == 0 {
            a << 1
        } else {
            assert!(
                self.next_list.is_none_or(|next| next == a),
                "a number table's lists are back to back"
            );
            self.first_list.get_or_insert(a);
            self.next_list = Some(a + b);
            b << 1 | 1
        };
        self.numbers.push((key, value));
        if self.numbers.len() == BLOCK_ENTRIES {
            self.flush_numbers();
        }
    }

    /// Writes the gathered block of a number table.
    fn flush_numbers(&mut self) {
        let Some(&(first, _)) = self.numbers.first() else {
            return;
        };
        self.blocks
            .push((first.to_be_bytes().to_vec(), self.out.len() as u32));
        let gaps: Vec<u64> = self
            .numbers
            .windows(2)
            .map(|pair| u64::from(pair[1].0 - pair[0].0 - 1))
            .collect();
        let gap_bits = width(gaps.iter().copied());
        let value_bits = width(self.numbers.iter().map(|(_, v)| *v));
        put_varint(&mut self.out, self.numbers.len() as u64);
        self.out.push(gap_bits);
        self.out.push(value_bits);
        put_varint(&mut self.out, u64::from(first));
        put_varint(&mut self.out, self.first_list.take().unwrap_or(0));
        let mut packer = BitPacker::default();
        for gap in gaps {
            packer.put(gap, gap_bits, &mut self.out);
        }
        for (_, value) in self.numbers.drain(..) {
            packer.put(value, value_bits, &mut self.out);
        }
        packer.finish(&mut self.out);
    }

    /// The section's bytes, its block index in `layout`.
    pub(crate) fn finish(mut self, layout: Layout) -> Vec<u8> {
        self.flush_numbers();
        let index_at = self.out.len() as u32;
        match layout {
            Layout::Flat => {
                for (key, offset) in &self.blocks {
                    put_varint(&mut self.out, key.len() as u64);
                    self.out.extend_from_slice(key);
                    put_varint(&mut self.out, u64::from(*offset));
                }
            }
            Layout::Nested => {
                let mut index = TableWriter::default();
                for (k, (key, offset)) in self.blocks.iter().enumerate() {
                    let end = self.blocks.get(k + 1).map_or(index_at, |(_, next)| *next);
                    index.add(key, u64::from(*offset), u64::from(end - offset));
                }
                self.out.extend_from_slice(&index.finish(Layout::Flat));
            }
        }
        self.out
            .extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&index_at.to_le_bytes());
        self.out
    }
}

/// The bits the largest of `values` needs.
fn width(values: impl Iterator<Item = u64>) -> u8 {
    values.map(|v| 64 - v.leading_zeros()).max().unwrap_or(0) as u8
}

/// Writes values of up to 64 bits each, least significant bit first.
#[derive(Default)]
struct BitPacker {
    pending: u128,
    bits: u32,
}

impl BitPacker {
    fn put(&mut self, value: u64, bits: u8, out: &mut Vec<u8>) {
        debug_assert!(
            bits == 64 || value >> bits == 0,
            "{value} fits in {bits} bits"
        );
        self.pending |= u128::from(value) << self.bits;
        self.bits += u32::from(bits);
        while self.bits >= 8 {
            out.push(self.pending as u8);
            self.pending >>= 8;
            self.bits -= 8;
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        if self.bits > 0 {
            out.push(self.pending as u8);
        }
    }
}

/// The `bits`-bit value at bit `at` of `bytes`, least significant bit first; `None` past the
/// end.
fn bits_at(bytes: &[u8], at: usize, bits: u8) -> Option<u64> {
    if bits == 0 {
        return Some(0);
    }
    let end = at.checked_add(usize::from(bits))?;
    if end > bytes.len() * 8 {
        return None;
    }
    let mut word = [0u8; 16];
    let from = at / 8;
    let take = (bytes.len() - from).min(16);
    word[..take].copy_from_slice(&bytes[from..from + take]);
    let value = u128::from_le_bytes(word) >> (at % 8);
    Some((value & ((1u128 << bits) - 1)) as u64)
}

/// Damage found in a table of the index file at `path`.
fn corrupt(path: &Path, what: &str) -> Error {
    Error::Corrupted(format!("{}: table {what}", path.display()))
}

/// A table section of an index file.
pub(crate) struct Table {
    file: Arc<Handle>,
    /// Where the section starts in the file.
    base: u64,
    /// Where its blocks end (and its block index starts) in the section.
    blocks_end: u64,
    blocks: Blocks,
    entries: Entries,
}

/// How a [`Table`] finds its blocks.
enum Blocks {
    /// Every block's first key and offset. Block `i`'s first key is
    /// `keys[key_ends[i-1]..key_ends[i]]`; `offsets` ends with the end of the last block.
    Listed {
        keys: Vec<u8>,
        key_ends: Vec<u32>,
        offsets: Vec<u32>,
    },
    /// A flat table of every block's first key → (offset, length).
    Indexed(Box<Table>),
}

impl Table {
    /// Opens the table section at `base .. base + len` of `file`, whose block index is in
    /// `layout` (a flat one is read into memory, a nested one is opened as a table of its own)
    /// and whose blocks hold `entries`.
    pub(crate) fn open(
        file: Arc<Handle>,
        base: u64,
        len: u64,
        layout: Layout,
        entries: Entries,
    ) -> Result<Table> {
        let path = file.path();
        let corrupt = |what: &str| corrupt(path, what);
        if len < TRAILER_BYTES as u64 {
            return Err(corrupt("too short"));
        }
        let mut trailer = [0u8; TRAILER_BYTES];
        file.file()?
            .read_exact_at(&mut trailer, base + len - TRAILER_BYTES as u64)
            .map_err(|e| Error::io(path, e))?;
        let n_blocks = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
        let index_at = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")) as u64;
        if index_at > len - TRAILER_BYTES as u64 {
            return Err(corrupt("index out of bounds"));
        }
        let index_len = len - TRAILER_BYTES as u64 - index_at;
        let blocks = match layout {
            Layout::Nested => Blocks::Indexed(Box::new(Table::open(
                file.clone(),
                base + index_at,
                index_len,
                Layout::Flat,
                Entries::Prefixed,
            )?)),
            Layout::Flat => {
                let mut index = vec![0u8; index_len as usize];
                file.file()?
                    .read_exact_at(&mut index, base + index_at)
                    .map_err(|e| Error::io(path, e))?;
                let mut keys = Vec::new();
                let mut key_ends = Vec::with_capacity(n_blocks);
                let mut offsets = Vec::with_capacity(n_blocks + 1);
                let mut pos = 0;
                for _ in 0..n_blocks {
                    let key_len = get_varint(&index, &mut pos)? as usize;
                    let key = index
                        .get(pos..pos + key_len)
                        .ok_or_else(|| corrupt("index cut short"))?;
                    keys.extend_from_slice(key);
                    key_ends.push(keys.len() as u32);
                    pos += key_len;
                    let offset = get_varint(&index, &mut pos)?;
                    if offset > index_at || offsets.last().is_some_and(|o| u64::from(*o) >= offset)
                    {
                        return Err(corrupt("block offsets out of order"));
                    }
                    offsets.push(offset as u32);
                }
                offsets.push(index_at as u32);
                Blocks::Listed {
                    keys,
                    key_ends,
                    offsets,
                }
            }
        };
        Ok(Table {
            file,
            base,
            blocks_end: index_at,
            blocks,
            entries,
        })
    }

    fn corrupt(&self, what: &str) -> Error {
        corrupt(self.file.path(), what)
    }

    /// The block that would hold `key` (the last whose first key is ≤ it), if any, then, when
    /// `and_prefixed`, every block after it whose first key starts with `key` (those a prefix
    /// scan for `key` reads): as (start, end) in the section.
    fn blocks_for(&self, key: &[u8], and_prefixed: bool) -> Result<Vec<(u64, u64)>> {
        let mut found = Vec::new();
        match &self.blocks {
            Blocks::Listed {
                keys,
                key_ends,
                offsets,
            } => {
                let first_key = |block: usize| {
                    let start = block.checked_sub(1).map_or(0, |b| key_ends[b] as usize);
                    &keys[start..key_ends[block] as usize]
                };
                let (mut low, mut high) = (0, key_ends.len());
                while low < high {
                    let middle = (low + high) / 2;
                    if first_key(middle) <= key {
                        low = middle + 1;
                    } else {
                        high = middle;
                    }
                }
                // `low` is the first block after the one that would hold `key`.
                let span =
                    |block: usize| (u64::from(offsets[block]), u64::from(offsets[block + 1]));
                if let Some(floor) = low.checked_sub(1) {
                    found.push(span(floor));
                }
                if and_prefixed {
                    let mut block = low;
                    while block < key_ends.len() && first_key(block).starts_with(key) {
                        found.push(span(block));
                        block += 1;
                    }
                }
            }
            Blocks::Indexed(index) => {
                if let Some((offset, len)) = index.floor(key)? {
                    found.push((offset, offset.saturating_add(len)));
                }
                if and_prefixed {
                    index.prefix(key, &mut |first, offset, len| {
                        // A first key equal to `key` is the block the floor found.
                        if first > key {
                            found.push((offset, offset.saturating_add(len)));
                        }
                    })?;
                }
            }
        }
        Ok(found)
    }

    /// Decodes the block at `start .. end` of the section, visiting each (key, a, b) until
    /// `visit` returns false.
    fn scan_block(
        &self,
        (start, end): (u64, u64),
        visit: &mut dyn FnMut(&[u8], u64, u64) -> bool,
    ) -> Result<()> {
        if start > end || end > self.blocks_end {
            return Err(self.corrupt("block out of bounds"));
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file
            .file()?
            .read_exact_at(&mut bytes, self.base + start)
            .map_err(|e| Error::io(self.file.path(), e))?;
        match self.entries {
            Entries::Prefixed => self.scan_prefixed(&bytes, visit),
            Entries::Numbers => self.scan_numbers(&bytes, visit),
        }
    }

    fn scan_prefixed(
        &self,
        bytes: &[u8],
        visit: &mut dyn FnMut(&[u8], u64, u64) -> bool,
    ) -> Result<()> {
        let mut key = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let shared = get_varint(bytes, &mut pos)? as usize;
            let suffix_len = get_varint(bytes, &mut pos)? as usize;
            if shared > key.len() {
                return Err(self.corrupt("key shares more than the key before"));
            }
            key.truncate(shared);
            let suffix = bytes
                .get(pos..pos + suffix_len)
                .ok_or_else(|| self.corrupt("block cut short"))?;
            key.extend_from_slice(suffix);
            pos += suffix_len;
            let a = get_varint(bytes, &mut pos)?;
            let b = get_varint(bytes, &mut pos)?;
            if !visit(&key, a, b) {
                break;
            }
        }
        Ok(())
    }

    fn scan_numbers(
        &self,
        bytes: &[u8],
        visit: &mut dyn FnMut(&[u8], u64, u64) -> bool,
    ) -> Result<()> {
        let mut pos = 0;
        let n = get_varint(bytes, &mut pos)?;
        let (&gap_bits, &value_bits) = bytes
            .get(pos)
            .zip(bytes.get(pos + 1))
            .ok_or_else(|| self.corrupt("block cut short"))?;
        pos += 2;
        if n == 0 || n > BLOCK_ENTRIES as u64 || gap_bits > 32 || value_bits > 64 {
            return Err(self.corrupt("block header malformed"));
        }
        let mut key = u32::try_from(get_varint(bytes, &mut pos)?)
            .map_err(|_| self.corrupt("key too large"))?;
        let mut list_at = get_varint(bytes, &mut pos)?;
        let packed = &bytes[pos..];
        let n = n as usize;
        let values_at = (n - 1) * usize::from(gap_bits);
        if (values_at + n * usize::from(value_bits)).div_ceil(8) != packed.len() {
            return Err(self.corrupt("block of the wrong length"));
        }
        let bit = |at: usize, bits: u8| bits_at(packed, at, bits).expect("length checked");
        for i in 0..n {
            if i > 0 {
                let gap = bit((i - 1) * usize::from(gap_bits), gap_bits);
                key = u32::try_from(gap)
                    .ok()
                    .and_then(|gap| key.checked_add(gap)?.checked_add(1))
                    .ok_or_else(|| self.corrupt("key too large"))?;
            }
            let value = bit(values_at + i * usize::from(value_bits), value_bits);
            let (a, b) = if value & 1 == 0 {
                (value >> 1, 0)
            } else if value == 1 {
                return Err(self.corrupt("list of no bytes"));
            } else {
                let at = list_at;
                list_at = list_at
                    .checked_add(value >> 1)
                    .ok_or_else(|| self.corrupt("list offset too large"))?;
                (at, value >> 1)
            };
            if !visit(&key.to_be_bytes(), a, b) {
                break;
            }
        }
        Ok(())
    }

    /// The values of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<(u64, u64)>> {
        let Some(block) = self.blocks_for(key, false)?.first().copied() else {
            return Ok(None);
        };
        let mut found = None;
        self.scan_block(block, &mut |k, a, b| {
            if k == key {
                found = Some((a, b));
            }
            k < key
        })?;
        Ok(found)
    }

    /// The values of the last entry whose key is ≤ `key`, if any.
    fn floor(&self, key: &[u8]) -> Result<Option<(u64, u64)>> {
        let Some(block) = self.blocks_for(key, false)?.first().copied() else {
            return Ok(None);
        };
        let mut last = None;
        self.scan_block(block, &mut |k, a, b| {
            if k > key {
                return false;
            }
            last = Some((a, b));
            true
        })?;
        Ok(last)
    }

    /// Visits every entry whose key starts with `prefix`, in key order.
    pub(crate) fn prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], u64, u64),
    ) -> Result<()> {
        for block in self.blocks_for(prefix, true)? {
            let mut past = false;
            self.scan_block(block, &mut |k, a, b| {
                if k.starts_with(prefix) {
                    visit(k, a, b);
                } else if k > prefix {
                    past = true;
                    return false;
                }
                true
            })?;
            if past {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
