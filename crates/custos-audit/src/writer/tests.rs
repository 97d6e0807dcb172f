use std::fs::OpenOptions;
use std::io::Write;

use uuid::Uuid;

use super::*;
use crate::event::Origin;
use crate::event::sample_event;

fn open(dir: &std::path::Path) -> AuditLog {
    AuditLog::open(LogConfig::new(dir, [3; 32], "test.example/log")).unwrap()
}

fn all(query: SearchQuery) -> SearchQuery {
    SearchQuery {
        start_us: i64::MIN,
        end_us: i64::MAX,
        top: 1000,
        ..query
    }
}

#[test]
fn appended_events_survive_reopen_and_are_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let log = open(dir.path());
        for i in 0..10 {
            let mut event = sample_event(2);
            event.record_ids = vec![Uuid::from_u128(1000 + i)];
            ids.push(event.id);
            assert_eq!(log.append(event).unwrap(), i as u64);
        }
    }
    let log = open(dir.path());
    assert_eq!(log.len(), 10);
    let page = log
        .search(&all(SearchQuery {
            record_ids: vec![Uuid::from_u128(1003)],
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].1.id, ids[3]);
    assert_eq!(log.get(ids[7]).unwrap().unwrap().1.id, ids[7]);
}

#[test]
fn append_all_answers_each_event_with_its_place_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(sample_event(1)).unwrap();
    let events: Vec<AuditEvent> = (0..500).map(|_| sample_event(3)).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let seqs = log.append_all(events).unwrap();
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    for (id, seq) in ids.iter().zip(&seqs) {
        assert_eq!(log.get(*id).unwrap().unwrap().0, *seq);
    }
    assert!(log.append_all(Vec::new()).unwrap().is_empty());
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for _ in 0..3 {
            log.append(sample_event(1)).unwrap();
        }
    }
    let segment = dir.path().join(format!("seg-{:020}.log", 0));
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[200, 1, 0, 0, 9, 9]).unwrap();
    drop(file);
    let log = open(dir.path());
    assert_eq!(log.len(), 3);
    assert_eq!(log.append(sample_event(1)).unwrap(), 3);
    drop(log);
    assert_eq!(open(dir.path()).len(), 4);
}

#[test]
fn a_closed_log_has_written_what_was_queued_and_refuses_what_comes_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let (answered, answers) = mpsc::channel();
    for _ in 0..3 {
        let answered = answered.clone();
        let queued = log.try_append(
            sample_event(1),
            Box::new(move |outcome| answered.send(outcome.is_ok()).unwrap()),
        );
        assert!(queued.is_ok());
    }
    log.close().unwrap();
    assert_eq!(answers.try_iter().collect::<Vec<_>>(), vec![true; 3]);
    let refused = log
        .append(sample_event(1))
        .expect_err("a closed log refuses");
    assert!(matches!(refused, Error::Unavailable(_)), "{refused}");
    assert!(log.close().is_err(), "its writer has stopped");
    drop(log);
    assert_eq!(open(dir.path()).len(), 3);
}

#[test]
fn paging_walks_every_event_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..25 {
        log.append(sample_event(0)).unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = log
            .search(&all(SearchQuery {
                top: 10,
                before_seq: before,
                ..Default::default()
            }))
            .unwrap();
        seen.extend(page.events.iter().map(|(seq, _)| *seq));
        match page.next_before_seq {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).rev().collect::<Vec<_>>());
}

#[test]
fn filters_combine_with_and_and_lists_with_or() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for (op, origin, upn) in [
        ("Create", Origin::Api, "a@x"),
        ("Update", Origin::Api, "b@x"),
        ("Create", Origin::WebUI, "B@x"),
        ("Delete", Origin::Api, "a@x"),
    ] {
        let mut event = sample_event(0);
        event.operation = op.into();
        event.origin = origin;
        event.user_upn = upn.into();
        log.append(event).unwrap();
    }
    let count = |q: SearchQuery| log.search(&all(q)).unwrap().events.len();
    assert_eq!(
        count(SearchQuery {
            operations: vec!["create".into()],
            ..Default::default()
        }),
        2
    );
    assert_eq!(
        count(SearchQuery {
            operations: vec!["Create".into(), "Delete".into()],
            ..Default::default()
        }),
        3
    );
    assert_eq!(
        count(SearchQuery {
            users: vec!["b@x".into()],
            ..Default::default()
        }),
        2
    );
    assert_eq!(
        count(SearchQuery {
            users: vec!["b@x".into()],
            origins: vec![Origin::Api],
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(SearchQuery {
            operations: vec!["Nope".into()],
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        count(SearchQuery {
            text: Some("B@X".into()),
            ..Default::default()
        }),
        2
    );
}

#[test]
fn proofs_verify_against_signed_checkpoints_and_restarts_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let (first, key) = {
        let log = open(dir.path());
        for _ in 0..5 {
            let event = sample_event(1);
            ids.push(event.id);
            log.append(event).unwrap();
        }
        (log.sign_checkpoint().unwrap().unwrap(), log.verifier_key())
    };
    assert_eq!(first.0, 5);
    // Reopened with an hour between checkpoints, so nothing signs behind the test's back.
    let log = AuditLog::open(LogConfig {
        checkpoint_interval_ms: 3_600_000,
        ..LogConfig::new(dir.path(), [3; 32], "test.example/log")
    })
    .unwrap();
    assert_eq!(
        log.checkpoint_at(5).unwrap().as_deref(),
        Some(first.1.as_str()),
        "signed checkpoints survive a restart"
    );
    for _ in 0..4 {
        log.append(sample_event(3)).unwrap();
    }
    // A proof is made against the latest signed checkpoint: reading never makes the log sign.
    let proof = log.inclusion_proof(ids[2]).unwrap().unwrap();
    assert_eq!((proof.leaf_index, proof.tree_size), (2, 5));
    assert_eq!(log.latest_checkpoint().unwrap().unwrap().0, 5);
    log.sign_checkpoint().unwrap();
    let proof = log.inclusion_proof(ids[2]).unwrap().unwrap();
    let signed = crate::verify_note(&proof.checkpoint, &key).unwrap();
    assert_eq!((proof.leaf_index, proof.tree_size, signed.size), (2, 9, 9));
    let (_, event) = log.get(ids[2]).unwrap().unwrap();
    let leaf = crate::event_leaf_hash(&event);
    assert_eq!(leaf, proof.leaf_hash);
    assert!(crate::verify_inclusion(
        2,
        9,
        &leaf,
        &proof.hashes,
        &signed.root
    ));
    let old = crate::verify_note(&first.1, &key).unwrap();
    let consistency = log.consistency_proof(5, 9).unwrap();
    assert!(crate::verify_consistency(
        5,
        9,
        &old.root,
        &signed.root,
        &consistency
    ));
    assert!(log.consistency_proof(0, 9).is_err());
    assert!(log.consistency_proof(5, 10).is_err());
}

#[test]
fn a_key_rotation_hands_trust_over_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = |seed: [u8; 32], next: Option<[u8; 32]>| LogConfig {
        next_signing_seed: next,
        ..LogConfig::new(dir.path(), seed, "test.example/log")
    };
    let (root, old_note) = {
        let log = open(dir.path());
        for _ in 0..4 {
            log.append(sample_event(1)).unwrap();
        }
        let old_note = log.sign_checkpoint().unwrap().unwrap().1;
        let root = log.verifier_key();
        assert!(log.rotate_key([3; 32]).is_err(), "the key in force");
        assert_eq!(
            log.rotate_key([9; 32]).unwrap(),
            4,
            "a handover at a signed size"
        );
        assert_eq!(log.verifier_keys().len(), 2);
        log.append(sample_event(0)).unwrap();
        assert_eq!(log.rotate_key([4; 32]).unwrap(), 5);
        assert_ne!(log.verifier_key(), root);
        log.append(sample_event(2)).unwrap();
        let (size, note) = log.sign_checkpoint().unwrap().unwrap();
        assert_eq!(size, 6);
        assert!(
            crate::verify_note(&note, &root).is_err(),
            "the old key signs no more"
        );
        let mut key = root.clone();
        crate::verify_note_chained(&log.checkpoint_at(4).unwrap().unwrap(), &mut key).unwrap();
        crate::verify_note_chained(&log.checkpoint_at(5).unwrap().unwrap(), &mut key).unwrap();
        assert_eq!(crate::verify_note(&note, &key).unwrap().size, 6);
        assert_eq!(
            log.verifier_keys()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [0, 4, 5]
        );
        (root, old_note)
    };
    // Only the old seed: the key in force is missing, and the log says so.
    let error = AuditLog::open(config([3; 32], None))
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("not among the signing keys"),
        "{error}"
    );
    // The interrupted-rotation case: the old seed as current, the new one as next.
    {
        let log = AuditLog::open(config([3; 32], Some([4; 32]))).unwrap();
        assert_eq!(log.verifier_keys()[0].1, root);
        log.append(sample_event(1)).unwrap();
        log.sign_checkpoint().unwrap();
    }
    let log = AuditLog::open(config([4; 32], None)).unwrap();
    assert_eq!(log.len(), 7);
    drop(log);
    let chain = std::fs::read_to_string(dir.path().join("verifier.key")).unwrap();
    assert_eq!(chain.lines().next(), Some(root.as_str()));
    let report = crate::verify_log(dir.path(), &root, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.checkpoints >= 3);
    let new_key = chain.lines().nth(2).unwrap();
    let report = crate::verify_log(dir.path(), new_key, &mut |_, _| {}).unwrap();
    assert!(!report.is_ok(), "the root of trust is the first key");
    assert!(crate::verify_note(&old_note, &root).is_ok());
}

