//! `$batch` (issue 14): JSON and multipart batches run each request as if sent alone — its own
//! answer and audit event — under the batch's caller and one correlation id; refusals the batch
//! makes itself (a failed dependency, a URL of another instance) are recorded too. Changesets
//! and atomicity groups are all or nothing: every write with its event, or none of them.

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
    let correlation = correlation_of(&response);
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
fn a_multipart_batch_answers_in_parts() {
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

    // A GET whose part ends right after its last header (one CRLF before the boundary, which
    // the delimiter takes) is whole: answered as one without a body. A header cut off is not.
    let lenient = send_raw(
        client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=b"),
        &admin,
        concat!(
            "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n",
            "GET accounts?$apply=aggregate($count%20as%20n) HTTP/1.1\r\nAccept: application/json\r\n",
            "\r\n--b--\r\n",
        ),
    );
    let (parts, text) = multipart(lenient);
    assert_eq!(parts.len(), 1, "{text}");
    assert!(parts[0].contains("HTTP/1.1 200 OK"), "{text}");
    assert!(parts[0].contains("\"n\":1"), "{text}");
    let cut = send_raw(
        client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=b"),
        &admin,
        concat!(
            "--b\r\nContent-Type: application/http\r\n\r\n",
            "GET accounts HTTP/1.1\r\nAccept: appl",
            "\r\n--b--\r\n",
        ),
    );
    let (status, _, message) = odata_error(cut);
    assert_eq!(status, 400);
    assert!(
        message.contains("ends inside its request's headers"),
        "{message}"
    );

    let response = client()
        .post(server.api("$batch"))
        .header("Content-Type", "application/json")
        .body(r#"{"requests": [{"id": "1", "method": "GET", "url": "accounts"}]}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 401, "a batch needs the caller's token");
}

/// The parts of a multipart answer's body at the top level, and the boundary of each nested
/// changeset's parts.
fn multipart(response: reqwest::blocking::Response) -> (Vec<String>, String) {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
    let text = response.text().unwrap();
    assert!(
        text.trim_end().ends_with(&format!("--{boundary}--")),
        "{text}"
    );
    let parts = text
        .split(&format!("--{boundary}"))
        .map(str::to_string)
        .filter(|p| p.contains("HTTP/1.1"))
        .collect();
    (parts, text)
}

fn name_of(server: &Server, token: &str, set: &str, id: &str) -> Option<Value> {
    let response = send(
        client().get(server.api(&format!("{set}({id})"))),
        token,
        None,
    );
    (response.status() == 200).then(|| response.json().unwrap())
}

fn accounts_named(server: &Server, token: &str, name: &str) -> Vec<Value> {
    let page = get_json(
        &server.api(&format!("accounts?$select=name&$filter=name eq '{name}'")),
        token,
    );
    page["value"].as_array().unwrap().clone()
}

#[test]
fn a_changeset_commits_every_write_with_its_event_or_none() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let existing = create_account(&server, &admin, "Existing");
    let version = get_json(&server.api(&format!("accounts({existing})")), &admin)["@odata.etag"]
        .as_str()
        .unwrap()
        .to_string();
    let changeset = |last: &str| {
        format!(
            concat!(
                "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n",
                "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\n",
                "POST accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
                "{{\"name\": \"Changeset Account\"}}\r\n",
                "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 2\r\n\r\n",
                "POST contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
                "{{\"lastname\": \"Bound\", \"parentcustomerid@odata.bind\": \"$1\"}}\r\n",
                "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 3\r\n\r\n",
                "{}",
                "--changeset_1--\r\n",
                "--batch_1\r\nContent-Type: application/http\r\n\r\n",
                "GET accounts?$select=name&$filter=name%20eq%20'Changeset%20Account' HTTP/1.1\r\n\r\n\r\n",
                "--batch_1--\r\n",
            ),
            last
        )
    };
    let post = |body: String, prefer: Option<&str>| {
        let mut builder = client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=batch_1")
            .bearer_auth(&admin)
            .body(body);
        if let Some(prefer) = prefer {
            builder = builder.header("Prefer", prefer);
        }
        builder.send().unwrap()
    };

    // An ETag of another version on the third write fails inside the transaction: the two
    // creates before it are undone, the failure is the changeset's one answer, and the batch
    // stops there.
    assert_ne!(version, "W/\"999\"");
    let patch = |etag: &str| {
        format!(
            "PATCH accounts({existing}) HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: {etag}\r\n\r\n{{\"numberofemployees\": 9}}\r\n"
        )
    };
    let stale = patch("W/\"999\"");
    let response = post(changeset(&stale), None);
    let correlation = correlation_of(&response);
    let (parts, text) = multipart(response);
    assert_eq!(parts.len(), 1, "{text}");
    assert!(parts[0].contains("HTTP/1.1 412"), "{text}");
    assert!(!parts[0].contains("multipart/mixed"), "{text}");
    assert!(accounts_named(&server, &admin, "Changeset Account").is_empty());
    assert_eq!(count(&server, &admin, "contacts"), 0);
    let unchanged = name_of(&server, &admin, "accounts", &existing).unwrap();
    assert!(unchanged["numberofemployees"].is_null());
    let events = events_of(&server, &admin, &correlation);
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["Operation"].as_str().unwrap(),
                e["ResultStatus"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("Update", "Failed")], "{events:#?}");
    assert_eq!(events[0]["RecordIds"], json!([existing]));

    // With continue-on-error the batch goes on after a failed changeset.
    let (parts, text) = multipart(post(changeset(&stale), Some("odata.continue-on-error")));
    assert_eq!(parts.len(), 2, "{text}");
    assert!(
        parts[1].contains("HTTP/1.1 200 OK") && parts[1].contains("\"value\":[]"),
        "{text}"
    );

    // The current ETag: all three writes commit, each with its event, answered in a nested
    // changeset with their Content-IDs; the GET after it sees the new account.
    let current = patch(&version);
    let response = post(changeset(&current), None);
    let correlation = correlation_of(&response);
    let (parts, text) = multipart(response);
    assert!(
        text.contains("Content-Type: multipart/mixed; boundary=changesetresponse_"),
        "{text}"
    );
    for id in 1..=3 {
        assert!(text.contains(&format!("Content-ID: {id}\r\n")), "{text}");
    }
    assert_eq!(text.matches("HTTP/1.1 204").count(), 3, "{text}");
    assert_eq!(text.matches("odata-version: 4.0").count(), 4, "{text}");
    assert!(
        parts.last().unwrap().contains("Changeset Account"),
        "{text}"
    );
    let account = accounts_named(&server, &admin, "Changeset Account");
    assert_eq!(account.len(), 1);
    let account_id = account[0]["accountid"].as_str().unwrap();
    let contacts = get_json(
        &server.api("contacts?$select=lastname,_parentcustomerid_value"),
        &admin,
    );
    assert_eq!(
        contacts["value"][0]["_parentcustomerid_value"], account_id,
        "{contacts:#}"
    );
    let changed = name_of(&server, &admin, "accounts", &existing).unwrap();
    assert_eq!(changed["numberofemployees"], 9);
    let events = events_of(&server, &admin, &correlation);
    let mut writes: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["Operation"] != "RetrieveMultiple")
        .map(|e| {
            (
                e["Operation"].as_str().unwrap(),
                e["EntityName"].as_str().unwrap(),
            )
        })
        .collect();
    writes.sort();
    assert_eq!(
        writes,
        [
            ("Create", "account"),
            ("Create", "contact"),
            ("Update", "account")
        ],
        "{events:#?}"
    );
    assert!(
        events.iter().all(|e| e["ResultStatus"] == "Succeeded"),
        "{events:#?}"
    );
}

