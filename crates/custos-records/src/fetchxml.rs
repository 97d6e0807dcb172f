//! FetchXML queries of one entity (Dataverse's `?fetchXml=`), read into the OData query
//! options this crate already parses: `<attribute>` into `$select`, `<filter>` and
//! `<condition>` into `$filter` (Dataverse's condition operators into comparisons, string
//! functions and query functions), `<order>` into `$orderby`, `top` into `$top`,
//! `returntotalrecordcount` into `$count` and a paging cookie into `$skiptoken`. So a FetchXML
//! query is typed, checked, compiled and paged exactly as the same OData query, and what it
//! cannot say in OData — links to other entities, `like` patterns other than a prefix, suffix
//! or infix — is refused by name rather than half-read. An aggregate query
//! (`aggregate='true'`) is read into the aggregation `$apply` reads into (`apply::Apply`), its
//! filter the same `$filter`.
//!
//! Every value is written into the OData text as a literal of its attribute's type, checked
//! first (a number parses as one, a GUID as a GUID, text is quoted with its quotes doubled), so
//! no value can add to the filter.

use roxmltree::{Document, Node};

use crate::apply::{Aggregate, Apply, Method, OrderKey, check_alias, check_group, check_method};
use crate::filter::Literal;
use crate::metadata::{AttributeDef, AttributeType, EntityDef};
use crate::sql::resolve;
use crate::{Error, Result, Value};

/// The most records simple paging (`page` without a paging cookie) reads, as Dataverse's.
pub const SIMPLE_PAGING_MAX: u64 = 50_000;

/// A FetchXML query read into OData query options and its paging.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchQuery {
    /// `$select`, `$filter`, `$orderby`, `$top`, `$count`, `$skiptoken`, as a request would
    /// give them.
    pub options: Vec<(String, String)>,
    /// `count`: records a page (none: the default page size).
    pub count: Option<u64>,
    /// `page`: which page, from 1.
    pub page: u64,
    /// An aggregate query's groups, aggregates, order and `top` (`aggregate='true'`); its
    /// filter is the `$filter` of `options`, read for the request as every filter is.
    pub aggregate: Option<Apply>,
}

impl FetchQuery {
    /// Whether a paging cookie of the page before was given (it is the `$skiptoken` of
    /// `options`).
    pub fn cookie(&self) -> bool {
        self.options.iter().any(|(name, _)| name == "$skiptoken")
    }

    /// How many records of the query come before the page asked for when it is paged without
    /// a cookie (simple paging): read and passed over, never shown.
    pub fn passed_over(&self) -> u64 {
        if self.cookie() {
            0
        } else {
            (self.page - 1).saturating_mul(self.count.unwrap_or(crate::PAGE_SIZE_MAX))
        }
    }
}

/// The paging cookie handed out with page `page` whose next page starts after `skiptoken`:
/// Dataverse's shape, `<cookie page="N">…</cookie>`, opaque to the client, which sends it
/// back in the `paging-cookie` attribute of the next page's `<fetch>`.
pub fn paging_cookie(page: u64, skiptoken: &str) -> String {
    format!("<cookie page=\"{page}\"><custos skiptoken=\"{skiptoken}\"/></cookie>")
}

const FETCH_ATTRIBUTES: [&str; 12] = [
    "version",
    "mapping",
    "output-format",
    "distinct",
    "no-lock",
    "top",
    "count",
    "page",
    "paging-cookie",
    "returntotalrecordcount",
    "aggregate",
    "useraworderby",
];

fn bad(message: impl Into<String>) -> Error {
    Error::BadRequest(format!("fetchXml: {}", message.into()))
}

