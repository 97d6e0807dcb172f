use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::event::{Change, EntityCategory, Origin, ResultStatus, UserType};

pub(crate) fn sample_event(n_ids: usize) -> AuditEvent {
    AuditEvent {
        id: Uuid::now_v7(),
        creation_time_us: 1_700_000_000_123_456,
        tenant_id: Uuid::from_u128(7),
        instance: "main".into(),
        instance_url: "http://127.0.0.1:8080/main".into(),
        workload: "Custos".into(),
        record_type: "CustosEntity".into(),
        operation: "RetrieveMultiple".into(),
        category: "accessed-out-of-box-entity".into(),
        user_id: Uuid::from_u128(9).to_string(),
        user_upn: "ana@example.com".into(),
        user_type: UserType::Regular,
        caller_id: String::new(),
        client_ip: "127.0.0.1".into(),
        user_agent: "curl/8".into(),
        origin: Origin::Api,
        correlation_id: "c".into(),
        session_id: "s".into(),
        client_request_id: String::new(),
        result_status: ResultStatus::Succeeded,
        error_code: String::new(),
        entity_name: "account".into(),
        entity_category: EntityCategory::OutOfBox,
        record_ids: (0..n_ids as u128).map(Uuid::from_u128).collect(),
        query: "$filter=name eq 'x'".into(),
        result_count: n_ids as u64,
        changes: vec![Change {
            attribute: "name".into(),
            old: None,
            new: Some("\"x\"".into()),
        }],
        details: String::new(),
    }
}

#[test]
fn round_trip() {
    let event = sample_event(50);
    let mut bytes = Vec::new();
    encode_event(&event, &mut bytes);
    assert_eq!(decode_event(&bytes).unwrap(), event);
}

#[test]
fn trailing_bytes_and_unknown_version_are_corruption() {
    let mut bytes = Vec::new();
    encode_event(&sample_event(1), &mut bytes);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(decode_event(&longer), Err(Error::Corrupted(_))));
    bytes[0] = 99;
    assert!(matches!(decode_event(&bytes), Err(Error::Corrupted(_))));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_event(&bytes);
    }

    #[test]
    fn every_truncation_is_an_error(cut in 0usize..200) {
        let mut bytes = Vec::new();
        encode_event(&sample_event(3), &mut bytes);
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(decode_event(&bytes[..cut]).is_err());
    }
}