#[test]
fn an_atomicity_group_fails_whole_and_refuses_what_it_cannot_hold() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let missing = uuid::Uuid::new_v4();
    let batch = json!({"requests": [
        {"id": "a", "atomicityGroup": "g", "method": "POST", "url": "accounts",
         "body": {"name": "Grouped"}},
        {"id": "b", "atomicityGroup": "g", "method": "POST", "url": "contacts", "dependsOn": ["a"],
         "body": {"lastname": "Grouped", "parentcustomerid@odata.bind": "$a"}},
        {"id": "c", "atomicityGroup": "g", "method": "DELETE", "url": format!("accounts({missing})")},
        {"id": "d", "method": "GET", "url": "accounts", "dependsOn": ["g"]},
    ]});
    let response = send(client().post(server.api("$batch")), &admin, Some(batch));
    let answer: Value = response.json().unwrap();
    let statuses: Vec<(&str, u64, &str)> = answer["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
                r["atomicityGroup"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("c", 404, "g"),
            ("a", 424, "g"),
            ("b", 424, "g"),
            ("d", 424, "")
        ],
        "{answer:#}"
    );
    assert!(accounts_named(&server, &admin, "Grouped").is_empty());
    assert_eq!(count(&server, &admin, "contacts"), 0);

    // The same group without the failing delete commits; `$a` names the new account.
    let batch = json!({"requests": [
        {"id": "a", "atomicityGroup": "g", "method": "POST", "url": "accounts",
         "body": {"name": "Grouped"}},
        {"id": "b", "atomicityGroup": "g", "method": "POST", "url": "contacts", "dependsOn": ["a"],
         "body": {"lastname": "Grouped", "parentcustomerid@odata.bind": "$a"}},
        {"id": "d", "method": "GET", "url": "$a?$select=name", "dependsOn": ["g"]},
    ]});
    let answer: Value = send(client().post(server.api("$batch")), &admin, Some(batch))
        .json()
        .unwrap();
    let responses = answer["responses"].as_array().unwrap();
    assert_eq!(batch_statuses(&answer), [204, 204, 200], "{answer:#}");
    assert_eq!(responses[2]["body"]["name"], "Grouped");

    // What a group cannot hold is refused, recorded, and nothing of the group is made: a read,
    // a user (its directory change is outside the store's transaction), a change to a record
    // the group itself creates.
    for (refused, expected) in [
        (
            json!({"method": "GET", "url": "accounts"}),
            "changeset holds",
        ),
        (
            json!({"method": "POST", "url": "systemusers",
                   "body": {"domainname": "grouped@example.com", "password": "Passw0rd!Passw0rd"}}),
            "systemuser records cannot be written in a changeset",
        ),
        (
            json!({"method": "PATCH", "url": "$a", "body": {"name": "Renamed"}}),
            "changes a record its own changeset creates",
        ),
    ] {
        let mut second = refused.clone();
        second["id"] = json!("x");
        second["atomicityGroup"] = json!("h");
        let batch = json!({"requests": [
            {"id": "a", "atomicityGroup": "h", "method": "POST", "url": "accounts",
             "body": {"name": "Never"}},
            second,
        ]});
        let response = send(client().post(server.api("$batch")), &admin, Some(batch));
        let correlation = correlation_of(&response);
        let answer: Value = response.json().unwrap();
        let first = &answer["responses"][0];
        assert_eq!(
            (first["id"].as_str(), first["status"].as_u64()),
            (Some("x"), Some(400)),
            "{answer:#}"
        );
        let message = first["body"]["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(accounts_named(&server, &admin, "Never").is_empty());
        let events = events_of(&server, &admin, &correlation);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["ResultStatus"], "Failed");
    }
}