/// Reads `xml`, a query of `entity`'s records.
pub fn read_fetch(entity: &EntityDef, xml: &str) -> Result<FetchQuery> {
    let document = Document::parse(xml).map_err(|e| bad(format!("not well-formed XML: {e}")))?;
    let fetch = document.root_element();
    if fetch.tag_name().name() != "fetch" {
        return Err(bad("the query's root element is <fetch>"));
    }
    for attribute in fetch.attributes() {
        if !FETCH_ATTRIBUTES.contains(&attribute.name()) {
            return Err(bad(format!(
                "<fetch> has no attribute '{}' that Custos reads",
                attribute.name()
            )));
        }
    }
    let number = |name: &str| -> Result<Option<u64>> {
        fetch
            .attribute(name)
            .map(|text| {
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("'{name}' is a whole number above 0, got '{text}'")))
            })
            .transpose()
    };
    let (top, count, page) = (number("top")?, number("count")?, number("page")?);
    if top.is_some() && (count.is_some() || page.is_some()) {
        return Err(bad(
            "'top' cannot be combined with paging ('count', 'page')",
        ));
    }
    if count.is_some_and(|c| c > crate::PAGE_SIZE_MAX) {
        return Err(bad(format!("'count' is at most {}", crate::PAGE_SIZE_MAX)));
    }
    let mut entities = fetch.children().filter(Node::is_element);
    let node = match (entities.next(), entities.next()) {
        (Some(node), None) if node.tag_name().name() == "entity" => node,
        _ => return Err(bad("<fetch> holds one <entity>")),
    };
    match node.attribute("name") {
        Some(name) if name == entity.logical_name => {}
        other => {
            return Err(bad(format!(
                "<entity name='{}'> is queried through the set of '{}'",
                other.unwrap_or_default(),
                entity.logical_name
            )));
        }
    }
    if flag(fetch, "aggregate")? {
        if count.is_some()
            || page.is_some()
            || fetch.attribute("paging-cookie").is_some()
            || flag(fetch, "returntotalrecordcount")?
        {
            return Err(bad(
                "an aggregate query is answered whole, not in pages: leave out 'count', 'page', 'paging-cookie' and 'returntotalrecordcount' (keep the first rows with 'top')",
            ));
        }
        return read_aggregate(entity, node, top);
    }
    let mut select = Vec::new();
    let mut all = false;
    let mut filters = Vec::new();
    let mut order = Vec::new();
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "attribute" => {
                refuse_alias(child)?;
                select.push(attribute_of(entity, child)?.web_name());
            }
            "all-attributes" => all = true,
            "filter" => {
                if let Some(filter) = filter_text(entity, child, 1)? {
                    filters.push(filter);
                }
            }
            "order" => {
                refuse_alias(child)?;
                let attribute = attribute_of(entity, child)?;
                let direction = if flag(child, "descending")? {
                    " desc"
                } else {
                    ""
                };
                order.push(format!("{}{direction}", attribute.web_name()));
            }
            "link-entity" => {
                return Err(bad(
                    "<link-entity> is not supported: query the related entity's set, or use $expand",
                ));
            }
            other => return Err(bad(format!("<{other}> is not read inside <entity>"))),
        }
    }
    let mut options = Vec::new();
    if !all && !select.is_empty() {
        options.push(("$select".to_string(), select.join(",")));
    }
    if !filters.is_empty() {
        options.push(("$filter".to_string(), filters.join(" and ")));
    }
    if !order.is_empty() {
        options.push(("$orderby".to_string(), order.join(",")));
    }
    if let Some(top) = top {
        options.push(("$top".to_string(), top.to_string()));
    }
    if flag(fetch, "returntotalrecordcount")? {
        options.push(("$count".to_string(), "true".to_string()));
    }
    let page = page.unwrap_or(1);
    if let Some(text) = fetch.attribute("paging-cookie").filter(|c| !c.is_empty())
        && page > 1
        && let Some(token) = skiptoken_of(text, page - 1)?
    {
        options.push(("$skiptoken".to_string(), token));
    }
    let query = FetchQuery {
        options,
        count,
        page,
        aggregate: None,
    };
    if query.passed_over() > SIMPLE_PAGING_MAX {
        return Err(bad(format!(
            "page {page} without a paging cookie would read past the first {SIMPLE_PAGING_MAX} records: send the paging cookie of the page before"
        )));
    }
    Ok(query)
}

