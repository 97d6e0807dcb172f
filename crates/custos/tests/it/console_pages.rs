//! Every console page over plain HTTP with a session cookie: it renders, every control has a
//! label, forms do what they say (through the API, so they are audited), refusals show the
//! API's message, and a page without a session sends you to sign in.

use reqwest::blocking::Response;
use reqwest::redirect::Policy;
use serde_json::json;

use crate::common::*;

/// A client that keeps redirects for the test to see, as the console's forms expect.
pub(crate) fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(Policy::none())
        .user_agent("custos-it console")
        .build()
        .unwrap()
}

/// Signs in through the console's form; returns the session cookie.
pub(crate) fn sign_in(server: &Server, user: &str, password: &str) -> String {
    let response = browser()
        .post(format!("{}/ui/login", server.base))
        .form(&[
            ("username", user),
            ("password", password),
            ("next", "/ui/home"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

/// A console page as a signed-in browser gets it: its status and HTML.
pub(crate) fn page(server: &Server, cookie: &str, path: &str) -> (u16, String) {
    let response = browser()
        .get(format!("{}{path}", server.base))
        .header("cookie", cookie)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().unwrap())
}

/// The form token of the session of `cookie`, as the console's pages carry it (every page has
/// at least the sign-out form).
fn csrf(server: &Server, cookie: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, token)) = SEEN.lock().unwrap().iter().find(|(c, _)| c == cookie) {
        return token.clone();
    }
    let (_, html) = page(server, cookie, "/ui/home");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("every console page carries the form token")
        .to_string();
    SEEN.lock()
        .unwrap()
        .push((cookie.to_string(), token.clone()));
    token
}

fn post(server: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> Response {
    let token = csrf(server, cookie);
    let mut form = form.to_vec();
    form.push(("csrf", &token));
    browser()
        .post(format!("{}{path}", server.base))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .unwrap()
}

/// Every visible form control names a label that exists.
/// Every one of `operations` is in the log with `origin`.
fn assert_recorded(server: &Server, admin: &str, origin: &str, operations: &[&str]) {
    let recorded: Vec<String> = server
        .audit(admin, &format!("origin={origin}"))
        .iter()
        .map(|e| e["Operation"].as_str().unwrap().to_string())
        .collect();
    for operation in operations {
        assert!(
            recorded.iter().any(|o| o == operation),
            "{operation} in {recorded:?}"
        );
    }
}

fn assert_labelled(path: &str, html: &str) {
    for control in ["<input", "<select", "<textarea"] {
        for (at, _) in html.match_indices(control) {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            if tag.contains("type=\"hidden\"") {
                continue;
            }
            let id = tag
                .split("id=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{path}: a control without an id: {tag}"));
            assert!(
                html.contains(&format!("for=\"{id}\"")),
                "{path}: control '{id}' has no label"
            );
        }
    }
}

#[test]
fn every_console_page_renders_and_its_forms_work() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let created = send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Fabrikam"})),
    );
    let account = entity_id(&created);
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);

    for (path, expect) in [
        ("/ui/home".to_string(), "Signed in as"),
        ("/ui/main/records".into(), "Entities of instance"),
        ("/ui/main/records/accounts".into(), "Fabrikam"),
        (
            format!("/ui/main/records/accounts/{account}"),
            "Who touched this record?",
        ),
        ("/ui/main/settings/auditing".into(), "Start Read Auditing"),
        (
            "/ui/main/customizations".into(),
            "Publish all customizations",
        ),
        (
            "/ui/main/customizations/account".into(),
            "Retrieve multiple auditing",
        ),
        ("/ui/admin".into(), "main"),
        ("/ui/audit/search?run=1".into(), "Export to Excel"),
        ("/ui/audit/reports".into(), "New custom report"),
        ("/ui/audit/reports/signed-in-or-out".into(), "<svg"),
        ("/ui/audit/alerts".into(), "New rule"),
        ("/ui/audit/retention".into(), "Audit log search is on"),
        ("/ui/audit/integrity".into(), "Verify now"),
        ("/ui/audit/feeds".into(), "No streams."),
        ("/ui/audit/queries".into(), "Background queries"),
        (format!("/ui/audit/subjects/{account}"), "1 events"),
    ] {
        let (status, html) = page(&server, &cookie, &path);
        assert_eq!(status, 200, "{path}: {html}");
        assert!(html.contains(expect), "{path} lacks '{expect}'");
        assert_labelled(&path, &html);
    }

    // A record form changes the record through the API.
    let saved = post(
        &server,
        &cookie,
        &format!("/ui/main/records/accounts/{account}"),
        &[("name", "Fabrikam Ltd"), ("revenue", "12.5")],
    );
    assert_eq!(saved.status(), 303);
    let record = get_json(&server.api(&format!("accounts({account})")), &admin);
    assert_eq!(
        (record["name"].as_str(), record["revenue"].as_f64()),
        (Some("Fabrikam Ltd"), Some(12.5))
    );
    let bad = post(
        &server,
        &cookie,
        &format!("/ui/main/records/accounts/{account}"),
        &[("revenue", "lots")],
    );
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("must be a number"));
    let too_exact = post(
        &server,
        &cookie,
        &format!("/ui/main/records/accounts/{account}"),
        &[("revenue", "922337203685477.5807")],
    );
    assert_eq!(too_exact.status(), 400);
    assert!(
        too_exact
            .text()
            .unwrap()
            .contains("would be kept as 922337203685477.6"),
        "a value a float would change is refused, not rounded"
    );

    // A custom report, an alert rule, search off and on, a background query, from their forms.
    let report = post(
        &server,
        &cookie,
        "/ui/audit/reports",
        &[
            ("name", "Account changes"),
            ("search", "entity=account"),
            ("groupBy", "operation"),
            ("schedule", "none"),
            ("rangeDays", "7"),
        ],
    );
    assert_eq!(report.status(), 303);
    let report_page = report.headers()["location"].to_str().unwrap().to_string();
    let (status, html) = page(&server, &cookie, &report_page);
    assert_eq!(status, 200);
    assert!(
        html.contains("Events by Activity") && html.contains("Update"),
        "{html}"
    );
    let rule = post(
        &server,
        &cookie,
        "/ui/audit/alerts",
        &[
            ("name", "Exports"),
            ("kind", "operation"),
            ("operations", "ExportToExcel, BulkDelete"),
            ("userTypes", ""),
            ("webhook", ""),
        ],
    );
    assert_eq!(rule.status(), 303);
    assert!(
        page(&server, &cookie, "/ui/audit/alerts")
            .1
            .contains("Any ExportToExcel, BulkDelete")
    );
    assert_eq!(
        post(&server, &cookie, "/ui/audit/settings", &[]).status(),
        303,
        "search off"
    );
    let (status, html) = page(&server, &cookie, "/ui/audit/search?run=1");
    assert_eq!(status, 200);
    assert!(
        html.contains("role=\"alert\"") && html.contains("turned off"),
        "{html}"
    );
    assert_eq!(
        post(
            &server,
            &cookie,
            "/ui/audit/settings",
            &[("searchEnabled", "true")]
        )
        .status(),
        303
    );
    let query = post(
        &server,
        &cookie,
        "/ui/audit/queries",
        &[("search", "entity=account")],
    );
    assert_eq!(query.status(), 303);

    // The signing key is rotated from the Integrity page — after a confirmation naming the key
    // in use — which then lists the handover.
    let asked = post(&server, &cookie, "/ui/audit/integrity/rotate", &[]);
    assert_eq!(asked.status(), 200);
    let asked = asked.text().unwrap();
    assert!(
        asked.contains("Rotate the signing key?") && asked.contains("handover"),
        "{asked}"
    );
    assert!(
        !page(&server, &cookie, "/ui/audit/integrity")
            .1
            .contains("Key rotations")
    );
    assert_eq!(
        post(
            &server,
            &cookie,
            "/ui/audit/integrity/rotate",
            &[("confirmed", "yes")]
        )
        .status(),
        303
    );
    let (_, html) = page(&server, &cookie, "/ui/audit/integrity");
    assert!(
        html.contains("Key rotations") && html.contains("(first key)"),
        "{html}"
    );
    assert_eq!(
        server
            .audit(&admin, "operation=RotateCheckpointKey&origin=WebUI")
            .len(),
        1
    );

    // What the console did is audited as the console's.
    let changes = server.audit(&admin, &format!("operation=Update&recordId={account}"));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["Origin"], "WebUI");
    assert_eq!(changes[0]["UserAgent"], "custos-it console");
    for operation in ["SaveAuditReport", "SaveAlertRule"] {
        let found = server.audit(&admin, &format!("operation={operation}&origin=WebUI"));
        assert_eq!(found.len(), 1, "{operation}");
    }
    assert_eq!(
        server
            .audit(&admin, "operation=SetAuditLogSearch&origin=WebUI")
            .len(),
        2
    );

    // Without a session, a page sends you to sign in and back.
    let (status, _) = page(&server, "custos_session=forged", "/ui/audit/search");
    assert_eq!(status, 303);
    let response = browser()
        .get(format!("{}/ui/audit/search", server.base))
        .send()
        .unwrap();
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        "/ui/login?next=%2Fui%2Faudit%2Fsearch"
    );

    // A business user sees the refusal the API gives.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (status, html) = page(&server, &bo, "/ui/audit/search?run=1");
    assert_eq!(status, 200);
    assert!(html.contains("needs the Audit Reader role"), "{html}");
    assert!(
        !html.contains("href=\"/ui/audit/reports\""),
        "no audit links for a business user"
    );

    // Signing out ends the session for good.
    assert_eq!(post(&server, &bo, "/ui/logout", &[]).status(), 303);
    assert_eq!(page(&server, &bo, "/ui/home").0, 303);
}

