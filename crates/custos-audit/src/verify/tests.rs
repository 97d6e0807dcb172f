use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::verify_with;
use crate::event::sample_event;
use crate::log::{FRAME_HEADER_BYTES, HEADER_BYTES, frame_crc, read_header};
use crate::sealed::{self, index_path};
use crate::{AuditEvent, AuditLog, LogConfig};

/// A log of several sealed segments whose records name record ids that earlier segments
/// numbered; its verifier key.
fn write_log(dir: &Path) -> String {
    let mut config = LogConfig::new(dir, [3; 32], "test.example/log");
    config.segment_bytes_max = 60_000;
    let log = AuditLog::open(config).unwrap();
    let events: Vec<AuditEvent> = (0..3_000u128)
        .map(|i| {
            let mut event = sample_event(0);
            event.creation_time_us = 1_800_000_000_000_000 + i as i64;
            event.record_ids = vec![
                Uuid::from_u128(1_000_000 + i),
                Uuid::from_u128(1_000_000 + i / 7),
            ];
            event
        })
        .collect();
    for chunk in events.chunks(100) {
        log.append_all(chunk.to_vec()).unwrap();
    }
    log.wait_sealed().unwrap();
    log.sign_checkpoint().unwrap();
    log.verifier_key()
}

/// The segment files of the log in `dir`, in log order.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && p.file_name().unwrap().to_string_lossy().starts_with("seg-")
        })
        .collect();
    found.sort();
    found
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// Where the payload of the `n`th record of a segment starts, and its length.
fn record_at(bytes: &[u8], n: usize) -> (usize, usize) {
    let mut pos = HEADER_BYTES as usize;
    for _ in 0..n {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += FRAME_HEADER_BYTES as usize + len;
    }
    let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    (pos + FRAME_HEADER_BYTES as usize, len)
}

fn ids_before(segment: &Path) -> u64 {
    u64::from(read_header(segment, &std::fs::read(segment).unwrap()).unwrap())
}

/// The seq of a segment's first record, as its name says.
pub(crate) fn first_seq(segment: &Path) -> u64 {
    segment
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("seg-")
        .trim_end_matches(".log")
        .parse()
        .unwrap()
}

/// A change made to a copy of the log's folder.
type Damage = Box<dyn Fn(&Path)>;

