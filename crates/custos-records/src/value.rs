//! Typed attribute values: read from Web API JSON, written to and read from SQL, shown as JSON.

use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::metadata::{AttributeDef, AttributeType};
use crate::{Error, Result};

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// String or memo.
    String(String),
    /// Whole number (32- or 64-bit) or choice.
    Integer(i64),
    /// Decimal or money.
    Decimal(f64),
    /// Boolean.
    Boolean(bool),
    /// UTC date and time in the stored form, `YYYY-MM-DDTHH:MM:SS.fffZ`.
    DateTime(String),
    /// GUID (lookups and unique identifiers).
    Guid(Uuid),
}

impl Value {
    /// Reads a JSON value for `attribute`, checking its type.
    pub fn from_json(attribute: &AttributeDef, json: &Json) -> Result<Value> {
        if json.is_null() {
            return Ok(Value::Null);
        }
        let wrong = || {
            Error::BadRequest(format!(
                "attribute '{}' expects a value of type {}, got {}",
                attribute.logical_name,
                attribute.attribute_type.name(),
                json
            ))
        };
        Ok(match &attribute.attribute_type {
            AttributeType::String { max_length } => {
                let text = json.as_str().ok_or_else(wrong)?;
                if text.chars().count() > *max_length as usize {
                    return Err(Error::BadRequest(format!(
                        "attribute '{}' is limited to {max_length} characters",
                        attribute.logical_name
                    )));
                }
                Value::String(text.to_string())
            }
            AttributeType::Memo => Value::String(json.as_str().ok_or_else(wrong)?.to_string()),
            // Dataverse's whole numbers and choices are 32-bit: a wider value is refused, not
            // kept where `$metadata` says it cannot be.
            AttributeType::Integer | AttributeType::Choice => Value::Integer(
                json.as_i64()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .ok_or_else(|| match json.as_i64() {
                        Some(_) => Error::BadRequest(format!(
                            "attribute '{}' holds a 32-bit whole number ({} to {}), got {json}",
                            attribute.logical_name,
                            i32::MIN,
                            i32::MAX
                        )),
                        None => wrong(),
                    })?,
            ),
            AttributeType::BigInt => Value::Integer(json.as_i64().ok_or_else(wrong)?),
            AttributeType::Decimal | AttributeType::Money => {
                let number = json.as_f64().filter(|n| n.is_finite()).ok_or_else(wrong)?;
                Value::Decimal(number)
            }
            AttributeType::Boolean => Value::Boolean(json.as_bool().ok_or_else(wrong)?),
            AttributeType::DateTime => Value::DateTime(
                normalize_datetime(json.as_str().ok_or_else(wrong)?).ok_or_else(wrong)?,
            ),
            AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => Value::Guid(
                json.as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(wrong)?,
            ),
        })
    }

    /// Reads the text of a CSV cell for `attribute` (an empty cell is no value): numbers in
    /// their plain form, booleans as `true`/`false`, `yes`/`no` or `1`/`0`, dates in ISO 8601,
    /// GUIDs for lookups.
    pub fn from_text(attribute: &AttributeDef, text: &str) -> Result<Value> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Value::Null);
        }
        let json = match &attribute.attribute_type {
            AttributeType::Integer | AttributeType::Choice | AttributeType::BigInt => text
                .parse::<i64>()
                .map(Json::from)
                .unwrap_or_else(|_| json!(text)),
            AttributeType::Decimal | AttributeType::Money => {
                return Value::decimal_from_text(attribute, text);
            }
            AttributeType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Json::Bool(true),
                "false" | "no" | "0" => Json::Bool(false),
                _ => json!(text),
            },
            _ => json!(text),
        };
        Value::from_json(attribute, &json)
    }

    /// Reads a decimal or money value from the text the client sent (a JSON number's, a CSV
    /// cell's, an `IEEE754Compatible` string's), refusing one that a 64-bit float would not keep
    /// exactly — `922337203685477.5807` would be stored as `922337203685477.6`, a change no one
    /// asked for — rather than storing another number without a word. What a float keeps is
    /// taken (`0.30000000000000004` is one), however it is written (`12.50`, `1.25e1`).
    pub fn decimal_from_text(attribute: &AttributeDef, text: &str) -> Result<Value> {
        let wrong = || {
            Error::BadRequest(format!(
                "attribute '{}' expects a value of type {}, got {text}",
                attribute.logical_name,
                attribute.attribute_type.name(),
            ))
        };
        let number = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(wrong)?;
        let kept = serde_json::Number::from_f64(number).ok_or_else(wrong)?;
        let (sent, stored) = (
            decimal_digits(text.trim()),
            decimal_digits(&kept.to_string()),
        );
        if sent.is_none() || sent != stored {
            return Err(Error::BadRequest(format!(
                "attribute '{}' keeps decimals as 64-bit floating point (about 15 significant digits): {text} would be kept as {kept}; send a value with fewer digits",
                attribute.logical_name
            )));
        }
        Ok(Value::Decimal(number))
    }

    /// The Web API JSON of this value.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::String(s) => json!(s),
            Value::DateTime(s) => json!(datetime_text(s)),
            Value::Integer(n) => json!(n),
            Value::Decimal(n) => json!(n),
            Value::Boolean(b) => json!(b),
            Value::Guid(g) => json!(g.to_string()),
        }
    }
}

