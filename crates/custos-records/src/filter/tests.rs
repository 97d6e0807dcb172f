use proptest::prelude::*;

use super::*;

fn check(input: &str, expect: &str) {
    let got = match parse_filter(input) {
        Ok(filter) => filter.to_string(),
        Err(error) => format!("error: {error}"),
    };
    assert_eq!(got, expect, "input: {input}");
}

#[test]
fn parses_the_grammar_of_the_spec() {
    check("name eq 'Contoso'", "name eq 'Contoso'");
    check(
        "revenue gt 1000 and revenue le 2000.5",
        "(revenue gt 1000) and (revenue le 2000.5)",
    );
    check(
        "a eq 1 or b eq 2 and c eq 3",
        "(a eq 1) or ((b eq 2) and (c eq 3))",
    );
    check(
        "(a eq 1 or b eq 2) and c ne null",
        "((a eq 1) or (b eq 2)) and (c ne null)",
    );
    check(
        "not contains(name,'x') and startswith(name, 'A')",
        "(not (contains(name,'x'))) and (startswith(name,'A'))",
    );
    check(
        "endswith(emailaddress1,'@example.com')",
        "endswith(emailaddress1,'@example.com')",
    );
    check("name eq 'O''Brien'", "name eq 'O''Brien'");
    // Table definitions' enumerations and complex values (`webapi::metaquery`).
    check(
        "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'",
        "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'",
    );
    check(
        "Microsoft.Dynamics.CRM.OwnershipTypes'It''s' ne OwnershipType",
        "OwnershipType ne Microsoft.Dynamics.CRM.OwnershipTypes'It''s'",
    );
    check(
        "IsAuditEnabled/Value eq true",
        "IsAuditEnabled/Value eq true",
    );
    check(
        "_primarycontactid_value eq 5f1b1a3e-0000-4000-8000-00000000002a",
        "_primarycontactid_value eq 5f1b1a3e-0000-4000-8000-00000000002a",
    );
    check(
        "createdon ge 2024-01-31T10:00:00+02:00",
        "createdon ge 2024-01-31T08:00:00.000Z",
    );
    check("createdon lt 2024-02-01", "createdon lt 2024-02-01");
    // OData's ABNF: the seconds of a time of day are optional, integers take a sign and
    // leading zeros.
    check(
        "createdon ge 2024-01-31T10:00+02:00",
        "createdon ge 2024-01-31T08:00:00.000Z",
    );
    check(
        "createdon lt 2024-01-01T00:00Z",
        "createdon lt 2024-01-01T00:00:00.000Z",
    );
    check("numberofemployees eq 05", "numberofemployees eq 5");
    check("numberofemployees eq +5", "numberofemployees eq 5");
    check("numberofemployees gt -007", "numberofemployees gt -7");
    check(
        "creditonhold eq true and revenue ge -1.5e3",
        "(creditonhold eq true) and (revenue ge -1.5e3)",
    );
    // `in` is the `or` of an `eq` per value.
    check(
        "name in ('A', 'B','C') and revenue gt 0",
        "(((name eq 'A') or (name eq 'B')) or (name eq 'C')) and (revenue gt 0)",
    );
    check("statecode in (0)", "statecode eq 0");
    // Two members compare the row's values; a literal on the left is turned around; two
    // literals are decided (and print as a comparison that parses back the same).
    check("firstname eq lastname", "firstname eq lastname");
    check("5 lt numberofemployees", "numberofemployees gt 5");
    check("'A' ne name", "name ne 'A'");
    check("1 eq 1", "1 eq 1");
    check("1 eq 2", "1 eq 0");
    check("'abc' eq 'ABC'", "1 eq 1");
    check("null eq null", "1 eq 1");
    check("1 ne null", "1 eq 1");
    check("1 gt null", "1 eq 0");
    check("2.5 gt 2", "1 eq 1");
    // Milliseconds in the stored form; a finer fraction is kept (to nanoseconds).
    check(
        "createdon eq 2019-01-05T20:30:49.999Z",
        "createdon eq 2019-01-05T20:30:49.999Z",
    );
    check(
        "createdon lt 2019-01-05T21:30:49.5000+01:00",
        "createdon lt 2019-01-05T20:30:49.500Z",
    );
    check(
        "createdon lt 2019-01-05T20:30:49.0001Z",
        "createdon lt 2019-01-05T20:30:49.0001Z",
    );
    check("2019-01-05T20:30:49.999Z gt 2019-01-05T20:30:49Z", "1 eq 1");
    check(
        "2019-01-05T20:30:49.5Z lt 2019-01-05T20:30:49.45Z",
        "1 eq 0",
    );
    check(
        "2024-01-02T00:00:00Z gt 2024-01-01T23:59:59+00:00",
        "1 eq 1",
    );
    check(
        "1 eq 'a'",
        "error: invalid $filter: 1 eq 'a' compares values that cannot be compared that way",
    );
    check(
        "true gt false",
        "error: invalid $filter: true gt false compares values that cannot be compared that way",
    );
    assert_eq!(
        parse_filter("name in ('A', null)").unwrap(),
        parse_filter("name eq 'A' or name eq null").unwrap()
    );
}