/// An aggregate query's `<entity>` (`<fetch aggregate='true'>`): each `<attribute>` is grouped
/// by (`groupby='true'`) or aggregated (`aggregate='sum|avg|min|max|count|countcolumn'`,
/// `distinct='true'` on `countcolumn`), each answered as its alias; `<order alias>` orders the
/// rows by a group or an aggregate, `top` keeps the first rows.
fn read_aggregate(entity: &EntityDef, node: Node, top: Option<u64>) -> Result<FetchQuery> {
    let (mut group_by, mut group_names, mut aggregates) = (Vec::new(), Vec::new(), Vec::new());
    let mut filters = Vec::new();
    let mut orders = Vec::new();
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "attribute" => {
                let attribute = attribute_of(entity, child)?;
                let name = &attribute.logical_name;
                let alias = child.attribute("alias").ok_or_else(|| {
                    bad(format!(
                        "in an aggregate query each <attribute> has an alias ('{name}' has none)"
                    ))
                })?;
                let taken: Vec<String> = group_names
                    .iter()
                    .cloned()
                    .chain(aggregates.iter().map(|a: &Aggregate| a.alias.clone()))
                    .collect();
                check_alias(alias, &taken).map_err(bad)?;
                let distinct = flag(child, "distinct")?;
                match (flag(child, "groupby")?, child.attribute("aggregate")) {
                    (true, None) => {
                        if child.attribute("dategrouping").is_some() {
                            return Err(bad(format!(
                                "grouping by a period of a date ('{name}', 'dategrouping') is not supported"
                            )));
                        }
                        check_group(attribute).map_err(bad)?;
                        if group_by.contains(name) {
                            return Err(bad(format!("'{name}' is grouped by twice")));
                        }
                        group_by.push(name.clone());
                        group_names.push(alias.to_string());
                    }
                    (false, Some(method)) => {
                        let method = match method {
                            "sum" => Method::Sum,
                            "avg" => Method::Average,
                            "min" => Method::Min,
                            "max" => Method::Max,
                            "count" => Method::Count,
                            "countcolumn" if distinct => Method::CountDistinct,
                            "countcolumn" => Method::CountColumn,
                            other => {
                                return Err(bad(format!(
                                    "'{other}' is not an aggregate: sum, avg, min, max, count or countcolumn"
                                )));
                            }
                        };
                        if distinct && method != Method::CountDistinct {
                            return Err(bad(
                                "distinct='true' counts different values: it goes with aggregate='countcolumn'",
                            ));
                        }
                        check_method(attribute, method).map_err(bad)?;
                        aggregates.push(Aggregate {
                            attribute: Some(name.clone()),
                            method,
                            alias: alias.to_string(),
                        });
                    }
                    (true, Some(_)) => {
                        return Err(bad(format!(
                            "'{name}' is either grouped by or aggregated, not both"
                        )));
                    }
                    (false, None) => {
                        return Err(bad(format!(
                            "in an aggregate query each <attribute> is grouped by (groupby='true') or aggregated (aggregate='…'); '{name}' is neither"
                        )));
                    }
                }
            }
            "filter" => filters.extend(filter_text(entity, child, 1)?),
            "order" => {
                let alias = child.attribute("alias").ok_or_else(|| {
                    bad("an aggregate query orders by an alias: <order alias='…'/>")
                })?;
                orders.push((alias, flag(child, "descending")?));
            }
            "link-entity" => {
                return Err(bad(
                    "<link-entity> is not supported: query the related entity's set, or use $expand",
                ));
            }
            other => {
                return Err(bad(format!(
                    "<{other}> is not read inside an aggregate query's <entity>"
                )));
            }
        }
    }
    if group_by.is_empty() && aggregates.is_empty() {
        return Err(bad(
            "an aggregate query groups by or aggregates at least one <attribute>",
        ));
    }
    let mut order = Vec::new();
    for (alias, descending) in orders {
        let key = match group_names.iter().position(|g| g == alias) {
            Some(i) => OrderKey::Group(i),
            None => OrderKey::Aggregate(
                aggregates
                    .iter()
                    .position(|a| a.alias == alias)
                    .ok_or_else(|| {
                        bad(format!(
                            "<order alias='{alias}'> names no alias of the query"
                        ))
                    })?,
            ),
        };
        order.push((key, descending));
    }
    let mut options = Vec::new();
    if !filters.is_empty() {
        options.push(("$filter".to_string(), filters.join(" and ")));
    }
    Ok(FetchQuery {
        options,
        count: None,
        page: 1,
        aggregate: Some(Apply {
            filter: None,
            group_by,
            group_names,
            aggregates,
            order,
            top: top.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
        }),
    })
}

