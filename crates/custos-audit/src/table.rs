//! Sorted tables inside a sealed partition's index file: keys (bytes, strictly increasing)
//! mapped to two integers, in blocks of [`BLOCK_ENTRIES`] with prefix-compressed keys, and a
//! block index of first keys that is held in memory. A lookup is a binary search in memory
//! and one read of one block; a prefix scan reads consecutive blocks.
//!
//! Section layout:
//!
//! ```text
//! blocks: entries (varint shared prefix | varint suffix length | suffix | varint a | varint b)
//! block index: per block (varint key length | first key | varint block offset)
//! u32 number of blocks | u32 offset of the block index
//! ```
//!
//! The first entry of every block shares nothing with the one before, so each block decodes
//! alone.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::postings::{get_varint, put_varint};
use crate::{Error, Result};

/// Entries per block: a block is a few hundred bytes to a few KiB, one read.
const BLOCK_ENTRIES: usize = 64;
const TRAILER_BYTES: usize = 8;

/// Builds a table section.
#[derive(Default)]
pub(crate) struct TableWriter {
    out: Vec<u8>,
    in_block: usize,
    previous: Vec<u8>,
    /// (first key, offset) of each block.
    blocks: Vec<(Vec<u8>, u32)>,
}

impl TableWriter {
    /// Adds `key → (a, b)`; keys must come in strictly increasing order.
    pub(crate) fn add(&mut self, key: &[u8], a: u64, b: u64) {
        assert!(
            self.blocks.is_empty() || key > self.previous.as_slice(),
            "table keys must be strictly increasing"
        );
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
        self.previous.clear();
        self.previous.extend_from_slice(key);
    }

    /// The section's bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let index_at = self.out.len() as u32;
        for (key, offset) in &self.blocks {
            put_varint(&mut self.out, key.len() as u64);
            self.out.extend_from_slice(key);
            put_varint(&mut self.out, u64::from(*offset));
        }
        self.out
            .extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&index_at.to_le_bytes());
        self.out
    }
}

/// A table section of an index file, its block index in memory.
pub(crate) struct Table {
    file: Arc<File>,
    path: PathBuf,
    /// Where the section starts in the file.
    base: u64,
    /// First keys of the blocks, back to back; block `i`'s is `keys[key_ends[i-1]..key_ends[i]]`.
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    /// Block offsets in the section, and the block index's offset last.
    offsets: Vec<u32>,
}

impl Table {
    /// Reads the block index of the table section at `base .. base + len` of `file`.
    pub(crate) fn open(file: Arc<File>, path: PathBuf, base: u64, len: u64) -> Result<Table> {
        let corrupt = |what: &str| Error::Corrupted(format!("{}: table {what}", path.display()));
        if len < TRAILER_BYTES as u64 {
            return Err(corrupt("too short"));
        }
        let mut trailer = [0u8; TRAILER_BYTES];
        file.read_exact_at(&mut trailer, base + len - TRAILER_BYTES as u64)
            .map_err(|e| Error::io(&path, e))?;
        let n_blocks = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
        let index_at = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")) as u64;
        if index_at > len - TRAILER_BYTES as u64 {
            return Err(corrupt("index out of bounds"));
        }
        let mut index = vec![0u8; (len - TRAILER_BYTES as u64 - index_at) as usize];
        file.read_exact_at(&mut index, base + index_at)
            .map_err(|e| Error::io(&path, e))?;
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
            if offset > index_at || offsets.last().is_some_and(|o| u64::from(*o) >= offset) {
                return Err(corrupt("block offsets out of order"));
            }
            offsets.push(offset as u32);
        }
        offsets.push(index_at as u32);
        Ok(Table {
            file,
            path,
            base,
            keys,
            key_ends,
            offsets,
        })
    }

    fn first_key(&self, block: usize) -> &[u8] {
        let start = if block == 0 {
            0
        } else {
            self.key_ends[block - 1] as usize
        };
        &self.keys[start..self.key_ends[block] as usize]
    }

    /// The block that would hold `key` (the last whose first key is ≤ it), if any.
    fn block_for(&self, key: &[u8]) -> Option<usize> {
        let (mut low, mut high) = (0, self.key_ends.len());
        while low < high {
            let middle = (low + high) / 2;
            if self.first_key(middle) <= key {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1)
    }

    /// Decodes block `block`, visiting each (key, a, b) until `visit` returns false; returns
    /// whether it ran to the end.
    fn scan_block(
        &self,
        block: usize,
        visit: &mut dyn FnMut(&[u8], u64, u64) -> bool,
    ) -> Result<bool> {
        let (start, end) = (self.offsets[block], self.offsets[block + 1]);
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut bytes, self.base + u64::from(start))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut key = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let shared = get_varint(&bytes, &mut pos)? as usize;
            let suffix_len = get_varint(&bytes, &mut pos)? as usize;
            if shared > key.len() {
                return Err(Error::Corrupted(format!(
                    "{}: table key shares more than the key before",
                    self.path.display()
                )));
            }
            key.truncate(shared);
            let suffix = bytes.get(pos..pos + suffix_len).ok_or_else(|| {
                Error::Corrupted(format!("{}: table block cut short", self.path.display()))
            })?;
            key.extend_from_slice(suffix);
            pos += suffix_len;
            let a = get_varint(&bytes, &mut pos)?;
            let b = get_varint(&bytes, &mut pos)?;
            if !visit(&key, a, b) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The values of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<(u64, u64)>> {
        let Some(block) = self.block_for(key) else {
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

    /// Visits every entry whose key starts with `prefix`, in key order.
    pub(crate) fn prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], u64, u64),
    ) -> Result<()> {
        let mut block = self.block_for(prefix).unwrap_or(0);
        while block < self.key_ends.len() {
            let mut past = false;
            let ran_out = self.scan_block(block, &mut |k, a, b| {
                if k.starts_with(prefix) {
                    visit(k, a, b);
                } else if k > prefix {
                    past = true;
                    return false;
                }
                true
            })?;
            if past || !ran_out {
                return Ok(());
            }
            block += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