#[test]
fn malformed_filters_say_what_is_wrong() {
    check(
        "name eq",
        "error: invalid $filter: expected a value after 'eq' at position 7, got the end",
    );
    check(
        "name equals 'x'",
        "error: invalid $filter: expected a comparison operator (eq, ne, gt, ge, lt, le) after 'name' at position 5",
    );
    check(
        "name eq 'x",
        "error: invalid $filter: unterminated string starting at position 8",
    );
    check(
        "(name eq 'x'",
        "error: invalid $filter: expected ')' at position 12, got the end",
    );
    check(
        "name eq 'x')",
        "error: invalid $filter: unexpected ')' at position 11",
    );
    check(
        "contains(name, 5)",
        "error: invalid $filter: contains() takes a string as its second argument, got literal 5 at position 15",
    );
    check(
        "name eq 2024-13-01",
        "error: invalid $filter: invalid literal '2024-13-01' at position 8",
    );
    check(
        "",
        "error: invalid $filter: unexpected end of expression at position 0",
    );
    check(
        "name eq 'x' ; drop",
        "error: invalid $filter: unexpected character ';' at position 12",
    );
    check(
        &"(".repeat(100),
        "error: invalid $filter: nested deeper than 64 levels",
    );
    check(
        "name in ()",
        "error: invalid $filter: 'in' takes a list of values, got ')' at position 9",
    );
    check(
        "name in ('a',)",
        "error: invalid $filter: 'in' takes a list of values, got ')' at position 13",
    );
    check(
        "name in 'a'",
        "error: invalid $filter: expected '(' at position 8, got literal 'a'",
    );
    check(
        "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Pick",
        "error: invalid $filter: unterminated string starting at position 57",
    );
}

#[test]
fn a_records_filter_names_no_enumeration_or_path() {
    let account = crate::seed_entities()
        .into_iter()
        .find(|e| e.logical_name == "account")
        .expect("seeded");
    let refusal = |filter: &str| {
        let options = crate::parse_query_options([("$filter", filter)]).expect("parses");
        crate::check_query(&account, &options)
            .expect_err("refused")
            .to_string()
    };
    assert!(
        refusal("name eq Microsoft.Dynamics.CRM.AttributeTypeCode'String'")
            .contains("cannot be compared with Microsoft.Dynamics.CRM.AttributeTypeCode'String'"),
    );
    assert!(
        refusal("primarycontactid/fullname eq 'x'")
            .contains("'primarycontactid/fullname' does not exist on entity 'account'"),
    );
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Boolean),
        any::<i64>().prop_map(Literal::Integer),
        (any::<i32>(), 0u32..1000).prop_map(|(i, f)| Literal::Decimal(format!("{i}.{f}"))),
        ".*".prop_map(Literal::String),
        any::<u128>().prop_map(|n| Literal::Guid(Uuid::from_u128(n))),
        (1970i32..2100, 1u8..13, 1u8..29, 0u8..24).prop_map(|(y, m, d, h)| Literal::DateTime(
            format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00.000Z")
        )),
        (1970i32..2100, 1u8..13, 1u8..29)
            .prop_map(|(y, m, d)| Literal::Date(format!("{y:04}-{m:02}-{d:02}"))),
        ("[A-Z][A-Za-z]{0,12}", ".*")
            .prop_map(|(type_name, member)| Literal::Enum { type_name, member }),
    ]
}

