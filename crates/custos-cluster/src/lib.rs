//! Custos beyond one machine (SPEC §1, ARCHITECTURE.md "Scale-out"): the audit log through a
//! NATS JetStream cluster. A node publishes each group commit of audit events to the stream
//! `CUSTOS_AUDIT` and answers its requests only once JetStream holds it on a quorum of disks
//! (`publisher.rs`); audit nodes follow the stream with a durable consumer and build their
//! searchable log from it, the same on every node (`replica.rs`); one node at a time signs
//! its checkpoints and every audit node adopts them after checking its own root
//! (`signer.rs`), and archives what its log has sealed in JetStream's object store, trimming the
//! stream behind it (`archive.rs`). Messages carry the events exactly in the log's own record
//! encoding (`custos_audit::encode_batch`).
//!
//! Replication and consensus are JetStream's; nothing here is home-made beyond the order of
//! operations.
#![warn(missing_docs)]

mod archive;
mod publisher;
mod replica;
mod signer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use custos_audit::AuditLog;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

pub use publisher::Publisher;
pub use signer::SignerStatus;

/// The stream every node publishes audit events to.
pub const STREAM: &str = "CUSTOS_AUDIT";
/// How long the stream remembers message ids to drop a message published twice.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long [`Cluster::seal`] waits for this node's replica to meet its marker.
pub const SEAL_WAIT: Duration = Duration::from_secs(60);
/// How long an audit read waits for this node's log to hold what the stream held when it was
/// asked ([`Cluster::caught_up`]) before it is refused.
pub const CAUGHT_UP_WAIT: Duration = Duration::from_secs(15);
/// How long a starting node keeps trying to reach the cluster and its stream.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Where the cluster keeps its checkpoint keys (the shared directory) and this node its own
/// copy (its key file): what a rotation of the cluster's key goes through (`signer.rs` hands
/// over, `replica.rs` takes the handover).
pub trait KeyStore: custos_audit::ClusterKeys + Send + Sync {
    /// The seed of a rotation an admin asked for that no node has handed over to yet.
    fn incoming(&self) -> Option<[u8; 32]>;
    /// Keeps `seed` where this node's restart finds it, before its log switches to it.
    fn switching(&self, seed: [u8; 32]) -> Result<(), String>;
    /// This node's log switched to `seed`: it becomes the node's key. `retired` is the key it
    /// replaced when this node made the handover (the signer): the cluster's key in force is
    /// then `seed`, and `retired` joins the keys it signed with before.
    fn switched(&self, seed: [u8; 32], retired: Option<&str>) -> Result<(), String>;
}

/// A cluster whose key is never rotated (the benchmark's).
pub struct FixedKey;

impl custos_audit::ClusterKeys for FixedKey {
    fn seed_of(&self, _: &str) -> Option<[u8; 32]> {
        None
    }

    fn retired(&self) -> Vec<String> {
        Vec::new()
    }
}

impl KeyStore for FixedKey {
    fn incoming(&self) -> Option<[u8; 32]> {
        None
    }

    fn switching(&self, _: [u8; 32]) -> Result<(), String> {
        Ok(())
    }

    fn switched(&self, _: [u8; 32], _: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

/// Where the cluster is and who this node is (`custos serve --nats … --node-id …`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS servers' URLs; the client tries them all and follows the cluster.
    pub nats_urls: Vec<String>,
    /// This node's name: its NATS connection and its durable consumer are named after it.
    pub node_id: String,
    /// Replicas of the audit stream (3 on a 3-node cluster).
    pub replicas: usize,
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A flag is wrong.
    #[error("{0}")]
    Config(String),
    /// NATS or JetStream did not answer as it should.
    #[error("{0}")]
    Nats(String),
}

/// This node's link to the cluster.
pub struct Cluster {
    config: ClusterConfig,
    keys: Arc<dyn KeyStore>,
    /// This tenant's subject of the audit stream.
    subject: String,
    stream: stream::Stream,
    jetstream: jetstream::Context,
    tenant_id: Uuid,
    publisher: Publisher,
    replica: Arc<Mutex<replica::ReplicaStatus>>,
    /// Where the replica's appends left the log against the stream, for the archive.
    marks: Arc<Mutex<archive::Marks>>,
    /// The last stream sequence the replica has appended, for those waiting on it.
    through: watch::Sender<u64>,
    signer: Arc<Mutex<SignerStatus>>,
}

impl ClusterConfig {
    /// Checks the node id: letters, digits, `-` and `_` (it names a NATS consumer).
    fn check(&self) -> Result<(), ClusterError> {
        let id = &self.node_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ClusterError::Config(format!(
                "--node-id '{id}' must be 1 to 64 letters, digits, '-' or '_'"
            )));
        }
        if self.nats_urls.is_empty() {
            return Err(ClusterError::Config("--nats needs at least one URL".into()));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ClusterError::Config(
                "--nats-replicas must be between 1 and 5 (JetStream's limit)".into(),
            ));
        }
        Ok(())
    }
}

