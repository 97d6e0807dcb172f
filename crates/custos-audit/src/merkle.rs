//! The Merkle tree of the audit log in the style of RFC 6962 / RFC 9162 §2.1: leaf hash
//! `SHA-256(0x00 ‖ leaf)`, node hash `SHA-256(0x01 ‖ left ‖ right)`, split at the largest power
//! of two below the size; inclusion and consistency proofs, and their verification (§2.1.3.2,
//! §2.1.4.2).
//!
//! The tree keeps every complete subtree's hash by level, so the root of any prefix and any
//! proof is computed from O(log n) stored hashes; below the tile level, hashes of old leaves
//! may be dropped from memory and recomputed from their tile's leaves on disk.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2, "only trees of two or more leaves split");
    1 << (63 - (n - 1).leading_zeros())
}

/// Levels of a tile: the hashes of levels below this are dropped from memory for the leaves
/// a [`LeafSource`] can give back, and recomputed from one tile of leaves when asked.
pub const TILE_HEIGHT: usize = 8;
/// Leaves of a tile (`2^TILE_HEIGHT`), as in the C2SP tlog-tiles layout.
pub const TILE_LEAVES: u64 = 1 << TILE_HEIGHT;

/// Where a tree finds the leaf hashes it dropped from memory.
pub trait LeafSource {
    /// The leaf hashes `start .. end`.
    fn read_leaves(&self, start: u64, end: u64) -> crate::Result<Vec<Hash>>;
}

/// The source of a tree that never dropped a leaf: asking it is a bug.
pub struct InMemory;

impl LeafSource for InMemory {
    fn read_leaves(&self, start: u64, end: u64) -> crate::Result<Vec<Hash>> {
        unreachable!("leaves {start}..{end} asked of a tree that keeps every leaf in memory")
    }
}

/// Which cold tiles were read back from their [`LeafSource`] and found to fold to the tile's
/// hash the tree keeps, one bit a tile.
#[derive(Debug, Default)]
struct TileChecks(Vec<AtomicU64>);

impl Clone for TileChecks {
    fn clone(&self) -> TileChecks {
        TileChecks(
            self.0
                .iter()
                .map(|word| AtomicU64::new(word.load(Ordering::Relaxed)))
                .collect(),
        )
    }
}

impl TileChecks {
    /// Makes room for the bits of `tiles` tiles.
    fn cover(&mut self, tiles: u64) {
        let words = tiles.div_ceil(64) as usize;
        if words > self.0.len() {
            self.0.resize_with(words, || AtomicU64::new(0));
        }
    }

    fn is_checked(&self, tile: u64) -> bool {
        self.0[(tile / 64) as usize].load(Ordering::Relaxed) & (1 << (tile % 64)) != 0
    }

    fn mark(&self, tile: u64) {
        self.0[(tile / 64) as usize].fetch_or(1 << (tile % 64), Ordering::Relaxed);
    }
}

/// The hash of the complete tree over `hashes` (a power of two of them).
fn fold(hashes: &[Hash]) -> Hash {
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level[0]
}

