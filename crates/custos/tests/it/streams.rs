//! Streams of the log to SIEMs (SPEC §9), received by `siem_receiver.py` — a receiver written
//! from RFC 5424, RFC 6587 and the CEF layout, apart from Custos — over TCP and TLS, and read
//! back from files: every event arrives, through a receiver outage and a Custos restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/siem_receiver.py");

/// A running receiver; killed on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
}

impl Receiver {
    fn start(port: u16, out: &Path, extra: &[&str]) -> Receiver {
        let mut child = Command::new("python3")
            .arg(RECEIVER)
            .args(["--port", &port.to_string(), "--out"])
            .arg(out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening");
        Receiver {
            child,
            out: out.to_path_buf(),
        }
    }

    /// What arrived, without the connection markers.
    fn messages(&self) -> Vec<Value> {
        read_lines(&self.out)
            .into_iter()
            .filter(|m| m.get("connected").is_none())
            .collect()
    }

    /// Connections made (after the TLS handshake, for TLS).
    fn connections(&self) -> usize {
        read_lines(&self.out)
            .iter()
            .filter(|m| m.get("connected").is_some())
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole lines the receiver has written to `path`, as JSON: a line it is still writing
/// (no newline yet) is read on the next poll.
pub(crate) fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A port for a receiver the test starts later (`custos_bench::reserve_port`: one no other
/// listener or connection takes meanwhile).
pub(crate) fn free_port() -> u16 {
    custos_bench::reserve_port().unwrap()
}

pub(crate) fn create_stream(
    server: &Server,
    token: &str,
    body: Value,
) -> reqwest::blocking::Response {
    send(
        client().post(format!("{}/api/audit/streams", server.base)),
        token,
        Some(body),
    )
}

/// Creates a stream that must be accepted (201); returns its id.
pub(crate) fn created_stream(server: &Server, token: &str, body: Value) -> String {
    let response = create_stream(server, token, body);
    assert_eq!(response.status(), 201);
    response.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) fn stream_status(server: &Server, token: &str, id: &str) -> Value {
    get_json(&format!("{}/api/audit/streams/{id}", server.base), token)["status"].clone()
}

/// The ids of the log's events after the newest event of `operation`, oldest first.
pub(crate) fn events_after(server: &Server, token: &str, operation: &str) -> Vec<String> {
    let trail = server.audit(token, "");
    let at = trail
        .iter()
        .position(|e| e["Operation"] == operation)
        .expect("the marker event");
    trail[..at]
        .iter()
        .rev()
        .map(|e| e["Id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `received` (re-read each time) holds every id of `ids`; asserts no message was
/// malformed.
pub(crate) fn wait_for_all(
    ids: &[String],
    mut received: impl FnMut() -> Vec<Value>,
    id_of: fn(&Value) -> Option<String>,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let messages = received();
        for message in &messages {
            assert!(message.get("error").is_none(), "malformed: {message}");
        }
        let got: HashSet<String> = messages.iter().filter_map(id_of).collect();
        if ids.iter().all(|id| got.contains(id)) {
            return messages;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{} of {} events arrived",
            ids.iter().filter(|id| got.contains(*id)).count(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn syslog_id(message: &Value) -> Option<String> {
    message["sd"]["custos@32473"]["id"]
        .as_str()
        .map(str::to_string)
}

fn cef_id(message: &Value) -> Option<String> {
    message["cef"]["ext"]["externalId"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn syslog_over_tcp_loses_nothing_through_a_receiver_outage_and_a_restart() {
    let mut server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let port = free_port();
    let id = created_stream(
        &server,
        &admin,
        json!({"name": "siem", "format": "syslog", "target": format!("tcp://127.0.0.1:{port}")}),
    );
    for i in 0..5 {
        create_account(&server, &admin, &format!("Outage {i}"));
    }
    // The receiver is down: the stream says so, and waits.
    let started = Instant::now();
    loop {
        let status = stream_status(&server, &admin, &id);
        if status["lastError"].is_string() && status["behind"].as_u64().unwrap() > 0 {
            assert_eq!(status["connected"], false);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let expected = events_after(&server, &admin, "SaveAuditStream");
    assert!(expected.len() >= 5);

    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(port, &dir.path().join("syslog.jsonl"), &[]);
    let messages = wait_for_all(&expected, || receiver.messages(), syslog_id);
    for message in messages
        .iter()
        .filter(|m| syslog_id(m).is_some_and(|i| expected.contains(&i)))
    {
        let event_id = syslog_id(message).unwrap();
        let record = get_json(
            &format!("{}/api/audit/records/{event_id}", server.base),
            &admin,
        );
        assert_eq!(message["json"], record, "MSG is the canonical record");
        assert!(
            message["bom"].as_bool().unwrap(),
            "a UTF-8 MSG starts with a BOM"
        );
        assert_eq!(message["pri"], 13 * 8 + 6, "log audit, informational");
        assert_eq!(message["app"], "custos");
        assert_eq!(message["msgid"], record["Operation"]);
        assert_eq!(message["timestamp"], record["CreationTime"]);
        let sd = &message["sd"]["custos@32473"];
        assert_eq!(sd["operation"], record["Operation"]);
        assert_eq!(sd["user"], record["UserUpn"]);
        assert_eq!(sd["status"], "Succeeded");
    }
    // Later events go over the same connection.
    for i in 0..3 {
        let more = create_account(&server, &admin, &format!("Connected {i}"));
        let event = server.audit(&admin, &format!("operation=Create&recordId={more}"));
        wait_for_all(
            &[event[0]["Id"].as_str().unwrap().to_string()],
            || receiver.messages(),
            syslog_id,
        );
    }
    assert_eq!(receiver.connections(), 1);
    let status = stream_status(&server, &admin, &id);
    assert!(status["lastError"].is_null(), "{status}");
    assert!(status["delivered"].as_u64().unwrap() >= expected.len() as u64);

    // A restart resumes from the kept cursor.
    let data = server.data_dir.clone();
    server.kill();
    let server = Server::start_in(&data, &["--allow-private-targets"]);
    let admin = server.admin();
    let last = create_account(&server, &admin, "After the restart");
    let everything = events_after(&server, &admin, "SaveAuditStream");
    assert!(everything.len() > expected.len());
    wait_for_all(&everything, || receiver.messages(), syslog_id);
    assert_eq!(receiver.connections(), 2, "one more after the restart");
    let creates = server.audit(&admin, &format!("operation=Create&recordId={last}"));
    assert_eq!(creates.len(), 1);
}

/// Writes `ca.pem`, and `cert.pem` and `key.pem` for 127.0.0.1 signed by it, into `dir`.
pub(crate) fn make_certificate(dir: &std::path::Path) {
    let status = Command::new("python3")
        .arg(RECEIVER)
        .arg("--make-cert")
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "python3 with cryptography makes a certificate"
    );
}

#[test]
fn cef_over_tls_reaches_a_receiver_trusted_by_its_certificate_only() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let dir = tempfile::tempdir().unwrap();
    make_certificate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let port = free_port();
    let receiver = Receiver::start(
        port,
        &dir.path().join("cef.jsonl"),
        &[
            "--parse",
            "cef",
            "--tls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    );
    let pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let target = format!("tls://127.0.0.1:{port}");

    // Without the certificate, the web's roots do not vouch for the receiver.
    let untrusted = created_stream(
        &server,
        &admin,
        json!({"name": "untrusted", "format": "cef", "target": target}),
    );

    let response = create_stream(
        &server,
        &admin,
        json!({"name": "arcsight", "format": "cef", "target": target,
               "caCertificate": pem, "from": "start"}),
    );
    assert_eq!(response.status(), 201);
    let created: Value = response.json().unwrap();
    assert_eq!(
        created["caCertificate"], "(set)",
        "the certificate is not echoed"
    );
    let account = create_account(&server, &admin, "Fabrikam");
    let response = send(
        client().delete(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);

    let trail = server.audit(&admin, "");
    let ids: Vec<String> = trail
        .iter()
        .filter(|e| e["Operation"] != "SearchAuditLog")
        .map(|e| e["Id"].as_str().unwrap().to_string())
        .collect();
    let messages = wait_for_all(&ids, || receiver.messages(), cef_id);
    let delete = trail.iter().find(|e| e["Operation"] == "Delete").unwrap();
    let line = messages
        .iter()
        .find(|m| cef_id(m).as_deref() == delete["Id"].as_str())
        .unwrap();
    let cef = &line["cef"];
    assert_eq!(cef["version"], 0);
    assert_eq!(
        (cef["vendor"].as_str(), cef["product"].as_str()),
        (Some("Custos"), Some("Custos"))
    );
    assert_eq!(cef["signature"], "Delete");
    assert_eq!(cef["name"], "Delete account");
    assert_eq!(cef["severity"], 3);
    let ext = &cef["ext"];
    assert_eq!(ext["act"], "Delete");
    assert_eq!(ext["suser"], "admin");
    assert_eq!(ext["outcome"], "Succeeded");
    assert_eq!(ext["cs2Label"], "Entity");
    assert_eq!(ext["cs2"], "account");
    assert_eq!(ext["cs5"], account.as_str());
    assert_eq!(ext["cn1"], "1");
    assert_eq!(ext["src"], "127.0.0.1");
    assert_eq!(ext["requestClientApplication"], USER_AGENT);
    assert_eq!(line["pri"], 13 * 8 + 6);

    let another = create_account(&server, &admin, "Tailspin");
    let event = server.audit(&admin, &format!("operation=Create&recordId={another}"));
    wait_for_all(
        &[event[0]["Id"].as_str().unwrap().to_string()],
        || receiver.messages(),
        cef_id,
    );
    assert_eq!(
        receiver.connections(),
        1,
        "one TLS session carries every batch"
    );
    let status = stream_status(&server, &admin, &untrusted);
    assert_eq!(status["delivered"], 0);
    // What the failed handshake looked like is the operator's log's, not the reader's.
    assert_eq!(
        status["lastError"], "could not reach the receiver",
        "{status}"
    );
}

/// A server whose file streams write in `dir`, and which may reach loopback receivers.
fn server_with_stream_dir(dir: &std::path::Path) -> Server {
    Server::start(&[
        "--allow-private-targets",
        "--stream-dir",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn ocsf_and_json_lines_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_stream_dir(dir.path());
    let admin = server.admin();
    server.set_org(&admin, json!({"isuseraccessauditenabled": true}));
    server.audit_lists_of(&admin, "account");
    let ocsf_file = dir.path().join("ocsf.jsonl");
    let json_file = dir.path().join("audit.jsonl");
    for (name, format, path) in [("ocsf", "ocsf", &ocsf_file), ("lake", "json", &json_file)] {
        let response = create_stream(
            &server,
            &admin,
            json!({"name": name, "format": format,
                   "target": format!("file://{}", path.display())}),
        );
        assert_eq!(response.status(), 201);
    }
    let ann = server.token("admin", ADMIN_PASSWORD);
    let account = create_account(&server, &ann, "Northwind");
    get_json(&server.api("accounts"), &ann);
    let expected = events_after(&server, &admin, "SaveAuditStream");
    let lines = wait_for_all(
        &expected,
        || read_lines(&json_file),
        |l| l["Id"].as_str().map(str::to_string),
    );
    let (copies, lines): (Vec<Value>, Vec<Value>) = lines
        .into_iter()
        .partition(|l| l["RecordType"] == "CustosCheckpoint");
    for line in &lines {
        let id = line["Id"].as_str().unwrap();
        let record = get_json(&format!("{}/api/audit/records/{id}", server.base), &admin);
        assert_eq!(line, &record);
    }
    let ocsf = wait_for_all(
        &expected,
        || read_lines(&ocsf_file),
        |l| l["metadata"]["uid"].as_str().map(str::to_string),
    );
    // A checkpoint copy is no record of the log (it has none to read back); in OCSF it is an
    // API activity whose unmapped details hold the note.
    let copy = ocsf
        .iter()
        .find(|o| o["unmapped"]["RecordType"] == "CustosCheckpoint")
        .expect("the OCSF stream carries a checkpoint copy");
    let note = copy["unmapped"]["Details"]["Note"].as_str().unwrap();
    assert!(note.contains("\n\n— "), "{note}");
    assert!(
        !copies.is_empty(),
        "the JSON stream carries a checkpoint copy"
    );
    let by_operation = |operation: &str| {
        let id = lines
            .iter()
            .find(|l| l["Operation"] == operation)
            .unwrap_or_else(|| panic!("no {operation}"))["Id"]
            .clone();
        ocsf.iter()
            .find(|o| o["metadata"]["uid"] == id)
            .unwrap()
            .clone()
    };
    let sign_in = by_operation("SignIn");
    assert_eq!(sign_in["class_uid"], 3002);
    assert_eq!(sign_in["activity_id"], 1);
    assert_eq!(sign_in["type_uid"], 300201);
    assert_eq!(sign_in["user"]["name"], "admin");
    let create = by_operation("Create");
    assert_eq!(create["class_uid"], 6003);
    assert_eq!(create["type_uid"], 600301);
    assert_eq!(create["api"]["operation"], "Create");
    assert_eq!(create["resources"][0]["uid"], account.as_str());
    assert_eq!(create["resources"][0]["type"], "account");
    assert_eq!(create["status_id"], 1);
    assert_eq!(create["metadata"]["product"]["name"], "Custos");
    assert_eq!(create["src_endpoint"]["ip"], "127.0.0.1");
    let record = lines.iter().find(|l| l["Operation"] == "Create").unwrap();
    let ms = time::OffsetDateTime::parse(
        record["CreationTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp_nanos()
        / 1_000_000;
    assert_eq!(create["time"].as_i64().unwrap() as i128, ms);
    let list = by_operation("RetrieveMultiple");
    assert_eq!(list["activity_id"], 2, "Read");
    // Every line is an OCSF 1.1.0 record by the schema's own models (ocsf_check.py, apart from
    // Custos), a failed request's among them.
    let failed = send(
        client().get(server.api("accounts?$filter=nosuch eq 1")),
        &ann,
        None,
    );
    assert_eq!(failed.status(), 400);
    let failures = server.audit(&admin, "status=Failed");
    wait_for_all(
        &[failures[0]["Id"].as_str().unwrap().to_string()],
        || read_lines(&ocsf_file),
        |l| l["metadata"]["uid"].as_str().map(str::to_string),
    );
    let checked = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/ocsf_check.py"
        ))
        .arg(&ocsf_file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "ocsf_check.py needs pydantic-ocsf (scripts/test installs it): {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let report: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert!(report["checked"].as_u64().unwrap() > 5, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let failed = read_lines(&ocsf_file)
        .into_iter()
        .find(|l| l["metadata"]["uid"] == failures[0]["Id"])
        .unwrap();
    assert_eq!(
        (failed["status_id"].clone(), failed["severity_id"].clone()),
        (json!(2), json!(2)),
        "a failure is status Failure, severity Low"
    );
}

#[test]
fn streams_are_an_audit_managers_and_refusals_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_stream_dir(dir.path());
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let file = dir.path().join("out.jsonl");
    let good =
        json!({"name": "s", "format": "json", "target": format!("file://{}", file.display())});
    assert_eq!(
        odata_error(create_stream(&server, &bo, good.clone())).0,
        403
    );
    let listing = send(
        client().get(format!("{}/api/audit/streams", server.base)),
        &bo,
        None,
    );
    assert_eq!(listing.status(), 403);
    let inside = format!("file://{}", server.data_dir.join("control.db").display());
    let nowhere = format!(
        "file://{}",
        dir.path().join("no/such/folder/out.jsonl").display()
    );
    let folder = format!("file://{}", dir.path().display());
    for bad in [
        json!({"name": "s", "format": "json", "target": inside}),
        json!({"name": "s", "format": "json", "target": nowhere}),
        json!({"name": "s", "format": "json", "target": folder}),
        json!({"name": "s", "format": "leef", "target": "tcp://127.0.0.1:514"}),
        json!({"name": "s", "format": "json", "target": "udp://127.0.0.1:514"}),
        json!({"name": "s", "format": "json", "target": "tcp://127.0.0.1"}),
        json!({"name": "s", "format": "json", "target": "relative/path"}),
        json!({"name": "", "format": "json", "target": "tcp://127.0.0.1:514"}),
        json!({"name": "s", "format": "cef", "target": "tcp://127.0.0.1:514", "caCertificate": "x"}),
        json!({"name": "s", "format": "cef", "target": "tls://127.0.0.1:514", "caCertificate": "not pem"}),
        json!({"name": "s", "format": "json", "target": "tcp://127.0.0.1:514", "from": "yesterday"}),
        json!({"name": "s", "format": "json", "target": "tcp://127.0.0.1:514", "extra": 1}),
        json!({"name": "s", "format": "json", "target": "tcp://127.0.0.1:514", "authorization": "Bearer x"}),
    ] {
        let (status, code, message) = odata_error(create_stream(&server, &admin, bad.clone()));
        assert_eq!(
            (status, code.as_str()),
            (400, "BadRequest"),
            "{bad}: {message}"
        );
    }
    let missing = send(
        client().get(format!("{}/api/audit/streams/{}", server.base, uuid_like())),
        &admin,
        None,
    );
    assert_eq!(odata_error(missing).0, 404);

    let id = created_stream(&server, &admin, good);
    let marker = create_account(&server, &admin, "Before the delete");
    wait_for_all(
        &[
            server.audit(&admin, &format!("operation=Create&recordId={marker}"))[0]["Id"]
                .as_str()
                .unwrap()
                .to_string(),
        ],
        || read_lines(&file),
        |l| l["Id"].as_str().map(str::to_string),
    );
    let response = send(
        client().delete(format!("{}/api/audit/streams/{id}", server.base)),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let after = create_account(&server, &admin, "After the delete");
    std::thread::sleep(Duration::from_millis(800));
    let written: Vec<Value> = read_lines(&file);
    assert!(
        !written.iter().any(|l| l["RecordIds"][0] == after.as_str()),
        "a deleted stream sends nothing more"
    );
    let listing = get_json(&format!("{}/api/audit/streams", server.base), &admin);
    assert_eq!(listing["value"], json!([]));

    let saved = server.audit(&admin, "operation=SaveAuditStream");
    let statuses: Vec<&str> = saved
        .iter()
        .map(|e| e["ResultStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "Succeeded").count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == "Failed").count(), 13);
    assert_eq!(statuses.iter().filter(|s| **s == "Denied").count(), 1);
    let deleted = server.audit(&admin, "operation=DeleteAuditStream");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["Details"]["id"], id.as_str());
}

fn uuid_like() -> &'static str {
    "0b7e3c1e-0000-4000-8000-00000000beef"
}

#[test]
fn an_http_collector_gets_batches_with_its_token_and_a_refusal_is_retried() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let posts: std::sync::Arc<std::sync::Mutex<Vec<Post>>> = Default::default();
    let kept = posts.clone();
    let url = serve_posts(
        |n| if n == 0 { 503 } else { 200 },
        move |post| kept.lock().unwrap().push(post),
    );
    let response = create_stream(
        &server,
        &admin,
        json!({"name": "collector", "format": "ocsf", "target": url,
               "authorization": "Splunk 0f4c-secret", "from": "start"}),
    );
    assert_eq!(response.status(), 201);
    let created: Value = response.json().unwrap();
    assert_eq!(created["authorization"], "(set)", "the token is not echoed");
    let account = create_account(&server, &admin, "Contoso");
    let create = server.audit(&admin, &format!("operation=Create&recordId={account}"));
    let id = create[0]["Id"].as_str().unwrap().to_string();
    let received = || -> Vec<Value> {
        posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.status == 200)
            .flat_map(|p| {
                assert_eq!(p.header("authorization"), Some("Splunk 0f4c-secret"));
                assert_eq!(p.header("content-type"), Some("application/x-ndjson"));
                p.text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<Value>>()
            })
            .collect()
    };
    let lines = wait_for_all(std::slice::from_ref(&id), received, |l| {
        l["metadata"]["uid"].as_str().map(str::to_string)
    });
    let line = lines
        .iter()
        .find(|l| l["metadata"]["uid"] == id.as_str())
        .unwrap();
    assert_eq!(line["class_uid"], 6003);
    assert_eq!(
        posts.lock().unwrap()[0].status,
        503,
        "the first post was refused, then retried"
    );
    let saved = server.audit(&admin, "operation=SaveAuditStream");
    assert!(
        !saved[0]["Details"].to_string().contains("secret"),
        "the token is not recorded"
    );
}

#[test]
fn a_filtered_stream_sends_only_the_events_it_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_stream_dir(dir.path());
    let admin = server.admin();
    let file = dir.path().join("deletes.jsonl");
    let response = create_stream(
        &server,
        &admin,
        json!({"name": "deletes", "format": "json", "target": format!("file://{}", file.display()),
               "filter": {"operations": ["Delete", "BulkDelete"], "entities": ["account"]}}),
    );
    assert_eq!(response.status(), 201);
    let kept = create_account(&server, &admin, "Kept");
    let gone = create_account(&server, &admin, "Gone");
    let response = send(
        client().delete(server.api(&format!("accounts({gone})"))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let delete = &server.audit(&admin, "operation=Delete")[0];
    let id = delete["Id"].as_str().unwrap().to_string();
    let lines = wait_for_all(
        std::slice::from_ref(&id),
        || read_lines(&file),
        |l| l["Id"].as_str().map(str::to_string),
    );
    std::thread::sleep(Duration::from_millis(400));
    let lines = read_lines(&file)
        .into_iter()
        .chain(lines)
        .collect::<Vec<_>>();
    let (copies, events): (Vec<&Value>, Vec<&Value>) = lines
        .iter()
        .partition(|l| l["RecordType"] == "CustosCheckpoint");
    assert!(
        events.iter().all(|l| l["Operation"] == "Delete"),
        "{events:?}"
    );
    assert!(!events.iter().any(|l| l["RecordIds"][0] == kept.as_str()));
    // Whatever its filter, a stream carries the log's signed checkpoints: the SIEM's witness
    // copies, each the very note the log serves for its tree size.
    assert!(!copies.is_empty(), "{lines:?}");
    for copy in copies {
        assert_eq!(copy["Operation"], "SignedCheckpoint");
        let size = copy["Details"]["TreeSize"].as_u64().unwrap();
        let signed = send(
            client().get(format!(
                "{}/api/audit/checkpoint?treeSize={size}",
                server.base
            )),
            &admin,
            None,
        )
        .text()
        .unwrap();
        assert_eq!(copy["Details"]["Note"], signed.as_str());
    }
    let bad = create_stream(
        &server,
        &admin,
        json!({"name": "x", "format": "json", "target": format!("file://{}", file.display()),
               "filter": {"colour": ["red"]}}),
    );
    assert_eq!(odata_error(bad).0, 400);
}

/// Imports `count` contacts in one `ImportRecords`: one event listing `count` record ids.
pub(crate) fn import_contacts(server: &Server, token: &str, count: usize) {
    let content: String = std::iter::once("firstname,lastname\n".to_string())
        .chain((0..count).map(|i| format!("Person,{i}\n")))
        .collect();
    let imported = send(
        client().post(server.api("ImportRecords")),
        token,
        Some(json!({"EntitySetName": "contacts", "Content": content})),
    );
    assert_eq!(imported.status(), 200);
}

/// SHA-256 of `bytes` in lowercase hex, by Python's hashlib (not the server's code).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = python(
        &[
            "-c",
            "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ],
        bytes,
    );
    String::from_utf8_lossy(&digest.stdout).trim().to_string()
}

/// An import of 400 records is one event listing 400 record ids, over 8 KiB as syslog: a
/// receiver that drops a connection on a frame over 8 KiB (as a default syslog daemon does)
/// gets it as numbered parts within the limit, which join into the canonical record.
#[test]
fn an_event_too_large_for_a_frame_goes_as_parts_that_join_into_the_record() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(
        port,
        &dir.path().join("syslog.jsonl"),
        &["--max-frame", "8096"],
    );
    let id = created_stream(
        &server,
        &admin,
        json!({"name": "bounded", "format": "syslog", "target": format!("tcp://127.0.0.1:{port}")}),
    );
    assert_eq!(
        get_json(&format!("{}/api/audit/streams/{id}", server.base), &admin)["maxMessageBytes"],
        8096,
        "the default limit is stated"
    );
    import_contacts(&server, &admin, 400);
    let expected = events_after(&server, &admin, "SaveAuditStream");
    let messages = wait_for_all(&expected, || receiver.messages(), syslog_id);
    assert!(
        messages.iter().all(|m| m.get("overLimit").is_none()),
        "no frame over the limit"
    );
    let import = server.audit(&admin, "operation=ImportRecords");
    let event_id = import[0]["Id"].as_str().unwrap();
    let mut parts: Vec<&Value> = messages
        .iter()
        .filter(|m| syslog_id(m).as_deref() == Some(event_id))
        .collect();
    parts.sort_by_key(|m| {
        m["sd"]["custos@32473"]["part"]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    assert!(parts.len() > 1, "{parts:?}");
    let count = parts.len().to_string();
    let mut joined = String::new();
    for (i, part) in parts.iter().enumerate() {
        let sd = &part["sd"]["custos@32473"];
        assert_eq!(sd["part"], (i + 1).to_string());
        assert_eq!(sd["parts"], count.as_str());
        assert_eq!(sd["sha256"], parts[0]["sd"]["custos@32473"]["sha256"]);
        joined.push_str(part["fragment"].as_str().unwrap());
    }
    let record = get_json(
        &format!("{}/api/audit/records/{event_id}", server.base),
        &admin,
    );
    let joined_record: Value = serde_json::from_str(&joined).unwrap();
    assert_eq!(
        joined_record, record,
        "the parts join into the canonical record"
    );
    assert_eq!(joined_record["RecordIds"].as_array().unwrap().len(), 400);
    assert_eq!(
        sha256_hex(joined.as_bytes()),
        parts[0]["sd"]["custos@32473"]["sha256"].as_str().unwrap(),
        "each part names the SHA-256 of the whole record"
    );
    let status = stream_status(&server, &admin, &id);
    assert!(status["lastError"].is_null(), "{status}");
    // A limit outside 4 KiB .. 64 KiB is refused.
    for bad in [json!(100), json!(1_000_000), json!("8k")] {
        let refused = create_stream(
            &server,
            &admin,
            json!({"name": "x", "format": "syslog", "target": format!("tcp://127.0.0.1:{port}"), "maxMessageBytes": bad}),
        );
        assert_eq!(odata_error(refused).0, 400, "{bad}");
    }
}
