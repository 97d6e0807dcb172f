//! Signed checkpoints in the C2SP `tlog-checkpoint` signed-note format, with Ed25519.
//!
//! A note body is `<origin>\n<tree size>\n<base64 root>\n`; the signed note appends a blank line
//! and `— <key name> <base64(key id ‖ signature)>\n`, where the key id is the first four bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)` and the signature covers the body's bytes.
//! The verifier key is published as `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
//!
//! Record ids: every checkpoint's body has the extension line `custos-ids <count> <base64
//! SHA-256>`, the digest of the first `count` 16-byte record ids of `ids.dat` (in number order):
//! retention may delete the records that defined them, after which `ids.dat` is their only copy,
//! and a changed byte there would hide a record's events from record-id searches. A verifier
//! that does not know the line ignores it, as the format allows.
//!
//! Key rotation: a handover checkpoint's body has one more extension line,
//! `custos-next-key <verifier key>`, and is signed by both the outgoing and the incoming key;
//! every later checkpoint is signed by the incoming key only. A verifier that trusts the first
//! key follows the chain of handovers ([`verify_note_chained`]), so trust passes from key to key
//! by signatures, never by the server's word.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;
use crate::{Error, Result};

/// The signature algorithm byte of Ed25519 in signed notes.
const ALGORITHM_ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The extension line of a handover checkpoint that names the incoming key.
const NEXT_KEY_PREFIX: &str = "custos-next-key ";
/// The extension line with the digest of the record ids numbered so far.
const IDS_PREFIX: &str = "custos-ids ";

/// The digest of the first `count` record ids of the log, as a checkpoint states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsDigest {
    /// Record ids covered.
    pub count: u64,
    /// SHA-256 over their 16-byte forms, in number order.
    pub sha256: Hash,
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Leaves covered.
    pub size: u64,
    /// Root of the tree of that size.
    pub root: Hash,
    /// The incoming verifier key, when this is a handover checkpoint.
    pub next_key: Option<String>,
    /// The digest of the record ids numbered by then (absent from older checkpoints).
    pub ids: Option<IdsDigest>,
}

/// Signs checkpoints of one log.
pub struct CheckpointSigner {
    key: SigningKey,
    origin: String,
    key_id: [u8; 4],
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALGORITHM_ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The body of a checkpoint note.
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", STANDARD.encode(root))
}

impl CheckpointSigner {
    /// A signer from a 32-byte Ed25519 seed; `origin` names the log and the key.
    pub fn new(seed: [u8; 32], origin: &str) -> CheckpointSigner {
        assert!(
            !origin.is_empty() && !origin.contains([' ', '+', '\n']),
            "a checkpoint origin has no spaces, '+' or newlines"
        );
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(origin, &key.verifying_key());
        CheckpointSigner {
            key,
            origin: origin.to_string(),
            key_id,
        }
    }

    /// The log's origin, which is also the key's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key: `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(self.key.verifying_key().as_bytes());
        let id: String = self.key_id.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}+{id}+{}", self.origin, STANDARD.encode(encoded))
    }

    /// The signed note of a checkpoint.
    pub fn sign(&self, size: u64, root: &Hash, ids: Option<IdsDigest>) -> String {
        let body = format!(
            "{}{}",
            checkpoint_body(&self.origin, size, root),
            ids_line(ids)
        );
        format!("{body}\n{}", self.signature_line(&body))
    }

    /// The handover checkpoint to `next`: the body names `next`'s verifier key, and both keys
    /// sign it.
    pub fn sign_handover(
        &self,
        next: &CheckpointSigner,
        size: u64,
        root: &Hash,
        ids: Option<IdsDigest>,
    ) -> String {
        let body = format!(
            "{}{}{NEXT_KEY_PREFIX}{}\n",
            checkpoint_body(&self.origin, size, root),
            ids_line(ids),
            next.verifier_key()
        );
        format!(
            "{body}\n{}{}",
            self.signature_line(&body),
            next.signature_line(&body)
        )
    }

    fn signature_line(&self, body: &str) -> String {
        let signature = self.key.sign(body.as_bytes());
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            STANDARD.encode(blob)
        )
    }
}

/// The extension line of a record-id digest (none without one).
fn ids_line(ids: Option<IdsDigest>) -> String {
    ids.map(|ids| {
        format!(
            "{IDS_PREFIX}{} {}\n",
            ids.count,
            STANDARD.encode(ids.sha256)
        )
    })
    .unwrap_or_default()
}

/// The incoming key a note names, if it is a handover (its signatures not checked).
pub fn handover_key(note: &str) -> Option<String> {
    let (body, _) = note.rsplit_once("\n\n")?;
    body.lines()
        .skip(3)
        .find_map(|line| line.strip_prefix(NEXT_KEY_PREFIX))
        .map(str::to_string)
}

