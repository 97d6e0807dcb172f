//! Relations (issue 14): `$expand` of a lookup and of its reverse, with nested options, and
//! `…/$ref` to set and remove a lookup. Every record an expansion shows is in the log, under its
//! own entity, with the request's correlation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::common::*;

fn ids(event: &Value) -> BTreeSet<String> {
    record_ids(std::slice::from_ref(event))
}

/// A server auditing changes, reads and lists of accounts and contacts, and its admin's token.
fn audited() -> (Server, String) {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account", "contact"]);
    (server, admin)
}

/// Creates a record of `set` from `body`; its id.
fn create(server: &Server, token: &str, set: &str, body: Value) -> String {
    let response = send(client().post(server.api(set)), token, Some(body));
    assert_eq!(response.status(), 204, "{set}");
    entity_id(&response)
}

#[test]
fn expanded_records_are_shown_and_each_is_in_the_log_under_its_own_entity() {
    let (server, admin) = audited();
    let create = |set: &str, body: Value| create(&server, &admin, set, body);
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

/// A navigation property's path: the records whose lookup points at a record, as a list of
/// their own entity with its options and pages (each page in the log, saying where it was
/// reached from); the record a lookup points at, as its retrieve; 204 when the lookup is empty.
#[test]
fn a_navigation_property_s_path_shows_the_related_records_and_the_log_has_each() {
    let (server, admin) = audited();
    let create = |set: &str, body: Value| create(&server, &admin, set, body);
    let analytical = create("accounts", json!({"name": "Nav Analytical"}));
    let other = create("accounts", json!({"name": "Nav Other"}));
    let mut staff = BTreeMap::new();
    for (first, employer) in [
        ("Charles", &analytical),
        ("Mary", &analytical),
        ("Zed", &analytical),
        ("Olive", &other),
    ] {
        staff.insert(
            first,
            create(
                "contacts",
                json!({
                    "firstname": first,
                    "lastname": "Nav",
                    "parentcustomerid@odata.bind": format!("/accounts({employer})"),
                }),
            ),
        );
    }
    let loner = create("contacts", json!({"firstname": "Lone", "lastname": "Nav"}));

    let path = format!("accounts({analytical})/contact_parentcustomerid");
    let first = send(
        client()
            .get(server.api(&format!(
                "{path}?$select=firstname&$filter=firstname ne 'Zed'&$orderby=firstname&$count=true"
            )))
            .header("Prefer", "odata.maxpagesize=1"),
        &admin,
        None,
    );
    assert_eq!(first.status(), 200);
    let first: Value = first.json().unwrap();
    assert_eq!(first["value"][0]["firstname"], "Charles", "{first}");
    assert_eq!(first["value"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["@odata.count"], 2, "{first}");
    assert!(
        first["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#contacts(firstname)"),
        "{first}"
    );
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&server.api(&format!("{path}?"))), "{next}");
    let second = send(
        client().get(next).header("Prefer", "odata.maxpagesize=1"),
        &admin,
        None,
    );
    let second: Value = second.json().unwrap();
    let names: Vec<&str> = second["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["firstname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Mary"], "{second}");
    assert!(second.get("@odata.nextLink").is_none(), "{second}");
    let pages = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    assert_eq!(pages.len(), 2, "{pages:#?}");
    for page in &pages {
        assert_eq!(
            page["Details"],
            json!({
                "NavigatedFrom": "account",
                "RecordId": analytical,
                "NavigationProperty": "contact_parentcustomerid",
            })
        );
        assert!(page["Query"].as_str().unwrap().starts_with(&path), "{page}");
    }
    assert_eq!(
        record_ids(&pages),
        BTreeSet::from([staff["Charles"].clone(), staff["Mary"].clone()])
    );

    // Single-valued: the account, as a retrieve of it at this path; nothing behind an empty
    // lookup.
    let employer = get_json(
        &server.api(&format!(
            "contacts({})/parentcustomerid?$select=name",
            staff["Olive"]
        )),
        &admin,
    );
    assert_eq!(employer["name"], "Nav Other", "{employer}");
    assert_eq!(employer["accountid"], other.as_str(), "{employer}");
    assert!(
        employer["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts/$entity"),
        "{employer}"
    );
    let read = server.audit(&admin, &format!("operation=Retrieve&recordId={other}"));
    assert_eq!(read.len(), 1, "{read:#?}");
    assert!(
        read[0]["Query"]
            .as_str()
            .unwrap()
            .starts_with(&format!("contacts({})/parentcustomerid", staff["Olive"])),
        "{read:#?}"
    );
    let none = send(
        client().get(server.api(&format!("contacts({loner})/parentcustomerid"))),
        &admin,
        None,
    );
    assert_eq!(none.status(), 204);

    // A lookup is written through its navigation property only: its value, by either name,
    // is refused and nothing changes (one body could otherwise name the lookup twice).
    let before = count(&server, &admin, "contacts");
    for body in [
        json!({"lastname": "Nav", "_parentcustomerid_value": other}),
        json!({"lastname": "Nav", "parentcustomerid": other,
               "parentcustomerid@odata.bind": format!("/accounts({analytical})")}),
    ] {
        let (code, _, message) = odata_error(send(
            client().post(server.api("contacts")),
            &admin,
            Some(body),
        ));
        assert_eq!(code, 400, "{message}");
        assert!(
            message.contains("\"parentcustomerid@odata.bind\": \"/accounts(<id>)\""),
            "{message}"
        );
    }
    let (code, _, _) = odata_error(send(
        client().patch(server.api(&format!("contacts({loner})"))),
        &admin,
        Some(json!({"_parentcustomerid_value": other})),
    ));
    assert_eq!(code, 400);
    // A reference to a record that does not exist, on a create or an update: 400.
    let nobody = format!("/accounts({})", uuid::Uuid::new_v4());
    for request in [
        client().post(server.api("contacts")),
        client().patch(server.api(&format!("contacts({loner})"))),
    ] {
        let (code, _, message) = odata_error(send(
            request,
            &admin,
            Some(json!({"lastname": "Nav", "parentcustomerid@odata.bind": nobody})),
        ));
        assert_eq!(code, 400, "{message}");
        assert!(message.contains("does not exist"), "{message}");
    }
    assert_eq!(count(&server, &admin, "contacts"), before);
    let unchanged = get_json(&server.api(&format!("contacts({loner})")), &admin);
    assert!(
        unchanged["_parentcustomerid_value"].is_null(),
        "{unchanged}"
    );

    // From a record that does not exist: 404; $value of a navigation property: 400; a
    // method the path does not take: 405. Each in the API's error format.
    let missing = uuid::Uuid::new_v4();
    for (method, path, status) in [
        (
            reqwest::Method::GET,
            format!("accounts({missing})/contact_parentcustomerid"),
            404,
        ),
        (
            reqwest::Method::GET,
            format!("contacts({missing})/parentcustomerid"),
            404,
        ),
        (
            reqwest::Method::GET,
            format!("contacts({loner})/parentcustomerid/$value"),
            400,
        ),
        (reqwest::Method::DELETE, path.clone(), 405),
    ] {
        let response = send(
            client().request(method.clone(), server.api(&path)),
            &admin,
            None,
        );
        let (code, _, message) = odata_error(response);
        assert_eq!(code, status, "{method} {path}: {message}");
    }
}

/// `POST` to a collection-valued navigation property's path creates a record bound to the
/// record it starts from (a create, recorded as one, saying where it was made); `$expand=*`
/// expands every navigation property, each expansion in the log as a named one is.
#[test]
fn a_record_made_under_a_navigation_property_is_bound_to_it_and_star_expands_them_all() {
    let (server, admin) = audited();
    let account = create(&server, &admin, "accounts", json!({"name": "Made Under"}));
    let path = format!("accounts({account})/contact_parentcustomerid");
    let made = send(
        client().post(server.api(&path)),
        &admin,
        Some(json!({"firstname": "Bound", "lastname": "Under"})),
    );
    assert_eq!(made.status(), 204);
    let contact = entity_id(&made);
    let record = get_json(&server.api(&format!("contacts({contact})")), &admin);
    assert_eq!(
        record["_parentcustomerid_value"],
        account.as_str(),
        "{record}"
    );
    let created = server.audit(&admin, &format!("operation=Create&recordId={contact}"));
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0]["EntityName"], "contact");
    assert_eq!(
        created[0]["Details"],
        json!({
            "NavigatedFrom": "account",
            "RecordId": account,
            "NavigationProperty": "contact_parentcustomerid",
        })
    );

    // What the path cannot take: a body binding the same lookup, a record that does not
    // exist, a property or a single-valued navigation property (405, each with its Allow).
    let before = count(&server, &admin, "contacts");
    let bound_twice = send(
        client().post(server.api(&path)),
        &admin,
        Some(
            json!({"lastname": "Twice", "parentcustomerid@odata.bind": format!("/accounts({account})")}),
        ),
    );
    assert_eq!(odata_error(bound_twice).0, 400);
    let nowhere = send(
        client().post(server.api(&format!(
            "accounts({})/contact_parentcustomerid",
            uuid::Uuid::new_v4()
        ))),
        &admin,
        Some(json!({"lastname": "Nowhere"})),
    );
    assert_eq!(odata_error(nowhere).0, 404);
    for (method, path, allow) in [
        (
            reqwest::Method::POST,
            format!("accounts({account})/name"),
            "GET, PUT, DELETE",
        ),
        (
            reqwest::Method::POST,
            format!("contacts({contact})/parentcustomerid"),
            "GET",
        ),
        (reqwest::Method::DELETE, path.clone(), "GET, POST"),
    ] {
        let response = send(
            client().request(method.clone(), server.api(&path)),
            &admin,
            Some(json!({"lastname": "Never"})),
        );
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }
    assert_eq!(count(&server, &admin, "contacts"), before);

    // Every navigation property, expanded: the account's contacts, its empty primary contact,
    // the users it names; the contacts shown are in the log as an expansion's.
    let all = get_json(
        &server.api(&format!("accounts({account})?$select=name&$expand=*")),
        &admin,
    );
    assert_eq!(
        all["contact_parentcustomerid"][0]["contactid"],
        contact.as_str(),
        "{all}"
    );
    assert!(all["primarycontactid"].is_null(), "{all}");
    assert!(all["createdby"]["systemuserid"].is_string(), "{all}");
    assert!(all["opportunity_parentaccountid"].is_array(), "{all}");
    let lists = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    let expanded: Vec<&Value> = lists
        .iter()
        .filter(|e| e["Details"]["ExpandedFrom"].is_string())
        .collect();
    assert_eq!(expanded.len(), 1, "{lists:#?}");
    assert_eq!(ids(expanded[0]), BTreeSet::from([contact.clone()]));
    assert_eq!(
        expanded[0]["Details"],
        json!({"ExpandedFrom": "account", "NavigationProperty": "contact_parentcustomerid"})
    );
    let response = send(
        client().get(server.api(&format!("accounts({account})?$expand=*($select=name)"))),
        &admin,
        None,
    );
    assert_eq!(odata_error(response).0, 400);

    // A role that reads accounts and contacts but not users: `*` expands what it may read,
    // where naming a user's navigation property is refused.
    let reader = server.user_holding(
        &admin,
        "reader@contoso.test",
        "Account reader",
        &["prvReadaccount", "prvReadcontact"],
    );
    let seen = get_json(
        &server.api(&format!("accounts({account})?$select=name&$expand=*")),
        &reader,
    );
    assert_eq!(
        seen["contact_parentcustomerid"][0]["contactid"],
        contact.as_str(),
        "{seen}"
    );
    assert!(seen.get("createdby").is_none(), "{seen}");
    let named = send(
        client().get(server.api(&format!("accounts({account})?$expand=createdby"))),
        &reader,
        None,
    );
    assert_eq!(odata_error(named).0, 403);
}

