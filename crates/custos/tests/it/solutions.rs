//! Solutions (SPEC §3): importing one configures the instance — entities, attributes, views,
//! processes, plug-in steps — all or nothing; removing it takes them away again, and the log
//! keeps what was destroyed.

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

fn solution() -> Value {
    json!({
        "UniqueName": "contoso_projects",
        "FriendlyName": "Contoso projects",
        "Version": "1.2.0.0",
        "Publisher": {"Prefix": "contoso"},
        "Entities": [{
            "SchemaName": "contoso_Project",
            "Attributes": [
                {"AttributeType": "String", "SchemaName": "contoso_name", "IsPrimaryName": true},
                {"AttributeType": "Money", "SchemaName": "contoso_budget"},
                {"AttributeType": "Lookup", "SchemaName": "contoso_accountid", "Targets": ["account"]}
            ]
        }],
        "Attributes": [
            {"EntityLogicalName": "account", "AttributeType": "Integer", "SchemaName": "contoso_tier"}
        ],
        "Views": [
            {"name": "Big projects", "returnedtypecode": "contoso_project", "filter": "contoso_budget gt 100", "columns": "contoso_name,contoso_budget"}
        ],
        "Processes": [
            {"name": "Tier new accounts", "primaryentity": "account", "triggeron": "create",
             "actiontype": "setfield", "fieldname": "contoso_tier", "fieldvalue": "1", "Activate": true}
        ],
        "PluginSteps": [
            {"name": "Project sync", "sdkmessage": "Create", "primaryentity": "contoso_project", "webhookurl": "http://127.0.0.1:9/hook"}
        ]
    })
}

