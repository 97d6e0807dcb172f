//! Bad input gets a clear 4xx OData error, changes nothing, and is itself audited.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[test]
fn bad_requests_get_odata_errors_and_change_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let before = count(&server, &admin, "accounts");

    let cases: Vec<(&str, reqwest::blocking::Response, u16, &str, &str)> = vec![
        (
            "malformed $filter",
            send(
                client().get(server.api("accounts?$filter=name eq 'x")),
                &admin,
                None,
            ),
            400,
            "BadRequest",
            "invalid $filter: unterminated string",
        ),
        (
            "unknown attribute in $filter",
            send(
                client().get(server.api("accounts?$filter=nosuch eq 1")),
                &admin,
                None,
            ),
            400,
            "BadRequest",
            "attribute 'nosuch' does not exist on entity 'account'",
        ),
        (
            "wrong type in $filter",
            send(
                client().get(server.api("accounts?$filter=revenue eq 'lots'")),
                &admin,
                None,
            ),
            400,
            "BadRequest",
            "'revenue' is Money",
        ),
        (
            "unknown option",
            send(
                client().get(server.api("accounts?$compute=x")),
                &admin,
                None,
            ),
            400,
            "BadRequest",
            "$compute is not supported",
        ),
        (
            "an aggregation that is not one",
            send(client().get(server.api("accounts?$apply=x")), &admin, None),
            400,
            "BadRequest",
            "$apply: 'x' is not a transformation",
        ),
        (
            "no such navigation property",
            send(client().get(server.api("accounts?$expand=x")), &admin, None),
            400,
            "BadRequest",
            "'x' is not a navigation property of 'account'",
        ),
        (
            "unknown attribute in body",
            send(
                client().post(server.api("accounts")),
                &admin,
                Some(json!({"name": "x", "nosuch": 1})),
            ),
            400,
            "BadRequest",
            "attribute 'nosuch' does not exist",
        ),
        (
            "wrong type in body",
            send(
                client().post(server.api("accounts")),
                &admin,
                Some(json!({"name": "x", "revenue": "lots"})),
            ),
            400,
            "BadRequest",
            "attribute 'revenue' expects a value of type Money",
        ),
        (
            "read-only attribute",
            send(
                client().post(server.api("accounts")),
                &admin,
                Some(json!({"name": "x", "createdon": "2020-01-01T00:00:00Z"})),
            ),
            400,
            "BadRequest",
            "read-only",
        ),
        (
            "bad JSON",
            client()
                .post(server.api("accounts"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"name\": ")
                .send()
                .unwrap(),
            400,
            "BadRequest",
            "not valid JSON",
        ),
        (
            "oversize body",
            client()
                .post(server.api("accounts"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(vec![b' '; 9 << 20])
                .send()
                .unwrap(),
            413,
            "PayloadTooLarge",
            "larger than",
        ),
        (
            "unknown entity set",
            send(client().get(server.api("nosuchthings")), &admin, None),
            404,
            "NotFound",
            "entity set 'nosuchthings' does not exist",
        ),
        (
            "bad record key",
            send(client().get(server.api("accounts(123)")), &admin, None),
            400,
            "BadRequest",
            "not a record id",
        ),
        (
            "unknown instance",
            send(
                client().get(format!("{}/nope/api/data/v9.2/accounts", server.base)),
                &admin,
                None,
            ),
            404,
            "NotFound",
            "instance 'nope' does not exist",
        ),
        (
            "missing token",
            client().get(server.api("accounts")).send().unwrap(),
            401,
            "Unauthenticated",
            "Bearer token is required",
        ),
        (
            "garbage token",
            client()
                .get(server.api("accounts"))
                .bearer_auth("abc.def")
                .send()
                .unwrap(),
            401,
            "Unauthenticated",
            "token is invalid",
        ),
        (
            "bad audit search",
            send(
                client().get(format!("{}/api/audit/records?start=yesterday", server.base)),
                &admin,
                None,
            ),
            400,
            "BadRequest",
            "'start' must be an ISO 8601",
        ),
    ];
    for (what, response, status, code, message) in cases {
        assert!(
            response.headers().contains_key("x-ms-service-request-id"),
            "{what}: correlation header"
        );
        let (got_status, got_code, got_message) = odata_error(response);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{what}: {got_message}"
        );
        assert!(
            got_message.contains(message),
            "{what}: '{got_message}' should contain '{message}'"
        );
    }
    assert_eq!(
        count(&server, &admin, "accounts"),
        before,
        "nothing was created"
    );

    let denied = server.audit(&admin, "status=Denied");
    assert_eq!(
        denied.len(),
        2,
        "the two unauthenticated requests are recorded as denied"
    );
    assert!(
        denied
            .iter()
            .all(|e| e["ErrorCode"] == "Unauthenticated" && e["ClientIP"] == "127.0.0.1")
    );
    let failed = server.audit(&admin, "status=Failed&entity=account");
    assert!(
        failed.len() >= 9,
        "validation failures are recorded: {}",
        failed.len()
    );
    assert!(failed.iter().all(|e| e["UserUpn"] == "admin"));
}

/// A JSON body's property that the route does not know, or of the wrong type, is refused with a
/// 400 naming it — never ignored as if absent, which would carry out what the caller did not ask
/// for (a trial instance when the state was misspelt, a report never scheduled) — and changes
/// nothing. Found by schemathesis's negative checks against /openapi.json.
#[test]
fn a_body_property_unknown_or_of_the_wrong_type_is_refused_and_changes_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let get = |path: &str| {
        let response = send(client().get(format!("{}{path}", server.base)), &admin, None);
        assert_eq!(response.status(), 200, "{path}");
        response.json::<serde_json::Value>().unwrap()
    };
    let state = || -> Vec<serde_json::Value> {
        [
            "/api/audit/alerts",
            "/api/audit/streams",
            "/api/admin/instances",
            "/api/audit/reports",
            "/api/audit/retention",
            "/api/admin/support/engineers",
        ]
        .iter()
        .map(|path| get(path))
        .collect()
    };
    let before = state();
    let cases = [
        (
            "/api/admin/instances",
            json!({"name": "paid1", "state": 1}),
            "'state' must be trial or paid",
        ),
        (
            "/api/admin/instances",
            json!({"name": "paid2", "sate": "paid"}),
            "unknown property 'sate'",
        ),
        (
            "/api/audit/reports",
            json!({"name": "r", "schedule": 7}),
            "'schedule' must be a string",
        ),
        (
            "/api/audit/reports",
            json!({"name": "r", "description": ["x"]}),
            "'description' must be a string",
        ),
        (
            "/api/audit/alerts",
            json!({"name": "a", "kind": "operation", "operations": ["Delete"], "windowMinutes": ""}),
            "'windowMinutes' must be a whole number",
        ),
        (
            "/api/audit/alerts",
            json!({"name": "a", "kind": "operation", "operations": ["Delete"], "enabled": "no"}),
            "'enabled' must be true or false",
        ),
        (
            "/api/audit/streams",
            json!({"name": "s", "format": "json", "target": "https://siem.example/in", "from": 1}),
            "'from' must be a string",
        ),
        (
            "/api/audit/exports",
            json!({"format": "csv", "fromat": "xlsx"}),
            "unknown property 'fromat'",
        ),
        (
            "/api/admin/support/engineers",
            json!({"upn": "@", "password": "a long enough one"}),
            "name@domain",
        ),
        (
            "/api/admin/support/engineers",
            json!({"upn": "e@x.test", "password": "a long enough one", "displayName": 5}),
            "'displayName' must be a string",
        ),
        (
            "/api/admin/support/engineers",
            json!({"upn": "e@x.test", "password": "a long enough one", "role": "admin"}),
            "unknown property 'role'",
        ),
    ];
    for (path, body, says) in cases {
        let response = send(
            client().post(format!("{}{path}", server.base)),
            &admin,
            Some(body.clone()),
        );
        assert_eq!(response.status(), 400, "{path} {body}");
        let error = response.json::<serde_json::Value>().unwrap();
        assert_eq!(error["error"]["code"], "BadRequest", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path} {body}: {message}");
    }
    let response = send(
        client().put(format!("{}/api/audit/retention", server.base)),
        &admin,
        Some(
            json!({"defaultDays": 30, "policies": [{"name": "p", "users": ["a"], "days": 1, "dyas": 2}]}),
        ),
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("unknown property 'dyas'"));
    assert_eq!(before, state(), "nothing changed");
}