#[test]
fn a_log_whose_last_handle_goes_with_an_answer_does_not_wait_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(open(dir.path()));
    let held = log.clone();
    let (release, released) = mpsc::channel::<()>();
    let (answered, answer) = mpsc::channel();
    let queued = log.try_append(
        sample_event(1),
        Box::new(move |outcome| {
            released.recv().unwrap();
            // The last handle of the log goes here, on the writer's thread.
            drop(held);
            answered.send(outcome).unwrap();
        }),
    );
    assert!(queued.is_ok());
    drop(log);
    release.send(()).unwrap();
    let outcome = answer
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the writer waited for itself to close");
    assert_eq!(outcome.unwrap(), 0);
    assert_eq!(open(dir.path()).len(), 1);
}

#[test]
fn a_log_cut_behind_a_signed_checkpoint_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for _ in 0..3 {
            log.append(sample_event(1)).unwrap();
        }
        log.sign_checkpoint().unwrap();
    }
    let segment = dir.path().join(format!("seg-{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let error = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
        .err()
        .expect("refused");
    assert!(matches!(error, Error::Corrupted(_)), "{error}");
    assert!(
        error.to_string().contains("inside a signed checkpoint"),
        "{error}"
    );
}

/// Every regular file in `dir`, by name.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_link_or_a_fifo_where_the_log_keeps_a_file_is_refused_and_nothing_goes_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let verifier = {
        let log = open(dir.path());
        for _ in 0..3 {
            log.append(sample_event(1)).unwrap();
        }
        log.sign_checkpoint().unwrap();
        log.verifier_key()
    };
    let names = file_names(dir.path());
    for kept in ["LOCK", "checkpoints.log", "ids.dat", "leaves.dat"] {
        assert!(names.iter().any(|n| n == kept), "{kept} in {names:?}");
    }
    for name in &names {
        // The file moved out of the folder, a link to it left at its name: the log neither
        // opens through the link nor writes to the file it points at.
        let at = dir.path().join(name);
        let moved = outside.path().join(name);
        std::fs::rename(&at, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &at).unwrap();
        let before = std::fs::read(&moved).unwrap();
        let error = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
            .err()
            .unwrap_or_else(|| panic!("a link at {name} was followed"));
        assert!(
            error.to_string().contains("symbolic link"),
            "{name}: {error}"
        );
        assert_eq!(std::fs::read(&moved).unwrap(), before, "{name} untouched");
        // Verification reads what the log holds; the lock and the kept verifier key are the
        // running log's own.
        if !["LOCK", "verifier.key"].contains(&name.as_str()) {
            let error = crate::verify_log(dir.path(), &verifier, &mut |_, _| {})
                .err()
                .unwrap_or_else(|| panic!("verify followed a link at {name}"));
            assert!(
                error.to_string().contains("symbolic link"),
                "{name}: {error}"
            );
        }
        std::fs::remove_file(&at).unwrap();
        std::fs::rename(&moved, &at).unwrap();
    }
    // A FIFO at a file's name would block a reader forever: it is refused at once.
    let checkpoints = dir.path().join("checkpoints.log");
    let kept = outside.path().join("checkpoints.log");
    std::fs::rename(&checkpoints, &kept).unwrap();
    crate::files::tests::make_fifo(&checkpoints);
    let error = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
        .err()
        .expect("a FIFO refused");
    assert!(error.to_string().contains("not a regular file"), "{error}");
    std::fs::remove_file(&checkpoints).unwrap();
    std::fs::rename(&kept, &checkpoints).unwrap();
    let log = open(dir.path());
    assert_eq!(log.len(), 3, "the log itself was never touched");
}

const DAY: i64 = 86_400_000_000;

fn event_at(time_us: i64, operation: &str, record: u128) -> AuditEvent {
    let mut event = sample_event(0);
    event.creation_time_us = time_us;
    event.operation = operation.into();
    event.record_ids = vec![Uuid::from_u128(record)];
    event
}

