//! The audit log's integrity checked from outside: `verify.py` verifies checkpoint signatures,
//! inclusion proofs of records rebuilt from their API JSON, and the consistency of two
//! checkpoints, with Python's hashlib and `cryptography` instead of the server's code.

use std::process::Command;

use serde_json::json;

use crate::common::*;

#[test]
fn an_independent_verifier_accepts_the_log() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let names = ["Zoë “quoted” \\ back\nslash", "Ålesund €", "plain"];
    for (i, name) in names.iter().enumerate() {
        let revenue = [1000.0, 1234.5, 0.000001][i];
        let body = json!({"name": name, "revenue": revenue, "numberofemployees": 9_007_199_254_740_993i64});
        let response = send(client().post(server.api("accounts")), &admin, Some(body));
        assert_eq!(response.status(), 204);
    }
    let earlier = client()
        .get(format!("{}/api/audit/checkpoint", server.base))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(earlier.status(), 200);
    let earlier = earlier.text().unwrap();
    assert!(
        earlier.contains("\n\n\u{2014} localhost/custos/"),
        "a signed note: {earlier}"
    );
    let earlier_file = server.data_dir.with_file_name("earlier-checkpoint.txt");
    std::fs::write(&earlier_file, &earlier).unwrap();
    for name in ["after one", "after two"] {
        send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name})),
        );
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&server.base)
        .arg(&admin)
        .arg(&earlier_file)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "verify.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("verified "), "{stdout}");
}

#[test]
fn integrity_routes_need_the_audit_reader_role_and_check_their_input() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    for path in [
        "checkpoint",
        "key",
        "proofs/inclusion?id=00000000-0000-0000-0000-000000000000",
        "proofs/consistency?from=1&to=2",
    ] {
        let url = format!("{}/api/audit/{path}", server.base);
        assert_eq!(
            odata_error(client().get(&url).bearer_auth(&bo).send().unwrap()).0,
            403,
            "{path}"
        );
        assert_eq!(
            odata_error(client().get(&url).send().unwrap()).0,
            401,
            "{path}"
        );
    }
    for (path, status) in [
        ("proofs/inclusion", 400),
        ("proofs/inclusion?id=nope", 400),
        (
            "proofs/inclusion?id=00000000-0000-0000-0000-000000000000",
            404,
        ),
        ("proofs/consistency?from=0&to=1", 400),
        ("proofs/consistency?from=2&to=1", 400),
        ("proofs/consistency?from=1&to=99999", 400),
        ("proofs/consistency?from=x&to=1", 400),
        ("checkpoint?treeSize=99999", 404),
    ] {
        let url = format!("{}/api/audit/{path}", server.base);
        assert_eq!(
            odata_error(client().get(&url).bearer_auth(&admin).send().unwrap()).0,
            status,
            "{path}"
        );
    }
}

#[test]
fn the_server_verifies_its_own_log_on_request() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "aud@contoso.test", "aud-password-1", "Audit Reader");
    let auditor = server.token("aud@contoso.test", "aud-password-1");
    let url = format!("{}/api/audit/verify", server.base);
    assert_eq!(get_json(&url, &auditor)["status"], "never");
    assert_eq!(
        odata_error(send(client().post(&url), &auditor, None)).0,
        403,
        "an Audit Reader only reads it"
    );
    for name in ["one", "two"] {
        send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name})),
        );
    }
    let started = send(client().post(&url), &admin, None);
    assert_eq!(started.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let last = get_json(&url, &auditor);
        if last["status"] != "running" {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verification ran too long"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["ok"], true, "{done}");
    assert!(done["events"].as_u64().unwrap() >= 3, "{done}");
    assert_eq!(done["problems"], json!([]));
    let asked = server.audit(&admin, "operation=VerifyAuditLog&status=Succeeded");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["UserUpn"], "admin");
}
