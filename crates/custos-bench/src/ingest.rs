//! The `ingest`, `freshness` and `verify` scenarios: producers append the workload to the audit
//! log through its own API (no HTTP); the baselines store the same events in batches of the
//! size Custos's group commits had.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use custos_audit::{AuditEvent, AuditLog, LogConfig, canonical_json, verify_log_against};

use crate::baseline::{Baseline, DAY_US, Loading, load};
use crate::postgres::Postgres;
use crate::sqlite::Sqlite;
use crate::workload::Workload;
use crate::{Figure, Options, Report, disk_bytes, percentile_ms};

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

pub(crate) fn log_config(dir: &Path) -> LogConfig {
    LogConfig::new(dir.join("custos-audit"), [1; 32], "bench.example/custos")
}

/// What one Custos ingest run did.
pub(crate) struct Ingested {
    pub(crate) log: Arc<AuditLog>,
    pub(crate) entries: u64,
    pub(crate) elapsed: Duration,
}

/// Events of producer `p`: times `start_us + (i·P + p)·step_us`, so all producers together
/// cover the span in order.
pub(crate) fn stream(options: &Options, producer: u64, start_us: i64, step_us: i64) -> Workload {
    let producers = options.producers as i64;
    Workload::new(
        options.seed,
        producer,
        start_us + producer as i64 * step_us,
        producers * step_us,
    )
}

pub(crate) fn share(options: &Options, producer: u64) -> u64 {
    options.events / options.producers + u64::from(producer < options.events % options.producers)
}

/// Events generated in one round, by all producers together, before they append them: about
/// half a gigabyte of events in memory at most.
const ROUND_EVENTS: u64 = 1 << 18;

/// Appends the workload with `options.producers` concurrent producers, each waiting for its
/// event to be durable (and searchable) before the next, as a request handler does. The time
/// counted is the appending alone, as the baselines' loading counts only their inserts: the
/// producers generate their next events (Zipf draws, about a tenth of the CPU when they did it
/// between appends) in rounds of at most [`ROUND_EVENTS`], each round's generation untimed and
/// its appends timed from when every producer holds its events until the last is answered.
pub(crate) fn ingest_custos(
    dir: &Path,
    options: &Options,
    start_us: i64,
    step_us: i64,
) -> anyhow::Result<Ingested> {
    let log = Arc::new(AuditLog::open(log_config(dir))?);
    let entries = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // Once an append fails the others stop appending (but still meet each round's barriers).
    let failed = Arc::new(AtomicBool::new(false));
    let per_round = ROUND_EVENTS.div_ceil(options.producers).max(1);
    let rounds = share(options, 0).div_ceil(per_round);
    let barrier = Arc::new(Barrier::new(options.producers as usize + 1));
    let threads: Vec<_> = (0..options.producers)
        .map(|p| {
            let (log, entries, failure, failed, barrier) = (
                log.clone(),
                entries.clone(),
                failure.clone(),
                failed.clone(),
                barrier.clone(),
            );
            let mut workload = stream(options, p, start_us, step_us);
            let mut left = share(options, p);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    let n = left.min(per_round);
                    left -= n;
                    let events: Vec<AuditEvent> = (0..n).map(|_| workload.next_event()).collect();
                    barrier.wait();
                    for event in events {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        entries.fetch_add(event.record_ids.len() as u64, Ordering::Relaxed);
                        if let Err(error) = log.append(event) {
                            failed.store(true, Ordering::Relaxed);
                            *failure.lock().expect("failure lock") = Some(error.to_string());
                        }
                    }
                    barrier.wait();
                }
            })
        })
        .collect();
    let mut elapsed = Duration::ZERO;
    for _ in 0..rounds {
        barrier.wait();
        let started = Instant::now();
        barrier.wait();
        elapsed += started.elapsed();
    }
    for thread in threads {
        thread.join().expect("a producer panicked");
    }
    if let Some(error) = failure.lock().expect("failure lock").take() {
        anyhow::bail!("append failed: {error}");
    }
    Ok(Ingested {
        log,
        entries: entries.load(Ordering::Relaxed),
        elapsed,
    })
}

/// The whole workload in time order (the producers' streams interleaved), as the baselines
/// get it.
pub(crate) fn all_events(
    options: &Options,
    start_us: i64,
    step_us: i64,
) -> impl Iterator<Item = AuditEvent> + use<> {
    let mut streams: Vec<(Workload, u64)> = (0..options.producers)
        .map(|p| (stream(options, p, start_us, step_us), share(options, p)))
        .collect();
    let mut next = 0;
    std::iter::from_fn(move || {
        let n = streams.len();
        for _ in 0..n {
            let (workload, left) = &mut streams[next];
            next = (next + 1) % n;
            if *left > 0 {
                *left -= 1;
                return Some(workload.next_event());
            }
        }
        None
    })
}

