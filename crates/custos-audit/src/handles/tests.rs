use std::os::unix::fs::FileExt;

use super::*;

fn read_all(handle: &Arc<Handle>) -> String {
    let file = handle.file().unwrap();
    let mut bytes = vec![0u8; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn no_more_files_are_open_than_the_budget_and_every_one_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let handles = Handles::new(3);
    let opened: Vec<_> = (0..10)
        .map(|n| {
            let path = dir.path().join(format!("f{n}"));
            std::fs::write(&path, format!("file {n}")).unwrap();
            Handle::open(&handles, &path).unwrap()
        })
        .collect();
    assert_eq!(handles.open_count(), 3);
    for round in 0..3 {
        for (n, handle) in opened.iter().enumerate() {
            assert_eq!(read_all(handle), format!("file {n}"), "round {round}");
            assert!(handles.open_count() <= 3);
        }
    }
    let open_now = handles.open_count();
    drop(opened);
    assert!(open_now > 0);
    assert_eq!(handles.open_count(), 0, "a dropped handle no longer counts");
}

#[test]
fn a_file_put_in_the_place_of_one_closed_by_the_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let handles = Handles::new(1);
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::write(&first, "the original").unwrap();
    std::fs::write(&second, "another").unwrap();
    let handle = Handle::open(&handles, &first).unwrap();
    // Opening a second file closes the first (a budget of one).
    let _other = Handle::open(&handles, &second).unwrap();
    let replacement = dir.path().join("replacement");
    std::fs::write(&replacement, "an altered copy").unwrap();
    std::fs::rename(&replacement, &first).unwrap();
    let refused = handle.file().unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("another file was put in its place"),
        "{refused}"
    );
    // The same file, closed and opened again, reads.
    std::fs::remove_file(&first).unwrap();
    std::fs::write(&first, "a new file").unwrap();
    let again = Handle::open(&handles, &first).unwrap();
    let _third = Handle::open(&handles, &second).unwrap();
    assert_eq!(read_all(&again), "a new file");
}
