use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use super::*;

/// Writes `entries` as a table section after `pad` bytes of a file, and opens it.
fn table_of(
    entries: &BTreeMap<Vec<u8>, (u64, u64)>,
    pad: usize,
) -> (tempfile::NamedTempFile, Table) {
    let mut writer = TableWriter::default();
    for (key, (a, b)) in entries {
        writer.add(key, *a, *b);
    }
    let section = writer.finish();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&vec![0xee; pad]).unwrap();
    file.write_all(&section).unwrap();
    file.flush().unwrap();
    let table = Table::open(
        Arc::new(file.reopen().unwrap()),
        file.path().to_path_buf(),
        pad as u64,
        section.len() as u64,
    )
    .unwrap();
    (file, table)
}

#[test]
fn an_empty_table_finds_nothing() {
    let (_file, table) = table_of(&BTreeMap::new(), 3);
    assert_eq!(table.get(b"x").unwrap(), None);
    let mut seen = 0;
    table.prefix(b"", &mut |_, _, _| seen += 1).unwrap();
    assert_eq!(seen, 0);
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
        let (_file, table) = table_of(&entries, pad);
        for (key, values) in &entries {
            prop_assert_eq!(table.get(key).unwrap(), Some(*values));
        }
        for probe in &probes {
            prop_assert_eq!(table.get(probe).unwrap(), entries.get(probe).copied());
            let mut seen = Vec::new();
            table.prefix(probe, &mut |k, a, b| seen.push((k.to_vec(), (a, b)))).unwrap();
            let expect: Vec<(Vec<u8>, (u64, u64))> = entries
                .iter()
                .filter(|(k, _)| k.starts_with(probe))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            prop_assert_eq!(seen, expect);
        }
    }
}
