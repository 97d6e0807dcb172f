//! Verification of the whole log from the server (the integrity page's "Verify now"):
//! `POST /api/audit/verify` (Audit Manager) starts `custos audit verify`'s check on the live
//! log in the background, recorded as `VerifyAuditLog`; `GET /api/audit/verify` tells the
//! last verification's outcome, kept in the directory's settings. One runs at a time.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_audit::{Operation, format_creation_time};
use serde_json::{Value as Json, json};

use crate::ComplianceState;
use custos_http::answer::answer;
use custos_http::auth::audit_manager;
use custos_http::auth::audit_reader_caller;
use custos_http::context::RequestContext;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};

const SETTING: &str = "audit.verification";

/// Whether a verification is running now (in this process).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The one verification allowed to run; dropped — also when a verification panics — it lets
/// the next one run.
struct Claim;

impl Claim {
    /// The claim, unless a verification is running.
    fn take() -> Option<Claim> {
        (!RUNNING.swap(true, Ordering::AcqRel)).then_some(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

fn last(state: &ComplianceState) -> Result<Json, AppError> {
    // Running from the moment the start is answered, so a client polling right after its
    // POST never reads the previous outcome as this one's.
    if RUNNING.load(Ordering::Acquire) {
        return Ok(json!({"status": "running"}));
    }
    Ok(state
        .directory
        .setting(SETTING)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"status": "never"})))
}

/// `GET /api/audit/verify`.
pub(crate) async fn get(State(state): State<ComplianceState>, headers: HeaderMap) -> Response {
    let result = (|| -> Result<Response, AppError> {
        audit_reader_caller(&state, &headers)?;
        Ok(axum::Json(last(&state)?).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Verifies the log and keeps the outcome; `_claim` goes when it is kept.
fn run(state: &ComplianceState, started: String, _claim: Claim) {
    // A log that does not verify turns `/healthz` 503 with the first problem (`AuditLog::verify`).
    let outcome = match state.log.verify(&mut |_, _| {}) {
        Ok(report) => json!({
            "status": "succeeded",
            "ok": report.is_ok(),
            "events": report.events,
            "segments": report.segments,
            "checkpoints": report.checkpoints,
            "latestCheckpoint": report.latest_checkpoint,
            "indexesChecked": report.indexes_checked,
            "purgedEvents": report.purged_events,
            "problems": report.problems,
            "tornTail": report.torn_tail,
        }),
        Err(error) => json!({"status": "failed", "ok": false, "error": error.to_string()}),
    };
    let mut outcome = outcome;
    outcome["startedDateTime"] = json!(started);
    outcome["finishedDateTime"] = json!(format_creation_time(state.clock.now_us()));
    if let Err(error) = state.directory.set_setting(SETTING, &outcome.to_string()) {
        tracing::error!(%error, "the verification's outcome was not kept");
    }
    if outcome["ok"] != true {
        tracing::error!(outcome = %outcome, "the audit log did not verify");
    }
}

/// How soon after a start the first scheduled verification runs (sooner if the interval is
/// shorter). A file of the data directory changed while the server was stopped — an index file
/// rewritten to leave an event out of searches, which opening the log cannot see — is found
/// this long after the start rather than an interval (a day) later.
const FIRST_VERIFICATION_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// When the first scheduled verification runs after a start, for an `interval`.
fn first_verification_after(interval: std::time::Duration) -> std::time::Duration {
    interval.min(FIRST_VERIFICATION_AFTER)
}

/// Verifies the log a minute after the start ([`FIRST_VERIFICATION_AFTER`]), then every
/// `interval` (`serve --verify-interval-secs`, a day by default), as `POST /api/audit/verify`
/// does and recorded as the system's `VerifyAuditLog` first; skipped while a requested one
/// runs. It runs on a thread of its own at the lowest priority (its segments' threads inherit
/// it), so that it takes the cores the requests leave. Every node of a cluster verifies its own
/// log.
pub(crate) async fn verify_periodically(state: ComplianceState, interval: std::time::Duration) {
    let mut wait = first_verification_after(interval);
    loop {
        tokio::time::sleep(wait).await;
        wait = interval;
        let Some(claim) = Claim::take() else {
            continue;
        };
        let draft = state.system_draft(Operation::VerifyAuditLog, "");
        if let Err(error) = state.record(draft).await {
            tracing::error!(error = %error.message, "the scheduled verification was not recorded, so it did not run");
            continue;
        }
        let started = format_creation_time(state.clock.now_us());
        let worker = state.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("audit-verify".into())
            .spawn(move || {
                custos_audit::lowest_priority();
                run(&worker, started, claim);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(error) => tracing::error!(%error, "the scheduled verification could not start"),
        }
    }
}

/// `POST /api/audit/verify`.
pub(crate) async fn start(
    State(state): State<ComplianceState>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let mut draft = EventDraft::new(Operation::VerifyAuditLog, &context);
    let result = async {
        audit_manager(&state, &mut draft, &headers, "verify the audit log")?;
        let claim = Claim::take().ok_or_else(|| {
            AppError::new(ErrorCode::Conflict, "a verification is running already")
        })?;
        state.record(draft.clone()).await?;
        let started = format_creation_time(state.clock.now_us());
        let running = json!({"status": "running", "startedDateTime": started});
        let worker = state.clone();
        tokio::task::spawn_blocking(move || run(&worker, started, claim));
        Ok::<_, AppError>((StatusCode::ACCEPTED, axum::Json(running)).into_response())
    }
    .await;
    answer(&state, draft, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_scheduled_verification_runs_a_minute_after_the_start_or_sooner() {
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(first_verification_after(day), FIRST_VERIFICATION_AFTER);
        let second = std::time::Duration::from_secs(1);
        assert_eq!(first_verification_after(second), second);
    }
}