#[test]
fn the_records_app_imports_exports_and_bulk_deletes() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    for path in [
        "/ui/main/records/contacts",
        "/ui/main/records/contacts/import",
        "/ui/main/records/contacts/bulk-delete?filter=lastname%20eq%20'x'",
    ] {
        let (status, html) = page(&server, &cookie, path);
        assert_eq!(status, 200, "{path}: {html}");
        assert_labelled(path, &html);
    }

    let file = reqwest::blocking::multipart::Part::text(
        "firstname,lastname\nAda,Lovelace\nAlan,Turing\nGrace,Hopper\n",
    )
    .file_name("people.csv")
    .mime_str("text/csv")
    .unwrap();
    let imported = browser()
        .post(format!("{}/ui/main/records/contacts/import", server.base))
        .header("cookie", &cookie)
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("csrf", csrf(&server, &cookie))
                .part("file", file),
        )
        .send()
        .unwrap();
    assert_eq!(imported.status(), 303);
    let list = imported.headers()["location"].to_str().unwrap().to_string();
    assert!(list.ends_with("?imported=3"), "{list}");
    let (_, html) = page(&server, &cookie, &list);
    assert!(html.contains("Imported 3 records.") && html.contains("Hopper"));
    let (_, html) = page(
        &server,
        &cookie,
        "/ui/main/records/contacts?filter=startswith(lastname,'T')",
    );
    assert!(
        html.contains("Turing") && !html.contains("Hopper"),
        "{html}"
    );
    let import = server.audit(&admin, "operation=ImportRecords");
    assert_eq!(import.len(), 1);
    assert_eq!(import[0]["Origin"], "WebUI");
    assert_eq!(import[0]["Query"], "people.csv");

    let bad = browser()
        .post(format!("{}/ui/main/records/contacts/import", server.base))
        .header("cookie", &cookie)
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("csrf", csrf(&server, &cookie))
                .part(
                    "file",
                    reqwest::blocking::multipart::Part::text("shoesize\n9\n").file_name("bad.csv"),
                ),
        )
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The import form again, the reason beside the file field.
    let refused = bad.text().unwrap();
    assert!(refused.contains("shoesize"), "{refused}");
    assert!(
        refused.contains("id=\"file-error\">Nothing was imported:")
            && refused.contains("name=\"file\" type=\"file\""),
        "{refused}"
    );
    // A filter the API refuses is shown beside the filter as typed; the grid stays.
    let (status, html) = page(
        &server,
        &cookie,
        "/ui/main/records/contacts?filter=shoesize%20eq%209",
    );
    assert_eq!(status, 400);
    assert!(
        html.contains("value=\"shoesize eq 9\" aria-invalid=\"true\"")
            && html.contains("id=\"filter-error\""),
        "{html}"
    );
    assert!(html.contains("No records."), "{html}");

    let exported = post(
        &server,
        &cookie,
        "/ui/main/records/contacts/export",
        &[("format", "csv"), ("filter", "lastname ne 'Turing'")],
    );
    assert_eq!(exported.status(), 200);
    assert!(
        exported.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"contacts-")
    );
    let text = exported.text().unwrap();
    assert!(text.contains("Lovelace") && text.contains("Hopper") && !text.contains("Turing"));
    let export = server.audit(&admin, "operation=ExportToExcel");
    assert_eq!(export.len(), 1);
    assert_eq!(export[0]["Origin"], "Export");
    assert_eq!(export[0]["RecordIds"].as_array().unwrap().len(), 2);
    let refused = post(
        &server,
        &cookie,
        "/ui/main/records/contacts/export",
        &[("format", "csv"), ("filter", "nosuch eq 1")],
    );
    assert_eq!(refused.status(), 400);
    assert!(refused.text().unwrap().contains("nosuch"));

    let (_, html) = page(
        &server,
        &cookie,
        "/ui/main/records/contacts/bulk-delete?filter=lastname%20ne%20'Hopper'",
    );
    assert!(html.contains("<strong>2</strong> records match"), "{html}");
    let deleted = post(
        &server,
        &cookie,
        "/ui/main/records/contacts/bulk-delete",
        &[("filter", "lastname ne 'Hopper'"), ("job", "Spring clean")],
    );
    assert_eq!(deleted.status(), 303);
    assert!(
        deleted.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("?deleted=2")
    );
    assert_eq!(count(&server, &admin, "contacts"), 1);
    let bulk = server.audit(&admin, "operation=BulkDelete");
    assert_eq!(bulk.len(), 1);
    assert_eq!(bulk[0]["Details"]["JobName"], "Spring clean");
    assert_eq!(bulk[0]["Origin"], "WebUI");
}

#[test]
fn the_admin_center_creates_backs_up_restores_and_deletes_instances() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let created = post(
        &server,
        &cookie,
        "/ui/admin/instances",
        &[("name", "sales"), ("state", "trial")],
    );
    assert_eq!(created.status(), 303);
    let (status, html) = page(&server, &cookie, "/ui/admin?created=sales");
    assert_eq!(status, 200);
    assert!(html.contains("Instance sales created.") && html.contains("/ui/admin/instances/sales"));
    assert_labelled("/ui/admin", &html);
    let (status, html) = page(&server, &cookie, "/ui/admin/instances/sales");
    assert_eq!(status, 200);
    assert!(html.contains("Convert to paid") && html.contains("No backups yet."));
    assert_labelled("/ui/admin/instances/sales", &html);

    let here = "/ui/admin/instances/sales";
    assert_eq!(
        post(&server, &cookie, &format!("{here}/convert"), &[]).status(),
        303
    );
    let backed_up = post(
        &server,
        &cookie,
        &format!("{here}/backups"),
        &[("label", "empty")],
    );
    assert_eq!(backed_up.status(), 303);
    let (_, html) = page(&server, &cookie, here);
    assert!(
        !html.contains("Convert to paid") && html.contains("1 backups"),
        "{html}"
    );
    let backup_id = html
        .split("name=\"backupId\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let response = send(
        client().post(format!("{}/sales/api/data/v9.2/accounts", server.base)),
        &admin,
        Some(json!({"name": "Later"})),
    );
    assert_eq!(response.status(), 204);
    let asked = post(
        &server,
        &cookie,
        &format!("{here}/restore"),
        &[("backupId", &backup_id), ("made", "2026-12-02 10:00")],
    );
    assert_eq!(asked.status(), 200);
    let asked = asked.text().unwrap();
    assert!(
        asked.contains("Restore this backup?") && asked.contains("2026-12-02 10:00"),
        "{asked}"
    );
    let restored = post(
        &server,
        &cookie,
        &format!("{here}/restore"),
        &[("backupId", &backup_id), ("confirmed", "yes")],
    );
    assert_eq!(restored.status(), 303);
    let accounts = get_json(
        &format!("{}/sales/api/data/v9.2/accounts", server.base),
        &admin,
    );
    assert!(
        accounts["value"].as_array().unwrap().is_empty(),
        "restored to the empty backup"
    );

    let wrong = post(
        &server,
        &cookie,
        &format!("{here}/delete"),
        &[("confirm", "main")],
    );
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().unwrap().contains("type 'sales' to confirm"));
    let deleted = post(
        &server,
        &cookie,
        &format!("{here}/delete"),
        &[("confirm", "sales")],
    );
    assert_eq!(deleted.status(), 303);
    let (_, html) = page(&server, &cookie, "/ui/admin?deleted=sales");
    assert!(!html.contains("/ui/admin/instances/sales"));

    assert_recorded(
        &server,
        &admin,
        "AdminCenter",
        &[
            "AccessAdminCenter",
            "CreateInstance",
            "ConvertTrialToPaid",
            "BackupInstance",
            "RestoreInstance",
            "DeleteInstance",
        ],
    );

    // Someone who is not a global admin has no admin center link, and the page refuses.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (_, home) = page(&server, &bo, "/ui/home");
    assert!(!home.contains("href=\"/ui/admin\""));
    let (status, html) = page(&server, &bo, "/ui/admin");
    assert_eq!(status, 400);
    assert!(html.contains("not a tenant global admin"));
}

#[test]
fn customizations_create_entities_and_attributes_and_delete_attributes() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let created = post(
        &server,
        &cookie,
        "/ui/main/customizations",
        &[("name", "new_project")],
    );
    assert_eq!(created.status(), 303);
    let entity_page = created.headers()["location"].to_str().unwrap().to_string();
    let (status, html) = page(&server, &cookie, &entity_page);
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Entity created as a draft") && html.contains("unpublished changes"));
    assert_labelled(&entity_page, &html);
    let (_, html) = page(&server, &cookie, "/ui/main/customizations");
    assert!(html.contains("new_project") && html.contains("(not yet published)"));

    let here = "/ui/main/customizations/new_project";
    for form in [
        [
            ("name", "new_budget"),
            ("type", "Money"),
            ("maxLength", "100"),
            ("target", "account"),
        ],
        [
            ("name", "new_code"),
            ("type", "String"),
            ("maxLength", "12"),
            ("target", "account"),
        ],
        [
            ("name", "new_accountid"),
            ("type", "Lookup"),
            ("maxLength", "100"),
            ("target", "account"),
        ],
    ] {
        let added = post(&server, &cookie, &format!("{here}/attributes"), &form);
        assert_eq!(added.status(), 303, "{form:?}");
    }
    let bad = post(
        &server,
        &cookie,
        &format!("{here}/attributes"),
        &[("name", "budget"), ("type", "Money")],
    );
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("publisher prefix"));
    assert_eq!(
        post(&server, &cookie, "/ui/main/customizations/publish", &[]).status(),
        303
    );
    let response = send(
        client().post(server.api("new_projects")),
        &admin,
        Some(json!({"new_name": "Apollo", "new_budget": 10, "new_code": "AP-1"})),
    );
    assert_eq!(response.status(), 204);
    let attributes = get_json(
        &server
            .api("EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_code')"),
        &admin,
    );
    assert_eq!(attributes["MaxLength"], 12);

    // An alternate key on the code: a draft, then in force once published.
    let keyed = post(
        &server,
        &cookie,
        &format!("{here}/keys"),
        &[("name", "new_projectcode"), ("key-attr-new_code", "true")],
    );
    assert_eq!(keyed.status(), 303);
    let (_, html) = page(
        &server,
        &cookie,
        &format!("{here}?keyadded=new_projectcode"),
    );
    assert!(
        html.contains("Alternate key new_projectcode added")
            && html.contains("<code>new_code</code>")
            && html.contains("Pending"),
        "{html}"
    );
    assert_labelled(here, &html);
    assert_eq!(
        post(&server, &cookie, "/ui/main/customizations/publish", &[]).status(),
        303
    );
    let (_, html) = page(&server, &cookie, here);
    assert!(html.contains("Active"), "{html}");
    let (status, _, _) = odata_error(send(
        client().post(server.api("new_projects")),
        &admin,
        Some(json!({"new_name": "Apollo again", "new_code": "ap-1"})),
    ));
    assert_eq!(status, 409, "the key holds: AP-1 is taken");
    // Who may not customize is refused through the same API, each refusal recorded.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = sign_in(&server, "bo@contoso.test", "bo-password-1");
    for (path, form) in [
        (
            format!("{here}/keys"),
            vec![("name", "new_bokey"), ("key-attr-new_name", "true")],
        ),
        (format!("{here}/keys/new_projectcode/delete"), vec![]),
    ] {
        let refused = post(&server, &bo, &path, &form);
        assert_eq!(refused.status(), 400, "{path}");
        assert!(
            refused
                .text()
                .unwrap()
                .contains("may not change customizations")
        );
    }
    for operation in ["CreateEntityKey", "DeleteEntityKey"] {
        let denied = server.audit(
            &admin,
            &format!("operation={operation}&status=Denied&user=bo@contoso.test"),
        );
        assert_eq!(denied.len(), 1, "{operation}: {denied:?}");
        assert_eq!(denied[0]["Origin"], "WebUI");
    }
    assert_eq!(
        get_json(
            &server.api(
                "EntityDefinitions(LogicalName='new_project')/Keys?RetrieveAsIfPublished=true"
            ),
            &admin
        )["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let unkeyed = post(
        &server,
        &cookie,
        &format!("{here}/keys/new_projectcode/delete"),
        &[],
    );
    assert_eq!(unkeyed.status(), 303);
    let events = server.audit(&admin, "operation=CreateEntityKey&status=Succeeded");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["Origin"], "WebUI");
    assert_eq!(
        server
            .audit(&admin, "operation=DeleteEntityKey&status=Succeeded")
            .len(),
        1
    );
    assert_eq!(
        post(&server, &cookie, "/ui/main/customizations/publish", &[]).status(),
        303
    );

    let unconfirmed = post(
        &server,
        &cookie,
        &format!("{here}/attributes/new_budget/delete"),
        &[],
    );
    assert_eq!(unconfirmed.status(), 400);
    let deleted = post(
        &server,
        &cookie,
        &format!("{here}/attributes/new_budget/delete"),
        &[("confirm", "yes")],
    );
    assert_eq!(deleted.status(), 303);
    let (_, html) = page(&server, &cookie, &format!("{here}?deleted=new_budget"));
    assert!(html.contains("the audit log keeps every value"));
    let events = server.audit(&admin, "operation=DeleteAttribute");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["Origin"], "WebUI");
    assert_eq!(events[0]["ResultCount"], 1);
}

