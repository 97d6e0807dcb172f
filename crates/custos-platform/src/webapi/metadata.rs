//! Metadata of the Web API: the service document, `$metadata` (CSDL XML), `WhoAmI`,
//! `EntityDefinitions` with their audit flags (saved as drafts, always audited), and
//! `PublishAllXml`, which makes drafts current and swaps the audit policy.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use custos_audit::{Change, Operation};
use custos_records::{
    AttributeDef, AttributeType, Catalog, ChoiceOption, EntityDef, OnDelete, Privilege,
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::WebRequest;
use super::metaquery::{Kind, MetaQuery};
use custos_http::blocking;
use custos_http::draft::EventDraft;
use custos_http::error::AppError;

pub(crate) fn service_document(request: &WebRequest) -> Response {
    let sets: Vec<Json> = request
        .instance
        .store
        .catalog()
        .entities()
        .map(|e| json!({"name": e.set_name, "kind": "EntitySet", "url": e.set_name}))
        .chain([json!({"name": "audits", "kind": "EntitySet", "url": "audits"})])
        .collect();
    axum::Json(
        json!({"@odata.context": format!("{}/$metadata", request.service_root), "value": sets}),
    )
    .into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The Capabilities annotations of every entity set: lists refuse `$skip` and `$search`.
const UNSUPPORTED_OPTIONS: &str = concat!(
    "<Annotation Term=\"Org.OData.Capabilities.V1.SkipSupported\" Bool=\"false\"/>",
    "<Annotation Term=\"Org.OData.Capabilities.V1.SearchRestrictions\"><Record>",
    "<PropertyValue Property=\"Searchable\" Bool=\"false\"/></Record></Annotation>",
);

/// The container's Aggregation annotation: every entity set's `$apply` takes `filter`,
/// `groupby` and `aggregate`, without rollup (`webapi::aggregate`).
const APPLY_SUPPORTED: &str = concat!(
    "<Annotation Term=\"Org.OData.Aggregation.V1.ApplySupported\"><Record>",
    "<PropertyValue Property=\"Transformations\"><Collection><String>filter</String>",
    "<String>groupby</String><String>aggregate</String></Collection></PropertyValue>",
    "<PropertyValue Property=\"Rollup\" EnumMember=\"Org.OData.Aggregation.V1.RollupType/None\"/>",
    "</Record></Annotation>\n",
);

pub(crate) fn csdl(request: &WebRequest) -> Response {
    let catalog = request.instance.store.catalog();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<edmx:Edmx Version=\"4.0\" xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\">\n<edmx:DataServices>\n<Schema Namespace=\"Microsoft.Dynamics.CRM\" Alias=\"mscrm\" xmlns=\"http://docs.oasis-open.org/odata/ns/edm\">\n",
    );
    for entity in catalog.entities() {
        xml.push_str(&format!(
            "<EntityType Name=\"{}\"><Key><PropertyRef Name=\"{}\"/></Key>",
            xml_escape(&entity.logical_name),
            xml_escape(&entity.primary_id())
        ));
        let key = entity.primary_id();
        for attribute in &entity.attributes {
            // A decimal's scale is the value's own (OData's default, 0, would read as an
            // integer); the key is never null; a string is as long as the attribute allows.
            let facets = match attribute.attribute_type {
                AttributeType::Decimal | AttributeType::Money => " Scale=\"variable\"".into(),
                _ if attribute.logical_name == key => " Nullable=\"false\"".into(),
                AttributeType::String { max_length } => format!(" MaxLength=\"{max_length}\""),
                _ => String::new(),
            };
            // What the server sets itself is `Core.Computed`, as Dataverse annotates it, and so
            // is a lookup's value (set through its navigation property): a client that reads
            // the annotation (python-odata) leaves them out of its writes, which refuse them.
            let lookup = matches!(attribute.attribute_type, AttributeType::Lookup { .. });
            let computed = if attribute.read_only || lookup {
                "><Annotation Term=\"Org.OData.Core.V1.Computed\" Bool=\"true\"/></Property>"
            } else {
                "/>"
            };
            xml.push_str(&format!(
                "<Property Name=\"{}\" Type=\"{}\"{facets}{computed}",
                xml_escape(&attribute.web_name()),
                attribute.attribute_type.edm_type()
            ));
        }
        // Relations: a lookup's record, and the records whose lookup points here.
        for navigation in catalog.navigations(entity) {
            let shows = &navigation.shows().logical_name;
            let (kind, constraint) = if navigation.collection {
                // What deleting this entity's record does to the records of the collection
                // (CSDL's OnDelete; `Restrict` takes no action on them, it refuses the delete).
                let action = match &navigation.lookup.attribute_type {
                    AttributeType::Lookup { on_delete, .. } => match on_delete {
                        OnDelete::Cascade => "Cascade",
                        OnDelete::RemoveLink => "SetNull",
                        OnDelete::Restrict | OnDelete::NoCascade => "None",
                    },
                    _ => "None",
                };
                (
                    format!("Collection(mscrm.{shows})"),
                    format!("<OnDelete Action=\"{action}\"/>"),
                )
            } else {
                (
                    format!("mscrm.{shows}"),
                    format!(
                        "<ReferentialConstraint Property=\"{}\" ReferencedProperty=\"{}\"/>",
                        xml_escape(&navigation.lookup.web_name()),
                        xml_escape(&navigation.referenced.primary_id())
                    ),
                )
            };
            xml.push_str(&format!(
                "<NavigationProperty Name=\"{}\" Type=\"{}\" Partner=\"{}\">{constraint}</NavigationProperty>",
                xml_escape(&navigation.name),
                xml_escape(&kind),
                xml_escape(&navigation.partner()),
            ));
        }
        // Alternate keys, as Dataverse declares them (the OData community's Keys vocabulary):
        // what a client may write between a set's parentheses besides the id.
        if !entity.keys.is_empty() {
            xml.push_str("<Annotation Term=\"OData.Community.Keys.V1.AlternateKeys\"><Collection>");
            for key in &entity.keys {
                xml.push_str("<Record Type=\"OData.Community.Keys.V1.AlternateKey\"><PropertyValue Property=\"Key\"><Collection>");
                for name in &key.attributes {
                    let web_name = entity
                        .attribute(name)
                        .map_or_else(|| name.clone(), AttributeDef::web_name);
                    let web_name = xml_escape(&web_name);
                    xml.push_str(&format!(
                        "<Record Type=\"OData.Community.Keys.V1.PropertyRef\"><PropertyValue Property=\"Alias\" String=\"{web_name}\"/><PropertyValue Property=\"Name\" PropertyPath=\"{web_name}\"/></Record>"
                    ));
                }
                xml.push_str("</Collection></PropertyValue></Record>");
            }
            xml.push_str("</Collection></Annotation>");
        }
        xml.push_str("</EntityType>\n");
    }
    // The operations the container imports, defined as Dataverse defines them.
    xml.push_str(concat!(
        "<ComplexType Name=\"WhoAmIResponse\">",
        "<Property Name=\"BusinessUnitId\" Type=\"Edm.Guid\" Nullable=\"false\"/>",
        "<Property Name=\"UserId\" Type=\"Edm.Guid\" Nullable=\"false\"/>",
        "<Property Name=\"OrganizationId\" Type=\"Edm.Guid\" Nullable=\"false\"/>",
        "<Property Name=\"UserPrincipalName\" Type=\"Edm.String\"/>",
        "<Property Name=\"UserType\" Type=\"Edm.Int32\"/>",
        "</ComplexType>\n",
        "<Function Name=\"WhoAmI\"><ReturnType Type=\"mscrm.WhoAmIResponse\" Nullable=\"false\"/></Function>\n",
        "<ComplexType Name=\"RetrieveVersionResponse\">",
        "<Property Name=\"Version\" Type=\"Edm.String\"/>",
        "</ComplexType>\n",
        "<Function Name=\"RetrieveVersion\"><ReturnType Type=\"mscrm.RetrieveVersionResponse\" Nullable=\"false\"/></Function>\n",
        "<ComplexType Name=\"EntityRecordCountCollection\">",
        "<Property Name=\"Count\" Type=\"Edm.Int32\" Nullable=\"false\"/>",
        "<Property Name=\"IsReadOnly\" Type=\"Edm.Boolean\" Nullable=\"false\"/>",
        "<Property Name=\"Keys\" Type=\"Collection(Edm.String)\"/>",
        "<Property Name=\"Values\" Type=\"Collection(Edm.Int64)\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"RetrieveTotalRecordCountResponse\">",
        "<Property Name=\"EntityRecordCountCollection\" Type=\"mscrm.EntityRecordCountCollection\"/>",
        "</ComplexType>\n",
        "<Function Name=\"RetrieveTotalRecordCount\"><Parameter Name=\"EntityNames\" Type=\"Collection(Edm.String)\" Nullable=\"false\"/><ReturnType Type=\"mscrm.RetrieveTotalRecordCountResponse\" Nullable=\"false\"/></Function>\n",
        // A record's change history (`history.rs`): Dataverse's types, its `Target` any record.
        "<EntityType Name=\"crmbaseentity\" Abstract=\"true\"/>\n",
        "<EntityType Name=\"audit\"><Key><PropertyRef Name=\"auditid\"/></Key>",
        "<Property Name=\"auditid\" Type=\"Edm.Guid\" Nullable=\"false\"/>",
        "<Property Name=\"createdon\" Type=\"Edm.DateTimeOffset\"/>",
        "<Property Name=\"operation\" Type=\"Edm.Int32\"/>",
        "<Property Name=\"action\" Type=\"Edm.Int32\"/>",
        "<Property Name=\"objecttypecode\" Type=\"Edm.String\"/>",
        "<Property Name=\"_objectid_value\" Type=\"Edm.Guid\"/>",
        "<Property Name=\"_userid_value\" Type=\"Edm.Guid\"/>",
        "<Property Name=\"_callinguserid_value\" Type=\"Edm.Guid\"/>",
        "</EntityType>\n",
        "<ComplexType Name=\"Collection_Int32_String\">",
        "<Property Name=\"Count\" Type=\"Edm.Int32\" Nullable=\"false\"/>",
        "<Property Name=\"Keys\" Type=\"Collection(Edm.Int32)\"/>",
        "<Property Name=\"Values\" Type=\"Collection(Edm.String)\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"AuditDetail\" Abstract=\"true\">",
        "<NavigationProperty Name=\"AuditRecord\" Type=\"mscrm.audit\" Nullable=\"false\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"AttributeAuditDetail\" BaseType=\"mscrm.AuditDetail\">",
        "<Property Name=\"DeletedAttributes\" Type=\"mscrm.Collection_Int32_String\"/>",
        "<Property Name=\"InvalidNewValueAttributes\" Type=\"Collection(Edm.String)\"/>",
        "<Property Name=\"LocLabelLanguageCode\" Type=\"Edm.Int32\"/>",
        "<NavigationProperty Name=\"OldValue\" Type=\"mscrm.crmbaseentity\" Nullable=\"false\"/>",
        "<NavigationProperty Name=\"NewValue\" Type=\"mscrm.crmbaseentity\" Nullable=\"false\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"ShareAuditDetail\" BaseType=\"mscrm.AuditDetail\">",
        "<Property Name=\"OldPrivileges\" Type=\"Edm.String\"/>",
        "<Property Name=\"NewPrivileges\" Type=\"Edm.String\"/>",
        "<NavigationProperty Name=\"Principal\" Type=\"mscrm.crmbaseentity\" Nullable=\"false\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"RelationshipAuditDetail\" BaseType=\"mscrm.AuditDetail\">",
        "<Property Name=\"RelationshipName\" Type=\"Edm.String\"/>",
        "<NavigationProperty Name=\"TargetRecords\" Type=\"Collection(mscrm.crmbaseentity)\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"RolePrivilege\">",
        "<Property Name=\"Depth\" Type=\"Edm.String\"/>",
        "<Property Name=\"PrivilegeName\" Type=\"Edm.String\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"RolePrivilegeAuditDetail\" BaseType=\"mscrm.AuditDetail\">",
        "<Property Name=\"OldRolePrivileges\" Type=\"Collection(mscrm.RolePrivilege)\"/>",
        "<Property Name=\"NewRolePrivileges\" Type=\"Collection(mscrm.RolePrivilege)\"/>",
        "<Property Name=\"InvalidNewPrivileges\" Type=\"Collection(Edm.Guid)\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"UserAccessAuditDetail\" BaseType=\"mscrm.AuditDetail\">",
        "<Property Name=\"AccessTime\" Type=\"Edm.DateTimeOffset\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"AuditDetailCollection\">",
        "<Property Name=\"MoreRecords\" Type=\"Edm.Boolean\" Nullable=\"false\"/>",
        "<Property Name=\"PagingCookie\" Type=\"Edm.String\"/>",
        "<Property Name=\"TotalRecordCount\" Type=\"Edm.Int32\" Nullable=\"false\"/>",
        "<Property Name=\"AuditDetails\" Type=\"Collection(mscrm.AuditDetail)\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"RetrieveRecordChangeHistoryResponse\">",
        "<Property Name=\"AuditDetailCollection\" Type=\"mscrm.AuditDetailCollection\"/>",
        "</ComplexType>\n",
        "<ComplexType Name=\"PagingInfo\">",
        "<Property Name=\"PageNumber\" Type=\"Edm.Int32\" Nullable=\"false\"/>",
        "<Property Name=\"Count\" Type=\"Edm.Int32\" Nullable=\"false\"/>",
        "<Property Name=\"ReturnTotalRecordCount\" Type=\"Edm.Boolean\" Nullable=\"false\"/>",
        "<Property Name=\"PagingCookie\" Type=\"Edm.String\"/>",
        "</ComplexType>\n",
        "<Function Name=\"RetrieveRecordChangeHistory\"><Parameter Name=\"Target\" Type=\"mscrm.crmbaseentity\" Nullable=\"false\"/><Parameter Name=\"PagingInfo\" Type=\"mscrm.PagingInfo\"/><ReturnType Type=\"mscrm.RetrieveRecordChangeHistoryResponse\" Nullable=\"false\"/></Function>\n",
        "<ComplexType Name=\"RetrieveAttributeChangeHistoryResponse\">",
        "<Property Name=\"AuditDetailCollection\" Type=\"mscrm.AuditDetailCollection\"/>",
        "</ComplexType>\n",
        "<Function Name=\"RetrieveAttributeChangeHistory\"><Parameter Name=\"Target\" Type=\"mscrm.crmbaseentity\" Nullable=\"false\"/><Parameter Name=\"AttributeLogicalName\" Type=\"Edm.String\" Nullable=\"false\"/><Parameter Name=\"PagingInfo\" Type=\"mscrm.PagingInfo\"/><ReturnType Type=\"mscrm.RetrieveAttributeChangeHistoryResponse\" Nullable=\"false\"/></Function>\n",
        // The audit summary (`audits.rs`): one change's details, bound to its row.
        "<ComplexType Name=\"RetrieveAuditDetailsResponse\">",
        "<Property Name=\"AuditDetail\" Type=\"mscrm.AuditDetail\"/>",
        "</ComplexType>\n",
        "<Function Name=\"RetrieveAuditDetails\" IsBound=\"true\"><Parameter Name=\"entity\" Type=\"mscrm.audit\" Nullable=\"false\"/><ReturnType Type=\"mscrm.RetrieveAuditDetailsResponse\" Nullable=\"false\"/></Function>\n",
        "<Action Name=\"PublishAllXml\"/>\n",
    ));
    // Dataverse's query functions, declared as its `$metadata` declares them: used inside a
    // `$filter` only (`custos_records::QUERY_FUNCTIONS`), so the container imports none.
    for (name, takes) in custos_records::QUERY_FUNCTIONS {
        use custos_records::QueryFunctionValue::*;
        let value = match takes {
            Nothing => "",
            Count => "<Parameter Name=\"PropertyValue\" Type=\"Edm.Int64\" Nullable=\"false\"/>",
            Date => "<Parameter Name=\"PropertyValue\" Type=\"Edm.String\" Nullable=\"false\"/>",
            List => {
                "<Parameter Name=\"PropertyValues\" Type=\"Collection(Edm.String)\" Nullable=\"false\"/>"
            }
        };
        xml.push_str(&format!(
            "<Function Name=\"{name}\"><Parameter Name=\"PropertyName\" Type=\"Edm.String\" Nullable=\"false\"/>{value}<ReturnType Type=\"Edm.Boolean\" Nullable=\"false\"/></Function>\n"
        ));
    }
    xml.push_str("<EntityContainer Name=\"System\">\n");
    for entity in catalog.entities() {
        xml.push_str(&format!(
            "<EntitySet Name=\"{}\" EntityType=\"Microsoft.Dynamics.CRM.{}\">",
            xml_escape(&entity.set_name),
            xml_escape(&entity.logical_name)
        ));
        for navigation in catalog.navigations(entity) {
            xml.push_str(&format!(
                "<NavigationPropertyBinding Path=\"{}\" Target=\"{}\"/>",
                xml_escape(&navigation.name),
                xml_escape(&navigation.shows().set_name)
            ));
        }
        // What a list does not take, said where clients and generators look (the
        // Capabilities vocabulary): $skip (pages follow next links) and $search.
        xml.push_str(UNSUPPORTED_OPTIONS);
        xml.push_str("</EntitySet>\n");
    }
    // The audit summary's rows, the log's change events (`audits.rs`).
    xml.push_str("<EntitySet Name=\"audits\" EntityType=\"Microsoft.Dynamics.CRM.audit\">");
    xml.push_str(UNSUPPORTED_OPTIONS);
    xml.push_str("</EntitySet>\n");
    xml.push_str(APPLY_SUPPORTED);
    xml.push_str("<FunctionImport Name=\"WhoAmI\" Function=\"Microsoft.Dynamics.CRM.WhoAmI\"/>\n<FunctionImport Name=\"RetrieveVersion\" Function=\"Microsoft.Dynamics.CRM.RetrieveVersion\"/>\n<FunctionImport Name=\"RetrieveTotalRecordCount\" Function=\"Microsoft.Dynamics.CRM.RetrieveTotalRecordCount\"/>\n<FunctionImport Name=\"RetrieveRecordChangeHistory\" Function=\"Microsoft.Dynamics.CRM.RetrieveRecordChangeHistory\"/>\n<FunctionImport Name=\"RetrieveAttributeChangeHistory\" Function=\"Microsoft.Dynamics.CRM.RetrieveAttributeChangeHistory\"/>\n<ActionImport Name=\"PublishAllXml\" Action=\"Microsoft.Dynamics.CRM.PublishAllXml\"/>\n");
    xml.push_str("</EntityContainer>\n</Schema>\n</edmx:DataServices>\n</edmx:Edmx>\n");
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

pub(crate) fn who_am_i(request: &WebRequest) -> Response {
    axum::Json(json!({
        "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", request.service_root),
        "UserId": request.caller.principal.id,
        "BusinessUnitId": request.instance.organization_id,
        "OrganizationId": request.instance.organization_id,
        "UserPrincipalName": request.caller.principal.upn,
        "UserType": request.caller.principal.user_type,
    }))
    .into_response()
}

/// The version of the Web API this service answers as (`RetrieveVersion`), which SDK clients
/// ask for when they connect: Dataverse's 9.2, whose URLs and answers it keeps.
pub(crate) const WEB_API_VERSION: &str = "9.2.0.0";

pub(crate) fn retrieve_version(request: &WebRequest) -> Response {
    axum::Json(json!({
        "@odata.context": format!("{}/$metadata#Microsoft.Dynamics.CRM.RetrieveVersionResponse", request.service_root),
        "Version": WEB_API_VERSION,
    }))
    .into_response()
}

/// The properties an entity's definition shows (`entity_json`), which `$select` and
/// `$filter` may name.
pub(super) const ENTITY_PROPERTIES: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "DisplayName",
    "DisplayCollectionName",
    "Description",
    "ObjectTypeCode",
    "IsManaged",
    "IsActivity",
    "EntitySetName",
    "PrimaryIdAttribute",
    "PrimaryNameAttribute",
    "IsCustomEntity",
    "EntityCategory",
    "IsAuditEnabled",
    "IsRetrieveAuditEnabled",
    "IsRetrieveMultipleAuditEnabled",
];

