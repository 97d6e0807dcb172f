//! Building audit events on the request path: the draft a handler fills in, and the field
//! changes of a write (only audited attributes, old and new values); and the draft of an event
//! by the system through the backend.

use custos_audit::{Change, EntityCategory, Operation, Origin, ResultStatus, UserType};
use custos_records::{EntityDef, Record, Value};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::credentials::Caller;

/// Attributes the platform maintains on every write; their churn is not a field change.
const SYSTEM_MAINTAINED: [&str; 4] = [
    "modifiedon",
    "modifiedby",
    "modifiedonbehalfby",
    "versionnumber",
];

/// Marks a response whose refusal is already in the log, so that the catch-all of
/// `answer::record_refusals` does not record it twice.
#[derive(Debug, Clone, Copy)]
pub struct Recorded;

/// An audit event being put together by a handler; the state stamps id, time and tenant.
#[derive(Debug, Clone)]
pub struct EventDraft {
    /// The message.
    pub operation: Operation,
    /// Instance name; empty for tenant-level events.
    pub instance: String,
    /// Acting user id.
    pub user_id: String,
    /// Acting user name.
    pub user_upn: String,
    /// Acting user type.
    pub user_type: UserType,
    /// The real caller when acting on behalf of another (a support engineer, the user whose
    /// change made a process run); empty otherwise.
    pub caller_id: String,
    /// Client IP.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
    /// Door the request came through.
    pub origin: Origin,
    /// Request correlation id.
    pub correlation_id: String,
    /// Sign-in session.
    pub session_id: String,
    /// Client's request id.
    pub client_request_id: String,
    /// Outcome.
    pub status: ResultStatus,
    /// Error code for failures and denials.
    pub error_code: String,
    /// Entity touched.
    pub entity_name: String,
    /// Its category.
    pub entity_category: EntityCategory,
    /// Records touched or seen.
    pub record_ids: Vec<Uuid>,
    /// Query or view.
    pub query: String,
    /// Records returned or affected.
    pub result_count: u64,
    /// Field changes.
    pub changes: Vec<Change>,
    /// Operation-specific JSON.
    pub details: String,
}

impl EventDraft {
    /// A draft for `operation` with the request's origin facts; origin `Api`, status succeeded.
    pub fn new(operation: Operation, context: &RequestContext) -> EventDraft {
        EventDraft {
            operation,
            instance: String::new(),
            user_id: String::new(),
            user_upn: String::new(),
            user_type: UserType::Regular,
            caller_id: String::new(),
            client_ip: context.client_ip.clone(),
            user_agent: context.user_agent.clone(),
            origin: context.origin,
            correlation_id: context.correlation_id.clone(),
            session_id: String::new(),
            client_request_id: context.client_request_id.clone(),
            status: ResultStatus::Succeeded,
            error_code: String::new(),
            entity_name: String::new(),
            entity_category: EntityCategory::None,
            record_ids: Vec::new(),
            query: String::new(),
            result_count: 0,
            changes: Vec::new(),
            details: String::new(),
        }
    }

    /// Records who acts. A support engineer reaches customer data only through the internal
    /// management tool: their requests are the tool's (origin `SupportTool`) unless they are
    /// backend commands.
    pub fn set_caller(&mut self, caller: &Caller) {
        self.user_id = caller.principal.id.to_string();
        self.user_upn = caller.principal.upn.clone();
        self.user_type = caller.user_type();
        self.session_id = caller.session_id.to_string();
        if self.user_type == UserType::DcAdmin && self.origin != Origin::Backend {
            self.origin = Origin::SupportTool;
        }
    }

    /// Records the entity acted on.
    pub fn set_entity(&mut self, entity: &EntityDef) {
        self.entity_name = entity.logical_name.clone();
        self.entity_category = entity_category(entity.category);
    }
}

/// The audit crate's category for a records entity category.
pub fn entity_category(category: custos_records::EntityCategory) -> EntityCategory {
    match category {
        custos_records::EntityCategory::OutOfBox => EntityCategory::OutOfBox,
        custos_records::EntityCategory::Custom => EntityCategory::Custom,
        custos_records::EntityCategory::Admin => EntityCategory::Admin,
        custos_records::EntityCategory::Other => EntityCategory::Other,
    }
}

fn json_text(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.to_json().to_string()),
    }
}

/// The changes between two versions of a record, limited to the attributes `audited` admits
/// (the policy's published attribute flags):
/// every non-empty value of a created or deleted record, every changed value of an updated one.
pub fn changes(
    entity: &EntityDef,
    before: Option<&Record>,
    after: Option<&Record>,
    audited: impl Fn(&str) -> bool,
) -> Vec<Change> {
    let mut out = Vec::new();
    for attribute in &entity.attributes {
        let name = attribute.logical_name.as_str();
        if !audited(name) {
            continue;
        }
        let old = json_text(before.and_then(|r| r.values.get(name)));
        let new = json_text(after.and_then(|r| r.values.get(name)));
        let is_update = before.is_some() && after.is_some();
        if old == new || (is_update && SYSTEM_MAINTAINED.contains(&name)) {
            continue;
        }
        out.push(Change {
            attribute: attribute.web_name(),
            old,
            new,
        });
    }
    out
}

/// A draft of an event by the system through the backend.
pub fn backend_draft(operation: Operation) -> EventDraft {
    let context = RequestContext {
        client_ip: String::new(),
        user_agent: "custos".into(),
        correlation_id: Uuid::new_v4().to_string(),
        client_request_id: String::new(),
        origin: Origin::Backend,
    };
    let mut draft = EventDraft::new(operation, &context);
    draft.user_upn = "system".into();
    draft.user_type = UserType::System;
    draft.origin = Origin::Backend;
    draft
}
