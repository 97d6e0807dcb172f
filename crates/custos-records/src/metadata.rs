//! Entity and attribute metadata, and the published catalog of an instance.
//!
//! Definitions are stored as JSON text in the instance database (hand-written conversion, so the
//! stored form is explicit). Each entity has a published and a draft definition; only
//! publishing moves the draft into effect.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::{Error, Result};

/// Category of an entity; it drives the audit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityCategory {
    /// Seeded standard entities.
    OutOfBox,
    /// Created by customization.
    Custom,
    /// About the platform itself.
    Admin,
    /// Everything else.
    Other,
}

impl EntityCategory {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityCategory::OutOfBox => "out_of_box",
            EntityCategory::Custom => "custom",
            EntityCategory::Admin => "admin",
            EntityCategory::Other => "other",
        }
    }

    fn parse(text: &str) -> Option<EntityCategory> {
        [
            EntityCategory::OutOfBox,
            EntityCategory::Custom,
            EntityCategory::Admin,
            EntityCategory::Other,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// The type of an attribute (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeType {
    /// Text up to `max_length` characters.
    String {
        /// Longest value accepted.
        max_length: u32,
    },
    /// Long text.
    Memo,
    /// Whole number, 32-bit (Dataverse's `Integer`, `Edm.Int32`).
    Integer,
    /// Whole number, 64-bit (Dataverse's `BigInt`, `Edm.Int64`): the version number.
    BigInt,
    /// Decimal number.
    Decimal,
    /// Currency amount.
    Money,
    /// True or false.
    Boolean,
    /// UTC date and time, seconds precision.
    DateTime,
    /// Option set value.
    Choice,
    /// Reference to a record of `target`.
    Lookup {
        /// Logical name of the referenced entity.
        target: String,
        /// What deleting the referenced record does to the records that name it.
        on_delete: OnDelete,
    },
    /// A GUID.
    UniqueIdentifier,
}

impl AttributeType {
    /// Name used in metadata (Dataverse `AttributeType`).
    pub fn name(&self) -> &'static str {
        match self {
            AttributeType::String { .. } => "String",
            AttributeType::Memo => "Memo",
            AttributeType::Integer => "Integer",
            AttributeType::BigInt => "BigInt",
            AttributeType::Decimal => "Decimal",
            AttributeType::Money => "Money",
            AttributeType::Boolean => "Boolean",
            AttributeType::DateTime => "DateTime",
            AttributeType::Choice => "Picklist",
            AttributeType::Lookup { .. } => "Lookup",
            AttributeType::UniqueIdentifier => "Uniqueidentifier",
        }
    }

    /// The CSDL type of the attribute's values.
    pub fn edm_type(&self) -> &'static str {
        match self {
            AttributeType::String { .. } | AttributeType::Memo => "Edm.String",
            AttributeType::Integer | AttributeType::Choice => "Edm.Int32",
            AttributeType::BigInt => "Edm.Int64",
            AttributeType::Decimal | AttributeType::Money => "Edm.Decimal",
            AttributeType::Boolean => "Edm.Boolean",
            AttributeType::DateTime => "Edm.DateTimeOffset",
            AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => "Edm.Guid",
        }
    }
}

/// What deleting a record does to the records whose lookup names it — Dataverse's
/// `CascadeConfiguration.Delete` of the lookup's relationship. Every record changed or deleted
/// this way is a change of its own, audited as one, in the same transaction as the delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// The records that name it are deleted too (a parental relationship: an account's
    /// contacts and cases).
    Cascade,
    /// Their lookup is cleared (Dataverse's default for a new relationship).
    RemoveLink,
    /// The delete is refused while any record names it.
    Restrict,
    /// Nothing is done: the lookup keeps naming the deleted record. Only the out-of-box lookups
    /// of users (`createdby`, `modifiedby`, `ownerid`), which record who did what and stay true
    /// after the user is gone; not offered for new lookups, as Dataverse offers no such choice.
    NoCascade,
}

impl OnDelete {
    /// The name Dataverse's `CascadeType` gives it.
    pub fn name(self) -> &'static str {
        match self {
            OnDelete::Cascade => "Cascade",
            OnDelete::RemoveLink => "RemoveLink",
            OnDelete::Restrict => "Restrict",
            OnDelete::NoCascade => "NoCascade",
        }
    }

    /// Reads a name [`OnDelete::name`] writes.
    pub fn parse(name: &str) -> Option<OnDelete> {
        [
            OnDelete::Cascade,
            OnDelete::RemoveLink,
            OnDelete::Restrict,
            OnDelete::NoCascade,
        ]
        .into_iter()
        .find(|o| o.name() == name)
    }
}

