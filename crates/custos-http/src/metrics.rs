//! Prometheus text metrics: requests by status class, and the audit writer's counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use custos_audit::{FSYNC_BUCKETS_US, LogStats};

/// Request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    responses_by_class: [AtomicU64; 6],
    password_checks: AtomicU64,
}

impl Metrics {
    /// Counts one response with `status`.
    pub fn count_response(&self, status: u16) {
        let class = (status / 100).min(5) as usize;
        self.responses_by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one password checked against a hash at sign-in (a decoy hash for an unknown
    /// name, so that it costs the same).
    pub fn count_password_check(&self) {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    /// `open_files` is the audit log's files open now and the most it keeps open.
    pub fn render(
        &self,
        log: &LogStats,
        events_in_log: u64,
        healthy: bool,
        open_files: (usize, usize),
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP custos_http_responses_total HTTP responses sent, by status class.\n");
        out.push_str("# TYPE custos_http_responses_total counter\n");
        for class in 1..=5 {
            let n = self.responses_by_class[class].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "custos_http_responses_total{{class=\"{class}xx\"}} {n}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "custos_sign_in_password_checks_total",
            "Passwords checked against a hash at sign-in, unknown names (against a decoy) included.",
            self.password_checks.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "custos_audit_events_appended_total",
            "Audit events made durable since start.",
            log.events_appended.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "custos_audit_fsync_batches_total",
            "Group commits (one write and one fdatasync each).",
            log.batches.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "custos_audit_fsync_batches_failed_total",
            "Group commits that failed (their requests were refused).",
            log.batches_failed.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP custos_audit_events Audit events in the log.\n# TYPE custos_audit_events gauge\ncustos_audit_events {events_in_log}"
        );
        let _ = writeln!(
            out,
            "# HELP custos_audit_healthy 1 while the audit log takes and serves events, 0 while audited work is refused or a record failed its integrity check (see /healthz).\n# TYPE custos_audit_healthy gauge\ncustos_audit_healthy {}",
            u8::from(healthy)
        );
        let (open, open_max) = open_files;
        let _ = writeln!(
            out,
            "# HELP custos_audit_open_files The audit log's segment and index files open now.\n# TYPE custos_audit_open_files gauge\ncustos_audit_open_files {open}\n# HELP custos_audit_open_files_max The most the audit log keeps open (a quarter of the process's limit on open files); the least recently read are closed beyond it.\n# TYPE custos_audit_open_files_max gauge\ncustos_audit_open_files_max {open_max}"
        );
        out.push_str(
            "# HELP custos_audit_fsync_seconds Time to write and fdatasync one group commit.\n",
        );
        out.push_str("# TYPE custos_audit_fsync_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound_us) in FSYNC_BUCKETS_US.iter().enumerate() {
            cumulative += log.fsync_us_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "custos_audit_fsync_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound_us as f64 / 1e6
            );
        }
        cumulative += log.fsync_us_buckets[FSYNC_BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "custos_audit_fsync_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "custos_audit_fsync_seconds_sum {}",
            log.fsync_us_total.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "custos_audit_fsync_seconds_count {cumulative}");
        out
    }
}
