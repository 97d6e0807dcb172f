//! Processes and plug-in steps (SPEC §3) that really run.
//!
//! - A process (`workflows`) reacts to a record event of its `primaryentity` — `triggeron`
//!   `create`, `update` or `delete` — with an action: `setfield` (sets `fieldname` to
//!   `fieldvalue` on the record) or `webhook` (posts the record to `webhookurl`).
//! - A plug-in step (`sdkmessageprocessingsteps`) posts the record to its `webhookurl` on a
//!   message (`sdkmessage` `Create`, `Update` or `Delete`) of its `primaryentity`.
//!
//! Both are created inactive (`statecode` 0) and run only once activated (`statecode` 1);
//! activating and deactivating are audited (`ActivateProcess`, `DeactivatePlugin`, …). They
//! run after the record's own write commits and before its request is answered, as the system
//! on behalf of the user (`CallerId`): each run is a `RunProcess` / `RunPlugin` event (origin
//! `Backend`), always recorded — with the field change it made, or with the payload a webhook
//! is sent, durable before it leaves (the webhook outbox delivers it from the log). A process's
//! own change does not start processes again (depth 1).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use custos_audit::{AuditEvent, Operation, Origin, UserType};
use custos_records::{
    Catalog, EntityDef, Record, RecordStore, Value, WriteContext, WriteMode, WriteOutcome,
    parse_query_options,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::PlatformState;
use custos_http::blocking;
use custos_http::draft::{EventDraft, changes};
use custos_http::error::AppError;
use custos_http::state::{AppState, Instance};
use custos_http::webhook::Outbox;

/// The directory setting of the outbox's cursor.
pub(crate) const OUTBOX_CURSOR: &str = "automation.delivered";

/// The outbox of process and plug-in webhooks.
pub(crate) const OUTBOX: Outbox = Outbox {
    cursor: OUTBOX_CURSOR,
    operations: &[Operation::RunProcess, Operation::RunPlugin],
    user_agent: "custos-automation",
    call: webhook_call,
};

/// The active processes and plug-in steps of each instance: loaded on first use, reloaded
/// whenever one of them changes or the instance is restored, forgotten with the instance.
#[derive(Default)]
pub(crate) struct Automations(RwLock<HashMap<String, Arc<Vec<Automation>>>>);

impl Automations {
    /// The active automations of `instance`, read from its records when not yet loaded. Call
    /// from blocking code.
    pub(crate) fn of(
        &self,
        instance: &Instance,
    ) -> Result<Arc<Vec<Automation>>, custos_records::Error> {
        match self.cached(&instance.name) {
            Some(found) => Ok(found),
            None => self.refresh(instance),
        }
    }

    /// The active automations of instance `name`, when they are loaded.
    pub(crate) fn cached(&self, name: &str) -> Option<Arc<Vec<Automation>>> {
        self.0.read().expect("automations lock").get(name).cloned()
    }

    /// Reads the active automations of `instance` again, under the lock so that no load that
    /// began before a change can land after it. Call from blocking code.
    pub(crate) fn refresh(
        &self,
        instance: &Instance,
    ) -> Result<Arc<Vec<Automation>>, custos_records::Error> {
        let mut all = self.0.write().expect("automations lock");
        let active = Arc::new(load(&*instance.store)?);
        all.insert(instance.name.clone(), active.clone());
        Ok(active)
    }

    /// Forgets a deleted instance's automations (a new instance may take its name).
    pub(crate) fn forget(&self, instance: &str) {
        self.0.write().expect("automations lock").remove(instance);
    }

    /// Forgets what another node changed: an instance's automations when its store announced
    /// a change, every instance's when the instances or anything else may have changed; they
    /// are read again on next use.
    pub(crate) fn follow(&self, app: &AppState, change: custos_records::Change<'_>) {
        use custos_records::Change;
        let mut all = self.0.write().expect("automations lock");
        match change {
            Change::Store(schema) => all.retain(|name, _| {
                app.instance(name)
                    .is_some_and(|i| custos_http::state::pg_schema(i.organization_id) != schema)
            }),
            Change::Directory | Change::Anything => all.clear(),
            Change::Setting(_) => {}
        }
    }
}

/// Starts delivering the outbox of process and plug-in webhooks, from its cursor.
pub(crate) async fn start(state: &PlatformState) {
    let app = state.app().clone();
    let ready =
        custos_http::blocking(move || custos_http::webhook::init_cursor(&app, OUTBOX_CURSOR)).await;
    match ready {
        Ok(()) => {
            tokio::spawn(custos_http::webhook::follow(state.app().clone(), OUTBOX));
        }
        Err(error) => {
            tracing::error!(error = %error.message, "process and plug-in webhooks are off: their cursor could not be set");
        }
    }
}

/// A record event an automation reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    Create,
    Update,
    Delete,
}

