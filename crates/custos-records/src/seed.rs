//! The entities every new instance starts with (SPEC §3 and §13) and the built-in roles.

use uuid::Uuid;

use crate::metadata::{
    AttributeDef, AttributeType, ChoiceOption, EntityCategory, EntityDef, OnDelete,
};
use crate::security::BuiltInRole;

/// Logical name of the instance settings entity.
pub const ORGANIZATION_ENTITY: &str = "organization";

/// The entity of shares: a record (`objectid`, of entity `objecttypecode`) shared with a user
/// (`principalid`) for reading or writing (`accessrightsmask`).
pub const SHARE_ENTITY: &str = "principalobjectaccess";

/// Fixed ids of the built-in roles, the same in every instance.
pub const ROLE_IDS: [(BuiltInRole, Uuid); 4] = [
    (
        BuiltInRole::SystemAdministrator,
        Uuid::from_u128(0x6f3b_0001_0000_4000_8000_0000_0000_0001),
    ),
    (
        BuiltInRole::BasicUser,
        Uuid::from_u128(0x6f3b_0001_0000_4000_8000_0000_0000_0002),
    ),
    (
        BuiltInRole::AuditReader,
        Uuid::from_u128(0x6f3b_0001_0000_4000_8000_0000_0000_0003),
    ),
    (
        BuiltInRole::AuditManager,
        Uuid::from_u128(0x6f3b_0001_0000_4000_8000_0000_0000_0004),
    ),
];

/// Attributes the platform composes from others on every write, as Dataverse composes a
/// contact's full name: (entity, attribute, the parts joined by a space).
pub(crate) const COMPOSED: [(&str, &str, &[&str]); 1] =
    [("contact", "fullname", &["firstname", "lastname"])];

/// The label a person reads for an out-of-box attribute, as Dataverse names it (`revenue` →
/// "Annual Revenue"); `None` for names it does not know (a custom attribute shows its logical
/// name).
pub fn display_name(logical_name: &str) -> Option<&'static str> {
    Some(match logical_name {
        "name" => "Name",
        "accountnumber" => "Account Number",
        "revenue" => "Annual Revenue",
        "numberofemployees" => "Number of Employees",
        "telephone1" => "Main Phone",
        "emailaddress1" => "Email",
        "internalemailaddress" => "Primary Email",
        "websiteurl" => "Website",
        "address1_city" => "City",
        "industrycode" => "Industry",
        "primarycontactid" => "Primary Contact",
        "parentaccountid" => "Parent Account",
        "parentcustomerid" => "Company Name",
        "customerid" => "Customer",
        "creditonhold" => "Credit Hold",
        "description" => "Description",
        "firstname" => "First Name",
        "lastname" => "Last Name",
        "fullname" => "Full Name",
        "jobtitle" => "Job Title",
        "birthdate" => "Birthday",
        "companyname" => "Company Name",
        "subject" => "Topic",
        "title" => "Title",
        "ticketnumber" => "Case Number",
        "prioritycode" => "Priority",
        "leadqualitycode" => "Rating",
        "estimatedvalue" => "Est. Revenue",
        "estimatedclosedate" => "Est. Close Date",
        "closeprobability" => "Probability",
        "scheduledend" => "Due",
        "regardingobjectid" => "Regarding",
        "statecode" => "Status",
        "domainname" => "User Name",
        "isdisabled" => "Disabled",
        "createdon" => "Created On",
        "modifiedon" => "Modified On",
        "createdby" => "Created By",
        "modifiedby" => "Modified By",
        "createdonbehalfby" => "Created By (Delegate)",
        "modifiedonbehalfby" => "Modified By (Delegate)",
        "ownerid" => "Owner",
        "versionnumber" => "Version Number",
        "isauditenabled" => "Start Auditing",
        "isreadauditenabled" => "Start Read Auditing",
        "isuseraccessauditenabled" => "Audit user access",
        "auditretentionperiodv2" => "Audit Retention Period (days)",
        "useraccessauditinginterval" => "User Access Auditing Interval (hours)",
        _ => return None,
    })
}

