use super::*;

#[test]
fn a_signed_note_verifies_and_any_change_breaks_it() {
    let signer = CheckpointSigner::new([9; 32], "example.com/custos/log");
    let root = [7u8; 32];
    let note = signer.sign(42, &root);
    assert!(note.starts_with("example.com/custos/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n\u{2014} example.com/custos/log "), "{note}");
    let key = signer.verifier_key();
    assert_eq!(
        verify_note(&note, &key).unwrap(),
        Checkpoint {
            origin: "example.com/custos/log".into(),
            size: 42,
            root
        }
    );

    let tampered = note.replacen("\n42\n", "\n43\n", 1);
    assert!(verify_note(&tampered, &key).is_err(), "a changed size");
    let other = CheckpointSigner::new([8; 32], "example.com/custos/log");
    assert!(
        verify_note(&note, &other.verifier_key()).is_err(),
        "another key"
    );
    assert!(verify_note("garbage", &key).is_err());
    assert!(verify_note(&note, "not+a+key").is_err());
}
