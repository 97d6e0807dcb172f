//! A stream over RELP (issue 15 item 2) to Debian's rsyslogd with `imrelp`, which writes each
//! message it takes to a file before it acknowledges it (direct queues): a receiver that stalls
//! and then dies loses nothing, because the stream resends from the first message the receiver
//! did not acknowledge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::streams::{
    create_stream, created_stream, events_after, free_port, stream_status, wait_for_all,
};

/// rsyslogd listening for RELP on `port`, writing every message it takes to `out`.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
main_queue(queue.type="direct")
module(load="imrelp")
input(type="imrelp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" file="{dir}/received.log" template="raw" queue.type="direct" asyncWriting="off" flushOnTXEnd="on")
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
                "these tests need Debian's rsyslog and rsyslog-relp (scripts/test installs them)",
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
        *self = Rsyslog::start(&self.dir.clone(), self.port);
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
    let mut receiver = Rsyslog::start(dir.path(), port);
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