#[test]
fn the_grid_runs_views_and_saves_personal_ones() {
    let server = Server::start(&[]);
    let admin = server.admin();
    for (name, revenue) in [("Alpha", 10), ("Beta", 2000), ("Gamma", 3000)] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name, "revenue": revenue})),
        );
        assert_eq!(response.status(), 204);
    }
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let cookie = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (status, html) = page(&server, &cookie, "/ui/main/records/accounts");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("All accounts"), "the system view is offered");

    let saved = post(
        &server,
        &cookie,
        "/ui/main/records/accounts/views",
        &[("name", "Big ones"), ("filter", "revenue gt 1000")],
    );
    assert_eq!(saved.status(), 303);
    let opened = saved.headers()["location"].to_str().unwrap().to_string();
    assert!(opened.contains("view=user:"), "{opened}");
    let (status, html) = page(&server, &cookie, &opened);
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Big ones (mine)") && html.contains("Gamma") && !html.contains("Alpha"));
    assert_labelled(&opened, &html);

    let view = opened.split("view=").nth(1).unwrap().replace("%3A", ":");
    let exported = post(
        &server,
        &cookie,
        "/ui/main/records/accounts/export",
        &[("format", "csv"), ("view", &view), ("filter", "")],
    );
    assert_eq!(exported.status(), 200);
    let text = exported.text().unwrap();
    assert!(
        text.contains("Beta") && text.contains("Gamma") && !text.contains("Alpha"),
        "{text}"
    );
    let export = server.audit(&admin, "operation=ExportToExcel");
    assert_eq!(export[0]["Details"]["View"]["ViewName"], "Big ones");

    // Another user neither sees nor runs it.
    server.add_user(&admin, "al@contoso.test", "al-password-1", "Basic User");
    let al = sign_in(&server, "al@contoso.test", "al-password-1");
    let (_, html) = page(&server, &al, "/ui/main/records/accounts");
    assert!(!html.contains("Big ones"));
}

/// The grid counts the filter's records by a choice, a yes/no or a lookup (an aggregation
/// through the Web API, recorded as a list of every record counted); each value leads to the
/// grid of its records.
#[test]
fn the_grid_counts_its_records_by_a_value_and_each_count_leads_to_them() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    for (name, industry) in [
        ("Alpha", json!(1)),
        ("Beta", json!(1)),
        ("Gamma", json!(2)),
        ("Delta", json!(null)),
        ("Zeta", json!(2)),
    ] {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name, "industrycode": industry})),
        );
        assert_eq!(response.status(), 204);
    }
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let path = "/ui/main/records/accounts?filter=name%20ne%20%27Zeta%27&countby=industrycode";
    let (status, html) = page(&server, &cookie, path);
    assert_eq!(status, 200, "{html}");
    assert_labelled(path, &html);
    let section = html.split("id=\"count-title\"").nth(1).expect("a count");
    let section = section.split("</section>").next().unwrap();
    assert!(section.contains("4 records, 3 values"), "{section}");
    // Most first, each value as a person reads it, with its share.
    let accounting = section.find("Accounting").expect("the choice's label");
    let agriculture = section.find("Agriculture").expect("the other label");
    assert!(accounting < agriculture, "{section}");
    assert!(section.contains("(empty)"), "{section}");
    assert!(
        section.contains("<meter min=\"0\" max=\"4\" value=\"2\">"),
        "{section}"
    );
    assert!(section.contains(" 50 %"), "{section}");
    // A value leads to its records, within the filter.
    let link = section
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let (status, listed) = page(&server, &cookie, &link);
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed.contains("Alpha") && listed.contains("Beta"),
        "{link}"
    );
    assert!(
        !listed.contains(">Gamma<") && !listed.contains(">Delta<"),
        "{link}"
    );
    // Counted through the Web API: a list of every record counted, from the console.
    let counted = server.audit(&admin, "operation=RetrieveMultiple&entity=account");
    let aggregate = counted
        .iter()
        .find(|e| e["Details"]["Aggregate"].is_object())
        .expect("the count's event");
    assert_eq!(aggregate["Origin"], "WebUI");
    assert_eq!(aggregate["ResultCount"], 4);
    // A filter the API refuses is said where the count would be.
    let (status, html) = page(
        &server,
        &cookie,
        "/ui/main/records/accounts?filter=nosuch%20eq%201&countby=industrycode",
    );
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("nosuch"), "{html}");
}

/// A record's form leads whoever may view audit history to it: the record's changes, a row per
/// field, read through the Web API's `RetrieveRecordChangeHistory` and recorded from the console.
#[test]
fn a_record_form_leads_to_its_audit_history_for_those_who_may_view_it() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isauditenabled": true}));
    let id = create_account(&server, &admin, "Contoso");
    let rename = |name: &str| {
        let changed = send(
            client().patch(server.api(&format!("accounts({id})"))),
            &admin,
            Some(json!({"name": name})),
        );
        assert_eq!(changed.status(), 204);
    };
    rename("Contoso Ltd");
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let form = format!("/ui/main/records/accounts/{id}");
    let (status, html) = page(&server, &cookie, &form);
    assert_eq!(status, 200, "{html}");
    let path = format!("{form}/history");
    assert!(html.contains(&format!("href=\"{path}\"")), "{html}");
    let (status, html) = page(&server, &cookie, &path);
    assert_eq!(status, 200, "{html}");
    assert_labelled(&path, &html);
    assert!(html.contains("2 changes recorded."), "{html}");
    let update = html.find("<td>Update</td>").expect("the update");
    let create = html.find("<td>Create</td>").expect("the create");
    assert!(update < create, "newest first");
    assert!(
        html.contains("<td>Name</td><td>Contoso</td><td>Contoso Ltd</td>"),
        "{html}"
    );
    // A user a lookup names, by their sign-in name.
    assert!(
        html.contains("<td>Owner</td><td></td><td>admin</td>"),
        "{html}"
    );
    let events = server.audit(&admin, "operation=RetrieveRecordChangeHistory");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Origin"], "WebUI");
    assert_eq!(events[0]["RecordIds"], json!([id]));

    // Pages of 50 changes, older ones a link away.
    for n in 0..49 {
        rename(&format!("Contoso {n}"));
    }
    let (_, html) = page(&server, &cookie, &path);
    assert!(html.contains("51 changes recorded."), "{html}");
    assert_eq!(html.matches("<td>Update</td>").count(), 50);
    assert!(!html.contains("<td>Create</td>"));
    assert!(html.contains(&format!("href=\"{path}?page=2\"")), "{html}");
    let (status, html) = page(&server, &cookie, &format!("{path}?page=2"));
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<td>Create</td>"), "{html}");
    assert!(html.contains(&format!("href=\"{path}?page=1\"")), "{html}");
    assert!(!html.contains("page=3"), "{html}");
    // A change made on someone's behalf names both: the user, and who really sent it.
    let ann = server.add_user(&admin, "ann@contoso.test", "ann-password-1", "Basic User");
    let acted = send(
        client()
            .patch(server.api(&format!("accounts({id})")))
            .header("MSCRMCallerID", &ann),
        &admin,
        Some(json!({"name": "Contoso on behalf"})),
    );
    assert_eq!(acted.status(), 204);
    let (_, html) = page(&server, &cookie, &path);
    assert!(
        html.contains("<td>ann@contoso.test (through admin)</td>"),
        "{html}"
    );

    // A Basic User's form offers none, and the page itself is the API's refusal, recorded.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (status, html) = page(&server, &bo, &form);
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("/history"), "{html}");
    let (status, html) = page(&server, &bo, &path);
    assert_eq!(status, 400, "the console's page of a refusal: {html}");
    assert!(html.contains("ReadRecordAuditHistory"), "{html}");
    let denied = server.audit(
        &admin,
        "operation=RetrieveRecordChangeHistory&status=Denied&user=bo@contoso.test",
    );
    assert_eq!(denied.len(), 1, "{denied:#?}");
    refused_to_everyone_else(&server, &admin, &path, "RetrieveRecordChangeHistory");
}

/// A page of the audit trail that only its privilege's holders may read: an Audit Reader (who
/// holds no role in the instance) is shown the API's refusal, recorded as a `Denied` `operation`
/// of theirs, and a browser without a session is sent to sign in.
fn refused_to_everyone_else(server: &Server, admin: &str, path: &str, operation: &str) {
    server.add_user(
        admin,
        "reader@contoso.test",
        "reader-password-1",
        "Audit Reader",
    );
    let reader = sign_in(server, "reader@contoso.test", "reader-password-1");
    let (status, html) = page(server, &reader, path);
    assert_eq!(status, 400, "the console's page of a refusal: {html}");
    let denied = server.audit(
        admin,
        &format!("operation={operation}&status=Denied&user=reader@contoso.test"),
    );
    assert_eq!(denied.len(), 1, "{denied:#?}");
    let anonymous = browser()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert!(
        anonymous.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login")
    );
}