/// The properties an attribute's definition may show (`attribute_json`; `MaxLength` only on
/// text, `Targets` and `CascadeConfiguration` only on lookups, `OptionSet` only on choices).
pub(super) const ATTRIBUTE_PROPERTIES: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "EntityLogicalName",
    "DisplayName",
    "Description",
    "AttributeType",
    "IsPrimaryId",
    "IsPrimaryName",
    "RequiredLevel",
    "IsManaged",
    "IsValidForCreate",
    "IsValidForUpdate",
    "IsAuditEnabled",
    "IsCustomAttribute",
    "MaxLength",
    "Targets",
    "CascadeConfiguration",
    "OptionSet",
];

/// The properties a choice's option set shows (`attribute_json`).
pub(super) const OPTION_SET_PROPERTIES: &[&str] =
    &["MetadataId", "Name", "IsGlobal", "OptionSetType", "Options"];

/// The properties a relationship shows (`relationship_json`).
pub(super) const RELATIONSHIP_PROPERTIES: &[&str] = &[
    "MetadataId",
    "SchemaName",
    "RelationshipType",
    "ReferencedEntity",
    "ReferencedAttribute",
    "ReferencingEntity",
    "ReferencingAttribute",
    "ReferencedEntityNavigationPropertyName",
    "ReferencingEntityNavigationPropertyName",
    "CascadeConfiguration",
    "IsCustomRelationship",
    "IsManaged",
];

