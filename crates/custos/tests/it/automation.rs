//! Processes and plug-in steps (SPEC §3) that really run: a process sets a field on create or
//! calls a webhook on delete, a plug-in step calls a webhook on update; activating and
//! deactivating each is audited, and every run is a backend event, recorded before its
//! webhook is called.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

fn patch(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().patch(server.api(path)), token, Some(body))
}

/// Waits (at most 30 s) until the receiver holds `n` bodies.
fn wait_for(received: &std::sync::Arc<std::sync::Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bodies = received.lock().unwrap().clone();
        if bodies.len() >= n || Instant::now() > deadline {
            return bodies;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn processes_and_plugin_steps_run_and_every_run_is_recorded() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let admin_id = get_json(&server.api("WhoAmI"), &admin)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    let (hook, received) = receiver();

    let response = post(
        &server,
        &admin,
        "workflows",
        json!({"name": "Hold new accounts", "primaryentity": "account", "triggeron": "create",
               "actiontype": "setfield", "fieldname": "creditonhold", "fieldvalue": "true"}),
    );
    assert_eq!(response.status(), 204);
    let process = entity_id(&response);
    let before = entity_id(&post(&server, &admin, "accounts", json!({"name": "Early"})));
    assert_eq!(
        get_json(&server.api(&format!("accounts({before})")), &admin)["creditonhold"],
        Value::Null,
        "an inactive process does not run"
    );
    assert_eq!(
        patch(
            &server,
            &admin,
            &format!("workflows({process})"),
            json!({"statecode": 1})
        )
        .status(),
        204
    );
    let activated = server.audit(&admin, "operation=ActivateProcess");
    assert_eq!(activated.len(), 1);
    assert_eq!(activated[0]["Category"], "activated-process-or-plugin");
    assert_eq!(activated[0]["RecordIds"], json!([process]));

    let account = entity_id(&post(
        &server,
        &admin,
        "accounts",
        json!({"name": "Contoso"}),
    ));
    assert_eq!(
        get_json(&server.api(&format!("accounts({account})")), &admin)["creditonhold"],
        true,
        "the process set the field before the create was answered"
    );
    let runs = server.audit(&admin, "operation=RunProcess");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["Origin"], "Backend");
    assert_eq!(runs[0]["UserType"], 4);
    assert_eq!(runs[0]["CallerId"], admin_id);
    assert_eq!(runs[0]["RecordIds"], json!([account]));
    assert_eq!(runs[0]["Details"]["Process"], "Hold new accounts");
    assert_eq!(
        runs[0]["Changes"],
        json!([{"Attribute": "creditonhold", "Old": null, "New": true}])
    );
    let create = server.audit(&admin, &format!("operation=Create&recordId={account}"));
    assert_eq!(runs[0]["CorrelationId"], create[0]["CorrelationId"]);

    // A plug-in step on contact updates, and a process calling a webhook on account deletes.
    let response = post(
        &server,
        &admin,
        "sdkmessageprocessingsteps",
        json!({"name": "Sync contacts", "sdkmessage": "Update", "primaryentity": "contact", "webhookurl": hook}),
    );
    assert_eq!(response.status(), 204);
    let step = entity_id(&response);
    assert_eq!(
        patch(
            &server,
            &admin,
            &format!("sdkmessageprocessingsteps({step})"),
            json!({"statecode": 1})
        )
        .status(),
        204
    );
    let response = post(
        &server,
        &admin,
        "workflows",
        json!({"name": "Tell finance", "primaryentity": "account", "triggeron": "delete",
               "actiontype": "webhook", "webhookurl": hook}),
    );
    let notify = entity_id(&response);
    patch(
        &server,
        &admin,
        &format!("workflows({notify})"),
        json!({"statecode": 1}),
    );

    let contact = entity_id(&post(
        &server,
        &admin,
        "contacts",
        json!({"lastname": "Lovelace"}),
    ));
    assert!(
        server.audit(&admin, "operation=RunPlugin").is_empty(),
        "creates are not its message"
    );
    assert_eq!(
        patch(
            &server,
            &admin,
            &format!("contacts({contact})"),
            json!({"firstname": "Ada"})
        )
        .status(),
        204
    );
    let response = send(
        client().delete(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);

    let plugin = server.audit(&admin, "operation=RunPlugin");
    assert_eq!(plugin.len(), 1);
    assert_eq!(plugin[0]["Details"]["Step"], "Sync contacts");
    assert_eq!(
        plugin[0]["Details"]["Payload"]["PostEntityImage"]["firstname"],
        "Ada"
    );
    // The receiver refuses its first post: delivery retries until both arrive.
    let bodies = wait_for(&received, 2);
    assert_eq!(bodies.len(), 2, "both webhooks were delivered: {bodies:?}");
    let update = bodies
        .iter()
        .find(|b| b["MessageName"] == "Update")
        .expect("the step's call");
    assert_eq!(update["PrimaryEntityName"], "contact");
    assert_eq!(update["PrimaryEntityId"], contact);
    assert_eq!(update["PostEntityImage"]["fullname"], "Ada Lovelace");
    assert_eq!(update["InitiatingUserId"], admin_id);
    let delete = bodies
        .iter()
        .find(|b| b["MessageName"] == "Delete")
        .expect("the process's call");
    assert_eq!(delete["PreEntityImage"]["name"], "Contoso");
    assert_eq!(delete["PostEntityImage"], json!({}));

    // Deactivated, the step stays quiet.
    assert_eq!(
        patch(
            &server,
            &admin,
            &format!("sdkmessageprocessingsteps({step})"),
            json!({"statecode": 0})
        )
        .status(),
        204
    );
    assert_eq!(server.audit(&admin, "operation=DeactivatePlugin").len(), 1);
    patch(
        &server,
        &admin,
        &format!("contacts({contact})"),
        json!({"firstname": "Augusta"}),
    );
    assert_eq!(server.audit(&admin, "operation=RunPlugin").len(), 1);
    assert_eq!(
        server
            .audit(&admin, "category=activated-process-or-plugin")
            .len(),
        4,
        "three activations and a deactivation"
    );
}

#[test]
fn bad_definitions_and_non_admins_are_refused() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    for body in [
        json!({"name": "x", "primaryentity": "account", "triggeron": "create", "actiontype": "setfield", "fieldname": "creditonhold", "fieldvalue": "true", "statecode": 1}),
        json!({"name": "x", "primaryentity": "account", "triggeron": "delete", "actiontype": "setfield", "fieldname": "name", "fieldvalue": "y"}),
        json!({"name": "x", "primaryentity": "account", "triggeron": "create", "actiontype": "setfield", "fieldname": "nosuch", "fieldvalue": "y"}),
        json!({"name": "x", "primaryentity": "account", "triggeron": "create", "actiontype": "setfield", "fieldname": "revenue", "fieldvalue": "lots"}),
        json!({"name": "x", "primaryentity": "account", "triggeron": "create", "actiontype": "webhook", "webhookurl": "ftp://x"}),
        json!({"name": "x", "primaryentity": "nosuch", "triggeron": "create", "actiontype": "webhook", "webhookurl": "http://127.0.0.1:9/"}),
        json!({"name": "x", "primaryentity": "account", "triggeron": "sometimes", "actiontype": "webhook", "webhookurl": "http://127.0.0.1:9/"}),
        json!({"primaryentity": "account", "triggeron": "create", "actiontype": "webhook", "webhookurl": "http://127.0.0.1:9/"}),
    ] {
        let (status, _, message) = odata_error(post(&server, &admin, "workflows", body.clone()));
        assert_eq!(status, 400, "{body}: {message}");
    }
    let response = post(
        &server,
        &admin,
        "sdkmessageprocessingsteps",
        json!({"name": "x", "sdkmessage": "Retrieve", "primaryentity": "account", "webhookurl": "http://127.0.0.1:9/"}),
    );
    assert_eq!(odata_error(response).0, 400);
    assert_eq!(
        count(&server, &admin, "workflows") + count(&server, &admin, "sdkmessageprocessingsteps"),
        0
    );

    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let response = post(
        &server,
        &bo,
        "workflows",
        json!({"name": "x", "primaryentity": "account", "triggeron": "create", "actiontype": "webhook", "webhookurl": "http://127.0.0.1:9/"}),
    );
    assert_eq!(odata_error(response).0, 403);
    let denied = server.audit(&admin, "status=Denied&entity=workflow");
    assert_eq!(denied.len(), 1);
}