/// The Auditing settings lead whoever may view the audit summary to it: the instance's
/// changes, filtered and paged through the Web API's `audits`, each page recorded.
#[test]
fn the_audit_summary_lists_the_instances_changes_for_those_who_may_view_it() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isauditenabled": true}));
    let rows: String = (0..55)
        .map(|n| format!("Guest{n},guest{n}@example.test\n"))
        .collect();
    let imported = send(
        client().post(server.api("ImportRecords")),
        &admin,
        Some(
            json!({"EntitySetName": "contacts", "FileName": "guests.csv",
                    "Content": format!("lastname,emailaddress1\n{rows}")}),
        ),
    );
    assert!(
        imported.status().is_success(),
        "{}",
        imported.text().unwrap()
    );
    let account = create_account(&server, &admin, "Contoso");
    let renamed = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"name": "Contoso Ltd"})),
    );
    assert_eq!(renamed.status(), 204);
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (_, settings) = page(&server, &cookie, "/ui/main/settings/auditing");
    assert!(
        settings.contains("href=\"/ui/main/settings/audit-summary\""),
        "{settings}"
    );

    let path = "/ui/main/settings/audit-summary?entity=account";
    let (status, html) = page(&server, &cookie, path);
    assert_eq!(status, 200, "{html}");
    assert_labelled(path, &html);
    assert!(html.contains("2 changes."), "{html}");
    let update = html.find("<td>Update</td>").expect("the update");
    let create = html.find("<td>Create</td>").expect("the create");
    assert!(update < create, "newest first");
    assert!(
        html.contains(&format!("/ui/main/records/accounts/{account}/history")),
        "each record leads to its history: {html}"
    );
    let (_, html) = page(&server, &cookie, &format!("{path}&event=2"));
    assert!(html.contains("1 change."), "{html}");
    let (_, html) = page(
        &server,
        &cookie,
        &format!("{path}&user=admin&from=2100-01-01"),
    );
    assert!(html.contains("No change matches."), "{html}");

    // Fifty to a page, the older ones a link away.
    let (_, html) = page(
        &server,
        &cookie,
        "/ui/main/settings/audit-summary?entity=contact",
    );
    assert!(html.contains("55 changes."), "{html}");
    assert_eq!(html.matches("<td>Create</td>").count(), 50);
    let older = html
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to older changes")
        .replace("&amp;", "&");
    let (status, html) = page(&server, &cookie, &older);
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches("<td>Create</td>").count(), 5);
    assert!(html.contains("Newest changes"), "{html}");
    assert!(!html.contains("rel=\"next\""), "{html}");

    // A name nobody signs in with is said, not searched.
    let (status, html) = page(
        &server,
        &cookie,
        "/ui/main/settings/audit-summary?user=nobody",
    );
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("no user signs in as"), "{html}");
    // Each page opened is a search of the trail, from the console.
    let searches = server.audit(&admin, "operation=SearchAuditLog&origin=WebUI");
    assert!(
        searches
            .iter()
            .filter(|e| e["Query"].as_str().unwrap_or("").starts_with("audits?"))
            .count()
            >= 5,
        "{searches:#?}"
    );

    // A Basic User is offered no summary, and the page is the API's refusal.
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (status, html) = page(&server, &bo, "/ui/main/settings/audit-summary");
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("ReadAuditSummary"), "{html}");
    let denied = server.audit(
        &admin,
        "operation=SearchAuditLog&status=Denied&user=bo@contoso.test",
    );
    assert_eq!(denied.len(), 1, "{denied:#?}");
    refused_to_everyone_else(
        &server,
        &admin,
        "/ui/main/settings/audit-summary",
        "SearchAuditLog",
    );
}

#[test]
fn the_admin_center_imports_and_removes_solutions() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let solution = json!({
        "UniqueName": "fabrikam_tickets",
        "FriendlyName": "Tickets",
        "Publisher": {"Prefix": "fabrikam"},
        "Entities": [{"SchemaName": "fabrikam_ticket"}],
        "Views": [{"name": "All tickets", "returnedtypecode": "fabrikam_ticket"}]
    });
    let file = reqwest::blocking::multipart::Part::text(solution.to_string())
        .file_name("tickets.json")
        .mime_str("application/json")
        .unwrap();
    let imported = browser()
        .post(format!("{}/ui/admin/instances/main/solutions", server.base))
        .header("cookie", &cookie)
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("csrf", csrf(&server, &cookie))
                .part("file", file),
        )
        .send()
        .unwrap();
    assert_eq!(imported.status(), 303);
    let location = imported.headers()["location"].to_str().unwrap().to_string();
    let (status, html) = page(&server, &cookie, &location);
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Solution fabrikam_tickets imported.")
            && html.contains("1 solutions installed")
    );
    assert_labelled(&location, &html);
    assert_eq!(
        count(&server, &admin, "fabrikam_tickets"),
        0,
        "the entity exists"
    );
    let id = html
        .split("/solutions/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let asked = post(
        &server,
        &cookie,
        &format!("/ui/admin/instances/main/solutions/{id}/remove"),
        &[],
    );
    assert_eq!(asked.status(), 200);
    let asked = asked.text().unwrap();
    assert!(
        asked.contains("Remove this solution?") && asked.contains("1 entity, with the"),
        "{asked}"
    );
    assert_eq!(count(&server, &admin, "fabrikam_tickets"), 0, "still there");
    let removed = post(
        &server,
        &cookie,
        &format!("/ui/admin/instances/main/solutions/{id}/remove"),
        &[("confirmed", "yes")],
    );
    assert_eq!(removed.status(), 303);
    let (_, html) = page(&server, &cookie, "/ui/admin/instances/main?removed=1");
    assert!(html.contains("No solutions installed."));
    let gone = send(client().get(server.api("fabrikam_tickets")), &admin, None);
    assert_eq!(gone.status(), 404);
    assert_recorded(
        &server,
        &admin,
        "WebUI",
        &["ImportSolution", "RemoveSolution", "DeleteEntity"],
    );
}

#[test]
fn a_form_without_its_session_token_or_from_another_site_changes_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let token = csrf(&server, &cookie);
    let create = |form: &[(&str, &str)], origin: Option<&str>| {
        let mut request = browser()
            .post(format!("{}/ui/admin/instances", server.base))
            .header("cookie", &cookie)
            .form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().unwrap()
    };
    let missing = create(&[("name", "evil"), ("state", "trial")], None);
    assert_eq!(missing.status(), 403);
    let wrong = create(
        &[("name", "evil"), ("state", "trial"), ("csrf", "guess")],
        None,
    );
    assert_eq!(wrong.status(), 403);
    let other_site = create(
        &[("name", "evil"), ("state", "trial"), ("csrf", &token)],
        Some("http://127.0.0.1:1"),
    );
    assert_eq!(other_site.status(), 403);
    assert!(other_site.text().unwrap().contains("another site"));
    let instances = get_json(&format!("{}/api/admin/instances", server.base), &admin);
    assert_eq!(
        instances["value"].as_array().unwrap().len(),
        1,
        "{instances}"
    );
    let denied = server.audit(&admin, "operation=Request&status=Denied");
    assert_eq!(denied.len(), 3);
    assert!(denied.iter().all(|e| e["Query"] == "/ui/admin/instances"));
    // With its token and from this server, the same form works.
    let origin = server.base.clone();
    let made = create(
        &[("name", "good"), ("state", "trial"), ("csrf", &token)],
        Some(&origin),
    );
    assert_eq!(made.status(), 303);
    // A token belongs to its session: another session's is refused.
    let other = sign_in(&server, "admin", ADMIN_PASSWORD);
    let stolen = browser()
        .post(format!("{}/ui/admin/instances", server.base))
        .header("cookie", &other)
        .form(&[("name", "evil2"), ("state", "trial"), ("csrf", &token)])
        .send()
        .unwrap();
    assert_eq!(stolen.status(), 403);
}

#[test]
fn a_user_changes_their_password_in_the_console_and_their_sessions_end() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let cookie = sign_in(&server, "bo@contoso.test", "bo-password-1");
    let (status, html) = page(&server, &cookie, "/ui/account/password");
    assert_eq!(status, 200);
    assert_labelled("/ui/account/password", &html);
    let wrong = post(
        &server,
        &cookie,
        "/ui/account/password",
        &[
            ("current", "nope"),
            ("new", "bo-password-2"),
            ("again", "bo-password-2"),
        ],
    );
    assert!(
        wrong
            .text()
            .unwrap()
            .contains("the current password is wrong")
    );
    let changed = post(
        &server,
        &cookie,
        "/ui/account/password",
        &[
            ("current", "bo-password-1"),
            ("new", "bo-password-2"),
            ("again", "bo-password-2"),
        ],
    );
    assert_eq!(changed.status(), 303);
    assert_eq!(changed.headers()["location"], "/ui/login?changed=1");
    let (status, _) = page(&server, &cookie, "/ui/home");
    assert_eq!(status, 303, "the old session is over");
    sign_in(&server, "bo@contoso.test", "bo-password-2");
    let events = server.audit(&admin, "operation=ChangePassword");
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["Origin"] == "WebUI"));
}

/// A search "From" a day "To" the same day finds that day's events: the "To" date is included
/// (it used to stop at its midnight, hiding the day, and From = To was an error).
#[test]
fn a_search_from_today_to_today_finds_todays_events() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = create_account(&server, &admin, "Found today");
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let now = time::OffsetDateTime::now_utc();
    let today = format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let (status, html) = page(
        &server,
        &cookie,
        &format!("/ui/audit/search?start={today}&end={today}&recordId={account}"),
    );
    assert_eq!(status, 200);
    assert!(!html.contains("role=\"alert\""), "{html}");
    assert!(html.contains("Create"), "today's create is listed: {html}");
    assert!(html.contains("To (date included, or date-time)"), "{html}");
    assert!(
        html.contains("(UTC)</span>"),
        "the zone is named beside: {html}"
    );
}

/// An empty search runs (the last seven days), and the detail panel names a user type.
#[test]
fn an_empty_search_runs_and_a_user_type_is_named() {
    let server = Server::start(&[]);
    let admin = server.admin();
    create_account(&server, &admin, "Listed");
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, form) = page(&server, &cookie, "/ui/audit/search");
    assert_eq!(status, 200);
    assert!(form.contains("name=\"run\" value=\"1\""), "{form}");
    // What the form submits with every field left empty; the page says how many match.
    let (status, html) = page(&server, &cookie, "/ui/audit/search?run=1&start=&end=&q=");
    assert_eq!(status, 200);
    assert!(html.contains("Create"), "{html}");
    assert!(html.contains("events match;"), "{html}");
    // The search API counts the whole search on request, beside one page of it.
    let url = format!(
        "{}/api/audit/records?operation=Create&top=1&count=true",
        server.base
    );
    let counted = get_json(&url, &admin);
    assert_eq!(counted["value"].as_array().unwrap().len(), 1);
    let creates = server.audit(&admin, "operation=Create").len() as u64;
    assert_eq!(counted["@odata.count"].as_u64(), Some(creates), "{counted}");
    let refused = send(
        client().get(url.replace("count=true", "count=yes")),
        &admin,
        None,
    );
    assert_eq!(odata_error(refused).0, 400);
    let create = server.audit(&admin, "operation=Create");
    let id = create[0]["Id"].as_str().unwrap();
    let (_, detail) = page(
        &server,
        &cookie,
        &format!("/ui/audit/search?run=1&selected={id}"),
    );
    assert!(
        detail.contains("Regular (0)") || detail.contains("Admin (2)"),
        "{detail}"
    );
}