/// A Merkle tree that grows by appending leaf hashes.
///
/// It keeps every complete subtree's hash of level [`TILE_HEIGHT`] and up; below that level it
/// keeps only the hashes above `cold` (a multiple of [`TILE_LEAVES`]): whoever calls
/// [`MerkleTree::forget_below`] promises that a [`LeafSource`] holds the leaves before it. Memory is
/// then 64 bytes per leaf of the hot tail and a quarter of a byte per cold leaf. A cold leaf is
/// read back with its whole tile, which must fold to the tile's hash the tree keeps (checked
/// once a tile): the source can hand back nothing the tree does not vouch for.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[k][i - (cold >> k)]` (for `k < TILE_HEIGHT`; `levels[k][i]` above) is the hash of
    /// the complete subtree of leaves `i·2^k .. (i+1)·2^k`.
    levels: Vec<Vec<Hash>>,
    /// Leaves before this have no hashes below [`TILE_HEIGHT`] in memory.
    cold: u64,
    checks: TileChecks,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    /// The tree of the first `cold` leaves (a multiple of [`TILE_LEAVES`]) from the hashes of
    /// its levels [`TILE_HEIGHT`] and up (`upper[0]` the tiles' hashes, `upper[k]` level
    /// `TILE_HEIGHT + k`'s, each complete subtree's), its leaves left to a [`LeafSource`];
    /// `None` unless every level has its count of hashes and every hash is the node hash of
    /// the two below it.
    pub fn from_upper_levels(cold: u64, upper: Vec<Vec<Hash>>) -> Option<MerkleTree> {
        if !cold.is_multiple_of(TILE_LEAVES) {
            return None;
        }
        let levels_above = if cold == 0 {
            0
        } else {
            64 - cold.leading_zeros() as usize - TILE_HEIGHT
        };
        if upper.len() != levels_above {
            return None;
        }
        for (k, level) in upper.iter().enumerate() {
            if level.len() as u64 != cold >> (TILE_HEIGHT + k) {
                return None;
            }
            if let Some(below) = k.checked_sub(1).map(|b| &upper[b])
                && level
                    .iter()
                    .enumerate()
                    .any(|(i, hash)| *hash != node_hash(&below[2 * i], &below[2 * i + 1]))
            {
                return None;
            }
        }
        let mut levels = vec![Vec::new(); TILE_HEIGHT];
        levels.extend(upper);
        let mut checks = TileChecks::default();
        checks.cover(cold / TILE_LEAVES);
        Some(MerkleTree {
            levels,
            cold,
            checks,
        })
    }

    /// The hashes of levels [`TILE_HEIGHT`] and up of the tree of the first `n` leaves (`n` a
    /// multiple of [`TILE_LEAVES`], at most the cold leaves), as
    /// [`MerkleTree::from_upper_levels`] takes them.
    pub fn upper_levels(&self, n: u64) -> Vec<Vec<Hash>> {
        assert!(
            n.is_multiple_of(TILE_LEAVES) && n <= self.cold,
            "upper levels of {n} leaves of a tree cold below {}",
            self.cold
        );
        (TILE_HEIGHT..self.levels.len())
            .map(|k| self.levels[k][..(n >> k) as usize].to_vec())
            .take_while(|level| !level.is_empty())
            .collect()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.cold + self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaf.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where level `level`'s stored hashes start.
    fn first_stored(&self, level: usize) -> u64 {
        if level < TILE_HEIGHT {
            self.cold >> level
        } else {
            0
        }
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let n = self.first_stored(level) + self.levels[level].len() as u64;
            if n % 2 == 1 {
                return;
            }
            let stored = &self.levels[level];
            hash = node_hash(&stored[stored.len() - 2], &stored[stored.len() - 1]);
            level += 1;
        }
    }

    /// Drops the hashes below [`TILE_HEIGHT`] of the whole tiles before `index`; the caller's
    /// [`LeafSource`] must hold those leaves from now on.
    pub fn forget_below(&mut self, index: u64) {
        let cold = (index.min(self.len()) / TILE_LEAVES) * TILE_LEAVES;
        if cold <= self.cold {
            return;
        }
        for (level, stored) in self.levels.iter_mut().enumerate().take(TILE_HEIGHT) {
            let drop = ((cold >> level) - (self.cold >> level)) as usize;
            stored.drain(..drop.min(stored.len()));
        }
        self.cold = cold;
        self.checks.cover(cold / TILE_LEAVES);
    }

    /// Tiles whose leaves are left to the [`LeafSource`].
    pub fn cold_tiles(&self) -> u64 {
        self.cold / TILE_LEAVES
    }

    /// Checks, unless it was already, that cold tile `tile`'s leaves in `source` fold to the
    /// tile's hash.
    pub fn check_tile(&self, tile: u64, source: &dyn LeafSource) -> crate::Result<()> {
        if !self.checks.is_checked(tile) {
            self.cold_tile(tile, source)?;
        }
        Ok(())
    }

    /// The leaves of cold tile `tile`, read from `source` and, the first time, checked to fold
    /// to the tile's hash.
    fn cold_tile(&self, tile: u64, source: &dyn LeafSource) -> crate::Result<Vec<Hash>> {
        let start = tile * TILE_LEAVES;
        let leaves = source.read_leaves(start, start + TILE_LEAVES)?;
        if !self.checks.is_checked(tile) {
            if leaves.len() as u64 != TILE_LEAVES
                || fold(&leaves) != self.levels[TILE_HEIGHT][tile as usize]
            {
                return Err(crate::Error::Corrupted(format!(
                    "leaves.dat: leaves {start}..{} do not hash to the Merkle tree's tile of them: the file was altered or damaged",
                    start + TILE_LEAVES
                )));
            }
            self.checks.mark(tile);
        }
        Ok(leaves)
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64, source: &dyn LeafSource) -> crate::Result<Hash> {
        assert!(index < self.len(), "leaf {index} of {}", self.len());
        if index >= self.cold {
            return Ok(self.levels[0][(index - self.cold) as usize]);
        }
        let tile = index / TILE_LEAVES;
        if self.checks.is_checked(tile) {
            return Ok(source.read_leaves(index, index + 1)?[0]);
        }
        Ok(self.cold_tile(tile, source)?[(index % TILE_LEAVES) as usize])
    }

    /// The root of the first `size` leaves (`size` ≤ `len`).
    pub fn root(&self, size: u64, source: &dyn LeafSource) -> crate::Result<Hash> {
        assert!(
            size <= self.len(),
            "root of {size} leaves asked of a tree of {}",
            self.len()
        );
        if size == 0 {
            return Ok(empty_root());
        }
        self.subtree(0, size, source)
    }

    /// MTH(D[start:end]); the RFC's recursion only ever asks for aligned complete subtrees and
    /// ranges built from them.
    fn subtree(&self, start: u64, end: u64, source: &dyn LeafSource) -> crate::Result<Hash> {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            let first = self.first_stored(level);
            if start / n >= first {
                return Ok(self.levels[level][(start / n - first) as usize]);
            }
            // A forgotten subtree lies within one tile: fold its leaves.
            let tile = self.cold_tile(start / TILE_LEAVES, source)?;
            let within = (start % TILE_LEAVES) as usize;
            return Ok(fold(&tile[within..within + n as usize]));
        }
        let k = split(n);
        Ok(node_hash(
            &self.subtree(start, start + k, source)?,
            &self.subtree(start + k, end, source)?,
        ))
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1).
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        source: &dyn LeafSource,
    ) -> crate::Result<Vec<Hash>> {
        assert!(
            index < size && size <= self.len(),
            "inclusion of {index} in {size} of {}",
            self.len()
        );
        let mut proof = Vec::new();
        self.path(index, 0, size, source, &mut proof)?;
        Ok(proof)
    }

    fn path(
        &self,
        index: u64,
        start: u64,
        end: u64,
        source: &dyn LeafSource,
        proof: &mut Vec<Hash>,
    ) -> crate::Result<()> {
        let n = end - start;
        if n == 1 {
            return Ok(());
        }
        let k = split(n);
        if index < k {
            self.path(index, start, start + k, source, proof)?;
            proof.push(self.subtree(start + k, end, source)?);
        } else {
            self.path(index - k, start + k, end, source, proof)?;
            proof.push(self.subtree(start, start + k, source)?);
        }
        Ok(())
    }

    /// The consistency proof between the first `old` and the first `new` leaves
    /// (RFC 6962 §2.1.2), `0 < old ≤ new ≤ len`.
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
        source: &dyn LeafSource,
    ) -> crate::Result<Vec<Hash>> {
        assert!(
            0 < old && old <= new && new <= self.len(),
            "consistency {old}..{new} of {}",
            self.len()
        );
        let mut proof = Vec::new();
        self.subproof(old, 0, new, true, source, &mut proof)?;
        Ok(proof)
    }

    fn subproof(
        &self,
        m: u64,
        start: u64,
        end: u64,
        complete: bool,
        source: &dyn LeafSource,
        proof: &mut Vec<Hash>,
    ) -> crate::Result<()> {
        let n = end - start;
        if m == n {
            if !complete {
                proof.push(self.subtree(start, end, source)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, source, proof)?;
            proof.push(self.subtree(start + k, end, source)?);
        } else {
            self.subproof(m - k, start + k, end, false, source, proof)?;
            proof.push(self.subtree(start, start + k, source)?);
        }
        Ok(())
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Verifies a consistency proof between trees of `old` and `new` leaves (RFC 9162 §2.1.4.2).
/// `old = 0` proves nothing and is refused; `old = new` needs an empty proof and equal roots.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    // RFC 9162: an empty proof fails (a smaller tree needs at least one hash to be proven).
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *old_root && s_r == *new_root && s_n == 0
}

#[cfg(test)]
mod tests;
