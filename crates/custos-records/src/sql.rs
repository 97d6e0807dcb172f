//! Compiles a `$filter` tree against an entity's metadata into an SQL condition with bound
//! parameters. User input never becomes SQL text: attribute names are checked against the
//! metadata (whose names are restricted to `[a-z0-9_]`), values become parameters.

use crate::filter::{CompareOp, Filter, Literal, StringFunction};
use crate::metadata::{AttributeDef, AttributeType, EntityDef};
use crate::value::{Value, normalize_datetime, split_fraction};
use crate::{Error, Result};

/// Checks query options against an entity's definition without running them: every attribute
/// the filter, the selection and the order name exists, and every filter value fits its
/// attribute's type.
pub fn check_query(entity: &EntityDef, options: &crate::options::QueryOptions) -> Result<()> {
    if let Some(filter) = &options.filter {
        compile_filter(entity, filter, &mut String::new(), &mut Vec::new())?;
    }
    for name in options.select.iter().flatten() {
        resolve(entity, name)?;
    }
    for term in &options.order_by {
        resolve(entity, &term.attribute)?;
    }
    Ok(())
}

/// Appends the condition for `filter` to `sql`, pushing its parameters.
pub(crate) fn compile_filter(
    entity: &EntityDef,
    filter: &Filter,
    sql: &mut String,
    params: &mut Vec<Value>,
) -> Result<()> {
    match filter {
        Filter::And(..) | Filter::Or(..) => {
            let and = matches!(filter, Filter::And(..));
            let mut terms = Vec::new();
            chain(filter, and, &mut terms);
            compile_balanced(entity, &terms, and, sql, params)?;
        }
        Filter::Not(inner) => {
            sql.push_str("NOT (");
            compile_filter(entity, inner, sql, params)?;
            sql.push(')');
        }
        Filter::Function {
            function,
            attribute,
            value,
        } => {
            let attr = resolve(entity, attribute)?;
            if !matches!(
                attr.attribute_type,
                AttributeType::String { .. } | AttributeType::Memo
            ) {
                return Err(Error::BadRequest(format!(
                    "{}() needs a text attribute; '{attribute}' is {}",
                    function.as_str(),
                    attr.attribute_type.name()
                )));
            }
            let escaped = value
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let pattern = match function {
                StringFunction::Contains => format!("%{escaped}%"),
                StringFunction::StartsWith => format!("{escaped}%"),
                StringFunction::EndsWith => format!("%{escaped}"),
            };
            sql.push_str(&format!("\"{}\" LIKE ? ESCAPE '\\'", attr.logical_name));
            params.push(Value::String(pattern));
        }
        Filter::Constant(holds) => sql.push_str(if *holds { "1 = 1" } else { "1 = 0" }),
        Filter::CompareAttributes { left, op, right } => {
            let (a, b) = (resolve(entity, left)?, resolve(entity, right)?);
            let family = comparable(&a.attribute_type);
            if family != comparable(&b.attribute_type) {
                return Err(Error::BadRequest(format!(
                    "'{left}' ({}) and '{right}' ({}) cannot be compared",
                    a.attribute_type.name(),
                    b.attribute_type.name()
                )));
            }
            let ordered = matches!(family, Family::Text | Family::Number | Family::Time);
            if !ordered && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return Err(Error::BadRequest(format!(
                    "'{left}' and '{right}' can only be compared with eq or ne"
                )));
            }
            let (l, r) = (
                format!("\"{}\"", a.logical_name),
                format!("\"{}\"", b.logical_name),
            );
            // OData's lifted operators, written to be true or false: two nulls are equal, a null
            // and a value unequal, and an ordering with a null is false.
            let both = format!("{l} IS NOT NULL AND {r} IS NOT NULL");
            let equal = format!("(({l} = {r} AND {both}) OR ({l} IS NULL AND {r} IS NULL))");
            match op {
                CompareOp::Eq => sql.push_str(&equal),
                CompareOp::Ne => sql.push_str(&format!("NOT {equal}")),
                _ => sql.push_str(&format!("({l} {} {r} AND {both})", sql_op(*op))),
            }
        }
        Filter::Compare {
            attribute,
            op,
            value,
        } => {
            let attr = resolve(entity, attribute)?;
            let column = format!("\"{}\"", attr.logical_name);
            let typed = value.typed(&attr.attribute_type).ok_or_else(|| {
                Error::BadRequest(format!(
                    "'{attribute}' is {} and cannot be compared with {value}",
                    attr.attribute_type.name()
                ))
            })?;
            let value: &Literal = &typed;
            if *value == Literal::Null {
                match op {
                    CompareOp::Eq => sql.push_str(&format!("{column} IS NULL")),
                    CompareOp::Ne => sql.push_str(&format!("{column} IS NOT NULL")),
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "null can only be compared with eq or ne ('{attribute}')"
                        )));
                    }
                }
                return Ok(());
            }
            // Values are stored to the millisecond: a literal finer than that lies between two
            // of them, so it equals none, and an order against it is an order against its
            // millisecond.
            if let (AttributeType::DateTime, Literal::DateTime(text)) =
                (&attr.attribute_type, value)
                && let (seconds, true) = split_fraction(text)
            {
                match op {
                    CompareOp::Eq => sql.push_str("1 = 0"),
                    CompareOp::Ne => sql.push_str("1 = 1"),
                    CompareOp::Gt | CompareOp::Ge => {
                        sql.push_str(&format!("({column} > ? AND {column} IS NOT NULL)"));
                    }
                    CompareOp::Lt | CompareOp::Le => {
                        sql.push_str(&format!("({column} <= ? AND {column} IS NOT NULL)"));
                    }
                }
                if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                    params.push(Value::DateTime(seconds));
                }
                return Ok(());
            }
            let bound = bind(attr, attribute, value)?;
            let ordered = !matches!(
                attr.attribute_type,
                AttributeType::Boolean
                    | AttributeType::Lookup { .. }
                    | AttributeType::UniqueIdentifier
            );
            if !ordered && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return Err(Error::BadRequest(format!(
                    "'{attribute}' is {} and can only be compared with eq or ne",
                    attr.attribute_type.name()
                )));
            }
            let sql_op = sql_op(*op);
            // OData's comparisons are never unknown: one with a null value is false — but ne,
            // which is true — where SQL's is null, and a `not` over it would then drop the row
            // instead of keeping it. So each comparison is written to be true or false.
            if *op == CompareOp::Ne {
                sql.push_str(&format!("({column} IS NULL OR {column} <> ?)"));
            } else {
                sql.push_str(&format!("({column} {sql_op} ? AND {column} IS NOT NULL)"));
            }
            params.push(bound);
        }
    }
    Ok(())
}

