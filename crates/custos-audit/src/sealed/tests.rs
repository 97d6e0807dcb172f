use proptest::prelude::*;

use super::*;
use crate::event::sample_event;

/// A partition's in-memory index over `n` varied events, and its strings.
fn mem_index(n: u32, seed: u32) -> (MemIndex, Vec<String>) {
    let mut index = MemIndex::default();
    for i in 0..n {
        let pick = |k: u32, salt: u32| (i.wrapping_mul(31).wrapping_add(salt * seed)) % k;
        let mut event = sample_event(0);
        event.id = Uuid::from_u128(u128::from(seed) << 32 | u128::from(i));
        event.creation_time_us = 1_000_000 * i64::from(i) + i64::from(seed);
        event.operation = ["Create", "RetrieveMultiple", "Delete"][pick(3, 1) as usize].into();
        event.user_upn = format!("User{}@X", pick(4, 2));
        event.client_ip = format!("10.0.0.{}", pick(3, 3));
        event.query = format!("accounts?$filter=name eq 'n{}'", pick(7, 4));
        let numbers: Vec<u32> = (0..pick(5, 5)).map(|k| (i + k * 7) % 23).collect();
        index.insert(
            Place {
                offset: 16 + i * 100,
                len: 90 + pick(9, 6),
            },
            &event,
            &numbers,
        );
    }
    let strings = (0..seed % 5).map(|k| format!("string {k} ✓")).collect();
    (index, strings)
}

fn sealed_of(index: &MemIndex, strings: &[String]) -> (tempfile::TempDir, SealedIndex) {
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("seg-00000000000000000042.log");
    let bytes = encode(index, strings, 12_345, 42, 77);
    write(&segment, &bytes).unwrap();
    let sealed = SealedIndex::open(&segment, 42, 12_345).unwrap().unwrap();
    (dir, sealed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn a_sealed_index_answers_as_the_memory_it_was_written_from(n in 0u32..300, seed in 1u32..50) {
        let (index, strings) = mem_index(n, seed);
        let (_dir, sealed) = sealed_of(&index, &strings);
        let meta = sealed.meta();
        prop_assert_eq!((meta.first_seq, meta.n_events, meta.segment_bytes, meta.ids_end), (42, n, 12_345, 77));
        prop_assert_eq!(sealed.time_range(), index.time_range());
        prop_assert_eq!(sealed.times().unwrap(), index.times().unwrap());
        prop_assert_eq!(&*sealed.strings().unwrap(), &strings);
        prop_assert_eq!(sealed.retention_groups().unwrap(), index.retention_groups().unwrap());
        for ordinal in 0..n {
            prop_assert_eq!(sealed.place(ordinal).unwrap(), index.place(ordinal).unwrap());
        }
        for (field, value, list) in index.sorted_terms() {
            prop_assert_eq!(&sealed.term(field, value).unwrap(), list);
        }
        prop_assert!(sealed.term(Field::Operation, "nothing").unwrap().is_empty());
        for number in 0..30 {
            prop_assert_eq!(sealed.record(number).unwrap(), index.record(number).unwrap());
        }
        for word in index.words.keys().chain(["n", "user", "10", "x", "zzz"].map(String::from).iter()) {
            for prefix in [word.as_str(), &word[..word.len().min(2)]] {
                prop_assert_eq!(sealed.word_prefix(prefix).unwrap(), index.word_prefix(prefix).unwrap());
            }
        }
        for (id, ordinal) in &index.event_ids {
            prop_assert_eq!(sealed.ordinal_of(id).unwrap(), Some(*ordinal));
        }
        prop_assert_eq!(sealed.ordinal_of(&Uuid::from_u128(5)).unwrap(), None);
    }
}

#[test]
fn the_same_index_always_encodes_to_the_same_bytes() {
    let (a, strings) = mem_index(200, 7);
    let (b, _) = mem_index(200, 7);
    assert!(
        encode(&a, &strings, 1, 2, 3) == encode(&b, &strings, 1, 2, 3),
        "verify compares files with what their segment implies"
    );
}

#[test]
fn a_file_for_another_segment_or_a_damaged_one_is_not_used() {
    let (index, strings) = mem_index(50, 3);
    let (dir, _) = sealed_of(&index, &strings);
    let segment = dir.path().join("seg-00000000000000000042.log");
    assert!(
        SealedIndex::open(&segment, 42, 999).unwrap().is_none(),
        "another length"
    );
    assert!(
        SealedIndex::open(&segment, 41, 12_345).unwrap().is_none(),
        "another first seq"
    );
    let path = index_path(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        SealedIndex::open(&segment, 42, 12_345).unwrap().is_none(),
        "a damaged footer"
    );
    let missing = dir.path().join("seg-00000000000000000099.log");
    assert!(SealedIndex::open(&missing, 99, 1).unwrap().is_none());
}
