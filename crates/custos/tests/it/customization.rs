//! Customization (SPEC §3): custom entities with a publisher prefix and attributes of every
//! type are drafts until published; deleting an attribute deletes its data, and its
//! `DeleteAttribute` event keeps what was destroyed.

use serde_json::{Value, json};

use crate::common::*;

fn post(server: &Server, token: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    send(client().post(server.api(path)), token, Some(body))
}

#[test]
fn custom_entities_and_attributes_of_every_type_take_effect_on_publish() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let response = post(
        &server,
        &admin,
        "EntityDefinitions",
        json!({
            "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
            "SchemaName": "new_Project",
            "DisplayName": {"LocalizedLabels": [{"Label": "Project", "LanguageCode": 1033}]},
            "OwnershipType": "UserOwned",
            "IsRetrieveAuditEnabled": {"Value": true},
            "Attributes": [
                {"AttributeType": "String", "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 80},
                {"@odata.type": "Microsoft.Dynamics.CRM.MoneyAttributeMetadata", "SchemaName": "new_Budget"},
                {"AttributeType": "Memo", "SchemaName": "new_notes"},
                {"AttributeType": "Integer", "SchemaName": "new_headcount"},
                {"AttributeType": "Decimal", "SchemaName": "new_ratio"},
                {"AttributeType": "Boolean", "SchemaName": "new_active"},
                {"AttributeType": "DateTime", "SchemaName": "new_start"},
                {"AttributeType": "Picklist", "SchemaName": "new_phase"},
                {"AttributeType": "Lookup", "SchemaName": "new_accountid", "Targets": ["account"]},
                {"AttributeType": "Uniqueidentifier", "SchemaName": "new_externalid", "IsAuditEnabled": {"Value": false}}
            ]
        }),
    );
    assert_eq!(response.status(), 204, "{:?}", response.text());
    let created = server.audit(&admin, "operation=CreateEntity");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["EntityName"], "new_project");
    assert_eq!(created[0]["EntityCategory"], "custom");
    assert_eq!(
        created[0]["Details"]["Attributes"]["new_budget"]["AttributeType"],
        "Money"
    );

    // A draft: not in the Web API, visible only as if published.
    assert_eq!(
        send(client().get(server.api("new_projects")), &admin, None).status(),
        404
    );
    assert_eq!(
        send(
            client().get(server.api("EntityDefinitions(LogicalName='new_project')")),
            &admin,
            None
        )
        .status(),
        404
    );
    let draft = get_json(
        &server.api("EntityDefinitions(LogicalName='new_project')?RetrieveAsIfPublished=true"),
        &admin,
    );
    assert_eq!(draft["EntitySetName"], "new_projects");
    assert_eq!(draft["IsCustomEntity"], true);

    server.publish(&admin);
    let account = entity_id(&post(
        &server,
        &admin,
        "accounts",
        json!({"name": "Contoso"}),
    ));
    let response = post(
        &server,
        &admin,
        "new_projects",
        json!({
            "new_name": "Apollo", "new_budget": 1250.5, "new_notes": "long text",
            "new_headcount": 12, "new_ratio": 0.25, "new_active": true,
            "new_start": "2026-03-01", "new_phase": 2,
            "new_accountid@odata.bind": format!("/accounts({account})"),
            "new_externalid": "6a1b2c3d-0000-4000-8000-00000000abcd"
        }),
    );
    assert_eq!(response.status(), 204);
    let project = entity_id(&response);
    let record = get_json(&server.api(&format!("new_projects({project})")), &admin);
    assert_eq!(record["new_budget"], 1250.5);
    assert_eq!(record["new_start"], "2026-03-01T00:00:00Z");
    assert_eq!(record["_new_accountid_value"], account);
    assert_eq!(record["new_phase"], 2);
    let create = server.audit(&admin, &format!("recordId={project}&operation=Create"));
    assert_eq!(create[0]["EntityCategory"], "custom");
    assert_eq!(create[0]["Category"], "accessed-custom-entity");
    let changed: Vec<&str> = create[0]["Changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Attribute"].as_str().unwrap())
        .collect();
    assert!(changed.contains(&"new_budget") && !changed.contains(&"new_externalid"));
    let retrieve = server.audit(&admin, &format!("recordId={project}&operation=Retrieve"));
    assert!(
        retrieve.is_empty(),
        "retrieve auditing needs the instance's read auditing too"
    );
    let metadata = send(client().get(server.api("$metadata")), &admin, None)
        .text()
        .unwrap();
    assert!(metadata.contains("Name=\"new_project\""), "{metadata}");

    // A new attribute on an out-of-box entity, and on the custom one: drafts until published.
    for (entity, body) in [
        (
            "account",
            json!({"AttributeType": "Integer", "SchemaName": "new_Tier"}),
        ),
        (
            "new_project",
            json!({"AttributeType": "String", "SchemaName": "new_code", "MaxLength": 10}),
        ),
    ] {
        let response = post(
            &server,
            &admin,
            &format!("EntityDefinitions(LogicalName='{entity}')/Attributes"),
            body,
        );
        assert_eq!(response.status(), 204);
    }
    let early = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"new_tier": 3})),
    );
    assert_eq!(
        odata_error(early).0,
        400,
        "unpublished attributes are not there yet"
    );
    server.publish(&admin);
    let later = send(
        client().patch(server.api(&format!("accounts({account})"))),
        &admin,
        Some(json!({"new_tier": 3})),
    );
    assert_eq!(later.status(), 204);
    let too_long = send(
        client().patch(server.api(&format!("new_projects({project})"))),
        &admin,
        Some(json!({"new_code": "ABCDEFGHIJK"})),
    );
    assert_eq!(odata_error(too_long).0, 400, "MaxLength holds");
    assert_eq!(server.audit(&admin, "operation=CreateAttribute").len(), 2);

    // Deleting an attribute deletes its data; the event keeps it.
    let response = send(
        client().delete(server.api(
            "EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_budget')",
        )),
        &admin,
        None,
    );
    assert_eq!(response.status(), 204);
    let record = get_json(&server.api(&format!("new_projects({project})")), &admin);
    assert!(record.get("new_budget").is_none());
    assert_eq!(record["new_name"], "Apollo");
    let deleted = server.audit(&admin, "operation=DeleteAttribute");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["RecordIds"], json!([project]));
    assert_eq!(deleted[0]["Details"]["Values"][&project], 1250.5);
    assert_eq!(
        deleted[0]["Details"]["Definition"]["AttributeType"],
        "Money"
    );
    assert_eq!(deleted[0]["RecordType"], "CustosAdmin");
    assert_eq!(
        server
            .audit(
                &admin,
                &format!("recordId={project}&operation=DeleteAttribute")
            )
            .len(),
        1,
        "who touched this record finds the deletion of its value"
    );
    let gone = send(
        client().get(server.api(&format!("new_projects({project})?$select=new_budget"))),
        &admin,
        None,
    );
    assert_eq!(odata_error(gone).0, 400);
}

