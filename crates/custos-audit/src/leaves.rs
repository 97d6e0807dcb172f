//! `leaves.dat`: the Merkle leaf hash of every record ever appended, 32 bytes at `seq × 32`.
//!
//! The file lets the tree keep only its upper levels in memory (see `merkle`), lets a restart
//! rebuild the tree without re-hashing every record, and keeps the leaves of partitions that
//! retention deleted, so every checkpoint signed before and every proof stays valid. It is
//! never shortened below what a sealed partition covers.
//!
//! The writer thread writes each batch's leaves after the batch is durable in its segment,
//! without an fsync of its own: leaves of the unsealed tail are recomputed from the records on
//! start. Sealing a partition fsyncs the file first, so a sealed partition's leaves are durable.

use std::path::Path;

use crate::Result;
use crate::files::ItemFile;
use crate::log::Seq;
use crate::merkle::{Hash, LeafSource};

const HASH_BYTES: u64 = 32;

/// The open `leaves.dat`.
pub(crate) struct LeafFile(ItemFile);

impl LeafFile {
    /// Opens (or creates) `leaves.dat` in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<LeafFile> {
        ItemFile::open(dir, "leaves.dat", HASH_BYTES).map(LeafFile)
    }

    /// Opens `leaves.dat` in `dir` to read, if there is one.
    pub(crate) fn open_existing(dir: &Path) -> Result<Option<LeafFile>> {
        Ok(ItemFile::open_existing(dir, "leaves.dat", HASH_BYTES)?.map(LeafFile))
    }

    /// Leaves the file holds.
    pub(crate) fn len(&self) -> Result<u64> {
        self.0.len()
    }

    /// Writes the leaves of `first ..` (no fsync).
    pub(crate) fn write(&self, first: Seq, leaves: &[Hash]) -> Result<()> {
        self.0.write(first, leaves.as_flattened())
    }

    /// Makes every leaf written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.0.sync()
    }

    /// Cuts the file to its first `len` leaves (the rest is recomputed from the log).
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.0.truncate(len)
    }
}

impl LeafSource for LeafFile {
    fn read_leaves(&self, start: u64, end: u64) -> Result<Vec<Hash>> {
        Ok(self
            .0
            .read(start, end)?
            .chunks_exact(HASH_BYTES as usize)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect())
    }
}
