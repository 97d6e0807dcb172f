//! A record's change history, Dataverse's Audit History:
//! `GET RetrieveRecordChangeHistory(Target=@target[,PagingInfo=@paging])` with
//! `@target={"@odata.id":"accounts(<id>)"}` and
//! `@paging={"PageNumber":1,"Count":50,"ReturnTotalRecordCount":true,"PagingCookie":…}`.
//!
//! It is read from the audit log: the instance's events of that record whose operation changed
//! it (created, updated, upserted, deleted, assigned, shared, unshared, or a process that set a
//! field; a user's roles, a team's roles and members, a role's privileges, the organization's
//! audit settings) and a user's access to the instance, newest first, each as Dataverse's
//! `AttributeAuditDetail` (old and new values of the audited attributes that changed),
//! `ShareAuditDetail`, `RelationshipAuditDetail`, `RolePrivilegeAuditDetail` or
//! `UserAccessAuditDetail`, with its `AuditRecord` (who, when, which action). Reads, lists and exports are not changes and are not shown: who saw a record
//! is the compliance console's to tell (the tenant's audit roles), as Dataverse keeps reads out
//! of a record's audit history.
//!
//! `RetrieveAttributeChangeHistory(Target=…,AttributeLogicalName='name'[,PagingInfo=…])` is the
//! same, narrowed to the changes that changed one attribute.
//!
//! The caller needs `prvReadRecordAuditHistory` ("View Audit History") and Read on the record
//! itself (a role's or a share's), the record must exist, and audit log search must be on
//! (turning it off stops every way of reading the trail). A support engineer, who acts as
//! System Administrator in an instance the tenant let them into, is refused: the trail is the
//! tenant's. Reading it is a read of the trail and of the record's past values, so it is always
//! recorded (`RetrieveRecordChangeHistory`, the record's id in `RecordIds`) before the answer.

use axum::response::Response;
use custos_audit::{AuditEvent, Operation, SearchQuery};
use custos_records::{EntityDef, Privilege};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::annotations::{FORMATTED, Presentation};
use super::sharing::{named_record, require_on_record};
use super::{WebRequest, parameter_json};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

/// The function's name in a path.
pub(super) const FUNCTION: &str = "RetrieveRecordChangeHistory";
/// One attribute's history: the record's changes that changed it.
pub(super) const ATTRIBUTE_FUNCTION: &str = "RetrieveAttributeChangeHistory";
/// Events read at a time while an attribute's history looks for its changes.
const SCAN_CHUNK: usize = 500;

/// The operations whose events changed the record they name first: its values, its owner, its
/// shares (a user's too: created, disabled, enabled, deleted) — and who holds which role and
/// which team has which members (Dataverse's associations, in the user's or team's history).
pub(super) const CHANGES: [Operation; 20] = [
    Operation::Create,
    Operation::Update,
    Operation::Upsert,
    Operation::Delete,
    Operation::Assign,
    Operation::Share,
    Operation::ModifyShare,
    Operation::Unshare,
    Operation::RunProcess,
    Operation::AssignRole,
    Operation::RemoveRole,
    Operation::AddTeamMember,
    Operation::RemoveTeamMember,
    Operation::CreateUser,
    Operation::DisableUser,
    Operation::EnableUser,
    Operation::DeleteUser,
    Operation::AddPrivilegesRole,
    Operation::ReplacePrivilegesRole,
    Operation::RemovePrivilegeRole,
];

/// A user's access to the instance, recorded once an interval when the instance audits user
/// access: Dataverse's `audit.operation` 4, a row of the user's own `systemuser` record.
pub(super) const ACCESS: [Operation; 2] =
    [Operation::UserAccessViaWeb, Operation::UserAccessViaSdk];

/// A change of the instance's audit settings: a change of its `organization` record, in that
/// record's history (Dataverse's action 104). A change of an entity's or attribute's audit
/// flags names no record, and stays with the compliance console.
pub(super) const SETTINGS: Operation = Operation::UpdateAuditSettings;

/// The largest page (`PagingInfo.Count`), and the page when none is asked for: Dataverse's.
const COUNT_MAX: u64 = 5_000;
/// The most events a request walks past to reach a page asked for by number without a cookie.
const WALK_MAX: u64 = 50_000;

