//! The internal management tool (SPEC §2, §4, §11): a tenant admin lets a support engineer in;
//! `custos support …` records every use (`AccessInternalTool`) and the engineer's reads and
//! changes as the tool's (origin `SupportTool`, user type `DcAdmin`), backend commands as
//! `Backend`; revoking the access ends it.

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
    let grant = server.audit(&admin, "operation=GrantSupportAccess");
    assert_eq!(grant.len(), 1);
    assert_eq!(grant[0]["Origin"], "AdminCenter");
    assert_eq!(grant[0]["Category"], "accessed-admin-center");

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

    let uses = server.audit(&admin, "operation=AccessInternalTool");
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
        &format!("operation=RetrieveMultiple&user={ENGINEER}"),
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
    let token = server.token(ENGINEER, ENGINEER_PASSWORD);
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
        1
    );

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
    assert_eq!(
        support(&server, ENGINEER_PASSWORD, &["access"])
            .status
            .code(),
        Some(3)
    );
}
