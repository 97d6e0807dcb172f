//! The activity feed (SPEC §9), as a SIEM in the style of the Office 365 Management Activity
//! API uses it: a subscription, content listings, content blobs of records in the Microsoft 365
//! and Dynamics 365 schema, and webhook notifications — every event published exactly once,
//! across a stop and a restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const ARGS: &[&str] = &["--feed-interval-ms", "200", "--allow-private-targets"];

fn feed(server: &Server, path: &str) -> String {
    format!("{}/api/v1.0/default/activity/feed/{path}", server.base)
}

fn start(server: &Server, token: &str, body: Option<Value>) -> reqwest::blocking::Response {
    send(
        client().post(feed(
            server,
            "subscriptions/start?contentType=Audit.General",
        )),
        token,
        body,
    )
}

/// A time `seconds` from now as Microsoft's documentation writes it: `YYYY-MM-DDTHH:MM:SS`,
/// UTC without a zone.
fn microsoft_time(seconds: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Every published blob's records, by content id, as a consumer that lists and downloads
/// everything of the last 12 hours sees them, its window written as Microsoft documents it.
fn download(server: &Server, token: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    let mut url = feed(
        server,
        &format!(
            "subscriptions/content?contentType=Audit.General&startTime={}&endTime={}",
            microsoft_time(-12 * 3600),
            microsoft_time(3600)
        ),
    );
    loop {
        let response = send(client().get(&url), token, None);
        assert_eq!(response.status(), 200);
        let next = response
            .headers()
            .get("NextPageUri")
            .map(|h| h.to_str().unwrap().to_string());
        for content in response.json::<Vec<Value>>().unwrap() {
            let id = content["contentId"].as_str().unwrap().to_string();
            assert_eq!(content["contentType"], "Audit.General");
            let records = get_json(content["contentUri"].as_str().unwrap(), token);
            out.insert(id, records.as_array().unwrap().clone());
        }
        match next {
            Some(next) => url = next,
            None => return out,
        }
    }
}

/// Downloads until a blob holds the event `id`.
fn download_until(server: &Server, token: &str, id: &str) -> BTreeMap<String, Vec<Value>> {
    let started = Instant::now();
    loop {
        let blobs = download(server, token);
        if blobs.values().flatten().any(|r| r["Id"] == id) {
            return blobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "event {id} was not published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The audit events of a content blob, without the checkpoint copy it carries.
fn events_of(blob: &[Value]) -> Vec<&Value> {
    blob.iter()
        .filter(|r| r["CustosRecordType"] != "CustosCheckpoint")
        .collect()
}

/// The ids of every published record; asserts none is published twice.
fn published_once(blobs: &BTreeMap<String, Vec<Value>>) -> HashSet<String> {
    let ids: Vec<String> = blobs
        .values()
        .flat_map(|blob| events_of(blob))
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an event was published twice");
    unique
}

fn list_content(server: &Server, token: &str) -> reqwest::blocking::Response {
    send(
        client().get(feed(
            server,
            "subscriptions/content?contentType=Audit.General",
        )),
        token,
        None,
    )
}

/// The webhook notifications the feed reports having sent.
fn notifications(server: &Server, token: &str) -> Value {
    get_json(
        &feed(
            server,
            "subscriptions/notifications?contentType=Audit.General",
        ),
        token,
    )
}

/// The audit event of the create of `record`.
fn create_event(server: &Server, token: &str, record: &str) -> Value {
    let found = server.audit(token, &format!("operation=Create&recordId={record}"));
    assert_eq!(found.len(), 1);
    found[0].clone()
}

#[test]
fn every_event_is_published_once_in_the_microsoft_schema_and_the_webhook_is_told() {
    let server = Server::start(ARGS);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let response = list_content(&server, &admin);
    assert_eq!(
        odata_error(response).0,
        409,
        "no content before a subscription"
    );

    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let kept = posts.clone();
    let hook = serve_posts(|_| 200, move |post| kept.lock().unwrap().push(post));
    let response = start(
        &server,
        &admin,
        Some(json!({"webhook": {"address": hook, "authId": "siem-7", "expiration": ""}})),
    );
    assert_eq!(response.status(), 200);
    let subscription: Value = response.json().unwrap();
    assert_eq!(subscription["status"], "enabled");
    assert_eq!(subscription["webhook"]["status"], "enabled");
    assert_eq!(subscription["webhook"]["address"], hook.as_str());
    let validation = posts.lock().unwrap()[0].clone();
    let code = validation.header("Webhook-ValidationCode").unwrap();
    assert_eq!(validation.body["validationCode"], code);

    let ids: Vec<String> = (0..3)
        .map(|i| create_account(&server, &admin, &format!("Feed {i}")))
        .collect();
    get_json(&server.api("accounts?$select=name"), &admin);
    let response = send(
        client().delete(server.api(&format!("accounts({})", ids[2]))),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let trail = server.audit(&admin, "");
    let delete = trail.iter().find(|e| e["Operation"] == "Delete").unwrap();
    let delete_id = delete["Id"].as_str().unwrap().to_string();

    let blobs = download_until(&server, &admin, &delete_id);
    let published = published_once(&blobs);
    // Every event from the subscription's start to the delete, in log order, is published.
    let oldest_first: Vec<&Value> = trail.iter().rev().collect();
    let from = oldest_first
        .iter()
        .position(|e| e["Operation"] == "StartFeedSubscription")
        .unwrap();
    let to = oldest_first
        .iter()
        .position(|e| e["Id"] == delete_id)
        .unwrap();
    for event in &oldest_first[from..=to] {
        assert!(
            published.contains(event["Id"].as_str().unwrap()),
            "{} was not published",
            event["Operation"]
        );
    }
    for event in &oldest_first[..from] {
        assert!(
            !published.contains(event["Id"].as_str().unwrap()),
            "an event from before the subscription was published"
        );
    }

    // The records speak the Microsoft 365 common and Dynamics 365 schema, and keep ours.
    let records: Vec<&Value> = blobs.values().flatten().collect();
    let who = get_json(&server.api("WhoAmI"), &admin);
    let create = records
        .iter()
        .find(|r| r["Operation"] == "Create" && r["EntityId"] == ids[0].as_str())
        .unwrap();
    let ours = create_event(&server, &admin, &ids[0]);
    assert_eq!(create["RecordType"], 21, "CRM");
    assert_eq!(create["CustosRecordType"], "CustosEntity");
    assert_eq!(create["Workload"], "CRM", "Dynamics 365's workload");
    assert_eq!(create["CustosWorkload"], "Custos");
    assert_eq!(create["Version"], 1);
    assert_eq!(create["UserId"], "admin", "the UPN, as Microsoft has it");
    assert_eq!(create["UserKey"], who["UserId"]);
    assert_eq!(create["SystemUserId"], who["UserId"]);
    assert_eq!(create["OrganizationId"], ours["TenantId"]);
    assert_eq!(create["Message"], "Create");
    assert_eq!(create["ItemType"], "account");
    assert_eq!(create["CrmOrganizationUniqueName"], "main");
    assert_eq!(create["ObjectId"], ids[0].as_str());
    assert_eq!(create["UserType"], ours["UserType"]);
    assert_eq!(create["ClientIP"], ours["ClientIP"]);
    assert_eq!(create["CorrelationId"], ours["CorrelationId"]);
    let ours_time = ours["CreationTime"].as_str().unwrap();
    assert_eq!(
        create["CreationTime"].as_str().unwrap(),
        ours_time.trim_end_matches('Z'),
        "UTC without a zone suffix"
    );
    assert!(
        create["Fields"]
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "name", "Value": "Feed 0"}))
    );
    let list = records
        .iter()
        .find(|r| r["Operation"] == "RetrieveMultiple" && r["EntityName"] == "account")
        .unwrap();
    assert_eq!(list["QueryResults"], list["RecordIds"]);
    assert_eq!(list["QueryResults"].as_array().unwrap().len(), 3);
    assert!(
        list.get("EntityId").is_none(),
        "a list has no single record"
    );

    // The webhook hears of every blob, with the subscription's auth id.
    let started = Instant::now();
    let notified = loop {
        let notified: HashSet<String> = posts.lock().unwrap()[1..]
            .iter()
            .flat_map(|p| p.body.as_array().unwrap().clone())
            .map(|c| c["contentId"].as_str().unwrap().to_string())
            .collect();
        if blobs.keys().all(|id| notified.contains(id)) {
            break notified;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not notified");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!notified.is_empty());
    for post in &posts.lock().unwrap()[1..] {
        assert_eq!(post.header("Webhook-AuthID"), Some("siem-7"));
        for content in post.body.as_array().unwrap() {
            assert_eq!(content["tenantId"], ours["TenantId"]);
            assert_eq!(content["clientId"], who["UserId"]);
            assert_eq!(content["contentType"], "Audit.General");
            assert!(content["contentUri"].as_str().unwrap().ends_with(&format!(
                "/activity/feed/audit/{}",
                content["contentId"].as_str().unwrap()
            )));
        }
    }
    let diagnostics = notifications(&server, &admin);
    assert!(
        diagnostics
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["notificationStatus"] == "Succeeded"
                && notified.contains(n["contentId"].as_str().unwrap()))
    );

    // The feed's own use is in the log.
    let starts = server.audit(&admin, "operation=StartFeedSubscription");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0]["Details"]["Webhook"], hook.as_str());
    assert_eq!(starts[0]["RecordType"], "CustosAdmin");
    let reads = server.audit(&admin, "operation=ReadActivityFeed&q=audit");
    assert!(
        reads.iter().any(
            |e| e["ResultCount"].as_u64().unwrap() > 0 && e["Details"]["ContentId"].is_string()
        )
    );
}

#[test]
fn a_stop_publishes_nothing_and_a_restart_repeats_nothing() {
    let mut server = Server::start(ARGS);
    let admin = server.admin();
    assert_eq!(start(&server, &admin, None).status(), 200);
    let a = create_account(&server, &admin, "Before the stop");
    let a_event = create_event(&server, &admin, &a);
    download_until(&server, &admin, a_event["Id"].as_str().unwrap());

    let response = send(
        client().post(feed(
            &server,
            "subscriptions/stop?contentType=Audit.General",
        )),
        &admin,
        None,
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().unwrap()["status"], "disabled");
    let listing = get_json(&feed(&server, "subscriptions/list"), &admin);
    assert_eq!(listing[0]["status"], "disabled");
    let response = list_content(&server, &admin);
    assert_eq!(odata_error(response).0, 409);
    let b = create_account(&server, &admin, "While stopped");
    let b_event = create_event(&server, &admin, &b);
    std::thread::sleep(Duration::from_millis(600));

    assert_eq!(start(&server, &admin, None).status(), 200);
    let c = create_account(&server, &admin, "After the restart");
    let c_event = create_event(&server, &admin, &c);
    let blobs = download_until(&server, &admin, c_event["Id"].as_str().unwrap());
    let published = published_once(&blobs);
    assert!(published.contains(a_event["Id"].as_str().unwrap()));
    assert!(
        !published.contains(b_event["Id"].as_str().unwrap()),
        "events of a stopped subscription are never published"
    );

    let dir = server.data_dir.clone();
    server.kill();
    let server = Server::start_in(&dir, ARGS);
    let admin = server.admin();
    let d = create_account(&server, &admin, "After the server restart");
    let d_event = create_event(&server, &admin, &d);
    let after = download_until(&server, &admin, d_event["Id"].as_str().unwrap());
    let published = published_once(&after);
    for kept in blobs.keys() {
        assert_eq!(
            events_of(&after[kept]),
            events_of(&blobs[kept]),
            "a blob reads the same after a restart"
        );
        // The restart signed everything before it: every earlier blob carries its witness copy.
        let copies: Vec<&Value> = after[kept]
            .iter()
            .filter(|r| r["CustosRecordType"] == "CustosCheckpoint")
            .collect();
        assert_eq!(copies.len(), 1, "blob {kept} carries one checkpoint copy");
        let size = copies[0]["Details"]["TreeSize"].as_u64().unwrap();
        let signed = send(
            client().get(format!(
                "{}/api/audit/checkpoint?treeSize={size}",
                server.base
            )),
            &admin,
            None,
        )
        .text()
        .unwrap();
        assert_eq!(copies[0]["Details"]["Note"], signed.as_str());
        assert_eq!(copies[0]["Operation"], "SignedCheckpoint");
    }
    assert!(published.contains(a_event["Id"].as_str().unwrap()));
    assert!(published.contains(c_event["Id"].as_str().unwrap()));
}

#[test]
fn refusals_are_clear_and_recorded() {
    let server = Server::start(ARGS);
    let admin = server.admin();
    let error = |response| odata_error(response);
    let get = |path: &str, token: &str| send(client().get(feed(&server, path)), token, None);

    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let (status, code, _) = error(get("subscriptions/list", &bo));
    assert_eq!((status, code.as_str()), (403, "AF10001"));
    assert_eq!(error(start(&server, &bo, None)).0, 403);
    let denied = server.audit(&admin, "status=Denied&user=bo@contoso.test");
    let operations: HashSet<&str> = denied
        .iter()
        .map(|e| e["Operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        HashSet::from(["ReadActivityFeed", "StartFeedSubscription"])
    );

    let other = format!(
        "{}/api/v1.0/{}/activity/feed/subscriptions/list",
        server.base, "7d0e3d4c-0000-4000-8000-000000000001"
    );
    let (status, code, _) = error(send(client().get(other), &admin, None));
    assert_eq!((status, code.as_str()), (404, "AF20010"));
    // Each refusal names Microsoft's error code (the Management Activity API's table).
    for (bad, expected) in [
        ("subscriptions/content", "AF20001"),
        (
            "subscriptions/content?contentType=Audit.Exchange",
            "AF20020",
        ),
        (
            "subscriptions/content?contentType=Audit.General&startTime=2026-01-01T00:00:00Z",
            "AF20030",
        ),
        (
            "subscriptions/content?contentType=Audit.General&startTime=2026-01-01&endTime=2026-01-03",
            "AF20030",
        ),
        (
            "subscriptions/content?contentType=Audit.General&startTime=2020-01-01&endTime=2020-01-02",
            "AF20030",
        ),
        (
            "subscriptions/content?contentType=Audit.General&startTime=yesterday&endTime=today",
            "AF20002",
        ),
        (
            "subscriptions/content?contentType=Audit.General&nextPage=x",
            "AF20031",
        ),
        (
            "subscriptions/content?contentType=Audit.General&top=5",
            "AF20002",
        ),
        ("audit/nonsense", "AF20052"),
    ] {
        let (status, code, message) = error(get(bad, &admin));
        assert_eq!((status, code.as_str()), (400, expected), "{bad}: {message}");
    }
    let (status, code, _) = error(get("audit/0-99999", &admin));
    assert_eq!((status, code.as_str()), (404, "AF20050"));
    let stop = send(
        client().post(feed(
            &server,
            "subscriptions/stop?contentType=Audit.General",
        )),
        &admin,
        None,
    );
    let (status, code, _) = error(stop);
    assert_eq!((status, code.as_str()), (409, "AF20022"), "nothing to stop");

    // A webhook must pass its validation; a refused one leaves no subscription.
    let refusing = serve_posts(|_| 500, |_| {});
    let (status, _, message) = error(start(
        &server,
        &admin,
        Some(json!({"webhook": {"address": refusing}})),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("validation"), "{message}");
    for body in [
        json!({"webhook": {"address": "ftp://siem.test/hook"}}),
        json!({"webhook": {"authId": "x"}}),
        json!({"hook": {}}),
        json!([1]),
    ] {
        assert_eq!(
            error(start(&server, &admin, Some(body.clone()))).0,
            400,
            "{body}"
        );
    }
    assert_eq!(
        get_json(&feed(&server, "subscriptions/list"), &admin),
        json!([])
    );

    // A webhook that takes its validation but no notification is disabled; polling goes on.
    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let kept = posts.clone();
    let flaky = serve_posts(
        |n| if n == 0 { 200 } else { 503 },
        move |post| kept.lock().unwrap().push(post),
    );
    let response = start(
        &server,
        &admin,
        Some(json!({"webhook": {"address": flaky, "authId": "a"}})),
    );
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    loop {
        let listing = get_json(&feed(&server, "subscriptions/list"), &admin);
        if listing[0]["webhook"]["status"] == "disabled" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{listing}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        posts.lock().unwrap().len() >= 3,
        "notifications were retried"
    );
    let diagnostics = notifications(&server, &admin);
    assert!(
        diagnostics
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["notificationStatus"] == "Failed")
    );
    assert_eq!(
        get("subscriptions/content?contentType=Audit.General", &admin).status(),
        200
    );
    let refused = server.audit(&admin, "operation=StartFeedSubscription&status=Failed");
    assert_eq!(refused.len(), 5, "the refused starts are recorded");
}

#[test]
fn an_expired_webhook_is_not_notified_and_polling_goes_on() {
    let server = Server::start(ARGS);
    let admin = server.admin();
    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let kept = posts.clone();
    let hook = serve_posts(|_| 200, move |post| kept.lock().unwrap().push(post));
    // An expiration already past is refused, as Microsoft's API refuses it (AF20003).
    let past = start(
        &server,
        &admin,
        Some(
            json!({"webhook": {"address": hook, "authId": "a", "expiration": "2020-01-01T00:00:00Z"}}),
        ),
    );
    let (status, code, _) = odata_error(past);
    assert_eq!((status, code.as_str()), (400, "AF20003"));
    // One two seconds away, in Microsoft's form without a zone (UTC), soon expires.
    let response = start(
        &server,
        &admin,
        Some(json!({"webhook": {"address": hook, "authId": "a", "expiration": microsoft_time(2)}})),
    );
    assert_eq!(response.status(), 200);
    std::thread::sleep(Duration::from_millis(2_500));
    let listing = get_json(&feed(&server, "subscriptions/list"), &admin);
    assert_eq!(listing[0]["webhook"]["status"], "expired");
    let posted = posts.lock().unwrap().len();
    let auth_id = posts.lock().unwrap()[0]
        .header("webhook-authid")
        .map(str::to_string);
    assert_eq!(
        auth_id.as_deref(),
        Some("a"),
        "the validation carries the auth id, as notifications do"
    );
    let account = create_account(&server, &admin, "Unnotified");
    let event = create_event(&server, &admin, &account);
    download_until(&server, &admin, event["Id"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        posts.lock().unwrap().len(),
        posted,
        "nothing is posted once the webhook expired"
    );
    let listing = get_json(&feed(&server, "subscriptions/list"), &admin);
    assert_eq!(listing[0]["webhook"]["status"], "expired");
}
