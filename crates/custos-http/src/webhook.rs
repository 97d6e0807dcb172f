//! Webhooks fed by the audit log: a webhook call is first an event in the log (an alert, a
//! process or plug-in step that runs), durable before anything leaves; an outbox follower then
//! reads those events from a cursor kept in the directory's settings and posts each, retrying
//! with back-off. A restart resumes from the cursor, so every call is made at least once, and
//! a receiver that is down delays only its own follower, never a request.

use std::time::Duration;

use custos_audit::{AuditEvent, Operation, Origin, SearchQuery};
use serde_json::Value as Json;

use crate::error::blocking;
use crate::error::{AppError, ErrorCode};
use crate::outbound::{Rule, UNREACHABLE, shown_url};
use crate::state::AppState;

/// The workload of Custos's own events.
const CUSTOS: &str = "Custos";
/// How often a follower looks for new events when idle.
const POLL: Duration = Duration::from_millis(500);
/// Attempts to deliver one call, and the first wait between them (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait for a webhook to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An outbox: which events it delivers, where its cursor is kept, and how an event becomes a
/// call (its webhook and body; `None` when the event has nowhere to go).
pub struct Outbox {
    /// The directory setting that keeps its cursor (the next seq to look at).
    pub cursor: &'static str,
    /// The operations of the events it delivers.
    pub operations: &'static [Operation],
    /// The `User-Agent` of its calls.
    pub user_agent: &'static str,
    /// The webhook and body of an event, if it has one.
    pub call: fn(&AuditEvent) -> Option<(String, Json)>,
}

/// The first seq a follower has not handled yet.
pub fn cursor(state: &AppState, key: &str) -> Result<u64, AppError> {
    state
        .directory
        .setting(key)?
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| AppError::new(ErrorCode::Internal, format!("no cursor '{key}'")))
}

/// Puts a follower's cursor at the end of the log the first time (a follower is about what
/// comes, not the history). Call before the follower starts, from blocking code.
pub fn init_cursor(state: &AppState, key: &str) -> Result<(), AppError> {
    if state.directory.setting(key)?.is_none() {
        state
            .directory
            .set_setting(key, &state.log.len().to_string())?;
    }
    Ok(())
}

/// The events of `operations` at seq `from` and after that Custos itself wrote (never an
/// ingested one, whatever it claims), oldest first.
fn events_from(
    state: &AppState,
    operations: &[Operation],
    from: u64,
) -> Result<Vec<(u64, AuditEvent)>, AppError> {
    let mut query = SearchQuery {
        start_us: i64::MIN,
        end_us: i64::MAX,
        operations: operations.iter().map(|o| o.as_str().to_string()).collect(),
        workloads: vec![CUSTOS.into()],
        top: 100,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = state.log.search(&query)?;
        let before = out.len();
        let fresh = page.events.len();
        out.extend(page.events.into_iter().filter(|(seq, event)| {
            *seq >= from && event.workload == CUSTOS && event.origin != Origin::Ingest
        }));
        let more = fresh == query.top && out.len() > before;
        match page.next_before_seq {
            Some(next) if more => query.before_seq = Some(next),
            _ => break,
        }
    }
    out.reverse();
    Ok(out)
}

/// Posts webhook calls to the targets a rule admits.
pub struct Sender {
    client: reqwest::Client,
    rule: Rule,
}

impl Sender {
    /// A sender of `state`'s outbound rule.
    pub fn new(state: &AppState, user_agent: &'static str) -> Sender {
        let rule = state.outbound();
        Sender {
            client: rule
                .http_client(user_agent, TIMEOUT)
                .build()
                .expect("an HTTP client with default TLS roots"),
            rule,
        }
    }

    /// Posts `body` (with `headers`) to `url` once; a target the rule refuses, or any failure,
    /// is the coarse [`UNREACHABLE`] (the detail is logged).
    pub async fn post(
        &self,
        url: &str,
        body: &Json,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::StatusCode, &'static str> {
        if let Err(error) = self.rule.check_url(url, "webhook") {
            tracing::warn!(webhook = %shown_url(url), error = %error.message, "webhook target refused");
            return Err(UNREACHABLE);
        }
        let mut request = self.client.post(url).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send().await {
            Ok(response) => Ok(response.status()),
            Err(error) => {
                tracing::warn!(webhook = %shown_url(url), error = %error.without_url(), "webhook unreachable");
                Err(UNREACHABLE)
            }
        }
    }

    /// Posts `body` (with `headers`) to `url`, retrying with back-off; a receiver that stays
    /// down after every attempt is logged (the call itself is in the audit log either way).
    /// Returns whether the receiver took it.
    pub async fn deliver(&self, url: &str, body: &Json, headers: &[(&str, &str)]) -> bool {
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match self.post(url, body, headers).await {
                Ok(status) if status.is_success() => return true,
                Ok(status) => {
                    tracing::warn!(webhook = %shown_url(url), %status, attempt, "webhook refused");
                }
                Err(_) => {}
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        tracing::error!(webhook = %shown_url(url), "webhook gave up after {ATTEMPTS} attempts");
        false
    }
}

/// Delivers the outbox's events for as long as the server runs.
pub async fn follow(state: AppState, outbox: Outbox) {
    let client = Sender::new(&state, outbox.user_agent);
    loop {
        // One node of a cluster delivers (`Directory::leads`).
        if !state.directory.leads() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        match follow_once(&state, &outbox, &client).await {
            Ok(0) => tokio::time::sleep(POLL).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %error.message, outbox = outbox.cursor, "webhook delivery failed; trying again");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}

/// One pass of a follower; returns the events it handled.
async fn follow_once(
    state: &AppState,
    outbox: &Outbox,
    client: &Sender,
) -> Result<usize, AppError> {
    let worker = state.clone();
    let (key, operations) = (outbox.cursor, outbox.operations);
    let pending = blocking(move || {
        let from = cursor(&worker, key)?;
        events_from(&worker, operations, from)
    })
    .await?;
    for (seq, event) in &pending {
        if let Some((url, body)) = (outbox.call)(event) {
            client.deliver(&url, &body, &[]).await;
        }
        state
            .save_setting(key.into(), (seq + 1).to_string())
            .await?;
    }
    Ok(pending.len())
}
