//! One checkpoint signer per cluster. Every audit node builds the same tree from the stream, and
//! every node holds the cluster's one signing key (kept in the shared directory); one of them
//! at a time — the holder of a lease in the JetStream key-value bucket `CUSTOS_LEASES` — signs
//! checkpoints of its log on the checkpoint interval and publishes each signed note into the
//! audit stream, after the events it covers. Every audit node, the signer included, meets the
//! note in stream order and adopts it only if its own tree of that size has the signed root
//! and its record ids the signed digest (`custos_audit::AuditLog::adopt_checkpoint`): a node
//! whose log differs stops following the stream and says so (`/healthz`), never signs a
//! different history. So a verifier pins one key for the cluster, and a proof from any audit
//! node is against a checkpoint every audit node holds.
//!
//! The lease is a key whose value is the signer's node id, in a bucket whose values expire after
//! `LEASE_TTL`. The signer renews it (a compare-and-set on its revision) every `LEASE_RENEW`;
//! another node takes it (`create`, which only succeeds when the key is absent) once it has
//! expired. A signer counts as one only within `LEASE_RENEW` of its last renewal, well inside
//! the TTL, so two nodes sign at once only around a partition — and then both sign the same
//! tree with the same key: a note of a given size is the same bytes whoever signs it (Ed25519
//! signatures are deterministic), so nothing inconsistent can be signed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use custos_audit::AuditLog;
use tokio::time::Instant;

/// The key-value bucket of the cluster's leases.
const BUCKET: &str = "CUSTOS_LEASES";
/// How long a lease outlives its last renewal.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the signer renews its lease; it stops signing as soon as a renewal fails.
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// The header that marks a message of the audit stream as a signed checkpoint; its value is
/// the tree size.
pub(crate) const CHECKPOINT_HEADER: &str = "Custos-Checkpoint";

/// Who signs, as this node last saw it.
#[derive(Debug, Default, Clone)]
pub struct SignerStatus {
    /// The node holding the lease, when known.
    pub signer: Option<String>,
    /// Whether this node signs.
    pub signing: bool,
    /// The largest checkpoint this node published.
    pub published: u64,
    /// Events in the archive of sealed partitions, as this node last saw it while signing.
    pub archived: u64,
    /// The stream sequence up to which this node last trimmed the stream behind the archive.
    pub trimmed_through: u64,
}

/// This node's hold on the lease.
struct Lease {
    store: kv::Store,
    key: String,
    node_id: String,
    /// The revision of this node's last renewal, and when it was made.
    held: Option<(u64, Instant)>,
}

impl Lease {
    /// Whether this node holds the lease now: renews it when due, takes it when it is free.
    /// Returns the holder, when known. Every question to the bucket is bounded by `KV_WAIT`: a
    /// bucket that does not answer (a NATS server lost, an election) counts as not held.
    async fn hold(&mut self) -> Option<String> {
        if let Some((revision, at)) = self.held {
            if at.elapsed() < LEASE_RENEW {
                return Some(self.node_id.clone());
            }
            self.held = None;
            let renewed = self
                .store
                .update(&self.key, self.node_id.clone().into(), revision);
            match answer(renewed).await {
                Ok(revision) => {
                    self.held = Some((revision, Instant::now()));
                    return Some(self.node_id.clone());
                }
                Err(error) => {
                    tracing::warn!(%error, "the checkpoint signer's lease was not renewed");
                }
            }
        }
        let created = self.store.create(&self.key, self.node_id.clone().into());
        match answer(created).await {
            Ok(revision) => {
                tracing::info!(node = %self.node_id, "this node signs the cluster's checkpoints");
                self.held = Some((revision, Instant::now()));
                return Some(self.node_id.clone());
            }
            Err(error) => tracing::debug!(%error, "the checkpoint signer's lease is held"),
        }
        // Held: by another node, or by this one before it restarted or missed a renewal.
        let entry = answer(self.store.entry(&self.key)).await.ok().flatten()?;
        let holder = String::from_utf8_lossy(&entry.value).into_owned();
        if holder == self.node_id && entry.operation == kv::Operation::Put {
            let taken = self
                .store
                .update(&self.key, self.node_id.clone().into(), entry.revision);
            let revision = answer(taken).await.ok()?;
            self.held = Some((revision, Instant::now()));
        }
        Some(holder)
    }
}

/// Longest wait for JetStream to answer one question about the bucket.
const KV_WAIT: Duration = Duration::from_secs(5);

/// The bucket's answer within `KV_WAIT`, or why there is none.
async fn answer<T, E: std::fmt::Display>(
    question: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(KV_WAIT, question).await {
        Ok(answered) => answered.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", KV_WAIT.as_secs())),
    }
}

/// Opens (or makes) the bucket of leases. The bucket's stream is made here, as a key-value
/// bucket's is (`KV_<bucket>`, one value per key, values expiring after `LEASE_TTL`): the
/// client's own `create_key_value` first asks for the account's limits in a form Debian's
/// `nats-server` 2.9 does not answer.
async fn bucket(jetstream: &jetstream::Context, replicas: usize) -> Result<kv::Store, String> {
    if let Ok(store) = answer(jetstream.get_key_value(BUCKET)).await {
        return Ok(store);
    }
    answer(jetstream.get_or_create_stream(stream::Config {
        name: format!("KV_{BUCKET}"),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        max_age: LEASE_TTL,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }))
    .await
    .map_err(|e| format!("the lease bucket {BUCKET}: {e}"))?;
    answer(jetstream.get_key_value(BUCKET))
        .await
        .map_err(|e| format!("the lease bucket {BUCKET}: {e}"))
}

