use super::*;
use crate::contract::CASES;
use crate::seed::seed_entities;
use crate::store::RecordStore;

/// A new store at `path` holding the seeded entities.
fn seeded_store(path: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(path).unwrap();
    store.install(&seed_entities()).unwrap();
    store
}

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

/// A store written before date-times kept milliseconds (`…:SSZ`) is rewritten to the
/// millisecond form once, when it is opened, so that its values order and compare with new
/// ones.
#[test]
fn date_times_kept_to_the_second_are_rewritten_to_milliseconds_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = seeded_store(&path);
    let context = crate::contract::context();
    let id = store
        .create("account", None, Vec::new(), context, &mut |_| Ok(()))
        .unwrap()
        .id;
    drop(store);
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "UPDATE rec_account SET createdon = '2019-01-05T20:30:49Z'; DELETE FROM custos_meta;",
    )
    .unwrap();
    drop(old);
    let store = SqliteStore::open(&path).unwrap();
    let record = store.retrieve("account", id).unwrap();
    assert_eq!(
        record.values["createdon"],
        Value::DateTime("2019-01-05T20:30:49.000Z".into())
    );
    // Once: a value written since in either form is left as it is.
    drop(store);
    let old = Connection::open(&path).unwrap();
    old.execute_batch("UPDATE rec_account SET createdon = '2019-01-05T20:30:50Z'")
        .unwrap();
    drop(old);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.retrieve("account", id).unwrap().values["createdon"],
        Value::DateTime("2019-01-05T20:30:50Z".into())
    );
}

/// A store whose text indexes SQLite's own `NOCASE` ordered (ASCII letters only: a build before
/// text compared without case beyond ASCII) has them rebuilt once when it is opened, so a lookup
/// through the index finds every value the comparison now calls equal.
#[test]
fn text_indexes_in_asciis_order_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = seeded_store(&path);
    let context = crate::contract::context();
    for n in 0..200 {
        let name = match n % 4 {
            0 => format!("Ärger {n:03}"),
            1 => format!("ärger {n:03}"),
            2 => format!("Zeta {n:03}"),
            _ => format!("émile {n:03}"),
        };
        store
            .create(
                "account",
                None,
                vec![("name".into(), Value::String(name))],
                context,
                &mut |_| Ok(()),
            )
            .unwrap();
    }
    drop(store);
    // As an earlier build left it: indexes in SQLite's own order, and no mark.
    let old = Connection::open(&path).unwrap();
    old.execute_batch("REINDEX NOCASE; DELETE FROM custos_meta WHERE key = 'caseless-indexes';")
        .unwrap();
    drop(old);
    let store = SqliteStore::open(&path).unwrap();
    let options =
        crate::options::parse_query_options([("$filter", "name eq 'ÄRGER 001'")]).unwrap();
    let page = store
        .retrieve_multiple(&crate::store::RecordQuery {
            entity: "account",
            options: &options,
            page_size: 10,
        })
        .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(
        page.records[0].values["name"],
        Value::String("ärger 001".into())
    );
    drop(store);
    let check = connect(&path).unwrap();
    let verdict: String = check
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
}

/// Two records whose key values an earlier build kept apart (`ÄB-1`, `äb-1`) are one value now:
/// the store says so when it is opened rather than keep a key that no longer holds.
#[test]
fn a_key_that_no_longer_holds_is_named_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = seeded_store(&path);
    let mut draft = store.draft("account").unwrap();
    draft.keys.push(crate::metadata::EntityKey {
        logical_name: "new_number".into(),
        schema_name: "new_Number".into(),
        display_name: "Account number".into(),
        attributes: vec!["accountnumber".into()],
    });
    store.save_draft(&draft).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    drop(store);
    // As an earlier build, comparing only ASCII without case, let them be.
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "DELETE FROM custos_meta WHERE key = 'caseless-indexes';
         INSERT INTO rec_account (accountid, accountnumber) VALUES ('00000000-0000-0000-0000-000000000001', 'ÄB-1');
         INSERT INTO rec_account (accountid, accountnumber) VALUES ('00000000-0000-0000-0000-000000000002', 'äb-1');",
    )
    .unwrap();
    drop(old);
    match SqliteStore::open(&path) {
        Err(Error::Conflict(message)) => assert!(message.contains("alternate key"), "{message}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened a store whose key no longer holds"),
    }
}

/// The lists a Dataverse user runs most are read through an index, on a new store and on one
/// written by a build that made none (its indexes are built when it is opened).
#[test]
fn the_lists_users_run_most_are_served_by_indexes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = SqliteStore::open(&path).unwrap();
    store.install(&seed_entities()).unwrap();
    let sorts = |plan: &str| plan.contains("USE TEMP B-TREE FOR ORDER BY");
    crate::contract::the_lists_users_run_most_are_served_by_indexes(
        &|entity, query| store.plan(entity, query),
        &sorts,
    );
    drop(store);
    let old = Connection::open(&path).unwrap();
    let indexes: Vec<String> = old
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'rec\\_%' ESCAPE '\\'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(indexes.len() >= 7, "{indexes:?}");
    for index in &indexes {
        old.execute_batch(&format!("DROP INDEX \"{index}\""))
            .unwrap();
    }
    drop(old);
    let store = SqliteStore::open(&path).unwrap();
    crate::contract::the_lists_users_run_most_are_served_by_indexes(
        &|entity, query| store.plan(entity, query),
        &sorts,
    );
}

