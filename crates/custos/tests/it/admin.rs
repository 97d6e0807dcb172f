//! The admin center (SPEC §3, §4): instances created, converted and deleted; backup → change →
//! restore brings the records back while the audit log keeps every event, the restore included.

use std::collections::BTreeSet;

use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::common::*;

fn admin_url(server: &Server, path: &str) -> String {
    format!("{}/api/admin/{path}", server.base)
}

fn post(server: &Server, token: &str, path: &str, body: Value) -> Response {
    send(client().post(admin_url(server, path)), token, Some(body))
}

fn instance_api(server: &Server, instance: &str, path: &str) -> String {
    format!("{}/{instance}/api/data/v9.2/{path}", server.base)
}

fn names(server: &Server, token: &str) -> BTreeSet<String> {
    get_json(
        &instance_api(server, "sales", "accounts?$select=name"),
        token,
    )["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

fn create_sales_account(server: &Server, token: &str, name: &str) -> String {
    let response = send(
        client().post(instance_api(server, "sales", "accounts")),
        token,
        Some(json!({"name": name})),
    );
    assert_eq!(response.status(), 204);
    entity_id(&response)
}

#[test]
fn a_global_admin_runs_instances_and_restores_never_roll_back_the_log() {
    let server = Server::start(&[]);
    let admin = server.admin();

    let created = post(&server, &admin, "instances", json!({"name": "sales"}));
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    assert_eq!(created["state"], "trial");
    let listed = get_json(&admin_url(&server, "instances"), &admin);
    let listed: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["main", "sales"]);
    let access = server.audit(&admin, "operation=AccessAdminCenter");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["Origin"], "AdminCenter");
    assert_eq!(access[0]["Category"], "accessed-admin-center");
    let create = server.audit(&admin, "operation=CreateInstance&instance=sales");
    assert_eq!(create.len(), 1);
    assert_eq!(create[0]["Origin"], "AdminCenter");
    assert_eq!(create[0]["UserUpn"], "admin");
    assert_eq!(create[0]["RecordType"], "CustosAdmin");

    // The new instance is a whole instance: its own Web API, records and settings.
    create_sales_account(&server, &admin, "Before 1");
    let doomed = create_sales_account(&server, &admin, "Before 2");
    assert!(count(&server, &admin, "accounts") == 0, "main is untouched");

    assert_eq!(
        post(&server, &admin, "instances/sales/convert", json!({})).status(),
        200
    );
    let again = post(&server, &admin, "instances/sales/convert", json!({}));
    assert_eq!(odata_error(again).0, 409);
    assert_eq!(
        get_json(&admin_url(&server, "instances/sales"), &admin)["state"],
        "paid"
    );
    assert_eq!(
        server
            .audit(&admin, "operation=ConvertTrialToPaid&status=Succeeded")
            .len(),
        1
    );

    // Backup → change → restore. Retrieve multiple auditing of accounts is on in the snapshot;
    // read auditing for the instance is turned on only after it.
    let response = send(
        client().patch(instance_api(
            &server,
            "sales",
            "EntityDefinitions(LogicalName='account')",
        )),
        &admin,
        Some(json!({"IsRetrieveMultipleAuditEnabled": {"Value": true}})),
    );
    assert_eq!(response.status(), 204);
    let response = send(
        client().post(instance_api(&server, "sales", "PublishAllXml")),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let backup = post(
        &server,
        &admin,
        "instances/sales/backups",
        json!({"label": "before the changes"}),
    );
    assert_eq!(backup.status(), 201);
    let backup: Value = backup.json().unwrap();
    assert!(backup["bytes"].as_u64().unwrap() > 0);
    let after = create_sales_account(&server, &admin, "After");
    let response = send(
        client().delete(instance_api(
            &server,
            "sales",
            &format!("accounts({doomed})"),
        )),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let org = get_json(&instance_api(&server, "sales", "WhoAmI"), &admin)["OrganizationId"]
        .as_str()
        .unwrap()
        .to_string();
    let response = send(
        client().patch(instance_api(
            &server,
            "sales",
            &format!("organizations({org})"),
        )),
        &admin,
        Some(json!({"isreadauditenabled": true})),
    );
    assert_eq!(response.status(), 204);
    assert_eq!(
        names(&server, &admin),
        BTreeSet::from(["Before 1".to_string(), "After".to_string()])
    );
    let lists = || server.audit(&admin, "operation=RetrieveMultiple&instance=sales");
    assert_eq!(
        lists().len(),
        1,
        "read auditing is on: the list was recorded"
    );
    let events_before_restore = server.audit(&admin, "instance=sales").len();

    let restored = post(
        &server,
        &admin,
        "instances/sales/restore",
        json!({"backupId": backup["id"]}),
    );
    assert_eq!(restored.status(), 200);
    assert_eq!(
        names(&server, &admin),
        BTreeSet::from(["Before 1".to_string(), "Before 2".to_string()]),
        "the records are as they were at the backup"
    );
    let settings = get_json(
        &instance_api(&server, "sales", &format!("organizations({org})")),
        &admin,
    );
    assert_eq!(settings["isreadauditenabled"], false, "so are the settings");
    assert_eq!(
        lists().len(),
        1,
        "and the restored settings are in force: read auditing is off again"
    );

    // The log kept everything: the events of the undone changes, and the restore itself.
    let events = server.audit(&admin, "instance=sales");
    assert!(events.len() > events_before_restore);
    let restore = server.audit(&admin, "operation=RestoreInstance");
    assert_eq!(restore.len(), 1);
    assert_eq!(restore[0]["Details"]["BackupId"], backup["id"]);
    assert_eq!(restore[0]["Category"], "accessed-admin-center");
    assert_eq!(
        server
            .audit(&admin, &format!("recordId={after}&operation=Create"))
            .len(),
        1,
        "the create the restore undid is still in the log"
    );
    assert_eq!(
        server
            .audit(&admin, &format!("recordId={doomed}&operation=Delete"))
            .len(),
        1
    );
    assert_eq!(server.audit(&admin, "operation=BackupInstance").len(), 1);

    // A damaged backup is refused and changes nothing.
    let file = server
        .data_dir
        .join("backups/sales")
        .join(format!("{}.db", backup["id"].as_str().unwrap()));
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    create_sales_account(&server, &admin, "Kept");
    let refused = post(
        &server,
        &admin,
        "instances/sales/restore",
        json!({"backupId": backup["id"]}),
    );
    let (status, _, message) = odata_error(refused);
    assert_eq!(status, 409);
    assert!(message.contains("damaged"), "{message}");
    assert!(names(&server, &admin).contains("Kept"));

    // The instance and its backups survive a restart; deleting it keeps its events.
    let mut server = server;
    server.kill();
    let server = Server::start_in(&server.data_dir.clone(), &[]);
    let admin = server.admin();
    assert_eq!(
        get_json(&admin_url(&server, "instances/sales"), &admin)["backups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let response = send(
        client().delete(admin_url(&server, "instances/sales")),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let gone = send(
        client().get(instance_api(&server, "sales", "accounts")),
        &admin,
        None,
    );
    assert_eq!(gone.status(), 404);
    assert!(!server.data_dir.join("instances/sales").exists());
    assert!(!server.data_dir.join("backups/sales").exists());
    assert_eq!(server.audit(&admin, "operation=DeleteInstance").len(), 1);
    assert!(
        server.audit(&admin, "instance=sales").len() > events.len(),
        "the deleted instance's events stay searchable"
    );
    let last = send(
        client().delete(admin_url(&server, "instances/main")),
        &admin,
        None,
    );
    assert_eq!(odata_error(last).0, 409, "the last instance stays");
}

#[test]
fn only_a_global_admin_uses_the_admin_center_and_bad_input_changes_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(
        &admin,
        "sam@contoso.test",
        "sam-password-1",
        "System Administrator",
    );
    let sam = server.token("sam@contoso.test", "sam-password-1");
    let refused = post(&server, &sam, "instances", json!({"name": "shadow"}));
    assert_eq!(odata_error(refused).0, 403);
    let backup = post(&server, &sam, "instances/main/backups", json!({}));
    assert_eq!(odata_error(backup).0, 403);
    let denied = server.audit(&admin, "status=Denied&origin=AdminCenter");
    let operations: BTreeSet<&str> = denied
        .iter()
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        BTreeSet::from(["CreateInstance", "BackupInstance"])
    );
    assert!(denied.iter().all(|e| e["UserUpn"] == "sam@contoso.test"));

    for (body, status) in [
        (json!({}), 400),
        (json!({"name": "Bad Name"}), 400),
        (json!({"name": "api"}), 400),
        (json!({"name": "ok", "state": "gold"}), 400),
        (json!({"name": "main"}), 409),
    ] {
        let response = post(&server, &admin, "instances", body.clone());
        assert_eq!(odata_error(response).0, status, "{body}");
    }
    let response = send(
        client()
            .post(admin_url(&server, "instances"))
            .header("content-type", "application/json")
            .body("{not json"),
        &admin,
        None,
    );
    assert_eq!(odata_error(response).0, 400);
    for (path, body, status) in [
        ("instances/main/restore", json!({}), 400),
        ("instances/main/restore", json!({"backupId": "nope"}), 400),
        (
            "instances/main/restore",
            json!({"backupId": "0190a5f0-0000-7000-8000-000000000000"}),
            404,
        ),
        ("instances/nosuch/backups", json!({}), 404),
        ("instances/main/backups", json!({"label": 7}), 400),
        ("instances/nosuch/convert", json!({}), 404),
    ] {
        let response = post(&server, &admin, path, body.clone());
        assert_eq!(odata_error(response).0, status, "{path} {body}");
    }
    let listed = get_json(&admin_url(&server, "instances"), &admin);
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
    assert!(
        !server.data_dir.join("backups/main").exists()
            || std::fs::read_dir(server.data_dir.join("backups/main"))
                .unwrap()
                .next()
                .is_none()
    );
}