/// What `PagingInfo` asks for.
#[derive(Debug, PartialEq)]
struct Paging {
    page: u64,
    count: u64,
    total: bool,
    /// Where the page asked for begins: a cookie this function answered before.
    cookie: Option<u64>,
}

/// The `Name=value` parameters between a function's parentheses, split at commas outside
/// quotes, braces and brackets.
fn parameters(function: &str, text: &str) -> Result<Vec<(String, String)>, AppError> {
    let allowed: &[&str] = if function == ATTRIBUTE_FUNCTION {
        &["Target", "AttributeLogicalName", "PagingInfo"]
    } else {
        &["Target", "PagingInfo"]
    };
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    let mut out: Vec<(String, String)> = Vec::new();
    for part in parts {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            AppError::bad_request(format!(
                "{function} takes Name=value parameters, (Target=@target) with @target={{\"@odata.id\":\"accounts(<id>)\"}}; got '{part}'"
            ))
        })?;
        let name = name.trim();
        if !allowed.contains(&name) {
            return Err(AppError::bad_request(format!(
                "{function} has no parameter '{name}' (its parameters are {})",
                allowed.join(", ")
            )));
        }
        if out.iter().any(|(seen, _)| seen == name) {
            return Err(AppError::bad_request(format!(
                "{function} is given {name} twice"
            )));
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// A parameter's value as JSON, written in the path or in the parameter alias it names.
fn json_value(request: &WebRequest, name: &str, text: &str) -> Result<Json, AppError> {
    let text = request.parameter(text)?;
    parameter_json(text)
        .ok_or_else(|| AppError::bad_request(format!("{name} is not a JSON object: {text}")))
}

/// The entity and id a `Target` names: `{"@odata.id": "accounts(<id>)"}` — or, as an
/// entity-typed parameter may be written, by its type and key:
/// `{"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": "<id>"}`.
fn target(request: &WebRequest, value: &Json) -> Result<(EntityDef, Uuid), AppError> {
    let refused = || {
        AppError::bad_request(
            "Target names one record: {\"@odata.id\": \"accounts(<id>)\"}, or {\"@odata.type\": \"Microsoft.Dynamics.CRM.account\", \"accountid\": \"<id>\"}",
        )
    };
    let object = value
        .as_object()
        .filter(|o| o.len() <= 2)
        .ok_or_else(refused)?;
    if let (1, Some(text)) = (object.len(), object.get("@odata.id").and_then(Json::as_str)) {
        return named_record(request, text);
    }
    let type_name = object
        .get("@odata.type")
        .and_then(Json::as_str)
        .ok_or_else(refused)?;
    let name = type_name
        .trim_start_matches('#')
        .strip_prefix("Microsoft.Dynamics.CRM.")
        .ok_or_else(refused)?;
    let entity = request
        .instance
        .store
        .catalog()
        .entity(name)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity '{name}' does not exist")))?;
    let id = object
        .get(&entity.primary_id())
        .and_then(Json::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(refused)?;
    Ok((entity, id))
}

/// Reads `PagingInfo`; without it, the first page of the most a page holds.
fn paging(value: Option<&Json>) -> Result<Paging, AppError> {
    let mut paging = Paging {
        page: 1,
        count: COUNT_MAX,
        total: false,
        cookie: None,
    };
    let Some(value) = value else {
        return Ok(paging);
    };
    let object = value
        .as_object()
        .ok_or_else(|| AppError::bad_request("PagingInfo is a JSON object"))?;
    let number = |name: &str, value: &Json| {
        value.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            AppError::bad_request(format!("PagingInfo.{name} is a whole number from 1"))
        })
    };
    for (name, value) in object {
        match name.as_str() {
            "PageNumber" => paging.page = number(name, value)?,
            "Count" => paging.count = number(name, value)?,
            "ReturnTotalRecordCount" => {
                paging.total = value.as_bool().ok_or_else(|| {
                    AppError::bad_request("PagingInfo.ReturnTotalRecordCount is true or false")
                })?
            }
            "PagingCookie" => {
                paging.cookie = match value {
                    Json::Null => None,
                    Json::String(text) if text.is_empty() => None,
                    Json::String(text) => Some(text.parse().map_err(|_| {
                        AppError::bad_request(
                            "PagingInfo.PagingCookie is one this function answered (or null)",
                        )
                    })?),
                    _ => {
                        return Err(AppError::bad_request(
                            "PagingInfo.PagingCookie is a string or null",
                        ));
                    }
                }
            }
            other => {
                return Err(AppError::bad_request(format!(
                    "PagingInfo has no member '{other}' (PageNumber, Count, ReturnTotalRecordCount, PagingCookie)"
                )));
            }
        }
    }
    if paging.count > COUNT_MAX {
        return Err(AppError::bad_request(format!(
            "PagingInfo.Count is at most {COUNT_MAX}"
        )));
    }
    if paging.cookie.is_none() && (paging.page - 1).saturating_mul(paging.count) > WALK_MAX {
        return Err(AppError::bad_request(format!(
            "a page past the first {WALK_MAX} changes is reached with the PagingCookie of the page before it"
        )));
    }
    Ok(paging)
}

