//! A server process per test: started on a fresh data directory, stopped (SIGKILL) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const USER_AGENT: &str = "custos-it/1.0 (integration test)";

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a new data directory.
    pub fn start(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = Server::start_in(&dir, args);
        server._tmp = Some(tmp);
        server
    }

    /// A server on `dir` (which may hold an earlier server's data).
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        Server::start_with(&mut Command::new(env!("CARGO_BIN_EXE_custos")), dir, args)
    }

    /// A server started by `command` (the binary, or a wrapper that execs it with arguments).
    /// Unless `args` set `--verify-interval-secs`, the server verifies its log only when asked:
    /// its own verification a minute after the start would add a system `VerifyAuditLog` event
    /// to the log of any test running longer (`tamper.rs` tests the schedule).
    pub fn start_with(command: &mut Command, dir: &Path, args: &[&str]) -> Server {
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args);
        if !args.contains(&"--verify-interval-secs") {
            command.args(["--verify-interval-secs", "0"]);
        }
        let mut child = command
            .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the custos binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("custos: listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server prints its address");
        Server {
            child,
            base,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Stops the server with SIGTERM and waits (at most 20 s) for it to exit; its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/metrics`, read with `token`.
    pub fn metrics(&self, token: &str) -> String {
        send(client().get(format!("{}/metrics", self.base)), token, None)
            .text()
            .unwrap()
    }

    /// The value of the metric `name` (without labels) in `/metrics`.
    pub fn metric(&self, token: &str, name: &str) -> u64 {
        let metrics = self.metrics(token);
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/main/api/data/v9.2/{path}", self.base)
    }

    /// A password sign-in at the token endpoint, ready to send.
    pub fn sign_in_request(&self, user: &str, password: &str) -> RequestBuilder {
        client().post(format!("{}/oauth2/token", self.base)).form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
        ])
    }

    pub fn token(&self, user: &str, password: &str) -> String {
        let response = self.sign_in_request(user, password).send().unwrap();
        assert_eq!(response.status(), 200, "sign-in of {user}");
        response.json::<Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn admin(&self) -> String {
        self.token("admin", ADMIN_PASSWORD)
    }

    /// Creates a user with a role; returns its id.
    pub fn add_user(&self, admin: &str, upn: &str, password: &str, role: &str) -> String {
        let response = send(
            client().post(self.api("systemusers")),
            admin,
            Some(json!({"domainname": upn, "fullname": upn, "password": password})),
        );
        assert_eq!(response.status(), 204, "create user {upn}");
        let id = entity_id(&response);
        let roles = get_json(&self.api(&format!("roles?$filter=name eq '{role}'")), admin);
        let role_id = roles["value"][0]["roleid"].as_str().unwrap().to_string();
        let body = json!({"@odata.id": self.api(&format!("roles({role_id})"))});
        let response = send(
            client().post(self.api(&format!(
                "systemusers({id})/systemuserroles_association/$ref"
            ))),
            admin,
            Some(body),
        );
        assert_eq!(response.status(), 204, "assign {role} to {upn}");
        id
    }

    /// Makes a custom security role named `name` holding `privileges` (`prvReadaccount`…), as
    /// `admin`; its id.
    pub fn add_role(&self, admin: &str, name: &str, privileges: &[&str]) -> String {
        let role = entity_id(&send(
            client().post(self.api("roles")),
            admin,
            Some(json!({"name": name})),
        ));
        let privileges: Vec<Value> = privileges
            .iter()
            .map(|p| json!({"PrivilegeName": p}))
            .collect();
        let granted = send(
            client().post(self.api(&format!(
                "roles({role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"
            ))),
            admin,
            Some(json!({"Privileges": privileges})),
        );
        assert_eq!(granted.status(), 200, "privileges of {name}");
        role
    }

    /// Makes a user `upn` holding only a custom role of `privileges` (named `role`), as
    /// `admin`; the user's token.
    pub fn user_holding(&self, admin: &str, upn: &str, role: &str, privileges: &[&str]) -> String {
        const PASSWORD: &str = "Holder-Pass-1";
        self.add_role(admin, role, privileges);
        self.add_user(admin, upn, PASSWORD, role);
        self.token(upn, PASSWORD)
    }

    /// Adds the published 64-bit whole number `new_population` to accounts, as `admin`: whole
    /// numbers out of the box are 32-bit, and some tests need one beyond 2^53.
    pub fn add_population(&self, admin: &str) {
        let made = send(
            client().post(self.api("EntityDefinitions(LogicalName='account')/Attributes")),
            admin,
            Some(json!({"AttributeType": "BigInt", "SchemaName": "new_population"})),
        );
        assert_eq!(made.status(), 204, "new_population");
        self.publish(admin);
    }

    /// Adds the alternate key `new_accountnumber` (accounts by `accountnumber`) to the draft, as
    /// `admin`; the next publish puts it into force.
    pub fn add_account_number_key(&self, admin: &str) {
        let made = send(
            client().post(self.api("EntityDefinitions(LogicalName='account')/Keys")),
            admin,
            Some(json!({"SchemaName": "new_AccountNumber", "KeyAttributes": ["accountnumber"]})),
        );
        assert_eq!(made.status(), 204, "new_accountnumber");
    }

    pub fn organization_id(&self, token: &str) -> String {
        get_json(&self.api("WhoAmI"), token)["OrganizationId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn set_org(&self, token: &str, settings: Value) {
        let org = self.organization_id(token);
        let response = send(
            client().patch(self.api(&format!("organizations({org})"))),
            token,
            Some(settings),
        );
        assert_eq!(response.status(), 204, "organization settings");
    }

    pub fn set_entity_flags(&self, token: &str, entity: &str, flags: Value) {
        let url = self.api(&format!("EntityDefinitions(LogicalName='{entity}')"));
        let response = send(client().patch(url), token, Some(flags));
        assert_eq!(response.status(), 204, "entity flags");
    }

    /// Turns on read auditing for the instance and retrieve multiple auditing for `entity`,
    /// and publishes: every list of `entity` is recorded from now on.
    pub fn audit_lists_of(&self, token: &str, entity: &str) {
        self.set_org(token, json!({"isreadauditenabled": true}));
        self.set_entity_flags(
            token,
            entity,
            json!({"IsRetrieveMultipleAuditEnabled": {"Value": true}}),
        );
        self.publish(token);
    }

    /// Turns on auditing of changes, reads and lists for the instance and each of `entities`,
    /// and publishes.
    pub fn audit_reads_of(&self, token: &str, entities: &[&str]) {
        self.set_org(
            token,
            json!({"isauditenabled": true, "isreadauditenabled": true}),
        );
        for entity in entities {
            self.set_entity_flags(
                token,
                entity,
                json!({
                    "IsAuditEnabled": {"Value": true},
                    "IsRetrieveAuditEnabled": {"Value": true},
                    "IsRetrieveMultipleAuditEnabled": {"Value": true},
                }),
            );
        }
        self.publish(token);
    }

    pub fn publish(&self, token: &str) {
        let response = send(client().post(self.api("PublishAllXml")), token, None);
        assert_eq!(response.status(), 204, "publish");
    }

    /// Every audit record matching `filters`, following every page.
    pub fn audit(&self, token: &str, filters: &str) -> Vec<Value> {
        self.audit_pages(filters, &mut |url| Some(get_json(url, token)))
            .expect("every page answered")
    }

    /// [`Server::audit`], or `None` when a page was refused with 503 because the node could not
    /// make its audit event durable (in a cluster, the stream without a quorum for a moment):
    /// for polls that wait for a state, where such a moment means "not yet".
    pub fn audit_if_answered(&self, token: &str, filters: &str) -> Option<Vec<Value>> {
        self.audit_pages(filters, &mut |url| {
            let response = send(client().get(url), token, None);
            let status = response.status();
            let body: Value = response.json().unwrap();
            if status == 503 {
                return None;
            }
            assert_eq!(status, 200, "GET {url}: {body}");
            Some(body)
        })
    }

    fn audit_pages(
        &self,
        filters: &str,
        get: &mut dyn FnMut(&str) -> Option<Value>,
    ) -> Option<Vec<Value>> {
        let mut url = format!(
            "{}/api/audit/records?top=1000&start=2000-01-01&{filters}",
            self.base
        );
        let mut out = Vec::new();
        loop {
            let page = get(&url)?;
            out.extend(page["value"].as_array().unwrap().iter().cloned());
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return Some(out),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> Client {
    Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn send(builder: RequestBuilder, token: &str, body: Option<Value>) -> Response {
    let builder = builder.bearer_auth(token);
    let builder = match body {
        Some(body) => builder.json(&body),
        None => builder,
    };
    builder.send().unwrap()
}

pub fn get_json(url: &str, token: &str) -> Value {
    let response = send(client().get(url), token, None);
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// The id in a create's `OData-EntityId` header.
pub fn entity_id(response: &Response) -> String {
    let header = response.headers()["odata-entityid"].to_str().unwrap();
    header
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_string()
}

/// The OData error of a refused request: (status, code, message).
pub fn odata_error(response: Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().expect("an OData error body");
    (
        status,
        body["error"]["code"].as_str().unwrap().to_string(),
        body["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// Every row of sheet `sheet` of the workbook at `path`, as read by Python's openpyxl (an
/// independent reader of the format; `scripts/test` installs it), header row first.
pub fn xlsx_rows(path: &Path, sheet: &str) -> Vec<Vec<Value>> {
    let script = r#"
import json, sys, datetime
from openpyxl import load_workbook
book = load_workbook(sys.argv[1], read_only=True)
rows = [list(r) for r in book[sys.argv[2]].iter_rows(values_only=True)]
print(json.dumps(rows, default=str))
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(sheet)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "openpyxl could not read {} (scripts/test installs it): {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A webhook receiver on loopback: answers 500 to the first post, 200 to the others, and
/// keeps the bodies of the accepted ones.
pub fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let url = serve_posts(
        |n| if n == 0 { 500 } else { 200 },
        move |post| {
            if post.status == 200 {
                kept.lock().unwrap().push(post.body);
            }
        },
    );
    (url, bodies)
}

/// A post a webhook receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Post {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (null when it is not JSON), and as text.
    pub body: Value,
    pub text: String,
}

impl Post {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on loopback that answers the n-th post (from 0) with `answer(n)` and
/// hands every post to `keep`; returns its URL.
pub fn serve_posts(
    answer: impl Fn(usize) -> u16 + Send + 'static,
    mut keep: impl FnMut(Post) + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
            let length = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = answer(n);
            keep(Post {
                status,
                headers,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                text: String::from_utf8_lossy(&body).into_owned(),
            });
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    url
}

/// Creates an account named `name`; returns its id.
pub fn create_account(server: &Server, token: &str, name: &str) -> String {
    let response = send(
        client().post(server.api("accounts")),
        token,
        Some(json!({"name": name})),
    );
    assert_eq!(response.status(), 204);
    entity_id(&response)
}

/// The `name` of each record (or row) of a list's page, in order.
pub fn names(page: &Value) -> Vec<&str> {
    page["value"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect()
}

/// The correlation id of a request, which its events carry.
pub fn correlation_of(response: &Response) -> String {
    response.headers()["x-ms-service-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The events of one request of instance `main`, found by its correlation id.
pub fn events_of(server: &Server, token: &str, correlation: &str) -> Vec<Value> {
    server
        .audit(token, "instance=main")
        .into_iter()
        .filter(|e| e["CorrelationId"] == correlation)
        .collect()
}

pub fn count(server: &Server, token: &str, set: &str) -> u64 {
    get_json(&server.api(&format!("{set}?$count=true&$top=1")), token)["@odata.count"]
        .as_u64()
        .unwrap()
}

/// Waits until the log's latest signed checkpoint covers at least `events` events (the server
/// signs on its interval, about once a second while events come); returns the checkpoint note.
pub fn wait_signed(server: &Server, token: &str, events: u64) -> String {
    wait_signed_within(server, token, events, Duration::from_secs(10))
}

/// [`wait_signed`], waiting up to `limit`.
pub fn wait_signed_within(server: &Server, token: &str, events: u64, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let note = send(
            client().get(format!("{}/api/audit/checkpoint", server.base)),
            token,
            None,
        )
        .text()
        .unwrap();
        let size: u64 = note
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if size >= events {
            return note;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint covered {events} events within {limit:?}: {note}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seals the log's active partition: a support engineer, let in for a ticket, runs the backend
/// command `seal-partition`.
pub fn seal_partition(server: &Server, admin: &str) {
    let engineer: Value = send(
        client().post(format!("{}/api/admin/support/engineers", server.base)),
        admin,
        Some(json!({"upn": "eng@support.test", "password": "engineer-password-1"})),
    )
    .json()
    .unwrap();
    let opened = send(
        client().post(format!("{}/api/admin/support/grants", server.base)),
        admin,
        Some(json!({"engineerId": engineer["id"], "ticket": "T-1", "instance": "main"})),
    );
    assert_eq!(opened.status(), 201);
    let eng = server.token("eng@support.test", "engineer-password-1");
    let sealed = send(
        client().post(format!("{}/api/support/backend", server.base)),
        &eng,
        Some(json!({"command": "seal-partition", "ticket": "T-1"})),
    );
    assert_eq!(sealed.status(), 200);
}

/// Stops `server` with SIGKILL and checks with `custos audit verify` that the log it leaves
/// verifies.
pub fn kill_and_verify(server: &mut Server) {
    let data = server.data_dir.clone();
    server.kill();
    let verified = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
}

/// Runs schemathesis (`st run`) with the configuration `config` on the OpenAPI `document`, as
/// `token`, with `args`; fails the test on any failure it reports, and gives how many requests
/// it generated.
pub fn schemathesis(config: &Path, document: &str, token: &str, args: &[&str]) -> u64 {
    let output = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(config)
        .arg("run")
        .arg(document)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--seed", "42", "--request-timeout", "30"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        !said.contains("No module named"),
        "schemathesis is not installed (scripts/test installs it)"
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    said.lines()
        .find(|l| l.contains(" generated, "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Every record id the audit records `events` name.
pub fn record_ids(events: &[Value]) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .flat_map(|e| e["RecordIds"].as_array().expect("RecordIds").iter())
        .map(|id| id.as_str().expect("a record id").to_string())
        .collect()
}

/// Runs `python3` with `args`, `input` on its standard input; its output.
pub fn python(args: &[&str], input: &[u8]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("a piped stdin")
                .write_all(input)?;
            child.wait_with_output()
        })
        .expect("python3 runs")
}

/// Starts a verification of the live log (`POST /api/audit/verify`, as `token`) and waits for
/// its outcome.
pub fn verify_live(server: &Server, token: &str) -> Value {
    let url = format!("{}/api/audit/verify", server.base);
    let started = send(client().post(&url), token, None);
    assert_eq!(started.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = get_json(&url, token);
        if last["status"] != "running" {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verification ran too long"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status of each answer of a JSON `$batch` answer, in order.
pub fn batch_statuses(answer: &Value) -> Vec<u64> {
    answer["responses"]
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|r| r["status"].as_u64().expect("a status"))
        .collect()
}