#[test]
fn retention_purges_whole_expired_partitions_and_verification_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_800_000_000_000_000i64;
    let log = open(dir.path());
    let days = [
        (-100, "Retrieve", 5),
        (-97, "UpdateAuditSettings", 1),
        (-95, "ExportToExcel", 2),
        (-50, "Retrieve", 3),
        (0, "Retrieve", 2),
    ];
    let mut record = 0u128;
    for (offset, operation, n) in days {
        for i in 0..n {
            record += 1;
            let mut event = event_at(now + offset * DAY + i, operation, record);
            if operation == "UpdateAuditSettings" {
                event.record_type = "CustosAdmin".into();
            }
            log.append(event).unwrap();
        }
    }
    let (before_size, before_note) = log.sign_checkpoint().unwrap().unwrap();
    let key = log.verifier_key();
    let policy = crate::RetentionPolicy {
        default_days: 90,
        instance_days: Default::default(),
        rules: vec![
            crate::RetentionRule {
                name: "exports".into(),
                record_types: vec![],
                operations: vec!["ExportToExcel".into()],
                users: vec![],
                days: 365,
            },
            crate::RetentionRule {
                name: "admin".into(),
                record_types: vec!["CustosAdmin".into()],
                operations: vec![],
                users: vec![],
                days: 3650,
            },
        ],
    };
    let describe = |p: &PurgedPartition| {
        let mut event = event_at(now, "PurgeAuditLog", 999);
        event.details = format!("{{\"Segment\":\"{}\",\"Events\":{}}}", p.segment, p.events);
        event
    };
    // The preview names what the purge deletes, deleting nothing; under a shorter default it
    // names more.
    assert_eq!(log.expiring(now, &policy).unwrap(), (1, 5));
    let shorter = crate::RetentionPolicy {
        default_days: 40,
        ..policy.clone()
    };
    assert_eq!(log.expiring(now, &shorter).unwrap(), (2, 8));
    let purged = log.purge_expired(now, &policy, &describe).unwrap();
    assert_eq!(
        purged.len(),
        1,
        "only the 100-day-old partition expired: {purged:?}"
    );
    assert_eq!(log.expiring(now, &policy).unwrap(), (0, 0), "nothing more");
    assert_eq!((purged[0].first_seq, purged[0].events), (0, 5));
    assert_eq!(log.purged_events(), 5);
    assert!(
        log.purge_expired(now, &policy, &describe)
            .unwrap()
            .is_empty(),
        "a second run finds nothing more"
    );

    let count = |q: SearchQuery| log.search(&all(q)).unwrap().events.len();
    assert_eq!(
        count(SearchQuery {
            record_ids: (1..=5).map(Uuid::from_u128).collect(),
            ..Default::default()
        }),
        0,
        "expired events are gone"
    );
    assert_eq!(
        count(SearchQuery {
            operations: vec!["ExportToExcel".into()],
            ..Default::default()
        }),
        2,
        "a longer policy keeps exports"
    );
    assert_eq!(
        count(SearchQuery {
            record_types: vec!["CustosAdmin".into()],
            ..Default::default()
        }),
        1,
        "another record type's longer policy keeps its partition"
    );
    assert_eq!(
        count(SearchQuery {
            operations: vec!["Retrieve".into()],
            ..Default::default()
        }),
        5,
        "younger events stay"
    );
    let recorded = log
        .search(&all(SearchQuery {
            operations: vec!["PurgeAuditLog".into()],
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(recorded.events.len(), 1, "the deletion is itself recorded");
    assert!(recorded.events[0].1.details.contains("\"Events\":5"));

    // The tree is unchanged: the old checkpoint is consistent with a new one.
    let (after_size, after_note) = log.sign_checkpoint().unwrap().unwrap();
    let old = crate::verify_note(&before_note, &key).unwrap();
    let new = crate::verify_note(&after_note, &key).unwrap();
    let proof = log.consistency_proof(before_size, after_size).unwrap();
    assert!(crate::verify_consistency(
        before_size,
        after_size,
        &old.root,
        &new.root,
        &proof
    ));
    drop(log);

    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.purged_events, report.events), (5, 14));

    // A restart rebuilds around the purged range and keeps appending in today's partition.
    let log = open(dir.path());
    assert_eq!(log.len(), 14);
    let survivor = log
        .search(&all(SearchQuery {
            operations: vec!["ExportToExcel".into()],
            ..Default::default()
        }))
        .unwrap()
        .events[0]
        .1
        .id;
    let inclusion = log.inclusion_proof(survivor).unwrap().unwrap();
    let signed = crate::verify_note(&inclusion.checkpoint, &key).unwrap();
    assert!(crate::verify_inclusion(
        inclusion.leaf_index,
        inclusion.tree_size,
        &inclusion.leaf_hash,
        &inclusion.hashes,
        &signed.root
    ));
    log.append(event_at(now + 1000, "Retrieve", 77)).unwrap();
    assert_eq!(log.len(), 15);
}

#[test]
fn a_gap_no_purge_explains_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_800_000_000_000_000i64;
    {
        let log = open(dir.path());
        for day in 0..3 {
            log.append(event_at(now + day * DAY, "Retrieve", day as u128))
                .unwrap();
        }
    }
    std::fs::remove_file(dir.path().join(format!("seg-{:020}.log", 1))).unwrap();
    let error = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("no retention purge explains"),
        "{error}"
    );
}

#[path = "search_props.rs"]
mod search_props;

#[test]
fn batches_straddling_midnight_do_not_cut_a_segment_each() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let midnight = 20_000 * DAY_US;
    // Late arrivals from before midnight interleave with events after it.
    for i in 0..20 {
        let time = if i % 2 == 0 {
            midnight - 1 - i
        } else {
            midnight + i
        };
        log.append(event_at(time, "Retrieve", i as u128)).unwrap();
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .count();
    assert_eq!(segments, 2, "one segment per day, not one per batch");
    assert_eq!(log.len(), 20);
}

/// The log's segment files, by name, with their bytes.
fn segment_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().to_string(), bytes)
        })
        .collect();
    found.sort();
    found
}

/// The audit nodes of a cluster append the same events in batches that fall differently (how
/// their fetches came, a restart between two): the segments must be cut at the same events and
/// hold the same bytes, since a retention purge names one partition for every node.
#[test]
fn the_same_events_make_the_same_segments_however_they_are_batched() {
    let midnight = 20_000 * DAY_US;
    let events: Vec<AuditEvent> = (0..600u128)
        .map(|i| {
            // Three days, some late arrivals of the day before, sizes that vary.
            let day = (i / 200) as i64;
            let late = i % 37 == 5 && day > 0;
            let time = midnight + (day - i64::from(late)) * DAY_US + i as i64;
            let mut event = event_at(time, "Retrieve", i % 50);
            event.record_ids = (0..(i % 7 + 1))
                .map(|n| Uuid::from_u128(i * 10 + n))
                .collect();
            event
        })
        .collect();
    let write = |dir: &std::path::Path, sizes: &[usize]| {
        let config = || {
            let mut config = LogConfig::new(dir, [3; 32], "test.example/log");
            config.segment_bytes_max = 9_000;
            config.index_bytes_max = 40_000;
            config
        };
        let mut log = AuditLog::open(config()).unwrap();
        let mut at = 0;
        for (n, size) in sizes.iter().cycle().enumerate() {
            if at == events.len() {
                break;
            }
            let end = (at + size).min(events.len());
            log.append_all(events[at..end].to_vec()).unwrap();
            at = end;
            if n == 7 {
                // A restart between two batches.
                drop(log);
                log = AuditLog::open(config()).unwrap();
            }
        }
        log.wait_sealed().unwrap();
        segment_files(dir)
    };
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let by_ones = write(one.path(), &[1]);
    let by_chunks = write(two.path(), &[250, 3, 97, 1, 64]);
    assert!(by_ones.len() > 6, "several segments: {}", by_ones.len());
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&by_ones), names(&by_chunks), "cut at the same events");
    assert!(by_ones == by_chunks, "the same bytes in every segment");
}

/// The partition being written is sealed once its index reaches the memory budget, before the
/// event that would take it past: resident memory stays flat under a steady load.
#[test]
fn the_partition_being_written_is_sealed_at_its_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::new(dir.path(), [3; 32], "test.example/log");
    config.index_bytes_max = 50_000;
    let log = AuditLog::open(config).unwrap();
    let events: Vec<AuditEvent> = (0..1_000u128)
        .map(|i| {
            let mut event = event_at(1_800_000_000_000_000 + i as i64, "RetrieveMultiple", i);
            event.record_ids = (0..(i % 40))
                .map(|n| Uuid::from_u128(i * 100 + n))
                .collect();
            event
        })
        .collect();
    for chunk in events.chunks(64) {
        log.append_all(chunk.to_vec()).unwrap();
    }
    log.wait_sealed().unwrap();
    let ends = log.partition_ends();
    let costs: Vec<u64> = events.iter().map(crate::partition::index_cost).collect();
    let most = *costs.iter().max().unwrap();
    assert!(ends.len() >= 10, "{} partitions", ends.len());
    let mut start = 0;
    for end in ends {
        let held: u64 = costs[start as usize..end as usize].iter().sum();
        assert!(
            (50_000..50_000 + most).contains(&held),
            "partition {start}..{end} holds {held}"
        );
        start = end;
    }
}

