//! `custos demo --url URL`: a realistic day of work against a running server, through the
//! public API, the console and the support tool — every operation of SPEC §4 at least once, by
//! several users, from several origins — so a newcomer sees a populated console in a minute.
//!
//! Names get a short suffix per run, so the demo can run again on the same server.

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::client::{Client, Refused, encode};
use crate::out::outln;
use crate::support;

/// The people and applications of the demo day.
struct Cast {
    suffix: String,
    ann: String,
    ben: String,
    audra: String,
    engineer: String,
    app_id: String,
}

const PASSWORD: &str = "demo-password-2026";
const SECRET: &str = "demo-application-secret-0123";
const SDK: &str = "Contoso.Crm.Sdk/9.2 (custos demo)";
/// A webhook that never answers: `.invalid` is reserved never to resolve (RFC 6761), so the
/// plug-in step's calls are recorded, then retried and given up on. A public name, not a
/// loopback address, so that a server started as the README starts it (without
/// `--allow-private-targets`) takes the step.
const WEBHOOK: &str = "https://erp.contoso.invalid/webhook";

fn api(path: &str) -> String {
    format!("/main/api/data/v9.2/{path}")
}

/// Runs the demo day; prints each step, then what the log holds.
pub(crate) fn run(url: &str, admin_password: &str, json_out: bool) -> anyhow::Result<()> {
    let suffix: String = format!("{:04x}", rand::random::<u16>());
    let cast = Cast {
        ann: format!("ann-{suffix}@contoso.test"),
        ben: format!("ben-{suffix}@contoso.test"),
        audra: format!("audra-{suffix}@contoso.test"),
        engineer: format!("eng-{suffix}@support.custos.test"),
        app_id: uuid::Uuid::new_v4().to_string(),
        suffix,
    };
    let step = |text: &str| {
        if !json_out {
            outln!("• {text}");
        }
    };
    let admin =
        Client::sign_in(url, "admin", admin_password, SDK).context("signing in as admin")?;

    step("the admin turns on auditing, read auditing and user access auditing");
    let org = admin.get(&api("WhoAmI"))?["OrganizationId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    admin.call(
        Method::PATCH,
        &api(&format!("organizations({org})")),
        Some(&json!({"isauditenabled": true})),
    )?;
    admin.call(
        Method::PATCH,
        &api(&format!("organizations({org})")),
        Some(&json!({"isreadauditenabled": true, "isuseraccessauditenabled": true})),
    )?;
    // Reads of records, and of who may see them (the shares: an internal entity, so the
    // "Accessed other entity type" report has its events too).
    for entity in ["account", "contact", "principalobjectaccess"] {
        admin.call(
            Method::PATCH,
            &api(&format!("EntityDefinitions(LogicalName='{entity}')")),
            Some(&json!({"IsRetrieveAuditEnabled": {"Value": true}, "IsRetrieveMultipleAuditEnabled": {"Value": true}})),
        )?;
    }
    admin.post(&api("PublishAllXml"), &json!({}))?;

    step("the admin creates users, an application, a team and a custom role");
    let roles = admin.get(&api("roles?$select=name"))?;
    let role_id = |name: &str| -> String {
        roles["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name)
            .and_then(|r| r["roleid"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut users = Vec::new();
    for (upn, role) in [
        (&cast.ann, "Basic User"),
        (&cast.ben, "Basic User"),
        (&cast.audra, "Audit Reader"),
    ] {
        let id = admin
            .post(
                &api("systemusers"),
                &json!({"domainname": upn, "fullname": upn.split('@').next(), "password": PASSWORD}),
            )?
            .entity_id()?;
        admin.post(
            &api(&format!(
                "systemusers({id})/systemuserroles_association/$ref"
            )),
            &json!({"@odata.id": format!("{url}{}", api(&format!("roles({})", role_id(role))))}),
        )?;
        users.push(id);
    }
    let ben_id = users[1].clone();
    admin.post(
        &api("systemusers"),
        &json!({"applicationid": cast.app_id, "clientsecret": SECRET, "fullname": "Payroll"}),
    )?;
    let team = admin
        .post(
            &api("teams"),
            &json!({"name": format!("Sales {}", cast.suffix)}),
        )?
        .entity_id()?;
    admin.post(
        &api(&format!("teams({team})/teammembership_association/$ref")),
        &json!({"@odata.id": format!("{url}{}", api(&format!("systemusers({})", users[0])))}),
    )?;
    let viewer = admin
        .post(
            &api("roles"),
            &json!({"name": format!("Account viewer {}", cast.suffix)}),
        )?
        .entity_id()?;
    admin.post(
        &api(&format!(
            "roles({viewer})/Microsoft.Dynamics.CRM.AddPrivilegesRole"
        )),
        &json!({"Privileges": [{"PrivilegeName": "prvReadaccount"}]}),
    )?;
    admin.post(
        &api(&format!("teams({team})/teamroles_association/$ref")),
        &json!({"@odata.id": format!("{url}{}", api(&format!("roles({viewer})")))}),
    )?;

    step(
        "the admin customizes: a project entity keyed by its code, an attribute added and deleted again",
    );
    let project = format!("new_project{}", cast.suffix);
    let code = format!("new_code{}", cast.suffix);
    admin.post(
        &api("EntityDefinitions"),
        &json!({"SchemaName": project, "IsAuditEnabled": {"Value": true},
                "IsRetrieveMultipleAuditEnabled": {"Value": true},
                "Attributes": [{"AttributeType": "Money", "SchemaName": format!("new_budget{}", cast.suffix)},
                               {"AttributeType": "String", "SchemaName": code, "MaxLength": 20}]}),
    )?;
    // An alternate key, so that an integration names projects by the code it knows them by.
    admin.post(
        &api(&format!("EntityDefinitions(LogicalName='{project}')/Keys")),
        &json!({"SchemaName": format!("new_projectcode{}", cast.suffix), "KeyAttributes": [code]}),
    )?;
    let scratch = format!("new_scratch{}", cast.suffix);
    admin.post(
        &api("EntityDefinitions(LogicalName='account')/Attributes"),
        &json!({"AttributeType": "String", "SchemaName": scratch}),
    )?;
    admin.post(&api("PublishAllXml"), &json!({}))?;

    step("processes and plug-ins: one sets a field on new accounts, one calls a webhook");
    let process = admin
        .post(
            &api("workflows"),
            &json!({"name": "Flag new accounts", "primaryentity": "account", "triggeron": "create",
                    "actiontype": "setfield", "fieldname": scratch, "fieldvalue": "new"}),
        )?
        .entity_id()?;
    admin.call(
        Method::PATCH,
        &api(&format!("workflows({process})")),
        Some(&json!({"statecode": 1})),
    )?;
    let plugin = admin
        .post(
            &api("sdkmessageprocessingsteps"),
            &json!({"name": "Notify ERP", "sdkmessage": "Update", "primaryentity": "contact", "webhookurl": WEBHOOK}),
        )?
        .entity_id()?;
    admin.call(
        Method::PATCH,
        &api(&format!("sdkmessageprocessingsteps({plugin})")),
        Some(&json!({"statecode": 1})),
    )?;

    step("an integration upserts projects by their code and lists them with FetchXML");
    let projects = format!("{project}s");
    for (key, name) in [
        ("P-100", "Website relaunch"),
        ("P-200", "Warehouse move"),
        ("P-100", "Website relaunch, phase 2"),
    ] {
        admin.call(
            Method::PATCH,
            &api(&format!("{projects}({code}='{key}')")),
            Some(&json!({"new_name": name})),
        )?;
    }
    let fetch = format!(
        "<fetch count='50'><entity name='{project}'><attribute name='new_name'/><attribute name='{code}'/><filter><condition attribute='{code}' operator='like' value='P-%'/></filter><order attribute='{code}'/></entity></fetch>"
    );
    admin.get(&api(&format!("{projects}?fetchXml={}", encode(&fetch))))?;

    step("Ann works through the API: accounts and contacts created, read, changed, shared");
    let ann = Client::sign_in(url, &cast.ann, PASSWORD, SDK)?;
    let mut accounts = Vec::new();
    for (name, revenue) in [
        ("Contoso", 1_200_000),
        ("Fabrikam", 450_000),
        ("Northwind", 90_000),
    ] {
        accounts.push(
            ann.post(&api("accounts"), &json!({"name": name, "revenue": revenue}))?
                .entity_id()?,
        );
    }
    let contact = ann
        .post(
            &api("contacts"),
            &json!({"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@contoso.test"}),
        )?
        .entity_id()?;
    ann.call(
        Method::PATCH,
        &api(&format!("contacts({contact})")),
        Some(&json!({"telephone1": "+44 20 7946 0000"})),
    )?;
    ann.call(
        Method::PATCH,
        &api(&format!("accounts({})", uuid::Uuid::new_v4())),
        Some(&json!({"name": "Tailspin (upserted)"})),
    )?;
    ann.get(&api(&format!("accounts({})", accounts[0])))?;
    ann.get(&api(
        "accounts?$select=name,revenue&$filter=revenue gt 100000",
    ))?;
    let views = ann.get(&api("savedqueries?$filter=returnedtypecode eq 'contact'"))?;
    if let Some(view) = views["value"][0]["savedqueryid"].as_str() {
        ann.get(&api(&format!("contacts?savedQuery={view}")))?;
    }
    // A personal view like Dataverse's "My Accounts": whoever runs it sees their own.
    let mine = ann
        .post(
            &api("userqueries"),
            &json!({"name": "My accounts", "returnedtypecode": "account", "columns": "name,revenue",
                    "filter": "Microsoft.Dynamics.CRM.EqualUserId(PropertyName='ownerid')"}),
        )?
        .entity_id()?;
    ann.get(&api(&format!("accounts?userQuery={mine}")))?;
    ann.call(
        Method::PATCH,
        &api(&format!("accounts({})", accounts[1])),
        Some(&json!({"ownerid@odata.bind": format!("/systemusers({ben_id})")})),
    )?;
    ann.post(
        &api("GrantAccess"),
        &json!({"Target": {"@odata.id": format!("accounts({})", accounts[0])},
                "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({ben_id})")}, "AccessMask": "ReadAccess"}}),
    )?;
    // Who may see the account now: the admin reads its shares.
    admin.get(&api(&format!(
        "principalobjectaccessset?$filter=objectid eq {}",
        accounts[0]
    )))?;
    // Who changed it, and how: the admin opens the account's audit history.
    admin.get(&api(&format!(
        "RetrieveRecordChangeHistory(Target=@target)?@target=%7B%22@odata.id%22:%22accounts({})%22%7D",
        accounts[0]
    )))?;

    step("Ann exports to Excel, imports a CSV file, deletes records one by one and in bulk");
    ann.post(
        &api("ExportToExcel"),
        &json!({"EntitySetName": "accounts", "Format": "xlsx"}),
    )?;
    ann.post(
        &api("ImportRecords"),
        &json!({"EntitySetName": "contacts", "FileName": "trade-fair.csv",
                "Content": "firstname,lastname,emailaddress1\nGrace,Hopper,grace@navy.test\nAlan,Turing,alan@bletchley.test\nKaren,Jones,karen@cam.test\n"}),
    )?;
    ann.call(
        Method::DELETE,
        &api(&format!("accounts({})", accounts[2])),
        None,
    )?;
    let admin_bulk = admin.post(
        &api("BulkDelete"),
        &json!({"EntitySetName": "contacts", "Filter": "lastname eq 'Jones'", "JobName": "Remove test contacts"}),
    );
    admin_bulk?;

    step("Ben works in the console: signs in, opens the accounts grid, signs out");
    console_visit(url, &cast.ben)?;

    step("refusals and failures: Ben tries a bulk delete, Ann sends a bad filter");
    let ben = Client::sign_in(url, &cast.ben, PASSWORD, SDK)?;
    expect_refusal(ben.post(
        &api("BulkDelete"),
        &json!({"EntitySetName": "accounts", "Filter": "name ne null"}),
    ))?;
    expect_refusal(ann.get(&api("accounts?$filter=nosuch eq 1")))?;
    let _ = Client::sign_in(url, &cast.ben, "not-the-password", SDK);

    step(
        "a solution is imported, then removed; a process is deactivated and the field it set deleted",
    );
    let solution = json!({
        "UniqueName": format!("demo_tickets{}", cast.suffix),
        "FriendlyName": "Help desk tickets",
        "Publisher": {"Prefix": "demo"},
        "Entities": [{"SchemaName": format!("demo_ticket{}", cast.suffix)}],
    });
    let imported = admin.post(
        &api("ImportSolution"),
        &json!({"CustomizationFile": solution}),
    )?;
    let solution_id = imported.json["SolutionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    admin.call(
        Method::DELETE,
        &api(&format!("solutions({solution_id})")),
        None,
    )?;
    expect_refusal(admin.call(
        Method::DELETE,
        &api(&format!(
            "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='{scratch}')"
        )),
        None,
    ))?;
    admin.call(
        Method::PATCH,
        &api(&format!("workflows({process})")),
        Some(&json!({"statecode": 0})),
    )?;
    admin.call(
        Method::DELETE,
        &api(&format!(
            "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='{scratch}')"
        )),
        None,
    )?;
    admin.call(
        Method::PATCH,
        &api(&format!("sdkmessageprocessingsteps({plugin})")),
        Some(&json!({"statecode": 0})),
    )?;

    step("the admin center: a sandbox instance created, made paid, backed up, restored, deleted");
    let sandbox = format!("sandbox-{}", cast.suffix);
    admin.get("/api/admin/instances")?;
    admin.post("/api/admin/instances", &json!({"name": sandbox}))?;
    admin.post(
        &format!("/api/admin/instances/{sandbox}/convert"),
        &json!({}),
    )?;
    let backup = admin.post(
        &format!("/api/admin/instances/{sandbox}/backups"),
        &json!({"label": "before the demo's changes"}),
    )?;
    let backup_id = backup.json["id"].as_str().unwrap_or_default().to_string();
    admin.post(
        &format!("/{sandbox}/api/data/v9.2/accounts"),
        &json!({"name": "Sandbox account"}),
    )?;
    admin.post(
        &format!("/api/admin/instances/{sandbox}/restore"),
        &json!({"backupId": backup_id}),
    )?;
    admin.call(
        Method::DELETE,
        &format!("/api/admin/instances/{sandbox}"),
        None,
    )?;

    step("retention and search settings are reviewed");
    let retention = admin.get("/api/audit/retention")?;
    let days = retention["defaultDays"].as_i64().unwrap_or(90);
    for days in [days + 1, days] {
        admin.call(
            Method::PUT,
            "/api/audit/retention",
            Some(&json!({"defaultDays": days, "policies": retention["policies"]})),
        )?;
    }
    admin.call(
        Method::PUT,
        "/api/audit/settings",
        Some(&json!({"searchEnabled": false})),
    )?;
    admin.call(
        Method::PUT,
        "/api/audit/settings",
        Some(&json!({"searchEnabled": true})),
    )?;

    step(
        "a support engineer is let in, the tenant opens their access for a ticket, they work it with the support tool, and are let out",
    );
    let engineer = admin.post(
        "/api/admin/support/engineers",
        &json!({"upn": cast.engineer, "password": PASSWORD, "displayName": "Support engineer"}),
    )?;
    let ticket = format!("CASE-{}", cast.suffix);
    let engineer_id = engineer.json["id"].as_str().unwrap_or_default().to_string();
    admin.post(
        "/api/admin/support/grants",
        &json!({"engineerId": engineer_id, "ticket": ticket, "instance": "main", "hours": 1}),
    )?;
    let session = support::Session {
        url,
        user: &cast.engineer,
        password: PASSWORD,
        ticket: &ticket,
        reason: Some("customer asks why an account shows the wrong phone number"),
    };
    {
        support::run(
            &session,
            &support::Action::List {
                instance: "main".into(),
                set: "accounts".into(),
                filter: Some("name eq 'Contoso'".into()),
                top: 5,
            },
        )?;
        support::run(
            &session,
            &support::Action::Update {
                instance: "main".into(),
                set: "accounts".into(),
                id: accounts[0].clone(),
                data: json!({"telephone1": "+1 425 555 0100"}).to_string(),
            },
        )?;
        support::run(
            &session,
            &support::Action::Backend {
                command: "log-status".into(),
                instance: None,
            },
        )?;
    }
    admin.call(
        Method::DELETE,
        &format!("/api/admin/support/engineers/{engineer_id}"),
        None,
    )?;

    step("the payroll application sends its own audit events");
    let app = Client::sign_in_app(url, &cast.app_id, SECRET, "Payroll/3.1")?;
    app.post(
        "/api/audit/ingest",
        &json!([
            {"Operation": "ViewPayslip", "Workload": "Payroll", "UserId": cast.ann, "ObjectIds": [contact], "Details": {"Period": "2026-10"}},
            {"Operation": "ExportPayroll", "Workload": "Payroll", "UserId": cast.ann, "ResultCount": 120}
        ]),
    )?;

    step(
        "the auditor searches the log and opens a report; the admin lets a SIEM follow the activity feed, which the auditor reads; everyone signs out",
    );
    let audra = Client::sign_in(url, &cast.audra, PASSWORD, "Mozilla/5.0 (auditor)")?;
    audra.get(&format!("/api/audit/records?top=50&user={}", cast.ann))?;
    audra.get("/api/audit/reports/accessed-out-of-box-entity?bucket=hour")?;
    let feed = "/api/v1.0/default/activity/feed/subscriptions";
    admin.post(
        &format!("{feed}/start?contentType=Audit.General"),
        &json!({}),
    )?;
    audra.get(&format!("{feed}/content?contentType=Audit.General"))?;
    for client in [&ann, &ben, &audra, &admin] {
        client.post("/oauth2/logout", &json!({}))?;
    }

    // What the day left in the log, by operation (read by a fresh admin session).
    let reader = Client::sign_in(url, "admin", admin_password, SDK)?;
    let mut summary = summary(&reader)?;
    summary["users"] = json!({
        "ann": cast.ann,
        "ben": cast.ben,
        "audra": cast.audra,
        "engineer": cast.engineer,
    });
    if json_out {
        outln!("{summary:#}");
    } else {
        outln!("\nthe log now holds, by operation:");
        let mut operations: Vec<(&String, &Json)> = summary["operations"]
            .as_object()
            .into_iter()
            .flatten()
            .collect();
        operations.sort_by(|a, b| a.0.cmp(b.0));
        for (operation, count) in operations {
            outln!("  {operation:<28} {count}");
        }
        outln!("\nopen {url}/ui and sign in as admin to look around.");
    }
    reader.post("/oauth2/logout", &json!({}))?;
    Ok(())
}

/// A request that must be refused: a refusal is the expected outcome.
fn expect_refusal<T>(result: anyhow::Result<T>) -> anyhow::Result<()> {
    match result {
        Err(error) if error.downcast_ref::<Refused>().is_some() => Ok(()),
        Err(error) => Err(error),
        Ok(_) => anyhow::bail!("a request the demo expected to be refused was allowed"),
    }
}

/// Signs in through the console's form, opens the accounts grid, signs out.
fn console_visit(url: &str, user: &str) -> anyhow::Result<()> {
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64) custos-demo")
        .build()?;
    let signed_in = browser
        .post(format!("{url}/ui/login"))
        .form(&[
            ("username", user),
            ("password", PASSWORD),
            ("next", "/ui/home"),
        ])
        .send()?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .context("the console's sign-in set no session cookie")?
        .to_string();
    for page in [
        "/ui/home",
        "/ui/main/records/accounts",
        "/ui/main/records/contacts",
    ] {
        let response = browser
            .get(format!("{url}{page}"))
            .header("cookie", &cookie)
            .send()?;
        anyhow::ensure!(
            response.status().is_success(),
            "{page}: {}",
            response.status()
        );
    }
    browser
        .post(format!("{url}/ui/logout"))
        .header("cookie", &cookie)
        .send()?;
    Ok(())
}

/// Events of the last day by operation, and by origin.
fn summary(admin: &Client) -> anyhow::Result<Json> {
    let mut operations = serde_json::Map::new();
    let mut origins = serde_json::Map::new();
    let mut path = "/api/audit/records?top=1000".to_string();
    loop {
        let page = admin.get(&path)?;
        for event in page["value"].as_array().into_iter().flatten() {
            for (map, key) in [(&mut operations, "Operation"), (&mut origins, "Origin")] {
                let name = event[key].as_str().unwrap_or_default().to_string();
                let count = map.get(&name).and_then(Json::as_u64).unwrap_or(0);
                map.insert(name, json!(count + 1));
            }
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                path = next
                    .find("/api/audit/records")
                    .map(|at| next[at..].to_string())
                    .context("a next link outside the audit API")?;
            }
            None => break,
        }
    }
    Ok(json!({"operations": operations, "origins": origins}))
}