/// Verifies a note with the key in force, `*key`; a handover must also verify with the key it
/// names, which is then in force for the notes after it.
pub fn verify_note_chained(note: &str, key: &mut String) -> Result<Checkpoint> {
    let checkpoint = verify_note(note, key)?;
    if let Some(next) = &checkpoint.next_key {
        verify_note(note, next)?;
        *key = next.clone();
    }
    Ok(checkpoint)
}

/// A verifier key (`<name>+<hex key id>+<base64(0x01 ‖ public key)>`), read and checked.
struct VerifierKey<'a> {
    name: &'a str,
    id: [u8; 4],
    public: VerifyingKey,
}

impl<'a> VerifierKey<'a> {
    fn parse(text: &'a str) -> std::result::Result<Self, &'static str> {
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("it is not three parts joined by '+' (name, key id, key)");
        };
        let key_bytes = STANDARD
            .decode(key_b64)
            .map_err(|_| "its key is not base64")?;
        let (&[ALGORITHM_ED25519], public) = key_bytes.split_at_checked(1).unwrap_or_default()
        else {
            return Err("its key is not an Ed25519 key");
        };
        let public: [u8; 32] = public.try_into().map_err(|_| "its key is not 32 bytes")?;
        let public =
            VerifyingKey::from_bytes(&public).map_err(|_| "its key is not a valid point")?;
        let id = key_id(name, &public);
        let id_text: String = id.iter().map(|b| format!("{b:02x}")).collect();
        if id_text != id_hex {
            return Err("its key id does not match its key");
        }
        Ok(Self { name, id, public })
    }
}

/// Checks that `text` is a verifier key (what `GET /api/audit/key` hands out): a key a person
/// typed or copied wrongly is a mistake to report as such, not a log that fails to verify.
pub fn check_verifier_key(text: &str) -> std::result::Result<(), String> {
    VerifierKey::parse(text)
        .map(drop)
        .map_err(|what| format!("'{text}' is not a verifier key: {what}"))
}

/// Parses a signed note and checks its signature by `verifier_key`; a note without a valid
/// signature of that key is rejected.
pub fn verify_note(note: &str, verifier_key: &str) -> Result<Checkpoint> {
    let bad = |what: &str| Error::Corrupted(format!("checkpoint note: {what}"));
    let VerifierKey {
        name,
        id: expected_id,
        public,
    } = VerifierKey::parse(verifier_key)
        .map_err(|what| bad(&format!("the verifier key is malformed: {what}")))?;

    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(bad("a control character other than newline"));
    }
    // The text ends at the note's last blank line (C2SP signed-note); the signatures follow.
    let (body, signatures) = note
        .rsplit_once("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures"))?;
    let body = format!("{body}\n");
    let mut verified = false;
    for line in signatures.lines() {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| bad("signature line without the em dash"))?;
        let (line_name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| bad("signature line without a signature"))?;
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| bad("signature is not base64"))?;
        if line_name != name || blob.len() < 4 || blob[..4] != expected_id {
            continue;
        }
        let signature = Signature::from_slice(&blob[4..]).map_err(|_| bad("signature length"))?;
        public
            .verify(body.as_bytes(), &signature)
            .map_err(|_| bad("signature does not verify"))?;
        verified = true;
    }
    if !verified {
        return Err(bad("no signature by the expected key"));
    }
    let mut lines = body.lines();
    let origin = lines.next().ok_or_else(|| bad("no origin"))?.to_string();
    let size_line = lines.next().ok_or_else(|| bad("no tree size"))?;
    if size_line.len() > 1 && size_line.starts_with('0') {
        return Err(bad("tree size with a leading zero"));
    }
    let size: u64 = size_line
        .parse()
        .map_err(|_| bad("tree size is not a number"))?;
    let root: Hash = STANDARD
        .decode(lines.next().ok_or_else(|| bad("no root hash"))?)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| bad("root hash is not 32 bytes of base64"))?;
    if origin != name {
        return Err(bad("origin does not name the signing key"));
    }
    let mut next_key = None;
    let mut ids = None;
    for line in lines {
        if let Some(key) = line.strip_prefix(NEXT_KEY_PREFIX) {
            next_key = Some(key.to_string());
        } else if let Some(digest) = line.strip_prefix(IDS_PREFIX) {
            let (count, sha256) = digest
                .split_once(' ')
                .ok_or_else(|| bad("record-id digest line without its digest"))?;
            ids = Some(IdsDigest {
                count: count
                    .parse()
                    .map_err(|_| bad("record-id count is not a number"))?,
                sha256: STANDARD
                    .decode(sha256)
                    .ok()
                    .and_then(|d| d.try_into().ok())
                    .ok_or_else(|| bad("record-id digest is not 32 bytes of base64"))?,
            });
        }
    }
    Ok(Checkpoint {
        origin,
        size,
        root,
        next_key,
        ids,
    })
}

#[cfg(test)]
mod tests;
