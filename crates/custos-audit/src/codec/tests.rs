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

/// Encodes `events` as one segment; decodes it front to back, and each record alone.
fn round_trip(events: &[AuditEvent]) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::default();
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            encoder.encode(e, &mut out);
            out
        })
        .collect();
    let mut dictionary = Dictionary::default();
    for (payload, event) in payloads.iter().zip(events) {
        assert_eq!(&decode_next(payload, &mut dictionary).unwrap(), event);
    }
    assert_eq!(
        &dictionary,
        encoder.dictionary(),
        "reading rebuilds the writer's dictionary"
    );
    for (payload, event) in payloads.iter().zip(events) {
        assert_eq!(&decode_event(payload, &dictionary).unwrap(), event);
    }
    payloads
}

#[test]
fn round_trip_with_repeats_inside_and_across_records() {
    let mut first = sample_event(50);
    first.record_ids.push(Uuid::from_u128(3));
    first.correlation_id = Uuid::new_v4().to_string();
    let second = sample_event(60);
    let payloads = round_trip(&[first, second]);
    assert!(
        payloads[1].len() < payloads[0].len() / 3,
        "repeated values are references: {} vs {}",
        payloads[1].len(),
        payloads[0].len()
    );
}

#[test]
fn rewind_forgets_a_batch_that_was_not_written() {
    let mut encoder = Encoder::default();
    encoder.encode(&sample_event(2), &mut Vec::new());
    let mark = encoder.dictionary().len();
    encoder.encode(&sample_event(5), &mut Vec::new());
    encoder.rewind(mark);
    assert_eq!(encoder.dictionary().len(), mark);
    let mut again = Vec::new();
    encoder.encode(&sample_event(5), &mut again);
    let mut dictionary = Dictionary::default();
    let mut fresh = Encoder::default();
    let mut first = Vec::new();
    fresh.encode(&sample_event(2), &mut first);
    decode_next(&first, &mut dictionary).unwrap();
    assert_eq!(
        decode_next(&again, &mut dictionary)
            .unwrap()
            .record_ids
            .len(),
        5
    );
}

#[test]
fn bad_bytes_are_corruption() {
    let mut bytes = Vec::new();
    Encoder::default().encode(&sample_event(1), &mut bytes);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode_event(&longer, &Dictionary::default()),
        Err(Error::Corrupted(_))
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 1;
    assert!(matches!(
        decode_event(&wrong_version, &Dictionary::default()),
        Err(Error::Corrupted(_))
    ));
    // A reference into an empty dictionary: the second record alone, without the first.
    let mut encoder = Encoder::default();
    encoder.encode(&sample_event(1), &mut Vec::new());
    let mut second = Vec::new();
    encoder.encode(&sample_event(1), &mut second);
    assert!(matches!(
        decode_event(&second, &Dictionary::default()),
        Err(Error::Corrupted(_))
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_event(&bytes, &Dictionary::default());
        let _ = decode_next(&bytes, &mut Dictionary::default());
    }

    #[test]
    fn every_truncation_is_an_error(cut in 0usize..400) {
        let mut bytes = Vec::new();
        Encoder::default().encode(&sample_event(3), &mut bytes);
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(decode_next(&bytes[..cut], &mut Dictionary::default()).is_err());
    }

    #[test]
    fn any_mix_of_ids_round_trips(ids in proptest::collection::vec(0u128..40, 0..60), split in 0usize..60) {
        let mut a = sample_event(0);
        a.record_ids = ids[..split.min(ids.len())].iter().map(|n| Uuid::from_u128(*n)).collect();
        let mut b = sample_event(0);
        b.record_ids = ids.iter().rev().map(|n| Uuid::from_u128(*n)).collect();
        b.user_upn = "other@example.com".into();
        round_trip(&[a, b]);
    }
}