/// The header names the instance a page is about; creating an instance whose name sorts first
/// does not move the console to it.
#[test]
fn the_header_names_the_instance_and_a_new_one_does_not_take_over() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let made = send(
        client().post(format!("{}/api/admin/instances", server.base)),
        &admin,
        Some(json!({"name": "alpha"})),
    );
    assert!(made.status().is_success(), "{}", made.status());
    let (_, home) = page(&server, &cookie, "/ui/home");
    assert!(home.contains("Instance <strong>main</strong>"), "{home}");
    assert!(home.contains("href=\"/ui/main/records\""), "{home}");
    let (status, alpha) = page(&server, &cookie, "/ui/alpha/records");
    assert_eq!(status, 200);
    assert!(alpha.contains("Instance <strong>alpha</strong>"), "{alpha}");
    assert!(
        alpha.contains("href=\"/ui/alpha/settings/auditing\""),
        "{alpha}"
    );
    // The header switches to any other instance the user works in …
    assert!(
        home.contains("aria-label=\"Switch instance\"")
            && home.contains("href=\"/ui/alpha/records\""),
        "{home}"
    );
    // … and the console stays in the one last visited on pages that name none.
    let visit = browser()
        .get(format!("{}/ui/alpha/records", server.base))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    let remembered = visit.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(remembered.starts_with("custos_instance=alpha;") && remembered.contains("HttpOnly"));
    let both = format!("{cookie}; {}", remembered.split(';').next().unwrap());
    let (_, search) = page(&server, &both, "/ui/audit/search");
    assert!(
        search.contains("Instance <strong>alpha</strong>"),
        "{search}"
    );
    assert!(search.contains("href=\"/ui/alpha/records\""), "{search}");
    // A remembered instance the user does not work in (or that is gone) is not used.
    let stale = format!("{cookie}; custos_instance=nosuch");
    let (_, search) = page(&server, &stale, "/ui/audit/search");
    assert!(
        search.contains("Instance <strong>main</strong>"),
        "{search}"
    );
}

/// An Audit Reader who holds no role in the instance is not offered its pages (each visit
/// would be refused, a Denied event in the log she reviews); the audit pages are hers.
#[test]
fn an_audit_reader_is_offered_the_audit_pages_not_the_instances() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.add_user(
        &admin,
        "rita@contoso.test",
        "reader-password-1",
        "Audit Reader",
    );
    let reader = sign_in(&server, "rita@contoso.test", "reader-password-1");
    let (status, home) = page(&server, &reader, "/ui/home");
    assert_eq!(status, 200);
    assert!(!home.contains("/ui/main/records"), "{home}");
    assert!(!home.contains("/ui/main/settings/auditing"), "{home}");
    assert!(home.contains("href=\"/ui/audit/search\""), "{home}");
    // Nothing she would be refused: retention, alerts, streams and integrity are read-only.
    for (path, refused) in [
        ("/ui/audit/retention", "action=\"/ui/audit/retention\""),
        ("/ui/audit/retention", "action=\"/ui/audit/settings\""),
        ("/ui/audit/alerts", "action=\"/ui/audit/alerts\""),
        ("/ui/audit/feeds", "action=\"/ui/audit/feeds/streams\""),
        ("/ui/audit/feeds", "action=\"/ui/audit/feeds/subscription\""),
        ("/ui/audit/integrity", "action=\"/ui/audit/integrity/"),
    ] {
        let (status, html) = page(&server, &reader, path);
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains(refused), "{path} offers {refused}");
    }
    let (_, retention) = page(&server, &reader, "/ui/audit/retention");
    assert!(retention.contains("Only an Audit Manager changes retention"));
    let denied = server.audit(&admin, "status=Denied&user=rita@contoso.test");
    assert!(denied.is_empty(), "{denied:#?}");
    let admin_cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (_, home) = page(&server, &admin_cookie, "/ui/home");
    assert!(
        home.contains("/ui/main/records"),
        "the admin works in every instance"
    );
}

/// Integrity says how much of the log a past verification did not cover.
#[test]
fn integrity_says_what_a_past_verification_did_not_cover() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let done = verify_live(&server, &admin);
    assert_eq!(done["ok"], true, "{done}");
    for i in 0..3 {
        create_account(&server, &admin, &format!("after the verification {i}"));
    }
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, html) = page(&server, &cookie, "/ui/audit/integrity");
    assert_eq!(status, 200);
    assert!(html.contains("The log has grown since"), "{html}");
}

/// Every destructive action of the console asks first, on a page that names what it destroys
/// or stops; nothing changes until it is confirmed, and the page after says what was done.
#[test]
fn every_destructive_action_asks_first_and_says_what_it_did() {
    let server = Server::start(&["--allow-private-targets"]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let asks = |path: &str, form: &[(&str, &str)], says: &[&str]| {
        let asked = post(&server, &cookie, path, form);
        assert_eq!(asked.status(), 200, "{path} asks first");
        let html = asked.text().unwrap();
        assert!(html.contains("name=\"confirmed\" value=\"yes\""), "{html}");
        assert!(html.contains("Cancel"), "{html}");
        for words in says {
            assert!(html.contains(words), "{path}: '{words}' in {html}");
        }
    };
    let confirm = |path: &str, form: &[(&str, &str)]| {
        let mut form = form.to_vec();
        form.push(("confirmed", "yes"));
        let done = post(&server, &cookie, path, &form);
        assert_eq!(done.status(), 303, "{path}");
        done.headers()["location"].to_str().unwrap().to_string()
    };

    // A record: named in the question, still there until confirmed.
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Doomed Ltd"})),
    ));
    // What the delete takes with it, counted: its contact goes, its opportunity is unlinked.
    let bind = format!("/accounts({account})");
    for (set, body) in [
        (
            "contacts",
            json!({"lastname": "Staff", "parentcustomerid@odata.bind": bind}),
        ),
        (
            "opportunities",
            json!({"name": "Deal", "parentaccountid@odata.bind": bind}),
        ),
    ] {
        let made = send(client().post(server.api(set)), &admin, Some(body));
        assert_eq!(made.status(), 204, "{set}");
    }
    let path = format!("/ui/main/records/accounts/{account}/delete");
    asks(
        &path,
        &[("name", "Doomed Ltd")],
        &[
            "Delete this record?",
            "“Doomed Ltd”",
            "<strong>contacts (1)</strong> belong to it and are deleted with it",
            "<strong>opportunities (1)</strong> keep no link to it: their 'parentaccountid' is cleared",
        ],
    );
    let read = send(
        client().get(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(read.status(), 200, "not deleted before it is confirmed");
    let list = confirm(&path, &[("name", "Doomed Ltd")]);
    assert!(
        page(&server, &cookie, &list)
            .1
            .contains("Deleted “Doomed Ltd”.")
    );
    let gone = send(
        client().get(server.api(&format!("accounts({account})"))),
        &admin,
        None,
    );
    assert_eq!(gone.status(), 404);

    // An alert rule and a saved report.
    let rule = send(
        client().post(format!("{}/api/audit/alerts", server.base)),
        &admin,
        Some(json!({"name": "Exports", "kind": "operation", "operations": ["ExportToExcel"]})),
    );
    assert_eq!(rule.status(), 201, "alert rule");
    let rule = rule.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/ui/audit/alerts/{rule}/delete");
    asks(
        &path,
        &[("name", "Exports")],
        &["Delete this alert rule?", "“Exports”"],
    );
    assert!(
        page(&server, &cookie, "/ui/audit/alerts")
            .1
            .contains("Exports")
    );
    let back = confirm(&path, &[("name", "Exports")]);
    assert!(
        page(&server, &cookie, &back)
            .1
            .contains("Deleted “Exports”.")
    );
    let report = post(
        &server,
        &cookie,
        "/ui/audit/reports",
        &[
            ("name", "Weekly changes"),
            ("search", "entity=account"),
            ("groupBy", "operation"),
            ("schedule", "weekly"),
            ("rangeDays", "7"),
        ],
    );
    let report = report.headers()["location"].to_str().unwrap().to_string();
    let path = format!("{report}/delete");
    asks(
        &path,
        &[("name", "Weekly changes"), ("schedule", "weekly")],
        &[
            "Delete this report?",
            "“Weekly changes”",
            "weekly runs stop",
        ],
    );
    assert_eq!(page(&server, &cookie, &report).0, 200, "still there");
    confirm(&path, &[("name", "Weekly changes")]);
    assert_ne!(page(&server, &cookie, &report).0, 200, "deleted");

    // A stream, with how far behind it is.
    let stream = send(
        client().post(format!("{}/api/audit/streams", server.base)),
        &admin,
        Some(json!({"name": "archive", "format": "syslog", "target": "tcp://127.0.0.1:9"})),
    );
    assert_eq!(stream.status(), 201, "stream: {}", stream.text().unwrap());
    let stream = stream.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/ui/audit/feeds/streams/{stream}/delete");
    asks(
        &path,
        &[
            ("name", "archive"),
            ("target", "tcp://127.0.0.1:9"),
            ("behind", "12"),
        ],
        &["Delete this stream?", "“archive”", "12 events"],
    );
    let back = confirm(&path, &[("name", "archive")]);
    assert!(
        page(&server, &cookie, &back)
            .1
            .contains("Deleted “archive”.")
    );

    // The feed subscription: stopping asks, starting does not.
    assert_eq!(
        post(
            &server,
            &cookie,
            "/ui/audit/feeds/subscription",
            &[("action", "start")]
        )
        .status(),
        303
    );
    asks(
        "/ui/audit/feeds/subscription",
        &[("action", "stop")],
        &["Stop the activity feed subscription?"],
    );
    assert!(
        page(&server, &cookie, "/ui/audit/feeds")
            .1
            .contains("enabled")
    );
    confirm("/ui/audit/feeds/subscription", &[("action", "stop")]);
    assert!(
        page(&server, &cookie, "/ui/audit/feeds")
            .1
            .contains("stopped")
    );

    // Retention: lengthening saves at once; shortening the default or removing a policy asks,
    // saying what would be deleted now.
    assert_eq!(
        post(
            &server,
            &cookie,
            "/ui/audit/retention",
            &[
                ("defaultDays", "120"),
                ("name", "exports"),
                ("operations", "ExportToExcel"),
                ("days", "400")
            ]
        )
        .status(),
        303,
        "nothing shorter: no question"
    );
    asks(
        "/ui/audit/retention",
        &[("defaultDays", "3")],
        &[
            "Save these retention settings?",
            "kept <strong>3 days</strong> instead of 120 days",
            "Nothing is old enough",
        ],
    );
    let url = format!("{}/api/audit/retention", server.base);
    assert_eq!(
        get_json(&url, &admin)["defaultDays"],
        120,
        "unchanged until confirmed"
    );
    confirm("/ui/audit/retention", &[("defaultDays", "3")]);
    assert_eq!(get_json(&url, &admin)["defaultDays"], 3);
    asks(
        "/ui/audit/retention",
        &[("remove", "0"), ("policy", "exports")],
        &["The policy <strong>“exports”</strong> is removed"],
    );
    confirm(
        "/ui/audit/retention",
        &[("remove", "0"), ("policy", "exports")],
    );
    assert_eq!(get_json(&url, &admin)["policies"], json!([]));
}

/// The records app: New creates a record; a refused save keeps the form as the user left it
/// with the reason beside its field; column headers sort; values show formatted (money, and a
/// lookup by its record's name); pages go forward and back.
#[test]
fn the_records_app_creates_sorts_formats_pages_back_and_keeps_a_refused_form() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, blank) = page(&server, &cookie, "/ui/main/records/accounts/new");
    assert_eq!(status, 200);
    assert!(
        blank.contains("action=\"/ui/main/records/accounts/new\""),
        "{blank}"
    );
    let created = post(
        &server,
        &cookie,
        "/ui/main/records/accounts/new",
        &[
            ("name", "Zeta Corp"),
            ("revenue", "1200000"),
            ("description", ""),
        ],
    );
    assert_eq!(created.status(), 303);
    let shown = created.headers()["location"].to_str().unwrap().to_string();
    assert!(shown.ends_with("?created=1"), "{shown}");
    let (_, record) = page(&server, &cookie, &shown);
    assert!(
        record.contains("Created.") && record.contains("Zeta Corp"),
        "{record}"
    );

    let refused = post(
        &server,
        &cookie,
        "/ui/main/records/accounts/new",
        &[("name", "Kept Name"), ("revenue", "lots")],
    );
    assert_eq!(refused.status(), 400);
    let html = refused.text().unwrap();
    assert!(
        html.contains("value=\"Kept Name\""),
        "the form as left: {html}"
    );
    assert!(html.contains("value=\"lots\""), "{html}");
    assert!(
        html.contains("aria-invalid=\"true\"") && html.contains("class=\"field-error\""),
        "{html}"
    );
    assert!(html.contains("revenue must be a number"), "{html}");
    let count_kept = count(&server, &admin, "accounts");

    // A lookup shows its record's name; money shows grouped with two places.
    let contact = entity_id(&send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"firstname": "Ada", "lastname": "Lovelace"})),
    ));
    let mut linked = String::new();
    for n in 0..12 {
        let mut body = json!({"name": format!("Row {n:02}"), "revenue": 1000 + n});
        if n == 0 {
            body["primarycontactid@odata.bind"] = json!(format!("/contacts({contact})"));
        }
        let response = send(client().post(server.api("accounts")), &admin, Some(body));
        assert_eq!(response.status(), 204);
        if n == 0 {
            linked = entity_id(&response);
        }
    }
    let (_, form) = page(
        &server,
        &cookie,
        &format!("/ui/main/records/accounts/{linked}"),
    );
    assert!(
        form.contains(&format!(
            "<option value=\"{contact}\" selected>Ada Lovelace</option>"
        )),
        "a lookup picked by its record's name: {form}"
    );
    // Another contact picked, then none: the lookup follows.
    let grace = entity_id(&send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"firstname": "Grace", "lastname": "Hopper"})),
    ));
    let record = format!("/ui/main/records/accounts/{linked}");
    let lookup = |value: &str| {
        let saved = post(
            &server,
            &cookie,
            &record,
            &[("name", "Row 00"), ("primarycontactid", value)],
        );
        assert_eq!(saved.status(), 303, "{value}");
        get_json(&server.api(&format!("accounts({linked})")), &admin)["_primarycontactid_value"]
            .clone()
    };
    assert_eq!(lookup(&grace), json!(grace));
    assert!(lookup("").is_null());
    assert!(
        form.contains("Primary Contact <span class=\"muted\">(primarycontactid, Lookup)</span>"),
        "{form}"
    );
    assert_eq!(count(&server, &admin, "accounts"), count_kept + 12);
    let (_, grid) = page(
        &server,
        &cookie,
        "/ui/main/records/accounts?size=10&filter=startswith(name,'Zeta')",
    );
    assert!(grid.contains("1,200,000.00"), "formatted money: {grid}");

    // Sorted by name, descending, from its header; then forward and back.
    let (_, grid) = page(
        &server,
        &cookie,
        "/ui/main/records/accounts?size=10&filter=startswith(name,'Row')&sort=name&dir=desc",
    );
    assert!(grid.contains("aria-sort=\"descending\""), "{grid}");
    assert!(
        grid.contains(">Annual Revenue</a>") && grid.contains(">Main Phone</a>"),
        "columns by the names a person reads: {grid}"
    );
    let first = grid.find("Row 11").expect("the highest first");
    assert!(first < grid.find("Row 02").unwrap(), "{grid}");
    assert!(!grid.contains("Row 01"), "ten a page");
    let next = grid
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next page")
        .replace("&amp;", "&");
    let (_, second) = page(&server, &cookie, &next);
    assert!(
        second.contains("Row 01") && second.contains("Row 00"),
        "{second}"
    );
    let previous = second
        .split("rel=\"prev\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a previous page")
        .replace("&amp;", "&");
    let (_, back) = page(&server, &cookie, &previous);
    assert!(
        back.contains("Row 11") && !back.contains("Row 01"),
        "{back}"
    );
    assert!(back.contains("Page 1"), "{back}");
}

