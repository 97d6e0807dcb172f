//! The `soak` scenario (B8): a bounded steady mixed load over HTTP on loopback against an
//! in-process server — audited list pages, reads, updates, creates and audit searches from
//! `CLIENTS` clients for `Options::soak` — sampling the process's resident memory every second.
//! Figures: the slope of resident memory over the last 80 % of the run, its peak, throughput in
//! the last window over the first, errors, and audited list pages whose event is not in the log.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;
use serde_json::json;

use crate::api::{audit_reads, retrieve_multiple_auditing, start, token};
use crate::{Figure, Options, Report};

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Accounts before the load starts.
const ACCOUNTS: usize = 2_000;
/// Records in a list page.
const PAGE: usize = 50;

/// The process's resident memory, KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// The least-squares slope of `samples` (seconds, KiB), in MiB a minute.
fn slope_mib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_r = samples.iter().map(|(_, r)| *r as f64).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (t, r) in samples {
        covariance += (t - mean_t) * (*r as f64 - mean_r);
        variance += (t - mean_t) * (t - mean_t);
    }
    if variance == 0.0 {
        return 0.0;
    }
    covariance / variance * 60.0 / 1024.0
}

/// What the clients did.
#[derive(Default)]
struct Tally {
    /// Requests answered, by the second of the run they were answered in.
    by_second: Mutex<Vec<u64>>,
    errors: AtomicU64,
    pages: AtomicU64,
    creates: AtomicU64,
}

/// The id in a create's `OData-EntityId` header.
fn created_id(response: &reqwest::blocking::Response) -> Option<String> {
    let header = response.headers().get("OData-EntityId")?.to_str().ok()?;
    let inside = header.rsplit_once('(')?.1.strip_suffix(')')?;
    Some(inside.to_string())
}

