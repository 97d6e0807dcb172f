//! Views (SPEC §3): system views (`savedqueries`) and personal views (`userqueries`) run with
//! `?savedQuery=` / `?userQuery=`; opening one is a retrieve multiple whose event names the view
//! and lists every record id of every page.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

/// The names of a page's records, sorted.
fn sorted_names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn ids(page: &Value, key: &str) -> BTreeSet<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn views_run_their_query_and_every_page_is_recorded_with_the_view() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    for (name, revenue) in [("Small", 100), ("Big", 900), ("Huge", 5000)] {
        post(
            &server,
            &admin,
            "accounts",
            json!({"name": name, "revenue": revenue}),
        );
    }

    let views = get_json(
        &server.api("savedqueries?$filter=returnedtypecode eq 'account'"),
        &admin,
    );
    assert_eq!(views["value"][0]["name"], "All accounts");
    let all = views["value"][0]["savedqueryid"]
        .as_str()
        .unwrap()
        .to_string();
    let page = get_json(&server.api(&format!("accounts?savedQuery={all}")), &admin);
    assert_eq!(page["value"].as_array().unwrap().len(), 3);
    assert!(page["value"][0].get("revenue").is_some());
    assert!(
        page["value"][0].get("description").is_none(),
        "the view's columns only"
    );

    let response = post(
        &server,
        &admin,
        "savedqueries",
        json!({"name": "Large accounts", "returnedtypecode": "account", "filter": "revenue gt 500", "columns": "name,revenue", "orderby": "revenue desc"}),
    );
    assert_eq!(response.status(), 204);
    let large = entity_id(&response);
    let mut url = server.api(&format!("accounts?savedQuery={large}"));
    let mut seen = Vec::new();
    loop {
        let response = send(
            client().get(&url).header("prefer", "odata.maxpagesize=1"),
            &admin,
            None,
        );
        let page: Value = response.json().unwrap();
        seen.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string()),
        );
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["Huge", "Big"],
        "the view's filter and order, page by page"
    );
    let events = server.audit(&admin, &format!("operation=RetrieveMultiple&q={large}"));
    assert_eq!(events.len(), 2, "one event per page");
    for event in &events {
        assert_eq!(event["Details"]["ViewName"], "Large accounts");
        assert_eq!(event["Details"]["ViewType"], "savedquery");
        assert_eq!(event["RecordIds"].as_array().unwrap().len(), 1);
        assert!(
            event["Query"]
                .as_str()
                .unwrap()
                .contains(&format!("savedQuery={large}"))
        );
    }

    // Personal views: the owner's (and an administrator's) to run.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    server.add_user(&admin, "al@contoso.test", "al-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let al = server.token("al@contoso.test", "al-password-1");
    let response = post(
        &server,
        &bo,
        "userqueries",
        json!({"name": "My small ones", "returnedtypecode": "account", "filter": "revenue lt 500"}),
    );
    assert_eq!(response.status(), 204);
    let mine = entity_id(&response);
    let run = |token: &str| {
        send(
            client().get(server.api(&format!("accounts?userQuery={mine}"))),
            token,
            None,
        )
    };
    let page: Value = run(&bo).json().unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    assert_eq!(odata_error(run(&al)).0, 403);
    assert_eq!(run(&admin).status(), 200);
    let denied = server.audit(&admin, "operation=RetrieveMultiple&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "al@contoso.test");

    let contacts = get_json(
        &server.api("savedqueries?$filter=returnedtypecode eq 'contact'"),
        &admin,
    );
    let contact_view = contacts["value"][0]["savedqueryid"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, expected) in [
        (format!("accounts?savedQuery={contact_view}"), 400),
        (
            format!("accounts?savedQuery={large}&$filter=name eq 'x'"),
            400,
        ),
        ("accounts?savedQuery=nope".to_string(), 400),
        (
            "accounts?savedQuery=0190a5f0-0000-7000-8000-000000000000".to_string(),
            404,
        ),
        (format!("accounts?savedQuery={large}&userQuery={mine}"), 400),
    ] {
        let response = send(client().get(server.api(&path)), &admin, None);
        assert_eq!(odata_error(response).0, expected, "{path}");
    }
    let before = ids(
        &get_json(&server.api("savedqueries"), &admin),
        "savedqueryid",
    );
    for body in [
        json!({"name": "x", "returnedtypecode": "account", "filter": "nosuch eq 1"}),
        json!({"name": "x", "returnedtypecode": "account", "columns": "name,nosuch"}),
        json!({"name": "x", "returnedtypecode": "nosuch"}),
        json!({"name": "x"}),
    ] {
        assert_eq!(
            odata_error(post(&server, &admin, "savedqueries", body.clone())).0,
            400,
            "{body}"
        );
    }
    let response = send(
        client().patch(server.api(&format!("savedqueries({large})"))),
        &admin,
        Some(json!({"filter": "revenue gt"})),
    );
    assert_eq!(odata_error(response).0, 400, "an update is checked too");
    assert_eq!(
        ids(
            &get_json(&server.api("savedqueries"), &admin),
            "savedqueryid"
        ),
        before
    );
    assert_eq!(
        odata_error(post(
            &server,
            &bo,
            "savedqueries",
            json!({"name": "x", "returnedtypecode": "account"})
        ))
        .0,
        403,
        "system views are an administrator's"
    );
}