/// Deleting a record does to the records that name it what their lookup's delete behaviour
/// says, in the delete's transaction: an account's contacts and cases go with it, the lookups
/// of an opportunity and of another account naming a contact that went are cleared, a custom
/// lookup that restricts it refuses it (409). Each record deleted or changed is an event of its
/// own under its entity, with the request's correlation and `Details` naming the delete; a role
/// that may delete accounts but not contacts cannot take an account's contacts with it.
#[test]
fn a_delete_does_to_the_records_naming_it_what_their_lookup_says_and_records_each() {
    let (server, admin) = audited();
    let bind = |set: &str, id: &str| format!("/{set}({id})");
    let account = create(&server, &admin, "accounts", json!({"name": "Parent"}));
    let contacts: BTreeSet<String> = ["Ann", "Bob"]
        .into_iter()
        .map(|name| {
            create(
                &server,
                &admin,
                "contacts",
                json!({"lastname": name,
                       "parentcustomerid@odata.bind": bind("accounts", &account)}),
            )
        })
        .collect();
    let first = contacts.first().unwrap().clone();
    let case = create(
        &server,
        &admin,
        "incidents",
        json!({"title": "Broken", "customerid@odata.bind": bind("accounts", &account)}),
    );
    let deal = create(
        &server,
        &admin,
        "opportunities",
        json!({"name": "Deal", "parentaccountid@odata.bind": bind("accounts", &account)}),
    );
    let other = create(
        &server,
        &admin,
        "accounts",
        json!({"name": "Other", "primarycontactid@odata.bind": bind("contacts", &first)}),
    );
    let status = |path: &str| {
        send(client().get(server.api(path)), &admin, None)
            .status()
            .as_u16()
    };

    // A role that may delete accounts but not contacts: refused whole, as the caller's refusal.
    let remover = server.user_holding(
        &admin,
        "remover@custos.test",
        "Account remover",
        &[
            "prvReadaccount",
            "prvDeleteaccount",
            "prvReadcontact",
            "prvReadincident",
        ],
    );
    let (code, _, message) = odata_error(send(
        client().delete(server.api(&format!("accounts({account})"))),
        &remover,
        None,
    ));
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("Delete privilege on entity 'contact'"),
        "{message}"
    );
    assert_eq!(status(&format!("accounts({account})")), 200);
    assert_eq!(status(&format!("contacts({first})")), 200);
    let denied = server.audit(&admin, &format!("operation=Delete&recordId={account}"));
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["ResultStatus"], "Denied");
    assert!(
        server
            .audit(&admin, &format!("operation=Delete&recordId={first}"))
            .is_empty()
    );
    // The same role deletes an account nothing names.
    let alone = create(&server, &admin, "accounts", json!({"name": "Alone"}));
    let response = send(
        client().delete(server.api(&format!("accounts({alone})"))),
        &remover,
        None,
    );
    assert_eq!(response.status(), 204);

    let response = send(
        client().delete(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    for path in contacts
        .iter()
        .map(|c| format!("contacts({c})"))
        .chain([format!("incidents({case})")])
    {
        assert_eq!(status(&path), 404, "{path} went with its account");
    }
    let cleared = get_json(&server.api(&format!("opportunities({deal})")), &admin);
    assert!(cleared["_parentaccountid_value"].is_null(), "{cleared}");
    let cleared = get_json(&server.api(&format!("accounts({other})")), &admin);
    assert!(cleared["_primarycontactid_value"].is_null(), "{cleared}");

    let root = server.audit(&admin, &format!("operation=Delete&recordId={account}"));
    let root: Vec<&Value> = root
        .iter()
        .filter(|e| e["ResultStatus"] == "Succeeded")
        .collect();
    assert_eq!(root.len(), 1, "{root:#?}");
    let correlation = &root[0]["CorrelationId"];
    let cause = json!({"CascadedFrom": {"Entity": "account", "RecordId": account}});
    let mut deleted = BTreeMap::new();
    for (entity, id) in contacts
        .iter()
        .map(|c| ("contact", c.as_str()))
        .chain([("incident", case.as_str())])
    {
        let events = server.audit(&admin, &format!("operation=Delete&recordId={id}"));
        assert_eq!(events.len(), 1, "{entity} {id}: {events:#?}");
        assert_eq!(events[0]["EntityName"], entity);
        assert_eq!(&events[0]["CorrelationId"], correlation);
        assert_eq!(events[0]["Details"], cause);
        assert_eq!(events[0]["UserUpn"], root[0]["UserUpn"]);
        deleted.insert(id.to_string(), events[0]["Changes"].clone());
    }
    assert!(
        deleted[&first]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Attribute"] == "lastname" && c["Old"].is_string()),
        "a cascaded delete keeps the values it destroyed: {:#?}",
        deleted[&first]
    );
    for (entity, id, lookup) in [
        ("opportunity", &deal, "_parentaccountid_value"),
        ("account", &other, "_primarycontactid_value"),
    ] {
        let events = server.audit(&admin, &format!("operation=Update&recordId={id}"));
        assert_eq!(events.len(), 1, "{entity} {id}: {events:#?}");
        assert_eq!(events[0]["EntityName"], entity);
        assert_eq!(&events[0]["CorrelationId"], correlation);
        assert_eq!(events[0]["Details"], cause);
        let changes = events[0]["Changes"].as_array().unwrap();
        let change = changes
            .iter()
            .find(|c| c["Attribute"] == lookup)
            .unwrap_or_else(|| panic!("{lookup} in {changes:#?}"));
        assert!(
            change["Old"].is_string() && change["New"].is_null(),
            "{change}"
        );
    }

    // A custom lookup: its delete behaviour is set when it is made and shown in its
    // definition; one that restricts refuses the delete while a record names the account.
    let made = send(
        client().post(server.api("EntityDefinitions")),
        &admin,
        Some(
            json!({"SchemaName": "new_Project", "EntitySetName": "new_projects",
                    "Attributes": [{"AttributeType": "String", "SchemaName": "new_name",
                                    "IsPrimaryName": true}]}),
        ),
    );
    assert_eq!(made.status(), 204);
    for (body, status) in [
        (
            json!({"AttributeType": "Lookup", "SchemaName": "new_sponsorid",
                   "Targets": ["account"], "CascadeConfiguration": {"Delete": "Restrict"}}),
            204,
        ),
        (
            json!({"AttributeType": "Lookup", "SchemaName": "new_x", "Targets": ["account"],
                   "CascadeConfiguration": {"Delete": "NoCascade"}}),
            400,
        ),
        (
            json!({"AttributeType": "Lookup", "SchemaName": "new_x", "Targets": ["account"],
                   "CascadeConfiguration": {"Delete": "Cascade", "Assign": "Cascade"}}),
            400,
        ),
        (
            json!({"AttributeType": "Integer", "SchemaName": "new_x",
                   "CascadeConfiguration": {"Delete": "Cascade"}}),
            400,
        ),
    ] {
        let response = send(
            client().post(server.api("EntityDefinitions(LogicalName='new_project')/Attributes")),
            &admin,
            Some(body.clone()),
        );
        assert_eq!(response.status().as_u16(), status, "{body}");
    }
    server.publish(&admin);
    let definition = get_json(
        &server.api(
            "EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_sponsorid')",
        ),
        &admin,
    );
    assert_eq!(
        definition["CascadeConfiguration"],
        json!({"Delete": "Restrict"}),
        "{definition}"
    );
    let shown = get_json(
        &server.api(
            "EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='parentcustomerid')",
        ),
        &admin,
    );
    assert_eq!(shown["CascadeConfiguration"], json!({"Delete": "Cascade"}));
    let sponsor = create(&server, &admin, "accounts", json!({"name": "Sponsor"}));
    let project = create(
        &server,
        &admin,
        "new_projects",
        json!({"new_name": "Apollo", "new_sponsorid@odata.bind": bind("accounts", &sponsor)}),
    );
    let (code, _, message) = odata_error(send(
        client().delete(server.api(&format!("accounts({sponsor})"))),
        &admin,
        None,
    ));
    assert_eq!(code, 409, "{message}");
    assert!(message.contains("new_sponsorid"), "{message}");
    assert!(
        message.contains("cannot be deleted: new_project records name it"),
        "how many name it is the business of those who may read them: {message}"
    );
    assert_eq!(status(&format!("accounts({sponsor})")), 200);
    let response = send(
        client().delete(server.api(&format!("new_projects({project})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let response = send(
        client().delete(server.api(&format!("accounts({sponsor})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);

    // A bulk delete cascades the same way, each record it reaches recorded.
    let parent = create(&server, &admin, "accounts", json!({"name": "Bulk parent"}));
    let child = create(
        &server,
        &admin,
        "contacts",
        json!({"lastname": "Child", "parentcustomerid@odata.bind": bind("accounts", &parent)}),
    );
    let response = send(
        client().post(server.api("BulkDelete")),
        &admin,
        Some(json!({"EntitySetName": "accounts", "Filter": "name eq 'Bulk parent'"})),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(status(&format!("contacts({child})")), 404);
    let events = server.audit(&admin, &format!("operation=Delete&recordId={child}"));
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0]["Details"],
        json!({"CascadedFrom": {"Entity": "account", "RecordId": parent}})
    );
}

/// `POST set(<id>)/navigation/$ref` relates a record through a collection-valued navigation
/// property, `GET` lists the references (recorded as the list it is) and `DELETE
/// …(<other>)/$ref` (or `…/$ref?$id=`) unrelates it, as Dataverse's
/// associate and disassociate of a one-to-many relationship: each is the related record's
/// update, recorded as one, saying where it was reached from; a record related elsewhere is
/// not unrelated from here, and a caller who may not change it is refused.
#[test]
fn a_collection_navigation_property_s_references_relate_and_unrelate_records() {
    let (server, admin) = audited();
    let account = create(&server, &admin, "accounts", json!({"name": "A"}));
    let elsewhere = create(&server, &admin, "accounts", json!({"name": "B"}));
    let contact = create(&server, &admin, "contacts", json!({"lastname": "Roamer"}));
    let refs = |id: &str| server.api(&format!("accounts({id})/contact_parentcustomerid/$ref"));
    let parent = || {
        get_json(&server.api(&format!("contacts({contact})")), &admin)["_parentcustomerid_value"]
            .clone()
    };
    let target = json!({"@odata.id": server.api(&format!("contacts({contact})"))});

    let response = send(client().post(refs(&account)), &admin, Some(target.clone()));
    assert_eq!(response.status(), 204);
    assert_eq!(parent(), account.as_str());
    // Its references list it, recorded as the list of contacts they are.
    let listed = get_json(&refs(&account), &admin);
    assert_eq!(
        listed["value"],
        json!([{"@odata.id": server.api(&format!("contacts({contact})"))}]),
        "{listed}"
    );
    assert!(
        listed["@odata.context"]
            .as_str()
            .is_some_and(|c| c.ends_with("$metadata#Collection($ref)")),
        "{listed}"
    );
    let seen = server.audit(
        &admin,
        &format!("operation=RetrieveMultiple&recordId={contact}"),
    );
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(
        seen[0]["Details"]["NavigationProperty"],
        "contact_parentcustomerid"
    );
    let response = send(
        client().get(format!("{}?$select=lastname", refs(&account))),
        &admin,
        None,
    );
    assert_eq!(odata_error(response).0, 400);
    let updates = server.audit(&admin, &format!("operation=Update&recordId={contact}"));
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0]["EntityName"], "contact");
    assert_eq!(
        updates[0]["Details"],
        json!({"NavigatedFrom": "account", "RecordId": account,
               "NavigationProperty": "contact_parentcustomerid"})
    );
    assert_eq!(
        updates[0]["Changes"],
        json!([{"Attribute": "_parentcustomerid_value", "Old": null, "New": account}])
    );

    // Not related to B: nothing to unrelate there, and it stays A's.
    let response = send(
        client().delete(server.api(&format!(
            "accounts({elsewhere})/contact_parentcustomerid({contact})/$ref"
        ))),
        &admin,
        None,
    );
    assert_eq!(odata_error(response).0, 404);
    assert_eq!(parent(), account.as_str());

    // What the path cannot take: another set's record, one that does not exist, a PUT.
    for (body, status) in [
        (
            json!({"@odata.id": server.api(&format!("accounts({elsewhere})"))}),
            400,
        ),
        (
            json!({"@odata.id": format!("contacts({})", uuid::Uuid::new_v4())}),
            404,
        ),
        (json!({"id": contact}), 400),
    ] {
        let response = send(client().post(refs(&elsewhere)), &admin, Some(body.clone()));
        assert_eq!(odata_error(response).0, status, "{body}");
    }
    let response = send(client().put(refs(&account)), &admin, Some(target.clone()));
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST, DELETE");
    assert_eq!(parent(), account.as_str());
    // Nor is it made in a changeset (the related record's lookup is, by its own `$ref`).
    let batch = json!({"requests": [
        {"id": "r", "atomicityGroup": "g", "method": "POST",
         "url": format!("accounts({elsewhere})/contact_parentcustomerid/$ref"), "body": target.clone()},
    ]});
    let answer: Value = send(client().post(server.api("$batch")), &admin, Some(batch))
        .json()
        .unwrap();
    let part = &answer["responses"][0];
    assert_eq!(part["status"], 400, "{answer:#}");
    let message = part["body"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("not made in a changeset"), "{message}");
    assert_eq!(parent(), account.as_str());

    // A caller who may read both but not change contacts is refused, as itself.
    let reader = server.user_holding(
        &admin,
        "reader@contoso.test",
        "Account reader",
        &["prvReadaccount", "prvReadcontact", "prvWriteaccount"],
    );
    let response = send(
        client().post(refs(&elsewhere)),
        &reader,
        Some(target.clone()),
    );
    assert_eq!(odata_error(response).0, 403);
    assert_eq!(parent(), account.as_str());
    // Nor does it learn, by a 404, that the contact is not related to B.
    let response = send(
        client().delete(server.api(&format!(
            "accounts({elsewhere})/contact_parentcustomerid({contact})/$ref"
        ))),
        &reader,
        None,
    );
    assert_eq!(odata_error(response).0, 403);

    let response = send(
        client().delete(format!(
            "{}?$id={}",
            refs(&account),
            server.api(&format!("contacts({contact})"))
        )),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    assert!(parent().is_null());
    let updates = server.audit(
        &admin,
        &format!("operation=Update&recordId={contact}&status=Succeeded"),
    );
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert!(
        updates.iter().any(|u| u["Changes"]
            == json!([{"Attribute": "_parentcustomerid_value", "Old": account, "New": null}])),
        "{updates:#?}"
    );
}

/// A collection-valued navigation property counts its records (`…/$count`, with `$filter`) and
/// opens one of them by key (`…(<id>)`), each recorded as the count or the retrieve it is; a
/// record that is not one of them is 404, whatever it is elsewhere.
#[test]
fn a_collection_navigation_property_counts_its_records_and_opens_one_by_key() {
    let (server, admin) = audited();
    let account = create(&server, &admin, "accounts", json!({"name": "A"}));
    let other = create(&server, &admin, "accounts", json!({"name": "B"}));
    let bind = format!("/accounts({account})");
    let staff: Vec<String> = ["Ada", "Bea"]
        .into_iter()
        .map(|name| {
            create(
                &server,
                &admin,
                "contacts",
                json!({"lastname": name, "parentcustomerid@odata.bind": bind}),
            )
        })
        .collect();
    let text = |path: &str| {
        let response = send(client().get(server.api(path)), &admin, None);
        (response.status().as_u16(), response.text().unwrap())
    };
    let path = format!("accounts({account})/contact_parentcustomerid");
    assert_eq!(text(&format!("{path}/$count")), (200, "2".to_string()));
    assert_eq!(
        text(&format!("{path}/$count?$filter=lastname eq 'Bea'")),
        (200, "1".to_string())
    );
    assert_eq!(
        text(&format!(
            "accounts({other})/contact_parentcustomerid/$count"
        )),
        (200, "0".to_string())
    );
    let counts = server.audit(&admin, "operation=RetrieveMultiple&entity=contact");
    let counted: Vec<&Value> = counts
        .iter()
        .filter(|e| e["Query"].as_str().unwrap_or("").contains("/$count"))
        .collect();
    assert_eq!(counted.len(), 3, "{counts:#?}");
    assert!(
        counted.iter().all(|e| e["RecordIds"] == json!([])),
        "{counted:#?}"
    );
    assert!(counted.iter().any(|e| e["ResultCount"] == 2
        && e["Details"]
            == json!({"NavigatedFrom": "account", "RecordId": account,
                      "NavigationProperty": "contact_parentcustomerid"})));

    let one = get_json(&server.api(&format!("{path}({})", staff[1])), &admin);
    assert_eq!(one["lastname"], "Bea", "{one}");
    let read = server.audit(&admin, &format!("operation=Retrieve&recordId={}", staff[1]));
    assert_eq!(read.len(), 1, "{read:#?}");
    assert_eq!(read[0]["EntityName"], "contact");
    for missing in [
        format!("accounts({other})/contact_parentcustomerid({})", staff[0]),
        format!("{path}({})", uuid::Uuid::new_v4()),
        format!(
            "accounts({})/contact_parentcustomerid/$count",
            uuid::Uuid::new_v4()
        ),
        format!("accounts({account})/primarycontactid/$count"),
    ] {
        assert_eq!(text(&missing).0, 404, "{missing}");
    }
    assert!(
        server
            .audit(
                &admin,
                &format!("operation=Retrieve&recordId={}&status=Succeeded", staff[0])
            )
            .is_empty(),
        "a record that is not one of them is not shown, nor recorded as seen"
    );
    // A caller who may read accounts but not contacts is refused alike, related or not: a 404
    // would tell it which contacts belong to which account.
    let reader = server.user_holding(
        &admin,
        "accounts@contoso.test",
        "Accounts only",
        &["prvReadaccount"],
    );
    for path in [
        format!("{path}({})", staff[0]),
        format!("accounts({other})/contact_parentcustomerid({})", staff[0]),
    ] {
        let response = send(client().get(server.api(&path)), &reader, None);
        assert_eq!(odata_error(response).0, 403, "{path}");
    }
}
