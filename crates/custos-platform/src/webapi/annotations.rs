//! What a record's JSON says beyond its values, as the client asks: instance annotations under
//! `Prefer: odata.include-annotations="…"` (formatted values; a lookup's target entity and
//! navigation property) and the control information of `odata.metadata=full`.
//!
//! A lookup's formatted value is the name of the record it points at — a value of another
//! record, so the caller needs read on that entity (without it the name is left out), and the
//! records whose names are shown are recorded like an expansion's (`expand::record_seen`).

use std::collections::{BTreeMap, BTreeSet};

use custos_records::{
    AttributeDef, AttributeType, EntityDef, PAGE_SIZE_MAX, Privilege, QueryOptions, Record,
    RecordQuery, Value,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::expand::{Seen, any_of};
use custos_http::blocking;
use custos_http::error::AppError;

/// A value as a person reads it.
pub(super) const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
/// The entity a lookup points at.
const LOOKUP_ENTITY: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";
/// The navigation property of a lookup.
const NAVIGATION: &str = "Microsoft.Dynamics.CRM.associatednavigationproperty";

/// How the records of one answer are presented.
#[derive(Debug, Default)]
pub(super) struct Presentation {
    /// `include-annotations` patterns: `*`, `namespace.*` or a term.
    include: Vec<String>,
    /// Excluded patterns (`-term`).
    exclude: Vec<String>,
    /// The preference as given, for `Preference-Applied`.
    preference: Option<String>,
    /// `odata.metadata=full`: type, id and links of every record.
    full: bool,
    /// Names of the records lookups point at, by id.
    names: BTreeMap<Uuid, String>,
}

/// The preferences of a `Prefer` header, split at commas outside quotes.
fn preferences(header: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(header[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(header[start..].trim());
    parts
}

fn matches(pattern: &str, term: &str) -> bool {
    pattern == "*"
        || pattern == term
        || pattern.strip_suffix(".*").is_some_and(|namespace| {
            term.strip_prefix(namespace)
                .is_some_and(|t| t.starts_with('.'))
        })
}

impl Presentation {
    /// The presentation `request` asks for.
    pub(super) fn of(request: &WebRequest) -> Presentation {
        let mut presentation = Presentation {
            full: request
                .header("accept")
                .is_some_and(|a| a.contains("odata.metadata=full")),
            ..Presentation::default()
        };
        let prefer = request.prefer();
        for preference in prefer.as_deref().map(preferences).unwrap_or_default() {
            let Some(value) = preference.strip_prefix("odata.include-annotations=") else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            for pattern in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match pattern.strip_prefix('-') {
                    Some(excluded) => presentation.exclude.push(excluded.to_string()),
                    None => presentation.include.push(pattern.to_string()),
                }
            }
            presentation.preference = Some(format!("odata.include-annotations=\"{value}\""));
        }
        presentation
    }

    /// Whether the client asked for annotations of `term`.
    pub(super) fn wants(&self, term: &str) -> bool {
        self.include.iter().any(|p| matches(p, term))
            && !self.exclude.iter().any(|p| matches(p, term))
    }

    /// The `Preference-Applied` part of the annotations preference, when one was given.
    pub(super) fn applied(&self) -> Option<&str> {
        self.preference.as_deref()
    }

    /// Reads the names of the records the lookups of `records` point at, when their formatted
    /// values are wanted; returns the records whose names will be shown, by entity.
    pub(super) async fn read_lookup_names(
        &mut self,
        request: &WebRequest,
        entity: &EntityDef,
        records: &[Record],
        select: Option<&[String]>,
    ) -> Result<Vec<Seen>, AppError> {
        if !self.wants(FORMATTED) {
            return Ok(Vec::new());
        }
        let catalog = request.instance.store.catalog();
        let mut targets: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
        for attribute in &entity.attributes {
            let AttributeType::Lookup { target, .. } = &attribute.attribute_type else {
                continue;
            };
            if !super::records::selected(attribute, select) {
                continue;
            }
            for record in records {
                if let Some(Value::Guid(id)) = record.values.get(&attribute.logical_name) {
                    targets.entry(target.clone()).or_default().insert(*id);
                }
            }
        }
        let mut seen = Vec::new();
        for (target, ids) in targets {
            let Some(shows) = catalog.entity(&target).cloned() else {
                continue;
            };
            let Some(name) = shows.primary_name.clone() else {
                continue;
            };
            if request.require(Privilege::Read, &shows).is_err() {
                continue;
            }
            let ids: Vec<Uuid> = ids.into_iter().collect();
            let options = QueryOptions {
                filter: Some(any_of(&shows.primary_id(), &ids)),
                select: Some(vec![name.clone()]),
                ..QueryOptions::default()
            };
            let store = request.instance.store.clone();
            let logical_name = shows.logical_name.clone();
            let found = blocking(move || -> Result<Vec<Record>, AppError> {
                Ok(store
                    .retrieve_multiple(&RecordQuery {
                        entity: &logical_name,
                        options: &options,
                        page_size: PAGE_SIZE_MAX.max(ids.len() as u64),
                    })?
                    .records)
            })
            .await?;
            let mut shown = BTreeSet::new();
            for record in found {
                if let Some(Value::String(text)) = record.values.get(&name) {
                    self.names.insert(record.id, text.clone());
                    shown.insert(record.id);
                }
            }
            seen.push(Seen {
                entity: shows,
                ids: shown,
                details: json!({"FormattedValueOf": entity.logical_name}),
            });
        }
        Ok(seen)
    }

    /// `body` (a record's JSON from `record_json`) with the control information and the
    /// annotations asked for, each annotation just before its property.
    pub(super) fn present(
        &self,
        request: &WebRequest,
        entity: &EntityDef,
        record: &Record,
        body: Map<String, Json>,
    ) -> Map<String, Json> {
        if !self.full && self.include.is_empty() {
            return body;
        }
        let mut out = Map::with_capacity(body.len() * 2);
        let catalog = request.instance.store.catalog();
        if self.full {
            let id = format!("{}({})", entity.set_name, record.id);
            out.insert(
                "@odata.type".into(),
                json!(format!("#Microsoft.Dynamics.CRM.{}", entity.logical_name)),
            );
            out.insert(
                "@odata.id".into(),
                json!(format!("{}/{id}", request.service_root)),
            );
            if let Some(etag) = body.get("@odata.etag") {
                out.insert("@odata.etag".into(), etag.clone());
            }
            out.insert("@odata.editLink".into(), json!(id));
        }
        self.annotate(entity, &record.values, body, &mut out);
        if self.full {
            for navigation in catalog.navigations(entity) {
                out.insert(
                    format!("{}@odata.navigationLink", navigation.name),
                    json!(format!(
                        "{}({})/{}",
                        entity.set_name, record.id, navigation.name
                    )),
                );
            }
        }
        out
    }

    /// `body`'s properties into `out`, each attribute's annotations asked for just before it
    /// (`values` are the stored values the properties show).
    pub(super) fn annotate(
        &self,
        entity: &EntityDef,
        values: &BTreeMap<String, Value>,
        body: Map<String, Json>,
        out: &mut Map<String, Json>,
    ) {
        for (key, value) in body {
            if key.starts_with('@') {
                out.entry(key).or_insert(value);
                continue;
            }
            let Some(attribute) = entity.attribute_by_web_name(&key) else {
                out.insert(key, value);
                continue;
            };
            let stored = values.get(&attribute.logical_name);
            if self.full
                && let Some(kind) = json_type(&attribute.attribute_type)
                && !value.is_null()
            {
                out.insert(format!("{key}@odata.type"), json!(kind));
            }
            if let AttributeType::Lookup { target, .. } = &attribute.attribute_type
                && !value.is_null()
            {
                if self.wants(NAVIGATION) {
                    out.insert(format!("{key}@{NAVIGATION}"), json!(attribute.logical_name));
                }
                if self.wants(LOOKUP_ENTITY) {
                    out.insert(format!("{key}@{LOOKUP_ENTITY}"), json!(target));
                }
            }
            if self.wants(FORMATTED)
                && let Some(text) = stored.and_then(|v| self.formatted(attribute, v))
            {
                out.insert(format!("{key}@{FORMATTED}"), json!(text));
            }
            out.insert(key, value);
        }
    }

    /// An aggregate's value as a person reads it, when formatted values are wanted: numbers
    /// grouped in thousands (two decimals for a decimal), a date and time as `source`'s.
    pub(super) fn formatted_aggregate(
        &self,
        source: Option<&AttributeDef>,
        value: &Value,
    ) -> Option<String> {
        if !self.wants(FORMATTED) {
            return None;
        }
        match value {
            Value::Integer(n) => Some(grouped(&n.to_string())),
            Value::Decimal(n) => Some(grouped(&format!("{n:.2}"))),
            _ => self.formatted(source?, value),
        }
    }

    /// A value as a person reads it (Dataverse's en-US forms, times in UTC).
    fn formatted(&self, attribute: &AttributeDef, value: &Value) -> Option<String> {
        Some(match (&attribute.attribute_type, value) {
            (_, Value::Null) => return None,
            (AttributeType::Lookup { .. }, Value::Guid(id)) => self.names.get(id)?.clone(),
            (AttributeType::Integer | AttributeType::BigInt, Value::Integer(n)) => {
                grouped(&n.to_string())
            }
            (AttributeType::Choice, Value::Integer(n)) => attribute
                .label(*n)
                .map_or_else(|| n.to_string(), str::to_string),
            (AttributeType::Decimal | AttributeType::Money, Value::Decimal(n)) => {
                grouped(&format!("{n:.2}"))
            }
            (AttributeType::Boolean, Value::Boolean(b)) => if *b { "Yes" } else { "No" }.into(),
            // The stored form, `YYYY-MM-DDTHH:MM:SSZ`.
            (AttributeType::DateTime, Value::DateTime(text)) => {
                let part = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
                let (year, month, day) = (part(0..4)?, part(5..7)?, part(8..10)?);
                let (hour, half) = match part(11..13)? {
                    0 => (12, "AM"),
                    h @ 1..=11 => (h, "AM"),
                    12 => (12, "PM"),
                    h => (h - 12, "PM"),
                };
                format!("{month}/{day}/{year} {hour}:{:02} {half}", part(14..16)?)
            }
            _ => return None,
        })
    }
}

/// The `@odata.type` full metadata gives a value whose JSON type does not say its EDM type.
fn json_type(attribute_type: &AttributeType) -> Option<&'static str> {
    match attribute_type {
        AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => Some("#Guid"),
        AttributeType::DateTime => Some("#DateTimeOffset"),
        AttributeType::Decimal | AttributeType::Money => Some("#Decimal"),
        AttributeType::BigInt => Some("#Int64"),
        _ => None,
    }
}

/// A number's digits in groups of three (`-1234567.50` → `-1,234,567.50`).
fn grouped(number: &str) -> String {
    let (sign, unsigned) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut out = String::from(sign);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_in_thousands() {
        for (number, expected) in [
            ("0", "0"),
            ("999", "999"),
            ("1000", "1,000"),
            ("-1234567.50", "-1,234,567.50"),
            ("100000.00", "100,000.00"),
        ] {
            assert_eq!(grouped(number), expected);
        }
    }

    #[test]
    fn preferences_split_outside_quotes_and_patterns_match_terms() {
        assert_eq!(
            preferences("odata.include-annotations=\"a.*,b\", odata.maxpagesize=5"),
            ["odata.include-annotations=\"a.*,b\"", "odata.maxpagesize=5"]
        );
        assert!(matches("*", FORMATTED));
        assert!(matches("OData.Community.Display.V1.*", FORMATTED));
        assert!(!matches("OData.Community.*x", FORMATTED));
        assert!(!matches("Microsoft.Dynamics.CRM.*", FORMATTED));
        assert!(matches("Microsoft.Dynamics.CRM.*", LOOKUP_ENTITY));
        assert!(!matches("Microsoft.Dynamics.*.x", LOOKUP_ENTITY));
    }
}
