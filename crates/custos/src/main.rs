//! The `custos` binary: command-line parsing and the edge where errors become exit codes.
//! Everything it runs lives in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use out::{out, outln};

/// The allocator of the Rust side of the process (SQLite keeps the C library's). glibc's
/// malloc spent a growing share of the server's CPU in `malloc_consolidate` and `unlink_chunk`
/// under a steady load (7 % in the first minutes of a soak, 16 % two minutes later); jemalloc
/// (TiKV's crate, as TiKV and Vector run it) served the same soak faster and with the lowest
/// resident memory of the three allocators tried (BENCHMARKS.md, B8).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod audit_remote;
mod client;
mod demo;
mod out;
mod support;

/// Custos: an audited business-records platform.
#[derive(Debug, Parser)]
#[command(name = "custos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The CA certificates (PEM) that a PostgreSQL server reached with `sslmode=require` must
    /// be signed by, in place of the Mozilla roots; the server's name is checked too
    /// (docs/scale-out.md).
    #[arg(long, global = true, env = "CUSTOS_POSTGRES_CA")]
    postgres_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Custos against its baselines (BENCHMARKS.md): ingest, freshness, query, verify,
    /// api, siem, cluster, soak; `open --dir DIR` times opening the log a `query --dir DIR` left.
    Bench {
        /// The scenario.
        scenario: String,
        /// Events to generate (default: 200,000; 20,000 with --quick).
        #[arg(long)]
        events: Option<u64>,
        /// Workload seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The small size CI runs.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep the logs and databases in this folder instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Leave out the SQLite baseline of the `query` scenario (at 10 million events its
        /// tables take about 140 GB).
        #[arg(long)]
        no_sqlite: bool,
        /// Also run the PostgreSQL baseline on this server (it creates and drops the schema
        /// `custos_bench`).
        #[arg(long, env = "CUSTOS_BENCH_POSTGRES")]
        postgres: Option<String>,
        /// In the `api` scenario, keep the server's records in the `--postgres` server (a
        /// schema dropped at the end), as a cluster node does, rather than in SQLite.
        #[arg(long, requires = "postgres")]
        records_on_postgres: bool,
        /// How long the `soak` scenario's load runs, in minutes (default 10; 1 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_440))]
        minutes: Option<u64>,
        /// The `soak` scenario's server's audit memory budget in MiB (as `serve
        /// --audit-memory`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        audit_memory: Option<u64>,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The internal management tool: a support engineer of the operator reads and changes a
    /// customer's records and runs backend commands, every use recorded with its ticket.
    Support {
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The engineer's sign-in name (let in by the tenant's admin center).
        #[arg(long)]
        user: String,
        /// The engineer's password.
        #[arg(long, env = "CUSTOS_SUPPORT_PASSWORD", hide_env_values = true)]
        password: String,
        /// The support case this work is for (recorded with every use).
        #[arg(long)]
        ticket: String,
        /// Why the engineer needs access.
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: support::Action,
    },
    /// Drive a realistic day of work against a running server — every audited operation, by
    /// several users, from several origins — then print what the log holds.
    Demo {
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The global admin's password.
        #[arg(long, env = "CUSTOS_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a data directory (tenant `default`, instance `main`, global admin `admin`)
    /// without serving; the admin password is taken from CUSTOS_ADMIN_PASSWORD or generated
    /// and printed once.
    Init {
        /// Folder of every file Custos keeps.
        #[arg(long, default_value = "./custos-data")]
        data_dir: PathBuf,
    },
    #[command(flatten)]
    Admin(Box<admin::Admin>),
    /// Run the server: Web API, token endpoint, audit API, on embedded storage (or, with --nats, the audit log through a NATS JetStream cluster).
    Serve {
        /// Folder of every file Custos keeps; created on first run.
        #[arg(long, default_value = "./custos-data")]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Lifetime of issued bearer tokens, in seconds.
        #[arg(long, default_value_t = 3600)]
        token_lifetime_secs: u64,
        /// How often the activity feed (SPEC §9) cuts the new events into a content blob, in
        /// milliseconds.
        #[arg(long, default_value_t = 10_000)]
        feed_interval_ms: u64,
        /// The base of every absolute URL Custos writes (next links, content URIs, instance
        /// URLs), e.g. https://custos.example.com when a TLS proxy fronts it; default: http://
        /// and the listening address. Never taken from a request's Host header.
        #[arg(long)]
        public_url: Option<String>,
        /// Let streams, webhooks and plug-in steps reach loopback, link-local and private
        /// addresses (a SIEM on this machine or the local network); off by default.
        #[arg(long)]
        allow_private_targets: bool,
        /// The only folder file streams may write in; without it file streams are refused.
        #[arg(long)]
        stream_dir: Option<PathBuf>,
        /// A reverse proxy or load balancer in front of Custos (an address or a network,
        /// 10.0.0.5 or 10.0.0.0/8; repeat it or separate with commas): a request from one takes
        /// its client address, recorded in its audit events and throttled by, from
        /// X-Forwarded-For, past every trusted hop. From any other peer the header is ignored
        #[arg(long = "trusted-proxy", value_delimiter = ',', value_parser = proxy_network)]
        trusted_proxies: Vec<ipnet::IpNet>,
        /// Most time between two signed checkpoints while events arrive, in milliseconds (a
        /// proof for an event waits for the next one).
        #[arg(long, default_value_t = 1000)]
        checkpoint_interval_ms: u64,
        /// The memory budget of the audit log's partition being written, in MiB: its in-memory
        /// index is sealed to a file when it reaches about this size, so resident memory stays
        /// flat under a steady load [default: 128]. Every node of a cluster uses the same
        /// budget (the first node's, kept in the shared directory), since partitions must be cut
        /// at the same events everywhere.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        audit_memory: Option<u64>,
        /// Most connections served at once; further clients wait until one closes.
        #[arg(long, default_value_t = custos_server::Limits::default().connections_max)]
        max_connections: usize,
        /// Most connections open at once from one client address, so that one host cannot
        /// take every connection the server has (more are closed at once; a --trusted-proxy's
        /// connections are not counted); 0: no limit.
        #[arg(long, default_value_t = custos_server::Limits::default().connections_per_address)]
        max_connections_per_address: usize,
        /// Join a cluster: the NATS servers (comma-separated URLs) whose JetStream stream holds
        /// the audit log; every audited request is answered once a quorum of them holds its
        /// event (docs/scale-out.md). Without it Custos runs on its embedded log.
        #[arg(long, value_delimiter = ',', requires = "node_id")]
        nats: Vec<String>,
        /// This node's name in the cluster (letters, digits, '-', '_'); names its NATS consumer.
        #[arg(long, requires = "nats")]
        node_id: Option<String>,
        /// Replicas of the audit stream when this node creates it (3 on a 3-node NATS cluster).
        #[arg(long, default_value_t = 3)]
        nats_replicas: usize,
        /// Keep every instance's records in this PostgreSQL database (a URL or connection
        /// string), a schema per instance, instead of an SQLite file per instance in the data
        /// directory (docs/scale-out.md).
        #[arg(long, env = "CUSTOS_POSTGRES")]
        postgres: Option<String>,
        /// Longest wait, in seconds, for a request's headers (also between the requests of a
        /// kept-alive connection), for the next piece of a request body, and for a client to
        /// take the next bytes of a response.
        #[arg(long, default_value_t = custos_server::Limits::default().idle_timeout.as_secs())]
        idle_timeout_secs: u64,
        /// Service protection: most API requests one user may send this node in a sliding
        /// window of five minutes, beyond which they are refused 429 with Retry-After
        /// (Dataverse's limit, 0x80072322); 0: no limit.
        #[arg(long, default_value_t = custos_server::Limits::default().per_user.requests)]
        user_requests_max: u32,
        /// Service protection: most seconds this node may spend on one user's API requests in a
        /// sliding window of five minutes, from each request's start to its answer (Dataverse's
        /// limit, 0x80072321); 0: no limit.
        #[arg(long, default_value_t = custos_server::Limits::default().per_user.execution.as_secs())]
        user_execution_secs_max: u64,
        /// Service protection: most API requests of one user this node runs at once
        /// (Dataverse's limit, 0x80072326); 0: no limit.
        #[arg(long, default_value_t = custos_server::Limits::default().per_user.concurrent)]
        user_concurrent_max: u32,
        /// Longest one read of an instance's records may run, in milliseconds, before it is
        /// stopped and refused 400 (a scan or sort of a large table no index serves); 0: none
        /// is stopped.
        #[arg(long, default_value_t = custos_server::Limits::default().query_time.as_millis() as u64)]
        query_time_max_ms: u64,
        /// How often the server verifies its whole audit log by itself, in seconds, as `POST
        /// /api/audit/verify` does (recorded as the system's `VerifyAuditLog`; a log that does
        /// not verify turns /healthz 503), the first time a minute after it starts (or after
        /// this, if less); 0: only when asked.
        #[arg(long, default_value_t = custos_server::VERIFY_INTERVAL_SECS)]
        verify_interval_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    #[command(flatten)]
    Remote(Box<audit_remote::RemoteCommand>),
    /// Rebuild the audit log's derived files (partition indexes, leaf hashes, record-id
    /// numbers, the tree's upper levels) from its segments. The server must be stopped; the
    /// command is itself audited.
    Reindex {
        /// Folder of every file Custos keeps.
        #[arg(long, default_value = "./custos-data")]
        data_dir: PathBuf,
        /// The PostgreSQL database the node's tenant directory is in, when it was served with
        /// `--postgres`.
        #[arg(long, env = "CUSTOS_POSTGRES")]
        postgres: Option<String>,
    },
    /// Recompute every checksum, record hash and tree root, and check them against every
    /// signed checkpoint. Exits 0 when the log verifies, 2 when it shows damage or tampering.
    Verify {
        /// Folder of every file Custos keeps.
        #[arg(long, default_value = "./custos-data")]
        data_dir: PathBuf,
        /// The root verifier key to trust (the first of `GET /api/audit/keys`); default: the
        /// first in `verifier.key` beside the log. Pin it when the folder is not trusted.
        #[arg(long)]
        key: Option<String>,
        /// A checkpoint kept outside the folder (a signed note: a SIEM's copy, one saved
        /// earlier): it must be signed by the key, and the log must extend it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for a failure of the command itself (I/O, bad data directory).
const EXIT_FAILURE: u8 = 1;
/// Exit code of `audit verify` when the log shows damage or tampering.
const EXIT_TAMPERED: u8 = 2;
/// Exit code when the server refused a request (wrong password, no access, bad input).
const EXIT_REFUSED: u8 = 3;

fn main() -> ExitCode {
    custos_server::private_files();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            // Bad arguments are a command that could not run (1), not clap's 2, which is
            // `audit verify`'s and `audit proof`'s "the log failed a check".
            let _ = error.print();
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("custos: error: {error:#}");
            if error.downcast_ref::<client::Refused>().is_some() {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(ca) = &cli.postgres_ca {
        custos_server::trust_postgres_ca(ca)
            .with_context(|| format!("--postgres-ca {}", ca.display()))?;
    }
    match cli.command {
        Command::Bench {
            scenario,
            events,
            seed,
            quick,
            json,
            dir,
            no_sqlite,
            postgres,
            records_on_postgres,
            minutes,
            audit_memory,
        } => {
            let mut options = custos_bench::Options::sized(quick);
            options.sqlite = !no_sqlite;
            options.records_on_postgres = records_on_postgres;
            if let Some(minutes) = minutes {
                options.soak = std::time::Duration::from_secs(minutes * 60);
            }
            options.audit_memory_bytes = audit_memory.map(|mib| mib << 20);
            options.seed = seed;
            options.dir = dir;
            options.postgres = postgres;
            if let Some(events) = events {
                options.events = events;
            }
            let report = custos_bench::run(&scenario, &options)?;
            out!("{}", report.table());
            if let Some(path) = json {
                std::fs::write(&path, format!("{:#}\n", report.json()))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    key,
                    checkpoint,
                    json,
                },
        } => verify(&data_dir, key, checkpoint.as_deref(), json),
        Command::Audit {
            command: AuditCommand::Remote(command),
        } => Ok(match audit_remote::run(&command)? {
            audit_remote::Outcome::Done => ExitCode::SUCCESS,
            audit_remote::Outcome::CheckFailed => ExitCode::from(EXIT_TAMPERED),
        }),
        Command::Audit {
            command: AuditCommand::Reindex { data_dir, postgres },
        } => {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("reindexing {}", data_dir.join("audit").display()));
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let summary = custos_server::reindex_audit_log(&data_dir, postgres.as_deref())
                .with_context(|| format!("reindexing {}", data_dir.display()))?;
            spinner.finish_and_clear();
            outln!(
                "reindexed {} events: {} partition indexes written in {:.1} s",
                summary.events,
                summary.partitions,
                summary.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Support {
            url,
            user,
            password,
            ticket,
            reason,
            json,
            action,
        } => {
            let session = support::Session {
                url: &url,
                user: &user,
                password: &password,
                ticket: &ticket,
                reason: reason.as_deref(),
            };
            support::print(&support::run(&session, &action)?, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            url,
            password,
            json,
        } => {
            demo::run(&url, &password, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(command) => {
            let (output, json) = admin::run(&command)?;
            admin::print(&output, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { data_dir } => {
            let existed = data_dir.join("control.db").exists();
            let config = custos_server::Config {
                admin_password: admin_password(),
                ..custos_server::Config::new(data_dir.clone(), ([127, 0, 0, 1], 0).into())
            };
            custos_server::AppState::open(config, std::sync::Arc::new(custos_server::SystemClock))
                .with_context(|| format!("initialising {}", data_dir.display()))?;
            outln!(
                "{} {}: tenant 'default', instance 'main', global admin 'admin'",
                if existed {
                    "already initialised:"
                } else {
                    "initialised"
                },
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            data_dir,
            listen,
            token_lifetime_secs,
            feed_interval_ms,
            public_url,
            allow_private_targets,
            stream_dir,
            trusted_proxies,
            checkpoint_interval_ms,
            audit_memory,
            max_connections,
            max_connections_per_address,
            idle_timeout_secs,
            user_requests_max,
            user_execution_secs_max,
            user_concurrent_max,
            query_time_max_ms,
            verify_interval_secs,
            nats,
            node_id,
            nats_replicas,
            postgres,
        } => {
            let cluster = node_id.map(|node_id| custos_server::ClusterConfig {
                nats_urls: nats,
                node_id,
                replicas: nats_replicas,
            });
            let config = custos_server::Config {
                admin_password: admin_password(),
                token_lifetime_secs,
                feed_interval: std::time::Duration::from_millis(feed_interval_ms.max(1)),
                public_url,
                allow_private_targets,
                stream_dir,
                checkpoint_interval_ms: checkpoint_interval_ms.max(10),
                audit_memory_bytes: audit_memory.map(|mib| mib << 20),
                limits: custos_server::Limits {
                    connections_max: max_connections,
                    connections_per_address: max_connections_per_address,
                    idle_timeout: std::time::Duration::from_secs(idle_timeout_secs.max(1)),
                    per_user: custos_server::UserLimits {
                        requests: user_requests_max,
                        execution: std::time::Duration::from_secs(user_execution_secs_max),
                        concurrent: user_concurrent_max,
                    },
                    query_time: std::time::Duration::from_millis(query_time_max_ms),
                },
                cluster,
                postgres,
                verify_interval: (verify_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(verify_interval_secs)),
                trusted_proxies,
                ..custos_server::Config::new(data_dir, listen)
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime
                .block_on(custos_server::serve(config))
                .context("serving")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The first run's admin password, from the environment.
fn admin_password() -> Option<String> {
    std::env::var("CUSTOS_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
}

fn verify(
    data_dir: &std::path::Path,
    key: Option<String>,
    witness: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let log_dir = data_dir.join("audit");
    let key = match key {
        // A key mistyped is the command's mistake (exit 1), not evidence against the log.
        Some(key) => {
            custos_audit::check_verifier_key(key.trim()).map_err(anyhow::Error::msg)?;
            key.trim().to_string()
        }
        None => {
            let path = log_dir.join("verifier.key");
            // The chain of keys, root first: verification starts from the root and follows
            // the handovers.
            custos_audit::files::read_to_string(&path)
                .with_context(|| format!("reading {} (or give --key)", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        }
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} {eta}")
            .expect("a valid template"),
    );
    let witness = witness
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the kept checkpoint {}", path.display()))
        })
        .transpose()?;
    let report =
        custos_audit::verify_log_against(&log_dir, &key, witness.as_deref(), &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("verifying {}", log_dir.display()))?;
    bar.finish_and_clear();
    if json {
        let body = serde_json::json!({
            "ok": report.is_ok(),
            "segments": report.segments,
            "events": report.events,
            "checkpoints": report.checkpoints,
            "latestCheckpoint": report.latest_checkpoint,
            "problems": report.problems,
            "tornTail": report.torn_tail,
            "purgedEvents": report.purged_events,
            "keptCheckpoint": report.witness,
        });
        outln!("{body:#}");
    } else {
        outln!(
            "{} events in {} segments, {} signed checkpoints (latest covers {})",
            report.events,
            report.segments,
            report.checkpoints,
            report
                .latest_checkpoint
                .map_or("nothing".into(), |n| format!("{n} events"))
        );
        if report.purged_events > 0 {
            outln!(
                "{} of them purged by retention, every purged range accounted for by its signed purge event",
                report.purged_events
            );
        }
        if let Some(torn) = &report.torn_tail {
            outln!("note: torn tail, not tampering: {torn}");
        }
        if let Some(size) = report.witness
            && report.is_ok()
        {
            outln!("the log extends the checkpoint kept outside ({size} events)");
        }
        for problem in &report.problems {
            outln!("FAILED: {problem}");
        }
        if report.is_ok() {
            outln!("verified: every record, checksum and signed checkpoint is intact");
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TAMPERED)
    })
}

/// A `--trusted-proxy`: a network (`10.0.0.0/8`, `fd00::/8`) or one address (`10.0.0.5`).
fn proxy_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.trim()
        .parse::<ipnet::IpNet>()
        .or_else(|_| {
            text.trim()
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
        })
        .map_err(|_| format!("'{text}' is neither an IP address nor a network (10.0.0.0/8)"))
}
