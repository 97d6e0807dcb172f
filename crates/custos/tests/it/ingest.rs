//! The ingest API (SPEC §9): applications post their own events, which keep their workload,
//! record type and operation, come in whole or not at all, and are searched beside Custos's.

use serde_json::{Value, json};

use crate::common::*;
use crate::console_pages::{page, sign_in};

const APP_ID: &str = "3e1f6c1a-0000-4000-8000-0000000000aa";
const APP_SECRET: &str = "payroll-secret-0123456789";

/// Creates the payroll application user; returns its id.
pub(crate) fn register_app(server: &Server, admin: &str) -> String {
    let response = send(
        client().post(server.api("systemusers")),
        admin,
        Some(json!({"applicationid": APP_ID, "clientsecret": APP_SECRET, "fullname": "Payroll"})),
    );
    assert_eq!(response.status(), 204);
    entity_id(&response)
}

pub(crate) fn app_token(server: &Server) -> String {
    let response = client()
        .post(format!("{}/oauth2/token", server.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", APP_SECRET),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ingest(server: &Server, token: &str, body: Value) -> reqwest::blocking::Response {
    send(
        client().post(format!("{}/api/audit/ingest", server.base)),
        token,
        Some(body),
    )
}

#[test]
fn applications_events_are_kept_whole_and_searched_beside_ours() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let app_user = register_app(&server, &admin);
    let app = app_token(&server);

    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Contoso"})),
    ));
    let hour_ago = {
        let now = get_json(&format!("{}/api/audit/records?top=1", server.base), &admin)["value"][0]
            ["CreationTime"]
            .as_str()
            .unwrap()
            .to_string();
        // The newest event's hour, minus one: a time in the past in the same format.
        let hour: u32 = now[11..13].parse().unwrap();
        if hour == 0 {
            now.clone()
        } else {
            format!("{}{:02}{}", &now[..11], hour - 1, &now[13..])
        }
    };
    let response = ingest(
        &server,
        &app,
        json!([
            {
                "Operation": "ViewPayslip",
                "Workload": "Payroll",
                "RecordType": "PayrollAudit",
                "CreationTime": hour_ago,
                "UserId": "ann@contoso.test",
                "UserType": 0,
                "ClientIP": "203.0.113.9",
                "ObjectIds": [account],
                "Details": {"Payslip": "2026-10", "Amount": 4200}
            },
            {"Operation": "ExportPayroll"}
        ]),
    );
    assert_eq!(response.status(), 200);
    let accepted: Value = response.json().unwrap();
    assert_eq!(accepted["accepted"], 2);

    let payroll = server.audit(&admin, "workload=Payroll");
    assert_eq!(
        payroll.len(),
        2,
        "the default workload is the application's name"
    );
    let viewed = payroll
        .iter()
        .find(|e| e["Operation"] == "ViewPayslip")
        .unwrap();
    assert_eq!(viewed["RecordType"], "PayrollAudit");
    assert_eq!(viewed["Origin"], "Ingest");
    assert_eq!(viewed["CallerId"], app_user);
    assert_eq!(viewed["UserId"], "ann@contoso.test");
    assert_eq!(viewed["ClientIP"], "203.0.113.9");
    assert_eq!(viewed["CreationTime"], hour_ago);
    assert_eq!(viewed["Details"]["Amount"], 4200);
    let exported = payroll
        .iter()
        .find(|e| e["Operation"] == "ExportPayroll")
        .unwrap();
    assert_eq!(exported["RecordType"], "Payroll");

    // Who touched the account: Custos's create and the payroll app's view, side by side.
    let touched = server.audit(&admin, &format!("recordId={account}"));
    let workloads: Vec<&str> = touched
        .iter()
        .map(|e| e["Workload"].as_str().unwrap())
        .collect();
    assert!(workloads.contains(&"Custos") && workloads.contains(&"Payroll"));
    let proof = get_json(
        &format!(
            "{}/api/audit/proofs/inclusion?id={}",
            server.base,
            viewed["Id"].as_str().unwrap()
        ),
        &admin,
    );
    assert!(
        proof["hashes"].is_array() || proof["leafIndex"].is_number(),
        "{proof}"
    );

    // Whole or nothing, and only applications.
    let before = server.audit(&admin, "origin=Ingest&status=Succeeded").len();
    for (body, needle) in [
        (
            json!([{"Operation": "A"}, {"Workload": "Payroll"}]),
            "event 1: 'Operation' is required",
        ),
        (
            json!([{"Operation": "A", "Workload": "Custos"}]),
            "Custos's own",
        ),
        (
            json!([{"Operation": "A", "CreationTime": "2020-01-01T00:00:00Z"}]),
            "7 days",
        ),
        (json!([{"Operation": "A", "ObjectIds": ["nope"]}]), "GUIDs"),
        (json!([{"Operation": "A", "UserType": 1}]), "user type"),
        (
            json!([{"Operation": "A", "Colour": "red"}]),
            "unknown field 'Colour'",
        ),
        (json!({"Operation": "A"}), "JSON array"),
        (json!([]), "1 to 1000"),
    ] {
        let (status, _, message) = odata_error(ingest(&server, &app, body.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"Operation": "A"})).collect();
    assert_eq!(
        odata_error(ingest(&server, &app, Value::Array(too_many))).0,
        400
    );
    assert_eq!(
        server.audit(&admin, "origin=Ingest&status=Succeeded").len(),
        before,
        "nothing of a refused batch was kept"
    );
    let refused = ingest(&server, &admin, json!([{"Operation": "A"}]));
    assert_eq!(odata_error(refused).0, 403);
    let denied = server.audit(&admin, "operation=IngestAuditEvents&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "admin");
    assert_eq!(
        server
            .audit(&admin, "operation=IngestAuditEvents&status=Failed")
            .len(),
        9,
        "every refused batch is recorded"
    );
}

