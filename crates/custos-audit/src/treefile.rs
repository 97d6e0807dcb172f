//! `tree.dat`: the Merkle tree's levels above its tiles over the sealed partitions' leaves, so
//! that opening the log does not hash every leaf of `leaves.dat` again (10 million node hashes
//! at 10 million events).
//!
//! Layout: the magic `custos-tree 1\n`, the number of leaves `n` (u64 little-endian, a
//! multiple of [`TILE_LEAVES`]), then the hashes of level [`TILE_HEIGHT`] (`n >> 8` of them),
//! of the level above, and so on while a level has one. The sealer writes it whole (temporary
//! file, fsync, rename) after each partition's leaves are durable; nothing else writes it.
//!
//! Nothing here is trusted beyond what the tree checks: the levels must chain (each hash the
//! node hash of the two below it) or the file is ignored; the root they give is compared with
//! the latest signed checkpoint on open, and opening falls back to `leaves.dat` alone when it
//! differs; and every tile of leaves read back from `leaves.dat` must fold to its hash here
//! (`MerkleTree::from_upper_levels`). A missing, stale or damaged `tree.dat` costs only the
//! time it was meant to save.

use std::path::{Path, PathBuf};

use crate::merkle::{Hash, MerkleTree, TILE_HEIGHT, TILE_LEAVES};
use crate::{Error, Result};

const MAGIC: &[u8] = b"custos-tree 1\n";
const NAME: &str = "tree.dat";

fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// Writes the levels of `tree` above its tiles over its first `n` leaves (a multiple of
/// [`TILE_LEAVES`], all cold and durable in `leaves.dat`).
pub(crate) fn write(dir: &Path, n: u64, upper: &[Vec<Hash>]) -> Result<()> {
    let hashes: usize = upper.iter().map(Vec::len).sum();
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + hashes * 32);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&n.to_le_bytes());
    for level in upper {
        bytes.extend_from_slice(level.as_flattened());
    }
    crate::files::replace_file(&path(dir), "dat.tmp", &bytes)
}

/// The tree of the first leaves `tree.dat` covers, cut to at most `max` leaves; `None` when
/// there is no file, or it is not one this version wrote, or its levels do not chain, or it
/// keeps no whole tile below `max`.
pub(crate) fn read(dir: &Path, max: u64) -> Result<Option<MerkleTree>> {
    let path = path(dir);
    let bytes = match crate::files::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let Some((held, mut rest)) = rest
        .split_first_chunk::<8>()
        .map(|(n, rest)| (u64::from_le_bytes(*n), rest))
    else {
        return Ok(None);
    };
    let n = held.min(max) / TILE_LEAVES * TILE_LEAVES;
    let mut upper = Vec::new();
    let mut level = TILE_HEIGHT;
    while held >> level > 0 {
        let Some((hashes, after)) = rest.split_at_checked((held >> level) as usize * 32) else {
            return Ok(None);
        };
        let kept = (n >> level) as usize;
        if kept > 0 {
            upper.push(
                hashes
                    .chunks_exact(32)
                    .take(kept)
                    .map(|hash| hash.try_into().expect("32 bytes"))
                    .collect(),
            );
        }
        rest = after;
        level += 1;
    }
    if !rest.is_empty() || n == 0 {
        return Ok(None);
    }
    Ok(MerkleTree::from_upper_levels(n, upper))
}

/// Deletes `tree.dat` (`custos audit reindex` rebuilds the tree from `leaves.dat`).
pub(crate) fn remove(dir: &Path) -> Result<()> {
    let path = path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests;
