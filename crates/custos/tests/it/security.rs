//! Security (SPEC §3): custom roles with per-entity privileges, teams whose roles their members
//! hold, role assignment and removal; every change an admin event whatever the settings, and
//! every refusal a `Denied` event.

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

fn status(response: reqwest::blocking::Response) -> u16 {
    response.status().as_u16()
}

#[test]
fn roles_reach_users_directly_and_through_teams() {
    let server = Server::start(&[]);
    let admin = server.admin();
    // Change auditing of roles and teams is off: their changes are recorded all the same.
    for entity in ["role", "team"] {
        server.set_entity_flags(&admin, entity, json!({"IsAuditEnabled": {"Value": false}}));
    }
    server.publish(&admin);

    let role = entity_id(&post(
        &server,
        &admin,
        "roles",
        json!({"name": "Account Reader"}),
    ));
    let response = post(
        &server,
        &admin,
        &format!("roles({role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"),
        json!({"Privileges": [{"PrivilegeName": "prvReadaccount", "Depth": "Global"}]}),
    );
    assert_eq!(status(response), 200);
    let added = server.audit(&admin, "operation=AddPrivilegesRole");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["EntityCategory"], "admin");
    assert_eq!(added[0]["Category"], "accessed-admin-entity");
    assert_eq!(added[0]["UserType"], 2);
    assert_eq!(added[0]["Changes"][0]["New"], json!(["prvReadaccount"]));
    assert_eq!(
        server.audit(&admin, "operation=Create&entity=role").len(),
        1,
        "role changes are recorded even with the role entity's auditing off"
    );

    let cy_id = {
        let response = post(
            &server,
            &admin,
            "systemusers",
            json!({"domainname": "cy@contoso.test", "password": "cy-password-1"}),
        );
        assert_eq!(response.status(), 204);
        entity_id(&response)
    };
    let cy = server.token("cy@contoso.test", "cy-password-1");
    let account = entity_id(&post(
        &server,
        &admin,
        "accounts",
        json!({"name": "Contoso"}),
    ));
    let read_accounts = || status(send(client().get(server.api("accounts")), &cy, None));
    assert_eq!(read_accounts(), 403, "no role, no access");

    let team = entity_id(&post(
        &server,
        &admin,
        "teams",
        json!({"name": "Sales team"}),
    ));
    let response = post(
        &server,
        &admin,
        &format!("teams({team})/teamroles_association/$ref"),
        json!({"@odata.id": server.api(&format!("roles({role})"))}),
    );
    assert_eq!(status(response), 204);
    let response = post(
        &server,
        &admin,
        &format!("teams({team})/teammembership_association/$ref"),
        json!({"@odata.id": server.api(&format!("systemusers({cy_id})"))}),
    );
    assert_eq!(status(response), 204);
    let members = get_json(
        &server.api(&format!("teams({team})/teammembership_association")),
        &admin,
    );
    assert_eq!(members["value"][0]["domainname"], "cy@contoso.test");
    let joined = server.audit(&admin, "operation=AddTeamMember");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["Details"]["UserUpn"], "cy@contoso.test");
    assert_eq!(joined[0]["Details"]["TeamName"], "Sales team");
    assert_eq!(
        server.audit(&admin, "operation=AssignRole").len(),
        1,
        "the team's role"
    );

    assert_eq!(read_accounts(), 200, "the team's role reaches its member");
    assert_eq!(
        status(send(
            client().get(server.api(&format!("accounts({account})"))),
            &cy,
            None
        )),
        200
    );
    assert_eq!(
        status(send(client().get(server.api("contacts")), &cy, None)),
        403
    );
    assert_eq!(
        status(post(&server, &cy, "accounts", json!({"name": "Mine"}))),
        403,
        "read is not write"
    );
    let denied = server.audit(&admin, "status=Denied&user=cy@contoso.test");
    let operations: Vec<&str> = denied
        .iter()
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert!(operations.contains(&"Create") && operations.contains(&"RetrieveMultiple"));

    let response = send(
        client().delete(server.api(&format!(
            "teams({team})/teammembership_association({cy_id})/$ref"
        ))),
        &admin,
        None,
    );
    assert_eq!(status(response), 204);
    assert_eq!(read_accounts(), 403, "out of the team, out of its role");
    assert_eq!(server.audit(&admin, "operation=RemoveTeamMember").len(), 1);

    // Directly, then replaced privileges, then taken back.
    let response = post(
        &server,
        &admin,
        &format!("systemusers({cy_id})/systemuserroles_association/$ref"),
        json!({"@odata.id": server.api(&format!("roles({role})"))}),
    );
    assert_eq!(status(response), 204);
    assert_eq!(read_accounts(), 200);
    let response = post(
        &server,
        &admin,
        &format!("roles({role})/ReplacePrivilegesRole"),
        json!({"Privileges": [{"PrivilegeName": "prvReadcontact"}, {"PrivilegeName": "prvCreatecontact"}]}),
    );
    assert_eq!(status(response), 200);
    assert_eq!(read_accounts(), 403, "the new privileges apply at once");
    assert_eq!(
        status(post(&server, &cy, "contacts", json!({"lastname": "Cy's"}))),
        204
    );
    let privileges = get_json(
        &server.api(&format!("roles({role})/RetrieveRolePrivilegesRole()")),
        &admin,
    );
    assert_eq!(
        privileges["RolePrivileges"],
        json!([{"PrivilegeName": "prvCreatecontact"}, {"PrivilegeName": "prvReadcontact"}])
    );
    let response = post(
        &server,
        &admin,
        &format!("roles({role})/RemovePrivilegeRole"),
        json!({"PrivilegeName": "prvCreatecontact"}),
    );
    assert_eq!(status(response), 200);
    assert_eq!(
        status(post(&server, &cy, "contacts", json!({"lastname": "Again"}))),
        403
    );
    let response = send(
        client().delete(server.api(&format!(
            "systemusers({cy_id})/systemuserroles_association({role})/$ref"
        ))),
        &admin,
        None,
    );
    assert_eq!(status(response), 204);
    assert_eq!(server.audit(&admin, "operation=RemoveRole").len(), 1);
    assert_eq!(
        status(send(client().get(server.api("contacts")), &cy, None)),
        403
    );

    // A custom role can be deleted, its grants go with it; built-in roles stay.
    assert_eq!(
        status(send(
            client().delete(server.api(&format!("roles({role})"))),
            &admin,
            None
        )),
        204
    );
    let roles = get_json(&server.api("roles?$filter=name eq 'Basic User'"), &admin);
    let basic = roles["value"][0]["roleid"].as_str().unwrap().to_string();
    assert_eq!(
        odata_error(send(
            client().delete(server.api(&format!("roles({basic})"))),
            &admin,
            None
        ))
        .0,
        400
    );
    assert_eq!(
        odata_error(post(
            &server,
            &admin,
            &format!("roles({basic})/AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvBulkDeleteaccount"}]}),
        ))
        .0,
        400
    );
}