/// The exact value a decimal numeral writes, as its sign, significant digits and power of ten
/// (`-12.50` and `-1.25e1` are both `(true, "125", -1)`; zero is `(false, "", 0)`); `None` when
/// it is not a numeral.
fn decimal_digits(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{whole}{fraction}");
    let significant = all.trim_start_matches('0');
    let digits = significant.trim_end_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    let trailing = (significant.len() - digits.len()) as i64;
    let power = exponent
        .checked_sub(fraction.len() as i64)?
        .checked_add(trailing)?;
    Some((negative, digits.to_string(), power))
}

/// Normalises an ISO 8601 date-time (or a bare date, read as midnight UTC) to the stored form
/// `YYYY-MM-DDTHH:MM:SS.fffZ`: to the millisecond (finer digits are dropped), fixed width, so
/// that text order is time order.
pub(crate) fn normalize_datetime(text: &str) -> Option<String> {
    parse_datetime(text).map(|utc| stored_form(&utc))
}

/// A `$filter` date-time literal: the stored form, or — when it is finer than a millisecond —
/// its millisecond followed by the finer digits (`2019-01-05T20:30:49.999123Z`): the comparison
/// decides what it means against values stored to the millisecond (`sql.rs`).
pub(crate) fn normalize_datetime_literal(text: &str) -> Option<String> {
    let utc = parse_datetime(text)?;
    let nanos = utc.nanosecond();
    if nanos % 1_000_000 == 0 {
        return Some(stored_form(&utc));
    }
    let fraction = format!("{nanos:09}");
    Some(format!(
        "{}.{}Z",
        seconds_form(&utc),
        fraction.trim_end_matches('0')
    ))
}

/// A date-time literal's millisecond (the stored form) and whether it is finer than that.
pub(crate) fn split_fraction(literal: &str) -> (String, bool) {
    match literal.get(..23) {
        Some(millisecond) if literal.len() > 24 => (format!("{millisecond}Z"), true),
        _ => (literal.to_string(), false),
    }
}

/// A stored date-time as the Web API shows it: whole seconds as `…:SSZ` (Dataverse's form),
/// else with its milliseconds.
pub fn datetime_text(stored: &str) -> String {
    match stored.strip_suffix(".000Z") {
        Some(seconds) => format!("{seconds}Z"),
        None => stored.to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `utc`.
fn seconds_form(utc: &OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        utc.year(),
        utc.month() as u8,
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

fn stored_form(utc: &OffsetDateTime) -> String {
    format!("{}.{:03}Z", seconds_form(utc), utc.millisecond())
}

/// A date, or a date-time with a zone and optional seconds, in UTC, years 0 to 9999.
fn parse_datetime(text: &str) -> Option<OffsetDateTime> {
    let b = text.as_bytes();
    let parsed = if text.len() == 10 {
        OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339).ok()?
    } else if b.len() > 16
        && b[10] == b'T'
        && b[13] == b':'
        && matches!(b[16], b'Z' | b'z' | b'+' | b'-')
    {
        // OData's time of day may leave the seconds out (`2024-01-01T09:30Z`).
        OffsetDateTime::parse(&format!("{}:00{}", &text[..16], &text[16..]), &Rfc3339).ok()?
    } else {
        OffsetDateTime::parse(text, &Rfc3339).ok()?
    };
    let utc = parsed.to_offset(time::UtcOffset::UTC);
    (0..=9999).contains(&utc.year()).then_some(utc)
}

/// Now, in the stored date-time form.
pub(crate) fn datetime_now(now: OffsetDateTime) -> String {
    normalize_datetime(&now.format(&Rfc3339).expect("format now"))
        .expect("now is a valid date-time")
}

#[cfg(test)]
mod tests {
    use super::{Value, decimal_digits};
    use crate::metadata::{AttributeDef, AttributeType};

    #[test]
    fn a_numeral_is_its_sign_digits_and_power_of_ten() {
        for (text, expected) in [
            ("-12.50", Some((true, "125", -1))),
            ("-1.25e1", Some((true, "125", -1))),
            ("+125E-1", Some((false, "125", -1))),
            ("0.000", Some((false, "", 0))),
            ("-0", Some((false, "", 0))),
            ("1200", Some((false, "12", 2))),
            (".5", Some((false, "5", -1))),
            ("5.", Some((false, "5", 0))),
            ("", None),
            (".", None),
            ("1e", None),
            ("0x10", None),
            ("1.2.3", None),
        ] {
            let expected = expected.map(|(n, d, p)| (n, d.to_string(), p));
            assert_eq!(decimal_digits(text), expected, "{text}");
        }
    }

    #[test]
    fn a_decimal_a_float_would_change_is_refused_and_any_it_keeps_is_taken() {
        let money = AttributeDef::new("revenue", AttributeType::Money);
        for kept in [
            "12.50",
            "1.25e1",
            "0.30000000000000004",
            "922337203685477",
            "-0.0001",
            "100000000000.1234",
        ] {
            let value = Value::decimal_from_text(&money, kept).unwrap();
            assert_eq!(value, Value::Decimal(kept.parse().unwrap()), "{kept}");
        }
        for changed in [
            "922337203685477.5807",
            "0.1000000000000000000001",
            "9007199254740993",
        ] {
            let refused = Value::decimal_from_text(&money, changed).unwrap_err();
            assert!(
                refused.to_string().contains("would be kept as"),
                "{changed}: {refused}"
            );
        }
        for wrong in ["abc", "1e999", "NaN", "inf", ""] {
            assert!(Value::decimal_from_text(&money, wrong).is_err(), "{wrong}");
        }
    }
}
