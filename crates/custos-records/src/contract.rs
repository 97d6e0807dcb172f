//! The contract of a record store, run against both engines: the embedded SQLite store
//! (`sqlite/tests.rs`) and PostgreSQL (`pg/tests.rs`). Each case gets a new store holding the
//! seeded entities.

mod differential;

use time::OffsetDateTime;

use uuid::Uuid;

use crate::Error;
use crate::metadata::{AttributeDef, AttributeType, OnDelete};
use crate::options::{QueryOptions, parse_query_options};
use crate::store::ImportRow;
use crate::store::{RecordChange, RecordQuery, RecordStore, WriteContext, WriteMode, WriteOutcome};
use crate::value::Value;

pub(crate) fn context() -> WriteContext {
    WriteContext {
        actor: Uuid::from_u128(1),
        now: OffsetDateTime::UNIX_EPOCH,
        platform: false,
        delegate: None,
    }
}

fn ok(_: &WriteOutcome) -> std::result::Result<(), String> {
    Ok(())
}

fn names(store: &dyn RecordStore, query: &[(&str, &str)]) -> Vec<String> {
    let options = parse_query_options(query.iter().copied()).unwrap();
    let page = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 5000,
        })
        .unwrap();
    page.records
        .iter()
        .map(|r| match &r.values["name"] {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn filters_run_as_parameterised_sql(store: &dyn RecordStore) {
    for (name, revenue) in [
        ("Alpha", 10.0),
        ("beta", 20.0),
        ("Gamma'; DROP TABLE rec_account; --", 30.0),
    ] {
        store
            .create(
                "account",
                None,
                vec![
                    ("name".into(), Value::String(name.into())),
                    ("revenue".into(), Value::Decimal(revenue)),
                ],
                context(),
                &mut ok,
            )
            .unwrap();
    }
    assert_eq!(
        names(
            store,
            &[("$filter", "revenue ge 20"), ("$orderby", "revenue desc")]
        )
        .len(),
        2
    );
    assert_eq!(
        names(store, &[("$filter", "name eq 'ALPHA'")]),
        vec!["Alpha"]
    );
    assert_eq!(
        names(store, &[("$filter", "contains(name,'DROP')")]).len(),
        1
    );
    assert_eq!(
        names(store, &[("$filter", "startswith(name,'%')")]).len(),
        0
    );
    assert_eq!(
        names(
            store,
            &[
                ("$filter", "not (revenue lt 30) or name eq 'beta'"),
                ("$orderby", "name")
            ]
        ),
        vec!["beta", "Gamma'; DROP TABLE rec_account; --"]
    );
    assert_eq!(
        names(
            store,
            &[
                ("$filter", "10 lt revenue and 1 eq 1"),
                ("$orderby", "name")
            ]
        ),
        vec!["beta", "Gamma'; DROP TABLE rec_account; --"],
        "a literal on the left, a constant"
    );
    assert_eq!(names(store, &[("$filter", "revenue ge revenue")]).len(), 3);
    assert_eq!(names(store, &[("$filter", "name eq telephone1")]).len(), 0);
    assert_eq!(
        names(store, &[("$filter", "telephone1 eq telephone1")]).len(),
        3,
        "two nulls are equal"
    );
    assert_eq!(names(store, &[("$filter", "telephone1 eq null")]).len(), 3);
    // Date-times are stored to the millisecond: a literal to the millisecond is exact, a finer
    // one equals none and orders against its millisecond.
    let options = parse_query_options([("$filter", "name eq 'Alpha'")]).unwrap();
    let page = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 1,
        })
        .unwrap();
    let Value::DateTime(created) = &page.records[0].values["createdon"] else {
        panic!("createdon is a date-time")
    };
    assert_eq!(created, "1970-01-01T00:00:00.000Z", "the stored form");
    assert_eq!(
        page.records[0].values["createdon"].to_json(),
        "1970-01-01T00:00:00Z",
        "whole seconds shown as Dataverse shows them"
    );
    let at = |op: &str, time: &str| {
        let filter = format!("name eq 'Alpha' and createdon {op} 1970-01-01T00:00:{time}Z");
        names(store, &[("$filter", filter.as_str())]).len()
    };
    assert_eq!(
        [
            at("eq", "00"),
            at("eq", "00.000"),
            at("eq", "00.001"),
            at("eq", "00.0009"),
            at("ne", "00.0009"),
            at("gt", "00.0005"),
            at("ge", "00.0005"),
        ],
        [1, 1, 0, 0, 1, 0, 0],
        "{created}"
    );
    assert_eq!(
        [
            at("lt", "00.0005"),
            at("le", "00.0001"),
            at("lt", "00"),
            at("lt", "00.001")
        ],
        [1, 1, 0, 1]
    );
    // A value with milliseconds is kept and found by them, not by its second.
    let id = store
        .create(
            "opportunity",
            None,
            vec![(
                "estimatedclosedate".into(),
                Value::DateTime("2019-01-05T20:30:49.999Z".into()),
            )],
            context(),
            &mut ok,
        )
        .unwrap()
        .id;
    let closing = |filter: &str| {
        let options = parse_query_options([("$filter", filter)]).unwrap();
        store
            .retrieve_multiple(&RecordQuery {
                entity: "opportunity",
                options: &options,
                page_size: 10,
            })
            .unwrap()
            .records
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        closing("estimatedclosedate eq 2019-01-05T20:30:49.999Z"),
        [id]
    );
    assert!(closing("estimatedclosedate eq 2019-01-05T20:30:49Z").is_empty());
    assert_eq!(
        closing("estimatedclosedate gt 2019-01-05T20:30:49.998Z"),
        [id]
    );
    assert_eq!(closing("estimatedclosedate lt 2019-01-05T20:30:50Z"), [id]);
    assert_eq!(
        names(store, &[("$filter", "telephone1 ne 'x'")]).len(),
        3,
        "ne matches nulls, as in OData"
    );
}

