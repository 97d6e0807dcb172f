//! OData system query options of a retrieve multiple: `$select`, `$filter`, `$orderby`, `$top`,
//! `$count`, `$skiptoken`, and the page size from `Prefer: odata.maxpagesize`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::filter::{Filter, parse_filter};
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
fn split_top(text: &str, separator: char) -> Result<Vec<&str>> {
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
fn parse_expand(text: &str) -> Result<Vec<Expand>> {
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
            options: parse_query_options(pairs)?,
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

/// Parses the decoded query pairs of a request. Names may carry the `$` or not only where OData
/// allows it; unknown `$` options are rejected, other parameters are left to the caller.
pub fn parse_query_options<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<QueryOptions> {
    let mut options = QueryOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        if !name.starts_with('$') {
            continue;
        }
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
                options.filter = Some(parse_filter(value)?);
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
            "$expand" => options.expand = parse_expand(value)?,
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
