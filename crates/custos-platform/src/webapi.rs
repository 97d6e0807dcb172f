//! The OData Web API of one instance (SPEC §3.1): `/{instance}/api/data/v9.2/…`.
//!
//! One handler parses the OData path itself (entity sets, keys, `EntityDefinitions`, actions)
//! and dispatches. Every outcome other than a plain metadata read goes through the audit
//! pipeline: successes as the policy says, refusals and failures always.

mod aggregate;
mod annotations;
mod audits;
mod batch;
mod bulk;
mod cascade;
mod expand;
mod history;
mod keys;
mod metadata;
mod metaquery;
mod records;
mod security;
mod sharing;
mod solutions;
mod totals;
mod users;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use custos_audit::{AuditPolicy, Operation, UserType};
use custos_records::{EntityDef, Privilege, allows};
use uuid::Uuid;

use crate::PlatformState;
use custos_http::auth::authenticate;
use custos_http::context::RequestContext;
use custos_http::credentials::Caller;
use custos_http::draft::EventDraft;
use custos_http::error::{AppError, ErrorCode};
use custos_http::state::Instance;

/// What the path names.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    ServiceDocument,
    Metadata,
    /// `$batch`: several requests in one (multipart or JSON).
    Batch,
    WhoAmI,
    RetrieveVersion,
    /// `RetrieveTotalRecordCount(EntityNames=…)`: the parameter's text.
    RetrieveTotalRecordCount(String),
    /// `RetrieveRecordChangeHistory(Target=…[,PagingInfo=…])` or
    /// `RetrieveAttributeChangeHistory(Target=…,AttributeLogicalName=…[,PagingInfo=…])`: which,
    /// and the parameters' text.
    ChangeHistory {
        function: &'static str,
        parameters: String,
    },
    PublishAllXml,
    ExportToExcel,
    BulkDelete,
    ImportRecords,
    ImportSolution,
    GrantAccess,
    ModifyAccess,
    RevokeAccess,
    EntityDefinitions,
    EntityDefinition(String),
    Attributes(String),
    Attribute(String, String),
    /// `EntityDefinitions(…)/Attributes/Microsoft.Dynamics.CRM.<Type>AttributeMetadata`: the
    /// entity's attributes of one type.
    AttributesOfType(String, String),
    /// `EntityDefinitions(…)/Attributes(…)/Microsoft.Dynamics.CRM.<Type>AttributeMetadata`.
    AttributeOfType(String, String, String),
    /// `EntityDefinitions(…)/ManyToOneRelationships` (`true`: the entity's lookups) or
    /// `…/OneToManyRelationships` (`false`: the lookups that point at it).
    Relationships(String, bool),
    EntitySet(String),
    /// `set/$count`: how many records of the set match `$filter`, as plain text.
    Count(String),
    Record(String, Uuid),
    /// `set(key)[/…]` where the key is not a bare GUID: a named primary key (`accountid=…`) or
    /// an alternate key (`accountnumber='A-1'`), as written, and the rest of the path (`""` or
    /// `/contact_customer_accounts`…); `prelude` finds the record it names and reads the path
    /// again with its id, so every handler sees the id.
    RecordByKey {
        set: String,
        key: String,
        tail: String,
    },
    /// `EntityDefinitions(LogicalName='x')/Keys`: an entity's alternate keys.
    Keys(String),
    /// `EntityDefinitions(LogicalName='x')/Keys(LogicalName='y')`: one of them.
    Key(String, String),
    /// `set(id)/property[/$value]`: one property of a record, as JSON or (`$value`) raw.
    Property {
        set: String,
        id: Uuid,
        property: String,
        raw: bool,
    },
    /// `set(id)/navigation/$count`: how many records a collection-valued navigation property
    /// shows (that match `$filter`), as plain text.
    RelatedCount {
        set: String,
        id: Uuid,
        navigation: String,
    },
    /// `set(id)/navigation(other)`: one of the records a collection-valued navigation property
    /// shows.
    RelatedRecord {
        set: String,
        id: Uuid,
        navigation: String,
        other: Uuid,
    },
    /// `set(id)/relation[(other)][/$ref]`: a many-to-many association of a record.
    Association {
        set: String,
        id: Uuid,
        relation: String,
        other: Option<Uuid>,
        reference: bool,
    },
    /// `set(id)/lookup/$ref`: the reference a record's lookup holds, set (`PUT`) or removed
    /// (`DELETE`). The path alone does not say whether `lookup` is a lookup or a
    /// collection-valued navigation property: `prelude` asks the entity, and makes the second
    /// a `RelatedRef`.
    LookupRef {
        set: String,
        id: Uuid,
        lookup: String,
        other: Option<Uuid>,
    },
    /// `set(id)/navigation[(other)]/$ref` of a collection-valued navigation property: the
    /// related records' references (`GET`), a record related (`POST`) or unrelated (`DELETE`,
    /// `other` or `$id` naming it).
    RelatedRef {
        set: String,
        id: Uuid,
        navigation: String,
        other: Option<Uuid>,
    },
    /// `set(id)/[Microsoft.Dynamics.CRM.]Action`: an action bound to a record.
    BoundAction {
        set: String,
        id: Uuid,
        action: String,
    },
}

impl Target {
    /// The record `PUT` or `DELETE` of a single property or of a lookup's `$ref` updates, and
    /// how the request says it.
    fn as_update(&self, method: &Method) -> Option<(&str, Uuid, records::AsUpdate<'_>)> {
        if !matches!(*method, Method::PUT | Method::DELETE) {
            return None;
        }
        match self {
            Target::Property {
                set,
                id,
                property,
                raw: false,
            } => Some((set, *id, records::AsUpdate::Property(property))),
            Target::LookupRef {
                set,
                id,
                lookup,
                other: None,
            } => Some((set, *id, records::AsUpdate::LookupRef(lookup))),
            _ => None,
        }
    }
}

fn parse_key<'a>(segment: &'a str, name: &str) -> Option<&'a str> {
    segment
        .strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// The key of a definition: `LogicalName='name'`, or its `MetadataId` — a GUID, which no
/// logical name can look like, read as the name it stands for by `by_metadata_id`.
fn logical_name_key(key: &str) -> Result<String, AppError> {
    if let Ok(id) = Uuid::parse_str(key) {
        return Ok(id.to_string());
    }
    key.strip_prefix("LogicalName='")
        .and_then(|k| k.strip_suffix('\''))
        .map(str::to_string)
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "expected (LogicalName='name') or (MetadataId), got ({key})"
            ))
        })
}

