//! Entity and attribute audit flags are drafts: nothing changes before `PublishAllXml`, and
//! the change takes effect on the next request after it. Changing flags and publishing are
//! always audited.

use serde_json::json;

use crate::common::*;

#[test]
fn entity_flags_take_effect_only_after_publish() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isreadauditenabled": true}));
    for name in ["One", "Two", "Three"] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name})),
        );
        assert_eq!(response.status(), 204);
    }
    let list = || {
        get_json(&server.api("accounts"), &admin)["value"]
            .as_array()
            .unwrap()
            .len()
    };
    let listed = || server.audit(&admin, "operation=RetrieveMultiple&entity=account");

    assert_eq!(list(), 3);
    assert!(
        listed().is_empty(),
        "retrieve multiple auditing is off by default"
    );

    server.set_entity_flags(
        &admin,
        "account",
        json!({"IsRetrieveMultipleAuditEnabled": {"Value": true}}),
    );
    let published = get_json(
        &server.api("EntityDefinitions(LogicalName='account')"),
        &admin,
    );
    assert_eq!(
        published["IsRetrieveMultipleAuditEnabled"]["Value"], false,
        "the published definition is unchanged"
    );
    let draft = get_json(
        &server.api("EntityDefinitions(LogicalName='account')?RetrieveAsIfPublished=true"),
        &admin,
    );
    assert_eq!(
        draft["IsRetrieveMultipleAuditEnabled"]["Value"], true,
        "the draft holds the change"
    );
    assert_eq!(list(), 3);
    assert!(
        listed().is_empty(),
        "a saved but unpublished flag changes nothing"
    );

    let settings = server.audit(&admin, "operation=UpdateAuditSettings&entity=account");
    assert_eq!(
        settings.len(),
        1,
        "changing a flag is audited even before publish"
    );
    assert_eq!(
        settings[0]["Changes"],
        json!([{"Attribute": "IsRetrieveMultipleAuditEnabled", "Old": false, "New": true}])
    );

    server.publish(&admin);
    let publishes = server.audit(&admin, "operation=PublishAllCustomizations");
    assert_eq!(publishes.len(), 1);
    assert_eq!(
        publishes[0]["Details"],
        json!({"PublishedEntities": ["account"]})
    );
    assert_eq!(list(), 3);
    let after = listed();
    assert_eq!(after.len(), 1, "the next request after publish is audited");
    assert_eq!(after[0]["RecordIds"].as_array().unwrap().len(), 3);

    // Turning it off again also waits for publish.
    server.set_entity_flags(
        &admin,
        "account",
        json!({"IsRetrieveMultipleAuditEnabled": false}),
    );
    list();
    assert_eq!(listed().len(), 2);
    server.publish(&admin);
    list();
    assert_eq!(listed().len(), 2);
}

#[test]
fn attribute_flags_limit_the_changes_recorded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "A", "telephone1": "1"})),
    );
    let id = entity_id(&response);
    let url =
        server.api("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='telephone1')");
    let response = send(
        client().put(url),
        &admin,
        Some(json!({"IsAuditEnabled": {"Value": false}})),
    );
    assert_eq!(response.status(), 204);

    let update = |name: &str, phone: &str| {
        let response = send(
            client().patch(server.api(&format!("accounts({id})"))),
            &admin,
            Some(json!({"name": name, "telephone1": phone})),
        );
        assert_eq!(response.status(), 204);
    };
    update("B", "2");
    server.publish(&admin);
    update("C", "3");
    let updates = server.audit(&admin, &format!("operation=Update&recordId={id}"));
    assert_eq!(updates.len(), 2);
    let attributes = |i: usize| -> Vec<String> {
        updates[i]["Changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Attribute"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        attributes(0),
        ["name"],
        "after publish telephone1 is no longer audited (newest first)"
    );
    assert_eq!(
        attributes(1),
        ["name", "telephone1"],
        "before publish it still was"
    );
}
