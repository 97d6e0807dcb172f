//! The console end to end in a real browser (Debian's Chromium driven by playwright-core,
//! `tests/e2e/console.mjs`): an admin turns on auditing, read auditing and retrieve multiple
//! auditing for account and publishes; a second user pages through the accounts view; an
//! auditor finds every account that user saw, sees the report's chart and exports the search
//! to xlsx, which Python's openpyxl reads back here. `scripts/test` installs the browser and
//! the packages.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

/// Record ids listed in the workbook's Records sheet, and the operations of its Events sheet.
fn read_workbook(path: &Path) -> (BTreeSet<String>, Vec<String>) {
    let records = xlsx_rows(path, "Records");
    assert_eq!(
        records[0],
        ["EventId", "Operation", "EntityName", "RecordId"].map(Value::from)
    );
    let events = xlsx_rows(path, "Events");
    let op = events[0]
        .iter()
        .position(|h| h == "Operation")
        .expect("an Operation column");
    let records = records[1..]
        .iter()
        .map(|r| r[3].as_str().unwrap().to_string())
        .collect();
    let operations = events[1..]
        .iter()
        .map(|e| e[op].as_str().unwrap().to_string())
        .collect();
    (records, operations)
}

#[test]
fn an_auditor_finds_every_account_a_user_saw_in_the_console() {
    assert!(
        Path::new(E2E).join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {E2E}: run scripts/test, which installs it and Chromium"
    );
    let streams = tempfile::tempdir().unwrap();
    let stream_file = streams.path().join("stream.jsonl");
    let server = Server::start(&["--stream-dir", streams.path().to_str().unwrap()]);
    let admin = server.admin();
    let mut created = BTreeSet::new();
    for i in 0..15 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("Account {i:02}"), "revenue": 1000 + i})),
        );
        assert_eq!(response.status(), 204);
        created.insert(entity_id(&response));
    }
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    server.add_user(&admin, "aud@contoso.test", "aud-password-1", "Audit Reader");

    let out = server.data_dir.with_file_name("e2e");
    let output = Command::new("node")
        .arg(Path::new(E2E).join("console.mjs"))
        .arg(&server.base)
        .arg(&out)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("USER_UPN", "bo@contoso.test")
        .env("USER_PASSWORD", "bo-password-1")
        .env("AUDITOR_UPN", "aud@contoso.test")
        .env("AUDITOR_PASSWORD", "aud-password-1")
        .env("STREAM_FILE", &stream_file)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let seen: BTreeSet<String> = result["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let found: BTreeSet<String> = result["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, created, "two pages showed every account, once");
    assert!(
        seen.is_subset(&found),
        "the auditor found every account the user saw"
    );

    // The workbook holds every record id of every page, read back by another program.
    let (in_workbook, operations) = read_workbook(Path::new(result["workbook"].as_str().unwrap()));
    assert!(seen.is_subset(&in_workbook));
    assert!(operations.iter().all(|o| o == "RetrieveMultiple"));
    assert!(operations.len() >= 2, "{operations:?}");

    // The records app's import and export to Excel, from the browser: a workbook another
    // program reads, and the events that say so.
    let contacts = xlsx_rows(Path::new(result["contacts"].as_str().unwrap()), "contacts");
    let lastnames: BTreeSet<&str> = contacts[1..]
        .iter()
        .filter_map(|row| {
            let column = contacts[0].iter().position(|h| h == "lastname")?;
            row[column].as_str()
        })
        .collect();
    assert_eq!(lastnames, BTreeSet::from(["Lovelace", "Turing"]));
    let import = server.audit(&admin, "operation=ImportRecords");
    assert_eq!(import.len(), 1);
    assert_eq!(import[0]["Origin"], "WebUI");
    assert_eq!(import[0]["Query"], "people.csv");
    let export = server.audit(&admin, "operation=ExportToExcel");
    assert_eq!(export.len(), 1);
    assert_eq!(export[0]["RecordIds"].as_array().unwrap().len(), 2);
    assert_eq!(
        server
            .audit(&admin, "operation=BackupInstance&origin=AdminCenter")
            .len(),
        1
    );

    // What the console did is in the log as the console's: origin WebUI, the user, the pages.
    let pages = server.audit(&admin, "operation=RetrieveMultiple&user=bo@contoso.test");
    assert!(pages.len() >= 2);
    for page in &pages {
        assert_eq!(page["Origin"], "WebUI", "{page}");
        assert_eq!(page["EntityName"], "account");
        assert!(
            page["UserAgent"].as_str().unwrap().contains("Chrome"),
            "{page}"
        );
    }
    let published = server.audit(&admin, "operation=PublishAllCustomizations");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["Origin"], "WebUI");
    let exports = server.audit(&admin, "operation=ExportAuditLog");
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["Origin"], "Export");
    assert_eq!(exports[0]["UserUpn"], "aud@contoso.test");
    // User access auditing went on before the admin signed out: every later sign-in and
    // sign-out is recorded, as the console's.
    let sign_outs = server.audit(&admin, "operation=SignOut");
    assert_eq!(
        sign_outs.len(),
        4,
        "four console sessions ended (the admin's second on a phone)"
    );
    let sign_ins = server.audit(&admin, "operation=SignIn&origin=WebUI");
    let upns: BTreeSet<&str> = sign_ins
        .iter()
        .map(|e| e["UserUpn"].as_str().unwrap())
        .collect();
    assert_eq!(
        upns,
        BTreeSet::from(["admin", "aud@contoso.test", "bo@contoso.test"])
    );

    // The feed and the stream were set from the console, and the stream wrote the whole log.
    for operation in ["StartFeedSubscription", "SaveAuditStream"] {
        let set = server.audit(&admin, &format!("operation={operation}&origin=WebUI"));
        assert_eq!(set.len(), 1, "{operation} from the console");
    }
    let streamed = std::fs::read_to_string(&stream_file).unwrap();
    let first: Value = serde_json::from_str(streamed.lines().next().unwrap()).unwrap();
    let oldest = server.audit(&admin, "");
    assert_eq!(&first, oldest.last().unwrap(), "from the start of the log");

    for shot in result["shots"].as_array().unwrap() {
        let size = std::fs::metadata(shot.as_str().unwrap()).unwrap().len();
        assert!(size > 10_000, "{shot} is a real screenshot");
    }
    if let Ok(folder) = std::env::var("CUSTOS_SCREENSHOTS") {
        for shot in result["shots"].as_array().unwrap() {
            let from = Path::new(shot.as_str().unwrap());
            std::fs::copy(from, Path::new(&folder).join(from.file_name().unwrap())).unwrap();
        }
    }
}
