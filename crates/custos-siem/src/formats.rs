//! An audit record in the formats SIEMs read (SPEC §9): RFC 5424 syslog, ArcSight CEF, OCSF
//! and plain JSON. Pure functions of one event; the streams (`streams.rs`) frame and send them.
//! Every format keeps each message within a limit (`*_messages(…, limit)`): an event too
//! large for one message goes as numbered parts, each naming the event, its number, the count
//! and the SHA-256 of the whole canonical record, so no value is silently cut.
//!
//! - **RFC 5424**: facility 13 (log audit); severity informational for a success, warning for
//!   a failure, notice for a denial; the event's time with microseconds; APP-NAME `custos`;
//!   MSGID the operation; one structured-data element `custos@32473` (32473 is the private
//!   enterprise number RFC 5612 reserves for documentation: Custos has none of its own yet)
//!   with the fields a receiver filters on (each at most 128 bytes: a summary); MSG the
//!   record's canonical JSON after a BOM. Parts split the MSG's text.
//! - **CEF**: `CEF:0|Custos|Custos|<version>|<operation>|<name>|<severity>|<extension>`, with
//!   `rt`, `act`, `suser`, `suid`, `src`, `requestClientApplication`, `outcome`,
//!   `externalId`, `cnt` and six labelled strings, each within ArcSight's field length; in
//!   RFC 5424 with MSGID and structured data `-`, so the CEF header is the first `CEF:` of the
//!   line. A line carries at most 100 record ids (`cn1` the count of all); parts share them out.
//! - **OCSF 1.1**: sign-in and sign-out are Authentication (3002, Logon / Logoff), everything
//!   else API Activity (6003: Create, Read, Update, Delete or Other), with every field OCSF has
//!   no place for under `unmapped`; no empty strings. Parts share out the `resources`.
//! - **JSON**: the canonical record; parts are fragments of its text in a small wrapper.

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

fn canonical(event: &AuditEvent) -> String {
    custos_audit::event_value(event).to_string()
}

/// Which message a syslog header starts.
enum Header<'a> {
    /// The record itself as MSG, or one part of it.
    Syslog(Option<&'a Part<'a>>),
    /// A CEF line as MSG: no MSGID and no structured data, so nothing before the CEF line
    /// can be taken for its header.
    Cef,
}

/// One of several messages that together carry an event too large for one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part<'a> {
    /// From 1.
    pub(crate) number: usize,
    pub(crate) count: usize,
    /// SHA-256 (hex) of the event's canonical JSON, the whole record the parts join into.
    pub(crate) sha256: &'a str,
}

