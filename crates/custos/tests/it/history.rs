//! A record's change history (Dataverse's Audit History, `RetrieveRecordChangeHistory`): the
//! changes the log holds for that record, newest first, with their old and new values — no
//! reads or lists — for holders of `prvReadRecordAuditHistory` who may read the record; each
//! reading recorded.

use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::common::*;

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

/// `RetrieveRecordChangeHistory` of `accounts(id)`, with `paging` when given.
fn history(server: &Server, token: &str, id: &str, paging: Option<Value>) -> Response {
    history_in(server, token, "accounts", id, paging)
}

/// `RetrieveRecordChangeHistory` of `set(id)`, with `paging` when given.
fn history_in(
    server: &Server,
    token: &str,
    set: &str,
    id: &str,
    paging: Option<Value>,
) -> Response {
    let mut query = vec![(
        "@target".to_string(),
        json!({"@odata.id": format!("{set}({id})")}).to_string(),
    )];
    let call = match paging {
        Some(paging) => {
            query.push(("@paging".to_string(), paging.to_string()));
            "RetrieveRecordChangeHistory(Target=@target,PagingInfo=@paging)"
        }
        None => "RetrieveRecordChangeHistory(Target=@target)",
    };
    send(
        client()
            .get(server.api(call))
            .query(&query)
            .header("Prefer", "odata.include-annotations=\"*\""),
        token,
        None,
    )
}

/// Shares `accounts(id)` with the user `user` (`mask`: `ReadAccess`, `WriteAccess` or both).
fn share_with(server: &Server, token: &str, id: &str, user: &str, mask: &str) {
    let shared = send(
        client().post(server.api("GrantAccess")),
        token,
        Some(json!({
            "Target": {"@odata.id": format!("accounts({id})")},
            "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({user})")}, "AccessMask": mask},
        })),
    );
    assert_eq!(shared.status(), 204);
}

/// The console's history page of `set/id`, which must open.
fn console_history(server: &Server, cookie: &str, set: &str, id: &str) -> String {
    let (status, html) = crate::console_pages::page(
        server,
        cookie,
        &format!("/ui/main/records/{set}/{id}/history"),
    );
    assert_eq!(status, 200, "{html}");
    html
}

fn collection(response: Response) -> Value {
    assert_eq!(response.status(), 200);
    let mut answer: Value = response.json().unwrap();
    answer["AuditDetailCollection"].take()
}

