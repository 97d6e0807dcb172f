use uuid::Uuid;

use super::PurgedRange;
use crate::event::sample_event;
use crate::log::DAY_US;
use crate::{AuditEvent, AuditLog, LogConfig, Origin, PurgedPartition, RetentionPolicy, Seq};

const NOW: i64 = 1_800_000_000_000_000;

fn open(dir: &std::path::Path) -> AuditLog {
    AuditLog::open(LogConfig::new(dir, [3; 32], "test.example/log")).unwrap()
}

fn event_at(time_us: i64, record: u128) -> AuditEvent {
    let mut event = sample_event(0);
    event.creation_time_us = time_us;
    event.operation = "Retrieve".into();
    event.record_ids = vec![Uuid::from_u128(record), Uuid::from_u128(record + 1_000)];
    event
}

/// Kept a day, but `Keep` forever: what is ten days old has expired, unless it is a `Keep`.
fn policy() -> RetentionPolicy {
    RetentionPolicy {
        default_days: 1,
        instance_days: Default::default(),
        rules: vec![crate::RetentionRule {
            name: "kept".into(),
            record_types: Vec::new(),
            operations: vec!["Keep".into()],
            users: Vec::new(),
            days: crate::KEEP_FOREVER,
        }],
    }
}

fn describe(_: &PurgedPartition) -> AuditEvent {
    let mut event = event_at(NOW, 999);
    event.record_ids.clear();
    event
}

/// What the stream would carry: a partition of three events kept forever, one of six events
/// ten days old, then today's (each cut by the next day's events). The purge falls between
/// two partitions kept.
fn history() -> Vec<AuditEvent> {
    let kept = (0..3).map(|i| {
        let mut event = event_at(NOW - 30 * DAY_US + i, 500 + i as u128);
        event.operation = "Keep".into();
        event
    });
    kept.chain((0..6).map(|i| event_at(NOW - 10 * DAY_US + i, i as u128)))
        .chain((6..9).map(|i| event_at(NOW - 1_000 + i, i as u128)))
        .collect()
}

fn signed_note(log: &AuditLog) -> String {
    let (_, note) = log.sign_checkpoint().unwrap().unwrap();
    // Origin, size and root: what two logs of the same events must share.
    note.lines().take(3).collect::<Vec<_>>().join("\n")
}

/// One node decides, every node carries out the same claim at the same place, and a node
/// built later from the kept leaves and record ids holds the same tree and verifies.
#[test]
fn a_claim_is_carried_out_alike_on_every_node_and_a_later_node_takes_the_range() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));
    let events = history();
    for log in [&a, &b] {
        log.append_all(events.clone()).unwrap();
        log.wait_sealed().unwrap();
        assert_eq!(log.partition_ends(), vec![3, 9]);
    }
    let claims: Vec<AuditEvent> = a
        .purge_claims(NOW, &policy(), &describe)
        .unwrap()
        .into_iter()
        .map(|(partition, event)| {
            assert_eq!((partition.first_seq, partition.events), (3, 6));
            event
        })
        .collect();
    assert_eq!(claims.len(), 1, "the ten-day-old partition");
    assert!(
        a.purge_claims(
            NOW,
            &RetentionPolicy {
                default_days: 30,
                ..policy()
            },
            &describe
        )
        .unwrap()
        .is_empty(),
        "nothing has expired under thirty days"
    );
    // The claim goes into every log, where it waits for a signed checkpoint.
    let mut kept: Vec<PurgedRange> = Vec::new();
    for log in [&a, &b] {
        log.append_all(claims.clone()).unwrap();
        let unsigned = log
            .carry_out_purges(&mut |range| {
                kept.push(range.clone());
                Ok(())
            })
            .unwrap();
        assert!(
            unsigned.is_empty(),
            "not before a checkpoint covers the claim"
        );
    }
    assert!(
        a.purge_claims(NOW, &policy(), &describe)
            .unwrap()
            .is_empty(),
        "a pending claim is not claimed again"
    );
    for log in [&a, &b] {
        log.sign_checkpoint().unwrap();
        let done = log
            .carry_out_purges(&mut |range| {
                kept.push(range.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(done, vec![(3, 6)]);
        assert_eq!(log.purged_events(), 6);
        assert!(
            log.carry_out_purges(&mut |_| Ok(())).unwrap().is_empty(),
            "once"
        );
    }
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0], kept[1], "both nodes keep the same range");
    let range = kept.pop().unwrap();
    assert_eq!((range.first, range.count, range.event_seq), (3, 6, 12));
    assert_eq!(range.leaves.len(), 6);
    assert_eq!(range.ids.len(), 12, "two record ids per event");
    assert!(
        a.purge_claims(NOW, &policy(), &describe)
            .unwrap()
            .is_empty()
    );

    // A node built later: the purged range from what was kept, the rest as the stream has it.
    let dir_c = tempfile::tempdir().unwrap();
    let c = open(dir_c.path());
    c.append_all(events[..3].to_vec()).unwrap();
    assert!(
        c.import_purged(range.clone()).is_err(),
        "only where the log ends, with nothing in its active partition"
    );
    c.seal_active().unwrap();
    c.import_purged(range.clone()).unwrap();
    assert!(
        c.import_purged(range).is_err(),
        "only where the log ends, with nothing in its active partition"
    );
    c.append_all(events[9..].to_vec()).unwrap();
    c.append_all(claims).unwrap();
    c.sign_checkpoint().unwrap();
    assert_eq!(c.carry_out_purges(&mut |_| Ok(())).unwrap(), vec![(3, 6)]);
    assert_eq!(signed_note(&c), signed_note(&a), "the same tree");
    assert_eq!(signed_note(&b), signed_note(&a));
    let key = a.verifier_key();
    drop((a, b, c));
    for dir in [&dir_a, &dir_b, &dir_c] {
        let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        // And it opens again, every range accounted for.
        let log = open(dir.path());
        assert_eq!((log.len(), log.purged_events()), (13, 6));
    }
}

/// Nothing is deleted on a claim the log cannot stand behind: one an application ingested,
/// or one that names records that are not one of this log's partitions.
#[test]
fn claims_that_are_not_a_purge_of_this_log_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append_all(history()).unwrap();
    log.wait_sealed().unwrap();
    let claims = log.purge_claims(NOW, &policy(), &describe).unwrap();
    let mut ingested = claims[0].1.clone();
    ingested.id = Uuid::now_v7();
    ingested.origin = Origin::Ingest;
    let mut elsewhere = claims[0].1.clone();
    elsewhere.id = Uuid::now_v7();
    elsewhere.details = elsewhere.details.replace("\"Events\":6", "\"Events\":4");
    log.append_all(vec![ingested]).unwrap();
    log.sign_checkpoint().unwrap();
    assert!(
        log.carry_out_purges(&mut |_| Ok(())).unwrap().is_empty(),
        "an ingested claim is no claim"
    );
    log.append_all(vec![elsewhere]).unwrap();
    log.sign_checkpoint().unwrap();
    let refused = log.carry_out_purges(&mut |_| Ok(())).unwrap_err();
    assert!(
        refused.to_string().contains("not one sealed partition"),
        "{refused}"
    );
    assert_eq!(log.purged_events(), 0);
    let seqs: Vec<Seq> = log
        .read_from(0, 100)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs.len(), 14, "every event is still there");
}