#[test]
fn an_expired_token_is_refused() {
    // Expiry has whole-second precision, so a token lives between 4 and 5 seconds.
    let server = Server::start(&["--token-lifetime-secs", "5"]);
    let admin = server.admin();
    assert_eq!(
        send(client().get(server.api("WhoAmI")), &admin, None).status(),
        200
    );
    std::thread::sleep(Duration::from_millis(5100));
    let (status, code, message) =
        odata_error(send(client().get(server.api("accounts")), &admin, None));
    assert_eq!(
        (status, code.as_str(), message.as_str()),
        (401, "Unauthenticated", "the bearer token has expired")
    );
}

#[test]
fn wrong_password_is_refused_and_recorded() {
    let server = Server::start(&[]);
    let response = client()
        .post(format!("{}/oauth2/token", server.base))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "wrong"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().unwrap()["error"],
        "invalid_grant"
    );
    let admin = server.admin();
    let failed = server.audit(&admin, "operation=SignIn&status=Failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["UserUpn"], "admin");
    assert!(
        server
            .audit(&admin, "operation=SignIn&status=Succeeded")
            .is_empty(),
        "user access auditing is off by default"
    );
    server.set_org(&admin, json!({"isuseraccessauditenabled": true}));
    server.admin();
    assert_eq!(
        server
            .audit(&admin, "operation=SignIn&status=Succeeded")
            .len(),
        1
    );
}