#[test]
fn security_changes_refuse_bad_input_and_non_admins() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let role = entity_id(&post(&server, &admin, "roles", json!({"name": "Custom"})));
    let bo_id = server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    for (path, body, expected) in [
        (
            format!("roles({role})/AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvFlyaccount"}]}),
            400,
        ),
        (
            format!("roles({role})/AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvReadnosuch"}]}),
            400,
        ),
        (format!("roles({role})/AddPrivilegesRole"), json!({}), 400),
        (
            format!("systemusers({bo_id})/systemuserroles_association/$ref"),
            json!({"@odata.id": "roles(nope)"}),
            400,
        ),
        (
            format!("systemusers({bo_id})/systemuserroles_association/$ref"),
            json!({"@odata.id": server.api("roles(0190a5f0-0000-7000-8000-000000000000)")}),
            404,
        ),
        (
            format!("systemusers({bo_id})/systemuserroles_association/$ref"),
            json!({"@odata.id": server.api("roles(6f3b0001-0000-4000-8000-000000000002)")}),
            409,
        ),
        (
            "teams(0190a5f0-0000-7000-8000-000000000000)/teammembership_association/$ref".into(),
            json!({"@odata.id": server.api(&format!("systemusers({bo_id})"))}),
            404,
        ),
    ] {
        let response = post(&server, &admin, &path, body.clone());
        assert_eq!(odata_error(response).0, expected, "{path} {body}");
    }
    for (path, body) in [
        (
            format!("roles({role})/AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvReadaccount"}]}),
        ),
        (
            format!("systemusers({bo_id})/systemuserroles_association/$ref"),
            json!({"@odata.id": server.api(&format!("roles({role})"))}),
        ),
    ] {
        assert_eq!(
            odata_error(post(&server, &bo, &path, body)).0,
            403,
            "{path}"
        );
    }
    let denied = server.audit(&admin, "status=Denied&user=bo@contoso.test");
    let operations: Vec<&str> = denied
        .iter()
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations.len(), 2);
    assert!(operations.contains(&"AddPrivilegesRole") && operations.contains(&"AssignRole"));
    let privileges = get_json(
        &server.api(&format!("roles({role})/RetrieveRolePrivilegesRole()")),
        &admin,
    );
    assert_eq!(privileges["RolePrivileges"], json!([]), "nothing changed");
}

