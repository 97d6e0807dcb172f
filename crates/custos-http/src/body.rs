//! Reading a JSON request body: an object whose every property is one the route knows. A
//! property the route does not know is refused rather than ignored, so a misspelt setting is
//! an error the caller sees, not a default it did not ask for.

use serde_json::{Map, Value as Json};

use crate::error::AppError;

/// Refuses `object` when it has a property outside `known`, naming the first.
pub fn known_properties(object: &Map<String, Json>, known: &[&str]) -> Result<(), AppError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(AppError::bad_request(format!("unknown property '{key}'"))),
        None => Ok(()),
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
        assert!(known_properties(&Map::new(), &[]).is_ok());
    }
}
