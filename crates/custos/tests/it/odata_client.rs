//! The Web API as tools written apart from Custos read its `$metadata`. An OData v4 client —
//! python-odata from PyPI, `odata_client.py` — works the Web API from the document alone, and
//! everything it did is in the log: each record it created, changed or deleted, every record
//! each page it followed showed, and those a navigation property's path showed, under their own
//! entity. An OpenAPI generator — odata-openapi from npm, OASIS's CSDL-to-OpenAPI — describes
//! every entity set from the document, and no answer to thousands of requests made from that
//! description is a server error or differs from it.

use std::collections::BTreeSet;
use std::process::Command;

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
    // An alternate key, which `$metadata` declares in an annotation the client must read past.
    server.add_account_number_key(&admin);
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

/// odata-openapi's command (`npm ci` in `tests/e2e`, which `scripts/test` runs).
const ODATA_OPENAPI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/e2e/node_modules/odata-openapi/lib/cli.js"
);

/// A server auditing changes, reads and lists of accounts and contacts, with an account and
/// its contact holding a value in every attribute, and odata-openapi's description of its
/// `$metadata` beside a schemathesis configuration that gives every path naming an account or
/// a contact those two (other keys are generated, and mostly answered 404).
struct Described {
    server: Server,
    admin: String,
    account: String,
    contact: String,
    /// Holds the description and the configuration.
    dir: tempfile::TempDir,
}

impl Described {
    fn new() -> Described {
        let server = Server::start(&[]);
        let admin = server.admin();
        // An alternate key: declared in `$metadata` for the generator to read past, and held
        // by every write the fuzzer sends.
        server.add_account_number_key(&admin);
        server.audit_reads_of(&admin, &["account", "contact"]);
        let created = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({
                "name": "Described", "accountnumber": "D-1", "revenue": 1234.5,
                "telephone1": "+1 555 0100", "emailaddress1": "d@example.com",
                "websiteurl": "https://example.com", "numberofemployees": 12, "industrycode": 1,
                "creditonhold": false, "description": "Seeded", "address1_city": "Lyon",
            })),
        );
        assert_eq!(created.status(), 204);
        let account = entity_id(&created);
        let made = send(
            client().post(server.api(&format!("accounts({account})/contact_parentcustomerid"))),
            &admin,
            Some(json!({
                "firstname": "Described", "lastname": "Contact", "emailaddress1": "c@example.com",
                "telephone1": "+1 555 0101", "jobtitle": "Clerk", "birthdate": "1990-01-02",
                "description": "Seeded",
            })),
        );
        assert_eq!(made.status(), 204);
        let contact = entity_id(&made);
        let bound = send(
            client().patch(server.api(&format!("accounts({account})"))),
            &admin,
            Some(json!({"primarycontactid@odata.bind": format!("/contacts({contact})")})),
        );
        assert_eq!(bound.status(), 204);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("schemathesis.toml"),
            format!(
                "[parameters]\n\"path.accountid\" = \"{account}\"\n\"path.contactid\" = \"{contact}\"\n"
            ),
        )
        .unwrap();
        let metadata = dir.path().join("metadata.xml");
        let csdl = send(client().get(server.api("$metadata")), &admin, None)
            .text()
            .unwrap();
        std::fs::write(&metadata, csdl).unwrap();
        let generated = Command::new("node")
            .arg(ODATA_OPENAPI)
            .args(["--skipBatchPath", "-t"])
            .arg(dir.path().join("webapi.openapi.json"))
            .arg(&metadata)
            .output()
            .expect("node runs (scripts/test installs odata-openapi)");
        assert!(
            generated.status.success(),
            "odata-openapi could not read $metadata:\n{}",
            String::from_utf8_lossy(&generated.stderr)
        );
        Described {
            server,
            admin,
            account,
            contact,
            dir,
        }
    }

    /// The OpenAPI document odata-openapi wrote.
    fn document(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("webapi.openapi.json")).unwrap())
            .unwrap()
    }

    /// Runs schemathesis from the description as `token` with `checks` (no deletes: they
    /// answer no body to check, and would take the two records away); how many requests it
    /// generated.
    fn fuzz(&self, token: &str, checks: &str) -> u64 {
        let document = self.dir.path().join("webapi.openapi.json");
        schemathesis(
            &self.dir.path().join("schemathesis.toml"),
            &document.to_string_lossy(),
            token,
            &[
                "--url",
                &self.server.api(""),
                "--checks",
                checks,
                "--exclude-method",
                "DELETE",
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                "15",
            ],
        )
    }
}