fn attribute() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,12}".prop_filter("not a keyword", |s| {
        ![
            "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null",
        ]
        .contains(&s.as_str())
    })
}

fn filter() -> impl Strategy<Value = Filter> {
    let ops = prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::Lt),
        Just(CompareOp::Le)
    ];
    let functions = prop_oneof![
        Just(StringFunction::Contains),
        Just(StringFunction::StartsWith),
        Just(StringFunction::EndsWith)
    ];
    let leaf = prop_oneof![
        (attribute(), ops, literal()).prop_map(|(attribute, op, value)| Filter::Compare {
            attribute,
            op,
            value
        }),
        (functions, attribute(), ".*").prop_map(|(function, attribute, value)| Filter::Function {
            function,
            attribute,
            value
        }),
    ];
    leaf.prop_recursive(6, 48, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #[test]
    fn printing_then_parsing_gives_the_same_tree(tree in filter()) {
        let printed = tree.to_string();
        let reparsed = parse_filter(&printed);
        prop_assert_eq!(reparsed.as_ref().ok(), Some(&tree), "printed: {}", printed);
    }

    #[test]
    fn arbitrary_input_never_panics(input in ".{0,200}") {
        let _ = parse_filter(&input);
    }

    #[test]
    fn filter_like_input_never_panics(input in "[a-z()' ,0-9.:-]{0,120}") {
        let _ = parse_filter(&input);
    }
}