/// How Dataverse names an out-of-box entity: its schema name, its display name and display
/// collection name, and its object type code (`account` → `Account`, "Account", "Accounts", 1);
/// `None` for a custom entity.
pub fn entity_names(logical_name: &str) -> Option<EntityNames> {
    let (schema, display, collection, type_code) = match logical_name {
        "account" => ("Account", "Account", "Accounts", 1),
        "contact" => ("Contact", "Contact", "Contacts", 2),
        "opportunity" => ("Opportunity", "Opportunity", "Opportunities", 3),
        "lead" => ("Lead", "Lead", "Leads", 4),
        "systemuser" => ("SystemUser", "User", "Users", 8),
        "team" => ("Team", "Team", "Teams", 9),
        "principalobjectaccess" => (
            "PrincipalObjectAccess",
            "Principal Object Access",
            "Principal Object Accesses",
            42,
        ),
        "incident" => ("Incident", "Case", "Cases", 112),
        "organization" => ("Organization", "Organization", "Organizations", 1019),
        "role" => ("Role", "Security Role", "Security Roles", 1036),
        "savedquery" => ("SavedQuery", "View", "Views", 1039),
        "task" => ("Task", "Task", "Tasks", 4212),
        "userquery" => ("UserQuery", "Saved View", "Saved Views", 4230),
        "sdkmessageprocessingstep" => (
            "SdkMessageProcessingStep",
            "Sdk Message Processing Step",
            "Sdk Message Processing Steps",
            4608,
        ),
        "workflow" => ("Workflow", "Process", "Processes", 4703),
        "solution" => ("Solution", "Solution", "Solutions", 7100),
        _ => return None,
    };
    Some(EntityNames {
        schema,
        display,
        collection,
        type_code,
    })
}

/// What [`entity_names`] knows of an out-of-box entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityNames {
    /// `SchemaName` (`SystemUser`).
    pub schema: &'static str,
    /// `DisplayName` (`User`).
    pub display: &'static str,
    /// `DisplayCollectionName` (`Users`).
    pub collection: &'static str,
    /// `ObjectTypeCode` (8).
    pub type_code: i32,
}

fn string(name: &str) -> AttributeDef {
    AttributeDef::new(name, AttributeType::String { max_length: 200 })
}

fn attr(name: &str, attribute_type: AttributeType) -> AttributeDef {
    AttributeDef::new(name, attribute_type)
}

/// A choice with Dataverse's options for it.
fn choice(name: &str, options: &[(i64, &str)]) -> AttributeDef {
    let mut attribute = AttributeDef::new(name, AttributeType::Choice);
    attribute.options = options
        .iter()
        .map(|(value, label)| ChoiceOption {
            value: *value,
            label: (*label).to_string(),
        })
        .collect();
    attribute
}

/// The options of an out-of-box choice (none for any other attribute).
pub(crate) fn out_of_box_options(entity: &str, attribute: &str) -> Vec<ChoiceOption> {
    seed_entities()
        .into_iter()
        .find(|e| e.logical_name == entity)
        .and_then(|e| e.attribute(attribute).map(|a| a.options.clone()))
        .unwrap_or_default()
}

/// `account.industrycode`, as Dataverse ships it.
const INDUSTRIES: [(i64, &str); 33] = [
    (1, "Accounting"),
    (2, "Agriculture and Non-petrol Natural Resource Extraction"),
    (3, "Broadcasting Printing and Publishing"),
    (4, "Brokers"),
    (5, "Building Supply Retail"),
    (6, "Business Services"),
    (7, "Consulting"),
    (8, "Consumer Services"),
    (9, "Design, Direction and Creative Management"),
    (10, "Distributors, Dispatchers and Processors"),
    (11, "Doctor's Offices and Clinics"),
    (12, "Durable Manufacturing"),
    (13, "Eating and Drinking Places"),
    (14, "Entertainment Retail"),
    (15, "Equipment Rental and Leasing"),
    (16, "Financial"),
    (17, "Food and Tobacco Processing"),
    (18, "Inbound Capital Intensive Processing"),
    (19, "Inbound Repair and Services"),
    (20, "Insurance"),
    (21, "Legal Services"),
    (22, "Non-Durable Merchandise Retail"),
    (23, "Outbound Consumer Service"),
    (24, "Petrochemical Extraction and Distribution"),
    (25, "Service Retail"),
    (26, "SIG Affiliations"),
    (27, "Social Services"),
    (28, "Special Outbound Trade Contractors"),
    (29, "Specialty Realty"),
    (30, "Transportation"),
    (31, "Utility Creation and Distribution"),
    (32, "Vehicle Retail"),
    (33, "Wholesale"),
];