#[test]
fn a_seal_that_panics_is_reported_and_later_partitions_are_still_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = LogConfig::new(dir.path(), [3; 32], "test.example/log");
        config.index_bytes_max = 50_000;
        config
    };
    let events: Vec<AuditEvent> = (0..600u128)
        .map(|i| event_at(1_800_000_000_000_000 + i as i64, "RetrieveMultiple", i))
        .collect();
    // Waited for on a thread of its own, so that a sealer that never answers fails the test
    // rather than hanging it.
    let wait_sealed = |log: &Arc<AuditLog>| {
        let (answer, answered) = std::sync::mpsc::channel();
        let log = log.clone();
        std::thread::spawn(move || {
            let outcome = log.wait_sealed();
            // Gone before the answer, so that the test's handle is the last.
            drop(log);
            answer.send(outcome)
        });
        answered
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("wait_sealed answers")
    };
    let log = Arc::new(AuditLog::open(config()).unwrap());
    log.shared.sealing.lock().unwrap().panic_next = true;
    log.append_all(events[..300].to_vec()).unwrap();
    let failed = wait_sealed(&log).unwrap_err().to_string();
    assert!(failed.contains("sealing panicked"), "{failed}");
    log.append_all(events[300..].to_vec()).unwrap();
    assert!(wait_sealed(&log).is_err(), "the failure is kept");
    let ends = log.partition_ends();
    assert!(ends.len() >= 3, "{ends:?}");
    let on_disk = |dir: &std::path::Path| {
        file_names(dir)
            .iter()
            .filter(|f| f.ends_with(".idx"))
            .count()
    };
    assert_eq!(
        on_disk(dir.path()),
        ends.len() - 1,
        "every complete partition but the first is sealed"
    );
    let found = log.search(&all(SearchQuery::default())).unwrap();
    assert_eq!(
        found.events.len(),
        events.len(),
        "the unsealed partition answers from memory"
    );
    drop(log);
    let log = AuditLog::open(config()).unwrap();
    log.wait_sealed().unwrap();
    assert_eq!(
        on_disk(dir.path()),
        ends.len(),
        "the next open seals the first partition"
    );
    assert_eq!(
        log.search(&all(SearchQuery::default()))
            .unwrap()
            .events
            .len(),
        events.len()
    );
    log.sign_checkpoint().unwrap();
    let key = log.verifier_key();
    drop(log);
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Ids of the events every query of a small battery finds, in order.
fn answers(log: &AuditLog) -> Vec<Vec<Uuid>> {
    let queries = [
        SearchQuery::default(),
        SearchQuery {
            operations: vec!["ExportToExcel".into()],
            ..Default::default()
        },
        SearchQuery {
            record_ids: vec![Uuid::from_u128(3), Uuid::from_u128(11)],
            ..Default::default()
        },
        SearchQuery {
            text: Some("retr".into()),
            ..Default::default()
        },
    ];
    queries
        .into_iter()
        .map(|q| {
            log.search(&all(q))
                .unwrap()
                .events
                .into_iter()
                .map(|(_, e)| e.id)
                .collect()
        })
        .collect()
}

fn index_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".idx"))
        .collect();
    names.sort();
    names
}

/// Five events a day over four UTC days (one export a day), the first three days sealed, and
/// a checkpoint over them.
fn four_days_then_sealed(log: &AuditLog) {
    let now = 1_800_000_000_000_000i64;
    for day in 0..4 {
        for i in 0..5 {
            let operation = if i == 0 { "ExportToExcel" } else { "Retrieve" };
            log.append(event_at(
                now + day * DAY + i,
                operation,
                (day * 5 + i) as u128,
            ))
            .unwrap();
        }
    }
    log.wait_sealed().unwrap();
    log.sign_checkpoint().unwrap();
}

#[test]
fn sealed_partitions_reopen_from_their_index_files_and_reindex_rebuilds_them() {
    let dir = tempfile::tempdir().unwrap();
    let (expect, key) = {
        let log = open(dir.path());
        four_days_then_sealed(&log);
        (answers(&log), log.verifier_key())
    };
    assert_eq!(expect[0].len(), 20);
    assert_eq!(expect[1].len(), 4);
    assert_eq!(expect[2].len(), 2);
    let sealed = index_files(dir.path());
    assert_eq!(
        sealed.len(),
        3,
        "every day but the live one is sealed: {sealed:?}"
    );

    // A restart opens the index files; one that is missing is written again.
    std::fs::remove_file(dir.path().join(&sealed[1])).unwrap();
    let log = open(dir.path());
    assert_eq!(answers(&log), expect);
    log.wait_sealed().unwrap();
    assert_eq!(index_files(dir.path()), sealed);
    drop(log);

    // A damaged index file is evidence for verify, and reindex rebuilds it.
    let damaged = dir.path().join(&sealed[0]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("index file does not match")),
        "{:?}",
        report.problems
    );
    let log = AuditLog::reindex(LogConfig::new(dir.path(), [3; 32], "test.example/log")).unwrap();
    assert_eq!(answers(&log), expect);
    assert_eq!(index_files(dir.path()), sealed);
    drop(log);
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.indexes_checked, 3);
}

#[test]
fn index_files_of_earlier_versions_are_kept_read_and_verified_and_reindex_rewrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let (expect, key) = {
        let log = open(dir.path());
        log.shared.sealing.lock().unwrap().versions = [2, 3, 4].into();
        four_days_then_sealed(&log);
        (answers(&log), log.verifier_key())
    };
    let sealed = index_files(dir.path());
    let read_all = || -> Vec<Vec<u8>> {
        sealed
            .iter()
            .map(|name| std::fs::read(dir.path().join(name)).unwrap())
            .collect()
    };
    let versions = |files: &[Vec<u8>]| -> Vec<u8> {
        files
            .iter()
            .map(|bytes| sealed::version_of(bytes))
            .collect()
    };
    let written = read_all();
    assert_eq!(versions(&written), [2, 3, 4], "{sealed:?}");

    // An upgrade opens them as they are: nothing is indexed again, and they answer alike.
    let log = open(dir.path());
    assert_eq!(answers(&log), expect);
    log.wait_sealed().unwrap();
    drop(log);
    assert!(read_all() == written, "no index file was rewritten");
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.indexes_checked, 3);

    // `reindex` rewrites them in this build's version.
    let log = AuditLog::reindex(LogConfig::new(dir.path(), [3; 32], "test.example/log")).unwrap();
    assert_eq!(answers(&log), expect);
    drop(log);
    assert_eq!(versions(&read_all()), [sealed::VERSION; 3]);
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.indexes_checked, 3);
}

#[test]
fn a_second_open_of_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path());
    let error = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
        .err()
        .expect("refused");
    assert!(matches!(error, Error::Unavailable(_)), "{error}");
    let error = AuditLog::reindex(LogConfig::new(dir.path(), [3; 32], "test.example/log"))
        .err()
        .expect("refused");
    assert!(error.to_string().contains("another process"), "{error}");
}

