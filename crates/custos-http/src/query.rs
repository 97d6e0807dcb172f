//! Reading a query string: its pairs, times in ISO 8601, whole numbers, and the form an event
//! records in its `Query`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AppError;

/// A time parameter `name` as microseconds since the epoch: an RFC 3339 date-time or a date
/// (midnight UTC).
pub fn parse_time(name: &str, text: &str) -> Result<i64, AppError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339))
        .map_err(|_| {
            AppError::bad_request(format!(
                "'{name}' must be an ISO 8601 date or date-time, got '{text}'"
            ))
        })?;
    Ok((parsed.unix_timestamp_nanos() / 1000) as i64)
}

/// The query pairs as recorded in an event's `Query`.
pub fn recorded_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded pairs of a raw query string.
pub fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Parameter `name` as a whole number, when given.
pub fn number(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, AppError> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| {
            v.parse().map_err(|_| {
                AppError::bad_request(format!("'{name}' must be a whole number, got '{v}'"))
            })
        })
        .transpose()
}
