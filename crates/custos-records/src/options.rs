//! OData system query options of a retrieve multiple: `$select`, `$filter`, `$orderby`, `$top`,
//! `$count`, `$skiptoken`, and the page size from `Prefer: odata.maxpagesize`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::filter::{Filter, FilterContext, parse_filter_in};
use crate::{Error, Result};

/// Largest page a retrieve multiple returns, and the default page size.
pub const PAGE_SIZE_MAX: u64 = 5000;

/// One `$orderby` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// Attribute name as written.
    pub attribute: String,
    /// Descending order.
    pub descending: bool,
}

/// Parsed system query options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// `$select`: attribute names as written; `None` for all.
    pub select: Option<Vec<String>>,
    /// `$filter`.
    pub filter: Option<Filter>,
    /// The `$filter` text as given, for the audit record.
    pub filter_text: Option<String>,
    /// `$orderby`.
    pub order_by: Vec<OrderBy>,
    /// `$top`.
    pub top: Option<u64>,
    /// `$count=true`.
    pub count: bool,
    /// Where the previous page ended (from `$skiptoken`); `None` for the first page.
    pub after: Option<PageCursor>,
    /// `$expand`: related records to show with each record.
    pub expand: Vec<Expand>,
}

/// One `$expand` item: a navigation property and the options of what it shows (`$select`, and
/// on collections `$filter`, `$orderby`, `$top`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expand {
    /// The navigation property, as written.
    pub property: String,
    /// Its nested options.
    pub options: QueryOptions,
}

/// The parts of `text` between top-level `separator`s: not inside parentheses or a quoted
/// string (`'it''s'`).
pub(crate) fn split_top(text: &str, separator: char) -> Result<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| Error::BadRequest(format!("unbalanced ')' in '{text}'")))?;
            }
            c if c == separator && !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 || quoted {
        return Err(Error::BadRequest(format!(
            "unbalanced '(' or quote in '{text}'"
        )));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// Reads `$expand=a,b($select=x;$top=5)`; `*` stands for every navigation property not named.
fn parse_expand(text: &str, context: Option<&FilterContext>) -> Result<Vec<Expand>> {
    let mut items = Vec::new();
    for item in split_top(text, ',')? {
        let item = item.trim();
        let (property, nested) = match item.split_once('(') {
            None => (item, ""),
            Some((property, rest)) => (
                property.trim(),
                rest.strip_suffix(')').ok_or_else(|| {
                    Error::BadRequest(format!("$expand item '{item}' has text after ')'"))
                })?,
            ),
        };
        if property == "*" && !nested.trim().is_empty() {
            return Err(Error::BadRequest(format!(
                "'*' in $expand takes no options: name the property to give it options, in '{item}'"
            )));
        }
        if property.is_empty()
            || property != "*"
                && !property
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::BadRequest(format!(
                "$expand names no navigation property in '{item}'"
            )));
        }
        let mut pairs = Vec::new();
        for option in split_top(nested, ';')?
            .into_iter()
            .filter(|o| !o.trim().is_empty())
        {
            let (name, value) = option.split_once('=').ok_or_else(|| {
                Error::BadRequest(format!("'{option}' in $expand is not name=value"))
            })?;
            let name = name.trim();
            if !matches!(name, "$select" | "$filter" | "$orderby" | "$top") {
                return Err(Error::BadRequest(format!(
                    "{name} is not supported inside $expand (only $select, $filter, $orderby and $top)"
                )));
            }
            pairs.push((name, value));
        }
        items.push(Expand {
            property: property.to_string(),
            options: parse_query_options_in(pairs, context)?,
        });
    }
    Ok(items)
}

/// The keyset of the last row a page returned: the next page starts after it in the query's
/// order, so records inserted or deleted between pages never make a row repeat or go missing
/// (an offset would). Clients see it only as the opaque `$skiptoken` of `@odata.nextLink`.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCursor {
    /// Records returned by earlier pages (what is left of `$top`).
    pub returned: u64,
    /// The last row's `$orderby` values, one a term, as the Web API shows them.
    pub keys: Vec<Json>,
    /// The last row's id (the order's last, unique term).
    pub id: Uuid,
}

