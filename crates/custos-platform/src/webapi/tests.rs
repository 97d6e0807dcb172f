use super::*;

fn check(rest: &str, expect: &str) {
    let got = match parse_target(rest) {
        Ok(target) => format!("{target:?}"),
        Err(error) => format!("error: {}", error.message),
    };
    assert_eq!(got, expect, "path: {rest}");
}

#[test]
fn odata_paths() {
    check("", "ServiceDocument");
    check("$metadata", "Metadata");
    check("WhoAmI()", "WhoAmI");
    check("accounts", "EntitySet(\"accounts\")");
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)",
        "Record(\"accounts\", 00000000-0000-0000-0000-00000000002a)",
    );
    check(
        "RetrieveCurrentOrganization()",
        "error: 'RetrieveCurrentOrganization()' is not a function of this service (its unbound functions are WhoAmI(), RetrieveVersion(), RetrieveTotalRecordCount(EntityNames=…), RetrieveRecordChangeHistory(Target=…) and RetrieveAttributeChangeHistory(Target=…,AttributeLogicalName=…))",
    );
    check(
        "RetrieveRecordChangeHistory(Target=@target,PagingInfo=@paging)",
        "ChangeHistory { function: \"RetrieveRecordChangeHistory\", parameters: \"Target=@target,PagingInfo=@paging\" }",
    );
    check(
        "RetrieveRecordChangeHistory()",
        "ChangeHistory { function: \"RetrieveRecordChangeHistory\", parameters: \"\" }",
    );
    check(
        "RetrieveAttributeChangeHistory(Target=@target,AttributeLogicalName='name')",
        "ChangeHistory { function: \"RetrieveAttributeChangeHistory\", parameters: \"Target=@target,AttributeLogicalName='name'\" }",
    );
    // Another name that begins the same is no call of it (nor a key of a record).
    check(
        "RetrieveRecordChangeHistoryX()",
        "error: 'RetrieveRecordChangeHistoryX()' is not a function of this service (its unbound functions are WhoAmI(), RetrieveVersion(), RetrieveTotalRecordCount(EntityNames=…), RetrieveRecordChangeHistory(Target=…) and RetrieveAttributeChangeHistory(Target=…,AttributeLogicalName=…))",
    );
    check("RetrieveVersion()", "RetrieveVersion");
    check(
        "RetrieveTotalRecordCount(EntityNames=['account','contact'])",
        "RetrieveTotalRecordCount(\"['account','contact']\")",
    );
    check(
        "RetrieveTotalRecordCount(EntityNames=@p1)",
        "RetrieveTotalRecordCount(\"@p1\")",
    );
    check(
        "RetrieveTotalRecordCount()",
        "error: RetrieveTotalRecordCount takes one parameter: (EntityNames=[\"account\",…]) or (EntityNames=@p1) with @p1=[…]",
    );
    check(
        "accounts(nope)",
        "error: 'nope' is not a record id (a GUID), nor the name=value pairs of an alternate key",
    );
    // A key other than a bare GUID is read against the entity when the request runs.
    check(
        "accounts(accountnumber='A-1')",
        "RecordByKey { set: \"accounts\", key: \"accountnumber='A-1'\", tail: \"\" }",
    );
    check(
        "accounts(accountnumber='A-1')/contact_customer_accounts/$count",
        "RecordByKey { set: \"accounts\", key: \"accountnumber='A-1'\", tail: \"/contact_customer_accounts/$count\" }",
    );
    check(
        "accounts(accountid=00000000-0000-0000-0000-00000000002a)/name",
        "RecordByKey { set: \"accounts\", key: \"accountid=00000000-0000-0000-0000-00000000002a\", tail: \"/name\" }",
    );
    check(
        "EntityDefinitions(LogicalName='account')/Keys",
        "Keys(\"account\")",
    );
    check(
        "EntityDefinitions(LogicalName='account')/Keys(LogicalName='new_number')",
        "Key(\"account\", \"new_number\")",
    );
    check(
        "EntityDefinitions(LogicalName='account')",
        "EntityDefinition(\"account\")",
    );
    check(
        "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')",
        "Attribute(\"account\", \"name\")",
    );
    check(
        "EntityDefinitions(Name='x')",
        "error: expected (LogicalName='name') or (MetadataId), got (Name='x')",
    );
    check(
        "EntityDefinitions(95086E37-958D-8602-BDAE-37F3A1726517)/Attributes(LogicalName='name')",
        "Attribute(\"95086e37-958d-8602-bdae-37f3a1726517\", \"name\")",
    );
    check(
        "EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "AttributesOfType(\"account\", \"Microsoft.Dynamics.CRM.PicklistAttributeMetadata\")",
    );
    check(
        "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='industrycode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "AttributeOfType(\"account\", \"industrycode\", \"Microsoft.Dynamics.CRM.PicklistAttributeMetadata\")",
    );
    check(
        "systemusers(00000000-0000-0000-0000-00000000002a)/systemuserroles_association/$ref",
        "Association { set: \"systemusers\", id: 00000000-0000-0000-0000-00000000002a, relation: \"systemuserroles_association\", other: None, reference: true }",
    );
    check(
        "teams(00000000-0000-0000-0000-00000000002a)/teammembership_association(00000000-0000-0000-0000-000000000001)/$ref",
        "Association { set: \"teams\", id: 00000000-0000-0000-0000-00000000002a, relation: \"teammembership_association\", other: Some(00000000-0000-0000-0000-000000000001), reference: true }",
    );
    check(
        "roles(00000000-0000-0000-0000-00000000002a)/Microsoft.Dynamics.CRM.AddPrivilegesRole",
        "BoundAction { set: \"roles\", id: 00000000-0000-0000-0000-00000000002a, action: \"AddPrivilegesRole\" }",
    );
    check(
        "roles(00000000-0000-0000-0000-00000000002a)/RetrieveRolePrivilegesRole()",
        "BoundAction { set: \"roles\", id: 00000000-0000-0000-0000-00000000002a, action: \"RetrieveRolePrivilegesRole\" }",
    );
    // A segment after a record that is no relation or action names a property (the entity
    // decides, when the request runs, whether it has one: 404 otherwise).
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/contact_customer_accounts",
        "Property { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, property: \"contact_customer_accounts\", raw: false }",
    );
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/name/$value",
        "Property { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, property: \"name\", raw: true }",
    );
    // The reference of a lookup, or of one record of a collection-valued navigation property
    // (which `name` is, the entity decides at run time: 404 when neither).
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/name/$ref",
        "LookupRef { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, lookup: \"name\", other: None }",
    );
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/name(00000000-0000-0000-0000-000000000001)/$ref",
        "LookupRef { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, lookup: \"name\", other: Some(00000000-0000-0000-0000-000000000001) }",
    );
    // One record of a collection-valued navigation property, and how many it shows.
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/contact_parentcustomerid(00000000-0000-0000-0000-000000000001)",
        "RelatedRecord { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, navigation: \"contact_parentcustomerid\", other: 00000000-0000-0000-0000-000000000001 }",
    );
    check(
        "accounts(00000000-0000-0000-0000-00000000002a)/contact_parentcustomerid/$count",
        "RelatedCount { set: \"accounts\", id: 00000000-0000-0000-0000-00000000002a, navigation: \"contact_parentcustomerid\" }",
    );
    check("a/b/c/d", "error: no resource at 'a/b/c/d'");
}

