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
    let (file, table) = open_section(&section_of(entries, layout), pad, layout);
    (file, table.unwrap())
}

/// Writes `section` after `pad` bytes of a file and opens it as a table in `layout`.
fn open_section(
    section: &[u8],
    pad: usize,
    layout: Layout,
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
    );
    (file, table)
}

fn section_of(entries: &BTreeMap<Vec<u8>, (u64, u64)>, layout: Layout) -> Vec<u8> {
    let mut writer = TableWriter::default();
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
    fn a_damaged_section_is_read_or_refused_without_panicking(
        n in 0u32..300,
        noise in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        nested in any::<bool>(),
    ) {
        let layout = if nested { Layout::Nested } else { Layout::Flat };
        let entries: BTreeMap<Vec<u8>, (u64, u64)> =
            (0..n).map(|k| (k.to_be_bytes().to_vec(), (u64::from(k), 0))).collect();
        let mut section = section_of(&entries, layout);
        for (at, byte) in &noise {
            let at = at.index(section.len());
            section[at] = *byte;
        }
        let (_file, opened) = open_section(&section, 0, layout);
        if let Ok(table) = opened {
            for k in (0..n + 2).step_by(7) {
                let _ = table.get(&k.to_be_bytes());
            }
            let _ = table.prefix(&[0, 0], &mut |_, _, _| {});
        }
    }
}
