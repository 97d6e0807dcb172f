//! The `api` scenario (B4): retrieve multiple over HTTP on loopback, 32 concurrent clients,
//! pages of 50 and of 5,000 records, with retrieve-multiple auditing off and then on (durable
//! audit: each page's event, listing every record id, is fsynced before the page is sent).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use custos_server::{AppState, Config, Limits, SystemClock, UserLimits};
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::{Figure, Options, Report, percentile_ms};

const CLIENTS: usize = 32;
const ACCOUNTS: usize = 5000;
const PASSWORD: &str = "bench-password-1";

/// A server on a runtime of its own, on a free loopback port, its records in SQLite or in the
/// PostgreSQL database `records`; its state too, for scenarios that fill its log directly. It
/// may send to loopback (the `siem` scenario's receiver).
pub(crate) fn start(
    dir: &Path,
    records: Option<&str>,
    audit_memory_bytes: Option<u64>,
) -> anyhow::Result<(tokio::runtime::Runtime, SocketAddr, AppState)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let config = Config {
        admin_password: Some(PASSWORD.into()),
        allow_private_targets: true,
        postgres: records.map(str::to_string),
        audit_memory_bytes,
        // The scenarios time requests; the server's own verification, a minute after its start,
        // would take a core in the middle of them (B6 measures verification).
        verify_interval: None,
        // Every scenario's clients are one user sending far beyond a user's service protection
        // limits: the limits are raised past any load, so their bookkeeping is still paid.
        limits: Limits {
            per_user: UserLimits {
                requests: u32::MAX,
                execution: std::time::Duration::from_secs(u64::from(u32::MAX)),
                concurrent: u32::MAX,
            },
            ..Limits::default()
        },
        ..Config::new(dir.to_path_buf(), address)
    };
    let state = AppState::open(config, Arc::new(SystemClock))?;
    runtime.spawn(custos_server::serve_on(listener, state.clone()));
    Ok((runtime, address, state))
}

pub(crate) fn token(client: &Client, base: &str) -> anyhow::Result<String> {
    let response: Value = client
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", PASSWORD),
        ])
        .send()?
        .json()?;
    Ok(response["access_token"]
        .as_str()
        .context("no token")?
        .to_string())
}

