use serde_json::json;

use super::*;
use crate::event::sample_event;

fn check(value: serde_json::Value, expect: &str) {
    let mut out = String::new();
    write_canonical(&value, &mut out);
    assert_eq!(out, expect);
}

#[test]
fn jcs_rules() {
    check(
        json!({"b": 1, "a": [true, null, "x"]}),
        r#"{"a":[true,null,"x"],"b":1}"#,
    );
    check(
        json!("tab\t quote\" back\\ bell\u{7} é €"),
        "\"tab\\t quote\\\" back\\\\ bell\\u0007 é €\"",
    );
    check(
        json!([1000.0, 0.1, 1e21, 1e-7, -0.0, 123456789012.5]),
        "[1000,0.1,1e+21,1e-7,0,123456789012.5]",
    );
    check(json!(9007199254740993i64), "9007199254740993");
    // Members sort by UTF-16 code units: U+1D11E (a surrogate pair, D834) sorts before U+FB33.
    check(
        json!({"\u{fb33}": 1, "\u{1d11e}": 2}),
        "{\"\u{1d11e}\":2,\"\u{fb33}\":1}",
    );
}

#[test]
fn a_record_is_canonical_and_parses_back_to_its_value() {
    let mut event = sample_event(2);
    event.details = r#"{"z": 1, "a": {"y": 2.50, "b": "c"}}"#.into();
    let text = canonical_json(&event);
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut again = String::new();
    write_canonical(&parsed, &mut again);
    assert_eq!(
        again, text,
        "canonicalising the shown JSON gives the same bytes"
    );
    assert!(text.starts_with(r#"{"CallerId":"","Category":"accessed-out-of-box-entity","Changes":[{"Attribute":"name","New":"x","Old":null}]"#), "{text}");
    assert!(
        text.contains(r#""Details":{"a":{"b":"c","y":2.5},"z":1}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""CreationTime":"2023-11-14T22:13:20.123456Z""#),
        "{text}"
    );
}

fn generic(event: &AuditEvent) -> String {
    let mut out = String::new();
    write_canonical(&event_value(event), &mut out);
    out
}

fn text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::strategy::Strategy;
    proptest::prop_oneof![
        proptest::string::string_regex(".{0,12}").unwrap(),
        proptest::string::string_regex("[\\x00-\\x1f\"\\\\a€𝄞]{0,8}").unwrap(),
        proptest::sample::select(vec![
            "",
            "1.50",
            "{\"b\":1,\"a\":[2.0,\"x\"]}",
            "null",
            "\"q\"",
            "[1e21]",
            "{bad"
        ])
        .prop_map(String::from),
    ]
}

proptest::proptest! {
    #[test]
    fn the_direct_writer_gives_the_bytes_of_the_generic_one(
        strings in proptest::collection::vec(text(), 12),
        changes in proptest::collection::vec((text(), proptest::option::of(text()), proptest::option::of(text())), 0..3),
        ids in proptest::collection::vec(proptest::num::u128::ANY, 0..4),
        event_ids in (proptest::num::u128::ANY, proptest::num::u128::ANY),
        time in proptest::num::i64::ANY,
        count in proptest::num::u64::ANY,
    ) {
        let mut event = sample_event(0);
        event.record_ids = ids.into_iter().map(uuid::Uuid::from_u128).collect();
        event.id = uuid::Uuid::from_u128(event_ids.0);
        event.tenant_id = uuid::Uuid::from_u128(event_ids.1);
        let mut s = strings.into_iter();
        let mut next = || s.next().unwrap();
        event.instance = next();
        event.instance_url = next();
        event.workload = next();
        event.operation = next();
        event.user_id = next();
        event.user_upn = next();
        event.client_ip = next();
        event.user_agent = next();
        event.correlation_id = next();
        event.query = next();
        event.details = next();
        event.error_code = next();
        event.creation_time_us = time / 1000;
        event.result_count = count;
        event.changes = changes
            .into_iter()
            .map(|(attribute, old, new)| crate::event::Change { attribute, old, new })
            .collect();
        let text = canonical_json(&event);
        proptest::prop_assert_eq!(&text, &generic(&event));
        proptest::prop_assert_eq!(
            event_leaf_hash(&event),
            crate::merkle::leaf_hash(text.as_bytes()),
            "the leaf hashed as it is written is the hash of the text"
        );
    }

    /// JSON strings are escaped as RFC 8785 says, which is what `serde_json` writes too.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them(text in text()) {
        let mut out = Vec::new();
        write_string(&text, &mut out);
        proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&text).unwrap());
    }

    #[test]
    fn creation_times_are_written_as_the_formatter_writes_them(us in proptest::num::i64::ANY) {
        let formatted = creation_time_formatted(&creation_time(us));
        proptest::prop_assert_eq!(format_creation_time(us), formatted);
    }
}

#[test]
fn a_long_record_is_hashed_across_the_buffer() {
    let mut event = sample_event(3000);
    event.details = format!("\"{}\"", "x".repeat(3 * 4096));
    let text = canonical_json(&event);
    assert!(text.len() > 20 * 4096);
    assert_eq!(
        event_leaf_hash(&event),
        crate::merkle::leaf_hash(text.as_bytes())
    );
}