/// The properties an alternate key's definition shows (`keys::key_json`).
pub(super) const KEY_PROPERTIES: &[&str] = &[
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntityLogicalName",
    "KeyAttributes",
    "DisplayName",
    "EntityKeyIndexStatus",
    "IsManaged",
];

/// The `MetadataId` of a definition: a UUID (version 8) made from the SHA-256 of what it
/// defines, so that it is the same on every node, in every instance and after every restart
/// without being stored — as an out-of-box table's is the same in every Dataverse environment,
/// and a custom one's travels with its solution.
fn metadata_id(names: &[&str]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"custos/metadata-id/1");
    for name in names {
        hash.update([0]);
        hash.update(name.as_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The `MetadataId` of entity `entity`.
pub(super) fn entity_metadata_id(entity: &str) -> Uuid {
    metadata_id(&["entity", entity])
}

/// The `MetadataId` of attribute `attribute` of entity `entity`.
pub(super) fn attribute_metadata_id(entity: &str, attribute: &str) -> Uuid {
    metadata_id(&["attribute", entity, attribute])
}

/// The `MetadataId` of alternate key `key` of entity `entity`.
pub(super) fn key_metadata_id(entity: &str, key: &str) -> Uuid {
    metadata_id(&["key", entity, key])
}

/// The entity whose `MetadataId` is `id`: published, or a draft not yet published.
pub(super) fn entity_named_by(request: &WebRequest, id: Uuid) -> Result<String, AppError> {
    let published = request
        .instance
        .store
        .catalog()
        .entities()
        .find(|e| entity_metadata_id(&e.logical_name) == id)
        .map(|e| e.logical_name.clone());
    match published {
        Some(name) => Ok(name),
        None => request
            .instance
            .store
            .drafts()?
            .into_iter()
            .find(|e| entity_metadata_id(&e.logical_name) == id)
            .map(|e| e.logical_name)
            .ok_or_else(|| AppError::not_found(format!("no table definition has MetadataId {id}"))),
    }
}

/// The attribute of `entity` (published or draft) whose `MetadataId` is `id`.
pub(super) fn attribute_named_by(
    request: &WebRequest,
    entity: &str,
    id: Uuid,
) -> Result<String, AppError> {
    let named = |definition: &EntityDef| {
        definition
            .attributes
            .iter()
            .find(|a| attribute_metadata_id(entity, &a.logical_name) == id)
            .map(|a| a.logical_name.clone())
    };
    let published = request
        .instance
        .store
        .catalog()
        .entity(entity)
        .and_then(named);
    match published {
        Some(name) => Ok(name),
        None => named(&request.instance.store.draft(entity)?).ok_or_else(|| {
            AppError::not_found(format!(
                "no attribute of entity '{entity}' has MetadataId {id}"
            ))
        }),
    }
}

/// The alternate key of `entity` (published or draft) whose `MetadataId` is `id`.
pub(super) fn key_named_by(
    request: &WebRequest,
    entity: &str,
    id: Uuid,
) -> Result<String, AppError> {
    request
        .instance
        .store
        .draft(entity)?
        .keys
        .iter()
        .find(|k| key_metadata_id(entity, &k.logical_name) == id)
        .map(|k| k.logical_name.clone())
        .ok_or_else(|| {
            AppError::not_found(format!(
                "no alternate key of entity '{entity}' has MetadataId {id}"
            ))
        })
}

/// The name of the OData type of an attribute of type `kind` (`StringAttributeMetadata`…),
/// which its `@odata.type` and a cast of `Attributes` name.
pub(super) fn attribute_type_name(kind: &AttributeType) -> &'static str {
    match kind {
        AttributeType::String { .. } => "StringAttributeMetadata",
        AttributeType::Memo => "MemoAttributeMetadata",
        AttributeType::Integer => "IntegerAttributeMetadata",
        AttributeType::BigInt => "BigIntAttributeMetadata",
        AttributeType::Decimal => "DecimalAttributeMetadata",
        AttributeType::Money => "MoneyAttributeMetadata",
        AttributeType::Boolean => "BooleanAttributeMetadata",
        AttributeType::DateTime => "DateTimeAttributeMetadata",
        AttributeType::Choice => "PicklistAttributeMetadata",
        AttributeType::Lookup { .. } => "LookupAttributeMetadata",
        AttributeType::UniqueIdentifier => "UniqueIdentifierAttributeMetadata",
    }
}

/// The attribute type a cast segment names (`Microsoft.Dynamics.CRM.PicklistAttributeMetadata`),
/// as the type name [`attribute_type_name`] gives.
fn cast_type(cast: &str) -> Result<&'static str, AppError> {
    const TYPES: [&str; 11] = [
        "StringAttributeMetadata",
        "MemoAttributeMetadata",
        "IntegerAttributeMetadata",
        "BigIntAttributeMetadata",
        "DecimalAttributeMetadata",
        "MoneyAttributeMetadata",
        "BooleanAttributeMetadata",
        "DateTimeAttributeMetadata",
        "PicklistAttributeMetadata",
        "LookupAttributeMetadata",
        "UniqueIdentifierAttributeMetadata",
    ];
    cast.strip_prefix("Microsoft.Dynamics.CRM.")
        .and_then(|name| TYPES.into_iter().find(|t| *t == name))
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "'{cast}' is not a type of attribute to cast to; the types are Microsoft.Dynamics.CRM.{}",
                TYPES.join(", Microsoft.Dynamics.CRM.")
            ))
        })
}

