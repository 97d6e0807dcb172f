//! An audit record in the Microsoft 365 common schema and the Dynamics 365 schema (SPEC §9), as
//! the activity feed's content blobs carry it, so tools written for the Office 365 Management
//! Activity API read Custos's records unchanged.
//!
//! The record keeps every field of our canonical record; where the Microsoft schema gives a
//! name another meaning it wins, and our value moves to a `Custos`-prefixed name:
//! - `RecordType` is always the schema's integer: 21 (`CRM`, Dynamics 365) for Custos's own
//!   events, an ingested event's own number when it sent one, else 148 (`ComplianceConnector`,
//!   "non-Microsoft data imported by data connectors", which is what ingest is);
//!   `CustosRecordType` keeps our class.
//! - `Workload` is `CRM` for Custos's own events, as Dynamics 365's records have it;
//!   `CustosWorkload` keeps ours. An ingested event keeps its own.
//! - `Fields` values are strings (`NameValuePair`): a value that is not text is its JSON.
//! - `Version` is 1, as in Microsoft's records.
//! - `UserId` is the actor's UPN, as the schema has it; the actor's GUID is `UserKey` (and
//!   `SystemUserId`, the Dynamics name).
//! - `CreationTime` is UTC without a zone suffix, as in the schema's samples, keeping our
//!   microseconds.

use custos_audit::AuditEvent;
use serde_json::{Map, Value as Json, json};

/// The schema's `RecordType` for Dynamics 365 (`CRM`).
const RECORD_TYPE_CRM: i64 = 21;
/// The schema's `RecordType` for non-Microsoft data imported by connectors
/// (`ComplianceConnector`): an ingested event that names no number of its own.
const RECORD_TYPE_CONNECTOR: i64 = 148;

/// The Custos record types (SPEC §5); an event of another is an ingested application's.
const CUSTOS_RECORD_TYPES: [&str; 5] = [
    "CustosEntity",
    "CustosAdmin",
    "CustosAccess",
    "CustosSupport",
    crate::witness::RECORD_TYPE,
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
    let own = CUSTOS_RECORD_TYPES.contains(&event.record_type.as_str());
    let record_type = if own {
        RECORD_TYPE_CRM
    } else {
        event
            .record_type
            .parse::<i64>()
            .unwrap_or(RECORD_TYPE_CONNECTOR)
    };
    let creation = custos_audit::format_creation_time(event.creation_time_us);
    let fields: Vec<Json> = out["Changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| !c["New"].is_null())
        .map(|c| {
            let value = match &c["New"] {
                Json::String(text) => text.clone(),
                other => other.to_string(),
            };
            json!({"Name": c["Attribute"], "Value": value})
        })
        .collect();
    let mut put = |name: &str, value: Json| {
        out.insert(name.to_string(), value);
    };
    put("CustosRecordType", json!(event.record_type));
    put("RecordType", json!(record_type));
    put("Version", json!(1));
    if own {
        put("CustosWorkload", json!(event.workload));
        put("Workload", json!("CRM"));
    }
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

#[cfg(test)]
mod tests {
    use custos_audit::{Change, EntityCategory, Origin, ResultStatus, UserType};
    use uuid::Uuid;

    use super::*;

    fn event(record_type: &str, ids: usize) -> AuditEvent {
        AuditEvent {
            id: Uuid::from_u128(1),
            creation_time_us: 1_732_000_000_123_456,
            tenant_id: Uuid::from_u128(2),
            instance: "main".into(),
            instance_url: "http://127.0.0.1/main".into(),
            workload: "Custos".into(),
            record_type: record_type.into(),
            operation: "Update".into(),
            category: String::new(),
            user_id: "u-1".into(),
            user_upn: "ann@contoso.test".into(),
            user_type: UserType::Regular,
            caller_id: String::new(),
            client_ip: "10.0.0.7".into(),
            user_agent: "agent".into(),
            origin: Origin::Api,
            correlation_id: "c-1".into(),
            session_id: String::new(),
            client_request_id: String::new(),
            result_status: ResultStatus::Succeeded,
            error_code: String::new(),
            entity_name: "account".into(),
            entity_category: EntityCategory::OutOfBox,
            record_ids: (0..ids).map(|i| Uuid::from_u128(10 + i as u128)).collect(),
            query: String::new(),
            result_count: ids as u64,
            changes: vec![
                Change {
                    attribute: "name".into(),
                    old: Some("\"Old\"".into()),
                    new: Some("\"New\"".into()),
                },
                Change {
                    attribute: "telephone1".into(),
                    old: Some("\"555\"".into()),
                    new: None,
                },
                Change {
                    attribute: "numberofemployees".into(),
                    old: None,
                    new: Some("5".into()),
                },
            ],
            details: String::new(),
        }
    }

    #[test]
    fn our_events_are_crm_records_in_the_microsoft_schema() {
        let record = record(&event("CustosEntity", 1));
        assert_eq!(record["RecordType"], 21);
        assert_eq!(record["CustosRecordType"], "CustosEntity");
        assert_eq!(record["Workload"], "CRM");
        assert_eq!(record["CustosWorkload"], "Custos");
        assert_eq!(record["Version"], 1);
        assert_eq!(record["CreationTime"], "2024-11-19T07:06:40.123456");
        assert_eq!(record["UserId"], "ann@contoso.test");
        assert_eq!(
            (record["UserKey"].clone(), record["SystemUserId"].clone()),
            (json!("u-1"), json!("u-1"))
        );
        assert_eq!(record["OrganizationId"], Uuid::from_u128(2).to_string());
        assert_eq!(record["EntityId"], Uuid::from_u128(10).to_string());
        assert_eq!(record["ObjectId"], record["EntityId"]);
        assert_eq!(
            record["Fields"],
            json!([{"Name": "name", "Value": "New"}, {"Name": "numberofemployees", "Value": "5"}]),
            "only attributes with a new value, each a string"
        );
        assert_eq!(record["Changes"][1]["Old"], "555", "our changes stay whole");
        let keys: Vec<&String> = record.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "fields in name order");
    }

    #[test]
    fn lists_have_no_single_entity_and_ingested_types_keep_their_own() {
        let list = record(&event("CustosEntity", 3));
        assert!(list.get("EntityId").is_none());
        assert_eq!(list["ObjectId"], "account");
        assert_eq!(list["QueryResults"].as_array().unwrap().len(), 3);
        assert_eq!(
            record(&event("25", 0))["RecordType"],
            25,
            "a number stays a number"
        );
        let ingested = record(&event("PayrollRun", 0));
        assert_eq!(ingested["RecordType"], 148, "the schema's integer, always");
        assert_eq!(ingested["CustosRecordType"], "PayrollRun");
        assert_eq!(
            ingested["Workload"], "Custos",
            "an ingested event keeps its workload"
        );
    }
}