/// One attribute (column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    /// Lowercase logical name; also the column name.
    pub logical_name: String,
    /// Value type.
    pub attribute_type: AttributeType,
    /// Set by the platform only (`createdon`, `versionnumber`…).
    pub read_only: bool,
    /// Whether changes to it are audited (Attribute `IsAuditEnabled`).
    pub audit: bool,
    /// Added by customization (`IsCustomAttribute`): only these can be deleted.
    pub custom: bool,
    /// A choice's options (its option set), in order; empty for other types, and for a custom
    /// choice made without any (then any number is taken and shown as it is).
    pub options: Vec<ChoiceOption>,
}

/// One option of a choice: the number stored and the label shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceOption {
    /// The number stored.
    pub value: i64,
    /// The label shown (Dataverse's `Label.UserLocalizedLabel.Label`).
    pub label: String,
}

impl AttributeDef {
    /// A writable, audited attribute.
    pub fn new(logical_name: &str, attribute_type: AttributeType) -> AttributeDef {
        AttributeDef {
            logical_name: logical_name.into(),
            attribute_type,
            read_only: false,
            audit: true,
            custom: false,
            options: Vec::new(),
        }
    }

    /// The label of option `value` of a choice.
    pub fn label(&self, value: i64) -> Option<&str> {
        self.options
            .iter()
            .find(|o| o.value == value)
            .map(|o| o.label.as_str())
    }

    /// The name the Web API shows: `_x_value` for lookups, the logical name otherwise.
    pub fn web_name(&self) -> String {
        match self.attribute_type {
            AttributeType::Lookup { .. } => format!("_{}_value", self.logical_name),
            _ => self.logical_name.clone(),
        }
    }
}

/// One entity (table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityDef {
    /// Lowercase logical name (`account`).
    pub logical_name: String,
    /// Entity set name (`accounts`).
    pub set_name: String,
    /// Report category.
    pub category: EntityCategory,
    /// Attribute holding the primary name, if any.
    pub primary_name: Option<String>,
    /// Attributes, primary id first.
    pub attributes: Vec<AttributeDef>,
    /// Entity `IsAuditEnabled`.
    pub audit: bool,
    /// Entity `IsRetrieveAuditEnabled`.
    pub retrieve_audit: bool,
    /// Entity `IsRetrieveMultipleAuditEnabled`.
    pub retrieve_multiple_audit: bool,
    /// Alternate keys (Dataverse's `EntityKeyMetadata`), published with the rest of the
    /// definition; each published one is a unique index of the entity's table.
    pub keys: Vec<EntityKey>,
}

/// An alternate key: attributes whose values together name at most one record, so that a
/// client that does not know a record's id can name it by them (`accounts(accountnumber='A-1')`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityKey {
    /// Lowercase logical name with a publisher prefix (`new_accountnumber`).
    pub logical_name: String,
    /// The name as its maker wrote it (`new_AccountNumber`).
    pub schema_name: String,
    /// Its display name (may be empty).
    pub display_name: String,
    /// The attributes' logical names, in the key's order.
    pub attributes: Vec<String>,
}

/// How many alternate keys an entity may have, and attributes a key (Dataverse's limits).
pub const KEYS_MAX: usize = 10;
/// How many attributes one alternate key may name.
pub const KEY_ATTRIBUTES_MAX: usize = 16;

impl EntityKey {
    /// Whether an attribute of this type may be part of an alternate key: the types Dataverse
    /// takes (text, whole and decimal numbers, date-times, choices, lookups); not long text,
    /// money, yes/no or the rest.
    pub fn takes(attribute_type: &AttributeType) -> bool {
        matches!(
            attribute_type,
            AttributeType::String { .. }
                | AttributeType::Integer
                | AttributeType::Decimal
                | AttributeType::DateTime
                | AttributeType::Choice
                | AttributeType::Lookup { .. }
        )
    }
}

impl EntityDef {
    /// The primary key attribute: `<logicalname>id`.
    pub fn primary_id(&self) -> String {
        format!("{}id", self.logical_name)
    }

    /// The SQL table holding the records.
    pub fn table(&self) -> String {
        format!("rec_{}", self.logical_name)
    }

