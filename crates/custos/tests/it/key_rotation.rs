//! Rotating the key that signs the audit log's checkpoints (SPEC §8): trust passes from the
//! old key to the new by a handover checkpoint both sign, so a verifier that pinned the first
//! key keeps verifying — online, offline, and after a rotation a crash interrupted.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

fn custos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("the custos binary runs")
}

fn key(server: &Server, token: &str) -> String {
    send(
        client().get(format!("{}/api/audit/key", server.base)),
        token,
        None,
    )
    .text()
    .unwrap()
    .trim()
    .to_string()
}

fn create_event(server: &Server, token: &str, name: &str) -> String {
    let account = create_account(server, token, name);
    server.audit(token, &format!("operation=Create&recordId={account}"))[0]["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rotate(server: &Server, token: &str) -> reqwest::blocking::Response {
    send(
        client().post(format!("{}/api/audit/key/rotate", server.base)),
        token,
        None,
    )
}

#[test]
fn a_pinned_first_key_verifies_across_rotations_restarts_and_an_interrupted_rotation() {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    let root = key(&server, &admin);
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.note");
    let kept = kept.to_str().unwrap();
    let first = create_event(&server, &admin, "Before");
    let proof = |server: &Server, id: &str, pinned: &str| {
        custos(&[
            "audit",
            "proof",
            "--url",
            &server.base,
            "--id",
            id,
            "--key",
            pinned,
            "--keep",
            kept,
        ])
    };
    let output = proof(&server, &first, &root);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(odata_error(rotate(&server, &bo)).0, 403);
    let response = rotate(&server, &admin);
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().unwrap();
    let second = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(second, root);
    assert_eq!(
        key(&server, &admin),
        second,
        "the new key signs from now on"
    );
    let chain = get_json(&format!("{}/api/audit/keys", server.base), &admin);
    assert_eq!(chain["value"][0]["key"], root.as_str());
    assert_eq!(chain["value"][1]["key"], second.as_str());
    assert_eq!(
        chain["value"][1]["sinceTreeSize"],
        rotated["handoverTreeSize"]
    );

    // The verifier that pinned the first key follows the handover, and the kept checkpoint
    // (signed by the first key) is extended by one the second key signed.
    let later = create_event(&server, &admin, "After");
    let output = proof(&server, &later, &root);
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(said.contains("handed over"), "{said}");
    assert!(said.contains("consistency proven"), "{said}");
    let output = proof(&server, &first, &root);
    assert_eq!(
        output.status.code(),
        Some(0),
        "old events still prove: {output:?}"
    );

    let events = server.audit(&admin, "operation=RotateCheckpointKey");
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["ResultStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Succeeded", "Denied"]);
    assert_eq!(events[0]["Details"]["OldKey"], root.as_str());
    assert_eq!(events[0]["Details"]["NewKey"], second.as_str());

    // Offline: the whole log verifies from the root key, and not from the second alone.
    let data = server.data_dir.clone();
    server.kill();
    let data_text = data.to_str().unwrap();
    let verify_with =
        |key: &str| custos(&["audit", "verify", "--data-dir", data_text, "--key", key]);
    let output = custos(&["audit", "verify", "--data-dir", data_text]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let output = verify_with(&second);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    // The key of another log under the same name: no checkpoint verifies, and verify says so
    // rather than that checkpoints.log was emptied. A key mistyped is the command's mistake
    // (exit 1), not evidence against the log.
    let name = root.split('+').next().unwrap();
    let stranger = custos_audit::CheckpointSigner::new([8; 32], name).verifier_key();
    let output = verify_with(&stranger);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("verifies with the key trusted") && !said.contains("emptied"),
        "{said}"
    );
    let mistyped = format!("{}x", root.trim());
    let output = verify_with(&mistyped);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a verifier key"));

    // A rotation a crash cut between the handover and the key file's replacement: the next
    // seed is in force, and the start finishes the rotation.
    let keys = data.join("keys");
    let signing = std::fs::read(keys.join("checkpoint.key")).unwrap();
    std::fs::rename(
        keys.join("checkpoint.key"),
        keys.join("checkpoint.key.next"),
    )
    .unwrap();
    std::fs::write(keys.join("checkpoint.key"), [7u8; 32]).unwrap();
    let server = Server::start_in(&data, &[]);
    let admin = server.admin();
    assert_eq!(key(&server, &admin), second);
    assert!(!keys.join("checkpoint.key.next").exists());
    assert_eq!(std::fs::read(keys.join("checkpoint.key")).unwrap(), signing);
    let last = create_event(&server, &admin, "After the crash");
    let output = proof(&server, &last, &root);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    drop(server);

    // A rotation cut before its handover: the stray next seed is discarded.
    std::fs::write(keys.join("checkpoint.key.next"), [8u8; 32]).unwrap();
    let server = Server::start_in(&data, &[]);
    let admin = server.admin();
    assert_eq!(key(&server, &admin), second);
    assert!(!keys.join("checkpoint.key.next").exists());
}