/// A lookup whose referenced record's delete clears it.
fn lookup(name: &str, target: &str) -> AttributeDef {
    lookup_deleted(name, target, OnDelete::RemoveLink)
}

/// A lookup with its delete behaviour.
fn lookup_deleted(name: &str, target: &str, on_delete: OnDelete) -> AttributeDef {
    AttributeDef::new(
        name,
        AttributeType::Lookup {
            target: target.into(),
            on_delete,
        },
    )
}

/// The delete behaviour of an out-of-box lookup (none for any other attribute).
pub(crate) fn out_of_box_on_delete(entity: &str, attribute: &str) -> Option<OnDelete> {
    seed_entities()
        .into_iter()
        .find(|e| e.logical_name == entity)
        .and_then(|e| match e.attribute(attribute)?.attribute_type {
            AttributeType::Lookup { on_delete, .. } => Some(on_delete),
            _ => None,
        })
}

/// `createdonbehalfby` or `modifiedonbehalfby`: the user who sent a create or change made on
/// behalf of another (`MSCRMCallerID`), as Dataverse keeps them on every table.
pub(crate) fn delegate(name: &str) -> AttributeDef {
    read_only(lookup_deleted(name, "systemuser", OnDelete::NoCascade))
}

fn read_only(mut attribute: AttributeDef) -> AttributeDef {
    attribute.read_only = true;
    attribute
}

fn entity(
    logical_name: &str,
    set_name: &str,
    category: EntityCategory,
    primary_name: &str,
    own: Vec<AttributeDef>,
) -> EntityDef {
    let mut attributes = vec![attr(
        &format!("{logical_name}id"),
        AttributeType::UniqueIdentifier,
    )];
    attributes.extend(own);
    attributes.extend([
        read_only(attr("createdon", AttributeType::DateTime)),
        read_only(attr("modifiedon", AttributeType::DateTime)),
        read_only(lookup_deleted(
            "createdby",
            "systemuser",
            OnDelete::NoCascade,
        )),
        read_only(lookup_deleted(
            "modifiedby",
            "systemuser",
            OnDelete::NoCascade,
        )),
        delegate("createdonbehalfby"),
        delegate("modifiedonbehalfby"),
        lookup_deleted("ownerid", "systemuser", OnDelete::NoCascade),
        read_only(attr("versionnumber", AttributeType::BigInt)),
    ]);
    EntityDef {
        logical_name: logical_name.into(),
        set_name: set_name.into(),
        category,
        primary_name: Some(primary_name.into()),
        attributes,
        audit: true,
        retrieve_audit: false,
        retrieve_multiple_audit: false,
        keys: Vec::new(),
    }
}

/// A view entity: system views (`savedquery`) or personal views (`userquery`), each an OData
/// query of one entity — `returnedtypecode` (its logical name), `filter`, `columns`
/// (`$select`), `orderby`.
fn view_entity(logical_name: &str, set_name: &str, extra: Vec<AttributeDef>) -> EntityDef {
    use AttributeType::*;
    let mut own = vec![
        string("name"),
        AttributeDef::new("returnedtypecode", String { max_length: 64 }),
        attr("filter", Memo),
        AttributeDef::new("columns", String { max_length: 2000 }),
        AttributeDef::new("orderby", String { max_length: 400 }),
        attr("description", Memo),
    ];
    own.extend(extra);
    entity(logical_name, set_name, EntityCategory::Admin, "name", own)
}

