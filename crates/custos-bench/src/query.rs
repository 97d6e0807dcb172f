//! The `query` scenario (B3): the workload spread over 90 days in Custos and in the SQLite
//! baseline, then five queries timed over several runs each.
//!
//! q1 every event that touched record X in 90 days; q2 user U's last 7 days, first 100; q3
//! exports in 30 days, count and first 100; q4 the "accessed out-of-box entity" report over
//! 90 days as per-day counts; q5 free text, first 100.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use custos_audit::{AuditLog, SearchQuery};
use rusqlite::params;

use crate::ingest::{ingest_custos, ingest_sqlite, now_us};
use crate::sqlite::Baseline;
use crate::workload::{DAY_US, Workload, user_upn};
use crate::{Figure, Options, Report, percentile_ms};

struct Targets {
    records: Vec<uuid::Uuid>,
    users: Vec<String>,
}

fn custos_q1(log: &AuditLog, end: i64, record: uuid::Uuid) -> anyhow::Result<usize> {
    let mut query = SearchQuery {
        start_us: end - 90 * DAY_US,
        end_us: end,
        record_ids: vec![record],
        top: 1000,
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = log.search(&query)?;
        n += page.events.len();
        match page.next_before_seq {
            Some(next) => query.before_seq = Some(next),
            None => return Ok(n),
        }
    }
}

fn time(
    runs: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let started = Instant::now();
        f(run)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

fn figures(
    name_p50: &'static str,
    name_p99: &'static str,
    mut custos: Vec<Duration>,
    mut sqlite: Vec<Duration>,
) -> [Figure; 2] {
    [
        Figure {
            name: name_p50,
            unit: "ms",
            better: "lower",
            custos: percentile_ms(&mut custos, 50.0),
            sqlite: Some(percentile_ms(&mut sqlite, 50.0)),
        },
        Figure {
            name: name_p99,
            unit: "ms",
            better: "lower",
            custos: percentile_ms(&mut custos, 99.0),
            sqlite: Some(percentile_ms(&mut sqlite, 99.0)),
        },
    ]
}

pub(crate) fn query(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let end = now_us();
    let span = 90 * DAY_US;
    let step = (span / options.events.max(1) as i64).max(1);
    let start = end - span;
    let custos = ingest_custos(dir, options, start, step, None)?;
    let batches = custos.log.stats().batches.load(Ordering::Relaxed).max(1);
    let batch = (options.events / batches).max(1) as usize;
    let baseline = ingest_sqlite(dir, options, start, step, batch)?.baseline;
    let log = custos.log;
    let end = end + 1;

    let mut sampler = Workload::new(options.seed ^ 0x5eed, 0, 0, 0);
    let targets = Targets {
        records: (0..options.query_runs).map(|_| sampler.record()).collect(),
        users: (0..options.query_runs)
            .map(|_| user_upn(sampler.user()))
            .collect(),
    };
    let runs = options.query_runs;
    let mut out = Vec::new();
    let mut found = [0usize; 5];

    let q1_custos = time(runs, |i| {
        found[0] += custos_q1(&log, end, targets.records[i])?;
        Ok(())
    })?;
    let q1_sqlite = time(runs, |i| {
        sqlite_count(
            &baseline,
            "SELECT e.data FROM audit_record_access a JOIN audit_event e ON e.id = a.event_id WHERE a.record_id = ?1 AND a.time >= ?2 ORDER BY a.time DESC",
            params![targets.records[i].as_bytes().to_vec(), end - span],
        )
    })?;
    out.extend(figures("q1_p50_ms", "q1_p99_ms", q1_custos, q1_sqlite));

    let q2_custos = time(runs, |i| {
        let query = SearchQuery {
            start_us: end - 7 * DAY_US,
            end_us: end,
            users: vec![targets.users[i].clone()],
            top: 100,
            ..Default::default()
        };
        found[1] += log.search(&query)?.events.len();
        Ok(())
    })?;
    let q2_sqlite = time(runs, |i| {
        sqlite_count(
            &baseline,
            "SELECT data FROM audit_event WHERE user = ?1 AND time >= ?2 ORDER BY time DESC LIMIT 100",
            params![targets.users[i], end - 7 * DAY_US],
        )
    })?;
    out.extend(figures("q2_p50_ms", "q2_p99_ms", q2_custos, q2_sqlite));

    let exports = || SearchQuery {
        start_us: end - 30 * DAY_US,
        end_us: end,
        operations: vec!["ExportToExcel".into()],
        top: 100,
        ..Default::default()
    };
    let q3_custos = time(runs, |_| {
        let count: u64 = log.histogram(&exports(), None)?.values().sum();
        found[2] = count as usize + log.search(&exports())?.events.len();
        Ok(())
    })?;
    let q3_sqlite = time(runs, |_| {
        let _: i64 = baseline.conn.query_row(
            "SELECT COUNT(*) FROM audit_event WHERE operation = 'ExportToExcel' AND time >= ?1",
            [end - 30 * DAY_US],
            |r| r.get(0),
        )?;
        sqlite_count(
            &baseline,
            "SELECT data FROM audit_event WHERE operation = 'ExportToExcel' AND time >= ?1 ORDER BY time DESC LIMIT 100",
            params![end - 30 * DAY_US],
        )
    })?;
    out.extend(figures("q3_p50_ms", "q3_p99_ms", q3_custos, q3_sqlite));

    let report = SearchQuery {
        start_us: end - span,
        end_us: end,
        categories: vec!["accessed-out-of-box-entity".into()],
        top: 1,
        ..Default::default()
    };
    let q4_custos = time(runs, |_| {
        found[3] = log.histogram(&report, Some(DAY_US))?.len();
        Ok(())
    })?;
    let q4_sqlite = time(runs, |_| {
        sqlite_count(
            &baseline,
            "SELECT time / 86400000000, COUNT(*) FROM audit_event WHERE category = 'accessed-out-of-box-entity' AND time >= ?1 GROUP BY 1",
            params![end - span],
        )
    })?;
    out.extend(figures("q4_p50_ms", "q4_p99_ms", q4_custos, q4_sqlite));

    let q5_custos = time(runs, |i| {
        let text = targets.users[i].replace("@bench.example", "@");
        let query = SearchQuery {
            start_us: end - span,
            end_us: end,
            text: Some(text),
            top: 100,
            ..Default::default()
        };
        found[4] += log.search(&query)?.events.len();
        Ok(())
    })?;
    let q5_sqlite = time(runs, |i| {
        let text = format!("%{}%", targets.users[i].replace("@bench.example", "@"));
        sqlite_count(
            &baseline,
            "SELECT data FROM audit_event WHERE data LIKE ?1 ORDER BY time DESC LIMIT 100",
            params![text],
        )
    })?;
    out.extend(figures("q5_p50_ms", "q5_p99_ms", q5_custos, q5_sqlite));

    Ok(Report {
        scenario: "query".into(),
        events: options.events,
        figures: out,
        notes: vec![
            format!("{runs} runs per query; events spread over 90 days; targets drawn from the Zipf distributions"),
            format!("results found (Custos): q1 {} events, q2 {}, q3 {} (count + page), q4 {} days, q5 {}", found[0], found[1], found[2], found[3], found[4]),
            "q5 in Custos looks up word prefixes in its text index (so 'user12@' also finds user120); in SQLite it is LIKE over the JSON column".into(),
        ],
    })
}

fn sqlite_count(
    baseline: &Baseline,
    sql: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<()> {
    let mut statement = baseline.conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    while rows.next()?.is_some() {}
    Ok(())
}
