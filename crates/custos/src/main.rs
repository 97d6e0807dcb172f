//! The `custos` binary: command-line parsing and the edge where errors become exit codes.
//! Everything it runs lives in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Custos: an audited business-records platform.
#[derive(Debug, Parser)]
#[command(name = "custos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: Web API, token endpoint, audit API, on embedded storage.
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
    },
}

/// Exit code for a failure of the command itself (I/O, bad data directory).
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("custos: error: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data_dir,
            listen,
            token_lifetime_secs,
        } => {
            let config = custos_server::Config {
                data_dir,
                listen,
                admin_password: std::env::var("CUSTOS_ADMIN_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
                token_lifetime_secs,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime
                .block_on(custos_server::serve(config))
                .context("serving")
        }
    }
}
