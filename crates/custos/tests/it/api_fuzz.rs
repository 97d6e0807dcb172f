//! The API under a fuzzer (SPEC §12): schemathesis generates thousands of requests — valid,
//! boundary and malformed — from the server's own OpenAPI document (`GET /openapi.json`) and
//! runs every check it has, as an integrator's `st run` does by default: not one answer may be a
//! server error, and every answer must be what the document says (status code, content type,
//! body schema, `Allow` header; schema-valid requests accepted and schema-violating ones
//! refused, with the exceptions `tests/schemathesis.toml` lists and explains). Afterwards the
//! audit log, which recorded every refusal, still verifies.

use std::path::Path;

use crate::common::*;

#[test]
fn no_generated_request_gets_a_server_error_and_the_log_still_verifies() {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    // The document itself is valid OpenAPI 3.0, as a client generator reads it.
    let document = client()
        .get(format!("{}/openapi.json", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let checked = python(
        &[
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(sys.stdin))",
        ],
        document.as_bytes(),
    );
    assert!(
        checked.status.success(),
        "/openapi.json is not valid OpenAPI 3.0 (scripts/test installs openapi-spec-validator):\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let generated = schemathesis(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/schemathesis.toml"
        )),
        &format!("{}/openapi.json", server.base),
        &admin,
        &["--max-examples", "25"],
    );
    assert!(
        generated > 1000,
        "too few requests were generated: {generated}"
    );
    // The fuzzer may have left audit log search off; an Audit Manager turns it back on.
    let response = send(
        client().put(format!("{}/api/audit/settings", server.base)),
        &admin,
        Some(serde_json::json!({"searchEnabled": true})),
    );
    assert_eq!(response.status(), 200);
    // The refusals are recorded: the first of each minute one by one, the rest of the flood
    // in summary events that count them (issue 10 §4).
    let refused = server.audit(&admin, "status=Failed");
    assert!(
        refused.iter().any(|e| e["ErrorCode"] == "BadRequest"),
        "the refusals are recorded"
    );
    let summaries: Vec<_> = server
        .audit(&admin, "operation=Request")
        .into_iter()
        .filter(|e| e["ErrorCode"] == "Throttled")
        .collect();
    assert!(!summaries.is_empty(), "a flood of refusals is summarized");
    let counted: u64 = summaries
        .iter()
        .map(|e| e["ResultCount"].as_u64().unwrap())
        .sum();
    assert!(counted > 0);

    kill_and_verify(&mut server);
}