/// The `$skiptoken` in a paging cookie of page `previous`; a cookie of another page is passed
/// over (Dataverse ignores it for a page that does not follow), one not made here is refused.
fn skiptoken_of(cookie: &str, previous: u64) -> Result<Option<String>> {
    let invalid = || bad("the paging cookie is not one this server handed out");
    let document = Document::parse(cookie).map_err(|_| invalid())?;
    let root = document.root_element();
    let token = root
        .children()
        .find(|n| n.has_tag_name("custos"))
        .and_then(|n| n.attribute("skiptoken"))
        .filter(|_| root.has_tag_name("cookie"))
        .ok_or_else(invalid)?;
    crate::PageCursor::parse(token).map_err(|_| invalid())?;
    Ok((root.attribute("page") == Some(previous.to_string().as_str())).then(|| token.to_string()))
}

fn flag(node: Node, name: &str) -> Result<bool> {
    match node.attribute(name) {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(bad(format!("'{name}' is true or false, got '{other}'"))),
    }
}

fn refuse_alias(node: Node) -> Result<()> {
    match node.attribute("alias") {
        Some(_) => Err(bad("aliases are not supported")),
        None => Ok(()),
    }
}

fn attribute_of<'e>(entity: &'e EntityDef, node: Node) -> Result<&'e AttributeDef> {
    let name = node
        .attribute("attribute")
        .or_else(|| node.attribute("name"))
        .ok_or_else(|| bad(format!("<{}> names no attribute", node.tag_name().name())))?;
    resolve(entity, name)
}

/// How deep `<filter>`s may nest: `$filter`'s own limit, checked here before recursing (a
/// `$batch` body could otherwise nest them deep enough to exhaust the stack).
const FILTER_DEPTH_MAX: usize = 64;

/// A `<filter>` as `$filter` text: its conditions and filters joined by its `type` (`and`,
/// the default, or `or`), in parentheses; `None` when it holds nothing. `depth` is how many
/// filters hold it, itself included.
fn filter_text(entity: &EntityDef, filter: Node, depth: usize) -> Result<Option<String>> {
    if depth > FILTER_DEPTH_MAX {
        return Err(bad(format!("filters nest at most {FILTER_DEPTH_MAX} deep")));
    }
    let joiner = match filter.attribute("type").unwrap_or("and") {
        "and" => " and ",
        "or" => " or ",
        other => return Err(bad(format!("<filter type='{other}'> is 'and' or 'or'"))),
    };
    let mut parts = Vec::new();
    for child in filter.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "condition" => parts.push(condition_text(entity, child)?),
            "filter" => parts.extend(filter_text(entity, child, depth + 1)?),
            other => return Err(bad(format!("<{other}> is not read inside <filter>"))),
        }
    }
    Ok((!parts.is_empty()).then(|| format!("({})", parts.join(joiner))))
}

/// The query functions a condition operator stands for (Dataverse's own pairs).
const OPERATOR_FUNCTIONS: [(&str, &str); 38] = [
    ("today", "Today"),
    ("yesterday", "Yesterday"),
    ("tomorrow", "Tomorrow"),
    ("last-seven-days", "Last7Days"),
    ("next-seven-days", "Next7Days"),
    ("this-month", "ThisMonth"),
    ("last-month", "LastMonth"),
    ("next-month", "NextMonth"),
    ("this-year", "ThisYear"),
    ("last-year", "LastYear"),
    ("next-year", "NextYear"),
    ("last-x-hours", "LastXHours"),
    ("last-x-days", "LastXDays"),
    ("last-x-weeks", "LastXWeeks"),
    ("last-x-months", "LastXMonths"),
    ("last-x-years", "LastXYears"),
    ("next-x-hours", "NextXHours"),
    ("next-x-days", "NextXDays"),
    ("next-x-weeks", "NextXWeeks"),
    ("next-x-months", "NextXMonths"),
    ("next-x-years", "NextXYears"),
    ("olderthan-x-minutes", "OlderThanXMinutes"),
    ("olderthan-x-hours", "OlderThanXHours"),
    ("olderthan-x-days", "OlderThanXDays"),
    ("olderthan-x-weeks", "OlderThanXWeeks"),
    ("olderthan-x-months", "OlderThanXMonths"),
    ("olderthan-x-years", "OlderThanXYears"),
    ("on", "On"),
    ("on-or-after", "OnOrAfter"),
    ("on-or-before", "OnOrBefore"),
    ("in", "In"),
    ("not-in", "NotIn"),
    ("between", "Between"),
    ("not-between", "NotBetween"),
    ("eq-userid", "EqualUserId"),
    ("ne-userid", "NotEqualUserId"),
    ("eq-useroruserteams", "EqualUserOrUserTeams"),
    ("eq-userteams", "EqualUserTeams"),
];

