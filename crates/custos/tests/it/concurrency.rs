//! Optimistic concurrency as in Dataverse (issue 14 item 1): `If-Match` with a stale ETag is
//! 412 on PATCH and DELETE and changes nothing; the current ETag succeeds; `If-None-Match` with
//! the current ETag is 304; every refusal is in the log. And the protocol details a client
//! reads first: the scheme a 401 wants, the context first in a record, the methods a 405
//! allows, a query that is not UTF-8 refused, `set/$count`, a `$metadata` that defines what it
//! imports, with decimal scales and non-nullable keys, and wide numbers as strings for a
//! client that asks (`IEEE754Compatible=true`).

use serde_json::{Value, json};

use crate::common::*;

#[test]
fn a_stale_etag_changes_nothing_and_the_current_one_wins() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let id = create_account(&server, &admin, "Contoso");
    let url = server.api(&format!("accounts({id})"));
    let etag = |token: &str| -> String {
        get_json(&url, token)["@odata.etag"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = etag(&admin);
    assert_eq!(first, "W/\"1\"");

    // Unchanged: 304 with no body; after a change, 200 with the new ETag.
    let cached = send(
        client().get(&url).header("If-None-Match", &first),
        &admin,
        None,
    );
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().unwrap().is_empty());

    let updated = send(
        client().patch(&url).header("If-Match", &first),
        &admin,
        Some(json!({"name": "Contoso Ltd"})),
    );
    assert_eq!(updated.status(), 204);
    let second = etag(&admin);
    assert_eq!(second, "W/\"2\"");
    assert_eq!(
        send(
            client().get(&url).header("If-None-Match", &first),
            &admin,
            None
        )
        .status(),
        200
    );

    // The first ETag is stale now: neither PATCH nor DELETE does anything.
    let lost = send(
        client().patch(&url).header("If-Match", &first),
        &admin,
        Some(json!({"name": "Lost update"})),
    );
    let (status, code, _) = odata_error(lost);
    assert_eq!((status, code.as_str()), (412, "PreconditionFailed"));
    let removed = send(
        client().delete(&url).header("If-Match", &first),
        &admin,
        None,
    );
    assert_eq!(removed.status(), 412);
    let garbage = send(
        client().delete(&url).header("If-Match", "\"not-ours\""),
        &admin,
        None,
    );
    assert_eq!(garbage.status(), 412);
    assert_eq!(get_json(&url, &admin)["name"], "Contoso Ltd");
    let refused: Vec<_> = server
        .audit(&admin, "operation=Delete")
        .into_iter()
        .filter(|e| e["ResultStatus"] != "Succeeded")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "each refused delete is in the log: {refused:?}"
    );

    // The current ETag deletes.
    let deleted = send(
        client().delete(&url).header("If-Match", &second),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert_eq!(send(client().get(&url), &admin, None).status(), 404);
}

#[test]
fn a_401_names_its_scheme_and_a_record_starts_with_its_context() {
    let server = Server::start(&[]);
    let unauthenticated = client().get(server.api("accounts")).send().unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(
        unauthenticated.headers()["www-authenticate"],
        "Bearer realm=\"custos\""
    );
    let admin = server.admin();
    let id = create_account(&server, &admin, "Fabrikam");
    let text = send(
        client().get(server.api(&format!("accounts({id})"))),
        &admin,
        None,
    )
    .text()
    .unwrap();
    assert!(text.starts_with("{\"@odata.context\":"), "{text}");
    let wrong = send(client().delete(server.api("accounts")), &admin, None);
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "GET, POST");
    let wrong = send(
        client().put(server.api(&format!("accounts({id})"))),
        &admin,
        None,
    );
    assert_eq!(wrong.headers()["allow"], "GET, PATCH, DELETE");
    let garbled = send(
        client().get(format!(
            "{}?$filter=name%20eq%20%27%FF%27",
            server.api("accounts")
        )),
        &admin,
        None,
    );
    assert_eq!(garbled.status(), 400, "a query that is not UTF-8");

    // `set/$count` is the number a client's count() reads, with or without a filter.
    create_account(&server, &admin, "Northwind");
    let counted = |query: &str| {
        let response = send(
            client().get(format!("{}/$count{query}", server.api("accounts"))),
            &admin,
            None,
        );
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        response.text().unwrap()
    };
    assert_eq!(counted(""), count(&server, &admin, "accounts").to_string());
    assert_eq!(counted("?$filter=name%20eq%20%27Northwind%27"), "1");
    let wrong = send(
        client().post(format!("{}/$count", server.api("accounts"))),
        &admin,
        None,
    );
    assert_eq!(wrong.headers()["allow"], "GET");
}

