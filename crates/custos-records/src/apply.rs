//! OData's `$apply` (the Data Aggregation Extension), the part of it Dataverse answers:
//! `filter(…)` transformations followed by one `groupby((a,b))`, `groupby((a,b),aggregate(…))`
//! or `aggregate(…)`, whose aggregates are `x with sum|average|min|max|countdistinct as alias`
//! and `$count as alias`; `$orderby` by grouped attributes beside it.
//!
//! An aggregation is computed here from the records the query reads — read by the one list
//! query every page takes (the same filter parser, typing and SQL), so the records an answer
//! was made from are exactly the records its event lists. As Dataverse's, it reads at most
//! [`AGGREGATE_RECORDS_MAX`] records; a query over more is refused, not answered in part.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::filter::{Filter, FilterContext, parse_filter_in};
use crate::metadata::{AttributeDef, AttributeType, EntityDef};
use crate::options::split_top;
use crate::store::Record;
use crate::{Error, Result, Value};
use uuid::Uuid;

/// The most records an aggregation reads, as Dataverse's (its `AggregateQueryRecordLimit`).
pub const AGGREGATE_RECORDS_MAX: usize = 50_000;

/// What an aggregate computes over the records of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `sum`: of a number's values.
    Sum,
    /// `average`: of a number's values, as a decimal.
    Average,
    /// `min`: of a number's or a date and time's values.
    Min,
    /// `max`: likewise.
    Max,
    /// `countdistinct`: how many different values (text compared without case, as every
    /// comparison).
    CountDistinct,
    /// FetchXML's `countcolumn`: how many records hold a value.
    CountColumn,
    /// `$count`: how many records.
    Count,
}

/// One aggregate of an `aggregate(…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The attribute's logical name; `None` for `$count`.
    pub attribute: Option<String>,
    /// What is computed.
    pub method: Method,
    /// The property it is answered as.
    pub alias: String,
}

/// What an aggregation's rows are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    /// A grouped attribute (an index into `group_by`).
    Group(usize),
    /// An aggregate's value (an index into `aggregates`; FetchXML only).
    Aggregate(usize),
}

/// An aggregation (a `$apply`, or a FetchXML query with `aggregate='true'`), read and checked
/// against its entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Apply {
    /// The records aggregated: the `filter(…)` transformations, together.
    pub filter: Option<Filter>,
    /// The grouped attributes' logical names, in the order written.
    pub group_by: Vec<String>,
    /// The property each group's value is answered as: the attribute's Web API name in
    /// `$apply`, its alias in FetchXML.
    pub group_names: Vec<String>,
    /// The aggregates, in the order written.
    pub aggregates: Vec<Aggregate>,
    /// `$orderby` (FetchXML's `<order alias>`), descending or not; then the groups' values.
    pub order: Vec<(OrderKey, bool)>,
    /// FetchXML's `top`: at most this many rows.
    pub top: Option<usize>,
}

impl Apply {
    /// The logical names of the attributes the aggregation reads of each record.
    pub fn attributes(&self) -> Vec<String> {
        let mut names = self.group_by.clone();
        for name in self.aggregates.iter().filter_map(|a| a.attribute.as_ref()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// One row of an aggregation's answer: the group's values (in `group_by`'s order) and the
/// aggregates' (in `aggregates`' order).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The grouped attributes' values.
    pub group: Vec<Value>,
    /// The aggregates' values.
    pub values: Vec<Value>,
    /// The records whose values went into the row.
    pub members: Vec<Uuid>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::BadRequest(message.into())
}

/// `name(arguments)` → `(name, arguments)`.
fn call(text: &str) -> Result<(&str, &str)> {
    let text = text.trim();
    let (name, rest) = text.split_once('(').ok_or_else(|| {
        bad(format!(
            "$apply: '{text}' is not a transformation (name(…))"
        ))
    })?;
    let arguments = rest.strip_suffix(')').ok_or_else(|| {
        bad(format!(
            "$apply: the transformation '{text}' has text after its ')'"
        ))
    })?;
    Ok((name.trim(), arguments))
}

/// An attribute of `entity` named in `$apply` (its logical or Web API name).
fn attribute<'e>(entity: &'e EntityDef, name: &str) -> Result<&'e AttributeDef> {
    if name.contains('/') {
        return Err(bad(format!(
            "$apply: '{name}' is a related record's attribute; aggregate and group by the attributes of {} (a lookup as _name_value)",
            entity.logical_name
        )));
    }
    entity.attribute_by_web_name(name).ok_or_else(|| {
        bad(format!(
            "$apply: attribute '{name}' does not exist on entity '{}'",
            entity.logical_name
        ))
    })
}