/// A link planted at a database's name is refused, not followed; a folder reached through a
/// link (a data directory on another disk) opens as before.
#[test]
fn a_database_opens_through_a_linked_folder_but_never_through_a_link_at_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let real = outside.path().join("records.db");
    drop(SqliteStore::open(&real).unwrap());
    let before = std::fs::read(&real).unwrap();
    let linked = dir.path().join("records.db");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    let error = SqliteStore::open(&linked).err().expect("refused");
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert_eq!(std::fs::read(&real).unwrap(), before, "untouched");
    // The check before the open is a clear message; the flag is what holds if a link appears
    // between the check and the open.
    let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    assert!(Connection::open_with_flags(&linked, flags).is_err());

    let folder = dir.path().join("data");
    std::os::unix::fs::symlink(outside.path(), &folder).unwrap();
    let store = SqliteStore::open(&folder.join("records.db")).unwrap();
    store.install(&seed_entities()).unwrap();
}

/// A database, or a journal file beside it, with another name (a hard link) is not written
/// through; read-only it opens, as a copy of a data directory made with hard links does.
#[test]
fn a_database_with_another_name_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = SqliteStore::open(&path).unwrap();
    store.install(&seed_entities()).unwrap();
    drop(store);
    for name in ["records.db", "records.db-wal"] {
        let at = dir.path().join(name);
        if !at.exists() {
            std::fs::write(&at, b"").unwrap();
        }
        let other = outside.path().join(name);
        std::fs::hard_link(&at, &other).unwrap();
        let before = std::fs::read(&other).unwrap();
        let error = SqliteStore::open(&path).err().expect("refused");
        assert!(error.to_string().contains("a hard link"), "{error}");
        assert!(error.to_string().contains(name), "{error}");
        assert_eq!(std::fs::read(&other).unwrap(), before, "untouched");
        let read = open_own(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let tables: i64 = read
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .unwrap();
        assert!(tables > 0);
        drop(read);
        std::fs::remove_file(&other).unwrap();
    }
    SqliteStore::open(&path).unwrap();
}

/// A store written before `createdonbehalfby` and `modifiedonbehalfby` gets both when it is
/// opened — in its definitions, after `modifiedby`, and as columns, empty on the records it had —
/// and a write on someone's behalf then fills them in.
#[test]
fn a_store_from_before_the_delegate_attributes_gets_them_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let store = SqliteStore::open(&path).unwrap();
    store.install(&seed_entities()).unwrap();
    let context = |delegate| crate::store::WriteContext {
        actor: uuid::Uuid::from_u128(1),
        now: time::OffsetDateTime::UNIX_EPOCH,
        platform: false,
        delegate,
    };
    let old_id = store
        .create("account", None, Vec::new(), context(None), &mut |_| Ok(()))
        .unwrap()
        .id;
    drop(store);
    // The account as an earlier build left it.
    let old = Connection::open(&path).unwrap();
    let strip = |text: String| {
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["attributes"]
            .as_array_mut()
            .unwrap()
            .retain(|a| !a["name"].as_str().unwrap().ends_with("onbehalfby"));
        json.to_string()
    };
    let (published, draft): (String, String) = old
        .query_row(
            "SELECT published, draft FROM custos_entity WHERE logical_name = 'account'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    old.execute(
        "UPDATE custos_entity SET published = ?1, draft = ?2 WHERE logical_name = 'account'",
        [strip(published), strip(draft)],
    )
    .unwrap();
    for column in ["createdonbehalfby", "modifiedonbehalfby"] {
        old.execute_batch(&format!(
            "DROP INDEX \"rec_account.{column}\"; ALTER TABLE rec_account DROP COLUMN {column};"
        ))
        .unwrap();
    }
    old.execute_batch("DELETE FROM custos_meta").unwrap();
    drop(old);

    let store = SqliteStore::open(&path).unwrap();
    let account = store.catalog().entity("account").unwrap().clone();
    let names: Vec<&str> = account
        .attributes
        .iter()
        .map(|a| a.logical_name.as_str())
        .collect();
    let at = names.iter().position(|n| *n == "modifiedby").unwrap();
    assert_eq!(
        names[at + 1..at + 3],
        ["createdonbehalfby", "modifiedonbehalfby"]
    );
    assert!(account.attribute("createdonbehalfby").unwrap().read_only);
    assert_eq!(
        store.retrieve("account", old_id).unwrap().values["createdonbehalfby"],
        Value::Null
    );
    let sender = uuid::Uuid::from_u128(2);
    let new_id = store
        .create(
            "account",
            None,
            Vec::new(),
            context(Some(sender)),
            &mut |_| Ok(()),
        )
        .unwrap()
        .id;
    let values = store.retrieve("account", new_id).unwrap().values;
    assert_eq!(values["createdonbehalfby"], Value::Guid(sender));
    assert_eq!(values["modifiedonbehalfby"], Value::Guid(sender));
    // Once: opening again changes nothing.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.catalog().entity("account").unwrap(), &account);
}
