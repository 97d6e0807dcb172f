use proptest::prelude::*;

use super::*;

const BOTH: [Lists; 2] = [Lists::Varints, Lists::Packed];

/// A strictly increasing list of ordinals below `events`, from any values.
fn ordinals(values: Vec<u32>, events: u32) -> Vec<u32> {
    let mut list: Vec<u32> = values.into_iter().map(|v| v % events).collect();
    list.sort_unstable();
    list.dedup();
    list
}

fn encoded(lists: Lists, list: &[u32], events: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    lists.encode(list, events, &mut bytes);
    bytes
}

/// The count of `bytes` as a reader takes it: from the first bytes [`Lists::count_bytes`] asks.
fn counted(lists: Lists, bytes: &[u8], events: u32) -> Option<u64> {
    lists.count(
        &bytes[..lists.count_bytes(bytes.len())],
        bytes.len(),
        events,
    )
}

/// Partitions of a few events to the most a partition can number.
fn events() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..64, 1u32..5_000, any::<u32>().prop_map(|e| e.max(1))]
}

proptest! {
    #[test]
    fn lists_round_trip(values in proptest::collection::vec(any::<u32>(), 1..400), events in events()) {
        let list = ordinals(values, events);
        for lists in BOTH {
            let bytes = encoded(lists, &list, events);
            prop_assert_eq!(lists.decode(&bytes, events).unwrap(), list.clone(), "{:?}", lists);
            prop_assert_eq!(counted(lists, &bytes, events), Some(list.len() as u64));
        }
    }

    #[test]
    fn a_list_is_packed_exactly_when_its_varints_take_eight_bytes_or_more(
        values in proptest::collection::vec(any::<u32>(), 1..400),
        events in events(),
    ) {
        let list = ordinals(values, events);
        let varints = encoded(Lists::Varints, &list, events);
        let packed = encoded(Lists::Packed, &list, events);
        if varints.len() < PACKED_FROM {
            prop_assert_eq!(packed, varints);
        } else {
            prop_assert!(packed.len() >= PACKED_FROM);
            prop_assert_eq!(decode_packed(&packed, events).unwrap(), list);
        }
    }

    #[test]
    fn a_list_of_varints_cut_short_is_not_counted(values in proptest::collection::vec(any::<u32>(), 1..200)) {
        let list = ordinals(values, u32::MAX);
        let mut bytes = encoded(Lists::Varints, &list, u32::MAX);
        *bytes.last_mut().unwrap() |= 0x80;
        prop_assert_eq!(counted(Lists::Varints, &bytes, u32::MAX), None);
    }

    /// Whatever the bytes, a list is read or refused, and a packed list that reads is the one
    /// encoding of what it reads as, so `verify`'s comparison byte for byte loses nothing.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
        events in events(),
    ) {
        for lists in BOTH {
            let read = lists.decode(&bytes, events);
            if let (Ok(list), Lists::Packed) = (read, lists)
                && bytes.len() >= PACKED_FROM
            {
                prop_assert_eq!(counted(lists, &bytes, events), Some(list.len() as u64));
                if encoded(Lists::Varints, &list, events).len() >= PACKED_FROM {
                    prop_assert_eq!(encoded(lists, &list, events), bytes.clone());
                }
            }
        }
    }

    /// A packed list's count and length agree, and what follows is any bytes at all.
    #[test]
    fn a_packed_list_of_any_contents_never_panics(
        n in 1u64..300,
        events in events(),
        seed in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        prop_assume!(n <= u64::from(events));
        let len = packed_len(n, events).unwrap();
        let mut bytes = Vec::new();
        put_varint(&mut bytes, n);
        let payload = len - bytes.len();
        bytes.extend(seed.iter().cycle().take(payload));
        prop_assert_eq!(bytes.len(), len);
        prop_assert_eq!(counted(Lists::Packed, &bytes, events), Some(n));
        if let Ok(list) = Lists::Packed.decode(&bytes, events) {
            prop_assert_eq!(list.len() as u64, n);
            prop_assert!(list.windows(2).all(|w| w[0] < w[1]) && list.iter().all(|v| *v < events));
        }
    }

    /// Every bit of a packed list is part of what it says: changed, the list reads as another
    /// or is refused.
    #[test]
    fn a_packed_list_with_any_bit_changed_is_another_list_or_refused(
        values in proptest::collection::vec(any::<u32>(), 8..120),
        events in 200u32..100_000,
        flip in any::<proptest::sample::Index>(),
    ) {
        let list = ordinals(values, events);
        let mut bytes = encoded(Lists::Packed, &list, events);
        prop_assume!(bytes.len() >= PACKED_FROM);
        let bit = flip.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(other) = Lists::Packed.decode(&bytes, events) {
            prop_assert_ne!(other, list);
        }
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

#[test]
fn a_long_list_takes_about_two_bits_more_than_its_gaps_need() {
    // Every third of 30,000 events: ⌊log2 3⌋ = 1 low bit, and 10,000 + 29,999 >> 1 high bits.
    let list: Vec<u32> = (0..30_000).step_by(3).collect();
    let varints = encoded(Lists::Varints, &list, 30_000);
    let packed = encoded(Lists::Packed, &list, 30_000);
    assert_eq!(varints.len(), 10_000);
    assert_eq!(packed.len(), 2 + 24_999usize.div_ceil(8) + 10_000 / 8);
    assert_eq!(counted(Lists::Packed, &packed, 30_000), Some(10_000));
    // A list of the first and last events alone: two varints, 1 and 3 bytes.
    assert_eq!(encoded(Lists::Packed, &[0, 29_999], 30_000).len(), 4);
}

#[test]
fn a_short_packed_list_is_padded_with_zeros_and_checked() {
    // Ten events of ten: no low bits; event i sets high bit 2i of 10 + 9: 1 + 3 bytes, 4 of
    // padding.
    let list: Vec<u32> = (0..10).collect();
    let mut bytes = encoded(Lists::Packed, &list, 10);
    assert_eq!(encoded(Lists::Varints, &list, 10).len(), 10);
    assert_eq!(bytes, [10, 0x55, 0x55, 0x05, 0, 0, 0, 0]);
    bytes[7] = 1;
    assert!(
        Lists::Packed.decode(&bytes, 10).is_err(),
        "padding not zero"
    );
    bytes.truncate(4);
    assert_eq!(
        Lists::Packed.decode(&bytes, 10).unwrap(),
        [10, 95, 180, 185],
        "fewer than eight bytes are varints"
    );
    let repeats = [2, 0b11, 0, 0, 0, 0, 0, 0];
    assert!(
        Lists::Packed.decode(&repeats, 3).is_err(),
        "two events at ordinal 0"
    );
    let mut longer = repeats.to_vec();
    longer.push(0);
    assert!(Lists::Packed.decode(&longer, 3).is_err());
    assert_eq!(counted(Lists::Packed, &longer, 3), None);
}

#[test]
fn a_packed_list_of_more_events_than_its_partition_holds_is_refused() {
    let list: Vec<u32> = (0..100).collect();
    let bytes = encoded(Lists::Packed, &list, 100);
    assert_eq!(Lists::Packed.decode(&bytes, 100).unwrap(), list);
    assert!(Lists::Packed.decode(&bytes, 99).is_err());
    assert_eq!(counted(Lists::Packed, &bytes, 99), None);
    assert!(
        Lists::Packed.decode(&bytes, 300).is_err(),
        "another split, another length"
    );
}

#[test]
fn a_packed_list_whose_count_is_not_in_its_shortest_form_is_refused() {
    // Forty events of forty: no low bits, 40 + 39 high bits; 11 bytes with a count of one.
    let list: Vec<u32> = (0..40).collect();
    let bytes = encoded(Lists::Packed, &list, 40);
    assert_eq!(bytes.len(), 11);
    assert_eq!(bytes[0], 40);
    // The same count in two bytes, the list cut to the same length.
    let mut longer = vec![40 | 0x80, 0];
    longer.extend_from_slice(&bytes[1..10]);
    assert!(Lists::Packed.decode(&longer, 40).is_err());
    assert_eq!(counted(Lists::Packed, &longer, 40), None);
    longer.push(bytes[10]);
    assert!(
        Lists::Packed.decode(&longer, 40).is_err(),
        "one byte too long"
    );
}
