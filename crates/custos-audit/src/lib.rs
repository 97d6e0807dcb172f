//! The audit trail of Custos: the audit record and its operation catalogue, the audit policy
//! (settings → "is this audited?"), the durable append-only log with group commit in time
//! partitions, the per-partition search index derived from it, integrity (Merkle tree, signed
//! checkpoints, proofs, verification) and retention.
//!
//! This crate knows nothing of HTTP, of the records platform or of an async runtime: the log is
//! a blocking API driven by one writer thread, so the server calls it from blocking tasks.
#![warn(missing_docs)]

mod batch;
mod canonical;
mod checkpoint;
mod codec;
mod error;
mod event;
pub mod files;
mod handles;
mod ids;
mod index;
mod integrity;
mod leaves;
mod log;
mod merkle;
mod open;
mod partition;
mod policy;
mod postings;
mod readers;
mod retention;
mod runs;
mod sealed;
mod shown;
mod table;
mod treefile;
mod verify;
mod writer;

pub use batch::{batch_len_max, decode_batch, encode_batch};
pub use canonical::{
    canonical_json, event_leaf_hash, event_value, format_creation_time, write_canonical,
};
pub use checkpoint::{
    Checkpoint, CheckpointSigner, IdsDigest, check_verifier_key, checkpoint_body, handover_key,
    verify_note, verify_note_chained,
};
pub use error::{Error, Result};
pub use event::{
    AuditEvent, Category, Change, EntityCategory, Operation, Origin, RecordType, ResultStatus,
    UserType,
};
pub use index::{SearchPage, SearchQuery, SearchSort, SortCursor, SortKey, SortValue, SortedPage};
pub use integrity::{Adopted, ClusterKeys, InclusionProof};
pub use log::{INDEX_BYTES_DEFAULT, LogConfig, OPEN_FILES_DEFAULT, Seq};
pub use merkle::{
    Hash, InMemory, LeafSource, MerkleTree, TILE_HEIGHT, TILE_LEAVES, empty_root, leaf_hash,
    node_hash, verify_consistency, verify_inclusion,
};
pub use policy::{AuditPolicy, EntityAuditFlags, InstanceAuditSettings};
pub use retention::{KEEP_FOREVER, PurgedPartition, RetentionPolicy, RetentionRule};
pub use shown::visible;
pub use verify::{UNSIGNED_MARGIN_US, VerifyReport, verify_log, verify_log_against};
pub use writer::{
    AuditLog, Done, FSYNC_BUCKETS_US, LogStats, PurgedRange, ReportSummary, lowest_priority,
};

/// The cores this process may run on (1 when that cannot be told): how many threads a page's
/// records are read on (`writer`) and how many segments `verify` reads at once. Here rather than
/// in either, which must not import the other.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