    /// An attribute by logical name.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes.iter().find(|a| a.logical_name == name)
    }

    /// An attribute by the name the Web API uses (`_x_value` for lookups, or the logical name).
    pub fn attribute_by_web_name(&self, name: &str) -> Option<&AttributeDef> {
        if let Some(inner) = name
            .strip_prefix('_')
            .and_then(|n| n.strip_suffix("_value"))
            && let Some(attr) = self
                .attribute(inner)
                .filter(|a| matches!(a.attribute_type, AttributeType::Lookup { .. }))
        {
            return Some(attr);
        }
        self.attribute(name)
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> Json {
        let attributes: Vec<Json> = self
            .attributes
            .iter()
            .map(|a| {
                let mut obj = json!({
                    "name": a.logical_name,
                    "type": a.attribute_type.name(),
                    "read_only": a.read_only,
                    "audit": a.audit,
                });
                if a.custom {
                    obj["custom"] = json!(true);
                }
                if !a.options.is_empty() {
                    obj["options"] = json!(
                        a.options
                            .iter()
                            .map(|o| json!([o.value, o.label]))
                            .collect::<Vec<_>>()
                    );
                }
                match &a.attribute_type {
                    AttributeType::String { max_length } => obj["max_length"] = json!(max_length),
                    AttributeType::Lookup { target, on_delete } => {
                        obj["target"] = json!(target);
                        obj["on_delete"] = json!(on_delete.name());
                    }
                    _ => {}
                }
                obj
            })
            .collect();
        let mut out = json!({
            "logical_name": self.logical_name,
            "set_name": self.set_name,
            "category": self.category.as_str(),
            "primary_name": self.primary_name,
            "audit": self.audit,
            "retrieve_audit": self.retrieve_audit,
            "retrieve_multiple_audit": self.retrieve_multiple_audit,
            "attributes": attributes,
        });
        // Only when there are keys: a definition without keys is stored as it always was, so
        // publishing (which compares the stored texts) sees nothing new in it.
        if !self.keys.is_empty() {
            out["keys"] = Json::Array(
                self.keys
                    .iter()
                    .map(|k| {
                        json!({
                            "name": k.logical_name,
                            "schema_name": k.schema_name,
                            "display_name": k.display_name,
                            "attributes": k.attributes,
                        })
                    })
                    .collect(),
            );
        }
        out
    }

    /// Reads the stored JSON form.
    pub fn from_json(json: &Json) -> Result<EntityDef> {
        let bad = |what: &str| Error::Corrupted(format!("entity definition: {what}"));
        let text = |key: &str| {
            json[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(key))
        };
        let flag = |key: &str| json[key].as_bool().ok_or_else(|| bad(key));
        let mut attributes = Vec::new();
        for a in json["attributes"]
            .as_array()
            .ok_or_else(|| bad("attributes"))?
        {
            let name = a["name"].as_str().ok_or_else(|| bad("attribute name"))?;
            let attribute_type = match a["type"].as_str().ok_or_else(|| bad("attribute type"))? {
                "String" => AttributeType::String {
                    max_length: a["max_length"].as_u64().ok_or_else(|| bad("max_length"))? as u32,
                },
                "Memo" => AttributeType::Memo,
                "Integer" => AttributeType::Integer,
                "BigInt" => AttributeType::BigInt,
                "Decimal" => AttributeType::Decimal,
                "Money" => AttributeType::Money,
                "Boolean" => AttributeType::Boolean,
                "DateTime" => AttributeType::DateTime,
                "Picklist" => AttributeType::Choice,
                "Lookup" => AttributeType::Lookup {
                    target: a["target"]
                        .as_str()
                        .ok_or_else(|| bad("target"))?
                        .to_string(),
                    // None in a definition stored before lookups had a delete behaviour:
                    // Dataverse's default (an out-of-box lookup gets the seed's when the store
                    // reads it, `write::parse_definition`).
                    on_delete: match a["on_delete"].as_str() {
                        Some(name) => OnDelete::parse(name).ok_or_else(|| bad("on_delete"))?,
                        None => OnDelete::RemoveLink,
                    },
                },
                "Uniqueidentifier" => AttributeType::UniqueIdentifier,
                other => return Err(bad(&format!("attribute type {other}"))),
            };
            let custom = a["custom"].as_bool().unwrap_or(false);
            let options = match a["options"].as_array() {
                Some(options) => options
                    .iter()
                    .map(|o| match (o[0].as_i64(), o[1].as_str()) {
                        (Some(value), Some(label)) => Ok(ChoiceOption {
                            value,
                            label: label.to_string(),
                        }),
                        _ => Err(bad("choice option")),
                    })
                    .collect::<Result<Vec<_>>>()?,
                None => Vec::new(),
            };
            attributes.push(AttributeDef {
                logical_name: name.to_string(),
                attribute_type,
                read_only: a["read_only"].as_bool().ok_or_else(|| bad("read_only"))?,
                audit: a["audit"].as_bool().ok_or_else(|| bad("audit"))?,
                custom,
                options,
            });
        }
        let mut keys = Vec::new();
        for k in json["keys"].as_array().map_or(&[][..], Vec::as_slice) {
            let field = |key: &str| {
                k[key]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("key {key}")))
            };
            keys.push(EntityKey {
                logical_name: field("name")?,
                schema_name: field("schema_name")?,
                display_name: field("display_name")?,
                attributes: k["attributes"]
                    .as_array()
                    .ok_or_else(|| bad("key attributes"))?
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad("key attribute"))
                    })
                    .collect::<Result<_>>()?,
            });
        }
        Ok(EntityDef {
            logical_name: text("logical_name")?,
            set_name: text("set_name")?,
            category: EntityCategory::parse(&text("category")?).ok_or_else(|| bad("category"))?,
            primary_name: json["primary_name"].as_str().map(str::to_string),
            attributes,
            audit: flag("audit")?,
            retrieve_audit: flag("retrieve_audit")?,
            retrieve_multiple_audit: flag("retrieve_multiple_audit")?,
            keys,
        })
    }
}