impl Message {
    fn name(self) -> &'static str {
        match self {
            Message::Create => "Create",
            Message::Update => "Update",
            Message::Delete => "Delete",
        }
    }

    fn parse(text: &str) -> Option<Message> {
        [Message::Create, Message::Update, Message::Delete]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text))
    }
}

#[derive(Debug, Clone)]
enum Action {
    SetField { attribute: String, value: Value },
    Webhook { url: String },
}

/// An active process or plug-in step.
#[derive(Debug, Clone)]
pub(crate) struct Automation {
    id: Uuid,
    /// `workflow` or `sdkmessageprocessingstep`.
    kind: &'static str,
    name: String,
    entity: String,
    message: Message,
    action: Action,
}

/// Whether `entity` holds automations.
pub(crate) fn is_automation(entity: &str) -> bool {
    matches!(entity, "workflow" | "sdkmessageprocessingstep")
}

fn text(values: &std::collections::BTreeMap<String, Value>, name: &str) -> Option<String> {
    match values.get(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.trim().to_string()),
        _ => None,
    }
}

/// An automation record's definition, checked against the instance's entities: `Err` says
/// what is wrong with it.
pub(crate) fn definition(
    catalog: &Catalog,
    kind: &'static str,
    id: Uuid,
    values: &std::collections::BTreeMap<String, Value>,
) -> Result<Automation, String> {
    let name = text(values, "name").ok_or("a process or step needs a 'name'")?;
    let entity = text(values, "primaryentity")
        .ok_or("'primaryentity' is required: the logical name of the entity it reacts to")?;
    let definition = catalog
        .entity(&entity)
        .filter(|e| !is_automation(&e.logical_name))
        .ok_or_else(|| format!("primaryentity '{entity}' is not an entity it can react to"))?;
    let webhook = |values: &std::collections::BTreeMap<String, Value>| -> Result<Action, String> {
        let url = text(values, "webhookurl").ok_or("'webhookurl' is required")?;
        // The URL's form here; whether the server may reach its host is the outbound rule's
        // (`check_target` when it is written, and again at each call).
        custos_http::outbound::Rule {
            allow_private: true,
        }
        .check_url(&url, "webhookurl")
        .map_err(|e| e.message)?;
        Ok(Action::Webhook { url })
    };
    let (message, action) = if kind == "workflow" {
        let message = text(values, "triggeron")
            .as_deref()
            .and_then(Message::parse)
            .ok_or("'triggeron' must be create, update or delete")?;
        let action = match text(values, "actiontype").as_deref() {
            Some("setfield") => {
                if message == Message::Delete {
                    return Err(
                        "a process on delete cannot set a field of the deleted record".into(),
                    );
                }
                let field =
                    text(values, "fieldname").ok_or("'fieldname' is required for setfield")?;
                let attribute = definition
                    .attribute_by_web_name(&field)
                    .filter(|a| !a.read_only && a.logical_name != definition.primary_id())
                    .ok_or_else(|| {
                        format!("'{field}' is not a writable attribute of '{entity}'")
                    })?;
                let raw = match values.get("fieldvalue") {
                    Some(Value::String(text)) => text.clone(),
                    _ => String::new(),
                };
                let value = Value::from_text(attribute, &raw).map_err(|e| e.to_string())?;
                Action::SetField {
                    attribute: attribute.logical_name.clone(),
                    value,
                }
            }
            Some("webhook") => webhook(values)?,
            _ => return Err("'actiontype' must be setfield or webhook".into()),
        };
        (message, action)
    } else {
        let message = text(values, "sdkmessage")
            .as_deref()
            .and_then(Message::parse)
            .ok_or("'sdkmessage' must be Create, Update or Delete")?;
        (message, webhook(values)?)
    };
    Ok(Automation {
        id,
        kind,
        name,
        entity,
        message,
        action,
    })
}

/// The name of an active process that sets `attribute` of `entity`, if one does.
pub(crate) fn setter_of(
    state: &PlatformState,
    instance: &Instance,
    entity: &str,
    attribute: &str,
) -> Option<String> {
    state
        .own
        .automations
        .of(instance)
        .ok()?
        .iter()
        .find(|a| {
            a.entity == entity
                && matches!(&a.action, Action::SetField { attribute: set, .. } if set == attribute)
        })
        .map(|a| a.name.clone())
}

