use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::Error;

/// Writes `entries` as a table section in `layout` after `pad` bytes of a file, and opens it.
fn table_of(
    entries: &BTreeMap<Vec<u8>, (u64, u64)>,
    pad: usize,
    layout: Layout,
) -> (tempfile::NamedTempFile, Table) {
    table_with(entries, pad, layout, Entries::Prefixed)
}

/// [`table_of`] with blocks of `kind`.
fn table_with(
    entries: &BTreeMap<Vec<u8>, (u64, u64)>,
    pad: usize,
    layout: Layout,
    kind: Entries,
) -> (tempfile::NamedTempFile, Table) {
    let section = section_with(entries, layout, kind);
    let (file, table) = open_section_with(&section, pad, layout, kind);
    (file, table.unwrap())
}

/// Writes `section` after `pad` bytes of a file and opens it as a table in `layout`.
fn open_section(
    section: &[u8],
    pad: usize,
    layout: Layout,
) -> (tempfile::NamedTempFile, Result<Table>) {
    open_section_with(section, pad, layout, Entries::Prefixed)
}

/// [`open_section`] with blocks of `kind`.
fn open_section_with(
    section: &[u8],
    pad: usize,
    layout: Layout,
    kind: Entries,
) -> (tempfile::NamedTempFile, Result<Table>) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&vec![0xee; pad]).unwrap();
    file.write_all(section).unwrap();
    file.flush().unwrap();
    let table = Table::open(
        crate::handles::Handle::adopt(
            &crate::handles::Handles::new(4),
            file.path(),
            file.reopen().unwrap(),
        )
        .unwrap(),
        pad as u64,
        section.len() as u64,
        layout,
        kind,
    );
    (file, table)
}

fn section_of(entries: &BTreeMap<Vec<u8>, (u64, u64)>, layout: Layout) -> Vec<u8> {
    section_with(entries, layout, Entries::Prefixed)
}

fn section_with(entries: &BTreeMap<Vec<u8>, (u64, u64)>, layout: Layout, kind: Entries) -> Vec<u8> {
    let mut writer = TableWriter::new(kind);
    for (key, (a, b)) in entries {
        writer.add(key, *a, *b);
    }
    writer.finish(layout)
}

/// Checks every lookup and prefix scan of `table` against `entries`, for `probes` too.
fn check_against(
    table: &Table,
    entries: &BTreeMap<Vec<u8>, (u64, u64)>,
    probes: &[Vec<u8>],
) -> std::result::Result<(), TestCaseError> {
    for (key, values) in entries {
        prop_assert_eq!(table.get(key).unwrap(), Some(*values));
    }
    for probe in probes {
        prop_assert_eq!(table.get(probe).unwrap(), entries.get(probe).copied());
        let mut seen = Vec::new();
        table
            .prefix(probe, &mut |k, a, b| seen.push((k.to_vec(), (a, b))))
            .unwrap();
        let expect: Vec<(Vec<u8>, (u64, u64))> = entries
            .iter()
            .filter(|(k, _)| k.starts_with(probe))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        prop_assert_eq!(seen, expect, "prefix {:?}", probe);
    }
    Ok(())
}

#[test]
fn an_empty_table_finds_nothing() {
    for layout in [Layout::Flat, Layout::Nested] {
        let (_file, table) = table_of(&BTreeMap::new(), 3, layout);
        assert_eq!(table.get(b"x").unwrap(), None);
        let mut seen = 0;
        table.prefix(b"", &mut |_, _, _| seen += 1).unwrap();
        assert_eq!(seen, 0);
    }
}

