use serde_json::{Map, Value as Json, json};

use super::*;

fn query(pairs: &[(&str, &str)], kind: Kind, one: bool) -> Result<MetaQuery, AppError> {
    let options = custos_records::parse_query_options(pairs.iter().copied())?;
    MetaQuery::checked(options, kind, one, "")
}

fn filter(text: &str) -> MetaQuery {
    query(&[("$filter", text)], Kind::Attribute, false).expect("a valid filter")
}

fn attribute() -> Map<String, Json> {
    let Json::Object(map) = json!({
        "@odata.type": "#Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "MetadataId": "95086e37-958d-8602-bdae-37f3a1726517",
        "LogicalName": "Name",
        "AttributeType": "String",
        "IsValidForCreate": true,
        "IsAuditEnabled": {"Value": true, "CanBeChanged": true},
        "MaxLength": 200,
        "Targets": ["account"],
    }) else {
        unreachable!()
    };
    map
}

fn keeps(text: &str) -> bool {
    filter(text).keeps(&attribute()).expect("comparable")
}

fn refused(text: &str) -> String {
    filter(text)
        .keeps(&attribute())
        .expect_err("not comparable")
        .message
}

#[test]
fn a_filter_compares_primitive_enumeration_and_complex_properties() {
    assert!(keeps("LogicalName eq 'name'"), "text without case");
    assert!(!keeps("LogicalName ne 'NAME'"));
    assert!(keeps(
        "startswith(LogicalName,'na') and contains(LogicalName,'AM')"
    ));
    assert!(keeps(
        "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'String'"
    ));
    assert!(!keeps(
        "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'"
    ));
    assert!(keeps(
        "IsAuditEnabled/Value eq true and IsValidForCreate ne false"
    ));
    assert!(keeps("MaxLength gt 100 and MaxLength le 200.0"));
    assert!(keeps("MetadataId eq 95086e37-958d-8602-bdae-37f3a1726517"));
    assert!(!keeps("not (MaxLength eq 200) or LogicalName eq 'x'"));
    // A property the definition does not have (an attribute of another type's) is null.
    assert!(keeps("OptionSet eq null and IsCustomAttribute eq null"));
    assert!(!keeps("OptionSet ne null"));
    assert!(keeps("IsAuditEnabled/Missing eq null"));
    assert!(!keeps("LogicalName eq null"));
}

#[test]
fn a_filter_that_cannot_compare_is_refused_not_false() {
    assert!(refused("IsAuditEnabled eq true").contains("IsAuditEnabled/Value"));
    assert!(refused("Targets eq 'account'").contains("collection"));
    assert!(refused("MaxLength eq 'long'").contains("cannot be compared"));
    assert!(refused("IsValidForCreate gt false").contains("cannot be compared"));
    assert!(refused("LogicalName eq 5").contains("cannot be compared"));
    assert!(refused("contains(MaxLength,'2')").contains("text property"));
}

#[test]
fn options_name_only_the_kinds_properties_and_no_paging() {
    let message =
        |pairs: &[(&str, &str)], kind, one| query(pairs, kind, one).expect_err("refused").message;
    assert!(message(&[("$select", "logicalname")], Kind::Entity, true).contains("EntityMetadata"));
    assert!(message(&[("$select", "A/B")], Kind::Attribute, true).contains("AttributeMetadata"));
    assert!(message(&[("$filter", "Nope eq 1")], Kind::Attribute, false).contains("Nope"));
    assert!(
        message(
            &[("$filter", "IsAuditEnabled/Value/X eq 1")],
            Kind::Entity,
            false
        )
        .contains("deeper")
    );
    assert!(
        message(
            &[("$filter", "LogicalName eq EntitySetName")],
            Kind::Entity,
            false
        )
        .contains("with a value")
    );
    for (option, value) in [
        ("$top", "1"),
        ("$orderby", "LogicalName"),
        ("$count", "true"),
    ] {
        assert!(
            message(&[(option, value)], Kind::Entity, false).contains("without paging"),
            "{option}"
        );
    }
    assert!(message(&[("$skip", "1")], Kind::Entity, false).contains("$skip"));
    assert!(
        message(&[("$filter", "LogicalName eq 'a'")], Kind::Entity, true).contains("collection")
    );
    assert!(message(&[("$expand", "Attributes")], Kind::Attribute, false).contains("$expand"));
    assert!(
        message(&[("$expand", "Attributes,Attributes")], Kind::Entity, false)
            .contains("more than once")
    );
    assert!(
        message(
            &[("$expand", "Keys($orderby=LogicalName)")],
            Kind::Entity,
            false
        )
        .contains("inside $expand=Keys")
    );
    assert!(
        message(
            &[("$expand", "Attributes($filter=EntitySetName eq 'a')")],
            Kind::Entity,
            true
        )
        .contains("AttributeMetadata")
    );
}