/// The SQL of a comparison operator.
fn sql_op(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
    }
}

/// What two attributes must share to be compared with each other; only text, numbers and
/// times are ordered, the rest compare for equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Text,
    Number,
    Time,
    Flag,
    Choice,
    Id,
}

fn comparable(attribute_type: &AttributeType) -> Family {
    match attribute_type {
        AttributeType::String { .. } | AttributeType::Memo => Family::Text,
        AttributeType::Integer
        | AttributeType::BigInt
        | AttributeType::Decimal
        | AttributeType::Money => Family::Number,
        AttributeType::DateTime => Family::Time,
        AttributeType::Boolean => Family::Flag,
        AttributeType::Choice => Family::Choice,
        AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier => Family::Id,
    }
}

/// The terms of a chain of one operator (`a or b or c …`, as the parser nests it), in order.
fn chain<'f>(filter: &'f Filter, and: bool, terms: &mut Vec<&'f Filter>) {
    match filter {
        Filter::And(l, r) if and => {
            chain(l, and, terms);
            chain(r, and, terms);
        }
        Filter::Or(l, r) if !and => {
            chain(l, and, terms);
            chain(r, and, terms);
        }
        other => terms.push(other),
    }
}

/// A chain's terms as a balanced tree of `AND`s or `OR`s: a thousand terms nest ten deep, not a
/// thousand (SQLite refuses expressions deeper than 1,000; the parser nests a chain one level a
/// term).
fn compile_balanced(
    entity: &EntityDef,
    terms: &[&Filter],
    and: bool,
    sql: &mut String,
    params: &mut Vec<Value>,
) -> Result<()> {
    sql.push('(');
    match terms {
        [one] => compile_filter(entity, one, sql, params)?,
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            compile_balanced(entity, left, and, sql, params)?;
            sql.push_str(if and { " AND " } else { " OR " });
            compile_balanced(entity, right, and, sql, params)?;
        }
    }
    sql.push(')');
    Ok(())
}

