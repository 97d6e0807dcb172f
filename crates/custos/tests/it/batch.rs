//! `$batch` (issue 14): JSON and multipart batches run each request as if sent alone — its own
//! answer and audit event — under the batch's caller and one correlation id; refusals the batch
//! makes itself (a failed dependency, a URL of another instance) are recorded too, and
//! changesets, which could not be atomic here, are refused.

use serde_json::{Value, json};

use crate::common::*;

/// Sends `body` as it is (a multipart batch) with the caller's token.
fn send_raw(
    builder: reqwest::blocking::RequestBuilder,
    token: &str,
    body: &'static str,
) -> reqwest::blocking::Response {
    builder.bearer_auth(token).body(body).send().unwrap()
}

/// The events of one request, found by its correlation id.
fn events_of(server: &Server, token: &str, correlation: &str) -> Vec<Value> {
    server
        .audit(token, "instance=main")
        .into_iter()
        .filter(|e| e["CorrelationId"] == correlation)
        .collect()
}

#[test]
fn each_request_of_a_batch_is_answered_and_audited_as_if_sent_alone() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account"]);
    let missing = uuid::Uuid::new_v4();
    let batch = json!({"requests": [
        {"id": "1", "method": "POST", "url": "accounts", "body": {"name": "Batch One"}},
        {"id": "2", "method": "GET", "dependsOn": ["1"],
         "url": "accounts?$select=name&$filter=name eq 'Batch One'"},
        {"id": "3", "method": "GET", "url": format!("/main/api/data/v9.2/accounts({missing})")},
        {"id": "4", "method": "GET", "url": "accounts", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": "/other/api/data/v9.2/accounts"},
    ]});
    let response = send(client().post(server.api("$batch")), &admin, Some(batch));
    assert_eq!(response.status(), 200);
    let correlation = response.headers()["x-ms-service-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let answer: Value = response.json().unwrap();
    let responses = answer["responses"].as_array().unwrap();
    let statuses: Vec<(&str, u64)> = responses
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("1", 204), ("2", 200), ("3", 404), ("4", 424), ("5", 400)],
        "{answer:#}"
    );
    let created = responses[0]["headers"]["odata-entityid"].as_str().unwrap();
    let rows = responses[1]["body"]["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(created.contains(rows[0]["accountid"].as_str().unwrap()));
    assert_eq!(responses[3]["body"]["error"]["code"], "FailedDependency");

    // One correlation: the create, the list with the id it showed, and every refusal.
    let events = events_of(&server, &admin, &correlation);
    let mut seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["Operation"].as_str().unwrap().to_string(),
                e["ResultStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String)> = [
        ("Create", "Succeeded"),
        ("Request", "Failed"),
        ("Request", "Failed"),
        ("Retrieve", "Failed"),
        ("RetrieveMultiple", "Succeeded"),
    ]
    .iter()
    .map(|(o, s)| (o.to_string(), s.to_string()))
    .collect();
    assert_eq!(seen, expected, "{events:#?}");
    let list = events
        .iter()
        .find(|e| e["Operation"] == "RetrieveMultiple")
        .unwrap();
    assert_eq!(list["RecordIds"], json!([rows[0]["accountid"]]));
    assert!(
        events.iter().all(|e| e["UserUpn"] == "admin"),
        "{events:#?}"
    );
}

#[test]
fn a_multipart_batch_answers_in_parts_and_changesets_are_refused() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let body = concat!(
        "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n",
        "POST accounts HTTP/1.1\r\nContent-Type: application/json\r\nPrefer: return=representation\r\n\r\n",
        "{\"name\": \"Multipart\"}\r\n",
        "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n",
        "GET accounts?$select=name&$filter=name%20eq%20'Multipart' HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n",
        "--batch_1--\r\n",
    );
    let response = send_raw(
        client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=batch_1"),
        &admin,
        body,
    );
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
    let text = response.text().unwrap();
    let parts: Vec<&str> = text
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("HTTP/1.1"))
        .collect();
    assert_eq!(parts.len(), 2, "{text}");
    assert!(parts[0].contains("HTTP/1.1 201 Created"), "{text}");
    assert!(parts[1].contains("HTTP/1.1 200 OK"), "{text}");
    let json_start = parts[1].find('{').unwrap();
    let page: Value = serde_json::from_str(parts[1][json_start..].trim()).unwrap();
    assert_eq!(page["value"][0]["name"], "Multipart", "{text}");
    assert!(text.trim_end().ends_with(&format!("--{boundary}--")));

    let changeset = concat!(
        "--batch_2\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n",
        "--changeset_1\r\nContent-Type: application/http\r\n\r\nPOST accounts HTTP/1.1\r\n\r\n{}\r\n--changeset_1--\r\n",
        "--batch_2--\r\n",
    );
    let response = send_raw(
        client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=batch_2"),
        &admin,
        changeset,
    );
    assert_eq!(response.status(), 400);
    let error: Value = response.json().unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changesets"),
        "{error}"
    );
    let grouped = json!({"requests": [
        {"id": "1", "method": "POST", "url": "accounts", "atomicityGroup": "g", "body": {}},
    ]});
    let response = send(client().post(server.api("$batch")), &admin, Some(grouped));
    assert_eq!(response.status(), 400);
    let response = client()
        .post(server.api("$batch"))
        .header("Content-Type", "application/json")
        .body(r#"{"requests": [{"id": "1", "method": "GET", "url": "accounts"}]}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 401, "a batch needs the caller's token");
}