#[test]
fn sealing_the_active_partition_indexes_it_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.seal_active().unwrap();
    assert!(
        index_files(dir.path()).is_empty(),
        "an empty partition is not sealed"
    );
    for i in 0..3 {
        log.append(event_at(1_800_000_000_000_000 + i, "Retrieve", i as u128))
            .unwrap();
    }
    log.seal_active().unwrap();
    assert_eq!(index_files(dir.path()).len(), 1);
    log.append(event_at(1_800_000_000_000_100, "Create", 9))
        .unwrap();
    let found = log.search(&all(SearchQuery::default())).unwrap().events;
    assert_eq!(
        found.len(),
        4,
        "searches span the sealed and the live partition"
    );
    drop(log);
    assert_eq!(open(dir.path()).len(), 4);
}

#[test]
fn a_queued_append_hears_its_seq_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let (answered, answer) = std::sync::mpsc::channel();
    for i in 0..5u128 {
        let answered = answered.clone();
        let queued = log.try_append(
            event_at(1_800_000_000_000_000, "Retrieve", i),
            Box::new(move |outcome| answered.send(outcome.unwrap()).unwrap()),
        );
        assert!(queued.is_ok(), "the queue has room");
    }
    log.append(event_at(1_800_000_000_000_001, "Create", 9))
        .unwrap();
    let mut seqs: Vec<Seq> = (0..5).map(|_| answer.recv().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        vec![0, 1, 2, 3, 4],
        "each queued event heard its own seq"
    );
    assert_eq!(log.len(), 6);
    drop(log);
    assert_eq!(open(dir.path()).len(), 6, "and they are durable");
}

#[test]
fn followers_read_the_log_in_order_from_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let now = 1_800_000_000_000_000i64;
    let mut ids = Vec::new();
    for day in 0..3 {
        for i in 0..4 {
            let event = event_at(now + day * DAY + i, "Retrieve", (day * 4 + i) as u128);
            ids.push(event.id);
            log.append(event).unwrap();
        }
    }
    log.wait_sealed().unwrap();
    let all = log.read_from(0, 100).unwrap();
    assert_eq!(all.iter().map(|(_, e)| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    let some = log.read_from(3, 3).unwrap();
    assert_eq!(
        some.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![3, 4, 5],
        "across a partition's end"
    );
    assert!(
        log.read_from(12, 10).unwrap().is_empty(),
        "nothing past the end"
    );
}

/// A cluster that never rotated its key.
struct NoKeys;

impl crate::ClusterKeys for NoKeys {
    fn seed_of(&self, _: &str) -> Option<[u8; 32]> {
        None
    }
    fn retired(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A cluster whose key is being handed over to the seed `next`, after `retired`.
struct Rotating {
    next: [u8; 32],
    next_key: String,
    retired: Vec<String>,
}

impl crate::ClusterKeys for Rotating {
    fn seed_of(&self, key: &str) -> Option<[u8; 32]> {
        (key == self.next_key).then_some(self.next)
    }
    fn retired(&self) -> Vec<String> {
        self.retired.clone()
    }
}

/// The cluster's signer rotates its key; every audit node meets the handover in the stream and
/// switches to the key it names (its seed from the directory), then checks the new key's
/// notes; a node started after the rotation skips the old key's notes the stream still holds.
#[test]
fn an_audit_node_takes_the_clusters_key_handover() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (signer, follower) = (cluster_log(a_dir.path()), cluster_log(b_dir.path()));
    let events: Vec<AuditEvent> = (0..30).map(|i| sample_event(1 + i % 3)).collect();
    for log in [&signer, &follower] {
        log.append_all(events[..20].to_vec()).unwrap();
    }
    let (_, before) = signer.sign_for_cluster().unwrap().unwrap();
    let root_key = signer.verifier_key();
    let next = [9; 32];
    let keys = Rotating {
        next,
        next_key: signer.verifier_key_for(next),
        retired: vec![root_key.clone()],
    };
    assert_eq!(signer.rotate_key(next).unwrap(), 20);
    let handover = signer.latest_checkpoint().unwrap().unwrap().1;
    assert_eq!(
        follower.adopt_checkpoint(&before, &NoKeys).unwrap(),
        Adopted::Appended(20)
    );
    // Without the seed of the key it names, a handover is not taken.
    assert!(follower.adopt_checkpoint(&handover, &NoKeys).is_err());
    assert_eq!(follower.verifier_key(), root_key);
    assert_eq!(
        follower.adopt_checkpoint(&handover, &keys).unwrap(),
        Adopted::Appended(20)
    );
    assert_eq!(follower.verifier_key(), keys.next_key);
    assert_eq!(follower.verifier_keys(), signer.verifier_keys());
    // The signer meets its own handover in the stream: nothing changes.
    assert_eq!(
        signer.adopt_checkpoint(&handover, &keys).unwrap(),
        Adopted::Covered(20)
    );
    for log in [&signer, &follower] {
        log.append_all(events[20..].to_vec()).unwrap();
    }
    let (_, after) = signer.sign_for_cluster().unwrap().unwrap();
    assert_eq!(
        follower.adopt_checkpoint(&after, &keys).unwrap(),
        Adopted::Appended(30)
    );
    // A note of the retired key (in the log's own chain) is stale, never adopted; one of a
    // key neither the log nor the cluster ever had is damage.
    assert_eq!(
        follower.adopt_checkpoint(&before, &NoKeys).unwrap(),
        Adopted::Stale(20)
    );
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = AuditLog::open(LogConfig::new(
        stranger_dir.path(),
        [4; 32],
        "test.example/log",
    ))
    .unwrap();
    stranger.append_all(events[..20].to_vec()).unwrap();
    let (_, foreign) = stranger.sign_checkpoint().unwrap().unwrap();
    assert!(follower.adopt_checkpoint(&foreign, &keys).is_err());
    // A node started after the rotation, with the new key: the old key's notes are stale.
    let late = AuditLog::open(LogConfig {
        signs_own_checkpoints: false,
        ..LogConfig::new(c_dir.path(), next, "test.example/log")
    })
    .unwrap();
    late.append_all(events.clone()).unwrap();
    assert_eq!(
        late.adopt_checkpoint(&before, &keys).unwrap(),
        Adopted::Stale(20)
    );
    assert_eq!(
        late.adopt_checkpoint(&after, &keys).unwrap(),
        Adopted::Appended(30)
    );
    drop((signer, follower, late));
    let report = crate::verify_log(b_dir.path(), &root_key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        report.checkpoints, 2,
        "sizes 20 (before and the handover) and 30"
    );
    // It opens again with the key it was handed (its key file, switched by the node).
    let reopened = AuditLog::open(LogConfig {
        signs_own_checkpoints: false,
        ..LogConfig::new(b_dir.path(), next, "test.example/log")
    })
    .unwrap();
    assert_eq!(reopened.latest_checkpoint().unwrap().unwrap().0, 30);
}

fn cluster_log(dir: &std::path::Path) -> AuditLog {
    AuditLog::open(LogConfig {
        signs_own_checkpoints: false,
        ..LogConfig::new(dir, [3; 32], "test.example/log")
    })
    .unwrap()
}

#[test]
fn an_audit_node_adopts_the_signers_checkpoints_only_over_the_same_events() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (signer, follower) = (cluster_log(a_dir.path()), cluster_log(b_dir.path()));
    let events: Vec<AuditEvent> = (0..40).map(|i| sample_event(1 + i % 5)).collect();
    // The same events in the same order, in other group commits.
    signer.append_all(events[..25].to_vec()).unwrap();
    for event in &events[..30] {
        follower.append(event.clone()).unwrap();
    }
    assert_eq!(
        follower.sign_checkpoint().unwrap(),
        None,
        "an audit node of a cluster signs nothing of its own"
    );
    let (size, note) = signer.sign_for_cluster().unwrap().unwrap();
    assert_eq!(size, 25);
    assert_eq!(
        follower.adopt_checkpoint(&note, &NoKeys).unwrap(),
        Adopted::Appended(25)
    );
    assert_eq!(
        follower.adopt_checkpoint(&note, &NoKeys).unwrap(),
        Adopted::Covered(25)
    );
    assert_eq!(follower.checkpoint_at(25).unwrap().as_deref(), Some(&*note));
    // Adopted, it proves inclusion as one of its own.
    let proof = follower.inclusion_proof(events[3].id).unwrap().unwrap();
    assert_eq!(proof.tree_size, 25);

    // A checkpoint past what the log holds, one by another key, and one over other events
    // are all refused as damage.
    signer.append_all(events[25..].to_vec()).unwrap();
    let (_, ahead) = signer.sign_for_cluster().unwrap().unwrap();
    let refused = follower
        .adopt_checkpoint(&ahead, &NoKeys)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("missing events"), "{refused}");
    let stranger =
        AuditLog::open(LogConfig::new(c_dir.path(), [4; 32], "test.example/log")).unwrap();
    stranger.append_all(events[..25].to_vec()).unwrap();
    let (_, foreign) = stranger.sign_checkpoint().unwrap().unwrap();
    assert!(follower.adopt_checkpoint(&foreign, &NoKeys).is_err());
    let other_dir = tempfile::tempdir().unwrap();
    let diverged = cluster_log(other_dir.path());
    let mut changed = events[..30].to_vec();
    changed[7].operation = "Delete".into();
    diverged.append_all(changed).unwrap();
    let refused = diverged
        .adopt_checkpoint(&note, &NoKeys)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("diverged"), "{refused}");

    // The adopted checkpoints survive a restart and the log verifies against the shared key.
    for event in &events[30..] {
        follower.append(event.clone()).unwrap();
    }
    assert_eq!(
        follower.adopt_checkpoint(&ahead, &NoKeys).unwrap(),
        Adopted::Appended(40)
    );
    let key = follower.verifier_key();
    assert_eq!(key, signer.verifier_key());
    drop(follower);
    let follower = cluster_log(b_dir.path());
    assert_eq!(follower.latest_checkpoint().unwrap(), Some((40, ahead)));
    let report = crate::verify_log(b_dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checkpoints, 2);
}