#[test]
fn a_shared_record_opens_to_its_user_and_only_that_record() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let dee_id = {
        let response = post(
            &server,
            &admin,
            "systemusers",
            json!({"domainname": "dee@contoso.test", "password": "dee-password-1"}),
        );
        entity_id(&response)
    };
    let dee = server.token("dee@contoso.test", "dee-password-1");
    let shared = entity_id(&post(
        &server,
        &admin,
        "accounts",
        json!({"name": "Shared"}),
    ));
    let other = entity_id(&post(&server, &admin, "accounts", json!({"name": "Other"})));
    let read = |id: &str| {
        status(send(
            client().get(server.api(&format!("accounts({id})"))),
            &dee,
            None,
        ))
    };
    let write = |id: &str| {
        status(send(
            client().patch(server.api(&format!("accounts({id})"))),
            &dee,
            Some(json!({"telephone1": "1"})),
        ))
    };
    assert_eq!(read(&shared), 403);
    let grant = |mask: &str| {
        post(
            &server,
            &admin,
            "GrantAccess",
            json!({"Target": {"@odata.id": format!("accounts({shared})")}, "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({dee_id})")}, "AccessMask": mask}}),
        )
    };
    assert_eq!(status(grant("ReadAccess")), 204);
    assert_eq!(
        read(&shared),
        403,
        "a share opens a record only to someone who uses the instance"
    );
    let guest = entity_id(&post(
        &server,
        &admin,
        "roles",
        json!({"name": "Contact reader"}),
    ));
    assert_eq!(
        status(post(
            &server,
            &admin,
            &format!("roles({guest})/Microsoft.Dynamics.CRM.AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvReadcontact"}]}),
        )),
        200
    );
    assert_eq!(
        status(post(
            &server,
            &admin,
            &format!("systemusers({dee_id})/systemuserroles_association/$ref"),
            json!({"@odata.id": server.api(&format!("roles({guest})"))}),
        )),
        204
    );
    assert_eq!(read(&shared), 200, "shared for reading");
    assert_eq!(read(&other), 403, "only that record");
    assert_eq!(write(&shared), 403, "reading is not writing");
    assert_eq!(status(grant("WriteAccess")), 204);
    assert_eq!(write(&shared), 204);
    assert_eq!(read(&shared), 200, "a grant adds to what the share gave");
    // ModifyAccess replaces what the share gives: narrowed back to reading.
    let modify = |id: &str, mask: &str| {
        post(
            &server,
            &admin,
            "ModifyAccess",
            json!({"Target": {"@odata.id": format!("accounts({id})")}, "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({dee_id})")}, "AccessMask": mask}}),
        )
    };
    assert_eq!(status(modify(&shared, "ReadAccess")), 204);
    assert_eq!(write(&shared), 403, "narrowed to reading");
    assert_eq!(read(&shared), 200);
    let modified = server.audit(&admin, "operation=ModifyShare");
    assert_eq!(modified.len(), 1);
    assert_eq!(modified[0]["RecordIds"], json!([shared]));
    assert_eq!(
        modified[0]["Details"]["PreviousAccessMask"],
        "ReadAccess, WriteAccess"
    );
    assert_eq!(modified[0]["Details"]["AccessMask"], "ReadAccess");
    // A record not shared with the user is shared by GrantAccess, not ModifyAccess.
    let (status_code, _, message) = odata_error(modify(&other, "ReadAccess"));
    assert_eq!(status_code, 404);
    assert!(message.contains("GrantAccess shares it"), "{message}");
    assert_eq!(read(&other), 403);
    assert_eq!(status(modify(&shared, "ReadAccess, WriteAccess")), 204);
    assert_eq!(write(&shared), 204);
    let shares = server.audit(&admin, "operation=Share");
    assert_eq!(shares.len(), 2);
    assert_eq!(
        shares[0]["Details"]["AccessMask"],
        "ReadAccess, WriteAccess"
    );
    assert_eq!(shares[0]["Details"]["PreviousAccessMask"], "ReadAccess");
    assert_eq!(shares[0]["RecordIds"], json!([shared]));
    assert_eq!(shares[0]["Details"]["PrincipalUpn"], "dee@contoso.test");
    let response = post(
        &server,
        &admin,
        "RevokeAccess",
        json!({"Target": {"@odata.id": format!("accounts({shared})")}, "Revokee": {"@odata.id": format!("systemusers({dee_id})")}}),
    );
    assert_eq!(status(response), 204);
    assert_eq!(read(&shared), 403, "revoked");
    assert_eq!(server.audit(&admin, "operation=Unshare").len(), 1);
    assert_eq!(
        odata_error(grant("DeleteAccess")).0,
        400,
        "only read and write are shared"
    );

    // A share ends with its record: one made again under the same id (an import of an old
    // export, an upsert) opens to nobody it was not shared with.
    assert_eq!(status(grant("ReadAccess")), 204);
    assert_eq!(read(&shared), 200);
    let response = send(
        client().delete(server.api(&format!("accounts({shared})"))),
        &admin,
        None,
    );
    assert_eq!(status(response), 204);
    let shares = get_json(
        &server.api(&format!(
            "principalobjectaccessset?$filter=objectid eq {shared}"
        )),
        &admin,
    );
    assert_eq!(shares["value"], json!([]), "{shares}");
    let ended = server.audit(&admin, &format!("operation=Unshare&recordId={shared}"));
    let ended: Vec<&Value> = ended
        .iter()
        .filter(|e| e["Details"]["CascadedFrom"].is_object())
        .collect();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(ended[0]["Details"]["PrincipalId"], dee_id.as_str());
    let response = post(
        &server,
        &admin,
        "accounts",
        json!({"accountid": shared, "name": "Made again"}),
    );
    assert_eq!(status(response), 204);
    assert_eq!(read(&shared), 403, "the old share is gone with its record");

    // And the shares with a user go with the user.
    let share_other = post(
        &server,
        &admin,
        "GrantAccess",
        json!({"Target": {"@odata.id": format!("accounts({other})")}, "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({dee_id})")}, "AccessMask": "ReadAccess"}}),
    );
    assert_eq!(status(share_other), 204);
    assert_eq!(read(&other), 200);
    // A share names its record's entity: another entity's record with the same id stays shut.
    let namesake = post(
        &server,
        &admin,
        "leads",
        json!({"leadid": other, "subject": "Same id"}),
    );
    assert_eq!(status(namesake), 204);
    let lead = send(
        client().get(server.api(&format!("leads({other})"))),
        &dee,
        None,
    );
    assert_eq!(status(lead), 403);
    let response = send(
        client().delete(server.api(&format!("systemusers({dee_id})"))),
        &admin,
        None,
    );
    assert_eq!(status(response), 204);
    let left = get_json(
        &server.api(&format!(
            "principalobjectaccessset?$filter=principalid eq {dee_id}"
        )),
        &admin,
    );
    assert_eq!(left["value"], json!([]), "{left}");
    let ended = server.audit(&admin, &format!("operation=Unshare&recordId={other}"));
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(
        ended[0]["Details"]["CascadedFrom"],
        json!({"Entity": "systemuser", "RecordId": dee_id})
    );
}