/// Audit search picks activities from the catalogue's groups (several at once), offers time
/// presets, and a typed activity the catalogue does not hold is answered with the ones it
/// might mean instead of a silent "0 events".
#[test]
fn audit_search_picks_several_activities_and_names_near_misses() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "Picked"})),
    ));
    let renamed = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"name": "Picked again"})),
    );
    assert_eq!(renamed.status(), 204);
    let (status, html) = page(&server, &cookie, "/ui/audit/search");
    assert_eq!(status, 200);
    // The form offers what the log holds as the user types: its users, entities, instances.
    assert!(
        html.contains("<datalist id=\"users-list\"><option value=\"admin\">")
            && html.contains("list=\"users-list\"")
            && html.contains("<option value=\"account\">")
            && html.contains("<datalist id=\"instances-list\"><option value=\"main\">"),
        "{html}"
    );
    for words in [
        "<summary>Records</summary>",
        "<summary>Security: users, teams and roles</summary>",
        "Last 7 days",
        "name=\"operation\" value=\"ExportToExcel\"",
    ] {
        assert!(html.contains(words), "{words} in {html}");
    }
    // Two activities ticked: events of either, and both stay ticked in an opened group.
    let (_, found) = page(
        &server,
        &cookie,
        &format!("/ui/audit/search?run=1&recordId={account}&operation=Create&operation=Update"),
    );
    assert!(found.contains("<strong>2</strong> events match"), "{found}");
    assert!(
        found.contains("value=\"Create\" checked") && found.contains("value=\"Update\" checked"),
        "{found}"
    );
    assert!(
        found.contains("<details open><summary>Records (2)</summary>"),
        "{found}"
    );
    // A near miss says what it might mean.
    let (_, missed) = page(&server, &cookie, "/ui/audit/search?run=1&operation=Export");
    assert!(
        missed.contains("No activity is called “Export”. Did you mean ExportToExcel, ExportAuditLog, DownloadAuditExport?"),
        "{missed}"
    );
    assert!(
        missed.contains("value=\"Export\""),
        "the typed activity stays: {missed}"
    );
    // With search off, the form offers nothing and nothing is read: no refusal in the log.
    let failed_before = server.audit(&admin, "status=Failed").len();
    let settings = format!("{}/api/audit/settings", server.base);
    let off = send(
        client().put(&settings),
        &admin,
        Some(json!({"searchEnabled": false})),
    );
    assert_eq!(off.status(), 200);
    let terms = get_json(&format!("{}/api/audit/terms", server.base), &admin);
    assert_eq!(terms["users"], json!([]), "{terms}");
    let (status, _) = page(&server, &cookie, "/ui/audit/search");
    assert_eq!(status, 200);
    let on = send(
        client().put(&settings),
        &admin,
        Some(json!({"searchEnabled": true})),
    );
    assert_eq!(on.status(), 200);
    assert_eq!(server.audit(&admin, "status=Failed").len(), failed_before);
}

