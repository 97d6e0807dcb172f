//! Query options over table definitions — `EntityDefinitions`, an entity's `Attributes` and
//! `Keys` — as Dataverse takes them ("Query table definitions using the Web API"): `$select`
//! of any property (`MetadataId` always shown; one Custos does not keep is left out),
//! `$filter` on properties of primitive or
//! enumeration values and one level into a complex one (`IsAuditEnabled/Value eq true`,
//! `AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'`), and on an entity
//! `$expand` of `Attributes` and `Keys` with their own `$select` and `$filter`. There is no
//! paging, so `$top`, `$skip`, `$orderby`, `$count` and `$skiptoken` are refused; so is every
//! other option. The definitions are a few hundred objects already in memory, so a filter is
//! evaluated over each one's JSON, with the records' `$filter` parser (one grammar, one set of
//! limits) and its text comparison without case.

use std::cmp::Ordering;

use custos_records::{CompareOp, Filter, Literal, QueryOptions, StringFunction};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use super::WebRequest;
use super::metadata::{
    ATTRIBUTE_PROPERTIES, ENTITY_PROPERTIES, KEY_PROPERTIES, OPTION_SET_PROPERTIES,
    RELATIONSHIP_PROPERTIES,
};
use custos_http::error::AppError;

/// What kind of definition a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `EntityMetadata`.
    Entity,
    /// `AttributeMetadata`.
    Attribute,
    /// `EntityKeyMetadata`.
    Key,
    /// `OptionSetMetadata`, a choice's options.
    OptionSet,
    /// `OneToManyRelationshipMetadata`, a lookup seen as a relationship.
    Relationship,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Entity => "EntityMetadata",
            Kind::Attribute => "AttributeMetadata",
            Kind::Key => "EntityKeyMetadata",
            Kind::OptionSet => "OptionSetMetadata",
            Kind::Relationship => "OneToManyRelationshipMetadata",
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Entity => ENTITY_PROPERTIES,
            Kind::Attribute => ATTRIBUTE_PROPERTIES,
            Kind::Key => KEY_PROPERTIES,
            Kind::OptionSet => OPTION_SET_PROPERTIES,
            Kind::Relationship => RELATIONSHIP_PROPERTIES,
        }
    }

    fn known(self, name: &str) -> Result<(), AppError> {
        if self.properties().contains(&name) {
            return Ok(());
        }
        Err(AppError::bad_request(format!(
            "'{name}' is not a property of {}; its properties are {}",
            self.type_name(),
            self.properties().join(", ")
        )))
    }
}

/// The query options of a request for definitions, checked.
#[derive(Debug, Default)]
pub(super) struct MetaQuery {
    select: Option<Vec<String>>,
    filter: Option<Filter>,
    /// `$expand=Attributes(…)`, on entities.
    pub(super) attributes: Option<Box<MetaQuery>>,
    /// `$expand=Keys(…)`, on entities.
    pub(super) keys: Option<Box<MetaQuery>>,
    /// `$expand=ManyToOneRelationships(…)`, on entities.
    pub(super) many_to_one: Option<Box<MetaQuery>>,
    /// `$expand=OneToManyRelationships(…)`, on entities.
    pub(super) one_to_many: Option<Box<MetaQuery>>,
    /// `$expand=OptionSet(…)`, on attributes: a choice's options, which its definition shows
    /// in line, shaped by their own `$select`.
    option_set: Option<Box<MetaQuery>>,
    /// `$expand=GlobalOptionSet`, on attributes: `null` on a choice, whose options are its own.
    global_option_set: bool,
}

