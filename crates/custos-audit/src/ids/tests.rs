use uuid::Uuid;

use super::{CHUNK_IDS, IdFile, IdTable};

fn id(n: usize) -> Uuid {
    Uuid::from_u128(n as u128 + 1)
}

fn table(len: usize) -> IdTable {
    let mut table = IdTable::default();
    for n in 0..len {
        table.push(id(n));
    }
    table
}

fn ids_of(table: &IdTable) -> Vec<Uuid> {
    table.since(0)
}

#[test]
fn a_prefix_holds_the_first_ids_and_numbers_its_own_without_touching_the_table() {
    let len = 2 * CHUNK_IDS + 100;
    let mut whole = table(len);
    for cut in [
        0,
        1,
        CHUNK_IDS - 1,
        CHUNK_IDS,
        CHUNK_IDS + 1,
        2 * CHUNK_IDS,
        len,
        len + 5,
    ] {
        let mut prefix = whole.prefix(cut);
        let kept = cut.min(len);
        assert_eq!(prefix.len(), kept);
        assert_eq!(ids_of(&prefix), (0..kept).map(id).collect::<Vec<_>>());
        assert_eq!(prefix.get(kept), None);
        // The prefix numbers ids of its own after its last; the table keeps its own.
        let own = Uuid::from_u128(u128::MAX - cut as u128);
        prefix.push(own);
        assert_eq!(prefix.get(kept), Some(own));
        assert_eq!(whole.len(), len);
        assert_eq!(whole.get(kept), (kept < len).then(|| id(kept)));
    }
    // And the table grows without the prefixes seeing it.
    let prefix = whole.prefix(len);
    whole.push(id(len));
    assert_eq!(prefix.len(), len);
    assert_eq!(prefix.get(len), None);
    assert_eq!(whole.get(len), Some(id(len)));
}

#[test]
fn truncating_a_table_leaves_its_prefixes_whole() {
    let len = CHUNK_IDS + 10;
    let mut whole = table(len);
    let prefix = whole.prefix(len);
    whole.truncate(3);
    whole.push(id(999));
    assert_eq!(ids_of(&whole), vec![id(0), id(1), id(2), id(999)]);
    assert_eq!(ids_of(&prefix), (0..len).map(id).collect::<Vec<_>>());
}

#[test]
fn a_table_read_from_its_file_of_several_chunks_holds_every_id_and_grows_and_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let len = 2 * CHUNK_IDS + 7;
    let file = IdFile::open(dir.path()).unwrap();
    file.write(0, &ids_of(&table(len))).unwrap();
    let mut read = file.read(len as u64).unwrap();
    assert_eq!(ids_of(&read), ids_of(&table(len)));
    let prefix = read.prefix(CHUNK_IDS + 3);
    read.push(id(len));
    read.truncate(CHUNK_IDS + 1);
    read.push(id(0));
    let mut expected: Vec<Uuid> = (0..=CHUNK_IDS).map(id).collect();
    expected.push(id(0));
    assert_eq!(ids_of(&read), expected);
    assert_eq!(
        ids_of(&prefix),
        (0..CHUNK_IDS + 3).map(id).collect::<Vec<_>>()
    );
    assert_eq!(read.get(CHUNK_IDS + 1), Some(id(0)));
    assert_eq!(read.get(CHUNK_IDS + 2), None);
}
