//! A record named in a URL by its key: `accounts(<guid>)`, `accounts(accountid=<guid>)` or an
//! alternate key, `accounts(accountnumber='A-1')`, `contacts(firstname='Joe',emailaddress1='…')`
//! (Dataverse's "Use an alternate key to reference a record").
//!
//! Each value is read as a `$filter` literal of its attribute (`name eq value`, one comparison
//! and nothing else), so a key's values are typed and checked exactly as a filter's are.

use uuid::Uuid;

use crate::filter::{CompareOp, Filter, parse_filter};
use crate::metadata::EntityDef;
use crate::sql::{bind, resolve};
use crate::{Error, Result, Value};

/// What the parentheses after an entity set name.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKey {
    /// The record's id, bare, quoted or named (`accountid=…`).
    Id(Uuid),
    /// The values of one of the entity's alternate keys.
    Alternate {
        /// The key's logical name.
        key: String,
        /// Each attribute of the key (logical name) with its value, in the key's order.
        values: Vec<(String, Value)>,
    },
}

/// Reads the text between the parentheses of `set(…)` for `entity`.
pub fn record_key(entity: &EntityDef, text: &str) -> Result<RecordKey> {
    let text = text.trim();
    if let Ok(id) = Uuid::parse_str(text.trim_matches('\'')) {
        return Ok(RecordKey::Id(id));
    }
    let parts = split_top_level(text)?;
    if let [(name, value)] = parts.as_slice()
        && *name == entity.primary_id()
    {
        return Uuid::parse_str(value.trim_matches('\''))
            .map(RecordKey::Id)
            .map_err(|_| Error::BadRequest(format!("'{value}' is not a record id (a GUID)")));
    }
    let mut named = Vec::with_capacity(parts.len());
    for (name, value) in &parts {
        let attribute = resolve(entity, name)?;
        if named.iter().any(|(n, _)| *n == attribute.logical_name) {
            return Err(Error::BadRequest(format!(
                "the key names '{name}' more than once"
            )));
        }
        named.push((attribute.logical_name.clone(), (*name, *value)));
    }
    let key = entity
        .keys
        .iter()
        .find(|k| {
            k.attributes.len() == named.len()
                && k.attributes
                    .iter()
                    .all(|a| named.iter().any(|(n, _)| n == a))
        })
        .ok_or_else(|| not_a_key(entity))?;
    let mut values = Vec::with_capacity(key.attributes.len());
    for attribute in &key.attributes {
        let (_, (written, literal)) = named
            .iter()
            .find(|(n, _)| n == attribute)
            .expect("the key's attributes are the ones named");
        values.push((attribute.clone(), key_value(entity, written, literal)?));
    }
    Ok(RecordKey::Alternate {
        key: key.logical_name.clone(),
        values,
    })
}

/// Dataverse's own words for a key that is not one of the entity's.
fn not_a_key(entity: &EntityDef) -> Error {
    let declared: Vec<String> = std::iter::once(entity.primary_id())
        .chain(entity.keys.iter().map(|k| k.attributes.join(",")))
        .map(|k| format!("({k})"))
        .collect();
    Error::BadRequest(format!(
        "The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{}'. Ensure that the names and number of key properties match the declared key of the resource: {}",
        entity.logical_name,
        declared.join(" or ")
    ))
}

/// The value of one key attribute, written as `$filter` would write it.
fn key_value(entity: &EntityDef, written: &str, literal: &str) -> Result<Value> {
    let attribute = resolve(entity, written)?;
    let malformed = || {
        Error::BadRequest(format!(
            "'{literal}' is not a value of '{written}' ({})",
            attribute.attribute_type.name()
        ))
    };
    let Filter::Compare {
        op: CompareOp::Eq,
        value,
        ..
    } = parse_filter(&format!("{written} eq {literal}")).map_err(|_| malformed())?
    else {
        return Err(malformed());
    };
    match bind(attribute, written, &value)? {
        Value::Null => Err(malformed()),
        // Checked as a written value too (a text's length, a whole number's 32 bits): a key's
        // values may become a new record's (an upsert), and no record holds one a write refuses.
        value => Value::from_json(attribute, &value.to_json()),
    }
}

