//! `custos audit verify` detects every kind of tampering with a log whose events a signed
//! checkpoint covers — and does not mistake a crash's torn tail for tampering. The server, too,
//! refuses to start on a damaged log.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::common::*;

const SEGMENT: &str = "audit/seg-00000000000000000000.log";

/// A data directory with 21 events (first run plus 20 creates), all covered by a checkpoint.
fn signed_log() -> (tempfile::TempDir, PathBuf) {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    for i in 0..20 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("account {i}")})),
        );
        assert_eq!(response.status(), 204);
    }
    let checkpoint = client()
        .get(format!("{}/api/audit/checkpoint", server.base))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        checkpoint.contains("\n21\n"),
        "the checkpoint covers every event: {checkpoint}"
    );
    server.kill();
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("signed");
    copy(&server.data_dir, &dir);
    (keep, dir)
}

fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// (start, end) of every frame of the segment.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, pos + 8 + len));
        pos += 8 + len;
    }
    out
}

fn verify(dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

/// Applies `tamper` to the segment of a copy of `signed`, then verifies the copy.
fn tampered(
    signed: &Path,
    name: &str,
    tamper: impl FnOnce(&mut Vec<u8>),
) -> (i32, String, PathBuf) {
    let dir = signed.with_file_name(name);
    copy(signed, &dir);
    let path = dir.join(SEGMENT);
    let mut bytes = std::fs::read(&path).unwrap();
    tamper(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let (code, out) = verify(&dir);
    (code, out, dir)
}

#[test]
fn verify_detects_each_kind_of_tampering() {
    let (_keep, signed) = signed_log();
    let (code, out) = verify(&signed);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("21 events in 1 segments, ") && out.contains("verified"),
        "{out}"
    );

    let (code, out, flipped) = tampered(&signed, "flipped", |bytes| {
        let (start, end) = frames(bytes)[10];
        bytes[(start + end) / 2] ^= 0x20;
    });
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("seg-00000000000000000000.log: record seq 10")
            && out.contains("fails its checksum"),
        "{out}"
    );

    let (code, out, _) = tampered(&signed, "removed", |bytes| {
        let (start, end) = frames(bytes)[10];
        bytes.drain(start..end);
    });
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("record seq 10 (event") && out.contains("fails its checksum"),
        "{out}"
    );

    let (code, out, _) = tampered(&signed, "swapped", |bytes| {
        let all = frames(bytes);
        let (a, b) = (all[10], all[11]);
        let first = bytes[a.0..a.1].to_vec();
        let second = bytes[b.0..b.1].to_vec();
        let mut swapped = second;
        swapped.extend_from_slice(&first);
        bytes.splice(a.0..b.1, swapped);
    });
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("record seq 10 (event") && out.contains("fails its checksum"),
        "{out}"
    );

    let (code, out, _) = tampered(&signed, "truncated", |bytes| {
        let cut = frames(bytes)[18].0;
        bytes.truncate(cut);
    });
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("the log holds 18 records but a checkpoint was signed for 21")
            && out.contains("truncation"),
        "{out}"
    );

    // A forger who recomputes the checksum is caught by the signed checkpoint.
    let (code, out, _) = tampered(&signed, "rewritten", |bytes| {
        let (start, end) = frames(bytes)[5];
        let payload = &mut bytes[start + 8..end];
        let at = payload
            .windows(7)
            .position(|w| w == b"account")
            .expect("the name is in the record");
        payload[at] = b'A';
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&5u64.to_le_bytes());
        hasher.update(payload);
        let crc = hasher.finalize();
        bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    });
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("do not match the checkpoint signed for them"),
        "{out}"
    );
    assert!(
        !out.contains("fails its checksum"),
        "the checksum was forged: {out}"
    );

    // A crash's torn tail after the last checkpoint is reported, not called tampering.
    let (code, out, torn) = tampered(&signed, "torn", |bytes| {
        bytes.extend_from_slice(&[200, 1, 0, 0, 7, 7, 7])
    });
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("torn tail, not tampering") && out.contains("verified"),
        "{out}"
    );

    // The server refuses a damaged log inside a checkpoint, and starts on a torn tail.
    let output = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&flipped)
        .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("inside a signed checkpoint"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server = Server::start_in(&torn, &[]);
    let admin = server.admin();
    assert_eq!(
        server
            .audit(&admin, "operation=Create&entity=account")
            .len(),
        20
    );
}