/// A report's every count leads to exactly its events — each bar to its bucket, each user,
/// activity and entity to its own — and a top list says how many there are beyond it.
#[test]
fn every_count_of_a_report_leads_to_its_events() {
    let server = Server::start(&[]);
    let admin = server.admin();
    // Sign-ins are recorded while user access is audited.
    server.set_org(
        &admin,
        json!({"isauditenabled": true, "isuseraccessauditenabled": true}),
    );
    for n in 0..11 {
        let upn = format!("user{n:02}@contoso.test");
        server.add_user(&admin, &upn, "user-password-1", "Basic User");
        server.token(&upn, "user-password-1");
    }
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, html) = page(&server, &cookie, "/ui/audit/reports/signed-in-or-out");
    assert_eq!(status, 200);
    let html = html.replace("&amp;", "&");
    assert!(html.contains("Top users (10 of 12)"), "{html}");
    let bar = html
        .split("<a href=\"/ui/audit/search?")
        .find(|part| part.starts_with("category=signed-in-or-out") && part.contains("<rect"))
        .and_then(|part| part.split('"').next())
        .expect("a bar that links to its events")
        .to_string();
    assert!(bar.contains("start=") && bar.contains("end="), "{bar}");
    let (_, events) = page(&server, &cookie, &format!("/ui/audit/search?{bar}"));
    assert!(events.contains("events match"), "{events}");
    assert!(
        !events.contains("<strong>0</strong> events match"),
        "{events}"
    );
    let user = "/ui/audit/search?category=signed-in-or-out";
    let link = html
        .split(&format!("<a href=\"{user}"))
        .find(|part| part.contains("user=user03%40contoso.test"))
        .and_then(|part| part.split('"').next())
        .map(|rest| format!("{user}{rest}"))
        .expect("a user links to their events");
    let (_, theirs) = page(&server, &cookie, &link);
    assert!(
        theirs.contains("<strong>1</strong> events match"),
        "{theirs}"
    );
    assert!(theirs.contains("user03@contoso.test"), "{theirs}");

    // A scheduled report lists its runs, each leading to the events it counted.
    let saved = post(
        &server,
        &cookie,
        "/ui/audit/reports",
        &[
            ("name", "Daily sign-ins"),
            ("search", "category=signed-in-or-out"),
            ("groupBy", "user"),
            ("schedule", "daily"),
            ("rangeDays", "7"),
        ],
    );
    let report = saved.headers()["location"].to_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let run = loop {
        let (_, html) = page(&server, &cookie, &report);
        assert!(html.contains("Scheduled runs (daily)"), "{html}");
        if let Some(run) = html
            .replace("&amp;", "&")
            .split("<td class=\"num\"><a href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
        {
            break run;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no run listed: {html}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        run.starts_with("/ui/audit/search?") && run.contains("category=signed-in-or-out"),
        "{run}"
    );
    let (_, events) = page(&server, &cookie, &run);
    assert!(
        !events.contains("<strong>0</strong> events match"),
        "{events}"
    );
}

/// Each found event opens in place, under its row — no page load, no second search — with its
/// record ids leading to the record and to who touched it; an event of many records shows the
/// first hundred and leads to all of them.
#[test]
fn an_event_opens_in_place_with_its_records_reachable() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account"]);
    for n in 0..120 {
        let response = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": format!("Many {n:03}")})),
        );
        assert_eq!(response.status(), 204);
    }
    let listed = send(
        client().get(server.api("accounts?$select=name")),
        &admin,
        None,
    );
    assert_eq!(listed.status(), 200);
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let console_searches = |server: &Server| {
        server
            .audit(&admin, "operation=SearchAuditLog&origin=WebUI")
            .len()
    };
    let searches = console_searches(&server);
    let (_, html) = page(
        &server,
        &cookie,
        "/ui/audit/search?run=1&operation=RetrieveMultiple&entity=account&origin=Api",
    );
    let html = html.replace("&amp;", "&");
    // Its first hundred records by their current names, read as the reviewer's own list of
    // exactly those records.
    assert_eq!(
        html.matches("<span class=\"name\">Many ").count(),
        100,
        "{html}"
    );
    let named = server.audit(
        &admin,
        "operation=RetrieveMultiple&origin=WebUI&entity=account",
    );
    assert_eq!(named.len(), 1, "{named:#?}");
    assert_eq!(named[0]["RecordIds"].as_array().unwrap().len(), 100);
    assert!(html.contains("<tr class=\"detail-row\"><td colspan=\"8\"><details><summary>Details of RetrieveMultiple"), "{html}");
    assert!(
        html.contains("Record ids (120)") && html.contains("20 more."),
        "{html}"
    );
    // Codes read as words, the code beside.
    assert!(
        html.contains("<dd>Out-of-box entity (out_of_box)</dd>")
            && html.contains("<dd>Accessed out-of-box entity (accessed-out-of-box-entity)</dd>"),
        "{html}"
    );
    assert!(html.contains("Show all 120 record ids"), "{html}");
    let first = html
        .split("<a class=\"id\" href=\"/ui/audit/subjects/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a record id")
        .to_string();
    assert!(
        html.contains(&format!(
            "href=\"/ui/main/records/accounts/{first}\">open the record</a>"
        )),
        "{html}"
    );
    assert_eq!(
        console_searches(&server),
        searches + 2,
        "the page's search and the terms its form offers are recorded; opening details adds none"
    );
    let all = html
        .split("<a href=\"/ui/audit/search?")
        .find(|part| part.contains("selected=") && part.contains(">Show all"))
        .and_then(|part| part.split('"').next())
        .expect("a link to all the ids")
        .to_string();
    let (_, full) = page(&server, &cookie, &format!("/ui/audit/search?{all}"));
    // The event in full first (all 120), then the list with its first hundred.
    assert_eq!(full.matches("class=\"id\"").count(), 220, "{full}");
    // … its first hundred records by their current names (a recorded read of them), in full
    // and in place.
    assert_eq!(
        full.matches("<span class=\"name\">Many ").count(),
        200,
        "{full}"
    );

    // Pages go older and newer again: 120 creates are three pages of 50.
    let link = |html: &str, rel: &str| {
        html.replace("&amp;", "&")
            .split(&format!("rel=\"{rel}\" href=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    };
    let first_event = |html: &str| {
        html.split("id=\"detail-")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    };
    let (_, one) = page(&server, &cookie, "/ui/audit/search?run=1&operation=Create");
    let (_, two) = page(
        &server,
        &cookie,
        &link(&one, "next").expect("a second page"),
    );
    let (_, three) = page(&server, &cookie, &link(&two, "next").expect("a third page"));
    let (_, back) = page(
        &server,
        &cookie,
        &link(&three, "prev").expect("back one page"),
    );
    assert_eq!(
        first_event(&back),
        first_event(&two),
        "newer from the third is the second"
    );
    assert_ne!(first_event(&two), first_event(&one));
    let (_, first) = page(
        &server,
        &cookie,
        &link(&two, "prev").expect("back to the first"),
    );
    assert_eq!(first_event(&first), first_event(&one));
}

/// Users and their roles from the console: create with a role, disable and enable, reset the
/// password, give another role, delete (asked first); a refused create keeps the form; only
/// those who manage users are offered the page.
#[test]
fn users_are_managed_from_the_console() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let role = |name: &str| {
        get_json(
            &server.api(&format!("roles?$filter=name eq '{name}'")),
            &admin,
        )["value"][0]["roleid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, html) = page(&server, &cookie, "/ui/main/users");
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/ui/main/users\"") && html.contains("New user"),
        "{html}"
    );
    let basic = role("Basic User");
    let created = post(
        &server,
        &cookie,
        "/ui/main/users",
        &[
            ("upn", "nina@contoso.test"),
            ("fullname", "Nina"),
            ("password", "nina-password-1"),
            ("role", &basic),
        ],
    );
    assert_eq!(created.status(), 303);
    let (_, list) = page(
        &server,
        &cookie,
        created.headers()["location"].to_str().unwrap(),
    );
    assert!(list.contains("Created nina@contoso.test."), "{list}");
    server.token("nina@contoso.test", "nina-password-1");
    let users = get_json(
        &server.api("systemusers?$filter=domainname eq 'nina@contoso.test'"),
        &admin,
    );
    let id = users["value"][0]["systemuserid"]
        .as_str()
        .unwrap()
        .to_string();
    let here = format!("/ui/main/users/{id}");

    // Disabled: the user's record says so; enabled again.
    let state = |disabled: &str| {
        post(
            &server,
            &cookie,
            &format!("{here}/state"),
            &[("upn", "nina@contoso.test"), ("disabled", disabled)],
        )
    };
    assert_eq!(state("true").status(), 303);
    let user = get_json(&server.api(&format!("systemusers({id})")), &admin);
    assert_eq!(user["isdisabled"], true);
    assert_eq!(state("false").status(), 303);
    // A new password works at once.
    let reset = post(
        &server,
        &cookie,
        &format!("{here}/password"),
        &[
            ("upn", "nina@contoso.test"),
            ("password", "nina-password-2"),
        ],
    );
    assert_eq!(reset.status(), 303);
    server.token("nina@contoso.test", "nina-password-2");
    // Another role.
    let given = post(
        &server,
        &cookie,
        &format!("{here}/roles"),
        &[
            ("upn", "nina@contoso.test"),
            ("role", &role("Audit Reader")),
        ],
    );
    assert_eq!(given.status(), 303);
    let held = get_json(
        &server.api(&format!("systemusers({id})/systemuserroles_association")),
        &admin,
    );
    assert_eq!(held["value"].as_array().unwrap().len(), 2, "{held}");

    // A team: created, the user added, a role given to it.
    let made = post(
        &server,
        &cookie,
        "/ui/main/users/teams/new/create",
        &[("upn", "Sales")],
    );
    assert_eq!(made.status(), 303);
    let teams = get_json(&server.api("teams?$filter=name eq 'Sales'"), &admin);
    let team = teams["value"][0]["teamid"].as_str().unwrap().to_string();
    let (_, list) = page(&server, &cookie, "/ui/main/users?team=Sales");
    assert!(
        list.contains("Created the team Sales.") && list.contains("<td>Sales</td>"),
        "{list}"
    );
    let joined = post(
        &server,
        &cookie,
        &format!("/ui/main/users/teams/{team}/members"),
        &[("upn", "Sales"), ("user", &id)],
    );
    assert_eq!(joined.status(), 303);
    let members = get_json(
        &server.api(&format!("teams({team})/teammembership_association")),
        &admin,
    );
    assert!(members.to_string().contains(&id), "{members}");
    let roled = post(
        &server,
        &cookie,
        &format!("/ui/main/users/teams/{team}/roles"),
        &[("upn", "Sales"), ("role", &basic)],
    );
    assert_eq!(roled.status(), 303);
    let team_roles = get_json(
        &server.api(&format!("teams({team})/teamroles_association")),
        &admin,
    );
    assert_eq!(
        team_roles["value"].as_array().unwrap().len(),
        1,
        "{team_roles}"
    );

    // A refused create keeps what was typed (not the password).
    let refused = post(
        &server,
        &cookie,
        "/ui/main/users",
        &[
            ("upn", "nina@contoso.test"),
            ("fullname", "Nina Again"),
            ("password", "secret-password-3"),
            ("role", &basic),
        ],
    );
    assert_eq!(refused.status(), 400);
    let html = refused.text().unwrap();
    assert!(
        html.contains("role=\"alert\"") && html.contains("value=\"Nina Again\""),
        "{html}"
    );
    assert!(!html.contains("secret-password-3"), "{html}");

    // Deleting asks first.
    let asked = post(
        &server,
        &cookie,
        &format!("{here}/delete"),
        &[("upn", "nina@contoso.test")],
    );
    assert_eq!(asked.status(), 200);
    assert!(asked.text().unwrap().contains("Delete this user?"));
    assert_eq!(
        send(
            client().get(server.api(&format!("systemusers({id})"))),
            &admin,
            None
        )
        .status(),
        200
    );
    let deleted = post(
        &server,
        &cookie,
        &format!("{here}/delete"),
        &[("upn", "nina@contoso.test"), ("confirmed", "yes")],
    );
    assert_eq!(deleted.status(), 303);
    assert_eq!(
        send(
            client().get(server.api(&format!("systemusers({id})"))),
            &admin,
            None
        )
        .status(),
        404
    );
    assert_recorded(
        &server,
        &admin,
        "WebUI",
        &[
            "CreateUser",
            "AssignRole",
            "DisableUser",
            "EnableUser",
            "ResetPassword",
            "DeleteUser",
            "AddTeamMember",
        ],
    );

    // A Basic User manages nobody: no Users page offered.
    server.add_user(&admin, "bob@contoso.test", "bob-password-1", "Basic User");
    let bob = sign_in(&server, "bob@contoso.test", "bob-password-1");
    let (_, home) = page(&server, &bob, "/ui/main/records");
    assert!(!home.contains("/ui/main/users"), "{home}");
    // And whatever he posts to the Users page is refused by the API, each refusal recorded.
    let admin_id = get_json(&server.api("WhoAmI"), &admin)["UserId"]
        .as_str()
        .unwrap()
        .to_string();
    let denied = || {
        server
            .audit(&admin, "status=Denied&user=bob@contoso.test")
            .len()
    };
    for (path, form) in [
        (
            "/ui/main/users".to_string(),
            vec![
                ("upn", "eve@contoso.test"),
                ("password", "eve-password-1"),
                ("role", basic.as_str()),
            ],
        ),
        (
            format!("/ui/main/users/{admin_id}/state"),
            vec![("upn", "admin"), ("disabled", "true")],
        ),
        (
            format!("/ui/main/users/{admin_id}/delete"),
            vec![("upn", "admin"), ("confirmed", "yes")],
        ),
        (
            "/ui/main/users/teams/new/create".to_string(),
            vec![("upn", "Bob's team")],
        ),
        (
            "/ui/main/users/roles/new".to_string(),
            vec![("name", "Bob's role")],
        ),
        (
            format!("/ui/main/users/roles/{basic}"),
            vec![("privilege", "prvReadaccount")],
        ),
    ] {
        let before = denied();
        let refused = post(&server, &bob, &path, &form);
        assert_eq!(refused.status(), 400, "{path}");
        assert_eq!(denied(), before + 1, "{path}: one Denied event");
    }
}

/// A choice is picked by its label in the records app's form.
#[test]
fn the_records_app_shows_and_picks_choices_by_label() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let account = create_account(&server, &admin, "Consultancy");
    let response = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"industrycode": 7})),
    );
    assert_eq!(response.status(), 204);
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, form) = page(
        &server,
        &cookie,
        &format!("/ui/main/records/accounts/{account}"),
    );
    assert_eq!(status, 200);
    assert!(form.contains("<select id=\"f-industrycode\""), "{form}");
    assert!(
        form.contains("<option value=\"7\" selected>Consulting</option>"),
        "{form}"
    );
    assert!(
        form.contains("<option value=\"33\">Wholesale</option>"),
        "{form}"
    );
}