/// A `Label` in en-US (1033), as Dataverse shows display names; an empty one for `None`.
pub(super) fn label(text: Option<&str>) -> Json {
    match text {
        Some(text) => {
            let label = json!({"Label": text, "LanguageCode": 1033});
            json!({"LocalizedLabels": [label], "UserLocalizedLabel": label})
        }
        None => json!({"LocalizedLabels": [], "UserLocalizedLabel": null}),
    }
}

fn managed(value: bool) -> Json {
    json!({"Value": value, "CanBeChanged": true, "ManagedPropertyLogicalName": "canmodifyauditsettings"})
}

pub(super) fn entity_json(entity: &EntityDef) -> Map<String, Json> {
    let mut out = Map::new();
    out.insert(
        "MetadataId".into(),
        json!(entity_metadata_id(&entity.logical_name)),
    );
    out.insert("LogicalName".into(), json!(entity.logical_name));
    // A custom entity's names as it was made are not kept: its logical name stands for them.
    let names = custos_records::entity_names(&entity.logical_name);
    out.insert(
        "SchemaName".into(),
        json!(names.map_or(entity.logical_name.as_str(), |n| n.schema)),
    );
    out.insert(
        "DisplayName".into(),
        label(Some(
            names.map_or(entity.logical_name.as_str(), |n| n.display),
        )),
    );
    out.insert(
        "DisplayCollectionName".into(),
        label(Some(
            names.map_or(entity.set_name.as_str(), |n| n.collection),
        )),
    );
    out.insert("Description".into(), label(None));
    out.insert("ObjectTypeCode".into(), json!(names.map(|n| n.type_code)));
    out.insert("IsManaged".into(), json!(names.is_some()));
    out.insert("IsActivity".into(), json!(entity.logical_name == "task"));
    out.insert("EntitySetName".into(), json!(entity.set_name));
    out.insert("PrimaryIdAttribute".into(), json!(entity.primary_id()));
    out.insert("PrimaryNameAttribute".into(), json!(entity.primary_name));
    out.insert(
        "IsCustomEntity".into(),
        json!(entity.category == custos_records::EntityCategory::Custom),
    );
    out.insert("EntityCategory".into(), json!(entity.category.as_str()));
    out.insert("IsAuditEnabled".into(), managed(entity.audit));
    out.insert(
        "IsRetrieveAuditEnabled".into(),
        json!({"Value": entity.retrieve_audit}),
    );
    out.insert(
        "IsRetrieveMultipleAuditEnabled".into(),
        json!({"Value": entity.retrieve_multiple_audit}),
    );
    out
}

pub(super) fn attribute_json(entity: &EntityDef, attribute: &AttributeDef) -> Map<String, Json> {
    let mut out = Map::new();
    out.insert(
        "@odata.type".into(),
        json!(format!(
            "#Microsoft.Dynamics.CRM.{}",
            attribute_type_name(&attribute.attribute_type)
        )),
    );
    out.insert(
        "MetadataId".into(),
        json!(attribute_metadata_id(
            &entity.logical_name,
            &attribute.logical_name
        )),
    );
    out.insert("LogicalName".into(), json!(attribute.logical_name));
    out.insert("EntityLogicalName".into(), json!(entity.logical_name));
    out.insert(
        "DisplayName".into(),
        label(Some(
            custos_records::display_name(&attribute.logical_name)
                .unwrap_or(&attribute.logical_name),
        )),
    );
    out.insert("Description".into(), label(None));
    out.insert(
        "AttributeType".into(),
        json!(attribute.attribute_type.name()),
    );
    let primary_id = attribute.logical_name == entity.primary_id();
    out.insert("IsPrimaryId".into(), json!(primary_id));
    out.insert(
        "IsPrimaryName".into(),
        json!(entity.primary_name.as_deref() == Some(attribute.logical_name.as_str())),
    );
    // Nothing but the id is required of a record here (a create may leave any value out).
    out.insert(
        "RequiredLevel".into(),
        json!({
            "Value": if primary_id { "SystemRequired" } else { "None" },
            "CanBeChanged": false,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        }),
    );
    out.insert("IsManaged".into(), json!(!attribute.custom));
    out.insert("IsValidForCreate".into(), json!(!attribute.read_only));
    out.insert(
        "IsValidForUpdate".into(),
        json!(!attribute.read_only && attribute.logical_name != entity.primary_id()),
    );
    out.insert("IsAuditEnabled".into(), managed(attribute.audit));
    out.insert("IsCustomAttribute".into(), json!(attribute.custom));
    if let custos_records::AttributeType::String { max_length } = attribute.attribute_type {
        out.insert("MaxLength".into(), json!(max_length));
    }
    if let custos_records::AttributeType::Lookup { target, on_delete } = &attribute.attribute_type {
        out.insert("Targets".into(), json!([target]));
        out.insert(
            "CascadeConfiguration".into(),
            json!({"Delete": on_delete.name()}),
        );
    }
    if attribute.attribute_type == AttributeType::Choice {
        let mut set = option_set_json(&attribute.options);
        set["MetadataId"] = json!(metadata_id(&[
            "optionset",
            &entity.logical_name,
            &attribute.logical_name
        ]));
        set["Name"] = json!(format!(
            "{}_{}",
            entity.logical_name, attribute.logical_name
        ));
        set["IsGlobal"] = json!(false);
        set["OptionSetType"] = json!("Picklist");
        out.insert("OptionSet".into(), set);
    }
    out
}

/// A choice's options as Dataverse's `OptionSet` shows them (labels in en-US, 1033).
fn option_set_json(options: &[ChoiceOption]) -> Json {
    let options: Vec<Json> = options
        .iter()
        .map(|o| json!({"Value": o.value, "Label": label(Some(&o.label))}))
        .collect();
    json!({ "Options": options })
}

/// A label's text, written as text or as Dataverse's `{"UserLocalizedLabel": {"Label": …}}` /
/// `{"LocalizedLabels": [{…}]}`, trimmed.
pub(super) fn label_text(label: &Json) -> Option<&str> {
    match label {
        Json::String(text) => Some(text.as_str()),
        label => label["UserLocalizedLabel"]["Label"]
            .as_str()
            .or_else(|| label["LocalizedLabels"][0]["Label"].as_str()),
    }
    .map(str::trim)
}