#[test]
fn an_application_cannot_pass_for_custos_or_steer_its_followers() {
    let server = Server::start(&[]);
    let admin = server.admin();
    register_app(&server, &admin);
    let app = app_token(&server);
    let before = server.audit(&admin, "origin=Ingest").len();
    for event in [
        json!({"Operation": "A", "Workload": "Custos "}),
        json!({"Operation": "A", "Workload": "\u{0421}ustos"}),
        json!({"Operation": "A", "Workload": "CUSTOS"}),
        json!({"Operation": "A", "Workload": "Cus tos"}),
        json!({"Operation": "A", "Workload": "\u{ff23}ustos"}),
        json!({"Operation": "A", "Workload": " "}),
        json!({"Operation": "RunPlugin", "Details": {"Webhook": "http://169.254.169.254/"}}),
        json!({"Operation": "runprocess"}),
        json!({"Operation": "AlertTriggered"}),
        json!({"Operation": "RunPlug\u{0456}n"}),
        json!({"Operation": "A", "RecordType": "CustosAdmin"}),
        json!({"Operation": "A", "RecordType": "custos entity"}),
        json!({"Operation": "A", "Details": {"blob": "x".repeat(40_000)}}),
        json!({"Operation": "A", "Query": "q".repeat(2_000)}),
    ] {
        let (status, _, message) = odata_error(ingest(&server, &app, json!([event.clone()])));
        assert_eq!(status, 400, "{event}: {message}");
    }
    let big_ids: Vec<String> = (0..5001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let (status, _, _) = odata_error(ingest(
        &server,
        &app,
        json!([{"Operation": "A", "ObjectIds": big_ids}]),
    ));
    assert_eq!(status, 400);
    assert_eq!(server.audit(&admin, "origin=Ingest").len(), before + 15);
    assert!(
        server
            .audit(&admin, "origin=Ingest")
            .iter()
            .all(|e| e["Operation"] == "IngestAuditEvents" && e["ResultStatus"] == "Failed"),
        "only the refusals were recorded"
    );
    // Plain application names and operations pass.
    let accepted = ingest(
        &server,
        &app,
        json!([{"Operation": "ViewPayslip", "Workload": "Payroll", "RecordType": "PayrollAudit"}]),
    );
    assert_eq!(accepted.status(), 200);
}

#[test]
fn numbers_are_kept_exactly_or_refused() {
    let server = Server::start(&[]);
    let admin = server.admin();
    register_app(&server, &admin);
    let app = app_token(&server);
    let post = |body: &str| {
        client()
            .post(format!("{}/api/audit/ingest", server.base))
            .bearer_auth(&app)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    // Whole numbers within 64 bits stay exact (beyond 2^53 too); others are doubles.
    let kept = post(
        r#"[{"Operation": "Numbers", "Details": {"max": 18446744073709551615, "min": -9223372036854775808, "big": 9007199254740993, "double": 1.5e3, "text": "123456789012345678901234567890"}}]"#,
    );
    assert_eq!(kept.status(), 200);
    let record = &server.audit(&admin, "operation=Numbers")[0];
    assert_eq!(record["Details"]["max"].as_u64(), Some(u64::MAX));
    assert_eq!(record["Details"]["min"].as_i64(), Some(i64::MIN));
    assert_eq!(
        record["Details"]["big"].as_u64(),
        Some(9_007_199_254_740_993)
    );
    assert_eq!(record["Details"]["double"].as_f64(), Some(1500.0));
    // A whole number outside 64 bits would only be kept rounded: it is refused, and recorded.
    let (status, _, message) = odata_error(post(
        r#"[{"Operation": "Numbers", "Details": {"n": 123456789012345678901234567890}}]"#,
    ));
    assert_eq!(status, 400);
    assert!(
        message.contains("123456789012345678901234567890")
            && message.contains("send it as a string"),
        "{message}"
    );
    assert_eq!(server.audit(&admin, "operation=Numbers").len(), 1);
    let refused = server.audit(&admin, "operation=IngestAuditEvents&status=Failed");
    assert_eq!(refused.len(), 1);
}

#[test]
fn events_that_arrive_late_are_searched_in_the_order_they_happened() {
    let server = Server::start(&[]);
    let admin = server.admin();
    register_app(&server, &admin);
    let app = app_token(&server);
    let day = |days_ago: i64| {
        let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
        format!(
            "{:04}-{:02}-{:02}T12:00:00Z",
            at.year(),
            u8::from(at.month()),
            at.day()
        )
    };
    // Arriving in this order: two days ago (by bo), five days ago (by al), one day ago (by cy).
    let sent = [
        (2, "bo@payroll.test"),
        (5, "al@payroll.test"),
        (1, "cy@payroll.test"),
    ];
    for (days_ago, user) in sent {
        let response = ingest(
            &server,
            &app,
            json!([{"Operation": "ViewPayslip", "CreationTime": day(days_ago), "UserId": user}]),
        );
        assert_eq!(response.status(), 200);
    }
    let base = format!("{}/api/audit/records?workload=Payroll", server.base);
    let users_of = |page: &Value| -> Vec<String> {
        page["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["UserId"].as_str().unwrap().to_string())
            .collect()
    };
    // Without an order: newest arrival first.
    let arrival = get_json(&base, &admin);
    assert_eq!(
        users_of(&arrival),
        ["cy@payroll.test", "al@payroll.test", "bo@payroll.test"]
    );
    // By time, a page at a time through the opaque token.
    let pages = |order: &str| -> Vec<String> {
        let mut url = format!("{base}&top=1&orderby={order}");
        let mut users = Vec::new();
        loop {
            let page = get_json(&url, &admin);
            users.extend(users_of(&page));
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return users,
            }
        }
    };
    assert_eq!(
        pages("CreationTime%20desc"),
        ["cy@payroll.test", "bo@payroll.test", "al@payroll.test"]
    );
    assert_eq!(
        pages("CreationTime"),
        ["al@payroll.test", "bo@payroll.test", "cy@payroll.test"]
    );
    assert_eq!(
        pages("UserUpn%20desc"),
        ["cy@payroll.test", "bo@payroll.test", "al@payroll.test"]
    );
    // A token is bound to its order; an unknown order is refused.
    let first = get_json(&format!("{base}&top=1&orderby=CreationTime"), &admin);
    let next = first["@odata.nextLink"].as_str().unwrap();
    let token = next.split("skiptoken=").nth(1).unwrap();
    for url in [
        format!("{base}&orderby=Operation&skiptoken={token}"),
        format!("{base}&orderby=ClientIP"),
        format!("{base}&orderby=CreationTime%20sideways"),
    ] {
        let response = send(client().get(&url), &admin, None);
        assert_eq!(response.status(), 400, "{url}");
    }

    // The console lists them by time, newest first, and each sortable header says how.
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (_, page) = page(&server, &cookie, "/ui/audit/search?run=1&workload=Payroll");
    // Where each user first appears in the results (the form offers them all before it).
    let rows = |page: &str| page[page.find("<tbody").unwrap()..].to_string();
    let listed = rows(&page);
    let at = |user: &str| {
        listed
            .find(user)
            .unwrap_or_else(|| panic!("{user} in {page}"))
    };
    assert!(
        at("cy@payroll.test") < at("bo@payroll.test")
            && at("bo@payroll.test") < at("al@payroll.test")
    );
    assert!(page.contains("aria-sort=\"descending\""), "{page}");
    // The workloads the log holds are offered as the user types.
    let terms = get_json(&format!("{}/api/audit/terms", server.base), &admin);
    assert_eq!(terms["workloads"], json!(["custos", "payroll"]), "{terms}");
    assert!(page.contains("<datalist id=\"workloads-list\"><option value=\"custos\"></option><option value=\"payroll\">"), "{page}");
    assert!(page.contains("by time, newest first"), "{page}");
    let (_, by_user) = crate::console_pages::page(
        &server,
        &cookie,
        "/ui/audit/search?run=1&workload=Payroll&orderby=UserUpn%20asc",
    );
    let listed = rows(&by_user);
    let at = |user: &str| listed.find(user).unwrap();
    assert!(
        at("al@payroll.test") < at("bo@payroll.test")
            && at("bo@payroll.test") < at("cy@payroll.test")
    );

    // In the viewer's time zone (Tokyo is UTC+9 all year): what they type is Tokyo's time, UTC
    // is shown beside it, the results' times are Tokyo's, and the zone is remembered.
    let yesterday = &day(1)[..10];
    let from = format!("{yesterday}T20:59");
    let response = crate::console_pages::browser()
        .get(format!(
            "{}/ui/audit/search?run=1&workload=Payroll&tz=Asia/Tokyo&start={from}",
            server.base
        ))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    let remembered = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("custos_tz=Asia/Tokyo;"));
    assert!(remembered, "{:?}", response.headers());
    let tokyo = response.text().unwrap();
    let listed = rows(&tokyo);
    assert!(
        listed.contains("cy@payroll.test") && !listed.contains("bo@payroll.test"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{yesterday} 21:00:00")),
        "{listed}"
    );
    assert!(
        tokyo.contains(&format!("= {yesterday} 11:59:00 UTC")),
        "{tokyo}"
    );
    assert!(tokyo.contains("Time (Asia/Tokyo)"), "{tokyo}");
    let (_, wrong) = crate::console_pages::page(
        &server,
        &cookie,
        "/ui/audit/search?run=1&workload=Payroll&tz=Mars/Olympus&start=yesterday",
    );
    assert!(wrong.contains("is not a time zone"), "{wrong}");
    assert!(
        !wrong.contains("<tbody"),
        "nothing is searched with a wrong range"
    );
}

#[test]
fn an_ingested_events_text_cannot_steer_the_terminal_that_lists_it() {
    let server = Server::start(&[]);
    let admin = server.admin();
    register_app(&server, &admin);
    let app = app_token(&server);
    // An application's user who, listed in a terminal, would move the cursor up one line and
    // erase it: the row above, another event, would vanish from the auditor's screen.
    let erasing = "mallory\u{1b}[1A\u{1b}[2K";
    let response = ingest(
        &server,
        &app,
        json!([{"Operation": "ViewPayslip", "UserId": erasing}]),
    );
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.audit(&admin, "workload=Payroll")[0]["UserId"],
        erasing,
        "the log keeps it as it was sent"
    );
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "audit",
            "search",
            "--workload",
            "Payroll",
            "--url",
            &server.base,
        ])
        .env("CUSTOS_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let table = String::from_utf8(listed.stdout).unwrap();
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(
        table.contains("mallory\u{27E8}U+001B\u{27E9}[1A\u{27E8}U+001B\u{27E9}[2K"),
        "{table}"
    );
}