#[test]
fn definitions_show_only_the_properties_their_queries_may_name() {
    let entities = custos_records::seed_entities();
    for entity in &entities {
        for key in metadata::entity_json(entity).keys() {
            assert!(
                metadata::ENTITY_PROPERTIES.contains(&key.as_str()),
                "{key} of {}",
                entity.logical_name
            );
        }
        for attribute in &entity.attributes {
            let shown = metadata::attribute_json(entity, attribute);
            for key in shown.keys() {
                assert!(
                    key.starts_with('@') || metadata::ATTRIBUTE_PROPERTIES.contains(&key.as_str()),
                    "{key} of {}.{}",
                    entity.logical_name,
                    attribute.logical_name
                );
            }
            for key in shown
                .get("OptionSet")
                .and_then(|s| s.as_object())
                .into_iter()
                .flatten()
            {
                assert!(
                    metadata::OPTION_SET_PROPERTIES.contains(&key.0.as_str()),
                    "{} of {}.{}'s option set",
                    key.0,
                    entity.logical_name,
                    attribute.logical_name
                );
            }
        }
    }
    let catalog = custos_records::Catalog::new(entities.clone());
    let mut relationships = 0;
    for entity in &entities {
        for navigation in catalog.navigations(entity) {
            relationships += 1;
            for key in metadata::relationship_json(&navigation).keys() {
                assert!(
                    metadata::RELATIONSHIP_PROPERTIES.contains(&key.as_str()),
                    "{key} of {}",
                    navigation.name
                );
            }
        }
    }
    assert!(relationships > 0);
    // Every kind of attribute the seed has is shown with its own type, and every id is its own.
    let mut ids = std::collections::HashSet::new();
    for entity in &entities {
        assert!(ids.insert(metadata::entity_metadata_id(&entity.logical_name)));
        for attribute in &entity.attributes {
            assert!(ids.insert(metadata::attribute_metadata_id(
                &entity.logical_name,
                &attribute.logical_name
            )));
        }
    }
    assert_eq!(
        metadata::entity_metadata_id("account"),
        metadata::entity_metadata_id("account"),
        "the same on every call, node and restart"
    );
    assert_ne!(
        metadata::attribute_metadata_id("account", "name"),
        metadata::key_metadata_id("account", "name")
    );
}