/// Dataverse's `audit.operation` and `audit.action` of a change event, with their labels.
fn codes(event: &AuditEvent) -> ((i64, &'static str), (i64, &'static str)) {
    codes_of(
        Operation::parse(&event.operation).unwrap_or(Operation::Update),
        &event.entity_name,
    )
}

/// Dataverse's `audit.operation` and `audit.action` of `operation` on an `entity` record (a role
/// given or taken is told apart by its holder's entity), with their labels; `audits` reads its
/// `$filter`'s codes back through it.
pub(super) fn codes_of(
    operation: Operation,
    entity: &str,
) -> ((i64, &'static str), (i64, &'static str)) {
    const CREATE: (i64, &str) = (1, "Create");
    const UPDATE: (i64, &str) = (2, "Update");
    const DELETE: (i64, &str) = (3, "Delete");
    const ACCESS: (i64, &str) = (4, "Access");
    match operation {
        // An upsert is recorded as one when it made the record.
        Operation::Create | Operation::Upsert | Operation::CreateUser => (CREATE, CREATE),
        Operation::DisableUser => (UPDATE, (5, "Deactivate")),
        Operation::EnableUser => (UPDATE, (4, "Activate")),
        Operation::UserAccessViaWeb => (ACCESS, (64, "User Access via Web")),
        Operation::UserAccessViaSdk => (ACCESS, (65, "User Access via Web Services")),
        Operation::Delete | Operation::DeleteUser => (DELETE, DELETE),
        Operation::Assign => (UPDATE, (13, "Assign")),
        Operation::Share => (UPDATE, (14, "Share")),
        Operation::ModifyShare => (UPDATE, (48, "Modify Share")),
        Operation::Unshare => (UPDATE, (49, "Unshare")),
        Operation::AssignRole if entity == "team" => (UPDATE, (53, "Assign Role To Team")),
        Operation::RemoveRole if entity == "team" => (UPDATE, (54, "Remove Role From Team")),
        Operation::AssignRole => (UPDATE, (55, "Assign Role To User")),
        Operation::RemoveRole => (UPDATE, (56, "Remove Role From User")),
        Operation::AddTeamMember => (UPDATE, (35, "Add Members")),
        Operation::RemoveTeamMember => (UPDATE, (36, "Remove Members")),
        Operation::AddPrivilegesRole => (UPDATE, (57, "Add Privileges To Role")),
        Operation::RemovePrivilegeRole => (UPDATE, (58, "Remove Privileges From Role")),
        Operation::ReplacePrivilegesRole => (UPDATE, (59, "Replace Privileges In Role")),
        Operation::UpdateAuditSettings => (UPDATE, (104, "Audit Change at Org Level")),
        _ => (UPDATE, UPDATE),
    }
}

/// Whether `event` is a user's access to the instance (Dataverse's `audit.operation` 4): a row
/// of the user's own `systemuser` record.
pub(super) fn is_access(event: &AuditEvent) -> bool {
    matches!(
        Operation::parse(&event.operation),
        Some(Operation::UserAccessViaWeb | Operation::UserAccessViaSdk)
    )
}

/// Whether `event` is a row of Dataverse's `audit` table here: a change of a record, a change of
/// the instance's audit settings, or a user's access — and it succeeded.
pub(super) fn is_row(event: &AuditEvent) -> bool {
    let Some(operation) = Operation::parse(&event.operation) else {
        return false;
    };
    let settings = operation == SETTINGS
        && event.entity_name == custos_records::ORGANIZATION_ENTITY
        && !event.record_ids.is_empty();
    event.result_status == custos_audit::ResultStatus::Succeeded
        && (CHANGES.contains(&operation) || ACCESS.contains(&operation) || settings)
}