fn actions(details: &Value) -> Vec<&str> {
    details["AuditDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["AuditRecord"][format!("action{FORMATTED}")]
                .as_str()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_records_history_is_its_changes_newest_first_and_every_reading_is_recorded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account"]);
    let admin_id = get_json(&server.api("WhoAmI"), &admin)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    let made = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Contoso", "revenue": 100, "telephone1": "555-0100"})),
    );
    assert_eq!(made.status(), 204);
    let id = entity_id(&made);
    let other = create_account(&server, &admin, "Fabrikam");
    let changed = send(
        client().patch(server.api(&format!("accounts({id})"))),
        &admin,
        Some(json!({"name": "Contoso Ltd", "telephone1": null})),
    );
    assert_eq!(changed.status(), 204);
    // Reads and lists are in the log, but they are not changes.
    assert_eq!(
        send(
            client().get(server.api(&format!("accounts({id})"))),
            &admin,
            None
        )
        .status(),
        200
    );
    assert_eq!(
        get_json(&server.api("accounts"), &admin)["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let bo = server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    share_with(&server, &admin, &id, &bo, "ReadAccess");

    let response = history(&server, &admin, &id, None);
    let correlation = correlation_of(&response);
    let details = collection(response);
    assert_eq!(
        actions(&details),
        ["Share", "Update", "Create"],
        "{details:#}"
    );
    assert_eq!(details["MoreRecords"], false);
    assert_eq!(details["TotalRecordCount"], -1, "not asked for");
    let [share, update, create] = details["AuditDetails"].as_array().unwrap().as_slice() else {
        panic!("{details:#}");
    };
    assert_eq!(
        share["@odata.type"],
        "#Microsoft.Dynamics.CRM.ShareAuditDetail"
    );
    assert_eq!(share["Principal"]["systemuserid"], bo.as_str());
    assert_eq!(share["OldPrivileges"], "None");
    assert_eq!(share["NewPrivileges"], "ReadAccess");
    assert_eq!(
        update["@odata.type"],
        "#Microsoft.Dynamics.CRM.AttributeAuditDetail"
    );
    assert_eq!(update["OldValue"]["name"], "Contoso");
    assert_eq!(update["NewValue"]["name"], "Contoso Ltd");
    assert_eq!(update["OldValue"]["telephone1"], "555-0100");
    assert_eq!(update["NewValue"]["telephone1"], Value::Null, "emptied");
    assert!(
        update["OldValue"].get("revenue").is_none(),
        "unchanged: {update:#}"
    );
    assert_eq!(
        create["OldValue"],
        json!({"@odata.type": "#Microsoft.Dynamics.CRM.account"})
    );
    assert_eq!(create["NewValue"]["name"], "Contoso");
    assert_eq!(create["NewValue"]["revenue"].as_f64(), Some(100.0));
    let record = &update["AuditRecord"];
    assert_eq!(record["operation"], 2);
    assert_eq!(record["action"], 2);
    assert_eq!(record["objecttypecode"], "account");
    assert_eq!(record["_objectid_value"], id.as_str());
    assert_eq!(record["_userid_value"], admin_id.as_str());
    assert_eq!(record[format!("_userid_value{FORMATTED}")], "admin");
    assert_eq!(create["AuditRecord"]["operation"], 1);
    // Each detail is the log's event, which the audit search shows by the same id.
    let event = get_json(
        &format!(
            "{}/api/audit/records/{}",
            server.base,
            record["auditid"].as_str().unwrap()
        ),
        &admin,
    );
    assert_eq!(event["Operation"], "Update");
    assert_eq!(event["RecordIds"], json!([id]));

    // Reading it is recorded: the record read, how many changes were shown.
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Operation"], "RetrieveRecordChangeHistory");
    assert_eq!(events[0]["ResultStatus"], "Succeeded");
    assert_eq!(events[0]["EntityName"], "account");
    assert_eq!(events[0]["RecordIds"], json!([id]));
    assert_eq!(events[0]["ResultCount"], 3);

    // Another record's history is its own.
    let theirs = collection(history(&server, &admin, &other, None));
    assert_eq!(actions(&theirs), ["Create"]);

    // Pages: by cookie, and by number (the pages before walked past).
    let first = collection(history(
        &server,
        &admin,
        &id,
        Some(json!({"PageNumber": 1, "Count": 2, "ReturnTotalRecordCount": true})),
    ));
    assert_eq!(actions(&first), ["Share", "Update"]);
    assert_eq!(first["MoreRecords"], true);
    assert_eq!(first["TotalRecordCount"], 3);
    let cookie = first["PagingCookie"].as_str().unwrap();
    let second = collection(history(
        &server,
        &admin,
        &id,
        Some(json!({"PageNumber": 2, "Count": 2, "PagingCookie": cookie})),
    ));
    assert_eq!(actions(&second), ["Create"]);
    assert_eq!(second["MoreRecords"], false);
    assert_eq!(second["PagingCookie"], Value::Null);
    let third = collection(history(
        &server,
        &admin,
        &id,
        Some(json!({"PageNumber": 3, "Count": 1})),
    ));
    assert_eq!(actions(&third), ["Create"]);

    // One attribute's history: the changes that changed it, paged as a record's.
    let attribute = |name: &str, paging: Option<Value>| {
        let mut query = vec![
            (
                "@target".to_string(),
                json!({"@odata.id": format!("accounts({id})")}).to_string(),
            ),
            ("@name".to_string(), format!("'{name}'")),
        ];
        let call = match paging {
            Some(paging) => {
                query.push(("@paging".to_string(), paging.to_string()));
                "RetrieveAttributeChangeHistory(Target=@target,AttributeLogicalName=@name,PagingInfo=@paging)"
            }
            None => "RetrieveAttributeChangeHistory(Target=@target,AttributeLogicalName=@name)",
        };
        send(
            client()
                .get(server.api(call))
                .query(&query)
                .header("Prefer", "odata.include-annotations=\"*\""),
            &admin,
            None,
        )
    };
    let named = attribute("name", None);
    let correlation = correlation_of(&named);
    let named = collection(named);
    assert_eq!(actions(&named), ["Update", "Create"], "{named:#}");
    assert_eq!(named["AuditDetails"][0]["NewValue"]["name"], "Contoso Ltd");
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["Operation"], "RetrieveRecordChangeHistory");
    assert!(
        events[0]["Query"]
            .as_str()
            .unwrap()
            .starts_with("RetrieveAttributeChangeHistory(")
    );
    assert_eq!(actions(&collection(attribute("revenue", None))), ["Create"]);
    let first = collection(attribute(
        "name",
        Some(json!({"PageNumber": 1, "Count": 1, "ReturnTotalRecordCount": true})),
    ));
    assert_eq!(actions(&first), ["Update"]);
    assert_eq!(first["TotalRecordCount"], 2);
    assert_eq!(first["MoreRecords"], true);
    let rest = collection(attribute(
        "name",
        Some(json!({"PageNumber": 2, "Count": 1, "PagingCookie": first["PagingCookie"]})),
    ));
    assert_eq!(actions(&rest), ["Create"]);
    assert_eq!(rest["MoreRecords"], false);
    let second = collection(attribute(
        "name",
        Some(json!({"PageNumber": 2, "Count": 1})),
    ));
    assert_eq!(actions(&second), ["Create"]);
    assert_eq!(odata_error(attribute("nosuch", None)).0, 400);
    let unnamed = send(
        client()
            .get(server.api("RetrieveAttributeChangeHistory(Target=@target)"))
            .query(&[(
                "@target",
                json!({"@odata.id": format!("accounts({id})")}).to_string(),
            )]),
        &admin,
        None,
    );
    assert_eq!(odata_error(unnamed).0, 400);

    // A share widened, narrowed, then taken back: each says what was held before and after.
    share_with(&server, &admin, &id, &bo, "WriteAccess");
    let narrowed = send(
        client().post(server.api("ModifyAccess")),
        &admin,
        Some(json!({
            "Target": {"@odata.id": format!("accounts({id})")},
            "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({bo})")}, "AccessMask": "WriteAccess"},
        })),
    );
    assert_eq!(narrowed.status(), 204);
    let revoked = send(
        client().post(server.api("RevokeAccess")),
        &admin,
        Some(json!({
            "Target": {"@odata.id": format!("accounts({id})")},
            "Revokee": {"@odata.id": format!("systemusers({bo})")},
        })),
    );
    assert_eq!(revoked.status(), 204);
    let shares = collection(history(&server, &admin, &id, Some(json!({"Count": 3}))));
    assert_eq!(actions(&shares), ["Unshare", "Modify Share", "Share"]);
    let rights: Vec<(&Value, &Value)> = shares["AuditDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (&d["OldPrivileges"], &d["NewPrivileges"]))
        .collect();
    assert_eq!(
        rights,
        [
            (&json!("WriteAccess"), &json!("None")),
            (&json!("ReadAccess, WriteAccess"), &json!("WriteAccess")),
            (&json!("ReadAccess"), &json!("ReadAccess, WriteAccess"))
        ]
    );

    // Recorded even where nothing else about the record is: reading the trail is always.
    server.set_org(
        &admin,
        json!({"isauditenabled": false, "isreadauditenabled": false}),
    );
    let response = history(&server, &admin, &id, None);
    let correlation = correlation_of(&response);
    assert_eq!(actions(&collection(response)).len(), 6);
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Operation"], "RetrieveRecordChangeHistory");

    // A deleted record has no form to open: its history is the compliance console's (the
    // data-subject report), and here 404.
    let deleted = send(
        client().delete(server.api(&format!("accounts({other})"))),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert_eq!(odata_error(history(&server, &admin, &other, None)).0, 404);
}

#[test]
fn only_who_may_view_audit_history_and_read_the_record_sees_it() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isauditenabled": true}));
    let id = create_account(&server, &admin, "Contoso");
    let other = create_account(&server, &admin, "Fabrikam");

    // A Basic User reads accounts but does not view audit history; nor does a role that only
    // views it without reading accounts. Each refusal is recorded with the record it named.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let historian = server.user_holding(
        &admin,
        "historian@contoso.test",
        "Historians",
        &["prvReadRecordAuditHistory"],
    );
    for token in [&bo, &historian] {
        let refused = history(&server, token, &id, None);
        let correlation = correlation_of(&refused);
        assert_eq!(odata_error(refused).0, 403);
        let events = events_of(&server, &admin, &correlation);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["Operation"], "RetrieveRecordChangeHistory");
        assert_eq!(events[0]["ResultStatus"], "Denied");
        assert_eq!(events[0]["RecordIds"], json!([id]));
    }
    let auditor = server.user_holding(
        &admin,
        "auditor@contoso.test",
        "Record auditors",
        &["prvReadRecordAuditHistory", "prvReadaccount"],
    );
    assert_eq!(
        actions(&collection(history(&server, &auditor, &id, None))),
        ["Create"]
    );

    // A share opens one record's history to a holder of the privilege, and no other's.
    let historian_id = get_json(&server.api("WhoAmI"), &historian)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    share_with(&server, &admin, &id, &historian_id, "ReadAccess");
    assert_eq!(
        actions(&collection(history(&server, &historian, &id, None))),
        ["Share", "Create"]
    );
    assert_eq!(
        odata_error(history(&server, &historian, &other, None)).0,
        403
    );

    // Bad calls are 400s, an unknown record 404, and none of them shows anything.
    let target = |text: &str| {
        send(
            client()
                .get(server.api("RetrieveRecordChangeHistory(Target=@t)"))
                .query(&[("@t", text)]),
            &admin,
            None,
        )
    };
    for bad in [
        "accounts(x)".to_string(),
        "{}".to_string(),
        json!({"@odata.id": "accounts(not-a-guid)"}).to_string(),
        json!({"accountid": id}).to_string(),
        json!({"@odata.id": format!("accounts({id})"), "x": 1}).to_string(),
        json!({"@odata.type": "Microsoft.Dynamics.CRM.account", "contactid": id}).to_string(),
        json!({"@odata.type": "account", "accountid": id}).to_string(),
    ] {
        assert_eq!(odata_error(target(&bad)).0, 400, "{bad}");
    }
    // The record named by its type and key, as an entity-typed parameter may be written.
    let typed = target(
        &json!({"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": id}).to_string(),
    );
    assert_eq!(typed.status(), 200);
    assert_eq!(
        odata_error(target(
            &json!({"@odata.id": "nosuchsets(00000000-0000-0000-0000-000000000001)"}).to_string()
        ))
        .0,
        404
    );
    assert_eq!(
        odata_error(target(
            &json!({"@odata.id": "accounts(00000000-0000-0000-0000-000000000001)"}).to_string()
        ))
        .0,
        404
    );
    for call in [
        "RetrieveRecordChangeHistory()",
        "RetrieveRecordChangeHistory(Target=@t,Target=@t)",
        "RetrieveRecordChangeHistory(Record=@t)",
        "RetrieveRecordChangeHistory(Target=@missing)",
        "RetrieveRecordChangeHistory(Target=@t,PagingInfo=@p)",
    ] {
        let bad = send(
            client().get(server.api(call)).query(&[
                (
                    "@t",
                    json!({"@odata.id": format!("accounts({id})")}).to_string(),
                ),
                ("@p", json!({"Count": 0}).to_string()),
            ]),
            &admin,
            None,
        );
        assert_eq!(odata_error(bad).0, 400, "{call}");
    }
    assert_eq!(
        send(
            client().post(server.api("RetrieveRecordChangeHistory(Target=@t)")),
            &admin,
            None
        )
        .status(),
        405
    );

    // Audit log search off stops this way of reading the trail too.
    let switch = |enabled: bool| {
        send(
            client().put(format!("{}/api/audit/settings", server.base)),
            &admin,
            Some(json!({"searchEnabled": enabled})),
        )
        .status()
    };
    assert_eq!(switch(false), 200);
    assert_eq!(odata_error(history(&server, &auditor, &id, None)).0, 409);
    assert_eq!(
        odata_error(send(client().get(server.api("audits")), &admin, None)).0,
        409,
        "the audit summary too"
    );
    assert_eq!(switch(true), 200);
    assert_eq!(history(&server, &auditor, &id, None).status(), 200);
}