/// Verification hashes chunks of records on a second thread while it decodes the next: across
/// many chunks and segments, every leaf lands at its own seq — a clean log verifies whole, a
/// frame broken deep inside is named at its seq, and a leaf of `leaves.dat` changed deep inside
/// is named at its seq.
#[test]
fn verification_across_many_chunks_names_exact_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::new(dir.path(), [3; 32], "test.example/log");
    config.segment_bytes_max = 250_000;
    let key = {
        let log = AuditLog::open(config).unwrap();
        let events: Vec<AuditEvent> = (0..7_000u128)
            .map(|i| event_at(1_800_000_000_000_000 + i as i64, "Retrieve", i % 300))
            .collect();
        for chunk in events.chunks(500) {
            log.append_all(chunk.to_vec()).unwrap();
        }
        log.wait_sealed().unwrap();
        log.sign_checkpoint().unwrap();
        log.verifier_key()
    };
    let segments = crate::verify::tests::segments(dir.path());
    assert!(segments.len() >= 2, "{segments:?}");
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events, 7_000);
    // Segments of more records than one chunk, so chunks are hashed while others decode.
    assert!(
        (2..=3).contains(&report.segments),
        "{} segments",
        report.segments
    );

    // leaves.dat: the leaf of seq 4,500 changed.
    let leaves_path = dir.path().join("leaves.dat");
    let original = std::fs::read(&leaves_path).unwrap();
    let mut changed = original.clone();
    let at = changed.len() - (7_000 - 4_500) * 32;
    changed[at] ^= 1;
    std::fs::write(&leaves_path, &changed).unwrap();
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("the leaf of record seq 4500 ")),
        "{:?}",
        report.problems
    );
    std::fs::write(&leaves_path, &original).unwrap();

    // A byte of the last segment's records, deep inside it, flipped.
    let last = segments.last().unwrap();
    let first_seq = crate::verify::tests::first_seq(last);
    let mut bytes = std::fs::read(last).unwrap();
    // Walk the frames to the 2,500th of the segment (or its last).
    let mut pos = crate::log::HEADER_BYTES as usize;
    let mut n = 0u64;
    while n < 2_500 && pos < bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let next = pos + crate::log::FRAME_HEADER_BYTES as usize + len;
        if next >= bytes.len() {
            break;
        }
        pos = next;
        n += 1;
    }
    bytes[pos + crate::log::FRAME_HEADER_BYTES as usize + 3] ^= 0x20;
    std::fs::write(last, &bytes).unwrap();
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    let named = format!("record seq {} ", first_seq + n);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&named) && p.contains("fails its checksum")),
        "{named}: {:?}",
        report.problems
    );
}