/// A baseline loaded with the workload.
pub(crate) struct Loaded {
    pub(crate) baseline: Box<dyn Baseline>,
    pub(crate) elapsed: Duration,
}

/// Events per transaction when a baseline is loaded in bulk.
const BULK_BATCH: usize = 10_000;

/// The baselines of this run (SQLite unless left out; PostgreSQL when a server is given), each
/// loaded with the workload as `loading` says, and the time that took; `None` for one not run.
pub(crate) fn load_baselines(
    dir: &Path,
    options: &Options,
    start_us: i64,
    step_us: i64,
    loading: Loading,
) -> anyhow::Result<(Option<Loaded>, Option<Loaded>)> {
    let fill = |mut baseline: Box<dyn Baseline>| -> anyhow::Result<Loaded> {
        let events = all_events(options, start_us, step_us);
        let elapsed = match loading {
            Loading::Durable { batch } => load(baseline.as_mut(), events, batch)?,
            Loading::Bulk => {
                let loaded = load(baseline.as_mut(), events, BULK_BATCH)?;
                let started = Instant::now();
                baseline.finish_load()?;
                loaded + started.elapsed()
            }
        };
        Ok(Loaded { baseline, elapsed })
    };
    let sqlite = if options.sqlite {
        Some(fill(Box::new(Sqlite::create(
            &dir.join("baseline.db"),
            loading,
        )?))?)
    } else {
        None
    };
    let postgres = match &options.postgres {
        None => None,
        Some(url) => {
            let span = step_us * options.events as i64;
            Some(fill(Box::new(Postgres::create(
                url,
                start_us.div_euclid(DAY_US),
                (start_us + span).div_euclid(DAY_US),
                loading,
            )?))?)
        }
    };
    Ok((sqlite, postgres))
}

pub(crate) fn ingest(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let start = now_us();
    let custos = ingest_custos(dir, options, start, 1)?;
    let stats = custos.log.stats();
    let batches = stats.batches.load(Ordering::Relaxed).max(1);
    let batch = (options.events / batches).max(1) as usize;
    // Seal the partition so its index file is on disk and counted (not timed).
    custos.log.seal_active()?;
    let log_dir = dir.join("custos-audit");
    let custos_bytes = disk_bytes(&log_dir);
    let parts = log_parts(&log_dir);
    drop(custos.log);
    let (sqlite, mut postgres) =
        load_baselines(dir, options, start, 1, Loading::Durable { batch })?;
    let mut sqlite = sqlite.context("the ingest scenario always runs the SQLite baseline")?;
    let sqlite_bytes = sqlite.baseline.bytes()? as f64;
    let postgres_bytes = match postgres.as_mut() {
        Some(p) => Some(p.baseline.bytes()? as f64),
        None => None,
    };
    let jsonl_bytes: u64 = all_events(options, start, 1)
        .map(|e| canonical_json(&e).len() as u64 + 1)
        .sum();
    let events = options.events as f64;
    let entries = custos.entries as f64;
    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    let pg_rate = |n: f64| postgres.as_ref().map(|p| rate(n, p.elapsed));
    let per = |bytes: Option<f64>, n: f64| bytes.map(|b| b / n);
    let mut breakdown = String::from("Custos bytes per event by file:");
    for (kind, bytes) in &parts {
        let _ = std::fmt::Write::write_fmt(
            &mut breakdown,
            format_args!(" {kind} {:.1}", *bytes as f64 / events),
        );
    }
    Ok(Report {
        scenario: "ingest".into(),
        events: options.events,
        figures: vec![
            Figure { name: "events_per_s", unit: "1/s", better: "higher", custos: rate(events, custos.elapsed), sqlite: Some(rate(events, sqlite.elapsed)), postgres: pg_rate(events) },
            Figure { name: "entries_per_s", unit: "1/s", better: "higher", custos: rate(entries, custos.elapsed), sqlite: Some(rate(entries, sqlite.elapsed)), postgres: pg_rate(entries) },
            Figure { name: "bytes_per_event", unit: "B", better: "lower", custos: custos_bytes as f64 / events, sqlite: Some(sqlite_bytes / events), postgres: per(postgres_bytes, events) },
            Figure { name: "bytes_per_entry", unit: "B", better: "lower", custos: custos_bytes as f64 / entries, sqlite: Some(sqlite_bytes / entries), postgres: per(postgres_bytes, entries) },
            Figure::custos("jsonl_bytes_per_event", "B", "lower", jsonl_bytes as f64 / events),
            Figure { name: "events_per_batch", unit: "1", better: "higher", custos: events / batches as f64, sqlite: Some(batch as f64), postgres: postgres.as_ref().map(|_| batch as f64) },
        ],
        notes: vec![
            format!("{} producers, each waiting for its event to be durable and searchable; baselines: one writer, {batch} events per transaction", options.producers),
            "jsonl_bytes_per_event is the same events as canonical Microsoft 365 schema JSON lines (B2's comparison)".into(),
            "Custos bytes are every file of the log: segments, partition indexes, ids.dat, leaves.dat, checkpoints".into(),
            breakdown,
        ],
    })
}

