//! Outbound targets (issue 10 §6): by default nothing the server sends reaches loopback,
//! link-local or private addresses; file streams write only in `--stream-dir`, never through a
//! symbolic link; credentials in targets are never shown or recorded; what a failed connection
//! looked like is not shown.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(
        client().post(format!("{}{path}", server.base)),
        token,
        Some(body),
    )
}

fn refused(response: reqwest::blocking::Response, needle: &str) {
    let (status, _, message) = odata_error(response);
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains(needle),
        "'{message}' should say '{needle}'"
    );
}

#[test]
fn by_default_nothing_leaves_for_inner_addresses() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let stream = |target: &str| {
        post(
            &server,
            &admin,
            "/api/audit/streams",
            json!({"name": "s", "format": "json", "target": target}),
        )
    };
    refused(stream("file:///tmp/custos-audit.jsonl"), "--stream-dir");
    refused(stream("file:///etc/passwd"), "--stream-dir");
    for inner in [
        "tcp://127.0.0.1:514",
        "tls://[::1]:6514",
        "tcp://169.254.169.254:80",
        "tcp://localhost:514",
        "tcp://10.0.0.7:514",
        "http://192.168.1.10/collector",
        "https://[fd00::1]/collector",
    ] {
        refused(stream(inner), "--allow-private-targets");
    }
    refused(
        stream("https://user:secret@siem.example/raw"),
        "credentials",
    );
    refused(
        post(
            &server,
            &admin,
            "/api/audit/alerts",
            json!({"name": "a", "kind": "operation", "operations": ["BulkDelete"], "webhook": "http://127.0.0.1:1/hook"}),
        ),
        "--allow-private-targets",
    );
    refused(
        post(
            &server,
            &admin,
            "/api/v1.0/default/activity/feed/subscriptions/start?contentType=Audit.General",
            json!({"webhook": {"address": "http://169.254.169.254/latest"}}),
        ),
        "--allow-private-targets",
    );
    refused(
        send(
            client().post(server.api("sdkmessageprocessingsteps")),
            &admin,
            Some(
                json!({"name": "p", "primaryentity": "account", "sdkmessage": "Create",
                        "webhookurl": "http://127.0.0.1:9/plugin"}),
            ),
        ),
        "--allow-private-targets",
    );

    // A collector token in the target's query is used, never shown nor recorded.
    let created = post(
        &server,
        &admin,
        "/api/audit/streams",
        json!({"name": "hec", "format": "json",
               "target": "https://siem.example/raw?token=s3cr3t-token&channel=7"}),
    );
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    assert_eq!(
        created["target"],
        "https://siem.example/raw?token=%28set%29&channel=%28set%29"
    );
    let listed = get_json(&format!("{}/api/audit/streams", server.base), &admin);
    assert!(!listed.to_string().contains("s3cr3t"));
    let saved = server.audit(&admin, "operation=SaveAuditStream&status=Succeeded");
    assert_eq!(saved.len(), 1);
    let everything = server.audit(&admin, "");
    assert!(
        everything
            .iter()
            .all(|e| !e.to_string().contains("s3cr3t") && !e.to_string().contains("user:secret")),
        "no credential is recorded"
    );
}

#[test]
fn file_streams_stay_in_their_folder_and_never_follow_a_link() {
    let streams = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let args = ["--stream-dir", streams.path().to_str().unwrap()];
    let mut server = Server::start(&args);
    let admin = server.admin();
    let stream = |server: &Server, token: &str, target: String| {
        post(
            server,
            token,
            "/api/audit/streams",
            json!({"name": "s", "format": "json", "target": target}),
        )
    };
    let outside = elsewhere.path().join("out.jsonl");
    for target in [
        format!("file://{}", outside.display()),
        "file:///etc/passwd".into(),
        "file:///root/.bashrc".into(),
        format!("file://{}/../out.jsonl", streams.path().display()),
        format!("file://{}/sub/out.jsonl", streams.path().display()),
        format!("file://{}", server.data_dir.join("control.db").display()),
    ] {
        refused(stream(&server, &admin, target), "--stream-dir");
    }

    // Accepted and written (a stream carries checkpoint copies from the start), then swapped
    // for a link while the server is down: the link is not followed after the restart.
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let linked = streams.path().join("linked.jsonl");
    let created = stream(&server, &admin, format!("file://{}", linked.display()));
    assert_eq!(created.status(), 201);
    let linked_id = created.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first_write = |path: &std::path::Path| {
        for _ in 0..100 {
            let written = std::fs::read_to_string(path).unwrap_or_default();
            if !written.is_empty() {
                return written;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing was written to {}", path.display());
    };
    assert!(first_write(&linked).contains("CustosCheckpoint"));
    let dir = server.data_dir.clone();
    server.kill();
    std::fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    let server = Server::start_in(&dir, &args);
    let admin = server.admin();
    refused(
        stream(&server, &admin, format!("file://{}", linked.display())),
        "not a regular file",
    );

    let plain = streams.path().join("audit.jsonl");
    let created = stream(&server, &admin, format!("file://{}", plain.display()));
    assert_eq!(created.status(), 201);
    create_account(&server, &admin, "Contoso");
    let mut written = String::new();
    for _ in 0..100 {
        written = std::fs::read_to_string(&plain).unwrap_or_default();
        if written.contains("\"Create\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(written.contains("\"Create\""), "{written}");
    let mode = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    let status = get_json(
        &format!("{}/api/audit/streams/{linked_id}", server.base),
        &admin,
    )["status"]
        .clone();
    assert_eq!(status["delivered"], 0, "{status}");
    assert_eq!(
        status["lastError"], "could not reach the receiver",
        "{status}"
    );
}

#[test]
fn a_closed_port_looks_like_any_other_failure() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let created = post(
        &server,
        &admin,
        "/api/audit/streams",
        json!({"name": "scan", "format": "syslog", "target": format!("tcp://127.0.0.1:{closed}"), "from": "start"}),
    );
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        status =
            get_json(&format!("{}/api/audit/streams/{id}", server.base), &admin)["status"].clone();
        if !status["lastError"].is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status["lastError"], "could not reach the receiver",
        "{status}"
    );
    let (status, _, message) = odata_error(post(
        &server,
        &admin,
        "/api/v1.0/default/activity/feed/subscriptions/start?contentType=Audit.General",
        json!({"webhook": {"address": format!("http://127.0.0.1:{closed}/hook")}}),
    ));
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "the webhook failed its validation: could not reach the receiver"
    );
}