/// `Prefer: return=representation` on a create or an update answers with the record written
/// (Dataverse's "create/update with data returned", `$select` choosing its attributes). Showing
/// it is reading it: a caller who may write but not read a record is refused before anything is
/// written — else `PATCH {}` would read any record `GET` refuses — and the read is recorded as
/// a `Retrieve` with the write, under its correlation id.
#[test]
fn a_write_shows_the_record_written_only_to_who_may_read_it_and_records_the_read() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account"]);
    let representation = |builder: reqwest::blocking::RequestBuilder| {
        builder.header("Prefer", "return=representation")
    };

    let made = send(
        representation(client().post(server.api("accounts?$select=name"))),
        &admin,
        Some(json!({"name": "Shown", "revenue": 5})),
    );
    assert_eq!(made.status(), 201);
    let body: Value = made.json().unwrap();
    assert_eq!(body["name"], "Shown");
    assert!(body.get("revenue").is_none(), "{body}");
    let account = body["accountid"].as_str().unwrap().to_string();
    assert_eq!(body["@odata.etag"], "W/\"1\"");

    // A $select naming no attribute is refused before the create.
    let refused = send(
        representation(client().post(server.api("accounts?$select=nosuch"))),
        &admin,
        Some(json!({"name": "Never made"})),
    );
    assert_eq!(odata_error(refused).0, 400);
    assert_eq!(count(&server, &admin, "accounts"), 1);

    // Write and create without read: refused whole when the answer would show the record.
    let writer = server.user_holding(
        &admin,
        "writer@contoso.test",
        "Account writer",
        &["prvWriteaccount", "prvCreateaccount"],
    );
    let path = server.api(&format!("accounts({account})"));
    assert_eq!(odata_error(send(client().get(&path), &writer, None)).0, 403);
    let refused = send(
        representation(client().patch(&path)),
        &writer,
        Some(json!({"name": "Changed by the writer"})),
    );
    let (status, _, message) = odata_error(refused);
    assert_eq!(status, 403);
    assert!(message.contains("Read"), "{message}");
    let refused = send(
        representation(client().post(server.api("accounts"))),
        &writer,
        Some(json!({"name": "Made by the writer"})),
    );
    assert_eq!(odata_error(refused).0, 403);
    let record = get_json(&path, &admin);
    assert_eq!(record["name"], "Shown");
    assert_eq!(record["versionnumber"], 1);
    assert_eq!(count(&server, &admin, "accounts"), 1);
    // Without asking to see it, the writer writes.
    let written = send(
        client().patch(&path),
        &writer,
        Some(json!({"name": "Written"})),
    );
    assert_eq!(written.status(), 204);

    // The admin's update with the record returned: the update and the read, one request.
    let updated = send(
        representation(client().patch(format!("{path}?$select=name,revenue"))),
        &admin,
        Some(json!({"revenue": 7})),
    );
    assert_eq!(updated.status(), 200);
    let correlation = correlation_of(&updated);
    let body: Value = updated.json().unwrap();
    assert_eq!(
        (body["name"].clone(), body["revenue"].clone()),
        (json!("Written"), json!(7.0))
    );
    assert!(body.get("accountnumber").is_none(), "{body}");
    let events = events_of(&server, &admin, &correlation);
    let mut seen: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["Operation"].as_str().unwrap().to_string(),
                e["RecordIds"].clone(),
                e["Details"].clone(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen.len(), 2, "{events:#?}");
    assert_eq!(seen[0].0, "Retrieve");
    assert_eq!(seen[0].1, json!([account]));
    assert_eq!(seen[0].2["ReturnedBy"], "Update", "{events:#?}");
    assert_eq!(seen[1].0, "Update");
    assert_eq!(seen[1].1, json!([account]));

    // The refusals are recorded as the writer's.
    let denied = server.audit(&admin, "instance=main&status=Denied");
    let writers: Vec<&str> = denied
        .iter()
        .filter(|e| e["UserUpn"] == "writer@contoso.test")
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert!(
        writers.contains(&"Update") && writers.contains(&"Create"),
        "{writers:?}"
    );
}

