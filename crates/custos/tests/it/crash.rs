//! A crash loses no audit event whose request was answered: SIGKILL the server while eight
//! clients create records, three times over; after each kill `custos audit verify` passes and
//! a restarted server has an event for every acknowledged create.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// Runs eight writers against `server` and SIGKILLs it once `kill_after` creates were answered;
/// returns the ids of the acknowledged creates.
fn creates_until_killed(server: &mut Server, kill_after: usize) -> BTreeSet<String> {
    let admin = server.admin();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (url, token, acked) = (server.api("accounts"), admin.clone(), acked.clone());
            std::thread::spawn(move || {
                let client = client();
                let started = Instant::now();
                // Bounded: stops at 2,000 creates, after 60 s, or when the server is gone.
                for i in 0..2000 {
                    if started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"name": format!("t{t} n{i}")}))
                        .send();
                    match sent {
                        Ok(response) if response.status() == 204 => {
                            acked.lock().unwrap().insert(entity_id(&response));
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while acked.lock().unwrap().len() < kill_after && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    for thread in threads {
        thread.join().unwrap();
    }

    acked.lock().unwrap().clone()
}

fn verify(dir: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "verify after a crash:\n{stdout}"
    );
    assert!(stdout.contains("verified"), "{stdout}");
}

#[test]
fn every_acknowledged_create_survives_repeated_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut acked = BTreeSet::new();
    for (cycle, kill_after) in [150, 60, 250].into_iter().enumerate() {
        let mut server = Server::start_in(&dir, &[]);
        let this_cycle = creates_until_killed(&mut server, kill_after);
        assert!(
            this_cycle.len() >= kill_after.min(50),
            "cycle {cycle}: the clients got answers before the kill: {}",
            this_cycle.len()
        );
        acked.extend(this_cycle);
        verify(&dir);
    }
    let restarted = Server::start_in(&dir, &[]);
    let admin = restarted.admin();
    let logged: BTreeSet<String> = restarted
        .audit(&admin, "operation=Create&entity=account")
        .iter()
        .map(|e| e["RecordIds"][0].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged creates have no event: {missing:?}",
        missing.len()
    );
    assert!(
        count(&restarted, &admin, "accounts") >= acked.len() as u64,
        "every acknowledged record was committed"
    );
}