#[test]
fn a_query_is_read_as_written_with_its_aliases_or_refused_never_ignored() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let mut made = std::collections::HashMap::new();
    for (name, revenue) in [("Small", 100), ("Big", 900), ("Huge", 5000)] {
        let created = post(
            &server,
            &admin,
            "accounts",
            json!({"name": name, "revenue": revenue}),
        );
        made.insert(name, entity_id(&created));
    }

    // Parameter aliases, as Dataverse takes them in $filter and $orderby.
    let aliased = send(
        client().get(server.api(
            "accounts?$select=name&$filter=revenue gt @min and name ne '@min'&$orderby=@by desc&@min=500&@by=revenue",
        )),
        &admin,
        None,
    );
    assert_eq!(aliased.status(), 200);
    let correlation = correlation_of(&aliased);
    let page: Value = aliased.json().unwrap();
    let names = names(&page);
    assert_eq!(names, ["Huge", "Big"]);
    let events = events_of(&server, &admin, &correlation);
    let listed: Vec<&Value> = events
        .iter()
        .filter(|e| e["Operation"] == "RetrieveMultiple")
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        record_ids(&events),
        BTreeSet::from([made["Huge"].clone(), made["Big"].clone()]),
        "the records shown, and only those"
    );
    assert!(
        listed[0]["Query"].as_str().unwrap().contains("@min=500"),
        "{}",
        listed[0]["Query"]
    );
    let counted = send(
        client().get(server.api("accounts/$count?$filter=revenue gt @min&@min=500")),
        &admin,
        None,
    );
    assert_eq!(counted.text().unwrap(), "2");

    // Preferences sent as two headers are both taken (RFC 7240), not only the first.
    let paged = client()
        .get(server.api("accounts?$select=name"))
        .bearer_auth(&admin)
        .header("Prefer", "odata.include-annotations=\"*\"")
        .header("Prefer", "odata.maxpagesize=1")
        .send()
        .unwrap();
    assert_eq!(paged.status(), 200);
    let applied = paged.headers()["preference-applied"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(applied.contains("odata.maxpagesize=1"), "{applied}");
    assert!(applied.contains("odata.include-annotations"), "{applied}");
    let page: Value = paged.json().unwrap();
    assert_eq!(page["value"].as_array().unwrap().len(), 1, "{page}");
    assert!(page["@odata.nextLink"].is_string(), "{page}");

    // A query that would read something else, were it understood, is refused rather than
    // ignored — ignored, it would list every account.
    let fetch = "<fetch><entity name='account'><filter><condition attribute='name' operator='eq' value='Small'/></filter></entity></fetch>";
    let small = &made["Small"];
    let linked = "<fetch><entity name='account'><link-entity name='contact' from='contactid' to='primarycontactid'/></entity></fetch>";
    for path in [
        format!("accounts?fetchXml={linked}"),
        format!("accounts?fetchXml={fetch}&$top=1"),
        format!("accounts?fetchXml={fetch}&savedQuery=6f3b0002-0000-4000-8000-000000000001"),
        "accounts?queryExpression={}".to_string(),
        "accounts?filter=name eq 'Small'".to_string(),
        "accounts?savedquery=6f3b0002-0000-4000-8000-000000000001".to_string(),
        format!("accounts/$count?fetchXml={fetch}"),
        "accounts/$count?savedQuery=6f3b0002-0000-4000-8000-000000000001".to_string(),
        format!("accounts({small})?fetchXml={fetch}"),
    ] {
        let refused = send(client().get(server.api(&path)), &admin, None);
        let correlation = correlation_of(&refused);
        let (status, code, message) = odata_error(refused);
        assert_eq!(
            (status, code.as_str()),
            (400, "BadRequest"),
            "{path}: {message}"
        );
        let events = events_of(&server, &admin, &correlation);
        assert!(
            !events.is_empty() && events.iter().all(|e| e["ResultStatus"] == "Failed"),
            "{path}: nothing read, the refusal recorded: {events:?}"
        );
        assert!(
            record_ids(&events)
                .iter()
                .all(|id| path.contains(id.as_str())),
            "{path}: no record named but the one the path names"
        );
    }
}

