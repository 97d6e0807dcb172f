use std::os::unix::fs::PermissionsExt;

use super::*;

/// Makes a FIFO at `path` without starting a process: a child forked while another test holds
/// a log's lock would hold the lock's file description until it runs its program, and that
/// test's next open of its log would find the lock taken.
pub(crate) fn make_fifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("mkfifo");
}

/// A folder, a file outside it, and a link to that file at `name` in the folder.
fn planted(name: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    fs::write(&victim, b"keep me").expect("written");
    let at = dir.path().join(name);
    std::os::unix::fs::symlink(&victim, &at).expect("link");
    (dir, outside, at, victim)
}

/// One of the module's ways to open a file, its file dropped.
type Open = fn(&Path) -> io::Result<()>;

#[test]
fn no_open_goes_through_a_link_at_the_files_name() {
    let (_dir, _outside, at, victim) = planted("feed.dat");
    let opens: [(&str, Open); 6] = [
        ("open_read", |p| open_read(p).map(drop)),
        ("open_write", |p| open_write(p).map(drop)),
        ("open_append", |p| open_append(p).map(drop)),
        ("create_new", |p| create_new(p).map(drop)),
        ("read", |p| read(p).map(drop)),
        ("read_to_string", |p| read_to_string(p).map(drop)),
    ];
    for (name, open) in opens {
        let error = open(&at).expect_err(name);
        if name != "create_new" {
            assert!(
                error.to_string().contains("symbolic link"),
                "{name}: {error}"
            );
        }
        assert_eq!(fs::read(&victim).expect("victim"), b"keep me", "{name}");
    }
}

#[test]
fn create_replacing_unlinks_a_planted_link_and_makes_a_private_file() {
    let (_dir, _outside, at, victim) = planted("archive.part");
    let mut file = create_replacing(&at).expect("created");
    file.write_all(b"ours").expect("written");
    assert_eq!(fs::read(&victim).expect("victim"), b"keep me");
    let meta = fs::symlink_metadata(&at).expect("made");
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(read(&at).expect("read"), b"ours");
    // An earlier attempt's file is replaced, not appended to.
    create_replacing(&at).expect("again");
    assert_eq!(read(&at).expect("read"), b"");
}

#[test]
fn a_file_with_another_name_is_read_but_never_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    fs::write(&victim, b"keep me").expect("written");
    let at = dir.path().join("seg-00000000000000000000.log");
    fs::hard_link(&victim, &at).expect("hard link");
    for (name, open) in [
        ("open_write", open_write as fn(&Path) -> io::Result<File>),
        ("open_append", open_append),
    ] {
        let error = open(&at).expect_err(name);
        assert!(error.to_string().contains("hard link"), "{name}: {error}");
    }
    assert_eq!(read(&at).expect("read"), b"keep me");
    // Replacing the file makes a new one of a single name and leaves the other alone.
    create_replacing(&at).expect("replaced");
    open_append(&at)
        .expect("ours now")
        .write_all(b"x")
        .expect("written");
    assert_eq!(fs::read(&victim).expect("victim"), b"keep me");
}

#[test]
fn a_fifo_or_a_folder_at_the_files_name_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe");
    make_fifo(&fifo);
    for path in [fifo.as_path(), dir.path()] {
        let error = open_read(path).expect_err("refused");
        assert!(
            error.to_string().contains("not a regular file"),
            "{}: {error}",
            path.display()
        );
    }
    // To write, a FIFO without a reader fails the open itself (ENXIO), still without waiting.
    open_append(&fifo).expect_err("refused");
}

#[test]
fn open_append_creates_a_private_file_and_appends_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stream.jsonl");
    open_append(&path)
        .and_then(|mut f| f.write_all(b"a"))
        .expect("first");
    open_append(&path)
        .and_then(|mut f| f.write_all(b"b"))
        .expect("second");
    assert_eq!(read_to_string(&path).expect("read"), "ab");
    let mode = fs::metadata(&path).expect("made").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    sync_dir(dir.path()).expect("synced");
}
