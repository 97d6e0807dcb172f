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
use crate::rss_kib;
use crate::{Figure, Options, Report};

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Accounts before the load starts.
const ACCOUNTS: usize = 2_000;
/// Accounts a client creates before it deletes one of them instead.
const CREATED_HELD: usize = 8;
/// Records in a list page.
const PAGE: usize = 50;

/// The kinds of request, by the first roll (of 100) of each.
const KINDS: [(u32, &str); 8] = [
    (0, "list by name"),
    (15, "list the owner's"),
    (30, "list recently modified"),
    (45, "read"),
    (65, "update"),
    (80, "create"),
    (85, "delete"),
    (90, "audit search"),
];

/// The kind of a roll, an index into `KINDS`.
fn kind(roll: u32) -> usize {
    KINDS
        .iter()
        .rposition(|(from, _)| *from <= roll)
        .unwrap_or(0)
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
    /// Requests answered and their total time (µs), by the second of the run they were
    /// answered in and by kind (`KINDS`).
    by_second: Mutex<Vec<[(u64, u64); KINDS.len()]>>,
    errors: AtomicU64,
    pages: AtomicU64,
    creates: AtomicU64,
    deletes: AtomicU64,
}

/// The id in a create's `OData-EntityId` header.
fn created_id(response: &reqwest::blocking::Response) -> Option<String> {
    let header = response.headers().get("OData-EntityId")?.to_str().ok()?;
    let inside = header.rsplit_once('(')?.1.strip_suffix(')')?;
    Some(inside.to_string())
}