/// The `AuditRecord` of an event: Dataverse's `audit` row, formatted values when asked for.
pub(super) fn audit_record(event: &AuditEvent, id: Uuid, formatted: bool) -> Json {
    let ((operation, operation_label), (action, action_label)) = codes(event);
    let mut record = Map::new();
    record.insert("@odata.type".into(), json!("#Microsoft.Dynamics.CRM.audit"));
    record.insert("auditid".into(), json!(event.id));
    record.insert(
        "createdon".into(),
        json!(custos_audit::format_creation_time(event.creation_time_us)),
    );
    record.insert("operation".into(), json!(operation));
    record.insert("action".into(), json!(action));
    let entity = if is_access(event) {
        "systemuser"
    } else {
        event.entity_name.as_str()
    };
    record.insert("objecttypecode".into(), json!(entity));
    record.insert("_objectid_value".into(), json!(id));
    record.insert(
        "_userid_value".into(),
        Uuid::parse_str(&event.user_id).map_or(Json::Null, |id| json!(id)),
    );
    record.insert(
        "_callinguserid_value".into(),
        Uuid::parse_str(&event.caller_id).map_or(Json::Null, |id| json!(id)),
    );
    if formatted {
        record.insert(format!("operation@{FORMATTED}"), json!(operation_label));
        record.insert(format!("action@{FORMATTED}"), json!(action_label));
        record.insert(format!("_userid_value@{FORMATTED}"), json!(event.user_upn));
    }
    Json::Object(record)
}

/// One event as Dataverse's `AuditDetail`: a share's principal and rights, or the changed
/// attributes' values before (`OldValue`) and after (`NewValue`) — a created record has no
/// values before, a deleted one none after; an attribute emptied is `null` after.
pub(super) fn detail(entity: &EntityDef, id: Uuid, event: &AuditEvent, formatted: bool) -> Json {
    let record = audit_record(event, id, formatted);
    if is_access(event) {
        return json!({
            "@odata.type": "#Microsoft.Dynamics.CRM.UserAccessAuditDetail",
            "AuditRecord": record,
            "AccessTime": custos_audit::format_creation_time(event.creation_time_us),
        });
    }
    let operation = Operation::parse(&event.operation);
    if let Some(relationship) = relationship(event) {
        return relationship.with(record);
    }
    if matches!(
        operation,
        Some(
            Operation::AddPrivilegesRole
                | Operation::ReplacePrivilegesRole
                | Operation::RemovePrivilegeRole
        )
    ) {
        return role_privileges(event, record);
    }
    if matches!(
        operation,
        Some(Operation::Share | Operation::ModifyShare | Operation::Unshare)
    ) {
        let details: Json = serde_json::from_str(&event.details).unwrap_or(Json::Null);
        // Rights as Dataverse's `AccessRights` flags read: "None" for none. An event recorded
        // before shares kept what was held before has no old rights (null).
        let rights = |name: &str| {
            details[name]
                .as_str()
                .map(|text| if text.is_empty() { "None" } else { text })
        };
        return json!({
            "@odata.type": "#Microsoft.Dynamics.CRM.ShareAuditDetail",
            "AuditRecord": record,
            "Principal": {
                "@odata.type": "#Microsoft.Dynamics.CRM.systemuser",
                "systemuserid": details["PrincipalId"],
            },
            "OldPrivileges": rights("PreviousAccessMask"),
            "NewPrivileges": rights("AccessMask").unwrap_or("None"),
        });
    }
    let entity_type = json!(format!("#Microsoft.Dynamics.CRM.{}", entity.logical_name));
    let (mut old, mut new) = (Map::new(), Map::new());
    old.insert("@odata.type".into(), entity_type.clone());
    new.insert("@odata.type".into(), entity_type);
    let value = |text: &Option<String>| {
        text.as_deref()
            .map_or(Json::Null, |t| serde_json::from_str(t).unwrap_or(json!(t)))
    };
    let (before, after) = match codes(event).1.0 {
        1 => (false, true),
        3 => (true, false),
        _ => (true, true),
    };
    for change in &event.changes {
        if before {
            old.insert(change.attribute.clone(), value(&change.old));
        }
        if after {
            new.insert(change.attribute.clone(), value(&change.new));
        }
    }
    json!({
        "@odata.type": "#Microsoft.Dynamics.CRM.AttributeAuditDetail",
        "AuditRecord": record,
        "OldValue": old,
        "NewValue": new,
        "DeletedAttributes": {"Count": 0, "Keys": [], "Values": []},
        "InvalidNewValueAttributes": [],
        "LocLabelLanguageCode": 0,
    })
}

