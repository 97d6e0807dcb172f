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

/// The canonical JSON bytes of the record: the Merkle leaf.
pub fn canonical_json(event: &AuditEvent) -> String {
    let mut out = String::with_capacity(512 + event.record_ids.len() * 40);
    write_canonical(&event_value(event), &mut out);
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

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a string")
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
