//! An OData v4 client written apart from Custos — python-odata from PyPI, `odata_client.py` —
//! works the Web API from its `$metadata` alone, and everything it did is in the log: each
//! record it created, changed or deleted, every record each page it followed showed, and those
//! a navigation property's path showed, under their own entity.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn python_odata_works_from_the_metadata_alone_and_the_log_holds_all_it_did() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account", "contact"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/odata_client.py");
    let output = python(&[script, &server.api(""), &admin], b"");
    assert!(
        output.status.success(),
        "python-odata failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));

    // What the client saw, each from the server's answers.
    assert!(
        strings(&seen["entity_sets"]).contains(&"accounts"),
        "{seen}"
    );
    assert_eq!(seen["fullname"], "Grace Hopper", "{seen}");
    assert_eq!(
        strings(&seen["rich"]),
        ["Interop 4", "Interop 3", "Interop 2"]
    );
    assert_eq!(seen["count"], 5);
    assert_eq!(seen["read"], json!({"name": "Interop 0", "revenue": 0.0}));
    assert_eq!(seen["updated"], 12345.0);
    assert_eq!(seen["expanded"], "Interop 0");
    assert_eq!(strings(&seen["staff"]), ["Ada Lovelace", "Grace Hopper"]);
    assert_eq!(seen["employer"], "Interop 1");
    assert_eq!(seen["moved"], "Interop 2");
    assert_eq!(seen["deleted"], true);

    let accounts: Vec<String> = strings(&seen["accounts"])
        .into_iter()
        .map(str::to_string)
        .collect();
    let contact = |last: &str| seen["contacts"][last].as_str().unwrap().to_string();
    let (hopper, lovelace, turing) = (contact("Hopper"), contact("Lovelace"), contact("Turing"));

    // Each write, under the client's user agent.
    let created = server.audit(&admin, "operation=Create");
    let mut made: BTreeSet<String> = accounts.iter().cloned().collect();
    made.extend([hopper.clone(), lovelace.clone(), turing.clone()]);
    assert_eq!(record_ids(&created), made);
    assert!(
        created
            .iter()
            .all(|e| e["UserAgent"].as_str().unwrap().starts_with("python-odata")),
        "{created:#?}"
    );
    let updated = server.audit(&admin, "operation=Update");
    assert_eq!(
        record_ids(&updated),
        BTreeSet::from([accounts[0].clone(), turing.clone()])
    );
    let deleted = server.audit(&admin, "operation=Delete");
    assert_eq!(record_ids(&deleted), BTreeSet::from([accounts[4].clone()]));

    // The filtered list came in pages of two; every record of every page is in the log.
    let lists = server.audit(&admin, "operation=RetrieveMultiple&entity=account");
    let rich: Vec<&Value> = lists
        .iter()
        .filter(|e| e["Query"].as_str().unwrap().contains("revenue ge 200"))
        .collect();
    assert_eq!(rich.len(), 2, "{lists:#?}");
    let rich: Vec<Value> = rich.into_iter().cloned().collect();
    assert_eq!(record_ids(&rich), accounts[2..].iter().cloned().collect());

    // The collection-valued navigation property's path: a list of contacts, those shown.
    let staff = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    let navigated: Vec<&Value> = staff
        .iter()
        .filter(|e| e["Details"]["NavigationProperty"] == "contact_parentcustomerid")
        .collect();
    assert_eq!(navigated.len(), 1, "{staff:#?}");
    assert_eq!(
        navigated[0]["Details"],
        json!({
            "NavigatedFrom": "account",
            "RecordId": accounts[0],
            "NavigationProperty": "contact_parentcustomerid",
        })
    );
    assert_eq!(
        record_ids(&[navigated[0].clone()]),
        BTreeSet::from([hopper, lovelace])
    );
    assert!(
        navigated[0]["Query"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "accounts({})/contact_parentcustomerid",
                accounts[0]
            )),
        "{:#}",
        navigated[0]
    );

    // The single-valued one: the account it points at, retrieved at that path, with the
    // contact's own read under the same correlation.
    let path = format!("contacts({turing})/parentcustomerid");
    let reads = server.audit(&admin, "operation=Retrieve&entity=account");
    let employer: Vec<&Value> = reads
        .iter()
        .filter(|e| e["Query"].as_str().unwrap().starts_with(&path))
        .collect();
    assert_eq!(employer.len(), 2, "{reads:#?}");
    let employers: BTreeSet<String> = employer
        .iter()
        .map(|e| e["RecordIds"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        employers,
        BTreeSet::from([accounts[1].clone(), accounts[2].clone()])
    );
    let contact_reads = server.audit(&admin, &format!("operation=Retrieve&recordId={turing}"));
    for event in employer {
        assert!(
            contact_reads
                .iter()
                .any(|c| c["CorrelationId"] == event["CorrelationId"]
                    && c["Query"].as_str().unwrap().starts_with(&path)),
            "{event:#}\n{contact_reads:#?}"
        );
    }
}