/// A `<condition>` as `$filter` text.
fn condition_text(entity: &EntityDef, condition: Node) -> Result<String> {
    if condition.attribute("entityname").is_some() {
        return Err(bad("conditions on linked entities are not supported"));
    }
    let attribute = attribute_of(entity, condition)?;
    let name = attribute.web_name();
    let operator = condition
        .attribute("operator")
        .ok_or_else(|| bad(format!("the condition on '{name}' has no operator")))?;
    let value = || {
        condition
            .attribute("value")
            .ok_or_else(|| bad(format!("'{operator}' on '{name}' needs a value")))
    };
    let comparison = |op: &str| -> Result<String> {
        Ok(format!("{name} {op} {}", literal(attribute, value()?)?))
    };
    Ok(match operator {
        "eq" => comparison("eq")?,
        "ne" | "neq" => comparison("ne")?,
        "gt" => comparison("gt")?,
        "ge" => comparison("ge")?,
        "lt" => comparison("lt")?,
        "le" => comparison("le")?,
        "null" => format!("{name} eq null"),
        "not-null" => format!("{name} ne null"),
        "like" | "not-like" => {
            let text = like(attribute, value()?)?;
            if operator == "like" {
                text
            } else {
                format!("not {text}")
            }
        }
        "begins-with" | "not-begin-with" | "ends-with" | "not-end-with" => {
            let function = if operator.contains("begin") {
                "startswith"
            } else {
                "endswith"
            };
            let text = format!("{function}({name},{})", quoted(value()?));
            if operator.starts_with("not-") {
                format!("not {text}")
            } else {
                text
            }
        }
        other => {
            let (_, function) = OPERATOR_FUNCTIONS
                .iter()
                .find(|(op, _)| *op == other)
                .ok_or_else(|| bad(format!("the condition operator '{other}' is not supported")))?;
            let property = format!("PropertyName='{}'", attribute.logical_name);
            let argument = match operator {
                "in" | "not-in" | "between" | "not-between" => {
                    let values: Vec<String> = condition
                        .children()
                        .filter(|n| n.has_tag_name("value"))
                        .map(|n| quoted(n.text().unwrap_or_default()))
                        .collect();
                    format!(",PropertyValues=[{}]", values.join(","))
                }
                _ if other.contains("-x-") => {
                    let count = value()?.trim();
                    count.parse::<u32>().map_err(|_| {
                        bad(format!("'{other}' takes a whole number, got '{count}'"))
                    })?;
                    format!(",PropertyValue={count}")
                }
                "on" | "on-or-after" | "on-or-before" => {
                    format!(",PropertyValue={}", quoted(value()?))
                }
                _ => String::new(),
            };
            format!("Microsoft.Dynamics.CRM.{function}({property}{argument})")
        }
    })
}

/// Text as an OData string literal.
fn quoted(text: &str) -> String {
    Literal::String(text.to_string()).to_string()
}

/// `value` as an OData literal of `attribute`'s type: text as it is, anything else read as the
/// records' own reader reads a value written as text (`Value::from_text`: a whole number in 32
/// bits, a decimal a float keeps, `1`/`0`/`true`/`false`, an ISO 8601 date-time, a GUID with
/// or without Dataverse's braces) and written back by `Literal`'s own form — so it is one
/// literal and nothing more.
fn literal(attribute: &AttributeDef, value: &str) -> Result<String> {
    let literal = match Value::from_text(attribute, value)? {
        _ if matches!(
            attribute.attribute_type,
            AttributeType::String { .. } | AttributeType::Memo
        ) =>
        {
            Literal::String(value.to_string())
        }
        Value::Integer(n) => Literal::Integer(n),
        Value::Decimal(n) => Literal::Decimal(n.to_string()),
        Value::Boolean(b) => Literal::Boolean(b),
        Value::DateTime(text) => Literal::DateTime(text),
        Value::Guid(id) => Literal::Guid(id),
        Value::String(_) | Value::Null => {
            return Err(bad(format!(
                "'{value}' is not a value of '{}' ({})",
                attribute.logical_name,
                attribute.attribute_type.name()
            )));
        }
    };
    Ok(literal.to_string())
}