#[test]
fn every_answer_is_what_odata_openapi_reads_in_the_metadata() {
    let mut described = Described::new();
    let document = described.document();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/accounts",
        "/accounts({accountid})",
        "/accounts({accountid})/contact_parentcustomerid",
        "/contacts({contactid})/parentcustomerid",
        "/systemusers",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    // What lists refuse, the document does not offer (the Capabilities annotations).
    let list = document["paths"]["/accounts"]["get"]["parameters"].to_string();
    assert!(!list.contains("skip") && !list.contains("search"), "{list}");
    // What they take beyond OData's core: aggregation (the Aggregation annotation), so the
    // fuzzing below sends `$apply`s too.
    assert!(list.contains("#/components/parameters/apply"), "{list}");
    assert_eq!(
        document["components"]["parameters"]["apply"]["name"],
        "$apply"
    );

    // Every answer's status is one the description allows or an OData error, its content type
    // and headers as described, and its body of the schema odata-openapi derived from the
    // entity type: a property's type, its nullability, a key's format. (Not checked: the 204s
    // OData gives a create without `Prefer: return=representation` and an empty single-valued
    // navigation, which the generator does not describe, and the strictness of a body's
    // properties, which it leaves open.)
    let requests = described.fuzz(
        &described.admin,
        "not_a_server_error,response_schema_conformance,content_type_conformance,response_headers_conformance",
    );
    assert!(
        requests > 3000,
        "too few requests were generated: {requests}"
    );
    // The checks saw records, not only refusals: the log has the answered reads of both, by key
    // and by the paths from one to the other.
    let (server, admin) = (&described.server, &described.admin);
    let (account, contact) = (&described.account, &described.contact);
    for filters in [
        format!("operation=Retrieve&recordId={account}&status=Succeeded"),
        format!("operation=Retrieve&recordId={contact}&status=Succeeded"),
        format!("operation=RetrieveMultiple&entity=contact&recordId={contact}"),
        format!("operation=Update&recordId={account}"),
    ] {
        assert!(
            !server.audit(admin, &filters).is_empty(),
            "none of {filters}"
        );
    }

    // Whatever those requests did, the log that recorded them verifies.
    kill_and_verify(&mut described.server);
}

/// The attacker's view: a role that may only read accounts and contacts sends every request
/// the description allows, by the thousand. Nothing it may not do is done — no record changes,
/// no other entity is read — nothing is a server error, and every refusal is in the log.
#[test]
fn a_role_that_only_reads_accounts_and_contacts_does_nothing_more_whatever_it_sends() {
    let mut described = Described::new();
    let (server, admin) = (&described.server, described.admin.clone());
    let upn = "reader@contoso.test";
    let reader = server.user_holding(
        &admin,
        upn,
        "Account reader",
        &["prvReadaccount", "prvReadcontact"],
    );
    let before = |set: &str| get_json(&server.api(&format!("{set}?$orderby=createdon")), &admin);
    let (accounts, contacts, users) = (
        before("accounts"),
        before("contacts"),
        before("systemusers"),
    );

    let requests = described.fuzz(&reader, "not_a_server_error,response_schema_conformance");
    assert!(
        requests > 3000,
        "too few requests were generated: {requests}"
    );

    // Nothing changed: the records, their versions and the users are as they were.
    assert_eq!(before("accounts"), accounts);
    assert_eq!(before("contacts"), contacts);
    assert_eq!(before("systemusers"), users);
    // What succeeded was a read of an account or a contact; the rest was refused, and said so.
    let succeeded = server.audit(&admin, &format!("user={upn}&status=Succeeded"));
    assert!(!succeeded.is_empty());
    for event in &succeeded {
        let read = matches!(
            event["Operation"].as_str(),
            Some("Retrieve" | "RetrieveMultiple")
        );
        let entity = event["EntityName"].as_str().unwrap_or_default();
        assert!(
            read && matches!(entity, "account" | "contact"),
            "the reader did more than read accounts and contacts: {event:#}"
        );
    }
    let refused = server.audit(&admin, &format!("user={upn}&status=Denied"));
    assert!(
        refused.iter().any(|e| e["ErrorCode"] == "Forbidden"),
        "no refusal of the reader is in the log"
    );
    kill_and_verify(&mut described.server);
}