/// The system views every new instance has: one "All …" view, the default, per out-of-box
/// entity, with fixed ids: (id, entity, name, columns).
pub fn seed_views() -> Vec<(Uuid, &'static str, &'static str, &'static str)> {
    [
        (
            "account",
            "All accounts",
            "name,accountnumber,telephone1,emailaddress1,revenue",
        ),
        (
            "contact",
            "All contacts",
            "fullname,emailaddress1,telephone1,jobtitle",
        ),
        (
            "lead",
            "All leads",
            "subject,firstname,lastname,companyname,estimatedvalue",
        ),
        (
            "opportunity",
            "All opportunities",
            "name,estimatedvalue,estimatedclosedate,closeprobability",
        ),
        ("incident", "All cases", "title,ticketnumber,prioritycode"),
        ("task", "All tasks", "subject,scheduledend,prioritycode"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (entity, name, columns))| {
        (
            Uuid::from_u128(0x6f3b_0002_0000_4000_8000_0000_0000_0001 + i as u128),
            entity,
            name,
            columns,
        )
    })
    .collect()
}

/// A new custom entity (created by customization): its key `<name>id`, a primary name
/// attribute `<prefix>_name` of `name_length` characters, and the platform's attributes.
pub fn custom_entity(logical_name: &str, set_name: &str, name_length: u32) -> EntityDef {
    let prefix = logical_name.split('_').next().unwrap_or("new");
    let mut primary = AttributeDef::new(
        &format!("{prefix}_name"),
        AttributeType::String {
            max_length: name_length,
        },
    );
    primary.custom = true;
    let primary_name = primary.logical_name.clone();
    entity(
        logical_name,
        set_name,
        EntityCategory::Custom,
        &primary_name,
        vec![primary],
    )
}

/// The seeded account entity, for unit tests that read queries against it.
#[cfg(test)]
pub(crate) fn seeded_account() -> EntityDef {
    seed_entities()
        .into_iter()
        .find(|e| e.logical_name == "account")
        .expect("account is seeded")
}

