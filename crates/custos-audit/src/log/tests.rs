use super::*;

#[test]
fn a_segment_whose_creation_failed_part_way_is_completed_by_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 40);
    let header = header(7);
    // What a roll leaves when it fails after creating the file: nothing, part of the
    // header, or all of it.
    for held in [0, 5, header.len()] {
        fs::write(&path, &header[..held]).unwrap();
        create_segment(&path, dir.path(), 7).unwrap();
        assert_eq!(fs::read(&path).unwrap(), header, "a stub of {held} bytes");
    }
    // Anything else at the name is not a stub of this segment: refused, and left as it was.
    let mut longer = header.to_vec();
    longer.push(0);
    for other in [longer, super::header(8).to_vec(), b"not a segment".to_vec()] {
        fs::write(&path, &other).unwrap();
        let refused = create_segment(&path, dir.path(), 7).unwrap_err();
        assert!(refused.to_string().contains("exists"), "{refused}");
        assert_eq!(fs::read(&path).unwrap(), other);
    }
}
