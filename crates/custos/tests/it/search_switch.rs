//! Audit log search on and off (SPEC §8): only an Audit Manager or global admin switches it,
//! switching is recorded, reading the trail is refused while it is off, recording goes on, and
//! a restart keeps the switch.

use serde_json::{Value, json};

use crate::common::*;

fn switch(server: &Server, token: &str, body: Value) -> reqwest::blocking::Response {
    send(
        client().put(format!("{}/api/audit/settings", server.base)),
        token,
        Some(body),
    )
}

#[test]
fn search_off_refuses_reading_but_recording_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    server.add_user(&admin, "aud@contoso.test", "aud-password-1", "Audit Reader");
    let auditor = server.token("aud@contoso.test", "aud-password-1");
    assert_eq!(
        odata_error(switch(&server, &auditor, json!({"searchEnabled": false}))).0,
        403,
        "an Audit Reader cannot switch search off"
    );
    for bad in [
        json!({"searchEnabled": "no"}),
        json!({"search": false}),
        json!([]),
    ] {
        assert_eq!(
            odata_error(switch(&server, &admin, bad.clone())).0,
            400,
            "{bad}"
        );
    }
    let off = switch(&server, &admin, json!({"searchEnabled": false}));
    assert_eq!(off.status(), 200);
    assert_eq!(
        off.json::<Value>().unwrap(),
        json!({"searchEnabled": false})
    );

    let created = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "made while search was off"})),
    );
    assert_eq!(created.status(), 204, "recording goes on");
    let account = entity_id(&created);
    for path in ["records", "reports/signed-in-or-out", "export?format=csv"] {
        let (status, code, message) = odata_error(send(
            client().get(format!("{}/api/audit/{path}", server.base)),
            &auditor,
            None,
        ));
        assert_eq!((status, code.as_str()), (409, "Conflict"), "{path}");
        assert!(message.contains("turned off"), "{message}");
    }
    server.kill();

    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    let refused = send(
        client().get(format!("{}/api/audit/records", server.base)),
        &admin,
        None,
    );
    assert_eq!(refused.status(), 409, "a restart keeps search off");
    let settings = get_json(&format!("{}/api/audit/settings", server.base), &admin);
    assert_eq!(settings, json!({"searchEnabled": false}));
    assert_eq!(
        switch(&server, &admin, json!({"searchEnabled": true})).status(),
        200
    );
    let found = server.audit(&admin, &format!("operation=Create&recordId={account}"));
    assert_eq!(
        found.len(),
        1,
        "the create made while search was off was recorded"
    );
    let switches = server.audit(&admin, "operation=SetAuditLogSearch&status=Succeeded");
    let details: Vec<&Value> = switches.iter().map(|e| &e["Details"]).collect();
    assert_eq!(
        details,
        vec![
            &json!({"New": true, "Old": false}),
            &json!({"New": false, "Old": true})
        ],
        "both switches are recorded, newest first"
    );
    let denied = server.audit(&admin, "operation=SetAuditLogSearch&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "aud@contoso.test");
    let failed = server.audit(&admin, "operation=SetAuditLogSearch&status=Failed");
    assert_eq!(failed.len(), 3, "the three bad bodies");
}
