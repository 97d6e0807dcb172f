//! Alternate keys (Dataverse's "Use an alternate key to reference a record"): a key is a
//! customization, recorded and put into force on publish; a record is then read, upserted,
//! deleted and bound by its key's values, each event naming the record by its id.

use serde_json::{Value, json};

use crate::common::*;

fn key_body(schema_name: &str, attributes: &[&str]) -> Value {
    json!({
        "SchemaName": schema_name,
        "DisplayName": {"LocalizedLabels": [{"Label": "Account number", "LanguageCode": 1033}]},
        "KeyAttributes": attributes,
    })
}

fn keys_path() -> &'static str {
    "EntityDefinitions(LogicalName='account')/Keys"
}

#[test]
fn a_record_is_read_upserted_bound_and_deleted_by_its_alternate_key() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account", "contact"]);
    let first = create_account(&server, &admin, "Contoso");
    let numbered = send(
        client().patch(server.api(&format!("accounts({first})"))),
        &admin,
        Some(json!({"accountnumber": "ACC-1"})),
    );
    assert_eq!(numbered.status(), 204);

    // Before the key exists, a key's values are no key at all.
    let (status, _, message) = odata_error(send(
        client().get(server.api("accounts(accountnumber='ACC-1')")),
        &admin,
        None,
    ));
    assert_eq!(status, 400);
    assert!(
        message.contains("The key in the request URI is not valid"),
        "{message}"
    );

    // The key: a draft (Pending) until published, its event always recorded.
    let made = send(
        client().post(server.api(keys_path())),
        &admin,
        Some(key_body("new_AccountNumber", &["accountnumber"])),
    );
    assert_eq!(made.status(), 204, "{:?}", made.text());
    assert!(
        made.headers()["odata-entityid"]
            .to_str()
            .unwrap()
            .ends_with("/Keys(LogicalName='new_accountnumber')")
    );
    let events = server.audit(&admin, "operation=CreateEntityKey");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["EntityName"], "account");
    assert_eq!(events[0]["RecordType"], "CustosAdmin");
    assert_eq!(
        events[0]["Details"]["KeyAttributes"],
        json!(["accountnumber"])
    );
    let drafted = get_json(
        &server.api(&format!("{}?RetrieveAsIfPublished=true", keys_path())),
        &admin,
    );
    assert_eq!(drafted["value"][0]["EntityKeyIndexStatus"], "Pending");
    assert_eq!(drafted["value"][0]["SchemaName"], "new_AccountNumber");
    assert_eq!(
        get_json(&server.api(keys_path()), &admin)["value"],
        json!([])
    );
    server.publish(&admin);
    let key = get_json(
        &server
            .api("EntityDefinitions(LogicalName='account')/Keys(LogicalName='new_accountnumber')"),
        &admin,
    );
    assert_eq!(key["EntityKeyIndexStatus"], "Active");
    assert_eq!(key["KeyAttributes"], json!(["accountnumber"]));
    assert_eq!(
        key["DisplayName"]["UserLocalizedLabel"]["Label"],
        "Account number"
    );
    let metadata = send(client().get(server.api("$metadata")), &admin, None)
        .text()
        .unwrap();
    let account = &metadata[metadata.find("<EntityType Name=\"account\"").unwrap()..];
    let account = &account[..account.find("</EntityType>").unwrap()];
    assert!(
        account.contains("<Annotation Term=\"OData.Community.Keys.V1.AlternateKeys\"><Collection><Record Type=\"OData.Community.Keys.V1.AlternateKey\"><PropertyValue Property=\"Key\"><Collection><Record Type=\"OData.Community.Keys.V1.PropertyRef\"><PropertyValue Property=\"Alias\" String=\"accountnumber\"/><PropertyValue Property=\"Name\" PropertyPath=\"accountnumber\"/>"),
        "{account}"
    );

    // Read by the key (text compared without case, as Dataverse's): the Retrieve event names
    // the record by its id.
    let read = send(
        client().get(server.api("accounts(accountnumber='acc-1')?$select=name")),
        &admin,
        None,
    );
    assert_eq!(read.status(), 200);
    let correlation = correlation_of(&read);
    assert_eq!(read.json::<Value>().unwrap()["accountid"], first);
    let retrieved = events_of(&server, &admin, &correlation);
    let retrieve = retrieved
        .iter()
        .find(|e| e["Operation"] == "Retrieve")
        .expect("the read is recorded");
    assert_eq!(retrieve["RecordIds"], json!([first]));
    // The named primary key reads the same record.
    assert_eq!(
        get_json(&server.api(&format!("accounts(accountid={first})")), &admin)["name"],
        "Contoso"
    );

    // An upsert naming no record creates one with the key's values; the next updates it.
    let created = send(
        client()
            .patch(server.api("accounts(accountnumber='ACC-2')"))
            .header("Prefer", "return=representation"),
        &admin,
        Some(json!({"name": "Fabrikam"})),
    );
    assert_eq!(created.status(), 201, "{:?}", created.text());
    let body: Value = created.json().unwrap();
    assert_eq!(body["accountnumber"], "ACC-2");
    let second = body["accountid"].as_str().unwrap().to_string();
    let updated = send(
        client().patch(server.api("accounts(accountnumber='ACC-2')")),
        &admin,
        Some(json!({"name": "Fabrikam Inc."})),
    );
    assert_eq!(updated.status(), 204);
    let changes = events_of(&server, &admin, &correlation_of(&updated));
    let update = changes
        .iter()
        .find(|e| e["Operation"] == "Update")
        .expect("the update is recorded");
    assert_eq!(update["RecordIds"], json!([second]));
    assert_eq!(count(&server, &admin, "accounts"), 2);
    // An upsert that may only update (If-Match) finds nothing to update: 404, nothing made.
    let (status, _, message) = odata_error(send(
        client()
            .patch(server.api("accounts(accountnumber='ACC-3')"))
            .header("If-Match", "*"),
        &admin,
        Some(json!({"name": "Nobody"})),
    ));
    assert_eq!(
        (status, message.contains("ACC-3")),
        (404, true),
        "{message}"
    );
    // The body may not give the record it creates other values than its key's.
    let (status, _, _) = odata_error(send(
        client().patch(server.api("accounts(accountnumber='ACC-3')")),
        &admin,
        Some(json!({"accountnumber": "ACC-4"})),
    ));
    assert_eq!(status, 400);
    // Nor may the URL give a value no write would take (longer than the attribute holds).
    let (status, _, message) = odata_error(send(
        client().patch(server.api(&format!("accounts(accountnumber='{}')", "x".repeat(300)))),
        &admin,
        Some(json!({"name": "Long"})),
    ));
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("limited to"), "{message}");
    assert_eq!(count(&server, &admin, "accounts"), 2);

    // No two records share a key's values: a create and an update that would are refused.
    let (status, _, message) = odata_error(send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Copy", "accountnumber": "ACC-1"})),
    ));
    assert_eq!(status, 409);
    assert!(message.contains("new_accountnumber"), "{message}");
    let (status, _, _) = odata_error(send(
        client().patch(server.api(&format!("accounts({second})"))),
        &admin,
        Some(json!({"accountnumber": "ACC-1"})),
    ));
    assert_eq!(status, 409);

    // A lookup is bound by the key of the record it names.
    let contact = send(
        client()
            .post(server.api("contacts"))
            .header("Prefer", "return=representation"),
        &admin,
        Some(
            json!({"lastname": "Bound", "parentcustomerid@odata.bind": "/accounts(accountnumber='ACC-2')"}),
        ),
    );
    assert_eq!(contact.status(), 201, "{:?}", contact.text());
    let contact: Value = contact.json().unwrap();
    assert_eq!(contact["_parentcustomerid_value"], second);
    let contact_id = contact["contactid"].as_str().unwrap().to_string();
    let (status, _, message) = odata_error(send(
        client().post(server.api("contacts")),
        &admin,
        Some(
            json!({"lastname": "Unbound", "parentcustomerid@odata.bind": format!("{}/accounts(accountnumber='NONE')", server.base)}),
        ),
    ));
    assert_eq!(status, 400);
    assert!(
        message.contains("no account record has accountnumber"),
        "{message}"
    );

    // A key names the record a longer path starts from: its related records, a property.
    let related = send(
        client().get(server.api("accounts(accountnumber='ACC-2')/contact_parentcustomerid/$count")),
        &admin,
        None,
    );
    assert_eq!(related.status(), 200);
    assert_eq!(related.text().unwrap(), "1");
    let renamed = send(
        client().put(server.api("accounts(accountnumber='ACC-2')/name")),
        &admin,
        Some(json!({"value": "Fabrikam (renamed)"})),
    );
    assert_eq!(renamed.status(), 204);
    let update = events_of(&server, &admin, &correlation_of(&renamed));
    assert!(
        update
            .iter()
            .any(|e| e["Operation"] == "Update" && e["RecordIds"] == json!([second])),
        "{update:?}"
    );
    assert_eq!(
        get_json(
            &server.api(&format!("accounts(accountid={second})/name")),
            &admin
        )["value"],
        "Fabrikam (renamed)"
    );
    // Such a path never creates what its key names: 404.
    let (status, _, _) = odata_error(send(
        client().put(server.api("accounts(accountnumber='NONE')/name")),
        &admin,
        Some(json!({"value": "Nobody"})),
    ));
    assert_eq!(status, 404);

    // A key naming no record is 404 to a read and a delete, and recorded as a failure.
    let missing = send(
        client().get(server.api("accounts(accountnumber='NONE')")),
        &admin,
        None,
    );
    assert_eq!(missing.status(), 404);
    let failed = events_of(&server, &admin, &correlation_of(&missing));
    assert_eq!(failed[0]["ResultStatus"], "Failed");
    assert_eq!(failed[0]["Operation"], "Retrieve");
    assert_eq!(failed[0]["Query"], "accounts(accountnumber='NONE')");

    // A user who may not read accounts learns nothing of which values are taken.
    let reader = server.user_holding(&admin, "kim@contoso.test", "Writers", &["prvWriteAccount"]);
    for number in ["ACC-1", "NONE"] {
        let (status, _, _) = odata_error(send(
            client().get(server.api(&format!("accounts(accountnumber='{number}')"))),
            &reader,
            None,
        ));
        assert_eq!(status, 403, "{number}");
    }

    // In a changeset, upserts by key are all made or none: a conflict undoes the group.
    let before = count(&server, &admin, "accounts");
    let batch = |requests: Value| {
        let response = send(
            client().post(server.api("$batch")),
            &admin,
            Some(json!({ "requests": requests })),
        );
        batch_statuses(&response.json::<Value>().unwrap())
    };
    let made = batch(json!([
        {"id": "1", "atomicityGroup": "g", "method": "PATCH", "url": "accounts(accountnumber='ACC-5')", "body": {"name": "Five"}},
        {"id": "2", "atomicityGroup": "g", "method": "PATCH", "url": "accounts(accountnumber='ACC-6')", "body": {"name": "Six"}},
    ]));
    assert_eq!(made, [204, 204]);
    assert_eq!(count(&server, &admin, "accounts"), before + 2);
    let undone = batch(json!([
        {"id": "1", "atomicityGroup": "g", "method": "PATCH", "url": "accounts(accountnumber='ACC-7')", "body": {"name": "Seven"}},
        {"id": "2", "atomicityGroup": "g", "method": "POST", "url": "accounts", "body": {"name": "Copy", "accountnumber": "ACC-5"}},
    ]));
    assert!(undone.contains(&409), "{undone:?}");
    assert_eq!(count(&server, &admin, "accounts"), before + 2);

    // A collection's reference names a record by its key too.
    let related = send(
        client().post(server.api(&format!(
            "contacts({contact_id})/account_primarycontactid/$ref"
        ))),
        &admin,
        Some(json!({"@odata.id": format!("{}/accounts(accountnumber='ACC-5')", server.base)})),
    );
    assert_eq!(related.status(), 204, "{:?}", related.text());
    assert_eq!(
        get_json(
            &server.api("accounts(accountnumber='ACC-5')?$select=_primarycontactid_value"),
            &admin
        )["_primarycontactid_value"],
        contact_id
    );

    // A record is deleted by its key.
    let deleted = send(
        client().delete(server.api("accounts(accountnumber='ACC-2')")),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    let delete = events_of(&server, &admin, &correlation_of(&deleted));
    assert!(
        delete
            .iter()
            .any(|e| e["Operation"] == "Delete" && e["RecordIds"] == json!([second])),
        "{delete:?}"
    );
    assert_eq!(count(&server, &admin, "accounts"), 3);
}