#[test]
fn a_nested_table_of_many_index_blocks_answers_as_a_flat_one() {
    // About 27,000 keys in over 400 blocks, so the nested block index is a table of several
    // blocks of its own. Keys of 2–3 bytes, with runs of shared prefixes that span blocks of
    // both levels.
    let entries: BTreeMap<Vec<u8>, (u64, u64)> = (0..40_000u32)
        .map(|n| {
            let key = n.to_be_bytes()[1..].to_vec();
            let key = if n % 3 == 0 { key[..2].to_vec() } else { key };
            (key, (u64::from(n) * 3, u64::from(n % 5)))
        })
        .collect();
    let probes: Vec<Vec<u8>> = [
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 0x40],
        vec![0, 0x9c],
        vec![0, 0x9c, 0x3f],
        vec![0, 0x9c, 0x40],
        vec![1],
        vec![0xff],
        vec![0, 0xff, 0xff, 0xff],
    ]
    .into_iter()
    .chain(
        (0..40_000u32)
            .step_by(997)
            .map(|n| n.to_be_bytes()[1..3].to_vec()),
    )
    .collect();
    let (_flat_file, flat) = table_of(&entries, 5, Layout::Flat);
    let (_nested_file, nested) = table_of(&entries, 5, Layout::Nested);
    let Blocks::Indexed(index) = &nested.blocks else {
        panic!("a nested table keeps its block index as a table")
    };
    let Blocks::Listed { key_ends, .. } = &index.blocks else {
        panic!("whose own block index is listed")
    };
    let blocks = entries.len().div_ceil(BLOCK_ENTRIES);
    assert!(blocks > 400, "{blocks} blocks");
    assert_eq!(
        key_ends.len(),
        blocks.div_ceil(BLOCK_ENTRIES),
        "only the block index's own blocks are in memory"
    );
    check_against(&flat, &entries, &probes).unwrap();
    check_against(&nested, &entries, &probes).unwrap();
}

#[test]
fn a_nested_block_index_pointing_outside_the_blocks_is_corruption() {
    let entries: BTreeMap<Vec<u8>, (u64, u64)> = (0..500u32)
        .map(|n| (n.to_be_bytes().to_vec(), (1, 0)))
        .collect();
    let section = section_of(&entries, Layout::Nested);
    let index_at = u32::from_le_bytes(section[section.len() - 4..].try_into().unwrap()) as usize;
    // The index's first entry: shared 0, key length 4, key 0, the first block's offset (0)
    // and its length (two bytes of varint: 64 entries of 6–7 bytes). Make that 16,383 bytes,
    // past the end of the blocks.
    let mut damaged = section.clone();
    assert_eq!(&damaged[index_at..index_at + 7], &[0, 4, 0, 0, 0, 0, 0]);
    assert!(damaged[index_at + 7] >= 0x80 && damaged[index_at + 8] < 0x80);
    assert!(index_at < 16_383);
    damaged[index_at + 7..index_at + 9].copy_from_slice(&[0xff, 0x7f]);
    let (_file, table) = open_section(&damaged, 0, Layout::Nested);
    let table = table.unwrap();
    assert!(matches!(
        table.get(&0u32.to_be_bytes()),
        Err(Error::Corrupted(m)) if m.contains("block out of bounds")
    ));
}

/// Entries as a record table holds them: each number in `numbers` (sorted, distinct) maps to
/// an ordinal, or, where `list_len` says so, to a list of that many bytes starting where the
/// one before ended (the first at `first_list`).
fn number_entries(
    numbers: &[u32],
    list_len: impl Fn(usize) -> u64,
    ordinal: impl Fn(usize) -> u64,
    first_list: u64,
) -> BTreeMap<Vec<u8>, (u64, u64)> {
    let mut next = first_list;
    numbers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let value = match list_len(i) {
                0 => (ordinal(i), 0),
                len => {
                    next += len;
                    (next - len, len)
                }
            };
            (n.to_be_bytes().to_vec(), value)
        })
        .collect()
}

#[test]
fn a_number_table_takes_under_half_the_bytes_of_a_prefixed_one() {
    // Record-id numbers as a partition holds them: a few apart, one in four of them with a
    // list of a few bytes, the rest an ordinal of a partition of 100,000 events.
    let numbers: Vec<u32> = (0..50_000u32).map(|i| i * 5 + i % 3).collect();
    let entries = number_entries(
        &numbers,
        |i| if i % 4 == 0 { 2 + (i % 7) as u64 } else { 0 },
        |i| (i as u64 * 7_919) % 100_000,
        12_345,
    );
    let prefixed = section_with(&entries, Layout::Nested, Entries::Prefixed).len();
    let packed = section_with(&entries, Layout::Nested, Entries::Numbers).len();
    let per_entry = |bytes: usize| bytes as f64 / entries.len() as f64;
    assert!(
        packed * 2 < prefixed,
        "{:.2} bytes an entry packed against {:.2} prefixed",
        per_entry(packed),
        per_entry(prefixed)
    );
    let (_file, table) = table_with(&entries, 3, Layout::Nested, Entries::Numbers);
    check_against(&table, &entries, &[vec![], 7u32.to_be_bytes().to_vec()]).unwrap();
}