/// A role's privileges changed, as Dataverse's `RolePrivilegeAuditDetail`: the privileges it
/// held before and after, from the event's change of `privileges`. A custom role here grants
/// across the instance, so every privilege's `Depth` is `Global`.
fn role_privileges(event: &AuditEvent, record: Json) -> Json {
    let held = |side: Option<&String>| -> Vec<Json> {
        let names: Vec<String> = side
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        names
            .into_iter()
            .map(|name| json!({"Depth": "Global", "PrivilegeName": name}))
            .collect()
    };
    let change = event.changes.iter().find(|c| c.attribute == "privileges");
    json!({
        "@odata.type": "#Microsoft.Dynamics.CRM.RolePrivilegeAuditDetail",
        "AuditRecord": record,
        "OldRolePrivileges": held(change.and_then(|c| c.old.as_ref())),
        "NewRolePrivileges": held(change.and_then(|c| c.new.as_ref())),
        "InvalidNewPrivileges": [],
    })
}

/// A role given or taken, a member added or taken away: the relationship and the record on its
/// other side, as the event's details name them.
struct Relationship {
    name: &'static str,
    entity: &'static str,
    key: &'static str,
    id: Json,
    label: (&'static str, Json),
}

impl Relationship {
    /// Dataverse's `RelationshipAuditDetail` of the change, around its `AuditRecord`.
    fn with(self, record: Json) -> Json {
        let mut target = Map::new();
        target.insert(
            "@odata.type".into(),
            json!(format!("#Microsoft.Dynamics.CRM.{}", self.entity)),
        );
        target.insert(self.key.into(), self.id);
        target.insert(self.label.0.into(), self.label.1);
        json!({
            "@odata.type": "#Microsoft.Dynamics.CRM.RelationshipAuditDetail",
            "AuditRecord": record,
            "RelationshipName": self.name,
            "TargetRecords": [target],
        })
    }
}

/// The relationship a role or membership event changed, read from its details.
fn relationship(event: &AuditEvent) -> Option<Relationship> {
    let details: Json = serde_json::from_str(&event.details).ok()?;
    let role = |name: &'static str| Relationship {
        name,
        entity: "role",
        key: "roleid",
        id: details["RoleId"].clone(),
        label: ("name", details["RoleName"].clone()),
    };
    match Operation::parse(&event.operation)? {
        Operation::AssignRole | Operation::RemoveRole if event.entity_name == "team" => {
            Some(role("teamroles_association"))
        }
        Operation::AssignRole | Operation::RemoveRole => Some(role("systemuserroles_association")),
        Operation::AddTeamMember | Operation::RemoveTeamMember => Some(Relationship {
            name: "teammembership_association",
            entity: "systemuser",
            key: "systemuserid",
            id: details["UserId"].clone(),
            label: ("domainname", details["UserUpn"].clone()),
        }),
        _ => None,
    }
}

/// What the log answered for one page.
struct Found {
    events: Vec<AuditEvent>,
    next: Option<u64>,
    total: Option<u64>,
}

/// Refuses while audit log search is off: it stops every way of reading the trail, the Web
/// API's too. Reads the directory: call from blocking code.
pub(super) fn search_on(state: &custos_http::AppState) -> Result<(), AppError> {
    if state.audit_search_stored()? {
        return Ok(());
    }
    Err(AppError::new(
        ErrorCode::Conflict,
        "audit log search is turned off, and with it every way of reading the trail, the Web API's audit history and audits too; an Audit Manager can turn it on",
    ))
}

/// Refuses a support engineer: the trail is the tenant's, read by its own people. They reach
/// the records they were let in for, acting as System Administrator, but not their history.
pub(super) fn refuse_support(request: &WebRequest) -> Result<(), AppError> {
    if request.caller.user_type() == custos_audit::UserType::DcAdmin {
        return Err(AppError::forbidden(
            "a support engineer does not read the audit trail: it is the tenant's",
        ));
    }
    Ok(())
}

