//! The differential `$filter` test (issue 14): random filters run through the store and through
//! an independent evaluator of OData's rules over the same rows in memory must select the same
//! records. The evaluator follows OData v4.01 (URL conventions §5.1.1): a comparison with a
//! null operand is false — except `eq null`/`ne null`, and `ne`, which is true when exactly one
//! side is null — a string function of null is null (unknown), `and`/`or` are Kleene's, and
//! `not` of unknown is unknown; a record is selected when the filter is true. Comparisons of two
//! attributes of the row and constant comparisons are among the filters. Text is compared and
//! matched without case, letters beyond ASCII too, as Dataverse's collation compares it.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{context, ok};
use crate::filter::{CompareOp, Filter, Literal, StringFunction};
use crate::options::parse_query_options;
use crate::store::{RecordQuery, RecordStore};
use crate::value::Value;

/// One account of the test, as the evaluator sees it.
#[derive(Debug, Clone)]
struct Row {
    id: Uuid,
    name: String,
    employees: Option<i64>,
    on_hold: Option<bool>,
    description: Option<String>,
}

/// A small deterministic generator (a 64-bit LCG): the same filters on every run and engine.
pub(super) struct Dice(pub(super) u64);

impl Dice {
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Words that differ in case, beyond ASCII too, so that every comparison is seen to ignore it.
const WORDS: [&str; 10] = ["ab", "BA", "abc", "Cab", "b", "ca", "äb", "ÄB", "é", "Éa"];

/// Text as OData's comparisons here see it: each character lower-cased (Unicode's mapping), so
/// two texts compare by their lower-cased characters' code points.
fn without_case(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}
const OPS: [CompareOp; 6] = [
    CompareOp::Eq,
    CompareOp::Ne,
    CompareOp::Gt,
    CompareOp::Ge,
    CompareOp::Lt,
    CompareOp::Le,
];

fn compare(attribute: &str, op: CompareOp, value: Literal) -> Filter {
    Filter::Compare {
        attribute: attribute.into(),
        op,
        value,
    }
}

fn random_filter(dice: &mut Dice, depth: u32) -> Filter {
    let leaf = depth == 0 || dice.below(3) == 0;
    if !leaf {
        return match dice.below(3) {
            0 => Filter::And(
                Box::new(random_filter(dice, depth - 1)),
                Box::new(random_filter(dice, depth - 1)),
            ),
            1 => Filter::Or(
                Box::new(random_filter(dice, depth - 1)),
                Box::new(random_filter(dice, depth - 1)),
            ),
            _ => Filter::Not(Box::new(random_filter(dice, depth - 1))),
        };
    }
    let eq_ne = [CompareOp::Eq, CompareOp::Ne];
    match dice.below(8) {
        6 => Filter::CompareAttributes {
            left: "name".into(),
            op: *dice.pick(&OPS),
            right: "description".into(),
        },
        7 => Filter::Constant(dice.below(2) == 0),
        0 => compare(
            "numberofemployees",
            *dice.pick(&OPS),
            Literal::Integer(dice.below(5) as i64),
        ),
        1 => compare("numberofemployees", *dice.pick(&eq_ne), Literal::Null),
        2 => {
            let value = match dice.below(3) {
                0 => Literal::Null,
                1 => Literal::Boolean(true),
                _ => Literal::Boolean(false),
            };
            compare("creditonhold", *dice.pick(&eq_ne), value)
        }
        3 => compare(
            "name",
            *dice.pick(&OPS),
            Literal::String((*dice.pick(&WORDS)).into()),
        ),
        _ => Filter::Function {
            function: *dice.pick(&[
                StringFunction::Contains,
                StringFunction::StartsWith,
                StringFunction::EndsWith,
            ]),
            attribute: (*dice.pick(&["name", "description"])).into(),
            value: (*dice.pick(&["a", "B", "c", "ab", "Ä", "é"])).into(),
        },
    }
}

/// OData's value of `filter` for `row`: `None` is unknown.
fn evaluate(filter: &Filter, row: &Row) -> Option<bool> {
    match filter {
        Filter::And(l, r) => match (evaluate(l, row), evaluate(r, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Filter::Or(l, r) => match (evaluate(l, row), evaluate(r, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Filter::Not(inner) => evaluate(inner, row).map(|b| !b),
        Filter::Constant(holds) => Some(*holds),
        // The generator compares `name` (never null) with `description`.
        Filter::CompareAttributes { op, .. } => Some(match &row.description {
            None => *op == CompareOp::Ne,
            Some(description) => op.holds(without_case(&row.name).cmp(&without_case(description))),
        }),
        Filter::Function {
            function,
            attribute,
            value,
        } => {
            let text = match attribute.as_str() {
                "name" => Some(row.name.as_str()),
                _ => row.description.as_deref(),
            }?;
            let (text, value) = (without_case(text), without_case(value));
            Some(match function {
                StringFunction::Contains => text.contains(&value),
                StringFunction::StartsWith => text.starts_with(&value),
                StringFunction::EndsWith => text.ends_with(&value),
            })
        }
        Filter::Compare {
            attribute,
            op,
            value,
        } => {
            let ordering = match (attribute.as_str(), value) {
                (_, Literal::Null) => {
                    let null = match attribute.as_str() {
                        "numberofemployees" => row.employees.is_none(),
                        "creditonhold" => row.on_hold.is_none(),
                        _ => false,
                    };
                    return Some(if *op == CompareOp::Eq { null } else { !null });
                }
                ("numberofemployees", Literal::Integer(n)) => row.employees.map(|e| e.cmp(n)),
                ("creditonhold", Literal::Boolean(b)) => row.on_hold.map(|h| h.cmp(b)),
                ("name", Literal::String(s)) => Some(without_case(&row.name).cmp(&without_case(s))),
                other => unreachable!("the generator makes no {other:?}"),
            };
            Some(match ordering {
                // One side is null (the literal is not): only ne holds.
                None => *op == CompareOp::Ne,
                Some(ordering) => op.holds(ordering),
            })
        }
    }
}

/// Random filters select, through the store, exactly the rows OData's rules select.
pub(super) fn random_filters_select_what_odata_selects(store: &dyn RecordStore) {
    let mut dice = Dice(20_261_202);
    let mut rows = Vec::new();
    for n in 0..60 {
        let row = Row {
            id: Uuid::from_u128(0x1000 + n),
            name: (*dice.pick(&WORDS)).to_string(),
            employees: match dice.below(6) {
                5 => None,
                e => Some(e as i64),
            },
            on_hold: match dice.below(3) {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            },
            description: match dice.below(4) {
                0 => None,
                _ => Some((*dice.pick(&WORDS)).to_string()),
            },
        };
        let mut values = vec![("name".to_string(), Value::String(row.name.clone()))];
        if let Some(e) = row.employees {
            values.push(("numberofemployees".into(), Value::Integer(e)));
        }
        if let Some(h) = row.on_hold {
            values.push(("creditonhold".into(), Value::Boolean(h)));
        }
        if let Some(d) = &row.description {
            values.push(("description".into(), Value::String(d.clone())));
        }
        store
            .create("account", Some(row.id), values, context(), &mut ok)
            .unwrap();
        rows.push(row);
    }
    for _ in 0..400 {
        let filter = random_filter(&mut dice, 4);
        let text = filter.to_string();
        let options = parse_query_options([("$filter", text.as_str())])
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let selected: BTreeSet<Uuid> = store
            .retrieve_multiple(&RecordQuery {
                entity: "account",
                options: &options,
                page_size: 5000,
            })
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .records
            .iter()
            .map(|r| r.id)
            .collect();
        let expected: BTreeSet<Uuid> = rows
            .iter()
            .filter(|row| evaluate(&filter, row) == Some(true))
            .map(|row| row.id)
            .collect();
        assert_eq!(selected, expected, "$filter={text}");
    }
}

/// A filter of more than a thousand `or` terms — as long as Dataverse's URL limit allows —
/// selects exactly what it names, on every engine.
pub(super) fn a_thousand_or_terms_select_what_they_name(store: &dyn RecordStore) {
    for n in 0..30 {
        store
            .create(
                "account",
                Some(Uuid::from_u128(0x2000 + n)),
                vec![("numberofemployees".into(), Value::Integer(n as i64))],
                context(),
                &mut ok,
            )
            .unwrap();
    }
    // Every third count up to 3,147: 1,050 terms, about 30 KB.
    let text = (0..1050)
        .map(|n| format!("numberofemployees eq {}", n * 3))
        .collect::<Vec<_>>()
        .join(" or ");
    assert!(text.len() < 32 * 1024, "{} bytes", text.len());
    let options = parse_query_options([("$filter", text.as_str())]).unwrap();
    let selected: BTreeSet<Uuid> = store
        .retrieve_multiple(&RecordQuery {
            entity: "account",
            options: &options,
            page_size: 5000,
        })
        .unwrap()
        .records
        .iter()
        .map(|r| r.id)
        .collect();
    let expected: BTreeSet<Uuid> = (0..30)
        .filter(|n| n % 3 == 0)
        .map(|n| Uuid::from_u128(0x2000 + n))
        .collect();
    assert_eq!(selected, expected);
    // Beyond the limit: refused with the reason, never an engine's error.
    let longer = format!("{text} or {text}");
    let refused = parse_query_options([("$filter", longer.as_str())]).unwrap_err();
    assert!(refused.to_string().contains("longer than"), "{refused}");
}