impl Cluster {
    /// Joins the cluster: connects to NATS, makes sure the audit stream exists (file storage,
    /// the configured replicas, a duplicate window) and starts this node's publisher for
    /// tenant `tenant_id`. Keeps trying for a minute while the servers start or elect their
    /// leaders.
    pub async fn join(
        config: ClusterConfig,
        tenant_id: Uuid,
        keys: Arc<dyn KeyStore>,
    ) -> Result<Cluster, ClusterError> {
        config.check()?;
        let deadline = Instant::now() + START_DEADLINE;
        let options = async_nats::ConnectOptions::new()
            .name(format!("custos-{}", config.node_id))
            .retry_on_initial_connect();
        let client = tokio::time::timeout_at(
            deadline,
            async_nats::connect_with_options(config.nats_urls.clone(), options),
        )
        .await
        .map_err(|_| {
            ClusterError::Nats(format!(
                "no NATS server of {:?} answered within a minute",
                config.nats_urls
            ))
        })?
        .map_err(|e| ClusterError::Nats(format!("connecting to NATS: {e}")))?;
        let jetstream = jetstream::new(client);
        let wanted = stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["custos.audit.>".to_string()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let stream = loop {
            match jetstream.get_or_create_stream(wanted.clone()).await {
                Ok(stream) => break stream,
                Err(error) if Instant::now() < deadline => {
                    tracing::info!(%error, "waiting for JetStream to take the audit stream");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    return Err(ClusterError::Nats(format!(
                        "the audit stream {STREAM}: {error}"
                    )));
                }
            }
        };
        let subject = format!("custos.audit.{tenant_id}");
        let publisher = Publisher::start(jetstream.clone(), subject.clone());
        Ok(Cluster {
            config,
            keys,
            subject,
            stream,
            jetstream,
            tenant_id,
            publisher,
            replica: Arc::new(Mutex::new(replica::ReplicaStatus::default())),
            marks: Arc::new(Mutex::new(archive::Marks::default())),
            through: watch::Sender::new(0),
            signer: Arc::new(Mutex::new(SignerStatus::default())),
        })
    }

    /// Where this node publishes its audit events.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Makes this node an audit node: follows the stream into `log`, from the sequence the
    /// file `applied` says the log holds (the start of the stream when there is none), after
    /// importing what the archive holds beyond the log.
    pub fn replicate_into(&self, log: Arc<AuditLog>, applied: std::path::PathBuf) {
        tokio::spawn(replica::follow(replica::Follow {
            jetstream: self.jetstream.clone(),
            stream: self.stream.clone(),
            replicas: self.config.replicas,
            consumer_name: format!("audit-{}", self.config.node_id),
            subject: self.subject.clone(),
            tenant_id: self.tenant_id,
            log,
            applied,
            status: self.replica.clone(),
            marks: self.marks.clone(),
            through: self.through.clone(),
            keys: self.keys.clone(),
        }));
    }

    /// While this node signs the cluster's checkpoints, it also puts what `log` has sealed into
    /// JetStream's object store and trims the stream behind it (`archive.rs`); `dir` is a
    /// folder of this node's own for the object being written. `log` must be the one
    /// [`Cluster::replicate_into`] builds.
    pub fn archive_sealed(&self, log: Arc<AuditLog>, dir: std::path::PathBuf) {
        tokio::spawn(archive::run(archive::ArchiveTask {
            jetstream: self.jetstream.clone(),
            stream: self.stream.clone(),
            replicas: self.config.replicas,
            subject: self.subject.clone(),
            tenant_id: self.tenant_id,
            log,
            marks: self.marks.clone(),
            signer: self.signer.clone(),
            dir,
        }));
    }

    /// Makes this node a candidate to sign the cluster's checkpoints: while it holds the
    /// signer's lease it signs `log` every `interval` and publishes each note into the stream,
    /// for every audit node to adopt (`signer.rs`). `log` must not sign its own
    /// (`LogConfig::signs_own_checkpoints`) and must be the one [`Cluster::replicate_into`]
    /// builds.
    pub fn sign_checkpoints(&self, log: Arc<AuditLog>, interval: Duration) {
        tokio::spawn(signer::run(signer::SignerTask {
            jetstream: self.jetstream.clone(),
            replicas: self.config.replicas,
            subject: self.subject.clone(),
            tenant_id: self.tenant_id,
            node_id: self.config.node_id.clone(),
            log,
            keys: self.keys.clone(),
            interval,
            status: self.signer.clone(),
        }));
    }

    /// Ends the active partition of every audit node after the same event (a support engineer's
    /// `seal-partition`): publishes a seal marker into the stream, which every replica meets
    /// after the same events and seals there (`replica.rs`), and waits until this node's
    /// replica has (at most [`SEAL_WAIT`]). A node never seals alone: its partitions would no
    /// longer be the others', and a retention purge names one partition for every node.
    pub async fn seal(&self) -> Result<(), ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(replica::SEAL_HEADER, "1");
        let id = format!("seal-{}-{}", self.tenant_id, Uuid::new_v4());
        let sequence = publisher::publish(
            &self.jetstream,
            &self.subject,
            Default::default(),
            &id,
            &headers,
        )
        .await
        .map_err(ClusterError::Nats)?;
        self.reached(sequence, Instant::now() + SEAL_WAIT)
            .await
            .map_err(|through| {
                ClusterError::Nats(format!(
                    "this node's audit replica did not reach the seal marker (stream sequence {sequence}) within {} s; it holds the stream through {through}",
                    SEAL_WAIT.as_secs()
                ))
            })
    }

