//! Relations (issue 14): `$expand` of a lookup and of its reverse, with nested options, and
//! `…/$ref` to set and remove a lookup. Every record an expansion shows is in the log, under its
//! own entity, with the request's correlation.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

fn ids(event: &Value) -> BTreeSet<String> {
    event["RecordIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn expanded_records_are_shown_and_each_is_in_the_log_under_its_own_entity() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account", "contact"]);
    let create = |set: &str, body: Value| {
        let response = send(client().post(server.api(set)), &admin, Some(body));
        assert_eq!(response.status(), 204, "{set}");
        entity_id(&response)
    };
    let ada = create(
        "contacts",
        json!({"firstname": "Ada", "lastname": "Lovelace"}),
    );
    let analytical = create(
        "accounts",
        json!({"name": "Rel Analytical", "primarycontactid@odata.bind": format!("/contacts({ada})")}),
    );
    let babbage = create("accounts", json!({"name": "Rel Babbage"}));
    let mut employees = BTreeSet::new();
    for first in ["Charles", "Mary", "Zed"] {
        employees.insert(create(
            "contacts",
            json!({
                "firstname": first,
                "lastname": "Staff",
                "parentcustomerid@odata.bind": format!("/accounts({analytical})"),
            }),
        ));
    }

    // Single-valued: the lookup's record, with its own $select; null when the lookup is empty.
    let page = get_json(
        &server.api(
            "accounts?$select=name&$filter=startswith(name,'Rel ')&$orderby=name&$expand=primarycontactid($select=fullname)",
        ),
        &admin,
    );
    let rows = page["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{page}");
    assert_eq!(
        rows[0]["primarycontactid"]["fullname"], "Ada Lovelace",
        "{page}"
    );
    assert_eq!(rows[0]["primarycontactid"]["contactid"], ada.as_str());
    assert!(
        rows[0]["primarycontactid"].get("lastname").is_none(),
        "{page}"
    );
    assert!(rows[1]["primarycontactid"].is_null(), "{page}");
    let viewed = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    assert_eq!(viewed.len(), 1, "{viewed:#?}");
    assert_eq!(ids(&viewed[0]), BTreeSet::from([ada.clone()]));
    let lists = server.audit(&admin, "operation=RetrieveMultiple&entity=account");
    assert_eq!(lists[0]["CorrelationId"], viewed[0]["CorrelationId"]);
    assert_eq!(
        viewed[0]["Details"],
        json!({"ExpandedFrom": "account", "NavigationProperty": "primarycontactid"})
    );

    // Collection-valued, on one record: the records whose lookup points at it, filtered,
    // ordered and cut by the nested options; only the two shown are in the log.
    let record = get_json(
        &server.api(&format!(
            "accounts({analytical})?$select=name&$expand=contact_parentcustomerid($select=firstname;$filter=firstname ne 'Mary';$orderby=firstname desc;$top=2)"
        )),
        &admin,
    );
    let staff: Vec<&str> = record["contact_parentcustomerid"]
        .as_array()
        .unwrap_or_else(|| panic!("{record}"))
        .iter()
        .map(|c| c["firstname"].as_str().unwrap())
        .collect();
    assert_eq!(staff, ["Zed", "Charles"]);
    let viewed = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    assert_eq!(viewed.len(), 2, "{viewed:#?}");
    let shown = ids(&viewed[0]);
    assert_eq!(shown.len(), 2);
    assert!(shown.is_subset(&employees), "{shown:?}");
    let retrieve = server.audit(&admin, &format!("operation=Retrieve&recordId={analytical}"));
    assert_eq!(retrieve[0]["CorrelationId"], viewed[0]["CorrelationId"]);

    // Not a relation, options a lookup does not take, nested $expand: 400 in the API's format.
    for query in [
        "accounts?$expand=nosuch",
        "accounts?$expand=primarycontactid($top=1)",
        "accounts?$expand=primarycontactid($expand=parentcustomerid)",
        "accounts?$expand=primarycontactid($select=nosuch)",
        "accounts?$expand=primarycontactid(",
    ] {
        let response = send(client().get(server.api(query)), &admin, None);
        assert_eq!(response.status(), 400, "{query}");
        let error: Value = response.json().unwrap();
        assert!(error["error"]["message"].is_string(), "{query}: {error}");
    }

    // $ref sets the lookup of a record and removes it; each is an audited update.
    let reference =
        json!({"@odata.id": format!("{}/contacts({ada})", server.api("").trim_end_matches('/'))});
    let path = format!("accounts({babbage})/primarycontactid/$ref");
    let set = send(
        client().put(server.api(&path)),
        &admin,
        Some(reference.clone()),
    );
    assert_eq!(set.status(), 204);
    let read = |id: &str| get_json(&server.api(&format!("accounts({id})")), &admin);
    assert_eq!(read(&babbage)["_primarycontactid_value"], ada.as_str());
    let removed = send(client().delete(server.api(&path)), &admin, None);
    assert_eq!(removed.status(), 204);
    assert!(read(&babbage)["_primarycontactid_value"].is_null());
    let updates = server.audit(&admin, &format!("operation=Update&recordId={babbage}"));
    assert_eq!(updates.len(), 2, "{updates:#?}");
    // On a record that does not exist, never an upsert; a body without @odata.id is a 400.
    let missing = format!("accounts({})/primarycontactid/$ref", uuid::Uuid::new_v4());
    let response = send(client().put(server.api(&missing)), &admin, Some(reference));
    assert_eq!(response.status(), 404);
    let response = send(
        client().put(server.api(&path)),
        &admin,
        Some(json!({"x": 1})),
    );
    assert_eq!(response.status(), 400);
    let response = send(
        client().delete(server.api(&format!("accounts({babbage})/name/$ref"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 404);
    let response = send(client().post(server.api(&path)), &admin, None);
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "PUT, DELETE");
}

/// `Prefer: odata.include-annotations` adds formatted values and a lookup's entity and
/// navigation property, each just before its property; a lookup's formatted value is the name
/// of another record, which is then in the log under its entity. `odata.metadata=full` adds
/// each record's type, id, edit link, navigation links and the types JSON does not show.
#[test]
fn annotations_and_full_metadata_are_what_the_client_asks_for() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["contact"]);
    let ada = entity_id(&send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"firstname": "Ada", "lastname": "Lovelace"})),
    ));
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({
            "name": "Formatted",
            "revenue": 1_200_000.0,
            "numberofemployees": 1000,
            "creditonhold": false,
            "primarycontactid@odata.bind": format!("/contacts({ada})"),
        })),
    ));
    let url = server.api(
        "accounts?$select=name,revenue,numberofemployees,creditonhold,_primarycontactid_value&$filter=name eq 'Formatted'",
    );
    let read = |prefer: &str, accept: &str| {
        let response = send(
            client()
                .get(&url)
                .header("Prefer", prefer)
                .header("Accept", accept),
            &admin,
            None,
        );
        assert_eq!(response.status(), 200);
        let applied = response
            .headers()
            .get("preference-applied")
            .map(|v| v.to_str().unwrap().to_string());
        let text = response.text().unwrap();
        let page: Value = serde_json::from_str(&text).unwrap();
        (text, page["value"][0].clone(), applied)
    };
    let formatted = "@OData.Community.Display.V1.FormattedValue";
    let (text, row, applied) = read("odata.include-annotations=\"*\"", "application/json");
    assert_eq!(row[format!("revenue{formatted}")], "1,200,000.00", "{row}");
    assert_eq!(row[format!("numberofemployees{formatted}")], "1,000");
    assert_eq!(row[format!("creditonhold{formatted}")], "No");
    let lookup = "_primarycontactid_value";
    assert_eq!(row[format!("{lookup}{formatted}")], "Ada Lovelace");
    assert_eq!(
        row[format!("{lookup}@Microsoft.Dynamics.CRM.lookuplogicalname")],
        "contact"
    );
    assert_eq!(
        row[format!("{lookup}@Microsoft.Dynamics.CRM.associatednavigationproperty")],
        "primarycontactid"
    );
    assert!(row.get(format!("name{formatted}")).is_none(), "{row}");
    // Each annotation just before its property.
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {text}"))
    };
    assert!(at(&format!("\"revenue{formatted}\"")) < at("\"revenue\":"));
    assert!(at(&format!("\"{lookup}{formatted}\"")) < at(&format!("\"{lookup}\":")));
    assert_eq!(applied.as_deref(), Some("odata.include-annotations=\"*\""));
    // The name shown is a contact seen.
    let seen = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(ids(&seen[0]), BTreeSet::from([ada.clone()]));
    assert_eq!(seen[0]["Details"], json!({"FormattedValueOf": "account"}));

    // Only what is asked for: a namespace's terms, no formatted value, no contact read.
    let (_, row, _) = read(
        "odata.include-annotations=\"Microsoft.Dynamics.CRM.*\"",
        "application/json",
    );
    assert_eq!(
        row[format!("{lookup}@Microsoft.Dynamics.CRM.lookuplogicalname")],
        "contact"
    );
    assert!(row.get(format!("{lookup}{formatted}")).is_none(), "{row}");
    assert_eq!(
        server
            .audit(&admin, "operation=RetrieveMultiple&entity=contact")
            .len(),
        1
    );

    // Full metadata: type, id, edit link, navigation links, and the types JSON leaves open.
    let (_, row, _) = read("", "application/json;odata.metadata=full");
    assert_eq!(row["@odata.type"], "#Microsoft.Dynamics.CRM.account");
    assert_eq!(
        row["@odata.id"],
        server.api(&format!("accounts({account})")).as_str()
    );
    assert_eq!(row["@odata.editLink"], format!("accounts({account})"));
    assert_eq!(row["revenue@odata.type"], "#Decimal");
    assert_eq!(row[format!("{lookup}@odata.type")], "#Guid");
    assert_eq!(
        row["primarycontactid@odata.navigationLink"],
        format!("accounts({account})/primarycontactid")
    );
    assert!(row["@odata.etag"].is_string(), "{row}");
}