#[test]
fn health_and_metrics_answer() {
    let server = Server::start(&[]);
    let health: serde_json::Value = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let admin = server.admin();
    let (status, code, _) = odata_error(
        client()
            .get(format!("{}/metrics", server.base))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, code.as_str()),
        (401, "Unauthenticated"),
        "metrics need a token"
    );
    let metrics = server.metrics(&admin);
    for name in [
        "custos_http_responses_total{class=\"2xx\"}",
        "custos_audit_events_appended_total",
        "custos_audit_fsync_batches_total",
        "custos_audit_fsync_seconds_bucket",
        "custos_audit_open_files ",
        "custos_audit_open_files_max ",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    assert!(
        !metrics.contains("custos_audit_events 0\n"),
        "the first run recorded CreateInstance"
    );
}

#[test]
fn a_body_naming_a_member_twice_is_refused_and_changes_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = create_account(&server, &admin, "Kept");
    let raw = |builder: reqwest::blocking::RequestBuilder, body: &str| {
        builder
            .bearer_auth(&admin)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let cases = [
        (
            client().post(server.api("accounts")),
            r#"{"name": "a", "name": "b"}"#,
        ),
        (
            client().patch(server.api(&format!("accounts({account})"))),
            r#"{"name": "x", "telephone1": "1", "name": "y"}"#,
        ),
        (
            client().post(server.api("$batch")),
            r#"{"requests": [{"id": "1", "method": "POST", "url": "accounts", "body": {"name": "c", "name": "d"}}]}"#,
        ),
        (
            client().post(server.api("$batch")),
            r#"{"requests": [{"id": "1", "method": "POST", "url": "accounts", "url": "contacts", "body": {"lastname": "e"}}]}"#,
        ),
        (
            client().post(format!("{}/api/admin/instances", server.base)),
            r#"{"name": "one", "name": "two"}"#,
        ),
        (
            client().put(format!("{}/api/audit/settings", server.base)),
            r#"{"searchEnabled": true, "searchEnabled": false}"#,
        ),
    ];
    for (builder, body) in cases {
        let refused = raw(builder, body);
        let correlation = correlation_of(&refused);
        assert_eq!(refused.status(), 400, "{body}");
        let error: serde_json::Value = refused.json().unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than once"), "{body}: {message}");
        let events: Vec<serde_json::Value> = server
            .audit(&admin, "")
            .into_iter()
            .filter(|e| e["CorrelationId"] == correlation)
            .collect();
        assert!(
            !events.is_empty() && events.iter().all(|e| e["ResultStatus"] == "Failed"),
            "{body}: the refusal recorded, nothing done: {events:?}"
        );
    }
    let names = get_json(&server.api("accounts?$select=name"), &admin);
    assert_eq!(names["value"].as_array().unwrap().len(), 1, "{names}");
    assert_eq!(names["value"][0]["name"], "Kept");
    assert_eq!(count(&server, &admin, "contacts"), 0);
    let instances = get_json(&format!("{}/api/admin/instances", server.base), &admin);
    assert_eq!(
        instances["value"].as_array().unwrap().len(),
        1,
        "{instances}"
    );
}

#[test]
fn a_request_with_two_authorization_headers_is_refused_whichever_comes_first() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let bo = server.user_holding(&admin, "bo@contoso.test", "Reader", &["prvReadaccount"]);
    for (first, second) in [(&admin, &bo), (&bo, &admin)] {
        for url in [
            server.api("accounts"),
            format!("{}/api/audit/records", server.base),
        ] {
            let refused = client()
                .get(&url)
                .header("Authorization", format!("Bearer {first}"))
                .header("Authorization", format!("Bearer {second}"))
                .send()
                .unwrap();
            assert_eq!(refused.status(), 401, "{url}");
            let error: serde_json::Value = refused.json().unwrap();
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("more than one Authorization header"),
                "{error}"
            );
        }
    }
    assert_eq!(
        send(client().get(server.api("accounts")), &bo, None).status(),
        200,
        "one header is read as before"
    );
    // So are a body's type and the protocol's version: one of each, or the request is refused.
    let typed_twice = client()
        .post(server.api("accounts"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .header("Content-Type", "text/plain")
        .body(r#"{"name": "typed twice"}"#)
        .send()
        .unwrap();
    let (status, _, message) = odata_error(typed_twice);
    assert_eq!(status, 400, "{message}");
    let versioned_twice = client()
        .get(server.api("accounts"))
        .bearer_auth(&admin)
        .header("OData-Version", "4.0")
        .header("OData-Version", "4.01")
        .send()
        .unwrap();
    assert_eq!(versioned_twice.status(), 400);
    assert_eq!(count(&server, &admin, "accounts"), 0, "nothing created");
}