/// The published entities of an instance: an immutable snapshot.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entities: BTreeMap<String, EntityDef>,
}

impl Catalog {
    /// A catalog of these entities.
    pub fn new(entities: impl IntoIterator<Item = EntityDef>) -> Catalog {
        Catalog {
            entities: entities
                .into_iter()
                .map(|e| (e.logical_name.clone(), e))
                .collect(),
        }
    }

    /// An entity by logical name.
    pub fn entity(&self, logical_name: &str) -> Option<&EntityDef> {
        self.entities.get(logical_name)
    }

    /// An entity by entity set name.
    pub fn by_set_name(&self, set_name: &str) -> Option<&EntityDef> {
        self.entities.values().find(|e| e.set_name == set_name)
    }

    /// Every entity, by logical name.
    pub fn entities(&self) -> impl Iterator<Item = &EntityDef> {
        self.entities.values()
    }

    /// The navigation properties of `entity`: one single-valued property per lookup (named as
    /// the lookup), one collection-valued property per lookup of any entity that targets it
    /// (named `<referencing entity>_<lookup>`, e.g. `account_primarycontactid` on `contact`).
    /// A lookup whose target is not published has none.
    pub fn navigations<'c>(&'c self, entity: &'c EntityDef) -> Vec<Navigation<'c>> {
        let single = entity
            .attributes
            .iter()
            .filter_map(|lookup| match &lookup.attribute_type {
                AttributeType::Lookup { target, .. } => Some(Navigation {
                    name: lookup.logical_name.clone(),
                    referencing: entity,
                    lookup,
                    referenced: self.entity(target)?,
                    collection: false,
                }),
                _ => None,
            });
        let reverse = self.entities().flat_map(|referencing| {
            referencing
                .attributes
                .iter()
                .filter_map(move |lookup| match &lookup.attribute_type {
                    AttributeType::Lookup { target, .. } if *target == entity.logical_name => {
                        Some(Navigation {
                            name: format!("{}_{}", referencing.logical_name, lookup.logical_name),
                            referencing,
                            lookup,
                            referenced: entity,
                            collection: true,
                        })
                    }
                    _ => None,
                })
        });
        single.chain(reverse).collect()
    }

    /// The navigation property `name` of `entity`.
    pub fn navigation<'c>(&'c self, entity: &'c EntityDef, name: &str) -> Option<Navigation<'c>> {
        self.navigations(entity)
            .into_iter()
            .find(|n| n.name == name)
    }
}

/// A relationship seen from one side: a lookup of `referencing` pointing at a `referenced`
/// record.
#[derive(Debug, Clone)]
pub struct Navigation<'c> {
    /// The property's name.
    pub name: String,
    /// The entity holding the lookup.
    pub referencing: &'c EntityDef,
    /// The lookup attribute.
    pub lookup: &'c AttributeDef,
    /// The entity the lookup points at.
    pub referenced: &'c EntityDef,
    /// Seen from the referenced side: the records whose lookup points here.
    pub collection: bool,
}

impl Navigation<'_> {
    /// The entity whose records the property shows.
    pub fn shows(&self) -> &EntityDef {
        if self.collection {
            self.referencing
        } else {
            self.referenced
        }
    }

    /// The property's name seen from the other side (its OData `Partner`).
    pub fn partner(&self) -> String {
        if self.collection {
            self.lookup.logical_name.clone()
        } else {
            format!(
                "{}_{}",
                self.referencing.logical_name, self.lookup.logical_name
            )
        }
    }
}

/// Whether `name` is the logical name of a customization: a publisher prefix of 2 to 8
/// letters, `_`, then letters, digits and `_` (`new_project`, `contoso_budget`).
pub fn is_custom_name(name: &str) -> bool {
    let Some((prefix, rest)) = name.split_once('_') else {
        return false;
    };
    (2..=8).contains(&prefix.len())
        && prefix.chars().all(|c| c.is_ascii_lowercase())
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 50
}

/// Whether `name` is a valid logical name: it becomes an SQL identifier.
pub(crate) fn is_logical_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 64
}