impl MetaQuery {
    /// The options of `request` for definitions of `kind`; `one` when the path names one
    /// definition (which takes `$select` and `$expand` but not `$filter`).
    pub(super) fn read(request: &WebRequest, kind: Kind, one: bool) -> Result<MetaQuery, AppError> {
        let options = custos_records::parse_query_options(
            request.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        MetaQuery::checked(options, kind, one, "")
    }

    fn checked(
        options: QueryOptions,
        kind: Kind,
        one: bool,
        inside: &str,
    ) -> Result<MetaQuery, AppError> {
        let refused = [
            ("$orderby", !options.order_by.is_empty()),
            ("$top", options.top.is_some()),
            ("$count", options.count),
            ("$skiptoken", options.after.is_some()),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, given)| *given) {
            return Err(AppError::bad_request(format!(
                "{name}{inside} is not supported on table definitions: every matching definition is returned at once, unordered and without paging"
            )));
        }
        if one && options.filter.is_some() {
            return Err(AppError::bad_request(
                "$filter applies to a collection of definitions, not to one",
            ));
        }
        // Dataverse's definitions have about a hundred properties, and clients select many of
        // them; one Custos does not keep is left out of the answer (a projection shows less,
        // never something wrong) where a filter on it is refused.
        if let Some(names) = &options.select {
            for name in names {
                if !name.starts_with(|c: char| c.is_ascii_uppercase())
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(AppError::bad_request(format!(
                        "'{name}' in $select is not the name of a property of {}",
                        kind.type_name()
                    )));
                }
            }
        }
        if let Some(filter) = &options.filter {
            check_members(filter, kind)?;
        }
        let mut query = MetaQuery {
            select: options.select,
            filter: options.filter,
            ..MetaQuery::default()
        };
        let mut global = None;
        for expand in options.expand {
            let (slot, expanded, one) = match (kind, expand.property.as_str()) {
                (Kind::Entity, "Attributes") => (&mut query.attributes, Kind::Attribute, false),
                (Kind::Entity, "Keys") => (&mut query.keys, Kind::Key, false),
                (Kind::Entity, "ManyToOneRelationships") => {
                    (&mut query.many_to_one, Kind::Relationship, false)
                }
                (Kind::Entity, "OneToManyRelationships") => {
                    (&mut query.one_to_many, Kind::Relationship, false)
                }
                (Kind::Attribute, "OptionSet") => (&mut query.option_set, Kind::OptionSet, true),
                (Kind::Attribute, "GlobalOptionSet") => (&mut global, Kind::OptionSet, true),
                (_, property) => {
                    return Err(AppError::bad_request(format!(
                        "$expand of '{property}' is not supported on {}{}",
                        kind.type_name(),
                        match kind {
                            Kind::Entity => {
                                ": expand Attributes, Keys, ManyToOneRelationships or OneToManyRelationships"
                            }
                            Kind::Attribute => ": expand OptionSet or GlobalOptionSet",
                            Kind::Key | Kind::OptionSet | Kind::Relationship => "",
                        }
                    )));
                }
            };
            if slot.is_some() {
                return Err(AppError::bad_request(format!(
                    "'{}' is expanded more than once",
                    expand.property
                )));
            }
            let nested = format!(" inside $expand={}", expand.property);
            *slot = Some(Box::new(MetaQuery::checked(
                expand.options,
                expanded,
                one,
                &nested,
            )?));
        }
        query.global_option_set = global.is_some();
        Ok(query)
    }

    /// Whether `definition` (its whole JSON) passes `$filter`.
    pub(super) fn keeps(&self, definition: &Map<String, Json>) -> Result<bool, AppError> {
        self.filter
            .as_ref()
            .map_or(Ok(true), |filter| holds(filter, definition))
    }

    /// `definition` with only the properties `$select` names (and `MetadataId`, which
    /// Dataverse always returns, and annotations such as `@odata.type`), in its own order.
    pub(super) fn shape(&self, mut definition: Map<String, Json>) -> Map<String, Json> {
        if self.global_option_set && definition.contains_key("OptionSet") {
            definition.insert("GlobalOptionSet".into(), Json::Null);
        }
        if let Some(nested) = &self.option_set
            && let Some(Json::Object(set)) = definition.get_mut("OptionSet")
        {
            *set = nested.shape(std::mem::take(set));
        }
        let Some(names) = &self.select else {
            return definition;
        };
        let expanded = |key: &str| match key {
            "Attributes" => self.attributes.is_some(),
            "Keys" => self.keys.is_some(),
            "ManyToOneRelationships" => self.many_to_one.is_some(),
            "OneToManyRelationships" => self.one_to_many.is_some(),
            "OptionSet" => self.option_set.is_some(),
            "GlobalOptionSet" => self.global_option_set,
            _ => false,
        };
        definition
            .into_iter()
            .filter(|(key, _)| {
                key.starts_with('@')
                    || key == "MetadataId"
                    || names.iter().any(|name| name == key)
                    || expanded(key)
            })
            .collect()
    }

    /// The `(A,B)` an `@odata.context` carries after a selection's path, or nothing.
    pub(super) fn context_selection(&self) -> String {
        self.select
            .as_ref()
            .map(|names| format!("({})", names.join(",")))
            .unwrap_or_default()
    }

    /// Each of `definitions` that passes `$filter`, shaped by `$select`.
    pub(super) fn apply(
        &self,
        definitions: impl IntoIterator<Item = Map<String, Json>>,
    ) -> Result<Vec<Json>, AppError> {
        let mut out = Vec::new();
        for definition in definitions {
            if self.keeps(&definition)? {
                out.push(Json::Object(self.shape(definition)));
            }
        }
        Ok(out)
    }
}