impl PageCursor {
    /// The `$skiptoken` text: base64url of `[returned, keys, id]`.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(json!([self.returned, self.keys, self.id.to_string()]).to_string())
    }

    /// Reads a `$skiptoken`; anything not made by [`PageCursor::token`] is a bad request.
    pub fn parse(token: &str) -> Result<PageCursor> {
        let invalid = || {
            Error::BadRequest(format!(
                "invalid $skiptoken '{token}': take it from @odata.nextLink unchanged"
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let json: Json = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        match json.as_array().map(Vec::as_slice) {
            Some([returned, Json::Array(keys), Json::String(id)]) => Ok(PageCursor {
                returned: returned.as_u64().ok_or_else(invalid)?,
                keys: keys.clone(),
                id: Uuid::parse_str(id).map_err(|_| invalid())?,
            }),
            _ => Err(invalid()),
        }
    }
}

/// System query options OData 4.0 knows; written without their `$` (as OData 4.01 allows) they
/// are refused rather than taken for custom options and ignored.
const SYSTEM_OPTIONS: [&str; 15] = [
    "select",
    "filter",
    "orderby",
    "top",
    "skip",
    "count",
    "skiptoken",
    "expand",
    "format",
    "search",
    "apply",
    "compute",
    "levels",
    "index",
    "schemaversion",
];

/// Checks a query parameter that is neither a system query option (`$…`) nor a parameter alias
/// (`@…`): one that would change what a request reads, were it understood, is refused rather
/// than ignored — a silently ignored query returns every record. Dataverse's `fetchXml` queries
/// a list only (the Web API reads it there, `read_fetch`), `queryExpression` not at all;
/// `savedQuery` and `userQuery` are spelt as
/// Dataverse spells them; a system query option needs its `$` (OData 4.0). Anything else is a
/// custom option, ignored as OData allows (a cache-buster, say).
pub fn check_custom_option(name: &str) -> Result<()> {
    if ["fetchXml", "queryExpression"]
        .iter()
        .any(|query| name.eq_ignore_ascii_case(query))
    {
        return Err(Error::BadRequest(format!(
            "{name}: a FetchXML query reads a list of records (GET set?fetchXml=<fetch>…</fetch>), not a count or one record, and QueryExpression is not supported; use the OData query options ($select, $filter, $orderby, $top, $count) or a view (savedQuery, userQuery)"
        )));
    }
    for view in ["savedQuery", "userQuery"] {
        if name != view && name.eq_ignore_ascii_case(view) {
            return Err(Error::BadRequest(format!(
                "query parameter '{name}' is not known: a view is run with {view}"
            )));
        }
    }
    if let Some(option) = SYSTEM_OPTIONS
        .iter()
        .find(|option| name.eq_ignore_ascii_case(option))
    {
        return Err(Error::BadRequest(format!(
            "query parameter '{name}' reads as the system query option ${option}, which OData 4.0 writes with its $: use ${option}"
        )));
    }
    Ok(())
}

/// `text` (a `$filter` or `$orderby`) with each parameter alias outside its string literals
/// replaced by the alias's value as given (`$filter=contains(@p1,'Contoso')&@p1=name`); an
/// alias given no value is `null`, as OData's URL conventions say. Refused when the text grows
/// past a `$filter`'s limit: an alias named a thousand times must not make a request's few
/// kilobytes into megabytes.
fn with_aliases<'t>(text: &'t str, aliases: &[(&str, &str)]) -> Result<std::borrow::Cow<'t, str>> {
    if !text.contains('@') {
        return Ok(std::borrow::Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        if c == '\'' {
            in_string = !in_string;
        }
        if c == '@' && !in_string {
            let len = rest
                .find(|n: char| !(n.is_ascii_alphanumeric() || n == '_'))
                .unwrap_or(rest.len());
            if len > 0 {
                let name = &rest[..len];
                let value = aliases
                    .iter()
                    .find(|(alias, _)| alias.strip_prefix('@') == Some(name))
                    .map_or("null", |(_, value)| *value);
                if out.len() + value.len() > crate::filter::FILTER_BYTES_MAX {
                    return Err(Error::BadRequest(format!(
                        "with its parameter aliases read in, the query option is longer than {} bytes",
                        crate::filter::FILTER_BYTES_MAX
                    )));
                }
                out.push_str(value);
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Parses the decoded query pairs of a request. Names may carry the `$` or not only where OData
/// allows it; unknown `$` options are rejected, as are custom parameters that would change what
/// is read were they understood ([`check_custom_option`]); parameter aliases (`@name`) are
/// read into `$filter` and `$orderby`; other parameters are left to the caller. A query
/// function relative to the request's time or user is refused here; [`parse_query_options_at`]
/// reads it.
pub fn parse_query_options<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<QueryOptions> {
    parse_query_options_in(pairs, None)
}

/// [`parse_query_options`] for a query run for a request: its filters' query functions
/// (`Microsoft.Dynamics.CRM.LastXDays(…)`, `EqualUserId(…)`) are relative to `context`.
pub fn parse_query_options_at<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    context: &FilterContext,
) -> Result<QueryOptions> {
    parse_query_options_in(pairs, Some(context))
}

fn parse_query_options_in<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    context: Option<&FilterContext>,
) -> Result<QueryOptions> {
    let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    let mut aliases: Vec<(&str, &str)> = Vec::new();
    for (name, value) in &pairs {
        if name.starts_with('@') {
            if aliases.iter().any(|(alias, _)| alias == name) {
                return Err(Error::BadRequest(format!(
                    "parameter alias {name} is given more than once"
                )));
            }
            aliases.push((name, value));
        }
    }
    let mut options = QueryOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        if name.starts_with('@') {
            continue;
        }
        if !name.starts_with('$') {
            check_custom_option(name)?;
            continue;
        }
        let value = match name {
            "$filter" | "$orderby" => with_aliases(value, &aliases)?,
            _ => std::borrow::Cow::Borrowed(value),
        };
        let value = value.as_ref();
        if seen.contains(&name) {
            return Err(Error::BadRequest(format!(
                "query option {name} is given more than once"
            )));
        }
        seen.push(name);
        match name {
            "$select" => {
                let names: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
                if names.iter().any(|n| n.is_empty()) {
                    return Err(Error::BadRequest(
                        "$select has an empty attribute name".into(),
                    ));
                }
                options.select = Some(names);
            }
            "$filter" => {
                options.filter = Some(parse_filter_in(value, context)?);
                options.filter_text = Some(value.to_string());
            }
            "$orderby" => {
                for term in value.split(',') {
                    let mut words = term.split_whitespace();
                    let attribute = words
                        .next()
                        .ok_or_else(|| Error::BadRequest("$orderby has an empty term".into()))?;
                    let descending = match words.next() {
                        None | Some("asc") => false,
                        Some("desc") => true,
                        Some(other) => {
                            return Err(Error::BadRequest(format!(
                                "$orderby direction must be asc or desc, got '{other}'"
                            )));
                        }
                    };
                    if words.next().is_some() {
                        return Err(Error::BadRequest(format!(
                            "$orderby term '{}' has extra words",
                            term.trim()
                        )));
                    }
                    options.order_by.push(OrderBy {
                        attribute: attribute.to_string(),
                        descending,
                    });
                }
            }
            "$top" => {
                let top: u64 = value.parse().map_err(|_| {
                    Error::BadRequest(format!(
                        "$top must be a non-negative integer, got '{value}'"
                    ))
                })?;
                options.top = Some(top);
            }
            "$count" => {
                options.count = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "$count must be true or false, got '{value}'"
                        )));
                    }
                };
            }
            "$skiptoken" => {
                options.after = Some(PageCursor::parse(value)?);
            }
            "$expand" => options.expand = parse_expand(value, context)?,
            "$format" => {
                if !value.eq_ignore_ascii_case("json") && !value.starts_with("application/json") {
                    return Err(Error::BadRequest(format!(
                        "$format '{value}' is not supported; use json"
                    )));
                }
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "query option {name} is not supported"
                )));
            }
        }
    }
    Ok(options)
}