/// The searches whose events are record `id`'s history in `instance`: its changes — for the
/// instance's `organization` record, its audit settings' too — and, for a user, their access to
/// the instance, which names the user rather than a record in the log.
fn history_queries(instance: String, entity: String, id: Uuid, top: usize) -> Vec<SearchQuery> {
    let mut operations: Vec<String> = CHANGES.iter().map(|o| o.as_str().to_string()).collect();
    if entity == custos_records::ORGANIZATION_ENTITY {
        operations.push(SETTINGS.as_str().to_string());
    }
    let base = SearchQuery {
        start_us: 0,
        end_us: i64::MAX,
        instances: vec![instance],
        statuses: vec![custos_audit::ResultStatus::Succeeded],
        top,
        ..SearchQuery::default()
    };
    let access = (entity == "systemuser").then(|| SearchQuery {
        operations: ACCESS.iter().map(|o| o.as_str().to_string()).collect(),
        users: vec![id.to_string()],
        ..base.clone()
    });
    let changes = SearchQuery {
        operations,
        entities: vec![entity],
        record_ids: vec![id],
        ..base
    };
    std::iter::once(changes).chain(access).collect()
}

/// A page of several searches' events together, newest first, with their places in the log.
pub(super) struct Merged {
    pub(super) events: Vec<(u64, AuditEvent)>,
    /// Where the next page begins (after the last event: a position in the one log every
    /// search goes on from), when any of them has more.
    pub(super) next: Option<u64>,
}

/// One page of what `queries` find together: each one's page from `before_seq` on, and the
/// newest `top` of them.
pub(super) fn merged_page(
    log: &custos_audit::AuditLog,
    queries: &[SearchQuery],
    before_seq: Option<u64>,
    top: usize,
) -> Result<Merged, AppError> {
    let (mut events, mut more) = (Vec::new(), false);
    for query in queries {
        let found = log.search(&SearchQuery {
            before_seq,
            top,
            ..query.clone()
        })?;
        more |= found.next_before_seq.is_some();
        events.extend(found.events);
    }
    events.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    more |= events.len() > top;
    events.truncate(top);
    let next = events.last().map(|(seq, _)| *seq).filter(|_| more);
    Ok(Merged { events, next })
}

/// How many events `queries` find together (they never find the same one).
pub(super) fn merged_total(
    log: &custos_audit::AuditLog,
    queries: &[SearchQuery],
) -> Result<u64, AppError> {
    let mut total = 0;
    for query in queries {
        let whole = SearchQuery {
            before_seq: None,
            ..query.clone()
        };
        total += log.histogram(&whole, None)?.values().sum::<u64>();
    }
    Ok(total)
}

/// Reads the page `paging` asks for of the history of record `id` of `entity` in `instance` —
/// of its changes that changed `attribute` (a web name), when one is named.
fn read_page(
    state: &custos_http::AppState,
    instance: String,
    entity: String,
    id: Uuid,
    paging: &Paging,
    attribute: Option<&str>,
) -> Result<Found, AppError> {
    search_on(state)?;
    let queries = history_queries(instance, entity, id, paging.count as usize);
    if let Some(attribute) = attribute {
        // Only changes name attributes: the record's own search.
        let changes = queries.into_iter().next().expect("a record's changes");
        return read_attribute_page(state, changes, attribute, paging);
    }
    let log = &state.log;
    let total = paging
        .total
        .then(|| merged_total(log, &queries))
        .transpose()?;
    let top = paging.count as usize;
    let mut before_seq = paging.cookie;
    // A page asked for by number alone: walk past the ones before it.
    if paging.cookie.is_none() {
        for _ in 1..paging.page {
            match merged_page(log, &queries, before_seq, top)?.next {
                Some(next) => before_seq = Some(next),
                None => {
                    return Ok(Found {
                        events: Vec::new(),
                        next: None,
                        total,
                    });
                }
            }
        }
    }
    let page = merged_page(log, &queries, before_seq, top)?;
    Ok(Found {
        events: page.events.into_iter().map(|(_, event)| event).collect(),
        next: page.next,
        total,
    })
}

