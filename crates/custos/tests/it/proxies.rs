//! Behind a reverse proxy (`--trusted-proxy`): the client address recorded in audit events and
//! throttled by is the one the proxy reports in `X-Forwarded-For`; from a peer that is not a
//! trusted proxy the header is ignored, so no client can put another address into the log.

use serde_json::json;

use crate::common::*;

/// Creates an account through `forwarded_for` (as `X-Forwarded-For`), marked by a user agent
/// of its own; the ClientIP its Create event recorded.
fn recorded_address(server: &Server, admin: &str, forwarded_for: &str, mark: &str) -> String {
    let response = send(
        client()
            .post(server.api("accounts"))
            .header("x-forwarded-for", forwarded_for)
            .header("user-agent", mark),
        admin,
        Some(json!({"name": mark})),
    );
    assert_eq!(response.status(), 204);
    let events = server.audit(admin, "operation=Create&entity=account");
    let event = events
        .iter()
        .find(|e| e["UserAgent"] == mark)
        .unwrap_or_else(|| panic!("no Create event of {mark}: {events:?}"));
    event["ClientIP"].as_str().unwrap().to_string()
}

/// A failed sign-in through `forwarded_for`; its status.
fn sign_in(server: &Server, forwarded_for: &str, user: &str, password: &str) -> u16 {
    server
        .sign_in_request(user, password)
        .header("x-forwarded-for", forwarded_for)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_trusted_proxy_names_the_client_and_any_other_peer_is_the_client() {
    let server = Server::start(&["--trusted-proxy", "127.0.0.1,10.0.0.0/8"]);
    let admin = server.admin();
    assert_eq!(
        recorded_address(
            &server,
            &admin,
            "198.51.100.7, 203.0.113.9, 10.2.3.4",
            "through-two"
        ),
        "203.0.113.9",
        "past the trusted hop, the first untrusted address from the right"
    );
    assert_eq!(
        recorded_address(&server, &admin, "garbage", "garbled"),
        "127.0.0.1",
        "what is not an address leaves the proxy's"
    );
    assert_eq!(
        recorded_address(&server, &admin, "[2001:db8::5]:443", "v6"),
        "2001:db8::5"
    );

    // One client's failed sign-ins lock that client out, not everyone behind the proxy.
    let attacker = "203.0.113.66";
    let mut locked = false;
    for n in 0..40 {
        if sign_in(
            &server,
            attacker,
            &format!("nobody{}", n % 4),
            "wrong password",
        ) == 429
        {
            locked = true;
            break;
        }
    }
    assert!(locked, "the attacker's address is throttled");
    assert_eq!(sign_in(&server, attacker, "admin", ADMIN_PASSWORD), 429);
    assert_eq!(
        sign_in(&server, "198.51.100.20", "admin", ADMIN_PASSWORD),
        200,
        "another client behind the same proxy signs in"
    );
    let throttled = server.audit(&admin, "operation=SignIn&status=Failed");
    assert!(
        throttled.iter().all(|e| e["ClientIP"] == attacker),
        "every failure is the attacker's: {throttled:?}"
    );

    // Without the flag, the same header is the client's word and is ignored.
    let direct = Server::start(&[]);
    let admin = direct.admin();
    assert_eq!(
        recorded_address(&direct, &admin, "203.0.113.9", "forged"),
        "127.0.0.1"
    );
}
