//! When the audit log cannot be written the server refuses (503) rather than serve unaudited.
//! The fault is real: the server runs under a file-size limit (`ulimit -f`, with SIGXFSZ
//! ignored), so appending to the audit segment fails with EFBIG once it reaches the limit.

use std::process::Command;

use serde_json::json;

use crate::common::*;

#[test]
fn a_full_log_refuses_requests_instead_of_serving_them_unaudited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with(
        Command::new("bash")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 8192; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_custos")),
        &dir,
        &[],
    );
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "kept"})),
    );
    assert_eq!(response.status(), 204);

    // Each audited page records its 12 KiB filter; 8 MiB of them fill the log's file limit.
    let filter = format!("contains(name,'{}')", "z".repeat(12 * 1024));
    let url = server.api(&format!("accounts?$filter={filter}"));
    let mut refused = None;
    for _ in 0..2000 {
        let response = send(client().get(&url), &admin, None);
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
    }
    let (status, code, message) =
        odata_error(refused.expect("the log filled up within 2,000 pages"));
    assert_eq!((status, code.as_str()), (503, "ServiceUnavailable"));
    assert!(message.contains("audit log"), "{message}");

    // Writes whose event does not fit are refused too, and roll back: the record is not created.
    let big = "d".repeat(12 * 1024);
    let response = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "never", "description": big})),
    );
    assert_eq!(response.status(), 503);
    let (status, _, _) = odata_error(send(client().get(&url), &admin, None));
    assert_eq!(
        status, 503,
        "reads stay refused while the log cannot take their event"
    );

    // After a restart without the limit, the log is intact and the refused create never happened.
    drop(server);
    let server = Server::start_in(&dir, &[]);
    let admin = server.admin();
    let names: Vec<String> = get_json(&server.api("accounts?$select=name"), &admin)["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["kept"]);
    let creates = server.audit(&admin, "operation=Create&entity=account");
    assert_eq!(
        creates.len(),
        1,
        "only the committed create is recorded as created"
    );
}
