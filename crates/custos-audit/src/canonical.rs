//! The canonical JSON of an audit record: the exact bytes of a Merkle leaf, and the JSON the API
//! shows. Canonical in the sense of RFC 8785 (JCS): object members sorted by their UTF-16 code
//! units, no whitespace, strings with the minimal escapes, decimal numbers in the ECMAScript
//! form (via `ryu-js`). One deliberate difference: integers are written exactly as stored, also
//! beyond 2^53 where JCS would round them through a double.
//!
//! Because the API's record is this JSON parsed, an outside verifier can rebuild the leaf bytes
//! from the record it is shown (docs/verify.md).

use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::event::AuditEvent;
use crate::merkle::{Hash, leaf_hash};

/// `CreationTime` as shown: UTC, microseconds, `Z`.
pub fn format_creation_time(us: i64) -> String {
    let time = creation_time(us);
    match creation_time_digits(&time) {
        Some(text) => String::from_utf8(text.to_vec()).expect("ASCII digits"),
        // Years before 0 are written with their sign; `OffsetDateTime` ends at 9999.
        None => creation_time_formatted(&time),
    }
}

/// `CreationTime` through the formatter: what [`creation_time_digits`] writes without it.
fn creation_time_formatted(time: &OffsetDateTime) -> String {
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

fn creation_time(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `time` as [`format_creation_time`] writes it, without an allocation, for the years 0–9999.
fn creation_time_digits(time: &OffsetDateTime) -> Option<[u8; 27]> {
    let year = u32::try_from(time.year())
        .ok()
        .filter(|year| *year <= 9999)?;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, u32::from(time.month() as u8));
    digits(8, 2, u32::from(time.day()));
    digits(11, 2, u32::from(time.hour()));
    digits(14, 2, u32::from(time.minute()));
    digits(17, 2, u32::from(time.second()));
    digits(20, 6, time.microsecond());
    Some(text)
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
    String::from_utf8(canonical_bytes(event))
        .expect("canonical JSON is written from strings and ASCII")
}

/// The record's leaf hash, `SHA-256(0x00 ‖ canonical JSON)`, from the JSON's bytes as written
/// (not checked again as UTF-8, which costs a fifth of writing them).
pub fn event_leaf_hash(event: &AuditEvent) -> Hash {
    leaf_hash(&canonical_bytes(event))
}

fn canonical_bytes(event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(600 + event.record_ids.len() * 39);
    write_event(event, &mut out);
    out
}

/// Two lowercase hexadecimal digits for each byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [digits[byte >> 4], digits[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// `id` as a JSON string into `out`'s 38 bytes: quoted, hyphenated, lowercase — RFC 9562's
/// form, as `Uuid` displays it. Written in place, as a record lists thousands of ids.
fn write_uuid(id: &uuid::Uuid, out: &mut [u8]) {
    let out: &mut [u8; 38] = out.try_into().expect("a quoted UUID is 38 bytes");
    let mut digits = [0u8; 32];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(id.as_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    out[0] = b'"';
    out[1..9].copy_from_slice(&digits[..8]);
    out[9] = b'-';
    out[10..14].copy_from_slice(&digits[8..12]);
    out[14] = b'-';
    out[15..19].copy_from_slice(&digits[12..16]);
    out[19] = b'-';
    out[20..24].copy_from_slice(&digits[16..20]);
    out[24] = b'-';
    out[25..37].copy_from_slice(&digits[20..]);
    out[37] = b'"';
}

/// `id` as a JSON string, after a comma when `comma`.
fn put_uuid(id: &uuid::Uuid, comma: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let at = start + usize::from(comma);
    out.resize(at + 38, b',');
    write_uuid(id, &mut out[at..]);
}

/// Members whose values are strings: each name (with the separator before it), then the value.
fn put_members(out: &mut Vec<u8>, members: &[(&str, &str)]) {
    for (name, value) in members {
        out.extend_from_slice(name.as_bytes());
        write_string(value, out);
    }
}

/// `CreationTime` as a JSON string.
fn put_creation_time(us: i64, out: &mut Vec<u8>) {
    match creation_time_digits(&creation_time(us)) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
        }
        None => write_string(&format_creation_time(us), out),
    }
}

