//! The `query` scenario (B3): the workload spread over 90 days in Custos and in the SQLite
//! baseline, then five queries timed over several runs each.
//!
//! q1 every event that touched record X in 90 days; q2 user U's last 7 days, first 100; q3
//! exports in 30 days, count and first 100; q4 the "accessed out-of-box entity" report over
//! 90 days as per-day counts; q5 free text, first 100.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use custos_audit::{AuditLog, SearchQuery};

use crate::baseline::Baseline;
use crate::baseline::Loading;
use crate::ingest::{Loaded, ingest_custos, load_baselines, log_config, now_us};
use crate::workload::{DAY_US, Workload, user_upn};
use crate::{Figure, Options, Report, percentile_ms, rss_kib};

/// q1 in Custos: the count and first page of events that touched `record`, or every one.
fn custos_q1(
    log: &AuditLog,
    end: i64,
    record: uuid::Uuid,
    first_page: bool,
) -> anyhow::Result<usize> {
    let mut query = SearchQuery {
        start_us: end - 90 * DAY_US,
        end_us: end,
        record_ids: vec![record],
        top: if first_page { 100 } else { 1000 },
        ..Default::default()
    };
    if first_page {
        let count: u64 = log.histogram(&query, None)?.values().sum();
        return Ok(count as usize + log.search(&query)?.events.len());
    }
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

/// The p50 and p99 figures of one query in Custos and the baselines.
fn figures(
    names: [&'static str; 2],
    mut custos: Vec<Duration>,
    mut sqlite: Option<Vec<Duration>>,
    mut postgres: Option<Vec<Duration>>,
) -> [Figure; 2] {
    [(names[0], 50.0), (names[1], 99.0)].map(|(name, p)| Figure {
        name,
        unit: "ms",
        better: "lower",
        custos: percentile_ms(&mut custos, p),
        sqlite: sqlite.as_mut().map(|samples| percentile_ms(samples, p)),
        postgres: postgres.as_mut().map(|samples| percentile_ms(samples, p)),
    })
}

/// Times `query` on a baseline, if it was run.
fn time_baseline(
    runs: usize,
    baseline: Option<&mut Loaded>,
    mut query: impl FnMut(&mut dyn Baseline, usize) -> anyhow::Result<usize>,
) -> anyhow::Result<Option<Vec<Duration>>> {
    let Some(loaded) = baseline else {
        return Ok(None);
    };
    let baseline = loaded.baseline.as_mut();
    time(runs, |i| query(&mut *baseline, i).map(|_| ())).map(Some)
}

pub(crate) fn query(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let end = now_us();
    let span = 90 * DAY_US;
    let step = (span / options.events.max(1) as i64).max(1);
    let start = end - span;
    let custos = ingest_custos(dir, options, start, step)?;
    custos.log.wait_sealed()?;
    drop(custos);
    let (mut sqlite, mut postgres) = load_baselines(dir, options, start, step, Loading::Bulk)?;
    // The queries run on the log as a restarted server finds it: opened from its files, first
    // by a process of its own (what a restart costs, unclouded by this one's past), then here.
    let opened = open_in_fresh_process(dir)?;
    let log = AuditLog::open(log_config(dir))?;
    let end = end + 1;
    let since = end - span;

    let mut sampler = Workload::new(options.seed ^ 0x5eed, 0, 0, 0);
    let records: Vec<uuid::Uuid> = (0..options.query_runs).map(|_| sampler.record()).collect();
    let users: Vec<String> = (0..options.query_runs)
        .map(|_| user_upn(sampler.user()))
        .collect();
    // q5 looks for a user's name as free text ("user12@", which also finds user120…).
    let texts: Vec<String> = users
        .iter()
        .map(|u| u.replace("@bench.example", "@"))
        .collect();
    let runs = options.query_runs;
    let mut out = Vec::new();
    let mut found = [0usize; 6];

    let mut run = |names: [&'static str; 2],
                   custos: &mut dyn FnMut(usize) -> anyhow::Result<usize>,
                   query: &mut dyn FnMut(&mut dyn Baseline, usize) -> anyhow::Result<usize>,
                   found: &mut usize|
     -> anyhow::Result<()> {
        let custos = time(runs, |i| {
            *found += custos(i)?;
            Ok(())
        })?;
        let sqlite = time_baseline(runs, sqlite.as_mut(), &mut *query)?;
        let postgres = time_baseline(runs, postgres.as_mut(), &mut *query)?;
        out.extend(figures(names, custos, sqlite, postgres));
        Ok(())
    };

    run(
        ["q1_p50_ms", "q1_p99_ms"],
        &mut |i| custos_q1(&log, end, records[i], true),
        &mut |b, i| b.q1(records[i], since, true),
        &mut found[0],
    )?;
    run(
        ["q1_all_p50_ms", "q1_all_p99_ms"],
        &mut |i| custos_q1(&log, end, records[i], false),
        &mut |b, i| b.q1(records[i], since, false),
        &mut found[1],
    )?;
    run(
        ["q2_p50_ms", "q2_p99_ms"],
        &mut |i| {
            let query = SearchQuery {
                start_us: end - 7 * DAY_US,
                end_us: end,
                users: vec![users[i].clone()],
                top: 100,
                ..Default::default()
            };
            Ok(log.search(&query)?.events.len())
        },
        &mut |b, i| b.q2(&users[i], end - 7 * DAY_US),
        &mut found[2],
    )?;
    let exports = SearchQuery {
        start_us: end - 30 * DAY_US,
        end_us: end,
        operations: vec!["ExportToExcel".into()],
        top: 100,
        ..Default::default()
    };
    run(
        ["q3_p50_ms", "q3_p99_ms"],
        &mut |_| {
            let count: u64 = log.histogram(&exports, None)?.values().sum();
            Ok(count as usize + log.search(&exports)?.events.len())
        },
        &mut |b, _| b.q3(end - 30 * DAY_US),
        &mut found[3],
    )?;
    let report = SearchQuery {
        start_us: since,
        end_us: end,
        categories: vec!["accessed-out-of-box-entity".into()],
        top: 1,
        ..Default::default()
    };
    run(
        ["q4_p50_ms", "q4_p99_ms"],
        &mut |_| Ok(log.histogram(&report, Some(DAY_US))?.len()),
        &mut |b, _| b.q4(since),
        &mut found[4],
    )?;
    run(
        ["q5_p50_ms", "q5_p99_ms"],
        &mut |i| {
            let query = SearchQuery {
                start_us: since,
                end_us: end,
                text: Some(texts[i].clone()),
                top: 100,
                ..Default::default()
            };
            Ok(log.search(&query)?.events.len())
        },
        &mut |b, i| b.q5(&texts[i], since),
        &mut found[5],
    )?;

    let rss_after_queries = rss_kib()?;
    out.extend(opened.figures);
    out.push(Figure::custos(
        "rss_after_queries_mib",
        "MiB",
        "lower",
        rss_after_queries as f64 / 1024.0,
    ));
    Ok(Report {
        scenario: "query".into(),
        events: options.events,
        figures: out,
        notes: vec![
            format!("{runs} runs per query; events spread over 90 days; targets drawn from the Zipf distributions"),
            "the baselines are loaded in bulk (transactions of 10,000 events without sync, indexes built after the load, then ANALYZE); Custos's log is ingested durably, closed and opened again before the queries".into(),
            format!("open_s: opening the log of {} events in a process of its own (`custos bench open`); rss_open_mib: resident memory the open added there; rss_after_queries_mib: this process's resident memory after every query (baselines' clients included)", options.events),
            "q1 is the interactive answer (count + newest 100); q1_all reads every event that touched the record".into(),
            format!("results found by Custos over all runs: q1 {} (count + page), q1_all {}, q2 {}, q3 {} (count + page), q4 {} days, q5 {}", found[0], found[1], found[2], found[3] / runs.max(1), found[4] / runs.max(1), found[5]),
            "q5 in Custos looks up word prefixes in its text index (so 'user12@' also finds user120); the baselines use LIKE over the JSON column".into(),
        ],
    })
}

/// Runs `custos bench open` on `dir` in a process of its own (this program, which must be
/// `custos`) and returns its report.
fn open_in_fresh_process(dir: &Path) -> anyhow::Result<Report> {
    let json = dir.join("open.json");
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "open", "--dir"])
        .arg(dir)
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "`custos bench open` failed: {status}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let figures = report["figures"]
        .as_array()
        .context("`custos bench open` wrote no figures")?
        .iter()
        .map(|f| {
            let name = f["name"].as_str().context("a figure without a name")?;
            let value = f["custos"].as_f64().context("a figure without a value")?;
            let (name, unit): (&'static str, &'static str) = match name {
                "open_s" => ("open_s", "s"),
                "rss_open_mib" => ("rss_open_mib", "MiB"),
                "rss_mib" => ("rss_open_total_mib", "MiB"),
                other => anyhow::bail!("`custos bench open` reported an unknown figure {other}"),
            };
            Ok(Figure::custos(name, unit, "lower", value))
        })
        .collect::<anyhow::Result<Vec<Figure>>>()?;
    Ok(Report {
        scenario: "open".into(),
        events: report["events"].as_u64().unwrap_or(0),
        figures,
        notes: Vec::new(),
    })
}

/// `custos bench open`: opens the log that `dir` holds (as `bench query --dir` leaves it) in
/// this process, as a restarting server does, and reports the time and the resident memory.
pub(crate) fn open(dir: &Path) -> anyhow::Result<Report> {
    let config = log_config(dir);
    anyhow::ensure!(
        config.dir.join("checkpoints.log").is_file(),
        "the open scenario opens the log a `--dir` holds (as `custos bench query --dir DIR` leaves it), and {} has none",
        config.dir.display()
    );
    let rss_before = rss_kib()?;
    let opening = Instant::now();
    let log = AuditLog::open(config)?;
    let open_s = opening.elapsed().as_secs_f64();
    let rss_after = rss_kib()?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Report {
        scenario: "open".into(),
        events: log.len(),
        figures: vec![
            Figure::custos("open_s", "s", "lower", open_s),
            Figure::custos(
                "rss_open_mib",
                "MiB",
                "lower",
                mib(rss_after.saturating_sub(rss_before)),
            ),
            Figure::custos("rss_mib", "MiB", "lower", mib(rss_after)),
        ],
        notes: vec![
            "open_s: opening the log in this process, fresh; rss_open_mib: the resident memory it added; rss_mib: the process's resident memory after it".into(),
        ],
    })
}
