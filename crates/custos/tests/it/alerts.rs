//! Alerts: a volume rule (a user listed more than N records of an entity in M minutes) and an
//! operation rule (a delete by an admin) each raise an `AlertTriggered` event and reach their
//! webhook — after a refusal, by retrying.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

#[test]
fn rules_raise_alerts_in_the_log_and_at_their_webhook() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let (hook, received) = receiver();
    let alerts = format!("{}/api/audit/alerts", server.base);
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let volume = json!({"name": "Bulk viewing of accounts", "kind": "volume", "operations": ["RetrieveMultiple"], "entity": "account", "threshold": 5, "windowMinutes": 10, "webhook": hook});
    assert_eq!(
        odata_error(send(client().post(&alerts), &bo, Some(volume.clone()))).0,
        403
    );
    for (bad, why) in [
        (
            json!({"name": "x", "kind": "volume", "threshold": 0, "windowMinutes": 5}),
            "threshold",
        ),
        (
            json!({"name": "x", "kind": "volume", "threshold": 5, "windowMinutes": 0}),
            "windowMinutes",
        ),
        (json!({"name": "x", "kind": "operation"}), "operations"),
        (
            json!({"name": "x", "kind": "operation", "operations": ["Delete"], "userTypes": ["Boss"]}),
            "user type",
        ),
        (json!({"name": "x", "kind": "weather"}), "kind"),
        (
            json!({"name": "x", "kind": "operation", "operations": ["Delete"], "webhook": "ftp://x"}),
            "http",
        ),
    ] {
        let (status, _, message) =
            odata_error(send(client().post(&alerts), &admin, Some(bad.clone())));
        assert_eq!(status, 400, "{bad}");
        assert!(message.contains(why), "{bad}: {message}");
    }
    assert_eq!(
        send(client().post(&alerts), &admin, Some(volume)).status(),
        201
    );
    let deletes = json!({"name": "Delete by an admin", "kind": "operation", "operations": ["Delete"], "userTypes": ["Admin"], "webhook": hook});
    assert_eq!(
        send(client().post(&alerts), &admin, Some(deletes)).status(),
        201
    );
    assert_eq!(
        get_json(&alerts, &admin)["value"].as_array().unwrap().len(),
        2
    );

    server.audit_lists_of(&admin, "account");
    let mut last = String::new();
    for i in 0..8 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("A{i}")})),
        );
        last = entity_id(&response);
    }
    // Pages of 3, 3 and 2 records: the second page crosses 5 records.
    let mut url = server.api("accounts?$select=name");
    loop {
        let response = client()
            .get(&url)
            .bearer_auth(&admin)
            .header("Prefer", "odata.maxpagesize=3")
            .send()
            .unwrap();
        let page: Value = response.json().unwrap();
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(
        send(
            client().delete(server.api(&format!("accounts({last})"))),
            &admin,
            None
        )
        .status(),
        204
    );

    let started = Instant::now();
    let raised = loop {
        let raised = server.audit(&admin, "operation=AlertTriggered");
        if raised.len() >= 2 && received.lock().unwrap().len() >= 2 {
            break raised;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "alerts: {raised:?}, webhook: {:?}",
            received.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(raised.len(), 2, "one alert per rule: {raised:?}");
    let by_rule = |name: &str| {
        raised
            .iter()
            .find(|e| e["Details"]["Rule"] == name)
            .cloned()
            .unwrap()
    };
    let bulk = by_rule("Bulk viewing of accounts");
    assert_eq!(bulk["Details"]["Records"], 6);
    assert_eq!(bulk["Details"]["User"], "admin");
    assert_eq!(
        bulk["Details"]["TriggeringEvents"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(bulk["UserUpn"], "system");
    assert_eq!(bulk["Origin"], "Backend");
    let delete = by_rule("Delete by an admin");
    assert_eq!(delete["EntityName"], "account");
    let bodies = received.lock().unwrap().clone();
    let rules: Vec<&str> = bodies
        .iter()
        .map(|b| b["alert"]["Rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"Bulk viewing of accounts") && rules.contains(&"Delete by an admin"),
        "{rules:?}"
    );
    assert!(
        bodies
            .iter()
            .all(|b| b["record"]["Operation"] == "AlertTriggered")
    );
    assert_eq!(
        server
            .audit(&admin, "operation=SaveAlertRule&status=Succeeded")
            .len(),
        2
    );
}
