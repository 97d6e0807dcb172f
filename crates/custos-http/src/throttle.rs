//! Keeping floods out of the log without losing count of them (issue 10 §4, §11).
//!
//! - **Sign-in lock-outs**: after [`USER_FAILURES_MAX`] failed sign-ins of one name in
//!   [`WINDOW_SECS`], or [`SOURCE_FAILURES_MAX`] from one client address, further attempts of
//!   that name (or from that address) are refused with 429 and `Retry-After` for a minute,
//!   doubling with each lock-out up to [`LOCKOUT_SECS_MAX`]; a locked attempt checks no
//!   password. A successful sign-in clears its name's count.
//! - **Recording budget**: one client address has its first [`RECORDED_PER_WINDOW`] refusals
//!   (denied or failed requests, failed or throttled sign-ins) of a minute recorded one event
//!   each; beyond that they are counted, and the count goes into one summary event per address
//!   and minute (`ErrorCode` `Throttled`, `ResultCount` the refusals it stands for). A flood of
//!   refusals is then a few events a minute, not megabytes.
//!
//! Everything is in memory and bounded ([`KEYS_MAX`] names and addresses): a restart forgets
//! lock-outs, and a crash loses at most the last minute's count of refusals that were not
//! recorded one by one (each of which changed nothing).
//!
//! In a cluster (the directory on PostgreSQL) the lock-outs are the cluster's: every failed
//! sign-in is also counted in the directory's shared counters (`user:<name>`, `source:<address>`)
//! and every node reads them before it checks a password, so a client spreading its attempts
//! over n nodes gets no more than over one. Should the database not answer, each node goes on
//! with its own count (never fewer lock-outs than one node alone). The recording budget stays
//! per node: it bounds how much of a flood is written one event each, not who may try.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use custos_audit::{Operation, ResultStatus};
use serde_json::json;
use uuid::Uuid;

use crate::context::RequestContext;
use crate::draft::EventDraft;

/// Failed sign-ins of one name that lock it.
pub const USER_FAILURES_MAX: u32 = 10;
/// Failed sign-ins from one address that lock it.
pub const SOURCE_FAILURES_MAX: u32 = 30;
/// The window failures are counted in, seconds.
pub const WINDOW_SECS: i64 = 900;
/// The first lock-out, seconds; each further one doubles it.
const LOCKOUT_SECS_FIRST: i64 = 60;
/// The longest lock-out, seconds.
pub const LOCKOUT_SECS_MAX: i64 = 900;
/// Refusals from one address recorded one by one per minute.
pub const RECORDED_PER_WINDOW: u32 = 120;
/// The recording budget's window, seconds.
pub(crate) const BUDGET_SECS: i64 = 60;
/// Most names and addresses tracked at once.
pub const KEYS_MAX: usize = 100_000;

#[derive(Debug, Default, Clone)]
struct Failures {
    /// Failures in the current window, and when the window began.
    count: u32,
    since: i64,
    /// Lock-outs so far (doubling the next), and until when the current one lasts.
    lockouts: u32,
    locked_until: i64,
}

impl Failures {
    /// Counts a failure at `now`; returns the lock-out's end when this failure starts one.
    fn fail(&mut self, now: i64, max: u32) -> Option<i64> {
        if now - self.since >= WINDOW_SECS {
            self.count = 0;
            self.since = now;
        }
        self.count += 1;
        if self.count < max {
            return None;
        }
        let secs = (LOCKOUT_SECS_FIRST << self.lockouts.min(8)).min(LOCKOUT_SECS_MAX);
        self.lockouts += 1;
        self.count = 0;
        self.since = now;
        self.locked_until = now + secs;
        Some(self.locked_until)
    }

    fn stale(&self, now: i64) -> bool {
        self.locked_until <= now && now - self.since >= WINDOW_SECS
    }
}

impl Failures {
    /// From a shared counter: (count, window start, lock-outs, locked until).
    fn from_counter(counter: Option<[i64; 4]>) -> Failures {
        let [count, since, lockouts, locked_until] = counter.unwrap_or_default();
        Failures {
            count: u32::try_from(count).unwrap_or(0),
            since,
            lockouts: u32::try_from(lockouts).unwrap_or(0),
            locked_until,
        }
    }

    fn to_counter(&self) -> [i64; 4] {
        [
            i64::from(self.count),
            self.since,
            i64::from(self.lockouts),
            self.locked_until,
        ]
    }
}

/// Lock-outs of sign-in names and client addresses.
#[derive(Default)]
pub struct SignInThrottle {
    users: Mutex<HashMap<String, Failures>>,
    sources: Mutex<HashMap<String, Failures>>,
    /// The directory whose counters every node shares, on a cluster.
    shared: Option<custos_records::Directory>,
    /// Failures counted since stale shared counters were last removed.
    since_pruned: std::sync::atomic::AtomicU32,
}

/// Failed sign-ins between two removals of stale shared counters.
const PRUNE_EVERY: u32 = 256;

fn user_key(user: &str) -> String {
    format!("user:{user}")
}

