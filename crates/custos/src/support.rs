//! `custos support …`: the internal management tool. A support engineer signs in, every use is
//! recorded first (`AccessInternalTool`, with the support ticket), then the engineer reads or
//! changes a customer's records through the Web API (recorded as the tool's: origin
//! `SupportTool`) or runs a backend command (`BackendCommand`, origin `Backend`).

use clap::Subcommand;
use serde_json::{Value as Json, json};

use crate::client::{Client, encode, print_table};
use crate::out::outln;

/// What the engineer does.
#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Record the use of the tool only (e.g. before looking at the console).
    Access,
    /// List records of an entity set.
    List {
        instance: String,
        /// Entity set, e.g. accounts.
        set: String,
        /// OData $filter.
        #[arg(long)]
        filter: Option<String>,
        /// Most records to show.
        #[arg(long, default_value_t = 20)]
        top: u32,
    },
    /// Show one record.
    Get {
        instance: String,
        set: String,
        id: String,
    },
    /// Change one record: `--data '{"telephone1": "…"}'`.
    Update {
        instance: String,
        set: String,
        id: String,
        #[arg(long)]
        data: String,
    },
    /// Run a backend command: seal-partition, run-retention, refresh-instance, log-status.
    Backend {
        command: String,
        #[arg(long)]
        instance: Option<String>,
    },
}

/// Sign-in and ticket of one use of the tool.
pub(crate) struct Session<'a> {
    pub(crate) url: &'a str,
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
    pub(crate) ticket: &'a str,
    pub(crate) reason: Option<&'a str>,
}

/// Runs one use of the tool; returns what the server answered.
pub(crate) fn run(session: &Session<'_>, action: &Action) -> anyhow::Result<Json> {
    let user_agent = concat!("custos-support/", env!("CARGO_PKG_VERSION"));
    let client = Client::sign_in(session.url, session.user, session.password, user_agent)?;
    let instance = match action {
        Action::List { instance, .. }
        | Action::Get { instance, .. }
        | Action::Update { instance, .. } => Some(instance.clone()),
        Action::Backend { instance, .. } => instance.clone(),
        Action::Access => None,
    };
    client.post(
        "/api/support/access",
        &json!({"ticket": session.ticket, "reason": session.reason, "instance": instance}),
    )?;
    let output =
        match action {
            Action::Access => json!({"recorded": true, "ticket": session.ticket}),
            Action::List {
                instance,
                set,
                filter,
                top,
            } => {
                let mut path = format!("/{instance}/api/data/v9.2/{set}?$top={top}");
                if let Some(filter) = filter {
                    path.push_str(&format!("&$filter={}", encode(filter)));
                }
                client.get(&path)?
            }
            Action::Get { instance, set, id } => {
                client.get(&format!("/{instance}/api/data/v9.2/{set}({id})"))?
            }
            Action::Update {
                instance,
                set,
                id,
                data,
            } => {
                let body: Json = serde_json::from_str(data)
                    .map_err(|e| anyhow::anyhow!("--data is not JSON: {e}"))?;
                client.call(
                    reqwest::Method::PATCH,
                    &format!("/{instance}/api/data/v9.2/{set}({id})"),
                    Some(&body),
                )?;
                client.get(&format!("/{instance}/api/data/v9.2/{set}({id})"))?
            }
            Action::Backend { command, instance } => client
                .post(
                    "/api/support/backend",
                    &json!({"command": command, "instance": instance, "ticket": session.ticket}),
                )?
                .json,
        };
    Ok(output)
}

/// Prints what a use of the tool answered: JSON, or a table for people.
pub(crate) fn print(output: &Json, json: bool) {
    if json {
        outln!("{output:#}");
    } else {
        match output["value"].as_array() {
            Some(rows) => print_table(rows, None),
            None => print_table(std::slice::from_ref(output), None),
        }
    }
}
