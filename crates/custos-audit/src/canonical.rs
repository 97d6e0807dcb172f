//! The canonical JSON of an audit record: the exact bytes of a Merkle leaf, and the JSON the API
//! shows. Canonical in the sense of RFC 8785 (JCS): object members sorted by their UTF-16 code
//! units, no whitespace, strings with the minimal escapes, decimal numbers in the ECMAScript
//! form (via `ryu-js`). One deliberate difference: integers are written exactly as stored, also
//! beyond 2^53 where JCS would round them through a double.
//!
//! Because the API's record is this JSON parsed, an outside verifier can rebuild the leaf bytes
//! from the record it is shown (docs/verify.md).

use std::fmt::Write;

use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::event::AuditEvent;

/// `CreationTime` as shown: UTC, microseconds, `Z`.
pub fn format_creation_time(us: i64) -> String {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        time.year(),
        time.month() as u8,
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.microsecond()
    )
}

/// A JSON text stored in the record (a change's value, the details), as a JSON value; text that
/// does not parse is kept as a string.
fn embedded(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

/// The record as a JSON value (field names of SPEC §5).
pub fn event_value(event: &AuditEvent) -> Json {
    let changes: Vec<Json> = event
        .changes
        .iter()
        .map(|c| {
            let value = |v: &Option<String>| v.as_deref().map_or(Json::Null, embedded);
            serde_json::json!({"Attribute": c.attribute, "Old": value(&c.old), "New": value(&c.new)})
        })
        .collect();
    let text = |s: &str| Json::String(s.to_string());
    let fields = [
        ("Id", text(&event.id.to_string())),
        (
            "CreationTime",
            text(&format_creation_time(event.creation_time_us)),
        ),
        ("TenantId", text(&event.tenant_id.to_string())),
        ("Instance", text(&event.instance)),
        ("InstanceUrl", text(&event.instance_url)),
        ("Workload", text(&event.workload)),
        ("RecordType", text(&event.record_type)),
        ("Operation", text(&event.operation)),
        ("Category", text(&event.category)),
        ("UserId", text(&event.user_id)),
        ("UserUpn", text(&event.user_upn)),
        ("UserType", Json::from(event.user_type.code())),
        ("CallerId", text(&event.caller_id)),
        ("ClientIP", text(&event.client_ip)),
        ("UserAgent", text(&event.user_agent)),
        ("Origin", text(event.origin.as_str())),
        ("CorrelationId", text(&event.correlation_id)),
        ("SessionId", text(&event.session_id)),
        ("ClientRequestId", text(&event.client_request_id)),
        ("ResultStatus", text(event.result_status.as_str())),
        ("ErrorCode", text(&event.error_code)),
        ("EntityName", text(&event.entity_name)),
        ("EntityCategory", text(event.entity_category.as_str())),
        (
            "RecordIds",
            Json::Array(
                event
                    .record_ids
                    .iter()
                    .map(|id| text(&id.to_string()))
                    .collect(),
            ),
        ),
        ("Query", text(&event.query)),
        ("ResultCount", Json::from(event.result_count)),
        ("Changes", Json::Array(changes)),
        (
            "Details",
            if event.details.is_empty() {
                Json::Null
            } else {
                embedded(&event.details)
            },
        ),
    ];
    Json::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The canonical JSON bytes of the record: the Merkle leaf. Written straight from the record
/// (members in their sorted order, ids formatted in place) rather than through
/// [`event_value`], because every append and every verification hashes it; a property test
/// holds the two to the same bytes.
pub fn canonical_json(event: &AuditEvent) -> String {
    let mut out = String::with_capacity(600 + event.record_ids.len() * 39);
    let mut id_buffer = uuid::Uuid::encode_buffer();
    let mut uuid = |id: &uuid::Uuid, out: &mut String| {
        out.push('"');
        out.push_str(id.hyphenated().encode_lower(&mut id_buffer));
        out.push('"');
    };
    let embedded_canonical = |text: &str, out: &mut String| match serde_json::from_str(text) {
        Ok(value) => write_canonical(&value, out),
        Err(_) => write_string(text, out),
    };
    // Members in UTF-16 (here: ASCII) order of their names.
    out.push_str("{\"CallerId\":");
    write_string(&event.caller_id, &mut out);
    out.push_str(",\"Category\":");
    write_string(&event.category, &mut out);
    out.push_str(",\"Changes\":[");
    for (i, change) in event.changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"Attribute\":");
        write_string(&change.attribute, &mut out);
        for (name, value) in [(",\"New\":", &change.new), (",\"Old\":", &change.old)] {
            out.push_str(name);
            match value {
                Some(text) => embedded_canonical(text, &mut out),
                None => out.push_str("null"),
            }
        }
        out.push('}');
    }
    out.push_str("],\"ClientIP\":");
    write_string(&event.client_ip, &mut out);
    out.push_str(",\"ClientRequestId\":");
    write_string(&event.client_request_id, &mut out);
    out.push_str(",\"CorrelationId\":");
    write_string(&event.correlation_id, &mut out);
    out.push_str(",\"CreationTime\":");
    write_string(&format_creation_time(event.creation_time_us), &mut out);
    out.push_str(",\"Details\":");
    if event.details.is_empty() {
        out.push_str("null");
    } else {
        embedded_canonical(&event.details, &mut out);
    }
    out.push_str(",\"EntityCategory\":");
    write_string(event.entity_category.as_str(), &mut out);
    out.push_str(",\"EntityName\":");
    write_string(&event.entity_name, &mut out);
    out.push_str(",\"ErrorCode\":");
    write_string(&event.error_code, &mut out);
    out.push_str(",\"Id\":");
    uuid(&event.id, &mut out);
    out.push_str(",\"Instance\":");
    write_string(&event.instance, &mut out);
    out.push_str(",\"InstanceUrl\":");
    write_string(&event.instance_url, &mut out);
    out.push_str(",\"Operation\":");
    write_string(&event.operation, &mut out);
    out.push_str(",\"Origin\":");
    write_string(event.origin.as_str(), &mut out);
    out.push_str(",\"Query\":");
    write_string(&event.query, &mut out);
    out.push_str(",\"RecordIds\":[");
    for (i, id) in event.record_ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        uuid(id, &mut out);
    }
    out.push_str("],\"RecordType\":");
    write_string(&event.record_type, &mut out);
    write!(out, ",\"ResultCount\":{}", event.result_count).expect("writing to a string");
    out.push_str(",\"ResultStatus\":");
    write_string(event.result_status.as_str(), &mut out);
    out.push_str(",\"SessionId\":");
    write_string(&event.session_id, &mut out);
    out.push_str(",\"TenantId\":");
    uuid(&event.tenant_id, &mut out);
    out.push_str(",\"UserAgent\":");
    write_string(&event.user_agent, &mut out);
    out.push_str(",\"UserId\":");
    write_string(&event.user_id, &mut out);
    write!(out, ",\"UserType\":{}", event.user_type.code()).expect("writing to a string");
    out.push_str(",\"UserUpn\":");
    write_string(&event.user_upn, &mut out);
    out.push_str(",\"Workload\":");
    write_string(&event.workload, &mut out);
    out.push('}');
    out
}

/// Writes `value` in canonical form.
pub fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => write!(out, "{i}").expect("writing to a string"),
            (None, Some(u), _) => write!(out, "{u}").expect("writing to a string"),
            (None, None, Some(f)) => out.push_str(ryu_js::Buffer::new().format(f)),
            (None, None, None) => out.push_str("null"),
        },
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(&members[key], out);
            }
            out.push('}');
        }
    }
}

/// A JSON string with the minimal escapes; runs that need none are copied whole.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    let mut run_start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&text[run_start..i]);
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}").expect("writing to a string");
        } else {
            out.push_str(escape);
        }
        run_start = i + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests;