/// One client's loop until `stop`: 45 % list pages of 50 accounts (each an audited
/// `RetrieveMultiple` listing every record id) — the lists a Dataverse user runs most: by name
/// from a point, the owner's, the recently modified — 20 % single reads, 15 % updates, 10 %
/// creates and deletes of what this client created (in turn, so the table stops growing),
/// 10 % audit searches.
fn client_loop(
    base: &str,
    token: &str,
    fixture: &Fixture,
    seed: u64,
    started: Instant,
    stop: &AtomicBool,
    tally: &Tally,
) -> anyhow::Result<()> {
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
    let api = format!("{base}/main/api/data/v9.2");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut created: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut roll = rng.random_range(0..100);
        // A tenth of the requests write accounts into being or out of it: a create while the
        // client holds fewer than `CREATED_HELD` of its own, else a delete of one, so the
        // table stays within CLIENTS × CREATED_HELD rows of its start.
        if (80..90).contains(&roll) {
            roll = if created.len() < CREATED_HELD { 80 } else { 85 };
        }
        let id = &fixture.ids[rng.random_range(0..fixture.ids.len())];
        let list = |query: String| {
            client
                .get(format!("{api}/accounts?$select=name,revenue&{query}"))
                .header("Prefer", format!("odata.maxpagesize={PAGE}"))
        };
        let request = match roll {
            0..15 => list(format!(
                "$filter=name ge 'Account {:05}'&$orderby=name",
                rng.random_range(0..ACCOUNTS)
            )),
            15..30 => list(format!(
                "$filter=_ownerid_value eq {}&$orderby=name",
                fixture.owner
            )),
            30..45 => list("$orderby=modifiedon desc".into()),
            45..65 => client.get(format!("{api}/accounts({id})?$select=name,revenue")),
            65..80 => client
                .patch(format!("{api}/accounts({id})"))
                .json(&json!({"revenue": rng.random_range(0..ACCOUNTS)})),
            80..85 => client
                .post(format!("{api}/accounts"))
                .json(&json!({"name": "soak", "revenue": rng.random_range(0..ACCOUNTS)})),
            85..90 => {
                let victim = created.swap_remove(rng.random_range(0..created.len()));
                client.delete(format!("{api}/accounts({victim})"))
            }
            _ => client.get(format!(
                "{base}/api/audit/records?top=50&operation=Update&start=2000-01-01"
            )),
        };
        let sent = Instant::now();
        let answered = request.bearer_auth(token).send().and_then(|response| {
            let ok = response.status().is_success();
            let made = created_id(&response);
            response.bytes().map(|_| (ok, made))
        });
        match answered {
            Ok((true, made)) => {
                match roll {
                    0..45 => {
                        tally.pages.fetch_add(1, Ordering::Relaxed);
                    }
                    80..85 => {
                        tally.creates.fetch_add(1, Ordering::Relaxed);
                        created.extend(made);
                    }
                    85..90 => {
                        tally.deletes.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                let second = started.elapsed().as_secs() as usize;
                let mut by_second = tally.by_second.lock().expect("tally lock");
                if by_second.len() <= second {
                    by_second.resize(second + 1, Default::default());
                }
                let (count, micros) = &mut by_second[second][kind(roll)];
                *count += 1;
                *micros += sent.elapsed().as_micros() as u64;
            }
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// The accounts made before the load, and their owner.
struct Fixture {
    ids: Vec<String>,
    owner: String,
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
    let owner: serde_json::Value = client
        .get(format!("{api}/accounts({})?$select=_ownerid_value", ids[0]))
        .bearer_auth(&token)
        .send()?
        .json()?;
    let owner = owner["_ownerid_value"]
        .as_str()
        .context("an account without an owner")?
        .to_string();
    audit_reads(&client, &api, &token)?;
    retrieve_multiple_auditing(&client, &api, &token, true)?;

    let duration = options.soak;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let fixture = Arc::new(Fixture { ids, owner });
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
            let (stop, tally, fixture) = (stop.clone(), tally.clone(), fixture.clone());
            let (base, token) = (base.clone(), token.clone());
            let seed = options.seed.wrapping_add(i as u64);
            std::thread::spawn(move || {
                client_loop(&base, &token, &fixture, seed, started, &stop, &tally)
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
    // Per kind, the requests and their total time over `range` of seconds.
    let sum = |range: std::ops::Range<usize>| -> [(u64, u64); KINDS.len()] {
        let mut total = <[(u64, u64); KINDS.len()]>::default();
        for second in range.filter_map(|s| by_second.get(s)) {
            for (total, (count, micros)) in total.iter_mut().zip(second) {
                total.0 += count;
                total.1 += micros;
            }
        }
        total
    };
    let (first_kinds, last_kinds) = (sum(0..window), sum(seconds.saturating_sub(window)..seconds));
    let count = |kinds: &[(u64, u64)]| kinds.iter().map(|(n, _)| n).sum::<u64>();
    let (first, last) = (count(&first_kinds), count(&last_kinds));
    let mean_ms = |(n, micros): (u64, u64)| micros as f64 / n.max(1) as f64 / 1000.0;
    let latencies: Vec<String> = KINDS
        .iter()
        .zip(first_kinds.iter().zip(&last_kinds))
        .map(|((_, name), (first, last))| {
            format!("{name} {:.1} → {:.1}", mean_ms(*first), mean_ms(*last))
        })
        .collect();
    let tail: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= duration.as_secs_f64() * 0.2)
        .collect();
    // The lowest and highest resident memory of each window: a partition's in-memory index
    // grows to the budget and is let go when sealed, a sawtooth a slope alone cannot show.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (t, kib) in &samples {
        let at = (*t as usize) / window;
        if ranges.len() <= at {
            ranges.resize(at + 1, (u64::MAX, 0));
        }
        let (low, high) = &mut ranges[at];
        (*low, *high) = ((*low).min(*kib), (*high).max(*kib));
    }
    let ranges: Vec<String> = ranges
        .iter()
        .filter(|(low, _)| *low != u64::MAX)
        .map(|(low, high)| format!("{}–{}", low >> 10, high >> 10))
        .collect();
    let requests: u64 = by_second.iter().map(|second| count(second)).sum();
    // Requests in each window: a fall at the end only, or a steady decline, or noise.
    let per_window: Vec<String> = (0..seconds.div_ceil(window))
        .map(|w| count(&sum(w * window..((w + 1) * window).min(seconds))).to_string())
        .collect();
    let creates = tally.creates.load(Ordering::Relaxed);
    let deletes = tally.deletes.load(Ordering::Relaxed);
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
                "{CLIENTS} clients on loopback for {} s: 45 % list pages of {PAGE} accounts (audited; by name from a point, the owner's by name, the recently modified), 20 % reads, 15 % updates, 10 % creates and deletes (each client holds at most {CREATED_HELD} it created), 10 % audit searches",
                duration.as_secs()
            ),
            format!(
                "accounts from {ACCOUNTS} to {} ({creates} created, {deletes} deleted); {pages} audited pages answered, {logged} in the log",
                (ACCOUNTS as u64 + creates).saturating_sub(deletes)
            ),
            format!(
                "mean ms in the first {window} s → the last: {}",
                latencies.join(", ")
            ),
            format!(
                "requests answered in each {window} s: {}",
                per_window.join(", ")
            ),
            format!(
                "resident memory in each {window} s, lowest–highest MiB: {}",
                ranges.join(", ")
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