#[test]
fn a_solution_configures_the_instance_and_its_removal_undoes_it() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let response = post(
        &server,
        &admin,
        "ImportSolution",
        json!({"CustomizationFile": solution()}),
    );
    assert_eq!(response.status(), 200, "{:?}", response.text());
    let imported: Value = response.json().unwrap();
    let solution_id = imported["SolutionId"].as_str().unwrap().to_string();

    let account = entity_id(&post(
        &server,
        &admin,
        "accounts",
        json!({"name": "Contoso"}),
    ));
    assert_eq!(
        get_json(&server.api(&format!("accounts({account})")), &admin)["contoso_tier"],
        1,
        "the solution's process is active"
    );
    let response = post(
        &server,
        &admin,
        "contoso_projects",
        json!({"contoso_name": "Apollo", "contoso_budget": 500, "contoso_accountid@odata.bind": format!("/accounts({account})")}),
    );
    assert_eq!(response.status(), 204);
    let project = entity_id(&response);
    post(
        &server,
        &admin,
        "contoso_projects",
        json!({"contoso_name": "Tiny", "contoso_budget": 5}),
    );
    let view = get_json(
        &server.api("savedqueries?$filter=name eq 'Big projects'"),
        &admin,
    );
    let view_id = view["value"][0]["savedqueryid"]
        .as_str()
        .unwrap()
        .to_string();
    let big = get_json(
        &server.api(&format!("contoso_projects?savedQuery={view_id}")),
        &admin,
    );
    assert_eq!(big["value"].as_array().unwrap().len(), 1);
    assert_eq!(big["value"][0]["contoso_name"], "Apollo");
    let installed = get_json(&server.api(&format!("solutions({solution_id})")), &admin);
    assert_eq!(installed["uniquename"], "contoso_projects");
    assert_eq!(installed["version"], "1.2.0.0");

    let import = server.audit(&admin, "operation=ImportSolution&status=Succeeded");
    assert_eq!(import.len(), 1);
    assert_eq!(
        import[0]["Details"]["Components"]["Entities"],
        json!(["contoso_project"])
    );
    assert_eq!(import[0]["EntityCategory"], "admin");
    let publish = server.audit(&admin, "operation=PublishAllCustomizations");
    assert_eq!(publish[0]["Details"]["Solution"], "contoso_projects");
    assert_eq!(publish[0]["CorrelationId"], import[0]["CorrelationId"]);
    assert_eq!(
        server
            .audit(
                &admin,
                &format!(
                    "operation=Create&q={}",
                    import[0]["CorrelationId"].as_str().unwrap()
                )
            )
            .len(),
        3,
        "a Create for the view, the process and the step"
    );
    assert_eq!(server.audit(&admin, "operation=ActivateProcess").len(), 1);

    // The same solution again, or a broken one, changes nothing.
    let again = post(
        &server,
        &admin,
        "ImportSolution",
        json!({"CustomizationFile": solution()}),
    );
    assert_eq!(odata_error(again).0, 409);
    let mut broken = solution();
    broken["UniqueName"] = json!("other");
    broken["Entities"][0]["SchemaName"] = json!("contoso_task2");
    broken["Views"][0]["filter"] = json!("nosuch gt 1");
    broken["Attributes"] = json!([]);
    let (status, _, message) = odata_error(post(
        &server,
        &admin,
        "ImportSolution",
        json!({"CustomizationFile": broken}),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("nosuch"), "{message}");
    assert_eq!(
        send(client().get(server.api("contoso_task2s")), &admin, None).status(),
        404,
        "nothing of a refused solution was made"
    );

    // A lookup outside the solution naming its entity holds the removal back, whole, until
    // that lookup is deleted.
    let lookup = post(
        &server,
        &admin,
        "EntityDefinitions(LogicalName='account')/Attributes",
        json!({"AttributeType": "Lookup", "SchemaName": "new_projectid", "Targets": ["contoso_project"]}),
    );
    assert_eq!(lookup.status(), 204);
    server.publish(&admin);
    let (status, _, message) = odata_error(send(
        client().delete(server.api(&format!("solutions({solution_id})"))),
        &admin,
        None,
    ));
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("account.new_projectid"), "{message}");
    assert_eq!(
        send(client().get(server.api("contoso_projects")), &admin, None).status(),
        200
    );
    assert_eq!(
        count(&server, &admin, "workflows"),
        1,
        "nothing was removed"
    );
    let response = send(
        client().delete(server.api(
            "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_projectid')",
        )),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);

    // Removal takes every part away, and the log keeps what was destroyed.
    let response = send(
        client().delete(server.api(&format!("solutions({solution_id})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    assert_eq!(
        send(client().get(server.api("contoso_projects")), &admin, None).status(),
        404
    );
    let account_now = get_json(&server.api(&format!("accounts({account})")), &admin);
    assert!(account_now.get("contoso_tier").is_none());
    assert_eq!(count(&server, &admin, "workflows"), 0);
    assert_eq!(count(&server, &admin, "sdkmessageprocessingsteps"), 0);
    assert!(
        get_json(
            &server.api("savedqueries?$filter=name eq 'Big projects'"),
            &admin
        )["value"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let removed = server.audit(&admin, "operation=RemoveSolution&status=Succeeded");
    assert_eq!(removed.len(), 1);
    let held = server.audit(&admin, "operation=RemoveSolution&status=Failed");
    assert_eq!(
        held.len(),
        1,
        "the removal held back is recorded as refused"
    );
    let entity_gone = server.audit(&admin, "operation=DeleteEntity");
    assert_eq!(entity_gone.len(), 1);
    assert_eq!(
        entity_gone[0]["Details"]["Records"][&project]["contoso_name"],
        "Apollo"
    );
    assert_eq!(entity_gone[0]["ResultCount"], 2);
    let tier_gone = server.audit(&admin, "operation=DeleteAttribute");
    let tier_gone: Vec<&Value> = tier_gone
        .iter()
        .filter(|e| e["Details"]["Attribute"] == "contoso_tier")
        .collect();
    assert_eq!(tier_gone[0]["Details"]["Values"][&account], 1);
    assert_eq!(
        server
            .audit(
                &admin,
                &format!("recordId={project}&operation=DeleteEntity")
            )
            .len(),
        1,
        "who touched this record finds its deletion"
    );
    let account_after = entity_id(&post(&server, &admin, "accounts", json!({"name": "After"})));
    assert!(
        get_json(&server.api(&format!("accounts({account_after})")), &admin)
            .get("contoso_tier")
            .is_none()
    );
}

#[test]
fn only_customizers_import_and_bad_solutions_say_why() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(
        odata_error(post(
            &server,
            &bo,
            "ImportSolution",
            json!({"CustomizationFile": solution()})
        ))
        .0,
        403
    );
    assert_eq!(
        server
            .audit(&admin, "operation=ImportSolution&status=Denied")
            .len(),
        1
    );
    let mut wrong_prefix = solution();
    wrong_prefix["Publisher"]["Prefix"] = json!("fabrikam");
    for (body, needle) in [
        (
            json!({"CustomizationFile": wrong_prefix}),
            "prefix 'fabrikam_'",
        ),
        (
            json!({"CustomizationFile": "not json"}),
            "CustomizationFile",
        ),
        (json!({}), "CustomizationFile"),
        (
            json!({"CustomizationFile": {"UniqueName": "x y", "Publisher": {"Prefix": "ab"}}}),
            "UniqueName",
        ),
        (
            json!({"CustomizationFile": {"UniqueName": "ok", "Publisher": {"Prefix": "ab"}, "Extras": []}}),
            "Extras",
        ),
    ] {
        let (status, _, message) =
            odata_error(post(&server, &admin, "ImportSolution", body.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let created = post(
        &server,
        &admin,
        "solutions",
        json!({"uniquename": "sneaky"}),
    );
    assert_eq!(
        odata_error(created).0,
        400,
        "solutions are imported, not created"
    );
    assert_eq!(count(&server, &admin, "solutions"), 0);
}