/// [`read_page`] of the changes that changed `attribute` (its web name): the record's changes
/// are read newest first, `SCAN_CHUNK` at a time, and those that did not change it passed over
/// — at most `WALK_MAX` events a request. A page cut short by that bound says there may be more
/// and continues (its cookie) where the reading stopped; the total is given only when the
/// whole history was read within it.
fn read_attribute_page(
    state: &custos_http::AppState,
    query: SearchQuery,
    attribute: &str,
    paging: &Paging,
) -> Result<Found, AppError> {
    let log = &state.log;
    let changed = |event: &AuditEvent| event.changes.iter().any(|c| c.attribute == attribute);
    let total = if paging.total {
        let mut all = SearchQuery {
            top: SCAN_CHUNK,
            ..query.clone()
        };
        let (mut read, mut matched) = (0u64, 0u64);
        loop {
            let chunk = log.search(&all)?;
            read += chunk.events.len() as u64;
            matched += chunk.events.iter().filter(|(_, e)| changed(e)).count() as u64;
            match chunk.next_before_seq {
                Some(next) if read < WALK_MAX => all.before_seq = Some(next),
                Some(_) => break None,
                None => break Some(matched),
            }
        }
    } else {
        None
    };
    let passed_over = match paging.cookie {
        Some(_) => 0,
        None => (paging.page - 1) * paging.count,
    };
    let mut reading = SearchQuery {
        top: SCAN_CHUNK,
        before_seq: paging.cookie,
        ..query
    };
    let (mut read, mut skipped) = (0u64, 0u64);
    let mut shown: Vec<(u64, AuditEvent)> = Vec::new();
    loop {
        let chunk = log.search(&reading)?;
        read += chunk.events.len() as u64;
        for (seq, event) in chunk.events {
            if !changed(&event) {
                continue;
            }
            if skipped < passed_over {
                skipped += 1;
                continue;
            }
            if shown.len() as u64 == paging.count {
                // One more than the page: there are more, after the last one shown.
                let next = shown.last().map(|(seq, _)| *seq);
                return Ok(Found {
                    events: shown.into_iter().map(|(_, e)| e).collect(),
                    next,
                    total,
                });
            }
            shown.push((seq, event));
        }
        match chunk.next_before_seq {
            Some(next) if read < WALK_MAX => reading.before_seq = Some(next),
            // The bound: continue from where the reading stopped.
            Some(next) => {
                return Ok(Found {
                    events: shown.into_iter().map(|(_, e)| e).collect(),
                    next: Some(next),
                    total,
                });
            }
            None => {
                return Ok(Found {
                    events: shown.into_iter().map(|(_, e)| e).collect(),
                    next: None,
                    total,
                });
            }
        }
    }
}