/// The options of a new choice from `OptionSet.Options`: each a `Value` and a `Label` (text,
/// or Dataverse's `{"UserLocalizedLabel": {"Label": …}}` / `{"LocalizedLabels": [{…}]}`).
fn parse_options(body: &Map<String, Json>) -> Result<Vec<ChoiceOption>, AppError> {
    let Some(set) = body.get("OptionSet").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let listed = set["Options"].as_array().ok_or_else(|| {
        AppError::bad_request(
            "'OptionSet' must be {\"Options\": [{\"Value\": 1, \"Label\": \"…\"}]}",
        )
    })?;
    let mut options: Vec<ChoiceOption> = Vec::with_capacity(listed.len());
    for option in listed {
        let label = label_text(&option["Label"]).filter(|l| !l.is_empty() && l.len() <= 250);
        let (Some(value), Some(label)) = (option["Value"].as_i64(), label) else {
            return Err(AppError::bad_request(
                "each option needs a whole-number 'Value' and a 'Label' of 1 to 250 bytes",
            ));
        };
        if options.iter().any(|o| o.value == value) {
            return Err(AppError::bad_request(format!(
                "option value {value} is given twice"
            )));
        }
        options.push(ChoiceOption {
            value,
            label: label.to_string(),
        });
    }
    Ok(options)
}

/// Whether the request asks for drafts (`?RetrieveAsIfPublished=true`).
pub(super) fn as_if_published(request: &WebRequest) -> bool {
    request
        .query
        .iter()
        .any(|(k, v)| k == "RetrieveAsIfPublished" && v == "true")
}

/// The definition to show: published, or the draft with `?RetrieveAsIfPublished=true`.
pub(super) fn shown_definition(request: &WebRequest, entity: &str) -> Result<EntityDef, AppError> {
    if as_if_published(request) {
        return Ok(request.instance.store.draft(entity)?);
    }
    request
        .instance
        .store
        .catalog()
        .entity(entity)
        .cloned()
        .ok_or_else(|| AppError::not_found(format!("entity '{entity}' does not exist")))
}

/// A lookup as the relationship it makes (Dataverse's `OneToManyRelationshipMetadata`): one
/// record of the referenced entity to many of the referencing one. Relationships here are the
/// lookups, so a relationship's `SchemaName` is its collection-valued navigation property's
/// name (`contact_parentcustomerid`), unique by construction, and the navigation names are the
/// ones `$expand` and `@odata.bind` take.
pub(super) fn relationship_json(navigation: &custos_records::Navigation<'_>) -> Map<String, Json> {
    let (referencing, lookup, referenced) = (
        &navigation.referencing.logical_name,
        &navigation.lookup.logical_name,
        navigation.referenced,
    );
    // The collection-valued side's name, as `Catalog::navigations` names it for `$expand`.
    let collection = if navigation.collection {
        navigation.name.clone()
    } else {
        navigation.partner()
    };
    let mut out = Map::new();
    out.insert(
        "MetadataId".into(),
        json!(metadata_id(&["relationship", referencing, lookup])),
    );
    out.insert("SchemaName".into(), json!(collection));
    out.insert("RelationshipType".into(), json!("OneToManyRelationship"));
    out.insert("ReferencedEntity".into(), json!(referenced.logical_name));
    out.insert("ReferencedAttribute".into(), json!(referenced.primary_id()));
    out.insert("ReferencingEntity".into(), json!(referencing));
    out.insert("ReferencingAttribute".into(), json!(lookup));
    out.insert(
        "ReferencedEntityNavigationPropertyName".into(),
        json!(collection),
    );
    out.insert(
        "ReferencingEntityNavigationPropertyName".into(),
        json!(lookup),
    );
    if let AttributeType::Lookup { on_delete, .. } = &navigation.lookup.attribute_type {
        out.insert(
            "CascadeConfiguration".into(),
            json!({"Delete": on_delete.name()}),
        );
    }
    out.insert(
        "IsCustomRelationship".into(),
        json!(navigation.lookup.custom),
    );
    out.insert("IsManaged".into(), json!(!navigation.lookup.custom));
    out
}

/// The relationships of `entity` on one side: the lookups it holds (`ManyToOneRelationships`),
/// or the lookups of any entity that point at it (`OneToManyRelationships`).
fn relationships(
    request: &WebRequest,
    entity: &EntityDef,
    many_to_one: bool,
) -> Vec<Map<String, Json>> {
    request
        .instance
        .store
        .catalog()
        .navigations(entity)
        .iter()
        .filter(|n| n.collection != many_to_one)
        .map(relationship_json)
        .collect()
}

/// An entity's definition with what `query` expands (`Attributes`, `Keys`, its relationships),
/// each filtered and shaped by its own options.
fn expanded(
    request: &WebRequest,
    query: &MetaQuery,
    entity: &EntityDef,
) -> Result<Map<String, Json>, AppError> {
    let mut out = entity_json(entity);
    if let Some(attributes) = &query.attributes {
        let value =
            attributes.apply(entity.attributes.iter().map(|a| attribute_json(entity, a)))?;
        out.insert("Attributes".into(), Json::Array(value));
    }
    if let Some(keys) = &query.keys {
        let value = keys.apply(
            entity
                .keys
                .iter()
                .map(|k| super::keys::key_json(request, entity, k)),
        )?;
        out.insert("Keys".into(), Json::Array(value));
    }
    for (name, many_to_one, expand) in [
        ("ManyToOneRelationships", true, &query.many_to_one),
        ("OneToManyRelationships", false, &query.one_to_many),
    ] {
        if let Some(expand) = expand {
            let value = expand.apply(relationships(request, entity, many_to_one))?;
            out.insert(name.into(), Json::Array(value));
        }
    }
    Ok(out)
}

/// `GET EntityDefinitions(…)/ManyToOneRelationships` or `…/OneToManyRelationships`: the
/// entity's relationships on that side that pass `$filter`, shaped by `$select`.
pub(crate) fn list_relationships(
    request: &WebRequest,
    entity: &str,
    many_to_one: bool,
) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Relationship, false)?;
    let definition = shown_definition(request, entity)?;
    let value = query.apply(relationships(request, &definition, many_to_one))?;
    let side = if many_to_one {
        "ManyToOneRelationships"
    } else {
        "OneToManyRelationships"
    };
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#EntityDefinitions('{entity}')/{side}{}", request.service_root, query.context_selection()),
        "value": value,
    }))
    .into_response())
}

/// `GET EntityDefinitions`: the published entities, or every draft (new entities included)
/// with `?RetrieveAsIfPublished=true`, that pass `$filter`, shaped by `$select` and `$expand`.
pub(crate) fn list_entities(request: &WebRequest) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Entity, false)?;
    let mut value = Vec::new();
    let mut add = |entity: &EntityDef| -> Result<(), AppError> {
        let definition = expanded(request, &query, entity)?;
        if query.keeps(&definition)? {
            value.push(Json::Object(query.shape(definition)));
        }
        Ok(())
    };
    if as_if_published(request) {
        request
            .instance
            .store
            .drafts()?
            .iter()
            .try_for_each(&mut add)?;
    } else {
        request
            .instance
            .store
            .catalog()
            .entities()
            .try_for_each(&mut add)?;
    }
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#EntityDefinitions{}", request.service_root, query.context_selection()),
        "value": value,
    }))
    .into_response())
}

pub(crate) fn get_entity(request: &WebRequest, entity: &str) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Entity, true)?;
    let definition = shown_definition(request, entity)?;
    let mut body = query.shape(expanded(request, &query, &definition)?);
    body.shift_insert(
        0,
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#EntityDefinitions{}/$entity",
            request.service_root,
            query.context_selection()
        )),
    );
    Ok(axum::Json(Json::Object(body)).into_response())
}

/// `GET EntityDefinitions(…)/Attributes[/Microsoft.Dynamics.CRM.<Type>AttributeMetadata]`:
/// the entity's attributes (of that type) that pass `$filter`, shaped by `$select`.
pub(crate) fn list_attributes(
    request: &WebRequest,
    entity: &str,
    cast: Option<&str>,
) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Attribute, false)?;
    let of_type = cast.map(cast_type).transpose()?;
    let definition = shown_definition(request, entity)?;
    let value = query.apply(
        definition
            .attributes
            .iter()
            .filter(|a| of_type.is_none_or(|t| attribute_type_name(&a.attribute_type) == t))
            .map(|a| attribute_json(&definition, a)),
    )?;
    let cast = cast.map(|c| format!("/{c}")).unwrap_or_default();
    Ok(axum::Json(json!({
        "@odata.context": format!("{}/$metadata#EntityDefinitions('{entity}')/Attributes{cast}{}", request.service_root, query.context_selection()),
        "value": value,
    }))
    .into_response())
}