/// Refuses a filter naming anything but properties of `kind` (a path only into a complex
/// property), or comparing two properties.
fn check_members(filter: &Filter, kind: Kind) -> Result<(), AppError> {
    match filter {
        Filter::And(left, right) | Filter::Or(left, right) => {
            check_members(left, kind)?;
            check_members(right, kind)
        }
        Filter::Not(inner) => check_members(inner, kind),
        Filter::Constant(_) => Ok(()),
        Filter::Compare { attribute, .. } | Filter::Function { attribute, .. } => {
            let first = attribute.split('/').next().unwrap_or_default();
            kind.known(first)?;
            if attribute.split('/').count() > 2 {
                return Err(AppError::bad_request(format!(
                    "'{attribute}' goes deeper than one property of a complex value"
                )));
            }
            Ok(())
        }
        Filter::CompareAttributes { left, right, .. } => Err(AppError::bad_request(format!(
            "'{left}' and '{right}': a filter on table definitions compares a property with a value"
        ))),
    }
}

fn holds(filter: &Filter, definition: &Map<String, Json>) -> Result<bool, AppError> {
    Ok(match filter {
        Filter::And(left, right) => holds(left, definition)? && holds(right, definition)?,
        Filter::Or(left, right) => holds(left, definition)? || holds(right, definition)?,
        Filter::Not(inner) => !holds(inner, definition)?,
        Filter::Constant(value) => *value,
        Filter::Compare {
            attribute,
            op,
            value,
        } => compare(attribute, member(definition, attribute)?, *op, value)?,
        Filter::Function {
            function,
            attribute,
            value,
        } => match member(definition, attribute)? {
            Json::Null => false,
            Json::String(text) => {
                let (text, value) = (
                    custos_records::fold_case(text),
                    custos_records::fold_case(value),
                );
                match function {
                    StringFunction::Contains => text.contains(&value),
                    StringFunction::StartsWith => text.starts_with(&value),
                    StringFunction::EndsWith => text.ends_with(&value),
                }
            }
            _ => {
                return Err(AppError::bad_request(format!(
                    "{}() takes a text property; '{attribute}' is not one",
                    function.as_str()
                )));
            }
        },
        Filter::CompareAttributes { .. } => unreachable!("refused by check_members"),
    })
}

/// The value at `path` (a property, or `Property/Value`), `null` where the definition has
/// none (a `MaxLength` of a number); a complex value or a collection is refused.
fn member<'d>(definition: &'d Map<String, Json>, path: &str) -> Result<&'d Json, AppError> {
    const NULL: &Json = &Json::Null;
    let mut at: Option<&Json> = None;
    for (depth, name) in path.split('/').enumerate() {
        at = match (depth, at) {
            (0, _) => definition.get(name),
            (_, Some(Json::Object(inner))) => inner.get(name),
            (_, _) => None,
        };
    }
    match at {
        None | Some(Json::Null) => Ok(NULL),
        Some(Json::Object(_)) => Err(AppError::bad_request(format!(
            "'{path}' is a complex value: compare one of its properties, e.g. {path}/Value"
        ))),
        Some(Json::Array(_)) => Err(AppError::bad_request(format!(
            "'{path}' is a collection and cannot be compared"
        ))),
        Some(value) => Ok(value),
    }
}

fn compare(path: &str, value: &Json, op: CompareOp, literal: &Literal) -> Result<bool, AppError> {
    let equality = matches!(op, CompareOp::Eq | CompareOp::Ne);
    let ordering = match (value, literal) {
        (Json::Null, Literal::Null) => Some(Ordering::Equal),
        (Json::Null, _) | (_, Literal::Null) => return Ok(op == CompareOp::Ne),
        (Json::String(text), Literal::String(other) | Literal::Enum { member: other, .. }) => {
            Some(custos_records::compare_without_case(text, other))
        }
        (Json::String(text), Literal::Guid(id)) if equality => {
            Uuid::parse_str(text).ok().map(|own| own.cmp(id))
        }
        (Json::Bool(own), Literal::Boolean(other)) if equality => Some(own.cmp(other)),
        (Json::Number(own), Literal::Integer(other)) => own
            .as_f64()
            .and_then(|own| own.partial_cmp(&(*other as f64))),
        (Json::Number(own), Literal::Decimal(other)) => own
            .as_f64()
            .zip(other.parse::<f64>().ok())
            .and_then(|(own, other)| own.partial_cmp(&other)),
        _ => None,
    };
    ordering.map(|o| op.holds(o)).ok_or_else(|| {
        AppError::bad_request(format!(
            "'{path}' ({value}) cannot be compared with {literal} by {}",
            op.as_str()
        ))
    })
}

#[cfg(test)]
mod tests;
