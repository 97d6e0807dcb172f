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

#[test]
fn an_export_job_reports_progress_and_hands_over_its_file() {
    let server = Server::start(&[]);
    let admin = server.admin();
    for i in 0..30 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("Export {i}")})),
        );
        assert_eq!(response.status(), 204);
    }
    let exports = format!("{}/api/audit/exports", server.base);
    let (status, _, message) = odata_error(send(
        client().post(&exports),
        &admin,
        Some(json!({"format": "pdf", "search": "operation=Create"})),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("csv, xlsx or jsonl"), "{message}");
    let started = send(
        client().post(&exports),
        &admin,
        Some(json!({"format": "jsonl", "search": "operation=Create&entity=account"})),
    );
    assert_eq!(started.status(), 202);
    let job: serde_json::Value = started.json().unwrap();
    assert_eq!(job["total"], 30);
    let id = job["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let status = get_json(&format!("{exports}/{id}"), &admin);
        if status["status"] == "succeeded" {
            break status;
        }
        assert_ne!(status["status"], "failed", "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "the export ran too long"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(done["done"], 30);
    let file = send(client().get(format!("{exports}/{id}/file")), &admin, None);
    assert_eq!(file.status(), 200);
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".jsonl\"")
    );
    let text = file.text().unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    assert!(
        lines
            .iter()
            .all(|l| l["Operation"] == "Create" && l["EntityName"] == "account")
    );
    let recorded = server.audit(&admin, "operation=ExportAuditLog&status=Succeeded");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["ResultCount"], 30);
    assert_eq!(recorded[0]["Origin"], "Export");
    let refused = server.audit(&admin, "operation=ExportAuditLog&status=Failed");
    assert_eq!(refused.len(), 1, "the refused format is recorded too");
    assert_eq!(refused[0]["Query"], "format=pdf&operation=Create");
    let missing = send(
        client().get(format!("{exports}/00000000-0000-0000-0000-000000000000")),
        &admin,
        None,
    );
    assert_eq!(missing.status(), 404);
}