/// Bytes of the log folder by kind of file.
fn log_parts(dir: &Path) -> Vec<(&'static str, u64)> {
    let mut parts = vec![
        ("segments", 0),
        ("indexes", 0),
        ("ids.dat", 0),
        ("leaves.dat", 0),
        ("other", 0),
    ];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let bytes = entry.metadata().map_or(0, |m| m.len());
        let kind = if name.ends_with(".log") && name.starts_with("seg-") {
            0
        } else if name.ends_with(".idx") {
            1
        } else if name == "ids.dat" {
            2
        } else if name == "leaves.dat" {
            3
        } else {
            4
        };
        parts[kind].1 += bytes;
    }
    parts
}

pub(crate) fn freshness(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let running = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let log_slot: Arc<Mutex<Option<Arc<AuditLog>>>> = Arc::new(Mutex::new(None));
    // The probe opens its own handle only once the producers' log exists: it shares the log by
    // appending through the same AuditLog, so it starts after ingest opened it.
    let (probe_running, probe_samples, probe_log) =
        (running.clone(), samples.clone(), log_slot.clone());
    let seed = options.seed;
    let probe = std::thread::spawn(move || {
        let mut workload = Workload::new(seed, 999_999, now_us(), 1);
        while probe_running.load(Ordering::Acquire) {
            let log = probe_log.lock().expect("log slot").clone();
            let Some(log) = log else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let event = workload.next_event();
            let id = event.id;
            if log.append(event).is_err() {
                return;
            }
            let acknowledged = Instant::now();
            while log.get(id).ok().flatten().is_none() {
                std::thread::yield_now();
            }
            probe_samples
                .lock()
                .expect("samples")
                .push(acknowledged.elapsed());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let log = Arc::new(AuditLog::open(log_config(dir))?);
    *log_slot.lock().expect("log slot") = Some(log.clone());
    let started = Instant::now();
    let threads: Vec<_> = (0..options.producers)
        .map(|p| {
            let log = log.clone();
            let mut workload = stream(options, p, now_us(), 1);
            let n = share(options, p);
            std::thread::spawn(move || {
                for _ in 0..n {
                    if log.append(workload.next_event()).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a producer panicked");
    }
    let elapsed = started.elapsed();
    running.store(false, Ordering::Release);
    probe.join().expect("the probe panicked");
    let mut samples = samples.lock().expect("samples").clone();
    Ok(Report {
        scenario: "freshness".into(),
        events: options.events,
        figures: vec![
            Figure::custos(
                "freshness_p50_ms",
                "ms",
                "lower",
                percentile_ms(&mut samples, 50.0),
            ),
            Figure::custos(
                "freshness_p99_ms",
                "ms",
                "lower",
                percentile_ms(&mut samples, 99.0),
            ),
            Figure::custos(
                "events_per_s",
                "1/s",
                "higher",
                options.events as f64 / elapsed.as_secs_f64(),
            ),
        ],
        notes: vec![format!(
            "{} probes: time from an append's acknowledgement to the event being found by id, under the ingest load",
            samples.len()
        )],
    })
}

pub(crate) fn verify(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let custos = ingest_custos(dir, options, now_us(), 1)?;
    custos.log.sign_checkpoint()?;
    let key = custos.log.verifier_key();
    drop(custos.log);
    let started = Instant::now();
    let report = verify_log_against(&dir.join("custos-audit"), &key, None, &mut |_, _| {})?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        report.is_ok(),
        "the benchmark's own log did not verify: {:?}",
        report.problems
    );
    let bytes = disk_bytes(&dir.join("custos-audit")) as f64;
    Ok(Report {
        scenario: "verify".into(),
        events: report.events,
        figures: vec![
            Figure::custos("verify_events_per_s", "1/s", "higher", report.events as f64 / elapsed.as_secs_f64()),
            Figure::custos("verify_mb_per_s", "MB/s", "higher", bytes / 1e6 / elapsed.as_secs_f64()),
        ],
        notes: vec!["every frame checksum, every record decoded and canonicalised, every leaf and root, every checkpoint signature, every sealed partition's index rebuilt and compared (decoding, hashing and indexing on three threads a segment; sealed segments read ahead, one more at once than there are cores)".into()],
    })
}
