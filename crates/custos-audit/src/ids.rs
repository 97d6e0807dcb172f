//! The record-id dictionary: every record id the log has seen gets a dense number, once, for the
//! life of the log (`ids.dat`: 16 bytes per id, number = position).
//!
//! Record ids are the volume of the log (a retrieve multiple lists up to 5,000) and random
//! GUIDs do not compress; numbering them once per log, not once per partition, stores each
//! GUID once however many partitions see it, and lets the index key its postings by number.
//!
//! The log stays self-contained: a record id's first appearance in the log is written inline in
//! its record, and `ids.dat` is its copy, written by the writer thread after the batch is durable
//! (no fsync of its own) and fsynced before a partition is sealed. When retention deletes the
//! partition that held an id's first appearance, `ids.dat` keeps the only copy; a change to it
//! changes the decoded records and so their leaf hashes, which the signed checkpoints catch.

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::Result;
use crate::files::ItemFile;

mod numbers;
use numbers::Numbers;

const ID_BYTES: u64 = 16;
const CHUNK_BITS: u32 = 16;
const CHUNK_IDS: usize = 1 << CHUNK_BITS;

/// Numbered ids in memory, in chunks so growing never moves what is there. Chunks are shared
/// between a table and its [`IdTable::prefix`]es; only the last is copied, when a prefix
/// numbers ids of its own.
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    chunks: Vec<Arc<Vec<Uuid>>>,
    len: usize,
}

impl IdTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The id numbered `number`.
    pub(crate) fn get(&self, number: usize) -> Option<Uuid> {
        if number >= self.len {
            return None;
        }
        Some(self.chunks[number >> CHUNK_BITS][number & (CHUNK_IDS - 1)])
    }

    pub(crate) fn push(&mut self, id: Uuid) {
        if self.len.is_multiple_of(CHUNK_IDS) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK_IDS)));
        }
        let last = self.chunks.last_mut().expect("a chunk");
        if Arc::get_mut(last).is_none() {
            // Shared with another table: this one takes its own copy, room to grow included.
            let mut own = Vec::with_capacity(CHUNK_IDS);
            own.extend_from_slice(last);
            *last = Arc::new(own);
        }
        Arc::get_mut(last).expect("owned").push(id);
        self.len += 1;
    }

    /// A table of the first `len` ids (all of them if there are fewer), sharing their chunks.
    pub(crate) fn prefix(&self, len: usize) -> IdTable {
        let len = len.min(self.len);
        let n_chunks = len.div_ceil(CHUNK_IDS);
        let mut chunks = self.chunks[..n_chunks].to_vec();
        let in_last = len - n_chunks.saturating_sub(1) * CHUNK_IDS;
        if let Some(last) = chunks.last_mut()
            && in_last < last.len()
        {
            let mut own = Vec::with_capacity(CHUNK_IDS);
            own.extend_from_slice(&last[..in_last]);
            *last = Arc::new(own);
        }
        IdTable { chunks, len }
    }

    /// Forgets every id numbered `len` or later.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let n_chunks = len.div_ceil(CHUNK_IDS);
        self.chunks.truncate(n_chunks);
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).truncate(len - (n_chunks - 1) * CHUNK_IDS);
        }
        self.len = len;
    }

    /// The ids numbered `from ..`.
    pub(crate) fn since(&self, from: usize) -> Vec<Uuid> {
        (from..self.len)
            .map(|n| self.get(n).expect("in range"))
            .collect()
    }
}

/// The numbered ids and the way back from an id to its number; shared by the writer (which
/// numbers) and readers (which decode and look up).
#[derive(Debug, Default)]
pub(crate) struct IdDict {
    pub(crate) table: IdTable,
    numbers: Numbers,
}

impl IdDict {
    /// The dictionary of `table`'s ids.
    pub(crate) fn from_table(table: IdTable) -> IdDict {
        let numbers = Numbers::build(&table);
        IdDict { table, numbers }
    }

    /// The number of `id`, if it has one.
    pub(crate) fn number(&self, id: &Uuid) -> Option<u32> {
        self.numbers.get(id, &self.table)
    }

    /// The numbers of `ids` into `out`, as [`IdDict::number`] gives each (see
    /// [`Numbers::get_many`]).
    pub(crate) fn numbers_of(&self, ids: &[Uuid], out: &mut Vec<Option<u32>>) {
        self.numbers.get_many(ids, &self.table, out);
    }

    /// Numbers `id` (the next number).
    pub(crate) fn push(&mut self, id: Uuid) -> u32 {
        let number = u32::try_from(self.table.len()).expect("record id numbers exhausted");
        self.table.push(id);
        self.numbers.insert(&id, number, &self.table);
        number
    }

    /// Forgets every id numbered `len` or later.
    pub(crate) fn truncate(&mut self, len: usize) {
        for n in (len..self.table.len()).rev() {
            let id = self.table.get(n).expect("in range");
            self.numbers.remove(&id, n as u32);
        }
        self.table.truncate(len);
    }
}

/// The open `ids.dat`.
pub(crate) struct IdFile(ItemFile);

impl IdFile {
    /// Opens (or creates) `ids.dat` in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<IdFile> {
        ItemFile::open(dir, "ids.dat", ID_BYTES).map(IdFile)
    }

    /// Opens `ids.dat` in `dir` to read, if there is one.
    pub(crate) fn open_existing(dir: &Path) -> Result<Option<IdFile>> {
        Ok(ItemFile::open_existing(dir, "ids.dat", ID_BYTES)?.map(IdFile))
    }

    /// Ids the file holds.
    pub(crate) fn len(&self) -> Result<u64> {
        self.0.len()
    }

    /// Reads the first `n` ids, a chunk of the table at a time.
    pub(crate) fn read(&self, n: u64) -> Result<IdTable> {
        let mut table = IdTable::default();
        let mut at = 0;
        while at < n {
            let end = (at + CHUNK_IDS as u64).min(n);
            let mut chunk = self.read_range(at, end)?;
            // The last chunk grows in place as ids are numbered.
            chunk.reserve_exact(CHUNK_IDS - chunk.len());
            table.chunks.push(Arc::new(chunk));
            table.len = end as usize;
            at = end;
        }
        Ok(table)
    }

    /// Reads the ids numbered `start .. end`.
    pub(crate) fn read_range(&self, start: u64, end: u64) -> Result<Vec<Uuid>> {
        Ok(self
            .0
            .read(start, end)?
            .chunks_exact(ID_BYTES as usize)
            .map(|chunk| Uuid::from_bytes(chunk.try_into().expect("16 bytes")))
            .collect())
    }

    /// Writes ids numbered `first ..` (no fsync).
    pub(crate) fn write(&self, first: u64, ids: &[Uuid]) -> Result<()> {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
        self.0.write(first, &bytes)
    }

    /// Makes every id written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.0.sync()
    }

    /// Cuts the file to its first `len` ids, durably.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.0.truncate(len)
    }
}

#[cfg(test)]
mod tests;