/// `target` with each definition it names by `MetadataId` named by logical name.
fn by_metadata_id(target: Target, request: &WebRequest) -> Result<Target, AppError> {
    let id = |name: &str| Uuid::parse_str(name).ok();
    let entity = |name: String| match id(&name) {
        Some(id) => metadata::entity_named_by(request, id),
        None => Ok(name),
    };
    let attribute = |entity: &str, name: String| match id(&name) {
        Some(id) => metadata::attribute_named_by(request, entity, id),
        None => Ok(name),
    };
    Ok(match target {
        Target::EntityDefinition(name) => Target::EntityDefinition(entity(name)?),
        Target::Attributes(name) => Target::Attributes(entity(name)?),
        Target::AttributesOfType(name, cast) => Target::AttributesOfType(entity(name)?, cast),
        Target::Relationships(name, side) => Target::Relationships(entity(name)?, side),
        Target::Keys(name) => Target::Keys(entity(name)?),
        Target::Attribute(name, field) => {
            let name = entity(name)?;
            let field = attribute(&name, field)?;
            Target::Attribute(name, field)
        }
        Target::AttributeOfType(name, field, cast) => {
            let name = entity(name)?;
            let field = attribute(&name, field)?;
            Target::AttributeOfType(name, field, cast)
        }
        Target::Key(name, key) => {
            let name = entity(name)?;
            let key = match id(&key) {
                Some(id) => metadata::key_named_by(request, &name, id)?,
                None => key,
            };
            Target::Key(name, key)
        }
        other => other,
    })
}

/// `set(key)` and the rest of the path, when the key is neither a GUID nor the logical name
/// of metadata (`EntityDefinitions(LogicalName='x')`) but `name=value` pairs. A key's text
/// value cannot hold a `/`, which ends the segment.
fn keyed(rest: &str) -> Option<Target> {
    let (first, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (set, key) = first.split_once('(')?;
    let key = key.strip_suffix(')')?;
    if set == "EntityDefinitions"
        || set == "RetrieveTotalRecordCount"
        || set == history::FUNCTION
        || set == history::ATTRIBUTE_FUNCTION
        || !key.contains('=')
        || Uuid::parse_str(key.trim_matches('\'')).is_ok()
    {
        return None;
    }
    Some(Target::RecordByKey {
        set: set.to_string(),
        key: key.to_string(),
        tail: tail.to_string(),
    })
}

fn parse_target(rest: &str) -> Result<Target, AppError> {
    if let Some(target) = keyed(rest.trim_end_matches('/')) {
        return Ok(target);
    }
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let first = segments[0];
    let unknown = || AppError::not_found(format!("no resource at '{rest}'"));
    let record_key = |key: &str| {
        Uuid::parse_str(key.trim_matches('\''))
            .map_err(|_| AppError::bad_request(format!("'{key}' is not a record id (a GUID)")))
    };
    match segments.as_slice() {
        [""] => Ok(Target::ServiceDocument),
        ["$metadata"] => Ok(Target::Metadata),
        ["$batch"] => Ok(Target::Batch),
        ["WhoAmI" | "WhoAmI()"] => Ok(Target::WhoAmI),
        ["RetrieveVersion" | "RetrieveVersion()"] => Ok(Target::RetrieveVersion),
        [call] if call.starts_with("RetrieveTotalRecordCount(") => call
            .strip_prefix("RetrieveTotalRecordCount(EntityNames=")
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|names| Target::RetrieveTotalRecordCount(names.to_string()))
            .ok_or_else(|| {
                AppError::bad_request(
                    "RetrieveTotalRecordCount takes one parameter: (EntityNames=[\"account\",…]) or (EntityNames=@p1) with @p1=[…]",
                )
            }),
        [call]
            if let Some((function, parameters)) = [history::FUNCTION, history::ATTRIBUTE_FUNCTION]
                .into_iter()
                .find_map(|function| {
                    let parameters = call
                        .strip_prefix(function)?
                        .strip_prefix('(')?
                        .strip_suffix(')')?;
                    Some((function, parameters))
                }) =>
        {
            Ok(Target::ChangeHistory {
                function,
                parameters: parameters.to_string(),
            })
        }
        ["PublishAllXml"] => Ok(Target::PublishAllXml),
        ["ExportToExcel"] => Ok(Target::ExportToExcel),
        ["BulkDelete"] => Ok(Target::BulkDelete),
        ["ImportRecords"] => Ok(Target::ImportRecords),
        ["ImportSolution"] => Ok(Target::ImportSolution),
        ["GrantAccess"] => Ok(Target::GrantAccess),
        ["ModifyAccess"] => Ok(Target::ModifyAccess),
        ["RevokeAccess"] => Ok(Target::RevokeAccess),
        ["EntityDefinitions"] => Ok(Target::EntityDefinitions),
        [entity] if parse_key(entity, "EntityDefinitions").is_some() => {
            Ok(Target::EntityDefinition(logical_name_key(
                parse_key(entity, "EntityDefinitions").expect("checked"),
            )?))
        }
        [entity, "Attributes"] if parse_key(entity, "EntityDefinitions").is_some() => {
            Ok(Target::Attributes(logical_name_key(
                parse_key(entity, "EntityDefinitions").expect("checked"),
            )?))
        }
        [entity, side @ ("ManyToOneRelationships" | "OneToManyRelationships")]
            if parse_key(entity, "EntityDefinitions").is_some() =>
        {
            Ok(Target::Relationships(
                logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?,
                *side == "ManyToOneRelationships",
            ))
        }
        [entity, "Keys"] if parse_key(entity, "EntityDefinitions").is_some() => Ok(Target::Keys(
            logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?,
        )),
        [entity, key]
            if parse_key(entity, "EntityDefinitions").is_some()
                && parse_key(key, "Keys").is_some() =>
        {
            Ok(Target::Key(
                logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?,
                logical_name_key(parse_key(key, "Keys").expect("checked"))?,
            ))
        }
        [entity, attribute] if parse_key(entity, "EntityDefinitions").is_some() => {
            let entity =
                logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?;
            let key = parse_key(attribute, "Attributes").ok_or_else(unknown)?;
            Ok(Target::Attribute(entity, logical_name_key(key)?))
        }
        [entity, "Attributes", cast] if parse_key(entity, "EntityDefinitions").is_some() => {
            Ok(Target::AttributesOfType(
                logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?,
                cast.to_string(),
            ))
        }
        [entity, attribute, cast]
            if parse_key(entity, "EntityDefinitions").is_some()
                && parse_key(attribute, "Attributes").is_some() =>
        {
            Ok(Target::AttributeOfType(
                logical_name_key(parse_key(entity, "EntityDefinitions").expect("checked"))?,
                logical_name_key(parse_key(attribute, "Attributes").expect("checked"))?,
                cast.to_string(),
            ))
        }
        [set, "$count"] if !set.contains('(') => Ok(Target::Count(set.to_string())),
        [record, navigation, "$count"] if record.contains('(') => {
            let (set, key) = record.split_once('(').expect("checked");
            Ok(Target::RelatedCount {
                set: set.to_string(),
                id: record_key(key.strip_suffix(')').ok_or_else(unknown)?)?,
                navigation: navigation.to_string(),
            })
        }
        [record, property, "$value"] if record.contains('(') => {
            let (set, key) = record.split_once('(').expect("checked");
            Ok(Target::Property {
                set: set.to_string(),
                id: record_key(key.strip_suffix(')').ok_or_else(unknown)?)?,
                property: property.to_string(),
                raw: true,
            })
        }
        [record, second] | [record, second, "$ref"] if record.contains('(') => {
            let (set, key) = record.split_once('(').expect("checked");
            let id = record_key(key.strip_suffix(')').ok_or_else(unknown)?)?;
            let reference = segments.len() == 3;
            let name = second
                .strip_prefix("Microsoft.Dynamics.CRM.")
                .unwrap_or(second)
                .trim_end_matches("()");
            if !reference
                && (security::BOUND_ACTIONS.contains(&name)
                    || users::USER_ACTIONS.contains(&name)
                    || (set == audits::SET && name == audits::DETAILS))
            {
                return Ok(Target::BoundAction {
                    set: set.to_string(),
                    id,
                    action: name.to_string(),
                });
            }
            let (relation, other) = match second.split_once('(') {
                None => (second.to_string(), None),
                Some((relation, key)) => (
                    relation.to_string(),
                    Some(record_key(key.strip_suffix(')').ok_or_else(unknown)?)?),
                ),
            };
            if !security::RELATIONS
                .iter()
                .any(|(s, r, _)| *s == set && *r == relation)
            {
                // Not a relation: a property of the record (the entity says whether it has one).
                return match (reference, other) {
                    (false, None) => Ok(Target::Property {
                        set: set.to_string(),
                        id,
                        property: relation,
                        raw: false,
                    }),
                    (true, other) => Ok(Target::LookupRef {
                        set: set.to_string(),
                        id,
                        lookup: relation,
                        other,
                    }),
                    (false, Some(other)) => Ok(Target::RelatedRecord {
                        set: set.to_string(),
                        id,
                        navigation: relation,
                        other,
                    }),
                };
            }
            Ok(Target::Association {
                set: set.to_string(),
                id,
                relation,
                other,
                reference,
            })
        }
        [_] => match first.split_once('(') {
            None => Ok(Target::EntitySet(first.to_string())),
            Some((set, key)) => {
                let key = key
                    .strip_suffix(')')
                    .ok_or_else(|| AppError::bad_request(format!("unbalanced key in '{first}'")))?;
                // No record's key is empty: `Name()` calls a function, and this is none.
                if key.is_empty() {
                    return Err(AppError::not_found(format!(
                        "'{set}()' is not a function of this service (its unbound functions are WhoAmI(), RetrieveVersion(), RetrieveTotalRecordCount(EntityNames=…), RetrieveRecordChangeHistory(Target=…) and RetrieveAttributeChangeHistory(Target=…,AttributeLogicalName=…))"
                    )));
                }
                match Uuid::parse_str(key.trim_matches('\'')) {
                    Ok(id) => Ok(Target::Record(set.to_string(), id)),
                    Err(_) => Err(AppError::bad_request(format!(
                        "'{key}' is not a record id (a GUID), nor the name=value pairs of an alternate key"
                    ))),
                }
            }
        },
        _ => Err(unknown()),
    }
}

