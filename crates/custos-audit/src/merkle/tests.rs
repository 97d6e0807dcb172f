use proptest::prelude::*;

use super::*;

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The leaves and roots of the Certificate Transparency reference tests (RFC 6962).
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in LEAVES {
        tree.push(leaf_hash(leaf));
    }
    tree
}

/// Leaf hashes kept aside, as `leaves.dat` keeps them.
struct Leaves(Vec<Hash>);

impl LeafSource for Leaves {
    fn read_leaves(&self, start: u64, end: u64) -> crate::Result<Vec<Hash>> {
        Ok(self.0[start as usize..end as usize].to_vec())
    }
}

fn tree_of(n: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    tree
}

#[test]
fn roots_match_the_rfc_6962_reference() {
    let tree = reference();
    for (size, expect) in ROOTS.iter().enumerate() {
        assert_eq!(
            hex(&tree.root(size as u64, &InMemory).unwrap()),
            *expect,
            "size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_match_the_reference() {
    let tree = reference();
    let check = |index: u64, expect: [&str; 3]| {
        let proof = tree.inclusion_proof(index, 8, &InMemory).unwrap();
        assert_eq!(
            proof.iter().map(hex).collect::<Vec<_>>(),
            expect,
            "leaf {index}"
        );
        assert!(verify_inclusion(
            index,
            8,
            &tree.leaf(index, &InMemory).unwrap(),
            &proof,
            &tree.root(8, &InMemory).unwrap()
        ));
    };
    check(
        0,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    );
    check(
        5,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    );
}

#[test]
fn edge_cases_of_verification() {
    let tree = tree_of(6);
    let root = tree.root(6, &InMemory).unwrap();
    let leaf = tree.leaf(2, &InMemory).unwrap();
    let proof = tree.inclusion_proof(2, 6, &InMemory).unwrap();
    assert!(verify_inclusion(2, 6, &leaf, &proof, &root));
    assert!(
        !verify_inclusion(6, 6, &leaf, &proof, &root),
        "index beyond the tree"
    );
    assert!(
        !verify_inclusion(2, 4, &leaf, &proof, &root),
        "a size whose path is shorter"
    );
    assert!(
        !verify_inclusion(2, 12, &leaf, &proof, &root),
        "a size whose path is longer"
    );
    let mut longer = proof.clone();
    longer.push(root);
    assert!(
        !verify_inclusion(2, 6, &leaf, &longer, &root),
        "an extra hash"
    );
    assert!(
        !verify_inclusion(2, 6, &leaf, &proof[..proof.len() - 1], &root),
        "a missing hash"
    );

    let single = tree_of(1);
    assert!(
        verify_inclusion(
            0,
            1,
            &single.leaf(0, &InMemory).unwrap(),
            &[],
            &single.root(1, &InMemory).unwrap()
        ),
        "size 1: empty proof"
    );

    assert!(
        !verify_consistency(0, 6, &empty_root(), &root, &[]),
        "old size 0 proves nothing"
    );
    assert!(
        verify_consistency(6, 6, &root, &root, &[]),
        "m = n: empty proof, equal roots"
    );
    assert!(
        !verify_consistency(6, 6, &root, &root, &[root]),
        "m = n with a proof"
    );
    assert!(!verify_consistency(6, 5, &root, &root, &[]), "shrinking");
    let big = tree_of(13);
    for old in [1, 2, 3, 4, 5, 7, 8, 12] {
        let proof = big.consistency_proof(old, 13, &InMemory).unwrap();
        assert!(
            verify_consistency(
                old,
                13,
                &big.root(old, &InMemory).unwrap(),
                &big.root(13, &InMemory).unwrap(),
                &proof
            ),
            "{old} → 13"
        );
        assert!(
            !verify_consistency(
                old,
                13,
                &big.root(old, &InMemory).unwrap(),
                &big.root(12, &InMemory).unwrap(),
                &proof
            ),
            "{old} → wrong new root"
        );
    }
}

proptest! {
    #[test]
    fn every_inclusion_proof_verifies_and_a_tampered_one_does_not(size in 1u64..70, pick in any::<u64>(), flip in any::<u8>()) {
        let tree = tree_of(size);
        let index = pick % size;
        let leaf = tree.leaf(index, &InMemory).unwrap();
        let root = tree.root(size, &InMemory).unwrap();
        let proof = tree.inclusion_proof(index, size, &InMemory).unwrap();
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root));
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = flip as usize % bad.len();
            bad[at][0] ^= 1;
            prop_assert!(!verify_inclusion(index, size, &leaf, &bad, &root));
        }
        let mut other = leaf;
        other[31] ^= 0x80;
        prop_assert!(!verify_inclusion(index, size, &other, &proof, &root));
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_tampered_one_does_not(new in 1u64..70, pick in any::<u64>(), flip in any::<u8>()) {
        let tree = tree_of(new);
        let old = 1 + pick % new;
        let proof = tree.consistency_proof(old, new, &InMemory).unwrap();
        prop_assert!(verify_consistency(old, new, &tree.root(old, &InMemory).unwrap(), &tree.root(new, &InMemory).unwrap(), &proof));
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = flip as usize % bad.len();
            bad[at][5] ^= 4;
            prop_assert!(!verify_consistency(old, new, &tree.root(old, &InMemory).unwrap(), &tree.root(new, &InMemory).unwrap(), &bad));
        }
        if old < new {
            let mut forked = tree_of(old);
            for i in old..new {
                forked.push(leaf_hash(&(i + 1000).to_le_bytes()));
            }
            prop_assert!(!verify_consistency(old, new, &tree.root(old, &InMemory).unwrap(), &forked.root(new, &InMemory).unwrap(), &proof), "a fork is caught");
        }
    }

    #[test]
    fn a_tree_that_forgot_its_cold_tiles_answers_like_the_whole_tree(size in 1u64..1400, cut in any::<u64>(), pick in any::<u64>()) {
        let whole = tree_of(size);
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let source = Leaves(leaves);
        let mut forgetful = whole.clone();
        forgetful.forget_below(cut % (size + 1));
        prop_assert_eq!(forgetful.len(), size);
        let index = pick % size;
        let old = 1 + pick % size;
        prop_assert_eq!(forgetful.root(old, &source).unwrap(), whole.root(old, &InMemory).unwrap());
        prop_assert_eq!(forgetful.leaf(index, &source).unwrap(), whole.leaf(index, &InMemory).unwrap());
        prop_assert_eq!(
            forgetful.inclusion_proof(index, size, &source).unwrap(),
            whole.inclusion_proof(index, size, &InMemory).unwrap()
        );
        prop_assert_eq!(
            forgetful.consistency_proof(old, size, &source).unwrap(),
            whole.consistency_proof(old, size, &InMemory).unwrap()
        );
        // It keeps growing like the whole tree.
        let mut grown = whole.clone();
        for i in size..size + 300 {
            forgetful.push(leaf_hash(&i.to_le_bytes()));
            grown.push(leaf_hash(&i.to_le_bytes()));
        }
        prop_assert_eq!(forgetful.root(size + 300, &source).unwrap(), grown.root(size + 300, &InMemory).unwrap());
    }

    #[test]
    fn verifiers_never_panic(index in any::<u64>(), size in any::<u64>(), n in 0usize..70) {
        let proof = vec![[7u8; 32]; n];
        let _ = verify_inclusion(index, size, &[1; 32], &proof, &[2; 32]);
        let _ = verify_consistency(index, size, &[1; 32], &[2; 32], &proof);
    }
}
