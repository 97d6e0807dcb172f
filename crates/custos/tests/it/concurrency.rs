//! Optimistic concurrency as in Dataverse (issue 14 item 1): `If-Match` with a stale ETag is
//! 412 on PATCH and DELETE and changes nothing; the current ETag succeeds; `If-None-Match` with
//! the current ETag is 304; every refusal is in the log. And the protocol details a client
//! reads first: the scheme a 401 wants, the context first in a record, the methods a 405
//! allows, a query that is not UTF-8 refused, and `set/$count`.

use serde_json::json;

use crate::common::*;

#[test]
fn a_stale_etag_changes_nothing_and_the_current_one_wins() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let id = create_account(&server, &admin, "Contoso");
    let url = server.api(&format!("accounts({id})"));
    let etag = |token: &str| -> String {
        get_json(&url, token)["@odata.etag"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = etag(&admin);
    assert_eq!(first, "W/\"1\"");

    // Unchanged: 304 with no body; after a change, 200 with the new ETag.
    let cached = send(
        client().get(&url).header("If-None-Match", &first),
        &admin,
        None,
    );
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().unwrap().is_empty());

    let updated = send(
        client().patch(&url).header("If-Match", &first),
        &admin,
        Some(json!({"name": "Contoso Ltd"})),
    );
    assert_eq!(updated.status(), 204);
    let second = etag(&admin);
    assert_eq!(second, "W/\"2\"");
    assert_eq!(
        send(
            client().get(&url).header("If-None-Match", &first),
            &admin,
            None
        )
        .status(),
        200
    );

    // The first ETag is stale now: neither PATCH nor DELETE does anything.
    let lost = send(
        client().patch(&url).header("If-Match", &first),
        &admin,
        Some(json!({"name": "Lost update"})),
    );
    let (status, code, _) = odata_error(lost);
    assert_eq!((status, code.as_str()), (412, "PreconditionFailed"));
    let removed = send(
        client().delete(&url).header("If-Match", &first),
        &admin,
        None,
    );
    assert_eq!(removed.status(), 412);
    let garbage = send(
        client().delete(&url).header("If-Match", "\"not-ours\""),
        &admin,
        None,
    );
    assert_eq!(garbage.status(), 412);
    assert_eq!(get_json(&url, &admin)["name"], "Contoso Ltd");
    let refused: Vec<_> = server
        .audit(&admin, "operation=Delete")
        .into_iter()
        .filter(|e| e["ResultStatus"] != "Succeeded")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "each refused delete is in the log: {refused:?}"
    );

    // The current ETag deletes.
    let deleted = send(
        client().delete(&url).header("If-Match", &second),
        &admin,
        None,
    );
    assert_eq!(deleted.status(), 204);
    assert_eq!(send(client().get(&url), &admin, None).status(), 404);
}

#[test]
fn a_401_names_its_scheme_and_a_record_starts_with_its_context() {
    let server = Server::start(&[]);
    let unauthenticated = client().get(server.api("accounts")).send().unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(
        unauthenticated.headers()["www-authenticate"],
        "Bearer realm=\"custos\""
    );
    let admin = server.admin();
    let id = create_account(&server, &admin, "Fabrikam");
    let text = send(
        client().get(server.api(&format!("accounts({id})"))),
        &admin,
        None,
    )
    .text()
    .unwrap();
    assert!(text.starts_with("{\"@odata.context\":"), "{text}");
    let wrong = send(client().delete(server.api("accounts")), &admin, None);
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "GET, POST");
    let wrong = send(
        client().put(server.api(&format!("accounts({id})"))),
        &admin,
        None,
    );
    assert_eq!(wrong.headers()["allow"], "GET, PATCH, DELETE");
    let garbled = send(
        client().get(format!(
            "{}?$filter=name%20eq%20%27%FF%27",
            server.api("accounts")
        )),
        &admin,
        None,
    );
    assert_eq!(garbled.status(), 400, "a query that is not UTF-8");

    // `set/$count` is the number a client's count() reads, with or without a filter.
    create_account(&server, &admin, "Northwind");
    let counted = |query: &str| {
        let response = send(
            client().get(format!("{}/$count{query}", server.api("accounts"))),
            &admin,
            None,
        );
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        response.text().unwrap()
    };
    assert_eq!(counted(""), count(&server, &admin, "accounts").to_string());
    assert_eq!(counted("?$filter=name%20eq%20%27Northwind%27"), "1");
    let wrong = send(
        client().post(format!("{}/$count", server.api("accounts"))),
        &admin,
        None,
    );
    assert_eq!(wrong.headers()["allow"], "GET");
}
