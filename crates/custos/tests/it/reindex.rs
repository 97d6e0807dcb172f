//! `custos audit reindex`: refused while a server holds the log, rebuilds the derived files of
//! a stopped one, leaves every search answering as before, and is itself recorded.

use std::process::Command;

use serde_json::json;

use crate::common::*;

fn reindex(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "reindex", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn reindex_rebuilds_a_stopped_log_and_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    for name in ["one", "two", "three"] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name})),
        );
        assert_eq!(response.status(), 204);
    }
    let before = server.audit(&admin, "operation=Create&entity=account");
    assert_eq!(before.len(), 3);

    let refused = reindex(&dir);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "refused while the server runs"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another process"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    server.kill();
    let done = reindex(&dir);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.starts_with("reindexed "), "{stdout}");

    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    let after = server.audit(&admin, "operation=Create&entity=account");
    assert_eq!(after, before, "every search answers as before");
    let commands = server.audit(&admin, "operation=BackendCommand");
    assert_eq!(commands.len(), 1);
    let command = &commands[0];
    assert_eq!(command["Origin"], "Backend");
    assert_eq!(command["UserType"], 4);
    assert_eq!(command["RecordType"], "CustosSupport");
    assert_eq!(command["Category"], "accessed-internal-management-tool");
    assert!(
        command["Details"]["Command"] == "audit reindex",
        "{command}"
    );
}