/// `name=value` pairs separated by commas outside quoted text (a quote inside one is written
/// twice, so the pairs are found by counting quotes). A name is letters, digits and `_`.
fn split_top_level(text: &str) -> Result<Vec<(&str, &str)>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Error::BadRequest(format!(
            "the key ({text}) has an unclosed quote"
        )));
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(|part| {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                Error::BadRequest(format!(
                    "'{text}' is neither a record id (a GUID) nor name=value pairs of an alternate key"
                ))
            })?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::BadRequest(format!(
                    "'{name}' is not an attribute's name"
                )));
            }
            Ok((name, value.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::EntityKey;
    use crate::seed::seeded_account;

    fn account() -> EntityDef {
        let mut account = seeded_account();
        account.keys = vec![
            EntityKey {
                logical_name: "new_number".into(),
                schema_name: "new_Number".into(),
                display_name: String::new(),
                attributes: vec!["accountnumber".into()],
            },
            EntityKey {
                logical_name: "new_employees".into(),
                schema_name: "new_Employees".into(),
                display_name: String::new(),
                attributes: vec!["numberofemployees".into()],
            },
            EntityKey {
                logical_name: "new_nameandcontact".into(),
                schema_name: "new_NameAndContact".into(),
                display_name: String::new(),
                attributes: vec!["name".into(), "primarycontactid".into()],
            },
        ];
        account
    }

    #[test]
    fn ids_are_read_bare_quoted_and_named() {
        let id = Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap();
        for text in [
            "00000000-0000-0000-0000-000000000001",
            "'00000000-0000-0000-0000-000000000001'",
            "accountid=00000000-0000-0000-0000-000000000001",
        ] {
            assert_eq!(
                record_key(&account(), text).unwrap(),
                RecordKey::Id(id),
                "{text}"
            );
        }
        assert!(matches!(
            record_key(&account(), "accountid='nope'"),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn alternate_keys_are_read_in_the_keys_order_whatever_the_urls() {
        assert_eq!(
            record_key(&account(), "accountnumber='A-1, ''B'''").unwrap(),
            RecordKey::Alternate {
                key: "new_number".into(),
                values: vec![("accountnumber".into(), Value::String("A-1, 'B'".into()))],
            }
        );
        assert_eq!(
            record_key(&account(), "numberofemployees=12").unwrap(),
            RecordKey::Alternate {
                key: "new_employees".into(),
                values: vec![("numberofemployees".into(), Value::Integer(12))],
            }
        );
        let contact = Uuid::now_v7();
        assert_eq!(
            record_key(
                &account(),
                &format!("_primarycontactid_value={contact}, name='Contoso'")
            )
            .unwrap(),
            RecordKey::Alternate {
                key: "new_nameandcontact".into(),
                values: vec![
                    ("name".into(), Value::String("Contoso".into())),
                    ("primarycontactid".into(), Value::Guid(contact)),
                ],
            }
        );
    }

    #[test]
    fn what_is_not_a_key_is_refused_by_name() {
        // Longer than the attribute holds: no record has it, and no upsert may give it one.
        let long = format!("accountnumber='{}'", "x".repeat(300));
        for text in [
            "name='Contoso'",
            "accountnumber='A',name='B'",
            "accountnumber='A',accountnumber='B'",
            "accountnumber='A' or name eq 'B'",
            "accountnumber=null",
            "accountnumber=5",
            long.as_str(),
            "numberofemployees=4294967296",
            "accountnumber='A",
            "nosuch='A'",
            "account number='A'",
            "accountnumber",
            "",
        ] {
            let refused = record_key(&account(), text);
            assert!(
                matches!(refused, Err(Error::BadRequest(_))),
                "{text}: {refused:?}"
            );
        }
        let Err(Error::BadRequest(message)) = record_key(&account(), "name='Contoso'") else {
            panic!("refused");
        };
        assert!(
            message.contains(
                "(accountid) or (accountnumber) or (numberofemployees) or (name,primarycontactid)"
            ),
            "{message}"
        );
    }
}