/// Everything a Web API handler needs about the request.
pub(crate) struct WebRequest {
    pub(crate) state: PlatformState,
    pub(crate) instance: Arc<Instance>,
    pub(crate) caller: Caller,
    /// Who sent the request, when it acts on behalf of `caller` (`MSCRMCallerID`): every
    /// privilege it uses must be both's.
    pub(crate) delegate: Option<Caller>,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    /// Decoded query pairs, in order.
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Bytes,
    /// `{public URL}/{instance}/api/data/v9.2`.
    pub(crate) service_root: String,
    /// Whether the client asked for `Edm.Int64` and `Edm.Decimal` values as strings
    /// (`IEEE754Compatible=true` in `Accept` or `$format`, OData JSON Format §3.2).
    pub(crate) ieee754: bool,
    /// An upsert (`PATCH`) of a record named by an alternate key that no record has: the key's
    /// values, which the record it creates takes.
    pub(crate) upsert_key: Option<Vec<(String, custos_records::Value)>>,
}

/// A function parameter's value read as JSON: written with JSON's double quotes, or, when it
/// holds none, with OData's single ones (`['account','contact']`, `{'@odata.id':'…'}`).
fn parameter_json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text).ok().or_else(|| {
        (!text.contains('"'))
            .then(|| serde_json::from_str(&text.replace('\'', "\"")).ok())
            .flatten()
    })
}

impl WebRequest {
    /// The instance's `organization` entity: what instance-wide privileges are checked on.
    pub(crate) fn organization(&self) -> Result<EntityDef, AppError> {
        self.instance
            .store
            .catalog()
            .entity(custos_records::ORGANIZATION_ENTITY)
            .cloned()
            .ok_or_else(|| AppError::not_found("the instance has no organization entity"))
    }

