//! `custos audit search|export|proof|tail` against a running server (SPEC §11): the audit API
//! from the command line, as an Audit Reader. Every call is the API's, so every search and
//! export is itself recorded. `proof` trusts only the key it is given: it checks the
//! checkpoint's signature, the record's leaf hash and inclusion, and — with `--keep` — that the
//! log only grew since the checkpoint verified last time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use crate::client::{Client, print_table};
use crate::out::outln;

/// How a command reaches the server and signs in. The options are global, so that they may
/// come before or after an administration command's own subcommand (`custos user --url U list`
/// and `custos user list --url U` alike); a global option cannot be required, hence the password
/// checked when signing in.
#[derive(Debug, Args)]
pub(crate) struct Remote {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// Who signs in (an Audit Reader, Audit Manager or global admin).
    #[arg(long, global = true, default_value = "admin")]
    pub(crate) username: String,
    /// Their password (required).
    #[arg(long, global = true, env = "CUSTOS_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
}

impl Remote {
    pub(crate) fn sign_in(&self) -> anyhow::Result<Client> {
        let Some(password) = &self.password else {
            bail!("a password is needed to sign in: --password or CUSTOS_PASSWORD");
        };
        Client::sign_in(
            &self.url,
            &self.username,
            password,
            concat!("custos-cli/", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// The filters of the audit search (SPEC §6); lists repeat.
#[derive(Debug, Args, Default)]
pub(crate) struct Filters {
    /// From (ISO 8601 date or date-time; default: 90 days back).
    #[arg(long)]
    start: Option<String>,
    /// Until (default: now).
    #[arg(long)]
    end: Option<String>,
    /// Operations, e.g. --operation Delete --operation BulkDelete.
    #[arg(long)]
    operation: Vec<String>,
    /// Users (UPN or id).
    #[arg(long)]
    user: Vec<String>,
    /// Instances, e.g. main.
    #[arg(long)]
    instance: Vec<String>,
    /// Entities (logical names), e.g. contact.
    #[arg(long)]
    entity: Vec<String>,
    /// Who saw or changed this record.
    #[arg(long)]
    record_id: Vec<String>,
    /// Client IP addresses.
    #[arg(long)]
    ip: Vec<String>,
    /// WebUI, Api, Export, SupportTool, Backend, AdminCenter, Ingest.
    #[arg(long)]
    origin: Vec<String>,
    /// Succeeded, Failed, Denied.
    #[arg(long)]
    status: Vec<String>,
    /// Record types: CustosEntity, CustosAdmin, CustosAccess, CustosSupport, or an ingested
    /// application's.
    #[arg(long)]
    record_type: Vec<String>,
    /// Workloads: Custos, or an ingested application's.
    #[arg(long)]
    workload: Vec<String>,
    /// Free text: every word must begin a word of the record.
    #[arg(long)]
    q: Option<String>,
}

impl Filters {
    /// The filters as the search API's query pairs.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let one = [("start", &self.start), ("end", &self.end), ("q", &self.q)];
        for (name, value) in one {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        let lists = [
            ("operation", &self.operation),
            ("user", &self.user),
            ("instance", &self.instance),
            ("entity", &self.entity),
            ("recordId", &self.record_id),
            ("ip", &self.ip),
            ("origin", &self.origin),
            ("status", &self.status),
            ("recordType", &self.record_type),
            ("workload", &self.workload),
        ];
        for (name, values) in lists {
            pairs.extend(values.iter().map(|v| (name, v.clone())));
        }
        pairs
    }

    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.pairs() {
            query.append_pair(name, &value);
        }
        query.finish()
    }
}

/// The audit commands that talk to a server.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCommand {
    /// Search the audit log, newest first.
    Search {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filters: Filters,
        /// Most records to print.
        #[arg(long, default_value_t = 50)]
        max: usize,
        /// Print each record as a JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Export a search to a file (csv, xlsx or jsonl), with progress.
    Export {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filters: Filters,
        /// csv, xlsx or jsonl.
        #[arg(long)]
        format: String,
        /// Where to write the file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prove that a record is in the log, trusting only the log's key. Exits 2 when a check
    /// fails.
    Proof {
        #[command(flatten)]
        remote: Remote,
        /// The audit record's id.
        #[arg(long)]
        id: String,
        /// The verifier key to trust (`GET /api/audit/key`, obtained over a channel you trust);
        /// without it the server's word is taken, which proves consistency but not origin.
        #[arg(long)]
        key: Option<String>,
        /// A file that keeps the last verified checkpoint: the new one must extend it (a
        /// consistency proof), and then replaces it.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Print events as they are recorded, oldest first, until interrupted.
    Tail {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filters: Filters,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// How often to look, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Print each record as a JSON line.
        #[arg(long)]
        json: bool,
    },
}

/// What `run` found: success, or a check that failed (`proof`).
pub(crate) enum Outcome {
    Done,
    CheckFailed,
}

const COLUMNS: [&str; 7] = [
    "CreationTime",
    "Operation",
    "UserUpn",
    "EntityName",
    "ResultCount",
    "ResultStatus",
    "Origin",
];

fn print(records: &[Json], json: bool) {
    if json {
        for record in records {
            outln!("{record}");
        }
    } else {
        let columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        print_table(records, Some(&columns));
    }
}

impl RemoteCommand {
    fn remote(&self) -> &Remote {
        match self {
            RemoteCommand::Search { remote, .. }
            | RemoteCommand::Export { remote, .. }
            | RemoteCommand::Proof { remote, .. }
            | RemoteCommand::Tail { remote, .. } => remote,
        }
    }
}

pub(crate) fn run(command: &RemoteCommand) -> anyhow::Result<Outcome> {
    let client = command.remote().sign_in()?;
    match command {
        RemoteCommand::Search {
            filters, max, json, ..
        } => {
            let records = search(&client, filters, *max)?;
            print(&records, *json);
            if !json {
                eprintln!("{} records", records.len());
            }
            Ok(Outcome::Done)
        }
        RemoteCommand::Export {
            filters,
            format,
            out,
            ..
        } => {
            export(&client, filters, format, out)?;
            Ok(Outcome::Done)
        }
        RemoteCommand::Proof { id, key, keep, .. } => {
            proof(&client, id, key.as_deref(), keep.as_deref())
        }
        RemoteCommand::Tail {
            filters,
            count,
            seconds,
            interval_ms,
            json,
            ..
        } => {
            tail(
                &client,
                filters,
                *count,
                seconds.map(Duration::from_secs),
                Duration::from_millis(*interval_ms),
                *json,
            )?;
            Ok(Outcome::Done)
        }
    }
}

/// Up to `max` records of the search, following the pages.
fn search(client: &Client, filters: &Filters, max: usize) -> anyhow::Result<Vec<Json>> {
    let top = max.clamp(1, 1000);
    let mut path = format!("/api/audit/records?top={top}&{}", filters.query());
    let mut records = Vec::new();
    while records.len() < max {
        let page = client.get(&path)?;
        records.extend(page["value"].as_array().into_iter().flatten().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => path = next.strip_prefix(&client.base).unwrap_or(next).to_string(),
            None => break,
        }
    }
    records.truncate(max);
    Ok(records)
}

fn export(client: &Client, filters: &Filters, format: &str, out: &Path) -> anyhow::Result<()> {
    // The file is opened first: a path that cannot be written is found before the server runs
    // (and records) an export whose file nobody would get. A file made here for an export that
    // then fails is removed again; one that was there already is left as it was.
    let existed = out.exists();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    let exported = export_into(client, filters, format, out, file);
    if exported.is_err() && !existed {
        let _ = std::fs::remove_file(out);
    }
    exported
}

fn export_into(
    client: &Client,
    filters: &Filters,
    format: &str,
    out: &Path,
    mut file: std::fs::File,
) -> anyhow::Result<()> {
    use std::io::Write;
    let job = client
        .post(
            "/api/audit/exports",
            &json!({"format": format, "search": filters.query()}),
        )?
        .json;
    let id = job["id"].as_str().context("the export has no id")?;
    let bar = indicatif::ProgressBar::new(job["total"].as_u64().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("exporting {bar:40} {pos}/{len} events {eta}")
            .expect("a valid template"),
    );
    let status = loop {
        let status = client.get(&format!("/api/audit/exports/{id}"))?;
        bar.set_position(status["done"].as_u64().unwrap_or(0));
        match status["status"].as_str() {
            Some("running") => std::thread::sleep(Duration::from_millis(200)),
            Some("succeeded") => break status,
            other => bail!(
                "the export {}: {}",
                other.unwrap_or("vanished"),
                status["error"].as_str().unwrap_or("no reason given")
            ),
        }
    };
    bar.finish_and_clear();
    let bytes = client.download(&format!("/api/audit/exports/{id}/file"))?;
    file.set_len(0)
        .and_then(|()| file.write_all(&bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "{} events exported to {} ({} bytes)",
        status["done"],
        out.display(),
        bytes.len()
    );
    Ok(())
}

fn hash_of(text: &Json) -> anyhow::Result<custos_audit::Hash> {
    let bytes = STANDARD
        .decode(text.as_str().context("a hash is base64 text")?)
        .context("a hash is base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a hash is 32 bytes"))
}

fn proof(
    client: &Client,
    id: &str,
    key: Option<&str>,
    keep: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let key = match key {
        // A key mistyped is the command's mistake (exit 1), not a proof that failed.
        Some(key) => {
            custos_audit::check_verifier_key(key.trim()).map_err(anyhow::Error::msg)?;
            key.trim().to_string()
        }
        None => {
            let key = client.get_text("/api/audit/key")?.trim().to_string();
            eprintln!("note: trusting the server's key {key}; pin it with --key");
            key
        }
    };
    let fail = |what: String| {
        outln!("FAILED: {what}");
        Ok(Outcome::CheckFailed)
    };
    // Follow the key rotations since the pinned key: each handover checkpoint must be signed by
    // the key trusted so far and by the key it brings in.
    let chain = client.get("/api/audit/keys")?;
    let chain: Vec<(u64, String)> = chain["value"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            (
                k["sinceTreeSize"].as_u64().unwrap_or(0),
                k["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut trusted = vec![key.clone()];
    let mut in_force = key.clone();
    if let Some(at) = chain.iter().position(|(_, k)| *k == key) {
        for (since, next) in &chain[at + 1..] {
            let note = client.get_text(&format!("/api/audit/checkpoint?treeSize={since}"))?;
            match custos_audit::verify_note_chained(&note, &mut in_force) {
                Ok(_) if in_force == *next => trusted.push(next.clone()),
                Ok(_) => {
                    return fail(format!(
                        "the checkpoint of {since} events hands over to no key"
                    ));
                }
                Err(error) => {
                    return fail(format!(
                        "the handover to key {next} at {since} events does not verify: {error}"
                    ));
                }
            }
        }
        if trusted.len() > 1 {
            outln!(
                "the pinned key handed over to {} (key rotations verified by both signatures)",
                in_force
            );
        }
    }
    let key = in_force;
    let record = client.get(&format!("/api/audit/records/{id}"))?;
    let mut canonical = String::new();
    custos_audit::write_canonical(&record, &mut canonical);
    let leaf = custos_audit::leaf_hash(canonical.as_bytes());
    let proof = client.get(&format!("/api/audit/proofs/inclusion?id={id}"))?;
    let note = proof["checkpoint"].as_str().context("no checkpoint")?;
    let checkpoint = match custos_audit::verify_note(note, &key) {
        Ok(checkpoint) => checkpoint,
        Err(error) => return fail(format!("the checkpoint is not signed by the key: {error}")),
    };
    let index = proof["leafIndex"].as_u64().context("no leafIndex")?;
    let size = proof["treeSize"].as_u64().context("no treeSize")?;
    if size != checkpoint.size {
        return fail(format!(
            "the proof is for {size} events, the checkpoint for {}",
            checkpoint.size
        ));
    }
    if hash_of(&proof["leafHash"])? != leaf {
        return fail("the record shown is not the record logged (leaf hashes differ)".into());
    }
    let hashes = proof["hashes"]
        .as_array()
        .context("no hashes")?
        .iter()
        .map(hash_of)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !custos_audit::verify_inclusion(index, size, &leaf, &hashes, &checkpoint.root) {
        return fail("the inclusion proof does not lead to the checkpoint's root".into());
    }
    outln!(
        "record {id} ({} {}) is leaf {index} of the {size} events of a checkpoint signed by {}",
        record["Operation"].as_str().unwrap_or(""),
        record["CreationTime"].as_str().unwrap_or(""),
        checkpoint.origin
    );
    let Some(keep) = keep else {
        return Ok(Outcome::Done);
    };
    if let Ok(kept) = std::fs::read_to_string(keep) {
        let verified = trusted
            .iter()
            .map(|k| custos_audit::verify_note(&kept, k))
            .find(Result::is_ok);
        let old = match verified {
            Some(Ok(old)) => old,
            _ => {
                return fail(format!(
                    "the kept checkpoint in {} is not signed by a trusted key",
                    keep.display()
                ));
            }
        };
        if old.size > size {
            return fail(format!(
                "the log now has {size} events, fewer than the {} of the kept checkpoint",
                old.size
            ));
        }
        if old.size > 0 && old.size < size {
            let answer = client.get(&format!(
                "/api/audit/proofs/consistency?from={}&to={size}",
                old.size
            ))?;
            let hashes = answer["hashes"]
                .as_array()
                .context("no hashes")?
                .iter()
                .map(hash_of)
                .collect::<anyhow::Result<Vec<_>>>()?;
            if !custos_audit::verify_consistency(
                old.size,
                size,
                &old.root,
                &checkpoint.root,
                &hashes,
            ) {
                return fail(format!(
                    "the log of {size} events does not extend the kept checkpoint of {}: it was rewritten",
                    old.size
                ));
            }
        } else if old.size == size && old.root != checkpoint.root {
            return fail("two checkpoints of the same size with different roots: a fork".into());
        }
        outln!(
            "the log extends the kept checkpoint of {} events (consistency proven)",
            old.size
        );
    }
    std::fs::write(keep, note).with_context(|| format!("writing {}", keep.display()))?;
    Ok(Outcome::Done)
}

/// The correlation id of an answer: its own `SearchAuditLog` event carries it.
fn own_correlation(answer: &crate::client::Answer) -> Option<String> {
    answer
        .headers
        .get("x-ms-service-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Polls the search for events newer than the last seen, skipping the tail's own searches.
fn tail(
    client: &Client,
    filters: &Filters,
    count: Option<usize>,
    seconds: Option<Duration>,
    interval: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // From the newest event on: its time is the server's "now", and it is not printed.
    let newest = client.call(reqwest::Method::GET, "/api/audit/records?top=1", None)?;
    let mut own: HashSet<String> = own_correlation(&newest).into_iter().collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut since = "2000-01-01".to_string();
    if let Some(record) = newest.json["value"].get(0) {
        since = record["CreationTime"]
            .as_str()
            .unwrap_or(&since)
            .to_string();
        seen.insert(record["Id"].as_str().unwrap_or_default().to_string());
    }
    eprintln!("following the audit log from {since} (interrupt to stop)");
    let mut printed = 0;
    loop {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("start", &since);
        query.append_pair("top", "1000");
        for (name, value) in filters.pairs().into_iter().filter(|(n, _)| *n != "start") {
            query.append_pair(name, &value);
        }
        let answer = client.call(
            reqwest::Method::GET,
            &format!("/api/audit/records?{}", query.finish()),
            None,
        )?;
        own.extend(own_correlation(&answer));
        let mut fresh: Vec<Json> = answer.json["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| {
                let id = r["Id"].as_str().unwrap_or_default().to_string();
                !own.contains(r["CorrelationId"].as_str().unwrap_or_default()) && seen.insert(id)
            })
            .cloned()
            .collect();
        fresh.reverse();
        if let Some(count) = count {
            fresh.truncate(count - printed);
        }
        if let Some(newest) = fresh.last().and_then(|r| r["CreationTime"].as_str()) {
            since = newest.to_string();
        }
        printed += fresh.len();
        for record in &fresh {
            if json {
                outln!("{record}");
            } else {
                let field = |name: &str| custos_audit::visible(record[name].as_str().unwrap_or(""));
                outln!(
                    "{}  {}  {}  {}  {}  {}",
                    field("CreationTime"),
                    field("Operation"),
                    field("UserUpn"),
                    field("EntityName"),
                    field("ResultStatus"),
                    field("Origin")
                );
            }
        }
        if count.is_some_and(|c| printed >= c) || seconds.is_some_and(|s| started.elapsed() >= s) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
