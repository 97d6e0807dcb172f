use std::fs::OpenOptions;
use std::io::Write;

use uuid::Uuid;

use super::*;
use crate::codec::tests::sample_event;
use crate::event::Origin;

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
        (log.checkpoint().unwrap().unwrap(), log.verifier_key())
    };
    assert_eq!(first.0, 5);
    let log = open(dir.path());
    assert_eq!(
        log.checkpoint_at(5).as_deref(),
        Some(first.1.as_str()),
        "signed checkpoints survive a restart"
    );
    for _ in 0..4 {
        log.append(sample_event(3)).unwrap();
    }
    let proof = log.inclusion_proof(ids[2]).unwrap().unwrap();
    let signed = crate::verify_note(&proof.checkpoint, &key).unwrap();
    assert_eq!((proof.leaf_index, proof.tree_size, signed.size), (2, 9, 9));
    let (_, event) = log.get(ids[2]).unwrap().unwrap();
    let leaf = crate::leaf_hash(crate::canonical_json(&event).as_bytes());
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
fn a_log_cut_behind_a_signed_checkpoint_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        for _ in 0..3 {
            log.append(sample_event(1)).unwrap();
        }
        log.checkpoint().unwrap();
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
