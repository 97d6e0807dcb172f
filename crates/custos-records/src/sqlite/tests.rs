use super::*;
use crate::contract::CASES;
use crate::seed::seed_entities;
use crate::store::RecordStore;

#[test]
fn the_store_contract_holds_on_sqlite() {
    for (name, case) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("records.db")).unwrap();
        store.install(&seed_entities()).unwrap();
        eprintln!("case {name}");
        case(&store);
    }
}
