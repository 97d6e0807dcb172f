//! What a write does, whichever engine stores it: the checks before it, the columns an insert
//! fills, the assignments of an update, the composed attributes after it — as SQL with `?`
//! parameters (PostgreSQL's store numbers them, `sql::numbered`).

use uuid::Uuid;

use crate::metadata::{AttributeType, EntityDef};
use crate::seed::COMPOSED;
use crate::store::{Record, WriteContext};
use crate::value::{Value, datetime_now};
use crate::{Error, Result};

/// Refuses values for attributes that do not exist or that the caller may not write.
pub(crate) fn check_writable(
    definition: &EntityDef,
    values: &[(String, Value)],
    context: WriteContext,
) -> Result<()> {
    for (name, value) in values {
        let attribute = definition.attribute(name).ok_or_else(|| {
            Error::BadRequest(format!(
                "attribute '{name}' does not exist on entity '{}'",
                definition.logical_name
            ))
        })?;
        if (attribute.read_only && !context.platform) || *name == definition.primary_id() {
            return Err(Error::BadRequest(format!(
                "attribute '{name}' is read-only"
            )));
        }
        if let Value::Integer(chosen) = value
            && !attribute.options.is_empty()
            && attribute.label(*chosen).is_none()
        {
            let offered: Vec<String> = attribute
                .options
                .iter()
                .map(|o| format!("{} ({})", o.value, o.label))
                .collect();
            return Err(Error::BadRequest(format!(
                "{chosen} is not an option of '{name}' of entity '{}'; its options are {}",
                definition.logical_name,
                offered.join(", ")
            )));
        }
    }
    Ok(())
}

/// Refuses (412) a conditional write to a record whose version is not `version`: it changed
/// since the client read it. Checked inside the write's transaction, so no write slips between.
pub(crate) fn check_version(definition: &EntityDef, record: &Record, version: i64) -> Result<()> {
    match record.values.get("versionnumber") {
        Some(Value::Integer(current)) if *current == version => Ok(()),
        current => Err(Error::PreconditionFailed(format!(
            "{} {} is at version {}, not {version}: it changed since it was read",
            definition.logical_name,
            record.id,
            match current {
                Some(Value::Integer(n)) => n.to_string(),
                _ => "unknown".into(),
            }
        ))),
    }
}

/// The error of a record that is not there.
pub(crate) fn not_found(definition: &EntityDef, id: Uuid) -> Error {
    Error::NotFound(format!(
        "{} with id {id} does not exist",
        definition.logical_name
    ))
}

/// The error of a record id that is taken.
pub(crate) fn taken(definition: &EntityDef, id: Uuid) -> Error {
    Error::Conflict(format!(
        "{} with id {id} already exists",
        definition.logical_name
    ))
}

/// A stored definition's JSON text. A definition stored before choices had options gives its
/// out-of-box choices Dataverse's options (a custom choice made without any keeps none); one
/// stored before lookups had a delete behaviour gives its out-of-box lookups the seed's (a
/// custom one keeps `RemoveLink`, what [`EntityDef::from_json`] reads for none); one stored
/// before whole numbers were 32-bit gives its version number the 64 bits it has.
pub(crate) fn parse_definition(text: &str) -> Result<EntityDef> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Corrupted(e.to_string()))?;
    let mut definition = EntityDef::from_json(&json)?;
    let stored = json["attributes"].as_array();
    for (index, attribute) in definition.attributes.iter_mut().enumerate() {
        if attribute.custom {
            continue;
        }
        match &mut attribute.attribute_type {
            AttributeType::Choice if attribute.options.is_empty() => {
                attribute.options = crate::seed::out_of_box_options(
                    &definition.logical_name,
                    &attribute.logical_name,
                );
            }
            // The version number is 64-bit (Dataverse's BigInt); definitions stored before
            // whole numbers were told apart call it Integer, now 32-bit.
            AttributeType::Integer if attribute.logical_name == "versionnumber" => {
                attribute.attribute_type = AttributeType::BigInt;
            }
            AttributeType::Lookup { on_delete, .. }
                if stored.is_some_and(|s| s[index].get("on_delete").is_none()) =>
            {
                if let Some(seeded) = crate::seed::out_of_box_on_delete(
                    &definition.logical_name,
                    &attribute.logical_name,
                ) {
                    *on_delete = seeded;
                }
            }
            _ => {}
        }
    }
    Ok(definition)
}

