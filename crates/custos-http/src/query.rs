//! Reading a query string: its pairs, times in ISO 8601, whole numbers, and the form an event
//! records in its `Query`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AppError;

/// A time parameter `name` as microseconds since the epoch: an RFC 3339 date-time, a date
/// (midnight UTC), or `YYYY-MM-DDTHH:MM[:SS[.fff]]` without a zone (UTC), the forms Microsoft's
/// Management Activity API documents.
pub fn parse_time(name: &str, text: &str) -> Result<i64, AppError> {
    // RFC 3339 with a zone; or, as Microsoft's audit APIs take them, a date (midnight), or a
    // date and time without a zone, with or without seconds: UTC.
    let candidates = [
        text.to_string(),
        format!("{text}Z"),
        format!("{text}:00Z"),
        format!("{text}T00:00:00Z"),
    ];
    let parsed = candidates
        .iter()
        .find_map(|candidate| OffsetDateTime::parse(candidate, &Rfc3339).ok())
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "'{name}' must be an ISO 8601 date or date-time (UTC unless it names a zone), got '{text}'"
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

/// The pairs of a query string, refused (400) when its percent-escapes are not UTF-8: decoding
/// would put U+FFFD in their place, and the request would then ask for something its client
/// never wrote.
pub fn utf8_query_pairs(raw: Option<String>) -> Result<Vec<(String, String)>, AppError> {
    let text = raw.as_deref().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect();
    let replaced = pairs
        .iter()
        .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'));
    let written = text.contains('\u{FFFD}') || text.to_ascii_uppercase().contains("%EF%BF%BD");
    if replaced && !written {
        return Err(AppError::bad_request(
            "the query string is not UTF-8 once its percent-escapes are decoded",
        ));
    }
    Ok(pairs)
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

#[cfg(test)]
mod utf8_tests {
    use super::*;

    #[test]
    fn a_query_that_is_not_utf8_is_refused_and_a_written_replacement_character_is_not() {
        assert!(utf8_query_pairs(Some("$filter=name%20eq%20%27%FF%27".into())).is_err());
        let pairs = utf8_query_pairs(Some("$filter=name%20eq%20%27Zo%C3%AB%27".into())).unwrap();
        assert_eq!(pairs[0].1, "name eq 'Zoë'");
        let written = utf8_query_pairs(Some("q=%EF%BF%BD".into())).unwrap();
        assert_eq!(written[0].1, "\u{FFFD}");
        assert!(utf8_query_pairs(None).unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_every_form_microsoft_documents() {
        let at = |text: &str| parse_time("t", text).unwrap();
        let second = 1_796_186_693_000_000; // 2026-12-02T04:44:53Z
        assert_eq!(at("2026-12-02T04:44:53Z"), second);
        assert_eq!(at("2026-12-02T04:44:53"), second, "no zone: UTC");
        assert_eq!(at("2026-12-02T05:44:53+01:00"), second);
        assert_eq!(at("2026-12-02T04:44:53.5"), second + 500_000);
        assert_eq!(at("2026-12-02T04:44"), second - 53_000_000);
        assert_eq!(
            at("2026-12-02"),
            second - (4 * 3600 + 44 * 60 + 53) * 1_000_000
        );
        for bad in ["2026-12-02T04", "yesterday", "2026-13-01", ""] {
            assert!(parse_time("t", bad).is_err(), "{bad}");
        }
    }
}
