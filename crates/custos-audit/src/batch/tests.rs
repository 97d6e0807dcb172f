use uuid::Uuid;

use super::{batch_len_max, decode_batch as decode, encode_batch as encode};
use crate::event::{AuditEvent, Change, EntityCategory, Origin, ResultStatus, UserType};

fn sample(n_ids: u128) -> AuditEvent {
    AuditEvent {
        id: Uuid::now_v7(),
        creation_time_us: -1_700_000_000_123_456,
        tenant_id: Uuid::from_u128(7),
        instance: "main".into(),
        instance_url: "https://custos.example/main".into(),
        workload: "Custos".into(),
        record_type: "CustosEntity".into(),
        operation: "Update".into(),
        category: "changed-out-of-box-entity".into(),
        user_id: Uuid::from_u128(9).to_string(),
        user_upn: "zoë@contoso.test".into(),
        user_type: UserType::DcAdmin,
        caller_id: String::new(),
        client_ip: "203.0.113.9".into(),
        user_agent: "curl/8 \u{1F600}".into(),
        origin: Origin::SupportTool,
        correlation_id: "c".into(),
        session_id: "s".into(),
        client_request_id: "r".into(),
        result_status: ResultStatus::Denied,
        error_code: "Forbidden".into(),
        entity_name: "account".into(),
        entity_category: EntityCategory::Custom,
        record_ids: (0..n_ids).map(Uuid::from_u128).collect(),
        query: "$filter=name eq 'x'".into(),
        result_count: u64::MAX,
        changes: vec![
            Change {
                attribute: "name".into(),
                old: None,
                new: Some("\"Zoë \\\" quoted\"".into()),
            },
            Change {
                attribute: "revenue".into(),
                old: Some("1000.0".into()),
                new: None,
            },
        ],
        details: "not JSON at all {".into(),
    }
}

/// Encodes `events`, decodes them back and checks every field and every leaf.
fn check(events: &[AuditEvent]) {
    let bytes = encode(events.iter());
    let back = decode(&bytes).unwrap();
    assert_eq!(back.len(), events.len());
    assert_eq!(events, back.as_slice());
    for (sent, read) in events.iter().zip(&back) {
        assert_eq!(crate::canonical_json(sent), crate::canonical_json(read));
    }
    let bound: usize = events.iter().map(batch_len_max).sum();
    assert!(bytes.len() <= bound + 16, "{} > {bound}", bytes.len());
}

#[test]
fn events_come_back_exactly() {
    check(&[]);
    check(&[sample(0)]);
    check(&[sample(5000), sample(3), sample(0)]);
    // Ids and strings repeated within a message are written once, then referred to (two or
    // three bytes per record id instead of seventeen).
    let once = encode([sample(5000)].iter()).len();
    let twice = encode([sample(5000), sample(5000)].iter()).len();
    assert!(
        once > 5000 * 17 && twice < once + 5000 * 3,
        "{once} then {twice}"
    );
    check(&[sample(5000), sample(5000)]);
}

#[test]
fn damaged_messages_are_refused_never_misread() {
    let bytes = encode([sample(3), sample(2)].iter());
    for end in 0..bytes.len() {
        assert!(decode(&bytes[..end]).is_err(), "cut at {end}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(
        decode(&trailing)
            .unwrap_err()
            .to_string()
            .contains("after the last event")
    );
    let mut magic = bytes.clone();
    magic[3] = b'2';
    assert!(
        decode(&magic)
            .unwrap_err()
            .to_string()
            .contains("bad magic")
    );
    let mut huge = b"CAB1".to_vec();
    huge.extend_from_slice(&[0xff; 10]);
    assert!(decode(&huge).is_err());
}
