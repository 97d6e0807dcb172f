//! SPEC §4, row by row: each kind of action is recorded exactly when the settings say so, and
//! not otherwise. Every check counts the events of one operation before and after the action.

use serde_json::{Value, json};

use crate::common::*;

struct Matrix {
    server: Server,
    admin: String,
    org: String,
}

impl Matrix {
    fn new() -> Matrix {
        let server = Server::start(&["--allow-private-targets"]);
        let admin = server.admin();
        let org = server.organization_id(&admin);
        Matrix { server, admin, org }
    }

    /// Instance settings: Start Auditing, Start Read Auditing, Audit user access.
    fn instance(&self, audit: bool, read: bool, user_access: bool) {
        let url = self.server.api(&format!("organizations({})", self.org));
        // Read auditing is only offered while auditing is on: order the changes so each holds.
        let steps = if audit {
            vec![
                json!({"isauditenabled": true}),
                json!({"isreadauditenabled": read, "isuseraccessauditenabled": user_access}),
            ]
        } else {
            vec![
                json!({"isreadauditenabled": false, "isuseraccessauditenabled": user_access}),
                json!({"isauditenabled": false}),
            ]
        };
        for body in steps {
            let response = send(client().patch(&url), &self.admin, Some(body));
            assert_eq!(response.status(), 204);
        }
    }

    /// Account's flags: Auditing, Retrieve record auditing, Retrieve multiple auditing.
    fn account(&self, audit: bool, retrieve: bool, multiple: bool) {
        self.server.set_entity_flags(
            &self.admin,
            "account",
            json!({
                "IsAuditEnabled": {"Value": audit},
                "IsRetrieveAuditEnabled": {"Value": retrieve},
                "IsRetrieveMultipleAuditEnabled": {"Value": multiple},
            }),
        );
        self.server.publish(&self.admin);
    }

    fn count(&self, operation: &str) -> usize {
        self.server
            .audit(&self.admin, &format!("operation={operation}"))
            .len()
    }

    /// How many `operation` events `action` adds.
    fn delta(&self, operation: &str, action: impl FnOnce()) -> usize {
        let before = self.count(operation);
        action();
        self.count(operation) - before
    }

    fn api(&self, path: &str) -> String {
        self.server.api(path)
    }

    fn create_account(&self) -> String {
        let response = send(
            client().post(self.api("accounts")),
            &self.admin,
            Some(json!({"name": "Matrix"})),
        );
        assert_eq!(response.status(), 204);
        entity_id(&response)
    }

    fn ok(&self, response: reqwest::blocking::Response) {
        assert!(response.status().is_success(), "{:?}", response.text());
    }
}

#[test]
fn record_changes_follow_instance_and_entity_auditing() {
    let m = Matrix::new();
    let user = m
        .server
        .add_user(&m.admin, "bo@contoso.test", "bo-password-1", "Basic User");
    for (audit, entity, expected) in [(true, true, 1), (true, false, 0), (false, true, 0)] {
        m.instance(audit, false, false);
        m.account(entity, false, false);
        let case = format!("instance {audit}, entity {entity}");
        let mut id = String::new();
        assert_eq!(
            m.delta("Create", || id = m.create_account()),
            expected,
            "create: {case}"
        );
        assert_eq!(
            m.delta("Update", || m.ok(send(
                client().patch(m.api(&format!("accounts({id})"))),
                &m.admin,
                Some(json!({"name": "Changed"}))
            ))),
            expected,
            "update: {case}"
        );
        let fresh = "6a1b2c3d-0000-4000-8000-0000000000".to_string()
            + &format!("{:02}", u8::from(audit) * 2 + u8::from(entity));
        assert_eq!(
            m.delta("Upsert", || m.ok(send(
                client().patch(m.api(&format!("accounts({fresh})"))),
                &m.admin,
                Some(json!({"name": "Upserted"}))
            ))),
            expected,
            "upsert: {case}"
        );
        assert_eq!(
            m.delta("Assign", || m.ok(send(
                client().patch(m.api(&format!("accounts({id})"))),
                &m.admin,
                Some(json!({"ownerid@odata.bind": format!("/systemusers({user})")}))
            ))),
            expected,
            "assign: {case}"
        );
        assert_eq!(
            m.delta("Share", || m.ok(send(
                client().post(m.api("GrantAccess")),
                &m.admin,
                Some(json!({"Target": {"@odata.id": format!("accounts({id})")}, "PrincipalAccess": {"Principal": {"@odata.id": format!("systemusers({user})")}, "AccessMask": "ReadAccess"}}))
            ))),
            expected,
            "share: {case}"
        );
        assert_eq!(
            m.delta("Delete", || m.ok(send(
                client().delete(m.api(&format!("accounts({id})"))),
                &m.admin,
                None
            ))),
            expected,
            "delete: {case}"
        );
    }
}

