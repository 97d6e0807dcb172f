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

/// A budget of one open file, and two files holding `texts`.
fn budget_of_one(texts: [&str; 2]) -> (tempfile::TempDir, Arc<Handles>, [PathBuf; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let paths = ["first", "second"].map(|name| dir.path().join(name));
    for (path, text) in paths.iter().zip(texts) {
        std::fs::write(path, text).unwrap();
    }
    (dir, Handles::new(1), paths)
}

#[test]
fn a_file_put_in_the_place_of_one_closed_by_the_budget_is_refused() {
    let (dir, handles, [first, second]) = budget_of_one(["the original", "another"]);
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

#[test]
fn what_is_kept_with_a_file_goes_when_the_budget_closes_it() {
    let (_dir, handles, [first, second]) = budget_of_one(["one", "two"]);
    let handle = Handle::open(&handles, &first).unwrap();
    let kept = handle.kept::<Mutex<Vec<u8>>>().unwrap();
    kept.lock().unwrap().push(7);
    assert_eq!(
        *handle.kept::<Mutex<Vec<u8>>>().unwrap().lock().unwrap(),
        [7]
    );
    let gone = Arc::downgrade(&kept);
    drop(kept);
    let _other = Handle::open(&handles, &second).unwrap();
    assert!(gone.upgrade().is_none(), "closed with its file");
    // Asked for again, it is made anew, with the file opened again.
    assert!(
        handle
            .kept::<Mutex<Vec<u8>>>()
            .unwrap()
            .lock()
            .unwrap()
            .is_empty()
    );
    assert_eq!(read_all(&handle), "one");
}