/// Answers `GET RetrieveRecordChangeHistory(…)` and `GET RetrieveAttributeChangeHistory(…)`
/// (`function`); `draft` is its `RetrieveRecordChangeHistory`.
pub(super) async fn change_history(
    request: WebRequest,
    draft: &mut EventDraft,
    function: &str,
    text: &str,
) -> Result<Response, AppError> {
    draft.query = format!("{function}({text})");
    let mut given = parameters(function, text)?;
    let mut take = |name: &str| {
        given
            .iter()
            .position(|(given, _)| given == name)
            .map(|i| given.remove(i).1)
    };
    let target_text = take("Target").ok_or_else(|| {
        AppError::bad_request(format!(
            "{function} needs Target: (Target=@target) with @target={{\"@odata.id\":\"accounts(<id>)\"}}"
        ))
    })?;
    let attribute_text = take("AttributeLogicalName");
    let paging_text = take("PagingInfo");
    let (entity, id) = target(&request, &json_value(&request, "Target", &target_text)?)?;
    draft.set_entity(&entity);
    draft.record_ids = vec![id];
    let attribute = match (function, attribute_text) {
        (ATTRIBUTE_FUNCTION, None) => {
            return Err(AppError::bad_request(format!(
                "{function} needs AttributeLogicalName: (Target=@target,AttributeLogicalName='name')"
            )));
        }
        (_, None) => None,
        (_, Some(text)) => {
            let text = request.parameter(&text)?;
            let name = text
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .unwrap_or(text);
            let attribute = entity.attribute(name).ok_or_else(|| {
                AppError::bad_request(format!(
                    "AttributeLogicalName '{name}' is not an attribute of '{}'",
                    entity.logical_name
                ))
            })?;
            Some(attribute.web_name())
        }
    };
    let paging_value = paging_text
        .map(|text| json_value(&request, "PagingInfo", &text))
        .transpose()?;
    let paging = paging(paging_value.as_ref())?;
    let mut recorded_parameters = format!("Target={}({id})", entity.set_name);
    if let Some(attribute) = &attribute {
        recorded_parameters.push_str(&format!(",AttributeLogicalName={attribute}"));
    }
    if let Some(paging_value) = &paging_value {
        recorded_parameters.push_str(&format!(",PagingInfo={paging_value}"));
    }
    draft.query = format!("{function}({recorded_parameters})");
    refuse_support(&request)?;
    request.require(Privilege::ReadRecordAuditHistory, &entity)?;
    require_on_record(&request, Privilege::Read, &entity, id)?;
    let store = request.instance.store.clone();
    let logical_name = entity.logical_name.clone();
    blocking(move || store.retrieve(&logical_name, id).map(drop)).await?;
    request.state.audit_caught_up().await?;
    let state = request.state.clone();
    let (instance, logical_name) = (request.instance.name.clone(), entity.logical_name.clone());
    let found = blocking(move || {
        read_page(
            &state,
            instance,
            logical_name,
            id,
            &paging,
            attribute.as_deref(),
        )
    })
    .await?;
    let presentation = Presentation::of(&request);
    let formatted = presentation.wants(FORMATTED);
    let details: Vec<Json> = found
        .events
        .iter()
        .map(|event| detail(&entity, id, event, formatted))
        .collect();
    let mut recorded = draft.clone();
    recorded.result_count = details.len() as u64;
    request.state.record(recorded).await?;
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#Microsoft.Dynamics.CRM.{function}Response",
            request.service_root
        )),
    );
    body.insert(
        "AuditDetailCollection".into(),
        json!({
            "MoreRecords": found.next.is_some(),
            "PagingCookie": found.next.map(|seq| seq.to_string()),
            "TotalRecordCount": found.total.map_or(-1, |total| total as i64),
            "AuditDetails": details,
        }),
    );
    Ok(super::records::presented(&presentation, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_split_outside_quotes_and_braces() {
        let given =
            parameters(FUNCTION, "Target=@t,PagingInfo={'PageNumber':1,'Count':2}").unwrap();
        assert_eq!(
            given,
            [
                ("Target".to_string(), "@t".to_string()),
                (
                    "PagingInfo".to_string(),
                    "{'PageNumber':1,'Count':2}".to_string()
                )
            ]
        );
        for bad in [
            "Target",
            "Target=@a,Target=@b",
            "Other=1",
            "Target=@a,",
            "=@a",
        ] {
            assert!(parameters(FUNCTION, bad).is_err(), "{bad}");
        }
        // An attribute's history takes the attribute too; a record's does not.
        let both = "Target=@t,AttributeLogicalName='name'";
        assert_eq!(parameters(ATTRIBUTE_FUNCTION, both).unwrap().len(), 2);
        assert!(parameters(FUNCTION, both).is_err());
    }

    #[test]
    fn paging_is_read_and_bounded() {
        assert_eq!(
            paging(None).unwrap(),
            Paging {
                page: 1,
                count: COUNT_MAX,
                total: false,
                cookie: None
            }
        );
        let asked = json!({"PageNumber": 3, "Count": 10, "ReturnTotalRecordCount": true, "PagingCookie": "42"});
        assert_eq!(
            paging(Some(&asked)).unwrap(),
            Paging {
                page: 3,
                count: 10,
                total: true,
                cookie: Some(42)
            }
        );
        for bad in [
            json!([]),
            json!({"PageNumber": 0}),
            json!({"Count": 5001}),
            json!({"Count": -1}),
            json!({"Count": 1.5}),
            json!({"PageNumber": "1"}),
            json!({"ReturnTotalRecordCount": 1}),
            json!({"PagingCookie": "x"}),
            json!({"PagingCookie": 3}),
            json!({"Other": 1}),
            json!({"PageNumber": 12, "Count": 5000}),
        ] {
            assert!(paging(Some(&bad)).is_err(), "{bad}");
        }
    }
}