/// The `INSERT` of a new record and its parameters: the given values, then the system
/// attributes the caller did not give (created and modified on and by, owner, version 1).
pub(crate) fn insert_sql(
    definition: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    context: WriteContext,
) -> (String, Vec<Value>) {
    let now = Value::DateTime(datetime_now(context.now));
    let actor = Value::Guid(context.actor);
    let mut columns = vec![definition.primary_id()];
    let mut bound = vec![Value::Guid(id)];
    for (name, value) in values {
        columns.push(name.clone());
        bound.push(value.clone());
    }
    let delegate = context.delegate.map_or(Value::Null, Value::Guid);
    for (name, value) in [
        ("createdon", now.clone()),
        ("modifiedon", now),
        ("createdby", actor.clone()),
        ("modifiedby", actor.clone()),
        ("createdonbehalfby", delegate.clone()),
        ("modifiedonbehalfby", delegate),
        ("ownerid", actor),
        ("versionnumber", Value::Integer(1)),
    ] {
        if !columns.iter().any(|c| c == name) && definition.attribute(name).is_some() {
            columns.push(name.to_string());
            bound.push(value);
        }
    }
    let sql = format!(
        "INSERT INTO \"{}\" ({}) VALUES ({})",
        definition.table(),
        columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    (sql, bound)
}

/// The `UPDATE` of an existing record and its parameters: the given values, modified on and
/// by, the version incremented.
pub(crate) fn update_sql(
    definition: &EntityDef,
    id: Uuid,
    values: &[(String, Value)],
    context: WriteContext,
) -> (String, Vec<Value>) {
    let mut sets: Vec<String> = values
        .iter()
        .map(|(name, _)| format!("\"{name}\" = ?"))
        .collect();
    sets.push("\"modifiedon\" = ?".into());
    sets.push("\"modifiedby\" = ?".into());
    sets.push("\"versionnumber\" = \"versionnumber\" + 1".into());
    let mut bound: Vec<Value> = values.iter().map(|(_, v)| v.clone()).collect();
    bound.push(Value::DateTime(datetime_now(context.now)));
    bound.push(Value::Guid(context.actor));
    if definition.attribute("modifiedonbehalfby").is_some() {
        sets.push("\"modifiedonbehalfby\" = ?".into());
        bound.push(context.delegate.map_or(Value::Null, Value::Guid));
    }
    bound.push(Value::Guid(id));
    let sql = format!(
        "UPDATE \"{}\" SET {} WHERE \"{}\" = ?",
        definition.table(),
        sets.join(", "),
        definition.primary_id()
    );
    (sql, bound)
}

/// The statements that recompute a record's composed attributes (see [`COMPOSED`]), each with
/// the record's id as its one parameter.
pub(crate) fn compose_sql(definition: &EntityDef) -> Vec<String> {
    let mut out = Vec::new();
    for (entity, attribute, parts) in COMPOSED {
        if entity != definition.logical_name || definition.attribute(attribute).is_none() {
            continue;
        }
        let joined = parts
            .iter()
            .filter(|p| definition.attribute(p).is_some())
            .map(|p| format!("coalesce(\"{p}\", '')"))
            .collect::<Vec<_>>()
            .join(" || ' ' || ");
        out.push(format!(
            "UPDATE \"{}\" SET \"{attribute}\" = nullif(trim({joined}), '') WHERE \"{}\" = ?",
            definition.table(),
            definition.primary_id()
        ));
    }
    out
}

/// The statement that reads one record by id.
pub(crate) fn fetch_sql(definition: &EntityDef) -> String {
    format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?",
        crate::sql::column_list(definition),
        definition.table(),
        definition.primary_id()
    )
}

