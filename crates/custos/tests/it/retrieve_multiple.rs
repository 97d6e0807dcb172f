//! Retrieve multiple auditing end to end: every record a user saw on every page is in the audit
//! log with who, when and from where; the same for retrieve, update and delete.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

fn assert_origin(event: &Value, upn: &str) {
    assert_eq!(event["UserUpn"], upn);
    assert_eq!(event["ClientIP"], "127.0.0.1");
    assert_eq!(event["UserAgent"], USER_AGENT);
    assert_eq!(event["Origin"], "Api");
    assert_eq!(event["ResultStatus"], "Succeeded");
    assert_eq!(event["EntityName"], "account");
    assert_eq!(event["EntityCategory"], "out_of_box");
    assert_eq!(event["Category"], "accessed-out-of-box-entity");
    assert_eq!(event["UserType"], 0);
    assert!(!event["CorrelationId"].as_str().unwrap().is_empty());
    assert!(!event["SessionId"].as_str().unwrap().is_empty());
}

#[test]
fn every_record_seen_on_every_page_is_audited() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let user_id = server.add_user(&admin, "ana@contoso.test", "ana-password-1", "Basic User");
    server.audit_reads_of(&admin, &["account"]);

    let ana = server.token("ana@contoso.test", "ana-password-1");
    let mut created = BTreeSet::new();
    for i in 0..120 {
        let response = send(
            client().post(server.api("accounts")),
            &ana,
            Some(json!({"name": format!("Account {i:03}"), "revenue": i * 10})),
        );
        assert_eq!(response.status(), 204);
        created.insert(entity_id(&response));
    }

    // Page through 50 at a time.
    let mut url = server.api("accounts?$select=name&$orderby=name");
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    loop {
        let response = send(
            client().get(&url).header("Prefer", "odata.maxpagesize=50"),
            &ana,
            None,
        );
        assert_eq!(response.status(), 200);
        let page: Value = response.json().unwrap();
        let rows = page["value"].as_array().unwrap();
        assert!(rows.len() <= 50);
        seen.extend(
            rows.iter()
                .map(|r| r["accountid"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);

    let auditor = server.admin();
    let listed = server.audit(&auditor, "operation=RetrieveMultiple&user=ana@contoso.test");
    assert_eq!(listed.len(), 3, "one event per page");
    assert_eq!(
        record_ids(&listed),
        created,
        "every record shown is in the log"
    );
    for event in &listed {
        assert_origin(event, "ana@contoso.test");
        assert_eq!(event["UserId"], user_id);
        assert!(
            event["Query"]
                .as_str()
                .unwrap()
                .starts_with("accounts?$select=name")
        );
        assert_eq!(
            event["ResultCount"].as_u64().unwrap() as usize,
            event["RecordIds"].as_array().unwrap().len()
        );
    }
    let creates = server.audit(
        &auditor,
        "operation=Create&user=ana@contoso.test&entity=account",
    );
    assert_eq!(record_ids(&creates), created);

    // Who saw this record: one id, found by recordId.
    let target = created.iter().next().unwrap().clone();
    let response = send(
        client().get(server.api(&format!("accounts({target})"))),
        &ana,
        None,
    );
    assert_eq!(response.status(), 200);
    let touching = server.audit(&auditor, &format!("recordId={target}"));
    let operations: BTreeSet<&str> = touching
        .iter()
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        BTreeSet::from(["Create", "Retrieve", "RetrieveMultiple"])
    );
    let retrieve = touching
        .iter()
        .find(|e| e["Operation"] == "Retrieve")
        .unwrap();
    assert_origin(retrieve, "ana@contoso.test");
    assert_eq!(retrieve["RecordIds"], json!([target]));

    // Update: old and new values.
    let old_name = get_json(
        &server.api(&format!("accounts({target})?$select=name")),
        &admin,
    )["name"]
        .as_str()
        .unwrap()
        .to_string();
    let response = send(
        client()
            .patch(server.api(&format!("accounts({target})")))
            .header("If-Match", "*"),
        &ana,
        Some(json!({"name": "Renamed Ltd", "telephone1": "555-0100"})),
    );
    assert_eq!(response.status(), 204);
    let updates = server.audit(&auditor, &format!("operation=Update&recordId={target}"));
    assert_eq!(updates.len(), 1);
    assert_origin(&updates[0], "ana@contoso.test");
    let changes = updates[0]["Changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({"Attribute": "name", "Old": old_name, "New": "Renamed Ltd"})),
        "{changes:?}"
    );
    assert!(
        changes.contains(&json!({"Attribute": "telephone1", "Old": null, "New": "555-0100"})),
        "{changes:?}"
    );
    assert!(
        !changes.iter().any(|c| c["Attribute"] == "versionnumber"),
        "platform-maintained fields are not changes"
    );

    // Delete: the values destroyed.
    let response = send(
        client().delete(server.api(&format!("accounts({target})"))),
        &ana,
        None,
    );
    assert_eq!(response.status(), 204);
    let deletes = server.audit(&auditor, &format!("operation=Delete&recordId={target}"));
    assert_eq!(deletes.len(), 1);
    assert_origin(&deletes[0], "ana@contoso.test");
    let changes = deletes[0]["Changes"].as_array().unwrap();
    assert!(
        changes.contains(&json!({"Attribute": "name", "Old": "Renamed Ltd", "New": null})),
        "{changes:?}"
    );
    assert!(
        changes.contains(&json!({"Attribute": "telephone1", "Old": "555-0100", "New": null})),
        "{changes:?}"
    );
    let response = send(
        client().get(server.api(&format!("accounts({target})"))),
        &ana,
        None,
    );
    assert_eq!(response.status(), 404);
}

#[test]
fn search_needs_the_audit_reader_role_and_records_the_refusal() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    server.add_user(&admin, "aud@contoso.test", "aud-password-1", "Audit Reader");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let response = send(
        client().get(format!("{}/api/audit/records", server.base)),
        &bo,
        None,
    );
    let (status, code, _) = odata_error(response);
    assert_eq!((status, code.as_str()), (403, "Forbidden"));
    let auditor = server.token("aud@contoso.test", "aud-password-1");
    let denied = server.audit(&auditor, "operation=SearchAuditLog&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "bo@contoso.test");
    // A Basic User cannot change audit settings either, and the attempt is recorded.
    let org = server.organization_id(&bo);
    let response = send(
        client().patch(server.api(&format!("organizations({org})"))),
        &bo,
        Some(json!({"isauditenabled": false})),
    );
    assert_eq!(odata_error(response).0, 403);
    let refused = server.audit(
        &auditor,
        "user=bo@contoso.test&status=Denied&entity=organization",
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["Operation"], "UpdateAuditSettings");
}

/// `$skiptoken` is the last row's keyset, opaque to the client: records created between two
/// pages neither repeat a row nor hide one, and a token not taken from `@odata.nextLink` is a
/// 400 in the API's error format.
#[test]
fn a_record_created_between_pages_neither_repeats_nor_hides_a_row() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let create = |name: &str| {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({ "name": name })),
        );
        assert_eq!(response.status(), 204, "{name}");
    };
    for name in ["k10", "k20", "k30", "k40", "k50", "k60"] {
        create(name);
    }
    let page = |url: &str| -> (Vec<String>, Option<String>) {
        let response = send(
            client().get(url).header("Prefer", "odata.maxpagesize=3"),
            &admin,
            None,
        );
        assert_eq!(response.status(), 200);
        let page: Value = response.json().unwrap();
        let names = page["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        (names, page["@odata.nextLink"].as_str().map(str::to_string))
    };
    let (first, next) =
        page(&server.api("accounts?$select=name&$orderby=name&$filter=startswith(name,'k')"));
    assert_eq!(first, ["k10", "k20", "k30"]);
    let next = next.unwrap();
    let token = next.split("skiptoken=").nth(1).unwrap();
    assert!(token.parse::<u64>().is_err(), "an offset: {next}");
    create("k15");
    create("k35");
    let (second, next) = page(&next);
    assert_eq!(
        second,
        ["k35", "k40", "k50"],
        "after k30, whatever came before it"
    );
    let (third, next) = page(&next.unwrap());
    assert_eq!((third, next), (vec!["k60".to_string()], None));

    let response = send(
        client().get(server.api("accounts?$orderby=name&$skiptoken=3")),
        &admin,
        None,
    );
    assert_eq!(response.status(), 400);
    let error: Value = response.json().unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("@odata.nextLink"),
        "{error}"
    );
}