#[test]
fn a_key_is_refused_where_records_share_its_values_and_taken_away_on_publish() {
    let server = Server::start(&[]);
    let admin = server.admin();
    for name in ["One", "Two"] {
        let id = create_account(&server, &admin, name);
        let response = send(
            client().patch(server.api(&format!("accounts({id})"))),
            &admin,
            Some(json!({"accountnumber": "SAME"})),
        );
        assert_eq!(response.status(), 204);
    }
    for (body, status) in [
        (key_body("AccountNumber", &["accountnumber"]), 400),
        (key_body("new_Created", &["createdon"]), 400),
        (key_body("new_Notes", &["description"]), 400),
        (key_body("new_Nothing", &[]), 400),
        (
            json!({"SchemaName": "new_Odd", "KeyAttributes": ["name"], "IsSecret": true}),
            400,
        ),
    ] {
        let (got, _, message) = odata_error(send(
            client().post(server.api(keys_path())),
            &admin,
            Some(body.clone()),
        ));
        assert_eq!(got, status, "{body}: {message}");
    }
    let made = send(
        client().post(server.api(keys_path())),
        &admin,
        Some(key_body("new_Number", &["accountnumber"])),
    );
    assert_eq!(made.status(), 204);
    let (status, _, _) = odata_error(send(
        client().post(server.api(keys_path())),
        &admin,
        Some(key_body("new_Again", &["accountnumber"])),
    ));
    assert_eq!(status, 409, "a second key of the same attributes");

    // Two records share the key's values: publishing refuses, naming the key, and nothing of
    // the publish takes effect.
    let (status, _, message) = odata_error(send(
        client().post(server.api("PublishAllXml")),
        &admin,
        None,
    ));
    assert_eq!(status, 409);
    assert!(message.contains("new_number"), "{message}");
    assert_eq!(
        get_json(&server.api(keys_path()), &admin)["value"],
        json!([])
    );

    // An attribute in a key, even a draft's, is not deleted from under it.
    let attribute = send(
        client().post(server.api("EntityDefinitions(LogicalName='account')/Attributes")),
        &admin,
        Some(json!({"AttributeType": "String", "SchemaName": "new_code", "MaxLength": 20})),
    );
    assert_eq!(attribute.status(), 204);
    let keyed = send(
        client().post(server.api(keys_path())),
        &admin,
        Some(key_body("new_Code", &["new_code"])),
    );
    assert_eq!(keyed.status(), 204, "a key of a draft attribute");
    let (status, _, message) = odata_error(send(
        client()
            .delete(server.api(
                "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_code')",
            )),
        &admin,
        None,
    ));
    assert_eq!(status, 409);
    assert!(message.contains("new_code"), "{message}");

    // Taken from the draft, a key is gone; published, it no longer holds.
    let removed = send(
        client().delete(
            server.api("EntityDefinitions(LogicalName='account')/Keys(LogicalName='new_number')"),
        ),
        &admin,
        None,
    );
    assert_eq!(removed.status(), 204);
    assert_eq!(server.audit(&admin, "operation=DeleteEntityKey").len(), 1);
    server.publish(&admin);
    let (status, _, _) = odata_error(send(
        client().get(
            server.api("EntityDefinitions(LogicalName='account')/Keys(LogicalName='new_number')"),
        ),
        &admin,
        None,
    ));
    assert_eq!(status, 404);
}