    /// The absolute link to the page after this one of the list at `path`: this request's query
    /// with `$skiptoken` set to `token`.
    pub(crate) fn next_link(&self, path: &str, token: &str) -> String {
        let mut pairs = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.query.iter().filter(|(k, _)| k != "$skiptoken") {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("$skiptoken", token);
        format!("{}/{path}?{}", self.service_root, pairs.finish())
    }

    /// A function parameter's text as written in the path, or — when it names a parameter
    /// alias (`EntityNames=@p1`) — the alias's value in the query; trimmed.
    pub(crate) fn parameter<'a>(&'a self, text: &'a str) -> Result<&'a str, AppError> {
        let text = match text.strip_prefix('@') {
            Some(_) => self
                .query
                .iter()
                .find(|(alias, _)| alias == text)
                .map(|(_, value)| value.as_str())
                .ok_or_else(|| {
                    AppError::bad_request(format!("the parameter alias {text} is given no value"))
                })?,
            None => text,
        };
        Ok(text.trim())
    }

    /// A wide number (`Edm.Int64`, `Edm.Decimal`) as the client asked for it: a string under
    /// `IEEE754Compatible=true`, else the number; anything else as it is.
    pub(crate) fn wide(&self, value: serde_json::Value) -> serde_json::Value {
        if self.ieee754 && value.is_number() {
            serde_json::Value::String(value.to_string())
        } else {
            value
        }
    }

    /// Refuses unless the caller's roles grant `privilege` on `entity` — and, for a request on
    /// behalf of the caller, the sender's too ([`WebRequest::require_delegate`]).
    pub(crate) fn require(&self, privilege: Privilege, entity: &EntityDef) -> Result<(), AppError> {
        if privilege != Privilege::Read && entity.logical_name == "role" {
            security::refuse_support_engineer(self)?;
        }
        self.require_delegate(privilege, entity)?;
        let roles = self.caller.security_roles(&self.state, &self.instance);
        if allows(&roles, privilege, entity) {
            return Ok(());
        }
        Err(AppError::forbidden(format!(
            "user '{}' lacks the {privilege:?} privilege on entity '{}'",
            self.caller.principal.upn, entity.logical_name
        )))
    }

    /// For a request on behalf of another user, refuses unless its sender's roles grant
    /// `privilege` on `entity` too (what both may do, as Dataverse's impersonation), and any
    /// change to users, teams, roles, processes, plug-in steps, settings or solutions: those
    /// act beyond the records, on who may do what, and are made in one's own name.
    pub(crate) fn require_delegate(
        &self,
        privilege: Privilege,
        entity: &EntityDef,
    ) -> Result<(), AppError> {
        let Some(sender) = &self.delegate else {
            return Ok(());
        };
        if privilege != Privilege::Read && records::changeable_in_changeset(entity).is_err() {
            return Err(AppError::forbidden(format!(
                "{} records are not changed on behalf of another user: '{}' must make the change in their own name",
                entity.logical_name, sender.principal.upn
            )));
        }
        if allows(
            &sender.security_roles(&self.state, &self.instance),
            privilege,
            entity,
        ) {
            return Ok(());
        }
        Err(AppError::forbidden(format!(
            "user '{}', acting on behalf of '{}', lacks the {privilege:?} privilege on entity '{}'",
            sender.principal.upn, self.caller.principal.upn, entity.logical_name
        )))
    }

    /// What this request records: the instance's policy, or — for a support engineer, whose
    /// every action is recorded whatever the instance's switches say — every switch on.
    pub(crate) fn policy(&self) -> Arc<AuditPolicy> {
        let policy = self.instance.policy.load_full();
        if self.caller.user_type() == UserType::DcAdmin {
            return Arc::new(policy.everything());
        }
        policy
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request's preferences: every `Prefer` header as one comma-separated list, as RFC 7240
    /// reads several (`Prefer: return=representation` and `Prefer: odata.maxpagesize=10` ask
    /// for both); `None` without one. The usual single header is borrowed, not copied: a list
    /// page asks for its preferences more than once.
    pub(crate) fn prefer(&self) -> Option<std::borrow::Cow<'_, str>> {
        let mut values = self
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        match values.next() {
            None => Some(std::borrow::Cow::Borrowed(first)),
            Some(second) => {
                let mut all = format!("{first},{second}");
                for more in values {
                    all.push(',');
                    all.push_str(more);
                }
                Some(std::borrow::Cow::Owned(all))
            }
        }
    }

    /// Parses the body as a JSON object.
    pub(crate) fn json_object(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AppError> {
        self.json_content_type()?;
        custos_http::body::json_object(&self.body)
    }

    /// The body's members with each value's JSON text as the client wrote it: parsed, a number
    /// is already a float, and a decimal is checked by its numeral (`Value::decimal_from_text`).
    /// A body rewritten from these keeps the numerals as sent.
    pub(crate) fn raw_members(
        &self,
    ) -> Result<HashMap<String, Box<serde_json::value::RawValue>>, AppError> {
        self.json_content_type()?;
        custos_http::body::raw_members(&self.body)
            .map_err(|e| AppError::bad_request(format!("the body is not a valid JSON object: {e}")))
    }

    fn json_content_type(&self) -> Result<(), AppError> {
        if self.headers.get_all("content-type").iter().nth(1).is_some() {
            return Err(AppError::bad_request(
                "the request has more than one Content-Type header",
            ));
        }
        match self.header("content-type") {
            Some(content_type)
                if !content_type
                    .to_ascii_lowercase()
                    .starts_with("application/json") =>
            {
                Err(AppError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content type must be application/json, got '{content_type}'"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// `odata.metadata=none` asked for in `Accept`.
    pub(crate) fn metadata_none(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.contains("odata.metadata=none"))
    }
}

/// `/{instance}/api/data/v9.2/{*rest}`.
pub(crate) async fn handle(
    State(state): State<PlatformState>,
    Extension(context): Extension<RequestContext>,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance_name = params.get("instance").cloned().unwrap_or_default();
    let rest = params.get("rest").cloned().unwrap_or_default();
    serve(
        &state,
        &context,
        &instance_name,
        &rest,
        method,
        headers,
        raw_query,
        body,
    )
    .await
}

/// Answers one Web API request (a request of its own, or one of a `$batch`).
#[allow(clippy::too_many_arguments)]
async fn serve(
    state: &PlatformState,
    context: &RequestContext,
    instance_name: &str,
    rest: &str,
    method: Method,
    headers: HeaderMap,
    raw_query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut draft = EventDraft::new(Operation::Request, context);
    draft.instance = instance_name.to_string();
    // Whether the answer's numbers are strings: read once, by `prelude`, into the request.
    let mut strings = false;
    let result = match prelude(
        state,
        &mut draft,
        instance_name,
        rest,
        method,
        headers,
        raw_query,
        body,
    )
    .await
    {
        Ok((target, request)) => {
            strings = request.ieee754;
            dispatch(context, &mut draft, instance_name, rest, target, request).await
        }
        Err(error) => Err(error),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => custos_http::refuse(state, draft, error).await,
    };
    if response.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED
        && let Ok(target) = parse_target(rest)
    {
        let allowed = methods_allowed(state, instance_name, target);
        response.headers_mut().insert(
            axum::http::header::ALLOW,
            axum::http::HeaderValue::from_static(allowed),
        );
    }
    if strings {
        response = with_ieee754_compatible(response);
    }
    with_odata_version(response)
}

/// Whether the media type (or list of them) carries the format parameter
/// `IEEE754Compatible=true`: `Edm.Int64` and `Edm.Decimal` values as JSON strings, which
/// JavaScript reads without losing digits. Parameter names are case-insensitive.
pub(crate) fn ieee754_compatible(media_type: Option<&str>) -> bool {
    media_type.is_some_and(|m| {
        m.split([';', ','])
            .any(|p| p.trim().eq_ignore_ascii_case("ieee754compatible=true"))
    })
}

/// Whether a request asks for wide numbers as strings: `IEEE754Compatible=true` in `Accept` or
/// in `$format`.
fn asks_ieee754(headers: &HeaderMap, raw_query: Option<&str>) -> bool {
    ieee754_compatible(headers.get("accept").and_then(|v| v.to_str().ok()))
        || raw_query.is_some_and(|query| {
            form_urlencoded::parse(query.as_bytes())
                .any(|(k, v)| k == "$format" && ieee754_compatible(Some(&v)))
        })
}

/// The response's JSON media type says its numbers are strings, as OData JSON Format §3.2
/// requires of a response written so.
fn with_ieee754_compatible(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Some(json) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("application/json"))
        .and_then(|v| {
            axum::http::HeaderValue::from_str(&format!("{v};IEEE754Compatible=true")).ok()
        })
    {
        headers.insert(axum::http::header::CONTENT_TYPE, json);
    }
    response
}

fn with_odata_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("odata-version", axum::http::HeaderValue::from_static("4.0"));
    response
}

/// Checks one write of a changeset exactly as `serve` would before making it, and makes
/// nothing: a refusal is recorded and answered as `serve` answers it.
#[allow(clippy::too_many_arguments)]
async fn stage(
    state: &PlatformState,
    context: &RequestContext,
    instance_name: &str,
    rest: &str,
    method: Method,
    headers: HeaderMap,
    raw_query: Option<String>,
    body: Bytes,
) -> Result<records::StagedWrite, Response> {
    let mut draft = EventDraft::new(Operation::Request, context);
    draft.instance = instance_name.to_string();
    let prepared = prelude(
        state,
        &mut draft,
        instance_name,
        rest,
        method,
        headers,
        raw_query,
        Ok(body),
    )
    .await;
    let staged = prepared.and_then(|(target, request)| match (&target, request.method.clone()) {
        (target, method) if let Some((set, id, how)) = target.as_update(&method) => {
            records::stage_update_as(request, &mut draft, set, id, how)
        }
        (Target::EntitySet(set), Method::POST) => records::stage_create(request, &mut draft, set),
        (
            Target::Property {
                set,
                id,
                property,
                raw: false,
            },
            Method::POST,
        ) => records::stage_create_related(request, &mut draft, set, *id, property),
        (Target::Record(set, id), Method::PATCH) => {
            records::stage_update(request, &mut draft, set, *id)
        }
        (Target::Record(set, id), Method::DELETE) => {
            records::stage_delete(request, &mut draft, set, *id)
        }
        (Target::RelatedRef { navigation, .. }, _) => Err(AppError::bad_request(format!(
                "relating records through '{navigation}' is not made in a changeset: change the related record's lookup ($ref) instead, or send it outside the changeset"
        ))),
        _ => Err(AppError::bad_request(format!(
            "a changeset holds creates (POST), updates (PATCH) and deletes (DELETE) of records, changes of a single property (PUT, DELETE) and of a lookup's $ref; {} '{rest}' is not one — send it outside the changeset",
            request.method
        ))),
    });
    match staged {
        Ok(staged) => Ok(staged),
        Err(error) => Err(with_odata_version(
            custos_http::refuse(state, draft, error).await,
        )),
    }
}

/// The methods `target` takes, as its instance's entities say: a collection-valued navigation
/// property's records take a `POST` (a create of a related record) and a single-valued one's
/// only a `GET`, where a property takes a `PUT` and a `DELETE`; a collection's references a
/// `POST` and a `DELETE` where a lookup's take a `PUT` and a `DELETE`.
fn methods_allowed(state: &PlatformState, instance_name: &str, target: Target) -> &'static str {
    let Some(instance) = state.instance(instance_name) else {
        return allowed_methods(&target);
    };
    let catalog = instance.store.catalog();
    let navigation = |set: &str, property: &str| {
        let entity = catalog.by_set_name(set)?;
        catalog.navigation(entity, property).map(|n| n.collection)
    };
    match collection_refs(target, &catalog) {
        Target::Property {
            set,
            property,
            raw: false,
            ..
        } if let Some(collection) = navigation(&set, &property) => {
            if collection {
                "GET, POST"
            } else {
                "GET"
            }
        }
        target => allowed_methods(&target),
    }
}

/// The methods a Web API resource takes (what `dispatch` serves), for the `Allow` header of a
/// 405 (RFC 9110 §15.5.6).
fn allowed_methods(target: &Target) -> &'static str {
    match target {
        Target::ServiceDocument
        | Target::Metadata
        | Target::WhoAmI
        | Target::RetrieveVersion
        | Target::RetrieveTotalRecordCount(_)
        | Target::ChangeHistory { .. }
        | Target::Count(_)
        | Target::RelatedCount { .. }
        | Target::RelatedRecord { .. }
        | Target::Property { raw: true, .. } => "GET",
        Target::Property { raw: false, .. } => "GET, PUT, DELETE",
        Target::PublishAllXml
        | Target::Batch
        | Target::ExportToExcel
        | Target::BulkDelete
        | Target::ImportRecords
        | Target::ImportSolution
        | Target::GrantAccess
        | Target::ModifyAccess
        | Target::RevokeAccess => "POST",
        Target::EntityDefinitions | Target::Attributes(_) | Target::EntitySet(_) => "GET, POST",
        Target::EntityDefinition(_) | Target::Attribute(..) => "GET, PATCH, PUT, DELETE",
        Target::AttributesOfType(..) | Target::AttributeOfType(..) | Target::Relationships(..) => {
            "GET"
        }
        Target::Record(..) => "GET, PATCH, DELETE",
        // What the path names once the key is read (the id does not change which methods).
        Target::RecordByKey { set, tail, .. } => {
            match parse_target(&format!("{set}({}){tail}", Uuid::nil())) {
                Ok(Target::RecordByKey { .. }) | Err(_) => "GET",
                Ok(target) => allowed_methods(&target),
            }
        }
        Target::Keys(_) => "GET, POST",
        Target::Key(..) => "GET, DELETE",
        Target::Association { .. } | Target::RelatedRef { .. } => "GET, POST, DELETE",
        Target::LookupRef { .. } => "PUT, DELETE",
        Target::BoundAction { .. } => "GET, POST",
    }
}

/// Records a user's access to an instance — through the console (`UserAccessViaWeb`) or the
/// Web API (`UserAccessViaSdk`) — once per `useraccessauditinginterval` on the whole cluster
/// and across restarts, when the instance audits user access (SPEC §4). Support engineers'
/// access is the tool's, recorded otherwise.
async fn record_access(
    state: &PlatformState,
    instance: &Instance,
    caller: &Caller,
    draft: &EventDraft,
) -> Result<(), AppError> {
    let web = draft.origin == custos_audit::Origin::WebUI;
    let counted = matches!(
        draft.origin,
        custos_audit::Origin::WebUI | custos_audit::Origin::Api
    );
    if !counted
        || !instance.policy.load().audits_user_access()
        || !state.access_due(instance, caller.principal.id, web).await
    {
        return Ok(());
    }
    let mut access = draft.clone();
    access.operation = if web {
        Operation::UserAccessViaWeb
    } else {
        Operation::UserAccessViaSdk
    };
    access.entity_name = String::new();
    access.entity_category = custos_audit::EntityCategory::None;
    access.record_ids = Vec::new();
    access.query = String::new();
    access.details = String::new();
    let at = state.clock.now_secs();
    match state.record(access).await {
        Ok(()) => {
            state
                .access_recorded(instance, caller.principal.id, web, at)
                .await;
            Ok(())
        }
        Err(unavailable) => {
            instance.forget_access(caller.principal.id, web);
            Err(unavailable)
        }
    }
}

/// Names the operation and entity a request attempts, before anything is checked, so that even
/// a refused request's event says what was tried.
fn classify(
    state: &PlatformState,
    instance_name: &str,
    target: &Target,
    method: &Method,
    draft: &mut EventDraft,
) {
    let set = match target {
        Target::EntitySet(set)
        | Target::Count(set)
        | Target::Record(set, _)
        | Target::RecordByKey { set, .. }
        | Target::Property { set, .. }
        | Target::RelatedCount { set, .. }
        | Target::RelatedRecord { set, .. }
        | Target::Association { set, .. }
        | Target::LookupRef { set, .. }
        | Target::BoundAction { set, .. } => Some(set.as_str()),
        _ => None,
    };
    // A path that goes on from a keyed record is classified once the key is read.
    let keyed_record = matches!(target, Target::RecordByKey { tail, .. } if tail.is_empty());
    draft.operation = match (target, method) {
        (Target::EntitySet(_) | Target::Count(_) | Target::RelatedCount { .. }, &Method::GET) => {
            Operation::RetrieveMultiple
        }
        (Target::RelatedRecord { .. }, &Method::GET) => Operation::Retrieve,
        (Target::RetrieveTotalRecordCount(_), &Method::GET) => Operation::RetrieveMultiple,
        (Target::ChangeHistory { .. }, _) => Operation::RetrieveRecordChangeHistory,
        (Target::EntitySet(_), &Method::POST) => Operation::Create,
        (Target::Record(..) | Target::Property { .. }, &Method::GET) => Operation::Retrieve,
        (Target::RecordByKey { .. }, &Method::GET) if keyed_record => Operation::Retrieve,
        (Target::LookupRef { .. }, &Method::GET) => Operation::RetrieveMultiple,
        (Target::Record(..), &Method::PATCH)
        | (Target::Property { raw: false, .. }, &Method::PUT | &Method::DELETE)
        | (Target::LookupRef { .. }, _) => Operation::Update,
        (Target::RecordByKey { .. }, &Method::PATCH) if keyed_record => Operation::Update,
        (Target::Record(..), &Method::DELETE) => Operation::Delete,
        (Target::RecordByKey { .. }, &Method::DELETE) if keyed_record => Operation::Delete,
        (Target::Keys(_), &Method::POST) => Operation::CreateEntityKey,
        (Target::Key(..), &Method::DELETE) => Operation::DeleteEntityKey,
        (Target::EntityDefinition(_) | Target::Attribute(..), &Method::PATCH | &Method::PUT) => {
            Operation::UpdateAuditSettings
        }
        (Target::EntityDefinitions, &Method::POST) => Operation::CreateEntity,
        (Target::Attributes(_), &Method::POST) => Operation::CreateAttribute,
        (Target::Attribute(..), &Method::DELETE) => Operation::DeleteAttribute,
        (Target::EntityDefinition(_), &Method::DELETE) => Operation::DeleteEntity,
        (Target::PublishAllXml, _) => Operation::PublishAllCustomizations,
        (Target::ExportToExcel, _) => Operation::ExportToExcel,
        (Target::BulkDelete, _) => Operation::BulkDelete,
        (Target::ImportRecords, _) => Operation::ImportRecords,
        (Target::ImportSolution, _) => Operation::ImportSolution,
        (Target::GrantAccess, _) => Operation::Share,
        (Target::ModifyAccess, _) => Operation::ModifyShare,
        (Target::RevokeAccess, _) => Operation::Unshare,
        (Target::Association { relation, .. }, &Method::POST) => {
            security::association_operation(relation, true)
        }
        (Target::Association { relation, .. }, &Method::DELETE) => {
            security::association_operation(relation, false)
        }
        (Target::BoundAction { action, .. }, _) => {
            Operation::parse(action).unwrap_or(Operation::Request)
        }
        _ => Operation::Request,
    };
    if let Target::Record(_, id)
    | Target::Property { id, .. }
    | Target::Association { id, .. }
    | Target::LookupRef { id, .. }
    | Target::BoundAction { id, .. } = target
    {
        draft.record_ids = vec![*id];
    }
    if *target == Target::ExportToExcel {
        draft.origin = custos_audit::Origin::Export;
    }
    // Dataverse's `audit` rows are the log's events: reading them is a search of the trail, and
    // an audit's id is no record's.
    if set == Some(audits::SET) {
        draft.operation = Operation::SearchAuditLog;
        draft.record_ids.clear();
    }
    let entity = state
        .instance(instance_name)
        .and_then(|instance| match (set, target) {
            (Some(set), _) => instance.store.catalog().by_set_name(set).cloned(),
            (
                None,
                Target::EntityDefinition(name)
                | Target::Attribute(name, _)
                | Target::Attributes(name)
                | Target::AttributesOfType(name, _)
                | Target::AttributeOfType(name, ..)
                | Target::Relationships(name, _)
                | Target::Keys(name)
                | Target::Key(name, _),
            ) => instance.store.catalog().entity(name).cloned(),
            _ => None,
        });
    if let Some(entity) = entity {
        draft.set_entity(&entity);
    }
}

/// What every Web API request goes through before its handler: the protocol version, the
/// path, the caller and their right to the instance (user access recorded), the body and the
/// query.
#[allow(clippy::too_many_arguments)]
async fn prelude(
    state: &PlatformState,
    draft: &mut EventDraft,
    instance_name: &str,
    rest: &str,
    method: Method,
    headers: HeaderMap,
    raw_query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Target, WebRequest), AppError> {
    if headers.get_all("odata-version").iter().nth(1).is_some() {
        return Err(AppError::bad_request(
            "the request has more than one OData-Version header",
        ));
    }
    let version = headers
        .get("odata-version")
        .map(|v| v.to_str().unwrap_or("").trim().to_string());
    if let Some(other) = version.as_deref()
        && !matches!(other, "4.0" | "4.01")
    {
        return Err(AppError::bad_request(format!(
            "OData-Version '{other}' is not supported; use 4.0 or 4.01"
        )));
    }
    let target = parse_target(rest);
    if let Ok(target) = &target {
        classify(state, instance_name, target, &method, draft);
    }
    let caller = authenticate(state, &headers)?;
    draft.set_caller(&caller);
    let instance = state
        .instance(instance_name)
        .ok_or_else(|| AppError::not_found(format!("instance '{instance_name}' does not exist")))?;
    let target = collection_refs(target?, &instance.store.catalog());
    if caller.user_type() == UserType::DcAdmin {
        crate::support::require_grant(state, &caller, Some(instance_name), None)?;
    } else if !caller.uses_instance(state, &instance) {
        return Err(AppError::forbidden(format!(
            "user '{}' holds no security role in instance '{instance_name}'",
            caller.principal.upn
        )));
    }
    record_access(state, &instance, &caller, draft).await?;
    let (caller, delegate) = match acting_for(state, &instance, &headers, &caller)? {
        Some(user) => {
            draft.set_caller(&user);
            draft.caller_id = caller.principal.id.to_string();
            (user, Some(caller))
        }
        None => (caller, None),
    };
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than {} bytes",
                    custos_http::listener::BODY_BYTES_MAX
                ),
            )
        } else {
            AppError::bad_request(format!("the body could not be read: {e}"))
        }
    })?;
    let ieee754 = asks_ieee754(&headers, raw_query.as_deref());
    let query = custos_http::query::utf8_query_pairs(raw_query)?;
    let mut request = WebRequest {
        state: state.clone(),
        service_root: format!("{}/{instance_name}/api/data/v9.2", state.public_url()),
        instance,
        caller,
        delegate,
        method,
        headers,
        query,
        body,
        ieee754,
        upsert_key: None,
    };
    let target = match target {
        named @ (Target::EntityDefinition(_)
        | Target::Attributes(_)
        | Target::AttributesOfType(..)
        | Target::Relationships(..)
        | Target::Attribute(..)
        | Target::AttributeOfType(..)
        | Target::Keys(_)
        | Target::Key(..)) => {
            let target = by_metadata_id(named, &request)?;
            classify(state, instance_name, &target, &request.method, draft);
            target
        }
        Target::RecordByKey { set, key, tail } => {
            let id = records::find_by_key(&mut request, draft, &set, &key, tail.is_empty()).await?;
            let target = collection_refs(
                parse_target(&format!("{set}({id}){tail}"))?,
                &request.instance.store.catalog(),
            );
            classify(state, instance_name, &target, &request.method, draft);
            target
        }
        other => other,
    };
    Ok((target, request))
}

