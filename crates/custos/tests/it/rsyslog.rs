//! Streams to Debian's rsyslogd, the syslog daemon a SOC most often puts in front of its SIEM.
//! Over RELP (issue 15 item 2) with `imrelp`, which writes each message it takes to a file
//! before it acknowledges it (direct queues): a receiver that stalls and then dies loses
//! nothing, because the stream resends from the first message the receiver did not acknowledge.
//! Over plain TCP with `imtcp` (RFC 6587 octet counting) and over TLS (RFC 5425, GnuTLS), at
//! its default message size: every message arrives whole and parses as RFC 5424 — an event too
//! large for one as parts that join into the canonical record, and as CEF lines that share out
//! its record ids.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::streams::{
    create_stream, created_stream, events_after, free_port, import_contacts, make_certificate,
    sha256_hex, stream_status, wait_for_all,
};

/// How rsyslogd listens.
#[derive(Clone, Copy)]
enum Listen {
    /// RELP (`imrelp`).
    Relp,
    /// Syslog over TCP, RFC 6587 octet counting (`imtcp`).
    Tcp,
    /// The same over TLS (RFC 5425; GnuTLS, `rsyslog-gnutls`), with `ca.pem`, `cert.pem` and
    /// `key.pem` in its folder.
    Tls,
}

/// rsyslogd listening on `port`, writing every message it takes to `received.log` as received
/// and to `fields.log` as the JSON of what it parsed.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
    listen: Listen,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, listen: Listen) -> Rsyslog {
        let d = dir.display();
        let (global, module) = match listen {
            Listen::Relp => (String::new(), r#"module(load="imrelp")"#.to_string()),
            Listen::Tcp => (String::new(), r#"module(load="imtcp")"#.to_string()),
            Listen::Tls => (
                format!(
                    r#" defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{d}/ca.pem" defaultNetstreamDriverCertFile="{d}/cert.pem" defaultNetstreamDriverKeyFile="{d}/key.pem""#
                ),
                r#"module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")"#.to_string(),
            ),
        };
        let input = match listen {
            Listen::Relp => "imrelp",
            Listen::Tcp | Listen::Tls => "imtcp",
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}"{global})
main_queue(queue.type="direct")
{module}
input(type="{input}" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="appName" name="app-name" format="jsonf")
  property(outname="msgId" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{dir}/received.log" template="raw" queue.type="direct" asyncWriting="off" flushOnTXEnd="on")
action(type="omfile" file="{dir}/fields.log" template="fields" queue.type="direct" asyncWriting="off" flushOnTXEnd="on")
"#,
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .spawn()
            .expect(
                "these tests need Debian's rsyslog, rsyslog-relp and rsyslog-gnutls (scripts/test installs them)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog {
            child,
            dir: dir.to_path_buf(),
            port,
            listen,
        }
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Kills it (SIGKILL) and starts another on the same port, appending to the same file.
    fn restart(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
        *self = Rsyslog::start(&self.dir.clone(), self.port, self.listen);
    }

    /// The event id in each message received (the `id` parameter of our structured data).
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let id = line
                    .split(" id=\"")
                    .nth(1)
                    .and_then(|rest| rest.get(..36))
                    .unwrap_or_default();
                json!({"id": id, "line": line})
            })
            .collect()
    }

    /// What rsyslogd parsed of each whole line it wrote (the event id from our structured data).
    fn parsed(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("fields.log")).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                let mut fields: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| json!({"error": format!("{e}: {line}")}));
                let sd = fields["sd"].as_str().unwrap_or_default();
                let id = sd.split(" id=\"").nth(1).and_then(|rest| rest.get(..36));
                fields["id"] = json!(id);
                let msg = fields["msg"].as_str().unwrap_or_default();
                fields["cefId"] = json!(cef_field(msg, "externalId"));
                fields
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_of(message: &Value) -> Option<String> {
    message["id"].as_str().map(str::to_string)
}

#[test]
fn a_relp_receiver_that_stalls_and_dies_loses_nothing() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut receiver = Rsyslog::start(dir.path(), port, Listen::Relp);
    let id = created_stream(
        &server,
        &admin,
        json!({"name": "relp", "format": "syslog", "target": format!("relp://127.0.0.1:{port}")}),
    );
    for i in 0..5 {
        create_account(&server, &admin, &format!("Before the stall {i}"));
    }
    let before = events_after(&server, &admin, "SaveAuditStream");
    wait_for_all(&before, || receiver.received(), id_of);
    let status = stream_status(&server, &admin, &id);
    assert_eq!(status["deliveryConfirmed"], true, "{status}");

    // The receiver stops reading (SIGSTOP) while events flow, then dies (SIGKILL).
    receiver.signal("-STOP");
    for i in 0..300 {
        create_account(&server, &admin, &format!("During the stall {i}"));
    }
    std::thread::sleep(Duration::from_secs(4));
    receiver.restart();
    let everything = events_after(&server, &admin, "SaveAuditStream");
    assert!(everything.len() > 300);
    wait_for_all(&everything, || receiver.received(), id_of);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stream_status(&server, &admin, &id);
        if status["lastError"].is_null() && status["behind"] == 0 {
            assert!(status["delivered"].as_u64().unwrap() >= everything.len() as u64);
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A RELP stream takes syslog messages only.
    let refused = create_stream(
        &server,
        &admin,
        json!({"name": "x", "format": "ocsf", "target": format!("relp://127.0.0.1:{port}")}),
    );
    assert_eq!(odata_error(refused).0, 400);
}

/// The value of `key` in a CEF line's extension (up to the next space: ids, counts, lists).
fn cef_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split(' ').next()
}