/// The out-of-box and admin entities of a new instance, with their default audit flags:
/// change auditing on, read auditing off (as Dataverse ships them).
pub fn seed_entities() -> Vec<EntityDef> {
    use AttributeType::*;
    use EntityCategory::*;
    vec![
        entity(
            "account",
            "accounts",
            OutOfBox,
            "name",
            vec![
                string("name"),
                string("accountnumber"),
                attr("revenue", Money),
                string("telephone1"),
                string("emailaddress1"),
                string("websiteurl"),
                lookup("primarycontactid", "contact"),
                attr("numberofemployees", Integer),
                choice("industrycode", &INDUSTRIES),
                attr("creditonhold", Boolean),
                attr("description", Memo),
                string("address1_city"),
            ],
        ),
        entity(
            "contact",
            "contacts",
            OutOfBox,
            "fullname",
            vec![
                string("firstname"),
                string("lastname"),
                read_only(string("fullname")),
                string("emailaddress1"),
                string("telephone1"),
                string("jobtitle"),
                lookup_deleted("parentcustomerid", "account", OnDelete::Cascade),
                attr("birthdate", DateTime),
                attr("description", Memo),
            ],
        ),
        entity(
            "lead",
            "leads",
            OutOfBox,
            "subject",
            vec![
                string("subject"),
                string("firstname"),
                string("lastname"),
                string("companyname"),
                string("emailaddress1"),
                attr("estimatedvalue", Money),
                choice("leadqualitycode", &[(1, "Hot"), (2, "Warm"), (3, "Cold")]),
            ],
        ),
        entity(
            "opportunity",
            "opportunities",
            OutOfBox,
            "name",
            vec![
                string("name"),
                attr("estimatedvalue", Money),
                attr("estimatedclosedate", DateTime),
                lookup("parentaccountid", "account"),
                attr("closeprobability", Integer),
                attr("description", Memo),
            ],
        ),
        entity(
            "incident",
            "incidents",
            OutOfBox,
            "title",
            vec![
                string("title"),
                string("ticketnumber"),
                lookup_deleted("customerid", "account", OnDelete::Cascade),
                choice("prioritycode", &[(1, "High"), (2, "Normal"), (3, "Low")]),
                attr("description", Memo),
            ],
        ),
        entity(
            "task",
            "tasks",
            OutOfBox,
            "subject",
            vec![
                string("subject"),
                attr("description", Memo),
                attr("scheduledend", DateTime),
                attr("regardingobjectid", UniqueIdentifier),
                choice("prioritycode", &[(0, "Low"), (1, "Normal"), (2, "High")]),
            ],
        ),
        entity(
            "systemuser",
            "systemusers",
            Admin,
            "fullname",
            vec![
                string("fullname"),
                string("domainname"),
                string("internalemailaddress"),
                attr("applicationid", UniqueIdentifier),
                attr("isdisabled", Boolean),
                string("title"),
            ],
        ),
        entity(
            "team",
            "teams",
            Admin,
            "name",
            vec![
                string("name"),
                attr("description", Memo),
                choice(
                    "teamtype",
                    &[
                        (0, "Owner"),
                        (1, "Access"),
                        (2, "Security Group"),
                        (3, "Office Group"),
                    ],
                ),
            ],
        ),
        entity(
            "role",
            "roles",
            Admin,
            "name",
            vec![
                string("name"),
                attr("description", Memo),
                read_only(attr("privileges", Memo)),
            ],
        ),
        view_entity(
            "savedquery",
            "savedqueries",
            vec![attr("isdefault", Boolean)],
        ),
        view_entity("userquery", "userqueries", Vec::new()),
        entity(
            SHARE_ENTITY,
            "principalobjectaccessset",
            Other,
            "objecttypecode",
            vec![
                attr("objectid", UniqueIdentifier),
                AttributeDef::new("objecttypecode", String { max_length: 64 }),
                attr("principalid", UniqueIdentifier),
                attr("accessrightsmask", Integer),
            ],
        ),
        entity(
            "solution",
            "solutions",
            Admin,
            "friendlyname",
            vec![
                AttributeDef::new("uniquename", String { max_length: 100 }),
                string("friendlyname"),
                AttributeDef::new("version", String { max_length: 32 }),
                AttributeDef::new("publisherprefix", String { max_length: 8 }),
                read_only(attr("components", Memo)),
                attr("description", Memo),
            ],
        ),
        entity(
            "workflow",
            "workflows",
            Admin,
            "name",
            vec![
                string("name"),
                AttributeDef::new("primaryentity", String { max_length: 64 }),
                AttributeDef::new("triggeron", String { max_length: 16 }),
                AttributeDef::new("actiontype", String { max_length: 16 }),
                AttributeDef::new("fieldname", String { max_length: 64 }),
                AttributeDef::new("fieldvalue", String { max_length: 4000 }),
                AttributeDef::new("webhookurl", String { max_length: 2000 }),
                attr("statecode", Integer),
                attr("description", Memo),
            ],
        ),
        entity(
            "sdkmessageprocessingstep",
            "sdkmessageprocessingsteps",
            Admin,
            "name",
            vec![
                string("name"),
                AttributeDef::new("sdkmessage", String { max_length: 16 }),
                AttributeDef::new("primaryentity", String { max_length: 64 }),
                AttributeDef::new("webhookurl", String { max_length: 2000 }),
                attr("statecode", Integer),
                attr("description", Memo),
            ],
        ),
        entity(
            ORGANIZATION_ENTITY,
            "organizations",
            Admin,
            "name",
            vec![
                string("name"),
                attr("isauditenabled", Boolean),
                attr("isreadauditenabled", Boolean),
                attr("isuseraccessauditenabled", Boolean),
                attr("auditretentionperiodv2", Integer),
                attr("useraccessauditinginterval", Integer),
            ],
        ),
    ]
}