/// The instance's audit summary, Dataverse's `audits`: every change of the entities the caller
/// may read, newest first, filtered by what the log's index answers, one change's values through
/// `RetrieveAuditDetails`; each reading recorded as a search of the trail.
#[test]
fn the_audit_summary_lists_the_changes_of_what_its_reader_may_read() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(
        &admin,
        json!({"isauditenabled": true, "isuseraccessauditenabled": true}),
    );
    let admin_id = get_json(&server.api("WhoAmI"), &admin)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    let account = create_account(&server, &admin, "Contoso");
    let made = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"lastname": "Lovelace"})),
    );
    assert_eq!(made.status(), 204);
    let contact = entity_id(&made);
    let changed = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"name": "Contoso Ltd"})),
    );
    assert_eq!(changed.status(), 204);
    let both = "objecttypecode eq 'account' or objecttypecode eq 'contact'";
    let audits = |token: &str, query: &[(&str, &str)]| {
        send(
            client()
                .get(server.api("audits"))
                .query(query)
                .header("Prefer", "odata.include-annotations=\"*\""),
            token,
            None,
        )
    };
    let answered = audits(&admin, &[("$filter", both), ("$count", "true")]);
    assert_eq!(answered.status(), 200);
    let correlation = correlation_of(&answered);
    let listed: Value = answered.json().unwrap();
    assert_eq!(listed["@odata.count"], 3, "{listed:#}");
    let rows = listed["value"].as_array().unwrap();
    let seen: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["_objectid_value"].as_str().unwrap(),
                r["action"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (account.as_str(), 2),
            (contact.as_str(), 1),
            (account.as_str(), 1)
        ]
    );
    assert_eq!(rows[0]["objecttypecode"], "account");
    assert_eq!(rows[0][format!("_userid_value{FORMATTED}")], "admin");
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Operation"], "SearchAuditLog");
    assert_eq!(events[0]["ResultCount"], 3);
    assert!(
        events[0]["Query"]
            .as_str()
            .unwrap()
            .starts_with("audits?$filter=")
    );

    // How many, as plain text: the same count, recorded as the same search.
    let counted = send(
        client()
            .get(server.api("audits/$count"))
            .query(&[("$filter", both)]),
        &admin,
        None,
    );
    assert_eq!(counted.status(), 200);
    let correlation = correlation_of(&counted);
    assert_eq!(counted.text().unwrap(), "3");
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["Operation"], "SearchAuditLog");
    assert_eq!(events[0]["ResultCount"], 3);
    let topped = send(
        client()
            .get(server.api("audits/$count"))
            .query(&[("$top", "1")]),
        &admin,
        None,
    );
    assert_eq!(odata_error(topped).0, 400);
    let posted = send(
        client().post(server.api("audits/$count")),
        &admin,
        Some(json!({})),
    );
    assert_eq!(posted.status(), 405);

    // Filters the index answers, pages and $select.
    let count = |query: &[(&str, &str)]| -> usize {
        let answer: Value = audits(&admin, query).json().unwrap();
        answer["value"].as_array().unwrap().len()
    };
    let on_account = format!("_objectid_value eq {account}");
    assert_eq!(count(&[("$filter", &on_account)]), 2);
    assert_eq!(
        count(&[("$filter", &format!("{on_account} and action eq 2"))]),
        1
    );
    assert_eq!(
        count(&[("$filter", &format!("({both}) and operation eq 1"))]),
        2
    );
    assert_eq!(count(&[("$filter", "createdon gt 2100-01-01")]), 0);
    // Two conditions no record meets both: nothing, not everything.
    let other = "00000000-0000-0000-0000-00000000002a";
    assert_eq!(
        count(&[(
            "$filter",
            &format!("{on_account} and _objectid_value eq {other}")
        )]),
        0
    );
    // A user's access to the instance (audited here): a row of their own systemuser record,
    // operation 4, action 65 through the Web API.
    let access: Value = audits(&admin, &[("$filter", "action eq 65")])
        .json()
        .unwrap();
    let access = access["value"].as_array().unwrap();
    assert!(!access.is_empty());
    assert!(
        access
            .iter()
            .all(|row| row["objecttypecode"] == "systemuser"
                && row["operation"] == 4
                && row[format!("action{FORMATTED}")] == "User Access via Web Services")
    );
    assert_eq!(access[0]["_objectid_value"], admin_id.as_str());
    let mine = format!("_objectid_value eq {admin_id} and operation eq 4");
    assert_eq!(count(&[("$filter", &mine)]), access.len());
    assert_eq!(
        count(&[("$filter", &format!("{mine} and _userid_value eq {other}"))]),
        0
    );
    let detail = get_json(
        &server.api(&format!(
            "audits({})/Microsoft.Dynamics.CRM.RetrieveAuditDetails()",
            access[0]["auditid"].as_str().unwrap()
        )),
        &admin,
    );
    assert_eq!(
        detail["AuditDetail"]["@odata.type"],
        "#Microsoft.Dynamics.CRM.UserAccessAuditDetail"
    );
    // Unfiltered, the page holds both, newest first in the one log.
    let all: Value = audits(&admin, &[("$count", "true")]).json().unwrap();
    let kinds: std::collections::BTreeSet<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["objecttypecode"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains("systemuser") && kinds.contains("account"),
        "{all:#}"
    );
    assert_eq!(
        all["@odata.count"].as_u64().unwrap() as usize,
        all["value"].as_array().unwrap().len()
    );
    let created: Vec<&str> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["createdon"].as_str().unwrap())
        .collect();
    let mut newest_first = created.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, newest_first);
    // Paged one row at a time, the two searches' rows come each once, in the same order.
    let mut paged = Vec::new();
    let mut link = Some(server.api("audits"));
    while let Some(url) = link {
        let page: Value = send(
            client().get(&url).header("Prefer", "odata.maxpagesize=1"),
            &admin,
            None,
        )
        .json()
        .unwrap();
        paged.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["auditid"].clone()),
        );
        link = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    let ids: Vec<Value> = all["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["auditid"].clone())
        .collect();
    // The pages' own readings add access rows only once an interval, so the first rows agree.
    assert_eq!(paged[..ids.len()], ids[..], "{paged:#?}");
    let first: Value = send(
        client()
            .get(server.api("audits"))
            .query(&[("$filter", both), ("$select", "auditid,action")])
            .header("Prefer", "odata.maxpagesize=2"),
        &admin,
        None,
    )
    .json()
    .unwrap();
    assert_eq!(first["value"].as_array().unwrap().len(), 2);
    let keys: Vec<&String> = first["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["auditid", "action"]);
    let next = get_json(first["@odata.nextLink"].as_str().unwrap(), &admin);
    assert_eq!(next["value"].as_array().unwrap().len(), 1);
    assert!(next.get("@odata.nextLink").is_none());

    // One change: its row, and its values before and after, recorded with its record.
    let update = rows[0]["auditid"].as_str().unwrap();
    let row = get_json(&server.api(&format!("audits({update})")), &admin);
    assert_eq!(row["_objectid_value"], account.as_str());
    let answered = send(
        client().get(server.api(&format!(
            "audits({update})/Microsoft.Dynamics.CRM.RetrieveAuditDetails()"
        ))),
        &admin,
        None,
    );
    let correlation = correlation_of(&answered);
    let details: Value = answered.json().unwrap();
    assert_eq!(details["AuditDetail"]["OldValue"]["name"], "Contoso");
    assert_eq!(details["AuditDetail"]["NewValue"]["name"], "Contoso Ltd");
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["Operation"], "SearchAuditLog");
    assert_eq!(events[0]["EntityName"], "account");
    assert_eq!(events[0]["RecordIds"], json!([account]));
    // An event that is not a change of this instance's records is no audit row.
    let search = events[0]["Id"].as_str().unwrap();
    assert_eq!(
        odata_error(send(
            client().get(server.api(&format!("audits({search})"))),
            &admin,
            None
        ))
        .0,
        404
    );

    // A role that views the summary and reads accounts sees accounts' changes only, and is
    // refused contacts'; a Basic User views no summary.
    let summary = server.user_holding(
        &admin,
        "summary@contoso.test",
        "Summary readers",
        &["prvReadAuditSummary", "prvReadaccount"],
    );
    let theirs: Value = audits(&summary, &[]).json().unwrap();
    let entities: Vec<&str> = theirs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["objecttypecode"].as_str().unwrap())
        .collect();
    assert_eq!(entities, ["account", "account"]);
    assert_eq!(
        odata_error(audits(
            &summary,
            &[("$filter", "objecttypecode eq 'contact'")]
        ))
        .0,
        403
    );
    let contact_change = rows[1]["auditid"].as_str().unwrap();
    assert_eq!(
        odata_error(send(
            client().get(server.api(&format!(
                "audits({contact_change})/Microsoft.Dynamics.CRM.RetrieveAuditDetails()"
            ))),
            &summary,
            None
        ))
        .0,
        403
    );
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let refused = audits(&bo, &[]);
    let correlation = correlation_of(&refused);
    assert_eq!(odata_error(refused).0, 403);
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["Operation"], "SearchAuditLog");
    assert_eq!(events[0]["ResultStatus"], "Denied");

    // What the index cannot answer is refused by name; the set is read-only.
    for (name, value) in [
        ("$filter", "contains(objecttypecode,'acc')"),
        ("$filter", "operation eq 1 or action eq 2"),
        ("$orderby", "createdon asc"),
        ("$apply", "aggregate($count as n)"),
        ("$select", "changedata"),
        ("$top", "0"),
        ("$skiptoken", "x"),
    ] {
        assert_eq!(
            odata_error(audits(&admin, &[(name, value)])).0,
            400,
            "{name}={value}"
        );
    }
    assert_eq!(
        send(client().post(server.api("audits")), &admin, Some(json!({}))).status(),
        405
    );
}

