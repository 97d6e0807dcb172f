//! An audit record in the formats SIEMs read (SPEC §9): RFC 5424 syslog, ArcSight CEF, OCSF
//! and plain JSON. Pure functions of one event; the streams (`streams.rs`) frame and send them.
//!
//! - **RFC 5424**: facility 13 (log audit); severity informational for a success, warning for
//!   a failure, notice for a denial; the event's time with microseconds; APP-NAME `custos`;
//!   MSGID the operation; one structured-data element `custos@32473` (32473 is the private
//!   enterprise number RFC 5612 reserves for documentation: Custos has none of its own yet)
//!   with the fields a receiver filters on; MSG the record's canonical JSON after a BOM.
//! - **CEF**: `CEF:0|Custos|Custos|<version>|<operation>|<name>|<severity>|<extension>`, with
//!   `rt`, `act`, `suser`, `suid`, `src`, `requestClientApplication`, `outcome`,
//!   `externalId`, `cnt` and six labelled strings; the record ids of a long list are cut to the
//!   first 100 (`cn1` keeps the count) so a line stays within what receivers take; the full
//!   list is in the other formats and in the log.
//! - **OCSF 1.1**: sign-in and sign-out are Authentication (3002, Logon / Logoff), everything
//!   else API Activity (6003: Create, Read, Update, Delete or Other), with every field OCSF has
//!   no place for under `unmapped`.

use custos_audit::{AuditEvent, Operation, ResultStatus, UserType};
use serde_json::{Map, Value as Json, json};

/// The product's version in every format's header.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Syslog facility 13: log audit.
const FACILITY_LOG_AUDIT: u8 = 13;
/// The structured-data id of our element.
const SD_ID: &str = "custos@32473";
/// Record ids a CEF line carries at most.
const CEF_RECORD_IDS: usize = 100;
/// The OCSF schema version the records follow.
const OCSF_VERSION: &str = "1.1.0";

/// The RFC 5424 message of `event` (without framing), from `hostname` with process `procid`.
pub(crate) fn rfc5424(event: &AuditEvent, hostname: &str, procid: u32) -> String {
    rfc5424_with(
        event,
        hostname,
        procid,
        &format!("\u{feff}{}", canonical(event)),
    )
}

/// The RFC 5424 message that carries `event` as a CEF line (CEF over syslog).
pub(crate) fn cef_over_syslog(event: &AuditEvent, hostname: &str, procid: u32) -> String {
    rfc5424_with(event, hostname, procid, &cef(event))
}

fn canonical(event: &AuditEvent) -> String {
    custos_audit::event_value(event).to_string()
}