/// The canonical JSON of `event` (see [`canonical_json`]), into `out`.
fn write_event(event: &AuditEvent, out: &mut Vec<u8>) {
    let embedded_canonical = |text: &str, out: &mut _| match serde_json::from_str(text) {
        Ok(value) => write_value(&value, out),
        Err(_) => write_string(text, out),
    };
    // Members in UTF-16 (here: ASCII) order of their names.
    put_members(
        out,
        &[
            ("{\"CallerId\":", &event.caller_id),
            (",\"Category\":", &event.category),
        ],
    );
    out.extend_from_slice(b",\"Changes\":[");
    for (i, change) in event.changes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Attribute\":");
        write_string(&change.attribute, out);
        for (name, value) in [(",\"New\":", &change.new), (",\"Old\":", &change.old)] {
            out.extend_from_slice(name.as_bytes());
            match value {
                Some(text) => embedded_canonical(text, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
    }
    put_members(
        out,
        &[
            ("],\"ClientIP\":", &event.client_ip),
            (",\"ClientRequestId\":", &event.client_request_id),
            (",\"CorrelationId\":", &event.correlation_id),
        ],
    );
    out.extend_from_slice(b",\"CreationTime\":");
    put_creation_time(event.creation_time_us, out);
    out.extend_from_slice(b",\"Details\":");
    if event.details.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        embedded_canonical(&event.details, out);
    }
    put_members(
        out,
        &[
            (",\"EntityCategory\":", event.entity_category.as_str()),
            (",\"EntityName\":", &event.entity_name),
            (",\"ErrorCode\":", &event.error_code),
        ],
    );
    out.extend_from_slice(b",\"Id\":");
    put_uuid(&event.id, false, out);
    put_members(
        out,
        &[
            (",\"Instance\":", &event.instance),
            (",\"InstanceUrl\":", &event.instance_url),
            (",\"Operation\":", &event.operation),
            (",\"Origin\":", event.origin.as_str()),
            (",\"Query\":", &event.query),
        ],
    );
    out.extend_from_slice(b",\"RecordIds\":[");
    if let Some((first, rest)) = event.record_ids.split_first() {
        put_uuid(first, false, out);
        for id in rest {
            put_uuid(id, true, out);
        }
    }
    put_members(out, &[("],\"RecordType\":", &event.record_type)]);
    out.extend_from_slice(b",\"ResultCount\":");
    out.extend_from_slice(itoa::Buffer::new().format(event.result_count).as_bytes());
    put_members(
        out,
        &[
            (",\"ResultStatus\":", event.result_status.as_str()),
            (",\"SessionId\":", &event.session_id),
        ],
    );
    out.extend_from_slice(b",\"TenantId\":");
    put_uuid(&event.tenant_id, false, out);
    put_members(
        out,
        &[
            (",\"UserAgent\":", &event.user_agent),
            (",\"UserId\":", &event.user_id),
        ],
    );
    out.extend_from_slice(b",\"UserType\":");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(event.user_type.code())
            .as_bytes(),
    );
    put_members(
        out,
        &[
            (",\"UserUpn\":", &event.user_upn),
            (",\"Workload\":", &event.workload),
        ],
    );
    out.push(b'}');
}

/// Writes `value` in canonical form.
pub fn write_canonical(value: &Json, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    write_value(value, &mut bytes);
    *out = String::from_utf8(bytes).expect("canonical JSON is written from strings and ASCII");
}

fn write_value(value: &Json, out: &mut Vec<u8>) {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            (None, Some(u), _) => out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            (None, None, Some(f)) => {
                out.extend_from_slice(ryu_js::Buffer::new().format(f).as_bytes())
            }
            (None, None, None) => out.extend_from_slice(b"null"),
        },
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Json::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(&members[key], out);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string with the minimal escapes; runs that need none are copied whole.
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut run_start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => b"",
            _ => continue,
        };
        // `i` is at an ASCII byte, so the run ends on a character boundary.
        out.extend_from_slice(&text.as_bytes()[run_start..i]);
        if escape.is_empty() {
            let [high, low] = HEX_PAIRS[usize::from(byte)];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&text.as_bytes()[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