/// A user's history: created, their roles given and taken, disabled and enabled — Dataverse's
/// associations as `RelationshipAuditDetail`s — in the Web API, the summary and the console.
#[test]
fn a_users_history_shows_their_roles_state_and_access() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isuseraccessauditenabled": true}));
    let bo = server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    // Bo reaches the instance through the Web API: their access, in their own history.
    let bo_token = server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(
        send(client().get(server.api("WhoAmI")), &bo_token, None).status(),
        200
    );
    let role =
        get_json(&server.api("roles?$filter=name eq 'Basic User'"), &admin)["value"][0]["roleid"]
            .as_str()
            .unwrap()
            .to_string();
    for disabled in [true, false] {
        let changed = send(
            client().patch(server.api(&format!("systemusers({bo})"))),
            &admin,
            Some(json!({"isdisabled": disabled})),
        );
        assert_eq!(changed.status(), 204);
    }
    let removed = send(
        client().delete(server.api(&format!(
            "systemusers({bo})/systemuserroles_association({role})/$ref"
        ))),
        &admin,
        None,
    );
    assert_eq!(removed.status(), 204);

    let details = history_of(&server, &admin, "systemusers", &bo);
    assert_eq!(
        actions(&details),
        [
            "Remove Role From User",
            "Activate",
            "Deactivate",
            "User Access via Web Services",
            "Assign Role To User",
            "Create"
        ],
        "{details:#}"
    );
    let access = &details["AuditDetails"][3];
    assert_eq!(
        access["@odata.type"],
        "#Microsoft.Dynamics.CRM.UserAccessAuditDetail"
    );
    assert_eq!(access["AuditRecord"]["_objectid_value"], bo.as_str());
    assert_eq!(access["AuditRecord"]["operation"], 4);
    // Paged one at a time, by cookie: the same six, each once — both searches go on from the
    // one position in the log.
    let mut paged = Vec::new();
    let mut cookie = Value::Null;
    loop {
        let paging = json!({"Count": 1, "PagingCookie": cookie, "ReturnTotalRecordCount": true});
        let page = collection(history_in(
            &server,
            &admin,
            "systemusers",
            &bo,
            Some(paging),
        ));
        assert_eq!(page["TotalRecordCount"], 6);
        paged.push(page["AuditDetails"][0]["AuditRecord"]["auditid"].clone());
        if page["MoreRecords"] != true {
            break;
        }
        cookie = page["PagingCookie"].clone();
    }
    let whole: Vec<Value> = details["AuditDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["AuditRecord"]["auditid"].clone())
        .collect();
    assert_eq!(paged, whole);
    let removal = &details["AuditDetails"][0];
    assert_eq!(
        removal["@odata.type"],
        "#Microsoft.Dynamics.CRM.RelationshipAuditDetail"
    );
    assert_eq!(removal["RelationshipName"], "systemuserroles_association");
    assert_eq!(removal["TargetRecords"][0]["roleid"], role.as_str());
    assert_eq!(removal["TargetRecords"][0]["name"], "Basic User");
    assert_eq!(details["AuditDetails"][2]["NewValue"]["isdisabled"], true);
    // Bo's own access is not theirs to read back: no privilege.
    let bo_token = server.token("bo@contoso.test", "bo-password-1");
    let refused = history_in(&server, &bo_token, "systemusers", &bo, None);
    assert_eq!(odata_error(refused).0, 403);

    // In the summary: a role given to a user is action 55, of the user's record.
    let given: Value = send(
        client()
            .get(server.api("audits"))
            .query(&[("$filter", "action eq 55")]),
        &admin,
        None,
    )
    .json()
    .unwrap();
    let rows = given["value"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["_objectid_value"] == bo.as_str()),
        "{given:#}"
    );
    assert!(rows.iter().all(|r| r["objecttypecode"] == "systemuser"));
    let mixed = send(
        client()
            .get(server.api("audits"))
            .query(&[("$filter", "action eq 55 or action eq 1")]),
        &admin,
        None,
    );
    assert_eq!(odata_error(mixed).0, 400);

    // And in the console's history of the user.
    let cookie = crate::console_pages::sign_in(&server, "admin", ADMIN_PASSWORD);
    let html = console_history(&server, &cookie, "systemusers", &bo);
    assert!(
        html.contains("<td>Security role</td><td>Basic User</td><td></td>"),
        "{html}"
    );
    assert!(
        html.contains("<td>Security role</td><td></td><td>Basic User</td>"),
        "{html}"
    );
}

