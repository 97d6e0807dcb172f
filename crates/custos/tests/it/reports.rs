//! The preconfigured reports of SPEC §7 over HTTP: their list, and one report's totals, series
//! and top lists agreeing with the events a search finds.

use serde_json::json;

use crate::common::*;

#[test]
fn a_report_counts_what_a_search_finds() {
    let server = Server::start(&[]);
    let admin = server.admin();
    for name in ["one", "two", "three"] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name})),
        );
        assert_eq!(response.status(), 204);
    }
    let contact = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"lastname": "Doe"})),
    );
    assert_eq!(contact.status(), 204);

    let list = get_json(&format!("{}/api/audit/reports", server.base), &admin);
    let ids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 9);
    assert!(ids.contains(&"accessed-out-of-box-entity") && ids.contains(&"signed-in-or-out"));

    let url = format!(
        "{}/api/audit/reports/accessed-out-of-box-entity?bucket=day",
        server.base
    );
    let report = get_json(&url, &admin);
    let found = server.audit(&admin, "category=accessed-out-of-box-entity");
    assert_eq!(report["total"], found.len() as u64);
    assert_eq!(report["total"], 4, "three accounts and a contact created");
    let series = report["series"].as_array().unwrap();
    let summed: u64 = series.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(summed, 4, "the series adds up to the total");
    assert!(
        (7..=8).contains(&series.len()),
        "a bucket per day of the default 7 days: {}",
        series.len()
    );
    assert_eq!(
        report["topOperations"][0],
        json!({"operation": "Create", "count": 4})
    );
    assert_eq!(report["topUsers"][0], json!({"user": "admin", "count": 4}));
    assert_eq!(
        report["topEntities"][0],
        json!({"entity": "account", "count": 3})
    );
    assert_eq!(
        report["topEntities"][1],
        json!({"entity": "contact", "count": 1})
    );
    let link = report["searchLink"].as_str().unwrap();
    assert!(
        link.starts_with("/api/audit/records?category=accessed-out-of-box-entity"),
        "{link}"
    );
    let linked = get_json(&format!("{}{link}", server.base), &admin);
    assert_eq!(linked["value"].as_array().unwrap().len(), 4);

    // Reading a report is recorded like a search.
    let recorded = server.audit(&admin, "operation=SearchAuditLog&q=accessed");
    assert!(
        recorded.iter().any(|e| e["Query"]
            .as_str()
            .unwrap()
            .starts_with("report=accessed-out-of-box-entity")),
        "{recorded:?}"
    );
}

#[test]
fn reports_need_the_audit_reader_role_and_check_their_input() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let report = format!("{}/api/audit/reports/signed-in-or-out", server.base);
    assert_eq!(odata_error(send(client().get(&report), &bo, None)).0, 403);
    for (query, why) in [
        ("bucket=week", "bucket"),
        ("start=yesterday", "ISO 8601"),
        ("start=2026-02-01&end=2026-01-01", "before"),
        ("start=2000-01-01&end=2000-06-01&bucket=hour", "buckets"),
        ("start=2000-01-01&end=2002-01-01", "366 days"),
        ("colour=red", "unknown"),
    ] {
        let (status, _, message) = odata_error(send(
            client().get(format!("{report}?{query}")),
            &admin,
            None,
        ));
        assert_eq!(status, 400, "{query}");
        assert!(message.contains(why), "{query}: {message}");
    }
    let (status, _, _) = odata_error(send(
        client().get(format!("{}/api/audit/reports/nope", server.base)),
        &admin,
        None,
    ));
    assert_eq!(status, 404);
}