/// Text compares without case beyond ASCII, as Dataverse's collation does: equality, the string
/// functions, order and keyset paging, and an alternate key's values.
fn text_compares_without_case_beyond_ascii(store: &dyn RecordStore) {
    for name in ["Müller", "MÜLLER AG", "Élan", "zeta", "Ärger"] {
        create_account(store, name, None);
    }
    let filtered = |filter: &str| names(store, &[("$filter", filter), ("$orderby", "name")]);
    assert_eq!(filtered("name eq 'müller'"), ["Müller"]);
    assert_eq!(filtered("name eq 'ÉLAN'"), ["Élan"]);
    assert_eq!(filtered("name ne 'mÜller'").len(), 4);
    assert_eq!(filtered("contains(name, 'üll')"), ["Müller", "MÜLLER AG"]);
    assert_eq!(filtered("startswith(name, 'élA')"), ["Élan"]);
    assert_eq!(filtered("endswith(name, 'ÄRGER')"), ["Ärger"]);
    assert_eq!(filtered("name in ('ärger', 'ZETA')"), ["zeta", "Ärger"]);
    assert_eq!(
        filtered("name ge 'mÜller' and name lt 'ZETA'"),
        ["Müller", "MÜLLER AG"]
    );
    // Ordered by the lower-cased letters' code points, read whole or a record a page.
    let whole = ["Müller", "MÜLLER AG", "zeta", "Ärger", "Élan"];
    assert_eq!(paged_names(store, &[("$orderby", "name")], 5000), whole);
    assert_eq!(paged_names(store, &[("$orderby", "name")], 1), whole);
    let mut backwards = whole;
    backwards.reverse();
    assert_eq!(
        paged_names(store, &[("$orderby", "name desc")], 2),
        backwards
    );
    // A key's values are the same value whatever their case.
    let id = id_named(store, "Müller");
    store
        .update(
            "account",
            id,
            vec![("accountnumber".into(), Value::String("ÄB-1".into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap();
    let mut draft = store.draft("account").unwrap();
    draft.keys.push(account_number_key());
    store.save_draft(&draft).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    assert_eq!(
        store
            .find_by_key(
                "account",
                &[("accountnumber".into(), Value::String("äb-1".into()))]
            )
            .unwrap(),
        Some(id)
    );
    let taken = conflict(store.create(
        "account",
        None,
        vec![
            ("name".into(), Value::String("Other".into())),
            ("accountnumber".into(), Value::String("äb-1".into())),
        ],
        context(),
        &mut ok,
    ));
    assert!(taken.contains("accountnumber"), "{taken}");
}

fn type_errors_are_bad_requests(store: &dyn RecordStore) {
    for filter in [
        "revenue eq 'x'",
        "nosuch eq 1",
        "creditonhold gt true",
        "contains(revenue,'1')",
        "name eq revenue",
        "creditonhold gt creditonhold",
        "primarycontactid lt primarycontactid",
        "nosuch eq name",
    ] {
        let options = parse_query_options([("$filter", filter)]).unwrap();
        let error = store
            .retrieve_multiple(&RecordQuery {
                entity: "account",
                options: &options,
                page_size: 10,
            })
            .unwrap_err();
        assert!(matches!(error, Error::BadRequest(_)), "{filter}: {error}");
    }
    // A choice takes only its options.
    let industry = |code: i64| {
        store.create(
            "account",
            None,
            vec![
                ("name".into(), Value::String("Chosen".into())),
                ("industrycode".into(), Value::Integer(code)),
            ],
            context(),
            &mut ok,
        )
    };
    let error = industry(999).unwrap_err();
    assert!(
        matches!(&error, Error::BadRequest(m) if m.contains("7 (Consulting)")),
        "{error}"
    );
    let chosen = industry(7).unwrap();
    let attribute = store
        .catalog()
        .entity("account")
        .and_then(|a| a.attribute("industrycode").cloned())
        .unwrap();
    assert_eq!(attribute.label(7), Some("Consulting"));
    assert_eq!(
        chosen.after.unwrap().values["industrycode"],
        Value::Integer(7)
    );
}

fn paging_and_top(store: &dyn RecordStore) {
    for i in 0..7 {
        store
            .create(
                "account",
                None,
                vec![("name".into(), Value::String(format!("a{i}")))],
                context(),
                &mut ok,
            )
            .unwrap();
    }
    let options = parse_query_options([("$top", "5"), ("$count", "true")]).unwrap();
    let first = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 3,
        })
        .unwrap();
    assert_eq!(
        (
            first.records.len(),
            first.total,
            first.next.as_ref().map(|c| c.returned)
        ),
        (3, Some(7), Some(3))
    );
    let options = QueryOptions {
        after: first.next,
        ..options
    };
    let second = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 3,
        })
        .unwrap();
    assert_eq!((second.records.len(), second.next), (2, None));
}

/// Every page of `query` read through its cursors, as account names.
fn paged_names(store: &dyn RecordStore, query: &[(&str, &str)], page_size: u64) -> Vec<String> {
    let mut options = parse_query_options(query.iter().copied()).unwrap();
    let mut names = Vec::new();
    loop {
        let page = store
            .retrieve_multiple(&RecordQuery {
                entity: "account",
                options: &options,
                page_size,
            })
            .unwrap();
        names.extend(page.records.iter().map(account_name));
        match page.next {
            Some(cursor) => options.after = Some(cursor),
            None => return names,
        }
    }
}

fn account_name(record: &crate::store::Record) -> String {
    match record.values.get("name") {
        Some(Value::String(name)) => name.clone(),
        other => panic!("name {other:?}"),
    }
}

fn create_account(store: &dyn RecordStore, name: &str, employees: Option<i64>) {
    let mut values = vec![("name".to_string(), Value::String(name.into()))];
    if let Some(n) = employees {
        values.push(("numberofemployees".into(), Value::Integer(n)));
    }
    store
        .create("account", None, values, context(), &mut ok)
        .unwrap();
}