/// What the signer task needs.
pub(crate) struct SignerTask {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) replicas: usize,
    pub(crate) subject: String,
    pub(crate) tenant_id: uuid::Uuid,
    pub(crate) node_id: String,
    pub(crate) log: Arc<AuditLog>,
    pub(crate) keys: Arc<dyn crate::KeyStore>,
    pub(crate) interval: Duration,
    pub(crate) status: Arc<Mutex<SignerStatus>>,
}

/// When an admin asked for a rotation (the key store's incoming seed), hands the cluster's key
/// over: this node's log signs the handover (both keys, over its tree) and takes the new key,
/// then the node and the key store keep it; returns the handover note, to be published before
/// anything the new key signs. A handover this log made (or took from the stream) before the
/// key store heard of it — a restart in between — is found again in the log. Call from
/// blocking code.
fn hand_over(log: &AuditLog, keys: &dyn crate::KeyStore) -> Result<Option<(u64, String)>, String> {
    let Some(seed) = keys.incoming() else {
        return Ok(None);
    };
    let size = if log.verifier_key() == log.verifier_key_for(seed) {
        log.verifier_keys()
            .last()
            .map(|(size, _)| *size)
            .ok_or("the log has no key chain")?
    } else {
        keys.switching(seed)?;
        log.rotate_key(seed).map_err(|e| e.to_string())?
    };
    let chain = log.verifier_keys();
    let retired = chain
        .iter()
        .rev()
        .nth(1)
        .map(|(_, key)| key.clone())
        .ok_or("the log has no key before the incoming one")?;
    keys.switched(seed, Some(&retired))?;
    let note = log
        .checkpoint_at(size)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the log has no handover of size {size}"))?;
    Ok(Some((size, note)))
}

/// Runs for as long as the process: takes the lease when it is free, and while holding it signs
/// a checkpoint every `interval` when the log has grown and publishes it into the stream.
pub(crate) async fn run(task: SignerTask) {
    let store = loop {
        match bucket(&task.jetstream, task.replicas).await {
            Ok(store) => break store,
            Err(error) => {
                tracing::warn!(%error, "waiting for the lease bucket");
                tokio::time::sleep(LEASE_RENEW).await;
            }
        }
    };
    let mut lease = Lease {
        store,
        key: format!("checkpoint-signer.{}", task.tenant_id),
        node_id: task.node_id.clone(),
        held: None,
    };
    let mut published = 0;
    // A key handover signed and not yet in the stream: nothing the new key signs goes before it.
    let mut handover: Option<(u64, String)> = None;
    tracing::debug!("the checkpoint signer runs");
    loop {
        tokio::time::sleep(task.interval.min(LEASE_RENEW)).await;
        let holder = lease.hold().await;
        let signing = lease.held.is_some();
        {
            let mut status = task.status.lock().expect("signer status lock");
            status.signer = holder;
            status.signing = signing;
        }
        if !signing {
            continue;
        }
        if handover.is_none() {
            let (log, keys) = (task.log.clone(), task.keys.clone());
            match tokio::task::spawn_blocking(move || hand_over(&log, &*keys)).await {
                Ok(Ok(made)) => handover = made,
                Ok(Err(error)) => tracing::error!(%error, "the cluster's key was not handed over"),
                Err(error) => tracing::error!(%error, "the key handover's thread failed"),
            }
        }
        if let Some((size, note)) = handover.take() {
            let id = format!("handover-{}-{size}", task.tenant_id);
            if let Err(error) = publish_note(&task, size, &note, &id).await {
                tracing::warn!(%error, size, "the key handover was not published");
                handover = Some((size, note));
                continue;
            }
            tracing::info!(size, "handed the cluster's checkpoint key over");
            published = published.max(size);
        }
        let log = task.log.clone();
        let signed = match tokio::task::spawn_blocking(move || log.sign_for_cluster()).await {
            Ok(Ok(signed)) => signed,
            Ok(Err(error)) => {
                tracing::error!(%error, "the cluster's checkpoint could not be signed");
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the checkpoint signer's thread failed");
                continue;
            }
        };
        // The latest, whether signed now or before and not yet published (NATS was away).
        let Some((size, note)) = signed.filter(|(size, _)| *size > published) else {
            continue;
        };
        tracing::debug!(size, "publishing a signed checkpoint");
        let id = format!("checkpoint-{}-{size}", task.tenant_id);
        match publish_note(&task, size, &note, &id).await {
            Ok(_) => {
                published = size;
                task.status.lock().expect("signer status lock").published = size;
            }
            Err(error) => tracing::warn!(%error, size, "a signed checkpoint was not published"),
        }
    }
}

/// Publishes the signed `note` of tree size `size` into the audit stream under message id `id`.
async fn publish_note(task: &SignerTask, size: u64, note: &str, id: &str) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert(CHECKPOINT_HEADER, size.to_string().as_str());
    crate::publisher::publish(
        &task.jetstream,
        &task.subject,
        note.to_string().into_bytes().into(),
        id,
        &headers,
    )
    .await
}
