//! The audit writer of a cluster node: it gathers the events of concurrent requests into group
//! commits, as the embedded log's writer does, and publishes each as one JetStream message;
//! the requests are answered only once JetStream acknowledges it — the message is then stored
//! on a quorum of the stream's replicas. No acknowledgement within the deadline (no quorum, no
//! server) and the requests are refused (503), exactly as a failed local append.
//!
//! A message is retried within the deadline under the same `Nats-Msg-Id`, so a publish that
//! did land before its acknowledgement was lost is not stored twice (JetStream drops the
//! duplicate within the stream's duplicate window).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::Context;
use async_nats::jetstream::message::PublishMessage;
use custos_audit::{AuditEvent, Done, Error};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most events in one message.
const EVENTS_MAX: usize = 4096;
/// Largest message, bytes: under the NATS server's default payload limit of 1 MiB.
pub(crate) const MESSAGE_BYTES_MAX: usize = 768 << 10;
/// Events waiting to be published; a full queue makes requests wait (back-pressure).
const QUEUE_EVENTS: usize = 16_384;
/// Longest a group commit waits for its acknowledgement, retries included.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// How often a publisher whose last group commit was refused asks whether the stream is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest one attempt waits for its acknowledgement before the message is sent again (under
/// its `Nats-Msg-Id`, so JetStream stores it once).
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);
/// Pause between two attempts at one message.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Group commits published and not yet acknowledged at once: while one waits for its
/// acknowledgement (a JetStream round trip to a quorum) the next is already on its way, so
/// throughput is not one commit per round trip (BENCHMARKS.md B7). JetStream gives them their
/// order in the stream, which is the log's order; each request still waits for its own.
const COMMITS_IN_FLIGHT: usize = 4;

struct Job {
    event: AuditEvent,
    done: Done,
}

/// The publishing side of a node.
pub struct Publisher {
    queue: mpsc::Sender<Job>,
    /// Why the last group commit was refused, until one succeeds.
    failure: Arc<Mutex<Option<String>>>,
}

fn unavailable(why: impl Into<String>) -> Error {
    Error::Unavailable(why.into())
}

impl Publisher {
    /// Starts the writer task, publishing to `subject` through `jetstream`.
    pub(crate) fn start(jetstream: Context, subject: String) -> Publisher {
        let (queue, jobs) = mpsc::channel(QUEUE_EVENTS);
        let failure = Arc::new(Mutex::new(None));
        tokio::spawn(run(jetstream, subject, jobs, failure.clone()));
        Publisher { queue, failure }
    }