/// The SD-PARAM `name` of our structured-data element as rsyslogd passed it on.
fn sd_param<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    let sd = message["sd"].as_str()?;
    let start = sd.find(&format!(" {name}=\""))? + name.len() + 3;
    sd[start..].split('"').next()
}

#[test]
fn rsyslog_takes_every_message_over_tcp_whole_and_parses_it_as_rfc_5424() {
    through_rsyslog(Listen::Tcp);
}

#[test]
fn rsyslog_takes_every_message_over_tls_whole_and_parses_it_as_rfc_5424() {
    through_rsyslog(Listen::Tls);
}

/// A syslog stream and a CEF stream to rsyslogd at its defaults: an import of 400 records (as
/// parts) and an account with quotes, a backslash and a line break in its name, each checked
/// from rsyslogd's own parse of the messages.
fn through_rsyslog(listen: Listen) {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut stream = json!({"name": "syslog", "format": "syslog"});
    if let Listen::Tls = listen {
        make_certificate(dir.path());
        stream["target"] = json!(format!("tls://127.0.0.1:{port}"));
        stream["caCertificate"] =
            json!(std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    } else {
        stream["target"] = json!(format!("tcp://127.0.0.1:{port}"));
    }
    let receiver = Rsyslog::start(dir.path(), port, listen);
    let mut cef = stream.clone();
    cef["name"] = json!("cef");
    cef["format"] = json!("cef");
    created_stream(&server, &admin, cef);
    created_stream(&server, &admin, stream);
    // An import of 400 records is one event listing 400 ids: over rsyslogd's default message
    // size of 8 KiB, so it goes as parts.
    import_contacts(&server, &admin, 400);
    create_account(&server, &admin, "Zoë \"quoted\" \\ back\nslash");
    let expected = events_after(&server, &admin, "SaveAuditStream");
    wait_for_all(
        &expected,
        || receiver.parsed(),
        |m| m["cefId"].as_str().map(str::to_string),
    );
    let messages = wait_for_all(&expected, || receiver.parsed(), id_of);

    let mut parts: std::collections::BTreeMap<String, Vec<(usize, String)>> = Default::default();
    let mut cef_lines: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for message in &messages {
        assert_eq!(message["version"], "1", "RFC 5424: {message}");
        assert_eq!(message["appName"], "custos", "{message}");
        let text = message["msg"].as_str().unwrap();
        if text.starts_with("CEF:0|Custos|Custos|") {
            assert_eq!(message["msgId"], "-", "a CEF line has no MSGID: {message}");
            assert_eq!(message["sd"], "-", "nor structured data: {message}");
            let id = message["cefId"].as_str().unwrap();
            cef_lines
                .entry(id.to_string())
                .or_default()
                .push(text.to_string());
            continue;
        }
        let id = message["id"].as_str().unwrap();
        // The MSG is UTF-8 after a BOM (RFC 5424 §6.4), which rsyslogd passes on.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match sd_param(message, "part") {
            Some(number) => parts
                .entry(id.to_string())
                .or_default()
                .push((number.parse().unwrap(), text.to_string())),
            None => {
                let record: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("a whole record as MSG ({e}): {message}"));
                assert_eq!(record["Id"], id);
                assert_eq!(
                    message["msgId"], record["Operation"],
                    "MSGID is the operation"
                );
                if record["Operation"] == "SignedCheckpoint" {
                    // A witness copy of a checkpoint (docs/verify.md §5), not a log record.
                    continue;
                }
                let shown = get_json(&format!("{}/api/audit/records/{id}", server.base), &admin);
                assert_eq!(
                    record, shown,
                    "rsyslogd holds the record as the API shows it"
                );
            }
        }
    }
    let import = server.audit(&admin, "operation=ImportRecords");
    let import_id = import[0]["Id"].as_str().unwrap();
    assert_eq!(
        parts.len(),
        1,
        "only the import needed parts: {:?}",
        parts.keys()
    );
    let mut pieces = parts.remove(import_id).expect("the import's parts");
    pieces.sort();
    assert!(pieces.len() > 1);
    assert!(
        pieces
            .iter()
            .enumerate()
            .all(|(i, (number, _))| *number == i + 1),
        "every part once, none cut or lost"
    );
    let joined: String = pieces.into_iter().map(|(_, text)| text).collect();
    let record: Value = serde_json::from_str(&joined).expect("the parts join into JSON");
    assert_eq!(record["RecordIds"].as_array().unwrap().len(), 400);
    let shown = get_json(
        &format!("{}/api/audit/records/{import_id}", server.base),
        &admin,
    );
    assert_eq!(record, shown, "the parts join into the canonical record");
    let named = messages
        .iter()
        .find(|m| m["id"] == import_id)
        .and_then(|m| sd_param(m, "sha256"))
        .unwrap();
    assert_eq!(sha256_hex(joined.as_bytes()), named);

    // The CEF stream: the import's ids shared out over lines that each fit, none lost.
    let lines = &cef_lines[import_id];
    assert!(lines.len() > 1, "{lines:?}");
    let mut ids = std::collections::BTreeSet::new();
    for line in lines {
        assert_eq!(cef_field(line, "cn1"), Some("400"), "{line}");
        assert_eq!(
            cef_field(line, "cn3"),
            Some(lines.len().to_string().as_str())
        );
        ids.extend(
            cef_field(line, "cs5")
                .unwrap()
                .split(',')
                .map(str::to_string),
        );
    }
    let logged: std::collections::BTreeSet<String> = shown["RecordIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, logged, "every record id in one CEF line or another");
}
