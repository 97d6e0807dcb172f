//! Custom reports (a named search and a grouping) saved by an Audit Manager, run on demand and
//! on a schedule; and the data-subject report of one record.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

#[test]
fn a_saved_report_runs_on_demand_and_on_its_schedule() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "aud@contoso.test", "aud-password-1", "Audit Reader");
    let auditor = server.token("aud@contoso.test", "aud-password-1");
    for name in ["Ann", "Bea", "Cy"] {
        let response = send(
            client().post(server.api("contacts")),
            &admin,
            Some(json!({"lastname": name})),
        );
        assert_eq!(response.status(), 204);
    }
    let reports = format!("{}/api/audit/reports", server.base);
    let body = json!({"name": "Contacts created", "search": "operation=Create&entity=contact", "groupBy": "user", "schedule": "hourly", "rangeDays": 1});
    assert_eq!(
        odata_error(send(client().post(&reports), &auditor, Some(body.clone()))).0,
        403,
        "an Audit Reader cannot save reports"
    );
    for (bad, why) in [
        (json!({"search": "operation=Create"}), "name"),
        (json!({"name": "x", "groupBy": "colour"}), "groupBy"),
        (json!({"name": "x", "schedule": "monthly"}), "schedule"),
        (
            json!({"name": "x", "search": "start=2026-01-01"}),
            "filters only",
        ),
        (json!({"name": "x", "search": "origin=Nowhere"}), "origin"),
        (json!({"name": "x", "rangeDays": 0}), "rangeDays"),
    ] {
        let (status, _, message) =
            odata_error(send(client().post(&reports), &admin, Some(bad.clone())));
        assert_eq!(status, 400, "{bad}");
        assert!(message.contains(why), "{bad}: {message}");
    }
    let created = send(client().post(&reports), &admin, Some(body));
    assert_eq!(created.status(), 201);
    let saved: Value = created.json().unwrap();
    let id = saved["id"].as_str().unwrap().to_string();
    assert_eq!(saved["createdBy"], "admin");

    let listed = get_json(&reports, &auditor);
    let mine = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["kind"], "saved");
    let run = get_json(&format!("{reports}/{id}?bucket=hour"), &auditor);
    assert_eq!(run["total"], 3);
    assert_eq!(run["groupBy"], "user");
    assert_eq!(run["groups"], json!([{"user": "admin", "count": 3}]));
    assert!(
        run["searchLink"]
            .as_str()
            .unwrap()
            .contains("operation=Create&entity=contact")
    );

    // Scheduled: the first run happens at once and is kept.
    let started = Instant::now();
    let runs = loop {
        let runs = get_json(&format!("{reports}/{id}/runs"), &auditor);
        if !runs["value"].as_array().unwrap().is_empty() {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no scheduled run"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(runs["value"][0]["total"], 3);
    assert!(runs["value"][0]["ranAt"].is_string());
    let scheduled = server.audit(&admin, "operation=SearchAuditLog&user=system&q=scheduled");
    assert_eq!(
        scheduled.len(),
        1,
        "a scheduled run is recorded as the system's"
    );
    assert_eq!(scheduled[0]["Origin"], "Backend");

    let changed = send(
        client().put(format!("{reports}/{id}")),
        &admin,
        Some(
            json!({"name": "Contacts, by operation", "search": "entity=contact", "groupBy": "operation"}),
        ),
    );
    assert_eq!(changed.status(), 200);
    let run = get_json(&format!("{reports}/{id}"), &auditor);
    assert_eq!(run["name"], "Contacts, by operation");
    assert_eq!(run["groups"][0]["operation"], "Create");
    let put_preconfigured = send(
        client().put(format!("{reports}/signed-in-or-out")),
        &admin,
        Some(json!({"name": "mine now"})),
    );
    assert_eq!(odata_error(put_preconfigured).0, 409);
    assert_eq!(
        send(client().delete(format!("{reports}/{id}")), &admin, None).status(),
        204
    );
    assert_eq!(
        odata_error(send(
            client().get(format!("{reports}/{id}")),
            &auditor,
            None
        ))
        .0,
        404
    );
    let saves = server.audit(&admin, "operation=SaveAuditReport&status=Succeeded");
    assert_eq!(saves.len(), 2);
    assert_eq!(server.audit(&admin, "operation=DeleteAuditReport").len(), 1);
}

#[test]
fn the_data_subject_report_lists_every_touch_of_a_record() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isreadauditenabled": true}));
    server.set_entity_flags(&admin, "contact", json!({"IsRetrieveAuditEnabled": {"Value": true}, "IsRetrieveMultipleAuditEnabled": {"Value": true}}));
    server.publish(&admin);
    let created = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"lastname": "Subject"})),
    );
    let id = entity_id(&created);
    get_json(&server.api(&format!("contacts({id})")), &admin);
    get_json(&server.api("contacts"), &admin);
    let updated = send(
        client().patch(server.api(&format!("contacts({id})"))),
        &admin,
        Some(json!({"lastname": "Renamed"})),
    );
    assert_eq!(updated.status(), 204);
    let other = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"lastname": "Other"})),
    );
    assert_eq!(other.status(), 204);

    let report = get_json(&format!("{}/api/audit/subjects/{id}", server.base), &admin);
    assert_eq!(report["recordId"], id.as_str());
    assert_eq!(
        report["total"], 4,
        "created, read, listed and changed: {report}"
    );
    let mut operations: Vec<(String, u64)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["operation"].as_str().unwrap().to_string(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        vec![
            ("Create".into(), 1),
            ("Retrieve".into(), 1),
            ("RetrieveMultiple".into(), 1),
            ("Update".into(), 1)
        ]
    );
    assert_eq!(report["users"], json!([{"user": "admin", "count": 4}]));
    let (status, _, _) = odata_error(send(
        client().get(format!("{}/api/audit/subjects/nope", server.base)),
        &admin,
        None,
    ));
    assert_eq!(status, 400);
    let recorded = server.audit(&admin, &format!("operation=SearchAuditLog&recordId={id}"));
    assert_eq!(
        recorded.len(),
        1,
        "reading a subject's events is itself recorded against the record"
    );
}
