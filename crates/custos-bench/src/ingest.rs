//! The `ingest`, `freshness` and `verify` scenarios: producers append the workload to the audit
//! log through its own API (no HTTP); the SQLite baseline stores the same events in batches of
//! the size Custos's group commits had.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use custos_audit::{AuditLog, LogConfig, canonical_json, verify_log};

use crate::sqlite::Baseline;
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
fn stream(options: &Options, producer: u64, start_us: i64, step_us: i64) -> Workload {
    let producers = options.producers as i64;
    Workload::new(
        options.seed,
        producer,
        start_us + producer as i64 * step_us,
        producers * step_us,
    )
}

fn share(options: &Options, producer: u64) -> u64 {
    options.events / options.producers + u64::from(producer < options.events % options.producers)
}

/// Appends the workload with `options.producers` concurrent producers, each waiting for its
/// event to be durable (and searchable) before the next, as a request handler does.
pub(crate) fn ingest_custos(
    dir: &Path,
    options: &Options,
    start_us: i64,
    step_us: i64,
    running: Option<&AtomicBool>,
) -> anyhow::Result<Ingested> {
    let log = Arc::new(AuditLog::open(log_config(dir))?);
    let entries = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let threads: Vec<_> = (0..options.producers)
        .map(|p| {
            let (log, entries, failure) = (log.clone(), entries.clone(), failure.clone());
            let mut workload = stream(options, p, start_us, step_us);
            let n = share(options, p);
            std::thread::spawn(move || {
                for _ in 0..n {
                    let event = workload.next_event();
                    entries.fetch_add(event.record_ids.len() as u64, Ordering::Relaxed);
                    if let Err(error) = log.append(event) {
                        *failure.lock().expect("failure lock") = Some(error.to_string());
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
    if let Some(running) = running {
        running.store(false, Ordering::Release);
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

/// What the SQLite baseline did with the same events.
pub(crate) struct BaselineRun {
    pub(crate) baseline: Baseline,
    pub(crate) elapsed: Duration,
    pub(crate) jsonl_bytes: u64,
}

/// Stores the same events in SQLite, `batch` per transaction (one writer, as SQLite allows).
pub(crate) fn ingest_sqlite(
    dir: &Path,
    options: &Options,
    start_us: i64,
    step_us: i64,
    batch: usize,
) -> anyhow::Result<BaselineRun> {
    let mut baseline = Baseline::create(&dir.join("baseline.db"))?;
    let mut streams: Vec<(Workload, u64)> = (0..options.producers)
        .map(|p| (stream(options, p, start_us, step_us), share(options, p)))
        .collect();
    let mut elapsed = Duration::ZERO;
    let mut jsonl_bytes = 0;
    let mut pending = Vec::with_capacity(batch);
    let mut remaining: u64 = streams.iter().map(|(_, n)| n).sum();
    while remaining > 0 {
        let started = Instant::now();
        for (workload, left) in streams.iter_mut() {
            if *left > 0 && pending.len() < batch {
                pending.push(workload.next_event());
                *left -= 1;
                remaining -= 1;
            }
        }
        if pending.len() >= batch || remaining == 0 {
            baseline.insert_batch(&pending)?;
            elapsed += started.elapsed();
            jsonl_bytes += pending
                .iter()
                .map(|e| canonical_json(e).len() as u64 + 1)
                .sum::<u64>();
            pending.clear();
        } else {
            elapsed += started.elapsed();
        }
    }
    baseline.checkpoint()?;
    Ok(BaselineRun {
        baseline,
        elapsed,
        jsonl_bytes,
    })
}

pub(crate) fn ingest(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let start = now_us();
    let custos = ingest_custos(dir, options, start, 1, None)?;
    let stats = custos.log.stats();
    let batches = stats.batches.load(Ordering::Relaxed).max(1);
    let batch = (options.events / batches).max(1) as usize;
    let custos_bytes = disk_bytes(&dir.join("custos-audit"));
    drop(custos.log);
    let baseline = ingest_sqlite(dir, options, start, 1, batch)?;
    let sqlite_bytes = disk_bytes(&dir.join("baseline.db"));
    let events = options.events as f64;
    let entries = custos.entries as f64;
    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    Ok(Report {
        scenario: "ingest".into(),
        events: options.events,
        figures: vec![
            Figure { name: "events_per_s", unit: "1/s", better: "higher", custos: rate(events, custos.elapsed), sqlite: Some(rate(events, baseline.elapsed)) },
            Figure { name: "entries_per_s", unit: "1/s", better: "higher", custos: rate(entries, custos.elapsed), sqlite: Some(rate(entries, baseline.elapsed)) },
            Figure { name: "bytes_per_event", unit: "B", better: "lower", custos: custos_bytes as f64 / events, sqlite: Some(sqlite_bytes as f64 / events) },
            Figure { name: "bytes_per_entry", unit: "B", better: "lower", custos: custos_bytes as f64 / entries, sqlite: Some(sqlite_bytes as f64 / entries) },
            Figure { name: "jsonl_bytes_per_event", unit: "B", better: "lower", custos: baseline.jsonl_bytes as f64 / events, sqlite: None },
            Figure { name: "events_per_batch", unit: "1", better: "higher", custos: events / batches as f64, sqlite: Some(batch as f64) },
        ],
        notes: vec![
            format!("{} producers, each waiting for its event to be durable and searchable; SQLite: one writer, {batch} events per transaction", options.producers),
            "jsonl_bytes_per_event is the same events as canonical Microsoft 365 schema JSON lines (B2's comparison)".into(),
            "Custos bytes are the log on disk; its search index is in memory and not counted".into(),
        ],
    })
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
            Figure {
                name: "freshness_p50_ms",
                unit: "ms",
                better: "lower",
                custos: percentile_ms(&mut samples, 50.0),
                sqlite: None,
            },
            Figure {
                name: "freshness_p99_ms",
                unit: "ms",
                better: "lower",
                custos: percentile_ms(&mut samples, 99.0),
                sqlite: None,
            },
            Figure {
                name: "events_per_s",
                unit: "1/s",
                better: "higher",
                custos: options.events as f64 / elapsed.as_secs_f64(),
                sqlite: None,
            },
        ],
        notes: vec![format!(
            "{} probes: time from an append's acknowledgement to the event being found by id, under the ingest load",
            samples.len()
        )],
    })
}

pub(crate) fn verify(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let custos = ingest_custos(dir, options, now_us(), 1, None)?;
    custos.log.checkpoint()?;
    let key = custos.log.verifier_key();
    drop(custos.log);
    let started = Instant::now();
    let report = verify_log(&dir.join("custos-audit"), &key, &mut |_, _| {})?;
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
            Figure { name: "verify_events_per_s", unit: "1/s", better: "higher", custos: report.events as f64 / elapsed.as_secs_f64(), sqlite: None },
            Figure { name: "verify_mb_per_s", unit: "MB/s", better: "higher", custos: bytes / 1e6 / elapsed.as_secs_f64(), sqlite: None },
        ],
        notes: vec!["one thread: every frame checksum, every record decoded and canonicalised, every leaf and root, every checkpoint signature".into()],
    })
}