fn rfc5424_with(event: &AuditEvent, hostname: &str, procid: u32, msg: &str) -> String {
    let severity = match event.result_status {
        ResultStatus::Succeeded => 6,
        ResultStatus::Denied => 5,
        ResultStatus::Failed => 4,
    };
    let pri = FACILITY_LOG_AUDIT * 8 + severity;
    let params = [
        ("id", event.id.to_string()),
        ("tenant", event.tenant_id.to_string()),
        ("instance", event.instance.clone()),
        ("workload", event.workload.clone()),
        ("recordType", event.record_type.clone()),
        ("operation", event.operation.clone()),
        ("user", event.user_upn.clone()),
        ("userId", event.user_id.clone()),
        ("userType", event.user_type.as_str().to_string()),
        ("ip", event.client_ip.clone()),
        ("origin", event.origin.as_str().to_string()),
        ("status", event.result_status.as_str().to_string()),
        ("entity", event.entity_name.clone()),
        ("count", event.result_count.to_string()),
        ("correlationId", event.correlation_id.clone()),
    ];
    let mut sd = format!("[{SD_ID}");
    for (name, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
        sd.push_str(&format!(" {name}=\"{}\"", sd_value(value)));
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} custos {procid} {} {sd} {msg}",
        custos_audit::format_creation_time(event.creation_time_us),
        header_field(hostname, 255),
        header_field(&event.operation, 32),
    )
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped; control characters (which would break a line of a
/// file) become spaces.
fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A header field: printable US-ASCII, at most `max` characters, `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// The CEF line of `event`.
pub(crate) fn cef(event: &AuditEvent) -> String {
    let severity = match event.result_status {
        ResultStatus::Succeeded => 3,
        ResultStatus::Failed => 5,
        ResultStatus::Denied => 7,
    };
    let name = if event.entity_name.is_empty() {
        event.operation.clone()
    } else {
        format!("{} {}", event.operation, event.entity_name)
    };
    let ids: Vec<String> = event
        .record_ids
        .iter()
        .take(CEF_RECORD_IDS)
        .map(ToString::to_string)
        .collect();
    let mut extension = vec![
        ("rt", (event.creation_time_us / 1000).to_string()),
        ("externalId", event.id.to_string()),
        ("act", event.operation.clone()),
        ("outcome", event.result_status.as_str().to_string()),
        ("suser", event.user_upn.clone()),
        ("suid", event.user_id.clone()),
        ("requestClientApplication", event.user_agent.clone()),
        ("cnt", event.result_count.to_string()),
        ("cs1Label", "Instance".into()),
        ("cs1", event.instance.clone()),
        ("cs2Label", "Entity".into()),
        ("cs2", event.entity_name.clone()),
        ("cs3Label", "Origin".into()),
        ("cs3", event.origin.as_str().to_string()),
        ("cs4Label", "CorrelationId".into()),
        ("cs4", event.correlation_id.clone()),
        ("cs5Label", "RecordIds".into()),
        ("cs5", ids.join(",")),
        ("cs6Label", "Workload".into()),
        ("cs6", event.workload.clone()),
        ("cn1Label", "RecordIdCount".into()),
        ("cn1", event.record_ids.len().to_string()),
    ];
    if event.client_ip.parse::<std::net::IpAddr>().is_ok() {
        extension.push(("src", event.client_ip.clone()));
    }
    let extension: Vec<String> = extension
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect();
    format!(
        "CEF:0|Custos|Custos|{VERSION}|{}|{}|{severity}|{}",
        cef_header(&event.operation),
        cef_header(&name),
        extension.join(" ")
    )
}

/// A header field: `\` and `|` escaped, no line breaks.
fn cef_header(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// An extension value: `\` and `=` escaped, line breaks as `\n` / `\r`.
fn cef_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The OCSF record of `event`, as one line of JSON text. The `resources` of a list (one object
/// per record id, thousands of them) are written straight into the text rather than built as
/// JSON values: measured with `custos bench siem`, that took OCSF streams from about 13,000 to
/// the rate of the other formats.
pub(crate) fn ocsf(event: &AuditEvent) -> String {
    let mut text = ocsf_without_resources(event).to_string();
    if ocsf_class(event).0 == 3002 {
        return text;
    }
    let kind = Json::from(event.entity_name.as_str()).to_string();
    text.pop();
    text.push_str(",\"resources\":[");
    let mut buffer = uuid::Uuid::encode_buffer();
    for (i, id) in event.record_ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str("{\"uid\":\"");
        text.push_str(id.hyphenated().encode_lower(&mut buffer));
        text.push_str("\",\"type\":");
        text.push_str(&kind);
        text.push('}');
    }
    text.push_str("]}");
    text
}

/// The OCSF class, category and activity of `event`'s operation.
fn ocsf_class(event: &AuditEvent) -> (u32, &'static str, u32, &'static str, u32, &'static str) {
    let operation = Operation::parse(&event.operation);
    match operation {
        Some(Operation::SignIn) => (
            3002,
            "Authentication",
            3,
            "Identity & Access Management",
            1,
            "Logon",
        ),
        Some(Operation::SignOut) => (
            3002,
            "Authentication",
            3,
            "Identity & Access Management",
            2,
            "Logoff",
        ),
        _ => {
            let (id, name) = api_activity(operation);
            (6003, "API Activity", 6, "Application Activity", id, name)
        }
    }
}

/// The OCSF record of `event` but its `resources`, and the `unmapped` fields without record
/// ids (they are the resources).
fn ocsf_without_resources(event: &AuditEvent) -> Json {
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) =
        ocsf_class(event);
    let succeeded = event.result_status == ResultStatus::Succeeded;
    let time_ms = event.creation_time_us / 1000;
    let user = json!({
        "uid": event.user_id,
        "name": event.user_upn,
        "type_id": match event.user_type {
            UserType::Regular => 1,
            UserType::Admin | UserType::DcAdmin => 2,
            UserType::System | UserType::Application | UserType::ServicePrincipal => 3,
        },
    });
    let mut out = Map::new();
    let mut put = |name: &str, value: Json| {
        out.insert(name.to_string(), value);
    };
    put("class_uid", json!(class_uid));
    put("class_name", json!(class_name));
    put("category_uid", json!(category_uid));
    put("category_name", json!(category_name));
    put("activity_id", json!(activity_id));
    put("activity_name", json!(activity_name));
    put("type_uid", json!(class_uid * 100 + activity_id));
    put("type_name", json!(format!("{class_name}: {activity_name}")));
    put("time", json!(time_ms));
    put("severity_id", json!(1));
    put("severity", json!("Informational"));
    put("status_id", json!(if succeeded { 1 } else { 2 }));
    put(
        "status",
        json!(if succeeded { "Success" } else { "Failure" }),
    );
    put("status_detail", json!(event.result_status.as_str()));
    if !event.error_code.is_empty() {
        put("status_code", json!(event.error_code));
    }
    put(
        "metadata",
        json!({
            "version": OCSF_VERSION,
            "uid": event.id.to_string(),
            "tenant_uid": event.tenant_id.to_string(),
            "correlation_uid": event.correlation_id,
            "logged_time": time_ms,
            "product": {"name": "Custos", "vendor_name": "Custos", "version": VERSION},
        }),
    );
    put(
        "src_endpoint",
        json!({"ip": event.client_ip, "svc_name": event.origin.as_str()}),
    );
    put("http_request", json!({"user_agent": event.user_agent}));
    if class_uid == 3002 {
        put("user", user);
        put("session", json!({"uid": event.session_id}));
    } else {
        put(
            "actor",
            json!({
                "user": user,
                "session": {"uid": event.session_id},
                "invoked_by": event.caller_id,
            }),
        );
        put(
            "api",
            json!({
                "operation": event.operation,
                "service": {"name": event.workload},
                "request": {"uid": event.correlation_id},
            }),
        );
    }
    let value = custos_audit::event_value(&AuditEvent {
        record_ids: Vec::new(),
        ..event.clone()
    });
    put(
        "unmapped",
        json!({
            "Instance": value["Instance"],
            "InstanceUrl": value["InstanceUrl"],
            "RecordType": value["RecordType"],
            "Category": value["Category"],
            "EntityCategory": value["EntityCategory"],
            "UserType": value["UserType"],
            "ClientRequestId": value["ClientRequestId"],
            "Query": value["Query"],
            "ResultCount": value["ResultCount"],
            "Changes": value["Changes"],
            "Details": value["Details"],
        }),
    );
    Json::Object(out)
}

/// The API Activity activity of an operation: what it did to data.
fn api_activity(operation: Option<Operation>) -> (u32, &'static str) {
    use Operation::*;
    match operation {
        Some(
            Create | ImportRecords | CreateUser | CreateEntity | CreateAttribute | CreateInstance,
        ) => (1, "Create"),
        Some(
            Retrieve | RetrieveMultiple | ExportToExcel | SearchAuditLog | ExportAuditLog
            | ReadActivityFeed | UserAccessViaWeb | UserAccessViaSdk | BackupInstance,
        ) => (2, "Read"),
        Some(
            Update | Upsert | Assign | Share | Unshare | RestoreInstance | UpdateAuditSettings,
        ) => (3, "Update"),
        Some(
            Delete | BulkDelete | DeleteAttribute | DeleteEntity | DeleteInstance | PurgeAuditLog,
        ) => (4, "Delete"),
        _ => (99, "Other"),
    }
}

#[cfg(test)]
mod tests {
    use custos_audit::{EntityCategory, Origin};
    use uuid::Uuid;

    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            id: Uuid::parse_str("01936a52-0000-7000-8000-000000000001").unwrap(),
            creation_time_us: 1_732_000_000_123_456,
            tenant_id: Uuid::nil(),
            instance: "main".into(),
            instance_url: "http://127.0.0.1/main".into(),
            workload: "Custos".into(),
            record_type: "CustosEntity".into(),
            operation: "RetrieveMultiple".into(),
            category: "accessed-out-of-box-entity".into(),
            user_id: "u-1".into(),
            user_upn: "ann@contoso.test".into(),
            user_type: UserType::Regular,
            caller_id: String::new(),
            client_ip: "10.0.0.7".into(),
            user_agent: "agent \"x\" = y | z ] \\ end\nline".into(),
            origin: Origin::Api,
            correlation_id: "c-1".into(),
            session_id: "s-1".into(),
            client_request_id: String::new(),
            result_status: ResultStatus::Succeeded,
            error_code: String::new(),
            entity_name: "account".into(),
            entity_category: EntityCategory::OutOfBox,
            record_ids: (0..150).map(|i| Uuid::from_u128(i + 1)).collect(),
            query: "$filter=name eq 'a'".into(),
            result_count: 150,
            changes: Vec::new(),
            details: String::new(),
        }
    }

    #[test]
    fn syslog_header_and_structured_data_follow_rfc_5424() {
        let message = rfc5424(&event(), "host-1", 42);
        assert!(
            message.starts_with("<110>1 2024-11-19T07:06:40.123456Z host-1 custos 42 RetrieveMultiple [custos@32473 id=\"01936a52-0000-7000-8000-000000000001\""),
            "{message}"
        );
        assert!(message.contains(" count=\"150\""));
        assert!(!message.contains('\n'), "one line");
        let msg = message.split_once("] \u{feff}").unwrap().1;
        let parsed: Json = serde_json::from_str(msg).unwrap();
        assert_eq!(parsed["RecordIds"].as_array().unwrap().len(), 150);
        assert_eq!(sd_value("a\"b]c\\d\ne"), "a\\\"b\\]c\\\\d e");
        assert_eq!(header_field("", 32), "-");
        assert_eq!(header_field("an operation with spaces", 5), "anope");
    }

    #[test]
    fn cef_escapes_its_header_and_extension_and_cuts_long_lists() {
        let mut denied = event();
        denied.result_status = ResultStatus::Denied;
        denied.operation = "Odd|Op".into();
        let line = cef(&denied);
        assert!(line.starts_with("CEF:0|Custos|Custos|"), "{line}");
        assert!(line.contains("|Odd\\|Op|Odd\\|Op account|7|"), "{line}");
        assert!(line.contains("requestClientApplication=agent \"x\" \\= y | z ] \\\\ end\\nline"));
        assert!(line.contains(" cn1=150"));
        let cs5 = line
            .split(" cs5=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(cs5.split(',').count(), CEF_RECORD_IDS);
        assert!(line.contains(" src=10.0.0.7"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn ocsf_classes_follow_the_operation() {
        let list: Json = serde_json::from_str(&ocsf(&event())).unwrap();
        assert_eq!(list["class_uid"], 6003);
        assert_eq!(list["type_uid"], 600302);
        assert_eq!(list["time"], 1_732_000_000_123i64);
        assert_eq!(list["resources"].as_array().unwrap().len(), 150);
        assert_eq!(
            list["resources"][149],
            json!({"uid": Uuid::from_u128(150).to_string(), "type": "account"})
        );
        assert_eq!(list["actor"]["user"]["name"], "ann@contoso.test");
        let mut sign_in = event();
        sign_in.operation = "SignIn".into();
        sign_in.record_ids.clear();
        let auth: Json = serde_json::from_str(&ocsf(&sign_in)).unwrap();
        assert_eq!(
            (auth["class_uid"].clone(), auth["activity_id"].clone()),
            (json!(3002), json!(1))
        );
        assert_eq!(auth["type_uid"], 300201);
        assert_eq!(auth["user"]["uid"], "u-1");
        let mut failed = event();
        failed.operation = "PublishAllCustomizations".into();
        failed.result_status = ResultStatus::Failed;
        failed.error_code = "BadRequest".into();
        let other: Json = serde_json::from_str(&ocsf(&failed)).unwrap();
        assert_eq!(other["activity_id"], 99);
        assert_eq!(other["status_id"], 2);
        assert_eq!(other["status_code"], "BadRequest");
    }
}