/// `$metadata` read by an XML parser apart from Custos (Python's ElementTree): every operation
/// the container imports is defined (and `RetrieveVersion` answers), a decimal or money property has a scale (OData's default,
/// 0, would make it an integer), every key is non-nullable, every navigation property names a
/// defined type and a partner that names it back, and a collection's `OnDelete` says what a
/// delete does to its records.
#[test]
fn the_metadata_defines_what_it_imports_and_states_scale_and_keys() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let csdl = send(client().get(server.api("$metadata")), &admin, None)
        .text()
        .unwrap();
    let script = r#"
import json, sys
import xml.etree.ElementTree as ET
ns = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}
root = ET.fromstring(sys.stdin.read())
schema = root.find(".//edm:Schema", ns)
defined = {e.get("Name") for e in schema if e.tag.endswith("}Function") or e.tag.endswith("}Action")}
imports = [e.get("Function") or e.get("Action") for e in schema.iter() if e.tag.endswith("Import")]
complex_types = {e.get("Name") for e in schema.findall("edm:ComplexType", ns)}
problems = [f"import of undefined {name}" for name in imports if name.split(".")[-1] not in defined]
for function in schema.findall("edm:Function", ns):
    returned = function.find("edm:ReturnType", ns).get("Type")
    # A primitive type is the standard's (`Edm.Boolean` of the query functions); any other
    # must be defined here.
    if returned not in ("Edm.Boolean", "Edm.String", "Edm.Int64") and returned.split(".")[-1] not in complex_types:
        problems.append(f"{function.get('Name')} returns undefined {returned}")
entity_types = {e.get("Name") for e in schema.findall("edm:EntityType", ns)}
for function in schema.findall("edm:Function", ns):
    for parameter in function.findall("edm:Parameter", ns):
        given = parameter.get("Type").removeprefix("Collection(").removesuffix(")")
        if not given.startswith("Edm.") and given.split(".")[-1] not in complex_types | entity_types:
            problems.append(f"{function.get('Name')}.{parameter.get('Name')}: undefined type {given}")
decimals = 0
for entity in schema.findall("edm:EntityType", ns):
    if entity.get("Abstract") == "true":
        # Dataverse's crmbaseentity: any record, a function's parameter; it has no key.
        if len(entity):
            problems.append(f"{entity.get('Name')}: an abstract type with members")
        continue
    key = entity.find("edm:Key/edm:PropertyRef", ns).get("Name")
    for prop in entity.findall("edm:Property", ns):
        if prop.get("Name") == key and prop.get("Nullable") != "false":
            problems.append(f"{entity.get('Name')}.{key}: a nullable key")
        if prop.get("Type") == "Edm.String" and entity.get("Name") == "account" and prop.get("Name") == "name":
            if prop.get("MaxLength") != "200":
                problems.append(f"account.name: MaxLength {prop.get('MaxLength')}, not 200")
        if prop.get("Type") == "Edm.Decimal":
            decimals += 1
            if prop.get("Scale") is None:
                problems.append(f"{entity.get('Name')}.{prop.get('Name')}: a decimal without Scale")
types = {e.get("Name"): e for e in schema.findall("edm:EntityType", ns)}
navigations = 0
deletes = {}
for name, entity in types.items():
    for nav in entity.findall("edm:NavigationProperty", ns):
        navigations += 1
        target = nav.get("Type").removeprefix("Collection(").removesuffix(")").split(".")[-1]
        if target not in types:
            problems.append(f"{name}.{nav.get('Name')}: undefined type {target}")
            continue
        partner = types[target].find(f"edm:NavigationProperty[@Name='{nav.get('Partner')}']", ns)
        if partner is None or partner.get("Partner") != nav.get("Name"):
            problems.append(f"{name}.{nav.get('Name')}: no partner {nav.get('Partner')} on {target}")
        on_delete = nav.find("edm:OnDelete", ns)
        if on_delete is not None:
            if on_delete.get("Action") not in ("Cascade", "None", "SetNull", "SetDefault"):
                problems.append(f"{name}.{nav.get('Name')}: OnDelete {on_delete.get('Action')}")
            deletes[f"{name}.{nav.get('Name')}"] = on_delete.get("Action")
