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

fn sealed_of(
    index: &MemIndex,
    strings: &[String],
    version: u8,
) -> (tempfile::TempDir, SealedIndex) {
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("seg-00000000000000000042.log");
    let bytes = encode(index, strings, 12_345, 42, 77, version);
    write(&segment, &bytes).unwrap();
    let sealed = SealedIndex::open(&crate::handles::Handles::new(4), &segment, 42, 12_345)
        .unwrap()
        .unwrap();
    (dir, sealed)
}

/// Every string of `table`, in number order.
fn all(table: &StringTable) -> Result<Vec<String>> {
    (0..table.len())
        .map(|n| Ok(table.get(n)?.expect("numbered").into_owned()))
        .collect()
}

/// A sealed index whose strings section was rewritten by `damage` after it was written.
fn with_strings_damaged(damage: impl FnOnce(&mut [u8])) -> (tempfile::TempDir, SealedIndex) {
    let (index, strings) = mem_index(20, 4);
    let (dir, sealed) = sealed_of(&index, &strings, VERSION);
    let (at, len, _) = sealed.sections[Section::Strings as usize];
    let path = index_path(&dir.path().join("seg-00000000000000000042.log"));
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes[at as usize..(at + len) as usize]);
    std::fs::write(&path, &bytes).unwrap();
    let segment = dir.path().join("seg-00000000000000000042.log");
    let sealed = SealedIndex::open(&crate::handles::Handles::new(4), &segment, 42, 12_345)
        .unwrap()
        .unwrap();
    (dir, sealed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn a_sealed_index_answers_as_the_memory_it_was_written_from(
        n in 0u32..300,
        seed in 1u32..50,
        version in 2u8..=5,
    ) {
        let (index, strings) = mem_index(n, seed);
        let (_dir, sealed) = sealed_of(&index, &strings, version);
        prop_assert_eq!(sealed.format, format_of(version).unwrap());
        let meta = sealed.meta();
        prop_assert_eq!((meta.first_seq, meta.n_events, meta.segment_bytes, meta.ids_end), (42, n, 12_345, 77));
        prop_assert_eq!(sealed.time_range(), index.time_range());
        prop_assert_eq!(sealed.times().unwrap(), index.times().unwrap());
        let table = sealed.strings().unwrap();
        prop_assert_eq!(all(&table).unwrap(), strings.clone());
        prop_assert_eq!(sealed.retention_groups().unwrap(), index.retention_groups().unwrap());
        for ordinal in 0..n {
            prop_assert_eq!(sealed.place(ordinal).unwrap(), index.place(ordinal).unwrap());
        }
        for (field, value, list) in index.sorted_terms() {
            prop_assert_eq!(&sealed.term(field, value).unwrap(), list);
            prop_assert_eq!(sealed.term_count(field, value).unwrap(), list.len() as u64);
        }
        prop_assert_eq!(sealed.term_count(Field::Operation, "nothing").unwrap(), 0);
        prop_assert!(sealed.term(Field::Operation, "nothing").unwrap().is_empty());
        for number in 0..30 {
            prop_assert_eq!(sealed.record(number).unwrap(), index.record(number).unwrap());
            prop_assert_eq!(
                sealed.record_count(number).unwrap(),
                index.record(number).unwrap().len() as u64
            );
        }
        for word in index.words.keys().map(|word| word.as_str()).chain(["n", "user", "10", "x", "zzz"]) {
            for prefix in [word, &word[..word.len().min(2)]] {
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
    for version in [2, 3, 4, 5] {
        let bytes = encode(&a, &strings, 1, 2, 3, version);
        assert!(
            bytes == encode(&b, &strings, 1, 2, 3, version),
            "verify compares files with what their segment implies"
        );
        assert_eq!(version_of(&bytes), version);
    }
    assert_ne!(
        encode(&a, &strings, 1, 2, 3, 2),
        encode(&a, &strings, 1, 2, 3, 3)
    );
    assert_ne!(
        encode(&a, &strings, 1, 2, 3, 3),
        encode(&a, &strings, 1, 2, 3, 4)
    );
    assert_ne!(
        encode(&a, &strings, 1, 2, 3, 4),
        encode(&a, &strings, 1, 2, 3, 5)
    );
    let mut unknown = encode(&a, &strings, 1, 2, 3, 3);
    unknown[8] = 9;
    assert_eq!(
        version_of(&unknown),
        VERSION,
        "compared as this build writes"
    );
}

#[test]
fn a_file_for_another_segment_or_a_damaged_one_is_not_used() {
    let (index, strings) = mem_index(50, 3);
    let (dir, _) = sealed_of(&index, &strings, VERSION);
    let segment = dir.path().join("seg-00000000000000000042.log");
    assert!(
        SealedIndex::open(&crate::handles::Handles::new(4), &segment, 42, 999)
            .unwrap()
            .is_none(),
        "another length"
    );
    assert!(
        SealedIndex::open(&crate::handles::Handles::new(4), &segment, 41, 12_345)
            .unwrap()
            .is_none(),
        "another first seq"
    );
    let path = index_path(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        SealedIndex::open(&crate::handles::Handles::new(4), &segment, 42, 12_345)
            .unwrap()
            .is_none(),
        "a damaged footer"
    );
    let (dir, _) = sealed_of(&index, &strings, VERSION);
    let segment = dir.path().join("seg-00000000000000000042.log");
    let path = index_path(&segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        SealedIndex::open(&crate::handles::Handles::new(4), &segment, 42, 12_345)
            .unwrap()
            .is_none(),
        "a version this build does not read"
    );
    let missing = dir.path().join("seg-00000000000000000099.log");
    assert!(
        SealedIndex::open(&crate::handles::Handles::new(4), &missing, 99, 1)
            .unwrap()
            .is_none()
    );
}

#[test]
fn strings_out_of_order_out_of_bounds_or_inside_a_character_are_corruption() {
    // Four strings "string k ✓" (12 bytes each, the last three one character): the section is
    // a count, five ends (0, 12, 24, 36, 48), then the text. Each case sets word `k` to `value`
    // and names the string whose read must be refused. (An end moved to another boundary
    // inside the text makes other well-formed strings: the leaf check of every event read
    // refuses those.)
    let cases = [
        ("an end before the one before", 3, 11u32, 1),
        ("an end past the text", 5, 49, 3),
        ("an end inside '✓'", 2, 11, 0),
    ];
    for (what, k, value, refused) in cases {
        let damage = |b: &mut [u8]| b[4 * k..4 + 4 * k].copy_from_slice(&value.to_le_bytes());
        let (_dir, sealed) = with_strings_damaged(damage);
        let table = sealed.strings().unwrap();
        assert!(
            matches!(table.get(refused), Err(Error::Corrupted(_))),
            "{what}"
        );
    }
    let (_dir, sealed) = with_strings_damaged(|b| b[..4].copy_from_slice(&1_000u32.to_le_bytes()));
    assert!(
        matches!(sealed.strings(), Err(Error::Corrupted(_))),
        "a count whose ends overrun the section"
    );
    let (_dir, sealed) = with_strings_damaged(|_| {});
    let table = sealed.strings().unwrap();
    assert_eq!(all(&table).unwrap()[1], "string 1 ✓");
    assert!(table.get(4).unwrap().is_none());
}

#[test]
fn strings_across_the_pages_of_the_section_read_whole() {
    // Lengths around the page size, with multi-byte characters, so that strings start, end
    // and split characters at page boundaries.
    let strings: Vec<String> = (0..40)
        .map(|k| {
            let unit = ["a", "é", "✓", "𝄞"][k % 4];
            unit.repeat(1 + (k * 397) % 1500)
        })
        .collect();
    let (index, _) = mem_index(10, 3);
    let (_dir, sealed) = sealed_of(&index, &strings, VERSION);
    let table = sealed.strings().unwrap();
    let (_, len, _) = sealed.sections[Section::Strings as usize];
    assert!(len > 15 * STRINGS_PAGE, "{len} bytes");
    // Read out of order, so that pages are first read for strings in their middle.
    for n in (0..strings.len()).rev().step_by(3).chain(0..strings.len()) {
        assert_eq!(table.get(n).unwrap().unwrap(), strings[n], "string {n}");
    }
}

#[test]
fn a_strings_ends_across_a_page_boundary_read_together() {
    // 2,100 strings: their ends fill more than two pages, so the ends of strings 1,022 and
    // 2,046 straddle a page boundary.
    let strings: Vec<String> = (0..2_100).map(|k| format!("s{k}")).collect();
    let (index, _) = mem_index(10, 3);
    let (_dir, sealed) = sealed_of(&index, &strings, VERSION);
    let table = sealed.strings().unwrap();
    for n in [1_022, 2_046, 0, 1_021, 1_023, 2_099] {
        assert_eq!(table.get(n).unwrap().unwrap(), strings[n], "string {n}");
    }
    assert_eq!(all(&table).unwrap(), strings);
}

proptest! {
    #[test]
    fn a_strings_section_of_any_bytes_reads_or_is_refused_without_panicking(
        noise in proptest::collection::vec(any::<u8>(), 1..80),
        from in 0usize..40,
    ) {
        let (_dir, sealed) = with_strings_damaged(|b| {
            for (byte, new) in b.iter_mut().skip(from).zip(&noise) {
                *byte = *new;
            }
        });
        if let Ok(table) = sealed.strings() {
            let _ = all(&table);
            prop_assert!(table.get(table.len()).unwrap().is_none());
        }
    }
}