#[test]
fn dataverse_query_functions_are_read_for_the_request_and_its_user() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let mut made = std::collections::HashMap::new();
    for (token, name, employees) in [(&admin, "Qf A", 5), (&admin, "Qf B", 15), (&bo, "Qf C", 25)] {
        let created = post(
            &server,
            token,
            "accounts",
            json!({"name": name, "numberofemployees": employees}),
        );
        assert_eq!(created.status(), 204);
        made.insert(name, entity_id(&created));
    }
    let ns = "Microsoft.Dynamics.CRM.";
    // The names a list shows for `condition` (beside the accounts of this test only), and the
    // request's correlation id.
    let list = |token: &str, condition: &str| {
        let response = send(
            client().get(server.api(&format!(
                "accounts?$select=name&$filter=startswith(name,'Qf') and {ns}{condition}"
            ))),
            token,
            None,
        );
        assert_eq!(response.status(), 200, "{condition}");
        let correlation = correlation_of(&response);
        (sorted_names(&response.json().unwrap()), correlation)
    };
    let names = |token: &str, condition: &str| list(token, condition).0;

    let (shown, correlation) = list(
        &admin,
        "In(PropertyName='name',PropertyValues=['Qf A','Qf C'])",
    );
    assert_eq!(shown, ["Qf A", "Qf C"]);
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(
        record_ids(&events),
        BTreeSet::from([made["Qf A"].clone(), made["Qf C"].clone()]),
        "the records shown, and only those"
    );
    let listed = events
        .iter()
        .find(|e| e["Operation"] == "RetrieveMultiple")
        .unwrap();
    assert!(
        listed["Query"]
            .as_str()
            .unwrap()
            .contains("In(PropertyName='name'"),
        "the query as written: {}",
        listed["Query"]
    );
    assert_eq!(
        names(&admin, "NotIn(PropertyName='name',PropertyValues=['Qf A'])"),
        ["Qf B", "Qf C"]
    );
    // Dataverse's lists are strings, read as the attribute's type.
    assert_eq!(
        names(
            &admin,
            "Between(PropertyName='numberofemployees',PropertyValues=['10','30'])"
        ),
        ["Qf B", "Qf C"]
    );
    assert_eq!(
        names(
            &admin,
            "NotBetween(PropertyName='numberofemployees',PropertyValues=[10,30])"
        ),
        ["Qf A"]
    );
    // Relative dates, from the request's time.
    assert_eq!(
        names(&admin, "Last7Days(PropertyName='createdon')"),
        ["Qf A", "Qf B", "Qf C"]
    );
    assert_eq!(
        names(
            &admin,
            "LastXHours(PropertyName='createdon',PropertyValue=1)"
        ),
        ["Qf A", "Qf B", "Qf C"]
    );
    assert!(names(&admin, "Tomorrow(PropertyName='createdon')").is_empty());
    assert!(
        names(
            &admin,
            "OlderThanXDays(PropertyName='createdon',PropertyValue=1)"
        )
        .is_empty()
    );
    // The caller's own id: each user sees their own records.
    let mine = "EqualUserId(PropertyName='ownerid')";
    assert_eq!(names(&bo, mine), ["Qf C"]);
    assert_eq!(names(&admin, mine), ["Qf A", "Qf B"]);
    assert_eq!(
        names(&bo, "NotEqualUserId(PropertyName='ownerid')"),
        ["Qf A", "Qf B"]
    );
    let counted = send(
        client().get(server.api(&format!(
            "accounts/$count?$filter={ns}In(PropertyName='name',PropertyValues=['Qf A','Qf B'])"
        ))),
        &admin,
        None,
    );
    assert_eq!(counted.text().unwrap(), "2");

    // A system view "My Accounts", as Dataverse ships one: each user who opens it sees theirs.
    let view = post(
        &server,
        &admin,
        "savedqueries",
        json!({"name": "My Qf Accounts", "returnedtypecode": "account",
               "filter": format!("startswith(name,'Qf') and {ns}{mine}"), "columns": "name"}),
    );
    assert_eq!(view.status(), 204);
    let view = entity_id(&view);
    let run = |token: &str| {
        let page: Value = send(
            client().get(server.api(&format!("accounts?savedQuery={view}"))),
            token,
            None,
        )
        .json()
        .unwrap();
        sorted_names(&page)
    };
    assert_eq!(run(&bo), ["Qf C"]);
    assert_eq!(run(&admin), ["Qf A", "Qf B"]);

    // `$metadata` declares them as Dataverse's does, and only those read.
    let metadata = send(client().get(server.api("$metadata")), &admin, None)
        .text()
        .unwrap();
    for declared in [
        "<Function Name=\"LastXDays\"><Parameter Name=\"PropertyName\" Type=\"Edm.String\" Nullable=\"false\"/><Parameter Name=\"PropertyValue\" Type=\"Edm.Int64\" Nullable=\"false\"/><ReturnType Type=\"Edm.Boolean\" Nullable=\"false\"/></Function>",
        "<Function Name=\"In\"><Parameter Name=\"PropertyName\" Type=\"Edm.String\" Nullable=\"false\"/><Parameter Name=\"PropertyValues\" Type=\"Collection(Edm.String)\" Nullable=\"false\"/>",
        "<Function Name=\"EqualUserId\"><Parameter Name=\"PropertyName\" Type=\"Edm.String\" Nullable=\"false\"/><ReturnType",
    ] {
        assert!(metadata.contains(declared), "{declared}");
    }
    assert!(!metadata.contains("<Function Name=\"LastXFiscalYears\""));
    // What cannot be read is refused with its reason, never ignored; a view too.
    for (condition, says) in [
        (
            "LastXFiscalYears(PropertyName='createdon',PropertyValue=1)",
            "not supported",
        ),
        (
            "LastXDays(PropertyName='createdon',PropertyValue=100000)",
            "from 0 to 10000",
        ),
        (
            "Between(PropertyName='numberofemployees',PropertyValues=['ten','30'])",
            "cannot be compared",
        ),
        (
            "EqualUserId(PropertyName='nosuchattribute')",
            "nosuchattribute",
        ),
    ] {
        let refused = send(
            client().get(server.api(&format!("accounts?$filter={ns}{condition}"))),
            &admin,
            None,
        );
        let (status, _, message) = odata_error(refused);
        assert_eq!(status, 400, "{condition}");
        assert!(message.contains(says), "{condition}: {message}");
    }
    let refused = post(
        &server,
        &admin,
        "savedqueries",
        json!({"name": "Fiscal", "returnedtypecode": "account",
               "filter": format!("{ns}ThisFiscalYear(PropertyName='createdon')")}),
    );
    assert_eq!(odata_error(refused).0, 400);
}
