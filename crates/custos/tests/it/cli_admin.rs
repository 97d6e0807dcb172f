//! Administration from the command line (SPEC §11): `custos init`, users, teams, roles,
//! instances, solutions, backups and restores — each through the API, so each is recorded as
//! the console's would be, with the command line's user agent.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::*;

/// Runs `custos ARGS --url … --json`, the options last as README.md writes them.
fn custos(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .args(["--url", &server.base, "--json"])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .env("CUSTOS_NEW_USER_PASSWORD", "ann-password-1")
        .output()
        .expect("the custos binary runs")
}

fn ok(server: &Server, args: &[&str]) -> Value {
    let output = custos(server, args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn init_prepares_a_data_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = || {
        Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(["init", "--data-dir"])
            .arg(&data)
            .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap()
    };
    let first = init();
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("initialised"));
    let again = init();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("already initialised"));
    let server = Server::start_in(&data, &[]);
    let admin = server.admin();
    assert_eq!(
        server.organization_id(&admin).len(),
        36,
        "instance main is there"
    );
}

#[test]
fn an_empty_list_says_so() {
    let server = Server::start(&[]);
    let listed = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["solution", "list", "--url", &server.base])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "(none)\n");
}

#[test]
fn users_teams_and_roles_from_the_command_line() {
    let server = Server::start(&[]);
    let created = ok(
        &server,
        &["user", "create", "ann@contoso.test", "--role", "Basic User"],
    );
    assert_eq!(created["domainname"], "ann@contoso.test");
    let ann = server.token("ann@contoso.test", "ann-password-1");
    create_account(&server, &ann, "Ann's account");

    ok(&server, &["team", "create", "Sales"]);
    ok(
        &server,
        &["team", "add-member", "Sales", "ann@contoso.test"],
    );
    ok(&server, &["role", "create", "Exporters"]);
    let privileges = ok(
        &server,
        &[
            "role",
            "grant",
            "Exporters",
            "prvReadaccount",
            "prvExportaccount",
        ],
    );
    let names: Vec<&str> = privileges["RolePrivileges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PrivilegeName"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{privileges}");
    ok(&server, &["team", "add-role", "Sales", "Exporters"]);
    ok(
        &server,
        &["user", "remove-role", "ann@contoso.test", "Basic User"],
    );
    // Ann now reads accounts only through her team's role, and can no longer create them.
    assert_eq!(count(&server, &ann, "accounts"), 1);
    let refused = send(
        client().post(server.api("accounts")),
        &ann,
        Some(json!({"name": "Not allowed"})),
    );
    assert_eq!(refused.status(), 403);
    let users = ok(&server, &["user", "list"]);
    assert_eq!(users["value"].as_array().unwrap().len(), 2);
    // The connection's options may come before the subcommand as well as after it; without a
    // password the command says which option it needs and does not run.
    let before = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["user", "--url", &server.base, "--json", "list"])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(before.status.success(), "{before:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&before.stdout).unwrap(),
        users
    );
    let unsigned = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["user", "list", "--url", &server.base])
        .env_remove("CUSTOS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(unsigned.status.code(), Some(1), "{unsigned:?}");
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("--password or CUSTOS_PASSWORD"));

    let missing = custos(
        &server,
        &["user", "add-role", "nobody@contoso.test", "Basic User"],
    );
    assert_eq!(
        missing.status.code(),
        Some(1),
        "no such user: could not run"
    );

    let admin = server.admin();
    for operation in [
        "CreateUser",
        "AssignRole",
        "AddTeamMember",
        "AddPrivilegesRole",
        "RemoveRole",
    ] {
        let events = server.audit(&admin, &format!("operation={operation}"));
        assert!(
            events
                .iter()
                .any(|e| e["UserAgent"].as_str().unwrap().starts_with("custos-cli/")),
            "{operation} from the command line"
        );
    }

    // A user's lifecycle: disabled and enabled, a new password, then deleted.
    ok(&server, &["user", "disable", "ann@contoso.test"]);
    assert_eq!(
        send(client().get(server.api("WhoAmI")), &ann, None).status(),
        401
    );
    ok(&server, &["user", "enable", "ann@contoso.test"]);
    ok(&server, &["user", "reset-password", "ann@contoso.test"]);
    let ann = server.token("ann@contoso.test", "ann-password-1");
    let unconfirmed = custos(
        &server,
        &["user", "delete", "ann@contoso.test", "--confirm", "ann"],
    );
    assert_eq!(unconfirmed.status.code(), Some(1));
    ok(
        &server,
        &[
            "user",
            "delete",
            "ann@contoso.test",
            "--confirm",
            "ann@contoso.test",
        ],
    );
    assert_eq!(
        send(client().get(server.api("WhoAmI")), &ann, None).status(),
        401
    );
    for operation in ["DisableUser", "EnableUser", "ResetPassword", "DeleteUser"] {
        assert_eq!(
            server
                .audit(&admin, &format!("operation={operation}"))
                .len(),
            1,
            "{operation}"
        );
    }
}

