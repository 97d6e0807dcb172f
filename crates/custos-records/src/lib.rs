//! The records platform of Custos: tenants and instances, entity metadata with draft → publish,
//! typed record values, OData query options (`$filter` and friends) compiled to parameterised
//! SQL, the record store (SQLite embedded) behind the [`RecordStore`] trait, the tenant directory
//! of principals and role assignments, and privilege checks.
//!
//! This crate knows nothing of HTTP or of the audit log. Write operations take a `before_commit`
//! hook that runs inside the transaction, which is how the server makes a change's audit event
//! durable before the change is committed.
#![warn(missing_docs)]

mod apply;
mod caseless;
#[cfg(test)]
mod contract;
mod directory;
mod engine;
mod error;
mod fetchxml;
mod filter;
mod keys;
mod metadata;
mod options;
mod pg;
mod security;
mod seed;
mod sql;
mod sqlite;
mod store;
mod value;
mod write;

pub use apply::{AGGREGATE_RECORDS_MAX, Aggregate, Apply, Method, Row, aggregate, read_apply};
pub use caseless::{compare as compare_without_case, fold as fold_case, same_without_case};
pub use directory::{Change, Directory, InstanceInfo, NewPrincipal, Principal};
pub use engine::Store;
pub use error::{Error, Result};
pub use fetchxml::{FetchQuery, SIMPLE_PAGING_MAX, paging_cookie, read_fetch};
pub use filter::{
    CompareOp, Filter, FilterContext, Literal, QUERY_FUNCTIONS, QueryFunctionValue, StringFunction,
    parse_filter,
};
pub use keys::{RecordKey, record_key};
pub use metadata::{
    AttributeDef, AttributeType, Catalog, ChoiceOption, EntityCategory, EntityDef, EntityKey,
    KEY_ATTRIBUTES_MAX, KEYS_MAX, Navigation, OnDelete, is_custom_name,
};
pub use options::{
    Expand, OrderBy, PAGE_SIZE_MAX, PageCursor, QueryOptions, check_custom_option, page_size,
    parse_query_options, parse_query_options_at,
};
pub use pg::{PgStore, Postgres, database_address, trust_postgres_ca};
pub use security::{BuiltInRole, Grants, Privilege, SecurityRole, allows, uncovered};
pub use seed::{
    EntityNames, ORGANIZATION_ENTITY, ROLE_IDS, SHARE_ENTITY, custom_entity, display_name,
    entity_names, seed_entities, seed_views,
};
pub use sql::check_query;
pub use sqlite::{Sqlite, SqliteStore};
pub use store::{
    BeforeAttributeDelete, BeforeCommit, BeforeCommitAll, BeforeEntityDelete, ChangeFailed,
    ImportRow, LookupNaming, Record, RecordChange, RecordPage, RecordQuery, RecordStore,
    WriteContext, WriteMode, WriteOutcome,
};
pub use value::{Value, datetime_text};