/// One client's loop until `stop`: half list pages of 50 accounts (each an audited
/// `RetrieveMultiple` listing every record id), a fifth single reads, updates, creates and
/// audit searches.
fn client_loop(
    base: &str,
    token: &str,
    ids: &[String],
    seed: u64,
    started: Instant,
    stop: &AtomicBool,
    tally: &Tally,
) -> anyhow::Result<()> {
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
    let api = format!("{base}/main/api/data/v9.2");
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.random_range(0..100);
        let id = &ids[rng.random_range(0..ids.len())];
        let request = match roll {
            0..50 => client
                .get(format!(
                    "{api}/accounts?$select=name,revenue&$filter=revenue ge {}",
                    rng.random_range(0..ACCOUNTS)
                ))
                .header("Prefer", format!("odata.maxpagesize={PAGE}")),
            50..70 => client.get(format!("{api}/accounts({id})?$select=name,revenue")),
            70..85 => client
                .patch(format!("{api}/accounts({id})"))
                .json(&json!({"revenue": rng.random_range(0..ACCOUNTS)})),
            85..90 => client
                .post(format!("{api}/accounts"))
                .json(&json!({"name": "soak", "revenue": rng.random_range(0..ACCOUNTS)})),
            _ => client.get(format!(
                "{base}/api/audit/records?top=50&operation=Update&start=2000-01-01"
            )),
        };
        let answered = request.bearer_auth(token).send().and_then(|response| {
            let ok = response.status().is_success();
            response.bytes().map(|_| ok)
        });
        match answered {
            Ok(true) => {
                if roll < 50 {
                    tally.pages.fetch_add(1, Ordering::Relaxed);
                } else if (85..90).contains(&roll) {
                    tally.creates.fetch_add(1, Ordering::Relaxed);
                }
                let second = started.elapsed().as_secs() as usize;
                let mut by_second = tally.by_second.lock().expect("tally lock");
                if by_second.len() <= second {
                    by_second.resize(second + 1, 0);
                }
                by_second[second] += 1;
            }
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

pub(crate) fn soak(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let (runtime, address, state) =
        start(&dir.join("soak-server"), None, options.audit_memory_bytes)?;
    let base = format!("http://{address}");
    let client = Client::new();
    let token = token(&client, &base)?;
    let api = format!("{base}/main/api/data/v9.2");
    let mut ids = Vec::with_capacity(ACCOUNTS);
    for i in 0..ACCOUNTS {
        let response = client
            .post(format!("{api}/accounts"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("Account {i:05}"), "revenue": i}))
            .send()?;
        ids.push(created_id(&response).context("a create without its id")?);
    }
    audit_reads(&client, &api, &token)?;
    retrieve_multiple_auditing(&client, &api, &token, true)?;

    let duration = options.soak;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let ids = Arc::new(ids);
    let started = Instant::now();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<(f64, u64)>> {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push((started.elapsed().as_secs_f64(), rss_kib()?));
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(samples)
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, tally, ids) = (stop.clone(), tally.clone(), ids.clone());
            let (base, token) = (base.clone(), token.clone());
            let seed = options.seed.wrapping_add(i as u64);
            std::thread::spawn(move || {
                client_loop(&base, &token, &ids, seed, started, &stop, &tally)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for client in clients {
        client.join().expect("a soak client panicked")?;
    }
    let samples = sampler.join().expect("the sampler panicked")?;

    // Every audited page answered must be in the log: its event was durable before the page.
    let logged: u64 = state
        .log
        .histogram(
            &custos_audit::SearchQuery {
                start_us: i64::MIN,
                end_us: i64::MAX,
                operations: vec!["RetrieveMultiple".into()],
                entities: vec!["account".into()],
                ..Default::default()
            },
            None,
        )?
        .values()
        .sum();
    drop(runtime);

    let pages = tally.pages.load(Ordering::Relaxed);
    let by_second = tally.by_second.lock().expect("tally lock").clone();
    let seconds = duration.as_secs().max(1) as usize;
    let window = (seconds / 5).clamp(1, 60);
    let sum =
        |range: std::ops::Range<usize>| -> u64 { range.filter_map(|s| by_second.get(s)).sum() };
    let first = sum(0..window);
    let last = sum(seconds.saturating_sub(window)..seconds);
    let tail: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= duration.as_secs_f64() * 0.2)
        .collect();
    let requests: u64 = by_second.iter().sum();
    let creates = tally.creates.load(Ordering::Relaxed);
    let figure = Figure::custos;
    Ok(Report {
        scenario: "soak".into(),
        events: requests,
        figures: vec![
            figure(
                "requests_per_s",
                "1/s",
                "higher",
                requests as f64 / elapsed.as_secs_f64(),
            ),
            figure(
                "rss_slope_mib_per_min",
                "MiB/min",
                "lower",
                slope_mib_per_min(&tail),
            ),
            figure(
                "rss_max_mib",
                "MiB",
                "lower",
                samples.iter().map(|(_, r)| *r).max().unwrap_or(0) as f64 / 1024.0,
            ),
            figure(
                "throughput_end_to_start",
                "",
                "higher",
                if first == 0 {
                    0.0
                } else {
                    last as f64 / first as f64
                },
            ),
            figure(
                "errors",
                "",
                "lower",
                tally.errors.load(Ordering::Relaxed) as f64,
            ),
            figure(
                "audited_pages_missing",
                "",
                "lower",
                pages.saturating_sub(logged) as f64,
            ),
        ],
        notes: vec![
            format!(
                "{CLIENTS} clients on loopback for {} s: 50 % list pages of {PAGE} accounts (audited), 20 % reads, 15 % updates, 5 % creates, 10 % audit searches",
                duration.as_secs()
            ),
            format!(
                "accounts grew from {ACCOUNTS} to {} ({creates} created); {pages} audited pages answered, {logged} in the log",
                ACCOUNTS as u64 + creates
            ),
            format!(
                "rss_slope over the last 80 % of the run; throughput_end_to_start: the last {window} s over the first; audit memory budget {}",
                options
                    .audit_memory_bytes
                    .map_or("the default".to_string(), |b| format!("{} MiB", b >> 20))
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::slope_mib_per_min;

    #[test]
    fn the_slope_is_mib_a_minute() {
        // 1 MiB (1,024 KiB) more every minute.
        let rising: Vec<(f64, u64)> = (0..10).map(|m| (m as f64 * 60.0, 1_024 * m)).collect();
        assert!((slope_mib_per_min(&rising) - 1.0).abs() < 1e-9);
        let flat: Vec<(f64, u64)> = (0..10).map(|s| (s as f64, 500)).collect();
        assert_eq!(slope_mib_per_min(&flat), 0.0);
        assert_eq!(slope_mib_per_min(&[(0.0, 1)]), 0.0);
    }
}
