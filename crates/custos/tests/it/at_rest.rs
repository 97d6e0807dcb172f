//! Files at rest (issue 10 §8): the data directory is 0700 and every file Custos creates in it is
//! 0600, including those of a directory an older version left readable.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::common::*;

/// Every folder and file under `dir` whose mode lets the group or others in.
fn readable_by_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mode = std::fs::symlink_metadata(dir).unwrap().permissions().mode();
    if mode & 0o077 != 0 {
        out.push(format!("{} {:o}", dir.display(), mode & 0o777));
    }
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(readable_by_others(&entry.unwrap().path()));
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_data_directory_and_every_file_in_it_are_private() {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    create_account(&server, &admin, "Contoso");
    let backup = send(
        client().post(format!("{}/api/admin/instances/main/backups", server.base)),
        &admin,
        Some(json!({"label": "before"})),
    );
    assert_eq!(backup.status(), 201);
    let job = send(
        client().post(format!("{}/api/audit/exports", server.base)),
        &admin,
        Some(json!({"format": "csv", "search": "start=2000-01-01"})),
    );
    assert_eq!(job.status(), 202);
    let id = job.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..100 {
        let status = get_json(&format!("{}/api/audit/exports/{id}", server.base), &admin);
        if status["status"] == "succeeded" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = server.data_dir.clone();
    server.kill();
    assert_eq!(mode(&dir), 0o700);
    for made in [
        "control.db",
        "keys/token.key",
        "audit",
        "instances/main/records.db",
    ] {
        assert!(dir.join(made).exists(), "{made}");
    }
    assert!(std::fs::read_dir(dir.join("backups/main")).unwrap().count() >= 2);
    assert!(
        std::fs::read_dir(dir.join("audit-exports"))
            .unwrap()
            .count()
            >= 2
    );
    assert_eq!(readable_by_others(&dir), Vec::<String>::new());

    // A folder an older version made readable is closed when the server opens it.
    for path in [dir.clone(), dir.join("audit"), dir.join("instances/main")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("control.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _server = Server::start_in(&dir, &[]);
    assert_eq!(readable_by_others(&dir), Vec::<String>::new());
}
