use super::*;

#[test]
fn a_signed_note_verifies_and_any_change_breaks_it() {
    let signer = CheckpointSigner::new([9; 32], "example.com/custos/log");
    let root = [7u8; 32];
    let note = signer.sign(42, &root, None);
    assert!(note.starts_with("example.com/custos/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n\u{2014} example.com/custos/log "), "{note}");
    let key = signer.verifier_key();
    assert_eq!(
        verify_note(&note, &key).unwrap(),
        Checkpoint {
            origin: "example.com/custos/log".into(),
            size: 42,
            root,
            next_key: None,
            ids: None,
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
    // A key typed or copied wrongly is named as such, whatever part of it is wrong — the
    // empty key part used to panic — and the right key passes the same check.
    assert_eq!(check_verifier_key(&key), Ok(()));
    let (name_and_id, encoded) = key.rsplit_once('+').unwrap();
    for (wrong, what) in [
        ("garbage".to_string(), "three parts"),
        (format!("{name_and_id}+"), "not an Ed25519 key"),
        (format!("{name_and_id}+!!"), "not base64"),
        (format!("{name_and_id}+AQID"), "not 32 bytes"),
        (
            key.replacen("example.com", "example.org", 1),
            "key id does not match",
        ),
        (format!("{key}x"), "not base64"),
        (format!("{name_and_id}+{}", &encoded[..8]), "not 32 bytes"),
    ] {
        let refused = check_verifier_key(&wrong).unwrap_err();
        assert!(refused.contains(what), "{wrong}: {refused}");
        let error = verify_note(&note, &wrong).unwrap_err().to_string();
        assert!(error.contains("the verifier key is malformed"), "{error}");
    }
    let control = note.replacen("\n42\n", "\n42\r\n", 1);
    assert!(
        verify_note(&control, &key)
            .unwrap_err()
            .to_string()
            .contains("control character")
    );
    // The text ends at the last blank line: a blank line before it makes the signed text
    // another, and the signature fails.
    let (body, signatures) = note.split_once("\n\n").unwrap();
    let moved = format!("{body}\n\n\u{2014} example.com/custos/log AAAA\n\n{signatures}");
    assert!(verify_note(&moved, &key).is_err());
}

#[test]
fn a_handover_passes_trust_to_the_next_key_by_both_signatures() {
    let origin = "example.com/custos/log";
    let old = CheckpointSigner::new([1; 32], origin);
    let new = CheckpointSigner::new([2; 32], origin);
    let handover = old.sign_handover(&new, 10, &[3; 32], None);
    assert_eq!(handover_key(&handover), Some(new.verifier_key()));
    assert_eq!(handover_key(&old.sign(10, &[3; 32], None)), None);

    let mut key = old.verifier_key();
    let checkpoint = verify_note_chained(&handover, &mut key).unwrap();
    assert_eq!(checkpoint.next_key, Some(new.verifier_key()));
    assert_eq!(
        key,
        new.verifier_key(),
        "the new key is in force after the handover"
    );
    let later = new.sign(11, &[4; 32], None);
    assert_eq!(verify_note_chained(&later, &mut key).unwrap().size, 11);
    let mut old_key = old.verifier_key();
    assert!(
        verify_note_chained(&later, &mut old_key).is_err(),
        "the old key does not sign after the handover"
    );

    // A handover the incoming key did not sign does not pass trust on.
    let body_end = handover.find("\n\n").unwrap() + 2;
    let first_signature_end = handover[body_end..].find('\n').unwrap() + body_end + 1;
    let half_signed = handover[..first_signature_end].to_string();
    let mut key = old.verifier_key();
    assert!(verify_note_chained(&half_signed, &mut key).is_err());
    assert_eq!(key, old.verifier_key());
    // Nor does one that names another key than the one that signed.
    let intruder = CheckpointSigner::new([5; 32], origin);
    let forged = handover.replace(&new.verifier_key(), &intruder.verifier_key());
    let mut key = old.verifier_key();
    assert!(verify_note_chained(&forged, &mut key).is_err());
}

#[test]
fn a_record_id_digest_line_is_signed_and_read_back() {
    let signer = CheckpointSigner::new([9; 32], "example.com/custos/log");
    let ids = IdsDigest {
        count: 3,
        sha256: [5; 32],
    };
    let note = signer.sign(42, &[7; 32], Some(ids));
    assert!(
        note.contains("\ncustos-ids 3 BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=\n\n"),
        "{note}"
    );
    let checkpoint = verify_note(&note, &signer.verifier_key()).unwrap();
    assert_eq!(checkpoint.ids, Some(ids));
    let altered = note.replacen("custos-ids 3 ", "custos-ids 2 ", 1);
    assert!(verify_note(&altered, &signer.verifier_key()).is_err());
}