/// The statement that deletes one record by id.
pub(crate) fn delete_sql(definition: &EntityDef) -> String {
    format!(
        "DELETE FROM \"{}\" WHERE \"{}\" = ?",
        definition.table(),
        definition.primary_id()
    )
}

#[cfg(test)]
mod tests {
    use super::parse_definition;

    #[test]
    fn a_choices_options_are_kept_and_an_old_definition_gets_the_out_of_box_ones() {
        let account = crate::seed::seed_entities()
            .into_iter()
            .find(|e| e.logical_name == "account")
            .unwrap();
        let stored = account.to_json();
        assert_eq!(parse_definition(&stored.to_string()).unwrap(), account);
        // As stored before choices had options.
        let mut old = stored.clone();
        for attribute in old["attributes"].as_array_mut().unwrap() {
            attribute.as_object_mut().unwrap().remove("options");
        }
        let read = parse_definition(&old.to_string()).unwrap();
        assert_eq!(
            read.attribute("industrycode").unwrap().label(33),
            Some("Wholesale")
        );
        // A custom choice made without options keeps none.
        let mut custom = old.clone();
        let industry = custom["attributes"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|a| a["name"] == "industrycode")
            .unwrap();
        industry["custom"] = serde_json::json!(true);
        let read = parse_definition(&custom.to_string()).unwrap();
        assert!(read.attribute("industrycode").unwrap().options.is_empty());
    }

    #[test]
    fn a_lookups_delete_behaviour_and_a_wide_version_are_kept_and_an_old_definition_gets_them() {
        use crate::metadata::{AttributeType, OnDelete};
        let on_delete = |definition: &crate::EntityDef, name: &str| match definition
            .attribute(name)
            .unwrap()
            .attribute_type
        {
            AttributeType::Lookup { on_delete, .. } => on_delete,
            _ => panic!("{name} is a lookup"),
        };
        let mut contact = crate::seed::seed_entities()
            .into_iter()
            .find(|e| e.logical_name == "contact")
            .unwrap();
        assert_eq!(on_delete(&contact, "parentcustomerid"), OnDelete::Cascade);
        assert_eq!(on_delete(&contact, "ownerid"), OnDelete::NoCascade);
        if let AttributeType::Lookup { on_delete, .. } = &mut contact
            .attributes
            .iter_mut()
            .find(|a| a.logical_name == "parentcustomerid")
            .unwrap()
            .attribute_type
        {
            *on_delete = OnDelete::Restrict;
        }
        let stored = contact.to_json();
        let read = parse_definition(&stored.to_string()).unwrap();
        assert_eq!(read, contact);
        // As stored before lookups had a delete behaviour: the seed's, or the default for a
        // lookup the seed does not have.
        let mut old = stored.clone();
        for attribute in old["attributes"].as_array_mut().unwrap() {
            attribute.as_object_mut().unwrap().remove("on_delete");
            if attribute["name"] == "versionnumber" {
                attribute["type"] = "Integer".into();
            }
            if attribute["name"] == "jobtitle" {
                *attribute = serde_json::json!({
                    "name": "new_managerid", "type": "Lookup", "target": "contact",
                    "read_only": false, "audit": true, "custom": true
                });
            }
        }
        let read = parse_definition(&old.to_string()).unwrap();
        assert_eq!(on_delete(&read, "parentcustomerid"), OnDelete::Cascade);
        assert_eq!(on_delete(&read, "createdby"), OnDelete::NoCascade);
        assert_eq!(on_delete(&read, "new_managerid"), OnDelete::RemoveLink);
        assert_eq!(
            read.attribute("versionnumber").unwrap().attribute_type,
            AttributeType::BigInt,
            "the version number stays 64-bit"
        );
        let mut wrong = stored;
        let wrong_lookup = wrong["attributes"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|a| a["name"] == "parentcustomerid")
            .unwrap();
        wrong_lookup["on_delete"] = "Sometimes".into();
        assert!(parse_definition(&wrong.to_string()).is_err());
    }
}
