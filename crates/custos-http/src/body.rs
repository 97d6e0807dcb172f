//! Reading a JSON request body: an object whose every property is one the route knows, each of
//! its type. A property the route does not know, or one of the wrong type, is refused rather
//! than ignored or taken as absent, so a misspelt or mistyped setting is an error the caller
//! sees, not a default it did not ask for.

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
}
