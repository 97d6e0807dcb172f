//! Scale-out (issue 13): a `custos serve` node whose audit log goes through a real 3-node NATS
//! JetStream cluster (Debian's `nats-server`, started here on loopback). Every acknowledged
//! request's event is in the log exactly once through a NATS node's SIGKILL and the custos
//! node's own; without a quorum nothing is answered (503), nothing is changed, and `/healthz`
//! says why until the quorum is back.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// A 3-server NATS cluster (`custos_bench::NatsCluster`) in a folder of its own.
struct NatsCluster {
    servers: custos_bench::NatsCluster,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    fn start() -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let servers = custos_bench::NatsCluster::start(dir.path())
            .expect("these tests need Debian's nats-server (scripts/test installs it)");
        NatsCluster { servers, _dir: dir }
    }

    fn run(&mut self, i: usize) {
        self.servers.run(i).expect("nats-server starts");
    }

    fn kill(&mut self, i: usize) {
        self.servers.kill(i);
    }

    fn urls(&self) -> String {
        self.servers.urls().join(",")
    }
}

fn node(dir: &Path, nats: &NatsCluster, id: &str) -> Server {
    Server::start_in(
        dir,
        &[
            "--nats",
            &nats.urls(),
            "--node-id",
            id,
            "--nats-replicas",
            "3",
        ],
    )
}