/// A `like` pattern as the string function that says exactly the same: `%text%`, `text%`,
/// `%text` or `text`; other wildcards (`_`, `[…]`, `%` inside) have no such function.
fn like(attribute: &AttributeDef, pattern: &str) -> Result<String> {
    if !matches!(
        attribute.attribute_type,
        AttributeType::String { .. } | AttributeType::Memo
    ) {
        return Err(bad(format!(
            "'like' compares text; '{}' is {}",
            attribute.logical_name,
            attribute.attribute_type.name()
        )));
    }
    let name = attribute.web_name();
    let (leading, rest) = match pattern.strip_prefix('%') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (trailing, text) = match rest.strip_suffix('%') {
        Some(text) => (true, text),
        None => (false, rest),
    };
    if text.contains(['%', '_', '[', ']']) {
        return Err(bad(format!(
            "the like pattern '{pattern}' cannot be read exactly: only '%text%', 'text%', '%text' and 'text' are (or use begins-with, ends-with)"
        )));
    }
    Ok(match (leading, trailing) {
        (true, true) => format!("contains({name},{})", quoted(text)),
        (false, true) => format!("startswith({name},{})", quoted(text)),
        (true, false) => format!("endswith({name},{})", quoted(text)),
        (false, false) => format!("{name} eq {}", quoted(text)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::seeded_account as account;

    fn options(xml: &str) -> Vec<(String, String)> {
        read_fetch(&account(), xml).unwrap().options
    }

    #[test]
    fn a_fetch_reads_as_the_odata_query_that_says_the_same() {
        let contact = "6f3b0002-0000-4000-8000-000000000001";
        assert_eq!(
            options(&format!(
                "<fetch mapping='logical' top='5' returntotalrecordcount='true'>
                  <entity name='account'>
                    <attribute name='name'/><attribute name='primarycontactid'/>
                    <filter type='or'>
                      <condition attribute='name' operator='like' value=\"%it's%\"/>
                      <filter>
                        <condition attribute='numberofemployees' operator='ge' value='10'/>
                        <condition attribute='primarycontactid' operator='eq' value='{{{contact}}}'/>
                        <condition attribute='revenue' operator='not-null'/>
                      </filter>
                    </filter>
                    <order attribute='name' descending='true'/>
                  </entity>
                </fetch>"
            )),
            [
                ("$select", "name,_primarycontactid_value"),
                (
                    "$filter",
                    &*format!(
                        "(contains(name,'it''s') or (numberofemployees ge 10 and _primarycontactid_value eq {contact} and revenue ne null))"
                    )
                ),
                ("$orderby", "name desc"),
                ("$top", "5"),
                ("$count", "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            options(
                "<fetch><entity name='account'><all-attributes/><filter>
                  <condition attribute='createdon' operator='last-x-days' value='3'/>
                  <condition attribute='industrycode' operator='in'><value>1</value><value>2</value></condition>
                  <condition attribute='ownerid' operator='eq-userid'/>
                  <condition attribute='name' operator='not-begin-with' value='A'/>
                </filter></entity></fetch>"
            ),
            [(
                "$filter".to_string(),
                "(Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=3) and Microsoft.Dynamics.CRM.In(PropertyName='industrycode',PropertyValues=['1','2']) and Microsoft.Dynamics.CRM.EqualUserId(PropertyName='ownerid') and not startswith(name,'A'))".to_string()
            )]
        );
    }

    #[test]
    fn advanced_finds_own_fetch_is_read() {
        // As Dataverse's Advanced Find writes a query: its header and the display attributes of
        // a lookup's condition, which say nothing about what is read.
        let contact = "6f3b0002-0000-4000-8000-000000000001";
        assert_eq!(
            options(&format!(
                "<fetch version=\"1.0\" output-format=\"xml-platform\" mapping=\"logical\" distinct=\"false\" no-lock=\"true\">
                  <entity name=\"account\">
                    <attribute name=\"name\" /><attribute name=\"accountid\" />
                    <order attribute=\"name\" descending=\"false\" />
                    <filter type=\"and\">
                      <condition attribute=\"primarycontactid\" operator=\"eq\" uiname=\"Ada\" uitype=\"contact\" value=\"{{{}}}\" />
                    </filter>
                  </entity>
                </fetch>",
                contact.to_uppercase()
            )),
            [
                ("$select", "name,accountid".to_string()),
                ("$filter", format!("(_primarycontactid_value eq {contact})")),
                ("$orderby", "name".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v))
        );
    }

    #[test]
    fn values_are_read_as_their_attributes_own_and_the_query_parses() {
        let query = options(
            "<fetch><entity name='account'><filter>
               <condition attribute='createdon' operator='ge' value='2020-01-02'/>
               <condition attribute='creditonhold' operator='eq' value='1'/>
               <condition attribute='revenue' operator='lt' value='1.25e3'/>
               <condition attribute='name' operator='eq' value=\" it's \"/>
             </filter></entity></fetch>",
        );
        let filter = &query[0].1;
        assert!(
            filter.contains("creditonhold eq true")
                && filter.contains("revenue lt 1250")
                && filter.contains("name eq ' it''s '"),
            "{filter}"
        );
        crate::options::parse_query_options(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
    }

    #[test]
    fn pages_are_counted_and_cookies_read_back() {
        let query = read_fetch(
            &account(),
            "<fetch count='10' page='3'><entity name='account'/></fetch>",
        )
        .unwrap();
        assert_eq!(
            (query.count, query.page, query.passed_over()),
            (Some(10), 3, 20)
        );
        let token = crate::PageCursor {
            returned: 10,
            keys: vec![],
            id: uuid::Uuid::nil(),
        }
        .token();
        let cookie = paging_cookie(2, &token)
            .replace('"', "&quot;")
            .replace('<', "&lt;");
        let query = read_fetch(
            &account(),
            &format!("<fetch count='10' page='3' paging-cookie='{cookie}'><entity name='account'/></fetch>"),
        )
        .unwrap();
        assert!(query.cookie());
        assert_eq!(query.passed_over(), 0);
        assert_eq!(query.options, [("$skiptoken".to_string(), token.clone())]);
        // A cookie of another page is passed over, as Dataverse passes it over.
        let query = read_fetch(
            &account(),
            &format!("<fetch count='10' page='4' paging-cookie='{cookie}'><entity name='account'/></fetch>"),
        )
        .unwrap();
        assert!(!query.cookie());
        assert!(
            read_fetch(
                &account(),
                "<fetch count='5000' page='12'><entity name='account'/></fetch>"
            )
            .is_err(),
            "past 50,000 records without a cookie"
        );
    }

    #[test]
    fn an_aggregate_query_is_read_into_an_aggregation() {
        let query = read_fetch(
            &account(),
            "<fetch aggregate='true' top='3'><entity name='account'>
               <attribute name='industrycode' alias='industry' groupby='true'/>
               <attribute name='revenue' alias='total' aggregate='sum'/>
               <attribute name='revenue' alias='mean' aggregate='avg'/>
               <attribute name='accountid' alias='accounts' aggregate='count'/>
               <attribute name='telephone1' alias='phones' aggregate='countcolumn'/>
               <attribute name='name' alias='names' aggregate='countcolumn' distinct='true'/>
               <filter><condition attribute='revenue' operator='gt' value='10'/></filter>
               <order alias='total' descending='true'/>
               <order alias='industry'/>
             </entity></fetch>",
        )
        .unwrap();
        assert_eq!(
            query.options,
            [("$filter".to_string(), "(revenue gt 10)".to_string())]
        );
        let apply = query.aggregate.unwrap();
        assert_eq!(apply.group_by, ["industrycode"]);
        assert_eq!(apply.group_names, ["industry"]);
        let methods: Vec<(&str, Method)> = apply
            .aggregates
            .iter()
            .map(|a| (a.alias.as_str(), a.method))
            .collect();
        assert_eq!(
            methods,
            [
                ("total", Method::Sum),
                ("mean", Method::Average),
                ("accounts", Method::Count),
                ("phones", Method::CountColumn),
                ("names", Method::CountDistinct)
            ]
        );
        assert_eq!(
            apply.order,
            [(OrderKey::Aggregate(0), true), (OrderKey::Group(0), false)]
        );
        assert_eq!(apply.top, Some(3));

        for (xml, says) in [
            (
                "<attribute name='revenue' aggregate='sum'/>",
                "has an alias",
            ),
            ("<attribute name='revenue' alias='r'/>", "is neither"),
            (
                "<attribute name='revenue' alias='r' groupby='true' aggregate='sum'/>",
                "not both",
            ),
            (
                "<attribute name='name' alias='s' aggregate='sum'/>",
                "it is String",
            ),
            (
                "<attribute name='revenue' alias='r' aggregate='median'/>",
                "not an aggregate",
            ),
            (
                "<attribute name='revenue' alias='r' aggregate='sum' distinct='true'/>",
                "countcolumn",
            ),
            (
                "<attribute name='createdon' alias='c' groupby='true'/>",
                "it is DateTime",
            ),
            (
                "<attribute name='description' alias='d' aggregate='countcolumn'/>",
                "it is Memo",
            ),
            (
                "<attribute name='name' alias='n' groupby='true' dategrouping='month'/>",
                "dategrouping",
            ),
            (
                "<attribute name='name' alias='n' groupby='true'/><attribute name='revenue' alias='N' aggregate='sum'/>",
                "another property",
            ),
            (
                "<attribute name='name' alias='n' groupby='true'/><order attribute='name'/>",
                "orders by an alias",
            ),
            (
                "<attribute name='name' alias='n' groupby='true'/><order alias='x'/>",
                "names no alias",
            ),
            ("<all-attributes/>", "not read inside an aggregate"),
        ] {
            let xml =
                format!("<fetch aggregate='true'><entity name='account'>{xml}</entity></fetch>");
            let refused = read_fetch(&account(), &xml);
            assert!(
                matches!(&refused, Err(Error::BadRequest(m)) if m.contains(says)),
                "{xml}: {refused:?}"
            );
        }
        let paged = read_fetch(
            &account(),
            "<fetch aggregate='true' count='5'><entity name='account'><attribute name='revenue' alias='r' aggregate='sum'/></entity></fetch>",
        );
        assert!(
            matches!(&paged, Err(Error::BadRequest(m)) if m.contains("not in pages")),
            "{paged:?}"
        );
    }

    #[test]
    fn what_odata_cannot_say_is_refused_by_name() {
        for xml in [
            "not xml",
            "<query/>",
            "<fetch><entity name='contact'/></fetch>",
            "<fetch aggregate='true'><entity name='account'/></fetch>",
            "<fetch top='5' count='5'><entity name='account'/></fetch>",
            "<fetch count='5001'><entity name='account'/></fetch>",
            "<fetch top='0'><entity name='account'/></fetch>",
            "<fetch nosuch='1'><entity name='account'/></fetch>",
            "<fetch><entity name='account'><link-entity name='contact' from='contactid' to='primarycontactid'/></entity></fetch>",
            "<fetch><entity name='account'><attribute name='name' alias='n'/></entity></fetch>",
            "<fetch><entity name='account'><attribute name='nosuch'/></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='name' operator='like' value='a_c'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='name' operator='like' value='a%c'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='numberofemployees' operator='eq' value='1 or name eq 1'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='revenue' operator='eq' value='1 or true'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='numberofemployees' operator='eq' value='4294967296'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='primarycontactid' operator='eq' value='nope'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='createdon' operator='last-fiscal-year'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='createdon' operator='eq' value='2020-01-01 or true'/></filter></entity></fetch>",
            "<fetch><entity name='account'><filter type='xor'/></entity></fetch>",
            "<fetch><entity name='account'><filter><condition attribute='name' operator='eq'/></filter></entity></fetch>",
            "<fetch count='2' page='2' paging-cookie='&lt;cookie page=\"1\"/&gt;'><entity name='account'/></fetch>",
            "<!DOCTYPE fetch [<!ENTITY x 'y'>]><fetch><entity name='account'/></fetch>",
            &format!(
                "<fetch><entity name='account'>{}<condition attribute='name' operator='null'/>{}</entity></fetch>",
                "<filter>".repeat(100_000),
                "</filter>".repeat(100_000)
            ),
        ] {
            let refused = read_fetch(&account(), xml);
            assert!(
                matches!(refused, Err(Error::BadRequest(_))),
                "{xml}: {refused:?}"
            );
        }
    }
}
