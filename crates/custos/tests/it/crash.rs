//! A crash loses no audit event whose request was answered: SIGKILL the server while eight
//! clients create records, restart it, and find an event for every acknowledged create.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[test]
fn every_acknowledged_create_survives_sigkill() {
    let mut server = Server::start(&[]);
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
    while acked.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    for thread in threads {
        thread.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the clients got answers before the kill: {}",
        acked.len()
    );

    let dir = server.data_dir.clone();
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
    drop(server);
}
