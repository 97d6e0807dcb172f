//! Export to Excel and CSV, bulk delete and import (SPEC §3.1 and §4): the files are real
//! (openpyxl and a CSV reader read them back), every exported, deleted or imported record id is
//! in the log, and the events appear exactly when the settings say so.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

fn action(server: &Server, token: &str, name: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(name)), token, Some(body))
}

fn ids(values: &Value) -> BTreeSet<String> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn import(server: &Server, token: &str, content: &str) -> Value {
    let response = action(
        server,
        token,
        "ImportRecords",
        json!({"EntitySetName": "contacts", "Content": content, "FileName": "people.csv"}),
    );
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

#[test]
fn import_export_and_bulk_delete_are_recorded_with_every_record_id() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let given = "6a1b2c3d-0000-4000-8000-00000000abcd";
    let imported = import(
        &server,
        &admin,
        &format!(
            "contactid,firstname,lastname,emailaddress1,birthdate\n{given},Ada,Lovelace,ada@example.test,1815-12-10\n,Alan,Turing,alan@example.test,\n,Grace,Hopper,,1906-12-09\n"
        ),
    );
    assert_eq!(imported["CreatedCount"], 3);
    let imported_ids = ids(&imported["RecordIds"]);
    assert!(imported_ids.contains(given), "the file's id is kept");
    let ada = get_json(&server.api(&format!("contacts({given})")), &admin);
    assert_eq!(ada["lastname"], "Lovelace");
    assert_eq!(ada["birthdate"], "1815-12-10T00:00:00Z");
    assert!(
        ada["_ownerid_value"].is_string(),
        "the owner defaults to the importer"
    );

    let summary = server.audit(&admin, "operation=ImportRecords");
    assert_eq!(summary.len(), 1);
    assert_eq!(ids(&summary[0]["RecordIds"]), imported_ids);
    assert_eq!(summary[0]["ResultCount"], 3);
    assert_eq!(summary[0]["Category"], "performed-bulk-actions");
    assert_eq!(summary[0]["Query"], "people.csv");
    let creates = server.audit(&admin, "operation=Create&entity=contact");
    assert_eq!(
        creates.len(),
        3,
        "each imported record has its Create event"
    );
    for create in &creates {
        assert_eq!(create["CorrelationId"], summary[0]["CorrelationId"]);
    }
    let ada_create = creates
        .iter()
        .find(|c| c["RecordIds"] == json!([given]))
        .expect("Ada's create");
    assert!(
        ada_create["Changes"]
            .as_array()
            .unwrap()
            .contains(&json!({"Attribute": "lastname", "Old": null, "New": "Lovelace"}))
    );

    // A bad row refuses the whole file, names the row, and is recorded as failed.
    let before = count(&server, &admin, "contacts");
    let response = action(
        &server,
        &admin,
        "ImportRecords",
        json!({"EntitySetName": "contacts", "Content": "firstname,birthdate\nBea,1990-01-01\nCy,someday\n"}),
    );
    let (status, _, message) = odata_error(response);
    assert_eq!(status, 400);
    assert!(
        message.contains("row 3") && message.contains("birthdate"),
        "{message}"
    );
    assert_eq!(
        count(&server, &admin, "contacts"),
        before,
        "nothing imported"
    );
    let failed = server.audit(&admin, "operation=ImportRecords&status=Failed");
    assert_eq!(failed.len(), 1);

    // Export to Excel: a real workbook, and its event lists every exported record.
    let response = action(
        &server,
        &admin,
        "ExportToExcel",
        json!({"EntitySetName": "contacts", "Filter": "emailaddress1 ne null", "Select": "firstname,lastname", "OrderBy": "lastname"}),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let file = tempfile::Builder::new().suffix(".xlsx").tempfile().unwrap();
    std::fs::write(file.path(), response.bytes().unwrap()).unwrap();
    let rows = xlsx_rows(file.path(), "contacts");
    assert_eq!(
        rows[0],
        ["contactid", "firstname", "lastname"].map(Value::from)
    );
    assert_eq!(rows.len(), 3, "the two contacts with an e-mail address");
    assert_eq!(rows[1][2], "Lovelace");
    assert_eq!(rows[2][2], "Turing");
    let exported: BTreeSet<String> = rows[1..]
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    let exports = server.audit(&admin, "operation=ExportToExcel");
    assert_eq!(exports.len(), 1);
    assert_eq!(ids(&exports[0]["RecordIds"]), exported);
    assert_eq!(exports[0]["Origin"], "Export");
    assert_eq!(exports[0]["ResultCount"], 2);
    assert_eq!(
        exports[0]["Query"],
        "contacts?$filter=emailaddress1 ne null&$select=firstname,lastname&$orderby=lastname"
    );

    // CSV export of every contact reads back with a CSV reader; the file imports again.
    let response = action(
        &server,
        &admin,
        "ExportToExcel",
        json!({"EntitySetName": "contacts", "Format": "csv", "Select": "firstname,lastname"}),
    );
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".csv")
    );
    let text = response.text().unwrap();
    // As spreadsheet programs expect: a UTF-8 byte order mark, then rows ended by CRLF.
    let rows = text.strip_prefix('\u{feff}').expect("a byte order mark");
    let mut lines = rows.split_terminator("\r\n");
    assert_eq!(lines.next(), Some("contactid,firstname,lastname"));
    assert_eq!(lines.count(), 3, "{rows:?}");
    let response = action(
        &server,
        &admin,
        "ImportRecords",
        json!({"EntitySetName": "contacts", "Content": text}),
    );
    assert_eq!(
        odata_error(response).1,
        "Conflict",
        "importing the export again collides on the ids it carries"
    );

    // Bulk delete by query: the deleted records' values stay in the log.
    let response = action(
        &server,
        &admin,
        "BulkDelete",
        json!({"EntitySetName": "contacts", "Filter": "startswith(lastname,'T') or lastname eq 'Hopper'", "JobName": "Tidy up"}),
    );
    assert_eq!(response.status(), 200);
    let job: Value = response.json().unwrap();
    assert_eq!(job["DeletedCount"], 2);
    assert_eq!(count(&server, &admin, "contacts"), 1);
    let bulk = server.audit(&admin, "operation=BulkDelete");
    assert_eq!(bulk.len(), 1);
    assert_eq!(bulk[0]["ResultCount"], 2);
    assert_eq!(bulk[0]["Category"], "performed-bulk-actions");
    assert_eq!(bulk[0]["Details"]["JobName"], "Tidy up");
    assert_eq!(bulk[0]["Details"]["JobId"], job["JobId"]);
    let deletes = server.audit(&admin, "operation=Delete&entity=contact");
    assert_eq!(deletes.len(), 2);
    assert_eq!(
        deletes
            .iter()
            .flat_map(|d| ids(&d["RecordIds"]))
            .collect::<BTreeSet<_>>(),
        ids(&bulk[0]["RecordIds"])
    );
    let turing = deletes
        .iter()
        .find(|d| {
            d["Changes"]
                .as_array()
                .unwrap()
                .contains(&json!({"Attribute": "lastname", "Old": "Turing", "New": null}))
        })
        .expect("the deleted record's values are kept");
    assert!(
        turing["Changes"].as_array().unwrap().contains(
            &json!({"Attribute": "emailaddress1", "Old": "alan@example.test", "New": null})
        )
    );
}

