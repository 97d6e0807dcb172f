//! Sign-in abuse (issue 10 §4): a name or an address that keeps failing is locked out with 429
//! and `Retry-After`; an unknown name costs the same work as a known one; what a failed sign-in
//! records is bounded, and a flood collapses into counted events.

use serde_json::Value;

use crate::common::*;

fn sign_in(server: &Server, user: &str, password: &str) -> reqwest::blocking::Response {
    server.sign_in_request(user, password).send().unwrap()
}

#[test]
fn a_name_that_keeps_failing_is_locked_out_and_says_for_how_long() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    for _ in 0..10 {
        assert_eq!(sign_in(&server, "bo@contoso.test", "guess").status(), 400);
    }
    // Locked: even the right password is not checked.
    let locked = sign_in(&server, "BO@contoso.test", "bo-password-1");
    assert_eq!(locked.status(), 429);
    let wait: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = locked.json().unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // Other names from the same address still sign in.
    server.admin();
    let failed = server.audit(&admin, "operation=SignIn&status=Failed");
    assert_eq!(failed.len(), 10);
    let throttled = server.audit(&admin, "operation=SignIn&status=Denied");
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0]["ErrorCode"], "Throttled");
    assert_eq!(throttled[0]["UserUpn"], "BO@contoso.test");
}

#[test]
fn a_flood_of_failed_sign_ins_is_bounded_in_the_log() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let huge = "x".repeat(10_000);
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..300 {
        let name = format!("{n}{huge}");
        *statuses
            .entry(sign_in(&server, &name, "guess").status().as_u16())
            .or_insert(0) += 1;
    }
    // The address is locked after its 30th failure.
    assert_eq!(statuses.get(&400), Some(&30), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&270), "{statuses:?}");
    // A body past the sign-in limit is refused unread.
    let oversize = sign_in(&server, &"y".repeat(20_000), "guess");
    assert_eq!(oversize.status(), 413);
    let events = server.audit(&admin, "operation=SignIn");
    assert!(
        events.len() <= 130,
        "{} sign-in events for 300 attempts",
        events.len()
    );
    for event in &events {
        assert!(event["UserUpn"].as_str().unwrap().len() <= 256);
    }
    let bytes: usize = events.iter().map(|e| e.to_string().len()).sum();
    assert!(bytes < 200_000, "{bytes} bytes recorded");
}

#[test]
fn an_unknown_name_costs_the_same_work_as_a_known_one() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let checks = || server.metric(&admin, "custos_sign_in_password_checks_total");
    let before = checks();
    for n in 0..3 {
        assert_eq!(
            sign_in(&server, "bo@contoso.test", "wrong-password").status(),
            400
        );
        let unknown = format!("nobody{n}@contoso.test");
        assert_eq!(sign_in(&server, &unknown, "wrong-password").status(), 400);
    }
    // Every attempt, known name or not, checked a password against an argon2 hash: an unknown
    // name's against a decoy made with the same parameters, so its timing tells nothing.
    assert_eq!(checks() - before, 6);
}
