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

    let again = demo(&server);
    assert!(
        again.status.success(),
        "a second demo on the same server failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}