#[test]
fn customization_refuses_bad_names_and_non_customizers() {
    let server = Server::start(&[]);
    let admin = server.admin();
    for (path, body, status) in [
        ("EntityDefinitions", json!({"SchemaName": "project"}), 400),
        ("EntityDefinitions", json!({"SchemaName": "x_y"}), 400),
        (
            "EntityDefinitions",
            json!({"SchemaName": "new_a", "Colour": "red"}),
            400,
        ),
        (
            "EntityDefinitions",
            json!({"SchemaName": "new_a", "EntitySetName": "things"}),
            400,
        ),
        (
            "EntityDefinitions",
            json!({"SchemaName": "new_a", "Attributes": [{"AttributeType": "Integer", "SchemaName": "new_n", "IsPrimaryName": true}]}),
            400,
        ),
        (
            "EntityDefinitions(LogicalName='account')/Attributes",
            json!({"AttributeType": "Lookup", "SchemaName": "new_x"}),
            400,
        ),
        (
            "EntityDefinitions(LogicalName='account')/Attributes",
            json!({"AttributeType": "Lookup", "SchemaName": "new_x", "Targets": ["nosuch"]}),
            400,
        ),
        (
            "EntityDefinitions(LogicalName='account')/Attributes",
            json!({"AttributeType": "Colour", "SchemaName": "new_x"}),
            400,
        ),
        (
            "EntityDefinitions(LogicalName='account')/Attributes",
            json!({"AttributeType": "String", "SchemaName": "new_x", "MaxLength": 0}),
            400,
        ),
        (
            "EntityDefinitions(LogicalName='nosuch')/Attributes",
            json!({"AttributeType": "String", "SchemaName": "new_x"}),
            404,
        ),
    ] {
        let response = post(&server, &admin, path, body.clone());
        assert_eq!(odata_error(response).0, status, "{path} {body}");
    }
    assert_eq!(
        post(
            &server,
            &admin,
            "EntityDefinitions",
            json!({"SchemaName": "new_a"})
        )
        .status(),
        204
    );
    let again = post(
        &server,
        &admin,
        "EntityDefinitions",
        json!({"SchemaName": "new_A"}),
    );
    assert_eq!(odata_error(again).0, 409);
    let response = send(
        client().delete(
            server.api("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')"),
        ),
        &admin,
        None,
    );
    let (status, _, message) = odata_error(response);
    assert_eq!(status, 400);
    assert!(message.contains("not a custom attribute"), "{message}");

    server.add_user(&admin, "bo@contoso.test", "bo-password-1", "Basic User");
    let bo = server.token("bo@contoso.test", "bo-password-1");
    let refused = post(
        &server,
        &bo,
        "EntityDefinitions",
        json!({"SchemaName": "new_b"}),
    );
    assert_eq!(odata_error(refused).0, 403);
    let denied = server.audit(&admin, "operation=CreateEntity&status=Denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["UserUpn"], "bo@contoso.test");
    assert_eq!(
        server
            .audit(&admin, "operation=CreateEntity&status=Succeeded")
            .len(),
        1,
        "only new_a was created"
    );
}

/// A choice takes only its options and reads by its labels: the out-of-box ones Dataverse ships
/// (`industrycode`), and a custom choice's own `OptionSet`.
#[test]
fn choices_take_only_their_options_and_read_by_label() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let attribute = get_json(
        &server
            .api("EntityDefinitions(LogicalName='account')/Attributes(LogicalName='industrycode')"),
        &admin,
    );
    let options = attribute["OptionSet"]["Options"].as_array().unwrap();
    assert_eq!(options.len(), 33, "{attribute}");
    assert_eq!(options[6]["Value"], 7);
    assert_eq!(
        options[6]["Label"]["UserLocalizedLabel"]["Label"],
        "Consulting"
    );

    let response = post(
        &server,
        &admin,
        "EntityDefinitions(LogicalName='account')/Attributes",
        json!({"AttributeType": "Picklist", "SchemaName": "new_Tier", "OptionSet": {"Options": [
            {"Value": 100, "Label": {"UserLocalizedLabel": {"Label": "Gold"}}},
            {"Value": 200, "Label": "Silver"},
        ]}}),
    );
    assert_eq!(response.status(), 204);
    let twice = post(
        &server,
        &admin,
        "EntityDefinitions(LogicalName='account')/Attributes",
        json!({"AttributeType": "Picklist", "SchemaName": "new_Twice", "OptionSet": {"Options": [
            {"Value": 1, "Label": "A"}, {"Value": 1, "Label": "B"},
        ]}}),
    );
    assert_eq!(odata_error(twice).0, 400, "an option value once");
    server.publish(&admin);

    let account = create_account(&server, &admin, "Chosen");
    let patch = |body: Value| {
        send(
            client().patch(server.api(&format!("accounts({account})"))),
            &admin,
            Some(body),
        )
    };
    let (status, _, message) = odata_error(patch(json!({"industrycode": 999})));
    assert_eq!(status, 400);
    assert!(message.contains("7 (Consulting)"), "{message}");
    assert_eq!(odata_error(patch(json!({"new_tier": 300}))).0, 400);
    assert_eq!(
        patch(json!({"industrycode": 7, "new_tier": 200})).status(),
        204
    );
    let read = send(
        client()
            .get(server.api(&format!(
                "accounts({account})?$select=industrycode,new_tier"
            )))
            .header("Prefer", "odata.include-annotations=\"*\""),
        &admin,
        None,
    )
    .json::<Value>()
    .unwrap();
    let formatted = "@OData.Community.Display.V1.FormattedValue";
    assert_eq!(
        read[format!("industrycode{formatted}")],
        "Consulting",
        "{read}"
    );
    assert_eq!(read[format!("new_tier{formatted}")], "Silver", "{read}");
    assert_eq!(read["industrycode"], 7);
}