/// Security roles from the console: a custom role is made, its privileges ticked in a grid of
/// entities and saved at once (`ReplacePrivilegesRole`, recorded); a built-in role says what it
/// allows; a privilege beyond the user's own is refused with the grid kept as ticked.
#[test]
fn security_roles_are_made_and_given_privileges_in_the_console() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, users) = page(&server, &cookie, "/ui/main/users");
    assert_eq!(status, 200);
    assert!(
        users.contains("Security roles") && users.contains("built-in"),
        "{users}"
    );
    let made = post(
        &server,
        &cookie,
        "/ui/main/users/roles/new",
        &[("name", "Account readers")],
    );
    assert_eq!(made.status(), 303);
    let role_page = made.headers()["location"].to_str().unwrap().to_string();
    let role_id = role_page.rsplit('/').next().unwrap().to_string();
    let (status, grid) = page(&server, &cookie, &role_page);
    assert_eq!(status, 200);
    assert_labelled(&role_page, &grid);
    assert!(grid.contains("value=\"prvReadaccount\""), "{grid}");
    let saved = post(
        &server,
        &cookie,
        &format!("/ui/main/users/roles/{role_id}"),
        &[
            ("privilege", "prvReadaccount"),
            ("privilege", "prvWriteaccount"),
        ],
    );
    assert_eq!(saved.status(), 303);
    let held = get_json(
        &server.api(&format!(
            "roles({role_id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
        )),
        &admin,
    );
    let mut names: Vec<&str> = held["RolePrivileges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PrivilegeName"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["prvReadaccount", "prvWriteaccount"]);
    let (_, grid) = page(&server, &cookie, &format!("{role_page}?saved=1"));
    assert!(grid.contains("value=\"prvReadaccount\" checked"), "{grid}");
    assert!(grid.contains("Privileges saved."), "{grid}");
    assert_recorded(
        &server,
        &admin,
        "WebUI",
        &["Create", "ReplacePrivilegesRole"],
    );

    let basic =
        get_json(&server.api("roles?$filter=name eq 'Basic User'"), &admin)["value"][0]["roleid"]
            .as_str()
            .unwrap()
            .to_string();
    let (_, built_in) = page(&server, &cookie, &format!("/ui/main/users/roles/{basic}"));
    assert!(built_in.contains("is a built-in role"), "{built_in}");
    assert!(!built_in.contains("Save privileges"), "{built_in}");

    // A user manager whose roles give less than the role would hold is refused, and the grid
    // comes back as they ticked it.
    let manager_role = entity_id(&send(
        client().post(server.api("roles")),
        &admin,
        Some(json!({"name": "Managers"})),
    ));
    let granted = send(
        client().post(server.api(&format!(
            "roles({manager_role})/Microsoft.Dynamics.CRM.ReplacePrivilegesRole"
        ))),
        &admin,
        Some(json!({"Privileges": [
            {"PrivilegeName": "prvManageUsers"}, {"PrivilegeName": "prvReadrole"},
            {"PrivilegeName": "prvReadaccount"}, {"PrivilegeName": "prvWriteaccount"},
            {"PrivilegeName": "prvReadsystemuser"}, {"PrivilegeName": "prvReadteam"},
        ]})),
    );
    assert_eq!(granted.status(), 200);
    server.add_user(&admin, "mia@contoso.test", "mia-password-1", "Managers");
    let mia = sign_in(&server, "mia@contoso.test", "mia-password-1");
    let refused = post(
        &server,
        &mia,
        &format!("/ui/main/users/roles/{role_id}"),
        &[
            ("privilege", "prvReadaccount"),
            ("privilege", "prvDeleteaccount"),
        ],
    );
    assert_eq!(refused.status(), 400);
    let kept = refused.text().unwrap();
    assert!(kept.contains("role=\"alert\""), "{kept}");
    assert!(
        kept.contains("value=\"prvDeleteaccount\" checked"),
        "{kept}"
    );
    let still = get_json(
        &server.api(&format!(
            "roles({role_id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
        )),
        &admin,
    );
    assert_eq!(still["RolePrivileges"].as_array().unwrap().len(), 2);
}

/// A refused alert rule or retention policy keeps its form as the user left it, the reason
/// above it, and saves nothing.
#[test]
fn refused_rules_and_policies_keep_the_form() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let refused = post(
        &server,
        &cookie,
        "/ui/audit/alerts",
        &[
            ("name", "Night exports"),
            ("kind", "volume"),
            ("operations", "ExportToExcel"),
            ("threshold", "0"),
            ("windowMinutes", "10"),
        ],
    );
    assert_eq!(refused.status(), 400);
    let html = refused.text().unwrap();
    assert!(
        html.contains("The rule was not saved: “Records” must be"),
        "{html}"
    );
    assert!(
        html.contains("value=\"Night exports\"") && html.contains("value=\"0\""),
        "{html}"
    );
    let rules = get_json(&format!("{}/api/audit/alerts", server.base), &admin);
    assert!(rules["value"].as_array().unwrap().is_empty(), "{rules}");

    let refused = post(
        &server,
        &cookie,
        "/ui/audit/retention",
        &[
            ("defaultDays", "90"),
            ("name", "Keep exports"),
            ("operations", "ExportToExcel"),
            ("days", "-5"),
            ("confirmed", "yes"),
        ],
    );
    assert_eq!(refused.status(), 400);
    let html = refused.text().unwrap();
    assert!(
        html.contains("Nothing was saved: “Days” must be -1 (forever) or 1 to 365000 days"),
        "{html}"
    );
    assert!(
        html.contains("value=\"Keep exports\"") && html.contains("value=\"-5\""),
        "{html}"
    );
    let retention = get_json(&format!("{}/api/audit/retention", server.base), &admin);
    assert!(
        retention["policies"].as_array().unwrap().is_empty(),
        "{retention}"
    );
}

#[test]
fn an_audit_page_shows_what_was_recorded_not_how_its_sender_wanted_it_to_look() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account"]);
    // A name that a browser would draw reversed (`exe.txt`), a user agent with a zero-width
    // space, and a value holding a bell and the isolate controls.
    let reversed = "\u{202E}txt.exe";
    let created = client()
        .post(server.api("accounts"))
        .bearer_auth(&admin)
        .header("User-Agent", "Mozilla/5.0 ad\u{200B}min")
        .json(&json!({"name": reversed, "description": "a\u{7}b\u{2066}c\u{2069}"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 204);
    let id = entity_id(&created);
    let listed = send(
        client().get(server.api("accounts?$select=name")),
        &admin,
        None,
    );
    assert_eq!(listed.status(), 200);
    let cookie = sign_in(&server, "admin", ADMIN_PASSWORD);
    let (status, html) = page(
        &server,
        &cookie,
        &format!("/ui/audit/search?run=1&recordId={id}"),
    );
    assert_eq!(status, 200);
    for hidden in ['\u{202E}', '\u{200B}', '\u{7}', '\u{2066}', '\u{2069}'] {
        assert!(
            !html.contains(hidden),
            "{:?} is drawn as it was sent",
            hidden
        );
    }
    // The changes of the create and the list's record names, with every such character named.
    assert!(html.contains("\u{27E8}U+202E\u{27E9}txt.exe"), "{html}");
    assert!(
        html.contains("a\u{27E8}U+0007\u{27E9}b\u{27E8}U+2066\u{27E9}c"),
        "{html}"
    );
    assert!(html.contains("ad\u{27E8}U+200B\u{27E9}min"), "{html}");
    // The records app's grid names them too; its form keeps the value as it is, so saving
    // the form does not change it.
    let (status, grid) = page(&server, &cookie, "/ui/main/records/accounts");
    assert_eq!(status, 200);
    assert!(grid.contains("\u{27E8}U+202E\u{27E9}txt.exe"), "{grid}");
    assert!(!grid.contains('\u{202E}'), "{grid}");
    let (_, form) = page(&server, &cookie, &format!("/ui/main/records/accounts/{id}"));
    assert!(form.contains(&format!("value=\"{reversed}\"")), "{form}");
    // The record itself is as it was sent: only the page names what it holds.
    let record: serde_json::Value = send(
        client().get(server.api(&format!("accounts({id})?$select=name"))),
        &admin,
        None,
    )
    .json()
    .unwrap();
    assert_eq!(record["name"], reversed);
}

#[test]
fn behind_https_the_session_cookie_is_one_no_other_page_can_set() {
    let server = Server::start(&["--public-url", "https://custos.example.com/"]);
    let response = browser()
        .post(format!("{}/ui/login", server.base))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", "/ui/home"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 303);
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    // `__Host-`: a browser keeps it only Secure, host-only and for path /, so a sibling
    // subdomain cannot plant one of its own in its place.
    assert!(set.starts_with("__Host-custos_session="), "{set}");
    for part in ["; Secure", "; Path=/;", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let (status, html) = page(&server, &cookie, "/ui/home");
    assert_eq!(status, 200, "{html}");
    // The same session under the unprefixed name — what a tossed cookie would be — is no
    // session at all, neither to a page nor to the API.
    let token = cookie.split_once('=').unwrap().1;
    let tossed = format!("custos_session={token}");
    assert_eq!(page(&server, &tossed, "/ui/home").0, 303);
    let api = |cookie: &str| {
        browser()
            .get(format!("{}/api/audit/records?top=1", server.base))
            .header("cookie", cookie)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(api(&tossed), 401);
    assert_eq!(api(&cookie), 200);
    // Signing out clears the cookie by its own name.
    let token = csrf(&server, &cookie);
    let out = browser()
        .post(format!("{}/ui/logout", server.base))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .unwrap();
    assert_eq!(out.status(), 303);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("__Host-custos_session=;"), "{cleared}");
    assert_eq!(page(&server, &cookie, "/ui/home").0, 303, "signed out");
}