fn is_number(attribute_type: &AttributeType) -> bool {
    matches!(
        attribute_type,
        AttributeType::Integer
            | AttributeType::BigInt
            | AttributeType::Decimal
            | AttributeType::Money
    )
}

/// Reads `aggregate(x with sum as total, $count as n)`'s arguments.
fn read_aggregates(entity: &EntityDef, arguments: &str) -> Result<Vec<Aggregate>> {
    let mut aggregates = Vec::new();
    for expression in split_top(arguments, ',')? {
        let words: Vec<&str> = expression.split_whitespace().collect();
        let (attribute, method, alias) = match words.as_slice() {
            ["$count", "as", alias] => (None, Method::Count, *alias),
            [name, "with", method, "as", alias] => {
                let attribute = attribute(entity, name)?;
                let method = match *method {
                    "sum" => Method::Sum,
                    "average" => Method::Average,
                    "min" => Method::Min,
                    "max" => Method::Max,
                    "countdistinct" => Method::CountDistinct,
                    other => {
                        return Err(bad(format!(
                            "$apply: '{other}' is not an aggregation method; use sum, average, min, max or countdistinct"
                        )));
                    }
                };
                check_method(attribute, method).map_err(|e| bad(format!("$apply: {e}")))?;
                (Some(attribute.logical_name.clone()), method, *alias)
            }
            _ => {
                return Err(bad(format!(
                    "$apply: '{}' is not an aggregate; write 'attribute with method as alias' or '$count as alias'",
                    expression.trim()
                )));
            }
        };
        aggregates.push(Aggregate {
            attribute,
            method,
            alias: alias.to_string(),
        });
    }
    Ok(aggregates)
}

/// Whether `method` can be computed over `attribute`'s values: sums and averages of numbers,
/// the least and greatest of numbers and dates; the message says why not.
pub(crate) fn check_method(
    attribute: &AttributeDef,
    method: Method,
) -> std::result::Result<(), String> {
    let kind = &attribute.attribute_type;
    let fits = match method {
        Method::Sum | Method::Average => is_number(kind),
        Method::Min | Method::Max => is_number(kind) || matches!(kind, AttributeType::DateTime),
        // A memo's values are long text, and are neither grouped nor compared, as in
        // Dataverse; counting records reads no value.
        Method::CountDistinct | Method::CountColumn => !matches!(kind, AttributeType::Memo),
        Method::Count => true,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{} of '{}' is not possible: it is {}",
            method.name(),
            attribute.logical_name,
            kind.name()
        ))
    }
}

/// Whether the records can be grouped by `attribute`'s values: not a date and time (Dataverse
/// groups those by a period, which is not supported) nor a memo (long text).
pub(crate) fn check_group(attribute: &AttributeDef) -> std::result::Result<(), String> {
    let why = match attribute.attribute_type {
        AttributeType::DateTime => "Dataverse groups a date and time by a period, not by its value",
        AttributeType::Memo => "long text is neither grouped nor compared",
        _ => return Ok(()),
    };
    Err(format!(
        "grouping by '{}' is not supported: it is {} ({why})",
        attribute.logical_name,
        attribute.attribute_type.name()
    ))
}

impl Method {
    /// The method as `$apply` and FetchXML write it.
    fn name(self) -> &'static str {
        match self {
            Method::Sum => "sum",
            Method::Average => "average",
            Method::Min => "min",
            Method::Max => "max",
            Method::CountDistinct => "countdistinct",
            Method::CountColumn => "countcolumn",
            Method::Count => "count",
        }
    }
}

