//! `custos demo --url URL` (SPEC §11) against a fresh server: it finishes, and afterwards every
//! operation of SPEC §4 is searchable, by several users, from every origin — and it can run
//! again on the same server.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// Every operation SPEC §4 names (its rows, with the admin events spelt out).
const SPEC_4: [&str; 40] = [
    "Create",
    "Update",
    "Delete",
    "Upsert",
    "Assign",
    "Share",
    "Retrieve",
    "RetrieveMultiple",
    "ExportToExcel",
    "BulkDelete",
    "ImportRecords",
    "SignIn",
    "SignOut",
    "UserAccessViaWeb",
    "UserAccessViaSdk",
    "PublishAllCustomizations",
    "DeleteAttribute",
    "CreateUser",
    "AddTeamMember",
    "AssignRole",
    "AddPrivilegesRole",
    "ImportSolution",
    "RemoveSolution",
    "BackupInstance",
    "RestoreInstance",
    "CreateInstance",
    "DeleteInstance",
    "ConvertTrialToPaid",
    "ActivateProcess",
    "ActivatePlugin",
    "UpdateAuditSettings",
    "SetRetention",
    "SetAuditLogSearch",
    "AccessInternalTool",
    "BackendCommand",
    "AccessAdminCenter",
    "CreateEntity",
    "CreateAttribute",
    "RunProcess",
    "RunPlugin",
];

fn demo(server: &Server) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["demo", "--url", &server.base, "--json"])
        .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("the custos binary runs")
}