#[test]
fn a_request_on_behalf_of_another_user_runs_with_what_both_may_do_and_names_both() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let whoami = |token: &str| {
        get_json(&server.api("WhoAmI"), token)["UserId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The service holds the delegate privilege and reads accounts and contacts; bo only reads
    // accounts; cy is a Basic User.
    let svc = server.user_holding(
        &admin,
        "svc@contoso.test",
        "Integration",
        &[
            "prvActOnBehalfOfAnotherUser",
            "prvReadaccount",
            "prvCreateaccount",
            "prvWriteaccount",
            "prvReadcontact",
        ],
    );
    let bo = server.user_holding(
        &admin,
        "bo@contoso.test",
        "Account reader",
        &["prvReadaccount"],
    );
    let cy = server.add_user(&admin, "cy@contoso.test", "cy-password-1", "Basic User");
    let (svc_id, bo_id) = (whoami(&svc), whoami(&bo));
    let acting =
        |method: reqwest::Method, path: &str, token: &str, user: &str, body: Option<Value>| {
            send(
                client()
                    .request(method, server.api(path))
                    .header("MSCRMCallerID", user),
                token,
                body,
            )
        };
    let only = |correlation: &str| {
        let events = events_of(&server, &admin, correlation);
        assert_eq!(events.len(), 1, "{events:?}");
        events[0].clone()
    };

    // What both may do runs as the user, and its event names the sender as CallerId.
    let listed = acting(reqwest::Method::GET, "accounts", &svc, &bo_id, None);
    assert_eq!(listed.status(), 200);
    let event = only(&correlation_of(&listed));
    assert_eq!(
        (&event["Operation"], &event["UserUpn"], &event["CallerId"]),
        (
            &json!("RetrieveMultiple"),
            &json!("bo@contoso.test"),
            &json!(svc_id)
        )
    );
    assert_eq!(
        get_json(&server.api("WhoAmI"), &svc)["UserId"],
        svc_id.as_str(),
        "without the header, the sender is themself"
    );

    // What only one of them may do is refused, and recorded under both.
    for (token, user, path, body) in [
        (
            &svc,
            &bo_id,
            "accounts",
            json!({"name": "bo may not create"}),
        ),
        (
            &admin,
            &bo_id,
            "accounts",
            json!({"name": "nor for the admin"}),
        ),
        (
            &svc,
            &cy,
            "tasks",
            json!({"subject": "svc may not create tasks"}),
        ),
    ] {
        let refused = acting(reqwest::Method::POST, path, token, user, Some(body));
        let correlation = correlation_of(&refused);
        assert_eq!(refused.status(), 403, "{path}");
        let event = only(&correlation);
        assert_eq!(event["ResultStatus"], "Denied");
        assert_eq!(event["UserId"], user.as_str());
    }
    let unread = acting(reqwest::Method::GET, "incidents", &svc, &cy, None);
    let (status, _, message) = odata_error(unread);
    assert_eq!(status, 403);
    assert!(
        message.contains("acting on behalf of 'cy@contoso.test'"),
        "{message}"
    );

    // A record made on behalf of cy is cy's: created by and owned by cy, the sender named.
    let made = acting(
        reqwest::Method::POST,
        "accounts",
        &admin,
        &cy,
        Some(json!({"name": "Made for cy"})),
    );
    assert_eq!(made.status(), 204);
    let created = only(&correlation_of(&made));
    let account = entity_id(&made);
    let record = get_json(&server.api(&format!("accounts({account})")), &admin);
    let admin_id = whoami(&admin);
    assert_eq!(record["_createdby_value"], cy.as_str());
    assert_eq!(record["_ownerid_value"], cy.as_str());
    // The record keeps its delegate, as Dataverse's do: created by cy, on cy's behalf by the
    // admin; changed on cy's behalf, then by cy alone, which clears the delegate of the change.
    assert_eq!(record["_createdonbehalfby_value"], admin_id.as_str());
    assert_eq!(record["_modifiedonbehalfby_value"], admin_id.as_str());
    assert_eq!(created["UserUpn"], "cy@contoso.test");
    assert_eq!(created["CallerId"], admin_id.as_str());
    let path = format!("accounts({account})");
    let changed = acting(
        reqwest::Method::PATCH,
        &path,
        &svc,
        &cy,
        Some(json!({"name": "Changed for cy"})),
    );
    assert_eq!(changed.status(), 204);
    let record = get_json(&server.api(&path), &admin);
    assert_eq!(record["_modifiedby_value"], cy.as_str());
    assert_eq!(record["_modifiedonbehalfby_value"], svc_id.as_str());
    assert_eq!(record["_createdonbehalfby_value"], admin_id.as_str());
    let update = only(&correlation_of(&changed));
    let changes = update["Changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .all(|c| c["Attribute"] != "_modifiedonbehalfby_value"
                && c["Attribute"] != "modifiedonbehalfby"),
        "kept by the platform, not a field change: {changes:?}"
    );
    let cy_token = server.token("cy@contoso.test", "cy-password-1");
    let own = send(
        client().patch(server.api(&path)),
        &cy_token,
        Some(json!({"name": "Changed by cy"})),
    );
    assert_eq!(own.status(), 204);
    let record = get_json(&server.api(&path), &admin);
    assert_eq!(record["_modifiedonbehalfby_value"], Value::Null);
    assert_eq!(record["_createdonbehalfby_value"], admin_id.as_str());
    // Written by the platform alone.
    let refused = send(
        client().patch(server.api(&path)),
        &admin,
        Some(json!({"createdonbehalfby@odata.bind": format!("/systemusers({cy})")})),
    );
    assert_eq!(odata_error(refused).0, 400);

    // Who may act for whom: the delegate privilege, an enabled user of the instance, and
    // never a change to who may do what.
    let plain = server.user_holding(
        &admin,
        "dee@contoso.test",
        "Reader only",
        &["prvReadaccount"],
    );
    for (token, user, status) in [
        (&plain, bo_id.as_str(), 403),
        (&svc, "7d2f0a6e-1b3c-4d5e-8f90-a1b2c3d4e5f6", 403),
        (&svc, "not-a-guid", 400),
    ] {
        let refused = acting(reqwest::Method::GET, "accounts", token, user, None);
        assert_eq!(refused.status().as_u16(), status, "{user}");
    }
    let twice = send(
        client()
            .get(server.api("accounts"))
            .header("MSCRMCallerID", &bo_id)
            .header("MSCRMCallerID", &cy),
        &svc,
        None,
    );
    assert_eq!(twice.status(), 400, "one user acted for, or none");
    let by_object = send(
        client()
            .get(server.api("accounts"))
            .header("CallerObjectId", &bo_id),
        &svc,
        None,
    );
    assert_eq!(by_object.status(), 400);
    let disabled = acting(
        reqwest::Method::PATCH,
        &format!("systemusers({cy})"),
        &admin,
        &cy,
        Some(json!({"isdisabled": true})),
    );
    let (status, _, message) = odata_error(disabled);
    assert_eq!(status, 403);
    assert!(
        message.contains("not changed on behalf of another user"),
        "{message}"
    );

    // A share opens a record to the user it names, not to whoever acts for them: the sender
    // must hold the privilege the share stands in for.
    let eve_token =
        server.user_holding(&admin, "eve@contoso.test", "Contacts", &["prvReadcontact"]);
    let eve = whoami(&eve_token);
    let granted = send(
        client().post(server.api("GrantAccess")),
        &admin,
        Some(
            json!({"Target": {"@odata.id": format!("accounts({account})")}, "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({eve})")}, "AccessMask": "ReadAccess"}}),
        ),
    );
    assert_eq!(granted.status(), 204);
    let sender = server.user_holding(
        &admin,
        "sender@contoso.test",
        "Contacts delegate",
        &["prvActOnBehalfOfAnotherUser", "prvReadcontact"],
    );
    let record = format!("accounts({account})");
    assert_eq!(
        send(client().get(server.api(&record)), &eve_token, None).status(),
        200
    );
    let shut = acting(reqwest::Method::GET, &record, &sender, &eve, None);
    assert_eq!(shut.status(), 403);
    let opened = acting(reqwest::Method::GET, &record, &svc, &eve, None);
    assert_eq!(
        opened.status(),
        200,
        "the sender reads accounts; the share opens it to eve"
    );

    // A batch sent on behalf of a user runs each of its requests on their behalf.
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "accounts?$select=name"},
        {"id": "2", "method": "POST", "url": "accounts", "body": {"name": "bo may not create"}},
    ]});
    let answered = send(
        client()
            .post(server.api("$batch"))
            .header("MSCRMCallerID", &bo_id),
        &svc,
        Some(batch),
    );
    assert_eq!(answered.status(), 200);
    let correlation = correlation_of(&answered);
    let answer: Value = answered.json().unwrap();
    assert_eq!(batch_statuses(&answer), [200, 403], "{answer:#}");
    let events = events_of(&server, &admin, &correlation);
    assert!(
        events.len() >= 2
            && events
                .iter()
                .all(|e| e["UserUpn"] == "bo@contoso.test" && e["CallerId"] == svc_id.as_str()),
        "{events:?}"
    );
}
