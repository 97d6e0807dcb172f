//! Rotation of the key that signs the audit log's checkpoints (SPEC §8): `POST
//! /api/audit/key/rotate` (tenant global admin) and `GET /api/audit/keys`.
//!
//! A rotation is recorded first (`RotateCheckpointKey`, always), then: the new seed is written
//! to `keys/checkpoint.key.next` (0600, fsynced); the log writes the handover checkpoint, signed
//! by the old and the new key and naming the new one; `checkpoint.key.next` replaces
//! `checkpoint.key`. A crash at any point is finished on the next start
//! ([`finish_rotation`]): if the handover was written the next seed is the key in force and
//! takes its place, otherwise it is discarded and the old key stays.

use std::path::{Path, PathBuf};

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custos_audit::{AuditLog, Operation};
use serde_json::{Value as Json, json};

use crate::audit::EventDraft;
use crate::auth::{audit_reader_caller, authorize};
use crate::context::RequestContext;
use crate::error::{AppError, ErrorCode};
use crate::state::{AppState, StartError, blocking, write_secret};
use crate::webapi::answer;

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint.key")
}

fn next_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint.key.next")
}

fn start_error(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The seed of a rotation that may have been interrupted, if its file is there.
pub(crate) fn next_seed(data_dir: &Path) -> Result<Option<[u8; 32]>, StartError> {
    let path = next_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes.try_into().map_err(|_| {
            StartError::FirstRun(format!("{} is not a 32-byte key", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(start_error(&path)(e)),
    }
}

/// Finishes or discards an interrupted rotation once the log is open: the next seed becomes
/// the signing key when the log shows its key in force, and is deleted otherwise.
pub(crate) fn finish_rotation(data_dir: &Path, log: &AuditLog) -> Result<(), StartError> {
    let Some(seed) = next_seed(data_dir)? else {
        return Ok(());
    };
    let next = next_path(data_dir);
    if log.verifier_key_for(seed) == log.verifier_key() {
        let current = key_path(data_dir);
        std::fs::rename(&next, &current).map_err(start_error(&current))?;
    } else {
        std::fs::remove_file(&next).map_err(start_error(&next))?;
    }
    let keys = data_dir.join("keys");
    std::fs::File::open(&keys)
        .and_then(|d| d.sync_all())
        .map_err(start_error(&keys))
}

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
pub(crate) async fn keys(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match audit_reader_caller(&state, &headers) {
        Ok(_) => axum::Json(chain_json(&state.log)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /api/audit/key/rotate`.
pub(crate) async fn rotate(
    State(state): State<AppState>,
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
        state.record(draft.clone()).await?;
        let worker = state.clone();
        let size = blocking(move || {
            let data_dir = &worker.config.data_dir;
            let next = next_path(data_dir);
            let internal = |e: std::io::Error| {
                AppError::new(ErrorCode::Internal, format!("{}: {e}", next.display()))
            };
            if next.exists() {
                std::fs::remove_file(&next).map_err(internal)?;
            }
            write_secret(&next, &seed).map_err(internal)?;
            let size = worker.log.rotate_key(seed)?;
            std::fs::rename(&next, key_path(data_dir)).map_err(internal)?;
            std::fs::File::open(data_dir.join("keys"))
                .and_then(|d| d.sync_all())
                .map_err(internal)?;
            Ok::<_, AppError>(size)
        })
        .await?;
        let mut answer = chain_json(&state.log);
        answer["key"] = json!(new_key);
        answer["handoverTreeSize"] = json!(size);
        Ok::<_, AppError>(axum::Json(answer).into_response())
    }
    .await;
    answer(&state, draft, result).await
}