/// Reads `groupby((a,b))` or `groupby((a,b),aggregate(…))`'s arguments.
fn read_group_by(entity: &EntityDef, arguments: &str) -> Result<(Vec<String>, Vec<Aggregate>)> {
    let parts = split_top(arguments, ',')?;
    let properties = parts[0]
        .trim()
        .strip_prefix('(')
        .and_then(|p| p.strip_suffix(')'))
        .ok_or_else(|| {
            bad(format!(
                "$apply: groupby's first argument is the attributes in parentheses, groupby((a,b)); got '{}'",
                parts[0].trim()
            ))
        })?;
    let mut group_by = Vec::new();
    for name in properties.split(',').map(str::trim) {
        let attribute = attribute(entity, name)?;
        check_group(attribute).map_err(|e| bad(format!("$apply: {e}")))?;
        if group_by.contains(&attribute.logical_name) {
            return Err(bad(format!("$apply: '{name}' is grouped by twice")));
        }
        group_by.push(attribute.logical_name.clone());
    }
    let aggregates = match parts.get(1..).unwrap_or_default() {
        [] => Vec::new(),
        [inner] => match call(inner)? {
            ("aggregate", arguments) => read_aggregates(entity, arguments)?,
            (name, _) => {
                return Err(bad(format!(
                    "$apply: groupby takes an aggregate(…) after its attributes, not {name}(…)"
                )));
            }
        },
        _ => {
            return Err(bad(
                "$apply: groupby takes its attributes and at most one aggregate(…)",
            ));
        }
    };
    Ok((group_by, aggregates))
}

/// Reads `$apply` (and its `$orderby`, when given) for `entity`. Query functions in its
/// filters (`Microsoft.Dynamics.CRM.LastXDays(…)`) are relative to `context`.
pub fn read_apply(
    entity: &EntityDef,
    text: &str,
    order_by: Option<&str>,
    context: Option<&FilterContext>,
) -> Result<Apply> {
    if text.len() > crate::filter::FILTER_BYTES_MAX {
        return Err(bad(format!(
            "$apply is longer than {} bytes",
            crate::filter::FILTER_BYTES_MAX
        )));
    }
    let mut filter: Option<Filter> = None;
    let mut shape: Option<(Vec<String>, Vec<Aggregate>)> = None;
    for transformation in split_top(text, '/')? {
        let (name, arguments) = call(transformation)?;
        if shape.is_some() {
            return Err(bad(format!(
                "$apply: nothing may follow groupby or aggregate (found {name}(…)); filter first, as filter(…)/groupby(…)"
            )));
        }
        match name {
            "filter" => {
                let next = parse_filter_in(arguments, context)?;
                filter = Some(match filter.take() {
                    Some(before) => Filter::And(Box::new(before), Box::new(next)),
                    None => next,
                });
            }
            "groupby" => shape = Some(read_group_by(entity, arguments)?),
            "aggregate" => shape = Some((Vec::new(), read_aggregates(entity, arguments)?)),
            other => {
                return Err(bad(format!(
                    "$apply: the transformation {other}(…) is not supported; use filter, groupby and aggregate"
                )));
            }
        }
    }
    let (group_by, aggregates) = shape.ok_or_else(|| {
        bad("$apply: a filter alone is a $filter; end it with groupby(…) or aggregate(…)")
    })?;
    let mut names: Vec<String> = group_by
        .iter()
        .filter_map(|g| entity.attribute(g))
        .map(AttributeDef::web_name)
        .collect();
    let group_by_len = names.len();
    for aggregate in &aggregates {
        let alias = &aggregate.alias;
        if entity
            .attribute_by_web_name(&alias.to_lowercase())
            .is_some()
        {
            return Err(bad(format!(
                "$apply: the alias '{alias}' names an attribute of {}",
                entity.logical_name
            )));
        }
        check_alias(alias, &names).map_err(|e| bad(format!("$apply: {e}")))?;
        names.push(alias.clone());
    }
    let mut order = Vec::new();
    for term in order_by.into_iter().flat_map(|text| text.split(',')) {
        let words: Vec<&str> = term.split_whitespace().collect();
        let (name, descending) = match words.as_slice() {
            [name] | [name, "asc"] => (*name, false),
            [name, "desc"] => (*name, true),
            _ => {
                return Err(bad(format!(
                    "$orderby term '{}' is not 'attribute [asc|desc]'",
                    term.trim()
                )));
            }
        };
        if aggregates.iter().any(|a| a.alias == name) {
            return Err(bad(format!(
                "$orderby by an aggregate value ('{name}') is not supported, as in Dataverse; order by the grouped attributes"
            )));
        }
        let attribute = attribute(entity, name)?;
        let index = group_by
            .iter()
            .position(|g| *g == attribute.logical_name)
            .ok_or_else(|| {
                bad(format!(
                    "$orderby with $apply orders by the grouped attributes; '{name}' is not one"
                ))
            })?;
        order.push((OrderKey::Group(index), descending));
    }
    Ok(Apply {
        filter,
        group_by,
        group_names: names.drain(..group_by_len).collect(),
        aggregates,
        order,
        top: None,
    })
}