/// A create under a navigation property inside a changeset, from the record an earlier write
/// of it creates (`$1/contact_parentcustomerid`): both commit, the contact bound to the
/// account and its event saying where it was made. From a record that does not exist, the
/// changeset fails whole. Deleting the account in a changeset takes the contact with it.
#[test]
fn a_changeset_creates_under_a_navigation_property_of_a_record_it_creates() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let changeset = |parent: &str| {
        format!(
            concat!(
                "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n",
                "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\n",
                "POST accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
                "{{\"name\": \"Parent Account\"}}\r\n",
                "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 2\r\n\r\n",
                "POST {}/contact_parentcustomerid HTTP/1.1\r\nContent-Type: application/json\r\n\r\n",
                "{{\"lastname\": \"Child\"}}\r\n",
                "--changeset_1--\r\n",
                "--batch_1--\r\n",
            ),
            parent
        )
    };
    let post = |body: String| {
        client()
            .post(server.api("$batch"))
            .header("Content-Type", "multipart/mixed; boundary=batch_1")
            .bearer_auth(&admin)
            .body(body)
            .send()
            .unwrap()
    };

    let (parts, text) = multipart(post(changeset(&format!(
        "accounts({})",
        uuid::Uuid::new_v4()
    ))));
    assert_eq!(parts.len(), 1, "{text}");
    assert!(
        parts[0].contains("HTTP/1.1 400") && parts[0].contains("does not exist"),
        "{text}"
    );
    assert!(accounts_named(&server, &admin, "Parent Account").is_empty());
    assert_eq!(count(&server, &admin, "contacts"), 0);

    let response = post(changeset("$1"));
    let correlation = correlation_of(&response);
    let (_, text) = multipart(response);
    assert_eq!(text.matches("HTTP/1.1 204").count(), 2, "{text}");
    let account = accounts_named(&server, &admin, "Parent Account");
    let account = account[0]["accountid"].as_str().unwrap();
    let contacts = get_json(
        &server.api("contacts?$select=lastname,_parentcustomerid_value"),
        &admin,
    );
    assert_eq!(
        contacts["value"][0]["_parentcustomerid_value"], account,
        "{contacts:#}"
    );
    let created = events_of(&server, &admin, &correlation);
    let child = created
        .iter()
        .find(|e| e["EntityName"] == "contact")
        .unwrap_or_else(|| panic!("{created:#?}"));
    assert_eq!(child["Operation"], "Create");
    assert_eq!(
        child["Details"],
        json!({
            "NavigatedFrom": "account",
            "RecordId": account,
            "NavigationProperty": "contact_parentcustomerid",
        })
    );
    let contact = child["RecordIds"][0].as_str().unwrap().to_string();

    // A changeset's delete takes the account's contact with it, recorded in the changeset's
    // events; for a caller who may not delete contacts it fails whole, as its refusal.
    let delete = format!(
        concat!(
            "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n",
            "--changeset_1\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\n",
            "DELETE accounts({}) HTTP/1.1\r\n\r\n\r\n",
            "--changeset_1--\r\n",
            "--batch_1--\r\n",
        ),
        account
    );
    let remover = server.user_holding(
        &admin,
        "remover@custos.test",
        "Account remover",
        &["prvReadaccount", "prvDeleteaccount", "prvReadcontact"],
    );
    let refused = client()
        .post(server.api("$batch"))
        .header("Content-Type", "multipart/mixed; boundary=batch_1")
        .bearer_auth(&remover)
        .body(delete.clone())
        .send()
        .unwrap();
    let (parts, text) = multipart(refused);
    assert_eq!(parts.len(), 1, "{text}");
    assert!(
        parts[0].contains("HTTP/1.1 403") && parts[0].contains("entity 'contact'"),
        "{text}"
    );
    assert_eq!(accounts_named(&server, &admin, "Parent Account").len(), 1);
    assert_eq!(count(&server, &admin, "contacts"), 1);
    let response = post(delete);
    let correlation = correlation_of(&response);
    let (_, text) = multipart(response);
    assert_eq!(text.matches("HTTP/1.1 204").count(), 1, "{text}");
    assert_eq!(count(&server, &admin, "contacts"), 0);
    let deleted = events_of(&server, &admin, &correlation);
    let cascaded = deleted
        .iter()
        .find(|e| e["EntityName"] == "contact")
        .unwrap_or_else(|| panic!("{deleted:#?}"));
    assert_eq!(cascaded["Operation"], "Delete");
    assert_eq!(cascaded["RecordIds"], json!([contact]));
    assert_eq!(
        cascaded["Details"],
        json!({"CascadedFrom": {"Entity": "account", "RecordId": account}})
    );
}