/// Table definitions answer Dataverse's metadata queries ("Query table definitions using the
/// Web API"): `$filter` and `$select` (before, both were ignored, so a script taking the first
/// definition a filter matched took `account` whatever it asked for), `$expand` of attributes
/// and keys, casts to an attribute type, and definitions named by `MetadataId`.
#[test]
fn table_definitions_answer_filter_select_expand_casts_and_metadata_ids() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let get = |path: &str| get_json(&server.api(path), &admin);

    // What tools ask first: the tables' names, labels and sets (a property Custos does not
    // keep, as `IsAvailableOffline`, is left out rather than refused).
    let found = get(
        "EntityDefinitions?$select=LogicalName,DisplayName,EntitySetName,IsAvailableOffline&$filter=LogicalName eq 'contact'",
    );
    let value = found["value"].as_array().unwrap();
    assert_eq!(value.len(), 1, "{found}");
    let contact = value[0].as_object().unwrap();
    assert_eq!(
        contact.keys().collect::<Vec<_>>(),
        ["MetadataId", "LogicalName", "DisplayName", "EntitySetName"]
    );
    assert_eq!(contact["EntitySetName"], "contacts");
    assert_eq!(
        contact["DisplayName"]["UserLocalizedLabel"]["Label"],
        "Contact"
    );
    assert!(found["@odata.context"].as_str().unwrap().ends_with(
        "$metadata#EntityDefinitions(LogicalName,DisplayName,EntitySetName,IsAvailableOffline)"
    ));
    let users = get(
        "EntityDefinitions?$select=ObjectTypeCode&$filter=SchemaName eq 'SystemUser' and IsManaged eq true",
    );
    assert_eq!(users["value"][0]["ObjectTypeCode"], 8, "{users}");
    let contact_id = contact["MetadataId"].as_str().unwrap().to_string();
    assert_eq!(
        get(&format!(
            "EntityDefinitions({contact_id})?$select=LogicalName"
        ))["LogicalName"],
        "contact"
    );
    // Filters on enumerations and complex values, and with the functions of text.
    let audited = get(
        "EntityDefinitions?$select=LogicalName&$filter=IsAuditEnabled/Value eq true and startswith(LogicalName,'CONT')",
    );
    assert_eq!(audited["value"].as_array().unwrap().len(), 1, "{audited}");

    // The lookups of a contact, expanded with a filter on their type and read by a cast, agree.
    let expanded = get(
        "EntityDefinitions(LogicalName='contact')?$select=LogicalName&$expand=Attributes($select=LogicalName;$filter=AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Lookup')",
    );
    let lookups = expanded["Attributes"].as_array().unwrap();
    assert!(!lookups.is_empty(), "{expanded}");
    for lookup in lookups {
        assert_eq!(
            lookup["@odata.type"],
            "#Microsoft.Dynamics.CRM.LookupAttributeMetadata"
        );
    }
    let cast = get(
        "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets,RequiredLevel",
    );
    assert_eq!(cast["value"][0]["RequiredLevel"]["Value"], "None", "{cast}");
    let primary = get(
        "EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName&$filter=IsPrimaryId eq true or RequiredLevel/Value eq Microsoft.Dynamics.CRM.AttributeRequiredLevel'SystemRequired'",
    );
    assert_eq!(primary["value"].as_array().unwrap().len(), 1, "{primary}");
    assert_eq!(primary["value"][0]["LogicalName"], "contactid");
    let names = |list: &[Value]| {
        list.iter()
            .map(|a| a["LogicalName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(cast["value"].as_array().unwrap()), names(lookups));
    assert!(cast["value"][0]["Targets"].is_array());
    let parent = lookups
        .iter()
        .find(|a| a["LogicalName"] == "parentcustomerid")
        .expect("contact's parent customer");
    let parent_id = parent["MetadataId"].as_str().unwrap();

    // A change through ids is the same change, recorded under the entity and attribute.
    let path = format!("EntityDefinitions({contact_id})/Attributes({parent_id})");
    let response = send(
        client().patch(server.api(&path)),
        &admin,
        Some(json!({"IsAuditEnabled": {"Value": false}})),
    );
    assert_eq!(response.status(), 204);
    let events = server.audit(&admin, "operation=UpdateAuditSettings");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["EntityName"], "contact");
    assert_eq!(events[0]["Details"]["Attribute"], "parentcustomerid");
    assert_eq!(
        get(&format!(
            "{path}/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=IsAuditEnabled&RetrieveAsIfPublished=true"
        ))["IsAuditEnabled"]["Value"],
        false
    );

    // Dataverse's own example: a choice's options through a cast and an expansion.
    let industry = get(
        "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='industrycode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet",
    );
    assert_eq!(industry["GlobalOptionSet"], Value::Null, "{industry}");
    assert_eq!(
        industry["OptionSet"]["Options"][0]["Label"]["UserLocalizedLabel"]["Label"],
        "Accounting"
    );
    assert!(industry["OptionSet"].get("Name").is_none(), "{industry}");

    // Relationships are the lookups, named as `@odata.bind` and `$expand` take them: a contact
    // bound to an account by the names the metadata gives is found from the account by them.
    let parent = get(
        "EntityDefinitions(LogicalName='contact')/ManyToOneRelationships?$filter=ReferencedEntity eq 'account' and ReferencingAttribute eq 'parentcustomerid'",
    );
    let relationship = &parent["value"][0];
    assert_eq!(relationship["ReferencedAttribute"], "accountid", "{parent}");
    let (bind, collection) = (
        relationship["ReferencingEntityNavigationPropertyName"]
            .as_str()
            .unwrap(),
        relationship["ReferencedEntityNavigationPropertyName"]
            .as_str()
            .unwrap(),
    );
    let from_account = get(&format!(
        "EntityDefinitions({})/OneToManyRelationships?$select=SchemaName&$filter=ReferencingEntity eq 'contact'",
        get("EntityDefinitions(LogicalName='account')?$select=LogicalName")["MetadataId"]
            .as_str()
            .unwrap()
    ));
    assert_eq!(
        from_account["value"][0]["MetadataId"], relationship["MetadataId"],
        "one relationship, seen from both sides"
    );
    let account_id = create_account(&server, &admin, "Bound");
    let contact = post(
        &server,
        &admin,
        "contacts",
        json!({"lastname": "Bound", format!("{bind}@odata.bind"): format!("/accounts({account_id})")}),
    );
    assert_eq!(contact.status(), 204);
    let expanded = get(&format!(
        "accounts({account_id})?$select=name&$expand={collection}($select=lastname)"
    ));
    assert_eq!(expanded[collection][0]["lastname"], "Bound", "{expanded}");

    // A table not yet published is found, and named by its id, as if published.
    let response = post(
        &server,
        &admin,
        "EntityDefinitions",
        json!({"SchemaName": "new_Project"}),
    );
    assert_eq!(response.status(), 204);
    let drafts = get(
        "EntityDefinitions?RetrieveAsIfPublished=true&$select=DisplayName,IsManaged&$filter=IsCustomEntity eq true",
    );
    assert_eq!(drafts["value"].as_array().unwrap().len(), 1, "{drafts}");
    assert_eq!(drafts["value"][0]["IsManaged"], false);
    let project_id = drafts["value"][0]["MetadataId"].as_str().unwrap();
    assert_eq!(
        get(&format!(
            "EntityDefinitions({project_id})?RetrieveAsIfPublished=true&$select=LogicalName"
        ))["LogicalName"],
        "new_project"
    );
    assert_eq!(
        get("EntityDefinitions?$filter=IsCustomEntity eq true")["value"],
        json!([]),
        "published, there is none yet"
    );

    // A key not yet published is named by its id too.
    let response = post(
        &server,
        &admin,
        "EntityDefinitions(LogicalName='contact')/Keys",
        json!({"SchemaName": "new_Email", "KeyAttributes": ["emailaddress1"]}),
    );
    assert_eq!(response.status(), 204);
    let keys = get(
        "EntityDefinitions(LogicalName='contact')/Keys?RetrieveAsIfPublished=true&$select=LogicalName&$filter=EntityKeyIndexStatus eq Microsoft.Dynamics.CRM.EntityKeyIndexStatus'Pending'",
    );
    assert_eq!(keys["value"][0]["LogicalName"], "new_email", "{keys}");
    let key_id = keys["value"][0]["MetadataId"].as_str().unwrap();
    assert_eq!(
        get(&format!(
            "EntityDefinitions({contact_id})/Keys({key_id})?RetrieveAsIfPublished=true"
        ))["KeyAttributes"],
        json!(["emailaddress1"])
    );

    // What a metadata query cannot answer as asked is refused, and changes nothing.
    for (path, status, says) in [
        ("EntityDefinitions?$top=1", 400, "without paging"),
        (
            "EntityDefinitions?$orderby=LogicalName",
            400,
            "without paging",
        ),
        (
            "EntityDefinitions?$filter=IsAuditEnabled eq true",
            400,
            "IsAuditEnabled/Value",
        ),
        (
            "EntityDefinitions?$select=displayname",
            400,
            "not the name of a property",
        ),
        (
            "EntityDefinitions?$filter=IsValidForAdvancedFind eq true",
            400,
            "not a property",
        ),
        (
            "EntityDefinitions(LogicalName='contact')?$filter=LogicalName eq 'a'",
            400,
            "collection",
        ),
        (
            "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.EnumAttributeMetadata",
            400,
            "not a type of attribute",
        ),
        (
            "EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='parentcustomerid')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            404,
            "as a Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        ),
        (
            "EntityDefinitions(00000000-0000-0000-0000-00000000002a)",
            404,
            "MetadataId",
        ),
        (
            &format!(
                "EntityDefinitions({contact_id})/Attributes(00000000-0000-0000-0000-00000000002a)"
            ),
            404,
            "MetadataId",
        ),
    ] {
        let (got, _, message) = odata_error(send(client().get(server.api(path)), &admin, None));
        assert_eq!(got, status, "{path}: {message}");
        assert!(message.contains(says), "{path}: {message}");
    }
    assert_eq!(
        server.audit(&admin, "operation=UpdateAuditSettings").len(),
        1,
        "a refused query changed nothing"
    );
}