#[test]
fn bulk_actions_follow_the_audit_settings_and_the_privileges() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let export = |token: &str| {
        action(
            &server,
            token,
            "ExportToExcel",
            json!({"EntitySetName": "contacts", "Format": "csv"}),
        )
    };
    import(&server, &admin, "firstname\nOne\nTwo\n");

    // Entity auditing off: the export and the per-record events are not recorded, the
    // import's summary is (bulk work needs only instance auditing).
    server.set_entity_flags(
        &admin,
        "contact",
        json!({"IsAuditEnabled": {"Value": false}}),
    );
    server.publish(&admin);
    assert_eq!(export(&bo).status(), 200, "a basic user may export");
    assert!(server.audit(&admin, "operation=ExportToExcel").is_empty());
    import(&server, &admin, "firstname\nThree\n");
    assert_eq!(server.audit(&admin, "operation=ImportRecords").len(), 2);
    assert_eq!(
        server
            .audit(&admin, "operation=Create&entity=contact")
            .len(),
        2,
        "only the first import's creates"
    );

    server.set_entity_flags(
        &admin,
        "contact",
        json!({"IsAuditEnabled": {"Value": true}}),
    );
    server.publish(&admin);
    assert_eq!(export(&bo).status(), 200);
    let exports = server.audit(&admin, "operation=ExportToExcel");
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["UserUpn"], "bo@contoso.test");
    assert_eq!(exports[0]["RecordIds"].as_array().unwrap().len(), 3);

    // Instance auditing off: nothing of the kind is recorded.
    server.set_org(&admin, json!({"isauditenabled": false}));
    assert_eq!(export(&bo).status(), 200);
    import(&server, &admin, "firstname\nFour\n");
    let response = action(
        &server,
        &admin,
        "BulkDelete",
        json!({"EntitySetName": "contacts", "Filter": "firstname eq 'Four'"}),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(server.audit(&admin, "operation=ExportToExcel").len(), 1);
    assert_eq!(server.audit(&admin, "operation=ImportRecords").len(), 2);
    assert!(server.audit(&admin, "operation=BulkDelete").is_empty());
    server.set_org(&admin, json!({"isauditenabled": true}));

    // Refusals are always recorded: a basic user may not bulk delete.
    let response = action(
        &server,
        &bo,
        "BulkDelete",
        json!({"EntitySetName": "contacts", "Filter": "firstname ne null"}),
    );
    let (status, _, message) = odata_error(response);
    assert_eq!(status, 403);
    assert!(message.contains("BulkDelete"), "{message}");
    let denied = server.audit(&admin, "operation=BulkDelete&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "bo@contoso.test");
    assert_eq!(denied[0]["EntityName"], "contact");
    assert_eq!(count(&server, &admin, "contacts"), 3, "nothing deleted");

    // Bad requests are 400s that change nothing.
    for body in [
        json!({"EntitySetName": "contacts"}),
        json!({"EntitySetName": "contacts", "Filter": "   "}),
        json!({"EntitySetName": "contacts", "Filter": "nosuch eq 1"}),
        json!({"EntitySetName": "contacts", "Filter": "firstname eq 'x'", "Extra": 1}),
        json!({"EntitySetName": "nosuch", "Filter": "name eq 'x'"}),
        json!({"EntitySetName": "organizations", "Filter": "name ne null"}),
    ] {
        let response = action(&server, &admin, "BulkDelete", body.clone());
        let status = response.status().as_u16();
        assert!(status == 400 || status == 404, "{body}: {status}");
    }
    for body in [
        json!({"EntitySetName": "contacts", "Format": "pdf"}),
        json!({"EntitySetName": "contacts", "Select": "nosuch"}),
        json!({"Format": "csv"}),
    ] {
        assert_eq!(
            action(&server, &admin, "ExportToExcel", body.clone()).status(),
            400,
            "{body}"
        );
    }
    assert_eq!(count(&server, &admin, "contacts"), 3);
}