pub(crate) fn send(
    client: &Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<()> {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let status = request.send()?.status();
    ensure!(status.is_success(), "{url}: {status}");
    Ok(())
}

/// Turns read auditing on for the organization behind the Web API at `api`; its id.
pub(crate) fn audit_reads(client: &Client, api: &str, token: &str) -> anyhow::Result<String> {
    let who: Value = client
        .get(format!("{api}/WhoAmI"))
        .bearer_auth(token)
        .send()?
        .json()?;
    let org = who["OrganizationId"]
        .as_str()
        .context("no organization")?
        .to_string();
    send(
        client,
        reqwest::Method::PATCH,
        &format!("{api}/organizations({org})"),
        token,
        Some(json!({"isreadauditenabled": true})),
    )?;
    Ok(org)
}

/// Turns retrieve multiple auditing of accounts on or off (and publishes it) through the Web
/// API at `api`.
pub(crate) fn retrieve_multiple_auditing(
    client: &Client,
    api: &str,
    token: &str,
    on: bool,
) -> anyhow::Result<()> {
    send(
        client,
        reqwest::Method::PATCH,
        &format!("{api}/EntityDefinitions(LogicalName='account')"),
        token,
        Some(json!({"IsRetrieveMultipleAuditEnabled": {"Value": on}})),
    )?;
    send(
        client,
        reqwest::Method::POST,
        &format!("{api}/PublishAllXml"),
        token,
        None,
    )
}

/// Requests answered and their latencies, over the slices of one side of a comparison.
#[derive(Debug, Default)]
struct Phase {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn add(&mut self, (elapsed, latencies): (Duration, Vec<Duration>)) {
        self.requests += latencies.len();
        self.elapsed += elapsed;
        self.latencies.extend(latencies);
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// How long `CLIENTS` clients fetching the first page of `page` accounts ran, and the latency
/// of each request they made in `duration`.
fn load(
    base: &str,
    token: &str,
    page: usize,
    duration: Duration,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, token) = (stop.clone(), token.to_string());
            let url = format!("{base}/main/api/data/v9.2/accounts?$select=name,revenue");
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = client
                        .get(&url)
                        .bearer_auth(&token)
                        .header("Prefer", format!("odata.maxpagesize={page}"))
                        .send()?;
                    ensure!(
                        response.status().is_success(),
                        "retrieve multiple: {}",
                        response.status()
                    );
                    let _ = response.bytes()?;
                    samples.push(started.elapsed());
                }
                Ok(samples)
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for thread in threads {
        samples.extend(thread.join().expect("a client panicked")?);
    }
    Ok((started.elapsed(), samples))
}

pub(crate) fn api(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let records = match (options.records_on_postgres, &options.postgres) {
        (false, _) => None,
        (true, Some(url)) => Some(url.as_str()),
        (true, None) => anyhow::bail!("records on PostgreSQL need a server (--postgres)"),
    };
    let (runtime, address, _) = start(&dir.join("api-server"), records, None)?;
    let base = format!("http://{address}");
    let client = Client::new();
    let token = token(&client, &base)?;
    let api = format!("{base}/main/api/data/v9.2");
    for i in 0..ACCOUNTS {
        send(
            &client,
            reqwest::Method::POST,
            &format!("{api}/accounts"),
            &token,
            Some(json!({"name": format!("Account {i:05}"), "revenue": i})),
        )?;
    }
    let org = audit_reads(&client, &api, &token)?;
    let org = org.as_str();
    // Retrieve multiple auditing of account goes off and on between slices of load, so a drift
    // of the shared machine's speed falls on both sides alike.
    let set_auditing = |on: bool| retrieve_multiple_auditing(&client, &api, &token, on);
    let rounds = options.api_rounds.max(1);
    let slice = options.api_phase / rounds as u32;
    let mut measured = Vec::new();
    for page in [50, 5000] {
        let (mut off, mut on) = (Phase::default(), Phase::default());
        for _ in 0..rounds {
            set_auditing(false)?;
            off.add(load(&base, &token, page, slice)?);
            set_auditing(true)?;
            on.add(load(&base, &token, page, slice)?);
        }
        measured.push((off, on));
    }
    drop(runtime);
    if let Some(url) = records {
        let schema = custos_server::pg_schema(org.parse().context("an organization id")?);
        postgres::Client::connect(url, postgres::NoTls)?
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))?;
    }
    let [(off_50, on_50), (off_5000, on_5000)]: [(Phase, Phase); 2] =
        measured.try_into().expect("two page sizes");
    let duration = options.api_phase;
    let overhead = |off: f64, on: f64| (off - on) / off * 100.0;
    let figure = Figure::custos;
    Ok(Report {
        scenario: "api".into(),
        events: (on_50.requests + on_5000.requests) as u64,
        figures: vec![
            figure("rm50_per_s_off", "1/s", "higher", off_50.per_second()),
            figure("rm50_per_s_on", "1/s", "higher", on_50.per_second()),
            figure(
                "rm50_p99_ms_off",
                "ms",
                "lower",
                percentile_ms(&mut { off_50.latencies.clone() }, 99.0),
            ),
            figure(
                "rm50_p99_ms_on",
                "ms",
                "lower",
                percentile_ms(&mut { on_50.latencies.clone() }, 99.0),
            ),
            figure(
                "overhead_50_pct",
                "%",
                "lower",
                overhead(off_50.per_second(), on_50.per_second()),
            ),
            figure("rm5000_per_s_off", "1/s", "higher", off_5000.per_second()),
            figure("rm5000_per_s_on", "1/s", "higher", on_5000.per_second()),
            figure(
                "rm5000_p99_ms_off",
                "ms",
                "lower",
                percentile_ms(&mut { off_5000.latencies.clone() }, 99.0),
            ),
            figure(
                "rm5000_p99_ms_on",
                "ms",
                "lower",
                percentile_ms(&mut { on_5000.latencies.clone() }, 99.0),
            ),
            figure(
                "overhead_5000_pct",
                "%",
                "lower",
                overhead(off_5000.per_second(), on_5000.per_second()),
            ),
        ],
        notes: vec![
            format!(
                "{CLIENTS} clients on loopback, {ACCOUNTS} accounts; per page size {rounds} rounds of {} ms without then {} ms with retrieve multiple auditing (each audited page one durable event listing every record id)",
                slice.as_millis(),
                slice.as_millis(),
            ),
            format!("{} s per side in all", duration.as_secs()),
            format!(
                "records in {}",
                if records.is_some() {
                    "PostgreSQL (a schema on the --postgres server)"
                } else {
                    "SQLite"
                }
            ),
        ],
    })
}