/// Reading sealed segments ahead of their turn (on the assumption that the log before each is
/// sound, with `ids.dat`'s record ids) must find exactly what reading them in turn finds,
/// whatever is damaged before them.
#[test]
fn segments_read_ahead_report_exactly_what_segments_read_in_turn_do() {
    let pristine = tempfile::tempdir().unwrap();
    let key = write_log(pristine.path());
    let segs = segments(pristine.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let second = segs[1].file_name().unwrap().to_owned();
    let third = segs[2].file_name().unwrap().to_owned();
    // A record id the second segment numbers and later segments name again.
    let defined_in_second = ids_before(&segs[2]) - 1;
    let damages: Vec<(&str, Damage)> = vec![
        ("nothing", Box::new(|_: &Path| {})),
        (
            "an id of ids.dat that the second segment numbers",
            Box::new(move |dir: &Path| {
                flip(&dir.join("ids.dat"), defined_in_second as usize * 16 + 3)
            }),
        ),
        (
            "ids.dat cut short of the third segment's ids",
            Box::new(move |dir: &Path| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("ids.dat"))
                    .unwrap();
                file.set_len(defined_in_second * 16).unwrap();
            }),
        ),
        (
            "ids.dat removed",
            Box::new(|dir: &Path| std::fs::remove_file(dir.join("ids.dat")).unwrap()),
        ),
        ("a byte of a record of the second segment", {
            let second = second.clone();
            Box::new(move |dir: &Path| {
                let path = dir.join(&second);
                let (at, _) = record_at(&std::fs::read(&path).unwrap(), 10);
                flip(&path, at + 5);
            })
        }),
        (
            "a record of the second segment rewritten with its checksum",
            {
                let second = second.clone();
                Box::new(move |dir: &Path| {
                    let path = dir.join(&second);
                    let mut bytes = std::fs::read(&path).unwrap();
                    let (at, len) = record_at(&bytes, 10);
                    let last = at + len - 1;
                    bytes[last] ^= 0x01;
                    let crc = frame_crc(first_seq(&path) + 10, &bytes[at..at + len]);
                    bytes[at - 4..at].copy_from_slice(&crc.to_le_bytes());
                    std::fs::write(&path, bytes).unwrap();
                })
            },
        ),
        ("the second segment's header", {
            let second = second.clone();
            Box::new(move |dir: &Path| flip(&dir.join(&second), 2))
        }),
        ("the second segment's index file", {
            let second = second.clone();
            Box::new(move |dir: &Path| {
                let path = dir.join(&second).with_extension("idx");
                flip(&path, 40);
            })
        }),
        ("the third segment removed", {
            let third = third.clone();
            Box::new(move |dir: &Path| {
                std::fs::remove_file(dir.join(&third)).unwrap();
                std::fs::remove_file(dir.join(&third).with_extension("idx")).unwrap();
            })
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        damage(dir.path());
        let in_turn = verify_with(dir.path(), &key, None, 0, u64::MAX, &mut |_, _| {}).unwrap();
        for read_ahead in [1, 3] {
            let ahead =
                verify_with(dir.path(), &key, None, read_ahead, u64::MAX, &mut |_, _| {}).unwrap();
            assert_eq!(
                format!("{ahead:?}"),
                format!("{in_turn:?}"),
                "{what}, {read_ahead} read ahead"
            );
        }
        if what == "nothing" {
            assert!(in_turn.is_ok(), "{:?}", in_turn.problems);
            assert_eq!(in_turn.events, 3_000);
            assert_eq!(in_turn.indexes_checked, segs.len() - 1);
        } else {
            assert!(!in_turn.is_ok(), "{what} went unnoticed");
        }
        if what.starts_with("an id of ids.dat") {
            // The records decode with the ids their segments numbered: only ids.dat is blamed.
            assert_eq!(
                in_turn.problems,
                vec![format!(
                    "ids.dat: record id number {defined_in_second} differs from the one {} defines",
                    second.to_string_lossy()
                )]
            );
        }
    }
}

#[test]
fn an_index_file_is_compared_with_its_segment_in_its_own_version() {
    use crate::partition::{MemIndex, Place};
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join("seg-00000000000000000042.log");
    let mut index = MemIndex::default();
    for i in 0..300u32 {
        let mut event = sample_event(0);
        event.id = Uuid::from_u128(u128::from(i) + 1);
        event.creation_time_us = 1_800_000_000_000_000 + i64::from(i);
        let place = Place {
            offset: 16 + i * 100,
            len: 90,
        };
        index.insert(place, &event, &[i, i / 3]);
    }
    let strings = vec!["a".to_string(), "b ✓".to_string()];
    let expected = |version| sealed::encode(&index, &strings, 30_016, 42, 300, version);
    let check = |bytes: &[u8]| {
        std::fs::write(index_path(&segment), bytes).unwrap();
        super::check_index(&segment, expected, "seg").unwrap()
    };
    // A file sealed by an earlier build (versions 2 to 4) or this one (5) matches its segment.
    for version in [2, 3, 4, 5] {
        assert_eq!(check(&expected(version)), (true, None), "version {version}");
    }
    // Altered in any version, or of a version this build does not read, it does not.
    for version in [2, 3, 4, 5] {
        let mut altered = expected(version);
        let at = altered.len() / 2;
        altered[at] ^= 1;
        assert!(check(&altered).1.is_some(), "version {version} altered");
    }
    let mut unknown = expected(5);
    unknown[8] = 9;
    let found = check(&unknown).1.expect("an unknown version is reported");
    assert!(
        found.contains("of version 9, which this build does not read"),
        "{found}"
    );
}