#[test]
fn the_demo_day_leaves_every_operation_searchable() {
    let server = Server::start(&[]);
    let output = demo(&server);
    assert!(
        output.status.success(),
        "custos demo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    let admin = server.admin();
    for operation in SPEC_4 {
        let found = server.audit(&admin, &format!("operation={operation}"));
        assert!(!found.is_empty(), "no {operation} event after the demo");
        assert!(
            summary["operations"][operation].as_u64().unwrap_or(0) >= 1,
            "the summary misses {operation}"
        );
    }
    // The integration's upserts by the project's alternate key made two projects, changed one,
    // and its FetchXML list named both.
    assert_eq!(server.audit(&admin, "operation=CreateEntityKey").len(), 1);
    // A record's audit history was opened, and shows what Ann did to the account.
    let history = server.audit(&admin, "operation=RetrieveRecordChangeHistory");
    assert_eq!(history.len(), 1, "{history:#?}");
    assert!(
        history[0]["ResultCount"].as_u64().unwrap() >= 2,
        "{history:#?}"
    );
    let fetched: Vec<Value> = server
        .audit(&admin, "operation=RetrieveMultiple")
        .into_iter()
        .filter(|e| {
            e["Query"]
                .as_str()
                .unwrap_or_default()
                .contains("fetchXml=")
        })
        .collect();
    assert_eq!(fetched.len(), 1, "{fetched:#?}");
    assert_eq!(fetched[0]["ResultCount"], 2, "{:#?}", fetched[0]);
    let project = fetched[0]["EntityName"].as_str().unwrap();
    // An upsert that finds no record is recorded as the `Upsert` that created it.
    let created = record_ids(&server.audit(&admin, &format!("operation=Upsert&entity={project}")));
    let changed = server.audit(&admin, &format!("operation=Update&entity={project}"));
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(record_ids(&fetched), created);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert!(created.is_superset(&record_ids(&changed)));
    // Ann's "My accounts" view ran with Dataverse's EqualUserId: her four accounts, no others.
    let mine: Vec<Value> = server
        .audit(&admin, "operation=RetrieveMultiple&entity=account")
        .into_iter()
        .filter(|e| e["Details"]["ViewName"] == "My accounts")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert!(mine[0]["UserUpn"].as_str().unwrap().starts_with("ann-"));
    assert_eq!(mine[0]["ResultCount"], 4, "{:#?}", mine[0]);
    // Every preconfigured report has something to show after the demo day.
    let reports = get_json(&format!("{}/api/audit/reports", server.base), &admin);
    let preconfigured: Vec<&str> = reports["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] != "saved")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(preconfigured.len(), 9, "{reports}");
    for id in preconfigured {
        let report = get_json(&format!("{}/api/audit/reports/{id}", server.base), &admin);
        assert!(
            report["total"].as_u64().unwrap() > 0,
            "{id} is empty: {report}"
        );
    }
    let everything = server.audit(&admin, "");
    let origins: BTreeSet<&str> = everything
        .iter()
        .map(|e| e["Origin"].as_str().unwrap())
        .collect();
    assert_eq!(
        origins,
        BTreeSet::from([
            "AdminCenter",
            "Api",
            "Backend",
            "Export",
            "Ingest",
            "SupportTool",
            "WebUI"
        ])
    );
    let statuses: BTreeSet<&str> = everything
        .iter()
        .map(|e| e["ResultStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, BTreeSet::from(["Denied", "Failed", "Succeeded"]));
    let users: BTreeSet<&str> = everything
        .iter()
        .map(|e| e["UserUpn"].as_str().unwrap())
        .filter(|u| !u.is_empty())
        .collect();
    assert!(users.len() >= 6, "several users: {users:?}");
    let workloads: BTreeSet<&str> = everything
        .iter()
        .map(|e| e["Workload"].as_str().unwrap())
        .collect();
    assert!(
        workloads.contains("Payroll"),
        "ingested events sit beside Custos's"
    );

    let feed = get_json(
        &format!(
            "{}/api/v1.0/default/activity/feed/subscriptions/list",
            server.base
        ),
        &admin,
    );
    assert_eq!(feed[0]["status"], "enabled", "a SIEM follows the feed");

    let again = demo(&server);
    assert!(
        again.status.success(),
        "a second demo on the same server failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// SPEC §5's operations, each with who does it in the demo and the `Category`, `UserType` and
/// `Origin` its events must carry: (operation, extra filter, category, user type, origin).
fn spec_5(users: &Value) -> Vec<(&'static str, String, &'static str, u64, &'static str)> {
    let ann = format!("user={}", users["ann"].as_str().unwrap());
    let ben = format!("user={}", users["ben"].as_str().unwrap());
    let engineer = format!("user={}", users["engineer"].as_str().unwrap());
    let admin = "user=admin".to_string();
    let ok = "status=Succeeded";
    vec![
        (
            "Create",
            format!("{ann}&entity=account"),
            "accessed-out-of-box-entity",
            0,
            "Api",
        ),
        (
            "Retrieve",
            ann.clone(),
            "accessed-out-of-box-entity",
            0,
            "Api",
        ),
        (
            "RetrieveMultiple",
            format!("{ben}&origin=WebUI"),
            "accessed-out-of-box-entity",
            0,
            "WebUI",
        ),
        (
            "RetrieveMultiple",
            engineer.clone(),
            "accessed-out-of-box-entity",
            3,
            "SupportTool",
        ),
        (
            "Update",
            format!("{ann}&entity=contact"),
            "accessed-out-of-box-entity",
            0,
            "Api",
        ),
        (
            "Update",
            format!("{engineer}&entity=account"),
            "accessed-out-of-box-entity",
            3,
            "SupportTool",
        ),
        (
            "Delete",
            format!("{ann}&entity=account"),
            "accessed-out-of-box-entity",
            0,
            "Api",
        ),
        (
            "Upsert",
            ann.clone(),
            "accessed-out-of-box-entity",
            0,
            "Api",
        ),
        (
            "ExportToExcel",
            ann.clone(),
            "accessed-out-of-box-entity",
            0,
            "Export",
        ),
        (
            "BulkDelete",
            format!("{admin}&{ok}"),
            "performed-bulk-actions",
            2,
            "Api",
        ),
        (
            "ImportRecords",
            ann.clone(),
            "performed-bulk-actions",
            0,
            "Api",
        ),
        (
            "PublishAllCustomizations",
            admin.clone(),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        (
            "DeleteAttribute",
            format!("{admin}&{ok}"),
            "accessed-out-of-box-entity",
            2,
            "Api",
        ),
        (
            "CreateUser",
            admin.clone(),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        (
            "AddTeamMember",
            admin.clone(),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        (
            "AssignRole",
            admin.clone(),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        (
            "ImportSolution",
            admin.clone(),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        (
            "BackupInstance",
            admin.clone(),
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "RestoreInstance",
            admin.clone(),
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "CreateInstance",
            admin.clone(),
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "DeleteInstance",
            admin.clone(),
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "ConvertTrialToPaid",
            admin.clone(),
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "ActivateProcess",
            admin.clone(),
            "activated-process-or-plugin",
            2,
            "Api",
        ),
        (
            "ActivatePlugin",
            admin.clone(),
            "activated-process-or-plugin",
            2,
            "Api",
        ),
        (
            "SignIn",
            format!("{ann}&{ok}"),
            "signed-in-or-out",
            0,
            "Api",
        ),
        (
            "SignIn",
            format!("{ben}&origin=WebUI"),
            "signed-in-or-out",
            0,
            "WebUI",
        ),
        ("SignOut", ann.clone(), "signed-in-or-out", 0, "Api"),
        (
            "UpdateAuditSettings",
            format!("{admin}&entity=organization"),
            "accessed-admin-entity",
            2,
            "Api",
        ),
        ("SetRetention", admin.clone(), "", 2, "Api"),
        (
            "AccessAdminCenter",
            admin,
            "accessed-admin-center",
            2,
            "AdminCenter",
        ),
        (
            "AccessInternalTool",
            engineer.clone(),
            "accessed-internal-management-tool",
            3,
            "SupportTool",
        ),
        (
            "BackendCommand",
            engineer,
            "accessed-internal-management-tool",
            3,
            "Backend",
        ),
        (
            "RunProcess",
            "user=system".into(),
            "accessed-out-of-box-entity",
            4,
            "Backend",
        ),
    ]
}

#[test]
fn every_spec_5_operation_carries_its_category_user_type_and_origin() {
    let server = Server::start(&[]);
    let output = demo(&server);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let admin = server.admin();
    for (operation, filter, category, user_type, origin) in spec_5(&summary["users"]) {
        let events = server.audit(&admin, &format!("operation={operation}&{filter}"));
        assert!(!events.is_empty(), "no {operation} event for {filter}");
        for event in &events {
            assert_eq!(
                event["Category"], category,
                "{operation} ({filter}): {event}"
            );
            assert_eq!(
                event["UserType"], user_type,
                "{operation} ({filter}): {event}"
            );
            assert_eq!(event["Origin"], origin, "{operation} ({filter}): {event}");
        }
    }
}
