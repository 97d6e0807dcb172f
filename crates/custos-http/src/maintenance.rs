//! Backend commands an operator runs on a stopped server's data directory; each is recorded in
//! the audit log as a `BackendCommand` by the system, origin `Backend`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use custos_audit::{AuditLog, Operation};

use crate::draft::backend_draft;
use crate::error::StartError;
use crate::keys::{LogMode, audit_log_config};
use crate::state::{Clock, SystemClock, stamp};

/// What `custos audit reindex` did.
#[derive(Debug, Clone)]
pub struct ReindexSummary {
    /// Events in the log (purged ones included).
    pub events: u64,
    /// Partitions whose index file was written.
    pub partitions: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Rebuilds the audit log's derived files (partition indexes, leaves, record-id numbers) from
/// its segments, then records the command. Refused while a server has the log open. A node
/// served with `--postgres` has its directory in `postgres`.
pub fn reindex_audit_log(
    data_dir: &Path,
    postgres: Option<&str>,
) -> Result<ReindexSummary, StartError> {
    if data_dir.join("cluster").join("applied").exists() {
        return Err(StartError::Config(format!(
            "{} is a cluster node's: its audit log is built from the audit stream, and an event of its own would set it apart from the other nodes' logs. Rebuild it from the stream instead: stop the node, remove its audit folder and cluster/applied, and start it (docs/scale-out.md)",
            data_dir.display()
        )));
    }
    let (directory, _) = crate::state::open_directory(data_dir, postgres)?;
    let config = audit_log_config(data_dir, &directory, 1000, None, LogMode::Embedded)?;
    let started = Instant::now();
    let log = AuditLog::reindex(config)?;
    crate::keys::finish_rotation(data_dir, &log)?;
    let summary = ReindexSummary {
        events: log.len(),
        partitions: log.stats().partitions_sealed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    let mut draft = backend_draft(Operation::BackendCommand);
    draft.details = serde_json::json!({
        "Command": "audit reindex",
        "Events": summary.events,
        "Partitions": summary.partitions,
    })
    .to_string();
    let event = stamp(
        draft,
        directory.tenant_id(),
        SystemClock.now_us(),
        String::new(),
    );
    log.append(event)?;
    Ok(summary)
}