/// The active automations of a store, read from its records.
pub(crate) fn load(store: &dyn RecordStore) -> Result<Vec<Automation>, custos_records::Error> {
    let options = parse_query_options([("$filter", "statecode eq 1")])?;
    let mut out = Vec::new();
    for kind in ["workflow", "sdkmessageprocessingstep"] {
        let page = store.retrieve_multiple(&custos_records::RecordQuery {
            entity: kind,
            options: &options,
            page_size: u64::MAX,
        })?;
        for record in page.records {
            match definition(&store.catalog(), kind, record.id, &record.values) {
                Ok(automation) => out.push(automation),
                Err(why) => {
                    tracing::warn!(%kind, id = %record.id, %why, "an active automation no longer fits its entity; it does not run")
                }
            }
        }
    }
    Ok(out)
}

/// What a write to an automation record does to its activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Unchanged,
    Activated,
    Deactivated,
}

/// Refuses an automation whose webhook the server may not reach (issue 10 §6).
pub(crate) fn check_target(
    state: &crate::PlatformState,
    values: &std::collections::BTreeMap<String, Value>,
) -> Result<(), AppError> {
    if let Some(url) = text(values, "webhookurl") {
        state.outbound().check_url(&url, "webhookurl")?;
    }
    Ok(())
}

/// Checks an automation record about to be written (`id` when it exists) with its new
/// `values`: a new one is inactive; an active one (or one being activated) must be a valid
/// definition. Returns what the write does to its activation.
pub(crate) fn check(
    app: &crate::PlatformState,
    store: &dyn RecordStore,
    entity: &EntityDef,
    id: Option<Uuid>,
    values: &[(String, Value)],
) -> Result<Activation, AppError> {
    let kind = match entity.logical_name.as_str() {
        "workflow" => "workflow",
        "sdkmessageprocessingstep" => "sdkmessageprocessingstep",
        _ => return Ok(Activation::Unchanged),
    };
    let before = match id.map(|id| store.retrieve(kind, id)) {
        Some(Ok(record)) => Some(record.values),
        Some(Err(custos_records::Error::NotFound(_))) | None => None,
        Some(Err(e)) => return Err(e.into()),
    };
    let state = |values: Option<&std::collections::BTreeMap<String, Value>>| match values
        .and_then(|v| v.get("statecode"))
    {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Integer(code @ (0 | 1))) => Ok(*code),
        Some(_) => Err(AppError::bad_request(
            "'statecode' is 0 (inactive) or 1 (active)",
        )),
    };
    let mut after = before.clone().unwrap_or_default();
    after.extend(values.iter().cloned());
    let (old, new) = (state(before.as_ref())?, state(Some(&after))?);
    if before.is_none() && new == 1 {
        return Err(AppError::bad_request(
            "a process or step is created inactive (statecode 0); activate it with statecode 1 afterwards",
        ));
    }
    let checked = definition(&store.catalog(), kind, id.unwrap_or_default(), &after);
    if new == 1 || before.is_none() {
        checked.map_err(AppError::bad_request)?;
    }
    check_target(app, &after)?;
    Ok(match (old, new) {
        (0, 1) => Activation::Activated,
        (1, 0) => Activation::Deactivated,
        _ => Activation::Unchanged,
    })
}

/// The operation of an activation change of an automation of `entity`.
pub(crate) fn activation_operation(entity: &str, activation: Activation) -> Option<Operation> {
    match (entity, activation) {
        (_, Activation::Unchanged) => None,
        ("workflow", Activation::Activated) => Some(Operation::ActivateProcess),
        ("workflow", Activation::Deactivated) => Some(Operation::DeactivateProcess),
        (_, Activation::Activated) => Some(Operation::ActivatePlugin),
        (_, Activation::Deactivated) => Some(Operation::DeactivatePlugin),
    }
}

fn image(record: Option<&Record>) -> Json {
    let values: Map<String, Json> = record
        .map(|r| {
            r.values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect()
        })
        .unwrap_or_default();
    Json::Object(values)
}