/// The user a request acts on behalf of (`MSCRMCallerID: <systemuserid>`, Dataverse's
/// impersonation), checked: `caller` holds `prvActOnBehalfOfAnotherUser` in the instance, and
/// the user is an enabled user of it who is not a support engineer. `None` without the header.
/// The request then runs as that user with only what both may do ([`WebRequest::require`]).
fn acting_for(
    state: &PlatformState,
    instance: &Instance,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Option<Caller>, AppError> {
    if headers.contains_key("CallerObjectId") {
        return Err(AppError::bad_request(
            "CallerObjectId (a Microsoft Entra ID object id) is not supported: name the user with MSCRMCallerID and their systemuserid",
        ));
    }
    let Some(value) = headers.get("MSCRMCallerID") else {
        return Ok(None);
    };
    if headers.get_all("MSCRMCallerID").iter().nth(1).is_some() {
        return Err(AppError::bad_request(
            "the request names more than one user to act on behalf of (MSCRMCallerID)",
        ));
    }
    let id = value
        .to_str()
        .ok()
        .and_then(|text| Uuid::parse_str(text.trim()).ok())
        .ok_or_else(|| AppError::bad_request("MSCRMCallerID must be a systemuserid (a GUID)"))?;
    let organization = instance
        .store
        .catalog()
        .entity(custos_records::ORGANIZATION_ENTITY)
        .cloned()
        .ok_or_else(|| AppError::new(ErrorCode::Internal, "no organization entity"))?;
    if caller.user_type() == UserType::DcAdmin
        || !allows(
            &caller.security_roles(state, instance),
            Privilege::ActOnBehalf,
            &organization,
        )
    {
        return Err(AppError::forbidden(format!(
            "user '{}' lacks the prvActOnBehalfOfAnotherUser privilege: they may not act on behalf of another user",
            caller.principal.upn
        )));
    }
    let user = state
        .directory
        .principal(id)
        .filter(|p| !p.disabled)
        .map(|principal| Caller {
            principal,
            session_id: caller.session_id,
        })
        .filter(|user| user.user_type() != UserType::DcAdmin && user.uses_instance(state, instance))
        .ok_or_else(|| {
            AppError::forbidden(format!(
                "MSCRMCallerID {id} names no enabled user of instance '{}' that may be acted for",
                instance.name
            ))
        })?;
    Ok(Some(user))
}

/// A `LookupRef` whose property is a collection-valued navigation property of its entity,
/// as the `RelatedRef` it is.
fn collection_refs(target: Target, catalog: &custos_records::Catalog) -> Target {
    match target {
        Target::LookupRef {
            set,
            id,
            lookup,
            other,
        } if catalog
            .by_set_name(&set)
            .and_then(|entity| records::related_lookup(catalog, entity, &lookup))
            .is_some() =>
        {
            Target::RelatedRef {
                set,
                id,
                navigation: lookup,
                other,
            }
        }
        target => target,
    }
}

/// Runs the handler of `target`.
async fn dispatch(
    context: &RequestContext,
    draft: &mut EventDraft,
    instance_name: &str,
    rest: &str,
    target: Target,
    request: WebRequest,
) -> Result<Response, AppError> {
    let not_allowed = || {
        AppError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not supported on '{rest}'", request.method),
        )
    };
    match (&target, request.method.clone()) {
        (target, method) if let Some((set, id, how)) = target.as_update(&method) => {
            records::update_as(request, draft, set, id, how).await
        }
        (Target::ServiceDocument, Method::GET) => Ok(metadata::service_document(&request)),
        (Target::Metadata, Method::GET) => Ok(metadata::csdl(&request)),
        (Target::Batch, Method::POST) => batch::run(request, context, instance_name).await,
        (Target::WhoAmI, Method::GET) => Ok(metadata::who_am_i(&request)),
        (Target::RetrieveVersion, Method::GET) => Ok(metadata::retrieve_version(&request)),
        (Target::RetrieveTotalRecordCount(names), Method::GET) => {
            totals::total_record_count(request, draft, names).await
        }
        (
            Target::ChangeHistory {
                function,
                parameters,
            },
            Method::GET,
        ) => history::change_history(request, draft, function, parameters).await,
        (Target::PublishAllXml, Method::POST) => metadata::publish_all(&request, draft).await,
        (Target::ExportToExcel, Method::POST) => bulk::export_to_excel(request, draft).await,
        (Target::BulkDelete, Method::POST) => bulk::bulk_delete(request, draft).await,
        (Target::ImportRecords, Method::POST) => bulk::import_records(request, draft).await,
        (Target::ImportSolution, Method::POST) => solutions::import(request, draft).await,
        (Target::GrantAccess, Method::POST) => {
            sharing::share(request, draft, sharing::Access::Grant).await
        }
        (Target::ModifyAccess, Method::POST) => {
            sharing::share(request, draft, sharing::Access::Modify).await
        }
        (Target::RevokeAccess, Method::POST) => {
            sharing::share(request, draft, sharing::Access::Revoke).await
        }
        (Target::EntityDefinitions, Method::GET) => metadata::list_entities(&request),
        (Target::EntityDefinitions, Method::POST) => metadata::create_entity(&request, draft).await,
        (Target::Attributes(entity), Method::POST) => {
            metadata::create_attribute(&request, draft, entity).await
        }
        (Target::EntityDefinition(entity), Method::DELETE) => {
            metadata::delete_entity(&request, draft, entity).await
        }
        (Target::Attribute(entity, attribute), Method::DELETE) => {
            metadata::delete_attribute(&request, draft, entity, attribute).await
        }
        (Target::EntityDefinition(entity), Method::GET) => metadata::get_entity(&request, entity),
        (Target::EntityDefinition(entity), Method::PATCH | Method::PUT) => {
            metadata::update_entity(&request, draft, entity).await
        }
        (Target::Attributes(entity), Method::GET) => {
            metadata::list_attributes(&request, entity, None)
        }
        (Target::Relationships(entity, many_to_one), Method::GET) => {
            metadata::list_relationships(&request, entity, *many_to_one)
        }
        (Target::AttributesOfType(entity, cast), Method::GET) => {
            metadata::list_attributes(&request, entity, Some(cast))
        }
        (Target::AttributeOfType(entity, attribute, cast), Method::GET) => {
            metadata::get_attribute(&request, entity, attribute, Some(cast))
        }
        (Target::Keys(entity), Method::GET) => keys::list_keys(&request, entity),
        (Target::Keys(entity), Method::POST) => keys::create_key(&request, draft, entity).await,
        (Target::Key(entity, key), Method::GET) => keys::get_key(&request, entity, key),
        (Target::Key(entity, key), Method::DELETE) => {
            keys::delete_key(&request, draft, entity, key).await
        }
        (Target::Attribute(entity, attribute), Method::GET) => {
            metadata::get_attribute(&request, entity, attribute, None)
        }
        (Target::Attribute(entity, attribute), Method::PATCH | Method::PUT) => {
            metadata::update_attribute(&request, draft, entity, attribute).await
        }
        (Target::EntitySet(set), Method::GET) if set == audits::SET => {
            audits::list(request, draft).await
        }
        (Target::Record(set, id), Method::GET) if set == audits::SET => {
            audits::one(request, draft, *id).await
        }
        (Target::BoundAction { set, id, .. }, Method::GET) if set == audits::SET => {
            audits::details(request, draft, *id).await
        }
        (Target::Count(set), Method::GET) if set == audits::SET => {
            audits::count(request, draft).await
        }
        (
            Target::EntitySet(set)
            | Target::Record(set, _)
            | Target::BoundAction { set, .. }
            | Target::Count(set),
            _,
        ) if set == audits::SET => Err(not_allowed()),
        (Target::EntitySet(set), Method::GET) => {
            records::retrieve_multiple(request, draft, set).await
        }
        (Target::EntitySet(set), Method::POST) => records::create(request, draft, set).await,
        (Target::Count(set), Method::GET) => records::count(request, draft, set).await,
        (
            Target::RelatedCount {
                set,
                id,
                navigation,
            },
            Method::GET,
        ) => records::related_count(request, draft, set, *id, navigation).await,
        (
            Target::RelatedRecord {
                set,
                id,
                navigation,
                other,
            },
            Method::GET,
        ) => records::related_record(request, draft, set, *id, navigation, *other).await,
        (Target::Record(set, id), Method::GET) => records::retrieve(request, draft, set, *id).await,
        (
            Target::Property {
                set,
                id,
                property,
                raw,
            },
            Method::GET,
        ) => records::property(request, draft, set, *id, property, *raw).await,
        (
            Target::Property {
                set,
                id,
                property,
                raw: false,
            },
            Method::POST,
        ) => records::create_related(request, draft, set, *id, property).await,
        (Target::Record(set, id), Method::PATCH) => records::update(request, draft, set, *id).await,
        (Target::Record(set, id), Method::DELETE) => {
            records::delete(request, draft, set, *id).await
        }
        (
            Target::RelatedRef {
                set,
                id,
                navigation,
                other,
            },
            Method::POST | Method::DELETE,
        ) => records::set_related_ref(request, draft, set, *id, navigation, *other).await,
        (
            Target::RelatedRef {
                set,
                id,
                navigation,
                other: None,
            },
            Method::GET,
        ) => records::related_refs(request, draft, set, *id, navigation).await,
        (Target::RelatedRef { .. }, _) => Err(not_allowed()),
        (Target::LookupRef { other: Some(_), .. }, _) => Err(AppError::not_found(format!(
            "no resource at '{rest}': only a collection-valued navigation property names one of its records"
        ))),
        (Target::Association { .. }, Method::GET | Method::POST | Method::DELETE) => {
            security::association(request, draft, &target).await
        }
        (Target::BoundAction { set, id, action }, Method::POST)
            if users::USER_ACTIONS.contains(&action.as_str()) =>
        {
            users::bound_action(request, draft, set, *id).await
        }
        (Target::BoundAction { .. }, Method::GET | Method::POST) => {
            security::bound_action(request, draft, &target).await
        }
        _ => Err(not_allowed()),
    }
}

#[cfg(test)]
mod tests;