/// Parses `input` as a request at 2026-03-31T15:30:45.5Z by user `…0007` would, printed.
fn at_request(input: &str) -> String {
    let context = FilterContext {
        now: time::macros::datetime!(2026-03-31 15:30:45.5 UTC),
        user: Uuid::from_u128(7),
    };
    match parse_filter_in(input, Some(&context)) {
        Ok(filter) => filter.to_string(),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn query_functions_are_read_into_comparisons_relative_to_the_request() {
    let ns = "Microsoft.Dynamics.CRM.";
    let call = |name: &str, args: &str| at_request(&format!("{ns}{name}({args})"));
    let on = |name: &str| call(name, "PropertyName='createdon'");
    let counted =
        |name: &str, x: i64| call(name, &format!("PropertyName='createdon',PropertyValue={x}"));
    let range = |start: &str, end: &str| format!("(createdon ge {start}) and (createdon lt {end})");
    let now = "2026-03-31T15:30:45.5Z";
    assert_eq!(
        on("Today"),
        range("2026-03-31T00:00:00Z", "2026-04-01T00:00:00Z")
    );
    assert_eq!(
        on("Yesterday"),
        range("2026-03-30T00:00:00Z", "2026-03-31T00:00:00Z")
    );
    assert_eq!(
        on("Tomorrow"),
        range("2026-04-01T00:00:00Z", "2026-04-02T00:00:00Z")
    );
    assert_eq!(
        on("Last7Days"),
        range("2026-03-25T00:00:00Z", "2026-04-01T00:00:00Z")
    );
    assert_eq!(
        on("Next7Days"),
        range("2026-03-31T00:00:00Z", "2026-04-07T00:00:00Z")
    );
    assert_eq!(
        on("ThisMonth"),
        range("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
    );
    assert_eq!(
        on("LastMonth"),
        range("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
    );
    assert_eq!(
        on("NextMonth"),
        range("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z")
    );
    assert_eq!(
        on("ThisYear"),
        range("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
    );
    assert_eq!(
        on("LastYear"),
        range("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
    );
    assert_eq!(
        on("NextYear"),
        range("2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z")
    );
    let since = |start: &str| format!("(createdon ge {start}) and (createdon le {now})");
    assert_eq!(counted("LastXHours", 16), since("2026-03-30T23:30:45.5Z"));
    assert_eq!(counted("LastXDays", 2), since("2026-03-29T00:00:00Z"));
    assert_eq!(counted("LastXDays", 0), since("2026-03-31T00:00:00Z"));
    assert_eq!(counted("LastXWeeks", 1), since("2026-03-24T00:00:00Z"));
    // A month back from the 31st is February's last day.
    assert_eq!(counted("LastXMonths", 1), since("2026-02-28T00:00:00Z"));
    assert_eq!(counted("LastXYears", 2), since("2024-03-31T00:00:00Z"));
    assert_eq!(
        counted("NextXHours", 1),
        format!("(createdon ge {now}) and (createdon le 2026-03-31T16:30:45.5Z)")
    );
    assert_eq!(
        counted("NextXDays", 2),
        format!("(createdon ge {now}) and (createdon lt 2026-04-03T00:00:00Z)")
    );
    assert_eq!(
        counted("NextXMonths", 11),
        format!("(createdon ge {now}) and (createdon lt 2027-03-01T00:00:00Z)")
    );
    assert_eq!(
        counted("OlderThanXMinutes", 30),
        "createdon lt 2026-03-31T15:00:45.5Z"
    );
    assert_eq!(
        counted("OlderThanXYears", 1),
        "createdon lt 2025-03-31T15:30:45.5Z"
    );
    // A count may come in quotes, as Dataverse's examples write it through an alias.
    assert_eq!(
        call(
            "OlderThanXDays",
            "PropertyName='createdon',PropertyValue='1'"
        ),
        "createdon lt 2026-03-30T15:30:45.5Z"
    );
    let day = |name: &str, value: &str| {
        call(
            name,
            &format!("PropertyName='createdon',PropertyValue={value}"),
        )
    };
    assert_eq!(
        day("On", "'2026-02-14'"),
        range("2026-02-14T00:00:00Z", "2026-02-15T00:00:00Z")
    );
    assert_eq!(
        day("OnOrAfter", "2026-02-14"),
        "createdon ge 2026-02-14T00:00:00Z"
    );
    assert_eq!(
        day("OnOrBefore", "2026-02-14"),
        "createdon lt 2026-02-15T00:00:00Z"
    );

    assert_eq!(
        call("In", "PropertyName='name',PropertyValues=['A','B','C']"),
        "((name eq 'A') or (name eq 'B')) or (name eq 'C')"
    );
    assert_eq!(
        call("NotIn", "PropertyName='name',PropertyValues=['A']"),
        "not (name eq 'A')"
    );
    assert_eq!(
        call("Between", "PropertyName='revenue',PropertyValues=['10',20]"),
        "(revenue ge '10') and (revenue le 20)"
    );
    assert_eq!(
        call("NotBetween", "PropertyName='revenue',PropertyValues=[1,2]"),
        "not ((revenue ge 1) and (revenue le 2))"
    );
    let user = Uuid::from_u128(7);
    assert_eq!(
        on("EqualUserId").replace("createdon", "ownerid"),
        format!("ownerid eq {user}")
    );
    assert_eq!(
        call("NotEqualUserId", "PropertyName='ownerid'"),
        format!("not (ownerid eq {user})")
    );
    // Records are owned by users only here: the caller's teams own none.
    assert_eq!(
        call("EqualUserOrUserTeams", "PropertyName='ownerid'"),
        format!("ownerid eq {user}")
    );
    assert_eq!(call("EqualUserTeams", "PropertyName='ownerid'"), "1 eq 0");
    // Inside a larger filter, beside other terms.
    assert_eq!(
        at_request(&format!(
            "statecode eq 0 and {ns}EqualUserId(PropertyName='ownerid')"
        )),
        format!("(statecode eq 0) and (ownerid eq {user})")
    );
}

#[test]
fn query_functions_refuse_what_they_cannot_read() {
    let ns = "Microsoft.Dynamics.CRM.";
    let refused = |input: &str, says: &str| {
        let got = at_request(&format!("{ns}{input}"));
        assert!(
            got.starts_with("error: ") && got.contains(says),
            "{input}: {got}"
        );
    };
    refused(
        "LastXFiscalPeriods(PropertyName='createdon',PropertyValue=1)",
        "is not supported",
    );
    refused(
        "Today(PropertyName='createdon',PropertyValue=1)",
        "takes no parameter 'PropertyValue'",
    );
    refused(
        "Today(Property='createdon')",
        "needs the parameter PropertyName",
    );
    refused("Today(PropertyName=createdon)", "expected a value");
    refused(
        "Today(PropertyName=1)",
        "PropertyName is an attribute's name in quotes",
    );
    refused(
        "LastXDays(PropertyName='createdon')",
        "needs the parameter PropertyValue",
    );
    refused(
        "LastXDays(PropertyName='createdon',PropertyValue=-1)",
        "from 0 to 10000",
    );
    refused(
        "LastXDays(PropertyName='createdon',PropertyValue=10001)",
        "from 0 to 10000",
    );
    refused(
        "LastXDays(PropertyName='createdon',PropertyValue='x')",
        "whole number",
    );
    refused(
        "LastXMinutes(PropertyName='createdon',PropertyValue=1)",
        "is not supported",
    );
    refused(
        "On(PropertyName='createdon',PropertyValue='tomorrow')",
        "is a date",
    );
    refused("In(PropertyName='name',PropertyValues='A')", "is a list");
    refused(
        "In(PropertyName='name',PropertyValues=[])",
        "at least one value",
    );
    refused(
        "Between(PropertyName='revenue',PropertyValues=[1])",
        "exactly two",
    );
    refused("Today(PropertyName='a',PropertyName='b')", "given twice");
    refused("Today(PropertyName='createdon'", "expected ')'");
    refused(
        "In(PropertyName='name',PropertyValues=['A' 'B'])",
        "expected ','",
    );
    // Without a request there is no "now" and no user: those functions are refused, the
    // others are read.
    let alone = |input: &str| match parse_filter(&format!("{ns}{input}")) {
        Ok(filter) => filter.to_string(),
        Err(error) => format!("error: {error}"),
    };
    assert!(alone("Today(PropertyName='createdon')").contains("needs the time of the request"));
    assert!(alone("EqualUserId(PropertyName='ownerid')").contains("needs the caller"));
    assert_eq!(
        alone("In(PropertyName='name',PropertyValues=['A'])"),
        "name eq 'A'"
    );
}

#[test]
fn a_query_functions_text_value_is_read_as_its_attributes_type() {
    use crate::metadata::AttributeType;
    let text = |t: &str| Literal::Text(t.into());
    let typed =
        |literal: Literal, kind: AttributeType| literal.typed(&kind).map(|t| t.into_owned());
    assert_eq!(
        typed(text("5"), AttributeType::Integer),
        Some(Literal::Integer(5))
    );
    assert_eq!(
        typed(text("5"), AttributeType::String { max_length: 10 }),
        Some(Literal::String("5".into()))
    );
    assert_eq!(
        typed(text("2.5"), AttributeType::Money),
        Some(Literal::Decimal("2.5".into()))
    );
    assert_eq!(typed(text("five"), AttributeType::Integer), None);
    assert_eq!(
        typed(text("true"), AttributeType::Boolean),
        Some(Literal::Boolean(true))
    );
    assert_eq!(
        typed(text("2026-01-02"), AttributeType::DateTime),
        Some(Literal::Date("2026-01-02".into()))
    );
    assert_eq!(typed(text("7"), AttributeType::DateTime), None);
    let id = Uuid::from_u128(9);
    assert_eq!(
        typed(text(&id.to_string()), AttributeType::UniqueIdentifier),
        Some(Literal::Guid(id))
    );
    assert_eq!(typed(text("x"), AttributeType::UniqueIdentifier), None);
    assert_eq!(
        typed(Literal::Integer(3), AttributeType::String { max_length: 1 }),
        Some(Literal::Integer(3)),
        "a literal written as a number stays one"
    );
}

#[test]
fn every_query_function_declared_is_read_and_no_other() {
    for (name, takes) in QUERY_FUNCTIONS {
        let value = match takes {
            QueryFunctionValue::Nothing => String::new(),
            QueryFunctionValue::Count => ",PropertyValue=2".into(),
            QueryFunctionValue::Date => ",PropertyValue='2026-02-14'".into(),
            QueryFunctionValue::List => ",PropertyValues=['1','2']".into(),
        };
        let got = at_request(&format!(
            "Microsoft.Dynamics.CRM.{name}(PropertyName='createdon'{value})"
        ));
        assert!(!got.starts_with("error"), "{name}: {got}");
    }
    // Names near the declared ones are not guessed at.
    for name in [
        "ThisWeek",
        "LastXMinutes",
        "NextXMinutes",
        "lastxdays",
        "Above",
        "Contains",
    ] {
        let got = at_request(&format!(
            "Microsoft.Dynamics.CRM.{name}(PropertyName='createdon',PropertyValue=1)"
        ));
        assert!(got.contains("is not supported"), "{name}: {got}");
    }
}
