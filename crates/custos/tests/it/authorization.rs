//! The authorization matrix (issue 10): every route family tried by every kind of caller —
//! anonymous, a basic user, a custom role that manages users only, an instance System
//! Administrator, an Audit Reader, an Audit Manager, a support engineer with an open grant, an
//! application and a tenant global admin. Each cell is either allowed (2xx) or refused (401 or
//! 403), and every refusal is in the log: each caller comes from an address of its own, so the
//! test counts the `Denied` events of exactly that address.

use std::net::IpAddr;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// Who tries: a letter (used in the table), a name, and the loopback address it calls from.
struct Who {
    letter: char,
    name: &'static str,
    address: IpAddr,
    token: Option<String>,
    id: String,
}

fn role_id(server: &Server, token: &str, name: &str) -> String {
    get_json(
        &server.api(&format!("roles?$filter=name eq '{name}'")),
        token,
    )["value"][0]["roleid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn denied_from(server: &Server, admin: &str, address: IpAddr) -> usize {
    server
        .audit(admin, &format!("ip={address}&status=Denied"))
        .len()
}

#[test]
fn every_route_family_allows_exactly_its_roles_and_records_every_refusal() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let org = server.organization_id(&admin);
    let base = server.base.clone();
    let id_of = |token: &str| {
        get_json(&format!("{base}/main/api/data/v9.2/WhoAmI"), token)["UserId"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The cast.
    let bo = server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let manager_role = entity_id(&send(
        client().post(server.api("roles")),
        &admin,
        Some(json!({"name": "User manager"})),
    ));
    let added = send(
        client().post(server.api(&format!(
            "roles({manager_role})/Microsoft.Dynamics.CRM.AddPrivilegesRole"
        ))),
        &admin,
        Some(
            json!({"Privileges": [{"PrivilegeName": "prvManageUsers"}, {"PrivilegeName": "prvReadsystemuser"}, {"PrivilegeName": "prvReadrole"}]}),
        ),
    );
    assert_eq!(added.status(), 200);
    let um = entity_id(&send(
        client().post(server.api("systemusers")),
        &admin,
        Some(json!({"domainname": "um@contoso.test", "password": "um-password-1"})),
    ));
    let assigned = send(
        client().post(server.api(&format!(
            "systemusers({um})/systemuserroles_association/$ref"
        ))),
        &admin,
        Some(json!({"@odata.id": server.api(&format!("roles({manager_role})"))})),
    );
    assert_eq!(assigned.status(), 204);
    let sa = server.add_user(
        &admin,
        "sa@contoso.test",
        "sa-password-1",
        "System Administrator",
    );
    let ar = server.add_user(&admin, "ar@contoso.test", "ar-password-1", "Audit Reader");
    let am = server.add_user(&admin, "am@contoso.test", "am-password-1", "Audit Manager");
    let engineer: Value = send(
        client().post(format!("{base}/api/admin/support/engineers")),
        &admin,
        Some(json!({"upn": "eng@support.test", "password": "engineer-password-1"})),
    )
    .json()
    .unwrap();
    let engineer_id = engineer["id"].as_str().unwrap().to_string();
    let opened = send(
        client().post(format!("{base}/api/admin/support/grants")),
        &admin,
        Some(json!({"engineerId": engineer_id, "ticket": "T-7", "instance": "main"})),
    );
    assert_eq!(opened.status(), 201);
    let app_id = "3e1f6c1a-0000-4000-8000-0000000000bb";
    let app = entity_id(&send(
        client().post(server.api("systemusers")),
        &admin,
        Some(json!({"applicationid": app_id, "clientsecret": "application-secret-01"})),
    ));
    let app_token: Value = client()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app_id),
            ("client_secret", "application-secret-01"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let admin_id = id_of(&admin);
    let mut cast = Vec::new();
    for (n, (letter, name, token, id)) in [
        ('A', "anonymous", None, uuid::Uuid::new_v4().to_string()),
        (
            'B',
            "basic user",
            Some(server.token("bo@contoso.test", "bo-password-1")),
            bo,
        ),
        (
            'U',
            "user manager",
            Some(server.token("um@contoso.test", "um-password-1")),
            um,
        ),
        (
            'S',
            "instance admin",
            Some(server.token("sa@contoso.test", "sa-password-1")),
            sa,
        ),
        (
            'R',
            "audit reader",
            Some(server.token("ar@contoso.test", "ar-password-1")),
            ar,
        ),
        (
            'M',
            "audit manager",
            Some(server.token("am@contoso.test", "am-password-1")),
            am,
        ),
        (
            'E',
            "support engineer",
            Some(server.token("eng@support.test", "engineer-password-1")),
            engineer_id.clone(),
        ),
        (
            'P',
            "application",
            app_token["access_token"].as_str().map(str::to_string),
            app,
        ),
        ('G', "global admin", Some(admin.clone()), admin_id),
    ]
    .into_iter()
    .enumerate()
    {
        cast.push(Who {
            letter,
            name,
            address: format!("127.0.0.{}", n + 2).parse().unwrap(),
            token,
            id,
        });
    }

    // Route family, method, path (`{self}` is the caller's own id), body, and who is allowed.
    let audit_reader = role_id(&server, &admin, "Audit Reader");
    let api = "/main/api/data/v9.2";
    let feed = "/api/v1.0/default/activity/feed/subscriptions";
    let account = entity_id(&send(
        client().post(server.api("accounts")),
        &admin,
        Some(json!({"name": "matrix lookups", "accountnumber": "MATRIX-1"})),
    ));
    // The account's creation, a row of the audit summary.
    let created = server.audit(&admin, &format!("operation=Create&recordId={account}"));
    let creation = created[0]["Id"].as_str().unwrap().to_string();
    // An alternate key in force, so that a record can be named by it.
    server.add_account_number_key(&admin);
    server.publish(&admin);
    let keys = format!("{api}/EntityDefinitions(LogicalName='account')/Keys");
    let cases: Vec<(&str, Method, String, Option<Value>, &str)> = vec![
        (
            "remove a lookup's reference",
            Method::DELETE,
            format!("{api}/accounts({account})/primarycontactid/$ref"),
            None,
            "BSEG",
        ),
        (
            "a batch",
            Method::POST,
            format!("{api}/$batch"),
            Some(json!({"requests": [{"id": "1", "method": "GET", "url": "WhoAmI"}]})),
            "BUSEG",
        ),
        (
            "retention preview",
            Method::POST,
            "/api/audit/retention/preview".into(),
            Some(json!({"defaultDays": 90, "policies": []})),
            "RMG",
        ),
        (
            "search terms",
            Method::GET,
            "/api/audit/terms".into(),
            None,
            "RMG",
        ),
        (
            "list records",
            Method::GET,
            format!("{api}/accounts?$top=1"),
            None,
            "BSEG",
        ),
        (
            "list records in FetchXML",
            Method::GET,
            format!("{api}/accounts?fetchXml=<fetch top='1'><entity name='account'/></fetch>"),
            None,
            "BSEG",
        ),
        (
            "aggregate records ($apply)",
            Method::GET,
            format!("{api}/accounts?$apply=groupby((name),aggregate($count as n))"),
            None,
            "BSEG",
        ),
        (
            "read a record by its alternate key",
            Method::GET,
            format!("{api}/accounts(accountnumber='MATRIX-1')"),
            None,
            "BSEG",
        ),
        ("alternate keys", Method::GET, keys.clone(), None, "BUSEG"),
        // Added, then taken away again, by each caller allowed to: the next finds it gone.
        (
            "add an alternate key",
            Method::POST,
            keys.clone(),
            Some(json!({"SchemaName": "new_Matrix", "KeyAttributes": ["telephone1"]})),
            "SEG",
        ),
        (
            "take an alternate key away",
            Method::DELETE,
            format!("{keys}(LogicalName='new_matrix')"),
            None,
            "SEG",
        ),
        (
            "create a record",
            Method::POST,
            format!("{api}/accounts"),
            Some(json!({"name": "matrix"})),
            "BSEG",
        ),
        (
            "metadata",
            Method::GET,
            format!("{api}/$metadata"),
            None,
            "BUSEG",
        ),
        (
            "entity definitions",
            Method::GET,
            format!("{api}/EntityDefinitions"),
            None,
            "BUSEG",
        ),
        (
            "who am I",
            Method::GET,
            format!("{api}/WhoAmI"),
            None,
            "BUSEG",
        ),
        (
            "count the records of entities",
            Method::GET,
            format!("{api}/RetrieveTotalRecordCount(EntityNames=['account'])"),
            None,
            "BSEG",
        ),
        (
            "a record's change history",
            Method::GET,
            format!(
                "{api}/RetrieveRecordChangeHistory(Target=@t)?@t=%7B%22@odata.id%22:%22accounts({account})%22%7D"
            ),
            None,
            "SG",
        ),
        (
            "an attribute's change history",
            Method::GET,
            format!(
                "{api}/RetrieveAttributeChangeHistory(Target=@t,AttributeLogicalName='name')?@t=%7B%22@odata.id%22:%22accounts({account})%22%7D"
            ),
            None,
            "SG",
        ),
        (
            "a row of the audit summary",
            Method::GET,
            format!("{api}/audits({creation})"),
            None,
            "SG",
        ),
        (
            "a change's details",
            Method::GET,
            format!("{api}/audits({creation})/Microsoft.Dynamics.CRM.RetrieveAuditDetails()"),
            None,
            "SG",
        ),
        (
            "the instance's audit summary",
            Method::GET,
            format!("{api}/audits"),
            None,
            "SG",
        ),
        (
            "how many rows the audit summary holds",
            Method::GET,
            format!("{api}/audits/$count"),
            None,
            "SG",
        ),
        (
            "the Web API's version",
            Method::GET,
            format!("{api}/RetrieveVersion()"),
            None,
            "BUSEG",
        ),
        (
            "instance audit settings",
            Method::PATCH,
            format!("{api}/organizations({org})"),
            Some(json!({"isauditenabled": true})),
            "SG",
        ),
        (
            "entity audit flags",
            Method::PATCH,
            format!("{api}/EntityDefinitions(LogicalName='account')"),
            Some(json!({"IsAuditEnabled": {"Value": true}})),
            "SG",
        ),
        (
            "make oneself an auditor",
            Method::POST,
            format!("{api}/systemusers({{self}})/systemuserroles_association/$ref"),
            Some(json!({"@odata.id": format!("{base}{api}/roles({audit_reader})")})),
            "G",
        ),
        (
            "admin center",
            Method::GET,
            "/api/admin/instances".into(),
            None,
            "G",
        ),
        (
            "support engineers",
            Method::GET,
            "/api/admin/support/engineers".into(),
            None,
            "G",
        ),
        (
            "open support access",
            Method::POST,
            "/api/admin/support/grants".into(),
            Some(json!({"engineerId": engineer_id, "ticket": "T-8", "instance": "main"})),
            "G",
        ),
        (
            "support tool",
            Method::POST,
            "/api/support/access".into(),
            Some(json!({"ticket": "T-7", "instance": "main"})),
            "E",
        ),
        (
            "audit search",
            Method::GET,
            "/api/audit/records?top=1".into(),
            None,
            "RMG",
        ),
        (
            "audit streams",
            Method::GET,
            "/api/audit/streams".into(),
            None,
            "RMG",
        ),
        (
            "alert rules",
            Method::GET,
            "/api/audit/alerts".into(),
            None,
            "RMG",
        ),
        (
            "retention",
            Method::GET,
            "/api/audit/retention".into(),
            None,
            "RMG",
        ),
        (
            "search switch",
            Method::GET,
            "/api/audit/settings".into(),
            None,
            "RMG",
        ),
        (
            "verification",
            Method::GET,
            "/api/audit/verify".into(),
            None,
            "RMG",
        ),
        (
            "signing keys",
            Method::GET,
            "/api/audit/keys".into(),
            None,
            "RMG",
        ),
        (
            "checkpoint",
            Method::GET,
            "/api/audit/checkpoint".into(),
            None,
            "RMG",
        ),
        (
            "export job",
            Method::POST,
            "/api/audit/exports".into(),
            Some(json!({"format": "csv", "search": "operation=CreateUser"})),
            "RMG",
        ),
        (
            "feed listing",
            Method::GET,
            format!("{feed}/list"),
            None,
            "RMG",
        ),
        (
            "feed start",
            Method::POST,
            format!("{feed}/start?contentType=Audit.General"),
            Some(json!({})),
            "MG",
        ),
        (
            "turn search on",
            Method::PUT,
            "/api/audit/settings".into(),
            Some(json!({"searchEnabled": true})),
            "MG",
        ),
        (
            "alert rule",
            Method::POST,
            "/api/audit/alerts".into(),
            Some(json!({"name": "bulk", "kind": "operation", "operations": ["BulkDelete"]})),
            "MG",
        ),
        (
            "ingest",
            Method::POST,
            "/api/audit/ingest".into(),
            Some(json!([{"Operation": "ViewPayslip", "Workload": "Payroll"}])),
            "P",
        ),
        ("metrics", Method::GET, "/metrics".into(), None, "BUSRMEPG"),
    ];

    let mut wrong = Vec::new();
    for who in &cast {
        let caller = reqwest::blocking::Client::builder()
            .local_address(who.address)
            .user_agent(USER_AGENT)
            .build()
            .unwrap();
        for (family, method, path, body, allowed) in &cases {
            let url = format!("{base}{}", path.replace("{self}", &who.id));
            let mut request = caller.request(method.clone(), &url);
            if let Some(token) = &who.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let before = denied_from(&server, &admin, who.address);
            let status = request.send().unwrap().status().as_u16();
            let after = denied_from(&server, &admin, who.address);
            let expect_allowed = allowed.contains(who.letter);
            let ok = if expect_allowed {
                (200..300).contains(&status) && after == before
            } else {
                matches!(status, 401 | 403) && after == before + 1
            };
            if !ok {
                wrong.push(format!(
                    "{family} by {}: {status}, {} new Denied events (expected {})",
                    who.name,
                    after - before,
                    if expect_allowed {
                        "allowed"
                    } else {
                        "refused and recorded"
                    }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