/// The page size asked for by `Prefer: odata.maxpagesize=N`, capped at [`PAGE_SIZE_MAX`].
pub fn page_size(prefer: Option<&str>) -> Result<u64> {
    let Some(prefer) = prefer else {
        return Ok(PAGE_SIZE_MAX);
    };
    for preference in prefer.split(',') {
        if let Some(value) = preference.trim().strip_prefix("odata.maxpagesize=") {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| Error::BadRequest(format!("invalid odata.maxpagesize '{value}'")))?;
            if n == 0 {
                return Err(Error::BadRequest(
                    "odata.maxpagesize must be at least 1".into(),
                ));
            }
            return Ok(n.min(PAGE_SIZE_MAX));
        }
    }
    Ok(PAGE_SIZE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of(pairs: &[(&str, &str)]) -> Result<Option<String>> {
        parse_query_options(pairs.iter().copied()).map(|o| o.filter.map(|f| format!("{f:?}")))
    }

    #[test]
    fn parameter_aliases_are_read_into_filter_and_orderby_outside_string_literals() {
        let aliased = filter_of(&[
            ("$filter", "contains(@p1,'@p1') and revenue gt @p2"),
            ("@p1", "name"),
            ("@p2", "5"),
        ])
        .unwrap();
        let written = filter_of(&[("$filter", "contains(name,'@p1') and revenue gt 5")]).unwrap();
        assert_eq!(aliased, written);
        let unset = filter_of(&[("$filter", "name eq @missing")]).unwrap();
        assert_eq!(unset, filter_of(&[("$filter", "name eq null")]).unwrap());
        let ordered = parse_query_options([("$orderby", "@o desc"), ("@o", "revenue")]).unwrap();
        assert_eq!(
            ordered.order_by,
            vec![OrderBy {
                attribute: "revenue".into(),
                descending: true
            }]
        );
        let many = vec!["name eq @a"; 2_000].join(" or ");
        let value = format!("'{}'", "x".repeat(1_000));
        let grown = parse_query_options([("$filter", many.as_str()), ("@a", value.as_str())]);
        assert!(matches!(grown, Err(Error::BadRequest(m)) if m.contains("longer than")));
        let twice = parse_query_options([("$filter", "name eq @a"), ("@a", "'x'"), ("@a", "'y'")]);
        assert!(matches!(twice, Err(Error::BadRequest(m)) if m.contains("more than once")));
    }

    #[test]
    fn a_query_parameter_that_would_change_what_is_read_is_refused_not_ignored() {
        for name in [
            "fetchXml",
            "FETCHXML",
            "queryExpression",
            "savedquery",
            "UserQuery",
            "filter",
            "Top",
            "select",
        ] {
            let refused = parse_query_options([(name, "x")]);
            assert!(matches!(refused, Err(Error::BadRequest(_))), "{name}");
        }
        for name in ["savedQuery", "userQuery", "_", "api-version"] {
            assert!(parse_query_options([(name, "x")]).is_ok(), "{name}");
        }
    }
}
