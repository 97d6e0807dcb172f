//! `custos bench`: the benchmark harness of BENCHMARKS.md. Each scenario generates the
//! deterministic workload, runs Custos and the baselines on the same events in the same run,
//! and reports one table of figures (and the JSON shape BENCHMARKS.md defines).
//!
//! A harness, so it sits at the edge: it uses anyhow, the clock and threads freely.

mod api;
mod baseline;
mod cluster;
mod ingest;
mod nats;
mod postgres;
mod query;
mod siem;
mod soak;
mod sqlite;
mod workload;

pub use nats::{NatsCluster, reserve_port};

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

/// How a run is sized.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events to generate.
    pub events: u64,
    /// Workload seed.
    pub seed: u64,
    /// Concurrent producers appending to the log.
    pub producers: u64,
    /// Where the logs and databases go (a temporary folder when `None`).
    pub dir: Option<PathBuf>,
    /// Timed repetitions of each query.
    pub query_runs: usize,
    /// Length of each side (auditing off, on) of the `api` scenario, per page size.
    pub api_phase: Duration,
    /// Rounds the `api` scenario splits each side into, alternating off and on.
    pub api_rounds: usize,
    /// Whether the query scenario runs the SQLite baseline (every other scenario does).
    pub sqlite: bool,
    /// A PostgreSQL server for the PostgreSQL baseline (`postgres://…`); skipped when `None`.
    pub postgres: Option<String>,
    /// The `api` scenario's server keeps its records in `postgres` (a schema of its own,
    /// dropped at the end) rather than in SQLite, as a cluster node does.
    pub records_on_postgres: bool,
    /// How long the `soak` scenario's load runs.
    pub soak: Duration,
    /// The `soak` scenario's server's audit memory budget (`--audit-memory`), bytes; its
    /// default when `None`.
    pub audit_memory_bytes: Option<u64>,
}

impl Options {
    /// The default size of a scenario, or the `--quick` one for CI.
    pub fn sized(quick: bool) -> Options {
        Options {
            events: if quick { 20_000 } else { 200_000 },
            seed: 42,
            producers: 64,
            dir: None,
            query_runs: if quick { 5 } else { 30 },
            api_phase: Duration::from_secs(if quick { 2 } else { 20 }),
            api_rounds: if quick { 2 } else { 10 },
            sqlite: true,
            postgres: None,
            records_on_postgres: false,
            soak: Duration::from_secs(if quick { 60 } else { 600 }),
            audit_memory_bytes: None,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Name as in BENCHMARKS.md.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// `higher` or `lower`.
    pub better: &'static str,
    /// Custos's value.
    pub custos: f64,
    /// The SQLite baseline's, when run.
    pub sqlite: Option<f64>,
    /// The PostgreSQL baseline's, when run.
    pub postgres: Option<f64>,
}

impl Figure {
    /// A figure only Custos has.
    pub(crate) fn custos(
        name: &'static str,
        unit: &'static str,
        better: &'static str,
        custos: f64,
    ) -> Figure {
        Figure {
            name,
            unit,
            better,
            custos,
            sqlite: None,
            postgres: None,
        }
    }

    /// How many times better Custos is than `baseline`.
    fn ratio(&self, baseline: Option<f64>) -> String {
        match baseline {
            Some(b) if b > 0.0 && self.custos > 0.0 => {
                let r = if self.better == "higher" {
                    self.custos / b
                } else {
                    b / self.custos
                };
                format!("{r:.1}×")
            }
            _ => "-".into(),
        }
    }
}

/// A scenario's figures.
#[derive(Debug, Clone)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Events generated.
    pub events: u64,
    /// Figures in order.
    pub figures: Vec<Figure>,
    /// Notes to print below the table (what the figures leave out).
    pub notes: Vec<String>,
}

impl Report {
    /// The table for people.
    pub fn table(&self) -> String {
        let mut out = format!("scenario {} — {} events\n", self.scenario, self.events);
        let _ = writeln!(
            out,
            "{:<22} {:>14} {:>14} {:>14} {:>9} {:>9}  unit",
            "figure", "custos", "sqlite", "postgres", "vs sqlite", "vs pg"
        );
        let value = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        for f in &self.figures {
            let _ = writeln!(
                out,
                "{:<22} {:>14.2} {:>14} {:>14} {:>9} {:>9}  {}",
                f.name,
                f.custos,
                value(f.sqlite),
                value(f.postgres),
                f.ratio(f.sqlite),
                f.ratio(f.postgres),
                f.unit
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The JSON of BENCHMARKS.md.
    pub fn json(&self) -> serde_json::Value {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "unit": f.unit, "better": f.better, "custos": f.custos, "sqlite": f.sqlite, "postgres": f.postgres}))
            .collect();
        serde_json::json!({"scenario": self.scenario, "events": self.events, "figures": figures, "notes": self.notes})
    }
}

/// Runs `scenario` (`ingest`, `freshness`, `query`, `verify`, `api`, `siem`, `cluster` or
/// `soak`; or `open`, which opens the log that `--dir` holds).
pub fn run(scenario: &str, options: &Options) -> anyhow::Result<Report> {
    if !options.sqlite && scenario != "query" {
        bail!("only the query scenario can leave out the SQLite baseline");
    }
    let temporary = tempfile::tempdir()?;
    let dir = options
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    match scenario {
        "ingest" => ingest::ingest(&dir, options),
        "freshness" => ingest::freshness(&dir, options),
        "verify" => ingest::verify(&dir, options),
        "query" => query::query(&dir, options),
        "open" => query::open(&dir),
        "api" => api::api(&dir, options),
        "siem" => siem::siem(&dir, options),
        "cluster" => cluster::cluster(&dir, options),
        "soak" => soak::soak(&dir, options),
        other => bail!(
            "unknown scenario '{other}': use ingest, freshness, query, verify, api, siem, cluster, soak or open"
        ),
    }
}

/// The p-th percentile (0–100) of `samples`, in milliseconds.
pub(crate) fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank].as_secs_f64() * 1000.0
}

/// Total size of the files under `path`.
pub(crate) fn disk_bytes(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| disk_bytes(&e.path()))
            .sum()
    })
}

/// The process's resident memory, KiB.
pub(crate) fn rss_kib() -> anyhow::Result<u64> {
    use anyhow::Context;
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS in /proc/self/status")
}
