use super::*;

#[test]
fn tokens_verify_until_they_expire() {
    let key = [7u8; 32];
    let claims = Claims {
        principal: Uuid::new_v4(),
        session: Uuid::new_v4(),
        generation: 3,
    };
    let token = issue_token(&key, claims, 1000, 60);
    assert_eq!(verify_token(&key, &token, 1059).unwrap(), claims);
    let expired = verify_token(&key, &token, 1060).unwrap_err();
    assert_eq!(expired.message, "the bearer token has expired");
    assert!(
        verify_token(&[8u8; 32], &token, 1000).is_err(),
        "another key's token is rejected"
    );
    let mut tampered = token.clone();
    tampered.replace_range(0..1, if token.starts_with('e') { "f" } else { "e" });
    assert!(verify_token(&key, &tampered, 1000).is_err());
    assert!(verify_token(&key, "garbage", 1000).is_err());
}

#[test]
fn secrets_verify_against_their_hash_only() {
    let hash = hash_secret("correct horse");
    assert!(verify_secret("correct horse", &hash));
    assert!(!verify_secret("Correct horse", &hash));
    assert!(!verify_secret("correct horse", "not a phc string"));
}
