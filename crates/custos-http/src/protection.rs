//! Service protection limits, as Dataverse's: each user's demands on this node are counted over
//! a sliding window of [`WINDOW_SECS`] — how many requests they sent, how much time the server
//! spent on them — and how many of their requests run at once. A request beyond a limit is
//! refused before anything of it runs (429, `Retry-After`, Dataverse's error code), so one user
//! or one runaway integration cannot take the node's cores and the audit log's writer from
//! everyone else. The middleware that applies them is `answer::protect`.
//!
//! Counted per node (as Dataverse counts per web server) and in memory: a user is kept while
//! they have a request running or one in the window, a bucket per second of the window at
//! most. Refused requests are not counted: a client that waits out its `Retry-After` finds the
//! window moved on, where Dataverse lengthens the wait of a client that keeps sending.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The sliding window of the request and execution-time limits, seconds (Dataverse's).
pub const WINDOW_SECS: u64 = 300;

/// One user's limits on one node; a limit of zero is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    /// Most requests in the window (Dataverse: 6,000).
    pub requests: u32,
    /// Most time the server spends on the user's requests in the window, counted from a
    /// request's start to its answer (Dataverse: 20 minutes).
    pub execution: Duration,
    /// Most requests running at once (Dataverse: 52).
    pub concurrent: u32,
}

impl Default for UserLimits {
    fn default() -> UserLimits {
        UserLimits {
            requests: 6_000,
            execution: Duration::from_secs(1_200),
            concurrent: 52,
        }
    }
}

/// Why a request was refused, and when the user may send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit.
    pub limit: Limit,
    /// Seconds until the request would be admitted (at least 1).
    pub retry_after_secs: u64,
}

/// The limit a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests in the window.
    Requests(u32),
    /// Execution time in the window.
    Execution(Duration),
    /// Requests at once.
    Concurrent(u32),
}

impl Throttled {
    /// Dataverse's code for the limit, as its Web API names it.
    pub fn code(&self) -> &'static str {
        match self.limit {
            Limit::Requests(_) => "0x80072322",
            Limit::Execution(_) => "0x80072321",
            Limit::Concurrent(_) => "0x80072326",
        }
    }

    /// Dataverse's message for the limit.
    pub fn message(&self) -> String {
        match self.limit {
            Limit::Requests(limit) => format!(
                "Number of requests exceeded the limit of {limit} over time window of {WINDOW_SECS} seconds."
            ),
            Limit::Execution(limit) => format!(
                "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {WINDOW_SECS} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                limit.as_millis()
            ),
            Limit::Concurrent(limit) => {
                format!("Number of concurrent requests exceeded the limit of {limit}.")
            }
        }
    }
}

/// The requests and execution time of one second of the window.
#[derive(Debug)]
struct Second {
    at: u64,
    requests: u64,
    execution_ms: u64,
}

/// One user's demands on this node.
#[derive(Debug, Default)]
struct Usage {
    running: u32,
    /// The seconds of the window that saw a request start or end, oldest first.
    seconds: VecDeque<Second>,
    requests: u64,
    execution_ms: u64,
}

impl Usage {
    /// Drops the seconds that left the window ending at `now`.
    fn expire(&mut self, now: u64) {
        while let Some(first) = self.seconds.front() {
            if first.at + WINDOW_SECS > now {
                break;
            }
            self.requests -= first.requests;
            self.execution_ms -= first.execution_ms;
            self.seconds.pop_front();
        }
    }

    fn add(&mut self, now: u64, requests: u64, execution_ms: u64) {
        self.requests += requests;
        self.execution_ms += execution_ms;
        match self.seconds.back_mut() {
            Some(last) if last.at == now => {
                last.requests += requests;
                last.execution_ms += execution_ms;
            }
            _ => self.seconds.push_back(Second {
                at: now,
                requests,
                execution_ms,
            }),
        }
    }

    /// Seconds until enough of the oldest seconds leave the window that `over` no longer holds.
    fn wait(&self, now: u64, over: impl Fn(u64, u64) -> bool) -> u64 {
        let (mut requests, mut execution_ms) = (self.requests, self.execution_ms);
        for second in &self.seconds {
            requests -= second.requests;
            execution_ms -= second.execution_ms;
            if !over(requests, execution_ms) {
                return (second.at + WINDOW_SECS).saturating_sub(now).max(1);
            }
        }
        WINDOW_SECS
    }

    fn idle(&self) -> bool {
        self.running == 0 && self.seconds.is_empty()
    }
}

/// Every user's demands on this node, against their limits.
#[derive(Debug)]
pub struct ServiceProtection {
    limits: UserLimits,
    start: Instant,
    users: Mutex<Users>,
}

#[derive(Debug, Default)]
struct Users {
    by_id: HashMap<Uuid, Usage>,
    /// The second idle users were last dropped.
    swept_at: u64,
}

/// A request admitted: it counts as running until dropped, and its time counts then.
#[must_use = "the request counts as running until the permit is dropped"]
pub struct Permit<'a> {
    protection: &'a ServiceProtection,
    user: Uuid,
    started: Instant,
    /// Requests the user may still send in the window, this one counted.
    pub requests_remaining: Option<u64>,
}