#[test]
fn reads_follow_read_auditing_and_the_entity_flags() {
    let m = Matrix::new();
    m.instance(true, true, false);
    m.account(true, true, true);
    let id = m.create_account();
    let retrieve = || {
        m.ok(send(
            client().get(m.api(&format!("accounts({id})"))),
            &m.admin,
            None,
        ))
    };
    let list = || m.ok(send(client().get(m.api("accounts")), &m.admin, None));
    assert_eq!(m.delta("Retrieve", retrieve), 1, "everything on");
    assert_eq!(m.delta("RetrieveMultiple", list), 1, "everything on");
    // Each condition off in turn: nothing is recorded.
    for (instance, read, entity, retrieve_flag, multiple_flag, case) in [
        (true, false, true, true, true, "read auditing off"),
        (false, false, true, true, true, "auditing off"),
        (true, true, false, true, true, "entity auditing off"),
        (true, true, true, false, false, "retrieve flags off"),
    ] {
        m.instance(instance, read, false);
        m.account(entity, retrieve_flag, multiple_flag);
        assert_eq!(m.delta("Retrieve", retrieve), 0, "{case}");
        assert_eq!(m.delta("RetrieveMultiple", list), 0, "{case}");
    }
    // Retrieve and retrieve multiple are switched apart.
    m.instance(true, true, false);
    m.account(true, true, false);
    assert_eq!(m.delta("Retrieve", retrieve), 1);
    assert_eq!(m.delta("RetrieveMultiple", list), 0);
}

#[test]
fn exports_follow_entity_auditing_and_bulk_work_follows_the_instance() {
    let m = Matrix::new();
    let export = || {
        m.ok(send(
            client().post(m.api("ExportToExcel")),
            &m.admin,
            Some(json!({"EntitySetName": "accounts", "Format": "csv"})),
        ))
    };
    let import = || {
        m.ok(send(
            client().post(m.api("ImportRecords")),
            &m.admin,
            Some(json!({"EntitySetName": "accounts", "Content": "name\nImported\n"})),
        ))
    };
    let bulk = || {
        m.ok(send(
            client().post(m.api("BulkDelete")),
            &m.admin,
            Some(json!({"EntitySetName": "accounts", "Filter": "name eq 'Imported'"})),
        ))
    };
    for (audit, entity, export_expected, bulk_expected) in
        [(true, true, 1, 1), (true, false, 0, 1), (false, true, 0, 0)]
    {
        m.instance(audit, false, false);
        m.account(entity, false, false);
        let case = format!("instance {audit}, entity {entity}");
        assert_eq!(
            m.delta("ExportToExcel", export),
            export_expected,
            "export: {case}"
        );
        assert_eq!(
            m.delta("ImportRecords", import),
            bulk_expected,
            "import: {case}"
        );
        assert_eq!(
            m.delta("BulkDelete", bulk),
            bulk_expected,
            "bulk delete: {case}"
        );
    }
}

