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