/// Runs the active automations of `instance` that react to `message` on each of `outcomes`'
/// records of `entity`, after those writes committed. `trigger` is the writes' own event draft
/// (who, from where). The webhook calls of all of them are recorded together (one group
/// commit for a bulk delete's thousands); a field set is a write of its own, one by one.
pub(crate) async fn run(
    state: &PlatformState,
    instance: &Arc<Instance>,
    entity: &EntityDef,
    message: Message,
    outcomes: &[&WriteOutcome],
    trigger: &EventDraft,
) -> Result<(), AppError> {
    let active = match state.own.automations.cached(&instance.name) {
        Some(active) => active,
        None => {
            let (worker, instance) = (state.clone(), instance.clone());
            blocking(move || worker.own.automations.of(&instance)).await?
        }
    };
    let matching: Vec<Automation> = active
        .iter()
        .filter(|a| a.entity == entity.logical_name && a.message == message)
        .cloned()
        .collect();
    let mut calls = Vec::new();
    let runs: Vec<(&WriteOutcome, &Automation)> = outcomes
        .iter()
        .flat_map(|outcome| {
            matching
                .iter()
                .map(move |automation| (*outcome, automation))
        })
        .collect();
    for (outcome, automation) in runs {
        let operation = if automation.kind == "workflow" {
            Operation::RunProcess
        } else {
            Operation::RunPlugin
        };
        let mut draft = EventDraft::new(
            operation,
            &custos_http::context::RequestContext {
                client_ip: trigger.client_ip.clone(),
                user_agent: "custos".into(),
                correlation_id: trigger.correlation_id.clone(),
                client_request_id: trigger.client_request_id.clone(),
                origin: Origin::Backend,
            },
        );
        draft.instance = instance.name.clone();
        draft.user_upn = "system".into();
        draft.user_type = UserType::System;
        draft.caller_id = trigger.user_id.clone();
        draft.set_entity(entity);
        draft.record_ids = vec![outcome.id];
        draft.result_count = 1;
        let label = if automation.kind == "workflow" {
            "Process"
        } else {
            "Step"
        };
        match &automation.action {
            Action::Webhook { url } => {
                let payload = json!({
                    "MessageName": message.name(),
                    "PrimaryEntityName": entity.logical_name,
                    "PrimaryEntityId": outcome.id,
                    "InitiatingUserId": trigger.user_id,
                    "CorrelationId": trigger.correlation_id,
                    "OrganizationName": instance.name,
                    "Depth": 1,
                    "PreEntityImage": image(outcome.before.as_ref()),
                    "PostEntityImage": image(outcome.after.as_ref()),
                });
                draft.details = json!({
                    label: automation.name,
                    "Id": automation.id,
                    "Message": message.name(),
                    "Webhook": url,
                    "Payload": payload,
                })
                .to_string();
                calls.push(draft);
                if calls.len() == CALLS_RECORDED_TOGETHER {
                    record_calls(state, std::mem::take(&mut calls)).await?;
                }
            }
            Action::SetField { attribute, value } => {
                draft.details = json!({
                    label: automation.name,
                    "Id": automation.id,
                    "Message": message.name(),
                    "SetField": attribute,
                })
                .to_string();
                let store = instance.store.clone();
                let worker = state.clone();
                let entity_for_task = entity.clone();
                let policy = instance.policy.load_full();
                let context = WriteContext {
                    actor: Uuid::parse_str(&trigger.user_id).unwrap_or_default(),
                    now: state.clock.now(),
                    platform: false,
                    delegate: None,
                };
                let (id, values) = (outcome.id, vec![(attribute.clone(), value.clone())]);
                let event = draft.clone();
                let result = blocking(move || -> Result<WriteOutcome, AppError> {
                    Ok(store.update(
                        &entity_for_task.logical_name,
                        id,
                        values,
                        WriteMode::UpdateOnly,
                        context,
                        &mut |written| {
                            let mut event = event.clone();
                            event.changes = changes(
                                &entity_for_task,
                                written.before.as_ref(),
                                written.after.as_ref(),
                                |name| policy.audits_attribute(&entity_for_task.logical_name, name),
                            );
                            worker.append_blocking(event).map_err(|e| e.message)
                        },
                    )?)
                })
                .await;
                if let Err(error) = result {
                    if error.code == custos_http::error::ErrorCode::Unavailable {
                        return Err(error);
                    }
                    tracing::warn!(process = %automation.name, error = %error.message, "a process could not set its field");
                    draft.status = custos_audit::ResultStatus::Failed;
                    draft.error_code = error.code.as_str().into();
                    state.record(draft).await?;
                }
            }
        }
    }
    record_calls(state, calls).await
}

/// Webhook calls recorded in one go at most: a bulk delete's thousands are group commits of
/// this many, not all their payloads (each record's image) held at once.
const CALLS_RECORDED_TOGETHER: usize = 1024;

/// Records webhook calls before they leave (the outbox delivers them from the log): one call
/// without holding a thread, more together.
async fn record_calls(state: &PlatformState, mut calls: Vec<EventDraft>) -> Result<(), AppError> {
    match calls.len() {
        0 => Ok(()),
        1 => state.record(calls.remove(0)).await,
        _ => {
            let worker = state.clone();
            blocking(move || worker.append_all_blocking(calls)).await
        }
    }
}

/// A process or step event's webhook and the payload posted to it.
fn webhook_call(event: &AuditEvent) -> Option<(String, Json)> {
    let details: Json = serde_json::from_str(&event.details).ok()?;
    let url = details["Webhook"].as_str()?.to_string();
    Some((url, details["Payload"].clone()))
}