/// `GET EntityDefinitions(…)/Attributes(…)[/Microsoft.Dynamics.CRM.<Type>AttributeMetadata]`:
/// one attribute (404 when it is not of that type), shaped by `$select`.
pub(crate) fn get_attribute(
    request: &WebRequest,
    entity: &str,
    attribute: &str,
    cast: Option<&str>,
) -> Result<Response, AppError> {
    let query = MetaQuery::read(request, Kind::Attribute, true)?;
    let of_type = cast.map(cast_type).transpose()?;
    let definition = shown_definition(request, entity)?;
    let found = definition
        .attribute(attribute)
        .filter(|a| of_type.is_none_or(|t| attribute_type_name(&a.attribute_type) == t))
        .ok_or_else(|| {
            AppError::not_found(format!(
                "attribute '{attribute}' does not exist on entity '{entity}'{}",
                cast.map(|c| format!(" as a {c}")).unwrap_or_default()
            ))
        })?;
    let mut body = query.shape(attribute_json(&definition, found));
    let cast = cast.map(|c| format!("/{c}")).unwrap_or_default();
    body.shift_insert(
        0,
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#EntityDefinitions('{entity}')/Attributes{cast}{}/$entity",
            request.service_root,
            query.context_selection()
        )),
    );
    Ok(axum::Json(Json::Object(body)).into_response())
}

/// Reads a flag given as `true` or as `{"Value": true, …}`.
fn flag(key: &str, value: &Json) -> Result<bool, AppError> {
    match value {
        Json::Bool(b) => Ok(*b),
        Json::Object(object) => object
            .get("Value")
            .and_then(Json::as_bool)
            .ok_or_else(|| AppError::bad_request(format!("{key} needs a boolean 'Value'"))),
        _ => Err(AppError::bad_request(format!(
            "{key} must be a boolean or {{\"Value\": boolean}}"
        ))),
    }
}

/// Applies the settable flags of `body` to `flags` (name → slot); other keys of `shown` are
/// accepted unchanged (a PUT sends the whole definition back), anything else is refused.
fn apply_flags(
    body: &Map<String, Json>,
    shown: &Map<String, Json>,
    flags: &mut [(&str, &mut bool)],
    changes: &mut Vec<Change>,
) -> Result<(), AppError> {
    for (key, value) in body {
        if key.starts_with('@') {
            continue;
        }
        if let Some((name, slot)) = flags.iter_mut().find(|(name, _)| name == key) {
            let new = flag(key, value)?;
            if **slot != new {
                changes.push(Change {
                    attribute: name.to_string(),
                    old: Some(slot.to_string()),
                    new: Some(new.to_string()),
                });
                **slot = new;
            }
            continue;
        }
        match shown.get(key) {
            Some(current) if current == value => {}
            Some(_) => {
                return Err(AppError::bad_request(format!(
                    "'{key}' cannot be changed here"
                )));
            }
            None => return Err(AppError::bad_request(format!("unknown property '{key}'"))),
        }
    }
    Ok(())
}

fn require_customizer(request: &WebRequest, entity: &EntityDef) -> Result<(), AppError> {
    request.require(Privilege::Customize, entity).map_err(|_| {
        AppError::forbidden(format!(
            "user '{}' may not change customizations",
            request.caller.principal.upn
        ))
    })
}

/// The draft definition of an entity to customize (a new entity exists only as a draft), named
/// in the event; refused unless the caller may customize.
pub(super) fn customizable(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<EntityDef, AppError> {
    let definition = request.instance.store.draft(entity)?;
    draft.set_entity(&definition);
    require_customizer(request, &definition)?;
    Ok(definition)
}

/// Saves a changed draft after its `UpdateAuditSettings` event is durable (always recorded).
async fn save_draft(
    request: &WebRequest,
    draft: &mut EventDraft,
    definition: EntityDef,
    changes: Vec<Change>,
    details: Json,
) -> Result<Response, AppError> {
    draft.changes = changes;
    draft.details = details.to_string();
    record_and_save_draft(request, draft, definition, None).await
}

/// Saves a changed draft after its event (`draft`, always recorded) is durable: 204, with
/// `OData-EntityId` naming what was made when `made` (a path below the service root) is given.
pub(super) async fn record_and_save_draft(
    request: &WebRequest,
    draft: &EventDraft,
    definition: EntityDef,
    made: Option<String>,
) -> Result<Response, AppError> {
    request.state.record(draft.clone()).await?;
    let store = request.instance.store.clone();
    blocking(move || store.save_draft(&definition)).await?;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    if let Some(value) = made.and_then(|path| {
        axum::http::HeaderValue::from_str(&format!("{}/{path}", request.service_root)).ok()
    }) {
        response.headers_mut().insert("odata-entityid", value);
    }
    Ok(response)
}

pub(crate) async fn update_entity(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::UpdateAuditSettings;
    let mut definition = customizable(request, draft, entity)?;
    super::security::refuse_support_engineer(request)?;
    let body = request.json_object()?;
    let shown = entity_json(&definition);
    let mut changes = Vec::new();
    let (mut audit, mut retrieve, mut multiple) = (
        definition.audit,
        definition.retrieve_audit,
        definition.retrieve_multiple_audit,
    );
    apply_flags(
        &body,
        &shown,
        &mut [
            ("IsAuditEnabled", &mut audit),
            ("IsRetrieveAuditEnabled", &mut retrieve),
            ("IsRetrieveMultipleAuditEnabled", &mut multiple),
        ],
        &mut changes,
    )?;
    (
        definition.audit,
        definition.retrieve_audit,
        definition.retrieve_multiple_audit,
    ) = (audit, retrieve, multiple);
    let details = json!({"Level": "Entity", "Entity": entity, "Draft": true});
    save_draft(request, draft, definition, changes, details).await
}

pub(crate) async fn update_attribute(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
    attribute: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::UpdateAuditSettings;
    let mut definition = customizable(request, draft, entity)?;
    super::security::refuse_support_engineer(request)?;
    let body = request.json_object()?;
    let index = definition
        .attributes
        .iter()
        .position(|a| a.logical_name == attribute)
        .ok_or_else(|| {
            AppError::not_found(format!(
                "attribute '{attribute}' does not exist on entity '{entity}'"
            ))
        })?;
    let shown = attribute_json(&definition, &definition.attributes[index]);
    let mut changes = Vec::new();
    let mut audit = definition.attributes[index].audit;
    apply_flags(
        &body,
        &shown,
        &mut [("IsAuditEnabled", &mut audit)],
        &mut changes,
    )?;
    definition.attributes[index].audit = audit;
    let details =
        json!({"Level": "Attribute", "Entity": entity, "Attribute": attribute, "Draft": true});
    save_draft(request, draft, definition, changes, details).await
}

pub(crate) async fn publish_all(
    request: &WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::PublishAllCustomizations;
    let organization = request
        .instance
        .store
        .catalog()
        .entity(custos_records::ORGANIZATION_ENTITY)
        .cloned();
    if let Some(organization) = &organization {
        // Publishing configures the instance: an event about its organization.
        draft.set_entity(organization);
        require_customizer(request, organization)?;
    }
    if request.caller.user_type() == custos_audit::UserType::DcAdmin
        && audit_flags_drafted(request)?
    {
        // Publishing would put audit flag changes into force: an audit setting change.
        super::security::refuse_support_engineer(request)?;
    }
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    blocking(move || {
        store.publish_all(&mut |changed| {
            let mut event = event.clone();
            event.details = json!({"PublishedEntities": changed}).to_string();
            event.result_count = changed.len() as u64;
            state.append_blocking(event).map_err(|e| e.message)
        })
    })
    .await?;
    request.instance.refresh_policy()?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// Whether a draft changes an audit flag (of an entity or an attribute) from what is published.
fn audit_flags_drafted(request: &WebRequest) -> Result<bool, AppError> {
    let published = request.instance.store.catalog();
    let flags = |e: &EntityDef| {
        let attributes: Vec<(String, bool)> = e
            .attributes
            .iter()
            .map(|a| (a.logical_name.clone(), a.audit))
            .collect();
        (
            e.audit,
            e.retrieve_audit,
            e.retrieve_multiple_audit,
            attributes,
        )
    };
    Ok(request.instance.store.drafts()?.iter().any(|draft| {
        published
            .entity(&draft.logical_name)
            .is_some_and(|p| flags(p) != flags(draft))
    }))
}

/// Properties of Dataverse's metadata bodies that Custos accepts and does not keep.
const IGNORED_PROPERTIES: [&str; 8] = [
    "DisplayName",
    "DisplayCollectionName",
    "Description",
    "OwnershipType",
    "HasActivities",
    "HasNotes",
    "IsActivity",
    "RequiredLevel",
];
/// Destroyed values (or records) one event keeps; more go to further events of the same
/// deletion.
const DESTROYED_PER_EVENT: usize = 10_000;

/// Refuses properties that are neither `known` nor Dataverse's display-only ones.
pub(super) fn check_properties(body: &Map<String, Json>, known: &[&str]) -> Result<(), AppError> {
    for key in body.keys() {
        if !key.starts_with('@')
            && !known.contains(&key.as_str())
            && !IGNORED_PROPERTIES.contains(&key.as_str())
        {
            return Err(AppError::bad_request(format!("unknown property '{key}'")));
        }
    }
    Ok(())
}

/// The logical name of a new entity or attribute: `LogicalName`, or `SchemaName` lowercased;
/// it must carry a publisher prefix (`new_`).
pub(super) fn custom_name(body: &Map<String, Json>, what: &str) -> Result<String, AppError> {
    let name = body
        .get("LogicalName")
        .or_else(|| body.get("SchemaName"))
        .and_then(Json::as_str)
        .ok_or_else(|| AppError::bad_request(format!("a new {what} needs 'SchemaName'")))?
        .to_ascii_lowercase();
    if !custos_records::is_custom_name(&name) {
        return Err(AppError::bad_request(format!(
            "'{name}' needs a publisher prefix: 2 to 8 letters and '_' (e.g. new_{}), then letters, digits and '_', at most 50 characters",
            name.trim_start_matches('_')
        )));
    }
    Ok(name)
}

/// The type of a new attribute from `AttributeType` or Dataverse's `@odata.type`.
fn attribute_type(catalog: &Catalog, body: &Map<String, Json>) -> Result<AttributeType, AppError> {
    let name = match (
        body.get("AttributeType").and_then(Json::as_str),
        body.get("@odata.type").and_then(Json::as_str),
    ) {
        (Some(name), _) => name.to_string(),
        (None, Some(odata)) => odata
            .trim_start_matches('#')
            .trim_start_matches("Microsoft.Dynamics.CRM.")
            .trim_end_matches("AttributeMetadata")
            .to_string(),
        (None, None) => {
            return Err(AppError::bad_request(
                "a new attribute needs 'AttributeType' (or '@odata.type')",
            ));
        }
    };
    let max_length = |default: u64| -> Result<u32, AppError> {
        match body.get("MaxLength") {
            None | Some(Json::Null) => Ok(default as u32),
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=4000).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| AppError::bad_request("'MaxLength' must be 1 to 4000")),
        }
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "string" => AttributeType::String {
            max_length: max_length(100)?,
        },
        "memo" => AttributeType::Memo,
        "integer" => AttributeType::Integer,
        "bigint" => AttributeType::BigInt,
        "decimal" => AttributeType::Decimal,
        "money" => AttributeType::Money,
        "boolean" => AttributeType::Boolean,
        "datetime" => AttributeType::DateTime,
        "picklist" | "choice" => AttributeType::Choice,
        "uniqueidentifier" => AttributeType::UniqueIdentifier,
        "lookup" => {
            let target = body
                .get("Targets")
                .and_then(Json::as_array)
                .and_then(|t| match t.as_slice() {
                    [one] => one.as_str(),
                    _ => None,
                })
                .ok_or_else(|| {
                    AppError::bad_request(
                        "a lookup needs 'Targets': one entity's logical name, e.g. [\"account\"]",
                    )
                })?;
            if catalog.entity(target).is_none() {
                return Err(AppError::bad_request(format!(
                    "lookup target '{target}' is not a published entity"
                )));
            }
            AttributeType::Lookup {
                target: target.to_string(),
                on_delete: on_delete(body)?,
            }
        }
        other => {
            return Err(AppError::bad_request(format!(
                "attribute type '{other}' is not one of String, Memo, Integer, BigInt, Decimal, Money, Boolean, DateTime, Picklist, Lookup, Uniqueidentifier"
            )));
        }
    })
}