    /// Queues `event` without blocking; `done` hears its stream sequence once JetStream holds
    /// it, or why not. When the queue is full the event comes back, for the caller to wait
    /// with [`Publisher::submit_blocking`] where it may block.
    pub fn try_submit(&self, event: AuditEvent, done: Done) -> Result<(), (Box<AuditEvent>, Done)> {
        match self.queue.try_send(Job { event, done }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job)) => Err((Box::new(job.event), job.done)),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                (job.done)(Err(unavailable("the audit publisher has stopped")));
                Ok(())
            }
        }
    }

    /// Publishes `events` and blocks until JetStream holds them all (they share group
    /// commits). Call from blocking code only, never on an async worker thread.
    pub fn submit_all_blocking(&self, events: Vec<AuditEvent>) -> custos_audit::Result<()> {
        let (answered, answers) = std::sync::mpsc::channel();
        let count = events.len();
        for event in events {
            let answered = answered.clone();
            let done: Done = Box::new(move |outcome| {
                let _ = answered.send(outcome);
            });
            self.queue
                .blocking_send(Job { event, done })
                .map_err(|_| unavailable("the audit publisher has stopped"))?;
        }
        drop(answered);
        for _ in 0..count {
            answers
                .recv()
                .map_err(|_| unavailable("the audit publisher stopped before answering"))??;
        }
        Ok(())
    }

    /// Publishes `event` and blocks until JetStream holds it. Call from blocking code only.
    pub fn submit_blocking(&self, event: AuditEvent) -> custos_audit::Result<()> {
        self.submit_all_blocking(vec![event])
    }

    /// `Err` with the reason while group commits are refused (the last one was).
    pub fn health(&self) -> Result<(), String> {
        match self.failure.lock().expect("failure lock").clone() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// The writer task: one message per group commit, up to `COMMITS_IN_FLIGHT` awaiting their
/// acknowledgement at once.
async fn run(
    jetstream: Context,
    subject: String,
    mut jobs: mpsc::Receiver<Job>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(COMMITS_IN_FLIGHT));
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            // While commits are refused no request may come to prove the stream is back: ask
            // it every few seconds, so that /healthz recovers with the quorum. (A commit in
            // flight may fail while this waits, so the question is asked whenever it times out.)
            None => tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                () = tokio::time::sleep(PROBE_INTERVAL) => {
                    let failing = failure.lock().expect("failure lock").is_some();
                    if failing && has_quorum(&jetstream).await {
                        *failure.lock().expect("failure lock") = None;
                    }
                    continue;
                }
            },
        };
        let mut bytes = custos_audit::batch_len_max(&first.event);
        let mut batch = vec![first];
        while batch.len() < EVENTS_MAX {
            let Ok(job) = jobs.try_recv() else {
                break;
            };
            let more = custos_audit::batch_len_max(&job.event);
            if bytes + more > MESSAGE_BYTES_MAX {
                held = Some(job);
                break;
            }
            bytes += more;
            batch.push(job);
        }
        let payload = bytes::Bytes::from(custos_audit::encode_batch(
            batch.iter().map(|job| &job.event),
        ));
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (jetstream, subject, failure) = (jetstream.clone(), subject.clone(), failure.clone());
        tokio::spawn(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let outcome = publish(&jetstream, &subject, payload, &id, &HeaderMap::new()).await;
            drop(permit);
            *failure.lock().expect("failure lock") = outcome.as_ref().err().cloned();
            if let Err(why) = &outcome {
                tracing::error!(error = %why, events = batch.len(), "audit events refused: JetStream did not take them");
            }
            for job in batch {
                (job.done)(outcome.clone().map_err(unavailable));
            }
        });
    }
}

/// Whether the audit stream has a leader and a majority of its replicas up to date: a server
/// can describe the stream from what it last knew even when no quorum remains, so being
/// answered is not enough.
async fn has_quorum(jetstream: &Context) -> bool {
    let Ok(stream) = jetstream.get_stream(crate::STREAM).await else {
        return false;
    };
    match &stream.cached_info().cluster {
        // One server, no replicas: it answered.
        None => true,
        Some(cluster) => {
            let members = 1 + cluster.replicas.len();
            let current = 1 + cluster
                .replicas
                .iter()
                .filter(|peer| peer.current && !peer.offline)
                .count();
            cluster.leader.is_some() && current * 2 > members
        }
    }
}

/// Publishes one message under `id` (its `Nats-Msg-Id`) with `headers`, retrying until the
/// deadline; its stream sequence, or why it was not stored.
pub(crate) async fn publish(
    jetstream: &Context,
    subject: &str,
    payload: bytes::Bytes,
    id: &str,
    headers: &HeaderMap,
) -> Result<u64, String> {
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    let mut last = String::from("no attempt finished");
    loop {
        let attempt = async {
            let message = PublishMessage::build()
                .headers(headers.clone())
                .payload(payload.clone())
                .message_id(id);
            let ack = jetstream
                .send_publish(subject.to_string(), message)
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(ATTEMPT_WAIT, ack).await {
                Ok(ack) => ack.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no acknowledgement within {} ms",
                    ATTEMPT_WAIT.as_millis()
                )),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(ack)) => return Ok(ack.sequence),
            Ok(Err(why)) => last = why,
            Err(_) => break,
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(format!(
        "the audit stream did not acknowledge within {} s (no quorum of NATS servers?): {last}",
        PUBLISH_DEADLINE.as_secs()
    ))
}