#[test]
fn instances_backups_and_solutions_from_the_command_line() {
    let server = Server::start(&[]);
    let created = ok(&server, &["instance", "create", "sales"]);
    assert_eq!(created["state"], "trial");
    let converted = ok(&server, &["instance", "convert", "sales"]);
    assert_eq!(converted["state"], "paid");

    let admin = server.admin();
    let url = format!("{}/sales/api/data/v9.2/accounts", server.base);
    let response = send(client().post(&url), &admin, Some(json!({"name": "Kept"})));
    assert_eq!(response.status(), 204);
    let backup = ok(&server, &["backup", "sales", "--label", "before"]);
    let backup_id = backup["id"].as_str().unwrap().to_string();
    let listed = ok(&server, &["backup", "sales", "--list"]);
    assert!(listed.to_string().contains(&backup_id));
    let response = send(client().post(&url), &admin, Some(json!({"name": "Undone"})));
    assert_eq!(response.status(), 204);
    ok(&server, &["restore", "sales", "--backup", &backup_id]);
    let names: Vec<String> = get_json(&url, &admin)["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Kept"]);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("solution.json");
    let solution = json!({
        "UniqueName": "fabrikam_base",
        "Version": "1.0.0.0",
        "Publisher": {"Prefix": "fabrikam"},
        "Entities": [{"SchemaName": "fabrikam_Site", "Attributes": [
            {"AttributeType": "String", "SchemaName": "fabrikam_name", "IsPrimaryName": true}
        ]}]
    });
    std::fs::write(&file, solution.to_string()).unwrap();
    ok(
        &server,
        &[
            "solution",
            "--instance",
            "sales",
            "import",
            file.to_str().unwrap(),
        ],
    );
    let sites = format!("{}/sales/api/data/v9.2/fabrikam_sites", server.base);
    assert_eq!(send(client().get(&sites), &admin, None).status(), 200);
    ok(
        &server,
        &["solution", "--instance", "sales", "remove", "fabrikam_base"],
    );
    assert_eq!(send(client().get(&sites), &admin, None).status(), 404);

    let refused = custos(
        &server,
        &["instance", "delete", "sales", "--confirm", "main"],
    );
    assert_eq!(refused.status.code(), Some(1));
    ok(
        &server,
        &["instance", "delete", "sales", "--confirm", "sales"],
    );
    let instances = ok(&server, &["instance", "list"]);
    assert_eq!(instances["value"].as_array().unwrap().len(), 1);
    let not_there = custos(&server, &["instance", "convert", "sales"]);
    assert_eq!(not_there.status.code(), Some(3), "the server refused");

    for operation in [
        "CreateInstance",
        "ConvertTrialToPaid",
        "BackupInstance",
        "RestoreInstance",
        "ImportSolution",
        "RemoveSolution",
        "DeleteInstance",
    ] {
        let events = server.audit(&admin, &format!("operation={operation}&status=Succeeded"));
        let from_cli = events
            .iter()
            .filter(|e| e["UserAgent"].as_str().unwrap().starts_with("custos-cli/"))
            .count();
        assert_eq!(from_cli, 1, "{operation}");
    }
}
