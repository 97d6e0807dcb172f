//! Witness copies of the log's signed checkpoints (issue 11 §5): every stream to a SIEM and
//! every content blob of the activity feed carries the latest signed checkpoint, so every SIEM
//! holds copies the server cannot take back. A log that later showed a different history (a
//! split view, a rewrite) is caught by anyone who checks it against such a copy: `custos audit
//! verify --checkpoint FILE`, or the consistency proof route.
//!
//! The copy travels as a record in the stream's own format: an event of record type
//! `CustosCheckpoint` and operation `SignedCheckpoint` whose `Details` hold the signed note
//! (`Note`), its tree size (`TreeSize`) and the verifier keys (`VerifierKeys`, root first). It
//! is not a record of the log — it is about the log — so it has no leaf and no seq; it is sent
//! whatever a stream's filter says. A stream sends the latest checkpoint whenever a newer one
//! was signed; a content blob carries the first checkpoint that covered its last event.

use custos_audit::{AuditEvent, EntityCategory, Origin, ResultStatus, UserType};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Builder;

use crate::SiemState;

/// The record type of a checkpoint copy.
pub(crate) const RECORD_TYPE: &str = "CustosCheckpoint";
/// The operation of a checkpoint copy.
pub(crate) const OPERATION: &str = "SignedCheckpoint";

/// The record that carries the signed checkpoint `note` of `size` events. It reads the same
/// whenever it is made, so a receiver can drop a copy it already has: its id is derived from
/// the note, and its time is that of the last event the checkpoint covers. Call from blocking
/// code.
pub(crate) fn checkpoint_record(state: &SiemState, size: u64, note: &str) -> AuditEvent {
    let keys: Vec<String> = state
        .log
        .verifier_keys()
        .into_iter()
        .map(|(_, key)| key)
        .collect();
    let digest: [u8; 32] = Sha256::digest(note.as_bytes()).into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let covered_until = size
        .checked_sub(1)
        .and_then(|last| state.log.read_from(last, 1).ok())
        .and_then(|events| events.into_iter().next())
        .filter(|(seq, _)| *seq + 1 == size)
        .map_or_else(|| state.clock.now_us(), |(_, event)| event.creation_time_us);
    AuditEvent {
        id: Builder::from_custom_bytes(id).into_uuid(),
        creation_time_us: covered_until,
        tenant_id: state.directory.tenant_id(),
        instance: String::new(),
        instance_url: String::new(),
        workload: "Custos".into(),
        record_type: RECORD_TYPE.into(),
        operation: OPERATION.into(),
        category: String::new(),
        user_id: String::new(),
        user_upn: String::new(),
        user_type: UserType::System,
        caller_id: String::new(),
        client_ip: String::new(),
        user_agent: String::new(),
        origin: Origin::Backend,
        correlation_id: String::new(),
        session_id: String::new(),
        client_request_id: String::new(),
        result_status: ResultStatus::Succeeded,
        error_code: String::new(),
        entity_name: String::new(),
        entity_category: EntityCategory::None,
        record_ids: Vec::new(),
        query: String::new(),
        result_count: size,
        changes: Vec::new(),
        details: json!({"TreeSize": size, "Note": note, "VerifierKeys": keys}).to_string(),
    }
}

/// The latest signed checkpoint's copy when it is newer than `sent` (the size of the last copy
/// sent), with its size: what a stream sends. Call from blocking code.
pub(crate) fn newer_than(state: &SiemState, sent: u64) -> Option<(u64, AuditEvent)> {
    match state.log.latest_checkpoint() {
        Ok(Some((size, note))) if size > sent => {
            Some((size, checkpoint_record(state, size, &note)))
        }
        _ => None,
    }
}

/// The copy of the first checkpoint that covered the first `end` events: what a content blob
/// of the activity feed ending there carries, so the blob reads the same every time once it
/// has one. Call from blocking code.
pub(crate) fn covering(state: &SiemState, end: u64) -> Option<AuditEvent> {
    match state.log.checkpoint_covering(end) {
        Ok(Some((size, note))) => Some(checkpoint_record(state, size, &note)),
        _ => None,
    }
}
