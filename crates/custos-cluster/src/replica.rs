//! The audit node's side: a durable pull consumer of the audit stream that appends every
//! message's events, in stream order, to this node's own log — segments, index, `ids.dat`,
//! leaves and Merkle tree, built the same way on every audit node, so every audit node holds
//! the same tree. Search, reports, proofs and exports then answer from that log. A message
//! marked as a signed checkpoint (`signer.rs`) is adopted by the log once everything before it
//! in the stream is appended; a checkpoint the log's own tree does not match stops the replica
//! there, as damage.
//!
//! Where to start is the log's to say, not the consumer's: after each append the node writes the
//! stream sequence its log now holds, and how many events the stream holds up to it, to
//! `cluster/applied` in its data directory (after the append, so it is never ahead of the
//! log), and each time it (re)starts following it makes its consumer anew from the next
//! sequence. A node whose data directory is new starts from the
//! beginning of the stream, whatever a consumer of the same name remembered.
//!
//! A node behind the archive of sealed partitions (`archive.rs`: a new node, a rebuilt one, one
//! away while the stream was trimmed) imports the archived events beyond its log once its
//! consumer is made (which keeps the stream from trimming what it has not acknowledged).
//!
//! Exactly once: a message delivered again is skipped. Within one run of the consumer that is a
//! message at or below the last sequence it appended (an acknowledgement that was lost). After a
//! (re)start, the log may hold more than `applied` says — a crash between an append and its
//! record (at most one fetch), or events imported from the archive — and what it holds beyond
//! is always a prefix of what follows in the stream; so each event is looked up by id in the log
//! and skipped when found until the first that is not, and the rest are appended without the
//! lookup. A message that cannot be read stops the replica there, reported by `health`, rather
//! than being skipped: a gap in the log is never silent. Nor is a gap in the deliveries: a pull
//! that expires with messages in flight leaves them delivered but never received, so each
//! message's delivery sequence must follow the last one's, or the replica follows again from
//! the log's end.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use custos_audit::{AuditEvent, AuditLog};

use crate::archive::{self, Marks};
use crate::signer::CHECKPOINT_HEADER;
use futures_util::StreamExt;

/// The header that marks a message of the audit stream as a seal marker ([`crate::Cluster::seal`]):
/// every replica ends its active partition there, after the same events.
pub(crate) const SEAL_HEADER: &str = "Custos-Seal";

/// Messages fetched at a time.
const FETCH_MESSAGES: usize = 256;
/// How long one fetch waits for messages when the stream is quiet.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How much longer than `FETCH_WAIT` a fetch may stay silent before it is given up.
const FETCH_GRACE: Duration = Duration::from_secs(1);
/// Pause before trying again after a failure.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How the replica is doing.
#[derive(Debug, Default)]
pub(crate) struct ReplicaStatus {
    /// Why it is not appending, while it is not.
    pub(crate) failure: Option<String>,
    /// Why the last retention purge the stream claimed was not carried out here, when it was
    /// not.
    pub(crate) retention: Option<String>,
}

/// How far the log holds the stream, as `applied` last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    /// The last stream sequence appended (0: nothing yet).
    sequence: u64,
    /// How many events the stream's messages up to `sequence` hold: where the next message's
    /// first event goes in every audit node's log (`None` in a file of the first format).
    position: Option<u64>,
}

/// Reads `applied`: `<sequence> <position>` (or `<sequence>` in the first format); nothing yet
/// when there is no file.
fn read_applied(applied: &Path) -> Result<Applied, String> {
    let text = match custos_audit::files::read_to_string(applied) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Applied {
                sequence: 0,
                position: Some(0),
            });
        }
        Err(e) => return Err(format!("{}: {e}", applied.display())),
    };
    let wrong = || format!("{} does not hold a stream sequence", applied.display());
    let mut numbers = text.split_whitespace().map(str::parse::<u64>);
    let sequence = numbers.next().ok_or_else(wrong)?.map_err(|_| wrong())?;
    let position = numbers.next().transpose().map_err(|_| wrong())?;
    Ok(Applied { sequence, position })
}

