//! Proof that the log was not tampered with (SPEC §8), for Audit Readers: the signed
//! checkpoints (`GET /api/audit/checkpoint[?treeSize=N]`), the verifier key and its rotations
//! (`GET /api/audit/key`, `GET /api/audit/keys`), inclusion and consistency proofs
//! (`GET /api/audit/proofs/inclusion?id=`, `GET /api/audit/proofs/consistency?from=&to=`); and
//! the rotation of the signing key (`POST /api/audit/key/rotate`, tenant global admin), whose
//! file steps are `custos_http::keys`.

use axum::extract::{Extension, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_audit::{AuditLog, Operation};
use custos_http::answer::answer;
use custos_http::auth::{audit_reader_caller, authorize};
use custos_http::blocking;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;
use custos_http::query::{number, query_pairs};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::ComplianceState;
use crate::search::missing;

fn chain_json(log: &AuditLog) -> Json {
    let keys: Vec<Json> = log
        .verifier_keys()
        .into_iter()
        .map(|(since, key)| json!({"key": key, "sinceTreeSize": since}))
        .collect();
    json!({"value": keys})
}

/// `GET /api/audit/keys`: every key that has signed the log, the root first, each with the
/// tree size of the handover checkpoint that brought it in
/// (`GET /api/audit/checkpoint?treeSize=N`).
pub(crate) async fn keys(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    match audit_reader_caller(&state, &headers) {
        Ok(_) => axum::Json(chain_json(&state.log)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /api/audit/key/rotate`.
pub(crate) async fn rotate(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::RotateCheckpointKey, &context);
    let result = async {
        authorize(
            &state,
            &mut draft,
            &headers,
            |caller| caller.principal.global_admin,
            "must be a tenant global admin to rotate the log's signing key",
        )?;
        let seed: [u8; 32] = rand::random();
        let new_key = state.log.verifier_key_for(seed);
        draft.details = json!({"OldKey": state.log.verifier_key(), "NewKey": new_key}).to_string();
        let size = if state.in_cluster() {
            rotate_in_cluster(&state, &draft, seed, &new_key).await?
        } else {
            state.record(draft.clone()).await?;
            let worker = state.clone();
            blocking(move || custos_http::keys::rotate(&worker.config.data_dir, &worker.log, seed))
                .await?
        };
        let mut answer = chain_json(&state.log);
        answer["key"] = json!(new_key);
        answer["handoverTreeSize"] = json!(size);
        Ok::<_, AppError>(axum::Json(answer).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

/// How long a rotation asked for on a cluster node waits for this node to take the handover.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A rotation of a cluster's key (docs/scale-out.md): recorded, the incoming seed left in the
/// shared directory for the node that signs the cluster's checkpoints to hand over to, then
/// answered once this node's log has taken the handover from the stream; returns its tree
/// size.
async fn rotate_in_cluster(
    state: &ComplianceState,
    draft: &EventDraft,
    seed: [u8; 32],
    new_key: &str,
) -> Result<u64, AppError> {
    use base64::Engine as _;
    let conflict = |message: &str| AppError::new(custos_http::ErrorCode::Conflict, message);
    if state.config.postgres.is_none() {
        return Err(conflict(
            "a cluster's signing key rotates through its shared directory, and this cluster has none (--postgres)",
        ));
    }
    let pending = state
        .directory
        .setting(custos_http::keys::NEXT_KEY_SETTING)?
        .is_some_and(|next| !next.is_empty());
    if pending {
        return Err(conflict(
            "a rotation of the cluster's signing key is under way: try again once it is done",
        ));
    }
    state.record(draft.clone()).await?;
    state
        .save_setting(
            custos_http::keys::NEXT_KEY_SETTING.to_string(),
            base64::engine::general_purpose::STANDARD.encode(seed),
        )
        .await?;
    let deadline = std::time::Instant::now() + HANDOVER_WAIT;
    while state.log.verifier_key() != new_key {
        if std::time::Instant::now() > deadline {
            return Err(AppError::from(custos_audit::Error::Unavailable(
                "the rotation is under way, but the node that signs the cluster's checkpoints has not handed over within 30 s".into(),
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(state
        .log
        .verifier_keys()
        .last()
        .map_or(0, |(size, _)| *size))
}

fn note_response(note: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response()
}

fn b64(hashes: &[custos_audit::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// `GET /api/audit/checkpoint[?treeSize=N]`: the latest signed checkpoint (a C2SP signed note),
/// or the one signed earlier for exactly N events.
pub(crate) async fn checkpoint(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        if let Some(size) = number(&pairs, "treeSize")? {
            let log = state.log.clone();
            let note = blocking(move || log.checkpoint_at(size))
                .await?
                .ok_or_else(|| {
                    AppError::not_found(format!("no checkpoint was signed for {size} events"))
                })?;
            return Ok(note_response(note));
        }
        let log = state.log.clone();
        let latest = blocking(move || log.latest_checkpoint()).await?;
        let (_, note) = latest.ok_or_else(|| AppError::not_found("the log is empty"))?;
        Ok::<_, AppError>(note_response(note))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/audit/key`: the checkpoints' verifier key.
pub(crate) async fn key(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    match audit_reader_caller(&state, &headers).map(drop) {
        Ok(()) => note_response(format!("{}\n", state.log.verifier_key())),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/audit/proofs/inclusion?id=…`: the event's inclusion proof against the latest
/// checkpoint (signed on the spot when the event is newer than it).
pub(crate) async fn inclusion(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        let id = pairs
            .iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| AppError::bad_request("'id' is required"))?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::bad_request(format!("'{id}' is not an audit record id")))?;
        let log = state.log.clone();
        let proof = blocking(move || log.inclusion_proof(id)).await?;
        let proof = proof.ok_or_else(|| missing(&state, id))?;
        Ok::<_, AppError>(
            axum::Json(json!({
                "id": id,
                "leafIndex": proof.leaf_index,
                "treeSize": proof.tree_size,
                "leafHash": STANDARD.encode(proof.leaf_hash),
                "hashes": b64(&proof.hashes),
                "checkpoint": proof.checkpoint,
            }))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/audit/proofs/consistency?from=m&to=n`.
pub(crate) async fn consistency(
    State(state): State<ComplianceState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        audit_reader_caller(&state, &headers)?;
        let pairs = query_pairs(raw);
        let from =
            number(&pairs, "from")?.ok_or_else(|| AppError::bad_request("'from' is required"))?;
        let to = number(&pairs, "to")?.ok_or_else(|| AppError::bad_request("'to' is required"))?;
        let hashes = state.log.consistency_proof(from, to)?;
        Ok::<_, AppError>(
            axum::Json(json!({"from": from, "to": to, "hashes": b64(&hashes)})).into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
