//! Reading a JSON request body: an object whose every property is one the route knows, each of
//! its type. A property the route does not know, or one of the wrong type, is refused rather
//! than ignored or taken as absent, so a misspelt or mistyped setting is an error the caller
//! sees, not a default it did not ask for.
//!
//! A body is read so that it means one thing: an object that names a member twice is refused, at
//! any depth ([`parse_json`]). JSON leaves such a body's meaning open (RFC 8259 §4: "names SHOULD
//! be unique"), and parsers differ — most keep the last, some the first, some refuse — so a proxy
//! or filter in front of the service could read `{"name": "a", "name": "b"}` as `a` while the
//! record, its answer and its audit event would say `b`.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

use crate::error::AppError;

/// Refuses `object` when it has a property outside `known`, naming the first and the known ones.
pub fn known_properties(object: &Map<String, Json>, known: &[&str]) -> Result<(), AppError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(AppError::bad_request(format!(
            "unknown property '{key}'; expected {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The text property `key` of `object`: `None` when absent or null, refused when not a string.
pub fn text<'a>(object: &'a Map<String, Json>, key: &str) -> Result<Option<&'a str>, AppError> {
    match object.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text)),
        Some(_) => Err(AppError::bad_request(format!("'{key}' must be a string"))),
    }
}

/// A JSON value whose objects, at any depth, name each member once.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(Unique)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Unique)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(Unique)?;
            if members.insert(name.clone(), value).is_some() {
                return Err(A::Error::custom(twice(&name)));
            }
        }
        Ok(Json::Object(members))
    }
}

fn twice(name: &str) -> String {
    format!("member '{name}' is given more than once in an object")
}

/// `body` as JSON, every object naming each member once.
pub fn parse_json(body: &[u8]) -> serde_json::Result<Json> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Unique.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The JSON object `body`, every object in it naming each member once; refused (400) when it
/// is not valid JSON or not an object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Json>, AppError> {
    match parse_json(body) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(AppError::bad_request("the body must be a JSON object")),
        Err(e) => Err(AppError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// The members of the JSON object `body`, each value's text as written, each name once.
struct RawMembers;

impl<'de> Visitor<'de> for RawMembers {
    type Value = HashMap<String, Box<RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = HashMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value: Box<RawValue> = map.next_value()?;
            if members.insert(name.clone(), value).is_some() {
                return Err(A::Error::custom(twice(&name)));
            }
        }
        Ok(members)
    }
}

/// The members of the JSON object `body` with each value's text as written, each name once.
pub fn raw_members(body: &[u8]) -> serde_json::Result<HashMap<String, Box<RawValue>>> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let members = deserializer.deserialize_map(RawMembers)?;
    deserializer.end()?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_outside_the_known_ones_is_named() {
        let object = serde_json::json!({"name": "a", "nmae": "b"});
        let object = object.as_object().unwrap();
        assert!(known_properties(object, &["name", "nmae"]).is_ok());
        let refused = known_properties(object, &["name"]).unwrap_err();
        assert!(refused.message.contains("'nmae'"), "{}", refused.message);
        assert!(
            refused.message.contains("expected name"),
            "{}",
            refused.message
        );
        assert!(known_properties(&Map::new(), &[]).is_ok());
    }

    #[test]
    fn a_text_property_is_a_string_or_absent() {
        let object = serde_json::json!({"a": "x", "b": null, "c": 5});
        let object = object.as_object().unwrap();
        assert_eq!(text(object, "a").unwrap(), Some("x"));
        assert_eq!(text(object, "b").unwrap(), None);
        assert_eq!(text(object, "z").unwrap(), None);
        let refused = text(object, "c").unwrap_err();
        assert!(
            refused.message.contains("'c' must be a string"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_member_named_twice_is_refused_at_any_depth() {
        assert_eq!(
            parse_json(br#"{"a": [1, {"b": null}], "c": 1.5, "d": "x"}"#).unwrap(),
            serde_json::json!({"a": [1, {"b": null}], "c": 1.5, "d": "x"})
        );
        for body in [
            r#"{"name": "a", "name": "b"}"#,
            r#"{"x": {"y": 1, "y": 2}}"#,
            r#"{"x": [{"y": 1, "y": 2}]}"#,
        ] {
            let refused = parse_json(body.as_bytes()).unwrap_err().to_string();
            assert!(refused.contains("more than once"), "{body}: {refused}");
        }
        assert!(
            parse_json(br#"{"a": 1} {"b": 2}"#).is_err(),
            "trailing JSON"
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let refused = parse_json(deep.as_bytes()).unwrap_err();
        assert!(refused.to_string().contains("recursion"), "{refused}");
        let raw = raw_members(br#"{"revenue": 12.50, "name": "x"}"#).unwrap();
        assert_eq!(raw["revenue"].get(), "12.50");
        let refused = raw_members(br#"{"revenue": 1, "revenue": 2}"#).unwrap_err();
        assert!(refused.to_string().contains("more than once"), "{refused}");
    }
}