fn source_key(source: &str) -> String {
    format!("source:{source}")
}

/// Drops what no longer matters when a map is full; if every entry still matters, the oldest
/// windows go (a flood of distinct names cannot grow memory without bound).
fn make_room(map: &mut HashMap<String, Failures>, now: i64) {
    if map.len() < KEYS_MAX {
        return;
    }
    map.retain(|_, f| !f.stale(now));
    if map.len() >= KEYS_MAX {
        let mut windows: Vec<i64> = map.values().map(|f| f.since).collect();
        windows.sort_unstable();
        let cut = windows[windows.len() / 2];
        map.retain(|_, f| f.since > cut || f.locked_until > now);
    }
}

impl SignInThrottle {
    /// Lock-outs shared through `directory` when it is shared with other nodes (PostgreSQL),
    /// this node's own otherwise.
    pub fn over(directory: &custos_records::Directory) -> SignInThrottle {
        SignInThrottle {
            shared: directory.is_shared().then(|| directory.clone()),
            ..SignInThrottle::default()
        }
    }

    /// How many seconds the sign-in of `user` from `source` must wait; `None` when it may try.
    pub async fn locked(&self, user: &str, source: &str, now: i64) -> Option<i64> {
        let user = user.to_lowercase();
        let wait = |map: &Mutex<HashMap<String, Failures>>, key: &str| {
            map.lock()
                .expect("throttle lock")
                .get(key)
                .map(|f| f.locked_until)
        };
        let mut until = [wait(&self.users, &user), wait(&self.sources, source)];
        if let Some(directory) = self.shared.clone() {
            let keys = [user_key(&user), source_key(source)];
            let read =
                crate::error::blocking(move || directory.counters(&[&keys[0], &keys[1]])).await;
            match read {
                Ok(counters) => {
                    for (mine, shared) in until.iter_mut().zip(counters) {
                        let shared = shared.map(|[_, _, _, locked_until]| locked_until);
                        *mine = (*mine).max(shared);
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error.message, "the shared sign-in lock-outs cannot be read; this node's own count holds")
                }
            }
        }
        until
            .into_iter()
            .flatten()
            .map(|locked_until| locked_until - now)
            .filter(|secs| *secs > 0)
            .max()
    }

    /// Counts a failed sign-in of `user` from `source`.
    pub async fn failed(&self, user: &str, source: &str, now: i64) {
        let user = user.to_lowercase();
        {
            let mut users = self.users.lock().expect("throttle lock");
            make_room(&mut users, now);
            users
                .entry(user.clone())
                .or_default()
                .fail(now, USER_FAILURES_MAX);
        }
        {
            let mut sources = self.sources.lock().expect("throttle lock");
            make_room(&mut sources, now);
            sources
                .entry(source.to_string())
                .or_default()
                .fail(now, SOURCE_FAILURES_MAX);
        }
        let Some(directory) = self.shared.clone() else {
            return;
        };
        let prune = self
            .since_pruned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % PRUNE_EVERY
            == PRUNE_EVERY - 1;
        let source = source.to_string();
        let counted = crate::error::blocking(move || {
            for (key, max) in [
                (user_key(&user), USER_FAILURES_MAX),
                (source_key(&source), SOURCE_FAILURES_MAX),
            ] {
                directory.update_counter(&key, |held| {
                    let mut failures = Failures::from_counter(held);
                    failures.fail(now, max);
                    Some(failures.to_counter())
                })?;
            }
            if prune {
                directory.prune_counters(now - WINDOW_SECS, now)?;
            }
            Ok::<_, custos_records::Error>(())
        })
        .await;
        if let Err(error) = counted {
            tracing::warn!(error = %error.message, "a failed sign-in was not counted in the shared lock-outs; this node's own count holds");
        }
    }

    /// Clears the failures of `user` after a successful sign-in.
    pub async fn succeeded(&self, user: &str) {
        let user = user.to_lowercase();
        self.users.lock().expect("throttle lock").remove(&user);
        if let Some(directory) = self.shared.clone() {
            let cleared = crate::error::blocking(move || {
                directory.update_counter(&user_key(&user), |_| None)
            })
            .await;
            if let Err(error) = cleared {
                tracing::warn!(error = %error.message, "a sign-in's shared failures were not cleared");
            }
        }
    }
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record it as its own event.
    Record,
    /// Record a summary of it and of the refusals counted since the last one, by error code.
    Summarize(BTreeMap<String, u64>),
    /// Only count it.
    Count,
}

#[derive(Debug, Default)]
struct Budget {
    window_start: i64,
    recorded: u32,
    /// Refusals counted but not recorded, by error code, since the last summary.
    counted: BTreeMap<String, u64>,
    last_summary: i64,
}

/// The recording budget of each client address.
#[derive(Debug, Default)]
pub struct RecordingBudget {
    sources: Mutex<HashMap<String, Budget>>,
}