#[test]
fn select_keeps_the_metadata_id_annotations_and_expansions() {
    let shaped = query(
        &[("$select", "LogicalName,IsKnowledgeManagementEnabled")],
        Kind::Attribute,
        true,
    )
    .expect("a property Custos does not keep may be selected")
    .shape(attribute());
    assert_eq!(
        shaped.keys().collect::<Vec<_>>(),
        ["@odata.type", "MetadataId", "LogicalName"]
    );
    let entity = query(
        &[("$select", "LogicalName"), ("$expand", "Keys")],
        Kind::Entity,
        true,
    )
    .expect("valid");
    assert_eq!(entity.context_selection(), "(LogicalName)");
    let Json::Object(definition) =
        json!({"MetadataId": "x", "LogicalName": "a", "EntitySetName": "as", "Keys": []})
    else {
        unreachable!()
    };
    assert_eq!(
        entity.shape(definition).keys().collect::<Vec<_>>(),
        ["MetadataId", "LogicalName", "Keys"]
    );
    assert_eq!(
        query(&[], Kind::Entity, true)
            .expect("valid")
            .context_selection(),
        ""
    );
}

#[test]
fn a_choices_option_set_is_expanded_and_shaped_by_its_own_select() {
    let Json::Object(choice) = json!({
        "@odata.type": "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "MetadataId": "m",
        "LogicalName": "industrycode",
        "OptionSet": {"Options": [{"Value": 1}], "Name": "account_industrycode", "MetadataId": "o"},
    }) else {
        unreachable!()
    };
    let query = query(
        &[
            ("$select", "LogicalName"),
            ("$expand", "OptionSet($select=Options),GlobalOptionSet"),
        ],
        Kind::Attribute,
        true,
    )
    .expect("Dataverse's own example");
    assert_eq!(
        Json::Object(query.shape(choice.clone())),
        json!({
            "@odata.type": "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            "MetadataId": "m",
            "LogicalName": "industrycode",
            "OptionSet": {"Options": [{"Value": 1}], "MetadataId": "o"},
            "GlobalOptionSet": null,
        })
    );
    // Not expanded, the options are shown whole, as before; a text attribute has none to show.
    let whole = super::tests::query(&[], Kind::Attribute, true)
        .expect("valid")
        .shape(choice.clone());
    assert_eq!(whole["OptionSet"]["Name"], "account_industrycode");
    let plain = query.shape(attribute());
    assert!(!plain.contains_key("OptionSet") && !plain.contains_key("GlobalOptionSet"));
    let refused = |expand: &str| {
        super::tests::query(&[("$expand", expand)], Kind::Attribute, false)
            .expect_err("refused")
            .message
    };
    assert!(refused("OptionSet($filter=Name eq 'x')").contains("not to one"));
    assert!(refused("OptionSet($select=Nothing/Here)").contains("OptionSetMetadata"));
    assert!(refused("Targets").contains("expand OptionSet or GlobalOptionSet"));
}
