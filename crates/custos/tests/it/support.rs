//! The internal management tool (SPEC §2, §4, §11): a tenant admin lets a support engineer in
//! and opens their access to an instance per ticket (Customer Lockbox style); `custos support …`
//! records every use (`AccessInternalTool`) and the engineer's reads and changes as the tool's
//! (origin `SupportTool`, user type `DcAdmin`), backend commands as `Backend`; an engineer never
//! changes roles or audit settings nor reads the log; ending the grant or revoking the engineer
//! ends the access, and the users they created go with them.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::*;

const ENGINEER: &str = "eng@support.custos.test";
const ENGINEER_PASSWORD: &str = "engineer-password-1";

fn support(server: &Server, password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "support",
            "--url",
            &server.base,
            "--user",
            ENGINEER,
            "--ticket",
            "CASE-1042",
        ])
        .args([
            "--reason",
            "customer reports a wrong phone number",
            "--json",
        ])
        .args(args)
        .env("CUSTOS_SUPPORT_PASSWORD", password)
        .output()
        .expect("the custos binary runs")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "custos support failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

#[test]
fn a_support_engineer_works_only_through_the_tool_and_every_use_is_recorded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Contoso", "telephone1": "000"})),
    ));

    // Before the tenant lets anyone in, nobody from support gets in.
    assert_eq!(
        support(&server, ENGINEER_PASSWORD, &["access"])
            .status
            .code(),
        Some(3)
    );
    let granted = send(
        client().post(format!("{}/api/admin/support/engineers", server.base)),
        &admin,
        Some(
            json!({"upn": ENGINEER, "password": ENGINEER_PASSWORD, "displayName": "Support engineer"}),
        ),
    );
    assert_eq!(granted.status(), 201);
    let engineer: Value = granted.json().unwrap();
    let engineer_id = engineer["id"].as_str().unwrap().to_string();
    let grant = server.audit(&admin, "operation=GrantSupportAccess");
    assert_eq!(grant.len(), 1);
    assert_eq!(grant[0]["Origin"], "AdminCenter");
    assert_eq!(grant[0]["Category"], "accessed-admin-center");

    // Let in, the engineer still reaches no instance until the tenant opens access for a
    // ticket; each refusal is recorded.
    assert_eq!(
        support(&server, ENGINEER_PASSWORD, &["list", "main", "accounts"])
            .status
            .code(),
        Some(3)
    );
    let token = server.token(ENGINEER, ENGINEER_PASSWORD);
    let refused = send(client().get(server.api("accounts")), &token, None);
    let (status, _, message) = odata_error(refused);
    assert_eq!(status, 403);
    assert!(
        message.contains("no open access to instance 'main'"),
        "{message}"
    );
    let opened = send(
        client().post(format!("{}/api/admin/support/grants", server.base)),
        &admin,
        Some(
            json!({"engineerId": engineer_id, "ticket": "CASE-1042", "instance": "main", "hours": 4}),
        ),
    );
    assert_eq!(opened.status(), 201);
    let opened: Value = opened.json().unwrap();
    assert_eq!(opened["status"], "open");
    let approval = server.audit(&admin, "operation=ApproveSupportAccess");
    assert_eq!(approval.len(), 1);
    assert_eq!(approval[0]["Details"]["ticket"], "CASE-1042");
    assert_eq!(approval[0]["Category"], "accessed-admin-center");

    let listed = json_of(&support(
        &server,
        ENGINEER_PASSWORD,
        &["list", "main", "accounts", "--filter", "name eq 'Contoso'"],
    ));
    assert_eq!(listed["value"][0]["accountid"], account);
    let updated = json_of(&support(
        &server,
        ENGINEER_PASSWORD,
        &[
            "update",
            "main",
            "accounts",
            &account,
            "--data",
            r#"{"telephone1": "555-0100"}"#,
        ],
    ));
    assert_eq!(updated["telephone1"], "555-0100");
    let status = json_of(&support(
        &server,
        ENGINEER_PASSWORD,
        &["backend", "log-status"],
    ));
    assert!(status["result"]["events"].as_u64().unwrap() > 0);
    json_of(&support(
        &server,
        ENGINEER_PASSWORD,
        &["backend", "refresh-instance", "--instance", "main"],
    ));

    let uses = server.audit(&admin, "operation=AccessInternalTool&status=Succeeded");
    assert_eq!(uses.len(), 4, "every use of the tool, recorded first");
    for event in &uses {
        assert_eq!(event["Origin"], "SupportTool");
        assert_eq!(event["UserType"], 3);
        assert_eq!(event["UserUpn"], ENGINEER);
        assert_eq!(event["Category"], "accessed-internal-management-tool");
        assert_eq!(event["Details"]["Ticket"], "CASE-1042");
        assert!(
            event["UserAgent"]
                .as_str()
                .unwrap()
                .starts_with("custos-support/")
        );
    }
    let read = server.audit(
        &admin,
        &format!("operation=RetrieveMultiple&user={ENGINEER}&status=Succeeded"),
    );
    assert_eq!(read.len(), 1);
    assert_eq!(read[0]["Origin"], "SupportTool");
    assert_eq!(read[0]["RecordIds"], json!([account]));
    let change = server.audit(&admin, &format!("operation=Update&recordId={account}"));
    assert_eq!(change.len(), 1);
    assert_eq!(change[0]["Origin"], "SupportTool");
    assert_eq!(change[0]["UserType"], 3);
    assert_eq!(
        change[0]["Changes"],
        json!([{"Attribute": "telephone1", "Old": "000", "New": "555-0100"}])
    );
    let commands = server.audit(&admin, "operation=BackendCommand");
    assert_eq!(commands.len(), 2);
    for command in &commands {
        assert_eq!(command["Origin"], "Backend");
        assert_eq!(command["UserUpn"], ENGINEER);
        assert_eq!(command["Category"], "accessed-internal-management-tool");
    }

    // Refusals: a bad command is refused and recorded; the engineer is no auditor; a wrong
    // password is a refusal (exit 3); a basic user is no engineer.
    let bad = support(&server, ENGINEER_PASSWORD, &["backend", "format-disk"]);
    assert_eq!(bad.status.code(), Some(3));
    assert_eq!(
        server
            .audit(&admin, "operation=BackendCommand&status=Failed")
            .len(),
        1
    );
    let search = send(
        client().get(format!("{}/api/audit/records", server.base)),
        &token,
        None,
    );
    assert_eq!(
        search.status(),
        403,
        "support engineers do not read the audit log"
    );
    assert_eq!(
        support(&server, "wrong-password-1", &["access"])
            .status
            .code(),
        Some(3)
    );
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let refused = send(
        client().post(format!("{}/api/support/access", server.base)),
        &bo,
        Some(json!({"ticket": "x"})),
    );
    assert_eq!(refused.status(), 403);
    assert_eq!(
        server
            .audit(&admin, "operation=AccessInternalTool&status=Denied")
            .len(),
        2,
        "the engineer before the grant, the basic user"
    );

    // Another ticket or another instance is not open.
    let other_ticket = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "support",
            "--url",
            &server.base,
            "--user",
            ENGINEER,
            "--ticket",
            "CASE-9",
        ])
        .args(["access"])
        .env("CUSTOS_SUPPORT_PASSWORD", ENGINEER_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(other_ticket.status.code(), Some(3));

    // The engineer never changes roles or audit settings, nor is given an audit role.
    let reader = server.audit(&admin, "operation=AccessInternalTool").len();
    let roles = get_json(&server.api("roles?$filter=name eq 'Audit Reader'"), &admin);
    let audit_reader = roles["value"][0]["roleid"].as_str().unwrap().to_string();
    let escalate = send(
        client().post(server.api(&format!(
            "systemusers({engineer_id})/systemuserroles_association/$ref"
        ))),
        &token,
        Some(json!({"@odata.id": server.api(&format!("roles({audit_reader})"))})),
    );
    assert_eq!(escalate.status(), 403);
    let given = send(
        client().post(server.api(&format!(
            "systemusers({engineer_id})/systemuserroles_association/$ref"
        ))),
        &admin,
        Some(json!({"@odata.id": server.api(&format!("roles({audit_reader})"))})),
    );
    assert_eq!(given.status(), 403, "support engineers hold no roles");
    let org = server.organization_id(&admin);
    let off = send(
        client().patch(server.api(&format!("organizations({org})"))),
        &token,
        Some(json!({"isauditenabled": false})),
    );
    assert_eq!(off.status(), 403);
    let flags = send(
        client().patch(server.api("EntityDefinitions(LogicalName='account')")),
        &token,
        Some(json!({"IsAuditEnabled": {"Value": false}})),
    );
    assert_eq!(flags.status(), 403);
    let denied = server.audit(&admin, &format!("user={ENGINEER}&status=Denied"));
    assert!(denied.len() >= 4, "{denied:#?}");
    assert_eq!(
        server.audit(&admin, "operation=AccessInternalTool").len(),
        reader,
        "nothing of that went through the tool's door"
    );

    // A user the engineer creates is listed with them, and goes with them.
    let created = send(
        client().post(server.api("systemusers")),
        &token,
        Some(json!({"domainname": "temp@support.custos.test", "password": "temp-password-1"})),
    );
    assert_eq!(created.status(), 204);
    let listed = get_json(
        &format!("{}/api/admin/support/engineers", server.base),
        &admin,
    );
    assert_eq!(
        listed["value"][0]["created"][0]["upn"],
        "temp@support.custos.test"
    );
    let temp = server.token("temp@support.custos.test", "temp-password-1");

    // Revoked, the engineer is out at once.
    let revoked = send(
        client().delete(format!(
            "{}/api/admin/support/engineers/{}",
            server.base,
            engineer["id"].as_str().unwrap()
        )),
        &admin,
        None,
    );
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        server.audit(&admin, "operation=RevokeSupportAccess").len(),
        1
    );
    let after = send(client().get(server.api("accounts")), &token, None);
    assert_eq!(after.status(), 401, "the engineer's token is dead");
    let after = send(client().get(server.api("WhoAmI")), &temp, None);
    assert_eq!(
        after.status(),
        401,
        "the user they created is disabled with them"
    );
    let grants = get_json(&format!("{}/api/admin/support/grants", server.base), &admin);
    assert_eq!(grants["value"][0]["status"], "ended");
    assert_eq!(
        support(&server, ENGINEER_PASSWORD, &["access"])
            .status
            .code(),
        Some(3)
    );
}