impl RecordingBudget {
    /// The verdict on one refusal (`code`: its error code) from `source` at `now`.
    pub fn admit(&self, source: &str, code: &str, now: i64) -> Verdict {
        let mut sources = self.sources.lock().expect("budget lock");
        if sources.len() >= KEYS_MAX && !sources.contains_key(source) {
            sources.retain(|_, b| !b.counted.is_empty() || now - b.window_start < BUDGET_SECS);
        }
        let budget = sources.entry(source.to_string()).or_default();
        if now - budget.window_start >= BUDGET_SECS {
            budget.window_start = now;
            budget.recorded = 0;
        }
        if budget.recorded < RECORDED_PER_WINDOW {
            budget.recorded += 1;
            return Verdict::Record;
        }
        *budget.counted.entry(code.to_string()).or_default() += 1;
        if now - budget.last_summary >= BUDGET_SECS {
            budget.last_summary = now;
            return Verdict::Summarize(std::mem::take(&mut budget.counted));
        }
        Verdict::Count
    }

    /// Takes every count a summary has not covered yet: (address, refusals by error code),
    /// for the periodic flush.
    pub fn take_counted(&self, now: i64) -> Vec<(String, BTreeMap<String, u64>)> {
        let mut sources = self.sources.lock().expect("budget lock");
        let out = sources
            .iter_mut()
            .filter(|(_, b)| !b.counted.is_empty())
            .map(|(source, b)| {
                b.last_summary = now;
                (source.clone(), std::mem::take(&mut b.counted))
            })
            .collect();
        sources.retain(|_, b| now - b.window_start < BUDGET_SECS);
        out
    }
}

/// Error codes that are denials (the rest are failures).
const DENIALS: [&str; 3] = ["Unauthenticated", "Forbidden", "Throttled"];

/// The summary event of the refusals `counted` (by error code) from `source`.
pub(crate) fn summary(source: &str, counted: BTreeMap<String, u64>) -> EventDraft {
    let context = RequestContext {
        client_ip: source.to_string(),
        user_agent: String::new(),
        correlation_id: Uuid::new_v4().to_string(),
        client_request_id: String::new(),
        origin: custos_audit::Origin::Api,
    };
    let mut draft = EventDraft::new(Operation::Request, &context);
    draft.status = if counted.keys().any(|code| DENIALS.contains(&code.as_str())) {
        ResultStatus::Denied
    } else {
        ResultStatus::Failed
    };
    draft.error_code = "Throttled".into();
    draft.result_count = counted.values().sum();
    draft.details = json!({
        "Refusals": counted,
        "Why": format!("refusals from {source} beyond {RECORDED_PER_WINDOW} a minute, counted"),
    })
    .to_string();
    draft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_is_locked_after_its_failures_and_the_lock_doubles() {
        let throttle = SignInThrottle::default();
        for n in 0..USER_FAILURES_MAX {
            assert_eq!(throttle.locked("Ann", "10.0.0.1", 100).await, None, "{n}");
            throttle.failed("Ann", &format!("10.0.1.{n}"), 100).await;
        }
        assert_eq!(throttle.locked("ann", "10.0.0.9", 100).await, Some(60));
        assert_eq!(throttle.locked("ann", "10.0.0.9", 160).await, None);
        assert_eq!(throttle.locked("bob", "10.0.0.9", 100).await, None);
        for _ in 0..USER_FAILURES_MAX {
            throttle.failed("ann", "10.0.0.1", 200).await;
        }
        assert_eq!(throttle.locked("ann", "10.0.0.2", 200).await, Some(120));
        throttle.succeeded("ANN").await;
        assert_eq!(throttle.locked("ann", "10.0.0.2", 200).await, None);
    }

    #[tokio::test]
    async fn a_source_is_locked_after_its_failures_over_many_names() {
        let throttle = SignInThrottle::default();
        for n in 0..SOURCE_FAILURES_MAX {
            throttle.failed(&format!("user{n}"), "10.0.0.1", 100).await;
        }
        assert_eq!(throttle.locked("someone", "10.0.0.1", 100).await, Some(60));
        assert_eq!(throttle.locked("someone", "10.0.0.2", 100).await, None);
    }

    #[test]
    fn refusals_beyond_the_budget_are_summarized_once_a_minute() {
        let budget = RecordingBudget::default();
        for _ in 0..RECORDED_PER_WINDOW {
            assert_eq!(budget.admit("a", "Forbidden", 1000), Verdict::Record);
        }
        assert_eq!(
            budget.admit("a", "Forbidden", 1000),
            Verdict::Summarize(BTreeMap::from([("Forbidden".to_string(), 1)]))
        );
        for _ in 0..500 {
            assert_eq!(budget.admit("a", "Unauthenticated", 1001), Verdict::Count);
        }
        assert_eq!(budget.admit("b", "Forbidden", 1001), Verdict::Record);
        let counted = budget.take_counted(1002);
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].1["Unauthenticated"], 500);
        assert!(budget.take_counted(1003).is_empty());
        // A new minute records again.
        assert_eq!(budget.admit("a", "Forbidden", 1060), Verdict::Record);
    }
}
