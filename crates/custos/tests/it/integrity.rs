//! The audit log's integrity checked from outside: `verify.py` verifies checkpoint signatures,
//! inclusion proofs of records rebuilt from their API JSON, and the consistency of two
//! checkpoints, with Python's hashlib and `cryptography` instead of the server's code; and
//! `verify_go` does the same with the Go checksum database's own `note` and `tlog` packages.

use std::process::Command;

use base64::Engine;
use serde_json::json;

use crate::common::*;

#[test]
fn an_independent_verifier_accepts_the_log() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_population(&admin);
    let names = ["Zoë “quoted” \\ back\nslash", "Ålesund €", "plain"];
    for (i, name) in names.iter().enumerate() {
        let revenue = [1000.0, 1234.5, 0.000001][i];
        let body =
            json!({"name": name, "revenue": revenue, "new_population": 9_007_199_254_740_993i64});
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

/// The text of `GET /api/audit/{path}` as `token`.
fn audit_text(server: &Server, token: &str, path: &str) -> String {
    let response = client()
        .get(format!("{}/api/audit/{path}", server.base))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().unwrap()
}

/// The Go module mirror's own transparency-log code (`golang.org/x/mod/sumdb`: `note` for C2SP
/// signed notes, `tlog` for RFC 6962 proofs; Debian's golang-golang-x-mod-dev) checks the log
/// through `verify_go/main.go`: it accepts two checkpoints, the proof that the later extends the
/// earlier, and records as the API shows them — and refuses a record shown altered, a kept
/// checkpoint whose root was changed, and a key that is not the log's.
#[test]
fn the_go_checksum_database_code_accepts_the_log_and_refuses_what_was_altered() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_population(&admin);
    for name in ["Northwind", "Contoso \"quoted\" \\ back\nslash"] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name, "new_population": 9_007_199_254_740_993i64})),
        );
        assert_eq!(response.status(), 204);
    }
    let dir = server.data_dir.with_file_name("verify-go");
    std::fs::create_dir_all(&dir).unwrap();
    // An earlier checkpoint of three events or more, and not a power of two, so that the
    // consistency proof takes every branch of its check (checkpoints are signed every second).
    let size = |note: &str| -> u64 { note.lines().nth(1).unwrap().parse().unwrap() };
    let mut earlier = wait_signed(&server, &admin, 3);
    while size(&earlier).is_power_of_two() {
        create_account(&server, &admin, "one more");
        earlier = wait_signed(&server, &admin, size(&earlier) + 1);
    }
    std::fs::write(dir.join("earlier.txt"), &earlier).unwrap();
    for name in ["after one", "after two"] {
        create_account(&server, &admin, name);
    }
    wait_signed(&server, &admin, size(&earlier) + 1);
    let created = server.audit(&admin, "operation=Create&entity=account");
    assert!(created.len() >= 4);
    let created = &created[..4];
    let mut records = Vec::new();
    for (i, record) in created.iter().enumerate() {
        let file = dir.join(format!("record-{i}.json"));
        std::fs::write(&file, record.to_string()).unwrap();
        records.push(file);
    }
    let key = audit_text(&server, &admin, "key").trim().to_string();

    let verifier = dir.join("verify_go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&verifier)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify_go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .expect("go runs (scripts/test installs Debian's golang-go)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let verify = |key: &str, earlier: &std::path::Path, records: &[std::path::PathBuf]| {
        let output = Command::new(&verifier)
            .arg(&server.base)
            .arg(&admin)
            .arg(key)
            .arg(earlier)
            .args(records)
            .output()
            .expect("the verifier runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };

    let (ok, said) = verify(&key, &dir.join("earlier.txt"), &records);
    assert!(ok, "{said}");
    // The wait above made the latest checkpoint, which the verifier fetched, the larger.
    assert!(
        said.starts_with(&format!(
            "verified 4 records; checkpoints {} and ",
            size(&earlier)
        )),
        "{said}"
    );

    let mut altered = created[0].clone();
    altered["UserUpn"] = json!("someone-else");
    std::fs::write(&records[0], altered.to_string()).unwrap();
    let (ok, said) = verify(&key, &dir.join("earlier.txt"), &records[..1]);
    assert!(!ok && said.contains("as shown hashes to"), "{said}");

    let root = earlier.lines().nth(2).unwrap();
    let forged = earlier.replacen(
        root,
        &base64::engine::general_purpose::STANDARD.encode([0u8; 32]),
        1,
    );
    std::fs::write(dir.join("forged.txt"), forged).unwrap();
    let (ok, said) = verify(&key, &dir.join("forged.txt"), &records[1..]);
    assert!(
        !ok && said.contains("the earlier checkpoint: invalid signature"),
        "{said}"
    );

    let other = Server::start(&[]);
    let other_key = audit_text(&other, &other.admin(), "key").trim().to_string();
    assert_ne!(other_key, key);
    let (ok, said) = verify(&other_key, &dir.join("earlier.txt"), &records[1..]);
    assert!(
        !ok && said.contains("the earlier checkpoint: note has no verifiable signatures"),
        "{said}"
    );
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
    let done = verify_live(&server, &admin);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["ok"], true, "{done}");
    assert!(done["events"].as_u64().unwrap() >= 3, "{done}");
    assert_eq!(done["problems"], json!([]));
    let asked = server.audit(&admin, "operation=VerifyAuditLog&status=Succeeded");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["UserUpn"], "admin");
}