/// Records how far the log holds the stream (a new file renamed over the old).
fn write_applied(applied: &Path, sequence: u64, position: u64) -> Result<(), String> {
    use std::io::Write;
    let fresh = applied.with_extension("new");
    custos_audit::files::create_replacing(&fresh)
        .and_then(|mut file| file.write_all(format!("{sequence} {position}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&fresh, applied))
        .map_err(|e| format!("{}: {e}", applied.display()))
}

/// What the replica needs.
pub(crate) struct Follow {
    pub(crate) jetstream: async_nats::jetstream::Context,
    pub(crate) stream: Stream,
    pub(crate) replicas: usize,
    pub(crate) consumer_name: String,
    pub(crate) subject: String,
    pub(crate) tenant_id: uuid::Uuid,
    pub(crate) log: Arc<AuditLog>,
    /// The file that says how far the log holds the stream.
    pub(crate) applied: PathBuf,
    pub(crate) status: Arc<Mutex<ReplicaStatus>>,
    pub(crate) marks: Arc<Mutex<Marks>>,
    /// The last stream sequence the log holds, for those waiting on the replica.
    pub(crate) through: tokio::sync::watch::Sender<u64>,
    pub(crate) keys: Arc<dyn crate::KeyStore>,
}

/// Follows the stream into the log for as long as the process runs.
pub(crate) async fn follow(task: Follow) {
    loop {
        if let Err(why) = follow_once(&task).await {
            let Follow { status, .. } = &task;
            tracing::error!(error = %why, "the audit replica stopped; trying again");
            status.lock().expect("replica lock").failure = Some(why);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn follow_once(task: &Follow) -> Result<(), String> {
    let Follow {
        stream,
        consumer_name,
        subject,
        log,
        applied,
        status,
        marks,
        through,
        ..
    } = task;
    let recorded = read_applied(applied)?;
    let start = recorded.sequence + 1;
    // The consumer is made anew from where the log stops; a stale one of the same name goes.
    if let Err(error) = stream.delete_consumer(consumer_name).await {
        tracing::debug!(%error, "no audit consumer to replace");
    }
    let consumer: Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer_name.to_string()),
            // This tenant's events only: another tenant's log is another log.
            filter_subject: subject.to_string(),
            // A node away this long finds its consumer gone and starts from the archive.
            inactive_threshold: archive::CONSUMER_IDLE,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the audit consumer {consumer_name}: {e}"))?;
    // The consumer now holds the stream from `start` on; what was trimmed before it is in the
    // archive.
    let store = archive::bucket(&task.jetstream, task.replicas).await?;
    let imported = archive::import(&store, task.tenant_id, log).await?;
    if imported > 0 {
        tracing::info!(imported, "imported audit events from the archive");
    }
    // A file of the first format did not say where the stream had reached in the log: the
    // log's length is the best guess.
    let mut position = recorded.position.unwrap_or_else(|| log.len());
    marks.lock().expect("marks lock").push(log.len(), start - 1);
    through.send_replace(start - 1);
    // Until the first event the log does not hold, each is looked up (see the top of this file).
    let mut looking = true;
    let mut appended_through = start - 1;
    // The consumer's delivery sequence of the last message received: a pull that expires with
    // messages in flight leaves them delivered but never received, and the next pull goes on
    // after them (they come again only when their acknowledgement is overdue). A jump in the
    // delivery sequence is such a gap: the replica follows again from the log's end rather
    // than appending past it.
    let mut received_through = 0u64;
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
        // The server ends a fetch within `FETCH_WAIT`, with messages or a status saying there
        // are none. A fetch that neither ends nor delivers for `FETCH_GRACE` longer lost its
        // server (the connection's, or the consumer's leader): it is given up, and the next
        // one goes where the client has reconnected or to the consumer's new leader. (The
        // library's own limit is 5 s past the expiry; a delivery lost with it is the gap
        // `next_delivery` finds.)
        while let Ok(Some(message)) =
            tokio::time::timeout(FETCH_WAIT + FETCH_GRACE, messages.next()).await
        {
            let message = message.map_err(|e| format!("reading audit messages: {e}"))?;
            let info = message
                .info()
                .map_err(|e| format!("an audit message without its stream sequence: {e}"))?;
            let sequence = info.stream_sequence;
            received_through = next_delivery(received_through, info.consumer_sequence)?;
            if sequence > appended_through {
                steps.push(Step::read(&message, sequence)?);
            }
            last = Some((message, sequence));
        }
        let Some((message, sequence)) = last else {
            continue;
        };
        let checkpointed = steps.iter().any(|step| matches!(step, Step::Checkpoint(_)));
        let (appender, keys) = (log.clone(), task.keys.clone());
        (looking, position) =
            tokio::task::spawn_blocking(move || apply(&appender, &*keys, steps, looking, position))
                .await
                .map_err(|e| format!("appending audit events: {e}"))?
                .map_err(|e| format!("applying the stream up to sequence {sequence}: {e}"))?;
        appended_through = sequence;
        marks.lock().expect("marks lock").push(log.len(), sequence);
        through.send_replace(sequence);
        if checkpointed {
            carry_out_purges(log, applied, status).await;
        }
        message
            .ack()
            .await
            .map_err(|e| format!("acknowledging stream sequence {sequence}: {e}"))?;
        let record = applied.to_path_buf();
        tokio::task::spawn_blocking(move || write_applied(&record, sequence, position))
            .await
            .map_err(|e| format!("recording stream sequence {sequence}: {e}"))??;
        status.lock().expect("replica lock").failure = None;
    }
}

/// Adopts `note`; a handover to a key this node's log does not sign with yet (the cluster's key
/// rotated) switches the node's key too: kept where a restart finds it first, made the node's
/// key once the log has taken it.
fn adopt(log: &AuditLog, keys: &dyn crate::KeyStore, note: &str) -> custos_audit::Result<()> {
    let incoming = custos_audit::handover_key(note)
        .filter(|next| *next != log.verifier_key())
        .and_then(|next| keys.seed_of(&next));
    if let Some(seed) = incoming {
        keys.switching(seed)
            .map_err(custos_audit::Error::Unavailable)?;
    }
    log.adopt_checkpoint(note, keys)?;
    if let Some(seed) = incoming
        && log.verifier_key() == log.verifier_key_for(seed)
    {
        keys.switched(seed, None)
            .map_err(custos_audit::Error::Unavailable)?;
    }
    Ok(())
}

/// Carries out the retention purges that the checkpoints adopted now cover
/// (`AuditLog::carry_out_purges`), keeping each range's leaves and record ids beside
/// `applied` until the archive holds them. A claim this log cannot carry out is reported, and
/// the log goes on following the stream: it keeps more than the others, never less.
async fn carry_out_purges(log: &Arc<AuditLog>, applied: &Path, status: &Mutex<ReplicaStatus>) {
    let (purger, kept) = (
        log.clone(),
        archive::purged_dir(applied.parent().unwrap_or(Path::new("."))),
    );
    let outcome = tokio::task::spawn_blocking(move || {
        purger.carry_out_purges(&mut |range| archive::keep_purged(&kept, range))
    })
    .await;
    let refused = match outcome {
        Ok(Ok(done)) => {
            for (first, count) in done {
                tracing::info!(first, count, "purged audit events by retention");
            }
            None
        }
        Ok(Err(error)) => Some(error.to_string()),
        Err(error) => Some(error.to_string()),
    };
    if let Some(why) = &refused {
        tracing::error!(error = %why, "a retention purge was not carried out");
    }
    status.lock().expect("replica lock").retention = refused;
}

/// The delivery sequence after `received_through` when `delivered` is the very next one; a
/// jump means deliveries were lost in flight (a pull that expired with messages on their way),
/// and appending past them would leave a gap the log never fills.
fn next_delivery(received_through: u64, delivered: u64) -> Result<u64, String> {
    if delivered == received_through + 1 {
        Ok(delivered)
    } else {
        Err(format!(
            "the audit consumer delivered {delivered} after {received_through}: deliveries in between were lost in flight; following again from the log's end"
        ))
    }
}

/// One message of the stream, read.
enum Step {
    /// A group commit's events.
    Events(Vec<AuditEvent>),
    /// A checkpoint the cluster's signer signed (`signer.rs`), in stream order after the
    /// events it covers.
    Checkpoint(String),
    /// A seal marker: the active partition ends here.
    Seal,
}

impl Step {
    fn read(message: &Message, sequence: u64) -> Result<Step, String> {
        let marked = |header: &str| {
            message
                .headers
                .as_ref()
                .is_some_and(|headers| headers.get(header).is_some())
        };
        if marked(SEAL_HEADER) {
            return Ok(Step::Seal);
        }
        if marked(CHECKPOINT_HEADER) {
            return String::from_utf8(message.payload.to_vec())
                .map(Step::Checkpoint)
                .map_err(|_| format!("stream sequence {sequence}: a checkpoint that is not text"));
        }
        custos_audit::decode_batch(&message.payload)
            .map(Step::Events)
            .map_err(|e| format!("stream sequence {sequence}: {e}"))
    }
}

/// Applies the steps of one fetch in order: consecutive events are appended together, a
/// checkpoint is adopted once everything before it is in the log, and a seal marker ends the
/// active partition there. While `looking`, an event is first looked up in the log (or its
/// place found purged) and skipped when held; the first that is not ends the looking.
/// `position` counts the stream's events: a seal marker met where the log already holds
/// events beyond it (it was applied before a crash, or the archive's import cut there) seals
/// nothing. Returns whether it is still looking, and the position after the steps. Call from
/// blocking code.
fn apply(
    log: &AuditLog,
    keys: &dyn crate::KeyStore,
    steps: Vec<Step>,
    mut looking: bool,
    mut position: u64,
) -> custos_audit::Result<(bool, u64)> {
    let mut fresh = Vec::new();
    for step in steps {
        match step {
            Step::Events(events) => {
                for event in events {
                    // A range the log took as purged from the archive is held too.
                    looking = looking && (log.contains(event.id)? || log.is_purged(position));
                    position += 1;
                    if !looking {
                        fresh.push(event);
                    }
                }
            }
            Step::Checkpoint(note) => {
                log.append_all(std::mem::take(&mut fresh))?;
                adopt(log, keys, &note)?;
            }
            Step::Seal => {
                log.append_all(std::mem::take(&mut fresh))?;
                if log.len() == position {
                    log.seal_active()?;
                }
            }
        }
    }
    log.append_all(fresh)?;
    Ok((looking, position))
}

#[cfg(test)]
mod tests {
    use super::{Applied, Step, apply, next_delivery, read_applied, write_applied};
    use custos_audit::{
        AuditEvent, AuditLog, EntityCategory, LogConfig, Origin, ResultStatus, UserType,
    };
    use uuid::Uuid;

    fn event(n: u128) -> AuditEvent {
        AuditEvent {
            id: Uuid::now_v7(),
            creation_time_us: 1_800_000_000_000_000,
            tenant_id: Uuid::from_u128(1),
            instance: "main".into(),
            instance_url: String::new(),
            workload: "Custos".into(),
            record_type: "CRM".into(),
            operation: "Retrieve".into(),
            category: String::new(),
            user_id: String::new(),
            user_upn: "a@example.test".into(),
            user_type: UserType::Regular,
            caller_id: String::new(),
            client_ip: String::new(),
            user_agent: String::new(),
            origin: Origin::Api,
            correlation_id: String::new(),
            session_id: String::new(),
            client_request_id: String::new(),
            result_status: ResultStatus::Succeeded,
            error_code: String::new(),
            entity_name: "account".into(),
            entity_category: EntityCategory::OutOfBox,
            record_ids: vec![Uuid::from_u128(n)],
            query: String::new(),
            result_count: 1,
            changes: Vec::new(),
            details: String::new(),
        }
    }

    #[test]
    fn applied_says_the_sequence_and_the_streams_events_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied");
        let read = || read_applied(&path);
        let at = |sequence, position| Applied { sequence, position };
        assert_eq!(read(), Ok(at(0, Some(0))), "nothing yet");
        write_applied(&path, 42, 1_000).unwrap();
        assert_eq!(read(), Ok(at(42, Some(1_000))));
        std::fs::write(&path, "42\n").unwrap();
        assert_eq!(read(), Ok(at(42, None)), "the first format");
        std::fs::write(&path, "42 x\n").unwrap();
        assert!(read().is_err());
    }

    /// A fetch of three events, a seal marker and two more, as the stream delivers it.
    fn fetch(events: &[AuditEvent]) -> Vec<Step> {
        vec![
            Step::Events(events[..3].to_vec()),
            Step::Seal,
            Step::Events(events[3..].to_vec()),
        ]
    }

    /// A node rebuilt from the archive took a purged range as leaves and record ids; the stream,
    /// not trimmed yet, delivers that range's events again: they are held, not appended.
    #[test]
    fn events_of_a_range_taken_as_purged_are_held() {
        let events: Vec<AuditEvent> = (0..6).map(event).collect();
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(LogConfig::new(dir.path(), [3; 32], "test.example/log")).unwrap();
        log.append_all(events[..3].to_vec()).unwrap();
        log.seal_active().unwrap();
        log.import_purged(custos_audit::PurgedRange {
            first: 3,
            count: 2,
            event_seq: 9,
            leaves: vec![[7; 32], [8; 32]],
            ids: vec![Uuid::from_u128(3), Uuid::from_u128(4)],
        })
        .unwrap();
        let steps = vec![Step::Events(events.clone())];
        assert_eq!(
            apply(&log, &crate::FixedKey, steps, true, 0).unwrap(),
            (false, 6)
        );
        assert_eq!(log.len(), 6, "only the event after the range is appended");
        assert_eq!(log.get_seq(5).unwrap().unwrap().id, events[5].id);
    }

    /// A seal marker cuts where it stands in the stream, once: delivered again after a crash
    /// (whether the crash came before or after the seal), it cuts nowhere else.
    #[test]
    fn a_seal_marker_cuts_at_its_place_in_the_stream_once() {
        let events: Vec<AuditEvent> = (0..5).map(event).collect();
        let open = |dir: &std::path::Path| {
            AuditLog::open(LogConfig::new(dir, [3; 32], "test.example/log")).unwrap()
        };
        // Applied whole, then delivered again from the start (a crash before `applied`).
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        assert_eq!(
            apply(&log, &crate::FixedKey, fetch(&events), false, 0).unwrap(),
            (false, 5)
        );
        assert_eq!(log.partition_ends(), vec![3]);
        assert_eq!(
            apply(&log, &crate::FixedKey, fetch(&events), true, 0).unwrap(),
            (true, 5)
        );
        assert_eq!((log.partition_ends(), log.len()), (vec![3], 5));
        // A crash after the first three events, before the seal: the seal is made on delivery.
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        log.append_all(events[..3].to_vec()).unwrap();
        assert_eq!(
            apply(&log, &crate::FixedKey, fetch(&events), true, 0).unwrap(),
            (false, 5)
        );
        assert_eq!((log.partition_ends(), log.len()), (vec![3], 5));
    }

    #[test]
    fn a_delivery_lost_in_flight_stops_the_replica_before_it_appends_past_it() {
        assert_eq!(next_delivery(0, 1), Ok(1));
        assert_eq!(next_delivery(41, 42), Ok(42));
        // Deliveries 43..=52 went to a pull that expired: nothing after them is appended.
        assert!(next_delivery(42, 53).is_err_and(|e| e.contains("lost in flight")));
        // A delivery seen again is no progress either.
        assert!(next_delivery(42, 42).is_err());
    }
}