/// The next page starts after the last row shown, not at an offset: a record inserted before
/// the cursor is not repeated into the next page, one deleted after it makes nothing skip.
fn paging_is_stable_under_inserts_and_deletes(store: &dyn RecordStore) {
    for n in (0..24).step_by(2) {
        create_account(store, &format!("n{n:02}"), (n % 3 != 0).then_some(n));
    }
    for (order, first_page, doomed, second_page) in [
        (
            "name",
            ["n00", "n02", "n04", "n06"],
            "n08",
            ["n07", "n10", "n12", "n14"],
        ),
        (
            "numberofemployees desc,name",
            ["n22", "n20", "n16", "n14"],
            "n10",
            ["n07", "n08", "n04", "n02"],
        ),
    ] {
        let options = parse_query_options([("$orderby", order)]).unwrap();
        let query = |options: &QueryOptions| {
            store
                .retrieve_multiple(&RecordQuery {
                    entity: "account",
                    options,
                    page_size: 4,
                })
                .unwrap()
        };
        let first = query(&options);
        let shown: Vec<String> = first.records.iter().map(account_name).collect();
        assert_eq!(shown, first_page, "{order}");
        // Between the pages: n01 (21 employees) sorts before the cursor, n07 (11) after it, and
        // one of the next page's records is deleted.
        create_account(store, "n01", Some(21));
        create_account(store, "n07", Some(11));
        let id = id_named(store, doomed);
        store
            .delete("account", id, None, context(), &mut ok)
            .unwrap();
        let second = query(&QueryOptions {
            after: first.next.clone(),
            ..options.clone()
        });
        let shown: Vec<String> = second.records.iter().map(account_name).collect();
        assert_eq!(shown, second_page, "{order}");
        // The set as it was, for the next order.
        for name in ["n01", "n07"] {
            let id = id_named(store, name);
            store
                .delete("account", id, None, context(), &mut ok)
                .unwrap();
        }
        let n: i64 = doomed[1..].parse().unwrap();
        create_account(store, doomed, (n % 3 != 0).then_some(n));
    }
    // A cursor from another order, or text not made by the server, is a bad request.
    let by_name = parse_query_options([("$orderby", "name")]).unwrap();
    let cursor = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &by_name,
            page_size: 2,
        })
        .unwrap()
        .next
        .unwrap();
    let unordered = QueryOptions {
        after: Some(cursor),
        ..QueryOptions::default()
    };
    let error = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &unordered,
            page_size: 2,
        })
        .unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "{error}");
    for token in ["3", "WzMsW10sIngiXQ", "not base64!"] {
        let error = parse_query_options([("$skiptoken", token)]).unwrap_err();
        assert!(
            error.to_string().contains("@odata.nextLink"),
            "{token}: {error}"
        );
    }
}

fn id_named(store: &dyn RecordStore, name: &str) -> Uuid {
    let filter = format!("name eq '{name}'");
    let options = parse_query_options([("$filter", filter.as_str())]).unwrap();
    let page = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 2,
        })
        .unwrap();
    assert_eq!(page.records.len(), 1, "{name}");
    page.records[0].id
}

/// Read page by page in any order (nulls and ties included), the pages join into exactly the
/// one-page answer.
fn pages_join_into_the_whole_answer_in_any_order(store: &dyn RecordStore) {
    let mut dice = differential::Dice(7);
    for n in 0..40 {
        let employees = match dice.below(4) {
            0 => None,
            e => Some(e as i64),
        };
        // Names that differ only in case are equal to the order (NOCASE, citext) and to the keyset.
        let name = ["ab", "AB", "b", "Ca", "ca"][dice.below(5) as usize];
        create_account(store, &format!("{name}{n:02}"), employees);
        if dice.below(3) == 0 {
            create_account(store, name, employees);
        }
    }
    let columns = ["name", "numberofemployees", "creditonhold", "accountid"];
    for _ in 0..40 {
        let terms: Vec<String> = (0..=dice.below(2))
            .map(|_| {
                let column = columns[dice.below(columns.len() as u64) as usize];
                let direction = if dice.below(2) == 0 { "asc" } else { "desc" };
                format!("{column} {direction}")
            })
            .collect();
        let order = terms.join(",");
        let whole = paged_names(store, &[("$orderby", &order)], 5000);
        let page_size = 1 + dice.below(6);
        assert_eq!(
            paged_names(store, &[("$orderby", &order)], page_size),
            whole,
            "$orderby={order}, pages of {page_size}"
        );
        let top = dice.below(50).to_string();
        let topped = paged_names(store, &[("$orderby", &order), ("$top", &top)], page_size);
        assert_eq!(
            topped.len(),
            whole.len().min(top.parse().unwrap()),
            "$top={top}"
        );
        assert_eq!(
            topped[..],
            whole[..topped.len()],
            "$orderby={order} $top={top}"
        );
    }
}

fn a_refused_commit_rolls_the_change_back(store: &dyn RecordStore) {
    let error = store
        .create(
            "account",
            None,
            vec![("name".into(), Value::String("x".into()))],
            context(),
            &mut |_| Err("audit log down".into()),
        )
        .unwrap_err();
    assert!(matches!(error, Error::CommitRefused(_)));
    assert!(names(store, &[]).is_empty());
}

