//! Retention settings through the API: read by Audit Readers, changed only by Audit Managers,
//! validated, and every change recorded. (Purging itself is tested in custos-audit, where
//! events can carry old times.)

use serde_json::json;

use crate::common::*;

#[test]
fn retention_settings_are_guarded_validated_and_audited() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(
        &admin,
        "reader@contoso.test",
        "reader-password-1",
        "Audit Reader",
    );
    let reader = server.token("reader@contoso.test", "reader-password-1");
    let url = format!("{}/api/audit/retention", server.base);

    assert_eq!(
        get_json(&url, &reader),
        json!({"defaultDays": 90, "policies": []})
    );
    let wanted = json!({"defaultDays": 180, "policies": [
        {"name": "exports kept two years", "recordTypes": [], "operations": ["ExportToExcel"], "users": [], "days": 730},
        {"name": "admin forever", "recordTypes": ["CustosAdmin"], "operations": [], "users": [], "days": -1},
    ]});
    let (status, code, _) = odata_error(send(client().put(&url), &reader, Some(wanted.clone())));
    assert_eq!(
        (status, code.as_str()),
        (403, "Forbidden"),
        "an Audit Reader cannot change retention"
    );

    for (body, message) in [
        (
            json!({"defaultDays": 0}),
            "'defaultDays' must be -1 (forever) or 1 to 365000 days",
        ),
        (
            json!({"defaultDays": 90, "extra": 1}),
            "unknown property 'extra'",
        ),
        (
            json!({"defaultDays": 90, "policies": [{"name": "", "operations": ["X"], "days": 5}]}),
            "every policy needs a 'name'",
        ),
        (
            json!({"defaultDays": 90, "policies": [{"name": "all", "days": 5}]}),
            "must name record types, operations or users",
        ),
    ] {
        let (status, _, got) = odata_error(send(client().put(&url), &admin, Some(body)));
        assert_eq!(status, 400);
        assert!(got.contains(message), "'{got}' should contain '{message}'");
    }
    assert_eq!(
        get_json(&url, &admin)["defaultDays"],
        90,
        "refused changes change nothing"
    );

    let response = send(client().put(&url), &admin, Some(wanted.clone()));
    assert_eq!(response.status(), 200);
    assert_eq!(get_json(&url, &reader), wanted);
    let changes = server.audit(&admin, "operation=SetRetention");
    assert_eq!(
        changes.len(),
        6,
        "the denied attempt, the four invalid ones and the change are all recorded"
    );
    let done = changes
        .iter()
        .find(|e| e["ResultStatus"] == "Succeeded")
        .unwrap();
    assert_eq!(done["Details"]["New"], wanted);
    assert_eq!(done["Details"]["Old"]["defaultDays"], 90);
    assert_eq!(
        changes
            .iter()
            .filter(|e| e["ResultStatus"] == "Denied")
            .count(),
        1
    );
    assert_eq!(
        changes
            .iter()
            .filter(|e| e["ResultStatus"] == "Failed")
            .count(),
        4
    );

    let response = send(client().post(format!("{url}/run")), &admin, None);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().unwrap(),
        json!({"purged": []}),
        "nothing has expired on a new server"
    );
}
