//! Asynchronous audit queries (Graph `auditLogQuery`): created, run in the background to
//! `succeeded`, paged through with no ceiling, the same events as a search finds; bad filters
//! refused; starting and reading recorded.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn create(server: &Server, token: &str, body: Value) -> reqwest::blocking::Response {
    send(
        client().post(format!("{}/api/audit/queries", server.base)),
        token,
        Some(body),
    )
}

fn wait_done(server: &Server, token: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let query = get_json(&format!("{}/api/audit/queries/{id}", server.base), token);
        if query["status"] == "succeeded" || query["status"] == "failed" {
            return query;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the query ran too long: {query}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_query_runs_to_the_end_and_pages_through_every_event() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let mut created = Vec::new();
    for i in 0..25 {
        let response = send(
            client().post(server.api("contacts")),
            &admin,
            Some(json!({"lastname": format!("Doe {i}")})),
        );
        assert_eq!(response.status(), 204);
        created.push(entity_id(&response));
    }
    let response = create(
        &server,
        &admin,
        json!({
            "displayName": "contacts created",
            "operationFilters": ["Create"],
            "userPrincipalNameFilters": ["admin"],
            "filterStartDateTime": "2000-01-01T00:00:00Z",
        }),
    );
    assert_eq!(response.status(), 201);
    let query: Value = response.json().unwrap();
    assert_eq!(query["displayName"], "contacts created");
    assert!(["notStarted", "running", "succeeded"].contains(&query["status"].as_str().unwrap()));
    let id = query["id"].as_str().unwrap().to_string();
    let done = wait_done(&server, &admin, &id);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["approximateReturnedRecordCount"], 25);
    assert_eq!(done["operationFilters"], json!(["Create"]));

    let mut url = format!("{}/api/audit/queries/{id}/records?$top=10", server.base);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = get_json(&url, &admin);
        pages += 1;
        for record in page["value"].as_array().unwrap() {
            assert_eq!(record["operation"], "Create");
            assert_eq!(record["userPrincipalName"], "admin");
            assert_eq!(record["auditData"]["Id"], record["id"]);
            seen.push(record["objectId"].as_str().unwrap().to_string());
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 records in pages of 10");
    seen.reverse();
    assert_eq!(seen, created, "every contact, newest first");
    // A skiptoken beyond the end, up to the largest, is an empty last page (it overflowed a
    // debug build into a 500, and wrapped a release build into a next link back to the start).
    for skip in [25, 1_000, u64::MAX - 5, u64::MAX] {
        let page = get_json(
            &format!(
                "{}/api/audit/queries/{id}/records?$top=10&$skiptoken={skip}",
                server.base
            ),
            &admin,
        );
        assert_eq!(page["value"], json!([]), "skiptoken {skip}");
        assert!(
            page.get("@odata.nextLink").is_none(),
            "skiptoken {skip}: {page}"
        );
    }

    let listed = get_json(&format!("{}/api/audit/queries", server.base), &admin);
    assert_eq!(listed["value"][0]["id"], id.as_str());
    let reads = server.audit(&admin, &format!("operation=SearchAuditLog&q={id}"));
    assert!(
        reads.len() >= 4,
        "the start and each page read are recorded: {}",
        reads.len()
    );
}

#[test]
fn bad_queries_are_refused_with_reasons() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(odata_error(create(&server, &bo, json!({}))).0, 403);
    for (body, why) in [
        (json!({"objectIdFilters": ["not-a-guid"]}), "GUID"),
        (
            json!({"administrativeUnitIdFilters": ["x"]}),
            "administrative units",
        ),
        (
            json!({"filterStartDateTime": "2026-02-01", "filterEndDateTime": "2026-01-01"}),
            "before",
        ),
        (json!({"operationFilters": "Create"}), "list of strings"),
        (json!({"colour": "red"}), "unknown property"),
        (json!([1]), "JSON object"),
    ] {
        let (status, _, message) = odata_error(create(&server, &admin, body.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(why), "{body}: {message}");
    }
    let missing = send(
        client().get(format!(
            "{}/api/audit/queries/00000000-0000-0000-0000-000000000000",
            server.base
        )),
        &admin,
        None,
    );
    assert_eq!(odata_error(missing).0, 404);
}
