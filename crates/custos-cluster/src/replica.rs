//! The audit node's side: a durable pull consumer of the audit stream that appends every
//! message's events, in stream order, to this node's own log — segments, index, `ids.dat`,
//! leaves and Merkle tree, built the same way on every audit node, so every audit node holds
//! the same tree. Search, reports, proofs and exports then answer from that log. A message
//! marked as a signed checkpoint (`signer.rs`) is adopted by the log once everything before it
//! in the stream is appended; a checkpoint the log's own tree does not match stops the replica
//! there, as damage.
//!
//! Where to start is the log's to say, not the consumer's: after each append the node writes the
//! stream sequence its log now holds to `cluster/applied` in its data directory (after the
//! append, so it is never ahead of the log), and each time it (re)starts following it makes its
//! consumer anew from the next sequence. A node whose data directory is new starts from the
//! beginning of the stream, whatever a consumer of the same name remembered.
//!
//! Exactly once: a message delivered again is skipped. Within one run of the consumer that is a
//! message at or below the last sequence it appended (an acknowledgement that was lost). After a
//! (re)start, the log may hold more than `applied` says — a crash between an append and its
//! record — but at most the one fetch that was appended then; the events of the first
//! `FETCH_MESSAGES` messages are therefore looked up by id in the log and skipped when found,
//! and the rest are appended without the lookup. (Messages, not sequence numbers: the stream's
//! sequences are shared with other tenants' subjects.) A message that cannot be read stops the replica
//! there, reported by `health`, rather than being skipped: a gap in the log is never silent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use custos_audit::{AuditEvent, AuditLog};

use crate::signer::CHECKPOINT_HEADER;
use futures_util::StreamExt;

/// Messages fetched at a time.
const FETCH_MESSAGES: usize = 256;
/// How long one fetch waits for messages when the stream is quiet.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause before trying again after a failure.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How the replica is doing.
#[derive(Debug, Default)]
pub(crate) struct ReplicaStatus {
    /// Why it is not appending, while it is not.
    pub(crate) failure: Option<String>,
}

/// The stream sequence the log holds, as `applied` last recorded it (0: nothing yet).
fn read_applied(applied: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(applied) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{} does not hold a stream sequence", applied.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("{}: {e}", applied.display())),
    }
}

/// Records that the log holds the stream up to `sequence` (a new file renamed over the old).
fn write_applied(applied: &Path, sequence: u64) -> Result<(), String> {
    let fresh = applied.with_extension("new");
    std::fs::write(&fresh, format!("{sequence}\n"))
        .and_then(|()| std::fs::rename(&fresh, applied))
        .map_err(|e| format!("{}: {e}", applied.display()))
}

/// Follows the stream into `log` for as long as the process runs; `applied` is the file that
/// says how far the log holds it.
pub(crate) async fn follow(
    stream: Stream,
    consumer_name: String,
    subject: String,
    log: Arc<AuditLog>,
    applied: PathBuf,
    status: Arc<Mutex<ReplicaStatus>>,
) {
    loop {
        if let Err(why) =
            follow_once(&stream, &consumer_name, &subject, &log, &applied, &status).await
        {
            tracing::error!(error = %why, "the audit replica stopped; trying again");
            status.lock().expect("replica lock").failure = Some(why);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn follow_once(
    stream: &Stream,
    consumer_name: &str,
    subject: &str,
    log: &Arc<AuditLog>,
    applied: &Path,
    status: &Arc<Mutex<ReplicaStatus>>,
) -> Result<(), String> {
    let start = read_applied(applied)? + 1;
    // The consumer is made anew from where the log stops; a stale one of the same name goes.
    if let Err(error) = stream.delete_consumer(consumer_name).await {
        tracing::debug!(%error, "no audit consumer to replace");
    }
    let consumer: Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer_name.to_string()),
            // This tenant's events only: another tenant's log is another log.
            filter_subject: subject.to_string(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the audit consumer {consumer_name}: {e}"))?;
    // The first messages of a run may already be in the log (see the top of this file); the
    // stream's sequences are shared with other tenants' subjects, so they are counted here.
    let mut to_look_up = FETCH_MESSAGES;
    let mut appended_through = start - 1;
    loop {
        let mut messages = consumer
            .fetch()
            .max_messages(FETCH_MESSAGES)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(|e| format!("fetching audit messages: {e}"))?;
        let mut steps = Vec::new();
        let mut last = None;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| format!("reading audit messages: {e}"))?;
            let sequence = message
                .info()
                .map_err(|e| format!("an audit message without its stream sequence: {e}"))?
                .stream_sequence;
            if sequence > appended_through {
                let maybe_held = to_look_up > 0;
                to_look_up = to_look_up.saturating_sub(1);
                steps.push(Step::read(&message, sequence, maybe_held)?);
            }
            last = Some((message, sequence));
        }
        let Some((message, sequence)) = last else {
            continue;
        };
        let appender = log.clone();
        tokio::task::spawn_blocking(move || apply(&appender, steps))
            .await
            .map_err(|e| format!("appending audit events: {e}"))?
            .map_err(|e| format!("applying the stream up to sequence {sequence}: {e}"))?;
        appended_through = sequence;
        message
            .ack()
            .await
            .map_err(|e| format!("acknowledging stream sequence {sequence}: {e}"))?;
        let record = applied.to_path_buf();
        tokio::task::spawn_blocking(move || write_applied(&record, sequence))
            .await
            .map_err(|e| format!("recording stream sequence {sequence}: {e}"))??;
        status.lock().expect("replica lock").failure = None;
    }
}

/// One message of the stream, read.
enum Step {
    /// A group commit's events, each with whether the log may hold it already.
    Events(Vec<(AuditEvent, bool)>),
    /// A checkpoint the cluster's signer signed (`signer.rs`), in stream order after the
    /// events it covers.
    Checkpoint(String),
}

impl Step {
    fn read(message: &Message, sequence: u64, maybe_held: bool) -> Result<Step, String> {
        let is_checkpoint = message
            .headers
            .as_ref()
            .is_some_and(|headers| headers.get(CHECKPOINT_HEADER).is_some());
        if is_checkpoint {
            return String::from_utf8(message.payload.to_vec())
                .map(Step::Checkpoint)
                .map_err(|_| format!("stream sequence {sequence}: a checkpoint that is not text"));
        }
        let decoded = custos_audit::decode_batch(&message.payload)
            .map_err(|e| format!("stream sequence {sequence}: {e}"))?;
        Ok(Step::Events(
            decoded
                .into_iter()
                .map(|event| (event, maybe_held))
                .collect(),
        ))
    }
}

/// Applies the steps of one fetch in order: consecutive events are appended together, and a
/// checkpoint is adopted once everything before it is in the log. Call from blocking code.
fn apply(log: &AuditLog, steps: Vec<Step>) -> custos_audit::Result<()> {
    let mut fresh = Vec::new();
    for step in steps {
        match step {
            Step::Events(events) => {
                for (event, maybe_held) in events {
                    if !(maybe_held && log.contains(event.id)?) {
                        fresh.push(event);
                    }
                }
            }
            Step::Checkpoint(note) => {
                log.append_all(std::mem::take(&mut fresh))?;
                log.adopt_checkpoint(&note)?;
            }
        }
    }
    log.append_all(fresh).map(|_| ())
}