#[test]
fn sign_in_sign_out_and_access_follow_user_access_auditing() {
    let m = Matrix::new();
    m.server
        .add_user(&m.admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let session = |m: &Matrix| {
        let token = m.server.token("bo@contoso.test", "bo-password-1");
        m.ok(send(client().get(m.api("accounts")), &token, None));
        m.ok(send(
            client().post(format!("{}/oauth2/logout", m.server.base)),
            &token,
            None,
        ));
    };
    m.instance(true, false, false);
    let before = (
        m.count("SignIn"),
        m.count("SignOut"),
        m.count("UserAccessViaSdk"),
    );
    session(&m);
    assert_eq!(
        (
            m.count("SignIn"),
            m.count("SignOut"),
            m.count("UserAccessViaSdk")
        ),
        before,
        "user access auditing off: nothing"
    );
    m.instance(true, false, true);
    let before = (
        m.count("SignIn"),
        m.count("SignOut"),
        m.count("UserAccessViaSdk"),
    );
    session(&m);
    assert_eq!(
        (
            m.count("SignIn"),
            m.count("SignOut"),
            m.count("UserAccessViaSdk")
        ),
        (before.0 + 1, before.1 + 1, before.2 + 1),
        "user access auditing on: sign-in, access, sign-out"
    );
    // Access is recorded once per interval, not per request.
    let token = m.server.token("bo@contoso.test", "bo-password-1");
    assert_eq!(
        m.delta("UserAccessViaSdk", || {
            for _ in 0..3 {
                m.ok(send(client().get(m.api("accounts")), &token, None));
            }
        }),
        0,
        "bo's access is recorded already in this interval"
    );
    // With user access auditing on, even with instance auditing off (it is its own switch).
    m.instance(false, false, true);
    assert_eq!(
        m.delta("SignIn", || {
            m.server.token("bo@contoso.test", "bo-password-1");
        }),
        1
    );
}

#[test]
fn admin_support_and_refused_actions_are_recorded_whatever_the_settings() {
    let m = Matrix::new();
    // Everything off that can be.
    m.instance(false, false, false);
    m.account(false, false, false);
    for entity in [
        "systemuser",
        "team",
        "role",
        "workflow",
        "sdkmessageprocessingstep",
    ] {
        m.server.set_entity_flags(
            &m.admin,
            entity,
            json!({"IsAuditEnabled": {"Value": false}}),
        );
    }
    assert_eq!(
        m.delta("PublishAllCustomizations", || m.server.publish(&m.admin)),
        1
    );
    let post = |path: &str, body: Value| send(client().post(m.api(path)), &m.admin, Some(body));
    let admin_post = |path: &str, body: Value| {
        send(
            client().post(format!("{}/api/admin/{path}", m.server.base)),
            &m.admin,
            Some(body),
        )
    };
    assert_eq!(
        m.delta("CreateUser", || m.ok(post(
            "systemusers",
            json!({"domainname": "cy@contoso.test", "password": "cy-password-1"})
        ))),
        1
    );
    let mut team = String::new();
    assert_eq!(
        m.delta("Create", || team =
            entity_id(&post("teams", json!({"name": "T"})))),
        1,
        "a team change"
    );
    let mut role = String::new();
    assert_eq!(
        m.delta("Create", || role =
            entity_id(&post("roles", json!({"name": "R"})))),
        1,
        "a role change"
    );
    assert_eq!(
        m.delta("AssignRole", || m.ok(post(
            &format!("teams({team})/teamroles_association/$ref"),
            json!({"@odata.id": m.api(&format!("roles({role})"))})
        ))),
        1
    );
    assert_eq!(
        m.delta("AddPrivilegesRole", || m.ok(post(
            &format!("roles({role})/AddPrivilegesRole"),
            json!({"Privileges": [{"PrivilegeName": "prvReadaccount"}]})
        ))),
        1
    );
    let mut process = String::new();
    m.delta("Create", || process = entity_id(&post("workflows", json!({"name": "P", "primaryentity": "account", "triggeron": "create", "actiontype": "webhook", "webhookurl": "http://127.0.0.1:9/"}))));
    assert_eq!(
        m.delta("ActivateProcess", || m.ok(send(
            client().patch(m.api(&format!("workflows({process})"))),
            &m.admin,
            Some(json!({"statecode": 1}))
        ))),
        1
    );
    assert_eq!(
        m.delta("CreateAttribute", || m.ok(post(
            "EntityDefinitions(LogicalName='account')/Attributes",
            json!({"AttributeType": "Integer", "SchemaName": "new_score"})
        ))),
        1
    );
    m.server.publish(&m.admin);
    assert_eq!(
        m.delta("DeleteAttribute", || m.ok(send(
            client().delete(m.api(
                "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='new_score')"
            )),
            &m.admin,
            None
        ))),
        1
    );
    let solution = json!({"UniqueName": "mx_sol", "Publisher": {"Prefix": "mx"}, "Entities": [{"SchemaName": "mx_thing"}]});
    let mut solution_id = String::new();
    assert_eq!(
        m.delta("ImportSolution", || solution_id =
            post("ImportSolution", json!({"CustomizationFile": solution}))
                .json::<Value>()
                .unwrap()["SolutionId"]
                .as_str()
                .unwrap()
                .to_string()),
        1
    );
    assert_eq!(
        m.delta("RemoveSolution", || m.ok(send(
            client().delete(m.api(&format!("solutions({solution_id})"))),
            &m.admin,
            None
        ))),
        1
    );
    assert_eq!(
        m.delta("UpdateAuditSettings", || m.instance(true, false, false)),
        1,
        "auditing turned on"
    );
    assert_eq!(
        m.delta("UpdateAuditSettings", || m.instance(false, false, false)),
        1,
        "and off again"
    );
    assert_eq!(
        m.delta("SetRetention", || m.ok(send(
            client().put(format!("{}/api/audit/retention", m.server.base)),
            &m.admin,
            Some(json!({"defaultDays": 120}))
        ))),
        1
    );
    assert_eq!(
        m.delta("SetAuditLogSearch", || m.ok(send(
            client().put(format!("{}/api/audit/settings", m.server.base)),
            &m.admin,
            Some(json!({"searchEnabled": true}))
        ))),
        1
    );
    assert_eq!(
        m.delta("CreateInstance", || m
            .ok(admin_post("instances", json!({"name": "other"})))),
        1
    );
    assert_eq!(
        m.delta("ConvertTrialToPaid", || m
            .ok(admin_post("instances/other/convert", json!({})))),
        1
    );
    let mut backup = String::new();
    assert_eq!(
        m.delta("BackupInstance", || backup =
            admin_post("instances/other/backups", json!({}))
                .json::<Value>()
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()),
        1
    );
    assert_eq!(
        m.delta("RestoreInstance", || m.ok(admin_post(
            "instances/other/restore",
            json!({"backupId": backup})
        ))),
        1
    );
    assert_eq!(
        m.delta("DeleteInstance", || m.ok(send(
            client().delete(format!("{}/api/admin/instances/other", m.server.base)),
            &m.admin,
            None
        ))),
        1
    );
    assert_eq!(
        m.delta("AccessAdminCenter", || {
            get_json(&format!("{}/api/admin/instances", m.server.base), &m.admin);
        }),
        1
    );
    assert_eq!(
        m.delta("GrantSupportAccess", || m.ok(admin_post(
            "support/engineers",
            json!({"upn": "eng@support.test", "password": "engineer-password-1"})
        ))),
        1
    );
    let engineer = m.server.token("eng@support.test", "engineer-password-1");
    let engineer_id = get_json(
        &format!("{}/api/admin/support/engineers", m.server.base),
        &m.admin,
    )["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        m.delta("ApproveSupportAccess", || m.ok(admin_post(
            "support/grants",
            json!({"engineerId": engineer_id, "ticket": "T-1", "instance": "main", "hours": 2})
        ))),
        1
    );
    assert_eq!(
        m.delta("AccessInternalTool", || m.ok(send(
            client().post(format!("{}/api/support/access", m.server.base)),
            &engineer,
            Some(json!({"ticket": "T-1"}))
        ))),
        1
    );
    assert_eq!(
        m.delta("BackendCommand", || m.ok(send(
            client().post(format!("{}/api/support/backend", m.server.base)),
            &engineer,
            Some(json!({"command": "log-status"}))
        ))),
        1
    );
    // A support engineer's record work is recorded whatever the settings say (they are all
    // off here): every read, list and change.
    let account = m.create_account();
    assert_eq!(
        m.delta("RetrieveMultiple", || m.ok(send(
            client().get(m.api("accounts?$select=name")),
            &engineer,
            None
        ))),
        1
    );
    assert_eq!(
        m.delta("Retrieve", || m.ok(send(
            client().get(m.api(&format!("accounts({account})"))),
            &engineer,
            None
        ))),
        1
    );
    let changed = m
        .server
        .audit(&m.admin, &format!("recordId={account}&operation=Update"));
    assert!(changed.is_empty());
    m.ok(send(
        client().patch(m.api(&format!("accounts({account})"))),
        &engineer,
        Some(json!({"name": "Changed by support"})),
    ));
    let changed = m
        .server
        .audit(&m.admin, &format!("recordId={account}&operation=Update"));
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["Origin"], "SupportTool");
    assert_eq!(changed[0]["Changes"][0]["New"], "Changed by support");
    // Refusals are always recorded.
    m.server
        .add_user(&m.admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = m.server.token("bo@contoso.test", "bo-password-1");
    let before = m.server.audit(&m.admin, "status=Denied").len();
    assert_eq!(
        send(
            client().post(m.api("workflows")),
            &bo,
            Some(json!({"name": "x"}))
        )
        .status(),
        403
    );
    assert_eq!(
        send(
            client().get(format!("{}/api/audit/records", m.server.base)),
            &bo,
            None
        )
        .status(),
        403
    );
    assert_eq!(m.server.audit(&m.admin, "status=Denied").len(), before + 2);
    let failed = m.server.audit(&m.admin, "status=Failed").len();
    assert_eq!(
        send(
            client().get(m.api("accounts?$filter=nosuch eq 1")),
            &m.admin,
            None
        )
        .status(),
        400
    );
    assert_eq!(
        m.server.audit(&m.admin, "status=Failed").len(),
        failed + 1,
        "failed requests too"
    );
}

#[test]
fn a_users_access_is_recorded_once_an_interval_even_across_a_restart() {
    let mut server = Server::start(&[]);
    let admin = server.admin();
    server.set_org(&admin, json!({"isuseraccessauditenabled": true}));
    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let accesses = |server: &Server, admin: &str| {
        server
            .audit(admin, "operation=UserAccessViaSdk&user=bo@contoso.test")
            .len()
    };
    let list = |server: &Server| {
        let listed = send(client().get(server.api("accounts")), &bo, None);
        assert_eq!(listed.status(), 200);
    };
    list(&server);
    assert_eq!(accesses(&server, &admin), 1);
    assert!(server.stop().success());
    let data = server.data_dir.clone();
    let restarted = Server::start_in(&data, &[]);
    let admin = restarted.admin();
    list(&restarted);
    assert_eq!(
        accesses(&restarted, &admin),
        1,
        "the restarted server knows bo's access was recorded in this interval"
    );
    // With no interval, every access is recorded.
    restarted.set_org(&admin, json!({"useraccessauditinginterval": 0}));
    list(&restarted);
    assert_eq!(accesses(&restarted, &admin), 2);
}