impl ServiceProtection {
    /// Counters for `limits`, empty.
    pub fn new(limits: UserLimits) -> ServiceProtection {
        ServiceProtection {
            limits,
            start: Instant::now(),
            users: Mutex::new(Users::default()),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Admits a request of `user` now, or says which limit it meets.
    pub fn admit(&self, user: Uuid) -> Result<Permit<'_>, Throttled> {
        let started = Instant::now();
        let now = self.second(started);
        let limits = self.limits;
        let mut users = self.users.lock().expect("protection lock");
        if now >= users.swept_at + WINDOW_SECS {
            users.swept_at = now;
            users.by_id.retain(|_, usage| {
                usage.expire(now);
                !usage.idle()
            });
        }
        let usage = users.by_id.entry(user).or_default();
        usage.expire(now);
        let requests_over =
            |requests: u64| limits.requests > 0 && requests >= limits.requests.into();
        let execution_limit_ms = u64::try_from(limits.execution.as_millis()).unwrap_or(u64::MAX);
        let execution_over = |ms: u64| execution_limit_ms > 0 && ms >= execution_limit_ms;
        let refused = if limits.concurrent > 0 && usage.running >= limits.concurrent {
            Some(Throttled {
                limit: Limit::Concurrent(limits.concurrent),
                retry_after_secs: 1,
            })
        } else if requests_over(usage.requests) {
            Some(Throttled {
                limit: Limit::Requests(limits.requests),
                retry_after_secs: usage.wait(now, |requests, _| requests_over(requests)),
            })
        } else if execution_over(usage.execution_ms) {
            Some(Throttled {
                limit: Limit::Execution(limits.execution),
                retry_after_secs: usage.wait(now, |_, ms| execution_over(ms)),
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            return Err(refused);
        }
        usage.running += 1;
        usage.add(now, 1, 0);
        let requests_remaining =
            (limits.requests > 0).then(|| u64::from(limits.requests) - usage.requests);
        Ok(Permit {
            protection: self,
            user,
            started,
            requests_remaining,
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let ended = Instant::now();
        let now = self.protection.second(ended);
        let execution_ms = ended.duration_since(self.started).as_millis() as u64;
        let mut users = self.protection.users.lock().expect("protection lock");
        if let Some(usage) = users.by_id.get_mut(&self.user) {
            usage.running -= 1;
            usage.expire(now);
            usage.add(now, 0, execution_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u32, execution_secs: u64, concurrent: u32) -> UserLimits {
        UserLimits {
            requests,
            execution: Duration::from_secs(execution_secs),
            concurrent,
        }
    }

    #[test]
    fn requests_beyond_the_window_s_limit_wait_for_the_oldest_to_leave_it() {
        let mut usage = Usage::default();
        usage.add(10, 3, 0);
        usage.add(20, 2, 0);
        usage.expire(25);
        assert_eq!(usage.requests, 5);
        // Four or more is over: the three of second 10 must leave, at 310.
        assert_eq!(usage.wait(25, |r, _| r >= 4), 285);
        // Two or more: both seconds must leave; the second at 320.
        assert_eq!(usage.wait(25, |r, _| r >= 2), 295);
        usage.expire(310);
        assert_eq!((usage.requests, usage.seconds.len()), (2, 1));
        usage.expire(320);
        assert!(usage.idle());
    }

    #[test]
    fn one_user_over_the_request_limit_leaves_another_alone() {
        let protection = ServiceProtection::new(limits(3, 0, 0));
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for left in [2, 1, 0] {
            let permit = protection.admit(ann).expect("admitted");
            assert_eq!(permit.requests_remaining, Some(left));
        }
        let refused = protection.admit(ann).err().expect("refused");
        assert_eq!(refused.code(), "0x80072322");
        assert!((1..=WINDOW_SECS).contains(&refused.retry_after_secs));
        assert_eq!(
            refused.message(),
            "Number of requests exceeded the limit of 3 over time window of 300 seconds."
        );
        assert!(protection.admit(bob).is_ok());
        // A refusal is not counted: the window holds three of Ann's requests, not four.
        let users = protection.users.lock().unwrap();
        assert_eq!(users.by_id[&ann].requests, 3);
    }

    #[test]
    fn requests_at_once_are_limited_while_they_run() {
        let protection = ServiceProtection::new(limits(0, 0, 2));
        let ann = Uuid::new_v4();
        let first = protection.admit(ann).expect("first");
        let second = protection.admit(ann).expect("second");
        let refused = protection.admit(ann).err().expect("third at once");
        assert_eq!(refused.code(), "0x80072326");
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(first.requests_remaining, None);
        drop(first);
        let third = protection.admit(ann).expect("one ended");
        drop((second, third));
        assert_eq!(protection.users.lock().unwrap().by_id[&ann].running, 0);
    }

    #[test]
    fn execution_time_counts_when_a_request_ends() {
        let protection = ServiceProtection::new(UserLimits {
            requests: 0,
            execution: Duration::from_millis(30),
            concurrent: 0,
        });
        let ann = Uuid::new_v4();
        let slow = protection.admit(ann).expect("admitted");
        // Still running: its time is not yet counted.
        assert!(protection.admit(ann).is_ok());
        std::thread::sleep(Duration::from_millis(40));
        drop(slow);
        let refused = protection.admit(ann).err().expect("over its time");
        assert_eq!(refused.code(), "0x80072321");
        assert!(refused.message().contains("limit of 30 milliseconds"));
        assert!((1..=WINDOW_SECS).contains(&refused.retry_after_secs));
    }

    #[test]
    fn no_limits_admit_everything() {
        let protection = ServiceProtection::new(limits(0, 0, 0));
        let ann = Uuid::new_v4();
        let permits: Vec<_> = (0..1000)
            .map(|_| protection.admit(ann).expect("admitted"))
            .collect();
        assert_eq!(permits.len(), 1000);
    }
}