sets = {e.get("Name") for e in schema.iter() if e.tag.endswith("}EntitySet")}
for binding in schema.iter():
    if binding.tag.endswith("}NavigationPropertyBinding") and binding.get("Target") not in sets:
        problems.append(f"binding {binding.get('Path')} to undefined set {binding.get('Target')}")
print(json.dumps({"problems": problems, "decimals": decimals, "imports": imports, "navigations": navigations, "deletes": deletes}))
"#;
    let output = python(&["-c", script], csdl.as_bytes());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!("{}", String::from_utf8_lossy(&output.stdout));
    });
    assert_eq!(report["problems"], json!([]), "{report}");
    assert!(report["decimals"].as_u64().unwrap() > 0, "{report}");
    assert!(report["navigations"].as_u64().unwrap() > 0, "{report}");
    // What deleting an account does to the records naming it, as CSDL says it.
    let deletes = &report["deletes"];
    assert_eq!(deletes["account.contact_parentcustomerid"], "Cascade");
    assert_eq!(deletes["account.incident_customerid"], "Cascade");
    assert_eq!(deletes["account.opportunity_parentaccountid"], "SetNull");
    assert_eq!(deletes["contact.account_primarycontactid"], "SetNull");
    assert_eq!(deletes["systemuser.account_createdby"], "None");
    assert!(
        deletes.get("contact.parentcustomerid").is_none(),
        "{deletes}"
    );
    assert_eq!(
        report["imports"],
        json!([
            "Microsoft.Dynamics.CRM.WhoAmI",
            "Microsoft.Dynamics.CRM.RetrieveVersion",
            "Microsoft.Dynamics.CRM.RetrieveTotalRecordCount",
            "Microsoft.Dynamics.CRM.RetrieveRecordChangeHistory",
            "Microsoft.Dynamics.CRM.RetrieveAttributeChangeHistory",
            "Microsoft.Dynamics.CRM.PublishAllXml"
        ])
    );
    // What an SDK client asks for when it connects: the version of the Web API it talks to.
    for path in ["RetrieveVersion", "RetrieveVersion()"] {
        let version = get_json(&server.api(path), &admin);
        assert_eq!(version["Version"], "9.2.0.0", "{version}");
        assert!(
            version["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#Microsoft.Dynamics.CRM.RetrieveVersionResponse")
        );
    }
}

/// A lookup is bound by a relative or an absolute reference, and `null` clears it, as in
/// Dataverse; the clearing is an audited change.
#[test]
fn a_lookup_binds_by_any_reference_and_null_clears_it() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_entity_flags(
        &admin,
        "account",
        json!({"IsAuditEnabled": {"Value": true}}),
    );
    server.publish(&admin);
    let contact = entity_id(&send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"firstname": "Ada", "lastname": "Lovelace"})),
    ));
    let absolute = format!(
        "{}/contacts({contact})",
        server.api("").trim_end_matches('/')
    );
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Analytical", "primarycontactid@odata.bind": absolute})),
    ));
    let read = |id: &str| get_json(&server.api(&format!("accounts({id})")), &admin);
    assert_eq!(read(&account)["_primarycontactid_value"], contact.as_str());
    let cleared = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"primarycontactid@odata.bind": null})),
    );
    assert_eq!(cleared.status(), 204);
    assert!(read(&account)["_primarycontactid_value"].is_null());
    let update = server.audit(&admin, &format!("operation=Update&recordId={account}"));
    let change = update[0]["Changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Attribute"] == "_primarycontactid_value")
        .cloned()
        .unwrap_or_else(|| panic!("{update:#?}"));
    assert_eq!(change["Old"], contact.as_str());
    assert!(change["New"].is_null(), "{change}");
    let refused = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"primarycontactid@odata.bind": 5})),
    );
    assert_eq!(odata_error(refused).0, 400);
}