/// The records a delete takes with it (an account's contacts) or unlinks (its opportunities)
/// are deleted and updated as their own requests would be: the processes and plug-in steps on
/// those messages run for each, recorded under the delete's correlation id, their webhooks
/// told — a system kept in step by "contact deleted" hears of every contact that went.
#[test]
fn the_records_a_delete_reaches_run_their_own_processes_and_steps() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let (hook, received) = receiver();
    let process = entity_id(&post(
        &server,
        &admin,
        "workflows",
        json!({"name": "Forget contacts", "primaryentity": "contact", "triggeron": "delete",
               "actiontype": "webhook", "webhookurl": hook}),
    ));
    let step = entity_id(&post(
        &server,
        &admin,
        "sdkmessageprocessingsteps",
        json!({"name": "Sync opportunities", "sdkmessage": "Update",
               "primaryentity": "opportunity", "webhookurl": hook}),
    ));
    for path in [
        format!("workflows({process})"),
        format!("sdkmessageprocessingsteps({step})"),
    ] {
        assert_eq!(
            patch(&server, &admin, &path, json!({"statecode": 1})).status(),
            204
        );
    }
    let account = entity_id(&post(&server, &admin, "accounts", json!({"name": "Going"})));
    let bind = format!("/accounts({account})");
    let contacts: Vec<String> = ["Ada", "Grace"]
        .iter()
        .map(|name| {
            entity_id(&post(
                &server,
                &admin,
                "contacts",
                json!({"lastname": name, "parentcustomerid@odata.bind": bind}),
            ))
        })
        .collect();
    let opportunity = entity_id(&post(
        &server,
        &admin,
        "opportunities",
        json!({"name": "Deal", "parentaccountid@odata.bind": bind}),
    ));

    let deleted = send(
        client().delete(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    let correlation = correlation_of(&deleted);

    let mut processes: Vec<String> = server
        .audit(&admin, "operation=RunProcess")
        .iter()
        .map(|run| {
            assert_eq!(run["CorrelationId"], correlation.as_str());
            assert_eq!(run["Details"]["Message"], "Delete");
            run["RecordIds"][0].as_str().unwrap().to_string()
        })
        .collect();
    processes.sort();
    let mut expected = contacts.clone();
    expected.sort();
    assert_eq!(processes, expected);
    let steps = server.audit(&admin, "operation=RunPlugin");
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert_eq!(steps[0]["RecordIds"], json!([opportunity]));
    assert_eq!(steps[0]["CorrelationId"], correlation.as_str());

    let bodies = wait_for(&received, 3);
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    let mut deletes: Vec<&str> = bodies
        .iter()
        .filter(|b| b["MessageName"] == "Delete")
        .map(|b| {
            assert_eq!(b["PrimaryEntityName"], "contact");
            b["PrimaryEntityId"].as_str().unwrap()
        })
        .collect();
    deletes.sort();
    assert_eq!(deletes, expected);
    let update = bodies
        .iter()
        .find(|b| b["MessageName"] == "Update")
        .expect("the step's call");
    assert_eq!(update["PrimaryEntityId"], opportunity);
    assert_eq!(update["PreEntityImage"]["parentaccountid"], account);
    assert_eq!(update["PostEntityImage"]["parentaccountid"], Value::Null);

    // A bulk delete's records, and an import's, run theirs as one by one.
    let bulk: Vec<String> = (0..3)
        .map(|_| {
            entity_id(&post(
                &server,
                &admin,
                "contacts",
                json!({"lastname": "Bulk"}),
            ))
        })
        .collect();
    let response = post(
        &server,
        &admin,
        "BulkDelete",
        json!({"EntitySetName": "contacts", "Filter": "lastname eq 'Bulk'"}),
    );
    assert_eq!(response.status(), 200);
    let bodies = wait_for(&received, 6);
    let mut told: Vec<&str> = bodies[3..]
        .iter()
        .map(|b| {
            assert_eq!(b["MessageName"], "Delete");
            b["PrimaryEntityId"].as_str().unwrap()
        })
        .collect();
    told.sort();
    let mut bulk_sorted: Vec<&str> = bulk.iter().map(String::as_str).collect();
    bulk_sorted.sort();
    assert_eq!(told, bulk_sorted);
    // More calls than are recorded in one go: every one of them is recorded.
    let many = 1030;
    let content: String = std::iter::once("lastname\n".to_string())
        .chain((0..many).map(|n| format!("Many {n}\n")))
        .collect();
    let imported = post(
        &server,
        &admin,
        "ImportRecords",
        json!({"EntitySetName": "contacts", "Content": content}),
    );
    assert_eq!(imported.status(), 200);
    let response = post(
        &server,
        &admin,
        "BulkDelete",
        json!({"EntitySetName": "contacts", "Filter": "startswith(lastname, 'Many ')"}),
    );
    assert_eq!(response.status(), 200);
    let runs = server.audit(&admin, "operation=RunProcess");
    assert_eq!(
        runs.len(),
        2 + 3 + many,
        "every contact deleted ran the process"
    );
    let hold = entity_id(&post(
        &server,
        &admin,
        "workflows",
        json!({"name": "Hold new accounts", "primaryentity": "account", "triggeron": "create",
               "actiontype": "setfield", "fieldname": "creditonhold", "fieldvalue": "true"}),
    ));
    patch(
        &server,
        &admin,
        &format!("workflows({hold})"),
        json!({"statecode": 1}),
    );
    let imported: Value = post(
        &server,
        &admin,
        "ImportRecords",
        json!({"EntitySetName": "accounts", "Content": "name\nImported one\nImported two\n"}),
    )
    .json()
    .unwrap();
    for id in imported["RecordIds"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        assert_eq!(
            get_json(&server.api(&format!("accounts({id})")), &admin)["creditonhold"],
            true,
            "{id}"
        );
    }
}
