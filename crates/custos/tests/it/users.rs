//! Who may grant what, and a user's lifecycle (issue 10 §1, §3): no grant above the grantor's
//! own privileges, tenant-wide audit roles only from a global admin; disabling, deleting and
//! password changes end sessions at once; sign-in names are normalised and no name may pass for
//! another.

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

fn role_id(server: &Server, token: &str, name: &str) -> String {
    get_json(
        &server.api(&format!("roles?$filter=name eq '{name}'")),
        token,
    )["value"][0]["roleid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assign(server: &Server, token: &str, user: &str, role: &str) -> u16 {
    post(
        server,
        token,
        &format!("systemusers({user})/systemuserroles_association/$ref"),
        json!({"@odata.id": server.api(&format!("roles({role})"))}),
    )
    .status()
    .as_u16()
}

fn create_user(server: &Server, token: &str, upn: &str, password: &str) -> String {
    let response = post(
        server,
        token,
        "systemusers",
        json!({"domainname": upn, "password": password}),
    );
    assert_eq!(response.status(), 204, "create {upn}");
    entity_id(&response)
}

#[test]
fn nobody_grants_more_than_they_hold() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let sys_admin = server.add_user(
        &admin,
        "sa@contoso.test",
        "sa-password-1",
        "System Administrator",
    );
    let sa = server.token("sa@contoso.test", "sa-password-1");
    let audit_reader = role_id(&server, &admin, "Audit Reader");
    let audit_manager = role_id(&server, &admin, "Audit Manager");
    let system_administrator = role_id(&server, &admin, "System Administrator");
    let basic_user = role_id(&server, &admin, "Basic User");

    // A System Administrator of the instance cannot make themselves (or anyone) an auditor.
    for role in [&audit_reader, &audit_manager] {
        assert_eq!(assign(&server, &sa, &sys_admin, role), 403);
    }
    let search = send(
        client().get(format!("{}/api/audit/records", server.base)),
        &sa,
        None,
    );
    assert_eq!(search.status(), 403, "still no audit log for them");

    // A custom role with user management only cannot hand out what it does not hold.
    let manager_role = entity_id(&post(
        &server,
        &admin,
        "roles",
        json!({"name": "User manager"}),
    ));
    assert_eq!(
        post(
            &server,
            &admin,
            &format!("roles({manager_role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvManageUsers"}, {"PrivilegeName": "prvReadrole"}, {"PrivilegeName": "prvReadsystemuser"}]}),
        )
        .status(),
        200
    );
    let um = create_user(&server, &admin, "um@contoso.test", "um-password-1");
    assert_eq!(assign(&server, &admin, &um, &manager_role), 204);
    let um_token = server.token("um@contoso.test", "um-password-1");
    for role in [&system_administrator, &basic_user, &audit_reader] {
        assert_eq!(assign(&server, &um_token, &um, role), 403, "{role}");
    }
    // Nor widen its own role…
    let widened = post(
        &server,
        &um_token,
        &format!("roles({manager_role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"),
        json!({"Privileges": [{"PrivilegeName": "prvDeleteaccount"}]}),
    );
    assert_eq!(widened.status(), 403);
    // …nor join a team that holds more.
    let team = entity_id(&post(&server, &admin, "teams", json!({"name": "Admins"})));
    assert_eq!(
        post(
            &server,
            &admin,
            &format!("teams({team})/teamroles_association/$ref"),
            json!({"@odata.id": server.api(&format!("roles({system_administrator})"))}),
        )
        .status(),
        204
    );
    let joined = post(
        &server,
        &um_token,
        &format!("teams({team})/teammembership_association/$ref"),
        json!({"@odata.id": server.api(&format!("systemusers({um})"))}),
    );
    assert_eq!(joined.status(), 403);
    // What it holds, it may grant.
    let cy = create_user(&server, &admin, "cy@contoso.test", "cy-password-1");
    assert_eq!(assign(&server, &um_token, &cy, &manager_role), 204);

    // The instance's System Administrator grants Basic User; the global admin grants the
    // audit roles.
    assert_eq!(assign(&server, &sa, &cy, &basic_user), 204);
    assert_eq!(assign(&server, &admin, &cy, &audit_reader), 204);

    // Every refused grant is a Denied event naming who tried.
    let denied = server.audit(&admin, "status=Denied");
    let grants: Vec<&Value> = denied
        .iter()
        .filter(|e| {
            matches!(
                e["Operation"].as_str(),
                Some("AssignRole" | "AddTeamMember" | "AddPrivilegesRole")
            )
        })
        .collect();
    assert_eq!(grants.len(), 7, "{denied:#?}");
    assert!(grants.iter().all(|e| e["ErrorCode"] == "Forbidden"));
    assert_eq!(
        grants
            .iter()
            .filter(|e| e["UserUpn"] == "sa@contoso.test")
            .count(),
        2
    );
}