/// `set(id)/property` answers the one value (and `/$value` it bare), 204 when null, 404 for a
/// property the entity lacks; each is a retrieve of that record in the log.
#[test]
fn a_single_property_is_read_alone_and_recorded_as_a_retrieve() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isreadauditenabled": true}));
    server.set_entity_flags(
        &admin,
        "account",
        json!({"IsRetrieveAuditEnabled": {"Value": true}}),
    );
    server.publish(&admin);
    let account = create_account(&server, &admin, "Contoso & Söhne");
    let get = |path: &str| {
        send(
            client().get(server.api(&format!("accounts({account}){path}"))),
            &admin,
            None,
        )
    };
    let name: Value = get("/name").json().unwrap();
    assert_eq!(name["value"], "Contoso & Söhne");
    assert!(
        name["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!("$metadata#accounts({account})/name")),
        "{name}"
    );
    let raw = get("/name/$value");
    assert!(
        raw.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(raw.text().unwrap(), "Contoso & Söhne");
    assert_eq!(
        get("/telephone1").status(),
        204,
        "a null property has no content"
    );
    assert_eq!(odata_error(get("/nosuch")).0, 404);
    let reads = server.audit(&admin, &format!("operation=Retrieve&recordId={account}"));
    assert_eq!(reads.len(), 4, "{reads:#?}");
    assert!(
        reads
            .iter()
            .any(|r| r["Query"].as_str().unwrap().ends_with("/name/$value"))
    );
}

/// Dataverse's "update a single property value" and "delete a single property value": `PUT
/// set(<id>)/property` with `{"value": …}` and `DELETE set(<id>)/property` are updates of that
/// one property of a record that exists — checked, recorded and refused as any update (a
/// decimal by the numeral sent), alone or in a changeset. A lookup is set through its `$ref`.
#[test]
fn a_single_property_is_set_and_cleared_alone_and_recorded_as_an_update() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = create_account(&server, &admin, "Before");
    let url = |path: &str| server.api(&format!("accounts({account}){path}"));
    let put = |path: &str, body: &'static str| {
        client()
            .put(url(path))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    let value = |path: &str| get_json(&url(""), &admin)[path].clone();

    assert_eq!(put("/name", r#"{"value": "After"}"#).status(), 204);
    assert_eq!(value("name"), "After");
    let (status, _, message) = odata_error(put("/revenue", r#"{"value": 922337203685477.5807}"#));
    assert_eq!(status, 400);
    assert!(message.contains("would be kept as"), "{message}");
    assert_eq!(value("revenue"), Value::Null);
    assert_eq!(put("/revenue", r#"{"value": 12.5}"#).status(), 204);
    assert_eq!(value("revenue"), 12.5);
    let cleared = send(client().delete(url("/revenue")), &admin, None);
    assert_eq!(cleared.status(), 204);
    assert_eq!(value("revenue"), Value::Null);

    // What such a path does not take.
    let (status, _, message) = odata_error(put("/name", r#"{"name": "Elsewhere"}"#));
    assert_eq!(status, 400);
    assert!(message.contains(r#"{"value""#), "{message}");
    assert_eq!(odata_error(put("/nosuch", r#"{"value": 1}"#)).0, 404);
    let (status, _, message) = odata_error(put(
        "/_ownerid_value",
        r#"{"value": "00000000-0000-0000-0000-000000000001"}"#,
    ));
    assert_eq!(status, 400);
    assert!(message.contains("read-only"), "{message}");
    let (status, _, message) = odata_error(put("/primarycontactid", r#"{"value": null}"#));
    assert_eq!(status, 400);
    assert!(message.contains("$ref"), "{message}");
    let collection = put("/contact_parentcustomerid", r#"{"value": null}"#);
    assert_eq!(collection.status(), 405);
    assert_eq!(collection.headers()["allow"], "GET, POST");
    let raw = put("/name/$value", r#"{"value": "Raw"}"#);
    assert_eq!(raw.status(), 405);
    assert_eq!(raw.headers()["allow"], "GET");
    // A record that does not exist is not made by setting one of its properties.
    let missing = client()
        .put(server.api(&format!("accounts({})/name", uuid::Uuid::new_v4())))
        .bearer_auth(&admin)
        .json(&json!({"value": "Never"}))
        .send()
        .unwrap();
    assert_eq!(odata_error(missing).0, 404);
    assert_eq!(count(&server, &admin, "accounts"), 1);
    // A version named is checked, as an update's.
    let stale = client()
        .put(url("/name"))
        .bearer_auth(&admin)
        .header("if-match", "W/\"1\"")
        .json(&json!({"value": "Stale"}))
        .send()
        .unwrap();
    assert_eq!(odata_error(stale).0, 412);
    assert_eq!(value("name"), "After");
    // A caller who may only read is refused.
    let reader = server.user_holding(&admin, "reader@contoso.test", "Reader", &["prvReadaccount"]);
    let refused = send(client().delete(url("/name")), &reader, None);
    assert_eq!(odata_error(refused).0, 403);
    assert_eq!(value("name"), "After");

    // In a changeset, with the writes around it.
    let batch = json!({"requests": [
        {"id": "1", "atomicityGroup": "g", "method": "PUT", "url": format!("accounts({account})/name"),
         "body": {"value": "In a changeset"}},
        {"id": "2", "atomicityGroup": "g", "method": "DELETE", "url": format!("accounts({account})/name")},
        {"id": "3", "atomicityGroup": "g", "method": "PUT", "url": format!("accounts({account})/name"),
         "body": {"value": "Last"}},
    ]});
    let answer: Value = send(client().post(server.api("$batch")), &admin, Some(batch))
        .json()
        .unwrap();
    let statuses = batch_statuses(&answer);
    assert_eq!(statuses, [204, 204, 204], "{answer:#}");
    assert_eq!(value("name"), "Last");

    // Each is an update of the record, its change as any update's.
    let updates = server.audit(&admin, &format!("operation=Update&recordId={account}"));
    let mut changes: Vec<(Value, Value, Value)> = updates
        .iter()
        .filter(|e| e["ResultStatus"] == "Succeeded")
        .flat_map(|e| e["Changes"].as_array().unwrap().clone())
        .filter(|c| c["Attribute"] != "modifiedon" && c["Attribute"] != "versionnumber")
        .map(|c| (c["Attribute"].clone(), c["Old"].clone(), c["New"].clone()))
        .collect();
    changes.reverse();
    assert_eq!(
        changes,
        [
            (json!("name"), json!("Before"), json!("After")),
            (json!("revenue"), Value::Null, json!(12.5)),
            (json!("revenue"), json!(12.5), Value::Null),
            (json!("name"), json!("After"), json!("In a changeset")),
            (json!("name"), json!("In a changeset"), Value::Null),
            (json!("name"), Value::Null, json!("Last")),
        ],
        "{updates:#?}"
    );
}

/// OData JSON Format §3.2: with `IEEE754Compatible=true` in `Accept` (or `$format`), `Edm.Int64`
/// and `Edm.Decimal` values — and `@odata.count` — are strings, so a JavaScript client keeps
/// every digit, and the response's media type says so; in a request's `Content-Type` it lets
/// the body send them as strings. Without it, numbers are numbers and a string is refused.
/// Whole numbers are `Edm.Int32`, as in Dataverse (numbers either way, and a wider one is
/// refused); a `BigInt` attribute and the version number are `Edm.Int64`.
#[test]
fn wide_numbers_are_strings_both_ways_for_a_client_that_asks() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_population(&admin);
    let wide = "9007199254740993"; // 2^53 + 1: a JavaScript number would round it
    let created = send(
        client()
            .post(server.api("accounts"))
            .header("content-type", "application/json;IEEE754Compatible=true"),
        &admin,
        Some(
            json!({"name": "Wide", "revenue": "1234.5", "new_population": wide,
                    "numberofemployees": 250}),
        ),
    );
    assert_eq!(created.status(), 204);
    let id = entity_id(&created);
    let query = "accounts?$filter=name eq 'Wide'&$count=true&$select=revenue,new_population,numberofemployees,versionnumber";
    for (how, accept, url) in [
        (
            "Accept",
            "application/json;odata.metadata=minimal;IEEE754Compatible=true",
            server.api(query),
        ),
        (
            "$format",
            "application/json",
            server.api(&format!(
                "{query}&$format=application/json;IEEE754Compatible=true"
            )),
        ),
    ] {
        let response = send(client().get(url).header("accept", accept), &admin, None);
        assert_eq!(response.status(), 200, "{how}");
        let media = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(media.contains("IEEE754Compatible=true"), "{how}: {media}");
        let page: Value = response.json().unwrap();
        assert_eq!(page["@odata.count"], "1", "{how}: {page}");
        let row = &page["value"][0];
        assert_eq!(row["revenue"], "1234.5", "{how}: {row}");
        assert_eq!(row["new_population"], wide, "{how}: {row}");
        assert_eq!(
            row["numberofemployees"], 250,
            "{how}: an Int32 stays a number: {row}"
        );
        assert_eq!(row["versionnumber"], "1", "{how}: {row}");
        assert_eq!(row["accountid"], id.as_str(), "{how}: {row}");
    }
    let plain = get_json(
        &server.api(&format!("accounts({id})?$select=revenue,new_population")),
        &admin,
    );
    assert_eq!(plain["revenue"], 1234.5, "{plain}");
    assert_eq!(plain["new_population"].to_string(), wide, "{plain}");
    let csdl = send(client().get(server.api("$metadata")), &admin, None)
        .text()
        .unwrap();
    for property in [
        "<Property Name=\"numberofemployees\" Type=\"Edm.Int32\"",
        "<Property Name=\"industrycode\" Type=\"Edm.Int32\"",
        "<Property Name=\"new_population\" Type=\"Edm.Int64\"",
        "<Property Name=\"versionnumber\" Type=\"Edm.Int64\"",
    ] {
        assert!(csdl.contains(property), "{property}");
    }
    // A whole number wider than 32 bits is refused, as a number or a string.
    for (content_type, employees) in [
        ("application/json", json!(2_147_483_648_i64)),
        ("application/json;IEEE754Compatible=true", json!(wide)),
    ] {
        let response = send(
            client()
                .post(server.api("accounts"))
                .header("content-type", content_type),
            &admin,
            Some(json!({"name": "Wide", "numberofemployees": employees})),
        );
        let (code, _, message) = odata_error(response);
        assert_eq!(code, 400, "{content_type}: {message}");
    }

    // A string where a number belongs: refused without the parameter, and with it when it is
    // not a number; nothing is created either way.
    for (content_type, revenue) in [
        ("application/json", "1234.5"),
        ("application/json; ieee754compatible=true", "many"),
    ] {
        let response = send(
            client()
                .post(server.api("accounts"))
                .header("content-type", content_type),
            &admin,
            Some(json!({"name": "Wide", "revenue": revenue})),
        );
        let (code, _, message) = odata_error(response);
        assert_eq!(code, 400, "{content_type}: {message}");
    }
    let all = get_json(
        &server.api("accounts?$filter=name eq 'Wide'&$count=true"),
        &admin,
    );
    assert_eq!(all["@odata.count"], 1, "{all}");
}

/// A decimal or money value is kept as a 64-bit float: one that a float would change is
/// refused with 400 and nothing is written — as a JSON number, an `IEEE754Compatible` string
/// and a CSV cell alike — rather than stored as another number; any value a float keeps is
/// taken however it is written, and read back as sent.
#[test]
fn a_decimal_a_float_would_change_is_refused_not_rounded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let post = |content_type: &str, body: &str| {
        client()
            .post(server.api("accounts"))
            .header("content-type", content_type)
            .bearer_auth(&admin)
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let before = count(&server, &admin, "accounts");
    for (content_type, body) in [
        (
            "application/json",
            r#"{"name": "Too exact", "revenue": 922337203685477.5807}"#,
        ),
        (
            "application/json;IEEE754Compatible=true",
            r#"{"name": "Too exact", "revenue": "922337203685477.5807"}"#,
        ),
    ] {
        let (code, _, message) = odata_error(post(content_type, body));
        assert_eq!(code, 400, "{body}: {message}");
        assert!(
            message.contains("would be kept as 922337203685477.6"),
            "{message}"
        );
    }
    let imported = send(
        client().post(server.api("ImportRecords")),
        &admin,
        Some(json!({"EntitySetName": "accounts",
                    "Content": "name,revenue\nFine,12.5\nToo exact,922337203685477.5807\n"})),
    );
    let (code, _, message) = odata_error(imported);
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("revenue"), "{message}");
    assert_eq!(
        count(&server, &admin, "accounts"),
        before,
        "nothing was written"
    );
    assert!(
        server
            .audit(&admin, "operation=Create&status=Succeeded")
            .is_empty()
    );

    for (sent, shown) in [
        ("0.30000000000000004", "0.30000000000000004"),
        ("12.50", "12.5"),
        ("1.25e3", "1250.0"),
        ("922337203685477", "922337203685477.0"),
    ] {
        let created = post(
            "application/json",
            &format!(r#"{{"name": "Kept", "revenue": {sent}}}"#),
        );
        assert_eq!(created.status(), 204, "{sent}");
        let id = entity_id(&created);
        let text = send(
            client().get(server.api(&format!("accounts({id})?$select=revenue"))),
            &admin,
            None,
        )
        .text()
        .unwrap();
        assert!(
            text.contains(&format!("\"revenue\":{shown}")),
            "{sent}: {text}"
        );
    }

    // Every path that carries a body on rewrites it from the members as sent: a create through
    // a navigation property, a JSON batch's request, one whose `$a` reference is replaced.
    let account = entity_id(&post("application/json", r#"{"name": "Parent"}"#));
    let nested = client()
        .post(server.api(&format!("accounts({account})/opportunity_parentaccountid")))
        .header("content-type", "application/json")
        .bearer_auth(&admin)
        .body(r#"{"name": "Too exact", "estimatedvalue": 922337203685477.5807}"#)
        .send()
        .unwrap();
    let (code, _, message) = odata_error(nested);
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("would be kept as"), "{message}");
    let batch = r#"{"requests": [
        {"id": "1", "method": "POST", "url": "opportunities",
         "body": {"name": "Too exact", "estimatedvalue": 922337203685477.5807}},
        {"id": "a", "atomicityGroup": "g", "method": "POST", "url": "accounts", "body": {"name": "Grouped"}},
        {"id": "b", "atomicityGroup": "g", "method": "POST", "url": "opportunities", "dependsOn": ["a"],
         "body": {"name": "Too exact", "parentaccountid@odata.bind": "$a",
                  "estimatedvalue": 922337203685477.5807}}
    ]}"#;
    let answer: Value = client()
        .post(server.api("$batch"))
        .header("content-type", "application/json")
        .bearer_auth(&admin)
        .body(batch)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let refused: Vec<(&str, u64)> = answer["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert!(refused.contains(&("1", 400)), "{answer:#}");
    assert!(refused.contains(&("b", 400)), "{answer:#}");
    assert_eq!(count(&server, &admin, "opportunities"), 0);

    // A filter's literal is compared as the float the column keeps: one that float would
    // change is refused, or a bulk delete of "revenue eq …5807" would delete the record of …6.
    let kept = entity_id(&post(
        "application/json",
        r#"{"name": "Largest kept", "revenue": 922337203685477.6}"#,
    ));
    let accounts = count(&server, &admin, "accounts");
    for filter in [
        "revenue eq 922337203685477.5807",
        "revenue ge 9007199254740993",
    ] {
        let listed = send(
            client().get(server.api(&format!("accounts?$filter={filter}"))),
            &admin,
            None,
        );
        let (code, _, message) = odata_error(listed);
        assert_eq!(code, 400, "{filter}: {message}");
        assert!(message.contains("would be kept as"), "{filter}: {message}");
    }
    let bulk = send(
        client().post(server.api("BulkDelete")),
        &admin,
        Some(
            json!({"EntitySetName": "accounts", "Filter": "revenue eq 922337203685477.5807", "JobName": "exact"}),
        ),
    );
    let (code, _, message) = odata_error(bulk);
    assert_eq!(code, 400, "{message}");
    assert_eq!(
        count(&server, &admin, "accounts"),
        accounts,
        "nothing deleted"
    );
    let found = get_json(
        &server.api("accounts?$select=name&$filter=revenue eq 922337203685477.6"),
        &admin,
    );
    assert_eq!(found["value"][0]["accountid"], kept.as_str());
}