fn wait_for(what: &str, most: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + most;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {most:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The Create events of the log, by record id; none while the node cannot answer from the
/// whole log (503: its log behind the stream, or no quorum for a moment), which for the polls
/// that call this means "not yet".
fn creates(server: &Server, token: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let events = server
        .audit_if_answered(token, "operation=Create&entity=account")
        .unwrap_or_default();
    for event in events {
        *out.entry(event["RecordIds"][0].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// Writers creating accounts, each through the node whose base URL its slot holds (a slot is
/// changed when its node restarts on another port); they keep every acknowledged record id.
struct Load {
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(bases: Vec<Arc<Mutex<String>>>) -> Load {
        let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = bases
            .into_iter()
            .enumerate()
            .map(|(w, base)| {
                let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
                std::thread::spawn(move || write_accounts(w, &base, &acknowledged, &stop))
            })
            .collect();
        Load {
            acknowledged,
            stop,
            writers,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops the writers; the acknowledged record ids.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        for writer in self.writers {
            writer.join().unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

fn write_accounts(
    w: usize,
    base: &Mutex<String>,
    acknowledged: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut token: Option<String> = None;
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let at = base.lock().unwrap().clone();
        let Some(bearer) = token.clone().or_else(|| {
            client
                .post(format!("{at}/oauth2/token"))
                .form(&[
                    ("grant_type", "password"),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                ])
                .send()
                .ok()
                .filter(|r| r.status() == 200)
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|j| j["access_token"].as_str().map(str::to_string))
        }) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        token = Some(bearer.clone());
        n += 1;
        let sent = client
            .post(format!("{at}/main/api/data/v9.2/accounts"))
            .bearer_auth(&bearer)
            .json(&json!({"name": format!("writer {w} #{n}")}))
            .send();
        match sent {
            Ok(response) if response.status() == 204 => {
                acknowledged.lock().unwrap().push(entity_id(&response));
            }
            // Refused (503 while the stream has no quorum) or the node is down: not
            // acknowledged, so nothing is owed.
            Ok(response) if response.status() == 401 => token = None,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn every_acknowledged_event_is_in_the_log_once_through_nats_and_node_crashes() {
    let mut nats = NatsCluster::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("node-a");
    let mut server = node(&dir, &nats, "a");
    let base = Arc::new(Mutex::new(server.base.clone()));
    let load = Load::start(vec![base.clone(); 4]);
    let count = || load.count();
    wait_for("40 acknowledged creates", Duration::from_secs(60), || {
        count() >= 40
    });
    // A NATS node dies mid-load; the stream keeps a quorum on the other two.
    nats.kill(0);
    let before = count();
    wait_for(
        "40 more acknowledged creates with a NATS node down",
        Duration::from_secs(60),
        || count() >= before + 40,
    );
    // The custos node itself dies (SIGKILL) and comes back on the same data directory.
    server.kill();
    nats.run(0);
    server = node(&dir, &nats, "a");
    *base.lock().unwrap() = server.base.clone();
    let before = count();
    wait_for(
        "40 more acknowledged creates after the restarts",
        Duration::from_secs(60),
        || count() >= before + 40,
    );
    let acknowledged = load.stop();
    let admin = server.admin();
    let mut seen = HashMap::new();
    // The restarted node first makes its consumer and opens the archive, questions JetStream
    // may leave unanswered for 5 s at a time while the restarted NATS server rejoins (seen in
    // CI: the node's log still behind the stream 15 s after the load stopped).
    wait_for(
        "the log to hold every acknowledged create",
        Duration::from_secs(60),
        || {
            seen = creates(&server, &admin);
            acknowledged.iter().all(|id| seen.contains_key(id))
        },
    );
    for id in &acknowledged {
        assert_eq!(
            seen[id], 1,
            "record {id}: its Create event is in the log once"
        );
        let record = send(
            client().get(server.api(&format!("accounts({id})"))),
            &admin,
            None,
        );
        assert_eq!(record.status(), 200, "record {id} was written");
    }
    let ids: Vec<String> = server
        .audit(&admin, "")
        .iter()
        .map(|e| e["Id"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event is in the log twice");
    // The cluster's signer signs on its interval, not on a stop. Its first checkpoint after the
    // restarts may come late: while the restarted NATS server rejoins, JetStream elects leaders
    // and the lease bucket may not answer (each question to it waits up to 5 s, then again
    // after a pause) — seen in CI as no checkpoint 10 s after the load stopped.
    wait_signed_within(&server, &admin, ids.len() as u64, Duration::from_secs(60));
    assert!(server.stop().success());
    verify_offline(&dir, &[]);
}

/// `custos audit verify` on a stopped node's data directory, with `flags`; asserts it passes
/// and returns what it said.
fn verify_offline(dir: &Path, flags: &[&str]) -> String {
    let verified = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(flags)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{}: {said}", dir.display());
    said
}

#[test]
fn without_a_quorum_nothing_is_answered_or_changed() {
    let mut nats = NatsCluster::start();
    let data = tempfile::tempdir().unwrap();
    let server = node(&data.path().join("node-b"), &nats, "b");
    let admin = server.admin();
    create_account(&server, &admin, "with a quorum");
    let accounts = || count(&server, &admin, "accounts");
    let before = accounts();

    nats.kill(0);
    nats.kill(1);
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "without a quorum"})),
    );
    let (status, code, _) = odata_error(response);
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    assert_eq!(accounts(), before, "the refused create changed nothing");
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(health.status(), 503);
    let why = health.text().unwrap();
    assert!(why.contains("audit stream"), "{why}");

    nats.run(0);
    nats.run(1);
    wait_for(
        "/healthz to recover with the quorum",
        Duration::from_secs(60),
        || {
            client()
                .get(format!("{}/healthz", server.base))
                .send()
                .is_ok_and(|r| r.status() == 200)
        },
    );
    create_account(&server, &admin, "with the quorum back");
    assert_eq!(accounts(), before + 1);
}

/// Creates `n` accounts named after `label` and waits until the node's log holds their events.
fn create_in_log(server: &Server, admin: &str, n: usize, label: &str) -> Vec<String> {
    let made: Vec<String> = (0..n)
        .map(|i| create_account(server, admin, &format!("{label} {i}")))
        .collect();
    wait_for(
        "the log to hold the creates",
        Duration::from_secs(30),
        || {
            let seen = creates(server, admin);
            made.iter().all(|id| seen.contains_key(id))
        },
    );
    made
}

#[test]
fn a_lost_audit_folder_is_rebuilt_from_the_stream_to_the_same_tree() {
    let nats = NatsCluster::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("node-c");
    let mut server = node(&dir, &nats, "c");
    let admin = server.admin();
    // The log follows the stream: wait until it holds every create, then for a checkpoint.
    let made = create_in_log(&server, &admin, 30, "before the loss");
    let events = server.audit(&admin, "").len() as u64;
    assert!(events > made.len() as u64);
    let signed = wait_signed(&server, &admin, events);
    let kept = data.path().join("kept-checkpoint.txt");
    std::fs::write(&kept, &signed).unwrap();
    server.kill();

    // The node's log is lost (its directory and records stay: they are not the log).
    rebuild_and_hold_to(&dir, &nats, "c", &made, &kept);
}

/// Removes the log of the node `id` whose data directory is `dir` and starts it again: its log
/// is rebuilt from the cluster and holds every create of `made` once, and `custos audit verify`
/// holds it to the checkpoint in the file `kept`.
fn rebuild_and_hold_to(dir: &Path, nats: &NatsCluster, id: &str, made: &[String], kept: &Path) {
    let sealed_before = sealed_segments(dir);
    std::fs::remove_dir_all(dir.join("audit")).unwrap();
    std::fs::remove_dir_all(dir.join("cluster")).unwrap();
    let mut server = node(dir, nats, id);
    let admin = server.admin();
    wait_for(
        "the log to be rebuilt from the cluster",
        Duration::from_secs(60),
        || {
            let seen = creates(&server, &admin);
            made.iter().all(|id| seen.get(id) == Some(&1))
        },
    );
    assert!(server.stop().success());
    // The rebuilt log has, at the size signed before the loss, the very root signed then.
    let verified = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .arg("--checkpoint")
        .arg(kept)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{said}\nkept:\n{}\nverifier.key: {}",
        std::fs::read_to_string(kept).unwrap_or_default(),
        std::fs::read_to_string(dir.join("audit/verifier.key")).unwrap_or_default()
    );
    assert!(
        said.contains("the log extends the checkpoint kept outside"),
        "{said}"
    );
    // Cut at the same events, byte for byte: a partition the lost log had sealed is the
    // rebuilt log's too.
    let rebuilt = sealed_segments(dir);
    assert!(
        rebuilt.len() >= sealed_before.len(),
        "{} sealed segments before, {} rebuilt",
        sealed_before.len(),
        rebuilt.len()
    );
    for (name, bytes) in &sealed_before {
        let again = rebuilt.iter().find(|(n, _)| n == name);
        assert!(
            again.is_some_and(|(_, b)| b == bytes),
            "segment {name} is rebuilt with the same events"
        );
    }
}

/// The segment files of the log in the data directory `dir` but its active one (the last), by
/// name, with their bytes.
fn sealed_segments(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    found.sort();
    found.pop();
    found
}

/// A node's `/healthz` answer.
fn health(server: &Server) -> serde_json::Value {
    client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn sealed_partitions_go_to_the_object_store_and_a_node_starts_from_them_after_the_stream_is_trimmed()
 {
    let nats = NatsCluster::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("node-e");
    let mut server = node(&dir, &nats, "e");
    let admin = server.admin();
    let early = create_in_log(&server, &admin, 20, "archived");
    seal_partition(&server, &admin);
    let sealed = server.audit(&admin, "").len() as u64;
    // The signer archives the sealed events and trims the stream behind them.
    wait_for(
        "the sealed partition to be archived and the stream trimmed",
        Duration::from_secs(60),
        || {
            let cluster = &health(&server)["cluster"];
            cluster["archivedEvents"].as_u64() >= Some(sealed - 1)
                && cluster["streamTrimmedThrough"].as_u64() > Some(0)
        },
    );
    let late = create_in_log(&server, &admin, 10, "streamed");
    let events = server.audit(&admin, "").len() as u64;
    let signed = wait_signed(&server, &admin, events);
    let kept = data.path().join("kept-checkpoint.txt");
    std::fs::write(&kept, &signed).unwrap();
    server.kill();

    // The log is lost; the stream no longer holds the early events: they come from the archive.
    let made: Vec<String> = early.into_iter().chain(late).collect();
    rebuild_and_hold_to(&dir, &nats, "e", &made, &kept);
}

/// A throwaway PostgreSQL server (`scripts/throwaway-postgres`); stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    url: String,
}

fn throwaway_postgres(action: &str, dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/throwaway-postgres");
    let tls = dir.join("tls").exists() || dir.join("want-tls").exists();
    let out = Command::new(script)
        .arg(action)
        .arg(dir)
        .env("THROWAWAY_PG_TLS", if tls { "1" } else { "" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "these tests need Debian's postgresql (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let url = throwaway_postgres("start", dir.path());
        Postgres { dir, url }
    }

    /// A server that takes TLS, with a certificate signed by the CA in `ca.pem` of its folder.
    fn start_tls() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("want-tls"), "").unwrap();
        let url = throwaway_postgres("start", dir.path());
        Postgres { dir, url }
    }

    fn stop(&self) {
        throwaway_postgres("stop", self.dir.path());
    }

    fn run(&self) {
        assert_eq!(throwaway_postgres("start", self.dir.path()), self.url);
    }

    /// The instance schemas in the database.
    fn instance_schemas(&self) -> usize {
        let out = Command::new("psql")
            .arg(&self.url)
            .args([
                "-tAc",
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'instance\\_%'",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_node_on_postgresql_shares_its_tenant_and_a_lost_server_is_a_recorded_503() {
    let postgres = Postgres::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("node-p");
    let flags = ["--postgres", postgres.url.as_str()];
    let mut server = Server::start_in(&dir, &flags);
    let admin = server.admin();
    let id = create_account(&server, &admin, "Kept in PostgreSQL");
    assert!(
        !dir.join("instances/main/records.db").exists(),
        "no SQLite database beside PostgreSQL"
    );
    // Killed, it restarts at once: its claim on the database goes with its connection.
    server.kill();

    let mut server = Server::start_in(&dir, &flags);
    let admin = server.admin();
    let found = get_json(
        &server.api("accounts?$filter=contains(name,'postgresql')&$select=name"),
        &admin,
    );
    assert_eq!(found["value"][0]["accountid"], id.as_str(), "{found}");

    // A second node on the same database that is not a cluster node would keep an audit log
    // of its own: it is refused and told why; so is a cluster node while this one serves.
    for (flags, said) in [
        (vec![], "must all be cluster nodes"),
        (
            vec!["--nats", "nats://127.0.0.1:9", "--node-id", "q"],
            "is not a cluster node",
        ),
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path().join("node-q"))
            .args(["--postgres", postgres.url.as_str()])
            .args(flags)
            .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(said), "{stderr}");
    }

    // Without its record store the node refuses, says why, and records the refusal.
    postgres.stop();
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "while PostgreSQL is down"})),
    );
    let (status, code, message) = odata_error(response);
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    assert!(message.contains("record store"), "{message}");
    let refused = server.audit(&admin, "operation=Create&entity=account");
    assert!(
        refused
            .iter()
            .any(|e| e["ResultStatus"] == "Failed" && e["ErrorCode"] == "ServiceUnavailable"),
        "{refused:?}"
    );
    postgres.run();
    wait_for(
        "writes to resume with PostgreSQL back",
        Duration::from_secs(30),
        || {
            send(
                client().post(server.api("accounts")),
                &admin,
                Some(json!({"name": "PostgreSQL is back"})),
            )
            .status()
                == 204
        },
    );

    // An instance is a schema; deleting the instance drops it.
    assert_eq!(postgres.instance_schemas(), 1);
    let created = send(
        client().post(format!("{}/api/admin/instances", server.base)),
        &admin,
        Some(json!({"name": "sales"})),
    );
    assert!(created.status().is_success(), "{}", created.status());
    assert_eq!(postgres.instance_schemas(), 2);
    let deleted = send(
        client().delete(format!("{}/api/admin/instances/sales", server.base)),
        &admin,
        None,
    );
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(postgres.instance_schemas(), 1);
    assert!(server.stop().success());
}

/// A NATS cluster and a PostgreSQL for nodes that share them, each node in a folder of its own.
struct Shared {
    nats: NatsCluster,
    postgres: Postgres,
    data: tempfile::TempDir,
}

impl Shared {
    fn start() -> Shared {
        Shared {
            nats: NatsCluster::start(),
            postgres: Postgres::start(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self, id: &str) -> std::path::PathBuf {
        self.data.path().join(format!("node-{id}"))
    }

    /// The node `id` on its folder, started (again).
    fn node(&self, id: &str) -> Server {
        pg_node(
            &self.dir(id),
            &self.nats.urls(),
            &self.postgres.url,
            id,
            &[],
        )
    }
}

#[test]
fn two_nodes_on_one_postgresql_keep_in_step_with_each_others_changes() {
    let shared = Shared::start();
    let mut p = shared.node("p");
    let mut q = shared.node("q");
    let (admin_p, admin_q) = (p.admin(), q.admin());
    let within = Duration::from_secs(10);
    for dir in [shared.dir("p"), shared.dir("q")] {
        assert!(
            !dir.join("control.db").exists(),
            "no directory beside PostgreSQL"
        );
    }

    // A user created on one node signs in on the other; disabled on the other, it is refused
    // on the first within moments.
    let bo = p.add_user(&admin_p, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo_on_p = p.token("bo@contoso.test", "bo-password-1");
    wait_for("node q to know the new user", within, || {
        client()
            .post(format!("{}/oauth2/token", q.base))
            .form(&[
                ("grant_type", "password"),
                ("username", "bo@contoso.test"),
                ("password", "bo-password-1"),
            ])
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let disabled = send(
        client().patch(q.api(&format!("systemusers({bo})"))),
        &admin_q,
        Some(json!({"isdisabled": true})),
    );
    assert_eq!(disabled.status(), 204);
    wait_for(
        "node p to refuse the user disabled on node q",
        within,
        || send(client().get(p.api("accounts")), &bo_on_p, None).status() == 401,
    );

    // The nodes share the key that signs bearer tokens: a token of one works on the other, and
    // a session signed out on one is over on both.
    let session = p.admin();
    assert_eq!(
        send(client().get(q.api("accounts")), &session, None).status(),
        200
    );
    let signed_out = send(
        client().post(format!("{}/oauth2/logout", p.base)),
        &session,
        None,
    );
    assert!(signed_out.status().is_success(), "{}", signed_out.status());
    wait_for("node q to refuse the signed-out session", within, || {
        send(client().get(q.api("accounts")), &session, None).status() == 401
    });

    // Metadata published on one node is served by the other.
    let added = send(
        client().post(p.api("EntityDefinitions(LogicalName='account')/Attributes")),
        &admin_p,
        Some(json!({"AttributeType": "String", "SchemaName": "new_region"})),
    );
    assert_eq!(added.status(), 204);
    let published = send(client().post(p.api("PublishAllXml")), &admin_p, None);
    assert_eq!(published.status(), 204);
    wait_for("node q to serve the published attribute", within, || {
        send(
            client().post(q.api("accounts")),
            &admin_q,
            Some(json!({"name": "Fabrikam", "new_region": "EMEA"})),
        )
        .status()
            == 204
    });

    // Read auditing turned on through one node is in force on the other.
    p.set_org(&admin_p, json!({"isreadauditenabled": true}));
    p.set_entity_flags(
        &admin_p,
        "account",
        json!({"IsRetrieveAuditEnabled": {"Value": true}}),
    );
    p.publish(&admin_p);
    let id = create_account(&p, &admin_p, "Read on the other node");
    wait_for("node q to record a read", within, || {
        let read = send(
            client().get(q.api(&format!("accounts({id})"))),
            &admin_q,
            None,
        );
        assert_eq!(read.status(), 200);
        !q.audit(&admin_q, &format!("operation=Retrieve&recordId={id}"))
            .is_empty()
    });

    // A user's access is recorded once per interval on the cluster, not once per node. Read
    // auditing goes off in the same change, so a read on q that records nothing shows q holds it.
    p.set_org(
        &admin_p,
        json!({"isuseraccessauditenabled": true, "isreadauditenabled": false}),
    );
    wait_for("node q to take the new settings", within, || {
        let read = send(
            client().get(q.api(&format!("accounts({id})"))),
            &admin_q,
            None,
        );
        assert_eq!(read.status(), 200);
        let correlation = correlation_of(&read);
        !events_of(&q, &admin_q, &correlation)
            .iter()
            .any(|e| e["Operation"] == "Retrieve")
    });
    p.add_user(&admin_p, "cy@contoso.test", "cy-password-1", "Basic User");
    let cy = p.token("cy@contoso.test", "cy-password-1");
    let accesses = || {
        p.audit(&admin_p, "operation=UserAccessViaSdk&user=cy@contoso.test")
            .len()
    };
    let listed = send(client().get(p.api("accounts")), &cy, None);
    assert_eq!(listed.status(), 200);
    assert_eq!(accesses(), 1, "cy's access, recorded by node p");
    wait_for("node q to know cy", within, || {
        send(client().get(q.api("accounts")), &cy, None).status() == 200
    });
    for server in [&q, &p, &q] {
        let listed = send(client().get(server.api("accounts")), &cy, None);
        assert_eq!(listed.status(), 200);
        assert_eq!(accesses(), 1, "cy's access, recorded once for both nodes");
    }

    // An instance created through one node is served by the other.
    let created = send(
        client().post(format!("{}/api/admin/instances", p.base)),
        &admin_p,
        Some(json!({"name": "sales"})),
    );
    assert!(created.status().is_success(), "{}", created.status());
    wait_for("node q to serve the new instance", within, || {
        send(
            client().get(format!("{}/sales/api/data/v9.2/accounts", q.base)),
            &admin_q,
            None,
        )
        .status()
            == 200
    });

    // A backup taken through one node is listed and restored through the other.
    let before = create_account(&p, &admin_p, "Before the backup");
    let backed = send(
        client().post(format!("{}/api/admin/instances/main/backups", p.base)),
        &admin_p,
        Some(json!({"label": "shared"})),
    );
    assert_eq!(backed.status(), 201);
    let backup: serde_json::Value = backed.json().unwrap();
    let listed = get_json(
        &format!("{}/api/admin/instances/main/backups", q.base),
        &admin_q,
    );
    assert_eq!(listed["value"][0]["id"], backup["id"]);
    let after = create_account(&q, &admin_q, "After the backup");
    let restored = send(
        client().post(format!("{}/api/admin/instances/main/restore", q.base)),
        &admin_q,
        Some(json!({"backupId": backup["id"]})),
    );
    assert_eq!(restored.status(), 200);
    let status = |id: &str| {
        send(
            client().get(p.api(&format!("accounts({id})"))),
            &admin_p,
            None,
        )
        .status()
        .as_u16()
    };
    assert_eq!((status(&before), status(&after)), (200, 404));

    // An export job run by one node is followed and downloaded through the other.
    let started = send(
        client().post(format!("{}/api/audit/exports", p.base)),
        &admin_p,
        Some(json!({"format": "csv", "search": "operation=Create"})),
    );
    assert_eq!(started.status(), 202);
    let job: serde_json::Value = started.json().unwrap();
    let job = job["id"].as_str().unwrap().to_string();
    wait_for("node q to see the export finished", within, || {
        get_json(&format!("{}/api/audit/exports/{job}", q.base), &admin_q)["status"] == "succeeded"
    });
    let file = send(
        client().get(format!("{}/api/audit/exports/{job}/file", q.base)),
        &admin_q,
        None,
    );
    assert_eq!(file.status(), 200);
    let csv = file.text().unwrap();
    assert!(csv.contains("Create"), "{csv}");
    assert!(csv.lines().count() > 1, "{csv}");

    // Search turned off through one node is off on the other.
    let off = send(
        client().put(format!("{}/api/audit/settings", p.base)),
        &admin_p,
        Some(json!({"searchEnabled": false})),
    );
    assert!(off.status().is_success(), "search off: {}", off.status());
    wait_for("node q to refuse searches", within, || {
        send(
            client().get(format!("{}/api/audit/records", q.base)),
            &admin_q,
            None,
        )
        .status()
            == 409
    });

    // Sign-in lock-outs are the cluster's: failures spread over the two nodes lock the name on
    // both, as many failures on one node would.
    let sign_in = |server: &Server, password: &str| {
        client()
            .post(format!("{}/oauth2/token", server.base))
            .form(&[
                ("grant_type", "password"),
                ("username", "zoe@contoso.example"),
                ("password", password),
            ])
            .send()
            .unwrap()
            .status()
    };
    // Ten failures lock a name (throttle::USER_FAILURES_MAX).
    for n in 0..10 {
        let server = if n % 2 == 0 { &p } else { &q };
        assert_eq!(sign_in(server, "wrong").as_u16(), 400, "attempt {n}");
    }
    assert_eq!(sign_in(&p, "wrong").as_u16(), 429);
    assert_eq!(sign_in(&q, "wrong").as_u16(), 429);
    assert!(p.stop().success() && q.stop().success());
}

#[test]
fn an_audit_search_on_either_node_holds_what_both_acknowledged_or_is_refused() {
    let shared = Shared::start();
    let mut p = shared.node("p");
    let q = shared.node("q");
    let (admin_p, admin_q) = (p.admin(), q.admin());

    // A create acknowledged through one node is in the very next search on the other: no
    // waiting in the client.
    for i in 0..20 {
        let ((writer, written_as), (reader, read_as)) = if i % 2 == 0 {
            ((&p, &admin_p), (&q, &admin_q))
        } else {
            ((&q, &admin_q), (&p, &admin_p))
        };
        let id = create_account(writer, written_as, &format!("Searched at once {i}"));
        let found = reader.audit(read_as, &format!("operation=Create&recordId={id}"));
        assert_eq!(found.len(), 1, "create {i}, searched on the other node");
    }

    // A node whose log cannot follow the stream refuses searches and exports, saying how far
    // its log holds the stream, rather than answering from part of the log.
    assert!(p.stop().success());
    let applied = shared.dir("p").join("cluster").join("applied");
    let kept = std::fs::read(&applied).unwrap();
    std::fs::write(&applied, "not a stream sequence\n").unwrap();
    p = shared.node("p");
    let admin_p = p.admin();
    let id = create_account(&q, &admin_q, "Acknowledged while p is behind");
    let searched = format!("operation=Create&recordId={id}");
    let refused = send(
        client().get(format!("{}/api/audit/records?{searched}", p.base)),
        &admin_p,
        None,
    );
    assert_eq!(refused.status(), 503);
    let said = refused.text().unwrap();
    assert!(said.contains("holds the stream through sequence"), "{said}");
    let export = send(
        client().post(format!("{}/api/audit/exports", p.base)),
        &admin_p,
        Some(json!({"format": "csv", "search": searched})),
    );
    assert_eq!(export.status(), 503);
    assert_eq!(health(&p)["status"], "unavailable", "{}", health(&p));

    // Mended, it follows again and the search answers in full.
    std::fs::write(&applied, kept).unwrap();
    wait_for("node p to find the create", Duration::from_secs(30), || {
        p.audit_if_answered(&admin_p, &searched)
            .is_some_and(|found| found.len() == 1)
    });
}

/// A receiver on loopback that keeps every byte any connection sends.
struct Collector {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let into = received.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(mut connection) = connection else {
                    return;
                };
                let into = into.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 65536];
                    while let Ok(n) = std::io::Read::read(&mut connection, &mut buffer) {
                        if n == 0 {
                            return;
                        }
                        into.lock().unwrap().extend_from_slice(&buffer[..n]);
                    }
                });
            }
        });
        Collector { port, received }
    }

    /// How many times `text` was received.
    fn count(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.received.lock().unwrap())
            .matches(text)
            .count()
    }
}

