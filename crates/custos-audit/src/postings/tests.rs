use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn lists_round_trip(mut list in proptest::collection::vec(any::<u32>(), 0..200)) {
        list.sort_unstable();
        list.dedup();
        let mut bytes = Vec::new();
        encode(&list, &mut bytes);
        prop_assert_eq!(decode(&bytes).unwrap(), list);
    }

    #[test]
    fn a_list_is_counted_without_decoding(mut list in proptest::collection::vec(any::<u32>(), 0..200)) {
        list.sort_unstable();
        list.dedup();
        let mut bytes = Vec::new();
        encode(&list, &mut bytes);
        prop_assert_eq!(count(&bytes), Some(list.len() as u64));
        if let Some(last) = bytes.last_mut() {
            *last |= 0x80;
            prop_assert_eq!(count(&bytes), None, "a varint cut short");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn set_operations_match_a_brute_force(
        a in proptest::collection::btree_set(0u32..500, 0..200),
        b in proptest::collection::btree_set(0u32..500, 0..20),
    ) {
        let (va, vb): (Vec<u32>, Vec<u32>) = (a.iter().copied().collect(), b.iter().copied().collect());
        let both: Vec<u32> = a.intersection(&b).copied().collect();
        let either: Vec<u32> = a.union(&b).copied().collect();
        prop_assert_eq!(intersect(&va, &vb), both.clone());
        prop_assert_eq!(intersect(&vb, &va), both);
        prop_assert_eq!(union(vec![va, vb]), either);
    }
}