/// The first page of `set(id)`'s history read by `token`.
fn history_of(server: &Server, token: &str, set: &str, id: &str) -> Value {
    collection(history_in(server, token, set, id, None))
}

#[test]
fn a_roles_privileges_and_the_instances_audit_settings_are_in_their_histories() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let made = send(
        client().post(server.api("roles")),
        &admin,
        Some(json!({"name": "Account Reader"})),
    );
    assert_eq!(made.status(), 204);
    let role = entity_id(&made);
    let act = |action: &str, body: Value| {
        send(
            client().post(server.api(&format!("roles({role})/Microsoft.Dynamics.CRM.{action}"))),
            &admin,
            Some(body),
        )
        .status()
    };
    let named = |names: &[&str]| -> Value {
        names
            .iter()
            .map(|n| json!({"PrivilegeName": n}))
            .collect::<Vec<_>>()
            .into()
    };
    assert_eq!(
        act(
            "AddPrivilegesRole",
            json!({"Privileges": [{"PrivilegeName": "prvReadaccount", "Depth": "Global"}]})
        ),
        200
    );
    assert_eq!(
        act(
            "ReplacePrivilegesRole",
            json!({"Privileges": named(&["prvReadcontact", "prvCreatecontact"])})
        ),
        200
    );
    assert_eq!(
        act(
            "RemovePrivilegeRole",
            json!({"PrivilegeName": "prvCreatecontact"})
        ),
        200
    );
    // A narrower depth than the instance is refused, never granted wider than asked.
    for depth in [
        json!("Basic"),
        json!("Local"),
        json!("Deep"),
        json!(0),
        json!(null),
    ] {
        let refused = send(
            client().post(server.api(&format!(
                "roles({role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"
            ))),
            &admin,
            Some(json!({"Privileges": [{"PrivilegeName": "prvWriteaccount", "Depth": depth}]})),
        );
        let (status, _, message) = odata_error(refused);
        assert_eq!(status, 400, "{depth}");
        assert!(message.contains("Global"), "{message}");
    }
    let held = get_json(
        &server.api(&format!("roles({role})/RetrieveRolePrivilegesRole()")),
        &admin,
    );
    assert_eq!(held["RolePrivileges"], named(&["prvReadcontact"]));

    let details = history_of(&server, &admin, "roles", &role);
    assert_eq!(
        actions(&details),
        [
            "Remove Privileges From Role",
            "Replace Privileges In Role",
            "Add Privileges To Role",
            "Create"
        ],
        "{details:#}"
    );
    let removal = &details["AuditDetails"][0];
    assert_eq!(
        removal["@odata.type"],
        "#Microsoft.Dynamics.CRM.RolePrivilegeAuditDetail"
    );
    assert_eq!(removal["AuditRecord"]["action"], 58);
    let privileges = |side: &Value| -> Vec<(String, String)> {
        side.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["PrivilegeName"].as_str().unwrap().to_string(),
                    p["Depth"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let global = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), "Global".to_string()))
            .collect()
    };
    assert_eq!(
        privileges(&removal["OldRolePrivileges"]),
        global(&["prvCreatecontact", "prvReadcontact"])
    );
    assert_eq!(
        privileges(&removal["NewRolePrivileges"]),
        global(&["prvReadcontact"])
    );
    let replaced = &details["AuditDetails"][1];
    assert_eq!(
        privileges(&replaced["OldRolePrivileges"]),
        global(&["prvReadaccount"])
    );
    assert_eq!(
        privileges(&details["AuditDetails"][2]["OldRolePrivileges"]),
        []
    );

    // The instance's audit settings: its organization record's history, action 104; a change
    // of an entity's audit flags names no record and is not there.
    let organization = get_json(&server.api("organizations"), &admin)["value"][0]["organizationid"]
        .as_str()
        .unwrap()
        .to_string();
    server.set_org(&admin, json!({"isauditenabled": false}));
    server.set_entity_flags(
        &admin,
        "account",
        json!({"IsAuditEnabled": {"Value": false}}),
    );
    server.set_org(&admin, json!({"isauditenabled": true}));
    let details = history_of(&server, &admin, "organizations", &organization);
    let settings: Vec<&Value> = details["AuditDetails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["AuditRecord"]["action"] == 104)
        .collect();
    assert_eq!(settings.len(), 2, "{details:#}");
    assert_eq!(settings[0]["OldValue"]["isauditenabled"], false);
    assert_eq!(settings[0]["NewValue"]["isauditenabled"], true);
    assert_eq!(settings[1]["NewValue"]["isauditenabled"], false);
    assert_eq!(
        settings[0]["AuditRecord"][format!("action{FORMATTED}")],
        "Audit Change at Org Level"
    );
    assert_eq!(settings[0]["AuditRecord"]["objecttypecode"], "organization");

    // In the summary too, filtered by their actions.
    let audits = |filter: &str| -> Vec<Value> {
        let answered = send(
            client()
                .get(server.api("audits"))
                .query(&[("$filter", filter)]),
            &admin,
            None,
        );
        assert_eq!(answered.status(), 200);
        let answer: Value = answered.json().unwrap();
        answer["value"].as_array().unwrap().clone()
    };
    let turned = audits("action eq 104");
    assert_eq!(turned.len(), 2);
    assert!(
        turned
            .iter()
            .all(|r| r["_objectid_value"] == organization.as_str()
                && r["objecttypecode"] == "organization")
    );
    assert_eq!(
        audits(&format!("action eq 104 and _objectid_value eq {role}")).len(),
        0
    );
    let detail = get_json(
        &server.api(&format!(
            "audits({})/Microsoft.Dynamics.CRM.RetrieveAuditDetails()",
            turned[0]["auditid"].as_str().unwrap()
        )),
        &admin,
    );
    assert_eq!(detail["AuditDetail"]["NewValue"]["isauditenabled"], true);
    let role_rows = audits("action eq 57 or action eq 58 or action eq 59");
    assert_eq!(role_rows.len(), 3);
    assert!(
        role_rows
            .iter()
            .all(|r| r["_objectid_value"] == role.as_str())
    );
    // No row without a record: the entity flag's change is not one.
    let every = audits("createdon ge 2000-01-01");
    assert!(
        every
            .iter()
            .all(|r| r["_objectid_value"] != "00000000-0000-0000-0000-000000000000"),
        "{every:#?}"
    );
    let flag = server.audit(&admin, "operation=UpdateAuditSettings&entity=account");
    assert_eq!(flag.len(), 1);
    let flag_row = send(
        client().get(server.api(&format!("audits({})", flag[0]["Id"].as_str().unwrap()))),
        &admin,
        None,
    );
    assert_eq!(odata_error(flag_row).0, 404);
    // Asked for by its action, it is refused with where to find it, not answered with no rows
    // (which would say no table's auditing was ever changed); so is the org level's finer
    // action, which is a row of 104.
    for (filter, says) in [
        ("action eq 102", "operation=UpdateAuditSettings"),
        (
            "action eq 108 or action eq 105",
            "operation=UpdateAuditSettings",
        ),
        ("action eq 107", "action eq 104"),
    ] {
        let (status, _, message) = odata_error(send(
            client()
                .get(server.api("audits"))
                .query(&[("$filter", filter)]),
            &admin,
            None,
        ));
        assert_eq!(status, 400, "{filter}: {message}");
        assert!(message.contains(says), "{filter}: {message}");
    }

    // The console shows what a role gained and lost, and the settings' history.
    let cookie = crate::console_pages::sign_in(&server, "admin", ADMIN_PASSWORD);
    let html = console_history(&server, &cookie, "roles", &role);
    assert!(
        html.contains("<td>Privilege</td><td>prvCreatecontact</td><td></td>"),
        "{html}"
    );
    assert!(
        html.contains("<td>Privilege</td><td>prvReadaccount</td><td></td>")
            && html.contains("<td>Privilege</td><td></td><td>prvReadcontact</td>"),
        "{html}"
    );
    let html = console_history(&server, &cookie, "organizations", &organization);
    assert!(html.contains("Audit Change at Org Level"), "{html}");
    // Reached from the Auditing settings and the role's page; the summary filters by them.
    let (_, html) = crate::console_pages::page(&server, &cookie, "/ui/main/settings/auditing");
    assert!(
        html.contains(&format!(
            "href=\"/ui/main/records/organizations/{organization}/history\""
        )),
        "{html}"
    );
    let (_, html) =
        crate::console_pages::page(&server, &cookie, &format!("/ui/main/users/roles/{role}"));
    assert!(
        html.contains(&format!("href=\"/ui/main/records/roles/{role}/history\"")),
        "{html}"
    );
    let (status, html) =
        crate::console_pages::page(&server, &cookie, "/ui/main/settings/audit-summary?event=59");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Replace Privileges In Role"), "{html}");
    assert!(!html.contains("Add Privileges To Role</td>"), "{html}");
}