/// Waits (up to ten seconds) for the log to report damage, and returns it.
fn damage_reported(log: &AuditLog) -> Option<String> {
    for _ in 0..200 {
        if let Err(damage) = log.health() {
            return Some(damage);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// A restart takes the tree's levels above the tiles over sealed partitions from `tree.dat`
/// instead of hashing `leaves.dat` again, and trusts neither file beyond what the tree checks.
#[test]
fn a_restart_takes_the_tree_from_tree_dat_and_trusts_neither_it_nor_leaves_dat_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        segment_bytes_max: 40_000,
        checkpoint_interval_ms: 3_600_000,
        ..LogConfig::new(dir.path(), [3; 32], "test.example/log")
    };
    let events: Vec<AuditEvent> = (0..2_000u128)
        .map(|i| event_at(1_800_000_000_000_000 + i as i64, "Retrieve", i % 50))
        .collect();
    let (expect, key) = {
        let log = AuditLog::open(config()).unwrap();
        for chunk in events.chunks(100) {
            log.append_all(chunk.to_vec()).unwrap();
        }
        log.wait_sealed().unwrap();
        log.sign_checkpoint().unwrap();
        (answers(&log), log.verifier_key())
    };
    let kept = crate::treefile::read(dir.path(), u64::MAX)
        .unwrap()
        .expect("the sealer wrote tree.dat");
    assert!(kept.len() >= 1_024, "{} leaves kept", kept.len());
    let tree_dat = std::fs::read(dir.path().join("tree.dat")).unwrap();
    let proves = |log: &AuditLog| {
        let proof = log.inclusion_proof(events[300].id).unwrap().unwrap();
        let signed = crate::verify_note(&proof.checkpoint, &key).unwrap();
        crate::verify_inclusion(
            300,
            proof.tree_size,
            &proof.leaf_hash,
            &proof.hashes,
            &signed.root,
        )
    };
    {
        let log = AuditLog::open(config()).unwrap();
        assert_eq!(answers(&log), expect);
        assert!(proves(&log));
        assert!(log.health().is_ok());
    }

    // A tree.dat whose levels chain but are another tree's: the open finds its root is not the
    // signed one, and takes the tree from leaves.dat instead.
    let mut other = crate::merkle::MerkleTree::new();
    for i in 0..kept.len() {
        other.push(crate::leaf_hash(&i.to_le_bytes()));
    }
    other.forget_below(kept.len());
    crate::treefile::write(dir.path(), kept.len(), &other.upper_levels(kept.len())).unwrap();
    {
        let log = AuditLog::open(config()).unwrap();
        assert_eq!(answers(&log), expect);
        assert!(proves(&log));
        assert!(log.health().is_ok());
    }

    // leaves.dat altered under the tiles tree.dat covers, tree.dat sound: the open does not read
    // those leaves, but the background check of every tile finds it, and a read of a record of
    // that tile refuses to vouch for it.
    std::fs::write(dir.path().join("tree.dat"), &tree_dat).unwrap();
    let leaves_path = dir.path().join("leaves.dat");
    let original = std::fs::read(&leaves_path).unwrap();
    let mut altered = original.clone();
    altered[300 * 32] ^= 1;
    std::fs::write(&leaves_path, &altered).unwrap();
    {
        let log = AuditLog::open(config()).unwrap();
        let damage = damage_reported(&log).expect("the altered tile is found");
        assert!(damage.contains("leaves.dat: leaves 256..512"), "{damage}");
        assert!(log.get(events[300].id).is_err());
        assert!(log.inclusion_proof(events[300].id).is_err());
    }
    std::fs::write(&leaves_path, &original).unwrap();
    let log = AuditLog::open(config()).unwrap();
    assert!(proves(&log));
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A page of records too large for one core is read on every core: the same events in the same
/// order, and an altered record among them refused as when read alone.
#[test]
fn a_page_of_large_records_is_read_in_order_and_refuses_an_altered_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let shared = Uuid::from_u128(7);
    let mut appended = Vec::new();
    for i in 0..40u128 {
        let mut event = sample_event(0);
        event.record_ids = std::iter::once(shared)
            .chain((0..2_000).map(|j| Uuid::from_u128((i + 1) << 64 | j)))
            .collect();
        appended.push(event.clone());
        log.append(event).unwrap();
    }
    let query = all(SearchQuery {
        record_ids: vec![shared],
        top: 40,
        ..Default::default()
    });
    let page = log.search(&query).unwrap();
    let read: Vec<&AuditEvent> = page.events.iter().map(|(_, e)| e).collect();
    let expected: Vec<&AuditEvent> = appended.iter().rev().collect();
    assert_eq!(read, expected);
    assert_eq!(log.read_from(0, 40).unwrap().len(), 40);

    // The oldest event's last record id, stored in full where it first appears, altered.
    let segment = dir.path().join(format!("seg-{:020}.log", 0));
    let bytes = std::fs::read(&segment).unwrap();
    let target = appended[0].record_ids.last().unwrap().as_bytes().to_vec();
    let at = bytes
        .windows(16)
        .position(|w| w == target.as_slice())
        .expect("the id is in the segment");
    let mut file = OpenOptions::new().write(true).open(&segment).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64 + 15)).unwrap();
    file.write_all(&[bytes[at + 15] ^ 1]).unwrap();
    drop(file);
    let error = log.search(&query).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted(m) if m.contains("record seq 0 ") && m.contains("does not match its leaf")),
        "{error}"
    );
    assert!(log.health().is_err());
    assert!(log.read_from(0, 40).is_err());
}

/// A log of many partitions holds no more of their files open than its budget, searches and
/// reads every one of them, and opens again as it was.
#[test]
fn a_log_of_many_partitions_keeps_open_no_more_files_than_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = LogConfig::new(dir.path(), [3; 32], "test.example/log");
        config.segment_bytes_max = 1_000;
        config.open_files_max = 3;
        config
    };
    let check = |log: &AuditLog, ids: &[Uuid]| {
        for (i, id) in ids.iter().enumerate() {
            let page = log
                .search(&all(SearchQuery {
                    record_ids: vec![Uuid::from_u128(5_000 + i as u128)],
                    ..Default::default()
                }))
                .unwrap();
            assert_eq!(page.events.len(), 1, "event {i}");
            assert_eq!(page.events[0].1.id, *id);
            assert_eq!(log.get(*id).unwrap().unwrap().0, i as u64);
            assert!(log.shared.handles.open_count() <= 3);
        }
        assert_eq!(
            log.search(&all(SearchQuery::default()))
                .unwrap()
                .events
                .len(),
            ids.len()
        );
    };
    let mut ids = Vec::new();
    {
        let log = AuditLog::open(config()).unwrap();
        for i in 0..120u128 {
            let mut event = sample_event(2);
            event.record_ids = vec![Uuid::from_u128(5_000 + i)];
            ids.push(event.id);
            log.append(event).unwrap();
        }
        log.wait_sealed().unwrap();
        let segments = segment_files(dir.path()).len();
        assert!(segments > 10, "many partitions: {segments}");
        check(&log, &ids);
    }
    let log = AuditLog::open(config()).unwrap();
    assert!(log.shared.handles.open_count() <= 3);
    check(&log, &ids);
}

/// A partition's segment replaced by another file (renamed over it) while the log is open, its
/// handle closed by the budget meanwhile, is not read: the read is refused as damage and the
/// log says so.
#[test]
fn a_segment_put_in_the_place_of_one_the_budget_closed_is_refused_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::new(dir.path(), [3; 32], "test.example/log");
    config.segment_bytes_max = 1_000;
    config.open_files_max = 2;
    let log = AuditLog::open(config).unwrap();
    let mut ids = Vec::new();
    for _ in 0..60 {
        let event = sample_event(2);
        ids.push(event.id);
        log.append(event).unwrap();
    }
    log.wait_sealed().unwrap();
    // Every event read, then the newest again: the first partition's files were opened, and
    // closed since by the budget of two.
    assert_eq!(
        log.search(&all(SearchQuery::default()))
            .unwrap()
            .events
            .len(),
        60
    );
    assert_eq!(log.get(ids[59]).unwrap().unwrap().0, 59);
    let first = dir.path().join("seg-00000000000000000000.log");
    let copy = dir.path().join("copy");
    std::fs::copy(&first, &copy).unwrap();
    std::fs::rename(&copy, &first).unwrap();
    let refused = log.get(ids[0]).unwrap_err();
    assert!(matches!(refused, Error::Corrupted(_)), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("another file was put in its place"),
        "{refused}"
    );
    let health = log.health().unwrap_err();
    assert!(
        health.contains("another file was put in its place"),
        "{health}"
    );
}

