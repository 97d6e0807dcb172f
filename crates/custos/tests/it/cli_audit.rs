//! `custos audit search|export|proof|tail` against a running server (SPEC §11): what an
//! auditor does from a terminal, with exit codes that mean something.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn audit(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .arg("audit")
        .args(args)
        .args(["--url", &server.base])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("the custos binary runs")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn search_and_export_from_the_command_line() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let ids: Vec<String> = (0..3)
        .map(|i| create_account(&server, &admin, &format!("Cli {i}")))
        .collect();

    let output = audit(
        &server,
        &["search", "search", "--operation", "Create", "--json"],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "a stray argument: could not run"
    );
    let output = audit(&server, &["search", "--operation", "Create", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let found = json_lines(&output);
    assert_eq!(found.len(), 3);
    assert!(found.iter().all(|r| r["Operation"] == "Create"));
    let mut record_ids: Vec<String> = found
        .iter()
        .map(|r| r["RecordIds"][0].as_str().unwrap().to_string())
        .collect();
    record_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(record_ids, expected);

    // A reader that goes away (`| head -1`) ends the command quietly and not as a success:
    // no panic's backtrace, exit code 1 (here the pipe is closed before the first line).
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "search", "--operation", "Create", "--json"])
        .args(["--url", &server.base])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    assert_eq!(closed.status.code(), Some(1), "{closed:?}");
    assert!(closed.stderr.is_empty(), "{closed:?}");

    let output = audit(&server, &["search", "--record-id", &ids[1], "--max", "1"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("CreationTime"), "{table}");
    assert_eq!(table.lines().count(), 2, "a header and one row: {table}");
    assert!(table.contains("Create") && table.contains("account"));

    let searches = server.audit(&admin, "operation=SearchAuditLog");
    assert!(
        searches
            .iter()
            .any(|e| e["UserAgent"].as_str().unwrap().starts_with("custos-cli/")),
        "the command's searches are recorded as its own"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creates.xlsx");
    let output = audit(
        &server,
        &[
            "export",
            "--operation",
            "Create",
            "--format",
            "xlsx",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let rows = xlsx_rows(&file, "Events");
    assert_eq!(rows.len(), 4, "a header and three events");
    // A file that cannot be written is found before the server is asked: no export job, so
    // nothing recorded for a file nobody got.
    let jobs = |server: &Server| server.audit(&admin, "operation=ExportAuditLog").len();
    let before = jobs(&server);
    let nowhere = dir.path().join("missing").join("creates.csv");
    let output = audit(
        &server,
        &[
            "export",
            "--format",
            "csv",
            "--out",
            nowhere.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(jobs(&server), before, "no export was started");
    assert!(before >= 1, "the export above was recorded");

    let output = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "search", "--url", &server.base])
        .env("CUSTOS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "the server refused");
}

#[test]
fn proof_trusts_only_the_key_and_keeps_the_log_honest() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = create_account(&server, &admin, "Proven");
    let event = &server.audit(&admin, &format!("operation=Create&recordId={account}"))[0];
    let id = event["Id"].as_str().unwrap();
    let key = send(
        client().get(format!("{}/api/audit/key", server.base)),
        &admin,
        None,
    )
    .text()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("checkpoint.note");
    let kept_path = kept.to_str().unwrap();

    let output = audit(
        &server,
        &["proof", "--id", id, "--key", &key, "--keep", kept_path],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let first = std::fs::read_to_string(&kept).unwrap();
    let signed: u64 = first.lines().nth(1).unwrap().parse().unwrap();
    create_account(&server, &admin, "Later");
    wait_signed(&server, &admin, signed + 1);
    let output = audit(
        &server,
        &["proof", "--id", id, "--key", &key, "--keep", kept_path],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("consistency proven"), "{said}");
    assert_ne!(
        std::fs::read_to_string(&kept).unwrap(),
        first,
        "the newer checkpoint is kept"
    );

    // Another key, or a kept checkpoint that was tampered with, fails with exit code 2; a key
    // that is not a key at all (its id does not match it) is the command's mistake, exit 1.
    let (name, rest) = key.split_once('+').unwrap();
    let other = custos_audit::CheckpointSigner::new([8; 32], name).verifier_key();
    let output = audit(&server, &["proof", "--id", id, "--key", &other]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let mistyped = format!("{name}+00000000+{}", rest.split_once('+').unwrap().1);
    let output = audit(&server, &["proof", "--id", id, "--key", &mistyped]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("key id does not match"));
    let forged = first.replacen(
        first.lines().nth(1).unwrap(),
        &(first.lines().nth(1).unwrap().parse::<u64>().unwrap() + 1).to_string(),
        1,
    );
    std::fs::write(&kept, forged).unwrap();
    let output = audit(
        &server,
        &["proof", "--id", id, "--key", &key, "--keep", kept_path],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("kept checkpoint"));

    let output = audit(
        &server,
        &["proof", "--id", "0193f1c2-0000-7000-8000-000000000000"],
    );
    assert_eq!(output.status.code(), Some(3), "no such record: refused");
}

#[test]
fn tail_prints_new_events_and_not_its_own_searches() {
    let server = Server::start(&[]);
    let admin = server.admin();
    create_account(&server, &admin, "Before the tail");
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "tail", "--url", &server.base, "--json"])
        .args(["--count", "3", "--interval-ms", "100", "--seconds", "30"])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tail starts from the newest event it finds; it says so on stderr once it has looked.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert!(said.starts_with("following the audit log from "), "{said}");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let id = create_account(&server, &admin, &format!("Tailed {i}"));
            std::thread::sleep(Duration::from_millis(150));
            id
        })
        .collect();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let printed = json_lines(&output);
    let operations: Vec<&str> = printed
        .iter()
        .map(|r| r["Operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["Create", "Create", "Create"], "{printed:?}");
    let seen: Vec<&str> = printed
        .iter()
        .map(|r| r["RecordIds"][0].as_str().unwrap())
        .collect();
    assert_eq!(seen, ids, "oldest first, none from before the tail");
}
