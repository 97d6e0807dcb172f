//! When the audit log cannot be written the server refuses (503) rather than serve unaudited.
//! The fault is real: the server runs under a file-size limit (`ulimit -f`, with SIGXFSZ
//! ignored), so appending to the audit segment fails with EFBIG once it reaches the limit.

use std::process::Command;

use serde_json::json;

use crate::common::*;

#[test]
fn a_full_log_refuses_requests_instead_of_serving_them_unaudited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with(
        Command::new("bash")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 8192; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_custos")),
        &dir,
        &[],
    );
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "kept"})),
    );
    assert_eq!(response.status(), 204);

    // Each audited page records its 12 KiB filter; 8 MiB of them fill the log's file limit.
    let filter = format!("contains(name,'{}')", "z".repeat(12 * 1024));
    let url = server.api(&format!("accounts?$filter={filter}"));
    let mut refused = None;
    for _ in 0..2000 {
        let response = send(client().get(&url), &admin, None);
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
    }
    let (status, code, message) =
        odata_error(refused.expect("the log filled up within 2,000 pages"));
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    assert!(message.contains("audit log"), "{message}");

    // Writes whose event does not fit are refused too, and roll back: the record is not created.
    let big = "d".repeat(12 * 1024);
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "never", "description": big})),
    );
    assert_eq!(response.status(), 503);
    let (status, _, _) = odata_error(send(client().get(&url), &admin, None));
    assert_eq!(
        status, 503,
        "reads stay refused while the log cannot take their event"
    );
    // The server says so: /healthz and /metrics.
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().unwrap();
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("refuses new events"),
        "{health}"
    );
    assert_eq!(server.metric(&admin, "custos_audit_healthy"), 0);

    // After a restart without the limit, the log is intact and the refused create never happened.
    drop(server);
    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    let names: Vec<String> = get_json(&server.api("accounts?$select=name"), &admin)["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["kept"]);
    let creates = server.audit(&admin, "operation=Create&entity=account");
    assert_eq!(
        creates.len(),
        1,
        "only the committed create is recorded as created"
    );
}

/// A small file system of its own (tmpfs), mounted while the test runs; `None` when this user
/// cannot mount one.
struct SmallDisk {
    path: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .output()
            .ok()?;
        mounted
            .status
            .success()
            .then_some(SmallDisk { path, _tmp: tmp })
    }

    /// Fills the disk but for about `spare` bytes.
    fn fill(&self, spare: u64) -> std::path::PathBuf {
        let filler = self.path.join("filler");
        let free = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        let free: u64 = String::from_utf8_lossy(&free.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let bytes = vec![7u8; free.saturating_sub(spare) as usize];
        std::fs::write(&filler, bytes).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_refuses_every_audited_request_with_503_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(48) else {
        eprintln!(
            "skipped: this user cannot mount a small tmpfs (the full-disk test runs as root)"
        );
        return;
    };
    let dir = disk.path.join("data");
    let mut server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    create_account(&server, &admin, "before");
    let filler = disk.fill(0);
    // Every audited request is refused, records included, and nothing is served unaudited.
    let mut statuses = std::collections::BTreeSet::new();
    for n in 0..20 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("during {n}"), "description": "x".repeat(4096)})),
        );
        statuses.insert(response.status().as_u16());
        let page = send(
            client().get(server.api("accounts?$select=name")),
            &admin,
            None,
        );
        statuses.insert(page.status().as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 503 || (200..300).contains(s)),
        "only 503 refusals, never a 500: {statuses:?}"
    );
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(health.status(), 503);
    // Space returns: the server takes work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "after"})),
    );
    assert_eq!(response.status(), 204);
    assert_eq!(
        client()
            .get(format!("{}/healthz", server.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    let names = server.audit(&admin, "operation=Create&entity=account");
    assert!(names.len() >= 2);
    kill_and_verify(&mut server);
}