    /// Waits until this node's log holds every message the audit stream held for this tenant
    /// when asked (at most `within`): an audit read on any node then sees every event that any
    /// node acknowledged before it began. `Err` when the stream cannot say where it ends or the
    /// log does not get there in time — a read from a log that is behind would leave out events
    /// without saying so.
    pub async fn caught_up(&self, within: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        let asked = tokio::time::timeout_at(
            deadline,
            self.stream.get_last_raw_message_by_subject(&self.subject),
        )
        .await
        .map_err(|_| {
            ClusterError::Nats(format!(
                "the audit stream did not say where it ends within {} s",
                within.as_secs()
            ))
        })?;
        let last = match asked {
            Ok(message) => message.sequence,
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
            Err(error) => {
                return Err(ClusterError::Nats(format!(
                    "the audit stream did not say where it ends: {error}"
                )));
            }
        };
        self.reached(last, deadline).await.map_err(|through| {
            ClusterError::Nats(format!(
                "this node's audit log holds the stream through sequence {through} of {last} and did not catch up within {} s; try again, or another node",
                within.as_secs()
            ))
        })
    }

    /// Waits until the replica has appended the stream through `sequence`; `Err` with where it
    /// is at `deadline`.
    async fn reached(&self, sequence: u64, deadline: Instant) -> Result<(), u64> {
        let mut through = self.through.subscribe();
        let reached = tokio::time::timeout_at(deadline, through.wait_for(|at| *at >= sequence))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if reached {
            Ok(())
        } else {
            Err(*self.through.borrow())
        }
    }

    /// Who signs the cluster's checkpoints, as this node last saw it.
    pub fn signer(&self) -> SignerStatus {
        self.signer.lock().expect("signer status lock").clone()
    }

    /// Why the last retention purge claimed in the stream was not carried out on this node,
    /// when it was not (its log then keeps more than the others).
    pub fn retention_refused(&self) -> Option<String> {
        self.replica.lock().expect("replica lock").retention.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// `Err` with the reason while this node refuses audited work (its group commits are not
    /// acknowledged) or its log has stopped following the stream.
    pub fn health(&self) -> Result<(), String> {
        self.publisher.health()?;
        match &self.replica.lock().expect("replica lock").failure {
            Some(why) => Err(format!(
                "the audit replica is not following the stream: {why}"
            )),
            None => Ok(()),
        }
    }
}
