use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::event::sample_event;
use crate::ids::{IdDict, IdTable};

/// The strings of a segment that numbered none.
const NO_STRINGS: &[String] = &[];

/// Encodes `event` with `encoder` into a fresh buffer.
fn encode(encoder: &mut Encoder, ids: &mut IdDict, event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::new();
    encoder.encode(event, ids, &mut out, &mut Vec::new());
    out
}

/// Encodes `events` as one segment of a fresh log; decodes it front to back, and each record
/// alone.
fn round_trip(events: &[AuditEvent]) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::default();
    let mut written = IdDict::default();
    let mut numbers = Vec::new();
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            encoder.encode(e, &mut written, &mut out, &mut Vec::new());
            numbers.push(
                e.record_ids
                    .iter()
                    .map(|id| written.number(id).unwrap())
                    .collect::<Vec<_>>(),
            );
            out
        })
        .collect();
    let numbered = encoder.take_numbered();
    let (mut ids, mut strings) = (IdDict::default(), Vec::new());
    for ((payload, event), numbers) in payloads.iter().zip(events).zip(&numbers) {
        let (decoded, record_numbers) = decode_next(payload, &mut ids, &mut strings).unwrap();
        assert_eq!(&decoded, event);
        assert_eq!(
            &record_numbers, numbers,
            "reading gives the writer's numbers"
        );
    }
    assert_eq!(
        (ids.table.since(0), &strings),
        (numbered.ids, &numbered.strings),
        "reading numbers what the writer numbered"
    );
    for (payload, event) in payloads.iter().zip(events) {
        assert_eq!(
            &decode_event(payload, &ids.table, strings.as_slice()).unwrap(),
            event
        );
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
fn record_ids_keep_their_numbers_across_segments_and_strings_do_not() {
    let mut encoder = Encoder::default();
    let mut ids = IdDict::default();
    encode(&mut encoder, &mut ids, &sample_event(4));
    let numbered = encoder.take_numbered();
    encoder.new_segment();
    let second = encode(&mut encoder, &mut ids, &sample_event(4));
    let again = encoder.take_numbered();
    assert_eq!(
        again.first_id, 5,
        "tenant and four records were numbered before"
    );
    assert!(again.ids.is_empty(), "no record id is written twice");
    assert_eq!(
        again.strings.len(),
        numbered.strings.len(),
        "strings start over"
    );
    // The second segment decodes from the log's ids alone.
    let mut known = IdDict::default();
    for id in numbered.ids {
        known.push(id);
    }
    let mut strings = Vec::new();
    assert_eq!(
        decode_next(&second, &mut known, &mut strings)
            .unwrap()
            .0
            .record_ids,
        sample_event(4).record_ids
    );
}

#[test]
fn forget_forgets_batches_that_were_not_made_durable() {
    let mut encoder = Encoder::default();
    let mut ids = IdDict::default();
    let first = encode(&mut encoder, &mut ids, &sample_event(2));
    encoder.take_numbered();
    encode(&mut encoder, &mut ids, &sample_event(4));
    let second = encoder.take_numbered();
    encode(&mut encoder, &mut ids, &sample_event(5));
    let third = encoder.take_numbered();
    encoder.forget(&[second, third], &mut ids);
    assert_eq!(ids.table.len(), 3);
    assert_eq!(ids.number(&Uuid::from_u128(4)), None);
    let again = encode(&mut encoder, &mut ids, &sample_event(5));
    let (mut read, mut strings) = (IdDict::default(), Vec::new());
    decode_next(&first, &mut read, &mut strings).unwrap();
    assert_eq!(
        decode_next(&again, &mut read, &mut strings)
            .unwrap()
            .0
            .record_ids
            .len(),
        5
    );
}

#[test]
fn bad_bytes_are_corruption() {
    let none = IdTable::default();
    let bytes = encode(
        &mut Encoder::default(),
        &mut IdDict::default(),
        &sample_event(1),
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode_event(&longer, &none, NO_STRINGS),
        Err(Error::Corrupted(_))
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 2;
    assert!(matches!(
        decode_event(&wrong_version, &none, NO_STRINGS),
        Err(Error::Corrupted(_))
    ));
    // A reference to nothing: the second record alone, without the first.
    let (mut encoder, mut ids) = (Encoder::default(), IdDict::default());
    encode(&mut encoder, &mut ids, &sample_event(1));
    let second = encode(&mut encoder, &mut ids, &sample_event(1));
    assert!(matches!(
        decode_event(&second, &none, NO_STRINGS),
        Err(Error::Corrupted(_))
    ));
}

#[test]
fn a_record_id_referenced_before_it_is_defined_is_corruption() {
    let repeated = Uuid::from_u128(100);
    let mut event = sample_event(0);
    event.record_ids = vec![repeated, repeated];
    let bytes = encode(&mut Encoder::default(), &mut IdDict::default(), &event);
    let decoded = decode_next(&bytes, &mut IdDict::default(), &mut Vec::new());
    assert_eq!(decoded.expect("decodes").0.record_ids, event.record_ids);
    // The list is [defined inline (0, the id), reference to it (2: the tenant id is number 0)];
    // put the reference first.
    let at = bytes
        .windows(16)
        .position(|w| w == repeated.as_bytes())
        .expect("the id inline");
    assert_eq!((bytes[at - 1], bytes[at + 16]), (0, 2));
    let mut swapped = bytes.clone();
    swapped[at - 1] = 2;
    swapped[at] = 0;
    swapped[at + 1..at + 17].copy_from_slice(repeated.as_bytes());
    let decoded = decode_next(&swapped, &mut IdDict::default(), &mut Vec::new());
    assert!(
        matches!(&decoded, Err(Error::Corrupted(m)) if m.contains("before it was defined")),
        "{decoded:?}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_event(&bytes, &IdTable::default(), NO_STRINGS);
        let _ = decode_next(&bytes, &mut IdDict::default(), &mut Vec::new());
    }

    #[test]
    fn every_truncation_is_an_error(cut in 0usize..400) {
        let bytes = encode(&mut Encoder::default(), &mut IdDict::default(), &sample_event(3));
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(decode_next(&bytes[..cut], &mut IdDict::default(), &mut Vec::new()).is_err());
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