/// What deleting a lookup's target does to the records naming it, from the body's
/// `CascadeConfiguration.Delete` (Dataverse's relationship property, taken here on the lookup):
/// `Cascade`, `RemoveLink` (the default, as Dataverse's for a new relationship) or `Restrict`.
fn on_delete(body: &Map<String, Json>) -> Result<OnDelete, AppError> {
    let Some(cascade) = body.get("CascadeConfiguration") else {
        return Ok(OnDelete::RemoveLink);
    };
    let wrong = || {
        AppError::bad_request(
            "'CascadeConfiguration' is {\"Delete\": \"Cascade\" | \"RemoveLink\" | \"Restrict\"}",
        )
    };
    let cascade = cascade.as_object().ok_or_else(wrong)?;
    check_properties(cascade, &["Delete"])?;
    match cascade
        .get("Delete")
        .map(|d| d.as_str().and_then(OnDelete::parse))
    {
        None => Ok(OnDelete::RemoveLink),
        Some(Some(on_delete)) if on_delete != OnDelete::NoCascade => Ok(on_delete),
        Some(_) => Err(wrong()),
    }
}

/// An attribute of a creation body, with its audit flag; lookups may target the entities of
/// `catalog`.
pub(crate) fn new_attribute(
    catalog: &Catalog,
    body: &Map<String, Json>,
) -> Result<AttributeDef, AppError> {
    check_properties(
        body,
        &[
            "SchemaName",
            "LogicalName",
            "AttributeType",
            "MaxLength",
            "Targets",
            "CascadeConfiguration",
            "IsAuditEnabled",
            "IsPrimaryName",
            "OptionSet",
        ],
    )?;
    let name = custom_name(body, "attribute")?;
    let mut attribute = AttributeDef::new(&name, attribute_type(catalog, body)?);
    attribute.custom = true;
    attribute.options = parse_options(body)?;
    if !attribute.options.is_empty() && attribute.attribute_type != AttributeType::Choice {
        return Err(AppError::bad_request(
            "'OptionSet' belongs to a choice (Picklist) attribute only",
        ));
    }
    if body.contains_key("CascadeConfiguration")
        && !matches!(attribute.attribute_type, AttributeType::Lookup { .. })
    {
        return Err(AppError::bad_request(
            "'CascadeConfiguration' belongs to a lookup attribute only",
        ));
    }
    if let Some(value) = body.get("IsAuditEnabled") {
        attribute.audit = flag("IsAuditEnabled", value)?;
    }
    Ok(attribute)
}

fn definition_json(attribute: &AttributeDef) -> Json {
    let mut out = json!({
        "AttributeType": attribute.attribute_type.name(),
        "IsAuditEnabled": attribute.audit,
    });
    match &attribute.attribute_type {
        AttributeType::String { max_length } => out["MaxLength"] = json!(max_length),
        AttributeType::Lookup { target, on_delete } => {
            out["Targets"] = json!([target]);
            out["CascadeConfiguration"] = json!({"Delete": on_delete.name()});
        }
        AttributeType::Choice if !attribute.options.is_empty() => {
            out["OptionSet"] = option_set_json(&attribute.options);
        }
        _ => {}
    }
    out
}