/// `custos audit verify --data-dir DIR [--checkpoint FILE]`: exit code and output.
fn verify_with(dir: &std::path::Path, checkpoint: Option<&std::path::Path>) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_custos"));
    command.args(["audit", "verify", "--data-dir"]).arg(dir);
    if let Some(file) = checkpoint {
        command.arg("--checkpoint").arg(file);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

/// The checkpoint copies a JSON lines stream file holds: (tree size, note).
fn copies_in(file: &std::path::Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["RecordType"] == "CustosCheckpoint")
        .map(|line| {
            (
                line["Details"]["TreeSize"].as_u64().unwrap(),
                line["Details"]["Note"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_siems_checkpoint_copy_catches_a_log_rolled_back_to_a_backup() {
    let streams = tempfile::tempdir().unwrap();
    let args = ["--stream-dir", streams.path().to_str().unwrap()];
    let mut server = Server::start(&args);
    let admin = server.admin();
    for i in 0..3 {
        create_account(&server, &admin, &format!("before the backup {i}"));
    }
    let dir = server.data_dir.clone();
    server.kill();
    let backup = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(backup.path())
        .status()
        .unwrap();
    assert!(status.success());
    let backup = backup.path().join(dir.file_name().unwrap());
    let (code, said) = verify_with(&backup, None);
    assert_eq!(code, 0, "{said}");

    // Events after the backup reach the SIEM, and with them the checkpoints that cover them.
    let server = Server::start_in(&dir, &args);
    let admin = server.admin();
    let file = streams.path().join("siem.jsonl");
    let created = send(
        client().post(format!("{}/api/audit/streams", server.base)),
        &admin,
        Some(
            json!({"name": "siem", "format": "json", "target": format!("file://{}", file.display())}),
        ),
    );
    assert_eq!(created.status(), 201);
    for i in 0..3 {
        create_account(&server, &admin, &format!("after the backup {i}"));
    }
    let size = server.audit(&admin, "").len() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (witnessed, note) = loop {
        if let Some(copy) = copies_in(&file).into_iter().max_by_key(|(size, _)| *size)
            && copy.0 >= size
        {
            break copy;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint copy of {size} events reached the stream: {:?}",
            copies_in(&file)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let kept = streams.path().join("kept-checkpoint.txt");
    std::fs::write(&kept, &note).unwrap();
    drop(server);

    // The live log extends the SIEM's copy.
    let (code, said) = verify_with(&dir, Some(&kept));
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!(
            "the log extends the checkpoint kept outside ({witnessed} events)"
        )),
        "{said}"
    );
    // The backup is consistent in itself, but the SIEM's copy shows it lost history.
    let (code, said) = verify_with(&backup, Some(&kept));
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("FAILED: the log holds"), "{said}");
    assert!(said.contains("(truncation)"), "{said}");

    // A copy whose signature does not hold is refused as such.
    let forged = streams.path().join("forged-checkpoint.txt");
    let mut lines: Vec<String> = note.lines().map(str::to_string).collect();
    lines[1] = (witnessed + 1).to_string();
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let (code, said) = verify_with(&dir, Some(&forged));
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("is not signed by the pinned key"), "{said}");
}

#[test]
fn a_stopped_server_leaves_no_unsigned_tail() {
    // Signing only at start and on a 10-minute interval: what the stop signs is all there is.
    let mut server = Server::start(&["--checkpoint-interval-ms", "600000"]);
    let admin = server.admin();
    for i in 0..3 {
        create_account(&server, &admin, &format!("before the stop {i}"));
    }
    let status = server.stop();
    assert!(status.success(), "{status}");
    let output = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["latestCheckpoint"], report["events"], "{report}");
}