/// Indexing runs on a thread of its own, behind the writer: an append that has returned is
/// still found at once by every read, and a roll freezes every batch of its segment.
#[test]
fn an_answered_append_is_read_at_once_though_the_indexer_lags() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    log.shared.indexing.lock().unwrap().delay = std::time::Duration::from_millis(10);
    let record = |t: u128, i: u128| Uuid::from_u128(1_000 * t + i);
    let producers: Vec<_> = (0..4u128)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..8u128 {
                    let mut event = sample_event(0);
                    event.record_ids = vec![record(t, i)];
                    let id = event.id;
                    let seq = log.append(event).unwrap();
                    assert_eq!(log.get(id).unwrap().map(|(s, _)| s), Some(seq));
                    let by_record = all(SearchQuery {
                        record_ids: vec![record(t, i)],
                        ..Default::default()
                    });
                    assert_eq!(log.search(&by_record).unwrap().events.len(), 1);
                    assert_eq!(log.histogram(&by_record, None).unwrap()[&0], 1);
                    assert!(log.len() > seq);
                    assert_eq!(log.get_seq(seq).unwrap().map(|e| e.id), Some(id));
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    // Appends still waiting for the indexer when the segment is closed go with it.
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let (answered, answer) = mpsc::sync_channel(1);
            let done: Done = Box::new(move |outcome| {
                let _ = answered.send(outcome);
            });
            assert!(log.try_append(sample_event(2), done).is_ok());
            answer
        })
        .collect();
    log.seal_active().unwrap();
    for answer in queued {
        answer.recv().unwrap().unwrap();
    }
    assert_eq!(log.len(), 52);
    assert_eq!(log.sealed_len(), 52);
    let every = all(SearchQuery::default());
    assert_eq!(log.histogram(&every, None).unwrap()[&0], 52);
    assert!(log.health().is_ok());
}

#[test]
fn a_failed_sync_refuses_its_batch_and_the_one_written_after_it_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        batch_events_max: 4,
        ..LogConfig::new(dir.path(), [3; 32], "test.example/log")
    };
    let log = AuditLog::open(config.clone()).unwrap();
    let event = |i: u128| {
        let mut event = sample_event(0);
        event.id = Uuid::from_u128(0xe000 + i);
        event.record_ids = vec![Uuid::from_u128(0xa000 + i), Uuid::from_u128(0xb000 + i % 7)];
        event.correlation_id = format!("string numbered by event {i}");
        event
    };
    for i in 0..3 {
        log.append(event(i)).unwrap();
    }
    log.shared.failing_syncs.store(1, Ordering::Release);
    // Queued at once, so the writer has the next batch at hand and syncs on the syncer thread.
    let (answered, answers) = mpsc::channel();
    for i in 3..203 {
        let answered = answered.clone();
        let done: Done = Box::new(move |outcome| answered.send((i, outcome)).unwrap());
        assert!(log.try_append(event(i), done).is_ok());
    }
    drop(answered);
    let mut outcomes: Vec<(u128, Result<Seq>)> = answers.iter().collect();
    outcomes.sort_by_key(|(i, _)| *i);
    assert_eq!(outcomes.len(), 200);
    assert_eq!(log.shared.failing_syncs.load(Ordering::Acquire), 0);
    let refused: Vec<u128> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(i, _)| *i)
        .collect();
    // The failed batch and the one written while it was syncing: one run of events, at most
    // two batches.
    assert!((2..=8).contains(&refused.len()), "{refused:?}");
    assert_eq!(
        refused.last().unwrap() - refused[0] + 1,
        refused.len() as u128
    );
    let seqs: Vec<Seq> = outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().ok().copied())
        .collect();
    assert_eq!(seqs, (3..3 + seqs.len() as u64).collect::<Vec<_>>());
    // The writer goes on, and the refused events' record ids and strings are numbered again.
    for &i in &refused {
        log.append(event(i)).unwrap();
    }
    assert!(log.health().is_ok());
    assert_eq!(log.len(), 203);
    let key = log.verifier_key();
    log.close().unwrap();
    drop(log);
    let log = AuditLog::open(config).unwrap();
    assert_eq!(log.len(), 203);
    for i in 0..203 {
        let (_, read) = log.get(Uuid::from_u128(0xe000 + i)).unwrap().unwrap();
        assert_eq!(read, event(i));
    }
    drop(log);
    let report = crate::verify_log(dir.path(), &key, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_live_verification_reads_only_what_was_signed_when_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        // Nothing signs but the test.
        checkpoint_interval_ms: 3_600_000,
        ..LogConfig::new(dir.path(), [3; 32], "test.example/log")
    };
    let log = AuditLog::open(config).unwrap();
    let key = log.verifier_key();
    let now = 1_800_000_000_000_000i64;
    for i in 0..5u64 {
        let mut event = event_at(now + i as i64, "Retrieve", u128::from(i));
        event.id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_800_000_000 + i,
            0,
        ));
        log.append(event).unwrap();
    }
    let (signed, _) = log.sign_checkpoint().unwrap().unwrap();
    assert_eq!(signed, 5);
    // Records written while a (long) verification runs, made over more than the unsigned
    // margin (their ids say when).
    let made = |seconds: u64| Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0));
    for i in 0..5u64 {
        let mut event = event_at(now + 20_000_000 + i as i64, "Retrieve", 10 + u128::from(i));
        event.id = made(1_800_000_020 + 5 * i);
        log.append(event).unwrap();
    }
    let whole =
        crate::verify::verify_with(dir.path(), &key, None, 0, u64::MAX, &mut |_, _| {}).unwrap();
    assert!(
        whole
            .problems
            .iter()
            .any(|p| p.contains("checkpoints are missing")),
        "{:?}",
        whole.problems
    );
    let signed_part =
        crate::verify::verify_with(dir.path(), &key, None, 0, signed, &mut |_, _| {}).unwrap();
    assert!(signed_part.is_ok(), "{:?}", signed_part.problems);
    assert_eq!(signed_part.events, 5);
}

#[test]
fn a_live_verification_checks_the_index_files_before_its_checkpoint_and_marks_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let key = log.verifier_key();
    four_days_then_sealed(&log);
    let sealed = index_files(dir.path());
    assert_eq!(sealed.len(), 3, "{sealed:?}");
    let last_first: u64 = sealed[2]
        .trim_start_matches("seg-")
        .trim_end_matches(".idx")
        .parse()
        .unwrap();
    let live_first = last_first + 5;
    // Stopping where the live segment begins, the last sealed one is still compared with its
    // index file: it is not the log's last segment.
    let damaged = dir.path().join(&sealed[2]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let report =
        crate::verify::verify_with(dir.path(), &key, None, 0, live_first, &mut |_, _| {}).unwrap();
    assert_eq!(report.events, live_first);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&sealed[2].replace(".idx", ".log"))
                && p.contains("index file does not match")),
        "{:?}",
        report.problems
    );
    assert!(log.health().is_ok());
    let report = log.verify(&mut |_, _| {}).unwrap();
    assert!(!report.is_ok());
    let health = log.health().unwrap_err();
    assert!(
        health.contains("a verification of the audit log found")
            && health.contains("index file does not match"),
        "{health}"
    );
}

#[test]
fn a_live_verification_leaves_an_index_file_covering_records_after_its_checkpoint_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let key = log.verifier_key();
    let now = 1_800_000_000_000_000i64;
    let append = |day: i64, i: i64| {
        log.append(event_at(
            now + day * DAY + i,
            "Retrieve",
            (day * 5 + i) as u128,
        ))
        .unwrap()
    };
    for day in 0..2 {
        for i in 0..5 {
            append(day, i);
        }
    }
    append(2, 0);
    append(2, 1);
    // The checkpoint a verification begins with falls inside the third day's segment, which is
    // written on and sealed before the verification reaches it.
    let (signed, _) = log.sign_checkpoint().unwrap().unwrap();
    assert_eq!(signed, 12);
    for i in 2..5 {
        append(2, i);
    }
    append(3, 0);
    log.wait_sealed().unwrap();
    assert_eq!(index_files(dir.path()).len(), 3);
    let report =
        crate::verify::verify_with(dir.path(), &key, None, 0, signed, &mut |_, _| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.events, report.indexes_checked), (12, 2));
}