/// A new custom entity from a creation body (`EntityDefinitions` POST or a solution's
/// `Entities`); lookups may target the entities of `catalog`.
pub(crate) fn entity_from_body(
    catalog: &Catalog,
    body: &Map<String, Json>,
) -> Result<EntityDef, AppError> {
    check_properties(
        body,
        &[
            "SchemaName",
            "LogicalName",
            "EntitySetName",
            "Attributes",
            "IsAuditEnabled",
            "IsRetrieveAuditEnabled",
            "IsRetrieveMultipleAuditEnabled",
        ],
    )?;
    let name = custom_name(body, "entity")?;
    let set_name = match body.get("EntitySetName") {
        None | Some(Json::Null) => format!("{name}s"),
        Some(Json::String(set)) if custos_records::is_custom_name(set) => set.clone(),
        Some(_) => {
            return Err(AppError::bad_request(
                "'EntitySetName' must carry the publisher prefix too, e.g. new_projects",
            ));
        }
    };
    let attributes: Vec<Map<String, Json>> = match body.get("Attributes") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(list)) => list
            .iter()
            .map(|a| {
                a.as_object()
                    .cloned()
                    .ok_or_else(|| AppError::bad_request("each of 'Attributes' is an object"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(AppError::bad_request("'Attributes' must be an array")),
    };
    let primary = attributes
        .iter()
        .find(|a| a.get("IsPrimaryName").and_then(Json::as_bool) == Some(true));
    let name_length = match primary.map(|p| attribute_type(catalog, p)).transpose()? {
        None => 100,
        Some(AttributeType::String { max_length }) => max_length,
        Some(_) => {
            return Err(AppError::bad_request(
                "the primary name attribute must be a String",
            ));
        }
    };
    let mut definition = custos_records::custom_entity(&name, &set_name, name_length);
    if let Some(primary) = primary {
        let primary_name = custom_name(primary, "attribute")?;
        let current = definition.primary_name.clone().unwrap_or_default();
        for attribute in definition
            .attributes
            .iter_mut()
            .filter(|a| a.logical_name == current)
        {
            attribute.logical_name = primary_name.clone();
        }
        definition.primary_name = Some(primary_name);
    }
    // Custom attributes follow the key and the primary name.
    for (position, body) in attributes
        .iter()
        .filter(|a| a.get("IsPrimaryName").and_then(Json::as_bool) != Some(true))
        .enumerate()
    {
        let attribute = new_attribute(catalog, body)?;
        if definition.attribute(&attribute.logical_name).is_some() {
            return Err(AppError::bad_request(format!(
                "attribute '{}' is given twice",
                attribute.logical_name
            )));
        }
        definition.attributes.insert(2 + position, attribute);
    }
    for (key, slot) in [
        ("IsAuditEnabled", &mut definition.audit),
        ("IsRetrieveAuditEnabled", &mut definition.retrieve_audit),
        (
            "IsRetrieveMultipleAuditEnabled",
            &mut definition.retrieve_multiple_audit,
        ),
    ] {
        if let Some(value) = body.get(key) {
            *slot = flag(key, value)?;
        }
    }
    Ok(definition)
}

/// `POST EntityDefinitions`: a new custom entity, a draft until published.
pub(crate) async fn create_entity(
    request: &WebRequest,
    draft: &mut EventDraft,
) -> Result<Response, AppError> {
    draft.operation = Operation::CreateEntity;
    require_customizer(request, &request.organization()?)?;
    let body = request.json_object()?;
    let definition = entity_from_body(&request.instance.store.catalog(), &body)?;
    let name = definition.logical_name.clone();
    let set_name = definition.set_name.clone();
    draft.set_entity(&definition);
    let attribute_list: Map<String, Json> = definition
        .attributes
        .iter()
        .filter(|a| a.custom)
        .map(|a| (a.logical_name.clone(), definition_json(a)))
        .collect();
    draft.details = json!({
        "Entity": name,
        "EntitySetName": set_name,
        "Attributes": attribute_list,
        "Draft": true,
    })
    .to_string();
    let store = request.instance.store.clone();
    let checked = definition.clone();
    // Refuse a taken name before recording anything.
    if store.draft(&name).is_ok() {
        return Err(AppError::new(
            custos_http::error::ErrorCode::Conflict,
            format!("entity '{name}' already exists"),
        ));
    }
    request.state.record(draft.clone()).await?;
    blocking(move || store.create_draft(&checked)).await?;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!(
        "{}/EntityDefinitions(LogicalName='{name}')",
        request.service_root
    )) {
        response.headers_mut().insert("odata-entityid", value);
    }
    Ok(response)
}

/// `POST EntityDefinitions(LogicalName='x')/Attributes`: a new custom attribute, a draft
/// until published.
pub(crate) async fn create_attribute(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::CreateAttribute;
    let mut definition = customizable(request, draft, entity)?;
    let body = request.json_object()?;
    let attribute = new_attribute(&request.instance.store.catalog(), &body)?;
    if definition.attribute(&attribute.logical_name).is_some() {
        return Err(AppError::new(
            custos_http::error::ErrorCode::Conflict,
            format!(
                "attribute '{}' already exists on entity '{entity}'",
                attribute.logical_name
            ),
        ));
    }
    let name = attribute.logical_name.clone();
    draft.details = json!({
        "Entity": entity,
        "Attribute": name,
        "Definition": definition_json(&attribute),
        "Draft": true,
    })
    .to_string();
    definition.attributes.push(attribute);
    let made =
        format!("EntityDefinitions(LogicalName='{entity}')/Attributes(LogicalName='{name}')");
    record_and_save_draft(request, draft, definition, Some(made)).await
}

/// The events that keep what a deletion destroyed: `items` (record id and what it lost) in
/// parts of 10,000, each listing its record ids, with `fields` plus the part's items under
/// `key` in its details. Nothing destroyed still makes one event.
pub(crate) fn destroyed_events(
    template: &EventDraft,
    items: &[(Uuid, Json)],
    key: &str,
    fields: &Json,
) -> Vec<EventDraft> {
    let mut chunks: Vec<&[(Uuid, Json)]> = items.chunks(DESTROYED_PER_EVENT).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let parts = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut event = template.clone();
            let kept: Map<String, Json> = chunk
                .iter()
                .map(|(id, value)| (id.to_string(), value.clone()))
                .collect();
            event.record_ids = chunk.iter().map(|(id, _)| *id).collect();
            event.result_count = chunk.len() as u64;
            let mut details = fields.clone();
            details[key] = Json::Object(kept);
            details["Part"] = json!(i + 1);
            details["Parts"] = json!(parts);
            event.details = details.to_string();
            event
        })
        .collect()
}

/// Deletes a custom attribute and its data, its `DeleteAttribute` events (from `template`)
/// durable before the deletion commits. Call from blocking code.
pub(crate) fn remove_attribute(
    state: &crate::PlatformState,
    store: &dyn custos_records::RecordStore,
    template: &EventDraft,
    entity: &str,
    attribute: &str,
) -> Result<(), AppError> {
    let mut template = template.clone();
    template.operation = Operation::DeleteAttribute;
    Ok(
        store.delete_attribute(entity, attribute, &mut |definition, values| {
            let items: Vec<(Uuid, Json)> =
                values.iter().map(|(id, v)| (*id, v.to_json())).collect();
            let fields = json!({
                "Entity": entity,
                "Attribute": attribute,
                "Definition": definition_json(definition),
                "ValuesDeleted": values.len(),
            });
            let events = destroyed_events(&template, &items, "Values", &fields);
            state.append_all_blocking(events).map_err(|e| e.message)
        })?,
    )
}

/// Deletes a custom entity with its records, its `DeleteEntity` events (from `template`) —
/// the definition and every record's values — durable before the deletion commits. Call from
/// blocking code.
pub(crate) fn remove_entity(
    state: &crate::PlatformState,
    store: &dyn custos_records::RecordStore,
    template: &EventDraft,
    entity: &str,
) -> Result<(), AppError> {
    let mut template = template.clone();
    template.operation = Operation::DeleteEntity;
    Ok(store.delete_entity(entity, &mut |definition, records| {
        template.set_entity(definition);
        let items: Vec<(Uuid, Json)> = records
            .iter()
            .map(|r| {
                let values: Map<String, Json> = r
                    .values
                    .iter()
                    .filter(|(_, v)| **v != custos_records::Value::Null)
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                (r.id, Json::Object(values))
            })
            .collect();
        let fields = json!({
            "Entity": entity,
            "Definition": definition.to_json(),
            "RecordsDeleted": records.len(),
        });
        let events = destroyed_events(&template, &items, "Records", &fields);
        state.append_all_blocking(events).map_err(|e| e.message)
    })?)
}

/// `DELETE EntityDefinitions(LogicalName='x')`: deletes a custom entity with its records now;
/// its `DeleteEntity` events keep the definition and every record's values.
pub(crate) async fn delete_entity(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::DeleteEntity;
    customizable(request, draft, entity)?;
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let name = entity.to_string();
    blocking(move || remove_entity(&state, &*store, &event, &name)).await?;
    request.instance.refresh_policy()?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `DELETE EntityDefinitions(LogicalName='x')/Attributes(LogicalName='y')`: deletes a custom
/// attribute and its data now. The `DeleteAttribute` events keep the definition and every
/// destroyed value (in parts of 10,000), enough to put them back; they are durable before the
/// deletion commits.
pub(crate) async fn delete_attribute(
    request: &WebRequest,
    draft: &mut EventDraft,
    entity: &str,
    attribute: &str,
) -> Result<Response, AppError> {
    draft.operation = Operation::DeleteAttribute;
    customizable(request, draft, entity)?;
    if let Some(process) =
        crate::automation::setter_of(&request.state, &request.instance, entity, attribute)
    {
        return Err(custos_http::error::AppError::new(
            custos_http::error::ErrorCode::Conflict,
            format!("the active process '{process}' sets '{attribute}'; deactivate it first"),
        ));
    }
    let store = request.instance.store.clone();
    let state = request.state.clone();
    let event = draft.clone();
    let (entity_name, attribute_name) = (entity.to_string(), attribute.to_string());
    blocking(move || remove_attribute(&state, &*store, &event, &entity_name, &attribute_name))
        .await?;
    request.instance.refresh_policy()?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