/// Whether `alias` can name a property of an aggregation's answer beside `taken`: a name
/// (letters, digits and `_`, not first a digit) that no other property has, whatever the case.
pub(crate) fn check_alias(alias: &str, taken: &[String]) -> std::result::Result<(), String> {
    let mut chars = alias.chars();
    if !chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "the alias '{alias}' is not a name (letters, digits and _, not first a digit)"
        ));
    }
    if taken.iter().any(|n| n.eq_ignore_ascii_case(alias)) {
        return Err(format!(
            "the alias '{alias}' names another property of the answer"
        ));
    }
    Ok(())
}

/// A value as grouping and counting tell values apart: text without case, as every
/// comparison of the store (`NOCASE`, `citext`).
fn key(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(crate::caseless::fold(text)),
        Value::Decimal(n) if *n == 0.0 => Value::Decimal(0.0),
        other => other.clone(),
    }
}

/// The hashable form of [`key`].
fn key_text(value: &Value) -> String {
    match key(value) {
        Value::Null => String::new(),
        Value::String(text) => format!("s{text}"),
        Value::Integer(n) => format!("i{n}"),
        Value::Decimal(n) => format!("d{}", n.to_bits()),
        Value::Boolean(b) => format!("b{b}"),
        Value::DateTime(text) => format!("t{text}"),
        Value::Guid(id) => format!("g{id}"),
    }
}

