use super::*;
use crate::leaves::LeafFile;
use crate::merkle::{LeafSource, leaf_hash};

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

/// The tree of `all`, its first `cold` leaves forgotten (kept in `leaves.dat` in `dir`).
fn tree_of(dir: &Path, all: &[Hash], cold: u64) -> MerkleTree {
    let file = LeafFile::open(dir).expect("leaves.dat");
    file.write(0, all).expect("written");
    let mut tree = MerkleTree::new();
    for leaf in all {
        tree.push(*leaf);
    }
    tree.forget_below(cold);
    tree
}

#[test]
fn a_kept_tree_gives_the_same_roots_and_proofs_as_one_built_from_every_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(5_000);
    let full = tree_of(dir.path(), &all, 4_096);
    write(dir.path(), 4_096, &full.upper_levels(4_096)).expect("written");
    let source = LeafFile::open(dir.path()).expect("leaves.dat");
    // Read back whole, and cut to fewer leaves than it holds (a partition whose index file
    // was deleted is scanned again).
    assert!(
        read(dir.path(), 255).expect("read").is_none(),
        "no whole tile below 255 leaves: nothing to keep"
    );
    for (max, expect_cold) in [(u64::MAX, 4_096), (4_095, 3_840)] {
        let mut kept = read(dir.path(), max).expect("read").expect("a tree");
        assert_eq!(kept.len(), expect_cold);
        for leaf in &all[expect_cold as usize..] {
            kept.push(*leaf);
        }
        for size in [1, 255, 256, 257, 3_000, 4_096, 4_097, 5_000] {
            assert_eq!(
                kept.root(size, &source).expect("root"),
                full.root(size, &source).expect("root"),
                "root of {size}"
            );
        }
        for (index, size) in [(0, 5_000), (300, 4_096), (4_095, 4_999), (4_999, 5_000)] {
            assert_eq!(
                kept.inclusion_proof(index, size, &source).expect("proof"),
                full.inclusion_proof(index, size, &source).expect("proof")
            );
        }
        assert_eq!(
            kept.consistency_proof(1_000, 5_000, &source)
                .expect("proof"),
            full.consistency_proof(1_000, 5_000, &source)
                .expect("proof")
        );
    }
}

#[test]
fn a_file_whose_levels_do_not_chain_or_that_is_cut_or_foreign_is_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(2_048);
    let full = tree_of(dir.path(), &all, 2_048);
    assert!(
        read(dir.path(), u64::MAX).expect("read").is_none(),
        "no file yet"
    );
    write(dir.path(), 2_048, &full.upper_levels(2_048)).expect("written");
    let good = std::fs::read(dir.path().join("tree.dat")).expect("file");
    let header = MAGIC.len() + 8;
    let mut flipped = good.clone();
    flipped[header + 32 * 3 + 5] ^= 1; // the fourth tile's hash
    let mut top_flipped = good.clone();
    let last = top_flipped.len() - 1;
    top_flipped[last] ^= 1; // the root of all 2,048
    let mut foreign = good.clone();
    foreign[0] = b'C';
    let mut more = good.clone();
    more[MAGIC.len()..header].copy_from_slice(&4_096u64.to_le_bytes());
    for (what, bytes) in [
        ("a tile's hash changed", flipped),
        ("the top hash changed", top_flipped),
        ("another magic", foreign),
        ("cut short", good[..good.len() - 1].to_vec()),
        ("a longer tail", [good.as_slice(), &[0u8; 32]].concat()),
        ("more leaves than hashes", more),
    ] {
        std::fs::write(dir.path().join("tree.dat"), &bytes).expect("written");
        assert!(
            read(dir.path(), u64::MAX).expect("read").is_none(),
            "used a file with {what}"
        );
    }
}

/// A `leaves.dat` that serves other leaves than those a tile's hash covers.
struct Altered<'a>(&'a LeafFile, u64);

impl LeafSource for Altered<'_> {
    fn read_leaves(&self, start: u64, end: u64) -> Result<Vec<Hash>> {
        let mut leaves = self.0.read_leaves(start, end)?;
        if (start..end).contains(&self.1) {
            leaves[(self.1 - start) as usize][0] ^= 1;
        }
        Ok(leaves)
    }
}

#[test]
fn a_cold_leaf_altered_in_leaves_dat_is_refused_by_its_tile_s_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = leaves(1_000);
    let tree = tree_of(dir.path(), &all, 768);
    let file = LeafFile::open(dir.path()).expect("leaves.dat");
    let altered = Altered(&file, 300);
    // Another tile reads fine; the altered one is refused, whichever leaf of it is asked.
    assert_eq!(tree.leaf(10, &altered).expect("tile 0"), all[10]);
    for index in [300, 257] {
        let refused = tree.leaf(index, &altered).expect_err("tile 1 is altered");
        assert!(refused.to_string().contains("leaves.dat"), "{refused}");
    }
    assert!(tree.inclusion_proof(260, 1_000, &altered).is_err());
    assert!(
        tree.inclusion_proof(600, 1_000, &altered).is_ok(),
        "tile 2 is sound"
    );
    // The sound file reads as before: a refused tile was not taken as checked.
    assert_eq!(tree.leaf(300, &file).expect("tile 1"), all[300]);
}

#[test]
fn tree_dat_is_owner_only_and_a_link_at_its_temporary_name_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"keep me").expect("written");
    std::os::unix::fs::symlink(&victim, dir.path().join("tree.dat.tmp")).expect("link");
    let all = leaves(512);
    let tree = tree_of(dir.path(), &all, 512);
    write(dir.path(), 512, &tree.upper_levels(512)).expect("written");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep me");
    let meta = std::fs::symlink_metadata(dir.path().join("tree.dat")).expect("tree.dat");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(read(dir.path(), u64::MAX).expect("read").is_some());
}