/// The attribute a filter or `$orderby` names, by logical name or `_x_value`.
pub(crate) fn resolve<'e>(entity: &'e EntityDef, name: &str) -> Result<&'e AttributeDef> {
    entity.attribute_by_web_name(name).ok_or_else(|| {
        Error::BadRequest(format!(
            "attribute '{name}' does not exist on entity '{}'",
            entity.logical_name
        ))
    })
}

pub(crate) fn bind(attr: &AttributeDef, written: &str, literal: &Literal) -> Result<Value> {
    let wrong = || {
        Error::BadRequest(format!(
            "'{written}' is {} and cannot be compared with {literal}",
            attr.attribute_type.name()
        ))
    };
    Ok(match (&attr.attribute_type, literal) {
        (AttributeType::String { .. } | AttributeType::Memo, Literal::String(s)) => {
            Value::String(s.clone())
        }
        (
            AttributeType::Integer | AttributeType::BigInt | AttributeType::Choice,
            Literal::Integer(n),
        ) => Value::Integer(*n),
        // Compared as the float the column keeps, so a literal that float would change is
        // refused as a written value would be: `revenue eq 922337203685477.5807` must not match
        // (or, in a bulk delete, delete) the record holding 922337203685477.6.
        (AttributeType::Decimal | AttributeType::Money, Literal::Integer(n)) => {
            Value::decimal_from_text(attr, &n.to_string())?
        }
        (AttributeType::Decimal | AttributeType::Money, Literal::Decimal(text)) => {
            Value::decimal_from_text(attr, text)?
        }
        (AttributeType::Boolean, Literal::Boolean(b)) => Value::Boolean(*b),
        (AttributeType::DateTime, Literal::DateTime(text)) => Value::DateTime(text.clone()),
        (AttributeType::DateTime, Literal::Date(text)) => {
            Value::DateTime(normalize_datetime(text).ok_or_else(wrong)?)
        }
        (AttributeType::Lookup { .. } | AttributeType::UniqueIdentifier, Literal::Guid(g)) => {
            Value::Guid(*g)
        }
        _ => return Err(wrong()),
    })
}

/// The SQL engine a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// The embedded store: `?` parameters, nulls sort first ascending.
    Sqlite,
    /// A cluster's store: `$n` parameters; nulls are placed as SQLite places them, so a page
    /// reads the same on either.
    Postgres,
}

