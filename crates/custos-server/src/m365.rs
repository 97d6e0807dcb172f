//! An audit record in the Microsoft 365 common schema and the Dynamics 365 schema (SPEC §9), as
//! the activity feed's content blobs carry it, so tools written for the Office 365 Management
//! Activity API read Custos's records unchanged.
//!
//! The record keeps every field of our canonical record; where the Microsoft schema gives a
//! name another meaning it wins, and our value moves to a `Custos`-prefixed name:
//! - `RecordType` is the schema's integer: 21 (`CRM`, Dynamics 365) for Custos's own events, an
//!   ingested event's own number when it sent one; `CustosRecordType` keeps our class.
//! - `UserId` is the actor's UPN, as the schema has it; the actor's GUID is `UserKey` (and
//!   `SystemUserId`, the Dynamics name).
//! - `CreationTime` is UTC without a zone suffix, as in the schema's samples, keeping our
//!   microseconds.

use custos_audit::AuditEvent;
use serde_json::{Map, Value as Json, json};

/// The schema's `RecordType` for Dynamics 365 (`CRM`).
const RECORD_TYPE_CRM: i64 = 21;

/// The Custos record types (SPEC §5); an event of another is an ingested application's.
const CUSTOS_RECORD_TYPES: [&str; 4] = [
    "CustosEntity",
    "CustosAdmin",
    "CustosAccess",
    "CustosSupport",
];

/// `event` as a Microsoft 365 / Dynamics 365 audit record.
pub(crate) fn record(event: &AuditEvent) -> Json {
    let Json::Object(mut out) = custos_audit::event_value(event) else {
        unreachable!("an audit record is a JSON object")
    };
    let single = match event.record_ids.as_slice() {
        [id] => Some(id.to_string()),
        _ => None,
    };
    let record_type = if CUSTOS_RECORD_TYPES.contains(&event.record_type.as_str()) {
        Json::from(RECORD_TYPE_CRM)
    } else {
        event
            .record_type
            .parse::<i64>()
            .map_or_else(|_| Json::from(event.record_type.clone()), Json::from)
    };
    let creation = custos_audit::format_creation_time(event.creation_time_us);
    let fields: Vec<Json> = out["Changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| !c["New"].is_null())
        .map(|c| json!({"Name": c["Attribute"], "Value": c["New"]}))
        .collect();
    let mut put = |name: &str, value: Json| {
        out.insert(name.to_string(), value);
    };
    put("CustosRecordType", json!(event.record_type));
    put("RecordType", record_type);
    put(
        "CreationTime",
        json!(creation.trim_end_matches('Z').to_string()),
    );
    put("OrganizationId", json!(event.tenant_id.to_string()));
    put("UserKey", json!(event.user_id));
    put("SystemUserId", json!(event.user_id));
    put("UserId", json!(event.user_upn));
    put(
        "ObjectId",
        json!(single.clone().unwrap_or_else(|| event.entity_name.clone())),
    );
    put("CrmOrganizationUniqueName", json!(event.instance));
    put("ItemType", json!(event.entity_name));
    put("Message", json!(event.operation));
    put("Fields", Json::Array(fields));
    put(
        "QueryResults",
        Json::Array(
            event
                .record_ids
                .iter()
                .map(|id| json!(id.to_string()))
                .collect(),
        ),
    );
    if let Some(id) = single {
        put("EntityId", json!(id));
    }
    Json::Object(sorted(out))
}

/// The fields in name order, so a blob reads the same way every time.
fn sorted(fields: Map<String, Json>) -> Map<String, Json> {
    let mut pairs: Vec<(String, Json)> = fields.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().collect()
}