#[test]
fn a_number_block_that_does_not_add_up_is_corruption() {
    let entries = number_entries(&[3, 9, 10, 70_000], |i| (i % 2) as u64 * 3, |i| i as u64, 0);
    let section = section_with(&entries, Layout::Flat, Entries::Numbers);
    // The block: 4 entries, gap bits (17: 69,989), value bits (3: the lists' 3 << 1 | 1), first
    // key 3, first list at 0, then 63 bits.
    assert_eq!(&section[..5], &[4, 17, 3, 3, 0]);
    // (what, the byte changed, its new value)
    let damages = [
        ("block header malformed", 0, 65),
        ("block header malformed", 1, 33),
        ("block header malformed", 2, 65),
        ("block of the wrong length", 1, 9),
    ];
    for (what, at, value) in damages {
        let mut damaged = section.clone();
        damaged[at] = value;
        let (_file, table) = open_section_with(&damaged, 0, Layout::Flat, Entries::Numbers);
        let found = table.unwrap().get(&10u32.to_be_bytes());
        assert!(
            matches!(&found, Err(Error::Corrupted(m)) if m.contains(what)),
            "{what}: {found:?}"
        );
    }
    // The first value (bits 51–53 of the packed bits, after three 17-bit gaps): an ordinal, 0;
    // made 1, it claims a list of no bytes.
    let mut damaged = section.clone();
    assert_eq!(damaged[5 + 6] >> 3 & 0b111, 0);
    damaged[5 + 6] |= 1 << 3;
    let (_file, table) = open_section_with(&damaged, 0, Layout::Flat, Entries::Numbers);
    let found = table.unwrap().get(&3u32.to_be_bytes());
    assert!(
        matches!(&found, Err(Error::Corrupted(m)) if m.contains("list of no bytes")),
        "{found:?}"
    );
}

proptest! {
    #[test]
    fn lookups_and_prefix_scans_match_a_brute_force(
        entries in proptest::collection::btree_map(
            proptest::collection::vec(0u8..4, 0..6),
            (any::<u64>(), 0u64..1000),
            0..400,
        ),
        probes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..6), 1..20),
        pad in 0usize..50,
    ) {
        for layout in [Layout::Flat, Layout::Nested] {
            let (_file, table) = table_of(&entries, pad, layout);
            check_against(&table, &entries, &probes)?;
        }
    }

    #[test]
    fn number_tables_match_a_brute_force(
        numbers in proptest::collection::btree_set(any::<u32>(), 0..400),
        lists in proptest::collection::vec(0u64..40, 400),
        ordinals in proptest::collection::vec(any::<u32>(), 400),
        first_list in 0u64..1 << 40,
        probes in proptest::collection::vec(any::<u32>(), 1..20),
        pad in 0usize..50,
    ) {
        let numbers: Vec<u32> = numbers.into_iter().collect();
        let entries = number_entries(
            &numbers,
            |i| if lists[i] % 3 == 0 { lists[i] + 1 } else { 0 },
            |i| u64::from(ordinals[i]),
            first_list,
        );
        let mut probes: Vec<Vec<u8>> = probes.iter().map(|p| p.to_be_bytes().to_vec()).collect();
        probes.extend(numbers.iter().take(5).map(|n| n.to_be_bytes()[..2].to_vec()));
        probes.push(vec![]);
        for layout in [Layout::Flat, Layout::Nested] {
            let (_file, table) = table_with(&entries, pad, layout, Entries::Numbers);
            check_against(&table, &entries, &probes)?;
        }
    }

    #[test]
    fn a_damaged_section_is_read_or_refused_without_panicking(
        n in 0u32..300,
        noise in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        nested in any::<bool>(),
        packed in any::<bool>(),
    ) {
        let layout = if nested { Layout::Nested } else { Layout::Flat };
        let kind = if packed { Entries::Numbers } else { Entries::Prefixed };
        let numbers: Vec<u32> = (0..n).map(|k| k * 3).collect();
        let entries = number_entries(&numbers, |i| (i % 3 == 0) as u64 * 5, |i| i as u64, 9);
        let mut section = section_with(&entries, layout, kind);
        for (at, byte) in &noise {
            let at = at.index(section.len());
            section[at] = *byte;
        }
        let (_file, opened) = open_section_with(&section, 0, layout, kind);
        if let Ok(table) = opened {
            for k in (0..3 * n + 2).step_by(7) {
                let _ = table.get(&k.to_be_bytes());
            }
            let _ = table.prefix(&[0, 0], &mut |_, _, _| {});
        }
    }
}