/// Every attribute of `definition` as a quoted column list, in definition order.
pub(crate) fn column_list(definition: &EntityDef) -> String {
    definition
        .attributes
        .iter()
        .map(|a| format!("\"{}\"", a.logical_name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sql` with its `?` parameters numbered `$1`, `$2`, … (PostgreSQL's form). Statements here
/// never hold a `?` inside a quoted literal or name: values are parameters, names are
/// `[a-z0-9_]`.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// A retrieve multiple as SQL.
pub(crate) struct Selection {
    /// The `SELECT` of the page's records, in order.
    pub(crate) select: String,
    /// Its parameters.
    pub(crate) params: Vec<Value>,
    /// The `WHERE` clause of the filter alone (every matching record, for a count).
    pub(crate) condition: String,
    /// How many of `params` (the first) the condition takes.
    pub(crate) condition_params: usize,
}

/// The records `options` match, in their order, at most `limit`, starting after the page
/// cursor of `options` when it has one.
pub(crate) fn select_sql(
    dialect: Dialect,
    definition: &EntityDef,
    options: &crate::options::QueryOptions,
    limit: u64,
) -> Result<Selection> {
    let mut condition = String::new();
    let mut params = Vec::new();
    if let Some(filter) = &options.filter {
        condition.push_str(" WHERE ");
        compile_filter(definition, filter, &mut condition, &mut params)?;
    }
    let condition_params = params.len();
    let mut terms = Vec::new();
    let mut order = Vec::new();
    for term in &options.order_by {
        let attribute = resolve(definition, &term.attribute)?;
        let direction = match (dialect, term.descending) {
            (Dialect::Sqlite, false) => "ASC",
            (Dialect::Sqlite, true) => "DESC",
            (Dialect::Postgres, false) => "ASC NULLS FIRST",
            (Dialect::Postgres, true) => "DESC NULLS LAST",
        };
        order.push(format!("\"{}\" {direction}", attribute.logical_name));
        terms.push((attribute, term.descending));
    }
    order.push(format!("\"{}\"", definition.primary_id()));
    let mut predicate = condition.clone();
    if let Some(cursor) = &options.after {
        predicate.push_str(if predicate.is_empty() {
            " WHERE "
        } else {
            " AND "
        });
        keyset_after(definition, &terms, cursor, &mut predicate, &mut params)?;
    }
    let select = format!(
        "SELECT {} FROM \"{}\"{predicate} ORDER BY {} LIMIT {}",
        column_list(definition),
        definition.table(),
        order.join(", "),
        limit.min(i64::MAX as u64),
    );
    Ok(match dialect {
        Dialect::Sqlite => Selection {
            select,
            params,
            condition,
            condition_params,
        },
        Dialect::Postgres => Selection {
            select: numbered(&select),
            params,
            condition: numbered(&condition),
            condition_params,
        },
    })
}

/// The condition "after the cursor's row in the order of `terms`, then the id": each term
/// either passes the cursor's value or equals it and leaves the decision to the next. Nulls
/// sort first ascending and last descending on both engines (`ORDER BY` above).
fn keyset_after(
    definition: &EntityDef,
    terms: &[(&AttributeDef, bool)],
    cursor: &crate::options::PageCursor,
    sql: &mut String,
    params: &mut Vec<Value>,
) -> Result<()> {
    if cursor.keys.len() != terms.len() {
        return Err(Error::BadRequest(
            "this $skiptoken belongs to a query with another $orderby".into(),
        ));
    }
    let mut closing = String::new();
    for ((attribute, descending), key) in terms.iter().zip(&cursor.keys) {
        let column = format!("\"{}\"", attribute.logical_name);
        let value = Value::from_json(attribute, key).map_err(|_| {
            Error::BadRequest("this $skiptoken does not fit the query's $orderby".into())
        })?;
        match (value, descending) {
            (Value::Null, false) => {
                sql.push_str(&format!("({column} IS NOT NULL OR ({column} IS NULL AND "))
            }
            (Value::Null, true) => sql.push_str(&format!("(({column} IS NULL AND ")),
            (value, false) => {
                sql.push_str(&format!("({column} > ? OR ({column} = ? AND "));
                params.extend([value.clone(), value]);
            }
            (value, true) => {
                sql.push_str(&format!(
                    "({column} < ? OR {column} IS NULL OR ({column} = ? AND "
                ));
                params.extend([value.clone(), value]);
            }
        }
        closing.push_str("))");
    }
    sql.push_str(&format!("\"{}\" > ?", definition.primary_id()));
    params.push(Value::Guid(cursor.id));
    sql.push_str(&closing);
    Ok(())
}