/// The order of two values of one attribute: nothing first, text without case (then with).
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(a), Value::String(b)) => {
            crate::caseless::compare(a, b).then_with(|| a.cmp(b))
        }
        (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
        (Value::Decimal(a), Value::Decimal(b)) => a.total_cmp(b),
        (Value::Boolean(a), Value::Boolean(b)) => a.cmp(b),
        (Value::DateTime(a), Value::DateTime(b)) => a.cmp(b),
        (Value::Guid(a), Value::Guid(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

/// `x` to the 15 significant digits a decimal attribute holds, so that a sum of amounts reads
/// as their decimal sum (0.1 + 0.2 = 0.3), not as the binary one's last digits.
fn significant(x: f64) -> f64 {
    format!("{x:.14e}").parse().unwrap_or(x)
}

/// Computes aggregate `aggregate` of `records` (of `entity`).
fn compute(entity: &EntityDef, aggregate: &Aggregate, records: &[&Record]) -> Result<Value> {
    let name = match (&aggregate.attribute, aggregate.method) {
        (Some(name), method) if method != Method::Count => name,
        _ => return Ok(Value::Integer(records.len() as i64)),
    };
    let values = records
        .iter()
        .filter_map(|r| r.values.get(name))
        .filter(|v| !matches!(v, Value::Null));
    let decimal = entity.attribute(name).is_some_and(|a| {
        matches!(
            a.attribute_type,
            AttributeType::Decimal | AttributeType::Money
        )
    });
    Ok(match aggregate.method {
        Method::Count => unreachable!("$count names no attribute"),
        Method::CountColumn => Value::Integer(values.count() as i64),
        Method::CountDistinct => {
            let distinct: std::collections::HashSet<String> = values.map(key_text).collect();
            Value::Integer(distinct.len() as i64)
        }
        Method::Min => values
            .min_by(|a, b| compare(a, b))
            .cloned()
            .unwrap_or(Value::Null),
        Method::Max => values
            .max_by(|a, b| compare(a, b))
            .cloned()
            .unwrap_or(Value::Null),
        Method::Sum | Method::Average => {
            let (mut whole, mut fraction, mut count) = (0i128, 0f64, 0u64);
            for value in values {
                match value {
                    Value::Integer(n) => whole += i128::from(*n),
                    Value::Decimal(n) => fraction += n,
                    _ => {}
                }
                count += 1;
            }
            if count == 0 {
                return Ok(Value::Null);
            }
            match aggregate.method {
                Method::Sum if decimal => Value::Decimal(significant(fraction)),
                Method::Sum => Value::Integer(i64::try_from(whole).map_err(|_| {
                    bad(format!(
                        "$apply: the sum of '{name}' is beyond a 64-bit whole number"
                    ))
                })?),
                _ if decimal => Value::Decimal(significant(fraction / count as f64)),
                _ => Value::Decimal(significant(whole as f64 / count as f64)),
            }
        }
    })
}

/// The rows of `apply` over `records` (every record its query read): one a group, in the
/// order of `$orderby` and then of the grouped values; one row in all without `groupby`
/// (aggregates of no records: `$count` 0, the others empty).
pub fn aggregate(entity: &EntityDef, apply: &Apply, records: &[Record]) -> Result<Vec<Row>> {
    let mut groups: Vec<(Vec<Value>, Vec<&Record>)> = Vec::new();
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    if apply.group_by.is_empty() {
        groups.push((Vec::new(), records.iter().collect()));
    } else {
        for record in records {
            let group: Vec<Value> = apply
                .group_by
                .iter()
                .map(|g| record.values.get(g).cloned().unwrap_or(Value::Null))
                .collect();
            let keys: Vec<String> = group.iter().map(key_text).collect();
            let at = *index.entry(keys).or_insert_with(|| {
                groups.push((group, Vec::new()));
                groups.len() - 1
            });
            groups[at].1.push(record);
        }
    }
    let mut rows = Vec::with_capacity(groups.len());
    for (group, members) in groups {
        let values = apply
            .aggregates
            .iter()
            .map(|a| compute(entity, a, &members))
            .collect::<Result<Vec<Value>>>()?;
        let members = members.iter().map(|r| r.id).collect();
        rows.push(Row {
            group,
            values,
            members,
        });
    }
    rows.sort_by(|a, b| {
        let ordered = apply.order.iter().map(|&(key, descending)| {
            let order = match key {
                OrderKey::Group(i) => compare(&a.group[i], &b.group[i]),
                OrderKey::Aggregate(i) => compare(&a.values[i], &b.values[i]),
            };
            if descending { order.reverse() } else { order }
        });
        let rest = (0..a.group.len()).map(|i| compare(&a.group[i], &b.group[i]));
        ordered
            .chain(rest)
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    if let Some(top) = apply.top {
        rows.truncate(top);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::seed::seeded_account as account;

    fn record(values: &[(&str, Value)]) -> Record {
        let id = Uuid::now_v7();
        let mut map: BTreeMap<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        map.insert("accountid".into(), Value::Guid(id));
        Record { id, values: map }
    }

    fn text(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn groups_count_sum_average_min_max_and_distinct_values() {
        let entity = account();
        let records = vec![
            record(&[
                ("name", text("Contoso")),
                ("revenue", Value::Decimal(0.1)),
                ("numberofemployees", Value::Integer(10)),
            ]),
            record(&[
                ("name", text("contoso")),
                ("revenue", Value::Decimal(0.2)),
                ("numberofemployees", Value::Integer(3)),
            ]),
            record(&[
                ("name", text("Fabrikam")),
                ("revenue", Value::Null),
                ("numberofemployees", Value::Integer(4)),
            ]),
            record(&[("name", Value::Null), ("revenue", Value::Decimal(5.0))]),
        ];
        let apply = read_apply(
            &entity,
            "groupby((name),aggregate(revenue with sum as total,revenue with average as mean,numberofemployees with max as most,numberofemployees with min as least,numberofemployees with countdistinct as sizes,$count as n))",
            None,
            None,
        )
        .unwrap();
        let rows = aggregate(&entity, &apply, &records).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        // Nothing first; "Contoso" and "contoso" are one group, shown as first read.
        assert_eq!(rows[0].group, vec![Value::Null]);
        assert_eq!(rows[0].values[0], Value::Decimal(5.0));
        assert_eq!(
            rows[0].values[2],
            Value::Null,
            "no value to take the max of"
        );
        assert_eq!(rows[0].values[5], Value::Integer(1));
        assert_eq!(rows[1].group, vec![text("Contoso")]);
        assert_eq!(
            rows[1].values,
            vec![
                Value::Decimal(0.3),
                Value::Decimal(0.15),
                Value::Integer(10),
                Value::Integer(3),
                Value::Integer(2),
                Value::Integer(2)
            ]
        );
        assert_eq!(rows[1].members, vec![records[0].id, records[1].id]);
        assert_eq!(rows[2].group, vec![text("Fabrikam")]);
        assert_eq!(rows[2].values[0], Value::Null, "a sum of nothing is empty");
        assert_eq!(rows[2].values[1], Value::Null);
        assert_eq!(rows[2].values[4], Value::Integer(1));
    }

    #[test]
    fn an_aggregate_without_groups_is_one_row_even_of_no_records() {
        let entity = account();
        let apply = read_apply(
            &entity,
            "filter(revenue gt 100)/aggregate($count as n,revenue with sum as total,createdon with max as last)",
            None,
            None,
        )
        .unwrap();
        assert!(apply.filter.is_some());
        assert_eq!(apply.attributes(), vec!["revenue", "createdon"]);
        let rows = aggregate(&entity, &apply, &[]).unwrap();
        assert_eq!(
            rows,
            vec![Row {
                group: Vec::new(),
                values: vec![Value::Integer(0), Value::Null, Value::Null],
                members: Vec::new(),
            }]
        );
        let when = |t: &str| Value::DateTime(t.into());
        let records = vec![
            record(&[("createdon", when("2026-01-02T00:00:00.000Z"))]),
            record(&[("createdon", when("2026-03-01T00:00:00.000Z"))]),
        ];
        let rows = aggregate(&entity, &apply, &records).unwrap();
        assert_eq!(rows[0].values[0], Value::Integer(2));
        assert_eq!(rows[0].values[2], when("2026-03-01T00:00:00.000Z"));
    }

    #[test]
    fn groups_are_ordered_by_orderby_then_by_their_values() {
        let entity = account();
        let records: Vec<Record> = [("A", 1), ("B", 1), ("C", 2), ("A", 2)]
            .iter()
            .map(|(name, code)| {
                record(&[
                    ("name", text(name)),
                    ("industrycode", Value::Integer(*code)),
                ])
            })
            .collect();
        let apply = read_apply(
            &entity,
            "groupby((industrycode,name))",
            Some("industrycode desc"),
            None,
        )
        .unwrap();
        let rows = aggregate(&entity, &apply, &records).unwrap();
        let shown: Vec<(i64, String)> = rows
            .iter()
            .map(|r| match (&r.group[0], &r.group[1]) {
                (Value::Integer(c), Value::String(n)) => (*c, n.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (2, "A".into()),
                (2, "C".into()),
                (1, "A".into()),
                (1, "B".into())
            ]
        );
    }

    #[test]
    fn rows_ordered_by_an_aggregate_and_cut_by_top_keep_only_their_members() {
        let entity = account();
        let records: Vec<Record> = [("A", 5), ("B", 1), ("B", 1), ("C", 3)]
            .iter()
            .map(|(name, employees)| {
                record(&[
                    ("name", text(name)),
                    ("numberofemployees", Value::Integer(*employees)),
                ])
            })
            .collect();
        let mut apply = read_apply(
            &entity,
            "groupby((name),aggregate(numberofemployees with sum as staff))",
            None,
            None,
        )
        .unwrap();
        apply.order = vec![(OrderKey::Aggregate(0), true)];
        apply.top = Some(2);
        let rows = aggregate(&entity, &apply, &records).unwrap();
        let shown: Vec<(&Value, &Value)> =
            rows.iter().map(|r| (&r.group[0], &r.values[0])).collect();
        assert_eq!(
            shown,
            [
                (&text("A"), &Value::Integer(5)),
                (&text("C"), &Value::Integer(3))
            ]
        );
        assert_eq!(rows[0].members, [records[0].id]);
        assert_eq!(rows[1].members, [records[3].id]);
    }

    #[test]
    fn a_sum_beyond_64_bits_is_refused() {
        let entity = account();
        let apply = read_apply(
            &entity,
            "aggregate(versionnumber with sum as v)",
            None,
            None,
        )
        .unwrap();
        let records = vec![
            record(&[("versionnumber", Value::Integer(i64::MAX))]),
            record(&[("versionnumber", Value::Integer(1))]),
        ];
        let error = aggregate(&entity, &apply, &records).unwrap_err();
        assert!(error.to_string().contains("beyond a 64-bit"), "{error}");
    }

    #[test]
    fn what_is_not_an_aggregation_dataverse_answers_is_refused_by_name() {
        let entity = account();
        for (apply, order_by, says) in [
            ("groupby((nosuch))", None, "does not exist"),
            (
                "groupby((primarycontactid/fullname))",
                None,
                "related record",
            ),
            ("groupby((createdon))", None, "it is DateTime"),
            ("groupby((description))", None, "it is Memo"),
            (
                "aggregate(description with countdistinct as d)",
                None,
                "it is Memo",
            ),
            ("groupby((name,name))", None, "twice"),
            ("groupby(name)", None, "in parentheses"),
            ("groupby((name),filter(name eq 'x'))", None, "not filter"),
            ("aggregate(name with sum as s)", None, "it is String"),
            (
                "aggregate(revenue with median as m)",
                None,
                "not an aggregation method",
            ),
            ("aggregate(revenue with sum)", None, "not an aggregate"),
            ("aggregate(revenue with sum as 1x)", None, "not a name"),
            (
                "aggregate(revenue with sum as name)",
                None,
                "names an attribute",
            ),
            (
                "aggregate(revenue with sum as s,$count as S)",
                None,
                "another property",
            ),
            (
                "aggregate($count as n)/filter(name eq 'x')",
                None,
                "nothing may follow",
            ),
            ("filter(name eq 'x')", None, "end it with groupby"),
            ("compute(revenue mul 2 as r)", None, "not supported"),
            ("topcount(2,revenue)", None, "not supported"),
            ("groupby((name)", None, "unbalanced"),
            ("groupby((name))x", None, "after its ')'"),
            ("filter(name eq)/aggregate($count as n)", None, ""),
            (
                "groupby((name),aggregate($count as n))",
                Some("n desc"),
                "aggregate value",
            ),
            ("groupby((name))", Some("revenue"), "not one"),
            ("groupby((name))", Some("name up"), "asc|desc"),
        ] {
            let error = read_apply(&entity, apply, order_by, None).unwrap_err();
            assert!(
                matches!(&error, Error::BadRequest(m) if m.contains(says)),
                "{apply}: {error}"
            );
        }
        let long = format!(
            "filter({})/aggregate($count as n)",
            "name eq 'x' or ".repeat(3000)
        );
        assert!(read_apply(&entity, &long, None, None).is_err());
    }
}