#[test]
fn disabled_deleted_and_reset_users_lose_their_sessions_at_once() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let bo = server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo_token = server.token("bo@contoso.test", "bo-password-1");
    let who = |token: &str| {
        send(client().get(server.api("WhoAmI")), token, None)
            .status()
            .as_u16()
    };
    assert_eq!(who(&bo_token), 200);

    // Disabled: the token in hand and a new sign-in are refused.
    let patch = |token: &str, body: Value| {
        send(
            client().patch(server.api(&format!("systemusers({bo})"))),
            token,
            Some(body),
        )
        .status()
        .as_u16()
    };
    assert_eq!(patch(&admin, json!({"isdisabled": true})), 204);
    assert_eq!(who(&bo_token), 401);
    let sign_in = |password: &str| {
        client()
            .post(format!("{}/oauth2/token", server.base))
            .form(&[
                ("grant_type", "password"),
                ("username", "bo@contoso.test"),
                ("password", password),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(sign_in("bo-password-1"), 400);
    let disabled = server.audit(&admin, "operation=DisableUser");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["RecordIds"], json!([bo]));
    assert_eq!(patch(&admin, json!({"isdisabled": false})), 204);
    assert_eq!(server.audit(&admin, "operation=EnableUser").len(), 1);
    let bo_token = server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(patch(&admin, json!({"domainname": "admin2"})), 400);

    // A password reset by an admin ends every session; the new password works.
    let reset = post(
        &server,
        &admin,
        &format!("systemusers({bo})/Microsoft.Dynamics.CRM.ResetPassword"),
        json!({"NewPassword": "bo-password-2"}),
    );
    assert_eq!(reset.status(), 204);
    assert_eq!(who(&bo_token), 401);
    assert_eq!(sign_in("bo-password-1"), 400);
    let bo_token = server.token("bo@contoso.test", "bo-password-2");
    let resets = server.audit(&admin, "operation=ResetPassword");
    assert_eq!(resets.len(), 1);
    assert!(
        !resets[0].to_string().contains("bo-password-2"),
        "the password is never recorded"
    );

    // The user changes their own password: a wrong current one is refused; then every
    // session ends, this one too.
    let change = |current: &str| {
        send(
            client().post(format!("{}/api/me/changePassword", server.base)),
            &bo_token,
            Some(json!({"currentPassword": current, "newPassword": "bo-password-3"})),
        )
        .status()
        .as_u16()
    };
    assert_eq!(change("wrong-password"), 403);
    assert_eq!(change("bo-password-2"), 204);
    assert_eq!(who(&bo_token), 401);
    let bo_token = server.token("bo@contoso.test", "bo-password-3");
    assert_eq!(server.audit(&admin, "operation=ChangePassword").len(), 2);

    // Deleted: gone, and recorded with what the record held.
    let deleted = send(
        client().delete(server.api(&format!("systemusers({bo})"))),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert_eq!(who(&bo_token), 401);
    assert_eq!(sign_in("bo-password-3"), 400);
    let gone = server.audit(&admin, "operation=DeleteUser");
    assert_eq!(gone.len(), 1);
    assert!(gone[0]["Changes"].to_string().contains("bo@contoso.test"));
}

#[test]
fn an_instance_admin_cannot_take_over_those_above_them() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(
        &admin,
        "sa@contoso.test",
        "sa-password-1",
        "System Administrator",
    );
    let sa = server.token("sa@contoso.test", "sa-password-1");
    let auditor = server.add_user(&admin, "au@contoso.test", "au-password-1", "Basic User");
    let reader = role_id(&server, &admin, "Audit Reader");
    assert_eq!(assign(&server, &admin, &auditor, &reader), 204);
    let global = get_json(&server.api("WhoAmI"), &admin)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    for target in [&global, &auditor] {
        let reset = post(
            &server,
            &sa,
            &format!("systemusers({target})/Microsoft.Dynamics.CRM.ResetPassword"),
            json!({"NewPassword": "taken-over-1"}),
        );
        assert_eq!(reset.status(), 403, "{target}");
        let disable = send(
            client().patch(server.api(&format!("systemusers({target})"))),
            &sa,
            Some(json!({"isdisabled": true})),
        );
        assert_eq!(disable.status(), 403, "{target}");
    }
    server.token("au@contoso.test", "au-password-1");
    assert_eq!(
        server
            .audit(&admin, "operation=ResetPassword&status=Denied")
            .len(),
        2
    );
}

#[test]
fn sign_in_names_are_normalised_and_none_passes_for_another() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let create = |upn: &str| {
        post(
            &server,
            &admin,
            "systemusers",
            json!({"domainname": upn, "password": "some-password-1"}),
        )
    };
    for (upn, status) in [
        ("\u{0430}dmin", 409), // a Cyrillic а
        ("ADMIN", 409),
        ("adrnin", 409),      // rn looks like m
        ("an\u{200b}n", 400), // a zero-width space
        ("ann\u{202e}", 400), // a bidirectional override
        (" ann", 400),
        ("ann\n", 400),
    ] {
        let (got, _, message) = odata_error(create(upn));
        assert_eq!(got, status, "{upn:?}: {message}");
    }
    // Full-width letters are stored in their compatibility form, and a name typed either way
    // signs in.
    assert_eq!(create("ｃｙ@contoso.test").status(), 204);
    server.token("cy@contoso.test", "some-password-1");
    server.token("ｃｙ@contoso.test", "some-password-1");
    // Case is no part of a name, for letters beyond ASCII too.
    assert_eq!(create("jürgen@contoso.test").status(), 204);
    server.token("JÜRGEN@contoso.test", "some-password-1");
    let (got, _, message) = odata_error(create("JÜRGEN@CONTOSO.TEST"));
    assert_eq!(got, 409, "{message}");
}