#[test]
fn the_followers_run_on_one_node_of_a_cluster_and_another_takes_over() {
    let nats = NatsCluster::start();
    let postgres = Postgres::start();
    let data = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let urls = nats.urls();
    let node = |id: &str| {
        pg_node(
            &data.path().join(format!("node-{id}")),
            &urls,
            &postgres.url,
            id,
            &["--allow-private-targets"],
        )
    };
    let mut a = node("a");
    let b = node("b");
    let admin_a = a.admin();
    let admin_b = b.admin();
    let created = send(
        client().post(format!("{}/api/audit/streams", b.base)),
        &admin_b,
        Some(
            json!({"name": "soc", "format": "json", "target": format!("tcp://127.0.0.1:{}", collector.port)}),
        ),
    );
    assert!(created.status().is_success(), "{}", created.status());
    let stream: serde_json::Value = created.json().unwrap();
    let stream = stream["id"].as_str().unwrap().to_string();
    let mut made = Vec::new();
    for i in 0..10 {
        let (server, token) = if i % 2 == 0 {
            (&a, &admin_a)
        } else {
            (&b, &admin_b)
        };
        made.push(create_account(server, token, &format!("streamed {i}")));
    }
    // Every create reaches the receiver once: one node streams, though both hold the log.
    let event_ids = |server: &Server, token: &str, records: &[String]| -> Vec<String> {
        let by_record = creates_with_ids(server, token);
        records
            .iter()
            .filter_map(|record| by_record.get(record).cloned())
            .collect()
    };
    wait_for(
        "every create in the log and at the receiver",
        Duration::from_secs(30),
        || {
            let ids = event_ids(&b, &admin_b, &made);
            ids.len() == made.len() && ids.iter().all(|id| collector.count(id) >= 1)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    for id in event_ids(&b, &admin_b, &made) {
        assert_eq!(collector.count(&id), 1, "event {id} streamed once");
    }
    // Both nodes run the stream (node a heard of it from node b), and one delivers.
    let delivered = |server: &Server, token: &str| {
        get_json(
            &format!("{}/api/audit/streams/{stream}", server.base),
            token,
        )["status"]["delivered"]
            .as_u64()
            .unwrap()
    };
    let (by_a, by_b) = (delivered(&a, &admin_a), delivered(&b, &admin_b));
    assert!(
        (by_a == 0) != (by_b == 0),
        "exactly one node delivers: a {by_a}, b {by_b}"
    );

    // The node that streamed or not, the other goes on when one is lost.
    a.kill();
    let later: Vec<String> = (0..5)
        .map(|i| create_account(&b, &admin_b, &format!("after the loss {i}")))
        .collect();
    wait_for(
        "the surviving node to stream what came after",
        Duration::from_secs(30),
        || {
            let ids = event_ids(&b, &admin_b, &later);
            ids.len() == later.len() && ids.iter().all(|id| collector.count(id) >= 1)
        },
    );
}

/// The id of each account's Create event, by record id.
fn creates_with_ids(server: &Server, token: &str) -> HashMap<String, String> {
    server
        .audit(token, "operation=Create&entity=account")
        .iter()
        .map(|event| {
            (
                event["RecordIds"][0].as_str().unwrap().to_string(),
                event["Id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A cluster node on PostgreSQL and the NATS cluster at `urls`, with `more` flags.
fn pg_node(dir: &Path, urls: &str, postgres: &str, id: &str, more: &[&str]) -> Server {
    let mut flags = vec![
        "--nats",
        urls,
        "--node-id",
        id,
        "--nats-replicas",
        "3",
        "--postgres",
        postgres,
    ];
    flags.extend_from_slice(more);
    Server::start_in(dir, &flags)
}

/// The latest signed checkpoint a node serves.
fn latest_note(server: &Server, token: &str) -> String {
    send(
        client().get(format!("{}/api/audit/checkpoint", server.base)),
        token,
        None,
    )
    .text()
    .unwrap()
}

#[test]
fn two_nodes_through_crashes_hold_one_log_that_one_signer_signs() {
    let mut nats = NatsCluster::start();
    let postgres = Postgres::start();
    let data = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let (dir_a, dir_b) = (data.path().join("node-a"), data.path().join("node-b"));
    let fast_feed = ["--feed-interval-ms", "200"];
    let a = pg_node(&dir_a, &urls, &postgres.url, "a", &fast_feed);
    let mut b = pg_node(&dir_b, &urls, &postgres.url, "b", &fast_feed);
    let (base_a, base_b) = (
        Arc::new(Mutex::new(a.base.clone())),
        Arc::new(Mutex::new(b.base.clone())),
    );
    let load = Load::start(vec![
        base_a.clone(),
        base_b.clone(),
        base_a.clone(),
        base_b.clone(),
    ]);
    let more = |n: usize, what: &str| {
        let before = load.count();
        wait_for(what, Duration::from_secs(60), || load.count() >= before + n);
    };
    more(30, "30 acknowledged creates through the two nodes");
    // A NATS server dies mid-load, then a custos node (SIGKILL); both come back.
    nats.kill(0);
    more(30, "30 more acknowledged creates with a NATS server down");
    b.kill();
    more(10, "10 more acknowledged creates with node b down");
    nats.run(0);
    b = pg_node(&dir_b, &urls, &postgres.url, "b", &fast_feed);
    *base_b.lock().unwrap() = b.base.clone();
    more(30, "30 more acknowledged creates after the restarts");
    // A partition sealed under load ends after the same event on both nodes.
    let admin_a = a.admin();
    seal_partition(&a, &admin_a);
    more(20, "20 more acknowledged creates after the seal");
    let acknowledged = load.stop();

    let admin_b = b.admin();
    for (server, admin) in [(&a, &admin_a), (&b, &admin_b)] {
        let mut seen = HashMap::new();
        wait_for(
            "each node's log to hold every acknowledged create",
            Duration::from_secs(30),
            || {
                seen = creates(server, admin);
                acknowledged.iter().all(|id| seen.contains_key(id))
            },
        );
        for id in &acknowledged {
            assert_eq!(
                seen[id], 1,
                "record {id}: its Create event is in the log once"
            );
        }
    }
    // No record write is lost: every acknowledged create is in PostgreSQL, read through a.
    for id in &acknowledged {
        let record = send(
            client().get(a.api(&format!("accounts({id})"))),
            &admin_a,
            None,
        );
        assert_eq!(record.status(), 200, "record {id} was written");
    }
    // One signer, one key: both nodes name the same signer, serve the same verifier key, and
    // come to hold the very same latest checkpoint (the same size, root and signature).
    wait_for(
        "both nodes to name the same checkpoint signer",
        Duration::from_secs(30),
        || {
            let signer = health(&a)["cluster"]["checkpointSigner"].clone();
            signer.is_string() && health(&b)["cluster"]["checkpointSigner"] == signer
        },
    );
    let key = |server: &Server, token: &str| {
        get_json(&format!("{}/api/audit/keys", server.base), token)["value"][0]["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let root_key = key(&a, &admin_a);
    assert_eq!(key(&b, &admin_b), root_key);
    let total = a.audit(&admin_a, "").len() as u64;
    let mut notes = (String::new(), String::new());
    wait_for(
        "both nodes to hold the same latest checkpoint over every event",
        Duration::from_secs(30),
        || {
            notes = (latest_note(&a, &admin_a), latest_note(&b, &admin_b));
            let size: u64 = notes
                .0
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            notes.0 == notes.1 && size >= total
        },
    );
    // The same segments, byte for byte: sealed by the marker, and by size and day, at the same
    // events whichever way each node's fetches fell and through node b's crash.
    let (sealed_a, sealed_b) = (sealed_segments(&dir_a), sealed_segments(&dir_b));
    assert!(!sealed_a.is_empty(), "node a sealed a partition");
    assert_eq!(
        sealed_a.iter().map(|s| &s.0).collect::<Vec<_>>(),
        sealed_b.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    assert!(
        sealed_a == sealed_b,
        "the sealed segments hold the same bytes"
    );
    // An audit query run by one node is answered by the other, record for record (their logs
    // are the same, seq for seq).
    let started = send(
        client().post(format!("{}/api/audit/queries", a.base)),
        &admin_a,
        Some(json!({"displayName": "creates", "operationFilters": ["Create"]})),
    );
    assert_eq!(started.status(), 201);
    let query: serde_json::Value = started.json().unwrap();
    let query = query["id"].as_str().unwrap().to_string();
    wait_for(
        "node b to see the query succeeded",
        Duration::from_secs(30),
        || {
            get_json(&format!("{}/api/audit/queries/{query}", b.base), &admin_b)["status"]
                == "succeeded"
        },
    );
    // Every page: the load ran on through the seal, so there may be more than a page holds.
    let records = |server: &Server, token: &str| -> Vec<String> {
        let mut url = format!(
            "{}/api/audit/queries/{query}/records?$top=1000",
            server.base
        );
        let mut ids = Vec::new();
        loop {
            let page = get_json(&url, token);
            ids.extend(
                page["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_string()),
            );
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return ids,
            }
        }
    };
    let through_b = records(&b, &admin_b);
    assert!(
        through_b.len() >= acknowledged.len(),
        "{} records",
        through_b.len()
    );
    assert_eq!(through_b, records(&a, &admin_a));

    // A scheduled report runs on the node that runs the followers; both nodes show its runs.
    let saved = send(
        client().post(format!("{}/api/audit/reports", a.base)),
        &admin_a,
        Some(
            json!({"name": "Creates", "search": "operation=Create", "schedule": "hourly", "rangeDays": 1}),
        ),
    );
    assert_eq!(saved.status(), 201);
    let saved: serde_json::Value = saved.json().unwrap();
    let report = saved["id"].as_str().unwrap().to_string();
    for (server, token) in [(&a, &admin_a), (&b, &admin_b)] {
        wait_for(
            "each node to show the scheduled run",
            Duration::from_secs(30),
            || {
                let runs = get_json(
                    &format!("{}/api/audit/reports/{report}/runs", server.base),
                    token,
                );
                runs["value"].as_array().is_some_and(|runs| runs.len() == 1)
            },
        );
    }

    // The activity feed is the cluster's: one node publishes the blobs, and both list and
    // serve every one of them.
    let started = send(
        client().post(format!(
            "{}/api/v1.0/default/activity/feed/subscriptions/start?contentType=Audit.General",
            a.base
        )),
        &admin_a,
        None,
    );
    assert!(started.status().is_success(), "{}", started.status());
    let marker = create_account(&b, &admin_b, "In the feed");
    let mut event = String::new();
    wait_for(
        "the marker's Create in the log",
        Duration::from_secs(10),
        || {
            event = creates_with_ids(&a, &admin_a)
                .get(&marker)
                .cloned()
                .unwrap_or_default();
            !event.is_empty()
        },
    );
    for (server, token) in [(&a, &admin_a), (&b, &admin_b)] {
        wait_for(
            "each node to serve the blob with the marker",
            Duration::from_secs(30),
            || {
                let listing = get_json(
                    &format!(
                        "{}/api/v1.0/default/activity/feed/subscriptions/content?contentType=Audit.General",
                        server.base
                    ),
                    token,
                );
                listing.as_array().unwrap().iter().any(|content| {
                    get_json(content["contentUri"].as_str().unwrap(), token)
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|record| record["Id"] == event.as_str())
                })
            },
        );
    }

    let mut a = a;
    assert!(a.stop().success() && b.stop().success());
    for dir in [&dir_a, &dir_b] {
        verify_offline(dir, &["--key", &root_key]);
    }
    // A node's log is the stream's: reindexing it in place (which records an event of its
    // own) is refused, with the way to rebuild it instead.
    let reindexed = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "reindex", "--data-dir"])
        .arg(&dir_a)
        .args(["--postgres", &postgres.url])
        .output()
        .unwrap();
    assert!(!reindexed.status.success());
    assert!(
        String::from_utf8_lossy(&reindexed.stderr).contains("Rebuild it from the stream"),
        "{}",
        String::from_utf8_lossy(&reindexed.stderr)
    );
    verify_offline(&dir_a, &["--key", &root_key]);
}

#[test]
fn an_instance_placed_on_another_postgresql_server_is_served_by_every_node() {
    let nats = NatsCluster::start();
    let (home, shard) = (Postgres::start(), Postgres::start());
    let data = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let mut p = pg_node(&data.path().join("node-p"), &urls, &home.url, "p", &[]);
    let mut q = pg_node(&data.path().join("node-q"), &urls, &home.url, "q", &[]);
    let (admin_p, admin_q) = (p.admin(), q.admin());
    let instances = |server: &Server, token: &str| -> Vec<String> {
        get_json(&format!("{}/api/admin/instances", server.base), token)["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };

    // A database that cannot be reached is refused, and nothing is made.
    let refused = send(
        client().post(format!("{}/api/admin/instances", p.base)),
        &admin_p,
        Some(json!({"name": "nowhere", "database": "postgres://postgres@127.0.0.1:1/postgres"})),
    );
    assert_eq!(refused.status(), 400);
    assert!(!instances(&p, &admin_p).contains(&"nowhere".to_string()));

    // The password given is used, never shown (trust authentication ignores it here).
    let with_password = shard.url.replacen("postgres@", "postgres:s3cret@", 1);
    let created = send(
        client().post(format!("{}/api/admin/instances", p.base)),
        &admin_p,
        Some(json!({"name": "sales", "database": with_password})),
    );
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().unwrap();
    let shown = created["database"].as_str().unwrap();
    assert!(
        shown.starts_with("postgres://postgres@127.0.0.1:") && !shown.contains("s3cret"),
        "{shown}"
    );
    let mut recorded = Vec::new();
    wait_for(
        "the CreateInstance event in the log",
        Duration::from_secs(10),
        || {
            recorded = p.audit(&admin_p, "operation=CreateInstance");
            recorded
                .iter()
                .any(|event| event.to_string().contains("sales"))
        },
    );
    assert!(!serde_json::to_string(&recorded).unwrap().contains("s3cret"));
    assert_eq!((home.instance_schemas(), shard.instance_schemas()), (1, 1));

    // The other node serves it, writes land on its server, and a change published through one
    // node — announced on that server — is in force on the other.
    let sales = |server: &Server, path: &str| format!("{}/sales/api/data/v9.2/{path}", server.base);
    wait_for(
        "node q to serve the new instance",
        Duration::from_secs(10),
        || send(client().get(sales(&q, "accounts")), &admin_q, None).status() == 200,
    );
    let made = send(
        client().post(sales(&q, "accounts")),
        &admin_q,
        Some(json!({"name": "Sharded Ltd"})),
    );
    assert_eq!(made.status(), 204);
    let id = entity_id(&made);
    assert_eq!(
        send(
            client().get(sales(&p, &format!("accounts({id})"))),
            &admin_p,
            None
        )
        .status(),
        200
    );
    let added = send(
        client().post(sales(
            &p,
            "EntityDefinitions(LogicalName='account')/Attributes",
        )),
        &admin_p,
        Some(json!({"AttributeType": "String", "SchemaName": "new_shard"})),
    );
    assert_eq!(added.status(), 204);
    let published = send(client().post(sales(&p, "PublishAllXml")), &admin_p, None);
    assert_eq!(published.status(), 204);
    wait_for(
        "node q to serve the attribute published on p",
        Duration::from_secs(10),
        || {
            send(
                client().post(sales(&q, "accounts")),
                &admin_q,
                Some(json!({"name": "Shard two", "new_shard": "eu-2"})),
            )
            .status()
                == 204
        },
    );

    // Deleting the instance drops its schema on its own server.
    let deleted = send(
        client().delete(format!("{}/api/admin/instances/sales", q.base)),
        &admin_q,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert_eq!((home.instance_schemas(), shard.instance_schemas()), (1, 0));
    assert!(p.stop().success() && q.stop().success());
}

#[test]
fn a_node_reaches_postgresql_over_verified_tls_or_not_at_all() {
    let postgres = Postgres::start_tls();
    assert!(
        postgres.url.ends_with("sslmode=require"),
        "{}",
        postgres.url
    );
    let data = tempfile::tempdir().unwrap();
    // The server's certificate is signed by a CA nobody gave the node: it does not start.
    let refused = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("untrusting"))
        .args(["--postgres", &postgres.url])
        .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("certificate"), "{said}");

    let ca = postgres.dir.path().join("ca.pem");
    let server = Server::start_in(
        &data.path().join("trusting"),
        &[
            "--postgres",
            &postgres.url,
            "--postgres-ca",
            ca.to_str().unwrap(),
        ],
    );
    let admin = server.admin();
    let id = create_account(&server, &admin, "Over TLS");
    let read = send(
        client().get(server.api(&format!("accounts({id})"))),
        &admin,
        None,
    );
    assert_eq!(read.status(), 200);
    let out = Command::new("psql")
        .arg(&postgres.url)
        .args([
            "-tAc",
            "SELECT count(*) FILTER (WHERE NOT ssl) || ' ' || count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ])
        .output()
        .unwrap();
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (plain, all) = counts.split_once(' ').unwrap();
    assert_eq!(plain, "0", "every connection of the node is TLS");
    assert!(
        all.parse::<u32>().unwrap() > 0,
        "the node holds connections: {counts}"
    );
    let mut server = server;
    assert!(server.stop().success());
}

/// Retention in a cluster: the purge decided on one node is carried out on every node, at the
/// same partition, once a signed checkpoint covers its event; the archive keeps the purged
/// events' leaves and record ids alone, and a node rebuilt from it holds the range purged, the
/// same segments and a log that verifies.
#[test]
fn a_retention_purge_deletes_the_same_partition_on_every_node_and_a_rebuilt_node_keeps_it_deleted()
{
    let nats = NatsCluster::start();
    let postgres = Postgres::start();
    let data = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let (dir_a, dir_b) = (data.path().join("node-a"), data.path().join("node-b"));
    // The first node sets the cluster's memory budget; the next takes it without the flag.
    let mut a = pg_node(&dir_a, &urls, &postgres.url, "a", &["--audit-memory", "64"]);
    let mut b = pg_node(&dir_b, &urls, &postgres.url, "b", &[]);
    let (admin_a, admin_b) = (a.admin(), b.admin());
    // Partitions must be cut at the same events everywhere: another budget is refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("node-q"))
        .args(["--postgres", postgres.url.as_str(), "--nats", urls.as_str()])
        .args(["--node-id", "q", "--audit-memory", "32"])
        .env("CUSTOS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not the cluster's budget of 64 MiB"),
        "{stderr}"
    );
    crate::ingest::register_app(&a, &admin_a);
    let app = crate::ingest::app_token(&a);
    // A partition of an application's events six days old: sealed before them, and cut after
    // them by the first event of today.
    seal_partition(&a, &admin_a);
    let six_days_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(6))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let old: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            json!({"Operation": "PayrollRun", "Workload": "Payroll", "CreationTime": six_days_ago,
                   "ObjectIds": [format!("00000000-0000-4000-8000-{i:012}")]})
        })
        .collect();
    let ingested = send(
        client().post(format!("{}/api/audit/ingest", a.base)),
        &app,
        Some(json!(old)),
    );
    assert_eq!(ingested.status(), 200);
    let today = create_in_log(&a, &admin_a, 3, "today");
    let policy = json!({"defaultDays": 90, "policies": [
        {"name": "payroll runs", "recordTypes": [], "operations": ["PayrollRun"], "users": [], "days": 1}
    ]});
    let set = send(
        client().put(format!("{}/api/audit/retention", a.base)),
        &admin_a,
        Some(policy.clone()),
    );
    assert_eq!(set.status(), 200);
    // Polled while the stream may lack a quorum for a moment under load (a 503 is "not yet").
    let payroll = |server: &Server, token: &str| {
        server
            .audit_if_answered(token, "operation=PayrollRun")
            .map(|events| events.len())
    };
    wait_for(
        "both nodes to hold the old events, and node a the partition expired",
        Duration::from_secs(30),
        || {
            let preview = send(
                client().post(format!("{}/api/audit/retention/preview", a.base)),
                &admin_a,
                Some(policy.clone()),
            )
            .json::<serde_json::Value>()
            .unwrap();
            payroll(&a, &admin_a) == Some(20)
                && payroll(&b, &admin_b) == Some(20)
                && preview == json!({"partitions": 1, "events": 20})
        },
    );

    let ran = send(
        client().post(format!("{}/api/audit/retention/run", a.base)),
        &admin_a,
        None,
    );
    assert_eq!(ran.status(), 200);
    let ran: serde_json::Value = ran.json().unwrap();
    assert_eq!(ran["purged"].as_array().unwrap().len(), 1, "{ran}");
    assert_eq!(ran["purged"][0]["events"], 20, "{ran}");
    // Every node deletes it once a checkpoint covers the purge event; the purge event is in
    // every log.
    for (server, admin) in [(&a, &admin_a), (&b, &admin_b)] {
        wait_for(
            "the partition to be purged on every node",
            Duration::from_secs(30),
            || payroll(server, admin) == Some(0),
        );
        let purges = server.audit(admin, "operation=PurgeAuditLog&workload=Custos");
        assert!(
            purges
                .iter()
                .any(|e| e["Details"]["Events"] == 20 && e["Details"]["Partition"].is_string()),
            "{purges:?}"
        );
    }
    assert_eq!(
        sealed_segments(&dir_a),
        sealed_segments(&dir_b),
        "the same segments are left, byte for byte"
    );
    // Once the archive holds the range as leaves and record ids, no node keeps it aside.
    wait_for(
        "the archive to hold the purged range",
        Duration::from_secs(30),
        || {
            [&dir_a, &dir_b].iter().all(|dir| {
                std::fs::read_dir(dir.join("cluster/purged"))
                    .map(|mut entries| entries.next().is_none())
                    .unwrap_or(false)
            })
        },
    );
    let last = a.audit(&admin_a, "").len() as u64;
    let signed = wait_signed(&a, &admin_a, last);
    let kept = data.path().join("kept-checkpoint.txt");
    std::fs::write(&kept, &signed).unwrap();
    assert!(a.stop().success());
    assert!(b.stop().success());
    for dir in [&dir_a, &dir_b] {
        verify_offline(dir, &[]);
    }

    // Node a's log is lost: rebuilt from the archive and the stream, the range stays purged.
    let before = sealed_segments(&dir_a);
    std::fs::remove_dir_all(dir_a.join("audit")).unwrap();
    std::fs::remove_dir_all(dir_a.join("cluster")).unwrap();
    a = pg_node(&dir_a, &urls, &postgres.url, "a", &[]);
    let admin_a = a.admin();
    wait_for(
        "the log to be rebuilt from the cluster",
        Duration::from_secs(60),
        || {
            let seen = creates(&a, &admin_a);
            today.iter().all(|id| seen.get(id) == Some(&1))
        },
    );
    assert_eq!(
        a.audit(&admin_a, "operation=PayrollRun").len(),
        0,
        "the purged events are not brought back"
    );
    // The range imported as purged is recorded once the node meets its claim under a signed
    // checkpoint (a node stopped before that does not open, and is rebuilt again).
    wait_for(
        "the rebuilt node to record the purge",
        Duration::from_secs(30),
        || std::fs::metadata(dir_a.join("audit/pruned.log")).is_ok_and(|meta| meta.len() > 0),
    );
    assert!(a.stop().success());
    let said = verify_offline(&dir_a, &["--checkpoint", kept.to_str().unwrap()]);
    assert!(said.contains("20 of them purged by retention"), "{said}");
    let rebuilt = sealed_segments(&dir_a);
    for (name, bytes) in &before {
        assert!(
            rebuilt.iter().any(|(n, b)| n == name && b == bytes),
            "segment {name} is rebuilt the same"
        );
    }
}

/// Rotating a cluster's signing key: asked on one node, handed over by the node that signs the
/// cluster's checkpoints through the stream, taken by every node in stream order. Both nodes
/// hold the same key chain and the same checkpoints after it, a node restarts on its switched
/// key, and every log verifies from the root key through the handover.
#[test]
fn the_clusters_signing_key_rotates_through_the_stream_on_every_node() {
    let nats = NatsCluster::start();
    let postgres = Postgres::start();
    let data = tempfile::tempdir().unwrap();
    let urls = nats.urls();
    let (dir_a, dir_b) = (data.path().join("node-a"), data.path().join("node-b"));
    let a = pg_node(&dir_a, &urls, &postgres.url, "a", &[]);
    let mut b = pg_node(&dir_b, &urls, &postgres.url, "b", &[]);
    let (admin_a, admin_b) = (a.admin(), b.admin());
    create_in_log(&a, &admin_a, 5, "before the rotation");
    let chain = |server: &Server, token: &str| {
        get_json(&format!("{}/api/audit/keys", server.base), token)["value"].clone()
    };
    let root = chain(&a, &admin_a)[0]["key"].as_str().unwrap().to_string();

    // Asked on node b, whichever node signs.
    let rotated = send(
        client().post(format!("{}/api/audit/key/rotate", b.base)),
        &admin_b,
        None,
    );
    assert_eq!(rotated.status(), 200);
    let rotated: serde_json::Value = rotated.json().unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, root);
    let handover = rotated["handoverTreeSize"].as_u64().unwrap();
    assert!(handover > 0, "{rotated}");
    let expected = json!([
        {"key": root, "sinceTreeSize": 0},
        {"key": new_key, "sinceTreeSize": handover},
    ]);
    wait_for(
        "both nodes to take the handover",
        Duration::from_secs(30),
        || chain(&a, &admin_a) == expected && chain(&b, &admin_b) == expected,
    );
    let made = create_in_log(&a, &admin_a, 5, "after the rotation");
    let total = a.audit(&admin_a, "").len() as u64;
    wait_for(
        "both nodes to hold the same checkpoint, signed by the new key, over every event",
        Duration::from_secs(30),
        || {
            let (note_a, note_b) = (latest_note(&a, &admin_a), latest_note(&b, &admin_b));
            let size: u64 = note_a
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            note_a == note_b && size >= total
        },
    );
    // Node b starts again on the key it switched to.
    assert!(b.stop().success());
    b = pg_node(&dir_b, &urls, &postgres.url, "b", &[]);
    let admin_b = b.admin();
    assert_eq!(chain(&b, &admin_b), expected);
    wait_for(
        "node b's log to hold what was made after the rotation",
        Duration::from_secs(30),
        || {
            let seen = creates(&b, &admin_b);
            made.iter().all(|id| seen.get(id) == Some(&1))
        },
    );
    let mut a = a;
    for (server, dir) in [(&mut a, &dir_a), (&mut b, &dir_b)] {
        assert!(server.stop().success());
        let said = verify_offline(dir, &[]);
        assert!(said.contains("verified"), "{said}");
    }
}
