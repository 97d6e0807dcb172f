//! The tamper matrix (issue 11): one change at a time to a stopped server's audit folder —
//! frames flipped, removed, swapped and inserted in sealed and active segments, a forged purge
//! range, a damaged, shortened or removed `checkpoints.log`, edits to `ids.dat`, `leaves.dat`
//! and `verifier.key`, truncation inside a signed prefix, damage followed by intact records in
//! an unsigned tail, an index file edited with its checksums made to match — and for each,
//! `custos audit verify` exits 2 naming it, and the server either refuses to start (leaving the
//! audit folder byte for byte as it was), refuses to serve the damaged record, or (the index
//! file) answers `/healthz` 503 once a verification of the live log has compared it. A crash's torn tail is neither. A segment or database with another
//! name (a hard link) is never written through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A stopped server's data directory whose log spans more than the unsigned margin (10 s):
/// a sealed partition (`sealed`), then, 11 s later, more events in the active one (`active`);
/// every event covered by a checkpoint.
struct Signed {
    _keep: tempfile::TempDir,
    dir: PathBuf,
    sealed: String,
    active: String,
}

fn segments(audit: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(audit)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn signed_log() -> Signed {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    for i in 0..10 {
        create_account(&server, &admin, &format!("early {i}"));
    }
    seal_partition(&server, &admin);
    std::thread::sleep(Duration::from_secs(11));
    for i in 0..12 {
        create_account(&server, &admin, &format!("late {i}"));
    }
    let events = server.audit(&admin, "").len() as u64;
    let note = wait_signed(&server, &admin, events + 1);
    let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    server.kill();
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("signed");
    copy(&server.data_dir, &dir);
    let audit = dir.join("audit");
    let names = segments(&audit);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(audit.join(names[0].replace(".log", ".idx")).exists());
    let (code, out) = verify(&dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{size} events")), "{out}");
    Signed {
        _keep: keep,
        dir,
        sealed: names[0].clone(),
        active: names[1].clone(),
    }
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

/// (start, end) of every frame of a segment.
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

/// (start, end) of every frame of `checkpoints.log` or `pruned.log`.
fn notes(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
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

/// Every file of the audit folder with its bytes.
fn snapshot(audit: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().to_string(), bytes)
        })
        .collect()
}

/// Starts `custos serve` on `dir` and expects it to refuse; returns what it said. The audit
/// folder must be byte for byte as before.
fn refused_start(dir: &Path) -> String {
    let before = snapshot(&dir.join("audit"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a damaged log: {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    let after = snapshot(&dir.join("audit"));
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| before.get(*name) != after.get(*name))
        .collect();
    assert!(
        changed.is_empty(),
        "a refused start changed {changed:?} in {}",
        dir.display()
    );
    said
}

/// A copy of `signed` changed by `tamper` (given the audit folder).
fn tampered(signed: &Signed, name: &str, tamper: impl FnOnce(&Path)) -> PathBuf {
    let dir = signed.dir.with_file_name(name);
    copy(&signed.dir, &dir);
    tamper(&dir.join("audit"));
    dir
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, &bytes).unwrap();
}

/// Expects verify to fail saying each of `says`, and the server to refuse to start saying
/// `start_says`.
fn refused(dir: &Path, says: &[&str], start_says: &str) {
    let (code, out) = verify(dir);
    assert_eq!(code, 2, "{}: {out}", dir.display());
    for needle in says {
        assert!(
            out.contains(needle),
            "{}: verify should say '{needle}': {out}",
            dir.display()
        );
    }
    let said = refused_start(dir);
    assert!(
        said.contains(start_says),
        "{}: the refused start should say '{start_says}': {said}",
        dir.display()
    );
}

/// Expects verify to fail saying `says`, the server to start, and the damaged record to be
/// refused: the search that meets it answers IntegrityError and /healthz turns 503.
fn served_never(dir: &Path, says: &str) {
    let (code, out) = verify(dir);
    assert_eq!(code, 2, "{}: {out}", dir.display());
    assert!(
        out.contains(says),
        "{}: verify should say '{says}': {out}",
        dir.display()
    );
    let server = Server::start_in(dir, &[]);
    let admin = server.admin();
    let search = send(
        client().get(format!(
            "{}/api/audit/records?top=1000&start=2000-01-01",
            server.base
        )),
        &admin,
        None,
    );
    let (status, code, message) = odata_error(search);
    assert_eq!(
        (status, code.as_str()),
        (500, "IntegrityError"),
        "{message}"
    );
    assert!(
        message.contains("does not match its leaf") || message.contains("decode"),
        "{message}"
    );
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(health.status(), 503);
}

#[test]
fn every_tamper_is_caught_by_verify_and_by_the_server() {
    let signed = signed_log();
    let sealed = signed.sealed.clone();
    let active = signed.active.clone();
    let sealed_events: u64 = active
        .trim_start_matches("seg-")
        .trim_end_matches(".log")
        .parse()
        .unwrap();

    // A flipped byte in a sealed segment: the server starts (it trusts the index), but never
    // serves the record.
    let dir = tampered(&signed, "sealed-flip", |audit| {
        edit(&audit.join(&sealed), |bytes| {
            let (start, end) = frames(bytes)[5];
            bytes[(start + 8 + end) / 2] ^= 0x20;
        })
    });
    served_never(&dir, "fails its checksum");

    // An edit with a forged checksum in a sealed segment: caught by the signed leaf.
    let dir = tampered(&signed, "sealed-rewritten", |audit| {
        edit(&audit.join(&sealed), |bytes| {
            let (start, end) = frames(bytes)[4];
            let payload = &mut bytes[start + 8..end];
            let at = payload
                .windows(5)
                .position(|w| w == b"early")
                .expect("the name is in the record");
            payload[at] = b'E';
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&4u64.to_le_bytes());
            hasher.update(payload);
            let crc = hasher.finalize();
            bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        })
    });
    served_never(&dir, "do not match the checkpoint signed for them");

    // Two frames swapped in a sealed segment.
    let dir = tampered(&signed, "sealed-swapped", |audit| {
        edit(&audit.join(&sealed), |bytes| {
            let all = frames(bytes);
            let (a, b) = (all[6], all[7]);
            let mut swapped = bytes[b.0..b.1].to_vec();
            swapped.extend_from_slice(&bytes[a.0..a.1]);
            bytes.splice(a.0..b.1, swapped);
        })
    });
    served_never(&dir, "fails its checksum");

    // A frame removed from, or inserted into, a sealed segment no longer matches its index:
    // the start reads the segment and refuses.
    let dir = tampered(&signed, "sealed-removed", |audit| {
        edit(&audit.join(&sealed), |bytes| {
            let (start, end) = frames(bytes)[3];
            bytes.drain(start..end);
        })
    });
    refused(&dir, &["record seq 3", "fails its checksum"], "bad frame");
    let dir = tampered(&signed, "sealed-inserted", |audit| {
        edit(&audit.join(&sealed), |bytes| {
            let (start, end) = frames(bytes)[3];
            let copy = bytes[start..end].to_vec();
            bytes.splice(start..start, copy);
        })
    });
    refused(&dir, &["record seq 4", "fails its checksum"], "bad frame");

    // A flipped byte in the active segment, inside what a checkpoint signed.
    let dir = tampered(&signed, "active-flip", |audit| {
        edit(&audit.join(&active), |bytes| {
            let (start, end) = frames(bytes)[2];
            bytes[(start + 8 + end) / 2] ^= 0x01;
        })
    });
    refused(&dir, &["fails its checksum"], "inside a signed checkpoint");

    // An edit with a forged checksum in the active segment, inside what a checkpoint signed.
    let dir = tampered(&signed, "active-rewritten", |audit| {
        edit(&audit.join(&active), |bytes| {
            let (start, end) = frames(bytes)[3];
            let payload = &mut bytes[start + 8..end];
            let at = payload
                .windows(4)
                .position(|w| w == b"late")
                .expect("the name is in the record");
            payload[at] = b'L';
            let seq = sealed_events + 3;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&seq.to_le_bytes());
            hasher.update(payload);
            let crc = hasher.finalize();
            bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        })
    });
    refused(
        &dir,
        &["do not match the checkpoint signed for them"],
        &format!("record seq {} was altered", sealed_events + 3),
    );

    // Truncation inside the signed prefix.
    let dir = tampered(&signed, "active-truncated", |audit| {
        edit(&audit.join(&active), |bytes| {
            let cut = frames(bytes)[4].0;
            bytes.truncate(cut);
        })
    });
    refused(&dir, &["truncation"], "a checkpoint of");

    // A forged purge: a checksum-valid frame that says the sealed segment was purged, naming
    // some later record as its purge event.
    let dir = tampered(&signed, "forged-purge", |audit| {
        let mut body = 0u64.to_le_bytes().to_vec();
        body.extend_from_slice(&sealed_events.to_le_bytes());
        body.extend_from_slice(&(sealed_events + 3).to_le_bytes());
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let path = audit.join("pruned.log");
        edit(&path, |bytes| bytes.extend_from_slice(&frame));
    });
    refused(
        &dir,
        &["pruned.log: range #0", "not"],
        "pruned.log: range #0",
    );

    // checkpoints.log damaged, shortened by its last notes, or removed.
    let dir = tampered(&signed, "checkpoints-flipped", |audit| {
        edit(&audit.join("checkpoints.log"), |bytes| {
            let (start, end) = notes(bytes)[0];
            bytes[(start + end) / 2] ^= 0x08;
        })
    });
    refused(
        &dir,
        &["checkpoints.log: checkpoint #0"],
        "checkpoints.log: checkpoint #0",
    );
    let dir = tampered(&signed, "checkpoints-shortened", |audit| {
        edit(&audit.join("checkpoints.log"), |bytes| {
            // Keep only checkpoints signed before the last records of the sealed partition, so
            // the unsigned records span the 11-second pause.
            let all = notes(bytes);
            let text =
                |(s, e): (usize, usize)| String::from_utf8_lossy(&bytes[s + 8..e]).to_string();
            let keep = all
                .iter()
                .take_while(|n| {
                    text(**n).lines().nth(1).unwrap().parse::<u64>().unwrap() + 2 <= sealed_events
                })
                .count();
            assert!(keep >= 1 && keep < all.len(), "{keep} of {}", all.len());
            bytes.truncate(all[keep - 1].1);
        })
    });
    refused(
        &dir,
        &["checkpoints are missing"],
        "checkpoints were removed",
    );
    let dir = tampered(&signed, "checkpoints-removed", |audit| {
        std::fs::remove_file(audit.join("checkpoints.log")).unwrap();
    });
    refused(&dir, &["no signed checkpoint"], "checkpoints were removed");

    // ids.dat, leaves.dat and verifier.key edited.
    let dir = tampered(&signed, "ids-edited", |audit| {
        edit(&audit.join("ids.dat"), |bytes| bytes[5] ^= 0x10)
    });
    refused(&dir, &["ids.dat"], "ids.dat");
    let dir = tampered(&signed, "leaves-edited", |audit| {
        edit(&audit.join("leaves.dat"), |bytes| bytes[3 * 32 + 7] ^= 0x10)
    });
    refused(
        &dir,
        &["leaves.dat: the leaf of record seq 3"],
        "leaves.dat: the leaf of record seq 3",
    );
    let dir = tampered(&signed, "verifier-key-edited", |audit| {
        edit(&audit.join("verifier.key"), |bytes| {
            let at = bytes.len() - 5;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        })
    });
    refused(&dir, &["checkpoints.log: checkpoint #0"], "verifier.key");

    // A sealed partition's index file rewritten with checksums that match, as whoever edits one
    // to leave an event out of searches would: its records are intact, so the server opens it
    // and serves them, but a verification of the live log compares the file with its segment
    // and turns /healthz 503 naming it, as the offline verify names it.
    let dir = tampered(&signed, "index-rewritten", |audit| {
        edit(&audit.join(sealed.replace(".log", ".idx")), |bytes| {
            // The footer: 11 sections' (offset, length, CRC-32), its own CRC-32, the magic.
            let footer_at = bytes.len() - 8 - 4 - 11 * 20;
            // The last section: the report columns.
            let entry = footer_at + 10 * 20;
            let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            let (offset, len) = (field(entry) as usize, field(entry + 8) as usize);
            assert!(len > 0);
            bytes[offset + len / 2] ^= 0x01;
            let crc = crc32fast::hash(&bytes[offset..offset + len]);
            bytes[entry + 16..entry + 20].copy_from_slice(&crc.to_le_bytes());
            let crc = crc32fast::hash(&bytes[footer_at..footer_at + 11 * 20]);
            bytes[footer_at + 11 * 20..footer_at + 11 * 20 + 4].copy_from_slice(&crc.to_le_bytes());
        })
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("its index file does not match its records"),
        "{out}"
    );
    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    let health = |server: &Server| {
        let answer = client()
            .get(format!("{}/healthz", server.base))
            .send()
            .unwrap();
        (
            answer.status().as_u16(),
            answer.json::<serde_json::Value>().unwrap(),
        )
    };
    assert_eq!(health(&server).0, 200, "{:?}", health(&server).1);
    let done = verify_live(&server, &admin);
    assert_eq!(done["ok"], false, "{done}");
    let (status, body) = health(&server);
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(&sealed) && reason.contains("its index file does not match its records"),
        "{reason}"
    );
    drop(server);
    // Restarted, the server is healthy again until its own verification, on its interval,
    // finds the file: recorded as the system's, with no one asking.
    let server = Server::start_in(&dir, &["--verify-interval-secs", "1"]);
    let admin = server.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = health(&server);
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no verification on its interval: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body["reason"].as_str().unwrap().contains(&sealed), "{body}");
    let verifications = server.audit(&admin, "operation=VerifyAuditLog");
    assert!(
        verifications
            .iter()
            .any(|e| e["UserUpn"] == "system" && e["UserType"] == 4 && e["Origin"] == "Backend"),
        "{verifications:?}"
    );

    // A crash's torn tail after the last checkpoint is reported, not called tampering, and the
    // server starts on it.
    let dir = tampered(&signed, "torn", |audit| {
        edit(&audit.join(&active), |bytes| {
            bytes.extend_from_slice(&[200, 1, 0, 0, 7, 7, 7])
        })
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn tail, not tampering"), "{out}");
    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    assert_eq!(
        server
            .audit(&admin, "operation=Create&entity=account")
            .len(),
        22
    );
}

#[test]
fn damage_in_an_unsigned_tail_with_intact_records_after_it_is_not_a_crash() {
    // An hour between checkpoints: the creates after the start stay unsigned.
    let mut server = Server::start(&["--checkpoint-interval-ms", "3600000"]);
    let admin = server.admin();
    for i in 0..14 {
        create_account(&server, &admin, &format!("unsigned {i}"));
    }
    server.kill();
    let audit = server.data_dir.join("audit");
    let active = segments(&audit).pop().unwrap();
    let bytes = std::fs::read(audit.join(&active)).unwrap();
    let all = frames(&bytes);
    let signed: u64 =
        String::from_utf8_lossy(&std::fs::read(audit.join("checkpoints.log")).unwrap())
            .lines()
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
            .unwrap();
    assert!(
        (signed as usize) + 12 < all.len(),
        "an unsigned tail: {signed} signed of {}",
        all.len()
    );
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("tail");
    copy(&server.data_dir, &dir);
    edit(&dir.join("audit").join(&active), |bytes| {
        let (start, end) = all[signed as usize + 1];
        bytes[(start + 8 + end) / 2] ^= 0x04;
    });
    refused(
        &dir,
        &["fails its checksum"],
        "intact records follow it: damage, not a crash",
    );
}

#[test]
fn a_server_refuses_to_write_through_a_file_that_has_another_name() {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    let id = create_account(&server, &admin, "Contoso");
    server.kill();
    let audit = server.data_dir.join("audit");
    let active = audit.join(segments(&audit).pop().unwrap());
    // The name outside the data directory stands for a file an attacker wants Custos to write.
    let outside = tempfile::tempdir().unwrap();
    for file in [active, server.data_dir.join("control.db")] {
        let elsewhere = outside.path().join("elsewhere");
        std::fs::hard_link(&file, &elsewhere).unwrap();
        let before = std::fs::read(&elsewhere).unwrap();
        let said = refused_start(&server.data_dir);
        assert!(said.contains("a hard link"), "{said}");
        assert_eq!(std::fs::read(&elsewhere).unwrap(), before);
        std::fs::remove_file(&elsewhere).unwrap();
    }
    // Once the other names are gone, the same folder starts and holds the event.
    let server = Server::start_in(&server.data_dir, &[]);
    let admin = server.admin();
    assert_eq!(
        server
            .audit(&admin, &format!("recordId={id}&operation=Create"))
            .len(),
        1
    );
}