impl<'a> Part<'a> {
    /// Parts 1 to `count` of the record whose SHA-256 is `sha256`.
    fn all(count: usize, sha256: &'a str) -> impl Iterator<Item = Part<'a>> {
        (1..=count).map(move |number| Part {
            number,
            count,
            sha256,
        })
    }
}

/// Longest structured-data value, in bytes once escaped: the SD is a summary for filtering,
/// the MSG holds every value whole.
const SD_VALUE_BYTES_MAX: usize = 128;

/// Everything of an RFC 5424 message before its MSG, with the space that separates them.
fn syslog_header(event: &AuditEvent, hostname: &str, procid: u32, header: Header<'_>) -> String {
    let severity = match event.result_status {
        ResultStatus::Succeeded => 6,
        ResultStatus::Denied => 5,
        ResultStatus::Failed => 4,
    };
    let pri = FACILITY_LOG_AUDIT * 8 + severity;
    let (msgid, sd) = match header {
        Header::Cef => ("-".to_string(), "-".to_string()),
        Header::Syslog(part) => (
            header_field(&event.operation, 32),
            structured_data(event, part),
        ),
    };
    format!(
        "<{pri}>1 {} {} custos {procid} {msgid} {sd} ",
        custos_audit::format_creation_time(event.creation_time_us),
        header_field(hostname, 255),
    )
}

fn structured_data(event: &AuditEvent, part: Option<&Part<'_>>) -> String {
    let mut params = vec![
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
    if let Some(part) = part {
        params.push(("part", part.number.to_string()));
        params.push(("parts", part.count.to_string()));
        params.push(("sha256", part.sha256.to_string()));
    }
    let mut sd = format!("[{SD_ID}");
    for (name, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
        sd.push_str(&format!(" {name}=\"{}\"", sd_value(value)));
    }
    sd.push(']');
    sd
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped; a control character (which would break a line of
/// a file) as the text `\u00XX`; at most `SD_VALUE_BYTES_MAX` bytes, a longer value cut and
/// ended by `…`.
fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(SD_VALUE_BYTES_MAX));
    for c in value.chars() {
        let escaped = match c {
            '"' | '\\' | ']' => format!("\\{c}"),
            c if c.is_control() => format!("\\\\u{:04X}", c as u32),
            c => c.to_string(),
        };
        if out.len() + escaped.len() > SD_VALUE_BYTES_MAX - '…'.len_utf8() {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
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

/// The messages that carry `event` as syslog within `limit` bytes each: one message when it
/// fits, else numbered parts whose MSGs (after each one's BOM) join into the canonical record,
/// each part's structured data naming the event, its number, the count and the record's SHA-256.
pub(crate) fn syslog_messages(
    event: &AuditEvent,
    hostname: &str,
    procid: u32,
    limit: usize,
) -> Vec<String> {
    let record = canonical(event);
    let whole = syslog_header(event, hostname, procid, Header::Syslog(None)) + "\u{feff}" + &record;
    if whole.len() <= limit {
        return vec![whole];
    }
    let sha256 = record_sha256(&record);
    let mut count = 2;
    loop {
        // The widest header of `count` parts leaves the room for each part's piece of MSG.
        let widest = Part {
            number: count,
            count,
            sha256: &sha256,
        };
        let header = syslog_header(event, hostname, procid, Header::Syslog(Some(&widest)));
        let room = limit
            .saturating_sub(header.len() + '\u{feff}'.len_utf8())
            .max(4);
        let pieces = utf8_pieces(&record, room);
        if pieces.len() <= count {
            let count = pieces.len();
            return pieces
                .iter()
                .zip(Part::all(count, &sha256))
                .map(|(piece, part)| {
                    syslog_header(event, hostname, procid, Header::Syslog(Some(&part)))
                        + "\u{feff}"
                        + piece
                })
                .collect();
        }
        count = pieces.len();
    }
}

/// The SHA-256 (hex) of a record's canonical JSON.
fn record_sha256(record: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(record.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `text` in pieces of at most `room` bytes (at least 4), each cut at a character boundary.
fn utf8_pieces(text: &str, room: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(room.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces
}

/// Longest values ArcSight keeps in the CEF fields used (characters), from its CEF
/// implementation standard; a longer value is cut and ended by `…` — the whole record is in
/// the log under the event's id (`externalId`), and in every other format.
const CEF_NAME_MAX: usize = 512;
const CEF_SIGNATURE_MAX: usize = 1023;
const CEF_SHORT_MAX: usize = 63;
const CEF_TEXT_MAX: usize = 1023;
const CEF_CUSTOM_MAX: usize = 4000;
/// The length every text value is cut to when even one record id per message does not fit the
/// limit otherwise.
const CEF_TIGHT_MAX: usize = 128;

/// The messages that carry `event` as CEF lines in RFC 5424 within `limit` bytes each: one when
/// it fits, else parts that share out the record ids (`cs5`; `cn1` the count of all), each
/// numbered (`cn2` of `cn3`) with the record's SHA-256 (`flexString1`), so no record id is ever
/// left out.
pub(crate) fn cef_messages(
    event: &AuditEvent,
    hostname: &str,
    procid: u32,
    limit: usize,
) -> Vec<String> {
    let header = syslog_header(event, hostname, procid, Header::Cef);
    // The record's digest is worked out only for an event that needs parts.
    let mut sha256 = String::new();
    let ids = &event.record_ids;
    let mut per_message = CEF_RECORD_IDS;
    let mut cap = None;
    loop {
        let count = ids.len().div_ceil(per_message).max(1);
        if count > 1 && sha256.is_empty() {
            sha256 = record_sha256(&canonical(event));
        }
        let messages: Vec<String> = (0..count)
            .map(|i| {
                let slice =
                    &ids[(i * per_message).min(ids.len())..((i + 1) * per_message).min(ids.len())];
                let part = (count > 1).then_some(Part {
                    number: i + 1,
                    count,
                    sha256: &sha256,
                });
                header.clone() + &cef_line(event, slice, part.as_ref(), cap)
            })
            .collect();
        if messages.iter().all(|m| m.len() <= limit) {
            return messages;
        }
        match (per_message, cap) {
            (1, None) => cap = Some(CEF_TIGHT_MAX),
            (1, Some(_)) => return messages,
            _ => per_message = (per_message / 2).max(1),
        }
    }
}

/// The CEF line of `event` carrying `ids` of its record ids, as one message or one `part`;
/// every text value within `cap` characters when given, else within ArcSight's lengths.
fn cef_line(
    event: &AuditEvent,
    ids: &[uuid::Uuid],
    part: Option<&Part<'_>>,
    cap: Option<usize>,
) -> String {
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
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let within = |max: usize| cap.map_or(max, |cap| cap.min(max));
    let mut extension = vec![
        (
            "rt",
            (event.creation_time_us / 1000).to_string(),
            usize::MAX,
        ),
        ("externalId", event.id.to_string(), usize::MAX),
        ("act", event.operation.clone(), within(CEF_SHORT_MAX)),
        (
            "outcome",
            event.result_status.as_str().to_string(),
            CEF_SHORT_MAX,
        ),
        ("suser", event.user_upn.clone(), within(CEF_TEXT_MAX)),
        ("suid", event.user_id.clone(), within(CEF_TEXT_MAX)),
        (
            "requestClientApplication",
            event.user_agent.clone(),
            within(CEF_TEXT_MAX),
        ),
        ("cnt", event.result_count.to_string(), usize::MAX),
        ("cs1Label", "Instance".into(), usize::MAX),
        ("cs1", event.instance.clone(), within(CEF_CUSTOM_MAX)),
        ("cs2Label", "Entity".into(), usize::MAX),
        ("cs2", event.entity_name.clone(), within(CEF_CUSTOM_MAX)),
        ("cs3Label", "Origin".into(), usize::MAX),
        ("cs3", event.origin.as_str().to_string(), usize::MAX),
        ("cs4Label", "CorrelationId".into(), usize::MAX),
        ("cs4", event.correlation_id.clone(), within(CEF_CUSTOM_MAX)),
        ("cs5Label", "RecordIds".into(), usize::MAX),
        ("cs5", ids.join(","), usize::MAX),
        ("cs6Label", "Workload".into(), usize::MAX),
        ("cs6", event.workload.clone(), within(CEF_CUSTOM_MAX)),
        ("cn1Label", "RecordIdCount".into(), usize::MAX),
        ("cn1", event.record_ids.len().to_string(), usize::MAX),
    ];
    if let Some(part) = part {
        extension.extend([
            ("cn2Label", "Part".into(), usize::MAX),
            ("cn2", part.number.to_string(), usize::MAX),
            ("cn3Label", "Parts".into(), usize::MAX),
            ("cn3", part.count.to_string(), usize::MAX),
            ("flexString1Label", "RecordSha256".into(), usize::MAX),
            ("flexString1", part.sha256.to_string(), usize::MAX),
        ]);
    }
    if event.client_ip.parse::<std::net::IpAddr>().is_ok() {
        extension.push(("src", event.client_ip.clone(), usize::MAX));
    }
    let extension: Vec<String> = extension
        .into_iter()
        .filter(|(_, v, _)| !v.is_empty())
        .map(|(k, v, max)| format!("{k}={}", cef_value(cut(&v, max))))
        .collect();
    format!(
        "CEF:0|Custos|Custos|{VERSION}|{}|{}|{severity}|{}",
        cef_header(cut(&event.operation, within(CEF_SIGNATURE_MAX))),
        cef_header(cut(&name, within(CEF_NAME_MAX))),
        extension.join(" ")
    )
}

/// `value` within `max` characters: cut, the last one `…`, when longer.
fn cut(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(max) {
        None => value.into(),
        Some(_) => {
            let end = value
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(value.len(), |(at, _)| at);
            format!("{}…", &value[..end]).into()
        }
    }
}

/// A header field: `\` and `|` escaped, line breaks and other control characters as the
/// text `\u00XX` (its backslash escaped, as CEF asks of every backslash).
fn cef_header(value: impl AsRef<str>) -> String {
    cef_escaped(value.as_ref(), '|', false)
}

/// An extension value: `\` and `=` escaped, line breaks as `\n` / `\r`, other control
/// characters as the text `\u00XX`.
fn cef_value(value: impl AsRef<str>) -> String {
    cef_escaped(value.as_ref(), '=', true)
}

/// `value` with `\` and `special` escaped, line breaks as `\n` / `\r` when `line_breaks`, and
/// every other control character as the text `\u00XX`: no raw control byte reaches a receiver.
fn cef_escaped(value: &str, special: char, line_breaks: bool) -> String {
    if !value.contains(|c: char| c == '\\' || c == special || c.is_control()) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == special => {
                out.push('\\');
                out.push(c);
            }
            '\n' if line_breaks => out.push_str("\\n"),
            '\r' if line_breaks => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The OCSF record of `event`, as one line of JSON text. The `resources` of a list (one object
/// per record id, thousands of them) are written straight into the text rather than built as
/// JSON values: measured with `custos bench siem`, that took OCSF streams from about 13,000 to
/// the rate of the other formats.
pub(crate) fn ocsf(event: &AuditEvent) -> String {
    ocsf_with(event, &event.record_ids, None)
}

/// The OCSF record of `event` with `ids` as its resources, as one message or one `part` (named
/// in `unmapped.custos_part`).
fn ocsf_with(event: &AuditEvent, ids: &[uuid::Uuid], part: Option<&Part<'_>>) -> String {
    let mut record = ocsf_without_resources(event);
    if let Some(part) = part {
        record["unmapped"]["custos_part"] = json!({
            "part": part.number,
            "parts": part.count,
            "record_sha256": part.sha256,
        });
    }
    let mut text = record.to_string();
    if ocsf_class(event).0 == 3002 {
        return text;
    }
    let kind = if event.entity_name.is_empty() {
        String::new()
    } else {
        format!(",\"type\":{}", Json::from(event.entity_name.as_str()))
    };
    text.pop();
    text.push_str(",\"resources\":[");
    let mut buffer = uuid::Uuid::encode_buffer();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str("{\"uid\":\"");
        text.push_str(id.hyphenated().encode_lower(&mut buffer));
        text.push('"');
        text.push_str(&kind);
        text.push('}');
    }
    text.push_str("]}");
    text
}

/// The OCSF lines that carry `event` within `limit` bytes each: one when it fits, else parts
/// that share out its resources (each a whole OCSF record, numbered in `unmapped.custos_part`
/// with the record's SHA-256); an event too large even without resources goes as fragments
/// (`fragments`).
pub(crate) fn ocsf_messages(event: &AuditEvent, limit: usize) -> Vec<String> {
    let whole = ocsf(event);
    if whole.len() <= limit {
        return vec![whole];
    }
    let sha256 = record_sha256(&canonical(event));
    let ids = &event.record_ids;
    let widest = Part {
        number: ids.len().max(1),
        count: ids.len().max(1),
        sha256: &sha256,
    };
    let bare = ocsf_with(event, &[], Some(&widest)).len();
    let one = ocsf_with(event, &ids[..ids.len().min(1)], Some(&widest)).len() - bare + 1;
    let per_message = limit.saturating_sub(bare) / one.max(1);
    if ids.is_empty() || per_message == 0 {
        return fragments(&whole, event.id, &sha256, limit);
    }
    let count = ids.len().div_ceil(per_message);
    ids.chunks(per_message)
        .zip(Part::all(count, &sha256))
        .map(|(slice, part)| ocsf_with(event, slice, Some(&part)))
        .collect()
}

/// The JSON lines that carry `event`'s canonical record within `limit` bytes each: the record
/// when it fits, else fragments.
pub(crate) fn json_messages(event: &AuditEvent, limit: usize) -> Vec<String> {
    let record = canonical(event);
    if record.len() <= limit {
        return vec![record];
    }
    let sha256 = record_sha256(&record);
    fragments(&record, event.id, &sha256, limit)
}

/// `text` as JSON lines of at most `limit` bytes: `{"CustosPart": {"Id", "Part", "Parts",
/// "Sha256"}, "Fragment": "…"}`, whose fragments, in part order, join into `text`, whose
/// SHA-256 is `Sha256`.
fn fragments(text: &str, id: uuid::Uuid, sha256: &str, limit: usize) -> Vec<String> {
    let line = |number: usize, count: usize, fragment: &str| {
        json!({
            "CustosPart": {"Id": id, "Part": number, "Parts": count, "Sha256": sha256},
            "Fragment": fragment,
        })
        .to_string()
    };
    let mut count = 2;
    loop {
        let room = limit.saturating_sub(line(count, count, "").len()).max(8);
        let pieces = escaped_pieces(text, room);
        if pieces.len() <= count {
            let count = pieces.len();
            return pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| line(i + 1, count, piece))
                .collect();
        }
        count = pieces.len();
    }
}

/// `text` in pieces whose JSON string escapes take at most `room` bytes each (at least one
/// character each).
fn escaped_pieces(text: &str, room: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if size + escaped > room && at > start {
            pieces.push(&text[start..at]);
            (start, size) = (at, 0);
        }
        size += escaped;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
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
    // A refusal is a security-relevant signal, a failure less so, a success none.
    let (severity_id, severity) = match event.result_status {
        ResultStatus::Succeeded => (1, "Informational"),
        ResultStatus::Failed => (2, "Low"),
        ResultStatus::Denied => (3, "Medium"),
    };
    put("severity_id", json!(severity_id));
    put("severity", json!(severity));
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
    // An `ip` is an IP address or absent (an ingested event may carry any text).
    let mut endpoint = json!({"svc_name": event.origin.as_str()});
    if let Ok(ip) = event.client_ip.parse::<std::net::IpAddr>() {
        endpoint["ip"] = json!(ip.to_string());
    }
    put("src_endpoint", endpoint);
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
    let mut record = Json::Object(out);
    strip_empty(&mut record);
    record
}

/// Removes from `value`, in place, its empty strings and the objects that leaves empty: OCSF
/// has no value for "absent" but absence.
fn strip_empty(value: &mut Json) {
    if let Json::Object(map) = value {
        map.retain(|_, inner| {
            strip_empty(inner);
            match inner {
                Json::String(text) => !text.is_empty(),
                Json::Object(fields) => !fields.is_empty(),
                _ => true,
            }
        });
    }
}

/// The API Activity activity of an operation: what it did to data.
fn api_activity(operation: Option<Operation>) -> (u32, &'static str) {
    use Operation::*;
    match operation {
        Some(
            Create | ImportRecords | CreateUser | CreateEntity | CreateAttribute | CreateEntityKey
            | CreateInstance,
        ) => (1, "Create"),
        Some(
            Retrieve
            | RetrieveMultiple
            | ExportToExcel
            | SearchAuditLog
            | ExportAuditLog
            | ReadActivityFeed
            | UserAccessViaWeb
            | UserAccessViaSdk
            | BackupInstance
            | RetrieveRecordChangeHistory,
        ) => (2, "Read"),
        Some(
            Update | Upsert | Assign | Share | ModifyShare | Unshare | RestoreInstance
            | UpdateAuditSettings,
        ) => (3, "Update"),
        Some(
            Delete | BulkDelete | DeleteAttribute | DeleteEntity | DeleteEntityKey | DeleteInstance
            | PurgeAuditLog,
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

    /// The one message of `event` as syslog, however long.
    fn rfc5424(event: &AuditEvent) -> String {
        let mut messages = syslog_messages(event, "host-1", 42, usize::MAX);
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    #[test]
    fn syslog_header_and_structured_data_follow_rfc_5424() {
        let message = rfc5424(&event());
        assert!(
            message.starts_with("<110>1 2024-11-19T07:06:40.123456Z host-1 custos 42 RetrieveMultiple [custos@32473 id=\"01936a52-0000-7000-8000-000000000001\""),
            "{message}"
        );
        assert!(message.contains(" count=\"150\""));
        assert!(!message.contains('\n'), "one line");
        let msg = message.split_once("] \u{feff}").unwrap().1;
        let parsed: Json = serde_json::from_str(msg).unwrap();
        assert_eq!(parsed["RecordIds"].as_array().unwrap().len(), 150);
        assert_eq!(
            sd_value("a\"b]c\\d\ne\0"),
            "a\\\"b\\]c\\\\d\\\\u000Ae\\\\u0000"
        );
        assert_eq!(sd_value(&"x".repeat(500)).len(), SD_VALUE_BYTES_MAX);
        assert_eq!(header_field("", 32), "-");
        assert_eq!(header_field("an operation with spaces", 5), "anope");
    }

    #[test]
    fn a_large_syslog_event_goes_as_parts_that_join_into_the_record() {
        let mut large = event();
        large.record_ids = (0..2_000).map(|i| Uuid::from_u128(i + 1)).collect();
        let record = canonical(&large);
        let parts = syslog_messages(&large, "host-1", 42, 8_192);
        assert!(parts.len() > 9, "{}", parts.len());
        let mut joined = String::new();
        for (i, part) in parts.iter().enumerate() {
            assert!(part.len() <= 8_192, "part {i}: {}", part.len());
            assert!(
                part.contains(&format!(
                    " part=\"{}\" parts=\"{}\" sha256=\"{}\"]",
                    i + 1,
                    parts.len(),
                    record_sha256(&record)
                )),
                "{part}"
            );
            joined.push_str(part.split_once("] \u{feff}").unwrap().1);
        }
        assert_eq!(joined, record);
    }

    #[test]
    fn cef_escapes_its_header_and_extension_and_shares_long_lists_out() {
        let mut denied = event();
        denied.result_status = ResultStatus::Denied;
        denied.operation = "Odd|Op\0CEF:0|Evil|".into();
        let messages = cef_messages(&denied, "host-1", 42, 8_192);
        assert_eq!(messages.len(), 2, "150 ids, 100 a message");
        // Nothing before the CEF line can be taken for a CEF header.
        for message in &messages {
            assert!(
                message.starts_with(
                    "<109>1 2024-11-19T07:06:40.123456Z host-1 custos 42 - - CEF:0|Custos|Custos|"
                ),
                "{message}"
            );
            assert!(!message.contains('\n') && !message.contains('\0'));
        }
        let line = messages[0].split_once(" - - ").unwrap().1;
        assert!(
            line.contains(
                "|Odd\\|Op\\\\u0000CEF:0\\|Evil\\||Odd\\|Op\\\\u0000CEF:0\\|Evil\\| account|7|"
            ),
            "{line}"
        );
        assert!(line.contains("requestClientApplication=agent \"x\" \\= y | z ] \\\\ end\\nline"));
        assert!(line.contains(" cn1=150 cn2Label=Part cn2=1 cn3Label=Parts cn3=2 flexString1Label=RecordSha256 flexString1="), "{line}");
        let ids = |line: &str| -> Vec<String> {
            line.split(" cs5=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .split(',')
                .map(str::to_string)
                .collect()
        };
        let mut all = ids(line);
        all.extend(ids(messages[1].split_once(" - - ").unwrap().1));
        assert_eq!(all.len(), 150, "every record id, each once");
        assert_eq!(all[149], Uuid::from_u128(150).to_string());
        assert!(line.contains(" src=10.0.0.7"));
        // ArcSight's lengths: a long user agent is cut, marked.
        let mut long = event();
        long.user_agent = "a".repeat(2_000);
        let line = cef_line(&long, &[], None, None);
        let agent = line
            .split("requestClientApplication=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(agent.chars().count(), CEF_TEXT_MAX);
        assert!(agent.ends_with('…'));
    }

    #[test]
    fn json_and_ocsf_lines_stay_within_their_limit() {
        let mut large = event();
        large.record_ids = (0..3_000).map(|i| Uuid::from_u128(i + 1)).collect();
        let record = canonical(&large);
        let fragments = json_messages(&large, 4_096);
        let mut joined = String::new();
        for (i, line) in fragments.iter().enumerate() {
            assert!(line.len() <= 4_096, "{}", line.len());
            let value: Json = serde_json::from_str(line).unwrap();
            assert_eq!(value["CustosPart"]["Part"], i + 1);
            assert_eq!(value["CustosPart"]["Parts"], fragments.len());
            joined.push_str(value["Fragment"].as_str().unwrap());
        }
        assert_eq!(joined, record);
        let parts = ocsf_messages(&large, 8_192);
        let mut resources = 0;
        for line in &parts {
            assert!(line.len() <= 8_192);
            let value: Json = serde_json::from_str(line).unwrap();
            assert_eq!(value["class_uid"], 6003, "each part is an OCSF record");
            assert_eq!(value["unmapped"]["custos_part"]["parts"], parts.len());
            resources += value["resources"].as_array().unwrap().len();
        }
        assert_eq!(resources, 3_000);
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
        assert_eq!(
            (other["severity_id"].clone(), other["severity"].clone()),
            (json!(2), json!("Low"))
        );
        let mut denied = event();
        denied.result_status = ResultStatus::Denied;
        denied.client_ip = "somewhere".into();
        denied.entity_name.clear();
        let denied: Json = serde_json::from_str(&ocsf(&denied)).unwrap();
        assert_eq!(denied["severity_id"], 3);
        assert!(
            denied["src_endpoint"].get("ip").is_none(),
            "not an IP: absent"
        );
        assert_eq!(list["src_endpoint"]["ip"], "10.0.0.7");
        // OCSF has no empty strings: an absent value is absent.
        fn no_empty(value: &Json, at: &str) {
            match value {
                Json::String(text) => assert!(!text.is_empty(), "empty string at {at}"),
                Json::Object(map) => map
                    .iter()
                    .for_each(|(k, v)| no_empty(v, &format!("{at}.{k}"))),
                Json::Array(items) => items.iter().for_each(|v| no_empty(v, at)),
                _ => {}
            }
        }
        for record in [&list, &auth, &other, &denied] {
            no_empty(record, "");
        }
    }
}