fn update_keeps_old_values_and_delete_keeps_the_record(store: &dyn RecordStore) {
    let created = store
        .create(
            "account",
            None,
            vec![("name".into(), Value::String("old".into()))],
            context(),
            &mut ok,
        )
        .unwrap();
    let updated = store
        .update(
            "account",
            created.id,
            vec![("name".into(), Value::String("new".into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap();
    assert_eq!(
        updated.before.unwrap().values["name"],
        Value::String("old".into())
    );
    assert_eq!(
        updated.after.unwrap().values["versionnumber"],
        Value::Integer(2)
    );
    // Conditional on a version (If-Match): a stale one changes nothing, the current one wins.
    for stale in [
        store.update(
            "account",
            created.id,
            vec![("name".into(), Value::String("lost".into()))],
            WriteMode::UpdateIfVersion(1),
            context(),
            &mut ok,
        ),
        store.delete("account", created.id, Some(1), context(), &mut ok),
    ] {
        assert!(
            matches!(stale, Err(Error::PreconditionFailed(_))),
            "{stale:?}"
        );
    }
    assert_eq!(
        store.retrieve("account", created.id).unwrap().values["name"],
        Value::String("new".into())
    );
    assert!(matches!(
        store.update(
            "account",
            Uuid::new_v4(),
            vec![],
            WriteMode::UpdateIfVersion(1),
            context(),
            &mut ok
        ),
        Err(Error::NotFound(_))
    ));
    let deleted = store
        .delete("account", created.id, Some(2), context(), &mut ok)
        .unwrap();
    assert_eq!(
        deleted.before.unwrap().values["name"],
        Value::String("new".into())
    );
    assert!(matches!(
        store.retrieve("account", created.id),
        Err(Error::NotFound(_))
    ));
}

fn drafts_take_effect_on_publish(store: &dyn RecordStore) {
    let mut draft = store.draft("account").unwrap();
    draft.retrieve_multiple_audit = true;
    store.save_draft(&draft).unwrap();
    assert!(
        !store
            .catalog()
            .entity("account")
            .unwrap()
            .retrieve_multiple_audit
    );
    let changed = store.publish_all(&mut |_| Ok(())).unwrap();
    assert_eq!(changed, vec!["account".to_string()]);
    assert!(
        store
            .catalog()
            .entity("account")
            .unwrap()
            .retrieve_multiple_audit
    );
}

fn account_number_key() -> crate::metadata::EntityKey {
    crate::metadata::EntityKey {
        logical_name: "new_number".into(),
        schema_name: "new_Number".into(),
        display_name: "Account number".into(),
        attributes: vec!["accountnumber".into()],
    }
}

fn conflict<T: std::fmt::Debug>(result: crate::Result<T>) -> String {
    match result {
        Err(Error::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn alternate_keys_let_no_two_records_share_their_values(store: &dyn RecordStore) {
    let number = |n: &str| ("accountnumber", Value::String(n.into()));
    let first = made(
        store,
        "account",
        &[("name", Value::String("First".into())), number("A-1")],
    );
    let second = made(
        store,
        "account",
        &[("name", Value::String("Second".into())), number("a-1")],
    );
    let mut draft = store.draft("account").unwrap();
    draft.keys.push(account_number_key());
    store.save_draft(&draft).unwrap();
    // Text is compared without case, as every comparison: "A-1" and "a-1" are the same value.
    let refused = conflict(store.publish_all(&mut |_| Ok(())));
    assert!(
        refused.contains("new_number") && refused.contains("accountnumber"),
        "{refused}"
    );
    assert!(store.catalog().entity("account").unwrap().keys.is_empty());
    let set_number = |id: Uuid, n: &str| {
        store.update(
            "account",
            id,
            vec![("accountnumber".into(), Value::String(n.into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
    };
    set_number(second, "B-2").unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    assert_eq!(
        store.catalog().entity("account").unwrap().keys,
        [account_number_key()]
    );
    let find = |n: &str| {
        store
            .find_by_key(
                "account",
                &[("accountnumber".into(), Value::String(n.into()))],
            )
            .unwrap()
    };
    assert_eq!(find("a-1"), Some(first));
    assert_eq!(find("B-2"), Some(second));
    assert_eq!(find("C-3"), None);

    let message = conflict(store.create(
        "account",
        None,
        vec![("accountnumber".into(), Value::String("a-1".into()))],
        context(),
        &mut ok,
    ));
    assert!(
        message.contains("accountnumber") && message.contains("new_number"),
        "{message}"
    );
    conflict(set_number(second, "A-1"));
    conflict(store.update(
        "account",
        Uuid::new_v4(),
        vec![("accountnumber".into(), Value::String("A-1".into()))],
        WriteMode::Upsert,
        context(),
        &mut ok,
    ));
    let failed = store
        .apply(
            vec![
                RecordChange::Create {
                    entity: "account".into(),
                    id: Uuid::new_v4(),
                    values: vec![("name".into(), Value::String("Third".into()))],
                },
                RecordChange::Create {
                    entity: "account".into(),
                    id: Uuid::new_v4(),
                    values: vec![("accountnumber".into(), Value::String("B-2".into()))],
                },
            ],
            context(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
    assert_eq!(failed.index, Some(1));
    assert!(matches!(failed.error, Error::Conflict(_)), "{failed:?}");
    assert!(!names(store, &[]).contains(&"Third".to_string()));
    // A record keeps its own values (an update of another attribute is no conflict), and
    // records without a value are not named by the key, however many.
    store
        .update(
            "account",
            first,
            vec![("name".into(), Value::String("First, renamed".into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap();
    made(
        store,
        "account",
        &[("name", Value::String("No number".into()))],
    );
    made(
        store,
        "account",
        &[("name", Value::String("No number".into()))],
    );

    let mut draft = store.draft("account").unwrap();
    draft.keys.clear();
    store.save_draft(&draft).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    set_number(second, "A-1").unwrap();
}

fn account_row(name: &str) -> ImportRow {
    (None, vec![("name".into(), Value::String(name.into()))])
}

fn an_import_creates_every_row_or_none(store: &dyn RecordStore) {
    let given = Uuid::from_u128(42);
    let mut seen = 0;
    let outcomes = store
        .import(
            "account",
            vec![
                (
                    Some(given),
                    vec![("name".into(), Value::String("A".into()))],
                ),
                account_row("B"),
            ],
            context(),
            &mut |outcomes| {
                seen = outcomes.len();
                Ok(())
            },
        )
        .unwrap();
    assert_eq!((outcomes.len(), seen), (2, 2));
    assert_eq!(outcomes[0].id, given);
    assert_eq!(names(store, &[("$orderby", "name")]), ["A", "B"]);

    // A duplicate id in the middle of a file undoes its earlier rows too.
    let error = store
        .import(
            "account",
            vec![account_row("C"), (Some(given), vec![])],
            context(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
    assert!(matches!(error, Error::Conflict(_)));
    // So does a refused commit.
    let error = store
        .import("account", vec![account_row("D")], context(), &mut |_| {
            Err("audit log down".into())
        })
        .unwrap_err();
    assert!(matches!(error, Error::CommitRefused(_)));
    assert_eq!(names(store, &[("$orderby", "name")]), ["A", "B"]);
}

/// A changeset: every change in order in one transaction — a later change sees an earlier one
/// (a contact bound to the account created before it) — and a failure anywhere, named by its
/// position, or a refused commit undoes all of them.
fn a_changeset_applies_every_change_or_none(store: &dyn RecordStore) {
    let text = |s: &str| Value::String(s.into());
    create_account(store, "Old", Some(5));
    let old = id_named(store, "Old");
    let version = |store: &dyn RecordStore| {
        store.retrieve("account", old).unwrap().values["versionnumber"].clone()
    };
    let before = version(store);
    let new_account = Uuid::from_u128(7);
    let contact = Uuid::from_u128(8);
    let changes = |last: RecordChange| {
        vec![
            RecordChange::Create {
                entity: "account".into(),
                id: new_account,
                values: vec![("name".into(), text("New"))],
            },
            RecordChange::Create {
                entity: "contact".into(),
                id: contact,
                values: vec![
                    ("lastname".into(), text("Bound")),
                    ("parentcustomerid".into(), Value::Guid(new_account)),
                ],
            },
            RecordChange::Update {
                entity: "account".into(),
                id: old,
                values: vec![("numberofemployees".into(), Value::Integer(6))],
                mode: WriteMode::UpdateOnly,
            },
            last,
        ]
    };
    let missing = RecordChange::Delete {
        entity: "account".into(),
        id: Uuid::from_u128(99),
        version: None,
    };
    let failed = store
        .apply(changes(missing), context(), &mut |_| Ok(()))
        .unwrap_err();
    assert_eq!(failed.index, Some(3));
    assert!(
        matches!(failed.error, Error::NotFound(_)),
        "{:?}",
        failed.error
    );
    let stale = RecordChange::Delete {
        entity: "account".into(),
        id: old,
        version: Some(-1),
    };
    let failed = store
        .apply(changes(stale), context(), &mut |_| Ok(()))
        .unwrap_err();
    assert_eq!(failed.index, Some(3));
    assert!(matches!(failed.error, Error::PreconditionFailed(_)));
    let refused = store
        .apply(
            changes(RecordChange::Delete {
                entity: "account".into(),
                id: new_account,
                version: None,
            }),
            context(),
            &mut |_| Err("audit log down".into()),
        )
        .unwrap_err();
    assert_eq!(refused.index, None);
    assert!(matches!(refused.error, Error::CommitRefused(_)));
    let unknown = store
        .apply(
            vec![RecordChange::Delete {
                entity: "nosuchentity".into(),
                id: old,
                version: None,
            }],
            context(),
            &mut |_| Ok(()),
        )
        .unwrap_err();
    assert_eq!(unknown.index, Some(0));
    // Nothing of the three attempts stayed.
    assert_eq!(names(store, &[]), ["Old"]);
    assert_eq!(version(store), before);
    assert!(ids_of(store, "contact").is_empty());

    // The whole changeset: the outcomes in order, all of them seen before the commit.
    let mut seen = Vec::new();
    let outcomes = store
        .apply(
            changes(RecordChange::Update {
                entity: "account".into(),
                id: new_account,
                values: vec![("name".into(), text("Renamed"))],
                mode: WriteMode::UpdateOnly,
            }),
            context(),
            &mut |outcomes| {
                seen = outcomes.iter().map(|o| o.id).collect();
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(seen, [new_account, contact, old, new_account]);
    assert!(outcomes[0].before.is_none() && outcomes[3].before.is_some());
    assert_eq!(
        store.retrieve("contact", contact).unwrap().values["parentcustomerid"],
        Value::Guid(new_account)
    );
    assert_eq!(names(store, &[("$orderby", "name")]), ["Old", "Renamed"]);
    assert_ne!(version(store), before);
}

fn a_read_past_its_time_is_stopped_and_a_write_never_is(store: &dyn RecordStore) {
    let limit = std::time::Duration::from_millis(1);
    store.limit_reads(limit);
    // One write of 20,000 records takes far longer than the reads' limit: it is not stopped.
    let rows = (0..20_000)
        .map(|i| account_row(&format!("account {i:05}")))
        .collect();
    store
        .import("account", rows, context(), &mut |_| Ok(()))
        .unwrap();
    // Two hundred patterns that match nothing, each tried against every name.
    let filter = (0..200)
        .map(|i| format!("contains(name,'no such text {i}')"))
        .collect::<Vec<_>>()
        .join(" or ");
    let heavy = [("$filter", filter.as_str())];
    let options = parse_query_options(heavy).unwrap();
    let error = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 50,
        })
        .unwrap_err();
    assert!(
        matches!(error, Error::TooLong(most) if most == limit),
        "{error}"
    );
    // Nor is a backup, which reads every record.
    let dir = tempfile::tempdir().unwrap();
    store.backup(&dir.path().join("backup.db")).unwrap();
    // Without the limit the same read is answered, and so is every read after it.
    store.limit_reads(std::time::Duration::ZERO);
    assert!(names(store, &heavy).is_empty());
    assert_eq!(
        names(store, &[("$filter", "name eq 'account 00042'")]),
        ["account 00042"]
    );
}

fn a_bulk_delete_removes_exactly_what_matched_up_to_its_limit(store: &dyn RecordStore) {
    let rows = ["Keep", "Drop 1", "Drop 2", "Drop 3"]
        .into_iter()
        .map(account_row)
        .collect();
    store
        .import("account", rows, context(), &mut |_| Ok(()))
        .unwrap();
    let options = parse_query_options([("$filter", "startswith(name,'Drop')")]).unwrap();
    let error = store
        .bulk_delete("account", &options, 2, context(), &mut |_| Ok(()))
        .unwrap_err();
    assert!(matches!(error, Error::BadRequest(_)), "over the limit");
    let error = store
        .bulk_delete("account", &options, 3, context(), &mut |_| {
            Err("down".into())
        })
        .unwrap_err();
    assert!(matches!(error, Error::CommitRefused(_)));
    assert_eq!(names(store, &[]).len(), 4, "nothing deleted yet");
    let deleted = store
        .bulk_delete("account", &options, 3, context(), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(deleted.len(), 3);
    assert!(deleted.iter().all(|d| d.after.is_none()
        && matches!(&d.before.as_ref().unwrap().values["name"], Value::String(n) if n.starts_with("Drop"))));
    assert_eq!(names(store, &[]), ["Keep"]);
}

fn a_contacts_full_name_is_composed_on_every_write(store: &dyn RecordStore) {
    let created = store
        .create(
            "contact",
            None,
            vec![("firstname".into(), Value::String("Ada".into()))],
            context(),
            &mut ok,
        )
        .unwrap();
    assert_eq!(
        created.after.unwrap().values["fullname"],
        Value::String("Ada".into())
    );
    let updated = store
        .update(
            "contact",
            created.id,
            vec![("lastname".into(), Value::String("Lovelace".into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap();
    assert_eq!(
        updated.after.unwrap().values["fullname"],
        Value::String("Ada Lovelace".into())
    );
    let error = store
        .update(
            "contact",
            created.id,
            vec![("fullname".into(), Value::String("X".into()))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap_err();
    assert!(
        matches!(error, Error::BadRequest(_)),
        "fullname is read-only"
    );
}

fn a_custom_entity_is_a_draft_until_published_and_its_attributes_can_be_deleted(
    store: &dyn RecordStore,
) {
    let mut project = crate::seed::custom_entity("new_project", "new_projects", 100);
    store.create_draft(&project).unwrap();
    assert!(store.catalog().entity("new_project").is_none(), "a draft");
    assert!(matches!(
        store.create_draft(&project),
        Err(Error::Conflict(_))
    ));
    let mut budget = AttributeDef::new("new_budget", AttributeType::Money);
    budget.custom = true;
    project.attributes.push(budget);
    store.save_draft(&project).unwrap();
    assert_eq!(store.publish_all(&mut |_| Ok(())).unwrap(), ["new_project"]);
    let id = store
        .create(
            "new_project",
            None,
            vec![
                ("new_name".into(), Value::String("Apollo".into())),
                ("new_budget".into(), Value::Decimal(25.5)),
            ],
            context(),
            &mut ok,
        )
        .unwrap()
        .id;
    store
        .create(
            "new_project",
            None,
            vec![("new_name".into(), Value::String("Gemini".into()))],
            context(),
            &mut ok,
        )
        .unwrap();

    assert!(
        matches!(
            store.delete_attribute("new_project", "new_name", &mut |_, _| Ok(())),
            Err(Error::BadRequest(_))
        ),
        "the primary name stays"
    );
    assert!(
        matches!(
            store.delete_attribute("account", "name", &mut |_, _| Ok(())),
            Err(Error::BadRequest(_))
        ),
        "out-of-box attributes stay"
    );
    let refused =
        store.delete_attribute("new_project", "new_budget", &mut |_, _| Err("down".into()));
    assert!(matches!(refused, Err(Error::CommitRefused(_))));
    assert!(
        store
            .catalog()
            .entity("new_project")
            .unwrap()
            .attribute("new_budget")
            .is_some()
    );

    let mut seen = Vec::new();
    store
        .delete_attribute("new_project", "new_budget", &mut |attribute, values| {
            assert_eq!(attribute.attribute_type, AttributeType::Money);
            seen = values.to_vec();
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, [(id, Value::Decimal(25.5))], "only non-empty values");
    assert!(
        store
            .catalog()
            .entity("new_project")
            .unwrap()
            .attribute("new_budget")
            .is_none()
    );
    assert!(
        store
            .draft("new_project")
            .unwrap()
            .attribute("new_budget")
            .is_none()
    );
    let record = store.retrieve("new_project", id).unwrap();
    assert!(!record.values.contains_key("new_budget"));
    assert_eq!(record.values["new_name"], Value::String("Apollo".into()));

    // A lookup added to a published entity gets its list index, and is deleted with it (SQLite
    // refuses to drop a column an index names).
    let mut project = store.draft("new_project").unwrap();
    let mut sponsor = AttributeDef::new(
        "new_sponsorid",
        AttributeType::Lookup {
            target: "account".into(),
            on_delete: OnDelete::RemoveLink,
        },
    );
    sponsor.custom = true;
    project.attributes.push(sponsor);
    store.save_draft(&project).unwrap();
    assert_eq!(store.publish_all(&mut |_| Ok(())).unwrap(), ["new_project"]);
    // A lookup names a record that exists: one that does not is refused, and nothing changes.
    let sponsor = Uuid::from_u128(7);
    let bind = |store: &dyn RecordStore| {
        store.update(
            "new_project",
            id,
            vec![("new_sponsorid".into(), Value::Guid(sponsor))],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
    };
    let refused = bind(store).unwrap_err();
    assert!(
        matches!(&refused, Error::BadRequest(m) if m.contains("does not exist")),
        "{refused:?}"
    );
    assert_eq!(
        store
            .retrieve("new_project", id)
            .unwrap()
            .values
            .get("new_sponsorid"),
        Some(&Value::Null)
    );
    store
        .create(
            "account",
            Some(sponsor),
            vec![("name".into(), Value::String("Sponsor".into()))],
            context(),
            &mut ok,
        )
        .unwrap();
    bind(store).unwrap();
    let options =
        parse_query_options([("$filter", &*format!("_new_sponsorid_value eq {sponsor}"))]).unwrap();
    let page = store
        .retrieve_multiple(&RecordQuery {
            entity: "new_project",
            options: &options,
            page_size: 10,
        })
        .unwrap();
    assert_eq!(page.records.len(), 1);
    store
        .delete_attribute("new_project", "new_sponsorid", &mut |_, _| Ok(()))
        .unwrap();
    assert!(
        !store
            .retrieve("new_project", id)
            .unwrap()
            .values
            .contains_key("new_sponsorid")
    );
}

fn a_custom_entity_is_deleted_with_its_records_and_nothing_else_is(store: &dyn RecordStore) {
    let project = crate::seed::custom_entity("new_project", "new_projects", 100);
    store.create_draft(&project).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    let id = store
        .create(
            "new_project",
            None,
            vec![("new_name".into(), Value::String("Apollo".into()))],
            context(),
            &mut ok,
        )
        .unwrap()
        .id;
    assert!(matches!(
        store.delete_entity("account", &mut |_, _| Ok(())),
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        store.delete_entity("new_project", &mut |_, _| Err("down".into())),
        Err(Error::CommitRefused(_))
    ));
    assert!(store.retrieve("new_project", id).is_ok(), "rolled back");
    // While another entity's lookup names it, even in a draft, it stays.
    let account = store.draft("account").unwrap();
    let mut naming = account.clone();
    let mut lookup = AttributeDef::new(
        "new_projectid",
        AttributeType::Lookup {
            target: "new_project".into(),
            on_delete: OnDelete::RemoveLink,
        },
    );
    lookup.custom = true;
    naming.attributes.push(lookup);
    store.save_draft(&naming).unwrap();
    let refused = store
        .delete_entity("new_project", &mut |_, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Conflict(m) if m.contains("account.new_projectid")),
        "{refused:?}"
    );
    store.save_draft(&account).unwrap();
    // Its records' shares go with it; another entity's stay.
    let (own, other) = (
        shared(store, id, "new_project"),
        shared(store, id, "account"),
    );
    let mut kept = Vec::new();
    store
        .delete_entity("new_project", &mut |definition, records| {
            assert_eq!(definition.logical_name, "new_project");
            kept = records.iter().map(|r| r.id).collect();
            Ok(())
        })
        .unwrap();
    assert_eq!(kept, [id]);
    assert!(store.retrieve("principalobjectaccess", own).is_err());
    assert!(store.retrieve("principalobjectaccess", other).is_ok());
    assert!(store.catalog().entity("new_project").is_none());
    assert!(matches!(
        store.draft("new_project"),
        Err(Error::NotFound(_))
    ));
    store.create_draft(&project).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    assert!(
        ids_of(store, "new_project").is_empty(),
        "a new table, empty"
    );
}

fn ids_of(store: &dyn RecordStore, entity: &str) -> Vec<Uuid> {
    let options = parse_query_options([]).unwrap();
    store
        .retrieve_multiple(&RecordQuery {
            entity,
            options: &options,
            page_size: 100,
        })
        .unwrap()
        .records
        .iter()
        .map(|r| r.id)
        .collect()
}

/// One case of the contract, run on a new store.
pub(crate) type Case = fn(&dyn RecordStore);

/// A list: its entity, query, the index that must serve it, whether the index gives its order.
type List = (&'static str, Query, &'static str, bool);
/// A query's options as (name, value) pairs.
type Query = &'static [(&'static str, &'static str)];

/// The lists a Dataverse user runs most, each with the index that must serve it and whether
/// that index gives the page's whole order (a descending list still sorts the ties of its
/// attribute by id ascending).
const LISTS: &[List] = &[
    (
        "account",
        &[(
            "$filter",
            "_ownerid_value eq 00000000-0000-0000-0000-000000000001",
        )],
        "rec_account.ownerid",
        true,
    ),
    ("account", &[("$orderby", "name")], "rec_account.name", true),
    (
        "account",
        &[(
            "$filter",
            "_primarycontactid_value eq 00000000-0000-0000-0000-000000000002",
        )],
        "rec_account.primarycontactid",
        true,
    ),
    (
        "account",
        &[
            ("$filter", "createdon ge 2026-01-01T00:00:00Z"),
            ("$orderby", "createdon"),
        ],
        "rec_account.createdon",
        true,
    ),
    (
        "account",
        &[("$orderby", "modifiedon desc")],
        "rec_account.modifiedon",
        false,
    ),
    (
        "contact",
        &[(
            "$filter",
            "_parentcustomerid_value eq 00000000-0000-0000-0000-000000000003",
        )],
        "rec_contact.parentcustomerid",
        true,
    ),
    (
        "workflow",
        &[("$filter", "statecode eq 1")],
        "rec_workflow.statecode",
        true,
    ),
    (
        "principalobjectaccess",
        &[(
            "$filter",
            "objectid eq 00000000-0000-0000-0000-000000000004",
        )],
        "rec_principalobjectaccess.objectid",
        true,
    ),
];

/// Every list of [`LISTS`] is read through its index, `plan` saying how the engine reads the
/// first page of 50 of an entity under a query; `sorts` tells whether a plan sorts every row.
pub(crate) fn the_lists_users_run_most_are_served_by_indexes(
    plan: &dyn Fn(&str, Query) -> String,
    sorts: &dyn Fn(&str) -> bool,
) {
    for (entity, query, index, ordered) in LISTS {
        let plan = plan(entity, query);
        assert!(
            plan.contains(index),
            "{query:?} is read through {index}: {plan}"
        );
        if *ordered {
            assert!(!sorts(&plan), "{query:?} needs no sort: {plan}");
        }
    }
}

/// Creates a record of `entity` with `values`, returning its id.
fn made(store: &dyn RecordStore, entity: &str, values: &[(&str, Value)]) -> Uuid {
    let values = values
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    store
        .create(entity, None, values, context(), &mut ok)
        .unwrap()
        .id
}

/// Shares record `object` of `entity` with a user for reading; the share's id.
fn shared(store: &dyn RecordStore, object: Uuid, entity: &str) -> Uuid {
    made(
        store,
        "principalobjectaccess",
        &[
            ("objectid", Value::Guid(object)),
            ("objecttypecode", Value::String(entity.into())),
            ("principalid", Value::Guid(Uuid::from_u128(5))),
            ("accessrightsmask", Value::Integer(1)),
        ],
    )
}

/// `(entity, id, deleted)` of each change a delete made to the records naming it, sorted.
fn reached(outcome: &WriteOutcome) -> Vec<(String, Uuid, bool)> {
    let mut reached: Vec<_> = outcome
        .cascaded
        .iter()
        .map(|o| (o.entity.clone(), o.id, o.after.is_none()))
        .collect();
    reached.sort();
    reached
}

fn a_delete_does_to_the_records_naming_it_what_their_lookups_say(store: &dyn RecordStore) {
    let name = |n: &str| ("name", Value::String(n.into()));
    let account = made(store, "account", &[name("Parent")]);
    let bound = |id: Uuid| Value::Guid(id);
    let first = made(store, "contact", &[("parentcustomerid", bound(account))]);
    let second = made(store, "contact", &[("parentcustomerid", bound(account))]);
    let unrelated = made(
        store,
        "contact",
        &[("lastname", Value::String("Other".into()))],
    );
    let case = made(store, "incident", &[("customerid", bound(account))]);
    let deal = made(store, "opportunity", &[("parentaccountid", bound(account))]);
    // Another account whose primary contact is one the delete takes with it.
    let other = made(
        store,
        "account",
        &[name("Other"), ("primarycontactid", bound(first))],
    );
    let alive = |entity: &str, id: Uuid| store.retrieve(entity, id).is_ok();
    // Shares of the account and of a contact go with them; one naming the account's id as
    // another entity's record stays.
    let shares = [
        shared(store, account, "account"),
        shared(store, first, "contact"),
    ];
    let unrelated_share = shared(store, account, "lead");

    // A refused commit rolls the whole cascade back.
    let refused = store.delete("account", account, None, context(), &mut |_| {
        Err("down".into())
    });
    assert!(matches!(refused, Err(Error::CommitRefused(_))));
    for (entity, id) in [
        ("account", account),
        ("contact", first),
        ("contact", second),
        ("incident", case),
    ] {
        assert!(alive(entity, id), "{entity} {id} rolled back");
    }
    assert_eq!(
        store.retrieve("account", other).unwrap().values["primarycontactid"],
        bound(first)
    );

    let mut seen = None;
    let outcome = store
        .delete("account", account, None, context(), &mut |outcome| {
            seen = Some(reached(outcome));
            Ok(())
        })
        .unwrap();
    let mut expected = vec![
        ("account".to_string(), other, false),
        ("contact".to_string(), first, true),
        ("contact".to_string(), second, true),
        ("incident".to_string(), case, true),
        ("opportunity".to_string(), deal, false),
        ("principalobjectaccess".to_string(), shares[0], true),
        ("principalobjectaccess".to_string(), shares[1], true),
    ];
    expected.sort();
    assert_eq!(
        reached(&outcome),
        expected,
        "contacts and cases go, links clear"
    );
    assert_eq!(
        seen,
        Some(expected),
        "the hook saw all of it before the commit"
    );
    for (entity, id) in [
        ("account", account),
        ("contact", first),
        ("contact", second),
        ("incident", case),
    ] {
        assert!(!alive(entity, id), "{entity} {id} deleted");
    }
    assert!(alive("contact", unrelated));
    assert!(shares.iter().all(|s| !alive("principalobjectaccess", *s)));
    assert!(alive("principalobjectaccess", unrelated_share));
    for (entity, id, lookup) in [
        ("opportunity", deal, "parentaccountid"),
        ("account", other, "primarycontactid"),
    ] {
        let record = store.retrieve(entity, id).unwrap();
        assert_eq!(
            record.values[lookup],
            Value::Null,
            "{entity}.{lookup} cleared"
        );
        assert_eq!(
            record.values["versionnumber"],
            Value::Integer(2),
            "a change"
        );
        assert_eq!(record.values["modifiedby"], Value::Guid(context().actor));
        let change = outcome.cascaded.iter().find(|o| o.id == id).unwrap();
        assert_eq!(change.before.as_ref().unwrap().values[lookup], {
            if entity == "opportunity" {
                bound(account)
            } else {
                bound(first)
            }
        });
    }

    // A custom lookup: `Restrict` refuses while a record names its target; `Cascade` on an
    // entity's lookup to itself ends, even round a cycle.
    let project = crate::seed::custom_entity("new_project", "new_projects", 100);
    store.create_draft(&project).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    let mut project = store.draft("new_project").unwrap();
    for (lookup, target, on_delete) in [
        ("new_sponsorid", "account", OnDelete::Restrict),
        ("new_parentid", "new_project", OnDelete::Cascade),
    ] {
        let mut attribute = AttributeDef::new(
            lookup,
            AttributeType::Lookup {
                target: target.into(),
                on_delete,
            },
        );
        attribute.custom = true;
        project.attributes.push(attribute);
    }
    store.save_draft(&project).unwrap();
    store.publish_all(&mut |_| Ok(())).unwrap();
    let sponsor = made(store, "account", &[name("Sponsor")]);
    let top = made(store, "new_project", &[("new_sponsorid", bound(sponsor))]);
    let restricted = store
        .delete("account", sponsor, None, context(), &mut ok)
        .unwrap_err();
    assert!(
        matches!(&restricted, Error::Conflict(m) if m.contains("new_sponsorid")),
        "{restricted:?}"
    );
    assert!(alive("account", sponsor) && alive("new_project", top));
    let below = made(store, "new_project", &[("new_parentid", bound(top))]);
    store
        .update(
            "new_project",
            top,
            vec![
                ("new_parentid".into(), bound(below)),
                ("new_sponsorid".into(), Value::Null),
            ],
            WriteMode::UpdateOnly,
            context(),
            &mut ok,
        )
        .unwrap();
    let round = store
        .delete("new_project", top, None, context(), &mut ok)
        .unwrap();
    assert_eq!(
        reached(&round),
        [("new_project".to_string(), below, true)],
        "the cycle ends at the record already deleted"
    );
    store
        .delete("account", sponsor, None, context(), &mut ok)
        .unwrap();

    // A bulk delete and a changeset's delete cascade the same way; a record a bulk delete
    // matched that an earlier delete's cascade took is not deleted twice.
    let parents: Vec<Uuid> = (0..2)
        .map(|_| made(store, "account", &[name("Bulk")]))
        .collect();
    let children: Vec<Uuid> = parents
        .iter()
        .map(|p| made(store, "contact", &[("parentcustomerid", bound(*p))]))
        .collect();
    let options = parse_query_options([("$filter", "name eq 'Bulk'")]).unwrap();
    let outcomes = store
        .bulk_delete("account", &options, 10, context(), &mut |_| Ok(()))
        .unwrap();
    let mut taken: Vec<Uuid> = outcomes
        .iter()
        .flat_map(|o| o.cascaded.iter().map(|c| c.id))
        .collect();
    taken.sort();
    let mut expected = children.clone();
    expected.sort();
    assert_eq!(taken, expected);
    assert!(children.iter().all(|c| !alive("contact", *c)));
    let parent = made(store, "account", &[name("Changeset")]);
    let child = made(store, "contact", &[("parentcustomerid", bound(parent))]);
    let applied = store
        .apply(
            vec![RecordChange::Delete {
                entity: "account".into(),
                id: parent,
                version: None,
            }],
            context(),
            &mut |_| Ok(()),
        )
        .unwrap();
    assert_eq!(reached(&applied[0]), [("contact".to_string(), child, true)]);
    assert!(!alive("contact", child));
}

/// Every case, by name.
pub(crate) const CASES: &[(&str, Case)] = &[
    (
        "a_read_past_its_time_is_stopped_and_a_write_never_is",
        a_read_past_its_time_is_stopped_and_a_write_never_is,
    ),
    (
        "filters_run_as_parameterised_sql",
        filters_run_as_parameterised_sql,
    ),
    (
        "random_filters_select_what_odata_selects",
        differential::random_filters_select_what_odata_selects,
    ),
    (
        "a_thousand_or_terms_select_what_they_name",
        differential::a_thousand_or_terms_select_what_they_name,
    ),
    (
        "text_compares_without_case_beyond_ascii",
        text_compares_without_case_beyond_ascii,
    ),
    ("type_errors_are_bad_requests", type_errors_are_bad_requests),
    ("paging_and_top", paging_and_top),
    (
        "paging_is_stable_under_inserts_and_deletes",
        paging_is_stable_under_inserts_and_deletes,
    ),
    (
        "pages_join_into_the_whole_answer_in_any_order",
        pages_join_into_the_whole_answer_in_any_order,
    ),
    (
        "a_refused_commit_rolls_the_change_back",
        a_refused_commit_rolls_the_change_back,
    ),
    (
        "update_keeps_old_values_and_delete_keeps_the_record",
        update_keeps_old_values_and_delete_keeps_the_record,
    ),
    (
        "drafts_take_effect_on_publish",
        drafts_take_effect_on_publish,
    ),
    (
        "alternate_keys_let_no_two_records_share_their_values",
        alternate_keys_let_no_two_records_share_their_values,
    ),
    (
        "an_import_creates_every_row_or_none",
        an_import_creates_every_row_or_none,
    ),
    (
        "a_changeset_applies_every_change_or_none",
        a_changeset_applies_every_change_or_none,
    ),
    (
        "a_bulk_delete_removes_exactly_what_matched_up_to_its_limit",
        a_bulk_delete_removes_exactly_what_matched_up_to_its_limit,
    ),
    (
        "a_delete_does_to_the_records_naming_it_what_their_lookups_say",
        a_delete_does_to_the_records_naming_it_what_their_lookups_say,
    ),
    (
        "a_contacts_full_name_is_composed_on_every_write",
        a_contacts_full_name_is_composed_on_every_write,
    ),
    (
        "a_custom_entity_is_a_draft_until_published_and_its_attributes_can_be_deleted",
        a_custom_entity_is_a_draft_until_published_and_its_attributes_can_be_deleted,
    ),
    (
        "a_custom_entity_is_deleted_with_its_records_and_nothing_else_is",
        a_custom_entity_is_deleted_with_its_records_and_nothing_else_is,
    ),
];
